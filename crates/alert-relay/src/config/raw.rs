//! The YAML file as written: serde types only, every struct `deny_unknown_fields`. Validation
//! into the types the relay runs on happens in `super`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::channels::settings::{ProviderKeys, Scalar};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub auth: Option<RawListenerAuth>,
    /// Moved to the web configuration file: any value is an error naming its new place.
    pub tls: Option<de::IgnoredAny>,
    pub storage: RawStorage,
    pub limits: Option<RawLimits>,
    pub delivery: Option<RawDelivery>,
    #[serde(default)]
    pub channels: BTreeMap<String, RawChannel>,
    #[serde(default)]
    pub policies: BTreeMap<String, RawPolicy>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    pub deadman: Option<super::pipeline::RawDeadman>,
    pub alertmanager: Option<super::pipeline::RawAlertmanager>,
    #[serde(default)]
    pub rotations: BTreeMap<String, super::rotation::RawRotation>,
    pub console: Option<super::console::RawConsole>,
}

/// The listener's `auth:`: credentials, or the word `none` (no authentication, on purpose).
#[derive(Debug)]
pub(super) enum RawListenerAuth {
    None,
    Credentials(RawAuth),
}

impl<'de> Deserialize<'de> for RawListenerAuth {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawListenerAuth;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the word none, or a map with bearer_token(_file|_env) or basic")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                match v {
                    "none" => Ok(RawListenerAuth::None),
                    _ => Err(E::invalid_value(de::Unexpected::Other("a word"), &self)),
                }
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                RawAuth::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(RawListenerAuth::Credentials)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub bearer_token: Option<String>,
    pub bearer_token_file: Option<PathBuf>,
    pub bearer_token_env: Option<String>,
    pub basic: Option<RawBasic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBasic {
    pub username: String,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorage {
    pub sqlite: Option<PathBuf>,
    pub postgres: Option<RawPostgres>,
    pub retention: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPostgres {
    pub url: Option<String>,
    pub url_file: Option<PathBuf>,
    pub url_env: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub password_env: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub pool: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    pub max_body_bytes: Option<u64>,
    pub read_header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    pub max_connections: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    pub timeout: Option<String>,
    pub initial_backoff: Option<String>,
    pub max_backoff: Option<String>,
    pub max_attempts: Option<u32>,
    pub max_age: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub steps: Vec<RawStep>,
    pub repeat: Option<RawRepeat>,
    pub until: Option<String>,
    pub ack_timeout: Option<String>,
    pub storm: Option<RawStorm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStorm {
    pub window: String,
    pub threshold: u32,
    #[serde(default)]
    pub group_by: Vec<String>,
    #[serde(rename = "match", default)]
    pub matchers: RawMatchers,
    /// Alertmanager's spelling (`config::matchers`).
    #[serde(rename = "matchers")]
    pub am_matchers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBudget {
    pub max: u32,
    pub per: String,
    pub overflow: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRepeat {
    pub every: String,
    pub times: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStep {
    pub notify: Vec<String>,
    /// Escalation delay since the incident opened.
    pub after: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matchers: RawMatchers,
    /// Alertmanager's spelling: a list of matcher strings (`config::matchers`).
    #[serde(rename = "matchers")]
    pub am_matchers: Option<Vec<String>>,
    pub policy: String,
    #[serde(rename = "continue", default)]
    pub continue_matching: bool,
}

/// `match:` is either a map of label equalities (`{severity: critical}`) or a list of
/// Alertmanager matcher strings (`['severity=~"critical|page"', 'site!="lab"']`).
#[derive(Debug, Default)]
pub(super) enum RawMatchers {
    #[default]
    None,
    Equal(BTreeMap<String, String>),
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for RawMatchers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawMatchers;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a map of label: value, or a list of matchers like 'severity=~\"crit.*\"'",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, Scalar>()? {
                    out.insert(k, v.0);
                }
                Ok(RawMatchers::Equal(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    out.push(s);
                }
                Ok(RawMatchers::List(out))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(RawMatchers::None)
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTemplate {
    pub title: Option<String>,
    pub body: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRate {
    pub per_second: f64,
    pub burst: u32,
}

/// A channel as written: the keys every channel has, and those of its provider, which the
/// provider module declares (`crate::channels::settings::Provider::keys`) and checks.
#[derive(Debug)]
pub(super) struct RawChannel {
    pub kind: String,
    pub api_url: Option<String>,
    pub template: Option<RawTemplate>,
    pub rate_limit: Option<RawRate>,
    pub timeout: Option<String>,
    pub budget: Option<RawBudget>,
    pub send_resolved: Option<RawSendResolved>,
    pub provider: ProviderKeys,
}

/// `send_resolved:` `false` for the whole channel, or a map of recipient -> flag
/// (`{"+447700900124": false}`) for channels whose recipients are destinations.
#[derive(Debug)]
pub(super) enum RawSendResolved {
    Channel(bool),
    Recipients(BTreeMap<String, bool>),
}

impl<'de> Deserialize<'de> for RawSendResolved {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawSendResolved;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false, or a map of recipient: true/false")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(RawSendResolved::Channel(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = BTreeMap::new();
                while let Some((k, v)) = map.next_entry::<String, bool>()? {
                    if out.insert(k, v).is_some() {
                        return Err(de::Error::custom("a recipient is named twice"));
                    }
                }
                Ok(RawSendResolved::Recipients(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The keys every channel has, `type` first.
const COMMON_CHANNEL_KEYS: &[&str] = &[
    "type",
    "api_url",
    "template",
    "rate_limit",
    "timeout",
    "budget",
    "send_resolved",
];

/// Every key a channel can have: the common ones, then the providers'.
fn channel_keys() -> &'static [&'static str] {
    static KEYS: OnceLock<Vec<&'static str>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut keys = COMMON_CHANNEL_KEYS.to_vec();
        keys.extend(ProviderKeys::names());
        keys
    })
}

/// A key of a channel: an unknown one fails as it is read, so the error's path ends in it.
struct ChannelKey(String);

impl<'de> Deserialize<'de> for ChannelKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ChannelKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("field identifier")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ChannelKey, E> {
                if channel_keys().contains(&v) {
                    Ok(ChannelKey(v.to_owned()))
                } else {
                    Err(E::unknown_field(v, channel_keys()))
                }
            }
        }
        d.deserialize_identifier(V)
    }
}

/// `slot` set from the map's next value, unless it was set already (a null leaves it unset).
fn once<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
    slot: &mut Option<T>,
    key: &'static str,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(key));
    }
    *slot = map.next_value::<Option<T>>()?;
    Ok(())
}

impl<'de> Deserialize<'de> for RawChannel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawChannel;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("struct RawChannel")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawChannel, A::Error> {
                let mut kind: Option<String> = None;
                let (mut api_url, mut template, mut rate_limit) = (None, None, None);
                let (mut timeout, mut budget, mut send_resolved) = (None, None, None);
                let mut provider = ProviderKeys::default();
                while let Some(ChannelKey(key)) = map.next_key()? {
                    match key.as_str() {
                        "type" => {
                            if kind.is_some() {
                                return Err(de::Error::duplicate_field("type"));
                            }
                            kind = Some(map.next_value()?);
                        }
                        "api_url" => once(&mut api_url, "api_url", &mut map)?,
                        "template" => once(&mut template, "template", &mut map)?,
                        "rate_limit" => once(&mut rate_limit, "rate_limit", &mut map)?,
                        "timeout" => once(&mut timeout, "timeout", &mut map)?,
                        "budget" => once(&mut budget, "budget", &mut map)?,
                        "send_resolved" => once(&mut send_resolved, "send_resolved", &mut map)?,
                        k => provider.read(k, &mut map)?,
                    }
                }
                Ok(RawChannel {
                    kind: kind.ok_or_else(|| de::Error::missing_field("type"))?,
                    api_url,
                    template,
                    rate_limit,
                    timeout,
                    budget,
                    send_resolved,
                    provider,
                })
            }
        }
        d.deserialize_struct("RawChannel", channel_keys(), V)
    }
}

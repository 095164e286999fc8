//! The YAML file as written: serde types only, every struct `deny_unknown_fields`. Validation
//! into the types the relay runs on happens in `super`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

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
    pub sqlite: PathBuf,
    pub retention: Option<String>,
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

/// A YAML scalar read as text, so `chat_id: -100123` and `chat_id: "-100123"` are the same.
#[derive(Debug, Clone)]
pub(super) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar(v.to_string()))
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

/// Declares `RawChannel` with one optional field per key any channel type knows, and
/// `present_keys` so that validation can reject a key the channel's type does not take.
macro_rules! raw_channel {
    ($($field:ident : $ty:ty),* $(,)?) => {
        #[derive(Debug, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub(super) struct RawChannel {
            #[serde(rename = "type")]
            pub kind: String,
            $(#[serde(default)] pub $field: Option<$ty>,)*
        }

        impl RawChannel {
            pub(super) fn present_keys(&self) -> Vec<&'static str> {
                let mut keys = Vec::new();
                $(if self.$field.is_some() { keys.push(stringify!($field)); })*
                keys
            }
        }
    };
}

raw_channel! {
    // Every type.
    api_url: String,
    template: RawTemplate,
    rate_limit: RawRate,
    timeout: String,
    budget: RawBudget,
    // webhook, teams
    url: String,
    url_file: PathBuf,
    url_env: String,
    headers: BTreeMap<String, String>,
    signing_secret: String,
    signing_secret_file: PathBuf,
    signing_secret_env: String,
    // slack, discord
    webhook_url: String,
    webhook_url_file: PathBuf,
    webhook_url_env: String,
    // slack (bot), telegram
    bot_token: String,
    bot_token_file: PathBuf,
    bot_token_env: String,
    channel: String,
    // telegram
    chat_id: Scalar,
    message_thread_id: i64,
    ack: bool,
    // ntfy, pushover
    topic: String,
    priority: Scalar,
    token: String,
    token_file: PathBuf,
    token_env: String,
    user_key: String,
    user_key_file: PathBuf,
    user_key_env: String,
    // pushover, priority 2
    retry: String,
    expire: String,
    receipt_poll_interval: String,
    // ntfy (basic auth), email
    username: String,
    password: String,
    password_file: PathBuf,
    password_env: String,
    // twilio
    account_sid: String,
    auth_token: String,
    auth_token_file: PathBuf,
    auth_token_env: String,
    from: String,
    to: Vec<String>,
    messaging_service_sid: String,
    // matrix
    room_id: String,
    access_token: String,
    access_token_file: PathBuf,
    access_token_env: String,
    // email
    smarthost: String,
    tls: String,
}

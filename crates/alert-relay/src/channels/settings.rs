//! A channel's validated configuration ([`ChannelConfig`], [`ChannelKind`], [`Destination`]),
//! and what providers declare to own theirs: the keys they take ([`Key`]), their default
//! [`Rate`] and their conversion (a [`Provider`], listed once in [`PROVIDERS`]). Each provider
//! module validates its keys from [`ProviderKeys`] through an [`Input`]; `config` keeps the
//! keys every channel has and dispatches on `type`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Error as _, MapAccess, Visitor};

use super::email::EmailSettings;
use super::ntfy::NtfyAuth;
use super::pushover::Emergency;
use super::slack::SlackMode;
use super::twilio_voice::VoiceSettings;
use super::{
    discord, email, matrix, ntfy, pushover, slack, teams, telegram, twilio, twilio_voice, webhook,
};
use crate::render::template::UserTemplate;
use crate::secret::Secret;
use crate::secret::keys::{ConfigError, Ctx, Problems, SecretKeys, check_url, invalid};

/// Every provider, in the order `unknown channel type` lists them. Adding a provider is a
/// module in `channels/` and a line here.
pub const PROVIDERS: &[Provider] = &[
    webhook::PROVIDER,
    slack::PROVIDER,
    discord::PROVIDER,
    telegram::PROVIDER,
    ntfy::PROVIDER,
    twilio::PROVIDER,
    twilio_voice::PROVIDER,
    teams::PROVIDER,
    matrix::PROVIDER,
    pushover::PROVIDER,
    email::PROVIDER,
];

/// A channel type: its name, keys, default rate and validation.
#[derive(Debug)]
pub struct Provider {
    /// The channel's `type:`.
    pub name: &'static str,
    /// The keys it takes beside `type`, `api_url`, `template`, `rate_limit`, `timeout` and
    /// `budget`.
    pub keys: &'static [Key],
    /// Used when the channel sets no `rate_limit`.
    pub rate: Rate,
    /// Why `api_url` is refused, for a provider that takes none.
    pub refuses_api_url: Option<&'static str>,
    /// Checks the provider's keys and builds its settings; independent keys are each checked,
    /// so the error is every one found ([`ConfigError::Several`] for more than one).
    pub from_raw: fn(&Input<'_>) -> Result<ChannelKind, ConfigError>,
}

/// The provider named `kind`.
pub fn provider(kind: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name == kind)
}

/// A key a provider takes.
#[derive(Debug, Clone, Copy)]
pub enum Key {
    /// One key holding one kind of value.
    Plain(&'static str, Kind),
    /// A secret: `name` inline, `name_file` or `name_env`.
    Secret(&'static str),
    /// Alertmanager's name for one of the provider's own keys: `Alias("auth_username",
    /// "username")`. For a secret it covers `_file` and `_env` too. Read as the key it stands
    /// for ([`ProviderKeys::apply_aliases`]); setting both names is an error naming both.
    Alias(&'static str, &'static str),
}

/// The YAML shape of a provider key's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Str,
    Path,
    /// A scalar read as text, so `chat_id: -100123` and `chat_id: "-100123"` are the same.
    Scalar,
    Bool,
    I64,
    /// A map of strings (`headers:`).
    Map,
    /// A list of strings.
    List,
}

impl Key {
    /// The key names it stands for, with their kinds; an alias takes those of its target among
    /// `all` (the provider's keys).
    fn names(&self, all: &[Key]) -> Vec<(String, Kind)> {
        match *self {
            Key::Plain(name, kind) => vec![(name.to_owned(), kind)],
            Key::Secret(name) => vec![
                (name.to_owned(), Kind::Str),
                (format!("{name}_file"), Kind::Path),
                (format!("{name}_env"), Kind::Str),
            ],
            Key::Alias(alias, target) => alias_pairs(alias, target, all)
                .into_iter()
                .map(|(a, _, kind)| (a, kind))
                .collect(),
        }
    }

    fn contains(&self, key: &str, all: &[Key]) -> bool {
        self.names(all).iter().any(|(n, _)| n == key)
    }
}

/// (alias name, target name, kind) for each name an alias covers: one for a plain key, the
/// inline, `_file` and `_env` names for a secret. Empty when `target` is not in `all`.
fn alias_pairs(alias: &str, target: &str, all: &[Key]) -> Vec<(String, String, Kind)> {
    let found = all.iter().find_map(|k| match *k {
        Key::Plain(n, kind) if n == target => Some(Some(kind)),
        Key::Secret(n) if n == target => Some(None),
        _ => None,
    });
    match found {
        Some(Some(kind)) => vec![(alias.to_owned(), target.to_owned(), kind)],
        Some(None) => [("", Kind::Str), ("_file", Kind::Path), ("_env", Kind::Str)]
            .into_iter()
            .map(|(suffix, kind)| {
                (
                    format!("{alias}{suffix}"),
                    format!("{target}{suffix}"),
                    kind,
                )
            })
            .collect(),
        None => Vec::new(),
    }
}

/// Every provider key, first use first, with its kind.
fn all_keys() -> &'static [(&'static str, Kind)] {
    static ALL: OnceLock<Vec<(&'static str, Kind)>> = OnceLock::new();
    ALL.get_or_init(|| {
        let mut out: Vec<(&'static str, Kind)> = Vec::new();
        let names = PROVIDERS
            .iter()
            .flat_map(|p| p.keys.iter().flat_map(|k| k.names(p.keys)))
            // `api_url` inline is a key every channel has (see `apply_aliases`).
            .filter(|(n, _)| n != "api_url");
        for (name, kind) in names {
            if !out.iter().any(|(n, _)| *n == name) {
                out.push((Box::leak(name.into_boxed_str()), kind));
            }
        }
        out
    })
}

/// The `&'static` spelling of provider key `name` (every name an alias stands for is one).
fn static_name(name: &str) -> &'static str {
    all_keys()
        .iter()
        .map(|(n, _)| *n)
        .find(|n| *n == name)
        .unwrap_or("unknown key")
}

/// The value of a provider key as written.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Path(PathBuf),
    Bool(bool),
    I64(i64),
    Map(BTreeMap<String, String>),
    List(Vec<String>),
}

/// The provider keys a channel sets, as written; which provider takes them is checked after
/// `type` is known. Then the Alertmanager names read as ours (ours -> as written, for a
/// secret its base name too), so errors name the key the file has.
#[derive(Debug, Default)]
pub struct ProviderKeys(BTreeMap<&'static str, Value>, BTreeMap<String, String>);

impl ProviderKeys {
    /// Every key some provider takes, in the order providers declare them.
    pub fn names() -> impl Iterator<Item = &'static str> {
        all_keys().iter().map(|(n, _)| *n)
    }

    /// Reads the value of provider key `key` from `map` as its kind. A null value is as if
    /// the key were not there.
    pub fn read<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        let Some(&(name, kind)) = all_keys().iter().find(|(n, _)| *n == key) else {
            return Err(A::Error::custom(format!("{key} is no provider's key")));
        };
        if self.0.contains_key(name) {
            return Err(A::Error::duplicate_field(name));
        }
        let value = match kind {
            Kind::Str => map.next_value::<Option<String>>()?.map(Value::Str),
            Kind::Path => map.next_value::<Option<PathBuf>>()?.map(Value::Path),
            Kind::Scalar => map.next_value::<Option<Scalar>>()?.map(|s| Value::Str(s.0)),
            Kind::Bool => map.next_value::<Option<bool>>()?.map(Value::Bool),
            Kind::I64 => map.next_value::<Option<i64>>()?.map(Value::I64),
            Kind::Map => map
                .next_value::<Option<BTreeMap<String, String>>>()?
                .map(Value::Map),
            Kind::List => map.next_value::<Option<Vec<String>>>()?.map(Value::List),
        };
        if let Some(v) = value {
            self.0.insert(name, v);
        }
        Ok(())
    }

    /// The name key `name` was written as: its Alertmanager name if that was used.
    pub fn written<'k>(&'k self, name: &'k str) -> &'k str {
        self.1.get(name).map_or(name, String::as_str)
    }

    /// Whether key `name` is set.
    fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    /// The keys set, in the order providers declare them.
    pub fn present(&self) -> impl Iterator<Item = &'static str> + '_ {
        all_keys()
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| self.0.contains_key(n))
    }

    pub fn str(&self, key: &str) -> Option<&String> {
        match self.0.get(key) {
            Some(Value::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn path(&self, key: &str) -> Option<&PathBuf> {
        match self.0.get(key) {
            Some(Value::Path(p)) => Some(p),
            _ => None,
        }
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        match self.0.get(key) {
            Some(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    pub fn i64(&self, key: &str) -> Option<i64> {
        match self.0.get(key) {
            Some(Value::I64(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn map(&self, key: &str) -> Option<&BTreeMap<String, String>> {
        match self.0.get(key) {
            Some(Value::Map(m)) => Some(m),
            _ => None,
        }
    }

    pub fn list(&self, key: &str) -> Option<&Vec<String>> {
        match self.0.get(key) {
            Some(Value::List(l)) => Some(l),
            _ => None,
        }
    }

    /// The three keys of secret `key`.
    pub fn secret_keys(&self, key: &str) -> SecretKeys<'_> {
        SecretKeys {
            inline: self.str(key),
            file: self.path(&format!("{key}_file")),
            env: self.str(&format!("{key}_env")),
        }
    }

    /// The first key set that `provider` does not take.
    pub fn foreign(&self, provider: &Provider) -> Option<&'static str> {
        self.present().find(|k| {
            !provider
                .keys
                .iter()
                .any(|key| key.contains(k, provider.keys))
        })
    }

    /// Reads `provider`'s Alertmanager names (`Key::Alias`) as the keys they stand for, so its
    /// `from_raw` sees only its own. Both names of one setting is an error naming both.
    /// `api_url` is special: every channel has it (the provider's base URL). On a channel
    /// whose provider calls its secret `api_url` in Alertmanager (Slack), an `api_url` with
    /// none of the provider's secrets beside it is Alertmanager's: the secret, and no base URL.
    pub fn apply_aliases(
        &mut self,
        provider: &Provider,
        prefix: &str,
        api_url: &mut Option<String>,
    ) -> Result<(), ConfigError> {
        for key in provider.keys {
            let Key::Alias(alias, target) = *key else {
                continue;
            };
            let pairs = alias_pairs(alias, target, provider.keys);
            let alias_given = pairs.iter().map(|(a, _, _)| a).find(|a| self.has(a));
            let ours_given = pairs.iter().map(|(_, t, _)| t).find(|t| self.has(t));
            if let (Some(a), Some(t)) = (alias_given, ours_given) {
                return Err(invalid(
                    format!("{prefix}{a}"),
                    format!("{a} is Alertmanager's name for {t}: set one of {a} and {t}, not both"),
                ));
            }
            for (a, t, _) in &pairs {
                if let Some(v) = self.0.remove(a.as_str()) {
                    self.0.insert(static_name(t), v);
                    self.1.insert(t.clone(), a.clone());
                    self.1.insert(target.to_owned(), alias.to_owned());
                }
            }
            let secret_given = provider.keys.iter().any(|k| match *k {
                Key::Secret(n) => ["", "_file", "_env"]
                    .iter()
                    .any(|suffix| self.has(&format!("{n}{suffix}"))),
                _ => false,
            });
            if alias == "api_url"
                && !secret_given
                && let Some(url) = api_url.take()
            {
                self.0.insert(static_name(target), Value::Str(url));
                self.1.insert(target.to_owned(), alias.to_owned());
            }
        }
        Ok(())
    }
}

/// A YAML scalar read as text, so `chat_id: -100123` and `chat_id: "-100123"` are the same.
#[derive(Debug, Clone)]
pub struct Scalar(pub String);

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

/// What a provider's `from_raw` validates: its keys at `prefix` (`channels.NAME.`).
#[derive(Debug)]
pub struct Input<'a> {
    pub prefix: &'a str,
    pub keys: &'a ProviderKeys,
    pub ctx: &'a Ctx<'a>,
    /// The channel's `api_url`, checked already: a wrong one is reported there and given as
    /// written, so a provider that needs one does not call it missing.
    pub api_url: Option<&'a str>,
}

impl Input<'_> {
    /// The full path of `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{}", self.prefix, self.keys.written(key))
    }

    /// The error for `key`.
    pub fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        invalid(self.key(key), message)
    }

    /// Every error `problems` found, for settings that could not be built: a provider checks
    /// each of its independent keys into one [`Problems`] before giving up.
    pub fn failed(&self, problems: Problems) -> ConfigError {
        problems.failed(self.prefix.trim_end_matches('.'))
    }

    /// A text key that must be given and not blank.
    pub fn required(&self, key: &str) -> Result<String, ConfigError> {
        match self.keys.str(key) {
            Some(v) if !v.trim().is_empty() => Ok(v.clone()),
            _ => Err(self.invalid(key, "required")),
        }
    }

    /// Secret `key` (inline, `_file` or `_env`), if given.
    pub fn secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        self.ctx.secret(
            self.prefix,
            self.keys.written(key),
            self.keys.secret_keys(key),
        )
    }

    /// Secret `key`, which must be given.
    pub fn required_secret(&self, key: &str) -> Result<Secret, ConfigError> {
        self.ctx.required_secret(
            self.prefix,
            self.keys.written(key),
            self.keys.secret_keys(key),
        )
    }

    /// A secret URL (webhooks): required, and never echoed when it is no http(s) URL.
    pub fn url_secret(&self, key: &str) -> Result<Secret, ConfigError> {
        let s = self.required_secret(key)?;
        self.check_secret_url(key, &s)?;
        Ok(s)
    }

    /// `url` at `key` must be http(s); the URL is a secret, so the message never shows it.
    pub fn check_secret_url(&self, key: &str, url: &Secret) -> Result<(), ConfigError> {
        check_url(&self.key(key), url.expose())
            .map_err(|_| self.invalid(key, "is not an http(s) URL"))
    }
}

/// A validated channel: provider settings plus what every channel has.
#[derive(Debug)]
pub struct ChannelConfig {
    pub name: String,
    pub kind: ChannelKind,
    /// Replaces the provider's base URL (self-hosted ntfy or Matrix, tests).
    pub api_url: Option<String>,
    pub template: Option<UserTemplate>,
    pub rate: Rate,
    pub timeout: Option<Duration>,
    /// At most so many messages per window to each destination (`crate::model::budget`).
    pub budget: Option<crate::model::budget::Budget>,
    /// Whether its destinations get RESOLVED messages (`send_resolved`, default true).
    pub send_resolved: SendResolved,
}

/// `send_resolved` of a channel (`send_resolved: false`) or of some of its recipients
/// (`send_resolved: {"+447700900124": false}`: the others keep the default, true).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendResolved {
    pub channel: bool,
    pub recipients: BTreeMap<String, bool>,
}

impl Default for SendResolved {
    /// Alertmanager's default: resolved messages are sent.
    fn default() -> Self {
        SendResolved {
            channel: true,
            recipients: BTreeMap::new(),
        }
    }
}

impl SendResolved {
    /// Whether `recipient` (none: the channel itself) gets RESOLVED messages.
    pub fn for_recipient(&self, recipient: Option<&str>) -> bool {
        recipient
            .and_then(|r| self.recipients.get(r).copied())
            .unwrap_or(self.channel)
    }
}

/// Token bucket: `per_second` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    pub const fn new(per_second: f64, burst: u32) -> Self {
        Rate { per_second, burst }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s burst {}", self.per_second, self.burst)
    }
}

#[derive(Debug)]
pub enum ChannelKind {
    Webhook {
        url: Secret,
        headers: Vec<(String, String)>,
        signing_secret: Option<Secret>,
    },
    Slack(SlackMode),
    Discord {
        webhook_url: Secret,
    },
    Telegram {
        bot_token: Secret,
        chat_id: String,
        message_thread_id: Option<i64>,
        /// `ack: true`: messages carry an Acknowledge button and the relay long-polls
        /// `getUpdates` for it and for `/ack N` (see `ack_telegram`).
        ack: bool,
    },
    Ntfy {
        topic: String,
        auth: NtfyAuth,
        priority: Option<u8>,
    },
    Twilio {
        account_sid: String,
        auth_token: Secret,
        from: Option<String>,
        messaging_service_sid: Option<String>,
        to: Vec<String>,
    },
    /// Phone calls, acknowledged by key press (`crate::voice`).
    TwilioVoice(VoiceSettings),
    Teams {
        url: Secret,
    },
    Matrix {
        room_id: String,
        access_token: Secret,
    },
    Pushover {
        token: Secret,
        user_key: Secret,
        priority: i8,
        /// Priority 2 only: retries until acknowledged, receipts polled (`pushover_receipts`).
        emergency: Option<Emergency>,
    },
    Email(EmailSettings),
}

impl ChannelKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            ChannelKind::Webhook { .. } => "webhook",
            ChannelKind::Slack(_) => "slack",
            ChannelKind::Discord { .. } => "discord",
            ChannelKind::Telegram { .. } => "telegram",
            ChannelKind::Ntfy { .. } => "ntfy",
            ChannelKind::Twilio { .. } => "twilio",
            ChannelKind::TwilioVoice(_) => "twilio_voice",
            ChannelKind::Teams { .. } => "teams",
            ChannelKind::Matrix { .. } => "matrix",
            ChannelKind::Pushover { .. } => "pushover",
            ChannelKind::Email(_) => "email",
        }
    }
}

/// Where a notification can go: a channel, or one recipient of a channel that sends to several
/// (each Twilio number, texted or called, is its own destination, so a failure for one never re-sends to another).
#[derive(Debug, Clone)]
pub struct Destination {
    pub id: String,
    pub channel: Arc<ChannelConfig>,
    pub recipient: Option<String>,
}

impl Destination {
    /// Whether RESOLVED messages are created for this destination (`send_resolved`).
    pub fn sends_resolved(&self) -> bool {
        self.channel
            .send_resolved
            .for_recipient(self.recipient.as_deref())
    }
}

impl ChannelConfig {
    /// The recipients that are destinations of their own (each Twilio number), in order;
    /// empty for a channel that is one destination.
    pub fn recipients(&self) -> Vec<&str> {
        match &self.kind {
            ChannelKind::Twilio { to, .. } | ChannelKind::TwilioVoice(VoiceSettings { to, .. }) => {
                to.iter().map(String::as_str).collect()
            }
            _ => Vec::new(),
        }
    }

    /// This channel's destinations, in order.
    pub fn destinations(self: &Arc<Self>) -> Vec<Destination> {
        let recipients = self.recipients();
        if recipients.is_empty() {
            return vec![Destination {
                id: self.name.clone(),
                channel: Arc::clone(self),
                recipient: None,
            }];
        }
        recipients
            .into_iter()
            .map(|r| Destination {
                id: format!("{}/{r}", self.name),
                channel: Arc::clone(self),
                recipient: Some(r.to_owned()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alertmanager_name_stands_for_a_key_of_its_provider() {
        for p in PROVIDERS {
            for key in p.keys {
                if let Key::Alias(alias, target) = *key {
                    assert!(
                        !alias_pairs(alias, target, p.keys).is_empty(),
                        "{}: {alias} stands for {target}, no key of it",
                        p.name
                    );
                    for (_, t, _) in alias_pairs(alias, target, p.keys) {
                        assert_eq!(static_name(&t), t, "{}: {t} is not a provider key", p.name);
                    }
                }
            }
        }
    }

    #[test]
    fn providers_agree_on_the_kind_of_a_shared_key() {
        let mut seen: BTreeMap<String, Kind> = BTreeMap::new();
        for p in PROVIDERS {
            for (name, kind) in p.keys.iter().flat_map(|k| k.names(p.keys)) {
                let first = *seen.entry(name.clone()).or_insert(kind);
                assert_eq!(first, kind, "{} declares {name} as another kind", p.name);
            }
        }
    }
}

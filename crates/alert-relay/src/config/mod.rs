//! The relay's YAML configuration: loading (`load`), validation into [`Config`], and the
//! resolved routing that `check-config` prints.
//!
//! Two phases, as in ripgrep: `raw` mirrors the file (serde, unknown keys rejected), and
//! [`Config::from_raw`] turns it into checked values, reading secret files and environment
//! variables through a [`SecretSource`] so tests pass plain maps. Every error names the key.

pub mod budget;
mod pipeline;
mod raw;
mod rotation;

pub use self::rotation::TARGET_PREFIX as ROTATION_PREFIX;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::matcher::Matcher;
use crate::render::template::UserTemplate;
use crate::rotation::Rotation;
use crate::secret::{Secret, redact_url};
use crate::time::parse_duration;

pub use self::pipeline::{AlertmanagerApi, Deadman};
use self::raw::{RawChannel, RawConfig, RawMatchers, RawRoute};

/// Default listen port. 9097 (the example) is JIRAlert's and 9098-9099 are taken in
/// the Prometheus default-port allocations; 9832 sits next to pi-exporter's 9831. It still has
/// to be registered there (see docs/alert-relay.md).
pub const DEFAULT_PORT: u16 = 9832;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Why a configuration cannot be used. Every variant names the file or the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// Syntax, an unknown key or a wrong type; serde-saphyr's message names line and column.
    #[error("{}: {message}", path.display())]
    Yaml { path: PathBuf, message: String },
    /// `key` is the dotted path of the offending key, e.g. `channels.ops-slack.webhook_url_file`.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// Where `*_file` and `*_env` secrets come from. Production reads the file system and the
/// process environment; tests use [`MapSecrets`].
pub trait SecretSource {
    fn file(&self, path: &Path) -> io::Result<String>;
    fn env(&self, name: &str) -> Option<String>;
}

#[derive(Debug, Clone, Copy)]
pub struct SystemSecrets;

impl SecretSource for SystemSecrets {
    fn file(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }
    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Secrets from maps, for tests.
#[derive(Debug, Default)]
pub struct MapSecrets {
    pub files: BTreeMap<PathBuf, String>,
    pub env: BTreeMap<String, String>,
}

impl SecretSource for MapSecrets {
    fn file(&self, path: &Path) -> io::Result<String> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
    }
    fn env(&self, name: &str) -> Option<String> {
        self.env.get(name).cloned()
    }
}

#[derive(Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub public_url: Option<String>,
    pub auth: Auth,
    /// `auth: none` written out (not merely left out): no authentication on purpose.
    pub auth_none_declared: bool,
    pub storage: StorageConfig,
    pub limits: Limits,
    pub delivery: DeliveryConfig,
    pub channels: BTreeMap<String, Arc<ChannelConfig>>,
    pub policies: BTreeMap<String, Policy>,
    pub routes: Vec<Route>,
    pub deadman: Option<Deadman>,
    pub alertmanager: Option<AlertmanagerApi>,
    /// On-call rotations, step targets as `rotation:NAME`.
    pub rotations: BTreeMap<String, Rotation>,
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub sqlite: PathBuf,
    /// How long finished alerts and their delivery records are kept.
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub read_header_timeout: Duration,
    /// Deadline for reading a whole request body (slow-body attacks).
    pub body_timeout: Duration,
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Per HTTP request to a provider.
    pub timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// 0: no limit on attempts, only `max_age`.
    pub max_attempts: u32,
    /// A notification still undelivered this long after it was accepted is dead-lettered.
    pub max_age: Duration,
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
}

/// Token bucket: `per_second` refill, `burst` capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
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

/// Pushover emergency priority (2): the phone alarms every `retry` until someone acknowledges
/// or `expire` passes; the relay polls the receipt every `poll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emergency {
    pub retry: Duration,
    pub expire: Duration,
    pub poll: Duration,
}

#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub tls: EmailTls,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub from: lettre::message::Mailbox,
    pub to: Vec<lettre::message::Mailbox>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTls {
    /// Plain connection upgraded with STARTTLS, which must succeed.
    Starttls,
    /// TLS from the first byte (SMTPS, port 465).
    Implicit,
    /// No TLS: only for a relay on the same host or in tests.
    None,
}

#[derive(Debug)]
pub enum SlackMode {
    Webhook { url: Secret },
    Bot { token: Secret, channel: String },
}

#[derive(Debug)]
pub enum NtfyAuth {
    None,
    Token(Secret),
    Basic { username: String, password: Secret },
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
            ChannelKind::Teams { .. } => "teams",
            ChannelKind::Matrix { .. } => "matrix",
            ChannelKind::Pushover { .. } => "pushover",
            ChannelKind::Email(_) => "email",
        }
    }
}

/// The keys each channel type takes beside `type`, `api_url`, `template`, `rate_limit` and
/// `timeout`.
const CHANNEL_KEYS: &[(&str, &[&str], Rate)] = &[
    (
        "webhook",
        &[
            "url",
            "url_file",
            "url_env",
            "headers",
            "signing_secret",
            "signing_secret_file",
            "signing_secret_env",
        ],
        Rate {
            per_second: 10.0,
            burst: 20,
        },
    ),
    (
        "slack",
        &[
            "webhook_url",
            "webhook_url_file",
            "webhook_url_env",
            "bot_token",
            "bot_token_file",
            "bot_token_env",
            "channel",
        ],
        // "1 per second, short bursts >1 allowed".
        Rate {
            per_second: 1.0,
            burst: 3,
        },
    ),
    (
        "discord",
        &["webhook_url", "webhook_url_file", "webhook_url_env"],
        // Per-webhook buckets are learnt from X-RateLimit-* headers; this only smooths bursts.
        Rate {
            per_second: 2.0,
            burst: 5,
        },
    ),
    (
        "telegram",
        &[
            "bot_token",
            "bot_token_file",
            "bot_token_env",
            "chat_id",
            "message_thread_id",
            "ack",
        ],
        // At most 20 messages per minute in a group.
        Rate {
            per_second: 20.0 / 60.0,
            burst: 3,
        },
    ),
    (
        "ntfy",
        &[
            "topic",
            "priority",
            "token",
            "token_file",
            "token_env",
            "username",
            "password",
            "password_file",
            "password_env",
        ],
        // ntfy.sh: 60-request burst, one more every 5 s.
        Rate {
            per_second: 0.2,
            burst: 60,
        },
    ),
    (
        "twilio",
        &[
            "account_sid",
            "auth_token",
            "auth_token_file",
            "auth_token_env",
            "from",
            "messaging_service_sid",
            "to",
        ],
        // One message per second per long-code sender.
        Rate {
            per_second: 1.0,
            burst: 1,
        },
    ),
    (
        "teams",
        &["url", "url_file", "url_env"],
        Rate {
            per_second: 1.0,
            burst: 4,
        },
    ),
    (
        "matrix",
        &[
            "room_id",
            "access_token",
            "access_token_file",
            "access_token_env",
        ],
        // Synapse's default rc_message: 0.2/s, burst 10.
        Rate {
            per_second: 0.2,
            burst: 10,
        },
    ),
    (
        "pushover",
        &[
            "token",
            "token_file",
            "token_env",
            "user_key",
            "user_key_file",
            "user_key_env",
            "priority",
            "retry",
            "expire",
            "receipt_poll_interval",
        ],
        Rate {
            per_second: 2.0,
            burst: 5,
        },
    ),
    (
        "email",
        &[
            "smarthost",
            "tls",
            "username",
            "password",
            "password_file",
            "password_env",
            "from",
            "to",
        ],
        Rate {
            per_second: 1.0,
            burst: 5,
        },
    ),
];
const COMMON_CHANNEL_KEYS: &[&str] = &["api_url", "template", "rate_limit", "timeout", "budget"];

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    pub steps: Vec<Step>,
    /// Re-runs the last step while the incident escalates.
    pub repeat: Option<Repeat>,
    pub until: Until,
    /// An acknowledged incident still open this long after the ack escalates again.
    pub ack_timeout: Option<Duration>,
    /// Storm control (`crate::storm`).
    pub storm: Option<crate::model::storm::StormRule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeat {
    pub every: Duration,
    pub times: u32,
}

/// What stops escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    Acknowledged,
    Resolved,
}

#[derive(Debug, Clone)]
pub struct Step {
    /// Time since the incident opened (zero for the first step).
    pub after: Duration,
    pub notify: Vec<String>,
}

impl Policy {
    /// Every send of this policy in order: (elapsed time it is due at, step index). The first
    /// entry is step 0 at zero; repeats of the last step follow it.
    pub fn schedule(&self) -> Vec<(Duration, usize)> {
        let mut out: Vec<(Duration, usize)> = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.after, i))
            .collect();
        if let (Some(r), Some(&(last_at, last))) = (self.repeat, out.last()) {
            for k in 1..=r.times {
                out.push((last_at + r.every * k, last));
            }
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    /// `POST /webhook/{name}` pins this route.
    pub name: Option<String>,
    pub matchers: Vec<Matcher>,
    pub policy: String,
    pub continue_matching: bool,
}

/// Where a notification can go: a channel, or one recipient of a channel that sends to several
/// (each Twilio number is its own destination, so a failure for one never re-sends to another).
#[derive(Debug, Clone)]
pub struct Destination {
    pub id: String,
    pub channel: Arc<ChannelConfig>,
    pub recipient: Option<String>,
}

impl ChannelConfig {
    /// This channel's destinations, in order.
    pub fn destinations(self: &Arc<Self>) -> Vec<Destination> {
        match &self.kind {
            ChannelKind::Twilio { to, .. } => to
                .iter()
                .map(|number| Destination {
                    id: format!("{}/{number}", self.name),
                    channel: Arc::clone(self),
                    recipient: Some(number.clone()),
                })
                .collect(),
            _ => vec![Destination {
                id: self.name.clone(),
                channel: Arc::clone(self),
                recipient: None,
            }],
        }
    }
}

/// Reads and validates the configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &SystemSecrets)
}

pub fn load_with(path: &Path, secrets: &dyn SecretSource) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base, secrets).map_err(|e| match e {
        ConfigError::Yaml { message, .. } => ConfigError::Yaml {
            path: path.to_owned(),
            message,
        },
        other => other,
    })
}

/// Parses and validates YAML text; relative `*_file` paths are resolved against `base`.
pub fn parse(text: &str, base: &Path, secrets: &dyn SecretSource) -> Result<Config, ConfigError> {
    let raw = parse_raw(text).map_err(|message| ConfigError::Yaml {
        path: PathBuf::from("<config>"),
        message,
    })?;
    Config::from_raw(raw, &Ctx { base, secrets })
}

/// The file as written, or an error that names the key path, the line and column and the
/// problem, and never any text of the file: no source snippet, and no quoted value (a typo
/// beside an inline token, or a token pasted where a key belongs, would print it). The error
/// goes to the log and stderr, and to the running relay's log on a SIGHUP reload.
fn parse_raw(text: &str) -> Result<RawConfig, String> {
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    let mut path = None;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_path_to_error::deserialize(de).map_err(|e| {
            path = Some(e.path().to_string()).filter(|p| p != ".");
            e.into_inner()
        })
    })
    .map_err(|e| {
        let message = e.without_snippet().to_string();
        let path = match path {
            // The path of an unknown key ends in the key as written.
            Some(p) if message.starts_with("unknown field") => unknown_key_path(&p),
            p => p,
        };
        let message = without_quoted(&message);
        match path {
            Some(p) => format!("{p}: {message}"),
            None => message,
        }
    })
}

/// The path to show for an unknown key: the key itself when it looks like one
/// (`deadman.after`), else its parent (a token pasted where a key belongs stays unprinted).
fn unknown_key_path(path: &str) -> Option<String> {
    let (parent, key) = match path.rsplit_once('.') {
        Some((parent, key)) => (Some(parent), key),
        None => (None, path),
    };
    if looks_like_a_key(key) {
        Some(path.to_owned())
    } else {
        parent.map(str::to_owned)
    }
}

/// Lower-case letters and `_`, at most 32: every key of the file is such a word, and no token
/// or password a provider issues is.
fn looks_like_a_key(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
}

/// `message` with every `"…"` span emptied to `…`, and every `` `…` `` span too unless it
/// looks like a key: parser messages quote the offending value or key.
fn without_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['"', '`']) {
        let quote = if rest[start..].starts_with('`') {
            '`'
        } else {
            '"'
        };
        out.push_str(&rest[..start]);
        out.push(quote);
        let after = &rest[start + 1..];
        let Some(len) = after.find(quote) else {
            out.push('…');
            return out;
        };
        let inner = &after[..len];
        out.push_str(if quote == '`' && looks_like_a_key(inner) {
            inner
        } else {
            "…"
        });
        out.push(quote);
        rest = &after[len + 1..];
    }
    out.push_str(rest);
    out
}

struct Ctx<'a> {
    base: &'a Path,
    secrets: &'a dyn SecretSource,
}

impl Ctx<'_> {
    fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// One secret given inline as `key`, in a file as `key_file`, or in an environment
    /// variable as `key_env`; at most one of them. File contents lose a trailing newline.
    fn secret(
        &self,
        prefix: &str,
        key: &str,
        inline: Option<&String>,
        file: Option<&PathBuf>,
        env: Option<&String>,
    ) -> Result<Option<Secret>, ConfigError> {
        let given = [inline.is_some(), file.is_some(), env.is_some()];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err(invalid(
                format!("{prefix}{key}"),
                format!("set only one of {key}, {key}_file and {key}_env"),
            ));
        }
        let value = if let Some(v) = inline {
            v.clone()
        } else if let Some(p) = file {
            let path = self.path(p);
            let text = self.secrets.file(&path).map_err(|e| {
                invalid(
                    format!("{prefix}{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        } else if let Some(name) = env {
            self.secrets.env(name).ok_or_else(|| {
                invalid(
                    format!("{prefix}{key}_env"),
                    format!("environment variable {name} is not set"),
                )
            })?
        } else {
            return Ok(None);
        };
        if value.is_empty() {
            return Err(invalid(format!("{prefix}{key}"), "the secret is empty"));
        }
        Ok(Some(Secret::new(value)))
    }

    fn required_secret(
        &self,
        prefix: &str,
        key: &str,
        inline: Option<&String>,
        file: Option<&PathBuf>,
        env: Option<&String>,
    ) -> Result<Secret, ConfigError> {
        self.secret(prefix, key, inline, file, env)?.ok_or_else(|| {
            invalid(
                format!("{prefix}{key}"),
                format!("required: set {key}_file, {key}_env or {key}"),
            )
        })
    }
}

fn duration(key: &str, value: Option<&String>, default: Duration) -> Result<Duration, ConfigError> {
    value.map_or(Ok(default), |v| {
        parse_duration(v).map_err(|e| invalid(key, e))
    })
}

/// What the listener's web configuration (`--web.config.file`) adds to its protection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerSecurity {
    pub tls: bool,
    /// Clients must present a certificate from the configured CA: that authenticates them.
    pub client_certificates: bool,
}

impl Config {
    /// A listener beyond this machine needs authentication: whoever reaches it can post alerts
    /// and acknowledge, escalate or resolve incidents through the API. Client certificates
    /// count; `auth: none` written out accepts the risk ([`Config::exposure_warning`]).
    /// `listen` is the address actually bound (a reload cannot move the listener).
    pub fn check_exposure(
        &self,
        listen: SocketAddr,
        security: ListenerSecurity,
    ) -> Result<(), ConfigError> {
        if listen.ip().is_loopback()
            || security.client_certificates
            || self.auth_none_declared
            || !matches!(self.auth, Auth::None)
        {
            return Ok(());
        }
        Err(invalid(
            "auth",
            format!(
                "required: listen {listen} is reachable from other machines, and without \
                 authentication anyone there can post alerts and acknowledge or resolve \
                 incidents; set a bearer_token_file or basic credentials (as Alertmanager's \
                 http_config sends them), or `auth: none` to accept that risk"
            ),
        ))
    }

    /// Why this configuration is dangerous though valid: `auth: none` on a listener other
    /// machines can reach. `check-config` prints it; `run` logs it.
    pub fn exposure_warning(&self, security: ListenerSecurity) -> Option<String> {
        let exposed = !self.listen.ip().is_loopback() && !security.client_certificates;
        (self.auth_none_declared && exposed).then(|| {
            format!(
                "auth: none on {}, which other machines can reach: anyone there can post alerts \
                 and acknowledge or resolve incidents",
                self.listen
            )
        })
    }
}

fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(invalid(
            key,
            "must be an http:// or https:// URL with a host",
        )),
        Err(e) => Err(invalid(key, format!("not a URL: {e}"))),
    }
}

impl Config {
    fn from_raw(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
        let listen = match &raw.listen {
            None => SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            Some(s) => s.parse().map_err(|_| {
                invalid(
                    "listen",
                    format!("{s:?} is not an address like 127.0.0.1:{DEFAULT_PORT}"),
                )
            })?,
        };
        if let Some(u) = &raw.public_url {
            check_url("public_url", u)?;
        }
        if raw.tls.is_some() {
            return Err(invalid(
                "tls",
                "moved: the listener's TLS is set in the web configuration file \
                 (--web.config.file, exporter-toolkit format): tls_server_config with cert_file, \
                 key_file, and for client certificates client_auth_type: \
                 RequireAndVerifyClientCert and client_ca_file (docs/web-config.md)",
            ));
        }
        let (auth, auth_none_declared) = match raw.auth {
            None => (Auth::None, false),
            Some(raw::RawListenerAuth::None) => (Auth::None, true),
            Some(raw::RawListenerAuth::Credentials(a)) => (auth("auth", a, ctx)?, false),
        };
        if raw.storage.sqlite.as_os_str().is_empty() {
            return Err(invalid("storage.sqlite", "must be a file path"));
        }
        let storage = StorageConfig {
            sqlite: ctx.path(&raw.storage.sqlite),
            retention: duration(
                "storage.retention",
                raw.storage.retention.as_ref(),
                Duration::from_secs(30 * 86_400),
            )?,
        };
        let limits = {
            let l = raw.limits.as_ref();
            let max_body_bytes = match l.and_then(|l| l.max_body_bytes) {
                None => DEFAULT_MAX_BODY_BYTES,
                Some(n) if (1024..=64 * 1024 * 1024).contains(&n) => {
                    usize::try_from(n).unwrap_or(DEFAULT_MAX_BODY_BYTES)
                }
                Some(_) => {
                    return Err(invalid(
                        "limits.max_body_bytes",
                        "must be between 1024 and 67108864",
                    ));
                }
            };
            Limits {
                max_body_bytes,
                read_header_timeout: duration(
                    "limits.read_header_timeout",
                    l.and_then(|l| l.read_header_timeout.as_ref()),
                    Duration::from_secs(10),
                )?,
                body_timeout: duration(
                    "limits.body_timeout",
                    l.and_then(|l| l.body_timeout.as_ref()),
                    Duration::from_secs(30),
                )?,
                max_connections: l
                    .and_then(|l| l.max_connections)
                    .map_or(512, |n| n.max(1) as usize),
            }
        };
        let delivery = {
            let d = raw.delivery.as_ref();
            let cfg = DeliveryConfig {
                timeout: duration(
                    "delivery.timeout",
                    d.and_then(|d| d.timeout.as_ref()),
                    Duration::from_secs(10),
                )?,
                initial_backoff: duration(
                    "delivery.initial_backoff",
                    d.and_then(|d| d.initial_backoff.as_ref()),
                    Duration::from_secs(1),
                )?,
                max_backoff: duration(
                    "delivery.max_backoff",
                    d.and_then(|d| d.max_backoff.as_ref()),
                    Duration::from_secs(300),
                )?,
                max_attempts: d.and_then(|d| d.max_attempts).unwrap_or(0),
                max_age: duration(
                    "delivery.max_age",
                    d.and_then(|d| d.max_age.as_ref()),
                    Duration::from_secs(86_400),
                )?,
            };
            if cfg.initial_backoff.is_zero() || cfg.initial_backoff > cfg.max_backoff {
                return Err(invalid(
                    "delivery.initial_backoff",
                    "must be > 0 and <= delivery.max_backoff",
                ));
            }
            if cfg.timeout.is_zero() {
                return Err(invalid("delivery.timeout", "must be > 0"));
            }
            cfg
        };

        let mut channels = BTreeMap::new();
        for (name, rc) in raw.channels {
            let channel = channel(&name, rc, ctx)?;
            channels.insert(name, Arc::new(channel));
        }
        let rotations = rotation::rotations(raw.rotations, &channels)?;
        crate::config::budget::check_overflow(&channels).map_err(|(k, m)| invalid(k, m))?;
        let mut policies = BTreeMap::new();
        for (name, rp) in raw.policies {
            let prefix = format!("policies.{name}");
            let repeat = match rp.repeat {
                Some(r) => {
                    let every = parse_duration(&r.every)
                        .map_err(|e| invalid(format!("{prefix}.repeat.every"), e))?;
                    if every.is_zero() {
                        return Err(invalid(format!("{prefix}.repeat.every"), "must be above 0"));
                    }
                    Some(Repeat {
                        every,
                        times: r.times,
                    })
                }
                None => None,
            };
            let until = match rp.until.as_deref() {
                None | Some("acknowledged") => Until::Acknowledged,
                Some("resolved") => Until::Resolved,
                Some(other) => {
                    return Err(invalid(
                        format!("{prefix}.until"),
                        format!("{other:?}: use acknowledged or resolved"),
                    ));
                }
            };
            let ack_timeout = match &rp.ack_timeout {
                Some(t) => Some(
                    parse_duration(t).map_err(|e| invalid(format!("{prefix}.ack_timeout"), e))?,
                ),
                None => None,
            };
            let storm = match &rp.storm {
                Some(st) => Some(
                    crate::model::storm::StormRule::new(&st.window, st.threshold, &st.group_by)
                        .map_err(|(k, m)| invalid(format!("{prefix}.storm.{k}"), m))?,
                ),
                None => None,
            };
            if rp.steps.is_empty() {
                return Err(invalid(
                    format!("{prefix}.steps"),
                    "needs at least one step",
                ));
            }
            let mut steps: Vec<Step> = Vec::new();
            for (i, s) in rp.steps.into_iter().enumerate() {
                let key = format!("{prefix}.steps[{i}]");
                let after = match &s.after {
                    Some(after) => {
                        parse_duration(after).map_err(|e| invalid(format!("{key}.after"), e))?
                    }
                    None => Duration::ZERO,
                };
                if i == 0 && !after.is_zero() {
                    return Err(invalid(
                        format!("{key}.after"),
                        "the first step is sent when the incident opens; it takes no after:",
                    ));
                }
                if i > 0 && s.after.is_none() {
                    return Err(invalid(
                        format!("{key}.after"),
                        "every step but the first needs after: (time since the incident opened)",
                    ));
                }
                if let Some(prev) = steps.last()
                    && i > 0
                    && after <= prev.after
                {
                    return Err(invalid(
                        format!("{key}.after"),
                        "must be later than the previous step's after:",
                    ));
                }
                if s.notify.is_empty() {
                    return Err(invalid(format!("{key}.notify"), "names no channel"));
                }
                for (j, c) in s.notify.iter().enumerate() {
                    if let Some(r) = c.strip_prefix(ROTATION_PREFIX) {
                        if !rotations.contains_key(r) {
                            return Err(invalid(
                                format!("{key}.notify[{j}]"),
                                format!("no rotation named {r:?}"),
                            ));
                        }
                    } else if !channels.contains_key(c) {
                        return Err(invalid(
                            format!("{key}.notify[{j}]"),
                            format!("no channel named {c:?}"),
                        ));
                    }
                }
                steps.push(Step {
                    after,
                    notify: s.notify,
                });
            }
            policies.insert(
                name.clone(),
                Policy {
                    name,
                    steps,
                    repeat,
                    until,
                    ack_timeout,
                    storm,
                },
            );
        }
        let mut routes = Vec::new();
        let mut names = BTreeSet::new();
        for (i, rr) in raw.routes.into_iter().enumerate() {
            routes.push(route(i, rr, &policies, &mut names)?);
        }
        if routes.is_empty() {
            return Err(invalid("routes", "needs at least one route"));
        }
        Ok(Config {
            listen,
            public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            auth,
            auth_none_declared,
            storage,
            limits,
            delivery,
            deadman: raw
                .deadman
                .map(|d| pipeline::deadman(d, &channels))
                .transpose()?,
            alertmanager: raw
                .alertmanager
                .map(|a| pipeline::alertmanager(a, ctx))
                .transpose()?,
            channels,
            policies,
            routes,
            rotations,
        })
    }

    /// Every destination of every channel, by id.
    pub fn destinations(&self) -> BTreeMap<String, Destination> {
        self.channels
            .values()
            .flat_map(ChannelConfig::destinations)
            .map(|d| (d.id.clone(), d))
            .collect()
    }

    /// The resolved routing, as `check-config` prints it.
    pub fn describe(&self, security: ListenerSecurity) -> String {
        let mut out = String::new();
        let auth = match &self.auth {
            Auth::None if self.auth_none_declared => "auth: none".to_owned(),
            Auth::None => "no authentication".to_owned(),
            Auth::Bearer(_) => "bearer token".to_owned(),
            Auth::Basic { username, .. } => format!("basic auth as {username:?}"),
        };
        let tls = match security {
            ListenerSecurity { tls: false, .. } => "plain HTTP",
            ListenerSecurity {
                client_certificates: true,
                ..
            } => "TLS with client certificates",
            _ => "TLS",
        };
        let _ = writeln!(out, "listen: {} ({tls}, {auth})", self.listen);
        if let Some(w) = self.exposure_warning(security) {
            let _ = writeln!(out, "warning: {w}");
        }
        let _ = writeln!(out, "storage: {}", self.storage.sqlite.display());
        let _ = writeln!(out, "channels:");
        for c in self.channels.values() {
            let _ = writeln!(
                out,
                "  {} ({}), rate {}/s burst {}{}",
                c.name,
                c.kind.type_name(),
                c.rate.per_second,
                c.rate.burst,
                c.api_url
                    .as_ref()
                    .map_or(String::new(), |u| format!(", api_url {}", redact_url(u)))
            );
            for d in c.destinations().iter().filter(|d| d.recipient.is_some()) {
                let _ = writeln!(out, "    destination {}", d.id);
            }
            if let Some(b) = &c.budget {
                let _ = writeln!(
                    out,
                    "    budget {} per {} per destination, overflow to {}",
                    b.max,
                    crate::time::humanize(b.per),
                    b.overflow.join(", ")
                );
            }
        }
        let _ = writeln!(out, "policies:");
        for p in self.policies.values() {
            for (i, s) in p.steps.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "  {} step {}{}: notify {}",
                    p.name,
                    i + 1,
                    if i == 0 {
                        String::new()
                    } else {
                        format!(" after {}", crate::time::humanize(s.after))
                    },
                    s.notify.join(", ")
                );
            }
            if let Some(r) = p.repeat {
                let _ = writeln!(
                    out,
                    "  {} repeat the last step every {}, {} times",
                    p.name,
                    crate::time::humanize(r.every),
                    r.times
                );
            }
            let _ = writeln!(
                out,
                "  {} until {}{}",
                p.name,
                match p.until {
                    Until::Acknowledged => "acknowledged",
                    Until::Resolved => "resolved",
                },
                p.ack_timeout.map_or(String::new(), |t| format!(
                    ", ack timeout {}",
                    crate::time::humanize(t)
                ))
            );
            if let Some(st) = &p.storm {
                let _ = writeln!(
                    out,
                    "  {} storm: more than {} incidents within {} by [{}] collapse into summaries",
                    p.name,
                    st.threshold,
                    crate::time::humanize(st.window),
                    st.group_by.join(", ")
                );
            }
        }
        self.describe_rotations(&mut out, crate::time::WallClock::default().now());
        let _ = writeln!(out, "routes (first match wins unless continue: true):");
        for (i, r) in self.routes.iter().enumerate() {
            let matchers = if r.matchers.is_empty() {
                "every alert".to_owned()
            } else {
                let m: Vec<String> = r.matchers.iter().map(ToString::to_string).collect();
                format!("{{{}}}", m.join(", "))
            };
            let dests = self
                .policies
                .get(&r.policy)
                .map_or(String::new(), |p| p.steps[0].notify.join(", "));
            let _ = writeln!(
                out,
                "  {}. {}{} -> policy {} -> {}{}",
                i + 1,
                r.name.as_ref().map_or(String::new(), |n| format!("[{n}] ")),
                matchers,
                r.policy,
                dests,
                if r.continue_matching {
                    " (continue)"
                } else {
                    ""
                }
            );
        }
        if !self.routes.iter().any(|r| r.matchers.is_empty()) {
            let _ = writeln!(
                out,
                "warning: no route matches every alert; unmatched alerts are stored but sent nowhere"
            );
        }
        pipeline::describe(self, &mut out);
        out
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s burst {}", self.per_second, self.burst)
    }
}

/// `auth:`-style credentials (a bearer token or basic), at `prefix`.
fn auth(prefix: &str, a: raw::RawAuth, ctx: &Ctx<'_>) -> Result<Auth, ConfigError> {
    let bearer = ctx.secret(
        &format!("{prefix}."),
        "bearer_token",
        a.bearer_token.as_ref(),
        a.bearer_token_file.as_ref(),
        a.bearer_token_env.as_ref(),
    )?;
    match (bearer, a.basic) {
        (Some(_), Some(_)) => Err(invalid(
            prefix,
            "set either a bearer token or basic, not both",
        )),
        (Some(token), None) => Ok(Auth::Bearer(token)),
        (None, Some(b)) => {
            if b.username.is_empty() || b.username.contains(':') {
                return Err(invalid(
                    format!("{prefix}.basic.username"),
                    "must be non-empty and without ':'",
                ));
            }
            let password = ctx.required_secret(
                &format!("{prefix}.basic."),
                "password",
                b.password.as_ref(),
                b.password_file.as_ref(),
                b.password_env.as_ref(),
            )?;
            Ok(Auth::Basic {
                username: b.username,
                password,
            })
        }
        (None, None) => Err(invalid(prefix, "set bearer_token_file (or _env) or basic")),
    }
}

fn route(
    i: usize,
    rr: RawRoute,
    policies: &BTreeMap<String, Policy>,
    names: &mut BTreeSet<String>,
) -> Result<Route, ConfigError> {
    let key = format!("routes[{i}]");
    if !policies.contains_key(&rr.policy) {
        return Err(invalid(
            format!("{key}.policy"),
            format!("no policy named {:?}", rr.policy),
        ));
    }
    if let Some(n) = &rr.name {
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(invalid(
                format!("{key}.name"),
                "use letters, digits, '-', '_' and '.'",
            ));
        }
        if !names.insert(n.clone()) {
            return Err(invalid(
                format!("{key}.name"),
                format!("{n:?} names another route too"),
            ));
        }
    }
    let matchers = matchers(&key, rr.matchers)?;
    Ok(Route {
        name: rr.name,
        matchers,
        policy: rr.policy,
        continue_matching: rr.continue_matching,
    })
}

/// `match:` at `key`: a map of equalities or a list of Alertmanager matchers.
fn matchers(key: &str, raw: RawMatchers) -> Result<Vec<Matcher>, ConfigError> {
    match raw {
        RawMatchers::None => Ok(Vec::new()),
        RawMatchers::Equal(map) => map
            .into_iter()
            .map(|(k, v)| {
                Matcher::new(k.clone(), crate::matcher::Op::Equal, v)
                    .map_err(|e| invalid(format!("{key}.match.{k}"), e))
            })
            .collect(),
        RawMatchers::List(list) => list
            .iter()
            .enumerate()
            .map(|(j, s)| Matcher::parse(s).map_err(|e| invalid(format!("{key}.match[{j}]"), e)))
            .collect(),
    }
}

fn channel(name: &str, rc: RawChannel, ctx: &Ctx<'_>) -> Result<ChannelConfig, ConfigError> {
    let prefix = format!("channels.{name}.");
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            format!("channels.{name}"),
            "channel names use letters, digits, '-', '_' and '.'",
        ));
    }
    let Some((_, allowed, default_rate)) = CHANNEL_KEYS.iter().find(|(t, _, _)| *t == rc.kind)
    else {
        let known: Vec<&str> = CHANNEL_KEYS.iter().map(|(t, _, _)| *t).collect();
        return Err(invalid(
            format!("{prefix}type"),
            format!(
                "unknown channel type {:?}; known: {}",
                rc.kind,
                known.join(", ")
            ),
        ));
    };
    for key in rc.present_keys() {
        if !allowed.contains(&key) && !COMMON_CHANNEL_KEYS.contains(&key) {
            return Err(invalid(
                format!("{prefix}{key}"),
                format!("not a key of a {} channel", rc.kind),
            ));
        }
    }
    if rc.kind == "email" && rc.api_url.is_some() {
        return Err(invalid(
            format!("{prefix}api_url"),
            "email channels name their SMTP server in smarthost",
        ));
    }
    let api_url = match &rc.api_url {
        Some(u) => {
            check_url(&format!("{prefix}api_url"), u)?;
            Some(u.trim_end_matches('/').to_owned())
        }
        None => None,
    };
    let rate = match &rc.rate_limit {
        None => *default_rate,
        Some(r) if r.per_second > 0.0 && r.per_second.is_finite() && r.burst >= 1 => Rate {
            per_second: r.per_second,
            burst: r.burst,
        },
        Some(_) => {
            return Err(invalid(
                format!("{prefix}rate_limit"),
                "per_second must be > 0 and burst >= 1",
            ));
        }
    };
    let timeout = match &rc.timeout {
        Some(t) => Some(parse_duration(t).map_err(|e| invalid(format!("{prefix}timeout"), e))?),
        None => None,
    };
    let budget = match &rc.budget {
        Some(b) => Some(
            crate::model::budget::Budget::new(b.max, &b.per, &b.overflow)
                .map_err(|(k, m)| invalid(format!("{prefix}budget{k}"), m))?,
        ),
        None => None,
    };
    let template = match &rc.template {
        Some(t) => Some(
            UserTemplate::new(t.title.clone(), t.body.clone())
                .map_err(|e| invalid(format!("{prefix}template"), e))?,
        ),
        None => None,
    };
    let url_secret = |key: &str, inline, file, env| -> Result<Secret, ConfigError> {
        let s = ctx.required_secret(&prefix, key, inline, file, env)?;
        check_url(&format!("{prefix}{key}"), s.expose()).map_err(|_| {
            // The URL is the secret: never echo it.
            invalid(format!("{prefix}{key}"), "is not an http(s) URL")
        })?;
        Ok(s)
    };
    let required = |key: &str, v: &Option<String>| -> Result<String, ConfigError> {
        match v {
            Some(v) if !v.trim().is_empty() => Ok(v.clone()),
            _ => Err(invalid(format!("{prefix}{key}"), "required")),
        }
    };
    let kind = match rc.kind.as_str() {
        "webhook" => ChannelKind::Webhook {
            url: url_secret(
                "url",
                rc.url.as_ref(),
                rc.url_file.as_ref(),
                rc.url_env.as_ref(),
            )?,
            headers: {
                let mut out = Vec::new();
                for (k, v) in rc.headers.clone().unwrap_or_default() {
                    if http::HeaderName::try_from(k.as_str()).is_err()
                        || http::HeaderValue::try_from(v.as_str()).is_err()
                    {
                        return Err(invalid(
                            format!("{prefix}headers.{k}"),
                            "not a valid HTTP header",
                        ));
                    }
                    out.push((k, v));
                }
                out
            },
            signing_secret: ctx.secret(
                &prefix,
                "signing_secret",
                rc.signing_secret.as_ref(),
                rc.signing_secret_file.as_ref(),
                rc.signing_secret_env.as_ref(),
            )?,
        },
        "slack" => {
            let url = ctx.secret(
                &prefix,
                "webhook_url",
                rc.webhook_url.as_ref(),
                rc.webhook_url_file.as_ref(),
                rc.webhook_url_env.as_ref(),
            )?;
            let token = ctx.secret(
                &prefix,
                "bot_token",
                rc.bot_token.as_ref(),
                rc.bot_token_file.as_ref(),
                rc.bot_token_env.as_ref(),
            )?;
            match (url, token) {
                (Some(url), None) => {
                    if rc.channel.is_some() {
                        return Err(invalid(
                            format!("{prefix}channel"),
                            "an incoming webhook posts to its own channel; channel needs bot_token",
                        ));
                    }
                    check_url(&format!("{prefix}webhook_url"), url.expose()).map_err(|_| {
                        invalid(format!("{prefix}webhook_url"), "is not an http(s) URL")
                    })?;
                    ChannelKind::Slack(SlackMode::Webhook { url })
                }
                (None, Some(token)) => ChannelKind::Slack(SlackMode::Bot {
                    token,
                    channel: required("channel", &rc.channel)?,
                }),
                _ => {
                    return Err(invalid(
                        format!("{prefix}webhook_url_file"),
                        "set either webhook_url_file (incoming webhook) or bot_token_file with channel",
                    ));
                }
            }
        }
        "discord" => ChannelKind::Discord {
            webhook_url: url_secret(
                "webhook_url",
                rc.webhook_url.as_ref(),
                rc.webhook_url_file.as_ref(),
                rc.webhook_url_env.as_ref(),
            )?,
        },
        "telegram" => ChannelKind::Telegram {
            bot_token: ctx.required_secret(
                &prefix,
                "bot_token",
                rc.bot_token.as_ref(),
                rc.bot_token_file.as_ref(),
                rc.bot_token_env.as_ref(),
            )?,
            chat_id: required("chat_id", &rc.chat_id.as_ref().map(|s| s.0.clone()))?,
            message_thread_id: rc.message_thread_id,
            ack: rc.ack.unwrap_or(false),
        },
        "ntfy" => {
            let topic = required("topic", &rc.topic)?;
            if !topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(invalid(
                    format!("{prefix}topic"),
                    "ntfy topics use letters, digits, '-' and '_'",
                ));
            }
            let token = ctx.secret(
                &prefix,
                "token",
                rc.token.as_ref(),
                rc.token_file.as_ref(),
                rc.token_env.as_ref(),
            )?;
            let password = ctx.secret(
                &prefix,
                "password",
                rc.password.as_ref(),
                rc.password_file.as_ref(),
                rc.password_env.as_ref(),
            )?;
            let auth = match (token, &rc.username, password) {
                (None, None, None) => NtfyAuth::None,
                (Some(t), None, None) => NtfyAuth::Token(t),
                (None, Some(u), Some(p)) => NtfyAuth::Basic {
                    username: u.clone(),
                    password: p,
                },
                _ => {
                    return Err(invalid(
                        format!("{prefix}token"),
                        "set token_file, or username with password_file, or neither",
                    ));
                }
            };
            let priority = match &rc.priority {
                None => None,
                Some(p) => Some(ntfy_priority(&p.0).ok_or_else(|| {
                    invalid(
                        format!("{prefix}priority"),
                        "use 1-5 or min, low, default, high, urgent",
                    )
                })?),
            };
            ChannelKind::Ntfy {
                topic,
                auth,
                priority,
            }
        }
        "twilio" => {
            let account_sid = required("account_sid", &rc.account_sid)?;
            let to = rc.to.clone().unwrap_or_default();
            if to.is_empty() {
                return Err(invalid(format!("{prefix}to"), "needs at least one number"));
            }
            for (i, n) in to.iter().enumerate() {
                if !is_e164(n) {
                    return Err(invalid(
                        format!("{prefix}to[{i}]"),
                        format!("{n:?} is not an E.164 number like +447700900123"),
                    ));
                }
            }
            if let Some(f) = &rc.from
                && !is_e164(f)
                && !f.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(invalid(
                    format!("{prefix}from"),
                    "must be an E.164 number or an alphanumeric sender id",
                ));
            }
            if rc.from.is_some() == rc.messaging_service_sid.is_some() {
                return Err(invalid(
                    format!("{prefix}from"),
                    "set exactly one of from and messaging_service_sid",
                ));
            }
            ChannelKind::Twilio {
                account_sid,
                auth_token: ctx.required_secret(
                    &prefix,
                    "auth_token",
                    rc.auth_token.as_ref(),
                    rc.auth_token_file.as_ref(),
                    rc.auth_token_env.as_ref(),
                )?,
                from: rc.from.clone(),
                messaging_service_sid: rc.messaging_service_sid.clone(),
                to,
            }
        }
        "teams" => ChannelKind::Teams {
            url: url_secret(
                "url",
                rc.url.as_ref(),
                rc.url_file.as_ref(),
                rc.url_env.as_ref(),
            )?,
        },
        "matrix" => {
            let room_id = required("room_id", &rc.room_id)?;
            if !room_id.starts_with('!') && !room_id.starts_with('#') {
                return Err(invalid(
                    format!("{prefix}room_id"),
                    "must be a room id (!abc:server) or alias (#room:server)",
                ));
            }
            if api_url.is_none() {
                return Err(invalid(
                    format!("{prefix}api_url"),
                    "required for matrix: the homeserver's base URL",
                ));
            }
            ChannelKind::Matrix {
                room_id,
                access_token: ctx.required_secret(
                    &prefix,
                    "access_token",
                    rc.access_token.as_ref(),
                    rc.access_token_file.as_ref(),
                    rc.access_token_env.as_ref(),
                )?,
            }
        }
        "pushover" => ChannelKind::Pushover {
            token: ctx.required_secret(
                &prefix,
                "token",
                rc.token.as_ref(),
                rc.token_file.as_ref(),
                rc.token_env.as_ref(),
            )?,
            user_key: ctx.required_secret(
                &prefix,
                "user_key",
                rc.user_key.as_ref(),
                rc.user_key_file.as_ref(),
                rc.user_key_env.as_ref(),
            )?,
            priority: pushover_priority(&prefix, &rc)?,
            emergency: pushover_emergency(&prefix, &rc)?,
        },
        "email" => {
            let smarthost = required("smarthost", &rc.smarthost)?;
            let (host, port) = smarthost
                .rsplit_once(':')
                .and_then(|(h, p)| {
                    Some((
                        h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                        p.parse::<u16>().ok()?,
                    ))
                })
                .filter(|(h, _)| !h.is_empty())
                .ok_or_else(|| {
                    invalid(
                        format!("{prefix}smarthost"),
                        "must be host:port, e.g. smtp.example.org:587",
                    )
                })?;
            let tls = match rc.tls.as_deref() {
                None | Some("starttls") => EmailTls::Starttls,
                Some("tls") => EmailTls::Implicit,
                Some("none") => EmailTls::None,
                Some(_) => {
                    return Err(invalid(
                        format!("{prefix}tls"),
                        "use starttls (default), tls or none",
                    ));
                }
            };
            let password = ctx.secret(
                &prefix,
                "password",
                rc.password.as_ref(),
                rc.password_file.as_ref(),
                rc.password_env.as_ref(),
            )?;
            if password.is_some() != rc.username.is_some() {
                return Err(invalid(
                    format!("{prefix}username"),
                    "set username and password_file together",
                ));
            }
            let mailbox = |key: String, v: &str| {
                v.parse::<lettre::message::Mailbox>()
                    .map_err(|e| invalid(key, format!("{v:?} is not a mail address: {e}")))
            };
            let from = mailbox(format!("{prefix}from"), &required("from", &rc.from)?)?;
            let to = rc.to.clone().unwrap_or_default();
            if to.is_empty() {
                return Err(invalid(format!("{prefix}to"), "needs at least one address"));
            }
            let to = to
                .iter()
                .enumerate()
                .map(|(i, t)| mailbox(format!("{prefix}to[{i}]"), t))
                .collect::<Result<Vec<_>, _>>()?;
            ChannelKind::Email(EmailSettings {
                host,
                port,
                tls,
                username: rc.username.clone(),
                password,
                from,
                to,
            })
        }
        // CHANNEL_KEYS lists exactly the types above.
        other => {
            return Err(invalid(
                format!("{prefix}type"),
                format!("unknown channel type {other:?}"),
            ));
        }
    };
    Ok(ChannelConfig {
        name: name.to_owned(),
        kind,
        api_url,
        template,
        rate,
        timeout,
        budget,
    })
}

fn ntfy_priority(p: &str) -> Option<u8> {
    match p {
        "1" | "min" => Some(1),
        "2" | "low" => Some(2),
        "3" | "default" => Some(3),
        "4" | "high" => Some(4),
        "5" | "urgent" | "max" => Some(5),
        _ => None,
    }
}

fn pushover_priority(prefix: &str, rc: &RawChannel) -> Result<i8, ConfigError> {
    match &rc.priority {
        None => Ok(0),
        Some(p) => match p.0.parse::<i8>() {
            Ok(v) if (-2..=2).contains(&v) => Ok(v),
            _ => Err(invalid(format!("{prefix}priority"), "use -2..2")),
        },
    }
}

/// Pushover's limits for priority 2: `retry` at least 30 s, `expire` at most 10800 s; receipts
/// may be polled at most once per 5 s.
fn pushover_emergency(prefix: &str, rc: &RawChannel) -> Result<Option<Emergency>, ConfigError> {
    // By the parsed value, as `pushover_priority` reads it ("+2" and "02" are 2 too).
    let emergency = pushover_priority(prefix, rc)? == 2;
    if !emergency {
        for (key, set) in [
            ("retry", rc.retry.is_some()),
            ("expire", rc.expire.is_some()),
            ("receipt_poll_interval", rc.receipt_poll_interval.is_some()),
        ] {
            if set {
                return Err(invalid(
                    format!("{prefix}{key}"),
                    "only for priority 2 (emergency)",
                ));
            }
        }
        return Ok(None);
    }
    let key = |k: &str| format!("{prefix}{k}");
    let retry = duration(&key("retry"), rc.retry.as_ref(), Duration::from_secs(60))?;
    let expire = duration(
        &key("expire"),
        rc.expire.as_ref(),
        Duration::from_secs(3600),
    )?;
    let poll = duration(
        &key("receipt_poll_interval"),
        rc.receipt_poll_interval.as_ref(),
        Duration::from_secs(30),
    )?;
    if retry < Duration::from_secs(30) {
        return Err(invalid(key("retry"), "Pushover needs at least 30s"));
    }
    if expire > Duration::from_secs(10_800) || expire < retry {
        return Err(invalid(
            key("expire"),
            "Pushover allows at most 3h, and it must not be shorter than retry",
        ));
    }
    if poll < Duration::from_secs(5) {
        return Err(invalid(
            key("receipt_poll_interval"),
            "Pushover allows one receipt poll per 5s at most",
        ));
    }
    Ok(Some(Emergency {
        retry,
        expire,
        poll,
    }))
}

fn is_e164(n: &str) -> bool {
    n.strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests;

//! The relay's YAML configuration: loading (`load`), validation into [`Config`], and the
//! resolved routing that `check-config` prints.
//!
//! Two phases, as in ripgrep: `raw` mirrors the file (serde, unknown keys rejected), and
//! [`Config::from_raw`] turns it into checked values, reading secret files and environment
//! variables through a [`SecretSource`] so tests pass plain maps. Every error names the key.

pub mod budget;
mod channel;
mod console;
mod matchers;
mod pipeline;
mod raw;
mod rotation;
mod sections;

pub use self::console::{ConsoleConfig, ConsoleUser, Role};
pub use self::rotation::TARGET_PREFIX as ROTATION_PREFIX;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::matcher::Matcher;
use crate::rotation::Rotation;
use crate::secret::keys::{Ctx, SecretKeys, check_url, duration, invalid};
use crate::secret::{Secret, redact_url};
use crate::time::parse_duration;

use self::channel::channel;
pub use self::pipeline::{AlertmanagerApi, Deadman};
use self::raw::{RawConfig, RawRoute};
/// Channel settings belong to their providers (`crate::channels`); these names stay here too.
pub use crate::channels::email::{EmailSettings, EmailTls};
pub use crate::channels::ntfy::NtfyAuth;
pub use crate::channels::pushover::Emergency;
pub use crate::channels::settings::{ChannelConfig, ChannelKind, Destination, Rate};
pub use crate::channels::slack::SlackMode;
pub use crate::secret::keys::{ConfigError, MapSecrets, Problems, SecretSource, SystemSecrets};

/// Default listen port. 9097 (the example) is JIRAlert's and 9098-9099 are taken in
/// the Prometheus default-port allocations; 9832 sits next to pi-exporter's 9831. It still has
/// to be registered there (see docs/alert-relay.md).
pub const DEFAULT_PORT: u16 = 9832;
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

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
    /// Who may sign in to the on-call console.
    pub console: ConsoleConfig,
}

#[derive(Debug, Clone)]
pub enum Auth {
    None,
    Bearer(Secret),
    Basic { username: String, password: Secret },
}

#[derive(Debug, Clone)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// How long finished alerts and their delivery records are kept.
    pub retention: Duration,
}

/// Where the relay keeps its state.
#[derive(Debug, Clone, PartialEq)]
pub enum StorageBackend {
    /// `storage.sqlite`: one relay, one file.
    Sqlite(PathBuf),
    /// `storage.postgres`: any number of relays on one database (issue 15).
    Postgres(PostgresStorage),
}

/// `storage.postgres`.
#[derive(Debug, Clone, PartialEq)]
pub struct PostgresStorage {
    /// `postgres://user@host:port/db?sslmode=…` (libpq's URL form); may carry the password.
    pub url: Secret,
    /// `password*`: the password, when the URL does not carry it.
    pub password: Option<Secret>,
    /// A private CA for `sslmode=verify-full` (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Connections per instance.
    pub pool: usize,
}

impl PostgresStorage {
    /// The URL to connect with: `password*` put in when given (it wins over one in the URL).
    pub fn connection_url(&self) -> Secret {
        let Some(password) = &self.password else {
            return self.url.clone();
        };
        let Ok(mut u) = reqwest::Url::parse(self.url.expose()) else {
            return self.url.clone();
        };
        // Checked at load: the URL parses and has a host, so a password can be set.
        match u.set_password(Some(password.expose())) {
            Ok(()) => Secret::new(u.to_string()),
            Err(()) => self.url.clone(),
        }
    }
}

impl StorageBackend {
    /// What the relay says it stores in, without secrets: the file, or the database's URL with
    /// its password removed.
    pub fn describe(&self) -> String {
        match self {
            StorageBackend::Sqlite(path) => path.display().to_string(),
            StorageBackend::Postgres(pg) => {
                format!("{} (pool {})", redact_url(pg.url.expose()), pg.pool)
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub read_header_timeout: Duration,
    /// Deadline for reading a whole request body (slow-body attacks).
    pub body_timeout: Duration,
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            read_header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 512,
        }
    }
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

/// The lines to print or log for an error that may hold configuration errors: each error of
/// a [`ConfigError`] on a line of its own (every one a validation found, each once), or the
/// error with its causes on one line.
pub fn error_lines(error: &anyhow::Error) -> Vec<String> {
    let Some(config_error) = error.downcast_ref::<ConfigError>() else {
        return vec![format!("{error:#}")];
    };
    // Context added around it (`--from relay.yml: …`) leads every line.
    let prefix: String = error
        .chain()
        .take_while(|e| !e.is::<ConfigError>())
        .map(|e| format!("{e}: "))
        .collect();
    config_error
        .each()
        .iter()
        .map(|e| format!("{prefix}{e}"))
        .collect()
}

/// Reads and validates the configuration file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, &SystemSecrets)
}

pub fn load_with(path: &Path, secrets: &dyn SecretSource) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let named = |e: ConfigError| match e {
        ConfigError::Yaml { message, .. } => ConfigError::Yaml {
            path: path.to_owned(),
            message,
        },
        other => other,
    };
    parse(&text, base, secrets).map_err(|e| match e {
        ConfigError::Several(all) => ConfigError::Several(all.into_iter().map(named).collect()),
        one => named(one),
    })
}

/// Parses and validates YAML text; relative `*_file` paths are resolved against `base`.
pub fn parse(text: &str, base: &Path, secrets: &dyn SecretSource) -> Result<Config, ConfigError> {
    let raw = parse_raw(text).map_err(|first| {
        // Each section on its own: every section's first error, each said once.
        let mut messages = vec![first];
        for m in sections::errors(text) {
            if !messages.iter().any(|seen| same_place(seen, &m)) {
                messages.push(m);
            }
        }
        let mut all: Vec<ConfigError> = (messages.into_iter())
            .map(|message| ConfigError::Yaml {
                path: PathBuf::from("<config>"),
                message,
            })
            .collect();
        match all.len() {
            1 => all.remove(0),
            _ => ConfigError::Several(all),
        }
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
    .map_err(|e| describe_yaml_error(&e, path))
}

/// Whether two parser errors are one: the same place in the file (a syntax error is met by
/// every reading there, with or without a key path).
fn same_place(a: &str, b: &str) -> bool {
    let place = |m: &str| m.rfind(" at line ").map(|i| m[i..].to_owned());
    match (place(a), place(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A parser error as `check-config` says it: the key path, then the message without any
/// quoted text of the file.
fn describe_yaml_error(e: &serde_saphyr::Error, path: Option<String>) -> String {
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

impl Config {
    /// Validates every part of the file, reporting every error found (each once) rather than
    /// the first: parts that do not depend on each other are checked whatever the others say,
    /// and a reference to a channel, rotation or policy that is declared but invalid is not
    /// reported again (its own error says what is wrong).
    fn from_raw(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
        let mut problems = Problems::default();
        let fallback_listen = SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT));
        let listen = problems.or(listen(raw.listen.as_deref()), fallback_listen);
        if let Some(u) = &raw.public_url {
            problems.keep(check_url("public_url", u));
        }
        if raw.tls.is_some() {
            problems.push(invalid(
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
            Some(raw::RawListenerAuth::Credentials(a)) => {
                (problems.or(auth("auth", a, ctx), Auth::None), false)
            }
        };
        let storage_stand_in = StorageConfig {
            backend: StorageBackend::Sqlite(PathBuf::new()),
            retention: Duration::ZERO,
        };
        let storage = problems.or(storage(&raw.storage, ctx), storage_stand_in);
        let limits = problems.or(limits(raw.limits.as_ref()), Limits::default());
        let delivery = problems.or(delivery(raw.delivery.as_ref()), DeliveryConfig::default());

        let declared = Declared {
            channels: raw.channels.keys().cloned().collect(),
            rotations: raw.rotations.keys().cloned().collect(),
            policies: raw.policies.keys().cloned().collect(),
        };
        let mut channels = BTreeMap::new();
        for (name, rc) in raw.channels {
            if let Some(channel) = problems.keep(channel(&name, rc, ctx)) {
                channels.insert(name, Arc::new(channel));
            }
        }
        problems.keep(crate::channels::twilio_voice::check_public_url(
            &channels,
            raw.public_url.as_deref(),
        ));
        let rotations = rotation::rotations(raw.rotations, &declared.channels, &mut problems);
        crate::config::budget::check_overflow(&channels, &declared.channels, &mut problems);
        let mut policies = BTreeMap::new();
        for (name, rp) in raw.policies {
            if let Some(p) = problems.keep(policy(name, rp, &declared)) {
                policies.insert(p.name.clone(), p);
            }
        }
        let mut routes = Vec::new();
        let mut names = BTreeSet::new();
        if raw.routes.is_empty() {
            problems.push(invalid("routes", "needs at least one route"));
        }
        for (i, rr) in raw.routes.into_iter().enumerate() {
            routes.extend(problems.keep(route(i, rr, &declared.policies, &mut names)));
        }
        let deadman = raw
            .deadman
            .and_then(|d| problems.keep(pipeline::deadman(d, &declared.channels)));
        let alertmanager = raw
            .alertmanager
            .and_then(|a| problems.keep(pipeline::alertmanager(a, ctx)));
        let console = console::console(raw.console, &mut problems);
        problems.finish(Config {
            listen,
            public_url: raw.public_url.map(|u| u.trim_end_matches('/').to_owned()),
            auth,
            auth_none_declared,
            storage,
            limits,
            delivery,
            deadman,
            alertmanager,
            channels,
            policies,
            routes,
            rotations,
            console,
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

    /// Destination ids that take no RESOLVED messages (`send_resolved: false`).
    pub fn no_resolved(&self) -> BTreeSet<String> {
        self.destinations()
            .into_values()
            .filter(|d| !d.sends_resolved())
            .map(|d| d.id)
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
        let _ = writeln!(out, "storage: {}", self.storage.backend.describe());
        self.describe_channels(&mut out);
        self.describe_policies(&mut out);
        self.describe_rotations(&mut out, crate::time::WallClock::default().now());
        self.describe_routes(&mut out);
        pipeline::describe(self, &mut out);
        console::describe(&self.console, &mut out);
        out
    }

    /// `describe`'s channels, with their destinations and budgets.
    fn describe_channels(&self, out: &mut String) {
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
                    "    budget {} per {} per destination, {}",
                    b.max,
                    crate::time::humanize(b.per),
                    if b.overflow.is_empty() {
                        "held back messages reported nowhere".to_owned()
                    } else {
                        format!("overflow to {}", b.overflow.join(", "))
                    }
                );
            }
        }
    }

    /// `describe`'s policies: steps, repeats, what stops them, storm control.
    fn describe_policies(&self, out: &mut String) {
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
    }

    /// `describe`'s routes, in the order they match.
    fn describe_routes(&self, out: &mut String) {
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
    }
}

/// The names a file declares, valid or not: references are checked against them, so a
/// reference to an entry with an error of its own is not a second error.
pub(super) struct Declared {
    pub channels: BTreeSet<String>,
    pub rotations: BTreeSet<String>,
    pub policies: BTreeSet<String>,
}

/// `listen:`, by default loopback on [`DEFAULT_PORT`].
fn listen(given: Option<&str>) -> Result<SocketAddr, ConfigError> {
    match given {
        None => Ok(SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))),
        Some(s) => s.parse().map_err(|_| {
            invalid(
                "listen",
                format!("{s:?} is not an address like 127.0.0.1:{DEFAULT_PORT}"),
            )
        }),
    }
}

/// `storage:`: where (one backend) and how long, each error reported.
fn storage(storage: &raw::RawStorage, ctx: &Ctx<'_>) -> Result<StorageConfig, ConfigError> {
    let mut problems = Problems::default();
    let backend = match (&storage.sqlite, &storage.postgres) {
        (Some(_), Some(_)) => Err(invalid(
            "storage",
            "set one of sqlite and postgres (alert-relay migrate-storage copies one into the other)",
        )),
        (None, None) => Err(invalid("storage", "set sqlite (a file) or postgres")),
        (Some(path), None) if path.as_os_str().is_empty() => {
            Err(invalid("storage.sqlite", "must be a file path"))
        }
        (Some(path), None) => Ok(StorageBackend::Sqlite(ctx.path(path))),
        (None, Some(pg)) => postgres(pg, ctx).map(StorageBackend::Postgres),
    };
    let backend = problems.or(backend, StorageBackend::Sqlite(PathBuf::new()));
    let default_retention = Duration::from_secs(30 * 86_400);
    let retention = problems.or(
        duration(
            "storage.retention",
            storage.retention.as_ref(),
            default_retention,
        ),
        default_retention,
    );
    problems.finish(StorageConfig { backend, retention })
}

/// `storage.postgres`.
fn postgres(pg: &raw::RawPostgres, ctx: &Ctx<'_>) -> Result<PostgresStorage, ConfigError> {
    const PREFIX: &str = "storage.postgres.";
    let url = ctx.required_secret(
        PREFIX,
        "url",
        SecretKeys {
            inline: pg.url.as_ref(),
            file: pg.url_file.as_ref(),
            env: pg.url_env.as_ref(),
        },
    )?;
    check_postgres_url(&format!("{PREFIX}url"), url.expose())?;
    let password = ctx.secret(
        PREFIX,
        "password",
        SecretKeys {
            inline: pg.password.as_ref(),
            file: pg.password_file.as_ref(),
            env: pg.password_env.as_ref(),
        },
    )?;
    let pool = match pg.pool {
        None => 8,
        Some(n @ 1..=64) => n as usize,
        Some(_) => return Err(invalid(format!("{PREFIX}pool"), "must be 1 to 64")),
    };
    Ok(PostgresStorage {
        url,
        password,
        ca_file: pg.ca_file.as_ref().map(|p| ctx.path(p)),
        pool,
    })
}

/// A `postgres://` or `postgresql://` URL with a host; `sslmode`, when given, one the relay
/// implements. The error never quotes the URL (it may carry a password).
fn check_postgres_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| invalid(key, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") || parsed.host().is_none() {
        return Err(invalid(
            key,
            "must be a postgres:// URL with a host (postgres://user@host:5432/db?sslmode=verify-full)",
        ));
    }
    for (k, v) in parsed.query_pairs() {
        if k == "sslmode" && !matches!(&*v, "disable" | "prefer" | "require" | "verify-full") {
            return Err(invalid(
                key,
                format!(
                    "sslmode {v:?} is not supported; use disable, prefer, require or verify-full"
                ),
            ));
        }
    }
    Ok(())
}

/// `limits:`.
fn limits(l: Option<&raw::RawLimits>) -> Result<Limits, ConfigError> {
    let mut problems = Problems::default();
    let default = Limits::default();
    let max_body_bytes = match l.and_then(|l| l.max_body_bytes) {
        None => default.max_body_bytes,
        Some(n) if (1024..=64 * 1024 * 1024).contains(&n) => {
            usize::try_from(n).unwrap_or(DEFAULT_MAX_BODY_BYTES)
        }
        Some(_) => {
            problems.push(invalid(
                "limits.max_body_bytes",
                "must be between 1024 and 67108864",
            ));
            default.max_body_bytes
        }
    };
    let mut duration_at = |key: &str, value: Option<&String>, fallback: Duration| {
        problems.or(duration(key, value, fallback), fallback)
    };
    let limits = Limits {
        max_body_bytes,
        read_header_timeout: duration_at(
            "limits.read_header_timeout",
            l.and_then(|l| l.read_header_timeout.as_ref()),
            default.read_header_timeout,
        ),
        body_timeout: duration_at(
            "limits.body_timeout",
            l.and_then(|l| l.body_timeout.as_ref()),
            default.body_timeout,
        ),
        max_connections: l
            .and_then(|l| l.max_connections)
            .map_or(default.max_connections, |n| n.max(1) as usize),
    };
    problems.finish(limits)
}

/// `delivery:`.
fn delivery(d: Option<&raw::RawDelivery>) -> Result<DeliveryConfig, ConfigError> {
    let mut problems = Problems::default();
    let default = DeliveryConfig::default();
    let mut duration_at = |key: &str, value: Option<&String>, fallback: Duration| {
        problems.keep(duration(key, value, fallback))
    };
    let timeout = duration_at(
        "delivery.timeout",
        d.and_then(|d| d.timeout.as_ref()),
        default.timeout,
    );
    let initial_backoff = duration_at(
        "delivery.initial_backoff",
        d.and_then(|d| d.initial_backoff.as_ref()),
        default.initial_backoff,
    );
    let max_backoff = duration_at(
        "delivery.max_backoff",
        d.and_then(|d| d.max_backoff.as_ref()),
        default.max_backoff,
    );
    let max_age = duration_at(
        "delivery.max_age",
        d.and_then(|d| d.max_age.as_ref()),
        default.max_age,
    );
    if let (Some(initial), Some(max)) = (initial_backoff, max_backoff)
        && (initial.is_zero() || initial > max)
    {
        problems.push(invalid(
            "delivery.initial_backoff",
            "must be > 0 and <= delivery.max_backoff",
        ));
    }
    if timeout.is_some_and(|t| t.is_zero()) {
        problems.push(invalid("delivery.timeout", "must be > 0"));
    }
    problems.finish(DeliveryConfig {
        timeout: timeout.unwrap_or(default.timeout),
        initial_backoff: initial_backoff.unwrap_or(default.initial_backoff),
        max_backoff: max_backoff.unwrap_or(default.max_backoff),
        max_attempts: d
            .and_then(|d| d.max_attempts)
            .unwrap_or(default.max_attempts),
        max_age: max_age.unwrap_or(default.max_age),
    })
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: Duration::from_secs(10),
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            max_attempts: 0,
            max_age: Duration::from_secs(86_400),
        }
    }
}

/// `policies.NAME`: every key checked, each error reported.
fn policy(name: String, rp: raw::RawPolicy, declared: &Declared) -> Result<Policy, ConfigError> {
    let prefix = format!("policies.{name}");
    let mut problems = Problems::default();
    let repeat = rp.repeat.and_then(|r| {
        let key = format!("{prefix}.repeat.every");
        let every = match parse_duration(&r.every) {
            Ok(every) if every.is_zero() => Err(invalid(key, "must be above 0")),
            Ok(every) => Ok(every),
            Err(e) => Err(invalid(key, e)),
        };
        problems.keep(every).map(|every| Repeat {
            every,
            times: r.times,
        })
    });
    let until = match rp.until.as_deref() {
        None | Some("acknowledged") => Until::Acknowledged,
        Some("resolved") => Until::Resolved,
        Some(other) => {
            problems.push(invalid(
                format!("{prefix}.until"),
                format!("{other:?}: use acknowledged or resolved"),
            ));
            Until::Acknowledged
        }
    };
    let ack_timeout = rp.ack_timeout.as_ref().and_then(|t| {
        problems.keep(parse_duration(t).map_err(|e| invalid(format!("{prefix}.ack_timeout"), e)))
    });
    let storm = rp.storm.and_then(|st| {
        let rule = problems.keep(
            crate::model::storm::StormRule::new(&st.window, st.threshold, &st.group_by)
                .map_err(|(k, m)| invalid(format!("{prefix}.storm.{k}"), m)),
        );
        let matchers = problems.keep(matchers::section(
            &format!("{prefix}.storm"),
            st.matchers,
            st.am_matchers,
        ));
        let (mut rule, matchers) = (rule?, matchers?);
        rule.matchers = matchers;
        Some(rule)
    });
    if rp.steps.is_empty() {
        problems.push(invalid(
            format!("{prefix}.steps"),
            "needs at least one step",
        ));
    }
    let steps = steps(&prefix, rp.steps, declared, &mut problems);
    problems.finish(Policy {
        name,
        steps,
        repeat,
        until,
        ack_timeout,
        storm,
    })
}

/// A policy's `steps:`, every notify target a channel or a rotation; each step's first error
/// is reported.
fn steps(
    prefix: &str,
    raw: Vec<raw::RawStep>,
    declared: &Declared,
    problems: &mut Problems,
) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut previous_after = None;
    for (i, s) in raw.into_iter().enumerate() {
        let key = format!("{prefix}.steps[{i}]");
        let step = step(&key, i, s, previous_after, declared);
        if let Some(step) = problems.keep(step) {
            previous_after = Some(step.after);
            steps.push(step);
        }
    }
    steps
}

/// Step `i` at `key`; `previous_after` is the `after:` of the step before, when that was valid.
fn step(
    key: &str,
    i: usize,
    s: raw::RawStep,
    previous_after: Option<Duration>,
    declared: &Declared,
) -> Result<Step, ConfigError> {
    let after = match &s.after {
        Some(after) => parse_duration(after).map_err(|e| invalid(format!("{key}.after"), e))?,
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
    if i > 0 && previous_after.is_some_and(|prev| after <= prev) {
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
            if !declared.rotations.contains(r) {
                return Err(invalid(
                    format!("{key}.notify[{j}]"),
                    format!("no rotation named {r:?}"),
                ));
            }
        } else if !declared.channels.contains(c) {
            return Err(invalid(
                format!("{key}.notify[{j}]"),
                format!("no channel named {c:?}"),
            ));
        }
    }
    Ok(Step {
        after,
        notify: s.notify,
    })
}

/// `auth:`-style credentials (a bearer token or basic), at `prefix`.
fn auth(prefix: &str, a: raw::RawAuth, ctx: &Ctx<'_>) -> Result<Auth, ConfigError> {
    let bearer = ctx.secret(
        &format!("{prefix}."),
        "bearer_token",
        SecretKeys {
            inline: a.bearer_token.as_ref(),
            file: a.bearer_token_file.as_ref(),
            env: a.bearer_token_env.as_ref(),
        },
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
                SecretKeys {
                    inline: b.password.as_ref(),
                    file: b.password_file.as_ref(),
                    env: b.password_env.as_ref(),
                },
            )?;
            Ok(Auth::Basic {
                username: b.username,
                password,
            })
        }
        (None, None) => Err(invalid(prefix, "set bearer_token_file (or _env) or basic")),
    }
}

/// `routes[i]`: its policy, name and matchers, each error reported.
fn route(
    i: usize,
    rr: RawRoute,
    policies: &BTreeSet<String>,
    names: &mut BTreeSet<String>,
) -> Result<Route, ConfigError> {
    let key = format!("routes[{i}]");
    let mut problems = Problems::default();
    if !policies.contains(&rr.policy) {
        problems.push(invalid(
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
            problems.push(invalid(
                format!("{key}.name"),
                "use letters, digits, '-', '_' and '.'",
            ));
        } else if !names.insert(n.clone()) {
            problems.push(invalid(
                format!("{key}.name"),
                format!("{n:?} names another route too"),
            ));
        }
    }
    let matchers = problems.or(
        matchers::section(&key, rr.matchers, rr.am_matchers),
        Vec::new(),
    );
    problems.finish(Route {
        name: rr.name,
        matchers,
        policy: rr.policy,
        continue_matching: rr.continue_matching,
    })
}

#[cfg(test)]
mod alertmanager_tests;
#[cfg(test)]
mod tests;

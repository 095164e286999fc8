//! `--web.config.file`: the exporter-toolkit web configuration (TLS, mTLS, basic auth, response
//! headers, rate limit) that Prometheus users already have for node_exporter.
//!
//! `crate::http` asks [`WebConfig::current`] for the configuration in force once per connection
//! (TLS acceptor, client-certificate SAN check) and once per request (rate limit and basic auth
//! through [`ActiveWebConfig::authorize`], extra response headers).
//!
//! How a file becomes an [`ActiveWebConfig`]: `file` parses the YAML and validates it into a
//! `Spec` without touching the file system; `ActiveWebConfig::build` then reads the PEM files
//! the spec names. `watch` remembers what the files looked like so that [`WebConfig::current`]
//! can notice edits with a few `stat` calls instead of re-reading everything per request (which is
//! what exporter-toolkit does). See `docs/web-config.md` for the user-facing description.

mod auth;
mod file;
mod headers;
mod rate_limit;
mod tls;
mod watch;

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};

use http::{HeaderMap, HeaderName, HeaderValue};

use self::auth::BasicAuth;
use self::file::Spec;
use self::rate_limit::RateLimiter;
use self::tls::TlsServer;
use self::watch::WatchedFiles;

/// Why a web config file cannot be used. Every variant names the file or the YAML key at fault.
#[derive(Debug, thiserror::Error)]
pub enum WebConfigError {
    /// A file could not be read; `what` is the config file itself or the key that names the file.
    #[error("{what}: cannot read {}: {source}", path.display())]
    Io {
        what: String,
        path: PathBuf,
        source: io::Error,
    },
    /// The config file is not YAML of the expected shape (syntax, unknown key, wrong type).
    #[error("{}: {message}", path.display())]
    Yaml { path: PathBuf, message: String },
    /// A key has a value this exporter does not accept; `key` is its dotted path in the file.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// rustls rejected the assembled TLS settings (e.g. a key that does not match the certificate).
    #[error("TLS: {0}")]
    Tls(String),
}

impl WebConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Why [`ActiveWebConfig::authorize`] turned a request away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Over `rate_limit`: answer 429.
    RateLimited,
    /// Missing, malformed or wrong basic-auth credentials: answer 401 with
    /// `WWW-Authenticate: Basic`.
    Unauthorized,
}

impl Rejection {
    /// The answer: 429, or 401 with the `Basic` challenge.
    pub fn response(self) -> http::Response<crate::server::Body> {
        let (status, text) = match self {
            Rejection::RateLimited => (http::StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n"),
            Rejection::Unauthorized => (http::StatusCode::UNAUTHORIZED, "Unauthorized\n"),
        };
        let mut r = http::Response::new(crate::server::Body::from(text));
        *r.status_mut() = status;
        let headers = r.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self == Rejection::Unauthorized {
            headers.insert(
                http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic"),
            );
        }
        r
    }
}

/// The web configuration of the running exporter: the config in force plus what is needed to
/// notice that its files changed.
#[derive(Debug)]
pub struct WebConfig {
    /// `None` without `--web.config.file`: nothing to reload.
    source: Option<Source>,
    /// Held only to clone or swap the `Arc`, never across I/O.
    active: Mutex<Arc<ActiveWebConfig>>,
    last_reload_successful: AtomicBool,
}

#[derive(Debug)]
struct Source {
    path: PathBuf,
    /// The files the last load attempt read, as they were then. Held while checking and
    /// reloading, so that one task reloads and the others keep serving the config in force.
    watched: Mutex<WatchedFiles>,
    /// Shared by every config loaded from this file, so that a reload does not let a second
    /// bcrypt run start beside one still running for the previous config.
    bcrypt_lock: Arc<tokio::sync::Mutex<()>>,
}

impl WebConfig {
    /// No web config file: plain HTTP, no authentication, no extra headers, no rate limit.
    pub fn disabled() -> Self {
        Self {
            source: None,
            active: Mutex::new(Arc::new(ActiveWebConfig::plain())),
            last_reload_successful: AtomicBool::new(true),
        }
    }

    /// Loads `path` at start-up; unlike a reload, an invalid file is an error.
    pub fn load(path: &Path) -> Result<Self, WebConfigError> {
        let bcrypt_lock = Arc::new(tokio::sync::Mutex::new(()));
        let attempt = load_attempt(path, &bcrypt_lock);
        let active = attempt.result?;
        Ok(Self {
            source: Some(Source {
                path: path.to_owned(),
                watched: Mutex::new(attempt.watched),
                bcrypt_lock,
            }),
            active: Mutex::new(Arc::new(active)),
            last_reload_successful: AtomicBool::new(true),
        })
    }

    /// The config in force, first reloaded if the config file or a file it names changed since
    /// the last look. A few `stat` calls when nothing changed.
    pub fn current(&self) -> Arc<ActiveWebConfig> {
        if let Some(source) = &self.source {
            self.reload_if_changed(source);
        }
        Arc::clone(&lock(&self.active))
    }

    /// False from a reload that failed (the previous config stays in force) until one succeeds.
    pub fn last_reload_successful(&self) -> bool {
        self.last_reload_successful.load(Ordering::Relaxed)
    }

    fn reload_if_changed(&self, source: &Source) {
        let mut watched = match source.watched.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            // Another task is checking or reloading right now; the config it finds is no
            // staler than what this request would have found a moment earlier.
            Err(TryLockError::WouldBlock) => return,
        };
        if !watched.changed() {
            return;
        }
        let attempt = load_attempt(&source.path, &source.bcrypt_lock);
        // Remember the failed version too, so that it is reported once, not on every request.
        *watched = attempt.watched;
        match attempt.result {
            Ok(active) => {
                *lock(&self.active) = Arc::new(active);
                self.last_reload_successful.store(true, Ordering::Relaxed);
                tracing::info!(path = %source.path.display(), "web config reloaded");
            }
            Err(error) => {
                self.last_reload_successful.store(false, Ordering::Relaxed);
                tracing::error!(
                    path = %source.path.display(),
                    %error,
                    "invalid web config; keeping the previous one"
                );
            }
        }
    }
}

/// The outcome of reading one version of the config file, and the files that version consisted
/// of (all of them that were known when it failed).
struct LoadAttempt {
    result: Result<ActiveWebConfig, WebConfigError>,
    watched: WatchedFiles,
}

/// What a web configuration file protects the endpoint with, for `pi-exporter doctor`: the
/// file is read and validated as at start-up, without reading the certificate files it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Protection {
    pub tls: bool,
    pub basic_auth: bool,
    /// `client_auth_type: RequireAndVerifyClientCert`.
    pub client_certificates: bool,
}

pub fn protection(path: &Path) -> Result<Protection, WebConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| WebConfigError::Io {
        what: "web config file".to_owned(),
        path: path.to_owned(),
        source,
    })?;
    let spec = file::parse(&text, path)?.into_spec(path.parent().unwrap_or(Path::new("")))?;
    Ok(Protection {
        tls: spec.tls.is_some(),
        basic_auth: !spec.users.is_empty(),
        client_certificates: spec
            .tls
            .as_ref()
            .is_some_and(tls::TlsSettings::requires_client_certificate),
    })
}

fn load_attempt(path: &Path, bcrypt_lock: &Arc<tokio::sync::Mutex<()>>) -> LoadAttempt {
    // Each file is stamped before it is read: an edit racing the read then shows up as a
    // changed stamp on the next request, never as a stale config that looks current.
    let mut watched = WatchedFiles::new([path]);
    let spec = std::fs::read_to_string(path)
        .map_err(|source| WebConfigError::Io {
            what: "web config file".to_owned(),
            path: path.to_owned(),
            source,
        })
        .and_then(|text| file::parse(&text, path))
        .and_then(|config| config.into_spec(path.parent().unwrap_or(Path::new(""))));
    let result = spec.and_then(|mut spec| {
        watched.extend(spec.files());
        let notes = std::mem::take(&mut spec.notes);
        let active = ActiveWebConfig::build(spec, bcrypt_lock)?;
        notes.log();
        Ok(active)
    });
    LoadAttempt { result, watched }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing panics while these locks are held; should it ever, the data is still consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One loaded version of the web config, shared by the requests and connections that started
/// while it was in force.
#[derive(Debug)]
pub struct ActiveWebConfig {
    tls: Option<TlsServer>,
    basic_auth: Option<BasicAuth>,
    rate_limiter: Option<RateLimiter>,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl ActiveWebConfig {
    fn plain() -> Self {
        Self {
            tls: None,
            basic_auth: None,
            rate_limiter: None,
            headers: Vec::new(),
        }
    }

    /// Reads the PEM files `spec` names and assembles the config.
    fn build(
        spec: Spec,
        bcrypt_lock: &Arc<tokio::sync::Mutex<()>>,
    ) -> Result<Self, WebConfigError> {
        Ok(Self {
            tls: spec.tls.as_ref().map(tls::TlsSettings::build).transpose()?,
            basic_auth: BasicAuth::new(spec.users, Arc::clone(bcrypt_lock)),
            rate_limiter: spec.rate_limit.map(RateLimiter::new),
            headers: spec.headers,
        })
    }

    /// The acceptor for HTTPS, or `None` to serve plain HTTP.
    pub fn tls_acceptor(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.tls.as_ref().map(TlsServer::acceptor)
    }

    /// After the handshake: whether the client certificate carries one of
    /// `client_allowed_sans` (always `Ok` without that setting). `Err` explains the refusal.
    pub fn check_client_cert(&self, conn: &rustls::ServerConnection) -> Result<(), String> {
        match &self.tls {
            Some(tls) => tls.check_client_cert(conn.peer_certificates()),
            None => Ok(()),
        }
    }

    /// Whether a request may proceed: the rate limit first (so that a flood is turned away
    /// before it costs a bcrypt run), then basic auth.
    pub async fn authorize(&self, headers: &HeaderMap) -> Result<(), Rejection> {
        if let Some(limiter) = &self.rate_limiter
            && !limiter.try_acquire()
        {
            return Err(Rejection::RateLimited);
        }
        match &self.basic_auth {
            Some(auth) => auth.check(headers).await,
            None => Ok(()),
        }
    }

    /// Sets `http_server_config.headers` on a response (every response gets them).
    pub fn apply_headers<B>(&self, response: &mut http::Response<B>) {
        for (name, value) in &self.headers {
            response.headers_mut().insert(name.clone(), value.clone());
        }
    }
}

/// The listener's TLS: looked up per connection, so a reloaded file applies to the next one.
impl crate::server::TlsSource for WebConfig {
    fn acceptor(&self) -> Option<tokio_rustls::TlsAcceptor> {
        self.current().tls_acceptor().cloned()
    }

    fn verify(&self, conn: &rustls::ServerConnection) -> Result<(), String> {
        self.current().check_client_cert(conn)
    }
}

//! Sign-in for the console: bcrypt-checked passwords, sessions kept in the store (they survive
//! a restart and are shared by every instance) behind a random cookie, a CSRF token per
//! session, and a limit on failed sign-ins per address and per user name.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::HeaderMap;
use ring::rand::{SecureRandom as _, SystemRandom};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use crate::config::{ConsoleUser, Role};

/// The session cookie. Path `/ui/`: no other route of the relay ever sees it.
pub(crate) const SESSION_COOKIE: &str = "relay_session";
/// The sign-in form's own CSRF cookie (double submit: there is no session yet).
pub(crate) const LOGIN_COOKIE: &str = "relay_login";

/// Failed sign-ins allowed per address and per user name in [`FAILURE_WINDOW`].
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(300);
/// Keys the limiter remembers at most (an attacker with many addresses cannot grow it).
const MAX_KEYS: usize = 10_000;

/// A signed-in user, as a request carries it.
#[derive(Debug, Clone)]
pub(crate) struct SignedIn {
    pub(crate) name: String,
    pub(crate) role: Role,
    pub(crate) csrf: String,
    pub(crate) token_hash: String,
}

impl SignedIn {
    pub(crate) fn can_act(&self) -> bool {
        self.role == Role::Responder
    }

    /// Whether `token` is this session's CSRF token (constant time).
    pub(crate) fn csrf_matches(&self, token: &str) -> bool {
        !token.is_empty() && bool::from(self.csrf.as_bytes().ct_eq(token.as_bytes()))
    }
}

/// 32 random bytes, URL-safe base64: a session token, a CSRF token.
pub(crate) fn random_token() -> Option<String> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// What the store keeps of a session token: its SHA-256, so a read of the database does not
/// hand out live sessions.
pub(crate) fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The value of cookie `name` in the request, if any.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Secure when the console is reached over
/// TLS; `max_age` 0 deletes it.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    max_age: Duration,
    secure: bool,
) -> String {
    format!(
        "{name}={value}; Path={path}; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// Checks `password` against `user`'s bcrypt hash, or against a decoy hash when the user does
/// not exist, so that the answer takes about as long either way. Runs on the blocking pool.
pub(crate) async fn verify(user: Option<&ConsoleUser>, password: String) -> bool {
    let (hash, known) = match user {
        Some(u) => (u.password_hash.clone(), true),
        None => (decoy_hash().to_owned(), false),
    };
    let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash).unwrap_or(false))
        .await
        .unwrap_or(false);
    ok && known
}

/// A bcrypt hash (cost 10, the usual) of a random password, made once: what an unknown user
/// name is checked against.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let password = random_token().unwrap_or_else(|| "decoy".to_owned());
        bcrypt::hash(password, 10).unwrap_or_default()
    })
}

/// Failed sign-ins by key (`addr:…`, `user:…`), each a list of times in the window.
#[derive(Debug, Default)]
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, Vec<Instant>>>,
}

impl LoginLimiter {
    /// How long until `keys` may try again; `None` when none of them is over the limit.
    pub(crate) fn blocked(&self, keys: &[String], now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        keys.iter()
            .filter_map(|k| failures.get(k))
            .filter_map(|times| {
                let recent: Vec<&Instant> = times
                    .iter()
                    .filter(|t| now.duration_since(**t) < FAILURE_WINDOW)
                    .collect();
                (recent.len() >= MAX_FAILURES).then(|| {
                    let oldest = recent.iter().min().map_or(now, |t| **t);
                    FAILURE_WINDOW.saturating_sub(now.duration_since(oldest))
                })
            })
            .max()
    }

    pub(crate) fn failed(&self, keys: &[String], now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if failures.len() >= MAX_KEYS {
            failures.retain(|_, times| {
                times
                    .iter()
                    .any(|t| now.duration_since(*t) < FAILURE_WINDOW)
            });
            if failures.len() >= MAX_KEYS {
                failures.clear();
            }
        }
        for k in keys {
            let times = failures.entry(k.clone()).or_default();
            times.retain(|t| now.duration_since(*t) < FAILURE_WINDOW);
            times.push(now);
        }
    }

    /// A successful sign-in forgets the user name's failures (not the address's).
    pub(crate) fn succeeded(&self, user_key: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        failures.remove(user_key);
    }
}

/// Where to go after signing in: a console page, never another site.
pub(crate) fn safe_next(next: &str) -> &str {
    if next.starts_with("/ui/") && !next.starts_with("//") && !next.contains(['\\', '\r', '\n']) {
        next
    } else {
        "/ui/"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            "a=1; relay_session=abc".parse().expect("v"),
        );
        h.append(http::header::COOKIE, "b=2".parse().expect("v"));
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "relay"), None);
    }

    #[test]
    fn the_limiter_blocks_after_five_failures_and_forgets_after_the_window() {
        let l = LoginLimiter::default();
        let t0 = Instant::now();
        let keys = vec!["addr:1".to_owned(), "user:a".to_owned()];
        for _ in 0..4 {
            l.failed(&keys, t0);
        }
        assert_eq!(l.blocked(&keys, t0), None);
        l.failed(&keys, t0);
        assert!(l.blocked(&keys, t0).is_some());
        // Another user from the same address is blocked too; the user from elsewhere as well.
        assert!(l.blocked(&["addr:1".to_owned()], t0).is_some());
        assert!(
            l.blocked(&["addr:2".to_owned(), "user:a".to_owned()], t0)
                .is_some()
        );
        assert_eq!(l.blocked(&keys, t0 + FAILURE_WINDOW), None);
    }

    #[test]
    fn next_stays_on_the_console() {
        assert_eq!(safe_next("/ui/incidents/3"), "/ui/incidents/3");
        assert_eq!(safe_next("https://evil.example/"), "/ui/");
        assert_eq!(safe_next("//evil.example/ui/"), "/ui/");
        assert_eq!(safe_next("/ui/\\evil"), "/ui/");
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let a = random_token().expect("token");
        let b = random_token().expect("token");
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert_eq!(token_hash(&a).len(), 64);
        assert_ne!(token_hash(&a), a);
    }
}

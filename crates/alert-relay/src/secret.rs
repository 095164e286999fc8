//! [`Secret`]: a string that never reaches a log. Its `Debug` and `Display` print `<redacted>`,
//! and comparing it with untrusted input takes the same time whatever the input.
//! [`redact_url`]: a URL with its credentials taken out, for printing.
//! [`keys`]: reading secrets (inline, `_file`, `_env`) and the configuration errors that name
//! their key, shared by `config` and the providers in `channels`.

pub mod keys;

use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for building a request. Never format it into a log line.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison: both sides are hashed first so neither the content nor the
    /// length of the secret leaks through timing.
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let a = Sha256::digest(self.0.as_bytes());
        let b = Sha256::digest(candidate);
        a.ct_eq(&b).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A URL as it may be printed: the password of its userinfo and the value of every query
/// parameter replaced by `<redacted>` (basic credentials in `api_url`, a Teams `sig=`, an
/// ntfy `auth=`). Text that is not a URL is printed as `<unparsable URL>`: it may be a secret
/// with a typo.
pub fn redact_url(url: &str) -> String {
    let Ok(mut u) = reqwest::Url::parse(url) else {
        return "<unparsable URL>".to_owned();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("<redacted>"));
    }
    let names: Vec<String> = u.query_pairs().map(|(k, _)| k.into_owned()).collect();
    if !names.is_empty() {
        u.query_pairs_mut()
            .clear()
            .extend_pairs(names.iter().map(|k| (k, "<redacted>")));
    }
    // Userinfo and queries are percent-encoded by the URL parser; show the marker as written.
    let mut out = u.as_str().replace("%3Credacted%3E", "<redacted>");
    // The parser adds a root path; keep `http://am:9093` as written (callers append paths).
    if u.path() == "/" && u.query().is_none() && !url.ends_with('/') && out.ends_with('/') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_passwords_and_query_values() {
        assert_eq!(
            redact_url("https://relay:hunter2@api.example.org:8443/v1?sig=abc&x=1"),
            "https://relay:<redacted>@api.example.org:8443/v1?sig=<redacted>&x=<redacted>"
        );
        assert_eq!(redact_url("http://127.0.0.1:9093"), "http://127.0.0.1:9093");
        assert_eq!(
            redact_url("http://127.0.0.1:9093/"),
            "http://127.0.0.1:9093/"
        );
        assert_eq!(redact_url("hunter2 oops"), "<unparsable URL>");
    }

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(
            format!("{s} {s:?} {:?}", Some(&s)),
            "<redacted> <redacted> Some(<redacted>)"
        );
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b""));
    }
}

//! Webhook authentication as Alertmanager's `http_config` sends it: `Authorization: Bearer`
//! or `Basic`. Every comparison is constant-time (see [`Secret::matches`]).

use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;

use crate::config::Auth;
use crate::secret::Secret;

pub(super) fn authorized(auth: &Auth, headers: &HeaderMap) -> bool {
    let header = headers.get(AUTHORIZATION).map(http::HeaderValue::as_bytes);
    match auth {
        Auth::None => true,
        Auth::Bearer(token) => header
            .and_then(|h| strip_scheme(h, b"bearer"))
            .is_some_and(|t| token.matches(t)),
        Auth::Basic { username, password } => header
            .and_then(|h| strip_scheme(h, b"basic"))
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .is_some_and(|decoded| check_basic(&decoded, username, password)),
    }
}

/// The `WWW-Authenticate` challenge for `auth`.
pub(super) fn challenge(auth: &Auth) -> http::HeaderValue {
    http::HeaderValue::from_static(match auth {
        Auth::Basic { .. } => "Basic realm=\"alert-relay\"",
        Auth::Bearer(_) | Auth::None => "Bearer",
    })
}

fn check_basic(decoded: &[u8], username: &str, password: &Secret) -> bool {
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
    // Both halves are always compared, so a wrong user name costs the same time.
    let user_ok = Secret::new(username).matches(user);
    let pass_ok = password.matches(pass);
    user_ok & pass_ok
}

/// The credentials after `<scheme> ` (scheme case-insensitive), trimmed.
fn strip_scheme<'a>(header: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    if header.len() <= scheme.len() || !header[..scheme.len()].eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = &header[scheme.len()..];
    if rest.first() != Some(&b' ') {
        return None;
    }
    Some(rest.trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, value.parse().expect("header"));
        h
    }

    #[test]
    fn bearer_and_basic() {
        let bearer = Auth::Bearer(Secret::new("tok"));
        assert!(authorized(&bearer, &headers("Bearer tok")));
        assert!(authorized(&bearer, &headers("bearer  tok ")));
        assert!(!authorized(&bearer, &headers("Bearer tok2")));
        assert!(!authorized(&bearer, &headers("Basic dG9r")));
        assert!(!authorized(&bearer, &HeaderMap::new()));
        let basic = Auth::Basic {
            username: "am".into(),
            password: Secret::new("pw:with:colons"),
        };
        let enc = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert!(authorized(&basic, &headers(&enc("am:pw:with:colons"))));
        assert!(!authorized(&basic, &headers(&enc("am:pw"))));
        assert!(!authorized(&basic, &headers(&enc("xx:pw:with:colons"))));
        assert!(!authorized(&basic, &headers("Basic !!!")));
        assert!(authorized(&Auth::None, &HeaderMap::new()));
    }
}

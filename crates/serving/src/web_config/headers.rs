//! `http_server_config.headers`: the security headers exporter-toolkit lets a config add.

use std::collections::BTreeMap;

use http::{HeaderName, HeaderValue};

use super::WebConfigError;

/// The headers that may be set, each with the values it may take (empty: any). exporter-toolkit
/// keeps this list closed so that a web config cannot break the protocol (say, by setting
/// `Content-Type`); names are matched exactly as written there.
const CONFIGURABLE: [(&str, &[&str]); 5] = [
    ("Content-Security-Policy", &[]),
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
];

/// Validates the configured headers.
pub(super) fn response_headers(
    headers: BTreeMap<String, String>,
) -> Result<Vec<(HeaderName, HeaderValue)>, WebConfigError> {
    headers
        .into_iter()
        .map(|(name, value)| {
            let key = format!("http_server_config.headers.{name}");
            let Some((_, allowed)) = CONFIGURABLE.iter().find(|(known, _)| *known == name) else {
                let known: Vec<_> = CONFIGURABLE.iter().map(|(known, _)| *known).collect();
                return Err(WebConfigError::invalid(
                    key,
                    format!(
                        "this header cannot be configured; allowed: {}",
                        known.join(", ")
                    ),
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(WebConfigError::invalid(
                    key,
                    format!("{value:?} is not one of {}", allowed.join(", ")),
                ));
            }
            let value = HeaderValue::try_from(value)
                .map_err(|error| WebConfigError::invalid(&key, error.to_string()))?;
            let name = HeaderName::try_from(name)
                .map_err(|error| WebConfigError::invalid(&key, error.to_string()))?;
            Ok((name, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(pairs: &[(&str, &str)]) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
        let map = pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        response_headers(map).map_err(|error| error.to_string())
    }

    #[test]
    fn allowed_headers_pass_through() {
        let headers = validate(&[
            ("X-Content-Type-Options", "nosniff"),
            ("X-Frame-Options", "deny"),
            (
                "Strict-Transport-Security",
                "max-age=31536000; includeSubDomains",
            ),
            ("Content-Security-Policy", "default-src 'self'"),
            ("X-XSS-Protection", "1; mode=block"),
        ])
        .expect("allowed");
        assert_eq!(headers.len(), 5);
        let options = headers
            .iter()
            .find(|(name, _)| name == "x-content-type-options")
            .map(|(_, value)| value);
        assert_eq!(options, Some(&HeaderValue::from_static("nosniff")));
    }

    #[test]
    fn other_headers_and_values_are_errors_naming_the_header() {
        for (pairs, key) in [
            (&[("Content-Type", "text/html")], "Content-Type"),
            (&[("x-frame-options", "deny")], "x-frame-options"),
            (&[("X-Frame-Options", "allow-from x")], "X-Frame-Options"),
            (
                &[("X-Content-Type-Options", "sniff")],
                "X-Content-Type-Options",
            ),
            (
                &[("Content-Security-Policy", "a\nb")],
                "Content-Security-Policy",
            ),
        ] {
            let message = validate(pairs).expect_err(key);
            let expected = format!("http_server_config.headers.{key}:");
            assert!(message.starts_with(&expected), "{message}");
        }
    }
}

//! The YAML file format, and its validation into a [`Spec`] (no I/O: files named by the config
//! are only resolved here, read later).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::WebConfigError;
use super::auth::{self, User};
use super::headers;
use super::rate_limit::{self, RateLimit};
use super::tls::{self, TlsSettings};

// The sections mirror exporter-toolkit's structs. `deny_unknown_fields` makes a typo an error
// rather than a silently ignored setting (exporter-toolkit parses strictly too). Everything is
// optional because YAML lets a key be present with no value (`http_server_config:`).

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    tls_server_config: Option<TlsSection>,
    http_server_config: Option<HttpSection>,
    basic_auth_users: Option<BTreeMap<String, String>>,
    rate_limit: Option<RateLimitSection>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TlsSection {
    pub(super) cert: Option<String>,
    pub(super) key: Option<String>,
    pub(super) client_ca: Option<String>,
    pub(super) cert_file: Option<String>,
    pub(super) key_file: Option<String>,
    pub(super) client_ca_file: Option<String>,
    pub(super) client_auth_type: Option<String>,
    pub(super) cipher_suites: Option<Vec<String>>,
    pub(super) curve_preferences: Option<Vec<String>>,
    pub(super) min_version: Option<String>,
    pub(super) max_version: Option<String>,
    pub(super) prefer_server_cipher_suites: Option<bool>,
    pub(super) client_allowed_sans: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpSection {
    http2: Option<bool>,
    headers: Option<BTreeMap<String, String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitSection {
    pub(super) interval: Option<String>,
    pub(super) burst: Option<u32>,
}

/// Parses the text of the config file at `path` (named in errors).
pub(super) fn parse(text: &str, path: &Path) -> Result<FileConfig, WebConfigError> {
    // An empty file (or one with only comments) is a valid config that enables nothing, as in
    // exporter-toolkit; YAML reads it as null, hence the `Option`.
    serde_saphyr::from_str::<Option<FileConfig>>(text)
        .map(Option::unwrap_or_default)
        .map_err(|error| WebConfigError::Yaml {
            path: path.to_owned(),
            // One line with the location ("... at line 3 column 5"), not a multi-line snippet:
            // the message ends up in a log line.
            message: error.render_with_options(serde_saphyr::render_options! {
                snippets: serde_saphyr::SnippetMode::Off,
            }),
        })
}

/// A validated config: everything checked that can be checked without reading files.
pub(super) struct Spec {
    pub(super) tls: Option<TlsSettings>,
    pub(super) users: Vec<User>,
    pub(super) rate_limit: Option<RateLimit>,
    pub(super) headers: Vec<(HeaderName, HeaderValue)>,
    pub(super) notes: Notes,
}

/// What to tell the user about a config that loads but does not entirely do what it says.
#[derive(Debug, Default)]
pub(super) struct Notes {
    /// Settings accepted with a different effect, or none.
    pub(super) warnings: Vec<String>,
    /// `http_server_config.http2: true`, which we accept but cannot honour.
    pub(super) http2_requested: bool,
}

impl FileConfig {
    /// Validates the config; relative file names are resolved against `base_dir`, the
    /// directory of the config file (as exporter-toolkit does).
    pub(super) fn into_spec(self, base_dir: &Path) -> Result<Spec, WebConfigError> {
        let mut warnings = Vec::new();
        let http = self.http_server_config.unwrap_or_default();
        Ok(Spec {
            tls: tls::settings(
                self.tls_server_config.unwrap_or_default(),
                base_dir,
                &mut warnings,
            )?,
            users: auth::users(self.basic_auth_users.unwrap_or_default())?,
            rate_limit: rate_limit::settings(self.rate_limit.unwrap_or_default())?,
            headers: headers::response_headers(http.headers.unwrap_or_default())?,
            notes: Notes {
                warnings,
                http2_requested: http.http2 == Some(true),
            },
        })
    }
}

impl Spec {
    /// The files this config names, to watch for changes.
    pub(super) fn files(&self) -> Vec<PathBuf> {
        self.tls
            .as_ref()
            .map(|tls| tls.files().map(Path::to_owned).collect())
            .unwrap_or_default()
    }
}

impl Notes {
    pub(super) fn log(&self) {
        for warning in &self.warnings {
            tracing::warn!("web config: {warning}");
        }
        if self.http2_requested {
            // Per process rather than per (re)load: it is a property of this exporter, not news.
            static HTTP2_NOTICE: Once = Once::new();
            HTTP2_NOTICE.call_once(|| {
                tracing::info!(
                    "web config: http_server_config.http2 is ignored, this exporter serves HTTP/1.1"
                );
            });
        }
    }
}

/// YAML has no distinction between an absent key and `key: ""` for exporter-toolkit (Go's zero
/// value), so an empty string counts as unset.
pub(super) fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|value| !value.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> Result<Spec, WebConfigError> {
        parse(yaml, Path::new("/etc/web.yml"))?.into_spec(Path::new("/etc"))
    }

    fn error(yaml: &str) -> String {
        match spec(yaml) {
            Ok(_) => panic!("accepted: {yaml}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn empty_and_comment_only_files_enable_nothing() {
        for yaml in ["", "# nothing yet\n", "---\n"] {
            let spec = spec(yaml).expect(yaml);
            assert!(spec.tls.is_none() && spec.users.is_empty() && spec.rate_limit.is_none());
            assert!(spec.headers.is_empty());
        }
    }

    #[test]
    fn empty_sections_are_accepted() {
        let spec =
            spec("tls_server_config:\nhttp_server_config:\nbasic_auth_users:\nrate_limit:\n")
                .expect("empty sections");
        assert!(spec.tls.is_none() && spec.users.is_empty());
    }

    #[test]
    fn unknown_keys_are_errors_naming_the_key() {
        let message = error("basic_auth_user:\n  alice: x\n");
        assert!(message.contains("basic_auth_user"), "{message}");
        assert!(message.contains("/etc/web.yml"), "{message}");
        assert!(message.contains("line 1"), "{message}");

        let message = error("tls_server_config:\n  cert_flie: a.crt\n");
        assert!(message.contains("cert_flie"), "{message}");
    }

    #[test]
    fn wrong_types_are_errors() {
        let message = error("rate_limit:\n  burst: -1\n");
        assert!(message.contains("line 2"), "{message}");
        let message = error("http_server_config:\n  http2: maybe\n");
        assert!(message.contains("line 2"), "{message}");
    }

    #[test]
    fn http2_is_accepted_and_noted() {
        assert!(
            spec("http_server_config:\n  http2: true\n")
                .expect("http2")
                .notes
                .http2_requested
        );
        assert!(
            !spec("http_server_config:\n  http2: false\n")
                .expect("http2")
                .notes
                .http2_requested
        );
    }

    #[test]
    fn files_are_resolved_against_the_config_directory() {
        let spec =
            spec("tls_server_config:\n  cert_file: tls/server.crt\n  key_file: /abs/server.key\n")
                .expect("tls");
        assert_eq!(
            spec.files(),
            [
                PathBuf::from("/etc/tls/server.crt"),
                PathBuf::from("/abs/server.key")
            ]
        );
    }
}

//! What reading a configuration needs below both `config` and `channels`: [`ConfigError`]
//! (every error names its key path), where `*_file` and `*_env` secrets come from
//! ([`SecretSource`]), and [`Ctx::secret`], the one reader of a secret given inline, in a file
//! or in an environment variable. Providers (`crate::channels::*`) validate their own keys with
//! these, so `channels` never needs `config`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::Secret;
use crate::time::parse_duration;

/// Why a configuration cannot be used. Every variant names the file or the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The io error is part of the message, not a `source`: a chain printed with `{:#}` would
    /// say it twice.
    #[error("{}: cannot read: {error}", path.display())]
    Read { path: PathBuf, error: io::Error },
    /// Syntax, an unknown key or a wrong type; serde-saphyr's message names line and column.
    #[error("{}: {message}", path.display())]
    Yaml { path: PathBuf, message: String },
    /// `key` is the dotted path of the offending key, e.g. `channels.ops-slack.webhook_url_file`.
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
    /// Every error one validation found in independent parts of the file (never nested, at
    /// least two), one per line, in the order found.
    #[error("{}", lines(.0))]
    Several(Vec<ConfigError>),
}

fn lines(errors: &[ConfigError]) -> String {
    let each: Vec<String> = errors.iter().map(ToString::to_string).collect();
    each.join("\n")
}

impl ConfigError {
    /// Each error on its own: this one, or every one of [`ConfigError::Several`].
    pub fn each(&self) -> &[ConfigError] {
        match self {
            ConfigError::Several(all) => all,
            one => std::slice::from_ref(one),
        }
    }
}

/// The errors found so far in a configuration. Validation of independent parts (sections,
/// entries of a section, keys of an entry) reports into one `Problems` and goes on, so a
/// single run names every error, each once; a part whose value others need reports its error
/// and gives a stand-in that [`Problems::finish`] never lets out.
#[derive(Debug, Default)]
pub struct Problems {
    found: Vec<ConfigError>,
}

impl Problems {
    /// Records `error` (every one of a [`ConfigError::Several`]).
    pub fn push(&mut self, error: ConfigError) {
        match error {
            ConfigError::Several(all) => self.found.extend(all),
            one => self.found.push(one),
        }
    }

    /// The value of `result`, or `None` with its error recorded.
    pub fn keep<T>(&mut self, result: Result<T, ConfigError>) -> Option<T> {
        result.map_err(|e| self.push(e)).ok()
    }

    /// The value of `result`, or `stand_in` with its error recorded.
    pub fn or<T>(&mut self, result: Result<T, ConfigError>, stand_in: T) -> T {
        self.keep(result).unwrap_or(stand_in)
    }

    pub fn is_empty(&self) -> bool {
        self.found.is_empty()
    }

    /// `value` when nothing was found; else the one error, or all of them.
    pub fn finish<T>(self, value: T) -> Result<T, ConfigError> {
        if self.found.is_empty() {
            Ok(value)
        } else {
            Err(self.into_error())
        }
    }

    /// `value` when nothing was found; else every error. Validation gives `None` only after
    /// recording why, so `None` with nothing recorded is a bug of the validation: an error at
    /// `key` rather than a panic.
    pub fn finish_some<T>(self, key: &str, value: Option<T>) -> Result<T, ConfigError> {
        match value {
            Some(value) => self.finish(value),
            None => Err(self.failed(key)),
        }
    }

    /// For a value that could not be built: every error found, which says why; with none
    /// found (a bug of the validation) an error at `key` rather than a panic.
    pub fn failed(self, key: &str) -> ConfigError {
        if self.found.is_empty() {
            invalid(key, "could not be validated")
        } else {
            self.into_error()
        }
    }

    /// For a part that cannot go on without a value: records `error` and gives every error
    /// found so far.
    pub fn fail(mut self, error: ConfigError) -> ConfigError {
        self.push(error);
        self.into_error()
    }

    /// The one error, or all of them; only called with at least one.
    fn into_error(mut self) -> ConfigError {
        if self.found.len() == 1 {
            self.found.remove(0)
        } else {
            ConfigError::Several(self.found)
        }
    }
}

/// The error for the key at `key`.
pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
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

/// The three ways one secret can be given: `key` inline, `key_file`, `key_env`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretKeys<'a> {
    pub inline: Option<&'a String>,
    pub file: Option<&'a PathBuf>,
    pub env: Option<&'a String>,
}

/// What validation reads besides the file: the directory relative paths start from, and the
/// source of `*_file` and `*_env` secrets.
pub struct Ctx<'a> {
    pub base: &'a Path,
    pub secrets: &'a dyn SecretSource,
}

impl std::fmt::Debug for Ctx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl Ctx<'_> {
    /// `p` resolved against the configuration file's directory.
    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_owned()
        } else {
            self.base.join(p)
        }
    }

    /// One secret given inline as `key`, in a file as `key_file`, or in an environment
    /// variable as `key_env`; at most one of them. File contents lose a trailing newline.
    pub fn secret(
        &self,
        prefix: &str,
        key: &str,
        given: SecretKeys<'_>,
    ) -> Result<Option<Secret>, ConfigError> {
        let set = [
            given.inline.is_some(),
            given.file.is_some(),
            given.env.is_some(),
        ];
        if set.iter().filter(|g| **g).count() > 1 {
            return Err(invalid(
                format!("{prefix}{key}"),
                format!("set only one of {key}, {key}_file and {key}_env"),
            ));
        }
        let value = if let Some(v) = given.inline {
            v.clone()
        } else if let Some(p) = given.file {
            let path = self.path(p);
            let text = self.secrets.file(&path).map_err(|e| {
                invalid(
                    format!("{prefix}{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            text.trim_end_matches(['\n', '\r']).to_owned()
        } else if let Some(name) = given.env {
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

    /// [`Ctx::secret`], which must be given.
    pub fn required_secret(
        &self,
        prefix: &str,
        key: &str,
        given: SecretKeys<'_>,
    ) -> Result<Secret, ConfigError> {
        self.secret(prefix, key, given)?.ok_or_else(|| {
            invalid(
                format!("{prefix}{key}"),
                format!("required: set {key}_file, {key}_env or {key}"),
            )
        })
    }
}

/// The duration at `key`, or `default` when it is not given.
pub fn duration(
    key: &str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    value.map_or(Ok(default), |v| {
        parse_duration(v).map_err(|e| invalid(key, e))
    })
}

/// `url` at `key` must be an http(s) URL with a host.
pub fn check_url(key: &str, url: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(_) => Err(invalid(
            key,
            "must be an http:// or https:// URL with a host",
        )),
        Err(e) => Err(invalid(key, format!("not a URL: {e}"))),
    }
}

//! `deadman:` and `alertmanager:`: the relay's checks on the pipeline in front of it (the
//! dead-man's switch on Alertmanager's `Watchdog`, and re-sync with Alertmanager's API).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::raw::{RawAuth, RawMatchers};
use super::{Auth, ChannelConfig, ConfigError, matchers};
use crate::matcher::{Matcher, Op};
use crate::payload::Labels;
use crate::secret::keys::{Ctx, check_url, duration, invalid};

const DEFAULT_DEADMAN_TIMEOUT: Duration = Duration::from_secs(5 * 60);
const DEFAULT_RESYNC_INTERVAL: Duration = Duration::from_secs(5 * 60);
const DEFAULT_RESYNC_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawDeadman {
    pub timeout: Option<String>,
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(rename = "match", default)]
    pub matchers: RawMatchers,
    /// Alertmanager's spelling (`config::matchers`).
    #[serde(rename = "matchers")]
    pub am_matchers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawAlertmanager {
    pub url: String,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub auth: Option<RawAuth>,
    pub tls: Option<RawClientTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(in crate::config) struct RawClientTls {
    pub ca_file: PathBuf,
}

/// The dead-man's switch: alerts matching `matchers` are heartbeats; none for `timeout`
/// notifies the `notify` channels.
#[derive(Debug, Clone)]
pub struct Deadman {
    pub timeout: Duration,
    /// Channel names.
    pub notify: Vec<String>,
    pub matchers: Vec<Matcher>,
}

impl Deadman {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    /// Destination ids of the `notify` channels, in order without repeats.
    pub fn destinations(&self, channels: &BTreeMap<String, Arc<ChannelConfig>>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for d in self
            .notify
            .iter()
            .filter_map(|c| channels.get(c))
            .flat_map(ChannelConfig::destinations)
        {
            if !out.contains(&d.id) {
                out.push(d.id);
            }
        }
        out
    }
}

/// Re-sync with Alertmanager's `GET /api/v2/alerts`.
#[derive(Debug, Clone)]
pub struct AlertmanagerApi {
    /// Base URL without a trailing slash (`http://127.0.0.1:9093`).
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub auth: Auth,
    /// Extra CA for an Alertmanager with a private certificate (the OS trust store also
    /// applies).
    pub ca_file: Option<PathBuf>,
}

/// `check-config`'s lines for the two sections.
pub(super) fn describe(config: &super::Config, out: &mut String) {
    use std::fmt::Write as _;
    match &config.deadman {
        Some(d) => {
            let m: Vec<String> = d.matchers.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                out,
                "deadman: heartbeats {{{}}}, after {} of silence notify {}",
                m.join(", "),
                crate::time::humanize(d.timeout),
                d.notify.join(", ")
            );
        }
        None => {
            let _ = writeln!(
                out,
                "deadman: off (Watchdog alerts are routed like any alert)"
            );
        }
    }
    match &config.alertmanager {
        Some(a) => {
            let _ = writeln!(
                out,
                "alertmanager: re-sync with {}/api/v2/alerts every {}",
                crate::secret::redact_url(&a.url),
                crate::time::humanize(a.interval)
            );
        }
        None => {
            let _ = writeln!(out, "alertmanager: no re-sync");
        }
    }
}

pub(super) fn deadman(
    raw: RawDeadman,
    channels: &BTreeMap<String, Arc<ChannelConfig>>,
) -> Result<Deadman, ConfigError> {
    let timeout = duration(
        "deadman.timeout",
        raw.timeout.as_ref(),
        DEFAULT_DEADMAN_TIMEOUT,
    )?;
    if timeout < Duration::from_secs(1) {
        return Err(invalid("deadman.timeout", "must be at least 1s"));
    }
    if raw.notify.is_empty() {
        return Err(invalid(
            "deadman.notify",
            "names no channel: who hears that the pipeline is broken?",
        ));
    }
    for (j, c) in raw.notify.iter().enumerate() {
        if !channels.contains_key(c) {
            return Err(invalid(
                format!("deadman.notify[{j}]"),
                format!("no channel named {c:?}"),
            ));
        }
    }
    let mut m = matchers::section("deadman", raw.matchers, raw.am_matchers)?;
    if m.is_empty() {
        // Alertmanager's own name for the always-firing alert (kube-prometheus, our rules).
        m.push(
            Matcher::new("alertname", Op::Equal, "Watchdog")
                .map_err(|e| invalid("deadman.match", e))?,
        );
    }
    Ok(Deadman {
        timeout,
        notify: raw.notify,
        matchers: m,
    })
}

pub(super) fn alertmanager(
    raw: RawAlertmanager,
    ctx: &Ctx<'_>,
) -> Result<AlertmanagerApi, ConfigError> {
    check_url("alertmanager.url", &raw.url)?;
    let interval = duration(
        "alertmanager.interval",
        raw.interval.as_ref(),
        DEFAULT_RESYNC_INTERVAL,
    )?;
    if interval < Duration::from_secs(1) {
        return Err(invalid("alertmanager.interval", "must be at least 1s"));
    }
    let timeout = duration(
        "alertmanager.timeout",
        raw.timeout.as_ref(),
        DEFAULT_RESYNC_TIMEOUT,
    )?;
    if timeout.is_zero() {
        return Err(invalid("alertmanager.timeout", "must be above 0"));
    }
    let auth = match raw.auth {
        None => Auth::None,
        Some(a) => super::auth("alertmanager.auth", a, ctx)?,
    };
    let ca_file = match raw.tls {
        None => None,
        Some(t) => {
            let path = ctx.path(&t.ca_file);
            // Read now so a wrong path is a config error, not a failing poll every interval.
            let pem = ctx.secrets.file(&path).map_err(|e| {
                invalid(
                    "alertmanager.tls.ca_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                invalid(
                    "alertmanager.tls.ca_file",
                    format!("not a PEM certificate: {e}"),
                )
            })?;
            Some(path)
        }
    };
    Ok(AlertmanagerApi {
        url: raw.url.trim_end_matches('/').to_owned(),
        interval,
        timeout,
        auth,
        ca_file,
    })
}

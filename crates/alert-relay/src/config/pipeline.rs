//! `deadman:` and `alertmanager:`: the relay's checks on the pipeline in front of it (the
//! dead-man's switch on Alertmanager's `Watchdog`, and re-sync with Alertmanager's API).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::raw::{RawAuth, RawMatchers};
use super::{Auth, ChannelConfig, ConfigError, Problems, matchers};
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

/// `deadman:`, each key's error reported.
pub(super) fn deadman(
    raw: RawDeadman,
    channels: &std::collections::BTreeSet<String>,
) -> Result<Deadman, ConfigError> {
    let mut problems = Problems::default();
    let timeout = match duration(
        "deadman.timeout",
        raw.timeout.as_ref(),
        DEFAULT_DEADMAN_TIMEOUT,
    ) {
        Ok(t) if t < Duration::from_secs(1) => {
            Err(invalid("deadman.timeout", "must be at least 1s"))
        }
        other => other,
    };
    let timeout = problems.or(timeout, DEFAULT_DEADMAN_TIMEOUT);
    if raw.notify.is_empty() {
        problems.push(invalid(
            "deadman.notify",
            "names no channel: who hears that the pipeline is broken?",
        ));
    }
    for (j, c) in raw.notify.iter().enumerate() {
        if !channels.contains(c) {
            problems.push(invalid(
                format!("deadman.notify[{j}]"),
                format!("no channel named {c:?}"),
            ));
        }
    }
    let mut m = problems.or(
        matchers::section("deadman", raw.matchers, raw.am_matchers),
        Vec::new(),
    );
    if m.is_empty() {
        // Alertmanager's own name for the always-firing alert (kube-prometheus, our rules).
        m.extend(
            problems.keep(
                Matcher::new("alertname", Op::Equal, "Watchdog")
                    .map_err(|e| invalid("deadman.match", e)),
            ),
        );
    }
    problems.finish(Deadman {
        timeout,
        notify: raw.notify,
        matchers: m,
    })
}

/// `alertmanager:`, each key's error reported.
pub(super) fn alertmanager(
    raw: RawAlertmanager,
    ctx: &Ctx<'_>,
) -> Result<AlertmanagerApi, ConfigError> {
    let mut problems = Problems::default();
    problems.keep(check_url("alertmanager.url", &raw.url));
    let interval = match duration(
        "alertmanager.interval",
        raw.interval.as_ref(),
        DEFAULT_RESYNC_INTERVAL,
    ) {
        Ok(i) if i < Duration::from_secs(1) => {
            Err(invalid("alertmanager.interval", "must be at least 1s"))
        }
        other => other,
    };
    let interval = problems.or(interval, DEFAULT_RESYNC_INTERVAL);
    let timeout = match duration(
        "alertmanager.timeout",
        raw.timeout.as_ref(),
        DEFAULT_RESYNC_TIMEOUT,
    ) {
        Ok(t) if t.is_zero() => Err(invalid("alertmanager.timeout", "must be above 0")),
        other => other,
    };
    let timeout = problems.or(timeout, DEFAULT_RESYNC_TIMEOUT);
    let auth = match raw.auth {
        None => Auth::None,
        Some(a) => problems.or(super::auth("alertmanager.auth", a, ctx), Auth::None),
    };
    let ca_file = raw.tls.and_then(|t| problems.keep(ca_file(&t, ctx)));
    problems.finish(AlertmanagerApi {
        url: raw.url.trim_end_matches('/').to_owned(),
        interval,
        timeout,
        auth,
        ca_file,
    })
}

/// `alertmanager.tls.ca_file`, read now so a wrong path is a config error, not a failing poll
/// every interval.
fn ca_file(t: &RawClientTls, ctx: &Ctx<'_>) -> Result<PathBuf, ConfigError> {
    let path = ctx.path(&t.ca_file);
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
    Ok(path)
}

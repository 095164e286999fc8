//! The subcommands besides `run`: `check-config`, `send-test`, `migrate-storage`, and the
//! `incidents` and `ack` clients of a running relay's API.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::client::http_client;
use crate::wiring::{listener_security, load_checked};
use crate::{channels, config, render, store, time};

/// `check-config`: validates the file (with the web configuration the relay will run with)
/// and returns the resolved routing.
pub fn check_config(path: &Path, web_config: Option<&Path>) -> anyhow::Result<String> {
    let (config, security) = load_checked(path, web_config)?;
    Ok(config.describe(security))
}

/// `send-test`: renders a test alert and sends it to every destination of one channel,
/// directly (no store, no retries). Returns one line per destination.
pub async fn send_test(
    path: &Path,
    channel: &str,
) -> anyhow::Result<Vec<(String, channels::Outcome)>> {
    let config = config::load(path)?;
    let ch = config.channels.get(channel).with_context(|| {
        format!(
            "no channel named {channel:?}; channels: {}",
            config
                .channels
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    // A test call's TwiML and key presses would name no stored delivery: refused by the relay.
    anyhow::ensure!(
        !matches!(ch.kind, channels::ChannelKind::TwilioVoice(_)),
        "send-test places no calls (what a call says is served from stored deliveries); \
         send a test alert through a route to {channel:?} instead"
    );
    let http = http_client()?;
    let event = render::test_event();
    let mut out = Vec::new();
    for dest in ch.destinations() {
        let job = store::DeliveryJob {
            id: 0,
            destination: dest.id.clone(),
            state: store::DeliveryState::Pending,
            attempts: 0,
            created_at_ms: time::now_millis(),
            next_attempt_at_ms: 0,
            event: event.clone(),
            firing: None,
            incident: None,
            step: 0,
            notice: None,
            storm: None,
            alerts: Vec::new(),
            provider_ref: None,
        };
        let msg = channels::message_for(&dest, &job);
        let attempt = channels::Attempt {
            http: &http,
            timeout: ch.timeout.unwrap_or(config.delivery.timeout),
            destination: &dest,
            delivery_id: -time::now_millis(),
            firing_ref: None,
            public_url: config.public_url.as_deref(),
        };
        let (outcome, _) = channels::deliver(&attempt, &msg).await;
        out.push((dest.id.clone(), outcome));
    }
    Ok(out)
}

/// `migrate-storage`: copies the relay state of `from`'s `storage.sqlite` file into the empty
/// PostgreSQL database of `to`'s `storage.postgres` (see `store::migrate`). Blocking: the
/// PostgreSQL client runs its own runtime, so call it outside any tokio runtime. No relay may
/// run on the SQLite file meanwhile.
pub fn migrate_storage(from: &Path, to: &Path) -> anyhow::Result<store::migrate::Summary> {
    let source = config::load(from).with_context(|| format!("--from {}", from.display()))?;
    let target = config::load(to).with_context(|| format!("--to {}", to.display()))?;
    let config::StorageBackend::Sqlite(file) = &source.storage.backend else {
        anyhow::bail!(
            "--from {}: its storage is not storage.sqlite; migrate-storage copies from a SQLite file",
            from.display()
        );
    };
    let config::StorageBackend::Postgres(pg) = &target.storage.backend else {
        anyhow::bail!(
            "--to {}: its storage is not storage.postgres; migrate-storage copies into PostgreSQL",
            to.display()
        );
    };
    let settings = crate::wiring::pg_settings(pg);
    store::migrate::sqlite_to_postgres(file, &settings).with_context(|| {
        format!(
            "migrate-storage from {} to {}",
            file.display(),
            target.storage.backend.describe()
        )
    })
}

/// `incidents` and `ack`: the CLI talks to the running relay's API (the relay owns the
/// escalation clocks, so only it can cancel pending steps at once), with the address and
/// credentials of its configuration file. `verb` is `None` to list, or `ack`, `unack`,
/// `escalate`, `resolve` for incident `id`.
pub async fn incident_cli(
    path: &Path,
    web_config: Option<&Path>,
    verb: Option<(&str, i64)>,
    by: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let config = config::load(path)?;
    let scheme = if listener_security(web_config)?.tls {
        "https"
    } else {
        "http"
    };
    let mut host = config.listen;
    if host.ip().is_unspecified() {
        host.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let base = format!("{scheme}://{host}/api/v1/incidents");
    let http = http_client()?;
    let req = match verb {
        None => http.get(base),
        Some((verb, id)) => http
            .post(format!("{base}/{id}/{verb}"))
            .json(&serde_json::json!({ "by": by.map_or_else(whoami, str::to_owned) })),
    };
    let req = match &config.auth {
        config::Auth::None => req,
        config::Auth::Bearer(t) => req.bearer_auth(t.expose()),
        config::Auth::Basic { username, password } => {
            req.basic_auth(username, Some(password.expose()))
        }
    };
    let resp = req
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach the relay at {host}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("the relay's answer")?;
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {}",
            body.get("message").and_then(|m| m.as_str()).unwrap_or("")
        );
    }
    Ok(body)
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

/// One line per incident for `alert-relay incidents`.
pub fn format_incidents(v: &serde_json::Value) -> String {
    let mut out = String::new();
    for i in v["incidents"].as_array().into_iter().flatten() {
        let s = |k: &str| i[k].as_str().unwrap_or("").to_owned();
        out.push_str(&format!(
            "#{:<6} {:<9} {:<24} step {:<3} {} {}\n",
            i["id"],
            s("state"),
            s("alertname"),
            i["next_step"].as_i64().unwrap_or(0),
            s("summary"),
            match (i["acked_by"].as_str(), i["resolved_by"].as_str()) {
                (_, Some(r)) => format!("(resolved by {r})"),
                (Some(a), None) => format!("(acked by {a})"),
                _ => String::new(),
            }
        ));
    }
    if out.is_empty() {
        out.push_str("no incidents\n");
    }
    out
}

//! The subcommands besides `run`: `check-config`, `send-test`, `migrate-storage`, and the
//! `incidents`, `ack` and `maintenance` clients of a running relay's API.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;

use crate::client::http_client;
use crate::routing::route_test;
use crate::wiring::{listener_security, load_checked};
use crate::{channels, config, render, store, time};

/// `check-config`: validates the file (with the web configuration the relay will run with)
/// and returns the resolved routing.
pub fn check_config(path: &Path, web_config: Option<&Path>) -> anyhow::Result<String> {
    let (config, security) = load_checked(path, web_config)?;
    Ok(config.describe(security))
}

/// `check-config FILE --test LABELS`: validates the file like `check-config`, then says where
/// an alert with `labels` goes now (`routing::route_test`), and whether any route matched.
pub fn check_config_test(
    path: &Path,
    web_config: Option<&Path>,
    labels: &str,
) -> anyhow::Result<(String, bool)> {
    let (config, _) = load_checked(path, web_config)?;
    let labels = route_test::parse_labels(labels).map_err(|e| anyhow::anyhow!("--test: {e}"))?;
    Ok(route_test::route_test(
        &config,
        &labels,
        jiff::Timestamp::now(),
    ))
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
    let request = match verb {
        None => ApiRequest::Get("/api/v1/incidents".into()),
        Some((verb, id)) => ApiRequest::Post(
            format!("/api/v1/incidents/{id}/{verb}"),
            serde_json::json!({ "by": by.map_or_else(whoami, str::to_owned) }),
        ),
    };
    relay_api(path, web_config, request).await
}

/// A call of the running relay's API: a path, and for a POST its JSON body.
#[derive(Debug, Clone)]
pub enum ApiRequest {
    Get(String),
    Post(String, serde_json::Value),
}

/// Calls the relay of the configuration file at `path` (its listener, TLS and `auth:`); the
/// answer's JSON, or an error with the relay's message.
pub async fn relay_api(
    path: &Path,
    web_config: Option<&Path>,
    request: ApiRequest,
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
    let http = http_client()?;
    let req = match request {
        ApiRequest::Get(p) => http.get(format!("{scheme}://{host}{p}")),
        ApiRequest::Post(p, body) => http.post(format!("{scheme}://{host}{p}")).json(&body),
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

/// What `maintenance` asks the relay.
#[derive(Debug, Clone)]
pub enum MaintenanceCommand {
    /// A new window from the form, created by `by` (default: $USER).
    Add {
        form: crate::model::maintenance::WindowForm,
        by: Option<String>,
    },
    List,
    End {
        id: i64,
        by: Option<String>,
    },
}

/// `maintenance add|list|end`: through the running relay's API, like `incidents`.
pub async fn maintenance_cli(
    path: &Path,
    web_config: Option<&Path>,
    command: &MaintenanceCommand,
) -> anyhow::Result<serde_json::Value> {
    let who = |by: &Option<String>| by.clone().unwrap_or_else(whoami);
    let request = match command {
        MaintenanceCommand::List => ApiRequest::Get("/api/v1/maintenance".into()),
        MaintenanceCommand::Add { form, by } => ApiRequest::Post(
            "/api/v1/maintenance".into(),
            serde_json::json!({
                "matchers": form.matchers,
                "start": form.start,
                "end": form.end,
                "duration": form.duration,
                "weekly": form.weekly,
                "reason": form.reason,
                "by": who(by),
            }),
        ),
        MaintenanceCommand::End { id, by } => ApiRequest::Post(
            format!("/api/v1/maintenance/{id}/end"),
            serde_json::json!({ "by": who(by) }),
        ),
    };
    relay_api(path, web_config, request).await
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

/// How `send-test`, `ack` and `incidents` print their result: lines for a human, or one JSON
/// document for a script (`--output json`; its shape is documented in docs/alert-relay.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    #[default]
    Plain,
    Json,
}

impl Output {
    pub fn parse(s: &str) -> Option<Output> {
        match s {
            "plain" => Some(Output::Plain),
            "json" => Some(Output::Json),
            _ => None,
        }
    }
}

/// `check-config`'s errors, one line each, each once: every error a validation found, or the
/// one that stopped it (a file that cannot be read or parsed, a web configuration).
pub fn config_errors(error: &anyhow::Error) -> Vec<String> {
    config::error_lines(error)
}

/// `send-test`'s report: one line per destination (`ops-sms/+447700900123: delivered`), or a
/// JSON document; and whether every destination took the message.
pub fn format_send_test(results: &[(String, channels::Outcome)], output: Output) -> (String, bool) {
    let ok = results
        .iter()
        .all(|(_, o)| matches!(o, channels::Outcome::Delivered { .. }));
    let text = match output {
        Output::Plain => results
            .iter()
            .map(|(dest, outcome)| format!("{dest}: {outcome}\n"))
            .collect(),
        Output::Json => {
            let each: Vec<serde_json::Value> = results
                .iter()
                .map(|(dest, o)| {
                    serde_json::json!({
                        "destination": dest,
                        "result": o.result(),
                        "reason": o.reason(),
                        "detail": o.detail(),
                    })
                })
                .collect();
            json_line(&serde_json::json!({ "ok": ok, "destinations": each }))
        }
    };
    (text, ok)
}

/// What `ack` (with `verb` `ack`, `unack`, `escalate` or `resolve`) did to incident `id`, from
/// the relay's API answer `v`.
pub fn format_action(verb: &str, id: i64, v: &serde_json::Value, output: Output) -> String {
    let changed = v["status"].as_str() == Some("ok");
    let count = |k: &str| match &v[k] {
        serde_json::Value::Array(a) => a.len() as u64,
        n => n.as_u64().unwrap_or(0),
    };
    match output {
        Output::Json => {
            let mut doc = serde_json::json!({ "incident": id, "action": verb, "changed": changed });
            if !changed {
                doc["state"] = v["state"].clone();
            } else if verb == "escalate" {
                doc["step"] = v["step"].clone();
                doc["deliveries"] = count("deliveries").into();
            } else {
                doc["previous_state"] = v["from"].clone();
                doc["notices"] = count("notices").into();
            }
            json_line(&doc)
        }
        Output::Plain if !changed => format!(
            "incident #{id}: nothing to do, it is already {}\n",
            state_words(v["state"].as_str().unwrap_or("in that state"))
        ),
        Output::Plain if verb == "escalate" => format!(
            "incident #{id} escalated to step {}: {} messages queued\n",
            v["step"],
            count("deliveries")
        ),
        Output::Plain => {
            let done = match verb {
                "unack" => "un-acknowledged",
                "resolve" => "resolved",
                _ => "acknowledged",
            };
            let from = state_words(v["from"].as_str().unwrap_or("?"));
            let notices = match count("notices") {
                0 => "no one else told".to_owned(),
                1 => "1 notice sent to where it was paged".to_owned(),
                n => format!("{n} notices sent to where it was paged"),
            };
            format!("incident #{id} {done} (was {from}); {notices}\n")
        }
    }
}

/// An incident state as a human reads it.
fn state_words(state: &str) -> &str {
    match state {
        "acked" => "acknowledged",
        other => other,
    }
}

/// `incidents`: one line per incident, newest first (`#12  open  PiHot  2 steps sent  CPU at
/// 85°C`),
/// or a JSON document with a fixed set of fields per incident.
pub fn format_incidents(v: &serde_json::Value, output: Output) -> String {
    let list = v["incidents"].as_array().map_or(&[][..], Vec::as_slice);
    if output == Output::Json {
        let each: Vec<serde_json::Value> = list
            .iter()
            .map(|i| {
                serde_json::json!({
                    "id": i["id"],
                    "state": i["state"],
                    "alertname": i["alertname"],
                    "summary": i["summary"],
                    "route": i["route"],
                    "policy": i["policy"],
                    "opened_at": i["opened_at_ms"].as_i64().map(|ms| time::format_rfc3339(ms * 1_000_000)),
                    "next_step": i["next_step"],
                    "acked_by": i["acked_by"],
                    "resolved_by": i["resolved_by"],
                    "storm": i["storm"],
                })
            })
            .collect();
        return json_line(&serde_json::json!({ "incidents": each }));
    }
    let mut out = String::new();
    for i in list {
        let s = |k: &str| i[k].as_str().unwrap_or("").to_owned();
        let who = match (i["acked_by"].as_str(), i["resolved_by"].as_str()) {
            (_, Some(r)) => format!("  (resolved by {r})"),
            (Some(a), None) => format!("  (acknowledged by {a})"),
            _ => String::new(),
        };
        let id = format!("#{}", i["id"]);
        // `next_step` indexes the schedule: that many sends are behind the incident.
        let sent = match i["next_step"].as_i64().unwrap_or(0) {
            1 => "1 step sent".to_owned(),
            n => format!("{n} steps sent"),
        };
        out.push_str(&format!(
            "{id:<7} {:<12} {:<24} {sent:<13} {}{who}\n",
            state_words(&s("state")),
            s("alertname"),
            s("summary"),
        ));
    }
    if out.is_empty() {
        out.push_str("no incidents\n");
    }
    out
}

/// One JSON document on one line.
fn json_line(v: &serde_json::Value) -> String {
    format!("{v}\n")
}

/// What `maintenance` prints: the windows (`list`), the window created (`add`) or the one
/// ended (`end`), from the relay's API answer `v`.
pub fn format_maintenance(
    command: &MaintenanceCommand,
    v: &serde_json::Value,
    output: Output,
) -> String {
    match (command, output) {
        (MaintenanceCommand::List, Output::Json) => {
            let list = v["windows"].as_array().map_or(&[][..], Vec::as_slice);
            let each: Vec<serde_json::Value> = list.iter().map(window_doc).collect();
            json_line(&serde_json::json!({ "windows": each }))
        }
        (MaintenanceCommand::List, Output::Plain) => {
            let list = v["windows"].as_array().map_or(&[][..], Vec::as_slice);
            let lines: String = list.iter().map(window_line).collect();
            if lines.is_empty() {
                "no maintenance windows\n".to_owned()
            } else {
                lines
            }
        }
        (MaintenanceCommand::Add { .. }, Output::Json) => {
            json_line(&serde_json::json!({ "window": window_doc(&v["window"]) }))
        }
        (MaintenanceCommand::Add { .. }, Output::Plain) => {
            format!("created: {}", window_line(&v["window"]))
        }
        (MaintenanceCommand::End { id, .. }, Output::Json) => {
            json_line(&serde_json::json!({ "window": id, "ended": true }))
        }
        (MaintenanceCommand::End { id, .. }, Output::Plain) => {
            format!("maintenance window #{id} ended; what it held pages as usual\n")
        }
    }
}

/// One window of the API's answer with a fixed set of fields (`--output json`).
fn window_doc(w: &serde_json::Value) -> serde_json::Value {
    let at = |k: &str| w[k].as_i64().map(|ms| time::format_rfc3339(ms * 1_000_000));
    serde_json::json!({
        "id": w["id"],
        "matchers": w["matchers_text"],
        "start": at("starts_ms"),
        "end": at("ends_ms"),
        "weekly": w["weekly"],
        "active": w["active"],
        "occurrence": w["occurrence"],
        "reason": w["reason"],
        "author": w["author"],
        "ended_at": at("ended_ms"),
        "ended_by": w["ended_by"],
        "suppressed": w["suppressed"],
    })
}

/// One window as a line: `#3  in force  {site="a"}  2026-12-08T20:00:00Z → …  weekly  2
/// suppressed  power work (alice)`.
fn window_line(w: &serde_json::Value) -> String {
    let at = |ms: Option<i64>| {
        ms.map_or_else(|| "?".to_owned(), |ms| time::format_rfc3339(ms * 1_000_000))
    };
    let (start, end) = match w["occurrence"].as_object() {
        Some(o) => (o["start_ms"].as_i64(), o["end_ms"].as_i64()),
        None => (
            w["starts_ms"].as_i64(),
            w["ended_ms"].as_i64().or(w["ends_ms"].as_i64()),
        ),
    };
    let state = match (w["active"].as_bool(), w["occurrence"].is_null()) {
        (Some(true), _) => "in force",
        (_, true) => "over",
        _ => "to come",
    };
    let weekly = if w["weekly"].as_bool() == Some(true) {
        "  weekly"
    } else {
        ""
    };
    format!(
        "#{:<4} {state:<9} {}  {} → {}{weekly}  {} suppressed  {} ({})\n",
        w["id"].as_i64().unwrap_or(0),
        w["matchers_text"].as_str().unwrap_or(""),
        at(start),
        at(end),
        w["suppressed"].as_i64().unwrap_or(0),
        w["reason"].as_str().unwrap_or(""),
        w["author"].as_str().unwrap_or(""),
    )
}

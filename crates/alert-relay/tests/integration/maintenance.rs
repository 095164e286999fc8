//! Maintenance windows through the binary: created by the API and the CLI, a matching alert
//! stored but not paged while a non-matching one pages, the held alert paging once the window
//! is ended, one resolved meanwhile never paging, and the metrics.

use std::process::Command;
use std::time::Duration;

use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, binary, client, postgres, tempdir};

fn config(fake: &Fake) -> String {
    format!(
        "auth: {{ bearer_token: s3cret }}\nstorage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
         channels:\n  a: {{ type: webhook, url: '{u}/a' }}\n\
         policies:\n  p:\n    steps: [ {{ notify: [a] }} ]\n\
         routes: [ {{ policy: p }} ]\n",
        u = fake.url()
    )
}

/// A webhook of one alert of its own group (`fp`) at `site`.
fn alert(fp: &str, site: &str, status: &str) -> String {
    let ends = if status == "resolved" {
        "2026-03-01T12:45:00Z"
    } else {
        "0001-01-01T00:00:00Z"
    };
    format!(
        r#"{{"version":"4","groupKey":"{{}}:{{fp=\"{fp}\"}}","truncatedAlerts":0,"status":"{status}","receiver":"relay",
        "groupLabels":{{"fp":"{fp}"}},"commonLabels":{{}},"commonAnnotations":{{}},"externalURL":"http://alertmanager:9093",
        "alerts":[{{"status":"{status}","labels":{{"alertname":"PiHot","fp":"{fp}","site":"{site}"}},
        "annotations":{{"summary":"hot at {site} on {fp}"}},"startsAt":"2026-03-01T12:30:00Z","endsAt":"{ends}",
        "generatorURL":"http://prometheus:9090/graph","fingerprint":"{fp}"}}]}}"#
    )
}

/// The fingerprints the fake was sent, in order.
fn paged(fake: &Fake) -> Vec<String> {
    fake.received()
        .iter()
        .map(|r| {
            let text = r.body.clone();
            let text = String::from_utf8_lossy(&text);
            ["a1", "b1", "c1"]
                .into_iter()
                .find(|fp| text.contains(&format!("on {fp}")))
                .unwrap_or("?")
                .to_owned()
        })
        .collect()
}

async fn api(relay: &Relay, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let http = client();
    let req = match method {
        "GET" => http.get(relay.url(path)),
        _ => http
            .post(relay.url(path))
            .header("content-type", "application/json")
            .body(body.to_owned()),
    };
    let r = req.bearer_auth("s3cret").send().await.expect("api");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// The relay's configuration with its real address, for the CLI.
fn cli_config(dir: &std::path::Path, relay: &Relay) -> std::path::PathBuf {
    let text = std::fs::read_to_string(dir.join("relay.yml"))
        .expect("config")
        .replace("127.0.0.1:0", &relay.url("").replace("http://", ""));
    let path = dir.join("cli.yml");
    std::fs::write(&path, text).expect("cli config");
    path
}

fn cli(args: &[&str], config: &std::path::Path) -> (bool, String, String) {
    let out = Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_window_holds_matching_alerts_until_it_ends_and_then_they_page() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake));
    let form = r#"{"matchers": "{site=\"lab\"}", "duration": "3d", "reason": "rewiring the lab", "by": "alice"}"#;
    // The relay's auth, and a form it refuses says why.
    let r = client()
        .post(relay.url("/api/v1/maintenance"))
        .body(form)
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 401);
    let bad = r#"{"matchers": "{site=\"lab\"}", "end": "2020-01-01T00:00:00Z", "reason": "x"}"#;
    let (status, v) = api(&relay, "POST", "/api/v1/maintenance", bad).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["message"].as_str().unwrap_or("").contains("ends"), "{v}");
    let (status, v) = api(
        &relay,
        "POST",
        "/api/v1/maintenance",
        r#"{"matchers": "", "duration": "1h", "reason": "x"}"#,
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap_or("").contains("no matchers"),
        "{v}"
    );

    let (status, v) = api(&relay, "POST", "/api/v1/maintenance", form).await;
    assert_eq!(status, 201, "{v}");
    let id = v["window"]["id"].as_i64().expect("id");
    assert_eq!(v["window"]["active"], true);
    assert_eq!(v["window"]["author"], "alice");
    assert_eq!(v["window"]["matchers_text"], r#"{site="lab"}"#);

    // A matching alert, one that matches not, and a matching one that resolves in the window.
    relay.fire(alert("a1", "lab", "firing")).await;
    relay.fire(alert("b1", "prod", "firing")).await;
    relay.fire(alert("c1", "lab", "firing")).await;
    fake.wait_for(1, Duration::from_secs(5)).await;
    relay.fire(alert("c1", "lab", "resolved")).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        paged(&fake),
        ["b1"],
        "only the alert outside the window pages"
    );
    // Stored and shown, marked as held by the window.
    let (_, list) = api(&relay, "GET", "/api/v1/incidents", "").await;
    let incidents = list["incidents"].as_array().expect("incidents");
    assert_eq!(incidents.len(), 3, "{list}");
    let held: Vec<i64> = incidents
        .iter()
        .filter(|i| i["maintenance"] == id)
        .map(|i| i["id"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(held.len(), 2, "{list}");
    relay
        .wait_metric("alert_relay_maintenance_windows_active", 1.0)
        .await;
    relay
        .wait_metric(
            &format!("alert_relay_maintenance_suppressed_total{{window=\"{id}\"}}"),
            2.0,
        )
        .await;

    // Ended with the CLI: the still-firing alert pages, the resolved one never does.
    let cfg = cli_config(dir.path(), &relay);
    let (ok, out, err) = cli(
        &["maintenance", "end", &id.to_string(), "--by", "bob"],
        &cfg,
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains(&format!("window #{id} ended")), "{out}");
    fake.wait_for(2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(paged(&fake), ["b1", "a1"]);
    relay
        .wait_metric("alert_relay_maintenance_windows_active", 0.0)
        .await;
    assert_eq!(
        relay
            .metric(&format!(
                "alert_relay_maintenance_suppressed_total{{window=\"{id}\"}}"
            ))
            .await,
        2.0
    );
    let (ok, out, err) = cli(&["maintenance", "end", &id.to_string()], &cfg);
    assert!(!ok, "ending twice: {out}");
    assert!(err.contains("no maintenance window"), "{err}");
    let (ok, out, _) = cli(&["maintenance", "list", "--output", "json"], &cfg);
    assert!(ok, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    let w = &v["windows"][0];
    assert_eq!(
        (w["id"].as_i64(), w["ended_by"].as_str()),
        (Some(id), Some("bob"))
    );
    assert_eq!(
        (w["active"].as_bool(), w["suppressed"].as_i64()),
        (Some(false), Some(2))
    );
}

#[tokio::test]
async fn the_cli_adds_and_lists_windows_and_reports_what_the_relay_refuses() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake));
    let cfg = cli_config(dir.path(), &relay);
    let (ok, out, err) = cli(
        &[
            "maintenance",
            "add",
            "--matchers",
            "site=\"lab\", severity=~\"warn.*\"",
            "--duration",
            "8d",
            "--weekly",
            "--reason",
            "backups",
        ],
        &cfg,
    );
    assert!(!ok, "{out}");
    assert!(
        err.contains("a weekly window lasts at most 7 days"),
        "{err}"
    );
    let (ok, out, err) = cli(
        &[
            "maintenance",
            "add",
            "--matchers",
            "site=\"lab\"",
            "--start",
            "2099-01-05T22:00:00Z",
            "--end",
            "2099-01-06T02:00:00Z",
            "--weekly",
            "--reason",
            "backups",
            "--by",
            "carol",
        ],
        &cfg,
    );
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("created: #1"), "{out}");
    assert!(
        out.contains("to come") && out.contains("weekly") && out.contains("backups (carol)"),
        "{out}"
    );
    let (ok, out, _) = cli(&["maintenance", "list"], &cfg);
    assert!(ok, "{out}");
    assert!(
        out.contains("{site=\"lab\"}  2099-01-05T22:00:00Z → 2099-01-06T02:00:00Z"),
        "{out}"
    );
    // Not in force yet: a matching alert pages.
    relay.fire(alert("a1", "lab", "firing")).await;
    fake.wait_for(1, Duration::from_secs(5)).await;
    relay
        .wait_metric("alert_relay_maintenance_windows_active", 0.0)
        .await;
}

/// Two relays on one PostgreSQL: a window created on the follower holds what the leader takes
/// in within a few seconds, its count shows on both, and ending it on the follower makes the
/// leader page what it held.
#[tokio::test]
async fn a_window_made_on_one_instance_holds_on_the_other() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let pg = postgres("maintenance_ha");
    let rest = config(&fake).replace(
        "storage: { sqlite: relay.db }",
        &format!("storage: {}", pg.storage),
    );
    let dirs = (tempdir(), tempdir());
    let leader = Relay::start(dirs.0.path(), &rest);
    leader.wait_metric("alert_relay_leader", 1.0).await;
    let follower = Relay::start(dirs.1.path(), &rest);
    let form =
        r#"{"matchers": "site=\"lab\"", "duration": "2h", "reason": "rewiring", "by": "alice"}"#;
    let (status, v) = api(&follower, "POST", "/api/v1/maintenance", form).await;
    assert_eq!(status, 201, "{v}");
    let id = v["window"]["id"].as_i64().expect("id");
    // Every instance reads the windows again within `maintenance::REFRESH_EVERY` (2 s).
    leader
        .wait_metric("alert_relay_maintenance_windows_active", 1.0)
        .await;
    leader.fire(alert("a1", "lab", "firing")).await;
    leader.fire(alert("b1", "prod", "firing")).await;
    fake.wait_for(1, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(paged(&fake), ["b1"]);
    let suppressed = format!("alert_relay_maintenance_suppressed_total{{window=\"{id}\"}}");
    follower.wait_metric(&suppressed, 1.0).await;
    let (status, v) = api(
        &follower,
        "POST",
        &format!("/api/v1/maintenance/{id}/end"),
        "{}",
    )
    .await;
    assert_eq!(status, 200, "{v}");
    fake.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(paged(&fake), ["b1", "a1"]);
    leader
        .wait_metric("alert_relay_maintenance_windows_active", 0.0)
        .await;
}

/// Incidents held by a window count toward no storm: four alerts of a site in maintenance
/// (over a storm threshold of 2) make no storm, and once the window ends each pages on its own.
#[tokio::test]
async fn held_incidents_count_toward_no_storm() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let storm = config(&fake).replace(
        "steps: [ { notify: [a] } ]",
        "steps: [ { notify: [a] } ]\n    storm: { window: 1m, threshold: 2, group_by: [site] }",
    );
    let relay = Relay::start(dir.path(), &storm);
    let form = r#"{"matchers": "site=\"lab\"", "duration": "1h", "reason": "rewiring"}"#;
    let (status, v) = api(&relay, "POST", "/api/v1/maintenance", form).await;
    assert_eq!(status, 201, "{v}");
    let id = v["window"]["id"].as_i64().expect("id");
    for fp in ["l1", "l2", "l3", "l4"] {
        relay.fire(alert(fp, "lab", "firing")).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(fake.received().is_empty(), "{:?}", fake.received());
    assert_eq!(
        relay.metric("alert_relay_storms_total{policy=\"p\"}").await,
        0.0
    );
    let (status, _) = api(&relay, "POST", &format!("/api/v1/maintenance/{id}/end"), "").await;
    assert_eq!(status, 200);
    let got = fake.wait_for(4, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        fake.received().len(),
        4,
        "one message each, no storm summary"
    );
    let mut summaries: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["alert"]["annotations"]["summary"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    summaries.sort();
    assert_eq!(
        summaries,
        [
            "hot at lab on l1",
            "hot at lab on l2",
            "hot at lab on l3",
            "hot at lab on l4"
        ]
    );
    assert_eq!(
        relay.metric("alert_relay_storms_total{policy=\"p\"}").await,
        0.0
    );
}

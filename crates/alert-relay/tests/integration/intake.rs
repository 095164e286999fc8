//! The webhook contract: status codes, JSON errors, auth, dedup, metrics, CLI.

use std::time::Duration;

use base64::Engine as _;

use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, client, tempdir, webhook};

fn config(fake: &Fake, auth: &str) -> String {
    format!(
        "{auth}storage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
         channels: {{ hook: {{ type: webhook, url: '{}/hook' }} }}\n\
         policies: {{ default: {{ steps: [ {{ notify: [hook] }} ] }} }}\n\
         routes: [ {{ name: pinned, match: {{ team: nobody }}, policy: default }}, {{ match: {{ team: other }}, policy: default }} ]\n",
        fake.url()
    )
}

#[tokio::test]
async fn status_codes_and_json_errors() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    std::fs::write(dir.path().join("token"), "t0ken\n").expect("token");
    let relay = Relay::start(
        dir.path(),
        &config(&fake, "auth: { bearer_token_file: token }\n"),
    );
    let c = client();
    let post = |token: Option<&str>, path: &str, body: String| {
        let mut r = c
            .post(relay.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let body = webhook(&[("aaaaaaaaaaaaaaa1", "firing")], "");

    let r = post(None, "/webhook", body.clone()).await.expect("send");
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = post(Some("wrong"), "/webhook", body.clone())
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    let j: serde_json::Value = r.json().await.expect("json error");
    assert_eq!(j["error"], "unauthorized");

    let r = post(Some("t0ken"), "/webhook", "{not json".into())
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["error"],
        "malformed"
    );
    let r = post(
        Some("t0ken"),
        "/webhook",
        body.replace(r#""version":"4""#, r#""version":"3""#),
    )
    .await
    .expect("send");
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<serde_json::Value>().await.expect("json")["error"],
        "wrong_version"
    );
    let r = post(Some("t0ken"), "/webhook/nosuchroute", body.clone())
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    let r = c.get(relay.url("/webhook")).send().await.expect("send");
    assert_eq!(r.status(), 405);
    // Refused on the declared length, before a byte of the body is read. (Raw TCP: a client
    // still writing the body when the 413 and the close arrive may see EPIPE instead.)
    let addr = relay.addr;
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        s.write_all(b"POST /webhook HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t0ken\r\nContent-Length: 2000000\r\n\r\n")
            .expect("head");
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).expect("read");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    })
    .await
    .expect("join");
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too_large"), "{answer}");

    // Accepted, then the same alert again (an HA peer or a retry) is a duplicate.
    let r = post(Some("t0ken"), "/webhook/pinned", body.clone())
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let j: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        (j["accepted"].as_u64(), j["duplicates"].as_u64()),
        (Some(1), Some(0))
    );
    let r = post(Some("t0ken"), "/webhook", body.clone())
        .await
        .expect("send");
    let j: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        (j["accepted"].as_u64(), j["duplicates"].as_u64()),
        (Some(0), Some(1))
    );

    // Pinned to a route whose matchers do not match: delivered anyway, exactly once.
    let got = fake.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].json()["alert"]["fingerprint"], "aaaaaaaaaaaaaaa1");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.received().len(), 1);

    relay
        .wait_metric(
            "alert_relay_notifications_delivered_total{channel=\"hook\",integration=\"webhook\",destination=\"hook\"}",
            1.0,
        )
        .await;
    relay
        .wait_metric(
            "alert_relay_queue_depth{channel=\"hook\",integration=\"webhook\",destination=\"hook\"}",
            0.0,
        )
        .await;
    let m = relay.metrics().await;
    for line in [
        "alert_relay_webhooks_rejected_total{reason=\"unauthorized\"} 2",
        "alert_relay_webhooks_rejected_total{reason=\"malformed\"} 1",
        "alert_relay_webhooks_rejected_total{reason=\"wrong_version\"} 1",
        "alert_relay_webhooks_rejected_total{reason=\"too_large\"} 1",
        "alert_relay_webhooks_rejected_total{reason=\"unknown_route\"} 1",
        "alert_relay_alerts_deduplicated_total 1",
        "alert_relay_notifications_delivered_total{channel=\"hook\",integration=\"webhook\",destination=\"hook\"} 1",
        "alert_relay_queue_depth{channel=\"hook\",integration=\"webhook\",destination=\"hook\"} 0",
        "alert_relay_storage_commit_duration_seconds_count",
    ] {
        assert!(m.contains(line), "missing {line:?} in\n{m}");
    }
    assert!(m.ends_with("# EOF\n"));
    let r = c.get(relay.url("/healthz")).send().await.expect("healthz");
    assert_eq!(r.status(), 200);
    assert!(
        !relay
            .log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains("t0ken")),
        "a secret reached the log"
    );
}

#[tokio::test]
async fn basic_auth() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &config(&fake, "auth: { basic: { username: am, password: pw } }\n"),
    );
    let body = webhook(&[("aaaaaaaaaaaaaaa2", "firing")], "");
    let enc = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    for (cred, status) in [("am:pw", 200), ("am:px", 401), ("xx:pw", 401)] {
        let r = client()
            .post(relay.url("/webhook"))
            .header("authorization", enc(cred))
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), status, "{cred}");
    }
}

#[test]
fn check_config_prints_the_routing_and_rejects_bad_files() {
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    std::fs::write(
        &path,
        "storage: { sqlite: relay.db }\nchannels: { hook: { type: webhook, url: 'http://127.0.0.1:1/x' } }\n\
         policies: { default: { steps: [ { notify: [hook] } ] } }\nroutes: [ { match: { severity: critical }, policy: default } ]\n",
    )
    .expect("write");
    let out = std::process::Command::new(crate::support::binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1. {severity=\"critical\"} -> policy default -> hook"),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: no route matches every alert"),
        "{stdout}"
    );
    std::fs::write(&path, "storage: { sqlite: relay.db }\nchanels: {}\n").expect("write");
    let out = std::process::Command::new(crate::support::binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("chanels"), "{stderr}");
}

#[tokio::test]
async fn send_test_reaches_the_channel() {
    let fake = Fake::start(Reply::new(200, "ok")).await;
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    std::fs::write(
        &path,
        format!(
            "storage: {{ sqlite: relay.db }}\nchannels: {{ s: {{ type: slack, webhook_url: 'https://hooks.slack.com/services/T/B/X', api_url: '{}' }} }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [s] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
            fake.url()
        ),
    )
    .expect("write");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(crate::support::binary())
            .args(["send-test", "--channel", "s", "--config"])
            .arg(&path)
            .output()
    })
    .await
    .expect("join")
    .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = fake.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, "/services/T/B/X");
    assert!(
        got[0].json()["text"]
            .as_str()
            .expect("text")
            .contains("AlertRelayTest")
    );
}

#[tokio::test]
async fn sighup_reloads_routing_and_sigterm_stops_cleanly() {
    let first = Fake::start(Reply::new(200, "")).await;
    let second = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&first, ""));
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("0000000000000aa1", "firing")], ""))
            .await
            .0,
        200
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(first.received().is_empty(), "no route matched");
    std::fs::write(
        dir.path().join("relay.yml"),
        format!(
            "listen: 127.0.0.1:0\nstorage: {{ sqlite: relay.db }}\nchannels: {{ two: {{ type: webhook, url: '{}/two' }} }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [two] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
            second.url()
        ),
    )
    .expect("rewrite");
    let _ = std::process::Command::new("kill")
        .arg("-HUP")
        .arg(relay.child.id().to_string())
        .status();
    relay.wait_log("configuration reloaded").await;
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("0000000000000aa2", "firing")], ""))
            .await
            .0,
        200
    );
    let got = second.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].path, "/two");
    assert_eq!(
        relay
            .metric("alert_relay_config_last_reload_successful")
            .await,
        1.0
    );
    // Blocking wait off the runtime, so this test's own client connections can close.
    let status = tokio::task::spawn_blocking(move || relay.terminate())
        .await
        .expect("join");
    assert!(status.success(), "{status}");
}

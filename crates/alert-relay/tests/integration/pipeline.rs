//! Staying honest: the dead-man's switch and re-sync, through the real binary and the real
//! Alertmanager; and a reload that changes `public_url`.

use std::time::Duration;

use crate::alertmanager::alertmanager_with;
use crate::support::{Fake, Relay, Reply, client, on_a_free_port, tempdir, webhook};

/// Watchdog heartbeats posted straight to the relay: consumed, never delivered; silence trips
/// the switch once, a heartbeat recovers it.
#[tokio::test]
async fn deadman_trips_and_recovers_through_the_binary() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &format!(
            "storage: {{ sqlite: relay.db }}\n\
             channels: {{ hook: {{ type: webhook, url: '{u}/h' }}, ops: {{ type: webhook, url: '{u}/ops' }} }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n\
             deadman: {{ timeout: 5s, notify: [ops], match: {{ alertname: PiHot }} }}\n",
            u = fake.url()
        ),
    );
    let beat = webhook(&[("aa01", "firing")], "");
    // Beats 0.8 s apart keep a 5 s switch quiet even when a loaded runner oversleeps.
    for _ in 0..3 {
        let (status, body) = relay.post("/webhook", beat.clone()).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"heartbeats\":1"), "{body}");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert!(fake.received().is_empty(), "heartbeats are never delivered");
    assert!(
        relay
            .metric("alert_relay_deadman_last_heartbeat_timestamp_seconds")
            .await
            > 1.7e9
    );
    let got = fake.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].path, "/ops");
    let down = got[0].json();
    assert_eq!(down["status"], "firing");
    assert_eq!(
        down["alert"]["labels"]["alertname"],
        "MonitoringPipelineDown"
    );
    assert!(
        down["text"]
            .as_str()
            .unwrap_or("")
            .contains("Last heartbeat: PiHot from http://alertmanager:9093"),
        "{down}"
    );
    relay.wait_metric("alert_relay_deadman_tripped", 1.0).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fake.received().len(), 1, "trips once");
    relay.post("/webhook", beat).await;
    let got = fake.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].path, "/ops");
    assert_eq!(got[1].json()["status"], "resolved");
    relay.wait_metric("alert_relay_deadman_tripped", 0.0).await;
}

/// The real Alertmanager: its Watchdog keeps the switch quiet, a silence makes re-sync
/// resolve the incident, and stopping Alertmanager trips the switch.
#[tokio::test]
async fn real_alertmanager_heartbeats_resync_and_silence() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    // Alertmanager needs the relay's address and the relay Alertmanager's: pick the relay's
    // port first (and another one, with a new Alertmanager, if it is taken meanwhile).
    let (am, api, relay) = on_a_free_port(async |relay_port| {
        let webhook_url = format!("http://127.0.0.1:{relay_port}/webhook");
        let (am, api) = alertmanager_with(dir.path(), &webhook_url, "1s").await;
        let am_base = api.trim_end_matches("/api/v2/alerts").to_owned();
        let config = dir.path().join("relay.yml");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{relay_port}\nstorage: {{ sqlite: relay.db }}\n\
                 channels: {{ hook: {{ type: webhook, url: '{u}/h' }}, ops: {{ type: webhook, url: '{u}/ops' }} }}\n\
                 policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n\
                 deadman: {{ timeout: 4s, notify: [ops] }}\n\
                 alertmanager: {{ url: '{am_base}', interval: 1s }}\n",
                u = fake.url()
            ),
        )
        .expect("config");
        Relay::try_start_file(&config).map(|relay| (am, api, relay))
    })
    .await;
    let am_base = api.trim_end_matches("/api/v2/alerts").to_owned();
    let c = client();
    let r = c
        .post(&api)
        .json(&serde_json::json!([
            { "labels": { "alertname": "Watchdog", "severity": "none" }, "endsAt": "2099-01-01T00:00:00Z" },
            { "labels": { "alertname": "PiUndervoltage", "instance": "pi-7:9831" }, "endsAt": "2099-01-01T00:00:00Z" },
        ]))
        .send()
        .await
        .expect("post alerts");
    assert!(r.status().is_success());
    let got = fake.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].path, "/h");
    assert_eq!(
        got[0].json()["alert"]["labels"]["alertname"],
        "PiUndervoltage"
    );
    // Re-sync keeps the incident while Alertmanager has the alert; heartbeats keep the switch
    // quiet beyond its timeout.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(fake.received().len(), 1, "{:#?}", fake.received());
    relay
        .wait_metric_above(
            "alert_relay_deadman_last_heartbeat_timestamp_seconds",
            1.7e9,
        )
        .await;
    relay
        .wait_metric_above("alert_relay_resync_last_success_timestamp_seconds", 1.7e9)
        .await;
    let incidents = c
        .get(relay.url("/api/v1/incidents"))
        .send()
        .await
        .expect("incidents")
        .json::<serde_json::Value>()
        .await
        .expect("json");
    assert_eq!(incidents["incidents"][0]["state"], "open");

    // A human silences it in Alertmanager: no resolved notification comes, re-sync resolves.
    let r = c
        .post(format!("{am_base}/api/v2/silences"))
        .json(&serde_json::json!({
            "matchers": [ { "name": "alertname", "value": "PiUndervoltage", "isRegex": false, "isEqual": true } ],
            "startsAt": "2020-01-01T00:00:00Z",
            "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "test",
            "comment": "maintenance",
        }))
        .send()
        .await
        .expect("silence");
    assert!(r.status().is_success(), "{:?}", r.text().await);
    let got = fake.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].path, "/h");
    let text = got[1].json()["text"].as_str().unwrap_or("").to_owned();
    assert!(
        text.contains("resolved by re-sync (Alertmanager no longer has this alert)"),
        "{text}"
    );

    // Alertmanager stops: the switch trips within its timeout, re-sync counts errors.
    drop(am);
    let got = fake.wait_for(3, Duration::from_secs(10)).await;
    assert_eq!(got[2].path, "/ops");
    assert_eq!(
        got[2].json()["alert"]["labels"]["alertname"],
        "MonitoringPipelineDown"
    );
    relay
        .wait_metric_above("alert_relay_resync_errors_total", 1.0)
        .await;
    assert!(
        fake.received()
            .iter()
            .all(|r| !r.json().to_string().contains("\"Watchdog\"")),
        "the Watchdog itself is never delivered"
    );
}

/// SIGHUP picks up a new `public_url`: links made after the reload use it.
#[tokio::test]
async fn sighup_changes_public_url_for_new_links() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let config = |public: &str| {
        format!(
            "listen: 127.0.0.1:0\npublic_url: {public}\nstorage: {{ sqlite: relay.db }}\n\
             channels: {{ hook: {{ type: webhook, url: '{}/h' }} }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
            fake.url()
        )
    };
    let path = dir.path().join("relay.yml");
    std::fs::write(&path, config("http://old.invalid")).expect("config");
    let relay = Relay::start_file(&path);
    let link = |r: &crate::support::Received| {
        r.json()["links"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["name"] == "Acknowledge #1"))
            .and_then(|l| l["url"].as_str())
            .unwrap_or_default()
            .to_owned()
    };
    relay
        .post("/webhook", webhook(&[("00000000000000b1", "firing")], ""))
        .await;
    let got = fake.wait_for(1, Duration::from_secs(5)).await;
    assert!(
        link(&got[0]).starts_with("http://old.invalid/ack/1."),
        "{}",
        link(&got[0])
    );
    std::fs::write(&path, config("https://new.example/relay/")).expect("config");
    let _ = std::process::Command::new("kill")
        .args(["-HUP", &relay.child.id().to_string()])
        .status();
    relay.wait_log("configuration reloaded").await;
    // Another alert of the same group: a new message of incident #1, with the new link.
    relay
        .post("/webhook", webhook(&[("00000000000000b2", "firing")], ""))
        .await;
    let got = fake.wait_for(2, Duration::from_secs(5)).await;
    assert!(
        link(&got[1]).starts_with("https://new.example/relay/ack/1."),
        "{}",
        link(&got[1])
    );
}

//! Delivery engine behaviour seen from outside: rate limits, dead letters after max_attempts,
//! queue metrics while a destination waits, and a Retry-After wait that survives a restart.

use std::time::Duration;

use crate::support::{Fake, Relay, Reply, tempdir, wait_db, webhook};

fn config(fake: &Fake, channel_extra: &str, delivery: &str) -> String {
    format!(
        "storage: {{ sqlite: relay.db }}\ndelivery: {{ initial_backoff: 50ms, max_backoff: 200ms{delivery} }}\n\
         channels: {{ hook: {{ type: webhook, url: '{}/h'{channel_extra} }} }}\n\
         policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
        fake.url()
    )
}

#[tokio::test]
async fn the_token_bucket_paces_a_destination() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &config(&fake, ", rate_limit: { per_second: 4, burst: 1 }", ""),
    );
    let alerts: Vec<(String, &str)> = (0..4)
        .map(|i| (format!("00000000000001a{i}"), "firing"))
        .collect();
    let alerts: Vec<(&str, &str)> = alerts.iter().map(|(f, s)| (f.as_str(), *s)).collect();
    assert_eq!(relay.post("/webhook", webhook(&alerts, "")).await.0, 200);
    fake.wait_for(4, Duration::from_secs(5)).await;
    let at = fake.received_at();
    let spread = at[3] - at[0];
    // Nominally 750 ms; the fake stamps arrivals, so scheduling jitter on a loaded runner can
    // only shift each stamp a little. Unpaced, four sends arrive within a few milliseconds.
    assert!(
        spread >= Duration::from_millis(600),
        "4 messages at 4/s with burst 1 took only {spread:?}"
    );
}

#[tokio::test]
async fn dead_letter_after_max_attempts_with_queue_metrics_meanwhile() {
    let fake = Fake::start(Reply::new(503, "down")).await;
    fake.script([Reply::new(503, "down").header("retry-after", "4")]);
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake, "", ", max_attempts: 3"));
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000001b1", "firing")], ""))
            .await
            .0,
        200
    );
    fake.wait_for(1, Duration::from_secs(5)).await;
    // Inside the 4 s Retry-After wait (a wide window, so a slow runner still samples it).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        relay
            .metric("alert_relay_queue_depth{channel=\"hook\",integration=\"webhook\",destination=\"hook\"}")
            .await,
        1.0
    );
    let age = relay
        .metric("alert_relay_queue_oldest_age_seconds{channel=\"hook\",integration=\"webhook\",destination=\"hook\"}")
        .await;
    assert!(age >= 1.0, "oldest age {age}");
    fake.wait_for(3, Duration::from_secs(10)).await;
    let at = fake.received_at();
    assert!(
        at[1] - at[0] >= Duration::from_millis(3900),
        "Retry-After: 4 was not honoured: {:?}",
        at[1] - at[0]
    );
    relay
        .wait_metric(
            r#"alert_relay_notifications_dead_lettered_total{channel="hook",integration="webhook",destination="hook",reason="server_error"}"#,
            1.0,
        )
        .await;
    // The counter moves before the result is committed; the queue empties after.
    relay
        .wait_metric(
            r#"alert_relay_queue_depth{channel="hook",integration="webhook",destination="hook"}"#,
            0.0,
        )
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.received().len(), 3, "no attempt after max_attempts");
}

#[tokio::test]
async fn a_retry_wait_survives_a_restart() {
    let fake = Fake::start(Reply::new(200, "")).await;
    fake.script([Reply::new(429, "slow down").header("retry-after", "3")]);
    let dir = tempdir();
    let cfg = config(&fake, "", "");
    let relay = Relay::start(dir.path(), &cfg);
    assert_eq!(
        relay
            .post("/webhook", webhook(&[("00000000000001c1", "firing")], ""))
            .await
            .0,
        200
    );
    fake.wait_for(1, Duration::from_secs(5)).await;
    // Crash once the attempt's result (next attempt in 3 s) is committed.
    wait_db(
        &dir.path().join("relay.db"),
        "SELECT COUNT(*) FROM deliveries WHERE attempts = 1 AND state = 'pending'",
        Duration::from_secs(10),
    )
    .await;
    relay.kill9();
    let relay = Relay::start(dir.path(), &cfg);
    let got = fake.wait_for(2, Duration::from_secs(10)).await;
    let at = fake.received_at();
    assert!(
        at[1] - at[0] >= Duration::from_millis(2900),
        "resumed too early: {:?}",
        at[1] - at[0]
    );
    assert_eq!(
        got[0].header("idempotency-key"),
        got[1].header("idempotency-key")
    );
    relay
        .wait_metric(
            "alert_relay_notifications_delivered_total{channel=\"hook\",integration=\"webhook\",destination=\"hook\"}",
            1.0,
        )
        .await;
}

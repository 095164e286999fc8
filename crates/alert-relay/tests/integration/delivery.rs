//! Delivery engine behaviour seen from outside: rate limits, dead letters after max_attempts,
//! queue metrics while a destination waits, and a Retry-After wait that survives a restart.

use std::time::Duration;

use crate::support::{Fake, Relay, Reply, tempdir, webhook};

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
    assert!(
        spread >= Duration::from_millis(700),
        "4 messages at 4/s with burst 1 took only {spread:?}"
    );
}

#[tokio::test]
async fn dead_letter_after_max_attempts_with_queue_metrics_meanwhile() {
    let fake = Fake::start(Reply::new(503, "down")).await;
    fake.script([Reply::new(503, "down").header("retry-after", "2")]);
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
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        relay
            .metric("alert_relay_queue_depth{channel=\"webhook\",destination=\"hook\"}")
            .await,
        1.0
    );
    let age = relay
        .metric("alert_relay_queue_oldest_age_seconds{channel=\"webhook\",destination=\"hook\"}")
        .await;
    assert!(age >= 1.0, "oldest age {age}");
    assert_eq!(fake.received().len(), 1, "Retry-After: 2 was not honoured");
    fake.wait_for(3, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fake.received().len(), 3, "no attempt after max_attempts");
    let m = relay.metrics().await;
    assert!(m.contains(r#"alert_relay_notifications_dead_lettered_total{channel="hook",destination="hook",reason="server_error"} 1"#), "{m}");
    assert!(
        m.contains(r#"alert_relay_queue_depth{channel="webhook",destination="hook"} 0"#),
        "{m}"
    );
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
    // Let the attempt's result (next attempt in 3 s) be committed, then crash.
    tokio::time::sleep(Duration::from_millis(300)).await;
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
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        relay
            .metric(
                "alert_relay_notifications_delivered_total{channel=\"hook\",destination=\"hook\"}"
            )
            .await,
        1.0
    );
}

//! SIGKILL during a burst of webhooks: every webhook answered 2xx is delivered after restart,
//! and none twice to an idempotent receiver (the `Idempotency-Key` of the webhook channel,
//! like Matrix's txnId). Raw re-sends (the at-least-once window for providers without
//! idempotency) are counted and printed.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Fake, Relay, Reply, client, tempdir, webhook};

const BURST: usize = 400;

#[tokio::test]
async fn sigkill_loses_no_accepted_alert() {
    sigkill_loses_no_accepted_alert_on("{ sqlite: relay.db }").await;
}

#[tokio::test]
async fn sigkill_loses_no_accepted_alert_on_postgres() {
    let pg = crate::support::postgres("crash");
    sigkill_loses_no_accepted_alert_on(&pg.storage).await;
}

/// The burst, the SIGKILL and the restart on the given `storage:` section.
async fn sigkill_loses_no_accepted_alert_on(storage: &str) {
    let fake = Fake::start(Reply::new(200, "").delay(Duration::from_millis(2))).await;
    let dir = tempdir();
    let config = format!(
        "storage: {storage}\ndelivery: {{ initial_backoff: 50ms, max_backoff: 200ms }}\n\
         channels: {{ hook: {{ type: webhook, url: '{}/h', rate_limit: {{ per_second: 10000, burst: 10000 }} }} }}\n\
         policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
        fake.url()
    );
    let relay = Relay::start(dir.path(), &config);
    let url = relay.url("/webhook");
    let accepted = Arc::new(Mutex::new(BTreeSet::new()));
    let mut senders = Vec::new();
    for worker in 0..8 {
        let (url, accepted) = (url.clone(), Arc::clone(&accepted));
        senders.push(tokio::spawn(async move {
            let c = client();
            for i in (worker..BURST).step_by(8) {
                let fp = format!("{i:016x}");
                let body = webhook(&[(&fp, "firing")], "");
                if let Ok(r) = c.post(&url).body(body).send().await
                    && r.status() == 200
                {
                    accepted.lock().expect("set").insert(fp);
                }
            }
        }));
    }
    // Kill while webhooks are being committed and deliveries are in flight.
    loop {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if accepted.lock().expect("set").len() >= BURST / 4 {
            break;
        }
    }
    relay.kill9();
    for s in senders {
        let _ = s.await;
    }
    let accepted = accepted.lock().expect("set").clone();
    assert!(
        accepted.len() >= BURST / 4 && accepted.len() < BURST,
        "kill landed mid-burst: {}",
        accepted.len()
    );

    let relay = Relay::start(dir.path(), &config.replace("listen: 127.0.0.1:0\n", ""));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let (by_key, raw) = loop {
        let got = fake.received();
        let mut by_key: BTreeMap<String, String> = BTreeMap::new();
        for r in &got {
            by_key.insert(
                r.header("idempotency-key"),
                r.json()["alert"]["fingerprint"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        let delivered: BTreeSet<String> = by_key.values().cloned().collect();
        if accepted.is_subset(&delivered) {
            break (by_key, got.len());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} accepted alerts never delivered",
            accepted.difference(&delivered).count()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Exactly once per alert for an idempotent receiver: one key per fingerprint.
    let mut keys_per_fp: BTreeMap<&str, usize> = BTreeMap::new();
    for fp in by_key.values() {
        *keys_per_fp.entry(fp).or_default() += 1;
    }
    assert!(
        keys_per_fp.values().all(|n| *n == 1),
        "an alert got two deliveries: {keys_per_fp:?}"
    );
    eprintln!(
        "crash test: {} of {BURST} webhooks accepted before SIGKILL, all delivered; {} raw requests for {} deliveries ({} re-sent in the at-least-once window)",
        accepted.len(),
        raw,
        by_key.len(),
        raw - by_key.len()
    );
    drop(relay);
}

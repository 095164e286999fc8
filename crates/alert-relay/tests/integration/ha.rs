//! Several relays on one PostgreSQL (issue 15): one leads and runs the engines, every one
//! takes webhooks and acknowledgements; a follower takes over when the leader dies.

use std::time::{Duration, Instant};

use crate::support::{Fake, Relay, Reply, client, postgres, tempdir, webhook};

const LEADER: &str = "alert_relay_leader";

/// Two relays on one database, `a` started first (and so the leader).
struct Pair {
    a: Relay,
    b: Relay,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn pair(db: &str, fake: &Fake, policy: &str) -> Pair {
    let pg = postgres(db);
    let config = format!(
        "auth: {{ bearer_token: s3cret }}\nstorage: {}\n\
         delivery: {{ initial_backoff: 50ms, max_backoff: 200ms }}\n\
         channels:\n  hook: {{ type: webhook, url: '{f}/first' }}\n  later: {{ type: webhook, url: '{f}/later' }}\n\
         policies: {{ p: {policy} }}\nroutes: [ {{ policy: p }} ]\n",
        pg.storage,
        f = fake.url()
    );
    let dirs = (tempdir(), tempdir());
    let a = Relay::start(dirs.0.path(), &config);
    a.wait_metric(LEADER, 1.0).await;
    // B answers (it said "listening"), but follows.
    let b = Relay::start(dirs.1.path(), &config);
    assert_eq!(b.metric(LEADER).await, 0.0);
    Pair { a, b, _dirs: dirs }
}

#[tokio::test]
async fn a_follower_takes_webhooks_and_takes_over_when_the_leader_is_killed() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let p = pair("ha_failover", &fake, "{ steps: [ { notify: [hook] } ] }").await;
    // A webhook to the follower is delivered by the leader (told by the database).
    p.b.fire(webhook(&[("0000000000000001", "firing")], ""))
        .await;
    fake.wait_for(1, Duration::from_secs(5)).await;
    p.a.kill9();
    let killed = Instant::now();
    // Accepted by the follower at once; delivered once it leads.
    p.b.fire(webhook(&[("0000000000000002", "firing")], ""))
        .await;
    let got = fake.wait_for(2, Duration::from_secs(15)).await;
    let takeover = killed.elapsed();
    assert_eq!(p.b.metric(LEADER).await, 1.0);
    assert_eq!(p.b.metric("alert_relay_leader_changes_total").await, 1.0);
    let fingerprints: Vec<String> = got
        .iter()
        .map(|r| {
            r.json()["alert"]["fingerprint"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(fingerprints, ["0000000000000001", "0000000000000002"]);
    eprintln!("failover: the follower delivered {takeover:?} after SIGKILL of the leader");
    assert!(takeover < Duration::from_secs(15), "{takeover:?}");
}

#[tokio::test]
async fn an_ack_taken_by_the_follower_stops_the_leaders_next_page() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let p = pair(
        "ha_ack",
        &fake,
        "{ steps: [ { notify: [hook] }, { after: 3s, notify: [later] } ] }",
    )
    .await;
    p.a.fire(webhook(&[("00000000000000a1", "firing")], ""))
        .await;
    fake.wait_for(1, Duration::from_secs(5)).await;
    let r = client()
        .post(p.b.url("/api/v1/incidents/1/ack"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200);
    // Step two was due 3 s after the first page: it never comes. The ack notice does.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(fake.received_on("/later").is_empty(), "paged after the ack");
    let notices = fake.received_on("/first");
    assert!(
        notices
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("acknowledged")),
        "no ack notice: {notices:?}"
    );
}

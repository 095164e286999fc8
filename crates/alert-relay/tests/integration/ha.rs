//! Several relays on one PostgreSQL (issue 15): one leads and runs the engines, every one
//! takes webhooks and acknowledgements; a follower takes over when the leader dies.

use std::time::{Duration, Instant};

use crate::storm::pi_alert;
use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, client, postgres, tempdir, webhook};

const LEADER: &str = "alert_relay_leader";

/// Two relays on one database, `a` started first (and so the leader).
struct Pair {
    a: Relay,
    b: Relay,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn pair(db: &str, fake: &Fake, policy: &str) -> Pair {
    pair_with(db, fake, policy, "").await
}

/// [`pair`] with `more` appended to the configuration.
async fn pair_with(db: &str, fake: &Fake, policy: &str, more: &str) -> Pair {
    pair_on(
        db,
        &format!(
            "delivery: {{ initial_backoff: 50ms, max_backoff: 200ms }}\n\
             channels:\n  hook: {{ type: webhook, url: '{f}/first' }}\n  later: {{ type: webhook, url: '{f}/later' }}\n\
             policies: {{ p: {policy} }}\nroutes: [ {{ policy: p }} ]\n{more}",
            f = fake.url()
        ),
    )
    .await
}

/// Two relays on database `db`, configured with the tests' bearer token, the database and
/// `rest`; `a` started first (and so the leader).
async fn pair_on(db: &str, rest: &str) -> Pair {
    let pg = postgres(db);
    let config = format!(
        "auth: {{ bearer_token: s3cret }}\nstorage: {}\n{rest}",
        pg.storage
    );
    let dirs = (tempdir(), tempdir());
    let a = Relay::start(dirs.0.path(), &config);
    a.wait_metric(LEADER, 1.0).await;
    // B answers (it said "listening"), but follows; healthy and ready all the same.
    let b = Relay::start(dirs.1.path(), &config);
    assert_eq!(b.metric(LEADER).await, 0.0);
    for path in ["/healthz", "/readyz"] {
        let r = client().get(b.url(path)).send().await.expect(path);
        assert_eq!(r.status(), 200, "{path} of a follower");
    }
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
    let fingerprint = |r: &crate::support::Received| {
        r.json()["alert"]["fingerprint"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !fake
        .received()
        .iter()
        .any(|r| fingerprint(r) == "0000000000000002")
    {
        assert!(
            Instant::now() < deadline,
            "not delivered after the failover"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let takeover = killed.elapsed();
    assert_eq!(p.b.metric(LEADER).await, 1.0);
    assert_eq!(p.b.metric("alert_relay_leader_changes_total").await, 1.0);
    // Each alert once, but for one repeat allowed: the first may have been sent by the killed
    // leader without its result recorded (same idempotency key).
    let got = fake.received();
    let keys: std::collections::BTreeSet<String> =
        got.iter().map(|r| r.header("idempotency-key")).collect();
    let fingerprints: std::collections::BTreeSet<String> = got.iter().map(fingerprint).collect();
    assert_eq!(
        fingerprints.into_iter().collect::<Vec<_>>(),
        ["0000000000000001", "0000000000000002"]
    );
    assert_eq!(keys.len(), 2, "one delivery per alert");
    assert!(got.len() <= 3, "{} requests", got.len());
    eprintln!("failover: the follower delivered {takeover:?} after SIGKILL of the leader");
}

/// Step one pages, then the follower takes an ack (after SIGKILL of the leader, if
/// `kill_leader`): step two, due 3 s after step one, never comes; the ack notice does.
async fn ack_on_the_follower_stops_step_two(db: &str, kill_leader: bool) {
    let fake = Fake::start(Reply::new(200, "")).await;
    let p = pair(
        db,
        &fake,
        "{ steps: [ { notify: [hook] }, { after: 3s, notify: [later] } ] }",
    )
    .await;
    p.a.fire(webhook(&[("00000000000000a1", "firing")], ""))
        .await;
    fake.wait_for(1, Duration::from_secs(5)).await;
    if kill_leader {
        p.a.kill9();
    }
    let r = client()
        .post(p.b.url("/api/v1/incidents/1/ack"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200);
    if kill_leader {
        p.b.wait_metric(LEADER, 1.0).await;
    }
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

#[tokio::test]
async fn an_ack_taken_by_the_follower_stops_the_leaders_next_page() {
    ack_on_the_follower_stops_step_two("ha_ack", false).await;
}

/// An ack taken while nobody leads (the leader killed, the follower not yet leading) is in the
/// database: the new leader resumes the escalation and finds nothing left to send.
#[tokio::test]
async fn an_ack_taken_during_the_takeover_holds_for_the_new_leader() {
    ack_on_the_follower_stops_step_two("ha_ack_takeover", true).await;
}

/// A destination's rate limit holds across a failover: the new leader's bucket starts empty,
/// so the burst the old leader just spent is not spent again.
#[tokio::test]
async fn a_rate_limit_holds_across_a_failover() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let p = pair_on(
        "ha_rate",
        &format!(
            "channels: {{ hook: {{ type: webhook, url: '{f}/hook', rate_limit: {{ per_second: 0.5, burst: 2 }} }} }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
            f = fake.url()
        ),
    )
    .await;
    let (a, b) = (p.a, p.b);
    // The burst of two goes out at once; the leader dies right after.
    a.fire(webhook(
        &[
            ("00000000000000e1", "firing"),
            ("00000000000000e2", "firing"),
        ],
        "",
    ))
    .await;
    fake.wait_for(2, Duration::from_secs(5)).await;
    a.kill9();
    b.fire(webhook(
        &[
            ("00000000000000e3", "firing"),
            ("00000000000000e4", "firing"),
        ],
        "",
    ))
    .await;
    b.wait_metric(LEADER, 1.0).await;
    let led = Instant::now();
    let got = fake.wait_for(4, Duration::from_secs(15)).await;
    assert_eq!(got.len(), 4);
    // One token every 2 s from the takeover: the third message 2 s after it, the fourth 2 s
    // later (a full bucket would have sent both at once).
    let times = fake.received_at();
    let (third, fourth) = (times[2], times[3]);
    assert!(
        third >= led + Duration::from_millis(1800),
        "third {:?} after the takeover",
        third - led
    );
    assert!(
        fourth >= third + Duration::from_millis(1800),
        "fourth {:?} after the third",
        fourth - third
    );
}

/// A storm and a budget the old leader began go on under the new one: the Pis that join after
/// the failover are announced in the storm's update, not one by one, and the SMS budget the old
/// leader spent stays spent (its exhaustion announced once).
#[tokio::test]
async fn a_storm_and_a_budget_carry_over_a_failover() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let p = pair_on(
        "ha_storm",
        &format!(
            "{FAST_DELIVERY}channels:\n  a: {{ type: webhook, url: '{u}/a' }}\n  ops: {{ type: webhook, url: '{u}/ops' }}\n\
             \x20 sms: {{ type: webhook, url: '{u}/sms', budget: {{ max: 3, per: 1h, overflow: [ops] }} }}\n\
             policies:\n  p:\n    steps: [ {{ notify: [a, sms] }} ]\n\
             \x20   storm: {{ window: 6s, threshold: 5, group_by: [site, alertname] }}\n\
             routes: [ {{ policy: p }} ]\n",
            u = fake.url()
        ),
    )
    .await;
    let (a, b) = (p.a, p.b);
    // Five pages, then the storm's summary; three SMS, then the budget holds (told once).
    for n in 1..=6 {
        a.fire(pi_alert(n)).await;
    }
    let on = |path: &str| fake.received_on(path).len();
    let text = |r: &crate::support::Received| String::from_utf8_lossy(&r.body).into_owned();
    let storm_told = || {
        fake.received_on("/a")
            .iter()
            .any(|r| text(r).contains("Storm #1"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !storm_told() || on("/sms") < 3 || on("/ops") < 1 {
        assert!(
            Instant::now() < deadline,
            "before the failover: {:?}",
            fake.received()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = on("/a");
    a.kill9();
    for n in 7..=16 {
        b.fire(pi_alert(n)).await;
    }
    // The new leader announces the ten in updates of the same storm (one, or two when a
    // storm tick falls between the posts), and pages none of them alone.
    let updates = || -> Vec<String> { fake.received_on("/a")[before..].iter().map(text).collect() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !updates().iter().any(|u| u.contains("16 incidents")) {
        assert!(
            Instant::now() < deadline,
            "no storm update for all 16: {:#?}",
            updates()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let updates = updates();
    assert!(
        updates.len() <= 2 && updates.iter().all(|u| u.contains("Storm #1")),
        "the joiners paged one by one: {updates:#?}"
    );
    assert_eq!(on("/sms"), 3, "the budget was spent again");
    assert_eq!(on("/ops"), 1, "the budget's exhaustion told twice");
}

/// Alertmanager may post its Watchdog to any relay: heartbeats taken by the follower keep the
/// leader's dead-man's switch quiet; when they stop, it trips once, and one more recovers it.
#[tokio::test]
async fn heartbeats_taken_by_the_follower_keep_the_leaders_switch_quiet() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let p = pair_with(
        "ha_deadman",
        &fake,
        "{ steps: [ { notify: [hook] } ] }",
        "deadman: { timeout: 4s, notify: [later], match: { alertname: PiHot } }\n",
    )
    .await;
    let beat = webhook(&[("00000000000000b1", "firing")], "");
    // Beats 0.8 s apart for twice the timeout, to the follower only.
    for _ in 0..10 {
        let r = client()
            .post(p.b.url("/webhook"))
            .bearer_auth("s3cret")
            .body(beat.clone())
            .send()
            .await
            .expect("heartbeat");
        assert_eq!(r.status(), 200);
        let body = r.text().await.expect("answer");
        assert!(body.contains("\"heartbeats\":1"), "{body}");
        tokio::time::sleep(Duration::from_millis(800)).await;
    }
    assert!(fake.received().is_empty(), "tripped although beats arrived");
    let heard =
        p.a.metric("alert_relay_deadman_last_heartbeat_timestamp_seconds")
            .await;
    assert!(heard > 1.7e9, "the leader heard no heartbeat: {heard}");
    let got = fake.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].path, "/later");
    assert_eq!(got[0].json()["status"], "firing");
    assert_eq!(
        got[0].json()["alert"]["labels"]["alertname"],
        "MonitoringPipelineDown"
    );
    p.b.fire(beat).await;
    let got = fake.wait_for(2, Duration::from_secs(5)).await;
    assert_eq!(got[1].json()["status"], "resolved");
    assert_eq!(fake.received().len(), 2, "trips once, recovers once");
}

#[tokio::test]
async fn a_database_that_cannot_be_reached_stops_start_up_with_one_line() {
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    std::fs::write(
        &path,
        "listen: 127.0.0.1:0\nstorage: { postgres: { url: 'postgres://relay:hunter2@127.0.0.1:1/relay?sslmode=disable' } }\n\
         channels: { hook: { type: webhook, url: 'http://127.0.0.1:9/' } }\n\
         policies: { p: { steps: [ { notify: [hook] } ] } }\nroutes: [ { policy: p } ]\n",
    )
    .expect("config");
    let log = match Relay::try_start_file(&path) {
        Ok(_) => panic!("started without a database"),
        Err(log) => log,
    };
    assert!(log.contains("PostgreSQL at 127.0.0.1:1"), "{log}");
    assert!(log.to_lowercase().contains("refused"), "{log}");
    assert!(!log.contains("hunter2"), "{log}");
}

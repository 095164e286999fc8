//! Chaos (issue 15): two real Alertmanagers clustered with each other, both posting every
//! group to both relays, two relays on one PostgreSQL, a fake chat provider (`webhook` channel,
//! whose `Idempotency-Key` names a delivery) and a fake SMS provider (`twilio`). Alerts are
//! posted to both Alertmanagers' API, as Prometheus does.
//!
//! - SIGKILL of the leader mid-burst of 500 alerts: none lost, re-sends within the bound.
//! - SIGKILL of the leader between two escalation steps: the survivor sends the next one once,
//!   on time within checkpoint interval + takeover.
//! - An ack taken by the follower stops the leader's next page.
//! - The database restarted mid-burst: webhooks answered 5xx meanwhile, none lost.
//!
//! The tests take one lock so they never overlap: each is CPU-heavy (four children and a
//! burst) and measures times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    Fake, Relay, Reply, alertmanager_cluster, alertmanagers_partitioned, client, postgres, tempdir,
};

const LEADER: &str = "alert_relay_leader";
const BURST: usize = 500;
/// Where the chat channel posts (one destination).
const CHAT: &str = "/chat";
/// Where the Twilio channel posts.
const SMS: &str = "/Messages.json";
/// Escalation clocks are written every this often (`alert_relay::escalation::CHECKPOINT_EVERY`).
const CHECKPOINT: Duration = alert_relay::escalation::CHECKPOINT_EVERY;
/// The longest takeover tolerated on a loaded 2-core machine: the issue's bound.
const TAKEOVER: Duration = Duration::from_secs(15);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The fake providers: chat answers 200 after 3 ms (a delivery is in flight for a while), SMS
/// answers as Twilio does.
async fn providers() -> Fake {
    let fake = Fake::start(Reply::new(200, "").delay(Duration::from_millis(3))).await;
    fake.on(SMS, Reply::new(201, r#"{"sid":"SM1"}"#));
    fake
}

/// Two relays on `storage` with the policy `policy`: `a` started first and leading, `b`
/// following.
struct Relays {
    a: Option<Relay>,
    b: Relay,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Relays {
    async fn start(storage: &str, fake: &Fake, policy: &str) -> Relays {
        let config = format!(
            "auth: {{ bearer_token: s3cret }}\nstorage: {storage}\n\
             delivery: {{ initial_backoff: 50ms, max_backoff: 500ms, timeout: 5s }}\n\
             channels:\n  chat: {{ type: webhook, url: '{f}{CHAT}', rate_limit: {{ per_second: 10000, burst: 10000 }} }}\n\
             \x20 sms: {{ type: twilio, account_sid: AC1, auth_token: twtok, from: '+15005550006', to: ['+447700900123'], api_url: '{f}' }}\n\
             policies: {{ p: {policy} }}\nroutes: [ {{ policy: p }} ]\n",
            f = fake.url()
        );
        let dirs = (tempdir(), tempdir());
        let a = Relay::start(dirs.0.path(), &config);
        a.wait_metric(LEADER, 1.0).await;
        let b = Relay::start(dirs.1.path(), &config);
        assert_eq!(b.metric(LEADER).await, 0.0, "two leaders");
        Relays {
            a: Some(a),
            b,
            _dirs: dirs,
        }
    }

    fn a(&self) -> &Relay {
        self.a.as_ref().expect("a runs")
    }

    fn webhooks(&self) -> Vec<String> {
        vec![self.a().url("/webhook"), self.b.url("/webhook")]
    }

    /// SIGKILLs the leader `a`; the moment.
    fn kill_leader(&mut self) -> Instant {
        let a = self.a.take().expect("a runs");
        let killed = Instant::now();
        a.kill9();
        killed
    }
}

/// The sample `series` of `relay`'s `/metrics` (0 when absent), asked again for up to 10 s when
/// the connection fails: all of loopback is one peer to the relay's admission control, and
/// under the Alertmanagers' burst (hundreds of webhook connections at once) it sheds the oldest
/// pending connection of that peer, which may be this one.
async fn metric(relay: &Relay, series: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = async {
            client()
                .get(relay.url("/metrics"))
                .send()
                .await?
                .text()
                .await
        };
        match text.await {
            Ok(text) => {
                return text
                    .lines()
                    .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0.0);
            }
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{}/metrics for 10 s: {e}",
                    relay.addr
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// One alert as Prometheus posts it: the same `startsAt` to both Alertmanagers.
fn alert(name: &str, instance: &str) -> serde_json::Value {
    serde_json::json!({
        "labels": { "alertname": name, "instance": instance, "severity": "critical" },
        "annotations": { "summary": format!("{name} on {instance}") },
        "startsAt": "2026-01-01T00:00:00Z",
        "endsAt": "2099-01-01T00:00:00Z",
    })
}

/// Posts `alerts` to every Alertmanager of `apis`, retrying each for up to 20 s.
async fn post_alerts(apis: &[String], alerts: &serde_json::Value) {
    let c = client();
    for api in apis {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match c.post(api).json(alerts).send().await {
                Ok(r) if r.status().is_success() => break,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "Alertmanager {api} does not take alerts: {other:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

/// Posts [`BURST`] distinct alerts (`pi-0` … `pi-499`) to both Alertmanagers, 10 at a time every
/// 100 ms (about 5 s), counting the alerts posted in `posted`.
fn post_burst(
    apis: Vec<String>,
    name: &'static str,
    posted: Arc<Mutex<usize>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for batch in (0..BURST).collect::<Vec<_>>().chunks(10) {
            let alerts: Vec<_> = batch
                .iter()
                .map(|i| alert(name, &format!("pi-{i}")))
                .collect();
            post_alerts(&apis, &serde_json::Value::Array(alerts)).await;
            *posted.lock().expect("posted") += batch.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// The pages of alert `name` at the chat provider: per instance label, the distinct
/// `Idempotency-Key`s (one per delivery the relay made); and the raw number of requests.
fn chat_pages(fake: &Fake, name: &str) -> (BTreeMap<String, BTreeSet<String>>, usize) {
    let mut by_instance: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut raw = 0;
    for r in fake.received_on(CHAT) {
        let body = r.json();
        let labels = &body["alert"]["labels"];
        if labels["alertname"] != name {
            continue;
        }
        raw += 1;
        by_instance
            .entry(labels["instance"].as_str().unwrap_or_default().to_owned())
            .or_default()
            .insert(r.header("idempotency-key"));
    }
    (by_instance, raw)
}

/// Waits until `done` holds, or panics with `what()` after `timeout`.
async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "after {timeout:?}: {}", what());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until all [`BURST`] alerts of `name` reached the chat provider (60 s at most), then
/// checks that none was delivered twice as two deliveries; the raw re-sends (requests repeating
/// an `Idempotency-Key`) and the pages' count.
async fn all_delivered_once(fake: &Fake, name: &str) -> (usize, usize) {
    wait_until(
        Duration::from_secs(60),
        || chat_pages(fake, name).0.len() == BURST,
        || {
            let (got, _) = chat_pages(fake, name);
            let missing: Vec<String> = (0..BURST)
                .map(|i| format!("pi-{i}"))
                .filter(|i| !got.contains_key(i))
                .collect();
            format!("{} of {BURST} alerts lost: {missing:?}", missing.len())
        },
    )
    .await;
    // Late re-sends would come within a delivery attempt or two.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (got, raw) = chat_pages(fake, name);
    let twice: Vec<_> = got.iter().filter(|(_, keys)| keys.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "alerts delivered as two deliveries (double pages): {twice:?}"
    );
    let deliveries = got.values().map(BTreeSet::len).sum::<usize>();
    (raw - deliveries, raw)
}

#[tokio::test]
async fn sigkill_of_the_leader_mid_burst_loses_no_alert() {
    let _serial = SERIAL.lock().await;
    let fake = providers().await;
    let pg = postgres("chaos_burst");
    let mut relays = Relays::start(&pg.storage, &fake, "{ steps: [ { notify: [chat] } ] }").await;
    let dir = tempdir();
    let am = alertmanager_cluster(dir.path(), &relays.webhooks()).await;
    let posted = Arc::new(Mutex::new(0));
    let burst = post_burst(am.apis.clone(), "ChaosBurst", Arc::clone(&posted));
    // Kill in the middle: half the alerts posted (the rest come after the kill, so webhooks
    // keep arriving) and deliveries under way.
    wait_until(
        Duration::from_secs(60),
        || {
            *posted.lock().expect("posted") >= BURST / 2
                && chat_pages(&fake, "ChaosBurst").0.len() >= 20
        },
        || {
            format!(
                "{} alerts delivered before the kill",
                chat_pages(&fake, "ChaosBurst").0.len()
            )
        },
    )
    .await;
    let before = fake.received_on(CHAT).len();
    let killed = relays.kill_leader();
    let posted_at_kill = *posted.lock().expect("posted");
    let delivered_at_kill = chat_pages(&fake, "ChaosBurst").0.len();
    assert!(delivered_at_kill < BURST, "the kill came after the burst");
    // The survivor leads: it says so when it wins the lock, before its engines start (read
    // from its log, not /metrics: under the burst the relay may shed a scrape's connection).
    let survivor = &relays.b;
    wait_until(
        TAKEOVER,
        || survivor.log_contains("leading: this instance runs the engines"),
        || "no takeover".into(),
    )
    .await;
    let takeover = killed.elapsed();
    // Its first delivery is the first request recorded after that. Requests recorded between
    // the kill and then may still be the old leader's last ones.
    let led = killed + takeover;
    wait_until(
        TAKEOVER,
        || fake.received_at().iter().any(|t| *t > led),
        || "no delivery after the takeover".into(),
    )
    .await;
    let failover = fake
        .received_at()
        .into_iter()
        .filter(|t| *t > led)
        .min()
        .expect("a delivery after the takeover")
        - killed;
    burst.await.expect("posting");
    let (resent, raw) = all_delivered_once(&fake, "ChaosBurst").await;
    assert_eq!(metric(&relays.b, LEADER).await, 1.0);
    assert_eq!(
        metric(&relays.b, "alert_relay_leader_changes_total").await,
        1.0
    );
    eprintln!(
        "chaos burst: SIGKILL of the leader with {posted_at_kill} of {BURST} alerts posted, \
         {delivered_at_kill} delivered ({before} requests); takeover (kill -> the survivor \
         logs that it leads) {takeover:?}, failover (kill -> its first delivery) {failover:?}; all {BURST} delivered, {raw} requests, {resent} raw re-sends"
    );
    assert!(failover < TAKEOVER, "failover took {failover:?}");
    // By design: the old leader's delivery in flight (sent, result not committed) is sent again
    // by the new leader, with the same key; one worker per destination, one destination here.
    assert!(
        resent <= 1,
        "{resent} re-sends: more than one in flight per destination"
    );
    drop(am);
}

/// Alertmanagers cut off from each other each notify every group, each to both relays: four
/// webhooks per alert, and still one page per alert.
#[tokio::test]
async fn partitioned_alertmanagers_page_once() {
    let _serial = SERIAL.lock().await;
    let fake = providers().await;
    let pg = postgres("chaos_partition");
    let relays = Relays::start(&pg.storage, &fake, "{ steps: [ { notify: [chat] } ] }").await;
    let dir = tempdir();
    let am = alertmanagers_partitioned(dir.path(), &relays.webhooks()).await;
    let posted = Arc::new(Mutex::new(0));
    post_burst(am.apis.clone(), "ChaosPartition", posted)
        .await
        .expect("posting");
    let (resent, raw) = all_delivered_once(&fake, "ChaosPartition").await;
    let duplicates = "alert_relay_alerts_deduplicated_total";
    let deduplicated = metric(relays.a(), duplicates).await + metric(&relays.b, duplicates).await;
    eprintln!(
        "chaos partition: {BURST} alerts, {deduplicated} duplicate webhooks' alerts dropped, \
         {raw} requests to the chat, {resent} raw re-sends"
    );
    // Both Alertmanagers really notified (each alert reached the relays more than once).
    #[allow(clippy::cast_precision_loss)]
    let burst = BURST as f64;
    assert!(
        deduplicated >= burst,
        "{deduplicated} duplicates: were both Alertmanagers sending?"
    );
    assert_eq!(resent, 0, "no leader died: nothing sent twice");
    drop(am);
}

#[tokio::test]
async fn sigkill_of_the_leader_mid_escalation_sends_the_next_step_once_on_time() {
    let _serial = SERIAL.lock().await;
    let fake = providers().await;
    let pg = postgres("chaos_escalation");
    const AFTER: Duration = Duration::from_secs(4);
    let mut relays = Relays::start(
        &pg.storage,
        &fake,
        "{ steps: [ { notify: [chat] }, { after: 4s, notify: [sms] } ] }",
    )
    .await;
    let dir = tempdir();
    let am = alertmanager_cluster(dir.path(), &relays.webhooks()).await;
    post_alerts(
        &am.apis,
        &serde_json::json!([alert("ChaosEscalation", "pi-1")]),
    )
    .await;
    fake.wait_on(CHAT, 1, Duration::from_secs(30)).await;
    let step_one = fake.received_at()[0];
    // Between the steps: a second into the escalation (before its first checkpoint).
    tokio::time::sleep_until((step_one + Duration::from_secs(1)).into()).await;
    let killed = relays.kill_leader();
    fake.wait_on(SMS, 1, TAKEOVER + AFTER).await;
    let step_two = fake
        .received()
        .iter()
        .zip(fake.received_at())
        .find(|(r, _)| r.path.ends_with(SMS))
        .map(|(_, t)| t)
        .expect("step two");
    let late = (step_two - step_one).saturating_sub(AFTER);
    eprintln!(
        "chaos escalation: step 2 due {AFTER:?} after step 1, sent by the survivor {:?} after \
         step 1 ({late:?} late; the leader was killed {:?} after step 1)",
        step_two - step_one,
        killed - step_one
    );
    // Never early: the survivor resumes the clock from a checkpoint, never ahead of it.
    assert!(
        step_two - step_one >= AFTER - Duration::from_millis(500),
        "step 2 early: {:?}",
        step_two - step_one
    );
    // On time: the time since the last checkpoint is counted again (under one interval, the
    // kill came 1 s in) and nobody escalates until the survivor leads (the takeover).
    assert!(
        late <= CHECKPOINT + Duration::from_secs(5),
        "step 2 {late:?} late: more than a checkpoint interval ({CHECKPOINT:?}) + 5 s of takeover"
    );
    // Never twice: wait as long again as the step's delay.
    tokio::time::sleep(AFTER + Duration::from_secs(1)).await;
    let sms = fake.received_on(SMS);
    assert_eq!(sms.len(), 1, "step 2 sent {} times: {sms:#?}", sms.len());
    assert_eq!(fake.received_on(CHAT).len(), 1, "step 1 sent again");
    assert_eq!(metric(&relays.b, LEADER).await, 1.0);
    drop(am);
}

#[tokio::test]
async fn an_ack_posted_to_the_follower_stops_the_leaders_next_page() {
    let _serial = SERIAL.lock().await;
    let fake = providers().await;
    let pg = postgres("chaos_ack");
    // A page every 2 s until acknowledged.
    let relays = Relays::start(
        &pg.storage,
        &fake,
        "{ steps: [ { notify: [chat] }, { after: 2s, notify: [sms] }, { after: 4s, notify: [sms] }, \
           { after: 6s, notify: [sms] }, { after: 8s, notify: [sms] } ] }",
    )
    .await;
    let dir = tempdir();
    let am = alertmanager_cluster(dir.path(), &relays.webhooks()).await;
    post_alerts(&am.apis, &serde_json::json!([alert("ChaosAck", "pi-1")])).await;
    let first = fake.wait_on(CHAT, 1, Duration::from_secs(30)).await;
    assert!(
        first[0].json()["title"]
            .as_str()
            .unwrap_or_default()
            .contains("(incident #1)"),
        "{:?}",
        first[0].json()
    );
    fake.wait_on(SMS, 1, Duration::from_secs(10)).await;
    let pages = |fake: &Fake| -> Vec<Instant> {
        fake.received()
            .iter()
            .zip(fake.received_at())
            .filter(|(r, _)| {
                r.path.ends_with(SMS) && !r.form_value("Body").contains("acknowledged")
            })
            .map(|(_, t)| t)
            .collect()
    };
    let step_two = pages(&fake)[0];
    // Just before the next page is due (2 s after step 2): the race the contract is about.
    tokio::time::sleep_until((step_two + Duration::from_millis(1900)).into()).await;
    let ack_sent = Instant::now();
    let r = client()
        .post(relays.b.url("/api/v1/incidents/1/ack"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let acked = Instant::now();
    // Past the due time of every later step (step 5 is 6 s after step 2), with a margin.
    tokio::time::sleep_until((step_two + Duration::from_secs(8)).into()).await;
    let after_ack: Vec<Duration> = pages(&fake)
        .into_iter()
        .filter(|t| *t > ack_sent)
        .map(|t| t - ack_sent)
        .collect();
    eprintln!(
        "chaos ack: ack taken by the follower in {:?}; pages after it: {after_ack:?}",
        acked - ack_sent
    );
    assert!(
        after_ack.len() <= 1,
        "{} pages after the ack: {after_ack:?}",
        after_ack.len()
    );
    assert!(
        after_ack
            .iter()
            .all(|d| *d <= acked - ack_sent + Duration::from_secs(1)),
        "a page more than 1 s after the ack: {after_ack:?}"
    );
    assert!(
        fake.received_on(CHAT)
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("acknowledged")),
        "no ack notice"
    );
    // The leader did the sending all along.
    assert_eq!(metric(relays.a(), LEADER).await, 1.0);
    drop(am);
}

#[tokio::test]
async fn the_database_restarted_mid_burst_loses_no_alert() {
    let _serial = SERIAL.lock().await;
    // A server of its own: the shared one must not go away under the other tests.
    let server = Arc::new(Mutex::new(
        testpg::TestPg::start().unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}")),
    ));
    let storage = {
        let s = server.lock().expect("pg");
        s.create_database("chaos_restart").expect("createdb");
        eprintln!(
            "chaos database restart: PostgreSQL at {}",
            s.url("chaos_restart")
        );
        format!(
            "{{ postgres: {{ url: '{}', pool: 4 }} }}",
            s.url("chaos_restart")
        )
    };
    let fake = providers().await;
    let relays = Relays::start(&storage, &fake, "{ steps: [ { notify: [chat] } ] }").await;
    let dir = tempdir();
    let am = alertmanager_cluster(dir.path(), &relays.webhooks()).await;
    let posted = Arc::new(Mutex::new(0));
    let burst = post_burst(am.apis.clone(), "ChaosRestart", Arc::clone(&posted));
    wait_until(
        Duration::from_secs(60),
        || chat_pages(&fake, "ChaosRestart").0.len() >= BURST / 5,
        || "no fifth of the burst delivered".into(),
    )
    .await;
    let pg = |f: fn(&mut testpg::TestPg) -> Result<(), testpg::Error>| {
        let server = Arc::clone(&server);
        tokio::task::spawn_blocking(move || f(&mut server.lock().expect("pg")))
    };
    let stopped = Instant::now();
    pg(testpg::TestPg::stop).await.expect("join").expect("stop");
    let delivered_at_stop = chat_pages(&fake, "ChaosRestart").0.len();
    // Down until Alertmanager has been answered 5xx for want of the database (it keeps sending
    // the burst's new groups). A deadlock victim retried past its limit would be answered 5xx
    // with the database up: those do not count.
    let outage_errors = |r: &Relay| {
        r.log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains("cannot store a webhook") && !l.contains("deadlock detected"))
            .count()
    };
    let before = outage_errors(relays.a()) + outage_errors(&relays.b);
    wait_until(
        Duration::from_secs(20),
        || outage_errors(relays.a()) + outage_errors(&relays.b) >= before + 10,
        || "not 10 webhooks answered 5xx with the database down".into(),
    )
    .await;
    // The engines pause: nobody leads without the database.
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(relays.a(), LEADER).await + metric(&relays.b, LEADER).await > 0.0 {
        assert!(Instant::now() < deadline, "a leader without its database");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg(testpg::TestPg::start_again)
        .await
        .expect("join")
        .expect("start again");
    let outage = stopped.elapsed();
    let restarted = Instant::now();
    let failed = outage_errors(relays.a()) + outage_errors(&relays.b) - before;
    let errors = "alert_relay_webhooks_total{status=\"error\"}";
    let all_5xx = metric(relays.a(), errors).await + metric(&relays.b, errors).await;
    burst.await.expect("posting");
    let (resent, raw) = all_delivered_once(&fake, "ChaosRestart").await;
    let resumed = fake
        .received_at()
        .into_iter()
        .filter(|t| *t > restarted)
        .min()
        .map(|t| t - restarted);
    eprintln!(
        "chaos database restart: stopped with {delivered_at_stop} of {BURST} delivered, down \
         {outage:?}, {failed} webhooks answered 5xx for it ({all_5xx} in all by the time \
         it was back); first delivery {resumed:?} after the restart; all {BURST} delivered, {raw} \
         requests, {resent} raw re-sends"
    );
    // The leader lost its session: its delivery in flight may be sent again, once.
    assert!(resent <= 1, "{resent} re-sends");
    let leaders = metric(relays.a(), LEADER).await + metric(&relays.b, LEADER).await;
    assert_eq!(leaders, 1.0, "one leader after the restart");
    drop(am);
}

//! Storm control and budgets under paused tokio time, on a real SQLite file.

use std::path::{Path, PathBuf};

use super::*;
use crate::config::{MapSecrets, parse};
use crate::inbound::parse_sms_ack;
use crate::metrics::CommitMetrics;
use crate::model::storm::{Listed, Part};
use crate::payload::AlertEvent;
use crate::payload::{Labels, Status};
use crate::render::storm::{shape, summary_text};
use crate::store::Incident;
use crate::store::sqlite::Sqlite;
use crate::store::{Action, RouteRef, RoutedEvent};

const S: Duration = Duration::from_secs(1);
const M: Duration = Duration::from_secs(60);

fn config() -> crate::config::Config {
    parse(
        "storage: { sqlite: x }\nchannels:\n  a: { type: webhook, url: 'http://127.0.0.1:9/a' }\n  b: { type: webhook, url: 'http://127.0.0.1:9/b' }\n\
         \x20 ops: { type: webhook, url: 'http://127.0.0.1:9/ops' }\n\
         \x20 sms: { type: webhook, url: 'http://127.0.0.1:9/sms', budget: { max: 2, per: 1h, overflow: [ops] } }\n\
         rotations:\n\
         \x20 day: { time_zone: UTC, handover: '09:00', start: 2026-01-05, shift: 1w, people: [ { name: alice, notify: [a] } ] }\n\
         \x20 night: { time_zone: UTC, handover: '09:00', start: 2026-01-05, shift: 1w, people: [ { name: bob, notify: [b] } ] }\n\
         policies:\n  p:\n    steps: [ { notify: ['rotation:day'] }, { after: 10m, notify: ['rotation:night'] } ]\n\
         \x20   storm: { window: 2m, threshold: 5, group_by: [site, alertname] }\n\
         routes: [ { policy: p } ]\n",
        Path::new("/"),
        &MapSecrets::default(),
    )
    .expect("config")
}

struct Rig {
    storms: Arc<Storms>,
    esc: Arc<Escalator>,
    store: Store,
    live: Arc<Live>,
    clock: Arc<RelayClock>,
    path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

async fn start(path: &Path, dir: Option<tempfile::TempDir>) -> Rig {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let live = Arc::new(Live::new("relay.yml".into(), config()));
    let (metrics, _) = Metrics::new();
    let (store, _thread) = Store::start(
        Sqlite::open(path).expect("db"),
        CommitMetrics(Arc::clone(&metrics)),
    )
    .expect("store");
    let engine = Engine::new(crate::delivery::EngineParts::for_tests(
        store.clone(),
        Arc::clone(&metrics),
        Arc::clone(&live),
    ));
    let esc = Escalator::new(store.clone(), Arc::clone(&engine), Arc::clone(&live));
    let clock = Arc::new(RelayClock::new(
        store.read(|b| b.relay_clock()).await.expect("clock"),
    ));
    let storms = Storms::new(
        store.clone(),
        engine,
        Arc::clone(&esc),
        Arc::clone(&live),
        Arc::clone(&clock),
        metrics,
    );
    Rig {
        storms,
        esc,
        store,
        live,
        clock,
        path: path.to_owned(),
        _dir: dir,
    }
}

async fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("relay.db");
    start(&path, Some(dir)).await
}

fn event(n: usize, site: &str) -> AlertEvent {
    AlertEvent {
        status: Status::Firing,
        fingerprint: format!("f{n}{site}"),
        labels: Labels::from([
            ("alertname".into(), "UpsOnBattery".into()),
            ("site".into(), site.into()),
            ("instance".into(), format!("pi-{n:02}")),
        ]),
        annotations: Labels::from([("summary".into(), "UPS on battery".into())]),
        starts_at: 10,
        ends_at: None,
        generator_url: String::new(),
        external_url: String::new(),
        receiver: "relay".into(),
        group_key: format!("{{}}:{{instance=\"pi-{n:02}\",site=\"{site}\"}}"),
    }
}

/// (destination, state, step, storm, notice) of a delivery.
type Row = (String, String, i64, Option<i64>, Option<String>);

impl Rig {
    /// Ingests one alert as the webhook handler does; returns (incident, deliveries queued).
    async fn fire(&self, n: usize, site: &str) -> (i64, usize) {
        self.fire_event(event(n, site), &["a"]).await
    }

    async fn fire_event(&self, e: AlertEvent, dests: &[&str]) -> (i64, usize) {
        let o = self
            .store
            .ingest(vec![RoutedEvent {
                on_call: std::collections::BTreeMap::new(),
                no_resolved: Default::default(),
                maintenance: None,
                event: e,
                destinations: dests.iter().map(|d| (*d).to_owned()).collect(),
                routes: vec![RouteRef {
                    route: "#1".into(),
                    policy: "p".into(),
                }],
                group_resolved: false,
            }])
            .await
            .expect("ingest");
        let collapsed = self.storms.opened(&o.opened).await.expect("storms");
        let queued = o
            .deliveries
            .iter()
            .filter(|d| !collapsed.contains(&d.1))
            .count();
        (o.opened.first().copied().unwrap_or(0), queued)
    }

    fn rows(&self, sql_where: &str) -> Vec<Row> {
        let c = rusqlite::Connection::open(&self.path).expect("open");
        let mut stmt = c
            .prepare(&format!(
                "SELECT destination, state, step, storm_id, notice FROM deliveries WHERE {sql_where} ORDER BY id"
            ))
            .expect("prepare");
        stmt.query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
    }

    fn summaries(&self) -> Vec<Row> {
        self.rows("storm_id IS NOT NULL")
    }

    async fn incident(&self, id: i64) -> Incident {
        self.store
            .read(move |b| b.incident(id))
            .await
            .expect("read")
            .expect("exists")
    }

    /// Advances paused time, running the escalator and the storm task as their loops would.
    async fn advance(&self, d: Duration) {
        let mut left = d;
        loop {
            let wait = self.esc.tick().await.expect("tick").min(TICK);
            self.storms.tick().await.expect("storm tick");
            if left.is_zero() {
                return;
            }
            let step = wait.min(left);
            tokio::time::advance(step).await;
            left -= step;
            self.esc.checkpoint().await.expect("checkpoint");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn below_and_at_the_threshold_nothing_changes() {
    let r = rig().await;
    for n in 1..=5 {
        let (_, queued) = r.fire(n, "wh-2").await;
        assert_eq!(queued, 1);
        tokio::time::advance(S).await;
    }
    // Five is the threshold, not more than it: no storm.
    assert!(r.summaries().is_empty());
    assert_eq!(r.rows("state = 'pending'").len(), 5);
    // Another site, and the same site after the window, do not make a storm either.
    r.fire(6, "lab").await;
    tokio::time::advance(3 * M).await;
    let (i, queued) = r.fire(7, "wh-2").await;
    assert_eq!(queued, 1);
    assert!(r.summaries().is_empty());
    assert_eq!(r.incident(i).await.storm, None);
}

#[tokio::test(start_paused = true)]
async fn above_the_threshold_one_summary_then_joiners_batched_per_window() {
    let r = rig().await;
    let mut ids = Vec::new();
    for n in 1..=5 {
        ids.push(r.fire(n, "wh-2").await.0);
        tokio::time::advance(S).await;
    }
    // The sixth within the window is the storm: its own message is replaced by the summary.
    let (sixth, queued) = r.fire(6, "wh-2").await;
    ids.push(sixth);
    assert_eq!(queued, 0);
    let s = r.summaries();
    assert_eq!(s.len(), 1, "{s:?}");
    let (dest, state, step, storm, text) = &s[0];
    assert_eq!((dest.as_str(), state.as_str(), *step), ("a", "pending", 0));
    let text = text.as_deref().expect("text");
    assert!(
        text.starts_with(
            "Storm #1: 6 incidents at site=wh-2 alertname=UpsOnBattery: UPS on battery\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("#1 pi-01: UPS on battery") && text.contains("and 1 more"),
        "{text}"
    );
    for id in &ids {
        assert_eq!(r.incident(*id).await.storm, *storm);
    }
    // Its first-step delivery is kept, skipped with the reason.
    let skipped = r.rows("state = 'skipped'");
    assert_eq!(skipped.len(), 1);
    // 34 more join within the window: nothing is sent at once.
    for n in 7..=40 {
        let (_, queued) = r.fire(n, "wh-2").await;
        assert_eq!(queued, 0);
        tokio::time::advance(S).await;
        r.storms.tick().await.expect("tick");
    }
    // 34 s passed; the update waits for a window after the detection.
    assert_eq!(r.summaries().len(), 1);
    r.advance(2 * M).await;
    let s = r.summaries();
    assert_eq!(s.len(), 2, "{s:?}");
    let text = s[1].4.as_deref().expect("text");
    assert!(
        text.starts_with(
            "Storm #1: 34 more at site=wh-2 alertname=UpsOnBattery, 40 incidents in all"
        ),
        "{text}"
    );
    assert!(text.contains("and 29 more"), "{text}");
    // No joiner since: no further update. Every incident is still there, individually.
    r.advance(5 * M).await;
    assert_eq!(r.summaries().len(), 2);
    let all = r.store.read(|b| b.incidents(100)).await.expect("incidents");
    assert_eq!(all.len(), 40);
    assert!(all.iter().all(|i| i.storm == Some(1)));
    // Step 2 (10 minutes) of 40 incidents: one summary to b, each incident advanced.
    r.advance(5 * M).await;
    let s = r.summaries();
    let step2: Vec<&Row> = s.iter().filter(|x| x.2 == 1).collect();
    assert_eq!(step2.len(), 1, "{s:?}");
    assert_eq!(step2[0].0, "b");
    assert!(
        step2[0]
            .4
            .as_deref()
            .is_some_and(|t| t.starts_with("Storm #1 step 2: 40 incidents")),
        "{step2:?}"
    );
    assert_eq!(r.rows("destination = 'b'").len(), 1);
    for id in [1, 20, 40] {
        assert_eq!(r.incident(id).await.next_step, 2);
    }
}

#[tokio::test(start_paused = true)]
async fn an_incident_that_joined_after_a_step_summary_gets_its_own() {
    let r = rig().await;
    for n in 1..=6 {
        r.fire(n, "wh-2").await;
    }
    // The storm keeps growing, one Pi every 90 s (inside the 2m window).
    let mut n = 7;
    while n <= 14 {
        r.advance(90 * S).await;
        r.fire(n, "wh-2").await;
        n += 1;
    }
    // 12 minutes: the first step-2 summary went out at 10 minutes, covering the 12 members
    // of then; the 13th and 14th joined later.
    let b = r.rows("destination = 'b'");
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(
        b[0].4
            .as_deref()
            .is_some_and(|t| t.starts_with("Storm #1 step 2: 12 incidents")),
        "{b:?}"
    );
    // At 10 minutes after the 13th joined, its step 2 is one more summary covering both late
    // joiners; the 14th's own step 2 then sends nothing.
    r.advance(10 * M).await;
    let b = r.rows("destination = 'b'");
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(
        b[1].4
            .as_deref()
            .is_some_and(|t| t.starts_with("Storm #1 step 2: 2 incidents")),
        "{b:?}"
    );
    r.advance(10 * M).await;
    assert_eq!(r.rows("destination = 'b'").len(), 2);
    for id in 1..=14 {
        assert_eq!(r.incident(id).await.next_step, 2, "#{id}");
    }
}

#[tokio::test(start_paused = true)]
async fn acknowledging_a_storm_acks_every_incident_and_announces_once_per_destination() {
    let r = rig().await;
    for n in 1..=8 {
        r.fire(n, "wh-2").await;
    }
    let acked = r.storms.ack(1, "alice via API".into()).await.expect("ack");
    assert_eq!(
        acked,
        StormAcked::Done {
            incidents: (1..=8).collect(),
            notices: 1
        }
    );
    for id in 1..=8 {
        let i = r.incident(id).await;
        assert_eq!(i.state, IncidentState::Acked);
        assert_eq!(i.acked_by.as_deref(), Some("alice via API"));
    }
    // One notice to a (reached by the individual messages and the summary), none per incident.
    let notices = r.rows("notice IS NOT NULL AND step = -1");
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(
        notices[0]
            .4
            .as_deref()
            .is_some_and(|t| t.contains("8 incidents (#1, #2"))
    );
    // No step 2 after the ack.
    r.advance(30 * M).await;
    assert!(r.rows("destination = 'b'").is_empty());
    assert_eq!(
        r.storms.ack(1, "bob".into()).await.expect("ack"),
        StormAcked::Unchanged
    );
    assert_eq!(
        r.storms.ack(9, "bob".into()).await.expect("ack"),
        StormAcked::NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn a_storm_survives_a_restart() {
    let r = rig().await;
    for n in 1..=6 {
        r.fire(n, "wh-2").await;
        tokio::time::advance(S).await;
    }
    r.advance(30 * S).await;
    // A clean stop stores the clock (a crash resumes from the newest stored stamp).
    r.storms.checkpoint().await.expect("checkpoint");
    let clock_before = r.clock.now_ms();
    let Rig {
        storms,
        esc,
        store,
        path,
        _dir,
        ..
    } = r;
    drop((storms, esc, store));
    // Down for an hour: that does not count, the storm window goes on.
    tokio::time::advance(60 * M).await;
    let r = start(&path, _dir).await;
    assert!(r.clock.now_ms() >= clock_before);
    let (id, queued) = r.fire(7, "wh-2").await;
    assert_eq!(queued, 0, "a joiner after the restart is collapsed");
    assert_eq!(r.incident(id).await.storm, Some(1));
    // The step-2 summary still comes once, covering all seven.
    r.advance(10 * M).await;
    let b = r.rows("destination = 'b'");
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].4.as_deref().is_some_and(|t| t.contains("7 incidents")));
}

#[tokio::test(start_paused = true)]
async fn resolving_every_incident_closes_the_storm_with_one_message() {
    let r = rig().await;
    for n in 1..=6 {
        r.fire(n, "wh-2").await;
    }
    for id in 1..=6 {
        r.esc
            .transition(id, Action::Resolve, "alice".into())
            .await
            .expect("resolve");
    }
    r.advance(TICK).await;
    let resolved = r.rows("notice LIKE 'Storm #1 resolved:%'");
    assert_eq!(resolved.len(), 1, "{resolved:?}");
    assert!(
        resolved[0]
            .4
            .as_deref()
            .is_some_and(|t| t.contains("all 6 incidents"))
    );
    r.advance(TICK).await;
    assert_eq!(r.rows("notice LIKE 'Storm #1 resolved:%'").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn budget_hit_sends_one_overflow_summary_then_a_tally_when_the_window_ends() {
    let r = rig().await;
    let config = r.live.config();
    let sms = config.destinations()["sms"].clone();
    let budget = config.budget_of(&sms).expect("budget");
    assert_eq!(budget.overflow, ["ops"]);
    let mut held = 0;
    let mut overflow = Vec::new();
    for n in 1..=5 {
        r.fire_event(
            AlertEvent {
                group_key: format!("g{n}"),
                ..event(n, &format!("s{n}"))
            },
            &["sms"],
        )
        .await;
        let delivery = r
            .store
            .read(move |b| Ok(b.pending("sms")?.last().map(|p| p.id).unwrap_or(0)));
        let delivery = delivery.await.expect("pending");
        let w = r
            .store
            .write(Write::Storm(StormWrite::BudgetAdmit {
                delivery,
                budget: budget.clone(),
                clock: r.clock.now_ms(),
            }))
            .await
            .expect("admit");
        match w {
            Written::Storm(StormWritten::Admitted { deliveries }) => {
                assert!(n <= 2 && deliveries.is_empty(), "{n}")
            }
            Written::Storm(StormWritten::Held {
                deliveries,
                exhausted,
            }) => {
                assert!(n > 2, "{n}");
                assert_eq!(exhausted, n == 3);
                held += 1;
                overflow.extend(deliveries);
            }
            other => panic!("{other:?}"),
        }
        tokio::time::advance(M).await;
    }
    assert_eq!(held, 3);
    // One summary at the first held-back message, to ops, naming the incident.
    assert_eq!(overflow.len(), 1);
    assert_eq!(overflow[0].0, "ops");
    let ops = r.rows("destination = 'ops'");
    assert!(
        ops[0].4.as_deref().is_some_and(|t| t
            .starts_with("Budget: sms reached its budget (2 per 1h)")
            && t.contains("for #3")),
        "{ops:?}"
    );
    assert_eq!(r.rows("destination = 'sms' AND state = 'skipped'").len(), 3);
    // The window ends: one tally of the three, then the destination gets messages again.
    r.advance(60 * M).await;
    let ops = r.rows("destination = 'ops'");
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert!(
        ops[1]
            .4
            .as_deref()
            .is_some_and(|t| t.contains("3 messages held back") && t.contains("#3, #4, #5")),
        "{ops:?}"
    );
    r.advance(60 * M).await;
    assert_eq!(r.rows("destination = 'ops'").len(), 2);
    let (_, _) = r
        .fire_event(
            AlertEvent {
                group_key: "g9".into(),
                ..event(9, "s9")
            },
            &["sms"],
        )
        .await;
    let delivery = r
        .store
        .read(|b| Ok(b.pending("sms")?.last().map(|p| p.id).unwrap_or(0)))
        .await
        .expect("pending");
    let w = r
        .store
        .write(Write::Storm(StormWrite::BudgetAdmit {
            delivery,
            budget,
            clock: r.clock.now_ms(),
        }))
        .await
        .expect("admit");
    assert!(matches!(w, Written::Storm(StormWritten::Admitted { .. })));
}

#[tokio::test(start_paused = true)]
async fn later_steps_carry_the_incidents_current_alerts() {
    let r = rig().await;
    let mut e = event(1, "solo");
    let (id, _) = r.fire_event(e.clone(), &["a"]).await;
    for n in 2..=3 {
        e.fingerprint = format!("extra{n}");
        e.labels.insert("instance".into(), format!("pi-x{n}"));
        r.store
            .ingest(vec![RoutedEvent {
                on_call: std::collections::BTreeMap::new(),
                no_resolved: Default::default(),
                maintenance: None,
                event: e.clone(),
                destinations: vec!["a".into()],
                routes: vec![RouteRef {
                    route: "#1".into(),
                    policy: "p".into(),
                }],
                group_resolved: false,
            }])
            .await
            .expect("ingest");
    }
    // The wall clock stepped back between the first alert and the others: they still count.
    rusqlite::Connection::open(&r.path)
        .expect("open")
        .execute(
            "UPDATE alert_events SET received_at = 0 WHERE fingerprint LIKE 'extra%'",
            [],
        )
        .expect("step back");
    r.advance(10 * M).await;
    let step2 = r
        .store
        .read(move |b| {
            let d = b.incident_deliveries(id)?;
            Ok(d.len())
        })
        .await
        .expect("read");
    assert_eq!(step2, 4);
    let id2 = r.store.pending("b".into()).await.expect("pending")[0].id;
    let job = r.store.load(id2).await.expect("load").expect("job");
    assert_eq!(job.alerts.len(), 3);
    let mut msg = crate::render::Message::new(&job.event);
    shape(&mut msg, &job);
    assert_eq!(msg.title, "[FIRING:3] UpsOnBattery");
    assert_eq!(
        msg.summary,
        "UPS on battery (3 firing: pi-01, pi-x2, pi-x3)"
    );
    let d = msg.description.expect("list");
    assert!(
        d.starts_with("3 alerts firing:\n- pi-01: UPS on battery\n- pi-x2"),
        "{d}"
    );
}

#[test]
fn sms_storm_acks() {
    assert_eq!(parse_sms_ack("ACK S3"), Some(3));
    assert_eq!(parse_sms_ack(" ack #s12 "), Some(12));
    assert_eq!(parse_sms_ack("S7 Ack"), Some(7));
    // An incident ack is not a storm ack.
    assert_eq!(parse_sms_ack("ACK 3"), None);
    assert_eq!(parse_sms_ack("ACK S"), None);
    assert_eq!(crate::inbound::parse_ack("ACK S3"), None);
}

#[test]
fn summary_text_lists_a_few_and_counts_the_rest() {
    let listed: Vec<Listed> = (1..=40)
        .map(|n| Listed {
            incident: n,
            state: if n == 2 {
                IncidentState::Acked
            } else {
                IncidentState::Open
            },
            event: event(usize::try_from(n).unwrap_or(0), "warehouse-2"),
        })
        .collect();
    let key = vec![("site".to_owned(), "warehouse-2".to_owned())];
    let t = summary_text(3, Part::Detected, &key, 40, &listed);
    let mut lines = t.lines();
    assert_eq!(
        lines.next(),
        Some("Storm #3: 40 incidents at site=warehouse-2: UPS on battery")
    );
    assert_eq!(lines.next(), Some("#1 pi-01: UPS on battery"));
    assert_eq!(lines.next(), Some("#2 pi-02: UPS on battery (acked)"));
    assert!(t.contains("\nand 35 more\n"), "{t}");
    let t = summary_text(3, Part::Resolved, &[], 40, &[]);
    assert!(
        t.starts_with("Storm #3 resolved: all 40 incidents\n"),
        "{t}"
    );
}

#[test]
fn storm_and_budget_keys_are_validated_by_name() {
    let load = |channels: &str, storm: &str| {
        parse(
            &format!(
                "storage: {{ sqlite: x }}\nchannels:\n  a: {{ type: webhook, url: 'http://a' }}\n{channels}\
                 policies:\n  p:\n    steps: [ {{ notify: [a] }} ]\n{storm}routes: [ {{ policy: p }} ]\n"
            ),
            Path::new("/"),
            &MapSecrets::default(),
        )
        .map(|c| c.describe(crate::config::ListenerSecurity::default()))
        .map_err(|e| e.to_string())
    };
    let ok = load(
        "  s: { type: webhook, url: 'http://s', budget: { max: 2, per: 1h, overflow: [a] } }\n",
        "    storm: { window: 2m, threshold: 5, group_by: [site] }\n",
    )
    .expect("valid");
    assert!(
        ok.contains("budget 2 per 1h per destination, overflow to a"),
        "{ok}"
    );
    assert!(
        ok.contains("p storm: more than 5 incidents within 2m by [site]"),
        "{ok}"
    );
    for (channels, storm, key) in [
        (
            "",
            "    storm: { window: 0s, threshold: 5 }\n",
            "policies.p.storm.window",
        ),
        (
            "",
            "    storm: { window: 2m, threshold: 0 }\n",
            "policies.p.storm.threshold",
        ),
        ("", "    storm: { window: 2m }\n", "threshold"),
        (
            "  s: { type: webhook, url: 'http://s', budget: { max: 2, per: 1h, overflow: [] } }\n",
            "",
            "channels.s.budget.overflow",
        ),
        (
            "  s: { type: webhook, url: 'http://s', budget: { max: 2, per: 1h, overflow: [nope] } }\n",
            "",
            "channels.s.budget.overflow[0]",
        ),
        (
            "  s: { type: webhook, url: 'http://s', budget: { max: 2, per: 1h, overflow: [s] } }\n",
            "",
            "channels.s.budget.overflow[0]",
        ),
        (
            "  s: { type: webhook, url: 'http://s', budget: { max: 0, per: 1h, overflow: [a] } }\n",
            "",
            "channels.s.budget",
        ),
    ] {
        let e = load(channels, storm).expect_err(key);
        assert!(e.contains(key), "{key}: {e}");
    }
}

/// Summaries record who of a rotation they paged, like the messages they replace; and every
/// first-step message intake queued collapses, also to a destination the rotation no longer
/// pages (a hand-over between intake and the storm), which then gets the summary.
#[tokio::test(start_paused = true)]
async fn summaries_keep_the_rotations_on_call_and_reach_whoever_intake_paged() {
    let r = rig().await;
    for n in 1..=5 {
        r.fire(n, "wh-2").await;
        tokio::time::advance(S).await;
    }
    // Intake paged `ops` too for the sixth (the rotation's person then).
    let (sixth, queued) = r.fire_event(event(6, "wh-2"), &["a", "ops"]).await;
    assert_eq!(queued, 0);
    let on_call = |sql_where: &str| -> Vec<(String, Option<String>)> {
        let c = rusqlite::Connection::open(&r.path).expect("open");
        let mut stmt = c
            .prepare(&format!(
                "SELECT destination, on_call FROM deliveries WHERE {sql_where} ORDER BY id"
            ))
            .expect("prepare");
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows")
    };
    assert_eq!(
        on_call("storm_id IS NOT NULL"),
        [
            ("a".to_owned(), Some("alice (rotation day)".to_owned())),
            ("ops".to_owned(), None),
        ]
    );
    assert_eq!(
        on_call(&format!("incident_id = {sixth} AND state = 'skipped'")).len(),
        2
    );
    // The later step's summary pages the other rotation.
    r.advance(10 * M).await;
    assert_eq!(
        on_call("storm_id IS NOT NULL AND step = 1"),
        [("b".to_owned(), Some("bob (rotation night)".to_owned()))]
    );
}

/// A member escalated by hand has had its step: the storm's step summary leaves it out.
#[tokio::test(start_paused = true)]
async fn a_step_summary_leaves_out_members_already_past_the_step() {
    let r = rig().await;
    for n in 1..=6 {
        r.fire(n, "wh-2").await;
    }
    r.esc.escalate(1, "alice").await.expect("escalate");
    assert_eq!(r.incident(1).await.next_step, 2);
    r.advance(10 * M).await;
    let b = r.rows("destination = 'b' AND storm_id IS NOT NULL");
    assert_eq!(b.len(), 1, "{b:?}");
    let text = b[0].4.as_deref().unwrap_or_default();
    assert!(text.starts_with("Storm #1 step 2: 5 incidents"), "{text}");
    assert!(!text.contains("#1 pi-01"), "{text}");
}

/// Pruning keeps what an open storm or an unresolved incident still sends on, and removes a
/// closed storm with its rows and incidents once it is older than the retention.
#[tokio::test(start_paused = true)]
async fn pruning_keeps_open_storms_whole_and_removes_closed_ones() {
    let r = rig().await;
    for n in 1..=6 {
        r.fire(n, "wh-2").await;
    }
    let count = |table: &str| -> i64 {
        rusqlite::Connection::open(&r.path)
            .expect("open")
            .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
                row.get(0)
            })
            .expect("count")
    };
    let prune = || async {
        r.store
            .write(Write::Prune {
                before_ms: i64::MAX,
            })
            .await
            .expect("prune");
    };
    // Delivered or not, the storm is open: its events and summary stay.
    rusqlite::Connection::open(&r.path)
        .expect("open")
        .execute("UPDATE deliveries SET state = 'delivered'", [])
        .expect("delivered");
    prune().await;
    assert_eq!(count("alert_events"), 6);
    assert_eq!(r.summaries().len(), 1);
    assert_eq!(r.incident(1).await.storm, Some(1));
    for id in 1..=6 {
        r.esc
            .transition(id, Action::Resolve, "alice".into())
            .await
            .expect("resolve");
    }
    r.advance(TICK).await;
    // A second storm opens at another site: the closed one is no longer the newest.
    for n in 7..=12 {
        r.fire(n, "wh-3").await;
    }
    assert_eq!(r.incident(12).await.storm, Some(2));
    rusqlite::Connection::open(&r.path)
        .expect("open")
        .execute("UPDATE deliveries SET state = 'delivered'", [])
        .expect("delivered");
    prune().await;
    for table in [
        "storms WHERE id = 1",
        "storm_members WHERE storm_id = 1 OR incident_id <= 6",
        "storm_covered WHERE storm_id = 1",
        "incidents WHERE id <= 6",
    ] {
        assert_eq!(count(table), 0, "{table}");
    }
    // The open storm stays whole, with the alerts its incidents opened with.
    assert_eq!(count("storm_members WHERE storm_id = 2"), 6);
    assert_eq!(count("incidents"), 6);
    assert_eq!(count("alert_events"), 6);
}

/// A storm summary's Pushover receipt is watched: open while an incident of the storm is
/// open, acknowledged (so cancelled) once the storm is.
#[tokio::test(start_paused = true)]
async fn a_storm_summary_receipt_is_watched_until_the_storm_is_acked() {
    let r = rig().await;
    for n in 1..=6 {
        r.fire(n, "wh-2").await;
    }
    rusqlite::Connection::open(&r.path)
        .expect("open")
        .execute(
            "UPDATE deliveries SET state = 'delivered', provider_ref = 'receipt:S1'
             WHERE storm_id IS NOT NULL",
            [],
        )
        .expect("delivered");
    let watched = || async {
        r.store
            .read(|b| b.watched_receipts())
            .await
            .expect("watched")
            .into_iter()
            .map(|w| (w.receipt, w.incident, w.storm, w.incident_state))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        watched().await,
        [("S1".to_owned(), None, Some(1), IncidentState::Open)]
    );
    r.storms.ack(1, "alice".into()).await.expect("ack");
    assert_eq!(
        watched().await,
        [("S1".to_owned(), None, Some(1), IncidentState::Acked)]
    );
}

//! The behaviour every [`Backend`] must have, written once against the trait.
//!
//! Each case takes a fresh, empty backend. [`backend_contract!`] instantiates one `#[test]`
//! per case for a backend constructor: SQLite runs it below; another backend adds one line
//! (`backend_contract!(postgres, || …);`). Tests of one backend's own machinery (SQLite's
//! migrations, query plans, files) stay beside that backend.

use std::collections::BTreeMap;

use super::*;
use crate::model::storm::{BudgetAt, RuleAt, StormWrite, StormWritten};
use crate::payload::AlertEvent;
use crate::payload::{Labels, Status};

/// One `#[test]` per contract case, in a module named `$name`, each on a backend made by
/// `$make` (an expression of a `Backend`).
macro_rules! backend_contract {
    (@cases $make:expr; $($case:ident),+ $(,)?) => {
        $(
            #[test]
            fn $case() {
                let mut backend = $make;
                $crate::store::contract::$case(&mut backend);
            }
        )+
    };
    ($name:ident, $make:expr) => {
        mod $name {
            $crate::store::contract::backend_contract!(@cases $make;
                ingest_deduplicates_and_resolved_follows_firing,
                send_resolved_false_creates_no_resolved_delivery,
                pending_is_oldest_first_and_outcomes_leave_it,
                records_attempts_and_prunes,
                meta_offsets_and_pushover_receipts,
                meta_is_stored_with_its_events,
                incident_transitions,
                ack_all_acknowledges_quietly,
                resolve_stale_is_guarded_by_the_watermark,
                fire_step_is_a_compare_and_set,
                checkpoint_stores_escalation_clocks,
                incident_fingerprints_and_on_call,
                relay_clock_and_last_event_id,
                ack_key_is_created_and_stable,
                prune_keeps_the_newest_ids,
                inbound_sids_are_remembered,
                call_outcomes_stay_on_their_call,
                sent_to_the_destinations_paged,
                budget_admits_then_holds,
                storms_gather_incidents,
                storm_matchers_pick_the_incidents_that_count,
                ping_answers,
                console_pages_filter_incidents,
                console_pages_by_keyset,
                console_timeline_has_events_deliveries_and_actions_in_order,
                console_records_every_kind_of_action,
                console_destination_health_counts,
                console_dead_letters_are_retried_once,
                console_sessions_open_expire_and_close,
                console_prune_drops_actions_of_pruned_incidents_and_expired_sessions,
                maintenance_windows_are_created_listed_and_ended,
                maintenance_holds_at_intake_and_releases,
                maintenance_holds_an_escalating_incident,
            );
        }
    };
}
pub(crate) use backend_contract;

backend_contract!(
    sqlite,
    crate::store::sqlite::Sqlite::in_memory().expect("db")
);
backend_contract!(postgres, crate::store::postgres::tests::fresh());

/// A firing or resolved event of alert `A` (the SQLite tests build theirs with it too).
pub(crate) fn event(fp: &str, status: Status, starts_at: i64) -> AlertEvent {
    AlertEvent {
        status,
        fingerprint: fp.into(),
        labels: Labels::from([("alertname".into(), "A".into())]),
        annotations: Labels::new(),
        starts_at,
        ends_at: None,
        generator_url: String::new(),
        external_url: String::new(),
        receiver: "r".into(),
        group_key: "g".into(),
    }
}

pub(crate) fn routed(e: AlertEvent, dests: &[&str]) -> RoutedEvent {
    RoutedEvent {
        event: e,
        destinations: dests.iter().map(|d| (*d).to_owned()).collect(),
        routes: Vec::new(),
        group_resolved: false,
        on_call: Default::default(),
        no_resolved: Default::default(),
        maintenance: None,
    }
}

fn with_route(mut e: RoutedEvent) -> RoutedEvent {
    e.routes = vec![RouteRef {
        route: "#1".into(),
        policy: "p".into(),
    }];
    e
}

fn write(db: &mut dyn Backend, w: Write) -> Written {
    match db.write_batch(vec![w]).pop() {
        Some(Ok(w)) => w,
        other => panic!("write failed: {other:?}"),
    }
}

fn ingest_one(db: &mut dyn Backend, events: Vec<RoutedEvent>) -> IngestOutcome {
    match write(db, Write::Ingest(events)) {
        Written::Ingested(o) => o,
        other => panic!("not an ingest: {other:?}"),
    }
}

/// Opens an incident of its own group, routed to `dests`.
fn open_incident(db: &mut dyn Backend, group: &str, dests: &[&str]) -> IngestOutcome {
    let mut e = with_route(routed(event(group, Status::Firing, 1), dests));
    e.event.group_key = group.into();
    ingest_one(db, vec![e])
}

fn record(db: &mut dyn Backend, id: i64, attempt: Attempt) {
    let r = db.write_batch(vec![Write::Record {
        id,
        attempts: 1,
        attempt,
    }]);
    assert!(r.iter().all(Result::is_ok), "{r:?}");
}

fn delivered() -> Attempt {
    Attempt::Delivered { provider_ref: None }
}

fn transition(db: &mut dyn Backend, id: i64, action: Action) -> Transitioned {
    let w = Write::Transition {
        id,
        action,
        by: "alice".into(),
        elapsed_ms: 0,
    };
    match write(db, w) {
        Written::Transitioned(t) => t,
        other => panic!("not a transition: {other:?}"),
    }
}

fn state(db: &mut dyn Backend, id: i64) -> IncidentState {
    db.incident(id).expect("read").expect("exists").state
}

pub(crate) fn ingest_deduplicates_and_resolved_follows_firing(db: &mut dyn Backend) {
    let o = ingest_one(
        db,
        vec![
            routed(event("f1", Status::Firing, 10), &["a", "b"]),
            routed(event("f1", Status::Firing, 10), &["a", "b"]),
        ],
    );
    assert_eq!((o.accepted, o.duplicates, o.deliveries.len()), (1, 1, 2));
    // A new firing with another startsAt is a new alert.
    let o = ingest_one(db, vec![routed(event("f1", Status::Firing, 20), &["a"])]);
    assert_eq!(o.accepted, 1);
    // The resolved event goes where the firing one went, not where routing now says.
    let o = ingest_one(db, vec![routed(event("f1", Status::Resolved, 10), &["c"])]);
    let dests: Vec<&str> = o.deliveries.iter().map(|(d, _, _)| d.as_str()).collect();
    assert_eq!(dests, ["a", "b"]);
    let job = db.load(o.deliveries[0].1).expect("load").expect("exists");
    let firing = job.firing.expect("has a firing delivery");
    assert_eq!(firing.state, DeliveryState::Pending);
    // A resolved event for an alert never seen firing is routed.
    let o = ingest_one(db, vec![routed(event("f2", Status::Resolved, 10), &["c"])]);
    assert_eq!(o.deliveries.len(), 1);
    assert_eq!(o.deliveries[0].0, "c");
    assert_eq!(db.pending("a").expect("pending").len(), 3);
    let mut per = db.pending_destinations().expect("pending destinations");
    per.sort();
    assert_eq!(
        per,
        [
            ("a".to_owned(), 3),
            ("b".to_owned(), 2),
            ("c".to_owned(), 1)
        ]
    );
}

/// `send_resolved: false` (`RoutedEvent::no_resolved`): a resolved event creates no delivery
/// for that destination, whether it follows a firing delivery, the group's open incident or
/// routing; the firing message is unaffected and the other destinations get theirs.
pub(crate) fn send_resolved_false_creates_no_resolved_delivery(db: &mut dyn Backend) {
    let quiet = |mut e: RoutedEvent| {
        e.no_resolved = std::sync::Arc::new(["sms/+1".to_owned()].into());
        e
    };
    let o = ingest_one(
        db,
        vec![quiet(with_route(routed(
            event("f1", Status::Firing, 10),
            &["sms/+1", "chat"],
        )))],
    );
    assert_eq!(o.deliveries.len(), 2, "the firing message goes everywhere");
    let o = ingest_one(
        db,
        vec![quiet(routed(
            event("f1", Status::Resolved, 10),
            &["sms/+1", "chat"],
        ))],
    );
    let dests: Vec<&str> = o.deliveries.iter().map(|(d, _, _)| d.as_str()).collect();
    assert_eq!(dests, ["chat"]);
    // Another startsAt: the open incident's destinations, less the quiet one.
    let o = ingest_one(
        db,
        vec![quiet(routed(
            event("f1", Status::Resolved, 11),
            &["sms/+1"],
        ))],
    );
    let dests: Vec<&str> = o.deliveries.iter().map(|(d, _, _)| d.as_str()).collect();
    assert_eq!(dests, ["chat"]);
    // Never seen firing, in a group without an incident: routing, less the quiet one.
    let mut e = quiet(routed(event("f2", Status::Resolved, 10), &["sms/+1"]));
    e.event.group_key = "other".into();
    let o = ingest_one(db, vec![e]);
    assert!(o.deliveries.is_empty(), "{:?}", o.deliveries);
    assert_eq!(
        db.pending("sms/+1").expect("pending").len(),
        1,
        "only the firing one"
    );
}

pub(crate) fn pending_is_oldest_first_and_outcomes_leave_it(db: &mut dyn Backend) {
    assert!(db.pending("a").expect("pending").is_empty());
    assert!(db.pending_destinations().expect("destinations").is_empty());
    assert!(db.load(1).expect("load").is_none());
    let o = ingest_one(
        db,
        vec![
            routed(event("f1", Status::Firing, 1), &["a"]),
            routed(event("f2", Status::Firing, 2), &["a"]),
            routed(event("f3", Status::Firing, 3), &["a"]),
            routed(event("f4", Status::Firing, 4), &["a"]),
        ],
    );
    let ids: Vec<i64> = o.deliveries.iter().map(|d| d.1).collect();
    let pending = db.pending("a").expect("pending");
    assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), ids);
    assert!(pending.is_sorted_by_key(|p| (p.created_at_ms, p.id)));
    let job = db.load(ids[0]).expect("load").expect("exists");
    assert_eq!(
        (job.destination.as_str(), job.state, job.attempts),
        ("a", DeliveryState::Pending, 0)
    );
    assert_eq!(job.event.fingerprint, "f1");
    // A retry stays pending; delivered, dead and skipped deliveries leave the queue.
    let retry = Attempt::Retry {
        next_attempt_at_ms: 99,
        error: "503".into(),
    };
    record(db, ids[0], retry);
    record(db, ids[1], delivered());
    record(
        db,
        ids[2],
        Attempt::Dead {
            error: "400".into(),
        },
    );
    record(
        db,
        ids[3],
        Attempt::Skipped {
            reason: "budget".into(),
        },
    );
    let pending = db.pending("a").expect("pending");
    assert_eq!(pending.iter().map(|p| p.id).collect::<Vec<_>>(), [ids[0]]);
    let job = db.load(ids[0]).expect("load").expect("exists");
    assert_eq!((job.state, job.attempts), (DeliveryState::Pending, 1));
    assert_eq!(job.next_attempt_at_ms, 99);
    let states: Vec<DeliveryState> = ids[1..]
        .iter()
        .map(|id| db.load(*id).expect("load").expect("exists").state)
        .collect();
    assert_eq!(
        states,
        [
            DeliveryState::Delivered,
            DeliveryState::Dead,
            DeliveryState::Skipped
        ]
    );
    assert_eq!(
        db.pending_destinations().expect("destinations"),
        [("a".to_owned(), 1)]
    );
}

pub(crate) fn records_attempts_and_prunes(db: &mut dyn Backend) {
    let o = ingest_one(db, vec![routed(event("f1", Status::Firing, 10), &["a"])]);
    let id = o.deliveries[0].1;
    let r = db.write_batch(vec![
        Write::Record {
            id,
            attempts: 1,
            attempt: Attempt::Retry {
                next_attempt_at_ms: 99,
                error: "503".into(),
            },
        },
        Write::Record {
            id,
            attempts: 2,
            attempt: Attempt::Delivered {
                provider_ref: Some("ts1".into()),
            },
        },
    ]);
    assert!(r.iter().all(Result::is_ok));
    let job = db.load(id).expect("load").expect("exists");
    assert_eq!((job.state, job.attempts), (DeliveryState::Delivered, 2));
    assert!(db.pending("a").expect("pending").is_empty());
    let o = ingest_one(db, vec![routed(event("f1", Status::Resolved, 10), &[])]);
    let job = db.load(o.deliveries[0].1).expect("load").expect("exists");
    assert_eq!(
        job.firing.and_then(|f| f.provider_ref).as_deref(),
        Some("ts1")
    );
    // Pruning keeps alerts with pending deliveries.
    let r = db.write_batch(vec![Write::Prune {
        before_ms: i64::MAX,
    }]);
    assert!(matches!(r[0], Ok(Written::Pruned(_))));
    assert_eq!(db.pending("a").expect("pending").len(), 1);
}

pub(crate) fn meta_offsets_and_pushover_receipts(db: &mut dyn Backend) {
    assert_eq!(db.meta_int("telegram_offset:1").expect("meta"), None);
    for v in [5, 9] {
        let w = Write::SetMetaInt {
            key: "telegram_offset:1".into(),
            value: v,
        };
        assert!(matches!(db.write_batch(vec![w]).pop(), Some(Ok(_))));
    }
    assert_eq!(db.meta_int("telegram_offset:1").expect("meta"), Some(9));
    let firing = with_route(routed(event("f", Status::Firing, 1), &["po", "po2"]));
    let o = ingest_one(db, vec![firing]);
    let (a, b) = (o.deliveries[0].1, o.deliveries[1].1);
    let record = |id, r: &str| Write::Record {
        id,
        attempts: 1,
        attempt: Attempt::Delivered {
            provider_ref: Some(r.into()),
        },
    };
    db.write_batch(vec![record(a, "receipt:R1"), record(b, "req-2")]);
    let w = db.watched_receipts().expect("watched");
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(
        (
            w[0].receipt.as_str(),
            w[0].incident,
            w[0].destination.as_str()
        ),
        ("R1", Some(o.opened[0]), "po")
    );
    assert_eq!(w[0].incident_state, IncidentState::Open);
    db.write_batch(vec![Write::FinishReceipt {
        receipt: "R1".into(),
        end: ReceiptEnd::Cancelled,
    }]);
    assert!(db.watched_receipts().expect("watched").is_empty());
}

pub(crate) fn meta_is_stored_with_its_events(db: &mut dyn Backend) {
    assert_eq!(db.meta("deadman").expect("meta"), None);
    let w = Write::SetMeta {
        key: "deadman".into(),
        value: b"state 1".to_vec(),
        events: vec![routed(event("dm", Status::Firing, 1), &["a"])],
    };
    let Written::Ingested(o) = write(db, w) else {
        panic!("SetMeta answers Ingested");
    };
    assert_eq!((o.accepted, o.deliveries.len()), (1, 1));
    assert_eq!(
        db.meta("deadman").expect("meta").as_deref(),
        Some(&b"state 1"[..])
    );
    let w = Write::SetMeta {
        key: "deadman".into(),
        value: b"state 2".to_vec(),
        events: Vec::new(),
    };
    write(db, w);
    assert_eq!(
        db.meta("deadman").expect("meta").as_deref(),
        Some(&b"state 2"[..])
    );
    assert_eq!(db.pending("a").expect("pending").len(), 1);
}

pub(crate) fn incident_transitions(db: &mut dyn Backend) {
    assert!(db.open_incidents().expect("open").is_empty());
    assert!(db.incidents(10).expect("incidents").is_empty());
    let o = open_incident(db, "g1", &["a"]);
    assert_eq!(o.opened.len(), 1);
    let id = o.opened[0];
    assert_eq!(o.deliveries.len(), 1);
    let i = db.incident(id).expect("read").expect("exists");
    assert_eq!(
        (i.group_key.as_str(), i.route.as_str(), i.policy.as_str()),
        ("g1", "#1", "p")
    );
    assert_eq!((i.state, i.alertname.as_str()), (IncidentState::Open, "A"));
    assert_eq!(
        db.incident_deliveries(id).expect("deliveries"),
        [("a".to_owned(), 0, DeliveryState::Pending, None, None)]
    );

    // Acknowledged: a notice to the destination already paged.
    let Transitioned::Done { from, deliveries } = transition(db, id, Action::Ack) else {
        panic!("acknowledged");
    };
    assert_eq!(from, IncidentState::Open);
    assert_eq!(
        deliveries.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let i = db.incident(id).expect("read").expect("exists");
    assert_eq!(
        (i.state, i.acked_by.as_deref()),
        (IncidentState::Acked, Some("alice"))
    );
    let notices = db.incident_deliveries(id).expect("deliveries");
    assert_eq!(notices.len(), 2);
    assert!(notices[1].3.is_some(), "{notices:?}");
    assert_eq!(
        transition(db, id, Action::Ack),
        Transitioned::Unchanged(IncidentState::Acked)
    );
    assert!(matches!(
        transition(db, id, Action::Unack),
        Transitioned::Done {
            from: IncidentState::Acked,
            ..
        }
    ));
    assert_eq!(state(db, id), IncidentState::Open);
    assert_eq!(
        transition(db, id, Action::Unack),
        Transitioned::Unchanged(IncidentState::Open)
    );

    let other = open_incident(db, "g2", &[]).opened[0];
    let open: Vec<i64> = db
        .open_incidents()
        .expect("open")
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(open, [id, other], "oldest first");
    assert!(matches!(
        transition(db, id, Action::Resolve),
        Transitioned::Done {
            from: IncidentState::Open,
            ..
        }
    ));
    let i = db.incident(id).expect("read").expect("exists");
    assert_eq!(
        (i.state, i.resolved_by.as_deref()),
        (IncidentState::Resolved, Some("alice"))
    );
    // Resolved is final.
    for action in [Action::Ack, Action::Unack, Action::Resolve] {
        assert_eq!(
            transition(db, id, action),
            Transitioned::Unchanged(IncidentState::Resolved)
        );
    }
    let open: Vec<i64> = db
        .open_incidents()
        .expect("open")
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(open, [other]);
    let all: Vec<i64> = db
        .incidents(10)
        .expect("incidents")
        .iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(all, [other, id], "newest first");
    assert_eq!(db.incidents(1).expect("incidents").len(), 1);
    assert_eq!(transition(db, 999_999, Action::Ack), Transitioned::NotFound);
    assert!(db.incident(999_999).expect("read").is_none());
}

pub(crate) fn ack_all_acknowledges_quietly(db: &mut dyn Backend) {
    let a = open_incident(db, "g1", &["a"]).opened[0];
    let b = open_incident(db, "g2", &["b"]).opened[0];
    let w = Write::AckAll {
        incidents: vec![(a, 10), (b, 20)],
        by: "storm".into(),
    };
    let Written::TransitionedAll(all) = write(db, w) else {
        panic!("AckAll answers TransitionedAll");
    };
    assert_eq!(all.len(), 2);
    for (id, t) in &all {
        assert_eq!(
            t,
            &Transitioned::Done {
                from: IncidentState::Open,
                deliveries: Vec::new()
            },
            "incident {id}"
        );
        assert_eq!(state(db, *id), IncidentState::Acked);
    }
    // No notice was queued.
    assert_eq!(db.pending("a").expect("pending").len(), 1);
    assert_eq!(db.pending("b").expect("pending").len(), 1);
}

pub(crate) fn resolve_stale_is_guarded_by_the_watermark(db: &mut dyn Backend) {
    let id = open_incident(db, "g1", &["a"]).opened[0];
    let watermark = db.last_event_id().expect("last");
    let stale = |after_event| Write::ResolveStale {
        id,
        by: "resync".into(),
        elapsed_ms: 0,
        after_event,
        after_ms: i64::MAX,
    };
    let transitioned = |w| match w {
        Written::Transitioned(t) => t,
        other => panic!("not a transition: {other:?}"),
    };
    // An alert of its group arrived after the poll started: it stays open.
    let kept = transitioned(write(db, stale(watermark - 1)));
    assert_eq!(kept, Transitioned::Unchanged(IncidentState::Open));
    assert_eq!(state(db, id), IncidentState::Open);
    // So does it when one arrived after the poll's time (a wall clock stepped back).
    let w = Write::ResolveStale {
        id,
        by: "resync".into(),
        elapsed_ms: 0,
        after_event: watermark,
        after_ms: i64::MIN,
    };
    let kept = transitioned(write(db, w));
    assert_eq!(kept, Transitioned::Unchanged(IncidentState::Open));
    // Nothing newer: resolved like a manual resolve, with its notices.
    let Transitioned::Done { from, deliveries } = transitioned(write(db, stale(watermark))) else {
        panic!("resolved");
    };
    assert_eq!(from, IncidentState::Open);
    assert_eq!(deliveries.len(), 1);
    let i = db.incident(id).expect("read").expect("exists");
    assert_eq!(
        (i.state, i.resolved_by.as_deref()),
        (IncidentState::Resolved, Some("resync"))
    );
}

pub(crate) fn fire_step_is_a_compare_and_set(db: &mut dyn Backend) {
    let id = open_incident(db, "g1", &["a"]).opened[0];
    let next = db.incident(id).expect("read").expect("exists").next_step;
    let fire = |expected_step, allow_acked, reopen| Write::FireStep {
        id,
        expected_step,
        step: 1,
        elapsed_ms: 60_000,
        destinations: vec!["b".into(), "c".into()],
        on_call: BTreeMap::from([("b".into(), "bob (rotation r)".into())]),
        allow_acked,
        reopen,
        by: None,
    };
    let fired = |w| match w {
        Written::Fired(d) => d,
        other => panic!("not fired: {other:?}"),
    };
    // Only the step that is next fires, and only once.
    assert!(fired(write(db, fire(next + 1, false, false))).is_empty());
    let sent = fired(write(db, fire(next, false, false)));
    assert_eq!(
        sent.iter().map(|d| d.0.as_str()).collect::<Vec<_>>(),
        ["b", "c"]
    );
    assert!(fired(write(db, fire(next, false, false))).is_empty());
    let i = db.incident(id).expect("read").expect("exists");
    assert_eq!((i.next_step, i.elapsed_ms), (next + 1, 60_000));
    let job = db.load(sent[0].1).expect("load").expect("exists");
    assert_eq!((job.incident, job.step), (Some(id), 1));
    assert_eq!(
        db.incident_on_call(id).expect("on call"),
        [("b".to_owned(), 1, "bob (rotation r)".to_owned())]
    );

    // Acknowledged: only with `allow_acked` (stays acknowledged) or `reopen` (opens it).
    transition(db, id, Action::Ack);
    assert!(fired(write(db, fire(next + 1, false, false))).is_empty());
    assert_eq!(fired(write(db, fire(next + 1, true, false))).len(), 2);
    assert_eq!(state(db, id), IncidentState::Acked);
    assert_eq!(fired(write(db, fire(next + 2, false, true))).len(), 2);
    assert_eq!(state(db, id), IncidentState::Open);
    // Resolved: never.
    transition(db, id, Action::Resolve);
    assert!(fired(write(db, fire(next + 3, true, true))).is_empty());
    assert_eq!(
        db.incident(id).expect("read").expect("exists").next_step,
        next + 3
    );
}

pub(crate) fn checkpoint_stores_escalation_clocks(db: &mut dyn Backend) {
    let a = open_incident(db, "g1", &[]).opened[0];
    let b = open_incident(db, "g2", &[]).opened[0];
    transition(db, b, Action::Resolve);
    let resolved = db.incident(b).expect("read").expect("exists");
    let w = write(
        db,
        Write::Checkpoint(vec![(a, 5_000, 0), (b, 7_000, 3_000)]),
    );
    assert!(matches!(w, Written::Checkpointed));
    let i = db.incident(a).expect("read").expect("exists");
    assert_eq!((i.elapsed_ms, i.acked_ms), (5_000, 0));
    // A resolved incident's clocks stay as they were.
    let i = db.incident(b).expect("read").expect("exists");
    assert_eq!(
        (i.elapsed_ms, i.acked_ms),
        (resolved.elapsed_ms, resolved.acked_ms)
    );
}

pub(crate) fn incident_fingerprints_and_on_call(db: &mut dyn Backend) {
    let mut first = with_route(routed(event("f1", Status::Firing, 1), &["a", "b"]));
    first.on_call = BTreeMap::from([("a".into(), "alice (rotation r)".into())]);
    let id = ingest_one(db, vec![first]).opened[0];
    let second = with_route(routed(event("f2", Status::Firing, 2), &["a"]));
    let o = ingest_one(db, vec![second]);
    assert!(o.opened.is_empty(), "the group's incident is open");
    assert_eq!(o.joined, [id], "named once, as joined");
    let mut fps = db.incident_fingerprints(id).expect("fingerprints");
    fps.sort();
    assert_eq!(fps, ["f1", "f2"]);
    assert_eq!(
        db.incident_on_call(id).expect("on call"),
        [("a".to_owned(), 0, "alice (rotation r)".to_owned())]
    );
    assert!(db.incident_fingerprints(999_999).expect("none").is_empty());
    // Alertmanager resolves the group: the write names the incident it closed.
    let mut resolved = routed(event("f1", Status::Resolved, 1), &["a"]);
    resolved.group_resolved = true;
    let o = ingest_one(db, vec![resolved]);
    assert_eq!((o.resolved, o.closed.as_slice()), (1, [id].as_slice()));
    assert_eq!(state(db, id), IncidentState::Resolved);
}

pub(crate) fn relay_clock_and_last_event_id(db: &mut dyn Backend) {
    assert_eq!(db.last_event_id().expect("last"), 0);
    assert_eq!(db.relay_clock().expect("clock"), 0);
    ingest_one(db, vec![routed(event("f1", Status::Firing, 1), &["a"])]);
    let first = db.last_event_id().expect("last");
    assert!(first > 0);
    // A duplicate stores nothing.
    ingest_one(db, vec![routed(event("f1", Status::Firing, 1), &["a"])]);
    assert_eq!(db.last_event_id().expect("last"), first);
    ingest_one(db, vec![routed(event("f2", Status::Firing, 1), &["a"])]);
    assert!(db.last_event_id().expect("last") > first);
    for clock in [1_234, 98_765] {
        write(db, Write::Storm(StormWrite::Clock(clock)));
        assert_eq!(db.relay_clock().expect("clock"), clock);
    }
}

pub(crate) fn ack_key_is_created_and_stable(db: &mut dyn Backend) {
    let key = db.ack_key().expect("key");
    assert!(key.len() >= 32, "{} bytes", key.len());
    ingest_one(db, vec![routed(event("f1", Status::Firing, 1), &["a"])]);
    assert_eq!(db.ack_key().expect("key"), key);
}

pub(crate) fn prune_keeps_the_newest_ids(db: &mut dyn Backend) {
    let o = open_incident(db, "g1", &["a"]);
    let id = o.opened[0];
    record(db, o.deliveries[0].1, delivered());
    transition(db, id, Action::Resolve);
    for p in db.pending("a").expect("pending") {
        record(db, p.id, delivered());
    }
    let last_event = db.last_event_id().expect("last");
    let w = write(
        db,
        Write::Prune {
            before_ms: i64::MAX,
        },
    );
    assert!(matches!(w, Written::Pruned(_)));
    // The newest incident and event stay, so that no id is handed out again.
    assert!(db.incident(id).expect("read").is_some());
    assert_eq!(db.last_event_id().expect("last"), last_event);
    let next = open_incident(db, "g2", &["a"]);
    assert!(next.opened[0] > id);
    assert!(db.last_event_id().expect("last") > last_event);
    assert!(next.deliveries[0].1 > o.deliveries[0].1);
}

pub(crate) fn inbound_sids_are_remembered(db: &mut dyn Backend) {
    let mut first = |sid: &str| match write(db, Write::InboundSid { sid: sid.into() }) {
        Written::FirstTime(new) => new,
        other => panic!("{other:?}"),
    };
    assert!(first("SM1"));
    assert!(!first("SM1"), "a replay");
    assert!(first("SM2"));
}

pub(crate) fn call_outcomes_stay_on_their_call(db: &mut dyn Backend) {
    let o = open_incident(db, "g1", &["phone/+1"]);
    let (incident, id) = (o.opened[0], o.deliveries[0].1);
    let outcome = |db: &mut dyn Backend, sid: &str, what: &str| {
        let w = Write::CallOutcome {
            id,
            call_sid: sid.into(),
            outcome: what.into(),
        };
        match write(db, w) {
            Written::FirstTime(kept) => kept,
            other => panic!("{other:?}"),
        }
    };
    // Not yet recorded as that call: nothing to hang it on.
    assert!(!outcome(db, "CA1", "busy"));
    let call = Attempt::Delivered {
        provider_ref: Some("CA1".into()),
    };
    record(db, id, call);
    assert_eq!(
        db.load(id)
            .expect("load")
            .expect("job")
            .provider_ref
            .as_deref(),
        Some("CA1")
    );
    assert!(!outcome(db, "CA2", "busy"), "another call's outcome");
    assert!(outcome(db, "CA1", "answered, key 1 pressed"));
    assert!(!outcome(db, "CA1", "answered, no key 1"), "the first stays");
    let d = db.incident_deliveries(incident).expect("deliveries");
    assert_eq!(d[0].2, DeliveryState::Delivered);
    assert_eq!(d[0].4.as_deref(), Some("answered, key 1 pressed"));
}

pub(crate) fn sent_to_the_destinations_paged(db: &mut dyn Backend) {
    use AckTarget::Incident;
    let a = open_incident(db, "g1", &["sms/+1", "sms/+2", "sms/+6"]);
    let one = a.opened[0];
    // Not attempted yet: its record may lag behind the SMS.
    assert!(db.sent_to("sms/+1", Incident(one)).expect("query"));
    record(db, a.deliveries[0].1, delivered());
    assert!(db.sent_to("sms/+1", Incident(one)).expect("query"));
    // Given up on: a failed attempt may have reached the phone all the same.
    let dead = Attempt::Dead {
        error: "timeout".into(),
    };
    record(db, a.deliveries[1].1, dead);
    assert!(db.sent_to("sms/+2", Incident(one)).expect("query"));
    // Held back by a budget: never sent.
    let held = Attempt::Skipped {
        reason: "budget".into(),
    };
    record(db, a.deliveries[2].1, held);
    assert!(!db.sent_to("sms/+6", Incident(one)).expect("query"));
    assert!(!db.sent_to("other/+1", Incident(one)).expect("query"));
    assert!(!db.sent_to("sms/+1", Incident(999_999)).expect("query"));
    assert!(!db.sent_to("sms/+1", AckTarget::Storm(1)).expect("query"));
    assert!(db.storm(1).expect("read").is_none());
}

pub(crate) fn budget_admits_then_holds(db: &mut dyn Backend) {
    let o = ingest_one(
        db,
        vec![
            routed(event("f1", Status::Firing, 1), &["sms/+1"]),
            routed(event("f2", Status::Firing, 2), &["sms/+1"]),
            routed(event("f3", Status::Firing, 3), &["sms/+1"]),
        ],
    );
    let budget = BudgetAt {
        destination: "sms/+1".into(),
        max: 1,
        per_ms: 3_600_000,
        overflow: vec!["mail".into()],
        label: "1 per 1h".into(),
    };
    let admit = |delivery| {
        Write::Storm(StormWrite::BudgetAdmit {
            delivery,
            budget: budget.clone(),
            clock: 1_000,
        })
    };
    let written = |w| match w {
        Written::Storm(s) => s,
        other => panic!("not a storm write: {other:?}"),
    };
    assert!(matches!(
        written(write(db, admit(o.deliveries[0].1))),
        StormWritten::Admitted { .. }
    ));
    assert!(matches!(
        written(write(db, admit(o.deliveries[1].1))),
        StormWritten::Held {
            exhausted: true,
            ..
        }
    ));
    assert!(matches!(
        written(write(db, admit(o.deliveries[2].1))),
        StormWritten::Held {
            exhausted: false,
            ..
        }
    ));
    // A held delivery is skipped: it leaves the queue.
    let pending: Vec<i64> = db
        .pending("sms/+1")
        .expect("pending")
        .iter()
        .map(|p| p.id)
        .collect();
    assert_eq!(pending, [o.deliveries[0].1]);
    assert!(db.relay_clock().expect("clock") >= 1_000);
}

/// A storm rule's matchers: only incidents whose opening alert matches count toward a storm
/// and join it; the others are paged as ever.
pub(crate) fn storm_matchers_pick_the_incidents_that_count(db: &mut dyn Backend) {
    let rule = RuleAt {
        policy: "p".into(),
        window_ms: 60_000,
        threshold: 1,
        group_by: Vec::new(),
        matchers: crate::matcher::parse_set(r#"{alertname=~"NodeDown|UpsOnBattery"}"#)
            .expect("matchers"),
        destinations: vec!["summary".into()],
        on_call: BTreeMap::new(),
    };
    let opened = |db: &mut dyn Backend, group: &str, alertname: &str, clock| {
        let mut e = with_route(routed(event(group, Status::Firing, 1), &["a"]));
        e.event.group_key = group.into();
        e.event.labels.insert("alertname".into(), alertname.into());
        let id = ingest_one(db, vec![e]).opened[0];
        let w = Write::Storm(StormWrite::Opened {
            opened: vec![id],
            rules: vec![rule.clone()],
            clock,
        });
        match write(db, w) {
            Written::Storm(StormWritten::Opened { detected, .. }) => (id, detected),
            other => panic!("not opened: {other:?}"),
        }
    };
    // Three incidents that do not match: no storm, though more than the threshold.
    for (i, g) in ["g1", "g2", "g3"].iter().enumerate() {
        let (id, detected) = opened(db, g, "PiHot", 1_000 + i as i64);
        assert!(detected.is_empty(), "{detected:?}");
        assert_eq!(db.incident(id).expect("read").expect("exists").storm, None);
    }
    let (a, detected) = opened(db, "g4", "NodeDown", 2_000);
    assert!(
        detected.is_empty(),
        "one matching incident is no storm: {detected:?}"
    );
    let (b, detected) = opened(db, "g5", "UpsOnBattery", 2_001);
    assert_eq!(detected.len(), 1, "{detected:?}");
    let view = db.storm(detected[0].0).expect("read").expect("exists");
    let mut members: Vec<i64> = view.incidents.iter().map(|i| i.id).collect();
    members.sort_unstable();
    assert_eq!(members, [a, b]);
}

pub(crate) fn storms_gather_incidents(db: &mut dyn Backend) {
    let rule = RuleAt {
        policy: "p".into(),
        window_ms: 60_000,
        threshold: 1,
        group_by: Vec::new(),
        matchers: Vec::new(),
        destinations: vec!["summary".into()],
        on_call: BTreeMap::new(),
    };
    let opened = |db: &mut dyn Backend, group: &str, clock| {
        let id = open_incident(db, group, &["a"]).opened[0];
        let w = Write::Storm(StormWrite::Opened {
            opened: vec![id],
            rules: vec![rule.clone()],
            clock,
        });
        match write(db, w) {
            Written::Storm(StormWritten::Opened {
                deliveries,
                detected,
                ..
            }) => (id, deliveries, detected),
            other => panic!("not opened: {other:?}"),
        }
    };
    // One incident is not a storm (more than `threshold` in the window are).
    let (a, deliveries, detected) = opened(db, "g1", 1_000);
    assert!(detected.is_empty() && deliveries.is_empty());
    assert_eq!(db.incident(a).expect("read").expect("exists").storm, None);
    let (b, deliveries, detected) = opened(db, "g2", 2_000);
    assert_eq!(detected.len(), 1, "{detected:?}");
    let (storm, policy) = &detected[0];
    assert_eq!(policy, "p");
    assert!(
        deliveries.iter().any(|d| d.0 == "summary"),
        "{deliveries:?}"
    );
    let view = db.storm(*storm).expect("read").expect("exists");
    assert_eq!((view.id, view.policy.as_str()), (*storm, "p"));
    assert_eq!(view.closed_at_ms, None);
    let mut members: Vec<i64> = view.incidents.iter().map(|i| i.id).collect();
    members.sort_unstable();
    assert_eq!(members, [a, b]);
    for id in [a, b] {
        let i = db.incident(id).expect("read").expect("exists");
        assert_eq!(i.storm, Some(*storm));
    }
    assert!(
        db.sent_to("summary", AckTarget::Storm(*storm))
            .expect("query")
    );
    assert!(
        !db.sent_to("nobody", AckTarget::Storm(*storm))
            .expect("query")
    );
    assert!(db.relay_clock().expect("clock") >= 2_000);
}

pub(crate) fn ping_answers(db: &mut dyn Backend) {
    db.ping().expect("ping");
    db.recover().expect("nothing to recover");
    db.ping().expect("ping");
}

/// Opens an incident of group `group` under `policy` whose first alert carries `labels` and
/// `annotations`.
fn open_labelled(
    db: &mut dyn Backend,
    group: &str,
    policy: &str,
    labels: &[(&str, &str)],
    annotations: &[(&str, &str)],
) -> i64 {
    let mut e = routed(event(group, Status::Firing, 1), &["a"]);
    e.event.group_key = group.into();
    for (k, v) in labels {
        e.event.labels.insert((*k).into(), (*v).into());
    }
    for (k, v) in annotations {
        e.event.annotations.insert((*k).into(), (*v).into());
    }
    e.routes = vec![RouteRef {
        route: "#1".into(),
        policy: policy.into(),
    }];
    let o = ingest_one(db, vec![e]);
    assert_eq!(o.opened.len(), 1, "{o:?}");
    o.opened[0]
}

fn page(db: &mut dyn Backend, q: IncidentQuery) -> Vec<i64> {
    db.incident_page(&IncidentQuery { limit: 100, ..q })
        .expect("page")
        .iter()
        .map(|i| i.id)
        .collect()
}

fn console(db: &mut dyn Backend, w: ConsoleWrite) -> ConsoleWritten {
    match write(db, Write::Console(w)) {
        Written::Console(c) => c,
        other => panic!("not a console write: {other:?}"),
    }
}

pub(crate) fn console_pages_filter_incidents(db: &mut dyn Backend) {
    let crit = open_labelled(
        db,
        "g1",
        "p",
        &[("severity", "critical"), ("site", "berlin")],
        &[("summary", "Disk 95% full")],
    );
    let warn = open_labelled(
        db,
        "g2",
        "q",
        &[
            ("severity", "warning"),
            ("site", "paris"),
            ("alertname", "PiHot"),
        ],
        &[],
    );
    let hostile = open_labelled(
        db,
        "g3",
        "p",
        &[
            ("severity", "critical"),
            ("instance", "<script>alert(1)</script>"),
        ],
        &[("description", "a_b")],
    );
    transition(db, warn, Action::Ack);
    transition(db, hostile, Action::Resolve);
    let all = IncidentQuery::default();
    assert_eq!(page(db, all.clone()), [hostile, warn, crit], "newest first");
    let q = |f: &dyn Fn(&mut IncidentQuery)| {
        let mut q = IncidentQuery::default();
        f(&mut q);
        q
    };
    let states = |s: Vec<IncidentState>| q(&|q| q.states = s.clone());
    assert_eq!(page(db, states(vec![IncidentState::Open])), [crit]);
    assert_eq!(
        page(
            db,
            states(vec![IncidentState::Acked, IncidentState::Resolved])
        ),
        [hostile, warn]
    );
    let severity = q(&|q| q.severity = Some("critical".into()));
    assert_eq!(page(db, severity), [hostile, crit]);
    assert_eq!(page(db, q(&|q| q.site = Some("paris".into()))), [warn]);
    assert!(page(db, q(&|q| q.site = Some("Paris".into()))).is_empty());
    assert_eq!(page(db, q(&|q| q.policy = Some("q".into()))), [warn]);
    let both = q(&|q| {
        q.severity = Some("critical".into());
        q.site = Some("berlin".into());
    });
    assert_eq!(page(db, both), [crit]);
    let text = |t: &str| {
        let t = t.to_owned();
        q(&move |q| q.text = Some(t.clone()))
    };
    // The alert's name (a label), its summary (an annotation), any label value; any case.
    assert_eq!(page(db, text("pihot")), [warn]);
    assert_eq!(page(db, text("DISK")), [crit]);
    assert_eq!(page(db, text("BERL")), [crit]);
    // `%` and `_` match themselves, not any text.
    assert_eq!(page(db, text("95%")), [crit]);
    assert!(page(db, text("9%f")).is_empty());
    assert_eq!(page(db, text("a_b")), [hostile]);
    assert!(page(db, text("a_c")).is_empty());
    assert!(page(db, text("\\")).is_empty());
    // Markup is data: found as text and handed back as it was stored.
    assert_eq!(page(db, text("<script>")), [hostile]);
    let got = db.incident_page(&text("<script>")).expect("page");
    assert!(got.is_empty(), "limit 0 lists nothing");
    let got = db
        .incident_page(&IncidentQuery {
            limit: 1,
            ..text("<script>")
        })
        .expect("page");
    assert_eq!(
        got[0].labels.get("instance").map(String::as_str),
        Some("<script>alert(1)</script>")
    );
    assert_eq!(
        got[0].labels.get("severity").map(String::as_str),
        Some("critical")
    );
    // Every filter at once, matching nothing.
    let none = q(&|q| {
        q.states = vec![IncidentState::Open];
        q.policy = Some("q".into());
    });
    assert!(page(db, none).is_empty());
}

pub(crate) fn console_pages_by_keyset(db: &mut dyn Backend) {
    let ids: Vec<i64> = (0..7)
        .map(|i| open_labelled(db, &format!("g{i}"), "p", &[], &[]))
        .collect();
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let got = db
            .incident_page(&IncidentQuery {
                before,
                limit: 3,
                ..IncidentQuery::default()
            })
            .expect("page");
        assert!(got.len() <= 3);
        let Some(last) = got.last() else { break };
        before = Some(last.id);
        seen.extend(got.iter().map(|i| i.id));
    }
    let mut newest_first = ids.clone();
    newest_first.reverse();
    assert_eq!(seen, newest_first, "every incident once, newest first");
    // A page after an id lists only older ones, with the filters.
    let older = db
        .incident_page(&IncidentQuery {
            before: Some(ids[2]),
            limit: 10,
            ..IncidentQuery::default()
        })
        .expect("page");
    assert_eq!(
        older.iter().map(|i| i.id).collect::<Vec<_>>(),
        [ids[1], ids[0]]
    );
}

pub(crate) fn console_timeline_has_events_deliveries_and_actions_in_order(db: &mut dyn Backend) {
    assert!(db.incident_timeline(999_999).expect("read").is_none());
    let mut first = with_route(routed(event("f1", Status::Firing, 1), &["a", "b"]));
    first.on_call = BTreeMap::from([("a".into(), "alice (rotation r)".into())]);
    let opened = ingest_one(db, vec![first]);
    let id = opened.opened[0];
    // Another group's alert: not in this timeline.
    let mut other = routed(event("x1", Status::Firing, 1), &["a"]);
    other.event.group_key = "other".into();
    ingest_one(db, vec![other]);
    ingest_one(
        db,
        vec![with_route(routed(event("f2", Status::Firing, 2), &["a"]))],
    );
    record(
        db,
        opened.deliveries[0].1,
        Attempt::Delivered {
            provider_ref: Some("ts1".into()),
        },
    );
    let dead = Attempt::Dead {
        error: "400 bad request".into(),
    };
    record(db, opened.deliveries[1].1, dead);
    transition(db, id, Action::Ack);
    // Alertmanager resolves the group: the RESOLVED messages follow the firing ones.
    let mut resolved = routed(event("f1", Status::Resolved, 1), &["a"]);
    resolved.group_resolved = true;
    let o = ingest_one(db, vec![resolved]);
    assert_eq!(o.closed, [id]);
    // The group fires again: a new incident with a timeline of its own.
    let next = open_incident(db, "g", &["a"]).opened[0];
    assert_ne!(next, id);

    let t = db.incident_timeline(id).expect("read").expect("exists");
    assert_eq!(t.incident.id, id);
    assert_eq!(t.incident.state, IncidentState::Resolved);
    let events: Vec<(&str, Status)> = t
        .events
        .iter()
        .map(|e| (e.event.fingerprint.as_str(), e.event.status))
        .collect();
    assert_eq!(
        events,
        [
            ("f1", Status::Firing),
            ("f2", Status::Firing),
            ("f1", Status::Resolved)
        ]
    );
    assert!(t.events.is_sorted_by_key(|e| e.id));
    assert!(t.events.iter().all(|e| e.received_ms > 0));
    assert!(t.deliveries.is_sorted_by_key(|d| d.id));
    let summary: Vec<(&str, i64, DeliveryState, bool, bool)> = t
        .deliveries
        .iter()
        .map(|d| {
            (
                d.destination.as_str(),
                d.step,
                d.state,
                d.notice.is_some(),
                d.resolved,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a", 0, DeliveryState::Delivered, false, false),
            ("b", 0, DeliveryState::Dead, false, false),
            ("a", 0, DeliveryState::Pending, false, false),
            // The acknowledgement's notice to the destination still paged.
            ("a", -1, DeliveryState::Pending, true, false),
            // The RESOLVED messages of f1 follow its firing messages, one per destination.
            ("a", 0, DeliveryState::Pending, false, true),
            ("b", 0, DeliveryState::Pending, false, true),
        ]
    );
    let first = &t.deliveries[0];
    assert_eq!(first.provider_ref.as_deref(), Some("ts1"));
    assert_eq!(first.on_call.as_deref(), Some("alice (rotation r)"));
    assert_eq!(first.attempts, 1);
    assert_eq!(
        t.deliveries[1].last_error.as_deref(),
        Some("400 bad request")
    );
    let actions: Vec<(&str, &str)> = t
        .actions
        .iter()
        .map(|a| (a.action.as_str(), a.by.as_str()))
        .collect();
    assert_eq!(
        actions,
        [("acknowledged", "alice"), ("resolved", "Alertmanager")]
    );
    assert!(t.actions.iter().all(|a| a.at_ms > 0));
    let t = db.incident_timeline(next).expect("read").expect("exists");
    assert_eq!(t.events.len(), 1);
    assert!(t.actions.is_empty());
}

/// (action, by) of what was done to incident `id`, oldest first.
fn actions(db: &mut dyn Backend, id: i64) -> Vec<(String, String)> {
    let t = db.incident_timeline(id).expect("read").expect("exists");
    assert!(t.actions.is_sorted_by_key(|a| a.at_ms));
    t.actions.into_iter().map(|a| (a.action, a.by)).collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect()
}

pub(crate) fn console_records_every_kind_of_action(db: &mut dyn Backend) {
    // A human's ack, un-ack and resolve; what changes nothing is not recorded.
    let a = open_incident(db, "g1", &["a"]).opened[0];
    transition(db, a, Action::Ack);
    transition(db, a, Action::Ack);
    transition(db, a, Action::Unack);
    transition(db, a, Action::Resolve);
    transition(db, a, Action::Resolve);
    assert_eq!(
        actions(db, a),
        pairs(&[
            ("acknowledged", "alice"),
            ("un-acknowledged", "alice"),
            ("resolved", "alice")
        ])
    );
    // A storm's ack of all its incidents, and re-sync's resolve.
    let b = open_incident(db, "g2", &["a"]).opened[0];
    let c = open_incident(db, "g3", &["a"]).opened[0];
    write(
        db,
        Write::AckAll {
            incidents: vec![(b, 0), (c, 0)],
            by: "bob via SMS".into(),
        },
    );
    let after_event = db.last_event_id().expect("last");
    write(
        db,
        Write::ResolveStale {
            id: c,
            by: "re-sync".into(),
            elapsed_ms: 0,
            after_event,
            after_ms: i64::MAX,
        },
    );
    assert_eq!(actions(db, b), pairs(&[("acknowledged", "bob via SMS")]));
    assert_eq!(
        actions(db, c),
        pairs(&[("acknowledged", "bob via SMS"), ("resolved", "re-sync")])
    );
    // The schedule's steps, and an escalate-now that reopens an acknowledged incident.
    let d = open_incident(db, "g4", &["a"]).opened[0];
    let step = |db: &mut dyn Backend, reopen: bool, by: Option<&str>| {
        let next = db.incident(d).expect("read").expect("exists").next_step;
        write(
            db,
            Write::FireStep {
                id: d,
                expected_step: next,
                step: 1,
                elapsed_ms: 0,
                destinations: vec!["b".into()],
                on_call: BTreeMap::new(),
                allow_acked: false,
                reopen,
                by: by.map(str::to_owned),
            },
        )
    };
    step(db, false, None);
    transition(db, d, Action::Ack);
    // Not due while acknowledged: nothing fired, nothing recorded.
    assert!(matches!(step(db, false, None), Written::Fired(f) if f.is_empty()));
    step(db, true, Some("carol via console"));
    assert_eq!(
        actions(db, d),
        pairs(&[
            ("escalated", "escalation"),
            ("acknowledged", "alice"),
            ("reopened", "carol via console"),
            ("escalated", "carol via console")
        ])
    );
    // An escalate-now of an open incident only escalates.
    step(db, true, Some("carol via console"));
    assert_eq!(actions(db, d).len(), 5);
    // Alertmanager's resolved notification closes the group's incident.
    let mut resolved = routed(event("g4", Status::Resolved, 1), &[]);
    resolved.event.group_key = "g4".into();
    resolved.group_resolved = true;
    ingest_one(db, vec![resolved]);
    assert_eq!(
        actions(db, d).last(),
        Some(&("resolved".to_owned(), "Alertmanager".to_owned()))
    );
    console_records_a_storm_step(db);
}

/// A storm member's step sends the storm's summary: recorded as the member's escalation.
fn console_records_a_storm_step(db: &mut dyn Backend) {
    let rule = RuleAt {
        policy: "p".into(),
        window_ms: 60_000,
        threshold: 1,
        group_by: Vec::new(),
        matchers: Vec::new(),
        destinations: vec!["summary".into()],
        on_call: BTreeMap::new(),
    };
    let mut members = Vec::new();
    let mut storm = None;
    for (i, group) in ["s1", "s2"].iter().enumerate() {
        let id = open_incident(db, group, &["a"]).opened[0];
        members.push(id);
        let w = Write::Storm(StormWrite::Opened {
            opened: vec![id],
            rules: vec![rule.clone()],
            clock: 1_000 + i64::try_from(i).expect("small"),
        });
        if let Written::Storm(StormWritten::Opened { detected, .. }) = write(db, w)
            && let Some((s, _)) = detected.first()
        {
            storm = Some(*s);
        }
    }
    let storm = storm.expect("a storm");
    let fire = |db: &mut dyn Backend, id: i64| {
        let next = db.incident(id).expect("read").expect("exists").next_step;
        let w = Write::Storm(StormWrite::FireStep {
            id,
            storm,
            expected_step: next,
            step: 1,
            elapsed_ms: 60_000,
            destinations: vec!["summary".into()],
            on_call: BTreeMap::new(),
            allow_acked: false,
        });
        match write(db, w) {
            Written::Storm(StormWritten::Fired(fired)) => fired,
            other => panic!("a storm step answers Fired: {other:?}"),
        }
    };
    let id = members[1];
    assert!(!fire(db, id).is_empty(), "the summary is sent");
    assert_eq!(actions(db, id), pairs(&[("escalated", "escalation")]));
    // The other member's step was in that summary: escalated too, nothing sent again.
    assert!(fire(db, members[0]).is_empty());
    assert_eq!(
        actions(db, members[0]),
        pairs(&[("escalated", "escalation")])
    );
    // A step no longer due records nothing.
    let stale = Write::Storm(StormWrite::FireStep {
        id,
        storm,
        expected_step: 0,
        step: 1,
        elapsed_ms: 60_000,
        destinations: vec!["summary".into()],
        on_call: BTreeMap::new(),
        allow_acked: false,
    });
    write(db, stale);
    assert_eq!(actions(db, id).len(), 1);
    // The summary is in the member's timeline, as its storm's.
    let t = db.incident_timeline(id).expect("read").expect("exists");
    assert!(
        t.deliveries
            .iter()
            .any(|d| d.storm == Some(storm) && d.step == 1),
        "{:?}",
        t.deliveries
    );
}

pub(crate) fn console_destination_health_counts(db: &mut dyn Backend) {
    assert!(db.destination_health().expect("health").is_empty());
    let o = ingest_one(
        db,
        vec![
            routed(event("f1", Status::Firing, 1), &["a", "b"]),
            routed(event("f2", Status::Firing, 2), &["a", "b"]),
            routed(event("f3", Status::Firing, 3), &["a"]),
        ],
    );
    let id = |dest: &str, n: usize| {
        o.deliveries
            .iter()
            .filter(|d| d.0 == dest)
            .nth(n)
            .expect("delivery")
            .1
    };
    record(db, id("a", 0), delivered());
    let retry = Attempt::Retry {
        next_attempt_at_ms: i64::MAX,
        error: "503 unavailable".into(),
    };
    record(db, id("a", 1), retry);
    let skipped = Attempt::Skipped {
        reason: "held back by a budget".into(),
    };
    record(db, id("a", 2), skipped);
    let dead = |e: &str| Attempt::Dead { error: e.into() };
    record(db, id("b", 0), dead("401 unauthorized"));
    record(db, id("b", 1), dead("404 not found"));
    let health = db.destination_health().expect("health");
    let names: Vec<&str> = health.iter().map(|h| h.destination.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    let (a, b) = (&health[0], &health[1]);
    assert_eq!((a.pending, a.dead), (1, 0));
    assert_eq!(a.oldest_pending_ms, Some(o.deliveries[0].2));
    assert!(a.last_success_ms.is_some());
    assert!(a.last_failure_ms.is_some());
    assert_eq!(a.last_error.as_deref(), Some("503 unavailable"));
    assert_eq!((b.pending, b.dead), (0, 2));
    assert_eq!((b.oldest_pending_ms, b.last_success_ms), (None, None));
    assert!(b.last_failure_ms.is_some());
    // Of two failures recorded in the same millisecond, the later one.
    assert_eq!(b.last_error.as_deref(), Some("404 not found"));
}

pub(crate) fn console_dead_letters_are_retried_once(db: &mut dyn Backend) {
    assert!(db.dead_letters(10).expect("dead").is_empty());
    let o = open_incident(db, "g1", &["a", "b", "c"]);
    let incident = o.opened[0];
    let (a, b, c) = (o.deliveries[0].1, o.deliveries[1].1, o.deliveries[2].1);
    let dead = |e: &str| Attempt::Dead { error: e.into() };
    let r = db.write_batch(vec![
        Write::Record {
            id: a,
            attempts: 7,
            attempt: dead("timeout"),
        },
        Write::Record {
            id: b,
            attempts: 2,
            attempt: dead("400"),
        },
    ]);
    assert!(r.iter().all(Result::is_ok), "{r:?}");
    let letters = db.dead_letters(10).expect("dead");
    assert_eq!(
        letters.iter().map(|l| l.id).collect::<Vec<_>>(),
        [b, a],
        "newest first"
    );
    let first = &letters[1];
    assert_eq!(
        (first.destination.as_str(), first.incident, first.attempts),
        ("a", Some(incident), 7)
    );
    assert_eq!(first.last_error.as_deref(), Some("timeout"));
    assert_eq!(db.dead_letters(1).expect("dead").len(), 1);
    // A dead letter goes back to its queue: pending, no attempts, due now.
    let Written::Console(ConsoleWritten::Retried(Some((dest, id, created)))) =
        write(db, Write::Console(ConsoleWrite::RetryDead { id: a }))
    else {
        panic!("retried");
    };
    assert_eq!((dest.as_str(), id), ("a", a));
    let job = db.load(a).expect("load").expect("exists");
    assert_eq!((job.state, job.attempts), (DeliveryState::Pending, 0));
    assert_eq!(
        (job.created_at_ms, job.next_attempt_at_ms),
        (created, created)
    );
    assert_eq!(
        db.pending("a").expect("pending"),
        [PendingRef {
            id: a,
            created_at_ms: created
        }]
    );
    // The commit tells the other instances to queue it, like any delivery created.
    let written = Written::Console(ConsoleWritten::Retried(Some((dest, id, created))));
    assert_eq!(written.deliveries().len(), 1);
    // Again, or a delivery that is not dead (pending, never stored): nothing.
    for id in [a, c, 999_999] {
        assert_eq!(
            console(db, ConsoleWrite::RetryDead { id }),
            ConsoleWritten::Retried(None),
            "delivery {id}"
        );
    }
    assert_eq!(
        db.dead_letters(10)
            .expect("dead")
            .iter()
            .map(|l| l.id)
            .collect::<Vec<_>>(),
        [b]
    );
}

pub(crate) fn console_sessions_open_expire_and_close(db: &mut dyn Backend) {
    let session = |user: &str, expires_ms| ConsoleSession {
        user: user.into(),
        csrf: format!("csrf-{user}"),
        created_ms: 1_000,
        expires_ms,
    };
    assert_eq!(db.console_session("h1", 0).expect("read"), None);
    let open = |db: &mut dyn Backend, hash: &str, s: ConsoleSession| {
        let w = ConsoleWrite::OpenSession {
            token_hash: hash.into(),
            session: s,
        };
        assert_eq!(console(db, w), ConsoleWritten::Done);
    };
    open(db, "h1", session("alice", 5_000));
    open(db, "h2", session("bob", 9_000));
    assert_eq!(
        db.console_session("h1", 4_999).expect("read"),
        Some(session("alice", 5_000))
    );
    // Expired: as if there were none.
    assert_eq!(db.console_session("h1", 5_000).expect("read"), None);
    assert_eq!(db.console_session("nope", 0).expect("read"), None);
    // Opened again under the same hash: the new one.
    open(db, "h1", session("carol", 8_000));
    assert_eq!(
        db.console_session("h1", 6_000).expect("read"),
        Some(session("carol", 8_000))
    );
    let close = ConsoleWrite::CloseSession {
        token_hash: "h1".into(),
    };
    assert_eq!(console(db, close.clone()), ConsoleWritten::Done);
    assert_eq!(console(db, close), ConsoleWritten::Done, "twice is fine");
    assert_eq!(db.console_session("h1", 6_000).expect("read"), None);
    assert_eq!(
        db.console_session("h2", 6_000).expect("read"),
        Some(session("bob", 9_000))
    );
}

pub(crate) fn console_prune_drops_actions_of_pruned_incidents_and_expired_sessions(
    db: &mut dyn Backend,
) {
    let old = open_incident(db, "g1", &[]).opened[0];
    transition(db, old, Action::Ack);
    transition(db, old, Action::Resolve);
    let kept = open_incident(db, "g2", &[]).opened[0];
    transition(db, kept, Action::Ack);
    // The newest incident always stays: one more, so that `old` may go.
    open_incident(db, "g3", &[]);
    let now = crate::time::now_millis();
    for (hash, expires_ms) in [("expired", now - 1), ("live", now + 3_600_000)] {
        let w = ConsoleWrite::OpenSession {
            token_hash: hash.into(),
            session: ConsoleSession {
                user: "alice".into(),
                csrf: "c".into(),
                created_ms: now - 10,
                expires_ms,
            },
        };
        console(db, w);
    }
    assert_eq!(actions(db, old).len(), 2);
    let w = write(
        db,
        Write::Prune {
            before_ms: i64::MAX,
        },
    );
    let Written::Pruned(n) = w else {
        panic!("pruned");
    };
    assert!(n >= 4, "the incident, its two actions, the session: {n}");
    assert!(db.incident_timeline(old).expect("read").is_none());
    assert_eq!(actions(db, kept), pairs(&[("acknowledged", "alice")]));
    // Its actions went with it: an incident with its id again (never, but) would have none.
    let live = db.console_session("live", now).expect("read");
    assert!(live.is_some());
    assert!(
        db.console_session("expired", now - 5)
            .expect("read")
            .is_none()
    );
}

fn new_window(starts_ms: i64, ends_ms: i64, weekly: bool) -> crate::model::maintenance::NewWindow {
    use crate::model::maintenance::{NewWindow, matchers_text, parse_matchers};
    let matchers = parse_matchers(r#"{site="a", severity=~"warn.*"}"#).expect("matchers");
    NewWindow {
        matchers_text: matchers_text(&matchers),
        matchers,
        starts_ms,
        ends_ms,
        weekly,
        reason: "power work".into(),
        author: "alice".into(),
    }
}

fn maintain(
    db: &mut dyn Backend,
    w: crate::model::maintenance::MaintenanceWrite,
) -> crate::model::maintenance::MaintenanceWritten {
    match write(db, Write::Maintenance(w)) {
        Written::Maintenance(m) => m,
        other => panic!("not a maintenance write: {other:?}"),
    }
}

fn create_window(db: &mut dyn Backend, starts_ms: i64, ends_ms: i64, weekly: bool) -> i64 {
    use crate::model::maintenance::{MaintenanceWrite as M, MaintenanceWritten as W};
    match maintain(db, M::Create(new_window(starts_ms, ends_ms, weekly))) {
        W::Created(id) => id,
        other => panic!("not created: {other:?}"),
    }
}

const HOUR_MS: i64 = 3_600_000;

/// Windows are stored as given, listed while in force, to come or over for less than a week,
/// and ended by hand once.
pub(crate) fn maintenance_windows_are_created_listed_and_ended(db: &mut dyn Backend) {
    use crate::model::maintenance::{MaintenanceWrite as M, MaintenanceWritten as W, WEEK_MS};
    let now = crate::time::now_millis();
    let current = create_window(db, now - HOUR_MS, now + HOUR_MS, false);
    let weekly_old = create_window(db, now - 30 * WEEK_MS, now - 30 * WEEK_MS + HOUR_MS, true);
    let long_over = create_window(db, now - 3 * WEEK_MS, now - 2 * WEEK_MS, false);
    let recently_over = create_window(db, now - 3 * HOUR_MS, now - 2 * HOUR_MS, false);
    let future = create_window(db, now + WEEK_MS, now + WEEK_MS + HOUR_MS, false);
    let listed = db.maintenance_windows().expect("list");
    let ids: Vec<i64> = listed.iter().map(|w| w.id).collect();
    assert_eq!(ids, [current, weekly_old, recently_over, future]);
    assert!(!ids.contains(&long_over));
    let w = &listed[0];
    assert_eq!(w.matchers_text, r#"{site="a", severity=~"warn.*"}"#);
    assert_eq!(w.matchers.len(), 2);
    assert_eq!((w.starts_ms, w.ends_ms), (now - HOUR_MS, now + HOUR_MS));
    assert_eq!(
        (w.reason.as_str(), w.author.as_str()),
        ("power work", "alice")
    );
    assert!(!w.weekly && listed[1].weekly);
    assert!(w.created_ms > 0);
    assert_eq!((w.ended_ms, w.suppressed), (None, 0));
    assert!(w.active_at(now));

    // Ending: once, and not a window already over.
    let end = |id, at| M::End {
        id,
        by: "bob".into(),
        at,
    };
    assert_eq!(
        maintain(db, end(current, now)),
        W::Ended {
            found: true,
            released: Vec::new()
        }
    );
    assert!(matches!(
        maintain(db, end(current, now)),
        W::Ended { found: false, .. }
    ));
    assert!(matches!(
        maintain(db, end(recently_over, now)),
        W::Ended { found: false, .. }
    ));
    assert!(matches!(
        maintain(db, end(999, now)),
        W::Ended { found: false, .. }
    ));
    // A weekly window ends for good; a window to come is cancelled.
    assert!(matches!(
        maintain(db, end(weekly_old, now)),
        W::Ended { found: true, .. }
    ));
    assert!(matches!(
        maintain(db, end(future, now)),
        W::Ended { found: true, .. }
    ));
    let listed = db.maintenance_windows().expect("list");
    let ended = listed
        .iter()
        .find(|w| w.id == current)
        .expect("still listed");
    assert_eq!(
        (ended.ended_ms, ended.ended_by.as_deref()),
        (Some(now), Some("bob"))
    );
    assert!(!ended.active_at(now));
    assert!(listed.iter().all(|w| !w.active_at(now + WEEK_MS)));
}

/// A firing event in maintenance is stored, opens a held incident whose first step is still
/// to send, creates no delivery and counts for its window; its resolved event sends nothing.
/// Releasing makes the incident's first step due; a resolved incident keeps the mark.
pub(crate) fn maintenance_holds_at_intake_and_releases(db: &mut dyn Backend) {
    use crate::model::maintenance::{MaintenanceWrite as M, MaintenanceWritten as W};
    let now = crate::time::now_millis();
    let window = create_window(db, now - HOUR_MS, now + HOUR_MS, false);
    let held_event = |fp: &str, group: &str, status| {
        let mut e = with_route(routed(event(fp, status, 1), &["sms"]));
        e.event.group_key = group.into();
        e.maintenance = Some(window);
        e
    };
    let o = ingest_one(db, vec![held_event("f1", "g1", Status::Firing)]);
    assert_eq!((o.accepted, o.suppressed), (1, 1));
    assert!(o.deliveries.is_empty());
    assert_eq!(o.held, o.opened);
    let first = o.opened[0];
    let i = db.incident(first).expect("read").expect("incident");
    assert_eq!((i.maintenance, i.next_step), (Some(window), 0));
    assert_eq!(i.labels.get("alertname").map(String::as_str), Some("A"));
    // A repeat is a duplicate: not counted again. Another alert of the group is.
    let o = ingest_one(db, vec![held_event("f1", "g1", Status::Firing)]);
    assert_eq!((o.duplicates, o.suppressed), (1, 0));
    let o = ingest_one(db, vec![held_event("f2", "g1", Status::Firing)]);
    assert_eq!((o.suppressed, o.joined.clone()), (1, vec![first]));
    assert!(o.deliveries.is_empty());
    let counted = db.maintenance_windows().expect("list");
    assert_eq!(counted[0].suppressed, 2);
    // Outside maintenance: pages as usual, and an incident opened normally.
    let mut free = with_route(routed(event("f9", Status::Firing, 1), &["sms"]));
    free.event.group_key = "g9".into();
    let o = ingest_one(db, vec![free]);
    assert_eq!((o.deliveries.len(), o.suppressed), (1, 0));
    assert!(o.held.is_empty());
    let normal = db.incident(o.opened[0]).expect("read").expect("incident");
    assert_eq!((normal.maintenance, normal.next_step), (None, 1));
    // The resolved event of an alert of a held incident sends nothing, even once out of
    // maintenance (its group's incident is held).
    let mut resolved = held_event("f2", "g1", Status::Resolved);
    resolved.maintenance = None;
    let o = ingest_one(db, vec![resolved]);
    assert_eq!((o.accepted, o.deliveries.len()), (1, 0));

    // A second held incident, resolved by Alertmanager while held.
    let mut gone = held_event("f3", "g3", Status::Firing);
    let other = ingest_one(db, vec![gone.clone()]).opened[0];
    gone.event.status = Status::Resolved;
    gone.group_resolved = true;
    let o = ingest_one(db, vec![gone]);
    assert_eq!((o.closed.clone(), o.deliveries.len()), (vec![other], 0));

    // Release: the open incident escalates from its first step; the resolved one keeps the mark.
    assert_eq!(maintain(db, M::Release { window }), W::Changed(vec![first]));
    assert_eq!(maintain(db, M::Release { window }), W::Changed(Vec::new()));
    let i = db.incident(first).expect("read").expect("incident");
    assert_eq!((i.maintenance, i.next_step), (None, 0));
    let kept = db.incident(other).expect("read").expect("incident");
    assert_eq!(kept.maintenance, Some(window));
    let fired = write(
        db,
        Write::FireStep {
            id: first,
            expected_step: 0,
            step: 0,
            elapsed_ms: 0,
            destinations: vec!["sms".into()],
            on_call: BTreeMap::new(),
            allow_acked: false,
            reopen: false,
            by: None,
        },
    );
    assert!(matches!(fired, Written::Fired(d) if d.len() == 1));
}

/// The escalator holds an incident that was escalating when a window began; ending the window
/// by hand releases it in the same transaction.
pub(crate) fn maintenance_holds_an_escalating_incident(db: &mut dyn Backend) {
    use crate::model::maintenance::{MaintenanceWrite as M, MaintenanceWritten as W};
    let now = crate::time::now_millis();
    let window = create_window(db, now - HOUR_MS, now + HOUR_MS, true);
    let id = open_incident(db, "g1", &["a"]).opened[0];
    let hold = || M::Hold {
        incident: id,
        window,
    };
    assert_eq!(maintain(db, hold()), W::Changed(vec![id]));
    // Held already: nothing changes.
    assert_eq!(maintain(db, hold()), W::Changed(Vec::new()));
    let i = db.incident(id).expect("read").expect("incident");
    assert_eq!((i.maintenance, i.next_step), (Some(window), 1));
    let ended = maintain(
        db,
        M::End {
            id: window,
            by: "bob".into(),
            at: now,
        },
    );
    assert_eq!(
        ended,
        W::Ended {
            found: true,
            released: vec![id]
        }
    );
    assert_eq!(
        db.incident(id)
            .expect("read")
            .expect("incident")
            .maintenance,
        None
    );
    // A resolved incident is never held.
    transition(db, id, Action::Resolve);
    let other = create_window(db, now - HOUR_MS, now + HOUR_MS, false);
    let late = M::Hold {
        incident: id,
        window: other,
    };
    assert_eq!(maintain(db, late), W::Changed(Vec::new()));
}

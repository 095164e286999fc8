//! Tests of the PostgreSQL backend's own machinery, on one real server per test process
//! (`testpg`, Debian's `postgresql` package) and a fresh database per test. The behaviour it
//! shares with SQLite is the backend contract (`store::contract`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, OnceLock};

use testpg::TestPg;

use super::{PgSettings, Postgres};
use crate::payload::Status;
use crate::store::contract::{event, routed};
use crate::store::{Backend, RouteRef, StoreError, Write, Written};

/// The server every PostgreSQL test of this process shares (stopped by `testpg`'s watcher when
/// the process ends).
fn server() -> &'static TestPg {
    static SERVER: OnceLock<Result<TestPg, String>> = OnceLock::new();
    match SERVER.get_or_init(|| TestPg::start().map_err(|e| e.to_string())) {
        Ok(pg) => pg,
        Err(e) => panic!("cannot start PostgreSQL for the tests: {e}"),
    }
}

/// A new, empty database: its settings.
pub(crate) fn fresh_settings() -> PgSettings {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "relay_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    let pg = server();
    pg.create_database(&name).expect("create a database");
    PgSettings {
        url: format!("{}?sslmode=disable", pg.url(&name)),
        ca_file: None,
    }
}

/// A backend on a new, empty database (the contract's constructor).
pub(crate) fn fresh() -> Postgres {
    Postgres::connect(&fresh_settings()).expect("connect")
}

#[test]
fn a_new_database_has_the_latest_schema_and_a_stable_ack_key() {
    let settings = fresh_settings();
    let mut a = Postgres::connect(&settings).expect("connect");
    assert_eq!(a.schema_version().expect("version"), super::schema::known());
    // A second instance migrates nothing and reads the same key.
    let mut b = Postgres::connect(&settings).expect("connect again");
    assert_eq!(a.ack_key().expect("key"), b.ack_key().expect("key"));
    assert_eq!(a.ack_key().expect("key").len(), 32);
}

#[test]
fn instances_starting_together_migrate_once() {
    let settings = fresh_settings();
    let start = Arc::new(Barrier::new(4));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (settings, start) = (settings.clone(), Arc::clone(&start));
            std::thread::spawn(move || {
                start.wait();
                Postgres::connect(&settings).map(|mut db| db.ack_key())
            })
        })
        .collect();
    let keys: Vec<Vec<u8>> = threads
        .into_iter()
        .map(|t| {
            t.join()
                .expect("thread")
                .expect("connect")
                .expect("ack key")
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "one key for all");
}

#[test]
fn refuses_a_newer_schema() {
    let settings = fresh_settings();
    let mut db = Postgres::connect(&settings).expect("create");
    db.client
        .execute("UPDATE schema_version SET version = 99", &[])
        .expect("bump");
    match Postgres::connect(&settings) {
        Err(StoreError::NewerSchema { found: 99, .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn connection_errors_name_the_server_and_the_cause_on_one_line_without_the_password() {
    // Nothing listens on the port of a server that was just stopped.
    let mut pg = TestPg::start().expect("start");
    let port = pg.port();
    pg.stop().expect("stop");
    let settings = PgSettings {
        url: format!("postgres://relay:s3cret@127.0.0.1:{port}/relay?sslmode=disable"),
        ca_file: None,
    };
    let err = Postgres::connect(&settings)
        .expect_err("refused")
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(err.to_lowercase().contains("refused"), "{err}");
    assert!(!err.contains("s3cret") && !err.contains('\n'), "{err}");
    assert!(!format!("{settings:?}").contains("s3cret"));

    // The shared server has no TLS: `require` fails and says so.
    let mut tls = fresh_settings();
    tls.url = tls.url.replace("sslmode=disable", "sslmode=require");
    let err = Postgres::connect(&tls).expect_err("no TLS").to_string();
    assert!(err.contains("127.0.0.1:") && err.contains("TLS"), "{err}");
    let mut bad = fresh_settings();
    bad.url = bad.url.replace("sslmode=disable", "sslmode=verify-ca");
    let err = Postgres::connect(&bad)
        .expect_err("unsupported")
        .to_string();
    assert!(err.contains("verify-ca"), "{err}");
}

#[test]
fn a_lost_connection_is_a_storage_fault_and_recover_reconnects() {
    let settings = fresh_settings();
    let mut db = Postgres::connect(&settings).expect("connect");
    let mut admin = Postgres::connect(&settings).expect("connect");
    // One write that breaks a constraint is not a storage fault.
    admin
        .client
        .execute("INSERT INTO inbound_sids VALUES ('SM1', 1)", &[])
        .expect("insert");
    let dup = admin
        .client
        .execute("INSERT INTO inbound_sids VALUES ('SM1', 1)", &[])
        .expect_err("unique");
    assert!(!StoreError::from(dup).is_storage_fault());

    let pid: i32 = db
        .client
        .query_one("SELECT pg_backend_pid()", &[])
        .expect("pid")
        .get(0);
    admin
        .client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .expect("terminate");
    let err = db.ping().expect_err("the connection is gone");
    assert!(err.is_storage_fault(), "{err}");
    let r = db.write_batch(vec![Write::InboundSid { sid: "SM2".into() }]);
    assert!(matches!(&r[0], Err(e) if e.is_storage_fault()), "{r:?}");
    db.recover().expect("reconnects");
    db.ping().expect("answers again");
    let r = db.write_batch(vec![Write::InboundSid { sid: "SM2".into() }]);
    assert!(matches!(r[0], Ok(Written::FirstTime(true))), "{r:?}");
}

#[test]
fn a_failing_write_does_not_undo_the_others_in_its_batch() {
    let mut db = fresh();
    // A delivery of a missing event cannot be loaded: the Record of it updates nothing but is
    // fine; a FinishReceipt with an id the CHECK refuses cannot be made from the API, so the
    // failing write is a raw one: a meta key of a NUL byte (PostgreSQL refuses it in TEXT).
    let r = db.write_batch(vec![
        Write::InboundSid { sid: "SM1".into() },
        Write::SetMetaInt {
            key: "bad\0key".into(),
            value: 1,
        },
        Write::InboundSid { sid: "SM2".into() },
    ]);
    assert!(matches!(r[0], Ok(Written::FirstTime(true))), "{r:?}");
    assert!(matches!(&r[1], Err(e) if !e.is_storage_fault()), "{r:?}");
    assert!(matches!(r[2], Ok(Written::FirstTime(true))), "{r:?}");
    let again = db.write_batch(vec![
        Write::InboundSid { sid: "SM1".into() },
        Write::InboundSid { sid: "SM2".into() },
    ]);
    assert!(
        again
            .iter()
            .all(|r| matches!(r, Ok(Written::FirstTime(false)))),
        "{again:?}"
    );
}

fn count(db: &mut Postgres, sql: &str) -> i64 {
    db.client.query_one(sql, &[]).expect("count").get(0)
}

/// Runs `work(backend, i)` on two backends of one database at the same moment.
fn race<T: Send + 'static>(
    settings: &PgSettings,
    work: impl Fn(&mut Postgres, usize) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let start = Arc::new(Barrier::new(2));
    let work = Arc::new(work);
    let threads: Vec<_> = (0..2)
        .map(|n| {
            let mut db = Postgres::connect(settings).expect("connect");
            let (start, work) = (Arc::clone(&start), Arc::clone(&work));
            std::thread::spawn(move || {
                start.wait();
                work(&mut db, n)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().expect("thread"))
        .collect()
}

#[test]
fn two_instances_ingesting_the_same_alert_store_one_event_and_one_delivery() {
    let settings = fresh_settings();
    for round in 0..20 {
        let outcomes = race(&settings, move |db, _| {
            let mut e = routed(event(&format!("f{round}"), Status::Firing, 1), &["a"]);
            e.event.group_key = format!("g{round}");
            e.routes = vec![RouteRef {
                route: "#1".into(),
                policy: "p".into(),
            }];
            match db.write_batch(vec![Write::Ingest(vec![e])]).pop() {
                Some(Ok(Written::Ingested(o))) => o,
                other => panic!("ingest failed: {other:?}"),
            }
        });
        let accepted: usize = outcomes.iter().map(|o| o.accepted).sum();
        let duplicates: usize = outcomes.iter().map(|o| o.duplicates).sum();
        let opened: usize = outcomes.iter().map(|o| o.opened.len()).sum();
        let deliveries: usize = outcomes.iter().map(|o| o.deliveries.len()).sum();
        assert_eq!(
            (accepted, duplicates, opened, deliveries),
            (1, 1, 1, 1),
            "round {round}"
        );
    }
    let mut db = Postgres::connect(&settings).expect("connect");
    assert_eq!(count(&mut db, "SELECT COUNT(*) FROM alert_events"), 20);
    assert_eq!(count(&mut db, "SELECT COUNT(*) FROM deliveries"), 20);
    assert_eq!(count(&mut db, "SELECT COUNT(*) FROM incidents"), 20);
}

#[test]
fn two_instances_opening_the_same_groups_incident_open_one() {
    let settings = fresh_settings();
    // Different alerts of one group: two events, one incident.
    let outcomes = race(&settings, |db, n| {
        let mut e = routed(event(&format!("f{n}"), Status::Firing, 1), &["a"]);
        e.event.group_key = "g".into();
        e.routes = vec![RouteRef {
            route: "#1".into(),
            policy: "p".into(),
        }];
        match db.write_batch(vec![Write::Ingest(vec![e])]).pop() {
            Some(Ok(Written::Ingested(o))) => o,
            other => panic!("ingest failed: {other:?}"),
        }
    });
    assert_eq!(outcomes.iter().map(|o| o.accepted).sum::<usize>(), 2);
    assert_eq!(outcomes.iter().map(|o| o.opened.len()).sum::<usize>(), 1);
    let mut db = Postgres::connect(&settings).expect("connect");
    assert_eq!(count(&mut db, "SELECT COUNT(*) FROM incidents"), 1);
    assert_eq!(
        count(
            &mut db,
            "SELECT COUNT(*) FROM deliveries WHERE incident_id IS NULL"
        ),
        0
    );
}

#[test]
fn two_fire_steps_for_the_same_step_send_once() {
    let settings = fresh_settings();
    let mut db = Postgres::connect(&settings).expect("connect");
    let mut ids = Vec::new();
    for round in 0..10 {
        let mut e = routed(event(&format!("f{round}"), Status::Firing, 1), &[]);
        e.event.group_key = format!("g{round}");
        e.routes = vec![RouteRef {
            route: "#1".into(),
            policy: "p".into(),
        }];
        match db.write_batch(vec![Write::Ingest(vec![e])]).pop() {
            Some(Ok(Written::Ingested(o))) => ids.push(o.opened[0]),
            other => panic!("ingest failed: {other:?}"),
        }
    }
    for id in ids {
        let next = db.incident(id).expect("read").expect("exists").next_step;
        let fired = race(&settings, move |db, _| {
            let w = Write::FireStep {
                id,
                expected_step: next,
                step: 1,
                elapsed_ms: 60_000,
                destinations: vec!["b".into(), "c".into()],
                on_call: BTreeMap::new(),
                allow_acked: false,
                reopen: false,
                by: None,
            };
            match db.write_batch(vec![w]).pop() {
                Some(Ok(Written::Fired(d))) => d.len(),
                other => panic!("fire failed: {other:?}"),
            }
        });
        let mut fired = fired;
        fired.sort_unstable();
        assert_eq!(fired, [0, 2], "incident {id}");
        let i = db.incident(id).expect("read").expect("exists");
        assert_eq!(i.next_step, next + 1);
        assert_eq!(
            db.incident_deliveries(id).expect("deliveries").len(),
            2,
            "one set of deliveries"
        );
    }
}

#[test]
fn inbound_sids_are_kept_for_the_retention_and_at_least_a_day() {
    let clock = crate::time::WallClock::default();
    let mut db = fresh().with_clock(clock.clone());
    let first = |db: &mut Postgres, sid: &str| match db
        .write_batch(vec![Write::InboundSid { sid: sid.into() }])
        .pop()
    {
        Some(Ok(Written::FirstTime(new))) => new,
        other => panic!("{other:?}"),
    };
    let prune = |db: &mut Postgres, retention_ms: i64| {
        let before_ms = clock.now_millis() - retention_ms;
        let r = db.write_batch(vec![Write::Prune { before_ms }]);
        assert!(matches!(r[0], Ok(Written::Pruned(_))), "{r:?}");
    };
    assert!(first(&mut db, "SM1"));
    assert!(!first(&mut db, "SM1"), "a replay");
    clock.jump(3_600_000);
    prune(&mut db, 60_000);
    assert!(!first(&mut db, "SM1"), "kept a day");
    clock.jump(24 * 3_600_000);
    prune(&mut db, 30 * 24 * 3_600_000);
    assert!(!first(&mut db, "SM1"), "kept for the retention");
    prune(&mut db, 60_000);
    assert!(
        first(&mut db, "SM1"),
        "pruned after a day and the retention"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it: (CA PEM, certificate PEM, key PEM).
fn private_ca() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("ca key"))
            .expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".into()])
        .expect("params")
        .signed_by(&key, &ca)
        .expect("sign");
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[test]
fn tls_modes_and_passwords_against_a_real_server() {
    let (ca, cert, key) = private_ca();
    let pg = TestPg::start_with(testpg::Options {
        tls: Some((cert, key)),
        password: Some("right-pw".into()),
        ..testpg::Options::default()
    })
    .expect("start a TLS server");
    pg.create_database("relay").expect("createdb");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).expect("ca file");
    let settings = |mode: &str, ca_file: Option<&std::path::Path>| PgSettings {
        url: format!("{}?sslmode={mode}", pg.url("relay")),
        ca_file: ca_file.map(Into::into),
    };
    let encrypted = |db: &mut Postgres| -> bool {
        db.client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .expect("pg_stat_ssl")
            .get(0)
    };
    let mut db = Postgres::connect(&settings("verify-full", Some(&ca_file))).expect("verified");
    assert!(encrypted(&mut db));
    db.ping().expect("ping");
    let mut db = Postgres::connect(&settings("require", None)).expect("unverified TLS");
    assert!(encrypted(&mut db));
    let mut db = Postgres::connect(&settings("disable", None)).expect("plain");
    assert!(!encrypted(&mut db));

    // The system roots do not know the private CA.
    let err = Postgres::connect(&settings("verify-full", None))
        .expect_err("unknown issuer")
        .to_string();
    assert!(err.contains(&format!("127.0.0.1:{}", pg.port())), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains('\n') && !err.contains("right-pw"), "{err}");

    let mut wrong = settings("require", None);
    wrong.url = wrong.url.replace("right-pw", "wrong-pw");
    let err = Postgres::connect(&wrong)
        .expect_err("wrong password")
        .to_string();
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", pg.port())), "{err}");
    assert!(!err.contains("wrong-pw") && !err.contains('\n'), "{err}");
}

#[test]
fn batches_of_two_instances_in_opposite_orders_lose_and_double_nothing() {
    let settings = fresh_settings();
    let ingest = |fp: &str| Write::Ingest(vec![routed(event(fp, Status::Firing, 1), &["a"])]);
    for round in 0..2 {
        let results = race(&settings, move |db, n| {
            let (x, y) = (format!("x{round}"), format!("y{round}"));
            let order = if n == 0 { [&x, &y] } else { [&y, &x] };
            let r = db.write_batch(order.iter().map(|fp| ingest(fp)).collect());
            (order.map(|fp| fp.clone()), r)
        });
        let mut db = Postgres::connect(&settings).expect("connect");
        for (order, r) in results {
            for (fp, r) in order.iter().zip(r) {
                match r {
                    Ok(Written::Ingested(_)) => {}
                    // A deadlock victim: one write, not the storage. Alertmanager retries it.
                    Err(e) if !e.is_storage_fault() => {
                        let again = db.write_batch(vec![ingest(fp)]).pop();
                        assert!(
                            matches!(again, Some(Ok(Written::Ingested(ref o))) if o.duplicates == 1),
                            "{again:?}"
                        );
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        for fp in [format!("x{round}"), format!("y{round}")] {
            let n: i64 = db
                .client
                .query_one(
                    "SELECT COUNT(*) FROM alert_events e JOIN deliveries d ON d.event_id = e.id
                     WHERE e.fingerprint = $1",
                    &[&fp],
                )
                .expect("count")
                .get(0);
            assert_eq!(n, 1, "{fp}: one event, one delivery");
        }
    }
}

#[test]
fn one_lease_leads_at_a_time_and_a_former_leaders_engine_writes_are_refused() {
    use super::lease::Lease;
    let settings = fresh_settings();
    let mut db = Postgres::connect(&settings).expect("connect");
    let mut first = Lease::connect(&settings, "a:1").expect("lease a");
    let mut second = Lease::connect(&settings, "b:2").expect("lease b");
    let epoch = first.try_lead(1).expect("try").expect("free: leads");
    assert_eq!(second.try_lead(2).expect("try"), None, "held by a");
    assert_eq!(first.try_lead(3).expect("try"), Some(epoch), "still a's");
    first.alive().expect("alive");
    let fenced = |epoch| Write::Fenced {
        epoch,
        write: Box::new(Write::Prune { before_ms: 0 }),
    };
    assert!(matches!(
        db.write_batch(vec![fenced(epoch)]).remove(0),
        Ok(Written::Pruned(_))
    ));
    // a's session ends (its process died): b leads with the next number, and a's late
    // engine write is refused, not applied.
    drop(first);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let next = loop {
        if let Some(e) = second.try_lead(4).expect("try") {
            break e;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the lock was not released"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(next, epoch + 1);
    let late = db.write_batch(vec![fenced(epoch)]).remove(0);
    assert!(
        matches!(late, Err(StoreError::Fenced { epoch: e, current }) if e == epoch && current == next),
        "{late:?}"
    );
    let again = db.write_batch(vec![fenced(epoch)]).remove(0);
    assert!(again.is_err_and(|e| !e.is_storage_fault()));
    assert!(db.write_batch(vec![fenced(next)]).remove(0).is_ok());
}

#[test]
fn a_commit_notifies_the_listening_leader_of_its_deliveries() {
    use super::lease::Lease;
    use super::notify::Notice;
    let settings = fresh_settings();
    let mut db = Postgres::connect(&settings).expect("connect");
    let mut lease = Lease::connect(&settings, "a:1").expect("lease");
    let e = event("n1", Status::Firing, 1);
    let w = db
        .write_batch(vec![Write::Ingest(vec![routed(e, &["ops"])])])
        .remove(0)
        .expect("ingest");
    let Written::Ingested(o) = w else {
        panic!("{w:?}")
    };
    let notices = lease
        .notices(std::time::Duration::from_secs(2))
        .expect("notices");
    let (dest, id, created) = o.deliveries[0].clone();
    assert!(
        notices.contains(&Notice::Delivery(dest, id, created)),
        "{notices:?}"
    );
}

#[test]
fn the_console_reads_a_seeded_database() {
    let mut db = fresh();
    crate::store::seed_for_bench(&mut db, 300, 4).expect("seed");
    let q = crate::store::IncidentQuery {
        limit: 50,
        ..Default::default()
    };
    let page = db.incident_page(&q).expect("page");
    assert_eq!(page.len(), 50);
    assert!(page.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let t = db
        .incident_timeline(page[0].id)
        .expect("timeline")
        .expect("exists");
    // Its four messages, and the notices of the human acknowledgement of the last incident.
    assert_eq!(
        t.deliveries.iter().filter(|d| d.notice.is_none()).count(),
        4
    );
    let health = db.destination_health().expect("health");
    assert_eq!(health.len(), 4);
    assert_eq!(
        health.iter().map(|h| h.dead).sum::<i64>(),
        6,
        "every 50th's first"
    );
    let q = crate::store::IncidentQuery {
        limit: 500,
        severity: Some("critical".into()),
        site: Some("site-3".into()),
        ..Default::default()
    };
    // n % 3 == 0 and n % 10 == 3: n = 3, 33, 63, …, 273.
    assert_eq!(db.incident_page(&q).expect("page").len(), 10);
}

//! The table mapping against both real schemas, and a copy of every table between a real SQLite
//! file and a real PostgreSQL database (`testpg`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use super::{Kind, MigrateError, TABLES, sqlite_to_postgres};
use crate::store::Backend;
use crate::store::postgres::tests::fresh_settings;
use crate::store::postgres::{PgSettings, Postgres};
use crate::store::sqlite::Sqlite;

type Columns = BTreeMap<String, Vec<(String, Kind)>>;

/// The mapping as tables → columns, plus `meta` (copied apart).
fn mapping() -> Columns {
    let mut m: Columns = TABLES
        .iter()
        .map(|t| {
            let cols = t
                .columns
                .iter()
                .map(|(c, k)| ((*c).to_owned(), *k))
                .collect();
            (t.name.to_owned(), cols)
        })
        .collect();
    m.insert(
        "meta".into(),
        vec![("key".into(), Kind::Text), ("value".into(), Kind::Text)],
    );
    m
}

/// A relay's SQLite file with the current schema (and the relay stopped).
fn relay_file(dir: &Path) -> PathBuf {
    let path = dir.join("relay.db");
    drop(Sqlite::open(&path).expect("open"));
    path
}

#[test]
fn the_mapping_names_every_table_and_column_of_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conn = Connection::open(relay_file(dir.path())).expect("open");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("tables");
    let mut found = Columns::new();
    for t in tables {
        let cols = conn
            .prepare(&format!("PRAGMA table_info({t})"))
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, String>(2)?)))?
                    .collect::<Result<Vec<_>, _>>()
            })
            .expect("columns");
        let cols = cols
            .into_iter()
            .map(|(c, ty)| match ty.as_str() {
                "INTEGER" => (c, Kind::Int),
                // meta.value is a BLOB that also holds integers: copied apart.
                _ => (c, Kind::Text),
            })
            .collect();
        found.insert(t, cols);
    }
    assert_eq!(found, mapping());
}

#[test]
fn the_mapping_names_every_table_and_column_of_postgres() {
    let settings = fresh_settings();
    drop(Postgres::connect(&settings).expect("connect"));
    let mut client = postgres::Client::connect(&settings.url, postgres::NoTls).expect("client");
    let mut found = Columns::new();
    for row in client
        .query(
            "SELECT table_name::TEXT, column_name::TEXT, data_type::TEXT
             FROM information_schema.columns WHERE table_schema = current_schema()
             ORDER BY table_name, ordinal_position",
            &[],
        )
        .expect("columns")
    {
        let (t, c, ty): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        let kind = match ty.as_str() {
            "bigint" => Kind::Int,
            "text" => Kind::Text,
            other => {
                assert!(t == "meta" || t == "leader", "{t}.{c} is {other}");
                Kind::Text
            }
        };
        found.entry(t).or_default().push((c, kind));
    }
    assert_eq!(
        found.remove("schema_version"),
        Some(vec![("version".into(), Kind::Int)])
    );
    // PostgreSQL's own: HA leadership, not copied.
    assert!(found.remove("leader").is_some());
    let meta = found.remove("meta").expect("meta");
    assert_eq!(
        meta.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["key", "value", "int_value"]
    );
    let mut want = mapping();
    want.remove("meta");
    assert_eq!(found, want);
}

/// A row in every table of `path`, ids with gaps, meta of both kinds.
fn fill(path: &Path) -> Vec<u8> {
    let conn = Connection::open(path).expect("open");
    conn.execute_batch(
        r#"INSERT INTO alert_events VALUES
             (3, 'f1', 'firing', 10, NULL, 1000, 'g', 'r', '{"x":1}'),
             (9, 'f1', 'resolved', 10, 20, 2000, 'g', 'r', '{"x":2}');
           INSERT INTO incidents (id, group_key, route, policy, event_id, state, elapsed_ms,
                                  acked_ms, next_step, opened_at, acked_at, acked_by, updated_at,
                                  maintenance)
             VALUES (12, 'g', 'r0', 'p', 3, 'acked', 5000, 100, 2, 1000, 1500, 'alice', 1500, 5);
           INSERT INTO maintenance_windows VALUES
             (5, '{site="a"}', 1000, 2000, 1, 'power work', 'alice', 900, 1500, 'bob', 3);
           INSERT INTO deliveries (id, event_id, destination, state, attempts, created_at,
                                   next_attempt_at, updated_at, last_error, provider_ref,
                                   firing_delivery, step, incident_id, notice, on_call, storm_id)
             VALUES (40, 3, 'hook', 'delivered', 1, 1000, 1000, 1001, NULL, 'm-1', NULL, 1, 12,
                     NULL, 'alice (rotation primary)', NULL),
                    (41, 9, 'hook', 'pending', 3, 2000, 987654, 2100, '503 Service Unavailable',
                     NULL, 40, 0, NULL, 'ack', NULL, 7);
           INSERT INTO pushover_receipts VALUES ('rcpt', 'acked', 1700);
           INSERT INTO inbound_sids VALUES ('SM1', 1800);
           INSERT INTO storms VALUES (7, 'p', '[["site","a"]]', 1000, 50, 60, NULL);
           INSERT INTO storm_members VALUES (12, 'p', '[["site","a"]]', 40, 7);
           INSERT INTO storm_covered VALUES (0, 12, 7);
           INSERT INTO budgets VALUES ('hook', 100, 4, 2, 1, '[12]', 9);
           INSERT INTO incident_actions VALUES (5, 12, 1500, 'acknowledged', 'alice');
           INSERT INTO console_sessions VALUES ('hash', 'alice', 'csrf', 1000, 99000);
           INSERT INTO meta (key, value) VALUES ('telegram_offset:tg', 43), ('deadman', x'0102');
           UPDATE meta SET value = 777 WHERE key = 'relay_clock_ms';"#,
    )
    .expect("fill");
    conn.query_row("SELECT value FROM meta WHERE key = 'ack_key'", [], |r| {
        r.get(0)
    })
    .expect("ack key")
}

fn count(client: &mut postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT COUNT(*) FROM {table}"), &[])
        .expect("count")
        .get(0)
}

#[test]
fn every_table_is_copied_with_its_ids_and_the_sequences_continue_above() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = relay_file(dir.path());
    let key = fill(&file);
    let settings = fresh_settings();
    let summary = sqlite_to_postgres(&file, &settings).expect("copy");
    let rows: BTreeMap<&str, u64> = summary.rows.iter().copied().collect();
    assert_eq!(rows["alert_events"], 2);
    assert_eq!(rows["deliveries"], 2);
    assert_eq!(
        rows["meta"], 4,
        "ack_key, relay clock, offset, dead-man; not the probe"
    );
    for t in TABLES
        .iter()
        .map(|t| t.name)
        .filter(|t| !["alert_events", "deliveries"].contains(t))
    {
        assert_eq!(rows[t], 1, "{t}");
    }
    let mut pg = Postgres::connect(&settings).expect("connect");
    assert_eq!(pg.ack_key().expect("key"), key, "the SQLite key wins");
    assert_eq!(pg.meta_int("telegram_offset:tg").expect("meta"), Some(43));
    assert_eq!(pg.meta("deadman").expect("meta"), Some(vec![1, 2]));
    assert_eq!(pg.relay_clock().expect("clock"), 777);
    assert_eq!(pg.meta_int("health_probe").expect("meta"), None);
    let i = pg.incident(12).expect("read").expect("incident #12");
    assert_eq!(
        (i.acked_by.as_deref(), i.next_step, i.elapsed_ms),
        (Some("alice"), 2, 5000)
    );
    assert_eq!(i.storm, Some(7));
    assert_eq!(i.maintenance, Some(5));
    let session = pg.console_session("hash", 2000).expect("read");
    assert_eq!(session.map(|s| s.user), Some("alice".to_owned()));
    let mut client = postgres::Client::connect(&settings.url, postgres::NoTls).expect("client");
    let retrying = client
        .query_one(
            "SELECT state, attempts, next_attempt_at, last_error, firing_delivery, notice, storm_id
             FROM deliveries WHERE id = 41",
            &[],
        )
        .expect("delivery 41");
    assert_eq!(
        (
            retrying.get::<_, String>(0),
            retrying.get::<_, i64>(1),
            retrying.get::<_, i64>(2),
            retrying.get::<_, String>(3),
            retrying.get::<_, i64>(4),
            retrying.get::<_, String>(5),
            retrying.get::<_, i64>(6),
        ),
        (
            "pending".into(),
            3,
            987_654,
            "503 Service Unavailable".into(),
            40,
            "ack".into(),
            7
        )
    );
    let action = client
        .query_one(
            "SELECT incident_id, at_ms, action, by FROM incident_actions WHERE id = 5",
            &[],
        )
        .expect("action 5");
    assert_eq!(
        (
            action.get::<_, i64>(0),
            action.get::<_, i64>(1),
            action.get::<_, String>(2),
            action.get::<_, String>(3)
        ),
        (12, 1500, "acknowledged".into(), "alice".into())
    );
    for (table, above) in [
        ("alert_events", 9),
        ("deliveries", 41),
        ("incidents", 12),
        ("storms", 7),
        ("maintenance_windows", 5),
        ("incident_actions", 5),
    ] {
        let next: i64 = client
            .query_one(
                &format!("SELECT nextval(pg_get_serial_sequence('{table}', 'id'))"),
                &[],
            )
            .expect("nextval")
            .get(0);
        assert_eq!(next, above + 1, "{table}");
    }
}

#[test]
fn a_database_with_relay_rows_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = relay_file(dir.path());
    fill(&file);
    let settings = fresh_settings();
    sqlite_to_postgres(&file, &settings).expect("first copy");
    let mut client = postgres::Client::connect(&settings.url, postgres::NoTls).expect("client");
    client
        .execute("DELETE FROM incidents", &[])
        .expect("delete");
    let before = count(&mut client, "alert_events");
    let err = sqlite_to_postgres(&file, &settings).expect_err("not empty");
    assert!(matches!(err, MigrateError::NotEmpty { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("2 rows in alert_events"), "{text}");
    assert!(text.contains("nothing was written"), "{text}");
    assert_eq!(count(&mut client, "alert_events"), before);
    assert_eq!(count(&mut client, "incidents"), 0);
    // A relay that only ran (its clock moved) counts too.
    let settings = fresh_settings();
    let mut client = postgres::Client::connect(&settings.url, postgres::NoTls).expect("client");
    drop(Postgres::connect(&settings).expect("connect"));
    client
        .execute(
            "UPDATE meta SET int_value = 5 WHERE key = 'relay_clock_ms'",
            &[],
        )
        .expect("clock");
    let err = sqlite_to_postgres(&file, &settings).expect_err("not empty");
    assert!(err.to_string().contains("1 row in meta"), "{err}");
}

#[test]
fn an_old_or_foreign_sqlite_file_is_refused_in_one_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = relay_file(dir.path());
    let known = crate::store::sqlite::known_version();
    let conn = Connection::open(&file).expect("open");
    let unused = PgSettings {
        url: "postgres://nobody@127.0.0.1:1/none?sslmode=disable".into(),
        ca_file: None,
    };
    conn.pragma_update(None, "user_version", known - 1)
        .expect("downgrade");
    let err = sqlite_to_postgres(&file, &unused).expect_err("old");
    let text = err.to_string();
    assert!(matches!(err, MigrateError::OldSource { .. }), "{text}");
    assert!(text.contains("start this alert-relay once on it"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    conn.pragma_update(None, "user_version", known + 1)
        .expect("bump");
    let err = sqlite_to_postgres(&file, &unused).expect_err("newer");
    assert!(matches!(err, MigrateError::NewerSource { .. }), "{err}");
    let err = sqlite_to_postgres(&dir.path().join("missing.db"), &unused).expect_err("none");
    assert!(err.to_string().contains("no such file"), "{err}");
    let foreign = dir.path().join("other.db");
    Connection::open(&foreign)
        .and_then(|c| c.execute_batch("CREATE TABLE t (x)"))
        .expect("foreign");
    let err = sqlite_to_postgres(&foreign, &unused).expect_err("foreign");
    assert!(err.to_string().contains("no relay schema"), "{err}");
}

#[test]
fn an_empty_database_a_relay_is_connected_to_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = relay_file(dir.path());
    fill(&file);
    let settings = fresh_settings();
    let relay = Postgres::connect(&settings).expect("a relay's connection");
    let err = sqlite_to_postgres(&file, &settings).expect_err("in use");
    assert!(matches!(err, MigrateError::InUse { .. }), "{err}");
    assert!(err.to_string().contains("stop it"), "{err}");
    drop(relay);
    let mut client = postgres::Client::connect(&settings.url, postgres::NoTls).expect("client");
    assert_eq!(count(&mut client, "alert_events"), 0);
}

//! `alert-relay migrate-storage`: copies one relay's whole state from its SQLite file into an
//! empty PostgreSQL database, table by table, ids kept (incident #12 stays #12, so ack links
//! and `ACK 12` replies already sent keep working), in one PostgreSQL transaction.
//!
//! Every table of SQLite's schema (`sqlite.rs` migrations 1–10, `storm_sql.rs`, `console_sql.rs`, `maintenance_sql.rs`) is copied:
//! [`TABLES`] column for column, and `meta` apart, because SQLite keeps both kinds of meta value
//! in one dynamically typed column where PostgreSQL has `value` (bytes: the ack-link key, the
//! dead-man state) and `int_value` (Telegram offsets, the relay clock). Not copied: the meta
//! row `health_probe` (SQLite's start-up write probe; PostgreSQL has none). PostgreSQL's own
//! tables keep what `Postgres::connect` put there: `schema_version`, and `leader` (the fencing
//! number of HA leadership; a single SQLite relay has none). Indexes have no rows to copy.

use std::fmt;
use std::path::Path;

use postgres::Client;
use postgres::binary_copy::BinaryCopyInWriter;
use postgres::types::{ToSql, Type};
use rusqlite::{Connection, OpenFlags};

use super::StoreError;
use super::postgres::{PgSettings, Postgres};

/// The type of a column, the same in both schemas: SQLite `INTEGER` is PostgreSQL `BIGINT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Int,
    Text,
}

/// A table copied as it is: its name, its columns, whether `id` comes from a sequence.
pub(crate) struct Table {
    pub(crate) name: &'static str,
    pub(crate) columns: &'static [(&'static str, Kind)],
    pub(crate) serial: bool,
}

use Kind::{Int, Text};

/// Every table but `meta`, with every column of the current SQLite schema.
pub(crate) const TABLES: &[Table] = &[
    Table {
        name: "maintenance_windows",
        columns: &[
            ("id", Int),
            ("matchers", Text),
            ("starts_at", Int),
            ("ends_at", Int),
            ("weekly", Int),
            ("reason", Text),
            ("author", Text),
            ("created_at", Int),
            ("ended_at", Int),
            ("ended_by", Text),
            ("suppressed", Int),
        ],
        serial: true,
    },
    Table {
        name: "alert_events",
        columns: &[
            ("id", Int),
            ("fingerprint", Text),
            ("status", Text),
            ("starts_at", Int),
            ("ends_at", Int),
            ("received_at", Int),
            ("group_key", Text),
            ("receiver", Text),
            ("alert", Text),
        ],
        serial: true,
    },
    Table {
        name: "deliveries",
        columns: &[
            ("id", Int),
            ("event_id", Int),
            ("destination", Text),
            ("state", Text),
            ("attempts", Int),
            ("created_at", Int),
            ("next_attempt_at", Int),
            ("updated_at", Int),
            ("last_error", Text),
            ("provider_ref", Text),
            ("firing_delivery", Int),
            ("step", Int),
            ("incident_id", Int),
            ("notice", Text),
            ("on_call", Text),
            ("storm_id", Int),
        ],
        serial: true,
    },
    Table {
        name: "incidents",
        columns: &[
            ("id", Int),
            ("group_key", Text),
            ("route", Text),
            ("policy", Text),
            ("event_id", Int),
            ("state", Text),
            ("elapsed_ms", Int),
            ("acked_ms", Int),
            ("next_step", Int),
            ("opened_at", Int),
            ("acked_at", Int),
            ("acked_by", Text),
            ("resolved_at", Int),
            ("resolved_by", Text),
            ("updated_at", Int),
            ("maintenance", Int),
        ],
        serial: true,
    },
    Table {
        name: "pushover_receipts",
        columns: &[("receipt", Text), ("state", Text), ("updated_at", Int)],
        serial: false,
    },
    Table {
        name: "inbound_sids",
        columns: &[("sid", Text), ("received_at", Int)],
        serial: false,
    },
    Table {
        name: "storms",
        columns: &[
            ("id", Int),
            ("policy", Text),
            ("key", Text),
            ("opened_at", Int),
            ("last_join", Int),
            ("last_update", Int),
            ("closed_at", Int),
        ],
        serial: true,
    },
    Table {
        name: "storm_members",
        columns: &[
            ("incident_id", Int),
            ("policy", Text),
            ("key", Text),
            ("opened", Int),
            ("storm_id", Int),
        ],
        serial: false,
    },
    Table {
        name: "storm_covered",
        columns: &[("entry", Int), ("incident_id", Int), ("storm_id", Int)],
        serial: false,
    },
    Table {
        name: "budgets",
        columns: &[
            ("destination", Text),
            ("window_start", Int),
            ("sent", Int),
            ("held", Int),
            ("reported", Int),
            ("held_for", Text),
            ("event_id", Int),
        ],
        serial: false,
    },
    Table {
        name: "incident_actions",
        columns: &[
            ("id", Int),
            ("incident_id", Int),
            ("at_ms", Int),
            ("action", Text),
            ("by", Text),
        ],
        serial: true,
    },
    Table {
        name: "console_sessions",
        columns: &[
            ("token_hash", Text),
            ("user_name", Text),
            ("csrf", Text),
            ("created_at", Int),
            ("expires_at", Int),
        ],
        serial: false,
    },
];

/// Meta rows of SQLite that are not copied (see the module's comment).
const META_SKIPPED: &[&str] = &["health_probe"];

/// Meta rows `Postgres::connect` creates itself in a new database: the copy replaces them.
/// Any other meta row (or a relay clock past 0) means a relay has run on the database.
const META_OF_CONNECT: &str =
    "key = 'ack_key' OR (key = 'relay_clock_ms' AND COALESCE(int_value, 0) = 0)";

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot read the SQLite file {path}: {message}")]
    Source { path: String, message: String },
    #[error(
        "the SQLite file {path} has schema version {found}, this alert-relay's is {known}: start \
         this alert-relay once on it (it migrates the file at start-up), stop it, and run \
         migrate-storage again"
    )]
    OldSource {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "the SQLite file {path} has schema version {found}, newer than this alert-relay's \
         ({known}): run migrate-storage of the alert-relay that wrote it"
    )]
    NewerSource {
        path: String,
        found: i64,
        known: i64,
    },
    #[error(
        "the PostgreSQL database at {server} is not empty ({rows}): migrate-storage copies only \
         into a new, empty database; nothing was written"
    )]
    NotEmpty { server: String, rows: String },
    #[error(
        "a relay is connected to the PostgreSQL database at {server} ({connections} connections \
         named alert-relay): stop it, copy, then start it; nothing was written"
    )]
    InUse { server: String, connections: i64 },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(e: rusqlite::Error) -> Self {
        MigrateError::Store(StoreError::Db(e))
    }
}

impl From<postgres::Error> for MigrateError {
    fn from(e: postgres::Error) -> Self {
        MigrateError::Store(StoreError::Postgres(e))
    }
}

/// What was copied: rows per table, in copy order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub server: String,
    pub rows: Vec<(&'static str, u64)>,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "copied into PostgreSQL at {}:", self.server)?;
        for (table, n) in &self.rows {
            writeln!(f, "  {table:<18} {n:>9} rows")?;
        }
        Ok(())
    }
}

/// Copies the relay state of the SQLite file `source` (opened read-only; no relay may run on
/// it) into the empty PostgreSQL database of `target` (its schema created or brought up to
/// date first). All or nothing: one PostgreSQL transaction.
pub fn sqlite_to_postgres(source: &Path, target: &PgSettings) -> Result<Summary, MigrateError> {
    let mut src = open_source(source)?;
    let mut db = Postgres::connect(target)?;
    let server = db.server().to_owned();
    let rows = copy(&mut src, db.client(), &server)?;
    Ok(Summary { server, rows })
}

/// Opens `path` read-only and checks that its schema is the current one.
pub(crate) fn open_source(path: &Path) -> Result<Connection, MigrateError> {
    let shown = path.display().to_string();
    let refused = |message: String| MigrateError::Source {
        path: shown.clone(),
        message,
    };
    if !path.is_file() {
        return Err(refused("no such file".into()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| refused(e.to_string()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| refused(e.to_string()))?;
    let known = super::sqlite::known_version();
    if found == 0 {
        return Err(refused(
            "no relay schema in it (version 0): is it the file of storage.sqlite?".into(),
        ));
    }
    if found < known {
        return Err(MigrateError::OldSource {
            path: shown,
            found,
            known,
        });
    }
    if found > known {
        return Err(MigrateError::NewerSource {
            path: shown,
            found,
            known,
        });
    }
    Ok(conn)
}

/// The copy itself: one read transaction on SQLite (a consistent snapshot), one write
/// transaction on PostgreSQL with every relay table locked against writers, refused when the
/// database holds relay rows. Rows per table (`meta` last).
pub(crate) fn copy(
    src: &mut Connection,
    dst: &mut Client,
    server: &str,
) -> Result<Vec<(&'static str, u64)>, MigrateError> {
    let read = src.transaction()?;
    let mut tx = dst.transaction()?;
    let all: Vec<&str> = TABLES.iter().map(|t| t.name).chain(["meta"]).collect();
    tx.batch_execute(&format!("LOCK TABLE {} IN EXCLUSIVE MODE", all.join(", ")))?;
    refuse_non_empty(&mut tx, server)?;
    let mut rows = Vec::with_capacity(all.len());
    for table in TABLES {
        rows.push((table.name, copy_table(&read, &mut tx, table)?));
    }
    rows.push(("meta", copy_meta(&read, &mut tx)?));
    for table in TABLES.iter().filter(|t| t.serial) {
        // The next id is above every copied one (1 for an empty table).
        tx.execute(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{0}', 'id'), COALESCE(MAX(id), 1), \
                 MAX(id) IS NOT NULL) FROM {0}",
                table.name
            ),
            &[],
        )?;
    }
    // The snapshot is no longer needed; a failure here still writes nothing.
    read.finish()?;
    tx.commit()?;
    Ok(rows)
}

/// `NotEmpty` naming what the database holds, if it holds any relay row.
fn refuse_non_empty(tx: &mut postgres::Transaction<'_>, server: &str) -> Result<(), MigrateError> {
    let counts: Vec<String> = TABLES
        .iter()
        .map(|t| format!("SELECT '{0}', COUNT(*) FROM {0}", t.name))
        .chain([format!(
            "SELECT 'meta', COUNT(*) FROM meta WHERE NOT ({META_OF_CONNECT})"
        )])
        .collect();
    let mut found = Vec::new();
    for row in tx.query(&counts.join(" UNION ALL "), &[])? {
        let (table, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
        if n > 0 {
            let s = if n == 1 { "" } else { "s" };
            found.push(format!("{n} row{s} in {table}"));
        }
    }
    if !found.is_empty() {
        return Err(MigrateError::NotEmpty {
            server: server.to_owned(),
            rows: found.join(", "),
        });
    }
    // A relay running on the empty database would not see the copied state (its engines load
    // at start-up): best effort, by the application name the relay's connections carry.
    let relays: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()
             AND pid <> pg_backend_pid() AND application_name = 'alert-relay'",
            &[],
        )?
        .try_get(0)?;
    if relays > 0 {
        return Err(MigrateError::InUse {
            server: server.to_owned(),
            connections: relays,
        });
    }
    Ok(())
}

/// One value read from SQLite, typed for PostgreSQL.
#[derive(Debug)]
enum Cell {
    Int(Option<i64>),
    Text(Option<String>),
}

impl Cell {
    fn sql(&self) -> &(dyn ToSql + Sync) {
        match self {
            Cell::Int(v) => v,
            Cell::Text(v) => v,
        }
    }
}

/// Copies `table` with `COPY … FROM STDIN BINARY`; how many rows.
fn copy_table(
    src: &Connection,
    tx: &mut postgres::Transaction<'_>,
    table: &Table,
) -> Result<u64, MigrateError> {
    let names: Vec<String> = table
        .columns
        .iter()
        .map(|(c, _)| format!("\"{c}\""))
        .collect();
    let types: Vec<Type> = table
        .columns
        .iter()
        .map(|(_, k)| match k {
            Int => Type::INT8,
            Text => Type::TEXT,
        })
        .collect();
    let mut stmt = src.prepare(&format!(
        "SELECT {} FROM {} ORDER BY 1",
        names.join(", "),
        table.name
    ))?;
    let sink = tx.copy_in(&format!(
        "COPY {} ({}) FROM STDIN BINARY",
        table.name,
        names.join(", ")
    ))?;
    let mut writer = BinaryCopyInWriter::new(sink, &types);
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let cells = table
            .columns
            .iter()
            .enumerate()
            .map(|(i, (column, kind))| {
                match kind {
                    Int => row.get(i).map(Cell::Int),
                    Text => row.get(i).map(Cell::Text),
                }
                .map_err(|e| StoreError::Corrupt(format!("{}.{column} in SQLite: {e}", table.name)))
            })
            .collect::<Result<Vec<Cell>, StoreError>>()?;
        let values: Vec<&(dyn ToSql + Sync)> = cells.iter().map(Cell::sql).collect();
        writer.write(&values)?;
    }
    Ok(writer.finish()?)
}

/// Copies `meta`, SQLite's rows winning over the ones `Postgres::connect` made (the ack-link
/// key above all: links already sent are signed with SQLite's). An integer goes to
/// `int_value`, anything else to `value`.
fn copy_meta(src: &Connection, tx: &mut postgres::Transaction<'_>) -> Result<u64, MigrateError> {
    use rusqlite::types::Value;
    let upsert = tx.prepare(
        "INSERT INTO meta (key, value, int_value) VALUES ($1, $2, $3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, int_value = excluded.int_value",
    )?;
    let mut stmt = src.prepare("SELECT key, value FROM meta ORDER BY key")?;
    let mut rows = stmt.query([])?;
    let mut n = 0;
    while let Some(row) = rows.next()? {
        let key: String = row.get(0)?;
        if META_SKIPPED.contains(&key.as_str()) {
            continue;
        }
        let (bytes, int): (Option<Vec<u8>>, Option<i64>) = match row.get::<_, Value>(1)? {
            Value::Integer(i) => (None, Some(i)),
            Value::Blob(b) => (Some(b), None),
            Value::Text(t) => (Some(t.into_bytes()), None),
            other => {
                return Err(
                    StoreError::Corrupt(format!("meta {key:?} in SQLite holds {other:?}")).into(),
                );
            }
        };
        tx.execute(&upsert, &[&key, &bytes, &int])?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests;

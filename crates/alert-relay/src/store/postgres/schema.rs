//! The PostgreSQL schema: SQLite's tables (see `store/sqlite.rs`, `store/storm_sql.rs`) with
//! PostgreSQL's types. Versions counted in `schema_version`, applied in one transaction under
//! an advisory lock, so that instances starting together migrate one after the other.

use postgres::Client;

use super::super::StoreError;

/// `pg_advisory_xact_lock` key of migrations ("alert-relay schema", arbitrary but fixed).
const MIGRATION_LOCK: i64 = 0x616c_6572_7473_6d31;

/// Schema versions, applied in order; `schema_version` holds how many have run. Never edit a
/// released entry: append a new one. Times are unix ms (BIGINT), as in SQLite.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: events, the outbox, incidents, receipts, inbound SMS ids, meta.
    "CREATE TABLE alert_events (
        id          BIGSERIAL PRIMARY KEY,
        fingerprint TEXT   NOT NULL,
        status      TEXT   NOT NULL CHECK (status IN ('firing', 'resolved')),
        starts_at   BIGINT NOT NULL,   -- unix ns, part of the dedup key
        ends_at     BIGINT,
        received_at BIGINT NOT NULL,
        group_key   TEXT   NOT NULL,
        receiver    TEXT   NOT NULL,
        alert       TEXT   NOT NULL,   -- JSON AlertEvent
        UNIQUE (fingerprint, status, starts_at)
     );
     CREATE INDEX alert_events_received ON alert_events (received_at);
     CREATE INDEX alert_events_group_key ON alert_events (group_key);
     CREATE TABLE deliveries (
        id              BIGSERIAL PRIMARY KEY,
        event_id        BIGINT NOT NULL,
        destination     TEXT   NOT NULL,
        state           TEXT   NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'skipped')),
        attempts        BIGINT NOT NULL DEFAULT 0,
        created_at      BIGINT NOT NULL,
        next_attempt_at BIGINT NOT NULL,
        updated_at      BIGINT NOT NULL,
        last_error      TEXT,
        provider_ref    TEXT,
        firing_delivery BIGINT,
        step            BIGINT NOT NULL DEFAULT 0,
        incident_id     BIGINT,
        notice          TEXT,
        on_call         TEXT,
        storm_id        BIGINT
     );
     CREATE INDEX deliveries_pending ON deliveries (destination, id) WHERE state = 'pending';
     CREATE INDEX deliveries_event ON deliveries (event_id);
     CREATE INDEX deliveries_incident ON deliveries (incident_id) WHERE incident_id IS NOT NULL;
     CREATE INDEX deliveries_storm ON deliveries (storm_id) WHERE storm_id IS NOT NULL;
     CREATE INDEX deliveries_receipts ON deliveries (id) WHERE substr(provider_ref, 1, 8) = 'receipt:';
     CREATE TABLE incidents (
        id          BIGSERIAL PRIMARY KEY,
        group_key   TEXT   NOT NULL,
        route       TEXT   NOT NULL,
        policy      TEXT   NOT NULL,
        event_id    BIGINT NOT NULL,
        state       TEXT   NOT NULL CHECK (state IN ('open', 'acked', 'resolved')),
        elapsed_ms  BIGINT NOT NULL DEFAULT 0,
        acked_ms    BIGINT NOT NULL DEFAULT 0,
        next_step   BIGINT NOT NULL DEFAULT 1,
        opened_at   BIGINT NOT NULL,
        acked_at    BIGINT,
        acked_by    TEXT,
        resolved_at BIGINT,
        resolved_by TEXT,
        updated_at  BIGINT NOT NULL
     );
     CREATE UNIQUE INDEX incidents_open ON incidents (group_key, route) WHERE state != 'resolved';
     CREATE INDEX incidents_state ON incidents (state);
     CREATE INDEX incidents_event ON incidents (event_id);
     -- `value` for SetMeta (bytes), `int_value` for SetMetaInt and the relay clock.
     CREATE TABLE meta (key TEXT PRIMARY KEY, value BYTEA, int_value BIGINT);
     CREATE TABLE pushover_receipts (
        receipt    TEXT   PRIMARY KEY,
        state      TEXT   NOT NULL CHECK (state IN ('acked', 'cancelled', 'expired', 'gone')),
        updated_at BIGINT NOT NULL
     );
     CREATE TABLE inbound_sids (
        sid         TEXT   PRIMARY KEY,
        received_at BIGINT NOT NULL
     );
     CREATE INDEX inbound_sids_received ON inbound_sids (received_at);",
    // 2: storm control and per-destination budgets (see `storm.rs`).
    "CREATE TABLE storms (
        id          BIGSERIAL PRIMARY KEY,
        policy      TEXT   NOT NULL,
        key         TEXT   NOT NULL,
        opened_at   BIGINT NOT NULL,
        last_join   BIGINT NOT NULL,
        last_update BIGINT NOT NULL,
        closed_at   BIGINT
     );
     CREATE INDEX storms_key ON storms (policy, key) WHERE closed_at IS NULL;
     CREATE TABLE storm_members (
        incident_id BIGINT PRIMARY KEY,
        policy      TEXT   NOT NULL,
        key         TEXT   NOT NULL,
        opened      BIGINT NOT NULL,
        storm_id    BIGINT
     );
     CREATE INDEX storm_members_key ON storm_members (policy, key, opened);
     CREATE INDEX storm_members_storm ON storm_members (storm_id) WHERE storm_id IS NOT NULL;
     CREATE TABLE storm_covered (
        entry       BIGINT NOT NULL,
        incident_id BIGINT NOT NULL,
        storm_id    BIGINT NOT NULL,
        PRIMARY KEY (entry, incident_id)
     );
     CREATE TABLE budgets (
        destination  TEXT   PRIMARY KEY,
        window_start BIGINT NOT NULL,
        sent         BIGINT NOT NULL,
        held         BIGINT NOT NULL,
        reported     BIGINT NOT NULL,
        held_for     TEXT   NOT NULL,
        event_id     BIGINT
     );
     INSERT INTO meta (key, int_value) VALUES ('relay_clock_ms', 0);",
    // 3: leadership (several instances): the fencing number of the instance running the
    // engines, bumped by each new leader (`lease.rs`), checked by every engine write.
    "CREATE TABLE leader (
        id     INT    PRIMARY KEY CHECK (id = 1),
        epoch  BIGINT NOT NULL,
        holder TEXT   NOT NULL,
        since  BIGINT NOT NULL
     );
     INSERT INTO leader (id, epoch, holder, since) VALUES (1, 0, '', 0);",
    // 4: the on-call console: what was done to incidents, sessions, and the indexes of its
    // pages (see `console.rs`).
    super::console::MIGRATION,
    // 5: maintenance windows, and the window holding an incident (`maintenance.rs`).
    super::maintenance::MIGRATION,
];

pub(super) fn known() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Brings the schema up to date; refuses a database of a newer schema.
pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let found: Option<i64> = tx
        .query_opt("SELECT MAX(version) FROM schema_version", &[])?
        .and_then(|r| r.get(0));
    let found = found.unwrap_or(0);
    let known = known();
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.batch_execute(sql)?;
        let version = i64::try_from(i + 1).unwrap_or(i64::MAX);
        tx.execute("DELETE FROM schema_version", &[])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES ($1)",
            &[&version],
        )?;
    }
    Ok(tx.commit()?)
}

/// The schema version of the database.
pub(super) fn version(client: &mut Client) -> Result<i64, StoreError> {
    let row = client.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[])?;
    Ok(row.get(0))
}

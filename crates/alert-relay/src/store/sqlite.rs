//! The SQLite backend: WAL with `synchronous=FULL` (an SD card loses power at any moment),
//! migrations counted in `PRAGMA user_version`, one connection owned by the DB thread.

use std::path::Path;

use rusqlite::{CachedStatement, Connection, OptionalExtension as _, params};

use super::{
    AckTarget, Action, Attempt, Backend, DeliveryJob, DeliveryState, FiringRef, Incident,
    IncidentDelivery, IncidentState, IngestOutcome, PendingRef, RoutedEvent, StoreError,
    Transitioned, WatchedReceipt, Write, Written,
};
use super::{console_sql, semantics};
use crate::model::console::action;
use crate::model::maintenance::Window;
use crate::payload::{AlertEvent, Status};
use crate::time::WallClock;

/// Schema versions, applied in order; `user_version` counts how many have run. Never edit a
/// released entry: append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: events and the outbox.
    "CREATE TABLE alert_events (
        id          INTEGER PRIMARY KEY,
        fingerprint TEXT    NOT NULL,
        status      TEXT    NOT NULL CHECK (status IN ('firing', 'resolved')),
        starts_at   INTEGER NOT NULL,   -- unix ns, part of the dedup key
        ends_at     INTEGER,
        received_at INTEGER NOT NULL,   -- unix ms
        group_key   TEXT    NOT NULL,   -- for incidents (escalation, issue #7)
        receiver    TEXT    NOT NULL,
        alert       TEXT    NOT NULL,   -- JSON AlertEvent
        UNIQUE (fingerprint, status, starts_at)
     );
     CREATE INDEX alert_events_received ON alert_events (received_at);
     CREATE TABLE deliveries (
        id              INTEGER PRIMARY KEY,
        event_id        INTEGER NOT NULL,
        destination     TEXT    NOT NULL,
        state           TEXT    NOT NULL CHECK (state IN ('pending', 'delivered', 'dead', 'skipped')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        created_at      INTEGER NOT NULL,   -- unix ms
        next_attempt_at INTEGER NOT NULL,   -- unix ms
        updated_at      INTEGER NOT NULL,
        last_error      TEXT,
        provider_ref    TEXT,               -- provider's message id, to edit or thread
        firing_delivery INTEGER,            -- resolved: the firing delivery it follows
        step            INTEGER NOT NULL DEFAULT 0  -- policy step (escalation, issue #7)
     );
     CREATE INDEX deliveries_pending ON deliveries (destination, id) WHERE state = 'pending';
     CREATE INDEX deliveries_event ON deliveries (event_id);",
    // 2: incidents (escalation and acknowledgement), the ack-link key.
    "CREATE TABLE incidents (
        id          INTEGER PRIMARY KEY,
        group_key   TEXT    NOT NULL,
        route       TEXT    NOT NULL,
        policy      TEXT    NOT NULL,
        event_id    INTEGER NOT NULL,   -- the first firing event: what later steps send
        state       TEXT    NOT NULL CHECK (state IN ('open', 'acked', 'resolved')),
        elapsed_ms  INTEGER NOT NULL DEFAULT 0,  -- monotonic escalation time, checkpointed
        acked_ms    INTEGER NOT NULL DEFAULT 0,  -- monotonic time since the ack, checkpointed
        next_step   INTEGER NOT NULL DEFAULT 1,  -- index into the policy schedule
        opened_at   INTEGER NOT NULL,   -- unix ms, for humans only
        acked_at    INTEGER,
        acked_by    TEXT,
        resolved_at INTEGER,
        resolved_by TEXT,
        updated_at  INTEGER NOT NULL
     );
     CREATE UNIQUE INDEX incidents_open ON incidents (group_key, route) WHERE state != 'resolved';
     CREATE INDEX incidents_state ON incidents (state);
     ALTER TABLE deliveries ADD COLUMN incident_id INTEGER;
     ALTER TABLE deliveries ADD COLUMN notice TEXT;
     CREATE INDEX deliveries_incident ON deliveries (incident_id) WHERE incident_id IS NOT NULL;
     CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);
     INSERT INTO meta (key, value) VALUES ('ack_key', randomblob(32));",
    // 3: Pushover emergency receipts that need no more polling (the ones to poll are the
    // deliveries whose provider_ref is `receipt:…`).
    "CREATE TABLE pushover_receipts (
        receipt    TEXT    PRIMARY KEY,
        state      TEXT    NOT NULL CHECK (state IN ('acked', 'cancelled', 'expired', 'gone')),
        updated_at INTEGER NOT NULL
     );
     CREATE INDEX deliveries_receipts ON deliveries (id) WHERE substr(provider_ref, 1, 8) = 'receipt:';",
    // 4: who a rotation paged through a delivery ('alice (rotation primary)').
    "ALTER TABLE deliveries ADD COLUMN on_call TEXT;",
    // 5: storm control and per-destination budgets (see `store/storm_sql.rs`).
    super::storm_sql::MIGRATION,
    // 6: a storm's deliveries (announcements, closing) are found by storm.
    "CREATE INDEX deliveries_storm ON deliveries (storm_id) WHERE storm_id IS NOT NULL;",
    // 7: pruning asks, for each old event, whether an incident opened with it.
    "CREATE INDEX incidents_event ON incidents (event_id);",
    // 8: the MessageSid of every signed inbound SMS, so that a replayed request is recognised.
    "CREATE TABLE inbound_sids (
        sid         TEXT    PRIMARY KEY,
        received_at INTEGER NOT NULL    -- unix ms, for pruning
     ) WITHOUT ROWID;
     CREATE INDEX inbound_sids_received ON inbound_sids (received_at);",
    // 9: the on-call console: what was done to incidents, sessions, and the indexes of its
    // pages (see `store/console_sql.rs`).
    super::console_sql::MIGRATION,
    // 10: maintenance windows, and the window holding an incident (see `store/maintenance_sql.rs`).
    super::maintenance_sql::MIGRATION,
];

/// The schema version this build writes (`PRAGMA user_version` of an up-to-date file).
pub(super) fn known_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

/// Inbound SMS ids are kept at least this long whatever `storage.retention` says: a captured
/// request must not become good again soon after it was sent.
const SIDS_KEPT_MS: i64 = 24 * 3600 * 1000;

/// A delivery to destination ?1 that the relay sent, is sending or gave up on (a failed
/// attempt may have reached the phone all the same), but not one it skipped (collapsed into a
/// storm summary, held back by a budget): that never left. A pending one counts, so an ack
/// that overtakes the record of its own delivery is not refused.
const PAGED: &str = "destination = ?1 AND state != 'skipped'";

/// `Backend::sent_to` for an incident (?2): a delivery of it, or of a summary of its storm.
const SENT_INCIDENT: &str =
    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE incident_id = ?2 AND {a})
    OR EXISTS (SELECT 1 FROM deliveries WHERE {a}
               AND storm_id = (SELECT storm_id FROM storm_members WHERE incident_id = ?2))";

/// `Backend::sent_to` for a storm (?2): a summary of it, or a delivery of one of its incidents.
const SENT_STORM: &str = "SELECT EXISTS (SELECT 1 FROM deliveries WHERE storm_id = ?2 AND {a})
    OR EXISTS (SELECT 1 FROM deliveries WHERE {a}
               AND incident_id IN (SELECT incident_id FROM storm_members WHERE storm_id = ?2))";

/// An event pruning keeps whatever its age: the opening event of an incident still stored
/// (later steps, notices and summaries are sent on it; incidents are pruned on their own), the
/// one a budget's next overflow summary is to be sent on, and an alert still firing in the group
/// of an incident not yet resolved (a worn SD card can fire for months: pruned, Alertmanager's
/// next repeat would be a new alert, and its resolved message would not follow its firing one).
const EVENT_IN_USE: &str = "(EXISTS (SELECT 1 FROM incidents i WHERE i.event_id = {e})
    OR EXISTS (SELECT 1 FROM budgets b WHERE b.event_id = {e})
    OR EXISTS (SELECT 1 FROM alert_events f JOIN incidents i ON i.group_key = f.group_key
               WHERE f.id = {e} AND f.status = 'firing' AND i.state != 'resolved'
               AND NOT EXISTS (SELECT 1 FROM alert_events r WHERE r.fingerprint = f.fingerprint
                               AND r.status = 'resolved' AND r.starts_at = f.starts_at)))";

const INCIDENT_COLUMNS: &str =
    "i.id, i.group_key, i.route, i.policy, i.state, i.elapsed_ms, i.acked_ms,
    i.next_step, i.opened_at, i.acked_at, i.acked_by, i.resolved_at, i.resolved_by, e.alert,
    (SELECT m.storm_id FROM storm_members m WHERE m.incident_id = i.id), i.maintenance";

fn incident_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Incident, String)> {
    let state: String = r.get(4)?;
    Ok((
        Incident {
            id: r.get(0)?,
            group_key: r.get(1)?,
            route: r.get(2)?,
            policy: r.get(3)?,
            state: IncidentState::parse(&state).unwrap_or(IncidentState::Open),
            elapsed_ms: r.get(5)?,
            acked_ms: r.get(6)?,
            next_step: r.get(7)?,
            opened_at_ms: r.get(8)?,
            acked_at_ms: r.get(9)?,
            acked_by: r.get(10)?,
            resolved_at_ms: r.get(11)?,
            resolved_by: r.get(12)?,
            alertname: String::new(),
            summary: String::new(),
            labels: crate::payload::Labels::new(),
            storm: r.get(14)?,
            maintenance: r.get(15)?,
        },
        r.get(13)?,
    ))
}

fn finish_incident((mut i, alert): (Incident, String)) -> Incident {
    semantics::name_incident(&mut i, &alert);
    i
}

pub(super) fn query_incidents(
    conn: &Connection,
    tail: &str,
    params: impl rusqlite::Params,
) -> Result<Vec<Incident>, StoreError> {
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents i JOIN alert_events e ON e.id = i.event_id {tail}"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params, incident_row)?;
    Ok(rows
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .map(finish_incident)
        .collect())
}

/// Once the disk ran full, the WAL is checkpointed every this many pages (SQLite's default is
/// 1000, 4 MiB), and its file cut back to [`TIGHT_WAL_BYTES`] after each checkpoint: on a small
/// volume a 4 MiB WAL alone fills the disk again.
const TIGHT_CHECKPOINT_PAGES: i64 = 32;
const TIGHT_WAL_BYTES: i64 = 128 * 1024;

#[derive(Debug)]
pub struct Sqlite {
    conn: Connection,
    clock: WallClock,
    /// The disk ran full during this run: the WAL is kept short until restart.
    tight: bool,
}

impl Sqlite {
    /// Opens (or creates) the database and proves it can commit: a file the relay may only
    /// read, a directory where the file or its WAL should be, or a full disk refuse start-up
    /// here, not every webhook later.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            return Err(StoreError::Open {
                path: path.display().to_string(),
                message: format!("directory {} does not exist", dir.display()),
            });
        }
        let at_start = |e| super::disk::start_error(path, e);
        let conn = Connection::open(path).map_err(at_start)?;
        let mut db = Self::init(conn).map_err(|e| match e {
            StoreError::Db(e) => at_start(e),
            other => other,
        })?;
        db.probe().map_err(at_start)?;
        Ok(db)
    }

    /// Commits a row at start-up. SQLite opens a file it may not write read-only, and says so
    /// only at the first write.
    fn probe(&mut self) -> rusqlite::Result<()> {
        if self.conn.is_readonly(rusqlite::MAIN_DB)? {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY),
                Some("SQLite could open the database only for reading".into()),
            ));
        }
        let tx = self.conn.transaction()?;
        set_meta_int(&tx, "health_probe", self.clock.now_millis())?;
        tx.commit()
    }

    fn init(mut conn: Connection) -> Result<Self, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
            return Err(StoreError::Open {
                path: conn.path().unwrap_or_default().to_owned(),
                message: format!("cannot switch to WAL (journal_mode is {mode})"),
            });
        }
        // FULL: the WAL is fsynced at every commit, so a committed webhook survives power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        Ok(Self {
            conn,
            clock: WallClock::default(),
            tight: false,
        })
    }

    /// A commit failed on a full disk: from now on the WAL stays short (see
    /// [`TIGHT_CHECKPOINT_PAGES`]). Connection settings only; nothing is written.
    fn disk_full(&mut self) {
        if self.tight {
            return;
        }
        let set = self
            .conn
            .pragma_update(None, "wal_autocheckpoint", TIGHT_CHECKPOINT_PAGES)
            .and_then(|()| {
                self.conn
                    .pragma_update(None, "journal_size_limit", TIGHT_WAL_BYTES)
            });
        match set {
            Ok(()) => {
                self.tight = true;
                tracing::warn!(
                    pages = TIGHT_CHECKPOINT_PAGES,
                    "the disk ran full: the write-ahead log is checkpointed often until restart"
                );
            }
            Err(e) => tracing::warn!("cannot shorten the write-ahead log: {e}"),
        }
    }

    /// An in-memory database for unit tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::init(Connection::open_in_memory()?)
    }

    /// Stamps rows with `clock` (tests share a clock that jumps).
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn schema_version(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX);
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > known {
        return Err(StoreError::NewerSchema { found, known });
    }
    let tx = conn.transaction()?;
    for (i, sql) in MIGRATIONS
        .iter()
        .enumerate()
        .skip(usize::try_from(found).unwrap_or(0))
    {
        tx.execute_batch(sql)?;
        tx.pragma_update(
            None,
            "user_version",
            i64::try_from(i + 1).unwrap_or(i64::MAX),
        )?;
    }
    tx.commit()?;
    Ok(())
}

impl Sqlite {
    /// One transaction, a savepoint per write: one bad write is undone alone. `Err` when the
    /// transaction could not begin or commit.
    fn apply_batch(
        &mut self,
        writes: Vec<Write>,
    ) -> rusqlite::Result<Vec<Result<Written, StoreError>>> {
        let mut tx = self.conn.transaction()?;
        let now = self.clock.now_millis();
        let mut results = Vec::with_capacity(writes.len());
        for w in writes {
            let r = match tx.savepoint() {
                Ok(mut sp) => match apply(&sp, w, now) {
                    Ok(written) => sp.commit().map(|()| written).map_err(StoreError::from),
                    Err(e) => {
                        let _ = sp.rollback();
                        Err(e)
                    }
                },
                Err(e) => Err(StoreError::from(e)),
            };
            results.push(r);
        }
        tx.commit()?;
        Ok(results)
    }
}

fn is_disk_full(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(e) if super::disk::is_full(e))
}

impl Backend for Sqlite {
    fn write_batch(&mut self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
        let n = writes.len();
        match self.apply_batch(writes) {
            Ok(results) => {
                if results.iter().any(|r| r.as_ref().is_err_and(is_disk_full)) {
                    self.disk_full();
                }
                results
            }
            Err(e) => {
                if super::disk::is_full(&e) {
                    self.disk_full();
                }
                let why = super::disk::explain(&e);
                (0..n)
                    .map(|_| Err(StoreError::Commit(why.clone())))
                    .collect()
            }
        }
    }

    /// Copies the WAL into the database and truncates it. Nothing else would: SQLite
    /// checkpoints only once the WAL holds 1000 pages, which a small volume never has room for.
    fn recover(&mut self) -> Result<(), StoreError> {
        let (busy, frames, copied): (i64, i64, i64) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map_err(|e| StoreError::Commit(super::disk::explain(&e)))?;
        if busy != 0 {
            return Err(StoreError::Commit(format!(
                "checkpoint incomplete: {copied} of {frames} WAL frames copied"
            )));
        }
        Ok(())
    }

    fn pending(&mut self, destination: &str) -> Result<Vec<PendingRef>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, created_at FROM deliveries WHERE destination = ?1 AND state = 'pending' ORDER BY id",
        )?;
        let rows = stmt.query_map([destination], |r| {
            Ok(PendingRef {
                id: r.get(0)?,
                created_at_ms: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn load(&mut self, id: i64) -> Result<Option<DeliveryJob>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT d.id, d.destination, d.state, d.attempts, d.created_at, d.next_attempt_at, e.alert,
                    f.id, f.state, f.provider_ref, d.incident_id, d.step, d.notice, d.storm_id,
                    f.incident_id, d.provider_ref
             FROM deliveries d
             JOIN alert_events e ON e.id = d.event_id
             LEFT JOIN deliveries f ON f.id = d.firing_delivery
             WHERE d.id = ?1",
        )?;
        let row = stmt
            .query_row([id], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, i64>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, Option<i64>>(7)?,
                    r.get::<_, Option<String>>(8)?,
                    (r.get::<_, Option<String>>(9)?, r.get::<_, Option<i64>>(14)?),
                    (
                        r.get::<_, Option<i64>>(10)?,
                        r.get::<_, i64>(11)?,
                        r.get::<_, Option<String>>(12)?,
                        r.get::<_, Option<i64>>(13)?,
                        r.get::<_, Option<String>>(15)?,
                    ),
                ))
            })
            .optional()?;
        let Some((
            id,
            destination,
            state,
            attempts,
            created,
            next,
            alert,
            fid,
            fstate,
            (fref, fincident),
            (incident, step, notice, storm, provider_ref),
        )) = row
        else {
            return Ok(None);
        };
        let event: AlertEvent = serde_json::from_str(&alert)
            .map_err(|e| StoreError::Corrupt(format!("delivery {id}: {e}")))?;
        let state = DeliveryState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("delivery {id}: state {state:?}")))?;
        let firing = match (fid, fstate) {
            (Some(delivery_id), Some(s)) => Some(FiringRef {
                state: DeliveryState::parse(&s).ok_or_else(|| {
                    StoreError::Corrupt(format!("delivery {delivery_id}: state {s:?}"))
                })?,
                provider_ref: fref,
                incident: fincident,
            }),
            _ => None,
        };
        let alerts = match incident {
            Some(i) if step > 0 && notice.is_none() => {
                super::storm_sql::firing_alerts(&self.conn, i)?
            }
            _ => Vec::new(),
        };
        Ok(Some(DeliveryJob {
            id,
            destination,
            state,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            created_at_ms: created,
            next_attempt_at_ms: next,
            event,
            firing,
            incident,
            step,
            notice,
            storm,
            alerts,
            provider_ref,
        }))
    }

    fn pending_destinations(&mut self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT destination, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY destination",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.conn.query_row("SELECT 1", [], |_| Ok(()))?;
        Ok(())
    }

    fn open_incidents(&mut self) -> Result<Vec<Incident>, StoreError> {
        query_incidents(&self.conn, "WHERE i.state != 'resolved' ORDER BY i.id", [])
    }

    fn incidents(&mut self, limit: i64) -> Result<Vec<Incident>, StoreError> {
        query_incidents(&self.conn, "ORDER BY i.id DESC LIMIT ?1", [limit])
    }

    fn incident(&mut self, id: i64) -> Result<Option<Incident>, StoreError> {
        Ok(query_incidents(&self.conn, "WHERE i.id = ?1", [id])?.pop())
    }

    fn incident_deliveries(&mut self, id: i64) -> Result<Vec<IncidentDelivery>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT destination, step, state, notice, last_error FROM deliveries
             WHERE incident_id = ?1 ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| {
            let state: String = r.get(2)?;
            Ok((
                r.get(0)?,
                r.get(1)?,
                DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending),
                r.get(3)?,
                r.get(4)?,
            ))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    fn last_event_id(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(id), 0) FROM alert_events", [], |r| {
                r.get(0)
            })?)
    }

    fn incident_fingerprints(&mut self, id: i64) -> Result<Vec<String>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT DISTINCT e.fingerprint FROM incidents i JOIN alert_events e
               ON e.group_key = i.group_key AND e.id >= i.event_id AND e.status = 'firing'
             WHERE i.id = ?1",
        )?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn incident_on_call(&mut self, id: i64) -> Result<Vec<(String, i64, String)>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT destination, step, on_call FROM deliveries
             WHERE incident_id = ?1 AND on_call IS NOT NULL ORDER BY id",
        )?;
        let rows = stmt.query_map([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn storm(&mut self, id: i64) -> Result<Option<crate::model::storm::StormView>, StoreError> {
        super::storm_sql::storm_view(&self.conn, id)
    }

    fn relay_clock(&mut self) -> Result<i64, StoreError> {
        super::storm_sql::relay_clock(&self.conn)
    }

    fn ack_key(&mut self) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'ack_key'", [], |r| {
                r.get(0)
            })?)
    }

    fn meta_int(&mut self, key: &str) -> Result<Option<i64>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
                r.get::<_, i64>(0)
            })
            .optional()?)
    }

    fn watched_receipts(&mut self) -> Result<Vec<WatchedReceipt>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT substr(d.provider_ref, 9), d.incident_id, d.destination, d.updated_at,
                COALESCE(i.state, CASE WHEN EXISTS (
                    SELECT 1 FROM storm_members m JOIN incidents x ON x.id = m.incident_id
                    WHERE m.storm_id = d.storm_id AND x.state = 'open') THEN 'open' ELSE 'acked' END),
                d.storm_id
             FROM deliveries d LEFT JOIN incidents i ON i.id = d.incident_id
             WHERE substr(d.provider_ref, 1, 8) = 'receipt:' AND d.state = 'delivered'
             AND (d.incident_id IS NOT NULL OR d.storm_id IS NOT NULL)
             AND NOT EXISTS (SELECT 1 FROM pushover_receipts r WHERE r.receipt = substr(d.provider_ref, 9))
             ORDER BY d.id",
        )?;
        let rows = stmt.query_map([], |r| {
            let state: String = r.get(4)?;
            Ok(WatchedReceipt {
                receipt: r.get(0)?,
                incident: r.get(1)?,
                storm: r.get(5)?,
                destination: r.get(2)?,
                delivered_at_ms: r.get(3)?,
                incident_state: IncidentState::parse(&state).unwrap_or(IncidentState::Open),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn maintenance_windows(&mut self) -> Result<Vec<Window>, StoreError> {
        super::maintenance_sql::windows(&self.conn, self.clock.now_millis())
    }

    fn sent_to(&mut self, destination: &str, target: AckTarget) -> Result<bool, StoreError> {
        let (sql, id) = match target {
            AckTarget::Incident(id) => (SENT_INCIDENT, id),
            AckTarget::Storm(id) => (SENT_STORM, id),
        };
        let mut stmt = self.conn.prepare_cached(&sql.replace("{a}", PAGED))?;
        Ok(stmt.query_row(params![destination, id], |r| r.get(0))?)
    }

    fn incident_page(&mut self, q: &super::IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        console_sql::incident_page(&self.conn, q)
    }

    fn incident_timeline(&mut self, id: i64) -> Result<Option<super::Timeline>, StoreError> {
        console_sql::timeline(&self.conn, id)
    }

    fn destination_health(&mut self) -> Result<Vec<super::DestinationHealth>, StoreError> {
        console_sql::destination_health(&self.conn)
    }

    fn dead_letters(&mut self, limit: i64) -> Result<Vec<super::DeadLetter>, StoreError> {
        console_sql::dead_letters(&self.conn, limit)
    }

    fn console_session(
        &mut self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<super::ConsoleSession>, StoreError> {
        console_sql::console_session(&self.conn, token_hash, now_ms)
    }
}

fn set_meta_int(tx: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

/// Applies one write inside its savepoint: a dispatch, each variant in a function of its own.
fn apply(tx: &Connection, w: Write, now: i64) -> Result<Written, StoreError> {
    match w {
        Write::Ingest(events) => ingest(tx, events, now).map(Written::Ingested),
        Write::Record {
            id,
            attempts,
            attempt,
        } => record(tx, id, attempts, attempt, now),
        Write::Prune { before_ms } => prune(tx, before_ms, now).map(Written::Pruned),
        Write::Checkpoint(clocks) => checkpoint(tx, &clocks),
        Write::FireStep {
            id,
            expected_step,
            step,
            elapsed_ms,
            destinations,
            on_call,
            allow_acked,
            reopen,
            by,
        } => {
            let due = DueStep {
                id,
                expected_step,
                elapsed_ms,
                allow_acked,
                reopen,
                by,
            };
            fire_step(tx, &due, step, destinations, &on_call, now).map(Written::Fired)
        }
        Write::Transition {
            id,
            action,
            by,
            elapsed_ms,
        } => transition(tx, id, &action, &by, elapsed_ms, true, now).map(Written::Transitioned),
        Write::AckAll { incidents, by } => ack_all(tx, incidents, &by, now),
        Write::Storm(w) => super::storm_sql::apply(tx, w, now).map(Written::Storm),
        Write::Maintenance(w) => {
            super::maintenance_sql::apply(tx, w, now).map(Written::Maintenance)
        }
        Write::InboundSid { sid } => remember_sid(tx, &sid, now).map(Written::FirstTime),
        Write::CallOutcome {
            id,
            call_sid,
            outcome,
        } => {
            let n = tx
                .prepare_cached(
                    "UPDATE deliveries SET last_error = ?3, updated_at = ?4
                     WHERE id = ?1 AND provider_ref = ?2 AND last_error IS NULL",
                )?
                .execute(params![id, call_sid, outcome, now])?;
            Ok(Written::FirstTime(n == 1))
        }
        // One instance on one file: nobody else to tell.
        Write::Heartbeat(h) => Ok(Written::Heartbeat(h)),
        Write::Console(w) => console_sql::apply(tx, w, now).map(Written::Console),
        // One instance on one file: nothing to fence.
        Write::Fenced { write, .. } => apply(tx, *write, now),
        Write::SetMetaInt { key, value } => {
            set_meta_int(tx, &key, value)?;
            Ok(Written::Recorded)
        }
        Write::SetMeta { key, value, events } => set_meta(tx, &key, &value, events, now),
        Write::FinishReceipt { receipt, end } => finish_receipt(tx, &receipt, end, now),
        Write::ResolveStale {
            id,
            by,
            elapsed_ms,
            after_event,
            after_ms,
        } => resolve_stale(tx, id, &by, elapsed_ms, (after_event, after_ms), now),
    }
}

/// The outcome of one delivery attempt (see [`semantics::recorded`] for what it means).
fn record(
    tx: &Connection,
    id: i64,
    attempts: u32,
    attempt: Attempt,
    now: i64,
) -> Result<Written, StoreError> {
    let r = semantics::recorded(attempt, now);
    tx.prepare_cached(
        "UPDATE deliveries SET state = ?2, attempts = ?3, last_error = ?4,
            provider_ref = COALESCE(?5, provider_ref), next_attempt_at = ?6, updated_at = ?7
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        r.state.as_str(),
        attempts,
        r.last_error,
        r.provider_ref,
        r.next_attempt_at_ms,
        now
    ])?;
    Ok(Written::Recorded)
}

/// Everything finished before `before_ms`; returns how many rows went.
fn prune(tx: &Connection, before_ms: i64, now: i64) -> Result<usize, StoreError> {
    // Closed storms first: an incident leaves with its storm's member rows.
    let storms = super::storm_sql::prune(tx, before_ms)?;
    // Incidents resolved before the cutoff, except the newest row: a deleted highest
    // id would be handed out again, and an old `ACK n` or link would reach a new one.
    let incidents = tx.execute(
        "DELETE FROM incidents WHERE state = 'resolved' AND resolved_at < ?1
         AND id < (SELECT MAX(id) FROM incidents)
         AND NOT EXISTS (SELECT 1 FROM storm_members m WHERE m.incident_id = incidents.id)
         AND NOT EXISTS (SELECT 1 FROM deliveries d
                         WHERE d.incident_id = incidents.id AND d.state = 'pending')",
        [before_ms],
    )?;
    let events = prune_events(tx, before_ms)?;
    // A finished receipt is remembered while its delivery exists (else it is polled
    // again).
    let receipts = tx.execute(
        "DELETE FROM pushover_receipts WHERE updated_at < ?1 AND receipt NOT IN (
            SELECT substr(provider_ref, 9) FROM deliveries
            WHERE substr(provider_ref, 1, 8) = 'receipt:')",
        [before_ms],
    )?;
    let sids = prune_sids(tx, before_ms, now)?;
    let console = console_sql::prune(tx, now)?;
    Ok(storms + incidents + events + receipts + sids + console)
}

/// Old events no longer in use ([`EVENT_IN_USE`]) and their finished deliveries; returns how
/// many rows of both went.
fn prune_events(tx: &Connection, before_ms: i64) -> Result<usize, StoreError> {
    // As for incidents, the highest delivery and event ids stay: a delivery's id is
    // its identity at providers (Matrix txnId, email Message-ID, idempotency key), and
    // re-sync's watermark is the highest event id.
    let deliveries = tx.execute(
        &format!(
            "DELETE FROM deliveries WHERE id < (SELECT MAX(id) FROM deliveries) AND event_id IN (
            SELECT e.id FROM alert_events e WHERE e.received_at < ?1
            AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.event_id = e.id AND p.state = 'pending')
            AND NOT {})",
            EVENT_IN_USE.replace("{e}", "e.id")
        ),
        [before_ms],
    )?;
    let events = tx.execute(
        &format!(
            "DELETE FROM alert_events WHERE received_at < ?1
         AND id < (SELECT MAX(id) FROM alert_events)
         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = alert_events.id)
         AND NOT {}",
            EVENT_IN_USE.replace("{e}", "alert_events.id")
        ),
        [before_ms],
    )?;
    Ok(deliveries + events)
}

/// Escalation clocks (incident, elapsed, acked) of incidents not yet resolved.
fn checkpoint(tx: &Connection, clocks: &[(i64, i64, i64)]) -> Result<Written, StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE incidents SET elapsed_ms = ?2, acked_ms = ?3 WHERE id = ?1 AND state != 'resolved'",
    )?;
    for (id, elapsed, acked) in clocks {
        stmt.execute(params![id, elapsed, acked])?;
    }
    Ok(Written::Checkpointed)
}

/// The guard of [`Write::FireStep`]: the incident and the schedule entry it must still be at.
struct DueStep {
    id: i64,
    expected_step: i64,
    elapsed_ms: i64,
    allow_acked: bool,
    reopen: bool,
    /// Who asked for it now (escalate-now); `None` for the schedule's own steps.
    by: Option<String>,
}

/// Sends policy step `step` to `destinations` if the incident is still due for it; nothing
/// when another pass already sent it (the `next_step` test makes a step fire once).
fn fire_step(
    tx: &Connection,
    due: &DueStep,
    step: i64,
    destinations: Vec<String>,
    on_call: &std::collections::BTreeMap<String, String>,
    now: i64,
) -> Result<Vec<(String, i64, i64)>, StoreError> {
    let states = semantics::state_list(semantics::fire_step_states(due.allow_acked, due.reopen));
    let set_state = if due.reopen {
        ", state = 'open', acked_ms = 0"
    } else {
        ""
    };
    let id = due.id;
    // An escalate-now of an acknowledged incident reopens it: recorded as such.
    let reopens = due.reopen
        && tx
            .query_row("SELECT state FROM incidents WHERE id = ?1", [id], |r| {
                r.get::<_, String>(0)
            })
            .optional()?
            .as_deref()
            == Some(IncidentState::Acked.as_str());
    let n = tx.execute(
        &format!(
            "UPDATE incidents SET next_step = ?2 + 1, elapsed_ms = ?3, updated_at = ?4{set_state}
             WHERE id = ?1 AND next_step = ?2 AND state IN {states}"
        ),
        params![id, due.expected_step, due.elapsed_ms, now],
    )?;
    if n == 0 {
        return Ok(Vec::new());
    }
    let event_id: i64 =
        tx.query_row("SELECT event_id FROM incidents WHERE id = ?1", [id], |r| {
            r.get(0)
        })?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, incident_id, step, on_call)
         VALUES (?1, ?2, 'pending', ?3, ?3, ?3, ?4, ?5, ?6)",
    )?;
    let mut out = Vec::new();
    for d in destinations {
        insert.execute(params![event_id, d, now, id, step, on_call.get(&d)])?;
        out.push((d, tx.last_insert_rowid(), now));
    }
    let by = due.by.as_deref().unwrap_or(action::BY_ESCALATION);
    if reopens {
        console_sql::record_action(tx, id, action::REOPENED, by, now)?;
    }
    if !out.is_empty() {
        console_sql::record_action(tx, id, action::ESCALATED, by, now)?;
    }
    Ok(out)
}

/// Acknowledges each incident without a notice of its own (the storm announces it once).
fn ack_all(
    tx: &Connection,
    incidents: Vec<(i64, i64)>,
    by: &str,
    now: i64,
) -> Result<Written, StoreError> {
    let mut out = Vec::with_capacity(incidents.len());
    for (id, elapsed_ms) in incidents {
        let t = transition(tx, id, &Action::Ack, by, elapsed_ms, false, now)?;
        out.push((id, t));
    }
    Ok(Written::TransitionedAll(out))
}

/// `value` under `key` in the same savepoint as the events (the dead-man's switch).
fn set_meta(
    tx: &Connection,
    key: &str,
    value: &[u8],
    events: Vec<RoutedEvent>,
    now: i64,
) -> Result<Written, StoreError> {
    let o = ingest(tx, events, now)?;
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(Written::Ingested(o))
}

/// A receipt that needs no more polling; the first end recorded stays.
fn finish_receipt(
    tx: &Connection,
    receipt: &str,
    end: super::ReceiptEnd,
    now: i64,
) -> Result<Written, StoreError> {
    tx.execute(
        "INSERT INTO pushover_receipts (receipt, state, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (receipt) DO NOTHING",
        params![receipt, end.as_str(), now],
    )?;
    Ok(Written::Recorded)
}

/// Re-sync's resolve, unless the group received an event after `(after_event, after_ms)`.
fn resolve_stale(
    tx: &Connection,
    id: i64,
    by: &str,
    elapsed_ms: i64,
    (after_event, after_ms): (i64, i64),
    now: i64,
) -> Result<Written, StoreError> {
    // The id test decides (pruning keeps the newest event, so ids are never reused);
    // the time test only errs towards leaving it open, as after a wall-clock step back.
    // It is strict: an event of the watermark's own millisecond that came after it has
    // a higher id, and one that came before it must not keep the incident open.
    let newer: Option<String> = tx
        .query_row(
            "SELECT i.state FROM incidents i WHERE i.id = ?1 AND EXISTS (
                SELECT 1 FROM alert_events e WHERE e.group_key = i.group_key
                AND (e.id > ?2 OR e.received_at > ?3))",
            params![id, after_event, after_ms],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(state) = newer {
        let state = IncidentState::parse(&state).unwrap_or(IncidentState::Open);
        return Ok(Written::Transitioned(Transitioned::Unchanged(state)));
    }
    transition(tx, id, &Action::Resolve, by, elapsed_ms, true, now).map(Written::Transitioned)
}

/// Records an inbound SMS id; false when it is already there.
fn remember_sid(tx: &Connection, sid: &str, now: i64) -> Result<bool, StoreError> {
    let n = tx.execute(
        "INSERT INTO inbound_sids (sid, received_at) VALUES (?1, ?2) ON CONFLICT (sid) DO NOTHING",
        params![sid, now],
    )?;
    Ok(n == 1)
}

/// Inbound SMS ids older than the retention cutoff and than `SIDS_KEPT_MS`.
fn prune_sids(tx: &Connection, before_ms: i64, now: i64) -> Result<usize, StoreError> {
    Ok(tx.execute(
        "DELETE FROM inbound_sids WHERE received_at < MIN(?1, ?2)",
        params![before_ms, now.saturating_sub(SIDS_KEPT_MS)],
    )?)
}

fn transition(
    tx: &Connection,
    id: i64,
    action: &Action,
    by: &str,
    elapsed_ms: i64,
    announce: bool,
    now: i64,
) -> Result<Transitioned, StoreError> {
    let state: Option<String> = tx
        .query_row("SELECT state FROM incidents WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?;
    let Some(from) = state.as_deref().and_then(IncidentState::parse) else {
        return Ok(Transitioned::NotFound);
    };
    let Some(to) = semantics::transition_to(action, from) else {
        return Ok(Transitioned::Unchanged(from));
    };
    match to {
        IncidentState::Acked => tx.execute(
            "UPDATE incidents SET state = 'acked', acked_at = ?2, acked_by = ?3, acked_ms = 0,
                elapsed_ms = ?4, updated_at = ?2 WHERE id = ?1",
            params![id, now, by, elapsed_ms],
        )?,
        IncidentState::Open => tx.execute(
            "UPDATE incidents SET state = 'open', acked_ms = 0, elapsed_ms = ?3, updated_at = ?2 WHERE id = ?1",
            params![id, now, elapsed_ms],
        )?,
        IncidentState::Resolved => tx.execute(
            "UPDATE incidents SET state = 'resolved', resolved_at = ?2, resolved_by = ?3,
                elapsed_ms = ?4, updated_at = ?2 WHERE id = ?1",
            params![id, now, by, elapsed_ms],
        )?,
    };
    console_sql::record_action(tx, id, action.verb(), by, now)?;
    let notice = semantics::transition_notice(id, action, by, now, &paged(tx, id)?);
    let deliveries = if announce {
        notify_notified(tx, id, &notice, now)?
    } else {
        Vec::new()
    };
    Ok(Transitioned::Done { from, deliveries })
}

/// Everyone a rotation paged for the incident, in the order they were paged.
fn paged(tx: &Connection, id: i64) -> Result<Vec<String>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "SELECT on_call FROM deliveries WHERE incident_id = ?1 AND on_call IS NOT NULL
         GROUP BY on_call ORDER BY MIN(id)",
    )?;
    let rows = stmt.query_map([id], |r| r.get(0))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Sends `notice` once to every destination the incident has already sent to.
fn notify_notified(
    tx: &Connection,
    id: i64,
    notice: &str,
    now: i64,
) -> Result<Vec<(String, i64, i64)>, StoreError> {
    let (event_id, targets): (i64, Vec<String>) = {
        let event_id: i64 =
            tx.query_row("SELECT event_id FROM incidents WHERE id = ?1", [id], |r| {
                r.get(0)
            })?;
        let mut stmt = tx.prepare_cached(
            "SELECT destination FROM deliveries WHERE incident_id = ?1 AND notice IS NULL
             AND state IN ('pending', 'delivered') GROUP BY destination ORDER BY MIN(id)",
        )?;
        let rows = stmt.query_map([id], |r| r.get(0))?;
        (event_id, rows.collect::<Result<_, _>>()?)
    };
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, incident_id, step, notice)
         VALUES (?1, ?2, 'pending', ?3, ?3, ?3, ?4, -1, ?5)",
    )?;
    let mut out = Vec::new();
    for d in targets {
        insert.execute(params![event_id, d, now, id, notice])?;
        out.push((d, tx.last_insert_rowid(), now));
    }
    Ok(out)
}

/// The statements of one [`Write::Ingest`], prepared once for all its events.
struct IngestSql<'c> {
    tx: &'c Connection,
    now: i64,
    insert_event: CachedStatement<'c>,
    insert_delivery: CachedStatement<'c>,
    firing_event: CachedStatement<'c>,
    firing_deliveries: CachedStatement<'c>,
    find_incident: CachedStatement<'c>,
    open_incident: CachedStatement<'c>,
    set_incident: CachedStatement<'c>,
    incident_destinations: CachedStatement<'c>,
    group_held: CachedStatement<'c>,
    count_suppressed: CachedStatement<'c>,
}

impl<'c> IngestSql<'c> {
    fn prepare(tx: &'c Connection, now: i64) -> rusqlite::Result<Self> {
        Ok(Self {
            tx,
            now,
            insert_event: tx.prepare_cached(
                "INSERT INTO alert_events (fingerprint, status, starts_at, ends_at, received_at, group_key, receiver, alert)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (fingerprint, status, starts_at) DO NOTHING",
            )?,
            insert_delivery: tx.prepare_cached(
                "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, firing_delivery, on_call)
                 VALUES (?1, ?2, 'pending', ?3, ?3, ?3, ?4, ?5)",
            )?,
            firing_event: tx.prepare_cached(
                "SELECT id FROM alert_events WHERE fingerprint = ?1 AND status = 'firing' AND starts_at = ?2",
            )?,
            // One resolved message per destination, whichever steps sent there; notices get none.
            firing_deliveries: tx.prepare_cached(
                "SELECT MIN(id), destination FROM deliveries WHERE event_id = ?1 AND notice IS NULL
                 GROUP BY destination ORDER BY MIN(id)",
            )?,
            find_incident: tx.prepare_cached(
                "SELECT id FROM incidents WHERE group_key = ?1 AND route = ?2 AND state != 'resolved'",
            )?,
            open_incident: tx.prepare_cached(
                "INSERT INTO incidents (group_key, route, policy, event_id, state, opened_at, updated_at, maintenance, next_step)
                 VALUES (?1, ?2, ?3, ?4, 'open', ?5, ?5, ?6, CASE WHEN ?6 IS NULL THEN 1 ELSE 0 END)",
            )?,
            set_incident: tx
                .prepare_cached("UPDATE deliveries SET incident_id = ?2 WHERE id = ?1")?,
            incident_destinations: tx.prepare_cached(
                "SELECT d.destination FROM deliveries d JOIN incidents i ON i.id = d.incident_id
                 WHERE i.group_key = ?1 AND i.state != 'resolved' AND d.notice IS NULL
                 GROUP BY d.destination ORDER BY MIN(d.id)",
            )?,
            group_held: tx.prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM incidents WHERE group_key = ?1
                 AND state != 'resolved' AND maintenance IS NOT NULL)",
            )?,
            count_suppressed: tx.prepare_cached(
                "UPDATE maintenance_windows SET suppressed = suppressed + 1 WHERE id = ?1",
            )?,
        })
    }

    /// Stores the event; its id, or `None` when it is a duplicate.
    fn insert_event(&mut self, e: &AlertEvent) -> Result<Option<i64>, StoreError> {
        let json = serde_json::to_string(e).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let inserted = self.insert_event.execute(params![
            e.fingerprint,
            e.status.as_str(),
            e.starts_at,
            e.ends_at,
            self.now,
            e.group_key,
            e.receiver,
            json
        ])?;
        Ok((inserted != 0).then(|| self.tx.last_insert_rowid()))
    }

    /// Each route of a firing event joins its group's open incident (pushed to `out.joined`
    /// once) or opens one (pushed to `out.opened`, and to `out.held` when opened in the
    /// maintenance window `held`); the first of them is the incident the event's deliveries
    /// belong to.
    fn join_incidents(
        &mut self,
        routed: &RoutedEvent,
        event_id: i64,
        out: &mut IngestOutcome,
    ) -> Result<Option<i64>, StoreError> {
        let (e, routes, held) = (&routed.event, &routed.routes, routed.maintenance);
        let mut incident = None;
        for r in routes {
            let existing: Option<i64> = self
                .find_incident
                .query_row(params![e.group_key, r.route], |row| row.get(0))
                .optional()?;
            let id = match existing {
                Some(id) => {
                    if !out.joined.contains(&id) && !out.opened.contains(&id) {
                        out.joined.push(id);
                    }
                    id
                }
                None => {
                    self.open_incident.execute(params![
                        e.group_key,
                        r.route,
                        r.policy,
                        event_id,
                        self.now,
                        held
                    ])?;
                    let id = self.tx.last_insert_rowid();
                    out.opened.push(id);
                    if held.is_some() {
                        out.held.push(id);
                    }
                    id
                }
            };
            incident.get_or_insert(id);
        }
        Ok(incident)
    }

    /// Where a resolved event goes (see [`semantics::resolved_targets`]).
    fn resolved_targets(
        &mut self,
        e: &AlertEvent,
        routed: Vec<String>,
    ) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let firing: Option<i64> = self
            .firing_event
            .query_row(params![e.fingerprint, e.starts_at], |r| r.get(0))
            .optional()?;
        let firing = match firing {
            Some(fid) => Some(
                self.firing_deliveries
                    .query_map([fid], |r| Ok((r.get::<_, String>(1)?, r.get::<_, i64>(0)?)))?
                    .collect::<Result<_, _>>()?,
            ),
            None => None,
        };
        let incident_destinations = &mut self.incident_destinations;
        let notified = || -> Result<Vec<String>, StoreError> {
            Ok(incident_destinations
                .query_map([&e.group_key], |r| r.get(0))?
                .collect::<Result<_, _>>()?)
        };
        semantics::resolved_targets(firing, notified, routed)
    }

    /// One pending delivery per target; returns (destination, delivery, created) of each.
    fn insert_deliveries(
        &mut self,
        event_id: i64,
        incident: Option<i64>,
        targets: Vec<(String, Option<i64>)>,
        on_call: impl Fn(&str) -> Option<String>,
    ) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let mut out = Vec::with_capacity(targets.len());
        for (dest, firing_delivery) in targets {
            let who = on_call(&dest);
            self.insert_delivery.execute(params![
                event_id,
                dest,
                self.now,
                firing_delivery,
                who
            ])?;
            let id = self.tx.last_insert_rowid();
            if let Some(i) = incident {
                self.set_incident.execute(params![id, i])?;
            }
            out.push((dest, id, self.now));
        }
        Ok(out)
    }
}

/// Stores new events (duplicates are counted, not stored), opens or joins their incidents,
/// queues their deliveries, and resolves the incidents of groups Alertmanager resolved.
fn ingest(
    tx: &Connection,
    events: Vec<RoutedEvent>,
    now: i64,
) -> Result<IngestOutcome, StoreError> {
    let mut out = IngestOutcome::default();
    let mut sql = IngestSql::prepare(tx, now)?;
    let mut resolve_groups: Vec<String> = Vec::new();
    for routed in events {
        if routed.group_resolved && !resolve_groups.contains(&routed.event.group_key) {
            resolve_groups.push(routed.event.group_key.clone());
        }
        ingest_event(&mut sql, routed, &mut out)?;
    }
    let mut resolve = tx.prepare_cached(
        "UPDATE incidents SET state = 'resolved', resolved_at = ?2, resolved_by = 'Alertmanager',
            updated_at = ?2 WHERE group_key = ?1 AND state != 'resolved' RETURNING id",
    )?;
    for group in resolve_groups {
        let ids = resolve
            .query_map(params![group, now], |r| r.get::<_, i64>(0))?
            .collect::<Result<Vec<i64>, _>>()?;
        for &id in &ids {
            console_sql::record_action(tx, id, action::RESOLVED, action::BY_ALERTMANAGER, now)?;
        }
        out.resolved += ids.len();
        out.closed.extend(ids);
    }
    Ok(out)
}

/// One event of [`ingest`], counted in `out`.
fn ingest_event(
    sql: &mut IngestSql<'_>,
    routed: RoutedEvent,
    out: &mut IngestOutcome,
) -> Result<(), StoreError> {
    let e = &routed.event;
    let Some(event_id) = sql.insert_event(e)? else {
        out.duplicates += 1;
        return Ok(());
    };
    out.accepted += 1;
    // A group Alertmanager resolved opens no incident: this very write closes its incidents.
    let incident = if e.status == Status::Firing && !routed.group_resolved {
        sql.join_incidents(&routed, event_id, out)?
    } else {
        None
    };
    let targets = match (e.status, routed.maintenance) {
        // In maintenance: stored, counted, sent nowhere.
        (Status::Firing, Some(window)) => {
            sql.count_suppressed.execute([window])?;
            out.suppressed += 1;
            Vec::new()
        }
        (Status::Firing, None) => routed.destinations.into_iter().map(|d| (d, None)).collect(),
        (Status::Resolved, Some(_)) => Vec::new(),
        (Status::Resolved, None)
            if sql
                .group_held
                .query_row([&e.group_key], |r| r.get::<_, bool>(0))? =>
        {
            Vec::new()
        }
        (Status::Resolved, None) => {
            let mut t = sql.resolved_targets(e, routed.destinations)?;
            t.retain(|(d, _)| !routed.no_resolved.contains(d));
            t
        }
    };
    // Who is on call is recorded for firing messages only: a resolve pages nobody.
    let firing = e.status == Status::Firing;
    let on_call = |dest: &str| routed.on_call.get(dest).filter(|_| firing).cloned();
    let deliveries = sql.insert_deliveries(event_id, incident, targets, on_call)?;
    out.deliveries.extend(deliveries);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::store::contract::{event, routed};

    fn ingest_one(db: &mut Sqlite, events: Vec<RoutedEvent>) -> IngestOutcome {
        match db.write_batch(vec![Write::Ingest(events)]).pop() {
            Some(Ok(Written::Ingested(o))) => o,
            other => panic!("ingest failed: {other:?}"),
        }
    }

    // Ingest, outcomes, meta and receipts are the backend contract (`super::super::contract`).

    #[test]
    fn a_new_database_has_the_latest_schema() {
        let db = Sqlite::in_memory().expect("db");
        assert_eq!(
            db.schema_version().expect("version"),
            i64::try_from(MIGRATIONS.len()).expect("len")
        );
    }

    #[test]
    fn prunes_incidents_resolved_before_the_cutoff_but_never_the_newest_id() {
        let mut db = Sqlite::in_memory().expect("db");
        let open = |db: &mut Sqlite, group: &str, dests: &[&str]| {
            let mut e = routed(event(group, Status::Firing, 1), dests);
            e.event.group_key = group.into();
            e.routes = vec![super::super::RouteRef {
                route: "#1".into(),
                policy: "p".into(),
            }];
            let o = ingest_one(db, vec![e]);
            (o.opened[0], o.deliveries.first().map(|d| d.1))
        };
        let (old, sent) = open(&mut db, "g1", &["a"]);
        let (still_sending, _) = open(&mut db, "g2", &["a"]);
        let (unresolved, _) = open(&mut db, "g3", &[]);
        let (newest, _) = open(&mut db, "g4", &[]);
        let mut writes = vec![Write::Record {
            id: sent.expect("a delivery"),
            attempts: 1,
            attempt: Attempt::Delivered {
                provider_ref: Some("receipt:R1".into()),
            },
        }];
        for id in [old, still_sending, newest] {
            writes.push(Write::Transition {
                id,
                action: Action::Resolve,
                by: "test".into(),
                elapsed_ms: 0,
            });
        }
        writes.push(Write::FinishReceipt {
            receipt: "R1".into(),
            end: super::super::ReceiptEnd::Acked,
        });
        assert!(db.write_batch(writes).iter().all(Result::is_ok));
        // The resolve notices of the old incident are sent too.
        let notices: Vec<Write> = db
            .pending("a")
            .expect("pending")
            .into_iter()
            .filter(|p| db.load(p.id).ok().flatten().and_then(|j| j.incident) == Some(old))
            .map(|p| Write::Record {
                id: p.id,
                attempts: 1,
                attempt: Attempt::Delivered { provider_ref: None },
            })
            .collect();
        assert!(db.write_batch(notices).iter().all(Result::is_ok));

        let prune = |db: &mut Sqlite, before_ms| {
            let r = db.write_batch(vec![Write::Prune { before_ms }]);
            assert!(matches!(r[0], Ok(Written::Pruned(_))), "{r:?}");
        };
        // Resolved after the cutoff: everything stays.
        prune(&mut db, 0);
        assert!(db.incident(old).expect("read").is_some());

        prune(&mut db, i64::MAX);
        assert!(
            db.incident(old).expect("read").is_none(),
            "resolved long ago"
        );
        assert!(db.incident_deliveries(old).expect("read").is_empty());
        let receipts: i64 = db
            .conn
            .query_row("SELECT COUNT(*) FROM pushover_receipts", [], |r| r.get(0))
            .expect("count");
        assert_eq!(
            receipts, 0,
            "its delivery is gone, so is the finished receipt"
        );
        // A delivery still pending (its resolve notice, its first message) keeps it.
        assert!(db.incident(still_sending).expect("read").is_some());
        assert!(db.incident(unresolved).expect("read").is_some());
        // The highest id stays, so the next incident does not get it again.
        assert!(db.incident(newest).expect("read").is_some());
        let (next, _) = open(&mut db, "g5", &[]);
        assert!(next > newest);
    }

    #[test]
    fn an_alert_still_firing_in_an_open_incident_is_kept_whatever_its_age() {
        let mut db = Sqlite::in_memory().expect("db");
        let with_route = |mut e: RoutedEvent| {
            e.routes = vec![super::super::RouteRef {
                route: "#1".into(),
                policy: "p".into(),
            }];
            e
        };
        let opening = ingest_one(
            &mut db,
            vec![with_route(routed(event("f1", Status::Firing, 10), &["a"]))],
        );
        let second = ingest_one(
            &mut db,
            vec![with_route(routed(event("f2", Status::Firing, 20), &["a"]))],
        );
        // The group's third alert fired and resolved: nothing keeps it.
        let third = ingest_one(
            &mut db,
            vec![
                with_route(routed(event("f3", Status::Firing, 30), &["a"])),
                with_route(routed(event("f3", Status::Resolved, 30), &["a"])),
            ],
        );
        // Something newer, so that no row above is kept only as the newest of its table.
        ingest_one(
            &mut db,
            vec![routed(event("other", Status::Firing, 1), &["b"])],
        );
        let delivered: Vec<Write> = [&opening, &second, &third]
            .iter()
            .flat_map(|o| o.deliveries.iter())
            .map(|d| Write::Record {
                id: d.1,
                attempts: 1,
                attempt: Attempt::Delivered {
                    provider_ref: Some(format!("ts{}", d.1)),
                },
            })
            .collect();
        assert!(db.write_batch(delivered).iter().all(Result::is_ok));
        let r = db.write_batch(vec![Write::Prune {
            before_ms: i64::MAX,
        }]);
        assert!(matches!(r[0], Ok(Written::Pruned(_))), "{r:?}");
        let events: Vec<String> = db
            .conn
            .prepare("SELECT fingerprint || ' ' || status FROM alert_events ORDER BY id")
            .expect("prepare")
            .query_map([], |r| r.get(0))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        assert_eq!(events, ["f1 firing", "f2 firing", "other firing"]);
        // Alertmanager's repeat of the second alert is still a duplicate, and its resolve
        // follows the firing message.
        let repeat = ingest_one(
            &mut db,
            vec![with_route(routed(event("f2", Status::Firing, 20), &["a"]))],
        );
        assert_eq!((repeat.accepted, repeat.duplicates), (0, 1));
        let resolved = ingest_one(
            &mut db,
            vec![with_route(routed(
                event("f2", Status::Resolved, 20),
                &["a"],
            ))],
        );
        let job = db
            .load(resolved.deliveries[0].1)
            .expect("load")
            .expect("exists");
        assert_eq!(
            job.firing.and_then(|f| f.provider_ref),
            Some(format!("ts{}", second.deliveries[0].1))
        );
    }

    #[test]
    fn upgrades_a_version_1_database_keeping_its_outbox() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.db");
        let conn = Connection::open(&path).expect("open");
        conn.execute_batch(MIGRATIONS[0]).expect("v1");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
        conn.execute_batch(
            r#"INSERT INTO alert_events VALUES (1, 'f', 'firing', 1, NULL, 1, 'g', 'r',
                '{"status":"firing","fingerprint":"f","labels":{},"annotations":{},"starts_at":1,"ends_at":null,"generator_url":"","external_url":"","receiver":"r","group_key":"g"}');
               INSERT INTO deliveries (id, event_id, destination, state, created_at, next_attempt_at, updated_at)
                VALUES (1, 1, 'a', 'pending', 1, 1, 1);"#,
        )
        .expect("v1 rows");
        drop(conn);
        let mut db = Sqlite::open(&path).expect("upgrade");
        assert_eq!(
            db.schema_version().expect("version"),
            i64::try_from(MIGRATIONS.len()).expect("len")
        );
        let job = db.load(1).expect("load").expect("kept");
        assert_eq!((job.incident, job.step, job.notice), (None, 0, None));
        assert_eq!(db.ack_key().expect("key").len(), 32);
        assert!(db.open_incidents().expect("incidents").is_empty());
    }

    /// Opens an incident of its own group, routed to `dests`.
    fn open_incident(db: &mut Sqlite, group: &str, dests: &[&str]) -> IngestOutcome {
        let mut e = routed(event(group, Status::Firing, 1), dests);
        e.event.group_key = group.into();
        e.routes = vec![super::super::RouteRef {
            route: "#1".into(),
            policy: "p".into(),
        }];
        ingest_one(db, vec![e])
    }

    fn record(db: &mut Sqlite, id: i64, attempt: Attempt) {
        let r = db.write_batch(vec![Write::Record {
            id,
            attempts: 1,
            attempt,
        }]);
        assert!(r.iter().all(Result::is_ok), "{r:?}");
    }

    /// Storm 1 of `members` with its summary delivered to `to`, as `storm_sql` records them.
    fn storm_with_summary(db: &Sqlite, members: &[i64], to: &str) {
        db.conn
            .execute(
                "INSERT INTO storms (id, policy, key, opened_at, last_join, last_update)
                 VALUES (1, 'p', '[]', 0, 0, 0)",
                [],
            )
            .expect("storm");
        for m in members {
            db.conn
                .execute(
                    "INSERT INTO storm_members (incident_id, policy, key, opened, storm_id)
                     VALUES (?1, 'p', '[]', 0, 1)",
                    [m],
                )
                .expect("member");
        }
        db.conn
            .execute(
                "INSERT INTO deliveries (event_id, destination, state, attempts, created_at,
                    next_attempt_at, updated_at, step, notice, storm_id)
                 SELECT event_id, ?1, 'delivered', 1, 0, 0, 0, 0, 'Storm #1', 1
                 FROM incidents WHERE id = ?2",
                params![to, members[0]],
            )
            .expect("summary");
    }

    #[test]
    fn an_sms_ack_is_bound_to_the_numbers_the_relay_sent_to() {
        use AckTarget::{Incident, Storm};
        let mut db = Sqlite::in_memory().expect("db");
        let sent = |db: &mut Sqlite, to: &str, t| db.sent_to(to, t).expect("query");
        let a = open_incident(&mut db, "g1", &["sms/+1", "sms/+2", "sms/+6"]);
        let one = a.opened[0];
        // Not attempted yet: its record may lag behind the SMS.
        assert!(sent(&mut db, "sms/+1", Incident(one)));
        let delivered = Attempt::Delivered { provider_ref: None };
        record(&mut db, a.deliveries[0].1, delivered);
        assert!(sent(&mut db, "sms/+1", Incident(one)));
        // Given up on: a failed attempt may have reached the phone all the same.
        let dead = Attempt::Dead {
            error: "timeout".into(),
        };
        record(&mut db, a.deliveries[1].1, dead);
        assert!(sent(&mut db, "sms/+2", Incident(one)));
        // Held back by a budget: never sent.
        let held = Attempt::Skipped {
            reason: "budget".into(),
        };
        record(&mut db, a.deliveries[2].1, held);
        assert!(!sent(&mut db, "sms/+6", Incident(one)));
        assert!(!sent(&mut db, "other/+1", Incident(one)));
        assert!(!sent(&mut db, "sms/+1", Incident(999_999)));

        // Storm 1: incident 2 was sent on its own to +3 before it, incident 3's message to +5
        // was collapsed (skipped), the summary went to +4.
        let b = open_incident(&mut db, "g2", &["sms/+3"]);
        let c = open_incident(&mut db, "g3", &["sms/+5"]);
        let (two, three) = (b.opened[0], c.opened[0]);
        record(
            &mut db,
            b.deliveries[0].1,
            Attempt::Delivered { provider_ref: None },
        );
        let collapsed = Attempt::Skipped {
            reason: "collapsed".into(),
        };
        record(&mut db, c.deliveries[0].1, collapsed);
        storm_with_summary(&db, &[two, three], "sms/+4");
        for t in [Storm(1), Incident(two), Incident(three)] {
            assert!(sent(&mut db, "sms/+4", t), "{t:?}");
        }
        assert!(sent(&mut db, "sms/+3", Storm(1)));
        assert!(sent(&mut db, "sms/+3", Incident(two)));
        assert!(!sent(&mut db, "sms/+3", Incident(three)));
        assert!(!sent(&mut db, "sms/+5", Incident(three)));
        assert!(!sent(&mut db, "sms/+5", Storm(1)));
        assert!(!sent(&mut db, "sms/+1", Storm(1)));
        assert!(!sent(&mut db, "sms/+4", Storm(2)));
        assert!(!sent(&mut db, "sms/+4", Incident(one)));
    }

    #[test]
    fn sent_to_is_answered_from_indexes() {
        let db = Sqlite::in_memory().expect("db");
        for sql in [SENT_INCIDENT, SENT_STORM] {
            let plan = plan(&db, &sql.replace("{a}", PAGED), params!["sms/+1", 1]);
            // Every table is searched by an index (`SCAN CONSTANT ROW` is the outer SELECT).
            let scans = plan.iter().filter(|step| step.starts_with("SCAN"));
            assert!(scans.eq(["SCAN CONSTANT ROW"].iter()), "{plan:?}");
        }
    }

    fn plan(db: &Sqlite, sql: &str, params: impl rusqlite::Params) -> Vec<String> {
        db.conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("prepare")
            .query_map(params, |r| r.get(3))
            .expect("plan")
            .collect::<Result<_, _>>()
            .expect("rows")
    }

    #[test]
    fn the_console_pages_are_answered_from_indexes() {
        let db = Sqlite::in_memory().expect("db");
        let page = |q: &super::super::IncidentQuery| {
            let (tail, params) = semantics::incident_page_tail(q, semantics::Dialect::Sqlite);
            let sql = format!(
                "SELECT {INCIDENT_COLUMNS} FROM incidents i JOIN alert_events e ON e.id = i.event_id {tail}"
            );
            let values = params.into_iter().map(|p| match p {
                semantics::Param::Text(s) => rusqlite::types::Value::Text(s),
                semantics::Param::Int(i) => rusqlite::types::Value::Integer(i),
            });
            plan(&db, &sql, rusqlite::params_from_iter(values))
        };
        // The newest first, a page after an id: walked backwards on the key, no sorting, the
        // first event by its key.
        let q = super::super::IncidentQuery {
            before: Some(100),
            limit: 50,
            ..Default::default()
        };
        let steps = page(&q);
        assert!(
            steps.iter().all(|s| !s.contains("TEMP B-TREE")
                && (s.starts_with("SEARCH") || s.contains("SUBQUERY"))),
            "{steps:?}"
        );
        // A timeline: every table searched by an index, never scanned.
        for sql in [
            console_sql::TIMELINE_EVENTS,
            console_sql::TIMELINE_DELIVERIES,
            console_sql::TIMELINE_ACTIONS,
        ] {
            let steps = plan(&db, sql, [1]);
            assert!(
                steps.iter().all(|s| !s.starts_with("SCAN")),
                "{sql}: {steps:?}"
            );
        }
    }

    #[test]
    fn seeds_ten_thousand_incidents_and_a_hundred_thousand_deliveries() {
        let mut db = Sqlite::in_memory().expect("db");
        super::super::seed_for_bench(&mut db, 10_000, 10).expect("seed");
        let count = |table: &str| -> i64 {
            db.conn
                .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
                .expect("count")
        };
        assert_eq!(count("incidents"), 10_000);
        assert_eq!(count("deliveries"), 100_000);
        let q = super::super::IncidentQuery {
            limit: 50,
            ..Default::default()
        };
        let page = db.incident_page(&q).expect("page");
        assert_eq!(page.len(), 50);
        let t = db
            .incident_timeline(page[0].id)
            .expect("timeline")
            .expect("exists");
        assert_eq!(t.deliveries.len(), 10);
        assert!(!db.destination_health().expect("health").is_empty());
        assert!(!db.dead_letters(20).expect("dead letters").is_empty());
    }

    #[test]
    fn inbound_sids_are_kept_for_the_retention_and_at_least_a_day() {
        let clock = WallClock::default();
        let mut db = Sqlite::in_memory().expect("db").with_clock(clock.clone());
        let first = |db: &mut Sqlite, sid: &str| match db
            .write_batch(vec![Write::InboundSid { sid: sid.into() }])
            .pop()
        {
            Some(Ok(Written::FirstTime(new))) => new,
            other => panic!("{other:?}"),
        };
        let prune = |db: &mut Sqlite, retention_ms: i64| {
            let before_ms = clock.now_millis() - retention_ms;
            let r = db.write_batch(vec![Write::Prune { before_ms }]);
            assert!(matches!(r[0], Ok(Written::Pruned(_))), "{r:?}");
        };
        assert!(first(&mut db, "SM1"));
        assert!(!first(&mut db, "SM1"), "a replay");
        assert!(first(&mut db, "SM2"));
        // A retention shorter than a day keeps them a day.
        clock.jump(3_600_000);
        prune(&mut db, 60_000);
        assert!(!first(&mut db, "SM1"));
        clock.jump(24 * 3_600_000);
        prune(&mut db, 30 * 24 * 3_600_000);
        assert!(!first(&mut db, "SM1"), "kept for the retention");
        prune(&mut db, 60_000);
        assert!(
            first(&mut db, "SM1"),
            "pruned after a day and the retention"
        );
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.db");
        drop(Sqlite::open(&path).expect("create"));
        let conn = Connection::open(&path).expect("open");
        conn.pragma_update(None, "user_version", 99).expect("bump");
        drop(conn);
        assert!(matches!(
            Sqlite::open(&path),
            Err(StoreError::NewerSchema { found: 99, .. })
        ));
    }
}

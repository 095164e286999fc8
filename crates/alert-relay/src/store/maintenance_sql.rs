//! SQLite's maintenance windows: the table, the writes of [`MaintenanceWrite`] and the list.
//! Ingest (in `sqlite.rs`) holds incidents and counts what a window suppressed.

use rusqlite::{Connection, params};

use super::StoreError;
use super::semantics;
use crate::model::maintenance::{MaintenanceWrite, MaintenanceWritten, NewWindow, Window};

/// Migration 9: the windows, and on an incident the window holding it (it has not paged).
pub(super) const MIGRATION: &str = "CREATE TABLE maintenance_windows (
        id          INTEGER PRIMARY KEY,
        matchers    TEXT    NOT NULL,   -- {a=\"b\", c=~\"d\"}
        starts_at   INTEGER NOT NULL,   -- unix ms
        ends_at     INTEGER NOT NULL,   -- unix ms: the first occurrence's end
        weekly      INTEGER NOT NULL DEFAULT 0 CHECK (weekly IN (0, 1)),
        reason      TEXT    NOT NULL,
        author      TEXT    NOT NULL,
        created_at  INTEGER NOT NULL,
        ended_at    INTEGER,            -- ended early by hand
        ended_by    TEXT,
        suppressed  INTEGER NOT NULL DEFAULT 0
     );
     ALTER TABLE incidents ADD COLUMN maintenance INTEGER;
     CREATE INDEX incidents_maintenance ON incidents (maintenance) WHERE maintenance IS NOT NULL;";

/// The windows `Backend::maintenance_windows` lists (?1: the oldest end kept): weekly ones
/// not ended, and every window whose end (by hand or by time) is recent or to come.
const LISTED: &str = "SELECT id, matchers, starts_at, ends_at, weekly, reason, author, created_at,
        ended_at, ended_by, suppressed FROM maintenance_windows
     WHERE (weekly = 1 AND ended_at IS NULL)
        OR (CASE WHEN ended_at IS NOT NULL AND (weekly = 1 OR ended_at < ends_at)
                 THEN ended_at ELSE ends_at END) >= ?1
     ORDER BY id";

pub(super) fn windows(conn: &Connection, now: i64) -> Result<Vec<Window>, StoreError> {
    let mut stmt = conn.prepare_cached(LISTED)?;
    let rows = stmt.query_map([now.saturating_sub(semantics::WINDOWS_KEPT_MS)], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            Window {
                id: r.get(0)?,
                matchers: Vec::new(),
                matchers_text: String::new(),
                starts_ms: r.get(2)?,
                ends_ms: r.get(3)?,
                weekly: r.get::<_, i64>(4)? == 1,
                reason: r.get(5)?,
                author: r.get(6)?,
                created_ms: r.get(7)?,
                ended_ms: r.get(8)?,
                ended_by: r.get(9)?,
                suppressed: r.get(10)?,
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, text, mut w) = row?;
        w.matchers = semantics::stored_matchers(id, &text)?;
        w.matchers_text = text;
        out.push(w);
    }
    Ok(out)
}

pub(super) fn apply(
    tx: &Connection,
    w: MaintenanceWrite,
    now: i64,
) -> Result<MaintenanceWritten, StoreError> {
    match w {
        MaintenanceWrite::Create(new) => create(tx, &new, now).map(MaintenanceWritten::Created),
        MaintenanceWrite::End { id, by, at } => end(tx, id, &by, at),
        MaintenanceWrite::Hold { incident, window } => {
            let n = tx.execute(
                "UPDATE incidents SET maintenance = ?2
                 WHERE id = ?1 AND maintenance IS NULL AND state != 'resolved'",
                params![incident, window],
            )?;
            Ok(MaintenanceWritten::Changed(if n == 1 {
                vec![incident]
            } else {
                Vec::new()
            }))
        }
        MaintenanceWrite::Release { window } => {
            release(tx, window, now).map(MaintenanceWritten::Changed)
        }
    }
}

fn create(tx: &Connection, w: &NewWindow, now: i64) -> Result<i64, StoreError> {
    tx.execute(
        "INSERT INTO maintenance_windows
            (matchers, starts_at, ends_at, weekly, reason, author, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            w.matchers_text,
            w.starts_ms,
            w.ends_ms,
            i64::from(w.weekly),
            w.reason,
            w.author,
            now
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Ends a window not yet over at `at` and releases what it held.
fn end(tx: &Connection, id: i64, by: &str, at: i64) -> Result<MaintenanceWritten, StoreError> {
    let n = tx.execute(
        "UPDATE maintenance_windows SET ended_at = ?2, ended_by = ?3
         WHERE id = ?1 AND ended_at IS NULL AND (weekly = 1 OR ends_at > ?2)",
        params![id, at, by],
    )?;
    let released = release(tx, id, at)?;
    Ok(MaintenanceWritten::Ended {
        found: n == 1,
        released,
    })
}

/// The incidents `window` holds that are not resolved escalate again (their next step, the
/// first for those it held from the start, is due); resolved ones keep the mark.
fn release(tx: &Connection, window: i64, now: i64) -> Result<Vec<i64>, StoreError> {
    let mut stmt = tx.prepare_cached(
        "UPDATE incidents SET maintenance = NULL, updated_at = ?2
         WHERE maintenance = ?1 AND state != 'resolved' RETURNING id",
    )?;
    let ids = stmt
        .query_map(params![window, now], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?;
    Ok(ids)
}

//! PostgreSQL's maintenance windows: SQLite's (`store/maintenance_sql.rs`) in PostgreSQL's
//! dialect. Ingest (in `write.rs`) holds incidents and counts what a window suppressed.

use postgres::GenericClient;

use super::super::StoreError;
use super::super::semantics;
use super::tx::Tx;
use crate::model::maintenance::{MaintenanceWrite, MaintenanceWritten, NewWindow, Window};

/// Migration 4: the windows, and on an incident the window holding it (it has not paged).
pub(super) const MIGRATION: &str = "CREATE TABLE maintenance_windows (
        id          BIGSERIAL PRIMARY KEY,
        matchers    TEXT   NOT NULL,
        starts_at   BIGINT NOT NULL,
        ends_at     BIGINT NOT NULL,
        weekly      BIGINT NOT NULL DEFAULT 0 CHECK (weekly IN (0, 1)),
        reason      TEXT   NOT NULL,
        author      TEXT   NOT NULL,
        created_at  BIGINT NOT NULL,
        ended_at    BIGINT,
        ended_by    TEXT,
        suppressed  BIGINT NOT NULL DEFAULT 0
     );
     ALTER TABLE incidents ADD COLUMN maintenance BIGINT;
     CREATE INDEX incidents_maintenance ON incidents (maintenance) WHERE maintenance IS NOT NULL;";

/// See `LISTED` in `store/maintenance_sql.rs`.
const LISTED: &str = "SELECT id, matchers, starts_at, ends_at, weekly, reason, author, created_at,
        ended_at, ended_by, suppressed FROM maintenance_windows
     WHERE (weekly = 1 AND ended_at IS NULL)
        OR (CASE WHEN ended_at IS NOT NULL AND (weekly = 1 OR ended_at < ends_at)
                 THEN ended_at ELSE ends_at END) >= $1
     ORDER BY id";

pub(super) fn windows(c: &mut impl GenericClient, now: i64) -> Result<Vec<Window>, StoreError> {
    let kept = now.saturating_sub(semantics::WINDOWS_KEPT_MS);
    let mut out = Vec::new();
    for r in c.query(LISTED, &[&kept])? {
        let id: i64 = r.try_get(0)?;
        let text: String = r.try_get(1)?;
        out.push(Window {
            id,
            matchers: semantics::stored_matchers(id, &text)?,
            matchers_text: text,
            starts_ms: r.try_get(2)?,
            ends_ms: r.try_get(3)?,
            weekly: r.try_get::<_, i64>(4)? == 1,
            reason: r.try_get(5)?,
            author: r.try_get(6)?,
            created_ms: r.try_get(7)?,
            ended_ms: r.try_get(8)?,
            ended_by: r.try_get(9)?,
            suppressed: r.try_get(10)?,
        });
    }
    Ok(out)
}

pub(super) fn apply(
    tx: &mut Tx<'_, '_>,
    w: MaintenanceWrite,
    now: i64,
) -> Result<MaintenanceWritten, StoreError> {
    match w {
        MaintenanceWrite::Create(new) => create(tx, &new, now).map(MaintenanceWritten::Created),
        MaintenanceWrite::End { id, by, at } => {
            let n = tx.execute(
                "UPDATE maintenance_windows SET ended_at = $2, ended_by = $3
                 WHERE id = $1 AND ended_at IS NULL AND (weekly = 1 OR ends_at > $2)",
                &[&id, &at, &by],
            )?;
            let released = release(tx, id, at)?;
            Ok(MaintenanceWritten::Ended {
                found: n == 1,
                released,
            })
        }
        MaintenanceWrite::Hold { incident, window } => {
            let n = tx.execute(
                "UPDATE incidents SET maintenance = $2
                 WHERE id = $1 AND maintenance IS NULL AND state != 'resolved'",
                &[&incident, &window],
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

fn create(tx: &mut Tx<'_, '_>, w: &NewWindow, now: i64) -> Result<i64, StoreError> {
    let row = tx.query_one(
        "INSERT INTO maintenance_windows
            (matchers, starts_at, ends_at, weekly, reason, author, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        &[
            &w.matchers_text,
            &w.starts_ms,
            &w.ends_ms,
            &i64::from(w.weekly),
            &w.reason,
            &w.author,
            &now,
        ],
    )?;
    Ok(row.try_get(0)?)
}

/// See `release` in `store/maintenance_sql.rs`.
fn release(tx: &mut Tx<'_, '_>, window: i64, now: i64) -> Result<Vec<i64>, StoreError> {
    tx.query(
        "UPDATE incidents SET maintenance = NULL, updated_at = $2
         WHERE maintenance = $1 AND state != 'resolved' RETURNING id",
        &[&window, &now],
    )?
    .iter()
    .map(|r| r.try_get(0).map_err(StoreError::from))
    .collect()
}

/// Ingest's part: a firing event in maintenance adds to its window's count.
pub(super) fn count_suppressed(tx: &mut Tx<'_, '_>, window: i64) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE maintenance_windows SET suppressed = suppressed + 1 WHERE id = $1",
        &[&window],
    )?;
    Ok(())
}

/// Ingest's part: whether an open incident of `group_key` is held (its resolved events send
/// no RESOLVED message).
pub(super) fn group_held(tx: &mut Tx<'_, '_>, group_key: &str) -> Result<bool, StoreError> {
    let row = tx.query_one(
        "SELECT EXISTS (SELECT 1 FROM incidents WHERE group_key = $1
         AND state != 'resolved' AND maintenance IS NOT NULL)",
        &[&group_key],
    )?;
    Ok(row.try_get(0)?)
}

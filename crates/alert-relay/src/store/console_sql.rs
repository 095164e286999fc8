//! The on-call console's SQL for SQLite (issue 16): the incident list with its filters, an
//! incident's timeline, delivery health, dead letters, sessions, and the record of what was
//! done to each incident (`incident_actions`, written by the incident writes in `sqlite.rs`).

use rusqlite::{Connection, OptionalExtension as _, params};

use super::semantics::{self, Dialect, Param};
use super::{
    ActionRecord, ConsoleSession, ConsoleWrite, ConsoleWritten, DeadLetter, DeliveryState,
    DestinationHealth, Incident, IncidentQuery, StoreError, Timeline, TimelineDelivery,
    TimelineEvent,
};
use crate::payload::AlertEvent;

/// The console's tables and the indexes its pages need with many incidents and deliveries.
pub(super) const MIGRATION: &str = "CREATE TABLE incident_actions (
        id          INTEGER PRIMARY KEY,
        incident_id INTEGER NOT NULL,
        at_ms       INTEGER NOT NULL,   -- unix ms
        action      TEXT    NOT NULL,   -- acknowledged, un-acknowledged, resolved, escalated, reopened
        by          TEXT    NOT NULL
     );
     CREATE INDEX incident_actions_incident ON incident_actions (incident_id, id);
     CREATE TABLE console_sessions (
        token_hash TEXT    PRIMARY KEY,  -- of the cookie's token, never the token
        user_name  TEXT    NOT NULL,
        csrf       TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
     CREATE INDEX incidents_group ON incidents (group_key, route, id);
     CREATE INDEX deliveries_firing ON deliveries (firing_delivery) WHERE firing_delivery IS NOT NULL;
     CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead';
     CREATE INDEX deliveries_destination ON deliveries (destination, state, updated_at);";

/// An incident's events: its group's from its opening event on, up to the next incident of
/// the same group and route (which has its own timeline).
pub(super) const TIMELINE_EVENTS: &str = "SELECT e.id, e.received_at, e.alert
     FROM incidents i JOIN alert_events e ON e.group_key = i.group_key AND e.id >= i.event_id
     WHERE i.id = ?1 AND e.id < COALESCE((SELECT MIN(n.event_id) FROM incidents n
         WHERE n.group_key = i.group_key AND n.route = i.route AND n.id > i.id), 9223372036854775807)
     ORDER BY e.id";

/// An incident's deliveries: its steps and notices, the RESOLVED messages that follow them,
/// and the summaries of its storm.
pub(super) const TIMELINE_DELIVERIES: &str = "SELECT d.id, d.destination, d.step, d.state,
        d.attempts, d.created_at, d.updated_at, d.next_attempt_at, d.last_error, d.provider_ref,
        d.notice, d.on_call, d.firing_delivery IS NOT NULL OR e.status = 'resolved', d.storm_id
     FROM deliveries d JOIN alert_events e ON e.id = d.event_id
     WHERE d.incident_id = ?1
        OR d.firing_delivery IN (SELECT f.id FROM deliveries f WHERE f.incident_id = ?1)
        OR d.storm_id = (SELECT m.storm_id FROM storm_members m WHERE m.incident_id = ?1)
     ORDER BY d.id";

pub(super) const TIMELINE_ACTIONS: &str =
    "SELECT at_ms, action, by FROM incident_actions WHERE incident_id = ?1 ORDER BY id";

/// Records what was done to an incident.
pub(super) fn record_action(
    tx: &Connection,
    incident: i64,
    action: &str,
    by: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO incident_actions (incident_id, at_ms, action, by) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![incident, now, action, by])?;
    Ok(())
}

pub(super) fn apply(
    tx: &Connection,
    w: ConsoleWrite,
    now: i64,
) -> Result<ConsoleWritten, StoreError> {
    match w {
        ConsoleWrite::OpenSession {
            token_hash,
            session,
        } => {
            tx.execute(
                "INSERT INTO console_sessions (token_hash, user_name, csrf, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (token_hash) DO UPDATE SET user_name = excluded.user_name,
                    csrf = excluded.csrf, created_at = excluded.created_at,
                    expires_at = excluded.expires_at",
                params![
                    token_hash,
                    session.user,
                    session.csrf,
                    session.created_ms,
                    session.expires_ms
                ],
            )?;
            Ok(ConsoleWritten::Done)
        }
        ConsoleWrite::CloseSession { token_hash } => {
            tx.execute(
                "DELETE FROM console_sessions WHERE token_hash = ?1",
                [token_hash],
            )?;
            Ok(ConsoleWritten::Done)
        }
        ConsoleWrite::RetryDead { id } => {
            let retried: Option<String> = tx
                .query_row(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, last_error = NULL,
                        created_at = ?2, next_attempt_at = ?2, updated_at = ?2
                     WHERE id = ?1 AND state = 'dead' RETURNING destination",
                    params![id, now],
                    |r| r.get(0),
                )
                .optional()?;
            Ok(ConsoleWritten::Retried(retried.map(|d| (d, id, now))))
        }
    }
}

/// Sessions expired at `now`, and the actions of incidents no longer stored.
pub(super) fn prune(tx: &Connection, now: i64) -> Result<usize, StoreError> {
    let sessions = tx.execute("DELETE FROM console_sessions WHERE expires_at <= ?1", [now])?;
    let actions = tx.execute(
        "DELETE FROM incident_actions WHERE NOT EXISTS (
            SELECT 1 FROM incidents i WHERE i.id = incident_actions.incident_id)",
        [],
    )?;
    Ok(sessions + actions)
}

pub(super) fn incident_page(
    conn: &Connection,
    q: &IncidentQuery,
) -> Result<Vec<Incident>, StoreError> {
    let (tail, params) = semantics::incident_page_tail(q, Dialect::Sqlite);
    let values = params.into_iter().map(|p| match p {
        Param::Text(s) => rusqlite::types::Value::Text(s),
        Param::Int(i) => rusqlite::types::Value::Integer(i),
    });
    super::sqlite::query_incidents(conn, &tail, rusqlite::params_from_iter(values))
}

pub(super) fn timeline(conn: &Connection, id: i64) -> Result<Option<Timeline>, StoreError> {
    let Some(incident) = super::sqlite::query_incidents(conn, "WHERE i.id = ?1", [id])?.pop()
    else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(TIMELINE_EVENTS)?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut events = Vec::new();
    for row in rows {
        let (event_id, received_ms, alert) = row?;
        let event: AlertEvent = serde_json::from_str(&alert)
            .map_err(|e| StoreError::Corrupt(format!("alert event {event_id}: {e}")))?;
        events.push(TimelineEvent {
            id: event_id,
            received_ms,
            event,
        });
    }
    let mut stmt = conn.prepare_cached(TIMELINE_DELIVERIES)?;
    let deliveries = stmt
        .query_map([id], timeline_delivery)?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = conn.prepare_cached(TIMELINE_ACTIONS)?;
    let actions = stmt
        .query_map([id], |r| {
            Ok(ActionRecord {
                at_ms: r.get(0)?,
                action: r.get(1)?,
                by: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Timeline {
        incident,
        events,
        deliveries,
        actions,
    }))
}

fn timeline_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<TimelineDelivery> {
    let state: String = r.get(3)?;
    Ok(TimelineDelivery {
        id: r.get(0)?,
        destination: r.get(1)?,
        step: r.get(2)?,
        state: DeliveryState::parse(&state).unwrap_or(DeliveryState::Pending),
        attempts: r.get(4)?,
        created_ms: r.get(5)?,
        updated_ms: r.get(6)?,
        next_attempt_ms: r.get(7)?,
        last_error: r.get(8)?,
        provider_ref: r.get(9)?,
        notice: r.get(10)?,
        on_call: r.get(11)?,
        resolved: r.get(12)?,
        storm: r.get(13)?,
    })
}

/// Every destination's queue and last outcomes ([`semantics::DESTINATION_HEALTH`]).
pub(super) fn destination_health(conn: &Connection) -> Result<Vec<DestinationHealth>, StoreError> {
    let mut stmt = conn.prepare_cached(semantics::DESTINATION_HEALTH)?;
    let rows = stmt.query_map([], |r| {
        Ok(DestinationHealth {
            destination: r.get(0)?,
            pending: r.get(1)?,
            oldest_pending_ms: r.get(2)?,
            last_success_ms: r.get(3)?,
            last_failure_ms: r.get(4)?,
            last_error: r.get(5)?,
            dead: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn dead_letters(conn: &Connection, limit: i64) -> Result<Vec<DeadLetter>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, destination, incident_id, created_at, updated_at, attempts, last_error
         FROM deliveries WHERE state = 'dead' ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit.max(0)], |r| {
        Ok(DeadLetter {
            id: r.get(0)?,
            destination: r.get(1)?,
            incident: r.get(2)?,
            created_ms: r.get(3)?,
            updated_ms: r.get(4)?,
            attempts: r.get(5)?,
            last_error: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn console_session(
    conn: &Connection,
    token_hash: &str,
    now: i64,
) -> Result<Option<ConsoleSession>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT user_name, csrf, created_at, expires_at FROM console_sessions
             WHERE token_hash = ?1 AND expires_at > ?2",
        )?
        .query_row(params![token_hash, now], |r| {
            Ok(ConsoleSession {
                user: r.get(0)?,
                csrf: r.get(1)?,
                created_ms: r.get(2)?,
                expires_ms: r.get(3)?,
            })
        })
        .optional()?)
}

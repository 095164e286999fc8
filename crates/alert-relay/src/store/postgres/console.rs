//! The on-call console's SQL for PostgreSQL: `store/console_sql.rs` in PostgreSQL's dialect
//! (the alert JSON is read with `::jsonb`).

use postgres::GenericClient;
use postgres::types::ToSql;

use super::super::semantics::{self, Dialect, Param};
use super::super::{
    ActionRecord, ConsoleSession, ConsoleWrite, ConsoleWritten, DeadLetter, DeliveryState,
    DestinationHealth, Incident, IncidentQuery, StoreError, Timeline, TimelineDelivery,
    TimelineEvent,
};
use super::tx::Tx;
use crate::payload::AlertEvent;

/// The console's tables and indexes (see `store/console_sql.rs`; a timeline's events are found
/// by `alert_events_group_key`, as in SQLite).
pub(super) const MIGRATION: &str = "CREATE TABLE incident_actions (
        id          BIGSERIAL PRIMARY KEY,
        incident_id BIGINT NOT NULL,
        at_ms       BIGINT NOT NULL,
        action      TEXT   NOT NULL,
        by          TEXT   NOT NULL
     );
     CREATE INDEX incident_actions_incident ON incident_actions (incident_id, id);
     CREATE TABLE console_sessions (
        token_hash TEXT   PRIMARY KEY,
        user_name  TEXT   NOT NULL,
        csrf       TEXT   NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL
     );
     CREATE INDEX console_sessions_expires ON console_sessions (expires_at);
     CREATE INDEX incidents_group ON incidents (group_key, route, id);
     CREATE INDEX deliveries_firing ON deliveries (firing_delivery) WHERE firing_delivery IS NOT NULL;
     CREATE INDEX deliveries_dead ON deliveries (id) WHERE state = 'dead';
     CREATE INDEX deliveries_destination ON deliveries (destination, state, updated_at);";

const TIMELINE_EVENTS: &str = "SELECT e.id, e.received_at, e.alert
     FROM incidents i JOIN alert_events e ON e.group_key = i.group_key AND e.id >= i.event_id
     WHERE i.id = $1 AND e.id < COALESCE((SELECT MIN(n.event_id) FROM incidents n
         WHERE n.group_key = i.group_key AND n.route = i.route AND n.id > i.id), 9223372036854775807)
     ORDER BY e.id";

/// An incident's deliveries (see `store/console_sql.rs`): one index search per kind, united,
/// since PostgreSQL answers the `OR` of SQLite's query with a scan of every delivery.
const TIMELINE_DELIVERIES: &str = "SELECT d.id, d.destination, d.step, d.state,
        d.attempts, d.created_at, d.updated_at, d.next_attempt_at, d.last_error, d.provider_ref,
        d.notice, d.on_call,
        d.firing_delivery IS NOT NULL
            OR (SELECT e.status FROM alert_events e WHERE e.id = d.event_id) = 'resolved',
        d.storm_id
     FROM (SELECT * FROM deliveries WHERE incident_id = $1
           UNION SELECT r.* FROM deliveries r JOIN deliveries f ON f.id = r.firing_delivery
                 WHERE f.incident_id = $1
           UNION SELECT * FROM deliveries
                 WHERE storm_id = (SELECT m.storm_id FROM storm_members m WHERE m.incident_id = $1)
          ) d
     ORDER BY d.id";

/// Records what was done to an incident.
pub(super) fn record_action(
    tx: &mut Tx<'_, '_>,
    incident: i64,
    action: &str,
    by: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO incident_actions (incident_id, at_ms, action, by) VALUES ($1, $2, $3, $4)",
        &[&incident, &now, &action, &by],
    )?;
    Ok(())
}

pub(super) fn apply(
    tx: &mut Tx<'_, '_>,
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
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (token_hash) DO UPDATE SET user_name = excluded.user_name,
                    csrf = excluded.csrf, created_at = excluded.created_at,
                    expires_at = excluded.expires_at",
                &[
                    &token_hash,
                    &session.user,
                    &session.csrf,
                    &session.created_ms,
                    &session.expires_ms,
                ],
            )?;
            Ok(ConsoleWritten::Done)
        }
        ConsoleWrite::CloseSession { token_hash } => {
            tx.execute(
                "DELETE FROM console_sessions WHERE token_hash = $1",
                &[&token_hash],
            )?;
            Ok(ConsoleWritten::Done)
        }
        ConsoleWrite::RetryDead { id } => {
            let row = tx.query_opt(
                "UPDATE deliveries SET state = 'pending', attempts = 0, last_error = NULL,
                    created_at = $2, next_attempt_at = $2, updated_at = $2
                 WHERE id = $1 AND state = 'dead' RETURNING destination",
                &[&id, &now],
            )?;
            let retried = row.map(|r| r.try_get::<_, String>(0)).transpose()?;
            Ok(ConsoleWritten::Retried(retried.map(|d| (d, id, now))))
        }
    }
}

/// Sessions expired at `now`, and the actions of incidents no longer stored.
pub(super) fn prune(tx: &mut Tx<'_, '_>, now: i64) -> Result<u64, StoreError> {
    let sessions = tx.execute(
        "DELETE FROM console_sessions WHERE expires_at <= $1",
        &[&now],
    )?;
    let actions = tx.execute(
        "DELETE FROM incident_actions WHERE NOT EXISTS (
            SELECT 1 FROM incidents i WHERE i.id = incident_actions.incident_id)",
        &[],
    )?;
    Ok(sessions + actions)
}

pub(super) fn incident_page(
    c: &mut impl GenericClient,
    q: &IncidentQuery,
) -> Result<Vec<Incident>, StoreError> {
    let (tail, params) = semantics::incident_page_tail(q, Dialect::Postgres);
    let values: Vec<Box<dyn ToSql + Sync>> = params
        .into_iter()
        .map(|p| -> Box<dyn ToSql + Sync> {
            match p {
                Param::Text(s) => Box::new(s),
                Param::Int(i) => Box::new(i),
            }
        })
        .collect();
    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v.as_ref()).collect();
    super::read::query_incidents(c, &tail, &refs)
}

pub(super) fn timeline(
    c: &mut impl GenericClient,
    id: i64,
) -> Result<Option<Timeline>, StoreError> {
    let Some(incident) = super::read::query_incidents(c, "WHERE i.id = $1", &[&id])?.pop() else {
        return Ok(None);
    };
    let mut events = Vec::new();
    for r in c.query(TIMELINE_EVENTS, &[&id])? {
        let event_id: i64 = r.try_get(0)?;
        let alert: &str = r.try_get(2)?;
        let event: AlertEvent = serde_json::from_str(alert)
            .map_err(|e| StoreError::Corrupt(format!("alert event {event_id}: {e}")))?;
        events.push(TimelineEvent {
            id: event_id,
            received_ms: r.try_get(1)?,
            event,
        });
    }
    let deliveries = c
        .query(TIMELINE_DELIVERIES, &[&id])?
        .iter()
        .map(timeline_delivery)
        .collect::<Result<Vec<_>, _>>()?;
    let actions = c
        .query(
            "SELECT at_ms, action, by FROM incident_actions WHERE incident_id = $1 ORDER BY id",
            &[&id],
        )?
        .iter()
        .map(|r| {
            Ok(ActionRecord {
                at_ms: r.try_get(0)?,
                action: r.try_get(1)?,
                by: r.try_get(2)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(Some(Timeline {
        incident,
        events,
        deliveries,
        actions,
    }))
}

fn timeline_delivery(r: &postgres::Row) -> Result<TimelineDelivery, StoreError> {
    let state: &str = r.try_get(3)?;
    Ok(TimelineDelivery {
        id: r.try_get(0)?,
        destination: r.try_get(1)?,
        step: r.try_get(2)?,
        state: DeliveryState::parse(state).unwrap_or(DeliveryState::Pending),
        attempts: r.try_get(4)?,
        created_ms: r.try_get(5)?,
        updated_ms: r.try_get(6)?,
        next_attempt_ms: r.try_get(7)?,
        last_error: r.try_get(8)?,
        provider_ref: r.try_get(9)?,
        notice: r.try_get(10)?,
        on_call: r.try_get(11)?,
        resolved: r.try_get(12)?,
        storm: r.try_get(13)?,
    })
}

/// Every destination's queue and last outcomes ([`semantics::DESTINATION_HEALTH`]).
pub(super) fn destination_health(
    c: &mut impl GenericClient,
) -> Result<Vec<DestinationHealth>, StoreError> {
    c.query(semantics::DESTINATION_HEALTH, &[])?
        .iter()
        .map(|r| {
            Ok(DestinationHealth {
                destination: r.try_get(0)?,
                pending: r.try_get(1)?,
                oldest_pending_ms: r.try_get(2)?,
                last_success_ms: r.try_get(3)?,
                last_failure_ms: r.try_get(4)?,
                last_error: r.try_get(5)?,
                dead: r.try_get(6)?,
            })
        })
        .collect()
}

pub(super) fn dead_letters(
    c: &mut impl GenericClient,
    limit: i64,
) -> Result<Vec<DeadLetter>, StoreError> {
    c.query(
        "SELECT id, destination, incident_id, created_at, updated_at, attempts, last_error
         FROM deliveries WHERE state = 'dead' ORDER BY id DESC LIMIT $1",
        &[&limit.max(0)],
    )?
    .iter()
    .map(|r| {
        Ok(DeadLetter {
            id: r.try_get(0)?,
            destination: r.try_get(1)?,
            incident: r.try_get(2)?,
            created_ms: r.try_get(3)?,
            updated_ms: r.try_get(4)?,
            attempts: r.try_get(5)?,
            last_error: r.try_get(6)?,
        })
    })
    .collect()
}

pub(super) fn console_session(
    c: &mut impl GenericClient,
    token_hash: &str,
    now: i64,
) -> Result<Option<ConsoleSession>, StoreError> {
    let row = c.query_opt(
        "SELECT user_name, csrf, created_at, expires_at FROM console_sessions
         WHERE token_hash = $1 AND expires_at > $2",
        &[&token_hash, &now],
    )?;
    row.map(|r| {
        Ok(ConsoleSession {
            user: r.try_get(0)?,
            csrf: r.try_get(1)?,
            created_ms: r.try_get(2)?,
            expires_ms: r.try_get(3)?,
        })
    })
    .transpose()
}

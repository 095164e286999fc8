//! The reads of [`super::Postgres`]: SQLite's queries (`store/sqlite.rs`) in PostgreSQL's
//! dialect.

use postgres::GenericClient;
use postgres::types::ToSql;

use super::super::{
    AckTarget, DeliveryJob, DeliveryState, FiringRef, Incident, IncidentDelivery, IncidentState,
    PendingRef, StoreError, WatchedReceipt,
};
use crate::payload::AlertEvent;

pub(super) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A delivery to destination $1 that the relay sent, is sending or gave up on, but not one it
/// skipped (see `PAGED` in `store/sqlite.rs`).
const PAGED: &str = "destination = $1 AND state != 'skipped'";

/// `sent_to` for an incident ($2): a delivery of it, or of a summary of its storm.
const SENT_INCIDENT: &str =
    "SELECT EXISTS (SELECT 1 FROM deliveries WHERE incident_id = $2 AND {a})
    OR EXISTS (SELECT 1 FROM deliveries WHERE {a}
               AND storm_id = (SELECT storm_id FROM storm_members WHERE incident_id = $2))";

/// `sent_to` for a storm ($2): a summary of it, or a delivery of one of its incidents.
const SENT_STORM: &str = "SELECT EXISTS (SELECT 1 FROM deliveries WHERE storm_id = $2 AND {a})
    OR EXISTS (SELECT 1 FROM deliveries WHERE {a}
               AND incident_id IN (SELECT incident_id FROM storm_members WHERE storm_id = $2))";

const INCIDENT_COLUMNS: &str =
    "i.id, i.group_key, i.route, i.policy, i.state, i.elapsed_ms, i.acked_ms,
    i.next_step, i.opened_at, i.acked_at, i.acked_by, i.resolved_at, i.resolved_by, e.alert,
    (SELECT m.storm_id FROM storm_members m WHERE m.incident_id = i.id), i.maintenance";

fn incident_row(r: &postgres::Row) -> Result<Incident, StoreError> {
    let state: String = r.try_get(4)?;
    let alert: String = r.try_get(13)?;
    let mut i = Incident {
        id: r.try_get(0)?,
        group_key: r.try_get(1)?,
        route: r.try_get(2)?,
        policy: r.try_get(3)?,
        state: IncidentState::parse(&state).unwrap_or(IncidentState::Open),
        elapsed_ms: r.try_get(5)?,
        acked_ms: r.try_get(6)?,
        next_step: r.try_get(7)?,
        opened_at_ms: r.try_get(8)?,
        acked_at_ms: r.try_get(9)?,
        acked_by: r.try_get(10)?,
        resolved_at_ms: r.try_get(11)?,
        resolved_by: r.try_get(12)?,
        alertname: String::new(),
        summary: String::new(),
        labels: crate::payload::Labels::new(),
        storm: r.try_get(14)?,
        maintenance: r.try_get(15)?,
    };
    super::super::semantics::name_incident(&mut i, &alert);
    Ok(i)
}

pub(super) fn query_incidents(
    c: &mut impl GenericClient,
    tail: &str,
    params: Params<'_>,
) -> Result<Vec<Incident>, StoreError> {
    let sql = format!(
        "SELECT {INCIDENT_COLUMNS} FROM incidents i JOIN alert_events e ON e.id = i.event_id {tail}"
    );
    c.query(&sql, params)?.iter().map(incident_row).collect()
}

pub(super) fn pending(
    c: &mut impl GenericClient,
    destination: &str,
) -> Result<Vec<PendingRef>, StoreError> {
    let rows = c.query(
        "SELECT id, created_at FROM deliveries WHERE destination = $1 AND state = 'pending' ORDER BY id",
        &[&destination],
    )?;
    rows.iter()
        .map(|r| {
            Ok(PendingRef {
                id: r.try_get(0)?,
                created_at_ms: r.try_get(1)?,
            })
        })
        .collect()
}

pub(super) fn pending_destinations(
    c: &mut impl GenericClient,
) -> Result<Vec<(String, i64)>, StoreError> {
    let rows = c.query(
        "SELECT destination, COUNT(*) FROM deliveries WHERE state = 'pending' GROUP BY destination",
        &[],
    )?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

fn delivery_state(id: i64, s: &str) -> Result<DeliveryState, StoreError> {
    DeliveryState::parse(s)
        .ok_or_else(|| StoreError::Corrupt(format!("delivery {id}: state {s:?}")))
}

pub(super) fn load(c: &mut impl GenericClient, id: i64) -> Result<Option<DeliveryJob>, StoreError> {
    let row = c.query_opt(
        "SELECT d.id, d.destination, d.state, d.attempts, d.created_at, d.next_attempt_at, e.alert,
                f.id, f.state, f.provider_ref, d.incident_id, d.step, d.notice, d.storm_id,
                f.incident_id, d.provider_ref
         FROM deliveries d
         JOIN alert_events e ON e.id = d.event_id
         LEFT JOIN deliveries f ON f.id = d.firing_delivery
         WHERE d.id = $1",
        &[&id],
    )?;
    let Some(r) = row else {
        return Ok(None);
    };
    let alert: String = r.try_get(6)?;
    let event: AlertEvent = serde_json::from_str(&alert)
        .map_err(|e| StoreError::Corrupt(format!("delivery {id}: {e}")))?;
    let state = delivery_state(id, r.try_get(2)?)?;
    let fid: Option<i64> = r.try_get(7)?;
    let fstate: Option<&str> = r.try_get(8)?;
    let firing = match (fid, fstate) {
        (Some(fid), Some(s)) => Some(FiringRef {
            state: delivery_state(fid, s)?,
            provider_ref: r.try_get(9)?,
            incident: r.try_get(14)?,
        }),
        _ => None,
    };
    let incident: Option<i64> = r.try_get(10)?;
    let step: i64 = r.try_get(11)?;
    let notice: Option<String> = r.try_get(12)?;
    let alerts = match incident {
        Some(i) if step > 0 && notice.is_none() => super::storm::firing_alerts(c, i)?,
        _ => Vec::new(),
    };
    let attempts: i64 = r.try_get(3)?;
    Ok(Some(DeliveryJob {
        id,
        destination: r.try_get(1)?,
        state,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        created_at_ms: r.try_get(4)?,
        next_attempt_at_ms: r.try_get(5)?,
        event,
        firing,
        incident,
        step,
        notice,
        storm: r.try_get(13)?,
        alerts,
        provider_ref: r.try_get(15)?,
    }))
}

pub(super) fn incident_deliveries(
    c: &mut impl GenericClient,
    id: i64,
) -> Result<Vec<IncidentDelivery>, StoreError> {
    let rows = c.query(
        "SELECT destination, step, state, notice, last_error FROM deliveries
         WHERE incident_id = $1 ORDER BY id",
        &[&id],
    )?;
    rows.iter()
        .map(|r| {
            let state: &str = r.try_get(2)?;
            Ok((
                r.try_get(0)?,
                r.try_get(1)?,
                DeliveryState::parse(state).unwrap_or(DeliveryState::Pending),
                r.try_get(3)?,
                r.try_get(4)?,
            ))
        })
        .collect()
}

pub(super) fn incident_fingerprints(
    c: &mut impl GenericClient,
    id: i64,
) -> Result<Vec<String>, StoreError> {
    let rows = c.query(
        "SELECT DISTINCT e.fingerprint FROM incidents i JOIN alert_events e
           ON e.group_key = i.group_key AND e.id >= i.event_id AND e.status = 'firing'
         WHERE i.id = $1",
        &[&id],
    )?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

pub(super) fn incident_on_call(
    c: &mut impl GenericClient,
    id: i64,
) -> Result<Vec<(String, i64, String)>, StoreError> {
    let rows = c.query(
        "SELECT destination, step, on_call FROM deliveries
         WHERE incident_id = $1 AND on_call IS NOT NULL ORDER BY id",
        &[&id],
    )?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}

pub(super) fn watched_receipts(
    c: &mut impl GenericClient,
) -> Result<Vec<WatchedReceipt>, StoreError> {
    let rows = c.query(
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
        &[],
    )?;
    rows.iter()
        .map(|r| {
            let state: &str = r.try_get(4)?;
            Ok(WatchedReceipt {
                receipt: r.try_get(0)?,
                incident: r.try_get(1)?,
                storm: r.try_get(5)?,
                destination: r.try_get(2)?,
                delivered_at_ms: r.try_get(3)?,
                incident_state: IncidentState::parse(state).unwrap_or(IncidentState::Open),
            })
        })
        .collect()
}

pub(super) fn sent_to(
    c: &mut impl GenericClient,
    destination: &str,
    target: AckTarget,
) -> Result<bool, StoreError> {
    let (sql, id) = match target {
        AckTarget::Incident(id) => (SENT_INCIDENT, id),
        AckTarget::Storm(id) => (SENT_STORM, id),
    };
    let row = c.query_one(&sql.replace("{a}", PAGED), &[&destination, &id])?;
    Ok(row.try_get(0)?)
}

//! The writes of [`super::Postgres`], each inside its own savepoint of the batch's transaction:
//! SQLite's (`store/sqlite.rs`) in PostgreSQL's dialect, safe with other instances writing.

use postgres::Client;

use super::super::semantics;
use super::tx::Tx;

use super::super::{
    Action, Attempt, IncidentState, IngestOutcome, RoutedEvent, StoreError, Transitioned, Write,
    Written,
};
use super::console::record_action;
use crate::model::console::action;
use crate::payload::Status;

/// Inbound SMS ids are kept at least this long whatever `storage.retention` says (as SQLite).
const SIDS_KEPT_MS: i64 = 24 * 3600 * 1000;

/// An event pruning keeps whatever its age (see `EVENT_IN_USE` in `store/sqlite.rs`).
const EVENT_IN_USE: &str = "(EXISTS (SELECT 1 FROM incidents i WHERE i.event_id = {e})
    OR EXISTS (SELECT 1 FROM budgets b WHERE b.event_id = {e})
    OR EXISTS (SELECT 1 FROM alert_events f JOIN incidents i ON i.group_key = f.group_key
               WHERE f.id = {e} AND f.status = 'firing' AND i.state != 'resolved'
               AND NOT EXISTS (SELECT 1 FROM alert_events r WHERE r.fingerprint = f.fingerprint
                               AND r.status = 'resolved' AND r.starts_at = f.starts_at)))";

type Deliveries = Vec<(String, i64, i64)>;

/// Creates the ack-link key once: 32 random bytes from this process, kept only if no other
/// instance stored one first; every instance then reads the same key.
pub(super) fn create_ack_key(client: &mut Client) -> Result<(), StoreError> {
    let mut key = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
        .map_err(|_| StoreError::Corrupt("no randomness for the ack-link key".into()))?;
    client.execute(
        "INSERT INTO meta (key, value) VALUES ('ack_key', $1) ON CONFLICT (key) DO NOTHING",
        &[&&key[..]],
    )?;
    Ok(())
}

fn set_meta_int(tx: &mut Tx<'_, '_>, key: &str, value: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, int_value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET int_value = excluded.int_value",
        &[&key, &value],
    )?;
    Ok(())
}

fn set_meta(tx: &mut Tx<'_, '_>, key: &str, value: &[u8]) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&key, &value],
    )?;
    Ok(())
}

/// A Pushover receipt that needs no more polling.
fn finish_receipt(
    tx: &mut Tx<'_, '_>,
    receipt: &str,
    end: &str,
    now: i64,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO pushover_receipts (receipt, state, updated_at) VALUES ($1, $2, $3)
         ON CONFLICT (receipt) DO NOTHING",
        &[&receipt, &end, &now],
    )?;
    Ok(())
}

/// Escalation clocks of incidents not resolved.
fn checkpoint(tx: &mut Tx<'_, '_>, clocks: &[(i64, i64, i64)]) -> Result<(), StoreError> {
    for (id, elapsed, acked) in clocks {
        tx.execute(
            "UPDATE incidents SET elapsed_ms = $2, acked_ms = $3 WHERE id = $1 AND state != 'resolved'",
            &[id, elapsed, acked],
        )?;
    }
    Ok(())
}

pub(super) fn apply(tx: &mut Tx<'_, '_>, w: Write, now: i64) -> Result<Written, StoreError> {
    match w {
        Write::Ingest(events) => ingest(tx, events, now).map(Written::Ingested),
        Write::Record {
            id,
            attempts,
            attempt,
        } => record(tx, id, attempts, attempt, now).map(|()| Written::Recorded),
        Write::Prune { before_ms } => prune(tx, before_ms, now).map(Written::Pruned),
        Write::Checkpoint(clocks) => checkpoint(tx, &clocks).map(|()| Written::Checkpointed),
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
            let cas = FireCas {
                id,
                expected_step,
                elapsed_ms,
                allow_acked,
                reopen,
                by,
            };
            fire_step(tx, &cas, step, &destinations, &on_call, now).map(Written::Fired)
        }
        Write::Transition {
            id,
            action,
            by,
            elapsed_ms,
        } => transition(tx, id, &action, &by, elapsed_ms, true, now).map(Written::Transitioned),
        Write::AckAll { incidents, by } => {
            let mut out = Vec::with_capacity(incidents.len());
            for (id, elapsed_ms) in incidents {
                let t = transition(tx, id, &Action::Ack, &by, elapsed_ms, false, now)?;
                out.push((id, t));
            }
            Ok(Written::TransitionedAll(out))
        }
        Write::Storm(w) => super::storm::apply(tx, w, now).map(Written::Storm),
        Write::Maintenance(w) => super::maintenance::apply(tx, w, now).map(Written::Maintenance),
        Write::Fenced { epoch, write } => {
            // FOR SHARE: a new leader's bump waits for this write's commit, so a late write of
            // the old leader lands before the new one starts, or is refused.
            let current: i64 = tx
                .query_one("SELECT epoch FROM leader WHERE id = 1 FOR SHARE", &[])?
                .get(0);
            if current != epoch {
                return Err(StoreError::Fenced { epoch, current });
            }
            apply(tx, *write, now)
        }
        Write::InboundSid { sid } => {
            let n = tx.execute(
                "INSERT INTO inbound_sids (sid, received_at) VALUES ($1, $2) ON CONFLICT (sid) DO NOTHING",
                &[&sid, &now],
            )?;
            Ok(Written::FirstTime(n == 1))
        }
        Write::CallOutcome {
            id,
            call_sid,
            outcome,
        } => {
            let n = tx.execute(
                "UPDATE deliveries SET last_error = $3, updated_at = $4
                 WHERE id = $1 AND provider_ref = $2 AND last_error IS NULL",
                &[&id, &call_sid, &outcome, &now],
            )?;
            Ok(Written::FirstTime(n == 1))
        }
        Write::SetMetaInt { key, value } => {
            set_meta_int(tx, &key, value)?;
            Ok(Written::Recorded)
        }
        // Stores nothing: the commit's notification carries it (`notify::payloads`).
        Write::Heartbeat(h) => Ok(Written::Heartbeat(h)),
        // A retried delivery is queued by the leader through the commit's notification.
        Write::Console(w) => super::console::apply(tx, w, now).map(Written::Console),
        Write::SetMeta { key, value, events } => {
            let o = ingest(tx, events, now)?;
            set_meta(tx, &key, &value)?;
            Ok(Written::Ingested(o))
        }
        Write::FinishReceipt { receipt, end } => {
            finish_receipt(tx, &receipt, end.as_str(), now).map(|()| Written::Recorded)
        }
        Write::ResolveStale {
            id,
            by,
            elapsed_ms,
            after_event,
            after_ms,
        } => resolve_stale(tx, id, &by, elapsed_ms, after_event, after_ms, now)
            .map(Written::Transitioned),
    }
}

fn record(
    tx: &mut Tx<'_, '_>,
    id: i64,
    attempts: u32,
    attempt: Attempt,
    now: i64,
) -> Result<(), StoreError> {
    let r = semantics::recorded(attempt, now);
    tx.execute(
        "UPDATE deliveries SET state = $2, attempts = $3, last_error = $4,
            provider_ref = COALESCE($5, provider_ref), next_attempt_at = $6, updated_at = $7
         WHERE id = $1",
        &[
            &id,
            &r.state.as_str(),
            &i64::from(attempts),
            &r.last_error,
            &r.provider_ref,
            &r.next_attempt_at_ms,
            &now,
        ],
    )?;
    Ok(())
}

fn prune(tx: &mut Tx<'_, '_>, before_ms: i64, now: i64) -> Result<usize, StoreError> {
    // Closed storms first: an incident leaves with its storm's member rows.
    let storms = super::storm::prune(tx, before_ms)?;
    // The newest row of each table stays: its id is not handed out again (see sqlite.rs).
    let incidents = tx.execute(
        "DELETE FROM incidents WHERE state = 'resolved' AND resolved_at < $1
         AND id < (SELECT MAX(id) FROM incidents)
         AND NOT EXISTS (SELECT 1 FROM storm_members m WHERE m.incident_id = incidents.id)
         AND NOT EXISTS (SELECT 1 FROM deliveries d
                         WHERE d.incident_id = incidents.id AND d.state = 'pending')",
        &[&before_ms],
    )?;
    let deliveries = tx.execute(
        &format!(
            "DELETE FROM deliveries WHERE id < (SELECT MAX(id) FROM deliveries) AND event_id IN (
            SELECT e.id FROM alert_events e WHERE e.received_at < $1
            AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.event_id = e.id AND p.state = 'pending')
            AND NOT {})",
            EVENT_IN_USE.replace("{e}", "e.id")
        ),
        &[&before_ms],
    )?;
    let events = tx.execute(
        &format!(
            "DELETE FROM alert_events WHERE received_at < $1
             AND id < (SELECT MAX(id) FROM alert_events)
             AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = alert_events.id)
             AND NOT {}",
            EVENT_IN_USE.replace("{e}", "alert_events.id")
        ),
        &[&before_ms],
    )?;
    let receipts = tx.execute(
        "DELETE FROM pushover_receipts WHERE updated_at < $1 AND receipt NOT IN (
            SELECT substr(provider_ref, 9) FROM deliveries
            WHERE substr(provider_ref, 1, 8) = 'receipt:')",
        &[&before_ms],
    )?;
    let sids = tx.execute(
        "DELETE FROM inbound_sids WHERE received_at < LEAST($1::BIGINT, $2::BIGINT)",
        &[&before_ms, &now.saturating_sub(SIDS_KEPT_MS)],
    )?;
    let console = super::console::prune(tx, now)?;
    let n = storms + incidents + deliveries + events + receipts + sids + console;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The compare-and-set of `FireStep`.
struct FireCas {
    id: i64,
    expected_step: i64,
    elapsed_ms: i64,
    allow_acked: bool,
    reopen: bool,
    /// Who asked for it now (escalate-now); `None` for the schedule's own steps.
    by: Option<String>,
}

/// Fires schedule entry `expected_step` once: of two instances (or two calls) only the one
/// whose `UPDATE … WHERE next_step = $expected` changed the row inserts deliveries.
fn fire_step(
    tx: &mut Tx<'_, '_>,
    cas: &FireCas,
    step: i64,
    destinations: &[String],
    on_call: &std::collections::BTreeMap<String, String>,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let states = semantics::state_list(semantics::fire_step_states(cas.allow_acked, cas.reopen));
    let set_state = if cas.reopen {
        ", state = 'open', acked_ms = 0"
    } else {
        ""
    };
    // An escalate-now of an acknowledged incident reopens it: recorded as such. The row is
    // locked so that the state read is the one the update changes.
    let reopens = if cas.reopen {
        let row = tx.query_opt(
            "SELECT state FROM incidents WHERE id = $1 FOR UPDATE",
            &[&cas.id],
        )?;
        let state: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
        state.as_deref() == Some(IncidentState::Acked.as_str())
    } else {
        false
    };
    let fired = tx.query_opt(
        &format!(
            "UPDATE incidents SET next_step = $2::BIGINT + 1, elapsed_ms = $3, updated_at = $4{set_state}
             WHERE id = $1 AND next_step = $2::BIGINT AND state IN {states} RETURNING event_id"
        ),
        &[&cas.id, &cas.expected_step, &cas.elapsed_ms, &now],
    )?;
    let Some(row) = fired else {
        return Ok(Vec::new());
    };
    let event_id: i64 = row.try_get(0)?;
    let insert = "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, incident_id, step, on_call)
         VALUES ($1, $2, 'pending', $3, $3, $3, $4, $5, $6) RETURNING id";
    let mut out = Vec::new();
    for d in destinations {
        let row = tx.query_one(
            insert,
            &[&event_id, d, &now, &cas.id, &step, &on_call.get(d)],
        )?;
        out.push((d.clone(), row.try_get(0)?, now));
    }
    let by = cas.by.as_deref().unwrap_or(action::BY_ESCALATION);
    if reopens {
        record_action(tx, cas.id, action::REOPENED, by, now)?;
    }
    if !out.is_empty() {
        record_action(tx, cas.id, action::ESCALATED, by, now)?;
    }
    Ok(out)
}

fn resolve_stale(
    tx: &mut Tx<'_, '_>,
    id: i64,
    by: &str,
    elapsed_ms: i64,
    after_event: i64,
    after_ms: i64,
    now: i64,
) -> Result<Transitioned, StoreError> {
    // As SQLite: the id test decides, the time test only errs towards leaving it open.
    let newer = tx.query_opt(
        "SELECT i.state FROM incidents i WHERE i.id = $1 AND EXISTS (
            SELECT 1 FROM alert_events e WHERE e.group_key = i.group_key
            AND (e.id > $2 OR e.received_at > $3))",
        &[&id, &after_event, &after_ms],
    )?;
    if let Some(row) = newer {
        let state: &str = row.try_get(0)?;
        let state = IncidentState::parse(state).unwrap_or(IncidentState::Open);
        return Ok(Transitioned::Unchanged(state));
    }
    transition(tx, id, &Action::Resolve, by, elapsed_ms, true, now)
}

/// Acknowledges, unacknowledges or resolves an incident, its row locked against another
/// instance doing the same at once.
fn transition(
    tx: &mut Tx<'_, '_>,
    id: i64,
    action: &Action,
    by: &str,
    elapsed_ms: i64,
    announce: bool,
    now: i64,
) -> Result<Transitioned, StoreError> {
    let row = tx.query_opt(
        "SELECT state FROM incidents WHERE id = $1 FOR UPDATE",
        &[&id],
    )?;
    let state: Option<String> = row.map(|r| r.try_get(0)).transpose()?;
    let Some(from) = state.as_deref().and_then(IncidentState::parse) else {
        return Ok(Transitioned::NotFound);
    };
    let Some(to) = semantics::transition_to(action, from) else {
        return Ok(Transitioned::Unchanged(from));
    };
    match to {
        IncidentState::Acked => tx.execute(
            "UPDATE incidents SET state = 'acked', acked_at = $2, acked_by = $3, acked_ms = 0,
                elapsed_ms = $4, updated_at = $2 WHERE id = $1",
            &[&id, &now, &by, &elapsed_ms],
        )?,
        IncidentState::Open => tx.execute(
            "UPDATE incidents SET state = 'open', acked_ms = 0, elapsed_ms = $3, updated_at = $2 WHERE id = $1",
            &[&id, &now, &elapsed_ms],
        )?,
        IncidentState::Resolved => tx.execute(
            "UPDATE incidents SET state = 'resolved', resolved_at = $2, resolved_by = $3,
                elapsed_ms = $4, updated_at = $2 WHERE id = $1",
            &[&id, &now, &by, &elapsed_ms],
        )?,
    };
    record_action(tx, id, action.verb(), by, now)?;
    let notice = semantics::transition_notice(id, action, by, now, &paged(tx, id)?);
    let deliveries = if announce {
        notify_notified(tx, id, &notice, now)?
    } else {
        Vec::new()
    };
    Ok(Transitioned::Done { from, deliveries })
}

/// Everyone a rotation paged for the incident, in the order they were paged.
fn paged(tx: &mut Tx<'_, '_>, id: i64) -> Result<Vec<String>, StoreError> {
    let rows = tx.query(
        "SELECT on_call FROM deliveries WHERE incident_id = $1 AND on_call IS NOT NULL
         GROUP BY on_call ORDER BY MIN(id)",
        &[&id],
    )?;
    rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
}

/// Sends `notice` once to every destination the incident has already sent to.
fn notify_notified(
    tx: &mut Tx<'_, '_>,
    id: i64,
    notice: &str,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let event_id: i64 = tx
        .query_one("SELECT event_id FROM incidents WHERE id = $1", &[&id])?
        .try_get(0)?;
    let targets: Vec<String> = tx
        .query(
            "SELECT destination FROM deliveries WHERE incident_id = $1 AND notice IS NULL
             AND state IN ('pending', 'delivered') GROUP BY destination ORDER BY MIN(id)",
            &[&id],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for d in targets {
        let row = tx.query_one(
            "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, incident_id, step, notice)
             VALUES ($1, $2, 'pending', $3, $3, $3, $4, -1, $5) RETURNING id",
            &[&event_id, &d, &now, &id, &notice],
        )?;
        out.push((d, row.try_get(0)?, now));
    }
    Ok(out)
}

/// The incident of `group_key` on `route`, opened with `event_id` when none is open: the
/// partial unique index of open incidents decides between instances opening it at once.
/// `(id, opened here)`.
fn open_or_find_incident(
    tx: &mut Tx<'_, '_>,
    group_key: &str,
    route: &crate::model::record::RouteRef,
    (event_id, held): (i64, Option<i64>),
    now: i64,
) -> Result<(i64, bool), StoreError> {
    let existing = tx.query_opt(
        "SELECT id FROM incidents WHERE group_key = $1 AND route = $2 AND state != 'resolved'",
        &[&group_key, &route.route],
    )?;
    if let Some(row) = existing {
        return Ok((row.try_get(0)?, false));
    }
    let opened = tx.query_opt(
        "INSERT INTO incidents (group_key, route, policy, event_id, state, opened_at, updated_at, maintenance, next_step)
         VALUES ($1, $2, $3, $4, 'open', $5, $5, $6, CASE WHEN $6::BIGINT IS NULL THEN 1 ELSE 0 END)
         ON CONFLICT (group_key, route) WHERE state != 'resolved' DO NOTHING RETURNING id",
        &[&group_key, &route.route, &route.policy, &event_id, &now, &held],
    )?;
    if let Some(row) = opened {
        return Ok((row.try_get(0)?, true));
    }
    // Another instance opened it meanwhile (committed: the insert waited for it).
    let row = tx.query_one(
        "SELECT id FROM incidents WHERE group_key = $1 AND route = $2 AND state != 'resolved'",
        &[&group_key, &route.route],
    )?;
    Ok((row.try_get(0)?, false))
}

/// Where a resolved event goes: exactly where its firing event went (with the firing delivery
/// each follows), else where the group's open incident has sent, else where routing says.
fn resolved_targets(
    tx: &mut Tx<'_, '_>,
    routed: &RoutedEvent,
) -> Result<Vec<(String, Option<i64>)>, StoreError> {
    let e = &routed.event;
    let firing = tx.query_opt(
        "SELECT id FROM alert_events WHERE fingerprint = $1 AND status = 'firing' AND starts_at = $2",
        &[&e.fingerprint, &e.starts_at],
    )?;
    if let Some(row) = firing {
        let fid: i64 = row.try_get(0)?;
        // One resolved message per destination, whichever steps sent there; notices get none.
        let rows = tx.query(
            "SELECT MIN(id), destination FROM deliveries WHERE event_id = $1 AND notice IS NULL
             GROUP BY destination ORDER BY MIN(id)",
            &[&fid],
        )?;
        return rows
            .iter()
            .map(|r| Ok((r.try_get(1)?, Some(r.try_get(0)?))))
            .collect();
    }
    let notified: Vec<String> = tx
        .query(
            "SELECT d.destination FROM deliveries d JOIN incidents i ON i.id = d.incident_id
             WHERE i.group_key = $1 AND i.state != 'resolved' AND d.notice IS NULL
             GROUP BY d.destination ORDER BY MIN(d.id)",
            &[&e.group_key],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    let targets = if notified.is_empty() {
        routed.destinations.clone()
    } else {
        notified
    };
    Ok(targets.into_iter().map(|d| (d, None)).collect())
}

/// Stores one event unless it is a duplicate (here or from another instance): its id.
fn insert_event(
    tx: &mut Tx<'_, '_>,
    e: &crate::payload::AlertEvent,
    now: i64,
) -> Result<Option<i64>, StoreError> {
    let json = serde_json::to_string(e).map_err(|err| StoreError::Corrupt(err.to_string()))?;
    let row = tx.query_opt(
        "INSERT INTO alert_events (fingerprint, status, starts_at, ends_at, received_at, group_key, receiver, alert)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (fingerprint, status, starts_at) DO NOTHING RETURNING id",
        &[
            &e.fingerprint,
            &e.status.as_str(),
            &e.starts_at,
            &e.ends_at,
            &now,
            &e.group_key,
            &e.receiver,
            &json,
        ],
    )?;
    Ok(row.map(|r| r.try_get(0)).transpose()?)
}

fn ingest(
    tx: &mut Tx<'_, '_>,
    events: Vec<RoutedEvent>,
    now: i64,
) -> Result<IngestOutcome, StoreError> {
    let mut out = IngestOutcome::default();
    let mut resolve_groups: Vec<String> = Vec::new();
    for routed in events {
        let e = &routed.event;
        let inserted = insert_event(tx, e, now)?;
        if routed.group_resolved && !resolve_groups.contains(&e.group_key) {
            resolve_groups.push(e.group_key.clone());
        }
        let Some(event_id) = inserted else {
            out.duplicates += 1;
            continue;
        };
        out.accepted += 1;
        let mut incident: Option<i64> = None;
        if e.status == Status::Firing && !routed.group_resolved {
            for r in &routed.routes {
                let (id, opened) = open_or_find_incident(
                    tx,
                    &e.group_key,
                    r,
                    (event_id, routed.maintenance),
                    now,
                )?;
                if opened {
                    out.opened.push(id);
                    if routed.maintenance.is_some() {
                        out.held.push(id);
                    }
                } else if !out.joined.contains(&id) && !out.opened.contains(&id) {
                    out.joined.push(id);
                }
                incident.get_or_insert(id);
            }
        }
        let targets = event_targets(tx, &routed, &mut out)?;
        for (dest, firing_delivery) in targets {
            let who = routed
                .on_call
                .get(&dest)
                .filter(|_| e.status == Status::Firing);
            let row = tx.query_one(
                "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, firing_delivery, on_call, incident_id)
                 VALUES ($1, $2, 'pending', $3, $3, $3, $4, $5, $6) RETURNING id",
                &[&event_id, &dest, &now, &firing_delivery, &who, &incident],
            )?;
            out.deliveries.push((dest, row.try_get(0)?, now));
        }
    }
    for group in resolve_groups {
        let rows = tx.query(
            "UPDATE incidents SET state = 'resolved', resolved_at = $2, resolved_by = 'Alertmanager',
                updated_at = $2 WHERE group_key = $1 AND state != 'resolved' RETURNING id",
            &[&group, &now],
        )?;
        for row in rows {
            let id: i64 = row.try_get(0)?;
            record_action(tx, id, action::RESOLVED, action::BY_ALERTMANAGER, now)?;
            out.closed.push(id);
        }
        out.resolved = out.closed.len();
    }
    Ok(out)
}

/// Where a new event's messages go (with the firing delivery each follows): a firing event in
/// maintenance nowhere (counted for its window), a resolved one nowhere while in maintenance
/// or while its group's incident is held.
fn event_targets(
    tx: &mut Tx<'_, '_>,
    routed: &RoutedEvent,
    out: &mut IngestOutcome,
) -> Result<Vec<(String, Option<i64>)>, StoreError> {
    let e = &routed.event;
    Ok(match (e.status, routed.maintenance) {
        (Status::Firing, Some(window)) => {
            super::maintenance::count_suppressed(tx, window)?;
            out.suppressed += 1;
            Vec::new()
        }
        (Status::Firing, None) => routed
            .destinations
            .iter()
            .map(|d| (d.clone(), None))
            .collect(),
        (Status::Resolved, Some(_)) => Vec::new(),
        (Status::Resolved, None) if super::maintenance::group_held(tx, &e.group_key)? => Vec::new(),
        (Status::Resolved, None) => {
            let mut t = resolved_targets(tx, routed)?;
            t.retain(|(d, _)| !routed.no_resolved.contains(d));
            t
        }
    })
}

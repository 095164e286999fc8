//! Storm control and per-destination budgets on PostgreSQL: `store/storm_sql.rs` in
//! PostgreSQL's dialect. Every function runs inside the batch's transaction.

use std::collections::BTreeMap;

use postgres::GenericClient;

use super::tx::Tx;

use super::super::semantics::{self, BudgetRow};
use super::super::{IncidentState, StoreError};
use crate::model::storm::{BudgetAt, Listed, Part, RuleAt, StormView, StormWrite, StormWritten};
use crate::payload::AlertEvent;

type Deliveries = Vec<(String, i64, i64)>;

/// How often the relay clock is stored (as SQLite).
const CLOCK_CHECKPOINT_MS: i64 = 60_000;
/// First key of the transaction-scoped advisory lock on one destination's budget row (the row
/// may not exist yet, so `FOR UPDATE` cannot lock it).
const BUDGET_LOCK: i32 = 0x6275_6467;

/// The alerts of an incident's group that fire now (see `firing_alerts` in `storm_sql.rs`).
pub(super) fn firing_alerts(
    c: &mut impl GenericClient,
    incident: i64,
) -> Result<Vec<AlertEvent>, StoreError> {
    let rows = c.query(
        "SELECT e.alert FROM alert_events e JOIN incidents i ON i.id = $1
         WHERE e.group_key = i.group_key AND e.status = 'firing' AND e.id >= i.event_id
         AND NOT EXISTS (SELECT 1 FROM alert_events r WHERE r.fingerprint = e.fingerprint
                         AND r.starts_at = e.starts_at AND r.status = 'resolved')
         ORDER BY e.id",
        &[&incident],
    )?;
    let mut out = Vec::new();
    for r in rows {
        let json: &str = r.try_get(0)?;
        // Content only: an unreadable row is left out rather than blocking the delivery.
        if let Ok(e) = serde_json::from_str(json) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Storms closed before `before_ms` with their member and coverage rows, and the rows of
/// incidents resolved before it that never joined a storm. The newest storm stays.
pub(super) fn prune(tx: &mut Tx<'_, '_>, before_ms: i64) -> Result<u64, StoreError> {
    let closed = "SELECT id FROM storms WHERE closed_at < $1 AND id < (SELECT MAX(id) FROM storms)";
    let mut n = tx.execute(
        &format!("DELETE FROM storm_covered WHERE storm_id IN ({closed})"),
        &[&before_ms],
    )?;
    n += tx.execute(
        &format!("DELETE FROM storm_members WHERE storm_id IN ({closed})"),
        &[&before_ms],
    )?;
    n += tx.execute(
        "DELETE FROM storm_members WHERE storm_id IS NULL AND incident_id IN
         (SELECT id FROM incidents WHERE state = 'resolved' AND resolved_at < $1)",
        &[&before_ms],
    )?;
    n += tx.execute(
        &format!("DELETE FROM storms WHERE id IN ({closed})"),
        &[&before_ms],
    )?;
    Ok(n)
}

pub(super) fn relay_clock(c: &mut impl GenericClient) -> Result<i64, StoreError> {
    let row = c.query_one(
        "SELECT GREATEST(
            COALESCE((SELECT int_value FROM meta WHERE key = 'relay_clock_ms'), 0),
            COALESCE((SELECT MAX(opened) FROM storm_members), 0),
            COALESCE((SELECT GREATEST(MAX(last_join), MAX(last_update)) FROM storms), 0),
            COALESCE((SELECT MAX(window_start) FROM budgets), 0))::BIGINT",
        &[],
    )?;
    Ok(row.try_get(0)?)
}

pub(super) fn storm_view(
    c: &mut impl GenericClient,
    id: i64,
) -> Result<Option<StormView>, StoreError> {
    let row = c.query_opt(
        "SELECT policy, key, opened_at, closed_at FROM storms WHERE id = $1",
        &[&id],
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let key: String = row.try_get(1)?;
    let incidents = super::read::query_incidents(
        c,
        "WHERE i.id IN (SELECT incident_id FROM storm_members WHERE storm_id = $1) ORDER BY i.id",
        &[&id],
    )?;
    Ok(Some(StormView {
        id,
        policy: row.try_get(0)?,
        key: parse_key(&key),
        opened_at_ms: row.try_get(2)?,
        closed_at_ms: row.try_get(3)?,
        incidents,
    }))
}

fn parse_key(key: &str) -> Vec<(String, String)> {
    serde_json::from_str(key).unwrap_or_default()
}

fn strings(rows: &[postgres::Row]) -> Result<Vec<String>, StoreError> {
    Ok(rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?)
}

pub(super) fn apply(
    tx: &mut Tx<'_, '_>,
    w: StormWrite,
    now: i64,
) -> Result<StormWritten, StoreError> {
    match w {
        StormWrite::Opened {
            opened,
            rules,
            clock,
        } => opened_incidents(tx, &opened, &rules, clock, now),
        StormWrite::FireStep {
            id,
            storm,
            expected_step,
            step,
            elapsed_ms,
            destinations,
            on_call,
            allow_acked,
        } => {
            let step = StepFire {
                id,
                storm,
                expected_step,
                step,
                elapsed_ms,
                allow_acked,
            };
            fire_step(tx, &step, &destinations, &on_call, now).map(StormWritten::Fired)
        }
        StormWrite::Tick {
            clock,
            rules,
            budgets,
        } => tick(tx, clock, &rules, &budgets, now).map(StormWritten::Deliveries),
        StormWrite::Clock(clock) => {
            tx.execute(
                "UPDATE meta SET int_value = GREATEST(int_value, $1) WHERE key = 'relay_clock_ms'",
                &[&clock],
            )?;
            Ok(StormWritten::Deliveries(Vec::new()))
        }
        StormWrite::Announce { storm, text } => {
            let targets = strings(&tx.query(
                "SELECT destination FROM deliveries
                 WHERE (storm_id = $1 OR (notice IS NULL AND incident_id IN
                        (SELECT incident_id FROM storm_members WHERE storm_id = $1)))
                 AND state IN ('pending', 'delivered')
                 GROUP BY destination ORDER BY MIN(id)",
                &[&storm],
            )?)?;
            let event = lead_event(tx, storm)?;
            let summary = Summary {
                storm,
                event_id: event,
                step: -1,
                text: &text,
            };
            insert_storm_deliveries(tx, &summary, &targets, &BTreeMap::new(), now)
                .map(StormWritten::Deliveries)
        }
        StormWrite::BudgetAdmit {
            delivery,
            budget,
            clock,
        } => admit(tx, delivery, &budget, clock, now),
    }
}

/// A storm's `FireStep`: the compare-and-set on the incident, then one summary.
struct StepFire {
    id: i64,
    storm: i64,
    expected_step: i64,
    step: i64,
    elapsed_ms: i64,
    allow_acked: bool,
}

fn fire_step(
    tx: &mut Tx<'_, '_>,
    f: &StepFire,
    destinations: &[String],
    on_call: &BTreeMap<String, String>,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let states = if f.allow_acked {
        "('open', 'acked')"
    } else {
        "('open')"
    };
    let n = tx.execute(
        &format!(
            "UPDATE incidents SET next_step = $2::BIGINT + 1, elapsed_ms = $3, updated_at = $4
             WHERE id = $1 AND next_step = $2::BIGINT AND state IN {states}"
        ),
        &[&f.id, &f.expected_step, &f.elapsed_ms, &now],
    )?;
    let covered = tx.query_opt(
        "SELECT storm_id FROM storm_covered WHERE entry = $1 AND incident_id = $2",
        &[&f.expected_step, &f.id],
    )?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if covered.is_some() {
        // An earlier summary of this entry sent the incident's step.
        escalated(tx, f.id, now)?;
        return Ok(Vec::new());
    }
    // Members already past this step on their own schedule count as covered.
    tx.execute(
        "INSERT INTO storm_covered (entry, incident_id, storm_id)
         SELECT $1::BIGINT, m.incident_id, $2::BIGINT FROM storm_members m
         JOIN incidents i ON i.id = m.incident_id
         WHERE m.storm_id = $2::BIGINT AND i.next_step > $1::BIGINT AND i.id != $3
         ON CONFLICT DO NOTHING",
        &[&f.expected_step, &f.storm, &f.id],
    )?;
    let scope = Scope {
        storm: f.storm,
        entry: f.expected_step,
        step: f.step,
        part: Part::Step(f.step),
        states,
    };
    let sent = summarize(tx, &scope, destinations, on_call, now)?;
    if !sent.is_empty() {
        escalated(tx, f.id, now)?;
    }
    Ok(sent)
}

/// Records that a storm member's step was sent (by the storm's summary).
fn escalated(tx: &mut Tx<'_, '_>, id: i64, now: i64) -> Result<(), StoreError> {
    use crate::model::console::action;
    super::console::record_action(tx, id, action::ESCALATED, action::BY_ESCALATION, now)
}

/// A storm rule's pass over one incident just opened: (storm, whether it was just detected).
fn join_storm(
    tx: &mut Tx<'_, '_>,
    id: i64,
    rule: &RuleAt,
    key: &str,
    clock: i64,
    now: i64,
) -> Result<Option<(i64, bool)>, StoreError> {
    tx.execute(
        "INSERT INTO storm_members (incident_id, policy, key, opened) VALUES ($1, $2, $3, $4)
         ON CONFLICT DO NOTHING",
        &[&id, &rule.policy, &key, &clock],
    )?;
    let since = clock.saturating_sub(rule.window_ms);
    let active = tx.query_opt(
        "SELECT id FROM storms WHERE policy = $1 AND key = $2 AND closed_at IS NULL
         AND last_join >= $3 ORDER BY id DESC LIMIT 1 FOR UPDATE",
        &[&rule.policy, &key, &since],
    )?;
    if let Some(row) = active {
        let s: i64 = row.try_get(0)?;
        tx.execute(
            "UPDATE storms SET last_join = GREATEST(last_join, $2) WHERE id = $1",
            &[&s, &clock],
        )?;
        tx.execute(
            "UPDATE storm_members SET storm_id = $2 WHERE incident_id = $1",
            &[&id, &s],
        )?;
        return Ok(Some((s, false)));
    }
    let window: Vec<i64> = tx
        .query(
            "SELECT incident_id FROM storm_members WHERE policy = $1 AND key = $2
             AND storm_id IS NULL AND opened >= $3 ORDER BY incident_id",
            &[&rule.policy, &key, &since],
        )?
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    if window.len() <= rule.threshold {
        return Ok(None);
    }
    let s: i64 = tx
        .query_one(
            "INSERT INTO storms (policy, key, opened_at, last_join, last_update)
             VALUES ($1, $2, $3, $4, $4) RETURNING id",
            &[&rule.policy, &key, &now, &clock],
        )?
        .try_get(0)?;
    tx.execute(
        "UPDATE storm_members SET storm_id = $1 WHERE incident_id = ANY($2)",
        &[&s, &window],
    )?;
    Ok(Some((s, true)))
}

fn opened_incidents(
    tx: &mut Tx<'_, '_>,
    opened: &[i64],
    rules: &[RuleAt],
    clock: i64,
    now: i64,
) -> Result<StormWritten, StoreError> {
    let (mut superseded, mut deliveries, mut detected) = (Vec::new(), Vec::new(), Vec::new());
    let mut ids = opened.to_vec();
    ids.sort_unstable();
    for id in ids {
        let row = tx.query_opt(
            "SELECT i.policy, i.event_id, e.alert FROM incidents i
             JOIN alert_events e ON e.id = i.event_id WHERE i.id = $1",
            &[&id],
        )?;
        let Some(row) = row else { continue };
        let policy: String = row.try_get(0)?;
        let event_id: i64 = row.try_get(1)?;
        let Some(rule) = rules.iter().find(|r| r.policy == policy) else {
            continue;
        };
        let event: AlertEvent = serde_json::from_str(row.try_get(2)?)
            .map_err(|e| StoreError::Corrupt(format!("incident {id}: {e}")))?;
        // The rule's matchers pick the incidents that count (`StormRule::matchers`).
        if !rule.matchers.iter().all(|m| m.matches(&event.labels)) {
            continue;
        }
        let key =
            serde_json::to_string(&crate::model::storm::key_of(&event.labels, &rule.group_by))
                .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let Some((storm, new)) = join_storm(tx, id, rule, &key, clock, now)? else {
            continue;
        };
        if new {
            detected.push((storm, policy.clone()));
        }
        // This incident's first-step messages are replaced by the storm's summary.
        let collapsed = supersede(tx, event_id, id, storm, now)?;
        if new {
            deliveries.extend(detected_summary(tx, storm, rule, &collapsed, now)?);
        }
        superseded.extend(collapsed.into_iter().map(|(d, _, _)| (d, policy.clone())));
    }
    Ok(StormWritten::Opened {
        superseded,
        deliveries,
        detected,
    })
}

/// The first summary of a storm just detected: to the rule's destinations and whoever intake
/// paged, should a rotation have handed over since.
fn detected_summary(
    tx: &mut Tx<'_, '_>,
    storm: i64,
    rule: &RuleAt,
    collapsed: &[(i64, String, Option<String>)],
    now: i64,
) -> Result<Deliveries, StoreError> {
    let mut destinations = rule.destinations.clone();
    let mut on_call = rule.on_call.clone();
    for (_, dest, who) in collapsed {
        if !destinations.contains(dest) {
            destinations.push(dest.clone());
            if let Some(who) = who {
                on_call.insert(dest.clone(), who.clone());
            }
        }
    }
    let scope = Scope {
        storm,
        entry: 0,
        step: 0,
        part: Part::Detected,
        states: "('open', 'acked', 'resolved')",
    };
    summarize(tx, &scope, &destinations, &on_call, now)
}

/// Marks the first-step deliveries of an incident's opening event skipped. Returns (delivery,
/// destination, on call) of each.
fn supersede(
    tx: &mut Tx<'_, '_>,
    event_id: i64,
    incident: i64,
    storm: i64,
    now: i64,
) -> Result<Vec<(i64, String, Option<String>)>, StoreError> {
    let rows = tx.query(
        "UPDATE deliveries SET state = 'skipped', last_error = $3, updated_at = $4
         WHERE event_id = $1 AND incident_id = $2
         AND state = 'pending' AND notice IS NULL AND step = 0 AND storm_id IS NULL
         RETURNING id, destination, on_call",
        &[
            &event_id,
            &incident,
            &format!("collapsed into the summary of storm #{storm}"),
            &now,
        ],
    )?;
    let mut out: Vec<(i64, String, Option<String>)> = rows
        .iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect::<Result<_, StoreError>>()?;
    // RETURNING comes in no particular order; SQLite's scan is by id.
    out.sort_by_key(|r| r.0);
    Ok(out)
}

/// How many incidents a storm has, and its `group_by` values.
fn size_and_key(
    tx: &mut Tx<'_, '_>,
    storm: i64,
) -> Result<(usize, Vec<(String, String)>), StoreError> {
    let row = tx.query_one(
        "SELECT (SELECT COUNT(*) FROM storm_members WHERE storm_id = $1), key FROM storms WHERE id = $1",
        &[&storm],
    )?;
    let total: i64 = row.try_get(0)?;
    let key: String = row.try_get(1)?;
    Ok((usize::try_from(total).unwrap_or(0), parse_key(&key)))
}

fn lead_event(tx: &mut Tx<'_, '_>, storm: i64) -> Result<i64, StoreError> {
    let row = tx.query_one(
        "SELECT i.event_id FROM storm_members m JOIN incidents i ON i.id = m.incident_id
         WHERE m.storm_id = $1 ORDER BY m.incident_id LIMIT 1",
        &[&storm],
    )?;
    Ok(row.try_get(0)?)
}

/// A storm message to insert, one delivery per destination.
struct Summary<'a> {
    storm: i64,
    event_id: i64,
    step: i64,
    text: &'a str,
}

fn insert_storm_deliveries(
    tx: &mut Tx<'_, '_>,
    s: &Summary<'_>,
    destinations: &[String],
    on_call: &BTreeMap<String, String>,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let insert = "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, step, notice, storm_id, on_call)
         VALUES ($1, $2, 'pending', $3, $3, $3, $4, $5, $6, $7) RETURNING id";
    let mut out = Vec::new();
    for d in destinations {
        let row = tx.query_one(
            insert,
            &[
                &s.event_id,
                d,
                &now,
                &s.step,
                &s.text,
                &s.storm,
                &on_call.get(d),
            ],
        )?;
        out.push((d.clone(), row.try_get(0)?, now));
    }
    Ok(out)
}

/// Which members a summary lists: of `storm`, in `states`, not yet covered at schedule `entry`.
struct Scope {
    storm: i64,
    entry: i64,
    step: i64,
    part: Part,
    states: &'static str,
}

fn listed(tx: &mut Tx<'_, '_>, scope: &Scope) -> Result<Vec<Listed>, StoreError> {
    let rows = tx.query(
        &format!(
            "SELECT i.id, i.state, e.alert FROM storm_members m
             JOIN incidents i ON i.id = m.incident_id JOIN alert_events e ON e.id = i.event_id
             WHERE m.storm_id = $1 AND i.state IN {}
             AND NOT EXISTS (SELECT 1 FROM storm_covered c WHERE c.entry = $2 AND c.incident_id = i.id)
             ORDER BY i.id",
            scope.states
        ),
        &[&scope.storm, &scope.entry],
    )?;
    let mut out = Vec::new();
    for r in rows {
        let incident: i64 = r.try_get(0)?;
        let state: &str = r.try_get(1)?;
        out.push(Listed {
            incident,
            state: IncidentState::parse(state).unwrap_or(IncidentState::Open),
            event: serde_json::from_str(r.try_get(2)?)
                .map_err(|e| StoreError::Corrupt(format!("incident {incident}: {e}")))?,
        });
    }
    Ok(out)
}

/// One summary per destination of the members in scope; records them as covered.
fn summarize(
    tx: &mut Tx<'_, '_>,
    scope: &Scope,
    destinations: &[String],
    on_call: &BTreeMap<String, String>,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let listed = listed(tx, scope)?;
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = listed.iter().map(|l| l.incident).collect();
    tx.execute(
        "INSERT INTO storm_covered (entry, incident_id, storm_id)
         SELECT $1::BIGINT, unnest($2::BIGINT[]), $3::BIGINT ON CONFLICT DO NOTHING",
        &[&scope.entry, &ids, &scope.storm],
    )?;
    let (total, key) = size_and_key(tx, scope.storm)?;
    let text = crate::render::storm::summary_text(scope.storm, scope.part, &key, total, &listed);
    let summary = Summary {
        storm: scope.storm,
        event_id: lead_event(tx, scope.storm)?,
        step: scope.step,
        text: &text,
    };
    insert_storm_deliveries(tx, &summary, destinations, on_call, now)
}

fn tick(
    tx: &mut Tx<'_, '_>,
    clock: i64,
    rules: &[RuleAt],
    budgets: &[BudgetAt],
    now: i64,
) -> Result<Deliveries, StoreError> {
    // Once a minute: a pass that changes nothing then writes nothing.
    tx.execute(
        "UPDATE meta SET int_value = $1 WHERE key = 'relay_clock_ms' AND int_value <= $1::BIGINT - $2::BIGINT",
        &[&clock, &CLOCK_CHECKPOINT_MS],
    )?;
    let mut out = Vec::new();
    let open = tx.query(
        "SELECT id, policy, last_update FROM storms WHERE closed_at IS NULL ORDER BY id FOR UPDATE",
        &[],
    )?;
    for row in open {
        let storm: i64 = row.try_get(0)?;
        let policy: &str = row.try_get(1)?;
        let last_update: i64 = row.try_get(2)?;
        if let Some(rule) = rules.iter().find(|r| r.policy == policy)
            && clock.saturating_sub(last_update) >= rule.window_ms
        {
            out.extend(joined_update(tx, storm, rule, clock, now)?);
        }
        out.extend(close_if_resolved(tx, storm, now)?);
    }
    // Budget windows that ended with messages held back since the last summary.
    for b in budgets {
        lock_budget(tx, &b.destination)?;
        if let Some(r) = budget_row(tx, &b.destination)?
            && clock >= r.window_start.saturating_add(b.per_ms)
        {
            if r.held > r.reported {
                out.extend(tally(tx, b, &r, now)?);
            }
            tx.execute(
                "DELETE FROM budgets WHERE destination = $1",
                &[&b.destination],
            )?;
        }
    }
    Ok(out)
}

/// Joiners of an open storm: one update per window.
fn joined_update(
    tx: &mut Tx<'_, '_>,
    storm: i64,
    rule: &RuleAt,
    clock: i64,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let scope = Scope {
        storm,
        entry: 0,
        step: 0,
        part: Part::Joined,
        states: "('open', 'acked', 'resolved')",
    };
    let d = summarize(tx, &scope, &rule.destinations, &rule.on_call, now)?;
    if !d.is_empty() {
        tx.execute(
            "UPDATE storms SET last_update = $2 WHERE id = $1",
            &[&storm, &clock],
        )?;
    }
    Ok(d)
}

/// Closes a storm whose members are all resolved, with a closing message to where it sent.
fn close_if_resolved(tx: &mut Tx<'_, '_>, storm: i64, now: i64) -> Result<Deliveries, StoreError> {
    let unresolved: i64 = tx
        .query_one(
            "SELECT COUNT(*) FROM storm_members m JOIN incidents i ON i.id = m.incident_id
             WHERE m.storm_id = $1 AND i.state != 'resolved'",
            &[&storm],
        )?
        .try_get(0)?;
    if unresolved != 0 {
        return Ok(Vec::new());
    }
    tx.execute(
        "UPDATE storms SET closed_at = $2 WHERE id = $1",
        &[&storm, &now],
    )?;
    let targets = strings(&tx.query(
        "SELECT destination FROM deliveries WHERE storm_id = $1
         AND state IN ('pending', 'delivered') GROUP BY destination ORDER BY MIN(id)",
        &[&storm],
    )?)?;
    let (total, key) = size_and_key(tx, storm)?;
    let text = crate::render::storm::summary_text(storm, Part::Resolved, &key, total, &[]);
    let summary = Summary {
        storm,
        event_id: lead_event(tx, storm)?,
        step: -1,
        text: &text,
    };
    insert_storm_deliveries(tx, &summary, &targets, &BTreeMap::new(), now)
}

/// Serialises the read-modify-write of one destination's budget across instances.
fn lock_budget(tx: &mut Tx<'_, '_>, destination: &str) -> Result<(), StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&BUDGET_LOCK, &destination],
    )?;
    Ok(())
}

fn budget_row(tx: &mut Tx<'_, '_>, destination: &str) -> Result<Option<BudgetRow>, StoreError> {
    let row = tx.query_opt(
        "SELECT window_start, sent, held, reported, held_for, event_id FROM budgets WHERE destination = $1",
        &[&destination],
    )?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(BudgetRow {
        window_start: r.try_get(0)?,
        sent: r.try_get(1)?,
        held: r.try_get(2)?,
        reported: r.try_get(3)?,
        held_for: r.try_get(4)?,
        event_id: r.try_get(5)?,
    }))
}

/// The summary of a window that ended with messages held back after its first summary.
fn tally(
    tx: &mut Tx<'_, '_>,
    b: &BudgetAt,
    r: &BudgetRow,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let Some(event) = r.event_id else {
        return Ok(Vec::new());
    };
    let text = crate::render::budget::tally_text(b, r.held, &r.held_for);
    overflow_deliveries(tx, b, event, &text, now)
}

fn overflow_deliveries(
    tx: &mut Tx<'_, '_>,
    b: &BudgetAt,
    event_id: i64,
    text: &str,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let insert = "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, step, notice)
         VALUES ($1, $2, 'pending', $3, $3, $3, -1, $4) RETURNING id";
    let mut out = Vec::new();
    for d in &b.overflow {
        let row = tx.query_one(insert, &[&event_id, d, &now, &text])?;
        out.push((d.clone(), row.try_get(0)?, now));
    }
    Ok(out)
}

/// Holds back `delivery`: skipped, named in the budget row, and the first time in a window
/// reported to the overflow destinations. Whether this was that first time.
fn hold(
    tx: &mut Tx<'_, '_>,
    delivery: i64,
    b: &BudgetAt,
    r: &mut BudgetRow,
    clock: i64,
    now: i64,
    deliveries: &mut Deliveries,
) -> Result<bool, StoreError> {
    let row = tx.query_one(
        "SELECT event_id, incident_id, storm_id FROM deliveries WHERE id = $1",
        &[&delivery],
    )?;
    let event_id: i64 = row.try_get(0)?;
    let (incident, storm): (Option<i64>, Option<i64>) = (row.try_get(1)?, row.try_get(2)?);
    r.hold(&semantics::held_name(delivery, incident, storm), event_id);
    let reason = semantics::held_reason(b);
    tx.execute(
        "UPDATE deliveries SET state = 'skipped', last_error = $2, updated_at = $3 WHERE id = $1",
        &[&delivery, &reason, &now],
    )?;
    if r.reported != 0 {
        return Ok(false);
    }
    let left = r.left_ms(b, clock);
    let text = crate::render::budget::exhausted_text(b, &r.held_for, left);
    deliveries.extend(overflow_deliveries(tx, b, event_id, &text, now)?);
    r.reported = r.held;
    Ok(true)
}

fn admit(
    tx: &mut Tx<'_, '_>,
    delivery: i64,
    b: &BudgetAt,
    clock: i64,
    now: i64,
) -> Result<StormWritten, StoreError> {
    lock_budget(tx, &b.destination)?;
    let mut deliveries = Vec::new();
    let mut r = match budget_row(tx, &b.destination)? {
        Some(r) if r.runs_at(b, clock) => r,
        ended => {
            if let Some(r) = ended.filter(BudgetRow::owes_tally) {
                deliveries.extend(tally(tx, b, &r, now)?);
            }
            BudgetRow::starting(clock)
        }
    };
    let held = r.full(b);
    let mut exhausted = false;
    if held {
        exhausted = hold(tx, delivery, b, &mut r, clock, now, &mut deliveries)?;
    } else {
        r.sent += 1;
    }
    tx.execute(
        "INSERT INTO budgets (destination, window_start, sent, held, reported, held_for, event_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (destination) DO UPDATE SET window_start = $2, sent = $3, held = $4,
            reported = $5, held_for = $6, event_id = $7",
        &[
            &b.destination,
            &r.window_start,
            &r.sent,
            &r.held,
            &r.reported,
            &r.held_for,
            &r.event_id,
        ],
    )?;
    Ok(if held {
        StormWritten::Held {
            deliveries,
            exhausted,
        }
    } else {
        StormWritten::Admitted { deliveries }
    })
}

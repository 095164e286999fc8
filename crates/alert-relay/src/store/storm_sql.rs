//! SQL of storm control and per-destination budgets (see `crate::storm`, `crate::model::budget`).
//! Every function runs inside the DB thread's transaction, so each write is atomic.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension as _, params};

use super::semantics::{self, BudgetRow};
use super::{IncidentState, StoreError};
use crate::model::storm::{BudgetAt, Listed, Part, RuleAt, StormView, StormWrite, StormWritten};
use crate::payload::AlertEvent;

pub(super) const MIGRATION: &str = "
    CREATE TABLE storms (
        id          INTEGER PRIMARY KEY,
        policy      TEXT    NOT NULL,
        key         TEXT    NOT NULL,   -- JSON [[label, value], ...] of group_by
        opened_at   INTEGER NOT NULL,   -- unix ms, for humans only
        last_join   INTEGER NOT NULL,   -- relay clock ms of the newest member
        last_update INTEGER NOT NULL,   -- relay clock ms of the newest first-step summary
        closed_at   INTEGER             -- unix ms: every member resolved
    );
    CREATE INDEX storms_key ON storms (policy, key) WHERE closed_at IS NULL;
    CREATE TABLE storm_members (       -- every incident of a policy with storm control
        incident_id INTEGER PRIMARY KEY,
        policy      TEXT    NOT NULL,
        key         TEXT    NOT NULL,
        opened      INTEGER NOT NULL,   -- relay clock ms
        storm_id    INTEGER
    );
    CREATE INDEX storm_members_key ON storm_members (policy, key, opened);
    CREATE INDEX storm_members_storm ON storm_members (storm_id) WHERE storm_id IS NOT NULL;
    CREATE TABLE storm_covered (       -- which summary of schedule entry N covered an incident
        entry       INTEGER NOT NULL,
        incident_id INTEGER NOT NULL,
        storm_id    INTEGER NOT NULL,
        PRIMARY KEY (entry, incident_id)
    );
    ALTER TABLE deliveries ADD COLUMN storm_id INTEGER;
    CREATE TABLE budgets (
        destination  TEXT    PRIMARY KEY,
        window_start INTEGER NOT NULL,  -- relay clock ms
        sent         INTEGER NOT NULL,
        held         INTEGER NOT NULL,
        reported     INTEGER NOT NULL,  -- held messages already in a summary
        held_for     TEXT    NOT NULL,  -- incidents (or alerts) held back, for the summaries
        event_id     INTEGER            -- an event to hang the summary on
    );
    INSERT INTO meta (key, value) VALUES ('relay_clock_ms', 0);
    -- later steps list the group's firing alerts (firing_alerts)
    CREATE INDEX alert_events_group_key ON alert_events (group_key);";

type Deliveries = Vec<(String, i64, i64)>;

/// How often the relay clock is stored (its stamps in `storms` and `budgets` are newer).
const CLOCK_CHECKPOINT_MS: i64 = 60_000;

/// The alerts of an incident's group that fire now (received since it opened, not resolved).
/// "Since" is by event id, not `received_at`: the wall clock may step back.
/// Typically a handful; `alert_events_group_key` keeps it an index lookup.
pub(super) fn firing_alerts(
    conn: &Connection,
    incident: i64,
) -> Result<Vec<AlertEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.alert FROM alert_events e JOIN incidents i ON i.id = ?1
         WHERE e.group_key = i.group_key AND e.status = 'firing' AND e.id >= i.event_id
         AND NOT EXISTS (SELECT 1 FROM alert_events r WHERE r.fingerprint = e.fingerprint
                         AND r.starts_at = e.starts_at AND r.status = 'resolved')
         ORDER BY e.id",
    )?;
    let rows = stmt.query_map([incident], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for json in rows {
        // Content only: an unreadable row is left out rather than blocking the delivery.
        if let Ok(e) = serde_json::from_str(&json?) {
            out.push(e);
        }
    }
    Ok(out)
}

/// Storms closed before `before_ms` (wall clock, like `closed_at`) with their member and
/// coverage rows, and the rows of incidents resolved before it that never joined a storm.
pub(super) fn prune(tx: &Connection, before_ms: i64) -> Result<usize, StoreError> {
    // The newest storm stays, so its id (`ACK S7`) is not handed out again.
    let closed = "SELECT id FROM storms WHERE closed_at < ?1 AND id < (SELECT MAX(id) FROM storms)";
    let mut n = tx.execute(
        &format!("DELETE FROM storm_covered WHERE storm_id IN ({closed})"),
        [before_ms],
    )?;
    n += tx.execute(
        &format!("DELETE FROM storm_members WHERE storm_id IN ({closed})"),
        [before_ms],
    )?;
    n += tx.execute(
        "DELETE FROM storm_members WHERE storm_id IS NULL AND incident_id IN
         (SELECT id FROM incidents WHERE state = 'resolved' AND resolved_at < ?1)",
        [before_ms],
    )?;
    n += tx.execute(
        &format!("DELETE FROM storms WHERE id IN ({closed})"),
        [before_ms],
    )?;
    Ok(n)
}

pub(super) fn relay_clock(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn.query_row(
        "SELECT MAX(
            COALESCE((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'relay_clock_ms'), 0),
            COALESCE((SELECT MAX(opened) FROM storm_members), 0),
            COALESCE((SELECT MAX(MAX(last_join), MAX(last_update)) FROM storms), 0),
            COALESCE((SELECT MAX(window_start) FROM budgets), 0))",
        [],
        |r| r.get(0),
    )?)
}

pub(super) fn storm_view(conn: &Connection, id: i64) -> Result<Option<StormView>, StoreError> {
    let row: Option<(String, String, i64, Option<i64>)> = conn
        .query_row(
            "SELECT policy, key, opened_at, closed_at FROM storms WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((policy, key, opened_at_ms, closed_at_ms)) = row else {
        return Ok(None);
    };
    let incidents = super::sqlite::query_incidents(
        conn,
        "WHERE i.id IN (SELECT incident_id FROM storm_members WHERE storm_id = ?1) ORDER BY i.id",
        [id],
    )?;
    Ok(Some(StormView {
        id,
        policy,
        key: parse_key(&key),
        opened_at_ms,
        closed_at_ms,
        incidents,
    }))
}

fn parse_key(key: &str) -> Vec<(String, String)> {
    serde_json::from_str(key).unwrap_or_default()
}

pub(super) fn apply(tx: &Connection, w: StormWrite, now: i64) -> Result<StormWritten, StoreError> {
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
            let due = DueStep {
                id,
                storm,
                expected_step,
                elapsed_ms,
                allow_acked,
            };
            fire_step(tx, &due, step, &destinations, &on_call, now).map(StormWritten::Fired)
        }
        StormWrite::Tick {
            clock,
            rules,
            budgets,
        } => tick(tx, clock, &rules, &budgets, now).map(StormWritten::Deliveries),
        StormWrite::Clock(clock) => {
            tx.execute(
                "UPDATE meta SET value = MAX(CAST(value AS INTEGER), ?1) WHERE key = 'relay_clock_ms'",
                [clock],
            )?;
            Ok(StormWritten::Deliveries(Vec::new()))
        }
        StormWrite::Announce { storm, text } => {
            let targets: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT destination FROM deliveries
                     WHERE (storm_id = ?1 OR (notice IS NULL AND incident_id IN
                            (SELECT incident_id FROM storm_members WHERE storm_id = ?1)))
                     AND state IN ('pending', 'delivered')
                     GROUP BY destination ORDER BY MIN(id)",
                )?;
                let rows = stmt.query_map([storm], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let event = lead_event(tx, storm)?;
            insert_storm_deliveries(tx, storm, event, &targets, &BTreeMap::new(), -1, &text, now)
                .map(StormWritten::Deliveries)
        }
        StormWrite::BudgetAdmit {
            delivery,
            budget,
            clock,
        } => admit(tx, delivery, &budget, clock, now),
    }
}

/// The guard of [`StormWrite::FireStep`]: the incident, its storm, and the schedule entry it
/// must still be at.
struct DueStep {
    id: i64,
    storm: i64,
    expected_step: i64,
    elapsed_ms: i64,
    allow_acked: bool,
}

/// A storm member's schedule entry: advances the incident like a step of its own, then sends
/// one summary for the members not yet covered at that entry. Nothing when the step is no
/// longer due or a summary of this entry already covered the incident.
fn fire_step(
    tx: &Connection,
    due: &DueStep,
    step: i64,
    destinations: &[String],
    on_call: &BTreeMap<String, String>,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let &DueStep {
        id,
        storm,
        expected_step,
        elapsed_ms,
        allow_acked,
    } = due;
    let states = if allow_acked {
        "('open', 'acked')"
    } else {
        "('open')"
    };
    let n = tx.execute(
        &format!(
            "UPDATE incidents SET next_step = ?2 + 1, elapsed_ms = ?3, updated_at = ?4
             WHERE id = ?1 AND next_step = ?2 AND state IN {states}"
        ),
        params![id, expected_step, elapsed_ms, now],
    )?;
    let covered: Option<i64> = tx
        .query_row(
            "SELECT storm_id FROM storm_covered WHERE entry = ?1 AND incident_id = ?2",
            params![expected_step, id],
            |r| r.get(0),
        )
        .optional()?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if covered.is_some() {
        // An earlier summary of this entry sent the incident's step.
        escalated(tx, id, now)?;
        return Ok(Vec::new());
    }
    // Members already past this step on their own schedule (older than the storm,
    // or escalated by hand) count as covered: the summary does not page them again.
    tx.execute(
        "INSERT OR IGNORE INTO storm_covered (entry, incident_id, storm_id)
         SELECT ?1, m.incident_id, ?2 FROM storm_members m
         JOIN incidents i ON i.id = m.incident_id
         WHERE m.storm_id = ?2 AND i.next_step > ?1 AND i.id != ?3",
        params![expected_step, storm, id],
    )?;
    let sent = summarize(
        tx,
        storm,
        expected_step,
        step,
        Part::Step(step),
        destinations,
        on_call,
        states,
        now,
    )?;
    if !sent.is_empty() {
        escalated(tx, id, now)?;
    }
    Ok(sent)
}

/// Records that a storm member's step was sent (by the storm's summary).
fn escalated(tx: &Connection, id: i64, now: i64) -> Result<(), StoreError> {
    use crate::model::console::action;
    super::console_sql::record_action(tx, id, action::ESCALATED, action::BY_ESCALATION, now)
}

/// Enters newly opened incidents into storm control: each joins its key's active storm, or
/// starts one when the window now holds more than the rule's threshold; the first-step
/// messages of an incident in a storm are replaced by the storm's summary.
fn opened_incidents(
    tx: &Connection,
    opened: &[i64],
    rules: &[RuleAt],
    clock: i64,
    now: i64,
) -> Result<StormWritten, StoreError> {
    let mut superseded = Vec::new();
    let mut deliveries = Vec::new();
    let mut detected = Vec::new();
    let mut ids = opened.to_vec();
    ids.sort_unstable();
    for id in ids {
        let Some(member) = enter_member(tx, id, rules, clock)? else {
            continue;
        };
        let Some(storm) = storm_of(tx, &member, clock, now)? else {
            continue;
        };
        let (policy, rule) = (&member.policy, member.rule);
        // This incident's first-step messages are replaced by the storm's summary.
        let collapsed = supersede(tx, member.event_id, id, storm.id, now)?;
        if storm.detected {
            detected.push((storm.id, policy.clone()));
            let (destinations, on_call) = semantics::detection_recipients(
                rule,
                collapsed.iter().map(|(_, dest, who)| (dest, who)),
            );
            deliveries.extend(summarize(
                tx,
                storm.id,
                0,
                0,
                Part::Detected,
                &destinations,
                &on_call,
                "('open', 'acked', 'resolved')",
                now,
            )?);
        }
        superseded.extend(collapsed.into_iter().map(|(d, _, _)| (d, policy.clone())));
    }
    Ok(StormWritten::Opened {
        superseded,
        deliveries,
        detected,
    })
}

/// An opened incident under storm control, with its storm key.
struct Member<'r> {
    id: i64,
    policy: String,
    event_id: i64,
    rule: &'r RuleAt,
    /// JSON of its `group_by` values.
    key: String,
}

/// Records incident `id` as a member of its policy's storm control (opened at `clock`);
/// `None` when it is gone or its policy has no storm rule.
fn enter_member<'r>(
    tx: &Connection,
    id: i64,
    rules: &'r [RuleAt],
    clock: i64,
) -> Result<Option<Member<'r>>, StoreError> {
    let row: Option<(String, i64, String)> = tx
        .query_row(
            "SELECT i.policy, i.event_id, e.alert FROM incidents i
             JOIN alert_events e ON e.id = i.event_id WHERE i.id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    let Some((policy, event_id, alert)) = row else {
        return Ok(None);
    };
    let Some(rule) = rules.iter().find(|r| r.policy == policy) else {
        return Ok(None);
    };
    let event: AlertEvent = serde_json::from_str(&alert)
        .map_err(|e| StoreError::Corrupt(format!("incident {id}: {e}")))?;
    if !rule.matchers.iter().all(|m| m.matches(&event.labels)) {
        return Ok(None);
    }
    let key = serde_json::to_string(&crate::model::storm::key_of(&event.labels, &rule.group_by))
        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    tx.execute(
        "INSERT OR IGNORE INTO storm_members (incident_id, policy, key, opened) VALUES (?1, ?2, ?3, ?4)",
        params![id, policy, key, clock],
    )?;
    Ok(Some(Member {
        id,
        policy,
        event_id,
        rule,
        key,
    }))
}

/// The storm a member is in: `detected` when it started just now.
struct InStorm {
    id: i64,
    detected: bool,
}

/// Puts a member into its key's active storm (one joined within the window), or into a new
/// one when the window holds more than the rule's threshold; `None` when no storm.
fn storm_of(
    tx: &Connection,
    m: &Member<'_>,
    clock: i64,
    now: i64,
) -> Result<Option<InStorm>, StoreError> {
    let since = clock.saturating_sub(m.rule.window_ms);
    let active: Option<i64> = tx
        .query_row(
            "SELECT id FROM storms WHERE policy = ?1 AND key = ?2 AND closed_at IS NULL
             AND last_join >= ?3 ORDER BY id DESC LIMIT 1",
            params![m.policy, m.key, since],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(s) = active {
        tx.execute(
            "UPDATE storms SET last_join = MAX(last_join, ?2) WHERE id = ?1",
            params![s, clock],
        )?;
        tx.execute(
            "UPDATE storm_members SET storm_id = ?2 WHERE incident_id = ?1",
            params![m.id, s],
        )?;
        return Ok(Some(InStorm {
            id: s,
            detected: false,
        }));
    }
    let window: Vec<i64> = {
        let mut stmt = tx.prepare_cached(
            "SELECT incident_id FROM storm_members WHERE policy = ?1 AND key = ?2
             AND storm_id IS NULL AND opened >= ?3 ORDER BY incident_id",
        )?;
        let rows = stmt.query_map(params![m.policy, m.key, since], |r| r.get(0))?;
        rows.collect::<Result<_, _>>()?
    };
    if window.len() <= m.rule.threshold {
        return Ok(None);
    }
    tx.execute(
        "INSERT INTO storms (policy, key, opened_at, last_join, last_update)
         VALUES (?1, ?2, ?3, ?4, ?4)",
        params![m.policy, m.key, now, clock],
    )?;
    let s = tx.last_insert_rowid();
    for member in &window {
        tx.execute(
            "UPDATE storm_members SET storm_id = ?2 WHERE incident_id = ?1",
            params![member, s],
        )?;
    }
    Ok(Some(InStorm {
        id: s,
        detected: true,
    }))
}

/// Marks the first-step deliveries of an incident's opening event skipped: all of them, as
/// intake resolved them (a rotation may have handed over since). Returns (delivery,
/// destination, on call) of each.
fn supersede(
    tx: &Connection,
    event_id: i64,
    incident: i64,
    storm: i64,
    now: i64,
) -> Result<Vec<(i64, String, Option<String>)>, StoreError> {
    let rows: Vec<(i64, String, Option<String>)> = {
        let mut stmt = tx.prepare_cached(
            "SELECT id, destination, on_call FROM deliveries WHERE event_id = ?1 AND incident_id = ?2
             AND state = 'pending' AND notice IS NULL AND step = 0 AND storm_id IS NULL",
        )?;
        let rows = stmt.query_map(params![event_id, incident], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        rows.collect::<Result<_, _>>()?
    };
    for (id, _, _) in &rows {
        tx.execute(
            "UPDATE deliveries SET state = 'skipped', last_error = ?2, updated_at = ?3 WHERE id = ?1",
            params![id, format!("collapsed into the summary of storm #{storm}"), now],
        )?;
    }
    Ok(rows)
}

/// How many incidents a storm has, and its `group_by` values.
fn size_and_key(tx: &Connection, storm: i64) -> Result<(usize, Vec<(String, String)>), StoreError> {
    let (total, key): (i64, String) = tx.query_row(
        "SELECT (SELECT COUNT(*) FROM storm_members WHERE storm_id = ?1), key FROM storms WHERE id = ?1",
        [storm],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok((usize::try_from(total).unwrap_or(0), parse_key(&key)))
}

fn lead_event(tx: &Connection, storm: i64) -> Result<i64, StoreError> {
    Ok(tx.query_row(
        "SELECT i.event_id FROM storm_members m JOIN incidents i ON i.id = m.incident_id
         WHERE m.storm_id = ?1 ORDER BY m.incident_id LIMIT 1",
        [storm],
        |r| r.get(0),
    )?)
}

#[allow(clippy::too_many_arguments)]
fn insert_storm_deliveries(
    tx: &Connection,
    storm: i64,
    event_id: i64,
    destinations: &[String],
    on_call: &BTreeMap<String, String>,
    step: i64,
    text: &str,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, step, notice, storm_id, on_call)
         VALUES (?1, ?2, 'pending', ?3, ?3, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut out = Vec::new();
    for d in destinations {
        insert.execute(params![event_id, d, now, step, text, storm, on_call.get(d)])?;
        out.push((d.clone(), tx.last_insert_rowid(), now));
    }
    Ok(out)
}

/// One summary per destination of the members in `states` not yet covered at schedule
/// `entry`; records them as covered.
#[allow(clippy::too_many_arguments)]
fn summarize(
    tx: &Connection,
    storm: i64,
    entry: i64,
    step: i64,
    part: Part,
    destinations: &[String],
    on_call: &BTreeMap<String, String>,
    states: &str,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let listed: Vec<Listed> = {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT i.id, i.state, e.alert FROM storm_members m
             JOIN incidents i ON i.id = m.incident_id JOIN alert_events e ON e.id = i.event_id
             WHERE m.storm_id = ?1 AND i.state IN {states}
             AND NOT EXISTS (SELECT 1 FROM storm_covered c WHERE c.entry = ?2 AND c.incident_id = i.id)
             ORDER BY i.id"
        ))?;
        let rows = stmt.query_map(params![storm, entry], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (incident, state, alert) = row?;
            out.push(Listed {
                incident,
                state: IncidentState::parse(&state).unwrap_or(IncidentState::Open),
                event: serde_json::from_str(&alert)
                    .map_err(|e| StoreError::Corrupt(format!("incident {incident}: {e}")))?,
            });
        }
        out
    };
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    for l in &listed {
        tx.execute(
            "INSERT OR IGNORE INTO storm_covered (entry, incident_id, storm_id) VALUES (?1, ?2, ?3)",
            params![entry, l.incident, storm],
        )?;
    }
    let (total, key) = size_and_key(tx, storm)?;
    let text = crate::render::storm::summary_text(storm, part, &key, total, &listed);
    let event = lead_event(tx, storm)?;
    insert_storm_deliveries(tx, storm, event, destinations, on_call, step, &text, now)
}

fn tick(
    tx: &Connection,
    clock: i64,
    rules: &[RuleAt],
    budgets: &[BudgetAt],
    now: i64,
) -> Result<Deliveries, StoreError> {
    // Once a minute: a pass that changes nothing then writes nothing (no fsync every 5 s on
    // an SD card).
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE key = 'relay_clock_ms' AND CAST(value AS INTEGER) <= ?1 - ?2",
        params![clock, CLOCK_CHECKPOINT_MS],
    )?;
    let mut out = Vec::new();
    let open: Vec<(i64, String, i64)> = {
        let mut stmt = tx
            .prepare_cached("SELECT id, policy, last_update FROM storms WHERE closed_at IS NULL")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (storm, policy, last_update) in open {
        // Joiners: one update per window.
        if let Some(rule) = rules.iter().find(|r| r.policy == policy)
            && clock.saturating_sub(last_update) >= rule.window_ms
        {
            let d = summarize(
                tx,
                storm,
                0,
                0,
                Part::Joined,
                &rule.destinations,
                &rule.on_call,
                "('open', 'acked', 'resolved')",
                now,
            )?;
            if !d.is_empty() {
                tx.execute(
                    "UPDATE storms SET last_update = ?2 WHERE id = ?1",
                    params![storm, clock],
                )?;
                out.extend(d);
            }
        }
        let unresolved: i64 = tx.query_row(
            "SELECT COUNT(*) FROM storm_members m JOIN incidents i ON i.id = m.incident_id
             WHERE m.storm_id = ?1 AND i.state != 'resolved'",
            [storm],
            |r| r.get(0),
        )?;
        if unresolved == 0 {
            tx.execute(
                "UPDATE storms SET closed_at = ?2 WHERE id = ?1",
                params![storm, now],
            )?;
            let targets: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT destination FROM deliveries WHERE storm_id = ?1
                     AND state IN ('pending', 'delivered') GROUP BY destination ORDER BY MIN(id)",
                )?;
                let rows = stmt.query_map([storm], |r| r.get(0))?;
                rows.collect::<Result<_, _>>()?
            };
            let (total, key) = size_and_key(tx, storm)?;
            let text = crate::render::storm::summary_text(storm, Part::Resolved, &key, total, &[]);
            let event = lead_event(tx, storm)?;
            out.extend(insert_storm_deliveries(
                tx,
                storm,
                event,
                &targets,
                &BTreeMap::new(),
                -1,
                &text,
                now,
            )?);
        }
    }
    // Budget windows that ended with messages held back since the last summary.
    for b in budgets {
        let row = budget_row(tx, &b.destination)?;
        if let Some(r) = row
            && clock >= r.window_start.saturating_add(b.per_ms)
        {
            if r.held > r.reported {
                out.extend(tally(tx, b, &r, now)?);
            }
            tx.execute(
                "DELETE FROM budgets WHERE destination = ?1",
                [&b.destination],
            )?;
        }
    }
    Ok(out)
}

fn budget_row(tx: &Connection, destination: &str) -> Result<Option<BudgetRow>, StoreError> {
    Ok(tx
        .query_row(
            "SELECT window_start, sent, held, reported, held_for, event_id FROM budgets WHERE destination = ?1",
            [destination],
            |r| {
                Ok(BudgetRow {
                    window_start: r.get(0)?,
                    sent: r.get(1)?,
                    held: r.get(2)?,
                    reported: r.get(3)?,
                    held_for: r.get(4)?,
                    event_id: r.get(5)?,
                })
            },
        )
        .optional()?)
}

/// The summary of a window that ended with messages held back after its first summary.
fn tally(tx: &Connection, b: &BudgetAt, r: &BudgetRow, now: i64) -> Result<Deliveries, StoreError> {
    let Some(event) = r.event_id else {
        return Ok(Vec::new());
    };
    let text = crate::render::budget::tally_text(b, r.held, &r.held_for);
    overflow_deliveries(tx, b, event, &text, now)
}

fn overflow_deliveries(
    tx: &Connection,
    b: &BudgetAt,
    event_id: i64,
    text: &str,
    now: i64,
) -> Result<Deliveries, StoreError> {
    let mut insert = tx.prepare_cached(
        "INSERT INTO deliveries (event_id, destination, state, created_at, next_attempt_at, updated_at, step, notice)
         VALUES (?1, ?2, 'pending', ?3, ?3, ?3, -1, ?4)",
    )?;
    let mut out = Vec::new();
    for d in &b.overflow {
        insert.execute(params![event_id, d, now, text])?;
        out.push((d.clone(), tx.last_insert_rowid(), now));
    }
    Ok(out)
}

fn admit(
    tx: &Connection,
    delivery: i64,
    b: &BudgetAt,
    clock: i64,
    now: i64,
) -> Result<StormWritten, StoreError> {
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
        let (event_id, incident, storm): (i64, Option<i64>, Option<i64>) = tx.query_row(
            "SELECT event_id, incident_id, storm_id FROM deliveries WHERE id = ?1",
            [delivery],
            |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
        )?;
        r.hold(&semantics::held_name(delivery, incident, storm), event_id);
        tx.execute(
            "UPDATE deliveries SET state = 'skipped', last_error = ?2, updated_at = ?3 WHERE id = ?1",
            params![
                delivery,
                semantics::held_reason(b),
                now
            ],
        )?;
        if r.reported == 0 {
            exhausted = true;
            let left = r.left_ms(b, clock);
            let text = crate::render::budget::exhausted_text(b, &r.held_for, left);
            deliveries.extend(overflow_deliveries(tx, b, event_id, &text, now)?);
            r.reported = r.held;
        }
    } else {
        r.sent += 1;
    }
    tx.execute(
        "INSERT INTO budgets (destination, window_start, sent, held, reported, held_for, event_id)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (destination) DO UPDATE SET window_start = ?2, sent = ?3, held = ?4,
            reported = ?5, held_for = ?6, event_id = ?7",
        params![
            b.destination,
            r.window_start,
            r.sent,
            r.held,
            r.reported,
            r.held_for,
            r.event_id
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

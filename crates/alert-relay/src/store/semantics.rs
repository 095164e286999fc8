//! What a write means, apart from any SQL: the decisions a backend makes the same way whatever
//! it stores into (SQLite and PostgreSQL). Pure functions of the write and of what the
//! backend read; each backend keeps its own queries and calls these in between.

use std::collections::BTreeMap;

use super::{Action, Attempt, DeliveryState, Incident, IncidentQuery, IncidentState};
use crate::model::console::like_pattern;
use crate::model::storm::{BudgetAt, RuleAt};
use crate::payload::AlertEvent;

/// A delivery row after [`super::Write::Record`].
#[derive(Debug)]
pub(super) struct Recorded {
    pub(super) state: DeliveryState,
    pub(super) last_error: Option<String>,
    /// `None` keeps the one stored (a retry must not forget where the message went).
    pub(super) provider_ref: Option<String>,
    pub(super) next_attempt_at_ms: i64,
}

/// The row an attempt leaves: only a retry waits; everything else is final now.
pub(super) fn recorded(attempt: Attempt, now: i64) -> Recorded {
    let (state, last_error, provider_ref, next_attempt_at_ms) = match attempt {
        Attempt::Delivered { provider_ref } => (DeliveryState::Delivered, None, provider_ref, now),
        Attempt::Retry {
            next_attempt_at_ms,
            error,
        } => (
            DeliveryState::Pending,
            Some(error),
            None,
            next_attempt_at_ms,
        ),
        Attempt::Dead { error } => (DeliveryState::Dead, Some(error), None, now),
        Attempt::Skipped { reason } => (DeliveryState::Skipped, Some(reason), None, now),
    };
    Recorded {
        state,
        last_error,
        provider_ref,
        next_attempt_at_ms,
    }
}

/// The state `action` takes an incident in state `from` to; `None` when it changes nothing
/// (a resolved incident stays resolved, acking an acked one is a no-op).
pub(super) fn transition_to(action: &Action, from: IncidentState) -> Option<IncidentState> {
    match (action, from) {
        (_, IncidentState::Resolved)
        | (Action::Ack, IncidentState::Acked)
        | (Action::Unack, IncidentState::Open) => None,
        (Action::Ack, _) => Some(IncidentState::Acked),
        (Action::Unack, _) => Some(IncidentState::Open),
        (Action::Resolve, _) => Some(IncidentState::Resolved),
    }
}

/// The notice sent after a transition to where the incident was sent, naming whoever a
/// rotation paged (`paged`, in paging order).
pub(super) fn transition_notice(
    id: i64,
    action: &Action,
    by: &str,
    now: i64,
    paged: &[String],
) -> String {
    let mut notice = format!(
        "Incident #{id} {} by {by} at {}",
        action.verb(),
        crate::time::format_rfc3339(now.saturating_mul(1_000_000))
    );
    if !paged.is_empty() {
        notice.push_str(&format!("; on call: {}", paged.join(", ")));
    }
    notice
}

/// The incident states in which schedule entry of [`super::Write::FireStep`] may still fire:
/// an acknowledged incident only with `allow_acked`, or when `reopen` makes it open again.
pub(super) fn fire_step_states(allow_acked: bool, reopen: bool) -> &'static [IncidentState] {
    if allow_acked || reopen {
        &[IncidentState::Open, IncidentState::Acked]
    } else {
        &[IncidentState::Open]
    }
}

/// Where a resolved event's messages go, with the firing delivery each follows: exactly where
/// the firing message went (`firing`: its first delivery per destination), whatever routing
/// says now. Never seen firing (or with another startsAt): where the group's open incident has
/// sent (`notified`, asked only then), else where routing says.
pub(super) fn resolved_targets<E>(
    firing: Option<Vec<(String, i64)>>,
    notified: impl FnOnce() -> Result<Vec<String>, E>,
    routed: Vec<String>,
) -> Result<Vec<(String, Option<i64>)>, E> {
    if let Some(firing) = firing {
        return Ok(firing.into_iter().map(|(d, id)| (d, Some(id))).collect());
    }
    let notified = notified()?;
    let to = if notified.is_empty() {
        routed
    } else {
        notified
    };
    Ok(to.into_iter().map(|d| (d, None)).collect())
}

/// Who a storm's detection summary goes to: the rule's destinations, and also whoever intake
/// paged for the collapsed messages (`collapsed`: destination, on call), should a rotation
/// have handed over since (the rule resolved it again just now).
pub(super) fn detection_recipients<'a>(
    rule: &RuleAt,
    collapsed: impl IntoIterator<Item = (&'a String, &'a Option<String>)>,
) -> (Vec<String>, BTreeMap<String, String>) {
    let mut destinations = rule.destinations.clone();
    let mut on_call = rule.on_call.clone();
    for (dest, who) in collapsed {
        if !destinations.contains(dest) {
            destinations.push(dest.clone());
            if let Some(who) = who {
                on_call.insert(dest.clone(), who.clone());
            }
        }
    }
    (destinations, on_call)
}

/// `('open', 'acked')`: incident states as an SQL list (the same in both dialects).
pub(super) fn state_list(states: &[IncidentState]) -> String {
    let quoted: Vec<String> = states.iter().map(|s| format!("'{}'", s.as_str())).collect();
    format!("({})", quoted.join(", "))
}

/// How many held-back messages a budget window names; the count says how many in all.
const HELD_NAMED: usize = 20;

/// One destination's budget window as stored (`budgets`).
#[derive(Debug)]
pub(super) struct BudgetRow {
    pub(super) window_start: i64,
    pub(super) sent: i64,
    pub(super) held: i64,
    pub(super) reported: i64,
    /// The held-back messages, named (`#12, storm #3, …`).
    pub(super) held_for: String,
    /// The event the window's summaries hang on: the last message held back.
    pub(super) event_id: Option<i64>,
}

impl BudgetRow {
    /// A window that starts at `clock` (relay clock, ms).
    pub(super) fn starting(clock: i64) -> Self {
        BudgetRow {
            window_start: clock,
            sent: 0,
            held: 0,
            reported: 0,
            held_for: String::new(),
            event_id: None,
        }
    }

    /// Whether the window is still running at `clock`.
    pub(super) fn runs_at(&self, b: &BudgetAt, clock: i64) -> bool {
        clock < self.window_start.saturating_add(b.per_ms)
    }

    /// Whether the ended window held messages back after its first summary: a tally is owed.
    pub(super) fn owes_tally(&self) -> bool {
        self.held > self.reported
    }

    /// Whether the next message is over the budget.
    pub(super) fn full(&self, b: &BudgetAt) -> bool {
        self.sent >= i64::from(b.max)
    }

    /// Counts one more message held back: `what` names it (see [`held_name`]), `event_id` is
    /// its event, which the summaries then hang on.
    pub(super) fn hold(&mut self, what: &str, event_id: i64) {
        let mut list: Vec<&str> = self
            .held_for
            .split(", ")
            .filter(|s| !s.is_empty())
            .collect();
        if !list.contains(&what) && list.len() < HELD_NAMED {
            list.push(what);
        } else if list.len() == HELD_NAMED {
            list.push("…");
        }
        self.held_for = list.join(", ");
        self.held += 1;
        self.event_id = Some(event_id);
    }

    /// How long the window still runs at `clock`, in ms.
    pub(super) fn left_ms(&self, b: &BudgetAt, clock: i64) -> i64 {
        self.window_start
            .saturating_add(b.per_ms)
            .saturating_sub(clock)
    }
}

/// How a held-back message is named in its budget's summaries: its incident, else its storm,
/// else the delivery.
pub(super) fn held_name(delivery: i64, incident: Option<i64>, storm: Option<i64>) -> String {
    match (incident, storm) {
        (Some(i), _) => format!("#{i}"),
        (None, Some(s)) => format!("storm #{s}"),
        (None, None) => format!("delivery {delivery}"),
    }
}

/// The reason stored on a delivery a budget held back.
pub(super) fn held_reason(b: &BudgetAt) -> String {
    // A voice channel's budget may report nowhere (its default does).
    let reported = if b.overflow.is_empty() {
        "counted, reported nowhere".to_owned()
    } else {
        format!("reported to {}", b.overflow.join(", "))
    };
    format!(
        "held back: budget of {} for {} exhausted; {reported}",
        b.label, b.destination,
    )
}

/// An incident's name, summary and labels, from its first alert (stored as JSON) as messages
/// word it; left empty when the alert cannot be read.
pub(super) fn name_incident(incident: &mut Incident, alert_json: &str) {
    if let Ok(e) = serde_json::from_str::<AlertEvent>(alert_json) {
        let m = crate::render::Message::new(&e);
        incident.alertname = m.alertname;
        incident.summary = m.summary;
        incident.labels = e.labels;
    }
}

/// `"name":"value"` as compact JSON writes a member of an object.
fn json_member(name: &str, value: &str) -> String {
    let quoted = |t: &str| serde_json::to_string(t).unwrap_or_default();
    format!("{}:{}", quoted(name), quoted(value))
}

/// The SQL dialect a query is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// A bound value of a built query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Param {
    Text(String),
    Int(i64),
}

/// The console's incident list: the `WHERE … ORDER BY … LIMIT` after
/// `FROM incidents i JOIN alert_events e ON e.id = i.event_id`, and its parameters in order.
/// Every value is bound, never spliced (states come from the enum); label filters read the
/// first alert's JSON, the text filter matches any label or annotation value literally.
pub(super) fn incident_page_tail(q: &IncidentQuery, d: Dialect) -> (String, Vec<Param>) {
    let mut params = Vec::new();
    let mut next = |p: Param| {
        params.push(p);
        match d {
            Dialect::Sqlite => format!("?{}", params.len()),
            Dialect::Postgres => format!("${}", params.len()),
        }
    };
    let label = |name: &str| match d {
        Dialect::Sqlite => format!("json_extract(e.alert, '$.labels.{name}')"),
        Dialect::Postgres => format!("(e.alert::jsonb -> 'labels' ->> '{name}')"),
    };
    let mut clauses = Vec::new();
    if !q.states.is_empty() {
        clauses.push(format!("i.state IN {}", state_list(&q.states)));
    }
    for (name, value) in [("severity", &q.severity), ("site", &q.site)] {
        let Some(v) = value else { continue };
        // The stored text must hold `"name":"value"` (compact JSON): a test on the text
        // first spares parsing the JSON of most rows.
        let held = next(Param::Text(like_pattern(&json_member(name, v))));
        let exact = next(Param::Text(v.clone()));
        clauses.push(format!(
            "e.alert LIKE {held} ESCAPE '\\' AND {} = {exact}",
            label(name)
        ));
    }
    if let Some(v) = &q.policy {
        clauses.push(format!("i.policy = {}", next(Param::Text(v.clone()))));
    }
    if let Some(v) = q.text.as_deref().filter(|t| !t.is_empty()) {
        let p = next(Param::Text(like_pattern(v)));
        let any = |field: &str| match d {
            Dialect::Sqlite => format!(
                "EXISTS (SELECT 1 FROM json_each(e.alert, '$.{field}') j \
                 WHERE j.value LIKE {p} ESCAPE '\\')"
            ),
            Dialect::Postgres => format!(
                "EXISTS (SELECT 1 FROM jsonb_each_text(e.alert::jsonb -> '{field}') j \
                 WHERE j.value ILIKE {p} ESCAPE '\\')"
            ),
        };
        let exact = format!("({} OR {})", any("labels"), any("annotations"));
        // Where the text reads the same inside a JSON string, the stored text must hold it.
        if v.chars().any(|c| c == '"' || c == '\\' || c.is_control()) {
            clauses.push(exact);
        } else {
            let like = match d {
                Dialect::Sqlite => "LIKE",
                Dialect::Postgres => "ILIKE",
            };
            clauses.push(format!("e.alert {like} {p} ESCAPE '\\' AND {exact}"));
        }
    }
    if let Some(before) = q.before {
        clauses.push(format!("i.id < {}", next(Param::Int(before))));
    }
    let filter = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {} ", clauses.join(" AND "))
    };
    let limit = next(Param::Int(q.limit.max(0)));
    (format!("{filter}ORDER BY i.id DESC LIMIT {limit}"), params)
}
/// The matchers of a stored maintenance window (written by [`crate::model::maintenance`], so
/// they parse unless the row was changed by hand).
pub(super) fn stored_matchers(
    id: i64,
    text: &str,
) -> Result<Vec<crate::matcher::Matcher>, super::StoreError> {
    crate::model::maintenance::parse_matchers(text)
        .map_err(|e| super::StoreError::Corrupt(format!("maintenance window {id}: {e}")))
}

/// Windows the store lists: in force or to come, and those over for less than this (ms).
pub(super) const WINDOWS_KEPT_MS: i64 = crate::model::maintenance::WEEK_MS;

/// Every destination with stored deliveries: pending count and oldest, last success, last
/// failure (given up, or a retry waiting; a call's outcome on a delivered call and a skip's
/// reason are no failures) and its error, dead count. The same text in both dialects. Each
/// figure is an index search on `(destination, state, updated_at)`, not one pass over every
/// delivery kept (100,000 rows took 180 ms that way).
pub(super) const DESTINATION_HEALTH: &str = "SELECT d.destination,
    (SELECT COUNT(*) FROM deliveries p WHERE p.destination = d.destination AND p.state = 'pending'),
    (SELECT MIN(created_at) FROM deliveries p WHERE p.destination = d.destination AND p.state = 'pending'),
    (SELECT MAX(updated_at) FROM deliveries s WHERE s.destination = d.destination AND s.state = 'delivered'),
    (SELECT MAX(updated_at) FROM deliveries f WHERE f.destination = d.destination
     AND (f.state = 'dead' OR (f.state = 'pending' AND f.last_error IS NOT NULL))),
    (SELECT last_error FROM deliveries f WHERE f.destination = d.destination
     AND (f.state = 'dead' OR (f.state = 'pending' AND f.last_error IS NOT NULL))
     ORDER BY f.updated_at DESC, f.id DESC LIMIT 1),
    (SELECT COUNT(*) FROM deliveries x WHERE x.destination = d.destination AND x.state = 'dead')
 FROM (SELECT DISTINCT destination FROM deliveries) d ORDER BY d.destination";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_incident_page_binds_every_value() {
        let q = IncidentQuery {
            states: vec![IncidentState::Open, IncidentState::Acked],
            severity: Some("critical'--".into()),
            text: Some("50%".into()),
            before: Some(7),
            limit: 20,
            ..IncidentQuery::default()
        };
        let (sql, params) = incident_page_tail(&q, Dialect::Postgres);
        assert!(
            sql.starts_with("WHERE i.state IN ('open', 'acked') AND e.alert LIKE $1 "),
            "{sql}"
        );
        assert!(!sql.contains("critical"), "{sql}");
        assert!(sql.contains("e.alert ILIKE $3 ESCAPE"), "{sql}");
        assert!(
            sql.ends_with("i.id < $4 ORDER BY i.id DESC LIMIT $5"),
            "{sql}"
        );
        assert_eq!(
            params,
            [
                Param::Text(r#"%"severity":"critical'--"%"#.into()),
                Param::Text("critical'--".into()),
                Param::Text(r"%50\%%".into()),
                Param::Int(7),
                Param::Int(20)
            ]
        );
        // A quote reads otherwise inside JSON: only the exact test.
        let quoted = IncidentQuery {
            text: Some(r#"say "hi""#.into()),
            ..IncidentQuery::default()
        };
        let (sql, _) = incident_page_tail(&quoted, Dialect::Sqlite);
        assert!(!sql.contains("e.alert LIKE"), "{sql}");
        let (sql, params) = incident_page_tail(&IncidentQuery::default(), Dialect::Sqlite);
        assert_eq!(sql, "ORDER BY i.id DESC LIMIT ?1");
        assert_eq!(params, [Param::Int(0)]);
    }

    #[test]
    fn a_transition_that_changes_nothing_is_none() {
        use IncidentState::{Acked, Open, Resolved};
        for action in [Action::Ack, Action::Unack, Action::Resolve] {
            assert_eq!(transition_to(&action, Resolved), None);
        }
        assert_eq!(transition_to(&Action::Ack, Acked), None);
        assert_eq!(transition_to(&Action::Unack, Open), None);
        assert_eq!(transition_to(&Action::Ack, Open), Some(Acked));
        assert_eq!(transition_to(&Action::Unack, Acked), Some(Open));
        assert_eq!(transition_to(&Action::Resolve, Acked), Some(Resolved));
    }

    #[test]
    fn a_resolved_event_follows_its_firing_deliveries_else_the_incident_else_routing() {
        let routed = vec!["r".to_owned()];
        let never = || -> Result<Vec<String>, ()> { panic!("asked although firing is known") };
        let firing = Some(vec![("a".to_owned(), 7)]);
        assert_eq!(
            resolved_targets(firing, never, routed.clone()),
            Ok(vec![("a".to_owned(), Some(7))])
        );
        let notified = || Ok::<_, ()>(vec!["n".to_owned()]);
        assert_eq!(
            resolved_targets(None, notified, routed.clone()),
            Ok(vec![("n".to_owned(), None)])
        );
        let nobody = || Ok::<_, ()>(Vec::new());
        assert_eq!(
            resolved_targets(None, nobody, routed),
            Ok(vec![("r".to_owned(), None)])
        );
    }

    #[test]
    fn a_budget_window_names_what_it_held_up_to_a_point_and_counts_all() {
        let b = BudgetAt {
            destination: "sms:+1".into(),
            max: 1,
            per_ms: 1000,
            overflow: vec!["ops".into()],
            label: "1 per 1s".into(),
        };
        let mut r = BudgetRow::starting(5000);
        assert!(r.runs_at(&b, 5999) && !r.runs_at(&b, 6000));
        assert_eq!(r.left_ms(&b, 5400), 600);
        assert!(!r.full(&b));
        r.sent = 1;
        assert!(r.full(&b));
        r.hold(&held_name(9, Some(12), Some(3)), 40);
        r.hold(&held_name(9, Some(12), None), 41);
        r.hold(&held_name(10, None, Some(3)), 42);
        assert_eq!(r.held_for, "#12, storm #3");
        assert_eq!((r.held, r.event_id), (3, Some(42)));
        for i in 0..30 {
            r.hold(&held_name(i, None, None), 50);
        }
        assert_eq!(r.held_for.split(", ").count(), HELD_NAMED + 1);
        assert!(r.held_for.ends_with('…') && r.owes_tally());
        assert_eq!(
            held_reason(&b),
            "held back: budget of 1 per 1s for sms:+1 exhausted; reported to ops"
        );
        let quiet = BudgetAt {
            overflow: Vec::new(),
            ..b.clone()
        };
        assert_eq!(
            held_reason(&quiet),
            "held back: budget of 1 per 1s for sms:+1 exhausted; counted, reported nowhere"
        );
    }
}

//! What the console's templates show, built from the model: every value already in the words
//! and formats a reader sees (the templates only place and escape them).

use jiff::Timestamp;
use serde::Serialize;

use crate::model::console::{DeadLetter, DestinationHealth, Timeline, TimelineDelivery};
use crate::model::maintenance::Window;
use crate::model::record::{Incident, IncidentState};
use crate::payload::Status;
use crate::rotation::Rotation;

/// A point in time as the page shows it (UTC; the script rewrites it into the reader's zone)
/// and as the `datetime` attribute carries it.
pub fn time_text(ms: i64) -> (String, String) {
    match Timestamp::from_millisecond(ms) {
        Ok(t) => (
            t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
            t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        ),
        Err(_) => ("unknown time".to_owned(), String::new()),
    }
}

pub fn state_text(state: IncidentState) -> &'static str {
    match state {
        IncidentState::Open => "open",
        IncidentState::Acked => "acknowledged",
        IncidentState::Resolved => "resolved",
    }
}

/// A CSS class for a severity label: a fixed word, never the label's own text.
fn severity_class(severity: &str) -> &'static str {
    match severity {
        "critical" | "page" | "error" => "critical",
        "warning" | "warn" => "warning",
        "info" | "none" => "info",
        _ => "other",
    }
}

/// One incident in the list and at the top of its page.
#[derive(Debug, Clone, Serialize)]
pub struct IncidentView {
    pub id: i64,
    pub alertname: String,
    pub summary: String,
    pub state: &'static str,
    pub state_text: &'static str,
    pub severity: Option<String>,
    pub severity_class: &'static str,
    pub site: Option<String>,
    pub policy: String,
    pub route: String,
    pub group: String,
    pub opened: String,
    pub opened_iso: String,
    pub acked: Option<String>,
    pub acked_iso: Option<String>,
    pub acked_by: Option<String>,
    pub resolved: Option<String>,
    pub resolved_iso: Option<String>,
    pub resolved_by: Option<String>,
    pub maintenance: Option<i64>,
    pub storm: Option<i64>,
}

impl IncidentView {
    pub fn new(i: &Incident) -> Self {
        let (opened, opened_iso) = time_text(i.opened_at_ms);
        let (acked, acked_iso) = i.acked_at_ms.map(time_text).unzip();
        let (resolved, resolved_iso) = i.resolved_at_ms.map(time_text).unzip();
        let severity = i.labels.get("severity").cloned();
        IncidentView {
            id: i.id,
            alertname: i.alertname.clone(),
            summary: i.summary.clone(),
            state: i.state.as_str(),
            state_text: state_text(i.state),
            severity_class: severity_class(severity.as_deref().unwrap_or_default()),
            severity,
            site: i.labels.get("site").cloned(),
            policy: i.policy.clone(),
            route: i.route.clone(),
            group: crate::payload::readable_group(&i.group_key),
            opened,
            opened_iso,
            acked,
            acked_iso,
            acked_by: i.acked_by.clone(),
            resolved,
            resolved_iso,
            resolved_by: i.resolved_by.clone(),
            maintenance: i.maintenance,
            storm: i.storm,
        }
    }
}

/// A button on an incident's page: the verb posted and what the button says.
#[derive(Debug, Clone, Serialize)]
pub struct ActionButton {
    pub verb: &'static str,
    pub label: &'static str,
    pub class: &'static str,
}

/// The actions an incident in `state` offers.
pub fn actions_for(state: IncidentState) -> Vec<ActionButton> {
    let b = |verb, label, class| ActionButton { verb, label, class };
    match state {
        IncidentState::Open => vec![
            b("ack", "Acknowledge", ""),
            b("escalate", "Escalate now", "secondary"),
            b("resolve", "Resolve", "secondary"),
        ],
        IncidentState::Acked => vec![
            b("unack", "Un-acknowledge", "secondary"),
            b("escalate", "Escalate now", "secondary"),
            b("resolve", "Resolve", "secondary"),
        ],
        IncidentState::Resolved => Vec::new(),
    }
}

/// One line of an incident's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEntry {
    #[serde(skip)]
    pub at_ms: i64,
    pub at: String,
    pub iso: String,
    /// `alert-firing`, `alert-resolved`, `delivery` or `action`: the line's look.
    pub kind: &'static str,
    pub what: String,
    pub detail: Option<String>,
}

fn entry(at_ms: i64, kind: &'static str, what: String, detail: Option<String>) -> TimelineEntry {
    let (at, iso) = time_text(at_ms);
    TimelineEntry {
        at_ms,
        at,
        iso,
        kind,
        what,
        detail,
    }
}

/// Everything that happened to an incident, oldest first (at one time: alerts, then what
/// was sent, then what people did). `destination` names a destination as the page shows it
/// (never a phone number).
pub fn timeline_entries(t: &Timeline, destination: impl Fn(&str) -> String) -> Vec<TimelineEntry> {
    let mut out: Vec<(u8, TimelineEntry)> = Vec::new();
    for e in &t.events {
        let firing = e.event.status == Status::Firing;
        let what = format!(
            "Alertmanager: {} {}",
            e.event
                .labels
                .get("alertname")
                .map_or("alert", String::as_str),
            if firing { "firing" } else { "resolved" },
        );
        let detail = [
            e.event.labels.get("instance"),
            e.event.annotations.get("summary"),
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect::<Vec<_>>()
        .join(" · ");
        let kind = if firing {
            "alert-firing"
        } else {
            "alert-resolved"
        };
        out.push((
            0,
            entry(
                e.received_ms,
                kind,
                what,
                (!detail.is_empty()).then_some(detail),
            ),
        ));
    }
    for d in &t.deliveries {
        out.push((1, delivery_entry(d, &destination)));
    }
    for a in &t.actions {
        out.push((
            2,
            entry(
                a.at_ms,
                "action",
                format!("{} by {}", capitalised(&a.action), a.by),
                None,
            ),
        ));
    }
    out.sort_by_key(|(order, e)| (e.at_ms, *order));
    out.into_iter().map(|(_, e)| e).collect()
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map_or_else(String::new, |f| f.to_uppercase().chain(c).collect())
}

fn delivery_entry(d: &TimelineDelivery, destination: impl Fn(&str) -> String) -> TimelineEntry {
    let to = match &d.on_call {
        Some(person) => format!("{} ({person})", destination(&d.destination)),
        None => destination(&d.destination),
    };
    let what = match (&d.notice, d.storm, d.resolved) {
        (Some(n), Some(storm), _) => format!("Storm #{storm} summary to {to}: {n}"),
        (Some(n), None, _) => format!("Notice to {to}: {n}"),
        (None, _, true) => format!("RESOLVED message to {to}"),
        (None, _, false) => format!("Step {} sent to {to}", d.step + 1),
    };
    let attempts = match d.attempts {
        1 => "1 attempt".to_owned(),
        n => format!("{n} attempts"),
    };
    let mut detail = match d.state.as_str() {
        "delivered" => format!("delivered ({attempts})"),
        "dead" => format!("gave up after {attempts}"),
        "skipped" => "not sent".to_owned(),
        _ if d.attempts == 0 => "queued".to_owned(),
        _ => format!("retrying ({attempts} so far)"),
    };
    if let Some(e) = &d.last_error {
        detail.push_str(": ");
        detail.push_str(e);
    }
    if let Some(r) = &d.provider_ref {
        detail.push_str(&format!(" · provider reference {r}"));
    }
    entry(d.created_ms, "delivery", what, Some(detail))
}

/// The whole context of an incident's page (and of its refreshing region).
pub fn incident_page(t: &Timeline, destination: impl Fn(&str) -> String) -> serde_json::Value {
    let first = t
        .events
        .iter()
        .find(|e| e.event.status == Status::Firing)
        .or(t.events.first());
    let links = first
        .map(|e| super::super::links::for_event(&e.event))
        .unwrap_or_default();
    let annotations = first
        .map(|e| e.event.annotations.clone())
        .unwrap_or_default();
    serde_json::json!({
        "incident": IncidentView::new(&t.incident),
        "actions": actions_for(t.incident.state),
        "labels": t.incident.labels,
        "annotations": annotations,
        "links": links,
        "timeline": timeline_entries(t, destination),
    })
}

/// One destination's line on the deliveries page.
#[derive(Debug, Clone, Serialize)]
pub struct HealthView {
    pub destination: String,
    pub pending: i64,
    /// How long the oldest queued delivery has waited.
    pub oldest: Option<String>,
    pub last_success: Option<String>,
    pub last_failure: Option<String>,
    pub last_error: Option<String>,
    pub dead: i64,
}

impl HealthView {
    pub fn new(h: &DestinationHealth, now_ms: i64, destination: impl Fn(&str) -> String) -> Self {
        let age = |ms: i64| {
            crate::time::humanize(std::time::Duration::from_millis(
                u64::try_from(now_ms.saturating_sub(ms)).unwrap_or(0),
            ))
        };
        HealthView {
            destination: destination(&h.destination),
            pending: h.pending,
            oldest: h.oldest_pending_ms.map(age),
            last_success: h.last_success_ms.map(|t| time_text(t).0),
            last_failure: h.last_failure_ms.map(|t| time_text(t).0),
            last_error: h.last_error.clone(),
            dead: h.dead,
        }
    }
}

/// A dead letter on the deliveries page.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    pub id: i64,
    pub destination: String,
    pub incident: Option<i64>,
    pub attempts: i64,
    pub updated: String,
    pub last_error: Option<String>,
}

impl DeadLetterView {
    pub fn new(d: &DeadLetter, destination: impl Fn(&str) -> String) -> Self {
        DeadLetterView {
            id: d.id,
            destination: destination(&d.destination),
            incident: d.incident,
            attempts: d.attempts,
            updated: time_text(d.updated_ms).0,
            last_error: d.last_error.clone(),
        }
    }
}

/// A rotation on the on-call page: who is on call now and the shifts until `until`, in the
/// rotation's time zone.
pub fn rotation_view(
    r: &Rotation,
    now: Timestamp,
    until: Timestamp,
    calendar_url: String,
) -> serde_json::Value {
    let shifts = r.shifts(now, until);
    let now_until = shifts.first().map_or_else(String::new, |s| r.local(s.end));
    let rows: Vec<serde_json::Value> = shifts
        .iter()
        .map(|s| serde_json::json!({"start": r.local(s.start), "end": r.local(s.end), "person": s.person.name}))
        .collect();
    serde_json::json!({
        "name": r.name,
        "time_zone": r.time_zone_name,
        "now": r.on_call(now).name,
        "until": now_until,
        "shifts": rows,
        "calendar_url": calendar_url,
    })
}

/// A maintenance window on its page.
#[derive(Debug, Clone, Serialize)]
pub struct WindowView {
    pub id: i64,
    pub matchers: String,
    /// `active`, `upcoming` or `ended`.
    pub status: &'static str,
    pub when: String,
    pub weekly: bool,
    pub reason: String,
    pub author: String,
    /// `1 alert held back`, `3 alerts held back`.
    pub held_back: String,
}

impl WindowView {
    pub fn new(w: &Window, now_ms: i64) -> Self {
        let status = if w.active_at(now_ms) {
            "active"
        } else if w.current_or_next(now_ms).is_some() {
            "upcoming"
        } else {
            "ended"
        };
        let when = match (w.current_or_next(now_ms), w.ended_ms) {
            (_, Some(ended)) => format!("ended {}", time_text(ended).0),
            (Some((from, to)), None) => format!("{} to {}", time_text(from).0, time_text(to).0),
            (None, None) => format!("{} to {}", time_text(w.starts_ms).0, time_text(w.ends_ms).0),
        };
        WindowView {
            id: w.id,
            matchers: w.matchers_text.clone(),
            status,
            when,
            weekly: w.weekly,
            reason: w.reason.clone(),
            author: w.author.clone(),
            held_back: match w.suppressed {
                1 => "1 alert held back".to_owned(),
                n => format!("{n} alerts held back"),
            },
        }
    }
}

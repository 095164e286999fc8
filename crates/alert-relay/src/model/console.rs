//! What the on-call console reads and writes (issue 16): filtered pages of incidents, an
//! incident's timeline, delivery health, dead letters and sign-in sessions. Plain data; the
//! store answers these, the HTTP layer renders them.

use crate::model::record::{DeliveryState, Incident, IncidentState};
use crate::payload::AlertEvent;

/// Which incidents a console page lists: newest first, at most `limit`. Every filter that is
/// set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncidentQuery {
    /// Any of these states; empty means every state.
    pub states: Vec<IncidentState>,
    /// The `severity` label of the incident's first alert, exactly.
    pub severity: Option<String>,
    /// The `site` label of the incident's first alert, exactly.
    pub site: Option<String>,
    pub policy: Option<String>,
    /// A case-insensitive substring of the first alert's name, summary or any label or
    /// annotation value (`%` and `_` are plain characters here).
    pub text: Option<String>,
    /// Keyset pagination: only incidents with a smaller id (the last id of the page before).
    pub before: Option<i64>,
    pub limit: i64,
}

/// One alert event of an incident's group, as received.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimelineEvent {
    pub id: i64,
    /// When the relay received it (unix ms).
    pub received_ms: i64,
    pub event: AlertEvent,
}

/// One delivery of an incident (or of a summary of its storm), with what the provider said.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TimelineDelivery {
    pub id: i64,
    pub destination: String,
    /// The policy step that sent it (0 the first; -1 a notice).
    pub step: i64,
    #[serde(serialize_with = "delivery_state")]
    pub state: DeliveryState,
    pub attempts: i64,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub next_attempt_ms: i64,
    /// The last error, or what became of a call, or why it was skipped.
    pub last_error: Option<String>,
    /// The provider's id of the message (a Slack ts, a call's SID, a Pushover receipt).
    pub provider_ref: Option<String>,
    /// A notice (acknowledged, resolved, a storm summary's text) instead of the alert.
    pub notice: Option<String>,
    /// Who a rotation paged through it.
    pub on_call: Option<String>,
    /// A RESOLVED message (it follows a firing message, or its event is resolved).
    pub resolved: bool,
    /// The storm whose summary this is.
    pub storm: Option<i64>,
}

fn delivery_state<S: serde::Serializer>(s: &DeliveryState, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(s.as_str())
}

/// Something done to an incident: `acknowledged`, `un-acknowledged`, `resolved`, `escalated`
/// (a step fired: `by` is `escalation` for the schedule's own steps, the person for an
/// escalate-now) or `reopened` (an escalate-now of an acknowledged incident).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ActionRecord {
    /// Wall-clock time (unix ms).
    pub at_ms: i64,
    pub action: String,
    pub by: String,
}

/// What the actions are called in [`ActionRecord::action`].
pub mod action {
    pub const ACKNOWLEDGED: &str = "acknowledged";
    pub const UNACKNOWLEDGED: &str = "un-acknowledged";
    pub const RESOLVED: &str = "resolved";
    pub const ESCALATED: &str = "escalated";
    pub const REOPENED: &str = "reopened";
    /// `by` of the schedule's own steps.
    pub const BY_ESCALATION: &str = "escalation";
    /// `by` of an incident closed by Alertmanager's resolved notification.
    pub const BY_ALERTMANAGER: &str = "Alertmanager";
}

/// An incident with everything that happened to it, each list oldest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Timeline {
    pub incident: Incident,
    /// Every alert event of its group from its opening on (firing and resolved).
    pub events: Vec<TimelineEvent>,
    pub deliveries: Vec<TimelineDelivery>,
    pub actions: Vec<ActionRecord>,
}

/// One destination's delivery queue and its recent outcomes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DestinationHealth {
    pub destination: String,
    pub pending: i64,
    /// When the oldest pending delivery was created (unix ms).
    pub oldest_pending_ms: Option<i64>,
    pub last_success_ms: Option<i64>,
    /// The last failed attempt (a retry waiting, or given up).
    pub last_failure_ms: Option<i64>,
    /// The error of that attempt.
    pub last_error: Option<String>,
    /// Deliveries given up on (dead letters).
    pub dead: i64,
}

/// A delivery given up on.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeadLetter {
    pub id: i64,
    pub destination: String,
    pub incident: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub attempts: i64,
    pub last_error: Option<String>,
}

/// A signed-in console user's session; stored under the hash of its cookie's token, so the
/// database never holds a usable token.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConsoleSession {
    pub user: String,
    /// The CSRF token every state change of this session must carry.
    pub csrf: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// The console's writes (any instance takes them: none is fenced).
#[derive(Debug, Clone)]
pub enum ConsoleWrite {
    /// Stores a session (replacing one under the same hash). Answers `Done`.
    OpenSession {
        token_hash: String,
        session: ConsoleSession,
    },
    /// Ends a session (sign-out). Answers `Done`.
    CloseSession { token_hash: String },
    /// A dead delivery becomes pending again: attempts reset, next attempt now, and created
    /// now (its age, which bounds the retries, starts again). Answers `Retried`.
    RetryDead { id: i64 },
}

/// What a [`ConsoleWrite`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleWritten {
    Done,
    /// (destination, delivery id, created at ms) of the delivery to queue; `None` when it
    /// was not dead (already retried, delivered, or gone).
    Retried(Option<(String, i64, i64)>),
}

/// Escapes `%`, `_` and the escape character itself for `LIKE … ESCAPE '\'` and wraps the text
/// in `%`: a substring pattern that matches the text literally.
pub fn like_pattern(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    p.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p.push('%');
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_like_pattern_matches_wildcards_literally() {
        assert_eq!(like_pattern("50%_a\\b"), "%50\\%\\_a\\\\b%");
        assert_eq!(like_pattern(""), "%%");
    }
}

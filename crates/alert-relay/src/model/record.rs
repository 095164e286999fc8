//! What the store records and the writes that change it: plain data, shared by the store, the
//! services that send writes, and render (which words deliveries from them).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::model::console::{ConsoleWrite, ConsoleWritten};
use crate::model::maintenance::{MaintenanceWrite, MaintenanceWritten};
use crate::model::storm::{StormWrite, StormWritten};
use crate::payload::{AlertEvent, Labels};

/// The group key of the dead-man's switch's own alert: the delivery engine never holds its
/// message back for a budget (it says that no other alert arrives).
pub const DEADMAN_GROUP_KEY: &str = "alert-relay:deadman";

/// One alert event and where it should go if it is new.
#[derive(Debug, Clone)]
pub struct RoutedEvent {
    pub event: AlertEvent,
    /// Destinations from routing. Used for firing events, and for a resolved event whose
    /// firing event this relay never saw; a resolved event otherwise goes exactly where its
    /// firing event went.
    pub destinations: Vec<String>,
    /// The routes (name, policy) this event matched: each opens or joins one incident.
    pub routes: Vec<RouteRef>,
    /// Alertmanager says the whole group is resolved: its incidents close.
    pub group_resolved: bool,
    /// Destination -> who is on call there (`alice (rotation primary)`), for those a rotation
    /// chose.
    pub on_call: BTreeMap<String, String>,
    /// Destinations that take no RESOLVED messages (`send_resolved: false`): a resolved event
    /// creates no delivery there, wherever its firing event went.
    pub no_resolved: Arc<BTreeSet<String>>,
    /// The maintenance window in force whose matchers match the event's labels: a firing
    /// event is stored but pages nobody (the incident it opens waits for the window's end),
    /// a resolved one sends no RESOLVED message.
    pub maintenance: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteRef {
    pub route: String,
    pub policy: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    /// Escalating.
    Open,
    Acked,
    Resolved,
}

impl IncidentState {
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentState::Open => "open",
            IncidentState::Acked => "acked",
            IncidentState::Resolved => "resolved",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "open" => IncidentState::Open,
            "acked" => IncidentState::Acked,
            "resolved" => IncidentState::Resolved,
            _ => return None,
        })
    }
}

/// One incident as stored. Times ending in `_ms` without `at` are monotonic durations
/// (checkpointed); `*_at_ms` are wall-clock stamps for humans only.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Incident {
    pub id: i64,
    pub group_key: String,
    pub route: String,
    pub policy: String,
    pub state: IncidentState,
    /// Escalation time: runs while the incident escalates.
    pub elapsed_ms: i64,
    /// Time since the acknowledgement (for `ack_timeout`): runs while acknowledged.
    pub acked_ms: i64,
    /// Index into the policy's schedule of the next send.
    pub next_step: i64,
    pub opened_at_ms: i64,
    pub acked_at_ms: Option<i64>,
    pub acked_by: Option<String>,
    pub resolved_at_ms: Option<i64>,
    pub resolved_by: Option<String>,
    pub alertname: String,
    pub summary: String,
    /// The labels of the incident's first alert (filters, pages, maintenance windows).
    pub labels: Labels,
    /// The storm this incident belongs to (storm control), if any.
    pub storm: Option<i64>,
    /// The maintenance window holding this incident: it pages nobody until the window ends.
    /// Kept on an incident resolved while held (it never paged).
    pub maintenance: Option<i64>,
}

/// A Pushover emergency receipt not yet finished (acknowledged, cancelled, expired), as found
/// in the deliveries (`provider_ref` `receipt:…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchedReceipt {
    pub receipt: String,
    /// The incident of the message, or else the storm of the summary.
    pub incident: Option<i64>,
    pub storm: Option<i64>,
    pub destination: String,
    /// When the delivery was recorded (unix ms).
    pub delivered_at_ms: i64,
    /// A storm's: open while any of its incidents is open, else acknowledged.
    pub incident_state: IncidentState,
}

/// How a receipt finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptEnd {
    Acked,
    Cancelled,
    Expired,
    /// Pushover no longer knows it (older than a week, or never valid).
    Gone,
}

impl ReceiptEnd {
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiptEnd::Acked => "acked",
            ReceiptEnd::Cancelled => "cancelled",
            ReceiptEnd::Expired => "expired",
            ReceiptEnd::Gone => "gone",
        }
    }
}

/// (destination, step, state, notice, detail) of one delivery of an incident; the detail is
/// the last error, or what became of a call (`no-answer`, `voicemail (machine_start)`, …).
pub type IncidentDelivery = (String, i64, DeliveryState, Option<String>, Option<String>);

/// What an SMS reply acknowledges: `ACK 12` or `ACK S3`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckTarget {
    Incident(i64),
    Storm(i64),
}

/// A change of an incident's state by a human or by Alertmanager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Ack,
    Unack,
    Resolve,
}

impl Action {
    pub fn verb(&self) -> &'static str {
        match self {
            Action::Ack => "acknowledged",
            Action::Unack => "un-acknowledged",
            Action::Resolve => "resolved",
        }
    }
}

/// What a transition did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transitioned {
    /// State changed; notices to the destinations already notified.
    Done {
        from: IncidentState,
        deliveries: Vec<(String, i64, i64)>,
    },
    /// Already in the target state (a duplicate ack): nothing sent.
    Unchanged(IncidentState),
    NotFound,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted: usize,
    pub duplicates: usize,
    /// (destination, delivery id) of every delivery created, in id order.
    pub deliveries: Vec<(String, i64, i64)>,
    /// Incidents opened by this write.
    pub opened: Vec<i64>,
    /// Open incidents that firing alerts of this write joined (each once; none of `opened`).
    pub joined: Vec<i64>,
    /// Incidents closed by a resolved group.
    pub resolved: usize,
    /// Their numbers.
    pub closed: Vec<i64>,
    /// Incidents of `opened` that a maintenance window holds (they page nobody yet).
    pub held: Vec<i64>,
    /// Firing events a maintenance window kept from paging.
    pub suppressed: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Given up: permanent error, or temporary ones for longer than `delivery.max_age`.
    Dead,
    /// Not sent on purpose (a resolved event whose firing message was never delivered).
    Skipped,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
            DeliveryState::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "dead" => DeliveryState::Dead,
            "skipped" => DeliveryState::Skipped,
            _ => return None,
        })
    }
}

/// A delivery with everything needed to attempt it.
#[derive(Debug, Clone)]
pub struct DeliveryJob {
    pub id: i64,
    pub destination: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub next_attempt_at_ms: i64,
    pub event: AlertEvent,
    /// For a resolved event: the delivery of its firing event to the same destination.
    pub firing: Option<FiringRef>,
    pub incident: Option<i64>,
    /// Policy step that sent this (0 for the first).
    pub step: i64,
    /// A notice about the incident (acknowledged, …) instead of the alert itself.
    pub notice: Option<String>,
    /// A storm summary (its text is in `notice`: title, newline, body).
    pub storm: Option<i64>,
    /// Later steps: the incident's alerts firing when the delivery is loaded.
    pub alerts: Vec<AlertEvent>,
    /// The provider's id of this delivery once delivered (a call's SID).
    pub provider_ref: Option<String>,
}

#[derive(Debug, Clone)]
pub struct FiringRef {
    pub state: DeliveryState,
    /// The provider's id of the firing message (Slack ts, Discord message id, …), to edit or
    /// thread the resolved message.
    pub provider_ref: Option<String>,
    /// The firing message's incident: the resolved message names it.
    pub incident: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        provider_ref: Option<String>,
    },
    Retry {
        next_attempt_at_ms: i64,
        error: String,
    },
    Dead {
        error: String,
    },
    Skipped {
        reason: String,
    },
}

/// A heartbeat of the dead-man's switch as one instance took it: when (unix ms), what
/// (`Watchdog from http://am:9093`) and Alertmanager's external URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub at_ms: i64,
    pub what: String,
    pub external_url: String,
}

/// Cloned only where a write may be tried again (PostgreSQL: a lost race with another
/// instance's transaction).
#[derive(Debug, Clone)]
pub enum Write {
    Ingest(Vec<RoutedEvent>),
    Record {
        id: i64,
        attempts: u32,
        attempt: Attempt,
    },
    /// Deletes finished alerts received before this time (ms), the incidents resolved before
    /// it (but the newest), closed storms and finished receipts no delivery refers to.
    Prune {
        before_ms: i64,
    },
    /// Stores escalation clocks: (incident, elapsed_ms, acked_ms).
    Checkpoint(Vec<(i64, i64, i64)>),
    /// Sends schedule entry `expected_step` (policy step `step`) of an incident to
    /// `destinations`, only if it is still the next one and the incident is open (or
    /// acknowledged, with `allow_acked`): a step is never sent twice. `reopen` makes an
    /// acknowledged incident open again (escalate now).
    FireStep {
        id: i64,
        expected_step: i64,
        step: i64,
        elapsed_ms: i64,
        destinations: Vec<String>,
        /// Destination -> who is on call there, for those a rotation chose.
        on_call: BTreeMap<String, String>,
        allow_acked: bool,
        reopen: bool,
        /// Who asked for the step now (escalate-now), for the incident's record; `None` for
        /// the schedule's own steps.
        by: Option<String>,
    },
    Transition {
        id: i64,
        action: Action,
        /// Who and from where, for the notice and the record.
        by: String,
        elapsed_ms: i64,
    },
    /// Acknowledges several incidents (a storm's) in one transaction, quietly (the storm
    /// announces it once): (incident, escalation time in ms) each.
    AckAll {
        incidents: Vec<(i64, i64)>,
        by: String,
    },
    /// An integer in `meta` (the Telegram `getUpdates` offsets).
    SetMetaInt {
        key: String,
        value: i64,
    },
    /// A Pushover receipt needs no more polling.
    FinishReceipt {
        receipt: String,
        end: ReceiptEnd,
    },
    /// Stores `value` under `key` in `meta`, in the same savepoint as ingesting `events`
    /// (the dead-man's switch: its message and its state commit together). Answers
    /// `Written::Ingested`.
    SetMeta {
        key: String,
        value: Vec<u8>,
        events: Vec<RoutedEvent>,
    },
    /// Re-sync: resolves an open or acknowledged incident like a manual resolve, unless its
    /// group received an alert after the poll started (an event id above `after_event` or
    /// received after `after_ms`). Answers `Written::Transitioned` (`Unchanged` when
    /// the guard kept it).
    ResolveStale {
        id: i64,
        by: String,
        elapsed_ms: i64,
        after_event: i64,
        after_ms: i64,
    },
    /// Storm control and budgets (`crate::storm`, the delivery engine's budget check).
    Storm(StormWrite),
    /// Maintenance windows and the incidents they hold (`crate::maintenance`).
    Maintenance(MaintenanceWrite),
    /// Remembers the `MessageSid` of a signed inbound SMS (kept for `storage.retention`, at
    /// least a day): a replay of a captured request is recognised. Answers
    /// `Written::FirstTime` (false: seen before).
    InboundSid {
        sid: String,
    },
    /// What became of a call (`twilio_voice`): `outcome` is kept on delivery `id` as its
    /// detail, only if the delivery is that call (`provider_ref` = `call_sid`) and has none
    /// yet (the first outcome stays: an acknowledgement is not replaced by the call's end).
    /// Answers `Written::FirstTime` (false: not that call, or an outcome already there).
    CallOutcome {
        id: i64,
        call_sid: String,
        outcome: String,
    },
    /// A heartbeat taken by this instance: nothing is stored, the commit tells the instance
    /// running the dead-man's switch (several relays on one database). Answers
    /// `Written::Heartbeat`.
    Heartbeat(Heartbeat),
    /// The on-call console's sessions and dead-letter retries. Answers `Written::Console`.
    Console(ConsoleWrite),
    /// `write` by the instance that leads with fencing number `epoch` (several relays on one
    /// database): refused with `StoreError::Fenced` when another instance has led since.
    /// [`Write::is_engine_write`] says which writes `Store` fences.
    Fenced {
        epoch: i64,
        write: Box<Write>,
    },
}

impl Write {
    /// The name of this kind of write, for the latency metrics.
    pub fn operation(&self) -> &'static str {
        match self {
            Write::Ingest(_) => "ingest",
            Write::Record { .. } => "record",
            Write::Prune { .. } => "prune",
            Write::Checkpoint(_) => "checkpoint",
            Write::FireStep { .. } => "fire_step",
            Write::Transition { .. } => "transition",
            Write::AckAll { .. } => "ack_all",
            Write::SetMetaInt { .. } => "set_meta_int",
            Write::FinishReceipt { .. } => "finish_receipt",
            Write::SetMeta { .. } => "set_meta",
            Write::ResolveStale { .. } => "resolve_stale",
            Write::Storm(_) => "storm",
            Write::Maintenance(_) => "maintenance",
            Write::InboundSid { .. } => "inbound_sid",
            Write::CallOutcome { .. } => "call_outcome",
            Write::Heartbeat(_) => "heartbeat",
            Write::Console(_) => "console",
            Write::Fenced { write, .. } => write.operation(),
        }
    }

    /// Whether only the instance running the engines makes this write (delivery results,
    /// escalation steps and clocks, storm ticks, budgets, pruning, the pollers' offsets and
    /// receipts, the dead-man's state, re-sync), as opposed to what any instance takes from
    /// outside: webhooks, acknowledgements, an escalate-now, storm detection, inbound SMS, the
    /// console's sessions and dead-letter retries (the commit tells the leader to queue a
    /// retried delivery, as it does for every delivery created elsewhere).
    pub fn is_engine_write(&self) -> bool {
        use crate::model::storm::StormWrite as S;
        match self {
            Write::Record { .. }
            | Write::Prune { .. }
            | Write::Checkpoint(_)
            | Write::SetMetaInt { .. }
            | Write::FinishReceipt { .. }
            | Write::SetMeta { .. }
            | Write::ResolveStale { .. } => true,
            Write::FireStep { reopen, .. } => !reopen,
            Write::Storm(s) => !matches!(s, S::Opened { .. }),
            // The escalator's: what it holds and releases.
            Write::Maintenance(m) => matches!(
                m,
                MaintenanceWrite::Hold { .. } | MaintenanceWrite::Release { .. }
            ),
            Write::Ingest(_)
            | Write::Transition { .. }
            | Write::AckAll { .. }
            | Write::InboundSid { .. }
            | Write::CallOutcome { .. }
            | Write::Heartbeat(_)
            | Write::Console(_)
            | Write::Fenced { .. } => false,
        }
    }
}

impl Written {
    /// The deliveries this write created, as (destination, id, created at ms).
    pub fn deliveries(&self) -> Vec<&(String, i64, i64)> {
        use crate::model::storm::StormWritten as S;
        fn done(t: &Transitioned) -> Vec<&(String, i64, i64)> {
            match t {
                Transitioned::Done { deliveries, .. } => deliveries.iter().collect(),
                _ => Vec::new(),
            }
        }
        match self {
            Written::Ingested(o) => o.deliveries.iter().collect(),
            Written::Fired(d)
            | Written::Storm(
                S::Fired(d)
                | S::Deliveries(d)
                | S::Opened { deliveries: d, .. }
                | S::Admitted { deliveries: d }
                | S::Held { deliveries: d, .. },
            ) => d.iter().collect(),
            Written::Transitioned(t) => done(t),
            Written::TransitionedAll(all) => all.iter().flat_map(|(_, t)| done(t)).collect(),
            Written::Console(ConsoleWritten::Retried(d)) => d.iter().collect(),
            Written::Console(ConsoleWritten::Done) => Vec::new(),
            Written::Recorded
            | Written::Pruned(_)
            | Written::Checkpointed
            | Written::FirstTime(_)
            | Written::Maintenance(_)
            | Written::Heartbeat(_) => Vec::new(),
        }
    }
}

#[derive(Debug)]
pub enum Written {
    Ingested(IngestOutcome),
    Recorded,
    Pruned(usize),
    Checkpointed,
    /// Deliveries created; empty when the step was no longer due (already sent, acked, …).
    Fired(Vec<(String, i64, i64)>),
    Transitioned(Transitioned),
    /// (incident, what its ack did) for [`Write::AckAll`].
    TransitionedAll(Vec<(i64, Transitioned)>),
    Storm(StormWritten),
    Maintenance(MaintenanceWritten),
    FirstTime(bool),
    Heartbeat(Heartbeat),
    Console(ConsoleWritten),
}

/// A pending delivery as the queues hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRef {
    pub id: i64,
    pub created_at_ms: i64,
}

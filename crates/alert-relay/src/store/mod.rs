//! Durable state: alert events (deduplicated) and the delivery outbox.
//!
//! [`Backend`] is the small storage trait: synchronous, one transaction per call of
//! [`Backend::write_batch`]. SQLite implements it today (`sqlite`); a PostgreSQL backend for
//! HA can implement the same calls. [`Store`] is the async handle the rest of the relay uses:
//! it feeds one dedicated DB thread through a channel, and that thread applies every write
//! waiting in the channel in one transaction (group commit: one fsync for many webhooks).
//! A write's reply is sent only after the commit that contains it, so a webhook is answered
//! 2xx only once its alerts are on disk.

pub mod sqlite;
mod storm_sql;

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::payload::AlertEvent;

/// Most writes applied in one transaction: bounds the latency of the last one in a batch.
const MAX_BATCH: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error(
        "database schema version {found} is newer than this alert-relay knows ({known}); upgrade alert-relay"
    )]
    NewerSchema { found: i64, known: i64 },
    /// The batch's transaction could not begin or commit: nothing in it is stored.
    #[error("database commit: {0}")]
    Commit(String),
    #[error("stored alert is unreadable: {0}")]
    Corrupt(String),
    #[error("the storage thread has stopped")]
    Stopped,
    #[error("cannot open {path}: {message}")]
    Open { path: String, message: String },
}

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
    /// The storm this incident belongs to (storm control), if any.
    pub storm: Option<i64>,
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

/// (destination, step, state, notice) of one delivery of an incident.
pub type IncidentDelivery = (String, i64, DeliveryState, Option<String>);

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
    /// Incidents closed by a resolved group.
    pub resolved: usize,
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
}

#[derive(Debug, Clone)]
pub struct FiringRef {
    pub state: DeliveryState,
    /// The provider's id of the firing message (Slack ts, Discord message id, …), to edit or
    /// thread the resolved message.
    pub provider_ref: Option<String>,
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

#[derive(Debug)]
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
    /// Storm control and budgets (`crate::storm`, `crate::budget`).
    Storm(crate::storm::StormWrite),
    /// Remembers the `MessageSid` of a signed inbound SMS (kept for `storage.retention`, at
    /// least a day): a replay of a captured request is recognised. Answers
    /// `Written::FirstTime` (false: seen before).
    InboundSid {
        sid: String,
    },
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
    Storm(crate::storm::StormWritten),
    FirstTime(bool),
}

/// A pending delivery as the queues hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingRef {
    pub id: i64,
    pub created_at_ms: i64,
}

/// The storage trait. Every method runs on the DB thread.
pub trait Backend: Send + 'static {
    /// Applies `writes` in one durable transaction and returns one result per write, in
    /// order. A failing write does not undo the others; a failing commit fails them all.
    fn write_batch(&mut self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>>;
    /// Pending deliveries of one destination, oldest first.
    fn pending(&mut self, destination: &str) -> Result<Vec<PendingRef>, StoreError>;
    fn load(&mut self, id: i64) -> Result<Option<DeliveryJob>, StoreError>;
    /// Destinations with pending deliveries and how many each has.
    fn pending_destinations(&mut self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Cheap query proving the database answers (health checks).
    fn ping(&mut self) -> Result<(), StoreError>;
    /// Incidents not resolved, oldest first.
    fn open_incidents(&mut self) -> Result<Vec<Incident>, StoreError> {
        Ok(Vec::new())
    }
    /// The newest `limit` incidents (any state), newest first.
    fn incidents(&mut self, _limit: i64) -> Result<Vec<Incident>, StoreError> {
        Ok(Vec::new())
    }
    fn incident(&mut self, _id: i64) -> Result<Option<Incident>, StoreError> {
        Ok(None)
    }
    /// (destination, step, state, notice) of every delivery of an incident, in id order.
    fn incident_deliveries(&mut self, _id: i64) -> Result<Vec<IncidentDelivery>, StoreError> {
        Ok(Vec::new())
    }
    /// A value stored with `Write::SetMeta`.
    fn meta(&mut self, _key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(None)
    }
    /// The newest alert event id (0 when none): re-sync's watermark.
    fn last_event_id(&mut self) -> Result<i64, StoreError> {
        Ok(0)
    }
    /// Distinct fingerprints of the firing alerts of an incident (its group's firing events
    /// since it opened).
    fn incident_fingerprints(&mut self, _id: i64) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }
    /// (destination, step, who) of every delivery of an incident that a rotation chose.
    fn incident_on_call(&mut self, _id: i64) -> Result<Vec<(String, i64, String)>, StoreError> {
        Ok(Vec::new())
    }
    /// A storm and its member incidents (storm control).
    fn storm(&mut self, _id: i64) -> Result<Option<crate::storm::StormView>, StoreError> {
        Ok(None)
    }
    /// The stored relay clock (ms): the last checkpoint or the newest stamp, the larger.
    fn relay_clock(&mut self) -> Result<i64, StoreError> {
        Ok(0)
    }
    /// The secret that signs acknowledgement links (created with the database).
    fn ack_key(&mut self) -> Result<Vec<u8>, StoreError> {
        Err(StoreError::Corrupt("this backend has no ack key".into()))
    }
    /// An integer stored with [`Write::SetMeta`].
    fn meta_int(&mut self, _key: &str) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
    /// Pushover receipts still to poll or cancel, oldest first.
    fn watched_receipts(&mut self) -> Result<Vec<WatchedReceipt>, StoreError> {
        Ok(Vec::new())
    }
    /// Whether `destination` was paged for `target`: a delivery to it, not skipped, of the
    /// incident or of a summary of the incident's storm (for a storm: of a summary of it or of
    /// one of its incidents). Only such a destination may acknowledge it by SMS. A backend
    /// that cannot tell answers no.
    fn sent_to(&mut self, _destination: &str, _target: AckTarget) -> Result<bool, StoreError> {
        Ok(false)
    }
}

type Reply = oneshot::Sender<Result<Written, StoreError>>;
type ReadFn = Box<dyn FnOnce(&mut dyn Backend) + Send>;

enum Command {
    Write(Write, Reply),
    Read(ReadFn),
}

/// Timing of each group commit, for the metrics.
pub trait CommitObserver: Send + 'static {
    fn committed(&self, writes: usize, took: Duration);
}

/// Async handle to the DB thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
}

impl Store {
    /// Starts the DB thread; it stops once every handle is dropped.
    pub fn start<B: Backend>(
        mut backend: B,
        observer: impl CommitObserver,
    ) -> Result<(Store, std::thread::JoinHandle<()>), StoreError> {
        let (tx, rx) = mpsc::channel::<Command>();
        let handle = std::thread::Builder::new()
            .name("alert-relay-db".into())
            .spawn(move || run(&mut backend, &rx, &observer))
            .map_err(|e| StoreError::Open {
                path: "<thread>".into(),
                message: e.to_string(),
            })?;
        Ok((Store { tx }, handle))
    }

    pub async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Write(write, reply))
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    pub async fn ingest(&self, events: Vec<RoutedEvent>) -> Result<IngestOutcome, StoreError> {
        match self.write(Write::Ingest(events)).await? {
            Written::Ingested(o) => Ok(o),
            _ => Err(StoreError::Corrupt("unexpected reply to ingest".into())),
        }
    }

    pub async fn record(&self, id: i64, attempts: u32, attempt: Attempt) -> Result<(), StoreError> {
        self.write(Write::Record {
            id,
            attempts,
            attempt,
        })
        .await
        .map(|_| ())
    }

    /// Records an inbound SMS's `MessageSid`; false when it was recorded before (a replay).
    pub async fn first_time(&self, sid: String) -> Result<bool, StoreError> {
        match self.write(Write::InboundSid { sid }).await? {
            Written::FirstTime(new) => Ok(new),
            _ => Err(StoreError::Corrupt(
                "unexpected reply to an inbound sid".into(),
            )),
        }
    }

    /// Runs `f` on the DB thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        let job: ReadFn = Box::new(move |b| {
            let _ = reply.send(f(b));
        });
        self.tx
            .send(Command::Read(job))
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    pub async fn pending(&self, destination: String) -> Result<Vec<PendingRef>, StoreError> {
        self.read(move |b| b.pending(&destination)).await
    }

    pub async fn load(&self, id: i64) -> Result<Option<DeliveryJob>, StoreError> {
        self.read(move |b| b.load(id)).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|b| b.ping()).await
    }
}

fn run(backend: &mut dyn Backend, rx: &mpsc::Receiver<Command>, observer: &dyn CommitObserver) {
    let mut writes = Vec::new();
    let mut replies = Vec::new();
    let mut reads = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Everything that queued up while the last commit was syncing goes into this one.
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Write(w, r) => {
                    writes.push(w);
                    replies.push(r);
                }
                Command::Read(f) => reads.push(f),
            }
            if writes.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !writes.is_empty() {
            let n = writes.len();
            let start = Instant::now();
            let results = backend.write_batch(std::mem::take(&mut writes));
            observer.committed(n, start.elapsed());
            for (reply, result) in replies.drain(..).zip(results) {
                let _ = reply.send(result);
            }
        }
        for f in reads.drain(..) {
            f(backend);
        }
    }
}

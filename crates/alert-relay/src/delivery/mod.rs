//! The delivery engine: one worker task per destination, each with its own FIFO queue (of
//! delivery ids; the rows stay in the store), token bucket and pause.
//!
//! A worker attempts the head of its queue until it is delivered, dead-lettered or skipped,
//! so a destination sees its notifications in order and a resolved message never overtakes
//! its firing one. After a temporary failure the whole destination waits (a provider that is
//! down or rate-limiting is down for every message); the wait and the attempt count are
//! stored, so a restart resumes where it stopped.

pub mod backoff;
mod worker;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::worker::Worker;
use crate::channels;
use crate::config::{DeliveryConfig, Destination};
use crate::live::Live;
use crate::metrics::{ChannelLabels, Metrics, QueueStats};
use crate::relay_clock::RelayClock;
use crate::render::ack::Signer;
use crate::render::{self, Message};
use crate::store::{self, DeliveryJob, PendingRef, Store};
use crate::time::now_millis;

/// Pause after the store failed to answer, before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Queue {
    tx: mpsc::UnboundedSender<PendingRef>,
    destination: watch::Sender<Destination>,
    stats: Arc<QueueStatsCell>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct QueueStatsCell {
    depth: AtomicUsize,
    /// `created_at` (ms) of the oldest queued delivery; 0 when the queue is empty.
    oldest_ms: AtomicI64,
    /// The destination's metric labels (its channel's type can change on a reload).
    labels: Mutex<Option<ChannelLabels>>,
}

/// What the engine is built from.
#[derive(Debug)]
pub struct EngineParts {
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub http: reqwest::Client,
    /// The configuration in force: budgets and `public_url` for ack links are read from it.
    pub live: Arc<Live>,
    /// Budget windows are measured on it.
    pub clock: Arc<RelayClock>,
    /// Signs the acknowledgement links of incident messages (the stored key; `public_url`
    /// comes from `live`). None: messages carry no ack link (tests without them).
    pub ack_key: Option<Vec<u8>>,
}

#[cfg(test)]
impl EngineParts {
    /// An engine for tests: no ack links, the relay clock at 0.
    pub(crate) fn for_tests(store: Store, metrics: Arc<Metrics>, live: Arc<Live>) -> Self {
        EngineParts {
            store,
            metrics,
            http: reqwest::Client::new(),
            live,
            clock: Arc::new(RelayClock::new(0)),
            ack_key: None,
        }
    }
}

#[derive(Debug)]
struct Shared {
    ack_key: Option<Vec<u8>>,
    store: Store,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    live: Arc<Live>,
    clock: Arc<RelayClock>,
    delivery: watch::Receiver<DeliveryConfig>,
    stop: watch::Receiver<bool>,
    /// Started by [`Start::Takeover`]: new workers' token buckets start empty.
    takeover: AtomicBool,
    /// The engine queues overflow summaries.
    engine: std::sync::Weak<Engine>,
}

impl Shared {
    /// The message a delivery sends: the channel's rendering, laid out for summaries and
    /// several alerts, with the incident's id and acknowledgement link.
    fn message(&self, destination: &Destination, job: &DeliveryJob) -> Message {
        let mut msg = channels::message_for(destination, job);
        render::storm::shape(&mut msg, job);
        let signer = self
            .ack_key
            .as_ref()
            .map(|key| Signer::new(key.clone(), self.live.config().public_url.clone()));
        render::ack::decorate(&mut msg, job, signer.as_ref(), now_millis() / 1000);
        msg
    }
}

/// The running engine. Destinations are added on start and on reload; one removed from the
/// configuration keeps its worker (with its last settings) so its queue still drains.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    queues: Mutex<BTreeMap<String, Queue>>,
    delivery: watch::Sender<DeliveryConfig>,
    stop: watch::Sender<bool>,
    /// Workers run (this instance leads): between [`Engine::start`] and [`Engine::shutdown`].
    running: AtomicBool,
}

/// How the engine starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The only instance, or the first leader of a database: every token bucket full.
    Fresh,
    /// Taking over from another leader, which may have spent the burst just before: every
    /// token bucket starts empty.
    Takeover,
}

impl Engine {
    /// The relay's metrics, for the escalation engine's incident counts.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.shared.metrics
    }

    /// An engine without workers; [`Engine::apply`] starts them.
    pub fn new(parts: EngineParts) -> Arc<Self> {
        let EngineParts {
            store,
            metrics,
            http,
            live,
            clock,
            ack_key,
        } = parts;
        let (delivery_tx, delivery_rx) = watch::channel(live.config().delivery.clone());
        let (stop, stopped) = watch::channel(false);
        Arc::new_cyclic(|engine| Engine {
            shared: Arc::new(Shared {
                ack_key,
                store,
                metrics,
                http,
                live,
                clock,
                delivery: delivery_rx,
                stop: stopped,
                takeover: AtomicBool::new(false),
                engine: engine.clone(),
            }),
            queues: Mutex::new(BTreeMap::new()),
            delivery: delivery_tx,
            stop,
            running: AtomicBool::new(false),
        })
    }

    /// Starts sending (this instance leads): a worker per destination, each with the pending
    /// deliveries the store holds for it.
    pub async fn start(
        &self,
        destinations: BTreeMap<String, Destination>,
        delivery: DeliveryConfig,
        how: Start,
    ) -> Result<(), store::StoreError> {
        self.shared
            .takeover
            .store(how == Start::Takeover, Ordering::SeqCst);
        self.stop.send_replace(false);
        self.running.store(true, Ordering::SeqCst);
        self.apply(destinations, delivery).await
    }

    /// While running, starts a worker for every destination that has none and updates the
    /// others, each with the pending deliveries the store holds for it; otherwise keeps the
    /// settings for [`Engine::start`].
    pub async fn apply(
        &self,
        destinations: BTreeMap<String, Destination>,
        delivery: DeliveryConfig,
    ) -> Result<(), store::StoreError> {
        self.delivery.send_replace(delivery);
        if !self.running.load(Ordering::SeqCst) {
            return Ok(());
        }
        for (id, dest) in destinations {
            let exists = {
                let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                match queues.get(&id) {
                    Some(q) => {
                        *q.stats
                            .labels
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) =
                            Some(ChannelLabels::of(&dest));
                        q.destination.send_replace(dest.clone());
                        true
                    }
                    None => false,
                }
            };
            if exists {
                continue;
            }
            let pending = self.shared.store.pending(id.clone()).await?;
            if !pending.is_empty() {
                tracing::info!(destination = %id, pending = pending.len(), "resuming deliveries");
            }
            let (tx, rx) = mpsc::unbounded_channel();
            let stats = Arc::new(QueueStatsCell {
                labels: Mutex::new(Some(ChannelLabels::of(&dest))),
                ..QueueStatsCell::default()
            });
            let (dest_tx, dest_rx) = watch::channel(dest);
            let worker = Worker::new(
                Arc::clone(&self.shared),
                dest_rx,
                rx,
                pending.into(),
                Arc::clone(&stats),
            );
            let task = tokio::spawn(worker.run());
            self.queues
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    id,
                    Queue {
                        tx,
                        destination: dest_tx,
                        stats,
                        task,
                    },
                );
        }
        Ok(())
    }

    /// Hands a committed delivery to its destination's worker. A delivery for a destination
    /// without a worker stays in the store until one exists (next start or reload).
    /// Not running (another instance leads): the leader learns of it from the database.
    pub fn enqueue(&self, destination: &str, id: i64, created_at_ms: i64) {
        if !self.running.load(Ordering::SeqCst) {
            return;
        }
        let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        match queues.get(destination) {
            Some(q) => {
                let _ = q.tx.send(PendingRef { id, created_at_ms });
            }
            None => tracing::warn!(
                destination,
                id,
                "no worker for this destination; the delivery waits in the store"
            ),
        }
    }

    /// [`Engine::enqueue`] for each (destination, id, created at) a write returned.
    pub fn enqueue_all(&self, deliveries: &[(String, i64, i64)]) {
        for (dest, id, created) in deliveries {
            self.enqueue(dest, *id, *created);
        }
    }

    /// Whether every worker is alive (the watchdog's check).
    pub fn healthy(&self) -> bool {
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .all(|q| !q.task.is_finished())
    }

    /// Lets workers finish the attempt in flight (bounded), then stops them; [`Engine::start`]
    /// starts them again.
    pub async fn shutdown(&self, grace: Duration) {
        self.running.store(false, Ordering::SeqCst);
        self.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.queues.lock().unwrap_or_else(PoisonError::into_inner))
                .into_values()
                .map(|q| q.task)
                .collect();
        let deadline = Instant::now() + grace;
        for mut t in tasks {
            if tokio::time::timeout_at(deadline, &mut t).await.is_err() {
                t.abort();
            }
        }
    }
}

impl QueueStats for Engine {
    fn queues(&self) -> Vec<(ChannelLabels, usize, Duration)> {
        let now = now_millis();
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter_map(|q| {
                let oldest = q.stats.oldest_ms.load(Ordering::Relaxed);
                let age = if oldest > 0 {
                    Duration::from_millis(u64::try_from(now - oldest).unwrap_or(0))
                } else {
                    Duration::ZERO
                };
                let labels = q
                    .stats
                    .labels
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone()?;
                Some((labels, q.stats.depth.load(Ordering::Relaxed), age))
            })
            .collect()
    }
}

fn publish(stats: &QueueStatsCell, queue: &VecDeque<PendingRef>) {
    stats.depth.store(queue.len(), Ordering::Relaxed);
    stats.oldest_ms.store(
        queue.front().map_or(0, |p| p.created_at_ms),
        Ordering::Relaxed,
    );
}

/// Sleeps until `until`, taking newly enqueued deliveries meanwhile. False when stopping.
async fn wait_until(
    until: Instant,
    rx: &mut mpsc::UnboundedReceiver<PendingRef>,
    queue: &mut VecDeque<PendingRef>,
    stats: &QueueStatsCell,
    stop: &mut watch::Receiver<bool>,
) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep_until(until) => return true,
            item = rx.recv() => match item {
                Some(p) => { queue.push_back(p); publish(stats, queue); }
                None => { tokio::time::sleep_until(until).await; return true; }
            },
            _ = stop.changed() => return false,
        }
    }
}

/// How long until a stored (wall-clock) attempt time, at most `longest`: the longest wait the
/// relay ever stores. A wall clock stepped back (NTP correcting a Pi by a year) after the time
/// was stored would otherwise hold the delivery for the size of the step.
fn stored_wait(at_ms: i64, now_ms: i64, longest: Duration) -> Duration {
    Duration::from_millis(u64::try_from(at_ms.saturating_sub(now_ms)).unwrap_or(0)).min(longest)
}

/// Counts a first attempt against the destination's budget. `Some(true)`: send it;
/// `Some(false)`: held back (skipped, reported to the overflow channels); `None`: the store
/// failed, try again.
async fn admit(shared: &Shared, destination: &Destination, id: i64) -> Option<bool> {
    let Some(budget) = shared.live.config().budget_of(destination) else {
        return Some(true);
    };
    let w = shared
        .store
        .write(store::Write::Storm(
            crate::model::storm::StormWrite::BudgetAdmit {
                delivery: id,
                budget,
                clock: shared.clock.now_ms(),
            },
        ))
        .await;
    let (deliveries, admitted, exhausted) = match w {
        Ok(store::Written::Storm(crate::model::storm::StormWritten::Admitted { deliveries })) => {
            (deliveries, true, false)
        }
        Ok(store::Written::Storm(crate::model::storm::StormWritten::Held {
            deliveries,
            exhausted,
        })) => (deliveries, false, exhausted),
        Ok(_) => return Some(true),
        Err(e) => {
            shared.metrics.storage_errors.inc();
            tracing::error!(destination = %destination.id, id, "cannot count a delivery against its budget: {e}");
            return None;
        }
    };
    if !admitted {
        let labels = ChannelLabels::of(destination);
        shared.metrics.budget_held_back.get_or_create(&labels).inc();
        if exhausted {
            shared.metrics.budget_exhausted.get_or_create(&labels).inc();
            tracing::warn!(destination = %destination.id, "budget exhausted: holding back messages, reported to the overflow channels");
        }
    }
    if let Some(engine) = shared.engine.upgrade() {
        for (dest, d, created) in &deliveries {
            engine.enqueue(dest, *d, *created);
        }
    }
    Some(admitted)
}

/// Stores an attempt's result; false (after a pause) when the store failed, so the caller
/// keeps the delivery at the head and tries again. Until the result is stored, a crash means
/// the delivery is attempted again after restart: the at-least-once window.
async fn record(
    shared: &Shared,
    destination: &Destination,
    id: i64,
    attempts: u32,
    attempt: store::Attempt,
) -> bool {
    match shared.store.record(id, attempts, attempt).await {
        Ok(()) => true,
        Err(e) => {
            shared.metrics.storage_errors.inc();
            tracing::error!(destination = %destination.id, id, "cannot store a delivery result: {e}");
            tokio::time::sleep(STORE_RETRY).await;
            false
        }
    }
}

#[cfg(test)]
mod wall_clock_tests {
    use super::*;

    #[test]
    fn a_wall_clock_stepped_back_delays_a_stored_attempt_by_at_most_the_longest_wait() {
        let hour = Duration::from_secs(3600);
        let year_ms = 365 * 86_400_000;
        // Stored 30 s ahead: wait 30 s.
        assert_eq!(
            stored_wait(1_030_000, 1_000_000, hour),
            Duration::from_secs(30)
        );
        // Due or overdue (a clock stepped forward): at once.
        assert_eq!(
            stored_wait(1_000_000, 1_000_000 + year_ms, hour),
            Duration::ZERO
        );
        // The clock went back a year after the time was stored: not a year, the cap.
        assert_eq!(stored_wait(1_030_000 + year_ms, 1_000_000, hour), hour);
    }
}

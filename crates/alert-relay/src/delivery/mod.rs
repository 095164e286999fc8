//! The delivery engine: one worker task per destination, each with its own FIFO queue (of
//! delivery ids; the rows stay in the store), token bucket and pause.
//!
//! A worker attempts the head of its queue until it is delivered, dead-lettered or skipped,
//! so a destination sees its notifications in order and a resolved message never overtakes
//! its firing one. After a temporary failure the whole destination waits (a provider that is
//! down or rate-limiting is down for every message); the wait and the attempt count are
//! stored, so a restart resumes where it stopped.

pub mod backoff;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use self::backoff::{TokenBucket, next_delay};
use crate::channels::{self, Attempt, Outcome};
use crate::config::{DeliveryConfig, Destination};
use crate::metrics::{ChannelLabels, FailureLabels, Metrics, QueueStats};
use crate::payload::Status;
use crate::store::{self, DeliveryState, PendingRef, Store};
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
    channel_type: Mutex<String>,
}

#[derive(Debug)]
struct Shared {
    signer: Mutex<Option<Arc<crate::render::ack::Signer>>>,
    store: Store,
    metrics: Arc<Metrics>,
    http: reqwest::Client,
    delivery: watch::Receiver<DeliveryConfig>,
    stop: watch::Receiver<bool>,
    /// For budgets: the configuration in force and the relay clock; unset in tests without
    /// budgets. The engine queues overflow summaries.
    budgets: Mutex<Option<(Arc<crate::live::Live>, Arc<crate::relay_clock::RelayClock>)>>,
    engine: std::sync::Weak<Engine>,
}

/// The running engine. Destinations are added on start and on reload; one removed from the
/// configuration keeps its worker (with its last settings) so its queue still drains.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    queues: Mutex<BTreeMap<String, Queue>>,
    delivery: watch::Sender<DeliveryConfig>,
    stop: watch::Sender<bool>,
}

impl Engine {
    pub fn new(
        store: Store,
        metrics: Arc<Metrics>,
        http: reqwest::Client,
        delivery: DeliveryConfig,
    ) -> Arc<Self> {
        let (delivery_tx, delivery_rx) = watch::channel(delivery);
        let (stop, stopped) = watch::channel(false);
        Arc::new_cyclic(|engine| Engine {
            shared: Arc::new(Shared {
                signer: Mutex::new(None),
                store,
                metrics,
                http,
                delivery: delivery_rx,
                stop: stopped,
                budgets: Mutex::new(None),
                engine: engine.clone(),
            }),
            queues: Mutex::new(BTreeMap::new()),
            delivery: delivery_tx,
            stop,
        })
    }

    /// Starts a worker for every destination that has none and updates the others, each with
    /// the pending deliveries the store holds for it.
    pub async fn apply(
        &self,
        destinations: BTreeMap<String, Destination>,
        delivery: DeliveryConfig,
    ) -> Result<(), store::StoreError> {
        self.delivery.send_replace(delivery);
        for (id, dest) in destinations {
            let exists = {
                let queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
                match queues.get(&id) {
                    Some(q) => {
                        *q.stats
                            .channel_type
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner) =
                            dest.channel.kind.type_name().to_owned();
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
                channel_type: Mutex::new(dest.channel.kind.type_name().to_owned()),
                ..QueueStatsCell::default()
            });
            let (dest_tx, dest_rx) = watch::channel(dest);
            let task = tokio::spawn(worker(
                Arc::clone(&self.shared),
                dest_rx,
                rx,
                pending.into(),
                Arc::clone(&stats),
            ));
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

    /// Signs the acknowledgement links put into incident messages.
    pub fn set_signer(&self, signer: crate::render::ack::Signer) {
        *self
            .shared
            .signer
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(signer));
    }

    /// A reload changed `public_url`: links made from now on use it (the signing key stays).
    pub fn set_public_url(&self, public_url: Option<String>) {
        let mut signer = self
            .shared
            .signer
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = signer.as_ref() {
            *signer = Some(Arc::new(s.with_public_url(public_url)));
        }
    }

    /// Enables per-destination budgets (`crate::model::budget`), measured on `clock`.
    pub fn set_budgets(
        &self,
        live: Arc<crate::live::Live>,
        clock: Arc<crate::relay_clock::RelayClock>,
    ) {
        *self
            .shared
            .budgets
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((live, clock));
    }

    /// Hands a committed delivery to its destination's worker. A delivery for a destination
    /// without a worker stays in the store until one exists (next start or reload).
    pub fn enqueue(&self, destination: &str, id: i64, created_at_ms: i64) {
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

    /// Lets workers finish the attempt in flight (bounded), then stops them.
    pub async fn shutdown(&self, grace: Duration) {
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
    fn queues(&self) -> Vec<(String, String, usize, Duration)> {
        let now = now_millis();
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, q)| {
                let oldest = q.stats.oldest_ms.load(Ordering::Relaxed);
                let age = if oldest > 0 {
                    Duration::from_millis(u64::try_from(now - oldest).unwrap_or(0))
                } else {
                    Duration::ZERO
                };
                let ty = q
                    .stats
                    .channel_type
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                (id.clone(), ty, q.stats.depth.load(Ordering::Relaxed), age)
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

async fn worker(
    shared: Arc<Shared>,
    dest: watch::Receiver<Destination>,
    mut rx: mpsc::UnboundedReceiver<PendingRef>,
    mut queue: VecDeque<PendingRef>,
    stats: Arc<QueueStatsCell>,
) {
    let mut stop = shared.stop.clone();
    let mut bucket: Option<TokenBucket> = None;
    let clock = Instant::now();
    let seconds = |clock: Instant| clock.elapsed().as_secs_f64();
    let mut paused_until = Instant::now();
    loop {
        while let Ok(p) = rx.try_recv() {
            queue.push_back(p);
        }
        publish(&stats, &queue);
        let Some(head) = queue.front().copied() else {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(p) => { queue.push_back(p); continue; }
                    None => return,
                },
                _ = stop.changed() => return,
            }
        };
        let destination = dest.borrow().clone();
        let job = match shared.store.load(head.id).await {
            Ok(Some(job)) if job.state == DeliveryState::Pending => job,
            Ok(_) => {
                queue.pop_front();
                continue;
            }
            Err(e) => {
                tracing::error!(destination = %destination.id, id = head.id, "cannot load a delivery: {e}");
                if !wait_until(
                    Instant::now() + STORE_RETRY,
                    &mut rx,
                    &mut queue,
                    &stats,
                    &mut stop,
                )
                .await
                {
                    return;
                }
                continue;
            }
        };
        // A resolved message whose firing one never arrived would only confuse.
        if job.event.status == Status::Resolved
            && let Some(f) = &job.firing
            && matches!(f.state, DeliveryState::Dead | DeliveryState::Skipped)
        {
            let reason = format!("the firing notification was {}", f.state.as_str());
            if record(
                &shared,
                &destination,
                job.id,
                job.attempts,
                store::Attempt::Skipped { reason },
            )
            .await
            {
                queue.pop_front();
            }
            continue;
        }
        let longest = shared
            .delivery
            .borrow()
            .max_backoff
            .max(crate::channels::MAX_RETRY_HINT)
            .mul_f64(1.1);
        let wait = paused_until
            .max(Instant::now() + stored_wait(job.next_attempt_at_ms, now_millis(), longest));
        if wait > Instant::now() && !wait_until(wait, &mut rx, &mut queue, &stats, &mut stop).await
        {
            return;
        }
        // The dead-man's message is never held back: it says that no other alert arrives.
        if job.attempts == 0
            && destination.channel.budget.is_some()
            && job.event.group_key != crate::model::record::DEADMAN_GROUP_KEY
        {
            match admit(&shared, &destination, job.id).await {
                Some(true) => {}
                Some(false) => {
                    queue.pop_front();
                    continue;
                }
                None => {
                    if !wait_until(
                        Instant::now() + STORE_RETRY,
                        &mut rx,
                        &mut queue,
                        &stats,
                        &mut stop,
                    )
                    .await
                    {
                        return;
                    }
                    continue;
                }
            }
        }
        let rate = destination.channel.rate;
        let b = match &mut bucket {
            Some(b) if b.same_rate(rate.per_second, rate.burst) => b,
            _ => bucket.insert(TokenBucket::new(
                rate.per_second,
                rate.burst,
                seconds(clock),
            )),
        };
        let delay = b.take(seconds(clock));
        if !delay.is_zero() {
            if !wait_until(
                Instant::now() + delay,
                &mut rx,
                &mut queue,
                &stats,
                &mut stop,
            )
            .await
            {
                return;
            }
            // The token is now there; take it.
            let _ = b.take(seconds(clock));
        }
        let config = shared.delivery.borrow().clone();
        let mut msg = channels::message_for(&destination, &job);
        crate::render::storm::shape(&mut msg, &job);
        let signer = shared
            .signer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        crate::render::ack::decorate(&mut msg, &job, signer.as_deref(), now_millis() / 1000);
        let attempt = Attempt {
            http: &shared.http,
            timeout: destination.channel.timeout.unwrap_or(config.timeout),
            destination: &destination,
            delivery_id: job.id,
            firing_ref: job.firing.as_ref().and_then(|f| f.provider_ref.as_deref()),
        };
        let (outcome, fell_back) = channels::deliver(&attempt, &msg).await;
        let labels = ChannelLabels {
            channel: destination.channel.name.clone(),
            destination: destination.id.clone(),
        };
        if fell_back {
            shared.metrics.fallbacks.get_or_create(&labels).inc();
        }
        let attempts = job.attempts.saturating_add(1);
        let failure = |reason: &str| FailureLabels {
            channel: destination.channel.name.clone(),
            destination: destination.id.clone(),
            reason: reason.to_owned(),
        };
        let (attempt_record, done) = match outcome {
            Outcome::Delivered { reference, pause } => {
                shared.metrics.delivered.get_or_create(&labels).inc();
                if let Some(p) = pause {
                    paused_until = Instant::now() + p;
                }
                tracing::debug!(destination = %destination.id, id = job.id, "delivered");
                (
                    store::Attempt::Delivered {
                        provider_ref: reference,
                    },
                    true,
                )
            }
            Outcome::Retry {
                reason,
                after,
                detail,
            } => {
                shared.metrics.failed.get_or_create(&failure(reason)).inc();
                let age = Duration::from_millis(
                    u64::try_from(now_millis() - job.created_at_ms).unwrap_or(0),
                );
                let out_of_attempts = config.max_attempts > 0 && attempts >= config.max_attempts;
                if out_of_attempts || age >= config.max_age {
                    let why = if out_of_attempts {
                        format!("{attempts} attempts")
                    } else {
                        format!("{}s", age.as_secs())
                    };
                    dead_letter(
                        &shared,
                        &destination,
                        job.id,
                        reason,
                        &format!("gave up after {why}: {detail}"),
                    );
                    (store::Attempt::Dead { error: detail }, true)
                } else {
                    let delay = next_delay(
                        attempts,
                        after,
                        config.initial_backoff,
                        config.max_backoff,
                        fastrand::f64(),
                    );
                    tracing::warn!(destination = %destination.id, id = job.id, attempt = attempts, retry_in = ?delay, "temporary failure ({reason}): {detail}");
                    paused_until = Instant::now() + delay;
                    let next =
                        now_millis() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                    (
                        store::Attempt::Retry {
                            next_attempt_at_ms: next,
                            error: format!("{reason}: {detail}"),
                        },
                        false,
                    )
                }
            }
            Outcome::Permanent { reason, detail } => {
                shared.metrics.failed.get_or_create(&failure(reason)).inc();
                dead_letter(&shared, &destination, job.id, reason, &detail);
                (
                    store::Attempt::Dead {
                        error: format!("{reason}: {detail}"),
                    },
                    true,
                )
            }
        };
        // A result that cannot be stored is retried as a result, never by sending again.
        while !record(
            &shared,
            &destination,
            job.id,
            attempts,
            attempt_record.clone(),
        )
        .await
        {
            if *stop.borrow() {
                return;
            }
        }
        if done {
            queue.pop_front();
        }
    }
}

fn dead_letter(shared: &Shared, destination: &Destination, id: i64, reason: &str, detail: &str) {
    shared
        .metrics
        .dead_lettered
        .get_or_create(&FailureLabels {
            channel: destination.channel.name.clone(),
            destination: destination.id.clone(),
            reason: reason.to_owned(),
        })
        .inc();
    tracing::error!(destination = %destination.id, id, reason, "notification dead-lettered: {detail}");
}

/// Counts a first attempt against the destination's budget. `Some(true)`: send it;
/// `Some(false)`: held back (skipped, reported to the overflow channels); `None`: the store
/// failed, try again.
async fn admit(shared: &Shared, destination: &Destination, id: i64) -> Option<bool> {
    let ctx = shared
        .budgets
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let Some((live, clock)) = ctx else {
        return Some(true);
    };
    let Some(budget) = live.config().budget_of(destination) else {
        return Some(true);
    };
    let w = shared
        .store
        .write(store::Write::Storm(
            crate::model::storm::StormWrite::BudgetAdmit {
                delivery: id,
                budget,
                clock: clock.now_ms(),
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
        let labels = ChannelLabels {
            channel: destination.channel.name.clone(),
            destination: destination.id.clone(),
        };
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

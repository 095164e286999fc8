//! One destination's worker: attempts the head of its queue until it is delivered,
//! dead-lettered or skipped, pacing by the stored retry time, the budget and the rate limit.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::backoff::{TokenBucket, next_delay};
use super::{QueueStatsCell, STORE_RETRY, Shared, admit, publish, record, stored_wait, wait_until};
use crate::channels::{self, Attempt, Outcome};
use crate::config::{DeliveryConfig, Destination};
use crate::metrics::{ChannelLabels, FailureLabels};
use crate::model::record::DEADMAN_GROUP_KEY;
use crate::payload::Status;
use crate::store::{self, DeliveryJob, DeliveryState, PendingRef};
use crate::time::now_millis;

/// Logs what became of a delivery at `level`, with the delivery's fields (channel,
/// destination, incident, kind, delivery id) before the given ones: the journal's story.
macro_rules! log_outcome {
    ($level:ident, $job:expr, $destination:expr, $($rest:tt)+) => {
        tracing::$level!(
            channel = %$destination.channel.name,
            destination = %$destination.id,
            incident = %Story($job),
            kind = job_kind($job),
            delivery = $job.id,
            $($rest)+
        )
    };
}

/// Whether the worker goes on or stops (the engine is shutting down, or its queue is gone).
#[must_use]
enum Flow {
    Next,
    Stop,
}

pub(super) struct Worker {
    shared: Arc<Shared>,
    dest: watch::Receiver<Destination>,
    rx: mpsc::UnboundedReceiver<PendingRef>,
    queue: VecDeque<PendingRef>,
    stats: Arc<QueueStatsCell>,
    stop: watch::Receiver<bool>,
    bucket: Option<TokenBucket>,
    /// The token bucket's time base.
    started: Instant,
    /// The provider asked for a pause, or a temporary failure holds the whole destination.
    paused_until: Instant,
}

impl Worker {
    pub(super) fn new(
        shared: Arc<Shared>,
        dest: watch::Receiver<Destination>,
        rx: mpsc::UnboundedReceiver<PendingRef>,
        queue: VecDeque<PendingRef>,
        stats: Arc<QueueStatsCell>,
    ) -> Self {
        let mut stop = shared.stop.clone();
        // What the engine's receiver saw last may be older than the value now (a restart
        // after a shutdown sends `false` again): only a change from here on stops this worker.
        stop.borrow_and_update();
        Worker {
            shared,
            dest,
            rx,
            queue,
            stats,
            stop,
            bucket: None,
            started: Instant::now(),
            paused_until: Instant::now(),
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let Some(head) = self.head().await else {
                return;
            };
            let destination = self.dest.borrow().clone();
            let flow = match self.shared.store.load(head.id).await {
                Ok(Some(job)) if job.state == DeliveryState::Pending => {
                    self.handle(job, &destination).await
                }
                Ok(_) => {
                    self.queue.pop_front();
                    Flow::Next
                }
                Err(e) => {
                    tracing::error!(destination = %destination.id, id = head.id, "cannot load a delivery: {e}");
                    self.wait(Instant::now() + STORE_RETRY).await
                }
            };
            if let Flow::Stop = flow {
                return;
            }
        }
    }

    /// The head of the queue, waiting for one; None when stopping.
    async fn head(&mut self) -> Option<PendingRef> {
        loop {
            while let Ok(p) = self.rx.try_recv() {
                self.queue.push_back(p);
            }
            publish(&self.stats, &self.queue);
            if let Some(head) = self.queue.front() {
                return Some(*head);
            }
            tokio::select! {
                item = self.rx.recv() => self.queue.push_back(item?),
                _ = self.stop.changed() => return None,
            }
        }
    }

    /// Sleeps until `until`, taking newly enqueued deliveries meanwhile.
    async fn wait(&mut self, until: Instant) -> Flow {
        if wait_until(
            until,
            &mut self.rx,
            &mut self.queue,
            &self.stats,
            &mut self.stop,
        )
        .await
        {
            Flow::Next
        } else {
            Flow::Stop
        }
    }

    /// One pending delivery at the head: skip it, hold it back, or pace and attempt it.
    async fn handle(&mut self, job: DeliveryJob, destination: &Destination) -> Flow {
        // A resolved message whose firing one never arrived would only confuse.
        if job.event.status == Status::Resolved
            && let Some(f) = &job.firing
            && matches!(f.state, DeliveryState::Dead | DeliveryState::Skipped)
        {
            let reason = format!("the firing notification was {}", f.state.as_str());
            log_outcome!(
                info,
                &job,
                destination,
                outcome = "skipped",
                "not sent: {reason}"
            );
            let skipped = store::Attempt::Skipped { reason };
            if record(&self.shared, destination, job.id, job.attempts, skipped).await {
                self.queue.pop_front();
            }
            return Flow::Next;
        }
        // Before the budget: what is not sent does not count against it.
        if let Some(reason) = channels::not_sent(destination, &job) {
            let skipped = store::Attempt::Skipped { reason };
            if record(&self.shared, destination, job.id, job.attempts, skipped).await {
                self.queue.pop_front();
            }
            return Flow::Next;
        }
        if let Flow::Stop = self.wait_for_stored_time(&job).await {
            return Flow::Stop;
        }
        // The dead-man's message is never held back: it says that no other alert arrives.
        if job.attempts == 0
            && destination.channel.budget.is_some()
            && job.event.group_key != DEADMAN_GROUP_KEY
        {
            match admit(&self.shared, destination, job.id).await {
                Some(true) => {}
                Some(false) => {
                    log_outcome!(
                        info,
                        &job,
                        destination,
                        outcome = "held",
                        "held back by the channel's budget; its overflow channels are told"
                    );
                    self.queue.pop_front();
                    return Flow::Next;
                }
                None => return self.wait(Instant::now() + STORE_RETRY).await,
            }
        }
        if let Flow::Stop = self.take_token(destination).await {
            return Flow::Stop;
        }
        self.attempt(job, destination).await
    }

    /// Waits for the stored retry time (capped: see `stored_wait`) and any pause.
    async fn wait_for_stored_time(&mut self, job: &DeliveryJob) -> Flow {
        let longest = self
            .shared
            .delivery
            .borrow()
            .max_backoff
            .max(channels::MAX_RETRY_HINT)
            .mul_f64(1.1);
        let wait = self
            .paused_until
            .max(Instant::now() + stored_wait(job.next_attempt_at_ms, now_millis(), longest));
        if wait > Instant::now() {
            return self.wait(wait).await;
        }
        Flow::Next
    }

    /// Takes a token of the destination's rate limit, waiting for one if needed.
    async fn take_token(&mut self, destination: &Destination) -> Flow {
        let rate = destination.channel.rate;
        let now = self.started.elapsed().as_secs_f64();
        let takeover = self.shared.takeover.load(Ordering::SeqCst);
        let bucket = match &mut self.bucket {
            Some(b) if b.same_rate(rate.per_second, rate.burst) => b,
            None if takeover => {
                self.bucket
                    .insert(TokenBucket::empty(rate.per_second, rate.burst, now))
            }
            _ => self
                .bucket
                .insert(TokenBucket::new(rate.per_second, rate.burst, now)),
        };
        let delay = bucket.take(now);
        if delay.is_zero() {
            return Flow::Next;
        }
        if let Flow::Stop = self.wait(Instant::now() + delay).await {
            return Flow::Stop;
        }
        // The token is now there; take it.
        let now = self.started.elapsed().as_secs_f64();
        if let Some(b) = &mut self.bucket {
            let _ = b.take(now);
        }
        Flow::Next
    }

    /// Sends the delivery once and stores the result.
    async fn attempt(&mut self, job: DeliveryJob, destination: &Destination) -> Flow {
        let config = self.shared.delivery.borrow().clone();
        let msg = self.shared.message(destination, &job);
        let public_url = self.shared.live.config().public_url.clone();
        let attempt = Attempt {
            http: &self.shared.http,
            timeout: destination.channel.timeout.unwrap_or(config.timeout),
            destination,
            delivery_id: job.id,
            firing_ref: job.firing.as_ref().and_then(|f| f.provider_ref.as_deref()),
            public_url: public_url.as_deref(),
        };
        let (outcome, fell_back) = channels::deliver(&attempt, &msg).await;
        if fell_back {
            self.shared
                .metrics
                .fallbacks
                .get_or_create(&channel_labels(destination))
                .inc();
        }
        let attempts = job.attempts.saturating_add(1);
        let (result, done) = self.judge(outcome, &job, attempts, destination, &config);
        // A result that cannot be stored is retried as a result, never by sending again.
        while !record(&self.shared, destination, job.id, attempts, result.clone()).await {
            if *self.stop.borrow() {
                return Flow::Stop;
            }
        }
        if done {
            self.queue.pop_front();
        }
        Flow::Next
    }

    /// What an attempt's outcome means for the delivery (and whether it leaves the queue),
    /// with its metrics, logs and pause.
    fn judge(
        &mut self,
        outcome: Outcome,
        job: &DeliveryJob,
        attempts: u32,
        destination: &Destination,
        config: &DeliveryConfig,
    ) -> (store::Attempt, bool) {
        let metrics = &self.shared.metrics;
        match outcome {
            Outcome::Delivered { reference, pause } => {
                metrics
                    .delivered
                    .get_or_create(&channel_labels(destination))
                    .inc();
                if let Some(p) = pause {
                    self.paused_until = Instant::now() + p;
                }
                log_outcome!(
                    info,
                    job,
                    destination,
                    attempt = attempts,
                    outcome = "delivered",
                    "delivered"
                );
                let delivered = store::Attempt::Delivered {
                    provider_ref: reference,
                };
                (delivered, true)
            }
            Outcome::Retry {
                reason,
                after,
                detail,
            } => {
                let failure = failure_labels(destination, reason);
                metrics.failed.get_or_create(&failure).inc();
                self.retry_or_give_up(job, attempts, destination, config, (reason, after, detail))
            }
            Outcome::Permanent { reason, detail } => {
                let failure = failure_labels(destination, reason);
                metrics.failed.get_or_create(&failure).inc();
                dead_letter(&self.shared, destination, job, attempts, reason, &detail);
                let error = format!("{reason}: {detail}");
                (store::Attempt::Dead { error }, true)
            }
        }
    }

    /// A temporary failure: retried after a backoff that holds the whole destination, unless
    /// the delivery is out of attempts or too old.
    fn retry_or_give_up(
        &mut self,
        job: &DeliveryJob,
        attempts: u32,
        destination: &Destination,
        config: &DeliveryConfig,
        (reason, after, detail): (&str, Option<Duration>, String),
    ) -> (store::Attempt, bool) {
        let age =
            Duration::from_millis(u64::try_from(now_millis() - job.created_at_ms).unwrap_or(0));
        let out_of_attempts = config.max_attempts > 0 && attempts >= config.max_attempts;
        if out_of_attempts || age >= config.max_age {
            let why = if out_of_attempts {
                format!("{attempts} attempts")
            } else {
                format!("{}s", age.as_secs())
            };
            let detail_why = format!("gave up after {why}: {detail}");
            dead_letter(
                &self.shared,
                destination,
                job,
                attempts,
                reason,
                &detail_why,
            );
            return (store::Attempt::Dead { error: detail }, true);
        }
        let delay = next_delay(
            attempts,
            after,
            config.initial_backoff,
            config.max_backoff,
            fastrand::f64(),
        );
        log_outcome!(
            warn,
            job,
            destination,
            attempt = attempts,
            outcome = "retry",
            reason,
            retry_in = %crate::time::humanize(delay),
            "temporary failure, will retry: {detail}"
        );
        self.paused_until = Instant::now() + delay;
        let next = now_millis() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
        let retry = store::Attempt::Retry {
            next_attempt_at_ms: next,
            error: format!("{reason}: {detail}"),
        };
        (retry, false)
    }
}

fn channel_labels(destination: &Destination) -> ChannelLabels {
    ChannelLabels::of(destination)
}

pub(super) fn failure_labels(destination: &Destination, reason: &str) -> FailureLabels {
    FailureLabels::of(destination, reason)
}

pub(super) fn dead_letter(
    shared: &Shared,
    destination: &Destination,
    job: &DeliveryJob,
    attempt: u32,
    reason: &str,
    detail: &str,
) {
    shared
        .metrics
        .dead_lettered
        .get_or_create(&failure_labels(destination, reason))
        .inc();
    log_outcome!(
        error,
        job,
        destination,
        attempt,
        outcome = "dead",
        reason,
        "notification dead-lettered: {detail}"
    );
}

/// What a delivery's log lines say it belongs to (the `incident` field): the incident number
/// (a resolved message's is its firing message's), `storm N` for a storm's summary, or `none`
/// (a budget summary, the dead-man's message), so the journal follows one incident by number.
struct Story<'j>(&'j DeliveryJob);

impl std::fmt::Display for Story<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let job = self.0;
        let incident = job
            .incident
            .or_else(|| job.firing.as_ref().and_then(|r| r.incident));
        match (incident, job.storm) {
            (Some(i), _) => write!(f, "{i}"),
            (None, Some(s)) => write!(f, "storm {s}"),
            (None, None) => f.write_str("none"),
        }
    }
}

/// What a delivery carries: `firing`, `resolved`, `notice` (acknowledged, resolved by hand, a
/// budget's report) or `summary` (a storm's).
fn job_kind(job: &DeliveryJob) -> &'static str {
    match (job.storm, &job.notice, job.event.status) {
        (_, Some(_), _) => "notice",
        (Some(_), None, _) => "summary",
        (None, None, Status::Firing) => "firing",
        (None, None, Status::Resolved) => "resolved",
    }
}

//! The escalator: sends the later steps of every open incident when they are due, and owns
//! every change of an incident's state made by a human (ack, un-ack, escalate, resolve).
//!
//! Time: a step is due when the incident's *escalation time* reaches its `after:`. That time
//! is measured with `tokio::time::Instant` (monotonic) from the moment this process loaded the
//! incident, on top of the time stored in the database, and checkpointed every
//! [`CHECKPOINT_EVERY`]. A wall-clock step (NTP correcting an offline Pi by a year) changes
//! nothing; a restart resumes from the last checkpoint (the time the relay was down does not
//! count, and at most one checkpoint interval is counted again). The clock runs while the
//! incident escalates and stops while it is acknowledged (under `until: acknowledged`), so an
//! un-ack resumes the schedule where it stopped.
//!
//! Exactly once: sending a step is one transaction that advances `next_step` only if it still
//! has the expected value and the incident still escalates ([`Write::FireStep`]), and creates
//! the step's deliveries. Steps are taken one at a time in schedule order, so none is skipped.
//! State changes and firing hold one lock, so an ack either lands before a step (which is then
//! never sent) or after it; the escalator is woken at once, well within a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, Notify};
use tokio::time::Instant;

use crate::config::Until;
use crate::delivery::Engine;
use crate::live::Live;
use crate::maintenance::Maintenance;
use crate::metrics::PolicyLabel;
use crate::model::maintenance::MaintenanceWrite;
use crate::model::storm::{StormWrite, StormWritten};
use crate::routing;
use crate::store::{
    Action, Incident, IncidentState, Store, StoreError, Transitioned, Write, Written,
};

/// How often escalation clocks are written to the store.
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);
/// Pause after the store failed.
const RETRY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
struct Clock {
    elapsed: Duration,
    acked: Duration,
    since: Instant,
    state: IncidentState,
    /// Whether the escalation time runs in `Acked` (`until: resolved`).
    runs_when_acked: bool,
    /// A maintenance window holds the incident: neither clock runs.
    held: bool,
}

impl Clock {
    fn load(i: &Incident, runs_when_acked: bool) -> Self {
        Clock {
            elapsed: ms(i.elapsed_ms),
            acked: ms(i.acked_ms),
            since: Instant::now(),
            state: i.state,
            runs_when_acked,
            held: false,
        }
    }

    fn running(&self) -> bool {
        !self.held
            && (self.state == IncidentState::Open
                || (self.state == IncidentState::Acked && self.runs_when_acked))
    }

    /// Stops (or starts again) both clocks for a maintenance window.
    fn hold(&mut self, held: bool) {
        if self.held != held {
            let (elapsed, acked) = (self.elapsed(), self.acked());
            self.held = held;
            self.elapsed = elapsed;
            self.acked = acked;
            self.since = Instant::now();
        }
    }

    fn elapsed(&self) -> Duration {
        if self.running() {
            self.elapsed + self.since.elapsed()
        } else {
            self.elapsed
        }
    }

    fn acked(&self) -> Duration {
        if self.state == IncidentState::Acked && self.held {
            self.acked
        } else if self.state == IncidentState::Acked {
            self.acked + self.since.elapsed()
        } else {
            Duration::ZERO
        }
    }

    /// Freezes the current readings and continues in `state`.
    fn rebase(&mut self, state: IncidentState, elapsed: Duration) {
        self.elapsed = elapsed;
        self.acked = if state == IncidentState::Acked && self.state == IncidentState::Acked {
            self.acked()
        } else {
            Duration::ZERO
        };
        self.state = state;
        self.since = Instant::now();
    }
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

fn as_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// What `escalate` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Escalated {
    /// Schedule entry sent, with the number of deliveries.
    Sent {
        step: usize,
        deliveries: usize,
    },
    /// The schedule is exhausted.
    NoFurtherStep,
    Resolved,
    NotFound,
}

#[derive(Debug)]
pub struct Escalator {
    store: Store,
    engine: Arc<Engine>,
    live: Arc<Live>,
    maintenance: Arc<Maintenance>,
    clocks: Mutex<HashMap<i64, Clock>>,
    wake: Notify,
}

impl Escalator {
    /// An escalator without maintenance windows (tests of other services).
    pub fn new(store: Store, engine: Arc<Engine>, live: Arc<Live>) -> Arc<Self> {
        let maintenance = Maintenance::unloaded(store.clone(), Arc::clone(&live));
        Self::with_maintenance(store, engine, live, maintenance)
    }

    /// An escalator that holds the incidents `maintenance`'s windows hold.
    pub fn with_maintenance(
        store: Store,
        engine: Arc<Engine>,
        live: Arc<Live>,
        maintenance: Arc<Maintenance>,
    ) -> Arc<Self> {
        Arc::new(Escalator {
            store,
            engine,
            live,
            maintenance,
            clocks: Mutex::new(HashMap::new()),
            wake: Notify::new(),
        })
    }

    /// Becoming the leader: the clocks are read again from their checkpoints (another
    /// instance may have run them meanwhile).
    pub async fn resume(&self) {
        self.clocks.lock().await.clear();
        self.wake();
    }

    /// New or resolved incidents, a reload: look again now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    fn runs_when_acked(&self, policy: &str) -> bool {
        self.live
            .config()
            .policies
            .get(policy)
            .is_some_and(|p| p.until == Until::Resolved)
    }

    /// Runs until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        let mut last_checkpoint = Instant::now();
        loop {
            let wait = match self.pass().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!("escalation: {e}");
                    RETRY
                }
            };
            if last_checkpoint.elapsed() >= CHECKPOINT_EVERY {
                if let Err(e) = self.checkpoint().await {
                    tracing::warn!("cannot store escalation clocks: {e}");
                }
                last_checkpoint = Instant::now();
            }
            let wait = wait.min(CHECKPOINT_EVERY.saturating_sub(last_checkpoint.elapsed()));
            if wait.is_zero() {
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Runs passes until nothing is due now; returns how long until something is (the loop's
    /// body without its sleep, for tests that drive time themselves).
    pub async fn tick(&self) -> Result<Duration, StoreError> {
        loop {
            let wait = self.pass().await?;
            if !wait.is_zero() {
                return Ok(wait);
            }
        }
    }

    /// Writes every clock to the store.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        let clocks: Vec<(i64, i64, i64)> = self
            .clocks
            .lock()
            .await
            .iter()
            .map(|(id, c)| (*id, as_ms(c.elapsed()), as_ms(c.acked())))
            .collect();
        if clocks.is_empty() {
            return Ok(());
        }
        self.store
            .write(Write::Checkpoint(clocks))
            .await
            .map(|_| ())
    }

    /// One look at every open incident: sends what is due (one schedule entry per incident
    /// per pass) and returns how long until the next thing is due.
    async fn pass(&self) -> Result<Duration, StoreError> {
        let incidents = self.store.read(|b| b.open_incidents()).await?;
        let metrics = self.engine.metrics();
        let states: Vec<(String, &'static str)> = (incidents.iter())
            .map(|i| (i.policy.clone(), i.state.as_str()))
            .collect();
        metrics.set_incidents(&states);
        let config = self.live.config();
        let mut clocks = self.clocks.lock().await;
        clocks.retain(|id, _| incidents.iter().any(|i| i.id == *id));
        let mut wait = Duration::MAX;
        for inc in incidents {
            // The policy's step counter exists (at 0) from its first incident on.
            drop(metrics.escalation_steps.get_or_create(&PolicyLabel {
                policy: inc.policy.clone(),
            }));
            let Some(policy) = config.policies.get(&inc.policy) else {
                tracing::warn!(incident = inc.id, policy = %inc.policy, "the incident's policy is no longer configured; it does not escalate");
                continue;
            };
            let runs_when_acked = policy.until == Until::Resolved;
            let clock = clocks
                .entry(inc.id)
                .or_insert_with(|| Clock::load(&inc, runs_when_acked));
            clock.runs_when_acked = runs_when_acked;
            if clock.state != inc.state {
                let e = clock.elapsed();
                clock.rebase(inc.state, e);
            }
            if let Some(left) = self.maintained(&inc, clock).await? {
                wait = wait.min(left);
                continue;
            }
            if inc.state == IncidentState::Acked
                && let Some(timeout) = policy.ack_timeout
            {
                let acked = clock.acked();
                if acked >= timeout {
                    let elapsed = clock.elapsed();
                    let r = self
                        .store
                        .write(Write::Transition {
                            id: inc.id,
                            action: Action::Unack,
                            by: format!("ack timeout ({})", crate::time::humanize(timeout)),
                            elapsed_ms: as_ms(elapsed),
                        })
                        .await?;
                    if let Written::Transitioned(Transitioned::Done { deliveries, .. }) = r {
                        self.enqueue(&deliveries);
                    }
                    clock.rebase(IncidentState::Open, elapsed);
                    wait = Duration::ZERO;
                    continue;
                }
                wait = wait.min(timeout - acked);
            }
            if !clock.running() {
                continue;
            }
            let schedule = policy.schedule();
            let Some(&(due, step)) = usize::try_from(inc.next_step)
                .ok()
                .and_then(|n| schedule.get(n))
            else {
                continue;
            };
            let elapsed = clock.elapsed();
            if due > elapsed {
                wait = wait.min(due - elapsed);
                continue;
            }
            // Rotations resolve by the wall clock at send time; the due time never does.
            let targets =
                routing::step_destinations(&config, &policy.name, step, self.live.clock.now());
            let step_no = i64::try_from(step).unwrap_or(i64::MAX);
            // A storm's incidents share one summary per step (`crate::storm`).
            let write = match inc.storm {
                Some(storm) => Write::Storm(StormWrite::FireStep {
                    id: inc.id,
                    storm,
                    expected_step: inc.next_step,
                    step: step_no,
                    elapsed_ms: as_ms(elapsed),
                    destinations: targets.destinations,
                    on_call: targets.on_call,
                    allow_acked: runs_when_acked,
                }),
                None => Write::FireStep {
                    id: inc.id,
                    expected_step: inc.next_step,
                    step: step_no,
                    elapsed_ms: as_ms(elapsed),
                    destinations: targets.destinations,
                    on_call: targets.on_call,
                    allow_acked: runs_when_acked,
                    reopen: false,
                    by: None,
                },
            };
            let r = self.store.write(write).await?;
            if let Written::Fired(deliveries) | Written::Storm(StormWritten::Fired(deliveries)) = r
            {
                if !deliveries.is_empty() {
                    tracing::info!(incident = inc.id, step = step + 1, "escalating");
                    (metrics.escalation_steps)
                        .get_or_create(&PolicyLabel {
                            policy: inc.policy.clone(),
                        })
                        .inc();
                }
                self.enqueue(&deliveries);
            }
            // The next entry may be due too: look again at once.
            wait = Duration::ZERO;
        }
        Ok(wait)
    }

    /// Holds or releases `inc` for maintenance windows: an incident opened in a window (held
    /// since intake) stays held while it is in force and is released once it is over (its
    /// next step, the first, is then due); one escalating when a matching window begins is
    /// held from then on. Returns how long until it should be looked at again while held,
    /// `None` when it escalates.
    async fn maintained(
        &self,
        inc: &Incident,
        clock: &mut Clock,
    ) -> Result<Option<Duration>, StoreError> {
        let now = self.live.clock.now_millis();
        // A window another instance created moments ago: read it before deciding.
        if let Some(window) = inc.maintenance
            && !self.maintenance.knows(window)
        {
            self.maintenance.refresh().await?;
        }
        let holding = match inc.maintenance {
            Some(window) if self.maintenance.is_active(window, now) => Some(window),
            Some(window) => {
                let release = MaintenanceWrite::Release { window };
                self.store.write(Write::Maintenance(release)).await?;
                tracing::info!(
                    incident = inc.id,
                    window,
                    "maintenance window over: the incident escalates"
                );
                None
            }
            None => match self.maintenance.holding(&inc.labels, now) {
                Some(window) => {
                    let hold = MaintenanceWrite::Hold {
                        incident: inc.id,
                        window,
                    };
                    self.store.write(Write::Maintenance(hold)).await?;
                    tracing::info!(
                        incident = inc.id,
                        window,
                        "maintenance window holds the incident"
                    );
                    Some(window)
                }
                None => None,
            },
        };
        clock.hold(holding.is_some());
        Ok(holding.map(|w| {
            self.maintenance
                .time_left(w, now)
                .max(Duration::from_millis(1))
        }))
    }

    fn enqueue(&self, deliveries: &[(String, i64, i64)]) {
        for (dest, id, created) in deliveries {
            self.engine.enqueue(dest, *id, *created);
        }
    }

    /// Acknowledges, un-acknowledges or resolves an incident, announcing it on the
    /// destinations it has already notified.
    pub async fn transition(
        &self,
        id: i64,
        action: Action,
        by: String,
    ) -> Result<Transitioned, StoreError> {
        let to = match action {
            Action::Ack => IncidentState::Acked,
            Action::Unack => IncidentState::Open,
            Action::Resolve => IncidentState::Resolved,
        };
        let (who, done) = (by.clone(), action_done(&action));
        let t = self
            .change(id, to, move |elapsed_ms| Write::Transition {
                id,
                action,
                by,
                elapsed_ms,
            })
            .await?;
        log_human_action(id, done, &who, &t);
        Ok(t)
    }

    /// Re-sync: resolves an incident Alertmanager no longer has, unless its group received
    /// an alert after the poll started (see [`Write::ResolveStale`]).
    pub async fn resolve_stale(
        &self,
        id: i64,
        by: String,
        after_event: i64,
        after_ms: i64,
    ) -> Result<Transitioned, StoreError> {
        self.change(id, IncidentState::Resolved, move |elapsed_ms| {
            Write::ResolveStale {
                id,
                by,
                elapsed_ms,
                after_event,
                after_ms,
            }
        })
        .await
    }

    /// Applies `write` (given the escalation time) under the clocks' lock, queues its
    /// notices and moves the incident's clock to `to`.
    async fn change(
        &self,
        id: i64,
        to: IncidentState,
        write: impl FnOnce(i64) -> Write,
    ) -> Result<Transitioned, StoreError> {
        let mut clocks = self.clocks.lock().await;
        let elapsed = match clocks.get(&id) {
            Some(c) => c.elapsed(),
            None => match self.store.read(move |b| b.incident(id)).await? {
                Some(i) => ms(i.elapsed_ms),
                None => return Ok(Transitioned::NotFound),
            },
        };
        let r = self.store.write(write(as_ms(elapsed))).await?;
        let Written::Transitioned(t) = r else {
            return Err(StoreError::Corrupt(
                "unexpected reply to a transition".into(),
            ));
        };
        if let Transitioned::Done { deliveries, .. } = &t {
            self.enqueue(deliveries);
            if to == IncidentState::Resolved {
                clocks.remove(&id);
            } else if let Some(c) = clocks.get_mut(&id) {
                c.rebase(to, elapsed);
            }
        }
        drop(clocks);
        self.wake();
        Ok(t)
    }

    /// Acknowledges a storm's incidents in one write under the clocks' lock: all of them or,
    /// should the write fail, none. Quiet: the storm announces it once.
    pub async fn ack_all(
        &self,
        ids: &[i64],
        by: String,
    ) -> Result<Vec<(i64, Transitioned)>, StoreError> {
        let mut clocks = self.clocks.lock().await;
        let mut at = std::collections::BTreeMap::new();
        for &id in ids {
            let elapsed = match clocks.get(&id) {
                Some(c) => c.elapsed(),
                None => match self.store.read(move |b| b.incident(id)).await? {
                    Some(i) => ms(i.elapsed_ms),
                    None => continue,
                },
            };
            at.insert(id, elapsed);
        }
        let incidents = at.iter().map(|(id, e)| (*id, as_ms(*e))).collect();
        let r = self.store.write(Write::AckAll { incidents, by }).await?;
        let Written::TransitionedAll(all) = r else {
            return Err(StoreError::Corrupt(
                "unexpected reply to a storm ack".into(),
            ));
        };
        for (id, t) in &all {
            if let Transitioned::Done { deliveries, .. } = t {
                self.enqueue(deliveries);
                if let (Some(c), Some(e)) = (clocks.get_mut(id), at.get(id)) {
                    c.rebase(IncidentState::Acked, *e);
                }
            }
        }
        drop(clocks);
        self.wake();
        Ok(all)
    }

    /// Sends the next step of the schedule now (re-opening an acknowledged incident), `by`
    /// naming who asked (kept in the incident's record). Later steps keep their spacing: the
    /// escalation time jumps to the sent step's `after:`.
    pub async fn escalate(&self, id: i64, by: &str) -> Result<Escalated, StoreError> {
        let mut clocks = self.clocks.lock().await;
        let Some(inc) = self.store.read(move |b| b.incident(id)).await? else {
            return Ok(Escalated::NotFound);
        };
        if inc.state == IncidentState::Resolved {
            return Ok(Escalated::Resolved);
        }
        let config = self.live.config();
        let Some(policy) = config.policies.get(&inc.policy) else {
            return Ok(Escalated::NoFurtherStep);
        };
        let schedule = policy.schedule();
        let Some(&(due, step)) = usize::try_from(inc.next_step)
            .ok()
            .and_then(|n| schedule.get(n))
        else {
            return Ok(Escalated::NoFurtherStep);
        };
        let runs_when_acked = self.runs_when_acked(&inc.policy);
        let elapsed = clocks
            .get(&id)
            .map_or(ms(inc.elapsed_ms), Clock::elapsed)
            .max(due);
        let targets =
            routing::step_destinations(&config, &policy.name, step, self.live.clock.now());
        let r = self
            .store
            .write(Write::FireStep {
                id,
                expected_step: inc.next_step,
                step: i64::try_from(step).unwrap_or(i64::MAX),
                elapsed_ms: as_ms(elapsed),
                destinations: targets.destinations,
                on_call: targets.on_call,
                allow_acked: true,
                reopen: true,
                by: Some(by.to_owned()),
            })
            .await?;
        let Written::Fired(deliveries) = r else {
            return Err(StoreError::Corrupt("unexpected reply to a step".into()));
        };
        self.enqueue(&deliveries);
        let clock = clocks
            .entry(id)
            .or_insert_with(|| Clock::load(&inc, runs_when_acked));
        clock.rebase(IncidentState::Open, elapsed);
        drop(clocks);
        self.wake();
        Ok(Escalated::Sent {
            step,
            deliveries: deliveries.len(),
        })
    }
}

/// What `action` does, as the log says it.
fn action_done(action: &Action) -> &'static str {
    match action {
        Action::Ack => "acknowledged",
        Action::Unack => "un-acknowledged",
        Action::Resolve => "resolved",
    }
}

/// The journal's line for a human's ack, un-ack or resolve: the incident, what was done, and
/// `by` (who, and through which channel: "alice via API from 10.0.0.7", "ack link from …",
/// "bob via Telegram", "Alice via SMS from +44…").
fn log_human_action(id: i64, done: &str, by: &str, t: &Transitioned) {
    match t {
        Transitioned::Done { from, deliveries } => tracing::info!(
            incident = id,
            action = done,
            by,
            from = from.as_str(),
            notices = deliveries.len(),
            "incident {done} by hand"
        ),
        Transitioned::Unchanged(state) => tracing::info!(
            incident = id,
            action = done,
            by,
            state = state.as_str(),
            "incident already {}: nothing to do",
            match state {
                IncidentState::Acked => "acknowledged",
                other => other.as_str(),
            }
        ),
        Transitioned::NotFound => {
            tracing::info!(incident = id, action = done, by, "no such incident");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{MapSecrets, parse};
    use crate::metrics::{CommitMetrics, Metrics};
    use crate::payload::{AlertEvent, Labels, Status};
    use crate::store::sqlite::Sqlite;
    use crate::store::{DeliveryState, RouteRef, RoutedEvent};

    const M: Duration = Duration::from_secs(60);

    struct Rig {
        esc: Arc<Escalator>,
        store: Store,
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        live: Arc<Live>,
    }

    fn config(policy_extra: &str) -> crate::config::Config {
        parse(
            &format!(
                "storage: {{ sqlite: x }}\nchannels:\n  a: {{ type: webhook, url: 'http://127.0.0.1:9/a' }}\n  b: {{ type: webhook, url: 'http://127.0.0.1:9/b' }}\n  c: {{ type: webhook, url: 'http://127.0.0.1:9/c' }}\n\
                 policies:\n  p:\n    steps: [ {{ notify: [a] }}, {{ after: 10m, notify: [b] }}, {{ after: 30m, notify: [c, b] }} ]\n{policy_extra}\
                 routes: [ {{ policy: p }} ]\n"
            ),
            Path::new("/"),
            &MapSecrets::default(),
        )
        .expect("config")
    }

    fn start(path: &Path, live: Arc<Live>) -> (Arc<Escalator>, Store) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (metrics, _) = Metrics::new();
        let (store, _thread) = Store::start(
            // The store stamps rows with the same wall clock the tests make jump.
            Sqlite::open(path)
                .expect("db")
                .with_clock(live.clock.clone()),
            CommitMetrics(Arc::clone(&metrics)),
        )
        .expect("store");
        let engine = Engine::new(crate::delivery::EngineParts::for_tests(
            store.clone(),
            metrics,
            Arc::clone(&live),
        ));
        (Escalator::new(store.clone(), engine, live), store)
    }

    fn rig(policy_extra: &str) -> Rig {
        rig_with(config(policy_extra))
    }

    fn rig_with(config: crate::config::Config) -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("relay.db");
        let live = Arc::new(Live::new("relay.yml".into(), config));
        let (esc, store) = start(&path, Arc::clone(&live));
        Rig {
            esc,
            store,
            _dir: dir,
            path,
            live,
        }
    }

    fn event(status: Status) -> AlertEvent {
        AlertEvent {
            status,
            fingerprint: "f1".into(),
            labels: Labels::from([("alertname".into(), "UpsOnBattery".into())]),
            annotations: Labels::new(),
            starts_at: 10,
            ends_at: None,
            generator_url: String::new(),
            external_url: String::new(),
            receiver: "relay".into(),
            group_key: "{}:{alertname=\"UpsOnBattery\"}".into(),
        }
    }

    impl Rig {
        async fn fire(&self) -> i64 {
            self.fire_at(10).await
        }

        async fn fire_at(&self, starts_at: i64) -> i64 {
            let o = self
                .store
                .ingest(vec![RoutedEvent {
                    event: AlertEvent {
                        starts_at,
                        ..event(Status::Firing)
                    },
                    destinations: vec!["a".into()],
                    routes: vec![RouteRef {
                        route: "#1".into(),
                        policy: "p".into(),
                    }],
                    group_resolved: false,
                    on_call: Default::default(),
                    no_resolved: Default::default(),
                    maintenance: None,
                }])
                .await
                .expect("ingest");
            assert_eq!(o.opened.len(), 1);
            o.opened[0]
        }

        async fn resolve_from_alertmanager(&self) {
            let o = self
                .store
                .ingest(vec![RoutedEvent {
                    // Another startsAt than the firing event: still reaches every destination
                    // the incident reached.
                    event: AlertEvent {
                        starts_at: 11,
                        ..event(Status::Resolved)
                    },
                    destinations: vec!["a".into()],
                    routes: Vec::new(),
                    group_resolved: true,
                    on_call: Default::default(),
                    no_resolved: Default::default(),
                    maintenance: None,
                }])
                .await
                .expect("ingest");
            assert_eq!(o.resolved, 1);
        }

        /// Moves paused time forward by `d`, running every pass the escalator loop would.
        async fn advance(&self, d: Duration) {
            let mut left = d;
            loop {
                let wait = self.esc.tick().await.expect("tick");
                if left.is_zero() {
                    return;
                }
                let step = wait.min(left);
                tokio::time::advance(step).await;
                left -= step;
                self.esc.checkpoint().await.expect("checkpoint");
            }
        }

        /// (destination, step) of every step delivery, and the notices' destinations.
        async fn sent(&self, id: i64) -> (Vec<(String, i64)>, Vec<String>) {
            let d = self
                .store
                .read(move |b| b.incident_deliveries(id))
                .await
                .expect("read");
            let steps = d
                .iter()
                .filter(|x| x.3.is_none())
                .map(|x| (x.0.clone(), x.1))
                .collect();
            let notices = d
                .iter()
                .filter(|x| x.3.is_some())
                .map(|x| x.0.clone())
                .collect();
            assert!(d.iter().all(|x| x.2 == DeliveryState::Pending));
            (steps, notices)
        }

        async fn state(&self, id: i64) -> Incident {
            self.store
                .read(move |b| b.incident(id))
                .await
                .expect("read")
                .expect("exists")
        }
    }

    fn steps(list: &[(&str, i64)]) -> Vec<(String, i64)> {
        list.iter().map(|(d, s)| ((*d).to_owned(), *s)).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn steps_fire_on_time_once_each_and_stop_at_the_end() {
        let r = rig("");
        let id = r.fire().await;
        r.advance(10 * M - Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0, steps(&[("a", 0)]));
        r.advance(Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0, steps(&[("a", 0), ("b", 1)]));
        r.advance(20 * M).await;
        let all = steps(&[("a", 0), ("b", 1), ("c", 2), ("b", 2)]);
        assert_eq!(r.sent(id).await.0, all);
        r.advance(600 * M).await;
        assert_eq!(r.sent(id).await.0, all);
        assert_eq!(r.state(id).await.next_step, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn incidents_by_state_and_steps_sent_are_counted() {
        let r = rig("");
        let id = r.fire().await;
        let text = || r.esc.engine.metrics().encode();
        r.advance(11 * M).await;
        // One step after the first (b at 10m) so far; the first went out at the opening.
        assert!(
            text().contains("alert_relay_incidents{policy=\"p\",state=\"open\"} 1\n"),
            "{}",
            text()
        );
        assert!(text().contains("alert_relay_escalation_steps_total{policy=\"p\"} 1\n"));
        r.esc
            .transition(id, Action::Ack, "alice".into())
            .await
            .expect("ack");
        r.advance(M).await;
        let t = text();
        assert!(
            t.contains("alert_relay_incidents{policy=\"p\",state=\"open\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("alert_relay_incidents{policy=\"p\",state=\"acked\"} 1\n"),
            "{t}"
        );
        r.esc
            .transition(id, Action::Resolve, "alice".into())
            .await
            .expect("resolve");
        r.advance(M).await;
        let t = text();
        assert!(
            t.contains("alert_relay_incidents{policy=\"p\",state=\"acked\"} 0\n"),
            "{t}"
        );
        assert!(
            t.contains("alert_relay_escalation_steps_total{policy=\"p\"} 1\n"),
            "{t}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn ack_before_a_step_cancels_it_and_is_announced_once() {
        let r = rig("");
        let id = r.fire().await;
        r.advance(9 * M).await;
        let t = r
            .esc
            .transition(id, Action::Ack, "alice via API from 10.0.0.7".into())
            .await
            .expect("ack");
        assert!(
            matches!(t, Transitioned::Done { from: IncidentState::Open, ref deliveries } if deliveries.len() == 1)
        );
        // A duplicate ack changes nothing and announces nothing.
        let t = r
            .esc
            .transition(id, Action::Ack, "bob".into())
            .await
            .expect("ack");
        assert_eq!(t, Transitioned::Unchanged(IncidentState::Acked));
        r.advance(300 * M).await;
        let (sent, notices) = r.sent(id).await;
        assert_eq!(sent, steps(&[("a", 0)]));
        assert_eq!(notices, ["a"]);
        let i = r.state(id).await;
        assert_eq!(i.state, IncidentState::Acked);
        assert_eq!(i.acked_by.as_deref(), Some("alice via API from 10.0.0.7"));
        // The clock stopped at the ack: an un-ack resumes with 1 minute to go.
        assert_eq!(i.elapsed_ms, as_ms(9 * M));
        r.esc
            .transition(id, Action::Unack, "alice".into())
            .await
            .expect("unack");
        r.advance(M - Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0, steps(&[("a", 0)]));
        r.advance(Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0, steps(&[("a", 0), ("b", 1)]));
    }

    #[tokio::test(start_paused = true)]
    async fn ack_after_a_step_cancels_the_rest_and_tells_everyone_notified() {
        let r = rig("");
        let id = r.fire().await;
        r.advance(11 * M).await;
        r.esc
            .transition(id, Action::Ack, "sms".into())
            .await
            .expect("ack");
        r.advance(300 * M).await;
        let (sent, notices) = r.sent(id).await;
        assert_eq!(sent, steps(&[("a", 0), ("b", 1)]));
        assert_eq!(notices, ["a", "b"]);
    }

    #[tokio::test(start_paused = true)]
    async fn alertmanager_resolve_closes_an_acked_or_open_incident() {
        let r = rig("");
        let id = r.fire().await;
        r.advance(12 * M).await;
        r.resolve_from_alertmanager().await;
        r.esc.wake();
        r.advance(300 * M).await;
        assert_eq!(r.sent(id).await.0, steps(&[("a", 0), ("b", 1)]));
        let i = r.state(id).await;
        assert_eq!(i.state, IncidentState::Resolved);
        assert_eq!(i.resolved_by.as_deref(), Some("Alertmanager"));
        // The resolved alert went to both destinations the incident reached.
        let resolved = r
            .store
            .read(|b| b.pending_destinations())
            .await
            .expect("read");
        let mut resolved: Vec<(String, i64)> = resolved;
        resolved.sort();
        assert_eq!(resolved, [("a".to_owned(), 2), ("b".to_owned(), 2)]);
        // A new firing of the same group is a new incident.
        let id2 = r.fire_at(20).await;
        assert_ne!(id, id2);
    }

    #[tokio::test(start_paused = true)]
    async fn repeat_reruns_the_last_step_while_unacknowledged() {
        let r = rig("    repeat: { every: 1h, times: 2 }\n");
        let id = r.fire().await;
        r.advance(30 * M + 60 * M).await;
        assert_eq!(
            r.sent(id).await.0,
            steps(&[("a", 0), ("b", 1), ("c", 2), ("b", 2), ("c", 2), ("b", 2)])
        );
        r.advance(1000 * M).await;
        assert_eq!(r.sent(id).await.0.len(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn until_resolved_keeps_escalating_after_an_ack() {
        let r = rig("    until: resolved\n");
        let id = r.fire().await;
        r.esc
            .transition(id, Action::Ack, "alice".into())
            .await
            .expect("ack");
        r.advance(31 * M).await;
        assert_eq!(r.sent(id).await.0.len(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn ack_timeout_rearms_escalation() {
        let r = rig("    ack_timeout: 15m\n");
        let id = r.fire().await;
        r.advance(5 * M).await;
        r.esc
            .transition(id, Action::Ack, "alice".into())
            .await
            .expect("ack");
        r.advance(15 * M - Duration::from_secs(1)).await;
        assert_eq!(r.state(id).await.state, IncidentState::Acked);
        r.advance(Duration::from_secs(1)).await;
        let i = r.state(id).await;
        assert_eq!(i.state, IncidentState::Open);
        // Escalation time resumes at 5 minutes: step 2 is 5 minutes away.
        r.advance(5 * M - Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0.len(), 1);
        r.advance(Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn escalate_now_and_manual_resolve() {
        let r = rig("");
        let id = r.fire().await;
        r.advance(M).await;
        assert_eq!(
            r.esc.escalate(id, "alice").await.expect("escalate"),
            Escalated::Sent {
                step: 1,
                deliveries: 1
            }
        );
        // Later steps keep their spacing from the sent one (at 10m): step 3 at 30m.
        r.advance(20 * M - Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0.len(), 2);
        r.advance(Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0.len(), 4);
        assert_eq!(
            r.esc.escalate(id, "alice").await.expect("escalate"),
            Escalated::NoFurtherStep
        );
        let t = r
            .esc
            .transition(id, Action::Resolve, "alice".into())
            .await
            .expect("resolve");
        assert!(matches!(t, Transitioned::Done { .. }));
        assert_eq!(
            r.esc.escalate(id, "alice").await.expect("escalate"),
            Escalated::Resolved
        );
        assert_eq!(
            r.esc
                .transition(999, Action::Ack, "x".into())
                .await
                .expect("ack"),
            Transitioned::NotFound
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_resumes_with_the_elapsed_time() {
        let r = rig("");
        let id = r.fire().await;
        r.advance(7 * M).await;
        // Stop: the last checkpoint is at most CHECKPOINT_EVERY old (here: exact).
        let Rig {
            esc,
            store,
            _dir,
            path,
            live,
        } = r;
        drop(esc);
        drop(store);
        // The relay is down for a day: that time does not count.
        tokio::time::advance(24 * 60 * M).await;
        let (esc, store) = start(&path, Arc::clone(&live));
        let r = Rig {
            esc,
            store,
            _dir,
            path,
            live,
        };
        assert_eq!(r.state(id).await.elapsed_ms, as_ms(7 * M));
        r.advance(3 * M - Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0.len(), 1);
        r.advance(Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0, steps(&[("a", 0), ("b", 1)]));
    }

    #[tokio::test]
    async fn a_step_is_written_once_even_if_fired_twice() {
        let r = rig("");
        let id = r.fire().await;
        let fire = || Write::FireStep {
            id,
            expected_step: 1,
            step: 1,
            elapsed_ms: 0,
            destinations: vec!["b".into()],
            on_call: Default::default(),
            allow_acked: false,
            reopen: false,
            by: None,
        };
        let first = r.store.write(fire()).await.expect("fire");
        let second = r.store.write(fire()).await.expect("fire");
        assert!(matches!(first, Written::Fired(ref d) if d.len() == 1));
        assert!(matches!(second, Written::Fired(ref d) if d.is_empty()));
    }

    /// Sets the relay's wall clock to `at` (RFC 3339), as NTP stepping the clock would.
    fn set_wall_clock(live: &Live, at: &str) {
        let target = crate::time::parse_rfc3339(at).expect("time") / 1_000_000;
        live.clock.jump(target - live.clock.now_millis());
    }

    /// Steps a (at once), the rotation (10m), a and the rotation (30m); the rotation is daily at
    /// 09:00 Berlin time from 2025-01-01, alice on even days, bob on odd ones.
    fn rotation_rig() -> Rig {
        let c = parse(
            "storage: { sqlite: x }\nchannels:\n  a: { type: webhook, url: 'http://127.0.0.1:9/a' }\n  alice: { type: webhook, url: 'http://127.0.0.1:9/alice' }\n  bob: { type: webhook, url: 'http://127.0.0.1:9/bob' }\n\
             rotations:\n  primary:\n    time_zone: Europe/Berlin\n    handover: '09:00'\n    shift: 1d\n    start: 2025-01-01\n    people: [ { name: alice, notify: [alice] }, { name: bob, notify: [bob] } ]\n\
             policies:\n  p:\n    steps: [ { notify: [a] }, { after: 10m, notify: ['rotation:primary'] }, { after: 30m, notify: [a, 'rotation:primary'] } ]\n\
             routes: [ { policy: p } ]\n",
            Path::new("/"),
            &MapSecrets::default(),
        )
        .expect("config");
        rig_with(c)
    }

    #[tokio::test(start_paused = true)]
    async fn a_rotation_step_hands_over_at_local_time_on_the_dst_day() {
        let r = rotation_rig();
        // 2026-03-29, spring forward in Berlin: day 452 (alice) starts at 09:00 CEST = 07:00 UTC
        // (with last winter's offset it would be 08:00 UTC).
        set_wall_clock(&r.live, "2026-03-29T06:40:00Z");
        let id = r.fire().await;
        r.advance(10 * M - Duration::from_secs(1)).await;
        // Paused tokio time does not move the wall clock: move it along by hand.
        set_wall_clock(&r.live, "2026-03-29T06:59:59Z");
        r.advance(Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0, steps(&[("a", 0), ("bob", 1)]));
        r.advance(20 * M - Duration::from_secs(1)).await;
        set_wall_clock(&r.live, "2026-03-29T07:00:00Z");
        r.advance(Duration::from_secs(1)).await;
        assert_eq!(
            r.sent(id).await.0,
            steps(&[("a", 0), ("bob", 1), ("a", 2), ("alice", 2)])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn wall_clock_jumps_move_no_step_and_rotations_follow_the_new_wall_time() {
        let r = rotation_rig();
        let signer = crate::render::ack::Signer::new(vec![7; 32], None);
        let now_s = || r.live.clock.now_millis() / 1000;
        // A Pi that booted with a clock a year behind opens an incident.
        set_wall_clock(&r.live, "2025-03-28T12:00:00Z");
        let id = r.fire().await;
        let stale_token = signer.token(id, now_s());
        r.advance(5 * M).await;

        // NTP steps the clock forward a year: nothing pending fires early.
        set_wall_clock(&r.live, "2026-03-28T12:05:00Z");
        r.advance(5 * M - Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0, steps(&[("a", 0)]));
        // Ack links expire by the wall clock: the stale link is now a year old.
        assert_eq!(
            signer.verify(&stale_token, now_s()),
            Err(crate::render::ack::TokenError::Expired)
        );
        let fresh_token = signer.token(id, now_s());
        r.advance(Duration::from_secs(1)).await;
        // Step 2 is on time, and the rotation is looked up at the new wall time: 2026-03-28 is
        // day 451 since the start (bob), 2025-03-28 day 86 (alice).
        assert_eq!(r.sent(id).await.0, steps(&[("a", 0), ("bob", 1)]));
        // Rows are stamped with the new wall time (which paused tokio time does not move).
        let bob = r.store.pending("bob".into()).await.expect("pending");
        let stamped = crate::time::parse_rfc3339("2026-03-28T12:05:00Z").expect("time") / 1_000_000;
        assert!((bob[0].created_at_ms - stamped).abs() < 60_000);
        r.advance(5 * M).await;

        // A wrong correction steps it back a year: nothing pending is delayed.
        set_wall_clock(&r.live, "2025-03-28T12:15:00Z");
        r.advance(15 * M - Duration::from_secs(1)).await;
        assert_eq!(r.sent(id).await.0.len(), 2);
        r.advance(Duration::from_secs(1)).await;
        assert_eq!(
            r.sent(id).await.0,
            steps(&[("a", 0), ("bob", 1), ("a", 2), ("alice", 2)])
        );
        assert_eq!(r.state(id).await.elapsed_ms, as_ms(30 * M));
        // Both links verify again: the stale one is within its 7 days, the one made in the
        // future now lasts a year longer than 7 days (documented: early or late, never forged).
        assert_eq!(signer.verify(&stale_token, now_s()), Ok(id));
        assert_eq!(signer.verify(&fresh_token, now_s()), Ok(id));

        // Who was paged is recorded and named in the ack notice.
        let paged = r
            .store
            .read(move |b| b.incident_on_call(id))
            .await
            .expect("read");
        assert_eq!(
            paged,
            [
                ("bob".to_owned(), 1, "bob (rotation primary)".to_owned()),
                ("alice".to_owned(), 2, "alice (rotation primary)".to_owned()),
            ]
        );
        r.esc
            .transition(id, Action::Ack, "alice via API".into())
            .await
            .expect("ack");
        let d = r
            .store
            .read(move |b| b.incident_deliveries(id))
            .await
            .expect("read");
        let notice = d.iter().find_map(|x| x.3.clone()).expect("a notice");
        assert!(
            notice.starts_with("Incident #1 acknowledged by alice via API at 2025-03-28T12:1")
                && notice.ends_with("Z; on call: bob (rotation primary), alice (rotation primary)"),
            "{notice}"
        );
    }
}

//! The dead-man's switch: Alertmanager's always-firing `Watchdog` (whatever `deadman.match`
//! selects) is consumed as a heartbeat. When none arrives for `deadman.timeout`, the
//! `deadman.notify` channels hear once that the monitoring pipeline itself is broken; when
//! heartbeats return, they hear that it recovered.
//!
//! Silence is measured with `tokio::time::Instant` (monotonic) from start-up (or from the
//! moment the switch was enabled by a reload), so a relay that restarts into a silent pipeline
//! still notices, and a wall-clock step changes nothing. Both messages are an alert event of
//! the relay's own (`MonitoringPipelineDown`, firing then resolved) committed to the outbox
//! together with the switch's state in `meta`, so they are delivered like every alert
//! (retries, threading of the resolved message) and a restart neither trips twice nor
//! forgets to announce the recovery.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::Live;
use crate::delivery::Engine;
use crate::metrics::Metrics;
use crate::payload::{AlertEvent, Labels, Status};
use crate::store::{RoutedEvent, Store, StoreError, Write, Written};
use crate::time::{format_rfc3339, humanize, now_millis};

/// `meta` key of the stored state.
const META_KEY: &str = "deadman";
/// The relay's own alert: its fingerprint (dedup key with `startsAt`) and group.
const FINGERPRINT: &str = "alertrelaydeadman";
const GROUP_KEY: &str = "alert-relay:deadman";
pub const ALERTNAME: &str = "MonitoringPipelineDown";
/// Pause after the store failed.
const RETRY: Duration = Duration::from_secs(1);

/// What survives a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Stored {
    /// `startsAt` (unix ns) of the firing `MonitoringPipelineDown` while tripped.
    tripped_at: Option<i64>,
    /// Wall-clock time (unix ms) and a description of the last heartbeat.
    last_heartbeat_ms: Option<i64>,
    last_heartbeat: Option<String>,
    /// Alertmanager's `externalURL` from the last heartbeat, for the messages' links.
    external_url: String,
}

#[derive(Debug)]
struct State {
    stored: Stored,
    /// Where the current silence began: start-up, enabling, or the last heartbeat.
    since: Instant,
    /// A heartbeat arrived that the switch has not acted on yet.
    fresh: bool,
    enabled: bool,
    started_ms: i64,
}

#[derive(Debug)]
pub struct Deadman {
    store: Store,
    engine: Arc<Engine>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    wake: Notify,
}

impl Deadman {
    /// Loads the stored state; the silence timer starts now.
    pub async fn start(
        store: Store,
        engine: Arc<Engine>,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, StoreError> {
        let stored = store
            .read(|b| b.meta(META_KEY))
            .await?
            .and_then(|v| match serde_json::from_slice::<Stored>(&v) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!("stored dead-man's switch state unreadable, starting afresh: {e}");
                    None
                }
            })
            .unwrap_or_default();
        let enabled = live.config().deadman.is_some();
        let d = Deadman {
            store,
            engine,
            live,
            metrics,
            state: Mutex::new(State {
                stored,
                since: Instant::now(),
                fresh: false,
                enabled,
                started_ms: now_millis(),
            }),
            wake: Notify::new(),
        };
        d.publish(&d.lock().stored);
        Ok(Arc::new(d))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A reload may have enabled or changed the switch.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// An alert matching `deadman.match` arrived. Only a firing one is a heartbeat: a
    /// resolved `Watchdog` means Prometheus stopped sending it.
    pub fn heartbeat(&self, e: &AlertEvent) {
        if e.status != Status::Firing {
            tracing::warn!(
                "Alertmanager resolved the heartbeat alert: Prometheus no longer sends it"
            );
            return;
        }
        let now = now_millis();
        let name = e.labels.get("alertname").map_or("heartbeat", String::as_str);
        let from = if e.external_url.is_empty() {
            format!("receiver {}", e.receiver)
        } else {
            e.external_url.clone()
        };
        {
            let mut st = self.lock();
            st.since = Instant::now();
            st.fresh = true;
            st.stored.last_heartbeat_ms = Some(now);
            st.stored.last_heartbeat = Some(format!("{name} from {from}"));
            st.stored.external_url.clone_from(&e.external_url);
            self.publish(&st.stored);
        }
        self.wake();
    }

    fn publish(&self, s: &Stored) {
        #[allow(clippy::cast_precision_loss)]
        self.metrics
            .deadman_last_heartbeat
            .set(s.last_heartbeat_ms.map_or(0.0, |ms| ms as f64 / 1000.0));
        self.metrics
            .deadman_tripped
            .set(i64::from(s.tripped_at.is_some()));
    }

    /// Runs until the task is aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            let wait = match self.tick().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::error!("dead-man's switch: {e}");
                    RETRY
                }
            };
            tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(86_400))) => {}
                () = self.wake.notified() => {}
            }
        }
    }

    /// Acts on what happened (a heartbeat, the timeout passing) and returns how long until
    /// the timeout could pass (the loop's body without its sleep, for tests).
    pub async fn tick(&self) -> Result<Duration, StoreError> {
        let config = self.live.config();
        let Some(dm) = &config.deadman else {
            self.lock().enabled = false;
            return Ok(Duration::MAX);
        };
        let (fresh, silence, stored) = {
            let mut st = self.lock();
            if !st.enabled {
                // Time while the switch was off does not count as silence.
                st.enabled = true;
                st.since = Instant::now();
            }
            (
                std::mem::take(&mut st.fresh),
                st.since.elapsed(),
                st.stored.clone(),
            )
        };
        let destinations = dm.destinations(&config.channels);
        if fresh {
            let mut next = stored.clone();
            let events = match stored.tripped_at {
                Some(starts_at) => {
                    next.tripped_at = None;
                    tracing::info!("heartbeats are back: the monitoring pipeline recovered");
                    let summary = "Heartbeats arrive again: the monitoring pipeline works";
                    vec![self.event(&next, Status::Resolved, starts_at, summary, &destinations)]
                }
                None => Vec::new(),
            };
            if let Err(e) = self.commit(&next, events).await {
                self.lock().fresh = true;
                return Err(e);
            }
            let mut st = self.lock();
            st.stored.tripped_at = None;
            self.publish(&st.stored);
            return Ok(dm.timeout.saturating_sub(st.since.elapsed()));
        }
        if stored.tripped_at.is_some() {
            return Ok(Duration::MAX);
        }
        if silence < dm.timeout {
            return Ok(dm.timeout - silence);
        }
        let starts_at = now_millis().saturating_mul(1_000_000);
        let mut next = stored.clone();
        next.tripped_at = Some(starts_at);
        tracing::error!(
            silence = %humanize(silence),
            last = next.last_heartbeat.as_deref().unwrap_or("none"),
            "no heartbeat within deadman.timeout: the monitoring pipeline is broken"
        );
        let summary = format!(
            "No heartbeat from Alertmanager for {}: the monitoring pipeline (Prometheus, Alertmanager or the way to alert-relay) is broken; alerts may not reach you",
            humanize(dm.timeout)
        );
        let event = self.event(&next, Status::Firing, starts_at, &summary, &destinations);
        self.commit(&next, vec![event]).await?;
        let mut st = self.lock();
        st.stored.tripped_at = Some(starts_at);
        self.publish(&st.stored);
        Ok(Duration::MAX)
    }

    /// The relay's own alert about the pipeline.
    fn event(
        &self,
        s: &Stored,
        status: Status,
        starts_at: i64,
        summary: &str,
        destinations: &[String],
    ) -> RoutedEvent {
        let last = match (s.last_heartbeat_ms, &s.last_heartbeat) {
            (Some(ms), Some(what)) => format!(
                "Last heartbeat: {what} at {}",
                format_rfc3339(ms.saturating_mul(1_000_000))
            ),
            _ => format!(
                "No heartbeat since alert-relay started at {}",
                format_rfc3339(self.lock().started_ms.saturating_mul(1_000_000))
            ),
        };
        let ends_at =
            (status == Status::Resolved).then(|| now_millis().saturating_mul(1_000_000));
        let labels: Labels = [
            ("alertname", ALERTNAME),
            ("severity", "critical"),
            ("instance", "alert-relay"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        RoutedEvent {
            event: AlertEvent {
                status,
                fingerprint: FINGERPRINT.into(),
                labels,
                annotations: [
                    ("summary".to_owned(), summary.to_owned()),
                    ("description".to_owned(), last),
                ]
                .into(),
                starts_at,
                ends_at,
                generator_url: String::new(),
                external_url: s.external_url.clone(),
                receiver: "alert-relay".into(),
                group_key: GROUP_KEY.into(),
            },
            destinations: destinations.to_vec(),
            routes: Vec::new(),
            group_resolved: false,
        }
    }

    /// Stores the state and the events in one savepoint and queues their deliveries.
    async fn commit(&self, next: &Stored, events: Vec<RoutedEvent>) -> Result<(), StoreError> {
        let value =
            serde_json::to_vec(next).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let w = self
            .store
            .write(Write::SetMeta {
                key: META_KEY.into(),
                value,
                events,
            })
            .await?;
        if let Written::Ingested(o) = w {
            for (dest, id, created) in &o.deliveries {
                self.engine.enqueue(dest, *id, *created);
            }
        }
        Ok(())
    }
}

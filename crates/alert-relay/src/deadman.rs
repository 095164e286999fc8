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

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::delivery::Engine;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::model::record::{DEADMAN_GROUP_KEY, Heartbeat};
use crate::payload::{AlertEvent, Labels, Status};
use crate::store::{RoutedEvent, Store, StoreError, Write, Written};
use crate::time::{format_rfc3339, humanize, now_millis};

/// `meta` key of the stored state.
const META_KEY: &str = "deadman";
/// The relay's own alert: its fingerprint (dedup key with `startsAt`) and group.
const FINGERPRINT: &str = "alertrelaydeadman";
pub const ALERTNAME: &str = "MonitoringPipelineDown";
/// The switch's stored state; an unreadable one starts afresh.
async fn load(store: &Store) -> Result<Stored, StoreError> {
    let stored = store.read(|b| b.meta(META_KEY)).await?;
    Ok(stored
        .and_then(|v| match serde_json::from_slice::<Stored>(&v) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!("stored dead-man's switch state unreadable, starting afresh: {e}");
                None
            }
        })
        .unwrap_or_default())
}

/// The heartbeat an alert matching `deadman.match` is. Only a firing one is: a resolved
/// `Watchdog` means Prometheus stopped sending it (said in the log, and `None`).
pub fn heartbeat_of(e: &AlertEvent) -> Option<Heartbeat> {
    if e.status != Status::Firing {
        tracing::warn!("Alertmanager resolved the heartbeat alert: Prometheus no longer sends it");
        return None;
    }
    let name = e
        .labels
        .get("alertname")
        .map_or("heartbeat", String::as_str);
    let from = if e.external_url.is_empty() {
        format!("receiver {}", e.receiver)
    } else {
        e.external_url.clone()
    };
    Some(Heartbeat {
        at_ms: now_millis(),
        what: format!("{name} from {from}"),
        external_url: e.external_url.clone(),
    })
}

/// Pause after the store failed.
const RETRY: Duration = Duration::from_secs(1);

/// What survives a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Stored {
    /// `startsAt` (unix ns) of the firing `MonitoringPipelineDown` while tripped.
    tripped_at: Option<i64>,
    /// `startsAt` of the last trip, kept after recovery: `startsAt` is half of the alert's
    /// dedup key, so a new trip must be later (same millisecond, or a wall clock stepped back).
    #[serde(default)]
    last_trip_at: Option<i64>,
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
}

#[derive(Debug)]
pub struct Deadman {
    store: Store,
    engine: Arc<Engine>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    wake: Notify,
    /// Wall-clock start-up time (unix ms), for "no heartbeat since …".
    started_ms: i64,
}

impl Deadman {
    /// Loads the stored state; the silence timer starts now.
    pub async fn start(
        store: Store,
        engine: Arc<Engine>,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, StoreError> {
        let stored = load(&store).await?;
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
            }),
            wake: Notify::new(),
            started_ms: now_millis(),
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

    /// Becoming the leader: the state the former leader stored (tripped or not, the last
    /// heartbeat) is read again, and silence counts from now, as at start-up (a follower may
    /// not have seen the heartbeats the former leader got).
    pub async fn resume(&self) -> Result<(), StoreError> {
        let stored = load(&self.store).await?;
        {
            let mut st = self.lock();
            st.stored = stored;
            st.since = Instant::now();
            self.publish(&st.stored);
        }
        self.wake();
        Ok(())
    }

    /// A heartbeat, taken here or (several relays on one database) by another instance.
    pub fn beat(&self, h: &Heartbeat) {
        {
            let mut st = self.lock();
            st.since = Instant::now();
            st.fresh = true;
            st.stored.last_heartbeat_ms = Some(h.at_ms);
            st.stored.last_heartbeat = Some(h.what.clone());
            st.stored.external_url.clone_from(&h.external_url);
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
        let no_resolved = Arc::new(config.no_resolved());
        if fresh {
            let mut next = stored.clone();
            let events = match stored.tripped_at {
                Some(starts_at) => {
                    next.tripped_at = None;
                    tracing::info!("heartbeats are back: the monitoring pipeline recovered");
                    let summary = "Heartbeats arrive again: the monitoring pipeline works";
                    vec![self.event(
                        &next,
                        Status::Resolved,
                        starts_at,
                        summary,
                        &destinations,
                        &no_resolved,
                    )]
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
        let starts_at = now_millis().saturating_mul(1_000_000).max(
            stored
                .last_trip_at
                .map_or(0, |t| t.saturating_add(1_000_000)),
        );
        let mut next = stored.clone();
        next.tripped_at = Some(starts_at);
        next.last_trip_at = Some(starts_at);
        tracing::error!(
            silence = %humanize(silence),
            last = next.last_heartbeat.as_deref().unwrap_or("none"),
            "no heartbeat within deadman.timeout: the monitoring pipeline is broken"
        );
        let summary = format!(
            "No heartbeat from Alertmanager for {}: the monitoring pipeline (Prometheus, Alertmanager or the way to alert-relay) is broken; alerts may not reach you",
            humanize(dm.timeout)
        );
        let event = self.event(
            &next,
            Status::Firing,
            starts_at,
            &summary,
            &destinations,
            &no_resolved,
        );
        self.commit(&next, vec![event]).await?;
        let mut st = self.lock();
        st.stored.tripped_at = Some(starts_at);
        st.stored.last_trip_at = Some(starts_at);
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
        no_resolved: &Arc<BTreeSet<String>>,
    ) -> RoutedEvent {
        let last = match (s.last_heartbeat_ms, &s.last_heartbeat) {
            (Some(ms), Some(what)) => format!(
                "Last heartbeat: {what} at {}",
                format_rfc3339(ms.saturating_mul(1_000_000))
            ),
            _ => format!(
                "No heartbeat since alert-relay started at {}",
                format_rfc3339(self.started_ms.saturating_mul(1_000_000))
            ),
        };
        let ends_at = (status == Status::Resolved).then(|| now_millis().saturating_mul(1_000_000));
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
                group_key: DEADMAN_GROUP_KEY.into(),
            },
            destinations: destinations.to_vec(),
            routes: Vec::new(),
            group_resolved: false,
            on_call: std::collections::BTreeMap::new(),
            no_resolved: Arc::clone(no_resolved),
            maintenance: None,
        }
    }

    /// Stores the state and the events in one savepoint and queues their deliveries.
    async fn commit(&self, next: &Stored, events: Vec<RoutedEvent>) -> Result<(), StoreError> {
        let value = serde_json::to_vec(next).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let w = self
            .store
            .write(Write::SetMeta {
                key: META_KEY.into(),
                value,
                events,
            })
            .await?;
        if let Written::Ingested(o) = w {
            self.engine.enqueue_all(&o.deliveries);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{MapSecrets, parse};
    use crate::metrics::CommitMetrics;
    use crate::store::DeliveryJob;
    use crate::store::sqlite::Sqlite;

    const M: Duration = Duration::from_secs(60);

    fn config() -> crate::config::Config {
        parse(
            "storage: { sqlite: x }\nchannels:\n  a: { type: webhook, url: 'http://127.0.0.1:9/a' }\n  b: { type: webhook, url: 'http://127.0.0.1:9/b' }\n\
             policies: { p: { steps: [ { notify: [a] } ] } }\nroutes: [ { policy: p } ]\n\
             deadman: { timeout: 5m, notify: [a, b] }\n",
            Path::new("/"),
            &MapSecrets::default(),
        )
        .expect("config")
    }

    struct Rig {
        dm: Arc<Deadman>,
        store: Store,
        metrics: Arc<Metrics>,
        _dir: tempfile::TempDir,
    }

    async fn start(path: &Path) -> (Arc<Deadman>, Store, Arc<Metrics>) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (metrics, _) = Metrics::new();
        let (store, _thread) = Store::start(
            Sqlite::open(path).expect("db"),
            CommitMetrics(Arc::clone(&metrics)),
        )
        .expect("store");
        let live = Arc::new(Live::new("relay.yml".into(), config()));
        let engine = Engine::new(crate::delivery::EngineParts::for_tests(
            store.clone(),
            Arc::clone(&metrics),
            Arc::clone(&live),
        ));
        let dm = Deadman::start(store.clone(), engine, live, Arc::clone(&metrics))
            .await
            .expect("start");
        (dm, store, metrics)
    }

    async fn rig() -> Rig {
        rig_in(tempfile::tempdir().expect("tempdir")).await
    }

    /// A relay on `dir`'s database, as it is (a restart, or state seeded by the test).
    async fn rig_in(dir: tempfile::TempDir) -> Rig {
        let path = dir.path().join("relay.db");
        let (dm, store, metrics) = start(&path).await;
        Rig {
            dm,
            store,
            metrics,
            _dir: dir,
        }
    }

    fn watchdog(status: Status) -> AlertEvent {
        AlertEvent {
            status,
            fingerprint: "0123456789abcdef".into(),
            labels: Labels::from([("alertname".into(), "Watchdog".into())]),
            annotations: Labels::new(),
            starts_at: 1,
            ends_at: None,
            generator_url: String::new(),
            external_url: "http://am.example:9093".into(),
            receiver: "relay".into(),
            group_key: "{}:{alertname=\"Watchdog\"}".into(),
        }
    }

    impl Rig {
        /// Stops this relay and starts a new one on its database.
        async fn restart(self) -> Rig {
            let Rig {
                dm,
                store,
                metrics,
                _dir,
            } = self;
            drop((dm, store, metrics));
            rig_in(_dir).await
        }

        /// Moves paused time forward by `d`, running every tick the loop would.
        async fn advance(&self, d: Duration) {
            let mut left = d;
            loop {
                let wait = self.dm.tick().await.expect("tick");
                if left.is_zero() {
                    return;
                }
                let step = wait.min(left);
                tokio::time::advance(step).await;
                left -= step;
            }
        }

        /// Every delivery to destination `a`, oldest first.
        async fn sent(&self) -> Vec<DeliveryJob> {
            let mut out = Vec::new();
            for p in self.store.pending("a".into()).await.expect("pending") {
                out.push(self.store.load(p.id).await.expect("load").expect("exists"));
            }
            assert_eq!(
                self.store.pending("b".into()).await.expect("pending").len(),
                out.len(),
                "both notify channels hear the same"
            );
            out
        }

        fn metric(&self, name: &str) -> String {
            let text = self.metrics.encode();
            text.lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .map(|l| l[name.len() + 1..].to_owned())
                .unwrap_or_default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trips_once_after_the_timeout_from_start_up_and_recovers() {
        let r = rig().await;
        r.advance(5 * M - Duration::from_secs(1)).await;
        assert!(r.sent().await.is_empty());
        assert_eq!(r.metric("alert_relay_deadman_tripped"), "0");
        r.advance(Duration::from_secs(1)).await;
        let sent = r.sent().await;
        assert_eq!(sent.len(), 1);
        let e = &sent[0].event;
        assert_eq!(e.status, Status::Firing);
        assert_eq!(e.labels["alertname"], ALERTNAME);
        assert!(e.annotations["summary"].contains("for 5m"));
        assert!(e.annotations["description"].starts_with("No heartbeat since alert-relay started"));
        assert!(sent[0].incident.is_none(), "no incident, no escalation");
        assert_eq!(r.metric("alert_relay_deadman_tripped"), "1");
        // Still silent for a day: no second message.
        r.advance(24 * 60 * M).await;
        assert_eq!(r.sent().await.len(), 1);
        // Heartbeats return: one recovery, threaded to the firing message.
        r.dm.beat(&heartbeat_of(&watchdog(Status::Firing)).expect("firing"));
        r.advance(Duration::ZERO).await;
        let sent = r.sent().await;
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].event.status, Status::Resolved);
        assert_eq!(sent[1].event.starts_at, sent[0].event.starts_at);
        assert!(sent[1].firing.is_some(), "follows the firing delivery");
        assert_eq!(r.metric("alert_relay_deadman_tripped"), "0");
        assert_ne!(
            r.metric("alert_relay_deadman_last_heartbeat_timestamp_seconds"),
            "0.0"
        );
        // More heartbeats: nothing more to say.
        r.advance(3 * M).await;
        r.dm.beat(&heartbeat_of(&watchdog(Status::Firing)).expect("firing"));
        r.advance(3 * M).await;
        assert_eq!(r.sent().await.len(), 2);
        // Silent again: a new trip, naming the last heartbeat. Little real time has passed,
        // so it may fall in the first trip's millisecond: it must still be a new alert.
        r.advance(2 * M).await;
        let sent = r.sent().await;
        assert_eq!(sent.len(), 3);
        assert!(sent[2].event.starts_at > sent[0].event.starts_at);
        assert!(
            sent[2].event.annotations["description"]
                .starts_with("Last heartbeat: Watchdog from http://am.example:9093 at ")
        );
    }

    /// The last trip is stored an hour in the future (the wall clock has since stepped back):
    /// the next trip must still be a new alert, not a duplicate of that one.
    #[tokio::test(start_paused = true)]
    async fn a_trip_after_a_clock_step_back_is_still_a_new_alert() {
        use crate::store::{Backend as _, Write};
        let dir = tempfile::tempdir().expect("tempdir");
        let ahead = (now_millis() + 3_600_000) * 1_000_000;
        let stored = Stored {
            last_trip_at: Some(ahead),
            ..Stored::default()
        };
        let written = Sqlite::open(&dir.path().join("relay.db"))
            .expect("db")
            .write_batch(vec![Write::SetMeta {
                key: META_KEY.into(),
                value: serde_json::to_vec(&stored).expect("json"),
                events: Vec::new(),
            }]);
        assert!(written.iter().all(Result::is_ok));
        let r = rig_in(dir).await;
        r.advance(5 * M).await;
        let sent = r.sent().await;
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].event.starts_at, ahead + 1_000_000);
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_keep_it_quiet_and_a_resolved_watchdog_is_not_one() {
        let r = rig().await;
        for _ in 0..10 {
            r.advance(4 * M).await;
            r.dm.beat(&heartbeat_of(&watchdog(Status::Firing)).expect("firing"));
        }
        assert!(r.sent().await.is_empty());
        r.advance(4 * M).await;
        assert!(heartbeat_of(&watchdog(Status::Resolved)).is_none());
        r.advance(M).await;
        assert_eq!(r.sent().await.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_neither_trips_twice_nor_forgets_the_recovery() {
        let r = rig().await;
        r.advance(6 * M).await;
        assert_eq!(r.sent().await.len(), 1);
        let r = r.restart().await;
        assert_eq!(r.metric("alert_relay_deadman_tripped"), "1");
        r.advance(60 * M).await;
        assert_eq!(r.sent().await.len(), 1);
        r.dm.beat(&heartbeat_of(&watchdog(Status::Firing)).expect("firing"));
        r.advance(Duration::ZERO).await;
        let sent = r.sent().await;
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[1].event.status, Status::Resolved);
    }

    #[tokio::test(start_paused = true)]
    async fn a_restart_into_a_silent_pipeline_still_notices() {
        let r = rig().await;
        r.dm.beat(&heartbeat_of(&watchdog(Status::Firing)).expect("firing"));
        r.advance(M).await;
        let r = r.restart().await;
        // The timer starts at start-up: 5 minutes after it, not after the last heartbeat.
        r.advance(5 * M - Duration::from_secs(1)).await;
        assert!(r.sent().await.is_empty());
        r.advance(Duration::from_secs(1)).await;
        let sent = r.sent().await;
        assert_eq!(sent.len(), 1);
        assert!(sent[0].event.annotations["description"].starts_with("Last heartbeat: Watchdog"));
    }
}

//! Maintenance windows as a service: the stored windows cached for intake (every webhook asks
//! [`Maintenance::holding`]), the escalator (which holds and releases incidents) and the pages
//! and API that create and end them.
//!
//! Several relays on one PostgreSQL: each instance reads the windows again every
//! [`REFRESH_EVERY`] ([`Maintenance::run`]), so a window created or ended on one is in force on
//! every other within that time; a window's start and end by the clock need no refresh (they
//! are computed from the stored times). The instance that creates or ends a window reads them
//! again at once, and so does the escalator when an incident names a window it has not read
//! yet. A poll rather than a notification: only the leader listens for them, and followers take
//! webhooks too. Alone on SQLite the relay reads them again every [`REFRESH_ALONE`], which only
//! updates the list (a window over for a week leaves it) and the counts.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::live::Live;
use crate::metrics::MaintenanceStats;
use crate::model::maintenance::{MaintenanceWrite, MaintenanceWritten, NewWindow, Window};
use crate::payload::Labels;
use crate::store::{Store, StoreError, Write, Written};

/// How often an instance on a shared database reads the windows again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How often a relay alone on its database reads them again.
pub const REFRESH_ALONE: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct Maintenance {
    store: Store,
    live: Arc<Live>,
    windows: RwLock<Arc<Vec<Window>>>,
}

impl Maintenance {
    /// The service with the stored windows loaded.
    pub async fn start(store: Store, live: Arc<Live>) -> Result<Arc<Self>, StoreError> {
        let m = Self::unloaded(store, live);
        m.refresh().await?;
        Ok(m)
    }

    /// The service before its first [`Self::refresh`]: no window holds anything yet (tests of
    /// other services, which never create one).
    pub fn unloaded(store: Store, live: Arc<Live>) -> Arc<Self> {
        Arc::new(Maintenance {
            store,
            live,
            windows: RwLock::new(Arc::new(Vec::new())),
        })
    }

    /// Reads the windows (and their suppressed counts) from the store again.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let windows = self.store.read(|b| b.maintenance_windows()).await?;
        *self.windows.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(windows);
        Ok(())
    }

    /// The windows in force, to come, and over for less than 7 days, by id (as last read).
    pub fn windows(&self) -> Arc<Vec<Window>> {
        Arc::clone(&self.windows.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stores a validated window; it holds matching alerts from its start on.
    pub async fn create(&self, new: NewWindow) -> Result<Window, StoreError> {
        let written = self
            .store
            .write(Write::Maintenance(MaintenanceWrite::Create(new.clone())))
            .await?;
        let Written::Maintenance(MaintenanceWritten::Created(id)) = written else {
            return Err(StoreError::Corrupt(
                "unexpected reply to a new maintenance window".into(),
            ));
        };
        self.refresh().await?;
        tracing::info!(window = id, matchers = %new.matchers_text, author = %new.author, "maintenance window created");
        let stored = self.windows().iter().find(|w| w.id == id).cloned();
        Ok(stored.unwrap_or_else(|| Window {
            id,
            matchers: new.matchers,
            matchers_text: new.matchers_text,
            starts_ms: new.starts_ms,
            ends_ms: new.ends_ms,
            weekly: new.weekly,
            reason: new.reason,
            author: new.author,
            created_ms: self.live.clock.now_millis(),
            ended_ms: None,
            ended_by: None,
            suppressed: 0,
        }))
    }

    /// Ends window `id` now (a weekly one for good); the incidents it held that are still open
    /// page as usual. False when no such window is in force or to come.
    pub async fn end(&self, id: i64, by: String) -> Result<bool, StoreError> {
        let at = self.live.clock.now_millis();
        let who = by.clone();
        let written = self
            .store
            .write(Write::Maintenance(MaintenanceWrite::End { id, by, at }))
            .await?;
        let Written::Maintenance(MaintenanceWritten::Ended { found, released }) = written else {
            return Err(StoreError::Corrupt(
                "unexpected reply to ending a maintenance window".into(),
            ));
        };
        self.refresh().await?;
        if found {
            tracing::info!(window = id, by = %who, released = released.len(), "maintenance window ended");
        }
        Ok(found)
    }

    /// The window in force at `now_ms` whose matchers match `labels` (the oldest, when several
    /// do), if any.
    pub fn holding(&self, labels: &Labels, now_ms: i64) -> Option<i64> {
        self.windows()
            .iter()
            .find(|w| w.active_at(now_ms) && w.matches(labels))
            .map(|w| w.id)
    }

    /// Whether window `id` is in force at `now_ms` (one no longer listed is not).
    pub fn is_active(&self, id: i64, now_ms: i64) -> bool {
        self.windows()
            .iter()
            .any(|w| w.id == id && w.active_at(now_ms))
    }

    /// How long window `id` stays in force from `now_ms` (zero when it is not).
    pub fn time_left(&self, id: i64, now_ms: i64) -> Duration {
        let end = self
            .windows()
            .iter()
            .find(|w| w.id == id)
            .and_then(|w| w.current_or_next(now_ms))
            .filter(|(start, _)| *start <= now_ms)
            .map_or(now_ms, |(_, end)| end);
        Duration::from_millis(u64::try_from(end - now_ms).unwrap_or(0))
    }

    /// Whether window `id` is among those last read.
    pub fn knows(&self, id: i64) -> bool {
        self.windows().iter().any(|w| w.id == id)
    }

    /// Reads the windows again every `every` ([`REFRESH_EVERY`] on a shared database,
    /// [`REFRESH_ALONE`] on SQLite) until aborted.
    pub async fn run(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.refresh().await {
                tracing::warn!("cannot read the maintenance windows: {e}");
            }
        }
    }
}

impl MaintenanceStats for Maintenance {
    fn maintenance(&self) -> (usize, Vec<(i64, i64)>) {
        let now = self.live.clock.now_millis();
        let windows = self.windows();
        let active = windows.iter().filter(|w| w.active_at(now)).count();
        (
            active,
            windows.iter().map(|w| (w.id, w.suppressed)).collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{MapSecrets, parse};
    use crate::delivery::{Engine, EngineParts};
    use crate::escalation::Escalator;
    use crate::metrics::{CommitMetrics, Metrics};
    use crate::model::maintenance::WindowForm;
    use crate::payload::{AlertEvent, Status};
    use crate::store::sqlite::Sqlite;
    use crate::store::{IncidentState, RouteRef, RoutedEvent};

    const MINUTE: Duration = Duration::from_secs(60);
    const HOUR_MS: i64 = 3_600_000;

    struct Rig {
        maintenance: Arc<Maintenance>,
        esc: Arc<Escalator>,
        store: Store,
        live: Arc<Live>,
        metrics: Arc<Metrics>,
        _dir: tempfile::TempDir,
    }

    async fn rig() -> Rig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = parse(
            "storage: { sqlite: x }\nchannels:\n  a: { type: webhook, url: 'http://127.0.0.1:9/a' }\n  b: { type: webhook, url: 'http://127.0.0.1:9/b' }\n\
             policies:\n  p:\n    steps: [ { notify: [a] }, { after: 10m, notify: [b] } ]\nroutes: [ { policy: p } ]\n",
            Path::new("/"),
            &MapSecrets::default(),
        )
        .expect("config");
        let dir = tempfile::tempdir().expect("tempdir");
        let live = Arc::new(Live::new("relay.yml".into(), config));
        let (metrics, _) = Metrics::new();
        let db = Sqlite::open(&dir.path().join("relay.db"))
            .expect("db")
            .with_clock(live.clock.clone());
        let (store, _thread) =
            Store::start(db, CommitMetrics(Arc::clone(&metrics))).expect("store");
        let engine = Engine::new(EngineParts::for_tests(
            store.clone(),
            Arc::clone(&metrics),
            Arc::clone(&live),
        ));
        let maintenance = Maintenance::start(store.clone(), Arc::clone(&live))
            .await
            .expect("maintenance");
        metrics.watch_maintenance(&(Arc::clone(&maintenance) as Arc<dyn MaintenanceStats>));
        let esc = Escalator::with_maintenance(
            store.clone(),
            engine,
            Arc::clone(&live),
            Arc::clone(&maintenance),
        );
        Rig {
            maintenance,
            esc,
            store,
            live,
            metrics,
            _dir: dir,
        }
    }

    impl Rig {
        /// A window on `site="lab"` from `start` (RFC 3339, empty: now) for `duration`.
        async fn window(&self, start: &str, duration: &str, weekly: bool) -> Window {
            let form = WindowForm {
                matchers: r#"{site="lab"}"#.into(),
                start: start.into(),
                duration: duration.into(),
                weekly,
                reason: "rewiring".into(),
                ..WindowForm::default()
            };
            let new = form
                .validate("alice", self.live.clock.now_millis())
                .expect("valid");
            self.maintenance.create(new).await.expect("create")
        }

        /// Takes a firing alert of `site` in as the webhook does: held when a window says so.
        async fn fire(&self, fp: &str, site: &str) -> (i64, usize) {
            let labels = Labels::from([
                ("alertname".into(), "Hot".into()),
                ("site".into(), site.into()),
            ]);
            let holding = self
                .maintenance
                .holding(&labels, self.live.clock.now_millis());
            let o = self
                .store
                .ingest(vec![RoutedEvent {
                    event: AlertEvent {
                        status: Status::Firing,
                        fingerprint: fp.into(),
                        labels,
                        annotations: Labels::new(),
                        starts_at: 10,
                        ends_at: None,
                        generator_url: String::new(),
                        external_url: String::new(),
                        receiver: "relay".into(),
                        group_key: format!("{{}}:{{fp=\"{fp}\"}}"),
                    },
                    destinations: vec!["a".into()],
                    routes: vec![RouteRef {
                        route: "#1".into(),
                        policy: "p".into(),
                    }],
                    group_resolved: false,
                    on_call: Default::default(),
                    no_resolved: Default::default(),
                    maintenance: holding,
                }])
                .await
                .expect("ingest");
            self.maintenance.refresh().await.expect("refresh");
            (o.opened[0], o.deliveries.len())
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

        /// The destinations of an incident's step deliveries, in order.
        async fn paged(&self, id: i64) -> Vec<String> {
            let d = (self.store.read(move |b| b.incident_deliveries(id)))
                .await
                .expect("read");
            d.into_iter().map(|x| x.0).collect()
        }

        async fn incident(&self, id: i64) -> crate::store::Incident {
            (self.store.read(move |b| b.incident(id)))
                .await
                .expect("read")
                .expect("incident")
        }

        fn metric(&self, series: &str) -> Option<String> {
            let text = self.metrics.encode();
            text.lines()
                .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
                .map(|l| l[series.len() + 1..].to_owned())
        }

        fn jump(&self, ms: i64) {
            self.live.clock.jump(ms);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_alert_in_a_window_pages_only_once_the_window_is_ended_by_hand() {
        let r = rig().await;
        let w = r.window("", "2h", false).await;
        assert_eq!(
            r.metric("alert_relay_maintenance_windows_active"),
            Some("1".into())
        );
        let (held, sent) = r.fire("f1", "lab").await;
        let (free, free_sent) = r.fire("f2", "prod").await;
        assert_eq!((sent, free_sent), (0, 1));
        assert_eq!(r.incident(held).await.maintenance, Some(w.id));
        let suppressed = format!(
            "alert_relay_maintenance_suppressed_total{{window=\"{}\"}}",
            w.id
        );
        assert_eq!(r.metric(&suppressed), Some("1".into()));
        // Twenty minutes in the window: nothing for the held incident, the free one escalates.
        r.advance(20 * MINUTE).await;
        assert!(r.paged(held).await.is_empty());
        assert_eq!(r.paged(free).await, ["a", "b"]);
        assert_eq!(
            r.incident(held).await.elapsed_ms,
            0,
            "its clock stood still"
        );
        assert!(r.maintenance.end(w.id, "bob".into()).await.expect("end"));
        assert!(!r.maintenance.end(w.id, "bob".into()).await.expect("end"));
        r.advance(Duration::ZERO).await;
        assert_eq!(r.paged(held).await, ["a"], "its first step, at once");
        r.advance(10 * MINUTE).await;
        assert_eq!(
            r.paged(held).await,
            ["a", "b"],
            "then its schedule as usual"
        );
        assert_eq!(
            r.metric("alert_relay_maintenance_windows_active"),
            Some("0".into())
        );
        // The count stays (the window is listed for a week after it ended).
        assert_eq!(r.metric(&suppressed), Some("1".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_weekly_window_holds_again_a_week_later_and_releases_when_it_ends() {
        let r = rig().await;
        let start = crate::time::format_rfc3339((r.live.clock.now_millis() + HOUR_MS) * 1_000_000);
        let w = r.window(&start, "1h", true).await;
        assert_eq!(
            r.metric("alert_relay_maintenance_windows_active"),
            Some("0".into())
        );
        // Not in force yet: an alert pages.
        let (_, sent) = r.fire("f0", "lab").await;
        assert_eq!(sent, 1);
        // A week and a half hour after the first start: the second occurrence is in force.
        r.jump(model_week() + HOUR_MS + HOUR_MS / 2);
        assert_eq!(
            r.metric("alert_relay_maintenance_windows_active"),
            Some("1".into())
        );
        let (held, sent) = r.fire("f1", "lab").await;
        assert_eq!(sent, 0);
        assert_eq!(r.incident(held).await.maintenance, Some(w.id));
        r.advance(MINUTE).await;
        assert!(r.paged(held).await.is_empty());
        // The occurrence ends by the clock: released, its first step goes out.
        r.jump(HOUR_MS / 2);
        r.advance(Duration::ZERO).await;
        assert_eq!(r.paged(held).await, ["a"]);
        assert_eq!(r.incident(held).await.maintenance, None);
    }

    fn model_week() -> i64 {
        crate::model::maintenance::WEEK_MS
    }

    #[tokio::test(start_paused = true)]
    async fn an_escalating_incident_is_held_while_a_matching_window_is_in_force() {
        let r = rig().await;
        let (id, sent) = r.fire("f1", "lab").await;
        assert_eq!(sent, 1);
        r.advance(5 * MINUTE).await;
        let w = r.window("", "1h", false).await;
        r.advance(30 * MINUTE).await;
        assert_eq!(
            r.paged(id).await,
            ["a"],
            "no step while the window is in force"
        );
        let i = r.incident(id).await;
        assert_eq!((i.maintenance, i.state), (Some(w.id), IncidentState::Open));
        // The window ends by the clock: the schedule resumes where it stood (5 of 10 minutes).
        r.jump(HOUR_MS);
        r.advance(4 * MINUTE).await;
        assert_eq!(r.paged(id).await, ["a"]);
        r.advance(MINUTE + Duration::from_secs(1)).await;
        assert_eq!(r.paged(id).await, ["a", "b"]);
        assert_eq!(r.incident(id).await.maintenance, None);
    }
}

//! The running relay: every service built once into [`Services`], the HTTP server on top,
//! SIGHUP reloads, and shutdown as an ordered list of named steps.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serving::systemd::{self, NotifyState};
use tokio::task::JoinHandle;

use crate::client::http_client;
use crate::config::{self, Config, ListenerSecurity, StorageBackend};
use crate::deadman::Deadman;
use crate::delivery::{Engine, EngineParts, Start};
use crate::escalation::Escalator;
use crate::http::{self, App};
use crate::leader::{self, Leadership, Role};
use crate::live::Live;
use crate::maintenance::{self, Maintenance};
use crate::metrics::{CommitMetrics, MaintenanceStats, Metrics, QueueSlot, QueueStats};
use crate::relay_clock::RelayClock;
use crate::render::ack::Signer;
use crate::resync::Resync;
use crate::store::postgres::notify::Notice;
use crate::store::postgres::{PgSettings, Postgres};
use crate::store::sqlite::Sqlite;
use crate::store::{self, Store};
use crate::storm::Storms;
use crate::{ack, ack_telegram, pushover_receipts, time};

/// How often finished alerts older than `storage.retention` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// How long delivery workers may finish the attempt in flight at shutdown.
const DELIVERY_GRACE: Duration = Duration::from_secs(5);

/// What `--web.config.file` adds to the listener's protection (nothing without one).
pub fn listener_security(web_config: Option<&Path>) -> anyhow::Result<ListenerSecurity> {
    let Some(path) = web_config else {
        return Ok(ListenerSecurity::default());
    };
    let p = serving::web_config::protection(path)?;
    Ok(ListenerSecurity {
        tls: p.tls,
        client_certificates: p.client_certificates,
    })
}

/// Loads the configuration and checks it against the listener's web configuration: a
/// listener other machines can reach needs authentication.
pub fn load_checked(
    path: &Path,
    web_config: Option<&Path>,
) -> anyhow::Result<(Config, ListenerSecurity)> {
    let config = config::load(path)?;
    let security = listener_security(web_config)?;
    config.check_exposure(config.listen, security)?;
    Ok((config, security))
}

/// Runs the relay until SIGTERM or Ctrl-C; SIGHUP reloads the configuration (the web
/// configuration reloads itself when its files change).
pub async fn run(config_path: &Path, web_config: Option<&Path>) -> anyhow::Result<()> {
    let (config, security) = load_checked(config_path, web_config)?;
    if let Some(w) = config.exposure_warning(security) {
        tracing::warn!("{w}");
    }
    let web = match web_config {
        Some(path) => serving::web_config::WebConfig::load(path)?,
        None => serving::web_config::WebConfig::disabled(),
    };
    let services = Services::build(config_path, config).await?;
    let mut leadership = services.campaign()?;
    // Before the first sign of life ("listening", READY=1), after which a SIGHUP may come.
    let mut signals = Signals::install()?;
    let serving = Arc::new(http::serve(services.app(), Arc::new(web)).await?);
    for address in serving.addresses() {
        tracing::info!(%address, "alert-relay {} listening", env!("CARGO_PKG_VERSION"));
    }
    systemd::notify(&[NotifyState::Ready]);
    let watchdog = services.watchdog(&serving);
    let mut role = *leadership.role.borrow_and_update();
    let mut engines = services.take_role(role, None).await;
    // Leading without engines (they failed to start): try again, or nobody would page.
    let mut retry = tokio::time::interval(leader::ROUND);
    loop {
        tokio::select! {
            signal = signals.next() => match signal {
                Signal::Stop => break,
                Signal::Reload => {
                    reload(&services, web_config).await;
                    services.wake();
                }
            },
            Ok(()) = leadership.role.changed() => {
                role = *leadership.role.borrow_and_update();
                engines = services.take_role(role, engines.take()).await;
            }
            _ = retry.tick(), if engines.is_none() && matches!(role, Role::Leader { .. }) => {
                engines = services.take_role(role, None).await;
            }
            Some(notice) = leadership.notices.recv() => services.notice(notice),
        }
    }
    tracing::info!("shutting down");
    systemd::notify(&[NotifyState::Stopping]);
    services
        .shutdown(engines, leadership, watchdog, serving)
        .await;
    Ok(())
}

/// Every service of a running relay, built once; each holds the handles it needs.
#[derive(Debug)]
pub struct Services {
    live: Arc<Live>,
    store: Store,
    db_threads: store::DbThreads,
    metrics: Arc<Metrics>,
    queue_slot: QueueSlot,
    engine: Arc<Engine>,
    escalator: Arc<Escalator>,
    storms: Arc<Storms>,
    pollers: Arc<ack::Pollers>,
    deadman: Arc<Deadman>,
    resync: Arc<Resync>,
    maintenance: Arc<Maintenance>,
    /// Reads the maintenance windows again (`Maintenance::run`).
    maintenance_refresh: JoinHandle<()>,
    ack_key: Vec<u8>,
    clock: Arc<RelayClock>,
    /// This instance's fencing number while it leads, 0 while it follows.
    fence: Arc<AtomicI64>,
}

/// The engines' background tasks (the leader's), by the shutdown step that stops them.
#[derive(Debug)]
pub struct Tasks {
    pollers: Vec<JoinHandle<()>>,
    watchers: Vec<JoinHandle<()>>,
    escalating: JoinHandle<()>,
    storming: JoinHandle<()>,
    pruner: JoinHandle<()>,
}

impl Tasks {
    fn into_handles(self) -> Vec<JoinHandle<()>> {
        let mut all = self.pollers;
        all.extend(self.watchers);
        all.extend([self.escalating, self.storming, self.pruner]);
        all
    }
}

impl Services {
    /// Opens the store and builds every service on it; delivery workers start with the
    /// backlog of the last run (budgets and ack links already in place, so it is counted and
    /// linked like any other delivery).
    pub async fn build(config_path: &Path, config: Config) -> anyhow::Result<Self> {
        let (metrics, queue_slot) = Metrics::new();
        let (store, db_threads) = open_store(&config.storage.backend, &metrics).await?;
        let fence = Arc::new(AtomicI64::new(0));
        let store = match config.storage.backend {
            StorageBackend::Sqlite(_) => store,
            StorageBackend::Postgres(_) => store.fenced(Arc::clone(&fence)),
        };
        let store_is_shared = store.is_shared();
        let ack_key = store.read(|b| b.ack_key()).await?;
        let clock = Arc::new(RelayClock::new(store.read(|b| b.relay_clock()).await?));
        let configured = config.destinations();
        let live = Arc::new(Live::new(config_path.to_owned(), config));
        let engine = Engine::new(EngineParts {
            store: store.clone(),
            metrics: Arc::clone(&metrics),
            http: http_client()?,
            live: Arc::clone(&live),
            clock: Arc::clone(&clock),
            ack_key: Some(ack_key.clone()),
        });
        queue_slot.set(Arc::clone(&engine) as Arc<dyn QueueStats>);
        warn_of_unconfigured(&store, &configured).await?;
        let maintenance = Maintenance::start(store.clone(), Arc::clone(&live)).await?;
        metrics.watch_maintenance(&(Arc::clone(&maintenance) as Arc<dyn MaintenanceStats>));
        let escalator = Escalator::with_maintenance(
            store.clone(),
            Arc::clone(&engine),
            Arc::clone(&live),
            Arc::clone(&maintenance),
        );
        let storms = Storms::new(
            store.clone(),
            Arc::clone(&engine),
            Arc::clone(&escalator),
            Arc::clone(&live),
            Arc::clone(&clock),
            Arc::clone(&metrics),
        );
        let pollers = Arc::new(ack::Pollers {
            live: Arc::clone(&live),
            store: store.clone(),
            escalator: Arc::clone(&escalator),
            storms: Arc::clone(&storms),
            http: http_client()?,
            metrics: Arc::clone(&metrics),
        });
        let deadman = Deadman::start(
            store.clone(),
            Arc::clone(&engine),
            Arc::clone(&live),
            Arc::clone(&metrics),
        )
        .await?;
        let resync = Resync::new(
            store.clone(),
            Arc::clone(&escalator),
            Arc::clone(&live),
            Arc::clone(&metrics),
            http_client()?,
        );
        Ok(Services {
            live,
            store,
            db_threads,
            metrics,
            queue_slot,
            engine,
            escalator,
            storms,
            pollers,
            deadman,
            resync,
            maintenance_refresh: tokio::spawn(Arc::clone(&maintenance).run(if store_is_shared {
                maintenance::REFRESH_EVERY
            } else {
                maintenance::REFRESH_ALONE
            })),
            maintenance,
            ack_key,
            clock,
            fence,
        })
    }

    /// Who runs the engines: this instance alone on SQLite; on PostgreSQL, the campaign.
    fn campaign(&self) -> anyhow::Result<Leadership> {
        Ok(match &self.live.config().storage.backend {
            StorageBackend::Sqlite(_) => Leadership::sole(),
            StorageBackend::Postgres(pg) => {
                Leadership::elect(pg_settings(pg), leader::holder()).context("leadership")?
            }
        })
    }

    /// Starts or stops the engines for `role`; `engines` are the running ones.
    async fn take_role(&self, role: Role, engines: Option<Tasks>) -> Option<Tasks> {
        match (role, engines) {
            (Role::Leader { epoch }, None) => match self.lead(epoch).await {
                Ok(tasks) => Some(tasks),
                Err(e) => {
                    // The engines stay stopped; `run` tries again every round while leading.
                    tracing::error!("cannot start the engines: {e}");
                    None
                }
            },
            (Role::Follower, Some(tasks)) => {
                self.step_down(tasks).await;
                None
            }
            (_, engines) => engines,
        }
    }

    /// Becoming the leader: the engines resume from the database (pending deliveries,
    /// escalation clocks from their checkpoints, the relay clock).
    async fn lead(&self, epoch: i64) -> Result<Tasks, store::StoreError> {
        self.fence.store(epoch, Ordering::SeqCst);
        self.clock
            .resume(self.store.read(|b| b.relay_clock()).await?);
        self.escalator.resume().await;
        self.deadman.resume().await?;
        let config = self.live.config();
        // Epoch 1 is the database's first leader; any later one takes over from another.
        let how = if epoch > 1 {
            Start::Takeover
        } else {
            Start::Fresh
        };
        self.engine
            .start(config.destinations(), config.delivery.clone(), how)
            .await?;
        self.metrics.leader.set(1);
        self.metrics.leader_changes.inc();
        Ok(self.spawn())
    }

    /// Another instance leads (or will): stop sending at once; engine writes still in flight
    /// are refused by the fence.
    async fn step_down(&self, tasks: Tasks) {
        self.fence.store(0, Ordering::SeqCst);
        self.metrics.leader.set(0);
        stop(tasks.into_handles()).await;
        self.engine.shutdown(Duration::ZERO).await;
        self.metrics.leader_changes.inc();
        tracing::warn!("following: another instance runs the engines");
    }

    /// A notice of another instance's commit, while leading.
    fn notice(&self, notice: Notice) {
        match notice {
            Notice::Delivery(destination, id, created) => {
                self.engine.enqueue(&destination, id, created);
            }
            Notice::Wake => self.escalator.wake(),
            // Another instance created or ended a window: the escalator decides on fresh ones.
            Notice::Maintenance => {
                let (maintenance, escalator) =
                    (Arc::clone(&self.maintenance), Arc::clone(&self.escalator));
                tokio::spawn(async move {
                    if let Err(e) = maintenance.refresh().await {
                        tracing::warn!("cannot read the maintenance windows: {e}");
                    }
                    escalator.wake();
                });
            }
            Notice::Heartbeat(h) => self.deadman.beat(&h),
        }
    }

    /// Starts the background tasks.
    fn spawn(&self) -> Tasks {
        Tasks {
            pollers: vec![
                tokio::spawn(ack_telegram::run(Arc::clone(&self.pollers))),
                tokio::spawn(pushover_receipts::run(Arc::clone(&self.pollers))),
            ],
            escalating: tokio::spawn(Arc::clone(&self.escalator).run()),
            watchers: vec![
                tokio::spawn(Arc::clone(&self.deadman).run()),
                tokio::spawn(Arc::clone(&self.resync).run()),
            ],
            storming: tokio::spawn(Arc::clone(&self.storms).run()),
            pruner: tokio::spawn(prune(
                self.store.clone(),
                self.live.config().storage.retention,
            )),
        }
    }

    /// What the HTTP handlers share.
    fn app(&self) -> Arc<App> {
        Arc::new(App {
            live: Arc::clone(&self.live),
            store: self.store.clone(),
            metrics: Arc::clone(&self.metrics),
            engine: Arc::clone(&self.engine),
            escalator: Arc::clone(&self.escalator),
            deadman: Arc::clone(&self.deadman),
            storms: Arc::clone(&self.storms),
            maintenance: Arc::clone(&self.maintenance),
            signer: Signer::new(self.ack_key.clone(), None),
            login_limiter: crate::http::LoginLimiter::default(),
        })
    }

    /// The systemd watchdog, when the unit asks for one.
    fn watchdog(&self, serving: &Arc<serving::Serving>) -> Option<JoinHandle<()>> {
        let period = systemd::watchdog_interval()?;
        let (serving, engine, store) = (
            Arc::clone(serving),
            Arc::clone(&self.engine),
            self.store.clone(),
        );
        Some(tokio::spawn(systemd::run_watchdog(period, move |budget| {
            let (serving, engine, store) =
                (Arc::clone(&serving), Arc::clone(&engine), store.clone());
            async move { self_check(&serving, &engine, &store, budget).await }
        })))
    }

    /// After a reload: services that sleep until their next deadline look again.
    fn wake(&self) {
        self.escalator.wake();
        self.deadman.wake();
        self.resync.wake();
    }

    /// Stops in order: the engines if this instance leads (nothing new is started, the
    /// clocks are stored), the server drains its requests, delivery workers finish the attempt
    /// in flight, leadership passes on (only then: no other instance sends the same delivery
    /// meanwhile), and the store commits its last batch.
    async fn shutdown(
        self,
        engines: Option<Tasks>,
        leadership: Leadership,
        watchdog: Option<JoinHandle<()>>,
        serving: Arc<serving::Serving>,
    ) {
        if let Some(tasks) = engines {
            self.stop_engines(tasks).await;
        }
        step("HTTP server", async {
            match Arc::try_unwrap(serving) {
                Ok(s) => s.drain().await,
                Err(_) => tracing::warn!("server still shared at shutdown"),
            }
        })
        .await;
        step("delivery", self.engine.shutdown(DELIVERY_GRACE)).await;
        step("leadership", async {
            let _ = tokio::task::spawn_blocking(move || leadership.stop()).await;
        })
        .await;
        step("watchdog", stop(watchdog.into_iter().collect())).await;
        step("maintenance windows", stop(vec![self.maintenance_refresh])).await;
        self.queue_slot.clear();
        let db_threads = self.db_threads;
        // The DB threads end once the last store handle is gone (every service holds one);
        // joining keeps the last commit intact.
        drop((
            self.live,
            self.store,
            self.engine,
            self.escalator,
            self.storms,
            self.pollers,
            self.deadman,
            self.resync,
            self.maintenance,
        ));
        step("storage", async {
            let _ = tokio::task::spawn_blocking(move || db_threads.join()).await;
        })
        .await;
    }

    /// The leader's part of shutting down: the engines' tasks, then their clocks stored.
    async fn stop_engines(&self, tasks: Tasks) {
        step("acknowledgement pollers", stop(tasks.pollers)).await;
        step("dead-man's switch and re-sync", stop(tasks.watchers)).await;
        step(
            "escalation, storms and pruning",
            stop(vec![tasks.escalating, tasks.storming, tasks.pruner]),
        )
        .await;
        step("relay clock", async {
            if let Err(e) = self.storms.checkpoint().await {
                tracing::warn!("cannot store the relay clock: {e}");
            }
        })
        .await;
        step("escalation clocks", async {
            if let Err(e) = self.escalator.checkpoint().await {
                tracing::warn!("cannot store escalation clocks: {e}");
            }
        })
        .await;
    }
}

/// Opens the configured store: SQLite's one connection, or a pool of PostgreSQL connections
/// (each checks the schema; the first migrates it under an advisory lock).
async fn open_store(
    backend: &StorageBackend,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Store, store::DbThreads)> {
    let observer = CommitMetrics(Arc::clone(metrics));
    match backend {
        StorageBackend::Sqlite(path) => {
            let db =
                Sqlite::open(path).with_context(|| format!("storage.sqlite {}", path.display()))?;
            Ok(Store::start(db, observer)?)
        }
        StorageBackend::Postgres(pg) => {
            let settings = pg_settings(pg);
            let size = pg.pool;
            // The blocking client runs its own runtime: connect off this one.
            let pool = tokio::task::spawn_blocking(move || {
                (0..size)
                    .map(|_| Postgres::connect(&settings))
                    .collect::<Result<Vec<_>, _>>()
            })
            .await?
            .context("storage.postgres")?;
            Ok(Store::start_pool(pool, observer)?)
        }
    }
}

/// Where `storage.postgres` says the database is.
pub(crate) fn pg_settings(pg: &config::PostgresStorage) -> PgSettings {
    PgSettings {
        url: pg.connection_url().expose().to_owned(),
        ca_file: pg.ca_file.clone(),
    }
}

/// One named shutdown step (named in the debug log, to see where a slow stop hangs).
async fn step(name: &str, work: impl Future<Output = ()>) {
    tracing::debug!(step = name, "stopping");
    work.await;
}

/// Aborts tasks and waits until they are gone.
async fn stop(tasks: Vec<JoinHandle<()>>) {
    for task in tasks {
        task.abort();
        let _ = task.await;
    }
}

/// Deliveries kept for destinations no longer configured: kept, not dropped (putting the
/// destination back into the file delivers them), and said once at start.
async fn warn_of_unconfigured(
    store: &Store,
    configured: &std::collections::BTreeMap<String, config::Destination>,
) -> Result<(), store::StoreError> {
    for (dest, n) in store.read(|b| b.pending_destinations()).await? {
        if !configured.contains_key(&dest) {
            tracing::warn!(destination = %dest, pending = n, "deliveries wait for a destination that is no longer configured");
        }
    }
    Ok(())
}

/// Deletes finished alerts older than `retention` (`storage.retention` at start: storage
/// changes need a restart), every [`PRUNE_EVERY`].
async fn prune(store: Store, retention: Duration) {
    let mut tick = tokio::time::interval(PRUNE_EVERY);
    loop {
        tick.tick().await;
        let before =
            time::now_millis() - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
        if let Err(e) = store.write(store::Write::Prune { before_ms: before }).await {
            tracing::warn!("cannot prune old alerts: {e}");
        }
    }
}

/// The watchdog's self-check: the accept loop runs, every delivery worker is alive, and the
/// store can commit, not merely answer (a full disk or a read-only file leaves the DB thread
/// answering while every webhook fails).
async fn self_check(
    serving: &serving::Serving,
    engine: &Engine,
    store: &Store,
    budget: Duration,
) -> Result<(), String> {
    if !serving.accepting() {
        return Err("the accept loop has stopped".into());
    }
    if !engine.healthy() {
        return Err("a delivery worker has stopped".into());
    }
    match tokio::time::timeout(budget / 2, store.check()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("storage: {e}")),
        Err(_) => Err("storage does not answer".into()),
    }
}

/// SIGTERM and SIGHUP, installed before `READY=1`: until then SIGHUP's default action would
/// kill the relay that systemd was told to reload.
struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            hup: signal(SignalKind::hangup()).context("cannot handle SIGHUP")?,
        })
    }

    /// The next signal that matters.
    async fn next(&mut self) -> Signal {
        tokio::select! {
            _ = self.term.recv() => Signal::Stop,
            _ = tokio::signal::ctrl_c() => Signal::Stop,
            _ = self.hup.recv() => Signal::Reload,
        }
    }
}

enum Signal {
    /// SIGTERM or Ctrl-C.
    Stop,
    /// SIGHUP.
    Reload,
}

/// SIGHUP: a valid new file replaces channels, policies, routes, auth, limits, delivery
/// settings, `public_url` (for new links), `deadman` and `alertmanager`; `listen` and
/// `storage` need a restart. Nothing stored is touched.
async fn reload(services: &Services, web_config: Option<&Path>) {
    let Services {
        live,
        engine,
        metrics,
        ..
    } = services;
    systemd::notify(&[NotifyState::Reloading]);
    let checked = config::load(live.path())
        .map_err(anyhow::Error::from)
        .and_then(|new| {
            // The listener stays where it is: the new auth is checked against it.
            let security = listener_security(web_config)?;
            new.check_exposure(live.config().listen, security)?;
            Ok(new)
        });
    match checked {
        Ok(new) => {
            let old = live.config();
            if new.listen != old.listen || new.storage.backend != old.storage.backend {
                tracing::warn!("listen and storage changes take effect at the next restart");
            }
            match engine.apply(new.destinations(), new.delivery.clone()).await {
                Ok(()) => {
                    live.replace(new);
                    metrics.config_reload_success.set(1);
                    tracing::info!("configuration reloaded");
                }
                Err(e) => {
                    metrics.config_reload_success.set(0);
                    tracing::error!(
                        "reload failed in storage, keeping the previous configuration: {e}"
                    );
                }
            }
        }
        Err(e) => {
            metrics.config_reload_success.set(0);
            // One line per error of the file, each once.
            for line in config::error_lines(&e) {
                tracing::error!("invalid configuration, keeping the previous one: {line}");
            }
        }
    }
    systemd::notify(&[NotifyState::Ready]);
}

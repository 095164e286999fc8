//! alert-relay: durable Alertmanager webhook intake and delivery to chat, push and SMS.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate and
//! `docs/alert-relay.md` for its contract.
#![forbid(unsafe_code)]

pub mod ack;
pub mod ack_telegram;
pub mod channels;
pub mod client;
pub mod config;
pub mod deadman;
pub mod delivery;
pub mod escalation;
pub mod http;
pub mod inbound;
pub mod live;
pub mod matcher;
pub mod metrics;
pub mod model;
pub mod payload;
pub mod pushover_receipts;
pub mod relay_clock;
pub mod render;
pub mod resync;
pub mod rotation;
pub mod routing;
pub mod secret;
pub mod store;
pub mod storm;
pub mod time;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use serving::systemd::{self, NotifyState};

use crate::client::http_client;
use crate::config::Config;
use crate::delivery::Engine;
use crate::http::App;
use crate::live::Live;
use crate::metrics::{CommitMetrics, Metrics};
use crate::store::Store;
use crate::store::sqlite::Sqlite;

/// How often finished alerts older than `storage.retention` are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// What `--web.config.file` adds to the listener's protection (nothing without one).
pub fn listener_security(web_config: Option<&Path>) -> anyhow::Result<config::ListenerSecurity> {
    let Some(path) = web_config else {
        return Ok(config::ListenerSecurity::default());
    };
    let p = serving::web_config::protection(path)?;
    Ok(config::ListenerSecurity {
        tls: p.tls,
        client_certificates: p.client_certificates,
    })
}

/// Loads the configuration and checks it against the listener's web configuration: a
/// listener other machines can reach needs authentication.
fn load_checked(
    path: &Path,
    web_config: Option<&Path>,
) -> anyhow::Result<(Config, config::ListenerSecurity)> {
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
    let (metrics, queue_slot) = Metrics::new();
    let db = Sqlite::open(&config.storage.sqlite)
        .with_context(|| format!("storage.sqlite {}", config.storage.sqlite.display()))?;
    let (store, db_thread) = Store::start(db, CommitMetrics(Arc::clone(&metrics)))?;
    let engine = Engine::new(
        store.clone(),
        Arc::clone(&metrics),
        http_client()?,
        config.delivery.clone(),
    );
    let retention = config.storage.retention;
    let key = store.read(|b| b.ack_key()).await?;
    engine.set_signer(render::ack::Signer::new(
        key.clone(),
        config.public_url.clone(),
    ));
    let configured = config.destinations();
    let delivery = config.delivery.clone();
    let live = Arc::new(Live::new(config_path.to_owned(), config));
    // Budgets (and ack links) are in place before the workers start: the backlog of the last
    // run is counted like any other delivery.
    let clock = Arc::new(relay_clock::RelayClock::new(
        store.read(|b| b.relay_clock()).await?,
    ));
    engine.set_budgets(Arc::clone(&live), Arc::clone(&clock));
    engine.apply(configured.clone(), delivery).await?;
    queue_slot.set(Arc::clone(&engine) as Arc<dyn metrics::QueueStats>);
    for (dest, n) in store.read(|b| b.pending_destinations()).await? {
        if !configured.contains_key(&dest) {
            // Kept, not dropped: putting the destination back into the file delivers them.
            tracing::warn!(destination = %dest, pending = n, "deliveries wait for a destination that is no longer configured");
        }
    }
    let escalator =
        escalation::Escalator::new(store.clone(), Arc::clone(&engine), Arc::clone(&live));
    let escalating = tokio::spawn(Arc::clone(&escalator).run());
    let storms = storm::Storms::new(
        store.clone(),
        Arc::clone(&engine),
        Arc::clone(&escalator),
        Arc::clone(&live),
        clock,
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
    let ack_polling = [
        tokio::spawn(ack_telegram::run(Arc::clone(&pollers))),
        tokio::spawn(pushover_receipts::run(Arc::clone(&pollers))),
    ];
    let deadman = deadman::Deadman::start(
        store.clone(),
        Arc::clone(&engine),
        Arc::clone(&live),
        Arc::clone(&metrics),
    )
    .await?;
    let watching = tokio::spawn(Arc::clone(&deadman).run());
    let resync = resync::Resync::new(
        store.clone(),
        Arc::clone(&escalator),
        Arc::clone(&live),
        Arc::clone(&metrics),
        http_client()?,
    );
    let resyncing = tokio::spawn(Arc::clone(&resync).run());
    let storming = tokio::spawn(Arc::clone(&storms).run());
    let app = Arc::new(App {
        live: Arc::clone(&live),
        store: store.clone(),
        metrics: Arc::clone(&metrics),
        engine: Arc::clone(&engine),
        escalator: Arc::clone(&escalator),
        deadman: Arc::clone(&deadman),
        storms: Arc::clone(&storms),
        signer: render::ack::Signer::new(key, None),
    });
    // Before the first sign of life ("listening", READY=1), after which a SIGHUP may come.
    let signals = Signals::install()?;
    let serving = Arc::new(http::serve(Arc::clone(&app), Arc::new(web)).await?);
    for address in serving.addresses() {
        tracing::info!(%address, "alert-relay {} listening", env!("CARGO_PKG_VERSION"));
    }
    systemd::notify(&[NotifyState::Ready]);

    let watchdog = systemd::watchdog_interval().map(|period| {
        let (serving, engine, store) = (Arc::clone(&serving), Arc::clone(&engine), store.clone());
        tokio::spawn(systemd::run_watchdog(period, move |budget| {
            let (serving, engine, store) =
                (Arc::clone(&serving), Arc::clone(&engine), store.clone());
            async move { self_check(&serving, &engine, &store, budget).await }
        }))
    });
    let pruner = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(PRUNE_EVERY);
            loop {
                tick.tick().await;
                let before = time::now_millis()
                    - i64::try_from(retention.as_millis()).unwrap_or(i64::MAX / 2);
                if let Err(e) = store.write(store::Write::Prune { before_ms: before }).await {
                    tracing::warn!("cannot prune old alerts: {e}");
                }
            }
        })
    };

    let after_reload = || {
        escalator.wake();
        deadman.wake();
        resync.wake();
    };
    wait_for_signals(signals, &live, web_config, &engine, &metrics, &after_reload).await;
    tracing::info!("shutting down");
    systemd::notify(&[NotifyState::Stopping]);
    for task in ack_polling {
        task.abort();
        let _ = task.await;
    }
    drop(pollers);
    for task in [watching, resyncing] {
        task.abort();
        let _ = task.await;
    }
    drop(resync);
    drop(deadman);
    escalating.abort();
    let _ = escalating.await;
    storming.abort();
    let _ = storming.await;
    if let Err(e) = storms.checkpoint().await {
        tracing::warn!("cannot store the relay clock: {e}");
    }
    drop(storms);
    if let Err(e) = escalator.checkpoint().await {
        tracing::warn!("cannot store escalation clocks: {e}");
    }
    drop(escalator);
    for task in [watchdog, Some(pruner)].into_iter().flatten() {
        task.abort();
        let _ = task.await;
    }
    match Arc::try_unwrap(serving) {
        Ok(s) => s.drain().await,
        Err(_) => tracing::warn!("server still shared at shutdown"),
    }
    engine.shutdown(Duration::from_secs(5)).await;
    queue_slot.clear();
    drop(app);
    drop(engine);
    drop(store);
    // The DB thread ends once the last handle is gone; joining keeps the last commit intact.
    let _ = tokio::task::spawn_blocking(move || db_thread.join()).await;
    Ok(())
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
}

async fn wait_for_signals(
    mut signals: Signals,
    live: &Live,
    web_config: Option<&Path>,
    engine: &Engine,
    metrics: &Metrics,
    after_reload: &dyn Fn(),
) {
    loop {
        tokio::select! {
            _ = signals.term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = signals.hup.recv() => {
                reload(live, web_config, engine, metrics).await;
                after_reload();
            }
        }
    }
}

/// SIGHUP: a valid new file replaces channels, policies, routes, auth, limits, delivery
/// settings, `public_url` (for new links), `deadman` and `alertmanager`; `listen` and
/// `storage` need a restart. Nothing stored is touched.
async fn reload(live: &Live, web_config: Option<&Path>, engine: &Engine, metrics: &Metrics) {
    systemd::notify(&[NotifyState::Reloading]);
    let checked = config::load(live.path())
        .map_err(anyhow::Error::from)
        .and_then(|new| {
            // The listener stays where it is: the new auth is checked against it.
            new.check_exposure(live.config().listen, listener_security(web_config)?)?;
            Ok(new)
        });
    match checked {
        Ok(new) => {
            let old = live.config();
            if new.listen != old.listen || new.storage.sqlite != old.storage.sqlite {
                tracing::warn!("listen and storage changes take effect at the next restart");
            }
            match engine.apply(new.destinations(), new.delivery.clone()).await {
                Ok(()) => {
                    engine.set_public_url(new.public_url.clone());
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
            tracing::error!("invalid configuration, keeping the previous one: {e:#}");
        }
    }
    systemd::notify(&[NotifyState::Ready]);
}

/// `check-config`: validates the file (with the web configuration the relay will run with)
/// and returns the resolved routing.
pub fn check_config(path: &Path, web_config: Option<&Path>) -> anyhow::Result<String> {
    let (config, security) = load_checked(path, web_config)?;
    Ok(config.describe(security))
}

/// `send-test`: renders a test alert and sends it to every destination of one channel,
/// directly (no store, no retries). Returns one line per destination.
pub async fn send_test(
    path: &Path,
    channel: &str,
) -> anyhow::Result<Vec<(String, channels::Outcome)>> {
    let config = config::load(path)?;
    let ch = config.channels.get(channel).with_context(|| {
        format!(
            "no channel named {channel:?}; channels: {}",
            config
                .channels
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let http = http_client()?;
    let event = render::test_event();
    let mut out = Vec::new();
    for dest in ch.destinations() {
        let job = store::DeliveryJob {
            id: 0,
            destination: dest.id.clone(),
            state: store::DeliveryState::Pending,
            attempts: 0,
            created_at_ms: time::now_millis(),
            next_attempt_at_ms: 0,
            event: event.clone(),
            firing: None,
            incident: None,
            step: 0,
            notice: None,
            storm: None,
            alerts: Vec::new(),
        };
        let msg = channels::message_for(&dest, &job);
        let attempt = channels::Attempt {
            http: &http,
            timeout: ch.timeout.unwrap_or(config.delivery.timeout),
            destination: &dest,
            delivery_id: -time::now_millis(),
            firing_ref: None,
        };
        let (outcome, _) = channels::deliver(&attempt, &msg).await;
        out.push((dest.id.clone(), outcome));
    }
    Ok(out)
}

/// `incidents` and `ack`: the CLI talks to the running relay's API (the relay owns the
/// escalation clocks, so only it can cancel pending steps at once), with the address and
/// credentials of its configuration file. `verb` is `None` to list, or `ack`, `unack`,
/// `escalate`, `resolve` for incident `id`.
pub async fn incident_cli(
    path: &Path,
    web_config: Option<&Path>,
    verb: Option<(&str, i64)>,
    by: Option<&str>,
) -> anyhow::Result<serde_json::Value> {
    let config = config::load(path)?;
    let scheme = if listener_security(web_config)?.tls {
        "https"
    } else {
        "http"
    };
    let mut host = config.listen;
    if host.ip().is_unspecified() {
        host.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let base = format!("{scheme}://{host}/api/v1/incidents");
    let http = http_client()?;
    let req = match verb {
        None => http.get(base),
        Some((verb, id)) => http
            .post(format!("{base}/{id}/{verb}"))
            .json(&serde_json::json!({ "by": by.map_or_else(whoami, str::to_owned) })),
    };
    let req = match &config.auth {
        config::Auth::None => req,
        config::Auth::Bearer(t) => req.bearer_auth(t.expose()),
        config::Auth::Basic { username, password } => {
            req.basic_auth(username, Some(password.expose()))
        }
    };
    let resp = req
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .with_context(|| format!("cannot reach the relay at {host}"))?;
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.context("the relay's answer")?;
    if !status.is_success() {
        anyhow::bail!(
            "{status}: {}",
            body.get("message").and_then(|m| m.as_str()).unwrap_or("")
        );
    }
    Ok(body)
}

fn whoami() -> String {
    std::env::var("USER").unwrap_or_else(|_| "cli".into())
}

/// One line per incident for `alert-relay incidents`.
pub fn format_incidents(v: &serde_json::Value) -> String {
    let mut out = String::new();
    for i in v["incidents"].as_array().into_iter().flatten() {
        let s = |k: &str| i[k].as_str().unwrap_or("").to_owned();
        out.push_str(&format!(
            "#{:<6} {:<9} {:<24} step {:<3} {} {}\n",
            i["id"],
            s("state"),
            s("alertname"),
            i["next_step"].as_i64().unwrap_or(0),
            s("summary"),
            match (i["acked_by"].as_str(), i["resolved_by"].as_str()) {
                (_, Some(r)) => format!("(resolved by {r})"),
                (Some(a), None) => format!("(acked by {a})"),
                _ => String::new(),
            }
        ));
    }
    if out.is_empty() {
        out.push_str("no incidents\n");
    }
    out
}

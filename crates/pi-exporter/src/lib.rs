//! pi-exporter: a Prometheus exporter for the health of Raspberry Pis that nobody can reach.
//!
//! See `ARCHITECTURE.md` at the repository root for the map of this crate.

pub mod cli;
pub mod collector;
pub mod duration;
pub mod http;
pub mod i2c;
pub mod metrics;
pub mod paths;
pub mod simulate;
pub mod systemd;
pub mod web_config;

use std::sync::Arc;

use anyhow::Context as _;

use crate::cli::Config;
use crate::collector::{BuildContext, Scraper};
use crate::http::App;
use crate::web_config::WebConfig;

/// Runs the exporter until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let web = match &config.web_config_file {
        Some(path) => WebConfig::load(path)
            .with_context(|| format!("invalid --web.config.file {}", path.display()))?,
        None => WebConfig::disabled(),
    };
    let board = match &config.simulate_board {
        Some(path) => {
            let board = simulate::load(path)?;
            tracing::warn!(
                file = %path.display(),
                description = board.description.as_deref().unwrap_or(""),
                "simulating hardware from a board file: these metrics do not come from real devices"
            );
            Some(Arc::new(board))
        }
        None => None,
    };
    let context = BuildContext {
        paths: config.paths.clone(),
        options: config.collector_options.clone(),
        board,
    };
    tracing::info!(collectors = ?config.collectors, paths = ?config.paths, "starting pi-exporter {}", env!("CARGO_PKG_VERSION"));
    let collectors = collector::build_enabled(&context, &config.collectors);
    let scraper = Scraper::new(collectors, config.collector_timeout);
    scraper.log_inventory().await;
    let app = Arc::new(App::new(
        scraper,
        config.telemetry_path.clone(),
        web,
        config.max_requests,
        config.read_header_timeout,
    ));

    let listeners = http::bind(&config.listen).await?;
    let serving = Arc::new(http::serve(listeners, Arc::clone(&app)));
    for address in &serving.addresses {
        tracing::info!(%address, "listening");
    }
    systemd::notify(&sd_notify::NotifyState::Ready);
    let watchdog = systemd::watchdog_interval().map(|period| {
        tokio::spawn(systemd::run_watchdog(
            Arc::clone(&app),
            Arc::clone(&serving),
            period,
        ))
    });

    http::shutdown_signal().await;
    tracing::info!("shutting down");
    systemd::notify(&sd_notify::NotifyState::Stopping);
    if let Some(watchdog) = watchdog {
        watchdog.abort();
        let _ = watchdog.await;
    }
    match Arc::try_unwrap(serving) {
        Ok(serving) => serving.shutdown().await,
        Err(_) => tracing::warn!("server still shared at shutdown; not waiting for connections"),
    }
    Ok(())
}

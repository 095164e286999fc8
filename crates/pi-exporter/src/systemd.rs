//! systemd integration: `READY=1` once listening, and `WATCHDOG=1` only while a self-check of the
//! serving path passes, so systemd restarts an exporter that is wedged rather than merely alive.
//! Outside systemd (`NOTIFY_SOCKET` unset) every call is a no-op.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use serving::Serving;

use crate::http::App;

pub fn notify(state: &NotifyState<'_>) {
    if let Err(e) = sd_notify::notify(std::slice::from_ref(state)) {
        tracing::warn!("cannot notify systemd ({state:?}): {e}");
    }
}

/// The watchdog period systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// One self-check: every accept loop is alive and a full scrape renders within `budget`.
pub async fn self_check(app: &App, serving: &Serving, budget: Duration) -> Result<(), String> {
    if !serving.accepting() {
        return Err("an accept loop has stopped".into());
    }
    match tokio::time::timeout(budget, app.render(Some(budget / 2), false)).await {
        Ok(body) if body.contains("rpi_exporter_build_info") => Ok(()),
        Ok(_) => Err("scrape rendered without the exporter's own metrics".into()),
        Err(_) => Err(format!("scrape did not render within {budget:?}")),
    }
}

/// Pings the watchdog at half its period while [`self_check`] passes; never returns.
pub async fn run_watchdog(app: Arc<App>, serving: Arc<Serving>, period: Duration) {
    let half = period / 2;
    let mut ticker = tokio::time::interval(half);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        ticker.tick().await;
        match self_check(&app, &serving, half).await {
            Ok(()) => {
                if !healthy {
                    tracing::info!("self-check passes again; pinging the systemd watchdog");
                }
                healthy = true;
                notify(&NotifyState::Watchdog);
            }
            Err(reason) => {
                if healthy {
                    tracing::error!(
                        "self-check failed, withholding the systemd watchdog ping: {reason}"
                    );
                }
                healthy = false;
            }
        }
    }
}

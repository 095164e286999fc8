//! systemd's notify protocol: `READY=1`, `RELOADING=1`, `STOPPING=1` and the watchdog. Outside
//! systemd (`NOTIFY_SOCKET` unset) every call is a no-op. What a self-check tests before a
//! watchdog ping is each binary's own.

use std::future::Future;
use std::time::Duration;

pub use sd_notify::NotifyState;

pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd ({states:?}): {e}");
    }
}

/// The watchdog period systemd asked for (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// Pings the watchdog every half `period` while `check` passes, and withholds the ping (with
/// one log line per failing streak) while it fails, so systemd restarts a service that is
/// wedged rather than merely alive. Never returns.
pub async fn run_watchdog<F, Fut>(period: Duration, mut check: F)
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let half = period / 2;
    let mut ticker = tokio::time::interval(half);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut healthy = true;
    loop {
        ticker.tick().await;
        match check(half).await {
            Ok(()) => {
                if !healthy {
                    tracing::info!("self-check passes again; pinging the systemd watchdog");
                }
                healthy = true;
                notify(&[NotifyState::Watchdog]);
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

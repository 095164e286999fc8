//! systemd integration as in pi-exporter: `READY=1` once listening, `RELOADING=1` around a
//! SIGHUP reload, and `WATCHDOG=1` only while a self-check passes (the accept loop runs, every
//! delivery worker is alive, and the store can commit: `Store::check`), so a wedged relay is
//! restarted.

use std::time::Duration;

use sd_notify::NotifyState;

pub fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot notify systemd: {e}");
    }
}

pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

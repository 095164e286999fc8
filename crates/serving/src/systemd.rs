//! systemd's notify protocol: `READY=1`, `RELOADING=1`, `STOPPING=1` and the watchdog. Outside
//! systemd (`NOTIFY_SOCKET` unset) every call is a no-op. What a self-check tests before a
//! watchdog ping is each binary's own.

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

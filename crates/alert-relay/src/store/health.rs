//! Whether the store can commit, as the DB thread last found out: `/healthz` and the systemd
//! watchdog report this rather than "the DB thread answers", so they see what Alertmanager
//! sees. A read-only file or a full disk leaves the thread answering while every commit fails.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// With no commit for this long, a health check commits a probe itself: a disk that filled up
/// while the relay was quiet is noticed, at the cost of one small commit per period when idle.
pub(crate) const PROBE_AFTER: Duration = Duration::from_secs(30);

/// The outcome of the last commit, written by the DB thread, read by health checks.
#[derive(Debug, Default)]
pub(crate) struct Health {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    last_ok: Option<Instant>,
    /// Why the last commit failed; cleared by the next one that succeeds.
    failure: Option<String>,
}

impl Health {
    pub(crate) fn committed(&self, at: Instant) {
        let mut s = self.lock();
        s.last_ok = Some(at);
        s.failure = None;
    }

    pub(crate) fn failed(&self, why: String) {
        self.lock().failure = Some(why);
    }

    /// Whether a health check at `now` must commit a probe to know: the last commit failed (has
    /// it come back?) or none succeeded within [`PROBE_AFTER`].
    pub(crate) fn needs_probe(&self, now: Instant) -> bool {
        let s = self.lock();
        s.failure.is_some()
            || s.last_ok
                .is_none_or(|t| now.saturating_duration_since(t) >= PROBE_AFTER)
    }

    /// Why the store cannot commit, if the last commit failed.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failure.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_stands_until_a_commit_succeeds() {
        let h = Health::default();
        let t0 = Instant::now();
        assert!(h.needs_probe(t0), "nothing committed yet");
        h.committed(t0);
        assert!(!h.needs_probe(t0 + Duration::from_secs(1)));
        assert!(h.needs_probe(t0 + PROBE_AFTER), "quiet for too long");
        h.failed("disk full".into());
        assert_eq!(h.failure().as_deref(), Some("disk full"));
        assert!(
            h.needs_probe(t0 + Duration::from_secs(1)),
            "has it come back?"
        );
        h.committed(t0 + Duration::from_secs(2));
        assert_eq!(h.failure(), None);
        assert!(!h.needs_probe(t0 + Duration::from_secs(3)));
    }
}

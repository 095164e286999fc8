//! The relay clock: milliseconds of relay run time, monotonic (`tokio::time::Instant`) and
//! stored (`meta.relay_clock_ms`, once a minute and at shutdown), so it survives a restart and
//! ignores wall-clock jumps. Storm windows and budget windows are measured on it. Time the
//! relay is down does not count; at start it resumes from the larger of its checkpoint and
//! the newest stamp stored with it, so it never runs backwards across a crash.

use std::sync::atomic::{AtomicI64, Ordering};

use tokio::time::Instant;

#[derive(Debug)]
pub struct RelayClock {
    base_ms: AtomicI64,
    since: Instant,
}

impl RelayClock {
    pub fn new(base_ms: i64) -> Self {
        RelayClock {
            base_ms: AtomicI64::new(base_ms),
            since: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.base_ms
            .load(Ordering::SeqCst)
            .saturating_add(self.elapsed_ms())
    }

    /// A new leader takes over the clock another instance advanced: it never reads less
    /// than `stored` from now on (and never goes back).
    pub fn resume(&self, stored: i64) {
        let base = stored.saturating_sub(self.elapsed_ms());
        self.base_ms.fetch_max(base, Ordering::SeqCst);
    }

    fn elapsed_ms(&self) -> i64 {
        i64::try_from(self.since.elapsed().as_millis()).unwrap_or(i64::MAX)
    }
}

//! The relay clock: milliseconds of relay run time, monotonic (`tokio::time::Instant`) and
//! stored (`meta.relay_clock_ms`, once a minute and at shutdown), so it survives a restart and
//! ignores wall-clock jumps. Storm windows and budget windows are measured on it. Time the
//! relay is down does not count; at start it resumes from the larger of its checkpoint and
//! the newest stamp stored with it, so it never runs backwards across a crash.

use tokio::time::Instant;

#[derive(Debug)]
pub struct RelayClock {
    base_ms: i64,
    since: Instant,
}

impl RelayClock {
    pub fn new(base_ms: i64) -> Self {
        RelayClock {
            base_ms,
            since: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> i64 {
        self.base_ms
            .saturating_add(i64::try_from(self.since.elapsed().as_millis()).unwrap_or(i64::MAX))
    }
}

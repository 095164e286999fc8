//! Retry timing and rate limiting, as plain values (tested without a clock).

use std::time::Duration;

/// Exponential backoff with jitter: `initial * 2^(attempt-1)`, capped at `max`, then drawn
/// uniformly from its upper half so that retries of many destinations do not synchronise.
/// `jitter` is a number in `[0, 1)`.
pub fn backoff(attempt: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1u32 << exp).min(max);
    base.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// The delay before the next attempt: the provider's hint when it gave one (plus up to 10%
/// jitter, never less than the hint), else the backoff.
pub fn next_delay(
    attempt: u32,
    hint: Option<Duration>,
    initial: Duration,
    max: Duration,
    jitter: f64,
) -> Duration {
    match hint {
        Some(h) => h + h.mul_f64(0.1 * jitter.clamp(0.0, 1.0)),
        None => backoff(attempt, initial, max, jitter),
    }
}

/// A token bucket in seconds of a monotonic clock supplied by the caller.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: f64,
}

impl TokenBucket {
    pub fn new(per_second: f64, burst: u32, now: f64) -> Self {
        Self {
            per_second,
            burst: f64::from(burst),
            tokens: f64::from(burst),
            last: now,
        }
    }

    /// A bucket with no token yet: a new leader's, since the former one may have spent the
    /// burst just before it died (the rate holds across a failover).
    pub fn empty(per_second: f64, burst: u32, now: f64) -> Self {
        Self {
            tokens: 0.0,
            ..Self::new(per_second, burst, now)
        }
    }

    /// Takes a token if one is there (`Duration::ZERO`), else says how long until one is.
    pub fn take(&mut self, now: f64) -> Duration {
        let elapsed = (now - self.last).max(0.0);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
        }
    }

    pub fn same_rate(&self, per_second: f64, burst: u32) -> bool {
        (self.per_second - per_second).abs() < f64::EPSILON
            && (self.burst - f64::from(burst)).abs() < f64::EPSILON
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let s = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff(1, s, max, 1.0), s);
        assert_eq!(backoff(1, s, max, 0.0), s / 2);
        assert_eq!(backoff(4, s, max, 1.0), 8 * s);
        assert_eq!(backoff(40, s, max, 1.0), max);
        assert_eq!(
            next_delay(9, Some(Duration::from_secs(35)), s, max, 0.0),
            Duration::from_secs(35)
        );
        assert!(
            next_delay(9, Some(Duration::from_secs(10)), s, max, 0.99) < Duration::from_secs(11)
        );
    }

    #[test]
    fn a_takeovers_bucket_starts_empty_and_fills_at_the_rate() {
        let mut b = TokenBucket::empty(2.0, 3, 10.0);
        assert_eq!(b.take(10.0), Duration::from_millis(500));
        assert_eq!(b.take(10.5), Duration::ZERO);
        // Never more than the burst, however long it waited.
        let _ = b.take(100.0);
        let _ = b.take(100.0);
        assert_eq!(b.take(100.0), Duration::ZERO);
        assert_eq!(b.take(100.0), Duration::from_millis(500));
    }

    #[test]
    fn bucket_allows_bursts_then_paces() {
        let mut b = TokenBucket::new(1.0, 3, 0.0);
        for _ in 0..3 {
            assert_eq!(b.take(0.0), Duration::ZERO);
        }
        assert_eq!(b.take(0.0), Duration::from_secs(1));
        assert_eq!(b.take(1.0), Duration::ZERO);
        assert_eq!(
            b.take(100.0),
            Duration::ZERO,
            "refilled, but only to the burst"
        );
        assert_eq!(b.take(100.0), Duration::ZERO);
        assert_eq!(b.take(100.0), Duration::ZERO);
        assert!(b.take(100.0) > Duration::ZERO);
    }
}

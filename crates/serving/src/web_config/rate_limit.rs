//! `rate_limit`: a token bucket over all requests, like exporter-toolkit's `rate.Limiter`
//! (one token per `interval`, at most `burst` saved up, starting full).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::file::{RateLimitSection, non_empty};
use super::{WebConfigError, lock};

/// Validated `rate_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RateLimit {
    interval: Duration,
    burst: u32,
}

/// `Ok(None)`: no limit (no `interval`, or `interval: 0`, as in exporter-toolkit).
pub(super) fn settings(section: RateLimitSection) -> Result<Option<RateLimit>, WebConfigError> {
    let interval = match non_empty(section.interval) {
        Some(text) => crate::duration::parse(&text)
            .map_err(|message| WebConfigError::invalid("rate_limit.interval", message))?,
        None => Duration::ZERO,
    };
    if interval.is_zero() {
        return Ok(None);
    }
    match section.burst {
        // exporter-toolkit would reject every request; that is never what was meant.
        None | Some(0) => Err(WebConfigError::invalid(
            "rate_limit.burst",
            "must be at least 1 when rate_limit.interval is set",
        )),
        Some(burst) => Ok(Some(RateLimit { interval, burst })),
    }
}

/// The limiter of one loaded config.
#[derive(Debug)]
pub(super) struct RateLimiter {
    limit: RateLimit,
    bucket: Mutex<Bucket>,
}

impl RateLimiter {
    pub(super) fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            bucket: Mutex::new(Bucket::full(limit, Instant::now())),
        }
    }

    /// Takes a token if there is one.
    pub(super) fn try_acquire(&self) -> bool {
        lock(&self.bucket).try_take(self.limit, Instant::now())
    }
}

#[derive(Debug)]
struct Bucket {
    tokens: u32,
    /// When the last whole token was earned; time since then counts towards the next one.
    earned_at: Instant,
}

impl Bucket {
    fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            tokens: limit.burst,
            earned_at: now,
        }
    }

    fn try_take(&mut self, limit: RateLimit, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.earned_at);
        let earned = elapsed.as_nanos() / limit.interval.as_nanos();
        let missing = limit.burst - self.tokens;
        if earned >= u128::from(missing) {
            // Full: time spent full earns nothing, as with any token bucket.
            *self = Self::full(limit, now);
        } else if let Ok(earned) = u32::try_from(earned) {
            // earned < missing <= burst, so the conversion cannot fail nor the sum overflow;
            // and interval * earned <= elapsed, so `earned_at` does not pass `now`.
            self.tokens += earned;
            self.earned_at += limit.interval * earned;
        }
        if self.tokens == 0 {
            return false;
        }
        self.tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(interval: Option<&str>, burst: Option<u32>) -> RateLimitSection {
        RateLimitSection {
            interval: interval.map(str::to_owned),
            burst,
        }
    }

    #[test]
    fn settings_validation() {
        assert_eq!(settings(section(None, Some(5))).expect("off"), None);
        assert_eq!(settings(section(Some("0"), None)).expect("off"), None);
        assert_eq!(
            settings(section(Some("1s"), Some(20))).expect("on"),
            Some(RateLimit {
                interval: Duration::from_secs(1),
                burst: 20
            })
        );
        let message = settings(section(Some("1s"), None))
            .expect_err("no burst")
            .to_string();
        assert!(message.starts_with("rate_limit.burst:"), "{message}");
        let message = settings(section(Some("soon"), Some(1)))
            .expect_err("bad")
            .to_string();
        assert!(message.starts_with("rate_limit.interval:"), "{message}");
    }

    #[test]
    fn bucket_allows_burst_then_one_per_interval() {
        let limit = RateLimit {
            interval: Duration::from_millis(100),
            burst: 3,
        };
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut bucket = Bucket::full(limit, start);
        assert!((0..3).all(|_| bucket.try_take(limit, start)));
        assert!(!bucket.try_take(limit, at(99)));
        assert!(bucket.try_take(limit, at(100)));
        assert!(!bucket.try_take(limit, at(150)));
        // Partial progress is kept: the next token is due at 200, not at 250.
        assert!(bucket.try_take(limit, at(200)));
        assert!(!bucket.try_take(limit, at(210)));
        // A long pause refills to `burst`, not beyond.
        assert!((0..3).all(|_| bucket.try_take(limit, at(10_000))));
        assert!(!bucket.try_take(limit, at(10_000)));
        // A clock that seems to go backwards earns nothing and does not panic.
        assert!(!bucket.try_take(limit, at(5_000)));
    }

    #[test]
    fn huge_intervals_work() {
        let limit = RateLimit {
            interval: Duration::from_secs(u64::MAX / 2),
            burst: 2,
        };
        let now = Instant::now();
        let mut bucket = Bucket::full(limit, now);
        assert!(bucket.try_take(limit, now) && bucket.try_take(limit, now));
        assert!(!bucket.try_take(limit, now + Duration::from_secs(3600)));
    }

    #[test]
    fn limiter_refills_in_real_time() {
        let limiter = RateLimiter::new(RateLimit {
            interval: Duration::from_secs(1),
            burst: 2,
        });
        assert!(limiter.try_acquire() && limiter.try_acquire());
        assert!(!limiter.try_acquire());
        std::thread::sleep(Duration::from_millis(1100));
        assert!(limiter.try_acquire());
    }
}

//! RTC minus system clock, to well under a second although RTCs only show whole seconds.
//!
//! The way `hwclock` does it: poll the RTC until its second changes. At that instant it reads
//! exactly the new second, so comparing with the system clock then gives the offset to within
//! half the poll interval plus the read time (a few milliseconds). Waiting for the tick takes up
//! to a second, so it runs on a background thread every `--collector.rtc.offset-interval` and
//! scrapes read the cached value: a scrape never waits for it.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::collector::periodic::{self, First, Periodic};

/// Time between two reads while waiting for the tick: the precision of the measurement.
pub(super) const POLL: Duration = Duration::from_millis(10);
/// Longest wait for the tick. A healthy RTC ticks within 1 s; one that does not is stopped (or
/// is a fixture file) and is measured coarsely instead.
pub(super) const MAX_WAIT: Duration = Duration::from_millis(1500);

/// The clocks the measurement uses; tests substitute a simulated one.
pub(super) trait Clock {
    /// System time as Unix seconds.
    fn unix_now(&self) -> f64;
    /// A monotonic instant, for the wait bound (a system clock step must not stretch it).
    fn elapsed(&self) -> Duration;
    fn sleep(&self, duration: Duration);
}

/// The host's clocks.
#[derive(Debug)]
pub(super) struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn unix_now(&self) -> f64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(since) => since.as_secs_f64(),
            Err(before) => -before.duration().as_secs_f64(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.origin.elapsed()
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// A measured offset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Offset {
    /// RTC minus system clock, in seconds.
    pub(super) seconds: f64,
    /// `false` when the RTC did not tick within [`MAX_WAIT`]: then the offset is only known to
    /// within ±0.5 s.
    pub(super) ticked: bool,
}

/// Reads the RTC once and returns its whole seconds with the system time of the read (the
/// middle of the call).
fn sample<E>(
    read: &mut impl FnMut() -> Result<i64, E>,
    clock: &impl Clock,
) -> Result<(i64, f64), E> {
    let before = clock.unix_now();
    let seconds = read()?;
    let after = clock.unix_now();
    Ok((seconds, (before + after) / 2.0))
}

/// Measures RTC minus system time; the first failed read ends it.
pub(super) fn measure<E>(
    mut read: impl FnMut() -> Result<i64, E>,
    clock: &impl Clock,
) -> Result<Offset, E> {
    let deadline = clock.elapsed() + MAX_WAIT;
    let (first, mut previous_at) = sample(&mut read, clock)?;
    while clock.elapsed() < deadline {
        clock.sleep(POLL);
        let (seconds, at) = sample(&mut read, clock)?;
        if seconds != first {
            // The second changed between the previous read and this one: at that instant the RTC
            // read exactly `seconds`.
            let tick = (previous_at + at) / 2.0;
            return Ok(Offset {
                seconds: seconds as f64 - tick,
                ticked: true,
            });
        }
        previous_at = at;
    }
    // No tick seen: the RTC's true time was somewhere in [first, first + 1) at the last read.
    Ok(Offset {
        seconds: first as f64 + 0.5 - previous_at,
        ticked: false,
    })
}

/// The latest offset of each RTC, by `device` label.
#[derive(Debug, Default)]
pub(super) struct Offsets(Mutex<HashMap<String, (Offset, Instant)>>);

impl Offsets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Offset, Instant)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn set(&self, device: &str, offset: Offset) {
        self.lock()
            .insert(device.to_owned(), (offset, Instant::now()));
    }

    pub(super) fn clear(&self, device: &str) {
        self.lock().remove(device);
    }

    /// The offset if it was measured within `max_age`: a thread stuck on a hung bus must not
    /// leave an old value looking current.
    pub(super) fn get(&self, device: &str, max_age: Duration) -> Option<Offset> {
        self.lock()
            .get(device)
            .filter(|(_, at)| at.elapsed() <= max_age)
            .map(|(offset, _)| *offset)
    }

    /// Forgets RTCs that are gone.
    pub(super) fn retain(&self, devices: &[String]) {
        self.lock().retain(|device, _| devices.contains(device));
    }
}

/// Runs `round` now and then every `interval` on the `rtc-offset` thread.
pub(super) fn spawn(interval: Duration, round: impl FnMut() + Send + 'static) -> Option<Periodic> {
    match periodic::spawn("rtc-offset", interval, First::Now, round) {
        Ok(worker) => Some(worker),
        Err(e) => {
            tracing::warn!("cannot start the RTC offset thread, no rpi_rtc_offset_seconds: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    /// A simulated system clock: time passes only when the measurement sleeps or reads.
    struct FakeClock {
        now: Cell<f64>,
        start: f64,
        read_cost: f64,
    }

    impl FakeClock {
        fn at(now: f64) -> Self {
            Self {
                now: Cell::new(now),
                start: now,
                read_cost: 0.0005,
            }
        }

        /// An RTC `offset` seconds ahead of this clock, read in whole seconds.
        fn rtc(&self, offset: f64) -> impl FnMut() -> Result<i64, ()> + '_ {
            move || {
                self.now.set(self.now.get() + self.read_cost);
                Ok((self.now.get() + offset).floor() as i64)
            }
        }
    }

    impl Clock for FakeClock {
        fn unix_now(&self) -> f64 {
            self.now.get()
        }
        fn elapsed(&self) -> Duration {
            Duration::from_secs_f64(self.now.get() - self.start)
        }
        fn sleep(&self, duration: Duration) {
            self.now.set(self.now.get() + duration.as_secs_f64());
        }
    }

    #[test]
    fn finds_sub_second_offsets_from_the_tick() {
        for offset in [0.0, 0.3, -0.75, 2.25, -1_000_000.4] {
            for start in [1_718_000_000.0, 1_718_000_000.42, 1_718_000_000.999] {
                let clock = FakeClock::at(start);
                let measured = measure(clock.rtc(offset), &clock).expect("measured");
                assert!(measured.ticked);
                assert!(
                    (measured.seconds - offset).abs() <= POLL.as_secs_f64(),
                    "offset {offset} from {start}: measured {}",
                    measured.seconds
                );
                assert!(clock.elapsed() <= Duration::from_millis(1100));
            }
        }
    }

    #[test]
    fn a_stopped_rtc_is_measured_coarsely_within_the_wait_bound() {
        let clock = FakeClock::at(1_718_000_000.2);
        let frozen = 1_717_999_000_i64;
        let measured = measure(|| Ok::<_, ()>(frozen), &clock).expect("measured");
        assert!(!measured.ticked);
        assert!((measured.seconds - (frozen as f64 + 0.5 - clock.unix_now())).abs() < 0.01);
        assert!(clock.elapsed() >= MAX_WAIT);
        assert!(clock.elapsed() < MAX_WAIT + Duration::from_millis(50));
    }

    #[test]
    fn the_first_failed_read_ends_the_measurement() {
        let clock = FakeClock::at(0.0);
        let mut reads = 0;
        let result = measure(
            || {
                reads += 1;
                if reads < 3 { Ok(5) } else { Err("gone") }
            },
            &clock,
        );
        assert_eq!(result, Err("gone"));
        assert_eq!(reads, 3);
    }

    #[test]
    fn cached_offsets_expire_and_are_forgotten_with_their_rtc() {
        let offsets = Offsets::default();
        let offset = Offset {
            seconds: 0.5,
            ticked: true,
        };
        offsets.set("rtc0", offset);
        offsets.set("rtc1", offset);
        assert_eq!(offsets.get("rtc0", Duration::from_secs(60)), Some(offset));
        assert_eq!(offsets.get("rtc0", Duration::ZERO), None);
        offsets.retain(&["rtc1".to_owned()]);
        assert_eq!(offsets.get("rtc0", Duration::from_secs(60)), None);
        offsets.clear("rtc1");
        assert_eq!(offsets.get("rtc1", Duration::from_secs(60)), None);
    }
}

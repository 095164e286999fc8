//! Power events: under-voltage episodes counted from the `rpi_volt` alarm, and USB over-current
//! from the hub driver's per-port counters.
//!
//! Nothing counts under-voltage: the kernel's `rpi_volt` driver reads (and clears) the
//! firmware's sticky bit every 2 s and sets `in0_lcrit_alarm` for that period. The `power-events`
//! thread reads the alarm once a second (a 2 s alarm cannot slip between two reads) and counts
//! its rising edges; scrapes read the count. A plain 1 Hz poll rather than `poll()` on the
//! driver's `sysfs_notify`: it works the same on fixture trees and costs one small read a second.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::collector::firmware::sysfs::under_voltage_alarm;
use crate::collector::parse::{Failures, if_present, list_dir, read_u64};
use crate::collector::periodic::{self, First, Periodic};
use crate::metrics::MetricSet;
use crate::paths::Paths;

/// How often the alarm is read: below the driver's 2 s poll, so no alarm period is missed.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Counts rising edges of an alarm. Pure.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EdgeCounter {
    high: bool,
    pub events: u64,
}

impl EdgeCounter {
    /// Takes one reading; an alarm already high at the first reading counts, it is an episode
    /// this process saw.
    pub fn observe(&mut self, alarm: bool) {
        if alarm && !self.high {
            self.events += 1;
        }
        self.high = alarm;
    }
}

/// The board file's `power:` section: the `rpi_volt` alarm of a simulated board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerBoard {
    /// The alarm pulses: high for `high_seconds` at the start of every `period_seconds`.
    pub under_voltage: Pulse,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pulse {
    pub period_seconds: f64,
    pub high_seconds: f64,
}

impl Pulse {
    /// The alarm `elapsed` after start-up.
    pub fn alarm_at(self, elapsed: Duration) -> bool {
        // Also rejects NaN, which a board file can spell `.nan`.
        if self.period_seconds.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater) {
            return false;
        }
        elapsed.as_secs_f64() % self.period_seconds < self.high_seconds
    }
}

/// Where the alarm is read from.
pub enum AlarmSource {
    Sysfs(Paths),
    Simulated { pulse: Pulse, started: Instant },
}

impl AlarmSource {
    /// The alarm now; `None` when it cannot be read (the reason is not logged every second:
    /// the count just stops growing).
    fn read(&self) -> Option<bool> {
        match self {
            AlarmSource::Sysfs(paths) => under_voltage_alarm(paths, &mut Failures::default()),
            AlarmSource::Simulated { pulse, started } => Some(pulse.alarm_at(started.elapsed())),
        }
    }
}

/// The running `power-events` thread and its count, which scrapes read.
#[derive(Debug)]
pub struct UnderVoltageEvents {
    events: Arc<AtomicU64>,
    _thread: Periodic,
}

impl UnderVoltageEvents {
    /// Starts the thread if the alarm can be read now; `None` (logged) otherwise.
    pub fn start(source: AlarmSource, interval: Duration) -> Option<Self> {
        let Some(first) = source.read() else {
            tracing::info!("no rpi_volt under-voltage alarm: no rpi_under_voltage_events_total");
            return None;
        };
        // The first reading is taken here, so the first scrape already has the counter.
        let mut counter = EdgeCounter::default();
        counter.observe(first);
        let events = Arc::new(AtomicU64::new(counter.events));
        let round = {
            let events = Arc::clone(&events);
            move || {
                if let Some(alarm) = source.read() {
                    counter.observe(alarm);
                    events.store(counter.events, Ordering::Relaxed);
                }
            }
        };
        match periodic::spawn("power-events", interval, First::AfterInterval, round) {
            Ok(thread) => Some(Self {
                events,
                _thread: thread,
            }),
            Err(e) => {
                tracing::error!(
                    "cannot start the power-events thread: {e}; no under-voltage events"
                );
                None
            }
        }
    }

    pub fn render(&self, out: &mut MetricSet) {
        out.counter(
            "rpi_under_voltage_events_total",
            "Under-voltage episodes since the exporter started: rising edges of the rpi_volt hwmon alarm, read every second",
        )
        .sample([], self.events.load(Ordering::Relaxed) as f64);
    }
}

impl std::fmt::Debug for AlarmSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AlarmSource::Sysfs(_) => "Sysfs",
            AlarmSource::Simulated { .. } => "Simulated",
        })
    }
}

/// USB ports and their over-current counts: the hub driver's port devices (`usb1-port1`,
/// `1-1-port2`) below each hub interface in `<sysfs>/bus/usb/devices/`.
pub(crate) fn collect_over_current(paths: &Paths, out: &mut MetricSet, failures: &mut Failures) {
    let devices = paths.sys("bus/usb/devices");
    let Some(entries) = if_present(failures, list_dir(&devices)) else {
        return;
    };
    let mut ports = std::collections::BTreeMap::new();
    // Hub interfaces (`1-1:1.0`) hold the port devices; only they are listed.
    for interface in entries.iter().filter(|e| e.contains(':')) {
        let dir = devices.join(interface);
        let Ok(children) = list_dir(&dir) else {
            continue;
        };
        for port in children.into_iter().filter(|c| c.contains("-port")) {
            let path = dir.join(&port).join("over_current_count");
            if let Some(count) = if_present(failures, read_u64(&path)) {
                ports.insert(port, count);
            }
        }
    }
    for (port, count) in &ports {
        out.counter(
            "rpi_usb_over_current_total",
            "Over-current conditions the USB hub driver counted on the port since boot (over_current_count)",
        )
        .sample([("port", port)], *count as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::fixture;

    #[test]
    fn a_pulsing_alarm_is_counted_once_per_pulse() {
        // High for 2 s of every 5 s, read every second for 30 s: six pulses, each seen twice.
        let pulse = Pulse {
            period_seconds: 5.0,
            high_seconds: 2.0,
        };
        let mut counter = EdgeCounter::default();
        for second in 0..30 {
            counter.observe(pulse.alarm_at(Duration::from_secs(second)));
        }
        assert_eq!(counter.events, 6);
        // Held high: one episode, however long.
        let mut held = EdgeCounter::default();
        for alarm in [false, true, true, true, false, false, true] {
            held.observe(alarm);
        }
        assert_eq!(held.events, 2);
        let never = Pulse {
            period_seconds: 0.0,
            high_seconds: 1.0,
        };
        assert!(!never.alarm_at(Duration::from_secs(3)));
    }

    #[test]
    fn a_board_file_describes_the_pulse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("board.yaml");
        let yaml = "power:\n  under_voltage: { period_seconds: 10, high_seconds: 3 }\n";
        std::fs::write(&path, yaml).expect("write");
        let board = crate::collector::board::load(&path).expect("valid board");
        let pulse = board.power.expect("power section").under_voltage;
        assert!(pulse.alarm_at(Duration::from_secs(22)));
        assert!(!pulse.alarm_at(Duration::from_secs(23)));
        std::fs::write(&path, "power:\n  under_voltage: { period: 10 }\n").expect("write");
        assert!(
            crate::collector::board::load(&path).is_err(),
            "keys are checked"
        );
    }

    #[test]
    fn the_thread_counts_a_simulated_board_s_pulses() {
        let pulse = Pulse {
            period_seconds: 0.2,
            high_seconds: 0.1,
        };
        let source = AlarmSource::Simulated {
            pulse,
            started: Instant::now(),
        };
        let events = UnderVoltageEvents::start(source, Duration::from_millis(20)).expect("started");
        let deadline = Instant::now() + Duration::from_secs(10);
        while events.events.load(Ordering::Relaxed) < 3 {
            assert!(Instant::now() < deadline, "no pulses counted");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut set = MetricSet::new();
        events.render(&mut set);
        assert!(set.get("rpi_under_voltage_events_total").is_some());
    }

    #[test]
    fn no_rpi_volt_means_no_thread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = Paths {
            sysfs: dir.path().to_owned(),
            ..Paths::default()
        };
        assert!(UnderVoltageEvents::start(AlarmSource::Sysfs(paths), POLL_INTERVAL).is_none());
    }

    #[test]
    fn over_current_counts_per_port() {
        let paths = Paths {
            sysfs: fixture("pi4-sd").join("sys"),
            ..Paths::default()
        };
        let mut set = MetricSet::new();
        let mut failures = Failures::default();
        collect_over_current(&paths, &mut set, &mut failures);
        assert!(failures.finish().is_ok());
        let family = set.get("rpi_usb_over_current_total").expect("ports");
        let ports: Vec<(&str, f64)> = family
            .samples
            .iter()
            .map(|s| (s.labels[0].1.as_str(), s.value))
            .collect();
        assert_eq!(
            ports,
            [
                ("1-1-port1", 0.0),
                ("1-1-port2", 1.0),
                ("1-1-port3", 0.0),
                ("1-1-port4", 0.0),
                ("usb1-port1", 0.0),
            ]
        );
    }
}

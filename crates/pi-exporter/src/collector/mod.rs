//! The collector framework: what a collector is, which ones exist, and how a scrape runs them.
//!
//! Every collector reads its source when scraped, on a blocking thread of its own, under a
//! deadline. A collector that errs or overruns costs only its own samples and sets its
//! `rpi_exporter_collector_success` to 0; the scrape always answers. Runs of one collector are
//! serialised (two Prometheus servers scraping at once wait for each other briefly); a collector
//! whose run overran is not started again until its stuck call returns, so a hung NFS mount or
//! I2C bus never piles up threads.

pub mod filesystem;
pub mod firmware;
pub mod rtc;
pub mod storage;
pub mod system;
pub mod time;

mod parse;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::metrics::MetricSet;
use crate::paths::Paths;
use crate::simulate::BoardFile;

pub use parse::{read_trimmed, read_u64};

/// A source of metrics.
pub trait Collector: Send + Sync + 'static {
    /// Reads the source and writes samples into `out`. On error, samples already written are
    /// still exported (the collector reports what it could) and the collector counts as failed.
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError>;
}

/// Why a collector could not read (all of) its source.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: {message}", path.display())]
    Malformed { path: PathBuf, message: String },
    #[error("{0}")]
    Other(String),
}

impl CollectError {
    pub fn io(path: &Path, source: io::Error) -> Self {
        Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub fn malformed(path: &Path, message: impl Into<String>) -> Self {
        Self::Malformed {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Settings of individual collectors (their `--collector.<name>.*` flags).
#[derive(Debug, Clone, Default)]
pub struct CollectorOptions {
    pub filesystem: filesystem::Options,
    pub storage: storage::Options,
    pub rtc: rtc::Options,
}

/// What a collector's constructor gets.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub paths: Paths,
    pub options: CollectorOptions,
    /// The simulated board (`--simulate.board`), replacing hardware devices when set.
    pub board: Option<Arc<BoardFile>>,
}

/// A collector the exporter knows, with its default state and constructor.
pub struct CollectorSpec {
    pub name: &'static str,
    pub help: &'static str,
    pub enabled_by_default: bool,
    /// Probes the system once at start-up (and logs what it found) and builds the collector.
    pub build: fn(&BuildContext) -> Arc<dyn Collector>,
}

impl fmt::Debug for CollectorSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorSpec")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Every collector, in the order their metrics appear in a scrape.
pub const ALL: &[CollectorSpec] = &[
    CollectorSpec {
        name: "filesystem",
        help: "Filesystem size, free space, inodes and read-only state per mount",
        enabled_by_default: true,
        build: |ctx| Arc::new(filesystem::FilesystemCollector::new(ctx)),
    },
    CollectorSpec {
        name: "storage",
        help: "ext4 error counters, SD/eMMC wear and per-device I/O",
        enabled_by_default: true,
        build: |ctx| Arc::new(storage::StorageCollector::new(ctx)),
    },
    CollectorSpec {
        name: "firmware",
        help: "SoC temperature, throttling, clocks, voltages, board identity, Pi 5 PMIC rails and fan, from the firmware mailbox (sysfs as fallback)",
        enabled_by_default: true,
        build: |ctx| Arc::new(firmware::FirmwareCollector::new(ctx)),
    },
    CollectorSpec {
        name: "system",
        help: "Boot time, uptime, memory, swap and load",
        enabled_by_default: true,
        build: |ctx| Arc::new(system::SystemCollector::new(ctx)),
    },
    CollectorSpec {
        name: "rtc",
        help: "Real-time clocks (kernel-owned, Pi 5, or a DS3231 read over I2C): time validity, oscillator stop, offset to the system clock, temperature, battery",
        enabled_by_default: true,
        build: |ctx| Arc::new(rtc::RtcCollector::new(ctx)),
    },
    CollectorSpec {
        name: "time",
        help: "System clock synchronisation from the kernel (adjtimex, read-only): synchronised, error bounds, offset, frequency, status flags",
        enabled_by_default: true,
        build: |ctx| Arc::new(time::TimeCollector::new(ctx)),
    },
];

struct Slot {
    name: &'static str,
    collector: Arc<dyn Collector>,
    /// Held by the blocking task for the whole run, so runs never overlap.
    run_lock: Arc<tokio::sync::Mutex<()>>,
    /// When the current run started; `None` while idle. Tells a stuck run from a concurrent one.
    running_since: Arc<Mutex<Option<Instant>>>,
    /// Whether the previous run succeeded, so failures are logged once per change.
    last_ok: Arc<AtomicBool>,
}

/// Runs the enabled collectors for each scrape.
pub struct Scraper {
    slots: Vec<Slot>,
    timeout: Duration,
}

impl fmt::Debug for Scraper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.slots.iter().map(|s| s.name).collect();
        f.debug_struct("Scraper")
            .field("collectors", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

type RunHandle = tokio::task::JoinHandle<(MetricSet, Result<(), CollectError>)>;

struct Outcome {
    name: &'static str,
    ok: bool,
    duration: Duration,
    metrics: Option<MetricSet>,
}

impl Scraper {
    /// `timeout` bounds every collector of a scrape.
    pub fn new(collectors: Vec<(&'static str, Arc<dyn Collector>)>, timeout: Duration) -> Self {
        let slots = collectors
            .into_iter()
            .map(|(name, collector)| Slot {
                name,
                collector,
                run_lock: Arc::new(tokio::sync::Mutex::new(())),
                running_since: Arc::new(Mutex::new(None)),
                last_ok: Arc::new(AtomicBool::new(true)),
            })
            .collect();
        Self { slots, timeout }
    }

    /// Names of the collectors this scraper runs.
    pub fn collector_names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.slots.iter().map(|s| s.name)
    }

    /// Runs every collector concurrently and returns their metrics followed by the exporter's own.
    /// `deadline` (for example from Prometheus' scrape-timeout header) shortens the timeout.
    pub async fn scrape(&self, deadline: Option<Duration>) -> MetricSet {
        let timeout = deadline.map_or(self.timeout, |d| d.min(self.timeout));
        let until = tokio::time::Instant::now() + timeout;
        let mut runs = Vec::with_capacity(self.slots.len());
        for slot in &self.slots {
            runs.push(self.start(slot, timeout, until).await);
        }

        let mut outcomes = Vec::with_capacity(runs.len());
        for (slot, run) in self.slots.iter().zip(runs) {
            let outcome = match run {
                Err(reason) => {
                    self.note(slot, false, &reason);
                    Outcome {
                        name: slot.name,
                        ok: false,
                        duration: Duration::ZERO,
                        metrics: None,
                    }
                }
                Ok((started, handle)) => match tokio::time::timeout_at(until, handle).await {
                    Ok(Ok((metrics, result))) => {
                        let ok = result.is_ok();
                        if let Err(e) = &result {
                            self.note(slot, false, &e.to_string());
                        } else {
                            self.note(slot, true, "");
                        }
                        Outcome {
                            name: slot.name,
                            ok,
                            duration: started.elapsed(),
                            metrics: Some(metrics),
                        }
                    }
                    Ok(Err(join_error)) => {
                        // A panic inside a collector: contained here, reported as a failure.
                        self.note(slot, false, &format!("collector panicked: {join_error}"));
                        Outcome {
                            name: slot.name,
                            ok: false,
                            duration: started.elapsed(),
                            metrics: None,
                        }
                    }
                    Err(_elapsed) => {
                        self.note(slot, false, &format!("timed out after {timeout:?}"));
                        Outcome {
                            name: slot.name,
                            ok: false,
                            duration: started.elapsed(),
                            metrics: None,
                        }
                    }
                },
            };
            outcomes.push(outcome);
        }
        Self::assemble(outcomes)
    }

    async fn start(
        &self,
        slot: &Slot,
        timeout: Duration,
        until: tokio::time::Instant,
    ) -> Result<(Instant, RunHandle), String> {
        let since = *slot
            .running_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if since.is_some_and(|t| t.elapsed() >= timeout) {
            return Err("previous run is still stuck in its source; not started".into());
        }
        let guard = tokio::time::timeout_at(until, Arc::clone(&slot.run_lock).lock_owned())
            .await
            .map_err(|_| format!("still busy with a concurrent scrape after {timeout:?}"))?;
        let collector = Arc::clone(&slot.collector);
        let running_since = Arc::clone(&slot.running_since);
        let started = Instant::now();
        *running_since.lock().unwrap_or_else(PoisonError::into_inner) = Some(started);
        let handle = tokio::task::spawn_blocking(move || {
            // Marks the slot idle however the run ends, including by panic.
            struct Idle {
                running_since: Arc<Mutex<Option<Instant>>>,
                _run_lock: tokio::sync::OwnedMutexGuard<()>,
            }
            impl Drop for Idle {
                fn drop(&mut self) {
                    *self
                        .running_since
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = None;
                }
            }
            let _idle = Idle {
                running_since,
                _run_lock: guard,
            };
            let mut metrics = MetricSet::new();
            let result = collector.collect(&mut metrics);
            (metrics, result)
        });
        Ok((started, handle))
    }

    fn note(&self, slot: &Slot, ok: bool, reason: &str) {
        let was_ok = slot.last_ok.swap(ok, Ordering::AcqRel);
        match (was_ok, ok) {
            (true, false) => tracing::warn!(collector = slot.name, "collector failed: {reason}"),
            (false, false) => {
                tracing::debug!(collector = slot.name, "collector still failing: {reason}")
            }
            (false, true) => tracing::info!(collector = slot.name, "collector recovered"),
            (true, true) => {}
        }
    }

    fn assemble(outcomes: Vec<Outcome>) -> MetricSet {
        let mut out = MetricSet::new();
        let mut status = MetricSet::new();
        for outcome in outcomes {
            status
                .gauge(
                    "rpi_exporter_collector_success",
                    "Whether the collector read its source completely in this scrape (1) or not (0)",
                )
                .sample([("collector", outcome.name)], if outcome.ok { 1.0 } else { 0.0 });
            status
                .gauge(
                    "rpi_exporter_collector_duration_seconds",
                    "How long the collector took in this scrape",
                )
                .sample(
                    [("collector", outcome.name)],
                    outcome.duration.as_secs_f64(),
                );
            if let Some(metrics) = outcome.metrics {
                out.append(metrics);
            }
        }
        out.append(status);
        out.gauge(
            "rpi_exporter_build_info",
            "A metric with a constant value 1 labelled with the exporter's version, revision and compiler",
        )
        .sample(
            [
                ("version", env!("CARGO_PKG_VERSION")),
                ("revision", env!("PI_EXPORTER_REVISION")),
                ("rustc", env!("PI_EXPORTER_RUSTC")),
            ],
            1.0,
        );
        out
    }
}

/// Builds the collectors that are enabled, in the order of [`ALL`].
pub fn build_enabled(
    ctx: &BuildContext,
    enabled: &[&str],
) -> Vec<(&'static str, Arc<dyn Collector>)> {
    ALL.iter()
        .filter(|spec| enabled.contains(&spec.name))
        .map(|spec| (spec.name, (spec.build)(ctx)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc;

    struct Fixed(f64);
    impl Collector for Fixed {
        fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
            out.gauge("rpi_test_value", "test").sample([], self.0);
            Ok(())
        }
    }

    struct Partial;
    impl Collector for Partial {
        fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
            out.gauge("rpi_partial_value", "test").sample([], 7.0);
            Err(CollectError::Other("second source broken".into()))
        }
    }

    /// Blocks until released, like a statvfs on a dead NFS server.
    struct Hung(Mutex<mpsc::Receiver<()>>);
    impl Collector for Hung {
        fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
            let _ = self.0.lock().map(|rx| rx.recv());
            out.gauge("rpi_hung_value", "test").sample([], 1.0);
            Ok(())
        }
    }

    struct Panics;
    impl Collector for Panics {
        fn collect(&self, _: &mut MetricSet) -> Result<(), CollectError> {
            panic!("bug in a collector");
        }
    }

    fn value(set: &MetricSet, name: &str, collector: &str) -> Option<f64> {
        set.get(name)?
            .samples
            .iter()
            .find(|s| {
                s.labels
                    .iter()
                    .any(|(k, v)| *k == "collector" && v == collector)
            })
            .map(|s| s.value)
    }

    #[tokio::test]
    async fn hung_collector_costs_only_itself_and_is_not_restarted_while_stuck() {
        let (release, rx) = mpsc::channel();
        let scraper = Scraper::new(
            vec![
                ("fixed", Arc::new(Fixed(3.0))),
                ("hung", Arc::new(Hung(Mutex::new(rx)))),
            ],
            Duration::from_millis(100),
        );
        let first = scraper.scrape(None).await;
        assert_eq!(
            first.get("rpi_test_value").map(|f| f.samples[0].value),
            Some(3.0)
        );
        assert_eq!(
            value(&first, "rpi_exporter_collector_success", "fixed"),
            Some(1.0)
        );
        assert_eq!(
            value(&first, "rpi_exporter_collector_success", "hung"),
            Some(0.0)
        );
        assert!(first.get("rpi_hung_value").is_none());

        // Still stuck: the second scrape must not start another thread for it.
        let second = scraper.scrape(None).await;
        assert_eq!(
            value(&second, "rpi_exporter_collector_success", "hung"),
            Some(0.0)
        );
        assert_eq!(
            value(&second, "rpi_exporter_collector_duration_seconds", "hung"),
            Some(0.0)
        );

        // Unstick it; the next scrape runs it again and succeeds (one more message unblocks it).
        release.send(()).expect("send");
        release.send(()).expect("send");
        let mut recovered = None;
        for _ in 0..50 {
            let scrape = scraper.scrape(None).await;
            if value(&scrape, "rpi_exporter_collector_success", "hung") == Some(1.0) {
                recovered = Some(scrape);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(recovered.is_some(), "hung collector never recovered");
    }

    #[tokio::test]
    async fn partial_results_are_kept_and_panics_are_contained() {
        let scraper = Scraper::new(
            vec![("partial", Arc::new(Partial)), ("panics", Arc::new(Panics))],
            Duration::from_secs(5),
        );
        let set = scraper.scrape(None).await;
        assert_eq!(
            set.get("rpi_partial_value").map(|f| f.samples[0].value),
            Some(7.0)
        );
        assert_eq!(
            value(&set, "rpi_exporter_collector_success", "partial"),
            Some(0.0)
        );
        assert_eq!(
            value(&set, "rpi_exporter_collector_success", "panics"),
            Some(0.0)
        );
        assert!(set.get("rpi_exporter_build_info").is_some());
    }
}

//! The collector framework: what a collector is, which ones exist, and how a scrape runs them.
//!
//! Every collector reads its source when scraped, under the scrape's deadline (see `scrape`). A
//! collector that errs or overruns costs only its own samples and sets its
//! `rpi_exporter_collector_success` to 0; the scrape always answers.

pub mod board;
pub mod doctor;
pub mod filesystem;
pub mod firmware;
pub mod flags;
pub mod history;
pub mod rtc;
pub mod storage;
pub mod system;
pub mod time;
pub mod ups;

pub(crate) mod parse;
mod periodic;
mod scrape;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::metrics::MetricSet;
use crate::paths::Paths;

pub use board::BoardFile;
pub use flags::FlagError;
pub use parse::{read_trimmed, read_u64};
pub use scrape::Scraper;

/// A source of metrics.
pub trait Collector: Send + Sync + 'static {
    /// Reads the source and writes samples into `out`. On error, samples already written are
    /// still exported (the collector reports what it could) and the collector counts as failed.
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError>;

    /// Whether the next `collect` may wait on something outside the kernel's memory: a device
    /// (firmware mailbox, I2C, an RTC read through its driver) or a network filesystem. Those
    /// run on the blocking pool under the scrape's deadline; the rest (procfs, counters the
    /// kernel keeps) run on the serving thread, which saves a thread wake-up per scrape.
    fn may_block(&self) -> bool {
        true
    }

    /// Called once when the exporter stops cleanly (SIGTERM), after the last scrape: the
    /// history collector records the clean stop there.
    fn stop(&self) {}
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
    pub history: history::Options,
    pub rtc: rtc::Options,
    pub ups: ups::Options,
    pub doctor: doctor::Options,
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
    /// Its own flags, declared beside its code (`cli` adds them after the on/off switches).
    pub args: fn() -> Vec<clap::Arg>,
    /// Reads those flags into its part of the options; the error names the flag.
    pub options: fn(&clap::ArgMatches, &mut CollectorOptions) -> Result<(), FlagError>,
    /// Flags that, when given, ask for this collector even if it is off by default.
    pub enabled_by: &'static [&'static str],
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
        args: filesystem::args,
        options: |m, o| {
            o.filesystem = filesystem::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
    CollectorSpec {
        name: "storage",
        help: "ext4 error counters, SD/eMMC wear and per-device I/O",
        enabled_by_default: true,
        build: |ctx| Arc::new(storage::StorageCollector::new(ctx)),
        args: storage::args,
        options: |m, o| {
            o.storage = storage::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
    CollectorSpec {
        name: "firmware",
        help: "SoC temperature, throttling, clocks, voltages, board identity, Pi 5 PMIC rails and fan, from the firmware mailbox (sysfs as fallback)",
        enabled_by_default: true,
        build: |ctx| Arc::new(firmware::FirmwareCollector::new(ctx)),
        args: Vec::new,
        options: |_, _| Ok(()),
        enabled_by: &[],
    },
    CollectorSpec {
        name: "system",
        help: "Boot time, uptime, memory, swap and load",
        enabled_by_default: true,
        build: |ctx| Arc::new(system::SystemCollector::new(ctx)),
        args: Vec::new,
        options: |_, _| Ok(()),
        enabled_by: &[],
    },
    CollectorSpec {
        name: "history",
        help: "Why the Pi last restarted (device tree), clean and unclean shutdowns and boots (--collector.history.state-file), under-voltage events, USB over-current",
        enabled_by_default: true,
        build: |ctx| Arc::new(history::HistoryCollector::new(ctx)),
        args: history::args,
        options: |m, o| {
            o.history = history::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
    CollectorSpec {
        name: "rtc",
        help: "Real-time clocks (kernel-owned, Pi 5, or a DS3231 read over I2C): time validity, oscillator stop, offset to the system clock, temperature, battery",
        enabled_by_default: true,
        build: |ctx| Arc::new(rtc::RtcCollector::new(ctx)),
        args: rtc::args,
        options: |m, o| {
            o.rtc = rtc::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
    CollectorSpec {
        name: "time",
        help: "System clock synchronisation from the kernel (adjtimex, read-only): synchronised, error bounds, offset, frequency, status flags",
        enabled_by_default: true,
        build: |ctx| Arc::new(time::TimeCollector::new(ctx)),
        args: Vec::new,
        options: |_, _| Ok(()),
        enabled_by: &[],
    },
    CollectorSpec {
        name: "ups",
        help: "UPS HAT (I2C gauge read-only, power-loss GPIO) or NUT UPS: on battery, voltage, current, charge, runtime; opt-in shutdown guard (--ups.*)",
        enabled_by_default: false,
        build: |ctx| Arc::new(ups::UpsCollector::new(ctx)),
        args: ups::args,
        options: |m, o| {
            o.ups = ups::options(m)?;
            Ok(())
        },
        enabled_by: &["ups.board", "ups.config"],
    },
    CollectorSpec {
        name: "doctor",
        help: "The field checklist of `pi-exporter doctor` (storage, power, time, recovery, access), run in the background every --collector.doctor.interval",
        enabled_by_default: true,
        build: |ctx| Arc::new(doctor::DoctorCollector::new(ctx)),
        args: doctor::args,
        options: |m, o| {
            o.doctor = doctor::options(m)?;
            Ok(())
        },
        enabled_by: &[],
    },
];

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

/// A fixture tree of `tests/fixtures/`, for the collectors' unit tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

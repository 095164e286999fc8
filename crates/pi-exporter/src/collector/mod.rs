//! The collector framework (what a collector is, how a scrape runs them) and the hardware
//! collectors; the list of every collector, the doctor's included, is in `registry.rs`.
//!
//! Every collector reads its source when scraped, under the scrape's deadline (see `scrape`). A
//! collector that errs or overruns costs only its own samples and sets its
//! `rpi_exporter_collector_success` to 0; the scrape always answers.

pub mod board;
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
pub(crate) mod periodic;
mod scrape;

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

/// Settings of the hardware collectors (their `--collector.<name>.*` and `--ups.*` flags).
#[derive(Debug, Clone, Default)]
pub struct CollectorOptions {
    pub filesystem: filesystem::Options,
    pub storage: storage::Options,
    pub history: history::Options,
    pub rtc: rtc::Options,
    pub ups: ups::Options,
}

/// What a collector's constructor gets.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub paths: Paths,
    pub options: CollectorOptions,
    /// The simulated board (`--simulate.board`), replacing hardware devices when set.
    pub board: Option<Arc<BoardFile>>,
}

/// A fixture tree of `tests/fixtures/`, for the collectors' unit tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

//! `storage`: ext4 error counters, SD/eMMC health and per-device I/O.

use regex_lite::Regex;

use super::{BuildContext, CollectError, Collector};
use crate::metrics::MetricSet;
use crate::paths::Paths;

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Block devices to leave out of the I/O metrics (`--collector.storage.device-exclude`).
    pub device_exclude: Option<Regex>,
}

#[derive(Debug)]
pub struct StorageCollector {
    paths: Paths,
    options: Options,
}

impl StorageCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        Self {
            paths: ctx.paths.clone(),
            options: ctx.options.storage.clone(),
        }
    }
}

impl Collector for StorageCollector {
    fn collect(&self, _out: &mut MetricSet) -> Result<(), CollectError> {
        let _ = (&self.paths, &self.options);
        Err(CollectError::Other(
            "storage collector not written yet".into(),
        ))
    }
}

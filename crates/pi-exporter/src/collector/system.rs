//! `system`: boot time, uptime, memory, swap and load averages.

use super::{BuildContext, CollectError, Collector};
use crate::metrics::MetricSet;
use crate::paths::Paths;

#[derive(Debug)]
pub struct SystemCollector {
    paths: Paths,
}

impl SystemCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        Self {
            paths: ctx.paths.clone(),
        }
    }
}

impl Collector for SystemCollector {
    fn collect(&self, _out: &mut MetricSet) -> Result<(), CollectError> {
        let _ = &self.paths;
        Err(CollectError::Other(
            "system collector not written yet".into(),
        ))
    }
}

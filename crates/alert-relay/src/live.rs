//! [`Live`]: the configuration in force and the wall clock, shared by every service. Below the
//! services and the wiring, so that neither reaches up to the crate root for it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use crate::config::Config;
use crate::time;

/// The configuration in force; replaced as a whole on SIGHUP.
#[derive(Debug)]
pub struct Live {
    path: PathBuf,
    config: RwLock<Arc<Config>>,
    /// The wall clock for ack-link expiry and rotation look-ups.
    pub clock: time::WallClock,
}

impl Live {
    pub fn new(path: PathBuf, config: Config) -> Self {
        Self {
            path,
            config: RwLock::new(Arc::new(config)),
            clock: time::WallClock::default(),
        }
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.config.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The configuration file, read again on SIGHUP.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn replace(&self, config: Config) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(config);
    }
}

//! Maintenance windows as a service: the stored windows cached for intake (every webhook asks
//! [`Maintenance::holding`]), the escalator (which holds and releases incidents) and the pages
//! and API that create and end them.
//!
//! Several relays on one PostgreSQL: each instance reads the windows again every
//! [`REFRESH_EVERY`] ([`Maintenance::run`]), so a window created or ended on one is in force on
//! every other within that time; a window's start and end by the clock need no refresh (they
//! are computed from the stored times). The instance that creates or ends a window reads them
//! again at once. A poll rather than a notification: only the leader listens for them, and
//! followers take webhooks too.

use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use crate::live::Live;
use crate::metrics::MaintenanceStats;
use crate::model::maintenance::{MaintenanceWrite, MaintenanceWritten, NewWindow, Window};
use crate::payload::Labels;
use crate::store::{Store, StoreError, Write, Written};

/// How often an instance on a shared database reads the windows again.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub struct Maintenance {
    store: Store,
    live: Arc<Live>,
    windows: RwLock<Arc<Vec<Window>>>,
}

impl Maintenance {
    /// The service with the stored windows loaded.
    pub async fn start(store: Store, live: Arc<Live>) -> Result<Arc<Self>, StoreError> {
        let m = Self::unloaded(store, live);
        m.refresh().await?;
        Ok(m)
    }

    /// The service before its first [`Self::refresh`]: no window holds anything yet (tests of
    /// other services, which never create one).
    pub fn unloaded(store: Store, live: Arc<Live>) -> Arc<Self> {
        Arc::new(Maintenance {
            store,
            live,
            windows: RwLock::new(Arc::new(Vec::new())),
        })
    }

    /// Reads the windows (and their suppressed counts) from the store again.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let windows = self.store.read(|b| b.maintenance_windows()).await?;
        *self.windows.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(windows);
        Ok(())
    }

    /// The windows in force, to come, and over for less than 7 days, by id (as last read).
    pub fn windows(&self) -> Arc<Vec<Window>> {
        Arc::clone(&self.windows.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Stores a validated window; it holds matching alerts from its start on.
    pub async fn create(&self, new: NewWindow) -> Result<Window, StoreError> {
        let written = self
            .store
            .write(Write::Maintenance(MaintenanceWrite::Create(new.clone())))
            .await?;
        let Written::Maintenance(MaintenanceWritten::Created(id)) = written else {
            return Err(StoreError::Corrupt(
                "unexpected reply to a new maintenance window".into(),
            ));
        };
        self.refresh().await?;
        tracing::info!(window = id, matchers = %new.matchers_text, author = %new.author, "maintenance window created");
        let stored = self.windows().iter().find(|w| w.id == id).cloned();
        Ok(stored.unwrap_or_else(|| Window {
            id,
            matchers: new.matchers,
            matchers_text: new.matchers_text,
            starts_ms: new.starts_ms,
            ends_ms: new.ends_ms,
            weekly: new.weekly,
            reason: new.reason,
            author: new.author,
            created_ms: self.live.clock.now_millis(),
            ended_ms: None,
            ended_by: None,
            suppressed: 0,
        }))
    }

    /// Ends window `id` now (a weekly one for good); the incidents it held that are still open
    /// page as usual. False when no such window is in force or to come.
    pub async fn end(&self, id: i64, by: String) -> Result<bool, StoreError> {
        let at = self.live.clock.now_millis();
        let who = by.clone();
        let written = self
            .store
            .write(Write::Maintenance(MaintenanceWrite::End { id, by, at }))
            .await?;
        let Written::Maintenance(MaintenanceWritten::Ended { found, released }) = written else {
            return Err(StoreError::Corrupt(
                "unexpected reply to ending a maintenance window".into(),
            ));
        };
        self.refresh().await?;
        if found {
            tracing::info!(window = id, by = %who, released = released.len(), "maintenance window ended");
        }
        Ok(found)
    }

    /// The window in force at `now_ms` whose matchers match `labels` (the oldest, when several
    /// do), if any.
    pub fn holding(&self, labels: &Labels, now_ms: i64) -> Option<i64> {
        self.windows()
            .iter()
            .find(|w| w.active_at(now_ms) && w.matches(labels))
            .map(|w| w.id)
    }

    /// Whether window `id` is in force at `now_ms` (one no longer listed is not).
    pub fn is_active(&self, id: i64, now_ms: i64) -> bool {
        self.windows()
            .iter()
            .any(|w| w.id == id && w.active_at(now_ms))
    }

    /// How long window `id` stays in force from `now_ms` (zero when it is not).
    pub fn time_left(&self, id: i64, now_ms: i64) -> Duration {
        let end = self
            .windows()
            .iter()
            .find(|w| w.id == id)
            .and_then(|w| w.current_or_next(now_ms))
            .filter(|(start, _)| *start <= now_ms)
            .map_or(now_ms, |(_, end)| end);
        Duration::from_millis(u64::try_from(end - now_ms).unwrap_or(0))
    }

    /// On a shared database: reads the windows again every [`REFRESH_EVERY`] until aborted.
    pub async fn run(self: Arc<Self>) {
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            if let Err(e) = self.refresh().await {
                tracing::warn!("cannot read the maintenance windows: {e}");
            }
        }
    }
}

impl MaintenanceStats for Maintenance {
    fn maintenance(&self) -> (usize, Vec<(i64, i64)>) {
        let now = self.live.clock.now_millis();
        let windows = self.windows();
        let active = windows.iter().filter(|w| w.active_at(now)).count();
        (
            active,
            windows.iter().map(|w| (w.id, w.suppressed)).collect(),
        )
    }
}

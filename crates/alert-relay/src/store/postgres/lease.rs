//! Leadership on PostgreSQL: one connection per instance holds the session advisory lock
//! [`LEADER_LOCK`] while it leads, proves it is alive every second, and listens for the other
//! instances' notifications ([`super::notify`]). Taking the lock bumps the fencing number in
//! `leader`, which every engine write checks (`Write::Fenced`).
//!
//! The server releases the lock when the session ends: at once when the process dies (the
//! kernel closes the socket), within about [`SERVER_NOTICES_MS`] when the host or its network
//! is gone (the keepalive and user-timeout settings of the session). A leader that cannot
//! prove it is alive within [`ALIVE_TIMEOUT`] stops its engines first, well before then.

use std::time::Duration;

use postgres::Client;
use postgres::fallible_iterator::FallibleIterator as _;

use super::notify::{self, Notice};
use super::{PgSettings, open};
use crate::store::StoreError;

/// `pg_try_advisory_lock` key of leadership ("alert-relay leader").
const LEADER_LOCK: i64 = 0x616c_6572_746c_6561;
/// How long a liveness query may take before the leader counts itself cut off.
pub const ALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Notifications taken per round.
const NOTICES_MAX: usize = 1000;
/// When the server notices a vanished leader at the latest (for the docs and tests).
pub const SERVER_NOTICES_MS: u64 = 11_000;

/// This instance's leadership connection.
pub struct Lease {
    client: Client,
    server: String,
    holder: String,
    /// The fencing number while this session holds the lock.
    epoch: Option<i64>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("server", &self.server)
            .field("holder", &self.holder)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Connects (the schema is the pool's business; the session's TCP timeouts are set by
    /// `open`) and listens. `holder` names this instance in `leader` (host and pid).
    pub fn connect(settings: &PgSettings, holder: &str) -> Result<Self, StoreError> {
        let (mut client, server) = open(settings)?;
        client.batch_execute(&format!("LISTEN {}", notify::CHANNEL))?;
        Ok(Lease {
            client,
            server,
            holder: holder.to_owned(),
            epoch: None,
        })
    }

    /// The fencing number while leading.
    pub fn epoch(&self) -> Option<i64> {
        self.epoch
    }

    /// Takes the lock if it is free: then bumps the fencing number (waiting for engine writes
    /// of the former leader in flight, which hold the row) and returns it.
    pub fn try_lead(&mut self, now_ms: i64) -> Result<Option<i64>, StoreError> {
        if self.epoch.is_some() {
            return Ok(self.epoch);
        }
        let got: bool = self
            .client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])?
            .get(0);
        if !got {
            return Ok(None);
        }
        let epoch: i64 = self
            .client
            .query_one(
                "UPDATE leader SET epoch = epoch + 1, holder = $1, since = $2 WHERE id = 1 \
                 RETURNING epoch",
                &[&self.holder, &now_ms],
            )?
            .get(0);
        self.epoch = Some(epoch);
        Ok(self.epoch)
    }

    /// Whether the server answers within [`ALIVE_TIMEOUT`].
    pub fn alive(&mut self) -> Result<(), StoreError> {
        self.client
            .is_valid(ALIVE_TIMEOUT)
            .map_err(|e| StoreError::Open {
                path: format!("PostgreSQL at {}", self.server),
                message: super::cause(&e),
            })
    }

    /// The notices that arrive within `wait`: returns as soon as some have (with those
    /// already queued behind them, at most [`NOTICES_MAX`] notifications), so they are acted
    /// on at once and a busy channel cannot keep a round from ending.
    pub fn notices(&mut self, wait: Duration) -> Result<Vec<Notice>, StoreError> {
        let mut notifications = self.client.notifications();
        let Some(first) = notifications.timeout_iter(wait).next()? else {
            return Ok(Vec::new());
        };
        let mut out = notify::parse(first.payload());
        let mut queued = notifications.iter();
        for _ in 1..NOTICES_MAX {
            match queued.next()? {
                Some(n) => out.extend(notify::parse(n.payload())),
                None => break,
            }
        }
        Ok(out)
    }
}

//! Which instance runs the engines (delivery, escalation, storms, budgets, pollers, the
//! dead-man's switch, re-sync, pruning). On SQLite there is one instance and it always does.
//! On PostgreSQL every instance campaigns on its own thread with a [`Lease`]: the one holding
//! the lock leads with a fencing number; the others follow, take webhooks, acknowledgements
//! and API calls, and try again every [`ROUND`]. A leader that cannot prove it is alive
//! becomes a follower at once (its engines stop before the server releases the lock).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use crate::store::StoreError;
use crate::store::postgres::PgSettings;
use crate::store::postgres::lease::Lease;
use crate::store::postgres::notify::Notice;

/// One campaign round: try the lock, take notices, prove the session is alive.
pub const ROUND: Duration = Duration::from_secs(1);

/// This instance's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Runs the engines; its engine writes carry `epoch`.
    Leader {
        epoch: i64,
    },
}

/// The role as it changes, and the other instances' notices while leading.
#[derive(Debug)]
pub struct Leadership {
    pub role: watch::Receiver<Role>,
    pub notices: mpsc::UnboundedReceiver<Notice>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The sole instance's role, kept so that `role` stays open.
    _sole: Option<watch::Sender<Role>>,
}

impl Leadership {
    /// The only instance (SQLite): leads from the start, forever.
    pub fn sole() -> Self {
        let (sole, role) = watch::channel(Role::Leader { epoch: 0 });
        let (_, notices) = mpsc::unbounded_channel();
        Leadership {
            role,
            notices,
            stop: Arc::new(AtomicBool::new(false)),
            thread: None,
            _sole: Some(sole),
        }
    }

    /// Campaigns on PostgreSQL until [`Leadership::stop`]. `holder` names this instance.
    pub fn elect(settings: PgSettings, holder: String) -> std::io::Result<Self> {
        let (role_tx, role) = watch::channel(Role::Follower);
        let (notice_tx, notices) = mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let campaign = Campaign {
            settings,
            holder,
            role: role_tx,
            notices: notice_tx,
            stop: Arc::clone(&stop),
        };
        let thread = std::thread::Builder::new()
            .name("alert-relay-leader".into())
            .spawn(move || campaign.run())?;
        Ok(Leadership {
            role,
            notices,
            stop,
            thread: Some(thread),
            _sole: None,
        })
    }

    /// Ends the campaign and closes the lease (another instance can lead at once).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Campaign {
    settings: PgSettings,
    holder: String,
    role: watch::Sender<Role>,
    notices: mpsc::UnboundedSender<Notice>,
    stop: Arc<AtomicBool>,
}

impl Campaign {
    fn run(self) {
        let mut reported = false;
        while !self.stop.load(Ordering::SeqCst) {
            match Lease::connect(&self.settings, &self.holder) {
                Ok(lease) => {
                    reported = false;
                    self.hold(lease);
                }
                Err(e) if !reported => {
                    tracing::warn!("leadership: cannot reach the database, following: {e}");
                    reported = true;
                }
                Err(e) => tracing::debug!("leadership: {e}"),
            }
            self.step_down();
            if !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(ROUND);
            }
        }
    }

    /// Rounds on one connection until it fails or the campaign stops; between rounds, the
    /// other instances' notices are passed on as they arrive. Steps down before it returns:
    /// closing a connection on a cut network blocks until the TCP user timeout, and the
    /// engines must stop before that.
    fn hold(&self, mut lease: Lease) {
        let mut next_round = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            if Instant::now() >= next_round {
                if let Err(e) = self.round(&mut lease) {
                    if lease.epoch().is_some() {
                        tracing::error!("leadership lost, stopping the engines: {e}");
                    } else {
                        tracing::warn!("leadership: {e}");
                    }
                    self.step_down();
                    return;
                }
                next_round = Instant::now() + ROUND;
            }
            match lease.notices(next_round.saturating_duration_since(Instant::now())) {
                Ok(notices) if lease.epoch().is_some() => {
                    for n in notices {
                        let _ = self.notices.send(n);
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if lease.epoch().is_some() {
                        tracing::error!("leadership lost, stopping the engines: {e}");
                    }
                    self.step_down();
                    return;
                }
            }
        }
    }

    /// One round: take the lock if it is free, and prove the session is alive.
    fn round(&self, lease: &mut Lease) -> Result<(), StoreError> {
        if lease.epoch().is_none()
            && let Some(epoch) = lease.try_lead(crate::time::now_millis())?
        {
            tracing::info!(epoch, "leading: this instance runs the engines");
            self.role.send_replace(Role::Leader { epoch });
        }
        lease.alive()
    }

    fn step_down(&self) {
        if matches!(*self.role.borrow(), Role::Leader { .. }) {
            self.role.send_replace(Role::Follower);
        }
    }
}

/// How this instance names itself in the `leader` table: host and process id.
pub fn holder() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}

//! Durable state: alert events (deduplicated) and the delivery outbox.
//!
//! [`Backend`] is the small storage trait: synchronous, one transaction per call of
//! [`Backend::write_batch`]. SQLite implements it today (`sqlite`); a PostgreSQL backend for
//! HA can implement the same calls. [`Store`] is the async handle the rest of the relay uses:
//! it feeds one dedicated DB thread through a channel, and that thread applies every write
//! waiting in the channel in one transaction (group commit: one fsync for many webhooks).
//! A write's reply is sent only after the commit that contains it, so a webhook is answered
//! 2xx only once its alerts are on disk.

mod bench_seed;
mod console_sql;
#[cfg(test)]
pub(crate) mod contract;
mod disk;
mod health;
mod maintenance_sql;
pub mod migrate;
pub mod postgres;
mod semantics;
pub mod sqlite;
mod storm_sql;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use self::health::Health;

/// Most writes applied in one transaction: bounds the latency of the last one in a batch.
const MAX_BATCH: usize = 512;

/// How often a write that lost a race with another instance is tried again.
const CONFLICT_RETRIES: u32 = 4;

/// The pause before the `attempt`th retry: growing, and spread by the clock's nanoseconds so
/// that two instances that collided do not collide again in step.
fn conflict_pause(attempt: u32) -> Duration {
    let spread = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 10_000_000);
    Duration::from_millis(5 * u64::from(attempt)) + Duration::from_nanos(u64::from(spread))
}

/// While commits fail, the DB thread asks the backend to recover this often even when nothing
/// is written: a checkpoint can give back the space a full disk needs.
const RECOVER_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] rusqlite::Error),
    /// PostgreSQL (`postgres`): the server's message, or what happened to the connection.
    #[error("PostgreSQL: {}", postgres::cause(.0))]
    Postgres(#[from] ::postgres::Error),
    #[error(
        "database schema version {found} is newer than this alert-relay knows ({known}); upgrade alert-relay"
    )]
    NewerSchema { found: i64, known: i64 },
    /// An engine write of a former leader: another instance leads now (fencing number
    /// `current`), so this one must not change what the engines own.
    #[error("not the leader any more (fencing number {epoch}, the database has {current})")]
    Fenced { epoch: i64, current: i64 },
    /// Lost a race with another instance's transaction (PostgreSQL: a deadlock or a
    /// serialization failure). Nothing of the write is stored; [`Store`] tries it again.
    #[error("lost a race with another instance's transaction: {0}")]
    Conflict(String),
    /// The batch's transaction could not begin or commit: nothing in it is stored.
    #[error("database commit: {0}")]
    Commit(String),
    /// A test double was asked for something it does not implement (see
    /// [`not_implemented!`]).
    #[cfg(test)]
    #[error("test double: {0} is not implemented")]
    NotImplemented(&'static str),
    #[error("stored alert is unreadable: {0}")]
    Corrupt(String),
    #[error("the storage thread has stopped")]
    Stopped,
    #[error("cannot open {path}: {message}")]
    Open { path: String, message: String },
    /// Found at start-up: the file opens but the relay cannot write it (or not even open it).
    #[error(
        "not writable by this process: {0}. The relay's user needs write access to the file, to \
         its -wal and -shm files and to their directory: fix the owner or mode (the packaged unit's \
         StateDirectory= gives it /var/lib/alert-relay), or set storage.sqlite to a writable path"
    )]
    NotWritable(String),
    /// Found at start-up: no space left for the database or its write-ahead log.
    #[error(
        "disk full ({0}). Free space on the filesystem that holds the database (the relay needs \
         room for its write-ahead log, the -wal file next to it) and start the relay again"
    )]
    DiskFull(String),
    /// What a health check reports while the last commit failed.
    #[error("cannot commit: {0}")]
    CannotCommit(String),
}

impl StoreError {
    /// Whether this says that nothing can be committed (a full, read-only or failing disk, a
    /// lock held elsewhere), not that one write was wrong: it makes the store unhealthy.
    pub fn is_storage_fault(&self) -> bool {
        use rusqlite::ErrorCode as C;
        match self {
            StoreError::Commit(_)
            | StoreError::NotWritable(_)
            | StoreError::DiskFull(_)
            | StoreError::CannotCommit(_) => true,
            StoreError::Db(e) => matches!(
                e.sqlite_error_code(),
                Some(
                    C::DiskFull
                        | C::ReadOnly
                        | C::SystemIoFailure
                        | C::CannotOpen
                        | C::PermissionDenied
                        | C::DatabaseBusy
                        | C::DatabaseLocked
                        | C::DatabaseCorrupt
                        | C::NotADatabase
                )
            ),
            StoreError::Postgres(e) => postgres::is_connection_fault(e),
            _ => false,
        }
    }
}

pub use crate::model::record::{
    AckTarget, Action, Attempt, DeliveryJob, DeliveryState, FiringRef, Incident, IncidentDelivery,
    IncidentState, IngestOutcome, PendingRef, ReceiptEnd, RouteRef, RoutedEvent, Transitioned,
    WatchedReceipt, Write, Written,
};

#[doc(hidden)]
pub use self::bench_seed::seed_for_bench;
pub use crate::model::console::{
    ActionRecord, ConsoleSession, ConsoleWrite, ConsoleWritten, DeadLetter, DestinationHealth,
    IncidentQuery, Timeline, TimelineDelivery, TimelineEvent,
};

/// The storage trait. Every method runs on the DB thread.
///
/// No method has a default body: a backend answers every call itself, so one that forgets a
/// read cannot silently answer "nothing". Test doubles implement what their test needs and
/// fail loudly on the rest with `not_implemented!` (test builds only). The behaviour every
/// backend must have is one test suite (`contract`) that runs against each of them.
pub trait Backend: Send + 'static {
    /// Applies `writes` in one durable transaction and returns one result per write, in
    /// order. A failing write does not undo the others; a failing commit fails them all.
    fn write_batch(&mut self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>>;
    /// Pending deliveries of one destination, oldest first.
    fn pending(&mut self, destination: &str) -> Result<Vec<PendingRef>, StoreError>;
    fn load(&mut self, id: i64) -> Result<Option<DeliveryJob>, StoreError>;
    /// Destinations with pending deliveries and how many each has.
    fn pending_destinations(&mut self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Cheap query proving the database answers (health checks).
    fn ping(&mut self) -> Result<(), StoreError>;
    /// Called after a commit failed with a storage fault: every [`RECOVER_EVERY`] while
    /// commits keep failing, and after the first one that succeeds again (the store counts as
    /// recovered once this succeeds then). Undoes what the failure left behind; SQLite
    /// checkpoints and truncates its write-ahead log, which nothing else would shrink.
    fn recover(&mut self) -> Result<(), StoreError>;
    /// Incidents not resolved, oldest first.
    fn open_incidents(&mut self) -> Result<Vec<Incident>, StoreError>;
    /// The newest `limit` incidents (any state), newest first.
    fn incidents(&mut self, limit: i64) -> Result<Vec<Incident>, StoreError>;
    fn incident(&mut self, id: i64) -> Result<Option<Incident>, StoreError>;
    /// (destination, step, state, notice) of every delivery of an incident, in id order.
    fn incident_deliveries(&mut self, id: i64) -> Result<Vec<IncidentDelivery>, StoreError>;
    /// A value stored with `Write::SetMeta`.
    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// The newest alert event id (0 when none): re-sync's watermark.
    fn last_event_id(&mut self) -> Result<i64, StoreError>;
    /// Distinct fingerprints of the firing alerts of an incident (its group's firing events
    /// since it opened).
    fn incident_fingerprints(&mut self, id: i64) -> Result<Vec<String>, StoreError>;
    /// (destination, step, who) of every delivery of an incident that a rotation chose.
    fn incident_on_call(&mut self, id: i64) -> Result<Vec<(String, i64, String)>, StoreError>;
    /// A storm and its member incidents (storm control).
    fn storm(&mut self, id: i64) -> Result<Option<crate::model::storm::StormView>, StoreError>;
    /// The stored relay clock (ms): the last checkpoint or the newest stamp, the larger.
    fn relay_clock(&mut self) -> Result<i64, StoreError>;
    /// The secret that signs acknowledgement links (created with the database).
    fn ack_key(&mut self) -> Result<Vec<u8>, StoreError>;
    /// An integer stored with [`Write::SetMetaInt`].
    fn meta_int(&mut self, key: &str) -> Result<Option<i64>, StoreError>;
    /// Pushover receipts still to poll or cancel, oldest first.
    fn watched_receipts(&mut self) -> Result<Vec<WatchedReceipt>, StoreError>;
    /// Whether `destination` was paged for `target`: a delivery to it, not skipped, of the
    /// incident or of a summary of the incident's storm (for a storm: of a summary of it or of
    /// one of its incidents). Only such a destination may acknowledge it by SMS. A backend
    /// that cannot tell answers no.
    fn sent_to(&mut self, destination: &str, target: AckTarget) -> Result<bool, StoreError>;
    /// The console's list: incidents matching `q`, newest first, at most `q.limit`.
    fn incident_page(&mut self, q: &IncidentQuery) -> Result<Vec<Incident>, StoreError>;
    /// An incident with its group's events, its deliveries (and its storm's summaries) and
    /// what was done to it; `None` when there is no such incident.
    fn incident_timeline(&mut self, id: i64) -> Result<Option<Timeline>, StoreError>;
    /// Every destination with stored deliveries: its queue and last outcomes, by name.
    fn destination_health(&mut self) -> Result<Vec<DestinationHealth>, StoreError>;
    /// The newest `limit` deliveries given up on, newest first.
    fn dead_letters(&mut self, limit: i64) -> Result<Vec<DeadLetter>, StoreError>;
    /// The console session stored under `token_hash`, unless it has expired at `now_ms`.
    fn console_session(
        &mut self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<ConsoleSession>, StoreError>;
    /// Maintenance windows in force or to come, and those over for less than 7 days, by id.
    fn maintenance_windows(&mut self)
    -> Result<Vec<crate::model::maintenance::Window>, StoreError>;
}

/// Test doubles: bodies for the [`Backend`] methods a double does not implement, each
/// answering [`StoreError::NotImplemented`] with the method's name (an error rather than a
/// panic, which would take the DB thread down): `not_implemented!(meta, storm);` in the
/// `impl Backend`.
#[cfg(test)]
macro_rules! not_implemented {
    (@body $name:ident) => {
        Err($crate::store::StoreError::NotImplemented(stringify!($name)))
    };
    (write_batch) => {
        fn write_batch(
            &mut self,
            writes: Vec<$crate::store::Write>,
        ) -> Vec<Result<$crate::store::Written, $crate::store::StoreError>> {
            writes.iter().map(|_| $crate::store::not_implemented!(@body write_batch)).collect()
        }
    };
    (pending) => {
        fn pending(
            &mut self,
            _: &str,
        ) -> Result<Vec<$crate::store::PendingRef>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body pending)
        }
    };
    (load) => {
        fn load(
            &mut self,
            _: i64,
        ) -> Result<Option<$crate::store::DeliveryJob>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body load)
        }
    };
    (pending_destinations) => {
        fn pending_destinations(
            &mut self,
        ) -> Result<Vec<(String, i64)>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body pending_destinations)
        }
    };
    (ping) => {
        fn ping(&mut self) -> Result<(), $crate::store::StoreError> {
            $crate::store::not_implemented!(@body ping)
        }
    };
    (recover) => {
        fn recover(&mut self) -> Result<(), $crate::store::StoreError> {
            $crate::store::not_implemented!(@body recover)
        }
    };
    (open_incidents) => {
        fn open_incidents(
            &mut self,
        ) -> Result<Vec<$crate::store::Incident>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body open_incidents)
        }
    };
    (incidents) => {
        fn incidents(
            &mut self,
            _: i64,
        ) -> Result<Vec<$crate::store::Incident>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body incidents)
        }
    };
    (incident) => {
        fn incident(
            &mut self,
            _: i64,
        ) -> Result<Option<$crate::store::Incident>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body incident)
        }
    };
    (incident_deliveries) => {
        fn incident_deliveries(
            &mut self,
            _: i64,
        ) -> Result<Vec<$crate::store::IncidentDelivery>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body incident_deliveries)
        }
    };
    (meta) => {
        fn meta(&mut self, _: &str) -> Result<Option<Vec<u8>>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body meta)
        }
    };
    (last_event_id) => {
        fn last_event_id(&mut self) -> Result<i64, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body last_event_id)
        }
    };
    (incident_fingerprints) => {
        fn incident_fingerprints(
            &mut self,
            _: i64,
        ) -> Result<Vec<String>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body incident_fingerprints)
        }
    };
    (incident_on_call) => {
        fn incident_on_call(
            &mut self,
            _: i64,
        ) -> Result<Vec<(String, i64, String)>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body incident_on_call)
        }
    };
    (storm) => {
        fn storm(
            &mut self,
            _: i64,
        ) -> Result<Option<$crate::model::storm::StormView>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body storm)
        }
    };
    (relay_clock) => {
        fn relay_clock(&mut self) -> Result<i64, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body relay_clock)
        }
    };
    (ack_key) => {
        fn ack_key(&mut self) -> Result<Vec<u8>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body ack_key)
        }
    };
    (meta_int) => {
        fn meta_int(&mut self, _: &str) -> Result<Option<i64>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body meta_int)
        }
    };
    (watched_receipts) => {
        fn watched_receipts(
            &mut self,
        ) -> Result<Vec<$crate::store::WatchedReceipt>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body watched_receipts)
        }
    };
    (sent_to) => {
        fn sent_to(
            &mut self,
            _: &str,
            _: $crate::store::AckTarget,
        ) -> Result<bool, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body sent_to)
        }
    };
    (incident_page) => {
        fn incident_page(
            &mut self,
            _: &$crate::store::IncidentQuery,
        ) -> Result<Vec<$crate::store::Incident>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body incident_page)
        }
    };
    (incident_timeline) => {
        fn incident_timeline(
            &mut self,
            _: i64,
        ) -> Result<Option<$crate::store::Timeline>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body incident_timeline)
        }
    };
    (destination_health) => {
        fn destination_health(
            &mut self,
        ) -> Result<Vec<$crate::store::DestinationHealth>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body destination_health)
        }
    };
    (dead_letters) => {
        fn dead_letters(
            &mut self,
            _: i64,
        ) -> Result<Vec<$crate::store::DeadLetter>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body dead_letters)
        }
    };
    (console_session) => {
        fn console_session(
            &mut self,
            _: &str,
            _: i64,
        ) -> Result<Option<$crate::store::ConsoleSession>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body console_session)
        }
    };
    // The console's reads, for a double that implements none of them.
    (console_reads) => {
        $crate::store::not_implemented!(
            incident_page, incident_timeline, destination_health, dead_letters, console_session,
        );
    };
    // A double that only writes.
    (maintenance_windows) => {
        fn maintenance_windows(
            &mut self,
        ) -> Result<Vec<$crate::model::maintenance::Window>, $crate::store::StoreError> {
            $crate::store::not_implemented!(@body maintenance_windows)
        }
    };
    (every_read) => {
        $crate::store::not_implemented!(
            pending, load, pending_destinations, ping, recover, open_incidents, incidents,
            incident, incident_deliveries, meta, last_event_id, incident_fingerprints,
            incident_on_call, storm, relay_clock, ack_key, meta_int, watched_receipts, sent_to,
            console_reads,
            maintenance_windows,
        );
    };
    ($($name:ident),+ $(,)?) => {
        $($crate::store::not_implemented!($name);)+
    };
}
#[cfg(test)]
pub(crate) use not_implemented;

type Reply = oneshot::Sender<Result<Written, StoreError>>;
type ReadFn = Box<dyn FnOnce(&mut dyn Backend) + Send>;

enum Command {
    Write(Write, Reply),
    Read(ReadFn),
}

/// Timing of each group commit and of each operation as its caller waited for it, for the
/// metrics.
pub trait CommitObserver: Send + Sync + std::fmt::Debug + 'static {
    fn committed(&self, writes: usize, took: Duration);
    /// `operation`: a write's [`Write::operation`], or `read`.
    fn operation(&self, operation: &'static str, took: Duration);
}

/// Async handle to the DB thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    tx: mpsc::Sender<Command>,
    health: Arc<Health>,
    /// The fencing number of this instance's leadership (0: not leading), put on every engine
    /// write ([`Write::is_engine_write`]); `None` for a store that needs no fencing (SQLite).
    fence: Option<Arc<AtomicI64>>,
    observer: Arc<dyn CommitObserver>,
}

/// The DB threads of a store, to join at shutdown (the last commit stays intact).
#[derive(Debug)]
pub struct DbThreads(Vec<std::thread::JoinHandle<()>>);

impl DbThreads {
    /// Waits until every DB thread has ended (they end once every handle is gone).
    pub fn join(self) {
        for t in self.0 {
            let _ = t.join();
        }
    }
}

impl Store {
    /// Starts the DB thread; it stops once every handle is dropped.
    pub fn start<B: Backend>(
        backend: B,
        observer: impl CommitObserver,
    ) -> Result<(Store, DbThreads), StoreError> {
        Self::start_pool(vec![backend], observer)
    }

    /// One DB thread per backend (a connection each), all taking commands from one queue:
    /// while one commits its batch, the next gathers another. SQLite has one writer; a
    /// PostgreSQL pool has several, and every write is safe beside concurrent writers.
    pub fn start_pool<B: Backend>(
        backends: Vec<B>,
        observer: impl CommitObserver,
    ) -> Result<(Store, DbThreads), StoreError> {
        let (tx, rx) = mpsc::channel::<Command>();
        let rx = Arc::new(Mutex::new(rx));
        let health = Arc::new(Health::default());
        let observer: Arc<dyn CommitObserver> = Arc::new(observer);
        let mut threads = Vec::with_capacity(backends.len());
        for (i, mut backend) in backends.into_iter().enumerate() {
            let thread = DbThread {
                rx: Arc::clone(&rx),
                observer: Arc::clone(&observer),
                health: Arc::clone(&health),
                degraded: false,
                recover_at: Instant::now(),
            };
            let handle = std::thread::Builder::new()
                .name(format!("alert-relay-db{i}"))
                .spawn(move || thread.run(&mut backend))
                .map_err(|e| StoreError::Open {
                    path: "<thread>".into(),
                    message: e.to_string(),
                })?;
            threads.push(handle);
        }
        let store = Store {
            tx,
            health,
            fence: None,
            observer,
        };
        Ok((store, DbThreads(threads)))
    }

    /// This handle with engine writes fenced by `fence` (the leadership's current number):
    /// a former leader's late write is refused, never applied over the new leader's.
    pub fn fenced(mut self, fence: Arc<AtomicI64>) -> Store {
        self.fence = Some(fence);
        self
    }

    pub async fn write(&self, write: Write) -> Result<Written, StoreError> {
        let write = match &self.fence {
            Some(fence) if write.is_engine_write() => Write::Fenced {
                epoch: fence.load(Ordering::SeqCst),
                write: Box::new(write),
            },
            _ => write,
        };
        self.send(write).await
    }

    /// Whether several instances write this database (PostgreSQL): only such a store loses
    /// races ([`StoreError::Conflict`]) and has other instances to tell of a heartbeat.
    pub fn is_shared(&self) -> bool {
        self.fence.is_some()
    }

    /// `write` as it is, fenced or not; tried again (a few times, after a short pause) when
    /// it lost a race with another instance, so a deadlock between two relays taking the same
    /// webhooks costs a retry, not an error answer.
    async fn send(&self, write: Write) -> Result<Written, StoreError> {
        let (operation, since) = (write.operation(), Instant::now());
        let mut write = write;
        let mut attempt = 0;
        let written = loop {
            let again = (self.is_shared() && attempt < CONFLICT_RETRIES).then(|| write.clone());
            match (self.submit(write).await, again) {
                (Err(StoreError::Conflict(why)), Some(next)) => {
                    attempt += 1;
                    tracing::debug!(operation, attempt, "trying a write again: {why}");
                    tokio::time::sleep(conflict_pause(attempt)).await;
                    write = next;
                }
                (written, _) => break written,
            }
        };
        self.observer.operation(operation, since.elapsed());
        written
    }

    async fn submit(&self, write: Write) -> Result<Written, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Command::Write(write, reply))
            .map_err(|_| StoreError::Stopped)?;
        rx.await.map_err(|_| StoreError::Stopped)?
    }

    pub async fn ingest(&self, events: Vec<RoutedEvent>) -> Result<IngestOutcome, StoreError> {
        match self.write(Write::Ingest(events)).await? {
            Written::Ingested(o) => Ok(o),
            _ => Err(StoreError::Corrupt("unexpected reply to ingest".into())),
        }
    }

    pub async fn record(&self, id: i64, attempts: u32, attempt: Attempt) -> Result<(), StoreError> {
        self.write(Write::Record {
            id,
            attempts,
            attempt,
        })
        .await
        .map(|_| ())
    }

    /// Records an inbound SMS's `MessageSid`; false when it was recorded before (a replay).
    pub async fn first_time(&self, sid: String) -> Result<bool, StoreError> {
        match self.write(Write::InboundSid { sid }).await? {
            Written::FirstTime(new) => Ok(new),
            _ => Err(StoreError::Corrupt(
                "unexpected reply to an inbound sid".into(),
            )),
        }
    }

    /// Keeps what became of call `call_sid` on its delivery (see [`Write::CallOutcome`]);
    /// false when the delivery is not that call or has an outcome already.
    pub async fn call_outcome(
        &self,
        id: i64,
        call_sid: String,
        outcome: String,
    ) -> Result<bool, StoreError> {
        let write = Write::CallOutcome {
            id,
            call_sid,
            outcome,
        };
        match self.write(write).await? {
            Written::FirstTime(kept) => Ok(kept),
            _ => Err(StoreError::Corrupt(
                "unexpected reply to a call outcome".into(),
            )),
        }
    }

    /// A console write (a session opened or closed, a dead letter retried): what it did. A
    /// retried delivery is the caller's to queue on this instance; other instances learn of it
    /// with the commit (PostgreSQL).
    pub async fn console(&self, write: ConsoleWrite) -> Result<ConsoleWritten, StoreError> {
        match self.write(Write::Console(write)).await? {
            Written::Console(done) => Ok(done),
            _ => Err(StoreError::Corrupt(
                "unexpected reply to a console write".into(),
            )),
        }
    }

    /// Runs `f` on the DB thread.
    pub async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut dyn Backend) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let since = Instant::now();
        let (reply, rx) = oneshot::channel();
        let job: ReadFn = Box::new(move |b| {
            let _ = reply.send(f(b));
        });
        self.tx
            .send(Command::Read(job))
            .map_err(|_| StoreError::Stopped)?;
        let read = rx.await.map_err(|_| StoreError::Stopped)?;
        self.observer.operation("read", since.elapsed());
        read
    }

    pub async fn pending(&self, destination: String) -> Result<Vec<PendingRef>, StoreError> {
        self.read(move |b| b.pending(&destination)).await
    }

    pub async fn load(&self, id: i64) -> Result<Option<DeliveryJob>, StoreError> {
        self.read(move |b| b.load(id)).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.read(|b| b.ping()).await
    }

    /// The health check (`/healthz`, the systemd watchdog): whether the store can commit. The
    /// outcome of the last commit, after a probe commit when that one failed or is older than
    /// [`health::PROBE_AFTER`]; otherwise the DB thread only has to answer.
    pub async fn check(&self) -> Result<(), StoreError> {
        if self.health.needs_probe(Instant::now()) {
            let probe = Write::SetMetaInt {
                key: "health_probe".into(),
                value: crate::time::now_millis(),
            };
            // Unfenced: any instance, leading or not, must be able to commit.
            if let Err(e) = self.send(probe).await
                && !e.is_storage_fault()
            {
                return Err(e);
            }
        } else {
            self.ping().await?;
        }
        match self.health.failure() {
            Some(why) => Err(StoreError::CannotCommit(why)),
            None => Ok(()),
        }
    }
}

/// The DB thread: group commit, and what it learns about the storage on the way.
struct DbThread {
    /// Shared by the pool: the thread holding the lock gathers the next batch.
    rx: Arc<Mutex<mpsc::Receiver<Command>>>,
    observer: Arc<dyn CommitObserver>,
    health: Arc<Health>,
    /// A commit failed with a storage fault and the backend has not recovered since.
    degraded: bool,
    /// While degraded: when the backend next gets to recover, busy or not.
    recover_at: Instant,
}

impl DbThread {
    fn run(mut self, backend: &mut dyn Backend) {
        loop {
            let (writes, replies, reads) = {
                let rx = Arc::clone(&self.rx);
                let rx = rx.lock().unwrap_or_else(PoisonError::into_inner);
                let Some(first) = self.next_command(&rx, backend) else {
                    return;
                };
                Self::gather(&rx, first)
            };
            if !writes.is_empty() {
                self.commit(backend, writes, replies);
            }
            for f in reads {
                f(backend);
            }
        }
    }

    /// Waits for the next command; `None` once every handle is gone. While degraded, the
    /// backend gets to recover every [`RECOVER_EVERY`], whether commands keep coming or not: a
    /// PostgreSQL connection the server closed only comes back by reconnecting, and
    /// Alertmanager's retries would otherwise keep it from ever trying.
    fn next_command(
        &mut self,
        rx: &mpsc::Receiver<Command>,
        backend: &mut dyn Backend,
    ) -> Option<Command> {
        loop {
            if !self.degraded {
                return rx.recv().ok();
            }
            if Instant::now() >= self.recover_at {
                self.recover_at = Instant::now() + RECOVER_EVERY;
                if let Err(e) = backend.recover() {
                    tracing::debug!("storage not recovered yet: {e}");
                }
            }
            match rx.recv_timeout(self.recover_at.saturating_duration_since(Instant::now())) {
                Ok(cmd) => return Some(cmd),
                Err(mpsc::RecvTimeoutError::Disconnected) => return None,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Everything that queued up while the last commit was syncing goes into this one.
    fn gather(
        rx: &mpsc::Receiver<Command>,
        first: Command,
    ) -> (Vec<Write>, Vec<Reply>, Vec<ReadFn>) {
        let (mut writes, mut replies, mut reads) = (Vec::new(), Vec::new(), Vec::new());
        let mut next = Some(first);
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Write(w, r) => {
                    writes.push(w);
                    replies.push(r);
                }
                Command::Read(f) => reads.push(f),
            }
            if writes.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        (writes, replies, reads)
    }

    fn commit(&mut self, backend: &mut dyn Backend, writes: Vec<Write>, replies: Vec<Reply>) {
        let n = writes.len();
        let start = Instant::now();
        let results = backend.write_batch(writes);
        self.observer.committed(n, start.elapsed());
        let fault = results
            .iter()
            .filter_map(|r| r.as_ref().err())
            .find(|e| e.is_storage_fault())
            .map(ToString::to_string);
        match &fault {
            Some(why) => {
                if !self.degraded {
                    tracing::error!("storage cannot commit; unhealthy until it can: {why}");
                    self.recover_at = Instant::now() + RECOVER_EVERY;
                }
                self.health.failed(why.clone());
                self.degraded = true;
            }
            None => self.health.committed(Instant::now()),
        }
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
        // After the answers: a 2xx waits for its commit, not for the clean-up.
        if fault.is_none() && self.degraded {
            self.recovered(backend);
        }
    }

    /// The first commit after a fault succeeded: the backend shrinks what the fault left.
    fn recovered(&mut self, backend: &mut dyn Backend) {
        match backend.recover() {
            Ok(()) => {
                self.degraded = false;
                tracing::info!("storage commits again");
            }
            Err(e) => tracing::warn!("storage commits again but cannot recover yet: {e}"),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;

    /// Commits fail while `full` is set, like a disk that fills up and is cleared.
    #[derive(Clone, Default)]
    pub(crate) struct Flaky {
        full: Arc<AtomicBool>,
        recoveries: Arc<AtomicUsize>,
    }

    impl Flaky {
        /// A disk that is full from the start.
        pub(crate) fn full() -> Self {
            let f = Flaky::default();
            f.full.store(true, Ordering::SeqCst);
            f
        }
    }

    impl Backend for Flaky {
        fn write_batch(&mut self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
            let full = self.full.load(Ordering::SeqCst);
            writes
                .iter()
                .map(|_| match full {
                    true => Err(StoreError::Commit("disk full".into())),
                    false => Ok(Written::Recorded),
                })
                .collect()
        }
        fn pending(&mut self, _: &str) -> Result<Vec<PendingRef>, StoreError> {
            Ok(Vec::new())
        }
        fn load(&mut self, _: i64) -> Result<Option<DeliveryJob>, StoreError> {
            Ok(None)
        }
        fn pending_destinations(&mut self) -> Result<Vec<(String, i64)>, StoreError> {
            Ok(Vec::new())
        }
        fn ping(&mut self) -> Result<(), StoreError> {
            Ok(())
        }
        fn recover(&mut self) -> Result<(), StoreError> {
            self.recoveries.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        /// No dead-man state yet: the relay starts on an empty database.
        fn meta(&mut self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
            Ok(None)
        }
        not_implemented!(
            open_incidents,
            incidents,
            incident,
            incident_deliveries,
            last_event_id,
            incident_fingerprints,
            incident_on_call,
            storm,
            relay_clock,
            ack_key,
            meta_int,
            watched_receipts,
            sent_to,
            console_reads,
            maintenance_windows,
        );
    }

    /// Counts what it commits and which thread committed it; each commit takes 20 ms.
    struct Slow {
        committed: Arc<Mutex<Vec<(String, usize)>>>,
    }

    impl Backend for Slow {
        fn write_batch(&mut self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
            std::thread::sleep(Duration::from_millis(20));
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let mut c = self
                .committed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            c.push((name, writes.len()));
            writes.iter().map(|_| Ok(Written::Recorded)).collect()
        }
        not_implemented!(every_read);
    }

    /// Loses the race `losses` times, then commits; counts what it was given.
    struct Racy {
        losses: usize,
        given: Arc<Mutex<Vec<&'static str>>>,
    }

    impl Backend for Racy {
        fn write_batch(&mut self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
            let mut given = self.given.lock().unwrap_or_else(PoisonError::into_inner);
            writes
                .iter()
                .map(|w| {
                    given.push(w.operation());
                    if given.len() <= self.losses {
                        Err(StoreError::Conflict("deadlock detected".into()))
                    } else {
                        Ok(Written::Recorded)
                    }
                })
                .collect()
        }
        not_implemented!(every_read);
    }

    async fn racy(losses: usize, shared: bool) -> (Result<Written, StoreError>, usize) {
        let given = Arc::new(Mutex::new(Vec::new()));
        let backend = Racy {
            losses,
            given: Arc::clone(&given),
        };
        let (store, _threads) = Store::start(backend, NoMetrics).expect("start");
        let store = if shared {
            store.fenced(Arc::new(AtomicI64::new(7)))
        } else {
            store
        };
        let written = store.write(Write::Ingest(Vec::new())).await;
        let n = given.lock().unwrap_or_else(PoisonError::into_inner).len();
        (written, n)
    }

    #[tokio::test]
    async fn a_write_that_lost_a_race_is_tried_again_a_few_times() {
        let (written, tries) = racy(2, true).await;
        assert!(matches!(written, Ok(Written::Recorded)), "{written:?}");
        assert_eq!(tries, 3);
        // Past the retries the conflict is the answer (the webhook's 5xx, Alertmanager retries).
        let (written, tries) = racy(100, true).await;
        assert!(
            matches!(written, Err(StoreError::Conflict(_))),
            "{written:?}"
        );
        assert_eq!(tries, 1 + CONFLICT_RETRIES as usize);
        // A store of one instance has no races to lose: nothing is tried twice.
        let (written, tries) = racy(1, false).await;
        assert!(
            matches!(written, Err(StoreError::Conflict(_))),
            "{written:?}"
        );
        assert_eq!(tries, 1);
    }

    #[tokio::test]
    async fn a_pool_commits_every_write_once_on_several_connections() {
        let committed = Arc::new(Mutex::new(Vec::new()));
        let backends = (0..4)
            .map(|_| Slow {
                committed: Arc::clone(&committed),
            })
            .collect();
        let (store, threads) = Store::start_pool(backends, NoMetrics).expect("start");
        let mut writes = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            writes.push(tokio::spawn(async move {
                store.write(Write::Prune { before_ms: i }).await
            }));
            // Writes keep arriving while a commit is under way.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        for w in writes {
            assert!(matches!(w.await.expect("task"), Ok(Written::Recorded)));
        }
        drop(store);
        tokio::task::spawn_blocking(move || threads.join())
            .await
            .expect("joined");
        let committed = committed.lock().unwrap_or_else(PoisonError::into_inner);
        assert_eq!(committed.iter().map(|(_, n)| n).sum::<usize>(), 200);
        let threads: std::collections::BTreeSet<&str> =
            committed.iter().map(|(t, _)| t.as_str()).collect();
        // While one connection sleeps in its commit, another gathers the next batch.
        assert!(threads.len() > 1, "{threads:?}");
    }

    #[derive(Debug)]
    struct NoMetrics;

    impl CommitObserver for NoMetrics {
        fn committed(&self, _: usize, _: Duration) {}
        fn operation(&self, _: &'static str, _: Duration) {}
    }

    #[tokio::test]
    async fn unhealthy_from_a_failed_commit_until_one_succeeds_then_recovered() {
        let backend = Flaky::default();
        let (store, _thread) = Store::start(backend.clone(), NoMetrics).expect("start");
        store.check().await.expect("a probe commits");
        backend.full.store(true, Ordering::SeqCst);
        let failed = store.write(Write::Prune { before_ms: 0 }).await;
        assert!(failed.is_err_and(|e| e.is_storage_fault()));
        // The DB thread answers, but the store cannot commit: that is what the check reports.
        store.ping().await.expect("the thread answers");
        let err = store.check().await.expect_err("unhealthy");
        assert!(
            matches!(&err, StoreError::CannotCommit(w) if w.contains("disk full")),
            "{err}"
        );
        // While degraded, the backend gets to recover without any write.
        tokio::time::sleep(RECOVER_EVERY + Duration::from_millis(500)).await;
        assert!(backend.recoveries.load(Ordering::SeqCst) >= 1);
        backend.full.store(false, Ordering::SeqCst);
        let before = backend.recoveries.load(Ordering::SeqCst);
        store.check().await.expect("the probe commits again");
        // The recovery after that commit ran (the reads queue behind it) and ended the timer.
        store.ping().await.expect("after the recovery");
        let after = backend.recoveries.load(Ordering::SeqCst);
        assert!(after > before);
        tokio::time::sleep(RECOVER_EVERY + Duration::from_millis(500)).await;
        assert_eq!(backend.recoveries.load(Ordering::SeqCst), after);
    }

    /// A connection the server closed: every commit fails until the backend recovers
    /// (reconnects), however many writes come meanwhile.
    #[derive(Clone, Default)]
    struct Closed {
        open: Arc<AtomicBool>,
    }

    impl Backend for Closed {
        fn write_batch(&mut self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
            let open = self.open.load(Ordering::SeqCst);
            writes
                .iter()
                .map(|_| match open {
                    true => Ok(Written::Recorded),
                    false => Err(StoreError::Commit("connection closed".into())),
                })
                .collect()
        }
        fn recover(&mut self) -> Result<(), StoreError> {
            self.open.store(true, Ordering::SeqCst);
            Ok(())
        }
        not_implemented!(
            pending,
            load,
            pending_destinations,
            ping,
            open_incidents,
            incidents,
            incident,
            incident_deliveries,
            meta,
            last_event_id,
            incident_fingerprints,
            incident_on_call,
            storm,
            relay_clock,
            ack_key,
            meta_int,
            watched_receipts,
            sent_to,
            console_reads,
            maintenance_windows,
        );
    }

    #[tokio::test]
    async fn a_degraded_store_recovers_while_writes_keep_coming() {
        let backend = Closed::default();
        let (store, _thread) = Store::start(backend.clone(), NoMetrics).expect("start");
        // Writes every 50 ms, as Alertmanager's retries come while the database is away: the
        // thread is never idle for RECOVER_EVERY, yet it reconnects and commits again.
        let deadline = std::time::Instant::now() + RECOVER_EVERY * 3;
        while store.write(Write::Prune { before_ms: 0 }).await.is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "still failing after {:?} of writes",
                RECOVER_EVERY * 3
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(backend.open.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn console_writes_and_reads_go_through_the_store() {
        let db = sqlite::Sqlite::in_memory().expect("db");
        let (store, _thread) = Store::start(db, NoMetrics).expect("start");
        let session = ConsoleSession {
            user: "alice".into(),
            csrf: "c".into(),
            created_ms: 1,
            expires_ms: 10,
        };
        let opened = store
            .console(ConsoleWrite::OpenSession {
                token_hash: "h".into(),
                session: session.clone(),
            })
            .await
            .expect("open");
        assert_eq!(opened, ConsoleWritten::Done);
        let read = store.read(|b| b.console_session("h", 5)).await;
        assert_eq!(read.expect("read"), Some(session));
        let retried = store.console(ConsoleWrite::RetryDead { id: 1 }).await;
        assert_eq!(retried.expect("retry"), ConsoleWritten::Retried(None));
    }

    #[test]
    fn a_test_double_fails_loudly_on_what_it_does_not_implement() {
        let mut double = Flaky::default();
        let err = double.open_incidents().expect_err("not implemented");
        assert!(
            matches!(err, StoreError::NotImplemented("open_incidents")),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "test double: open_incidents is not implemented"
        );
        assert!(!err.is_storage_fault());
        assert!(double.relay_clock().is_err());
        assert!(double.last_event_id().is_err());
        assert!(double.sent_to("sms/+1", AckTarget::Incident(1)).is_err());
    }

    #[test]
    fn only_storage_faults_make_the_store_unhealthy() {
        let sqlite = |code| {
            StoreError::Db(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            ))
        };
        assert!(StoreError::Commit("x".into()).is_storage_fault());
        assert!(sqlite(rusqlite::ffi::SQLITE_FULL).is_storage_fault());
        assert!(sqlite(rusqlite::ffi::SQLITE_READONLY).is_storage_fault());
        assert!(!sqlite(rusqlite::ffi::SQLITE_CONSTRAINT).is_storage_fault());
        assert!(!StoreError::Corrupt("x".into()).is_storage_fault());
        assert!(!StoreError::Stopped.is_storage_fault());
    }
}

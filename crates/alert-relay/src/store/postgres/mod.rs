//! The PostgreSQL backend (HA, issue 15): the same behaviour as SQLite's (the backend contract
//! runs against both), for several relays writing one database at once.
//!
//! Every write is safe against another instance writing concurrently: alert events are
//! deduplicated by a unique key (`INSERT … ON CONFLICT DO NOTHING`), an incident is opened
//! through the partial unique index of open incidents, escalation steps fire by compare-and-set
//! on `next_step`, read-modify-writes lock their row (`SELECT … FOR UPDATE`) or, for a row that
//! may not exist yet (budgets), a transaction-scoped advisory lock; ids come from sequences. The
//! isolation level is PostgreSQL's default, READ COMMITTED: a statement that waited for another
//! transaction's row sees that transaction's outcome.
//!
//! A deadlock between two instances (two batches locking rows in opposite orders) fails the one
//! write PostgreSQL picks, not the batch: the caller sees an error that is not a storage fault
//! (a webhook answers 5xx and Alertmanager retries it).

mod console;
pub mod lease;
mod maintenance;
pub mod notify;
mod read;
mod schema;
mod storm;
mod tls;
mod tx;
mod write;

#[cfg(test)]
pub(crate) mod tests;

use std::path::PathBuf;
use std::time::Duration;

use postgres::Client;

use super::{
    AckTarget, Backend, DeliveryJob, Incident, IncidentDelivery, PendingRef, StoreError,
    WatchedReceipt, Write, Written,
};
use crate::time::WallClock;

/// Where the database is. `url` is libpq's URL form
/// (`postgres://user:password@host:port/db?sslmode=verify-full`); `sslmode` may be `disable`,
/// `prefer` (the default), `require` (TLS, unverified) or `verify-full` (the chain against the
/// system roots or `ca_file`, and the host name).
#[derive(Clone)]
pub struct PgSettings {
    pub url: String,
    pub ca_file: Option<PathBuf>,
}

/// Without the URL: it may carry a password.
impl std::fmt::Debug for PgSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSettings")
            .field("url", &"<redacted>")
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// One connection, owned by the DB thread.
pub struct Postgres {
    client: Client,
    settings: PgSettings,
    /// "host:port (database …)" for messages.
    server: String,
    clock: WallClock,
    /// Prepared statements of the writes, on this connection.
    statements: tx::Cache,
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postgres")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// Bounds the wait for a server that does not answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive: a server that vanished is noticed in about a minute, not hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// The server side of every session: a client that vanished (host or network gone) is
/// dropped after 5 s idle plus three probes 2 s apart, or after 10 s of unacknowledged data,
/// and with it the leader's lock and any row locks of a transaction it had open.
const SESSION: &str = "SET tcp_keepalives_idle = 5; SET tcp_keepalives_interval = 2; \
     SET tcp_keepalives_count = 3; SET tcp_user_timeout = 10000";
/// Data the server has not acknowledged for this long ends the connection: a write on a cut
/// network fails (a webhook's 5xx, the DB thread free to reconnect) instead of waiting out
/// the kernel's retransmissions (about 15 minutes).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);

impl Postgres {
    /// Connects, migrates the schema (under an advisory lock) and makes sure the ack-link key
    /// exists. Errors name the server and the cause in one line, never the password.
    pub fn connect(settings: &PgSettings) -> Result<Self, StoreError> {
        let (client, server) = open(settings)?;
        let mut db = Postgres {
            client,
            settings: settings.clone(),
            server,
            clock: WallClock::default(),
            statements: tx::Cache::new(),
        };
        let at_start = |e: StoreError| match e {
            StoreError::Postgres(e) => StoreError::Open {
                path: format!("PostgreSQL at {}", db_server(settings)),
                message: cause(&e),
            },
            other => other,
        };
        schema::migrate(&mut db.client).map_err(at_start)?;
        write::create_ack_key(&mut db.client).map_err(at_start)?;
        Ok(db)
    }

    /// Stamps rows with `clock` (tests share a clock that jumps).
    #[cfg(test)]
    pub(crate) fn with_clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }

    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        schema::version(&mut self.client)
    }

    /// The connection, for `store::migrate` (a copy from SQLite into this database).
    pub(in crate::store) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// "host:port" of the server, for messages.
    pub(in crate::store) fn server(&self) -> &str {
        &self.server
    }

    /// One transaction, a savepoint per write: one bad write is undone alone. `Err` when the
    /// transaction could not begin or commit.
    fn apply_batch(
        &mut self,
        writes: Vec<Write>,
    ) -> Result<Vec<Result<Written, StoreError>>, postgres::Error> {
        if writes.len() == 1 {
            return self.apply_alone(writes);
        }
        let now = self.clock.now_millis();
        let statements = &mut self.statements;
        let mut tx = self.client.transaction()?;
        let (order, writes) = lock_order(writes);
        let mut results = Vec::with_capacity(writes.len());
        for w in writes {
            let r = match tx.transaction() {
                Ok(mut sp) => match write::apply(&mut tx::Tx::new(&mut sp, statements), w, now) {
                    Ok(written) => sp.commit().map(|()| written).map_err(StoreError::from),
                    Err(e) => {
                        let _ = sp.rollback();
                        Err(e)
                    }
                },
                Err(e) => Err(StoreError::from(e)),
            };
            results.push(r);
        }
        commit_and_notify(tx, &results)?;
        Ok(in_given_order(&order, results))
    }

    /// A batch of one write (most, under light load): no savepoint, two round trips fewer; a
    /// failing write rolls the transaction back, which undoes only itself.
    fn apply_alone(
        &mut self,
        writes: Vec<Write>,
    ) -> Result<Vec<Result<Written, StoreError>>, postgres::Error> {
        let now = self.clock.now_millis();
        let mut tx = self.client.transaction()?;
        let results: Vec<Result<Written, StoreError>> = writes
            .into_iter()
            .map(|w| write::apply(&mut tx::Tx::new(&mut tx, &mut self.statements), w, now))
            .collect();
        if results.iter().any(Result::is_err) {
            let _ = tx.rollback();
            return Ok(results);
        }
        commit_and_notify(tx, &results)?;
        Ok(results)
    }
}

/// The batch's writes in the order they take row locks: webhooks by their first alert's group
/// and dedup key, the rest before them as given. Two relays given the same webhooks in other
/// orders (two Alertmanagers posting to both) then lock the same rows in the same order instead
/// of deadlocking. Returns where each write came from.
fn lock_order(writes: Vec<Write>) -> (Vec<usize>, Vec<Write>) {
    let mut keyed: Vec<(Option<LockKey>, usize, Write)> = writes
        .into_iter()
        .enumerate()
        .map(|(i, w)| (ingest_key(&w), i, w))
        .collect();
    keyed.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    keyed.into_iter().map(|(_, i, w)| (i, w)).unzip()
}

/// (group key, fingerprint, start) of a webhook's first alert in lock order.
type LockKey = (String, String, i64);

fn ingest_key(w: &Write) -> Option<LockKey> {
    let Write::Ingest(events) = w else {
        return None;
    };
    events
        .iter()
        .map(|r| {
            let e = &r.event;
            (e.group_key.clone(), e.fingerprint.clone(), e.starts_at)
        })
        .min()
}

/// `results` (in lock order) put back in the order the writes were given.
fn in_given_order(
    order: &[usize],
    results: Vec<Result<Written, StoreError>>,
) -> Vec<Result<Written, StoreError>> {
    let mut slots: Vec<Option<Result<Written, StoreError>>> = std::iter::repeat_with(|| None)
        .take(results.len())
        .collect();
    for (&i, r) in order.iter().zip(results) {
        slots[i] = Some(r);
    }
    slots
        .into_iter()
        .map(|r| {
            r.unwrap_or(Err(StoreError::Corrupt(
                "a write of the batch went missing".into(),
            )))
        })
        .collect()
}

/// Commits, telling the other instances what the writes created (delivered with the commit).
fn commit_and_notify(
    mut tx: postgres::Transaction<'_>,
    results: &[Result<Written, StoreError>],
) -> Result<(), postgres::Error> {
    for payload in notify::payloads(results) {
        tx.execute("SELECT pg_notify($1, $2)", &[&notify::CHANNEL, &payload])?;
    }
    tx.commit()
}

/// "host:port" of the first server in the URL (the URL itself may carry a password).
fn db_server(settings: &PgSettings) -> String {
    let url = settings.url.split('?').next().unwrap_or_default();
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    host.split('/').next().unwrap_or_default().to_owned()
}

fn open(settings: &PgSettings) -> Result<(Client, String), StoreError> {
    let server = db_server(settings);
    let refused = |message: String| StoreError::Open {
        path: format!("PostgreSQL at {server}"),
        message,
    };
    let (url, mode) = tls::split_sslmode(&settings.url).map_err(refused)?;
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e: postgres::Error| refused(format!("invalid URL: {}", cause(&e))))?;
    config.ssl_mode(mode.driver_mode());
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true).keepalives_idle(KEEPALIVE_IDLE);
    if config.get_tcp_user_timeout().is_none() {
        config.tcp_user_timeout(TCP_USER_TIMEOUT);
    }
    if config.get_application_name().is_none() {
        config.application_name("alert-relay");
    }
    let mut client = match mode {
        tls::SslMode::Disable => config.connect(postgres::NoTls),
        _ => {
            let tls = tls::client_config(mode, settings.ca_file.as_deref()).map_err(refused)?;
            config.connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
        }
    }
    .map_err(|e| refused(cause(&e)))?;
    client
        .batch_execute(SESSION)
        .map_err(|e| refused(cause(&e)))?;
    Ok((client, server))
}

/// Whether `e` says the transaction lost a race with another (a deadlock, a serialization
/// failure): undone, and worth trying again.
fn lost_race(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

/// The error and its causes, on one line.
pub(crate) fn cause(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text.replace('\n', " ")
}

/// Whether a PostgreSQL error says that nothing can be committed (the connection is gone,
/// the server shuts down, is out of disk or has an I/O error), not that one write was wrong.
pub(crate) fn is_connection_fault(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(state) = e.code() {
        let code = state.code();
        // 08: connection exception; 53: insufficient resources (disk full, out of memory);
        // 57P: operator intervention (admin or crash shutdown, cannot connect now);
        // 58: system error (I/O); XX: internal error (data corrupted).
        return ["08", "53", "57P", "58", "XX"]
            .iter()
            .any(|p| code.starts_with(p));
    }
    // Not from the server: the socket, the TLS session, a timeout.
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    false
}

impl Backend for Postgres {
    fn write_batch(&mut self, writes: Vec<Write>) -> Vec<Result<Written, StoreError>> {
        let n = writes.len();
        match self.apply_batch(writes) {
            Ok(results) => results
                .into_iter()
                .map(|r| {
                    r.map_err(|e| match e {
                        StoreError::Postgres(e) if lost_race(&e) => StoreError::Conflict(cause(&e)),
                        e => e,
                    })
                })
                .collect(),
            Err(e) => {
                let why = format!("PostgreSQL at {}: {}", self.server, cause(&e));
                let fail = || {
                    if lost_race(&e) {
                        StoreError::Conflict(why.clone())
                    } else {
                        StoreError::Commit(why.clone())
                    }
                };
                (0..n).map(|_| Err(fail())).collect()
            }
        }
    }

    /// Reconnects when the connection is gone (the server restarted, the network broke).
    fn recover(&mut self) -> Result<(), StoreError> {
        if self.client.is_closed() || self.client.simple_query("SELECT 1").is_err() {
            let (client, _) = open(&self.settings)
                .map_err(|e| StoreError::Commit(format!("cannot reconnect: {e}")))?;
            self.client = client;
            self.statements.clear();
        }
        Ok(())
    }

    fn ping(&mut self) -> Result<(), StoreError> {
        self.client.query_one("SELECT 1", &[])?;
        Ok(())
    }

    fn pending(&mut self, destination: &str) -> Result<Vec<PendingRef>, StoreError> {
        read::pending(&mut self.client, destination)
    }

    fn load(&mut self, id: i64) -> Result<Option<DeliveryJob>, StoreError> {
        read::load(&mut self.client, id)
    }

    fn pending_destinations(&mut self) -> Result<Vec<(String, i64)>, StoreError> {
        read::pending_destinations(&mut self.client)
    }

    fn open_incidents(&mut self) -> Result<Vec<Incident>, StoreError> {
        read::query_incidents(
            &mut self.client,
            "WHERE i.state != 'resolved' ORDER BY i.id",
            &[],
        )
    }

    fn incidents(&mut self, limit: i64) -> Result<Vec<Incident>, StoreError> {
        read::query_incidents(&mut self.client, "ORDER BY i.id DESC LIMIT $1", &[&limit])
    }

    fn incident(&mut self, id: i64) -> Result<Option<Incident>, StoreError> {
        Ok(read::query_incidents(&mut self.client, "WHERE i.id = $1", &[&id])?.pop())
    }

    fn incident_deliveries(&mut self, id: i64) -> Result<Vec<IncidentDelivery>, StoreError> {
        read::incident_deliveries(&mut self.client, id)
    }

    fn meta(&mut self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT value FROM meta WHERE key = $1", &[&key])?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => None,
        })
    }

    fn last_event_id(&mut self) -> Result<i64, StoreError> {
        let row = self
            .client
            .query_one("SELECT COALESCE(MAX(id), 0) FROM alert_events", &[])?;
        Ok(row.try_get(0)?)
    }

    fn incident_fingerprints(&mut self, id: i64) -> Result<Vec<String>, StoreError> {
        read::incident_fingerprints(&mut self.client, id)
    }

    fn incident_on_call(&mut self, id: i64) -> Result<Vec<(String, i64, String)>, StoreError> {
        read::incident_on_call(&mut self.client, id)
    }

    fn storm(&mut self, id: i64) -> Result<Option<crate::model::storm::StormView>, StoreError> {
        storm::storm_view(&mut self.client, id)
    }

    fn relay_clock(&mut self) -> Result<i64, StoreError> {
        storm::relay_clock(&mut self.client)
    }

    fn ack_key(&mut self) -> Result<Vec<u8>, StoreError> {
        let row = self
            .client
            .query_one("SELECT value FROM meta WHERE key = 'ack_key'", &[])?;
        let key: Option<Vec<u8>> = row.try_get(0)?;
        key.ok_or_else(|| StoreError::Corrupt("the ack-link key is empty".into()))
    }

    fn meta_int(&mut self, key: &str) -> Result<Option<i64>, StoreError> {
        let row = self
            .client
            .query_opt("SELECT int_value FROM meta WHERE key = $1", &[&key])?;
        Ok(match row {
            Some(r) => r.try_get(0)?,
            None => None,
        })
    }

    fn watched_receipts(&mut self) -> Result<Vec<WatchedReceipt>, StoreError> {
        read::watched_receipts(&mut self.client)
    }

    fn sent_to(&mut self, destination: &str, target: AckTarget) -> Result<bool, StoreError> {
        read::sent_to(&mut self.client, destination, target)
    }

    fn incident_page(&mut self, q: &super::IncidentQuery) -> Result<Vec<Incident>, StoreError> {
        console::incident_page(&mut self.client, q)
    }

    fn incident_timeline(&mut self, id: i64) -> Result<Option<super::Timeline>, StoreError> {
        console::timeline(&mut self.client, id)
    }

    fn destination_health(&mut self) -> Result<Vec<super::DestinationHealth>, StoreError> {
        console::destination_health(&mut self.client)
    }

    fn dead_letters(&mut self, limit: i64) -> Result<Vec<super::DeadLetter>, StoreError> {
        console::dead_letters(&mut self.client, limit)
    }

    fn console_session(
        &mut self,
        token_hash: &str,
        now_ms: i64,
    ) -> Result<Option<super::ConsoleSession>, StoreError> {
        console::console_session(&mut self.client, token_hash, now_ms)
    }

    fn maintenance_windows(
        &mut self,
    ) -> Result<Vec<crate::model::maintenance::Window>, StoreError> {
        maintenance::windows(&mut self.client, self.clock.now_millis())
    }
}

#[cfg(test)]
mod lock_order_tests {
    use super::*;
    use crate::store::contract::{event, routed};

    fn ingest(fp: &str) -> Write {
        Write::Ingest(vec![routed(
            event(fp, crate::payload::Status::Firing, 1),
            &["ops"],
        )])
    }

    #[test]
    fn webhooks_lock_in_one_order_and_results_return_in_the_given_one() {
        let writes = vec![ingest("b"), Write::Prune { before_ms: 1 }, ingest("a")];
        let (order, sorted) = lock_order(writes);
        assert_eq!(order, [1, 2, 0]);
        assert!(matches!(sorted[0], Write::Prune { .. }));
        let results = vec![
            Ok(Written::Pruned(1)),
            Ok(Written::Recorded),
            Err(StoreError::Stopped),
        ];
        let back = in_given_order(&order, results);
        assert!(matches!(back[0], Err(StoreError::Stopped)));
        assert!(matches!(back[1], Ok(Written::Pruned(1))));
        assert!(matches!(back[2], Ok(Written::Recorded)));
    }
}

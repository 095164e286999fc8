//! Connection admission: which connections a server keeps when it is full.
//!
//! A connection is *pending* from accept until it has delivered a complete request head (the
//! TLS handshake included), and *served* from then on. The accept loop never stops accepting:
//! a server that waits for a free slot while half-open connections hold every slot answers no
//! one (the slowloris attack). Instead, when a limit is reached, the oldest pending connection
//! is shed, so an attacker holding connections open only makes room for newer ones, and a
//! client that sends its request at once (Prometheus, Alertmanager) always gets through:
//!
//! - at most `max_pending_per_peer` pending connections per peer address: one peer's flood
//!   sheds its own oldest connections first;
//! - at most `max_pending` pending connections in all: the oldest pending is shed;
//! - at most `max_connections` in all: the oldest pending is shed, and when every connection is
//!   served the new one is refused. A served connection is never shed for a pending one;
//! - when more than half of `max_pending` are pending, a new connection gets the shorter head
//!   deadline (`Limits::pressure_head_timeout`).
//!
//! The registry is a plain structure under one lock, tested without sockets.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// The admission policy's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Open connections at most, served and pending.
    pub max_connections: usize,
    /// Connections that have not yet delivered a request head, at most.
    pub max_pending: usize,
    /// Pending connections of one peer address, at most.
    pub max_pending_per_peer: usize,
    /// Deadline for the TLS handshake and the first request head, and for each later head.
    pub head_timeout: Duration,
    /// The head deadline of connections accepted while more than half of `max_pending` wait.
    pub pressure_head_timeout: Duration,
    /// Largest request head.
    pub max_head_bytes: usize,
    /// How long in-flight requests may finish after a drain starts.
    pub grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 512,
            max_pending: 128,
            max_pending_per_peer: 32,
            head_timeout: Duration::from_secs(10),
            pressure_head_timeout: Duration::from_secs(2),
            max_head_bytes: 16 * 1024,
            grace: Duration::from_secs(5),
        }
    }
}

/// One connection's handle on the registry: the accept loop's verdict and the signal that tells
/// the connection's task to close.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    shed: Arc<Notify>,
    /// The deadline for its handshake and first head.
    pub head_timeout: Duration,
    registry: Arc<Registry>,
}

impl Ticket {
    /// Resolves when the connection is shed to make room; it must then close at once.
    pub async fn shed(&self) {
        self.shed.notified().await;
    }

    /// The connection delivered a request head: it is served from now on and never shed.
    pub fn served(&self) {
        self.registry.mark_served(self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// What the accept loop is told about a new connection.
#[derive(Debug)]
pub enum Admission {
    Admitted(Ticket),
    /// Every connection is served and the server is full: close the new one.
    Refused,
}

/// Every open connection of one server, in accept order.
#[derive(Debug)]
pub struct Registry {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Entry>,
    /// Pending connection ids, oldest first, in all and per peer.
    pending: BTreeSet<u64>,
    pending_by_peer: HashMap<IpAddr, BTreeSet<u64>>,
}

#[derive(Debug)]
struct Entry {
    peer: IpAddr,
    shed: Arc<Notify>,
}

impl Registry {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Registry {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a connection from `peer`, shedding what the policy says to make room.
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Admission {
        let mut st = self.lock();
        let l = &self.limits;
        if st.pending_of(peer) >= l.max_pending_per_peer.max(1) {
            st.shed_oldest_pending(Some(peer));
        }
        if st.pending.len() >= l.max_pending.max(1) {
            st.shed_oldest_pending(None);
        }
        if st.open.len() >= l.max_connections.max(1) && !st.shed_oldest_pending(None) {
            return Admission::Refused;
        }
        let head_timeout = if st.pending.len() * 2 > l.max_pending {
            l.pressure_head_timeout.min(l.head_timeout)
        } else {
            l.head_timeout
        };
        let id = st.next_id;
        st.next_id += 1;
        let shed = Arc::new(Notify::new());
        st.open.insert(
            id,
            Entry {
                peer,
                shed: Arc::clone(&shed),
            },
        );
        st.pending.insert(id);
        st.pending_by_peer.entry(peer).or_default().insert(id);
        Admission::Admitted(Ticket {
            id,
            shed,
            head_timeout,
            registry: Arc::clone(self),
        })
    }

    /// Connections open now (served and pending).
    pub fn open(&self) -> usize {
        self.lock().open.len()
    }

    /// Connections that have not delivered a request head yet.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    /// Sheds the oldest pending connection, if any (to free a descriptor when accept fails).
    pub fn shed_oldest_pending(&self) -> bool {
        self.lock().shed_oldest_pending(None)
    }

    /// Sheds every pending connection (a drain closes those at once).
    pub fn shed_pending(&self) {
        let mut st = self.lock();
        while st.shed_oldest_pending(None) {}
    }

    /// Tells every connection to close (the grace period is over).
    pub fn shed_all(&self) {
        for entry in self.lock().open.values() {
            entry.shed.notify_one();
        }
    }

    fn mark_served(&self, id: u64) {
        let mut st = self.lock();
        if let Some(peer) = st.open.get(&id).map(|e| e.peer) {
            st.forget_pending(id, peer);
        }
    }

    fn remove(&self, id: u64) {
        let mut st = self.lock();
        if let Some(entry) = st.open.remove(&id) {
            st.forget_pending(id, entry.peer);
        }
    }
}

impl State {
    fn pending_of(&self, peer: IpAddr) -> usize {
        self.pending_by_peer.get(&peer).map_or(0, BTreeSet::len)
    }

    /// Sheds the oldest pending connection (of `peer`, if given); false when there is none.
    /// It leaves the registry now, so its slot is free before its task has closed it.
    fn shed_oldest_pending(&mut self, peer: Option<IpAddr>) -> bool {
        let oldest = match peer {
            Some(p) => self
                .pending_by_peer
                .get(&p)
                .and_then(|s| s.first().copied()),
            None => self.pending.first().copied(),
        };
        let Some(id) = oldest else {
            return false;
        };
        if let Some(entry) = self.open.remove(&id) {
            self.forget_pending(id, entry.peer);
            entry.shed.notify_one();
        }
        true
    }

    fn forget_pending(&mut self, id: u64, peer: IpAddr) {
        self.pending.remove(&id);
        if let Some(ids) = self.pending_by_peer.get_mut(&peer) {
            ids.remove(&id);
            if ids.is_empty() {
                self.pending_by_peer.remove(&peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn limits(max_connections: usize, max_pending: usize, per_peer: usize) -> Limits {
        Limits {
            max_connections,
            max_pending,
            max_pending_per_peer: per_peer,
            ..Limits::default()
        }
    }

    fn admit(r: &Arc<Registry>, peer: IpAddr) -> Ticket {
        match r.admit(peer) {
            Admission::Admitted(t) => t,
            Admission::Refused => panic!("refused"),
        }
    }

    /// Whether `t` was told to close.
    fn was_shed(t: &Ticket) -> bool {
        let fut = t.shed();
        let mut fut = std::pin::pin!(fut);
        let waker = std::task::Waker::noop();
        fut.as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    }

    use std::future::Future as _;

    #[test]
    fn one_peers_flood_sheds_its_own_oldest_connections() {
        let r = Registry::new(limits(100, 50, 3));
        let flood: Vec<Ticket> = (0..3).map(|_| admit(&r, ip(1))).collect();
        let other = admit(&r, ip(2));
        let newest = admit(&r, ip(1));
        assert!(was_shed(&flood[0]), "the peer's oldest goes first");
        assert!(!was_shed(&flood[1]) && !was_shed(&flood[2]) && !was_shed(&newest));
        assert!(!was_shed(&other), "another peer is untouched");
        assert_eq!(r.pending(), 4);
    }

    #[test]
    fn the_oldest_pending_connection_makes_room_never_a_served_one() {
        let r = Registry::new(limits(3, 3, 10));
        let served = admit(&r, ip(1));
        served.served();
        let a = admit(&r, ip(2));
        let b = admit(&r, ip(3));
        let c = admit(&r, ip(4));
        assert!(was_shed(&a), "full: the oldest pending is shed");
        assert!(!was_shed(&served) && !was_shed(&b) && !was_shed(&c));
        b.served();
        c.served();
        assert!(
            matches!(r.admit(ip(5)), Admission::Refused),
            "all served: the new one is refused"
        );
        assert_eq!(r.open(), 3);
    }

    #[test]
    fn pending_limit_and_pressure_deadline() {
        let r = Registry::new(limits(100, 4, 10));
        let first = admit(&r, ip(1));
        assert_eq!(first.head_timeout, Limits::default().head_timeout);
        let _more: Vec<Ticket> = (2..=4).map(|i| admit(&r, ip(i))).collect();
        let fifth = admit(&r, ip(5));
        assert!(was_shed(&first));
        assert_eq!(fifth.head_timeout, Limits::default().pressure_head_timeout);
        assert_eq!(r.pending(), 4);
    }

    #[test]
    fn dropping_a_ticket_frees_its_slot_and_shed_pending_clears_all() {
        let r = Registry::new(limits(2, 2, 2));
        let a = admit(&r, ip(1));
        let b = admit(&r, ip(1));
        b.served();
        drop(a);
        assert_eq!((r.open(), r.pending()), (1, 0));
        let c = admit(&r, ip(1));
        r.shed_pending();
        assert!(was_shed(&c) && !was_shed(&b));
        assert_eq!(r.pending(), 0);
        r.shed_all();
        assert!(was_shed(&b));
    }
}

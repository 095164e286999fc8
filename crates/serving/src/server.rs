//! The accept loop and each connection's life: admission (see [`crate::admission`]), the TLS
//! handshake and first request head under one deadline, HTTP/1.1 through hyper, and a graceful
//! drain.
//!
//! hyper 1 has no server type; this is the one both binaries use. A binary supplies a
//! [`Handler`] (its routes) and a [`TlsSource`] (none, fixed files, or a reloadable web
//! configuration).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admission::{Admission, Limits, Registry, Ticket};

pub type Body = Full<Bytes>;

/// A binary's routes.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. The peer is in the request's extensions as [`Peer`].
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> impl Future<Output = Response<Body>> + Send;
}

/// Where a connection's TLS comes from, asked once per connection so that reloaded
/// certificates apply to the next one.
pub trait TlsSource: Send + Sync + 'static {
    /// The acceptor for a new connection; `None` serves plain HTTP.
    fn acceptor(&self) -> Option<TlsAcceptor>;
    /// A check of the finished handshake beyond what rustls verified (allowed client names);
    /// an error closes the connection.
    fn verify(&self, conn: &rustls::ServerConnection) -> Result<(), String>;
}

/// Plain HTTP.
#[derive(Debug, Clone, Copy)]
pub struct NoTls;

impl TlsSource for NoTls {
    fn acceptor(&self) -> Option<TlsAcceptor> {
        None
    }

    fn verify(&self, _: &rustls::ServerConnection) -> Result<(), String> {
        Ok(())
    }
}

/// The peer of a request, put into its extensions by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

/// A running server.
#[derive(Debug)]
pub struct Serving {
    addresses: Vec<SocketAddr>,
    accept_loops: Vec<JoinHandle<()>>,
    registry: Arc<Registry>,
    drain: watch::Sender<bool>,
}

impl Serving {
    /// The bound addresses, in the order of the listeners.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.addresses
    }

    /// Whether every accept loop is still running (the systemd watchdog's self-check).
    pub fn accepting(&self) -> bool {
        self.accept_loops.iter().all(|h| !h.is_finished())
    }

    /// Open connections, served and pending.
    pub fn open_connections(&self) -> usize {
        self.registry.open()
    }

    /// Stops accepting, closes connections that are idle or have not sent a request, lets
    /// in-flight requests finish (each answered with `Connection: close`) for the grace
    /// period, then closes what is left. Returns when every connection is closed.
    pub async fn drain(self) {
        let _ = self.drain.send(true);
        for handle in self.accept_loops {
            let _ = handle.await;
        }
        self.registry.shed_pending();
        let grace = self.registry.limits().grace;
        let deadline = Instant::now() + grace;
        while self.registry.open() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.registry.open();
        if left > 0 {
            tracing::warn!("{left} connections still busy after {grace:?}; closing them");
            self.registry.shed_all();
        }
    }
}

/// The kernel's queue of connections not yet accepted. 4096 (Go's default on Linux, the
/// kernel's `somaxconn` cap) rather than tokio's 1024: under a connection flood a full queue
/// drops the SYN of a legitimate client, which then waits a second to try again.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds each address in turn; the error names the address that failed.
pub async fn bind(addresses: &[SocketAddr]) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for address in addresses {
        let listener = listen(*address)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {address}: {e}")))?;
        listeners.push(listener);
    }
    Ok(listeners)
}

fn listen(address: SocketAddr) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std and tokio do on Unix: a restarted service can bind while old connections linger.
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Starts an accept loop per listener.
pub fn serve<H: Handler, T: TlsSource>(
    listeners: Vec<TcpListener>,
    handler: Arc<H>,
    tls: Arc<T>,
    limits: Limits,
) -> Serving {
    let registry = Registry::new(limits);
    let (drain, draining) = watch::channel(false);
    let addresses = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let shared = Arc::new(Shared {
        handler,
        tls,
        registry: Arc::clone(&registry),
        draining,
    });
    let accept_loops = listeners
        .into_iter()
        .map(|listener| tokio::spawn(accept_loop(listener, Arc::clone(&shared))))
        .collect();
    Serving {
        addresses,
        accept_loops,
        registry,
        drain,
    }
}

struct Shared<H, T> {
    handler: Arc<H>,
    tls: Arc<T>,
    registry: Arc<Registry>,
    draining: watch::Receiver<bool>,
}

async fn accept_loop<H: Handler, T: TlsSource>(listener: TcpListener, shared: Arc<Shared<H, T>>) {
    let mut draining = shared.draining.clone();
    let mut backoff = AcceptBackoff::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = draining.wait_for(|d| *d) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff.reset();
                admit(stream, peer, &shared);
            }
            // A connection that was reset before it was accepted: nothing to wait for (and a
            // wait here would let a reset flood stall the accept loop).
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or memory: free one by shedding the oldest
                // pending connection, and wait before the next try instead of spinning.
                shared.registry.shed_oldest_pending();
                backoff.wait(&e).await;
            }
        }
    }
}

fn admit<H: Handler, T: TlsSource>(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &Arc<Shared<H, T>>,
) {
    let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    match shared.registry.admit(peer.ip()) {
        Admission::Admitted(ticket) => {
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream, peer, ticket, Arc::clone(shared)));
        }
        Admission::Refused => {
            tracing::debug!(%peer, "every connection is busy with a request; refused");
        }
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
    )
}

/// Doubling waits after failed accepts (10 ms to 1 s), with one log line per failing streak.
#[derive(Debug, Default)]
struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    fn reset(&mut self) {
        if self.failures > 0 {
            tracing::info!("accepting connections again");
        }
        self.failures = 0;
    }

    async fn wait(&mut self, e: &io::Error) {
        if self.failures == 0 {
            tracing::warn!("accept failed, backing off: {e}");
        }
        let ms = 10u64 << self.failures.min(7);
        self.failures = self.failures.saturating_add(1);
        tokio::time::sleep(Duration::from_millis(ms.min(1000))).await;
    }
}

async fn connection<H: Handler, T: TlsSource>(
    stream: TcpStream,
    peer: SocketAddr,
    ticket: Ticket,
    shared: Arc<Shared<H, T>>,
) {
    let Some(acceptor) = shared.tls.acceptor() else {
        let deadline = tokio::time::Instant::now() + ticket.head_timeout;
        return serve_http(stream, peer, ticket, deadline, &shared).await;
    };
    let mut draining = shared.draining.clone();
    // One deadline for the handshake and the first request head together.
    let deadline = tokio::time::Instant::now() + ticket.head_timeout;
    let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
    let tls = tokio::select! {
        done = handshake => match done {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
        },
        () = ticket.shed() => return,
        _ = draining.wait_for(|d| *d) => return,
    };
    if let Err(reason) = shared.tls.verify(tls.get_ref().1) {
        return tracing::info!(%peer, "client certificate rejected: {reason}");
    }
    serve_http(tls, peer, ticket, deadline, &shared).await;
}

/// Serves HTTP/1.1 on one connection until the client closes it, it is shed, its first head
/// misses the deadline, or a drain ends it.
async fn serve_http<I, H, T>(
    io: I,
    peer: SocketAddr,
    ticket: Ticket,
    first_head_by: tokio::time::Instant,
    shared: &Arc<Shared<H, T>>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Handler,
    T: TlsSource,
{
    let limits = *shared.registry.limits();
    let ticket = Arc::new(ticket);
    let served = Arc::new(AtomicBool::new(false));
    let service = {
        let (ticket, served, handler, draining) = (
            Arc::clone(&ticket),
            Arc::clone(&served),
            Arc::clone(&shared.handler),
            shared.draining.clone(),
        );
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            if !served.swap(true, Ordering::Relaxed) {
                ticket.served();
            }
            req.extensions_mut().insert(Peer(peer));
            let (handler, draining) = (Arc::clone(&handler), draining.clone());
            async move {
                let mut response = handler.handle(req).await;
                // Stopping: this answer is the connection's last, and the client is told so.
                if *draining.borrow() {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    let first_head = tokio::time::sleep_until(first_head_by);
    let mut first_head = std::pin::pin!(first_head);
    let mut draining = shared.draining.clone();
    let (mut closing, mut head_deadline) = (false, true);
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(%peer, "connection closed with error: {e}");
                }
                return;
            }
            () = ticket.shed() => return,
            // A select's guards are evaluated when it is entered, not when the flag changes:
            // the head may have come meanwhile.
            () = &mut first_head, if head_deadline => {
                if !served.load(Ordering::Relaxed) {
                    return tracing::debug!(%peer, "no request head in time; closed");
                }
                head_deadline = false;
            }
            _ = draining.wait_for(|d| *d), if !closing => {
                if !served.load(Ordering::Relaxed) {
                    return;
                }
                // Idle: closes now; in flight: answers with `Connection: close`, then closes.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

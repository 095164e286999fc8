//! The exporter's HTTP face: listeners, TLS, limits, routing and the `/metrics` response.
//!
//! hyper 1 has no server type, so the accept loop lives here. Every connection gets a header-read
//! deadline (slowloris), a TLS-handshake deadline, and counts against a connection cap; scrapes
//! count against `--web.max-requests`. The web configuration is looked up per connection (TLS)
//! and per request (auth, headers), so a changed file applies without restart.

mod gzip;
mod health;
mod negotiate;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::cli::ListenAddress;
use crate::collector::Scraper;
use crate::metrics::{MetricSet, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::web_config::{Rejection, WebConfig};

pub use health::{HealthReport, health_report};

/// Open connections at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 256;
/// Largest request head accepted (hyper's minimum buffer size).
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long in-flight requests may finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Subtracted from Prometheus' scrape timeout so the answer arrives before it gives up.
const SCRAPE_TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

type Body = Full<Bytes>;

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct App {
    scraper: Scraper,
    telemetry_path: String,
    web: WebConfig,
    scrape_permits: Option<Arc<Semaphore>>,
    /// Deadline for a client's TLS handshake and for each request head (slowloris).
    read_header_timeout: Duration,
    /// Size of the last rendered scrape, to allocate the next one in one go.
    last_body_len: AtomicUsize,
    gzip: gzip::Gzip,
}

impl App {
    pub fn new(
        scraper: Scraper,
        telemetry_path: String,
        web: WebConfig,
        max_requests: usize,
        read_header_timeout: Duration,
    ) -> Self {
        Self {
            scraper,
            telemetry_path,
            web,
            scrape_permits: (max_requests > 0).then(|| Arc::new(Semaphore::new(max_requests))),
            read_header_timeout,
            last_body_len: AtomicUsize::new(16 * 1024),
            gzip: gzip::Gzip::new(),
        }
    }

    /// Runs every collector and adds the exporter's own state.
    pub async fn scrape(&self, deadline: Option<Duration>) -> MetricSet {
        let mut set = self.scraper.scrape(deadline).await;
        set.gauge(
            "rpi_exporter_web_config_last_reload_successful",
            "Whether the last attempt to (re)load --web.config.file succeeded (1) or the previous configuration is still in force (0)",
        )
        .sample([], f64::from(u8::from(self.web.last_reload_successful())));
        set
    }

    /// Renders a full scrape in the requested format: the watchdog's self-check uses this too.
    pub async fn render(&self, deadline: Option<Duration>, openmetrics: bool) -> String {
        let set = self.scrape(deadline).await;
        let mut body = String::with_capacity(self.last_body_len.load(Ordering::Relaxed) + 1024);
        if openmetrics {
            if set.encode_openmetrics(&mut body).is_err() {
                // Only a formatter error can get here; writing to a String never fails.
                body.clear();
            }
        } else {
            set.encode_text(&mut body);
        }
        self.last_body_len.store(body.len(), Ordering::Relaxed);
        body
    }

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let web = self.web.current();
        let mut response = match web.authorize(req.headers()).await {
            Err(Rejection::RateLimited) => {
                plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n")
            }
            Err(Rejection::Unauthorized) => {
                let mut r = plain(StatusCode::UNAUTHORIZED, "Unauthorized\n");
                r.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                r
            }
            Ok(()) => self.route(&req).await,
        };
        for (name, value) in web.response_headers() {
            response.headers_mut().insert(name.clone(), value.clone());
        }
        Ok(response)
    }

    async fn route(&self, req: &Request<Incoming>) -> Response<Body> {
        let path = req.uri().path();
        let known = path == self.telemetry_path || matches!(path, "/" | "/healthz" | "/health");
        if !known {
            return plain(StatusCode::NOT_FOUND, "Not Found\n");
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return r;
        }
        if has_body(req) {
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request bodies are not accepted\n",
            );
        }
        if path == self.telemetry_path {
            return self.metrics(req).await;
        }
        match path {
            "/healthz" => plain(StatusCode::OK, "OK\n"),
            "/health" => {
                let report = health_report(&self.scrape(None).await);
                let json = serde_json::to_vec_pretty(&report).unwrap_or_default();
                with_type(Response::new(Body::from(json)), "application/json")
            }
            _ => with_type(
                Response::new(Body::from(self.landing_page())),
                "text/html; charset=utf-8",
            ),
        }
    }

    async fn metrics(&self, req: &Request<Incoming>) -> Response<Body> {
        let _permit = match &self.scrape_permits {
            Some(permits) => match Arc::clone(permits).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    return plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Too many scrapes in flight (--web.max-requests)\n",
                    );
                }
            },
            None => None,
        };
        let headers = req.headers();
        let deadline =
            negotiate::scrape_timeout(headers).map(|t| t.saturating_sub(SCRAPE_TIMEOUT_MARGIN));
        let openmetrics = negotiate::prefers_openmetrics(headers);
        let body = self.render(deadline, openmetrics).await;
        let content_type = if openmetrics {
            OPENMETRICS_CONTENT_TYPE
        } else {
            TEXT_CONTENT_TYPE
        };
        let mut response = if negotiate::accepts_gzip(headers) {
            match self.gzip.compress(body.as_bytes()) {
                Ok(compressed) => {
                    let mut r = Response::new(Body::from(compressed));
                    r.headers_mut()
                        .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                    r
                }
                Err(_) => Response::new(Body::from(body)),
            }
        } else {
            Response::new(Body::from(body))
        };
        response.headers_mut().insert(
            header::VARY,
            HeaderValue::from_static("Accept, Accept-Encoding"),
        );
        with_type(response, content_type)
    }

    fn landing_page(&self) -> String {
        let path = html_escape(&self.telemetry_path);
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>pi-exporter</title></head>\n\
             <body><h1>pi-exporter {version}</h1>\n\
             <p>Prometheus exporter for Raspberry Pi health.</p>\n<ul>\n\
             <li><a href=\"{path}\">{path}</a>: metrics for Prometheus</li>\n\
             <li><a href=\"health\">/health</a>: JSON summary (temperature, throttling, disk space)</li>\n\
             <li><a href=\"healthz\">/healthz</a>: liveness</li>\n</ul>\n\
             <p>Collectors: {collectors}</p>\n</body></html>\n",
            version = env!("CARGO_PKG_VERSION"),
            collectors = self
                .scraper
                .collector_names()
                .collect::<Vec<_>>()
                .join(", "),
        )
    }
}

fn has_body(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()) != Some(0))
}

fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = with_type(Response::new(Body::from(text)), "text/plain; charset=utf-8");
    *r.status_mut() = status;
    r
}

fn with_type(mut r: Response<Body>, content_type: &'static str) -> Response<Body> {
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Binds every `--web.listen-address`.
pub async fn bind(addresses: &[ListenAddress]) -> io::Result<Vec<TcpListener>> {
    let mut listeners = Vec::with_capacity(addresses.len());
    for address in addresses {
        let mut last_error = None;
        let mut bound = None;
        for candidate in address.candidates() {
            match TcpListener::bind(candidate).await {
                Ok(listener) => {
                    bound = Some(listener);
                    break;
                }
                Err(e) => {
                    last_error = Some(io::Error::new(
                        e.kind(),
                        format!("cannot listen on {candidate}: {e}"),
                    ))
                }
            }
        }
        match bound {
            Some(listener) => listeners.push(listener),
            None => {
                return Err(
                    last_error.unwrap_or_else(|| io::Error::other("no address to listen on"))
                );
            }
        }
    }
    Ok(listeners)
}

/// A running server: its accept loops, for the watchdog to check.
#[derive(Debug)]
pub struct Serving {
    pub addresses: Vec<SocketAddr>,
    accept_loops: Vec<JoinHandle<()>>,
    graceful: Arc<GracefulShutdown>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Serving {
    /// Whether every accept loop is still running.
    pub fn accepting(&self) -> bool {
        self.accept_loops.iter().all(|h| !h.is_finished())
    }

    /// Stops accepting and waits (bounded) for in-flight requests.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for handle in self.accept_loops {
            let _ = handle.await;
        }
        let graceful = Arc::try_unwrap(self.graceful).unwrap_or_else(|_| GracefulShutdown::new());
        if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
        }
    }
}

/// Starts an accept loop per listener.
pub fn serve(listeners: Vec<TcpListener>, app: Arc<App>) -> Serving {
    let graceful = Arc::new(GracefulShutdown::new());
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let addresses = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .collect();
    let accept_loops = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                Arc::clone(&app),
                Arc::clone(&graceful),
                Arc::clone(&connections),
                stopped.clone(),
            ))
        })
        .collect();
    Serving {
        addresses,
        accept_loops,
        graceful,
        stop,
    }
}

async fn accept_loop(
    listener: TcpListener,
    app: Arc<App>,
    graceful: Arc<GracefulShutdown>,
    connections: Arc<Semaphore>,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = stopped.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        let app = Arc::clone(&app);
        let graceful = Arc::clone(&graceful);
        tokio::spawn(async move {
            let _permit = permit;
            let web = app.web.current();
            match web.tls_acceptor() {
                None => serve_connection(TokioIo::new(stream), app, &graceful).await,
                Some(acceptor) => {
                    let tls = match tokio::time::timeout(
                        app.read_header_timeout,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, "TLS handshake failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    if let Err(reason) = web.check_client_cert(tls.get_ref().1) {
                        tracing::info!(%peer, "client certificate rejected: {reason}");
                        return;
                    }
                    serve_connection(TokioIo::new(tls), app, &graceful).await;
                }
            }
        });
    }
}

async fn serve_connection<I>(io: TokioIo<I>, app: Arc<App>, graceful: &GracefulShutdown)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = app.read_header_timeout;
    let service = hyper::service::service_fn(move |req| Arc::clone(&app).handle(req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service);
    if let Err(e) = graceful.watch(conn).await {
        tracing::debug!("connection closed with error: {e}");
    }
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

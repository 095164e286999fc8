//! The exporter's HTTP face: its routes and the `/metrics` response. The accept loop, admission,
//! deadlines and drain are the `serving` crate's; scrapes count against `--web.max-requests`.
//! The web configuration is looked up per connection (TLS) and per request (auth, headers), so
//! a changed file applies without restart.

mod gzip;
mod health;
mod negotiate;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::collector::Scraper;
use crate::listen::ListenAddress;
use crate::metrics::{MetricSet, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use serving::web_config::WebConfig;

pub use health::{HealthReport, health_report};

/// Largest request head accepted (hyper's minimum buffer size).
const MAX_HEAD_BYTES: usize = 8 * 1024;
/// How long in-flight requests may finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Subtracted from Prometheus' scrape timeout so the answer arrives before it gives up.
const SCRAPE_TIMEOUT_MARGIN: Duration = Duration::from_millis(500);

use serving::{Body, Serving};

/// Shared state of the HTTP handlers.
#[derive(Debug)]
pub struct App {
    scraper: Scraper,
    telemetry_path: String,
    web: Arc<WebConfig>,
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
            web: Arc::new(web),
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

    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let web = self.web.current();
        let mut response = match web.authorize(req.headers()).await {
            Ok(()) => self.route(&req).await,
            Err(rejection) => rejection.response(),
        };
        web.apply_headers(&mut response);
        response
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
            match serving::bind(&[candidate]).await {
                Ok(mut l) => {
                    bound = l.pop();
                    break;
                }
                Err(e) => last_error = Some(e),
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

/// The admission limits of the exporter's listeners: small, since a Pi's memory is.
pub fn limits(read_header_timeout: Duration) -> serving::Limits {
    serving::Limits {
        max_connections: 256,
        max_pending: 64,
        max_pending_per_peer: 16,
        head_timeout: read_header_timeout,
        max_head_bytes: MAX_HEAD_BYTES,
        grace: SHUTDOWN_GRACE,
        ..serving::Limits::default()
    }
}

/// Starts serving `app` on `listeners`.
pub fn serve(listeners: Vec<TcpListener>, app: Arc<App>) -> Serving {
    let limits = limits(app.read_header_timeout);
    let tls = Arc::clone(&app.web);
    serving::serve(listeners, app, tls, limits)
}

impl serving::Handler for App {
    fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
    ) -> impl std::future::Future<Output = Response<Body>> + Send {
        App::handle(self, req)
    }
}

//! The relay's HTTP face: `POST /webhook[/{route}]`, `GET /metrics`, `GET /healthz`, the
//! JSON API, ack links and provider callbacks.
//!
//! The accept loop, admission, head deadlines and drain are the `serving` crate's; this module
//! keeps the handlers' shared state ([`App`]), the routing of a request to its area, the checks
//! and small responses the areas share, and the listener. The areas:
//! - `webhook`: Alertmanager's webhook, with a whole-body deadline and a body size limit. A
//!   webhook is answered 2xx only after the store committed it; 5xx only when the store
//!   failed; 4xx with a JSON error for everything the sender got wrong.
//! - `api`: the JSON API (incidents, storms, rotations).
//! - `maintenance`: maintenance windows in the JSON API (list, create, end).
//! - `ack_pages`: the ack links' confirm page and acknowledgement.
//! - `inbound`: provider callbacks (Twilio's inbound SMS).
//! - `voice`: Twilio's callbacks of a call (TwiML, key presses, status).
//! - `console`: the on-call console's pages and forms (`/ui/`), with its own sign-in.

mod ack_pages;
mod api;
mod auth;
mod console;
mod inbound;
mod maintenance;
mod voice;
mod webhook;

pub use self::console::session::LoginLimiter;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serving::web_config::WebConfig;
use serving::{Body, Peer, Serving};

use crate::config::Config;
use crate::delivery::Engine;
use crate::escalation::Escalator;
use crate::live::Live;
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics};
use crate::render::ack::Signer;
use crate::store::Store;

const MAX_HEAD_BYTES: usize = 16 * 1024;
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
const HEALTH_BUDGET: Duration = Duration::from_secs(2);

/// Shared state of the handlers.
#[derive(Debug)]
pub struct App {
    pub live: Arc<Live>,
    pub store: Store,
    pub metrics: Arc<Metrics>,
    pub engine: Arc<Engine>,
    pub escalator: Arc<Escalator>,
    /// Takes the heartbeats (`deadman.match`) out of webhooks.
    pub deadman: Arc<crate::deadman::Deadman>,
    pub storms: Arc<crate::storm::Storms>,
    /// Maintenance windows: intake asks which holds an alert; the API creates and ends them.
    pub maintenance: Arc<crate::maintenance::Maintenance>,
    /// Verifies acknowledgement links (the links themselves are made by the engine).
    pub signer: Signer,
    /// Failed console sign-ins, per address and user name.
    pub login_limiter: console::session::LoginLimiter,
}

impl App {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        match (req.method(), path.as_str()) {
            (&Method::POST, "/webhook") => self.webhook(req, None).await,
            (&Method::POST, p) if p.starts_with("/webhook/") => {
                let name = p["/webhook/".len()..].to_owned();
                self.webhook(req, Some(name)).await
            }
            (_, p) if p == "/webhook" || p.starts_with("/webhook/") => {
                let mut r = json_error(StatusCode::METHOD_NOT_ALLOWED, "method", "use POST");
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("POST"));
                r
            }
            (_, p) if p.starts_with("/api/v1/incidents") => self.api(req).await,
            (_, "/ui") => console_redirect(),
            (_, p) if p.starts_with("/ui/") => self.console(req).await,
            (&Method::GET, "/api/v1/rotations") => self.rotations(&req),
            (&Method::GET, p) if p.starts_with("/api/v1/rotations/") => {
                let file = p["/api/v1/rotations/".len()..].to_owned();
                self.rotation_calendar(&req, &file)
            }
            (_, p) if p.starts_with("/api/v1/storms/") => self.storm_api(req).await,
            (_, p)
                if p.strip_prefix("/api/v1/maintenance")
                    .is_some_and(|r| r.is_empty() || r.starts_with('/')) =>
            {
                self.maintenance_api(req).await
            }
            (&Method::GET | &Method::HEAD, p) if p.starts_with("/ack/") => {
                let token = p["/ack/".len()..].to_owned();
                self.ack_page(&token).await
            }
            (&Method::POST, p) if p.starts_with("/ack/") => {
                let token = p["/ack/".len()..].to_owned();
                let peer = peer_of(&req);
                self.ack_link(&token, &peer).await
            }
            (&Method::POST, p) if p.starts_with("/inbound/twilio/") => {
                let channel = p["/inbound/twilio/".len()..].to_owned();
                self.twilio_inbound(req, &channel).await
            }
            (&Method::POST | &Method::GET, p) if p.starts_with("/inbound/voice/") => {
                let rest = p["/inbound/voice/".len()..].to_owned();
                self.twilio_voice(req, &rest).await
            }
            (&Method::GET | &Method::HEAD, "/metrics") => {
                let mut r = Response::new(Body::from(self.metrics.encode()));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(METRICS_CONTENT_TYPE),
                );
                r
            }
            (&Method::GET | &Method::HEAD, "/healthz") => {
                // Healthy only while the store can commit: what Alertmanager's webhooks need.
                match tokio::time::timeout(HEALTH_BUDGET, self.store.check()).await {
                    Ok(Ok(())) => plain(StatusCode::OK, "OK\n"),
                    Ok(Err(e)) => {
                        plain(StatusCode::SERVICE_UNAVAILABLE, &format!("storage: {e}\n"))
                    }
                    Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "storage does not answer\n"),
                }
            }
            (&Method::GET | &Method::HEAD, "/readyz") => {
                // Ready while the database answers: a load balancer sends webhooks here.
                match tokio::time::timeout(HEALTH_BUDGET, self.store.ping()).await {
                    Ok(Ok(())) => plain(StatusCode::OK, "ready\n"),
                    Ok(Err(e)) => {
                        plain(StatusCode::SERVICE_UNAVAILABLE, &format!("storage: {e}\n"))
                    }
                    Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE, "storage does not answer\n"),
                }
            }
            (&Method::GET | &Method::HEAD, "/") => plain(
                StatusCode::OK,
                concat!(
                    "alert-relay ",
                    env!("CARGO_PKG_VERSION"),
                    "\nPOST /webhook (Alertmanager webhook v4), GET /metrics, GET /healthz, GET /readyz\n"
                ),
            ),
            _ => plain(StatusCode::NOT_FOUND, "Not Found\n"),
        }
    }

    /// A 401 with the challenge of the configured scheme (RFC 9110 requires one), counted.
    fn unauthorized(&self, auth: &crate::config::Auth) -> Response<Body> {
        self.metrics.reject("unauthorized");
        let mut r = json_error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong credentials",
        );
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, auth::challenge(auth));
        r
    }

    /// The configuration, when the request carries the relay's `auth:` credentials (the webhook
    /// and the API); otherwise the 401 to answer.
    fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Config>, Refusal> {
        let config = self.live.config();
        if auth::authorized(&config.auth, headers) {
            Ok(config)
        } else {
            Err(Box::new(self.unauthorized(&config.auth)))
        }
    }
}

impl App {
    /// Now, and the end of what the on-call page and the calendar feeds show.
    fn on_call_horizon(&self) -> (jiff::Timestamp, jiff::Timestamp) {
        let now = self.live.clock.now();
        let until = now
            .checked_add(jiff::SignedDuration::from_hours(24 * ON_CALL_DAYS))
            .unwrap_or(now);
        (now, until)
    }

    /// `rotation`'s shifts from now through [`ON_CALL_DAYS`] as an iCalendar feed (the API's
    /// and the console's personal one).
    fn rotation_feed(&self, rotation: &crate::rotation::Rotation) -> String {
        let (now, until) = self.on_call_horizon();
        crate::render::ical::rotation_calendar(rotation, &rotation.shifts(now, until), now)
    }
}

/// How far ahead the on-call page and the calendar feeds reach.
const ON_CALL_DAYS: i64 = 14;

/// The answer of a step that refuses a request (boxed: an `Err` as large as a `Response`
/// would be copied through every step).
type Refusal = Box<Response<Body>>;

fn peer_of(req: &Request<Incoming>) -> String {
    req.extensions()
        .get::<Peer>()
        .map_or_else(|| "unknown".to_owned(), |p| p.0.ip().to_string())
}

fn console_redirect() -> Response<Body> {
    let mut r = plain(StatusCode::MOVED_PERMANENTLY, "/ui/\n");
    r.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
    r
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Body::from(serde_json::to_vec(value).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn json_error(status: StatusCode, reason: &str, message: &str) -> Response<Body> {
    json(
        status,
        &serde_json::json!({ "status": "error", "error": reason, "message": message }),
    )
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(text.to_owned()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The relay's routes behind its web configuration (`--web.config.file`): TLS for every
/// connection, its headers on every response, and its rate limit and basic-auth users on the
/// routes that have no authentication of their own. The webhook and the API keep the relay's
/// `auth:` (Alertmanager and the CLI send one `Authorization` header); ack links and Twilio's
/// callbacks carry their own proof and must stay reachable from phones and providers; the
/// console (`/ui/`) has its own sign-in and limit.
struct Listener {
    app: Arc<App>,
    web: Arc<WebConfig>,
}

/// Whether the web configuration's rate limit and basic-auth users guard `path`.
fn guarded_by_web_config(path: &str) -> bool {
    !(path == "/webhook"
        || path.starts_with("/webhook/")
        || path.starts_with("/api/")
        || path.starts_with("/ack/")
        || path.starts_with("/inbound/")
        || path == "/ui"
        || path.starts_with("/ui/"))
}

impl serving::Handler for Listener {
    async fn handle(self: Arc<Self>, mut req: Request<Incoming>) -> Response<Body> {
        let web = self.web.current();
        req.extensions_mut()
            .insert(console::OverTls(web.tls_acceptor().is_some()));
        let admitted = if guarded_by_web_config(req.uri().path()) {
            web.authorize(req.headers()).await
        } else {
            Ok(())
        };
        let mut response = match admitted {
            Ok(()) => Arc::clone(&self.app).handle(req).await,
            Err(rejection) => rejection.response(),
        };
        web.apply_headers(&mut response);
        response
    }
}

/// Binds the listener and starts accepting, with TLS from the web configuration (looked up
/// per connection, so renewed certificates apply without a restart).
pub async fn serve(app: Arc<App>, web: Arc<WebConfig>) -> io::Result<Serving> {
    let config = app.live.config();
    let listeners = serving::bind(&[config.listen]).await?;
    let max = config.limits.max_connections;
    let limits = serving::Limits {
        max_connections: max,
        max_pending: (max / 2).max(1),
        head_timeout: config.limits.read_header_timeout,
        max_head_bytes: MAX_HEAD_BYTES,
        grace: SHUTDOWN_GRACE,
        ..serving::Limits::default()
    };
    let tls = Arc::clone(&web);
    Ok(serving::serve(
        listeners,
        Arc::new(Listener { app, web }),
        tls,
        limits,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::MapSecrets;
    use crate::metrics::CommitMetrics;
    use crate::store::tests::Flaky;

    #[tokio::test]
    async fn a_failed_commit_is_a_5xx_so_alertmanager_retries() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = crate::config::parse(
            "listen: 127.0.0.1:0\nstorage: { sqlite: x }\nchannels: { c: { type: webhook, url: 'http://127.0.0.1:9/' } }\n\
             policies: { p: { steps: [ { notify: [c] } ] } }\nroutes: [ { policy: p } ]\n",
            Path::new("/"),
            &MapSecrets::default(),
        )
        .expect("config");
        let (metrics, _) = Metrics::new();
        let (store, _thread) =
            Store::start(Flaky::full(), CommitMetrics(Arc::clone(&metrics))).expect("store");
        let http = reqwest::Client::new();
        let live = Arc::new(Live::new("relay.yml".into(), config));
        let engine = Engine::new(crate::delivery::EngineParts::for_tests(
            store.clone(),
            Arc::clone(&metrics),
            Arc::clone(&live),
        ));
        let escalator = Escalator::new(store.clone(), Arc::clone(&engine), Arc::clone(&live));
        let deadman = crate::deadman::Deadman::start(
            store.clone(),
            Arc::clone(&engine),
            Arc::clone(&live),
            Arc::clone(&metrics),
        )
        .await
        .expect("deadman");
        let app = Arc::new(App {
            live: Arc::clone(&live),
            store: store.clone(),
            metrics: Arc::clone(&metrics),
            engine: Arc::clone(&engine),
            storms: crate::storm::Storms::new(
                store.clone(),
                Arc::clone(&engine),
                Arc::clone(&escalator),
                Arc::clone(&live),
                Arc::new(crate::relay_clock::RelayClock::new(0)),
                Arc::clone(&metrics),
            ),
            escalator,
            deadman,
            maintenance: crate::maintenance::Maintenance::unloaded(
                store.clone(),
                Arc::clone(&live),
            ),
            signer: Signer::new(vec![1; 32], None),
            login_limiter: console::session::LoginLimiter::default(),
        });
        let serving = serve(app, Arc::new(WebConfig::disabled()))
            .await
            .expect("serve");
        let body = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"},"startsAt":"2026-01-01T00:00:00Z"}]}"#;
        let r = http
            .post(format!("http://{}/webhook", serving.addresses()[0]))
            .body(body)
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 500);
        let j: serde_json::Value = r.json().await.expect("json");
        assert_eq!(j["error"], "storage");
        let r = http
            .get(format!("http://{}/healthz", serving.addresses()[0]))
            .send()
            .await
            .expect("healthz");
        // The DB thread answers; the store cannot commit, and that is what counts.
        assert_eq!(r.status(), 503);
        let text = r.text().await.expect("body");
        assert!(
            text.contains("cannot commit") && text.contains("disk full"),
            "{text}"
        );
        assert!(
            metrics
                .encode()
                .contains("alert_relay_storage_errors_total 1")
        );
        serving.drain().await;
    }
}

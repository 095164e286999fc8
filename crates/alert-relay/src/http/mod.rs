//! The relay's HTTP face: `POST /webhook[/{route}]`, `GET /metrics`, `GET /healthz`.
//!
//! The accept loop, admission, head deadlines and drain are the `serving` crate's; this module
//! adds a whole-body deadline and a body size limit, and routes. A webhook is answered 2xx only after the store
//! committed it; 5xx only when the store failed; 4xx with a JSON error for everything the
//! sender got wrong.

mod auth;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serving::web_config::WebConfig;
use serving::{Body, Peer, Serving};

use crate::delivery::Engine;
use crate::escalation::{Escalated, Escalator};
use crate::live::Live;
use crate::metrics::{CONTENT_TYPE as METRICS_CONTENT_TYPE, Metrics, StatusLabel};
use crate::payload::{self, Status};
use crate::render::ack::Signer;
use crate::routing;
use crate::store::{Action, Transitioned};
use crate::store::{RoutedEvent, Store};

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
    /// Verifies acknowledgement links (the links themselves are made by the engine).
    pub signer: Signer,
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
            (&Method::GET, "/api/v1/rotations") => self.rotations(&req),
            (_, p) if p.starts_with("/api/v1/storms/") => self.storm_api(req).await,
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
            (&Method::GET | &Method::HEAD, "/") => plain(
                StatusCode::OK,
                concat!(
                    "alert-relay ",
                    env!("CARGO_PKG_VERSION"),
                    "\nPOST /webhook (Alertmanager webhook v4), GET /metrics, GET /healthz\n"
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

    async fn webhook(&self, req: Request<Incoming>, pinned: Option<String>) -> Response<Body> {
        let config = self.live.config();
        if !auth::authorized(&config.auth, req.headers()) {
            return self.unauthorized(&config.auth);
        }
        let limit = config.limits.max_body_bytes;
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            self.metrics.reject("too_large");
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                &format!("body over {limit} bytes"),
            );
        }
        let body = match tokio::time::timeout(
            config.limits.body_timeout,
            Limited::new(req.into_body(), limit).collect(),
        )
        .await
        {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                self.metrics.reject("too_large");
                return json_error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    &format!("body over {limit} bytes"),
                );
            }
            Ok(Err(e)) => {
                self.metrics.reject("body");
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "body",
                    &format!("cannot read the body: {e}"),
                );
            }
            Err(_) => {
                self.metrics.reject("timeout");
                return json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the body did not arrive in time",
                );
            }
        };
        let notification = match payload::parse(&body) {
            Ok(n) => n,
            Err(e) => {
                self.metrics.reject(e.reason());
                return json_error(StatusCode::BAD_REQUEST, e.reason(), &e.to_string());
            }
        };
        if notification.truncated_alerts > 0 {
            // Alertmanager's max_alerts cut the list: the alerts left out never reach us.
            tracing::warn!(
                group_key = %notification.group_key,
                truncated = notification.truncated_alerts,
                "Alertmanager truncated this notification (max_alerts); those alerts are not relayed"
            );
        }
        let mut routed = Vec::with_capacity(notification.events.len());
        let group_resolved = notification.status == Status::Resolved;
        let (heartbeats, events): (Vec<_>, Vec<_>) =
            notification.events.into_iter().partition(|e| {
                config
                    .deadman
                    .as_ref()
                    .is_some_and(|d| d.matches(&e.labels))
            });
        // Heartbeats are consumed: never stored as alerts, routed or delivered.
        for h in &heartbeats {
            self.deadman.heartbeat(h);
        }
        let now = self.live.clock.now();
        for event in events {
            let (targets, routes) = match (
                routing::destinations(&config, &event.labels, pinned.as_deref(), now),
                routing::routes(&config, &event.labels, pinned.as_deref()),
            ) {
                (Ok(d), Ok(r)) => (d, r),
                (Err(e), _) | (_, Err(e)) => {
                    self.metrics.reject("unknown_route");
                    return json_error(StatusCode::NOT_FOUND, "unknown_route", &e.to_string());
                }
            };
            routed.push(RoutedEvent {
                event,
                destinations: targets.destinations,
                routes,
                group_resolved,
                on_call: targets.on_call,
            });
        }
        let (firing, resolved) =
            routed
                .iter()
                .map(|r| &r.event)
                .chain(&heartbeats)
                .fold((0u64, 0u64), |(f, r), e| match e.status {
                    Status::Firing => (f + 1, r),
                    Status::Resolved => (f, r + 1),
                });
        let unrouted: Vec<String> = routed
            .iter()
            .filter(|r| r.destinations.is_empty() && r.event.status == Status::Firing)
            .map(|r| r.event.fingerprint.clone())
            .collect();
        match self.store.ingest(routed).await {
            Ok(outcome) => {
                let m = &self.metrics;
                m.webhooks
                    .get_or_create(&StatusLabel {
                        status: "accepted".into(),
                    })
                    .inc();
                m.alerts_received
                    .get_or_create(&StatusLabel {
                        status: "firing".into(),
                    })
                    .inc_by(firing);
                m.alerts_received
                    .get_or_create(&StatusLabel {
                        status: "resolved".into(),
                    })
                    .inc_by(resolved);
                m.alerts_deduplicated.inc_by(outcome.duplicates as u64);
                if !unrouted.is_empty() && outcome.accepted > 0 {
                    m.alerts_unrouted.inc_by(unrouted.len() as u64);
                    tracing::warn!(fingerprints = ?unrouted, "alerts matched no route; stored but sent nowhere");
                }
                // Storm control replaces some first-step deliveries by summaries; if it fails,
                // every delivery goes out as it would without it.
                let collapsed = match self.storms.opened(&outcome.opened).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!("storm control failed; sending every message: {e}");
                        Vec::new()
                    }
                };
                for (dest, id, created) in &outcome.deliveries {
                    if !collapsed.contains(id) {
                        self.engine.enqueue(dest, *id, *created);
                    }
                }
                if !outcome.opened.is_empty() || outcome.resolved > 0 {
                    self.escalator.wake();
                }
                let body = serde_json::json!({
                    "status": "ok",
                    "accepted": outcome.accepted,
                    "duplicates": outcome.duplicates,
                    "deliveries": outcome.deliveries.len(),
                    "heartbeats": heartbeats.len(),
                });
                json(StatusCode::OK, &body)
            }
            Err(e) => {
                // Alertmanager retries 5xx: exactly what a failed commit needs.
                self.metrics.storage_errors.inc();
                self.metrics
                    .webhooks
                    .get_or_create(&StatusLabel {
                        status: "error".into(),
                    })
                    .inc();
                tracing::error!("cannot store a webhook: {e}");
                json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "storage",
                    "the relay could not store this notification; retry",
                )
            }
        }
    }
}

fn peer_of(req: &Request<Incoming>) -> String {
    req.extensions()
        .get::<Peer>()
        .map_or_else(|| "unknown".to_owned(), |p| p.0.ip().to_string())
}

fn html(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page must not be framed (clickjacking the confirm button) nor cached.
    r.headers_mut()
        .insert("x-frame-options", HeaderValue::from_static("DENY"));
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

impl App {
    fn now_s(&self) -> i64 {
        self.live.clock.now_millis() / 1000
    }

    /// GET on an ack link: a confirm page whose button POSTs to the same URL. Nothing changes.
    async fn ack_page(&self, token: &str) -> Response<Body> {
        if token.starts_with('s') {
            let (status, title, body, form) = self.storms.page(&self.signer, token, None).await;
            return html(status_code(status), page(&title, &body, &form));
        }
        let id = match self.signer.verify(token, self.now_s()) {
            Ok(id) => id,
            Err(e) => {
                self.metrics.reject("ack_token");
                return html(
                    StatusCode::FORBIDDEN,
                    page("Cannot acknowledge", &escape(&e.to_string()), ""),
                );
            }
        };
        let incident = self.store.read(move |b| b.incident(id)).await;
        let deliveries = self.store.read(move |b| b.incident_deliveries(id)).await;
        let on_call = self.store.read(move |b| b.incident_on_call(id)).await;
        match incident {
            Ok(Some(i)) => {
                let mut body = format!(
                    "<p><b>{}</b>: {}</p><p>State: {}{}</p><p>Route {}, policy {}, group {}</p>",
                    escape(&i.alertname),
                    escape(&i.summary),
                    i.state.as_str(),
                    i.acked_by.as_ref().map_or(String::new(), |b| format!(
                        " (acknowledged by {})",
                        escape(b)
                    )),
                    escape(&i.route),
                    escape(&i.policy),
                    escape(&i.group_key),
                );
                if let Some(storm) = i.storm {
                    body.push_str(&format!(
                        "<p>Part of storm #{storm} (its summary's link acknowledges all of it).</p>"
                    ));
                }
                if let Ok(d) = deliveries {
                    body.push_str("<p>Sent to:</p><ul>");
                    for (dest, step, state, notice) in d {
                        let what =
                            notice.map_or_else(|| format!("step {}", step + 1), |n| escape(&n));
                        body.push_str(&format!(
                            "<li>{} — {} ({})</li>",
                            escape(&dest),
                            what,
                            state.as_str()
                        ));
                    }
                    body.push_str("</ul>");
                }
                if let Ok(paged) = on_call
                    && !paged.is_empty()
                {
                    body.push_str("<p>On call:</p><ul>");
                    for (dest, step, who) in paged {
                        body.push_str(&format!(
                            "<li>{} — {} (step {})</li>",
                            escape(&who),
                            escape(&dest),
                            step + 1
                        ));
                    }
                    body.push_str("</ul>");
                }
                let form = if i.state == crate::store::IncidentState::Open {
                    "<form method=\"post\"><button type=\"submit\">Acknowledge</button></form>"
                } else {
                    ""
                };
                html(
                    StatusCode::OK,
                    page(&format!("Incident #{id}"), &body, form),
                )
            }
            Ok(None) => html(
                StatusCode::NOT_FOUND,
                page("Not found", "No such incident.", ""),
            ),
            Err(e) => html(
                StatusCode::SERVICE_UNAVAILABLE,
                page("Storage error", &escape(&e.to_string()), ""),
            ),
        }
    }

    /// POST on an ack link: acknowledges.
    async fn ack_link(&self, token: &str, peer: &str) -> Response<Body> {
        if token.starts_with('s') {
            let (status, title, body, form) =
                self.storms.page(&self.signer, token, Some(peer)).await;
            return html(status_code(status), page(&title, &body, &form));
        }
        let id = match self.signer.verify(token, self.now_s()) {
            Ok(id) => id,
            Err(e) => {
                self.metrics.reject("ack_token");
                return html(
                    StatusCode::FORBIDDEN,
                    page("Cannot acknowledge", &escape(&e.to_string()), ""),
                );
            }
        };
        match self
            .escalator
            .transition(id, Action::Ack, format!("ack link from {peer}"))
            .await
        {
            Ok(Transitioned::Done { .. }) => html(
                StatusCode::OK,
                page(
                    &format!("Incident #{id}"),
                    "Acknowledged. Pending escalation steps are cancelled.",
                    "",
                ),
            ),
            Ok(Transitioned::Unchanged(s)) => html(
                StatusCode::OK,
                page(
                    &format!("Incident #{id}"),
                    &format!("Nothing to do: the incident is already {}.", s.as_str()),
                    "",
                ),
            ),
            Ok(Transitioned::NotFound) => html(
                StatusCode::NOT_FOUND,
                page("Not found", "No such incident.", ""),
            ),
            Err(e) => html(
                StatusCode::SERVICE_UNAVAILABLE,
                page("Storage error", &escape(&e.to_string()), ""),
            ),
        }
    }

    /// `GET /api/v1/incidents[/{id}]`, `POST /api/v1/incidents/{id}/{ack|unack|escalate|resolve}`,
    /// with the relay's auth. The optional JSON body `{"by": "alice"}` names who acted.
    async fn api(&self, req: Request<Incoming>) -> Response<Body> {
        let config = self.live.config();
        if !auth::authorized(&config.auth, req.headers()) {
            return self.unauthorized(&config.auth);
        }
        let peer = peer_of(&req);
        let method = req.method().clone();
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let rest: Vec<&str> = path["/api/v1/incidents".len()..]
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let id = match rest.first().map(|s| s.parse::<i64>()) {
            None => None,
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => {
                return json_error(StatusCode::NOT_FOUND, "not_found", "no such incident");
            }
        };
        match (&method, id, rest.get(1).copied()) {
            (&Method::GET, None, None) => match self.store.read(|b| b.incidents(200)).await {
                Ok(list) => json(StatusCode::OK, &serde_json::json!({ "incidents": list })),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string()),
            },
            (&Method::GET, Some(id), None) => {
                let i = self.store.read(move |b| b.incident(id)).await;
                let d = self.store.read(move |b| b.incident_deliveries(id)).await;
                let on_call = self
                    .store
                    .read(move |b| b.incident_on_call(id))
                    .await
                    .unwrap_or_default();
                match (i, d) {
                    (Ok(Some(i)), Ok(d)) => {
                        let on_call: Vec<serde_json::Value> = on_call
                            .into_iter()
                            .map(|(dest, step, who)| serde_json::json!({"destination": dest, "step": step, "person": who}))
                            .collect();
                        let d: Vec<serde_json::Value> = d
                            .into_iter()
                            .map(|(dest, step, state, notice)| serde_json::json!({"destination": dest, "step": step, "state": state.as_str(), "notice": notice}))
                            .collect();
                        json(
                            StatusCode::OK,
                            &serde_json::json!({ "incident": i, "deliveries": d, "on_call": on_call }),
                        )
                    }
                    (Ok(None), _) => {
                        json_error(StatusCode::NOT_FOUND, "not_found", "no such incident")
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string())
                    }
                }
            }
            (&Method::POST, Some(id), Some(verb)) => {
                let who = who_acts(req.into_body()).await;
                let by = format!("{who} via API from {peer}");
                let action = match verb {
                    "ack" => Action::Ack,
                    "unack" => Action::Unack,
                    "resolve" => Action::Resolve,
                    "escalate" => {
                        return match self.escalator.escalate(id).await {
                            Ok(Escalated::Sent { step, deliveries }) => json(
                                StatusCode::OK,
                                &serde_json::json!({"status": "ok", "step": step + 1, "deliveries": deliveries}),
                            ),
                            Ok(Escalated::NoFurtherStep) => json_error(
                                StatusCode::CONFLICT,
                                "no_further_step",
                                "the policy has no further step",
                            ),
                            Ok(Escalated::Resolved) => json_error(
                                StatusCode::CONFLICT,
                                "resolved",
                                "the incident is resolved",
                            ),
                            Ok(Escalated::NotFound) => {
                                json_error(StatusCode::NOT_FOUND, "not_found", "no such incident")
                            }
                            Err(e) => json_error(
                                StatusCode::INTERNAL_SERVER_ERROR,
                                "storage",
                                &e.to_string(),
                            ),
                        };
                    }
                    _ => {
                        return json_error(
                            StatusCode::NOT_FOUND,
                            "not_found",
                            "use ack, unack, escalate or resolve",
                        );
                    }
                };
                match self.escalator.transition(id, action, by).await {
                    Ok(Transitioned::Done { from, deliveries }) => json(
                        StatusCode::OK,
                        &serde_json::json!({"status": "ok", "from": from.as_str(), "notices": deliveries.len()}),
                    ),
                    Ok(Transitioned::Unchanged(s)) => json(
                        StatusCode::OK,
                        &serde_json::json!({"status": "unchanged", "state": s.as_str()}),
                    ),
                    Ok(Transitioned::NotFound) => {
                        json_error(StatusCode::NOT_FOUND, "not_found", "no such incident")
                    }
                    Err(e) => {
                        json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string())
                    }
                }
            }
            _ => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "see docs/alert-relay.md for the incident API",
            ),
        }
    }
}

/// The optional JSON body `{"by": "alice"}` of an API action (64 characters at most).
async fn who_acts(body: Incoming) -> String {
    let body = Limited::new(body, 4096)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| {
            v.get("by")
                .and_then(|b| b.as_str())
                .map(|s| s.chars().take(64).collect::<String>())
        })
        .unwrap_or_else(|| "API".to_owned())
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

impl App {
    /// `GET /api/v1/storms/{id}` (the storm and every incident of it) and
    /// `POST /api/v1/storms/{id}/ack` (acknowledges them all), with the relay's auth.
    async fn storm_api(&self, req: Request<Incoming>) -> Response<Body> {
        let auth = &self.live.config().auth;
        if !auth::authorized(auth, req.headers()) {
            return self.unauthorized(auth);
        }
        let peer = peer_of(&req);
        let path = req.uri().path().to_owned();
        // `/api/v1/storms/` itself (or with more slashes) names no storm: a 404, never a slice
        // past the end.
        let rest: Vec<&str> = path
            .strip_prefix("/api/v1/storms/")
            .unwrap_or_default()
            .trim_end_matches('/')
            .split('/')
            .collect();
        let Some(Ok(id)) = rest.first().map(|s| s.parse::<i64>()) else {
            return json_error(StatusCode::NOT_FOUND, "not_found", "no such storm");
        };
        let method = req.method().clone();
        let (status, value) = match (&method, rest.get(1).copied()) {
            (&Method::GET, None) => self.storms.api_view(id).await,
            (&Method::POST, Some("ack")) => {
                let who = who_acts(req.into_body()).await;
                self.storms
                    .api_ack(id, format!("{who} via API from {peer}"))
                    .await
            }
            _ => (
                405,
                serde_json::json!({"status": "error", "error": "method", "message": "GET /api/v1/storms/{id} or POST …/ack"}),
            ),
        };
        json(status_code(status), &value)
    }
}

impl App {
    /// `GET /api/v1/rotations`, with the relay's auth: who is on call now in every rotation
    /// (by the relay's wall clock) and the next hand-overs.
    fn rotations(&self, req: &Request<Incoming>) -> Response<Body> {
        let config = self.live.config();
        if !auth::authorized(&config.auth, req.headers()) {
            return self.unauthorized(&config.auth);
        }
        let now = self.live.clock.now();
        json(
            StatusCode::OK,
            &crate::rotation::to_json(config.rotations.values(), now),
        )
    }

    /// An SMS reply through Twilio's inbound webhook (see `inbound`).
    async fn twilio_inbound(&self, req: Request<Incoming>, channel: &str) -> Response<Body> {
        let config = self.live.config();
        let path = req
            .uri()
            .path_and_query()
            .map_or(req.uri().path(), |p| p.as_str())
            .to_owned();
        let signature = req
            .headers()
            .get("x-twilio-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        // Read before the channel is looked at: every name costs the same.
        let body = match tokio::time::timeout(
            config.limits.body_timeout,
            Limited::new(req.into_body(), 64 * 1024).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            _ => return plain(StatusCode::BAD_REQUEST, "cannot read the body\n"),
        };
        let params = crate::inbound::parse_form(&body);
        let sms = match crate::inbound::authenticate(&config, channel, &path, &params, &signature) {
            Ok(sms) => sms,
            Err(why) => {
                self.metrics.reject(why.reason());
                tracing::warn!(channel, "inbound SMS request refused: {why}");
                return plain(StatusCode::FORBIDDEN, crate::inbound::REFUSED);
            }
        };
        let twiml = |reply: Option<&str>| {
            let mut r = Response::new(Body::from(crate::inbound::twiml(reply)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/xml; charset=utf-8"),
            );
            r
        };
        // Remembered before acting: a replay is never acted on, even one that races the first.
        match self.store.first_time(sms.sid.clone()).await {
            Ok(true) => {}
            Ok(false) => {
                self.metrics.reject("twilio_replay");
                tracing::warn!(channel, "inbound SMS with a MessageSid seen before ignored");
                return twiml(None);
            }
            Err(e) => {
                tracing::error!("cannot store an inbound SMS id: {e}");
                return plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n");
            }
        }
        if !sms.from_paged_number {
            // No replies to unknown senders (cost, and no oracle for incident ids).
            tracing::warn!(
                channel,
                "inbound SMS from a number this channel does not page; ignored"
            );
            return twiml(None);
        }
        let (store, escalator, storms) = (&self.store, &self.escalator, &self.storms);
        match crate::inbound::answer(store, escalator, storms, channel, &sms).await {
            Ok(reply) => twiml(Some(&reply)),
            Err(e) => {
                tracing::error!("cannot store an SMS acknowledgement: {e}");
                // Twilio retries nothing; a 5xx at least shows in its debugger.
                plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n")
            }
        }
    }
}

fn page(title: &str, body: &str, form: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\"><title>{t}</title></head><body><h1>{t}</h1>{body}{form}</body></html>",
        t = escape(title)
    )
}

fn escape(s: &str) -> String {
    crate::render::text::escape_html(s)
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
/// callbacks carry their own proof and must stay reachable from phones and providers.
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
        || path.starts_with("/inbound/"))
}

impl serving::Handler for Listener {
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let web = self.web.current();
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
            signer: Signer::new(vec![1; 32], None),
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

//! The JSON API, with the relay's `auth:`: incidents (`/api/v1/incidents…`: list, show, ack,
//! unack, escalate, resolve), storms (`/api/v1/storms/{id}[/ack]`) and rotations
//! (`/api/v1/rotations`, each rotation's calendar `/api/v1/rotations/NAME.ics`).

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serving::Body;

use super::{App, json, json_error, peer_of, status_code};
use crate::escalation::Escalated;
use crate::store::{Action, Transitioned};

impl App {
    /// `GET /api/v1/incidents[/{id}]`, `POST /api/v1/incidents/{id}/{ack|unack|escalate|resolve}`,
    /// with the relay's auth. The optional JSON body `{"by": "alice"}` names who acted.
    pub(super) async fn api(&self, req: Request<Incoming>) -> Response<Body> {
        if let Err(refusal) = self.authenticate(req.headers()) {
            return *refusal;
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
            (&Method::GET, None, None) => self.list_incidents().await,
            (&Method::GET, Some(id), None) => self.show_incident(id).await,
            (&Method::POST, Some(id), Some(verb)) => {
                let who = who_acts(req.into_body()).await;
                self.act_on_incident(id, verb, format!("{who} via API from {peer}"))
                    .await
            }
            _ => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "see docs/alert-relay.md for the incident API",
            ),
        }
    }

    /// `GET /api/v1/incidents`: the latest 200 incidents.
    async fn list_incidents(&self) -> Response<Body> {
        match self.store.read(|b| b.incidents(200)).await {
            Ok(list) => json(StatusCode::OK, &serde_json::json!({ "incidents": list })),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string()),
        }
    }

    /// `GET /api/v1/incidents/{id}`: the incident, its deliveries and who was paged.
    async fn show_incident(&self, id: i64) -> Response<Body> {
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
                    .map(|(dest, step, state, notice, detail)| serde_json::json!({"destination": dest, "step": step, "state": state.as_str(), "notice": notice, "detail": detail}))
                    .collect();
                json(
                    StatusCode::OK,
                    &serde_json::json!({ "incident": i, "deliveries": d, "on_call": on_call }),
                )
            }
            (Ok(None), _) => json_error(StatusCode::NOT_FOUND, "not_found", "no such incident"),
            (Err(e), _) | (_, Err(e)) => {
                json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string())
            }
        }
    }

    /// `POST /api/v1/incidents/{id}/{verb}`, `by` naming who acted (the body was read first,
    /// whatever the verb).
    async fn act_on_incident(&self, id: i64, verb: &str, by: String) -> Response<Body> {
        let action = match verb {
            "ack" => Action::Ack,
            "unack" => Action::Unack,
            "resolve" => Action::Resolve,
            "escalate" => return self.escalate_incident(id, &by).await,
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
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string()),
        }
    }

    /// `POST /api/v1/incidents/{id}/escalate`: sends the policy's next step now.
    async fn escalate_incident(&self, id: i64, by: &str) -> Response<Body> {
        match self.escalator.escalate(id, by).await {
            Ok(Escalated::Sent { step, deliveries }) => {
                tracing::info!(
                    incident = id,
                    action = "escalated",
                    by,
                    step = step + 1,
                    deliveries,
                    "incident escalated by hand"
                );
                json(
                    StatusCode::OK,
                    &serde_json::json!({"status": "ok", "step": step + 1, "deliveries": deliveries}),
                )
            }
            Ok(Escalated::NoFurtherStep) => json_error(
                StatusCode::CONFLICT,
                "no_further_step",
                "the policy has no further step",
            ),
            Ok(Escalated::Resolved) => {
                json_error(StatusCode::CONFLICT, "resolved", "the incident is resolved")
            }
            Ok(Escalated::NotFound) => {
                json_error(StatusCode::NOT_FOUND, "not_found", "no such incident")
            }
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string()),
        }
    }

    /// `GET /api/v1/storms/{id}` (the storm and every incident of it) and
    /// `POST /api/v1/storms/{id}/ack` (acknowledges them all), with the relay's auth.
    pub(super) async fn storm_api(&self, req: Request<Incoming>) -> Response<Body> {
        if let Err(refusal) = self.authenticate(req.headers()) {
            return *refusal;
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

    /// `GET /api/v1/rotations`, with the relay's auth: who is on call now in every rotation
    /// (by the relay's wall clock) and the next hand-overs.
    pub(super) fn rotations(&self, req: &Request<Incoming>) -> Response<Body> {
        let config = match self.authenticate(req.headers()) {
            Ok(config) => config,
            Err(refusal) => return *refusal,
        };
        let now = self.live.clock.now();
        json(
            StatusCode::OK,
            &crate::rotation::to_json(config.rotations.values(), now),
        )
    }

    /// `GET /api/v1/rotations/NAME.ics`, with the relay's auth: who is on call in the shifts
    /// of the next two weeks, as an iCalendar feed.
    pub(super) fn rotation_calendar(&self, req: &Request<Incoming>, file: &str) -> Response<Body> {
        let config = match self.authenticate(req.headers()) {
            Ok(config) => config,
            Err(refusal) => return *refusal,
        };
        let Some(rotation) = file
            .strip_suffix(".ics")
            .and_then(|name| config.rotations.get(name))
        else {
            return json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such rotation (GET /api/v1/rotations/NAME.ics)",
            );
        };
        let mut r = Response::new(Body::from(self.rotation_feed(rotation)));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/calendar; charset=utf-8"),
        );
        r
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

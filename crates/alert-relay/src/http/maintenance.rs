//! Maintenance windows in the JSON API, with the relay's `auth:`: `GET /api/v1/maintenance`
//! (the list), `POST /api/v1/maintenance` (a new window: the form's fields and `by`) and
//! `POST /api/v1/maintenance/{id}/end`. A form the relay refuses is a 400 saying why.

use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serving::Body;

use super::{App, json, json_error, peer_of};
use crate::model::maintenance::{Window, WindowForm};

/// The largest body a new window may have.
const BODY_MAX: usize = 16 * 1024;
/// Who acts, when the body does not say.
const ANONYMOUS: &str = "API";

/// `POST /api/v1/maintenance`'s body: the form and who creates the window.
#[derive(Debug, serde::Deserialize)]
struct Created {
    #[serde(flatten)]
    form: WindowForm,
    #[serde(default)]
    by: String,
}

impl App {
    pub(super) async fn maintenance_api(&self, req: Request<Incoming>) -> Response<Body> {
        if let Err(refusal) = self.authenticate(req.headers()) {
            return *refusal;
        }
        let peer = peer_of(&req);
        let method = req.method().clone();
        let path = req.uri().path().trim_end_matches('/').to_owned();
        let rest: Vec<&str> = (path.strip_prefix("/api/v1/maintenance"))
            .unwrap_or_default()
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match (&method, rest.as_slice()) {
            (&Method::GET, []) => self.api_list_windows().await,
            (&Method::POST, []) => match read_body(req.into_body()).await {
                Ok(body) => self.api_create_window(&body, &peer).await,
                Err(refusal) => *refusal,
            },
            (&Method::POST, [id, "end"]) => {
                let Ok(id) = id.parse::<i64>() else {
                    return json_error(StatusCode::NOT_FOUND, "not_found", "no such window");
                };
                let by = match read_body(req.into_body()).await {
                    Ok(body) => who(&body),
                    Err(refusal) => return *refusal,
                };
                self.api_end_window(id, by, &peer).await
            }
            _ => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method",
                "GET or POST /api/v1/maintenance, POST /api/v1/maintenance/{id}/end",
            ),
        }
    }

    /// `GET /api/v1/maintenance`: read again from the store (another instance may have
    /// changed them since the last refresh).
    async fn api_list_windows(&self) -> Response<Body> {
        if let Err(e) = self.maintenance.refresh().await {
            return json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string());
        }
        let now = self.live.clock.now_millis();
        let windows: Vec<serde_json::Value> = (self.maintenance.windows().iter())
            .map(|w| window_json(w, now))
            .collect();
        json(StatusCode::OK, &serde_json::json!({ "windows": windows }))
    }

    async fn api_create_window(&self, body: &[u8], peer: &str) -> Response<Body> {
        let created: Created = match serde_json::from_slice(body) {
            Ok(c) => c,
            Err(e) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "body",
                    &format!(
                        "expected a JSON object with matchers, start, end or duration, weekly, reason and by: {e}"
                    ),
                );
            }
        };
        let by = match created.by.trim() {
            "" => ANONYMOUS,
            by => by,
        };
        let now = self.live.clock.now_millis();
        let new = match created.form.validate(by, now) {
            Ok(new) => new,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, "invalid", &e.to_string()),
        };
        match self.maintenance.create(new).await {
            Ok(w) => {
                tracing::info!(window = w.id, %peer, "maintenance window created via API");
                // Incidents escalating now may match it.
                self.escalator.wake();
                json(
                    StatusCode::CREATED,
                    &serde_json::json!({"status": "ok", "window": window_json(&w, now)}),
                )
            }
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string()),
        }
    }

    async fn api_end_window(&self, id: i64, by: String, peer: &str) -> Response<Body> {
        match self.maintenance.end(id, by).await {
            Ok(true) => {
                tracing::info!(window = id, %peer, "maintenance window ended via API");
                // What it held pages now.
                self.escalator.wake();
                json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
            }
            Ok(false) => json_error(
                StatusCode::NOT_FOUND,
                "not_found",
                &format!("no maintenance window {id} is in force or to come"),
            ),
            Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, "storage", &e.to_string()),
        }
    }
}

/// A window as the API shows it: as stored, whether it is in force, and its current or next
/// occurrence (`null` once it is over).
fn window_json(w: &Window, now_ms: i64) -> serde_json::Value {
    let mut v = serde_json::to_value(w).unwrap_or_default();
    let rfc3339 = |ms: i64| crate::time::format_rfc3339(ms.saturating_mul(1_000_000));
    if let Some(o) = v.as_object_mut() {
        o.insert("active".into(), w.active_at(now_ms).into());
        o.insert("starts_at".into(), rfc3339(w.starts_ms).into());
        o.insert("ends_at".into(), rfc3339(w.ends_ms).into());
        let next = w.current_or_next(now_ms).map(|(start, end)| {
            serde_json::json!({"start_ms": start, "end_ms": end, "start": rfc3339(start), "end": rfc3339(end)})
        });
        o.insert("occurrence".into(), next.unwrap_or_default());
    }
    v
}

/// The body, within [`BODY_MAX`].
async fn read_body(body: Incoming) -> Result<bytes::Bytes, Box<Response<Body>>> {
    match Limited::new(body, BODY_MAX).collect().await {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) => Err(Box::new(json_error(
            StatusCode::BAD_REQUEST,
            "body",
            &format!("cannot read the body (at most {BODY_MAX} bytes): {e}"),
        ))),
    }
}

/// `by` of an optional JSON body (`{"by": "alice"}`), 64 characters at most.
fn who(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("by")
                .and_then(|b| b.as_str())
                .map(|s| s.trim().chars().take(64).collect::<String>())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| ANONYMOUS.to_owned())
}

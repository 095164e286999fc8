//! The acknowledgement links' pages: `GET /ack/{token}` shows a confirm page whose button POSTs
//! to the same URL; `POST /ack/{token}` acknowledges. The signed token is the proof: these
//! routes take no other authentication.

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serving::Body;

use super::{App, status_code};
use crate::store::{Action, Transitioned};

impl App {
    /// The incident a link's token names, or the answer already made: a storm's page (a
    /// storm token; `peer` acknowledges it, as on a POST) or a refusal of a bad token.
    async fn incident_of(&self, token: &str, peer: Option<&str>) -> Result<i64, Response<Body>> {
        if token.starts_with('s') {
            let (status, title, body, form) = self.storms.page(&self.signer, token, peer).await;
            return Err(html(status_code(status), page(&title, &body, &form)));
        }
        self.signer.verify(token, self.now_s()).map_err(|e| {
            self.metrics.reject("ack_token");
            html(
                StatusCode::FORBIDDEN,
                page("Cannot acknowledge", &escape(&e.to_string()), ""),
            )
        })
    }

    fn now_s(&self) -> i64 {
        self.live.clock.now_millis() / 1000
    }

    /// GET on an ack link: a confirm page whose button POSTs to the same URL. Nothing changes.
    pub(super) async fn ack_page(&self, token: &str) -> Response<Body> {
        let id = match self.incident_of(token, None).await {
            Ok(id) => id,
            Err(answer) => return answer,
        };
        let incident = self.store.read(move |b| b.incident(id)).await;
        let deliveries = self.store.read(move |b| b.incident_deliveries(id)).await;
        let on_call = self.store.read(move |b| b.incident_on_call(id)).await;
        match incident {
            Ok(Some(i)) => {
                let mut body = format!(
                    "<p><b>{}</b>: {}</p><p>State: {}{}</p><p>Group: {}</p><p>Routed by {} to policy {}</p>",
                    escape(&i.alertname),
                    escape(&i.summary),
                    state_words(i.state),
                    i.acked_by.as_ref().map_or(String::new(), |b| format!(
                        " (acknowledged by {})",
                        escape(b)
                    )),
                    escape(&crate::payload::readable_group(&i.group_key)),
                    escape(&crate::routing::describe_route(
                        &self.live.config(),
                        &i.route
                    )),
                    escape(&i.policy),
                );
                if let Some(storm) = i.storm {
                    body.push_str(&format!(
                        "<p>Part of storm #{storm} (its summary's link acknowledges all of it).</p>"
                    ));
                }
                if let Ok(d) = deliveries {
                    body.push_str("<p>Sent to:</p><ul>");
                    // Not the detail: provider errors are for the relay's API, not a link's holder.
                    for (dest, step, state, notice, _) in d {
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
                body.push_str(&format!(
                    "<p><a href=\"/ui/incidents/{id}\">Open incident #{id} in the console</a> (sign-in required)</p>"
                ));
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
    pub(super) async fn ack_link(&self, token: &str, peer: &str) -> Response<Body> {
        let id = match self.incident_of(token, Some(peer)).await {
            Ok(id) => id,
            Err(answer) => return answer,
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
}

/// An incident state as the page says it.
fn state_words(state: crate::store::IncidentState) -> &'static str {
    match state {
        crate::store::IncidentState::Open => "open",
        crate::store::IncidentState::Acked => "acknowledged",
        crate::store::IncidentState::Resolved => "resolved",
    }
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

fn page(title: &str, body: &str, form: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\"><title>{t}</title></head><body><h1>{t}</h1>{body}{form}</body></html>",
        t = escape(title)
    )
}

fn escape(s: &str) -> String {
    crate::render::text::escape_html(s)
}

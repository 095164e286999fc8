//! What the console changes on a POST. Every form carries the session's CSRF token; every
//! change is refused to a viewer and recorded with the signed-in user's name.

use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serving::Body;

use super::session::{self, SignedIn};
use super::{field, message, no_randomness, read_form, see_other, storage_error};
use crate::escalation::Escalated;
use crate::http::{App, peer_of};
use crate::store::{
    Action, ConsoleSession, ConsoleWrite, ConsoleWritten, Transitioned, Write, Written,
};

impl App {
    /// A POST under `/ui/` by a signed-in user: its CSRF token and role checked first.
    pub(super) async fn act(
        &self,
        user: SignedIn,
        req: Request<Incoming>,
        rest: &str,
    ) -> Response<Body> {
        let secure = self.secure_cookies(&req);
        let Some(form) = read_form(req.into_body()).await else {
            return message(
                StatusCode::PAYLOAD_TOO_LARGE,
                Some(&user),
                "Form refused",
                "The form was too large or too slow to arrive.",
                None,
            );
        };
        if !user.csrf_matches(field(&form, "csrf")) {
            self.metrics.reject("console_csrf");
            return message(
                StatusCode::FORBIDDEN,
                Some(&user),
                "Form refused",
                "This form is out of date or did not come from this console (missing or wrong \
                 CSRF token). Reload the page and try again.",
                Some(("/ui/", "Incidents")),
            );
        }
        if rest == "logout" {
            return self.logout(&user, secure).await;
        }
        if !user.can_act() {
            return message(
                StatusCode::FORBIDDEN,
                Some(&user),
                "Not allowed",
                "Your role (viewer) can see the console but not change anything; ask a responder.",
                Some(("/ui/", "Incidents")),
            );
        }
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            ["incidents", id, verb] => match id.parse() {
                Ok(id) => self.incident_action(&user, id, verb).await,
                Err(_) => not_found(&user),
            },
            ["deliveries", id, "retry"] => match id.parse() {
                Ok(id) => self.retry_dead(&user, id).await,
                Err(_) => not_found(&user),
            },
            ["maintenance"] => self.create_window(&user, &form).await,
            ["maintenance", id, "end"] => match id.parse() {
                Ok(id) => self.end_window(&user, id).await,
                Err(_) => not_found(&user),
            },
            _ => not_found(&user),
        }
    }

    async fn incident_action(&self, user: &SignedIn, id: i64, verb: &str) -> Response<Body> {
        let by = format!("{} (console)", user.name);
        let action = match verb {
            "ack" => Action::Ack,
            "unack" => Action::Unack,
            "resolve" => Action::Resolve,
            "escalate" => return self.escalate_from_console(user, id, by).await,
            _ => return not_found(user),
        };
        let back = |done: &str| see_other(&format!("/ui/incidents/{id}?done={done}"));
        match self.escalator.transition(id, action, by).await {
            Ok(Transitioned::Done { .. }) => back(verb),
            Ok(Transitioned::Unchanged(_)) => back("unchanged"),
            Ok(Transitioned::NotFound) => not_found(user),
            Err(e) => storage_error(&e),
        }
    }

    async fn escalate_from_console(&self, user: &SignedIn, id: i64, by: String) -> Response<Body> {
        let refuse = |text: &str| {
            message(
                StatusCode::CONFLICT,
                Some(user),
                "Cannot escalate",
                text,
                Some((&format!("/ui/incidents/{id}"), "Back to the incident")),
            )
        };
        match self.escalator.escalate(id, &by).await {
            Ok(Escalated::Sent { .. }) => see_other(&format!("/ui/incidents/{id}?done=escalate")),
            Ok(Escalated::NoFurtherStep) => refuse("The policy has no further step."),
            Ok(Escalated::Resolved) => refuse("The incident is resolved."),
            Ok(Escalated::NotFound) => not_found(user),
            Err(e) => storage_error(&e),
        }
    }

    async fn retry_dead(&self, user: &SignedIn, id: i64) -> Response<Body> {
        match self
            .store
            .write(Write::Console(ConsoleWrite::RetryDead { id }))
            .await
        {
            Ok(Written::Console(ConsoleWritten::Retried(Some((dest, id, created))))) => {
                tracing::info!(delivery = id, destination = %dest, by = %user.name, "dead letter queued again");
                self.engine.enqueue(&dest, id, created);
                see_other("/ui/deliveries?done=retry")
            }
            Ok(_) => message(
                StatusCode::CONFLICT,
                Some(user),
                "Nothing to retry",
                "That delivery is no longer a dead letter (retried already, or pruned).",
                Some(("/ui/deliveries", "Deliveries")),
            ),
            Err(e) => storage_error(&e),
        }
    }

    async fn create_window(&self, user: &SignedIn, form: &[(String, String)]) -> Response<Body> {
        let window = crate::model::maintenance::WindowForm {
            matchers: field(form, "matchers").to_owned(),
            start: utc_unless_offset(field(form, "start")),
            end: utc_unless_offset(field(form, "end")),
            duration: field(form, "duration").to_owned(),
            weekly: !field(form, "weekly").is_empty(),
            reason: field(form, "reason").to_owned(),
        };
        let now = self.live.clock.now_millis();
        let new = match window.validate(&format!("{} (console)", user.name), now) {
            Ok(new) => new,
            Err(e) => {
                let refill = serde_json::json!({
                    "matchers": window.matchers, "start": field(form, "start"),
                    "end": field(form, "end"), "duration": window.duration,
                    "weekly": window.weekly, "reason": window.reason,
                });
                return self.maintenance_page(
                    user,
                    Some(("error", e.to_string())),
                    StatusCode::BAD_REQUEST,
                    Some(refill),
                );
            }
        };
        match self.maintenance.create(new).await {
            Ok(_) => see_other("/ui/maintenance?done=window"),
            Err(e) => storage_error(&e),
        }
    }

    async fn end_window(&self, user: &SignedIn, id: i64) -> Response<Body> {
        match self
            .maintenance
            .end(id, format!("{} (console)", user.name))
            .await
        {
            Ok(true) => see_other("/ui/maintenance?done=ended"),
            Ok(false) => not_found(user),
            Err(e) => storage_error(&e),
        }
    }

    async fn logout(&self, user: &SignedIn, secure: bool) -> Response<Body> {
        let close = ConsoleWrite::CloseSession {
            token_hash: user.token_hash.clone(),
        };
        if let Err(e) = self.store.write(Write::Console(close)).await {
            return storage_error(&e);
        }
        tracing::info!(user = %user.name, "console sign-out");
        let mut r = see_other("/ui/login?done=signed-out");
        set_cookie(
            &mut r,
            &session::set_cookie(session::SESSION_COOKIE, "", "/ui/", Duration::ZERO, secure),
        );
        r
    }

    /// `POST /ui/login`: the form's CSRF cookie, the sign-in limit, then the password.
    pub(super) async fn login(&self, req: Request<Incoming>) -> Response<Body> {
        let peer = peer_of(&req);
        let secure = self.secure_cookies(&req);
        let cookie = session::cookie(req.headers(), session::LOGIN_COOKIE).map(str::to_owned);
        let (parts, body) = req.into_parts();
        let page_req = Request::from_parts(parts, ());
        let Some(form) = read_form(body).await else {
            return self.login_refused(
                &page_req,
                StatusCode::PAYLOAD_TOO_LARGE,
                "The form was too large or too slow.",
                "",
            );
        };
        let name = field(&form, "user").chars().take(64).collect::<String>();
        let token = field(&form, "csrf");
        if token.is_empty() || cookie.as_deref() != Some(token) {
            self.metrics.reject("console_csrf");
            return self.login_refused(
                &page_req,
                StatusCode::FORBIDDEN,
                "The sign-in form was out of date; please try again.",
                &name,
            );
        }
        let keys = [format!("addr:{peer}"), format!("user:{name}")];
        if let Some(wait) = self.login_limiter.blocked(&keys, Instant::now()) {
            self.metrics.reject("console_login_limit");
            let text = format!(
                "Too many failed sign-ins. Try again in {}.",
                crate::time::humanize(wait.max(Duration::from_secs(1)))
            );
            return self.login_refused(&page_req, StatusCode::TOO_MANY_REQUESTS, &text, &name);
        }
        let config = self.live.config();
        let user = config.console.users.get(&name);
        if !session::verify(user, field(&form, "password").to_owned()).await {
            self.login_limiter.failed(&keys, Instant::now());
            self.metrics.reject("console_login");
            tracing::warn!(peer, user = %name, "console sign-in refused");
            return self.login_refused(
                &page_req,
                StatusCode::UNAUTHORIZED,
                "Wrong user name or password.",
                &name,
            );
        }
        self.login_limiter.succeeded(&keys[1]);
        let next = session::safe_next(field(&form, "next")).to_owned();
        self.open_session(&name, &next, secure).await
    }

    async fn open_session(&self, name: &str, next: &str, secure: bool) -> Response<Body> {
        let (Some(token), Some(csrf)) = (session::random_token(), session::random_token()) else {
            return no_randomness();
        };
        let lifetime = self.live.config().console.session_lifetime;
        let now = self.live.clock.now_millis();
        let session = ConsoleSession {
            user: name.to_owned(),
            csrf,
            created_ms: now,
            expires_ms: now.saturating_add(i64::try_from(lifetime.as_millis()).unwrap_or(i64::MAX)),
        };
        let open = ConsoleWrite::OpenSession {
            token_hash: session::token_hash(&token),
            session,
        };
        if let Err(e) = self.store.write(Write::Console(open)).await {
            return storage_error(&e);
        }
        tracing::info!(user = name, "console sign-in");
        let mut r = see_other(next);
        set_cookie(
            &mut r,
            &session::set_cookie(session::SESSION_COOKIE, &token, "/ui/", lifetime, secure),
        );
        set_cookie(
            &mut r,
            &session::set_cookie(
                session::LOGIN_COOKIE,
                "",
                "/ui/login",
                Duration::ZERO,
                secure,
            ),
        );
        r
    }

    fn login_refused(
        &self,
        req: &Request<()>,
        status: StatusCode,
        text: &str,
        name: &str,
    ) -> Response<Body> {
        self.login_page(req, Some((status, text)), name)
    }
}

fn set_cookie(r: &mut Response<Body>, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn not_found(user: &SignedIn) -> Response<Body> {
    message(
        StatusCode::NOT_FOUND,
        Some(user),
        "Not found",
        "There is no such incident, delivery or window.",
        Some(("/ui/", "Incidents")),
    )
}

/// A `datetime-local` value sent without the script (no offset) is taken as UTC, as the form
/// says; anything else goes to the form's validation as written.
fn utc_unless_offset(value: &str) -> String {
    let v = value.trim();
    let bare = v.len() >= 16
        && v.as_bytes().get(10) == Some(&b'T')
        && !v[10..].contains(['Z', 'z', '+'])
        && !v[11..].contains('-');
    match (bare, v.len()) {
        (true, 16) => format!("{v}:00Z"),
        (true, _) => format!("{v}Z"),
        _ => v.to_owned(),
    }
}

//! The on-call console at `/ui/`: server-rendered pages (`crate::render::console`) for the
//! person on call, signed in as a user of `console.users`.
//!
//! - `session`: passwords, session cookies, CSRF tokens, the sign-in limit.
//! - `pages`: what a GET shows (incidents, an incident's timeline, on call, maintenance,
//!   deliveries, and the regions the pages refresh by themselves).
//! - `actions`: what a POST changes (sign-in and -out, an incident's state, maintenance
//!   windows, a dead letter's retry), each checked for the session, its CSRF token and the
//!   user's role.

mod actions;
mod pages;
pub(super) mod session;

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use serving::Body;

use self::session::SignedIn;
use super::App;
use crate::render::console as view;

/// Largest form the console accepts.
const MAX_FORM_BYTES: usize = 16 * 1024;
/// How long a form body may take to arrive.
const FORM_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether the request reached the relay over TLS (set by the listener): cookies are then
/// `Secure`.
#[derive(Debug, Clone, Copy)]
pub(super) struct OverTls(pub(super) bool);

/// A page's notice line.
#[derive(Debug, Serialize)]
struct Notice {
    kind: &'static str,
    text: String,
}

impl App {
    /// Every request under `/ui/`.
    pub(super) async fn console(&self, req: Request<Incoming>) -> Response<Body> {
        let path = req.uri().path().to_owned();
        let rest = path.strip_prefix("/ui/").unwrap_or_default().to_owned();
        if let Some(name) = rest.strip_prefix("static/") {
            return static_asset(name);
        }
        match (req.method().clone(), rest.as_str()) {
            (Method::GET | Method::HEAD, "login") => self.login_page(&req, None, ""),
            (Method::POST, "login") => self.login(req).await,
            (Method::GET | Method::HEAD, p) if p.starts_with("rotations/") => {
                self.personal_calendar(&req, &p["rotations/".len()..])
            }
            (Method::GET | Method::HEAD, _) => match self.signed_in(req.headers()).await {
                Ok(Some(user)) => self.page(&user, &req, &rest).await,
                Ok(None) => unauthenticated(&req),
                Err(answer) => *answer,
            },
            (Method::POST, _) => match self.signed_in(req.headers()).await {
                Ok(Some(user)) => self.act(user, req, &rest).await,
                Ok(None) => message(
                    StatusCode::UNAUTHORIZED,
                    None,
                    "Session expired",
                    "Your session has expired or you signed out. Sign in again, then repeat what you did.",
                    Some(("/ui/login", "Sign in")),
                ),
                Err(answer) => *answer,
            },
            _ => {
                let mut r = message(
                    StatusCode::METHOD_NOT_ALLOWED,
                    None,
                    "Not allowed",
                    "The console takes GET and POST only.",
                    None,
                );
                r.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
                r
            }
        }
    }

    /// The session the request's cookie names, if it is live and its user still configured
    /// (removing a user from the configuration ends their sessions). `Err`: the store failed.
    async fn signed_in(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<SignedIn>, Box<Response<Body>>> {
        let Some(token) = session::cookie(headers, session::SESSION_COOKIE) else {
            return Ok(None);
        };
        let hash = session::token_hash(token);
        let now = self.live.clock.now_millis();
        let lookup = hash.clone();
        let found = self
            .store
            .read(move |b| b.console_session(&lookup, now))
            .await
            .map_err(|e| Box::new(storage_error(&e)))?;
        let config = self.live.config();
        Ok(found.and_then(|s| {
            let user = config.console.users.get(&s.user)?;
            Some(SignedIn {
                name: user.name.clone(),
                role: user.role,
                csrf: s.csrf,
                token_hash: hash,
            })
        }))
    }
}

/// A page's common context: who is signed in, the CSRF token for its forms, its title and
/// section, and the notice to show, merged with the page's own values.
fn context(
    user: Option<&SignedIn>,
    title: &str,
    section: &str,
    notice: Option<(&'static str, String)>,
    page: serde_json::Value,
) -> serde_json::Value {
    let mut ctx = serde_json::json!({
        "title": title,
        "section": section,
        "user": user.map(|u| serde_json::json!({"name": u.name, "role": u.role.as_str()})),
        "csrf": user.map(|u| u.csrf.clone()),
        "can_act": user.is_some_and(SignedIn::can_act),
        "notice": notice.map(|(kind, text)| Notice { kind, text }),
    });
    if let (Some(ctx), serde_json::Value::Object(page)) = (ctx.as_object_mut(), page) {
        ctx.extend(page);
    }
    ctx
}

/// A rendered page with the console's headers: no caching (pages show live state and carry
/// CSRF tokens), a strict content security policy (scripts and styles only from the relay,
/// no framing), no referrer leaving the relay.
fn html_page(status: StatusCode, template: &str, ctx: &serde_json::Value) -> Response<Body> {
    match view::render(template, ctx) {
        Ok(html) => with_headers(status, "text/html; charset=utf-8", html),
        Err(e) => {
            tracing::error!("console page {template}: {e:#}");
            with_headers(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain; charset=utf-8",
                "the page could not be rendered; see the relay's log\n".to_owned(),
            )
        }
    }
}

fn with_headers(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    r
}

/// A page with a title and one paragraph (refusals, errors), with a link onwards.
fn message(
    status: StatusCode,
    user: Option<&SignedIn>,
    title: &str,
    text: &str,
    link: Option<(&str, &str)>,
) -> Response<Body> {
    let link = link.map(|(href, text)| serde_json::json!({"href": href, "text": text}));
    let ctx = context(
        user,
        title,
        "",
        None,
        serde_json::json!({"text": text, "link": link}),
    );
    html_page(status, "message.html", &ctx)
}

/// Sign-in needs random tokens; without them it refuses rather than make guessable ones.
fn no_randomness() -> Response<Body> {
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "Cannot sign in",
        "The system's random number generator failed.",
        None,
    )
}

fn storage_error(e: &crate::store::StoreError) -> Response<Body> {
    tracing::error!("console: storage: {e}");
    message(
        StatusCode::SERVICE_UNAVAILABLE,
        None,
        "Storage error",
        "The relay cannot read its database right now; try again in a moment.",
        None,
    )
}

/// Not signed in: a page goes to the sign-in form (and back afterwards); a region's refresh
/// gets a bare 401 that the script turns into a notice.
fn unauthenticated(req: &Request<Incoming>) -> Response<Body> {
    if req.headers().contains_key("x-requested-with") {
        return with_headers(
            StatusCode::UNAUTHORIZED,
            "text/plain; charset=utf-8",
            "sign in again\n".to_owned(),
        );
    }
    let next = req
        .uri()
        .path_and_query()
        .map_or("/ui/", |p| session::safe_next(p.as_str()));
    see_other(&format!(
        "/ui/login?next={}",
        crate::render::links::percent_encode(next)
    ))
}

fn see_other(location: &str) -> Response<Body> {
    let mut r = with_headers(
        StatusCode::SEE_OTHER,
        "text/plain; charset=utf-8",
        String::new(),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn static_asset(name: &str) -> Response<Body> {
    let Some((content_type, body)) = view::asset(name) else {
        return message(
            StatusCode::NOT_FOUND,
            None,
            "Not found",
            "No such file.",
            None,
        );
    };
    let mut r = with_headers(StatusCode::OK, content_type, body.to_owned());
    // The files change with the binary only.
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

/// A form body's fields, decoded; `None` when it is too large or too slow.
async fn read_form(body: Incoming) -> Option<Vec<(String, String)>> {
    let body = Limited::new(body, MAX_FORM_BYTES);
    let bytes = tokio::time::timeout(FORM_TIMEOUT, body.collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    Some(crate::inbound::parse_form(&bytes))
}

/// The first value of field `name`, or "".
fn field<'f>(form: &'f [(String, String)], name: &str) -> &'f str {
    form.iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

/// The query string's fields.
fn query<B>(req: &Request<B>) -> Vec<(String, String)> {
    crate::inbound::parse_form(req.uri().query().unwrap_or_default().as_bytes())
}

fn over_tls<B>(req: &Request<B>) -> bool {
    req.extensions().get::<OverTls>().is_some_and(|t| t.0)
}

//! What the console shows on a GET.

use std::collections::BTreeMap;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serving::Body;

use super::session::{self, SignedIn};
use super::{context, html_page, message, no_randomness, query, storage_error, with_headers};
use crate::channels::settings::Destination;
use crate::http::App;
use crate::render::console as view;
use crate::store::{IncidentQuery, IncidentState};

/// Incidents per page.
const PAGE_SIZE: i64 = 50;

/// The state filter's choices: (value, label).
const STATES: &[(&str, &str)] = &[
    ("active", "open or acknowledged"),
    ("open", "open"),
    ("acked", "acknowledged"),
    ("resolved", "resolved"),
    ("all", "all"),
];

/// The incidents page's filter, as the query string gives it.
#[derive(Debug, Default, serde::Serialize)]
struct Filter {
    state: String,
    severity: String,
    site: String,
    policy: String,
    q: String,
    before: Option<i64>,
}

impl Filter {
    fn from_query(fields: &[(String, String)]) -> Filter {
        let get = |name: &str| {
            super::field(fields, name)
                .trim()
                .chars()
                .take(200)
                .collect::<String>()
        };
        let state = get("state");
        Filter {
            state: if STATES.iter().any(|(v, _)| *v == state) {
                state
            } else {
                "active".to_owned()
            },
            severity: get("severity"),
            site: get("site"),
            policy: get("policy"),
            q: get("q"),
            before: get("before").parse().ok().filter(|b| *b > 0),
        }
    }

    fn to_query(&self) -> IncidentQuery {
        let some = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        IncidentQuery {
            states: match self.state.as_str() {
                "open" => vec![IncidentState::Open],
                "acked" => vec![IncidentState::Acked],
                "resolved" => vec![IncidentState::Resolved],
                "all" => Vec::new(),
                _ => vec![IncidentState::Open, IncidentState::Acked],
            },
            severity: some(&self.severity),
            site: some(&self.site),
            policy: some(&self.policy),
            text: some(&self.q),
            before: self.before,
            // One more than shown: whether an older page exists.
            limit: PAGE_SIZE + 1,
        }
    }

    /// This filter's query string, with `before` replaced.
    fn url(&self, path: &str, before: Option<i64>) -> String {
        let enc = crate::render::links::percent_encode;
        let mut url = format!(
            "{path}?state={}&severity={}&site={}&policy={}&q={}",
            enc(&self.state),
            enc(&self.severity),
            enc(&self.site),
            enc(&self.policy),
            enc(&self.q)
        );
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        url
    }
}

impl App {
    /// A GET under `/ui/` by a signed-in user.
    pub(super) async fn page(
        &self,
        user: &SignedIn,
        req: &Request<Incoming>,
        rest: &str,
    ) -> Response<Body> {
        let notice = notice_of(&query(req));
        match rest.trim_end_matches('/') {
            "" | "incidents" => self.incidents_page(user, req, notice, false).await,
            "incidents/list" => self.incidents_page(user, req, None, true).await,
            "oncall" => self.on_call_page(user, req),
            "maintenance" => self.maintenance_page(user, notice, StatusCode::OK, None),
            "deliveries" => self.deliveries_page(user, notice).await,
            p => match p
                .strip_prefix("incidents/")
                .map(|r| r.split_once('/').unwrap_or((r, "")))
            {
                Some((id, live)) if live.is_empty() || live == "live" => match id.parse::<i64>() {
                    Ok(id) => self.incident_page(user, id, notice, live == "live").await,
                    Err(_) => not_found(user),
                },
                _ => not_found(user),
            },
        }
    }

    async fn incidents_page(
        &self,
        user: &SignedIn,
        req: &Request<Incoming>,
        notice: Option<(&'static str, String)>,
        fragment: bool,
    ) -> Response<Body> {
        let filter = Filter::from_query(&query(req));
        let q = filter.to_query();
        let found = match self.store.read(move |b| b.incident_page(&q)).await {
            Ok(found) => found,
            Err(e) => return storage_error(&e),
        };
        let more = found.len() > usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX);
        let shown: Vec<view::IncidentView> = (found.iter())
            .take(usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX))
            .map(view::IncidentView::new)
            .collect();
        let older = more
            .then(|| shown.last().map(|i| filter.url("/ui/", Some(i.id))))
            .flatten();
        let (now, now_iso) = view::time_text(self.live.clock.now_millis());
        let config = self.live.config();
        let page = serde_json::json!({
            "incidents": shown,
            "filter": filter,
            "states": STATES,
            "policies": config.policies.keys().collect::<Vec<_>>(),
            "older_url": older,
            "newer_url": filter.before.map(|_| filter.url("/ui/", None)),
            "refresh_url": filter.url("/ui/incidents/list", filter.before),
            "now": now,
            "now_iso": now_iso,
        });
        let ctx = context(Some(user), "Incidents", "incidents", notice, page);
        let template = if fragment {
            "incident_rows.html"
        } else {
            "incidents.html"
        };
        html_page(StatusCode::OK, template, &ctx)
    }

    async fn incident_page(
        &self,
        user: &SignedIn,
        id: i64,
        notice: Option<(&'static str, String)>,
        fragment: bool,
    ) -> Response<Body> {
        let timeline = match self.store.read(move |b| b.incident_timeline(id)).await {
            Ok(Some(t)) => t,
            Ok(None) => return not_found(user),
            Err(e) => return storage_error(&e),
        };
        let config = self.live.config();
        let destinations = config.destinations();
        let mut page =
            view::incident_page(&timeline, |dest| shown_destination(&destinations, dest));
        page["route_text"] =
            crate::routing::describe_route(&config, &timeline.incident.route).into();
        let title = format!("#{id} {}", timeline.incident.alertname);
        let ctx = context(Some(user), &title, "incidents", notice, page);
        let template = if fragment {
            "incident_live.html"
        } else {
            "incident.html"
        };
        html_page(StatusCode::OK, template, &ctx)
    }

    fn on_call_page(&self, user: &SignedIn, req: &Request<Incoming>) -> Response<Body> {
        let config = self.live.config();
        let (now, until) = self.on_call_horizon();
        let base = self.own_address(req);
        let rotations: Vec<serde_json::Value> = (config.rotations.values())
            .map(|r| {
                let secret = config
                    .console
                    .users
                    .get(&user.name)
                    .map_or("", |u| u.password_hash.as_str());
                let token = self.signer.calendar_key(&user.name, secret, &r.name);
                let url = format!(
                    "{base}/ui/rotations/{}.ics?user={}&key={token}",
                    crate::render::links::percent_encode(&r.name),
                    crate::render::links::percent_encode(&user.name),
                );
                view::rotation_view(r, now, until, url)
            })
            .collect();
        let ctx = context(
            Some(user),
            "On call",
            "oncall",
            None,
            serde_json::json!({ "rotations": rotations }),
        );
        html_page(StatusCode::OK, "oncall.html", &ctx)
    }

    async fn deliveries_page(
        &self,
        user: &SignedIn,
        notice: Option<(&'static str, String)>,
    ) -> Response<Body> {
        let health = self.store.read(|b| b.destination_health()).await;
        let dead = self.store.read(|b| b.dead_letters(100)).await;
        let (health, dead) = match (health, dead) {
            (Ok(h), Ok(d)) => (h, d),
            (Err(e), _) | (_, Err(e)) => return storage_error(&e),
        };
        let now = self.live.clock.now_millis();
        let destinations = self.live.config().destinations();
        let name = |dest: &str| shown_destination(&destinations, dest);
        let page = serde_json::json!({
            "health": health.iter().map(|h| view::HealthView::new(h, now, name)).collect::<Vec<_>>(),
            "dead": dead.iter().map(|d| view::DeadLetterView::new(d, name)).collect::<Vec<_>>(),
        });
        let ctx = context(Some(user), "Deliveries", "deliveries", notice, page);
        html_page(StatusCode::OK, "deliveries.html", &ctx)
    }

    /// The maintenance page; `form` refills the new-window form after an error.
    pub(super) fn maintenance_page(
        &self,
        user: &SignedIn,
        notice: Option<(&'static str, String)>,
        status: StatusCode,
        form: Option<serde_json::Value>,
    ) -> Response<Body> {
        let now = self.live.clock.now_millis();
        let windows: Vec<view::WindowView> = (self.maintenance.windows().iter())
            .map(|w| view::WindowView::new(w, now))
            .collect();
        let page = serde_json::json!({
            "windows": windows,
            "form": form.unwrap_or_else(|| serde_json::json!({})),
        });
        let ctx = context(Some(user), "Maintenance", "maintenance", notice, page);
        html_page(status, "maintenance.html", &ctx)
    }

    /// The sign-in form, with a fresh CSRF cookie for it.
    pub(super) fn login_page<B>(
        &self,
        req: &Request<B>,
        error: Option<(StatusCode, &str)>,
        user_name: &str,
    ) -> Response<Body> {
        let Some(token) = session::random_token() else {
            return no_randomness();
        };
        let fields = query(req);
        let next = session::safe_next(super::field(&fields, "next"));
        let config = self.live.config();
        let notice = error
            .map(|(_, text)| ("error", text.to_owned()))
            .or_else(|| notice_of(&fields));
        let ctx = context(
            None,
            "Sign in",
            "login",
            notice,
            serde_json::json!({
                "login_csrf": token,
                "next": next,
                "user_name": user_name,
                "no_users": config.console.users.is_empty(),
            }),
        );
        let status = error.map_or(StatusCode::OK, |(s, _)| s);
        let mut r = html_page(status, "login.html", &ctx);
        let cookie = session::set_cookie(
            session::LOGIN_COOKIE,
            &token,
            "/ui/login",
            std::time::Duration::from_secs(3600),
            self.secure_cookies(req),
        );
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        r
    }

    /// Where phones reach the relay, for addresses to copy: `public_url`, else the address
    /// this request was sent to.
    fn own_address(&self, req: &Request<Incoming>) -> String {
        if let Some(url) = &self.live.config().public_url {
            return url.clone();
        }
        let host = (req.headers().get(header::HOST))
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && !h.contains(['/', '"', '<', '>', ' ']))
            .unwrap_or("localhost");
        let scheme = if super::over_tls(req) {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}")
    }

    /// Whether cookies get `Secure`: the request came over TLS, or the relay's public URL
    /// (a TLS proxy in front) is https.
    pub(super) fn secure_cookies<B>(&self, req: &Request<B>) -> bool {
        super::over_tls(req)
            || (self.live.config().public_url.as_deref()).is_some_and(|u| u.starts_with("https://"))
    }

    /// `GET /ui/rotations/NAME.ics?user=U&key=K`: a rotation's calendar for a phone's
    /// calendar app, which cannot sign in: the key, made for that user and rotation from the
    /// relay's secret and the user's password hash, is the proof (a new password revokes it).
    pub(super) fn personal_calendar(&self, req: &Request<Incoming>, file: &str) -> Response<Body> {
        let fields = query(req);
        let config = self.live.config();
        let name = super::field(&fields, "user");
        let given = super::field(&fields, "key");
        let rotation = file
            .strip_suffix(".ics")
            .and_then(|r| config.rotations.get(r));
        let allowed = match (config.console.users.get(name), rotation) {
            (Some(user), Some(r)) => {
                self.signer
                    .calendar_key_matches(&user.name, &user.password_hash, &r.name, given)
            }
            _ => false,
        };
        let (true, Some(rotation)) = (allowed, rotation) else {
            self.metrics.reject("console_calendar");
            return with_headers(
                StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "no such calendar (copy its address from the console's On call page)\n".to_owned(),
            );
        };
        with_headers(
            StatusCode::OK,
            "text/calendar; charset=utf-8",
            self.rotation_feed(rotation),
        )
    }
}

/// A destination as the console names it: its channel (and which of its numbers), as the
/// metrics do; a phone number stays out of pages that a screenshot may carry away.
fn shown_destination(destinations: &BTreeMap<String, Destination>, id: &str) -> String {
    destinations.get(id).map_or_else(
        // No longer configured: the channel's name, without a number.
        || id.split('/').next().unwrap_or(id).to_owned(),
        |d| crate::metrics::ChannelLabels::of(d).destination,
    )
}

fn not_found(user: &SignedIn) -> Response<Body> {
    message(
        StatusCode::NOT_FOUND,
        Some(user),
        "Not found",
        "There is no such page or incident (incidents resolved long ago are pruned).",
        Some(("/ui/", "Incidents")),
    )
}

/// The notice a redirect after an action asks for (`?done=…`): fixed words only, so a link
/// cannot make the console say anything else.
fn notice_of(fields: &[(String, String)]) -> Option<(&'static str, String)> {
    let text = match super::field(fields, "done") {
        "ack" => "Acknowledged. Escalation stopped.",
        "unack" => "Un-acknowledged. Escalation goes on.",
        "escalate" => "The next step was sent now.",
        "resolve" => "Resolved.",
        "unchanged" => "Nothing changed: the incident was already in that state.",
        "retry" => "The delivery was queued again.",
        "window" => "Maintenance window created.",
        "ended" => "Maintenance window ended.",
        "signed-out" => "You signed out.",
        _ => return None,
    };
    Some(("ok", text.to_owned()))
}

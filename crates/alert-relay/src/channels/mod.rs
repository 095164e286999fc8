//! Channels: one module per provider, each turning a [`Message`] into that provider's request
//! (pure `request` functions, tested with plain values) and a response into an [`Outcome`]
//! (pure `classify` functions). This module holds what they share: the request description,
//! sending it with reqwest, `Retry-After`, and the plain-text fallback.
//!
//! Providers never see Alertmanager types: only [`Message`], the delivery id and the provider
//! reference of the firing message.

pub mod discord;
pub mod email;
pub mod matrix;
pub mod ntfy;
pub mod pushover;
pub mod settings;
pub mod slack;
pub mod teams;
pub mod telegram;
pub mod twilio;
pub mod twilio_voice;
pub mod webhook;

use std::fmt;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method};

pub use self::settings::{ChannelConfig, ChannelKind, Destination, Rate};
use crate::render::Message;
use crate::store::DeliveryJob;

/// Longest provider hint honoured; anything longer is treated as this.
pub(crate) const MAX_RETRY_HINT: Duration = Duration::from_secs(3600);

/// What one delivery attempt achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The provider accepted it. `reference` identifies the message for edits and threads;
    /// `pause` is the provider saying its bucket is empty (Discord) for this long.
    Delivered {
        reference: Option<String>,
        pause: Option<Duration>,
    },
    /// Worth retrying: rate limits, 5xx, network errors, timeouts.
    Retry {
        reason: &'static str,
        after: Option<Duration>,
        detail: String,
    },
    /// Retrying cannot help: bad credentials, a deleted channel, a rejected message.
    Permanent {
        reason: &'static str,
        detail: String,
    },
}

impl Outcome {
    /// One word for logs and `send-test --output json`: `delivered`, `retry` (a temporary
    /// failure) or `failed` (retrying cannot help).
    pub fn result(&self) -> &'static str {
        match self {
            Outcome::Delivered { .. } => "delivered",
            Outcome::Retry { .. } => "retry",
            Outcome::Permanent { .. } => "failed",
        }
    }

    /// The provider's detail of a failure (empty when delivered).
    pub fn detail(&self) -> &str {
        match self {
            Outcome::Delivered { .. } => "",
            Outcome::Retry { detail, .. } | Outcome::Permanent { detail, .. } => detail,
        }
    }

    /// Why it failed, as the metrics' `reason` label says it (`None` when delivered).
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Outcome::Delivered { .. } => None,
            Outcome::Retry { reason, .. } | Outcome::Permanent { reason, .. } => Some(reason),
        }
    }

    fn delivered(reference: Option<String>) -> Self {
        Outcome::Delivered {
            reference,
            pause: None,
        }
    }

    fn is_format_rejection(&self) -> bool {
        matches!(
            self,
            Outcome::Permanent {
                reason: "format",
                ..
            }
        )
    }
}

/// A human's line: `delivered`, `delivered (message 1234)`, `temporary failure (rate_limit,
/// retry after 30s): HTTP 429` or `failed (auth): HTTP 401 invalid_auth`.
impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Delivered {
                reference: Some(r), ..
            } => write!(f, "delivered (message {r})"),
            Outcome::Delivered { .. } => f.write_str("delivered"),
            Outcome::Retry {
                reason,
                after,
                detail,
            } => {
                write!(f, "temporary failure ({reason}")?;
                if let Some(after) = after {
                    write!(f, ", retry after {}", crate::time::humanize(*after))?;
                }
                write!(f, ")")?;
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
            Outcome::Permanent { reason, detail } => {
                write!(f, "failed ({reason})")?;
                if !detail.is_empty() {
                    write!(f, ": {detail}")?;
                }
                Ok(())
            }
        }
    }
}

/// Everything an attempt needs besides the provider settings.
#[derive(Debug)]
pub struct Attempt<'a> {
    pub http: &'a reqwest::Client,
    pub timeout: Duration,
    pub destination: &'a Destination,
    pub delivery_id: i64,
    /// The provider's id of the firing message this resolved message follows up.
    pub firing_ref: Option<&'a str>,
    /// The relay's `public_url` (the voice channel's callbacks).
    pub public_url: Option<&'a str>,
}

/// One HTTP request to a provider. `Debug` hides headers and the URL: both can hold secrets.
pub struct Request {
    pub method: Method,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: RequestBody,
    /// A bearer token or basic credentials, applied by reqwest.
    pub auth: RequestAuth,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RequestBody {
    Json(serde_json::Value),
    Form(Vec<(String, String)>),
    Bytes(Vec<u8>),
}

#[derive(Clone, PartialEq)]
pub enum RequestAuth {
    None,
    Bearer(String),
    Basic(String, String),
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} <url redacted> {:?}", self.method, self.body)
    }
}

impl fmt::Debug for RequestAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RequestAuth::None => "none",
            RequestAuth::Bearer(_) => "bearer <redacted>",
            RequestAuth::Basic(..) => "basic <redacted>",
        })
    }
}

impl Request {
    fn json(method: Method, url: String, body: serde_json::Value) -> Self {
        Request {
            method,
            url,
            headers: Vec::new(),
            body: RequestBody::Json(body),
            auth: RequestAuth::None,
        }
    }

    fn form(url: String, fields: Vec<(String, String)>) -> Self {
        Request {
            method: Method::POST,
            url,
            headers: Vec::new(),
            body: RequestBody::Form(fields),
            auth: RequestAuth::None,
        }
    }

    fn with_auth(mut self, auth: RequestAuth) -> Self {
        self.auth = auth;
        self
    }

    /// The JSON body (tests).
    pub fn json_body(&self) -> Option<&serde_json::Value> {
        match &self.body {
            RequestBody::Json(v) => Some(v),
            _ => None,
        }
    }
}

/// A provider's answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body for error messages: short, one line.
    pub fn snippet(&self) -> String {
        let s = String::from_utf8_lossy(&self.body);
        let s: String = s.chars().take(200).collect();
        s.replace(['\n', '\r'], " ")
    }
}

/// Sends a request. Network failures and timeouts become `Err(Outcome::Retry)`; the error
/// text never includes the URL (webhook URLs and bot tokens are secrets).
pub async fn execute(
    http: &reqwest::Client,
    timeout: Duration,
    req: Request,
) -> Result<Response, Outcome> {
    let method = req.method.clone();
    let url = req.url.clone();
    let mut builder = http.request(method, &req.url).timeout(timeout);
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    builder = match req.auth {
        RequestAuth::None => builder,
        RequestAuth::Bearer(t) => builder.bearer_auth(t),
        RequestAuth::Basic(u, p) => builder.basic_auth(u, Some(p)),
    };
    builder = match req.body {
        RequestBody::Json(v) => builder.json(&v),
        RequestBody::Form(f) => builder.form(&f),
        RequestBody::Bytes(b) => builder
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(b),
    };
    let network = |e: reqwest::Error| {
        let reason = if e.is_timeout() { "timeout" } else { "network" };
        Outcome::Retry {
            reason,
            after: None,
            detail: e.without_url().to_string(),
        }
    };
    let resp = builder.send().await.map_err(network)?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    if resp.status().is_redirection() {
        return Err(redirected(status, &headers, &url));
    }
    // Provider answers are small; cap what is kept of a hostile one.
    let body = resp.bytes().await.map_err(network)?;
    let body = if body.len() > 64 * 1024 {
        body.slice(..64 * 1024)
    } else {
        body
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// A 3xx answer: never followed (the client has no redirect policy, see
/// `crate::client::client_builder`), since the next hop would get the request's credentials. No
/// provider documents a redirect of its API, so it is permanent: a mistyped `api_url` or
/// something on the path that must be looked at. The detail names the target's origin only;
/// its path and query may hold secrets.
fn redirected(status: u16, headers: &HeaderMap, from: &str) -> Outcome {
    let target = headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|loc| {
            let base = reqwest::Url::parse(from).ok()?;
            origin_of(base.join(loc).ok()?.as_str())
        })
        .unwrap_or_else(|| "an unreadable location".to_owned());
    let from = origin_of(from).unwrap_or_else(|| "the provider".to_owned());
    Outcome::Permanent {
        reason: "redirect",
        detail: format!("HTTP {status} from {from} redirects to {target}; not followed"),
    }
}

/// `scheme://host[:port]` of a URL, without user, path and query (which may hold secrets).
fn origin_of(url: &str) -> Option<String> {
    let origin = reqwest::Url::parse(url).ok()?.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// The common HTTP classification: 2xx delivered, 429/408/5xx retried (with the provider's
/// `Retry-After`), 401/403 auth, 404/410 gone, other 4xx a rejected request.
pub fn classify_status(resp: &Response) -> Outcome {
    let after = retry_after(&resp.headers);
    let detail = format!("HTTP {}: {}", resp.status, resp.snippet());
    match resp.status {
        200..=299 => Outcome::delivered(None),
        429 => Outcome::Retry {
            reason: "rate_limited",
            after,
            detail,
        },
        408 => Outcome::Retry {
            reason: "timeout",
            after,
            detail,
        },
        500..=599 => Outcome::Retry {
            reason: "server_error",
            after,
            detail,
        },
        401 | 403 => Outcome::Permanent {
            reason: "auth",
            detail,
        },
        404 | 410 => Outcome::Permanent {
            reason: "not_found",
            detail,
        },
        _ => Outcome::Permanent {
            reason: "rejected",
            detail,
        },
    }
}

/// `Retry-After` as seconds (fractions allowed) or an HTTP date.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return seconds(secs);
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_HINT),
    )
}

/// A provider's retry hint in seconds, clamped to `[0, MAX_RETRY_HINT]`.
pub fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0)
        .then(|| Duration::from_secs_f64(secs.min(MAX_RETRY_HINT.as_secs_f64())))
}

/// Replaces the scheme, host and port (and prefixes the path) of a full provider URL with
/// `api_url`, for channels whose URL is the secret (Slack and Discord webhooks, Teams flows).
pub fn rebase(url: &str, api_url: Option<&str>) -> String {
    let Some(base) = api_url else {
        return url.to_owned();
    };
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let query = u.query().map_or(String::new(), |q| format!("?{q}"));
            format!("{}{}{query}", base.trim_end_matches('/'), u.path())
        }
        Err(_) => url.to_owned(),
    }
}

/// Appends query parameters to a URL that may already have some.
fn with_query(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// The message to send for `job` on `destination`: the default layout, then the channel's
/// template if it has one.
pub fn message_for(destination: &Destination, job: &DeliveryJob) -> Message {
    let mut msg = Message::new(&job.event);
    if let Some(t) = &destination.channel.template
        && let Err(e) = t.apply(&mut msg)
    {
        tracing::warn!(channel = %destination.channel.name, "template failed, using the default layout: {e}");
    }
    msg
}

/// Why `destination` sends nothing for `job` (a channel that only sends some messages: a call
/// is made for a firing alert or a storm summary only), if it sends nothing.
pub fn not_sent(destination: &Destination, job: &DeliveryJob) -> Option<String> {
    match destination.channel.kind {
        ChannelKind::TwilioVoice(_) => twilio_voice::not_called(job),
        _ => None,
    }
}

/// Delivers `msg`: the formatted request first, the plain-text one if the provider rejected
/// the formatting. Returns the outcome and whether the fallback was used.
pub async fn deliver(a: &Attempt<'_>, msg: &Message) -> (Outcome, bool) {
    let first = send(a, msg, true).await;
    if !first.is_format_rejection() {
        return (first, false);
    }
    tracing::warn!(
        destination = %a.destination.id,
        "provider rejected the formatted message ({first}); sending plain text"
    );
    (send(a, msg, false).await, true)
}

async fn send(a: &Attempt<'_>, msg: &Message, formatted: bool) -> Outcome {
    let ch = &a.destination.channel;
    let api = ch.api_url.as_deref();
    match &ch.kind {
        ChannelKind::Webhook {
            url,
            headers,
            signing_secret,
        } => {
            let req = webhook::request(url.expose(), api, headers, signing_secret.as_ref(), msg, a);
            classify_with(a, req, classify_status).await
        }
        ChannelKind::Slack(mode) => slack::send(a, mode, api, msg, formatted).await,
        ChannelKind::Discord { webhook_url } => {
            discord::send(a, webhook_url.expose(), api, msg, formatted).await
        }
        ChannelKind::Telegram {
            bot_token,
            chat_id,
            message_thread_id,
            ack,
        } => {
            let chat = telegram::Chat {
                token: bot_token.expose(),
                chat_id,
                thread: *message_thread_id,
                api_url: api,
                ack: *ack,
            };
            let req = telegram::request(&chat, msg, a.firing_ref, formatted);
            classify_with(a, req, telegram::classify).await
        }
        ChannelKind::Ntfy {
            topic,
            auth,
            priority,
        } => {
            let req = ntfy::request(topic, auth, *priority, api, msg);
            classify_with(a, req, ntfy::classify).await
        }
        ChannelKind::Twilio {
            account_sid,
            auth_token,
            from,
            messaging_service_sid,
            ..
        } => {
            let to = a.destination.recipient.as_deref().unwrap_or_default();
            let req = twilio::request(
                account_sid,
                auth_token.expose(),
                from.as_deref(),
                messaging_service_sid.as_deref(),
                to,
                api,
                msg,
            );
            classify_with(a, req, twilio::classify).await
        }
        ChannelKind::TwilioVoice(settings) => {
            let to = a.destination.recipient.as_deref().unwrap_or_default();
            // Refused at load without it; a reload cannot take it away under a queued call.
            let Some(public_url) = a.public_url else {
                return Outcome::Permanent {
                    reason: "rejected",
                    detail: "no public_url: Twilio could not fetch what the call says".into(),
                };
            };
            let channel = &a.destination.channel.name;
            let req = twilio_voice::request(settings, to, api, public_url, channel, a.delivery_id);
            classify_with(a, req, twilio_voice::classify).await
        }
        ChannelKind::Teams { url } => {
            let req = teams::request(url.expose(), api, msg, formatted);
            classify_with(a, req, teams::classify).await
        }
        ChannelKind::Matrix {
            room_id,
            access_token,
        } => {
            let req = matrix::request(
                room_id,
                access_token.expose(),
                api.unwrap_or_default(),
                msg,
                a.delivery_id,
                a.firing_ref,
                formatted,
            );
            classify_with(a, req, matrix::classify).await
        }
        ChannelKind::Email(settings) => email::send(a, settings, msg).await,
        ChannelKind::Pushover {
            token,
            user_key,
            priority,
            emergency,
        } => {
            let req = pushover::request(
                token.expose(),
                user_key.expose(),
                *priority,
                emergency.as_ref(),
                api,
                msg,
                formatted,
            );
            classify_with(a, req, pushover::classify).await
        }
    }
}

async fn classify_with(
    a: &Attempt<'_>,
    req: Request,
    classify: impl Fn(&Response) -> Outcome,
) -> Outcome {
    match execute(a.http, a.timeout, req).await {
        Ok(resp) => classify(&resp),
        Err(outcome) => outcome,
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use http::HeaderMap;

    use super::Response;

    pub(crate) fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        Response {
            status,
            headers: h,
            body: bytes::Bytes::from(body.to_owned()),
        }
    }

    pub(crate) fn message(firing: bool) -> crate::render::Message {
        let n = crate::payload::parse(crate::payload::tests_example().as_bytes()).expect("valid");
        crate::render::Message::new(&n.events[usize::from(!firing)])
    }
}

#[cfg(test)]
mod tests {
    use super::testing::response;
    use super::*;

    #[test]
    fn status_classes_and_retry_after() {
        assert_eq!(
            classify_status(&response(204, &[], "")),
            Outcome::delivered(None)
        );
        assert!(matches!(
            classify_status(&response(429, &[("retry-after", "7")], "")),
            Outcome::Retry { reason: "rate_limited", after: Some(d), .. } if d == Duration::from_secs(7)
        ));
        assert!(matches!(
            classify_status(&response(503, &[], "")),
            Outcome::Retry {
                reason: "server_error",
                after: None,
                ..
            }
        ));
        assert!(matches!(
            classify_status(&response(401, &[], "")),
            Outcome::Permanent { reason: "auth", .. }
        ));
        assert!(matches!(
            classify_status(&response(410, &[], "")),
            Outcome::Permanent {
                reason: "not_found",
                ..
            }
        ));
        assert!(matches!(
            classify_status(&response(400, &[], "")),
            Outcome::Permanent {
                reason: "rejected",
                ..
            }
        ));
        let mut h = HeaderMap::new();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("v"),
        );
        assert_eq!(
            retry_after(&h),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        h.insert("retry-after", "99999999".parse().expect("v"));
        assert_eq!(retry_after(&h), Some(MAX_RETRY_HINT));
        h.insert("retry-after", "-1".parse().expect("v"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn a_redirect_is_permanent_and_names_only_origins() {
        let from = "https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json";
        let resp = response(307, &[("location", "http://127.0.0.2:8/steal?token=x")], "");
        let Outcome::Permanent { reason, detail } = redirected(307, &resp.headers, from) else {
            panic!("a redirect is permanent");
        };
        assert_eq!(reason, "redirect");
        assert_eq!(
            detail,
            "HTTP 307 from https://api.twilio.com redirects to http://127.0.0.2:8; not followed"
        );
        let relative = response(302, &[("location", "/elsewhere?sig=s")], "");
        let Outcome::Permanent { detail, .. } = redirected(302, &relative.headers, from) else {
            panic!("a redirect is permanent");
        };
        assert!(detail.ends_with("redirects to https://api.twilio.com; not followed"));
        assert!(
            !detail.contains("AC1") && !detail.contains("sig"),
            "{detail}"
        );
        assert_eq!(
            origin_of("https://u:p@h.example:8443/x?y=1").as_deref(),
            Some("https://h.example:8443")
        );
    }

    #[test]
    fn rebasing_keeps_path_and_query() {
        assert_eq!(
            rebase(
                "https://hooks.slack.com/services/T/B/X",
                Some("http://127.0.0.1:9/slack/")
            ),
            "http://127.0.0.1:9/slack/services/T/B/X"
        );
        assert_eq!(
            rebase(
                "https://x.logic.azure.com/workflows/1?sig=abc",
                Some("http://127.0.0.1:9")
            ),
            "http://127.0.0.1:9/workflows/1?sig=abc"
        );
        assert_eq!(rebase("https://a/b", None), "https://a/b");
        assert_eq!(
            with_query("https://a/b?x=1", "wait=true"),
            "https://a/b?x=1&wait=true"
        );
    }
}

//! Provider callbacks: `POST /inbound/twilio/{channel}`, an SMS reply through Twilio's inbound
//! webhook. The request's signature is the proof: the relay's `auth:` does not apply.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serving::Body;

use super::{App, plain};

impl App {
    /// An SMS reply through Twilio's inbound webhook (see `crate::inbound`).
    pub(super) async fn twilio_inbound(
        &self,
        req: Request<Incoming>,
        channel: &str,
    ) -> Response<Body> {
        let config = self.live.config();
        // Read before the channel is looked at: every name costs the same.
        let TwilioRequest {
            path,
            signature,
            body,
            ..
        } = match read_twilio(req, &config).await {
            Ok(r) => r,
            Err(refusal) => return refusal,
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
        let twiml = |reply: Option<&str>| twiml_response(crate::inbound::twiml(reply));
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

/// What a Twilio callback carries: the path and query it was sent to (signed with it), its
/// signature header, its query string, and its body (at most 64 KiB, within the body timeout).
pub(super) struct TwilioRequest {
    pub path: String,
    pub signature: String,
    pub query: String,
    pub post: bool,
    pub body: bytes::Bytes,
}

/// Reads a Twilio callback; a 400 when its body cannot be read.
pub(super) async fn read_twilio(
    req: Request<Incoming>,
    config: &crate::config::Config,
) -> Result<TwilioRequest, Response<Body>> {
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
    let query = req.uri().query().unwrap_or("").to_owned();
    let post = req.method() == http::Method::POST;
    match tokio::time::timeout(
        config.limits.body_timeout,
        Limited::new(req.into_body(), 64 * 1024).collect(),
    )
    .await
    {
        Ok(Ok(b)) => Ok(TwilioRequest {
            path,
            signature,
            query,
            post,
            body: b.to_bytes(),
        }),
        _ => Err(plain(StatusCode::BAD_REQUEST, "cannot read the body\n")),
    }
}

/// A TwiML answer.
pub(super) fn twiml_response(twiml: String) -> Response<Body> {
    let mut r = Response::new(Body::from(twiml));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/xml; charset=utf-8"),
    );
    r
}

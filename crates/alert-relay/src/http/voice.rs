//! Twilio's callbacks of a call (`type: twilio_voice`): `GET`/`POST
//! /inbound/voice/{channel}/{delivery}/…`, answered with TwiML (see `crate::voice`). The
//! request's signature is the proof: the relay's `auth:` does not apply.

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Limited};
use hyper::body::Incoming;
use serving::Body;

use super::{App, plain};
use crate::voice::{self, Failure};

impl App {
    /// One callback of a call; `rest` is the path after `/inbound/voice/`.
    pub(super) async fn twilio_voice(&self, req: Request<Incoming>, rest: &str) -> Response<Body> {
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
        let query = req.uri().query().unwrap_or("").to_owned();
        // A GET is signed over its URL alone; a POST over the URL and its parameters.
        let post = req.method() == Method::POST;
        let body = match tokio::time::timeout(
            config.limits.body_timeout,
            Limited::new(req.into_body(), 64 * 1024).collect(),
        )
        .await
        {
            Ok(Ok(b)) => b.to_bytes(),
            _ => return plain(StatusCode::BAD_REQUEST, "cannot read the body\n"),
        };
        let signed = if post {
            crate::inbound::parse_form(&body)
        } else {
            Vec::new()
        };
        let values = if post {
            signed.clone()
        } else {
            crate::inbound::parse_form(query.as_bytes())
        };
        let request = voice::Request {
            rest,
            path: &path,
            signed: &signed,
            values: &values,
            signature: &signature,
        };
        let services = voice::Services {
            store: &self.store,
            escalator: &self.escalator,
            storms: &self.storms,
        };
        match voice::answer(services, &config, &request).await {
            Ok(twiml) => {
                let mut r = Response::new(Body::from(twiml));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/xml; charset=utf-8"),
                );
                r
            }
            Err(Failure::Refused(why)) => {
                self.metrics.reject(why.reason());
                tracing::warn!(callback = rest, "voice callback refused: {why}");
                plain(StatusCode::FORBIDDEN, crate::inbound::REFUSED)
            }
            Err(Failure::Store(e)) => {
                tracing::error!("voice callback: storage error: {e}");
                plain(StatusCode::INTERNAL_SERVER_ERROR, "storage error\n")
            }
        }
    }
}

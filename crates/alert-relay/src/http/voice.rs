//! Twilio's callbacks of a call (`type: twilio_voice`): `GET`/`POST
//! /inbound/voice/{channel}/{delivery}/…`, answered with TwiML (see `crate::voice`). The
//! request's signature is the proof: the relay's `auth:` does not apply.

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serving::Body;

use super::inbound::{TwilioRequest, read_twilio, twiml_response};
use super::{App, plain};
use crate::voice::{self, Failure};

impl App {
    /// One callback of a call; `rest` is the path after `/inbound/voice/`.
    pub(super) async fn twilio_voice(&self, req: Request<Incoming>, rest: &str) -> Response<Body> {
        let config = self.live.config();
        let TwilioRequest {
            path,
            signature,
            query,
            post,
            body,
        } = match read_twilio(req, &config).await {
            Ok(r) => r,
            Err(refusal) => return refusal,
        };
        // A GET is signed over its URL alone; a POST over the URL and its parameters.
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
            Ok(twiml) => twiml_response(twiml),
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

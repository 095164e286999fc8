//! `type: webhook`: a generic JSON POST. The body carries the alert as Alertmanager sent it
//! plus the relay's envelope; `Idempotency-Key` is stable across retries of one delivery, so
//! an idempotent receiver sees each notification once; with `signing_secret` the body is
//! signed like Slack and Twilio sign theirs (HMAC-SHA256 over `{timestamp}.{body}`).

use hmac::{Hmac, Mac as _};
use http::Method;
use serde_json::json;
use sha2::Sha256;

use super::settings::{ChannelKind, Input, Key, Kind, Provider, Rate};
use super::{Attempt, Request, RequestAuth, RequestBody, rebase};
use crate::render::Message;
use crate::secret::Secret;
use crate::secret::keys::{ConfigError, Problems};

pub const SIGNATURE_HEADER: &str = "X-Alert-Relay-Signature";
pub const TIMESTAMP_HEADER: &str = "X-Alert-Relay-Timestamp";

pub fn body(msg: &Message, a: &Attempt<'_>) -> serde_json::Value {
    json!({
        "version": "1",
        "delivery_id": a.delivery_id,
        "destination": a.destination.id,
        "status": msg.status,
        "kind": if msg.notice.is_some() { "notice" } else { "alert" },
        "title": msg.title,
        "text": msg.plain_text(),
        "alert": {
            "status": msg.status,
            "labels": msg.labels,
            "annotations": msg.annotations,
            "startsAt": msg.starts_at,
            "endsAt": msg.ends_at,
            "fingerprint": msg.fingerprint,
        },
        "firing_for": msg.firing_for,
        "links": msg.links,
    })
}

pub fn request(
    url: &str,
    api_url: Option<&str>,
    headers: &[(String, String)],
    signing_secret: Option<&Secret>,
    msg: &Message,
    a: &Attempt<'_>,
) -> Request {
    let bytes = serde_json::to_vec(&body(msg, a)).unwrap_or_default();
    let mut h: Vec<(String, String)> = headers.to_vec();
    h.push((
        "Idempotency-Key".into(),
        format!("alert-relay-{}", a.delivery_id),
    ));
    if let Some(secret) = signing_secret {
        let ts = crate::time::now_millis() / 1000;
        h.push((TIMESTAMP_HEADER.into(), ts.to_string()));
        h.push((SIGNATURE_HEADER.into(), sign(secret, ts, &bytes)));
    }
    Request {
        method: Method::POST,
        url: rebase(url, api_url),
        headers: h,
        body: RequestBody::Bytes(bytes),
        auth: RequestAuth::None,
    }
}

/// `v1=<hex HMAC-SHA256(secret, "{ts}.{body}")>`.
pub fn sign(secret: &Secret, ts: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; the error branch cannot happen.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v1={hex}")
}

/// A webhook channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "webhook",
    keys: &[
        Key::Secret("url"),
        Key::Plain("headers", Kind::Map),
        Key::Secret("signing_secret"),
    ],
    rate: Rate::new(10.0, 20),
    refuses_api_url: None,
    from_raw,
};

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    let mut problems = Problems::default();
    let url = problems.keep(input.url_secret("url"));
    let mut headers = Vec::new();
    for (k, v) in input.keys.map("headers").cloned().unwrap_or_default() {
        if http::HeaderName::try_from(k.as_str()).is_err()
            || http::HeaderValue::try_from(v.as_str()).is_err()
        {
            problems.push(input.invalid(&format!("headers.{k}"), "not a valid HTTP header"));
        } else {
            headers.push((k, v));
        }
    }
    let signing_secret = problems.keep(input.secret("signing_secret"));
    let (Some(url), Some(signing_secret)) = (url, signing_secret) else {
        return Err(input.failed(problems));
    };
    problems.finish(ChannelKind::Webhook {
        url,
        headers,
        signing_secret,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_signature() {
        // echo -n '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(&Secret::new("key"), 1_700_000_000, b"{}"),
            "v1=".to_owned()
                + &{
                    let mut mac = Hmac::<Sha256>::new_from_slice(b"key").expect("key");
                    mac.update(b"1700000000.{}");
                    mac.finalize()
                        .into_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                }
        );
    }
}

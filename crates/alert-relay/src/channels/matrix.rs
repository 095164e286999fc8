//! `type: matrix`: `PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txnId}` with the
//! delivery id in the txnId, so a retry (or a re-send after a crash) is the same event to the
//! homeserver: exactly once. Resolved messages reply to the firing event. Events stay far below
//! 65,536 bytes. `M_LIMIT_EXCEEDED`: `Retry-After`, else the deprecated `retry_after_ms`.

use http::Method;
use serde_json::json;

use super::settings::{ChannelKind, Input, Key, Kind, Provider, Rate};
use super::{Outcome, Request, RequestAuth, Response, classify_status, seconds};
use crate::render::Message;
use crate::render::escape::{self, MATRIX_SIGILS};
use crate::render::links::{html_anchors, percent_encode};
use crate::render::text::truncate_bytes;
use crate::secret::keys::{ConfigError, Problems};

pub fn request(
    room: &str,
    token: &str,
    homeserver: &str,
    msg: &Message,
    delivery_id: i64,
    firing_ref: Option<&str>,
    formatted: bool,
) -> Request {
    let plain = |s: &str| escape::no_mentions(s, MATRIX_SIGILS);
    let text = msg.plain_layout(plain, |l| format!("{}: {}", plain(&l.name), l.url));
    // An empty `m.mentions`: the event mentions nobody, so no server or client applies the
    // legacy rules that notify on a display name or `@room` found in the text.
    let mut body =
        json!({ "msgtype": "m.text", "body": truncate_bytes(&text, 24_000), "m.mentions": {} });
    if formatted {
        body["format"] = json!("org.matrix.custom.html");
        body["formatted_body"] = json!(formatted_body(msg));
    }
    if let Some(event_id) = firing_ref {
        body["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": event_id } });
    }
    // The same txnId on every attempt of this delivery; the fallback gets its own.
    let txn = if formatted {
        format!("alert-relay-{delivery_id}")
    } else {
        format!("alert-relay-{delivery_id}-plain")
    };
    Request::json(
        Method::PUT,
        format!(
            // Room ids and aliases go into a path segment.
            "{homeserver}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
            percent_encode(room)
        ),
        body,
    )
    .with_auth(RequestAuth::Bearer(token.to_owned()))
}

/// `formatted_body`: the alert's text escaped (and kept from becoming pills), the relay's own
/// bold title, line breaks and links.
fn formatted_body(msg: &Message) -> String {
    let esc = |s: &str| escape::html_no_mentions(s, MATRIX_SIGILS);
    let mut html = format!(
        "<p><b>{}</b></p><p>{}</p>",
        esc(&truncate_bytes(&msg.title, 1000)),
        esc(&truncate_bytes(&msg.plain_body(), 16_000)).replace('\n', "<br>")
    );
    if !msg.links.is_empty() {
        let links = html_anchors(&msg.links, " · ", esc);
        html.push_str(&format!("<p>{links}</p>"));
    }
    html
}

pub fn classify(resp: &Response) -> Outcome {
    let v = resp.json();
    let errcode = v
        .as_ref()
        .and_then(|v| v["errcode"].as_str())
        .unwrap_or_default()
        .to_owned();
    match classify_status(resp) {
        Outcome::Delivered { .. } => Outcome::delivered(
            v.as_ref()
                .and_then(|v| v["event_id"].as_str())
                .map(str::to_owned),
        ),
        Outcome::Retry {
            reason,
            after,
            detail,
        } => {
            let ms = v
                .as_ref()
                .and_then(|v| v["retry_after_ms"].as_f64())
                .and_then(|ms| seconds(ms / 1000.0));
            Outcome::Retry {
                reason,
                after: after.or(ms),
                detail,
            }
        }
        Outcome::Permanent { detail, .. }
            if matches!(
                errcode.as_str(),
                "M_BAD_JSON" | "M_NOT_JSON" | "M_TOO_LARGE"
            ) =>
        {
            Outcome::Permanent {
                reason: "format",
                detail,
            }
        }
        other => other,
    }
}

/// A Matrix channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "matrix",
    keys: &[
        Key::Plain("room_id", Kind::Str),
        Key::Secret("access_token"),
    ],
    // Synapse's default rc_message: 0.2/s, burst 10.
    rate: Rate::new(0.2, 10),
    refuses_api_url: None,
    from_raw,
};

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    let mut problems = Problems::default();
    let room_id = problems.keep(input.required("room_id").and_then(|room_id| {
        if room_id.starts_with('!') || room_id.starts_with('#') {
            Ok(room_id)
        } else {
            Err(input.invalid(
                "room_id",
                "must be a room id (!abc:server) or alias (#room:server)",
            ))
        }
    }));
    if input.api_url.is_none() {
        problems.push(input.invalid("api_url", "required for matrix: the homeserver's base URL"));
    }
    let access_token = problems.keep(input.required_secret("access_token"));
    let (Some(room_id), Some(access_token)) = (room_id, access_token) else {
        return Err(input.failed(problems));
    };
    problems.finish(ChannelKind::Matrix {
        room_id,
        access_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::testing::{message, response};

    #[test]
    fn idempotent_put_with_reply() {
        let r = request(
            "!room:example.org",
            "syt",
            "http://127.0.0.1:1",
            &message(false),
            12,
            Some("$ev"),
            true,
        );
        assert_eq!(r.method, Method::PUT);
        assert_eq!(
            r.url,
            "http://127.0.0.1:1/_matrix/client/v3/rooms/%21room%3Aexample.org/send/m.room.message/alert-relay-12"
        );
        let b = r.json_body().expect("json");
        assert_eq!(b["m.relates_to"]["m.in_reply_to"]["event_id"], "$ev");
        assert_eq!(b["format"], "org.matrix.custom.html");
        assert_eq!(
            classify(&response(200, &[], r#"{"event_id":"$x"}"#)),
            Outcome::delivered(Some("$x".into()))
        );
        assert!(matches!(
            classify(&response(429, &[], r#"{"errcode":"M_LIMIT_EXCEEDED","retry_after_ms":1500}"#)),
            Outcome::Retry { after: Some(d), .. } if d.as_millis() == 1500
        ));
    }
}

//! `type: pushover`: `POST /1/messages.json` (form), message at most 1024 characters, title
//! 250, the first link of at most 512 characters as `url`. Emergency priority (2) sends `retry`
//! and `expire`; the answer's `receipt` becomes the delivery's provider reference as
//! `receipt:{receipt}`, which `pushover_receipts` polls for the acknowledgement.

use std::time::Duration;

use super::settings::{ChannelKind, Input, Key, Kind, Provider, Rate};
use super::{Outcome, Request, Response, classify_status};
use crate::render::Message;
use crate::render::escape;
use crate::render::text::{escape_within, truncate_chars};
use crate::secret::keys::{ConfigError, Problems, duration};

pub const DEFAULT_API: &str = "https://api.pushover.net";
/// How a receipt is marked in `deliveries.provider_ref`.
pub const RECEIPT_PREFIX: &str = "receipt:";

pub fn request(
    token: &str,
    user: &str,
    priority: i8,
    emergency: Option<&Emergency>,
    api_url: Option<&str>,
    msg: &Message,
    formatted: bool,
) -> Request {
    let message = if formatted {
        // `html=1`: Pushover's HTML subset (`<a href>`, `<b>`, …) is parsed, so the text is
        // escaped; line breaks stay line breaks.
        escape_within(&msg.plain_body(), 1024, escape::html)
    } else {
        truncate_chars(&escape::clean(&msg.plain_body()), 1024)
    };
    // Resolved messages and notices are never louder than normal. An emergency's receipt is
    // tracked (cancelled, read as an ack) through its incident or storm: a message of neither
    // (the dead-man's message) is at most high priority, or the phone would alarm until
    // `expire` with nothing able to stop it.
    let priority = if !msg.is_firing() || msg.notice.is_some() {
        priority.min(0)
    } else if msg.incident.is_none() && msg.storm.is_none() {
        priority.min(1)
    } else {
        priority
    };
    let mut fields = vec![
        ("token".to_owned(), token.to_owned()),
        ("user".to_owned(), user.to_owned()),
        // The title is never HTML.
        (
            "title".to_owned(),
            truncate_chars(&escape::one_line(&msg.title), 250),
        ),
        ("message".to_owned(), message),
        ("priority".to_owned(), priority.to_string()),
    ];
    if formatted {
        fields.push(("html".into(), "1".into()));
    }
    if let Some(e) = emergency.filter(|_| priority == 2) {
        fields.push(("retry".into(), e.retry.as_secs().to_string()));
        fields.push(("expire".into(), e.expire.as_secs().to_string()));
    }
    // Pushover takes 512 characters of URL: a longer link is skipped, not cut (a cut URL leads
    // elsewhere).
    if let Some(l) = msg.links.iter().find(|l| l.url.chars().count() <= 512) {
        fields.push(("url".into(), l.url.clone()));
        fields.push((
            "url_title".into(),
            truncate_chars(&escape::one_line(&l.name), 100),
        ));
    }
    Request::form(
        format!("{}/1/messages.json", api_url.unwrap_or(DEFAULT_API)),
        fields,
    )
}

pub fn classify(resp: &Response) -> Outcome {
    let v = resp.json();
    match classify_status(resp) {
        Outcome::Delivered { .. } => {
            let receipt = v
                .as_ref()
                .and_then(|v| v["receipt"].as_str())
                .filter(|r| valid_receipt(r))
                .map(|r| format!("{RECEIPT_PREFIX}{r}"));
            Outcome::delivered(receipt.or_else(|| {
                v.as_ref()
                    .and_then(|v| v["request"].as_str())
                    .map(str::to_owned)
            }))
        }
        Outcome::Permanent { detail, .. }
            if resp.status == 400
                && v.as_ref()
                    .is_some_and(|v| v["errors"].to_string().contains("message")) =>
        {
            Outcome::Permanent {
                reason: "format",
                detail,
            }
        }
        other => other,
    }
}

/// Receipts are 30 characters of `[A-Za-z0-9]`; anything else never goes into a URL path.
pub fn valid_receipt(r: &str) -> bool {
    !r.is_empty() && r.len() <= 64 && r.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `GET /1/receipts/{receipt}.json?token=`: its state.
pub fn receipt_url(api_url: Option<&str>, receipt: &str, token: &str) -> String {
    format!(
        "{}/1/receipts/{receipt}.json?token={token}",
        api_url.unwrap_or(DEFAULT_API)
    )
}

/// `POST /1/receipts/{receipt}/cancel.json` with the app token: the phones stop alarming.
pub fn cancel_request(api_url: Option<&str>, receipt: &str, token: &str) -> Request {
    Request::form(
        format!(
            "{}/1/receipts/{receipt}/cancel.json",
            api_url.unwrap_or(DEFAULT_API)
        ),
        vec![("token".to_owned(), token.to_owned())],
    )
}

/// What a receipt poll said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReceiptStatus {
    Waiting,
    Acknowledged { by: String, device: String },
    Expired,
}

/// Decodes a receipt answer (`status: 1` and integer flags).
pub fn receipt_status(v: &serde_json::Value) -> Option<ReceiptStatus> {
    let flag = |k: &str| v[k].as_i64().or_else(|| v[k].as_bool().map(i64::from));
    if flag("status") != Some(1) {
        return None;
    }
    if flag("acknowledged") == Some(1) {
        let s = |k: &str| v[k].as_str().unwrap_or("").trim().to_owned();
        return Some(ReceiptStatus::Acknowledged {
            by: s("acknowledged_by"),
            device: s("acknowledged_by_device"),
        });
    }
    if flag("expired") == Some(1) {
        return Some(ReceiptStatus::Expired);
    }
    Some(ReceiptStatus::Waiting)
}

/// A Pushover channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "pushover",
    keys: &[
        Key::Secret("token"),
        Key::Secret("user_key"),
        Key::Plain("priority", Kind::Scalar),
        Key::Plain("retry", Kind::Str),
        Key::Plain("expire", Kind::Str),
        Key::Plain("receipt_poll_interval", Kind::Str),
    ],
    rate: Rate::new(2.0, 5),
    refuses_api_url: None,
    from_raw,
};

/// Pushover emergency priority (2): the phone alarms every `retry` until someone acknowledges
/// or `expire` passes; the relay polls the receipt every `poll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Emergency {
    pub retry: Duration,
    pub expire: Duration,
    pub poll: Duration,
}

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    let mut problems = Problems::default();
    let token = problems.keep(input.required_secret("token"));
    let user_key = problems.keep(input.required_secret("user_key"));
    let priority = problems.keep(priority(input));
    // Which emergency keys are allowed depends on the priority: unchecked when it is wrong.
    let emergency = priority.and_then(|p| problems.keep(emergency(input, p)));
    let (Some(token), Some(user_key), Some(priority), Some(emergency)) =
        (token, user_key, priority, emergency)
    else {
        return Err(input.failed(problems));
    };
    problems.finish(ChannelKind::Pushover {
        token,
        user_key,
        priority,
        emergency,
    })
}

fn priority(input: &Input<'_>) -> Result<i8, ConfigError> {
    match input.keys.str("priority") {
        None => Ok(0),
        Some(p) => match p.parse::<i8>() {
            Ok(v) if (-2..=2).contains(&v) => Ok(v),
            _ => Err(input.invalid("priority", "use -2..2")),
        },
    }
}

/// Pushover's limits for priority 2: `retry` at least 30 s, `expire` at most 10800 s; receipts
/// may be polled at most once per 5 s.
fn emergency(input: &Input<'_>, priority: i8) -> Result<Option<Emergency>, ConfigError> {
    let mut problems = Problems::default();
    // By the parsed value, as `priority` reads it ("+2" and "02" are 2 too).
    if priority != 2 {
        for key in ["retry", "expire", "receipt_poll_interval"] {
            if input.keys.str(key).is_some() {
                problems.push(input.invalid(key, "only for priority 2 (emergency)"));
            }
        }
        return problems.finish(None);
    }
    let mut value = |key: &str, default: u64| {
        problems.keep(duration(
            &input.key(key),
            input.keys.str(key),
            Duration::from_secs(default),
        ))
    };
    let retry = value("retry", 60);
    let expire = value("expire", 3600);
    let poll = value("receipt_poll_interval", 30);
    if retry.is_some_and(|r| r < Duration::from_secs(30)) {
        problems.push(input.invalid("retry", "Pushover needs at least 30s"));
    }
    if expire.is_some_and(|e| e > Duration::from_secs(10_800) || retry.is_some_and(|r| e < r)) {
        problems.push(input.invalid(
            "expire",
            "Pushover allows at most 3h, and it must not be shorter than retry",
        ));
    }
    if poll.is_some_and(|p| p < Duration::from_secs(5)) {
        problems.push(input.invalid(
            "receipt_poll_interval",
            "Pushover allows one receipt poll per 5s at most",
        ));
    }
    let (Some(retry), Some(expire), Some(poll)) = (retry, expire, poll) else {
        return Err(input.failed(problems));
    };
    problems.finish(Some(Emergency {
        retry,
        expire,
        poll,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::RequestBody;
    use crate::channels::testing::{message, response};

    #[test]
    fn form_fields() {
        let r = request("app", "user", 1, None, None, &message(false), true);
        assert_eq!(r.url, "https://api.pushover.net/1/messages.json");
        let RequestBody::Form(f) = &r.body else {
            panic!("form")
        };
        assert!(
            f.contains(&("priority".into(), "0".into())),
            "resolved is never louder than normal"
        );
        assert!(f.contains(&("html".into(), "1".into())));
        assert_eq!(
            classify(&response(200, &[], r#"{"status":1,"request":"r1"}"#)),
            Outcome::delivered(Some("r1".into()))
        );
        assert!(matches!(
            classify(&response(
                400,
                &[],
                r#"{"user":"invalid","errors":["user identifier is invalid"],"status":0}"#
            )),
            Outcome::Permanent {
                reason: "rejected",
                ..
            }
        ));
    }

    #[test]
    fn emergency_priority_and_receipts() {
        let e = Emergency {
            retry: std::time::Duration::from_secs(60),
            expire: std::time::Duration::from_secs(3600),
            poll: std::time::Duration::from_secs(30),
        };
        let mut msg = message(true);
        let form = |msg: &Message| {
            let RequestBody::Form(f) = request("app", "u", 2, Some(&e), None, msg, false).body
            else {
                panic!("form")
            };
            f
        };
        // Without an incident or a storm (the dead-man's message) no receipt could be
        // cancelled: high priority, not an emergency.
        let f = form(&msg);
        assert!(f.contains(&("priority".into(), "1".into())), "{f:?}");
        assert!(!f.iter().any(|(k, _)| k == "retry"));
        msg.incident = Some(7);
        let form = |msg: &Message| {
            let RequestBody::Form(f) = request("app", "u", 2, Some(&e), None, msg, false).body
            else {
                panic!("form")
            };
            f
        };
        let f = form(&msg);
        assert!(f.contains(&("priority".into(), "2".into())));
        assert!(f.contains(&("retry".into(), "60".into())));
        assert!(f.contains(&("expire".into(), "3600".into())));
        // A notice about the incident does not alarm.
        msg.notice = Some("ACKNOWLEDGED".into());
        let f = form(&msg);
        assert!(f.contains(&("priority".into(), "0".into())));
        assert!(!f.iter().any(|(k, _)| k == "retry"));
        assert_eq!(
            classify(&response(
                200,
                &[],
                r#"{"status":1,"request":"r1","receipt":"rLJVa6mEGJ3rZ4wiq4PVAZTjVtf8kN"}"#
            )),
            Outcome::delivered(Some("receipt:rLJVa6mEGJ3rZ4wiq4PVAZTjVtf8kN".into()))
        );
        // A receipt that could smuggle a path is not kept.
        assert_eq!(
            classify(&response(
                200,
                &[],
                r#"{"status":1,"request":"r1","receipt":"../x"}"#
            )),
            Outcome::delivered(Some("r1".into()))
        );
        assert_eq!(
            receipt_status(
                &serde_json::json!({"status":1,"acknowledged":1,"acknowledged_at":1360019238,
                "acknowledged_by":"uQiRzpo4DXghDmr9QzzfQu27cmVRsG","acknowledged_by_device":"iphone",
                "expired":0,"expires_at":1360019290})
            ),
            Some(ReceiptStatus::Acknowledged {
                by: "uQiRzpo4DXghDmr9QzzfQu27cmVRsG".into(),
                device: "iphone".into()
            })
        );
        assert_eq!(
            receipt_status(&serde_json::json!({"status":1,"acknowledged":0,"expired":1})),
            Some(ReceiptStatus::Expired)
        );
        assert_eq!(
            receipt_status(&serde_json::json!({"status":1,"acknowledged":0,"expired":0})),
            Some(ReceiptStatus::Waiting)
        );
        assert_eq!(
            receipt_status(&serde_json::json!({"status":0,"errors":["receipt not found"]})),
            None
        );
        assert_eq!(receipt_status(&serde_json::json!("nonsense")), None);
        assert_eq!(
            receipt_url(Some("http://127.0.0.1:1"), "abc", "tok"),
            "http://127.0.0.1:1/1/receipts/abc.json?token=tok"
        );
        let c = cancel_request(None, "abc", "tok");
        assert_eq!(c.url, "https://api.pushover.net/1/receipts/abc/cancel.json");
    }
}

//! `type: pushover`: `POST /1/messages.json` (form), message at most 1024 characters, title
//! 250, the first link as `url`. Emergency priority (2) needs receipts and acknowledgement,
//! which arrive with escalation (issue #7).

use super::{Outcome, Request, Response, classify_status};
use crate::render::Message;
use crate::render::text::{escape_html, truncate_chars};

const DEFAULT_API: &str = "https://api.pushover.net";

pub fn request(
    token: &str,
    user: &str,
    priority: i8,
    api_url: Option<&str>,
    msg: &Message,
    formatted: bool,
) -> Request {
    let message = if formatted {
        // Pushover's HTML subset: escape the text, keep the line breaks.
        escape_html(&truncate_chars(&msg.plain_body(), 900))
    } else {
        truncate_chars(&msg.plain_body(), 1024)
    };
    let priority = if msg.is_firing() {
        priority
    } else {
        priority.min(0)
    };
    let mut fields = vec![
        ("token".to_owned(), token.to_owned()),
        ("user".to_owned(), user.to_owned()),
        ("title".to_owned(), truncate_chars(&msg.title, 250)),
        ("message".to_owned(), message),
        ("priority".to_owned(), priority.to_string()),
    ];
    if formatted {
        fields.push(("html".into(), "1".into()));
    }
    if let Some(l) = msg.links.first() {
        fields.push(("url".into(), truncate_chars(&l.url, 512)));
        fields.push(("url_title".into(), truncate_chars(&l.name, 100)));
    }
    Request::form(
        format!("{}/1/messages.json", api_url.unwrap_or(DEFAULT_API)),
        fields,
    )
}

pub fn classify(resp: &Response) -> Outcome {
    let v = resp.json();
    match classify_status(resp) {
        Outcome::Delivered { .. } => Outcome::delivered(
            v.as_ref()
                .and_then(|v| v["request"].as_str())
                .map(str::to_owned),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::RequestBody;
    use crate::channels::testing::{message, response};

    #[test]
    fn form_fields() {
        let r = request("app", "user", 1, None, &message(false), true);
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
}

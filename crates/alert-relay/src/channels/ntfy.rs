//! `type: ntfy`: JSON publishing (`POST /` with `topic` in the body, so titles need no header
//! encoding), message at most 4096 bytes, up to 3 `view` actions for the links.

use http::Method;
use serde_json::json;

use super::{Outcome, Request, RequestAuth, Response, classify_status};
use crate::config::NtfyAuth;
use crate::render::escape;
use crate::render::text::{truncate_bytes, truncate_chars};
use crate::render::{Message, Tone};

const DEFAULT_API: &str = "https://ntfy.sh";

pub fn request(
    topic: &str,
    auth: &NtfyAuth,
    priority: Option<u8>,
    api_url: Option<&str>,
    msg: &Message,
) -> Request {
    let priority = priority.unwrap_or(match (msg.is_firing(), msg.severity.as_deref()) {
        (false, _) => 2,
        (true, Some("critical" | "page")) => 5,
        (true, Some("warning")) => 4,
        (true, _) => 3,
    });
    let tags: Vec<String> = match msg.tone() {
        Tone::Firing => {
            let mut t = vec!["rotating_light".to_owned()];
            t.extend(msg.severity.as_deref().map(escape::one_line));
            t
        }
        Tone::Resolved => vec!["white_check_mark".to_owned()],
        Tone::Notice => vec!["information_source".to_owned()],
    };
    // The acknowledgement link first, as an `http` action: the button POSTs to the signed
    // link, which acknowledges without opening a page.
    let is_ack = |l: &&crate::render::Link| l.name.starts_with("Acknowledge #");
    let actions: Vec<_> = msg
        .links
        .iter()
        .filter(is_ack)
        .map(|l| {
            json!({ "action": "http", "label": truncate_chars(&escape::one_line(&l.name), 40), "url": l.url,
                    "method": "POST", "clear": true })
        })
        .chain(msg.links.iter().filter(|l| !is_ack(l)).map(
            |l| json!({ "action": "view", "label": truncate_chars(&escape::one_line(&l.name), 40), "url": l.url }),
        ))
        .take(3)
        .collect();
    let mut body = json!({
        "topic": topic,
        // Plain text: no `markdown` flag is sent, so ntfy renders nothing in it.
        "title": truncate_chars(&escape::one_line(&msg.title), 250),
        "message": truncate_bytes(&escape::clean(&msg.plain_body()), 4096),
        "priority": priority,
        "tags": tags,
        "actions": actions,
    });
    if let Some(l) = msg.links.first() {
        body["click"] = json!(l.url);
    }
    let auth = match auth {
        NtfyAuth::None => RequestAuth::None,
        NtfyAuth::Token(t) => RequestAuth::Bearer(t.expose().to_owned()),
        NtfyAuth::Basic { username, password } => {
            RequestAuth::Basic(username.clone(), password.expose().to_owned())
        }
    };
    Request::json(
        Method::POST,
        format!("{}/", api_url.unwrap_or(DEFAULT_API)),
        body,
    )
    .with_auth(auth)
}

pub fn classify(resp: &Response) -> Outcome {
    match classify_status(resp) {
        Outcome::Delivered { .. } => Outcome::delivered(
            resp.json()
                .and_then(|v| v["id"].as_str().map(str::to_owned)),
        ),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::testing::{message, response};
    use crate::secret::Secret;

    #[test]
    fn publish_body() {
        let msg = message(true);
        let r = request(
            "pi-alerts",
            &NtfyAuth::Token(Secret::new("tk_1")),
            None,
            Some("http://127.0.0.1:1"),
            &msg,
        );
        assert_eq!(r.url, "http://127.0.0.1:1/");
        let b = r.json_body().expect("json");
        assert_eq!(
            (b["topic"].as_str(), b["priority"].as_i64()),
            (Some("pi-alerts"), Some(5))
        );
        assert_eq!(b["actions"].as_array().map(Vec::len), Some(3));
        assert_eq!(r.auth, RequestAuth::Bearer("tk_1".into()));
        // An incident's ack link becomes the first button, an HTTP POST to the signed link.
        let mut msg = message(true);
        msg.links.push(crate::render::Link {
            name: "Acknowledge #7".into(),
            url: "https://relay.example/ack/7.1.x".into(),
        });
        let r = request("t", &NtfyAuth::None, None, None, &msg);
        let b = r.json_body().expect("json");
        assert_eq!(
            b["actions"][0],
            json!({ "action": "http", "label": "Acknowledge #7", "url": "https://relay.example/ack/7.1.x",
                    "method": "POST", "clear": true })
        );
        assert_eq!(b["actions"].as_array().map(Vec::len), Some(3));
        assert!(matches!(
            classify(&response(429, &[], r#"{"code":42901}"#)),
            Outcome::Retry {
                reason: "rate_limited",
                ..
            }
        ));
        assert_eq!(
            classify(&response(200, &[], r#"{"id":"abc"}"#)),
            Outcome::delivered(Some("abc".into()))
        );
    }
}

//! `type: ntfy`: JSON publishing (`POST /` with `topic` in the body, so titles need no header
//! encoding), message at most 4096 bytes, up to 3 `view` actions for the links.

use http::Method;
use serde_json::json;

use super::settings::{ChannelKind, Input, Key, Kind, Provider, Rate};
use super::{Outcome, Request, RequestAuth, Response, classify_status};
use crate::render::escape;
use crate::render::text::{truncate_bytes, truncate_chars};
use crate::render::{Message, Tone};
use crate::secret::Secret;
use crate::secret::keys::{ConfigError, Problems};

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

/// An ntfy channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "ntfy",
    keys: &[
        Key::Plain("topic", Kind::Str),
        Key::Plain("priority", Kind::Scalar),
        Key::Secret("token"),
        Key::Plain("username", Kind::Str),
        Key::Secret("password"),
    ],
    // ntfy.sh: 60-request burst, one more every 5 s.
    rate: Rate::new(0.2, 60),
    refuses_api_url: None,
    from_raw,
};

/// How the relay authenticates to an ntfy server.
#[derive(Debug)]
pub enum NtfyAuth {
    None,
    Token(Secret),
    Basic { username: String, password: Secret },
}

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    let mut problems = Problems::default();
    let topic = problems.keep(input.required("topic").and_then(|topic| {
        if topic
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            Ok(topic)
        } else {
            Err(input.invalid("topic", "ntfy topics use letters, digits, '-' and '_'"))
        }
    }));
    let token = problems.keep(input.secret("token"));
    let password = problems.keep(input.secret("password"));
    let auth = match (token, input.keys.str("username"), password) {
        // A secret that cannot be read is reported already; which auth is meant is not known.
        (None, _, _) | (_, _, None) => None,
        (Some(None), None, Some(None)) => Some(NtfyAuth::None),
        (Some(Some(t)), None, Some(None)) => Some(NtfyAuth::Token(t)),
        (Some(None), Some(u), Some(Some(p))) => Some(NtfyAuth::Basic {
            username: u.clone(),
            password: p,
        }),
        _ => {
            problems.push(input.invalid(
                "token",
                "set token_file, or username with password_file, or neither",
            ));
            None
        }
    };
    // Stand-in `None`: its error is recorded, so `finish` never lets it out.
    let priority = input.keys.str("priority").and_then(|p| {
        let level = priority(p);
        if level.is_none() {
            problems.push(input.invalid("priority", "use 1-5 or min, low, default, high, urgent"));
        }
        level
    });
    let (Some(topic), Some(auth)) = (topic, auth) else {
        return Err(input.failed(problems));
    };
    problems.finish(ChannelKind::Ntfy {
        topic,
        auth,
        priority,
    })
}

fn priority(p: &str) -> Option<u8> {
    match p {
        "1" | "min" => Some(1),
        "2" | "low" => Some(2),
        "3" | "default" => Some(3),
        "4" | "high" => Some(4),
        "5" | "urgent" | "max" => Some(5),
        _ => None,
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

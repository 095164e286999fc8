//! `type: telegram`: `sendMessage` with `parse_mode=HTML` (escaped, 4096 characters), the
//! resolved message as a reply to the firing one. A formatting 400 ("can't parse entities",
//! "message is too long") is retried once as plain text. `parameters.retry_after` is honoured.
//! With `ack: true` an incident's firing messages carry an inline "Acknowledge #N" button
//! (`callback_data` `ack:N`) instead of the ack link; `ack_telegram` receives the presses.

use http::Method;
use serde_json::{Value, json};

use super::settings::{ChannelKind, Input, Key, Kind, Provider, Rate};
use super::{Outcome, Request, Response, classify_status, seconds};
use crate::render::escape::{self, TELEGRAM_SIGILS};
use crate::render::links::html_anchors;
use crate::render::text::{escape_within, truncate_chars};
use crate::render::{Message, Tone};
use crate::secret::keys::{ConfigError, Problems};

pub const DEFAULT_API: &str = "https://api.telegram.org";
const TEXT_MAX: usize = 4096;

/// Where a message goes.
#[derive(Debug, Clone, Copy)]
pub struct Chat<'a> {
    pub token: &'a str,
    pub chat_id: &'a str,
    pub thread: Option<i64>,
    pub api_url: Option<&'a str>,
    /// Acknowledgement by button (`ack: true`).
    pub ack: bool,
}

/// The incident a message's Acknowledge button acknowledges, if it gets one.
fn ack_button(msg: &Message, ack: bool) -> Option<i64> {
    msg.incident
        .filter(|_| ack && msg.is_firing() && msg.notice.is_none())
}

/// HTML for `parse_mode=HTML`, or plain text for the fallback (sent without `parse_mode`, so
/// nothing in it is markup). Both keep `@` from making a mention: `@username` notifies that
/// member of the chat.
pub fn text(msg: &Message, formatted: bool) -> String {
    if !formatted {
        let plain = |s: &str| escape::no_mentions(s, TELEGRAM_SIGILS);
        let text = msg.plain_layout(plain, |l| format!("{}: {}", plain(&l.name), l.url));
        return truncate_chars(&text, TEXT_MAX);
    }
    let esc = |s: &str| escape::html_no_mentions(s, TELEGRAM_SIGILS);
    let icon = match msg.tone() {
        Tone::Firing => "🔴",
        Tone::Resolved => "✅",
        Tone::Notice => "ℹ️",
    };
    let mut links = html_anchors(&msg.links, "\n", esc);
    if !links.is_empty() {
        links.insert(0, '\n');
    }
    let head = format!("{icon} <b>{}</b>\n", escape_within(&msg.title, 512, esc));
    let budget = TEXT_MAX.saturating_sub(head.chars().count() + links.chars().count());
    format!(
        "{head}{}{links}",
        escape_within(&msg.plain_body(), budget, esc)
    )
}

pub fn request(
    chat: &Chat<'_>,
    msg: &Message,
    firing_ref: Option<&str>,
    formatted: bool,
) -> Request {
    let button = ack_button(msg, chat.ack);
    let text = if button.is_some() {
        // The button acknowledges in place; the link would open a browser for the same.
        let mut m = msg.clone();
        m.links.retain(|l| !l.name.starts_with("Acknowledge #"));
        text(&m, formatted)
    } else {
        text(msg, formatted)
    };
    let mut body = json!({
        "chat_id": chat.chat_id,
        "text": text,
        "link_preview_options": { "is_disabled": true },
    });
    if formatted {
        body["parse_mode"] = json!("HTML");
    }
    if let Some(id) = button {
        body["reply_markup"] = json!({ "inline_keyboard": [[
            { "text": format!("Acknowledge #{id}"), "callback_data": format!("ack:{id}") }
        ]] });
    }
    if let Some(t) = chat.thread {
        body["message_thread_id"] = json!(t);
    }
    if let Some(id) = firing_ref.and_then(|r| r.parse::<i64>().ok()) {
        body["reply_parameters"] = json!({ "message_id": id, "allow_sending_without_reply": true });
    }
    Request::json(
        Method::POST,
        format!(
            "{}/bot{}/sendMessage",
            chat.api_url.unwrap_or(DEFAULT_API),
            chat.token
        ),
        body,
    )
}

pub fn classify(resp: &Response) -> Outcome {
    let v: Value = resp.json().unwrap_or(Value::Null);
    let description = v["description"].as_str().unwrap_or_default().to_owned();
    if resp.status == 200 && v["ok"] == json!(true) {
        let id = v["result"]["message_id"].as_i64().map(|i| i.to_string());
        return Outcome::Delivered {
            reference: id,
            pause: None,
        };
    }
    if let Some(new_id) = v["parameters"]["migrate_to_chat_id"].as_i64() {
        return Outcome::Permanent {
            reason: "rejected",
            detail: format!("the group became a supergroup: set chat_id: {new_id}"),
        };
    }
    let hint = v["parameters"]["retry_after"].as_f64().and_then(seconds);
    match classify_status(resp) {
        Outcome::Retry {
            reason,
            after,
            detail,
        } => Outcome::Retry {
            reason,
            after: hint.or(after),
            detail,
        },
        Outcome::Permanent { detail, .. }
            if resp.status == 400
                && (description.contains("parse entities") || description.contains("too long")) =>
        {
            Outcome::Permanent {
                reason: "format",
                detail,
            }
        }
        Outcome::Delivered { .. } => Outcome::Retry {
            reason: "bad_response",
            after: None,
            detail: format!("unexpected answer: {}", resp.snippet()),
        },
        other => other,
    }
}

/// A Telegram channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "telegram",
    keys: &[
        Key::Secret("bot_token"),
        Key::Plain("chat_id", Kind::Scalar),
        Key::Plain("message_thread_id", Kind::I64),
        Key::Plain("ack", Kind::Bool),
    ],
    // At most 20 messages per minute in a group.
    rate: Rate::new(20.0 / 60.0, 3),
    refuses_api_url: None,
    from_raw,
};

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    let mut problems = Problems::default();
    let bot_token = problems.keep(input.required_secret("bot_token"));
    let chat_id = problems.keep(input.required("chat_id"));
    let (Some(bot_token), Some(chat_id)) = (bot_token, chat_id) else {
        return Err(input.failed(problems));
    };
    problems.finish(ChannelKind::Telegram {
        bot_token,
        chat_id,
        message_thread_id: input.keys.i64("message_thread_id"),
        ack: input.keys.bool("ack").unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::testing::{message, response};

    #[test]
    fn html_is_escaped_and_bounded() {
        let mut msg = message(true);
        msg.summary = "<script>&".repeat(2000);
        let t = text(&msg, true);
        assert!(t.chars().count() <= TEXT_MAX, "{}", t.chars().count());
        assert!(t.contains("&lt;script&gt;&amp;"), "{t}");
        assert!(!t.contains("<script>"));
        let chat = Chat {
            token: "123:abc",
            chat_id: "-100",
            thread: Some(7),
            api_url: Some("http://127.0.0.1:1"),
            ack: false,
        };
        let r = request(&chat, &msg, Some("55"), true);
        assert_eq!(r.url, "http://127.0.0.1:1/bot123:abc/sendMessage");
        let b = r.json_body().expect("json");
        assert_eq!(
            (b["parse_mode"].as_str(), b["message_thread_id"].as_i64()),
            (Some("HTML"), Some(7))
        );
        assert_eq!(b["reply_parameters"]["message_id"], 55);
        let plain = request(
            &Chat {
                token: "t",
                chat_id: "1",
                thread: None,
                api_url: None,
                ack: false,
            },
            &msg,
            None,
            false,
        );
        assert!(plain.json_body().expect("json").get("parse_mode").is_none());
    }

    #[test]
    fn incident_messages_get_an_ack_button_when_enabled() {
        let mut msg = message(true);
        msg.incident = Some(12);
        msg.links.push(crate::render::Link {
            name: "Acknowledge #12".into(),
            url: "https://relay.example/ack/12.1.x".into(),
        });
        let chat = Chat {
            token: "t",
            chat_id: "1",
            thread: None,
            api_url: None,
            ack: true,
        };
        let b = request(&chat, &msg, None, true)
            .json_body()
            .expect("json")
            .clone();
        assert_eq!(
            b["reply_markup"],
            json!({ "inline_keyboard": [[ { "text": "Acknowledge #12", "callback_data": "ack:12" } ]] })
        );
        let text = b["text"].as_str().expect("text");
        assert!(!text.contains("/ack/12"), "{text}");
        // Without `ack`, for notices and for resolved messages: no button, the link stays.
        let off = request(&Chat { ack: false, ..chat }, &msg, None, true);
        let off = off.json_body().expect("json");
        assert!(off.get("reply_markup").is_none());
        assert!(off["text"].as_str().expect("text").contains("/ack/12"));
        msg.notice = Some("ACKNOWLEDGED".into());
        let notice = request(&chat, &msg, None, true);
        assert!(
            notice
                .json_body()
                .expect("json")
                .get("reply_markup")
                .is_none()
        );
        let mut resolved = message(false);
        resolved.incident = Some(12);
        let r = request(&chat, &resolved, None, true);
        assert!(r.json_body().expect("json").get("reply_markup").is_none());
    }

    #[test]
    fn responses() {
        assert_eq!(
            classify(&response(
                200,
                &[],
                r#"{"ok":true,"result":{"message_id":77}}"#
            )),
            Outcome::Delivered {
                reference: Some("77".into()),
                pause: None
            }
        );
        let limited = r#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 35","parameters":{"retry_after":35}}"#;
        assert!(
            matches!(classify(&response(429, &[], limited)), Outcome::Retry { after: Some(d), .. } if d.as_secs() == 35)
        );
        let parse = r#"{"ok":false,"error_code":400,"description":"Bad Request: can't parse entities: Unsupported start tag"}"#;
        assert!(matches!(
            classify(&response(400, &[], parse)),
            Outcome::Permanent {
                reason: "format",
                ..
            }
        ));
        let migrated = r#"{"ok":false,"error_code":400,"description":"Bad Request: group chat was upgraded to a supergroup chat","parameters":{"migrate_to_chat_id":-1001}}"#;
        assert!(
            matches!(classify(&response(400, &[], migrated)), Outcome::Permanent { detail, .. } if detail.contains("-1001"))
        );
        assert!(matches!(
            classify(&response(401, &[], r#"{"ok":false}"#)),
            Outcome::Permanent { reason: "auth", .. }
        ));
    }
}

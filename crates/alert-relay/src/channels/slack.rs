//! `type: slack`: an incoming webhook (`webhook_url_file`), or the Web API with a bot token
//! (`bot_token_file` + `channel`), which returns the message's `ts` so the resolved message is
//! threaded under the firing one and the original is updated.
//!
//! Limits: section text 3000 characters, `text` 40,000, at most 50 blocks. The Web API answers
//! HTTP 200 with `{"ok": false}` on errors: `ok` decides, not the status.

use http::Method;
use serde_json::{Value, json};

use super::settings::{ChannelKind, Input, Key, Kind, Provider, Rate};
use super::{
    Attempt, Outcome, Request, RequestAuth, Response, classify_status, execute, rebase, retry_after,
};
use crate::render::escape;
use crate::render::text::{escape_within, join_within, truncate_chars};
use crate::render::{Link, Message, Tone};
use crate::secret::Secret;
use crate::secret::keys::{ConfigError, Problems};

const DEFAULT_API: &str = "https://slack.com/api";
const SECTION_MAX: usize = 3000;
const TEXT_MAX: usize = 3000;

/// Errors that mean "this message's formatting": retry as plain text.
const FORMAT_ERRORS: &[&str] = &[
    "invalid_blocks",
    "invalid_blocks_format",
    "msg_blocks_too_long",
    "msg_too_long",
    "invalid_payload",
    "too_many_attachments",
];
/// Errors retrying cannot fix.
const RETRYABLE_ERRORS: &[&str] = &[
    "ratelimited",
    "rate_limited",
    "internal_error",
    "fatal_error",
    "service_unavailable",
    "request_timeout",
    "rollup_error",
];

/// `text` (notification fallback) and Block Kit blocks. Alert text is escaped in both: Slack
/// parses `<!channel>` and `<url|label>` in a plain `text` as much as in mrkdwn blocks.
pub fn payload(msg: &Message, formatted: bool) -> Value {
    let emoji = match msg.tone() {
        Tone::Firing => ":red_circle:",
        Tone::Resolved => ":large_green_circle:",
        Tone::Notice => ":information_source:",
    };
    if !formatted {
        let text = msg.plain_layout(escape::slack, |l| {
            format!("{}: {}", escape::slack(&l.name), escape::slack(&l.url))
        });
        return json!({ "text": truncate_chars(&text, TEXT_MAX) });
    }
    // The notification's one line: the badge once, then the title without its own.
    let text = escape_within(
        &format!("{}: {}", msg.badge(), msg.title_after_badge()),
        TEXT_MAX,
        escape::slack,
    );
    let mut body = format!(
        "{emoji} *{}*\n{}",
        escape::slack(&msg.title),
        escape::slack(&msg.plain_body())
    );
    if msg.body.is_none()
        && let Some(sev) = &msg.severity
    {
        body.push_str(&format!("\n*Severity:* {}", escape::slack(sev)));
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": { "type": "mrkdwn", "text": truncate_chars(&body, SECTION_MAX) },
    })];
    if !msg.links.is_empty() {
        let links: Vec<String> = msg.links.iter().map(link).collect();
        blocks.push(json!({
            "type": "context",
            "elements": [ { "type": "mrkdwn", "text": join_within(&links, "  ·  ", SECTION_MAX) } ],
        }));
    }
    json!({ "text": text, "blocks": blocks })
}

/// `<url|label>`: the label escaped, the URL (validated by `render::links`, or the relay's
/// ack link) without the `|` or `>` that would end it early.
fn link(l: &Link) -> String {
    format!(
        "<{}|{}>",
        l.url.replace('|', "%7C").replace('>', "%3E"),
        escape::slack(&l.name)
    )
}

pub fn webhook_request(
    url: &str,
    api_url: Option<&str>,
    msg: &Message,
    formatted: bool,
) -> Request {
    Request::json(Method::POST, rebase(url, api_url), payload(msg, formatted))
}

/// `chat.postMessage`; a resolved message with a known firing `ts` goes into its thread.
pub fn post_request(
    token: &str,
    channel: &str,
    api_url: Option<&str>,
    msg: &Message,
    firing_ref: Option<&str>,
    formatted: bool,
) -> Request {
    let mut body = payload(msg, formatted);
    body["channel"] = json!(channel);
    if let Some((_, ts)) = firing_ref.and_then(|r| r.split_once(':')) {
        body["thread_ts"] = json!(ts);
    }
    Request::json(
        Method::POST,
        format!("{}/chat.postMessage", api_url.unwrap_or(DEFAULT_API)),
        body,
    )
    .with_auth(RequestAuth::Bearer(token.to_owned()))
}

/// `chat.update` of the firing message to its resolved state (best effort).
pub fn update_request(
    token: &str,
    firing_ref: &str,
    api_url: Option<&str>,
    msg: &Message,
) -> Option<Request> {
    let (channel, ts) = firing_ref.split_once(':')?;
    let mut body = payload(msg, true);
    body["channel"] = json!(channel);
    body["ts"] = json!(ts);
    Some(
        Request::json(
            Method::POST,
            format!("{}/chat.update", api_url.unwrap_or(DEFAULT_API)),
            body,
        )
        .with_auth(RequestAuth::Bearer(token.to_owned())),
    )
}

/// Incoming webhooks answer `ok` or an error word with a 4xx.
pub fn classify_webhook(resp: &Response) -> Outcome {
    let word = String::from_utf8_lossy(&resp.body).trim().to_owned();
    match classify_status(resp) {
        Outcome::Permanent { .. }
            if resp.status == 400 && FORMAT_ERRORS.iter().any(|e| word.contains(e)) =>
        {
            Outcome::Permanent {
                reason: "format",
                detail: format!("HTTP 400: {word}"),
            }
        }
        other => other,
    }
}

/// The Web API: `{"ok": true, "channel": "C1", "ts": "1.2"}` or `{"ok": false, "error": …}`.
pub fn classify_api(resp: &Response) -> Outcome {
    let base = classify_status(resp);
    if !matches!(base, Outcome::Delivered { .. }) {
        return base;
    }
    let Some(v) = resp.json() else {
        return Outcome::Retry {
            reason: "bad_response",
            after: None,
            detail: format!("not JSON: {}", resp.snippet()),
        };
    };
    if v["ok"] == json!(true) {
        let reference = match (v["channel"].as_str(), v["ts"].as_str()) {
            (Some(c), Some(ts)) => Some(format!("{c}:{ts}")),
            _ => None,
        };
        return Outcome::delivered(reference);
    }
    let error = v["error"].as_str().unwrap_or("unknown").to_owned();
    let detail = format!("ok=false: {error}");
    if RETRYABLE_ERRORS.contains(&error.as_str()) {
        Outcome::Retry {
            reason: if error.contains("rate") {
                "rate_limited"
            } else {
                "server_error"
            },
            after: retry_after(&resp.headers),
            detail,
        }
    } else if FORMAT_ERRORS.contains(&error.as_str()) {
        Outcome::Permanent {
            reason: "format",
            detail,
        }
    } else if [
        "invalid_auth",
        "not_authed",
        "token_revoked",
        "account_inactive",
        "missing_scope",
    ]
    .contains(&error.as_str())
    {
        Outcome::Permanent {
            reason: "auth",
            detail,
        }
    } else {
        Outcome::Permanent {
            reason: "rejected",
            detail,
        }
    }
}

pub async fn send(
    a: &Attempt<'_>,
    mode: &SlackMode,
    api_url: Option<&str>,
    msg: &Message,
    formatted: bool,
) -> Outcome {
    match mode {
        SlackMode::Webhook { url } => match execute(
            a.http,
            a.timeout,
            webhook_request(url.expose(), api_url, msg, formatted),
        )
        .await
        {
            Ok(r) => classify_webhook(&r),
            Err(o) => o,
        },
        SlackMode::Bot { token, channel } => {
            let req = post_request(
                token.expose(),
                channel,
                api_url,
                msg,
                a.firing_ref,
                formatted,
            );
            let outcome = match execute(a.http, a.timeout, req).await {
                Ok(r) => classify_api(&r),
                Err(o) => return o,
            };
            if matches!(outcome, Outcome::Delivered { .. })
                && let Some(update) = a
                    .firing_ref
                    .and_then(|r| update_request(token.expose(), r, api_url, msg))
            {
                // The thread reply is the notification; the edit is cosmetic and not retried.
                match execute(a.http, a.timeout, update)
                    .await
                    .map(|r| classify_api(&r))
                {
                    Ok(Outcome::Delivered { .. }) => {}
                    Ok(o) | Err(o) => {
                        tracing::info!(destination = %a.destination.id, "cannot update the firing Slack message: {o}")
                    }
                }
            }
            outcome
        }
    }
}

/// A Slack channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "slack",
    keys: &[
        Key::Secret("webhook_url"),
        Key::Secret("bot_token"),
        Key::Plain("channel", Kind::Str),
        // Alertmanager's slack_configs: `api_url_file` is the webhook URL; `api_url` too when
        // no webhook_url or bot_token is set (`ProviderKeys::apply_aliases`).
        Key::Alias("api_url", "webhook_url"),
    ],
    // "1 per second, short bursts >1 allowed".
    rate: Rate::new(1.0, 3),
    refuses_api_url: None,
    from_raw,
};

/// How a Slack channel posts: an incoming webhook, or a bot token and a channel.
#[derive(Debug)]
pub enum SlackMode {
    Webhook { url: Secret },
    Bot { token: Secret, channel: String },
}

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    let mut problems = Problems::default();
    let url = problems.keep(input.secret("webhook_url"));
    let token = problems.keep(input.secret("bot_token"));
    // The mode, and so what else the channel needs, depends on both: decided when both read.
    let (Some(url), Some(token)) = (url, token) else {
        return Err(input.failed(problems));
    };
    let mode = match (url, token) {
        (Some(url), None) => {
            if input.keys.str("channel").is_some() {
                problems.push(input.invalid(
                    "channel",
                    "an incoming webhook posts to its own channel; channel needs bot_token",
                ));
            }
            problems.keep(input.check_secret_url("webhook_url", &url));
            SlackMode::Webhook { url }
        }
        (None, Some(token)) => SlackMode::Bot {
            token,
            channel: input.required("channel")?,
        },
        _ => {
            return Err(input.invalid(
                "webhook_url_file",
                "set either webhook_url_file (incoming webhook) or bot_token_file with channel",
            ));
        }
    };
    problems.finish(ChannelKind::Slack(mode))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::testing::{message, response};

    #[test]
    fn layout_and_escaping() {
        let mut msg = message(true);
        msg.summary = "a <b> & c".into();
        let p = payload(&msg, true);
        let section = p["blocks"][0]["text"]["text"].as_str().expect("text");
        assert!(
            section.starts_with(":red_circle: *[FIRING] PiHot on pi-17:9831*\na &lt;b&gt; &amp; c"),
            "{section}"
        );
        assert!(
            p["blocks"][1]["elements"][0]["text"]
                .as_str()
                .expect("links")
                .contains("|Alertmanager>")
        );
        let plain = payload(&msg, false);
        assert!(plain.get("blocks").is_none());
        msg.summary = "x".repeat(10_000);
        let p = payload(&msg, true);
        assert!(
            p["blocks"][0]["text"]["text"]
                .as_str()
                .expect("text")
                .chars()
                .count()
                <= SECTION_MAX
        );
    }

    #[test]
    fn threads_resolved_under_firing() {
        let msg = message(false);
        let r = post_request(
            "xoxb",
            "C1",
            Some("http://x"),
            &msg,
            Some("C1:123.456"),
            true,
        );
        assert_eq!(r.url, "http://x/chat.postMessage");
        assert_eq!(r.json_body().expect("json")["thread_ts"], "123.456");
        assert_eq!(r.auth, RequestAuth::Bearer("xoxb".into()));
        let u = update_request("xoxb", "C1:123.456", None, &msg).expect("update");
        assert_eq!(u.url, "https://slack.com/api/chat.update");
    }

    #[test]
    fn api_errors() {
        assert_eq!(
            classify_api(&response(
                200,
                &[],
                r#"{"ok":true,"channel":"C1","ts":"1.2"}"#
            )),
            Outcome::delivered(Some("C1:1.2".into()))
        );
        assert!(matches!(
            classify_api(&response(
                200,
                &[],
                r#"{"ok":false,"error":"channel_not_found"}"#
            )),
            Outcome::Permanent {
                reason: "rejected",
                ..
            }
        ));
        assert!(matches!(
            classify_api(&response(
                200,
                &[],
                r#"{"ok":false,"error":"invalid_blocks"}"#
            )),
            Outcome::Permanent {
                reason: "format",
                ..
            }
        ));
        assert!(matches!(
            classify_api(&response(
                200,
                &[],
                r#"{"ok":false,"error":"invalid_auth"}"#
            )),
            Outcome::Permanent { reason: "auth", .. }
        ));
        assert!(matches!(
            classify_api(&response(
                429,
                &[("retry-after", "3")],
                r#"{"ok":false,"error":"ratelimited"}"#
            )),
            Outcome::Retry {
                reason: "rate_limited",
                after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            classify_webhook(&response(400, &[], "invalid_blocks")),
            Outcome::Permanent {
                reason: "format",
                ..
            }
        ));
        assert!(matches!(
            classify_webhook(&response(410, &[], "channel_is_archived")),
            Outcome::Permanent {
                reason: "not_found",
                ..
            }
        ));
        assert_eq!(
            classify_webhook(&response(200, &[], "ok")),
            Outcome::delivered(None)
        );
    }
}

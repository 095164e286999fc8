//! `type: discord`: a webhook with `?wait=true`, so Discord returns the message and its id; on
//! resolve the firing message is edited (`PATCH …/messages/{id}`) and a resolved message is
//! posted. Embed limits: title 256, description 4096, field name 256 / value 1024, at most
//! 25 fields, 6000 characters in all; `content` 2000. Bucket headers
//! (`X-RateLimit-Remaining: 0` + `X-RateLimit-Reset-After`) pause the destination.

use std::time::Duration;

use http::Method;
use serde_json::{Value, json};

use super::settings::{ChannelKind, Input, Key, Provider, Rate};
use super::{
    Attempt, Outcome, Request, Response, classify_status, execute, rebase, seconds, with_query,
};
use crate::render::escape;
use crate::render::text::{text_then_links, truncate_chars};
use crate::render::{Message, Tone};
use crate::secret::keys::ConfigError;

const RED: u32 = 0x00E0_3E3E;
const GREEN: u32 = 0x002E_B67D;
const BLUE: u32 = 0x0034_98DB;

/// The embed (or, `formatted == false`, the plain `content`): every text from the alert is
/// escaped for Discord markdown, links are the relay's `[label](<url>)` (plain: `<url>`), and
/// `allowed_mentions` is empty so that nothing pings whatever the text says.
pub fn payload(msg: &Message, formatted: bool) -> Value {
    if !formatted {
        return plain(msg);
    }
    let mut fields = Vec::new();
    let mut field = |name: &str, value: &str| {
        fields.push(json!({ "name": truncate_chars(&escape::discord(name), 256),
            "value": truncate_chars(&escape::discord(value), 1024), "inline": true }));
    };
    if let Some(s) = &msg.severity {
        field("Severity", s);
    }
    if let Some(i) = &msg.instance {
        field("Instance", i);
    }
    for (k, v) in msg.context.iter().take(10) {
        field(k, v);
    }
    let links: Vec<String> = msg
        .links
        .iter()
        .map(|l| format!("[{}](<{}>)", escape::discord(&l.name), l.url))
        .collect();
    let description = text_then_links(&escape::discord(&msg.plain_body()), &links, " · ", 4096);
    // 256 + 4096 + fields stay under the 6000 total: at most 12 fields of 256 + 1024 would
    // not, so field values are also bounded by what is left.
    let title = truncate_chars(&escape::discord(&msg.title), 256);
    let mut budget = 6000usize.saturating_sub(title.chars().count() + description.chars().count());
    let fields: Vec<Value> = fields
        .into_iter()
        .take_while(|f| {
            let n = f["name"].as_str().map_or(0, |s| s.chars().count())
                + f["value"].as_str().map_or(0, |s| s.chars().count());
            let fits = n <= budget;
            budget = budget.saturating_sub(n);
            fits
        })
        .collect();
    json!({
        "embeds": [{
            "title": title,
            "description": description,
            "color": match msg.tone() { Tone::Firing => RED, Tone::Resolved => GREEN, Tone::Notice => BLUE },
            "fields": fields,
        }],
        "allowed_mentions": { "parse": [] },
    })
}

/// The plain fallback: `content` only, still markdown (Discord renders it), links as `<url>`.
fn plain(msg: &Message) -> Value {
    let head = format!(
        "{}\n{}",
        escape::discord(&msg.title),
        escape::discord(&msg.plain_body())
    );
    let links: Vec<String> = msg
        .links
        .iter()
        .map(|l| format!("{}: <{}>", escape::discord(&l.name), l.url))
        .collect();
    json!({ "content": text_then_links(&head, &links, "\n", 2000), "allowed_mentions": { "parse": [] } })
}

pub fn post_request(url: &str, api_url: Option<&str>, msg: &Message, formatted: bool) -> Request {
    Request::json(
        Method::POST,
        with_query(&rebase(url, api_url), "wait=true"),
        payload(msg, formatted),
    )
}

pub fn edit_request(url: &str, api_url: Option<&str>, message_id: &str, msg: &Message) -> Request {
    let base = rebase(url, api_url);
    let (path, query) = base
        .split_once('?')
        .map_or((base.as_str(), None), |(p, q)| (p, Some(q)));
    let mut u = format!("{}/messages/{message_id}", path.trim_end_matches('/'));
    if let Some(q) = query {
        u = format!("{u}?{q}");
    }
    Request::json(Method::PATCH, u, payload(msg, true))
}

pub fn classify(resp: &Response) -> Outcome {
    let v = resp.json();
    match classify_status(resp) {
        Outcome::Delivered { .. } => {
            let reference = v.as_ref().and_then(|v| v["id"].as_str()).map(str::to_owned);
            let remaining = resp
                .headers
                .get("x-ratelimit-remaining")
                .and_then(|h| h.to_str().ok());
            let pause = match remaining {
                Some("0") => resp
                    .headers
                    .get("x-ratelimit-reset-after")
                    .and_then(|h| h.to_str().ok())
                    .and_then(|s| s.parse::<f64>().ok())
                    .and_then(seconds),
                _ => None,
            };
            Outcome::Delivered { reference, pause }
        }
        Outcome::Retry {
            reason,
            after,
            detail,
        } => {
            // The body's float `retry_after` is more precise than the header.
            let body_hint = v
                .as_ref()
                .and_then(|v| v["retry_after"].as_f64())
                .and_then(seconds);
            Outcome::Retry {
                reason,
                after: body_hint.or(after).map(|d| d.max(Duration::from_millis(1))),
                detail,
            }
        }
        Outcome::Permanent { detail, .. } if resp.status == 400 => Outcome::Permanent {
            reason: "format",
            detail,
        },
        other => other,
    }
}

pub async fn send(
    a: &Attempt<'_>,
    url: &str,
    api_url: Option<&str>,
    msg: &Message,
    formatted: bool,
) -> Outcome {
    let outcome = match execute(
        a.http,
        a.timeout,
        post_request(url, api_url, msg, formatted),
    )
    .await
    {
        Ok(r) => classify(&r),
        Err(o) => return o,
    };
    if matches!(outcome, Outcome::Delivered { .. })
        && let Some(id) = a.firing_ref
    {
        match execute(a.http, a.timeout, edit_request(url, api_url, id, msg))
            .await
            .map(|r| classify(&r))
        {
            Ok(Outcome::Delivered { .. }) => {}
            Ok(o) | Err(o) => {
                tracing::info!(destination = %a.destination.id, "cannot edit the firing Discord message: {o}")
            }
        }
    }
    outcome
}

/// A Discord channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "discord",
    keys: &[Key::Secret("webhook_url")],
    // Per-webhook buckets are learnt from X-RateLimit-* headers; this only smooths bursts.
    rate: Rate::new(2.0, 5),
    refuses_api_url: None,
    from_raw,
};

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    Ok(ChannelKind::Discord {
        webhook_url: input.url_secret("webhook_url")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::testing::{message, response};

    #[test]
    fn embed_within_limits() {
        let mut msg = message(true);
        msg.summary = "y".repeat(20_000);
        msg.title = "t".repeat(1000);
        let p = payload(&msg, true);
        let e = &p["embeds"][0];
        assert_eq!(e["title"].as_str().expect("t").chars().count(), 256);
        assert!(e["description"].as_str().expect("d").chars().count() <= 4096);
        assert_eq!(e["color"], RED);
        let plain = payload(&msg, false);
        assert!(plain["content"].as_str().expect("c").chars().count() <= 2000);
        let r = post_request(
            "https://discord.com/api/webhooks/1/tok",
            Some("http://127.0.0.1:1"),
            &msg,
            true,
        );
        assert_eq!(r.url, "http://127.0.0.1:1/api/webhooks/1/tok?wait=true");
        let e = edit_request("https://discord.com/api/webhooks/1/tok", None, "99", &msg);
        assert_eq!(
            (e.method, e.url.as_str()),
            (
                Method::PATCH,
                "https://discord.com/api/webhooks/1/tok/messages/99"
            )
        );
    }

    #[test]
    fn responses() {
        let ok = response(
            200,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset-after", "1.5"),
            ],
            r#"{"id":"42"}"#,
        );
        assert_eq!(
            classify(&ok),
            Outcome::Delivered {
                reference: Some("42".into()),
                pause: Some(Duration::from_millis(1500))
            }
        );
        let limited = response(
            429,
            &[("retry-after", "2")],
            r#"{"message":"You are being rate limited.","retry_after":0.25,"global":false}"#,
        );
        assert!(
            matches!(classify(&limited), Outcome::Retry { after: Some(d), .. } if d == Duration::from_millis(250))
        );
        assert!(matches!(
            classify(&response(400, &[], r#"{"embeds":["0"]}"#)),
            Outcome::Permanent {
                reason: "format",
                ..
            }
        ));
        assert!(matches!(
            classify(&response(404, &[], r#"{"message":"Unknown Webhook"}"#)),
            Outcome::Permanent {
                reason: "not_found",
                ..
            }
        ));
    }
}

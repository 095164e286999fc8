//! `type: teams`: a Workflows (Power Automate) URL with an Adaptive Card 1.2 in the envelope
//! Alertmanager's `msteamsv2` uses. Workflows answer 202 with no body and no message id, so
//! resolved messages are new cards. The fallback card is one plain TextBlock.

use http::Method;
use serde_json::{Value, json};

use super::settings::{ChannelKind, Input, Key, Provider, Rate};
use super::{Outcome, Request, Response, classify_status, rebase};
use crate::render::escape;
use crate::render::text::truncate_chars;
use crate::render::{Message, Tone};
use crate::secret::keys::ConfigError;

/// The card. `TextBlock` and `Fact` texts render a markdown subset, so alert text is escaped
/// for it; links are `Action.OpenUrl` buttons (and plain lines in the fallback).
pub fn card(msg: &Message, formatted: bool) -> Value {
    let body = if formatted {
        let mut facts = Vec::new();
        let mut fact = |title: &str, value: &str| {
            facts.push(json!({ "title": escape::teams(title), "value": escape::teams(value) }));
        };
        if let Some(s) = &msg.severity {
            fact("Severity", s);
        }
        if let Some(i) = &msg.instance {
            fact("Instance", i);
        }
        for (k, v) in &msg.context {
            fact(k, v);
        }
        json!([
            { "type": "TextBlock", "text": truncate_chars(&escape::teams(&msg.title), 500), "weight": "Bolder", "size": "Medium",
              "color": match msg.tone() { Tone::Firing => "Attention", Tone::Resolved => "Good", Tone::Notice => "Accent" }, "wrap": true },
            { "type": "TextBlock", "text": truncate_chars(&escape::teams(&msg.plain_body()), 8000), "wrap": true },
            { "type": "FactSet", "facts": facts },
        ])
    } else {
        let text = msg.plain_layout(escape::teams, |l| {
            format!("{}: {}", escape::teams(&l.name), l.url)
        });
        json!([{ "type": "TextBlock", "text": truncate_chars(&text, 8000), "wrap": true }])
    };
    let actions: Vec<Value> = msg
        .links
        .iter()
        .take(5)
        .map(|l| json!({ "type": "Action.OpenUrl", "title": l.name, "url": l.url }))
        .collect();
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.2",
                "body": body,
                "actions": actions,
            },
        }],
    })
}

pub fn request(url: &str, api_url: Option<&str>, msg: &Message, formatted: bool) -> Request {
    Request::json(Method::POST, rebase(url, api_url), card(msg, formatted))
}

pub fn classify(resp: &Response) -> Outcome {
    match classify_status(resp) {
        Outcome::Permanent { detail, .. } if resp.status == 400 => Outcome::Permanent {
            reason: "format",
            detail,
        },
        other => other,
    }
}

/// A Teams channel's keys, default rate and validation.
pub const PROVIDER: Provider = Provider {
    name: "teams",
    // Alertmanager's msteams_configs call the flow's URL `webhook_url`.
    keys: &[Key::Secret("url"), Key::Alias("webhook_url", "url")],
    rate: Rate::new(1.0, 4),
    refuses_api_url: None,
    from_raw,
};

fn from_raw(input: &Input<'_>) -> Result<ChannelKind, ConfigError> {
    Ok(ChannelKind::Teams {
        url: input.url_secret("url")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::testing::{message, response};

    #[test]
    fn adaptive_card_envelope() {
        let c = card(&message(true), true);
        assert_eq!(
            c["attachments"][0]["contentType"],
            "application/vnd.microsoft.card.adaptive"
        );
        assert_eq!(c["attachments"][0]["content"]["version"], "1.2");
        assert_eq!(
            c["attachments"][0]["content"]["body"][0]["color"],
            "Attention"
        );
        assert_eq!(
            c["attachments"][0]["content"]["actions"][0]["type"],
            "Action.OpenUrl"
        );
        assert_eq!(classify(&response(202, &[], "")), Outcome::delivered(None));
        assert!(matches!(
            classify(&response(400, &[], "bad card")),
            Outcome::Permanent {
                reason: "format",
                ..
            }
        ));
    }
}

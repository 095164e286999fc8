//! Alert text cannot forge messages, through the binary: an Alertmanager webhook whose labels
//! and annotations carry Slack mentions, links and Discord markdown, and a `runbook_url` made
//! to break out of its link, reaches a fake Slack (whose blocks are rejected, so the plain
//! fallback goes out too) and a fake Discord (whose embed is rejected likewise) with nothing
//! live in it; and the name given to an API ack reaches Slack's notice escaped.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{FAST_DELIVERY, Fake, Received, Relay, Reply, client, tempdir, webhook};

const AUTH: &str = "auth: { bearer_token: s3cret }\nstorage: { sqlite: relay.db }\n";
const SLACK: &str = "/slack/services/T/B/X";
const DISCORD: &str = "/discord/api/webhooks/1/tok";
const ATTACK: &str = "<!channel> <!here> <@U123> <!subteam^S1> <http://phish|trusted> [click me](http://phish.example)";
const BREAKOUT: &str = "http://x) [Acknowledge #1](http://phish.example";

/// What Slack would read as a mention or a link (a markdown link is plain text there).
const SLACK_LIVE: &[&str] = &[
    "<!channel>",
    "<!here>",
    "<@U123>",
    "<!subteam",
    "<http://phish",
    "Acknowledge #1",
];
/// What Discord would read as a mention, a masked link or a fake button.
const DISCORD_LIVE: &[&str] = &[
    "<@U123>",
    "<!channel>",
    "[click me](",
    "](http://phish",
    "Acknowledge #1",
];

fn config(fake: &Fake) -> String {
    let f = fake.url();
    format!(
        "{AUTH}{FAST_DELIVERY}channels:\n\
         \x20 sl: {{ type: slack, webhook_url: 'https://hooks.slack.com/services/T/B/X', api_url: '{f}/slack' }}\n\
         \x20 disc: {{ type: discord, webhook_url: 'https://discord.com/api/webhooks/1/tok', api_url: '{f}/discord' }}\n\
         policies:\n  p: {{ steps: [ {{ notify: [sl, disc] }} ] }}\nroutes: [ {{ policy: p }} ]\n"
    )
}

/// A fake Slack that rejects the first `rejected` messages' blocks, and a fake Discord that
/// rejects the first embed: each message goes out formatted, then as plain text.
async fn fakes(rejected: usize) -> Fake {
    let fake = Fake::start(Reply::new(200, r#"{"id":"42"}"#)).await;
    fake.on(SLACK, Reply::new(200, "ok"));
    fake.script_on(
        SLACK,
        (0..rejected).map(|_| Reply::new(400, "invalid_blocks")),
    );
    fake.script_on(DISCORD, [Reply::new(400, r#"{"embeds":["0"]}"#)]);
    fake
}

fn hostile_webhook() -> String {
    json!({
        "version": "4", "groupKey": "{}:{alertname=\"PiHot\"}", "truncatedAlerts": 0,
        "status": "firing", "receiver": "relay", "groupLabels": { "alertname": "PiHot" },
        "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://alertmanager:9093",
        "alerts": [{
            "status": "firing",
            "labels": { "alertname": "PiHot", "instance": "<!channel>", "severity": "critical",
                        "site": ATTACK, "job": "<@U123>" },
            "annotations": { "summary": ATTACK, "description": format!("{ATTACK} again"),
                             "runbook_url": BREAKOUT },
            "startsAt": "2026-03-01T12:30:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus:9090/graph", "fingerprint": "00000000000f0001"
        }]
    })
    .to_string()
}

/// Every string in a request's JSON body.
fn texts(r: &Received) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::String(s) => out.push(s.clone()),
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            Value::Object(o) => o.values().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&r.json(), &mut out);
    out
}

fn assert_inert(r: &Received, forms: &[&str]) {
    for t in texts(r) {
        let live: Vec<&&str> = forms.iter().filter(|l| t.contains(**l)).collect();
        assert!(live.is_empty(), "{live:?} live in {t:?}");
    }
}

#[tokio::test]
async fn hostile_alert_text_is_inert_in_slack_and_discord_formatted_and_plain() {
    let fake = fakes(1).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake));
    relay.fire(hostile_webhook()).await;
    let slack = fake.wait_on(SLACK, 2, Duration::from_secs(10)).await;
    let discord = fake.wait_on(DISCORD, 2, Duration::from_secs(10)).await;
    assert!(slack[0].json().get("blocks").is_some());
    assert!(
        slack[1].json().get("blocks").is_none(),
        "the plain fallback"
    );
    assert!(discord[0].json().get("embeds").is_some());
    assert!(
        discord[1].json().get("embeds").is_none(),
        "the plain fallback"
    );
    slack.iter().for_each(|r| assert_inert(r, SLACK_LIVE));
    discord.iter().for_each(|r| assert_inert(r, DISCORD_LIVE));
    // Shown, not acted on: the text is there, escaped.
    let plain = slack[1].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        plain.contains("&lt;!channel&gt; &lt;!here&gt; &lt;@U123&gt;"),
        "{plain}"
    );
    assert!(!plain.contains('<'), "{plain}");
    let content = discord[1].json()["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        content.contains(r"\[click me\]\(http\://phish.example\)"),
        "{content}"
    );
    // The runbook_url could not be made safe: it is not shown at all.
    assert!(!content.contains("Runbook"), "{content}");
    assert!(
        content.contains("Source: <http://prometheus:9090/graph>"),
        "{content}"
    );
    assert_eq!(
        discord[1].json()["allowed_mentions"],
        json!({ "parse": [] })
    );
    relay
        .wait_metric(
            r#"alert_relay_notifications_plain_fallback_total{channel="sl",integration="slack",destination="sl"}"#,
            1.0,
        )
        .await;
}

#[tokio::test]
async fn the_name_given_to_an_api_ack_reaches_slack_escaped() {
    let fake = Fake::start(Reply::new(200, "ok")).await;
    // The firing message goes through; the ack notice's blocks are rejected.
    fake.script_on(
        SLACK,
        [Reply::new(200, "ok"), Reply::new(400, "invalid_blocks")],
    );
    let dir = tempdir();
    let relay = Relay::start(
        dir.path(),
        &format!(
            "{AUTH}{FAST_DELIVERY}channels:\n  sl: {{ type: slack, webhook_url: 'https://hooks.slack.com/services/T/B/X', api_url: '{}/slack' }}\n\
             policies:\n  p: {{ steps: [ {{ notify: [sl] }} ] }}\nroutes: [ {{ policy: p }} ]\n",
            fake.url()
        ),
    );
    relay
        .fire(webhook(&[("00000000000f0002", "firing")], ""))
        .await;
    fake.wait_on(SLACK, 1, Duration::from_secs(10)).await;
    let r = client()
        .post(relay.url("/api/v1/incidents/1/ack"))
        .bearer_auth("s3cret")
        .json(&json!({ "by": "<!channel> <http://phish|trusted>" }))
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), 200);
    let got = fake.wait_on(SLACK, 3, Duration::from_secs(10)).await;
    for notice in &got[1..] {
        assert_inert(notice, SLACK_LIVE);
        let all = texts(notice).join("\n");
        assert!(
            all.contains("acknowledged by &lt;!channel&gt; &lt;http://phish|trusted&gt;"),
            "{all}"
        );
    }
    assert!(got[2].json().get("blocks").is_none(), "the plain fallback");
}

//! Credentials never follow a redirect: every provider that carries a secret (a header, basic
//! auth, a signature, a token in its URL or body) is answered 307 or 302 towards a second
//! loopback host, which must receive nothing; the attempt is dead-lettered as `redirect`.

use std::time::Duration;

use crate::support::{Fake, Relay, Reply, every_provider, tempdir, webhook};

/// Channel name and the path prefix its requests take on the fake.
const CHANNELS: [(&str, &str); 10] = [
    ("hook", "/hook"),
    ("sl-hook", "/slackhook"),
    ("sl-bot", "/slackapi"),
    ("disc", "/discord"),
    ("tg", "/telegram"),
    ("nt", "/ntfy"),
    ("sms", "/twilio"),
    ("tm", "/teams"),
    ("mx", "/matrix"),
    ("po", "/pushover"),
];

/// The type of each channel of `every_provider`.
fn integration_of(name: &str) -> &'static str {
    match name {
        "hook" => "webhook",
        "sl-hook" | "sl-bot" => "slack",
        "disc" => "discord",
        "tg" => "telegram",
        "nt" => "ntfy",
        "sms" => "twilio",
        "tm" => "teams",
        "mx" => "matrix",
        _ => "pushover",
    }
}

#[tokio::test]
async fn no_provider_request_follows_a_redirect_to_another_host() {
    let thief = Fake::start_on([127, 0, 0, 2], Reply::new(200, r#"{"ok":true}"#)).await;
    let steal = format!("http://{}/steal?keep=1", thief.addr);
    let provider = Fake::start(Reply::new(307, "").header("location", &steal)).await;
    // Half the providers answer 302 (which a following client turns into a GET), half 307
    // (which a following client repeats with the body).
    for (_, prefix) in CHANNELS.iter().skip(5) {
        provider.on(prefix, Reply::new(302, "").header("location", &steal));
    }
    let f = provider.url();
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &every_provider(&f));
    relay
        .fire(webhook(&[("0123456789abcdef", "firing")], ""))
        .await;
    for (name, _) in CHANNELS {
        // The metric labels: the channel's type, and a Twilio number by its place in `to`.
        let integration = integration_of(name);
        let destination = if name == "sms" { "sms/1" } else { name };
        relay
            .wait_metric(
                &format!(
                    r#"alert_relay_notifications_dead_lettered_total{{channel="{name}",integration="{integration}",destination="{destination}",reason="redirect"}}"#
                ),
                1.0,
            )
            .await;
    }
    // A follower would have reached the thief by now; give a late one a moment anyway.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        thief.received().is_empty(),
        "the second host was reached: {:?}",
        thief.received()
    );
    let got = provider.received();
    for (name, prefix) in CHANNELS {
        let n = got.iter().filter(|r| r.path.starts_with(prefix)).count();
        assert_eq!(n, 1, "{name}: a redirect is permanent, tried once");
    }
    let log = relay.log.lock().expect("log").join("\n");
    assert!(
        log.contains(&format!("redirects to http://{}", thief.addr)),
        "the log names the target's origin:\n{log}"
    );
    for secret in [
        "/steal", "keep=1", "xoxb-1", "twtok", "tk_1", "sig=s", "123:abc",
    ] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

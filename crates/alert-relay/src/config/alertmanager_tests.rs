//! Alertmanager's spellings in the relay's configuration: channel key names beside ours,
//! `send_resolved`, and `matchers:` on the dead-man's switch.

use super::*;

const BASE: &str = "storage: { sqlite: relay.db }\npolicies: { p: { steps: [{notify: [c]}] } }\nroutes: [{policy: p}]\n";

fn secrets() -> MapSecrets {
    let mut s = MapSecrets::default();
    s.files.insert(
        "/etc/alert-relay/slack".into(),
        "https://hooks.slack.com/services/T/B/X".into(),
    );
    s.files
        .insert("/etc/alert-relay/smtp".into(), "mail-pass".into());
    s.files.insert(
        "/etc/alert-relay/teams".into(),
        "https://prod.westeurope.logic.azure.com/workflows/1".into(),
    );
    s
}

fn channel(yaml: &str) -> Result<Arc<ChannelConfig>, String> {
    let text = format!("{BASE}channels: {{ c: {yaml} }}\n");
    parse(&text, Path::new("/etc/alert-relay"), &secrets())
        .map(|mut c| c.channels.remove("c").expect("channel c"))
        .map_err(|e| e.to_string())
}

fn slack_url(c: &ChannelConfig) -> &str {
    match &c.kind {
        ChannelKind::Slack(SlackMode::Webhook { url }) => url.expose(),
        other => panic!("not a slack webhook: {other:?}"),
    }
}

#[test]
fn slack_takes_api_url_and_api_url_file() {
    let c = channel("{ type: slack, api_url_file: slack }").expect("valid");
    assert_eq!(slack_url(&c), "https://hooks.slack.com/services/T/B/X");
    assert_eq!(c.api_url, None);
    // Alone, api_url is Alertmanager's: the webhook URL, a secret, and no base URL.
    let c = channel("{ type: slack, api_url: 'https://hooks.slack.com/services/T/B/Y' }")
        .expect("valid");
    assert_eq!(slack_url(&c), "https://hooks.slack.com/services/T/B/Y");
    assert_eq!(c.api_url, None);
    // Beside webhook_url, api_url keeps the relay's meaning: the base URL (tests, proxies).
    let c = channel(
        "{ type: slack, webhook_url: 'https://hooks.slack.com/services/T/B/Z', api_url: 'http://127.0.0.1:9/s' }",
    )
    .expect("valid");
    assert_eq!(slack_url(&c), "https://hooks.slack.com/services/T/B/Z");
    assert_eq!(c.api_url.as_deref(), Some("http://127.0.0.1:9/s"));
    let c =
        channel("{ type: slack, bot_token: xoxb-1, channel: C1, api_url: 'http://127.0.0.1:9/s' }")
            .expect("valid");
    assert!(matches!(c.kind, ChannelKind::Slack(SlackMode::Bot { .. })));
    assert_eq!(c.api_url.as_deref(), Some("http://127.0.0.1:9/s"));
}

#[test]
fn errors_name_the_key_as_written() {
    let e = channel("{ type: slack, api_url_file: /nope }").expect_err("unreadable");
    assert!(
        e.starts_with("channels.c.api_url_file: cannot read /nope"),
        "{e}"
    );
    let e = channel("{ type: slack, api_url: 'ftp://x' }").expect_err("no http");
    assert!(e.starts_with("channels.c.api_url: "), "{e}");
    let e = channel("{ type: teams, webhook_url_file: /nope }").expect_err("unreadable");
    assert!(
        e.starts_with("channels.c.webhook_url_file: cannot read"),
        "{e}"
    );
    let e = channel(
        "{ type: email, smarthost: 'mail:587', from: a@x.org, to: [b@x.org], auth_username: a }",
    )
    .expect_err("no password");
    assert!(e.starts_with("channels.c.auth_username: "), "{e}");
}

#[test]
fn an_alertmanager_name_with_ours_names_both() {
    for (yaml, key, both) in [
        (
            "{ type: slack, api_url_file: slack, webhook_url_file: slack }",
            "channels.c.api_url_file",
            "api_url_file and webhook_url_file",
        ),
        (
            "{ type: slack, api_url_file: slack, webhook_url: 'https://hooks.slack.com/services/T/B/X' }",
            "channels.c.api_url_file",
            "api_url_file and webhook_url,",
        ),
        (
            "{ type: teams, webhook_url_file: teams, url: 'https://x.example/1' }",
            "channels.c.webhook_url_file",
            "webhook_url_file and url",
        ),
        (
            "{ type: email, smarthost: 'mail:587', from: a@x.org, to: [b@x.org], auth_username: a, username: a, password_file: smtp }",
            "channels.c.auth_username",
            "auth_username and username",
        ),
        (
            "{ type: email, smarthost: 'mail:587', from: a@x.org, to: [b@x.org], username: a, auth_password_file: smtp, password: p }",
            "channels.c.auth_password_file",
            "auth_password_file and password,",
        ),
        (
            "{ type: email, smarthost: 'mail:587', from: a@x.org, to: [b@x.org], require_tls: true, tls: starttls }",
            "channels.c.require_tls",
            "require_tls and tls",
        ),
    ] {
        let e = channel(yaml).expect_err(yaml);
        assert!(e.starts_with(&format!("{key}: ")), "{yaml}: {e}");
        assert!(e.contains(both) && e.contains("not both"), "{yaml}: {e}");
    }
}

#[test]
fn teams_and_email_take_alertmanager_names() {
    let c = channel("{ type: teams, webhook_url_file: teams }").expect("valid");
    let ChannelKind::Teams { url } = &c.kind else {
        panic!("not teams")
    };
    assert_eq!(
        url.expose(),
        "https://prod.westeurope.logic.azure.com/workflows/1"
    );
    let email = |extra: &str| {
        channel(&format!(
            "{{ type: email, smarthost: 'mail.example.org:{extra}, from: a@x.org, to: [b@x.org] }}"
        ))
        .map(|c| match &c.kind {
            ChannelKind::Email(e) => (
                e.tls,
                e.username.clone(),
                e.password.as_ref().map(|p| p.expose().to_owned()),
            ),
            other => panic!("not email: {other:?}"),
        })
    };
    assert_eq!(
        email("587', auth_username: alerts, auth_password_file: smtp").expect("valid"),
        (
            EmailTls::Starttls,
            Some("alerts".into()),
            Some("mail-pass".into())
        )
    );
    assert_eq!(
        email("587', auth_username: alerts, auth_password: pw, require_tls: true").expect("valid"),
        (EmailTls::Starttls, Some("alerts".into()), Some("pw".into()))
    );
    assert_eq!(
        email("25', require_tls: false").expect("valid").0,
        EmailTls::None
    );
    assert_eq!(
        email("465', require_tls: true").expect("valid").0,
        EmailTls::Implicit
    );
}

#[test]
fn unknown_and_foreign_keys_stay_errors() {
    let e =
        channel("{ type: slack, api_url_file: slack, icon_emoji: ':fire:' }").expect_err("unknown");
    assert!(e.contains("icon_emoji"), "{e}");
    // An Alertmanager name of another integration is not a key of this channel.
    let e = channel("{ type: slack, api_url_file: slack, auth_username: a }").expect_err("foreign");
    assert!(
        e.contains("channels.c.auth_username: not a key of a slack channel"),
        "{e}"
    );
    let e = channel("{ type: discord, webhook_url: 'https://discord.com/api/webhooks/1/x', api_url_file: slack }")
        .expect_err("foreign");
    assert!(
        e.contains("channels.c.api_url_file: not a key of a discord channel"),
        "{e}"
    );
}

#[test]
fn send_resolved_per_channel_and_per_number() {
    let c = channel("{ type: webhook, url: 'http://x', send_resolved: false }").expect("valid");
    assert!(!c.destinations()[0].sends_resolved());
    let c = channel("{ type: webhook, url: 'http://x' }").expect("valid");
    assert!(
        c.destinations()[0].sends_resolved(),
        "default true, as in Alertmanager"
    );
    let sms = "{ type: twilio, account_sid: AC1, auth_token: t, from: '+15005550006', to: [+447700900123, '+447700900124'], send_resolved: { +447700900124: false } }";
    let c = channel(sms).expect("valid");
    let quiet: Vec<(String, bool)> = c
        .destinations()
        .iter()
        .map(|d| (d.id.clone(), d.sends_resolved()))
        .collect();
    assert_eq!(
        quiet,
        [
            ("c/+447700900123".to_owned(), true),
            ("c/+447700900124".to_owned(), false)
        ]
    );
    let text = format!("{BASE}channels: {{ c: {sms} }}\n");
    let config = parse(&text, Path::new("/etc/alert-relay"), &secrets()).expect("valid");
    assert_eq!(
        config.no_resolved(),
        BTreeSet::from(["c/+447700900124".to_owned()])
    );
    let e = channel(&sms.replace("{ +447700900124: false }", "{ '+447700900999': false }"))
        .expect_err("not a recipient");
    assert!(
        e.starts_with("channels.c.send_resolved.+447700900999: not a recipient of this channel"),
        "{e}"
    );
    // On a channel that is one destination, a per-recipient flag could not be honoured.
    let e = channel(
        "{ type: email, smarthost: 'mail:587', from: a@x.org, to: [b@x.org], send_resolved: { b@x.org: false } }",
    )
    .expect_err("email recipient");
    assert!(
        e.starts_with("channels.c.send_resolved.b@x.org: this channel is one destination"),
        "{e}"
    );
    let e = channel("{ type: webhook, url: 'http://x', send_resolved: maybe }").expect_err("bool");
    assert!(e.contains("send_resolved") || e.contains("bool"), "{e}");
}

#[test]
fn storm_rules_take_matchers() {
    let text = format!(
        "{BASE}channels: {{ c: {{ type: webhook, url: 'http://x' }} }}\n"
    )
    .replace(
        "p: { steps: [{notify: [c]}] }",
        "p: { steps: [{notify: [c]}], storm: { window: 2m, threshold: 5, matchers: ['{alertname=~\"NodeDown|UpsOnBattery\"}', 'site!=lab'] } }",
    );
    let c = parse(&text, Path::new("/etc/alert-relay"), &secrets()).expect("valid");
    let rule = c.policies["p"].storm.clone().expect("storm");
    let shown: Vec<String> = rule.matchers.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [r#"alertname=~"NodeDown|UpsOnBattery""#, r#"site!="lab""#]
    );
    let e = parse(
        &text.replace("'site!=lab'", "'site!~('"),
        Path::new("/etc/alert-relay"),
        &secrets(),
    )
    .expect_err("bad regex")
    .to_string();
    assert!(e.starts_with("policies.p.storm.matchers[1]: "), "{e}");
    let e = parse(
        &text.replace("threshold: 5,", "threshold: 5, match: { site: x },"),
        Path::new("/etc/alert-relay"),
        &secrets(),
    )
    .expect_err("both")
    .to_string();
    assert!(
        e.contains("policies.p.storm.match or policies.p.storm.matchers, not both"),
        "{e}"
    );
}

#[test]
fn deadman_takes_matchers() {
    let text = format!(
        "{BASE}channels: {{ c: {{ type: webhook, url: 'http://x' }} }}\ndeadman: {{ notify: [c], matchers: ['{{alertname=\"Watchdog\", prometheus=~\"mon/.*\"}}'] }}\n"
    );
    let c = parse(&text, Path::new("/etc/alert-relay"), &secrets()).expect("valid");
    let d = c.deadman.expect("deadman");
    let labels = |pairs: &[(&str, &str)]| -> crate::payload::Labels {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert!(d.matches(&labels(&[
        ("alertname", "Watchdog"),
        ("prometheus", "mon/k8s")
    ])));
    assert!(!d.matches(&labels(&[("alertname", "Watchdog")])));
    let e = parse(
        &text.replace(
            "notify: [c],",
            "notify: [c], match: { alertname: Watchdog },",
        ),
        Path::new("/etc/alert-relay"),
        &secrets(),
    )
    .expect_err("both")
    .to_string();
    assert!(
        e.contains("deadman.match or deadman.matchers, not both"),
        "{e}"
    );
}

#[test]
fn list_entries_stay_plain_scalars() {
    let c = channel(
        "{ type: twilio, account_sid: AC1, auth_token: t, from: '+15005550006', to: [+447700900123, '+447700900124'] }",
    );
    let ids: Vec<String> = c
        .expect("valid")
        .destinations()
        .iter()
        .map(|d| d.id.clone())
        .collect();
    assert_eq!(ids, ["c/+447700900123", "c/+447700900124"]);
}

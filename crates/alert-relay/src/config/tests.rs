use super::*;

fn secrets() -> MapSecrets {
    let mut s = MapSecrets::default();
    s.files
        .insert("/etc/alert-relay/token".into(), "s3cret\n".into());
    s.files.insert(
        "/etc/alert-relay/slack".into(),
        "https://hooks.slack.com/services/T/B/X".into(),
    );
    s.files
        .insert("/etc/alert-relay/twilio".into(), "tw-token".into());
    s.env.insert("TG_TOKEN".into(), "123:abc".into());
    s
}

fn parse_ok(yaml: &str) -> Config {
    match parse(yaml, Path::new("/etc/alert-relay"), &secrets()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    }
}

fn parse_err(yaml: &str) -> String {
    match parse(yaml, Path::new("/etc/alert-relay"), &secrets()) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

/// The example from the issue, extended only where the issue says "extend".
const ISSUE_EXAMPLE: &str = r#"
listen: 127.0.0.1:9097
public_url: https://relay.example.org
auth: { bearer_token_file: /etc/alert-relay/token }
storage: { sqlite: /var/lib/alert-relay/relay.db }
channels:
  ops-slack:   { type: slack, webhook_url_file: /etc/alert-relay/slack }
  oncall-sms:  { type: twilio, account_sid: AC123, auth_token_file: twilio, from: "+15005550006", to: ["+447700900123", "+447700900124"] }
  ops-telegram: { type: telegram, bot_token_env: TG_TOKEN, chat_id: -100123 }
policies:
  default: { steps: [ { notify: [ops-slack] } ] }
  critical: { steps: [ { notify: [ops-slack, oncall-sms] } ] }
routes:
  - match: { severity: critical }
    policy: critical
  - name: lab
    match: ['site=~"lab-.*"', 'severity!="info"']
    policy: default
  - policy: default
"#;

#[test]
fn issue_example_loads() {
    let c = parse_ok(ISSUE_EXAMPLE);
    assert_eq!(c.listen.port(), 9097);
    assert!(matches!(&c.auth, Auth::Bearer(t) if t.expose() == "s3cret"));
    assert_eq!(c.routes.len(), 3);
    assert_eq!(c.routes[1].name.as_deref(), Some("lab"));
    assert_eq!(c.routes[1].matchers.len(), 2);
    let dests: Vec<String> = c.destinations().into_keys().collect();
    assert_eq!(
        dests,
        [
            "oncall-sms/+447700900123",
            "oncall-sms/+447700900124",
            "ops-slack",
            "ops-telegram"
        ]
    );
    assert!(
        matches!(&c.channels["ops-telegram"].kind, ChannelKind::Telegram { chat_id, .. } if chat_id == "-100123")
    );
    let described = c.describe(ListenerSecurity::default());
    assert!(
        described
            .contains("1. {severity=\"critical\"} -> policy critical -> ops-slack, oncall-sms"),
        "{described}"
    );
    assert!(
        !described.contains("s3cret") && !described.contains("hooks.slack.com"),
        "{described}"
    );
    // Debug output of the whole config never shows a secret either.
    let debug = format!("{c:?}");
    assert!(
        !debug.contains("s3cret")
            && !debug.contains("hooks.slack.com")
            && !debug.contains("123:abc")
    );
}

#[test]
fn defaults() {
    let c = parse_ok(
        "storage: { sqlite: relay.db }\nchannels: { w: { type: webhook, url: 'http://x/' } }\npolicies: { p: { steps: [{notify: [w]}] } }\nroutes: [{policy: p}]\n",
    );
    assert_eq!(c.listen, SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)));
    assert_eq!(c.limits.max_body_bytes, 1024 * 1024);
    assert_eq!(
        c.storage.backend,
        StorageBackend::Sqlite("/etc/alert-relay/relay.db".into())
    );
    assert!(matches!(c.auth, Auth::None));
    assert_eq!(
        c.channels["w"].rate,
        Rate {
            per_second: 10.0,
            burst: 20
        }
    );
}

#[test]
fn errors_name_the_key() {
    let base = "storage: { sqlite: relay.db }\npolicies: { p: { steps: [{notify: [c]}] } }\nroutes: [{policy: p}]\n";
    let cases: &[(&str, &str)] = &[
        (
            "channels: { c: { type: slack, webhook_url_file: /nope } }",
            "channels.c.webhook_url_file: cannot read /nope",
        ),
        (
            "channels: { c: { type: slack, webhook_url_file: slack, chat_id: 1 } }",
            "channels.c.chat_id: not a key of a slack channel",
        ),
        (
            "channels: { c: { type: pager } }",
            "channels.c.type: unknown channel type \"pager\"",
        ),
        (
            "channels: { c: { type: email, smarthost: 'smtp:587', from: 'a@b', to: ['nope'] } }",
            "channels.c.to[0]: \"nope\" is not a mail address",
        ),
        (
            "channels: { c: { type: email, smarthost: smtp, from: 'a@b', to: ['c@d'] } }",
            "channels.c.smarthost: must be host:port",
        ),
        (
            "channels: { c: { type: telegram, bot_token_env: NOPE, chat_id: 1 } }",
            "channels.c.bot_token_env: environment variable NOPE is not set",
        ),
        (
            "channels: { c: { type: twilio, account_sid: AC1, auth_token: t, from: '+15005550006', to: ['0123'] } }",
            "channels.c.to[0]",
        ),
        (
            "channels: { c: { type: webhook, url: 'ftp://x' } }",
            "channels.c.url: is not an http(s) URL",
        ),
        (
            "channels: { c: { type: webhook, url: 'http://x', url_env: X } }",
            "channels.c.url: set only one of url, url_file and url_env",
        ),
        (
            "channels: { c: { type: matrix, room_id: '!r:x', access_token: t } }",
            "channels.c.api_url: required for matrix",
        ),
        (
            "channels: { c: { type: webhook, url: 'http://x', template: { title: '{{ x' } } }",
            "channels.c.template: title:",
        ),
    ];
    for (channels, expected) in cases {
        let e = parse_err(&format!("{base}{channels}\n"));
        assert!(
            e.contains(expected),
            "{channels}\n  got: {e}\n  expected: {expected}"
        );
    }
}

#[test]
fn rejects_unknown_keys_and_bad_escalation() {
    let e = parse_err("storage: { sqlite: x }\nlisten_address: 1\n");
    assert!(e.contains("listen_address"), "{e}");
    let ok_channels =
        "storage: { sqlite: x }\nchannels: { c: { type: webhook, url: 'http://x' } }\n";
    let e = parse_err(&format!(
        "{ok_channels}policies: {{ p: {{ steps: [{{notify: [c]}}, {{after: 10m, notify: [c]}}, {{after: 5m, notify: [c]}}] }} }}\nroutes: [{{policy: p}}]\n"
    ));
    assert!(
        e.contains("policies.p.steps[2].after: must be later"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{ok_channels}policies: {{ p: {{ steps: [{{notify: [c]}}, {{notify: [c]}}] }} }}\nroutes: [{{policy: p}}]\n"
    ));
    assert!(e.contains("policies.p.steps[1].after: every step"), "{e}");
    let e = parse_err(&format!(
        "{ok_channels}policies: {{ p: {{ steps: [{{notify: [c]}}], until: never }} }}\nroutes: [{{policy: p}}]\n"
    ));
    assert!(e.contains("policies.p.until"), "{e}");
    let c = crate::config::parse(
        &format!(
            "{ok_channels}policies: {{ p: {{ steps: [{{notify: [c]}}, {{after: 10m, notify: [c]}}], repeat: {{every: 1h, times: 2}}, until: resolved }} }}\nroutes: [{{policy: p}}]\n"
        ),
        std::path::Path::new("/"),
        &crate::config::MapSecrets::default(),
    )
    .expect("valid escalation");
    let m = |n: u64| std::time::Duration::from_secs(60 * n);
    assert_eq!(
        c.policies["p"].schedule(),
        [(m(0), 0), (m(10), 1), (m(70), 1), (m(130), 1)]
    );
    assert_eq!(c.policies["p"].until, crate::config::Until::Resolved);
    let e = parse_err(&format!(
        "{ok_channels}policies: {{ p: {{ steps: [{{notify: [d]}}] }} }}\nroutes: [{{policy: p}}]\n"
    ));
    assert!(
        e.contains("policies.p.steps[0].notify[0]: no channel named \"d\""),
        "{e}"
    );
    let e = parse_err(&format!(
        "{ok_channels}policies: {{ p: {{ steps: [{{notify: [c]}}] }} }}\nroutes: [{{policy: q}}]\n"
    ));
    assert!(e.contains("routes[0].policy"), "{e}");
    let e = parse_err(&format!(
        "{ok_channels}policies: {{ p: {{ steps: [{{notify: [c]}}] }} }}\nroutes: [{{policy: p, match: ['a=~(']}}]\n"
    ));
    assert!(e.contains("routes[0].match[0]"), "{e}");
    let e = parse_err(&format!(
        "{ok_channels}policies: {{ p: {{ steps: [{{notify: [c]}}] }} }}\nroutes: [{{policy: p, matchers: ['a=b', '{{c=~\"(\"}}']}}]\n"
    ));
    assert!(
        e.contains("routes[0].matchers[1]: ") && e.contains("invalid regex"),
        "{e}"
    );
    let e = parse_err(&format!(
        "{ok_channels}policies: {{ p: {{ steps: [{{notify: [c]}}] }} }}\nroutes: [{{policy: p, match: {{a: b}}, matchers: ['c=d']}}]\n"
    ));
    assert!(
        e.contains("routes[0].match or routes[0].matchers, not both"),
        "{e}"
    );
}

#[test]
fn the_deployed_example_is_valid() {
    let mut s = MapSecrets::default();
    for (file, value) in [
        ("token", "t"),
        ("slack", "https://hooks.slack.com/services/T/B/X"),
        ("slack-bot", "xoxb-1"),
        ("discord", "https://discord.com/api/webhooks/1/tok"),
        ("telegram", "123:abc"),
        (
            "teams-workflow-url",
            "https://x.logic.azure.com/workflows/1?sig=s",
        ),
        ("matrix", "syt_x"),
        ("ntfy", "tk_x"),
        ("pushover-app", "app"),
        ("pushover-user", "user"),
        ("twilio", "tok"),
        ("archive-hmac", "k"),
        ("smtp", "pw"),
    ] {
        s.files
            .insert(Path::new("/etc/alert-relay").join(file), value.into());
    }
    let example = include_str!("../../../../deploy/alert-relay.example.yml");
    let c = match parse(example, Path::new("/etc/alert-relay"), &s) {
        Ok(c) => c,
        Err(e) => panic!("deploy/alert-relay.example.yml: {e}"),
    };
    assert_eq!(c.listen.port(), DEFAULT_PORT);
    assert_eq!(c.channels.len(), 14);
    let primary = &c.rotations["primary"];
    assert_eq!((primary.people.len(), primary.overrides.len()), (2, 2));
    assert_eq!(c.policies["critical"].steps[1].notify, ["rotation:primary"]);
}

const ROTATION_BASE: &str = r#"
storage: { sqlite: x }
channels:
  a: { type: webhook, url: "http://a" }
  b: { type: webhook, url: "http://b" }
policies:
  p: { steps: [ { notify: [rotation:primary] } ] }
routes: [ { policy: p } ]
"#;

fn rotation_yaml(body: &str) -> String {
    format!(
        "{ROTATION_BASE}rotations:\n  primary:\n    time_zone: Europe/Berlin\n    handover: \"09:00\"\n    start: 2026-01-05\n{body}"
    )
}

#[test]
fn rotations_load_and_describe_who_is_on_call() {
    let c = parse_ok(&rotation_yaml(
        "    shift: 1w\n    people:\n      - { name: alice, notify: [a] }\n      - { name: bob, notify: [b] }\n    overrides:\n      - { from: \"2026-12-24T09:00\", to: \"2026-12-27T09:00\", name: carol, notify: [a, b] }\n      - { from: \"2026-02-01T00:00\", to: \"2026-02-02T00:00\", name: bob }\n",
    ));
    let r = &c.rotations["primary"];
    assert_eq!(r.shift, jiff::SignedDuration::from_hours(168));
    // Sorted by start.
    assert_eq!(r.overrides[0].person.notify, ["b"]);
    assert_eq!(r.overrides[1].person.name, "carol");
    let mut out = String::new();
    let now: jiff::Timestamp = "2026-01-13T12:00:00Z".parse().expect("ts");
    c.describe_rotations(&mut out, now);
    assert_eq!(
        out,
        "rotations:\n  primary (Europe/Berlin): on call now bob -> b\n    from 2026-01-19 09:00 CET: alice\n    from 2026-01-26 09:00 CET: bob\n    from 2026-02-02 09:00 CET: alice\n"
    );
}

#[test]
fn rotation_errors_name_the_key() {
    let people = "    people:\n      - { name: alice, notify: [a] }\n";
    for (body, want) in [
        (format!("    shift: 0s\n{people}"), "rotations.primary.shift: must be at least 1h"),
        (format!("    shift: 30m\n{people}"), "rotations.primary.shift: must be at least 1h"),
        (format!("    shift: 1x\n{people}"), "rotations.primary.shift: "),
        ("    shift: 1d\n    people: []\n".to_owned(), "rotations.primary.people: needs at least one person"),
        (
            "    shift: 1d\n    people:\n      - { name: alice, notify: [nope] }\n".to_owned(),
            "rotations.primary.people[0].notify[0]: no channel named \"nope\"",
        ),
        (
            "    shift: 1d\n    people:\n      - { name: alice, notify: [a] }\n      - { name: alice, notify: [b] }\n".to_owned(),
            "rotations.primary.people[1].name: \"alice\" is in the rotation twice",
        ),
        (
            format!("    shift: 1d\n{people}    overrides:\n      - {{ from: \"2026-12-24T09:00\", to: \"2026-12-27T09:00\", name: carol }}\n"),
            "rotations.primary.overrides[0].name: \"carol\" is not a person of this rotation",
        ),
        (
            format!("    shift: 1d\n{people}    overrides:\n      - {{ from: \"2026-12-24T09:00\", to: \"2026-12-27T09:00\", name: alice }}\n      - {{ from: \"2026-12-26T09:00\", to: \"2026-12-28T09:00\", name: alice }}\n"),
            "rotations.primary.overrides[1]: overlaps overrides[0]",
        ),
        (
            format!("    shift: 1d\n{people}    overrides:\n      - {{ from: \"2026-12-24T09:00\", to: \"2026-12-24T09:00\", name: alice }}\n"),
            "rotations.primary.overrides[0].to: must be later than from",
        ),
        (
            format!("    shift: 1d\n{people}    overrides:\n      - {{ from: \"Christmas\", to: \"2026-12-24T09:00\", name: alice }}\n"),
            "rotations.primary.overrides[0].from: \"Christmas\" is not a local date-time",
        ),
    ] {
        let e = parse_err(&rotation_yaml(&body));
        assert!(e.starts_with(want), "{e}");
    }
    let e = parse_err(
        &rotation_yaml(&format!("    shift: 1d\n{people}"))
            .replace("Europe/Berlin", "Mars/Olympus"),
    );
    assert!(
        e.starts_with("rotations.primary.time_zone: unknown time zone \"Mars/Olympus\""),
        "{e}"
    );
    let e = parse_err(&rotation_yaml(&format!("    shift: 1d\n{people}")).replace("09:00", "9h"));
    assert!(
        e.starts_with("rotations.primary.handover: \"9h\" is not a local time"),
        "{e}"
    );
    let e = parse_err(
        &rotation_yaml(&format!("    shift: 1d\n{people}"))
            .replace("rotation:primary", "rotation:second"),
    );
    assert!(
        e.starts_with("policies.p.steps[0].notify[0]: no rotation named \"second\""),
        "{e}"
    );
}

#[test]
fn telegram_ack_and_pushover_emergency() {
    let base = "storage: { sqlite: relay.db }\npolicies: { p: { steps: [{notify: [c]}] } }\nroutes: [{policy: p}]\n";
    let c = parse_ok(&format!(
        "{base}channels: {{ c: {{ type: telegram, bot_token_env: TG_TOKEN, chat_id: -100123, ack: true }} }}\n"
    ));
    assert!(matches!(
        &c.channels["c"].kind,
        ChannelKind::Telegram { ack: true, .. }
    ));
    let po = "type: pushover, token: a, user_key: u";
    let c = parse_ok(&format!(
        "{base}channels: {{ c: {{ {po}, priority: 2, retry: 45s, expire: 2h }} }}\n"
    ));
    let s = std::time::Duration::from_secs;
    assert!(matches!(
        &c.channels["c"].kind,
        ChannelKind::Pushover { priority: 2, emergency: Some(e), .. }
            if *e == Emergency { retry: s(45), expire: s(7200), poll: s(30) }
    ));
    // "+2" and "02" are priority 2 too, and so emergencies with retry/expire.
    for two in ["'+2'", "'02'"] {
        let c = parse_ok(&format!(
            "{base}channels: {{ c: {{ {po}, priority: {two} }} }}\n"
        ));
        assert!(
            matches!(
                &c.channels["c"].kind,
                ChannelKind::Pushover { priority: 2, emergency: Some(e), .. }
                    if *e == Emergency { retry: s(60), expire: s(3600), poll: s(30) }
            ),
            "{two}"
        );
    }
    let c = parse_ok(&format!(
        "{base}channels: {{ c: {{ {po}, priority: 1 }} }}\n"
    ));
    assert!(matches!(
        &c.channels["c"].kind,
        ChannelKind::Pushover {
            emergency: None,
            ..
        }
    ));
    for (extra, expected) in [
        ("priority: 3", "channels.c.priority: use -2..2"),
        (
            "priority: 2, retry: 10s",
            "channels.c.retry: Pushover needs at least 30s",
        ),
        (
            "priority: 2, expire: 4h",
            "channels.c.expire: Pushover allows at most 3h",
        ),
        (
            "priority: 2, receipt_poll_interval: 1s",
            "channels.c.receipt_poll_interval: Pushover allows one receipt poll per 5s",
        ),
        (
            "priority: 1, retry: 60s",
            "channels.c.retry: only for priority 2",
        ),
        (
            "ack: true",
            "channels.c.ack: not a key of a pushover channel",
        ),
    ] {
        let e = parse_err(&format!("{base}channels: {{ c: {{ {po}, {extra} }} }}\n"));
        assert!(
            e.contains(expected),
            "{extra}\n  got: {e}\n  expected: {expected}"
        );
    }
}

#[test]
fn deadman_and_alertmanager_sections() {
    let c = parse_ok(&format!(
        "{ISSUE_EXAMPLE}deadman: {{ notify: [oncall-sms, ops-slack] }}\n\
         alertmanager: {{ url: 'http://am:9093/', auth: {{ basic: {{ username: relay, password_file: token }} }} }}\n"
    ));
    let d = c.deadman.as_ref().expect("deadman");
    assert_eq!(d.timeout, Duration::from_secs(300));
    let watchdog: crate::payload::Labels = [("alertname".to_owned(), "Watchdog".to_owned())].into();
    assert!(d.matches(&watchdog));
    assert!(!d.matches(&Default::default()));
    assert_eq!(
        d.destinations(&c.channels),
        [
            "oncall-sms/+447700900123",
            "oncall-sms/+447700900124",
            "ops-slack"
        ]
    );
    let am = c.alertmanager.as_ref().expect("alertmanager");
    assert_eq!(am.url, "http://am:9093");
    assert_eq!(
        (am.interval, am.timeout),
        (Duration::from_secs(300), Duration::from_secs(10))
    );
    assert!(
        matches!(&am.auth, Auth::Basic { username, password } if username == "relay" && password.expose() == "s3cret")
    );
    let described = c.describe(ListenerSecurity::default());
    assert!(
        described.contains(
            "deadman: heartbeats {alertname=\"Watchdog\"}, after 5m of silence notify oncall-sms, ops-slack"
        ),
        "{described}"
    );
    assert!(described.contains("alertmanager: re-sync with http://am:9093/api/v2/alerts every 5m"));
    let d = parse_ok(&format!(
        "{ISSUE_EXAMPLE}deadman: {{ timeout: 90s, notify: [ops-slack], match: ['alertname=~\"Watchdog|DeadMansSnitch\"'] }}\n"
    ))
    .deadman
    .expect("deadman");
    assert_eq!(d.timeout, Duration::from_secs(90));
    for (extra, key) in [
        ("deadman: { notify: [] }", "deadman.notify"),
        ("deadman: { notify: [nope] }", "deadman.notify[0]"),
        (
            "deadman: { notify: [ops-slack], timeout: 0s }",
            "deadman.timeout",
        ),
        (
            "deadman: { notify: [ops-slack], match: ['alertname=~\"(\"'] }",
            "deadman.match[0]",
        ),
        ("deadman: { notify: [ops-slack], after: 1m }", "after"),
        ("alertmanager: { url: 'am:9093' }", "alertmanager.url"),
        (
            "alertmanager: { url: 'http://am', interval: 0s }",
            "alertmanager.interval",
        ),
        (
            "alertmanager: { url: 'http://am', auth: {} }",
            "alertmanager.auth",
        ),
        (
            "alertmanager: { url: 'http://am', tls: { ca_file: /nope.crt } }",
            "alertmanager.tls.ca_file",
        ),
    ] {
        let e = parse_err(&format!("{ISSUE_EXAMPLE}{extra}\n"));
        assert!(e.contains(key), "{extra}: {e}");
    }
}

#[test]
fn yaml_errors_name_the_key_and_never_print_the_file() {
    let cases = [
        (
            "auth:\n  bearer_token: hunter2-secret\n  bearer_tokn: x\n",
            "auth.bearer_tokn: unknown field `bearer_tokn`, expected one of bearer_token",
        ),
        (
            "auth:\n  bearer_token: hunter2-secret\n   oops: [\n",
            "mapping values are not allowed in this context at line 4",
        ),
        (
            "channels:\n  a: { type: slack, webhook_url: \"https://hooks.slack.com/services/T/B/hunter2\", rate_limit: { per_second: hunter2 } }\n",
            "channels.a.rate_limit.per_second: invalid floating point at line 3",
        ),
        ("auth: hunter2-secret\n", "auth: invalid value"),
        (
            "auth: { bearer_token: x, hunter_two: y }\n",
            "auth.hunter_two: unknown field",
        ),
        (
            "auth: { bearer_token: x, a1b2c3d4: y }\n",
            "auth: unknown field `…`",
        ),
        (
            "auth: { bearer_token: [hunter2-secret] }\n",
            "auth.bearer_token: expected string scalar at line 2, column 23",
        ),
        // A token pasted where a key belongs.
        ("auth:\n  hunter2-secret: x\n", "auth: unknown field `…`"),
    ];
    for (tail, want) in cases {
        let text = format!("storage: {{ sqlite: x }}\n{tail}");
        let e = parse(&text, Path::new("/"), &MapSecrets::default())
            .expect_err("invalid")
            .to_string();
        assert!(!e.contains("hunter2"), "the file's text in {e:?}");
        assert!(e.contains(want), "{e:?} does not say {want:?}");
    }
}

#[test]
fn a_wrong_key_or_value_in_each_section_is_reported_once_each() {
    let text = "storage: { sqlite: x }\nlimits: { max_body: 10 }\n\
                channels:\n  c: { type: webhook, url: 'http://x', colour: red, rate_limit: { per_second: fast } }\n\
                policies: { p: { steps: [ { notify: [c] } ], color: blue } }\nroutes: [ { policy: p } ]\n\
                deadman: { timeout: 5m, notify: [c], after: 3 }\nbogus: 1\nhunter2-secret: 2\nroutz: []\n";
    let e = parse(text, Path::new("/"), &MapSecrets::default()).expect_err("invalid");
    let ConfigError::Several(all) = &e else {
        panic!("one error only: {e}");
    };
    let lines: Vec<String> = all.iter().map(ToString::to_string).collect();
    let starts: Vec<&str> = lines
        .iter()
        .map(|l| l.split(": unknown field").next().unwrap_or(l))
        .collect();
    // One error per section (serde stops a section at its first), each unknown top-level key,
    // a token-like key unnamed; nothing twice.
    assert_eq!(
        starts,
        [
            "<config>: limits.max_body",
            "<config>: channels.c.colour",
            "<config>: policies.p.color",
            "<config>: deadman.after",
            "<config>: bogus",
            "<config>",
            "<config>: routz",
        ],
        "{e}"
    );
    assert!(!e.to_string().contains("hunter2"), "{e}");
    // A syntax error ends every reading at one place: said once.
    let e = parse(
        "storage: { sqlite: x\nchannels: {}\n",
        Path::new("/"),
        &MapSecrets::default(),
    )
    .expect_err("invalid");
    assert!(matches!(e, ConfigError::Yaml { .. }), "{e}");
}

#[test]
fn a_listener_beyond_loopback_needs_auth_or_an_explicit_none() {
    let tail = "storage: { sqlite: x }\nchannels: { c: { type: webhook, url: \"http://127.0.0.1:9/h\" } }\npolicies: { p: { steps: [ { notify: [c] } ] } }\nroutes: [ { policy: p } ]\n";
    let load = |head: &str| {
        parse(
            &format!("{head}{tail}"),
            Path::new("/"),
            &MapSecrets::default(),
        )
    };
    let plain = ListenerSecurity::default();
    let checked = |head: &str, security| {
        let c = load(head).expect("valid");
        c.check_exposure(c.listen, security).map(|()| c)
    };
    let e = checked("listen: 0.0.0.0:9832\n", plain).expect_err("open to the network");
    assert!(
        e.to_string()
            .starts_with("auth: required: listen 0.0.0.0:9832"),
        "{e}"
    );
    assert!(checked("listen: \"[::]:9832\"\n", plain).is_err());
    let none = checked("listen: 0.0.0.0:9832\nauth: none\n", plain).expect("declared");
    assert!(none.auth_none_declared);
    let warning = none.exposure_warning(plain).expect("warned");
    assert!(
        none.describe(plain)
            .contains(&format!("warning: {warning}"))
    );
    assert!(checked("listen: 0.0.0.0:9832\nauth: { bearer_token: t }\n", plain).is_ok());
    let local = checked("listen: \"[::1]:9832\"\n", plain).expect("loopback");
    assert!(local.exposure_warning(plain).is_none());
    let bound = "0.0.0.0:9832".parse().expect("addr");
    assert!(
        local.check_exposure(bound, plain).is_err(),
        "checked where it listens"
    );
    let certs = ListenerSecurity {
        tls: true,
        client_certificates: true,
    };
    assert!(
        checked("listen: 0.0.0.0:9832\n", certs).is_ok(),
        "client certificates authenticate"
    );
    assert!(
        none.describe(certs)
            .contains("TLS with client certificates")
    );
    assert!(load("auth: nothing\n").is_err());
    let moved = load("tls: { cert_file: c, key_file: k }\n").expect_err("moved");
    assert!(moved.to_string().starts_with("tls: moved"), "{moved}");
}

#[test]
fn printed_urls_lose_their_credentials() {
    let c = parse(
        "storage: { sqlite: x }\nchannels: { c: { type: webhook, url: \"http://127.0.0.1:9/h\", api_url: \"https://relay:hunter2@proxy.example:8443/p?sig=hunter2\" } }\npolicies: { p: { steps: [ { notify: [c] } ] } }\nroutes: [ { policy: p } ]\nalertmanager: { url: \"http://am:hunter2@127.0.0.1:9093\" }\n",
        Path::new("/"),
        &MapSecrets::default(),
    )
    .expect("valid");
    let out = c.describe(ListenerSecurity::default());
    assert!(!out.contains("hunter2"), "{out}");
    assert!(
        out.contains("api_url https://relay:<redacted>@proxy.example:8443/p?sig=<redacted>"),
        "{out}"
    );
    assert!(
        out.contains("re-sync with http://am:<redacted>@127.0.0.1:9093/api/v2/alerts"),
        "{out}"
    );
}

#[test]
fn provider_keys_are_checked_by_their_provider() {
    let base = "storage: { sqlite: relay.db }\npolicies: { p: { steps: [{notify: [c]}] } }\nroutes: [{policy: p}]\n";
    let cases: &[(&str, &str)] = &[
        (
            "channels: { c: { type: slack, tokn: x } }",
            "channels.c.tokn: unknown field `tokn`, expected one of type, api_url, template, rate_limit",
        ),
        (
            "channels: { c: { type: discord, webhook_url: 'http://x/', url_file: u } }",
            "channels.c.url_file: not a key of a discord channel",
        ),
        (
            "channels: { c: { type: telegram, bot_token: t, chat_id: 1, message_thread_id: x } }",
            "channels.c.message_thread_id: invalid",
        ),
        ("channels: { c: { url: x } }", "missing field `type`"),
    ];
    for (channels, want) in cases {
        let got = parse_err(&format!("{base}{channels}\n"));
        assert!(got.contains(want), "{channels}\n got: {got}\nwant: {want}");
    }
    // A null value is as if the key were not there.
    let c = parse_ok(&format!(
        "{base}channels: {{ c: {{ type: telegram, bot_token: t, chat_id: 1, ack: ~ }} }}\n"
    ));
    assert!(matches!(
        c.channels["c"].kind,
        ChannelKind::Telegram { ack: false, .. }
    ));
}

const PG_REST: &str = "channels: { w: { type: webhook, url: 'http://127.0.0.1:9/' } }\n\
     policies: { p: { steps: [ { notify: [w] } ] } }\nroutes: [ { policy: p } ]\n";

fn pg_secrets() -> MapSecrets {
    let mut s = secrets();
    s.files.insert(
        "/etc/alert-relay/postgres-url".into(),
        "postgres://relay@db1.example.org:5432/relay?sslmode=verify-full\n".into(),
    );
    s.files
        .insert("/etc/alert-relay/pg-password".into(), "pg-s3cret\n".into());
    s
}

fn parse_pg(storage: &str) -> Result<Config, String> {
    parse(
        &format!("storage: {storage}\n{PG_REST}"),
        Path::new("/etc/alert-relay"),
        &pg_secrets(),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn postgres_storage_reads_its_url_and_password_from_files() {
    let c = parse_pg(
        "{ postgres: { url_file: postgres-url, password_file: pg-password, ca_file: ca.pem, pool: 4 } }",
    )
    .expect("valid");
    let StorageBackend::Postgres(pg) = &c.storage.backend else {
        panic!("{:?}", c.storage.backend);
    };
    assert_eq!(pg.pool, 4);
    assert_eq!(
        pg.ca_file.as_deref(),
        Some(Path::new("/etc/alert-relay/ca.pem"))
    );
    assert_eq!(
        pg.connection_url().expose(),
        "postgres://relay:pg-s3cret@db1.example.org:5432/relay?sslmode=verify-full"
    );
    let described = c.describe(ListenerSecurity::default());
    assert!(
        described.contains("storage: postgres://relay@db1.example.org:5432/relay"),
        "{described}"
    );
    assert!(!described.contains("pg-s3cret"), "{described}");
    let default_pool =
        parse_pg("{ postgres: { url: 'postgres://relay:pw@db1/relay' } }").expect("valid");
    assert!(matches!(&default_pool.storage.backend, StorageBackend::Postgres(p) if p.pool == 8));
}

#[test]
fn postgres_storage_errors_name_the_key_and_never_the_password() {
    for (storage, key, says) in [
        (
            "{ sqlite: relay.db, postgres: { url: 'postgres://h/db' } }",
            "storage",
            "set one of sqlite and postgres",
        ),
        (
            "{ retention: 1d }",
            "storage",
            "set sqlite (a file) or postgres",
        ),
        (
            "{ postgres: { pool: 4 } }",
            "storage.postgres.url",
            "required",
        ),
        (
            "{ postgres: { url: 'https://u:hunter2@h/db' } }",
            "storage.postgres.url",
            "must be a postgres:// URL",
        ),
        (
            "{ postgres: { url: 'postgres://u:hunter2@h/db?sslmode=verify-ca' } }",
            "storage.postgres.url",
            "sslmode \"verify-ca\" is not supported",
        ),
        (
            "{ postgres: { url: 'postgres://h/db', pool: 0 } }",
            "storage.postgres.pool",
            "must be 1 to 64",
        ),
        (
            "{ postgres: { url: 'postgres://h/db', url_file: postgres-url } }",
            "storage.postgres.url",
            "set only one of url, url_file and url_env",
        ),
        (
            "{ postgres: { url: 'postgres://h/db', pasword: x } }",
            "storage.postgres.pasword",
            "unknown field",
        ),
    ] {
        let e = parse_pg(storage).expect_err(storage);
        assert!(e.contains(key) && e.contains(says), "{storage}: {e}");
        assert!(!e.contains("hunter2"), "{e}");
    }
}

#[test]
fn every_independent_error_is_reported_once() {
    // Three sections, one error each: a channel, a policy step, a route.
    let yaml = "storage: { sqlite: relay.db }
channels:
  ok: { type: webhook, url: 'http://x' }
  bad: { type: pager }
policies:
  p: { steps: [ { notify: [nope] } ] }
routes: [ { policy: p, match: ['a=~('] } ]
";
    let e = match parse(yaml, Path::new("/etc/alert-relay"), &secrets()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    let lines: Vec<String> = e.each().iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert!(
        lines[0].starts_with("channels.bad.type: unknown channel type"),
        "{lines:#?}"
    );
    assert!(
        lines[1].starts_with("policies.p.steps[0].notify[0]: no channel named \"nope\""),
        "{lines:#?}"
    );
    assert!(lines[2].starts_with("routes[0].match[0]"), "{lines:#?}");
    // Displayed whole: one line each, nothing twice.
    let text = e.to_string();
    assert_eq!(text.lines().count(), 3, "{text}");
    for line in &lines {
        assert_eq!(text.matches(line.as_str()).count(), 1, "{text}");
    }
}

#[test]
fn a_reference_to_an_invalid_entry_is_not_a_second_error() {
    // `bad` is declared but invalid: the step, the rotation, the dead-man's switch and the
    // budget's overflow naming it are not reported again, and the route's policy `p` is fine
    // although `p` itself has an error.
    let yaml = "storage: { sqlite: relay.db }
channels:
  bad: { type: webhook, url: 'ftp://x' }
  sms: { type: webhook, url: 'http://x', budget: { max: 3, per: 1h, overflow: [bad] } }
policies:
  p: { steps: [ { notify: [bad] } ], until: never }
routes: [ { policy: p } ]
deadman: { notify: [bad] }
";
    let e = match parse(yaml, Path::new("/etc/alert-relay"), &secrets()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    let lines: Vec<String> = e.each().iter().map(ToString::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].starts_with("channels.bad.url"), "{lines:#?}");
    assert!(lines[1].starts_with("policies.p.until"), "{lines:#?}");
}

#[test]
fn keys_of_one_section_are_checked_independently() {
    let yaml = "storage: { sqlite: relay.db }
listen: nowhere
delivery: { timeout: 0s, max_age: soon }
limits: { max_body_bytes: 1, body_timeout: later }
channels: { c: { type: webhook, url: 'http://x', timeout: never, rate_limit: { per_second: 0, burst: 0 } } }
policies: { p: { steps: [ { notify: [c] } ], ack_timeout: x, repeat: { every: 0s, times: 1 } } }
routes: [ { policy: p } ]
";
    let e = match parse(yaml, Path::new("/etc/alert-relay"), &secrets()) {
        Ok(_) => panic!("accepted"),
        Err(e) => e,
    };
    let keys = invalid_keys(&e);
    assert_eq!(
        keys,
        [
            "listen",
            "limits.max_body_bytes",
            "limits.body_timeout",
            "delivery.max_age",
            "delivery.timeout",
            "channels.c.rate_limit",
            "channels.c.timeout",
            "policies.p.repeat.every",
            "policies.p.ack_timeout",
        ]
    );
}

#[test]
fn error_lines_are_one_per_error_with_their_context() {
    let e = parse(
        "storage: { sqlite: x }\nlisten: nowhere\nroutes: []\n",
        Path::new("/"),
        &secrets(),
    )
    .expect_err("invalid");
    let plain = anyhow::Error::from(e);
    let lines = error_lines(&plain);
    assert_eq!(
        lines,
        [
            "listen: \"nowhere\" is not an address like 127.0.0.1:9832",
            "routes: needs at least one route"
        ]
    );
    let with_context = plain.context("--from relay.yml");
    assert_eq!(
        error_lines(&with_context),
        [
            "--from relay.yml: listen: \"nowhere\" is not an address like 127.0.0.1:9832",
            "--from relay.yml: routes: needs at least one route"
        ]
    );
    let other = anyhow::anyhow!("inner").context("outer");
    assert_eq!(error_lines(&other), ["outer: inner"]);
}

#[test]
fn a_rotation_reports_each_of_its_errors() {
    let e = parse(
        &rotation_yaml(
            "    shift: 30m\n    people:\n      - { name: alice, notify: [nope] }\n      - { name: bob, notify: [b] }\n      - { name: bob, notify: [a] }\n    overrides:\n      - { from: \"2026-12-24T09:00\", to: \"2026-12-27T09:00\", name: alice }\n",
        )
        .replace("Europe/Berlin", "Mars/Olympus"),
        Path::new("/etc/alert-relay"),
        &secrets(),
    )
    .expect_err("invalid");
    let keys = invalid_keys(&e);
    // The override naming alice (whose entry is invalid) is not a second error.
    assert_eq!(
        keys,
        [
            "rotations.primary.time_zone",
            "rotations.primary.shift",
            "rotations.primary.people[0].notify[0]",
            "rotations.primary.people[2].name",
        ]
    );
}

#[test]
fn storage_deadman_and_alertmanager_report_each_key() {
    let yaml = "storage: { sqlite: '', retention: forever }
channels: { c: { type: webhook, url: 'http://x' } }
policies: { p: { steps: [ { notify: [c] } ] } }
routes: [ { policy: p } ]
deadman: { timeout: 0s, notify: [nope] }
alertmanager: { url: 'ftp://am', interval: 0s, timeout: 0s }
";
    let e = parse(yaml, Path::new("/etc/alert-relay"), &secrets()).expect_err("invalid");
    let keys = invalid_keys(&e);
    assert_eq!(
        keys,
        [
            "storage.sqlite",
            "storage.retention",
            "deadman.timeout",
            "deadman.notify[0]",
            "alertmanager.url",
            "alertmanager.interval",
            "alertmanager.timeout",
        ]
    );
}

#[test]
fn each_override_reports_its_error() {
    let e = parse(
        &rotation_yaml(
            "    shift: 1d\n    people:\n      - { name: alice, notify: [a] }\n    overrides:\n      - { from: Christmas, to: \"2026-12-24T09:00\", name: alice }\n      - { from: \"2026-12-24T09:00\", to: \"2026-12-27T09:00\", name: carol }\n      - { from: \"2026-12-24T09:00\", to: \"2026-12-27T09:00\", name: alice }\n      - { from: \"2026-12-26T09:00\", to: \"2026-12-28T09:00\", name: alice }\n",
        ),
        Path::new("/etc/alert-relay"),
        &secrets(),
    )
    .expect_err("invalid");
    let keys = invalid_keys(&e);
    assert_eq!(
        keys,
        [
            "rotations.primary.overrides[0].from",
            "rotations.primary.overrides[1].name",
            "rotations.primary.overrides[3]",
        ]
    );
}

/// The key of each error in `e`, in the order found (every one a key's error).
fn invalid_keys(e: &ConfigError) -> Vec<String> {
    e.each()
        .iter()
        .map(|e| match e {
            ConfigError::Invalid { key, .. } => key.clone(),
            other => panic!("{other}"),
        })
        .collect()
}

/// The key of each error `yaml`'s channel `c` has, in the order found; each error's line
/// appears once in the whole message.
fn channel_error_keys(channel: &str) -> Vec<String> {
    let yaml = format!(
        "storage: {{ sqlite: relay.db }}\npublic_url: https://relay.example.org\n\
         policies: {{ p: {{ steps: [{{notify: [c]}}] }} }}\nroutes: [{{policy: p}}]\n\
         channels: {{ c: {channel} }}\n"
    );
    let e = parse(&yaml, Path::new("/etc/alert-relay"), &secrets()).expect_err(&yaml);
    let text = e.to_string();
    assert_eq!(text.lines().count(), e.each().len(), "{text}");
    for one in e.each() {
        assert_eq!(text.matches(&one.to_string()).count(), 1, "{text}");
    }
    invalid_keys(&e)
}

#[test]
fn every_provider_reports_each_wrong_key_of_one_channel() {
    let cases: &[(&str, &[&str])] = &[
        (
            "{ type: webhook, url: 'ftp://x', headers: { 'bad header': v }, signing_secret_env: NOPE }",
            &["url", "headers.bad header", "signing_secret_env"],
        ),
        (
            "{ type: slack, webhook_url_file: /nope, bot_token_env: NOPE }",
            &["webhook_url_file", "bot_token_env"],
        ),
        (
            "{ type: slack, webhook_url: 'ftp://x', channel: '#ops' }",
            &["channel", "webhook_url"],
        ),
        (
            "{ type: telegram, timeout: never, chat_id: ' ' }",
            &["timeout", "bot_token", "chat_id"],
        ),
        (
            "{ type: ntfy, topic: 'a b', token: t, username: u, priority: loud }",
            &["topic", "token", "priority"],
        ),
        (
            "{ type: twilio, from: '+1', to: ['+447700900123', '0123', x] }",
            &["account_sid", "to[1]", "to[2]", "from", "auth_token"],
        ),
        (
            "{ type: twilio, account_sid: AC1, auth_token: t, to: [] }",
            &["to", "from"],
        ),
        (
            "{ type: twilio_voice, account_sid: AC1, from: ALPHA, to: [], voice: 'a b', language: '', auth_token_env: NOPE }",
            &["to", "from", "voice", "language", "auth_token_env"],
        ),
        (
            "{ type: matrix, api_url: 'ftp://x', room_id: room }",
            &["api_url", "room_id", "access_token"],
        ),
        (
            "{ type: pushover, token_env: NOPE, priority: 9, retry: 10s }",
            &["token_env", "user_key", "priority"],
        ),
        (
            "{ type: pushover, token: a, user_key: u, priority: 2, retry: 10s, expire: 4h, receipt_poll_interval: 1s }",
            &["retry", "expire", "receipt_poll_interval"],
        ),
        (
            "{ type: pushover, token: a, user_key: u, priority: 1, retry: 60s, expire: 1h }",
            &["retry", "expire"],
        ),
        (
            "{ type: email, smarthost: smtp, tls: maybe, username: u, from: nope, to: ['a@b.org', x, y] }",
            &["smarthost", "tls", "username", "from", "to[1]", "to[2]"],
        ),
        (
            "{ type: email, smarthost: 'smtp:587', tls: tls, require_tls: true, password_file: /nope, from: 'a@b.org' }",
            &["require_tls", "password_file", "to"],
        ),
    ];
    for (channel, want) in cases {
        let want: Vec<String> = want.iter().map(|k| format!("channels.c.{k}")).collect();
        assert_eq!(channel_error_keys(channel), want, "{channel}");
    }
}

#[test]
fn a_provider_key_that_needs_another_is_not_a_second_error() {
    // The key others depend on reports its error; the dependent check is not made.
    let cases: &[(&str, &str)] = &[
        // Which Slack mode is meant is unknown while a secret cannot be read.
        (
            "{ type: slack, webhook_url_file: /nope, channel: '#ops' }",
            "webhook_url_file",
        ),
        // Token or basic auth: unknown while the token cannot be read.
        (
            "{ type: ntfy, topic: t, token_env: NOPE, username: u }",
            "token_env",
        ),
        // A password that cannot be read is not also missing beside username.
        (
            "{ type: email, smarthost: 'smtp:587', username: u, password_file: /nope, from: 'a@b.org', to: ['c@d.org'] }",
            "password_file",
        ),
        // A wrong priority leaves the emergency keys unchecked.
        (
            "{ type: pushover, token: a, user_key: u, priority: x, retry: 1s }",
            "priority",
        ),
        // A wrong api_url is not also a missing one.
        (
            "{ type: matrix, api_url: 'ftp://x', room_id: '!r:x', access_token: t }",
            "api_url",
        ),
        // A number that is not E.164 is reported, not also as missing.
        (
            "{ type: twilio_voice, account_sid: AC1, auth_token: t, from: '+15005550006', to: [x] }",
            "to[0]",
        ),
    ];
    for (channel, want) in cases {
        assert_eq!(
            channel_error_keys(channel),
            [format!("channels.c.{want}")],
            "{channel}"
        );
    }
}

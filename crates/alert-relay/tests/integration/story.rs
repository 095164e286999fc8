//! What an operator reads: `check-config`'s report, the CLI's plain and JSON output, the ack
//! page, the messages' words and the `info` log lines that follow one alert from intake
//! through delivery and acknowledgement to its resolution.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serving::logging::read::field;

use crate::support::{FAST_DELIVERY, Fake, Relay, Reply, binary, client, tempdir, webhook};

fn run(args: &[&str], config: &Path) -> Output {
    Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .expect("run alert-relay")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            stdout(out),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn check_config_reports_every_error_once_with_a_count() {
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    std::fs::write(
        &path,
        "storage: { sqlite: relay.db }\n\
         channels: { ok: { type: webhook, url: 'http://x' }, bad: { type: pager } }\n\
         policies: { p: { steps: [ { notify: [nope] } ] } }\n\
         routes: [ { policy: p, match: ['a=~('] } ]\n",
    )
    .expect("write");
    let out = Command::new(binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert_eq!(stdout(&out), "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 4, "{stderr}");
    assert!(
        lines[0].starts_with("error: channels.bad.type: unknown channel type"),
        "{stderr}"
    );
    assert_eq!(
        lines[1],
        "error: policies.p.steps[0].notify[0]: no channel named \"nope\""
    );
    assert!(
        lines[2].starts_with("error: routes[0].match[0]: "),
        "{stderr}"
    );
    assert_eq!(lines[3], format!("{}: 3 errors", path.display()));
    // A file that cannot be read: its error once, not its cause repeated.
    let missing = dir.path().join("missing.yml");
    let out = Command::new(binary())
        .arg("check-config")
        .arg(&missing)
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr,
        format!(
            "error: {0}: cannot read: No such file or directory (os error 2)\n{0}: 1 error\n",
            missing.display()
        )
    );
}

#[test]
fn check_config_reports_every_wrong_key_of_one_channel() {
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    std::fs::write(
        &path,
        "storage: { sqlite: relay.db }\n\
         channels: { sms: { type: twilio, from: '+1', to: ['0123', '+447700900123', x] } }\n\
         policies: { p: { steps: [ { notify: [sms] } ] } }\n\
         routes: [ { policy: p } ]\n",
    )
    .expect("write");
    let out = Command::new(binary())
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines,
        [
            "error: channels.sms.account_sid: required",
            "error: channels.sms.to[0]: \"0123\" is not an E.164 number like +447700900123",
            "error: channels.sms.to[2]: \"x\" is not an E.164 number like +447700900123",
            "error: channels.sms.from: must be an E.164 number or an alphanumeric sender id",
            "error: channels.sms.auth_token: required: set auth_token_file, auth_token_env or auth_token",
            &format!("{}: 5 errors", path.display()),
        ],
        "{stderr}"
    );
}

#[tokio::test]
async fn send_test_prints_one_plain_line_per_destination_or_json() {
    let fake = Fake::start(Reply::new(200, "")).await;
    fake.on("/down", Reply::new(401, "invalid token"));
    let dir = tempdir();
    let path = dir.path().join("relay.yml");
    std::fs::write(
        &path,
        format!(
            "storage: {{ sqlite: relay.db }}\nchannels:\n  up: {{ type: webhook, url: '{u}/up' }}\n  down: {{ type: webhook, url: '{u}/down' }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [up] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
            u = fake.url()
        ),
    )
    .expect("write");
    let p = path.clone();
    let (up, down, down_json) = tokio::task::spawn_blocking(move || {
        (
            run(&["send-test", "--channel", "up"], &p),
            run(&["send-test", "--channel", "down"], &p),
            run(&["send-test", "--channel", "down", "--output", "json"], &p),
        )
    })
    .await
    .expect("join");
    assert!(up.status.success());
    assert_eq!(stdout(&up), "up: delivered\n");
    assert!(!down.status.success());
    assert!(
        stdout(&down).starts_with("down: failed (auth): "),
        "{}",
        stdout(&down)
    );
    assert!(!down_json.status.success());
    let v = json(&down_json);
    assert_eq!(v["ok"], false);
    assert_eq!(v["destinations"][0]["destination"], "down");
    assert_eq!(v["destinations"][0]["result"], "failed");
    assert_eq!(v["destinations"][0]["reason"], "auth");
}

fn config(fake: &Fake) -> String {
    format!(
        "public_url: http://relay.invalid\nauth: {{ bearer_token: s3cret }}\nstorage: {{ sqlite: relay.db }}\n{FAST_DELIVERY}\
         channels:\n  ops: {{ type: webhook, url: '{u}/ops' }}\n\
         policies:\n  p:\n    steps: [ {{ notify: [ops] }} ]\n\
         routes: [ {{ match: {{ severity: critical }}, policy: p }} ]\n",
        u = fake.url()
    )
}

/// The lines of the relay's log whose `msg` is `msg`.
fn lines_with(relay: &Relay, msg: &str) -> Vec<String> {
    let log = relay.log.lock().expect("log").clone();
    log.into_iter()
        .filter(|l| field(l, "msg") == Some(msg))
        .collect()
}

#[tokio::test]
async fn one_alert_told_through_intake_delivery_ack_and_resolution() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let relay = Relay::start(dir.path(), &config(&fake));
    relay
        .fire(webhook(&[("00000000000051a1", "firing")], ""))
        .await;
    let got = fake.wait_for(1, Duration::from_secs(5)).await;
    assert!(
        got[0].json()["text"]
            .as_str()
            .is_some_and(|t| t
                .starts_with("[FIRING] PiHot on 00000000000051a1:9831 (incident #1)\nCPU at 85°C")),
        "{}",
        got[0].json()
    );
    // The ack page names the group by its labels and the route by what it matches.
    let link = got[0].json()["links"]
        .as_array()
        .and_then(|l| l.iter().find(|l| l["name"] == "Acknowledge #1").cloned())
        .and_then(|l| l["url"].as_str().map(str::to_owned))
        .expect("ack link");
    let page = client()
        .get(
            relay.url(
                link.strip_prefix("http://relay.invalid")
                    .expect("public_url"),
            ),
        )
        .send()
        .await
        .expect("ack page")
        .text()
        .await
        .expect("page");
    assert!(page.contains("<p>Group: alertname=PiHot</p>"), "{page}");
    assert!(
        page.contains("<p>Routed by route 1 ({severity=&quot;critical&quot;}) to policy p</p>"),
        "{page}"
    );
    assert!(!page.contains("#1,") && !page.contains("{}:{"), "{page}");

    // The CLI, against the running relay.
    let cli_cfg = dir.path().join("cli.yml");
    let cli = std::fs::read_to_string(dir.path().join("relay.yml"))
        .expect("config")
        .replace("127.0.0.1:0", &relay.url("").replace("http://", ""));
    std::fs::write(&cli_cfg, cli).expect("cli config");
    let c = cli_cfg.clone();
    let (listed, listed_json, acked, again, again_json) = tokio::task::spawn_blocking(move || {
        (
            run(&["incidents"], &c),
            run(&["incidents", "--output", "json"], &c),
            run(&["ack", "1", "--by", "alice"], &c),
            run(&["ack", "1", "--by", "alice"], &c),
            run(&["ack", "1", "--output", "json"], &c),
        )
    })
    .await
    .expect("join");
    let listing = stdout(&listed);
    assert!(
        listing.starts_with("#1      open         PiHot                    1 step sent   CPU at 85°C on 00000000000051a1\n"),
        "{listing:?}"
    );
    let v = json(&listed_json);
    assert_eq!(v["incidents"][0]["id"], 1);
    assert_eq!(v["incidents"][0]["state"], "open");
    assert_eq!(v["incidents"][0]["route"], "#1");
    assert!(
        v["incidents"][0]["opened_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{v}"
    );
    assert_eq!(
        stdout(&acked),
        "incident #1 acknowledged (was open); 1 notice sent to where it was paged\n"
    );
    assert_eq!(
        stdout(&again),
        "incident #1: nothing to do, it is already acknowledged\n"
    );
    assert_eq!(
        json(&again_json),
        serde_json::json!({"incident": 1, "action": "ack", "changed": false, "state": "acked"})
    );
    // What the relay refuses is one plain line on stderr.
    let c = cli_cfg.clone();
    let missing = tokio::task::spawn_blocking(move || run(&["ack", "99"], &c))
        .await
        .expect("join");
    assert!(!missing.status.success());
    assert_eq!(stdout(&missing), "");
    assert_eq!(
        String::from_utf8_lossy(&missing.stderr),
        "error: 404 Not Found: no such incident\n"
    );
    fake.wait_for(2, Duration::from_secs(5)).await;

    // Alertmanager resolves it: the message says so, with the incident and how long it fired.
    let resolved = webhook(&[("00000000000051a1", "resolved")], "").replace(
        r#""status":"firing","receiver""#,
        r#""status":"resolved","receiver""#,
    );
    relay.fire(resolved).await;
    let got = fake.wait_for(3, Duration::from_secs(5)).await;
    let text = got[2].json()["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        text.starts_with(
            "[RESOLVED] PiHot on 00000000000051a1:9831 (incident #1)\nResolved after firing for 15m (from 2026-03-01T12:30:00Z to 2026-03-01T12:45:00Z)\nsite=wh-2"
        ),
        "{text}"
    );
    assert!(!text.contains("CPU at 85°C"), "{text}");

    // The journal, at the default level, tells the same story by incident number.
    relay.wait_log("kind=resolved").await;
    let accepted = lines_with(&relay, "webhook accepted");
    assert_eq!(accepted.len(), 2, "{accepted:#?}");
    assert_eq!(field(&accepted[0], "alerts"), Some("1"));
    assert_eq!(field(&accepted[0], "group"), Some("alertname=PiHot"));
    assert_eq!(field(&accepted[0], "incidents_opened"), Some("1"));
    assert_eq!(field(&accepted[0], "deliveries"), Some("1"));
    assert_eq!(field(&accepted[0], "incidents_joined"), Some(""));
    assert_eq!(field(&accepted[1], "resolved"), Some("1"));
    assert_eq!(field(&accepted[1], "incidents_resolved"), Some("1"));
    let delivered = lines_with(&relay, "delivered");
    let kinds: Vec<String> = delivered
        .iter()
        .map(|l| {
            ["incident", "kind", "channel", "attempt"]
                .map(|k| format!("{k}={}", field(l, k).unwrap_or("?")))
                .join(" ")
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "incident=1 kind=firing channel=ops attempt=1",
            "incident=1 kind=notice channel=ops attempt=1",
            "incident=1 kind=resolved channel=ops attempt=1",
        ],
        "{delivered:#?}"
    );
    let acks = lines_with(&relay, "incident acknowledged by hand");
    assert_eq!(acks.len(), 1, "{acks:#?}");
    assert_eq!(field(&acks[0], "incident"), Some("1"));
    assert_eq!(field(&acks[0], "by"), Some("alice via API from 127.0.0.1"));
    assert_eq!(field(&acks[0], "from"), Some("open"));
    assert_eq!(
        lines_with(&relay, "incident already acknowledged: nothing to do").len(),
        2
    );
}

//! The Alertmanager-compatible configuration through the real binary: `check-config --test`
//! (where a label set goes, exit status by match), `matchers:` errors, and `send_resolved:
//! false` keeping RESOLVED messages from a destination end to end.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::{Fake, Relay, Reply, binary, tempdir, wait_db, webhook};

fn check_config(dir: &Path, yaml: &str, args: &[&str]) -> Output {
    let file = dir.join("relay.yml");
    std::fs::write(&file, yaml).expect("write config");
    Command::new(binary())
        .arg("check-config")
        .arg(&file)
        .args(args)
        .output()
        .expect("run check-config")
}

const ROUTED: &str = r#"storage: { sqlite: relay.db }
auth: none
channels:
  ops: { type: webhook, url: "http://127.0.0.1:9/ops", send_resolved: false }
  sms:
    type: twilio
    account_sid: AC1
    auth_token: t
    from: "+15005550006"
    to: ["+447700900123"]
    budget: { max: 5, per: 1h, overflow: [ops] }
policies:
  page:
    steps: [ { notify: [sms] }, { after: 15m, notify: [ops] } ]
    storm: { window: 10m, threshold: 20, group_by: [site] }
  chat: { steps: [ { notify: [ops] } ] }
routes:
  - name: lab-critical
    matchers:
      - severity="critical"
      - site=~"lab-.*"
    policy: page
    continue: true
  - matchers: [ '{severity=~"critical|warning"}' ]
    policy: chat
"#;

#[test]
fn check_config_test_prints_where_labels_go_and_exits_by_match() {
    let dir = tempdir();
    let out = check_config(
        dir.path(),
        ROUTED,
        &["--test", "severity=critical,site=lab-1"],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let want = [
        "lab-critical,#2",
        "route lab-critical: {severity=\"critical\", site=~\"lab-.*\"} (continue)",
        "  policy page (until acknowledged)",
        "    step 1 after 0s: sms/+447700900123",
        "    step 2 after 15m: ops",
        "    storm: more than 20 incidents within 10m by [site] collapse into summaries",
        "    budget sms/+447700900123: 5 per 1h per destination, overflow to ops",
        "    ops: send_resolved false (no RESOLVED message)",
        "route #2: {severity=~\"critical|warning\"}",
        "  policy chat (until acknowledged)",
    ];
    for line in want {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in\n{stdout}"
        );
    }
    // The brace form, as amtool and the matchers take it.
    let out = check_config(dir.path(), ROUTED, &["--test", r#"{severity="warning"}"#]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("#2\n"));
    // No route: said, and exit 1 (a script can gate a change on it).
    let out = check_config(dir.path(), ROUTED, &["--test", "severity=info"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "no route matches {severity=\"info\"}: the alert would be stored and sent nowhere\n"
    );
    // A pattern is no label set.
    let out = check_config(dir.path(), ROUTED, &["--test", "severity=~crit"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--test: ") && stderr.contains("name=value only"),
        "{stderr}"
    );
}

#[test]
fn a_matcher_that_does_not_parse_is_named_by_key_and_index() {
    let dir = tempdir();
    let yaml = ROUTED.replace(r#"- site=~"lab-.*""#, r#"- site=~"lab-(""#);
    let out = check_config(dir.path(), &yaml, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("routes[0].matchers[1]: ") && stderr.contains("invalid regex"),
        "{stderr}"
    );
    let yaml = ROUTED.replace("policy: chat", "policy: chat\n    match: { site: x }");
    let out = check_config(dir.path(), &yaml, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "routes[1].matchers: set either routes[1].match or routes[1].matchers, not both"
        ),
        "{stderr}"
    );
}

#[tokio::test]
async fn send_resolved_false_creates_no_resolved_message() {
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    let yaml = format!(
        "storage: {{ sqlite: relay.db }}\n{}channels:\n  loud: {{ type: webhook, url: '{f}/loud' }}\n  quiet: {{ type: webhook, url: '{f}/quiet', send_resolved: false }}\n\
         policies: {{ p: {{ steps: [ {{ notify: [loud, quiet] }} ] }} }}\nroutes: [ {{ matchers: ['severity=\"critical\"'], policy: p }} ]\n",
        crate::support::FAST_DELIVERY,
        f = fake.url()
    );
    let relay = Relay::start(dir.path(), &yaml);
    relay
        .fire(webhook(&[("00000000000009a1", "firing")], ""))
        .await;
    fake.wait_on("/quiet", 1, Duration::from_secs(5)).await;
    fake.wait_on("/loud", 1, Duration::from_secs(5)).await;
    relay
        .fire(webhook(&[("00000000000009a1", "resolved")], ""))
        .await;
    let loud = fake.wait_on("/loud", 2, Duration::from_secs(5)).await;
    assert_eq!(loud[1].json()["status"], "resolved");
    // The resolved event is stored, with a delivery for loud and none for quiet.
    wait_db(
        &dir.path().join("relay.db"),
        "SELECT (SELECT COUNT(*) FROM alert_events WHERE status = 'resolved') = 1
            AND (SELECT COUNT(*) FROM deliveries WHERE destination = 'quiet') = 1
            AND (SELECT COUNT(*) FROM deliveries WHERE destination = 'loud') = 2",
        Duration::from_secs(5),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        fake.received_on("/quiet").len(),
        1,
        "only the firing message"
    );
}

//! The real Alertmanager (Debian's `prometheus-alertmanager`) posting to the relay: fire and
//! resolve an alert through Alertmanager's API, see both arrive at a fake provider.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::support::{Fake, Relay, Reply, client, tempdir};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

pub(crate) struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts Alertmanager on `config` listening on a port of its own choosing (`:0`), and returns
/// it with its `http://host:port` once it says where it listens.
fn spawn_alertmanager(config: &Path, storage: &Path) -> (Alertmanager, String) {
    let mut child = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg("--web.listen-address=127.0.0.1:0")
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start alertmanager");
    let stderr = child.stderr.take().expect("stderr");
    let am = Alertmanager(child);
    let (tx, rx) = mpsc::channel();
    // Reads on after the address, so Alertmanager never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut log = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            panic!(
                "Alertmanager did not say its address; log:\n{}",
                log.join("\n")
            );
        };
        if line.contains("msg=\"Listening on\"")
            && let Some(addr) = line
                .split("address=")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
        {
            return (am, format!("http://{addr}"));
        }
        log.push(line);
    }
}

#[tokio::test]
async fn real_alertmanager_fires_and_resolves_through_the_relay() {
    assert!(
        Path::new(ALERTMANAGER).exists(),
        "{ALERTMANAGER} not found: install Debian's prometheus-alertmanager (`apt-get install prometheus-alertmanager`; .ci/run does)"
    );
    let fake = Fake::start(Reply::new(200, "")).await;
    let dir = tempdir();
    std::fs::write(dir.path().join("token"), "am-token").expect("token");
    let relay = Relay::start(
        dir.path(),
        &format!(
            "auth: {{ bearer_token_file: token }}\nstorage: {{ sqlite: relay.db }}\n\
             channels: {{ hook: {{ type: webhook, url: '{}/h' }} }}\n\
             policies: {{ p: {{ steps: [ {{ notify: [hook] }} ] }} }}\nroutes: [ {{ policy: p }} ]\n",
            fake.url()
        ),
    );
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: relay\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: relay\n    webhook_configs:\n      - url: {}\n        send_resolved: true\n\
             \x20       http_config:\n          authorization:\n            credentials_file: {}\n",
            relay.url("/webhook"),
            dir.path().join("token").display()
        ),
    )
    .expect("am config");
    let (am, base) = spawn_alertmanager(&am_config, &dir.path().join("am"));
    let api = format!("{base}/api/v2/alerts");
    let c = client();
    let alert = |ends: &str| {
        serde_json::json!([{
            "labels": { "alertname": "PiUndervoltage", "instance": "pi-7:9831", "severity": "critical" },
            "annotations": { "summary": "Under-voltage on pi-7" },
            "endsAt": ends,
        }])
    };
    let later = "2099-01-01T00:00:00Z";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match c.post(&api).json(&alert(later)).send().await {
            Ok(r) if r.status().is_success() => break,
            _ => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "Alertmanager at {base} does not take alerts"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let got = fake.wait_for(1, Duration::from_secs(20)).await;
    let firing = got[0].json();
    assert_eq!(firing["status"], "firing");
    assert_eq!(firing["alert"]["labels"]["alertname"], "PiUndervoltage");
    let fingerprint = firing["alert"]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    assert_eq!(fingerprint.len(), 16);

    // Resolve: an endsAt in the past.
    let r = c
        .post(&api)
        .json(&alert("2000-01-01T00:00:00Z"))
        .send()
        .await
        .expect("resolve");
    assert!(r.status().is_success());
    let got = fake.wait_for(2, Duration::from_secs(20)).await;
    let resolved = got[1].json();
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["alert"]["fingerprint"], fingerprint.as_str());
    drop(am);
    assert!(
        relay
            .metric("alert_relay_webhooks_total{status=\"accepted\"}")
            .await
            >= 2.0
    );
}

/// Starts Alertmanager posting to `webhook` and returns it with its alerts API URL, once it
/// answers.
async fn alertmanager(dir: &Path, webhook: &str) -> (Alertmanager, String) {
    alertmanager_with(dir, webhook, "1h").await
}

/// [`alertmanager`] re-sending firing groups every `repeat_interval`.
pub(crate) async fn alertmanager_with(
    dir: &Path,
    webhook: &str,
    repeat_interval: &str,
) -> (Alertmanager, String) {
    assert!(Path::new(ALERTMANAGER).exists(), "{ALERTMANAGER} not found");
    let am_config = dir.join("alertmanager.yml");
    std::fs::write(
        &am_config,
        format!(
            "route:\n  receiver: relay\n  group_by: [alertname]\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: {repeat_interval}\n\
             receivers:\n  - name: relay\n    webhook_configs:\n      - url: {webhook}\n        send_resolved: true\n",
        ),
    )
    .expect("am config");
    let (am, base) = spawn_alertmanager(&am_config, &dir.join("am"));
    let api = format!("{base}/api/v2/alerts");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !matches!(client().get(&api).send().await, Ok(r) if r.status().is_success()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Alertmanager at {base} does not answer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (am, api)
}

/// The issue's end-to-end path: fire through the real Alertmanager, step 1, step 2 on the fake
/// SMS provider, ack by SMS reply (signed like Twilio signs), step 3 never comes, resolve, the
/// resolved message.
#[tokio::test]
async fn escalation_end_to_end_with_sms_ack() {
    let fake = Fake::start(Reply::new(201, r#"{"sid":"SM1"}"#)).await;
    let dir = tempdir();
    let public = "https://relay.example.org";
    let relay = Relay::start(
        dir.path(),
        &format!(
            "public_url: {public}\nstorage: {{ sqlite: relay.db }}\n\
             channels:\n  hook: {{ type: webhook, url: '{u}/h' }}\n  hook3: {{ type: webhook, url: '{u}/h3' }}\n\
             \x20 sms: {{ type: twilio, account_sid: AC1, auth_token: tw-token, from: '+15005550006', to: ['+447700900123'], api_url: '{u}' }}\n\
             policies:\n  p:\n    steps: [ {{ notify: [hook] }}, {{ after: 2s, notify: [sms] }}, {{ after: 8s, notify: [hook3] }} ]\n\
             routes: [ {{ policy: p }} ]\n",
            u = fake.url()
        ),
    );
    let (am, api) = alertmanager(dir.path(), &relay.url("/webhook")).await;
    let c = client();
    let alert = |ends: &str| {
        serde_json::json!([{
            "labels": { "alertname": "UpsOnBattery", "instance": "pi-7:9831", "severity": "critical" },
            "annotations": { "summary": "UPS on battery at pi-7" },
            // The same startsAt in both posts: the resolved alert is the firing one.
            "startsAt": "2026-01-01T00:00:00Z",
            "endsAt": ends,
        }])
    };
    let r = c
        .post(&api)
        .json(&alert("2099-01-01T00:00:00Z"))
        .send()
        .await
        .expect("fire");
    assert!(r.status().is_success());
    let got = fake.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].path, "/h");
    assert!(
        got[0].json()["title"]
            .as_str()
            .unwrap_or("")
            .contains("(incident #1)")
    );
    let got = fake.wait_for(2, Duration::from_secs(10)).await;
    assert!(got[1].path.ends_with("/Messages.json"), "{}", got[1].path);
    let sms = got[1].form_value("Body");
    assert!(sms.contains("#1"), "{sms}");

    // The reply, as Twilio would post it; a forged signature first.
    let path = "/inbound/twilio/sms";
    let params: Vec<(String, String)> = [
        ("From", "+447700900123"),
        ("To", "+15005550006"),
        ("Body", "ACK 1"),
        ("MessageSid", "SM9"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let form = |p: &[(String, String)]| {
        p.iter()
            .map(|(k, v)| format!("{k}={}", v.replace('+', "%2B").replace(' ', "+")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let post = |sig: String| {
        c.post(relay.url(path))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("x-twilio-signature", sig)
            .body(form(&params))
            .send()
    };
    let forged = alert_relay::inbound::twilio_signature(
        "not-the-token",
        &format!("{public}{path}"),
        &params,
    );
    assert_eq!(post(forged).await.expect("post").status(), 403);
    let sig =
        alert_relay::inbound::twilio_signature("tw-token", &format!("{public}{path}"), &params);
    let r = post(sig).await.expect("post");
    assert_eq!(r.status(), 200);
    let twiml = r.text().await.expect("twiml");
    assert!(twiml.contains("Incident #1 acknowledged."), "{twiml}");
    // The ack is announced to hook and the SMS number.
    let got = fake.wait_for(4, Duration::from_secs(5)).await;
    assert!(got[2..].iter().any(|r| r.path == "/h"));
    assert!(got[2..].iter().any(|r| {
        r.form_value("Body")
            .contains("acknowledged by SMS from +447700900123")
    }));
    // Step 3 (8 s after the ingest, which came before step 1's message) never comes.
    let step_one = fake.received_at()[0];
    tokio::time::sleep_until((step_one + Duration::from_millis(8500)).into()).await;
    assert!(fake.received().iter().all(|r| r.path != "/h3"));

    // Resolve through Alertmanager: the resolved message reaches hook and the SMS number.
    let r = c
        .post(&api)
        .json(&alert("2026-01-01T00:00:01Z"))
        .send()
        .await
        .expect("resolve");
    assert!(r.status().is_success());
    let got = fake.wait_for(6, Duration::from_secs(20)).await;
    let resolved: Vec<_> = got[4..].iter().collect();
    assert!(
        resolved
            .iter()
            .any(|r| r.path == "/h" && r.json()["status"] == "resolved")
    );
    assert!(
        resolved
            .iter()
            .any(|r| r.form_value("Body").starts_with("RESOLVED"))
    );
    drop(am);
    assert!(fake.received().iter().all(|r| r.path != "/h3"));
}

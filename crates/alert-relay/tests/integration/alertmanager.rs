//! The real Alertmanager (Debian's `prometheus-alertmanager`) posting to the relay: fire and
//! resolve an alert through Alertmanager's API, see both arrive at a fake provider.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Fake, Relay, Reply, client, tempdir};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
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
    let am_port = free_port();
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
    let am = Alertmanager(
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", am_config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("am").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start alertmanager"),
    );
    let api = format!("http://127.0.0.1:{am_port}/api/v2/alerts");
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
                    "Alertmanager did not start on port {am_port}"
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

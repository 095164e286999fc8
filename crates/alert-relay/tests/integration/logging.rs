//! The log as systemd's journal and a log shipper read it, and the process metrics.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::{Relay, tempdir};

const ROUTING: &str = "storage: { sqlite: relay.db }\n\
    channels: { hook: { type: webhook, url: 'http://127.0.0.1:9/h' } }\n\
    policies: { p: { steps: [ { notify: [hook] } ] } }\nroutes: [ { policy: p } ]\n";

/// Rewrites the relay's configuration file and sends SIGHUP.
fn reload(relay: &Relay, dir: &std::path::Path, config: &str) {
    std::fs::write(dir.join("relay.yml"), config).expect("write config");
    let status = Command::new("kill")
        .args(["-HUP", &relay.child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
}

fn log(relay: &Relay) -> Vec<String> {
    relay.log.lock().expect("log").clone()
}

#[tokio::test]
async fn under_the_journal_each_line_has_its_priority_and_no_timestamp() {
    let dir = tempdir();
    let relay = Relay::start_with(dir.path(), ROUTING, &[], true);
    // A listen change warns (it needs a restart); a broken file is an error.
    reload(
        &relay,
        dir.path(),
        &format!("listen: 127.0.0.1:1\n{ROUTING}"),
    );
    relay
        .wait_log("<6>level=info msg=\"configuration reloaded\"")
        .await;
    reload(&relay, dir.path(), "listen: [\n");
    relay
        .wait_log("<3>level=error msg=\"invalid configuration, keeping the previous one: ")
        .await;
    let lines = log(&relay);
    let listening = format!(
        "<6>level=info msg=\"alert-relay {} listening\" address={}",
        env!("CARGO_PKG_VERSION"),
        relay.addr
    );
    assert!(lines.contains(&listening), "{lines:#?}");
    assert!(
        lines.contains(
            &"<4>level=warn msg=\"listen, tls and storage changes take effect at the next restart\""
                .to_owned()
        ),
        "{lines:#?}"
    );
    for line in &lines {
        assert!(
            ["<3>", "<4>", "<6>", "<7>"]
                .iter()
                .any(|p| line.starts_with(p)),
            "{line}"
        );
        assert!(
            !line.contains(" ts="),
            "the journal stamps lines itself: {line}"
        );
    }
}

#[tokio::test]
async fn json_lines_parse_as_json_objects() {
    let dir = tempdir();
    let relay = Relay::start_with(dir.path(), ROUTING, &["--log.format=json"], false);
    reload(&relay, dir.path(), "listen: [\n");
    relay.wait_log("\"level\":\"error\"").await;
    let lines = log(&relay);
    let mut listening = 0;
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["ts", "level", "msg"] {
            assert!(v[key].is_string(), "{key} in {line}");
        }
        if v.get("address").is_some() {
            assert_eq!(v["address"], relay.addr.to_string());
            listening += 1;
        }
    }
    assert_eq!(listening, 1, "{lines:#?}");
}

#[tokio::test]
async fn metrics_include_the_process_metrics() {
    let dir = tempdir();
    let relay = Relay::start(dir.path(), ROUTING);
    let text = relay.metrics().await;
    assert!(
        text.contains("# TYPE process_cpu_seconds counter\n"),
        "{text}"
    );
    assert!(relay.metric("process_cpu_seconds_total").await >= 0.0);
    let rss = relay.metric("process_resident_memory_bytes").await;
    assert!(rss > 0.0, "{text}");
    assert!(relay.metric("process_virtual_memory_bytes").await >= rss);
    let open = relay.metric("process_open_fds").await;
    assert!(open >= 3.0, "{text}");
    assert!(relay.metric("process_max_fds").await >= open);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let started = relay.metric("process_start_time_seconds").await;
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "{started} vs {now}"
    );
    assert!(
        text.contains(&format!(
            "alert_relay_build_info{{version=\"{}\",revision=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[test]
fn a_bad_log_flag_is_a_clear_error() {
    for (flag, names) in [
        ("--log.level=verbose", "debug, info, warn, error"),
        ("--log.format=text", "logfmt, json"),
    ] {
        let out = Command::new(crate::support::binary())
            .args([flag, "check-config", "/nonexistent.yml"])
            .output()
            .expect("run alert-relay");
        assert_eq!(out.status.code(), Some(2), "{flag}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid value"), "{stderr}");
        assert!(stderr.contains(names), "{stderr}");
    }
}

//! The log as systemd's journal and a log shipper read it, and the process metrics.

use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serving::logging::read::{field, priority};

use crate::support::{Relay, tempdir};

const ROUTING: &str = "storage: { sqlite: relay.db }\n\
    channels: { hook: { type: webhook, url: 'http://127.0.0.1:9/h' } }\n\
    policies: { p: { steps: [ { notify: [hook] } ] } }\nroutes: [ { policy: p } ]\n";

/// Rewrites the relay's configuration file and sends SIGHUP.
async fn reload(relay: &Relay, dir: &std::path::Path, config: &str) {
    // The relay installs its SIGHUP handler after logging its address, before its one thread
    // first serves a request: once a request is answered, SIGHUP no longer ends the process.
    relay.metrics().await;
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
    )
    .await;
    relay
        .wait_log("<6>level=info msg=\"configuration reloaded\"")
        .await;
    reload(&relay, dir.path(), "listen: [\n").await;
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
            &"<4>level=warn msg=\"listen and storage changes take effect at the next restart\""
                .to_owned()
        ),
        "{lines:#?}"
    );
    for line in &lines {
        // The journal stamps lines itself.
        let journal = matches!(priority(line), Some(3 | 4 | 6 | 7)) && field(line, "ts").is_none();
        assert!(journal, "{line}");
    }
}

#[tokio::test]
async fn json_lines_parse_as_json_objects() {
    let dir = tempdir();
    let relay = Relay::start_with(dir.path(), ROUTING, &["--log.format=json"], false);
    reload(&relay, dir.path(), "listen: [\n").await;
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
    let minimum = [
        ("process_cpu_seconds_total", 0.0),
        ("process_resident_memory_bytes", 1.0),
        ("process_virtual_memory_bytes", 1.0),
        ("process_open_fds", 3.0),
        ("process_max_fds", 3.0),
    ];
    for (name, min) in minimum {
        assert!(relay.metric(name).await >= min, "{name}: {text}");
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let age = now.as_secs_f64() - relay.metric("process_start_time_seconds").await;
    assert!((-1.0..3600.0).contains(&age), "started {age} s ago");
    assert!(
        text.contains(&format!(
            "alert_relay_build_info{{version=\"{}\",revision=\"",
            env!("CARGO_PKG_VERSION")
        )),
        "{text}"
    );
}

#[test]
fn a_bad_log_level_is_a_clear_error() {
    let out = Command::new(crate::support::binary())
        .args(["--log.level=verbose", "check-config", "/nonexistent.yml"])
        .output()
        .expect("run alert-relay");
    // clap's usage error: exit status 2, the value, the flag and the accepted values.
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid value 'verbose' for '--log.level <LEVEL>'\n  [possible values: debug, info, warn, error]"), "{stderr}");
}

//! The log as systemd's journal and a log shipper read it, and the process metrics.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serving::logging::read::{field, priority};

use crate::support::{Exporter, sample_value};

/// A procfs without the files the collectors read: their failures are logged as warnings.
const BROKEN_PROCFS: &str = "--path.procfs=/nonexistent/proc";

/// Log lines until one satisfies `done` (or 10 s pass).
fn lines_until(exporter: &Exporter, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut lines = Vec::new();
    while !done(&lines) && Instant::now() < deadline {
        lines.extend(exporter.log_lines());
        std::thread::sleep(Duration::from_millis(20));
    }
    lines
}

#[test]
fn under_the_journal_each_line_has_its_priority_and_no_timestamp() {
    let exporter = Exporter::start_under_journal(&[BROKEN_PROCFS]);
    let has_warning = |lines: &[String]| lines.iter().any(|l| l.starts_with("<4>"));
    let lines = lines_until(&exporter, has_warning);
    let listening = lines
        .iter()
        .find(|l| l.contains("msg=listening"))
        .expect("listening line");
    assert_eq!(
        listening,
        &format!("<6>level=info msg=listening address={}", exporter.addr)
    );
    assert!(has_warning(&lines), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>level=warn msg=\"collector failed: ")),
        "{lines:#?}"
    );
    for line in &lines {
        // The journal stamps lines itself.
        let journal = matches!(priority(line), Some(3 | 4 | 6 | 7)) && field(line, "ts").is_none();
        assert!(journal, "{line}");
    }
}

#[test]
fn a_journal_stream_that_is_not_stderr_is_ignored() {
    // As a program started from a service sees it: the variable, but other output.
    let exporter = Exporter::start_with_env(&[], &[("JOURNAL_STREAM", "1:1")]);
    let lines = exporter.log_lines();
    let listening = lines
        .iter()
        .find(|l| field(l, "msg") == Some("listening"))
        .expect("listening line");
    assert!(field(listening, "ts").is_some(), "{listening}");
}

#[test]
fn json_lines_parse_as_json_objects() {
    let exporter = Exporter::start(&["--log.format=json", BROKEN_PROCFS]);
    assert_eq!(exporter.get("/metrics", &[]).status, 200);
    let has_warning = |lines: &[String]| lines.iter().any(|l| l.contains("\"level\":\"warn\""));
    let lines = lines_until(&exporter, has_warning);
    assert!(has_warning(&lines), "{lines:#?}");
    let parsed: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let keys = |v: &serde_json::Value| ["ts", "level", "msg"].iter().all(|k| v[k].is_string());
    assert!(parsed.iter().all(keys), "{lines:#?}");
    let listening: Vec<_> = parsed.iter().filter(|v| v["msg"] == "listening").collect();
    assert_eq!(listening.len(), 1, "{lines:#?}");
    assert_eq!(listening[0]["address"], exporter.addr.to_string());
}

#[test]
fn a_bad_log_format_is_a_clear_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pi-exporter"))
        .arg("--log.format=text")
        .output()
        .expect("run pi-exporter");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let clear = stderr.contains("invalid value 'text' for '--log.format <FORMAT>'")
        && stderr.contains("[possible values: logfmt, json]");
    assert!(clear && out.status.code() == Some(2), "{out:?}");
}

#[test]
fn metrics_include_the_process_metrics() {
    let exporter = Exporter::on_fixture("pi4-sd", &[]);
    let body = exporter.get("/metrics", &[]).text();
    let value = |name: &str| sample_value(&body, &format!("{name} ")).unwrap_or(f64::NAN);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    let age = now.as_secs_f64() - value("process_start_time_seconds");
    let sane = value("process_cpu_seconds_total") >= 0.0
        && value("process_resident_memory_bytes") > 0.0
        && value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes")
        && value("process_open_fds") >= 3.0
        && value("process_max_fds") >= value("process_open_fds")
        && (-1.0..3600.0).contains(&age);
    assert!(sane, "started {age} s ago:\n{body}");
    assert!(body.contains("# TYPE process_cpu_seconds_total counter\n"));
}

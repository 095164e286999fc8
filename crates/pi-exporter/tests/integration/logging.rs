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

/// What an operator reads in the journal when the exporter starts: short lines, each said once,
/// no Rust debug output.
#[test]
fn start_up_lines_are_short_and_each_said_once() {
    let board = concat!(env!("CARGO_MANIFEST_DIR"), "/boards/pi4-throttled.yaml");
    for (fixture, extra) in [
        ("pi4-sd", vec![format!("--simulate.board={board}")]),
        ("doctor-prepared", vec![]),
    ] {
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let exporter = Exporter::on_fixture(fixture, &extra);
        let listening =
            |lines: &[String]| lines.iter().any(|l| field(l, "msg") == Some("listening"));
        let mut lines = lines_until(&exporter, listening);
        // The doctor's first run (its private sources probe then) ends soon after start-up.
        std::thread::sleep(Duration::from_millis(500));
        lines.extend(exporter.log_lines());
        assert!(listening(&lines), "{fixture}: {lines:#?}");
        let messages: Vec<String> = lines
            .iter()
            .map(|l| {
                l.split_once(" level=")
                    .map_or(l.as_str(), |(_, rest)| rest)
                    .to_owned()
            })
            .collect();
        // What a line says: its message and collector (a span or other fields do not make a
        // probe's second line a different one).
        let said: Vec<(Option<&str>, Option<&str>, &str)> = lines
            .iter()
            .map(|l| (field(l, "msg"), field(l, "collector"), l.as_str()))
            .map(|(msg, collector, l)| (msg, collector, if msg.is_some() { "" } else { l }))
            .collect();
        for (index, message) in messages.iter().enumerate() {
            assert!(
                !said[..index].contains(&said[index]),
                "{fixture}: said twice: {message}\n{lines:#?}"
            );
            for debug_output in ["Paths {", "[\"", "incomplete at start-up", "found \""] {
                assert!(
                    !message.contains(debug_output),
                    "{fixture}: {debug_output:?} in {message}"
                );
            }
            // Measured as on a Pi, where the paths are /proc, /sys and / (here a checkout's).
            let root = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
            let as_on_a_pi = message.replace(&format!("{root}{fixture}"), "");
            if message.starts_with("info") {
                assert!(
                    as_on_a_pi.len() <= 180,
                    "{fixture}: {} characters: {message}",
                    as_on_a_pi.len()
                );
            }
        }
        // The inventory: one line per collector that found something, none for nothing found
        // after a failure.
        let inventory: Vec<&str> = lines
            .iter()
            .filter(|l| field(l, "msg").is_some_and(|m| m.starts_with("found ")))
            .filter_map(|l| field(l, "collector"))
            .collect();
        assert!(inventory.contains(&"filesystem"), "{fixture}: {lines:#?}");
        let mut unique = inventory.clone();
        unique.dedup();
        assert_eq!(unique, inventory, "{fixture}");
        let start = lines
            .iter()
            .find(|l| field(l, "msg") == Some("starting pi-exporter 0.1.0"))
            .unwrap_or_else(|| panic!("{fixture}: no start line in {lines:#?}"));
        assert_eq!(
            field(start, "collectors"),
            Some("filesystem,storage,firmware,system,history,rtc,time,doctor"),
            "{start}"
        );
    }
}

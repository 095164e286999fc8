//! `pi-exporter doctor` and the doctor collector on the prepared and neglected fixture trees.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::support::{Exporter, fixture, promtool_check, sample_value};

/// Path flags and board file of a doctor fixture tree.
fn tree_args(name: &str) -> Vec<String> {
    let root = fixture(name);
    let dir = |d: &str| root.join(d).display().to_string();
    vec![
        format!("--path.procfs={}", dir("proc")),
        format!("--path.sysfs={}", dir("sys")),
        format!("--path.rootfs={}", dir("rootfs")),
        format!("--path.devfs={}", dir("dev")),
        format!("--simulate.board={}", dir("board.yaml")),
    ]
}

fn doctor(args: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pi-exporter"))
        .arg("doctor")
        .args(args)
        .output()
        .expect("run pi-exporter doctor")
}

#[test]
fn the_prepared_pi_passes_and_exits_0() {
    let out = doctor(&tree_args("doctor-prepared"));
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}");
    assert!(table.starts_with("CHECK "), "{table}");
    assert!(table.contains("\n[recovery]\n"), "{table}");
    assert!(
        table.ends_with("\n25 pass, 0 warn, 0 fail, 0 skip\n"),
        "{table}"
    );
    for line in table
        .lines()
        .filter(|l| !l.starts_with(['[', 'C']) && !l.is_empty())
    {
        if line.contains(" pass, ") {
            continue;
        }
        assert!(line.split_whitespace().nth(1) == Some("PASS"), "{line}");
    }
}

#[test]
fn the_neglected_pi_fails_in_json_and_exits_1() {
    let mut args = tree_args("doctor-neglected");
    args.push("--format=json".into());
    let out = doctor(&args);
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let checks = report["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 25);
    let verdict = |name: &str| {
        checks
            .iter()
            .find(|c| c["check"] == name)
            .map(|c| c["verdict"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(verdict("throttling").as_deref(), Some("FAIL"));
    assert_eq!(verdict("ssh_password").as_deref(), Some("FAIL"));
    assert_eq!(verdict("exporter_exposure").as_deref(), Some("WARN"));
    assert_eq!(verdict("flash_wear").as_deref(), Some("SKIP"));
    assert_eq!(report["summary"]["pass"], 0);
    assert_eq!(report["summary"]["fail"], 11);
    let first = &checks[0];
    for key in ["check", "category", "verdict", "reason", "found", "fix"] {
        assert!(first.get(key).is_some(), "{key} in {first}");
    }
    // Logs go to stderr, never into the JSON.
    assert!(String::from_utf8_lossy(&out.stderr).contains("before 2024"));
}

#[test]
fn usage_errors_exit_2() {
    let out = doctor(&["--format=xml".to_owned()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
    let out = doctor(&["--simulate.board=/nonexistent/board.yaml".to_owned()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/board.yaml"));
}

fn scrape_until_doctor(exporter: &Exporter) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let body = exporter.get("/metrics", &[]).text();
        if body.contains("rpi_doctor_last_run_timestamp_seconds ") || Instant::now() > until {
            return body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_collector_exports_the_verdicts() {
    let prepared = tree_args("doctor-prepared");
    let args: Vec<&str> = prepared.iter().map(String::as_str).collect();
    let exporter = Exporter::start(&args);
    let body = scrape_until_doctor(&exporter);
    promtool_check(&body);
    let checks: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("rpi_doctor_check{"))
        .collect();
    // A state set: four series per check, the one of its status 1.
    assert_eq!(checks.len(), 4 * 25, "{body}");
    let set: Vec<&&str> = checks.iter().filter(|l| l.ends_with(" 1")).collect();
    assert_eq!(set.len(), 25, "{checks:#?}");
    assert!(
        set.iter().all(|l| l.contains("status=\"pass\"")),
        "{set:#?}"
    );
    assert!(body.contains(
        "rpi_doctor_check{check=\"unit_pi_exporter\",category=\"recovery\",status=\"pass\"} 1"
    ));
    assert!(body.contains(
        "rpi_doctor_check{check=\"unit_pi_exporter\",category=\"recovery\",status=\"fail\"} 0"
    ));
    assert_eq!(
        sample_value(&body, "rpi_doctor_checks{verdict=\"pass\"}"),
        Some(25.0)
    );
    let ran = sample_value(&body, "rpi_doctor_last_run_timestamp_seconds").expect("timestamp");
    assert!(ran > 1.7e9, "{ran}");
    assert_eq!(
        sample_value(
            &body,
            "rpi_exporter_collector_success{collector=\"doctor\"}"
        ),
        Some(1.0)
    );

    let neglected = tree_args("doctor-neglected");
    let args: Vec<&str> = neglected.iter().map(String::as_str).collect();
    let exporter = Exporter::start(&args);
    let body = scrape_until_doctor(&exporter);
    assert!(
        body.contains(
            "rpi_doctor_check{check=\"throttling\",category=\"power\",status=\"fail\"} 1"
        )
    );
    assert!(
        body.contains(
            "rpi_doctor_check{check=\"logrotate\",category=\"storage\",status=\"warn\"} 1"
        )
    );
    assert!(
        body.contains(
            "rpi_doctor_check{check=\"flash_wear\",category=\"storage\",status=\"skip\"} 1"
        )
    );
    // The server checks its own listen address (loopback here), not the unit's.
    assert!(body.contains(
        "rpi_doctor_check{check=\"exporter_exposure\",category=\"access\",status=\"pass\"} 1"
    ));
    assert_eq!(
        sample_value(&body, "rpi_doctor_checks{verdict=\"skip\"}"),
        Some(1.0)
    );
}

//! Golden-file test: the whole output on each fixture tree, compared with `tests/golden/`, and
//! linted by `promtool check metrics`. `UPDATE_GOLDEN=1 cargo test` rewrites the files.

use std::path::Path;

use crate::support::{Exporter, promtool_check};

/// Series whose values depend on the machine running the test rather than on the fixture:
/// `statvfs` of the fixture directories, timings, the host's clock, build metadata and the
/// exporter process itself. Their names, types and labels still count.
const VOLATILE: &[&str] = &[
    "rpi_filesystem_size_bytes",
    "rpi_filesystem_free_bytes",
    "rpi_filesystem_avail_bytes",
    "rpi_filesystem_files",
    "rpi_filesystem_files_free",
    "rpi_exporter_collector_duration_seconds",
    // The host's clock discipline (adjtimex) and RTC minus host clock.
    "rpi_time_synchronized",
    "rpi_time_estimated_error_seconds",
    "rpi_time_max_error_seconds",
    "rpi_time_offset_seconds",
    "rpi_time_frequency_adjustment_ratio",
    "rpi_time_status",
    "rpi_rtc_offset_seconds",
    // When the doctor ran, and its counts, which include the two host-dependent checks below.
    "rpi_doctor_last_run_timestamp_seconds",
    "rpi_doctor_checks",
];

/// Whether the series `name` has a volatile value: the process metrics (the exporter's own, read
/// from its /proc/self) and [`VOLATILE`].
fn volatile(name: &str) -> bool {
    VOLATILE.contains(&name) || serving::process::DESCRIPTORS.iter().any(|d| d.name == name)
}

/// Doctor checks whose verdict depends on the host: its clock discipline and `statvfs` of the
/// fixture directories.
const VOLATILE_CHECKS: &[&str] = &["check=\"clock_sync\"", "check=\"free_space\""];

pub(crate) fn normalise(exposition: &str) -> String {
    let mut out = String::with_capacity(exposition.len());
    for line in exposition.lines() {
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        if line.starts_with("rpi_exporter_build_info") {
            out.push_str("rpi_exporter_build_info{<volatile>} 1");
        } else if !line.starts_with('#')
            && (volatile(name)
                || (name == "rpi_doctor_check" && VOLATILE_CHECKS.iter().any(|c| line.contains(c))))
        {
            let head = line.rsplit_once(' ').map_or(line, |(head, _)| head);
            out.push_str(head);
            out.push_str(" <volatile>");
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

pub(crate) fn compare(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != actual {
        let diff: Vec<String> = expected
            .lines()
            .zip(actual.lines())
            .filter(|(e, a)| e != a)
            .take(10)
            .map(|(e, a)| format!("- {e}\n+ {a}"))
            .collect();
        panic!(
            "{} differs from the output ({} vs {} lines); first differences:\n{}\nrerun with UPDATE_GOLDEN=1 if the change is intended",
            path.display(),
            expected.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        );
    }
}

/// `--collector.history.state-file` in a fresh directory: the first start of the exporter.
pub(crate) fn fresh_state_file() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let flag = format!(
        "--collector.history.state-file={}",
        dir.path().join("history").display()
    );
    (dir, flag)
}

fn check_fixture(fixture: &str, extra: &[&str]) {
    let (_state, state_flag) = fresh_state_file();
    let mut args = vec![state_flag.as_str()];
    args.extend_from_slice(extra);
    let exporter = Exporter::on_fixture(fixture, &args);

    let text = exporter.get("/metrics", &[]);
    assert_eq!(text.status, 200);
    assert_eq!(
        text.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let body = text.text();
    promtool_check(&body);
    assert!(
        !body.contains("rpi_exporter_collector_success{collector=\"filesystem\"} 0"),
        "{body}"
    );
    compare(&format!("{fixture}.txt"), &normalise(&body));

    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let om = exporter.get("/metrics", &[("Accept", prometheus_accept)]);
    assert_eq!(om.status, 200);
    assert_eq!(
        om.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let om_body = om.text();
    assert!(om_body.ends_with("# EOF\n"));
    compare(&format!("{fixture}.openmetrics.txt"), &normalise(&om_body));
}

#[test]
fn pi4_with_sd_card_matches_golden_output() {
    // The card's rated endurance as an operator declares it (the vendor claim of a SanDisk High
    // Endurance card).
    check_fixture(
        "pi4-sd",
        &["--collector.storage.rated-endurance=mmcblk0=117TB"],
    );
}

#[test]
fn pi5_with_nvme_matches_golden_output() {
    check_fixture("pi5-nvme", &[]);
}

/// A Pi 4 after a watchdog reboot: only the device tree, so only the history collector runs.
#[test]
fn pi4_after_a_watchdog_reboot_matches_golden_output() {
    let (_state, state_flag) = fresh_state_file();
    let exporter = Exporter::on_fixture(
        "pi4-watchdog",
        &[
            "--collector.disable-defaults",
            "--collector.history",
            &state_flag,
        ],
    );
    let body = exporter.get("/metrics", &[]).text();
    promtool_check(&body);
    compare("pi4-watchdog.txt", &normalise(&body));
}

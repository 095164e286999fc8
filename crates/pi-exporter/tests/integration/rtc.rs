//! The rtc and time collectors through the binary: a Pi 5 sysfs tree with a kernel-owned DS3231,
//! a DS3231 read from userspace on a simulated bus (`boards/rtc-ds3231-stopped.yaml`), each
//! compared with `tests/golden/rtc-*.txt` and linted by promtool; and registers or buses that
//! are broken in every way the issue lists.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::golden::{compare, normalise};
use crate::support::{Exporter, fixture, promtool_check, sample_value};

fn board_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("boards")
        .join(format!("{name}.yaml"))
}

/// Only the rtc and time collectors, on `sysfs`, with a board file.
fn start(sysfs: &Path, board: &Path, extra: &[&str]) -> Exporter {
    let sysfs = format!("--path.sysfs={}", sysfs.display());
    // No dev/ in the fixtures: a real /dev/i2c-1 on the test machine stays out of the tests.
    let devfs = format!("--path.devfs={}", sysfs_parent_dev(&sysfs).display());
    let board = format!("--simulate.board={}", board.display());
    let mut args = vec![
        "--collector.disable-defaults",
        "--collector.rtc",
        "--collector.time",
        sysfs.as_str(),
        devfs.as_str(),
        board.as_str(),
    ];
    args.extend_from_slice(extra);
    Exporter::start(&args)
}

fn sysfs_parent_dev(sysfs_flag: &str) -> PathBuf {
    let sysfs = Path::new(sysfs_flag.trim_start_matches("--path.sysfs="));
    sysfs.parent().unwrap_or(sysfs).join("dev")
}

fn scrape(exporter: &Exporter) -> String {
    let response = exporter.get("/metrics", &[]);
    assert_eq!(response.status, 200);
    let body = response.text();
    promtool_check(&body);
    body
}

/// Scrapes until `ready` holds (the offset appears after the background thread's first round).
fn scrape_until(exporter: &Exporter, ready: impl Fn(&str) -> bool) -> String {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let body = scrape(exporter);
        if ready(&body) {
            return body;
        }
        assert!(Instant::now() < until, "never ready:\n{body}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn pi5_with_a_kernel_owned_ds3231_and_the_raw_read_matches_golden_output() {
    let exporter = start(
        &fixture("pi5-ds3231").join("sys"),
        &board_file("rtc-ds3231-stopped"),
        &["--collector.rtc.raw-registers"],
    );
    // Fixture files do not tick, so rtc0's offset is the coarse one, after a 1.5 s wait.
    let body = scrape_until(&exporter, |body| {
        body.contains("rpi_rtc_offset_seconds{device=\"rtc0\"}")
    });
    for collector in ["rtc", "time"] {
        assert_eq!(
            sample_value(
                &body,
                &format!("rpi_exporter_collector_success{{collector=\"{collector}\"}}")
            ),
            Some(1.0),
            "{body}"
        );
    }
    // The kernel returns a time for rtc1, but the raw read shows OSF: not valid.
    assert_eq!(
        sample_value(&body, "rpi_rtc_oscillator_stopped{device=\"rtc1\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&body, "rpi_rtc_time_valid{device=\"rtc1\"}"),
        Some(0.0)
    );
    assert!(!body.contains("rpi_rtc_time_seconds{device=\"rtc1\"}"));
    compare("rtc-pi5-ds3231.txt", &normalise(&body));
}

#[test]
fn a_userspace_ds3231_with_a_stopped_oscillator_matches_golden_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = start(dir.path(), &board_file("rtc-ds3231-stopped"), &[]);
    let body = scrape(&exporter);
    assert_eq!(
        sample_value(
            &body,
            "rpi_rtc_info{name=\"ds3231 1-0068\",device=\"1-0068\",source=\"i2c\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample_value(&body, "rpi_rtc_time_valid{device=\"1-0068\"}"),
        Some(0.0)
    );
    compare("rtc-userspace-stopped.txt", &normalise(&body));
    let logs = exporter.log_lines();
    assert!(
        logs.iter()
            .any(|l| l.contains("oscillator-stop flag (OSF) is set")),
        "{logs:?}"
    );
}

/// Each broken chip or bus: the scrape answers and passes promtool, the collector reports what
/// it could, and the problem is logged once however often it is scraped.
#[test]
fn bad_registers_and_bus_faults_are_reported_once_without_wrong_values() {
    struct Case {
        chip: &'static str,
        success: f64,
        /// `None`: no DS3231 series at all (nothing answers: no chip fitted).
        time_valid: Option<f64>,
        log: &'static str,
    }
    let cases = [
        Case {
            chip: "registers: {0x01: 0x7a, 0x0f: 0x08}",
            success: 1.0,
            time_valid: Some(0.0),
            log: "minutes register holds 0x7a",
        },
        Case {
            chip: "registers: {0x05: 0x13, 0x0f: 0x08}",
            success: 1.0,
            time_valid: Some(0.0),
            log: "month register holds 0x13",
        },
        Case {
            chip: "behaviour: timeout",
            success: 0.0,
            time_valid: Some(0.0),
            log: "bus timed out",
        },
        Case {
            chip: "behaviour: busy",
            success: 0.0,
            time_valid: Some(0.0),
            log: "address busy",
        },
        Case {
            chip: "behaviour: nack",
            success: 1.0,
            time_valid: None,
            log: "no DS3231 answers",
        },
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let board = dir.path().join("board.yaml");
    for case in cases {
        std::fs::write(
            &board,
            format!(
                "rtc:\n  ds3231:\n    - ticking: false\n      {}\n",
                case.chip
            ),
        )
        .expect("write board");
        let exporter = start(&dir.path().join("sys"), &board, &[]);
        let mut body = String::new();
        for _ in 0..3 {
            body = scrape(&exporter);
        }
        assert_eq!(
            sample_value(&body, "rpi_exporter_collector_success{collector=\"rtc\"}"),
            Some(case.success),
            "{}:\n{body}",
            case.chip
        );
        assert_eq!(
            sample_value(&body, "rpi_rtc_time_valid{device=\"1-0068\"}"),
            case.time_valid,
            "{}:\n{body}",
            case.chip
        );
        assert!(
            !body.contains("rpi_rtc_time_seconds"),
            "{}: no time may be shown:\n{body}",
            case.chip
        );
        let logs = exporter.log_lines();
        let mentions = logs.iter().filter(|l| l.contains(case.log)).count();
        assert_eq!(mentions, 1, "{}: {logs:#?}", case.chip);
        assert!(logs.iter().all(|l| !l.contains("panicked")), "{logs:#?}");
    }
}

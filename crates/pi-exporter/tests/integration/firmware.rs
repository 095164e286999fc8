//! The firmware collector through the binary: each shipped board file (`boards/`) simulated on
//! its fixture tree, compared with `tests/golden/board-<name>.txt` and linted by promtool; and the
//! sysfs fallback of a fixture without `/dev/vcio`.

use std::path::{Path, PathBuf};

use crate::golden::{compare, normalise};
use crate::support::{Exporter, promtool_check, sample_value};

fn board_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("boards")
        .join(format!("{name}.yaml"))
}

/// Runs only the firmware collector on `fixture` with the board file simulated, checks the
/// scrape against its golden file and returns it.
fn check_board(board: &str, fixture: &str) -> (Exporter, String) {
    let arg = format!("--simulate.board={}", board_file(board).display());
    let exporter = Exporter::on_fixture(
        fixture,
        &["--collector.disable-defaults", "--collector.firmware", &arg],
    );
    let response = exporter.get("/metrics", &[]);
    assert_eq!(response.status, 200);
    let body = response.text();
    promtool_check(&body);
    assert_eq!(
        sample_value(
            &body,
            "rpi_exporter_collector_success{collector=\"firmware\"}"
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample_value(&body, "rpi_firmware_source{source=\"mailbox\"}"),
        Some(1.0)
    );
    compare(&format!("board-{board}.txt"), &normalise(&body));
    (exporter, body)
}

#[test]
fn pi4_healthy_board_matches_golden_output() {
    let (exporter, body) = check_board("pi4-healthy", "pi4-sd");
    assert_eq!(
        sample_value(
            &body,
            "rpi_throttled_since_boot{condition=\"under_voltage\"}"
        ),
        Some(0.0)
    );
    let health: serde_json::Value =
        serde_json::from_slice(&exporter.get("/health", &[]).body).expect("json");
    assert_eq!(health["status"], "ok", "{health}");
}

#[test]
fn pi4_throttled_board_matches_golden_output_and_warns() {
    let (exporter, body) = check_board("pi4-throttled", "pi4-sd");
    assert_eq!(
        sample_value(&body, "rpi_throttled{condition=\"under_voltage\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&body, "rpi_clock_measured_hertz{clock=\"arm\"}"),
        Some(600_117_184.0)
    );
    let health: serde_json::Value =
        serde_json::from_slice(&exporter.get("/health", &[]).body).expect("json");
    assert_eq!(health["status"], "warning", "{health}");
    let warnings = health["warnings"].to_string();
    for expected in ["under_voltage now", "throttled now"] {
        assert!(warnings.contains(expected), "{warnings}");
    }
}

#[test]
fn pi5_board_matches_golden_output() {
    let (_exporter, body) = check_board("pi5", "pi5-nvme");
    for series in [
        "rpi_pmic_rail_amperes{rail=\"vdd_core\"}",
        "rpi_input_voltage_volts",
        "rpi_power_watts",
        "rpi_fan_speed_rpm",
    ] {
        assert!(sample_value(&body, series).is_some(), "{series}:\n{body}");
    }
}

#[test]
fn without_vcio_a_fixture_is_read_through_sysfs() {
    let exporter = Exporter::on_fixture(
        "pi5-nvme",
        &["--collector.disable-defaults", "--collector.firmware"],
    );
    let body = exporter.get("/metrics", &[]).text();
    promtool_check(&body);
    assert_eq!(
        sample_value(&body, "rpi_firmware_source{source=\"sysfs\"}"),
        Some(1.0)
    );
    assert_eq!(
        sample_value(&body, "rpi_soc_temperature_celsius"),
        Some(61.2)
    );
}

#[test]
fn a_board_file_with_a_typo_is_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("board.yaml");
    std::fs::write(
        &path,
        "firmware:\n  throttled: 0x50005\n  temprature_millicelsius: 1\n",
    )
    .expect("write");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pi-exporter"))
        .args([
            "--web.listen-address=127.0.0.1:0",
            &format!("--simulate.board={}", path.display()),
        ])
        .output()
        .expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr) + String::from_utf8_lossy(&output.stdout);
    assert!(stderr.contains("temprature_millicelsius"), "{stderr}");
}

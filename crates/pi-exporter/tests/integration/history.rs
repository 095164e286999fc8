//! The history collector's state file across simulated boots of the real binary: a clean stop
//! by SIGTERM, a power cut (SIGKILL), and a state directory that does not exist.

use std::path::Path;

use crate::support::{Exporter, fixture, sample_value};

/// Starts the exporter with only the history collector, procfs (the boot id) from `root`.
fn start(root: &Path, state_file: &Path) -> Exporter {
    let procfs = format!("--path.procfs={}", root.join("proc").display());
    let sysfs = format!(
        "--path.sysfs={}",
        fixture("pi4-watchdog").join("sys").display()
    );
    let state = format!("--collector.history.state-file={}", state_file.display());
    Exporter::start(&[
        "--collector.disable-defaults",
        "--collector.history",
        &procfs,
        &sysfs,
        &state,
    ])
}

fn boot(root: &Path, n: u8) {
    let dir = root.join("proc/sys/kernel/random");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let id = format!("00000000-0000-4000-8000-0000000000{n:02x}\n");
    std::fs::write(dir.join("boot_id"), id).expect("write boot id");
}

/// (last_shutdown_clean, unclean_shutdowns_total, boots_total).
fn scrape(exporter: &Exporter) -> (Option<f64>, Option<f64>, Option<f64>) {
    let body = exporter.get("/metrics", &[]).text();
    assert!(body.contains("rpi_exporter_collector_success{collector=\"history\"} 1"));
    (
        sample_value(&body, "rpi_last_shutdown_clean "),
        sample_value(&body, "rpi_unclean_shutdowns_total "),
        sample_value(&body, "rpi_boots_total "),
    )
}

#[test]
fn sigterm_is_a_clean_stop_and_sigkill_a_power_cut() {
    let root = tempfile::tempdir().expect("tempdir");
    let file = root.path().join("history");
    boot(root.path(), 1);
    let mut first = start(root.path(), &file);
    assert_eq!(scrape(&first), (None, Some(0.0), Some(1.0)));
    assert!(first.terminate().success());
    let text = std::fs::read_to_string(&file).expect("state file");
    assert!(text.contains("clean_stop 1"), "{text}");

    boot(root.path(), 2);
    let second = start(root.path(), &file);
    assert_eq!(scrape(&second), (Some(1.0), Some(0.0), Some(2.0)));
    drop(second); // SIGKILL: the boot ends without a clean stop.

    boot(root.path(), 3);
    let third = start(root.path(), &file);
    assert_eq!(scrape(&third), (Some(0.0), Some(1.0), Some(3.0)));
}

#[test]
fn without_a_state_directory_the_history_metrics_are_absent_and_the_rest_works() {
    let root = tempfile::tempdir().expect("tempdir");
    boot(root.path(), 1);
    let exporter = start(root.path(), &root.path().join("missing/history"));
    assert_eq!(scrape(&exporter), (None, None, None));
    let body = exporter.get("/metrics", &[]).text();
    assert!(body.contains("rpi_boot_reset_info{cause=\"watchdog_or_reboot\""));
    let log = exporter.log_lines().join("\n");
    assert_eq!(log.matches("no shutdown history").count(), 1, "{log}");
    assert!(!root.path().join("missing").exists());
}

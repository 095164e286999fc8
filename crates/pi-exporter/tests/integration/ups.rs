//! The ups collector through the binary: the demo board (`boards/ups-on-battery.yaml`), a UPS
//! served by a fake upsd on loopback, a kernel-owned gauge, each compared with
//! `tests/golden/ups-*.txt` and linted by promtool; the shutdown guard running a real command
//! once; and bad input (a NUT server sending garbage or dropping the connection).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::golden::{compare, normalise};
use crate::support::{Exporter, fixture, promtool_check, sample_value};

fn board_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("boards")
        .join(format!("{name}.yaml"))
}

/// Only the ups collector, on `sysfs` (no dev/: the host's buses and GPIO chips stay out).
fn start(sysfs: &Path, extra: &[&str]) -> Exporter {
    let sysfs_flag = format!("--path.sysfs={}", sysfs.display());
    let devfs = format!(
        "--path.devfs={}",
        sysfs.parent().unwrap_or(sysfs).join("dev").display()
    );
    let mut args = vec![
        "--collector.disable-defaults",
        "--collector.ups",
        sysfs_flag.as_str(),
        devfs.as_str(),
    ];
    args.extend_from_slice(extra);
    Exporter::start(&args)
}

fn scrape(exporter: &Exporter) -> String {
    let response = exporter.get("/metrics", &[]);
    assert_eq!(response.status, 200);
    let body = response.text();
    promtool_check(&body);
    body
}

/// A fake upsd answering every `LIST VAR` with `reply` (then closing when `drop` is set).
fn fake_upsd(reply: Vec<String>, drop: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let mut writer = stream.try_clone().expect("clone");
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                if line.starts_with("LIST VAR") {
                    for l in &reply {
                        let _ = writer.write_all(format!("{l}\n").as_bytes());
                    }
                    if drop {
                        break;
                    }
                } else if line.starts_with("LOGOUT") {
                    let _ = writer.write_all(b"OK Goodbye\n");
                    break;
                } else {
                    let _ = writer.write_all(b"OK\n");
                }
            }
        }
    });
    port
}

fn list(vars: &[(&str, &str)]) -> Vec<String> {
    let mut lines = vec!["BEGIN LIST VAR ups".to_owned()];
    lines.extend(
        vars.iter()
            .map(|(name, value)| format!("VAR ups {name} \"{value}\"")),
    );
    lines.push("END LIST VAR ups".to_owned());
    lines
}

#[test]
fn the_demo_board_on_battery_matches_golden_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let board = format!(
        "--simulate.board={}",
        board_file("ups-on-battery").display()
    );
    let exporter = start(&dir.path().join("sys"), &[board.as_str()]);
    let body = scrape(&exporter);
    assert_eq!(
        sample_value(&body, "rpi_exporter_collector_success{collector=\"ups\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(sample_value(&body, "rpi_ups_on_battery"), Some(1.0));
    assert_eq!(
        sample_value(&body, "rpi_ups_battery_voltage_volts"),
        Some(3.7)
    );
    assert_eq!(
        sample_value(&body, "rpi_ups_battery_charge_ratio"),
        Some(0.425)
    );
    compare("ups-on-battery.txt", &normalise(&body));
}

#[test]
fn a_nut_ups_matches_golden_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = fake_upsd(
        list(&[
            ("battery.charge", "64"),
            ("battery.runtime", "1380"),
            ("battery.voltage", "13.1"),
            ("device.model", "Back-UPS ES 700G"),
            ("driver.name", "usbhid-ups"),
            ("input.voltage", "0.0"),
            ("ups.load", "21"),
            ("ups.status", "OB DISCHRG"),
        ]),
        false,
    );
    let port = format!("--ups.nut.port={port}");
    let exporter = start(&dir.path().join("sys"), &["--ups.board=nut", port.as_str()]);
    let body = scrape(&exporter);
    assert_eq!(
        sample_value(&body, "rpi_ups_status{flag=\"OB\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(sample_value(&body, "rpi_ups_runtime_seconds"), Some(1380.0));
    compare("ups-nut.txt", &normalise(&body));
}

#[test]
fn a_kernel_owned_gauge_matches_golden_output() {
    let sys = fixture("ups-x120x-kernel").join("sys");
    let dir = tempfile::tempdir().expect("tempdir");
    let board = dir.path().join("board.yaml");
    std::fs::write(
        &board,
        "ups:\n  board: geekworm-x120x\n  gpio: {GPIO6: high}\n",
    )
    .expect("write");
    let board = format!("--simulate.board={}", board.display());
    let exporter = start(&sys, &[board.as_str()]);
    let body = scrape(&exporter);
    assert!(
        body.contains(
            "rpi_ups_info{board=\"geekworm-x120x\",chip=\"max17040\",source=\"power_supply\"} 1"
        ),
        "{body}"
    );
    compare("ups-x120x-kernel.txt", &normalise(&body));
}

#[test]
fn the_guard_runs_the_command_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("fired");
    let board = format!(
        "--simulate.board={}",
        board_file("ups-on-battery").display()
    );
    let command = format!("--ups.shutdown.command=touch {}", marker.display());
    let exporter = start(
        &dir.path().join("sys"),
        &[
            board.as_str(),
            "--ups.interval=1s",
            "--ups.shutdown.enable",
            "--ups.shutdown.charge-below=0.5",
            "--ups.shutdown.hold=2s",
            command.as_str(),
        ],
    );
    let until = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < until, "the guard never fired");
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = scrape(&exporter);
    assert_eq!(sample_value(&body, "rpi_ups_shutdown_pending"), Some(1.0));
    // Several more rounds: the command is not run again.
    std::thread::sleep(Duration::from_secs(3));
    let logs = exporter.log_lines();
    let runs = logs.iter().filter(|l| l.contains("SHUTDOWN (")).count();
    assert_eq!(runs, 1, "{logs:#?}");
    assert!(
        logs.iter().any(|l| l.contains("SHUTDOWN PENDING")),
        "{logs:#?}"
    );
}

#[test]
fn the_guard_in_dry_run_only_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("fired");
    let board = format!(
        "--simulate.board={}",
        board_file("ups-on-battery").display()
    );
    let command = format!("--ups.shutdown.command=touch {}", marker.display());
    let exporter = start(
        &dir.path().join("sys"),
        &[
            board.as_str(),
            "--ups.shutdown.enable",
            "--ups.shutdown.dry-run",
            "--ups.shutdown.charge-below=0.5",
            "--ups.shutdown.hold=0s",
            command.as_str(),
        ],
    );
    let body = scrape(&exporter);
    assert_eq!(sample_value(&body, "rpi_ups_shutdown_pending"), Some(1.0));
    std::thread::sleep(Duration::from_millis(300));
    let logs = exporter.log_lines();
    assert!(logs.iter().any(|l| l.contains("dry run")), "{logs:#?}");
    assert!(!marker.exists());
}

#[test]
fn a_nut_server_sending_garbage_or_dropping_the_connection_costs_only_the_readings() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (reply, drop, log) in [
        (vec!["ERR DATA-STALE".to_owned()], false, "DATA-STALE"),
        (
            vec![
                "BEGIN LIST VAR ups".to_owned(),
                "VAR ups battery.charge".to_owned(),
            ],
            false,
            "malformed",
        ),
        (
            vec![
                "BEGIN LIST VAR ups".to_owned(),
                "VAR ups battery.charge \"9\"".to_owned(),
            ],
            true,
            "closed the connection",
        ),
        (
            list(&[("battery.charge", "250"), ("ups.status", "OB")]),
            false,
            "implausible",
        ),
    ] {
        let port = fake_upsd(reply, drop);
        let port = format!("--ups.nut.port={port}");
        let exporter = start(
            &dir.path().join("sys"),
            &[
                "--ups.board=nut",
                "--ups.nut.timeout=500ms",
                "--ups.shutdown.enable",
                "--ups.shutdown.hold=0s",
                "--ups.shutdown.dry-run",
                port.as_str(),
            ],
        );
        let body = scrape(&exporter);
        assert_eq!(
            sample_value(&body, "rpi_exporter_collector_success{collector=\"ups\"}"),
            Some(0.0),
            "{log}: {body}"
        );
        for name in [
            "rpi_ups_on_battery",
            "rpi_ups_battery_charge_ratio",
            "rpi_ups_status",
        ] {
            assert!(!body.contains(name), "{log}: {name} in\n{body}");
        }
        assert_eq!(sample_value(&body, "rpi_ups_shutdown_pending"), Some(0.0));
        let logs = exporter.log_lines();
        assert!(logs.iter().any(|l| l.contains(log)), "{log}: {logs:#?}");
        assert!(!logs.iter().any(|l| l.contains("SHUTDOWN")), "{logs:#?}");
    }
}

#[test]
fn several_upses_from_a_config_file_match_golden_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = fake_upsd(
        list(&[
            ("battery.charge", "100"),
            ("driver.name", "usbhid-ups"),
            ("input.voltage", "231.0"),
            ("ups.load", "12"),
            ("ups.status", "OL"),
        ]),
        false,
    );
    let config = dir.path().join("ups.yaml");
    std::fs::write(
        &config,
        format!(
            "ups:\n  - name: hat\n    board: geekworm-x728\n  - name: rack\n    board: nut\n    nut: {{port: {port}, ups: ups}}\n"
        ),
    )
    .expect("write");
    let config = format!("--ups.config={}", config.display());
    let board = format!(
        "--simulate.board={}",
        board_file("ups-on-battery").display()
    );
    let exporter = start(&dir.path().join("sys"), &[config.as_str(), board.as_str()]);
    let body = scrape(&exporter);
    assert_eq!(
        sample_value(&body, "rpi_ups_on_battery{ups=\"hat\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample_value(&body, "rpi_ups_on_battery{ups=\"rack\"}"),
        Some(0.0),
        "{body}"
    );
    compare("ups-config.txt", &normalise(&body));
}

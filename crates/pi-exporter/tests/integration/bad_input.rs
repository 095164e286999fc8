//! Malformed, missing and unreadable sources: the scrape still answers, the affected collector
//! reports failure, the rest is intact, and nothing panics.

use std::fs;
use std::path::Path;

use crate::support::{Exporter, promtool_check, sample_value};

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

fn start(root: &Path) -> Exporter {
    let procfs = format!("--path.procfs={}", root.join("proc").display());
    let sysfs = format!("--path.sysfs={}", root.join("sys").display());
    let rootfs = format!("--path.rootfs={}", root.join("rootfs").display());
    Exporter::start(&[&procfs, &sysfs, &rootfs])
}

#[test]
fn garbage_everywhere_still_scrapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    fs::create_dir_all(root.join("rootfs")).expect("rootfs");
    write(
        root,
        "proc/self/mounts",
        "/dev/root / ext4 ro,relatime 0 0\ntruncated-line\n\0\0\0 binary junk\n",
    );
    write(
        root,
        "proc/diskstats",
        "179 0 mmcblk0 12 x y\n 179 0 mmcblk0 1 2 3 4 5 6 7 8 9 10 11\n",
    );
    write(root, "proc/stat", "cpu  garbage\nbtime not-a-number\n");
    write(root, "proc/uptime", "");
    write(root, "proc/meminfo", "MemTotal: lots kB\n");
    write(root, "proc/loadavg", "0.5 NaN\n");
    // A directory where a file is expected: unreadable even for root.
    fs::create_dir_all(root.join("proc/swaps")).expect("dir as file");
    write(root, "sys/fs/ext4/mmcblk0p2/errors_count", "\u{7f}\u{1}");

    let exporter = start(root);
    let response = exporter.get("/metrics", &[]);
    assert_eq!(response.status, 200);
    let body = response.text();
    promtool_check(&body);
    for collector in ["filesystem", "storage", "system"] {
        assert_eq!(
            sample_value(
                &body,
                &format!("rpi_exporter_collector_success{{collector=\"{collector}\"}}")
            ),
            Some(0.0),
            "{collector} must report failure:\n{body}"
        );
    }
    // What could be read is still there.
    assert!(
        body.contains(
            "rpi_filesystem_readonly{device=\"/dev/root\",fstype=\"ext4\",mountpoint=\"/\"} 1"
        ),
        "{body}"
    );
    assert_eq!(
        sample_value(&body, "rpi_disk_reads_completed_total{device=\"mmcblk0\"}"),
        Some(1.0)
    );
    assert!(exporter.log_lines().iter().all(|l| !l.contains("panicked")));
}

#[test]
fn missing_trees_still_scrape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exporter = start(&dir.path().join("does-not-exist"));
    let response = exporter.get("/metrics", &[]);
    assert_eq!(response.status, 200);
    let body = response.text();
    promtool_check(&body);
    assert_eq!(
        sample_value(
            &body,
            "rpi_exporter_collector_success{collector=\"system\"}"
        ),
        Some(0.0)
    );
    assert!(body.contains("rpi_exporter_build_info"));
    let health = exporter.get("/health", &[]);
    assert_eq!(health.status, 200);
}

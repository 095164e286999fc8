//! `system`: boot time, uptime, memory, swap and load averages.
//!
//! Every source file is read on its own: a missing or garbled one costs only its metrics, and
//! the collector reports the failure once all the others are in.

use super::parse::{Failures, parse_lines, read_parsed, unescape_octal};
use super::{BuildContext, CollectError, Collector, read_trimmed};
use crate::metrics::MetricSet;
use crate::paths::Paths;

/// Parses the `btime` line of `/proc/stat`: boot time in seconds since the Unix epoch.
pub fn parse_boot_time(stat: &str) -> Option<u64> {
    stat.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// Parses `/proc/uptime`, `350735.47 1334521.82`: seconds since boot, then idle seconds summed
/// over all CPUs.
pub fn parse_uptime(text: &str) -> Option<f64> {
    text.split_ascii_whitespace()
        .next()
        .and_then(parse_non_negative)
}

/// The load averages of `/proc/loadavg`, `1.12 0.87 0.64 2/312 98213`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAverage {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

pub fn parse_loadavg(text: &str) -> Option<LoadAverage> {
    let mut fields = text.split_ascii_whitespace();
    let mut next = || fields.next().and_then(parse_non_negative);
    Some(LoadAverage {
        one: next()?,
        five: next()?,
        fifteen: next()?,
    })
}

/// A finite, non-negative decimal; `f64::from_str` alone would also take `NaN`, `inf` and `-1`.
fn parse_non_negative(text: &str) -> Option<f64> {
    text.parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
}

/// The `/proc/meminfo` values this collector exports, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    pub mem_total: u64,
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// Parses `/proc/meminfo` (`MemTotal:        3881912 kB`); `None` unless all four keys are
/// present and valid.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let mut mem_total = None;
    let mut mem_available = None;
    let mut swap_total = None;
    let mut swap_free = None;
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut mem_total,
            "MemAvailable" => &mut mem_available,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        *slot = Some(parse_kib(value)?);
    }
    Some(MemInfo {
        mem_total: mem_total?,
        mem_available: mem_available?,
        swap_total: swap_total?,
        swap_free: swap_free?,
    })
}

/// A meminfo value, `   3881912 kB`, in bytes. The kernel writes "kB" but means KiB.
fn parse_kib(value: &str) -> Option<u64> {
    let kib: u64 = value.trim().strip_suffix(" kB")?.trim_end().parse().ok()?;
    kib.checked_mul(1024)
}

/// One active swap area, a line of `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapArea {
    /// The block device or, for a swap file, the file's path.
    pub device: String,
    /// `partition` or `file`.
    pub kind: String,
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// Parses `/proc/swaps`: a header line, then `Filename Type Size Used Priority` with sizes in
/// KiB. Returns the areas and how many lines were not valid.
pub fn parse_swaps(text: &str) -> (Vec<SwapArea>, usize) {
    // The header; a swap area's path is absolute, so it can never be this word.
    let areas = text
        .lines()
        .filter(|l| l.split_ascii_whitespace().next() != Some("Filename"));
    parse_lines(areas, |line| parse_swap_area(line.split_ascii_whitespace()))
}

fn parse_swap_area<'a>(mut fields: impl Iterator<Item = &'a str>) -> Option<SwapArea> {
    let device = unescape_octal(fields.next()?);
    let kind = fields.next()?.to_owned();
    let size_kib: u64 = fields.next()?.parse().ok()?;
    let used_kib: u64 = fields.next()?.parse().ok()?;
    let _priority: i32 = fields.next()?.parse().ok()?;
    Some(SwapArea {
        device,
        kind,
        size_bytes: size_kib.checked_mul(1024)?,
        used_bytes: used_kib.checked_mul(1024)?,
    })
}

#[derive(Debug)]
pub struct SystemCollector {
    paths: Paths,
}

impl SystemCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        Self {
            paths: ctx.paths.clone(),
        }
    }

    /// Reads and parses one procfs file; a failure of either step is recorded.
    fn read_proc<T>(
        &self,
        failures: &mut Failures,
        rel: &str,
        expected: &str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Option<T> {
        failures.record(read_parsed(&self.paths.proc(rel), expected, parse))
    }

    fn collect_swaps(&self, out: &mut MetricSet, failures: &mut Failures) {
        let path = self.paths.proc("swaps");
        let Some(text) = failures.record(read_trimmed(&path)) else {
            return;
        };
        let (areas, malformed) = parse_swaps(&text);
        for area in &areas {
            let labels = [
                ("device", area.device.as_str()),
                ("type", area.kind.as_str()),
            ];
            out.gauge(
                "rpi_swap_area_size_bytes",
                "Size of an active swap area in bytes, by device or swap file path and type (partition or file)",
            )
            .sample(labels, area.size_bytes as f64);
            out.gauge(
                "rpi_swap_area_used_bytes",
                "Bytes in use in an active swap area, by device or swap file path and type (partition or file)",
            )
            .sample(labels, area.used_bytes as f64);
        }
        failures.skipped_lines(&path, malformed);
    }
}

impl Collector for SystemCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        let mut failures = Failures::default();

        if let Some(boot_time) =
            self.read_proc(&mut failures, "stat", "a btime line", parse_boot_time)
        {
            out.gauge(
                "rpi_boot_time_seconds",
                "Time the system booted, in seconds since the Unix epoch",
            )
            .sample([], boot_time as f64);
        }

        if let Some(uptime) =
            self.read_proc(&mut failures, "uptime", "seconds since boot", parse_uptime)
        {
            out.gauge(
                "rpi_uptime_seconds",
                "Seconds since the system booted, including time spent suspended",
            )
            .sample([], uptime);
        }

        if let Some(mem) = self.read_proc(
            &mut failures,
            "meminfo",
            "MemTotal, MemAvailable, SwapTotal and SwapFree in kB",
            parse_meminfo,
        ) {
            let values = [
                (
                    "rpi_memory_total_bytes",
                    "Usable RAM in bytes: physical RAM minus what the firmware and kernel reserve",
                    mem.mem_total,
                ),
                (
                    "rpi_memory_available_bytes",
                    "Estimate of the bytes available for starting new applications without swapping",
                    mem.mem_available,
                ),
                (
                    "rpi_swap_total_bytes",
                    "Total swap space in bytes",
                    mem.swap_total,
                ),
                (
                    "rpi_swap_used_bytes",
                    "Swap space in use in bytes",
                    mem.swap_total.saturating_sub(mem.swap_free),
                ),
            ];
            for (name, help, value) in values {
                out.gauge(name, help).sample([], value as f64);
            }
        }

        self.collect_swaps(out, &mut failures);

        if let Some(load) = self.read_proc(
            &mut failures,
            "loadavg",
            "three load averages",
            parse_loadavg,
        ) {
            // Linux counts tasks in uninterruptible sleep too, so a stalled SD card raises load
            // on an idle CPU.
            let values = [
                (
                    "rpi_load1",
                    "Load average over 1 minute: runnable plus uninterruptible (usually I/O-waiting) tasks",
                    load.one,
                ),
                (
                    "rpi_load5",
                    "Load average over 5 minutes: runnable plus uninterruptible (usually I/O-waiting) tasks",
                    load.five,
                ),
                (
                    "rpi_load15",
                    "Load average over 15 minutes: runnable plus uninterruptible (usually I/O-waiting) tasks",
                    load.fifteen,
                ),
            ];
            for (name, help, value) in values {
                out.gauge(name, help).sample([], value);
            }
        }

        failures.finish()
    }

    /// Never waits on a device: procfs only.
    fn may_block(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::collector::{CollectorOptions, fixture};

    const MEMINFO: &str = "\
MemTotal:        3881912 kB
MemFree:         2211560 kB
MemAvailable:    3218232 kB
Buffers:           78912 kB
SwapCached:         2048 kB
SwapTotal:        102396 kB
SwapFree:          74236 kB
HugePages_Total:       0
";

    const SWAPS: &str = "\
Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority
/var/swap                               file\t\t102396\t\t28160\t\t-2
/dev/mmcblk0p3                          partition\t524284\t\t0\t\t-3
/mnt/usb\\040stick/swapfile              file\t\t1048572\t\t0\t\t-4
";

    #[test]
    fn parses_boot_time_uptime_and_load() {
        let stat =
            "cpu  1 2 3 4 5 6 7 0 0 0\nintr 10 0 0\nctxt 99\nbtime 1718012345\nprocesses 98213\n";
        assert_eq!(parse_boot_time(stat), Some(1_718_012_345));
        assert_eq!(parse_boot_time("cpu  1 2 3\n"), None);
        assert_eq!(parse_boot_time("btime soon\n"), None);
        assert_eq!(parse_boot_time(""), None);

        assert_eq!(parse_uptime("350735.47 1334521.82"), Some(350_735.47));
        assert_eq!(parse_uptime("12"), Some(12.0));
        for bad in ["", "NaN 1", "inf 1", "-5 1", "abc"] {
            assert_eq!(parse_uptime(bad), None, "{bad:?}");
        }

        assert_eq!(
            parse_loadavg("1.12 0.87 0.64 2/312 98213"),
            Some(LoadAverage {
                one: 1.12,
                five: 0.87,
                fifteen: 0.64
            })
        );
        assert_eq!(parse_loadavg("1.12 0.87"), None);
        assert_eq!(parse_loadavg("1.12 x 0.64 2/312 98213"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn parses_meminfo_in_bytes_and_rejects_gaps_and_garbage() {
        assert_eq!(
            parse_meminfo(MEMINFO),
            Some(MemInfo {
                mem_total: 3_881_912 * 1024,
                mem_available: 3_218_232 * 1024,
                swap_total: 102_396 * 1024,
                swap_free: 74_236 * 1024,
            })
        );
        let without_available = MEMINFO.replace("MemAvailable:    3218232 kB\n", "");
        assert_eq!(parse_meminfo(&without_available), None);
        let garbled = MEMINFO.replace("3881912 kB", "38x1912 kB");
        assert_eq!(parse_meminfo(&garbled), None);
        let without_unit = MEMINFO.replace("3881912 kB", "3881912");
        assert_eq!(parse_meminfo(&without_unit), None);
        let overflowing = MEMINFO.replace("3881912 kB", "18446744073709551615 kB");
        assert_eq!(parse_meminfo(&overflowing), None);
        assert_eq!(parse_meminfo(""), None);
    }

    #[test]
    fn parses_swap_areas_with_escaped_paths() {
        let (areas, malformed) = parse_swaps(SWAPS);
        assert_eq!(malformed, 0);
        assert_eq!(
            areas[0],
            SwapArea {
                device: "/var/swap".into(),
                kind: "file".into(),
                size_bytes: 102_396 * 1024,
                used_bytes: 28_160 * 1024,
            }
        );
        assert_eq!(areas[1].kind, "partition");
        assert_eq!(areas[2].device, "/mnt/usb stick/swapfile");

        let header_only = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n";
        assert_eq!(parse_swaps(header_only), (Vec::new(), 0));
        assert_eq!(parse_swaps(""), (Vec::new(), 0));

        let broken = "Filename Type Size Used Priority\n/var/swap file 102396\n/dev/sda2 partition 12x 0 -2\n/dev/sda3 partition 1 0 -2\n";
        let (areas, malformed) = parse_swaps(broken);
        assert_eq!(malformed, 2);
        assert_eq!(areas.len(), 1);
    }

    fn collector_at(root: &Path) -> SystemCollector {
        SystemCollector::new(&BuildContext {
            paths: Paths {
                procfs: root.join("proc"),
                sysfs: root.join("sys"),
                rootfs: root.join("rootfs"),
                ..Paths::default()
            },
            options: CollectorOptions::default(),
            board: None,
        })
    }

    fn single(set: &MetricSet, name: &str) -> Option<f64> {
        set.get(name)
            .and_then(|f| f.samples.first())
            .map(|s| s.value)
    }

    #[test]
    fn a_broken_file_costs_only_its_own_metrics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let proc = dir.path().join("proc");
        fs::create_dir(&proc).expect("mkdir");
        fs::write(proc.join("stat"), "cpu  1 2 3\nbtime 1718012345\n").expect("write");
        fs::write(proc.join("uptime"), "garbage\n").expect("write");
        fs::write(proc.join("meminfo"), MEMINFO).expect("write");
        fs::write(proc.join("swaps"), format!("{SWAPS}/dev/sdb1 partition\n")).expect("write");
        // loadavg missing entirely.

        let mut set = MetricSet::new();
        let err = collector_at(dir.path())
            .collect(&mut set)
            .expect_err("three broken sources");
        let message = err.to_string();
        for culprit in ["uptime", "swaps", "loadavg"] {
            assert!(
                message.contains(culprit),
                "{culprit} missing from {message}"
            );
        }

        assert_eq!(single(&set, "rpi_boot_time_seconds"), Some(1_718_012_345.0));
        assert_eq!(single(&set, "rpi_uptime_seconds"), None);
        assert_eq!(single(&set, "rpi_swap_used_bytes"), Some(28_160.0 * 1024.0));
        assert_eq!(
            set.get("rpi_swap_area_used_bytes").map(|f| f.samples.len()),
            Some(3)
        );
        assert!(set.get("rpi_load1").is_none());
    }

    #[test]
    fn fixtures_are_complete_and_consistent() {
        let mut pi4 = MetricSet::new();
        collector_at(&fixture("pi4-sd"))
            .collect(&mut pi4)
            .expect("pi4-sd fixture is well formed");
        let swap_file = pi4
            .get("rpi_swap_area_size_bytes")
            .and_then(|f| f.samples.first())
            .map(|s| s.labels.clone());
        assert_eq!(
            swap_file,
            Some(vec![
                ("device", "/var/swap".to_owned()),
                ("type", "file".to_owned())
            ])
        );
        // meminfo and /proc/swaps describe the same swap file.
        assert_eq!(
            single(&pi4, "rpi_swap_used_bytes"),
            single(&pi4, "rpi_swap_area_used_bytes")
        );
        let boot = single(&pi4, "rpi_boot_time_seconds").unwrap_or_default();
        let uptime = single(&pi4, "rpi_uptime_seconds").unwrap_or_default();
        assert!(boot > 1.6e9 && uptime > 0.0);
        assert!(single(&pi4, "rpi_load15").is_some());

        let mut pi5 = MetricSet::new();
        collector_at(&fixture("pi5-nvme"))
            .collect(&mut pi5)
            .expect("pi5-nvme fixture is well formed");
        assert_eq!(single(&pi5, "rpi_swap_total_bytes"), Some(0.0));
        assert!(pi5.get("rpi_swap_area_size_bytes").is_none());
        assert!(single(&pi5, "rpi_memory_available_bytes").is_some());
    }
}

//! The process metrics every Prometheus client library exports, named, typed and described as
//! client_golang's process collector does, so dashboards and rules made for any Go exporter
//! work on ours: CPU time, resident and virtual memory, open and maximum file descriptors,
//! start time.
//!
//! Read from `/proc/self` at each scrape: the process's own procfs, never the `--path.procfs`
//! of the machine an exporter describes. A value that cannot be read or parsed is an absent
//! metric, never an error: these series accompany a scrape, they must not spoil it. The
//! parsers are pure and take the files' text.

use std::io::Read as _;
use std::mem::MaybeUninit;

/// A counter or a gauge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// A process metric's exposition name (a counter's ends in `_total`), help text and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
}

/// One process metric with its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metric {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub value: f64,
}

/// What one read of `/proc/self` found; `None` where it could not tell.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Process {
    pub cpu_seconds: Option<f64>,
    pub resident_memory_bytes: Option<f64>,
    pub virtual_memory_bytes: Option<f64>,
    pub open_fds: Option<f64>,
    pub max_fds: Option<f64>,
    pub start_time_seconds: Option<f64>,
}

impl Process {
    /// Reads `/proc/self/{stat,limits,fd}` and the boot time in `/proc/stat`, once each.
    pub fn read() -> Self {
        // One buffer for the three files: `/proc/stat` is the longest, a few KiB.
        let mut buffer = String::with_capacity(4096);
        let stat = read("/proc/self/stat", &mut buffer).map(parse_stat);
        let boot_time = read("/proc/stat", &mut buffer).and_then(parse_boot_time);
        let max_fds = read("/proc/self/limits", &mut buffer).and_then(parse_max_open_files);
        let system = System {
            ticks_per_second: rustix::param::clock_ticks_per_second(),
            page_size: rustix::param::page_size(),
            boot_time,
        };
        Self::from_sources(
            &stat.unwrap_or_default(),
            &system,
            count_open_fds(),
            max_fds,
        )
    }

    /// Combines what the files said. Pure.
    fn from_sources(
        stat: &Stat,
        system: &System,
        open_fds: Option<u64>,
        max_fds: Option<f64>,
    ) -> Self {
        // Ticks and pages are small integers: f64 holds them exactly far beyond any uptime.
        #[allow(clippy::cast_precision_loss)]
        let ticks = system.ticks_per_second.max(1) as f64;
        #[allow(clippy::cast_precision_loss)]
        let float = |v: u64| v as f64;
        let page = u64::try_from(system.page_size).ok();
        Self {
            cpu_seconds: stat
                .utime
                .zip(stat.stime)
                .map(|(u, s)| float(u.saturating_add(s)) / ticks),
            resident_memory_bytes: stat
                .rss_pages
                .zip(page)
                .map(|(rss, page)| float(rss.saturating_mul(page))),
            virtual_memory_bytes: stat.vsize.map(float),
            open_fds: open_fds.map(float),
            max_fds,
            start_time_seconds: system
                .boot_time
                .zip(stat.start_ticks)
                .map(|(boot, start)| float(boot) + float(start) / ticks),
        }
    }

    /// The metrics that have a value, in client_golang's order.
    pub fn metrics(&self) -> impl Iterator<Item = Metric> + use<> {
        let values = [
            self.cpu_seconds,
            self.open_fds,
            self.max_fds,
            self.virtual_memory_bytes,
            self.resident_memory_bytes,
            self.start_time_seconds,
        ];
        DESCRIPTORS
            .into_iter()
            .zip(values)
            .filter_map(|(d, value)| {
                value.map(|value| Metric {
                    name: d.name,
                    help: d.help,
                    kind: d.kind,
                    value,
                })
            })
    }
}

/// The metrics, in client_golang's order, named and described exactly as its
/// `NewProcessCollector` does.
pub const DESCRIPTORS: [Descriptor; 6] = [
    Descriptor {
        name: "process_cpu_seconds_total",
        help: "Total user and system CPU time spent in seconds.",
        kind: Kind::Counter,
    },
    Descriptor {
        name: "process_open_fds",
        help: "Number of open file descriptors.",
        kind: Kind::Gauge,
    },
    Descriptor {
        name: "process_max_fds",
        help: "Maximum number of open file descriptors.",
        kind: Kind::Gauge,
    },
    Descriptor {
        name: "process_virtual_memory_bytes",
        help: "Virtual memory size in bytes.",
        kind: Kind::Gauge,
    },
    Descriptor {
        name: "process_resident_memory_bytes",
        help: "Resident memory size in bytes.",
        kind: Kind::Gauge,
    },
    Descriptor {
        name: "process_start_time_seconds",
        help: "Start time of the process since unix epoch in seconds.",
        kind: Kind::Gauge,
    },
];

/// What the kernel says about the machine rather than the process.
#[derive(Debug, Clone, Copy)]
struct System {
    ticks_per_second: u64,
    page_size: usize,
    /// `btime` of `/proc/stat`: boot time in seconds since the epoch.
    boot_time: Option<u64>,
}

/// The fields of `/proc/self/stat` used here; `None` where missing or malformed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stat {
    /// User and system CPU time, in clock ticks.
    utime: Option<u64>,
    stime: Option<u64>,
    /// Start time after boot, in clock ticks.
    start_ticks: Option<u64>,
    /// Virtual memory size in bytes.
    vsize: Option<u64>,
    /// Resident set size in pages.
    rss_pages: Option<u64>,
}

/// Reads a whole file into `buffer` (cleared first); `None` if it cannot be read.
fn read<'b>(path: &str, buffer: &'b mut String) -> Option<&'b str> {
    buffer.clear();
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_string(buffer))
        .ok()?;
    Some(buffer)
}

/// Parses `/proc/<pid>/stat` (proc_pid_stat(5)). The command name, field 2, is in parentheses
/// and may itself hold spaces and parentheses, so the fields are counted after the last `)`.
fn parse_stat(text: &str) -> Stat {
    let Some((_, rest)) = text.rsplit_once(')') else {
        return Stat::default();
    };
    let mut stat = Stat::default();
    // `rest` starts at field 3 (state); rss, field 24, is the last one needed.
    for (index, value) in rest.split_ascii_whitespace().enumerate().take(22) {
        let slot = match index + 3 {
            14 => &mut stat.utime,
            15 => &mut stat.stime,
            22 => &mut stat.start_ticks,
            23 => &mut stat.vsize,
            24 => &mut stat.rss_pages,
            _ => continue,
        };
        *slot = value.parse().ok();
    }
    stat
}

/// The `btime` line of `/proc/stat`: boot time in seconds since the epoch.
fn parse_boot_time(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|value| value.trim().parse().ok())
}

/// The soft limit on the `Max open files` line of `/proc/<pid>/limits`; `unlimited` is
/// `u64::MAX`, as client_golang reports it.
fn parse_max_open_files(text: &str) -> Option<f64> {
    let soft = text
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))?
        .split_ascii_whitespace()
        .next()?;
    #[allow(clippy::cast_precision_loss)]
    match soft {
        "unlimited" => Some(u64::MAX as f64),
        n => n.parse::<u64>().ok().map(|n| n as f64),
    }
}

/// Counts the entries of `/proc/self/fd` (the descriptor reading it included, as client_golang
/// counts) without allocating: the directory is read into a buffer on the stack.
fn count_open_fds() -> Option<u64> {
    use rustix::fs::{Mode, OFlags, RawDir};
    let dir = rustix::fs::open(
        "/proc/self/fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let mut buffer = [MaybeUninit::<u8>::uninit(); 4096];
    let mut entries = RawDir::new(&dir, &mut buffer);
    let mut count = 0;
    while let Some(entry) = entries.next() {
        let entry = entry.ok()?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            count += 1;
        }
    }
    Some(count)
}

#[cfg(test)]
mod tests;

//! `storage`: ext4 error counters, SD/eMMC health and per-device I/O.
//!
//! Three sources, each read independently so that one broken file costs only its own samples:
//!
//! - `<sysfs>/fs/ext4/<device>/`: the error counter and timestamps ext4 keeps in its superblock.
//!   They survive reboots, so an SD card that corrupted its root once stays visible.
//! - `<sysfs>/block/mmcblk<N>/device/`: the card's identity from its CID register and, on eMMC,
//!   the wear estimates from EXT_CSD. SD cards have no wear attributes at all; an absent file
//!   only omits its metric.
//! - `<procfs>/diskstats`: per-device I/O counters, minus the devices `device_exclude` matches.
//!
//! SD cards report no wear at all, so the bytes ext4 has written over the filesystem's life and
//! the rated endurance the operator declares (`--collector.storage.rated-endurance`) are what a
//! projection of the card's remaining life (a recording rule) is built from.

use std::path::Path;

use clap::{Arg, ArgAction, ArgMatches};
use regex_lite::Regex;

use super::flags::{self, FlagError};
use super::parse::{Failures, VerdictMemo, if_present, list_dir, parse_lines, read_parsed};
use super::{BuildContext, CollectError, Collector, read_trimmed, read_u64};
use crate::metrics::MetricSet;
use crate::paths::Paths;

/// Partitions (their I/O is already counted in the whole device's), RAM and loop devices, and
/// the eMMC boot and RPMB hardware partitions: node_exporter's default plus the MMC names.
pub const DEFAULT_DEVICE_EXCLUDE: &str =
    r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p|mmcblk\d+p)\d+$|^mmcblk\d+(boot\d+|rpmb)$";

/// diskstats counts in 512-byte sectors whatever the device's real sector size.
const DISKSTATS_SECTOR_BYTES: f64 = 512.0;

/// Label value for a card attribute that is absent or not in the manufacturer tables.
const UNKNOWN: &str = "unknown";

#[derive(Debug, Clone)]
pub struct Options {
    /// Block devices to leave out of the I/O metrics (`--collector.storage.device-exclude`);
    /// `None` keeps every device.
    pub device_exclude: Option<Regex>,
    /// `--collector.storage.rated-endurance DEVICE=SIZE`: bytes the device is rated to accept.
    pub rated_endurance: Vec<(String, f64)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            device_exclude: Some(Regex::new(DEFAULT_DEVICE_EXCLUDE).expect("valid default regex")),
            rated_endurance: Vec::new(),
        }
    }
}

/// The storage collector's flags.
pub fn args() -> Vec<Arg> {
    vec![
        Arg::new("collector.storage.device-exclude")
            .long("collector.storage.device-exclude")
            .value_name("REGEX")
            .default_value(DEFAULT_DEVICE_EXCLUDE)
            .value_parser(flags::regex)
            .help("Block devices to leave out of the I/O metrics (empty: keep all)"),
        Arg::new("collector.storage.rated-endurance")
            .long("collector.storage.rated-endurance")
            .value_name("DEVICE=SIZE")
            .action(ArgAction::Append)
            .value_parser(parse_rated_endurance)
            .help("Repeatable: the bytes a flash device is rated to accept, e.g. mmcblk0=117TB (decimal units as vendors quote them, or KiB..PiB), exported as rpi_flash_rated_endurance_bytes"),
    ]
}

/// `--collector.storage.*` into [`Options`].
pub fn options(m: &ArgMatches) -> Result<Options, FlagError> {
    Ok(Options {
        device_exclude: flags::regex_unless_empty(m, "collector.storage.device-exclude")?,
        rated_endurance: flags::many(m, "collector.storage.rated-endurance")?,
    })
}

/// Size suffixes of `--collector.storage.rated-endurance`: vendors quote decimal units (a
/// "117TB" card is 117e12 bytes); the binary ones are accepted for whoever thinks in them.
const SIZE_UNITS: &[(&str, f64)] = &[
    ("B", 1.0),
    ("kB", 1e3),
    ("KB", 1e3),
    ("MB", 1e6),
    ("GB", 1e9),
    ("TB", 1e12),
    ("PB", 1e15),
    ("KiB", 1024.0),
    ("MiB", 1024.0 * 1024.0),
    ("GiB", 1024.0 * 1024.0 * 1024.0),
    ("TiB", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("PiB", 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0),
];

/// Parses `DEVICE=SIZE`, e.g. `mmcblk0=117TB` or `mmcblk0=1.64PB`, into the device and bytes.
pub fn parse_rated_endurance(text: &str) -> Result<(String, f64), String> {
    let (device, size) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not DEVICE=SIZE (e.g. mmcblk0=117TB)"))?;
    if device.is_empty()
        || !device
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "{device:?} is not a block device name (e.g. mmcblk0)"
        ));
    }
    let split = size
        .find(|c: char| c.is_ascii_alphabetic())
        .ok_or_else(|| format!("{size:?} has no unit (B, kB, MB, GB, TB, PB, KiB ... PiB)"))?;
    let (number, unit) = size.split_at(split);
    let factor = SIZE_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, factor)| *factor)
        .ok_or_else(|| format!("unknown unit {unit:?} (B, kB, MB, GB, TB, PB, KiB ... PiB)"))?;
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("{number:?} is not a positive number"))?;
    Ok((device.to_owned(), value * factor))
}

impl Options {
    fn excludes(&self, device: &str) -> bool {
        self.device_exclude
            .as_ref()
            .is_some_and(|re| re.is_match(device))
    }
}

/// The counters of one line of `/proc/diskstats` this collector exports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskStats {
    pub device: String,
    pub reads_completed: u64,
    pub sectors_read: u64,
    pub read_time_ms: u64,
    pub writes_completed: u64,
    pub sectors_written: u64,
    pub write_time_ms: u64,
    /// Milliseconds during which the device had at least one request in flight.
    pub io_time_ms: u64,
}

/// Parses `/proc/diskstats`. Returns the devices and how many non-empty lines were not valid
/// (truncated, non-numeric, or a field count no kernel writes).
pub fn parse_diskstats(text: &str) -> (Vec<DiskStats>, usize) {
    parse_lines(text.lines(), parse_diskstats_line)
}

fn parse_diskstats_line(line: &str) -> Option<DiskStats> {
    let mut fields = line.split_ascii_whitespace();
    let _major: u32 = fields.next()?.parse().ok()?;
    let _minor: u32 = fields.next()?.parse().ok()?;
    let device = fields.next()?;
    let counters: Vec<u64> = fields.map(|f| f.parse().ok()).collect::<Option<_>>()?;
    // Kernels before 4.18 write 11 counters, 4.18 adds 4 for discards, 5.5 adds 2 for flushes.
    // Any other count means the line was cut short.
    if !(counters.len() == 11 || counters.len() == 15 || counters.len() >= 17) {
        return None;
    }
    let [
        reads_completed,
        _reads_merged,
        sectors_read,
        read_time_ms,
        writes_completed,
        _writes_merged,
        sectors_written,
        write_time_ms,
        _in_flight,
        io_time_ms,
        ..,
    ] = counters[..]
    else {
        return None;
    };
    Some(DiskStats {
        device: device.to_owned(),
        reads_completed,
        sectors_read,
        read_time_ms,
        writes_completed,
        sectors_written,
        write_time_ms,
        io_time_ms,
    })
}

/// Parses a sysfs hex value as the MMC driver prints it, `0x` and at least one hex digit.
fn parse_hex(text: &str) -> Option<u32> {
    let digits = text.strip_prefix("0x")?;
    // `from_str_radix` would also accept a sign.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, 16).ok()
}

fn parse_hex_u8(text: &str) -> Option<u8> {
    parse_hex(text).and_then(|v| u8::try_from(v).ok())
}

/// Parses the eMMC `life_time` attribute, `0x01 0x02`: the EXT_CSD device life time estimates
/// of type A and type B memory.
pub fn parse_life_time(text: &str) -> Option<(u8, u8)> {
    let mut fields = text.split_ascii_whitespace();
    let a = parse_hex_u8(fields.next()?)?;
    let b = parse_hex_u8(fields.next()?)?;
    fields.next().is_none().then_some((a, b))
}

/// Parses the eMMC `pre_eol_info` attribute, `0x01`, to its raw value.
pub fn parse_pre_eol_info(text: &str) -> Option<u8> {
    parse_hex_u8(text)
}

/// Parses the card's `manfid` attribute, `0x000003`.
pub fn parse_manfid(text: &str) -> Option<u32> {
    parse_hex(text)
}

/// The share of rated life an EXT_CSD life time estimate says is used: the upper bound of its
/// 10 % step (0x01 = up to 10 % ... 0x0A = up to 100 %), 1.1 for 0x0B (beyond rated life).
/// `None` for 0x00 (not defined) and the reserved values above 0x0B.
pub fn life_time_used_ratio(estimate: u8) -> Option<f64> {
    (1..=0x0B)
        .contains(&estimate)
        .then(|| f64::from(estimate) / 10.0)
}

/// The EXT_CSD pre-EOL state, 1 normal, 2 warning, 3 urgent; `None` for 0x00 (not defined)
/// and reserved values.
pub fn pre_eol_state(raw: u8) -> Option<u8> {
    (1..=3).contains(&raw).then_some(raw)
}

/// Manufacturer names by CID manufacturer ID. SD and MMC IDs are assigned by different bodies
/// (SD Association, JEDEC), so the card's `type` picks the table: 0x03 is SanDisk on an SD card
/// but nobody in particular on eMMC.
///
/// Best effort: neither body publishes its list. The SD IDs are the commonly documented ones, the
/// MMC IDs those the Linux MMC quirk tables name. Anything else is reported as "unknown" and by
/// number in `rpi_mmc_manufacturer_id`.
pub fn manufacturer_name(card_type: &str, manfid: u32) -> Option<&'static str> {
    let name = match card_type {
        "SD" | "SD-combo" => match manfid {
            0x01 => "Panasonic",
            0x02 => "Toshiba/Kioxia",
            0x03 => "SanDisk",
            0x1b => "Samsung",
            0x1d => "AData",
            0x27 => "Phison",
            0x28 => "Lexar",
            0x31 => "Silicon Power",
            0x41 => "Kingston",
            0x74 => "Transcend",
            0x76 => "Patriot",
            0x82 => "Sony",
            0x9c => "Angelbird/Hoodman",
            0x9f => "Kingston",
            0xad => "Longsys",
            _ => return None,
        },
        "MMC" => match manfid {
            0x02 | 0x45 => "SanDisk",
            0x11 => "Toshiba/Kioxia",
            0x13 | 0xfe => "Micron",
            0x15 => "Samsung",
            0x70 => "Kingston",
            0x90 => "SK hynix",
            _ => return None,
        },
        _ => return None,
    };
    Some(name)
}

/// Whole MMC block devices, `mmcblk0`, not their partitions or `mmcblk0boot0`.
fn is_whole_mmc_device(name: &str) -> bool {
    name.strip_prefix("mmcblk")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Reads a card attribute that becomes a label. The product name comes straight from the card's
/// CID register and counterfeit cards put arbitrary bytes there, so it is read lossily rather
/// than failing on invalid UTF-8.
fn read_label(path: &Path) -> Result<String, CollectError> {
    let bytes = std::fs::read(path).map_err(|e| CollectError::io(path, e))?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_owned())
}

#[derive(Debug)]
pub struct StorageCollector {
    paths: Paths,
    options: Options,
    /// `device_exclude`'s verdict per device name.
    excluded: VerdictMemo,
}

impl StorageCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        Self {
            paths: ctx.paths.clone(),
            options: ctx.options.storage.clone(),
            excluded: VerdictMemo::default(),
        }
    }

    fn collect_ext4(&self, out: &mut MetricSet, failures: &mut Failures) {
        // Absent until the ext4 driver registers, e.g. on a system running from NFS or btrfs.
        let dir = self.paths.sys("fs/ext4");
        let Some(devices) = if_present(failures, list_dir(&dir)) else {
            return;
        };
        for device in devices {
            // The driver's feature list, the only entry that is not a mounted filesystem.
            if device == "features" {
                continue;
            }
            let attribute = |name: &str| dir.join(&device).join(name);
            // Since the filesystem was created; absent on kernels before 2.6.36.
            let written = if_present(failures, read_u64(&attribute("lifetime_write_kbytes")));
            if let Some(kbytes) = written {
                out.counter(
                    "rpi_ext4_lifetime_written_bytes_total",
                    "Bytes written to the ext4 filesystem since it was created (lifetime_write_kbytes), across reboots",
                )
                .sample([("device", &device)], kbytes as f64 * 1024.0);
            }
            let Some(errors) = if_present(failures, read_u64(&attribute("errors_count"))) else {
                continue;
            };
            out.counter(
                "rpi_ext4_errors_total",
                "Errors recorded in the ext4 superblock's error counter, which persists across reboots",
            )
            .sample([("device", &device)], errors as f64);

            let times = [
                (
                    "first_error_time",
                    "rpi_ext4_first_error_time_seconds",
                    "Time of the first error recorded in the ext4 superblock, in seconds since the Unix epoch",
                ),
                (
                    "last_error_time",
                    "rpi_ext4_last_error_time_seconds",
                    "Time of the most recent error recorded in the ext4 superblock, in seconds since the Unix epoch",
                ),
            ];
            for (file, name, help) in times {
                // 0 means no error was ever recorded.
                if let Some(time) =
                    if_present(failures, read_u64(&attribute(file))).filter(|&t| t != 0)
                {
                    out.gauge(name, help)
                        .sample([("device", &device)], time as f64);
                }
            }
        }
    }

    fn collect_mmc(&self, out: &mut MetricSet, failures: &mut Failures) {
        let block = self.paths.sys("block");
        let Some(devices) = failures.record(list_dir(&block)) else {
            return;
        };
        for device in devices.iter().filter(|d| is_whole_mmc_device(d)) {
            let card = block.join(device).join("device");
            let attribute = |name: &str| card.join(name);
            // The MMC block driver always provides `type`; without it the card is gone.
            let Some(card_type) = if_present(failures, read_label(&attribute("type"))) else {
                continue;
            };
            let product = if_present(failures, read_label(&attribute("name")));
            let manfid = if_present(
                failures,
                read_parsed(&attribute("manfid"), "a hex manufacturer ID", parse_manfid),
            );
            let manufacturer = manfid
                .and_then(|id| manufacturer_name(&card_type, id))
                .unwrap_or(UNKNOWN);
            out.gauge(
                "rpi_mmc_info",
                "SD/eMMC card identity, always 1: card type (SD or MMC), product name and manufacturer (\"unknown\" when the exporter's table lacks its ID)",
            )
            .sample(
                [
                    ("device", device),
                    ("type", &card_type),
                    ("name", product.as_deref().unwrap_or(UNKNOWN)),
                    ("manufacturer", manufacturer),
                ],
                1.0,
            );
            if let Some(id) = manfid {
                out.gauge(
                    "rpi_mmc_manufacturer_id",
                    "Manufacturer ID from the card's CID register, assigned by the SD Association for SD cards and by JEDEC for eMMC",
                )
                .sample([("device", device)], f64::from(id));
            }

            let life_time = if_present(
                failures,
                read_parsed(&attribute("life_time"), "two hex bytes", parse_life_time),
            );
            if let Some((type_a, type_b)) = life_time {
                for (estimate, raw) in [("a", type_a), ("b", type_b)] {
                    if let Some(ratio) = life_time_used_ratio(raw) {
                        out.gauge(
                            "rpi_mmc_life_time_used_ratio",
                            "eMMC estimate of its rated life used, as the upper bound of the 10% step it reports (1.1 = beyond rated life), for memory types a and b (typically SLC and MLC)",
                        )
                        .sample([("device", device), ("estimate", estimate)], ratio);
                    }
                }
            }

            let pre_eol = if_present(
                failures,
                read_parsed(&attribute("pre_eol_info"), "a hex byte", parse_pre_eol_info),
            );
            if let Some(state) = pre_eol.and_then(pre_eol_state) {
                out.gauge(
                    "rpi_mmc_pre_eol_state",
                    "eMMC consumption of reserved blocks: 1 normal, 2 warning (80% consumed), 3 urgent (90% consumed)",
                )
                .sample([("device", device)], f64::from(state));
            }
        }
    }

    fn collect_diskstats(&self, out: &mut MetricSet, failures: &mut Failures) {
        let path = self.paths.proc("diskstats");
        let Some(text) = failures.record(read_trimmed(&path)) else {
            return;
        };
        let (disks, malformed) = parse_diskstats(&text);
        for disk in disks.iter().filter(|d| {
            !self
                .excluded
                .get_or(&d.device, || self.options.excludes(&d.device))
        }) {
            let series = [
                (
                    "rpi_disk_reads_completed_total",
                    "Reads completed by the block device",
                    disk.reads_completed as f64,
                ),
                (
                    "rpi_disk_writes_completed_total",
                    "Writes completed by the block device",
                    disk.writes_completed as f64,
                ),
                (
                    "rpi_disk_read_bytes_total",
                    "Bytes read from the block device",
                    disk.sectors_read as f64 * DISKSTATS_SECTOR_BYTES,
                ),
                (
                    "rpi_disk_written_bytes_total",
                    "Bytes written to the block device",
                    disk.sectors_written as f64 * DISKSTATS_SECTOR_BYTES,
                ),
                (
                    "rpi_disk_read_time_seconds_total",
                    "Seconds spent by all reads on the block device, summed over concurrent requests",
                    disk.read_time_ms as f64 / 1000.0,
                ),
                (
                    "rpi_disk_write_time_seconds_total",
                    "Seconds spent by all writes on the block device, summed over concurrent requests",
                    disk.write_time_ms as f64 / 1000.0,
                ),
                (
                    "rpi_disk_io_time_seconds_total",
                    "Seconds the block device had I/O in flight; its rate is the device's utilisation",
                    disk.io_time_ms as f64 / 1000.0,
                ),
            ];
            for (name, help, value) in series {
                out.counter(name, help)
                    .sample([("device", &disk.device)], value);
            }
        }
        failures.skipped_lines(&path, malformed);
    }
}

impl Collector for StorageCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        let mut failures = Failures::default();
        self.collect_ext4(out, &mut failures);
        self.collect_mmc(out, &mut failures);
        self.collect_diskstats(out, &mut failures);
        for (device, bytes) in &self.options.rated_endurance {
            out.gauge(
                "rpi_flash_rated_endurance_bytes",
                "Bytes the device is rated to accept before it wears out, as declared with --collector.storage.rated-endurance (a vendor claim)",
            )
            .sample([("device", device)], *bytes);
        }
        failures.finish()
    }

    /// Never waits on a device: diskstats and counters the kernel keeps (ext4 error counts,
    /// the eMMC health registers it read when the card was initialised).
    fn may_block(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::collector::{CollectorOptions, fixture};

    /// A kernel 6.x line (17 counters), a 4.18 line (15) and a pre-4.18 line (11).
    const DISKSTATS: &str = "\
   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0
 179       0 mmcblk0 48213 21344 3260162 93516 61234 70211 2764352 1102367 0 465240 1226840 3012 0 2516928 2156 15521 28800
 179       1 mmcblk0p1 412 1432 28542 1108 2 0 2 4 0 816 1112 0 0 0 0
   8       0 sda 1500 10 120000 900 300 5 4000 700 0 1400 1600
";

    #[test]
    fn parses_every_kernel_generation_of_diskstats() {
        let (disks, malformed) = parse_diskstats(DISKSTATS);
        assert_eq!(malformed, 0);
        let names: Vec<_> = disks.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["loop0", "mmcblk0", "mmcblk0p1", "sda"]);
        assert_eq!(
            disks[1],
            DiskStats {
                device: "mmcblk0".into(),
                reads_completed: 48213,
                sectors_read: 3_260_162,
                read_time_ms: 93516,
                writes_completed: 61234,
                sectors_written: 2_764_352,
                write_time_ms: 1_102_367,
                io_time_ms: 465_240,
            }
        );
        assert_eq!(disks[3].io_time_ms, 1400);
    }

    #[test]
    fn skips_and_counts_truncated_and_garbage_diskstats_lines() {
        let text = "\
 179       0 mmcblk0 1 2 3 4 5 6 7 8 0 10 11 0 0 0 0 0 0
 179       1 mmcblk0p1 1 2 3 4 5 6 7
 179       2 mmcblk0p2 1 2 3 4 5 6 7 8 0 10 11 12
 179       3 mmcblk0p3 1 2 x 4 5 6 7 8 0 10 11
 179       4 mmcblk0p4 1 2 3 4 5 6 7 8 0 10 -11
 abc       5 mmcblk0p5 1 2 3 4 5 6 7 8 0 10 11
 179
 259       0 nvme0n1 18446744073709551615 0 18446744073709551615 0 0 0 0 0 0 0 0
 259       1 nvme0n1p1 18446744073709551616 0 0 0 0 0 0 0 0 0 0
";
        let (disks, malformed) = parse_diskstats(text);
        let names: Vec<_> = disks.iter().map(|d| d.device.as_str()).collect();
        assert_eq!(names, ["mmcblk0", "nvme0n1"]);
        assert_eq!(malformed, 7);
        assert_eq!(disks[1].reads_completed, u64::MAX);

        assert_eq!(parse_diskstats(""), (Vec::new(), 0));
        assert_eq!(parse_diskstats("\n  \n"), (Vec::new(), 0));
    }

    #[test]
    fn parses_mmc_attributes_strictly() {
        assert_eq!(parse_life_time("0x01 0x02"), Some((1, 2)));
        assert_eq!(parse_life_time("0x0B 0x0a"), Some((0x0b, 0x0a)));
        for bad in [
            "",
            "0x01",
            "0x01 0x02 0x03",
            "01 02",
            "0x 0x01",
            "0x100 0x01",
            "0x+1 0x01",
            "0xzz 0x01",
        ] {
            assert_eq!(parse_life_time(bad), None, "{bad:?}");
        }
        assert_eq!(parse_pre_eol_info("0x02"), Some(2));
        assert_eq!(parse_pre_eol_info("2"), None);
        assert_eq!(parse_manfid("0x000003"), Some(3));
        assert_eq!(parse_manfid("0xffffffffff"), None);
        assert_eq!(parse_manfid(""), None);
    }

    #[test]
    fn life_time_steps_map_to_the_upper_bound_of_their_range() {
        assert_eq!(life_time_used_ratio(0x00), None);
        assert_eq!(life_time_used_ratio(0x01), Some(0.1));
        assert_eq!(life_time_used_ratio(0x03), Some(0.3));
        assert_eq!(life_time_used_ratio(0x0A), Some(1.0));
        assert_eq!(life_time_used_ratio(0x0B), Some(1.1));
        assert_eq!(life_time_used_ratio(0x0C), None);
        assert_eq!(pre_eol_state(0), None);
        assert_eq!(pre_eol_state(3), Some(3));
        assert_eq!(pre_eol_state(4), None);
    }

    #[test]
    fn manufacturer_table_depends_on_card_type() {
        assert_eq!(manufacturer_name("SD", 0x03), Some("SanDisk"));
        assert_eq!(manufacturer_name("MMC", 0x15), Some("Samsung"));
        assert_eq!(manufacturer_name("MMC", 0x03), None);
        assert_eq!(manufacturer_name("SD", 0x15), None);
        assert_eq!(manufacturer_name("SDIO", 0x03), None);
    }

    #[test]
    fn default_exclude_keeps_whole_disks_only() {
        let options = Options::default();
        for excluded in [
            "sda1",
            "nvme0n1p2",
            "mmcblk0p2",
            "mmcblk0boot1",
            "mmcblk0rpmb",
            "loop7",
            "ram15",
            "zram0",
        ] {
            assert!(options.excludes(excluded), "{excluded}");
        }
        for kept in ["sda", "nvme0n1", "mmcblk0", "mmcblk1", "dm-0", "md0", "sr0"] {
            assert!(!options.excludes(kept), "{kept}");
        }
        let keep_all = Options {
            device_exclude: None,
            ..Options::default()
        };
        assert!(!keep_all.excludes("loop0"));
    }

    #[test]
    fn rated_endurance_takes_vendor_units() {
        assert_eq!(
            parse_rated_endurance("mmcblk0=117TB"),
            Ok(("mmcblk0".into(), 117e12))
        );
        assert_eq!(
            parse_rated_endurance("mmcblk1=1.64PB"),
            Ok(("mmcblk1".into(), 1.64e15))
        );
        assert_eq!(
            parse_rated_endurance("sda=1TiB"),
            Ok(("sda".into(), 1_099_511_627_776.0))
        );
        for bad in [
            "mmcblk0",
            "=1TB",
            "mmcblk0=117",
            "mmcblk0=TB",
            "mmcblk0=117tb",
            "mmcblk0=-1TB",
            "mmcblk0=NaNTB",
            "mmc blk0=1TB",
            "mmcblk0{x}=1TB",
        ] {
            assert!(parse_rated_endurance(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_whole_mmc_devices_have_card_attributes() {
        assert!(is_whole_mmc_device("mmcblk0"));
        assert!(is_whole_mmc_device("mmcblk12"));
        for name in ["mmcblk", "mmcblk0p1", "mmcblk0boot0", "mmcblk0rpmb", "sda"] {
            assert!(!is_whole_mmc_device(name), "{name}");
        }
    }

    /// Writes `files` (path relative to the root, content) into a fresh tree.
    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, content) in files {
            let path = dir.path().join(rel);
            fs::create_dir_all(path.parent().expect("file has a parent")).expect("mkdir");
            fs::write(path, content).expect("write");
        }
        dir
    }

    fn collector_at(root: &Path) -> StorageCollector {
        StorageCollector::new(&BuildContext {
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

    /// The value of `name` for the sample carrying every label in `labels`.
    fn value(set: &MetricSet, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        set.get(name)?
            .samples
            .iter()
            .find(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
            })
            .map(|s| s.value)
    }

    fn emmc_tree() -> tempfile::TempDir {
        let dir = tree(&[
            ("proc/diskstats", DISKSTATS),
            ("sys/block/mmcblk0/device/type", "MMC\n"),
            ("sys/block/mmcblk0/device/name", "BJTD4R\n"),
            ("sys/block/mmcblk0/device/manfid", "0x000015\n"),
            ("sys/block/mmcblk0/device/life_time", "0x02 0x0b\n"),
            ("sys/block/mmcblk0/device/pre_eol_info", "0x01\n"),
            ("sys/block/mmcblk0p1/device/type", "not a whole device\n"),
            ("sys/block/mmcblk1/device/type", "SD\n"),
            ("sys/block/mmcblk1/device/manfid", "0x0000ee\n"),
        ]);
        // A counterfeit card's product name need not be UTF-8.
        fs::write(
            dir.path().join("sys/block/mmcblk1/device/name"),
            b"XY\xff12\n",
        )
        .expect("write");
        dir
    }

    #[test]
    fn reports_emmc_wear_and_sd_identity_without_ext4() {
        let dir = emmc_tree();
        let mut set = MetricSet::new();
        collector_at(dir.path())
            .collect(&mut set)
            .expect("no fs/ext4 and no SD wear files are not errors");

        let emmc = [("device", "mmcblk0")];
        assert_eq!(
            value(
                &set,
                "rpi_mmc_info",
                &[
                    ("device", "mmcblk0"),
                    ("type", "MMC"),
                    ("name", "BJTD4R"),
                    ("manufacturer", "Samsung")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(value(&set, "rpi_mmc_manufacturer_id", &emmc), Some(21.0));
        assert_eq!(
            value(
                &set,
                "rpi_mmc_life_time_used_ratio",
                &[("device", "mmcblk0"), ("estimate", "a")]
            ),
            Some(0.2)
        );
        assert_eq!(
            value(
                &set,
                "rpi_mmc_life_time_used_ratio",
                &[("device", "mmcblk0"), ("estimate", "b")]
            ),
            Some(1.1)
        );
        assert_eq!(value(&set, "rpi_mmc_pre_eol_state", &emmc), Some(1.0));

        let sd = [("device", "mmcblk1")];
        assert_eq!(
            value(
                &set,
                "rpi_mmc_info",
                &[
                    ("device", "mmcblk1"),
                    ("name", "XY\u{fffd}12"),
                    ("manufacturer", "unknown")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(value(&set, "rpi_mmc_manufacturer_id", &sd), Some(238.0));
        assert_eq!(value(&set, "rpi_mmc_life_time_used_ratio", &sd), None);
        assert_eq!(value(&set, "rpi_mmc_pre_eol_state", &sd), None);
        assert!(
            set.get("rpi_mmc_info")
                .is_some_and(|f| f.samples.len() == 2),
            "partitions have no card attributes"
        );

        // Partitions and loop devices are excluded by default; whole disks are kept.
        assert_eq!(
            value(&set, "rpi_disk_read_bytes_total", &emmc),
            Some(3_260_162.0 * 512.0)
        );
        assert_eq!(
            value(&set, "rpi_disk_io_time_seconds_total", &[("device", "sda")]),
            Some(1.4)
        );
        for excluded in ["mmcblk0p1", "loop0"] {
            assert_eq!(
                value(
                    &set,
                    "rpi_disk_reads_completed_total",
                    &[("device", excluded)]
                ),
                None
            );
        }
        assert!(set.get("rpi_ext4_errors_total").is_none());
    }

    #[test]
    fn broken_files_fail_the_collector_but_keep_everything_else() {
        let dir = tree(&[
            (
                "proc/diskstats",
                " 179       0 mmcblk0 1 2 3 4 5 6 7 8 0 10 11\n 179 1 mmcblk0p1 1 2\n",
            ),
            ("sys/fs/ext4/features/metadata_csum_seed", "supported\n"),
            ("sys/fs/ext4/mmcblk0p2/errors_count", "garbage\n"),
            ("sys/fs/ext4/sda1/errors_count", "2\n"),
            ("sys/fs/ext4/sda1/first_error_time", "1718212345\n"),
            ("sys/fs/ext4/sda1/last_error_time", "not a time\n"),
            ("sys/block/mmcblk0/device/type", "MMC\n"),
            ("sys/block/mmcblk0/device/manfid", "0x000045\n"),
            ("sys/block/mmcblk0/device/life_time", "0x01\n"),
            ("sys/block/mmcblk0/device/pre_eol_info", "0x03\n"),
        ]);
        // A directory where a file should be: present but unreadable, even for root.
        fs::create_dir(dir.path().join("sys/block/mmcblk0/device/name")).expect("mkdir");

        let mut set = MetricSet::new();
        let err = collector_at(dir.path())
            .collect(&mut set)
            .expect_err("garbage must fail the collector");
        let message = err.to_string();
        for culprit in [
            "mmcblk0p2/errors_count",
            "sda1/last_error_time",
            "device/name",
            "device/life_time",
            "diskstats",
        ] {
            assert!(
                message.contains(culprit),
                "{culprit} missing from {message}"
            );
        }

        assert_eq!(
            value(&set, "rpi_ext4_errors_total", &[("device", "sda1")]),
            Some(2.0)
        );
        assert_eq!(
            value(
                &set,
                "rpi_ext4_first_error_time_seconds",
                &[("device", "sda1")]
            ),
            Some(1_718_212_345.0)
        );
        assert!(set.get("rpi_ext4_last_error_time_seconds").is_none());
        assert_eq!(
            value(
                &set,
                "rpi_mmc_info",
                &[
                    ("device", "mmcblk0"),
                    ("name", "unknown"),
                    ("manufacturer", "SanDisk")
                ]
            ),
            Some(1.0)
        );
        assert_eq!(
            value(&set, "rpi_mmc_pre_eol_state", &[("device", "mmcblk0")]),
            Some(3.0)
        );
        assert_eq!(
            value(
                &set,
                "rpi_disk_writes_completed_total",
                &[("device", "mmcblk0")]
            ),
            Some(5.0)
        );
    }

    #[test]
    fn missing_sources_are_errors_not_panics() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut set = MetricSet::new();
        let err = collector_at(dir.path())
            .collect(&mut set)
            .expect_err("no /sys/block and no diskstats");
        assert!(err.to_string().contains("diskstats"), "{err}");
        assert!(set.families().is_empty());
    }

    #[test]
    fn pi4_sd_fixture_shows_a_corrupted_sandisk_card() {
        let mut set = MetricSet::new();
        collector_at(&fixture("pi4-sd"))
            .collect(&mut set)
            .expect("fixture is well formed");
        let root = [("device", "mmcblk0p2")];
        assert_eq!(value(&set, "rpi_ext4_errors_total", &root), Some(3.0));
        assert!(
            value(&set, "rpi_ext4_lifetime_written_bytes_total", &root).is_some_and(|b| b > 0.0)
        );
        assert!(value(&set, "rpi_ext4_first_error_time_seconds", &root).is_some());
        assert!(value(&set, "rpi_ext4_last_error_time_seconds", &root).is_some());
        assert_eq!(
            value(
                &set,
                "rpi_mmc_info",
                &[
                    ("device", "mmcblk0"),
                    ("type", "SD"),
                    ("manufacturer", "SanDisk")
                ]
            ),
            Some(1.0)
        );
        assert!(set.get("rpi_mmc_life_time_used_ratio").is_none());
        let disks: Vec<_> = set
            .get("rpi_disk_written_bytes_total")
            .map(|f| f.samples.iter().map(|s| s.labels[0].1.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(disks, ["mmcblk0"]);
    }

    #[test]
    fn pi5_nvme_fixture_has_a_clean_ext4_and_no_card() {
        let mut set = MetricSet::new();
        collector_at(&fixture("pi5-nvme"))
            .collect(&mut set)
            .expect("fixture is well formed");
        let root = [("device", "nvme0n1p2")];
        assert_eq!(value(&set, "rpi_ext4_errors_total", &root), Some(0.0));
        assert!(set.get("rpi_ext4_first_error_time_seconds").is_none());
        assert!(set.get("rpi_mmc_info").is_none());
        let disks: Vec<_> = set
            .get("rpi_disk_reads_completed_total")
            .map(|f| f.samples.iter().map(|s| s.labels[0].1.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(disks, ["nvme0n1"]);
    }
}

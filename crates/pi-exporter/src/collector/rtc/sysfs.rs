//! RTCs with a kernel driver, found and read under `<sysfs>/class/rtc/`.
//!
//! RTCs are found by their `name` (`"<driver> <device>"`), never by number: a Pi 5's own RTC is
//! `rtc0`, so an added DS3231 is usually `rtc1`. sysfs rather than `/dev/rtcN`, which allows
//! only one opener (a second gets EBUSY).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::collector::CollectError;
use crate::collector::parse::Failures;

/// How the collector reads sysfs; tests substitute errors plain files cannot produce (EINVAL).
pub(super) trait SysfsRead: Send + Sync + fmt::Debug {
    fn read_to_string(&self, path: &Path) -> io::Result<String>;

    /// Entry names of a directory, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;
}

/// The real filesystem.
#[derive(Debug)]
pub(super) struct RealFiles;

impl SysfsRead for RealFiles {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            // Kernel device names are ASCII; anything else is not a device this collector knows.
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort_unstable();
        Ok(names)
    }
}

/// What kind of RTC a sysfs entry is, as far as this collector has extras for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// A DS3231 bound to `rtc-ds1307` (the `i2c-rtc,ds3231` overlay), at this bus and address.
    Ds3231 { bus: u32, address: u8 },
    /// The Raspberry Pi 5's own RTC, `rpi-rtc`, with its backup-battery attributes.
    RaspberryPi,
    /// Any other RTC: time and `hctosys` only.
    Other,
}

/// One `<sysfs>/class/rtc/rtcN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SysfsRtc {
    /// `rtc0`, `rtc1`, ...
    pub(super) device: String,
    /// `rtc-ds1307 1-0068`, `rpi-rtc soc:rpi_rtc`, ...
    pub(super) name: String,
    pub(super) dir: PathBuf,
    pub(super) kind: Kind,
}

fn read_trimmed(files: &dyn SysfsRead, path: &Path) -> Result<String, CollectError> {
    files
        .read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|e| CollectError::io(path, e))
}

/// `None` when the file does not exist (older kernels, other drivers), an error otherwise.
fn read_optional(files: &dyn SysfsRead, path: &Path) -> Result<Option<String>, CollectError> {
    match files.read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CollectError::io(path, e)),
    }
}

fn parse_optional<T: std::str::FromStr>(
    files: &dyn SysfsRead,
    path: &Path,
    expected: &str,
) -> Result<Option<T>, CollectError> {
    match read_optional(files, path)? {
        None => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| {
            CollectError::malformed(path, format!("expected {expected}, found {text:?}"))
        }),
    }
}

/// Parses an I2C client's device name, `1-0068`: bus 1, address 0x68.
pub(super) fn parse_i2c_client(name: &str) -> Option<(u32, u8)> {
    let (bus, address) = name.split_once('-')?;
    if address.len() != 4 || !address.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bus = bus
        .parse()
        .ok()
        .filter(|_| bus.bytes().all(|b| b.is_ascii_digit()))?;
    let address = u8::from_str_radix(address, 16).ok()?;
    Some((bus, address))
}

/// The hwmon directories of an RTC's parent device.
fn hwmon_dirs(files: &dyn SysfsRead, rtc_dir: &Path) -> Vec<PathBuf> {
    let hwmon = rtc_dir.join("device/hwmon");
    files
        .list_dir(&hwmon)
        .unwrap_or_default()
        .into_iter()
        .map(|name| hwmon.join(name))
        .collect()
}

/// Whether an `rtc-ds1307` device is a DS3231: its I2C client is named `ds3231` (from the
/// `maxim,ds3231` compatible), and so is the hwmon device the driver registers for it.
fn is_ds3231(files: &dyn SysfsRead, rtc_dir: &Path) -> bool {
    let named = |path: PathBuf| {
        files
            .read_to_string(&path)
            .is_ok_and(|name| name.trim() == "ds3231")
    };
    named(rtc_dir.join("device/name"))
        || hwmon_dirs(files, rtc_dir)
            .into_iter()
            .any(|dir| named(dir.join("name")))
}

fn classify(files: &dyn SysfsRead, dir: &Path, name: &str) -> Kind {
    let (driver, parent) = name.split_once(' ').unwrap_or((name, ""));
    match driver {
        "rpi-rtc" => Kind::RaspberryPi,
        "rtc-ds1307" => match parse_i2c_client(parent) {
            Some((bus, address)) if is_ds3231(files, dir) => Kind::Ds3231 { bus, address },
            _ => Kind::Other,
        },
        _ => Kind::Other,
    }
}

/// Every RTC under `<sysfs>/class/rtc`, in name order; none when the class does not exist (no
/// RTC driver loaded). An RTC whose `name` cannot be read is recorded and skipped.
pub(super) fn discover(
    files: &dyn SysfsRead,
    sysfs: &Path,
    failures: &mut Failures,
) -> Vec<SysfsRtc> {
    let class = sysfs.join("class/rtc");
    let entries = match files.list_dir(&class) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            failures.push(CollectError::io(&class, e));
            return Vec::new();
        }
    };
    let mut rtcs = Vec::new();
    for device in entries.into_iter().filter(|e| e.starts_with("rtc")) {
        let dir = class.join(&device);
        let Some(name) = failures.record(read_trimmed(files, &dir.join("name"))) else {
            continue;
        };
        let kind = classify(files, &dir, &name);
        rtcs.push(SysfsRtc {
            device,
            name,
            dir,
            kind,
        });
    }
    rtcs
}

/// What reading `since_epoch` gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeRead {
    Time(i64),
    /// The read failed with EINVAL: kernels with the DS3231 oscillator-stop check refuse to
    /// return a time while OSF is set (rtc-ds1307 `ds1307_get_time`), and other drivers use
    /// EINVAL for "the time in the chip is not valid" too.
    Refused,
}

pub(super) fn read_time(files: &dyn SysfsRead, rtc: &SysfsRtc) -> Result<TimeRead, CollectError> {
    let path = rtc.dir.join("since_epoch");
    match files.read_to_string(&path) {
        Ok(text) => {
            let text = text.trim();
            text.parse().map(TimeRead::Time).map_err(|_| {
                CollectError::malformed(&path, format!("expected Unix seconds, found {text:?}"))
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(TimeRead::Refused),
        Err(e) => Err(CollectError::io(&path, e)),
    }
}

/// `hctosys`: whether this RTC set the system clock at boot. `None` where the file is absent.
pub(super) fn read_hctosys(
    files: &dyn SysfsRead,
    rtc: &SysfsRtc,
) -> Result<Option<bool>, CollectError> {
    let path = rtc.dir.join("hctosys");
    match parse_optional::<u8>(files, &path, "0 or 1")? {
        None => Ok(None),
        Some(0) => Ok(Some(false)),
        Some(1) => Ok(Some(true)),
        Some(other) => Err(CollectError::malformed(
            &path,
            format!("expected 0 or 1, found {other}"),
        )),
    }
}

/// The DS3231's temperature from the hwmon device rtc-ds1307 registers (`temp1_input`,
/// millidegrees Celsius; the chip converts every 64 s, so it can be that old). `None` when the
/// kernel was built without the hwmon part.
pub(super) fn read_ds3231_temperature(
    files: &dyn SysfsRead,
    rtc: &SysfsRtc,
) -> Result<Option<f64>, CollectError> {
    for dir in hwmon_dirs(files, &rtc.dir) {
        let is_ds3231 = read_optional(files, &dir.join("name"))?.as_deref() == Some("ds3231");
        if is_ds3231 {
            let millidegrees: Option<i64> =
                parse_optional(files, &dir.join("temp1_input"), "millidegrees Celsius")?;
            return Ok(millidegrees.map(|m| m as f64 / 1000.0));
        }
    }
    Ok(None)
}

/// Volts per unit of the Pi 5 RTC's `battery_voltage` and `charging_voltage`. The driver
/// (`rtc-rpi.c`) prints the firmware's number as is; the charging voltage is configured in
/// microvolts (`trickle-charge-microvolt`), so microvolts are assumed for both.
/// **[unverified]**: confirm on a Pi 5 with a cell fitted (about 3 V expected) and change only
/// this constant if it is wrong.
pub(super) const RPI_RTC_VOLTS_PER_UNIT: f64 = 1e-6;

/// The Pi 5 RTC's backup battery: its voltage and the trickle-charging voltage (0 when
/// charging is off). Each `None` where the attribute is absent.
pub(super) fn read_rpi_battery(
    files: &dyn SysfsRead,
    rtc: &SysfsRtc,
) -> Result<(Option<f64>, Option<f64>), CollectError> {
    let volts = |file: &str| -> Result<Option<f64>, CollectError> {
        let raw: Option<u64> = parse_optional(files, &rtc.dir.join(file), "an unsigned integer")?;
        Ok(raw.map(|v| v as f64 * RPI_RTC_VOLTS_PER_UNIT))
    };
    Ok((volts("battery_voltage")?, volts("charging_voltage")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_i2c_client_names_strictly() {
        assert_eq!(parse_i2c_client("1-0068"), Some((1, 0x68)));
        assert_eq!(parse_i2c_client("12-0032"), Some((12, 0x32)));
        for bad in [
            "1-68", "x-0068", "1-00g8", "-0068", "1-0068-", "+1-0068", "1_0068",
        ] {
            assert_eq!(parse_i2c_client(bad), None, "{bad}");
        }
    }
}

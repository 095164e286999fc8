//! The kernel's view of a gauge: when a driver is bound to the profile's I2C device (its
//! `driver` link exists), the gauge is read from `<sysfs>/class/power_supply/<name>/` instead of
//! the bus (where `I2C_SLAVE` would fail with EBUSY anyway).

use std::path::{Path, PathBuf};

use super::chips::{ChipReading, check_percent, check_voltage};
use crate::collector::CollectError;
use crate::collector::parse::read_parsed;

/// The driver bound to I2C device `bus-00aa`, if any.
pub fn bound_driver(sysfs: &Path, bus: u32, address: u8) -> Option<String> {
    let link = sysfs.join(format!("bus/i2c/devices/{bus}-{address:04x}/driver"));
    let target = std::fs::read_link(link).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// The power_supply class device whose `device` is I2C device `bus-00aa`.
pub fn find(sysfs: &Path, bus: u32, address: u8) -> Option<PathBuf> {
    let device = format!("{bus}-{address:04x}");
    let mut entries: Vec<PathBuf> = std::fs::read_dir(sysfs.join("class/power_supply"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    entries.into_iter().find(|dir| {
        std::fs::read_link(dir.join("device"))
            .ok()
            .and_then(|t| {
                t.file_name()
                    .map(|n| n.to_string_lossy() == device.as_str())
            })
            .unwrap_or(false)
    })
}

/// Reads `voltage_now` (µV), `capacity` (%), `current_now` (µA, negative while discharging per
/// the sysfs ABI) and `status`. Missing optional files are skipped; present but malformed or
/// implausible ones fail the reading.
pub fn read(dir: &Path, cells: u8) -> Result<ChipReading, CollectError> {
    let optional = |name: &str| -> Result<Option<f64>, CollectError> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        read_parsed(&path, "a decimal number", |t| t.parse::<f64>().ok()).map(Some)
    };
    let voltage_path = dir.join("voltage_now");
    let voltage = match optional("voltage_now")? {
        Some(microvolts) => Some(
            check_voltage(microvolts / 1e6, cells)
                .map_err(|e| CollectError::malformed(&voltage_path, e.to_string()))?,
        ),
        None => None,
    };
    let capacity_path = dir.join("capacity");
    let charge = match optional("capacity")? {
        Some(percent) => Some(
            check_percent(percent)
                .map_err(|e| CollectError::malformed(&capacity_path, e.to_string()))?,
        ),
        None => None,
    };
    let current = optional("current_now")?.map(|microamps| microamps / 1e6);
    let status_path = dir.join("status");
    let status = if status_path.exists() {
        Some(read_parsed(&status_path, "a power_supply status", |t| {
            Some(t.to_owned())
        })?)
    } else {
        None
    };
    let charging = status.as_deref().map(|s| s == "Charging");
    let on_battery = match status.as_deref() {
        Some("Discharging") => Some(true),
        Some("Charging" | "Full") => Some(false),
        _ => None,
    };
    Ok(ChipReading {
        voltage_volts: voltage,
        current_amperes: current,
        charge_ratio: charge,
        charging,
        on_battery,
        runtime_seconds: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path();
        let i2c = sys.join("bus/i2c/devices/1-0036");
        std::fs::create_dir_all(&i2c).expect("mkdir");
        std::os::unix::fs::symlink("../../../../bus/i2c/drivers/max17040", i2c.join("driver"))
            .expect("link");
        let ps = sys.join("class/power_supply/battery");
        std::fs::create_dir_all(&ps).expect("mkdir");
        std::os::unix::fs::symlink("../../../bus/i2c/devices/1-0036", ps.join("device"))
            .expect("link");
        for (f, v) in [
            ("voltage_now", "3712500"),
            ("capacity", "64"),
            ("status", "Discharging"),
        ] {
            std::fs::write(ps.join(f), format!("{v}\n")).expect("write");
        }
        dir
    }

    #[test]
    fn a_kernel_owned_gauge_is_read_from_power_supply() {
        let dir = tree();
        assert_eq!(
            bound_driver(dir.path(), 1, 0x36).as_deref(),
            Some("max17040")
        );
        assert_eq!(bound_driver(dir.path(), 1, 0x62), None);
        let ps = find(dir.path(), 1, 0x36).expect("found");
        assert!(ps.ends_with("battery"));
        let reading = read(&ps, 1).expect("read");
        assert_eq!(reading.voltage_volts, Some(3.7125));
        assert_eq!(reading.charge_ratio, Some(0.64));
        assert_eq!(reading.on_battery, Some(true));
        assert_eq!(reading.charging, Some(false));

        std::fs::write(ps.join("capacity"), "250\n").expect("write");
        assert!(read(&ps, 1).is_err(), "charge above 100 %");
        std::fs::write(ps.join("capacity"), "50\n").expect("write");
        std::fs::write(ps.join("voltage_now"), "0\n").expect("write");
        assert!(read(&ps, 1).is_err(), "0 V");
    }
}

//! What the kernel tells about the firmware without the mailbox, for containers that see only
//! `/sys` (or a `/dev/vcio` the exporter may not open). `shared/reference/firmware-mailbox.md`
//! §10 has the sources; what each one means is in `docs/metrics.md`.

use std::path::{Path, PathBuf};

use crate::collector::parse::{Failures, if_present, list_dir, read_parsed};
use crate::collector::{read_trimmed, read_u64};
use crate::paths::Paths;

/// Thermal zone type of the SoC sensor, on every Pi model.
const SOC_THERMAL_ZONE: &str = "cpu-thermal";
/// hwmon name of the kernel's `raspberrypi-hwmon` driver.
const RPI_VOLT_HWMON: &str = "rpi_volt";
/// The firmware driver's deprecated throttled attribute, relative to sysfs. On a Pi 5 no such
/// attribute exists (firmware-mailbox.md §10); another firmware node name would go here.
const GET_THROTTLED: &[&str] = &["devices/platform/soc/soc:firmware/get_throttled"];

/// The entry `<dir>/<prefix>*` whose `file` reads `wanted`, e.g. the thermal zone whose `type`
/// is `cpu-thermal`. An absent `dir` is not an error.
fn find_entry(
    failures: &mut Failures,
    dir: &Path,
    prefix: &str,
    file: &str,
    wanted: &str,
) -> Option<PathBuf> {
    let names = if_present(failures, list_dir(dir))?;
    names
        .iter()
        .filter(|name| name.starts_with(prefix))
        .map(|name| dir.join(name))
        .find(|entry| {
            if_present(failures, read_trimmed(&entry.join(file))).is_some_and(|v| v == wanted)
        })
}

/// SoC temperature in °C from the `cpu-thermal` zone.
pub(crate) fn soc_temperature(paths: &Paths, failures: &mut Failures) -> Option<f64> {
    let zone = find_entry(
        failures,
        &paths.sys("class/thermal"),
        "thermal_zone",
        "type",
        SOC_THERMAL_ZONE,
    )?;
    let millicelsius = read_parsed(&zone.join("temp"), "milli-°C", |t| t.parse::<i64>().ok());
    failures.record(millicelsius).map(|m| m as f64 / 1000.0)
}

/// `rpi_volt`'s `in0_lcrit_alarm`: whether the kernel's driver saw under-voltage in the sticky
/// bit it reads (and clears) every 2 s, i.e. under-voltage within the last poll period.
pub(crate) fn under_voltage_alarm(paths: &Paths, failures: &mut Failures) -> Option<bool> {
    let hwmon = find_entry(
        failures,
        &paths.sys("class/hwmon"),
        "hwmon",
        "name",
        RPI_VOLT_HWMON,
    )?;
    if_present(failures, read_u64(&hwmon.join("in0_lcrit_alarm"))).map(|v| v != 0)
}

/// Parses the `get_throttled` attribute: the word as `%x`, without `0x`.
pub(crate) fn parse_throttled_attribute(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(text, 16).ok()
}

/// The throttled word the kernel last read from the firmware, from the deprecated sysfs
/// attribute (the kernel logs a one-time deprecation warning at the first read).
pub(crate) fn throttled_word(paths: &Paths, failures: &mut Failures) -> Option<u32> {
    GET_THROTTLED.iter().find_map(|rel| {
        let path = paths.sys(rel);
        let read = read_parsed(&path, "a hex word", parse_throttled_attribute);
        if_present(failures, read)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::firmware::tests::{fixture_paths, tree};

    #[test]
    fn reads_the_pi4_fixture() {
        let paths = fixture_paths("pi4-sd");
        let mut failures = Failures::default();
        assert_eq!(soc_temperature(&paths, &mut failures), Some(52.582));
        assert_eq!(under_voltage_alarm(&paths, &mut failures), Some(false));
        assert_eq!(throttled_word(&paths, &mut failures), Some(0x50000));
        assert!(failures.finish().is_ok());
    }

    #[test]
    fn the_pi5_fixture_has_no_throttled_attribute() {
        let paths = fixture_paths("pi5-nvme");
        let mut failures = Failures::default();
        assert_eq!(soc_temperature(&paths, &mut failures), Some(61.2));
        assert_eq!(under_voltage_alarm(&paths, &mut failures), Some(false));
        assert_eq!(throttled_word(&paths, &mut failures), None);
        assert!(failures.finish().is_ok());
    }

    #[test]
    fn picks_the_cpu_zone_and_reports_garbage() {
        let dir = tree(&[
            ("sys/class/thermal/thermal_zone0/type", "rp1_adc\n"),
            ("sys/class/thermal/thermal_zone0/temp", "40000\n"),
            ("sys/class/thermal/thermal_zone1/type", "cpu-thermal\n"),
            ("sys/class/thermal/thermal_zone1/temp", "-1500\n"),
            ("sys/class/thermal/cooling_device0/type", "cpu-thermal\n"),
            ("sys/class/hwmon/hwmon0/name", "rpi_volt\n"),
            ("sys/class/hwmon/hwmon0/in0_lcrit_alarm", "yes\n"),
            (
                "sys/devices/platform/soc/soc:firmware/get_throttled",
                "0x50000\n",
            ),
        ]);
        let paths = Paths {
            sysfs: dir.path().join("sys"),
            ..Paths::default()
        };
        let mut failures = Failures::default();
        assert_eq!(soc_temperature(&paths, &mut failures), Some(-1.5));
        assert_eq!(under_voltage_alarm(&paths, &mut failures), None);
        assert_eq!(throttled_word(&paths, &mut failures), None);
        let message = failures.finish().expect_err("garbage").to_string();
        assert!(message.contains("in0_lcrit_alarm"), "{message}");
        assert!(message.contains("get_throttled"), "{message}");
    }

    #[test]
    fn parses_the_attribute_strictly() {
        assert_eq!(parse_throttled_attribute("50005"), Some(0x50005));
        assert_eq!(parse_throttled_attribute("0"), Some(0));
        for bad in ["", "0x1", "+1", "123456789"] {
            assert_eq!(parse_throttled_attribute(bad), None, "{bad:?}");
        }
    }
}

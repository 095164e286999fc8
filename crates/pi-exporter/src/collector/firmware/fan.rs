//! The fan, from the `pwm-fan` driver's hwmon device: the Pi 5's fan connector (device-tree
//! node `cooling_fan`) and the Pi 4 PoE HAT's fan. Absent on a board without one.

use crate::collector::parse::{Failures, if_present, list_dir};
use crate::collector::read_u64;
use crate::paths::Paths;

/// hwmon parents of the fans, relative to sysfs (firmware-mailbox.md §9).
const FAN_DEVICES: &[&str] = &[
    "devices/platform/cooling_fan/hwmon",
    "devices/platform/pwm-fan/hwmon",
];

/// Full scale of the `pwm1` attribute.
const PWM_MAX: f64 = 255.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fan {
    /// `fan1_input`; the PoE HAT fan has no tachometer.
    pub(crate) rpm: Option<f64>,
    /// `pwm1` / 255.
    pub(crate) pwm_ratio: Option<f64>,
}

/// The first fan found, if any.
pub(crate) fn read(paths: &Paths, failures: &mut Failures) -> Option<Fan> {
    FAN_DEVICES.iter().find_map(|rel| {
        let dir = paths.sys(rel);
        let names = if_present(failures, list_dir(&dir))?;
        let hwmon = dir.join(names.iter().find(|n| n.starts_with("hwmon"))?);
        let rpm = if_present(failures, read_u64(&hwmon.join("fan1_input"))).map(|v| v as f64);
        let pwm_ratio =
            if_present(failures, read_u64(&hwmon.join("pwm1"))).map(|v| v as f64 / PWM_MAX);
        Some(Fan { rpm, pwm_ratio })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::firmware::tests::{fixture_paths, tree};

    #[test]
    fn reads_the_pi5_fan_and_finds_none_on_the_pi4() {
        let mut failures = Failures::default();
        assert_eq!(
            read(&fixture_paths("pi5-nvme"), &mut failures),
            Some(Fan {
                rpm: Some(2963.0),
                pwm_ratio: Some(75.0 / 255.0)
            })
        );
        assert_eq!(read(&fixture_paths("pi4-sd"), &mut failures), None);
        assert!(failures.finish().is_ok());
    }

    #[test]
    fn a_poe_hat_fan_has_no_tachometer() {
        let dir = tree(&[("sys/devices/platform/pwm-fan/hwmon/hwmon3/pwm1", "255\n")]);
        let paths = Paths {
            sysfs: dir.path().join("sys"),
            ..Paths::default()
        };
        let mut failures = Failures::default();
        assert_eq!(
            read(&paths, &mut failures),
            Some(Fan {
                rpm: None,
                pwm_ratio: Some(1.0)
            })
        );
        assert!(failures.finish().is_ok());
    }
}

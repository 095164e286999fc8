//! `history`: why the Pi last restarted, and what it has been through since.
//!
//! The reset cause is read once at start-up from the device tree (it describes this boot and
//! never changes); scrapes render what was read. `reset.rs` holds the bit tables.

pub mod reset;

use std::io;
use std::path::Path;

use super::{BuildContext, CollectError, Collector};
use crate::metrics::MetricSet;
use crate::paths::Paths;
use reset::{Cause, Registers};

/// The device tree's `chosen` node, where the firmware leaves its boot-time registers.
const CHOSEN: &str = "firmware/devicetree/base/chosen";

/// What the device tree said about this boot; `None` without a `chosen` node (not a Pi, or a
/// container without the device tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootReset {
    pub registers: Registers,
    pub cause: Cause,
    pub source: &'static str,
}

/// Reads one integer property; absent is `Ok(None)`, unreadable or of the wrong length an error
/// for the start-up log.
fn read_property(path: &Path) -> Result<Option<u32>, CollectError> {
    match std::fs::read(path) {
        Ok(bytes) => reset::parse_u32_property(&bytes).map(Some).ok_or_else(|| {
            CollectError::malformed(
                path,
                format!(
                    "expected a 4-byte big-endian u32, found {} bytes",
                    bytes.len()
                ),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CollectError::io(path, e)),
    }
}

/// Reads the reset registers below `chosen`, logging (once, at start-up) each property it
/// cannot use.
pub fn read_boot_reset(paths: &Paths) -> Option<BootReset> {
    let chosen = paths.sys(CHOSEN);
    if !chosen.is_dir() {
        tracing::info!(
            path = %chosen.display(),
            "no device-tree chosen node (not a Raspberry Pi, or no device tree in this container): no reset cause"
        );
        return None;
    }
    let read = |name: &str| -> Option<u32> {
        read_property(&chosen.join(name)).unwrap_or_else(|e| {
            tracing::warn!("ignoring a device-tree property: {e}");
            None
        })
    };
    let rsts = reset::RSTS_PROPERTIES
        .iter()
        .find_map(|&name| read(name).map(|value| (value, name)));
    let registers = Registers {
        rsts,
        power_reset: read(reset::POWER_RESET_PROPERTY),
    };
    let (cause, source) = reset::cause(&registers);
    Some(BootReset {
        registers,
        cause,
        source,
    })
}

/// Writes the reset cause and the raw registers.
fn render_boot_reset(boot: &BootReset, out: &mut MetricSet) {
    out.gauge(
        "rpi_boot_reset_info",
        "Why this boot happened, from the device tree at start-up, always 1: cause and the property below chosen/ it came from",
    )
    .sample(
        [("cause", boot.cause.label()), ("source", boot.source)],
        1.0,
    );
    let registers = [
        ("rsts", boot.registers.rsts.map(|(value, _)| value)),
        ("power_reset", boot.registers.power_reset),
    ];
    for (register, value) in registers {
        if let Some(value) = value {
            out.gauge(
                "rpi_boot_reset_register",
                "Raw reset register of this boot from the device tree: rsts (PM_RSTS, every model) and power_reset (Pi 5 PMIC)",
            )
            .sample([("register", register)], f64::from(value));
        }
    }
}

#[derive(Debug)]
pub struct HistoryCollector {
    boot: Option<BootReset>,
}

impl HistoryCollector {
    pub fn new(ctx: &BuildContext) -> Self {
        Self {
            boot: read_boot_reset(&ctx.paths),
        }
    }
}

impl Collector for HistoryCollector {
    fn collect(&self, out: &mut MetricSet) -> Result<(), CollectError> {
        if let Some(boot) = &self.boot {
            render_boot_reset(boot, out);
        }
        Ok(())
    }

    /// Renders what was read at start-up.
    fn may_block(&self) -> bool {
        false
    }
}

/// The directory holding a fixture's device tree, for tests that write their own properties.
#[cfg(test)]
pub(crate) fn chosen_dir(sysfs: &Path) -> std::path::PathBuf {
    sysfs.join(CHOSEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::fixture;

    fn paths_of(root: &Path) -> Paths {
        Paths {
            sysfs: root.join("sys"),
            ..Paths::default()
        }
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write");
    }

    #[test]
    fn fixtures_carry_the_firmware_s_big_endian_words() {
        let pi4 = read_boot_reset(&paths_of(&fixture("pi4-sd"))).expect("chosen");
        assert_eq!(pi4.cause, Cause::PowerOn);
        assert_eq!(pi4.registers.rsts, Some((0x1000, "bootloader/rsts")));
        let watchdog = read_boot_reset(&paths_of(&fixture("pi4-watchdog"))).expect("chosen");
        assert_eq!(watchdog.cause, Cause::WatchdogOrReboot);
        let pi5 = read_boot_reset(&paths_of(&fixture("pi5-nvme"))).expect("chosen");
        assert_eq!(pi5.cause, Cause::Brownout);
        assert_eq!(pi5.source, "power/power_reset");
        assert_eq!(pi5.registers.power_reset, Some(0x2));
    }

    #[test]
    fn bad_properties_leave_the_cause_unknown_and_no_chosen_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_boot_reset(&paths_of(dir.path())), None);
        let chosen = chosen_dir(&dir.path().join("sys"));
        write(&chosen, "bootloader/rsts", &[0x10, 0x00]);
        write(&chosen, "power/power_reset", &[0, 0, 0, 0, 2]);
        let boot = read_boot_reset(&paths_of(dir.path())).expect("chosen exists");
        assert_eq!((boot.cause, boot.source), (Cause::Unknown, "none"));
        assert_eq!(boot.registers, Registers::default());
        // A later spelling is still found when the first one is broken.
        write(&chosen, "pm_rsts", &[0, 0, 0, 0x20]);
        let boot = read_boot_reset(&paths_of(dir.path())).expect("chosen exists");
        assert_eq!(
            (boot.cause, boot.source),
            (Cause::WatchdogOrReboot, "pm_rsts")
        );
    }
}

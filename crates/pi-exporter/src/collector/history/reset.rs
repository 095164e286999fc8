//! Why this boot happened, from the registers the firmware copies into the device tree: the
//! SoC's PM_RSTS on every model and, on a Pi 5, the PMIC's reset event (`power_reset`). Pure:
//! the collector reads the bytes, this module decodes them.
//!
//! Sources: `shared/reference/power-flash-history.md` §1. The tables below are the only place
//! the bit meanings live; an entry marked `verified: false` has a single or third-party source,
//! so a correction found on hardware is a one-line change here.

/// What caused the reset, as the `cause` label of `rpi_boot_reset_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    PowerOn,
    WatchdogOrReboot,
    Software,
    Brownout,
    OverVoltage,
    OverTemperature,
    Unknown,
}

impl Cause {
    pub fn label(self) -> &'static str {
        match self {
            Cause::PowerOn => "power_on",
            Cause::WatchdogOrReboot => "watchdog_or_reboot",
            Cause::Software => "software",
            Cause::Brownout => "brownout",
            Cause::OverVoltage => "over_voltage",
            Cause::OverTemperature => "over_temperature",
            Cause::Unknown => "unknown",
        }
    }
}

/// One row of a bit table: any bit of `mask` set means `cause`.
#[derive(Debug, Clone, Copy)]
pub struct BitMeaning {
    pub mask: u32,
    pub cause: Cause,
    /// `false` for the `[unverified]` entries of the reference.
    pub verified: bool,
}

const fn bits(mask: u32, cause: Cause, verified: bool) -> BitMeaning {
    BitMeaning {
        mask,
        cause,
        verified,
    }
}

/// PM_RSTS, checked in order; the first row with a bit set names the cause. Watchdog comes
/// before power-on because a Pi 5 showed 0x1020 after a plain `reboot` (rpi-eeprom #575), and
/// some Pi 4 firmware reported 0x1000 whatever happened (raspberrypi/linux #4527). The debugger
/// bits (HADDR*, 0x7) have no row: they read as `unknown`. Bits 0, 2, 4, 6, 8 and 10 also carry
/// the boot partition of a `reboot N`, so a reboot to partition N can set extra bits here.
pub const RSTS: &[BitMeaning] = &[
    // HADWR*: the watchdog, which a plain `reboot` uses (raspberrypi/linux #1586).
    bits(0x0000_0070, Cause::WatchdogOrReboot, true),
    // HADSR*.
    bits(0x0000_0700, Cause::Software, true),
    // HADPOR. [unverified] that it means power-on alone on a Pi 5 (see above).
    bits(0x0000_1000, Cause::PowerOn, false),
];

/// The Pi 5 `chosen/power/power_reset` word, checked in order. Only bit 1 has a maintainer-side
/// source (waveform80/pemmican); the rest is third-party code [unverified]. Bit 3 (the PMIC's
/// enable pin) has no cause of its own: the PM_RSTS decoding is used instead.
pub const POWER_RESET: &[BitMeaning] = &[
    bits(1 << 1, Cause::Brownout, true),
    bits(1 << 0, Cause::OverVoltage, false),
    bits(1 << 2, Cause::OverTemperature, false),
    bits(1 << 4, Cause::WatchdogOrReboot, false),
];

/// The first cause in `table` whose bits are set in `value`.
pub fn decode(table: &[BitMeaning], value: u32) -> Option<Cause> {
    table
        .iter()
        .find(|row| value & row.mask != 0)
        .map(|row| row.cause)
}

/// A device-tree integer property: exactly one big-endian u32, as the firmware writes them.
/// Any other length is a property this module does not understand.
pub fn parse_u32_property(bytes: &[u8]) -> Option<u32> {
    let word: [u8; 4] = bytes.try_into().ok()?;
    Some(u32::from_be_bytes(word))
}

/// The registers read at start-up; `None` where the property is absent or unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Registers {
    /// PM_RSTS and the property it came from.
    pub rsts: Option<(u32, &'static str)>,
    /// The Pi 5 PMIC reset event.
    pub power_reset: Option<u32>,
}

/// The property names PM_RSTS is found under, in the order they are tried: firmware and
/// third-party readers disagree on the spelling (barebox `rpi_decode_pm_rsts` reads `pm_rsts`
/// and falls back to `bootloader/rsts`; the documentation names `bootloader/pm_rsts`).
pub const RSTS_PROPERTIES: &[&str] = &["bootloader/rsts", "bootloader/pm_rsts", "pm_rsts"];
/// The Pi 5 PMIC reset event, below `chosen`.
pub const POWER_RESET_PROPERTY: &str = "power/power_reset";

/// The cause of this boot and the property (below `chosen/`) that said so. The PMIC's word wins
/// when it names a cause: a brown-out also resets the SoC, whose PM_RSTS then says power-on.
pub fn cause(registers: &Registers) -> (Cause, &'static str) {
    if let Some(cause) = registers.power_reset.and_then(|v| decode(POWER_RESET, v)) {
        return (cause, POWER_RESET_PROPERTY);
    }
    match registers.rsts {
        Some((value, source)) => (decode(RSTS, value).unwrap_or(Cause::Unknown), source),
        None => (Cause::Unknown, "none"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rsts(value: u32) -> Registers {
        Registers {
            rsts: Some((value, "bootloader/rsts")),
            power_reset: None,
        }
    }

    #[test]
    fn pm_rsts_decodes_with_watchdog_before_power_on() {
        assert_eq!(cause(&rsts(0x1000)), (Cause::PowerOn, "bootloader/rsts"));
        assert_eq!(cause(&rsts(0x20)).0, Cause::WatchdogOrReboot);
        // A Pi 5 after a plain reboot (rpi-eeprom #575).
        assert_eq!(cause(&rsts(0x1020)).0, Cause::WatchdogOrReboot);
        assert_eq!(cause(&rsts(0x200)).0, Cause::Software);
        // Debugger bits and nothing at all.
        assert_eq!(cause(&rsts(0x2)).0, Cause::Unknown);
        assert_eq!(cause(&rsts(0)).0, Cause::Unknown);
    }

    #[test]
    fn pmic_word_wins_when_it_names_a_cause() {
        let registers = Registers {
            rsts: Some((0x1000, "pm_rsts")),
            power_reset: Some(0x2),
        };
        assert_eq!(cause(&registers), (Cause::Brownout, POWER_RESET_PROPERTY));
        let enable_pin_only = Registers {
            power_reset: Some(0x8),
            ..registers
        };
        assert_eq!(cause(&enable_pin_only), (Cause::PowerOn, "pm_rsts"));
        let nothing = Registers::default();
        assert_eq!(cause(&nothing), (Cause::Unknown, "none"));
    }

    #[test]
    fn properties_are_exactly_one_big_endian_word() {
        assert_eq!(parse_u32_property(&[0, 0, 0x10, 0]), Some(0x1000));
        assert_eq!(parse_u32_property(&[0, 0, 0x10]), None);
        assert_eq!(parse_u32_property(&[0, 0, 0, 0x10, 0]), None);
        assert_eq!(parse_u32_property(&[]), None);
    }

    #[test]
    fn every_table_row_has_bits_and_no_two_rows_share_one() {
        for table in [RSTS, POWER_RESET] {
            let mut seen = 0;
            for row in table {
                assert_ne!(row.mask, 0);
                assert_eq!(seen & row.mask, 0, "{row:?}");
                seen |= row.mask;
            }
        }
    }
}

//! The `rtc:` section of a `--simulate.board` file: DS3231 chips described register by register
//! on a simulated I2C bus, so the real drivers (the userspace read with `ds323x`, the raw read
//! alongside a kernel driver, the offset measurement) run against them. Documented in
//! `docs/simulated-board.md`.

use std::collections::BTreeMap;
use std::time::Instant;

use serde::Deserialize;

use super::ds3231::{self, DEFAULT_ADDRESS};
use crate::i2c::simulated::{Behaviour, RegisterFile, SimulatedBus};

/// The DS3231 has registers 0x00-0x12; its register pointer wraps from 0x12 to 0x00.
const REGISTER_COUNT: u8 = 0x13;
/// The power-on register values (datasheet; `ds323x`'s `CONTROL_POR_VALUE`/`STATUS_POR_VALUE`):
/// 2000-01-01 00:00:00, control 0x1C, status OSF | EN32kHz, about 25 °C.
const POWER_ON: [u8; REGISTER_COUNT as usize] = [
    0x00, 0x00, 0x00, 0x01, 0x01, 0x01, 0x00, // time
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // alarms
    0x1c, 0x88, 0x00, 0x19, 0x00, // control, status, aging, temperature
];

/// `rtc:` in a board file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtcBoard {
    /// The bus the chips sit on; the collector uses it when it equals `--collector.rtc.i2c-bus`
    /// (default 1), and for the raw read of a kernel-owned DS3231 on that bus.
    #[serde(default = "default_bus")]
    pub i2c_bus: u32,
    pub ds3231: Vec<SimulatedDs3231Config>,
}

fn default_bus() -> u32 {
    1
}

/// One simulated DS3231.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "Ds3231Fields")]
pub struct SimulatedDs3231Config {
    pub address: u8,
    pub behaviour: Behaviour,
    /// Register values over the power-on state.
    pub registers: BTreeMap<u8, u8>,
    pub ticking: bool,
}

/// [`SimulatedDs3231Config`] as written, before the checks serde cannot express.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ds3231Fields {
    #[serde(default = "default_address")]
    address: u8,
    #[serde(default)]
    behaviour: Behaviour,
    /// Register values over the power-on state, e.g. `0x0f: 0x88` for OSF set. Any byte is
    /// accepted, including invalid BCD and month 13: that is what the simulation is for.
    #[serde(default)]
    registers: BTreeMap<u8, u8>,
    /// Whether the time registers advance (when they hold a valid time). `false` models a
    /// stopped oscillator.
    #[serde(default = "default_ticking")]
    ticking: bool,
}

fn default_address() -> u8 {
    DEFAULT_ADDRESS
}

fn default_ticking() -> bool {
    true
}

impl TryFrom<Ds3231Fields> for SimulatedDs3231Config {
    type Error = String;

    fn try_from(fields: Ds3231Fields) -> Result<Self, String> {
        if !(0x03..=0x77).contains(&fields.address) {
            return Err(format!(
                "ds3231 address {:#04x} is not a 7-bit device address (0x03-0x77)",
                fields.address
            ));
        }
        if let Some(register) = fields.registers.keys().find(|r| **r >= REGISTER_COUNT) {
            return Err(format!(
                "ds3231 at {:#04x}: register {register:#04x} does not exist (0x00-0x12)",
                fields.address
            ));
        }
        Ok(Self {
            address: fields.address,
            behaviour: fields.behaviour,
            registers: fields.registers,
            ticking: fields.ticking,
        })
    }
}

impl RtcBoard {
    /// The simulated bus with every chip of the section on it.
    pub fn bus(&self) -> SimulatedBus {
        let bus = SimulatedBus::new(self.i2c_bus);
        for chip in &self.ds3231 {
            bus.add_device(chip.address, chip.behaviour, Ds3231Registers::new(chip));
        }
        bus
    }
}

/// A DS3231's register file whose time registers tick with the host's clock.
#[derive(Debug)]
pub struct Ds3231Registers {
    registers: [u8; REGISTER_COUNT as usize],
    /// The time the registers held, and when; `None` while they hold no valid time (which a
    /// real chip would not advance sensibly either) or the oscillator is stopped.
    running_since: Option<(i64, Instant)>,
    ticking: bool,
}

impl Ds3231Registers {
    pub fn new(config: &SimulatedDs3231Config) -> Self {
        let mut registers = POWER_ON;
        for (&register, &value) in &config.registers {
            if let Some(slot) = registers.get_mut(usize::from(register)) {
                *slot = value;
            }
        }
        let mut chip = Self {
            registers,
            running_since: None,
            ticking: config.ticking,
        };
        chip.restart();
        chip
    }

    fn time_registers(&self) -> [u8; 7] {
        let mut time = [0; 7];
        time.copy_from_slice(&self.registers[..7]);
        time
    }

    fn restart(&mut self) {
        self.running_since = if self.ticking {
            ds3231::decode_time(&self.time_registers())
                .ok()
                .map(|t| (t, Instant::now()))
        } else {
            None
        };
    }
}

impl RegisterFile for Ds3231Registers {
    fn latch(&mut self) {
        let Some((start, since)) = self.running_since else {
            return;
        };
        let elapsed = i64::try_from(since.elapsed().as_secs()).unwrap_or(i64::MAX);
        let twelve_hour = ds3231::is_twelve_hour(self.registers[2]);
        if let Some(time) = ds3231::encode_time(start.saturating_add(elapsed), twelve_hour) {
            self.registers[..7].copy_from_slice(&time);
        }
    }

    fn read(&mut self, register: u8) -> u8 {
        self.registers[usize::from(register % REGISTER_COUNT)]
    }

    fn write(&mut self, register: u8, value: u8) {
        self.registers[usize::from(register % REGISTER_COUNT)] = value;
        if register % REGISTER_COUNT < 7 {
            self.restart();
        }
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal::i2c::I2c;

    use super::*;
    use crate::i2c::{Access, Bus};

    fn board(yaml: &str) -> RtcBoard {
        serde_saphyr::from_str(yaml).expect("valid rtc section")
    }

    #[test]
    fn a_section_accepts_hex_registers_and_fills_in_power_on_values() {
        let section = board(
            "i2c_bus: 1\nds3231:\n  - address: 0x68\n    behaviour: read-only\n    registers:\n      0x05: 0x13\n      0x0f: 0x08\n    ticking: false\n",
        );
        let chip = &section.ds3231[0];
        assert_eq!(chip.behaviour, Behaviour::ReadOnly);
        assert_eq!(chip.registers.get(&0x05), Some(&0x13));
        let mut bus = Bus::simulated(&section.bus(), Access::Unbound);
        let mut all = [0u8; 0x13];
        bus.write_read(0x68, &[0x00], &mut all).expect("read");
        assert_eq!(all[5], 0x13, "month 13 as configured");
        assert_eq!(all[0x0e], 0x1c, "control at its power-on value");
        assert_eq!(all[0x0f], 0x08, "OSF cleared by the board");

        for bad in [
            "ds3231:\n  - registers:\n      0x13: 0\n",
            "ds3231:\n  - address: 0x80\n",
            "ds3231:\n  - behaviour: flaky\n",
            "ds3231:\n  - registers: {0x00: 0x100}\n",
        ] {
            let err = serde_saphyr::from_str::<RtcBoard>(bad).expect_err(bad);
            assert!(!err.to_string().is_empty());
        }
        assert!(serde_saphyr::from_str::<RtcBoard>("ds3231: []\nbus: 2\n").is_err());
    }

    #[test]
    fn time_registers_tick_only_when_valid_and_running() {
        let ticking = board("ds3231:\n  - registers: {0x00: 0x58, 0x01: 0x59, 0x02: 0x23}\n");
        let mut chip = Ds3231Registers::new(&ticking.ds3231[0]);
        // Pretend it was set 3 s ago: Saturday 2000-01-01 23:59:58 becomes Sunday 00:00:01.
        if let Some((start, _)) = chip.running_since {
            chip.running_since = Instant::now()
                .checked_sub(std::time::Duration::from_secs(3))
                .map(|then| (start, then));
        }
        chip.latch();
        assert_eq!(
            chip.time_registers(),
            [0x01, 0x00, 0x00, 0x01, 0x02, 0x01, 0x00]
        );

        let garbage = board("ds3231:\n  - registers: {0x01: 0x7a}\n");
        let mut chip = Ds3231Registers::new(&garbage.ds3231[0]);
        assert!(chip.running_since.is_none());
        chip.latch();
        assert_eq!(chip.read(0x01), 0x7a, "invalid BCD stays as it is");

        let stopped = board("ds3231:\n  - ticking: false\n");
        assert!(
            Ds3231Registers::new(&stopped.ds3231[0])
                .running_since
                .is_none()
        );
    }
}

//! The `ups:` section of a `--simulate.board` file: the UPS chips register by register on a
//! simulated I2C bus, optional registers that step over time (a discharging battery), and the
//! GPIO lines' levels. The real drivers read them. Documented in `docs/simulated-board.md`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::gpio::{SimulatedLine, SimulatedLines};
use crate::i2c::simulated::{Behaviour, RegisterFile, SimulatedBus};

/// `ups:` in a board file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsBoard {
    /// The profile, used when `--ups.board` is not given.
    #[serde(default)]
    pub board: Option<String>,
    #[serde(default = "default_bus")]
    pub i2c_bus: u32,
    #[serde(default)]
    pub chips: Vec<SimulatedChip>,
    /// GPIO line levels by name: `high`, `low` or `{busy: consumer}`; other lines are missing.
    #[serde(default)]
    pub gpio: BTreeMap<String, SimulatedLine>,
}

fn default_bus() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedChip {
    pub address: u8,
    #[serde(default)]
    pub behaviour: Behaviour,
    #[serde(default)]
    pub registers: BTreeMap<u8, u8>,
    #[serde(default)]
    pub ramps: Vec<Ramp>,
}

/// A 16-bit big-endian register pair at `register` that changes by `step` (raw units, may be
/// negative) every `every_seconds`, staying within `min`-`max`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ramp {
    pub register: u8,
    pub step: i32,
    pub every_seconds: u64,
    #[serde(default)]
    pub min: u16,
    #[serde(default = "max_u16")]
    pub max: u16,
}

fn max_u16() -> u16 {
    u16::MAX
}

impl UpsBoard {
    pub fn bus(&self) -> SimulatedBus {
        let bus = SimulatedBus::new(self.i2c_bus);
        for chip in &self.chips {
            bus.add_device(chip.address, chip.behaviour, ChipRegisters::new(chip));
        }
        bus
    }

    pub fn lines(&self) -> SimulatedLines {
        SimulatedLines(self.gpio.clone())
    }
}

#[derive(Debug)]
struct ChipRegisters {
    registers: Box<[u8; 256]>,
    ramps: Vec<(Ramp, u16)>,
    started: Instant,
}

impl ChipRegisters {
    fn new(chip: &SimulatedChip) -> Self {
        let mut registers = Box::new([0u8; 256]);
        for (&r, &v) in &chip.registers {
            registers[usize::from(r)] = v;
        }
        let ramps = chip
            .ramps
            .iter()
            .map(|ramp| {
                let r = usize::from(ramp.register);
                let start = u16::from_be_bytes([registers[r], registers[(r + 1) % 256]]);
                (ramp.clone(), start)
            })
            .collect();
        Self {
            registers,
            ramps,
            started: Instant::now(),
        }
    }

    fn ramp_values(&self, elapsed: Duration) -> Vec<(u8, u16)> {
        self.ramps
            .iter()
            .map(|(ramp, start)| {
                let steps = elapsed.as_secs() / ramp.every_seconds.max(1);
                let value = i64::from(*start) + i64::from(ramp.step) * steps as i64;
                let value = value.clamp(i64::from(ramp.min), i64::from(ramp.max));
                (ramp.register, u16::try_from(value).unwrap_or(ramp.max))
            })
            .collect()
    }
}

impl RegisterFile for ChipRegisters {
    fn latch(&mut self) {
        for (register, value) in self.ramp_values(self.started.elapsed()) {
            let [high, low] = value.to_be_bytes();
            let r = usize::from(register);
            self.registers[r] = high;
            self.registers[(r + 1) % 256] = low;
        }
    }

    fn read(&mut self, register: u8) -> u8 {
        self.registers[usize::from(register)]
    }

    fn write(&mut self, register: u8, value: u8) {
        self.registers[usize::from(register)] = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_with_ramps_and_lines() {
        let board: UpsBoard = serde_saphyr::from_str(
            "board: geekworm-x728\nchips:\n  - address: 0x36\n    behaviour: read-only\n    registers: {0x02: 0xb9, 0x04: 0x2a}\n    ramps:\n      - {register: 0x04, step: -256, every_seconds: 60, min: 0}\ngpio:\n  GPIO6: high\n",
        )
        .expect("valid");
        assert_eq!(board.board.as_deref(), Some("geekworm-x728"));
        let chip = ChipRegisters::new(&board.chips[0]);
        assert_eq!(chip.ramp_values(Duration::from_secs(59)), [(0x04, 0x2a00)]);
        assert_eq!(chip.ramp_values(Duration::from_secs(150)), [(0x04, 0x2800)]);
        assert_eq!(chip.ramp_values(Duration::from_secs(60 * 100)), [(0x04, 0)]);
        assert!(serde_saphyr::from_str::<UpsBoard>("chip: []\n").is_err());
        assert!(serde_saphyr::from_str::<UpsBoard>("gpio: {GPIO6: maybe}\n").is_err());
    }
}

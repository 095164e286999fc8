//! A simulated I2C bus holding register-map devices by address, for `--simulate.board` and
//! tests. It speaks the same protocol as a real chip (a write sets the register pointer, further
//! bytes are register writes, reads auto-increment), so drivers run unchanged on it.
//!
//! Every register write is recorded whatever the device's [`Behaviour`]: the exporter must never
//! write, and tests assert that [`SimulatedBus::writes`] stays empty.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use embedded_hal::i2c::Operation;
use serde::Deserialize;

use super::{Access, BusError, Fault};

/// How a simulated device answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Answers reads and writes like a healthy chip.
    #[default]
    Normal,
    /// Answers reads but does not acknowledge data written to it (the write is still recorded):
    /// a tripwire for code that must never write.
    ReadOnly,
    /// Never acknowledges its address: a missing or dead chip.
    Nack,
    /// A kernel driver is bound to it: [`Access::Unbound`] gets EBUSY as `I2C_SLAVE` would, while
    /// [`Access::AlongsideDriver`] reads still reach it.
    Busy,
    /// Every transfer times out, as on a bus whose SDA line is stuck low.
    Timeout,
}

/// The registers behind a simulated device.
pub trait RegisterFile: Send + fmt::Debug {
    /// Called at the start of every transfer to the device. Clock chips such as the DS3231 copy
    /// their running counters into the readable registers here, so one multi-byte read is one
    /// consistent snapshot, as on the real chip.
    fn latch(&mut self) {}

    fn read(&mut self, register: u8) -> u8;

    fn write(&mut self, register: u8, value: u8);
}

/// Plain memory: 256 registers that hold what was last written.
#[derive(Debug, Clone)]
pub struct Memory(Box<[u8; 256]>);

impl Default for Memory {
    fn default() -> Self {
        Self(Box::new([0; 256]))
    }
}

impl Memory {
    pub fn set(&mut self, register: u8, value: u8) {
        self.0[usize::from(register)] = value;
    }
}

impl RegisterFile for Memory {
    fn read(&mut self, register: u8) -> u8 {
        self.0[usize::from(register)]
    }

    fn write(&mut self, register: u8, value: u8) {
        self.set(register, value);
    }
}

/// A register write that reached the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Write {
    pub address: u8,
    pub register: u8,
    pub data: Vec<u8>,
}

#[derive(Debug)]
struct Device {
    address: u8,
    behaviour: Behaviour,
    registers: Box<dyn RegisterFile>,
    pointer: u8,
}

#[derive(Debug, Default)]
struct State {
    devices: Vec<Device>,
    writes: Vec<Write>,
}

/// One simulated bus; clones are handles on the same bus.
#[derive(Debug, Clone)]
pub struct SimulatedBus {
    number: u32,
    state: Arc<Mutex<State>>,
}

impl SimulatedBus {
    pub fn new(number: u32) -> Self {
        Self {
            number,
            state: Arc::default(),
        }
    }

    /// The bus number it stands in for (`/dev/i2c-<number>`).
    pub fn number(&self) -> u32 {
        self.number
    }

    /// Puts a device at `address`, replacing any device already there.
    pub fn add_device(
        &self,
        address: u8,
        behaviour: Behaviour,
        registers: impl RegisterFile + 'static,
    ) {
        let mut state = self.lock();
        state.devices.retain(|d| d.address != address);
        state.devices.push(Device {
            address,
            behaviour,
            registers: Box::new(registers),
            pointer: 0,
        });
    }

    /// Every register write that reached the bus, in order.
    pub fn writes(&self) -> Vec<Write> {
        self.lock().writes.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn transaction(
        &self,
        access: Access,
        address: u8,
        operations: &mut [Operation<'_>],
        context: &str,
    ) -> Result<(), BusError> {
        let mut state = self.lock();
        let State { devices, writes } = &mut *state;
        let Some(device) = devices.iter_mut().find(|d| d.address == address) else {
            return Err(BusError::new(Fault::NoAcknowledge, context, None));
        };
        match (device.behaviour, access) {
            (Behaviour::Nack, _) => return Err(BusError::new(Fault::NoAcknowledge, context, None)),
            (Behaviour::Timeout, _) => return Err(BusError::new(Fault::Timeout, context, None)),
            (Behaviour::Busy, Access::Unbound) => {
                return Err(BusError::new(Fault::Busy, context, None));
            }
            _ => {}
        }
        device.registers.latch();
        for operation in operations {
            match operation {
                Operation::Write(bytes) => {
                    let Some((&pointer, data)) = bytes.split_first() else {
                        continue;
                    };
                    device.pointer = pointer;
                    if data.is_empty() {
                        continue;
                    }
                    writes.push(Write {
                        address,
                        register: pointer,
                        data: data.to_vec(),
                    });
                    if device.behaviour == Behaviour::ReadOnly {
                        return Err(BusError::new(
                            Fault::NoAcknowledge,
                            context,
                            Some("read-only device did not acknowledge data"),
                        ));
                    }
                    for &value in data {
                        device.registers.write(device.pointer, value);
                        device.pointer = device.pointer.wrapping_add(1);
                    }
                }
                Operation::Read(buffer) => {
                    for byte in buffer.iter_mut() {
                        *byte = device.registers.read(device.pointer);
                        device.pointer = device.pointer.wrapping_add(1);
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use embedded_hal::i2c::I2c;

    use super::*;
    use crate::i2c::Bus;

    fn bus_with(behaviour: Behaviour) -> SimulatedBus {
        let sim = SimulatedBus::new(1);
        let mut registers = Memory::default();
        for (i, v) in [0x11, 0x22, 0x33].into_iter().enumerate() {
            registers.set(0x10 + i as u8, v);
        }
        sim.add_device(0x40, behaviour, registers);
        sim
    }

    #[test]
    fn reads_auto_increment_from_the_pointer_and_writes_are_recorded() {
        let sim = bus_with(Behaviour::Normal);
        let mut bus = Bus::simulated(&sim, Access::Unbound);
        let mut buf = [0u8; 3];
        bus.write_read(0x40, &[0x10], &mut buf).expect("read");
        assert_eq!(buf, [0x11, 0x22, 0x33]);
        assert!(
            sim.writes().is_empty(),
            "a pointer write is not a register write"
        );

        bus.write(0x40, &[0x11, 0xaa]).expect("write");
        bus.write_read(0x40, &[0x11], &mut buf[..1]).expect("read");
        assert_eq!(buf[0], 0xaa);
        assert_eq!(
            sim.writes(),
            [Write {
                address: 0x40,
                register: 0x11,
                data: vec![0xaa]
            }]
        );
    }

    #[test]
    fn behaviours_fail_the_way_real_chips_and_buses_do() {
        let mut buf = [0u8; 1];
        for (behaviour, fault) in [
            (Behaviour::Nack, Fault::NoAcknowledge),
            (Behaviour::Timeout, Fault::Timeout),
            (Behaviour::Busy, Fault::Busy),
        ] {
            let sim = bus_with(behaviour);
            let err = Bus::simulated(&sim, Access::Unbound)
                .write_read(0x40, &[0x10], &mut buf)
                .expect_err("fails");
            assert_eq!(err.fault, fault, "{behaviour:?}");
        }
        // A driver-owned chip still answers combined reads.
        let sim = bus_with(Behaviour::Busy);
        Bus::simulated(&sim, Access::AlongsideDriver)
            .write_read(0x40, &[0x12], &mut buf)
            .expect("read alongside the driver");
        assert_eq!(buf, [0x33]);

        let sim = bus_with(Behaviour::ReadOnly);
        let mut bus = Bus::simulated(&sim, Access::Unbound);
        bus.write_read(0x40, &[0x10], &mut buf).expect("reads work");
        let err = bus.write(0x40, &[0x10, 0]).expect_err("write refused");
        assert_eq!(err.fault, Fault::NoAcknowledge);
        assert_eq!(sim.writes().len(), 1, "the attempt is recorded");

        let err = Bus::simulated(&sim, Access::Unbound)
            .write_read(0x41, &[0], &mut buf)
            .expect_err("nothing at 0x41");
        assert_eq!(err.fault, Fault::NoAcknowledge);
    }
}

//! A small I2C layer: the real `/dev/i2c-N` buses and a simulated register-map bus, all behind
//! `embedded_hal::i2c::I2c`, so chip drivers (`ds323x` today, the UPS gauges later) run unchanged
//! on hardware, in tests and in the `--simulate.board` demo.
//!
//! A real device can be reached two ways, because the kernel treats them differently once one of
//! its drivers owns the address (see `docs/metrics.md` and the RTC reference notes):
//!
//! - [`Access::Unbound`]: linux-embedded-hal's `I2cdev`, which selects the chip with
//!   `ioctl(I2C_SLAVE)`. The kernel refuses that with EBUSY while a driver is bound to the
//!   address, so this access can never race a kernel driver. The normal way.
//! - [`Access::AlongsideDriver`]: i2cdev's `LinuxI2CBus`, one combined `I2C_RDWR` transfer with
//!   the address in each message. The kernel has no busy check there and holds the adapter lock
//!   for the whole transfer, so the read cannot interleave with the driver's own. This access is
//!   opt-in and **read-only by construction**: [`Bus`] refuses every transfer that is not "write
//!   a register pointer, then read".
//!
//! `I2C_SLAVE_FORCE` is never used: it would race the kernel driver.

#[cfg(target_os = "linux")]
mod linux;
pub mod simulated;

use std::fmt;
use std::path::Path;

use embedded_hal::i2c::{ErrorKind, ErrorType, I2c, NoAcknowledgeSource, Operation};

/// What went wrong on a bus, in the terms an operator acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing acknowledged the address (no chip there, or it is dead): ENXIO, EREMOTEIO.
    NoAcknowledge,
    /// A kernel driver owns the address (EBUSY from `I2C_SLAVE`).
    Busy,
    /// The transfer did not complete in time (a stuck bus, clock stretching): ETIMEDOUT.
    Timeout,
    /// The bus device (`/dev/i2c-N`) does not exist.
    NoBus,
    /// The transfer was refused because it would write (see [`Access::AlongsideDriver`]).
    WriteRefused,
    /// Anything else (permissions, arbitration loss, ...).
    Other,
}

impl Fault {
    fn describe(self) -> &'static str {
        match self {
            Self::NoAcknowledge => "no acknowledgement (nothing answers at this address)",
            Self::Busy => "address busy (a kernel driver owns it)",
            Self::Timeout => "bus timed out",
            Self::NoBus => "no such I2C bus",
            Self::WriteRefused => "refused: this access only reads",
            Self::Other => "transfer failed",
        }
    }
}

/// A failed transfer: its [`Fault`] and a message naming the bus and address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BusError {
    pub fault: Fault,
    message: String,
}

impl BusError {
    /// `context` names where it happened, e.g. `i2c-1 0x68`; `detail` is the OS error, if any.
    pub fn new(fault: Fault, context: &str, detail: Option<&str>) -> Self {
        let message = match detail {
            Some(detail) => format!("{context}: {} ({detail})", fault.describe()),
            None => format!("{context}: {}", fault.describe()),
        };
        Self { fault, message }
    }
}

impl embedded_hal::i2c::Error for BusError {
    fn kind(&self) -> ErrorKind {
        match self.fault {
            Fault::NoAcknowledge => ErrorKind::NoAcknowledge(NoAcknowledgeSource::Unknown),
            Fault::Busy => ErrorKind::Bus,
            Fault::Timeout | Fault::NoBus | Fault::WriteRefused | Fault::Other => ErrorKind::Other,
        }
    }
}

/// Drivers tested against `embedded-hal-mock` see only an [`ErrorKind`]; this keeps their
/// error handling the same as on a real bus.
impl From<ErrorKind> for BusError {
    fn from(kind: ErrorKind) -> Self {
        let fault = match kind {
            ErrorKind::NoAcknowledge(_) => Fault::NoAcknowledge,
            _ => Fault::Other,
        };
        Self::new(fault, "i2c", Some(&format!("{kind:?}")))
    }
}

/// How a bus handle may reach devices; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only addresses no kernel driver is bound to (`I2C_SLAVE`, EBUSY otherwise).
    Unbound,
    /// Read-only combined transfers that work even while a kernel driver owns the address.
    AlongsideDriver,
}

/// One I2C bus, real or simulated.
pub struct Bus {
    number: u32,
    access: Access,
    kind: BusKind,
}

enum BusKind {
    #[cfg(target_os = "linux")]
    Unbound(linux::UnboundDevice),
    #[cfg(target_os = "linux")]
    AlongsideDriver(linux::CombinedTransfers),
    Simulated(simulated::SimulatedBus),
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            #[cfg(target_os = "linux")]
            BusKind::Unbound(_) | BusKind::AlongsideDriver(_) => "linux",
            BusKind::Simulated(_) => "simulated",
        };
        f.debug_struct("Bus")
            .field("number", &self.number)
            .field("access", &self.access)
            .field("kind", &kind)
            .finish()
    }
}

impl Bus {
    /// Opens `<devfs>/i2c-<number>`. Opening does no bus transfer.
    pub fn open(devfs: &Path, number: u32, access: Access) -> Result<Self, BusError> {
        let path = devfs.join(format!("i2c-{number}"));
        #[cfg(target_os = "linux")]
        {
            let kind = match access {
                Access::Unbound => BusKind::Unbound(linux::UnboundDevice::open(&path)?),
                Access::AlongsideDriver => {
                    BusKind::AlongsideDriver(linux::CombinedTransfers::open(&path)?)
                }
            };
            Ok(Self {
                number,
                access,
                kind,
            })
        }
        #[cfg(not(target_os = "linux"))]
        {
            Err(BusError::new(
                Fault::NoBus,
                &path.display().to_string(),
                Some("I2C buses are only supported on Linux"),
            ))
        }
    }

    /// A handle on a simulated bus, with the same access rules as a real one.
    pub fn simulated(bus: &simulated::SimulatedBus, access: Access) -> Self {
        Self {
            number: bus.number(),
            access,
            kind: BusKind::Simulated(bus.clone()),
        }
    }

    pub fn number(&self) -> u32 {
        self.number
    }

    /// How a transfer is named in errors: `i2c-1 0x68`.
    fn context(&self, address: u8) -> String {
        format!("i2c-{} {address:#04x}", self.number)
    }
}

/// Whether `operations` only read: optionally one register-pointer write, then reads.
fn only_reads(operations: &[Operation<'_>]) -> bool {
    match operations {
        [Operation::Write(pointer), rest @ ..] => {
            pointer.len() <= 1 && rest.iter().all(|op| matches!(op, Operation::Read(_)))
        }
        all => all.iter().all(|op| matches!(op, Operation::Read(_))),
    }
}

impl ErrorType for Bus {
    type Error = BusError;
}

impl I2c for Bus {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), BusError> {
        if self.access == Access::AlongsideDriver && !only_reads(operations) {
            return Err(BusError::new(
                Fault::WriteRefused,
                &self.context(address),
                None,
            ));
        }
        let context = self.context(address);
        match &mut self.kind {
            #[cfg(target_os = "linux")]
            BusKind::Unbound(device) => device.transaction(address, operations, &context),
            #[cfg(target_os = "linux")]
            BusKind::AlongsideDriver(bus) => bus.transaction(address, operations, &context),
            BusKind::Simulated(bus) => bus.transaction(self.access, address, operations, &context),
        }
    }
}

/// A chip whose driver hard-codes its address, reached at another one. `ds323x` always talks to
/// 0x68; `--collector.rtc.i2c-address` can move the chip (behind an address translator).
#[derive(Debug)]
pub struct AtAddress<I2C> {
    inner: I2C,
    driver_address: u8,
    actual_address: u8,
}

impl<I2C> AtAddress<I2C> {
    pub fn new(inner: I2C, driver_address: u8, actual_address: u8) -> Self {
        Self {
            inner,
            driver_address,
            actual_address,
        }
    }
}

impl<I2C> AtAddress<I2C> {
    fn map(&self, address: u8) -> u8 {
        if address == self.driver_address {
            self.actual_address
        } else {
            address
        }
    }
}

impl<I2C: ErrorType> ErrorType for AtAddress<I2C> {
    type Error = I2C::Error;
}

/// Every method is forwarded as itself, so the transfers on the bus are exactly the driver's.
impl<I2C: I2c> I2c for AtAddress<I2C> {
    fn read(&mut self, address: u8, read: &mut [u8]) -> Result<(), Self::Error> {
        let address = self.map(address);
        self.inner.read(address, read)
    }

    fn write(&mut self, address: u8, write: &[u8]) -> Result<(), Self::Error> {
        let address = self.map(address);
        self.inner.write(address, write)
    }

    fn write_read(
        &mut self,
        address: u8,
        write: &[u8],
        read: &mut [u8],
    ) -> Result<(), Self::Error> {
        let address = self.map(address);
        self.inner.write_read(address, write, read)
    }

    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
    ) -> Result<(), Self::Error> {
        let address = self.map(address);
        self.inner.transaction(address, operations)
    }
}

#[cfg(test)]
mod tests {
    use super::simulated::{Behaviour, Memory, SimulatedBus};
    use super::*;

    #[test]
    fn alongside_driver_access_refuses_anything_but_pointer_then_read() {
        let sim = SimulatedBus::new(1);
        sim.add_device(0x68, Behaviour::Normal, Memory::default());
        let mut bus = Bus::simulated(&sim, Access::AlongsideDriver);
        let mut buf = [0u8; 2];
        assert!(bus.write_read(0x68, &[0x0f], &mut buf).is_ok());
        assert!(bus.read(0x68, &mut buf).is_ok());
        let refused = bus.write(0x68, &[0x0f, 0x00]).expect_err("a data write");
        assert_eq!(refused.fault, Fault::WriteRefused);
        assert!(refused.to_string().contains("i2c-1 0x68"), "{refused}");
        let refused = bus
            .transaction(
                0x68,
                &mut [Operation::Read(&mut buf), Operation::Write(&[0x00])],
            )
            .expect_err("write after read");
        assert_eq!(refused.fault, Fault::WriteRefused);
        assert!(sim.writes().is_empty());
    }

    #[test]
    fn at_address_moves_only_the_driver_address() {
        let sim = SimulatedBus::new(3);
        let mut registers = Memory::default();
        registers.set(0x10, 0x7f);
        sim.add_device(0x69, Behaviour::Normal, registers);
        let mut moved = AtAddress::new(Bus::simulated(&sim, Access::Unbound), 0x68, 0x69);
        let mut buf = [0u8];
        moved.write_read(0x68, &[0x10], &mut buf).expect("read");
        assert_eq!(buf, [0x7f]);
        let err = moved.write_read(0x50, &[0], &mut buf).expect_err("no chip");
        assert_eq!(err.fault, Fault::NoAcknowledge);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_missing_bus_device_is_no_bus() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Bus::open(dir.path(), 7, Access::Unbound).expect_err("no /dev/i2c-7");
        assert_eq!(err.fault, Fault::NoBus);
        let err = Bus::open(dir.path(), 7, Access::AlongsideDriver).expect_err("no /dev/i2c-7");
        assert_eq!(err.fault, Fault::NoBus);
    }
}

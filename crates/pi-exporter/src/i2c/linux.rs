//! The real buses: `/dev/i2c-N` through linux-embedded-hal (`I2C_SLAVE`) or i2cdev's
//! `LinuxI2CBus` (`I2C_RDWR` with per-message addresses). See the parent module for which is
//! used when.

use std::path::Path;

use embedded_hal::i2c::{I2c, Operation};
use i2cdev::core::{I2CMessage, I2CTransfer};
use i2cdev::linux::{LinuxI2CBus, LinuxI2CError, LinuxI2CMessage};

use super::{BusError, Fault};

/// Classifies an errno from i2c-dev by the kernel's I2C fault codes
/// (`Documentation/i2c/fault-codes.rst`): controllers report an unacknowledged address as ENXIO
/// or, like the Pi's bcm2835, EREMOTEIO.
fn fault(errno: Option<i32>) -> Fault {
    match errno {
        Some(libc::ENXIO | libc::EREMOTEIO | libc::ENODEV) => Fault::NoAcknowledge,
        Some(libc::EBUSY) => Fault::Busy,
        Some(libc::ETIMEDOUT) => Fault::Timeout,
        Some(libc::ENOENT) => Fault::NoBus,
        _ => Fault::Other,
    }
}

fn bus_error(error: &LinuxI2CError, context: &str) -> BusError {
    let errno = match error {
        LinuxI2CError::Errno(errno) => Some(*errno),
        LinuxI2CError::Io(e) => e.raw_os_error(),
    };
    let detail = match errno {
        Some(errno) => std::io::Error::from_raw_os_error(errno).to_string(),
        None => error.to_string(),
    };
    BusError::new(fault(errno), context, Some(&detail))
}

/// [`super::Access::Unbound`]: linux-embedded-hal's `I2cdev`.
pub(super) struct UnboundDevice {
    inner: linux_embedded_hal::I2cdev,
}

impl UnboundDevice {
    pub(super) fn open(path: &Path) -> Result<Self, BusError> {
        linux_embedded_hal::I2cdev::new(path)
            .map(|inner| Self { inner })
            .map_err(|e| bus_error(&e, &path.display().to_string()))
    }

    pub(super) fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
        context: &str,
    ) -> Result<(), BusError> {
        self.inner
            .transaction(address, operations)
            .map_err(|e| bus_error(e.inner(), context))
    }
}

/// [`super::Access::AlongsideDriver`]: one `I2C_RDWR` ioctl per transaction, the address in each
/// message, no `I2C_SLAVE`.
pub(super) struct CombinedTransfers {
    inner: LinuxI2CBus,
}

impl CombinedTransfers {
    pub(super) fn open(path: &Path) -> Result<Self, BusError> {
        LinuxI2CBus::new(path)
            .map(|inner| Self { inner })
            .map_err(|e| bus_error(&e, &path.display().to_string()))
    }

    pub(super) fn transaction(
        &mut self,
        address: u8,
        operations: &mut [Operation<'_>],
        context: &str,
    ) -> Result<(), BusError> {
        let address = u16::from(address);
        let mut messages: Vec<LinuxI2CMessage<'_>> = operations
            .iter_mut()
            .map(|op| match op {
                Operation::Write(bytes) => LinuxI2CMessage::write(bytes).with_address(address),
                Operation::Read(buffer) => LinuxI2CMessage::read(buffer).with_address(address),
            })
            .collect();
        self.inner
            .transfer(&mut messages)
            .map(drop)
            .map_err(|e| bus_error(&e, context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_maps_to_the_fault_an_operator_acts_on() {
        assert_eq!(fault(Some(libc::EREMOTEIO)), Fault::NoAcknowledge);
        assert_eq!(fault(Some(libc::ENXIO)), Fault::NoAcknowledge);
        assert_eq!(fault(Some(libc::EBUSY)), Fault::Busy);
        assert_eq!(fault(Some(libc::ETIMEDOUT)), Fault::Timeout);
        assert_eq!(fault(Some(libc::ENOENT)), Fault::NoBus);
        assert_eq!(fault(Some(libc::EACCES)), Fault::Other);
        assert_eq!(fault(None), Fault::Other);
        let err = bus_error(&LinuxI2CError::Errno(libc::EBUSY), "i2c-1 0x68");
        assert_eq!(err.fault, Fault::Busy);
        assert!(
            err.to_string().starts_with("i2c-1 0x68: address busy"),
            "{err}"
        );
    }
}

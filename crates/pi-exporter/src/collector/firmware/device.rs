//! The firmware mailbox device: the only place in the exporter that calls `ioctl`.
//!
//! `Mailbox` is the seam: the real `/dev/vcio` (and `/dev/vcio_gencmd`) implement it, and so
//! does the simulated firmware of `--simulate.board`, so the collector cannot tell them apart.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

/// Something that processes property buffers like `/dev/vcio` does.
pub trait Mailbox: Send + Sync {
    /// Sends one property buffer; the reply overwrites it in place. Fails like the kernel does:
    /// `EINVAL` for a malformed buffer or when the firmware rejected it (then `buf` is left as
    /// it was).
    fn property(&self, buf: &mut [u32]) -> io::Result<()>;
}

/// The kernel reads `buf[0]` bytes from the buffer: refuse a buffer that claims more than it
/// holds, so the kernel never reads or writes past it.
pub fn check_declared_size(buf: &[u32]) -> io::Result<()> {
    match buf.first() {
        Some(&size) if size as usize <= std::mem::size_of_val(buf) => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "property buffer shorter than its declared size",
        )),
    }
}

/// An opened `/dev/vcio` or `/dev/vcio_gencmd`.
#[derive(Debug)]
pub struct Vcio {
    file: File,
    path: PathBuf,
}

impl Vcio {
    /// Opens the device read-write, as vcgencmd does.
    pub fn open(path: &Path) -> io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(target_os = "linux")]
impl Mailbox for Vcio {
    fn property(&self, buf: &mut [u32]) -> io::Result<()> {
        use std::os::fd::AsRawFd as _;

        use super::mailbox::IOCTL_MBOX_PROPERTY;

        check_declared_size(buf)?;
        // `libc::Ioctl` is `c_ulong` on glibc and `c_int` on musl; the cast keeps the bit
        // pattern either way, as C does.
        let request = IOCTL_MBOX_PROPERTY as libc::Ioctl;
        // SAFETY: the descriptor is open for the lifetime of `self`, and `buf` is a live,
        // exclusively borrowed buffer of at least `buf[0]` bytes (checked above), the only
        // memory the driver reads and writes.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), request, buf.as_mut_ptr()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
impl Mailbox for Vcio {
    fn property(&self, _buf: &mut [u32]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the firmware mailbox exists only on Linux",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_buffers_shorter_than_declared() {
        assert!(check_declared_size(&[12, 0, 0]).is_ok());
        assert!(check_declared_size(&[16, 0, 0]).is_err());
        assert!(check_declared_size(&[]).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_that_is_not_the_mailbox_fails_cleanly() {
        // /dev/null accepts the open but not the ioctl: an error, never a crash.
        let vcio = Vcio::open(Path::new("/dev/null")).expect("open /dev/null");
        let mut buf = super::super::mailbox::PropertyBatch::new(vec![
            super::super::mailbox::Property::Temperature,
        ])
        .request();
        assert!(vcio.property(&mut buf).is_err());
        assert!(Vcio::open(Path::new("/nonexistent/vcio")).is_err());
    }
}

//! [`IoDevice`]: readiness waits on any pollable fd, owned or not.
//!
//! booster's `basic_io_device`: `assign` an fd to own it, or `attach` one the caller keeps (stdin, a
//! library's socket, a timerfd, an inotify fd), then wait for it to become readable or writable and do
//! the I/O yourself. This is how any library that exposes a pollable fd joins the loop.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

use crate::LocalHandle;
use crate::net::registration::{Registration, registered_object};

use crate::reactor::FdSlot;

/// A watched fd. Waits complete when the fd is ready; the I/O is the caller's.
///
/// ```
/// use std::io::Write;
/// use aio::{IoDevice, IoService};
/// let svc = IoService::new()?;
/// let (reader, mut writer) = std::io::pipe()?;
/// let device = IoDevice::new(&svc, reader)?;
/// writer.write_all(b"x")?;
/// svc.block_on(device.readable())?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct IoDevice {
    pub(crate) registration: Registration,
}

impl IoDevice {
    /// Watches `fd` and owns it: it is closed with the device (booster's `assign`). The fd's blocking
    /// mode is left as it is.
    ///
    /// # Errors
    /// `Unsupported` for fds the backend cannot watch (regular files); what registering reports.
    pub fn new(svc: &LocalHandle, fd: impl Into<OwnedFd>) -> io::Result<IoDevice> {
        IoDevice::watching(svc, FdSlot::Owned(fd.into()))
    }

    /// Watches `fd` without owning it: it is never closed by `aio` (booster's `attach`); `close`,
    /// `release` or dropping the device only stops watching it.
    ///
    /// # Safety
    /// `fd` must stay open, and must not be replaced by another file under the same number, for as
    /// long as the device watches it (until it is closed, released or dropped).
    ///
    /// # Errors
    /// As for [`IoDevice::new`].
    pub unsafe fn attach(svc: &LocalHandle, fd: RawFd) -> io::Result<IoDevice> {
        IoDevice::watching(svc, FdSlot::Attached(fd))
    }

    fn watching(svc: &LocalHandle, slot: FdSlot) -> io::Result<IoDevice> {
        let device = IoDevice {
            registration: Registration::new(svc),
        };
        device.registration.register(slot)?;
        Ok(device)
    }

    /// Sets or clears `O_NONBLOCK` on the fd (booster's `set_non_blocking`). Note that the flag
    /// belongs to the open file, which other processes may share (a terminal's stdin).
    ///
    /// # Errors
    /// `NotConnected` if closed; what `fcntl` reports.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        self.registration.with_fd(|fd| {
            let mut flags = rustix::fs::fcntl_getfl(fd)?;
            flags.set(rustix::fs::OFlags::NONBLOCK, nonblocking);
            Ok(rustix::fs::fcntl_setfl(fd, flags)?)
        })
    }

    /// Stops watching and hands an owned fd back, open; `None` for an attached fd (it was never ours)
    /// or a closed device.
    pub fn release(&self) -> Option<OwnedFd> {
        self.registration.take().and_then(FdSlot::into_owned)
    }

    registered_object!(registration, "device");
}

impl std::fmt::Debug for IoDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoDevice")
            .field("fd", &self.native())
            .finish()
    }
}

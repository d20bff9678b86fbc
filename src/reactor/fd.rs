//! The fd of a source: owned, owned with a close hook, attached (not ours), or none at all.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

/// The fd of a source: owned (closed when the source goes), attached (the caller keeps it open), or
/// none at all (a timer or completion, made ready by the loop itself).
pub(crate) enum FdSlot {
    Owned(OwnedFd),
    /// Owned, with a hook that runs right before the fd closes (a socket's `on_close`). Boxed: few
    /// sockets have hooks, and every source pays for the largest variant.
    Hooked(Box<HookedFd>),
    Attached(RawFd),
    Virtual,
}

impl FdSlot {
    #[inline]
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            FdSlot::Owned(fd) => Some(fd.as_fd()),
            FdSlot::Hooked(fd) => Some(fd.as_fd()),
            // SAFETY: `IoDevice::attach` is an `unsafe fn` whose caller promised to keep the fd open
            // for as long as it stays attached, i.e. while this slot exists.
            FdSlot::Attached(fd) => Some(unsafe { BorrowedFd::borrow_raw(*fd) }),
            FdSlot::Virtual => None,
        }
    }

    /// The fd, handed back without closing it (and without its close hook): `None` for an attached
    /// fd (never ours) or a virtual source.
    pub(crate) fn into_owned(self) -> Option<OwnedFd> {
        match self {
            FdSlot::Owned(fd) => Some(fd),
            FdSlot::Hooked(fd) => Some((*fd).into_fd()),
            FdSlot::Attached(_) | FdSlot::Virtual => None,
        }
    }
}

/// The hook a [`HookedFd`] runs before its fd closes.
pub(crate) type CloseHook = Box<dyn FnOnce(BorrowedFd<'_>)>;

/// An owned fd with a hook that runs right before it closes, whatever closes it (a socket's
/// `on_close`: see `net::hooks`). Handing the fd out ([`into_fd`](HookedFd::into_fd)) drops the hook
/// unrun: the fd is not closed, so it is not the loop's to announce.
pub(crate) struct HookedFd {
    /// `None` only once handed out.
    fd: Option<OwnedFd>,
    on_close: Option<CloseHook>,
}

impl HookedFd {
    pub(crate) fn new(fd: OwnedFd, on_close: CloseHook) -> HookedFd {
        HookedFd {
            fd: Some(fd),
            on_close: Some(on_close),
        }
    }

    pub(crate) fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd
            .as_ref()
            .expect("a live HookedFd has its fd")
            .as_fd()
    }

    pub(crate) fn into_fd(mut self) -> OwnedFd {
        self.on_close = None;
        self.fd.take().expect("a live HookedFd has its fd")
    }
}

impl Drop for HookedFd {
    fn drop(&mut self) {
        if let (Some(fd), Some(hook)) = (self.fd.as_ref(), self.on_close.take()) {
            hook(fd.as_fd());
        }
        // `self.fd` closes after this, when the field drops.
    }
}

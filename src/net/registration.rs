//! An object's place in its loop: the loop and the token of its source. Every I/O object has one
//! (sockets through `SocketCore`, `IoDevice` directly), and [`registered_object!`] gives them the
//! methods that only delegate to it.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::LocalHandle;
use crate::op::{Op, Operation};
use crate::reactor::{FdSlot, Token};

pub(crate) struct Registration {
    svc: LocalHandle,
    /// [`Token::NONE`] while nothing is registered (not opened yet, or closed).
    token: Cell<Token>,
}

impl Registration {
    /// Nothing registered yet.
    pub(crate) fn new(svc: &LocalHandle) -> Registration {
        Registration {
            svc: svc.clone(),
            token: Cell::new(Token::NONE),
        }
    }

    pub(crate) fn svc(&self) -> &LocalHandle {
        &self.svc
    }

    pub(crate) fn token(&self) -> Token {
        self.token.get()
    }

    /// Registers `slot` with the loop, closing whatever was registered before.
    pub(crate) fn register(&self, slot: FdSlot) -> io::Result<()> {
        let token = self.svc.reactor().add_source(slot)?;
        self.close();
        self.token.set(token);
        Ok(())
    }

    /// An operation on this object's source.
    #[inline(always)]
    pub(crate) fn op<O: Operation>(&self, op: O) -> Op<O> {
        Op::new(self.svc.reactor(), self.token(), op)
    }

    /// An operation that completes with `err` without trying (the object could not be set up).
    pub(crate) fn failed_op<O: Operation>(&self, op: O, err: io::Error) -> Op<O> {
        Op::failed(self.svc.reactor(), op, err)
    }

    /// Runs `f` with the fd, while registered.
    pub(crate) fn with_fd<R>(
        &self,
        f: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.svc.reactor().with_fd(self.token(), f)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.with_fd(|_| Ok(())).is_ok()
    }

    /// The raw fd, while registered.
    pub(crate) fn native(&self) -> Option<RawFd> {
        self.with_fd(|fd| Ok(fd.as_raw_fd())).ok()
    }

    /// Completes pending operations with `ECANCELED`; the source stays registered.
    pub(crate) fn cancel(&self) {
        self.svc.reactor().cancel_source(self.token());
    }

    /// Cancels pending operations and closes the fd (an attached one is only forgotten). Closing
    /// twice does nothing.
    pub(crate) fn close(&self) {
        drop(self.take());
    }

    /// Takes an owned fd out of the loop for a conversion into a std type, or refuses and changes
    /// nothing: `NotConnected` when nothing is registered, `ResourceBusy` while an operation is
    /// pending (it would be cancelled), `Unsupported` for an attached fd (never ours to hand out),
    /// or what `prepare` reports. `prepare` runs last, on the fd still registered (check its kind,
    /// restore blocking mode); after it succeeds nothing can fail.
    pub(crate) fn take_for_conversion(
        &self,
        prepare: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<OwnedFd> {
        let reactor = self.svc.reactor();
        let token = self.token();
        let owned = reactor.owns_fd(token).ok_or_else(crate::error::closed)?;
        if reactor.has_pending(token) {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                "an operation is pending on it: let it finish, or cancel() it and let its handler run, first",
            ));
        }
        if !owned {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "its fd is attached, not owned: it stays the caller's (IoDevice::attach)",
            ));
        }
        self.with_fd(prepare)?;
        Ok(self
            .take()
            .and_then(FdSlot::into_owned)
            .expect("an owned fd was registered just now"))
    }

    /// Cancels pending operations and takes the source out of the loop: its fd slot, if it was
    /// registered.
    pub(crate) fn take(&self) -> Option<FdSlot> {
        self.svc
            .reactor()
            .remove_source(self.token.replace(Token::NONE))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.close();
    }
}

/// The methods every I/O object has that only delegate to its place in the loop: `cancel`, `close`,
/// `is_open`, `native`, `service`. Used inside the object's `impl` block, naming the field that
/// offers them (`core` of a socket, `registration` of a device) and what the object is called in
/// their docs.
macro_rules! registered_object {
    ($field:ident, $what:literal) => {
        #[doc = concat!("Completes pending operations with `ECANCELED`; the ", $what, " stays open and usable.")]
        pub fn cancel(&self) {
            self.$field.cancel();
        }

        #[doc = concat!(
            "Completes pending operations with `ECANCELED` and closes the fd if the ", $what,
            " owns it (running a socket's `on_close` hook first, and removing the Unix socket file ",
            "its bind created). Closing twice does nothing."
        )]
        pub fn close(&self) {
            self.$field.close();
        }

        #[doc = concat!("Whether the ", $what, " is open.")]
        pub fn is_open(&self) -> bool {
            self.$field.is_open()
        }

        #[doc = concat!(
            "The raw fd, while open (booster's `native()`); the ", $what, " keeps owning it."
        )]
        pub fn native(&self) -> Option<std::os::fd::RawFd> {
            self.$field.native()
        }

        #[doc = concat!("The loop this ", $what, " belongs to (booster's `get_io_service`).")]
        pub fn service(&self) -> &$crate::LocalHandle {
            self.$field.svc()
        }

        #[doc = concat!(
            "Completes when the ", $what, "'s fd is readable, or has an error or hang-up to report ",
            "(booster's `on_readable`, Asio's `async_wait(wait_read)`). Nothing is read: pair it with ",
            "a non-blocking read of your own (`try_read`, a protocol library's), which may still say ",
            "`WouldBlock` if someone else took the bytes."
        )]
        pub fn readable(&self) -> $crate::op::Op<$crate::op::Ready> {
            self.$field
                .op($crate::op::Ready::new($crate::op::Interest::Read))
        }

        #[doc = concat!(
            "Completes when the ", $what, "'s fd is writable, or has an error or hang-up to report ",
            "(booster's `on_writeable`, Asio's `async_wait(wait_write)`). Nothing is written: pair it ",
            "with a non-blocking write of your own (`try_write`)."
        )]
        pub fn writable(&self) -> $crate::op::Op<$crate::op::Ready> {
            self.$field
                .op($crate::op::Ready::new($crate::op::Interest::Write))
        }

        #[doc = concat!(
            "An operation of your own on this ", $what, "'s fd, finished like any other with ",
            "`.then(handler)` or `.await`: see the contract and the example of ",
            "[`Operation`](crate::op::Operation)."
        )]
        pub fn op<O: $crate::op::Operation>(&self, op: O) -> $crate::op::Op<O> {
            self.$field.op(op)
        }
    };
}

pub(crate) use registered_object;

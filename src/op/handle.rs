//! [`OpHandle`]: one started operation, to cancel it alone.

use std::io;
use std::rc::Rc;

use super::Interest;
use crate::reactor::cancel::Target;
use crate::reactor::{Reactor, Token};

/// A started operation, returned by [`Op::then`](crate::Op::then): [`cancel`](OpHandle::cancel)
/// completes that operation, and only that one, with `ECANCELED` (Asio's per-operation
/// cancellation slot). `cancel()` on the object cancels every pending operation of it instead.
///
/// Dropping the handle does nothing: the operation goes on. The handle does not keep the operation
/// (or its buffer) alive, and cancelling after the operation finished does nothing.
///
/// ```
/// use aio::{IoService, StreamSocket};
/// let svc = IoService::new()?;
/// let (a, _b) = StreamSocket::pair(&svc)?;
/// let read = a.read_some(vec![0u8; 64]).then(|(res, _buf)| {
///     assert!(aio::is_cancelled(&res.unwrap_err()));
/// });
/// // A write on the same socket is not affected.
/// let write = a.write_all(b"hello".to_vec()).then(|(res, _)| res.unwrap());
/// assert!(read.cancel(), "the read was pending");
/// svc.run_until_done()?;
/// assert!(!read.cancel(), "finished: nothing to cancel");
/// assert!(!write.cancel());
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct OpHandle {
    reactor: Rc<Reactor>,
    token: Token,
    interest: Interest,
    target: Option<Target>,
}

impl OpHandle {
    /// The handle of the callback operation numbered `id` on `token`'s `interest` direction.
    pub(super) fn block(
        reactor: Rc<Reactor>,
        token: Token,
        interest: Interest,
        id: u32,
    ) -> OpHandle {
        OpHandle {
            reactor,
            token,
            interest,
            target: Some(Target::Block(id)),
        }
    }

    /// The handle of an awaited operation on the ring turned into a callback, by its cell.
    pub(super) fn cell(
        reactor: Rc<Reactor>,
        token: Token,
        interest: Interest,
        cell: *const (),
    ) -> OpHandle {
        OpHandle {
            reactor,
            token,
            interest,
            target: Some(Target::Cell(cell)),
        }
    }

    /// The handle of an operation that finished before it was started (its object could not be set
    /// up, or it had completed already): nothing to cancel.
    pub(super) fn finished(reactor: Rc<Reactor>) -> OpHandle {
        OpHandle {
            reactor,
            token: Token::NONE,
            interest: Interest::Read,
            target: None,
        }
    }

    /// Cancels the operation: its handler runs (from the loop, as always) with `ECANCELED`. Returns
    /// whether it was still pending. On io_uring the kernel is asked to cancel it and may have
    /// finished it first: then its handler gets that result instead (the operation has one outcome,
    /// and data the kernel read is never dropped).
    pub fn cancel(&self) -> bool {
        self.cancel_with(crate::error::cancelled())
    }

    /// [`cancel`](OpHandle::cancel) with an error of the caller's choosing (a deadline's `TimedOut`).
    pub(crate) fn cancel_with(&self, err: io::Error) -> bool {
        match self.target {
            Some(target) => self
                .reactor
                .cancel_op(self.token, self.interest, target, err),
            None => false,
        }
    }

    /// Where the operation waits, and which it is: for a deadline.
    pub(super) fn parts(&self) -> (&Rc<Reactor>, Token, Interest, Option<Target>) {
        (&self.reactor, self.token, self.interest, self.target)
    }
}

impl std::fmt::Debug for OpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpHandle")
            .field("interest", &self.interest)
            .finish_non_exhaustive()
    }
}

//! What operations share on the io_uring backend: an awaited operation's cell on the ring, and the
//! pieces of their ring requests.
//!
//! An awaited operation on the ring is moved into a cell that the reactor's table of operations in
//! flight shares with its future: the kernel's answer finishes it there, and the future takes the
//! output. The cell stays in the table until the kernel has answered, even if the future is dropped
//! (see `reactor::ring`), so the kernel never writes into memory that was freed.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Waker;
use std::time::Duration;

use super::{Cx, Operation, RingEntry};
use crate::reactor::Reactor;
use crate::reactor::block::Job;
use crate::reactor::ring::TaskSlot;

/// A handler given to an awaited operation that is already on the ring (see `Op::then`).
type ThenHandler<O> = Box<dyn FnOnce(<O as Operation>::Output)>;

/// An awaited operation on the ring, shared by its future and the table of operations in flight.
pub(crate) struct TaskCell<O: Operation> {
    state: RefCell<TaskState<O>>,
    /// The operation's number, to cancel it alone (see `reactor::cancel`).
    pub(super) id: u32,
}

struct TaskState<O: Operation> {
    op: Option<O>,
    out: Option<O::Output>,
    waker: Option<Waker>,
    /// Set when the future was turned into a callback: the handler and whether it counts as work.
    then: Option<(ThenHandler<O>, bool)>,
}

impl<O: Operation> TaskCell<O> {
    pub(crate) fn new(op: O, id: u32) -> Rc<TaskCell<O>> {
        Rc::new(TaskCell {
            id,
            state: RefCell::new(TaskState {
                op: Some(op),
                out: None,
                waker: None,
                then: None,
            }),
        })
    }

    /// The operation back, if it never went to the kernel (its direction was busy, or it is closed).
    pub(crate) fn take_op(&self) -> Option<O> {
        self.state.borrow_mut().op.take()
    }

    /// The output if finished; otherwise remembers `waker` to wake when it is.
    pub(crate) fn poll_output(&self, waker: &Waker) -> Option<O::Output> {
        let mut state = self.state.borrow_mut();
        if let Some(out) = state.out.take() {
            return Some(out);
        }
        match &mut state.waker {
            Some(w) if w.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        None
    }

    /// The operation's direction, while the kernel has it.
    pub(crate) fn interest(&self) -> Option<super::Interest> {
        self.state.borrow().op.as_ref().map(Operation::interest)
    }

    /// Whether the kernel still has (or may still have) the operation.
    pub(crate) fn in_flight(&self) -> bool {
        self.state.borrow().op.is_some()
    }

    /// The future is gone: nobody is to be woken when the kernel answers.
    pub(crate) fn abandon(&self) {
        self.state.borrow_mut().waker = None;
    }

    /// The future became a callback: `handler` runs (from the ready queue) with the output, now if
    /// the kernel has answered already, otherwise when it does.
    pub(crate) fn then(&self, reactor: &Reactor, handler: ThenHandler<O>, counted: bool) {
        if reactor.is_shut_down() {
            return;
        }
        if counted {
            reactor.add_work();
        }
        let mut state = self.state.borrow_mut();
        state.waker = None;
        match state.out.take() {
            Some(out) => {
                drop(state);
                queue_handler(reactor, handler, counted, out);
            }
            None => state.then = Some((handler, counted)),
        }
    }

    fn finish(&self, out: O::Output, reactor: &Reactor) {
        let (waker, then) = {
            let mut state = self.state.borrow_mut();
            match state.then.take() {
                Some(then) => (None, Some((then, out))),
                None => {
                    state.out = Some(out);
                    (state.waker.take(), None)
                }
            }
        };
        if let Some(((handler, counted), out)) = then {
            queue_handler(reactor, handler, counted, out);
        }
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The handler of an operation that was awaited on the ring, then turned into a callback.
struct ThenJob<T> {
    handler: Box<dyn FnOnce(T)>,
    out: T,
}

impl<T: 'static> Job for ThenJob<T> {
    fn run(self, _reactor: &Reactor) -> bool {
        (self.handler)(self.out);
        true
    }
}

fn queue_handler<T: 'static>(
    reactor: &Reactor,
    handler: Box<dyn FnOnce(T)>,
    counted: bool,
    out: T,
) {
    let job = reactor.alloc(ThenJob { handler, out }, reactor.seq(), counted);
    reactor.push_job(job.into_job());
}

impl<O: Operation> TaskSlot for TaskCell<O> {
    fn id(&self) -> u32 {
        self.id
    }

    fn prepare(&self, fd: RawFd) -> Option<RingEntry> {
        self.state.borrow_mut().op.as_mut()?.prepare(fd)
    }

    fn on_cqe(&self, res: i32, reactor: &Reactor) -> (bool, Option<Duration>) {
        // Taken out while it completes: the answer may run user code (a waker).
        let Some(mut op) = self.state.borrow_mut().op.take() else {
            return (true, None);
        };
        let mut cx = Cx::for_completion();
        match op.complete(res, &mut cx) {
            std::task::Poll::Ready(res) => {
                self.finish(op.finish(res), reactor);
                (true, cx.retry_after)
            }
            std::task::Poll::Pending => {
                self.state.borrow_mut().op = Some(op);
                (false, cx.retry_after)
            }
        }
    }

    fn cancel(&self, err: io::Error, reactor: &Reactor) {
        let op = self.state.borrow_mut().op.take();
        if let Some(op) = op {
            self.finish(op.finish(Err(err)), reactor);
        }
    }
}

/// Turns a CQE result into an `io::Result` of a count.
pub(crate) fn cqe_result(res: i32) -> io::Result<usize> {
    if res >= 0 {
        Ok(res as usize)
    } else {
        Err(cqe_error(res))
    }
}

/// The error of a failed request's CQE result (a negative errno).
pub(crate) fn cqe_error(res: i32) -> io::Error {
    if res == -libc::ECANCELED {
        crate::error::cancelled()
    } else {
        io::Error::from_raw_os_error(-res)
    }
}

/// The iovecs and message header of a vectored ring request (`SENDMSG`, `RECVMSG`), boxed in the
/// operation so that what the kernel was pointed at stays put while the request is in flight.
pub(crate) struct MsgParts {
    iov: Vec<libc::iovec>,
    hdr: libc::msghdr,
}

impl MsgParts {
    pub(crate) fn new(iov: Vec<libc::iovec>) -> Box<MsgParts> {
        // SAFETY: an all-zero msghdr is valid: null pointers with zero lengths, no flags.
        let hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut parts = Box::new(MsgParts { iov, hdr });
        parts.hdr.msg_iov = parts.iov.as_mut_ptr();
        parts.hdr.msg_iovlen = parts.iov.len() as _;
        parts
    }

    pub(crate) fn header(&mut self) -> *mut libc::msghdr {
        &mut self.hdr
    }
}

impl std::fmt::Debug for MsgParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgParts")
            .field("iovecs", &self.iov.len())
            .finish()
    }
}

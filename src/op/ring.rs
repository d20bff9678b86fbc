//! Operations on the io_uring backend's ring.
//!
//! An operation whose type can be a ring request (`Operation::RING`) is not tried by a syscall of
//! ours on that backend: it is moved into the loop's table of operations in flight, its next step is
//! queued as a request tagged with its key, and the kernel's answer finishes it (or asks for another
//! step, such as the rest of a `write_all`). The operation, with its buffer, stays in that table until
//! the kernel has answered, whatever happens meanwhile: a future dropped while its request is in
//! flight leaves the operation behind and asks the kernel to cancel it, and closing a socket cancels
//! its requests and waits for their answers before the fd is closed. The kernel therefore never
//! writes into memory that was freed or handed back.
//!
//! Each direction of a socket has at most one request in flight; the operations that come meanwhile
//! wait in the direction's waiter list, in order, as on the readiness backends.

use std::cell::{RefCell, RefMut};
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::task::Waker;

use super::{Cx, Interest, Operation, ReadyOp};
use crate::LocalHandle;
use crate::driver::Token;
use crate::driver::uring::RingEntry;
use crate::service::Job;
use crate::service::source::Waiter;

/// An operation the kernel holds: its object's token and direction, and who finishes it.
pub(crate) struct Inflight {
    token: Token,
    interest: Interest,
    op: RingOp,
}

/// Who finishes an operation on the ring.
pub(crate) enum RingOp {
    /// Finished with `.then`: the loop queues its handler.
    Callback(Box<dyn ReadyOp>),
    /// Awaited: the future takes the result from the shared cell.
    Task(Rc<dyn TaskSlot>),
    /// Taken out of the table while its completion is handled.
    Empty,
}

impl RingOp {
    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        match self {
            RingOp::Callback(op) => op.prepare(fd),
            RingOp::Task(cell) => cell.prepare(fd),
            RingOp::Empty => None,
        }
    }

    fn on_cqe(&mut self, res: i32, cx: &mut Cx<'_>) -> bool {
        match self {
            RingOp::Callback(op) => op.on_cqe(res, cx),
            RingOp::Task(cell) => cell.on_cqe(res, cx),
            RingOp::Empty => true,
        }
    }

    fn cancel(&mut self, err: io::Error) {
        match self {
            RingOp::Callback(op) => op.cancel(err),
            RingOp::Task(cell) => cell.cancel(err),
            RingOp::Empty => {}
        }
    }
}

/// What the table of operations in flight needs of an awaited operation's cell.
pub(crate) trait TaskSlot {
    fn prepare(&self, fd: RawFd) -> Option<RingEntry>;
    /// The kernel's answer; true once the operation is finished (its output stored, its task woken).
    fn on_cqe(&self, res: i32, cx: &mut Cx<'_>) -> bool;
    /// Finishes the operation with `err` without a (further) request.
    fn cancel(&self, err: io::Error);
}

/// An awaited operation on the ring, shared by its future and the table of operations in flight.
pub(crate) struct TaskCell<O: Operation> {
    state: RefCell<TaskState<O>>,
}

struct TaskState<O: Operation> {
    op: Option<O>,
    out: Option<O::Output>,
    waker: Option<Waker>,
}

impl<O: Operation> TaskCell<O> {
    pub(crate) fn new(op: O) -> Rc<TaskCell<O>> {
        Rc::new(TaskCell {
            state: RefCell::new(TaskState {
                op: Some(op),
                out: None,
                waker: None,
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

    /// Whether the kernel still has (or may still have) the operation.
    pub(crate) fn in_flight(&self) -> bool {
        self.state.borrow().op.is_some()
    }

    /// The future is gone: nobody is to be woken when the kernel answers.
    pub(crate) fn abandon(&self) {
        self.state.borrow_mut().waker = None;
    }

    fn finish(&self, out: O::Output) {
        let waker = {
            let mut state = self.state.borrow_mut();
            state.out = Some(out);
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl<O: Operation> TaskSlot for TaskCell<O> {
    fn prepare(&self, fd: RawFd) -> Option<RingEntry> {
        self.state.borrow_mut().op.as_mut()?.prepare(fd)
    }

    fn on_cqe(&self, res: i32, cx: &mut Cx<'_>) -> bool {
        // Taken out while it completes: the answer may run user code (a waker, a hook).
        let Some(mut op) = self.state.borrow_mut().op.take() else {
            return true;
        };
        match op.complete(res, cx) {
            std::task::Poll::Ready(res) => {
                self.finish(op.finish(res));
                true
            }
            std::task::Poll::Pending => {
                self.state.borrow_mut().op = Some(op);
                false
            }
        }
    }

    fn cancel(&self, err: io::Error) {
        let op = self.state.borrow_mut().op.take();
        if let Some(op) = op {
            self.finish(op.finish(Err(err)));
        }
    }
}

/// How an attempt to put an operation on the ring came out.
pub(crate) enum RingStart {
    /// Its request is queued under this key.
    Started(u32),
    /// The direction has a request in flight (or is backing off): the operation must wait its turn.
    Busy(RingOp),
    /// The object is closed.
    Gone(RingOp),
}

impl LocalHandle {
    /// Whether operations that can be ring requests go to the ring (the io_uring backend).
    #[inline]
    pub(crate) fn ring_mode(&self) -> bool {
        self.inner.ring
    }

    /// Puts `op` on the ring for `token`'s `interest` direction, unless that direction is busy.
    pub(crate) fn ring_start(&self, token: Token, interest: Interest, mut op: RingOp) -> RingStart {
        let mut sources = self.inner.sources.borrow_mut();
        let Some(source) = sources.get_mut(token) else {
            return RingStart::Gone(op);
        };
        let Some(fd) = source.raw_fd() else {
            return RingStart::Gone(op);
        };
        let dir = source.dir(interest);
        if dir.inflight().is_some()
            || dir.waiters.held()
            || source.backoff_until(interest).is_some()
        {
            return RingStart::Busy(op);
        }
        let Some(entry) = op.prepare(fd) else {
            return RingStart::Gone(op);
        };
        let key = self.inner.inflight.borrow_mut().insert(Inflight {
            token,
            interest,
            op,
        }) as u32;
        source.dir_mut(interest).set_inflight(Some(key));
        drop(sources);
        self.push_request(entry, key);
        RingStart::Started(key)
    }

    fn push_request(&self, entry: RingEntry, key: u32) {
        let mut driver = self.inner.driver.borrow_mut();
        if let Some(ring) = driver.ring() {
            ring.push_op(entry, key);
        }
    }

    /// Asks the kernel to cancel the operation `key` (a dropped future's, or `cancel()`); it
    /// completes through the usual path.
    pub(crate) fn ring_cancel(&self, key: u32) {
        if let Some(ring) = self.inner.driver.borrow_mut().ring() {
            // A refusal leaves the operation to finish by itself; the kernel still owns it.
            let _ = ring.cancel_op(key);
        }
    }

    /// Cancels the operations `token` has on the ring and waits for the kernel's answers (closing its
    /// fd comes next). Their handlers run later, as usual.
    pub(crate) fn ring_cancel_and_wait(&self, keys: &[u32]) {
        if keys.is_empty() {
            return;
        }
        if let Some(ring) = self.inner.driver.borrow_mut().ring() {
            ring.cancel_and_wait(keys);
        }
    }

    /// Handles the completions the driver reaped.
    pub(crate) fn dispatch_completions(&self) {
        if !self.inner.ring {
            return;
        }
        loop {
            let next = self
                .inner
                .driver
                .borrow_mut()
                .ring()
                .and_then(|r| r.pop_completion());
            let Some((key, res)) = next else {
                return;
            };
            self.ring_completed(key, res);
        }
    }

    fn ring_completed(&self, key: u32, res: i32) {
        let (token, interest, mut op) = {
            let mut inflight = self.inner.inflight.borrow_mut();
            let Some(entry) = inflight.get_mut(key as usize) else {
                return;
            };
            let op = std::mem::replace(&mut entry.op, RingOp::Empty);
            (entry.token, entry.interest, op)
        };
        // User code may run here (a waker, a socket's open hook): if it panics, the operation is
        // finished all the same and its direction freed, and the panic goes on out of the loop.
        let mut cx = Cx {
            fd: None,
            svc: Some(self),
            token,
            drained: false,
            retry_after: None,
        };
        let outcome =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| op.on_cqe(res, &mut cx)));
        if let Some(delay) = cx.retry_after {
            // Out of fds (an accept): the direction's next request waits for the back-off.
            self.wake_after(token, interest, delay);
        }
        let mut finished = match outcome {
            Ok(finished) => finished,
            Err(panic) => {
                self.ring_release(key, token, interest);
                std::panic::resume_unwind(panic);
            }
        };
        if !finished {
            // Another step (the rest of a write_all), under the same key.
            let fd = self
                .inner
                .sources
                .borrow()
                .get(token)
                .and_then(|s| s.raw_fd());
            match fd.and_then(|fd| op.prepare(fd)) {
                Some(entry) => {
                    if let Some(slot) = self.inner.inflight.borrow_mut().get_mut(key as usize) {
                        slot.op = op;
                    }
                    self.push_request(entry, key);
                    return;
                }
                None => {
                    op.cancel(crate::error::closed());
                    finished = true;
                }
            }
        }
        debug_assert!(finished);
        self.ring_release(key, token, interest);
        if let RingOp::Callback(op) = op {
            self.push_job(Job::Op(op));
        }
        self.ring_next(token, interest);
    }

    /// Forgets the finished operation `key`: its table entry and its direction's turn.
    fn ring_release(&self, key: u32, token: Token, interest: Interest) {
        self.inner.inflight.borrow_mut().try_remove(key as usize);
        if let Some(source) = self.inner.sources.borrow_mut().get_mut(token) {
            let dir = source.dir_mut(interest);
            if dir.inflight() == Some(key) {
                dir.set_inflight(None);
            }
        }
    }

    /// The direction's turn on the ring is free: the operations waiting for it go, in order. A
    /// future is woken (it puts itself on the ring when polled); a callback operation is put on the
    /// ring, which ends the turn.
    pub(crate) fn ring_next(&self, token: Token, interest: Interest) {
        loop {
            let (waiter, fd) = {
                let sources = self.inner.sources.borrow_mut();
                let Ok(mut source) = RefMut::filter_map(sources, |t| t.get_mut(token)) else {
                    return;
                };
                if source.dir(interest).inflight().is_some()
                    || source.backoff_until(interest).is_some()
                {
                    return;
                }
                let fd = source.raw_fd();
                let waiters = &mut source.dir_mut(interest).waiters;
                if let Some(Waiter::Persistent(op)) = waiters.first() {
                    // Served in place, readiness and all (it never goes on the ring).
                    let op = op.clone();
                    op.serve(self, source, false);
                    return;
                }
                match waiters.pop_front() {
                    Some(w) => (w, fd),
                    None => return,
                }
            };
            match waiter {
                Waiter::Task { wake, .. } => self.wake_task(wake),
                Waiter::Callback(op) if op.on_ring() => {
                    match self.ring_start(token, interest, RingOp::Callback(op)) {
                        RingStart::Started(_) => return,
                        RingStart::Busy(RingOp::Callback(op)) => {
                            if let Some(source) = self.inner.sources.borrow_mut().get_mut(token) {
                                source
                                    .dir_mut(interest)
                                    .waiters
                                    .push_front(Waiter::Callback(op));
                            }
                            return;
                        }
                        RingStart::Busy(mut op) | RingStart::Gone(mut op) => {
                            op.cancel(crate::error::closed());
                            if let RingOp::Callback(op) = op {
                                self.push_job(Job::Op(op));
                            }
                        }
                    }
                }
                // Seen first above: never popped here.
                Waiter::Persistent(_) => unreachable!("a persistent operation is served in place"),
                Waiter::Callback(mut op) => {
                    // A readiness operation queued behind the ring's: it tries its syscall now, on
                    // the fd looked up with it (nothing ran since).
                    if op.retry(self, fd) {
                        self.push_job(Job::Op(op));
                    } else {
                        if let Some(source) = self.inner.sources.borrow_mut().get_mut(token) {
                            source
                                .dir_mut(interest)
                                .waiters
                                .push_front(Waiter::Callback(op));
                        }
                        self.watch(token);
                        return;
                    }
                }
            }
        }
    }

    /// On io_uring, makes sure `token`'s fd has its poll request: something waits for readiness.
    pub(crate) fn watch(&self, token: Token) {
        if !self.inner.ring {
            return;
        }
        let fd = self
            .inner
            .sources
            .borrow()
            .get(token)
            .and_then(|s| s.raw_fd());
        self.watch_ring_fd(fd);
    }

    /// [`watch`](LocalHandle::watch) for a source's fd already looked up (the table may be
    /// borrowed: only the driver is).
    #[inline(never)]
    pub(crate) fn watch_ring_fd(&self, fd: Option<RawFd>) {
        if let (Some(fd), Some(ring)) = (fd, self.inner.driver.borrow_mut().ring()) {
            ring.watch(fd);
        }
    }

    /// The keys of the operations `token` has on the ring.
    pub(crate) fn ring_keys(&self, token: Token) -> Vec<u32> {
        let sources = self.inner.sources.borrow();
        sources
            .get(token)
            .map(|s| {
                s.read
                    .inflight()
                    .into_iter()
                    .chain(s.write.inflight())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Service shutdown: cancels every operation on the ring and waits for the kernel's answers, so
    /// that no buffer is freed while the kernel may still use it. Operations that do not answer in
    /// time are leaked rather than freed.
    pub(crate) fn ring_shutdown(&self) {
        if !self.inner.ring {
            return;
        }
        let keys: Vec<u32> = self
            .inner
            .inflight
            .borrow()
            .iter()
            .map(|(k, _)| k as u32)
            .collect();
        let answered = match self.inner.driver.borrow_mut().ring() {
            Some(ring) => ring.cancel_and_wait(&keys),
            None => true,
        };
        let table = std::mem::take(&mut *self.inner.inflight.borrow_mut());
        if answered {
            // Handlers and cells are dropped without running, like every other pending handler.
            drop(table);
        } else {
            std::mem::forget(table);
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

/// Ops that implement the ring's steps share this helper for starting from a callback.
pub(crate) fn start_callback(
    svc: &LocalHandle,
    token: Token,
    interest: Interest,
    op: Box<dyn ReadyOp>,
) {
    match svc.ring_start(token, interest, RingOp::Callback(op)) {
        RingStart::Started(_) => {}
        RingStart::Busy(RingOp::Callback(op)) => {
            if let Err(Waiter::Callback(mut op)) =
                svc.register(token, interest, Waiter::Callback(op))
            {
                op.cancel(crate::error::closed());
                svc.push_job(Job::Op(op));
            }
        }
        RingStart::Busy(mut op) | RingStart::Gone(mut op) => {
            let err = if svc.is_shut_down() {
                crate::service::shared::gone()
            } else {
                crate::error::closed()
            };
            op.cancel(err);
            if let RingOp::Callback(op) = op {
                svc.push_job(Job::Op(op));
            }
        }
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

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

use std::cell::RefMut;
use std::io;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use super::block::OpPtr;
use super::source::Waiter;
use super::{Reactor, Token};
use crate::driver::Interest;
use crate::driver::uring::RingEntry;

/// An operation the kernel holds: its object's token and direction, and who finishes it.
pub(crate) struct Inflight {
    token: Token,
    interest: Interest,
    op: RingOp,
    /// Set when the operation alone was cancelled (its handle, its deadline): the error it completes
    /// with if the kernel answers `ECANCELED`, or stops with before another step.
    pub(crate) cancelled_with: Option<io::Error>,
}

impl Inflight {
    /// Whether this is the operation numbered `id` (see `reactor::cancel`).
    pub(crate) fn is(&self, id: u32) -> bool {
        match &self.op {
            RingOp::Callback(op) => op.id() == id,
            RingOp::Task(cell) => cell.id() == id,
            RingOp::Empty => false,
        }
    }
}

/// Who finishes an operation on the ring.
pub(crate) enum RingOp {
    /// Finished with `.then`: the loop queues its handler.
    Callback(OpPtr),
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

    fn on_cqe(&mut self, res: i32, reactor: &Reactor) -> (bool, Option<Duration>) {
        match self {
            RingOp::Callback(op) => op.on_cqe(res),
            RingOp::Task(cell) => cell.on_cqe(res, reactor),
            RingOp::Empty => (true, None),
        }
    }

    fn cancel(&mut self, err: io::Error, reactor: &Reactor) {
        match self {
            RingOp::Callback(op) => op.cancel(err),
            RingOp::Task(cell) => cell.cancel(err, reactor),
            RingOp::Empty => {}
        }
    }
}

/// What the table of operations in flight needs of an awaited operation's cell (`op::ring_cell`).
pub(crate) trait TaskSlot {
    fn prepare(&self, fd: RawFd) -> Option<RingEntry>;
    /// The operation's number (see `Reactor::next_op_id`).
    fn id(&self) -> u32;
    /// The kernel's answer: whether the operation is finished (its output stored, its task woken or
    /// its handler queued), and a back-off for its direction.
    fn on_cqe(&self, res: i32, reactor: &Reactor) -> (bool, Option<Duration>);
    /// Finishes the operation with `err` without a (further) request.
    fn cancel(&self, err: io::Error, reactor: &Reactor);
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

impl Reactor {
    /// Puts `op` on the ring for `token`'s `interest` direction, unless that direction is busy.
    pub(crate) fn ring_start(&self, token: Token, interest: Interest, mut op: RingOp) -> RingStart {
        let mut sources = self.sources.borrow_mut();
        let Some(source) = sources.get_mut(token) else {
            return RingStart::Gone(op);
        };
        let Some(fd) = source.raw_fd() else {
            return RingStart::Gone(op);
        };
        let dir = source.dir(interest);
        if dir.inflight().is_some()
            || dir.line.held_by_persistent()
            || source.backoff_until(interest).is_some()
        {
            return RingStart::Busy(op);
        }
        let Some(entry) = op.prepare(fd) else {
            return RingStart::Gone(op);
        };
        let key = self.inflight.borrow_mut().insert(Inflight {
            token,
            interest,
            op,
            cancelled_with: None,
        }) as u32;
        source.dir_mut(interest).set_inflight(Some(key));
        drop(sources);
        self.push_request(entry, key);
        RingStart::Started(key)
    }

    fn push_request(&self, entry: RingEntry, key: u32) {
        let mut driver = self.driver.borrow_mut();
        if let Some(ring) = driver.ring() {
            ring.push_op(entry, key);
        }
    }

    /// Asks the kernel to cancel the operation `key` (a dropped future's, or `cancel()`); it
    /// completes through the usual path.
    pub(crate) fn ring_cancel(&self, key: u32) {
        if let Some(ring) = self.driver.borrow_mut().ring() {
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
        if let Some(ring) = self.driver.borrow_mut().ring() {
            ring.cancel_and_wait(keys);
        }
    }

    /// Handles the completions the driver reaped.
    pub(crate) fn dispatch_completions(&self) {
        if !self.ring {
            return;
        }
        loop {
            let next = self
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
        let (token, interest, mut op, cancelled_with) = {
            let mut inflight = self.inflight.borrow_mut();
            let Some(entry) = inflight.get_mut(key as usize) else {
                return;
            };
            let op = std::mem::replace(&mut entry.op, RingOp::Empty);
            (entry.token, entry.interest, op, entry.cancelled_with.take())
        };
        // User code may run here (a waker): if it panics, the operation is finished all the same
        // and its direction freed, and the panic goes on out of the loop.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            match cancelled_with {
                // Cancelled alone, and the kernel did cancel it: it ends with the error asked for.
                Some(err) if res == -libc::ECANCELED => {
                    op.cancel(err, self);
                    (true, None)
                }
                // The kernel finished this step first: its result counts, but no step follows.
                Some(err) => match op.on_cqe(res, self) {
                    (false, delay) => {
                        op.cancel(err, self);
                        (true, delay)
                    }
                    done => done,
                },
                None => op.on_cqe(res, self),
            }
        }));
        if let Ok((_, Some(delay))) = outcome {
            // Out of fds (an accept): the direction's next request waits for the back-off.
            self.wake_after(token, interest, delay);
        }
        let mut finished = match outcome {
            Ok((finished, _)) => finished,
            Err(panic) => {
                self.ring_release(key, token, interest);
                std::panic::resume_unwind(panic);
            }
        };
        if !finished {
            // Another step (the rest of a write_all), under the same key.
            let fd = self.sources.borrow().get(token).and_then(|s| s.raw_fd());
            match fd.and_then(|fd| op.prepare(fd)) {
                Some(entry) => {
                    if let Some(slot) = self.inflight.borrow_mut().get_mut(key as usize) {
                        slot.op = op;
                    }
                    self.push_request(entry, key);
                    return;
                }
                None => {
                    op.cancel(crate::error::closed(), self);
                    finished = true;
                }
            }
        }
        debug_assert!(finished);
        self.ring_release(key, token, interest);
        if let RingOp::Callback(op) = op {
            self.push_job(op.into_job());
        }
        self.ring_next(token, interest);
    }

    /// Forgets the finished operation `key`: its table entry and its direction's turn.
    fn ring_release(&self, key: u32, token: Token, interest: Interest) {
        self.inflight.borrow_mut().try_remove(key as usize);
        if let Some(source) = self.sources.borrow_mut().get_mut(token) {
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
                let sources = self.sources.borrow_mut();
                let Ok(mut source) = RefMut::filter_map(sources, |t| t.get_mut(token)) else {
                    return;
                };
                if source.dir(interest).inflight().is_some()
                    || source.backoff_until(interest).is_some()
                {
                    return;
                }
                let fd = source.raw_fd();
                let line = &mut source.dir_mut(interest).line;
                if let Some(Waiter::Persistent(op)) = line.first() {
                    // Served in place, readiness and all (it never goes on the ring).
                    let op = op.clone();
                    if let Some(task) = op.serve(self, source, false) {
                        self.queue_task(task);
                    }
                    return;
                }
                match line.pop_front() {
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
                            if let Some(source) = self.sources.borrow_mut().get_mut(token) {
                                source
                                    .dir_mut(interest)
                                    .line
                                    .push_front(Waiter::Callback(op));
                            }
                            return;
                        }
                        RingStart::Busy(mut op) | RingStart::Gone(mut op) => {
                            op.cancel(crate::error::closed(), self);
                            if let RingOp::Callback(op) = op {
                                self.push_job(op.into_job());
                            }
                        }
                    }
                }
                // Seen first above: never popped here.
                Waiter::Persistent(_) => unreachable!("a persistent operation is served in place"),
                Waiter::Callback(mut op) => {
                    // A readiness operation queued behind the ring's: it tries its syscall now, on
                    // the fd looked up with it (nothing ran since).
                    if op.retry(self, token, fd) {
                        self.push_job(op.into_job());
                    } else {
                        if let Some(source) = self.sources.borrow_mut().get_mut(token) {
                            source
                                .dir_mut(interest)
                                .line
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
    fn watch(&self, token: Token) {
        let fd = self.sources.borrow().get(token).and_then(|s| s.raw_fd());
        self.watch_fd(token, fd, Interest::Read);
    }

    /// The keys of the operations `token` has on the ring.
    pub(crate) fn ring_keys(&self, token: Token) -> Vec<u32> {
        let sources = self.sources.borrow();
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
        if !self.ring {
            return;
        }
        let keys: Vec<u32> = self
            .inflight
            .borrow()
            .iter()
            .map(|(k, _)| k as u32)
            .collect();
        let answered = match self.driver.borrow_mut().ring() {
            Some(ring) => ring.cancel_and_wait(&keys),
            None => true,
        };
        let table = std::mem::take(&mut *self.inflight.borrow_mut());
        if answered {
            // Handlers and cells are dropped without running, like every other pending handler.
            drop(table);
        } else {
            std::mem::forget(table);
        }
    }
}

impl Reactor {
    /// Puts a callback operation on the ring, or in line behind its direction's request; one whose
    /// object is closed completes with that error.
    pub(crate) fn ring_start_callback(&self, token: Token, interest: Interest, op: OpPtr) {
        match self.ring_start(token, interest, RingOp::Callback(op)) {
            RingStart::Started(_) => {}
            RingStart::Busy(RingOp::Callback(op)) => {
                if let Err(waiter) = self.register(token, interest, Waiter::Callback(op)) {
                    self.cancel_waiter_with(waiter, crate::error::closed());
                }
            }
            RingStart::Busy(mut op) | RingStart::Gone(mut op) => {
                op.cancel(self.gone_error(), self);
                if let RingOp::Callback(op) = op {
                    self.push_job(op.into_job());
                }
            }
        }
    }
}

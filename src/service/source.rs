//! The table of registered I/O sources: per fd, who waits in which direction and whether the last
//! syscall found that direction ready.
//!
//! An object (socket, acceptor, device) holds only a [`Token`]; the fd itself lives here, so closing is
//! one removal and no fd can be closed twice. A token carries a generation: an operation or event that
//! names a closed source finds nothing, even when the fd number was reused by a new object.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use slab::Slab;

use super::task::{TaskRef, TaskWake};
use crate::driver::Token;
use crate::op::{Interest, PersistentOp, ReadyOp};

/// The fd of a source: owned (closed when the source goes), attached (the caller keeps it open), or
/// none at all (a timer or completion, made ready by the loop itself).
pub(crate) enum FdSlot {
    Owned(OwnedFd),
    /// Owned, with a socket's close hook that runs right before the fd closes (see `net::hooks`).
    /// Boxed: few sockets have hooks, and every source pays for the largest variant.
    Hooked(Box<crate::net::hooks::HookedFd>),
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
}

/// One operation waiting for a direction to become ready.
pub(crate) enum Waiter {
    /// A future: woken, it retries the syscall when polled. `id` lets a dropped future withdraw.
    Task { id: u64, wake: TaskWake },
    /// A callback operation: the loop retries it itself.
    Callback(Box<dyn ReadyOp>),
    /// A persistent read (`read_each`): it stays first in line, served in place for every chunk,
    /// until it ends or is cancelled.
    Persistent(Rc<dyn PersistentOp>),
}

/// The operations waiting on one direction, in order. A direction rarely has more than one: the
/// first is kept in place (no allocation, no ring-buffer arithmetic on the hot path; an idle
/// connection's pending read lives in its source entry), the others in a list behind it.
#[derive(Default)]
pub(crate) struct WaiterQueue {
    /// The first waiter; `None` only when the queue is empty.
    head: Option<Waiter>,
    /// The others: boxed, so that every source pays one pointer per direction for the rare queue
    /// (a list's own header is four words).
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Waiter>>>,
}

impl WaiterQueue {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    #[inline(always)]
    pub(crate) fn push_back(&mut self, waiter: Waiter) {
        if self.head.is_none() {
            // What `replace` hands back is the empty slot: forgotten, so that no drop code for a
            // waiter is emitted (and called) on this path.
            std::mem::forget(self.head.replace(waiter));
        } else {
            self.rest.get_or_insert_default().push_back(waiter);
        }
    }

    /// Whether a persistent operation holds the line (see `op::read_each`): one started now queues
    /// behind it, even on a ready direction, instead of taking the bytes it is reading.
    #[inline(always)]
    pub(crate) fn held(&self) -> bool {
        matches!(self.head, Some(Waiter::Persistent(_)))
    }

    /// Whether the line waits for an event: it has a waiter, and the first is not a persistent
    /// operation that reads on without one (see `PersistentOp::wants_events`).
    pub(crate) fn wants_events(&self) -> bool {
        match &self.head {
            None => false,
            Some(Waiter::Persistent(op)) => op.wants_events(),
            Some(_) => true,
        }
    }

    /// The first waiter, left in place.
    #[inline(always)]
    pub(crate) fn first(&self) -> Option<&Waiter> {
        self.head.as_ref()
    }

    /// Takes the persistent operation that `is_it` recognises out of the line, if it is there.
    pub(crate) fn remove_persistent(&mut self, is_it: impl Fn(&Rc<dyn PersistentOp>) -> bool) {
        let found = |w: &Waiter| matches!(w, Waiter::Persistent(p) if is_it(p));
        if self.head.as_ref().is_some_and(found) {
            self.pop_front();
        } else if let Some(rest) = &mut self.rest {
            rest.retain(|w| !found(w));
        }
    }

    /// Puts `waiter` first (an operation that tried and must wait again keeps its place).
    pub(crate) fn push_front(&mut self, waiter: Waiter) {
        if let Some(old) = self.head.replace(waiter) {
            self.rest.get_or_insert_default().push_front(old);
        }
    }

    #[inline(always)]
    pub(crate) fn pop_front(&mut self) -> Option<Waiter> {
        let first = self.head.take()?;
        if let Some(rest) = &mut self.rest {
            self.head = rest.pop_front();
        }
        Some(first)
    }

    /// Takes the first waiter out when it is the only one and a future polled by a task of this loop
    /// (see `TaskWake::Local`) and `may` says so: its task. Otherwise leaves the queue as it is.
    #[inline(always)]
    pub(crate) fn take_lone_local_task(&mut self, may: impl FnOnce() -> bool) -> Option<TaskRef> {
        let Some(Waiter::Task {
            wake: TaskWake::Local(task),
            ..
        }) = &self.head
        else {
            return None;
        };
        if self.rest.as_ref().is_some_and(|rest| !rest.is_empty()) || !may() {
            return None;
        }
        let task = *task;
        // A local wake owns nothing: forgotten, so that no drop code for a waiter runs here.
        std::mem::forget(self.head.take());
        Some(task)
    }

    /// Where the future waiter `id` is queued, if it still is (not woken yet).
    #[inline]
    pub(crate) fn position_of_task(&self, id: u64) -> Option<usize> {
        let is_it = |w: &Waiter| matches!(w, Waiter::Task { id: i, .. } if *i == id);
        match &self.head {
            None => None,
            Some(w) if is_it(w) => Some(0),
            Some(_) => self.rest.as_ref()?.iter().position(is_it).map(|i| i + 1),
        }
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut Waiter> {
        match index {
            0 => self.head.as_mut(),
            _ => self.rest.as_mut()?.get_mut(index - 1),
        }
    }

    pub(crate) fn remove(&mut self, index: usize) -> Option<Waiter> {
        match index {
            0 => self.pop_front(),
            _ => self.rest.as_mut()?.remove(index - 1),
        }
    }

    /// Empties the queue, returning the waiters in order.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = Waiter> + use<> {
        self.head
            .take()
            .into_iter()
            .chain(self.rest.take().into_iter().flat_map(|rest| *rest))
    }
}

/// The `inflight` of a direction with no operation on the ring (slab keys never reach it).
const NO_KEY: u32 = u32::MAX;

/// One direction of a source.
pub(crate) struct Direction {
    /// False once a syscall said `EAGAIN` (or drained the socket), true again after an event.
    pub(crate) ready: bool,
    /// The kernel reported a hang-up, an error or the peer's shutdown: no further edge will come, so
    /// the direction is never marked drained again.
    pub(crate) closed: bool,
    pub(crate) waiters: WaiterQueue,
    /// On io_uring: the key of the operation this direction has on the ring, or [`NO_KEY`]. One at
    /// a time, so that the steps of a `write_all` are never interleaved with another write's; the
    /// others wait in `waiters` and go to the ring in order. A plain `u32` (not an `Option`) keeps
    /// the direction, and every idle connection's entry, as small as without it.
    inflight: u32,
}

impl Direction {
    /// Queues `waiter` behind the others.
    #[inline]
    pub(crate) fn push_waiter(&mut self, waiter: Waiter) {
        self.waiters.push_back(waiter);
    }

    /// The key of the operation this direction has on the io_uring ring.
    #[inline]
    pub(crate) fn inflight(&self) -> Option<u32> {
        (self.inflight != NO_KEY).then_some(self.inflight)
    }

    pub(crate) fn set_inflight(&mut self, key: Option<u32>) {
        self.inflight = key.unwrap_or(NO_KEY);
    }

    fn new(ready: bool) -> Direction {
        Direction {
            ready,
            closed: false,
            waiters: WaiterQueue::default(),
            inflight: NO_KEY,
        }
    }
}

pub(crate) struct Source {
    pub(crate) fd: FdSlot,
    /// `fd`'s number, or -1 for a virtual source: read on every try, where a match on the slot's
    /// kind would cost a jump table each time.
    raw_fd: RawFd,
    generation: u32,
    pub(crate) read: Direction,
    pub(crate) write: Direction,
    /// Incremented by `cancel()`: a future that registered before sees the change and reports
    /// `ECANCELED`.
    pub(crate) cancel_epoch: u32,
    /// A timer source's armed deadline: a heap entry for another instant is stale.
    pub(crate) deadline: Option<std::time::Instant>,
    /// Whether a short read proves the read direction empty, so that the next read may wait for an
    /// edge without trying (see [`Source::drain_hint_holds`]). `None` until known.
    pub(crate) short_read_drains: Option<bool>,
    /// Per direction (read, write), set by a back-off (`EMFILE` on accept): readiness events are
    /// ignored, and a level-triggered backend does not watch the direction, until the loop's wake-up
    /// at this instant. Boxed, and only once needed: few sources ever back off, and every source,
    /// idle connections included, would pay for the two instants.
    backoff: Option<Box<[Option<Instant>; 2]>>,
}

impl Source {
    /// The source's fd, if it has one.
    #[inline]
    pub(crate) fn fd(&self) -> Option<BorrowedFd<'_>> {
        // SAFETY: `raw_fd` is the number of the fd in `self.fd`, which is set once when the source
        // is made and stays open while the source exists: an owned slot closes it only when the
        // source is dropped, an attached one was promised open while attached (`IoDevice::attach`).
        // The borrow cannot outlive `self`.
        (self.raw_fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(self.raw_fd) })
    }

    /// The fd number, if any (for a try that runs after the table's borrow is released).
    #[inline]
    pub(crate) fn raw_fd(&self) -> Option<RawFd> {
        (self.raw_fd >= 0).then_some(self.raw_fd)
    }

    pub(crate) fn dir(&self, interest: Interest) -> &Direction {
        match interest {
            Interest::Read => &self.read,
            Interest::Write => &self.write,
        }
    }
    pub(crate) fn dir_mut(&mut self, interest: Interest) -> &mut Direction {
        match interest {
            Interest::Read => &mut self.read,
            Interest::Write => &mut self.write,
        }
    }

    /// Until when events for `interest` are ignored (see `backoff`).
    #[inline]
    pub(crate) fn backoff_until(&self, interest: Interest) -> Option<Instant> {
        self.backoff.as_ref().and_then(|b| b[interest as usize])
    }

    /// Starts (`Some`) or ends (`None`) a back-off of `interest`.
    pub(crate) fn set_backoff_until(&mut self, interest: Interest, until: Option<Instant>) {
        match (&mut self.backoff, until) {
            (None, None) => {}
            (Some(b), until) => b[interest as usize] = until,
            (None, until) => {
                let mut b = Box::new([None; 2]);
                b[interest as usize] = until;
                self.backoff = Some(b);
            }
        }
    }

    /// Whether an operation's "drained" hint (a short read or write) may be trusted: the direction is
    /// then marked not ready and the next operation waits for an edge instead of paying for `EAGAIN`.
    ///
    /// A short write always means a full send buffer. A short read means an empty receive queue on
    /// TCP, the common case, which keeps that fast path. It does not on a Unix stream socket: the
    /// kernel ends a read at a message that carries fds (`SCM_RIGHTS`) or, with `SO_PASSCRED`, at
    /// another writer's data, with more queued behind it and no new edge to come. There the hint is
    /// ignored (the next read costs one syscall that may say `EAGAIN`, as a `FIONREAD` check would, but
    /// only when a read follows). The domain is told at registration where `aio` knows it (open,
    /// accept, pair) and asked of the kernel once, on the first short read, otherwise (`from_fd`). A
    /// direction that saw a hang-up or TCP urgent data (`closed`) never trusts the hint again.
    #[inline]
    pub(crate) fn drain_hint_holds(&mut self, interest: Interest) -> bool {
        if self.dir(interest).closed {
            return false;
        }
        match interest {
            Interest::Write => true,
            Interest::Read => match self.short_read_drains {
                Some(drains) => drains,
                None => self.learn_short_read_drains(),
            },
        }
    }

    /// Asks the kernel whether short reads prove this source empty (not a Unix socket), once.
    #[cold]
    fn learn_short_read_drains(&mut self) -> bool {
        let drains = self.fd().is_some_and(|fd| {
            socket2::SockRef::from(&fd)
                .domain()
                .is_ok_and(|domain| domain != socket2::Domain::UNIX)
        });
        self.short_read_drains = Some(drains);
        drains
    }
}

#[derive(Default)]
pub(crate) struct SourceTable {
    slab: Slab<Source>,
    next_generation: u32,
}

impl SourceTable {
    pub(crate) fn insert(&mut self, fd: FdSlot) -> Token {
        let generation = self.next_generation;
        // 31 bits: the top bit of a token stays clear (io_uring tags operation requests with it).
        self.next_generation = self.next_generation.wrapping_add(1) & 0x7fff_ffff;
        // An fd may be ready already: try first. A virtual source is ready only when fired.
        let ready = !matches!(fd, FdSlot::Virtual);
        let raw_fd = fd.fd().map_or(-1, |fd| fd.as_raw_fd());
        let index = self.slab.insert(Source {
            fd,
            raw_fd,
            generation,
            read: Direction::new(ready),
            write: Direction::new(ready),
            cancel_epoch: 0,
            deadline: None,
            short_read_drains: None,
            backoff: None,
        });
        Token::new(index, generation)
    }

    #[inline]
    pub(crate) fn get(&self, token: Token) -> Option<&Source> {
        self.slab
            .get(token.index())
            .filter(|s| s.generation == token.generation())
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, token: Token) -> Option<&mut Source> {
        self.slab
            .get_mut(token.index())
            .filter(|s| s.generation == token.generation())
    }

    pub(crate) fn remove(&mut self, token: Token) -> Option<Source> {
        self.get(token)?;
        Some(self.slab.remove(token.index()))
    }

    pub(crate) fn len(&self) -> usize {
        self.slab.len()
    }

    /// Every source that has waiters, with the directions waited on (for level-triggered backends).
    pub(crate) fn interests(&self) -> impl Iterator<Item = (BorrowedFd<'_>, Token, bool, bool)> {
        self.slab.iter().filter_map(|(index, s)| {
            let fd = s.fd()?;
            let read = s.read.waiters.wants_events() && s.backoff_until(Interest::Read).is_none();
            let write = !s.write.waiters.is_empty() && s.backoff_until(Interest::Write).is_none();
            (read || write).then(|| (fd, Token::new(index, s.generation), read, write))
        })
    }

    /// Empties the table (service shutdown), returning every source.
    pub(crate) fn drain(&mut self) -> Vec<Source> {
        self.slab.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn task(id: u64) -> Waiter {
        Waiter::Task {
            id,
            wake: TaskWake::Waker(Waker::noop().clone()),
        }
    }

    fn ids(queue: &mut WaiterQueue) -> Vec<u64> {
        queue
            .take_all()
            .map(|w| match w {
                Waiter::Task { id, .. } => id,
                Waiter::Callback(_) | Waiter::Persistent(_) => u64::MAX,
            })
            .collect()
    }

    #[test]
    fn waiters_keep_their_order_past_the_first_slot() {
        let mut queue = WaiterQueue::default();
        assert!(queue.is_empty());
        for id in 1..=4 {
            queue.push_back(task(id));
        }
        queue.push_front(task(0));
        assert_eq!(queue.position_of_task(0), Some(0));
        assert_eq!(queue.position_of_task(3), Some(3));
        assert_eq!(queue.position_of_task(9), None);
        assert!(matches!(queue.remove(2), Some(Waiter::Task { id: 2, .. })));
        assert!(matches!(
            queue.pop_front(),
            Some(Waiter::Task { id: 0, .. })
        ));
        assert!(matches!(queue.get_mut(0), Some(Waiter::Task { id: 1, .. })));
        assert_eq!(ids(&mut queue), [1, 3, 4]);
        assert!(queue.is_empty());
        assert!(queue.pop_front().is_none());
    }
}

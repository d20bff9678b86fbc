//! The table of registered I/O sources: per fd, who waits in which direction and whether that
//! direction may be ready.
//!
//! An object (socket, acceptor, device) holds only a [`Token`]; the fd itself lives here, so closing
//! is one removal and no fd can be closed twice. A token carries a generation: an operation or event
//! that names a closed source finds nothing, even when the fd number was reused by a new object.
//!
//! Each direction has a line of [`Waiter`]s (see `line`): a future, a callback operation's block, or
//! a persistent read that stays first in line.
//!
//! A direction's readiness is one flag, `ready` ("a syscall may succeed: try before waiting"), and
//! it changes in two places only: an event sets it ([`Source::on_event`]), and a syscall that says
//! `EAGAIN` (or proves the direction drained) clears it ([`Source::after_attempt`]). That is what
//! edge triggering requires: the loop waits for an edge only after the kernel said there is nothing.

use std::cell::RefMut;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use slab::Slab;

use super::block::{Attempt, OpPtr};
use super::fd::FdSlot;
use super::line::Line;
use super::wake::{TaskRef, TaskWake};
use super::{Reactor, Token};
use crate::driver::Interest;

/// One operation waiting for a direction to become ready.
pub(crate) enum Waiter {
    /// A future: woken, it tries its syscall again when polled. `id` lets a dropped future withdraw;
    /// `seq` is the loop's count of queued jobs when it started waiting (see
    /// [`Reactor::may_complete_here`]).
    Task { id: u32, seq: u32, wake: TaskWake },
    /// A callback operation: the loop tries it again itself.
    Callback(OpPtr),
    /// A persistent read (`read_each`, `read_stream`): it stays first in line, served in place for
    /// every chunk, until it ends or is cancelled.
    Persistent(Rc<dyn PersistentOp>),
}

/// An operation that stays first in its direction's line while it lasts (`op::read_each`,
/// `op::read_stream`).
pub(crate) trait PersistentOp {
    /// Its direction is ready and it is first in line: reads under the borrow of `source` (from the
    /// lookup that found it), then hands the chunk over right here when `inline` allows (see
    /// [`Reactor::may_complete_here`]), or in a job. Returns the task to poll right here, if the chunk
    /// goes to a task of this loop that may run now.
    fn serve(
        self: Rc<Self>,
        reactor: &Reactor,
        source: RefMut<'_, Source>,
        inline: bool,
    ) -> Option<TaskRef>;
    /// Taken out of its line by `cancel()` or a close: ends with `err`, handed over by a job.
    fn cancel(self: Rc<Self>, reactor: &Reactor, err: io::Error);
    /// A job: hands over what an earlier read or a cancellation left, then reads on if its
    /// direction is ready.
    fn resume(self: Rc<Self>, reactor: &Reactor);
    /// Whether a level-triggered backend should watch its direction now: false while it will read
    /// without an event anyway (and could not use one), so that the loop does not spin on a
    /// readiness nobody takes.
    fn wants_events(&self) -> bool {
        true
    }
}

/// A persistent operation's turn in the ready queue (see [`PersistentOp::resume`]).
pub(crate) struct Resume(pub(crate) Rc<dyn PersistentOp>);

impl super::block::Job for Resume {
    fn run(self, reactor: &Reactor) -> bool {
        self.0.resume(reactor);
        true
    }
}

/// The waiters of one direction.
pub(crate) type WaiterLine = Line<Waiter>;

impl Line<Waiter> {
    /// Whether a persistent operation holds the line (see `op::read_each`): one started now queues
    /// behind it, even on a ready direction, instead of taking the bytes it is reading.
    #[inline(always)]
    pub(crate) fn held_by_persistent(&self) -> bool {
        matches!(self.first(), Some(Waiter::Persistent(_)))
    }

    /// Whether the line waits for an event: it has a waiter, and the first is not a persistent
    /// operation that reads on without one (see [`PersistentOp::wants_events`]).
    pub(crate) fn wants_events(&self) -> bool {
        match self.first() {
            None => false,
            Some(Waiter::Persistent(op)) => op.wants_events(),
            Some(_) => true,
        }
    }

    /// Takes the first waiter out when it is the only one and a future polled by a task of this loop
    /// (see [`TaskWake::Local`]) and `may` says so of its `seq`: its task. Otherwise leaves the line
    /// as it is.
    #[inline(always)]
    pub(crate) fn take_lone_local_task(
        &mut self,
        may: impl FnOnce(u32) -> bool,
    ) -> Option<TaskRef> {
        // A local wake owns nothing: the waiter is forgotten, no drop code runs for it here.
        self.take_lone(|w| match w {
            Waiter::Task {
                wake: TaskWake::Local(task),
                seq,
                ..
            } if may(*seq) => Some(*task),
            _ => None,
        })
    }

    /// Where the future waiter `id` is queued, if it still is (not woken yet).
    #[inline]
    pub(crate) fn position_of_task(&self, id: u32) -> Option<usize> {
        self.position(|w| matches!(w, Waiter::Task { id: i, .. } if *i == id))
    }

    /// Takes the persistent operation that `is_it` recognises out of the line, if it is there.
    pub(crate) fn remove_persistent(&mut self, is_it: impl Fn(&Rc<dyn PersistentOp>) -> bool) {
        self.remove_first(|w| matches!(w, Waiter::Persistent(p) if is_it(p)));
    }
}

/// The `inflight` of a direction with no operation on the ring (slab keys never reach it).
const NO_KEY: u32 = u32::MAX;

/// One direction of a source.
pub(crate) struct Direction {
    /// A syscall may succeed: true after an event (and initially, for an fd), false once a syscall
    /// said `EAGAIN` or proved the direction drained. An operation whose direction is not ready
    /// waits in line without trying.
    pub(crate) ready: bool,
    /// The kernel reported a hang-up, an error or the peer's shutdown (or TCP urgent data): no
    /// further edge will come, so a short read or write no longer proves the direction drained.
    pub(crate) no_more_edges: bool,
    /// Who waits, in order.
    pub(crate) line: WaiterLine,
    /// On io_uring: the key of the operation this direction has on the ring, or [`NO_KEY`]. One at
    /// a time, so that the steps of a `write_all` are never interleaved with another write's; the
    /// others wait in the line and go to the ring in order. A plain `u32` (not an `Option`) keeps
    /// the direction, and every idle connection's entry, as small as without it.
    inflight: u32,
}

impl Direction {
    /// The key of the operation this direction has on the io_uring ring.
    #[inline]
    pub(crate) fn inflight(&self) -> Option<u32> {
        (self.inflight != NO_KEY).then_some(self.inflight)
    }

    pub(crate) fn set_inflight(&mut self, key: Option<u32>) {
        self.inflight = key.unwrap_or(NO_KEY);
    }

    /// Whether an operation started now must wait without trying: `needs_ready` and the direction
    /// known not ready, or a persistent read holds the line (it goes first).
    #[inline(always)]
    pub(crate) fn must_wait(&self, needs_ready: bool) -> bool {
        needs_ready && (!self.ready || self.line.held_by_persistent())
    }

    fn new(ready: bool) -> Direction {
        Direction {
            ready,
            no_more_edges: false,
            line: Line::default(),
            inflight: NO_KEY,
        }
    }
}

/// What an event did to a direction (see [`Source::on_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventOutcome {
    /// The direction is backing off: the event is ignored.
    Ignored,
    /// Marked ready; nobody waits.
    Idle,
    /// Marked ready; its line is to be served.
    Serve,
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
    pub(crate) deadline: Option<Instant>,
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

    #[inline(always)]
    pub(crate) fn dir(&self, interest: Interest) -> &Direction {
        match interest {
            Interest::Read => &self.read,
            Interest::Write => &self.write,
        }
    }

    #[inline(always)]
    pub(crate) fn dir_mut(&mut self, interest: Interest) -> &mut Direction {
        match interest {
            Interest::Read => &mut self.read,
            Interest::Write => &mut self.write,
        }
    }

    /// Takes in an event for one direction (a kernel event, a timer, the end of a back-off):
    /// remembers `no_more_edges`, ignores the event while a back-off lasts (and ends one that has expired),
    /// and marks the direction ready.
    #[inline(always)]
    pub(crate) fn on_event(&mut self, interest: Interest, no_more_edges: bool) -> EventOutcome {
        self.dir_mut(interest).no_more_edges |= no_more_edges;
        if self.backoff.is_some() && self.backing_off(interest) {
            return EventOutcome::Ignored;
        }
        let dir = self.dir_mut(interest);
        dir.ready = true;
        if dir.line.is_empty() {
            EventOutcome::Idle
        } else {
            EventOutcome::Serve
        }
    }

    /// Takes in what one syscall said: the direction is no longer ready after `EAGAIN` or a back-off
    /// (the kernel's word, and a back-off must hold), or after a drained hint that holds for this
    /// source (see [`drain_hint_holds`](Source::drain_hint_holds)).
    #[inline(always)]
    pub(crate) fn after_attempt(&mut self, interest: Interest, attempt: Attempt) {
        if attempt.would_block
            || attempt.backing_off
            || (attempt.drained && self.drain_hint_holds(interest))
        {
            self.dir_mut(interest).ready = false;
        }
    }

    /// Whether events for `interest` are ignored now; ends a back-off whose time has come.
    #[cold]
    fn backing_off(&mut self, interest: Interest) -> bool {
        match self.backoff_until(interest) {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                self.set_backoff_until(interest, None);
                false
            }
            None => false,
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
    /// direction that saw a hang-up or TCP urgent data (`no_more_edges`) never trusts the hint again.
    #[inline]
    pub(crate) fn drain_hint_holds(&mut self, interest: Interest) -> bool {
        if self.dir(interest).no_more_edges {
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

    /// Empties the table (service shutdown), returning every source.
    pub(crate) fn drain(&mut self) -> Vec<Source> {
        self.slab.drain().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use std::task::Waker;

    fn waiter() -> Waiter {
        Waiter::Task {
            id: 0,
            seq: 0,
            wake: TaskWake::Waker(Waker::noop().clone()),
        }
    }

    fn tcp_source(table: &mut SourceTable) -> Token {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let token = table.insert(FdSlot::Owned(socket.into()));
        table.get_mut(token).expect("source").short_read_drains = Some(true);
        token
    }

    #[test]
    fn an_fd_starts_ready_and_a_virtual_source_does_not() {
        let mut table = SourceTable::default();
        let fd = tcp_source(&mut table);
        let virt = table.insert(FdSlot::Virtual);
        assert!(table.get(fd).expect("fd").read.ready);
        assert!(table.get(fd).expect("fd").write.ready);
        assert!(!table.get(virt).expect("virtual").read.ready);
        assert!(table.get(virt).expect("virtual").fd().is_none());
    }

    #[test]
    fn eagain_clears_readiness_and_an_event_sets_it() {
        let mut table = SourceTable::default();
        let token = tcp_source(&mut table);
        let source = table.get_mut(token).expect("source");
        let eagain = Attempt {
            would_block: true,
            ..Attempt::default()
        };
        source.after_attempt(Interest::Read, eagain);
        assert!(!source.read.ready);
        assert!(source.write.ready, "directions are independent");
        assert!(source.read.must_wait(true));
        assert!(
            !source.read.must_wait(false),
            "a first step needs no readiness"
        );
        assert_eq!(source.on_event(Interest::Read, false), EventOutcome::Idle);
        assert!(source.read.ready);
        source.after_attempt(Interest::Read, eagain);
        source.read.line.push_back(waiter());
        assert_eq!(source.on_event(Interest::Read, false), EventOutcome::Serve);
        assert!(source.read.ready);
    }

    #[test]
    fn a_short_read_is_a_hint_that_a_hang_up_or_a_unix_socket_overrules() {
        let mut table = SourceTable::default();
        let token = tcp_source(&mut table);
        let short = Attempt {
            drained: true,
            ..Attempt::default()
        };
        let source = table.get_mut(token).expect("source");
        source.after_attempt(Interest::Read, short);
        assert!(!source.read.ready, "a short TCP read drains");
        // A hang-up: no further edge will come, so a short read proves nothing any more.
        source.on_event(Interest::Read, true);
        source.after_attempt(Interest::Read, short);
        assert!(source.read.ready);

        // A Unix stream socket, never told its domain: the kernel is asked once.
        let (a, _b) = UnixStream::pair().expect("pair");
        let unix = table.insert(FdSlot::Owned(a.into()));
        let source = table.get_mut(unix).expect("unix");
        source.after_attempt(Interest::Read, short);
        assert!(
            source.read.ready,
            "a short Unix read may stop at an fd-carrying message"
        );
        assert_eq!(source.short_read_drains, Some(false));
        // A short write always means a full send buffer.
        source.after_attempt(Interest::Write, short);
        assert!(!source.write.ready);
    }

    #[test]
    fn a_back_off_ignores_events_until_it_ends() {
        let mut table = SourceTable::default();
        let token = tcp_source(&mut table);
        let source = table.get_mut(token).expect("source");
        source.after_attempt(
            Interest::Read,
            Attempt {
                backing_off: true,
                ..Attempt::default()
            },
        );
        assert!(!source.read.ready);
        source.set_backoff_until(
            Interest::Read,
            Some(Instant::now() + std::time::Duration::from_secs(60)),
        );
        assert_eq!(
            source.on_event(Interest::Read, false),
            EventOutcome::Ignored
        );
        assert!(!source.read.ready);
        assert_eq!(source.on_event(Interest::Write, false), EventOutcome::Idle);
        // Expired: the next event ends it.
        source.set_backoff_until(Interest::Read, Some(Instant::now()));
        assert_eq!(source.on_event(Interest::Read, false), EventOutcome::Idle);
        assert_eq!(source.backoff_until(Interest::Read), None);
        assert!(source.read.ready);
    }

    #[test]
    fn a_closed_token_finds_nothing_even_when_its_slot_is_reused() {
        let mut table = SourceTable::default();
        let old = table.insert(FdSlot::Virtual);
        assert!(table.remove(old).is_some());
        let new = table.insert(FdSlot::Virtual);
        assert_eq!(old.index(), new.index());
        assert!(table.get(old).is_none());
        assert!(table.get(new).is_some());
        assert!(table.remove(old).is_none());
    }

    #[test]
    fn a_lone_local_task_is_taken_only_when_allowed_and_alone() {
        let local = |id, seq| Waiter::Task {
            id,
            seq,
            wake: TaskWake::Local(TaskRef { key: 7, id: 9 }),
        };
        let mut line = WaiterLine::default();
        line.push_back(local(1, 5));
        assert_eq!(line.take_lone_local_task(|seq| seq < 5), None);
        assert!(!line.is_empty());
        line.push_back(waiter());
        assert_eq!(
            line.take_lone_local_task(|_| true),
            None,
            "another waits behind it"
        );
        assert!(matches!(line.pop_front(), Some(Waiter::Task { id: 1, .. })));
        line.pop_front();
        line.push_back(local(3, 5));
        assert_eq!(line.position_of_task(3), Some(0));
        assert_eq!(
            line.take_lone_local_task(|seq| seq == 5),
            Some(TaskRef { key: 7, id: 9 })
        );
        assert!(line.is_empty());
    }

    #[test]
    fn a_waiting_future_costs_no_more_than_a_waker() {
        // A source's line keeps its first waiter in place for every connection.
        assert_eq!(size_of::<TaskWake>(), size_of::<Waker>());
        assert!(size_of::<Waiter>() <= 32);
    }
}

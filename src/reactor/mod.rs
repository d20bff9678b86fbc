//! The reactor: every I/O source of a loop, its readiness, and the operations waiting on it.
//!
//! This is Boost.Asio's `epoll_reactor` with its `scheduler` queue, in Rust terms, and the one place
//! where an fd's readiness changes. Reading it in order:
//!
//! - [`source`]: the table of sources (`Token` → fd, per-direction readiness, the lines of waiting
//!   operations). A direction's readiness is a small state machine changed by two things only: an
//!   event ([`Source::on_event`]) and the outcome of a syscall ([`Source::after_attempt`]).
//! - [`line`]: the operations waiting on one direction, in order ([`source::Waiter`]: a future's
//!   waker, a callback operation's block, or a persistent read that stays first in line).
//! - [`block`]: operation blocks, Asio's `operation`: one pool block per callback operation (or
//!   posted closure) holding a small header (next pointer, function table, sequence number) and the
//!   operation and its handler in place. Waiter lines and the ready queue hold thin pointers.
//! - [`attempt`]: starting an operation and a future's look at its source: queue it at once when its
//!   direction is known not ready, otherwise try it under the same lookup.
//! - [`dispatch`]: an event (or a timer, or the end of a back-off) serves a direction's line: the
//!   first operation is tried under the lookup that found the source, and its handler runs right there
//!   when [`may_complete_here`](Reactor::may_complete_here) allows.
//! - [`registry`]: adding, cancelling and removing sources; the loop's shutdown.
//! - [`timers`], [`ring`] (io_uring's table of operations in flight), [`remote`] (what other threads
//!   touch), [`wake`] (tasks as the reactor sees them), [`pool`] (recycled blocks), [`fork`].
//!
//! The reactor knows nothing above it: the operations it holds are type-erased behind their
//! blocks' function tables ([`block::Waiting`], [`source::PersistentOp`]); the service's executor is
//! reached only through [`TaskRef`]s it queues and hands back. Beneath it the driver only watches
//! fds and reports events.

pub(crate) mod attempt;
pub(crate) mod block;
pub(crate) mod cancel;
pub(crate) mod dispatch;
pub(crate) mod fd;
pub(crate) mod fork;
pub(crate) mod line;
pub(crate) mod pool;
pub(crate) mod registry;
pub(crate) mod remote;
pub(crate) mod ring;
pub(crate) mod source;
pub(crate) mod timers;
pub(crate) mod wake;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;

pub(crate) use self::fd::{FdSlot, HookedFd};
pub(crate) use self::source::Source;
pub(crate) use crate::driver::Token;
use crate::driver::{AnyDriver, Backend};
use block::JobQueue;
use remote::Remote;
use wake::{CurrentTask, TaskRef};

/// Everything an operation meets on its way through the loop (see the module docs).
pub(crate) struct Reactor {
    backend: Backend,
    pub(crate) driver: RefCell<AnyDriver>,
    /// Operations go to the io_uring ring (the `uring` backend).
    ring: bool,
    /// The backend reports readiness for as long as it lasts (poll): a direction nobody waits on is
    /// unwatched, or every wait would report it again.
    level_triggered: bool,
    pub(crate) sources: RefCell<source::SourceTable>,
    /// Recycled blocks of finished operations and jobs.
    pub(crate) pool: pool::OpPool,
    /// What is ready to run, in order: posted closures, finished operations' handlers.
    ready: JobQueue,
    /// Tasks woken by number on this thread (see `wake::TaskWake`), to run in this order.
    run_queue: RefCell<VecDeque<TaskRef>>,
    /// How many jobs and task wakes were ever queued, and how many were taken out to run: an
    /// operation remembers the first count when it starts waiting, so that the loop can tell whether
    /// everything queued before it has run (see [`may_complete_here`](Reactor::may_complete_here)).
    queued: Cell<u32>,
    dequeued: Cell<u32>,
    /// The task being polled, if any (see `wake::TaskWake`).
    current_task: Cell<Option<CurrentTask>>,
    /// Pending callback operations and live tasks that are not background: what `run_until_done`
    /// waits for.
    work: Cell<usize>,
    pub(crate) timers: RefCell<timers::TimerQueue>,
    /// Operations the ring holds, by key (see `ring`).
    pub(crate) inflight: RefCell<slab::Slab<ring::Inflight>>,
    remote: Arc<Remote>,
    next_waiter_id: Cell<u32>,
    next_op_id: Cell<u32>,
    shut_down: Cell<bool>,
    /// The fork generation this loop was built in (see `fork`).
    fork_generation: u64,
}

impl Reactor {
    /// A reactor on `backend`, with the cross-thread part of its loop.
    pub(crate) fn new(backend: Backend) -> io::Result<Reactor> {
        let remote = Arc::new(Remote::new()?);
        let driver = AnyDriver::new(backend, remote.wake.as_fd())?;
        Ok(Reactor {
            backend,
            level_triggered: driver.level_triggered(),
            driver: RefCell::new(driver),
            ring: backend == Backend::Uring,
            sources: RefCell::new(source::SourceTable::default()),
            pool: pool::OpPool::default(),
            ready: JobQueue::default(),
            run_queue: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            dequeued: Cell::new(0),
            current_task: Cell::new(None),
            work: Cell::new(0),
            timers: RefCell::new(timers::TimerQueue::default()),
            inflight: RefCell::new(slab::Slab::new()),
            remote,
            next_waiter_id: Cell::new(0),
            next_op_id: Cell::new(1),
            shut_down: Cell::new(false),
            fork_generation: fork::generation(),
        })
    }

    pub(crate) fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether operations that can be ring requests go to the ring (the io_uring backend).
    #[inline(always)]
    pub(crate) fn ring_mode(&self) -> bool {
        self.ring
    }

    /// The part of the loop other threads reach.
    #[inline]
    pub(crate) fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }

    #[inline(always)]
    pub(crate) fn is_stopped(&self) -> bool {
        self.remote.is_stopped()
    }

    #[inline(always)]
    pub(crate) fn is_shut_down(&self) -> bool {
        self.shut_down.get()
    }

    /// Why an operation on a token that names no source fails.
    pub(crate) fn gone_error(&self) -> io::Error {
        if self.is_shut_down() {
            remote::gone()
        } else {
            crate::error::closed()
        }
    }

    /// Whether this process is a forked child of the one that built the loop (see `fork`).
    pub(crate) fn in_forked_child(&self) -> bool {
        fork::is_forked_child(self.fork_generation)
    }

    /// How much counted work is pending (see `IoService::run_until_done`).
    #[inline]
    pub(crate) fn pending_work(&self) -> usize {
        self.work.get()
    }

    #[inline(always)]
    pub(crate) fn add_work(&self) {
        self.work.set(self.work.get() + 1);
    }

    #[inline(always)]
    pub(crate) fn finish_work(&self) {
        self.work.set(self.work.get().saturating_sub(1));
    }

    /// A number for a future's waiter, so that the future can find (and withdraw) it later.
    #[inline]
    pub(crate) fn next_waiter_id(&self) -> u32 {
        let id = self.next_waiter_id.get();
        self.next_waiter_id.set(id.wrapping_add(1));
        id
    }

    /// A number for a callback operation, so that its handle can find it later (see `cancel`). 31
    /// bits: it shares a word with a flag in the block's header. It wraps after two billion
    /// operations; a handle kept that long could only mistake one of the same object and direction.
    #[inline(always)]
    pub(crate) fn next_op_id(&self) -> u32 {
        let id = self.next_op_id.get();
        self.next_op_id.set(id.wrapping_add(1) & (u32::MAX >> 1));
        id
    }

    /// The count of jobs queued so far: what an operation that starts waiting now remembers.
    #[inline(always)]
    pub(crate) fn seq(&self) -> u32 {
        self.queued.get()
    }

    /// Whether a handler (or a woken task) may run right where the loop finds its operation finished,
    /// given the count of jobs queued when that operation started waiting ([`seq`](Reactor::seq)):
    /// every job queued before it has run, and the loop is not stopped. This is the loop, not the
    /// call that started the operation, and running it here cannot overtake anything queued before it
    /// (Asio queues every completion; aio runs it here when that changes no order).
    #[inline(always)]
    pub(crate) fn may_complete_here(&self, seq: u32) -> bool {
        // Wrapping: fewer than 2^31 jobs are ever queued at once.
        (self.dequeued.get().wrapping_sub(seq) as i32) >= 0 && !self.is_stopped()
    }

    /// Queues a job block to run after what is queued.
    #[inline(always)]
    pub(crate) fn push_job(&self, job: block::JobPtr) {
        self.ready.push(job);
        self.queued.set(self.queued.get().wrapping_add(1));
    }

    /// Queues `f` to run on the loop (a posted closure).
    pub(crate) fn post(&self, f: impl FnOnce() + 'static) {
        if !self.is_shut_down() {
            let job = self.alloc(block::Call(f), self.seq(), false);
            self.push_job(job.into_job());
        }
    }

    /// The next job to run, counted as taken out.
    #[inline(always)]
    pub(crate) fn pop_job(&self) -> Option<block::JobPtr> {
        let job = self.ready.pop()?;
        self.dequeued.set(self.dequeued.get().wrapping_add(1));
        Some(job)
    }

    /// Queues a task woken on this thread to run after what is queued.
    #[inline(always)]
    pub(crate) fn queue_task(&self, task: TaskRef) {
        self.run_queue.borrow_mut().push_back(task);
        self.queued.set(self.queued.get().wrapping_add(1));
    }

    /// The next task woken on this thread, counted as taken out.
    #[inline(always)]
    pub(crate) fn pop_task(&self) -> Option<TaskRef> {
        let task = self.run_queue.borrow_mut().pop_front()?;
        self.dequeued.set(self.dequeued.get().wrapping_add(1));
        Some(task)
    }

    /// How many jobs and locally woken tasks are queued.
    pub(crate) fn queued_len(&self) -> usize {
        self.ready.len() + self.run_queue.borrow().len()
    }

    /// Whether anything is queued to run now (jobs, or tasks woken here or elsewhere).
    #[inline]
    pub(crate) fn has_ready(&self) -> bool {
        !self.ready.is_empty()
            || !self.run_queue.borrow().is_empty()
            || !self.remote.runnables.is_empty()
    }
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor")
            .field("backend", &self.backend)
            .field("sources", &self.sources.borrow().len())
            .finish_non_exhaustive()
    }
}

//! The part of a loop that other threads may touch: its wake-up eventfd, the stop flag, the queue of
//! closures posted from elsewhere and the queue of tasks woken from elsewhere. The service's `Handle`
//! is its public face; everything else about a loop stays on the loop's thread.

use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

use concurrent_queue::ConcurrentQueue;

use super::Reactor;
use super::wake::TaskRef;

/// A closure sent to the loop from any thread; it gets the loop's reactor when it runs, and returns
/// whether it was a handler (a posted closure) rather than the loop's own bookkeeping (delivering a
/// completion, which queues the operation's handler to run after it): `run_one` and `poll` count
/// handlers only.
pub(crate) type RemoteJob = Box<dyn FnOnce(&Reactor) -> bool + Send>;

pub(crate) struct Remote {
    /// Readable when the loop has been poked from outside its own thread.
    pub(crate) wake: OwnedFd,
    /// An eventfd write is outstanding and not yet consumed by the loop: others need not write again.
    notified: AtomicBool,
    pub(crate) stopped: AtomicBool,
    /// Set when the `IoService` is dropped: posting is refused from then on.
    closed: AtomicBool,
    remote: Mutex<Vec<RemoteJob>>,
    /// `remote` has closures in it: the loop looks at this flag each turn rather than taking the lock.
    posted: AtomicBool,
    /// The loop is in (or about to enter) a wait that blocks: only then does a post or a wake from
    /// another thread write the eventfd. A busy loop picks up what others send on its next turn, for
    /// no syscall at all.
    sleeping: AtomicBool,
    pub(crate) runnables: ConcurrentQueue<TaskRef>,
    /// Handlers run and tasks polled by the loop so far (written by the loop's thread only; others
    /// read it for statistics).
    handled: AtomicU64,
    /// The thread that made the loop: the only one that can ever run it (an `IoService` is `!Send`).
    owner: ThreadId,
}

thread_local! {
    /// The loop currently running on this thread, if any: wake-ups from inside it need no eventfd
    /// write.
    static RUNNING: Cell<*const Remote> = const { Cell::new(std::ptr::null()) };
}

/// Queues a task woken through its `Waker`, poking the loop unless it is the one running on this
/// thread. (Futures the loop polls itself are mostly woken by number, on the loop's own queue: see
/// `task::TaskWake`.)
#[inline]
pub(crate) fn schedule(shared: &Remote, task: TaskRef) {
    // The queue is unbounded and only closed when the loop is dropped, when there is nothing left to
    // wake: a failed push is dropped.
    if shared.runnables.push(task).is_ok() && !RUNNING.with(|r| std::ptr::eq(r.get(), shared)) {
        shared.notify_if_sleeping();
    }
}

impl Remote {
    pub(crate) fn new() -> io::Result<Remote> {
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        Ok(Remote {
            wake,
            notified: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            remote: Mutex::new(Vec::new()),
            posted: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            runnables: ConcurrentQueue::unbounded(),
            handled: AtomicU64::new(0),
            owner: std::thread::current().id(),
        })
    }

    /// Whether the caller runs on the loop's thread, where waiting for the loop would wait forever.
    pub(crate) fn is_owner_thread(&self) -> bool {
        std::thread::current().id() == self.owner
    }

    /// Makes the loop's next (or current) wait return, unless a poke is already outstanding.
    pub(crate) fn notify(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            // An eventfd write only fails when the counter would overflow, i.e. it is already readable.
            let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
        }
    }

    /// Pokes the loop unless the caller is the loop itself, running on this thread.
    pub(crate) fn notify_if_remote(&self) {
        if !RUNNING.with(|r| std::ptr::eq(r.get(), self)) {
            self.notify();
        }
    }

    /// Pokes the loop if it sleeps or is about to (see [`about_to_sleep`](Remote::about_to_sleep)):
    /// what was queued before this call is then seen by the loop before or after its wait.
    fn notify_if_sleeping(&self) {
        // Pairs with the fence in `about_to_sleep`: either the loop sees what the caller queued, or
        // the caller sees that the loop sleeps.
        fence(Ordering::SeqCst);
        if self.sleeping.load(Ordering::Relaxed) {
            self.notify();
        }
    }

    /// The loop is about to wait with a timeout other than zero: returns false (and the loop must
    /// not block) if something was sent to it meanwhile. [`woke`](Remote::woke) ends the state.
    pub(crate) fn about_to_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        if self.posted.load(Ordering::Relaxed) || !self.runnables.is_empty() {
            self.sleeping.store(false, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// The loop's wait returned.
    pub(crate) fn woke(&self) {
        self.sleeping.store(false, Ordering::Relaxed);
    }

    /// Called by the loop when the wake fd fired: re-arms notification.
    pub(crate) fn consume_wake(&self) {
        // Consume the poke first, then re-arm: re-arming first would let a poke that lands in between
        // be swallowed by this read while `notified` stays set, and every later poke be skipped (a
        // lost wake-up).
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut counter);
        self.notified.swap(false, Ordering::AcqRel);
    }

    /// Takes what was posted, if anything (a flag's load when nothing was).
    pub(crate) fn take_posted(&self, into: &mut Vec<RemoteJob>) {
        if self.posted.load(Ordering::Acquire) {
            let mut queue = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            self.posted.store(false, Ordering::Relaxed);
            into.append(&mut queue);
        }
    }

    /// Counts `n` handlers run or tasks polled (only from the loop's thread).
    #[inline]
    pub(crate) fn count_handled(&self, n: u64) {
        let handled = self.handled.load(Ordering::Relaxed);
        self.handled.store(handled + n, Ordering::Relaxed);
    }

    /// Handlers run and tasks polled so far.
    pub(crate) fn handled(&self) -> u64 {
        self.handled.load(Ordering::Relaxed)
    }

    pub(crate) fn post(&self, job: RemoteJob) -> io::Result<()> {
        {
            let mut queue = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.load(Ordering::Acquire) {
                return Err(gone());
            }
            queue.push(job);
            self.posted.store(true, Ordering::Release);
        }
        // From the loop's own thread (a handler posting through a `Handle`) the loop is not asleep
        // and finds the job on its next turn.
        self.notify_if_sleeping();
        Ok(())
    }

    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.notify_if_remote();
    }

    /// Clears the stopped state (`IoService::restart`).
    pub(crate) fn restart(&self) {
        self.stopped.store(false, Ordering::Release);
    }

    #[inline]
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Refuses further posts and drops what is queued (without running it).
    pub(crate) fn close(&self) -> Vec<RemoteJob> {
        let mut queue = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Release);
        std::mem::take(&mut *queue)
    }

    /// Marks this loop as running on the current thread until the guard drops (a loop may be run
    /// from a handler of another).
    pub(crate) fn enter(self: &Arc<Self>) -> RunningGuard {
        RunningGuard {
            previous: RUNNING.with(|r| r.replace(Arc::as_ptr(self))),
        }
    }
}

pub(crate) struct RunningGuard {
    previous: *const Remote,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(self.previous));
    }
}

pub(crate) fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the IoService has been dropped")
}

/// A closure from another thread in the ready queue (see [`RemoteJob`]).
struct Delivered(RemoteJob);

impl super::block::Job for Delivered {
    fn run(self, reactor: &Reactor) -> bool {
        (self.0)(reactor)
    }
}

impl Reactor {
    /// Queues what other threads posted since the last turn, in the order they posted it.
    #[inline]
    pub(crate) fn take_remote(&self) {
        let mut jobs = Vec::new();
        self.remote.take_posted(&mut jobs);
        for job in jobs {
            let block = self.alloc(Delivered(job), self.seq(), false);
            self.push_job(block.into_job());
        }
    }
}

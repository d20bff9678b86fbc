//! The part of a loop that other threads may touch: its wake-up eventfd, the stop flag, the queue of
//! closures posted from elsewhere and the queue of tasks woken from elsewhere. The service's `Handle`
//! is its public face; everything else about a loop stays on the loop's thread.

use std::cell::Cell;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
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
    pub(crate) runnables: ConcurrentQueue<TaskRef>,
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
        shared.notify();
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
            runnables: ConcurrentQueue::unbounded(),
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

    /// Called by the loop when the wake fd fired: re-arms notification, then takes what was posted.
    pub(crate) fn take_remote(&self, into: &mut Vec<RemoteJob>) {
        // Consume the poke first, then re-arm: re-arming first would let a poke that lands in between
        // be swallowed by this read while `notified` stays set, and every later poke be skipped (a
        // lost wake-up). The swap acquires what a poster published before its own swap saw `true`.
        let mut counter = [0u8; 8];
        let _ = rustix::io::read(&self.wake, &mut counter);
        self.notified.swap(false, Ordering::AcqRel);
        let mut queue = self.remote.lock().unwrap_or_else(|e| e.into_inner());
        into.append(&mut queue);
    }

    pub(crate) fn post(&self, job: RemoteJob) -> io::Result<()> {
        {
            let mut queue = self.remote.lock().unwrap_or_else(|e| e.into_inner());
            if self.closed.load(Ordering::Acquire) {
                return Err(gone());
            }
            queue.push(job);
        }
        // Always poke, even from the loop's own thread: the loop drains this queue only when its wake
        // fd fires, so a post from a handler through a `Handle` would otherwise wait forever.
        self.notify();
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
    /// The wake-up fd fired: queues what other threads posted, in the order they posted it.
    pub(crate) fn take_remote(&self) {
        let mut jobs = Vec::new();
        self.remote.take_remote(&mut jobs);
        for job in jobs {
            let block = self.alloc(Delivered(job), self.seq(), false);
            self.push_job(block.into_job());
        }
    }
}

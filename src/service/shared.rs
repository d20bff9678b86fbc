//! The part of a loop that other threads may touch: its wake-up eventfd, the stop flag, the queue of
//! closures posted from elsewhere and the queue of tasks woken from elsewhere. [`Handle`] is its public
//! face; everything else about a loop stays on the loop's thread.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_task::Runnable;
use concurrent_queue::ConcurrentQueue;

/// A closure sent to the loop from any thread; it gets the loop's handle when it runs, and returns
/// whether it was a handler (a posted closure) rather than the loop's own bookkeeping (delivering a
/// completion, which queues the operation's handler to run after it): `run_one` and `poll` count
/// handlers only.
pub(crate) type RemoteJob = Box<dyn FnOnce(&crate::LocalHandle) -> bool + Send>;

pub(crate) struct Shared {
    /// Readable when the loop has been poked from outside its own thread.
    pub(crate) wake: OwnedFd,
    /// An eventfd write is outstanding and not yet consumed by the loop: others need not write again.
    notified: AtomicBool,
    pub(crate) stopped: AtomicBool,
    /// Set when the `IoService` is dropped: posting is refused from then on.
    closed: AtomicBool,
    remote: Mutex<Vec<RemoteJob>>,
    pub(crate) runnables: ConcurrentQueue<Runnable<usize>>,
}

thread_local! {
    /// The loop currently running on this thread, if any: wake-ups from inside it need no eventfd write.
    static RUNNING: Cell<*const Shared> = const { Cell::new(std::ptr::null()) };
    /// The tasks that the loop running on this thread woke from its own thread: a plain queue, without
    /// the atomics of `Shared::runnables` (which takes the wakes from other threads).
    static LOCAL_RUNNABLES: RefCell<VecDeque<Runnable<usize>>> = const { RefCell::new(VecDeque::new()) };
}

/// Queues a woken task: on the local queue when its loop is the one running on this thread (`shared`
/// is that loop's), otherwise on the loop's cross-thread queue, poking the loop.
pub(crate) fn schedule(shared: &Shared, runnable: Runnable<usize>) {
    if RUNNING.with(|r| std::ptr::eq(r.get(), shared)) {
        LOCAL_RUNNABLES.with(|q| q.borrow_mut().push_back(runnable));
        return;
    }
    // The queue is unbounded and only closed when the loop is dropped; a push can then fail, and the
    // runnable must not be dropped on a foreign thread (its future is !Send): forget it, leaking one task
    // that can never run again.
    if let Err(e) = shared.runnables.push(runnable) {
        std::mem::forget(e.into_inner());
        return;
    }
    shared.notify();
}

/// The next task woken on this thread by the loop running here (see `LOCAL_RUNNABLES`).
#[inline]
pub(crate) fn pop_local_runnable() -> Option<Runnable<usize>> {
    LOCAL_RUNNABLES.with(|q| q.borrow_mut().pop_front())
}

/// How many tasks the loop running here has woken from this thread and not yet run.
#[inline]
pub(crate) fn local_runnables() -> usize {
    LOCAL_RUNNABLES.with(|q| q.borrow().len())
}

impl Shared {
    pub(crate) fn new() -> io::Result<Shared> {
        let wake = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        Ok(Shared {
            wake,
            notified: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            remote: Mutex::new(Vec::new()),
            runnables: ConcurrentQueue::unbounded(),
        })
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

    /// Marks this loop as running on the current thread until the guard drops. The local queue of a
    /// loop that was running here already (this one was run from one of its handlers) is set aside
    /// meanwhile.
    pub(crate) fn enter(self: &Arc<Self>) -> RunningGuard {
        let previous = RUNNING.with(|r| r.replace(Arc::as_ptr(self)));
        let previous_queue = LOCAL_RUNNABLES.with(|q| std::mem::take(&mut *q.borrow_mut()));
        RunningGuard {
            shared: self.clone(),
            previous,
            previous_queue,
        }
    }
}

pub(crate) struct RunningGuard {
    shared: Arc<Shared>,
    previous: *const Shared,
    previous_queue: VecDeque<Runnable<usize>>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.with(|r| r.set(self.previous));
        // Tasks woken here and not yet run (the loop stopped, or a panic passed out) wait on the
        // loop's own queue for its next run; the outer loop gets its local queue back.
        let left = LOCAL_RUNNABLES.with(|q| {
            std::mem::replace(
                &mut *q.borrow_mut(),
                std::mem::take(&mut self.previous_queue),
            )
        });
        for runnable in left {
            if let Err(e) = self.shared.runnables.push(runnable) {
                std::mem::forget(e.into_inner()); // closed: see `schedule`
            }
        }
    }
}

pub(crate) fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the IoService has been dropped")
}

/// A `Send + Sync` handle to a loop, for other threads: post closures to it and stop it.
///
/// ```
/// let svc = aio::IoService::new()?;
/// let handle = svc.handle();
/// std::thread::spawn(move || {
///     handle.post(|| println!("runs on the loop's thread")).unwrap();
///     handle.stop();
/// });
/// svc.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl Handle {
    /// Queues `f` to run on the loop's thread, after the current handler and never inside this call.
    /// Closures posted from one thread run in the order they were posted.
    ///
    /// # Errors
    /// `BrokenPipe` if the `IoService` has been dropped; `f` is dropped unrun.
    pub fn post(&self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.shared.post(Box::new(move |_: &crate::LocalHandle| {
            f();
            true
        }))
    }

    /// Makes `run()` return after the handler now running (if any); later `run()` calls return at once
    /// until [`IoService::restart`](crate::IoService::restart).
    pub fn stop(&self) {
        self.shared.stop();
    }

    /// Whether `stop()` was called and not yet undone by `restart()`.
    pub fn is_stopped(&self) -> bool {
        self.shared.is_stopped()
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

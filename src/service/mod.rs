//! The event loop: [`IoService`], its thread-local [`LocalHandle`] and its cross-thread [`Handle`].
//!
//! This is booster's `io_service`: one loop per thread, `run()` until `stop()`, `post()`, and a reactor
//! chosen at construction. Handlers and tasks run only from the loop, never inside the call that
//! started them. Dropping the `IoService` drops every pending handler and task without calling it and
//! closes every fd the loop owns.

mod blocking;
pub(crate) mod executor;
mod handle;
mod remote_task;
pub(crate) mod run;
pub(crate) mod task;

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::Deref;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::driver::{Backend, Event};
use crate::op::Op;
use crate::op::completion::{Completer, Completion, completion};
use crate::op::timer::{Sleep, sleep_until};
use crate::reactor::Reactor;
use blocking::BlockingPool;
pub use blocking::DEFAULT_MAX_BLOCKING_THREADS;
pub use executor::{JoinError, JoinHandle};
pub use handle::Handle;
pub use remote_task::RemoteJoinHandle;

pub(crate) struct Inner {
    /// Everything operations meet: sources, waiters, the ready queue, timers (see `reactor`).
    pub(crate) reactor: Rc<Reactor>,
    /// Events of the last wait left undispatched by a panic (see `run::Batch`).
    events: RefCell<Vec<Event>>,
    pub(crate) tasks: RefCell<task::TaskTable>,
    blocking: RefCell<Option<BlockingPool>>,
    max_blocking_threads: usize,
    running: Cell<bool>,
}

/// Builds an [`IoService`] with a chosen backend.
///
/// ```
/// use aio::{Backend, IoService};
/// let svc = IoService::builder().backend(Backend::Poll).build()?;
/// assert_eq!(svc.backend_name(), "poll");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    backend: Backend,
    max_blocking_threads: usize,
}

impl Builder {
    /// Picks the backend (default: [`Backend::Epoll`]).
    #[must_use = "the builder is a new value: keep it, then build()"]
    pub fn backend(mut self, backend: Backend) -> Builder {
        self.backend = backend;
        self
    }

    /// Bounds the threads of the loop's blocking pool (default 64; at least 1). The pool starts no
    /// thread before the first [`spawn_blocking`](LocalHandle::spawn_blocking).
    #[must_use = "the builder is a new value: keep it, then build()"]
    pub fn max_blocking_threads(mut self, threads: usize) -> Builder {
        self.max_blocking_threads = threads.max(1);
        self
    }

    /// Creates the loop.
    ///
    /// # Errors
    /// What the kernel says when the backend's fds (epoll, eventfd) cannot be created.
    pub fn build(self) -> io::Result<IoService> {
        let inner = Rc::new(Inner {
            reactor: Rc::new(Reactor::new(self.backend)?),
            events: RefCell::new(Vec::with_capacity(1024)),
            tasks: RefCell::new(task::TaskTable::default()),
            blocking: RefCell::new(None),
            max_blocking_threads: self.max_blocking_threads,
            running: Cell::new(false),
        });
        Ok(IoService {
            local: LocalHandle { inner },
        })
    }
}

/// An event loop: the owner of everything that waits on it.
///
/// `IoService` is `!Send`: a loop lives on the thread that made it. Objects created on it and the
/// closures it runs hold a [`LocalHandle`] (a cheap `Rc`); other threads reach it through a [`Handle`].
/// `IoService` dereferences to `LocalHandle`, so everything a `LocalHandle` can do (post, spawn, create
/// sockets) works on it directly.
///
/// `run()` returns only after [`stop()`](LocalHandle::stop) (booster semantics), whether or not any work
/// is pending. Dropping the `IoService` drops every pending handler and task without running it.
///
/// ```
/// use aio::IoService;
/// let svc = IoService::new()?;
/// let handle = svc.local();
/// svc.post(move || {
///     println!("hello from the loop");
///     handle.stop();
/// });
/// svc.run()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct IoService {
    local: LocalHandle,
}

/// A cheap, cloneable reference to a loop, for use on the loop's own thread: post closures, spawn tasks,
/// create I/O objects, stop the loop. Everything but `run()` (which only the [`IoService`] may call).
///
/// A `LocalHandle` that outlives its `IoService` still answers; what it starts never completes, and
/// operations report that the service is gone.
#[derive(Clone)]
pub struct LocalHandle {
    pub(crate) inner: Rc<Inner>,
}

impl Deref for IoService {
    type Target = LocalHandle;
    fn deref(&self) -> &LocalHandle {
        &self.local
    }
}

impl IoService {
    /// A loop on the default backend (epoll).
    ///
    /// # Errors
    /// What the kernel says when epoll or the eventfd cannot be created (e.g. `EMFILE`).
    pub fn new() -> io::Result<IoService> {
        Self::builder().build()
    }

    /// A loop on the backend named by the `AIO_BACKEND` environment variable (`epoll` when unset).
    ///
    /// # Errors
    /// `InvalidInput` for an unknown name, `Unsupported` for a backend this build lacks, or what
    /// creating the loop reports.
    pub fn from_env() -> io::Result<IoService> {
        Self::builder().backend(Backend::from_env()?).build()
    }

    /// Starts building a loop with a chosen backend.
    #[must_use = "a builder does nothing until build()"]
    pub fn builder() -> Builder {
        Builder {
            backend: Backend::Epoll,
            max_blocking_threads: DEFAULT_MAX_BLOCKING_THREADS,
        }
    }

    /// A cloneable reference to this loop, for closures and objects on this thread.
    pub fn local(&self) -> LocalHandle {
        self.local.clone()
    }

    /// Runs handlers and waits for events until [`stop()`](LocalHandle::stop) is called.
    ///
    /// A panic in a handler passes out of `run()`; the loop stays usable and a later `run()` continues
    /// with the remaining work.
    ///
    /// # Errors
    /// `WouldBlock`-free: only a failing wait (a kernel error other than `EINTR`), or `run()` called
    /// from inside a handler of the same loop (`Other`, "already running").
    pub fn run(&self) -> io::Result<()> {
        let _running = self.enter()?;
        while !self.is_stopped() {
            self.run_ready(usize::MAX, true);
            if self.is_stopped() {
                break;
            }
            // Blocks only when nothing is queued (checked inside).
            self.wait_and_dispatch(true, true)?;
        }
        Ok(())
    }

    /// Runs at most one handler, waiting for one if none is ready. Returns how many ran (0 when
    /// stopped).
    ///
    /// # Errors
    /// As for [`run`](IoService::run).
    pub fn run_one(&self) -> io::Result<usize> {
        let _running = self.enter()?;
        loop {
            if self.is_stopped() {
                return Ok(0);
            }
            if self.run_ready(1, true) == 1 {
                return Ok(1);
            }
            self.wait_and_dispatch(true, false)?;
        }
    }

    /// Runs every handler that is ready now, without waiting. Returns how many ran.
    ///
    /// # Errors
    /// As for [`run`](IoService::run).
    pub fn poll(&self) -> io::Result<usize> {
        let _running = self.enter()?;
        let mut count = 0;
        loop {
            self.wait_and_dispatch(false, false)?;
            if self.is_stopped() {
                return Ok(count);
            }
            let ran = self.run_ready(usize::MAX, true);
            count += ran;
            // Nothing ran and nothing was queued meanwhile (a delivery runs no handler but queues one).
            if (ran == 0 && !self.has_ready()) || self.is_stopped() {
                return Ok(count);
            }
        }
    }

    /// Runs until no counted work is left (Boost.Asio's `run()`): no callback operation or spawned
    /// task is pending except those marked background ([`Op::background`](crate::Op::background),
    /// [`spawn_background`](LocalHandle::spawn_background)), and nothing is queued to run. Returns
    /// early on `stop()`. A closure posted from another thread counts once it has reached the loop.
    ///
    /// ```
    /// use std::time::Duration;
    /// let svc = aio::IoService::new()?;
    /// svc.after(Duration::from_millis(1)).then(|res| res.expect("timer"));
    /// svc.run_until_done()?; // returns once the timer's handler has run
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// As for [`run`](IoService::run).
    pub fn run_until_done(&self) -> io::Result<()> {
        let _running = self.enter()?;
        loop {
            if self.is_stopped() || (self.pending_work() == 0 && !self.has_ready()) {
                return Ok(());
            }
            self.run_ready(usize::MAX, true);
            if self.is_stopped() || (self.pending_work() == 0 && !self.has_ready()) {
                return Ok(());
            }
            self.wait_and_dispatch(true, true)?;
        }
    }

    /// Clears the stopped state so that `run()` may be called again (booster's `reset`).
    pub fn restart(&self) {
        self.reactor().remote().restart();
    }
}

pub(crate) struct RunGuard<'a> {
    inner: &'a Inner,
    _thread: crate::reactor::remote::RunningGuard,
    previous: Option<LocalHandle>,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.inner.running.set(false);
        run::restore_current(self.previous.take());
    }
}

impl Drop for IoService {
    fn drop(&mut self) {
        self.local.shutdown();
    }
}

impl std::fmt::Debug for IoService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.local.fmt(f)
    }
}

impl std::fmt::Debug for LocalHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoService")
            .field("backend", &self.backend())
            .field("sources", &self.reactor().sources.borrow().len())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl LocalHandle {
    /// Queues `f` to run on the loop, after the current handler; never inside this call.
    pub fn post(&self, f: impl FnOnce() + 'static) {
        self.reactor().post(f);
    }

    /// Makes `run()` return after the handler now running.
    pub fn stop(&self) {
        self.reactor().remote().stop();
    }

    /// Whether the loop is stopped (until `restart()`).
    #[inline]
    pub fn is_stopped(&self) -> bool {
        self.reactor().is_stopped()
    }

    /// A `Send + Sync` handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle {
            remote: self.reactor().remote().clone(),
        }
    }

    /// The backend this loop runs on.
    pub fn backend(&self) -> Backend {
        self.reactor().backend()
    }

    /// The backend's name: `"epoll"`, `"poll"` or `"uring"` (booster's `io_service::reactor_name`).
    pub fn backend_name(&self) -> &'static str {
        self.backend().name()
    }

    /// Whether `self` and `other` refer to the same loop.
    pub fn same_service(&self, other: &LocalHandle) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    /// How much counted work is pending (see [`IoService::run_until_done`]).
    pub fn pending_work(&self) -> usize {
        self.reactor().pending_work()
    }

    /// The loop's reactor, which its objects' operations go through.
    #[inline(always)]
    pub(crate) fn reactor(&self) -> &Rc<Reactor> {
        &self.inner.reactor
    }

    /// A one-shot wait of `delay`: `Ok(())` once it has passed (never earlier).
    ///
    /// ```
    /// use std::time::Duration;
    /// let svc = aio::IoService::new()?;
    /// let handle = svc.local();
    /// svc.after(Duration::from_millis(5)).then(move |res| {
    ///     res.expect("timer");
    ///     handle.stop();
    /// });
    /// svc.run()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn after(&self, delay: Duration) -> Op<Sleep> {
        self.at(Instant::now() + delay)
    }

    /// A one-shot wait until `deadline`: `Ok(())` once it has passed (never earlier).
    pub fn at(&self, deadline: Instant) -> Op<Sleep> {
        sleep_until(self.reactor(), deadline)
    }

    /// An operation that something else completes: the `Send` [`Completer`] and the [`Op`] to wait
    /// on. Completing from any thread, or from a foreign callback, runs the handler on this loop; a
    /// completer dropped unfinished completes it with `BrokenPipe`.
    pub fn completion<T: Send + 'static>(&self) -> (Completer<T>, Op<Completion<T>>) {
        completion(self.reactor())
    }

    /// Runs `f` on a pool thread and completes with its result on this loop. A panic in `f` becomes
    /// an error (`Other`, "blocking task panicked: ...") for the handler, not a dead loop.
    ///
    /// The pool is per loop, bounded (see [`Builder::max_blocking_threads`]), and started lazily: no
    /// thread exists until the first call, so a process that never uses it can fork freely.
    ///
    /// ```
    /// let svc = aio::IoService::new()?;
    /// let sum = svc.block_on(svc.spawn_blocking(|| (1..=10).sum::<u32>()))?;
    /// assert_eq!(sum, 55);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_blocking<T, F>(&self, f: F) -> Op<Completion<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (completer, op) = self.completion::<T>();
        if self.reactor().is_shut_down() {
            completer.fail(crate::reactor::remote::gone());
        } else {
            let mut pool = self.inner.blocking.borrow_mut();
            pool.get_or_insert_with(|| BlockingPool::new(self.inner.max_blocking_threads))
                .run_completing(f, completer);
        }
        op
    }

    /// Drops everything pending without running it and closes every owned fd.
    pub(crate) fn shutdown(&self) {
        let reactor = self.reactor();
        if reactor.mark_shut_down() {
            return;
        }
        drop(reactor.remote().close());
        // The kernel must let go of the operations on the ring before their buffers are dropped.
        if !reactor.in_forked_child() {
            reactor.ring_shutdown();
        }
        // Blocking jobs not yet started are dropped; running ones finish on their own.
        drop(self.inner.blocking.borrow_mut().take());
        // Tasks first: dropping their futures may drop objects that close sources.
        task::shutdown_tasks(self);
        reactor.shut_down();
    }
}

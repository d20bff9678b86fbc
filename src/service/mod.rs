//! The event loop: [`IoService`], its thread-local [`LocalHandle`] and its cross-thread [`Handle`].
//!
//! This is booster's `io_service`: one loop per thread, `run()` until `stop()`, `post()`, and a reactor
//! chosen at construction. Handlers and tasks run only from the loop, never inside the call that
//! started them. Dropping the `IoService` drops every pending handler and task without calling it and
//! closes every fd the loop owns.

pub(crate) mod executor;
mod fork;
pub(crate) mod pool;
mod registry;
pub(crate) mod run;
pub(crate) mod shared;
pub(crate) mod source;
pub(crate) mod task;
mod timers;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::ops::Deref;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;

use crate::blocking::{BlockingPool, DEFAULT_MAX_BLOCKING_THREADS};
use crate::driver::{AnyDriver, Backend, Event};
use crate::op::ReadyOp;
pub use executor::{JoinError, JoinHandle};
pub use shared::Handle;
use shared::{RemoteJob, Shared};
use source::SourceTable;
use timers::TimerQueue;

/// Something the loop will run: a posted closure or a finished callback operation.
pub(crate) enum Job {
    Call(Box<dyn FnOnce()>),
    Remote(RemoteJob),
    Op(Box<dyn ReadyOp>),
    /// A persistent read's chunk to hand over, or its next read (see `op::read_each`).
    Persistent(std::rc::Rc<dyn crate::op::PersistentOp>),
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    backend: Backend,
    pub(crate) driver: RefCell<AnyDriver>,
    pub(crate) sources: RefCell<SourceTable>,
    /// Recycled blocks of finished callback operations.
    pub(crate) op_pool: RefCell<pool::OpPool>,
    ready: RefCell<VecDeque<Job>>,
    /// How many jobs were ever queued in `ready`, and how many of them were taken out to run: a
    /// callback operation remembers the first count when it starts, so that the loop can tell whether
    /// everything queued before it has run (see `serve_waiters`).
    queued: Cell<u64>,
    dequeued: Cell<u64>,
    events: RefCell<Vec<Event>>,
    remote_jobs: RefCell<Vec<RemoteJob>>,
    /// Timer deadlines and back-offs.
    timers: RefCell<TimerQueue>,
    pub(crate) tasks: RefCell<task::TaskTable>,
    /// Tasks woken by number on this thread (see `task::TaskWake`), to run in this order.
    pub(crate) run_queue: RefCell<VecDeque<task::TaskRef>>,
    /// The task being polled, if any (see `task::TaskWake`).
    current_task: Cell<Option<task::CurrentTask>>,
    /// Pending callback operations and live tasks that are not background: what `run_until_done`
    /// waits for.
    work: Cell<usize>,
    pub(crate) blocking: RefCell<Option<BlockingPool>>,
    pub(crate) max_blocking_threads: usize,
    next_waiter_id: Cell<u64>,
    running: Cell<bool>,
    shut_down: Cell<bool>,
    /// The fork generation this loop was built in (see `fork`).
    fork_generation: u64,
    /// Operations go to the io_uring ring (the `uring` backend).
    pub(crate) ring: bool,
    /// Operations the ring holds, by key (see `op::ring`).
    pub(crate) inflight: RefCell<slab::Slab<crate::op::ring::Inflight>>,
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
    pub fn backend(mut self, backend: Backend) -> Builder {
        self.backend = backend;
        self
    }

    /// Bounds the threads of the loop's blocking pool (default 64; at least 1). The pool starts no
    /// thread before the first [`spawn_blocking`](LocalHandle::spawn_blocking).
    pub fn max_blocking_threads(mut self, threads: usize) -> Builder {
        self.max_blocking_threads = threads.max(1);
        self
    }

    /// Creates the loop.
    ///
    /// # Errors
    /// What the kernel says when the backend's fds (epoll, eventfd) cannot be created.
    pub fn build(self) -> io::Result<IoService> {
        let shared = Arc::new(Shared::new()?);
        let driver = AnyDriver::new(self.backend, shared.wake.as_fd())?;
        let inner = Rc::new(Inner {
            shared,
            backend: self.backend,
            driver: RefCell::new(driver),
            sources: RefCell::new(SourceTable::default()),
            op_pool: RefCell::new(pool::OpPool::default()),
            ready: RefCell::new(VecDeque::new()),
            queued: Cell::new(0),
            dequeued: Cell::new(0),
            events: RefCell::new(Vec::with_capacity(1024)),
            remote_jobs: RefCell::new(Vec::new()),
            timers: RefCell::new(TimerQueue::default()),
            tasks: RefCell::new(task::TaskTable::default()),
            run_queue: RefCell::new(VecDeque::new()),
            current_task: Cell::new(None),
            work: Cell::new(0),
            blocking: RefCell::new(None),
            max_blocking_threads: self.max_blocking_threads,
            next_waiter_id: Cell::new(0),
            running: Cell::new(false),
            shut_down: Cell::new(false),
            fork_generation: fork::generation(),
            ring: self.backend == Backend::Uring,
            inflight: RefCell::new(slab::Slab::new()),
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
            if self.is_stopped() || (self.inner.work.get() == 0 && !self.has_ready()) {
                return Ok(());
            }
            self.run_ready(usize::MAX, true);
            if self.is_stopped() || (self.inner.work.get() == 0 && !self.has_ready()) {
                return Ok(());
            }
            self.wait_and_dispatch(true, true)?;
        }
    }

    /// Clears the stopped state so that `run()` may be called again (booster's `reset`).
    pub fn restart(&self) {
        self.inner
            .shared
            .stopped
            .store(false, std::sync::atomic::Ordering::Release);
    }
}

pub(crate) struct RunGuard<'a> {
    inner: &'a Inner,
    _thread: shared::RunningGuard,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.inner.running.set(false);
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
            .field("backend", &self.inner.backend)
            .field("sources", &self.inner.sources.borrow().len())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

impl LocalHandle {
    /// Queues `f` to run on the loop, after the current handler; never inside this call.
    pub fn post(&self, f: impl FnOnce() + 'static) {
        if !self.inner.shut_down.get() {
            self.push_job(Job::Call(Box::new(f)));
        }
    }

    /// Makes `run()` return after the handler now running.
    pub fn stop(&self) {
        self.inner.shared.stop();
    }

    /// Whether the loop is stopped (until `restart()`).
    #[inline]
    pub fn is_stopped(&self) -> bool {
        self.inner.shared.is_stopped()
    }

    /// A `Send + Sync` handle for other threads.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.inner.shared.clone(),
        }
    }

    /// The backend this loop runs on.
    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// The backend's name: `"epoll"`, `"poll"` or `"uring"` (booster's `io_service::reactor_name`).
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Whether `self` and `other` refer to the same loop.
    pub fn same_service(&self, other: &LocalHandle) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    #[inline]
    pub(crate) fn push_job(&self, job: Job) {
        self.inner.ready.borrow_mut().push_back(job);
        self.inner.queued.set(self.inner.queued.get() + 1);
    }

    /// How many jobs have been queued so far (see `Inner::queued`).
    pub(crate) fn jobs_queued(&self) -> u64 {
        self.inner.queued.get()
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.inner.shut_down.get()
    }

    /// How much counted work is pending (see [`IoService::run_until_done`]).
    pub fn pending_work(&self) -> usize {
        self.inner.work.get()
    }

    pub(crate) fn add_work(&self) {
        self.inner.work.set(self.inner.work.get() + 1);
    }

    pub(crate) fn finish_work(&self) {
        self.inner.work.set(self.inner.work.get().saturating_sub(1));
    }

    pub(crate) fn next_waiter_id(&self) -> u64 {
        let id = self.inner.next_waiter_id.get();
        self.inner.next_waiter_id.set(id + 1);
        id
    }
}

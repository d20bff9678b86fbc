//! The event loop: [`IoService`], its thread-local [`LocalHandle`] and its cross-thread [`Handle`].
//!
//! This is booster's `io_service`: one loop per thread, `run()` until `stop()`, `post()`, and a reactor
//! chosen at construction. Handlers and tasks run only from the loop, never inside the call that
//! started them. Dropping the `IoService` drops every pending handler and task without calling it and
//! closes every fd the loop owns.

pub(crate) mod executor;
pub(crate) mod shared;
pub(crate) mod source;

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::ops::Deref;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::driver::{AnyDriver, Backend, Driver, Event, Token};
use crate::op::{Interest, ReadyOp};
pub use executor::{JoinError, JoinHandle};
pub use shared::Handle;
use shared::{RemoteJob, Shared};
use source::{FdSlot, SourceTable, Waiter};

/// Something the loop will run: a posted closure or a finished callback operation.
pub(crate) enum Job {
    Call(Box<dyn FnOnce()>),
    Op(Box<dyn ReadyOp>),
}

pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    backend: Backend,
    driver: RefCell<AnyDriver>,
    pub(crate) sources: RefCell<SourceTable>,
    ready: RefCell<VecDeque<Job>>,
    events: RefCell<Vec<Event>>,
    remote_jobs: RefCell<Vec<RemoteJob>>,
    /// Internal wake-ups of a source direction at an instant (the acceptor's back-off after `EMFILE`).
    wakeups: RefCell<BinaryHeap<Reverse<(Instant, u64, Interest)>>>,
    pub(crate) tasks: RefCell<executor::TaskTable>,
    next_waiter_id: Cell<u64>,
    running: Cell<bool>,
    shut_down: Cell<bool>,
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
}

impl Builder {
    /// Picks the backend (default: [`Backend::Epoll`]).
    pub fn backend(mut self, backend: Backend) -> Builder {
        self.backend = backend;
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
            ready: RefCell::new(VecDeque::new()),
            events: RefCell::new(Vec::with_capacity(1024)),
            remote_jobs: RefCell::new(Vec::new()),
            wakeups: RefCell::new(BinaryHeap::new()),
            tasks: RefCell::new(executor::TaskTable::default()),
            next_waiter_id: Cell::new(0),
            running: Cell::new(false),
            shut_down: Cell::new(false),
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
            self.wait_and_dispatch(true)?;
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
            self.wait_and_dispatch(true)?;
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
            self.wait_and_dispatch(false)?;
            if self.is_stopped() {
                return Ok(count);
            }
            let ran = self.run_ready(usize::MAX, true);
            count += ran;
            if ran == 0 || self.is_stopped() {
                return Ok(count);
            }
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
    pub(crate) fn enter(&self) -> io::Result<RunGuard<'_>> {
        if self.inner.running.replace(true) {
            return Err(io::Error::other(
                "IoService is already running on this thread (run, run_one, poll or block_on called from a handler)",
            ));
        }
        Ok(RunGuard {
            inner: &self.inner,
            _thread: self.inner.shared.enter(),
        })
    }

    /// Runs up to `max` ready jobs (posted closures, finished operations, woken tasks); returns how
    /// many handlers ran.
    pub(crate) fn run_ready(&self, max: usize, honor_stop: bool) -> usize {
        let inner = &*self.inner;
        let mut budget = inner.ready.borrow().len() + inner.shared.runnables.len();
        let mut ran = 0;
        while budget > 0 && ran < max {
            budget -= 1;
            let job = inner.ready.borrow_mut().pop_front();
            match job {
                Some(Job::Call(f)) => {
                    ran += 1;
                    f();
                }
                Some(Job::Op(op)) => {
                    ran += 1;
                    op.complete();
                }
                None => match inner.shared.runnables.pop() {
                    Ok(runnable) => {
                        ran += 1;
                        self.run_task(runnable);
                    }
                    Err(_) => break,
                },
            }
            if honor_stop && inner.shared.is_stopped() {
                break;
            }
        }
        ran
    }

    /// One wait on the driver (not blocking when `block` is false or work is queued) and the dispatch
    /// of what it reported.
    pub(crate) fn wait_and_dispatch(&self, block: bool) -> io::Result<()> {
        let inner = &*self.inner;
        let busy = !block || !inner.ready.borrow().is_empty() || !inner.shared.runnables.is_empty();
        let timeout = if busy {
            Some(Duration::ZERO)
        } else {
            inner
                .wakeups
                .borrow()
                .peek()
                .map(|Reverse((at, _, _))| at.saturating_duration_since(Instant::now()))
        };
        let mut events = std::mem::take(&mut *inner.events.borrow_mut());
        events.clear();
        let result = inner
            .driver
            .borrow_mut()
            .wait(&inner.sources.borrow(), timeout, &mut events);
        for ev in &events {
            if ev.token == Token::WAKE {
                self.take_remote();
            } else {
                if ev.readable {
                    self.on_ready(ev.token, Interest::Read);
                }
                if ev.writable {
                    self.on_ready(ev.token, Interest::Write);
                }
            }
        }
        *inner.events.borrow_mut() = events;
        self.fire_wakeups();
        result
    }

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

    /// The backend's name: `"epoll"` or `"poll"` (booster's `io_service::reactor_name`).
    pub fn backend_name(&self) -> &'static str {
        self.inner.backend.name()
    }

    /// Whether `self` and `other` refer to the same loop.
    pub fn same_service(&self, other: &LocalHandle) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn push_job(&self, job: Job) {
        self.inner.ready.borrow_mut().push_back(job);
    }

    pub(crate) fn is_shut_down(&self) -> bool {
        self.inner.shut_down.get()
    }

    pub(crate) fn next_waiter_id(&self) -> u64 {
        let id = self.inner.next_waiter_id.get();
        self.inner.next_waiter_id.set(id + 1);
        id
    }

    /// Registers an fd with the loop; the source table owns it from now on (or borrows it, when
    /// attached).
    pub(crate) fn add_source(&self, fd: FdSlot) -> io::Result<Token> {
        if self.is_shut_down() {
            return Err(shared::gone());
        }
        let token = self.inner.sources.borrow_mut().insert(fd);
        let registered = {
            let sources = self.inner.sources.borrow();
            let source = sources.get(token).expect("source just inserted");
            self.inner
                .driver
                .borrow_mut()
                .register(source.fd.borrow(), token)
        };
        if let Err(e) = registered {
            // Hand an attached fd back untouched; an owned one closes with the removed source.
            self.inner.sources.borrow_mut().remove(token);
            return Err(e);
        }
        Ok(token)
    }

    /// Closes a source: pending operations complete with `ECANCELED`, the driver forgets the fd, and
    /// the fd is returned (owned) or forgotten (attached). Returns `None` if already closed.
    pub(crate) fn remove_source(&self, token: Token) -> Option<FdSlot> {
        let source = self.inner.sources.borrow_mut().remove(token)?;
        // An fd that was dup'ed elsewhere stays in the epoll set unless removed explicitly.
        let _ = self
            .inner
            .driver
            .borrow_mut()
            .deregister(source.fd.borrow());
        let source::Source {
            fd, read, write, ..
        } = source;
        for waiter in read.waiters.into_iter().chain(write.waiters) {
            self.cancel_waiter(waiter);
        }
        Some(fd)
    }

    /// Completes every operation pending on `token` with `ECANCELED`; the source stays open.
    pub(crate) fn cancel_source(&self, token: Token) {
        let waiters: Vec<Waiter> = {
            let mut sources = self.inner.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                return;
            };
            source.cancel_epoch = source.cancel_epoch.wrapping_add(1);
            let mut all: Vec<Waiter> = source.read.waiters.drain(..).collect();
            all.extend(source.write.waiters.drain(..));
            all
        };
        for waiter in waiters {
            self.cancel_waiter(waiter);
        }
    }

    fn cancel_waiter(&self, waiter: Waiter) {
        match waiter {
            Waiter::Task { waker, .. } => waker.wake(),
            Waiter::Callback(mut op) => {
                op.cancel(crate::error::cancelled());
                self.push_job(Job::Op(op));
            }
        }
    }

    /// Runs `f` with the fd of a live source.
    pub(crate) fn with_fd<R>(
        &self,
        token: Token,
        f: impl FnOnce(BorrowedFd<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        let sources = self.inner.sources.borrow();
        let source = sources.get(token).ok_or_else(crate::error::closed)?;
        f(source.fd.borrow())
    }

    /// A direction of `token` became ready: retry the callback operations waiting on it, in order,
    /// and wake the futures.
    fn on_ready(&self, token: Token, interest: Interest) {
        {
            let mut sources = self.inner.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                return; // closed since: a stale event
            };
            let dir = source.dir_mut(interest);
            if let Some(until) = dir.backoff_until {
                if Instant::now() < until {
                    return; // backing off: only the wake-up at `until` ends it
                }
                dir.backoff_until = None;
            }
            dir.ready = true;
        }
        loop {
            let waiter = {
                let mut sources = self.inner.sources.borrow_mut();
                let Some(source) = sources.get_mut(token) else {
                    return;
                };
                let dir = source.dir_mut(interest);
                if !dir.ready {
                    return;
                }
                match dir.waiters.pop_front() {
                    Some(w) => w,
                    None => return,
                }
            };
            match waiter {
                Waiter::Task { waker, .. } => waker.wake(),
                Waiter::Callback(mut op) => {
                    if op.retry(self) {
                        self.push_job(Job::Op(op));
                    } else {
                        // Still not ready: it keeps its place at the head of the line.
                        let mut sources = self.inner.sources.borrow_mut();
                        match sources.get_mut(token) {
                            Some(source) => source
                                .dir_mut(interest)
                                .waiters
                                .push_front(Waiter::Callback(op)),
                            None => {
                                drop(sources);
                                self.cancel_waiter(Waiter::Callback(op));
                            }
                        }
                        return;
                    }
                }
            }
        }
    }

    /// Arranges for `token`'s `interest` direction to be treated as ready after `delay`, and ignores
    /// its readiness events until then (a level-triggered backend would otherwise report a listener
    /// with a queued connection as ready at once, and an acceptor out of fds would spin).
    pub(crate) fn wake_after(&self, token: Token, interest: Interest, delay: Duration) {
        let at = Instant::now() + delay;
        if let Some(source) = self.inner.sources.borrow_mut().get_mut(token) {
            source.dir_mut(interest).backoff_until = Some(at);
        }
        self.inner
            .wakeups
            .borrow_mut()
            .push(Reverse((at, token.0, interest)));
    }

    fn fire_wakeups(&self) {
        let now = Instant::now();
        loop {
            let due = {
                let mut wakeups = self.inner.wakeups.borrow_mut();
                match wakeups.peek() {
                    Some(Reverse((at, _, _))) if *at <= now => wakeups.pop(),
                    _ => None,
                }
            };
            match due {
                Some(Reverse((_, token, interest))) => self.on_ready(Token(token), interest),
                None => return,
            }
        }
    }

    fn take_remote(&self) {
        let mut jobs = std::mem::take(&mut *self.inner.remote_jobs.borrow_mut());
        self.inner.shared.take_remote(&mut jobs);
        for job in jobs.drain(..) {
            self.push_job(Job::Call(job));
        }
        *self.inner.remote_jobs.borrow_mut() = jobs;
    }

    /// Drops everything pending without running it and closes every owned fd.
    fn shutdown(&self) {
        let inner = &*self.inner;
        if inner.shut_down.replace(true) {
            return;
        }
        drop(inner.shared.close());
        // Tasks first: dropping their futures may drop objects that close sources.
        executor::shutdown_tasks(self);
        loop {
            let jobs: Vec<Job> = inner.ready.borrow_mut().drain(..).collect();
            let sources = inner.sources.borrow_mut().drain();
            if jobs.is_empty() && sources.is_empty() {
                break;
            }
            for source in &sources {
                let _ = inner.driver.borrow_mut().deregister(source.fd.borrow());
            }
            // Dropping handlers may drop sockets, which find their sources already gone.
            drop(jobs);
            drop(sources);
        }
        inner.wakeups.borrow_mut().clear();
    }

    pub(crate) fn owned_fd(fd: FdSlot) -> Option<OwnedFd> {
        match fd {
            FdSlot::Owned(fd) => Some(fd),
            FdSlot::Attached(_) => None,
        }
    }
}

//! [`LoopPool`]: one loop per core, thread-per-core (Asio's `io_context` pool, without work
//! stealing).
//!
//! Each loop is an ordinary [`IoService`] on its own thread, with everything a loop has: sockets,
//! timers, tasks and handlers stay on the loop that made them. Work reaches another loop only when a
//! user sends it there: a closure ([`PoolHandle::post`]), a future made on that loop
//! ([`PoolHandle::spawn_with`]), or a connected socket ([`PoolHandle::send_socket`]). Accepting is
//! spread over the loops by [`LoopPool::serve`] (see [`AcceptMode`]).
//!
//! A loop that panics (or whose wait fails) stops the whole pool, and [`LoopPool::join`] reports
//! which loop it was and why.
//!
//! ```
//! use std::io::{Read, Write};
//! use aio::{AcceptMode, LoopPool};
//!
//! let pool = LoopPool::builder().threads(2).start()?;
//! // An echo server on both loops, each with its own SO_REUSEPORT acceptor.
//! let serving = pool.serve(&"127.0.0.1:0".parse()?, AcceptMode::ReusePort, |socket, _peer| {
//!     let socket = std::rc::Rc::new(socket);
//!     socket.read_some(vec![0u8; 64]).then({
//!         let socket = socket.clone();
//!         move |(res, buf)| {
//!             let n = res.unwrap_or(0);
//!             socket.write_all(buf[..n].to_vec()).then(move |_| drop(socket));
//!         }
//!     });
//! })?;
//! let mut client = std::net::TcpStream::connect(serving.endpoint().to_string())?;
//! client.write_all(b"hello")?;
//! let mut reply = [0u8; 5];
//! client.read_exact(&mut reply)?;
//! assert_eq!(&reply, b"hello");
//! pool.stop();
//! pool.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod serve;
mod stats;

use std::cell::Cell;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicUsize;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

pub use serve::{AcceptMode, Balance, Serving};
pub use stats::LoopStats;

use crate::driver::Backend;
use crate::endpoint::Family;
use crate::net::hooks::SocketHooks;
use crate::{Handle, IoService, LocalHandle, StreamSocket};
use stats::LoopCounters;

thread_local! {
    /// The index of the pool loop running on this thread, if any.
    static LOOP_INDEX: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Starts a [`LoopPool`]: how many loops, on which backend, pinned or not.
#[derive(Debug, Clone, Default)]
#[must_use = "the builder does nothing until start()"]
pub struct PoolBuilder {
    threads: Option<usize>,
    pin: bool,
    backend: Option<Backend>,
}

impl PoolBuilder {
    /// The number of loops (default: the cores this process may run on; at least 1).
    pub fn threads(mut self, threads: usize) -> PoolBuilder {
        self.threads = Some(threads.max(1));
        self
    }

    /// Pins loop `i` to the `i`-th CPU this process may run on (modulo their number). Off by default.
    pub fn pin_cpus(mut self, pin: bool) -> PoolBuilder {
        self.pin = pin;
        self
    }

    /// The backend of every loop (default: `AIO_BACKEND`, else epoll, as
    /// [`IoService::from_env`]).
    pub fn backend(mut self, backend: Backend) -> PoolBuilder {
        self.backend = Some(backend);
        self
    }

    /// Starts the loops, each on its own thread, and returns once all of them run.
    ///
    /// # Errors
    /// The first loop that could not be made (its backend's fds), or a thread that could not be
    /// spawned; the loops already started are stopped and joined.
    pub fn start(self) -> io::Result<LoopPool> {
        let n = self
            .threads
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        let cpus = if self.pin {
            allowed_cpus()?
        } else {
            Vec::new()
        };
        let exits = Arc::new(Exits {
            state: Mutex::new(ExitState {
                running: 0,
                first_failure: None,
            }),
            changed: Condvar::new(),
        });
        let mut threads = Vec::with_capacity(n);
        let mut loops = Vec::with_capacity(n);
        let mut failed = None;
        let mut backend_used = None;
        for index in 0..n {
            let (tx, rx) = mpsc::channel();
            let cpu = (!cpus.is_empty()).then(|| cpus[index % cpus.len()]);
            let backend = self.backend;
            let loop_exits = exits.clone();
            exits
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .running += 1;
            let spawned = thread::Builder::new()
                .name(format!("aio-loop-{index}"))
                .spawn(move || run_loop(index, backend, cpu, tx, loop_exits));
            match spawned {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    exits.loop_ended(None);
                    failed = Some(e);
                    break;
                }
            }
            match rx.recv() {
                Ok(Ok((handle, loop_backend))) => {
                    backend_used = Some(loop_backend);
                    loops.push(LoopSlot {
                        handle,
                        counters: Arc::new(LoopCounters::default()),
                    });
                }
                Ok(Err(e)) => {
                    failed = Some(e);
                    break;
                }
                Err(_) => {
                    failed = Some(io::Error::other("a pool loop ended before it started"));
                    break;
                }
            }
        }
        let pool = LoopPool {
            handle: PoolHandle {
                shared: Arc::new(Shared {
                    loops,
                    next: AtomicUsize::new(0),
                    backend: backend_used.unwrap_or(Backend::Epoll),
                }),
            },
            threads,
            exits,
        };
        match failed {
            // Dropping the pool stops and joins the loops that did start.
            Some(e) => Err(e),
            None => Ok(pool),
        }
    }
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = rustix::thread::sched_getaffinity(None)?;
    Ok((0..rustix::thread::CpuSet::MAX_CPU)
        .filter(|&cpu| set.is_set(cpu))
        .collect())
}

/// The body of loop `index`'s thread.
fn run_loop(
    index: usize,
    backend: Option<Backend>,
    cpu: Option<usize>,
    started: mpsc::Sender<io::Result<(Handle, Backend)>>,
    exits: Arc<Exits>,
) {
    let made = (|| {
        if let Some(cpu) = cpu {
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            rustix::thread::sched_setaffinity(None, &set)?;
        }
        match backend {
            Some(backend) => IoService::builder().backend(backend).build(),
            None => IoService::from_env(),
        }
    })();
    let svc = match made {
        Ok(svc) => svc,
        Err(e) => {
            let _ = started.send(Err(e));
            exits.loop_ended(None);
            return;
        }
    };
    LOOP_INDEX.with(|i| i.set(Some(index)));
    let _ = started.send(Ok((svc.handle(), svc.backend())));
    let failure = match std::panic::catch_unwind(AssertUnwindSafe(|| svc.run())) {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(PoolError {
            index,
            cause: Cause::Failed(e),
        }),
        Err(panic) => Some(PoolError {
            index,
            cause: Cause::Panicked(panic_message(&*panic)),
        }),
    };
    serve::close_acceptors();
    // What the loop still holds is dropped here, on its own thread.
    drop(std::panic::catch_unwind(AssertUnwindSafe(|| drop(svc))));
    exits.loop_ended(failure);
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a payload that is not a string".to_owned()
    }
}

/// N loops on N threads (see the [module docs](self)). Dropping the pool stops and joins it.
pub struct LoopPool {
    handle: PoolHandle,
    threads: Vec<thread::JoinHandle<()>>,
    exits: Arc<Exits>,
}

struct Shared {
    loops: Vec<LoopSlot>,
    /// The next loop for round-robin choices.
    next: AtomicUsize,
    /// The loops' backend.
    backend: Backend,
}

struct LoopSlot {
    handle: Handle,
    counters: Arc<LoopCounters>,
}

struct Exits {
    state: Mutex<ExitState>,
    changed: Condvar,
}

struct ExitState {
    running: usize,
    first_failure: Option<PoolError>,
}

impl Exits {
    fn loop_ended(&self, failure: Option<PoolError>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.running -= 1;
        if state.first_failure.is_none() {
            state.first_failure = failure;
        }
        self.changed.notify_all();
    }
}

impl LoopPool {
    /// A builder: [`threads`](PoolBuilder::threads), [`pin_cpus`](PoolBuilder::pin_cpus),
    /// [`backend`](PoolBuilder::backend), then [`start`](PoolBuilder::start).
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// A `Send + Sync` handle to the pool, for any thread (and the pool's own loops).
    pub fn handle(&self) -> PoolHandle {
        self.handle.clone()
    }

    /// Blocks until every loop has stopped (after [`stop`](LoopPool::stop), from any thread, or after
    /// a loop failed), then reports the first failure.
    ///
    /// # Errors
    /// [`PoolError`]: the loop that panicked or whose wait failed, and why.
    pub fn join(mut self) -> Result<(), PoolError> {
        self.wait_and_join()
    }

    fn wait_and_join(&mut self) -> Result<(), PoolError> {
        {
            let mut state = self.exits.state.lock().unwrap_or_else(|e| e.into_inner());
            while state.running > 0 {
                if state.first_failure.is_some() {
                    // One loop failed: the others stop too.
                    self.handle.stop();
                }
                state = self
                    .exits
                    .changed
                    .wait(state)
                    .unwrap_or_else(|e| e.into_inner());
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        let mut state = self.exits.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.first_failure.take() {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }
}

impl std::ops::Deref for LoopPool {
    type Target = PoolHandle;
    /// A pool does everything its handle does.
    fn deref(&self) -> &PoolHandle {
        &self.handle
    }
}

impl Drop for LoopPool {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.handle.stop();
            let _ = self.wait_and_join();
        }
    }
}

impl fmt::Debug for LoopPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoopPool")
            .field("loops", &self.handle.len())
            .finish_non_exhaustive()
    }
}

/// The pool as any thread sees it: post to, spawn on, send a socket to one of its loops; read their
/// statistics; stop them all. Cheap to clone.
#[derive(Clone)]
pub struct PoolHandle {
    shared: Arc<Shared>,
}

impl PoolHandle {
    /// How many loops the pool has.
    pub fn len(&self) -> usize {
        self.shared.loops.len()
    }

    /// Whether the pool has no loop (only while a failed start unwinds).
    pub fn is_empty(&self) -> bool {
        self.shared.loops.is_empty()
    }

    /// The loops' backend.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    /// The index of the pool loop running on this thread, if this thread is one of a pool's loops.
    pub fn current_index() -> Option<usize> {
        LOOP_INDEX.with(Cell::get)
    }

    /// Loop `index`'s [`Handle`].
    ///
    /// # Panics
    /// If `index >= len()`.
    pub fn loop_handle(&self, index: usize) -> &Handle {
        &self.shared.loops[index].handle
    }

    /// Runs `f` on loop `index` (after what was posted to it before, never inside this call).
    ///
    /// # Errors
    /// `BrokenPipe` if that loop has ended; `InvalidInput` if there is no loop `index`.
    pub fn post(&self, index: usize, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.slot(index)?.handle.post(f)
    }

    /// Runs `f` once on every loop, with the loop and its index (to set up what each loop serves).
    ///
    /// # Errors
    /// As for [`post`](PoolHandle::post), for the first loop that refused.
    pub fn post_each<F>(&self, f: F) -> io::Result<()>
    where
        F: Fn(&LocalHandle, usize) + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        for index in 0..self.len() {
            let f = f.clone();
            self.post(index, move || {
                if let Some(svc) = LocalHandle::current() {
                    f(&svc, index);
                }
            })?;
        }
        Ok(())
    }

    /// Runs `future` on loop `index` as a task; its output comes back through the
    /// [`RemoteJoinHandle`](crate::RemoteJoinHandle), awaitable or joinable from any thread.
    ///
    /// # Panics
    /// If there is no loop `index`.
    pub fn spawn<F>(&self, index: usize, future: F) -> crate::RemoteJoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.loop_handle(index).spawn(future)
    }

    /// Makes a future on loop `index` (with `make`, which gets that loop) and runs it there as a
    /// task: the future need not be `Send`, only `make` and the output.
    ///
    /// # Panics
    /// If there is no loop `index`.
    pub fn spawn_with<M, F>(&self, index: usize, make: M) -> crate::RemoteJoinHandle<F::Output>
    where
        M: FnOnce(&LocalHandle) -> F + Send + 'static,
        F: std::future::Future + 'static,
        F::Output: Send + 'static,
    {
        self.loop_handle(index).spawn_with(make)
    }

    /// Moves a connected socket to loop `index`, where `f` gets it back, registered there, with
    /// whatever the kernel holds for it (unread input, unsent output) intact. Call it on the
    /// socket's own loop, with no operation pending on it.
    ///
    /// # Errors
    /// What [`release`](StreamSocket::release) says (an operation is pending, the socket is
    /// closed), or [`post`](PoolHandle::post)'s error: then the socket is closed.
    pub fn send_socket<F>(&self, index: usize, socket: StreamSocket, f: F) -> io::Result<()>
    where
        F: FnOnce(io::Result<StreamSocket>) + Send + 'static,
    {
        let slot = self.slot(index)?;
        let family = socket.local_endpoint().map(|e| e.family());
        let fd = socket.release()?;
        let counters = slot.counters.clone();
        slot.handle.post(move || {
            if let Some(svc) = LocalHandle::current() {
                f(adopt(&svc, fd, family.ok(), counters, false));
            }
        })
    }

    /// Stops every loop (from any thread, a pool loop included).
    pub fn stop(&self) {
        for slot in &self.shared.loops {
            slot.handle.stop();
        }
    }

    /// Each loop's statistics, by index.
    pub fn stats(&self) -> Vec<LoopStats> {
        self.shared
            .loops
            .iter()
            .enumerate()
            .map(|(index, slot)| slot.counters.snapshot(index, &slot.handle))
            .collect()
    }

    fn slot(&self, index: usize) -> io::Result<&LoopSlot> {
        self.shared.loops.get(index).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("no loop {index} in a pool of {}", self.len()),
            )
        })
    }
}

impl fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolHandle")
            .field("loops", &self.len())
            .finish()
    }
}

/// Registers a connection's fd on `svc`, counted as open on that loop until it closes (and as
/// accepted when `accepted`).
fn adopt(
    svc: &LocalHandle,
    fd: OwnedFd,
    family: Option<Family>,
    counters: Arc<LoopCounters>,
    accepted: bool,
) -> io::Result<StreamSocket> {
    let hooks = counters.clone().hooks();
    let socket = StreamSocket::from_accepted(svc, fd, family.unwrap_or(Family::Unix), &hooks)?;
    counters.opened(accepted);
    Ok(socket)
}

/// Why a pool stopped by itself: which loop, and what happened to it.
#[derive(Debug)]
pub struct PoolError {
    index: usize,
    cause: Cause,
}

#[derive(Debug)]
enum Cause {
    Panicked(String),
    Failed(io::Error),
}

impl PoolError {
    /// The loop that failed.
    pub fn loop_index(&self) -> usize {
        self.index
    }

    /// The panic's message, if the loop panicked.
    pub fn panic_message(&self) -> Option<&str> {
        match &self.cause {
            Cause::Panicked(message) => Some(message),
            Cause::Failed(_) => None,
        }
    }
}

impl fmt::Display for PoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Panicked(message) => write!(f, "pool loop {} panicked: {message}", self.index),
            Cause::Failed(e) => write!(f, "pool loop {} failed: {e}", self.index),
        }
    }
}

impl std::error::Error for PoolError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.cause {
            Cause::Failed(e) => Some(e),
            Cause::Panicked(_) => None,
        }
    }
}

impl From<PoolError> for io::Error {
    fn from(e: PoolError) -> io::Error {
        io::Error::other(e)
    }
}

/// Hooks that count a connection as closed on its loop (see `stats`).
impl LoopCounters {
    fn hooks(self: Arc<Self>) -> SocketHooks {
        SocketHooks::new().on_close(move |_| self.closed())
    }
}

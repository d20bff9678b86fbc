//! Work that must not run on the loop: [`LocalHandle::spawn_blocking`] and the completion bridge
//! [`LocalHandle::completion`] for callback-based C or driver APIs.
//!
//! The answer to "how do I make a blocking driver call an async operation": hand it to a pool thread
//! and get an [`Op`] that completes on the loop thread. The pool is per loop, bounded, and started
//! lazily: no thread exists until the first `spawn_blocking`, so a process that never uses it can fork
//! freely, and a forked child builds its own loop and pool. Idle threads exit after a while.
//!
//! A [`Completer`] is the other half of an operation that something else finishes: a C callback, a
//! driver thread, another loop. It is `Send`; completing it from any thread runs the handler on the
//! loop; dropping it unfinished completes the operation with an error instead of leaving it hanging.

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::task::Poll;
use std::time::Duration;

use crate::LocalHandle;
use crate::driver::Token;
use crate::op::{Cx, Interest, Op, Operation, sealed};
use crate::service::shared::Shared;
use crate::service::source::FdSlot;

/// The default bound on blocking threads per loop.
pub const DEFAULT_MAX_BLOCKING_THREADS: usize = 64;

/// How long an idle pool thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

struct CompletionCell<T> {
    value: Mutex<Option<io::Result<T>>>,
}

/// The sending half of a completion: finish it once, from any thread.
///
/// ```
/// let svc = aio::IoService::new()?;
/// let (completer, op) = svc.completion::<u32>();
/// std::thread::spawn(move || completer.complete(7));
/// assert_eq!(svc.block_on(op)?, 7);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Completer<T: Send + 'static> {
    cell: Arc<CompletionCell<T>>,
    shared: Arc<Shared>,
    token: Token,
    done: bool,
}

impl<T: Send + 'static> Completer<T> {
    /// Completes the operation with `value`; its handler runs on the loop thread.
    pub fn complete(mut self, value: T) {
        self.finish(Ok(value));
    }

    /// Completes the operation with an error.
    pub fn fail(mut self, err: io::Error) {
        self.finish(Err(err));
    }

    fn finish(&mut self, result: io::Result<T>) {
        if self.done {
            return;
        }
        self.done = true;
        *self.cell.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        let token = self.token;
        // If the loop is gone, nobody is waiting: the value is simply dropped with the cell.
        let _ = self.shared.post(Box::new(move |svc: &LocalHandle| {
            svc.fire(token);
            false
        }));
    }
}

impl<T: Send + 'static> Drop for Completer<T> {
    fn drop(&mut self) {
        self.finish(Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the completer was dropped without completing the operation",
        )));
    }
}

impl<T: Send + 'static> std::fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completer")
            .field("done", &self.done)
            .finish()
    }
}

/// The operation half of a completion (or of a `spawn_blocking` call).
pub struct Completion<T> {
    cell: Arc<CompletionCell<T>>,
    owner: Owner,
}

/// Removes the completion's place in the loop when the operation ends or is dropped.
struct Owner {
    svc: Option<LocalHandle>,
    token: Token,
}

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(svc) = self.svc.take() {
            drop(svc.remove_source(self.token));
        }
    }
}

impl<T> std::fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion")
            .field("token", &self.owner.token)
            .finish()
    }
}

impl<T> sealed::Sealed for Completion<T> {}

impl<T: 'static> Operation for Completion<T> {
    type Output = io::Result<T>;
    type Value = T;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let value = self
            .cell
            .value
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match value {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

impl LocalHandle {
    /// An operation that something else completes: the `Send` [`Completer`] and the [`Op`] to wait
    /// on. Completing from any thread, or from a foreign callback, runs the handler on this loop; a
    /// completer dropped unfinished completes it with `BrokenPipe`.
    pub fn completion<T: Send + 'static>(&self) -> (Completer<T>, Op<Completion<T>>) {
        let cell = Arc::new(CompletionCell {
            value: Mutex::new(None),
        });
        let (token, owner, err) = match self.add_source(FdSlot::Virtual) {
            Ok(token) => (
                token,
                Owner {
                    svc: Some(self.clone()),
                    token,
                },
                None,
            ),
            Err(e) => (
                Token::NONE,
                Owner {
                    svc: None,
                    token: Token::NONE,
                },
                Some(e),
            ),
        };
        let completer = Completer {
            cell: cell.clone(),
            shared: self.inner.shared.clone(),
            token,
            done: err.is_some(),
        };
        let op = Completion { cell, owner };
        let op = match err {
            None => Op::new(self, token, op),
            Some(e) => Op::failed(self, op, e),
        };
        (completer, op)
    }

    /// Runs `f` on a pool thread and completes with its result on this loop. A panic in `f` becomes
    /// an error (`Other`, "blocking task panicked: ...") for the handler, not a dead loop.
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
        // Shared with the job so that, if no thread can run it, the real error reaches the handler.
        let slot = Arc::new(Mutex::new(Some(completer)));
        let job_slot = slot.clone();
        let job = move || {
            let Some(completer) = job_slot.lock().unwrap_or_else(|e| e.into_inner()).take() else {
                return;
            };
            match catch_unwind(AssertUnwindSafe(f)) {
                Ok(value) => completer.complete(value),
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "non-string panic payload".to_string());
                    completer.fail(io::Error::other(format!(
                        "blocking task panicked: {message}"
                    )));
                }
            }
        };
        let started = if self.is_shut_down() {
            Err(crate::service::shared::gone())
        } else {
            let mut pool = self.inner.blocking.borrow_mut();
            pool.get_or_insert_with(|| BlockingPool::new(self.inner.max_blocking_threads))
                .execute(Box::new(job))
        };
        if let Err(e) = started {
            if let Some(completer) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                completer.fail(e);
            }
        }
        op
    }
}

type Job = Box<dyn FnOnce() + Send>;

struct PoolState {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
    shutdown: bool,
}

struct PoolShared {
    state: Mutex<PoolState>,
    available: Condvar,
    max_threads: usize,
}

/// A bounded pool of threads for blocking work, started on first use.
pub(crate) struct BlockingPool {
    shared: Arc<PoolShared>,
}

impl BlockingPool {
    pub(crate) fn new(max_threads: usize) -> BlockingPool {
        BlockingPool {
            shared: Arc::new(PoolShared {
                state: Mutex::new(PoolState {
                    queue: VecDeque::new(),
                    threads: 0,
                    idle: 0,
                    shutdown: false,
                }),
                available: Condvar::new(),
                max_threads: max_threads.max(1),
            }),
        }
    }

    fn execute(&self, job: Job) -> io::Result<()> {
        let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.shutdown {
            return Err(crate::service::shared::gone());
        }
        state.queue.push_back(job);
        if state.idle > 0 {
            self.shared.available.notify_one();
        } else if state.threads < self.shared.max_threads {
            let shared = self.shared.clone();
            let spawned = std::thread::Builder::new()
                .name("aio-blocking".into())
                .spawn(move || worker(shared));
            match spawned {
                Ok(_) => state.threads += 1,
                // No thread now: the job waits for a running one, or fails if there is none.
                Err(e) if state.threads == 0 => {
                    drop(state.queue.pop_back());
                    return Err(e);
                }
                Err(_) => {}
            }
        }
        Ok(())
    }
}

impl Drop for BlockingPool {
    fn drop(&mut self) {
        let jobs = {
            let mut state = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
            state.shutdown = true;
            std::mem::take(&mut state.queue)
        };
        self.shared.available.notify_all();
        // Jobs not started are dropped here: their completers report to a loop that is gone.
        drop(jobs);
    }
}

fn worker(shared: Arc<PoolShared>) {
    let mut state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            job();
            state = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            continue;
        }
        if state.shutdown {
            break;
        }
        state.idle += 1;
        let (next, timeout) = shared
            .available
            .wait_timeout(state, IDLE_EXIT)
            .unwrap_or_else(|e| e.into_inner());
        state = next;
        state.idle -= 1;
        if timeout.timed_out() && state.queue.is_empty() {
            break;
        }
    }
    state.threads -= 1;
}

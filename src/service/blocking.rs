//! The blocking pool of a loop: threads for work that must not run on the loop
//! (`LocalHandle::spawn_blocking`), each result completing an operation of the loop.
//!
//! The pool is per loop, bounded, and started lazily: no thread exists until the first job, so a
//! process that never uses it can fork freely, and a forked child builds its own loop and pool. Idle
//! threads exit after a while.

use std::collections::VecDeque;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use crate::op::completion::Completer;

/// The default bound on blocking threads per loop.
pub const DEFAULT_MAX_BLOCKING_THREADS: usize = 64;

/// How long an idle pool thread waits for work before it exits.
const IDLE_EXIT: Duration = Duration::from_secs(10);

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
    /// Runs `f` on a pool thread; its value, or its panic as an error (`Other`, "blocking task
    /// panicked: ..."), completes `completer`. If no thread can run it, the completer fails with
    /// the reason.
    pub(crate) fn run_completing<T, F>(&self, f: F, completer: Completer<T>)
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
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
                    let message = crate::error::panic_message(&*panic);
                    completer.fail(io::Error::other(format!(
                        "blocking task panicked: {message}"
                    )));
                }
            }
        };
        if let Err(e) = self.execute(Box::new(job)) {
            if let Some(completer) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
                completer.fail(e);
            }
        }
    }

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
            return Err(crate::reactor::remote::gone());
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

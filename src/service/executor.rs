//! The local executor: futures spawned on a loop and polled on its thread.
//!
//! Tasks are allocated and woken through `async-task`, so a `Waker` may travel to other threads (a
//! wake from there goes through the loop's eventfd) while the futures themselves stay `!Send`. The loop
//! keeps every live task in a table, so that dropping the `IoService` drops every unfinished future on
//! the loop's thread.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use async_task::{Runnable, Task};
use slab::Slab;

use super::LocalHandle;
use super::shared::Shared;

#[derive(Default)]
pub(crate) struct TaskTable {
    tasks: Slab<TaskEntry>,
}

struct TaskEntry {
    task: Task<(), usize>,
    /// Counted as work for `run_until_done` (not spawned as background).
    counted: bool,
}

/// Why a spawned task produced no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The future panicked while being polled (the panic itself passed out of `run()`).
    Panicked,
    /// The task was aborted, or the `IoService` was dropped before it finished.
    Cancelled,
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinError::Panicked => "the task panicked",
            JoinError::Cancelled => "the task was cancelled",
        })
    }
}

impl std::error::Error for JoinError {}

impl From<JoinError> for std::io::Error {
    fn from(e: JoinError) -> std::io::Error {
        std::io::Error::other(e)
    }
}

enum JoinSlot<T> {
    Running(Option<Waker>),
    Finished(Result<T, JoinError>),
    Taken,
}

struct JoinState<T> {
    slot: RefCell<JoinSlot<T>>,
}

impl<T> JoinState<T> {
    fn finish(&self, result: Result<T, JoinError>) {
        let previous = std::mem::replace(&mut *self.slot.borrow_mut(), JoinSlot::Finished(result));
        if let JoinSlot::Running(Some(waker)) = previous {
            waker.wake();
        }
    }
}

/// Fills the join slot with an error if the task ends without a value (panic or cancellation).
struct FinishGuard<T> {
    state: Rc<JoinState<T>>,
}

impl<T> Drop for FinishGuard<T> {
    fn drop(&mut self) {
        if matches!(*self.state.slot.borrow(), JoinSlot::Running(_)) {
            let err = if std::thread::panicking() {
                JoinError::Panicked
            } else {
                JoinError::Cancelled
            };
            self.state.finish(Err(err));
        }
    }
}

/// The handle of a spawned task: await it for the task's output. Dropping it detaches the task, which
/// keeps running; [`abort`](JoinHandle::abort) cancels it.
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
    svc: LocalHandle,
    key: usize,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped now (or, if it is running, when it next yields), and
    /// the handle resolves to [`JoinError::Cancelled`].
    pub fn abort(&self) {
        // A finished task's key may already belong to another task.
        if !self.is_finished() {
            drop(self.svc.remove_task(self.key));
        }
    }

    /// Whether the task has finished (with a value or not).
    pub fn is_finished(&self) -> bool {
        matches!(
            *self.state.slot.borrow(),
            JoinSlot::Finished(_) | JoinSlot::Taken
        )
    }
}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.state.slot.borrow_mut();
        match std::mem::replace(&mut *slot, JoinSlot::Taken) {
            JoinSlot::Finished(result) => Poll::Ready(result),
            JoinSlot::Running(_) => {
                *slot = JoinSlot::Running(Some(cx.waker().clone()));
                Poll::Pending
            }
            JoinSlot::Taken => panic!("aio::JoinHandle polled after it completed"),
        }
    }
}

impl<T> std::fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl LocalHandle {
    /// Spawns `future` on this loop: it is polled on the loop's thread, first after this call returns.
    ///
    /// ```
    /// let svc = aio::IoService::new()?;
    /// let task = svc.spawn(async { 6 * 7 });
    /// assert_eq!(svc.block_on(task), Ok(42));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.spawn_task(future, true)
    }

    /// Spawns `future` as background work: it runs like any task, but does not keep
    /// [`run_until_done`](crate::IoService::run_until_done) running (a signal watcher, a periodic
    /// housekeeping task).
    pub fn spawn_background<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        self.spawn_task(future, false)
    }

    fn spawn_task<F>(&self, future: F, counted: bool) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let state = Rc::new(JoinState {
            slot: RefCell::new(JoinSlot::Running(None)),
        });
        let guard = FinishGuard {
            state: state.clone(),
        };
        let wrapped = async move {
            let guard = guard;
            let out = future.await;
            guard.state.finish(Ok(out));
            FINISHED.set(true);
        };
        let mut tasks = self.inner.tasks.borrow_mut();
        let entry = tasks.tasks.vacant_entry();
        let key = entry.key();
        let shared = self.inner.shared.clone();
        let (runnable, task) = async_task::Builder::new().metadata(key).spawn_local(
            move |_| wrapped,
            move |r| super::shared::schedule(&shared, r),
        );
        if self.is_shut_down() {
            drop(tasks);
            drop(task); // cancelled at once: the handle reports Cancelled
            drop(runnable);
        } else {
            entry.insert(TaskEntry { task, counted });
            drop(tasks);
            if counted {
                self.add_work();
            }
            runnable.schedule();
        }
        JoinHandle {
            state,
            svc: self.clone(),
            key,
        }
    }

    pub(crate) fn run_task(&self, runnable: Runnable<usize>) {
        let _cleanup = ReapOnExit {
            svc: self,
            key: *runnable.metadata(),
        };
        // A panic unwinds out of `run` (and out of the loop's `run()`); the guard still reaps the task.
        runnable.run();
    }

    /// Runs the loop on this thread until `future` completes, and returns its output. `stop()` does
    /// not interrupt it; handlers and spawned tasks run meanwhile as under `run()`.
    ///
    /// # Panics
    /// If called from inside a handler or task of the same loop (it would have to run the loop
    /// re-entrantly), or if the loop's wait fails with a kernel error.
    ///
    /// ```
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let (a, b) = StreamSocket::pair(&svc)?;
    /// let (res, _) = svc.block_on(a.write_all(b"hi".to_vec()));
    /// res?;
    /// let (res, buf) = svc.block_on(b.read_exact(vec![0; 2]));
    /// assert_eq!((res?, &buf[..]), ((), &b"hi"[..]));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn block_on<F: Future>(&self, future: F) -> F::Output {
        let _running = match self.enter() {
            Ok(g) => g,
            Err(e) => panic!("aio::block_on: {e}"),
        };
        let flag = Arc::new(BlockOnWaker {
            woken: AtomicBool::new(true),
            shared: self.inner.shared.clone(),
        });
        let waker = Waker::from(flag.clone());
        let mut cx = Context::from_waker(&waker);
        let mut future = pin!(future);
        loop {
            if flag.woken.swap(false, Ordering::AcqRel) {
                if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                    return out;
                }
            }
            self.run_ready(usize::MAX, false);
            let block = !flag.woken.load(Ordering::Acquire);
            if let Err(e) = self.wait_and_dispatch(block, true) {
                panic!("aio::block_on: waiting for events failed: {e}");
            }
        }
    }
}

/// Removes a finished (or panicked) task from the table after it ran.
struct ReapOnExit<'a> {
    svc: &'a LocalHandle,
    key: usize,
}

thread_local! {
    /// Set by a task's future as it completes, read (and cleared) by the `ReapOnExit` of the run that
    /// completed it: a run that neither completed its future nor panicked leaves the table alone.
    static FINISHED: Cell<bool> = const { Cell::new(false) };
}

impl Drop for ReapOnExit<'_> {
    fn drop(&mut self) {
        // An aborted task was taken out of the table by `abort` already.
        if !FINISHED.replace(false) && !std::thread::panicking() {
            return;
        }
        let finished = self
            .svc
            .inner
            .tasks
            .borrow()
            .tasks
            .get(self.key)
            .is_some_and(|e| e.task.is_finished());
        if finished {
            drop(self.svc.remove_task(self.key));
        }
    }
}

impl LocalHandle {
    /// Takes a task out of the table (finished, panicked or aborted), settling its work count. The
    /// caller drops it after the table's borrow is released.
    fn remove_task(&self, key: usize) -> Option<Task<(), usize>> {
        let entry = self.inner.tasks.borrow_mut().tasks.try_remove(key)?;
        if entry.counted {
            self.finish_work();
        }
        Some(entry.task)
    }
}

struct BlockOnWaker {
    woken: AtomicBool,
    shared: Arc<Shared>,
}

impl Wake for BlockOnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.shared.notify_if_remote();
    }
}

pub(crate) fn shutdown_tasks(svc: &LocalHandle) {
    // Cancelling an idle task schedules it so that its future is dropped where it was spawned: drop
    // the task handles, then the runnables they queued, here, until nothing is left.
    loop {
        let tasks: Vec<Task<(), usize>> = svc
            .inner
            .tasks
            .borrow_mut()
            .tasks
            .drain()
            .map(|e| e.task)
            .collect();
        let mut dropped = !tasks.is_empty();
        drop(tasks);
        while let Ok(runnable) = svc.inner.shared.runnables.pop() {
            dropped = true;
            drop(runnable);
        }
        if !dropped {
            break;
        }
    }
    svc.inner.shared.runnables.close();
}

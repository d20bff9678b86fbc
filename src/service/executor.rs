//! The local executor: futures spawned on a loop and polled on its thread.
//!
//! A task's `Waker` may travel to other threads (a wake from there goes through the loop's eventfd)
//! while the futures themselves stay `!Send`, in the loop's task table (see `task`), so that dropping
//! the `IoService` drops every unfinished future on the loop's thread.

use std::cell::RefCell;
use std::future::Future;
use std::pin::{Pin, pin};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use super::LocalHandle;
use crate::reactor::remote::Remote;
use crate::reactor::wake::{TaskRef, TaskWake};

/// Why a spawned task produced no value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinError {
    /// The future panicked while being polled. For a task spawned on the loop's own thread the panic
    /// itself passed out of `run()`; one spawned from another thread
    /// ([`Handle::spawn`](crate::Handle::spawn)) had its panic caught, and the loop ran on.
    Panicked,
    /// The task was aborted, or the `IoService` was dropped before it finished (for a task spawned
    /// from another thread: before it finished or even reached the loop).
    Cancelled,
    /// [`RemoteJoinHandle::join`](crate::RemoteJoinHandle::join) was called on the thread of the
    /// loop that runs the task, before it finished: that loop cannot run while its thread waits, so
    /// the wait would never end. The task itself runs on, detached.
    WouldDeadlock,
}

impl std::fmt::Display for JoinError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JoinError::Panicked => "the task panicked",
            JoinError::Cancelled => {
                "the task was cancelled (aborted, or its IoService was dropped before it finished)"
            }
            JoinError::WouldDeadlock => {
                "joining the task would deadlock: it runs on this thread's own loop, which cannot run while the thread waits"
            }
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
    Running(Option<TaskWake>),
    Finished(Result<T, JoinError>),
    Taken,
}

struct JoinState<T> {
    slot: RefCell<JoinSlot<T>>,
}

impl<T> JoinState<T> {
    fn finish(&self, svc: &LocalHandle, result: Result<T, JoinError>) {
        let previous = std::mem::replace(&mut *self.slot.borrow_mut(), JoinSlot::Finished(result));
        if let JoinSlot::Running(Some(wake)) = previous {
            svc.reactor().wake_task(wake);
        }
    }
}

/// Fills the join slot with an error if the task ends without a value (panic or cancellation).
struct FinishGuard<T> {
    state: Rc<JoinState<T>>,
    svc: LocalHandle,
}

impl<T> Drop for FinishGuard<T> {
    fn drop(&mut self) {
        if matches!(*self.state.slot.borrow(), JoinSlot::Running(_)) {
            let err = if std::thread::panicking() {
                JoinError::Panicked
            } else {
                JoinError::Cancelled
            };
            self.state.finish(&self.svc, Err(err));
        }
    }
}

pin_project_lite::pin_project! {
    /// A spawned future with the guard that reports its end to the task's handle. A struct rather
    /// than an `async` block awaiting the future: the block's state would keep room for the future
    /// twice (as captured, and as awaited), doubling every task's allocation.
    struct Spawned<F: Future> {
        #[pin]
        future: F,
        guard: FinishGuard<F::Output>,
    }
}

impl<F: Future> Future for Spawned<F> {
    type Output = ();

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        match this.future.poll(cx) {
            Poll::Ready(out) => {
                this.guard.state.finish(&this.guard.svc, Ok(out));
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// The handle of a spawned task: await it for the task's output. Dropping it detaches the task, which
/// keeps running; [`abort`](JoinHandle::abort) cancels it.
pub struct JoinHandle<T> {
    state: Rc<JoinState<T>>,
    svc: LocalHandle,
    /// `None` for a task cancelled as it was spawned (the loop was shut down).
    task: Option<TaskRef>,
}

impl<T> JoinHandle<T> {
    /// Cancels the task: its future is dropped now (or, if it is running, when it next yields), and
    /// the handle resolves to [`JoinError::Cancelled`].
    pub fn abort(&self) {
        if let Some(task) = self.task {
            drop(self.svc.remove_task(task));
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
                *slot = JoinSlot::Running(Some(self.svc.reactor().task_wake(cx.waker())));
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
            svc: self.clone(),
        };
        let wrapped = Spawned { future, guard };
        let reactor = self.reactor();
        let task = if reactor.is_shut_down() {
            drop(wrapped); // cancelled at once: the handle reports Cancelled
            None
        } else {
            let task =
                self.inner
                    .tasks
                    .borrow_mut()
                    .insert(reactor.remote(), Box::pin(wrapped), counted);
            if counted {
                reactor.add_work();
            }
            // Its first poll: queued like any wake on the loop's own thread (no eventfd write).
            reactor.wake_task(TaskWake::Local(task));
            Some(task)
        };
        JoinHandle {
            state,
            svc: self.clone(),
            task,
        }
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
            remote: self.reactor().remote().clone(),
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

struct BlockOnWaker {
    woken: AtomicBool,
    remote: Arc<Remote>,
}

impl Wake for BlockOnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.remote.notify_if_remote();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spawned_future_is_held_once() {
        let future = async {
            let state = [7u8; 512];
            std::future::pending::<()>().await;
            state.len()
        };
        let size = size_of_val(&future);
        assert!(size >= 512);
        let svc = crate::IoService::new().unwrap();
        let guard = FinishGuard {
            state: Rc::new(JoinState {
                slot: RefCell::new(JoinSlot::Running(None)),
            }),
            svc: svc.local(),
        };
        // The future (padded to the guard's alignment) and the guard's two pointers, not the
        // future twice.
        let spawned = Spawned { future, guard };
        let limit = size.next_multiple_of(8) + 16;
        assert!(
            size_of_val(&spawned) <= limit,
            "{} > {limit}",
            size_of_val(&spawned)
        );
    }
}

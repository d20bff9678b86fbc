//! Tasks spawned on a loop from other threads ([`Handle::spawn`], [`Handle::spawn_with`]) and their
//! [`RemoteJoinHandle`], which any thread may wait on or any executor await.
//!
//! The spawn travels the way [`Handle::post`] does: a job in the loop's cross-thread queue, which the
//! loop turns into a task of its local executor. The result comes back through a slot behind a
//! mutex, with a condition variable for threads that block in [`join`](RemoteJoinHandle::join) and
//! the `Waker` of the last poll for those that await.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};

use super::executor::JoinError;
use super::{Handle, LocalHandle};
use crate::reactor::Reactor;
use crate::reactor::remote::Remote;

enum Slot<T> {
    /// With the waker of the last poll, if it was polled.
    Running(Option<Waker>),
    Finished(Result<T, JoinError>),
    /// The result was handed out.
    Taken,
}

/// What a remote task and its handle share.
struct Shared<T> {
    slot: Mutex<Slot<T>>,
    finished: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        // Nothing that holds the lock can panic and leave the slot half-changed.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores the result (only the first one counts) and wakes whoever waits for it.
    fn finish(&self, result: Result<T, JoinError>) {
        let waker = {
            let mut slot = self.lock();
            let Slot::Running(waker) = &mut *slot else {
                return;
            };
            let waker = waker.take();
            *slot = Slot::Finished(result);
            waker
        };
        self.finished.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// Reports [`JoinError::Cancelled`] when dropped before the task finished: its job was dropped
/// unrun (the loop was gone, or went before taking it) or its task was dropped with the loop.
struct Finisher<T>(Arc<Shared<T>>);

impl<T> Drop for Finisher<T> {
    fn drop(&mut self) {
        self.0.finish(Err(JoinError::Cancelled));
    }
}

pin_project_lite::pin_project! {
    /// The future of a remote task on its loop: reports its output, or its panic, to the handle.
    struct RemoteTask<F: Future> {
        #[pin]
        future: F,
        finisher: Finisher<F::Output>,
    }
}

impl<F: Future> Future for RemoteTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let future = this.future;
        // A panic is the spawning thread's to see, through the handle: the loop runs on. The future
        // is not polled again after it (the task ends here and is dropped).
        match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                this.finisher.0.finish(Ok(out));
                Poll::Ready(())
            }
            Err(_panic) => {
                this.finisher.0.finish(Err(JoinError::Panicked));
                Poll::Ready(())
            }
        }
    }
}

impl Handle {
    /// Runs `future` on this handle's loop, from any thread: it becomes a task of that loop, polled on
    /// the loop's thread once the loop takes the spawn from its queue (as it takes a
    /// [`post`](Handle::post)). The [`RemoteJoinHandle`] gives its output to a thread that
    /// [`join`](RemoteJoinHandle::join)s or to a task, on any loop or executor, that awaits it.
    ///
    /// A panic in the task is caught and reported as [`JoinError::Panicked`]; it does not pass out of
    /// the loop's `run()` (it is the spawning thread's to handle, not the loop's). If the loop is
    /// dropped before the task finishes, or was already, the handle reports
    /// [`JoinError::Cancelled`]. Spawned tasks count as work for
    /// [`run_until_done`](crate::IoService::run_until_done) once they have reached the loop. A
    /// stopped loop runs nothing until it runs again; the task waits.
    ///
    /// Most `aio` futures hold the loop's `Rc`s and are not `Send`: build those on the loop with
    /// [`spawn_with`](Handle::spawn_with).
    ///
    /// ```
    /// let svc = aio::IoService::new()?;
    /// let handle = svc.handle();
    /// let worker = std::thread::spawn(move || {
    ///     let task = handle.spawn(async { 6 * 7 });
    ///     let answer = task.join(); // blocks this thread until the loop has run it
    ///     handle.stop();
    ///     answer
    /// });
    /// svc.run()?;
    /// assert_eq!(worker.join().unwrap(), Ok(42));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn<F>(&self, future: F) -> RemoteJoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.spawn_with(move |_| future)
    }

    /// Runs the future that `make` builds, on this handle's loop: `make` runs on the loop's thread
    /// with its [`LocalHandle`], so the future need not be `Send` (a socket's read, anything holding
    /// an `Rc`); only `make` and the output travel between threads. Otherwise as
    /// [`spawn`](Handle::spawn); a panic in `make` is reported like one in the future.
    ///
    /// ```
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let handle = svc.handle();
    /// let worker = std::thread::spawn(move || {
    ///     let task = handle.spawn_with(|svc| {
    ///         let (a, b) = StreamSocket::pair(svc).expect("pair");
    ///         async move {
    ///             let (res, _) = a.write_all(b"over the loop".to_vec()).await;
    ///             res?;
    ///             let (res, buf) = b.read_exact(vec![0u8; 13]).await;
    ///             res.map(|()| buf)
    ///         }
    ///     });
    ///     let bytes = task.join();
    ///     handle.stop();
    ///     bytes
    /// });
    /// svc.run()?;
    /// assert_eq!(worker.join().unwrap().unwrap()?, b"over the loop");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn spawn_with<M, F>(&self, make: M) -> RemoteJoinHandle<F::Output>
    where
        M: FnOnce(&LocalHandle) -> F + Send + 'static,
        F: Future + 'static,
        F::Output: Send + 'static,
    {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot::Running(None)),
            finished: Condvar::new(),
        });
        let finisher = Finisher(shared.clone());
        // Weak: the job waits in the loop's own queue, which must not keep the loop alive.
        let target: Weak<Remote> = Arc::downgrade(&self.remote);
        let job = move |_: &Reactor| {
            // A job runs only from its own loop's run, which makes that loop this thread's current
            // one; should it ever be another, the finisher drops and reports Cancelled.
            let Some(svc) = LocalHandle::current()
                .filter(|svc| std::ptr::eq(Arc::as_ptr(svc.reactor().remote()), target.as_ptr()))
            else {
                return false;
            };
            match catch_unwind(AssertUnwindSafe(|| make(&svc))) {
                Ok(future) => drop(svc.spawn(RemoteTask { future, finisher })),
                Err(_panic) => finisher.0.finish(Err(JoinError::Panicked)),
            }
            // Bookkeeping, not a handler: the task's polls are what `run_one` counts.
            false
        };
        // Refused only when the loop is gone: the job, dropped unrun, reported Cancelled.
        let _ = self.remote.post(Box::new(job));
        RemoteJoinHandle {
            shared,
            remote: self.remote.clone(),
        }
    }
}

/// The handle of a task spawned from another thread ([`Handle::spawn`], [`Handle::spawn_with`]):
/// `Send`, so it can go anywhere; [`join`](RemoteJoinHandle::join) blocks a thread until the task
/// has finished, and `.await` waits for it from a task of any loop or any other executor. Dropping
/// it detaches the task, which runs on.
///
/// ```
/// use aio::IoService;
/// // A task on one loop, awaited from a task of another (here on the same thread).
/// let worker_loop = IoService::new()?;
/// let task = worker_loop.handle().spawn(async { "done" });
/// let other = IoService::new()?;
/// let waiting = other.spawn(task);
/// worker_loop.poll()?; // runs the task
/// assert_eq!(other.block_on(waiting), Ok(Ok("done")));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct RemoteJoinHandle<T> {
    shared: Arc<Shared<T>>,
    /// The loop that runs the task: joining on its thread would deadlock.
    remote: Arc<Remote>,
}

impl<T> RemoteJoinHandle<T> {
    /// Blocks this thread until the task has finished, and returns its output:
    /// [`JoinError::Panicked`] if it panicked, [`JoinError::Cancelled`] if its loop was dropped
    /// first. Called on the thread of the loop that runs the task, while it has not finished, it
    /// returns [`JoinError::WouldDeadlock`] at once instead of waiting forever (that loop can only
    /// run on this thread, whether it is running now or not); the task runs on, detached.
    ///
    /// Blocking in a handler or task of another loop stops that loop meanwhile; from a task, prefer
    /// `.await`.
    ///
    /// # Panics
    /// If the handle was already awaited to completion.
    pub fn join(self) -> Result<T, JoinError> {
        let mut slot = self.shared.lock();
        loop {
            match std::mem::replace(&mut *slot, Slot::Taken) {
                Slot::Finished(result) => return result,
                Slot::Taken => panic!("aio::RemoteJoinHandle joined after it completed"),
                running @ Slot::Running(_) => {
                    *slot = running;
                    if self.remote.is_owner_thread() {
                        return Err(JoinError::WouldDeadlock);
                    }
                    slot = self
                        .shared
                        .finished
                        .wait(slot)
                        .unwrap_or_else(|e| e.into_inner());
                }
            }
        }
    }

    /// Whether the task has finished (with a value or not): a `join` now would not block.
    pub fn is_finished(&self) -> bool {
        !matches!(*self.shared.lock(), Slot::Running(_))
    }
}

impl<T> Future for RemoteJoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared.lock();
        match std::mem::replace(&mut *slot, Slot::Taken) {
            Slot::Finished(result) => Poll::Ready(result),
            Slot::Running(waker) => {
                let waker = match waker {
                    Some(waker) if waker.will_wake(cx.waker()) => waker,
                    _ => cx.waker().clone(),
                };
                *slot = Slot::Running(Some(waker));
                Poll::Pending
            }
            Slot::Taken => panic!("aio::RemoteJoinHandle polled after it completed"),
        }
    }
}

impl<T> std::fmt::Debug for RemoteJoinHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteJoinHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

//! [`Handle`]: a loop as other threads see it.

use std::io;
use std::sync::Arc;

use crate::reactor::Reactor;
use crate::reactor::remote::Remote;

/// A `Send + Sync` handle to a loop, for other threads: post closures to it, spawn tasks on it
/// ([`spawn`](Handle::spawn), [`spawn_with`](Handle::spawn_with)) and stop it.
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
    pub(crate) remote: Arc<Remote>,
}

impl Handle {
    /// Queues `f` to run on the loop's thread, after the current handler and never inside this call.
    /// Closures posted from one thread run in the order they were posted.
    ///
    /// # Errors
    /// `BrokenPipe` if the `IoService` has been dropped; `f` is dropped unrun.
    pub fn post(&self, f: impl FnOnce() + Send + 'static) -> io::Result<()> {
        self.remote.post(Box::new(move |_: &Reactor| {
            f();
            true
        }))
    }

    /// Makes `run()` return after the handler now running (if any); later `run()` calls return at once
    /// until [`IoService::restart`](crate::IoService::restart).
    pub fn stop(&self) {
        self.remote.stop();
    }

    /// Whether `other` is a handle of the same loop.
    pub fn same_loop(&self, other: &Handle) -> bool {
        Arc::ptr_eq(&self.remote, &other.remote)
    }

    /// Whether `stop()` was called and not yet undone by `restart()`.
    pub fn is_stopped(&self) -> bool {
        self.remote.is_stopped()
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

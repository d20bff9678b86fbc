//! Knowing whether this process is a forked child of the one that built a loop.
//!
//! A child inherits its parent's loops with the kernel objects behind them: the epoll instance (or
//! io_uring) is the same object in both processes, so a child that closes an inherited socket, or
//! drops an inherited `IoService`, and deregisters its fds there removes the parent's registrations,
//! and the parent stops hearing about them. A loop therefore remembers the fork generation it was
//! built in, and a child leaves the shared backend alone when it closes what it inherited (its own
//! copies of the fds still close). The generation is counted by a `pthread_atfork` child handler, so
//! that checking it costs an atomic load, not a `getpid` syscall per close.

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many times this process's ancestry has forked since the counter was installed (in a child:
/// its parent's count plus one; the counter is copied with the memory).
static FORKS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();

extern "C" fn forked_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// The current fork generation, installing the counter on first use (when the first loop is built).
pub(crate) fn generation() -> u64 {
    INSTALL.call_once(|| {
        // SAFETY: `pthread_atfork` only records the handler. The handler runs in the child right
        // after `fork`, where only async-signal-safe work is allowed: one atomic add is. If
        // registration fails (ENOMEM), forks simply go uncounted, as before this check existed.
        let _ = unsafe { libc::pthread_atfork(None, None, Some(forked_child)) };
    });
    FORKS.load(Ordering::Relaxed)
}

/// Whether this process is a forked child of the one whose generation was `built_in`.
pub(crate) fn is_forked_child(built_in: u64) -> bool {
    FORKS.load(Ordering::Relaxed) != built_in
}

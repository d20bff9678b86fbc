//! Per-loop statistics of a [`LoopPool`](super::LoopPool): enough to see an imbalance.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::Handle;

/// What one loop of a pool has done so far (a snapshot: [`PoolHandle::stats`](super::PoolHandle::stats)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LoopStats {
    /// The loop's index in the pool.
    pub index: usize,
    /// Connections the pool's accepting gave to this loop (by its own acceptor or handed over).
    pub accepted: u64,
    /// Connections of this loop open now: accepted or sent to it
    /// ([`send_socket`](super::PoolHandle::send_socket)) and not yet closed.
    pub open: u64,
    /// Handlers the loop has run and tasks it has polled: its completed operations, posted closures
    /// and task wake-ups.
    pub handled: u64,
}

/// The counters a loop's connections update (from the loop's thread) and anyone reads.
#[derive(Debug, Default)]
pub(super) struct LoopCounters {
    accepted: AtomicU64,
    open: AtomicU64,
}

impl LoopCounters {
    /// A connection arrived on this loop (`accepted`: through the pool's accepting).
    pub(super) fn opened(&self, accepted: bool) {
        if accepted {
            self.accepted.fetch_add(1, Ordering::Relaxed);
        }
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// One of this loop's connections closed.
    pub(super) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now: for the least-loaded choice.
    pub(super) fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    pub(super) fn snapshot(&self, index: usize, handle: &Handle) -> LoopStats {
        LoopStats {
            index,
            accepted: self.accepted.load(Ordering::Relaxed),
            open: self.open(),
            handled: handle.remote.handled(),
        }
    }
}

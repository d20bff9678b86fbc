//! The loop's clock: a min-heap of instants at which a source is to be treated as ready.
//!
//! Two kinds of entry: a timer's deadline (its source becomes readable), and a back-off (a direction
//! muted after `EMFILE` comes back). Cancelling or re-arming a timer leaves its old entry in the heap
//! (O(1)); an entry is checked against the source's current deadline when it comes due, and the heap
//! is compacted when stale entries could outnumber live ones.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

use crate::driver::Token;
use crate::op::Interest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// A timer's deadline: valid only while its source is still armed for this instant.
    Timer,
    /// The end of a back-off on one direction.
    Backoff(Interest),
}

#[derive(Default)]
pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, u64, Due)>>,
}

impl TimerQueue {
    pub(crate) fn push(&mut self, at: Instant, token: Token, due: Due) {
        self.heap.push(Reverse((at, token.0, due)));
    }

    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The earliest entry due at `now`, removed.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(Instant, Token, Due)> {
        match self.heap.peek() {
            Some(Reverse((at, _, _))) if *at <= now => self
                .heap
                .pop()
                .map(|Reverse((at, t, due))| (at, Token(t), due)),
            _ => None,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Keeps only the entries `live` approves (O(n)).
    pub(crate) fn retain(&mut self, mut live: impl FnMut(Instant, Token, Due) -> bool) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        self.heap = entries
            .into_iter()
            .filter(|Reverse((at, t, due))| live(*at, Token(*t), *due))
            .collect();
    }

    pub(crate) fn clear(&mut self) {
        self.heap.clear();
    }
}

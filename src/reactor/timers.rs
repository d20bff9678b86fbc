//! The loop's clock: a min-heap of instants at which a source is to be treated as ready.
//!
//! Two kinds of entry: a timer's deadline (its source becomes readable), and a back-off (a direction
//! muted after `EMFILE` comes back). Cancelling or re-arming a timer leaves its old entry in the heap
//! (O(1)); an entry is checked against the source's current deadline when it comes due, and the heap
//! is compacted when stale entries could outnumber live ones.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::{Reactor, Token};
use crate::driver::Driver;
use crate::driver::Interest;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// A timer's deadline: valid only while its source is still armed for this instant.
    Timer,
    /// The end of a back-off on one direction.
    Backoff(Interest),
    /// An operation's deadline: the callback operation with this number on this direction is
    /// cancelled with `TimedOut` if it is still pending (see `cancel`).
    #[allow(dead_code)] // used by `Op::timeout`, not on this branch yet
    Deadline(Interest, u32),
}

/// Below this many entries the heap is never compacted.
const COMPACT_MIN: usize = 1024;

pub(crate) struct TimerQueue {
    heap: BinaryHeap<Reverse<(Instant, u64, Due)>>,
    /// The heap's size that triggers the next compaction: twice what survived the last one.
    compact_at: usize,
}

impl Default for TimerQueue {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            compact_at: COMPACT_MIN,
        }
    }
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

    /// Whether stale entries may have piled up enough to be worth a compaction.
    fn wants_compaction(&self) -> bool {
        self.heap.len() > self.compact_at
    }

    /// Keeps only the entries `live` approves (O(n)); the next compaction comes when the heap has
    /// doubled again, so that compacting costs O(1) per entry pushed.
    pub(crate) fn retain(&mut self, mut live: impl FnMut(Instant, Token, Due) -> bool) {
        let entries = std::mem::take(&mut self.heap).into_vec();
        self.heap = entries
            .into_iter()
            .filter(|Reverse((at, t, due))| live(*at, Token(*t), *due))
            .collect();
        self.compact_at = (2 * self.heap.len()).max(COMPACT_MIN);
    }

    pub(crate) fn clear(&mut self) {
        self.heap.clear();
    }
}

impl Reactor {
    /// Arms the timer source `token` for `deadline` (replacing any earlier deadline).
    pub(crate) fn arm_timer(&self, token: Token, deadline: Instant) {
        {
            let mut sources = self.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                return;
            };
            source.deadline = Some(deadline);
            source.read.ready = false;
        }
        self.push_timer(deadline, token, Due::Timer);
    }

    /// Adds an entry to the heap. Re-armed and cancelled timers, and the deadlines of operations
    /// that finished in time, leave entries behind: compacted away before they outgrow the live set.
    pub(crate) fn push_timer(&self, at: Instant, token: Token, due: Due) {
        let mut timers = self.timers.borrow_mut();
        timers.push(at, token, due);
        if timers.wants_compaction() {
            let sources = self.sources.borrow();
            timers.retain(|at, token, due| match (due, sources.get(token)) {
                (_, None) => false,
                (Due::Timer, Some(s)) => s.deadline == Some(at),
                (Due::Backoff(_), Some(_)) => true,
                (Due::Deadline(interest, id), Some(_)) => self.op_pending(token, interest, id),
            });
        }
    }

    /// Disarms the timer source `token`: its pending heap entry will be ignored.
    pub(crate) fn disarm_timer(&self, token: Token) {
        if let Some(source) = self.sources.borrow_mut().get_mut(token) {
            source.deadline = None;
            source.read.ready = false;
        }
    }

    /// Makes a virtual source (timer, completion) ready: its waiting operations try again.
    pub(crate) fn fire(&self, token: Token) {
        self.make_ready(token, Interest::Read);
    }

    /// Arranges for `token`'s `interest` direction to be treated as ready after `delay`, and ignores
    /// its readiness events until then (a level-triggered backend would otherwise report a listener
    /// with a queued connection as ready at once, and an acceptor out of fds would spin).
    pub(crate) fn wake_after(&self, token: Token, interest: Interest, delay: Duration) {
        let at = Instant::now() + delay;
        if let Some(source) = self.sources.borrow_mut().get_mut(token) {
            source.set_backoff_until(interest, Some(at));
            self.mute(source, interest, true);
        }
        self.push_timer(at, token, Due::Backoff(interest));
    }

    /// When the earliest timer or back-off is due.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.timers.borrow().next_deadline()
    }

    /// Fires every timer and ends every back-off that is due.
    pub(crate) fn fire_timers(&self) {
        let now = Instant::now();
        loop {
            let due = self.timers.borrow_mut().pop_due(now);
            match due {
                Some((at, token, Due::Timer)) => {
                    let armed = self
                        .sources
                        .borrow()
                        .get(token)
                        .is_some_and(|s| s.deadline == Some(at));
                    if armed {
                        self.fire(token);
                    }
                }
                Some((at, token, Due::Backoff(interest))) => {
                    // The back-off's end (unless another began since): unmuted before its line is
                    // served, which may leave an operation waiting for the next event.
                    if let Some(source) = self.sources.borrow_mut().get_mut(token) {
                        if source.backoff_until(interest) == Some(at) {
                            source.set_backoff_until(interest, None);
                            self.mute(source, interest, false);
                        }
                    }
                    self.make_ready(token, interest);
                }
                Some((_, token, Due::Deadline(interest, id))) => {
                    self.deadline_passed(token, interest, id);
                }
                None => return,
            }
        }
    }
}

impl Reactor {
    /// Mutes (or unmutes) a direction of `source` in a level-triggered driver during a back-off.
    fn mute(&self, source: &super::Source, interest: Interest, muted: bool) {
        if let (true, Some(fd)) = (self.level_triggered, source.fd()) {
            self.driver.borrow_mut().mute(fd, interest, muted);
        }
    }
}

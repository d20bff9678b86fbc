//! The operations waiting on one direction of a source, in order: a [`Line`] of [`Waiter`]s.
//!
//! Three kinds wait: a future (its waker, or its task's number), a callback operation (its block),
//! and a persistent read, which stays first in line, served in place chunk after chunk, until it
//! ends. Operations on one direction complete in the order they started: only the first in line is
//! tried, and those behind it only once it has finished.

use std::cell::RefMut;
use std::collections::VecDeque;
use std::io;
use std::rc::Rc;

use super::Reactor;
use super::block::OpPtr;
use super::source::Source;
use super::wake::{TaskRef, TaskWake};

/// One operation waiting for a direction to become ready.
pub(crate) enum Waiter {
    /// A future: woken, it tries its syscall again when polled. `id` lets a dropped future withdraw;
    /// `seq` is the loop's count of queued jobs when it started waiting (see
    /// [`Reactor::may_complete_here`]).
    Task { id: u32, seq: u32, wake: TaskWake },
    /// A callback operation: the loop tries it again itself.
    Callback(OpPtr),
    /// A persistent read (`read_each`, `read_stream`): it stays first in line, served in place for
    /// every chunk, until it ends or is cancelled.
    Persistent(Rc<dyn PersistentOp>),
}

/// An operation that stays first in its direction's line while it lasts (`op::read_each`,
/// `op::read_stream`).
pub(crate) trait PersistentOp {
    /// Its direction is ready and it is first in line: reads under the borrow of `source` (from the
    /// lookup that found it), then hands the chunk over right here when `inline` allows (see
    /// [`Reactor::may_complete_here`]), or in a job. Returns the task to poll right here, if the chunk
    /// goes to a task of this loop that may run now.
    fn serve(
        self: Rc<Self>,
        reactor: &Reactor,
        source: RefMut<'_, Source>,
        inline: bool,
    ) -> Option<TaskRef>;
    /// Taken out of its line by `cancel()` or a close: ends with `err`, handed over by a job.
    fn cancel(self: Rc<Self>, reactor: &Reactor, err: io::Error);
    /// A job: hands over what an earlier read or a cancellation left, then reads on if its
    /// direction is ready.
    fn resume(self: Rc<Self>, reactor: &Reactor);
    /// Whether a level-triggered backend should watch its direction now: false while it will read
    /// without an event anyway (and could not use one), so that the loop does not spin on a
    /// readiness nobody takes.
    fn wants_events(&self) -> bool {
        true
    }
}

/// A persistent operation's turn in the ready queue (see [`PersistentOp::resume`]).
pub(crate) struct Resume(pub(crate) Rc<dyn PersistentOp>);

impl super::block::Job for Resume {
    fn run(self, reactor: &Reactor) -> bool {
        self.0.resume(reactor);
        true
    }
}

/// The operations waiting on one direction, in order. A direction rarely has more than one: the
/// first is kept in place (no allocation, no ring-buffer arithmetic on the hot path; an idle
/// connection's pending read lives in its source entry), the others in a list behind it.
#[derive(Default)]
pub(crate) struct Line {
    /// The first waiter; `None` only when the line is empty.
    head: Option<Waiter>,
    /// The others: boxed, so that every source pays one pointer per direction for the rare queue
    /// (a list's own header is four words).
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<Waiter>>>,
}

impl Line {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    #[inline(always)]
    pub(crate) fn push_back(&mut self, waiter: Waiter) {
        if self.head.is_none() {
            // What `replace` hands back is the empty slot: forgotten, so that no drop code for a
            // waiter is emitted (and called) on this path.
            std::mem::forget(self.head.replace(waiter));
        } else {
            self.rest.get_or_insert_default().push_back(waiter);
        }
    }

    /// Whether a persistent operation holds the line (see `op::read_each`): one started now queues
    /// behind it, even on a ready direction, instead of taking the bytes it is reading.
    #[inline(always)]
    pub(crate) fn held_by_persistent(&self) -> bool {
        matches!(self.head, Some(Waiter::Persistent(_)))
    }

    /// Whether the line waits for an event: it has a waiter, and the first is not a persistent
    /// operation that reads on without one (see [`PersistentOp::wants_events`]).
    pub(crate) fn wants_events(&self) -> bool {
        match &self.head {
            None => false,
            Some(Waiter::Persistent(op)) => op.wants_events(),
            Some(_) => true,
        }
    }

    /// The first waiter, left in place.
    #[inline(always)]
    pub(crate) fn first(&self) -> Option<&Waiter> {
        self.head.as_ref()
    }

    /// Takes the persistent operation that `is_it` recognises out of the line, if it is there.
    pub(crate) fn remove_persistent(&mut self, is_it: impl Fn(&Rc<dyn PersistentOp>) -> bool) {
        let found = |w: &Waiter| matches!(w, Waiter::Persistent(p) if is_it(p));
        if self.head.as_ref().is_some_and(found) {
            self.pop_front();
        } else if let Some(rest) = &mut self.rest {
            rest.retain(|w| !found(w));
        }
    }

    /// Puts `waiter` first (an operation that tried and must wait again keeps its place).
    pub(crate) fn push_front(&mut self, waiter: Waiter) {
        if let Some(old) = self.head.replace(waiter) {
            self.rest.get_or_insert_default().push_front(old);
        }
    }

    #[inline(always)]
    pub(crate) fn pop_front(&mut self) -> Option<Waiter> {
        let first = self.head.take()?;
        if let Some(rest) = &mut self.rest {
            self.head = rest.pop_front();
        }
        Some(first)
    }

    /// Takes the first waiter out when it is the only one and a future polled by a task of this loop
    /// (see [`TaskWake::Local`]) and `may` says so of its `seq`: its task. Otherwise leaves the line
    /// as it is.
    #[inline(always)]
    pub(crate) fn take_lone_local_task(
        &mut self,
        may: impl FnOnce(u32) -> bool,
    ) -> Option<TaskRef> {
        let Some(Waiter::Task {
            wake: TaskWake::Local(task),
            seq,
            ..
        }) = &self.head
        else {
            return None;
        };
        if self.rest.as_ref().is_some_and(|rest| !rest.is_empty()) || !may(*seq) {
            return None;
        }
        let task = *task;
        // A local wake owns nothing: forgotten, so that no drop code for a waiter runs here.
        std::mem::forget(self.head.take());
        Some(task)
    }

    /// Where the future waiter `id` is queued, if it still is (not woken yet).
    #[inline]
    pub(crate) fn position_of_task(&self, id: u32) -> Option<usize> {
        let is_it = |w: &Waiter| matches!(w, Waiter::Task { id: i, .. } if *i == id);
        match &self.head {
            None => None,
            Some(w) if is_it(w) => Some(0),
            Some(_) => self.rest.as_ref()?.iter().position(is_it).map(|i| i + 1),
        }
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut Waiter> {
        match index {
            0 => self.head.as_mut(),
            _ => self.rest.as_mut()?.get_mut(index - 1),
        }
    }

    pub(crate) fn remove(&mut self, index: usize) -> Option<Waiter> {
        match index {
            0 => self.pop_front(),
            _ => self.rest.as_mut()?.remove(index - 1),
        }
    }

    /// Empties the line, returning the waiters in order.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = Waiter> + use<> {
        self.head
            .take()
            .into_iter()
            .chain(self.rest.take().into_iter().flat_map(|rest| *rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn task(id: u32) -> Waiter {
        Waiter::Task {
            id,
            seq: 0,
            wake: TaskWake::Waker(Waker::noop().clone()),
        }
    }

    fn ids(line: &mut Line) -> Vec<u32> {
        line.take_all()
            .map(|w| match w {
                Waiter::Task { id, .. } => id,
                Waiter::Callback(_) | Waiter::Persistent(_) => u32::MAX,
            })
            .collect()
    }

    #[test]
    fn waiters_keep_their_order_past_the_first_slot() {
        let mut line = Line::default();
        assert!(line.is_empty());
        for id in 1..=4 {
            line.push_back(task(id));
        }
        line.push_front(task(0));
        assert_eq!(line.position_of_task(0), Some(0));
        assert_eq!(line.position_of_task(3), Some(3));
        assert_eq!(line.position_of_task(9), None);
        assert!(matches!(line.remove(2), Some(Waiter::Task { id: 2, .. })));
        assert!(matches!(line.pop_front(), Some(Waiter::Task { id: 0, .. })));
        assert!(matches!(line.get_mut(0), Some(Waiter::Task { id: 1, .. })));
        assert_eq!(ids(&mut line), [1, 3, 4]);
        assert!(line.is_empty());
        assert!(line.pop_front().is_none());
    }

    #[test]
    fn a_lone_local_task_is_taken_only_when_allowed_and_alone() {
        let local = |id, seq| Waiter::Task {
            id,
            seq,
            wake: TaskWake::Local(TaskRef { key: 7, id: 9 }),
        };
        let mut line = Line::default();
        line.push_back(local(1, 5));
        assert_eq!(line.take_lone_local_task(|seq| seq < 5), None);
        assert!(!line.is_empty());
        line.push_back(task(2));
        assert_eq!(
            line.take_lone_local_task(|_| true),
            None,
            "another waits behind it"
        );
        assert!(matches!(line.pop_front(), Some(Waiter::Task { id: 1, .. })));
        line.pop_front();
        line.push_back(local(3, 5));
        assert_eq!(
            line.take_lone_local_task(|seq| seq == 5),
            Some(TaskRef { key: 7, id: 9 })
        );
        assert!(line.is_empty());
    }

    #[test]
    fn a_waiting_future_costs_no_more_than_a_waker() {
        // A source's line keeps its first waiter in place for every connection.
        assert_eq!(size_of::<TaskWake>(), size_of::<Waker>());
        assert!(size_of::<Waiter>() <= 32);
    }
}

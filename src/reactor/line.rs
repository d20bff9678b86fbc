//! A line: the operations waiting on one direction of a source, in order (see `source::Waiter`).
//!
//! A direction rarely has more than one waiter: the first is kept in place (no allocation, no
//! ring-buffer arithmetic on the hot path; an idle connection's pending read lives in its source
//! entry), the others in a list behind it.

use std::collections::VecDeque;

/// The waiters of one direction, first in place, the others behind it.
pub(crate) struct Line<W> {
    /// The first waiter; `None` only when the line is empty.
    head: Option<W>,
    /// The others: boxed, so that every source pays one pointer per direction for the rare queue
    /// (a list's own header is four words).
    #[allow(clippy::box_collection)]
    rest: Option<Box<VecDeque<W>>>,
}

impl<W> Default for Line<W> {
    fn default() -> Self {
        Line {
            head: None,
            rest: None,
        }
    }
}

impl<W> Line<W> {
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.is_none()
    }

    #[inline(always)]
    pub(crate) fn push_back(&mut self, waiter: W) {
        if self.head.is_none() {
            // What `replace` hands back is the empty slot: forgotten, so that no drop code for a
            // waiter is emitted (and called) on this path.
            std::mem::forget(self.head.replace(waiter));
        } else {
            self.rest.get_or_insert_default().push_back(waiter);
        }
    }

    /// The first waiter, left in place.
    #[inline(always)]
    pub(crate) fn first(&self) -> Option<&W> {
        self.head.as_ref()
    }

    /// Whether a waiter is queued behind the first.
    #[inline(always)]
    pub(crate) fn has_more(&self) -> bool {
        self.rest.as_ref().is_some_and(|rest| !rest.is_empty())
    }

    /// Takes the first waiter out when it is the only one and `pick` recognises it, without running
    /// any drop code: `pick` copies what it needs out of the waiter, which is then forgotten (so
    /// only for waiters that own nothing).
    #[inline(always)]
    pub(crate) fn take_lone<T>(&mut self, pick: impl FnOnce(&W) -> Option<T>) -> Option<T> {
        let picked = pick(self.head.as_ref()?)?;
        if self.has_more() {
            return None;
        }
        std::mem::forget(self.head.take());
        Some(picked)
    }

    /// Takes the first waiter that `found` recognises out of the line, if any.
    pub(crate) fn remove_first(&mut self, found: impl Fn(&W) -> bool) {
        if self.head.as_ref().is_some_and(&found) {
            self.pop_front();
        } else if let Some(rest) = &mut self.rest {
            if let Some(i) = rest.iter().position(found) {
                rest.remove(i);
            }
        }
    }

    /// Puts `waiter` first (an operation that tried and must wait again keeps its place).
    pub(crate) fn push_front(&mut self, waiter: W) {
        if let Some(old) = self.head.replace(waiter) {
            self.rest.get_or_insert_default().push_front(old);
        }
    }

    #[inline(always)]
    pub(crate) fn pop_front(&mut self) -> Option<W> {
        let first = self.head.take()?;
        if let Some(rest) = &mut self.rest {
            self.head = rest.pop_front();
        }
        Some(first)
    }

    /// Where the first waiter that `is_it` recognises is queued.
    #[inline]
    pub(crate) fn position(&self, is_it: impl Fn(&W) -> bool) -> Option<usize> {
        match &self.head {
            None => None,
            Some(w) if is_it(w) => Some(0),
            Some(_) => self.rest.as_ref()?.iter().position(is_it).map(|i| i + 1),
        }
    }

    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut W> {
        match index {
            0 => self.head.as_mut(),
            _ => self.rest.as_mut()?.get_mut(index - 1),
        }
    }

    pub(crate) fn remove(&mut self, index: usize) -> Option<W> {
        match index {
            0 => self.pop_front(),
            _ => self.rest.as_mut()?.remove(index - 1),
        }
    }

    /// Empties the line, returning the waiters in order.
    pub(crate) fn take_all(&mut self) -> impl Iterator<Item = W> + use<W> {
        self.head
            .take()
            .into_iter()
            .chain(self.rest.take().into_iter().flat_map(|rest| *rest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiters_keep_their_order_past_the_first_slot() {
        let mut line = Line::default();
        assert!(line.is_empty());
        for id in 1..=4 {
            line.push_back(id);
        }
        line.push_front(0);
        assert_eq!(line.position(|&w| w == 0), Some(0));
        assert_eq!(line.position(|&w| w == 3), Some(3));
        assert_eq!(line.position(|&w| w == 9), None);
        assert_eq!(line.remove(2), Some(2));
        assert_eq!(line.pop_front(), Some(0));
        assert_eq!(line.get_mut(0), Some(&mut 1));
        line.remove_first(|&w| w == 4);
        assert_eq!(line.take_all().collect::<Vec<_>>(), [1, 3]);
        assert!(line.is_empty());
        assert!(line.pop_front().is_none());
    }

    #[test]
    fn a_lone_waiter_is_taken_only_when_alone_and_picked() {
        let mut line = Line::default();
        line.push_back(5u32);
        assert_eq!(line.take_lone(|&w| (w > 5).then_some(w)), None);
        line.push_back(6);
        assert_eq!(
            line.take_lone(|&w| Some(w)),
            None,
            "another waits behind it"
        );
        line.pop_front();
        assert_eq!(line.take_lone(|&w| Some(w)), Some(6));
        assert!(line.is_empty());
    }
}

//! Operations that code on their own loop completes: the [`LocalCompletion`] behind
//! `Framed::flush`, finished by the writer once the bytes are out.
//!
//! The loop-thread twin of [`Completion`](super::Completion): no lock and no cross-thread queue, the
//! completer fires the operation's virtual source directly (its handler is queued, never run inside
//! the completing call).

use std::cell::RefCell;
use std::io;
use std::rc::Rc;
use std::task::Poll;

use super::{Cx, Interest, Op, Operation};
use crate::reactor::registry::OwnedSource;
use crate::reactor::{Reactor, Token};

type Slot<T> = Rc<RefCell<Option<io::Result<T>>>>;

/// An operation that something on its own loop completes (see `Framed::flush`): it completes with
/// the result it is given, or with `BrokenPipe` if that side is dropped without giving one.
pub struct LocalCompletion<T> {
    slot: Slot<T>,
    /// Its place in the loop, removed when the operation ends or is dropped.
    _source: Option<OwnedSource>,
}

impl<T> std::fmt::Debug for LocalCompletion<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCompletion").finish_non_exhaustive()
    }
}

impl<T: 'static> Operation for LocalCompletion<T> {
    type Output = io::Result<T>;
    type Value = T;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn needs_ready(&self) -> bool {
        // Looks at the slot as it starts: a result given before then is taken at once.
        false
    }

    fn attempt(&mut self, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        match self.slot.borrow_mut().take() {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

/// The completing half of a [`LocalCompletion`]: finished once, on the loop's thread.
pub(crate) struct LocalCompleter<T> {
    slot: Slot<T>,
    reactor: Rc<Reactor>,
    token: Token,
    done: bool,
}

impl<T> LocalCompleter<T> {
    /// Completes the operation with `result`; its handler (or task) runs later, from the loop.
    pub(crate) fn complete(mut self, result: io::Result<T>) {
        self.finish(result);
    }

    fn finish(&mut self, result: io::Result<T>) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        *self.slot.borrow_mut() = Some(result);
        if !self.reactor.is_shut_down() {
            self.reactor.fire(self.token);
        }
    }
}

impl<T> Drop for LocalCompleter<T> {
    fn drop(&mut self) {
        self.finish(Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "dropped without completing the operation",
        )));
    }
}

/// A completer and the operation it completes, on `reactor`'s loop.
pub(crate) fn local_completion<T: 'static>(
    reactor: &Rc<Reactor>,
) -> (LocalCompleter<T>, Op<LocalCompletion<T>>) {
    let slot: Slot<T> = Rc::default();
    let source = OwnedSource::new_virtual(reactor);
    let token = source.as_ref().map_or(Token::NONE, |s| s.token());
    let completer = LocalCompleter {
        slot: slot.clone(),
        reactor: reactor.clone(),
        token,
        done: source.is_err(),
    };
    let op = match source {
        Ok(source) => Op::new(
            reactor,
            token,
            LocalCompletion {
                slot,
                _source: Some(source),
            },
        ),
        Err(e) => Op::failed(
            reactor,
            LocalCompletion {
                slot,
                _source: None,
            },
            e,
        ),
    };
    (completer, op)
}

/// An operation that completes with `result` as soon as it starts.
pub(crate) fn ready<T: 'static>(
    reactor: &Rc<Reactor>,
    result: io::Result<T>,
) -> Op<LocalCompletion<T>> {
    let (completer, op) = local_completion(reactor);
    completer.complete(result);
    op
}

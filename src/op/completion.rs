//! Operations that something else completes: the [`Completer`] / [`Completion`] pair behind
//! `LocalHandle::completion` and `LocalHandle::spawn_blocking`.
//!
//! A [`Completer`] is the other half of an operation that something else finishes: a C callback, a
//! driver thread, another loop. It is `Send`; completing it from any thread runs the handler on the
//! loop; dropping it unfinished completes the operation with an error instead of leaving it hanging.

use std::io;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use super::{Cx, Interest, Op, Operation};
use crate::reactor::registry::OwnedSource;
use crate::reactor::remote::Remote;
use crate::reactor::{Reactor, Token};

struct CompletionCell<T> {
    value: Mutex<Option<io::Result<T>>>,
}

/// The sending half of a completion: finish it once, from any thread.
///
/// ```
/// let svc = aio::IoService::new()?;
/// let (completer, op) = svc.completion::<u32>();
/// std::thread::spawn(move || completer.complete(7));
/// assert_eq!(svc.block_on(op)?, 7);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Completer<T: Send + 'static> {
    cell: Arc<CompletionCell<T>>,
    remote: Arc<Remote>,
    token: Token,
    done: bool,
}

impl<T: Send + 'static> Completer<T> {
    /// Completes the operation with `value`; its handler runs on the loop thread.
    pub fn complete(mut self, value: T) {
        self.finish(Ok(value));
    }

    /// Completes the operation with an error.
    pub fn fail(mut self, err: io::Error) {
        self.finish(Err(err));
    }

    fn finish(&mut self, result: io::Result<T>) {
        if self.done {
            return;
        }
        self.done = true;
        *self.cell.value.lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
        let token = self.token;
        // If the loop is gone, nobody is waiting: the value is simply dropped with the cell.
        let _ = self.remote.post(Box::new(move |reactor: &Reactor| {
            reactor.fire(token);
            false
        }));
    }
}

impl<T: Send + 'static> Drop for Completer<T> {
    fn drop(&mut self) {
        self.finish(Err(io::Error::new(
            io::ErrorKind::BrokenPipe,
            "the completer was dropped without completing the operation",
        )));
    }
}

impl<T: Send + 'static> std::fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completer")
            .field("done", &self.done)
            .finish()
    }
}

/// The operation half of a completion (or of a `spawn_blocking` call).
pub struct Completion<T> {
    cell: Arc<CompletionCell<T>>,
    /// Its place in the loop, removed when the operation ends or is dropped.
    _source: Option<OwnedSource>,
}

impl<T> std::fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completion").finish_non_exhaustive()
    }
}

impl<T: 'static> Operation for Completion<T> {
    type Output = io::Result<T>;
    type Value = T;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let value = self
            .cell
            .value
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        match value {
            Some(result) => Poll::Ready(result),
            None => Poll::Pending,
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

/// A completer and the operation it completes, on `reactor`'s loop.
pub(crate) fn completion<T: Send + 'static>(
    reactor: &Rc<Reactor>,
) -> (Completer<T>, Op<Completion<T>>) {
    let cell = Arc::new(CompletionCell {
        value: Mutex::new(None),
    });
    let source = OwnedSource::new_virtual(reactor);
    let token = source.as_ref().map_or(Token::NONE, |s| s.token());
    let completer = Completer {
        cell: cell.clone(),
        remote: reactor.remote().clone(),
        token,
        done: source.is_err(),
    };
    let op = match source {
        Ok(source) => Op::new(
            reactor,
            token,
            Completion {
                cell,
                _source: Some(source),
            },
        ),
        Err(e) => Op::failed(
            reactor,
            Completion {
                cell,
                _source: None,
            },
            e,
        ),
    };
    (completer, op)
}

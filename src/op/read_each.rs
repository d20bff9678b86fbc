//! Persistent reads: [`StreamSocket::read_each`](crate::StreamSocket::read_each), libuv's
//! `uv_read_start`.
//!
//! One operation, allocated once, stays first in its direction's line for the whole stream: each
//! event is served in place (read under the lookup that found the source, chunk handed over), so
//! that nothing is taken out of the line and put back per chunk. It leaves the line only when it
//! ends: the handler breaks, the stream ends, an error comes, or `cancel()` / `close()` take it out.

use std::cell::{Cell, RefCell, RefMut};
use std::io;
use std::ops::ControlFlow;
use std::rc::Rc;
use std::task::Poll;

use super::{Interest, ReadSome};
use crate::LocalHandle;
use crate::buf::IoBufMut;
use crate::driver::Token;
use crate::service::Job;
use crate::service::source::{Source, Waiter};

/// An operation that stays first in its direction's line while it lasts (see the module docs).
pub(crate) trait PersistentOp {
    /// Its direction is ready and it is first in line: reads under the borrow of `source` (from the
    /// lookup that found it), then hands the chunk over right here when `inline` allows (see
    /// `LocalHandle::serve_waiters`), or in a job.
    fn serve(self: Rc<Self>, svc: &LocalHandle, source: RefMut<'_, Source>, inline: bool);
    /// Taken out of its line by `cancel()` or a close: ends with `err`, handed over by a job.
    fn cancel(self: Rc<Self>, svc: &LocalHandle, err: io::Error);
    /// A job: hands over what an earlier read or a cancellation left, then reads on if its
    /// direction is ready.
    fn resume(self: Rc<Self>, svc: &LocalHandle);
    /// Whether a level-triggered backend should watch its direction now: false while it will read
    /// without an event anyway (and could not use one), so that the loop does not spin on a
    /// readiness nobody takes.
    fn wants_events(&self) -> bool {
        true
    }
}

/// Puts the persistent read `op` (named `name` in errors) of `token`'s source, with a buffer of
/// `total` bytes, at the end of its read line: `Ok(true)` when it is first in line on a direction
/// that may be ready, so that it should read without waiting for an event (otherwise an event, or
/// the end of the operations ahead of it, serves it); the error when it cannot go in.
pub(crate) fn join_line(
    svc: &LocalHandle,
    token: Token,
    total: usize,
    op: Rc<dyn PersistentOp>,
    name: &str,
) -> io::Result<bool> {
    if total == 0 {
        // A zero-length read would report an end of stream that never came.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name} needs a buffer with room for at least one byte"),
        ));
    }
    let mut sources = svc.inner.sources.borrow_mut();
    let Some(source) = sources.get_mut(token) else {
        drop(sources);
        return Err(svc.gone_error());
    };
    let fd = source.raw_fd();
    let dir = source.dir_mut(Interest::Read);
    let read_now = dir.waiters.is_empty() && dir.ready;
    dir.push_waiter(Waiter::Persistent(op));
    drop(sources);
    svc.watch_fd(token, fd, Interest::Read);
    Ok(read_now)
}

/// Whether `op`, a waiter of a line, is the persistent operation `this`.
fn is_op<T: PersistentOp>(op: &Rc<dyn PersistentOp>, this: &T) -> bool {
    std::ptr::eq(Rc::as_ptr(op) as *const (), this as *const T as *const ())
}

/// Whether the persistent operation `this` is first in `source`'s read line.
pub(crate) fn first_in_line<T: PersistentOp>(source: &Source, this: &T) -> bool {
    matches!(source.read.waiters.first(), Some(Waiter::Persistent(op)) if is_op(op, this))
}

/// Takes the persistent operation `this` out of `token`'s read line (if it is still there), then
/// serves the operations queued behind it if the direction is ready.
pub(crate) fn leave_line<T: PersistentOp>(svc: &LocalHandle, token: Token, this: &T) {
    let serve_next = {
        let mut sources = svc.inner.sources.borrow_mut();
        sources.get_mut(token).is_some_and(|source| {
            let dir = source.dir_mut(Interest::Read);
            dir.waiters.remove_persistent(|op| is_op(op, this));
            dir.ready && !dir.waiters.is_empty()
        })
    };
    if serve_next {
        svc.serve_waiters(token, Interest::Read, false);
    }
}

/// The persistent read of one stream.
pub(crate) struct ReadEach<B, F> {
    token: Token,
    state: RefCell<State<B, F>>,
    /// Why it was taken out of its line, until handed over: a `Cell`, since a cancellation may
    /// come from the handler itself, while `state` is borrowed.
    cancelled: Cell<Option<io::Error>>,
}

struct State<B, F> {
    /// The read of one chunk, tried in place, and the buffer it fills.
    read: ReadSome<B>,
    /// `None` once ended: it is never called again.
    handler: Option<F>,
    /// A chunk's length (or the error) read but not yet handed over.
    pending: Option<io::Result<usize>>,
    /// The loop's count of queued jobs when the handler last ran (or the read started): the next
    /// chunk is handed over only after those jobs ran (see `ReadyOp::queued_before`).
    queued_before: u64,
}

impl<B, F> ReadEach<B, F>
where
    B: IoBufMut,
    F: FnMut(io::Result<&[u8]>) -> ControlFlow<()> + 'static,
{
    /// Starts reading `token`'s source into `buf`, handing each chunk to `handler`.
    pub(crate) fn start(svc: &LocalHandle, token: Token, buf: B, handler: F) {
        if svc.is_shut_down() {
            return;
        }
        svc.add_work();
        let reader = Rc::new(ReadEach {
            token,
            state: RefCell::new(State {
                read: ReadSome::new(buf),
                handler: Some(handler),
                pending: None,
                queued_before: svc.jobs_queued(),
            }),
            cancelled: Cell::new(None),
        });
        let total = reader.state.borrow().read.buf().bytes_total();
        let refused = match join_line(svc, token, total, reader.clone(), "read_each") {
            Ok(read_now) => {
                // First in line on a direction that may be ready: a job makes the first read (the
                // handler never runs inside this call).
                if read_now {
                    svc.push_job(Job::Persistent(reader));
                }
                return;
            }
            Err(refused) => refused,
        };
        reader.state.borrow_mut().pending = Some(Err(refused));
        svc.push_job(Job::Persistent(reader));
    }

    /// Calls the handler with a chunk, the end of the stream or an error; true when that ended it.
    #[inline(always)]
    fn hand_over(
        &self,
        state: &mut State<B, F>,
        svc: &LocalHandle,
        res: io::Result<usize>,
    ) -> bool {
        let State { read, handler, .. } = state;
        let Some(handler) = handler else {
            return true;
        };
        let flow = match res {
            Ok(n) if n > 0 => handler(Ok(&read.buf().as_slice()[..n])),
            // The last call: what it returns changes nothing.
            Ok(_) => {
                let _ = handler(Ok(&[]));
                ControlFlow::Break(())
            }
            Err(e) => {
                let _ = handler(Err(e));
                ControlFlow::Break(())
            }
        };
        if flow.is_continue() && !svc.is_shut_down() {
            // Behind whatever the handler queued: its handlers run before the next chunk's.
            state.queued_before = svc.jobs_queued();
            return false;
        }
        true
    }

    /// Ends the stream: leaves the line (serving the operations queued behind it), settles the
    /// work count, and drops the handler (which may close the socket) last.
    fn end(&self, mut state: RefMut<'_, State<B, F>>, svc: &LocalHandle) {
        let Some(handler) = state.handler.take() else {
            return;
        };
        drop(state);
        leave_line(svc, self.token, self);
        svc.finish_work();
        drop(handler);
    }
}

impl<B, F> PersistentOp for ReadEach<B, F>
where
    B: IoBufMut,
    F: FnMut(io::Result<&[u8]>) -> ControlFlow<()> + 'static,
{
    #[inline]
    fn serve(self: Rc<Self>, svc: &LocalHandle, mut source: RefMut<'_, Source>, inline: bool) {
        // Never borrowed here: the loop does not serve a source from inside a handler.
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return;
        };
        if state.pending.is_some() {
            return; // a chunk waits for its job (an ended one is out of the line: never here)
        }
        let res = match LocalHandle::try_in(self.token, &mut source, &mut state.read) {
            Poll::Ready(res) => res,
            Poll::Pending => return, // EAGAIN: it waits for the next event, in place
        };
        // Still ready after the read (a full buffer, or a short read that proves nothing): read
        // on from a job, behind the others, so that one busy stream cannot starve the loop.
        let again = source.read.ready;
        drop(source);
        if !(inline && svc.may_run_inline(state.queued_before)) {
            state.pending = Some(res);
            drop(state);
            svc.push_job(Job::Persistent(self));
            return;
        }
        if self.hand_over(&mut state, svc, res) {
            self.end(state, svc);
            return;
        }
        drop(state);
        if again {
            svc.push_job(Job::Persistent(self));
        }
    }

    fn cancel(self: Rc<Self>, svc: &LocalHandle, err: io::Error) {
        self.cancelled.set(Some(err));
        svc.push_job(Job::Persistent(self));
    }

    fn resume(self: Rc<Self>, svc: &LocalHandle) {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return;
        };
        if state.handler.is_none() {
            return;
        }
        if let Some(res) = state.pending.take() {
            if self.hand_over(&mut state, svc, res) {
                self.end(state, svc);
                return;
            }
        }
        if let Some(err) = self.cancelled.take() {
            self.hand_over(&mut state, svc, Err(err));
            self.end(state, svc);
            return;
        }
        drop(state);
        let sources = svc.inner.sources.borrow_mut();
        let Ok(source) = RefMut::filter_map(sources, |t| t.get_mut(self.token)) else {
            return; // closed: its cancellation is queued behind this job
        };
        if first_in_line(&source, &*self) && source.read.ready {
            self.serve(svc, source, true);
        }
    }
}

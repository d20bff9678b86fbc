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

use super::{ReadSome, attempt_under_borrow};
use crate::buf::IoBufMut;
use crate::reactor::source::PersistentOp;
use crate::reactor::wake::TaskRef;
use crate::reactor::{Reactor, Source, Token};

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
    queued_before: u32,
}

impl<B, F> ReadEach<B, F>
where
    B: IoBufMut,
    F: FnMut(io::Result<&[u8]>) -> ControlFlow<()> + 'static,
{
    /// Starts reading `token`'s source into `buf`, handing each chunk to `handler`.
    pub(crate) fn start(reactor: &Reactor, token: Token, buf: B, handler: F) {
        if reactor.is_shut_down() {
            return;
        }
        reactor.add_work();
        let reader = Rc::new(ReadEach {
            token,
            state: RefCell::new(State {
                read: ReadSome::new(buf),
                handler: Some(handler),
                pending: None,
                queued_before: reactor.seq(),
            }),
            cancelled: Cell::new(None),
        });
        let total = reader.state.borrow().read.buf().bytes_total();
        let refused = match reactor.join_line(token, total, reader.clone(), "read_each") {
            Ok(read_now) => {
                // First in line on a direction that may be ready: a job makes the first read (the
                // handler never runs inside this call).
                if read_now {
                    reactor.resume_later(reader);
                }
                return;
            }
            Err(refused) => refused,
        };
        reader.state.borrow_mut().pending = Some(Err(refused));
        reactor.resume_later(reader);
    }

    /// Calls the handler with a chunk, the end of the stream or an error; true when that ended it.
    #[inline(always)]
    fn hand_over(
        &self,
        state: &mut State<B, F>,
        reactor: &Reactor,
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
        if flow.is_continue() && !reactor.is_shut_down() {
            // Behind whatever the handler queued: its handlers run before the next chunk's.
            state.queued_before = reactor.seq();
            return false;
        }
        true
    }

    /// Ends the stream: leaves the line (serving the operations queued behind it), settles the
    /// work count, and drops the handler (which may close the socket) last.
    fn end(&self, mut state: RefMut<'_, State<B, F>>, reactor: &Reactor) {
        let Some(handler) = state.handler.take() else {
            return;
        };
        drop(state);
        reactor.leave_line(self.token, self);
        reactor.finish_work();
        drop(handler);
    }
}

impl<B, F> PersistentOp for ReadEach<B, F>
where
    B: IoBufMut,
    F: FnMut(io::Result<&[u8]>) -> ControlFlow<()> + 'static,
{
    #[inline]
    fn serve(
        self: Rc<Self>,
        reactor: &Reactor,
        mut source: RefMut<'_, Source>,
        inline: bool,
    ) -> Option<TaskRef> {
        // Never borrowed here: the loop does not serve a source from inside a handler.
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return None;
        };
        if state.pending.is_some() {
            return None; // a chunk waits for its job (an ended one is out of the line: never here)
        }
        let res = match attempt_under_borrow(&mut source, &mut state.read) {
            Poll::Ready(res) => res,
            Poll::Pending => return None, // EAGAIN: it waits for the next event, in place
        };
        // Still ready after the read (a full buffer, or a short read that proves nothing): read
        // on from a job, behind the others, so that one busy stream cannot starve the loop.
        let again = source.read.ready;
        drop(source);
        if !(inline && reactor.may_complete_here(state.queued_before)) {
            state.pending = Some(res);
            drop(state);
            reactor.resume_later(self);
            return None;
        }
        if self.hand_over(&mut state, reactor, res) {
            self.end(state, reactor);
            return None;
        }
        drop(state);
        if again {
            reactor.resume_later(self);
        }
        None
    }

    fn cancel(self: Rc<Self>, reactor: &Reactor, err: io::Error) {
        self.cancelled.set(Some(err));
        reactor.resume_later(self);
    }

    fn resume(self: Rc<Self>, reactor: &Reactor) {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return;
        };
        if state.handler.is_none() {
            return;
        }
        if let Some(res) = state.pending.take() {
            if self.hand_over(&mut state, reactor, res) {
                self.end(state, reactor);
                return;
            }
        }
        if let Some(err) = self.cancelled.take() {
            self.hand_over(&mut state, reactor, Err(err));
            self.end(state, reactor);
            return;
        }
        drop(state);
        let sources = reactor.sources.borrow_mut();
        let Ok(source) = RefMut::filter_map(sources, |t| t.get_mut(self.token)) else {
            return; // closed: its cancellation is queued behind this job
        };
        if source.first_in_line(&*self) && source.read.ready {
            // A chunk's handler runs from here (inline): no task to hand back.
            let _ = self.serve(reactor, source, true);
        }
    }
}

//! Persistent reads: [`StreamSocket::read_each`](crate::StreamSocket::read_each), libuv's
//! `uv_read_start`.
//!
//! One operation, boxed once, reads chunk after chunk into one buffer and hands each to the same
//! handler: after a short read it waits in its direction's line again (no new operation, no
//! allocation per chunk), after a full one it queues itself to read on (so that one busy socket
//! cannot keep the others waiting).

use std::cell::RefMut;
use std::io;
use std::ops::ControlFlow;
use std::os::fd::RawFd;

use super::{Cx, Interest, ReadSome, ReadyOp, RingEntry, settle, start_boxed};
use crate::LocalHandle;
use crate::buf::IoBufMut;
use crate::driver::Token;
use crate::service::Job;
use crate::service::run::Serving;
use crate::service::source::Source;

/// The persistent read as the loop stores it: in its direction's line while it waits, in the ready
/// queue while a chunk (or its end) waits to be handed over.
pub(crate) struct ReadEach<B, F> {
    token: Token,
    /// The source's cancel epoch when it started: a `cancel()` since ends it.
    epoch: u32,
    /// The loop's count of queued jobs when it last started waiting (see `ReadyOp::queued_before`).
    queued_before: u64,
    /// The read of one chunk, tried in place, and the buffer it fills.
    read: ReadSome<B>,
    handler: F,
    /// A chunk's length (or the error) not yet handed to the handler.
    pending: Option<io::Result<usize>>,
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
        let epoch = svc
            .inner
            .sources
            .borrow()
            .get(token)
            .map_or(0, |s| s.cancel_epoch);
        svc.add_work();
        let mut boxed = crate::service::pool::boxed(
            &mut svc.inner.op_pool.borrow_mut(),
            ReadEach {
                token,
                epoch,
                queued_before: svc.jobs_queued(),
                read: ReadSome::new(buf),
                handler,
                pending: None,
            },
        );
        if boxed.read.buf().bytes_total() == 0 {
            // A zero-length read would report an end of stream that never came.
            boxed.pending = Some(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read_each needs a buffer with room for at least one byte",
            )));
            svc.push_job(Job::Op(boxed));
            return;
        }
        start_boxed(svc, token, Interest::Read, true, None, boxed);
    }
}

impl<B, F> ReadyOp for ReadEach<B, F>
where
    B: IoBufMut,
    F: FnMut(io::Result<&[u8]>) -> ControlFlow<()> + 'static,
{
    #[inline]
    fn retry(&mut self, svc: &LocalHandle, fd: Option<RawFd>) -> bool {
        if self.pending.is_some() {
            return true;
        }
        let step = svc.try_on(self.token, fd, &mut self.read);
        settle(&mut self.pending, step)
    }

    #[inline]
    fn retry_in(&mut self, source: &mut Source) -> Option<bool> {
        if self.pending.is_some() {
            return Some(true);
        }
        let step = LocalHandle::try_in(self.token, source, &mut self.read);
        Some(settle(&mut self.pending, step))
    }

    fn queued_before(&self) -> u64 {
        self.queued_before
    }

    fn serve(
        self: Box<Self>,
        svc: &LocalHandle,
        source: RefMut<'_, Source>,
        serving: Serving,
    ) -> bool {
        svc.serve_op(self, source, serving)
    }

    fn cancel(&mut self, err: io::Error) {
        if self.pending.is_none() {
            self.pending = Some(Err(err));
        }
    }

    /// Hands the chunk over; reads on if the handler wants more, or ends.
    #[inline(always)]
    fn complete(mut self: Box<Self>, svc: &LocalHandle) {
        let flow = match self.pending.take() {
            Some(Ok(n)) if n > 0 => (self.handler)(Ok(&self.read.buf().as_slice()[..n])),
            // The last call: what it returns changes nothing.
            Some(Ok(_)) => {
                let _ = (self.handler)(Ok(&[]));
                ControlFlow::Break(())
            }
            Some(Err(e)) => {
                let _ = (self.handler)(Err(e));
                ControlFlow::Break(())
            }
            // Never queued without a chunk or an error: read on.
            None => ControlFlow::Continue(()),
        };
        if flow.is_continue() && !svc.is_shut_down() {
            // Behind whatever the handler queued: its handlers run before the next chunk's.
            self.queued_before = svc.jobs_queued();
            let (token, epoch) = (self.token, self.epoch);
            start_boxed(svc, token, Interest::Read, true, Some(epoch), self);
            return;
        }
        svc.finish_work();
        // Dropped here, not recycled: once per stream, and dropping the handler may close the
        // socket, which must not happen while the pool is borrowed.
        drop(self);
    }

    fn on_ring(&self) -> bool {
        false // readiness and `read`, on every backend: no request to make per chunk
    }

    fn prepare(&mut self, _fd: RawFd) -> Option<RingEntry> {
        None
    }

    fn on_cqe(&mut self, _res: i32, _cx: &mut Cx<'_>) -> bool {
        true
    }
}

//! Persistent reads awaited chunk by chunk: [`StreamSocket::read_stream`](crate::StreamSocket::read_stream),
//! the future-style twin of `read_each`.
//!
//! The reader is one operation, allocated once, that stays first in its socket's read line for as
//! long as it lasts (like `read_each`): an event is served in place (the read made under the lookup
//! that found the source, the count kept in the reader) and the task awaiting the next chunk is
//! woken, or polled right there. A chunk that comes while nobody awaits waits in the buffer; while
//! it is unclaimed (or still borrowed), the socket's readiness stays marked and the next
//! [`ReadStream::next`] reads itself before it waits.

use std::cell::{Cell, Ref, RefCell, RefMut};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{Interest, ReadSome, attempt_under_borrow};
use crate::buf::IoBufMut;
use crate::reactor::source::PersistentOp;
use crate::reactor::wake::{TaskRef, TaskWake};
use crate::reactor::{Reactor, Source, Token};

/// The bytes of one read, borrowed from the [`ReadStream`]'s buffer until dropped.
///
/// A chunk kept across an `.await` holds the buffer: the loop reads nothing into it meanwhile (the
/// stream's next read waits for the chunk to be dropped and for the next call to
/// [`next`](ReadStream::next)).
pub struct Chunk<'a>(Ref<'a, [u8]>);

impl std::ops::Deref for Chunk<'_> {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Chunk<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Chunk<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Chunk").field(&self.len()).finish()
    }
}

/// A socket's reading side as a stream of chunks: made by
/// [`StreamSocket::read_stream`](crate::StreamSocket::read_stream), read with
/// [`next`](ReadStream::next). Dropping it ends the stream (reads started behind it go on).
pub struct ReadStream<B: IoBufMut> {
    reactor: Rc<Reactor>,
    reader: Rc<Reader<B>>,
}

/// What the loop's line and the [`ReadStream`] share.
struct Reader<B> {
    token: Token,
    state: RefCell<State<B>>,
    /// Its socket may hold bytes that no event will announce (an event came while a chunk was
    /// unclaimed or borrowed, or the last read filled the buffer): the next `next()` reads before it
    /// waits.
    again: Cell<bool>,
    /// Out of its line (or never in it): the end of the stream, an error or a cancellation was
    /// handed over. Beside `again`, where it takes no room of its own.
    ended: Cell<bool>,
    /// Who awaits the next chunk, or why the reader was taken out of its line. Outside `state`: a
    /// cancellation may come while a chunk borrows it.
    waiting: Cell<Waiting>,
    /// The loop's count of queued jobs when the awaiting task started waiting (see
    /// `Reactor::may_complete_here`). Beside the flags, where it takes no room of its own.
    seq: Cell<u32>,
}

#[derive(Default)]
enum Waiting {
    #[default]
    Nobody,
    /// The task awaiting the next chunk.
    Task(TaskWake),
    /// Taken out of its line (`cancel()`, `close()`) with this error, to hand over next (the task
    /// that awaited was woken).
    Cancelled(io::Error),
}

struct State<B> {
    /// The read of one chunk, tried in place, and the buffer it fills.
    read: ReadSome<B>,
    /// A read's count (or error) not yet handed over; the error that kept it out of its line.
    pending: Option<io::Result<usize>>,
}

impl<B: IoBufMut> ReadStream<B> {
    /// Puts a new reader of `token`'s source into its read line.
    pub(crate) fn start(reactor: &Rc<Reactor>, token: Token, buf: B) -> ReadStream<B> {
        let reader = Rc::new(Reader {
            token,
            state: RefCell::new(State {
                read: ReadSome::new(buf),
                pending: None,
            }),
            again: Cell::new(false),
            ended: Cell::new(false),
            waiting: Cell::new(Waiting::Nobody),
            seq: Cell::new(0),
        });
        let stream = ReadStream {
            reactor: reactor.clone(),
            reader,
        };
        let total = stream.reader.state.borrow().read.buf().bytes_total();
        match reactor.join_line(token, total, stream.reader.clone(), "read_stream") {
            // First in line on a direction that may be ready: the first `next()` reads.
            Ok(read_now) => stream.reader.again.set(read_now),
            Err(refused) => {
                stream.reader.state.borrow_mut().pending = Some(Err(refused));
                stream.reader.ended.set(true);
            }
        }
        stream
    }

    /// The next chunk: `Some(Ok(chunk))` for each read, `None` at the end of the stream, and once
    /// `Some(Err(e))` on an error, a `cancel()` or a `close()` of the socket (`ECANCELED`), after
    /// which the stream has ended and only `None` follows.
    ///
    /// ```
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let (a, b) = StreamSocket::pair(&svc)?;
    /// let got = svc.block_on(async move {
    ///     let mut chunks = b.read_stream(vec![0u8; 4096]);
    ///     let (res, _) = a.write_all(b"hello".to_vec()).await;
    ///     res?;
    ///     drop(a); // end of stream for `b`
    ///     let mut got = Vec::new();
    ///     while let Some(chunk) = chunks.next().await {
    ///         got.extend_from_slice(&chunk?);
    ///     }
    ///     Ok::<_, std::io::Error>(got)
    /// })?;
    /// assert_eq!(got, b"hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    // An async `next` that lends each chunk: neither `Iterator` nor `Stream` can say that.
    #[allow(clippy::should_implement_trait)]
    #[inline]
    pub fn next(&mut self) -> NextChunk<'_, B> {
        NextChunk { stream: Some(self) }
    }

    /// Polls for the next read's count (see [`next`](ReadStream::next)), which it leaves at the
    /// start of the buffer.
    #[inline]
    fn poll_count(&self, cx: &mut Context<'_>) -> Poll<Option<io::Result<usize>>> {
        let reader = &*self.reader;
        let mut state = reader.state.borrow_mut();
        if let Some(res) = state.pending.take() {
            return Poll::Ready(self.hand_over(state, res));
        }
        if reader.ended.get() {
            return Poll::Ready(None);
        }
        if let Waiting::Cancelled(err) = reader.waiting.take() {
            return Poll::Ready(self.hand_over(state, Err(err)));
        }
        if reader.again.get() {
            if let Some(res) = self.read_now(&mut state) {
                return Poll::Ready(self.hand_over(state, res));
            }
        }
        // Queued by number when a task of this loop polls (no waker clone).
        reader.seq.set(self.reactor.seq());
        reader
            .waiting
            .set(Waiting::Task(self.reactor.task_wake(cx.waker())));
        Poll::Pending
    }

    /// A count (or error) as `next()` hands it over, once `state` is released; the end of the
    /// stream or an error ends the stream.
    #[inline(always)]
    fn hand_over(
        &self,
        state: RefMut<'_, State<B>>,
        res: io::Result<usize>,
    ) -> Option<io::Result<usize>> {
        drop(state);
        match res {
            Ok(n) if n > 0 => Some(Ok(n)),
            Ok(_) => {
                self.end();
                None
            }
            Err(e) => {
                self.end();
                Some(Err(e))
            }
        }
    }

    /// Reads now if the stream is first in its line and the direction may be ready; `None` when it
    /// has to wait (the kernel said `EAGAIN`, or the direction is known not ready).
    #[cold]
    #[inline(never)]
    fn read_now(&self, state: &mut State<B>) -> Option<io::Result<usize>> {
        let reader = &*self.reader;
        reader.again.set(false);
        let mut sources = self.reactor.sources.borrow_mut();
        let Some(source) = sources.get_mut(reader.token) else {
            return Some(Err(self.reactor.gone_error()));
        };
        if !source.first_in_line(reader) {
            return None;
        }
        let res = match source.read.ready {
            true => match attempt_under_borrow(source, &mut state.read) {
                Poll::Ready(res) => Some(res),
                Poll::Pending => None,
            },
            false => None,
        };
        // Still ready (a full buffer): the next `next()` reads again. Otherwise it waits for an
        // event, which a level-triggered backend may have stopped watching while the stream read
        // on without one.
        if source.read.ready {
            reader.again.set(true);
        } else {
            let fd = source.raw_fd();
            drop(sources);
            self.reactor.watch_fd(reader.token, fd, Interest::Read);
        }
        res
    }

    /// Leaves the line (serving the reads queued behind it) once.
    fn end(&self) {
        if self.reader.ended.replace(true) {
            return; // out of its line already
        }
        let reader = &*self.reader;
        reader.waiting.take();
        self.reactor.leave_line(reader.token, reader);
    }
}

impl<B: IoBufMut> Drop for ReadStream<B> {
    fn drop(&mut self) {
        self.end();
    }
}

impl<B: IoBufMut> std::fmt::Debug for ReadStream<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadStream")
            .field("token", &self.reader.token)
            .finish_non_exhaustive()
    }
}

/// The future of [`ReadStream::next`].
#[must_use = "a NextChunk does nothing unless awaited"]
pub struct NextChunk<'a, B: IoBufMut> {
    /// `None` once it has completed.
    stream: Option<&'a mut ReadStream<B>>,
}

impl<'a, B: IoBufMut> Future for NextChunk<'a, B> {
    type Output = Option<io::Result<Chunk<'a>>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(stream) = this.stream.as_deref() else {
            panic!("aio::NextChunk polled after it completed")
        };
        let count = match stream.poll_count(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(count) => count,
        };
        let Some(stream) = this.stream.take() else {
            return Poll::Pending; // taken just above: never here
        };
        let stream: &'a ReadStream<B> = stream;
        Poll::Ready(count.map(|res| {
            res.map(|n| {
                Chunk(Ref::map(stream.reader.state.borrow(), |s| {
                    &s.read.buf().as_slice()[..n]
                }))
            })
        }))
    }
}

impl<B> Reader<B> {
    /// Wakes the task awaiting the next chunk, if any: handed back to be polled right here when
    /// `inline` allows it (see `Reactor::may_complete_here`), otherwise queued.
    #[inline(always)]
    fn wake(&self, reactor: &Reactor, inline: bool, seq: u32) -> Option<TaskRef> {
        match self.waiting.take() {
            Waiting::Task(TaskWake::Local(task)) if inline && reactor.may_complete_here(seq) => {
                Some(task)
            }
            Waiting::Task(wake) => {
                reactor.wake_task(wake);
                None
            }
            Waiting::Nobody => None,
            // Left for `next()`, which the woken task calls.
            cancelled @ Waiting::Cancelled(_) => {
                self.waiting.set(cancelled);
                None
            }
        }
    }
}

impl<B: IoBufMut> PersistentOp for Reader<B> {
    #[inline]
    fn serve(
        self: Rc<Self>,
        reactor: &Reactor,
        mut source: RefMut<'_, Source>,
        inline: bool,
    ) -> Option<TaskRef> {
        // Busy (a chunk unclaimed or borrowed): the direction stays ready, the next `next()` reads.
        let Ok(mut state) = self.state.try_borrow_mut() else {
            self.again.set(true);
            return None;
        };
        if state.pending.is_some() {
            self.again.set(true);
            return None;
        }
        let res = match attempt_under_borrow(&mut source, &mut state.read) {
            Poll::Ready(res) => res,
            Poll::Pending => return None, // EAGAIN: it waits for the next event, in place
        };
        // Still ready (a full buffer, or a short read that proves nothing): the next `next()`
        // reads before it waits, as a `read_some` on a ready socket would.
        self.again.set(source.read.ready);
        drop(source);
        // What is replaced is the empty slot: forgotten, so that no drop code runs for it here.
        std::mem::forget(state.pending.replace(res));
        drop(state);
        self.wake(reactor, inline, self.seq.get())
    }

    fn cancel(self: Rc<Self>, reactor: &Reactor, err: io::Error) {
        if let Waiting::Task(wake) = self.waiting.replace(Waiting::Cancelled(err)) {
            reactor.wake_task(wake);
        }
    }

    fn resume(self: Rc<Self>, _reactor: &Reactor) {
        // Never queued as a job: chunks go to the awaiting task.
    }

    fn wants_events(&self) -> bool {
        // The next `next()` reads first: an event now would find the buffer taken.
        !self.again.get()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_idle_readers_allocation_stays_small() {
        // One per idle connection: with the `Rc` counts, at most 104 bytes (a 112-byte malloc
        // chunk).
        assert!(size_of::<super::Reader<Vec<u8>>>() <= 88);
    }
}

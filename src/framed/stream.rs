//! [`Framed`]: messages over a [`StreamSocket`], read one by one and written through a bounded queue.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::{Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};

use super::codec::{Decoder, Encoder};
use crate::buf::IoBuf;
use crate::net::stream::StreamSocket;

/// How much a single read asks for at most.
const READ_CHUNK: usize = 16 * 1024;
/// How many queued chunks one vectored write takes at most.
const WRITE_BATCH: usize = 64;
/// The default high-water mark of the send queue.
pub const DEFAULT_HIGH_WATER: usize = 1 << 20;

/// Why [`Framed::try_send`] refused a message; the message comes back inside.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// The queue holds the high-water mark or more: wait for [`Framed::ready`] (or `on_drain`).
    Full(T),
    /// The connection is closing or failed: nothing more can be sent.
    Closed(T),
    /// The codec could not encode the message (it is dropped).
    Invalid(io::Error),
}

impl<T> TrySendError<T> {
    /// The message that was not sent, unless the codec refused it.
    pub fn into_inner(self) -> Option<T> {
        match self {
            TrySendError::Full(t) | TrySendError::Closed(t) => Some(t),
            TrySendError::Invalid(_) => None,
        }
    }
}

impl<T> std::fmt::Display for TrySendError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrySendError::Full(_) => f.write_str("the send queue is at its high-water mark"),
            TrySendError::Closed(_) => f.write_str("the connection is closed"),
            TrySendError::Invalid(e) => write!(f, "the message cannot be encoded: {e}"),
        }
    }
}

struct State<C> {
    codec: C,
    /// Bytes read and not yet decoded (never more than the codec's maximum).
    read_buf: Option<BytesMut>,
    eof: bool,
    read_error: Option<io::Error>,
    /// Encoded messages not yet handed to a write.
    pending: BytesMut,
    /// Chunks waiting to be written, in order.
    queue: VecDeque<Bytes>,
    queued: usize,
    writing: bool,
    closing: bool,
    write_error: Option<io::ErrorKind>,
    drain_wakers: Vec<Waker>,
    on_drain: Vec<Box<dyn FnOnce()>>,
}

struct Shared<C> {
    socket: StreamSocket,
    state: RefCell<State<C>>,
    high_water: Cell<usize>,
}

/// Messages over a stream socket, cut and written by a codec.
///
/// Reading: [`next`](Framed::next) (a future) or [`read_frames`](Framed::read_frames) (a handler
/// called once per message); several messages from one read come in order, and a partial message is
/// kept until the rest arrives. Writing: [`try_send`](Framed::try_send) queues a message unless the
/// queue is at its high-water mark (backpressure the sender sees), [`send`](Framed::send) waits for
/// room; queued messages go out batched in vectored writes. [`close`](Framed::close) closes once the
/// queue has drained. `Framed` is a cheap `Rc` handle: clones share the connection.
///
/// ```
/// use aio::framed::{Frame, Framed, TypeLengthCodec};
/// let svc = aio::IoService::new()?;
/// let (a, b) = aio::StreamSocket::pair(&svc)?;
/// let (a, b) = (Framed::new(a, TypeLengthCodec::new()), Framed::new(b, TypeLengthCodec::new()));
/// a.try_send(Frame::new(1, &b"one"[..])).unwrap();
/// a.try_send(Frame::new(2, &b"two"[..])).unwrap();
/// let first = svc.block_on(b.next()).unwrap()?;
/// let second = svc.block_on(b.next()).unwrap()?;
/// assert_eq!((first.kind, second.kind), (1, 2));
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Framed<C> {
    shared: Rc<Shared<C>>,
}

impl<C> Clone for Framed<C> {
    fn clone(&self) -> Self {
        Framed {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Decoder + 'static> Framed<C> {
    /// Frames `socket` with `codec`, with the default high-water mark (1 MiB).
    pub fn new(socket: StreamSocket, codec: C) -> Framed<C> {
        Framed {
            shared: Rc::new(Shared {
                socket,
                state: RefCell::new(State {
                    codec,
                    read_buf: Some(BytesMut::new()),
                    eof: false,
                    read_error: None,
                    pending: BytesMut::new(),
                    queue: VecDeque::new(),
                    queued: 0,
                    writing: false,
                    closing: false,
                    write_error: None,
                    drain_wakers: Vec::new(),
                    on_drain: Vec::new(),
                }),
                high_water: Cell::new(DEFAULT_HIGH_WATER),
            }),
        }
    }

    /// Sets the send queue's high-water mark in bytes (at least 1).
    pub fn set_high_water(&self, bytes: usize) {
        self.shared.high_water.set(bytes.max(1));
    }

    /// The underlying socket.
    pub fn socket(&self) -> &StreamSocket {
        &self.shared.socket
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        let state = self.shared.state.borrow();
        state.queued + state.pending.len()
    }

    /// Whether the queue is at or over its high-water mark (`try_send` would refuse).
    pub fn is_full(&self) -> bool {
        self.queued_bytes() >= self.shared.high_water.get()
    }

    /// The next message: `None` at a clean end of stream; an error ends the stream (a partial message
    /// at the end is `UnexpectedEof`, an oversize one `InvalidData`).
    pub fn next(&self) -> impl Future<Output = Option<io::Result<C::Item>>> + 'static {
        let shared = self.shared.clone();
        async move { next_message(&shared).await }
    }

    /// Calls `handler` once per message, in order, until the end of stream (`None`) or an error
    /// (`Some(Err)`), after which it is called no more; the first call comes after this returns. The
    /// reading keeps the connection alive.
    pub fn read_frames<F>(&self, handler: F)
    where
        F: FnMut(Option<io::Result<C::Item>>) + 'static,
    {
        let shared = self.shared.clone();
        let svc = self.shared.socket.service().clone();
        svc.spawn(async move {
            let mut handler = handler;
            loop {
                let item = next_message(&shared).await;
                let last = !matches!(item, Some(Ok(_)));
                handler(item);
                if last {
                    return;
                }
            }
        });
    }

    /// Closes the connection once every queued message has been written (its write side is shut
    /// down, then the socket closed); further sends are refused.
    pub fn close(&self) {
        let idle = {
            let mut state = self.shared.state.borrow_mut();
            state.closing = true;
            !state.writing && state.queue.is_empty() && state.pending.is_empty()
        };
        if idle {
            finish_close(&self.shared);
        } else {
            flush(&self.shared);
        }
    }

    /// Calls `f` once, when the queue next falls below its high-water mark (at once, on the next
    /// turn, if it already is).
    pub fn on_drain(&self, f: impl FnOnce() + 'static) {
        if self.is_full() {
            self.shared.state.borrow_mut().on_drain.push(Box::new(f));
        } else {
            self.shared.socket.service().post(f);
        }
    }

    /// Completes when the queue is below its high-water mark (or the connection failed).
    pub fn ready(&self) -> impl Future<Output = ()> + 'static {
        let shared = self.shared.clone();
        poll_fn(move |cx| {
            let mut state = shared.state.borrow_mut();
            if state.queued + state.pending.len() < shared.high_water.get()
                || state.write_error.is_some()
            {
                Poll::Ready(())
            } else {
                state.drain_wakers.push(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

impl<C: Decoder + 'static> Framed<C> {
    /// Queues `item` unless the queue is at its high-water mark or the connection is closing; it is
    /// written as soon as the socket takes it, batched with other queued messages.
    ///
    /// # Errors
    /// [`TrySendError::Full`] (backpressure: the sender sees it instead of memory growing) or
    /// [`TrySendError::Closed`], with the message back; [`TrySendError::Invalid`] when the codec
    /// refuses the message (e.g. over the maximum frame).
    pub fn try_send<T>(&self, item: T) -> Result<(), TrySendError<T>>
    where
        C: Encoder<T>,
    {
        {
            let state = self.shared.state.borrow();
            if state.closing || state.write_error.is_some() {
                return Err(TrySendError::Closed(item));
            }
            if state.queued + state.pending.len() >= self.shared.high_water.get() {
                return Err(TrySendError::Full(item));
            }
        }
        self.encode_and_queue(item).map_err(TrySendError::Invalid)
    }

    /// Encodes `item` into the queue regardless of the high-water mark (for callers that check
    /// [`is_full`](Framed::is_full) themselves), and starts writing.
    ///
    /// # Errors
    /// What the codec reports (e.g. a message over the maximum frame), or `NotConnected` when closing.
    pub fn encode_and_queue<T>(&self, item: T) -> io::Result<()>
    where
        C: Encoder<T>,
    {
        {
            let mut state = self.shared.state.borrow_mut();
            if state.closing || state.write_error.is_some() {
                return Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the framed connection is closing or failed",
                ));
            }
            let state = &mut *state;
            state.codec.encode(item, &mut state.pending)?;
        }
        flush(&self.shared);
        Ok(())
    }

    /// Waits for room below the high-water mark, then queues `item`.
    ///
    /// # Errors
    /// As for [`encode_and_queue`](Framed::encode_and_queue).
    pub fn send<T>(&self, item: T) -> impl Future<Output = io::Result<()>> + 'static
    where
        C: Encoder<T>,
        T: 'static,
    {
        let this = self.clone();
        async move {
            this.ready().await;
            this.encode_and_queue(item)
        }
    }
}

async fn next_message<C: Decoder>(shared: &Rc<Shared<C>>) -> Option<io::Result<C::Item>> {
    loop {
        let want = {
            let mut state = shared.state.borrow_mut();
            let state = &mut *state;
            if let Some(e) = state.read_error.take() {
                state.eof = true;
                return Some(Err(e));
            }
            let Some(buf) = state.read_buf.as_mut() else {
                return Some(Err(io::Error::other(
                    "Framed: two readers at once (next() while another next() or read_frames runs)",
                )));
            };
            match state.codec.decode(buf) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => {}
                Err(e) => {
                    state.eof = true;
                    return Some(Err(e));
                }
            }
            if state.eof {
                if buf.is_empty() {
                    return None;
                }
                let n = buf.len();
                buf.clear();
                return Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("end of stream inside a message ({n} bytes of it received)"),
                )));
            }
            let room = state.codec.max_buffered().saturating_sub(buf.len());
            if room == 0 {
                state.eof = true;
                return Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the decoder needs more than its maximum buffered bytes",
                )));
            }
            room.min(READ_CHUNK)
        };
        let mut buf = shared
            .state
            .borrow_mut()
            .read_buf
            .take()
            .expect("checked above");
        buf.reserve(want);
        let start = buf.len();
        let target = buf.slice(start..start + want);
        let (res, target) = shared.socket.read_some(target).await;
        let buf = target.into_inner();
        let mut state = shared.state.borrow_mut();
        state.read_buf = Some(buf);
        match res {
            Ok(0) => state.eof = true,
            Ok(_) => {}
            Err(e) => state.read_error = Some(e),
        }
    }
}

/// Moves encoded bytes into the queue and starts a write unless one is in flight.
fn flush<C: 'static>(shared: &Rc<Shared<C>>) {
    let batch: Vec<Bytes> = {
        let mut state = shared.state.borrow_mut();
        if !state.pending.is_empty() {
            let chunk = state.pending.split().freeze();
            state.queued += chunk.len();
            state.queue.push_back(chunk);
        }
        if state.writing || state.queue.is_empty() || state.write_error.is_some() {
            return;
        }
        state.writing = true;
        let n = state.queue.len().min(WRITE_BATCH);
        state.queue.drain(..n).collect()
    };
    let next = shared.clone();
    shared
        .socket
        .write_vectored(batch)
        .then(move |(res, batch)| written(&next, res, batch));
}

fn written<C: 'static>(shared: &Rc<Shared<C>>, res: io::Result<usize>, batch: Vec<Bytes>) {
    let (wakers, callbacks, close_now) = {
        let mut state = shared.state.borrow_mut();
        state.writing = false;
        match res {
            Ok(written) => {
                state.queued -= written;
                // The batch went out in order: drop what was written, put the rest back in front.
                let mut n = written;
                let mut rest = Vec::new();
                for mut chunk in batch {
                    if n >= chunk.len() {
                        n -= chunk.len();
                    } else {
                        chunk.advance(n);
                        n = 0;
                        rest.push(chunk);
                    }
                }
                for chunk in rest.into_iter().rev() {
                    state.queue.push_front(chunk);
                }
            }
            Err(e) => {
                state.write_error = Some(e.kind());
                state.queue.clear();
                state.queued = 0;
                state.pending.clear();
            }
        }
        let below = state.queued + state.pending.len() < shared.high_water.get()
            || state.write_error.is_some();
        let (wakers, callbacks) = if below {
            (
                std::mem::take(&mut state.drain_wakers),
                std::mem::take(&mut state.on_drain),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let empty = state.queue.is_empty() && state.pending.is_empty();
        (
            wakers,
            callbacks,
            state.closing && (empty || state.write_error.is_some()),
        )
    };
    for w in wakers {
        w.wake();
    }
    for f in callbacks {
        f();
    }
    if close_now {
        finish_close(shared);
    } else {
        flush(shared);
    }
}

fn finish_close<C>(shared: &Rc<Shared<C>>) {
    let _ = shared.socket.shutdown(std::net::Shutdown::Write);
    shared.socket.close();
}

//! [`Framed`]: messages over a [`StreamSocket`], read one by one and written through a bounded queue.
//!
//! The state, the read side and the write side live in `state.rs`, `reader.rs` and `writer.rs`.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;

use super::codec::{Decoder, Encoder};
use super::reader::next_message;
use super::state::{DEFAULT_HIGH_WATER, Shared, State};
use super::writer::{feed_chunk, finish_close, flush, write_fed};
use crate::net::stream::StreamSocket;
use crate::op::{LocalCompletion, Op};

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

/// Messages over a stream socket, cut and written by a codec.
///
/// Reading: [`next`](Framed::next) (a future) or [`read_frames`](Framed::read_frames) (a handler
/// called once per message); several messages from one read come in order, and a partial message is
/// kept until the rest arrives. Writing: [`try_send`](Framed::try_send) queues a message unless the
/// queue is at its high-water mark (backpressure the sender sees), [`send`](Framed::send) waits for
/// room; queued messages go out batched in vectored writes. To answer a pipelined batch in one
/// write, [`feed`](Framed::feed) each reply (encoded, not written) and [`flush`](Framed::flush)
/// once; [`feed_bytes`](Framed::feed_bytes) adds ready `Bytes` without copying them.
/// [`close`](Framed::close) closes once the queue has drained. `Framed` is a cheap `Rc` handle:
/// clones share the connection.
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
    pub(super) shared: Rc<Shared<C>>,
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
                state: RefCell::new(State::new(codec)),
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
        self.shared.state.borrow().unwritten()
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

    /// Closes the connection once every queued (or fed) message has been written (its write side is shut
    /// down, then the socket closed); further sends are refused.
    pub fn close(&self) {
        let idle = {
            let mut state = self.shared.state.borrow_mut();
            state.closing = true;
            state.is_idle()
        };
        if idle {
            finish_close(&self.shared);
        } else {
            write_fed(&self.shared);
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
            if state.unwritten() < shared.high_water.get() || state.write_error.is_some() {
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
            if state.unwritten() >= self.shared.high_water.get() {
                return Err(TrySendError::Full(item));
            }
        }
        self.encode_and_queue(item).map_err(TrySendError::Invalid)
    }

    /// Encodes `item` into the queue regardless of the high-water mark (for callers that check
    /// [`is_full`](Framed::is_full) themselves), and starts writing it, with everything
    /// [fed](Framed::feed) before it.
    ///
    /// # Errors
    /// What the codec reports (e.g. a message over the maximum frame), or `NotConnected` when closing.
    pub fn encode_and_queue<T>(&self, item: T) -> io::Result<()>
    where
        C: Encoder<T>,
    {
        self.feed(item)?;
        write_fed(&self.shared);
        Ok(())
    }

    /// Encodes `item` into the write buffer **without writing it** (tokio-util's `SinkExt::feed`):
    /// it goes out with the next [`flush`](Framed::flush) (or `send`, `try_send`, `close`), in one
    /// write with everything fed before it. For pipelined requests: feed the reply to each request
    /// of a batch, then flush once.
    ///
    /// The high-water mark is not checked (a batch is bounded by what was read; check
    /// [`is_full`](Framed::is_full) for more).
    ///
    /// ```
    /// use aio::framed::{Framed, LineCodec};
    /// let svc = aio::IoService::new()?;
    /// let (a, b) = aio::StreamSocket::pair(&svc)?;
    /// let server = Framed::new(a, LineCodec::new(1024));
    /// for reply in ["+OK", "+PONG", ":42"] {
    ///     server.feed(reply)?; // nothing written yet
    /// }
    /// assert_eq!(server.queued_bytes(), 14);
    /// svc.block_on(server.flush())?; // one write of all three
    /// assert_eq!(server.queued_bytes(), 0);
    /// let (res, got) = svc.block_on(b.read_exact(vec![0; 14]));
    /// res?;
    /// assert_eq!(got, b"+OK\n+PONG\n:42\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// What the codec reports (nothing is fed then), or `NotConnected` when closing or failed.
    pub fn feed<T>(&self, item: T) -> io::Result<()>
    where
        C: Encoder<T>,
    {
        let mut state = self.shared.state.borrow_mut();
        state.refuse()?;
        let state = &mut *state;
        state.codec.encode(item, &mut state.pending)
    }

    /// Adds bytes that are already encoded (a cached reply, a file's contents, a body beside a
    /// header [fed](Framed::feed) through the codec) after everything fed so far, **without copying
    /// them** and without writing: the write hands the `Bytes` itself to the kernel, in a vectored
    /// write with the chunks around it, on every backend. The codec never sees them, so they must
    /// be valid on the wire as they are.
    ///
    /// ```
    /// use aio::framed::{Framed, LineCodec};
    /// use bytes::Bytes;
    /// let svc = aio::IoService::new()?;
    /// let (a, b) = aio::StreamSocket::pair(&svc)?;
    /// let server = Framed::new(a, LineCodec::new(1024));
    /// let cached = Bytes::from_static(b"$5\r\nhello\r\n");
    /// server.feed("header")?;
    /// server.feed_bytes(cached.clone())?; // the same memory, written as is
    /// server.feed("trailer")?;
    /// svc.block_on(server.flush())?;
    /// let (res, got) = svc.block_on(b.read_exact(vec![0; 26]));
    /// res?;
    /// assert_eq!(got, b"header\n$5\r\nhello\r\ntrailer\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// `NotConnected` when closing or failed.
    pub fn feed_bytes(&self, bytes: Bytes) -> io::Result<()> {
        let mut state = self.shared.state.borrow_mut();
        state.refuse()?;
        feed_chunk(&mut state, bytes);
        Ok(())
    }

    /// Writes everything fed (and queued) so far: an operation that completes with `Ok(())` once
    /// those bytes are all written, or with the error of the write that failed (the connection
    /// then sends no more); `.then(handler)` or `.await` it like any other. Bytes fed after this
    /// call are not waited for (nor written, until the next flush). With nothing to write it
    /// completes at once.
    ///
    /// Dropping the operation does not stop the writing: the bytes go out anyway.
    ///
    /// ```
    /// use aio::framed::{Frame, Framed, TypeLengthCodec};
    /// let svc = aio::IoService::new()?;
    /// let (a, b) = aio::StreamSocket::pair(&svc)?;
    /// let (a, b) = (Framed::new(a, TypeLengthCodec::new()), Framed::new(b, TypeLengthCodec::new()));
    /// a.feed(Frame::new(1, &b"first"[..]))?;
    /// a.feed(Frame::new(2, &b"second"[..]))?;
    /// a.flush().then(|res| res.expect("written"));
    /// assert_eq!(svc.block_on(b.next()).unwrap()?.kind, 1);
    /// assert_eq!(svc.block_on(b.next()).unwrap()?.kind, 2);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn flush(&self) -> Op<LocalCompletion<()>> {
        flush(&self.shared)
    }

    /// Waits for room below the high-water mark, then queues `item` and starts writing it, with
    /// everything [fed](Framed::feed) before it; completes once it is queued (to wait until it is
    /// written, [`feed`](Framed::feed) it and await [`flush`](Framed::flush)).
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

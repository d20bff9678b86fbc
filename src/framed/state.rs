//! What a [`Framed`](super::Framed) connection keeps: the codec, the read buffer, and the write side's
//! buffers (fed, queued, in flight) with the flushes waiting on them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::task::Waker;

use bytes::{Bytes, BytesMut};

use crate::net::stream::StreamSocket;
use crate::op::local_completion::LocalCompleter;

/// How much a single read asks for at most.
pub(super) const READ_CHUNK: usize = 16 * 1024;
/// How many queued chunks one vectored write takes at most.
pub(super) const WRITE_BATCH: usize = 64;
/// The default high-water mark of the send queue.
pub const DEFAULT_HIGH_WATER: usize = 1 << 20;

pub(super) struct State<C> {
    pub(super) codec: C,
    /// Bytes read and not yet decoded (never more than the codec's maximum).
    pub(super) read_buf: Option<BytesMut>,
    pub(super) eof: bool,
    pub(super) read_error: Option<io::Error>,
    /// Encoded messages not yet handed to the writer: the encoder's target.
    pub(super) pending: BytesMut,
    /// Chunks fed and not yet flushed (`feed_bytes`, and what was encoded before each), in order;
    /// all of them come before `pending`.
    pub(super) fed: VecDeque<Bytes>,
    pub(super) fed_len: usize,
    /// Chunks handed to the writer and waiting for a write, in order.
    pub(super) queue: VecDeque<Bytes>,
    pub(super) queued: usize,
    /// Bytes handed to the writer, and bytes written, since the start: a flush completes once
    /// `written` reaches what had been handed over when it was called.
    pub(super) total_queued: u64,
    pub(super) total_written: u64,
    /// Flushes waiting, by the count of bytes each waits for (in increasing order).
    pub(super) flushes: VecDeque<(u64, LocalCompleter<()>)>,
    pub(super) writing: bool,
    pub(super) closing: bool,
    pub(super) write_error: Option<io::ErrorKind>,
    pub(super) drain_wakers: Vec<Waker>,
    pub(super) on_drain: Vec<Box<dyn FnOnce()>>,
    /// Writes started, for the tests of batching.
    #[cfg(test)]
    pub(super) writes: usize,
}

impl<C> State<C> {
    pub(super) fn new(codec: C) -> State<C> {
        State {
            codec,
            read_buf: Some(BytesMut::new()),
            eof: false,
            read_error: None,
            pending: BytesMut::new(),
            fed: VecDeque::new(),
            fed_len: 0,
            queue: VecDeque::new(),
            queued: 0,
            total_queued: 0,
            total_written: 0,
            flushes: VecDeque::new(),
            writing: false,
            closing: false,
            write_error: None,
            drain_wakers: Vec::new(),
            on_drain: Vec::new(),
            #[cfg(test)]
            writes: 0,
        }
    }

    /// Every byte not yet written: fed, encoded, queued (and in flight).
    pub(super) fn unwritten(&self) -> usize {
        self.queued + self.fed_len + self.pending.len()
    }

    /// Whether nothing is left to write.
    pub(super) fn is_idle(&self) -> bool {
        !self.writing && self.unwritten() == 0
    }

    /// The error for a send on a connection that is closing or failed.
    pub(super) fn refuse(&self) -> io::Result<()> {
        if self.closing || self.write_error.is_some() {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the framed connection is closing or failed",
            ));
        }
        Ok(())
    }
}

pub(super) struct Shared<C> {
    pub(super) socket: StreamSocket,
    pub(super) state: RefCell<State<C>>,
    pub(super) high_water: Cell<usize>,
}

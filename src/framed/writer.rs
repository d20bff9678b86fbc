//! The write side of [`Framed`](super::Framed): what is fed waits; a flush (or a send) hands it to
//! the writer, which writes the queue in vectored batches, one write at a time, and completes the
//! flushes whose bytes are out.

use std::io;
use std::rc::Rc;

use bytes::{Buf, Bytes};

use super::state::{Shared, State, WRITE_BATCH};
use crate::op::Op;
use crate::op::local_completion::{LocalCompletion, local_completion, ready};

/// Adds `bytes` after everything fed so far, without writing.
pub(super) fn feed_chunk<C>(state: &mut State<C>, bytes: Bytes) {
    if bytes.is_empty() {
        return;
    }
    // What was encoded before the chunk goes before it.
    if !state.pending.is_empty() {
        let encoded = state.pending.split().freeze();
        state.fed_len += encoded.len();
        state.fed.push_back(encoded);
    }
    state.fed_len += bytes.len();
    state.fed.push_back(bytes);
}

/// Hands everything fed and encoded to the writer, in order.
fn commit<C>(state: &mut State<C>) {
    let before = state.queued;
    state.queued += state.fed_len;
    state.fed_len = 0;
    state.queue.extend(state.fed.drain(..));
    if !state.pending.is_empty() {
        let encoded = state.pending.split().freeze();
        state.queued += encoded.len();
        state.queue.push_back(encoded);
    }
    state.total_queued += (state.queued - before) as u64;
}

/// Hands everything fed to the writer and starts a write unless one is in flight.
pub(super) fn write_fed<C: 'static>(shared: &Rc<Shared<C>>) {
    commit(&mut shared.state.borrow_mut());
    write_queued(shared);
}

/// Everything fed, written: an operation that completes once the bytes fed before this call are
/// out (or the write failed).
pub(super) fn flush<C: 'static>(shared: &Rc<Shared<C>>) -> Op<LocalCompletion<()>> {
    let reactor = shared.socket.service().reactor().clone();
    let waiting = {
        let mut state = shared.state.borrow_mut();
        if let Some(kind) = state.write_error {
            return ready(&reactor, Err(failed(kind)));
        }
        commit(&mut state);
        let target = state.total_queued;
        if state.total_written >= target {
            None
        } else {
            let (completer, op) = local_completion(&reactor);
            state.flushes.push_back((target, completer));
            Some(op)
        }
    };
    match waiting {
        Some(op) => {
            write_queued(shared);
            op
        }
        None => ready(&reactor, Ok(())),
    }
}

/// Starts a write of the queue unless one is in flight (or there is nothing to write).
fn write_queued<C: 'static>(shared: &Rc<Shared<C>>) {
    let batch: Vec<Bytes> = {
        let mut state = shared.state.borrow_mut();
        if state.writing || state.queue.is_empty() || state.write_error.is_some() {
            return;
        }
        state.writing = true;
        #[cfg(test)]
        {
            state.writes += 1;
        }
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
    let (wakers, callbacks, flushed, close_now) = {
        let mut state = shared.state.borrow_mut();
        state.writing = false;
        let mut flushed = Vec::new();
        match res {
            Ok(written) => {
                state.queued -= written;
                state.total_written += written as u64;
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
                while let Some(&(target, _)) = state.flushes.front() {
                    if target > state.total_written {
                        break;
                    }
                    let (_, completer) = state.flushes.pop_front().expect("seen above");
                    flushed.push((completer, Ok(())));
                }
            }
            Err(e) => {
                state.write_error = Some(e.kind());
                state.queue.clear();
                state.queued = 0;
                state.fed.clear();
                state.fed_len = 0;
                state.pending.clear();
                flushed.extend(
                    state
                        .flushes
                        .drain(..)
                        .map(|(_, c)| (c, Err(io::Error::new(e.kind(), e.to_string())))),
                );
            }
        }
        let below = state.unwritten() < shared.high_water.get() || state.write_error.is_some();
        let (wakers, callbacks) = if below {
            (
                std::mem::take(&mut state.drain_wakers),
                std::mem::take(&mut state.on_drain),
            )
        } else {
            (Vec::new(), Vec::new())
        };
        let empty = state.unwritten() == 0;
        (
            wakers,
            callbacks,
            flushed,
            state.closing && (empty || state.write_error.is_some()),
        )
    };
    for (completer, res) in flushed {
        completer.complete(res);
    }
    for w in wakers {
        w.wake();
    }
    for f in callbacks {
        f();
    }
    if close_now {
        finish_close(shared);
    } else {
        write_queued(shared);
    }
}

/// The error of a flush on a connection whose write failed with `kind`.
fn failed(kind: io::ErrorKind) -> io::Error {
    io::Error::new(kind, "an earlier write of this framed connection failed")
}

/// Shuts the write side down and closes the socket.
pub(super) fn finish_close<C>(shared: &Rc<Shared<C>>) {
    let _ = shared.socket.shutdown(std::net::Shutdown::Write);
    shared.socket.close();
}

#[cfg(test)]
mod tests {
    use super::super::{Framed, LineCodec};
    use crate::{IoService, StreamSocket};
    use bytes::Bytes;

    /// Writes the framed connection has started so far.
    fn writes(framed: &Framed<LineCodec>) -> usize {
        framed.shared.state.borrow().writes
    }

    #[test]
    fn a_fed_batch_goes_out_in_one_write() {
        let svc = IoService::new().unwrap();
        let (a, b) = StreamSocket::pair(&svc).unwrap();
        let framed = Framed::new(a, LineCodec::new(64));
        let mut want = Vec::new();
        for i in 0..50 {
            let line = format!("reply {i}");
            framed.feed(&line).unwrap();
            want.extend_from_slice(line.as_bytes());
            want.push(b'\n');
            if i % 10 == 0 {
                let chunk = format!("chunk {i}\n");
                want.extend_from_slice(chunk.as_bytes());
                framed.feed_bytes(Bytes::from(chunk)).unwrap();
            }
        }
        svc.poll().unwrap();
        assert_eq!(writes(&framed), 0, "feeding writes nothing");
        svc.block_on(framed.flush()).unwrap();
        assert_eq!(writes(&framed), 1, "a batch in one write");
        let (res, got) = svc.block_on(b.read_exact(vec![0; want.len()]));
        res.unwrap();
        assert_eq!(got, want);
        // Sending each message starts a write of its own when none is in flight.
        framed.encode_and_queue("one").unwrap();
        svc.block_on(framed.flush()).unwrap();
        assert_eq!(writes(&framed), 2);
    }

    #[test]
    fn fed_bytes_are_queued_without_a_copy() {
        let svc = IoService::new().unwrap();
        let (a, _b) = StreamSocket::pair(&svc).unwrap();
        let framed = Framed::new(a, LineCodec::new(64));
        let body = Bytes::from(vec![7u8; 4096]);
        framed.feed("head").unwrap();
        framed.feed_bytes(body.clone()).unwrap();
        let state = framed.shared.state.borrow();
        let chunks: Vec<&Bytes> = state.fed.iter().collect();
        assert_eq!(chunks.len(), 2, "what was encoded before, then the chunk");
        assert_eq!(&chunks[0][..], b"head\n");
        assert_eq!(chunks[1].as_ptr(), body.as_ptr(), "the same memory");
    }
}

//! Persistent reads awaited chunk by chunk (`read_stream`): an echo built from it moves a large
//! transfer intact over TCP and Unix, chunks come once and in order (a buffer smaller than what
//! waits included), bytes that come while a chunk is held are not lost, the end of the stream, a
//! cancel or a close end it with one last result, reads started meanwhile wait for the stream to be
//! dropped, and a read pending before it goes first.

use std::cell::RefCell;
use std::io;
use std::net::Shutdown;
use std::rc::Rc;

use aio::{IoService, StreamSocket};

use crate::util::{self, Transport};

/// Echoes every chunk with `try_write`, falling back to `write_all` for what the socket did not
/// take; returns how many times it fell back.
async fn echo(socket: Rc<StreamSocket>) -> usize {
    let mut slow = 0;
    let mut chunks = socket.read_stream(vec![0u8; 1500]);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("echo read");
        let written = match socket.try_write(&chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("echo try_write: {e}"),
        };
        if written < chunk.len() {
            slow += 1;
            let rest = chunk[written..].to_vec();
            drop(chunk);
            let (res, _) = socket.write_all(rest).await;
            res.expect("echo write_all");
        }
    }
    // Ended: only `None` follows.
    assert!(chunks.next().await.is_none());
    slow
}

/// Everything `socket` reads until the end of the stream, through `read_stream` with a buffer of
/// `buffer` bytes.
async fn read_to_end(socket: &StreamSocket, buffer: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut chunks = socket.read_stream(vec![0u8; buffer]);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.expect("read");
        assert!(!chunk.is_empty() && chunk.len() <= buffer);
        got.extend_from_slice(&chunk);
    }
    got
}

fn echo_moves_the_bytes_intact(svc: &IoService, transport: Transport) {
    let Some(pair) = util::pair(svc, transport) else {
        return; // no IPv6 here: nothing to check
    };
    // A small send buffer on the echo's side: its writes must often be short.
    pair.b.set_send_buffer_size(4096).unwrap();
    let echoing = svc.spawn(echo(Rc::new(pair.b)));
    let data = util::pattern(1 << 20, 13);
    let client = Rc::new(pair.a);
    let writer = client.clone();
    let sent = data.clone();
    let writing = svc.spawn(async move {
        let (res, _) = writer.write_all(sent).await;
        res.expect("client write_all");
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let got = svc.block_on(async move { read_to_end(&client, 7_000).await });
    util::assert_same_bytes(&got, &data);
    svc.block_on(writing).unwrap();
    let slow = svc.block_on(echoing).unwrap();
    // 1 MiB through a 4 KiB send buffer: the fallback must have been taken.
    assert!(slow > 0, "the echo never had to fall back to write_all");
}

matrix_test!(echo_with_read_stream_and_try_write_tcp_v4, |svc| {
    echo_moves_the_bytes_intact(svc, Transport::TcpV4);
});

matrix_test!(echo_with_read_stream_and_try_write_tcp_v6, |svc| {
    echo_moves_the_bytes_intact(svc, Transport::TcpV6);
});

matrix_test!(echo_with_read_stream_and_try_write_unix, |svc| {
    echo_moves_the_bytes_intact(svc, Transport::Unix);
});

matrix_test!(a_small_buffer_takes_what_waits_in_order, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    // Far more than the buffer holds, all waiting before the first read: each read fills the
    // buffer, and nothing but `next()` itself reads what is left (no new event comes for it).
    let data = util::pattern(10_000, 5);
    assert_eq!(a.try_write(&data).unwrap(), data.len());
    drop(a);
    let got = svc.block_on(async move { read_to_end(&b, 7).await });
    util::assert_same_bytes(&got, &data);
});

/// Over TCP a short read proves the socket empty, so the stream waits for an event after it: the one
/// that comes while a chunk is held must not be lost. (Over Unix every chunk is followed by a read.)
fn held_chunk(svc: &IoService, transport: Transport) {
    let Some(util::Pair { a, b, .. }) = util::pair(svc, transport) else {
        return; // no IPv6 here: nothing to check
    };
    let (other_a, other_b) = StreamSocket::pair(svc).unwrap();
    let got = svc.block_on(async move {
        let mut chunks = b.read_stream(vec![0u8; 64]);
        a.try_write(b"first").unwrap();
        let chunk = chunks.next().await.unwrap().unwrap();
        assert_eq!(&*chunk, b"first");
        // Held across a loop turn that also sees `b` become readable again: the stream cannot read
        // into the borrowed buffer then, and must read those bytes when next asked.
        // (`other_b` is first known empty, so that its read waits for the loop's next events.)
        let mut scratch = [0u8; 8];
        let empty = other_b.try_read(&mut scratch).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
        a.try_write(b"second").unwrap();
        other_a.try_write(b"x").unwrap();
        let (res, _) = other_b.read_some(vec![0u8; 8]).await;
        assert_eq!(res.unwrap(), 1);
        assert_eq!(&*chunk, b"first", "the held chunk changed under it");
        drop(chunk);
        let chunk = chunks.next().await.unwrap().unwrap();
        chunk.to_vec()
    });
    assert_eq!(got, b"second");
}

matrix_test!(
    bytes_that_come_while_a_chunk_is_held_are_not_lost_tcp,
    |svc| {
        held_chunk(svc, Transport::TcpV4);
    }
);

matrix_test!(
    bytes_that_come_while_a_chunk_is_held_are_not_lost_unix,
    |svc| {
        held_chunk(svc, Transport::Unix);
    }
);

matrix_test!(the_end_of_the_stream_ends_it_for_good, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    svc.block_on(async move {
        let mut chunks = b.read_stream(vec![0u8; 64]);
        let (res, _) = a.write_all(b"abc".to_vec()).await;
        res.unwrap();
        drop(a);
        assert_eq!(&*chunks.next().await.unwrap().unwrap(), b"abc");
        assert!(chunks.next().await.is_none());
        assert!(chunks.next().await.is_none());
    });
});

/// A task waits for a chunk; another one `cancel()`s or `close()`s the socket: the waiting one gets
/// one `ECANCELED`, then the end.
fn ending_a_wait(svc: &IoService, close: bool) {
    let (_a, b) = StreamSocket::pair(svc).unwrap();
    let b = Rc::new(b);
    let reader = b.clone();
    let waiting = svc.spawn(async move {
        let mut chunks = reader.read_stream(vec![0u8; 64]);
        let first = chunks.next().await.map(|res| res.map(|c| c.len()));
        let then = chunks.next().await.map(|res| res.map(|c| c.len()));
        (first, then.is_none())
    });
    // Spawned second, so polled after the reader has started waiting.
    svc.spawn(async move {
        if close {
            b.close();
        } else {
            b.cancel();
        }
    });
    let (first, ended) = svc.block_on(waiting).unwrap();
    match first {
        Some(Err(e)) => assert!(aio::is_cancelled(&e), "expected ECANCELED, got {e}"),
        other => panic!("expected one ECANCELED, got {other:?}"),
    }
    assert!(ended, "more came after the cancellation");
}

matrix_test!(cancel_ends_a_waiting_stream_with_one_error, |svc| {
    ending_a_wait(svc, false);
});

matrix_test!(close_ends_a_waiting_stream_with_one_error, |svc| {
    ending_a_wait(svc, true);
});

matrix_test!(
    reads_started_meanwhile_wait_until_the_stream_is_dropped,
    |svc| {
        let (a, b) = StreamSocket::pair(svc).unwrap();
        let b = Rc::new(b);
        let later = Rc::new(RefCell::new(None));
        let got = svc.block_on({
            let (b, later) = (b.clone(), later.clone());
            async move {
                let mut chunks = b.read_stream(vec![0u8; 64]);
                let mut buf = [0u8; 8];
                let refused = b.try_read(&mut buf).unwrap_err();
                assert_eq!(refused.kind(), io::ErrorKind::WouldBlock);
                // Queued behind the stream: it must not take "one".
                b.read_some(vec![0u8; 64]).then(move |(res, buf)| {
                    let n = res.expect("read_some");
                    *later.borrow_mut() = Some(buf[..n].to_vec());
                });
                a.try_write(b"one").unwrap();
                let first = chunks.next().await.unwrap().unwrap().to_vec();
                drop(chunks);
                a.try_write(b"two").unwrap();
                first
            }
        });
        assert_eq!(got, b"one");
        svc.run_until_done().unwrap();
        assert_eq!(later.borrow().as_deref(), Some(&b"two"[..]));
    }
);

matrix_test!(a_read_pending_before_the_stream_goes_first, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let first = Rc::new(RefCell::new(None));
    {
        let first = first.clone();
        b.read_exact(vec![0u8; 3]).then(move |(res, buf)| {
            res.expect("read_exact");
            *first.borrow_mut() = Some(buf);
        });
    }
    let got = svc.block_on(async move {
        let mut chunks = b.read_stream(vec![0u8; 64]);
        a.try_write(b"abcdef").unwrap();
        drop(a);
        let mut got = Vec::new();
        while let Some(chunk) = chunks.next().await {
            got.extend_from_slice(&chunk.unwrap());
        }
        got
    });
    svc.run_until_done().unwrap(); // the read_exact's handler, if still queued
    assert_eq!(first.borrow().as_deref(), Some(&b"abc"[..]));
    assert_eq!(got, b"def");
});

matrix_test!(an_empty_buffer_or_a_closed_socket_is_one_error, |svc| {
    let (_a, b) = StreamSocket::pair(svc).unwrap();
    svc.block_on(async {
        let mut chunks = b.read_stream(Vec::new());
        match chunks.next().await {
            Some(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::InvalidInput),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
        assert!(chunks.next().await.is_none());
    });
    b.close();
    svc.block_on(async {
        let mut chunks = b.read_stream(vec![0u8; 8]);
        assert!(matches!(chunks.next().await, Some(Err(_))));
        assert!(chunks.next().await.is_none());
    });
});

matrix_test!(an_aborted_reader_leaves_the_socket_to_other_reads, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let b = Rc::new(b);
    let reader = b.clone();
    let waiting = svc.spawn(async move {
        let mut chunks = reader.read_stream(vec![0u8; 64]);
        let _ = chunks.next().await;
        unreachable!("nothing was written before the abort");
    });
    // Let the reader start waiting, then abort it: its stream is dropped with the task.
    svc.poll().unwrap();
    assert!(!waiting.is_finished());
    waiting.abort();
    svc.run_until_done().unwrap();
    a.try_write(b"after").unwrap();
    let (res, buf) = svc.block_on(b.read_some(vec![0u8; 16]));
    let n = res.unwrap();
    assert_eq!(&buf[..n], b"after");
});

matrix_test!(a_loop_dropped_under_a_waiting_reader, |svc| {
    // The reader's task still waits when its loop goes: dropping the task drops the
    // stream, which leaves a line that is being taken apart.
    let svc = util::fresh(svc);
    let (a, b) = StreamSocket::pair(&svc).unwrap();
    let b = Rc::new(b);
    let reader = b.clone();
    let waiting = svc.spawn(async move {
        let mut chunks = reader.read_stream(vec![0u8; 64]);
        chunks.next().await.map(|res| res.map(|c| c.len()))
    });
    svc.poll().unwrap();
    assert!(!waiting.is_finished());
    // And one held outside any task, dropped after the loop.
    let (c, d) = StreamSocket::pair(&svc).unwrap();
    let outside = d.read_stream(vec![0u8; 64]);
    drop(svc);
    drop((a, b, waiting));
    drop(outside);
    drop((c, d));
});

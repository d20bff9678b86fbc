//! futures-io's `AsyncRead` / `AsyncWrite` on stream sockets (`aio::compat::Io`, feature
//! `futures-io`): bytes arrive whole and in order through futures' own helpers, the halves of a
//! split socket wake their own tasks, closing is the peer's end of stream, and a read dropped while
//! it waits leaves the socket as it was.

use std::cell::Cell;
use std::io;
use std::rc::Rc;

use futures::io::{AsyncReadExt, AsyncWriteExt};

use aio::compat::Io;
use aio::{Acceptor, IoService, StreamSocket};

use crate::util::{self, Transport};

const TOTAL: usize = 4 * 1024 * 1024 + 17;

/// Echoes everything `server` reads with `futures::io::copy`, then closes its writing side.
fn spawn_copy_echo(svc: &IoService, server: StreamSocket) -> aio::JoinHandle<io::Result<u64>> {
    svc.spawn(async move {
        let (mut reader, mut writer) = server.compat().split();
        let copied = futures::io::copy(&mut reader, &mut writer).await?;
        writer.close().await?;
        Ok(copied)
    })
}

/// Sends a patterned stream through an echo and checks it comes back byte for byte: the client's
/// halves in two tasks (writer: chunks of odd sizes, then close; reader: to the end).
fn echo_through(svc: &IoService, client: StreamSocket, server: StreamSocket) {
    let echo = spawn_copy_echo(svc, server);
    let data = Rc::new(util::pattern(TOTAL, 7));
    let (mut reader, mut writer) = client.compat().split();
    let sent = svc.spawn({
        let data = data.clone();
        async move {
            for chunk in data.chunks(61_441) {
                writer.write_all(chunk).await?;
            }
            writer.close().await?;
            Ok::<_, io::Error>(())
        }
    });
    let received = svc.spawn(async move {
        let mut got = Vec::with_capacity(TOTAL);
        reader.read_to_end(&mut got).await?;
        Ok::<_, io::Error>(got)
    });
    let got = svc.block_on(received).unwrap().unwrap();
    svc.block_on(sent).unwrap().unwrap();
    assert_eq!(svc.block_on(echo).unwrap().unwrap(), TOTAL as u64);
    util::assert_same_bytes(&got, &data);
}

matrix_test!(copy_echo_over_tcp_is_byte_for_byte, |svc| {
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = acceptor.local_endpoint().unwrap();
    let client = svc.spawn({
        let svc = svc.local();
        async move { StreamSocket::dial(&svc, &addr).await }
    });
    let (server, _) = svc.block_on(acceptor.accept()).unwrap();
    let client = svc.block_on(client).unwrap().unwrap();
    echo_through(svc, client, server);
});

matrix_test!(copy_echo_over_unix_is_byte_for_byte, |svc| {
    let pair = util::pair(svc, Transport::Unix).unwrap();
    echo_through(svc, pair.a, pair.b);
});

matrix_test!(vectored_writes_and_exact_reads, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let (mut a, mut b) = (Io::new(&pair.a), Io::new(&pair.b));
    let parts: [&[u8]; 3] = [b"one ", b"two ", b"three"];
    let got = svc.block_on(async {
        let slices: Vec<io::IoSlice<'_>> = parts.iter().map(|p| io::IoSlice::new(p)).collect();
        let n = a.write_vectored(&slices).await?;
        assert_eq!(n, 13, "a fresh socket takes all of a small gather");
        a.flush().await?;
        let mut buf = [0u8; 13];
        b.read_exact(&mut buf).await?;
        Ok::<_, io::Error>(buf)
    });
    assert_eq!(&got.unwrap(), b"one two three");
});

matrix_test!(
    close_is_the_peers_end_of_stream_and_reading_goes_on,
    |svc| {
        let pair = util::pair(svc, Transport::TcpV4).unwrap();
        let (mut a, mut b) = (pair.a.compat(), pair.b.compat());
        svc.block_on(async {
            a.write_all(b"last words").await?;
            a.close().await?;
            let mut got = Vec::new();
            b.read_to_end(&mut got).await?;
            assert_eq!(got, b"last words");
            // Only a's writing side is shut: it still reads what b sends.
            b.write_all(b"reply").await?;
            b.close().await?;
            let mut reply = Vec::new();
            a.read_to_end(&mut reply).await?;
            assert_eq!(reply, b"reply");
            // And the end of stream stays the end.
            assert_eq!(a.read(&mut [0u8; 8]).await?, 0);
            Ok::<_, io::Error>(())
        })
        .unwrap();
    }
);

matrix_test!(a_read_pending_on_a_quiet_socket_is_woken_by_data, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let mut b = Io::new(&pair.b);
    let mut buf = [0u8; 64];
    let (counter, waker) = util::CountingWaker::new();
    {
        let mut read = b.read(&mut buf);
        assert!(util::poll_once(&mut read, &waker).is_pending());
        // Quiet: the loop turns without waking it.
        assert_eq!(svc.poll().unwrap(), 0);
        assert_eq!(counter.count(), 0);
        assert!(util::poll_once(&mut read, &waker).is_pending());
        assert_eq!(pair.a.try_write(b"wake up").unwrap(), 7);
        // A foreign waker runs no handler of the loop: turn it without blocking until woken.
        while counter.count() == 0 {
            svc.poll().unwrap();
        }
        match util::poll_once(&mut read, &waker) {
            std::task::Poll::Ready(n) => assert_eq!(n.unwrap(), 7),
            std::task::Poll::Pending => panic!("woken, yet no bytes"),
        }
    }
    assert_eq!(&buf[..7], b"wake up");
});

matrix_test!(dropping_a_pending_read_leaves_the_socket_usable, |svc| {
    let pair = util::pair(svc, Transport::Unix).unwrap();
    let mut b = Io::new(&pair.b);
    let (counter, waker) = util::CountingWaker::new();
    let mut buf = [0u8; 64];
    {
        let mut read = b.read(&mut buf);
        assert!(util::poll_once(&mut read, &waker).is_pending());
    }
    // The wrapper's waker still waits in line: data wakes the old waker, and the next read,
    // through the same wrapper, gets every byte.
    pair.a.try_write(b"first").unwrap();
    let n = svc.block_on(b.read(&mut buf)).unwrap();
    assert_eq!(&buf[..n], b"first");
    assert!(counter.count() <= 1);

    // Pending again, then the wrapper itself dropped: its waiter leaves the line, and aio's own
    // operations on the socket go on as before.
    {
        let mut read = b.read(&mut buf);
        assert!(util::poll_once(&mut read, &waker).is_pending());
    }
    drop(b);
    pair.a.try_write(b"second").unwrap();
    let (res, got) = svc.block_on(pair.b.read_some(vec![0u8; 64]));
    assert_eq!(&got[..res.unwrap()], b"second");
    let back = Io::new(&pair.b).into_inner();
    assert!(back.is_open());
});

matrix_test!(halves_in_two_tasks_wake_independently, |svc| {
    // A reader waits on a quiet socket in one task while another task writes on the same socket:
    // the write's progress must not depend on the read being woken, nor the reverse.
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let (mut reader, mut writer) = pair.a.compat().split();
    let peer = Rc::new(pair.b);
    let read_done = Rc::new(Cell::new(false));
    let reading = svc.spawn({
        let read_done = read_done.clone();
        async move {
            let mut buf = [0u8; 5];
            reader.read_exact(&mut buf).await?;
            read_done.set(true);
            Ok::<_, io::Error>(buf)
        }
    });
    let data = util::pattern(1 << 20, 3);
    let writing = svc.spawn({
        let data = data.clone();
        async move {
            writer.write_all(&data).await?;
            Ok::<_, io::Error>(())
        }
    });
    // The peer drains everything the writer sends before answering the reader.
    let drained = svc.block_on({
        let peer = peer.clone();
        async move {
            let (res, buf) = peer.read_exact(vec![0u8; 1 << 20]).await;
            res.map(|()| buf)
        }
    });
    util::assert_same_bytes(&drained.unwrap(), &data);
    svc.block_on(writing).unwrap().unwrap();
    assert!(!read_done.get(), "nothing was sent to the reader yet");
    let (res, _) = svc.block_on(peer.write_all(b"hello".to_vec()));
    res.unwrap();
    assert_eq!(&svc.block_on(reading).unwrap().unwrap(), b"hello");
});

matrix_test!(cancel_fails_a_pending_read_and_close_ends_it, |svc| {
    let pair = util::pair(svc, Transport::Unix).unwrap();
    let mut b = Io::new(&pair.b);
    let mut buf = [0u8; 8];
    let (_counter, waker) = util::CountingWaker::new();
    let mut read = b.read(&mut buf);
    assert!(util::poll_once(&mut read, &waker).is_pending());
    pair.b.cancel();
    match util::poll_once(&mut read, &waker) {
        std::task::Poll::Ready(res) => util::assert_cancelled(&res),
        std::task::Poll::Pending => panic!("cancel() left the read pending"),
    }
    drop(read);
    // Usable after the cancel.
    pair.a.try_write(b"ok").unwrap();
    assert_eq!(svc.block_on(b.read(&mut buf)).unwrap(), 2);
    pair.b.close();
    util::assert_kind(&svc.block_on(b.read(&mut buf)), io::ErrorKind::NotConnected);
});

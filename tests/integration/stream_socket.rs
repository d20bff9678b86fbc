//! `StreamSocket` data transfer: large transfers in odd chunks over TCP v4, TCP v6 and Unix in both
//! completion styles, end of stream, vectored I/O, writes to a reset peer.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::rc::Rc;

use aio::{IoBuf, IoService, StreamSocket};

use crate::util::{self, Transport};

const TOTAL: usize = 100_000;
const WRITE_CHUNKS: &[usize] = &[1, 7, 13, 4093, 2, 65_537, 509, 3, 8191];
const READ_SIZES: &[usize] = &[1, 3, 997, 5, 4099, 17, 60_000, 2];

/// Small kernel buffers, so that the transfer has to wait for readiness many times.
fn shrink_buffers(pair: &util::Pair) {
    if pair.dir.is_none() {
        // TCP: no Nagle delays on the small chunks.
        pair.a.set_nodelay(true).unwrap();
    }
    // (A small receive buffer on TCP over loopback, whose MSS is 64 KiB, stalls on the persist
    // timer: the receiver never advertises less than an MSS. Only the sender's buffer shrinks.)
    pair.a.set_send_buffer_size(4096).unwrap();
    if pair.dir.is_some() {
        pair.b.set_recv_buffer_size(4096).unwrap();
    }
}

/// Callback style: a writer that chains `write_all`s of odd sizes, then shuts down writing, and a
/// reader
/// that chains `read_some`s of odd sizes until end of stream. Returns what the reader got.
fn transfer_with_handlers(svc: &IoService, pair: util::Pair, data: Rc<Vec<u8>>) -> Vec<u8> {
    fn write_from(
        sock: Rc<StreamSocket>,
        data: Rc<Vec<u8>>,
        pos: usize,
        step: usize,
        done: Rc<dyn Fn()>,
    ) {
        if pos == data.len() {
            sock.shutdown(Shutdown::Write).unwrap();
            done();
            return;
        }
        let n = WRITE_CHUNKS[step % WRITE_CHUNKS.len()].min(data.len() - pos);
        let chunk = data[pos..pos + n].to_vec();
        let next = sock.clone();
        sock.write_all(chunk).then(move |(res, buf)| {
            res.unwrap_or_else(|e| panic!("write_all of {n} bytes at {pos}: {e}"));
            assert_eq!(buf.len(), n, "the buffer comes back whole");
            write_from(next, data, pos + n, step + 1, done);
        });
    }
    fn read_more(
        sock: Rc<StreamSocket>,
        got: Rc<RefCell<Vec<u8>>>,
        step: usize,
        done: Rc<dyn Fn()>,
    ) {
        let size = READ_SIZES[step % READ_SIZES.len()];
        let next = sock.clone();
        sock.read_some(vec![0u8; size]).then(move |(res, buf)| {
            let n = res.unwrap_or_else(|e| panic!("read_some of {size}: {e}"));
            assert!(n <= size);
            assert_eq!(buf.len(), size, "the buffer comes back with its length");
            if n == 0 {
                done();
                return;
            }
            got.borrow_mut().extend_from_slice(&buf[..n]);
            read_more(next, got, step + 1, done);
        });
    }

    shrink_buffers(&pair);
    let remaining = Rc::new(Cell::new(2));
    let done: Rc<dyn Fn()> = {
        let (remaining, h) = (remaining.clone(), svc.local());
        Rc::new(move || {
            remaining.set(remaining.get() - 1);
            if remaining.get() == 0 {
                h.stop();
            }
        })
    };
    let got = Rc::new(RefCell::new(Vec::with_capacity(TOTAL)));
    write_from(Rc::new(pair.a), data, 0, 0, done.clone());
    read_more(Rc::new(pair.b), got.clone(), 0, done);
    svc.restart();
    svc.run().unwrap();
    assert_eq!(remaining.get(), 0);
    got.take()
}

/// Future style: the same transfer as two spawned tasks.
fn transfer_with_futures(svc: &IoService, pair: util::Pair, data: Rc<Vec<u8>>) -> Vec<u8> {
    shrink_buffers(&pair);
    let util::Pair { a, b, dir } = pair;
    let writer = svc.spawn(async move {
        let (mut pos, mut step) = (0, 0);
        while pos < data.len() {
            let n = WRITE_CHUNKS[step % WRITE_CHUNKS.len()].min(data.len() - pos);
            let (res, buf) = a.write_all(data[pos..pos + n].to_vec()).await;
            res.unwrap_or_else(|e| panic!("write_all of {n} bytes at {pos}: {e}"));
            assert_eq!(buf.len(), n);
            pos += n;
            step += 1;
        }
        a.shutdown(Shutdown::Write).unwrap();
        step
    });
    let reader = svc.spawn(async move {
        let mut got = Vec::with_capacity(TOTAL);
        for step in 0.. {
            let size = READ_SIZES[step % READ_SIZES.len()];
            let (res, buf) = b.read_some(vec![0u8; size]).await;
            let n = res.unwrap_or_else(|e| panic!("read_some of {size}: {e}"));
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        got
    });
    let writes = svc.block_on(writer).unwrap();
    assert!(writes > 10, "the data went out in many chunks ({writes})");
    let got = svc.block_on(reader).unwrap();
    drop(dir);
    got
}

fn transfer_both_styles(svc: &IoService, transport: Transport) {
    for (seed, futures) in [(1, false), (2, true)] {
        let Some(pair) = util::pair(svc, transport) else {
            return;
        };
        let data = Rc::new(util::pattern(TOTAL, seed));
        let got = if futures {
            transfer_with_futures(svc, pair, data.clone())
        } else {
            transfer_with_handlers(svc, pair, data.clone())
        };
        util::assert_same_bytes(&got, &data);
    }
}

matrix_test!(transfer_100k_odd_chunks_tcp_v4, |svc| {
    transfer_both_styles(svc, Transport::TcpV4);
});

matrix_test!(transfer_100k_odd_chunks_tcp_v6, |svc| {
    transfer_both_styles(svc, Transport::TcpV6);
});

matrix_test!(transfer_100k_odd_chunks_unix, |svc| {
    transfer_both_styles(svc, Transport::Unix);
});

matrix_test!(read_some_gives_zero_at_end_of_stream, |svc| {
    for transport in [Transport::TcpV4, Transport::Unix] {
        // Peer shuts down writing.
        let pair = util::pair(svc, transport).unwrap();
        let (res, _) = svc.block_on(pair.b.write_all(b"abc".to_vec()));
        res.unwrap();
        pair.b.shutdown(Shutdown::Write).unwrap();
        let (res, buf) = svc.block_on(pair.a.read_exact(vec![0u8; 3]));
        res.unwrap();
        assert_eq!(buf, b"abc");
        let (res, buf) = svc.block_on(pair.a.read_some(vec![9u8; 10]));
        assert_eq!(
            res.unwrap(),
            0,
            "{transport:?}: end of stream after shutdown(Write)"
        );
        assert_eq!(buf, [9u8; 10], "nothing was written into the buffer");
        // Still 0 on a second read, through a handler this time.
        let again = Rc::new(Cell::new(None));
        pair.a.read_some(vec![0u8; 4]).then({
            let again = again.clone();
            move |(res, _)| again.set(Some(res.unwrap()))
        });
        svc.poll().unwrap();
        assert_eq!(again.get(), Some(0));

        // Peer closes.
        let pair = util::pair(svc, transport).unwrap();
        pair.b.close();
        let (res, _) = svc.block_on(pair.a.read_some(vec![0u8; 10]));
        assert_eq!(res.unwrap(), 0, "{transport:?}: end of stream after close");
    }
});

matrix_test!(read_exact_reports_unexpected_eof_with_partial_data, |svc| {
    for transport in [Transport::TcpV4, Transport::Unix] {
        let pair = util::pair(svc, transport).unwrap();
        let (res, _) = svc.block_on(pair.b.write_all(b"hello".to_vec()));
        res.unwrap();
        drop(pair.b);
        let result = Rc::new(RefCell::new(None));
        pair.a.read_exact(vec![0u8; 10]).then({
            let result = result.clone();
            move |out| *result.borrow_mut() = Some(out)
        });
        while result.borrow().is_none() {
            svc.run_one().unwrap();
        }
        let (res, buf) = result.take().unwrap();
        util::assert_kind(&res, io::ErrorKind::UnexpectedEof);
        assert!(res.unwrap_err().to_string().contains("5 of 10"));
        assert_eq!(&buf[..5], b"hello", "the partial data is in the buffer");
        assert_eq!(&buf[5..], [0u8; 5]);
    }
});

matrix_test!(vectored_write_and_read_round_trip, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let parts = vec![
        b"abc".to_vec(),
        Vec::new(),
        b"defgh".to_vec(),
        b"i".to_vec(),
    ];
    let (res, parts) = svc.block_on(a.write_vectored(parts));
    assert_eq!(res.unwrap(), 9);
    assert_eq!(parts[2], b"defgh", "the buffers come back");
    let bufs = vec![vec![0u8; 2], Vec::with_capacity(4), vec![0u8; 16]];
    let out = Rc::new(RefCell::new(None));
    b.read_vectored(bufs).then({
        let out = out.clone();
        move |r| *out.borrow_mut() = Some(r)
    });
    svc.poll().unwrap();
    let (res, bufs) = out.take().unwrap();
    assert_eq!(res.unwrap(), 9);
    assert_eq!(bufs[0], b"ab");
    assert_eq!(
        bufs[1], b"cdef",
        "a Vec's length is raised to what was read"
    );
    assert_eq!(&bufs[2][..3], b"ghi");

    // Gather from slices of one buffer; scatter into slices.
    let data = util::pattern(1000, 7);
    let (res, _) = svc.block_on(a.write_vectored(vec![
        data.clone().slice(..100),
        data.clone().slice(100..101),
        data.clone().slice(101..),
    ]));
    assert_eq!(res.unwrap(), 1000);
    let (res, bufs) = svc.block_on(b.read_vectored(vec![
        vec![0u8; 1000].slice(..400),
        vec![0u8; 1000].slice(400..),
    ]));
    assert_eq!(res.unwrap(), 1000);
    let joined: Vec<u8> = bufs
        .into_iter()
        .map(|s| {
            let (begin, end) = (s.begin(), s.end());
            s.into_inner()[begin..end].to_vec()
        })
        .collect::<Vec<_>>()
        .concat();
    util::assert_same_bytes(&joined, &data);
});

matrix_test!(write_after_peer_reset_fails_without_sigpipe, |svc| {
    util::in_child(|| {
        // Default SIGPIPE disposition (Rust ignores it at startup): without MSG_NOSIGNAL a write to
        // a
        // reset connection would kill this process.
        // SAFETY: restoring a default signal disposition in a single-test child process.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
        for transport in [Transport::TcpV4, Transport::Unix] {
            let pair = util::pair(svc, transport).unwrap();
            let (a, b) = (pair.a, pair.b);
            let peer = socket2::Socket::from(b.release().unwrap());
            if transport == Transport::TcpV4 {
                // Linger 0: close sends RST.
                peer.set_linger(Some(std::time::Duration::ZERO)).unwrap();
            }
            drop(peer);
            if transport == Transport::TcpV4 {
                let (res, _) = svc.block_on(a.read_some(vec![0u8; 16]));
                util::assert_kind(&res, io::ErrorKind::ConnectionReset);
            }
            let (res, buf) = svc.block_on(a.write_all(vec![1u8; 100_000]));
            let err = res.expect_err("write to a reset peer must fail");
            assert!(
                matches!(err.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)),
                "{transport:?}: {err} ({:?})",
                err.raw_os_error()
            );
            assert_eq!(buf.len(), 100_000);
            let (res, _) = svc.block_on(a.write_some(b"x".to_vec()));
            assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EPIPE));
            let (res, _) = svc.block_on(a.write_vectored(vec![b"x".to_vec()]));
            assert_eq!(res.unwrap_err().raw_os_error(), Some(libc::EPIPE));
        }
    });
});

matrix_test!(write_all_of_an_empty_buffer_completes, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let (res, buf) = svc.block_on(a.write_all(Vec::new()));
    res.unwrap();
    assert!(buf.is_empty());
    let (res, _) = svc.block_on(a.write_some(b"".to_vec()));
    assert_eq!(res.unwrap(), 0);
    assert_eq!(b.bytes_readable().unwrap(), 0);
});

matrix_test!(tcp_urgent_data_does_not_stall_the_bytes_behind_it, |svc| {
    // Regression: a TCP read stops at the urgent mark when the peer sends with MSG_OOB, with data
    // queued behind it. That short read was taken for "drained" and the next read waited for an
    // edge that had already come. Urgent data now marks the source as no longer trusting short
    // reads (as a hang-up does).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    let probe = server.try_clone().unwrap();
    let socket = StreamSocket::from_fd(svc, server).unwrap();
    std::io::Write::write_all(&mut peer, b"aaa").unwrap();
    rustix::net::send(&peer, b"!", rustix::net::SendFlags::OOB).unwrap();
    std::io::Write::write_all(&mut peer, b"ccc").unwrap();
    // Loopback delivers as it sends; wait (bounded) until all of it is queued here.
    for _ in 0..500 {
        if socket.bytes_readable().unwrap() >= 6 {
            break;
        }
        let mut fds = [rustix::event::PollFd::new(
            &probe,
            rustix::event::PollFlags::IN | rustix::event::PollFlags::PRI,
        )];
        let tick = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        let _ = rustix::event::poll(&mut fds, Some(&tick));
    }
    // The loop takes the edge of all of it before the first read.
    svc.poll().unwrap();
    let (res, buf) = svc.block_on(socket.read_some(vec![0u8; 64]));
    let n = res.unwrap();
    assert_eq!(&buf[..n], b"aaa", "the read stops at the urgent mark");
    let rest = Rc::new(RefCell::new(None));
    socket.read_some(vec![0u8; 64]).then({
        let rest = rest.clone();
        move |(res, buf)| *rest.borrow_mut() = Some(buf[..res.unwrap()].to_vec())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let timer = aio::DeadlineTimer::new(svc).unwrap();
    timer.expires_at(deadline);
    timer.wait().then(|_| {});
    while rest.borrow().is_none() && std::time::Instant::now() < deadline {
        svc.run_one().unwrap();
    }
    assert_eq!(
        rest.borrow().as_deref(),
        Some(&b"ccc"[..]),
        "the bytes behind the urgent mark are read (the urgent byte itself is out of band)"
    );
});

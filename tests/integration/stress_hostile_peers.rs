//! Hostile and broken peers, many at once beside well-behaved ones, on every backend: peers that
//! reset mid-write, half-close, never read (a 100 MB `write_all` stays pending in bounded memory
//! and is cancellable), connect and send nothing (an idle deadline closes them), or stuff fds into a
//! plain reader. Each test checks that every well-behaved peer is served in full and prints what it
//! counted.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::{Acceptor, DeadlineTimer, Endpoint, IoBuf, LocalHandle, StreamSocket};

use crate::util::{self, Transport, stress};

/// Accepts forever (until the acceptor is closed), handing each connection to `session`.
fn accept_loop(acceptor: Rc<Acceptor>, session: Rc<dyn Fn(StreamSocket)>) {
    let next = acceptor.clone();
    acceptor.accept().then(move |res| match res {
        Ok((socket, _)) => {
            session(socket);
            accept_loop(next, session);
        }
        Err(e) if aio::is_cancelled(&e) => {}
        Err(e) => panic!("accept: {e}"),
    });
}

matrix_test!(
    peers_that_reset_mid_write_fail_only_their_own_writes,
    40,
    |svc| {
        // With SIGPIPE at its default disposition, a write that raised it would kill the process.
        util::in_child(|| {
            // SAFETY: restoring a default signal disposition in a single-test child process.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            const PEERS: usize = 40;
            const GOOD_LEN: usize = 1 << 20;
            // More than the kernel buffers of both ends hold: a peer that stops reading stops the write.
            let big = bytes::Bytes::from(vec![0x5au8; 32 << 20]);
            let good = bytes::Bytes::from(util::pattern(GOOD_LEN, 7));
            let acceptor = Rc::new(Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap());
            let target = acceptor.local_endpoint().unwrap();
            let (completed, reset) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
            let session: Rc<dyn Fn(StreamSocket)> = {
                let (completed, reset, big, good) =
                    (completed.clone(), reset.clone(), big.clone(), good.clone());
                Rc::new(move |socket: StreamSocket| {
                    let socket = Rc::new(socket);
                    let (completed, reset, big, good) =
                        (completed.clone(), reset.clone(), big.clone(), good.clone());
                    socket
                        .clone()
                        .read_exact(vec![0u8; 1])
                        .then(move |(res, req)| {
                            res.expect("request");
                            let reply = if req[0] == b'g' { good } else { big };
                            // The handler owns the socket: the session lives while its write is pending.
                            socket.clone().write_all(reply).then(move |(res, _)| match res {
                        Ok(()) => {
                            drop(socket);
                            completed.set(completed.get() + 1)
                        }
                        Err(e) => {
                            assert!(
                                matches!(e.raw_os_error(), Some(libc::EPIPE | libc::ECONNRESET)),
                                "a reset peer's write fails with EPIPE or ECONNRESET: {e}"
                            );
                            reset.set(reset.get() + 1);
                        }
                    });
                        });
                })
            };
            accept_loop(acceptor.clone(), session);
            let (verified, resetters) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
            for i in 0..PEERS {
                let (local, target, good) = (svc.local(), target.clone(), good.clone());
                let (verified, resetters) = (verified.clone(), resetters.clone());
                svc.spawn(async move {
                    let socket = StreamSocket::dial(&local, &target).await.unwrap();
                    if i % 2 == 0 {
                        let (res, _) = socket.write_all(b"g".to_vec()).await;
                        res.unwrap();
                        let (res, got) = socket.read_exact(vec![0u8; GOOD_LEN]).await;
                        res.unwrap();
                        assert!(got[..] == good[..], "peer {i}: the reply is intact");
                        verified.set(verified.get() + 1);
                    } else {
                        let (res, _) = socket.write_all(b"r".to_vec()).await;
                        res.unwrap();
                        // Take a little of the reply, then reset the connection (linger 0).
                        let (res, _) = socket.read_exact(vec![0u8; 64 << 10]).await;
                        res.unwrap();
                        socket.set_linger(Some(Duration::ZERO)).unwrap();
                        socket.close();
                        resetters.set(resetters.get() + 1);
                    }
                });
            }
            stress::run_until(svc, Duration::from_secs(30), "resets and replies", || {
                completed.get() + reset.get() == PEERS && verified.get() == PEERS / 2
            });
            eprintln!(
                "{}: {} replies completed ({} verified by their peers), {} writes failed by a reset \
             ({} peers reset mid-write)",
                util::current_test(),
                completed.get(),
                verified.get(),
                reset.get(),
                resetters.get()
            );
            assert_eq!(completed.get(), PEERS / 2);
            assert_eq!(reset.get(), PEERS / 2);
            acceptor.close();
        });
    }
);

matrix_test!(half_closed_peers_get_their_whole_reply, 30, |svc| {
    const PEERS: usize = 100;
    for transport in [Transport::TcpV4, Transport::Unix] {
        let (ep, _dir) = util::listen_endpoint(transport).unwrap();
        let acceptor = Rc::new(Acceptor::bind(svc, &ep).unwrap());
        let target = acceptor.local_endpoint().unwrap();
        // The server reads a whole request (until the peer's half-close), then echoes it all back
        // and closes.
        let session: Rc<dyn Fn(StreamSocket)> = Rc::new(move |socket: StreamSocket| {
            let socket = Rc::new(socket);
            socket.service().clone().spawn(async move {
                let mut request = Vec::new();
                loop {
                    let (res, buf) = socket.read_some(vec![0u8; 16 << 10]).await;
                    match res.expect("read") {
                        0 => break,
                        n => request.extend_from_slice(&buf[..n]),
                    }
                }
                let (res, _) = socket.write_all(request).await;
                res.expect("the reply to a half-closed peer");
            });
        });
        accept_loop(acceptor.clone(), session);
        let served = Rc::new(Cell::new(0));
        let bytes = Rc::new(Cell::new(0));
        for i in 0..PEERS {
            let (local, target, served, bytes) =
                (svc.local(), target.clone(), served.clone(), bytes.clone());
            svc.spawn(async move {
                let socket = StreamSocket::dial(&local, &target).await.unwrap();
                let request = util::pattern(1 + i * 2531 % (256 << 10), i as u64);
                let (res, request) = socket.write_all(request).await;
                res.unwrap();
                socket.shutdown(Shutdown::Write).unwrap();
                let mut reply = Vec::new();
                loop {
                    let (res, buf) = socket.read_some(vec![0u8; 16 << 10]).await;
                    match res.unwrap() {
                        0 => break,
                        n => reply.extend_from_slice(&buf[..n]),
                    }
                }
                util::assert_same_bytes(&reply, &request);
                bytes.set(bytes.get() + reply.len());
                served.set(served.get() + 1);
            });
        }
        stress::run_until(svc, Duration::from_secs(20), "half-closed peers", || {
            served.get() == PEERS
        });
        eprintln!(
            "{} over {transport:?}: {} half-closed peers got their whole reply ({} bytes)",
            util::current_test(),
            served.get(),
            bytes.get()
        );
        acceptor.close();
    }
});

matrix_test!(
    a_stalled_reader_leaves_a_100mb_write_pending_in_bounded_memory,
    30,
    |svc| {
        // Counts the whole process's fds and memory: alone in a child process.
        util::in_child(|| {
            const LEN: usize = 100 << 20;
            for transport in [Transport::TcpV4, Transport::Unix] {
                let pair = util::pair(svc, transport).unwrap();
                let (writer, _stalled) = (Rc::new(pair.a), pair.b);
                let mut data = vec![0xa5u8; LEN];
                data[0] = 1;
                data[LEN - 1] = 2;
                let (ptr, rss_before) = (data.as_ptr() as usize, stress::rss_bytes());
                let outcome = Rc::new(RefCell::new(None));
                writer.write_all(data).then({
                    let outcome = outcome.clone();
                    move |(res, buf): (io::Result<()>, Vec<u8>)| {
                        *outcome.borrow_mut() = Some((res, buf))
                    }
                });
                // The peer never reads: the write fills both ends' buffers and waits. Watch it for 300 ms.
                svc.restart();
                let stopper = svc.local();
                svc.after(Duration::from_millis(300))
                    .then(move |_| stopper.stop());
                svc.run().unwrap();
                let rss_pending = stress::rss_bytes();
                assert!(
                    outcome.borrow().is_none(),
                    "{transport:?}: the write is still pending"
                );
                // Cancelling completes it with ECANCELED and hands back the very same buffer, intact.
                writer.cancel();
                stress::run_until(svc, Duration::from_secs(5), "the cancelled write", || {
                    outcome.borrow().is_some()
                });
                let (res, buf) = outcome.borrow_mut().take().unwrap();
                util::assert_cancelled(&res);
                assert_eq!(
                    buf.as_ptr() as usize,
                    ptr,
                    "the buffer itself came back, not a copy"
                );
                assert_eq!((buf.len(), buf[0], buf[LEN - 1]), (LEN, 1, 2));
                assert!(buf[1..LEN - 1].iter().all(|&b| b == 0xa5));
                let grew = rss_pending.saturating_sub(rss_before);
                eprintln!(
                    "{} over {transport:?}: 100 MB write pending for 300 ms to a peer that never reads; \
                 resident memory grew by {} KB meanwhile; cancelled with ECANCELED, buffer returned",
                    util::current_test(),
                    grew / 1024
                );
                // The kernel's socket buffers are not in our resident set; the owned buffer is the only copy.
                assert!(
                    grew < 16 << 20,
                    "resident memory grew by {grew} bytes while the write was pending"
                );
            }
        });
    }
);

/// A session that must receive its first bytes within `idle`, or is closed.
fn guarded_echo(svc: &LocalHandle, socket: StreamSocket, idle: Duration, counts: Rc<Counts>) {
    let socket = Rc::new(socket);
    let timer = Rc::new(DeadlineTimer::new(svc).unwrap());
    timer.expires_after(idle);
    timer.wait().then({
        let (socket, counts) = (socket.clone(), counts.clone());
        move |res| {
            if res.is_ok() {
                counts.timed_out.set(counts.timed_out.get() + 1);
                socket.close();
            }
        }
    });
    socket
        .clone()
        .read_some(vec![0u8; 4096])
        .then(move |(res, buf)| match res {
            Ok(n) if n > 0 => {
                timer.cancel();
                socket.write_all(buf.slice(..n)).then(move |(res, _)| {
                    res.expect("echo");
                    counts.echoed.set(counts.echoed.get() + 1);
                });
            }
            Ok(_) => {}
            Err(e) => assert!(aio::is_cancelled(&e), "{e}"),
        });
}

#[derive(Default)]
struct Counts {
    timed_out: Cell<usize>,
    echoed: Cell<usize>,
}

matrix_test!(silent_peers_time_out_while_others_are_served, 30, |svc| {
    // Counts the whole process's fds and memory: alone in a child process.
    util::in_child(|| {
        const SILENT: usize = 200;
        const TALKERS: usize = 50;
        const IDLE: Duration = Duration::from_millis(300);
        let fds_before = stress::open_fds();
        let acceptor = Rc::new(Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap());
        let target: Endpoint = acceptor.local_endpoint().unwrap();
        let counts = Rc::new(Counts::default());
        let session: Rc<dyn Fn(StreamSocket)> = {
            let (svc, counts) = (svc.local(), counts.clone());
            Rc::new(move |socket| guarded_echo(&svc, socket, IDLE, counts.clone()))
        };
        accept_loop(acceptor.clone(), session);
        let (closed_on_silent, answered) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
        let started = Instant::now();
        for i in 0..SILENT + TALKERS {
            let (local, target) = (svc.local(), target.clone());
            let (closed_on_silent, answered) = (closed_on_silent.clone(), answered.clone());
            svc.spawn(async move {
                let socket = StreamSocket::dial(&local, &target).await.unwrap();
                if i % 5 == 0 && i / 5 < TALKERS {
                    let msg = util::pattern(100, i as u64);
                    let (res, msg) = socket.write_all(msg).await;
                    res.unwrap();
                    let (res, got) = socket.read_exact(vec![0u8; 100]).await;
                    res.unwrap();
                    assert_eq!(got, msg);
                    answered.set(answered.get() + 1);
                } else {
                    // Send nothing: the server's deadline closes the connection (end of stream here).
                    let (res, _) = socket.read_some(vec![0u8; 16]).await;
                    assert_eq!(res.unwrap(), 0);
                    closed_on_silent.set(closed_on_silent.get() + 1);
                }
            });
        }
        stress::run_until(
            svc,
            Duration::from_secs(20),
            "silent and talking peers",
            || answered.get() == TALKERS && closed_on_silent.get() == SILENT,
        );
        let elapsed = started.elapsed();
        acceptor.close();
        drop(acceptor);
        svc.restart();
        svc.poll().unwrap();
        let fds_after = stress::open_fds();
        eprintln!(
            "{}: {} silent peers closed by the {IDLE:?} idle deadline, {} talking peers answered, in \
             {elapsed:?}; open fds before {fds_before}, after {fds_after}",
            util::current_test(),
            counts.timed_out.get(),
            counts.echoed.get()
        );
        assert_eq!(counts.timed_out.get(), SILENT);
        assert_eq!(counts.echoed.get(), TALKERS);
        assert!(elapsed >= IDLE);
        assert_eq!(fds_after, fds_before, "{:?}", stress::fd_table());
    });
});

matrix_test!(
    a_peer_stuffing_fds_into_a_plain_reader_neither_stalls_nor_leaks,
    30,
    |svc| {
        // Counts the whole process's fds and memory: alone in a child process.
        util::in_child(|| {
            const MESSAGES: usize = 500;
            let fds_before = stress::open_fds();
            let (hostile, server) = StreamSocket::pair(svc).unwrap();
            let (hostile, server) = (Rc::new(hostile), Rc::new(server));
            // The server echoes with read_some; it never asks for fds, so the kernel discards them.
            fn echo(socket: Rc<StreamSocket>, echoed: Rc<Cell<usize>>) {
                socket
                    .clone()
                    .read_some(vec![0u8; 4096])
                    .then(move |(res, buf)| {
                        let n = res.expect("read");
                        if n > 0 {
                            socket
                                .clone()
                                .write_all(buf.slice(..n))
                                .then(move |(res, _)| {
                                    res.expect("write");
                                    echoed.set(echoed.get() + n);
                                    echo(socket, echoed);
                                });
                        }
                    });
            }
            let echoed = Rc::new(Cell::new(0));
            echo(server.clone(), echoed.clone());
            let probe = std::fs::File::open("/dev/null").unwrap();
            let mut expected = 0;
            for i in 0..MESSAGES {
                // Each message: plain bytes, then bytes carrying fds, so that a read ends at the fds.
                let plain = util::pattern(1 + i % 50, i as u64);
                let with_fds = util::pattern(1 + i % 30, !(i as u64));
                let fds = (0..3).map(|_| probe.try_clone().unwrap().into()).collect();
                let want = [plain.clone(), with_fds.clone()].concat();
                expected += want.len();
                let (res, _) = svc.block_on(hostile.write_all(plain));
                res.unwrap();
                let (res, _) = svc.block_on(hostile.send_fds(with_fds, fds));
                res.unwrap();
                let got = svc
                    .block_on(async {
                        let mut got = Vec::new();
                        while got.len() < want.len() {
                            let (res, buf) = hostile.read_some(vec![0u8; 4096]).await;
                            let n = res?;
                            got.extend_from_slice(&buf[..n]);
                        }
                        Ok::<_, io::Error>(got)
                    })
                    .unwrap_or_else(|e| panic!("message {i}: {e}"));
                assert_eq!(got, want, "message {i}");
            }
            drop(probe);
            // The last write's handler may still be queued (a completion backend reports the write
            // after the peer could read it).
            stress::run_until(
                svc,
                Duration::from_secs(5),
                "the last echo's handler",
                || echoed.get() == expected,
            );
            assert_eq!(echoed.get(), expected);
            drop((hostile, server));
            svc.restart();
            svc.poll().unwrap();
            let fds_after = stress::open_fds();
            eprintln!(
                "{}: {MESSAGES} messages with 3 fds each echoed ({expected} bytes); open fds before \
             {fds_before}, after {fds_after}",
                util::current_test()
            );
            assert_eq!(fds_after, fds_before, "{:?}", stress::fd_table());
        });
    }
);

//! `LoopPool`: N loops on N threads. Connections verified byte for byte through every accept mode
//! over TCP and Unix, cross-loop posts and spawns that are never lost, a socket moved between loops
//! with its unread data, a panicking loop reported, and a stop in the middle of traffic.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use aio::pool::{Balance, PoolHandle};
use aio::{AcceptMode, Endpoint, IoBuf, IoService, LoopPool, StreamSocket};

use crate::util;

const LOOPS: usize = 4;
const CONNECTIONS: usize = 2_000;
const CLIENT_THREADS: usize = 4;

fn pool_like(svc: &IoService, loops: usize) -> LoopPool {
    LoopPool::builder()
        .threads(loops)
        .backend(svc.backend())
        .start()
        .expect("starting the pool")
}

/// Echoes until the peer closes (callback style, the session owned by its handlers).
fn echo(socket: Rc<StreamSocket>, buf: Vec<u8>) {
    let s = socket.clone();
    socket.read_some(buf).then(move |(res, buf)| match res {
        Ok(n) if n > 0 => {
            s.clone().write_all(buf.slice(..n)).then(move |(res, buf)| {
                if res.is_ok() {
                    echo(s, buf.into_inner());
                }
            });
        }
        _ => {}
    });
}

fn echo_handler(socket: StreamSocket, _peer: Endpoint) {
    echo(Rc::new(socket), vec![0; 256]);
}

/// One client connection: sends a pattern of its own, reads it back, closes.
fn exchange<S: Read + Write>(mut stream: S, id: u64) {
    let data = util::pattern(100 + (id as usize % 100), id);
    stream.write_all(&data).expect("client write");
    let mut back = vec![0u8; data.len()];
    stream.read_exact(&mut back).expect("client read");
    util::assert_same_bytes(&back, &data);
}

/// `CONNECTIONS` verified connections to `endpoint` from a few client threads.
fn clients(endpoint: &Endpoint) {
    let endpoint = endpoint.clone();
    let threads: Vec<_> = (0..CLIENT_THREADS)
        .map(|t| {
            let endpoint = endpoint.clone();
            std::thread::spawn(move || {
                for i in 0..CONNECTIONS / CLIENT_THREADS {
                    let id = (t * CONNECTIONS + i) as u64;
                    let limit = Some(Duration::from_secs(10));
                    match endpoint.unix_path() {
                        Some(path) => {
                            let s = UnixStream::connect(path).expect("unix connect");
                            s.set_read_timeout(limit).unwrap();
                            exchange(s, id);
                        }
                        None => {
                            let s =
                                TcpStream::connect(endpoint.as_ip().unwrap()).expect("tcp connect");
                            s.set_read_timeout(limit).unwrap();
                            exchange(s, id);
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
}

/// Waits (bounded) until no loop has a connection open.
fn wait_all_closed(pool: &PoolHandle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pool.stats().iter().any(|s| s.open > 0) {
        assert!(
            Instant::now() < deadline,
            "connections left open: {:?}",
            pool.stats()
        );
        std::thread::yield_now();
    }
}

fn serve_and_verify(svc: &IoService, mode: AcceptMode, unix: bool) {
    let pool = pool_like(svc, LOOPS);
    let dir = tempfile::tempdir().unwrap();
    let endpoint: Endpoint = if unix {
        Endpoint::unix(dir.path().join("pool.sock"))
    } else {
        "127.0.0.1:0".parse().unwrap()
    };
    let serving = pool.serve(&endpoint, mode, echo_handler).expect("serve");
    clients(serving.endpoint());
    wait_all_closed(&pool);
    let stats = pool.stats();
    let accepted: u64 = stats.iter().map(|s| s.accepted).sum();
    assert_eq!(accepted, CONNECTIONS as u64, "{stats:?}");
    for s in &stats {
        assert!(s.accepted > 0, "loop {} served nothing: {stats:?}", s.index);
        assert!(s.handled > 0);
    }
    if mode == AcceptMode::Handoff(Balance::RoundRobin) {
        for s in &stats {
            assert_eq!(s.accepted, (CONNECTIONS / LOOPS) as u64, "{stats:?}");
        }
    }
    pool.stop();
    pool.join().expect("the pool ends cleanly");
}

matrix_test!(reuseport_tcp_connections_verified, 60, |svc| {
    serve_and_verify(svc, AcceptMode::ReusePort, false);
});

matrix_test!(handoff_round_robin_tcp_connections_verified, 60, |svc| {
    serve_and_verify(svc, AcceptMode::Handoff(Balance::RoundRobin), false);
});

matrix_test!(handoff_round_robin_unix_connections_verified, 60, |svc| {
    serve_and_verify(svc, AcceptMode::Handoff(Balance::RoundRobin), true);
});

matrix_test!(handoff_least_loaded_unix_connections_verified, 60, |svc| {
    serve_and_verify(svc, AcceptMode::Handoff(Balance::LeastLoaded), true);
});

matrix_test!(reuseport_refuses_unix_endpoints, |svc| {
    let pool = pool_like(svc, 2);
    let dir = tempfile::tempdir().unwrap();
    let err = pool
        .serve(
            &Endpoint::unix(dir.path().join("x.sock")),
            AcceptMode::ReusePort,
            echo_handler,
        )
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("Handoff"), "{err}");
});

matrix_test!(a_million_cross_loop_posts_and_spawns_none_lost, 60, |svc| {
    let pool = pool_like(svc, LOOPS);
    const POSTS: u64 = 1_000_000;
    const SPAWNS: u64 = 100_000;
    let ran = Arc::new(AtomicU64::new(0));
    // Each loop posts its share to the next loop, from the loop's own thread.
    let per_loop = POSTS / LOOPS as u64;
    let handle = pool.handle();
    for index in 0..LOOPS {
        let (ran, handle2) = (ran.clone(), handle.clone());
        pool.post(index, move || {
            let next = (index + 1) % handle2.len();
            for _ in 0..per_loop {
                let ran = ran.clone();
                handle2
                    .post(next, move || {
                        ran.fetch_add(1, Ordering::Relaxed);
                    })
                    .unwrap();
            }
        })
        .unwrap();
    }
    // Futures made on their loop (not Send themselves: they hold an Rc), from this thread.
    let spawned = Arc::new(AtomicU64::new(0));
    let mut joins = Vec::new();
    for i in 0..SPAWNS {
        let spawned = spawned.clone();
        let join = pool.spawn_with(i as usize % LOOPS, move |svc| {
            let here = Rc::new(svc.clone());
            async move {
                here.after(Duration::ZERO).await.unwrap();
                spawned.fetch_add(1, Ordering::Relaxed);
                i
            }
        });
        if i % 1000 == 0 {
            joins.push((i, join));
        }
    }
    // And Send futures, their output joined from here.
    let sums: Vec<_> = (0..100u64)
        .map(|i| pool.spawn(i as usize % LOOPS, async move { i * 2 }))
        .collect();
    for (i, join) in sums.into_iter().enumerate() {
        assert_eq!(join.join().unwrap(), i as u64 * 2);
    }
    for (i, join) in joins {
        assert_eq!(join.join().unwrap(), i);
    }
    let deadline = Instant::now() + Duration::from_secs(45);
    while ran.load(Ordering::Relaxed) < POSTS || spawned.load(Ordering::Relaxed) < SPAWNS {
        assert!(Instant::now() < deadline, "lost work: {ran:?} {spawned:?}");
        std::thread::sleep(Duration::from_millis(5)); // polling a counter, not synchronising
    }
    pool.stop();
    pool.join().unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), POSTS);
    assert_eq!(spawned.load(Ordering::Relaxed), SPAWNS);
});

matrix_test!(a_socket_moved_between_loops_keeps_its_data, |svc| {
    let pool = pool_like(svc, 2);
    let (mut client, server) = UnixStream::pair().unwrap();
    client.write_all(b"sent before the move").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = pool.handle();
    pool.post(0, move || {
        let svc = aio::LocalHandle::current().unwrap();
        let socket = StreamSocket::from_fd(&svc, server).unwrap();
        assert_eq!(PoolHandle::current_index(), Some(0));
        handle
            .send_socket(1, socket, move |socket| {
                let socket = socket.expect("adopted on loop 1");
                let loop_index = PoolHandle::current_index();
                socket.read_exact(vec![0u8; 20]).then(move |(res, buf)| {
                    let _ = tx.send((loop_index, res.map(|_| buf)));
                    drop(socket);
                });
            })
            .unwrap();
    })
    .unwrap();
    let (loop_index, got) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(loop_index, Some(1));
    assert_eq!(got.unwrap(), b"sent before the move");
    // The socket was closed on loop 1 once read: the client sees the end.
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    pool.stop();
    pool.join().unwrap();
});

matrix_test!(a_panicking_loop_is_reported, |svc| {
    let pool = pool_like(svc, 3);
    pool.post(1, || panic!("loop one gives up")).unwrap();
    let err = pool.join().expect_err("the panic is reported");
    assert_eq!(err.loop_index(), 1);
    assert_eq!(err.panic_message(), Some("loop one gives up"));
    assert!(err.to_string().contains("pool loop 1 panicked"), "{err}");
});

matrix_test!(stop_during_heavy_traffic, 60, |svc| {
    let pool = pool_like(svc, LOOPS);
    let bound = pool
        .serve(
            &"127.0.0.1:0".parse().unwrap(),
            AcceptMode::ReusePort,
            echo_handler,
        )
        .unwrap()
        .endpoint()
        .clone();
    let echoed = Arc::new(AtomicUsize::new(0));
    let stop_clients = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENT_THREADS)
        .map(|_| {
            let (addr, echoed, stop) =
                (bound.as_ip().unwrap(), echoed.clone(), stop_clients.clone());
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(addr) else {
                    return;
                };
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s.set_nodelay(true).unwrap();
                // Less than the server's buffer: one read and one write per message.
                let mut buf = [0u8; 200];
                while !stop.load(Ordering::Relaxed) {
                    if s.write_all(&buf).is_err() || s.read_exact(&mut buf).is_err() {
                        return; // the server stopped
                    }
                    echoed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while echoed.load(Ordering::Relaxed) < 2_000 {
        assert!(Instant::now() < deadline, "no traffic");
        std::thread::yield_now();
    }
    let stopping = Instant::now();
    pool.stop();
    pool.join().expect("stopped cleanly");
    assert!(stopping.elapsed() < Duration::from_secs(5));
    stop_clients.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
});

//! Every byte comes back: the echo examples under load, checked from outside.
//!
//! Each server (`echo_server`, callback style, and `echo_server_async`) runs as a child process on
//! each backend (`AIO_BACKEND=epoll|poll`) and each transport (TCP over 127.0.0.1, TCP over [::1],
//! a Unix socket in a temporary directory). A client made of plain `std` threads and blocking
//! sockets opens 200 connections at once, then sends on each a message of deterministic
//! pseudo-random bytes (from empty to 3 MiB), half-closes it, and checks every byte that comes back
//! and the EOF after it. Writing and reading happen on separate threads, so large messages cannot
//! deadlock on full socket buffers. Finally the server's stdin is closed, and it must exit with
//! status 0 and leave no Unix socket file behind.
//!
//! The matrix runs sequentially inside one test per example, so that at most two servers (and about
//! 800 client threads) run at a time.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use crate::examples_harness::{Server, echo_and_verify, ipv6_loopback};

const BACKENDS: [&str; 3] = ["epoll", "poll", "uring"];
const CONNECTIONS: usize = 200;
/// The whole load on one server must be done within this (it takes about a second).
const LOAD_TIMEOUT: Duration = Duration::from_secs(40);

#[derive(Clone, Copy, Debug)]
enum Transport {
    Tcp4,
    Tcp6,
    Unix,
}

const TRANSPORTS: [Transport; 3] = [Transport::Tcp4, Transport::Tcp6, Transport::Unix];

/// Runs `check` against `example` on every backend and transport, each on a fresh server that must
/// then stop cleanly when its stdin is closed.
fn on_every_backend_and_transport(example: &str, args: &[&str], check: impl Fn(&Server)) {
    for backend in BACKENDS {
        for transport in TRANSPORTS {
            let what = format!("{example} on {backend} over {transport:?}");
            let dir = tempfile::tempdir().expect("temporary directory");
            let socket_path: PathBuf = dir.path().join("echo.sock");
            let endpoint = match transport {
                Transport::Tcp4 => "127.0.0.1:0".to_owned(),
                Transport::Tcp6 => match ipv6_loopback() {
                    Ok(()) => "[::1]:0".to_owned(),
                    Err(why) => {
                        println!("skipping {what}: {why}");
                        continue;
                    }
                },
                Transport::Unix => format!("unix:{}", socket_path.display()),
            };
            let mut full_args = vec![endpoint.as_str()];
            full_args.extend_from_slice(args);
            let server = Server::start(example, Some(backend), &full_args);
            assert!(
                server.listening_line.ends_with(&format!("({backend})")),
                "{what}: {:?}",
                server.listening_line
            );

            let started = Instant::now();
            check(&server);
            println!("{what}: checked in {:?}", started.elapsed());

            let stderr = server.stderr();
            let (status, _) = server.close_stdin_and_wait();
            assert!(status.success(), "{what}: exit {status}; stderr:\n{stderr}");
            assert!(
                !socket_path.exists(),
                "{what}: the Unix socket file was left behind"
            );
        }
    }
}

/// The size of the message sent on connection `i`: every size class on some connections, a few of
/// 3 MiB, and one that sends nothing at all.
fn message_size(i: usize) -> usize {
    const SIZES: [usize; 8] = [0, 1, 100, 1024, 1025, 4096, 65536, 100_003];
    if i % 50 == 7 {
        3 << 20
    } else {
        SIZES[i % SIZES.len()]
    }
}

/// Opens `connections` connections at once, then echoes a message of `size(i)` bytes on each in
/// parallel and checks every byte; panics with the first failures.
fn concurrent_echo(server: &Server, connections: usize, size: impl Fn(usize) -> usize) {
    let deadline = Instant::now() + LOAD_TIMEOUT;
    // All connections are open before any data flows: the server holds them all at once.
    let conns: Vec<_> = (0..connections).map(|_| server.connect()).collect();
    let workers: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, conn)| {
            let len = size(i);
            thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn(move || {
                    echo_and_verify(conn, 1000 + i as u64, len, deadline)
                        .map_err(|e| format!("connection {i} ({len} bytes): {e}"))
                })
                .expect("spawn a client thread")
        })
        .collect();
    let errors: Vec<String> = workers
        .into_iter()
        .filter_map(|w| w.join().unwrap_or_else(|_| Err("panicked".into())).err())
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {connections} connections to {} ({}) failed, e.g.:\n{}\nserver stderr:\n{}",
        errors.len(),
        server.name,
        server.endpoint,
        errors[..errors.len().min(5)].join("\n"),
        server.stderr()
    );
}

#[test]
fn echo_server_returns_every_byte_on_200_concurrent_connections() {
    on_every_backend_and_transport("echo_server", &[], |server| {
        concurrent_echo(server, CONNECTIONS, message_size);
    });
}

#[test]
fn echo_server_async_returns_every_byte_on_200_concurrent_connections() {
    on_every_backend_and_transport("echo_server_async", &[], |server| {
        concurrent_echo(server, CONNECTIONS, message_size);
    });
}

/// Buffers smaller than most messages (down to one byte) split every message into many reads and
/// writes; nothing may be lost, reordered or duplicated.
#[test]
fn tiny_read_buffers_still_return_every_byte() {
    const SIZES: [usize; 7] = [0, 1, 2, 7, 8, 1000, 65536];
    for example in ["echo_server", "echo_server_async"] {
        for (backend, buffer) in [("epoll", "1"), ("poll", "7")] {
            let server =
                Server::start(example, Some(backend), &["127.0.0.1:0", "--buffer", buffer]);
            concurrent_echo(&server, 14, |i| SIZES[i % SIZES.len()]);
            let (status, _) = server.close_stdin_and_wait();
            assert!(
                status.success(),
                "{example} --buffer {buffer}: exit {status}"
            );
        }
    }
}

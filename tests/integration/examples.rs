//! The example programs behave as DESIGN.md's conventions promise, checked from outside with plain
//! processes and `std` sockets: the `listening on ENDPOINT (BACKEND)` line, stopping with status 0
//! on Enter or the end of stdin (whatever kind of file stdin is) without leaving a Unix socket
//! file, half-closed connections, `AIO_BACKEND`, and status 2 with a usage line for bad arguments.
//!
//! The servers here include `graceful_shutdown`, which must meet the same conventions; its
//! shutdown on signals, and the other timer, signal and blocking-work examples, are in
//! `examples_shutdown.rs`. Data integrity under load is in `echo_integrity.rs`.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::examples_harness::{
    Conn, Server, command, echo_and_verify, parse_listening_line, run_bounded,
};

const SERVERS: [&str; 3] = ["echo_server", "echo_server_async", "graceful_shutdown"];
const BACKENDS: [&str; 3] = ["epoll", "poll", "uring"];
const RUN_TIMEOUT: Duration = Duration::from_secs(10);

/// A Unix socket endpoint in a fresh temporary directory (kept alive by the returned guard).
fn unix_endpoint() -> (tempfile::TempDir, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("echo.sock");
    let endpoint = format!("unix:{}", path.display());
    (dir, path, endpoint)
}

/// Asserts that a connection the server closed reports EOF (or a reset), not silence.
fn assert_closed_by_server(mut conn: Conn, what: &str) {
    conn.set_timeouts(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    match conn.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("{what}: {n} unexpected bytes after the server stopped"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("{what}: the connection is still open after the server stopped")
        }
        Err(_) => {} // reset: closed as well
    }
}

#[test]
fn servers_announce_the_real_endpoint_and_backend() {
    for example in SERVERS {
        // No AIO_BACKEND: epoll. Port 0: the line has the port the kernel chose.
        let server = Server::start(example, None, &["127.0.0.1:0"]);
        let (endpoint, backend) = parse_listening_line(&server.listening_line).unwrap();
        assert_eq!(backend, "epoll", "{example}: the default backend");
        let addr: std::net::SocketAddr = endpoint.parse().expect("an IP:PORT endpoint");
        assert!(addr.ip().is_loopback() && addr.port() != 0, "{endpoint}");
        let (status, more) = server.close_stdin_and_wait();
        assert!(
            status.success() && more.is_empty(),
            "{example}: {status} {more:?}"
        );

        // A Unix path is printed as given; an abstract name too, and both serve.
        let (_dir, path, unix) = unix_endpoint();
        let name = format!("unix:@aio-examples-{}-{example}", std::process::id());
        for endpoint in [unix, name] {
            let server = Server::start(example, Some("poll"), &[&endpoint]);
            assert_eq!(
                server.listening_line,
                format!("listening on {endpoint} (poll)")
            );
            let deadline = Instant::now() + RUN_TIMEOUT;
            echo_and_verify(server.connect(), 7, 4096, deadline)
                .unwrap_or_else(|e| panic!("{example} on {endpoint}: {e}"));
            let (status, _) = server.close_stdin_and_wait();
            assert!(status.success(), "{example} on {endpoint}: {status}");
        }
        assert!(!path.exists(), "{example}: {} left behind", path.display());
    }
}

#[test]
fn closing_stdin_stops_a_server_with_open_connections_promptly() {
    for example in SERVERS {
        for backend in BACKENDS {
            let (_dir, path, unix) = unix_endpoint();
            for endpoint in ["127.0.0.1:0", unix.as_str()] {
                let what = format!("{example} on {backend} at {endpoint}");
                let server = Server::start(example, Some(backend), &[endpoint]);
                // One idle connection, and one that has echoed something and stays open.
                let idle = server.connect();
                let mut busy = server.connect();
                busy.write_all(b"still here").unwrap();
                let mut back = [0u8; 10];
                busy.read_exact(&mut back).unwrap();
                assert_eq!(&back, b"still here", "{what}");

                let stopping = Instant::now();
                let stderr = server.stderr();
                let (status, more) = server.close_stdin_and_wait();
                assert!(status.success(), "{what}: exit {status}; stderr:\n{stderr}");
                assert!(more.is_empty(), "{what}: more output: {more:?}");
                assert!(
                    stopping.elapsed() < Duration::from_secs(5),
                    "{what}: slow stop"
                );
                assert!(!path.exists(), "{what}: the socket file was left behind");
                assert_closed_by_server(idle, &what);
                assert_closed_by_server(busy, &what);
            }
        }
    }
}

#[test]
fn pressing_enter_stops_a_server() {
    for example in SERVERS {
        for backend in BACKENDS {
            let mut server = Server::start(example, Some(backend), &["127.0.0.1:0"]);
            // Enter, with stdin left open: the newline alone must stop it.
            server.type_on_stdin(b"\n");
            let (status, _) = server.wait_for_exit();
            assert!(status.success(), "{example} on {backend}: {status}");
        }
    }
}

/// epoll refuses to watch `/dev/null` and regular files; the servers must still stop at the end of
/// such a stdin (they fall back to a thread that reads it).
#[test]
fn a_stdin_that_cannot_be_watched_still_stops_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("stdin.txt");
    std::fs::write(&file, "\n").unwrap();
    for example in SERVERS {
        for backend in BACKENDS {
            for (kind, stdin) in [
                ("/dev/null", Stdio::null()),
                ("a regular file", std::fs::File::open(&file).unwrap().into()),
            ] {
                let (_sock_dir, path, unix) = unix_endpoint();
                let what = format!("{example} on {backend} with stdin from {kind}");
                let done = run_bounded(
                    command(example, Some(backend), &[&unix]),
                    stdin,
                    RUN_TIMEOUT,
                );
                assert!(done.status.success(), "{what}: {done:?}");
                assert_eq!(
                    done.stdout,
                    format!("listening on {unix} ({backend})\n"),
                    "{what}"
                );
                assert!(!path.exists(), "{what}: the socket file was left behind");
            }
        }
    }
}

#[test]
fn a_half_closed_connection_gets_all_its_data_back_then_eof() {
    for example in SERVERS {
        for backend in BACKENDS {
            let (_dir, _path, unix) = unix_endpoint();
            for endpoint in ["127.0.0.1:0", unix.as_str()] {
                let what = format!("{example} on {backend} at {endpoint}");
                let server = Server::start(example, Some(backend), &[endpoint]);

                // Small: send, shut down writing, read everything back, then EOF, and EOF again.
                let mut conn = server.connect();
                let message = b"half-closed, but still listening";
                conn.write_all(message).unwrap();
                conn.shutdown_write().unwrap();
                let mut back = Vec::new();
                conn.read_to_end(&mut back)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(back, message, "{what}");
                assert_eq!(
                    conn.read(&mut [0u8; 8]).unwrap(),
                    0,
                    "{what}: EOF stays EOF"
                );

                // Large: 1 MiB, written while reading on another thread.
                let deadline = Instant::now() + RUN_TIMEOUT;
                echo_and_verify(server.connect(), 42, 1 << 20, deadline)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));

                let (status, _) = server.close_stdin_and_wait();
                assert!(status.success(), "{what}: {status}");
            }
        }
    }
}

/// A peer that goes away without reading its echo makes the server's writes fail (EPIPE or
/// ECONNRESET): that session ends, quietly, and the server goes on serving.
#[test]
fn a_client_that_resets_does_not_disturb_the_server() {
    for example in SERVERS {
        for backend in BACKENDS {
            let what = format!("{example} on {backend}");
            let server = Server::start(example, Some(backend), &["127.0.0.1:0"]);
            for _ in 0..5 {
                let mut rude = server.connect();
                rude.write_all(&[7u8; 64 * 1024]).unwrap();
                drop(rude); // unread data: the kernel sends a reset
            }
            let deadline = Instant::now() + RUN_TIMEOUT;
            echo_and_verify(server.connect(), 3, 100_000, deadline)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let stderr = server.stderr();
            let (status, _) = server.close_stdin_and_wait();
            assert!(status.success(), "{what}: {status}; stderr:\n{stderr}");
            assert!(!stderr.contains("panicked"), "{what}: {stderr}");
        }
    }
}

#[test]
fn bad_arguments_exit_2_with_a_usage_line() {
    let bad: &[&[&str]] = &[
        &["nonsense"],
        &["localhost:8080"],
        &["127.0.0.1"],
        &["127.0.0.1:99999"],
        &["unix:"],
        &["--buffer"],
        &["--buffer", "0"],
        &["--buffer=0"],
        &["--buffer", "-5"],
        &["--buffer", "lots"],
        &["--buffer", "99999999999999999999999"],
        &["--buffer", "1000000000"],
        &["127.0.0.1:0", "127.0.0.1:0"],
        &["--frobnicate"],
    ];
    for example in SERVERS {
        let usage = format!("usage: {example} [ENDPOINT] [--buffer BYTES]");
        let mut cases: Vec<std::process::Command> = bad
            .iter()
            .map(|args| command(example, None, args))
            .collect();
        let mut not_utf8 = command(example, None, &[]);
        not_utf8.arg(OsStr::from_bytes(b"127.0.0.1:\xff"));
        cases.push(not_utf8);
        for cmd in cases {
            let what = format!("{cmd:?}");
            let done = run_bounded(cmd, Stdio::null(), RUN_TIMEOUT);
            assert_eq!(done.status.code(), Some(2), "{what}: {done:?}");
            assert!(
                done.stderr.contains(&usage),
                "{what}: no usage line: {done:?}"
            );
            assert!(!done.stderr.contains("panicked"), "{what}: {done:?}");
            assert!(done.stdout.is_empty(), "{what}: {done:?}");
        }
    }
}

#[test]
fn help_prints_the_usage_and_exits_0() {
    for example in SERVERS {
        let done = run_bounded(
            command(example, None, &["--help"]),
            Stdio::null(),
            RUN_TIMEOUT,
        );
        assert!(done.status.success(), "{done:?}");
        assert!(
            done.stdout
                .starts_with(&format!("usage: {example} [ENDPOINT]")),
            "{done:?}"
        );
    }
}

#[test]
fn an_unknown_backend_exits_2() {
    let examples = [
        "echo_server",
        "echo_server_async",
        "graceful_shutdown",
        "stop_on_enter",
        "blocking_driver",
        "background_signal",
    ];
    for example in examples {
        for name in ["bogus", "select"] {
            let args: &[&str] = if SERVERS.contains(&example) {
                &["127.0.0.1:0"]
            } else {
                &[]
            };
            let done = run_bounded(
                command(example, Some(name), args),
                Stdio::null(),
                RUN_TIMEOUT,
            );
            assert_eq!(
                done.status.code(),
                Some(2),
                "{example} AIO_BACKEND={name}: {done:?}"
            );
            assert!(
                done.stderr.contains(name),
                "{example}: the message names {name:?}: {done:?}"
            );
            assert!(!done.stderr.contains("panicked"), "{done:?}");
            assert!(
                done.stdout.is_empty(),
                "{example}: nothing on stdout: {done:?}"
            );
        }
    }
}

#[test]
fn a_busy_endpoint_is_reported_with_status_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = taken.local_addr().unwrap().to_string();
    for example in SERVERS {
        let done = run_bounded(
            command(example, None, &[&endpoint]),
            Stdio::null(),
            RUN_TIMEOUT,
        );
        assert_eq!(done.status.code(), Some(1), "{example}: {done:?}");
        let message = format!("cannot listen on {endpoint}");
        assert!(done.stderr.contains(&message), "{example}: {done:?}");
        assert!(!done.stderr.contains("panicked"), "{done:?}");
    }
}

#[test]
fn stop_on_enter_runs_until_enter_or_the_end_of_stdin() {
    for backend in BACKENDS {
        for enter in [true, false] {
            let what = format!("stop_on_enter on {backend}, enter: {enter}");
            let mut program = Server::launch("stop_on_enter", Some(backend), &[]);
            assert_eq!(program.listening_line, "Press Enter to stop", "{what}");
            // It waits: nothing stops it on its own.
            std::thread::sleep(Duration::from_millis(300));
            assert!(program.is_running(), "{what}: exited before Enter");
            let (status, more) = if enter {
                program.type_on_stdin(b"\n");
                program.wait_for_exit()
            } else {
                program.close_stdin_and_wait()
            };
            assert!(status.success(), "{what}: {status}");
            assert!(more.is_empty(), "{what}: {more:?}");
        }
    }
}

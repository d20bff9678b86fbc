//! The examples about timers, signals, other threads and blocking work, checked from outside as
//! processes: `graceful_shutdown` drains its connections on SIGTERM or SIGINT and exits 0 within a
//! second, `blocking_driver` receives every packet of its blocking driver in order and exits 0 by
//! itself, and `background_signal` exits by itself although its signal wait is still pending.
//!
//! Signals are sent with `kill(2)` to the child's pid; every wait is bounded.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::examples_harness::{Conn, Pattern, Server, command, run_bounded};

const BACKENDS: [&str; 3] = ["epoll", "poll", "uring"];
const RUN_TIMEOUT: Duration = Duration::from_secs(20);
/// How soon `graceful_shutdown` must exit after the signal when every client reads its echo.
const GRACEFUL_EXIT: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Transport {
    Tcp,
    Unix,
}

/// The endpoint to listen on, with the temporary directory that holds a Unix socket file.
fn endpoint(transport: Transport) -> (Option<tempfile::TempDir>, String) {
    match transport {
        Transport::Tcp => (None, "127.0.0.1:0".to_owned()),
        Transport::Unix => {
            let dir = tempfile::tempdir().expect("temporary directory");
            let endpoint = format!("unix:{}", dir.path().join("graceful.sock").display());
            (Some(dir), endpoint)
        }
    }
}

/// A connected client that has sent all its bytes.
struct Client {
    conn: Conn,
    sent: Vec<u8>,
}

/// Connects, sends `len` pattern bytes of `seed`, and waits for the first byte of the echo: the
/// server has accepted the connection and is serving it. Over TCP it then waits until the server's
/// kernel has acknowledged every byte, so that all of them have arrived before any signal is sent
/// (over a Unix socket a write puts the bytes in the server's receive queue at once).
fn connect_and_send(server: &Server, transport: Transport, seed: u64, len: usize) -> Client {
    let mut conn = server.connect();
    let mut sent = vec![0u8; len];
    Pattern::new(seed).fill(&mut sent);
    conn.write_all(&sent)
        .unwrap_or_else(|e| panic!("client {seed}: sending {len} bytes: {e}"));
    let mut first = [0u8; 1];
    conn.read_exact(&mut first)
        .unwrap_or_else(|e| panic!("client {seed}: the first echoed byte: {e}"));
    assert_eq!(first[0], sent[0], "client {seed}: the first echoed byte");
    if transport == Transport::Tcp {
        wait_until_acknowledged(&conn, seed);
    }
    Client { conn, sent }
}

/// Waits until the socket's send queue is empty (`SIOCOUTQ`: bytes not yet acknowledged by the
/// peer's kernel).
fn wait_until_acknowledged(conn: &Conn, seed: u64) {
    let fd = match conn {
        Conn::Tcp(s) => s.as_raw_fd(),
        Conn::Unix(s) => s.as_raw_fd(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut unacked: libc::c_int = 0;
        // SAFETY: `fd` is an open socket owned by `conn` for the duration of the call, and
        // SIOCOUTQ writes one `int` through the pointer, which points to a live `c_int`.
        let rc = unsafe { libc::ioctl(fd, libc::TIOCOUTQ, &mut unacked) };
        assert_eq!(
            rc,
            0,
            "client {seed}: SIOCOUTQ: {}",
            std::io::Error::last_os_error()
        );
        if unacked == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "client {seed}: {unacked} bytes still unacknowledged after 10 s"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

/// Reads until EOF (the rest of the echo after the first byte) and checks that exactly what was
/// sent came back.
fn read_rest_and_check(mut client: Client) -> Result<(), String> {
    let mut back = vec![client.sent[0]];
    client
        .conn
        .read_to_end(&mut back)
        .map_err(|e| format!("reading after {} bytes: {e}", back.len()))?;
    if back == client.sent {
        return Ok(());
    }
    let differs = back.iter().zip(&client.sent).position(|(a, b)| a != b);
    Err(format!(
        "{} bytes came back for {} sent; first difference at {differs:?}",
        back.len(),
        client.sent.len()
    ))
}

/// Starts `graceful_shutdown`, connects `clients` clients that each send a different amount (up
/// to about 300 KiB: more than a Unix socket's buffers hold, so that some sessions are still
/// writing, with more bytes unread behind, when the signal comes), sends `signal`, and checks that
/// every client gets back exactly what it sent followed by EOF, and that the server exits 0 within
/// [`GRACEFUL_EXIT`] without leaving its socket file.
fn drains_on_signal(backend: &str, transport: Transport, signal: Signal, clients: usize) {
    let what = format!("graceful_shutdown on {backend} over {transport:?}, {signal:?}");
    let (dir, endpoint) = endpoint(transport);
    let server = Server::start(
        "graceful_shutdown",
        Some(backend),
        &[&endpoint, "--buffer", "4096"],
    );
    let connected: Vec<Client> = (0..clients)
        .map(|i| connect_and_send(&server, transport, i as u64 + 1, 1 + i * 16_000))
        .collect();
    let signalled = Instant::now();
    server.send_signal(signal);
    let readers: Vec<_> = connected
        .into_iter()
        .map(|client| thread::spawn(move || read_rest_and_check(client)))
        .collect();
    let results: Vec<Result<(), String>> = readers
        .into_iter()
        .map(|r| r.join().unwrap_or_else(|_| Err("panicked".to_owned())))
        .collect();
    let (status, more, stderr) = server.wait_for_exit_with_stderr();
    let took = signalled.elapsed();
    for (i, result) in results.iter().enumerate() {
        if let Err(e) = result {
            panic!("{what}: client {i}: {e}; server stderr:\n{stderr}");
        }
    }
    assert!(status.success(), "{what}: exit {status}; stderr:\n{stderr}");
    assert!(more.is_empty(), "{what}: more on stdout: {more:?}");
    assert!(
        took < GRACEFUL_EXIT,
        "{what}: exited {took:?} after the signal; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("draining {clients} connection(s)")),
        "{what}: {stderr}"
    );
    assert!(
        stderr.contains("0 closed before draining"),
        "{what}: {stderr}"
    );
    if let Some(dir) = dir {
        let path = dir.path().join("graceful.sock");
        assert!(!path.exists(), "{what}: {} left behind", path.display());
    }
}

#[test]
fn graceful_shutdown_on_sigterm_echoes_everything_sent_then_exits_0() {
    for backend in BACKENDS {
        for transport in [Transport::Tcp, Transport::Unix] {
            drains_on_signal(backend, transport, Signal::TERM, 20);
        }
    }
}

#[test]
fn graceful_shutdown_on_sigint_too() {
    for backend in BACKENDS {
        drains_on_signal(backend, Transport::Unix, Signal::INT, 20);
    }
}

/// A client that never reads keeps its session's write pending forever: the drain deadline (1 s)
/// closes it, the other clients still get all their data, and the server exits 0.
#[test]
fn a_client_that_never_reads_cannot_hold_up_the_shutdown() {
    for backend in BACKENDS {
        for transport in [Transport::Tcp, Transport::Unix] {
            let what = format!("graceful_shutdown on {backend} over {transport:?}");
            let (_dir, endpoint) = endpoint(transport);
            let server = Server::start("graceful_shutdown", Some(backend), &[&endpoint]);
            let polite = connect_and_send(&server, transport, 7, 10_000);

            // Sends until the server closes the connection, never reading.
            let stubborn = std::sync::Arc::new(server.connect());
            let writer = {
                let stubborn = stubborn.clone();
                thread::spawn(move || {
                    let chunk = vec![b'x'; 64 * 1024];
                    let deadline = Instant::now() + RUN_TIMEOUT;
                    while Instant::now() < deadline {
                        if (&*stubborn).write_all(&chunk).is_err() {
                            return;
                        }
                    }
                })
            };
            // Long enough for both directions to fill up: the server's write is now pending.
            thread::sleep(Duration::from_millis(300));

            let signalled = Instant::now();
            server.send_signal(Signal::TERM);
            let checked = read_rest_and_check(polite);
            let (status, _, stderr) = server.wait_for_exit_with_stderr();
            let took = signalled.elapsed();
            writer.join().expect("the writer thread");
            checked.unwrap_or_else(|e| panic!("{what}: the polite client: {e}"));
            assert!(status.success(), "{what}: exit {status}; stderr:\n{stderr}");
            assert!(
                took < Duration::from_secs(5),
                "{what}: exited {took:?} after the signal"
            );
            assert!(
                stderr.contains("1 closed before draining"),
                "{what}: {stderr}"
            );
        }
    }
}

/// The payload the simulated driver delivers as packet `seq` (the example's `packet_payload`).
fn packet_payload(seq: u32) -> String {
    format!("sensor reading {seq}: {}.{} C", 18 + seq % 7, seq * 3 % 10)
}

#[test]
fn blocking_driver_receives_every_packet_in_order_and_exits_0() {
    for backend in BACKENDS {
        for packets in [None, Some(5u32), Some(1)] {
            let what = format!("blocking_driver on {backend}, --packets {packets:?}");
            let arg = packets.map(|n| n.to_string());
            let args: Vec<&str> = match &arg {
                Some(n) => vec!["--packets", n],
                None => vec![],
            };
            let started = Instant::now();
            let done = run_bounded(
                command("blocking_driver", Some(backend), &args),
                Stdio::null(),
                RUN_TIMEOUT,
            );
            assert!(done.status.success(), "{what}: {done:?}");
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{what}: slow: {:?}",
                started.elapsed()
            );
            let total = packets.unwrap_or(8);
            let lines: Vec<&str> = done.stdout.lines().collect();
            assert!(
                lines[0].starts_with(&format!("driver: {total} packets")),
                "{what}: {lines:?}"
            );

            // Every packet, in order, with its payload; then the end of data.
            let received: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with("received packet"))
                .collect();
            assert_eq!(received.len(), total as usize, "{what}: {lines:?}");
            for (i, line) in received.iter().enumerate() {
                let seq = i as u32 + 1;
                let prefix = format!("received packet {seq}/{total}: ");
                let payload = format!("{:?}", packet_payload(seq));
                assert!(
                    line.starts_with(&prefix) && line.ends_with(&payload),
                    "{what}: line {line:?}, expected {prefix}...{payload}"
                );
            }
            let end = format!("driver reports end of data after {total} packets");
            let end_at = lines.iter().position(|l| *l == end);
            let last_packet = lines.iter().rposition(|l| l.starts_with("received packet"));
            assert!(
                matches!((end_at, last_packet), (Some(e), Some(p)) if e > p),
                "{what}: {lines:?}"
            );

            // The reports, in order, sent from the loop meanwhile.
            let reports: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with("sent report"))
                .collect();
            assert_eq!(reports.len(), 3, "{what}: {lines:?}");
            for (i, line) in reports.iter().enumerate() {
                assert!(
                    line.starts_with(&format!("sent report {}/3 ", i + 1)),
                    "{what}: {line:?}"
                );
            }
            if packets.is_none() {
                // 8 packets take 200 ms, the reports go out at 60, 120 and 180 ms: the loop sends
                // while a receive_data call blocks on a pool thread.
                assert!(
                    reports
                        .iter()
                        .any(|l| l.ends_with("while receive_data was blocked on a pool thread")),
                    "{what}: no report was sent while receive_data was blocked: {lines:?}"
                );
            }
            let summary = format!("done: {total} packets received, 3 reports sent");
            assert!(
                lines.last().is_some_and(|l| l.starts_with(&summary)),
                "{what}: {lines:?}"
            );
            assert!(done.stderr.is_empty(), "{what}: {}", done.stderr);
        }
    }
}

#[test]
fn background_signal_exits_by_itself_with_its_signal_wait_pending() {
    for backend in BACKENDS {
        let what = format!("background_signal on {backend}");
        let started = Instant::now();
        let done = run_bounded(
            command("background_signal", Some(backend), &[]),
            Stdio::null(),
            RUN_TIMEOUT,
        );
        let took = started.elapsed();
        assert!(done.status.success(), "{what}: {done:?}");
        assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
        let lines: Vec<&str> = done.stdout.lines().collect();
        assert!(
            lines[0].ends_with(&format!(
                "({backend}): a wait for SIGINT or SIGUSR1 is pending in the background"
            )),
            "{what}: {lines:?}"
        );
        let mut work = lines[1..lines.len() - 1].to_vec();
        work.sort_unstable();
        assert_eq!(
            work,
            [
                "echo over a socket pair: \"hello over a socket pair\" came back",
                "timer 1 expired after 10 ms",
                "timer 2 expired after 20 ms",
                "timer 3 expired after 30 ms",
            ],
            "{what}: {lines:?}"
        );
        let timers: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("timer"))
            .collect();
        assert!(timers.is_sorted(), "{what}: timers out of order: {lines:?}");
        assert_eq!(
            lines.last().copied(),
            Some(
                "run_until_done returned: the work is done; the signal wait is still pending (0 \
                 counted operations left)"
            ),
            "{what}"
        );
        assert!(done.stderr.is_empty(), "{what}: {}", done.stderr);
    }
}

/// With `--wait-signal` a 10 s timer keeps the loop running; a signal runs the background wait's
/// handler, which cancels it, and the program exits 0 at once.
#[test]
fn background_signal_handler_runs_when_a_signal_arrives_while_work_remains() {
    for backend in BACKENDS {
        for (signal, name) in [(Signal::USR1, "SIGUSR1"), (Signal::INT, "SIGINT")] {
            let what = format!("background_signal --wait-signal on {backend}, {name}");
            let mut program =
                Server::launch("background_signal", Some(backend), &["--wait-signal"]);
            assert!(
                program.listening_line.contains("waiting up to 10 s"),
                "{what}: {}",
                program.listening_line
            );
            // The short timers first: the long one still keeps the loop running after them.
            let mut seen = Vec::new();
            while !seen.iter().any(|l: &String| l.starts_with("timer 3")) {
                match program.next_line(RUN_TIMEOUT) {
                    Some(line) => seen.push(line),
                    None => panic!("{what}: no `timer 3` line: {seen:?}"),
                }
            }
            thread::sleep(Duration::from_millis(100));
            assert!(program.is_running(), "{what}: exited before the signal");

            let signalled = Instant::now();
            program.send_signal(signal);
            let (status, rest, stderr) = program.wait_for_exit_with_stderr();
            let took = signalled.elapsed();
            assert!(status.success(), "{what}: {status}; stderr:\n{stderr}");
            assert!(took < Duration::from_secs(5), "{what}: took {took:?}");
            assert_eq!(
                rest,
                [
                    format!("got {name} while work remained: cancelling the timers"),
                    "the 10 s timer cancelled".to_owned(),
                    format!("run_until_done returned: the work ended early ({name} arrived)"),
                ],
                "{what}"
            );
        }
    }
}

#[test]
fn timer_and_signal_examples_reject_bad_arguments_with_status_2() {
    let cases: &[(&str, &[&str], &str)] = &[
        ("blocking_driver", &["--packets"], "[--packets N]"),
        ("blocking_driver", &["--packets", "0"], "[--packets N]"),
        ("blocking_driver", &["--packets=many"], "[--packets N]"),
        ("blocking_driver", &["--packets", "10001"], "[--packets N]"),
        ("blocking_driver", &["unexpected"], "[--packets N]"),
        ("background_signal", &["--wait"], "[--wait-signal]"),
        ("background_signal", &["now"], "[--wait-signal]"),
    ];
    for &(example, args, usage) in cases {
        let what = format!("{example} {args:?}");
        let done = run_bounded(command(example, None, args), Stdio::null(), RUN_TIMEOUT);
        assert_eq!(done.status.code(), Some(2), "{what}: {done:?}");
        assert!(
            done.stderr.contains(&format!("usage: {example} {usage}")),
            "{what}: {done:?}"
        );
        assert!(!done.stderr.contains("panicked"), "{what}: {done:?}");
        assert!(done.stdout.is_empty(), "{what}: {done:?}");
    }
    for example in ["blocking_driver", "background_signal"] {
        let done = run_bounded(
            command(example, None, &["--help"]),
            Stdio::null(),
            RUN_TIMEOUT,
        );
        assert!(done.status.success(), "{example} --help: {done:?}");
        assert!(
            done.stdout.starts_with(&format!("usage: {example} ")),
            "{done:?}"
        );
    }
}

//! The serving examples with `--threads N`: N loops serve (one `SO_REUSEPORT` acceptor each over
//! TCP, connections handed round-robin over a Unix socket), every connection is echoed intact, and
//! after the end of stdin each prints `loop I: C connections` per loop and exits 0.

use std::time::{Duration, Instant};

use crate::examples_harness::{Server, echo_and_verify};

const BACKENDS: [&str; 3] = ["epoll", "poll", "uring"];
const THREADS: usize = 3;
const CONNECTIONS: usize = 24;

fn serve_with_threads(example: &str, backend: &str, endpoint: &str) {
    let what = format!("{example} --threads {THREADS} on {backend} at {endpoint}");
    let threads = THREADS.to_string();
    let server = Server::start(example, Some(backend), &[endpoint, "--threads", &threads]);
    let deadline = Instant::now() + Duration::from_secs(20);
    for seed in 0..CONNECTIONS as u64 {
        echo_and_verify(server.connect(), seed, 3000 + seed as usize * 7, deadline)
            .unwrap_or_else(|e| panic!("{what}: connection {seed}: {e}"));
    }
    let (status, lines) = server.close_stdin_and_wait();
    assert!(status.success(), "{what}: {status} {lines:?}");
    assert_eq!(lines.len(), THREADS, "{what}: one line per loop: {lines:?}");
    let mut total = 0;
    for (i, line) in lines.iter().enumerate() {
        let count = line
            .strip_prefix(&format!("loop {i}: "))
            .and_then(|rest| rest.strip_suffix(" connections"))
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{what}: unexpected line {line:?}"));
        total += count;
    }
    assert_eq!(total, CONNECTIONS, "{what}: {lines:?}");
}

#[test]
fn echo_servers_serve_on_several_loops() {
    for example in ["echo_server", "graceful_shutdown"] {
        for backend in BACKENDS {
            serve_with_threads(example, backend, "127.0.0.1:0");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("threads.sock");
            serve_with_threads(example, backend, &format!("unix:{}", path.display()));
            assert!(
                !path.exists(),
                "{example} on {backend} left its socket file"
            );
        }
    }
}

#[test]
fn graceful_shutdown_drains_every_loop_on_sigterm() {
    for backend in BACKENDS {
        let what = format!("graceful_shutdown --threads {THREADS} on {backend}");
        let threads = THREADS.to_string();
        let server = Server::start(
            "graceful_shutdown",
            Some(backend),
            &["127.0.0.1:0", "--threads", &threads],
        );
        // Idle connections spread over the loops: each loop must close its own.
        let mut idle: Vec<_> = (0..9).map(|_| server.connect()).collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        echo_and_verify(server.connect(), 7, 10_000, deadline)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        server.send_signal(rustix::process::Signal::TERM);
        let (status, lines, stderr) = server.wait_for_exit_with_stderr();
        assert!(status.success(), "{what}: {status} {lines:?} {stderr}");
        assert_eq!(lines.len(), THREADS, "{what}: {lines:?}");
        assert!(stderr.contains("SIGTERM"), "{what}: {stderr}");
        assert!(
            stderr.contains("stopped: 10 connection(s) finished"),
            "{what}: {stderr}"
        );
        for conn in &mut idle {
            conn.set_timeouts(Some(Duration::from_secs(5))).unwrap();
            let mut buf = [0u8; 8];
            assert!(
                matches!(std::io::Read::read(conn, &mut buf), Ok(0) | Err(_)),
                "{what}: an idle connection was left open"
            );
        }
    }
}

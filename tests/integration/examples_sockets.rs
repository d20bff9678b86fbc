//! The socket examples run as processes and judged from outside: `close_hooks` logs open → set option
//! → connect → use → before-close → closed (and the failed-connect and dropped-loop paths), on both
//! backends and over TCP and Unix; `generic_connection` talks to TCP, Unix and `localhost:PORT` with
//! one code path, in-process or to `echo_server`; `udp_echo` follows the serving conventions and
//! echoes datagrams over UDP and Unix datagram sockets. Bad arguments exit with status 2.

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::process::Stdio;
use std::time::Duration;

use crate::examples_harness::{self, Server, command, run_bounded};

const BACKENDS: [&str; 3] = ["epoll", "poll", "uring"];
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

fn run(example: &str, backend: Option<&str>, args: &[&str]) -> examples_harness::Finished {
    run_bounded(command(example, backend, args), Stdio::null(), RUN_TIMEOUT)
}

/// The step names of `close_hooks`'s log lines (`[n] step: ...`), checking the numbering.
fn steps(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let rest = line
                .strip_prefix(&format!("[{}] ", i + 1))
                .unwrap_or_else(|| panic!("line {} is not numbered: {line:?}", i + 1));
            rest.split(':').next().unwrap().to_owned()
        })
        .collect()
}

#[test]
fn close_hooks_logs_each_step_in_order_on_every_path() {
    let expected = [
        // An explicit close.
        "open",
        "set option",
        "connect",
        "use",
        "before-close",
        "closed",
        // A connect that fails.
        "dial",
        "open",
        "set option",
        "before-close",
        "closed",
        // The loop dropped while the socket lives.
        "open",
        "set option",
        "drop",
        "before-close",
        "closed",
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hooks.sock");
    let unix = format!("unix:{}", path.display());
    for backend in BACKENDS {
        for args in [vec![], vec![unix.as_str()]] {
            let out = run("close_hooks", Some(backend), &args);
            assert!(
                out.status.success(),
                "{backend} {args:?}: {}\n{}",
                out.status,
                out.stderr
            );
            assert_eq!(
                steps(&out.stdout),
                expected,
                "{backend} {args:?}:\n{}",
                out.stdout
            );
            // The hooks saw the fd open before closing, and it was closed right after.
            for line in out.stdout.lines() {
                if line.contains("before-close") {
                    assert!(line.contains("still open: true"), "{line}");
                }
                if line.contains("] closed: fd") {
                    assert!(line.contains("open: false"), "{line}");
                }
            }
            // The first socket is the endpoint's kind; TCP_NODELAY is set on TCP sockets only.
            let first_options = out.stdout.lines().nth(1).unwrap_or_default();
            let sets_nodelay = first_options.contains("TCP_NODELAY");
            assert_eq!(sets_nodelay, args.is_empty(), "{first_options}");
        }
        assert!(!path.exists(), "the Unix socket file was removed");
    }
}

#[test]
fn generic_connection_demo_uses_one_code_path_for_every_transport() {
    for backend in BACKENDS {
        let out = run("generic_connection", Some(backend), &[]);
        assert!(
            out.status.success(),
            "{backend}: {}\n{}",
            out.status,
            out.stderr
        );
        for kind in ["(TCP/IPv4", "(Unix", "localhost:"] {
            assert!(
                out.stdout.contains(kind),
                "{backend}: no {kind} line:\n{}",
                out.stdout
            );
        }
        assert!(
            out.stdout
                .lines()
                .all(|l| l.contains(": echoed \"hello over "))
        );
    }
    // One endpoint, given on the command line: served and reached in-process.
    let name = format!("unix:@aio-generic-{}", std::process::id());
    let out = run("generic_connection", None, &[&name]);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.starts_with(&format!("{name} (Unix")),
        "{}",
        out.stdout
    );
}

#[test]
fn generic_connection_talks_to_echo_server_over_tcp_unix_and_a_host_name() {
    let dir = tempfile::tempdir().unwrap();
    let unix = format!("unix:{}", dir.path().join("echo.sock").display());
    for listen in ["127.0.0.1:0", unix.as_str()] {
        let server = Server::start("echo_server", None, &[listen]);
        let mut targets = vec![server.endpoint.clone()];
        if let Some(port) = server.endpoint.strip_prefix("127.0.0.1:") {
            targets.push(format!("localhost:{port}"));
        }
        for target in &targets {
            let out = run("generic_connection", None, &["--connect", target]);
            assert!(
                out.status.success(),
                "{target}: {}\n{}",
                out.status,
                out.stderr
            );
            assert!(
                out.stdout.starts_with(&format!("{target} (")) && out.stdout.contains("echoed"),
                "{target}: {}",
                out.stdout
            );
        }
        let (status, _) = server.close_stdin_and_wait();
        assert!(status.success());
    }
}

#[test]
fn generic_connection_failures_and_bad_arguments_are_clear() {
    // Nothing listens on port 1 of the loopback.
    let out = run("generic_connection", None, &["--connect", "localhost:1"]);
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("localhost:1") && out.stderr.contains("refused"),
        "{}",
        out.stderr
    );
    let out = run(
        "generic_connection",
        None,
        &["--connect", "no-such-host.invalid:80"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("cannot resolve host \"no-such-host.invalid\""),
        "{}",
        out.stderr
    );
    for args in [
        &["--bogus"][..],
        &["--connect"],
        &["not an endpoint"],
        &["a:1", "b:2"],
    ] {
        let out = run("generic_connection", None, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("usage: generic_connection"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    }
    for args in [&["x"][..], &["a", "b"]] {
        let out = run("close_hooks", None, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(out.stderr.contains("usage: close_hooks"), "{}", out.stderr);
    }
}

#[test]
fn udp_echo_serves_udp_and_unix_datagrams_and_stops_on_eof() {
    let mut endpoints = vec!["127.0.0.1:0".to_owned()];
    if examples_harness::ipv6_loopback().is_ok() {
        endpoints.push("[::1]:0".to_owned());
    }
    for backend in BACKENDS {
        for listen in &endpoints {
            let server = Server::start("udp_echo", Some(backend), &[listen, "--buffer", "16"]);
            assert!(server.listening_line.ends_with(&format!("({backend})")));
            let addr: std::net::SocketAddr = server.endpoint.parse().expect("an IP:PORT endpoint");
            assert_ne!(addr.port(), 0, "the real port is announced");
            let bind = if addr.is_ipv4() {
                "127.0.0.1:0"
            } else {
                "[::1]:0"
            };
            let client = UdpSocket::bind(bind).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buf = [0u8; 64];
            for i in 0..50u32 {
                let msg = format!("datagram {i}");
                client.send_to(msg.as_bytes(), addr).unwrap();
                let (n, from) = client.recv_from(&mut buf).unwrap();
                assert_eq!((&buf[..n], from), (msg.as_bytes(), addr));
            }
            // Larger than --buffer: the part that fit comes back, and the server says so.
            client.send_to(&[b'z'; 40], addr).unwrap();
            let (n, _) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[b'z'; 16]);
            std::thread::sleep(Duration::from_millis(50));
            assert!(server.stderr().contains("40 bytes"), "{}", server.stderr());
            let (status, _) = server.close_stdin_and_wait();
            assert!(status.success(), "{backend} {listen}: {status}");
        }
    }
    // A Unix datagram socket: the client binds a path of its own to get replies.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("udp_echo.sock");
    let server = Server::start("udp_echo", None, &[&format!("unix:{}", path.display())]);
    let client = UnixDatagram::bind(dir.path().join("client.sock")).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .send_to(b"over a Unix datagram socket", &path)
        .unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"over a Unix datagram socket");
    let (status, _) = server.close_stdin_and_wait();
    assert!(status.success());
    assert!(!path.exists(), "udp_echo removed its socket file");
}

#[test]
fn udp_echo_returns_the_largest_datagrams_whole_by_default() {
    // UDP over IPv4 carries at most 65,507 bytes in one datagram.
    let server = Server::start("udp_echo", None, &["127.0.0.1:0"]);
    let addr: std::net::SocketAddr = server.endpoint.parse().expect("an IP:PORT endpoint");
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let largest: Vec<u8> = (0..65_507u32).map(|i| (i % 251) as u8).collect();
    let mut buf = vec![0u8; 70_000];
    for size in [1_200, 1_472, 8_000, 60_000, largest.len()] {
        client.send_to(&largest[..size], addr).unwrap();
        let (n, from) = client.recv_from(&mut buf).unwrap();
        assert_eq!(from, addr);
        assert_eq!(n, size, "a datagram of {size} bytes came back with {n}");
        assert!(
            buf[..n] == largest[..size],
            "{size} bytes came back changed"
        );
    }
    assert!(
        !server.stderr().contains("truncated"),
        "{}",
        server.stderr()
    );
    let (status, _) = server.close_stdin_and_wait();
    assert!(status.success(), "{status}");

    // A Unix datagram: the largest the client's socket allows (the kernel refuses one byte more with
    // EMSGSIZE), found by trying down from its send buffer size.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("echo.dgram");
    let server = Server::start("udp_echo", None, &[&format!("unix:{}", path.display())]);
    let client = UnixDatagram::bind(dir.path().join("client.dgram")).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let sndbuf = socket2::SockRef::from(&client).send_buffer_size().unwrap();
    let data: Vec<u8> = (0..sndbuf as u32).map(|i| (i % 253) as u8).collect();
    let mut sent = None;
    for size in (sndbuf.saturating_sub(256)..=sndbuf).rev() {
        match client.send_to(&data[..size], &path) {
            Ok(n) => {
                sent = Some(n);
                break;
            }
            Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => continue,
            Err(e) => panic!("sending {size} bytes: {e}"),
        }
    }
    let sent = sent.expect("a datagram within 256 bytes of the send buffer size");
    assert!(
        sent > 65_536,
        "the largest Unix datagram is only {sent} bytes"
    );
    let mut buf = vec![0u8; sndbuf + 1];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(
        n, sent,
        "a Unix datagram of {sent} bytes came back with {n}"
    );
    assert!(buf[..n] == data[..sent]);
    let (status, _) = server.close_stdin_and_wait();
    assert!(status.success(), "{status}");
}

#[test]
fn udp_echo_rejects_bad_arguments_and_backends() {
    for args in [
        &["not-an-endpoint"][..],
        &["--buffer", "0"],
        &["a:1", "b:2"],
    ] {
        let out = run("udp_echo", None, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.contains("usage: udp_echo"),
            "{args:?}: {}",
            out.stderr
        );
    }
    let out = run("udp_echo", Some("no-such-backend"), &["127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let long = format!("unix:/tmp/{}", "x".repeat(200));
    let out = run("udp_echo", None, &[&long]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("sun_path") && !out.stderr.contains("panicked"),
        "{}",
        out.stderr
    );
}

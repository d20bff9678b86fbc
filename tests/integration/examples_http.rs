//! The `http_server` and `http_client` examples (feature `hyper`), run as programs: the server's
//! routes over HTTP/1.1 (keep-alive, pipelining) and HTTP/2 with prior knowledge on one port, on
//! every backend; the client's output and exit statuses; and curl against the server when curl is
//! installed.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::examples_harness::{Conn, Server, command, run_bounded};

const BACKENDS: [&str; 3] = ["epoll", "poll", "uring"];
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

fn client(args: &[&str]) -> crate::examples_harness::Finished {
    run_bounded(
        command("http_client", None, args),
        Stdio::null(),
        RUN_TIMEOUT,
    )
}

/// Reads from `conn` until `want` responses' worth of `Hello, World!` bodies came (or EOF).
fn read_until(conn: &mut Conn, needle: &str, count: usize) -> String {
    conn.set_timeouts(Some(Duration::from_secs(10))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while String::from_utf8_lossy(&got).matches(needle).count() < count {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => panic!("reading responses: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn http_server_serves_http1_and_h2c_on_every_backend_and_the_client_fetches() {
    for backend in BACKENDS {
        let server = Server::start("http_server", Some(backend), &["127.0.0.1:0"]);
        assert!(
            server.listening_line.ends_with(&format!("({backend})")),
            "{}",
            server.listening_line
        );
        let base = format!("http://{}", server.endpoint);

        // GET / through the client: body on stdout, status line on stderr, status 0.
        let got = client(&[&format!("{base}/")]);
        assert!(got.status.success(), "{backend}: {got:?}");
        assert_eq!(got.stdout, "Hello, World!");
        assert!(got.stderr.contains("200 OK"), "{backend}: {:?}", got.stderr);

        // A missing page: 404, status 1.
        let got = client(&[&format!("{base}/missing")]);
        assert_eq!(got.status.code(), Some(1), "{backend}: {got:?}");
        assert!(got.stderr.contains("404"), "{backend}: {:?}", got.stderr);

        // HTTP/1.1 pipelining on one kept-alive connection: three requests in one write, three
        // responses in order (the echo between the two greetings).
        let mut conn = server.connect();
        conn.write_all(
            b"GET / HTTP/1.1\r\nHost: t\r\n\r\n\
              POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 11\r\n\r\npipelined!!\
              GET / HTTP/1.1\r\nHost: t\r\n\r\n",
        )
        .unwrap();
        let text = read_until(&mut conn, "Hello, World!", 2);
        let first = text.find("Hello, World!").expect("first response");
        let echo = text.find("pipelined!!").expect("echoed body");
        let last = text.rfind("Hello, World!").unwrap();
        assert!(
            first < echo && echo < last,
            "{backend}: out of order: {text:?}"
        );
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text:?}");
        assert!(text.contains("content-type: text/plain"), "{text:?}");

        // HTTP/2 with prior knowledge on the same port: the server's answer starts with its
        // SETTINGS frame (type 4 on stream 0), not an HTTP/1 status line.
        let mut h2 = server.connect();
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .unwrap();
        h2.set_timeouts(Some(Duration::from_secs(10))).unwrap();
        let mut header = [0u8; 9];
        h2.read_exact(&mut header).unwrap();
        assert_eq!(header[3], 0x4, "{backend}: first frame {header:?}");

        let (status, more) = server.close_stdin_and_wait();
        assert!(status.success(), "{backend}: {status} {more:?}");
    }
}

#[test]
fn http_client_writes_the_body_to_a_file_and_reports_errors() {
    let server = Server::start("http_server", None, &["127.0.0.1:0"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.txt");
    let file_arg = file.to_str().unwrap();
    let got = client(&[&format!("http://{}/", server.endpoint), "-o", file_arg]);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(got.stdout, "");
    assert_eq!(std::fs::read(&file).unwrap(), b"Hello, World!");

    // A host name, resolved off the loop.
    let port = server.endpoint.rsplit(':').next().unwrap().to_owned();
    let got = client(&[&format!("http://localhost:{port}/")]);
    assert!(got.status.success(), "{got:?}");
    assert_eq!(got.stdout, "Hello, World!");
    let (status, _) = server.close_stdin_and_wait();
    assert!(status.success());

    // Nothing listens there any more: status 1 and a message that says so.
    let got = client(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!(got.status.code(), Some(1), "{got:?}");
    assert!(got.stderr.contains("cannot connect"), "{:?}", got.stderr);

    // Bad usage: status 2 with the usage line.
    for args in [
        &[][..],
        &["ftp://x/"],
        &["https://example.com/"],
        &["http://x/", "-o"],
    ] {
        let got = client(args);
        assert_eq!(got.status.code(), Some(2), "{args:?}: {got:?}");
        assert!(
            got.stderr.contains("usage: http_client"),
            "{:?}",
            got.stderr
        );
    }
}

#[test]
fn curl_talks_http1_and_h2c_to_http_server() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("curl is not installed: skipped");
        return;
    }
    let server = Server::start("http_server", None, &["127.0.0.1:0"]);
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body.bin");
    let back = dir.path().join("back.bin");
    let data = crate::util::pattern(2 << 20, 9);
    std::fs::write(&body, &data).unwrap();
    let url = format!("http://{}", server.endpoint);
    for http in ["--http1.1", "--http2-prior-knowledge"] {
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "20",
                http,
                "-w",
                "%{http_version} %{http_code}",
            ])
            .arg(format!("{url}/"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let want_version = if http == "--http1.1" { "1.1" } else { "2" };
        assert_eq!(text, format!("Hello, World!{want_version} 200"), "{http}");

        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", http, "--data-binary"])
            .arg(format!("@{}", body.display()))
            .arg("-o")
            .arg(&back)
            .arg(format!("{url}/echo"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{http}: {out:?}");
        crate::util::assert_same_bytes(&std::fs::read(&back).unwrap(), &data);
    }
    let (status, _) = server.close_stdin_and_wait();
    assert!(status.success());
}

//! One connection type for TCP and Unix: the same code path dials `IP:PORT`, `[IPv6]:PORT`,
//! `unix:PATH`, `unix:@NAME` or `HOST:PORT` from one string; host names resolve off the loop and every
//! address is tried in order, the first that connects winning; bad targets and unknown hosts are clear
//! errors, never panics.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use aio::{Acceptor, Endpoint, IoBuf, IoService, LocalHandle, StreamSocket};

use crate::util::{self, Transport};

/// Serves one echo per connection, forever (until the acceptor is dropped with the loop).
fn serve_echo(svc: &LocalHandle, acceptor: Acceptor) {
    let acceptor = Rc::new(acceptor);
    svc.spawn({
        let svc = svc.clone();
        async move {
            while let Ok((socket, _)) = acceptor.accept().await {
                svc.spawn(async move {
                    let (res, buf) = socket.read_some(vec![0u8; 256]).await;
                    if let Ok(n @ 1..) = res {
                        let _ = socket.write_all(buf.slice(..n)).await;
                    }
                });
            }
        }
    });
}

/// The one client code path: dial whatever `target` names, send, read the echo.
async fn talk(svc: &LocalHandle, target: &str, message: &str) -> io::Result<String> {
    let socket = StreamSocket::dial_host(svc, target).await?;
    let (res, _) = socket.write_all(message.as_bytes().to_vec()).await;
    res?;
    let (res, buf) = socket.read_exact(vec![0u8; message.len()]).await;
    res?;
    Ok(String::from_utf8(buf).expect("utf-8 echo"))
}

matrix_test!(
    one_code_path_serves_tcp_v4_v6_unix_and_abstract_endpoints,
    |svc| {
        let mut targets = Vec::new();
        let mut dirs = Vec::new();
        for transport in [Transport::TcpV4, Transport::TcpV6, Transport::Unix] {
            let Some((ep, dir)) = util::listen_endpoint(transport) else {
                continue;
            };
            let acceptor = Acceptor::bind(svc, &ep).unwrap();
            targets.push(acceptor.local_endpoint().unwrap().to_string());
            serve_echo(svc, acceptor);
            dirs.push(dir);
        }
        let name = util::unique_abstract_name();
        serve_echo(svc, Acceptor::bind(svc, &name).unwrap());
        targets.push(name.to_string());
        let port = "127.0.0.1:0".parse::<Endpoint>().unwrap();
        let acceptor = Acceptor::bind(svc, &port).unwrap();
        targets.push(format!(
            "localhost:{}",
            acceptor.local_endpoint().unwrap().port().unwrap()
        ));
        serve_echo(svc, acceptor);

        for target in &targets {
            let reply = svc.block_on(talk(svc, target, &format!("hello over {target}")));
            assert_eq!(reply.unwrap(), format!("hello over {target}"), "{target}");
        }
        // Callback style, the same target strings.
        let replies = Rc::new(RefCell::new(Vec::new()));
        for target in &targets {
            let replies = replies.clone();
            let target = target.clone();
            StreamSocket::dial_host(svc, &target).then(move |res| {
                let socket = res.unwrap_or_else(|e| panic!("dial_host({target}): {e}"));
                replies.borrow_mut().push(socket.peer_endpoint().is_ok());
            });
        }
        svc.block_on(async {
            while replies.borrow().len() < targets.len() {
                let _ = svc.after(std::time::Duration::from_millis(1)).await;
            }
        });
        assert!(replies.borrow().iter().all(|&connected| connected));
    }
);

/// An endpoint where nothing listens: a port that was just closed.
fn closed_port(svc: &IoService) -> Endpoint {
    let gone = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    gone.local_endpoint().unwrap()
}

matrix_test!(
    connect_falls_through_the_addresses_to_the_one_that_listens,
    |svc| {
        // What a name resolving to several addresses gives dial_host, injected: localhost resolves to
        // 127.0.0.1 alone on some machines.
        let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
        let listening = acceptor.local_endpoint().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let addresses = vec![
            closed_port(svc),
            Endpoint::unix(dir.path().join("nobody-listens")),
            closed_port(svc),
            listening.clone(),
            closed_port(svc),
        ];
        let socket = svc
            .block_on(StreamSocket::dial_any(svc, addresses))
            .unwrap();
        assert_eq!(socket.peer_endpoint().unwrap(), listening);
        let (accepted, peer) = svc.block_on(acceptor.accept()).unwrap();
        assert_eq!(peer, socket.local_endpoint().unwrap());
        drop(accepted);

        // And a host name: whatever localhost resolves to here, the listener on one of its addresses
        // is found (on a machine where it resolves to ::1 first, that is a fall-through too).
        let port = listening.port().unwrap();
        let socket = svc.block_on(StreamSocket::dial_host(svc, &format!("localhost:{port}")));
        assert_eq!(socket.unwrap().peer_endpoint().unwrap(), listening);
    }
);

matrix_test!(
    when_every_address_fails_the_error_lists_each_and_why,
    |svc| {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (closed_port(svc), Endpoint::unix(dir.path().join("nobody")));
        let err = svc
            .block_on(StreamSocket::dial_any(svc, vec![a.clone(), b.clone()]))
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&a.to_string()) && msg.contains(&b.to_string()),
            "{msg}"
        );
        assert!(
            msg.contains("refused") && msg.contains("No such file"),
            "{msg}"
        );
        assert_eq!(
            err.kind(),
            io::ErrorKind::NotFound,
            "the last failure's kind: {msg}"
        );

        let err = svc
            .block_on(StreamSocket::dial_any(svc, Vec::new()))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");

        let port = closed_port(svc).port().unwrap();
        let err = svc
            .block_on(StreamSocket::dial_host(svc, &format!("localhost:{port}")))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused, "{err}");
        assert!(
            err.to_string().contains(&format!("localhost:{port}")),
            "{err}"
        );
    }
);

matrix_test!(an_unknown_host_is_a_clear_error, |svc| {
    let err = svc
        .block_on(StreamSocket::dial_host(svc, "no-such-host.invalid:80"))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    assert!(
        err.to_string().contains("\"no-such-host.invalid\""),
        "{err}"
    );
});

matrix_test!(bad_connect_targets_are_clear_errors, |svc| {
    let long = format!("unix:/tmp/{}", "x".repeat(200));
    let cases = [
        ("localhost", "missing port"),
        ("localhost:99999", "port"),
        ("localhost:http", "port"),
        (":80", "empty host"),
        ("", "missing port"),
        ("unix:", "empty Unix socket path"),
        (long.as_str(), "sun_path"),
    ];
    for (target, want) in cases {
        let err = svc
            .block_on(StreamSocket::dial_host(svc, target))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{target:?}: {err}");
        assert!(err.to_string().contains(want), "{target:?}: {err}");
    }
    let long = Endpoint::unix(format!("/tmp/{}", "y".repeat(200)));
    let err = svc.block_on(StreamSocket::dial(svc, &long)).unwrap_err();
    assert!(err.to_string().contains("sun_path"), "{err}");
});

matrix_test!(dropping_a_pending_dial_host_drops_it_quietly, |svc| {
    let op = StreamSocket::dial_host(svc, "localhost:1");
    drop(op);
    let other = util::fresh(svc);
    StreamSocket::dial_host(&other, "localhost:1").then(|_| panic!("never called"));
    drop(other);
    // The loop still works.
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let ep = acceptor.local_endpoint().unwrap().to_string();
    svc.block_on(StreamSocket::dial_host(svc, &ep)).unwrap();
});

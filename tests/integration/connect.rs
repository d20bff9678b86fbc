//! Connecting: `StreamSocket::dial` and `socket.connect` over TCP v4/v6, Unix paths and Linux
//! abstract names; refused connections report the endpoint.

use std::io;
use std::rc::Rc;

use aio::{Acceptor, Endpoint, IoService, StreamSocket};

use crate::util::{self, Transport};

/// A TCP endpoint on loopback where nothing listens (a listener was bound there and closed).
fn closed_port() -> Endpoint {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr.into()
}

/// Accepts one connection on `acceptor` while `client` (an op that yields a connected socket) runs,
/// then checks a round trip both ways.
fn check_connection(svc: &IoService, acceptor: &Acceptor, client: StreamSocket) {
    let (server, _peer) = svc.block_on(acceptor.accept()).unwrap();
    let (res, _) = svc.block_on(client.write_all(b"ping".to_vec()));
    res.unwrap();
    let (res, buf) = svc.block_on(server.read_exact(vec![0u8; 4]));
    res.unwrap();
    assert_eq!(buf, b"ping");
    let (res, _) = svc.block_on(server.write_all(b"pong".to_vec()));
    res.unwrap();
    let (res, buf) = svc.block_on(client.read_exact(vec![0u8; 4]));
    res.unwrap();
    assert_eq!(buf, b"pong");
}

/// Every kind of endpoint a client can reach: TCP v4, v6 (if available), Unix path, abstract name.
fn endpoints() -> Vec<(Endpoint, Option<tempfile::TempDir>)> {
    let mut all = Vec::new();
    for t in [Transport::TcpV4, Transport::TcpV6, Transport::Unix] {
        all.extend(util::listen_endpoint(t));
    }
    all.push((util::unique_abstract_name(), None));
    all
}

matrix_test!(dial_connects_over_every_endpoint_kind, |svc| {
    for (ep, _dir) in endpoints() {
        let acceptor = Acceptor::bind(svc, &ep).unwrap();
        let target = acceptor.local_endpoint().unwrap();
        // Future style.
        let client = svc.block_on(StreamSocket::dial(svc, &target));
        let client = client.unwrap_or_else(|e| panic!("dial {target}: {e}"));
        assert_eq!(client.peer_endpoint().unwrap(), target);
        check_connection(svc, &acceptor, client);
        // Callback style.
        let slot = Rc::new(std::cell::RefCell::new(None));
        StreamSocket::dial(svc, &target).then({
            let slot = slot.clone();
            move |res| *slot.borrow_mut() = Some(res)
        });
        while slot.borrow().is_none() {
            svc.run_one().unwrap();
        }
        let client = slot.take().unwrap().unwrap();
        check_connection(svc, &acceptor, client);
    }
});

matrix_test!(socket_connect_works_over_every_endpoint_kind, |svc| {
    for (ep, _dir) in endpoints() {
        let acceptor = Acceptor::bind(svc, &ep).unwrap();
        let target = acceptor.local_endpoint().unwrap();
        // Not opened yet: connect opens it for the endpoint's family.
        let client = StreamSocket::new(svc);
        svc.block_on(client.connect(&target))
            .unwrap_or_else(|e| panic!("connect {target}: {e}"));
        assert!(client.is_open());
        check_connection(svc, &acceptor, client);
        // Opened first, then connected through a handler.
        let client = Rc::new(StreamSocket::new(svc));
        client.open(target.family()).unwrap();
        let slot = Rc::new(std::cell::RefCell::new(None));
        client.connect(&target).then({
            let slot = slot.clone();
            move |res| *slot.borrow_mut() = Some(res)
        });
        while slot.borrow().is_none() {
            svc.run_one().unwrap();
        }
        slot.take().unwrap().unwrap();
        let client = Rc::try_unwrap(client).unwrap();
        check_connection(svc, &acceptor, client);
    }
});

matrix_test!(closed_port_is_refused_naming_the_endpoint, |svc| {
    let ep = closed_port();
    let e = svc.block_on(StreamSocket::dial(svc, &ep)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    assert!(
        e.to_string().contains(&ep.to_string()),
        "the message names {ep}: {e}"
    );

    let socket = StreamSocket::new(svc);
    let slot = Rc::new(std::cell::RefCell::new(None));
    socket.connect(&ep).then({
        let slot = slot.clone();
        move |res| *slot.borrow_mut() = Some(res)
    });
    while slot.borrow().is_none() {
        svc.run_one().unwrap();
    }
    let e = slot.take().unwrap().unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains(&ep.to_string()), "{e}");
});

matrix_test!(connect_to_a_missing_unix_socket_names_the_path, |svc| {
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::unix(dir.path().join("nobody-listens.sock"));
    let e = svc.block_on(StreamSocket::dial(svc, &ep)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    assert!(e.to_string().contains(&ep.to_string()), "{e}");

    // A socket file whose listener is gone: refused.
    let path = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let ep = Endpoint::unix(&path);
    let e = svc.block_on(StreamSocket::dial(svc, &ep)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains(&ep.to_string()), "{e}");

    // An abstract name nobody bound.
    let ep = util::unique_abstract_name();
    let e = svc.block_on(StreamSocket::dial(svc, &ep)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    assert!(e.to_string().contains(&ep.to_string()), "{e}");
});

matrix_test!(connect_with_a_mismatched_family_is_an_error, |svc| {
    // An IPv4 socket asked to reach a Unix path, and a Unix socket asked to reach an IP endpoint.
    let v4 = StreamSocket::new(svc);
    v4.open(aio::Family::Ipv4).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let unix_ep = Endpoint::unix(dir.path().join("x.sock"));
    let e = svc.block_on(v4.connect(&unix_ep)).unwrap_err();
    assert!(e.to_string().contains(&unix_ep.to_string()), "{e}");

    let unix = StreamSocket::new(svc);
    unix.open(aio::Family::Unix).unwrap();
    let ip_ep = closed_port();
    let e = svc.block_on(unix.connect(&ip_ep)).unwrap_err();
    assert!(e.to_string().contains(&ip_ep.to_string()), "{e}");
});

matrix_test!(dial_to_an_unnamed_endpoint_is_an_error_not_a_panic, |svc| {
    let e = svc
        .block_on(StreamSocket::dial(svc, &Endpoint::Unnamed))
        .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
    let s = StreamSocket::new(svc);
    let e = svc.block_on(s.connect(&Endpoint::Unnamed)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
});

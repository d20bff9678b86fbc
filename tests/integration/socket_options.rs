//! `StreamSocket` options and queries: `bytes_readable`, no-delay, keep-alive, buffer sizes, local
//! and peer endpoints (matching the acceptor's and the client's).

use std::io;
use std::rc::Rc;

use aio::{Acceptor, Endpoint, StreamSocket};

use crate::util::{self, Transport};

matrix_test!(bytes_readable_reports_queued_bytes, |svc| {
    // Unix pair: a completed write is queued at the peer at once.
    let (a, b) = StreamSocket::pair(svc).unwrap();
    assert_eq!(b.bytes_readable().unwrap(), 0);
    let (res, _) = svc.block_on(a.write_all(util::pattern(10, 1)));
    res.unwrap();
    assert_eq!(b.bytes_readable().unwrap(), 10);
    let (res, _) = svc.block_on(b.read_exact(vec![0u8; 4]));
    res.unwrap();
    assert_eq!(b.bytes_readable().unwrap(), 6);

    // TCP: wait for the first byte to arrive, then count the rest of the segment.
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let (res, _) = svc.block_on(pair.a.write_all(util::pattern(1000, 2)));
    res.unwrap();
    let (res, _) = svc.block_on(pair.b.read_exact(vec![0u8; 1]));
    res.unwrap();
    assert_eq!(pair.b.bytes_readable().unwrap(), 999);

    b.close();
    util::assert_kind(&b.bytes_readable(), io::ErrorKind::NotConnected);
});

matrix_test!(nodelay_and_keepalive_round_trip, |svc| {
    for transport in [Transport::TcpV4, Transport::TcpV6] {
        let Some(pair) = util::pair(svc, transport) else {
            continue;
        };
        let s = &pair.a;
        for on in [true, false, true] {
            s.set_nodelay(on).unwrap();
            assert_eq!(s.nodelay().unwrap(), on, "{transport:?} nodelay");
            s.set_keepalive(on).unwrap();
            assert_eq!(s.keepalive().unwrap(), on, "{transport:?} keepalive");
        }
    }
    // Keep-alive is a socket-level option, fine on Unix sockets; no-delay is TCP only: an error.
    let (a, _b) = StreamSocket::pair(svc).unwrap();
    a.set_keepalive(true).unwrap();
    assert!(a.keepalive().unwrap());
    assert!(a.set_nodelay(true).is_err());
    assert!(a.nodelay().is_err());
    // A closed socket says so.
    a.close();
    util::assert_kind(&a.set_nodelay(true), io::ErrorKind::NotConnected);
    util::assert_kind(&a.keepalive(), io::ErrorKind::NotConnected);
});

matrix_test!(buffer_sizes_round_trip, |svc| {
    for transport in [Transport::TcpV4, Transport::Unix] {
        let pair = util::pair(svc, transport).unwrap();
        let s = &pair.a;
        s.set_send_buffer_size(16 * 1024).unwrap();
        let small_send = s.send_buffer_size().unwrap();
        s.set_recv_buffer_size(16 * 1024).unwrap();
        let small_recv = s.recv_buffer_size().unwrap();
        // Linux doubles the value it is given (bookkeeping overhead).
        assert!(
            small_send >= 16 * 1024,
            "{transport:?}: SO_SNDBUF {small_send}"
        );
        assert!(
            small_recv >= 16 * 1024,
            "{transport:?}: SO_RCVBUF {small_recv}"
        );
        s.set_send_buffer_size(64 * 1024).unwrap();
        s.set_recv_buffer_size(64 * 1024).unwrap();
        assert!(
            s.send_buffer_size().unwrap() > small_send,
            "{transport:?}: SO_SNDBUF grows"
        );
        assert!(
            s.recv_buffer_size().unwrap() > small_recv,
            "{transport:?}: SO_RCVBUF grows"
        );
    }
    let s = StreamSocket::new(svc);
    util::assert_kind(&s.send_buffer_size(), io::ErrorKind::NotConnected);
    util::assert_kind(&s.set_recv_buffer_size(1), io::ErrorKind::NotConnected);
});

matrix_test!(endpoints_match_the_acceptor_and_the_client, |svc| {
    for transport in [Transport::TcpV4, Transport::TcpV6, Transport::Unix] {
        let Some((ep, _dir)) = util::listen_endpoint(transport) else {
            continue;
        };
        let acceptor = Acceptor::bind(svc, &ep).unwrap();
        let listening = acceptor.local_endpoint().unwrap();
        if transport == Transport::Unix {
            assert_eq!(listening, ep);
        } else {
            assert_eq!(listening.as_ip().unwrap().ip(), ep.as_ip().unwrap().ip());
            assert_ne!(listening.port(), Some(0), "the real port is reported");
        }
        let client = svc.spawn({
            let (svc, listening) = (svc.local(), listening.clone());
            async move { StreamSocket::dial(&svc, &listening).await }
        });
        let (server, peer) = svc.block_on(acceptor.accept()).unwrap();
        let client = svc.block_on(client).unwrap().unwrap();

        assert_eq!(client.peer_endpoint().unwrap(), listening, "{transport:?}");
        assert_eq!(server.local_endpoint().unwrap(), listening, "{transport:?}");
        assert_eq!(
            server.peer_endpoint().unwrap(),
            client.local_endpoint().unwrap()
        );
        assert_eq!(
            peer,
            client.local_endpoint().unwrap(),
            "accept's peer is the client"
        );
        if transport == Transport::Unix {
            assert_eq!(
                peer,
                Endpoint::Unnamed,
                "an unbound Unix client has no name"
            );
        } else {
            assert_eq!(peer.family(), ep.family());
            assert_ne!(peer.port(), listening.port());
        }
        client.close();
        util::assert_kind(&client.peer_endpoint(), io::ErrorKind::NotConnected);
        util::assert_kind(&client.local_endpoint(), io::ErrorKind::NotConnected);
    }
});

matrix_test!(bound_client_reports_its_endpoint_to_the_server, |svc| {
    let dir = tempfile::tempdir().unwrap();
    let listen = Endpoint::unix(dir.path().join("server.sock"));
    let named = Endpoint::unix(dir.path().join("client.sock"));
    let acceptor = Acceptor::bind(svc, &listen).unwrap();
    let client = Rc::new(StreamSocket::new(svc));
    client.bind(&named).unwrap();
    assert_eq!(client.local_endpoint().unwrap(), named);
    let connecting = svc.spawn({
        let (client, listen) = (client.clone(), listen.clone());
        async move { client.connect(&listen).await }
    });
    let (_server, peer) = svc.block_on(acceptor.accept()).unwrap();
    svc.block_on(connecting).unwrap().unwrap();
    assert_eq!(peer, named);
    assert_eq!(client.peer_endpoint().unwrap(), listen);

    // Binding a TCP client to a chosen local port.
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let tcp = StreamSocket::new(svc);
    tcp.bind(&"127.0.0.1:0".parse().unwrap()).unwrap();
    let local = tcp.local_endpoint().unwrap();
    assert_ne!(local.port(), Some(0));
    let target = acceptor.local_endpoint().unwrap();
    let connecting = tcp.connect(&target);
    let accepted = svc.spawn(async move { acceptor.accept().await.map(|(_, peer)| peer) });
    svc.block_on(connecting).unwrap();
    assert_eq!(svc.block_on(accepted).unwrap().unwrap(), local);
});

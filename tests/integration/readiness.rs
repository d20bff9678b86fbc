//! `readable()` / `writable()` on every object (booster's `on_readable` / `on_writeable`): a wait
//! completes only when the fd is really ready, does no I/O itself, and pairs with a non-blocking
//! read or write of the caller's own (as a protocol library written against readiness does).

use std::io;

use aio::{Acceptor, DatagramSocket, Endpoint, IoService, StreamSocket};

use crate::util::{self, Transport};

/// Writes with `try_write` until the kernel says `WouldBlock`; returns how much went in.
fn fill(socket: &StreamSocket) -> usize {
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = 0;
    loop {
        match socket.try_write(&chunk) {
            Ok(n) => sent += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return sent,
            Err(e) => panic!("try_write: {e}"),
        }
    }
}

/// Reads with `try_read` until `WouldBlock`; returns how much came out.
fn drain(socket: &StreamSocket) -> usize {
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    loop {
        match socket.try_read(&mut buf) {
            Ok(0) => panic!("unexpected end of stream"),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return got,
            Err(e) => panic!("try_read: {e}"),
        }
    }
}

fn stream_readiness(svc: &IoService, transport: Transport) {
    let Some(pair) = util::pair(svc, transport) else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);

    // Nothing sent: a read wait stays pending however often the loop turns.
    let mut wait = Box::pin(b.readable());
    let (_counter, waker) = util::CountingWaker::new();
    assert!(util::poll_once(&mut wait, &waker).is_pending());
    assert_eq!(svc.poll().unwrap(), 0);
    assert!(util::poll_once(&mut wait, &waker).is_pending());
    drop(wait);

    // Readable once bytes arrive; the wait consumed nothing, so try_read gets them all.
    assert_eq!(a.try_write(b"hello").unwrap(), 5);
    svc.block_on(b.readable()).unwrap();
    svc.block_on(b.readable()).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(b.try_read(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    util::assert_kind(&b.try_read(&mut buf), io::ErrorKind::WouldBlock);

    // A full send buffer: writable stays pending until the peer drains it.
    let sent = fill(a);
    assert!(sent > 0);
    let mut wait = Box::pin(a.writable());
    assert!(util::poll_once(&mut wait, &waker).is_pending());
    assert_eq!(svc.poll().unwrap(), 0);
    assert!(util::poll_once(&mut wait, &waker).is_pending());
    let mut received = 0;
    let mut buf = vec![0u8; 64 * 1024];
    while received < sent {
        svc.block_on(b.readable()).unwrap();
        match b.try_read(&mut buf) {
            Ok(n) => received += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("try_read: {e}"),
        }
    }
    assert_eq!(received, sent, "every byte written came out");
    svc.block_on(wait).unwrap();
    assert!(a.try_write(b"more").unwrap() > 0);
    assert_eq!(drain(b), 4);

    // A peer that hangs up makes the socket readable, and the read says end of stream.
    drop(pair.a);
    svc.block_on(b.readable()).unwrap();
    assert_eq!(b.try_read(&mut buf).unwrap(), 0);
}

matrix_test!(stream_readable_and_writable_over_tcp, |svc| {
    stream_readiness(svc, Transport::TcpV4);
});

matrix_test!(stream_readable_and_writable_over_unix, |svc| {
    stream_readiness(svc, Transport::Unix);
});

matrix_test!(readable_in_callback_style_fires_once, |svc| {
    let Some(pair) = util::pair(svc, Transport::Unix) else {
        return;
    };
    let fired = std::rc::Rc::new(std::cell::Cell::new(0));
    let f = fired.clone();
    pair.b.readable().then(move |r| {
        r.unwrap();
        f.set(f.get() + 1);
    });
    assert_eq!(svc.poll().unwrap(), 0);
    assert_eq!(fired.get(), 0);
    pair.a.try_write(b"x").unwrap();
    while fired.get() == 0 {
        svc.run_one().unwrap();
    }
    assert_eq!(svc.poll().unwrap(), 0, "nothing else ran");
    assert_eq!(fired.get(), 1);
});

matrix_test!(datagram_readable_then_receive, |svc| {
    let (a, b) = DatagramSocket::pair(svc).unwrap();
    let mut wait = Box::pin(b.readable());
    let (_counter, waker) = util::CountingWaker::new();
    assert!(util::poll_once(&mut wait, &waker).is_pending());
    assert_eq!(svc.poll().unwrap(), 0);
    svc.block_on(a.send(b"datagram".to_vec())).0.unwrap();
    svc.block_on(wait).unwrap();
    // Still there: the wait read nothing.
    svc.block_on(b.readable()).unwrap();
    let (n, buf) = svc.block_on(b.recv(vec![0u8; 64]));
    assert_eq!(n.unwrap().len, 8);
    assert_eq!(&buf[..8], b"datagram");
    svc.block_on(a.writable()).unwrap();
});

matrix_test!(acceptor_readable_when_a_connection_waits, |svc| {
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse::<Endpoint>().unwrap()).unwrap();
    let addr = acceptor.local_endpoint().unwrap();
    let mut wait = Box::pin(acceptor.readable());
    let (_counter, waker) = util::CountingWaker::new();
    assert!(util::poll_once(&mut wait, &waker).is_pending());
    assert_eq!(svc.poll().unwrap(), 0);
    let _client = std::net::TcpStream::connect(addr.to_string()).unwrap();
    svc.block_on(wait).unwrap();
    let peer = svc.block_on(acceptor.accept()).unwrap();
    assert!(peer.0.is_open());
});

matrix_test!(a_readiness_wait_is_cancelled_by_cancel_and_close, |svc| {
    let Some(pair) = util::pair(svc, Transport::Unix) else {
        return;
    };
    let got = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let g = got.clone();
    pair.b.readable().then(move |r| g.borrow_mut().push(r));
    pair.b.cancel();
    svc.poll().unwrap();
    assert_eq!(got.borrow().len(), 1);
    util::assert_cancelled(&got.borrow_mut().pop().unwrap());
    let g = got.clone();
    pair.b.writable().then(move |r| g.borrow_mut().push(r));
    // Writable right away: completes without waiting.
    while got.borrow().is_empty() {
        svc.run_one().unwrap();
    }
    got.borrow_mut().pop().unwrap().unwrap();

    // Closing the socket ends a pending wait too (with "cancelled"), and a wait started on a
    // closed socket fails at once.
    let g = got.clone();
    pair.b.readable().then(move |r| g.borrow_mut().push(r));
    pair.b.close();
    svc.poll().unwrap();
    assert_eq!(got.borrow().len(), 1);
    util::assert_cancelled(&got.borrow_mut().pop().unwrap());
    assert!(svc.block_on(pair.b.readable()).is_err());
});

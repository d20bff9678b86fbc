//! Cancellation is an outcome: `cancel()`, `close()` and dropping an object complete its pending
//! operations with `ECANCELED` and give their buffers back; dropping an awaited `Op` withdraws it;
//! operations on a closed socket fail with `NotConnected` through the handler.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use aio::{Acceptor, IoBuf, IoService, StreamSocket};

use crate::util::{self, CountingWaker, Transport};

/// A slot a handler fills, and a loop driver that runs until it is filled.
struct Outcome<T>(Rc<RefCell<Option<T>>>);

impl<T: 'static> Outcome<T> {
    fn new() -> Outcome<T> {
        Outcome(Rc::new(RefCell::new(None)))
    }
    fn setter(&self) -> impl FnOnce(T) + 'static {
        let slot = self.0.clone();
        move |v| *slot.borrow_mut() = Some(v)
    }
    fn is_set(&self) -> bool {
        self.0.borrow().is_some()
    }
    fn wait(&self, svc: &IoService) -> T {
        while !self.is_set() {
            svc.run_one().unwrap();
        }
        self.0.take().unwrap()
    }
}

matrix_test!(cancelled_read_gives_ecanceled_and_its_buffer, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"keep");
    let out = Outcome::new();
    a.read_some(buf).then(out.setter());
    assert_eq!(svc.poll().unwrap(), 0, "the read is pending");
    a.cancel();
    let (res, buf) = out.wait(svc);
    util::assert_cancelled(&res);
    assert_eq!(buf, b"keep", "contents intact");
    assert_eq!(buf.capacity(), 64, "same buffer back");

    // The socket stays usable, in both styles.
    let (res, _) = svc.block_on(b.write_all(b"after".to_vec()));
    res.unwrap();
    let (res, buf) = svc.block_on(a.read_exact(vec![0u8; 5]));
    res.unwrap();
    assert_eq!(buf, b"after");

    // An awaited read, cancelled from a handler.
    let task = svc.spawn(a.read_some(vec![7u8; 8]));
    svc.poll().unwrap();
    assert!(!task.is_finished(), "the awaited read waits");
    a.cancel();
    let (res, buf) = svc.block_on(task).unwrap();
    util::assert_cancelled(&res);
    assert_eq!(buf, [7u8; 8]);
});

matrix_test!(cancelled_write_gives_ecanceled_and_its_buffer, |svc| {
    let (a, _b) = util::stuffed_pair(svc);
    let data = util::pattern(1 << 20, 3);
    let out = Outcome::new();
    a.write_all(data.clone()).then(out.setter());
    assert_eq!(svc.poll().unwrap(), 0, "the write is pending: nobody reads");
    assert!(!out.is_set());
    a.cancel();
    let (res, buf) = out.wait(svc);
    util::assert_cancelled(&res);
    util::assert_same_bytes(&buf, &data);

    // Future style: cancel while the task waits.
    let task = svc.spawn(a.write_all(data.clone().slice(10..)));
    svc.poll().unwrap();
    assert!(!task.is_finished());
    a.cancel();
    let (res, slice) = svc.block_on(task).unwrap();
    util::assert_cancelled(&res);
    assert_eq!((slice.begin(), slice.end()), (10, data.len()));
    util::assert_same_bytes(&slice.into_inner(), &data);
});

matrix_test!(cancelled_accept_gives_ecanceled, |svc| {
    for transport in [Transport::TcpV4, Transport::Unix] {
        let (ep, _dir) = util::listen_endpoint(transport).unwrap();
        let acceptor = Acceptor::bind(svc, &ep).unwrap();
        let out = Outcome::new();
        acceptor.accept().then(out.setter());
        assert_eq!(svc.poll().unwrap(), 0);
        acceptor.cancel();
        util::assert_cancelled(&out.wait(svc));
        // Still listening: the next accept gets a connection.
        let addr = acceptor.local_endpoint().unwrap();
        let dial = svc.spawn({
            let svc = svc.local();
            async move { StreamSocket::dial(&svc, &addr).await }
        });
        let (_s, _peer) = svc.block_on(acceptor.accept()).unwrap();
        svc.block_on(dial).unwrap().unwrap();
    }
});

matrix_test!(cancelled_connect_gives_ecanceled, |svc| {
    // A TCP listener with a full backlog drops SYNs, so a connect to it stays in progress.
    let listener =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    listener
        .bind(
            &"127.0.0.1:0"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
        )
        .unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue (backlog 0 holds one connection) with blocking std connects.
    let _fillers: Vec<std::net::TcpStream> = (0..1)
        .map(|_| std::net::TcpStream::connect(addr).unwrap())
        .collect();
    let client = StreamSocket::new(svc);
    let out = Outcome::new();
    client.connect(&addr.into()).then(out.setter());
    assert_eq!(svc.poll().unwrap(), 0, "the connect is in progress");
    assert!(!out.is_set());
    client.cancel();
    util::assert_cancelled(&out.wait(svc));

    // Future style, cancelled by close.
    let client = StreamSocket::new(svc);
    let task = svc.spawn(client.connect(&addr.into()));
    svc.poll().unwrap();
    assert!(!task.is_finished());
    client.close();
    util::assert_cancelled(&svc.block_on(task).unwrap());
});

matrix_test!(close_cancels_pending_operations, |svc| {
    let (a, b) = util::stuffed_pair(svc);
    let read = Outcome::new();
    let write = Outcome::new();
    a.read_some(vec![1u8; 32]).then(read.setter());
    a.write_all(vec![2u8; 100_000]).then(write.setter());
    let task = svc.spawn(a.read_exact(vec![3u8; 4]));
    svc.poll().unwrap();
    assert!(!read.is_set() && !write.is_set() && !task.is_finished());
    a.close();
    let (res, buf) = read.wait(svc);
    util::assert_cancelled(&res);
    assert_eq!(buf, [1u8; 32]);
    let (res, buf) = write.wait(svc);
    util::assert_cancelled(&res);
    assert_eq!(buf, [2u8; 100_000]);
    let (res, buf) = svc.block_on(task).unwrap();
    util::assert_cancelled(&res);
    assert_eq!(buf, [3u8; 4]);
    // The peer sees the close.
    drop(b);

    // An acceptor closed while accepting.
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let accept = Outcome::new();
    acceptor.accept().then(accept.setter());
    svc.poll().unwrap();
    acceptor.close();
    util::assert_cancelled(&accept.wait(svc));
});

matrix_test!(dropping_a_socket_cancels_its_pending_operations, |svc| {
    let (a, _b) = util::stuffed_pair(svc);
    let read = Outcome::new();
    let write = Outcome::new();
    a.read_some(vec![4u8; 16]).then(read.setter());
    a.write_all(vec![5u8; 50_000]).then(write.setter());
    let op = a.read_some(vec![6u8; 2]);
    let task = svc.spawn(op);
    svc.poll().unwrap();
    assert!(!read.is_set() && !write.is_set() && !task.is_finished());
    drop(a);
    let (res, buf) = read.wait(svc);
    util::assert_cancelled(&res);
    assert_eq!(buf, [4u8; 16]);
    let (res, buf) = write.wait(svc);
    util::assert_cancelled(&res);
    assert_eq!(buf, [5u8; 50_000]);
    let (res, buf) = svc.block_on(task).unwrap();
    util::assert_cancelled(&res);
    assert_eq!(buf, [6u8; 2]);

    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let accept = Outcome::new();
    acceptor.accept().then(accept.setter());
    svc.poll().unwrap();
    drop(acceptor);
    util::assert_cancelled(&accept.wait(svc));
});

matrix_test!(dropping_an_awaited_op_withdraws_it, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let (wakes, waker) = CountingWaker::new();
    let mut op = a.read_some(vec![0u8; 16]);
    assert!(util::poll_once(&mut op, &waker).is_pending());
    drop(op);
    // An event after the drop must wake nobody and lose no data.
    let (res, _) = svc.block_on(b.write_all(b"later".to_vec()));
    res.unwrap();
    svc.poll().unwrap();
    assert_eq!(wakes.count(), 0, "the dropped future's waker was not kept");
    let out = Outcome::new();
    a.read_some(vec![0u8; 16]).then(out.setter());
    let (res, buf) = out.wait(svc);
    assert_eq!(
        &buf[..res.unwrap()],
        b"later",
        "nothing was consumed by the dropped op"
    );

    // The same for a pending write, a pending accept and an aborted task.
    let (c, _d) = util::stuffed_pair(svc);
    let mut write = c.write_all(vec![1u8; 10_000]);
    assert!(util::poll_once(&mut write, &waker).is_pending());
    drop(write);
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let mut accept = acceptor.accept();
    assert!(util::poll_once(&mut accept, &waker).is_pending());
    drop(accept);
    let addr = acceptor.local_endpoint().unwrap();
    let _client = std::net::TcpStream::connect(addr.as_ip().unwrap()).unwrap();
    svc.poll().unwrap();
    assert_eq!(wakes.count(), 0);
    let (_server, peer) = svc.block_on(acceptor.accept()).unwrap();
    assert_eq!(peer.as_ip().unwrap(), _client.local_addr().unwrap());

    let task = svc.spawn(a.read_some(vec![0u8; 4]));
    svc.poll().unwrap();
    task.abort();
    svc.poll().unwrap();
    let (res, _) = svc.block_on(b.write_all(b"z".to_vec()));
    res.unwrap();
    let (res, buf) = svc.block_on(a.read_some(vec![0u8; 4]));
    assert_eq!(
        &buf[..res.unwrap()],
        b"z",
        "the aborted task's read took nothing"
    );
});

matrix_test!(ops_on_a_closed_socket_fail_with_not_connected, |svc| {
    let (a, _b) = StreamSocket::pair(svc).unwrap();
    a.close();
    let never_opened = StreamSocket::new(svc);
    for s in [&a, &never_opened] {
        let read = Outcome::new();
        s.read_some(vec![9u8; 3]).then(read.setter());
        let exact = Outcome::new();
        s.read_exact(vec![9u8; 3]).then(exact.setter());
        let write = Outcome::new();
        s.write_all(b"abc".to_vec()).then(write.setter());
        let some = Outcome::new();
        s.write_some(b"abc".to_vec()).then(some.setter());
        let readv = Outcome::new();
        s.read_vectored(vec![vec![0u8; 2]]).then(readv.setter());
        let writev = Outcome::new();
        s.write_vectored(vec![b"x".to_vec()]).then(writev.setter());
        svc.poll().unwrap();
        let (res, buf) = read.wait(svc);
        util::assert_kind(&res, io::ErrorKind::NotConnected);
        assert_eq!(buf, [9u8; 3]);
        let (res, buf) = exact.wait(svc);
        util::assert_kind(&res, io::ErrorKind::NotConnected);
        assert_eq!(buf, [9u8; 3]);
        util::assert_kind(&write.wait(svc).0, io::ErrorKind::NotConnected);
        util::assert_kind(&some.wait(svc).0, io::ErrorKind::NotConnected);
        util::assert_kind(&readv.wait(svc).0, io::ErrorKind::NotConnected);
        util::assert_kind(&writev.wait(svc).0, io::ErrorKind::NotConnected);
        // Awaited, too.
        let (res, _) = svc.block_on(s.read_some(vec![0u8; 1]));
        util::assert_kind(&res, io::ErrorKind::NotConnected);
        util::assert_kind(
            &s.shutdown(std::net::Shutdown::Both),
            io::ErrorKind::NotConnected,
        );
        let e = svc.block_on(s.write_all(b"x".to_vec())).0.unwrap_err();
        assert!(e.to_string().contains("not open"), "a clear message: {e}");
        // cancel and close on a closed socket are harmless.
        s.cancel();
        s.close();
    }
    let acceptor = Acceptor::new(svc);
    util::assert_kind(
        &svc.block_on(acceptor.accept()),
        io::ErrorKind::NotConnected,
    );
    util::assert_kind(&acceptor.local_endpoint(), io::ErrorKind::NotConnected);
});

matrix_test!(cancel_with_nothing_pending_is_harmless, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    a.cancel();
    a.cancel();
    assert_eq!(svc.poll().unwrap(), 0);
    let (res, _) = svc.block_on(b.write_all(b"ok".to_vec()));
    res.unwrap();
    let (res, buf) = svc.block_on(a.read_exact(vec![0u8; 2]));
    res.unwrap();
    assert_eq!(buf, b"ok");
});

// Closing a socket may have to wait for the kernel (on io_uring, its poll request is removed before
// the fd closes); another socket's read that finishes meanwhile is still delivered by the next turn,
// not left behind until some later event.
matrix_test!(a_read_finished_while_a_close_waits_is_delivered, |svc| {
    // b waits for readiness once (on io_uring its fd gets a poll request), then has nothing pending.
    let (b, b_peer) = StreamSocket::pair(svc).unwrap();
    let got_fds = Outcome::new();
    b.recv_fds(vec![0u8; 8], 1).then(got_fds.setter());
    assert_eq!(svc.poll().unwrap(), 0, "the readiness wait waits");
    svc.block_on(b_peer.write_all(b"x".to_vec())).0.unwrap();
    assert_eq!(got_fds.wait(svc).0.unwrap().len, 1);

    let (a, a_peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let a = StreamSocket::from_fd(svc, a).unwrap();
    let read_a = Outcome::new();
    a.read_some(vec![0u8; 8]).then({
        let set = read_a.setter();
        move |out| set((out, std::time::Instant::now()))
    });
    assert_eq!(svc.poll().unwrap(), 0, "the read waits");
    std::io::Write::write_all(&mut &a_peer, b"data").unwrap();
    b.close();
    // A timer bounds the wait: should the read's completion be left behind, the timer's wake-up is
    // what delivers it.
    let timer = aio::DeadlineTimer::new(svc).unwrap();
    let due = std::time::Instant::now() + std::time::Duration::from_secs(5);
    timer.expires_at(due);
    timer.wait().then(|_| {});
    let ((res, buf), delivered) = read_a.wait(svc);
    assert!(
        delivered < due,
        "the read was delivered before the timer was due"
    );
    assert_eq!(res.unwrap(), 4);
    assert_eq!(&buf[..4], b"data");
});

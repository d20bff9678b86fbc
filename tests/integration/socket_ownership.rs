//! Who owns a `StreamSocket`'s fd: `pair()`, `from_fd` (std streams), `release()` and the
//! `into_std_*` conversions, `native()`, `is_open()`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use aio::{Endpoint, StreamSocket};

use crate::util::{self, Transport};

fn is_nonblocking(fd: &impl AsRawFd) -> bool {
    // SAFETY: F_GETFL only queries the open file's flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    assert!(flags >= 0);
    flags & libc::O_NONBLOCK != 0
}

matrix_test!(pair_is_connected_both_ways, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    assert!(a.is_open() && b.is_open());
    assert_ne!(a.native(), b.native());
    let (res, _) = svc.block_on(a.write_all(b"to b".to_vec()));
    res.unwrap();
    let (res, _) = svc.block_on(b.write_all(b"to a".to_vec()));
    res.unwrap();
    let (res, buf) = svc.block_on(b.read_exact(vec![0u8; 4]));
    res.unwrap();
    assert_eq!(buf, b"to b");
    let (res, buf) = svc.block_on(a.read_exact(vec![0u8; 4]));
    res.unwrap();
    assert_eq!(buf, b"to a");
    assert_eq!(a.local_endpoint().unwrap(), Endpoint::Unnamed);
    assert_eq!(a.peer_endpoint().unwrap(), Endpoint::Unnamed);
    assert!(a.service().same_service(&svc.local()));
});

matrix_test!(release_returns_a_working_fd_and_closes_the_socket, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let raw = pair.a.native().unwrap();
    let fd: OwnedFd = pair.a.release().unwrap();
    assert_eq!(fd.as_raw_fd(), raw, "the same fd comes back");
    assert!(is_nonblocking(&fd), "it stays non-blocking");

    // The socket reports closed.
    assert!(!pair.a.is_open());
    assert_eq!(pair.a.native(), None);
    util::assert_kind(&pair.a.release(), io::ErrorKind::NotConnected);
    util::assert_kind(&pair.a.local_endpoint(), io::ErrorKind::NotConnected);
    let (res, buf) = svc.block_on(pair.a.read_some(vec![0u8; 3]));
    util::assert_kind(&res, io::ErrorKind::NotConnected);
    assert_eq!(buf, [0u8; 3]);

    // The fd still works, through std, both ways.
    let mut std_stream = TcpStream::from(fd);
    std_stream.set_nonblocking(false).unwrap();
    std_stream.write_all(b"via std").unwrap();
    let (res, buf) = svc.block_on(pair.b.read_exact(vec![0u8; 7]));
    res.unwrap();
    assert_eq!(buf, b"via std");
    let (res, _) = svc.block_on(pair.b.write_all(b"via aio".to_vec()));
    res.unwrap();
    let mut got = [0u8; 7];
    std_stream.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"via aio");
    // Releasing did not close the connection: end of stream only when std closes it.
    drop(std_stream);
    let (res, _) = svc.block_on(pair.b.read_some(vec![0u8; 1]));
    assert_eq!(res.unwrap(), 0);
});

matrix_test!(from_fd_adopts_std_streams_as_nonblocking, |svc| {
    // TCP
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut server, _) = listener.accept().unwrap();
    assert!(!is_nonblocking(&client));
    let client_raw = client.as_raw_fd();
    let client = StreamSocket::from_fd(svc, client).unwrap();
    assert_eq!(client.native(), Some(client_raw));
    // A read with nothing to read waits instead of blocking the loop.
    let got = std::rc::Rc::new(std::cell::RefCell::new(None));
    client.read_some(vec![0u8; 16]).then({
        let got = got.clone();
        move |(res, buf)| *got.borrow_mut() = Some(buf[..res.unwrap()].to_vec())
    });
    assert_eq!(svc.poll().unwrap(), 0);
    // SAFETY: the fd is owned by `client`, which is alive; F_GETFL only queries it.
    let flags = unsafe { libc::fcntl(client_raw, libc::F_GETFL) };
    assert!(
        flags & libc::O_NONBLOCK != 0,
        "from_fd made it non-blocking"
    );
    server.write_all(b"tcp").unwrap();
    while got.borrow().is_none() {
        svc.run_one().unwrap();
    }
    assert_eq!(got.borrow().as_deref(), Some(&b"tcp"[..]));
    let (res, _) = svc.block_on(client.write_all(b"back".to_vec()));
    res.unwrap();
    let mut back = [0u8; 4];
    server.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"back");

    // Unix
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let ours = StreamSocket::from_fd(svc, ours).unwrap();
    theirs.write_all(b"unix").unwrap();
    let (res, buf) = svc.block_on(ours.read_exact(vec![0u8; 4]));
    res.unwrap();
    assert_eq!(buf, b"unix");
    theirs.shutdown(Shutdown::Write).unwrap();
    let (res, _) = svc.block_on(ours.read_some(vec![0u8; 4]));
    assert_eq!(res.unwrap(), 0);
});

matrix_test!(into_std_tcp_and_unix_hand_over_the_connection, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let peer_of_a = pair.a.peer_endpoint().unwrap();
    let mut tcp = pair.a.into_std_tcp().unwrap();
    assert_eq!(Endpoint::from(tcp.peer_addr().unwrap()), peer_of_a);
    // Still non-blocking: nothing to read is WouldBlock, not a hang.
    let mut one = [0u8; 1];
    assert_eq!(
        tcp.read(&mut one).unwrap_err().kind(),
        io::ErrorKind::WouldBlock
    );
    tcp.write_all(b"std tcp").unwrap();
    let (res, buf) = svc.block_on(pair.b.read_exact(vec![0u8; 7]));
    res.unwrap();
    assert_eq!(buf, b"std tcp");

    let (a, b) = StreamSocket::pair(svc).unwrap();
    let mut unix = a.into_std_unix().unwrap();
    unix.write_all(b"std unix").unwrap();
    let (res, buf) = svc.block_on(b.read_exact(vec![0u8; 8]));
    res.unwrap();
    assert_eq!(buf, b"std unix");

    // A closed socket has nothing to hand over.
    let closed = StreamSocket::new(svc);
    util::assert_kind(&closed.into_std_tcp(), io::ErrorKind::NotConnected);
});

matrix_test!(open_twice_is_already_exists, |svc| {
    let s = StreamSocket::new(svc);
    assert!(!s.is_open());
    s.open(aio::Family::Ipv4).unwrap();
    assert!(s.is_open());
    util::assert_kind(&s.open(aio::Family::Ipv4), io::ErrorKind::AlreadyExists);
    s.close();
    s.close();
    assert!(!s.is_open());
    s.open(aio::Family::Unix).unwrap();
    assert!(s.is_open());
});

//! The std traits of the I/O objects: `AsRawFd`, std types into `aio` (`from_fd`, `IoDevice::new`)
//! and back (`TryFrom`), over real loopback TCP and Unix sockets: bytes, connections and datagrams
//! queued on either side of a conversion are never lost, std gets its fd blocking, and a refused
//! conversion (pending operation, closed object, other family) hands the object back unchanged.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::rc::Rc;
use std::time::Duration;

use aio::{Acceptor, DatagramSocket, Endpoint, IntoStdError, IoDevice, StreamSocket};

/// How long a blocking std call in these tests may wait before the test fails instead of hanging.
const LIMIT: Duration = Duration::from_secs(10);

fn is_nonblocking(fd: impl AsFd) -> bool {
    rustix::fs::fcntl_getfl(fd)
        .expect("F_GETFL")
        .contains(rustix::fs::OFlags::NONBLOCK)
}

/// A connected std pair: (client, server), blocking, with read timeouts as a bound.
fn std_pair_tcp() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    server.set_read_timeout(Some(LIMIT)).unwrap();
    (client, server)
}

/// A connected Unix pair through a listener in a temporary directory, and the directory.
fn std_pair_unix() -> (UnixStream, UnixStream, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("conv.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let client = UnixStream::connect(&path).unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    server.set_read_timeout(Some(LIMIT)).unwrap();
    (client, server, dir)
}

/// The round trip of one connection end, std → aio → std, with `peer` the other end (std): data
/// sent before each conversion is read after it.
fn stream_round_trip<S, P>(svc: &aio::IoService, end: S, mut peer: P) -> S
where
    S: Into<OwnedFd> + TryFrom<StreamSocket, Error = IntoStdError<StreamSocket>> + Read + Write,
    S: AsRawFd,
    P: Read + Write,
{
    let raw = end.as_raw_fd();
    peer.write_all(b"before adopt|").unwrap();
    let socket = StreamSocket::from_fd(svc, end).unwrap();
    assert_eq!(socket.as_raw_fd(), raw, "AsRawFd is the std fd");
    assert_eq!(socket.native(), Some(raw));
    assert!(
        is_nonblocking(std_fd(&socket)),
        "from_fd makes it non-blocking"
    );
    let (res, buf) = svc.block_on(socket.read_exact(vec![0u8; 13]));
    res.unwrap();
    assert_eq!(buf, b"before adopt|");

    // Bytes that arrive while aio owns the fd and are not read by it stay for std.
    peer.write_all(b"before release|").unwrap();
    let (res, _) = svc.block_on(socket.write_all(b"from aio|".to_vec()));
    res.unwrap();
    let mut back = S::try_from(socket).expect("an idle socket converts");
    assert_eq!(back.as_raw_fd(), raw, "the same fd comes out");
    assert!(!is_nonblocking(std_fd(&back)), "std gets it blocking");
    let mut got = [0u8; 15];
    back.read_exact(&mut got).unwrap(); // a blocking read: waits rather than WouldBlock
    assert_eq!(&got, b"before release|");
    back.write_all(b"from std").unwrap();
    let mut got = [0u8; 17];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"from aio|from std");
    back
}

/// The fd of something that is `AsRawFd`, borrowed for an fcntl right away.
fn std_fd(fd: &impl AsRawFd) -> std::os::fd::BorrowedFd<'_> {
    // SAFETY: the fd is open (the object holding it is borrowed) for the borrow's short life.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd.as_raw_fd()) }
}

matrix_test!(tcp_stream_round_trip, |svc| {
    let (client, server) = std_pair_tcp();
    let server = stream_round_trip::<TcpStream, _>(svc, server, client);
    assert!(server.peer_addr().is_ok());
});

matrix_test!(unix_stream_round_trip, |svc| {
    let (client, server, _dir) = std_pair_unix();
    stream_round_trip::<UnixStream, _>(svc, server, client);
    // A socketpair, which has no file at all.
    let (a, b) = UnixStream::pair().unwrap();
    b.set_read_timeout(Some(LIMIT)).unwrap();
    a.set_read_timeout(Some(LIMIT)).unwrap();
    stream_round_trip::<UnixStream, _>(svc, a, b);
});

matrix_test!(stream_into_owned_fd_of_either_family, |svc| {
    let (tcp_client, tcp_server) = std_pair_tcp();
    let (unix_a, unix_b) = UnixStream::pair().unwrap();
    unix_b.set_read_timeout(Some(LIMIT)).unwrap();
    for (end, peer) in [
        (OwnedFd::from(tcp_server), OwnedFd::from(tcp_client)),
        (OwnedFd::from(unix_a), OwnedFd::from(unix_b)),
    ] {
        let raw = end.as_raw_fd();
        let socket = StreamSocket::from_fd(svc, end).unwrap();
        let fd = OwnedFd::try_from(socket).unwrap();
        assert_eq!(fd.as_raw_fd(), raw);
        assert!(!is_nonblocking(&fd));
        // Still connected: plain write(2) and read(2) through the fds.
        std::fs::File::from(fd).write_all(b"raw").unwrap();
        let mut got = [0u8; 3];
        std::fs::File::from(peer).read_exact(&mut got).unwrap();
        assert_eq!(&got, b"raw");
    }
});

matrix_test!(acceptor_round_trip_keeps_queued_connections, |svc| {
    // TCP: a connection queued before each conversion is accepted after it.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let raw = listener.as_raw_fd();
    let first = TcpStream::connect(addr).unwrap();
    let acceptor = Acceptor::from_fd(svc, listener).unwrap();
    assert_eq!(acceptor.as_raw_fd(), raw);
    let (accepted, peer) = svc.block_on(acceptor.accept()).unwrap();
    assert_eq!(peer.as_ip(), Some(first.local_addr().unwrap()));
    drop(accepted);
    let second = TcpStream::connect(addr).unwrap();
    let listener = TcpListener::try_from(acceptor).unwrap();
    assert_eq!(listener.as_raw_fd(), raw);
    assert!(!is_nonblocking(&listener));
    let (_, peer) = listener.accept().unwrap(); // blocking, and the connection is there
    assert_eq!(peer, second.local_addr().unwrap());

    // Unix, bound by aio in a temporary directory: the socket file stays for the std listener.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acceptor.sock");
    let acceptor = Acceptor::bind(svc, &Endpoint::unix(&path)).unwrap();
    let mut client = UnixStream::connect(&path).unwrap();
    let listener = UnixListener::try_from(acceptor).unwrap();
    assert!(path.exists(), "the listener owns the socket file now");
    assert!(!is_nonblocking(&listener));
    let (mut server, _) = listener.accept().unwrap();
    server.write_all(b"hi").unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let mut got = [0u8; 2];
    client.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"hi");
    // And a new one connects through the file.
    let _third = UnixStream::connect(&path).unwrap();
    listener.accept().unwrap();
});

matrix_test!(acceptor_not_listening_is_refused_as_a_listener, |svc| {
    let acceptor = Acceptor::new(svc);
    assert_eq!(acceptor.as_raw_fd(), -1, "not opened yet");
    let ep: Endpoint = "127.0.0.1:0".parse().unwrap();
    acceptor.bind_to(&ep).unwrap();
    let err = TcpListener::try_from(acceptor).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("not listening"), "{err}");
    let acceptor = err.into_inner();
    acceptor.listen(8).unwrap();
    let addr = acceptor.local_endpoint().unwrap().as_ip().unwrap();
    let _client = TcpStream::connect(addr).unwrap();
    svc.block_on(acceptor.accept()).unwrap();
    // Its fd, listening or not, is always available.
    let fd = OwnedFd::try_from(acceptor).unwrap();
    assert!(!is_nonblocking(&fd));
});

matrix_test!(datagram_round_trip_keeps_queued_datagrams, |svc| {
    // UDP
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    b.set_read_timeout(Some(LIMIT)).unwrap();
    a.connect(b.local_addr().unwrap()).unwrap();
    b.connect(a.local_addr().unwrap()).unwrap();
    let raw = a.as_raw_fd();
    b.send(b"one").unwrap();
    let socket = DatagramSocket::from_fd(svc, a).unwrap();
    assert_eq!(socket.as_raw_fd(), raw);
    let (res, buf) = svc.block_on(socket.recv(vec![0u8; 16]));
    assert_eq!(&buf[..res.unwrap().len], b"one");
    b.send(b"two").unwrap();
    let a = UdpSocket::try_from(socket).unwrap();
    assert_eq!(a.as_raw_fd(), raw);
    assert!(!is_nonblocking(&a));
    a.set_read_timeout(Some(LIMIT)).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(a.recv(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"two");

    // Unix datagrams, and the OwnedFd of either family.
    let (a, b) = UnixDatagram::pair().unwrap();
    b.send(b"three").unwrap();
    let socket = DatagramSocket::from_fd(svc, a).unwrap();
    let a = UnixDatagram::try_from(socket).unwrap();
    a.set_read_timeout(Some(LIMIT)).unwrap();
    assert_eq!(a.recv(&mut buf).unwrap(), 5);
    let fd = OwnedFd::try_from(DatagramSocket::from_fd(svc, a).unwrap()).unwrap();
    assert!(!is_nonblocking(&fd));
    let udp = DatagramSocket::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(OwnedFd::try_from(udp).is_ok());
});

matrix_test!(other_family_or_type_is_refused_and_the_object_kept, |svc| {
    // A Unix stream into a TcpStream, and a TCP stream into a UnixStream.
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let err = TcpStream::try_from(a).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(
        err.to_string()
            .contains("Unix stream socket cannot become a TcpStream"),
        "{err}"
    );
    let a = err.into_inner();
    assert!(a.is_open() && is_nonblocking(std_fd(&a)), "left as it was");
    let (res, _) = svc.block_on(a.write_all(b"still works".to_vec()));
    res.unwrap();
    let (res, buf) = svc.block_on(b.read_exact(vec![0u8; 11]));
    res.unwrap();
    assert_eq!(buf, b"still works");

    let (_client, server) = std_pair_tcp();
    let tcp = StreamSocket::from_fd(svc, server).unwrap();
    let (tcp, error) = UnixStream::try_from(tcp).unwrap_err().into_parts();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(tcp.is_open());
    assert!(TcpStream::try_from(tcp).is_ok());

    // Datagrams: UDP is no UnixDatagram; a datagram socket is no stream.
    let udp = DatagramSocket::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let udp = UnixDatagram::try_from(udp).unwrap_err().into_inner();
    assert!(udp.is_open());
    let not_a_stream = StreamSocket::from_fd(svc, UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
    let err = TcpStream::try_from(not_a_stream).unwrap_err();
    assert!(err.to_string().contains("UDP socket"), "{err}");
    let err = OwnedFd::try_from(err.into_inner()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    // A Unix acceptor is no TcpListener.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("l.sock");
    let acceptor = Acceptor::bind(svc, &Endpoint::unix(&path)).unwrap();
    let acceptor = TcpListener::try_from(acceptor).unwrap_err().into_inner();
    drop(acceptor);
    assert!(
        !path.exists(),
        "still the acceptor's: its file went with it"
    );
});

matrix_test!(a_pending_operation_refuses_the_conversion, |svc| {
    // A callback read waiting for bytes.
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let got = Rc::new(RefCell::new(None));
    a.read_some(vec![0u8; 16]).then({
        let got = got.clone();
        move |(res, buf)| {
            *got.borrow_mut() = Some(buf[..res.unwrap()].to_vec());
        }
    });
    svc.poll().unwrap();
    let err = UnixStream::try_from(a).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy, "{err}");
    assert!(err.to_string().contains("pending"), "{err}");
    let a = err.into_inner();
    // The read was not disturbed: it completes with the bytes written now.
    let (res, _) = svc.block_on(b.write_all(b"after".to_vec()));
    res.unwrap();
    while got.borrow().is_none() {
        svc.run_one().unwrap();
    }
    assert_eq!(got.borrow().as_deref(), Some(&b"after"[..]));
    // Once nothing is pending it converts.
    let a = UnixStream::try_from(a).unwrap();
    assert!(!is_nonblocking(&a));

    // A future waiting (polled once, not finished) counts too.
    let (a, _b) = StreamSocket::pair(svc).unwrap();
    let mut wait = Box::pin(a.readable());
    let (_count, waker) = crate::util::CountingWaker::new();
    assert!(crate::util::poll_once(&mut wait, &waker).is_pending());
    let a = OwnedFd::try_from(a).unwrap_err().into_inner();
    drop(wait);
    assert!(
        OwnedFd::try_from(a).is_ok(),
        "free once the future is dropped"
    );

    // An accept, a datagram receive, a device wait.
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    acceptor.accept().then(drop);
    svc.poll().unwrap();
    let err = TcpListener::try_from(acceptor).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
    let acceptor = err.into_inner();
    acceptor.cancel();
    svc.poll().unwrap(); // the accept's handler runs with ECANCELED
    assert!(TcpListener::try_from(acceptor).is_ok());

    let (d, _e) = DatagramSocket::pair(svc).unwrap();
    d.recv(vec![0u8; 8]).then(drop);
    svc.poll().unwrap();
    let err = UnixDatagram::try_from(d).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
    assert!(err.into_inner().is_open());

    let (reader, _writer) = rustix::pipe::pipe().unwrap();
    let device = IoDevice::new(svc, reader).unwrap();
    device.readable().then(drop);
    svc.poll().unwrap();
    let err = OwnedFd::try_from(device).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ResourceBusy);
    assert!(err.into_inner().is_open());
});

matrix_test!(a_closed_object_is_refused_and_has_no_raw_fd, |svc| {
    let (a, _b) = StreamSocket::pair(svc).unwrap();
    a.close();
    assert_eq!(a.as_raw_fd(), -1);
    let err = UnixStream::try_from(a).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotConnected);
    let _: io::Error = err.into(); // `?` in an io::Result function

    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    acceptor.close();
    assert_eq!(acceptor.as_raw_fd(), -1);
    assert_eq!(
        TcpListener::try_from(acceptor).unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
    let datagram = DatagramSocket::new(svc);
    assert_eq!(datagram.as_raw_fd(), -1);
    assert_eq!(
        UdpSocket::try_from(datagram).unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
    let (reader, _writer) = rustix::pipe::pipe().unwrap();
    let device = IoDevice::new(svc, reader).unwrap();
    device.close();
    assert_eq!(device.as_raw_fd(), -1);
    assert_eq!(
        OwnedFd::try_from(device).unwrap_err().kind(),
        io::ErrorKind::NotConnected
    );
});

matrix_test!(io_device_hands_back_only_what_it_owns, |svc| {
    let (reader, writer) = rustix::pipe::pipe().unwrap();
    let mut writer = std::fs::File::from(writer);
    let raw = reader.as_raw_fd();
    writer.write_all(b"x").unwrap();
    let device = IoDevice::new(svc, reader).unwrap();
    assert_eq!(device.as_raw_fd(), raw);
    svc.block_on(device.readable()).unwrap();
    let fd = OwnedFd::try_from(device).unwrap();
    assert_eq!(fd.as_raw_fd(), raw);
    assert!(!is_nonblocking(&fd), "its mode is left as it was");
    let mut reader = std::fs::File::from(fd);
    let mut got = [0u8; 1];
    reader.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"x", "the byte waited for is still there");

    // Attached: not the device's to give; it comes back still watching.
    // SAFETY: `reader` outlives the device, which is dropped at the end of this test.
    let device = unsafe { IoDevice::attach(svc, reader.as_raw_fd()) }.unwrap();
    assert_eq!(device.as_raw_fd(), reader.as_raw_fd());
    let err = OwnedFd::try_from(device).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
    let device = err.into_inner();
    writer.write_all(b"y").unwrap();
    svc.block_on(device.readable()).unwrap();
    drop(device);
    reader.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"y");
});

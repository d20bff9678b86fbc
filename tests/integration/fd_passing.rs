//! Passing file descriptors over Unix stream sockets (`send_fds` / `recv_fds`, `SCM_RIGHTS`): a passed
//! pipe end works in the receiver, received fds are close-on-exec, several fds keep their order, too
//! few slots are reported, data after an fd message still flows, and misuse (TCP, no data, too many
//! fds) is a clear error.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use aio::{Acceptor, IoService, StreamSocket};

use crate::util::{self, Transport};

/// A connected pair of Unix stream sockets through a listener in a temporary directory.
fn unix_pair(svc: &IoService) -> (StreamSocket, StreamSocket, tempfile::TempDir) {
    let (ep, dir) = util::listen_endpoint(Transport::Unix).unwrap();
    let acceptor = Acceptor::bind(svc, &ep).unwrap();
    let client = svc.block_on(StreamSocket::dial(svc, &ep)).unwrap();
    let (server, _) = svc.block_on(acceptor.accept()).unwrap();
    (client, server, dir.unwrap())
}

/// A pipe's read and write ends (std's `io::pipe` is newer than aio's minimum Rust version).
fn pipe() -> (File, File) {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
    (r.into(), w.into())
}

fn is_cloexec(fd: &OwnedFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
    flags != -1 && flags & libc::FD_CLOEXEC != 0
}

matrix_test!(a_passed_pipe_end_works_in_the_receiver, |svc| {
    let (a, b, _dir) = unix_pair(svc);
    let (mut reader, writer) = pipe();
    let (res, buf) = svc.block_on(a.send_fds(b"take this".to_vec(), vec![writer.into()]));
    assert_eq!(res.unwrap(), 9);
    assert_eq!(buf, b"take this");
    let (res, buf) = svc.block_on(b.recv_fds(vec![0u8; 64], 4));
    let got = res.unwrap();
    assert_eq!(&buf[..got.len], b"take this");
    assert_eq!(got.fds.len(), 1);
    assert!(!got.fds_truncated);
    assert!(is_cloexec(&got.fds[0]), "received fds are close-on-exec");
    // Our copy of the write end was closed when sent: the received one is the only writer left.
    let mut passed = std::fs::File::from(got.fds.into_iter().next().unwrap());
    passed.write_all(b"written through the passed fd").unwrap();
    drop(passed);
    let mut text = String::new();
    reader.read_to_string(&mut text).unwrap();
    assert_eq!(text, "written through the passed fd");
});

matrix_test!(
    several_fds_arrive_in_order_and_data_after_them_still_flows,
    |svc| {
        let (a, b, _dir) = unix_pair(svc);
        let pipes: Vec<(File, File)> = (0..3).map(|_| pipe()).collect();
        let (readers, writers): (Vec<_>, Vec<_>) = pipes.into_iter().unzip();
        let fds: Vec<OwnedFd> = writers.into_iter().map(OwnedFd::from).collect();
        let (res, _) = svc.block_on(a.send_fds(b"fds".to_vec(), fds));
        res.unwrap();
        let (res, _) = svc.block_on(a.write_all(b"and more data".to_vec()));
        res.unwrap();
        // The read stops at the message that carries the fds; what follows comes in later reads.
        let (res, buf) = svc.block_on(b.recv_fds(vec![0u8; 64], 8));
        let got = res.unwrap();
        assert_eq!(&buf[..got.len], b"fds");
        assert_eq!(got.fds.len(), 3);
        let (res, buf) = svc.block_on(b.read_exact(vec![0u8; 13]));
        res.unwrap();
        assert_eq!(buf, b"and more data");
        for (i, (fd, mut reader)) in got.fds.into_iter().zip(readers).enumerate() {
            let mut writer = std::fs::File::from(fd);
            writer.write_all(&[b'0' + i as u8]).unwrap();
            drop(writer);
            let mut byte = Vec::new();
            reader.read_to_end(&mut byte).unwrap();
            assert_eq!(byte, [b'0' + i as u8], "fd {i} is the {i}th pipe");
        }
    }
);

matrix_test!(more_fds_than_slots_are_reported_truncated, |svc| {
    let (a, b, _dir) = unix_pair(svc);
    let fds: Vec<OwnedFd> = (0..4).map(|_| pipe().1.into()).collect();
    let (res, _) = svc.block_on(a.send_fds(b"x".to_vec(), fds));
    res.unwrap();
    let (res, _) = svc.block_on(b.recv_fds(vec![0u8; 8], 2));
    let got = res.unwrap();
    assert_eq!(got.len, 1);
    assert!(got.fds_truncated, "{got:?}");
    assert_eq!(got.fds.len(), 2, "the first two; the others were closed");
});

matrix_test!(
    send_fds_and_recv_fds_on_a_socket_pair_with_callbacks,
    |svc| {
        let (a, b) = StreamSocket::pair(svc).unwrap();
        let file = tempfile::tempfile().unwrap();
        let done = std::rc::Rc::new(std::cell::Cell::new(false));
        a.send_fds(b"file".to_vec(), vec![file.into()])
            .then(|(res, _)| {
                res.unwrap();
            });
        b.recv_fds(Vec::with_capacity(16), 1).then({
            let done = done.clone();
            move |(res, buf)| {
                let got = res.unwrap();
                assert_eq!(buf, b"file");
                let mut file = std::fs::File::from(got.fds.into_iter().next().unwrap());
                file.write_all(b"ok").unwrap();
                done.set(true);
            }
        });
        svc.block_on(async {
            while !done.get() {
                let _ = svc.after(std::time::Duration::from_millis(1)).await;
            }
        });
    }
);

matrix_test!(misuse_is_a_clear_error, |svc| {
    // TCP cannot carry fds.
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let (fd, _keep) = pipe();
    let (res, buf) = svc.block_on(pair.a.send_fds(b"x".to_vec(), vec![fd.into()]));
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported, "{err}");
    assert!(err.to_string().contains("Unix sockets"), "{err}");
    assert_eq!(buf, b"x");
    let (res, _) = svc.block_on(pair.b.recv_fds(vec![0u8; 8], 1));
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::Unsupported);

    let (a, _b) = StreamSocket::pair(svc).unwrap();
    // No data to carry the fds.
    let (fd, _keep) = pipe();
    let (res, _) = svc.block_on(a.send_fds(Vec::new(), vec![fd.into()]));
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("at least one byte"), "{err}");
    // More than SCM_MAX_FD.
    let many: Vec<OwnedFd> = (0..=aio::op::MAX_FDS_PER_MESSAGE)
        .map(|_| std::fs::File::open("/dev/null").unwrap().into())
        .collect();
    let (res, _) = svc.block_on(a.send_fds(b"x".to_vec(), many));
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("254 fds"), "{err}");
    // A closed socket.
    a.close();
    let (res, _) = svc.block_on(a.send_fds(b"x".to_vec(), Vec::new()));
    assert_eq!(res.unwrap_err().kind(), io::ErrorKind::NotConnected);
});

/// Reads on `reader` with `read` until it completes, within 5 s of loop time: `None` if it never
/// completes (a read waiting for an edge that never comes).
fn read_within<T: 'static>(
    svc: &IoService,
    start: impl FnOnce(std::rc::Rc<std::cell::RefCell<Option<T>>>),
) -> Option<T> {
    let got = std::rc::Rc::new(std::cell::RefCell::new(None));
    start(got.clone());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let timer = aio::DeadlineTimer::new(svc).unwrap();
    timer.expires_at(deadline);
    timer.wait().then(|_| {});
    while got.borrow().is_none() && std::time::Instant::now() < deadline {
        svc.run_one().unwrap();
    }
    got.take()
}

matrix_test!(
    a_plain_read_that_ends_at_passed_fds_does_not_stall_what_follows,
    |svc| {
        // Regression: a Unix stream socket ends a read at a message that carries fds, with more
        // queued behind it. read_some and read_vectored took such a short read for "drained", so
        // the next read waited for an edge that had already come, and data sat unread. Each kind of
        // socket: connected through a listener, made by pair (the family known), adopted with
        // from_fd (the family asked of the kernel).
        let (dialed, accepted, _dir) = unix_pair(svc);
        let (pa, pb) = StreamSocket::pair(svc).unwrap();
        let (sa, sb) = std::os::unix::net::UnixStream::pair().unwrap();
        let (fa, fb) = (
            StreamSocket::from_fd(svc, sa).unwrap(),
            StreamSocket::from_fd(svc, sb).unwrap(),
        );
        for (kind, a, b) in [
            ("dialed/accepted", &dialed, &accepted),
            ("pair", &pa, &pb),
            ("from_fd", &fa, &fb),
        ] {
            for vectored in [false, true] {
                let (_keep, passed) = pipe();
                svc.block_on(a.write_all(b"one".to_vec())).0.unwrap();
                svc.block_on(a.send_fds(b"two".to_vec(), vec![passed.into()]))
                    .0
                    .unwrap();
                svc.block_on(a.write_all(b"three".to_vec())).0.unwrap();
                // Let the loop take the edge of all of it before the first read.
                svc.poll().unwrap();
                let first = if vectored {
                    let (res, bufs) = svc.block_on(b.read_vectored(vec![vec![0u8; 32]; 2]));
                    let n = res.unwrap();
                    bufs.concat()[..n].to_vec()
                } else {
                    let (res, buf) = svc.block_on(b.read_some(vec![0u8; 64]));
                    let n = res.unwrap();
                    buf[..n].to_vec()
                };
                assert_eq!(first, b"onetwo", "{kind}: the read ends at the fds");
                let rest = read_within(svc, |got| {
                    b.read_some(vec![0u8; 64]).then(move |(res, buf)| {
                        *got.borrow_mut() = Some(buf[..res.unwrap()].to_vec());
                    });
                });
                assert_eq!(
                    rest.as_deref(),
                    Some(&b"three"[..]),
                    "{kind} (vectored: {vectored}): the bytes behind the fds are read"
                );
            }
        }
    }
);

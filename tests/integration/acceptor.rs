//! `Acceptor`: accepting (socket and peer endpoint), queued connections, Unix socket files
//! removed on close and drop, address in use, and running out of fds (`EMFILE`) without spinning.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io;
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aio::{Acceptor, Endpoint, IoService, StreamSocket};

use crate::util::{self, Transport};

matrix_test!(accept_yields_the_socket_and_the_peer_endpoint, |svc| {
    for transport in [Transport::TcpV4, Transport::TcpV6, Transport::Unix] {
        let Some((ep, _dir)) = util::listen_endpoint(transport) else {
            continue;
        };
        let acceptor = Acceptor::bind(svc, &ep).unwrap();
        assert!(acceptor.is_open());
        let target = acceptor.local_endpoint().unwrap();
        // Callback style.
        let accepted = Rc::new(RefCell::new(None));
        acceptor.accept().then({
            let accepted = accepted.clone();
            move |res| *accepted.borrow_mut() = Some(res)
        });
        let client = svc.block_on(StreamSocket::dial(svc, &target)).unwrap();
        while accepted.borrow().is_none() {
            svc.run_one().unwrap();
        }
        let (server, peer) = accepted.take().unwrap().unwrap();
        assert_eq!(peer, client.local_endpoint().unwrap(), "{transport:?}");
        assert!(server.service().same_service(&svc.local()));
        let (res, _) = svc.block_on(server.write_all(b"hi".to_vec()));
        res.unwrap();
        let (res, buf) = svc.block_on(client.read_exact(vec![0u8; 2]));
        res.unwrap();
        assert_eq!(buf, b"hi");
    }
});

matrix_test!(many_queued_connections_are_all_accepted, |svc| {
    const N: usize = 64;
    for transport in [Transport::TcpV4, Transport::Unix] {
        let (ep, _dir) = util::listen_endpoint(transport).unwrap();
        let acceptor = Rc::new(Acceptor::bind(svc, &ep).unwrap());
        let target = acceptor.local_endpoint().unwrap();
        // Blocking std clients: each connect completes into the backlog before any accept.
        let mut clients: Vec<OwnedFd> = Vec::new();
        let mut client_names = HashSet::new();
        for i in 0..N {
            if let Some(path) = target.unix_path() {
                let c = UnixStream::connect(path).unwrap();
                std::io::Write::write_all(&mut &c, &[i as u8]).unwrap();
                clients.push(c.into());
            } else {
                let c = TcpStream::connect(target.as_ip().unwrap()).unwrap();
                client_names.insert(Endpoint::from(c.local_addr().unwrap()));
                std::io::Write::write_all(&mut &c, &[i as u8]).unwrap();
                clients.push(c.into());
            }
        }
        // Accept them all from a handler that accepts again.
        let peers = Rc::new(RefCell::new(Vec::new()));
        fn accept_next(acceptor: Rc<Acceptor>, peers: Rc<RefCell<Vec<(StreamSocket, Endpoint)>>>) {
            let next = acceptor.clone();
            acceptor.accept().then(move |res| {
                peers.borrow_mut().push(res.unwrap());
                if peers.borrow().len() < N {
                    accept_next(next, peers);
                } else {
                    next.service().stop();
                }
            });
        }
        accept_next(acceptor.clone(), peers.clone());
        svc.restart();
        svc.run().unwrap();
        let peers = peers.take();
        assert_eq!(peers.len(), N, "{transport:?}");
        // Each accepted socket carries its client's first byte: all N distinct connections.
        let mut firsts = HashSet::new();
        for (s, peer) in &peers {
            let (res, buf) = svc.block_on(s.read_exact(vec![0u8; 1]));
            res.unwrap();
            firsts.insert(buf[0]);
            if transport == Transport::TcpV4 {
                assert!(client_names.contains(peer), "{peer} is one of the clients");
            }
        }
        assert_eq!(firsts.len(), N);
        drop(clients);
    }
});

matrix_test!(unix_socket_file_is_removed_on_close_and_drop, |svc| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("server.sock");
    let ep = Endpoint::unix(&path);

    let acceptor = Acceptor::bind(svc, &ep).unwrap();
    assert!(path.exists());
    acceptor.close();
    assert!(!path.exists(), "close removes the socket file");
    assert!(!acceptor.is_open());
    acceptor.close();

    let acceptor = Acceptor::bind(svc, &ep).unwrap();
    assert!(path.exists(), "the path can be bound again");
    drop(acceptor);
    assert!(!path.exists(), "drop removes the socket file");

    // Released: the file belongs to whoever holds the fd now, and is left in place.
    let acceptor = Acceptor::bind(svc, &ep).unwrap();
    let fd = acceptor.release().unwrap();
    drop(acceptor);
    assert!(path.exists(), "release leaves the socket file");
    // A released listener works through std.
    let listener = std::os::unix::net::UnixListener::from(fd);
    let _c = UnixStream::connect(&path).unwrap();
    listener.set_nonblocking(false).unwrap();
    listener.accept().unwrap();
    drop(listener);
    std::fs::remove_file(&path).unwrap();

    // A file replaced by someone else after bind is not removed.
    let acceptor = Acceptor::bind(svc, &ep).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"not ours").unwrap();
    drop(acceptor);
    assert_eq!(std::fs::read(&path).unwrap(), b"not ours");
});

matrix_test!(bind_to_a_busy_address_is_addr_in_use, |svc| {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ep = Endpoint::from(taken.local_addr().unwrap());
    let e = Acceptor::bind(svc, &ep).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    assert!(e.to_string().contains(&ep.to_string()), "{e}");

    // Unix: a path where a socket file already exists.
    let dir = tempfile::tempdir().unwrap();
    let ep = Endpoint::unix(dir.path().join("busy.sock"));
    let _first = Acceptor::bind(svc, &ep).unwrap();
    let e = Acceptor::bind(svc, &ep).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
    assert!(e.to_string().contains(&ep.to_string()), "{e}");

    // Abstract names, too.
    let ep = util::unique_abstract_name();
    let _first = Acceptor::bind(svc, &ep).unwrap();
    let e = Acceptor::bind(svc, &ep).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AddrInUse, "{e}");
});

matrix_test!(from_fd_adopts_a_std_listener, |svc| {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = Acceptor::from_fd(svc, listener).unwrap();
    assert_eq!(acceptor.local_endpoint().unwrap(), Endpoint::from(addr));
    let accepting = Rc::new(Cell::new(false));
    let got = Rc::new(RefCell::new(None));
    acceptor.accept().then({
        let (got, accepting) = (got.clone(), accepting.clone());
        move |res| {
            accepting.set(true);
            *got.borrow_mut() = Some(res.map(|(_, peer)| peer));
        }
    });
    assert_eq!(
        svc.poll().unwrap(),
        0,
        "made non-blocking: the accept waits"
    );
    let c = TcpStream::connect(addr).unwrap();
    while !accepting.get() {
        svc.run_one().unwrap();
    }
    assert_eq!(
        got.take().unwrap().unwrap(),
        Endpoint::from(c.local_addr().unwrap())
    );
});

/// Runs `svc` until `done` is set, failing after `limit`.
fn run_until(svc: &IoService, done: &Rc<Cell<bool>>, limit: Duration) {
    let start = Instant::now();
    while !done.get() {
        assert!(start.elapsed() < limit, "gave up waiting after {limit:?}");
        svc.run_one().unwrap();
    }
}

matrix_test!(accept_reports_emfile_without_spinning, |svc| {
    // rlimits are per process: this runs in a child process that runs only this test.
    util::in_child(|| {
        let acceptor = Rc::new(Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap());
        let target = acceptor.local_endpoint().unwrap().as_ip().unwrap();
        // A client waits in the backlog; its fd exists before we run out.
        let client = TcpStream::connect(target).unwrap();

        // Lower the soft limit close to what is in use, then use up every fd below it.
        let old = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u64>().ok())
            .max()
            .unwrap();
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(highest + 16),
                maximum: old.maximum,
            },
        )
        .unwrap();
        let probe = std::fs::File::open("/dev/null").unwrap();
        let mut hoard: Vec<OwnedFd> = Vec::new();
        loop {
            match rustix::io::fcntl_dupfd_cloexec(&probe, 0) {
                Ok(fd) => hoard.push(fd),
                Err(e) => {
                    assert_eq!(e, rustix::io::Errno::MFILE);
                    break;
                }
            }
        }

        // Accept; on an error, accept again from the handler (what a naive server does).
        let errors = Rc::new(RefCell::new(Vec::new()));
        let accepted = Rc::new(RefCell::new(None));
        let done = Rc::new(Cell::new(false));
        type Slots = (
            Rc<RefCell<Vec<io::Error>>>,
            Rc<RefCell<Option<Endpoint>>>,
            Rc<Cell<bool>>,
        );
        fn accept_again(acceptor: Rc<Acceptor>, slots: Slots) {
            let next = acceptor.clone();
            acceptor.accept().then(move |res| match res {
                Ok((_socket, peer)) => {
                    *slots.1.borrow_mut() = Some(peer);
                    slots.2.set(true);
                }
                Err(e) => {
                    slots.0.borrow_mut().push(e);
                    accept_again(next, slots);
                }
            });
        }
        accept_again(
            acceptor.clone(),
            (errors.clone(), accepted.clone(), done.clone()),
        );

        // For half a second, count the error callbacks. A helper thread marks the end of the window
        // by posting to the loop, so the loop itself is only ever driven by run_one (which waits).
        let window = Duration::from_millis(500);
        let over = Arc::new(AtomicBool::new(false));
        let timer = std::thread::spawn({
            let (handle, over) = (svc.handle(), over.clone());
            move || {
                std::thread::sleep(window);
                handle
                    .post(move || over.store(true, Ordering::SeqCst))
                    .unwrap();
            }
        });
        while !over.load(Ordering::SeqCst) && errors.borrow().len() < 100 {
            svc.run_one().unwrap();
        }
        timer.join().unwrap();
        let count = errors.borrow().len();
        assert!(count >= 1, "the handler saw the failure");
        let first = errors.borrow()[0].raw_os_error();
        assert_eq!(first, Some(libc::EMFILE), "{:?}", errors.borrow()[0]);
        assert!(
            count < 100,
            "{count} error callbacks in {window:?}: the acceptor spins"
        );
        assert!(!done.get(), "nothing can be accepted while out of fds");

        // Free the fds: accepting resumes without a new connection arriving.
        drop(hoard);
        run_until(svc, &done, Duration::from_secs(5));
        let peer = accepted.take().unwrap();
        assert_eq!(peer, Endpoint::from(client.local_addr().unwrap()));
        eprintln!("{count} EMFILE callbacks in {window:?}");
    });
});

//! `SocketHooks`: `on_open` right after `aio` creates an fd (before bind or connect), its options
//! visible on the socket and its error aborting the open; `on_close` right before the fd closes,
//! exactly once whichever path closes it — `close()`, drop, a failed connect, the `IoService` going
//! away — and never after `release()`; hooks inherited by accepted sockets; datagram sockets too.

use std::cell::RefCell;
use std::io;
use std::os::fd::AsRawFd;
use std::rc::Rc;

use aio::{Acceptor, DatagramSocket, Dialer, Endpoint, IoService, SocketHooks, StreamSocket};

use crate::util::{self, Transport};

/// What the hooks saw, in order: `open <fd>`, `close <fd> (open: <bool>)`.
#[derive(Clone, Default)]
struct Log(Rc<RefCell<Vec<String>>>);

impl Log {
    fn hooks(&self) -> SocketHooks {
        let (open, close) = (self.clone(), self.clone());
        SocketHooks::new()
            .on_open(move |s| {
                // Before bind and connect: no peer, and (for IP) no port yet.
                assert!(s.peer_addr().is_err(), "on_open runs before connect");
                if let Some(addr) = s.local_addr()?.as_socket() {
                    assert_eq!(addr.port(), 0, "on_open runs before bind");
                }
                open.push(format!("open {}", s.as_raw_fd()));
                Ok(())
            })
            .on_close(move |s| {
                let fd = s.as_raw_fd();
                close.push(format!("close {fd} (open: {})", util::fd_is_open(fd)));
            })
    }
    fn push(&self, line: String) {
        self.0.borrow_mut().push(line);
    }
    fn lines(&self) -> Vec<String> {
        self.0.borrow().clone()
    }
    fn count(&self, prefix: &str) -> usize {
        self.0
            .borrow()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
}

/// A listening endpoint on `transport` and its acceptor (kept open by the caller).
fn listener(
    svc: &IoService,
    transport: Transport,
) -> Option<(Acceptor, Endpoint, Option<tempfile::TempDir>)> {
    let (ep, dir) = util::listen_endpoint(transport)?;
    let acceptor = Acceptor::bind(svc, &ep).expect("bind");
    let ep = acceptor.local_endpoint().unwrap();
    Some((acceptor, ep, dir))
}

const TRANSPORTS: [Transport; 3] = [Transport::TcpV4, Transport::TcpV6, Transport::Unix];

matrix_test!(
    the_close_hook_runs_once_on_close_and_not_again_on_drop,
    |svc| {
        for transport in TRANSPORTS {
            let Some((_acceptor, ep, _dir)) = listener(svc, transport) else {
                continue;
            };
            let log = Log::default();
            let socket = StreamSocket::with_hooks(svc, log.hooks());
            svc.block_on(socket.connect(&ep)).unwrap();
            let fd = socket.native().unwrap();
            assert_eq!(log.lines(), [format!("open {fd}")]);
            socket.close();
            assert_eq!(
                log.lines()[1],
                format!("close {fd} (open: true)"),
                "runs before the fd closes"
            );
            socket.close();
            drop(socket);
            assert_eq!(log.count("close"), 1, "{transport:?}: exactly once");
        }
    }
);

matrix_test!(the_close_hook_runs_once_on_drop, |svc| {
    for transport in TRANSPORTS {
        let Some((_acceptor, ep, _dir)) = listener(svc, transport) else {
            continue;
        };
        let log = Log::default();
        let socket = svc
            .block_on(Dialer::new(svc).hooks(log.hooks()).dial(&ep))
            .unwrap();
        let fd = socket.native().unwrap();
        drop(socket);
        assert_eq!(
            log.lines(),
            [format!("open {fd}"), format!("close {fd} (open: true)")],
            "{transport:?}"
        );
    }
});

matrix_test!(the_close_hook_runs_once_when_a_dial_fails, |svc| {
    // A closed port (TCP) and a path nobody listens on (Unix).
    let closed_port = {
        let gone = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
        gone.local_endpoint().unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    for ep in [closed_port, Endpoint::unix(dir.path().join("nobody"))] {
        let log = Log::default();
        let err = svc
            .block_on(Dialer::new(svc).hooks(log.hooks()).dial(&ep))
            .unwrap_err();
        assert!(err.to_string().contains(&ep.to_string()), "{err}");
        assert_eq!(log.count("open"), 1, "{ep}");
        assert_eq!(
            log.count("close"),
            1,
            "{ep}: the failed socket was closed, with its hook"
        );
        assert!(log.lines()[1].ends_with("(open: true)"));
        // Trying several endpoints: one open and one close per socket tried.
        let (acceptor, good, _dir) = listener(svc, Transport::TcpV4).unwrap();
        let log = Log::default();
        let dialer = Dialer::new(svc).hooks(log.hooks());
        let socket = svc
            .block_on(dialer.dial_any([ep.clone(), ep.clone(), good]))
            .unwrap();
        assert_eq!((log.count("open"), log.count("close")), (3, 2));
        drop((socket, acceptor));
        assert_eq!(log.count("close"), 3);
    }
});

matrix_test!(
    the_close_hook_runs_once_when_the_service_is_dropped_first,
    |svc| {
        let (_acceptor, ep, _dir) = listener(svc, Transport::Unix).unwrap();
        let other = util::fresh(svc);
        let log = Log::default();
        let socket = StreamSocket::with_hooks(&other, log.hooks());
        let pending = DatagramSocket::with_hooks(&other, log.hooks());
        pending.bind_to(&"127.0.0.1:0".parse().unwrap()).unwrap();
        pending
            .recv_from(vec![0u8; 8])
            .then(|_| panic!("dropped, never called"));
        // The connect completes on `other`; `svc` accepts nothing (the backlog holds it).
        other.block_on(socket.connect(&ep)).unwrap();
        assert_eq!(log.count("open"), 2);
        drop(other);
        assert_eq!(
            log.count("close"),
            2,
            "the service's shutdown closed both fds, hooks first"
        );
        assert!(log.lines()[2..].iter().all(|l| l.ends_with("(open: true)")));
        assert!(!socket.is_open());
        socket.close();
        drop((socket, pending));
        assert_eq!(log.count("close"), 2, "and never again");
    }
);

matrix_test!(the_close_hook_never_runs_after_release, |svc| {
    let (_acceptor, ep, _dir) = listener(svc, Transport::TcpV4).unwrap();
    let log = Log::default();
    let socket = StreamSocket::with_hooks(svc, log.hooks());
    svc.block_on(socket.connect(&ep)).unwrap();
    let fd = socket.release().unwrap();
    assert!(util::fd_is_open(fd.as_raw_fd()));
    drop(socket);
    drop(fd);
    assert_eq!(log.count("close"), 0, "{:?}", log.lines());

    let datagram = DatagramSocket::with_hooks(svc, log.hooks());
    datagram.bind_to(&"127.0.0.1:0".parse().unwrap()).unwrap();
    let std_socket = datagram.into_std_udp().unwrap();
    drop(std_socket);
    assert_eq!((log.count("open"), log.count("close")), (2, 0));
});

matrix_test!(an_open_hook_sets_options_visible_on_the_socket, |svc| {
    let (acceptor, ep, _dir) = listener(svc, Transport::TcpV4).unwrap();
    let hooks = SocketHooks::new().on_open(|s| {
        s.set_tcp_nodelay(true)?;
        s.set_recv_buffer_size(32 * 1024)
    });
    let socket = svc
        .block_on(Dialer::new(svc).hooks(hooks.clone()).dial(&ep))
        .unwrap();
    assert!(socket.nodelay().unwrap());
    assert!(socket.recv_buffer_size().unwrap() >= 32 * 1024);
    // The receive buffer must be set before connecting to shape the TCP window: it was.
    let (accepted, _) = svc.block_on(acceptor.accept()).unwrap();
    assert!(
        !accepted.nodelay().unwrap(),
        "the hook is the dialer's, not the acceptor's"
    );

    let datagram =
        DatagramSocket::with_hooks(svc, SocketHooks::new().on_open(|s| s.set_broadcast(true)));
    datagram.bind_to(&"127.0.0.1:0".parse().unwrap()).unwrap();
    assert!(datagram.broadcast().unwrap());
});

matrix_test!(an_open_hook_error_aborts_the_open_with_that_error, |svc| {
    let (_acceptor, ep, _dir) = listener(svc, Transport::TcpV4).unwrap();
    let log = Log::default();
    let refusing = log.hooks().on_open(|_| {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "refused by policy",
        ))
    });
    let err = svc
        .block_on(Dialer::new(svc).hooks(refusing.clone()).dial(&ep))
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    assert_eq!(
        err.to_string(),
        "refused by policy",
        "the hook's error, unchanged"
    );
    let socket = StreamSocket::with_hooks(svc, refusing.clone());
    let err = svc.block_on(socket.connect(&ep)).unwrap_err();
    assert_eq!(err.to_string(), "refused by policy");
    assert!(!socket.is_open());
    let datagram = DatagramSocket::with_hooks(svc, refusing);
    assert_eq!(
        datagram
            .bind_to(&"127.0.0.1:0".parse().unwrap())
            .unwrap_err()
            .kind(),
        io::ErrorKind::PermissionDenied
    );
    // Each fd whose on_open ran (and failed) was closed with on_close.
    assert_eq!(log.count("close"), 3, "{:?}", log.lines());
});

matrix_test!(accepted_sockets_inherit_the_acceptor_hooks, |svc| {
    for transport in TRANSPORTS {
        let Some((acceptor, ep, _dir)) = listener(svc, transport) else {
            continue;
        };
        let log = Log::default();
        let tcp = transport != Transport::Unix;
        let hooks = SocketHooks::new()
            .on_open({
                let log = log.clone();
                move |s| {
                    assert!(s.peer_addr().is_ok(), "an accepted socket is connected");
                    if tcp {
                        s.set_tcp_nodelay(true)?;
                    }
                    log.push("open".into());
                    Ok(())
                }
            })
            .on_close({
                let log = log.clone();
                move |_| log.push("close".into())
            });
        acceptor.set_hooks(hooks);
        let clients: Vec<StreamSocket> = (0..3)
            .map(|_| svc.block_on(StreamSocket::dial(svc, &ep)).unwrap())
            .collect();
        let accepted: Vec<StreamSocket> = (0..3)
            .map(|_| svc.block_on(acceptor.accept()).unwrap().0)
            .collect();
        assert_eq!(log.count("open"), 3, "{transport:?}");
        if tcp {
            assert!(accepted.iter().all(|s| s.nodelay().unwrap()));
        }
        accepted[0].close();
        assert_eq!(log.count("close"), 1);
        drop(accepted);
        drop(clients);
        assert_eq!(log.count("close"), 3, "{transport:?}");
        drop(acceptor);
        assert_eq!(log.count("close"), 3, "the listening socket has no hooks");
    }
});

matrix_test!(
    a_failing_open_hook_on_accept_fails_that_accept_only,
    |svc| {
        let (acceptor, ep, _dir) = listener(svc, Transport::TcpV4).unwrap();
        let log = Log::default();
        let first = Rc::new(std::cell::Cell::new(true));
        acceptor.set_hooks(log.hooks().on_open(move |_| {
            if first.replace(false) {
                Err(io::Error::other("not this one"))
            } else {
                Ok(())
            }
        }));
        let _a = std::net::TcpStream::connect(ep.as_ip().unwrap()).unwrap();
        let _b = std::net::TcpStream::connect(ep.as_ip().unwrap()).unwrap();
        let err = svc.block_on(acceptor.accept()).unwrap_err();
        assert_eq!(err.to_string(), "not this one");
        assert_eq!(
            log.count("close"),
            1,
            "the refused connection was closed, with its hook"
        );
        let (socket, _) = svc.block_on(acceptor.accept()).unwrap();
        assert!(socket.is_open());
    }
);

matrix_test!(
    a_panicking_open_hook_fails_its_accept_and_the_server_goes_on,
    |svc| {
        // Regression: the hook runs while the loop dispatches the listener's event; its panic used to
        // unwind out of the dispatch, dropping the accept with its handler (the server stopped
        // accepting) and the rest of that turn's events (their connections stalled, edge-triggered).
        const CLIENTS: usize = 6;
        let (acceptor, ep, _dir) = listener(svc, Transport::TcpV4).unwrap();
        let acceptor = Rc::new(acceptor);
        let opened = Rc::new(std::cell::Cell::new(0));
        acceptor.set_hooks(SocketHooks::new().on_open({
            let opened = opened.clone();
            move |_| {
                opened.set(opened.get() + 1);
                if opened.get() == 2 {
                    panic!("on_open boom");
                }
                Ok(())
            }
        }));
        let results = Rc::new(RefCell::new(Vec::new()));
        fn accept_again(acceptor: Rc<Acceptor>, results: Rc<RefCell<Vec<io::Result<()>>>>) {
            let next = acceptor.clone();
            acceptor.accept().then(move |res| {
                let done = results.borrow().len() + 1 == CLIENTS;
                results
                    .borrow_mut()
                    .push(res.map(|(socket, _)| drop(socket)));
                if !done {
                    accept_again(next, results);
                }
            });
        }
        // The accept waits first, so that each connection is accepted from the dispatch.
        accept_again(acceptor.clone(), results.clone());
        svc.poll().unwrap();
        let clients: Vec<std::net::TcpStream> = (0..CLIENTS)
            .map(|_| std::net::TcpStream::connect(ep.as_ip().unwrap()).unwrap())
            .collect();
        let start = std::time::Instant::now();
        while results.borrow().len() < CLIENTS {
            assert!(
                start.elapsed() < std::time::Duration::from_secs(5),
                "accepting stopped after {} connections",
                results.borrow().len()
            );
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| svc.run_one()));
            assert!(
                run.is_ok(),
                "the hook's panic does not unwind out of the loop"
            );
        }
        let results = results.borrow();
        let failed: Vec<String> = results
            .iter()
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        assert_eq!(failed, ["the on_open hook panicked: on_open boom"]);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        assert_eq!(
            results[1].as_ref().unwrap_err().kind(),
            io::ErrorKind::Other
        );
        drop(clients);
    }
);

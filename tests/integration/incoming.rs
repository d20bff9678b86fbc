//! Accept loops from the library (`Acceptor::incoming`, `serve`, with a connection limit): with a
//! limit of 2 and 5 clients waiting, never more than 2 connections open, the third accepted only
//! when one closes, and all 5 served, over TCP and Unix, by a task and by handlers; closing the
//! acceptor ends both loops; running out of fds (`EMFILE`) is reported and accepting goes on.

use std::cell::{Cell, RefCell};
use std::net::TcpStream;
use std::os::fd::OwnedFd;
use std::rc::Rc;

use aio::{Accepted, Acceptor, IoService, StreamSocket};

use crate::util::{self, Transport};

/// Runs the loop until `done` holds (bounded by the test's watchdog).
fn run_until(svc: &IoService, done: impl Fn() -> bool) {
    while !done() {
        svc.run_one().unwrap();
    }
}

/// Runs the loop a few turns without waiting.
fn settle(svc: &IoService) {
    for _ in 0..5 {
        svc.poll().unwrap();
    }
}

#[derive(Default)]
struct Counts {
    accepted: Cell<usize>,
    open: Cell<usize>,
    peak: Cell<usize>,
    finished: Cell<usize>,
    errors: RefCell<Vec<String>>,
}

/// A session: reads until the peer's end of stream, then drops the socket and its permit.
fn session(conn: Accepted, counts: Rc<Counts>) {
    counts.accepted.set(counts.accepted.get() + 1);
    counts.open.set(counts.open.get() + 1);
    counts.peak.set(counts.peak.get().max(counts.open.get()));
    assert!(
        conn.permit.open_connections() <= 2,
        "a permit over the limit"
    );
    drain(Rc::new(conn), counts);
}

fn drain(conn: Rc<Accepted>, counts: Rc<Counts>) {
    conn.socket
        .read_some(vec![0u8; 256])
        .then(move |(res, _)| match res {
            Ok(n) if n > 0 => drain(conn, counts),
            other => {
                if let Err(e) = other {
                    counts.errors.borrow_mut().push(format!("read: {e}"));
                }
                counts.open.set(counts.open.get() - 1);
                counts.finished.set(counts.finished.get() + 1);
                drop(conn); // socket and permit
            }
        });
}

/// Five clients against a limit of two, by handlers (`serve_with`) or by a task
/// (`incoming_with`).
fn five_clients_two_at_a_time(svc: &IoService, transport: Transport, by_task: bool) {
    let (ep, _dir) = util::listen_endpoint(transport).unwrap();
    let acceptor = Rc::new(Acceptor::bind(svc, &ep).unwrap());
    let target = acceptor.local_endpoint().unwrap();
    let counts = Rc::new(Counts::default());
    let ended = Rc::new(Cell::new(false));
    if by_task {
        let (acceptor, counts, ended) = (acceptor.clone(), counts.clone(), ended.clone());
        svc.spawn(async move {
            let mut incoming = acceptor.incoming_with(2);
            while let Some(conn) = incoming.next().await {
                assert!(incoming.open_connections() <= 2);
                match conn {
                    Ok(conn) => session(conn, counts.clone()),
                    Err(e) => counts.errors.borrow_mut().push(format!("accept: {e}")),
                }
            }
            ended.set(true);
        });
    } else {
        let counts = counts.clone();
        acceptor.serve_with(2, move |conn| match conn {
            Ok(conn) => session(conn, counts.clone()),
            Err(e) => counts.errors.borrow_mut().push(format!("accept: {e}")),
        });
    }
    // All five connect at once: the kernel queues them in the backlog.
    let mut clients: Vec<Option<StreamSocket>> = (0..5)
        .map(|_| Some(svc.block_on(StreamSocket::dial(svc, &target)).unwrap()))
        .collect();
    run_until(svc, || counts.accepted.get() == 2);
    settle(svc);
    assert_eq!(counts.accepted.get(), 2, "accepted past the limit");

    // One closes: its place goes to the third, and only to it.
    clients[0] = None;
    run_until(svc, || counts.accepted.get() == 3);
    settle(svc);
    assert_eq!(counts.accepted.get(), 3);
    assert_eq!(counts.open.get(), 2);

    // The rest close: everyone is served.
    clients.clear();
    run_until(svc, || counts.finished.get() == 5);
    assert_eq!(counts.accepted.get(), 5);
    assert_eq!(counts.peak.get(), 2);
    assert!(counts.errors.borrow().is_empty(), "{:?}", counts.errors);

    // Closing the acceptor ends the loop.
    acceptor.close();
    if by_task {
        run_until(svc, || ended.get());
    } else {
        settle(svc);
    }
}

matrix_test!(serve_with_a_limit_of_two_serves_five_clients, |svc| {
    five_clients_two_at_a_time(svc, Transport::TcpV4, false);
    five_clients_two_at_a_time(svc, Transport::Unix, false);
});

matrix_test!(incoming_with_a_limit_of_two_serves_five_clients, |svc| {
    five_clients_two_at_a_time(svc, Transport::TcpV4, true);
    five_clients_two_at_a_time(svc, Transport::Unix, true);
});

matrix_test!(closing_the_acceptor_ends_both_loops, |svc| {
    let acceptor = Rc::new(Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap());
    let calls = Rc::new(Cell::new(0));
    let seen = calls.clone();
    acceptor.serve(move |_| seen.set(seen.get() + 1));
    settle(svc);
    acceptor.close();
    settle(svc);
    assert_eq!(calls.get(), 0, "a closed acceptor calls no handler");

    // A task's loop ends with `None`, and stays ended.
    let acceptor = Rc::new(Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap());
    let closer = acceptor.clone();
    svc.post(move || closer.close());
    let mut incoming = acceptor.incoming();
    assert!(svc.block_on(incoming.next()).is_none());
    assert!(svc.block_on(incoming.next()).is_none());

    // An acceptor that does not listen: the error is reported once, then the loop ends.
    let idle = Acceptor::new(svc);
    idle.open(aio::Family::Ipv4).unwrap();
    let mut incoming = idle.incoming();
    let first = svc.block_on(incoming.next()).expect("the error");
    assert_eq!(first.unwrap_err().raw_os_error(), Some(libc::EINVAL));
    assert!(svc.block_on(incoming.next()).is_none());
});

/// Out of fds with a client waiting: `EMFILE` is reported (more than once: accepting goes on, backed
/// off), and the client is accepted once fds are freed.
fn out_of_fds(svc: &IoService, by_task: bool) {
    // rlimits are per process: in a child process that runs only this test.
    util::in_child(|| {
        let acceptor = Rc::new(Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap());
        let target = acceptor.local_endpoint().unwrap().as_ip().unwrap();
        let _client = TcpStream::connect(target).unwrap(); // waits in the backlog
        let highest = util::stress::fd_table().last().unwrap().0 as u64;
        util::stress::lower_nofile(highest + 16);
        let probe = std::fs::File::open("/dev/null").unwrap();
        let mut hoard: Vec<OwnedFd> = Vec::new();
        while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&probe, 0) {
            hoard.push(fd);
        }

        let errors = Rc::new(RefCell::new(Vec::new()));
        let accepted = Rc::new(RefCell::new(Vec::new()));
        let on_conn = {
            let (errors, accepted) = (errors.clone(), accepted.clone());
            move |conn: std::io::Result<Accepted>| match conn {
                Ok(conn) => accepted.borrow_mut().push(conn),
                Err(e) => errors.borrow_mut().push(e.raw_os_error()),
            }
        };
        if by_task {
            let acceptor = acceptor.clone();
            svc.spawn(async move {
                let mut incoming = acceptor.incoming();
                while let Some(conn) = incoming.next().await {
                    on_conn(conn);
                }
            });
        } else {
            acceptor.serve(on_conn);
        }
        run_until(svc, || errors.borrow().len() >= 3);
        assert!(accepted.borrow().is_empty());
        drop(hoard);
        run_until(svc, || !accepted.borrow().is_empty());
        assert!(
            errors.borrow().iter().all(|e| *e == Some(libc::EMFILE)),
            "{:?}",
            errors.borrow()
        );
        acceptor.close();
    });
}

matrix_test!(serve_goes_on_after_emfile, |svc| {
    out_of_fds(svc, false);
});

matrix_test!(incoming_goes_on_after_emfile, |svc| {
    out_of_fds(svc, true);
});

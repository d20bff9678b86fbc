//! Load: 10,000 concurrent TCP connections on loopback, each echoing its own verified data, on every
//! backend, with no fd left behind.
//!
//! The server runs in the test's own process (a child process made by `util::in_child`, so that its
//! raised `RLIMIT_NOFILE` stays there); the clients run in a forked child with a loop of their own, so
//! that each process needs about 10,000 fds rather than 20,000. The clients connect in waves of
//! `WAVE` (each connection echoes a first message, verified, and stays open), then, with all 10,000
//! open at once, every connection echoes a second message at the same time. The server counts its
//! live sessions and the bytes it echoed.
//!
//! Waves rather than a sliding window: the poll backend pays for every idle connection on each
//! wait, so a trickle of single events over 10,000 connections costs it quadratic time; bursts are
//! what it (and any `poll(2)` server) handles well. `AIO_STRESS_CONNECTIONS` overrides the count.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::{Acceptor, Endpoint, IoBuf, IoDevice, IoService, LocalHandle, StreamSocket};

use crate::util::{self, stress};

const CONNECTIONS: usize = 10_000;
/// Connections started together (kept under the listen backlog: a dropped SYN costs a one-second
/// retransmission).
const WAVE: usize = 500;
/// How long the clients may take, in the forked child.
const CLIENT_LIMIT: Duration = Duration::from_secs(40);

fn connections() -> usize {
    std::env::var("AIO_STRESS_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CONNECTIONS)
}

/// Connection `i`'s message in round `round`: its own length and bytes.
fn message(i: usize, round: usize) -> Vec<u8> {
    util::pattern(1 + (i * 7919 + round * 13) % 2048, (i * 2 + round) as u64)
}

struct Server {
    svc: LocalHandle,
    expected: usize,
    live: Cell<usize>,
    max_live: Cell<usize>,
    finished: Cell<usize>,
    echoed: Cell<usize>,
    errors: RefCell<Vec<String>>,
}

fn serve(acceptor: Rc<Acceptor>, server: Rc<Server>) {
    let next = acceptor.clone();
    acceptor.accept().then(move |res| {
        match res {
            Ok((socket, _)) => {
                server.live.set(server.live.get() + 1);
                server
                    .max_live
                    .set(server.max_live.get().max(server.live.get()));
                echo(Rc::new(socket), vec![0; 4096], server.clone());
            }
            // Closed at the end of the test: stop accepting.
            Err(e) if aio::is_cancelled(&e) => return,
            Err(e) => server.errors.borrow_mut().push(format!("accept: {e}")),
        }
        serve(next, server);
    });
}

fn echo(socket: Rc<StreamSocket>, buf: Vec<u8>, server: Rc<Server>) {
    socket
        .clone()
        .read_some(buf)
        .then(move |(res, buf)| match res {
            Ok(n) if n > 0 => {
                socket
                    .clone()
                    .write_all(buf.slice(..n))
                    .then(move |(res, buf)| match res {
                        Ok(()) => {
                            server.echoed.set(server.echoed.get() + n);
                            echo(socket, buf.into_inner(), server);
                        }
                        Err(e) => {
                            server.errors.borrow_mut().push(format!("write: {e}"));
                            end_session(&server);
                        }
                    });
            }
            Ok(_) => end_session(&server),
            Err(e) => {
                server.errors.borrow_mut().push(format!("read: {e}"));
                end_session(&server);
            }
        });
}

fn end_session(server: &Server) {
    server.live.set(server.live.get() - 1);
    server.finished.set(server.finished.get() + 1);
    if server.finished.get() == server.expected {
        server.svc.stop();
    }
}

/// The client side, in the forked child.
struct Clients {
    svc: LocalHandle,
    target: Endpoint,
    total: usize,
    sockets: RefCell<Vec<Option<Rc<StreamSocket>>>>,
    /// Verified echoes in the current wave or round.
    verified: Cell<usize>,
    waves: Cell<usize>,
    errors: RefCell<Vec<String>>,
}

impl Clients {
    fn fail(&self, msg: String) {
        self.errors.borrow_mut().push(msg);
        self.svc.stop();
    }

    /// Starts the wave of connections `first..first + WAVE`.
    fn wave(self: &Rc<Self>, first: usize) {
        let end = (first + WAVE).min(self.total);
        self.waves.set(self.waves.get() + 1);
        self.verified.set(0);
        for i in first..end {
            let this = self.clone();
            StreamSocket::dial(&self.svc, &self.target).then(move |res| match res {
                Ok(socket) => {
                    let socket = Rc::new(socket);
                    this.sockets.borrow_mut()[i] = Some(socket.clone());
                    this.round_trip(i, 0, socket, move |this| {
                        if this.verified.get() == end - first {
                            if end == this.total {
                                this.everyone_at_once();
                            } else {
                                this.wave(end);
                            }
                        }
                    });
                }
                Err(e) => this.fail(format!("dial {i}: {e}")),
            });
        }
    }

    /// Round 1: every connection echoes a second message at the same time.
    fn everyone_at_once(self: &Rc<Self>) {
        self.verified.set(0);
        let sockets: Vec<Rc<StreamSocket>> =
            self.sockets.borrow().iter().flatten().cloned().collect();
        for (i, socket) in sockets.into_iter().enumerate() {
            self.round_trip(i, 1, socket, |this| {
                if this.verified.get() == this.total {
                    this.svc.stop();
                }
            });
        }
    }

    /// Sends connection `i`'s message of `round`, checks the echo, counts it, then calls `next`.
    fn round_trip(
        self: &Rc<Self>,
        i: usize,
        round: usize,
        socket: Rc<StreamSocket>,
        next: impl FnOnce(&Rc<Clients>) + 'static,
    ) {
        let this = self.clone();
        socket
            .clone()
            .write_all(message(i, round))
            .then(move |(res, sent)| {
                if let Err(e) = res {
                    return this.fail(format!("write {i}: {e}"));
                }
                socket
                    .read_exact(vec![0u8; sent.len()])
                    .then(move |(res, buf)| match res {
                        Ok(()) if buf == sent => {
                            this.verified.set(this.verified.get() + 1);
                            next(&this);
                        }
                        Ok(()) => {
                            this.fail(format!("echo {i}, round {round}: other bytes came back"))
                        }
                        Err(e) => this.fail(format!("read {i}, round {round}: {e}")),
                    });
            });
    }
}

fn clients(backend: aio::Backend, target: Endpoint, total: usize) -> Result<(), String> {
    let svc = IoService::builder()
        .backend(backend)
        .build()
        .map_err(|e| e.to_string())?;
    let clients = Rc::new(Clients {
        svc: svc.local(),
        target,
        total,
        sockets: RefCell::new(vec![None; total]),
        verified: Cell::new(0),
        waves: Cell::new(0),
        errors: RefCell::new(Vec::new()),
    });
    clients.wave(0);
    let stopper = svc.local();
    svc.after(CLIENT_LIMIT).then(move |_| stopper.stop());
    svc.run().map_err(|e| e.to_string())?;
    let open = clients.sockets.borrow().iter().flatten().count();
    let (verified, waves) = (clients.verified.get(), clients.waves.get());
    let errors = clients.errors.borrow().clone();
    // Close every connection: the server sees `total` ends of stream.
    clients.sockets.borrow_mut().clear();
    eprintln!(
        "clients: {open} connections open at once, {waves} waves, {verified} echoes verified with all open"
    );
    if verified != total || open != total || !errors.is_empty() {
        return Err(format!(
            "{verified} of {total} echoes verified with {open} open; errors: {:?}",
            &errors[..errors.len().min(5)]
        ));
    }
    Ok(())
}

matrix_test!(ten_thousand_concurrent_echo_connections, 60, |svc| {
    util::in_child(|| {
        let test = util::current_test();
        let total = connections();
        // About `total` fds in each process, plus the loop's and the harness's.
        if let Err(why) = stress::raise_nofile(total as u64 + 512) {
            eprintln!("skipped {test}: {why}");
            return;
        }
        let fds_before = stress::open_fds();
        let started = Instant::now();
        let acceptor = Rc::new(Acceptor::new(svc));
        let ep: Endpoint = "127.0.0.1:0".parse().unwrap();
        acceptor.bind_to(&ep).unwrap();
        acceptor.listen(2 * WAVE as i32).unwrap();
        let target = acceptor.local_endpoint().unwrap();
        let server = Rc::new(Server {
            svc: svc.local(),
            expected: total,
            live: Cell::new(0),
            max_live: Cell::new(0),
            finished: Cell::new(0),
            echoed: Cell::new(0),
            errors: RefCell::new(Vec::new()),
        });
        serve(acceptor.clone(), server.clone());

        let backend = svc.backend();
        let child = stress::fork("clients", move || clients(backend, target, total));
        // The loop stops when every session has ended. Once the client process has exited, every
        // connection is closed on its side: if the sessions do not all end soon after (the clients
        // failed), give up.
        let exited = IoDevice::new(svc, child.exited_fd().try_clone_to_owned().unwrap()).unwrap();
        let stopper = svc.local();
        exited.readable().then(move |_| {
            let svc = stopper.clone();
            stopper
                .after(Duration::from_secs(5))
                .then(move |_| svc.stop());
        });
        let stopper = svc.local();
        svc.after(CLIENT_LIMIT + Duration::from_secs(5))
            .then(move |_| stopper.stop());
        svc.run().unwrap();
        child.join(started + CLIENT_LIMIT + Duration::from_secs(5));
        let elapsed = started.elapsed();
        drop(exited);
        acceptor.close();
        drop(acceptor);
        svc.restart();
        svc.poll().unwrap();
        let fds_after = stress::open_fds();
        eprintln!(
            "{test}: {} connections served, {} at once, {} bytes echoed, {} errors, in {elapsed:?}; \
             open fds before {fds_before}, after {fds_after}",
            server.finished.get(),
            server.max_live.get(),
            server.echoed.get(),
            server.errors.borrow().len(),
        );
        let errors = server.errors.borrow();
        assert!(errors.is_empty(), "{:?}", &errors[..errors.len().min(5)]);
        assert_eq!(server.finished.get(), total);
        assert_eq!(server.max_live.get(), total, "all connections open at once");
        let expected: usize = (0..total)
            .map(|i| message(i, 0).len() + message(i, 1).len())
            .sum();
        assert_eq!(server.echoed.get(), expected);
        assert_eq!(
            fds_after,
            fds_before,
            "fds leaked: {:?}",
            stress::fd_table()
        );
    });
});

//! Out of fds under load: with `RLIMIT_NOFILE` lowered and every fd but a few used up, a server with
//! 64 clients queued accepts what fits, reports `EMFILE` to its accept handler (which simply accepts
//! again), keeps serving what it has without spinning (the loop thread's CPU time over a second of
//! exhaustion, by `getrusage(RUSAGE_THREAD)`), and, once fds are freed, accepts and serves every
//! remaining client without any new connection arriving.
//!
//! `acceptor.rs` (`accept_reports_emfile_without_spinning`) covers one queued client and counts
//! error callbacks; this adds sessions, a busy peer and CPU time. The clients run in a forked child,
//! so that their fds do not count against the server's limit.

use std::cell::{Cell, RefCell};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::{Acceptor, Endpoint, IoBuf, IoService, LocalHandle, StreamSocket};

use crate::util::{self, stress};

const CLIENTS: usize = 64;
/// Fds left free for sessions while exhausted.
const SPARE: usize = 4;
/// How long the server stays out of fds.
const WINDOW: Duration = Duration::from_secs(1);
/// How long the clients may take, in the forked child.
const CLIENT_LIMIT: Duration = Duration::from_secs(20);

fn message(i: usize) -> Vec<u8> {
    util::pattern(100 + i * 37, i as u64 + 1)
}

struct Server {
    svc: LocalHandle,
    accepted: Cell<usize>,
    finished: Cell<usize>,
    emfile: Cell<usize>,
    /// Set once the hoarded fds are closed: an `EMFILE` after that is an error.
    freed: Cell<bool>,
    /// Errors other than `EMFILE` (none expected).
    errors: RefCell<Vec<String>>,
    /// Thread CPU time and instant of the first `EMFILE`.
    exhausted_at: Cell<Option<(Duration, Instant)>>,
}

fn serve(acceptor: Rc<Acceptor>, server: Rc<Server>) {
    let next = acceptor.clone();
    acceptor.accept().then(move |res| {
        match res {
            Ok((socket, _)) => {
                server.accepted.set(server.accepted.get() + 1);
                echo(Rc::new(socket), server.clone());
            }
            Err(e) if aio::is_cancelled(&e) => return,
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) && server.freed.get() => {
                server
                    .errors
                    .borrow_mut()
                    .push(format!("accept after the fds were freed: {e}"));
            }
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => {
                server.emfile.set(server.emfile.get() + 1);
                if server.exhausted_at.get().is_none() {
                    // The measured window starts now, and ends with the loop stopped after WINDOW.
                    server
                        .exhausted_at
                        .set(Some((util::thread_cpu_time(), Instant::now())));
                    let svc = server.svc.clone();
                    server.svc.after(WINDOW).then(move |_| svc.stop());
                }
            }
            Err(e) => server.errors.borrow_mut().push(format!("accept: {e}")),
        }
        // What a naive server does: accept again at once, whatever happened.
        serve(next, server);
    });
}

fn echo(socket: Rc<StreamSocket>, server: Rc<Server>) {
    socket
        .clone()
        .read_some(vec![0u8; 8192])
        .then(move |(res, buf)| match res {
            Ok(n) if n > 0 => {
                socket
                    .clone()
                    .write_all(buf.slice(..n))
                    .then(move |(res, _)| match res {
                        Ok(()) => echo(socket, server),
                        Err(e) => server.errors.borrow_mut().push(format!("write: {e}")),
                    });
            }
            Ok(_) => {
                server.finished.set(server.finished.get() + 1);
                if server.finished.get() == CLIENTS {
                    server.svc.stop();
                }
            }
            Err(e) => server.errors.borrow_mut().push(format!("read: {e}")),
        });
}

/// The clients: all connect at once, each sends its message and checks the echo, and every
/// connection stays open until all are verified (so that served clients keep their server fds).
fn clients(backend: aio::Backend, target: Endpoint) -> Result<(), String> {
    let svc = IoService::builder()
        .backend(backend)
        .build()
        .map_err(|e| e.to_string())?;
    let verified = Rc::new(Cell::new(0));
    let errors = Rc::new(RefCell::new(Vec::new()));
    let open = Rc::new(RefCell::new(Vec::new()));
    for i in 0..CLIENTS {
        let (local, verified, errors, open, target) = (
            svc.local(),
            verified.clone(),
            errors.clone(),
            open.clone(),
            target.clone(),
        );
        svc.spawn(async move {
            let result: std::io::Result<bool> = async {
                let socket = StreamSocket::dial(&local, &target).await?;
                let (res, sent) = socket.write_all(message(i)).await;
                res?;
                let (res, got) = socket.read_exact(vec![0u8; sent.len()]).await;
                res?;
                open.borrow_mut().push(socket);
                Ok(got == sent)
            }
            .await;
            match result {
                Ok(true) => verified.set(verified.get() + 1),
                Ok(false) => errors.borrow_mut().push(format!("client {i}: wrong echo")),
                Err(e) => errors.borrow_mut().push(format!("client {i}: {e}")),
            }
            if verified.get() + errors.borrow().len() == CLIENTS {
                local.stop();
            }
        });
    }
    let stopper = svc.local();
    svc.after(CLIENT_LIMIT).then(move |_| stopper.stop());
    svc.run().map_err(|e| e.to_string())?;
    open.borrow_mut().clear();
    if verified.get() != CLIENTS || !errors.borrow().is_empty() {
        return Err(format!(
            "{} of {CLIENTS} verified; errors: {:?}",
            verified.get(),
            errors.borrow()
        ));
    }
    Ok(())
}

matrix_test!(out_of_fds_the_acceptor_backs_off_and_resumes, 40, |svc| {
    // rlimits are per process: in a child process that runs only this test.
    util::in_child(|| {
        let test = util::current_test();
        let acceptor = Rc::new(Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap());
        let target = acceptor.local_endpoint().unwrap();
        // A busy pair inside the server, created before the fds run out: it must keep working.
        let (ping, pong) = StreamSocket::pair(svc).unwrap();
        let started = Instant::now();
        let backend = svc.backend();
        // The clients connect at once; their connections wait in the backlog until the loop runs.
        let child = stress::fork("clients", move || clients(backend, target));

        // Lower the soft limit near what is in use, then use up all but SPARE fds below it. The limit
        // leaves room for every client's session once the hoard is freed, with a margin for the
        // probe and whatever else opens meanwhile: the clients hold their connections until all are
        // served, so a limit with room for fewer would deadlock them.
        let highest = stress::fd_table().last().unwrap().0 as u64;
        stress::lower_nofile(highest + CLIENTS as u64 + 16);
        let probe = std::fs::File::open("/dev/null").unwrap();
        let mut hoard: Vec<OwnedFd> = Vec::new();
        while let Ok(fd) = rustix::io::fcntl_dupfd_cloexec(&probe, 0) {
            hoard.push(fd);
        }
        hoard.truncate(hoard.len() - SPARE);

        let server = Rc::new(Server {
            svc: svc.local(),
            accepted: Cell::new(0),
            finished: Cell::new(0),
            emfile: Cell::new(0),
            freed: Cell::new(false),
            errors: RefCell::new(Vec::new()),
            exhausted_at: Cell::new(None),
        });
        serve(acceptor.clone(), server.clone());

        // Ping-pong over the pair every 50 ms: I/O and timers go on while the acceptor backs off.
        let pings = Rc::new(Cell::new(0usize));
        fn ping_pong(
            svc: LocalHandle,
            a: Rc<StreamSocket>,
            b: Rc<StreamSocket>,
            n: Rc<Cell<usize>>,
        ) {
            let again = svc.clone();
            svc.after(Duration::from_millis(50)).then(move |_| {
                a.clone().write_all(b"ping".to_vec()).then(move |(res, _)| {
                    res.expect("ping");
                    b.clone().read_exact(vec![0u8; 4]).then(move |(res, buf)| {
                        res.expect("pong");
                        assert_eq!(buf, b"ping");
                        n.set(n.get() + 1);
                        ping_pong(again, a, b, n);
                    });
                });
            });
        }
        ping_pong(svc.local(), Rc::new(ping), Rc::new(pong), pings.clone());

        // Run until the fds have been exhausted for WINDOW (or, failing that, 10 s), then measure.
        let limit = aio::DeadlineTimer::new(svc).unwrap();
        limit.expires_after(Duration::from_secs(10));
        let stopper = svc.local();
        limit.wait().then(move |res| {
            if res.is_ok() {
                stopper.stop();
            }
        });
        let pings_before = pings.get();
        svc.run().unwrap();
        let (cpu0, at) = server
            .exhausted_at
            .get()
            .expect("the acceptor ran out of fds");
        let (cpu, window) = (util::thread_cpu_time() - cpu0, at.elapsed());
        let (emfile, accepted_while_out) = (server.emfile.get(), server.accepted.get());
        let pings_while_out = pings.get() - pings_before;
        limit.cancel();

        // Free the fds: the acceptor resumes by itself and every client is served.
        drop(hoard);
        server.freed.set(true);
        svc.restart();
        let stopper = svc.local();
        svc.after(CLIENT_LIMIT).then(move |_| stopper.stop());
        svc.run().unwrap();
        // The server's own errors first: they say more than the clients' failure they cause.
        assert!(
            server.errors.borrow().is_empty(),
            "{:?}",
            server.errors.borrow()
        );
        child.join(started + CLIENT_LIMIT + Duration::from_secs(5));
        eprintln!(
            "{test}: {accepted_while_out} accepted while out of fds, {emfile} EMFILE callbacks and \
             {cpu:?} of loop CPU in {window:?} of exhaustion, {pings_while_out} pings meanwhile; \
             then {} of {CLIENTS} clients accepted and served",
            server.accepted.get()
        );
        assert_eq!(accepted_while_out, SPARE, "one session per spare fd");
        assert!(emfile >= 1);
        // One retry per 50 ms back-off: about 20 in a second; a spinning acceptor makes thousands.
        let most = (window.as_millis() / 50 + 5) as usize;
        assert!(
            emfile <= most,
            "{emfile} EMFILE callbacks in {window:?}: the acceptor spins"
        );
        assert!(
            cpu < window / 5,
            "{cpu:?} of CPU in {window:?} out of fds: the loop spins"
        );
        assert!(
            pings_while_out >= 5,
            "only {pings_while_out} pings while out of fds"
        );
        assert_eq!(server.accepted.get(), CLIENTS);
        assert_eq!(server.finished.get(), CLIENTS);
    });
});

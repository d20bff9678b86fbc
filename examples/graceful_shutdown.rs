//! The echo server of `echo_server`, stopping gracefully on Ctrl-C (SIGINT) or SIGTERM: the
//! Boost.Asio questions "clean shutdown on Ctrl-C" and "a signal handler that does not keep the
//! io_service running".
//!
//! ```text
//! cargo run --example graceful_shutdown                          # 127.0.0.1:8080; Ctrl-C stops it
//! cargo run --example graceful_shutdown -- unix:/tmp/echo.sock   # the same on a Unix socket
//! kill -TERM <pid>                                               # the same as Ctrl-C
//! ```
//!
//! ## Shutting down
//! On SIGINT or SIGTERM (or Enter, or the end of stdin, as for the other servers) the server:
//! 1. closes its acceptor: no new connection is accepted, the pending accept completes with
//!    `ECANCELED`, and a Unix socket file is removed at once;
//! 2. drains every session: a session finishes echoing what it has read, and also reads and echoes
//!    what had already arrived on its socket when the shutdown began (`bytes_readable()`, the
//!    kernel's count of bytes received but not read yet), then shuts down its write side (the
//!    client reads EOF after the last byte of its echo) and closes. A session that was waiting for
//!    data, with nothing unread, is cancelled and closes at once;
//! 3. exits with status 0 once every session is closed.
//!
//! The drain is bounded: a client that stops reading would keep its session's write pending
//! forever, so after [`DRAIN_TIMEOUT`] the sessions still open are closed. A second signal closes
//! them at once.
//!
//! ## How the loop ends by itself
//! The loop runs with `run_until_done()` (Asio's `run()`): it returns when no operation is pending
//! except those marked [`background`](aio::Op::background). Serving, the pending accept and the
//! sessions' reads and writes keep it running. The waits that should not keep it running are
//! background operations: the signal wait, the watch on stdin and the drain deadline. So once the
//! acceptor is closed and the last session has closed, `run_until_done()` returns, with the signal
//! wait still registered, and nothing had to call `stop()`.
//!
//! ## Sessions and the registry
//! As in `echo_server`, a session is owned by its pending operation (each handler holds an `Rc` of
//! it). That is all a session needs while serving, but a shutdown must reach sessions that are
//! waiting for data, which nothing else refers to. So the server keeps a registry of *weak*
//! references (a `Slab<Weak<Session>>`): it never keeps a session alive, a session removes its
//! entry when it is dropped, and the shutdown upgrades the live ones to drain them.
//!
//! ## Output
//! `listening on ENDPOINT (BACKEND)` on stdout once ready, as every serving example; what the
//! shutdown does goes to stderr (`SIGTERM: no longer accepting; draining 3 connections`, and
//! `stopped: ...` at the end).

#[allow(dead_code)] // each example uses part of the shared module
mod common;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::process::ExitCode;
use std::rc::{Rc, Weak};
use std::time::Duration;

use aio::blocking::Completer;
use aio::pool::{PoolHandle, Serving};
use aio::signal::{SIGINT, SIGTERM};
use aio::{AcceptMode, Acceptor, Endpoint, IoBuf, LocalHandle, LoopPool, SignalSet, StreamSocket};
use slab::Slab;

const PROGRAM: &str = "graceful_shutdown";

const MORE_HELP: &str = "
On SIGINT (Ctrl-C), SIGTERM, Enter or the end of stdin it stops accepting, finishes the echoes in
progress (what was read or had arrived), closes every connection and exits with status 0; a
connection that does not drain within 1 s is closed, and a second signal closes them all at once.";

/// How long sessions may take to drain before they are closed regardless.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);

/// The listening side: the acceptor, the registry of live sessions, and the shutdown.
struct Server {
    svc: LocalHandle,
    /// `None` on a loop of a pool (`--threads`): the pool accepts for it.
    acceptor: Option<Acceptor>,
    buffer_size: usize,
    /// Every live session, by weak reference (see the module docs).
    sessions: RefCell<Slab<Weak<Session>>>,
    /// Set once the shutdown has begun.
    shutting_down: Cell<bool>,
    /// Sessions that ended after echoing everything (drained or closed by their peer).
    finished: Cell<usize>,
    /// Sessions closed at the drain deadline or by a second signal.
    forced: Cell<usize>,
    /// On a loop of a pool: told (finished, forced) once the drain is over.
    drained: RefCell<Option<Completer<(usize, usize)>>>,
}

impl Server {
    fn new(svc: &LocalHandle, acceptor: Option<Acceptor>, buffer_size: usize) -> Rc<Server> {
        Rc::new(Server {
            svc: svc.clone(),
            acceptor,
            buffer_size,
            sessions: RefCell::new(Slab::new()),
            shutting_down: Cell::new(false),
            finished: Cell::new(0),
            forced: Cell::new(0),
            drained: RefCell::new(None),
        })
    }

    /// Starts one asynchronous accept; its handler accepts again unless the shutdown has begun.
    fn accept(self: Rc<Self>) {
        let Some(acceptor) = &self.acceptor else {
            return;
        };
        let this = self.clone();
        acceptor
            .accept()
            .then(move |result| this.on_accepted(result));
    }

    fn on_accepted(self: Rc<Self>, result: io::Result<(StreamSocket, Endpoint)>) {
        match result {
            // Accepted before the acceptor was closed: the client connected before the shutdown,
            // so it is served (and drained at once if the shutdown has begun).
            Ok((socket, _peer)) => Session::start(&self, socket),
            Err(e)
                if aio::is_cancelled(&e)
                    || !self.acceptor.as_ref().is_some_and(|a| a.is_open()) =>
            {
                return;
            }
            Err(e) => eprintln!("{PROGRAM}: accept: {e}"),
        }
        if !self.shutting_down.get() {
            self.accept();
        }
    }

    /// The live sessions, as strong references, with the registry no longer borrowed (so that a
    /// session may be dropped, and leave the registry, while the caller works on them).
    fn live_sessions(&self) -> Vec<Rc<Session>> {
        self.sessions
            .borrow()
            .iter()
            .filter_map(|(_, weak)| weak.upgrade())
            .collect()
    }

    /// Begins the graceful shutdown (once): stop accepting, drain every session, and bound the
    /// drain with a background timer.
    fn shut_down(self: &Rc<Self>, why: &str) {
        if self.shutting_down.replace(true) {
            return;
        }
        // The pending accept completes with ECANCELED; a Unix socket file is removed now.
        if let Some(acceptor) = &self.acceptor {
            acceptor.close();
        }
        let live = self.live_sessions();
        eprintln!(
            "{PROGRAM}: {why}: no longer accepting; draining {} connection(s)",
            live.len()
        );
        for session in &live {
            session.drain();
        }
        drop(live);
        // Background: if every session drains in time, this timer must not keep the loop running
        // for the rest of the second.
        let this = self.clone();
        self.svc
            .after(DRAIN_TIMEOUT)
            .background()
            .then(move |_| this.force_close("the drain deadline passed"));
        self.report_if_drained();
    }

    /// On a loop of a pool, once shutting down and every session is gone: tells the main thread.
    fn report_if_drained(&self) {
        if self.shutting_down.get() && self.sessions.borrow().is_empty() {
            if let Some(drained) = self.drained.borrow_mut().take() {
                drained.complete((self.finished.get(), self.forced.get()));
            }
        }
    }

    /// Closes every session still open: their pending operations complete with ECANCELED and
    /// their handlers let them go.
    fn force_close(&self, why: &str) {
        let live = self.live_sessions();
        if live.is_empty() {
            return;
        }
        eprintln!(
            "{PROGRAM}: {why}: closing {} connection(s) that have not drained",
            live.len()
        );
        for session in &live {
            if session.socket.is_open() {
                session.socket.close();
                self.forced.set(self.forced.get() + 1);
            }
        }
    }
}

/// Waits for SIGINT or SIGTERM without keeping the loop running: the first signal begins the
/// shutdown, a second one closes what is left at once.
fn watch_signals(server: Rc<Server>, signals: Rc<SignalSet>) {
    signals.wait().background().then(move |result| {
        let Ok(signal) = result else { return };
        let name = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        if server.shutting_down.get() {
            server.force_close(&format!("{name} again"));
        } else {
            server.shut_down(name);
        }
        watch_signals(server, signals);
    });
}

/// One connection, echoing what it reads (as in `echo_server`), that can drain on request.
struct Session {
    server: Rc<Server>,
    /// Its entry in the server's registry.
    key: usize,
    socket: StreamSocket,
    /// Whether a read is pending (the session is waiting for data, not writing).
    reading: Cell<bool>,
    /// `None` while serving; once draining, how many more bytes it must read and echo: those that
    /// had arrived, unread, when the shutdown began.
    drain_left: Cell<Option<usize>>,
    /// Whether the pending read was started after the drain began, so that what it reads counts
    /// against `drain_left`. A read started before may have read its bytes before the drain
    /// began: those were not in the kernel's count.
    read_counts: Cell<bool>,
}

impl Session {
    /// Registers a new session and starts reading.
    fn start(server: &Rc<Server>, socket: StreamSocket) {
        let session = {
            let mut sessions = server.sessions.borrow_mut();
            let entry = sessions.vacant_entry();
            let session = Rc::new(Session {
                server: server.clone(),
                key: entry.key(),
                socket,
                reading: Cell::new(false),
                drain_left: Cell::new(None),
                read_counts: Cell::new(false),
            });
            entry.insert(Rc::downgrade(&session));
            session
        };
        if server.shutting_down.get() {
            session.drain();
        }
        let buffer = vec![0u8; server.buffer_size];
        session.read(buffer);
    }

    /// Switches to draining (once): remember how much has arrived unread, and cancel a pending
    /// read (the session then reads again, counting what it reads, or closes if nothing had
    /// arrived). A writing session reads what is owed once its write completes.
    fn drain(&self) {
        if self.drain_left.get().is_some() {
            return;
        }
        let unread = self.socket.bytes_readable().unwrap_or(0);
        self.drain_left.set(Some(unread));
        if self.reading.get() {
            // A read still waiting completes with ECANCELED, having read nothing. One that has in
            // fact completed (its handler is queued with the data) is not affected: its bytes were
            // read before the drain began, and are echoed like any others.
            self.socket.cancel();
        }
    }

    /// Reads what has arrived, unless the drain is complete.
    fn read(self: Rc<Self>, buffer: Vec<u8>) {
        if self.drain_left.get() == Some(0) {
            self.finish();
            return;
        }
        self.read_counts.set(self.drain_left.get().is_some());
        self.reading.set(true);
        let this = self.clone();
        self.socket
            .read_some(buffer)
            .then(move |(result, buffer)| this.on_read(result, buffer));
    }

    fn on_read(self: Rc<Self>, result: io::Result<usize>, buffer: Vec<u8>) {
        self.reading.set(false);
        match result {
            // The peer has sent everything and all of it was echoed: the session ends, and dropping
            // the last `Rc` closes the socket.
            Ok(0) => self.server.finished.set(self.server.finished.get() + 1),
            Ok(n) => {
                if let (Some(left), true) = (self.drain_left.get(), self.read_counts.get()) {
                    // Reading more than was owed is fine: those bytes arrived after the drain
                    // began, and are echoed too.
                    self.drain_left.set(Some(left.saturating_sub(n)));
                }
                let this = self.clone();
                self.socket
                    .write_all(buffer.slice(..n))
                    .then(move |(result, buffer)| this.on_written(result, buffer.into_inner()));
            }
            // Cancelled by `drain`: read what is owed, if anything, then finish. (Closed by
            // `force_close`: the session just ends.)
            Err(e) if aio::is_cancelled(&e) && self.socket.is_open() => self.read(buffer),
            Err(_) => {}
        }
    }

    fn on_written(self: Rc<Self>, result: io::Result<()>, buffer: Vec<u8>) {
        // An error (the peer went away, or `force_close`) ends the session.
        if result.is_ok() {
            self.read(buffer);
        }
    }

    /// Everything owed has been echoed: send EOF after it, then close.
    fn finish(&self) {
        if self.socket.is_open() {
            let _ = self.socket.shutdown(Shutdown::Write);
            self.socket.close();
            self.server.finished.set(self.server.finished.get() + 1);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.server.sessions.borrow_mut().try_remove(self.key);
        self.server.report_if_drained();
    }
}

fn main() -> ExitCode {
    let args = match common::ServerArgs::from_command_line(PROGRAM, MORE_HELP) {
        Ok(args) => args,
        Err(status) => return status,
    };
    if args.threads > 1 {
        return serve_on_pool(&args);
    }
    let svc = match common::service_from_env(PROGRAM) {
        Ok(svc) => svc,
        Err(status) => return status,
    };

    // Catch the signals before announcing: a SIGTERM sent as soon as the `listening on` line is
    // read must find them caught, not kill the process.
    let signals = match SignalSet::new(&svc, &[SIGINT, SIGTERM]) {
        Ok(signals) => Rc::new(signals),
        Err(e) => {
            eprintln!("{PROGRAM}: cannot catch SIGINT and SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let acceptor = match Acceptor::bind(&svc, &args.endpoint) {
        Ok(acceptor) => acceptor,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot listen on {}: {e}", args.endpoint);
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = common::announce(&svc, &acceptor) {
        eprintln!("{PROGRAM}: {e}");
        return ExitCode::FAILURE;
    }

    let server = Server::new(&svc, Some(acceptor), args.buffer_size);
    watch_signals(server.clone(), signals);
    {
        let server = server.clone();
        common::on_enter_or_eof(&svc, move || server.shut_down("end of input"));
    }
    server.clone().accept();

    // Until no counted work is left: the acceptor closed and every session gone.
    let result = svc.run_until_done();

    // Normally closed already; after a failing loop, this removes a Unix socket file.
    if let Some(acceptor) = &server.acceptor {
        acceptor.close();
    }
    match result {
        Ok(()) => {
            eprintln!(
                "{PROGRAM}: stopped: {} connection(s) finished, {} closed before draining",
                server.finished.get(),
                server.forced.get()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{PROGRAM}: the event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

thread_local! {
    /// With `--threads`: this loop's server (sessions, drain state), made when the pool starts.
    static LOOP_SERVER: RefCell<Option<Rc<Server>>> = const { RefCell::new(None) };
}

fn loop_server() -> Option<Rc<Server>> {
    LOOP_SERVER.with(|s| s.borrow().clone())
}

/// `--threads N`: the same server on N loops of a pool. The main thread runs a loop of its own for
/// the signals and stdin; a shutdown closes the pool's acceptors, then every loop drains its own
/// sessions (bounded by the same deadline) and reports back; once all have, the pool stops and one
/// line per loop says how many connections it served.
fn serve_on_pool(args: &common::ServerArgs) -> ExitCode {
    let control = match common::service_from_env(PROGRAM) {
        Ok(svc) => svc,
        Err(status) => return status,
    };
    let signals = match SignalSet::new(&control, &[SIGINT, SIGTERM]) {
        Ok(signals) => Rc::new(signals),
        Err(e) => {
            eprintln!("{PROGRAM}: cannot catch SIGINT and SIGTERM: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pool = match LoopPool::builder()
        .threads(args.threads)
        .backend(control.backend())
        .start()
    {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot start the event loops: {e}");
            return ExitCode::FAILURE;
        }
    };
    let buffer_size = args.buffer_size;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let made = pool.post_each(move |svc, _| {
        LOOP_SERVER.with(|s| *s.borrow_mut() = Some(Server::new(svc, None, buffer_size)));
        let _ = ready_tx.send(());
    });
    if made.is_err() || (0..pool.len()).any(|_| ready_rx.recv().is_err()) {
        eprintln!("{PROGRAM}: a loop of the pool ended before it started serving");
        return ExitCode::FAILURE;
    }
    let mode = if args.endpoint.is_unix() {
        AcceptMode::Handoff(aio::pool::Balance::RoundRobin)
    } else {
        AcceptMode::ReusePort
    };
    let serving = match pool.serve(&args.endpoint, mode, |socket, _peer| {
        if let Some(server) = loop_server() {
            Session::start(&server, socket);
        }
    }) {
        Ok(serving) => serving,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot listen on {}: {e}", args.endpoint);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "listening on {} ({})",
        serving.endpoint(),
        pool.backend().name()
    );
    let _ = std::io::Write::flush(&mut std::io::stdout());

    let shutdown = Rc::new(PoolShutdown {
        control: control.local(),
        pool: pool.handle(),
        serving,
        started: Cell::new(false),
        waiting: Cell::new(0),
        finished: Cell::new(0),
        forced: Cell::new(0),
    });
    watch_pool_signals(shutdown.clone(), signals);
    {
        let shutdown = shutdown.clone();
        common::on_enter_or_eof(&control, move || shutdown.begin("end of input"));
    }
    // Until every loop has drained (`PoolShutdown::begin` stops it then).
    let result = control.run();
    pool.stop();
    let stats = pool.stats();
    let joined = pool.join();
    eprintln!(
        "{PROGRAM}: stopped: {} connection(s) finished, {} closed before draining",
        shutdown.finished.get(),
        shutdown.forced.get()
    );
    for s in &stats {
        println!("loop {}: {} connections", s.index, s.accepted);
    }
    match (result, joined) {
        (Ok(()), Ok(())) => ExitCode::SUCCESS,
        (Err(e), _) => {
            eprintln!("{PROGRAM}: the event loop failed: {e}");
            ExitCode::FAILURE
        }
        (_, Err(e)) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The shutdown of a pool, driven from the main thread's loop.
struct PoolShutdown {
    control: LocalHandle,
    pool: PoolHandle,
    serving: Serving,
    started: Cell<bool>,
    /// Loops that have not reported their drain yet.
    waiting: Cell<usize>,
    finished: Cell<usize>,
    forced: Cell<usize>,
}

impl PoolShutdown {
    /// Stops accepting everywhere, then has every loop drain (once).
    fn begin(self: &Rc<Self>, why: &str) {
        if self.started.replace(true) {
            return;
        }
        self.serving.close();
        self.waiting.set(self.pool.len());
        for index in 0..self.pool.len() {
            let (drained, report) = self.control.completion::<(usize, usize)>();
            let this = self.clone();
            report.then(move |res| {
                if let Ok((finished, forced)) = res {
                    this.finished.set(this.finished.get() + finished);
                    this.forced.set(this.forced.get() + forced);
                }
                this.waiting.set(this.waiting.get() - 1);
                if this.waiting.get() == 0 {
                    this.control.stop();
                }
            });
            let why = format!("{why} (loop {index})");
            // A loop that has ended drops the completer: its report completes with an error.
            let _ = self.pool.post(index, move || {
                if let Some(server) = loop_server() {
                    *server.drained.borrow_mut() = Some(drained);
                    server.shut_down(&why);
                }
            });
        }
    }

    /// A second signal: every loop closes what has not drained yet.
    fn force(&self, why: &str) {
        let why = why.to_owned();
        let _ = self.pool.post_each(move |_, _| {
            if let Some(server) = loop_server() {
                server.force_close(&why);
            }
        });
    }
}

/// `watch_signals` for a pool: the first signal begins the shutdown, a second forces it.
fn watch_pool_signals(shutdown: Rc<PoolShutdown>, signals: Rc<SignalSet>) {
    signals.wait().background().then(move |result| {
        let Ok(signal) = result else { return };
        let name = if signal == SIGINT {
            "SIGINT"
        } else {
            "SIGTERM"
        };
        if shutdown.started.get() {
            shutdown.force(&format!("{name} again"));
        } else {
            shutdown.begin(name);
        }
        watch_pool_signals(shutdown, signals);
    });
}

//! An echo server in callback style: booster::aio's tutorial server, in Rust.
//!
//! ```text
//! cargo run --example echo_server                          # 127.0.0.1:8080
//! cargo run --example echo_server -- unix:/tmp/echo.sock   # the same server on a Unix socket
//! AIO_BACKEND=poll cargo run --example echo_server -- 127.0.0.1:0 --buffer 4096
//! cargo run --example echo_server -- 127.0.0.1:0 --threads 4   # four loops, SO_REUSEPORT
//! ```
//!
//! Like the tutorial it has two kinds of objects:
//! - an [`EchoAcceptor`] that accepts a connection, hands it to a new session and accepts again;
//! - an [`EchoSession`] per connection that reads what arrives, writes it all back, and reads
//!   again.
//!
//! A session is kept alive by its own pending operation: each handler owns an `Rc` of the session
//! (booster's `shared_from_this()`), so when the peer closes the connection and no operation is
//! started again, the last `Rc` goes away with the last handler and the socket closes. There is no
//! table of sessions.
//!
//! The server stops, with exit status 0, when Enter is pressed or stdin reaches EOF.

#[allow(dead_code)] // each example uses part of the shared module
mod common;

use std::io;
use std::process::ExitCode;
use std::rc::Rc;

use aio::{Acceptor, Endpoint, IoBuf, StreamSocket};

const PROGRAM: &str = "echo_server";

/// booster's `echo_acceptor`: owns the listening socket and starts one session per connection.
struct EchoAcceptor {
    acceptor: Acceptor,
    buffer_size: usize,
}

impl EchoAcceptor {
    /// Starts one asynchronous accept. Its handler holds an `Rc` of the acceptor object, so the
    /// object lives as long as an accept is pending.
    fn run(self: Rc<Self>) {
        let this = self.clone();
        self.acceptor
            .accept()
            .then(move |result| this.on_accepted(result));
    }

    /// The accept's handler: the error comes first, as in booster.
    fn on_accepted(self: Rc<Self>, result: io::Result<(StreamSocket, Endpoint)>) {
        match result {
            Ok((socket, _peer)) => {
                // From here on the session is responsible for its own life time.
                Rc::new(EchoSession {
                    socket,
                    buffer_size: self.buffer_size,
                })
                .run();
            }
            // The acceptor was closed: accepting is over.
            Err(e) if aio::is_cancelled(&e) || !self.acceptor.is_open() => return,
            // Anything else (e.g. out of file descriptors) is reported, and we accept again; `aio`
            // backs off by itself after `EMFILE`, so this does not spin.
            Err(e) => eprintln!("{PROGRAM}: accept: {e}"),
        }
        self.run();
    }
}

/// booster's `echo_session`: one connection.
///
/// Unlike the tutorial's `char buffer_[1024]` member, the buffer is not kept in the session: each
/// operation takes it by value and gives it back to its handler, which passes it on to the next
/// one.
struct EchoSession {
    socket: StreamSocket,
    buffer_size: usize,
}

impl EchoSession {
    /// Starts the session with a fresh buffer.
    fn run(self: Rc<Self>) {
        let buffer = vec![0u8; self.buffer_size];
        self.read(buffer);
    }

    /// Reads whatever has arrived, up to the buffer's size (booster's `async_read_some`).
    fn read(self: Rc<Self>, buffer: Vec<u8>) {
        let this = self.clone();
        self.socket
            .read_some(buffer)
            .then(move |(result, buffer)| this.on_read(result, buffer));
    }

    fn on_read(self: Rc<Self>, result: io::Result<usize>, buffer: Vec<u8>) {
        match result {
            // Ok(0) is the end of the stream: the peer has nothing more to send. Returning without
            // starting an operation drops this last `Rc`, which closes the socket.
            Ok(0) | Err(_) => {}
            // Write back exactly what was read (booster's `async_write`: all of it, however many
            // system calls that takes).
            Ok(n) => {
                let this = self.clone();
                self.socket
                    .write_all(buffer.slice(..n))
                    .then(move |(result, buffer)| this.on_written(result, buffer.into_inner()));
            }
        }
    }

    fn on_written(self: Rc<Self>, result: io::Result<()>, buffer: Vec<u8>) {
        if result.is_ok() {
            self.read(buffer);
        }
    }
}

fn main() -> ExitCode {
    let args = match common::ServerArgs::from_command_line(PROGRAM, "") {
        Ok(args) => args,
        Err(status) => return status,
    };
    if args.threads > 1 {
        // One loop per thread, each with its own sessions: the same session code serves them.
        let buffer_size = args.buffer_size;
        return common::serve_on_pool(PROGRAM, &args, move |socket, _peer| {
            Rc::new(EchoSession {
                socket,
                buffer_size,
            })
            .run();
        });
    }
    let svc = match common::service_from_env(PROGRAM) {
        Ok(svc) => svc,
        Err(status) => return status,
    };

    // Open, set SO_REUSEADDR (IP only), bind and listen: the endpoint alone decides between TCP
    // over IPv4, IPv6 or a Unix socket.
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

    // Enter or the end of stdin stops the loop.
    let stopper = svc.local();
    common::on_enter_or_eof(&svc, move || stopper.stop());
    let server = Rc::new(EchoAcceptor {
        acceptor,
        buffer_size: args.buffer_size,
    });
    server.clone().run();

    // Runs until `stop()`: Enter or the end of stdin.
    let result = svc.run();

    // Close the listener now: this also removes the Unix socket file it created. Dropping `svc`
    // afterwards drops the pending accept and every session, closing their sockets.
    server.acceptor.close();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: the event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

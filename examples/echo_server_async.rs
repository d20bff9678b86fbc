//! The echo server of `echo_server`, written with async/await instead of handlers.
//!
//! ```text
//! cargo run --example echo_server_async -- 127.0.0.1:0
//! ```
//!
//! The same operations (`read_some`, `write_all`) are awaited instead of given a handler: one task
//! takes connection after connection from `acceptor.incoming()` and spawns one task per connection
//! on the same loop. A connection's task owns its socket (and its permit, its place among the open
//! connections) and ends when the peer stops sending; nothing else keeps track of it.
//! Arguments, output and stopping (Enter or the end of stdin) are those of `echo_server`.

#[allow(dead_code)] // each example uses part of the shared module
mod common;

use std::io;
use std::process::ExitCode;
use std::rc::Rc;

use aio::{Accepted, Acceptor, IoBuf, LocalHandle};

const PROGRAM: &str = "echo_server_async";

/// Accepts connections until the acceptor is closed, spawning a task for each.
async fn accept_loop(svc: LocalHandle, acceptor: Rc<Acceptor>, buffer_size: usize) {
    // `None` once the acceptor is closed; errors such as running out of file descriptors come as
    // `Some(Err)`, and accepting goes on (`aio` backs off by itself).
    let mut incoming = acceptor.incoming();
    while let Some(connection) = incoming.next().await {
        match connection {
            Ok(connection) => {
                // Detached: the task runs until `echo` returns (or the loop is dropped).
                svc.spawn(echo(connection, buffer_size));
            }
            Err(e) => eprintln!("{PROGRAM}: accept: {e}"),
        }
    }
}

/// Echoes one connection: read what has arrived, write all of it back, until the peer's end of
/// stream.
async fn echo(connection: Accepted, buffer_size: usize) -> io::Result<()> {
    let socket = connection.socket;
    let mut buffer = vec![0u8; buffer_size];
    loop {
        // The buffer goes into the operation and comes back with its result.
        let (result, read_buffer) = socket.read_some(buffer).await;
        let n = result?;
        if n == 0 {
            return Ok(()); // end of stream; dropping `socket` closes it
        }
        let (result, written) = socket.write_all(read_buffer.slice(..n)).await;
        result?;
        buffer = written.into_inner();
    }
}

fn main() -> ExitCode {
    let args = match common::ServerArgs::from_command_line(PROGRAM, "") {
        Ok(args) => args,
        Err(status) => return status,
    };
    let svc = match common::service_from_env(PROGRAM) {
        Ok(svc) => svc,
        Err(status) => return status,
    };
    let acceptor = match Acceptor::bind(&svc, &args.endpoint) {
        Ok(acceptor) => Rc::new(acceptor),
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
    svc.spawn(accept_loop(svc.local(), acceptor.clone(), args.buffer_size));

    // Runs until `stop()`: Enter or the end of stdin.
    let result = svc.run();

    // Close the listener now (removing a Unix socket file it created); dropping `svc` afterwards
    // drops every unfinished task, closing the sockets they own.
    acceptor.close();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: the event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

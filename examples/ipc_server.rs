//! `ipc_server ENDPOINT`: a framed server speaking the type+length protocol of `examples/ipc/`.
//!
//! Each connection is a task that reads frames one by one and answers each by its type: `HELLO`
//! with `WELCOME`, `PING n` with `PONG n`, `ECHO` with the same payload, anything else with
//! `UNKNOWN`. A peer that declares a frame over the maximum is disconnected; the others carry on.
//!
//! It prints `listening on ENDPOINT (BACKEND)` first, then one line per connection and
//! disconnection, and stops with status 0 on stdin EOF, Enter, SIGINT or SIGTERM. A Unix socket file
//! left by a server that was killed (SIGKILL cannot be caught) is reclaimed on start when nothing
//! listens on it, so the server can be restarted on the same endpoint.
//!
//! Try: `cargo run --example ipc_server -- unix:/tmp/ipc.sock` and, beside it,
//! `cargo run --example ipc_clients -- unix:/tmp/ipc.sock`.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod ipc;

use std::io;
use std::process::ExitCode;

use aio::framed::{Frame, Framed};
use aio::{Accepted, Acceptor, Endpoint, IoService, LocalHandle, SignalSet, signal};

fn main() -> ExitCode {
    let program = "ipc_server";
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint: Endpoint = match args.as_slice() {
        [ep] if !ep.starts_with('-') => match ep.parse() {
            Ok(ep) => ep,
            Err(e) => return usage(program, &e.to_string()),
        },
        _ => return usage(program, "expected exactly one ENDPOINT"),
    };
    let svc = match common::service_from_env(program) {
        Ok(svc) => svc,
        Err(code) => return code,
    };
    let acceptor = match bind_reclaiming(&svc, &endpoint) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = common::announce(&svc, &acceptor) {
        eprintln!("{program}: {e}");
        return ExitCode::FAILURE;
    }
    let local = svc.local();
    common::on_enter_or_eof(&svc, move || local.stop());
    stop_on_signals(&svc);
    svc.spawn(accept_loop(svc.local(), acceptor));
    match svc.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
    // Dropping the loop drops the accept task and its acceptor, which removes the socket file.
}

fn usage(program: &str, why: &str) -> ExitCode {
    eprintln!(
        "{program}: {why}\nusage: {program} ENDPOINT   (e.g. 127.0.0.1:0, [::1]:9000, unix:/tmp/ipc.sock)"
    );
    ExitCode::from(2)
}

/// Binds, and if a Unix socket file is in the way but nobody listens on it (a killed server's
/// leftover), removes it and binds again.
///
/// A server killed while on io_uring lets go of its listening socket a moment after it died: the
/// kernel tears a dead process's ring down in the background, and the ring's requests hold the
/// socket until then. So a socket that still answers is asked again for up to half a second before
/// the endpoint counts as taken.
fn bind_reclaiming(svc: &IoService, endpoint: &Endpoint) -> io::Result<Acceptor> {
    const ASKS: u32 = 20;
    match Acceptor::bind(svc, endpoint) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            let Some(path) = endpoint.unix_path() else {
                return Err(e);
            };
            for _ in 0..ASKS {
                match std::os::unix::net::UnixStream::connect(path) {
                    Err(c) if c.kind() == io::ErrorKind::ConnectionRefused => {
                        std::fs::remove_file(path)?;
                        return Acceptor::bind(svc, endpoint);
                    }
                    _ => std::thread::sleep(std::time::Duration::from_millis(25)),
                }
            }
            Err(e)
        }
        other => other,
    }
}

fn stop_on_signals(svc: &IoService) {
    match SignalSet::new(svc, &[signal::SIGINT, signal::SIGTERM]) {
        Ok(signals) => {
            let svc = svc.local();
            // A background wait: it never keeps the loop alive by itself.
            signals.wait().background().then(move |_| {
                drop(signals);
                svc.stop();
            });
        }
        Err(e) => eprintln!("ipc_server: signals will not stop the server: {e}"),
    }
}

async fn accept_loop(svc: LocalHandle, acceptor: Acceptor) {
    let mut connections = 0u64;
    // Ends when the loop is dropped; out of file descriptors and the like are reported and
    // accepting goes on.
    let mut incoming = acceptor.incoming();
    while let Some(connection) = incoming.next().await {
        match connection {
            Ok(Accepted { socket, peer, .. }) => {
                connections += 1;
                println!("#{connections} connected from {peer}");
                svc.spawn(serve(Framed::new(socket, ipc::codec()), connections));
            }
            Err(e) => eprintln!("ipc_server: accept: {e}"),
        }
    }
}

async fn serve(framed: Framed<aio::framed::TypeLengthCodec>, id: u64) {
    let mut name = String::from("?");
    let reason = loop {
        let frame = match framed.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => break e.to_string(),
            None => break "closed".to_string(),
        };
        let reply = match frame.kind {
            ipc::HELLO => {
                name = String::from_utf8_lossy(&frame.payload).into_owned();
                println!("#{id} is {name}");
                Frame::new(ipc::WELCOME, frame.payload)
            }
            ipc::PING => Frame::new(ipc::PONG, frame.payload),
            ipc::ECHO => frame,
            other => Frame::new(ipc::UNKNOWN, other.to_be_bytes().to_vec()),
        };
        if let Err(e) = framed.send(reply).await {
            break e.to_string();
        }
    };
    println!("#{id} ({name}) disconnected: {reason}");
    framed.close();
}

//! A UDP echo server: every datagram goes back to its sender. The same program serves Unix datagram
//! sockets when given a `unix:` endpoint.
//!
//! ```text
//! cargo run --example udp_echo                            # 127.0.0.1:8080
//! cargo run --example udp_echo -- '[::1]:0'
//! cargo run --example udp_echo -- unix:/tmp/echo.dgram    # clients must bind to get replies
//! echo hello | nc -u -w1 127.0.0.1 8080
//! ```
//!
//! One task receives a datagram (`recv_from`, which also names the sender) and sends it back
//! (`send_to`), then receives the next. The buffer holds the largest datagram by default (65,536
//! bytes, where a UDP datagram carries at most 65,507; a Unix datagram socket's send buffer size,
//! when that is larger); a datagram larger than a smaller `--buffer` is not cut silently: the server
//! reports it on stderr and echoes the part that fit.
//!
//! It follows the conventions of `aio`'s serving examples: the first line on stdout is
//! `listening on ENDPOINT (BACKEND)` with the real port, `AIO_BACKEND` picks the backend, bad
//! arguments exit with status 2, and Enter or the end of stdin stops it with status 0, removing the
//! Unix socket file it created.

// Shares the echo servers' command line and stopping; their `announce` is for acceptors.
#[allow(dead_code)]
mod common;

use std::io::{self, Write};
use std::process::ExitCode;
use std::rc::Rc;

use aio::{DatagramSocket, IoBuf, IoService};

const PROGRAM: &str = "udp_echo";

/// Room for the largest datagram: UDP's is 65,507 bytes over IPv4; a Unix datagram socket's is
/// bounded by its send buffer, which is smaller by default.
const DEFAULT_BUFFER: usize = 65_536;

/// Echoes datagrams until the socket is closed or cancelled.
async fn echo(socket: Rc<DatagramSocket>, buffer_size: usize) {
    let mut buffer = vec![0u8; buffer_size];
    loop {
        let (result, buf) = socket.recv_from(buffer).await;
        let meta = match result {
            Ok(meta) => meta,
            Err(e) if aio::is_cancelled(&e) || !socket.is_open() => return,
            Err(e) => {
                // A receive error on a datagram socket (e.g. an ICMP error for an earlier send)
                // concerns one datagram, not the server: report it and go on.
                eprintln!("{PROGRAM}: recv_from: {e}");
                buffer = buf;
                continue;
            }
        };
        if meta.truncated {
            eprintln!(
                "{PROGRAM}: a datagram of {} bytes from {} was truncated to the {} that fit",
                meta.datagram_len, meta.from, meta.len
            );
        }
        let (result, buf) = socket.send_to(buf.slice(..meta.len), &meta.from).await;
        if let Err(e) = result {
            eprintln!("{PROGRAM}: send_to {}: {e}", meta.from);
        }
        buffer = buf.into_inner();
    }
}

/// Prints `listening on ENDPOINT (BACKEND)` and flushes it.
fn announce(svc: &IoService, socket: &DatagramSocket) -> io::Result<()> {
    let endpoint = socket.local_endpoint()?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {endpoint} ({})", svc.backend_name())?;
    out.flush()
}

fn main() -> ExitCode {
    let args = match common::ServerArgs::with_default_buffer(PROGRAM, "", 0) {
        Ok(args) => args,
        Err(status) => return status,
    };
    let svc = match common::service_from_env(PROGRAM) {
        Ok(svc) => svc,
        Err(status) => return status,
    };
    let socket = match DatagramSocket::bind(&svc, &args.endpoint) {
        Ok(socket) => Rc::new(socket),
        Err(e) => {
            eprintln!("{PROGRAM}: cannot bind {}: {e}", args.endpoint);
            return ExitCode::FAILURE;
        }
    };
    // No --buffer: room for the largest datagram, which on a Unix socket is as large as its send
    // buffer allows.
    let buffer_size = match args.buffer_size {
        0 => DEFAULT_BUFFER.max(socket.send_buffer_size().unwrap_or(0)),
        n => n,
    };
    if let Err(e) = announce(&svc, &socket) {
        eprintln!("{PROGRAM}: {e}");
        return ExitCode::FAILURE;
    }
    let stopper = svc.local();
    common::on_enter_or_eof(&svc, move || stopper.stop());
    svc.spawn(echo(socket.clone(), buffer_size));

    let result = svc.run();
    // Closing removes the Unix socket file the bind created; dropping `svc` drops the echo task.
    socket.close();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: the event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

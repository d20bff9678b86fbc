//! What the Rust echo servers of the benchmark share: their command line and how they stop.
//!
//! Every server of the benchmark, in whatever language, is run the same way:
//! `SERVER [ENDPOINT] [--buffer BYTES]`, ENDPOINT being `IP:PORT` or `unix:PATH` (port 0 picks a
//! free port); it prints `listening on ENDPOINT (...)` as its first line, serves each connection
//! with one buffer of BYTES (read what has arrived, write it all back, read again), sets
//! `TCP_NODELAY` on accepted TCP sockets, and stops when stdin reaches EOF (or on SIGTERM). That
//! uniformity is what lets the runner drive them alike.

use std::ffi::OsString;
use std::future::Future;
use std::process::exit;
use std::rc::Rc;

use aio::{Acceptor, Endpoint, IoDevice, IoService, StreamSocket};

/// The parsed command line of an echo server.
pub struct ServerArgs {
    /// `IP:PORT`, `[IPv6]:PORT` or `unix:PATH`.
    pub endpoint: String,
    /// Bytes each connection reads at a time.
    pub buffer: usize,
}

/// Parses `[ENDPOINT] [--buffer BYTES]`; prints the usage and exits with status 2 on bad arguments.
pub fn server_args(program: &str) -> ServerArgs {
    parse(std::env::args_os().skip(1)).unwrap_or_else(|why| {
        eprintln!("{program}: {why}");
        eprintln!("usage: {program} [IP:PORT | unix:PATH] [--buffer BYTES]");
        exit(2)
    })
}

fn parse(args: impl Iterator<Item = OsString>) -> Result<ServerArgs, String> {
    let mut endpoint = None;
    let mut buffer = 1024;
    let mut args = args.map(|a| a.into_string().map_err(|a| format!("{a:?} is not UTF-8")));
    while let Some(arg) = args.next() {
        let arg = arg?;
        if arg == "--buffer" {
            let value = args.next().ok_or("--buffer needs a value")??;
            buffer = match value.parse::<usize>() {
                Ok(n) if (1..=16 << 20).contains(&n) => n,
                _ => return Err(format!("bad --buffer {value:?}")),
            };
        } else if arg.starts_with('-') {
            return Err(format!("unknown option {arg:?}"));
        } else if endpoint.replace(arg).is_some() {
            return Err("only one ENDPOINT".into());
        }
    }
    Ok(ServerArgs {
        endpoint: endpoint.unwrap_or_else(|| "127.0.0.1:8080".into()),
        buffer,
    })
}

/// The aio servers' start: the loop (backend from `AIO_BACKEND`), the listening acceptor announced
/// on stdout, and a stop when stdin reaches EOF (the runner gives a pipe; epoll refuses /dev/null:
/// SIGTERM then). Exits with status 2 on a bad endpoint.
pub fn aio_server(program: &str, endpoint: &str) -> (IoService, Acceptor) {
    let endpoint: Endpoint = endpoint.parse().unwrap_or_else(|e| {
        eprintln!("{program}: {e}");
        exit(2)
    });
    let svc = IoService::from_env().expect("event loop");
    let acceptor = Acceptor::bind(&svc, &endpoint).expect("listen");
    println!(
        "listening on {} ({})",
        acceptor.local_endpoint().expect("local endpoint"),
        svc.backend_name()
    );
    // SAFETY: fd 0 stays open for the whole process; the device goes away with the loop.
    if let Ok(stdin) = unsafe { IoDevice::attach(&svc, 0) } {
        let stopper = svc.local();
        stdin.readable().background().then(move |_| {
            drop(stdin);
            stopper.stop();
        });
    }
    (svc, acceptor)
}

/// The aio callback servers' accept loop: every accepted socket gets `TCP_NODELAY` (where there is
/// such a thing) and goes to `serve` with the scenario's buffer size; stops when the acceptor is
/// closed.
pub fn accept_each(
    program: &'static str,
    acceptor: Rc<Acceptor>,
    buffer: usize,
    serve: fn(Rc<StreamSocket>, usize),
) {
    acceptor.clone().accept().then(move |res| {
        match res {
            Ok((socket, _peer)) => {
                let _ = socket.set_nodelay(true); // fails on Unix sockets: nothing to set there
                serve(Rc::new(socket), buffer);
            }
            Err(e) if aio::is_cancelled(&e) => return,
            Err(e) => eprintln!("{program}: accept: {e}"),
        }
        accept_each(program, acceptor, buffer, serve);
    });
}

/// An aio async server's whole run: its command line, the loop and acceptor, a task accepting (every
/// accepted socket gets `TCP_NODELAY` where there is such a thing, and a task running `serve` with
/// the scenario's buffer size), until stdin reaches EOF.
pub fn run_async_server<Fut>(program: &'static str, serve: fn(StreamSocket, usize) -> Fut)
where
    Fut: Future + 'static,
{
    let args = server_args(program);
    let (svc, acceptor) = aio_server(program, &args.endpoint);
    let acceptor = Rc::new(acceptor);
    let (local, accepting, buffer) = (svc.local(), acceptor.clone(), args.buffer);
    drop(svc.spawn(async move {
        loop {
            match accepting.accept().await {
                Ok((socket, _peer)) => {
                    let _ = socket.set_nodelay(true); // fails on Unix sockets: nothing to set there
                    drop(local.spawn(serve(socket, buffer)));
                }
                Err(e) if aio::is_cancelled(&e) => return,
                Err(e) => eprintln!("{program}: accept: {e}"),
            }
        }
    }));
    svc.run().expect("event loop");
    acceptor.close();
}

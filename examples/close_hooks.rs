//! A customisable socket: the application's code runs right after the library creates a socket and
//! right before it closes it (the Boost.Asio question "customising socket/close syscalls").
//!
//! ```text
//! cargo run --example close_hooks                          # over TCP on 127.0.0.1
//! cargo run --example close_hooks -- unix:/tmp/hooks.sock  # over a Unix socket
//! ```
//!
//! The library opens the socket, the application's `on_open` hook customises it (here: socket
//! options), the library connects it and uses it, the application's `on_close` hook sees it one last
//! time, and the library closes it. The hooks belong to the fd inside the loop, so `on_close` runs
//! whatever closes the socket — here an explicit `close()`, a connect that fails (the library discards
//! the socket), and the event loop going away while a socket still lives — and runs exactly once.
//!
//! The program is a bounded demo: it serves an echo in-process, prints a numbered log of what happened
//! in which order, and exits with status 0 (2 on bad arguments, 1 if a step fails).

use std::cell::Cell;
use std::io;
use std::process::ExitCode;
use std::rc::Rc;

use aio::{Acceptor, Dialer, Endpoint, IoBuf, IoService, SocketHooks, StreamSocket};

const PROGRAM: &str = "close_hooks";
const USAGE: &str = "usage: close_hooks [ENDPOINT]   (where the demo's echo server listens; \
                     default 127.0.0.1:0: TCP on a free port; or unix:PATH)";

/// A numbered log on stdout, shared by the hooks and the program.
#[derive(Clone, Default)]
struct Log(Rc<Cell<usize>>);

impl Log {
    fn line(&self, step: &str, what: impl std::fmt::Display) {
        self.0.set(self.0.get() + 1);
        println!("[{}] {step}: {what}", self.0.get());
    }
}

/// Whether `fd` is open in this process (Linux: its `/proc/self/fd` entry exists).
fn fd_is_open(fd: i32) -> bool {
    std::fs::symlink_metadata(format!("/proc/self/fd/{fd}")).is_ok()
}

/// The application's hooks: options after open, clean-up before close.
fn hooks(log: &Log) -> SocketHooks {
    let (on_open, on_close) = (log.clone(), log.clone());
    SocketHooks::new()
        .on_open(move |socket| {
            use std::os::fd::AsRawFd;
            on_open.line(
                "open",
                format_args!(
                    "fd {} created ({:?}), not yet bound or connected",
                    socket.as_raw_fd(),
                    socket.domain()?
                ),
            );
            socket.set_send_buffer_size(64 * 1024)?;
            let mut set = String::from("SO_SNDBUF=65536");
            if socket.domain()? != aio::socket2::Domain::UNIX {
                socket.set_tcp_nodelay(true)?;
                set.push_str(", TCP_NODELAY");
            }
            on_open.line("set option", set);
            Ok(())
        })
        .on_close(move |socket| {
            use std::os::fd::AsRawFd;
            let fd = socket.as_raw_fd();
            let local = socket
                .local_addr()
                .ok()
                .and_then(|a| Endpoint::from_sock_addr(&a).ok())
                .map_or("unknown".to_owned(), |p| p.to_string());
            on_close.line(
                "before-close",
                format_args!(
                    "fd {fd} still open: {} (local end {local}); cleaning up",
                    fd_is_open(fd)
                ),
            );
        })
}

/// One echo server connection: read once, write it back.
fn serve_one_echo(svc: &IoService, acceptor: Rc<Acceptor>) {
    svc.spawn(async move {
        if let Ok((socket, _)) = acceptor.accept().await {
            let (res, buf) = socket.read_some(vec![0u8; 256]).await;
            if let Ok(n @ 1..) = res {
                let _ = socket.write_all(buf.slice(..n)).await;
            }
        }
    });
}

async fn demo(svc: &IoService, log: &Log, endpoint: &Endpoint) -> io::Result<()> {
    // 1. The whole life of a socket: open, options, connect, use, before-close, closed.
    let socket = StreamSocket::with_hooks(svc, hooks(log));
    socket.connect(endpoint).await?;
    let fd = socket.native().expect("open");
    log.line(
        "connect",
        format_args!(
            "fd {fd} connected to {endpoint} (SO_SNDBUF now {})",
            socket.send_buffer_size()?
        ),
    );
    let (res, _) = socket.write_all(b"hello through hooks".to_vec()).await;
    res?;
    let (res, buf) = socket.read_exact(vec![0u8; 19]).await;
    res?;
    log.line(
        "use",
        format_args!("echoed {:?}", String::from_utf8_lossy(&buf)),
    );
    socket.close();
    log.line("closed", format_args!("fd {fd} open: {}", fd_is_open(fd)));

    // 2. A connect that fails: the library discards the socket, and on_close still runs first.
    let refused = {
        let gone = Acceptor::bind(svc, &"127.0.0.1:0".parse().expect("endpoint"))?;
        gone.local_endpoint()?
    };
    log.line("dial", format_args!("{refused}, where nothing listens"));
    match Dialer::new(svc).hooks(hooks(log)).dial(&refused).await {
        Ok(_) => return Err(io::Error::other("the connect to a closed port succeeded")),
        Err(e) => log.line("closed", format_args!("the dial failed: {e}")),
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let endpoint: Endpoint = match args.as_slice() {
        [] => "127.0.0.1:0".parse().expect("endpoint"),
        [flag] if flag == "-h" || flag == "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        [ep] => match ep.parse() {
            Ok(ep) => ep,
            Err(e) => {
                eprintln!("{PROGRAM}: {e}\n{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{PROGRAM}: too many arguments\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let svc = match IoService::from_env() {
        Ok(svc) => svc,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot start the event loop: {e}");
            return ExitCode::from(2);
        }
    };
    let log = Log::default();
    let acceptor = match Acceptor::bind(&svc, &endpoint) {
        Ok(a) => Rc::new(a),
        Err(e) => {
            eprintln!("{PROGRAM}: cannot listen on {endpoint}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listening = acceptor
        .local_endpoint()
        .expect("a bound acceptor has an endpoint");
    serve_one_echo(&svc, acceptor.clone());
    if let Err(e) = svc.block_on(demo(&svc, &log, &listening)) {
        eprintln!("{PROGRAM}: {e}");
        return ExitCode::FAILURE;
    }

    // 3. The event loop goes away while a socket lives: its fd closes then, hook first.
    let socket = StreamSocket::with_hooks(&svc, hooks(&log));
    if let Err(e) = svc.block_on(socket.connect(&listening)) {
        eprintln!("{PROGRAM}: {e}");
        return ExitCode::FAILURE;
    }
    let fd = socket.native().expect("open");
    log.line("drop", "the IoService, while the socket still lives");
    drop(svc);
    log.line(
        "closed",
        format_args!(
            "fd {fd} open: {}; socket.is_open(): {}",
            fd_is_open(fd),
            socket.is_open()
        ),
    );
    drop(socket); // the hook does not run again
    drop(acceptor); // removes a Unix socket file it created
    ExitCode::SUCCESS
}

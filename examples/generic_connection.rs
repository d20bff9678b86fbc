//! One connection type for TCP and Unix sockets, chosen at run time from one string (the Asio
//! question "Overloadable basic_stream_socket": no template, no virtual functions).
//!
//! ```text
//! cargo run --example generic_connection                        # demo: TCP v4, v6, Unix, localhost
//! cargo run --example generic_connection -- unix:/tmp/g.sock    # serve and talk on one endpoint
//! cargo run --example generic_connection -- --connect localhost:8080   # talk to an external
//!                                                               # echo server (e.g. echo_server)
//! ```
//!
//! [`Connection`] holds a `StreamSocket`, which is the same type for TCP and Unix, and is opened
//! from a target string by `StreamSocket::dial_host`: `IP:PORT`, `[IPv6]:PORT`, `unix:PATH`,
//! `unix:@NAME`, or `HOST:PORT` (the name resolved off the loop's thread, each address tried in
//! turn). Nothing in `Connection` knows which kind of socket it has.
//!
//! By default (or given an ENDPOINT) the program starts an echo server of its own on each endpoint,
//! talks to it through the same `Connection` code, prints one line per endpoint and exits with status
//! 0; with `--connect TARGET` it talks to a server elsewhere. Every run is bounded (10 seconds at
//! most); bad arguments exit with status 2, a failed exchange with status 1.

use std::io;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use aio::{Acceptor, Endpoint, IoBuf, IoService, LocalHandle, StreamSocket};

const PROGRAM: &str = "generic_connection";
const USAGE: &str = "usage: generic_connection [ENDPOINT | --connect TARGET]\n\
    ENDPOINT          serve an echo on it in-process and talk to it: IP:PORT, [IPv6]:PORT, unix:PATH, unix:@NAME\n\
    --connect TARGET  talk to an echo server elsewhere: HOST:PORT or any ENDPOINT\n\
    (no argument: a demo over TCP IPv4, IPv6, a Unix socket and localhost:PORT)";
/// The longest a run may take.
const TIME_LIMIT: Duration = Duration::from_secs(10);

/// A connection to a peer, over whatever transport its target string named.
struct Connection {
    socket: StreamSocket,
    target: String,
}

impl Connection {
    async fn open(svc: &LocalHandle, target: &str) -> io::Result<Connection> {
        let socket = StreamSocket::dial_host(svc, target).await?;
        Ok(Connection {
            socket,
            target: target.to_owned(),
        })
    }

    /// Sends `message` and reads back as many bytes (the peer echoes).
    async fn exchange(&self, message: &str) -> io::Result<String> {
        let (res, _) = self.socket.write_all(message.as_bytes().to_vec()).await;
        res?;
        let (res, buf) = self.socket.read_exact(vec![0u8; message.len()]).await;
        res?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }

    fn describe(&self) -> String {
        let kind = match self.socket.peer_endpoint() {
            Ok(Endpoint::Ip(addr)) if addr.is_ipv4() => "TCP/IPv4",
            Ok(Endpoint::Ip(_)) => "TCP/IPv6",
            Ok(_) => "Unix",
            Err(_) => "unknown",
        };
        let peer = self
            .socket
            .peer_endpoint()
            .map_or_else(|e| e.to_string(), |p| p.to_string());
        format!("{} ({kind}, peer {peer})", self.target)
    }
}

/// The client side: the same code for every target.
async fn talk(svc: LocalHandle, target: String) -> io::Result<()> {
    let connection = Connection::open(&svc, &target).await?;
    let message = format!("hello over {target}");
    let reply = connection.exchange(&message).await?;
    if reply != message {
        return Err(io::Error::other(format!(
            "{target}: the echo differs: {reply:?}"
        )));
    }
    println!("{}: echoed {reply:?}", connection.describe());
    Ok(())
}

/// An echo server on `endpoint`, on the same loop; returns the target string that reaches it.
fn serve(svc: &IoService, endpoint: &Endpoint) -> io::Result<(String, Rc<Acceptor>)> {
    let acceptor = Rc::new(
        Acceptor::bind(svc, endpoint)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {endpoint}: {e}")))?,
    );
    let target = acceptor.local_endpoint()?.to_string();
    let server = acceptor.clone();
    let handle = svc.local();
    svc.spawn(async move {
        while let Ok((socket, _)) = server.accept().await {
            handle.spawn(async move {
                let mut buf = vec![0u8; 4096];
                loop {
                    let (res, b) = socket.read_some(buf).await;
                    let Ok(n @ 1..) = res else { return };
                    let (res, b) = socket.write_all(b.slice(..n)).await;
                    if res.is_err() {
                        return;
                    }
                    buf = b.into_inner();
                }
            });
        }
    });
    Ok((target, acceptor))
}

enum Mode {
    Demo,
    Serve(Endpoint),
    Connect(String),
}

fn parse_args() -> Result<Mode, String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => Ok(Mode::Demo),
        ["--connect", target] => Ok(Mode::Connect((*target).to_owned())),
        ["--connect"] => Err("--connect needs a TARGET".to_owned()),
        [arg] if arg.starts_with('-') => Err(format!("unknown option {arg:?}")),
        [endpoint] => endpoint
            .parse()
            .map(Mode::Serve)
            .map_err(|e: io::Error| e.to_string()),
        _ => Err("too many arguments".to_owned()),
    }
}

fn main() -> ExitCode {
    if std::env::args().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let mode = match parse_args() {
        Ok(mode) => mode,
        Err(why) => {
            eprintln!("{PROGRAM}: {why}\n{USAGE}");
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
    let mut servers = Vec::new();
    let mut targets = Vec::new();
    let mut setup = || -> io::Result<()> {
        match &mode {
            Mode::Connect(target) => targets.push(target.clone()),
            Mode::Serve(endpoint) => {
                let (target, acceptor) = serve(&svc, endpoint)?;
                targets.push(target);
                servers.push(acceptor);
            }
            Mode::Demo => {
                let dir = std::env::temp_dir();
                let path = dir.join(format!("{PROGRAM}-{}.sock", std::process::id()));
                let mut endpoints = vec!["127.0.0.1:0".parse()?, Endpoint::unix(path)];
                if std::net::TcpListener::bind("[::1]:0").is_ok() {
                    endpoints.insert(1, "[::1]:0".parse()?);
                }
                for endpoint in &endpoints {
                    let (target, acceptor) = serve(&svc, endpoint)?;
                    targets.push(target);
                    servers.push(acceptor);
                }
                // A host name, resolved off the loop, reaching the first (IPv4) server.
                let port = servers[0].local_endpoint()?.port().unwrap_or(0);
                targets.push(format!("localhost:{port}"));
            }
        }
        Ok(())
    };
    if let Err(e) = setup() {
        eprintln!("{PROGRAM}: {e}");
        return ExitCode::FAILURE;
    }

    let handle = svc.local();
    let result = svc.block_on(async move {
        let timeout = handle.after(TIME_LIMIT);
        let all = async {
            for target in targets {
                talk(handle.clone(), target.clone())
                    .await
                    .map_err(|e| io::Error::new(e.kind(), format!("{target}: {e}")))?;
            }
            Ok(())
        };
        first_of(all, async {
            let _ = timeout.await;
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {TIME_LIMIT:?}"),
            ))
        })
        .await
    });
    // Closing the acceptors removes the Unix socket file.
    for server in &servers {
        server.close();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Whichever of two futures finishes first.
async fn first_of<T>(a: impl Future<Output = T>, b: impl Future<Output = T>) -> T {
    let (mut a, mut b) = (std::pin::pin!(a), std::pin::pin!(b));
    std::future::poll_fn(|cx| {
        if let std::task::Poll::Ready(out) = a.as_mut().poll(cx) {
            return std::task::Poll::Ready(out);
        }
        b.as_mut().poll(cx)
    })
    .await
}

//! An HTTP server: hyper on aio, HTTP/1.1 (keep-alive, pipelining) and HTTP/2 over cleartext with
//! prior knowledge (h2c) on the same port; each connection's protocol is told by its first bytes
//! (hyper-util's `auto` builder).
//!
//! ```text
//! cargo run --features hyper --example http_server -- 127.0.0.1:0
//! curl http://127.0.0.1:PORT/
//! curl --http2-prior-knowledge --data-binary @file http://127.0.0.1:PORT/echo
//! ```
//!
//! Routes: `GET /` answers `Hello, World!` (text/plain); `POST /echo` streams the request body
//! back as it arrives; anything else is 404. Sockets are aio's, wrapped in `aio::compat::Io` for
//! hyper; hyper's tasks (HTTP/2 streams) run on the same loop through `LocalExec`, its timeouts on
//! the loop's timers through `LoopTimer`. Arguments, the `listening on` line, `AIO_BACKEND` and
//! stopping (Enter or the end of stdin, status 0) follow the other servers.

#[allow(dead_code)] // each example uses part of the shared module
mod common;

use std::convert::Infallible;
use std::ffi::OsString;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::server::conn::auto;

use aio::compat::{LocalExec, LoopTimer};
use aio::{Acceptor, Endpoint, LocalHandle};

const PROGRAM: &str = "http_server";
const USAGE: &str = "usage: http_server [ENDPOINT]";
const HELP: &str = "\
ENDPOINT     where to listen: IP:PORT, [IPv6]:PORT, unix:PATH or unix:@NAME
             (default 127.0.0.1:8080; port 0 picks a free port)
AIO_BACKEND  environment variable choosing the backend: epoll (default), poll or uring

Serves HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on the same port:
  GET /        200 `Hello, World!` (text/plain)
  POST /echo   200 with the request body streamed back
  otherwise    404
Prints `listening on ENDPOINT (BACKEND)` once ready; stops when Enter is pressed or stdin ends.";

/// How long a client may take to send a request's headers before its connection is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

type Body = Either<Full<Bytes>, Incoming>;

fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from_static(body.as_bytes()))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    res
}

async fn route(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => text(StatusCode::OK, "Hello, World!"),
        (&Method::POST, "/echo") => {
            // The body goes back frame by frame as it arrives: nothing is collected.
            let mut res = Response::new(Either::Right(req.into_body()));
            res.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/octet-stream"),
            );
            res
        }
        _ => text(StatusCode::NOT_FOUND, "Not Found\n"),
    })
}

/// Accepts connections until the acceptor is closed; each is served by a task of the loop.
async fn accept_loop(svc: LocalHandle, acceptor: Rc<Acceptor>) {
    let mut builder = auto::Builder::new(LocalExec);
    builder
        .http1()
        .timer(LoopTimer::new(&svc))
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(true)
        .pipeline_flush(true);
    builder.http2().timer(LoopTimer::new(&svc));
    let builder = Rc::new(builder);
    loop {
        match acceptor.accept().await {
            Ok((socket, _peer)) => {
                let _ = socket.set_nodelay(true); // TCP only; a Unix socket has no Nagle
                let builder = builder.clone();
                svc.spawn(async move {
                    let service = hyper::service::service_fn(route);
                    if let Err(e) = builder.serve_connection(socket.compat(), service).await {
                        // A client that goes away mid-request is no reason to stop the server.
                        eprintln!("{PROGRAM}: connection: {e}");
                    }
                });
            }
            Err(e) if aio::is_cancelled(&e) || !acceptor.is_open() => return,
            // e.g. out of file descriptors: report it and accept again (aio backs off by itself).
            Err(e) => eprintln!("{PROGRAM}: accept: {e}"),
        }
    }
}

/// `Ok(None)` means `--help`.
fn parse(args: impl Iterator<Item = OsString>) -> Result<Option<Endpoint>, String> {
    let mut endpoint = None;
    for arg in args {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))?;
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        } else if arg.starts_with('-') {
            return Err(format!("unknown option {arg:?}"));
        } else if endpoint.is_some() {
            return Err(format!("unexpected argument {arg:?} (only one ENDPOINT)"));
        } else {
            endpoint = Some(arg.parse::<Endpoint>().map_err(|e| e.to_string())?);
        }
    }
    match endpoint {
        Some(ep) => Ok(Some(ep)),
        None => common::DEFAULT_ENDPOINT
            .parse()
            .map(Some)
            .map_err(|e: std::io::Error| e.to_string()),
    }
}

fn main() -> ExitCode {
    let endpoint =
        match common::parsed_or_exit(PROGRAM, USAGE, HELP, parse(std::env::args_os().skip(1))) {
            Ok(endpoint) => endpoint,
            Err(status) => return status,
        };
    let svc = match common::service_from_env(PROGRAM) {
        Ok(svc) => svc,
        Err(status) => return status,
    };
    let acceptor = match Acceptor::bind(&svc, &endpoint) {
        Ok(acceptor) => Rc::new(acceptor),
        Err(e) => {
            eprintln!("{PROGRAM}: cannot listen on {endpoint}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = common::announce(&svc, &acceptor) {
        eprintln!("{PROGRAM}: {e}");
        return ExitCode::FAILURE;
    }

    let stopper = svc.local();
    common::on_enter_or_eof(&svc, move || stopper.stop());
    svc.spawn(accept_loop(svc.local(), acceptor.clone()));

    // Runs until `stop()`: Enter or the end of stdin.
    let result = svc.run();

    // Close the listener (removing a Unix socket file it created); dropping `svc` afterwards drops
    // every connection's task, closing its socket.
    acceptor.close();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: the event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

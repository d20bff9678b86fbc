//! An HTTP client: hyper's HTTP/1.1 client on aio, one GET.
//!
//! ```text
//! cargo run --features hyper --example http_client -- http://127.0.0.1:8080/ [-o FILE]
//! ```
//!
//! Prints the status line on stderr and the body on stdout (or into FILE with `-o`), as it
//! arrives. Exits 0 on a 2xx status, 1 on any other status or an error (the message says what went
//! wrong), 2 on bad usage. A host name is resolved off the loop, on its blocking pool
//! (`StreamSocket::dial_host`), and each address tried in turn. Only `http://` URLs: aio has no TLS
//! yet.

#[allow(dead_code)] // each example uses part of the shared module
mod common;

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::Uri;

use aio::{LocalHandle, StreamSocket};

const PROGRAM: &str = "http_client";
const USAGE: &str = "usage: http_client URL [-o FILE]";
const HELP: &str = "\
URL          http://HOST[:PORT]/PATH (HOST a name, an IPv4 address or [IPv6])
-o FILE      write the body into FILE instead of stdout
AIO_BACKEND  environment variable choosing the backend: epoll (default), poll or uring

Prints the status line on stderr; exits 0 on 2xx, 1 on any other status or an error.";

struct Args {
    url: Uri,
    output: Option<OsString>,
}

/// `Ok(None)` means `--help`.
fn parse(args: impl Iterator<Item = OsString>) -> Result<Option<Args>, String> {
    let mut url = None;
    let mut output = None;
    let mut args = args;
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        } else if arg == "-o" {
            output = Some(args.next().ok_or("-o needs a FILE")?);
        } else if arg.to_string_lossy().starts_with('-') {
            return Err(format!("unknown option {arg:?}"));
        } else if url.is_some() {
            return Err(format!("unexpected argument {arg:?} (only one URL)"));
        } else {
            let text = arg
                .into_string()
                .map_err(|a| format!("URL {a:?} is not valid UTF-8"))?;
            let uri: Uri = text
                .parse()
                .map_err(|e| format!("invalid URL {text:?}: {e}"))?;
            match uri.scheme_str() {
                Some("http") => {}
                Some("https") => {
                    return Err(format!(
                        "{text}: https is not supported (no TLS); use http://"
                    ));
                }
                _ => {
                    return Err(format!(
                        "invalid URL {text:?}: expected http://HOST[:PORT]/PATH"
                    ));
                }
            }
            if uri.host().is_none_or(str::is_empty) {
                return Err(format!("invalid URL {text:?}: no host"));
            }
            url = Some(uri);
        }
    }
    match url {
        Some(url) => Ok(Some(Args { url, output })),
        None => Err("a URL is needed".into()),
    }
}

/// Fetches `url`, writing the body into `out`; the status code.
async fn fetch(svc: LocalHandle, url: Uri, out: &mut dyn Write) -> Result<u16, String> {
    let host = url.host().unwrap_or_default();
    let port = url.port_u16().unwrap_or(80);
    // `[::1]` stays bracketed in the target: dial_host takes HOST:PORT as a URL writes it.
    let target = format!("{host}:{port}");
    let socket = StreamSocket::dial_host(&svc, &target)
        .await
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    let _ = socket.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(socket.compat())
        .await
        .map_err(|e| format!("{target}: HTTP handshake: {e}"))?;
    svc.spawn(async move {
        if let Err(e) = conn.await {
            eprintln!("{PROGRAM}: connection: {e}");
        }
    });
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::USER_AGENT, "aio-http-client")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let mut res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = res.status();
    eprintln!(
        "{:?} {} {}",
        res.version(),
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    // The body as it arrives, frame by frame. Writing blocks the loop for as long as the output
    // takes: this program has nothing else to do meanwhile.
    while let Some(frame) = res.frame().await {
        let frame = frame.map_err(|e| format!("reading the body of {url}: {e}"))?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)
                .map_err(|e| format!("writing the body: {e}"))?;
        }
    }
    out.flush().map_err(|e| format!("writing the body: {e}"))?;
    Ok(status.as_u16())
}

fn main() -> ExitCode {
    let args =
        match common::parsed_or_exit(PROGRAM, USAGE, HELP, parse(std::env::args_os().skip(1))) {
            Ok(args) => args,
            Err(status) => return status,
        };
    let svc = match common::service_from_env(PROGRAM) {
        Ok(svc) => svc,
        Err(status) => return status,
    };
    let mut out: Box<dyn Write> = match &args.output {
        Some(path) => match File::create(path) {
            Ok(file) => Box::new(io::BufWriter::new(file)),
            Err(e) => {
                eprintln!("{PROGRAM}: cannot create {}: {e}", path.to_string_lossy());
                return ExitCode::FAILURE;
            }
        },
        None => Box::new(io::stdout().lock()),
    };
    match svc.block_on(fetch(svc.local(), args.url, &mut *out)) {
        Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(why) => {
            eprintln!("{PROGRAM}: {why}");
            ExitCode::FAILURE
        }
    }
}

//! hyper 1.x on aio (feature `hyper`): HTTP/1.1 and HTTP/2 (prior knowledge) servers and clients
//! on one loop over loopback, with aio's executor and timer; hyper's timeouts really fire (a silent
//! connection is closed after the header-read timeout, HTTP/2 keep-alive pings are sent).

use std::convert::Infallible;
use std::io;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

use aio::compat::{LocalExec, LoopTimer};
use aio::{Acceptor, Endpoint, IoService, LocalHandle, StreamSocket};

type Body = Either<Full<Bytes>, Incoming>;

/// GET / → `Hello, World!`; POST /echo → the request body streamed back; else 404.
async fn route(req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let res = match (req.method().as_str(), req.uri().path()) {
        ("GET", "/") => Response::new(Either::Left(Full::new(Bytes::from("Hello, World!")))),
        ("POST", "/echo") => Response::new(Either::Right(req.into_body())),
        _ => {
            let mut res = Response::new(Either::Left(Full::new(Bytes::new())));
            *res.status_mut() = StatusCode::NOT_FOUND;
            res
        }
    };
    Ok(res)
}

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    Http1,
    Http2,
}

/// Serves every connection `acceptor` takes, with `proto`, in tasks of the loop.
fn serve(svc: &IoService, acceptor: Acceptor, proto: Proto) {
    let local = svc.local();
    svc.spawn_background(async move {
        loop {
            let Ok((socket, _)) = acceptor.accept().await else {
                return;
            };
            let service = hyper::service::service_fn(route);
            local.spawn_background(async move {
                let io = socket.compat();
                let _ = match proto {
                    Proto::Http1 => {
                        hyper::server::conn::http1::Builder::new()
                            .timer(LoopTimer::current())
                            .serve_connection(io, service)
                            .await
                    }
                    Proto::Http2 => {
                        hyper::server::conn::http2::Builder::new(LocalExec)
                            .timer(LoopTimer::current())
                            .serve_connection(io, service)
                            .await
                    }
                };
            });
        }
    });
}

fn listen(svc: &IoService) -> (Acceptor, Endpoint) {
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = acceptor.local_endpoint().unwrap();
    (acceptor, addr)
}

/// Status and body of each request in turn, over one connection.
async fn client_calls(
    svc: LocalHandle,
    addr: Endpoint,
    proto: Proto,
    requests: Vec<Request<Full<Bytes>>>,
) -> io::Result<Vec<(StatusCode, Bytes)>> {
    let socket = StreamSocket::dial(&svc, &addr).await?;
    let io = socket.compat();
    let mut out = Vec::new();
    macro_rules! run_all {
        ($sender:expr) => {
            for req in requests {
                let res = $sender.send_request(req).await.map_err(io::Error::other)?;
                let status = res.status();
                let body = res.into_body().collect().await.map_err(io::Error::other)?;
                out.push((status, body.to_bytes()));
            }
        };
    }
    match proto {
        Proto::Http1 => {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(io::Error::other)?;
            svc.spawn(conn);
            run_all!(sender);
        }
        Proto::Http2 => {
            let (mut sender, conn) = hyper::client::conn::http2::Builder::new(LocalExec)
                .timer(LoopTimer::new(&svc))
                .handshake(io)
                .await
                .map_err(io::Error::other)?;
            svc.spawn(conn);
            run_all!(sender);
        }
    }
    Ok(out)
}

fn requests(big: &Bytes) -> Vec<Request<Full<Bytes>>> {
    let get = |path: &str| {
        Request::get(format!("http://localhost{path}"))
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    vec![
        get("/"),
        Request::post("http://localhost/echo")
            .header("host", "localhost")
            .body(Full::new(big.clone()))
            .unwrap(),
        get("/missing"),
    ]
}

fn serve_and_call(svc: &IoService, proto: Proto) {
    let (acceptor, addr) = listen(svc);
    serve(svc, acceptor, proto);
    let big = Bytes::from(crate::util::pattern(1 << 20, 5));
    let got = svc
        .block_on(client_calls(svc.local(), addr, proto, requests(&big)))
        .unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].0, StatusCode::OK);
    assert_eq!(&got[0].1[..], b"Hello, World!");
    assert_eq!(got[1].0, StatusCode::OK);
    crate::util::assert_same_bytes(&got[1].1, &big);
    assert_eq!(got[2].0, StatusCode::NOT_FOUND);
}

matrix_test!(http1_server_and_client_on_one_loop, |svc| {
    serve_and_call(svc, Proto::Http1);
});

matrix_test!(http2_prior_knowledge_server_and_client_on_one_loop, |svc| {
    serve_and_call(svc, Proto::Http2);
});

matrix_test!(
    a_silent_connection_is_closed_after_the_header_read_timeout,
    |svc| {
        let (acceptor, addr) = listen(svc);
        let local = svc.local();
        svc.spawn_background(async move {
            let (socket, _) = acceptor.accept().await.unwrap();
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(LoopTimer::new(&local))
                .header_read_timeout(Duration::from_millis(200))
                .serve_connection(socket.compat(), hyper::service::service_fn(route))
                .await;
        });
        let started = Instant::now();
        let closed = svc.block_on({
            let svc = svc.local();
            async move {
                let socket = StreamSocket::dial(&svc, &addr).await?;
                // Half a request line, then silence.
                let (res, _) = socket.write_all(b"GET / HT".to_vec()).await;
                res?;
                let (res, _) = socket.read_some(vec![0u8; 1024]).await;
                Ok::<_, io::Error>(res)
            }
        });
        let elapsed = started.elapsed();
        // Closed: the end of stream (or a reset), without a response; not before the timeout.
        match closed.unwrap() {
            Ok(n) => assert_eq!(n, 0, "a response came instead of a close"),
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
        }
        assert!(
            elapsed >= Duration::from_millis(190),
            "closed after {elapsed:?}"
        );
        assert!(
            elapsed < Duration::from_secs(10),
            "closed after {elapsed:?}"
        );
    }
);

matrix_test!(
    http2_keep_alive_pings_are_sent_on_a_quiet_connection,
    |svc| {
        let (acceptor, addr) = listen(svc);
        svc.spawn_background(async move {
            let (socket, _) = acceptor.accept().await.unwrap();
            let _ = hyper::server::conn::http2::Builder::new(LocalExec)
                .timer(LoopTimer::current())
                .keep_alive_interval(Duration::from_millis(100))
                .keep_alive_timeout(Duration::from_secs(5))
                .serve_connection(socket.compat(), hyper::service::service_fn(route))
                .await;
        });
        // A raw HTTP/2 client: the preface and an empty SETTINGS frame, then only listening.
        let ping = svc.block_on({
            let svc = svc.local();
            async move {
                let socket = StreamSocket::dial(&svc, &addr).await?;
                let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                hello.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
                let (res, _) = socket.write_all(hello).await;
                res?;
                loop {
                    let (res, header) = socket.read_exact(vec![0u8; 9]).await;
                    res?;
                    let len = usize::from(header[0]) << 16
                        | usize::from(header[1]) << 8
                        | usize::from(header[2]);
                    let (kind, flags) = (header[3], header[4]);
                    if len > 0 {
                        let (res, _) = socket.read_exact(vec![0u8; len]).await;
                        res?;
                    }
                    if kind == 0x6 && flags & 0x1 == 0 {
                        return Ok::<_, io::Error>(len);
                    }
                }
            }
        });
        assert_eq!(ping.unwrap(), 8, "a PING frame carries 8 bytes");
    }
);

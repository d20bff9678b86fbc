//! [`Dialer`]: opening stream connections with [`SocketHooks`], to an endpoint, to the first of several
//! endpoints that accepts, or to a host name resolved off the loop's thread.
//!
//! Boost.Asio's free `async_connect(socket, resolver_results)` tries each resolved endpoint in turn;
//! here [`dial_any`](Dialer::dial_any) and [`dial_host`](Dialer::dial_host) do the same, closing each
//! socket that failed (its `on_close` hook runs) before opening the next, and report every failure when
//! none connects.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use crate::LocalHandle;
use crate::net::endpoint::Endpoint;
use crate::net::hooks::SocketHooks;
use crate::net::stream::StreamSocket;
use crate::op::{Dial, DialAny, Op};

/// Opens stream connections on a loop, each socket with the dialer's [`SocketHooks`].
///
/// ```
/// use std::cell::Cell;
/// use std::rc::Rc;
/// use aio::{Acceptor, Dialer, IoService, SocketHooks};
/// let svc = IoService::new()?;
/// let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
/// let opened = Rc::new(Cell::new(0));
/// let dialer = Dialer::new(&svc).hooks(SocketHooks::new().on_open({
///     let opened = opened.clone();
///     move |socket| {
///         opened.set(opened.get() + 1);
///         socket.set_tcp_nodelay(true)
///     }
/// }));
/// let port = acceptor.local_endpoint()?.port().unwrap();
/// let socket = svc.block_on(dialer.dial_host(&format!("localhost:{port}")))?;
/// assert!(socket.nodelay()? && opened.get() >= 1);
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Dialer {
    svc: LocalHandle,
    hooks: SocketHooks,
}

impl Dialer {
    /// A dialer without hooks.
    pub fn new(svc: &LocalHandle) -> Dialer {
        Dialer {
            svc: svc.clone(),
            hooks: SocketHooks::default(),
        }
    }

    /// Gives every socket this dialer opens `hooks`.
    pub fn hooks(mut self, hooks: SocketHooks) -> Dialer {
        self.hooks = hooks;
        self
    }

    /// Opens a socket for `endpoint`'s family and connects it, as
    /// [`StreamSocket::dial`](crate::StreamSocket::dial); if the connect fails, the socket is closed
    /// (running `on_close`).
    pub fn dial(&self, endpoint: &Endpoint) -> Op<Dial> {
        StreamSocket::dial_with(&self.svc, endpoint, self.hooks.clone())
    }

    /// Tries each endpoint in order, as [`StreamSocket::dial_any`](crate::StreamSocket::dial_any).
    pub fn dial_any(&self, endpoints: impl IntoIterator<Item = Endpoint>) -> Op<DialAny> {
        let endpoints: Vec<Endpoint> = endpoints.into_iter().collect();
        let label = match endpoints.as_slice() {
            [one] => one.to_string(),
            all => format!(
                "any of [{}]",
                all.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let (svc, hooks) = (self.svc.clone(), self.hooks.clone());
        DialAny::start(&self.svc, async move {
            dial_in_order(&svc, &hooks, &label, endpoints).await
        })
    }

    /// Connects to `HOST:PORT` or an endpoint string, as
    /// [`StreamSocket::dial_host`](crate::StreamSocket::dial_host).
    pub fn dial_host(&self, target: &str) -> Op<DialAny> {
        match parse_target(target) {
            Ok(Target::Endpoint(endpoint)) => self.dial_any([endpoint]),
            Ok(Target::Host(host, port)) => {
                let (svc, hooks) = (self.svc.clone(), self.hooks.clone());
                let label = target.to_owned();
                DialAny::start(&self.svc, async move {
                    let addrs = resolve(&svc, host, port).await?;
                    let endpoints = addrs.into_iter().map(Endpoint::Ip).collect();
                    dial_in_order(&svc, &hooks, &label, endpoints).await
                })
            }
            Err(e) => DialAny::failed(&self.svc, e),
        }
    }
}

/// What a connect target string names.
enum Target {
    Endpoint(Endpoint),
    Host(String, u16),
}

fn parse_target(target: &str) -> io::Result<Target> {
    if target.starts_with("unix:") {
        return target.parse().map(Target::Endpoint);
    }
    if let Ok(endpoint) = target.parse() {
        return Ok(Target::Endpoint(endpoint));
    }
    let invalid = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid connect target {target:?}: {why}"),
        )
    };
    let Some((host, port)) = target.rsplit_once(':') else {
        return Err(invalid("missing port (expected HOST:PORT)"));
    };
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err(invalid("empty host name"));
    }
    let Ok(port) = port.parse::<u16>() else {
        return Err(invalid(
            "the port is not a number from 0 to 65535 (expected HOST:PORT, IP:PORT, [IPv6]:PORT, unix:PATH or unix:@NAME)",
        ));
    };
    Ok(Target::Host(host.to_owned(), port))
}

/// Resolves `host` on a blocking thread (getaddrinfo blocks).
async fn resolve(svc: &LocalHandle, host: String, port: u16) -> io::Result<Vec<SocketAddr>> {
    let name = host.clone();
    let looked_up = svc
        .spawn_blocking(move || {
            (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>)
        })
        .await?;
    match looked_up {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot resolve host {host:?}: no addresses"),
        )),
        Err(e) => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot resolve host {host:?}: {e}"),
        )),
    }
}

/// Dials each endpoint in turn; the first that connects wins. Fails with every failure listed.
async fn dial_in_order(
    svc: &LocalHandle,
    hooks: &SocketHooks,
    label: &str,
    endpoints: Vec<Endpoint>,
) -> io::Result<StreamSocket> {
    let mut failures: Vec<(Endpoint, io::Error)> = Vec::new();
    for endpoint in endpoints {
        match StreamSocket::dial_with(svc, &endpoint, hooks.clone()).await {
            Ok(socket) => return Ok(socket),
            Err(e) => failures.push((endpoint, e)),
        }
    }
    if let [(endpoint, _)] = failures.as_slice() {
        if endpoint.to_string() == label {
            // Its message names the endpoint already.
            return Err(failures.pop().expect("one failure").1);
        }
    }
    let Some(kind) = failures.last().map(|(_, e)| e.kind()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("connect to {label}: no endpoints to try"),
        ));
    };
    let list: Vec<String> = failures
        .iter()
        .map(|(endpoint, e)| {
            let (e, ep) = (e.to_string(), endpoint.to_string());
            if e.contains(&ep) {
                e
            } else {
                format!("{ep}: {e}")
            }
        })
        .collect();
    Err(io::Error::new(
        kind,
        format!(
            "connect to {label} failed; addresses tried: {}",
            list.join("; ")
        ),
    ))
}

//! [`Dialer`]: opening stream connections with [`SocketHooks`], to an endpoint, to the first of several
//! endpoints that accepts, or to a host name resolved off the loop's thread.
//!
//! Boost.Asio's free `async_connect(socket, resolver_results)` tries each resolved endpoint in turn;
//! here [`dial_any`](Dialer::dial_any) and [`dial_host`](Dialer::dial_host) do the same, closing each
//! socket that failed (its `on_close` hook runs) before opening the next, and report every failure when
//! none connects.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use crate::LocalHandle;
use crate::endpoint::Endpoint;
use crate::net::hooks::SocketHooks;
use crate::net::stream::StreamSocket;
use crate::op::{Connect, Cx, Interest, Op, Operation};
use crate::reactor::registry::OwnedSource;
use crate::reactor::remote::Remote;
use crate::reactor::{Reactor, Token};

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
    #[must_use = "the dialer is a new value: keep it"]
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

impl StreamSocket {
    /// Opens a socket and connects it to `endpoint` (TCP or Unix, by the endpoint's family). If the
    /// connect fails, the socket is closed. [`Dialer`] does the same with [`SocketHooks`].
    pub fn dial(svc: &LocalHandle, endpoint: &Endpoint) -> Op<Dial> {
        StreamSocket::dial_with(svc, endpoint, SocketHooks::default())
    }

    pub(crate) fn dial_with(
        svc: &LocalHandle,
        endpoint: &Endpoint,
        hooks: SocketHooks,
    ) -> Op<Dial> {
        let socket = StreamSocket::with_hooks(svc, hooks);
        let prepared = endpoint.to_sock_addr().and_then(|addr| {
            socket.open(endpoint.family())?;
            Ok(addr)
        });
        let token = socket.core.token();
        match prepared {
            Ok(addr) => Op::new(
                svc.reactor(),
                token,
                Dial::new(socket, Connect::new(endpoint.clone(), addr)),
            ),
            Err(e) => Op::failed(
                svc.reactor(),
                Dial::new(socket, Connect::unprepared(endpoint.clone())),
                e,
            ),
        }
    }

    /// Tries each endpoint in order and completes with the first socket that connects; if none does,
    /// with an error that lists every endpoint tried and why it failed (its kind is the last
    /// failure's). Sockets that failed are closed before the next endpoint is tried.
    ///
    /// ```
    /// use aio::{Acceptor, Endpoint, IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
    /// let closed: Endpoint = {
    ///     let gone = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
    ///     gone.local_endpoint()? // closed when `gone` drops
    /// };
    /// let socket = svc.block_on(StreamSocket::dial_any(&svc, vec![closed, acceptor.local_endpoint()?]))?;
    /// assert_eq!(socket.peer_endpoint()?, acceptor.local_endpoint()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn dial_any(
        svc: &LocalHandle,
        endpoints: impl IntoIterator<Item = Endpoint>,
    ) -> Op<DialAny> {
        Dialer::new(svc).dial_any(endpoints)
    }

    /// Connects to `target`: `HOST:PORT` (a host name, resolved off the loop's thread, every address
    /// tried in order as by [`dial_any`](StreamSocket::dial_any)), or anything [`Endpoint`] parses
    /// (`IP:PORT`, `[IPv6]:PORT`, `unix:PATH`, `unix:@NAME`), dialled directly. So one configuration
    /// string picks TCP or Unix at run time and one code path serves both.
    ///
    /// A host that does not resolve is a `NotFound` error naming it; a malformed target (no port) an
    /// `InvalidInput` error quoting it.
    ///
    /// ```
    /// use aio::{Acceptor, IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
    /// let port = acceptor.local_endpoint()?.port().unwrap();
    /// let socket = svc.block_on(StreamSocket::dial_host(&svc, &format!("localhost:{port}")))?;
    /// assert_eq!(socket.peer_endpoint()?.port(), Some(port));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn dial_host(svc: &LocalHandle, target: &str) -> Op<DialAny> {
        Dialer::new(svc).dial_host(target)
    }
}

/// Opens a socket for an endpoint's family and connects it. Made by
/// [`StreamSocket::dial`](crate::StreamSocket::dial).
#[derive(Debug)]
pub struct Dial {
    socket: StreamSocket,
    connect: Connect,
}

impl Dial {
    pub(crate) fn new(socket: StreamSocket, connect: Connect) -> Dial {
        Dial { socket, connect }
    }
}

impl Operation for Dial {
    type Output = io::Result<StreamSocket>;
    type Value = ();

    fn interest(&self) -> Interest {
        Interest::Write
    }

    fn needs_ready(&self) -> bool {
        self.connect.needs_ready()
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<()>> {
        self.connect.attempt(cx)
    }

    fn finish(self, res: io::Result<()>) -> Self::Output {
        res.map(|()| self.socket)
    }
}

type DialFuture = Pin<Box<dyn Future<Output = io::Result<StreamSocket>>>>;

/// Connects to the first endpoint that accepts. Made by
/// [`StreamSocket::dial_any`](crate::StreamSocket::dial_any),
/// [`StreamSocket::dial_host`](crate::StreamSocket::dial_host) and the [`Dialer`](crate::Dialer).
pub struct DialAny {
    future: DialFuture,
    waker: Waker,
    /// The virtual source the future's waker fires: removed when the operation ends or is dropped.
    _source: Option<OwnedSource>,
    started: bool,
}

impl DialAny {
    /// An operation that drives `future` on a virtual source of `svc`.
    pub(crate) fn start(
        svc: &LocalHandle,
        future: impl Future<Output = io::Result<StreamSocket>> + 'static,
    ) -> Op<DialAny> {
        let reactor = svc.reactor();
        match OwnedSource::new_virtual(reactor) {
            Ok(source) => {
                let token = source.token();
                let waker = Waker::from(Arc::new(FireWaker {
                    remote: reactor.remote().clone(),
                    token,
                }));
                let op = DialAny {
                    future: Box::pin(future),
                    waker,
                    _source: Some(source),
                    started: false,
                };
                Op::new(reactor, token, op)
            }
            Err(e) => DialAny::failed(svc, e),
        }
    }

    /// An operation that completes with `err` (a bad target, a loop that is gone).
    pub(crate) fn failed(svc: &LocalHandle, err: io::Error) -> Op<DialAny> {
        let op = DialAny {
            future: Box::pin(std::future::pending()),
            waker: Waker::noop().clone(),
            _source: None,
            started: false,
        };
        Op::failed(svc.reactor(), op, err)
    }
}

impl std::fmt::Debug for DialAny {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialAny")
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

impl Operation for DialAny {
    type Output = io::Result<StreamSocket>;
    type Value = StreamSocket;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn needs_ready(&self) -> bool {
        // The first poll starts the work; later ones wait until the future's waker fired the source.
        self.started
    }

    fn attempt(&mut self, _cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        self.started = true;
        let waker = self.waker.clone();
        match self.future.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(result) => Poll::Ready(result),
            Poll::Pending => Poll::Pending,
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

/// Wakes the operation by firing its virtual source on the loop (from any thread: the blocking
/// resolver wakes it from a pool thread).
struct FireWaker {
    remote: Arc<Remote>,
    token: Token,
}

impl Wake for FireWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let token = self.token;
        // A loop that is gone has dropped the operation already. Firing is the loop's bookkeeping,
        // not a handler of its own (false): the operation's handler runs as a job after it.
        let _ = self.remote.post(Box::new(move |reactor: &Reactor| {
            reactor.fire(token);
            false
        }));
    }
}

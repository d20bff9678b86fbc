//! [`Acceptor`]: a listening socket, TCP or Unix, that accepts stream connections.
//!
//! booster's `acceptor` (and Asio's `basic_socket_acceptor`): either its steps — `open(family)`,
//! reuse-address, `bind_to`, `listen(backlog)` — or the one call [`Acceptor::bind`]. A Unix socket file
//! the acceptor created is removed when it closes, so a restarted server can bind the same path.
//!
//! [`set_hooks`](Acceptor::set_hooks) gives every accepted socket [`SocketHooks`]: an `on_open` run
//! right after `accept`, before the handler gets the socket, and an `on_close` run right before that
//! socket's fd closes.

use std::cell::RefCell;
use std::io;
use std::os::fd::OwnedFd;

use socket2::Type;

use crate::LocalHandle;
use crate::endpoint::{Endpoint, Family};
use crate::net::accept::Accept;
use crate::net::hooks::SocketHooks;
use crate::net::options::socket_options;
use crate::net::registration::registered_object;
use crate::net::socket::SocketCore;
use crate::op::Op;

/// The default listen backlog of [`Acceptor::bind`].
pub const DEFAULT_BACKLOG: i32 = 1024;

/// A listening socket bound to a loop.
///
/// ```
/// use aio::{Acceptor, IoService};
/// let svc = IoService::new()?;
/// // booster's steps...
/// let acceptor = Acceptor::new(&svc);
/// let ep: aio::Endpoint = "127.0.0.1:0".parse()?;
/// acceptor.open(ep.family())?;
/// acceptor.set_reuse_address(true)?;
/// acceptor.bind_to(&ep)?;
/// acceptor.listen(10)?;
/// // ...or one call.
/// let other = Acceptor::bind(&svc, &"[::1]:0".parse()?)?;
/// assert!(other.local_endpoint()?.port().unwrap() > 0);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct Acceptor {
    pub(crate) core: SocketCore,
    /// The Unix socket file this acceptor created, to remove on close.
    /// Given to every accepted socket.
    accepted_hooks: RefCell<SocketHooks>,
}

impl Acceptor {
    /// An acceptor that is not open yet.
    pub fn new(svc: &LocalHandle) -> Acceptor {
        Acceptor {
            core: SocketCore::new(svc),
            accepted_hooks: RefCell::new(SocketHooks::default()),
        }
    }

    /// Opens, sets `SO_REUSEADDR` (IP only), binds and listens with [`DEFAULT_BACKLOG`], in one call.
    ///
    /// # Errors
    /// The first step that fails, with the endpoint in the message (e.g. `EADDRINUSE`).
    pub fn bind(svc: &LocalHandle, endpoint: &Endpoint) -> io::Result<Acceptor> {
        let acceptor = Acceptor::new(svc);
        acceptor.open(endpoint.family())?;
        if !endpoint.is_unix() {
            acceptor.set_reuse_address(true)?;
        }
        acceptor.bind_to(endpoint)?;
        acceptor.listen(DEFAULT_BACKLOG)?;
        Ok(acceptor)
    }

    /// Takes ownership of a listening socket (`std::net::TcpListener`, `UnixListener`, or an
    /// `OwnedFd` of one) and makes it non-blocking (`TryFrom` gives it back, blocking).
    ///
    /// ```
    /// use std::net::TcpListener;
    /// use aio::{Acceptor, IoService};
    /// let svc = IoService::new()?;
    /// let acceptor = Acceptor::from_fd(&svc, TcpListener::bind("127.0.0.1:0")?)?;
    /// let addr = acceptor.local_endpoint()?;
    /// let listener = TcpListener::try_from(acceptor)?;
    /// assert_eq!(Some(listener.local_addr()?), addr.as_ip());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// If the fd cannot be made non-blocking or registered.
    pub fn from_fd(svc: &LocalHandle, fd: impl Into<OwnedFd>) -> io::Result<Acceptor> {
        let acceptor = Acceptor::new(svc);
        acceptor.core.adopt(fd.into())?;
        Ok(acceptor)
    }

    /// Opens a stream socket of `family` (booster's `open`).
    ///
    /// # Errors
    /// `AlreadyExists` if open; what `socket(2)` reports.
    pub fn open(&self, family: Family) -> io::Result<()> {
        self.core.open(family, Type::STREAM)
    }

    socket_options!(reuse_address, reuse_port, only_v6, ttl, tos);

    /// Hooks for every socket this acceptor accepts from now on: `on_open` runs right after the
    /// connection is accepted, before the accept handler gets the socket (its error completes the
    /// accept with that error, and the connection is closed); `on_close` runs right before the
    /// accepted socket's fd closes, exactly once (see [`SocketHooks`]). The listening socket itself is
    /// configured directly, between [`open`](Acceptor::open) and [`bind_to`](Acceptor::bind_to).
    ///
    /// ```
    /// use aio::{Acceptor, IoService, SocketHooks, StreamSocket};
    /// let svc = IoService::new()?;
    /// let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
    /// acceptor.set_hooks(SocketHooks::new().on_open(|s| s.set_tcp_nodelay(true)));
    /// let _client = std::net::TcpStream::connect(acceptor.local_endpoint()?.as_ip().unwrap())?;
    /// let (accepted, _peer) = svc.block_on(acceptor.accept())?;
    /// assert!(accepted.nodelay()?);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn set_hooks(&self, hooks: SocketHooks) {
        *self.accepted_hooks.borrow_mut() = hooks;
    }

    /// Binds to `endpoint` (booster's `bind`), opening the socket for its family first if needed.
    ///
    /// # Errors
    /// What `bind(2)` reports, with the endpoint in the message.
    pub fn bind_to(&self, endpoint: &Endpoint) -> io::Result<()> {
        let addr = endpoint.to_sock_addr()?;
        self.core.ensure_open(endpoint, Type::STREAM)?;
        self.core
            .with_socket(|s| s.bind(&addr))
            .map_err(|e| io::Error::new(e.kind(), format!("bind to {endpoint}: {e}")))?;
        self.core.bound(endpoint);
        Ok(())
    }

    /// Starts listening with room for `backlog` pending connections.
    ///
    /// # Errors
    /// `NotConnected` if not open; what `listen(2)` reports.
    pub fn listen(&self, backlog: i32) -> io::Result<()> {
        self.core.with_socket(|s| s.listen(backlog))
    }

    /// Accepts one connection: the new socket and the peer's endpoint. Finding no connection (another
    /// process took it) waits again; `EMFILE`/`ENFILE` are reported (see [`Accept`](crate::Accept)).
    pub fn accept(&self) -> Op<Accept> {
        let hooks = self.accepted_hooks.borrow().clone();
        self.core.op(Accept::new(self.core.svc(), hooks))
    }

    /// The bound endpoint (with the real port when bound to port 0).
    ///
    /// # Errors
    /// `NotConnected` if not open; what `getsockname(2)` reports.
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        self.core.local_endpoint()
    }

    /// Hands the listening fd back, open; the Unix socket file (if any) is left in place.
    ///
    /// # Errors
    /// `NotConnected` if not open.
    pub fn release(&self) -> io::Result<OwnedFd> {
        self.core.release()
    }

    registered_object!(core, "acceptor");
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("fd", &self.native())
            .finish()
    }
}

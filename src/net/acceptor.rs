//! [`Acceptor`]: a listening socket, TCP or Unix, that accepts stream connections.
//!
//! booster's `acceptor` (and Asio's `basic_socket_acceptor`): either its steps — `open(family)`,
//! reuse-address, `bind_to`, `listen(backlog)` — or the one call [`Acceptor::bind`]. A Unix socket file
//! the acceptor created is removed when it closes, so a restarted server can bind the same path.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use socket2::Type;

use crate::LocalHandle;
use crate::net::endpoint::{Endpoint, Family};
use crate::net::socket::SocketCore;
use crate::op::{Accept, Op};

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
    core: SocketCore,
    /// The Unix socket file this acceptor created, with its device and inode, to remove on close.
    unix_file: RefCell<Option<(PathBuf, u64, u64)>>,
}

impl Acceptor {
    /// An acceptor that is not open yet.
    pub fn new(svc: &LocalHandle) -> Acceptor {
        Acceptor {
            core: SocketCore::new(svc),
            unix_file: RefCell::new(None),
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
    /// `OwnedFd` of one) and makes it non-blocking.
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

    /// Sets `SO_REUSEADDR`, so a restarted server can bind a port in `TIME_WAIT`.
    ///
    /// # Errors
    /// `NotConnected` if not open; what `setsockopt` reports.
    pub fn set_reuse_address(&self, reuse: bool) -> io::Result<()> {
        self.core.with_socket(|s| s.set_reuse_address(reuse))
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
        if let Endpoint::Unix(path) = endpoint {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                *self.unix_file.borrow_mut() = Some((path.clone(), meta.dev(), meta.ino()));
            }
        }
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
    /// process took it) waits again; `EMFILE`/`ENFILE` are reported (see [`crate::op::Accept`]).
    pub fn accept(&self) -> Op<Accept> {
        Op::new(self.core.svc(), self.core.token(), Accept::new())
    }

    /// The bound endpoint (with the real port when bound to port 0).
    ///
    /// # Errors
    /// `NotConnected` if not open; what `getsockname(2)` reports.
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        self.core.local_endpoint()
    }

    /// Completes pending accepts with `ECANCELED`; the acceptor stays open.
    pub fn cancel(&self) {
        self.core.cancel();
    }

    /// Completes pending accepts with `ECANCELED`, closes the socket, and removes the Unix socket file
    /// it created (if it is still the same file).
    pub fn close(&self) {
        self.core.close();
        self.remove_unix_file();
    }

    /// Whether the acceptor is open.
    pub fn is_open(&self) -> bool {
        self.core.is_open()
    }

    /// Hands the listening fd back, open; the Unix socket file (if any) is left in place.
    ///
    /// # Errors
    /// `NotConnected` if not open.
    pub fn release(&self) -> io::Result<OwnedFd> {
        self.unix_file.borrow_mut().take();
        self.core.release()
    }

    /// The raw fd, while open.
    pub fn native(&self) -> Option<RawFd> {
        self.core
            .svc()
            .with_fd(self.core.token(), |fd| Ok(fd.as_raw_fd()))
            .ok()
    }

    /// The loop this acceptor belongs to.
    pub fn service(&self) -> &LocalHandle {
        self.core.svc()
    }

    fn remove_unix_file(&self) {
        if let Some((path, dev, ino)) = self.unix_file.borrow_mut().take() {
            let same = std::fs::symlink_metadata(&path)
                .map(|m| m.dev() == dev && m.ino() == ino)
                .unwrap_or(false);
            if same {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

impl Drop for Acceptor {
    fn drop(&mut self) {
        self.remove_unix_file();
    }
}

impl std::fmt::Debug for Acceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acceptor")
            .field("fd", &self.native())
            .finish()
    }
}

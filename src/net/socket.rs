//! What every socket-like object shares: its place in the loop's source table, opening (with the
//! socket's hooks), closing, cancelling, releasing, access to the fd for options, and the Unix socket
//! file a bound socket created.

use std::cell::Cell;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use socket2::{SockRef, Socket, Type};

use crate::LocalHandle;
use crate::endpoint::{Endpoint, Family};
use crate::net::hooks::SocketHooks;
use crate::net::registration::Registration;
use crate::op::{Op, Operation};
use crate::reactor::{FdSlot, Token};

pub(crate) struct SocketCore {
    registration: Registration,
    /// Applied to every fd this object creates (`open`).
    hooks: SocketHooks,
    /// The Unix socket file a bind of this socket created, removed when it closes.
    unix_file: UnixFile,
}

impl SocketCore {
    pub(crate) fn new(svc: &LocalHandle) -> SocketCore {
        SocketCore::with_hooks(svc, SocketHooks::default())
    }

    pub(crate) fn with_hooks(svc: &LocalHandle, hooks: SocketHooks) -> SocketCore {
        SocketCore {
            registration: Registration::new(svc),
            hooks,
            unix_file: UnixFile::default(),
        }
    }

    pub(crate) fn svc(&self) -> &LocalHandle {
        self.registration.svc()
    }

    pub(crate) fn token(&self) -> Token {
        self.registration.token()
    }

    /// An operation on this socket.
    #[inline(always)]
    pub(crate) fn op<O: Operation>(&self, op: O) -> Op<O> {
        self.registration.op(op)
    }

    /// An operation that completes with `err` without trying (the socket could not be set up).
    pub(crate) fn failed_op<O: Operation>(&self, op: O, err: io::Error) -> Op<O> {
        self.registration.failed_op(op, err)
    }

    pub(crate) fn is_open(&self) -> bool {
        self.registration.is_open()
    }

    /// Creates a non-blocking, close-on-exec socket of `family` and `ty`, runs the `on_open` hook and
    /// registers it.
    pub(crate) fn open(&self, family: Family, ty: Type) -> io::Result<()> {
        if self.is_open() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the socket is already open",
            ));
        }
        let socket = Socket::new(family.domain(), ty.nonblocking(), None)
            .map_err(|e| io::Error::new(e.kind(), format!("opening a {family:?} socket: {e}")))?;
        let slot = self.hooks.prepare(OwnedFd::from(socket))?;
        self.register_slot(slot)?;
        self.set_family(family);
        Ok(())
    }

    /// Tells the loop the socket's family, which decides whether a short read proves it empty (TCP)
    /// or not (Unix: a read stops at a message carrying fds).
    pub(crate) fn set_family(&self, family: Family) {
        self.svc()
            .reactor()
            .set_short_read_drains(self.token(), family != Family::Unix);
    }

    /// Opens for `endpoint`'s family unless already open.
    pub(crate) fn ensure_open(&self, endpoint: &Endpoint, ty: Type) -> io::Result<()> {
        if self.is_open() {
            Ok(())
        } else {
            self.open(endpoint.family(), ty)
        }
    }

    /// Takes ownership of a non-blocking fd and registers it, closing whatever was open before.
    pub(crate) fn register(&self, fd: OwnedFd) -> io::Result<()> {
        self.register_slot(FdSlot::Owned(fd))
    }

    /// Registers a prepared slot (an fd with or without a close hook), closing whatever was open
    /// before.
    pub(crate) fn register_slot(&self, slot: FdSlot) -> io::Result<()> {
        self.registration.register(slot)
    }

    /// Makes `fd` non-blocking, then registers it.
    pub(crate) fn adopt(&self, fd: OwnedFd) -> io::Result<()> {
        SockRef::from(&fd).set_nonblocking(true)?;
        self.register(fd)
    }

    /// Runs `f` on the socket (options, bind, listen...).
    pub(crate) fn with_socket<R>(
        &self,
        f: impl FnOnce(SockRef<'_>) -> io::Result<R>,
    ) -> io::Result<R> {
        self.registration.with_fd(|fd| f(SockRef::from(&fd)))
    }

    pub(crate) fn local_endpoint(&self) -> io::Result<Endpoint> {
        self.with_socket(|s| Endpoint::from_sock_addr(&s.local_addr()?))
    }

    pub(crate) fn peer_endpoint(&self) -> io::Result<Endpoint> {
        self.with_socket(|s| Endpoint::from_sock_addr(&s.peer_addr()?))
    }

    /// The raw fd, while open.
    pub(crate) fn native(&self) -> Option<RawFd> {
        self.registration.native()
    }

    /// Completes pending operations with `ECANCELED`; the socket stays open.
    pub(crate) fn cancel(&self) {
        self.registration.cancel();
    }

    /// Remembers the Unix socket file that a bind to `endpoint` just created, to remove it on close.
    pub(crate) fn bound(&self, endpoint: &Endpoint) {
        self.unix_file.bound(endpoint);
    }

    /// Cancels pending operations, closes the fd and removes the Unix socket file a bind created.
    /// Closing twice does nothing.
    pub(crate) fn close(&self) {
        self.registration.close();
        self.unix_file.remove();
    }

    /// Cancels pending operations and hands the fd back without closing it (a Unix socket file
    /// stays in place: the socket lives on elsewhere).
    pub(crate) fn release(&self) -> io::Result<OwnedFd> {
        self.unix_file.forget();
        self.registration
            .take()
            .and_then(FdSlot::into_owned)
            .ok_or_else(crate::error::closed)
    }

    /// Hands the fd out for a conversion into a std type, or refuses and changes nothing (see
    /// `Registration::take_for_conversion`). A Unix socket file stays in place, as on `release`.
    pub(crate) fn take_for_conversion(
        &self,
        prepare: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<OwnedFd> {
        let fd = self.registration.take_for_conversion(prepare)?;
        self.unix_file.forget();
        Ok(fd)
    }
}

impl Drop for SocketCore {
    fn drop(&mut self) {
        self.close();
    }
}

/// The Unix socket file a bound socket created, with its device and inode: removed on close if it is
/// still that same file, so that a restarted program can bind the same path. Boxed, and only once a
/// bind creates one: every socket, idle connections included, would otherwise carry room for a path
/// and two numbers.
#[derive(Default)]
pub(crate) struct UnixFile(Cell<Option<Box<(PathBuf, u64, u64)>>>);

impl UnixFile {
    /// Remembers the file `endpoint` names, if it is a path (call right after a successful bind).
    pub(crate) fn bound(&self, endpoint: &Endpoint) {
        if let Endpoint::Unix(path) = endpoint {
            if let Ok(meta) = std::fs::symlink_metadata(path) {
                self.0
                    .set(Some(Box::new((path.clone(), meta.dev(), meta.ino()))));
            }
        }
    }

    /// Forgets the file without removing it (`release`: the socket lives on elsewhere).
    pub(crate) fn forget(&self) {
        self.0.take();
    }

    /// Removes the file if it is still the one the bind created.
    pub(crate) fn remove(&self) {
        if let Some(file) = self.0.take() {
            let (path, dev, ino) = *file;
            let same = std::fs::symlink_metadata(&path)
                .map(|m| m.dev() == dev && m.ino() == ino)
                .unwrap_or(false);
            if same {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

impl Drop for UnixFile {
    fn drop(&mut self) {
        self.remove();
    }
}

impl std::fmt::Debug for SocketCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("fd", &self.native())
            .finish()
    }
}

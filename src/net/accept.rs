//! Accepting connections.
//!
//! An accept that finds no connection (`EAGAIN`, or one that vanished: `ECONNABORTED`, `EPROTO`) waits
//! again: several processes may share one listener (booster's prefork pattern) and lose races. Running
//! out of fds (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) is reported to the handler, and the acceptor then
//! waits a short back-off before trying again (readiness events meanwhile are ignored, on every
//! backend), so a handler that simply accepts again does not spin the loop.

use std::io;
use std::os::fd::OwnedFd;
use std::task::Poll;
use std::time::Duration;

use crate::LocalHandle;
use crate::endpoint::{Endpoint, Family};
use crate::net::hooks::SocketHooks;
use crate::net::stream::StreamSocket;
use crate::op::{Cx, Interest, Operation};

/// How long an acceptor that ran out of fds waits before trying again.
pub(crate) const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts one connection: the new socket and the peer's endpoint. Made by
/// [`Acceptor::accept`](crate::Acceptor::accept). The accepted socket gets the acceptor's
/// [`SocketHooks`] (see [`Acceptor::set_hooks`](crate::Acceptor::set_hooks)).
pub struct Accept {
    /// The loop the accepted socket joins.
    svc: LocalHandle,
    hooks: SocketHooks,
}

impl Accept {
    pub(crate) fn new(svc: &LocalHandle, hooks: SocketHooks) -> Accept {
        Accept {
            svc: svc.clone(),
            hooks,
        }
    }
}

impl std::fmt::Debug for Accept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accept")
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl Operation for Accept {
    type Output = io::Result<(StreamSocket, Endpoint)>;
    type Value = (StreamSocket, Endpoint);

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let fd = cx.fd();
        let listener = socket2::SockRef::from(&fd);
        loop {
            match listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) {
                Ok((socket, addr)) => {
                    let peer = Endpoint::from_sock_addr(&addr).unwrap_or(Endpoint::Unnamed);
                    let family = if addr.is_unix() {
                        Family::Unix
                    } else {
                        Family::Ipv4 // or IPv6: either way, short reads drain it
                    };
                    let result = StreamSocket::from_accepted(
                        &self.svc,
                        OwnedFd::from(socket),
                        family,
                        &self.hooks,
                    )
                    .map(|s| (s, peer));
                    return Poll::Ready(result);
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Poll::Pending,
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO) => continue,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        cx.retry_after(EXHAUSTED_BACKOFF);
                        return Poll::Ready(Err(e));
                    }
                    _ => return Poll::Ready(Err(e)),
                },
            }
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

//! Connecting a stream socket: a non-blocking `connect`, then a wait for writability and a look at
//! `SO_ERROR`.

use std::io;
use std::task::Poll;

use super::{Cx, Interest, Operation};
use crate::endpoint::Endpoint;

/// Connects an open socket to an endpoint. Made by
/// [`StreamSocket::connect`](crate::StreamSocket::connect).
#[derive(Debug)]
pub struct Connect {
    endpoint: Endpoint,
    addr: Option<socket2::SockAddr>,
    started: bool,
}

impl Connect {
    pub(crate) fn new(endpoint: Endpoint, addr: socket2::SockAddr) -> Connect {
        Connect {
            endpoint,
            addr: Some(addr),
            started: false,
        }
    }

    /// A connect that will never be tried (its socket could not be opened).
    pub(crate) fn unprepared(endpoint: Endpoint) -> Connect {
        Connect {
            endpoint,
            addr: None,
            started: false,
        }
    }

    fn context(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("connect to {}: {e}", self.endpoint))
    }

    /// One step: `Ok(true)` connected, `Ok(false)` in progress.
    fn step(&mut self, cx: &Cx<'_>) -> io::Result<bool> {
        let fd = cx.fd();
        let socket = socket2::SockRef::from(&fd);
        if !self.started {
            self.started = true;
            let Some(addr) = self.addr.take() else {
                return Err(crate::error::closed());
            };
            return match socket.connect(&addr) {
                Ok(()) => Ok(true),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINPROGRESS | libc::EINTR)) => {
                    Ok(false)
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the listening Unix socket's backlog is full",
                )),
                Err(e) => Err(e),
            };
        }
        if let Some(e) = socket.take_error()? {
            return Err(e);
        }
        match socket.peer_addr() {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Operation for Connect {
    type Output = io::Result<()>;
    type Value = ();

    fn interest(&self) -> Interest {
        Interest::Write
    }

    fn needs_ready(&self) -> bool {
        // The connect call itself needs no readiness; only its completion does.
        self.started
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        match self.step(cx) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(self.context(e))),
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

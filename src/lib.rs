//! # aio
//!
//! Asynchronous I/O in the model of booster::aio (CppCMS) and Boost.Asio: one event loop per thread
//! ([`IoService`]), I/O objects bound to it ([`StreamSocket`], [`Acceptor`], [`DatagramSocket`],
//! [`IoDevice`]), and operations ([`Op`]) that complete either through a handler called exactly once
//! with the result first, or as a future.
//!
//! ```
//! use aio::{Acceptor, IoBuf, IoService, StreamSocket};
//! use std::rc::Rc;
//!
//! let svc = IoService::new()?;
//! let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
//! let addr = acceptor.local_endpoint()?;
//!
//! // Callback style: accept one connection and echo one message.
//! acceptor.accept().then(|res| {
//!     let (socket, _peer) = res.expect("accept");
//!     let socket = Rc::new(socket);
//!     socket.clone().read_some(vec![0u8; 1024]).then(move |(res, buf)| {
//!         let n = res.expect("read");
//!         socket.write_all(buf.slice(..n)).then(|(res, _)| res.expect("write"));
//!     });
//! });
//!
//! // Future style: a client on the same loop.
//! let reply = svc.block_on({
//!     let svc = svc.local();
//!     async move {
//!         let client = StreamSocket::dial(&svc, &addr).await?;
//!         let (res, _) = client.write_all(b"ping".to_vec()).await;
//!         res?;
//!         let (res, buf) = client.read_exact(vec![0u8; 4]).await;
//!         res.map(|()| buf)
//!     }
//! })?;
//! assert_eq!(reply, b"ping");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! Read the README for the mapping from booster::aio and Boost.Asio names.

#![warn(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod buf;
pub mod client;
#[cfg(any(feature = "futures-io", feature = "tokio-io", feature = "hyper"))]
pub mod compat;
mod driver;
mod endpoint;
pub mod error;
pub mod framed;
mod net;
pub mod op;
pub mod pool;
mod reactor;
mod service;
pub mod signal;
pub mod time;

/// Work that must not run on the loop: [`LocalHandle::spawn_blocking`] and the completion bridge
/// [`LocalHandle::completion`] for callback-based C or driver APIs.
///
/// The answer to "how do I make a blocking driver call an async operation": hand it to a pool thread
/// and get an [`Op`] that completes on the loop thread. The pool is per loop, bounded, and started
/// lazily: no thread exists until the first `spawn_blocking`, so a process that never uses it can fork
/// freely, and a forked child builds its own loop and pool. Idle threads exit after a while.
///
/// A [`Completer`] is the other half of an operation that something else finishes: a C callback, a
/// driver thread, another loop. It is `Send`; completing it from any thread runs the handler on the
/// loop; dropping it unfinished completes the operation with an error instead of leaving it hanging.
pub mod blocking {
    pub use crate::op::completion::{Completer, Completion};
    pub use crate::service::DEFAULT_MAX_BLOCKING_THREADS;
}

pub use blocking::{Completer, Completion};
pub use buf::{GrowableBuf, IoBuf, IoBufMut, Slice};
pub use driver::Backend;
pub use endpoint::{Endpoint, Family};
pub use error::{IntoStdError, is_cancelled};
pub use net::accept::Accept;
pub use net::acceptor::{Acceptor, DEFAULT_BACKLOG};
pub use net::datagram::DatagramSocket;
pub use net::device::IoDevice;
pub use net::dialer::{Dial, DialAny, Dialer};
pub use net::hooks::SocketHooks;
pub use net::incoming::{Accepted, Incoming, Permit};
pub use net::stream::StreamSocket;
pub use op::{Op, OpHandle, Operation, TimedOp};
pub use pool::{AcceptMode, LoopPool};
pub use service::{
    Builder, Handle, IoService, JoinError, JoinHandle, LocalHandle, RemoteJoinHandle,
};
pub use signal::SignalSet;
pub use time::DeadlineTimer;

/// socket2, whose `SockRef` the [`SocketHooks`] callbacks receive: set any option through it.
pub use socket2;

/// The README's example, compiled with the doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;

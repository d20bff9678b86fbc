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

pub mod blocking;
pub mod buf;
pub mod client;
mod driver;
pub mod error;
pub mod framed;
mod net;
pub mod op;
mod service;
pub mod signal;
pub mod time;

pub use blocking::{Completer, Completion};
pub use buf::{IoBuf, IoBufMut, Slice};
pub use driver::Backend;
pub use error::is_cancelled;
pub use net::acceptor::{Acceptor, DEFAULT_BACKLOG};
pub use net::datagram::DatagramSocket;
pub use net::device::IoDevice;
pub use net::dialer::Dialer;
pub use net::endpoint::{Endpoint, Family};
pub use net::hooks::SocketHooks;
pub use net::stream::StreamSocket;
pub use op::{Op, Operation};
pub use service::{Builder, Handle, IoService, JoinError, JoinHandle, LocalHandle};
pub use signal::SignalSet;
pub use time::DeadlineTimer;

/// socket2, whose `SockRef` the [`SocketHooks`] callbacks receive: set any option through it.
pub use socket2;

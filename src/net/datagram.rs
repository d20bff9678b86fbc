//! [`DatagramSocket`]: UDP (IPv4, IPv6) and Unix datagram sockets behind one type.
//!
//! Asio's `ip::udp::socket` and `local::datagram_protocol::socket` in one, as [`StreamSocket`] is for
//! streams: the endpoint decides the family. booster::aio has no datagram API at all. Operations are
//! owned-buffer [`Op`]s like the stream ones: `send_to(buf, &ep)` and `recv_from(buf)` complete with
//! `(io::Result<T>, buf)`. A datagram too large to send is an error; one too large for the receive
//! buffer is reported as truncated ([`RecvMeta`](crate::op::RecvMeta)), never cut silently. See [`crate::op::RecvMeta`] and
//! the [`datagram operations`](crate::op::SendDatagram) for the edge-triggered details.
//!
//! [`StreamSocket`]: crate::StreamSocket

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::OwnedFd;

use socket2::{Domain, Socket, Type};

use crate::LocalHandle;
use crate::buf::{IoBuf, IoBufMut};
use crate::endpoint::{Endpoint, Family};
use crate::net::hooks::SocketHooks;
use crate::net::options::{self, socket_options};
use crate::net::registration::registered_object;
use crate::net::socket::SocketCore;
use crate::op::{Op, RecvDatagram, SendDatagram};

/// A datagram socket (UDP or Unix) bound to a loop.
///
/// Methods take `&self`, so the socket can be shared through an `Rc` by several pending operations
/// (a receive waiting while sends go out). Dropping or closing it completes pending operations with
/// `ECANCELED`, and removes the Unix socket file its `bind` created.
///
/// ```
/// use aio::{DatagramSocket, IoService};
/// let svc = IoService::new()?;
/// let server = DatagramSocket::bind(&svc, &"127.0.0.1:0".parse()?)?;
/// let client = DatagramSocket::bind(&svc, &"127.0.0.1:0".parse()?)?;
/// let (res, _) = svc.block_on(client.send_to(b"ping".to_vec(), &server.local_endpoint()?));
/// assert_eq!(res?, 4);
/// let (res, buf) = svc.block_on(server.recv_from(vec![0u8; 64]));
/// let meta = res?;
/// assert_eq!(&buf[..meta.len], b"ping");
/// assert!(!meta.truncated);
/// assert_eq!(meta.from, client.local_endpoint()?);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct DatagramSocket {
    pub(crate) core: SocketCore,
}

impl DatagramSocket {
    /// A socket that is not open yet: `open`, `bind_to`, `connect` or `send_to` opens it.
    pub fn new(svc: &LocalHandle) -> DatagramSocket {
        DatagramSocket::with_hooks(svc, SocketHooks::default())
    }

    /// A socket that is not open yet, whose fds get `hooks` (see [`SocketHooks`]).
    pub fn with_hooks(svc: &LocalHandle, hooks: SocketHooks) -> DatagramSocket {
        DatagramSocket {
            core: SocketCore::with_hooks(svc, hooks),
        }
    }

    /// Opens a socket for `endpoint`'s family and binds it, in one call. Port 0 picks a free port;
    /// [`Endpoint::Unnamed`] gives a Unix socket a kernel-chosen abstract name (so it can get replies).
    ///
    /// # Errors
    /// What `socket(2)` or `bind(2)` reports, with the endpoint in the message; `InvalidInput` for a
    /// Unix path longer than `sun_path` holds.
    pub fn bind(svc: &LocalHandle, endpoint: &Endpoint) -> io::Result<DatagramSocket> {
        let socket = DatagramSocket::new(svc);
        socket.bind_to(endpoint)?;
        Ok(socket)
    }

    /// A connected pair of Unix datagram sockets.
    ///
    /// # Errors
    /// What `socketpair(2)` or registering with the loop reports.
    pub fn pair(svc: &LocalHandle) -> io::Result<(DatagramSocket, DatagramSocket)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::DGRAM.nonblocking(), None)?;
        Ok((
            DatagramSocket::from_fd(svc, OwnedFd::from(a))?,
            DatagramSocket::from_fd(svc, OwnedFd::from(b))?,
        ))
    }

    /// Takes ownership of a datagram socket (`std::net::UdpSocket`,
    /// `std::os::unix::net::UnixDatagram`, or an `OwnedFd` of one) and makes it non-blocking
    /// (`TryFrom` gives it back, blocking).
    ///
    /// ```
    /// use std::os::unix::net::UnixDatagram;
    /// use aio::{DatagramSocket, IoService};
    /// let svc = IoService::new()?;
    /// let (a, b) = UnixDatagram::pair()?;
    /// let a = DatagramSocket::from_fd(&svc, a)?;
    /// let (res, _) = svc.block_on(a.send(b"hi".to_vec()));
    /// res?;
    /// let a = UnixDatagram::try_from(a)?;
    /// a.send(b"there")?;
    /// let mut buf = [0; 8];
    /// assert_eq!(b.recv(&mut buf)?, 2);
    /// assert_eq!(b.recv(&mut buf)?, 5);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// If the fd cannot be made non-blocking or registered with the loop.
    pub fn from_fd(svc: &LocalHandle, fd: impl Into<OwnedFd>) -> io::Result<DatagramSocket> {
        let socket = DatagramSocket::new(svc);
        socket.core.adopt(fd.into())?;
        Ok(socket)
    }

    /// Opens a datagram socket of `family`.
    ///
    /// # Errors
    /// `AlreadyExists` if open; what `socket(2)` or the `on_open` hook reports.
    pub fn open(&self, family: Family) -> io::Result<()> {
        self.core.open(family, Type::DGRAM)
    }

    /// Binds the local end, opening the socket for the endpoint's family first if needed.
    ///
    /// # Errors
    /// What `bind(2)` reports, with the endpoint in the message.
    pub fn bind_to(&self, endpoint: &Endpoint) -> io::Result<()> {
        let addr = endpoint.to_sock_addr()?;
        self.core.ensure_open(endpoint, Type::DGRAM)?;
        self.core
            .with_socket(|s| s.bind(&addr))
            .map_err(|e| io::Error::new(e.kind(), format!("bind to {endpoint}: {e}")))?;
        self.core.bound(endpoint);
        Ok(())
    }

    /// Sets the default destination and accepts datagrams only from it (opening the socket first if
    /// needed). Immediate: a datagram `connect` only records the peer.
    ///
    /// # Errors
    /// What `connect(2)` reports, with the endpoint in the message.
    pub fn connect(&self, endpoint: &Endpoint) -> io::Result<()> {
        let addr = endpoint.to_sock_addr()?;
        self.core.ensure_open(endpoint, Type::DGRAM)?;
        self.core
            .with_socket(|s| s.connect(&addr))
            .map_err(|e| io::Error::new(e.kind(), format!("connect to {endpoint}: {e}")))
    }

    /// Sends one datagram to `endpoint` (opening the socket for its family first if needed);
    /// completes with the number of bytes sent, always the whole buffer. A datagram too large for
    /// the socket is an `InvalidInput` error (`EMSGSIZE`).
    pub fn send_to<B: IoBuf>(&self, buf: B, endpoint: &Endpoint) -> Op<SendDatagram<B>> {
        let prepared = endpoint.to_sock_addr().and_then(|addr| {
            self.core.ensure_open(endpoint, Type::DGRAM)?;
            Ok(addr)
        });
        match prepared {
            Ok(addr) => self
                .core
                .op(SendDatagram::new(buf, Some((addr, endpoint.clone())))),
            Err(e) => self.core.failed_op(SendDatagram::new(buf, None), e),
        }
    }

    /// Sends one datagram to the connected peer (see [`connect`](DatagramSocket::connect)).
    pub fn send<B: IoBuf>(&self, buf: B) -> Op<SendDatagram<B>> {
        self.core.op(SendDatagram::new(buf, None))
    }

    /// Receives one datagram into the buffer (up to its capacity), with its sender and whether it
    /// was truncated ([`RecvMeta`](crate::op::RecvMeta)).
    pub fn recv_from<B: IoBufMut>(&self, buf: B) -> Op<RecvDatagram<B>> {
        self.core.op(RecvDatagram::new(buf))
    }

    /// Receives one datagram from the connected peer: the same as
    /// [`recv_from`](DatagramSocket::recv_from) (its `from` is the peer).
    pub fn recv<B: IoBufMut>(&self, buf: B) -> Op<RecvDatagram<B>> {
        self.recv_from(buf)
    }

    /// Allows sending to broadcast addresses (`SO_BROADCAST`).
    ///
    /// # Errors
    /// `NotConnected` if not open; what `setsockopt` reports.
    pub fn set_broadcast(&self, broadcast: bool) -> io::Result<()> {
        self.core.with_socket(|s| s.set_broadcast(broadcast))
    }

    /// Whether `SO_BROADCAST` is set.
    ///
    /// # Errors
    /// As for the setter.
    pub fn broadcast(&self) -> io::Result<bool> {
        self.core.with_socket(|s| s.broadcast())
    }

    /// Joins the IPv4 multicast group `group` on the interface with address `interface`
    /// (`Ipv4Addr::UNSPECIFIED`: the kernel's choice).
    ///
    /// # Errors
    /// What `setsockopt(IP_ADD_MEMBERSHIP)` reports.
    pub fn join_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        self.core
            .with_socket(|s| s.join_multicast_v4(&group, &interface))
    }

    /// Leaves an IPv4 multicast group joined with [`join_multicast_v4`](Self::join_multicast_v4).
    ///
    /// # Errors
    /// What `setsockopt(IP_DROP_MEMBERSHIP)` reports.
    pub fn leave_multicast_v4(&self, group: Ipv4Addr, interface: Ipv4Addr) -> io::Result<()> {
        self.core
            .with_socket(|s| s.leave_multicast_v4(&group, &interface))
    }

    /// Joins the IPv6 multicast group `group` on the interface with index `interface` (0: the
    /// kernel's choice).
    ///
    /// # Errors
    /// What `setsockopt(IPV6_ADD_MEMBERSHIP)` reports.
    pub fn join_multicast_v6(&self, group: Ipv6Addr, interface: u32) -> io::Result<()> {
        self.core
            .with_socket(|s| s.join_multicast_v6(&group, interface))
    }

    /// Leaves an IPv6 multicast group joined with [`join_multicast_v6`](Self::join_multicast_v6).
    ///
    /// # Errors
    /// What `setsockopt(IPV6_DROP_MEMBERSHIP)` reports.
    pub fn leave_multicast_v6(&self, group: Ipv6Addr, interface: u32) -> io::Result<()> {
        self.core
            .with_socket(|s| s.leave_multicast_v6(&group, interface))
    }

    /// Sends multicast datagrams out of the interface with address `interface`
    /// (`IP_MULTICAST_IF`).
    ///
    /// # Errors
    /// What `setsockopt` reports.
    pub fn set_multicast_interface_v4(&self, interface: Ipv4Addr) -> io::Result<()> {
        self.core.with_socket(|s| s.set_multicast_if_v4(&interface))
    }

    /// The interface address for outgoing IPv4 multicast (`IP_MULTICAST_IF`).
    ///
    /// # Errors
    /// As for the setter.
    pub fn multicast_interface_v4(&self) -> io::Result<Ipv4Addr> {
        self.core.with_socket(|s| s.multicast_if_v4())
    }

    /// Sends IPv6 multicast datagrams out of the interface with index `interface`
    /// (`IPV6_MULTICAST_IF`; 0: the kernel's choice).
    ///
    /// # Errors
    /// What `setsockopt` reports.
    pub fn set_multicast_interface_v6(&self, interface: u32) -> io::Result<()> {
        self.core.with_socket(|s| s.set_multicast_if_v6(interface))
    }

    /// The interface index for outgoing IPv6 multicast (`IPV6_MULTICAST_IF`).
    ///
    /// # Errors
    /// As for the setter.
    pub fn multicast_interface_v6(&self) -> io::Result<u32> {
        self.core.with_socket(|s| s.multicast_if_v6())
    }

    /// Whether multicast datagrams this socket sends are looped back to local members
    /// (`IP_MULTICAST_LOOP`, or `IPV6_MULTICAST_LOOP` on an IPv6 socket; on by default).
    ///
    /// # Errors
    /// `NotConnected` if not open; `Unsupported` on a Unix socket; what `setsockopt` reports.
    pub fn set_multicast_loop(&self, on: bool) -> io::Result<()> {
        self.core
            .with_socket(|s| options::set_multicast_loop(&s, on))
    }

    /// Whether multicast loopback is on.
    ///
    /// # Errors
    /// As for the setter.
    pub fn multicast_loop(&self) -> io::Result<bool> {
        self.core.with_socket(|s| options::multicast_loop(&s))
    }

    /// Sets the time-to-live of outgoing multicast datagrams (`IP_MULTICAST_TTL`, or
    /// `IPV6_MULTICAST_HOPS` on an IPv6 socket; 1 by default: the local network only).
    ///
    /// # Errors
    /// `NotConnected` if not open; `Unsupported` on a Unix socket; what `setsockopt` reports.
    pub fn set_multicast_ttl(&self, ttl: u32) -> io::Result<()> {
        self.core
            .with_socket(|s| options::set_multicast_ttl(&s, ttl))
    }

    /// The multicast time-to-live.
    ///
    /// # Errors
    /// As for the setter.
    pub fn multicast_ttl(&self) -> io::Result<u32> {
        self.core.with_socket(|s| options::multicast_ttl(&s))
    }

    socket_options!(ttl, tos, only_v6, reuse_address, reuse_port, buffer_sizes);

    /// The local endpoint (with the real port when bound to port 0).
    ///
    /// # Errors
    /// `NotConnected` if closed, or what `getsockname(2)` reports.
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        self.core.local_endpoint()
    }

    /// The connected peer's endpoint.
    ///
    /// # Errors
    /// `NotConnected` if closed or not connected.
    pub fn peer_endpoint(&self) -> io::Result<Endpoint> {
        self.core.peer_endpoint()
    }

    /// Stops using the fd and hands it back, open and non-blocking (no `on_close`; a Unix socket file
    /// stays in place).
    ///
    /// # Errors
    /// `NotConnected` if the socket is not open.
    pub fn release(&self) -> io::Result<OwnedFd> {
        self.core.release()
    }

    /// Releases the socket as a `std::net::UdpSocket`, still non-blocking, cancelling what is pending and
    /// whatever its family. `UdpSocket::try_from(socket)` is the checked conversion: it refuses while
    /// an operation is pending or for the other family, and makes the fd blocking as std expects.
    ///
    /// # Errors
    /// As for [`release`](DatagramSocket::release).
    pub fn into_std_udp(self) -> io::Result<std::net::UdpSocket> {
        self.release().map(std::net::UdpSocket::from)
    }

    /// Releases the socket as a `std::os::unix::net::UnixDatagram`, still non-blocking, cancelling what is pending and
    /// whatever its family. `UnixDatagram::try_from(socket)` is the checked conversion: it refuses while
    /// an operation is pending or for the other family, and makes the fd blocking as std expects.
    ///
    /// # Errors
    /// As for [`release`](DatagramSocket::release).
    pub fn into_std_unix(self) -> io::Result<std::os::unix::net::UnixDatagram> {
        self.release().map(std::os::unix::net::UnixDatagram::from)
    }

    registered_object!(core, "socket");
}

impl std::fmt::Debug for DatagramSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatagramSocket")
            .field("fd", &self.native())
            .finish()
    }
}

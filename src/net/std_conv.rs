//! The std traits of the I/O objects: `AsRawFd`, and conversions into the std types that own the
//! same kind of fd (`TryFrom<StreamSocket> for TcpStream` and the like).
//!
//! The other way, std into `aio`, needs the loop and so is a constructor, not a `From`:
//! `StreamSocket::from_fd`, `Acceptor::from_fd`, `DatagramSocket::from_fd` (each takes anything
//! `Into<OwnedFd>` and makes it non-blocking) and `IoDevice::new`.
//!
//! A conversion into std deregisters the fd, makes it blocking again (std's types are blocking, and
//! code written for them expects it) and hands it over; or it refuses, with the object back inside
//! an [`IntoStdError`], when an operation is pending on it, when it is closed, or when the fd is not
//! what the target holds. `release()` is the conversion without those checks: it cancels what is
//! pending and leaves the fd non-blocking.
//!
//! No `AsFd`: a `BorrowedFd` promises the fd stays open for its lifetime, but every object can be
//! closed through a shared reference (`close(&self)`, from any handler holding an `Rc` of it), so the
//! fd number could be closed, and reused, while the borrow is alive. `AsRawFd` makes no such promise.

use std::io;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};

use socket2::{Domain, SockRef, Type};

use crate::error::IntoStdError;
use crate::net::acceptor::Acceptor;
use crate::net::datagram::DatagramSocket;
use crate::net::device::IoDevice;
use crate::net::stream::StreamSocket;

/// What a std type holds: the socket type, the domains it takes, and whether it must be listening.
struct Target {
    name: &'static str,
    ty: Type,
    domains: &'static [Domain],
    listening: bool,
}

const INET: &[Domain] = &[Domain::IPV4, Domain::IPV6];
const UNIX: &[Domain] = &[Domain::UNIX];
const ANY: &[Domain] = &[];

impl Target {
    /// Refuses an fd that is not what the target holds (`InvalidInput`), then makes it blocking.
    fn prepare(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let socket = SockRef::from(&fd);
        let (domain, ty) = (socket.domain()?, socket.r#type()?);
        if ty != self.ty || !(self.domains.is_empty() || self.domains.contains(&domain)) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} cannot become a {}", describe(domain, ty), self.name),
            ));
        }
        if self.listening && !rustix::net::sockopt::socket_acceptconn(fd)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the acceptor is not listening yet: it cannot become a {}",
                    self.name
                ),
            ));
        }
        socket.set_nonblocking(false)
    }
}

fn describe(domain: Domain, ty: Type) -> String {
    let inet = domain == Domain::IPV4 || domain == Domain::IPV6;
    match (inet, domain == Domain::UNIX) {
        (true, _) if ty == Type::STREAM => "a TCP socket".into(),
        (true, _) if ty == Type::DGRAM => "a UDP socket".into(),
        (_, true) if ty == Type::STREAM => "a Unix stream socket".into(),
        (_, true) if ty == Type::DGRAM => "a Unix datagram socket".into(),
        _ => format!("a {domain:?} {ty:?} socket"),
    }
}

/// `TryFrom<$object> for $target`, through the object's socket core.
macro_rules! into_std {
    ($object:ident, $target:ty, $ty:expr, $domains:expr, $listening:expr, $doc:literal) => {
        #[doc = $doc]
        ///
        /// The fd leaves the loop and becomes blocking, as std's own constructors make it. Refused,
        /// with the object back in the error, while an operation is pending on it, when it is
        /// closed, or when the fd is of another kind (see [`IntoStdError`]).
        impl TryFrom<$object> for $target {
            type Error = IntoStdError<$object>;

            fn try_from(object: $object) -> Result<$target, IntoStdError<$object>> {
                let target = Target {
                    name: stringify!($target),
                    ty: $ty,
                    domains: $domains,
                    listening: $listening,
                };
                match object.core.take_for_conversion(|fd| target.prepare(fd)) {
                    Ok(fd) => Ok(<$target>::from(fd)),
                    Err(e) => Err(IntoStdError::new(object, e)),
                }
            }
        }
    };
}

into_std!(
    StreamSocket,
    TcpStream,
    Type::STREAM,
    INET,
    false,
    "A TCP `StreamSocket` as a `std::net::TcpStream`."
);
into_std!(
    StreamSocket,
    UnixStream,
    Type::STREAM,
    UNIX,
    false,
    "A Unix `StreamSocket` as a `std::os::unix::net::UnixStream`."
);
into_std!(
    StreamSocket,
    OwnedFd,
    Type::STREAM,
    ANY,
    false,
    "A `StreamSocket`'s fd, of either family."
);
into_std!(
    Acceptor,
    TcpListener,
    Type::STREAM,
    INET,
    true,
    "A listening TCP `Acceptor` as a `std::net::TcpListener` (refused before `listen`)."
);
into_std!(
    Acceptor,
    UnixListener,
    Type::STREAM,
    UNIX,
    true,
    "A listening Unix `Acceptor` as a `std::os::unix::net::UnixListener` (refused before \
     `listen`). The socket file its bind created stays in place: the listener owns it now."
);
into_std!(
    Acceptor,
    OwnedFd,
    Type::STREAM,
    ANY,
    false,
    "An `Acceptor`'s fd, listening or not, of either family; a socket file its bind created stays \
     in place."
);
into_std!(
    DatagramSocket,
    UdpSocket,
    Type::DGRAM,
    INET,
    false,
    "A UDP `DatagramSocket` as a `std::net::UdpSocket`."
);
into_std!(
    DatagramSocket,
    UnixDatagram,
    Type::DGRAM,
    UNIX,
    false,
    "A Unix `DatagramSocket` as a `std::os::unix::net::UnixDatagram`."
);
into_std!(
    DatagramSocket,
    OwnedFd,
    Type::DGRAM,
    ANY,
    false,
    "A `DatagramSocket`'s fd, of either family."
);

/// An `IoDevice`'s fd, handed back as it is: the device never changed its blocking mode, so neither
/// does this. Refused, with the device back in the error, while a wait is pending on it, when it is
/// closed, and for an attached fd (`Unsupported`: it was never the device's to give).
impl TryFrom<IoDevice> for OwnedFd {
    type Error = IntoStdError<IoDevice>;

    fn try_from(device: IoDevice) -> Result<OwnedFd, IntoStdError<IoDevice>> {
        match device.registration.take_for_conversion(|_| Ok(())) {
            Ok(fd) => Ok(fd),
            Err(e) => Err(IntoStdError::new(device, e)),
        }
    }
}

/// `AsRawFd` for an object with `native()`.
macro_rules! as_raw_fd {
    ($object:ident, $what:literal) => {
        #[doc = concat!(
            "The ", $what, "'s fd number, the same as [`native()`](", stringify!($object),
            "::native), or -1 once it is closed (or before it is opened). The ", $what,
            " keeps owning the fd, and its `close()` may close it at any time: use the number ",
            "for syscalls made right away, and never close it.\n\n",
            "There is no `AsFd`: a `BorrowedFd` promises that the fd stays open while it is ",
            "borrowed, but `close(&self)` closes it through any shared reference (a handler ",
            "holding an `Rc` of the ", $what, "), after which the number may name another file."
        )]
        impl AsRawFd for $object {
            fn as_raw_fd(&self) -> RawFd {
                self.native().unwrap_or(-1)
            }
        }
    };
}

as_raw_fd!(StreamSocket, "socket");
as_raw_fd!(Acceptor, "acceptor");
as_raw_fd!(DatagramSocket, "socket");
as_raw_fd!(IoDevice, "device");

//! Socket options shared by [`StreamSocket`](crate::StreamSocket), [`Acceptor`](crate::Acceptor) and
//! [`DatagramSocket`](crate::DatagramSocket), all through socket2 (no hand-written `setsockopt`).
//!
//! The IP-level options that exist under two names — `IP_TTL` / `IPV6_UNICAST_HOPS`, `IP_TOS` /
//! `IPV6_TCLASS`, `IP_MULTICAST_LOOP` / `IPV6_MULTICAST_LOOP`, `IP_MULTICAST_TTL` /
//! `IPV6_MULTICAST_HOPS` — are set under the name that matches the socket's family, so one call works
//! for IPv4 and IPv6 sockets. On a Unix socket they are an `Unsupported` error naming the option.

use std::io;

use socket2::{Domain, SockRef};

/// The IP version of a socket, or an error naming `option` for a Unix (or other) socket.
pub(crate) fn ip_version(s: &SockRef<'_>, option: &str) -> io::Result<bool> {
    match s.domain()? {
        Domain::IPV4 => Ok(false),
        Domain::IPV6 => Ok(true),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("{option} is an IP socket option; this socket is not an IPv4 or IPv6 socket"),
        )),
    }
}

pub(crate) fn set_ttl(s: &SockRef<'_>, ttl: u32) -> io::Result<()> {
    if ip_version(s, "TTL")? {
        s.set_unicast_hops_v6(ttl)
    } else {
        s.set_ttl_v4(ttl)
    }
}

pub(crate) fn ttl(s: &SockRef<'_>) -> io::Result<u32> {
    if ip_version(s, "TTL")? {
        s.unicast_hops_v6()
    } else {
        s.ttl_v4()
    }
}

pub(crate) fn set_tos(s: &SockRef<'_>, tos: u32) -> io::Result<()> {
    if ip_version(s, "TOS")? {
        s.set_tclass_v6(tos)
    } else {
        s.set_tos_v4(tos)
    }
}

pub(crate) fn tos(s: &SockRef<'_>) -> io::Result<u32> {
    if ip_version(s, "TOS")? {
        s.tclass_v6()
    } else {
        s.tos_v4()
    }
}

pub(crate) fn set_multicast_loop(s: &SockRef<'_>, on: bool) -> io::Result<()> {
    if ip_version(s, "multicast loop")? {
        s.set_multicast_loop_v6(on)
    } else {
        s.set_multicast_loop_v4(on)
    }
}

pub(crate) fn multicast_loop(s: &SockRef<'_>) -> io::Result<bool> {
    if ip_version(s, "multicast loop")? {
        s.multicast_loop_v6()
    } else {
        s.multicast_loop_v4()
    }
}

pub(crate) fn set_multicast_ttl(s: &SockRef<'_>, ttl: u32) -> io::Result<()> {
    if ip_version(s, "multicast TTL")? {
        s.set_multicast_hops_v6(ttl)
    } else {
        s.set_multicast_ttl_v4(ttl)
    }
}

pub(crate) fn multicast_ttl(s: &SockRef<'_>) -> io::Result<u32> {
    if ip_version(s, "multicast TTL")? {
        s.multicast_hops_v6()
    } else {
        s.multicast_ttl_v4()
    }
}

/// Option methods for a type with a `core: SocketCore` field: `socket_options!(ttl, tos, ...)` inside
/// its `impl` block. Each name gives a setter and a getter.
macro_rules! socket_options {
    ($($name:ident),* $(,)?) => {
        $( $crate::net::options::socket_options!(@$name); )*
    };
    (@ttl) => {
        /// Sets the unicast time-to-live of outgoing packets (`IP_TTL`, or `IPV6_UNICAST_HOPS` on an
        /// IPv6 socket).
        ///
        /// # Errors
        /// `NotConnected` if not open; `Unsupported` on a Unix socket; what `setsockopt` reports.
        pub fn set_ttl(&self, ttl: u32) -> std::io::Result<()> {
            self.core.with_socket(|s| $crate::net::options::set_ttl(&s, ttl))
        }

        /// The unicast time-to-live (`IP_TTL` or `IPV6_UNICAST_HOPS`).
        ///
        /// # Errors
        /// As for the setter.
        pub fn ttl(&self) -> std::io::Result<u32> {
            self.core.with_socket(|s| $crate::net::options::ttl(&s))
        }
    };
    (@tos) => {
        /// Sets the type-of-service byte (DSCP and ECN) of outgoing packets (`IP_TOS`, or
        /// `IPV6_TCLASS` on an IPv6 socket).
        ///
        /// # Errors
        /// `NotConnected` if not open; `Unsupported` on a Unix socket; what `setsockopt` reports.
        pub fn set_tos(&self, tos: u32) -> std::io::Result<()> {
            self.core.with_socket(|s| $crate::net::options::set_tos(&s, tos))
        }

        /// The type-of-service byte (`IP_TOS` or `IPV6_TCLASS`).
        ///
        /// # Errors
        /// As for the setter.
        pub fn tos(&self) -> std::io::Result<u32> {
            self.core.with_socket(|s| $crate::net::options::tos(&s))
        }
    };
    (@only_v6) => {
        /// Restricts an IPv6 socket to IPv6 (`IPV6_V6ONLY`; true) or lets it use IPv4-mapped
        /// addresses too. Set it before `bind`.
        ///
        /// # Errors
        /// `NotConnected` if not open; what `setsockopt` reports (e.g. on an IPv4 socket).
        pub fn set_only_v6(&self, only_v6: bool) -> std::io::Result<()> {
            self.core.with_socket(|s| s.set_only_v6(only_v6))
        }

        /// Whether `IPV6_V6ONLY` is set.
        ///
        /// # Errors
        /// As for the setter.
        pub fn only_v6(&self) -> std::io::Result<bool> {
            self.core.with_socket(|s| s.only_v6())
        }
    };
    (@reuse_address) => {
        /// Sets `SO_REUSEADDR` (set it before `bind`).
        ///
        /// # Errors
        /// `NotConnected` if not open; what `setsockopt` reports.
        pub fn set_reuse_address(&self, reuse: bool) -> std::io::Result<()> {
            self.core.with_socket(|s| s.set_reuse_address(reuse))
        }

        /// Whether `SO_REUSEADDR` is set.
        ///
        /// # Errors
        /// As for the setter.
        pub fn reuse_address(&self) -> std::io::Result<bool> {
            self.core.with_socket(|s| s.reuse_address())
        }
    };
    (@reuse_port) => {
        /// Sets `SO_REUSEPORT` (set it before `bind`): several sockets, e.g. one per loop and core, may
        /// then bind the same address and the kernel spreads connections or datagrams among them.
        ///
        /// # Errors
        /// `NotConnected` if not open; what `setsockopt` reports.
        pub fn set_reuse_port(&self, reuse: bool) -> std::io::Result<()> {
            self.core.with_socket(|s| s.set_reuse_port(reuse))
        }

        /// Whether `SO_REUSEPORT` is set.
        ///
        /// # Errors
        /// As for the setter.
        pub fn reuse_port(&self) -> std::io::Result<bool> {
            self.core.with_socket(|s| s.reuse_port())
        }
    };
    (@linger) => {
        /// Sets `SO_LINGER`: `Some(timeout)` makes closing wait (in the kernel, not on the loop) for
        /// unsent data up to `timeout`; `Some(Duration::ZERO)` makes close reset the connection;
        /// `None` (the default) closes in the background.
        ///
        /// # Errors
        /// `NotConnected` if not open; what `setsockopt` reports.
        pub fn set_linger(&self, linger: Option<std::time::Duration>) -> std::io::Result<()> {
            self.core.with_socket(|s| s.set_linger(linger))
        }

        /// `SO_LINGER` as the kernel reports it (whole seconds).
        ///
        /// # Errors
        /// As for the setter.
        pub fn linger(&self) -> std::io::Result<Option<std::time::Duration>> {
            self.core.with_socket(|s| s.linger())
        }
    };
    (@buffer_sizes) => {
        /// Sets `SO_SNDBUF` (the kernel may double or clamp it).
        ///
        /// # Errors
        /// `NotConnected` if not open; what `setsockopt` reports.
        pub fn set_send_buffer_size(&self, bytes: usize) -> std::io::Result<()> {
            self.core.with_socket(|s| s.set_send_buffer_size(bytes))
        }

        /// `SO_SNDBUF` as the kernel reports it.
        ///
        /// # Errors
        /// As for the setter.
        pub fn send_buffer_size(&self) -> std::io::Result<usize> {
            self.core.with_socket(|s| s.send_buffer_size())
        }

        /// Sets `SO_RCVBUF` (the kernel may double or clamp it).
        ///
        /// # Errors
        /// `NotConnected` if not open; what `setsockopt` reports.
        pub fn set_recv_buffer_size(&self, bytes: usize) -> std::io::Result<()> {
            self.core.with_socket(|s| s.set_recv_buffer_size(bytes))
        }

        /// `SO_RCVBUF` as the kernel reports it.
        ///
        /// # Errors
        /// As for the setter.
        pub fn recv_buffer_size(&self) -> std::io::Result<usize> {
            self.core.with_socket(|s| s.recv_buffer_size())
        }
    };
}

pub(crate) use socket_options;

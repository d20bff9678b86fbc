//! Socket addresses for IP and Unix-domain sockets in one type.
//!
//! [`Endpoint`] plays the role of booster::aio's `endpoint`, or Boost.Asio's
//! `ip::tcp::endpoint` and `local::stream_protocol::endpoint` combined, so the
//! same code can listen on or connect to a TCP port or a Unix socket depending
//! only on a configuration string such as `127.0.0.1:8080` or `unix:/run/app.sock`.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::mem::{offset_of, size_of};
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use socket2::{Domain, SockAddr};

/// Size of `sockaddr_un::sun_path` (108 on Linux).
const SUN_PATH_LEN: usize =
    size_of::<libc::sockaddr_un>() - offset_of!(libc::sockaddr_un, sun_path);
/// Longest path or abstract name that fits: one byte goes to the trailing
/// (path) or leading (abstract name) NUL.
const MAX_NAME_LEN: usize = SUN_PATH_LEN - 1;

/// Address family of an [`Endpoint`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Family {
    /// `AF_INET`.
    Ipv4,
    /// `AF_INET6`.
    Ipv6,
    /// `AF_UNIX` (paths, abstract names and unnamed sockets).
    Unix,
}

impl Family {
    /// The socket2 domain for creating a socket of this family.
    pub fn domain(self) -> Domain {
        match self {
            Family::Ipv4 => Domain::IPV4,
            Family::Ipv6 => Domain::IPV6,
            Family::Unix => Domain::UNIX,
        }
    }
}

/// A socket address: IPv4, IPv6, a Unix socket path, a Linux abstract Unix
/// name, or an unnamed Unix socket.
///
/// Parse one from a string (see [`FromStr`](#impl-FromStr-for-Endpoint)) and
/// print it back with [`Display`](fmt::Display):
///
/// ```
/// use aio::Endpoint;
///
/// let tcp: Endpoint = "127.0.0.1:8080".parse()?;
/// assert_eq!(tcp.port(), Some(8080));
/// assert!(!tcp.is_unix());
///
/// let unix: Endpoint = "unix:/tmp/app.sock".parse()?;
/// assert!(unix.is_unix());
/// assert_eq!(unix.to_string(), "unix:/tmp/app.sock");
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub enum Endpoint {
    /// An IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A Unix socket bound to a filesystem path.
    Unix(PathBuf),
    /// A Linux abstract Unix socket name (no filesystem entry). Bytes of the
    /// name, without the leading NUL.
    Abstract(Vec<u8>),
    /// A Unix socket with no name (a connecting client, or one end of a
    /// socket pair).
    Unnamed,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// Why `bytes` cannot be a Unix socket path (or, with `abstract_name`, an
/// abstract name), if it cannot.
fn check_unix(bytes: &[u8], abstract_name: bool) -> Result<(), String> {
    let what = if abstract_name {
        "abstract Unix socket name"
    } else {
        "Unix socket path"
    };
    if bytes.len() > MAX_NAME_LEN {
        let n = bytes.len();
        Err(format!(
            "{what} is {n} bytes, longer than the {MAX_NAME_LEN} that sun_path holds"
        ))
    } else if abstract_name {
        Ok(())
    } else if bytes.is_empty() {
        Err("empty Unix socket path".to_owned())
    } else if bytes.contains(&0) {
        Err("Unix socket path contains a NUL byte".to_owned())
    } else {
        Ok(())
    }
}

fn unusable(ep: &Endpoint, why: String) -> io::Error {
    invalid(format!("cannot use endpoint {:?}: {why}", ep.to_string()))
}

impl Endpoint {
    /// An IP endpoint.
    pub fn ip(addr: impl Into<SocketAddr>) -> Endpoint {
        Endpoint::Ip(addr.into())
    }

    /// A Unix socket path endpoint. The path is checked by
    /// [`to_sock_addr`](Self::to_sock_addr), not here.
    pub fn unix(path: impl Into<PathBuf>) -> Endpoint {
        Endpoint::Unix(path.into())
    }

    /// A Linux abstract Unix socket name, without the leading NUL.
    pub fn abstract_name(name: impl Into<Vec<u8>>) -> Endpoint {
        Endpoint::Abstract(name.into())
    }

    /// The address family; [`Family::Unix`] for all Unix variants.
    pub fn family(&self) -> Family {
        match self {
            Endpoint::Ip(SocketAddr::V4(_)) => Family::Ipv4,
            Endpoint::Ip(SocketAddr::V6(_)) => Family::Ipv6,
            _ => Family::Unix,
        }
    }

    /// Whether this is a Unix-domain endpoint (path, abstract or unnamed).
    pub fn is_unix(&self) -> bool {
        !matches!(self, Endpoint::Ip(_))
    }

    /// The IP socket address, if this is an IP endpoint.
    pub fn as_ip(&self) -> Option<SocketAddr> {
        match self {
            Endpoint::Ip(addr) => Some(*addr),
            _ => None,
        }
    }

    /// The port, if this is an IP endpoint.
    pub fn port(&self) -> Option<u16> {
        self.as_ip().map(|a| a.port())
    }

    /// The filesystem path, if this is a Unix path endpoint.
    pub fn unix_path(&self) -> Option<&Path> {
        match self {
            Endpoint::Unix(path) => Some(path),
            _ => None,
        }
    }

    /// Converts to a socket2 address for `bind`/`connect`.
    ///
    /// Fails with [`InvalidInput`](io::ErrorKind::InvalidInput) for an empty
    /// Unix path, one containing a NUL byte, or a path or abstract name longer
    /// than `sun_path` holds (107 bytes on Linux). [`Endpoint::Unnamed`]
    /// becomes an `AF_UNIX` address holding only the family; binding that on
    /// Linux auto-binds the socket to a kernel-chosen abstract name.
    pub fn to_sock_addr(&self) -> io::Result<SockAddr> {
        match self {
            Endpoint::Ip(addr) => Ok(SockAddr::from(*addr)),
            Endpoint::Unix(path) => {
                let bytes = path.as_os_str().as_bytes();
                check_unix(bytes, false).map_err(|why| unusable(self, why))?;
                SockAddr::unix(path)
            }
            Endpoint::Abstract(name) => {
                check_unix(name, true).map_err(|why| unusable(self, why))?;
                // socket2 treats a leading NUL as an abstract name and sets the
                // length to offset(sun_path) + 1 + name.len(), with no trailing NUL.
                let mut bytes = Vec::with_capacity(name.len() + 1);
                bytes.push(0);
                bytes.extend_from_slice(name);
                SockAddr::unix(OsStr::from_bytes(&bytes))
            }
            // An empty path gives length offset(sun_path): the family only.
            Endpoint::Unnamed => SockAddr::unix(""),
        }
    }

    /// Converts a socket2 address (e.g. from `accept` or `getsockname`) back
    /// into an endpoint.
    ///
    /// `AF_UNIX` addresses holding only the family are [`Endpoint::Unnamed`];
    /// a leading NUL in `sun_path` makes an [`Endpoint::Abstract`] name (the
    /// bytes after it, up to the address length); otherwise the path runs up
    /// to the first NUL. Other families than `AF_INET`, `AF_INET6` and
    /// `AF_UNIX` are an [`InvalidInput`](io::ErrorKind::InvalidInput) error.
    pub fn from_sock_addr(addr: &SockAddr) -> io::Result<Endpoint> {
        if let Some(ip) = addr.as_socket() {
            return Ok(Endpoint::Ip(ip));
        }
        let family = addr.family();
        if i32::from(family) != libc::AF_UNIX {
            return Err(invalid(format!("unsupported address family {family}")));
        }
        let offset = offset_of!(libc::sockaddr_un, sun_path);
        let len = (addr.len() as usize)
            .saturating_sub(offset)
            .min(SUN_PATH_LEN);
        // SAFETY: the family is AF_UNIX, so the storage holds a `sockaddr_un`.
        // `SockAddrStorage` is a transparent `sockaddr_storage`, a plain value
        // of integer fields (so every byte is initialised) that is larger than
        // and at least as aligned as `sockaddr_un`; `len` is clamped to
        // `sun_path`, and `c_char` and `u8` have the same layout.
        let sun_path: &[u8] = unsafe {
            let un = &*addr.as_ptr().cast::<libc::sockaddr_un>();
            std::slice::from_raw_parts(un.sun_path.as_ptr().cast::<u8>(), len)
        };
        Ok(match sun_path.split_first() {
            None => Endpoint::Unnamed,
            Some((0, name)) => Endpoint::Abstract(name.to_vec()),
            Some(_) => {
                let end = sun_path.iter().position(|&b| b == 0).unwrap_or(len);
                Endpoint::Unix(PathBuf::from(OsStr::from_bytes(&sun_path[..end])))
            }
        })
    }
}

/// Parses `IP:PORT`, `[IPv6]:PORT` (with an optional `%scope`), `unix:PATH`
/// (absolute or relative) or `unix:@NAME` (Linux abstract name).
///
/// Host names are not resolved: `localhost:80` is an error. Errors have kind
/// [`InvalidInput`](io::ErrorKind::InvalidInput) and quote the input.
///
/// ```
/// use aio::Endpoint;
///
/// let v6: Endpoint = "[::1]:8080".parse()?;
/// assert_eq!(v6.port(), Some(8080));
/// let path: Endpoint = "unix:/tmp/x.sock".parse()?;
/// assert_eq!(path, Endpoint::unix("/tmp/x.sock"));
/// let name: Endpoint = "unix:@name".parse()?;
/// assert_eq!(name, Endpoint::abstract_name("name"));
/// assert!("localhost:80".parse::<Endpoint>().is_err());
/// # Ok::<(), std::io::Error>(())
/// ```
impl FromStr for Endpoint {
    type Err = io::Error;

    fn from_str(s: &str) -> io::Result<Endpoint> {
        let fail = |reason: &str| invalid(format!("invalid endpoint {s:?}: {reason}"));
        if let Some(rest) = s.strip_prefix("unix:") {
            return match rest.strip_prefix('@') {
                Some("") => Err(fail("empty abstract Unix socket name")),
                Some(name) => match check_unix(name.as_bytes(), true) {
                    Ok(()) => Ok(Endpoint::Abstract(name.as_bytes().to_vec())),
                    Err(why) => Err(fail(&why)),
                },
                None => match check_unix(rest.as_bytes(), false) {
                    Ok(()) => Ok(Endpoint::Unix(PathBuf::from(rest))),
                    Err(why) => Err(fail(&why)),
                },
            };
        }
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Endpoint::Ip(addr));
        }
        let host_port = s.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && !host.contains([':', '[', ']']) && port.parse::<u16>().is_ok()
        });
        Err(fail(
            if s.parse::<IpAddr>().is_ok() || s.starts_with('[') && s.ends_with(']') {
                "missing port (expected IP:PORT or [IPv6]:PORT)"
            } else if host_port {
                "host names are not resolved; a numeric IP address is required"
            } else {
                "expected IP:PORT, [IPv6]:PORT, unix:PATH or unix:@NAME"
            },
        ))
    }
}

/// Writes `127.0.0.1:8080`, `[::1]:8080`, `unix:/tmp/x.sock`, `unix:@name`, or `unix:(unnamed)`
/// for [`Endpoint::Unnamed`] (which does not parse back: it would name a file). Non-UTF-8 bytes are
/// shown lossily. A relative path starting with `@` is written as
/// `unix:./@...` so that it does not read back as an abstract name.
///
/// ```
/// use aio::Endpoint;
///
/// let ep: Endpoint = "[::1]:8080".parse()?;
/// assert_eq!(ep.to_string(), "[::1]:8080");
/// assert_eq!(Endpoint::abstract_name("name").to_string(), "unix:@name");
/// assert_eq!(Endpoint::Unnamed.to_string(), "unix:(unnamed)");
/// # Ok::<(), std::io::Error>(())
/// ```
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Ip(addr) => write!(f, "{addr}"),
            Endpoint::Unix(path) => {
                let dot = if path.as_os_str().as_bytes().starts_with(b"@") {
                    "./"
                } else {
                    ""
                };
                write!(f, "unix:{dot}{}", path.to_string_lossy())
            }
            Endpoint::Abstract(name) => write!(f, "unix:@{}", String::from_utf8_lossy(name)),
            Endpoint::Unnamed => f.write_str("unix:(unnamed)"),
        }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Endpoint {
        Endpoint::Ip(addr)
    }
}

impl From<SocketAddrV4> for Endpoint {
    fn from(addr: SocketAddrV4) -> Endpoint {
        Endpoint::Ip(addr.into())
    }
}

impl From<SocketAddrV6> for Endpoint {
    fn from(addr: SocketAddrV6) -> Endpoint {
        Endpoint::Ip(addr.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(s: &str) -> Endpoint {
        s.parse().unwrap()
    }

    fn rt(e: &Endpoint) -> Endpoint {
        Endpoint::from_sock_addr(&e.to_sock_addr().unwrap()).unwrap()
    }

    fn err(r: io::Result<impl fmt::Debug>, want: &str) {
        let e = r.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains(want), "{e} !~ {want}");
    }

    #[test]
    fn parse_display_round_trip() {
        let (p, n) = ("p".repeat(MAX_NAME_LEN - 1), "n".repeat(MAX_NAME_LEN));
        let forms = "127.0.0.1:8080|0.0.0.0:0|[::1]:8080|[fe80::1%2]:80|unix:/tmp/x.sock|unix:x.sock|unix:@name|unix:@a b|unix:/ünï";
        let long = [format!("unix:/{p}"), format!("unix:@{n}")];
        for s in forms.split('|').map(str::to_owned).chain(long) {
            assert_eq!(ep(&s).to_string(), s);
            assert_eq!(ep(&ep(&s).to_string()), ep(&s));
        }
    }

    #[test]
    fn values_queries_and_display() {
        let v4 = ep("127.0.0.1:8080");
        assert_eq!(v4, SocketAddrV4::new([127, 0, 0, 1].into(), 8080).into());
        assert!(v4.family() == Family::Ipv4 && v4.port() == Some(8080));
        assert!(!v4.is_unix() && v4.unix_path().is_none());
        let v6 = ep("[fe80::1%2]:80");
        assert!(matches!(v6.as_ip(), Some(SocketAddr::V6(a)) if a.scope_id() == 2));
        assert!(
            v6.family().domain() == Domain::IPV6 && Endpoint::from(rt(&v6).as_ip().unwrap()) == v6
        );
        let u = ep("unix:x.sock");
        assert!(u.unix_path() == Some(Path::new("x.sock")) && u.as_ip().is_none());
        assert!(u.is_unix() && u.port().is_none() && u.family().domain() == Domain::UNIX);
        assert_eq!(ep("unix:@name"), Endpoint::Abstract(b"name".to_vec()));
        assert!(Endpoint::Unnamed.is_unix() && Endpoint::Unnamed.family() == Family::Unix);
        let bad = OsStr::from_bytes(b"/\xff").to_owned();
        assert_eq!(Endpoint::unix(bad).to_string(), "unix:/\u{fffd}");
        let bad = Endpoint::abstract_name(*b"\xff");
        assert_eq!(bad.to_string(), "unix:@\u{fffd}");
        assert_eq!(Endpoint::Unnamed.to_string(), "unix:(unnamed)");
        assert_eq!(Endpoint::unix("@x").to_string(), "unix:./@x");
        assert_eq!(ep("unix:./@x"), Endpoint::unix("./@x"));
    }

    #[test]
    fn parse_errors() {
        let table = r#"foo => invalid endpoint "foo": expected IP:PORT, [IPv6]:PORT, unix:PATH or unix:@NAME
unix: => invalid endpoint "unix:": empty Unix socket path
unix:@ => invalid endpoint "unix:@": empty abstract Unix socket name
localhost:80 => "localhost:80": host names are not resolved; a numeric IP address is required
example.com:443 => a numeric IP address is required
127.0.0.1 => "127.0.0.1": missing port
[::1] => missing port
127.0.0.1:99999 => expected IP:PORT
 => invalid endpoint "": expected IP:PORT"#;
        for (s, want) in table.lines().filter_map(|l| l.split_once(" => ")) {
            err(s.parse::<Endpoint>(), want);
        }
        let nul = "unix:/a\0b".parse::<Endpoint>();
        err(nul, "Unix socket path contains a NUL byte");
        let p = format!("unix:/{}", "p".repeat(MAX_NAME_LEN));
        let msg = format!("{p:?}: Unix socket path is 108 bytes, longer than the 107 that");
        err(p.parse::<Endpoint>(), &msg);
        let n = format!("unix:@{}", "n".repeat(MAX_NAME_LEN + 1));
        err(
            n.parse::<Endpoint>(),
            "abstract Unix socket name is 108 bytes",
        );
    }

    #[test]
    fn garbage_never_panics() {
        let odd = "|:|::|[|]|[]:|[::1|::1]:80|1.2.3.4:|:80|unix|unix:@@|@|ü:80|日本:8|\0|\u{fffd}:1|[fe80::1%]:80|[::1%eth0]:1| 1.2.3.4:80";
        let huge = "9".repeat(100_000);
        let bytes = (0..=255u8).map(|b| String::from_utf8_lossy(&[b, b':', b'1']).into_owned());
        let all: Vec<String> = odd
            .split('|')
            .chain([&*huge])
            .map(str::to_owned)
            .chain(bytes)
            .collect();
        for s in all {
            let prefixed = [
                format!("unix:{s}"),
                format!("unix:@{s}"),
                format!("[{s}]:1"),
            ];
            for s in prefixed.into_iter().chain([s]) {
                if let Ok(ep) = s.parse::<Endpoint>() {
                    let _ = (ep.to_sock_addr(), ep.to_string());
                }
            }
        }
    }

    #[test]
    fn sock_addr_round_trip() {
        let forms = "127.0.0.1:8080|[fe80::1%2]:80|unix:/tmp/x.sock|unix:rel|unix:@name";
        let mut cases: Vec<Endpoint> = forms.split('|').map(ep).collect();
        cases.push(Endpoint::unix(format!("/{}", "p".repeat(MAX_NAME_LEN - 1))));
        cases.push(Endpoint::abstract_name(vec![b'z'; MAX_NAME_LEN]));
        cases.extend([Endpoint::abstract_name(*b"a\0b\xff"), Endpoint::Unnamed]);
        for e in cases {
            assert_eq!(rt(&e), e);
        }
        let sa = Endpoint::abstract_name("name").to_sock_addr().unwrap();
        let offset = offset_of!(libc::sockaddr_un, sun_path);
        assert_eq!(sa.len() as usize, offset + 1 + 4);
        assert_eq!(sa.as_abstract_namespace(), Some(&b"name"[..]));
        let sa = Endpoint::Unnamed.to_sock_addr().unwrap();
        assert_eq!(sa.len() as usize, size_of::<libc::sa_family_t>());
        // Path lengths without the trailing NUL, and over all of sun_path.
        let full = ep("unix:/tmp/s").to_sock_addr().unwrap();
        let whole = size_of::<libc::sockaddr_un>() as libc::socklen_t;
        for len in [full.len() - 1, whole] {
            // SAFETY: the storage is fully initialised (zeroed, then filled).
            let sa = unsafe { SockAddr::new(full.clone().as_storage(), len) };
            assert_eq!(Endpoint::from_sock_addr(&sa).unwrap(), ep("unix:/tmp/s"));
        }
    }

    #[test]
    fn sock_addr_errors() {
        let p = format!("/{}", "p".repeat(MAX_NAME_LEN));
        let msg = format!("\"unix:{p}\": Unix socket path is 108 bytes, longer than the 107");
        err(Endpoint::unix(&p).to_sock_addr(), &msg);
        let long = Endpoint::abstract_name(vec![b'z'; MAX_NAME_LEN + 1]).to_sock_addr();
        err(long, "abstract Unix socket name is 108 bytes");
        let empty = Endpoint::unix("").to_sock_addr();
        err(
            empty,
            r#"cannot use endpoint "unix:": empty Unix socket path"#,
        );
        let nul = Endpoint::unix(OsStr::from_bytes(b"/\0")).to_sock_addr();
        err(nul, "contains a NUL byte");
        let vsock = Endpoint::from_sock_addr(&SockAddr::vsock(1, 2));
        err(
            vsock,
            &format!("unsupported address family {}", libc::AF_VSOCK),
        );
    }

    #[test]
    fn bind_real_sockets() {
        use socket2::{Socket, Type};
        let dir = std::env::temp_dir().join(format!("aio-ep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let name = format!("aio-ep-test-{}", std::process::id());
        let (path, name) = (Endpoint::unix(dir.join("s")), Endpoint::abstract_name(name));
        for ep in [ep("127.0.0.1:0"), path, name] {
            let sock = Socket::new(ep.family().domain(), Type::STREAM, None).unwrap();
            sock.bind(&ep.to_sock_addr().unwrap()).unwrap();
            let local = Endpoint::from_sock_addr(&sock.local_addr().unwrap()).unwrap();
            assert!(local == ep || (ep.port() == Some(0) && local.family() == Family::Ipv4));
        }
        let (a, _b) = Socket::pair(Domain::UNIX, Type::STREAM, None).unwrap();
        let local = Endpoint::from_sock_addr(&a.local_addr().unwrap()).unwrap();
        assert_eq!(local, Endpoint::Unnamed);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

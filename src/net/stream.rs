//! [`StreamSocket`]: a connected byte stream, TCP or Unix, behind one type.
//!
//! booster's `stream_socket` and Asio's `ip::tcp::socket` / `local::stream_protocol::socket` in one:
//! the endpoint decides the family, so the same code serves TCP and Unix sockets (Asio's
//! `generic::stream_protocol::socket`). [`dial_host`](StreamSocket::dial_host) adds host names, and
//! [`send_fds`](StreamSocket::send_fds) / [`recv_fds`](StreamSocket::recv_fds) pass file descriptors
//! over Unix sockets.

use std::io;
use std::net::Shutdown;
use std::ops::ControlFlow;
use std::os::fd::OwnedFd;

use socket2::{Domain, Socket, Type};

use crate::LocalHandle;
use crate::buf::{GrowableBuf, IoBuf, IoBufMut};
use crate::endpoint::{Endpoint, Family};
use crate::net::hooks::SocketHooks;
use crate::net::options::socket_options;
use crate::net::registration::registered_object;
use crate::net::socket::SocketCore;
use crate::op::nonblocking;
#[cfg(any(feature = "futures-io", feature = "tokio-io", feature = "hyper"))]
use crate::op::poll_io::DirectionWait;
use crate::op::read_each::ReadEach;
use crate::op::write::send;
use crate::op::{
    Connect, Interest, Op, ReadBuf, ReadExact, ReadSome, ReadStream, ReadVectored, RecvFds,
    SendFds, WriteAll, WriteSome, WriteVectored,
};

/// A stream socket (TCP or Unix) bound to a loop.
///
/// Methods take `&self`, so a socket can sit in an `Rc`-shared session and be used from its handlers.
/// Operations return an [`Op`]: finish it with `.then(handler)` or `.await`. Dropping or closing the
/// socket completes its pending operations with `ECANCELED`.
///
/// ```
/// use aio::{Acceptor, Endpoint, IoService, StreamSocket};
/// let svc = IoService::new()?;
/// let acceptor = Acceptor::bind(&svc, &"127.0.0.1:0".parse()?)?;
/// let addr = acceptor.local_endpoint()?;
/// let client = svc.spawn({
///     let svc = svc.local();
///     async move {
///         let socket = StreamSocket::dial(&svc, &addr).await?;
///         let (res, _) = socket.write_all(b"hello".to_vec()).await;
///         res
///     }
/// });
/// let (socket, _peer) = svc.block_on(acceptor.accept())?;
/// let (res, buf) = svc.block_on(socket.read_exact(vec![0; 5]));
/// res?;
/// assert_eq!(buf, b"hello");
/// svc.block_on(client).unwrap()?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct StreamSocket {
    pub(crate) core: SocketCore,
}

impl StreamSocket {
    /// A socket that is not open yet (booster's `stream_socket s(srv)`): `open`, `bind` or `connect`
    /// opens it.
    pub fn new(svc: &LocalHandle) -> StreamSocket {
        StreamSocket {
            core: SocketCore::new(svc),
        }
    }

    /// A socket that is not open yet, whose fds get `hooks`: `on_open` runs right after `open`,
    /// `bind` or `connect` creates the fd (before binding or connecting), `on_close` right before the
    /// fd closes, whatever closes it (see [`SocketHooks`]).
    pub fn with_hooks(svc: &LocalHandle, hooks: SocketHooks) -> StreamSocket {
        StreamSocket {
            core: SocketCore::with_hooks(svc, hooks),
        }
    }

    /// A connected pair of Unix stream sockets (booster's `socket_pair`).
    ///
    /// # Errors
    /// What `socketpair(2)` or registering with the loop reports.
    pub fn pair(svc: &LocalHandle) -> io::Result<(StreamSocket, StreamSocket)> {
        let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM.nonblocking(), None)?;
        let first = StreamSocket::new(svc);
        first.core.register(OwnedFd::from(a))?;
        first.core.set_family(Family::Unix);
        let second = StreamSocket::new(svc);
        second.core.register(OwnedFd::from(b))?;
        second.core.set_family(Family::Unix);
        Ok((first, second))
    }

    /// Takes ownership of a connected stream socket (a `std::net::TcpStream`,
    /// `std::os::unix::net::UnixStream`, or any `OwnedFd` of one) and makes it non-blocking: the
    /// way from std into `aio` (it needs the loop, so it is no `From`). `TryFrom` goes back.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::net::{TcpListener, TcpStream};
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let listener = TcpListener::bind("127.0.0.1:0")?;
    /// let mut client = TcpStream::connect(listener.local_addr()?)?;
    /// let socket = StreamSocket::from_fd(&svc, listener.accept()?.0)?;
    /// client.write_all(b"ping")?;
    /// let (res, buf) = svc.block_on(socket.read_exact(vec![0; 4]));
    /// res?;
    /// assert_eq!(buf, b"ping");
    /// // Back to std, blocking again.
    /// let mut server = TcpStream::try_from(socket)?;
    /// server.write_all(b"pong")?;
    /// let mut reply = [0; 4];
    /// client.read_exact(&mut reply)?;
    /// assert_eq!(&reply, b"pong");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// If the fd cannot be made non-blocking or registered with the loop.
    pub fn from_fd(svc: &LocalHandle, fd: impl Into<OwnedFd>) -> io::Result<StreamSocket> {
        let socket = StreamSocket::new(svc);
        socket.core.adopt(fd.into())?;
        Ok(socket)
    }

    /// An accepted connection, with the acceptor's hooks (`on_open` runs here).
    pub(crate) fn from_accepted(
        svc: &LocalHandle,
        fd: OwnedFd,
        family: Family,
        hooks: &SocketHooks,
    ) -> io::Result<StreamSocket> {
        let socket = StreamSocket::new(svc);
        let slot = hooks.prepare(fd)?;
        socket.core.register_slot(slot)?;
        socket.core.set_family(family);
        Ok(socket)
    }

    /// Opens the socket for `family` (booster's `open`), closing any socket held before.
    ///
    /// # Errors
    /// `AlreadyExists` if it is open; what `socket(2)` reports.
    pub fn open(&self, family: Family) -> io::Result<()> {
        self.core.open(family, Type::STREAM)
    }

    /// Binds the local end (opening the socket for the endpoint's family first if needed).
    ///
    /// # Errors
    /// What `bind(2)` reports, with the endpoint in the message.
    pub fn bind(&self, endpoint: &Endpoint) -> io::Result<()> {
        let addr = endpoint.to_sock_addr()?;
        self.core.ensure_open(endpoint, Type::STREAM)?;
        self.core
            .with_socket(|s| s.bind(&addr))
            .map_err(|e| io::Error::new(e.kind(), format!("bind to {endpoint}: {e}")))
    }

    /// Connects to `endpoint`, opening the socket for its family first if needed (booster's
    /// `async_connect`). Completes with `Ok(())` once connected.
    pub fn connect(&self, endpoint: &Endpoint) -> Op<Connect> {
        let prepared = endpoint.to_sock_addr().and_then(|addr| {
            self.core.ensure_open(endpoint, Type::STREAM)?;
            Ok(addr)
        });
        match prepared {
            Ok(addr) => self.core.op(Connect::new(endpoint.clone(), addr)),
            Err(e) => self
                .core
                .failed_op(Connect::unprepared(endpoint.clone()), e),
        }
    }

    /// Reads what is available into the buffer **from its start**: into `[0..bytes_total)` (a
    /// `Vec`'s or `BytesMut`'s whole capacity), overwriting what the buffer held there. Completes
    /// with the count `n` read (`Ok(0)`: end of stream), the new bytes being `buf[..n]`; a `Vec` or
    /// `BytesMut` shorter than `n` gets its length raised to `n`, a longer one keeps its length.
    ///
    /// To keep what the buffer holds (half a frame) and add after it, use
    /// [`read_buf`](StreamSocket::read_buf), or pass `buf.slice(len..)` here.
    ///
    /// ```
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let (a, b) = StreamSocket::pair(&svc)?;
    /// a.try_write(b"new")?;
    /// let (res, buf) = svc.block_on(b.read_some(b"old bytes".to_vec()));
    /// assert_eq!(res?, 3);
    /// assert_eq!(buf, b"new bytes"); // overwritten from the start
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_some<B: IoBufMut>(&self, buf: B) -> Op<ReadSome<B>> {
        self.core.op(ReadSome::new(buf))
    }

    /// Reads what is available and **appends** it: into the spare capacity after the buffer's
    /// length, which then grows by the count read (tokio's `read_buf`). Completes with the count
    /// (`Ok(0)`: end of stream, or no room: see below) and the buffer.
    ///
    /// A buffer with no spare capacity gets 8 KiB reserved first (through
    /// [`GrowableBuf::reserve`]); otherwise what spare capacity there is bounds the read, so
    /// `reserve` before calling for larger reads. The read is the same syscall (or io_uring
    /// request) as [`read_some`](StreamSocket::read_some)'s, made on the spare capacity in place:
    /// nothing is copied. Works with `Vec<u8>` and `bytes::BytesMut` (any [`GrowableBuf`]).
    ///
    /// ```
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let (a, b) = StreamSocket::pair(&svc)?;
    /// let mut buf = bytes::BytesMut::new();
    /// for part in [&b"GET / HT"[..], b"TP/1.1\r\n"] {
    ///     a.try_write(part)?;
    ///     let (res, back) = svc.block_on(b.read_buf(buf));
    ///     res?;
    ///     buf = back; // the earlier bytes are kept, the new ones added after them
    /// }
    /// assert_eq!(&buf[..], b"GET / HTTP/1.1\r\n");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_buf<B: GrowableBuf>(&self, buf: B) -> Op<ReadBuf<B>> {
        self.core.op(ReadBuf::new(buf))
    }

    /// Fills the whole buffer (its capacity; use [`IoBuf::slice`] for less); an end of stream first
    /// is `UnexpectedEof`.
    pub fn read_exact<B: IoBufMut>(&self, buf: B) -> Op<ReadExact<B>> {
        self.core.op(ReadExact::new(buf))
    }

    /// Reads into several buffers in order (scatter).
    pub fn read_vectored<B: IoBufMut>(&self, bufs: Vec<B>) -> Op<ReadVectored<B>> {
        self.core.op(ReadVectored::new(bufs))
    }

    /// Writes what the socket takes now (at least one byte of a non-empty buffer).
    pub fn write_some<B: IoBuf>(&self, buf: B) -> Op<WriteSome<B>> {
        self.core.op(WriteSome::new(buf))
    }

    /// Writes every initialised byte of the buffer (booster's `async_write`).
    pub fn write_all<B: IoBuf>(&self, buf: B) -> Op<WriteAll<B>> {
        self.core.op(WriteAll::new(buf))
    }

    /// Reads chunk after chunk into `buf`, handing each to `handler`, until the handler returns
    /// [`ControlFlow::Break`], the stream ends or an error comes (libuv's `uv_read_start`).
    ///
    /// `handler` gets `Ok(chunk)` for each read (the bytes at the start of `buf`, valid for the
    /// call), then once `Ok(&[])` at the end of the stream or `Err(e)` on an error, a `cancel()` or
    /// a `close()` (`ECANCELED`), after which it is dropped. It runs on the loop, never inside this
    /// call. One operation serves every chunk, in place: no allocation and no re-queueing per
    /// read. While it lasts it has the socket's reading side to itself: other reads started
    /// meanwhile wait behind it (and `try_read` says `WouldBlock`) until it ends. With
    /// [`try_write`](StreamSocket::try_write) it makes the cheapest echo; to write more than the
    /// socket takes at once, break, write the rest with [`write_all`](StreamSocket::write_all) and
    /// call `read_each` again from its handler.
    ///
    /// ```
    /// use std::ops::ControlFlow;
    /// use std::{cell::RefCell, rc::Rc};
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let (a, b) = StreamSocket::pair(&svc)?;
    /// let got = Rc::new(RefCell::new(Vec::new()));
    /// b.read_each(vec![0u8; 4096], {
    ///     let got = got.clone();
    ///     move |res| match res {
    ///         Ok(chunk) if !chunk.is_empty() => {
    ///             got.borrow_mut().extend_from_slice(chunk);
    ///             ControlFlow::Continue(())
    ///         }
    ///         _ => ControlFlow::Break(()), // end of stream (or an error)
    ///     }
    /// });
    /// a.write_all(b"hello".to_vec()).then(move |(res, _)| {
    ///     res.expect("write");
    ///     drop(a); // end of stream for `b`
    /// });
    /// svc.run_until_done()?;
    /// assert_eq!(*got.borrow(), b"hello");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_each<B, F>(&self, buf: B, handler: F)
    where
        B: IoBufMut,
        F: FnMut(io::Result<&[u8]>) -> ControlFlow<()> + 'static,
    {
        ReadEach::start(self.core.svc().reactor(), self.core.token(), buf, handler);
    }

    /// Reads chunk after chunk into `buf`, for a task to await one at a time with
    /// [`ReadStream::next`]: the future-style twin of [`read_each`](StreamSocket::read_each).
    ///
    /// One operation serves the whole stream, in place: the loop reads each chunk where it finds the
    /// socket ready and hands it to the awaiting task (no operation made, queued or dropped per
    /// read). A chunk borrows the buffer until dropped. While the stream lasts it has the socket's
    /// reading side to itself: other reads started meanwhile wait behind it (and `try_read` says
    /// `WouldBlock`) until it is dropped or ends. With [`try_write`](StreamSocket::try_write) it
    /// makes the cheapest echo in the future style:
    ///
    /// ```
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let (client, server) = StreamSocket::pair(&svc)?;
    /// svc.spawn(async move {
    ///     let mut chunks = server.read_stream(vec![0u8; 4096]);
    ///     while let Some(Ok(chunk)) = chunks.next().await {
    ///         let sent = server.try_write(&chunk).unwrap_or(0);
    ///         if sent < chunk.len() {
    ///             // The socket took less: write the rest, waiting as long as it takes.
    ///             let rest = chunk[sent..].to_vec();
    ///             drop(chunk);
    ///             let (res, _) = server.write_all(rest).await;
    ///             if res.is_err() {
    ///                 break;
    ///             }
    ///         }
    ///     }
    /// });
    /// let reply = svc.block_on(async move {
    ///     let (res, _) = client.write_all(b"ping".to_vec()).await;
    ///     res?;
    ///     let (res, buf) = client.read_exact(vec![0u8; 4]).await;
    ///     res.map(|()| buf)
    /// })?;
    /// assert_eq!(reply, b"ping");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn read_stream<B: IoBufMut>(&self, buf: B) -> ReadStream<B> {
        ReadStream::start(self.core.svc().reactor(), self.core.token(), buf)
    }

    /// Reads what is there now into `buf`, without waiting: the count (`0`: end of stream), or
    /// `WouldBlock` when nothing is there, or a read is already pending on the socket (it goes
    /// first).
    ///
    /// # Errors
    /// `WouldBlock` as above, `NotConnected` if closed, or what the kernel reports.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let len = buf.len();
        self.core
            .svc()
            .reactor()
            .attempt_now(self.core.token(), Interest::Read, len, |fd| {
                nonblocking(|| rustix::io::read(fd, &mut *buf))
            })
    }

    /// Writes what the socket takes now of `data`, without waiting: the count (perhaps short), or
    /// `WouldBlock` when its send buffer is full, or a write is already pending on the socket (it
    /// goes first, so bytes keep their order). Never raises `SIGPIPE`.
    ///
    /// ```
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let (a, b) = StreamSocket::pair(&svc)?;
    /// assert_eq!(a.try_write(b"ping")?, 4);
    /// let mut buf = [0u8; 8];
    /// assert_eq!(b.try_read(&mut buf)?, 4);
    /// assert_eq!(&buf[..4], b"ping");
    /// assert_eq!(b.try_read(&mut buf).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    ///
    /// # Errors
    /// `WouldBlock` as above, `NotConnected` if closed, or what the kernel reports (`BrokenPipe`
    /// after the peer closed).
    #[inline]
    pub fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        self.core.svc().reactor().attempt_now(
            self.core.token(),
            Interest::Write,
            data.len(),
            |fd| send(fd, data),
        )
    }

    /// The caller's own non-blocking syscall `io` on one direction, made now when that direction may
    /// be ready, or a wait for it with `cx`'s waker (see `op::poll_io`): the I/O traits of
    /// `aio::compat`.
    #[cfg(any(feature = "futures-io", feature = "tokio-io", feature = "hyper"))]
    #[inline]
    pub(crate) fn poll_io(
        &self,
        wait: &mut DirectionWait,
        cx: &mut std::task::Context<'_>,
        requested: usize,
        io: impl FnOnce(std::os::fd::BorrowedFd<'_>) -> io::Result<Option<usize>>,
    ) -> std::task::Poll<io::Result<usize>> {
        wait.poll(
            self.core.svc().reactor(),
            self.core.token(),
            cx,
            requested,
            io,
        )
    }

    /// Takes the waker `wait` left in line out of it, if it is still there.
    #[cfg(any(feature = "futures-io", feature = "tokio-io", feature = "hyper"))]
    pub(crate) fn end_wait(&self, wait: &mut DirectionWait) {
        wait.withdraw(self.core.svc().reactor(), self.core.token());
    }

    /// Writes several buffers in order (gather), as much as the socket takes now.
    pub fn write_vectored<B: IoBuf>(&self, bufs: Vec<B>) -> Op<WriteVectored<B>> {
        self.core.op(WriteVectored::new(bufs))
    }

    /// Writes every byte of `buf` and passes `fds` along with them (`SCM_RIGHTS`; Unix sockets only):
    /// the peer receives its own copies of the fds, with the first bytes, through
    /// [`recv_fds`](StreamSocket::recv_fds). Completes with the number of bytes written (all of them).
    ///
    /// The fds given are closed here once sent (or once the operation fails): pass `fd.try_clone()?`
    /// to keep one. `buf` must hold at least one byte (the kernel carries fds only with data), and at
    /// most 253 fds go in one call (`SCM_MAX_FD`): otherwise `InvalidInput`. On a TCP socket the
    /// operation fails with `Unsupported`.
    ///
    /// ```
    /// use std::io::{Read, Write};
    /// use std::os::unix::net::UnixStream;
    /// use aio::{IoService, StreamSocket};
    /// let svc = IoService::new()?;
    /// let (a, b) = StreamSocket::pair(&svc)?;
    /// // Pass one end of another connection; keep the other end here.
    /// let (mut here, there) = UnixStream::pair()?;
    /// let (res, _) = svc.block_on(a.send_fds(b"x".to_vec(), vec![there.into()]));
    /// res?;
    /// let (res, _) = svc.block_on(b.recv_fds(vec![0; 16], 4));
    /// let received = res?;
    /// let mut passed = UnixStream::from(received.fds.into_iter().next().unwrap());
    /// passed.write_all(b"through the passed fd")?;
    /// drop(passed);
    /// let mut text = String::new();
    /// here.read_to_string(&mut text)?;
    /// assert_eq!(text, "through the passed fd");
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn send_fds<B: IoBuf>(&self, buf: B, fds: Vec<OwnedFd>) -> Op<SendFds<B>> {
        self.core.op(SendFds::new(buf, fds))
    }

    /// Reads what is available, up to the buffer's capacity, like
    /// [`read_some`](StreamSocket::read_some), and takes up to `max_fds` file descriptors that came
    /// with those bytes ([`send_fds`](StreamSocket::send_fds)); they are close-on-exec. See
    /// [`ReceivedFds`](crate::op::ReceivedFds) for the result (`len == 0` is the end of stream).
    pub fn recv_fds<B: IoBufMut>(&self, buf: B, max_fds: usize) -> Op<RecvFds<B>> {
        self.core.op(RecvFds::new(buf, max_fds))
    }

    /// Shuts down reading, writing or both; the socket stays open.
    ///
    /// # Errors
    /// `NotConnected` if closed, or what `shutdown(2)` reports.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.core.with_socket(|s| s.shutdown(how))
    }

    /// Stops using the fd and hands it back, open (pending operations complete with `ECANCELED`).
    /// The fd stays non-blocking.
    ///
    /// # Errors
    /// `NotConnected` if the socket is not open.
    pub fn release(&self) -> io::Result<OwnedFd> {
        self.core.release()
    }

    /// Releases the socket as a `std::net::TcpStream`, still non-blocking, cancelling what is pending and
    /// whatever its family. `TcpStream::try_from(socket)` is the checked conversion: it refuses while
    /// an operation is pending or for the other family, and makes the fd blocking as std expects.
    ///
    /// # Errors
    /// As for [`release`](StreamSocket::release).
    pub fn into_std_tcp(self) -> io::Result<std::net::TcpStream> {
        self.release().map(std::net::TcpStream::from)
    }

    /// Releases the socket as a `std::os::unix::net::UnixStream`, still non-blocking, cancelling what is pending and
    /// whatever its family. `UnixStream::try_from(socket)` is the checked conversion: it refuses while
    /// an operation is pending or for the other family, and makes the fd blocking as std expects.
    ///
    /// # Errors
    /// As for [`release`](StreamSocket::release).
    pub fn into_std_unix(self) -> io::Result<std::os::unix::net::UnixStream> {
        self.release().map(std::os::unix::net::UnixStream::from)
    }

    /// How many bytes can be read without waiting (`FIONREAD`).
    ///
    /// # Errors
    /// `NotConnected` if closed, or what the ioctl reports.
    pub fn bytes_readable(&self) -> io::Result<usize> {
        self.core.svc().reactor().with_fd(self.core.token(), |fd| {
            Ok(rustix::io::ioctl_fionread(fd)? as usize)
        })
    }

    /// The local endpoint.
    ///
    /// # Errors
    /// `NotConnected` if closed, or what `getsockname(2)` reports.
    pub fn local_endpoint(&self) -> io::Result<Endpoint> {
        self.core.local_endpoint()
    }

    /// The peer's endpoint (booster's `remote_endpoint`).
    ///
    /// # Errors
    /// `NotConnected` if closed or not connected.
    pub fn peer_endpoint(&self) -> io::Result<Endpoint> {
        self.core.peer_endpoint()
    }

    /// Disables (true) or enables Nagle's algorithm (`TCP_NODELAY`; TCP only).
    ///
    /// # Errors
    /// What `setsockopt` reports (e.g. on a Unix socket).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.core.with_socket(|s| s.set_tcp_nodelay(nodelay))
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    /// What `getsockopt` reports.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.core.with_socket(|s| s.tcp_nodelay())
    }

    /// Enables or disables `SO_KEEPALIVE`.
    ///
    /// # Errors
    /// What `setsockopt` reports.
    pub fn set_keepalive(&self, keepalive: bool) -> io::Result<()> {
        self.core.with_socket(|s| s.set_keepalive(keepalive))
    }

    /// Whether `SO_KEEPALIVE` is set.
    ///
    /// # Errors
    /// What `getsockopt` reports.
    pub fn keepalive(&self) -> io::Result<bool> {
        self.core.with_socket(|s| s.keepalive())
    }

    /// Sets `SO_SNDBUF` (the kernel may double or clamp it).
    ///
    /// # Errors
    /// What `setsockopt` reports.
    pub fn set_send_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.core.with_socket(|s| s.set_send_buffer_size(bytes))
    }

    /// `SO_SNDBUF` as the kernel reports it.
    ///
    /// # Errors
    /// What `getsockopt` reports.
    pub fn send_buffer_size(&self) -> io::Result<usize> {
        self.core.with_socket(|s| s.send_buffer_size())
    }

    /// Sets `SO_RCVBUF` (the kernel may double or clamp it).
    ///
    /// # Errors
    /// What `setsockopt` reports.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> io::Result<()> {
        self.core.with_socket(|s| s.set_recv_buffer_size(bytes))
    }

    /// `SO_RCVBUF` as the kernel reports it.
    ///
    /// # Errors
    /// What `getsockopt` reports.
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        self.core.with_socket(|s| s.recv_buffer_size())
    }

    socket_options!(linger, ttl, tos, only_v6, reuse_address, reuse_port);

    registered_object!(core, "socket");
}

impl std::fmt::Debug for StreamSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSocket")
            .field("fd", &self.native())
            .finish()
    }
}

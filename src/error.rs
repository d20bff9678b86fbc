//! The errors `aio` reports itself (besides what the kernel says), each with a message that names what
//! went wrong.

use std::io;

/// The error a pending operation completes with when it is cancelled: `ECANCELED`, booster's and
/// Asio's `operation_aborted`, by `cancel()`, `close()`, dropping its object or dropping its future.
pub fn cancelled() -> io::Error {
    io::Error::from_raw_os_error(libc::ECANCELED)
}

/// Whether `err` reports a cancelled operation (`ECANCELED`).
///
/// ```
/// assert!(aio::is_cancelled(&aio::error::cancelled()));
/// ```
pub fn is_cancelled(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ECANCELED)
}

/// The error an operation completes with when its deadline passes first (see
/// [`Op::timeout`](crate::Op::timeout)): `TimedOut`, booster's and Asio's `timed_out`.
pub fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "the operation did not complete before its deadline",
    )
}

/// An operation on an object that is closed (or was never opened).
pub(crate) fn closed() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "operation on a socket or device that is not open (closed, released or never opened)",
    )
}

/// The message a panic carried (`panic!("...")` with a literal or formatted text), for an error that
/// reports it in place of the panic.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_string())
}

/// A conversion of an `aio` object into its std counterpart (`TryFrom<StreamSocket> for TcpStream`
/// and the like) that was refused: the object comes back unchanged, still registered and usable,
/// with the reason.
///
/// The reasons, by [`kind`](IntoStdError::kind): `ResourceBusy` while an operation is pending on the
/// object (a conversion would have to cancel it: finish or `cancel()` it, let its handler run, and
/// try again), `NotConnected` when it is closed (or was never opened), `InvalidInput` when the fd is
/// not what the target holds (a Unix socket into a `TcpStream`, an acceptor that is not listening),
/// `Unsupported` for an [`IoDevice`](crate::IoDevice) watching an fd it does not own.
///
/// ```
/// use std::os::unix::net::UnixStream;
/// use aio::{IoService, StreamSocket};
/// let svc = IoService::new()?;
/// let (a, _b) = StreamSocket::pair(&svc)?;
/// // A Unix socket is no TcpStream: refused, and the socket comes back.
/// let err = std::net::TcpStream::try_from(a).unwrap_err();
/// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
/// let a = err.into_inner();
/// assert!(a.is_open());
/// let _std: UnixStream = a.try_into()?; // `?` turns the error into an io::Error
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct IntoStdError<T> {
    object: T,
    error: io::Error,
}

impl<T> IntoStdError<T> {
    pub(crate) fn new(object: T, error: io::Error) -> IntoStdError<T> {
        IntoStdError { object, error }
    }

    /// The object, unchanged: open, registered with its loop, in the mode it was in.
    pub fn into_inner(self) -> T {
        self.object
    }

    /// Why the conversion was refused.
    pub fn error(&self) -> &io::Error {
        &self.error
    }

    /// The kind of [`error`](IntoStdError::error).
    pub fn kind(&self) -> io::ErrorKind {
        self.error.kind()
    }

    /// The object and the reason.
    pub fn into_parts(self) -> (T, io::Error) {
        (self.object, self.error)
    }
}

impl<T> std::fmt::Debug for IntoStdError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IntoStdError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> std::fmt::Display for IntoStdError<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot convert into a std type: {}", self.error)
    }
}

impl<T> std::error::Error for IntoStdError<T> {}

/// Drops the object (closing it) and keeps the reason, so that `?` works in functions returning
/// `io::Result`.
impl<T> From<IntoStdError<T>> for io::Error {
    fn from(e: IntoStdError<T>) -> io::Error {
        io::Error::new(e.error.kind(), e.to_string())
    }
}

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

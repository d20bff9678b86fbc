//! The little protocol `ipc_server` and `ipc_clients` speak: type+length frames (2-byte type,
//! 4-byte length, big-endian), one message type per request and its reply.

use aio::framed::{Frame, TypeLengthCodec};

/// A client introduces itself with its name; the server answers `WELCOME` with the same name.
pub const HELLO: u32 = 1;
/// The server's answer to `HELLO`.
pub const WELCOME: u32 = 2;
/// A numbered ping (payload: the number as 8 bytes big-endian).
pub const PING: u32 = 3;
/// The answer to `PING`, with the same number.
pub const PONG: u32 = 4;
/// Any payload, sent back unchanged.
pub const ECHO: u32 = 5;
/// The server's reply to a type it does not know (payload: the type, 4 bytes big-endian).
pub const UNKNOWN: u32 = 6;

/// The largest payload either side accepts: a peer declaring more is disconnected.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// The codec both sides use.
pub fn codec() -> TypeLengthCodec {
    TypeLengthCodec::new().max_payload(MAX_PAYLOAD)
}

/// A `PING` or `PONG` carrying `n`.
pub fn numbered(kind: u32, n: u64) -> Frame {
    Frame::new(kind, n.to_be_bytes().to_vec())
}

/// The number in a `PING` or `PONG`, if the payload has the right size.
pub fn number(frame: &Frame) -> Option<u64> {
    <[u8; 8]>::try_from(&frame.payload[..])
        .ok()
        .map(u64::from_be_bytes)
}

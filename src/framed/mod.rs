//! Framed messages over a byte stream: codecs that cut a stream into messages and back.
//!
//! The answer to "many TCP clients with a type+length protocol": a [`Decoder`] turns buffered bytes
//! into messages and an [`Encoder`] turns messages into bytes; [`TypeLengthCodec`] is the
//! type+length protocol (header widths and byte order configurable) and [`LineCodec`] cuts text
//! lines. Both refuse a frame larger than their configured maximum with an `InvalidData` error, which
//! closes that connection only; a reader never buffers more than the maximum frame plus a header,
//! however hostile the bytes.

mod codec;
mod line;
mod reader;
mod state;
mod stream;
mod writer;

pub use codec::{ByteOrder, Decoder, Encoder, Frame, TypeLengthCodec};
pub use line::LineCodec;
pub use state::DEFAULT_HIGH_WATER;
pub use stream::{Framed, TrySendError};

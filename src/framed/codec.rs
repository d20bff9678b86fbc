//! The codec traits and the type+length codec.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Cuts buffered bytes into messages.
pub trait Decoder {
    /// One decoded message.
    type Item;

    /// Decodes one message from the front of `src`, removing its bytes; `Ok(None)` when `src` holds
    /// only part of one (the bytes stay for the next call).
    ///
    /// # Errors
    /// `InvalidData` when the bytes cannot be a valid message (e.g. a declared length over the
    /// maximum): the stream cannot be resynchronised and should be closed.
    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Self::Item>>;

    /// How many bytes the reader may need to hold at once to complete the next message: it never
    /// buffers more than this.
    fn max_buffered(&self) -> usize;
}

/// Turns messages into bytes.
pub trait Encoder<Item> {
    /// Appends the encoding of `item` to `dst`.
    ///
    /// # Errors
    /// `InvalidInput` when the message cannot be encoded (e.g. longer than the maximum frame).
    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> io::Result<()>;
}

/// Byte order of header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByteOrder {
    /// Most significant byte first (network order).
    BigEndian,
    /// Least significant byte first.
    LittleEndian,
}

/// One type+length message: its type and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The message type.
    pub kind: u32,
    /// The payload.
    pub payload: Bytes,
}

impl Frame {
    /// A frame of `kind` carrying `payload`.
    pub fn new(kind: u32, payload: impl Into<Bytes>) -> Frame {
        Frame {
            kind,
            payload: payload.into(),
        }
    }
}

/// The type+length protocol: a header of the message type then the payload length, then the payload.
///
/// Widths are 1, 2 or 4 bytes each (default: 2-byte type, 4-byte length), big-endian by default;
/// the maximum payload defaults to 1 MiB.
///
/// ```
/// use aio::framed::{Decoder, Encoder, Frame, TypeLengthCodec};
/// use bytes::BytesMut;
/// let mut codec = TypeLengthCodec::new();
/// let mut wire = BytesMut::new();
/// codec.encode(Frame::new(7, &b"hello"[..]), &mut wire)?;
/// assert_eq!(&wire[..], b"\x00\x07\x00\x00\x00\x05hello");
/// assert_eq!(codec.decode(&mut wire)?, Some(Frame::new(7, &b"hello"[..])));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TypeLengthCodec {
    type_width: usize,
    length_width: usize,
    order: ByteOrder,
    max_payload: usize,
}

impl Default for TypeLengthCodec {
    fn default() -> Self {
        TypeLengthCodec::new()
    }
}

impl TypeLengthCodec {
    /// 2-byte type, 4-byte length, big-endian, at most 1 MiB of payload.
    pub fn new() -> TypeLengthCodec {
        TypeLengthCodec {
            type_width: 2,
            length_width: 4,
            order: ByteOrder::BigEndian,
            max_payload: 1 << 20,
        }
    }

    /// Sets the width of the type field: 1, 2 or 4 bytes.
    ///
    /// # Errors
    /// `InvalidInput` for another width.
    pub fn type_width(mut self, bytes: usize) -> io::Result<TypeLengthCodec> {
        self.type_width = check_width("type", bytes)?;
        Ok(self)
    }

    /// Sets the width of the length field: 1, 2 or 4 bytes.
    ///
    /// # Errors
    /// `InvalidInput` for another width.
    pub fn length_width(mut self, bytes: usize) -> io::Result<TypeLengthCodec> {
        self.length_width = check_width("length", bytes)?;
        Ok(self)
    }

    /// Sets the byte order of both header fields.
    #[must_use = "the codec is a new value: keep it"]
    pub fn byte_order(mut self, order: ByteOrder) -> TypeLengthCodec {
        self.order = order;
        self
    }

    /// Sets the largest payload accepted or sent (capped by what the length field can express).
    #[must_use = "the codec is a new value: keep it"]
    pub fn max_payload(mut self, bytes: usize) -> TypeLengthCodec {
        self.max_payload = bytes;
        self
    }

    /// The largest payload accepted or sent.
    pub fn max_payload_len(&self) -> usize {
        self.max_payload.min(width_max(self.length_width) as usize)
    }

    /// The header size: type width plus length width.
    pub fn header_len(&self) -> usize {
        self.type_width + self.length_width
    }

    fn read_uint(&self, bytes: &[u8]) -> u64 {
        match self.order {
            ByteOrder::BigEndian => bytes.iter().fold(0u64, |acc, &b| acc << 8 | b as u64),
            ByteOrder::LittleEndian => bytes.iter().rev().fold(0u64, |acc, &b| acc << 8 | b as u64),
        }
    }

    fn put_uint(&self, dst: &mut BytesMut, value: u64, width: usize) {
        match self.order {
            ByteOrder::BigEndian => dst.put_uint(value, width),
            ByteOrder::LittleEndian => dst.put_uint_le(value, width),
        }
    }
}

fn check_width(field: &str, bytes: usize) -> io::Result<usize> {
    match bytes {
        1 | 2 | 4 => Ok(bytes),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the {field} field must be 1, 2 or 4 bytes wide, not {bytes}"),
        )),
    }
}

fn width_max(width: usize) -> u64 {
    (1u64 << (8 * width)) - 1
}

impl Decoder for TypeLengthCodec {
    type Item = Frame;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Frame>> {
        let header = self.header_len();
        if src.len() < header {
            return Ok(None);
        }
        let kind = self.read_uint(&src[..self.type_width]) as u32;
        let len = self.read_uint(&src[self.type_width..header]);
        let max = self.max_payload_len();
        if len > max as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "frame of type {kind} declares {len} payload bytes, over the maximum of {max}"
                ),
            ));
        }
        let len = len as usize;
        if src.len() < header + len {
            return Ok(None);
        }
        src.advance(header);
        let payload = src.split_to(len).freeze();
        Ok(Some(Frame { kind, payload }))
    }

    fn max_buffered(&self) -> usize {
        self.header_len() + self.max_payload_len()
    }
}

impl Encoder<Frame> for TypeLengthCodec {
    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> io::Result<()> {
        let max = self.max_payload_len();
        if frame.payload.len() > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a payload of {} bytes is over the maximum of {max}",
                    frame.payload.len()
                ),
            ));
        }
        if frame.kind as u64 > width_max(self.type_width) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "message type {} does not fit a {}-byte type field",
                    frame.kind, self.type_width
                ),
            ));
        }
        dst.reserve(self.header_len() + frame.payload.len());
        self.put_uint(dst, frame.kind as u64, self.type_width);
        self.put_uint(dst, frame.payload.len() as u64, self.length_width);
        dst.extend_from_slice(&frame.payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_width_and_order() {
        for tw in [1, 2, 4] {
            for lw in [1, 2, 4] {
                for order in [ByteOrder::BigEndian, ByteOrder::LittleEndian] {
                    let mut c = TypeLengthCodec::new()
                        .type_width(tw)
                        .unwrap()
                        .length_width(lw)
                        .unwrap()
                        .byte_order(order);
                    let mut wire = BytesMut::new();
                    let frames = [Frame::new(1, &b""[..]), Frame::new(200, vec![9u8; 255])];
                    for f in &frames {
                        c.encode(f.clone(), &mut wire).unwrap();
                    }
                    for f in &frames {
                        assert_eq!(c.decode(&mut wire).unwrap().as_ref(), Some(f));
                    }
                    assert!(wire.is_empty());
                }
            }
        }
    }

    #[test]
    fn little_endian_header_layout() {
        let mut c = TypeLengthCodec::new().byte_order(ByteOrder::LittleEndian);
        let mut wire = BytesMut::new();
        c.encode(Frame::new(0x0102, &b"x"[..]), &mut wire).unwrap();
        assert_eq!(&wire[..], b"\x02\x01\x01\x00\x00\x00x");
    }

    #[test]
    fn oversize_length_is_invalid_data() {
        let mut c = TypeLengthCodec::new().max_payload(10);
        let mut wire = BytesMut::from(&b"\x00\x01\x00\x00\x00\x0b"[..]);
        let err = c.decode(&mut wire).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("over the maximum of 10"), "{err}");
        let err = c.encode(Frame::new(1, vec![0; 11]), &mut wire).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn bad_widths_and_types_are_errors() {
        assert!(TypeLengthCodec::new().type_width(3).is_err());
        assert!(TypeLengthCodec::new().length_width(8).is_err());
        let mut c = TypeLengthCodec::new().type_width(1).unwrap();
        assert!(
            c.encode(Frame::new(256, &b""[..]), &mut BytesMut::new())
                .is_err()
        );
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut c = TypeLengthCodec::new();
        let mut full = BytesMut::new();
        c.encode(Frame::new(3, &b"abcdef"[..]), &mut full).unwrap();
        let mut wire = BytesMut::new();
        for (i, b) in full.iter().enumerate() {
            assert_eq!(c.decode(&mut wire).unwrap(), None, "after {i} bytes");
            wire.put_u8(*b);
        }
        assert_eq!(
            c.decode(&mut wire).unwrap(),
            Some(Frame::new(3, &b"abcdef"[..]))
        );
    }
}

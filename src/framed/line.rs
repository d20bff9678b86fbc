//! The line codec: messages are text lines ending in `\n` or `\r\n`.

use std::io;

use bytes::{Buf, BytesMut};

use super::codec::{Decoder, Encoder};

/// Cuts a stream into lines (`\n` or `\r\n`, removed) of at most a maximum length; writes lines with
/// `\n`.
///
/// ```
/// use aio::framed::{Decoder, LineCodec};
/// use bytes::BytesMut;
/// let mut codec = LineCodec::new(80);
/// let mut wire = BytesMut::from(&b"hello\r\nworld\npart"[..]);
/// assert_eq!(codec.decode(&mut wire)?.as_deref(), Some("hello"));
/// assert_eq!(codec.decode(&mut wire)?.as_deref(), Some("world"));
/// assert_eq!(codec.decode(&mut wire)?, None); // "part" waits for its end
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LineCodec {
    max_len: usize,
    /// How far the current buffer was already searched for a newline.
    searched: usize,
}

impl LineCodec {
    /// Lines of at most `max_len` bytes (excluding the line ending).
    pub fn new(max_len: usize) -> LineCodec {
        LineCodec {
            max_len,
            searched: 0,
        }
    }

    /// The longest line accepted.
    pub fn max_len(&self) -> usize {
        self.max_len
    }
}

impl Decoder for LineCodec {
    type Item = String;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<String>> {
        let start = self.searched.min(src.len());
        let Some(pos) = src[start..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + start)
        else {
            // `\r` may still come before the `\n`: allow one byte over the maximum.
            if src.len() > self.max_len + 1 {
                return Err(too_long(self.max_len));
            }
            self.searched = src.len();
            return Ok(None);
        };
        self.searched = 0;
        let end = if pos > 0 && src[pos - 1] == b'\r' {
            pos - 1
        } else {
            pos
        };
        if end > self.max_len {
            return Err(too_long(self.max_len));
        }
        let line = src.split_to(end);
        src.advance(pos + 1 - end);
        String::from_utf8(line.to_vec()).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line is not UTF-8: {e}"),
            )
        })
    }

    fn max_buffered(&self) -> usize {
        self.max_len + 2
    }
}

fn too_long(max: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("line longer than the maximum of {max} bytes"),
    )
}

impl<T: AsRef<str>> Encoder<T> for LineCodec {
    fn encode(&mut self, line: T, dst: &mut BytesMut) -> io::Result<()> {
        let line = line.as_ref();
        if line.len() > self.max_len || line.contains('\n') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "cannot send a line of {} bytes (maximum {}, no embedded newline)",
                    line.len(),
                    self.max_len
                ),
            ));
        }
        dst.reserve(line.len() + 1);
        dst.extend_from_slice(line.as_bytes());
        dst.extend_from_slice(b"\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_long_lines_are_rejected_before_buffering_more() {
        let mut c = LineCodec::new(4);
        let mut wire = BytesMut::from(&b"12345"[..]);
        assert_eq!(c.decode(&mut wire).unwrap(), None, "a \\r may still come");
        wire.extend_from_slice(b"6");
        assert_eq!(
            c.decode(&mut wire).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let mut c = LineCodec::new(4);
        let mut wire = BytesMut::from(&b"1234\r\n12345\n"[..]);
        assert_eq!(c.decode(&mut wire).unwrap().as_deref(), Some("1234"));
        assert!(c.decode(&mut wire).is_err());
    }

    #[test]
    fn empty_lines_and_invalid_utf8() {
        let mut c = LineCodec::new(10);
        let mut wire = BytesMut::from(&b"\n\r\n\xff\n"[..]);
        assert_eq!(c.decode(&mut wire).unwrap().as_deref(), Some(""));
        assert_eq!(c.decode(&mut wire).unwrap().as_deref(), Some(""));
        assert_eq!(
            c.decode(&mut wire).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn encode_refuses_newlines_and_long_lines() {
        let mut c = LineCodec::new(3);
        let mut dst = BytesMut::new();
        assert!(c.encode("a\nb", &mut dst).is_err());
        assert!(c.encode("abcd", &mut dst).is_err());
        c.encode("abc", &mut dst).unwrap();
        assert_eq!(&dst[..], b"abc\n");
    }
}

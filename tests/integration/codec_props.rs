//! Property tests of the codecs: any frames cut into any chunks decode to the same frames, and any
//! bytes, fed the way a reader feeds them, either decode or fail cleanly without the reader ever
//! holding more than the codec's maximum.

use aio::framed::{ByteOrder, Decoder, Encoder, Frame, LineCodec, TypeLengthCodec};
use bytes::BytesMut;
use proptest::prelude::*;

fn codec(tw: usize, lw: usize, little: bool, max: usize) -> TypeLengthCodec {
    TypeLengthCodec::new()
        .type_width(tw)
        .unwrap()
        .length_width(lw)
        .unwrap()
        .byte_order(if little {
            ByteOrder::LittleEndian
        } else {
            ByteOrder::BigEndian
        })
        .max_payload(max)
}

/// Feeds `wire` to `decoder` in chunks of the given sizes (cycled), as a reader would: never more
/// than the decoder's maximum buffered. Returns the items, or the first error.
fn feed<D: Decoder>(
    decoder: &mut D,
    wire: &[u8],
    chunks: &[usize],
) -> Result<Vec<D::Item>, std::io::Error> {
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    loop {
        while let Some(item) = decoder.decode(&mut buf)? {
            items.push(item);
        }
        assert!(
            buf.len() <= decoder.max_buffered(),
            "buffered past the maximum"
        );
        if pos == wire.len() {
            return Ok(items);
        }
        let room = decoder.max_buffered() - buf.len();
        assert!(
            room > 0,
            "the decoder wants more than its maximum without failing"
        );
        let n = chunks[i % chunks.len()]
            .max(1)
            .min(room)
            .min(wire.len() - pos);
        i += 1;
        buf.extend_from_slice(&wire[pos..pos + n]);
        pos += n;
    }
}

proptest! {
    #[test]
    fn type_length_frames_survive_any_chunking(
        frames in prop::collection::vec((0u32..256, prop::collection::vec(any::<u8>(), 0..300)), 0..20),
        chunks in prop::collection::vec(1usize..64, 1..10),
        tw in prop::sample::select(vec![1usize, 2, 4]),
        lw in prop::sample::select(vec![2usize, 4]),
        little in any::<bool>(),
    ) {
        let mut c = codec(tw, lw, little, 1000);
        let mut wire = BytesMut::new();
        let frames: Vec<Frame> = frames.into_iter().map(|(k, p)| Frame::new(k, p)).collect();
        for f in &frames {
            c.encode(f.clone(), &mut wire).unwrap();
        }
        let decoded = feed(&mut c, &wire, &chunks).unwrap();
        prop_assert_eq!(decoded, frames);
    }

    #[test]
    fn type_length_arbitrary_bytes_never_panic_or_overbuffer(
        wire in prop::collection::vec(any::<u8>(), 0..4000),
        chunks in prop::collection::vec(1usize..200, 1..10),
        max in 0usize..300,
    ) {
        let mut c = codec(2, 4, false, max);
        if let Err(e) = feed(&mut c, &wire, &chunks) {
            prop_assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            prop_assert!(e.to_string().contains("over the maximum"));
        }
    }

    #[test]
    fn lines_survive_any_chunking(
        lines in prop::collection::vec("[^\n\r]{0,40}", 0..20),
        crlf in any::<bool>(),
        chunks in prop::collection::vec(1usize..16, 1..10),
    ) {
        let mut c = LineCodec::new(200);
        let mut wire = Vec::new();
        for l in &lines {
            wire.extend_from_slice(l.as_bytes());
            wire.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
        }
        prop_assert_eq!(feed(&mut c, &wire, &chunks).unwrap(), lines);
    }

    #[test]
    fn line_arbitrary_bytes_never_panic_or_overbuffer(
        wire in prop::collection::vec(any::<u8>(), 0..2000),
        chunks in prop::collection::vec(1usize..100, 1..10),
        max in 0usize..50,
    ) {
        let mut c = LineCodec::new(max);
        if let Err(e) = feed(&mut c, &wire, &chunks) {
            prop_assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        }
    }
}

#[test]
fn oversize_length_is_a_clear_error() {
    let mut c = codec(2, 4, false, 64);
    let wire = [0u8, 1, 0xff, 0xff, 0xff, 0xff];
    let err = feed(&mut c, &wire, &[6]).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    assert!(
        err.to_string()
            .contains("4294967295 payload bytes, over the maximum of 64"),
        "{err}"
    );
}

//! Feeds arbitrary bytes, in arbitrary chunks, to the type+length and line decoders the way
//! `Framed` does: never more than the decoder's maximum buffered. A decoder may return messages or
//! an `InvalidData` error; it must never panic, never ask for more than its maximum without failing,
//! and never make the reader hold more than that maximum.

#![no_main]

use aio::framed::{ByteOrder, Decoder, LineCodec, TypeLengthCodec};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;

fn feed<D: Decoder>(decoder: &mut D, data: &[u8], chunk: usize) {
    let mut buf = BytesMut::new();
    let mut pos = 0;
    loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
                    return;
                }
            }
        }
        assert!(buf.len() <= decoder.max_buffered(), "buffered past the maximum");
        if pos == data.len() {
            return;
        }
        let room = decoder.max_buffered() - buf.len();
        assert!(room > 0, "the decoder wants more than its maximum without failing");
        let n = chunk.min(room).min(data.len() - pos);
        buf.extend_from_slice(&data[pos..pos + n]);
        pos += n;
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&config, data)) = input.split_first() else {
        return;
    };
    // The first byte picks the codec's shape and the chunk size.
    let widths = [1usize, 2, 4];
    let chunk = 1 + (config as usize >> 4);
    let max = 1 + (config as usize & 0x0f) * 97;
    let order = if config & 1 == 0 {
        ByteOrder::BigEndian
    } else {
        ByteOrder::LittleEndian
    };
    let mut tl = TypeLengthCodec::new()
        .type_width(widths[config as usize % 3])
        .expect("valid width")
        .length_width(widths[(config as usize / 3) % 3])
        .expect("valid width")
        .byte_order(order)
        .max_payload(max);
    feed(&mut tl, data, chunk);
    let mut lines = LineCodec::new(max);
    feed(&mut lines, data, chunk);
});

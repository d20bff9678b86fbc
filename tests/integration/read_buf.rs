//! Appending reads (`read_buf`): a frame cut into pieces accumulates in one `Vec` or `BytesMut`
//! across reads, over a Unix socket pair and loopback TCP, with complete frames taken off the front
//! between reads; the bytes already held are never overwritten, spare capacity is used in place (no
//! new allocation), a full buffer grows, and the end of stream leaves the buffer as it was.

use aio::buf::GrowableBuf;
use aio::{IoService, StreamSocket};
use bytes::{Buf, BytesMut};

use crate::util::{self, Transport};

/// What a test needs of a growable buffer besides [`GrowableBuf`].
trait Accumulator: GrowableBuf + AsRef<[u8]> {
    fn with_capacity(n: usize) -> Self;
    /// Removes the first `n` bytes.
    fn consume(&mut self, n: usize);
}

impl Accumulator for Vec<u8> {
    fn with_capacity(n: usize) -> Self {
        Vec::with_capacity(n)
    }
    fn consume(&mut self, n: usize) {
        self.drain(..n);
    }
}

impl Accumulator for BytesMut {
    fn with_capacity(n: usize) -> Self {
        BytesMut::with_capacity(n)
    }
    fn consume(&mut self, n: usize) {
        self.advance(n);
    }
}

/// Frames of a 2-byte big-endian length and a payload.
fn wire(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// Takes every complete frame off the front of `buf`.
fn take_frames<B: Accumulator>(buf: &mut B, into: &mut Vec<Vec<u8>>) {
    loop {
        let bytes = buf.as_ref();
        if bytes.len() < 2 {
            return;
        }
        let len = u16::from_be_bytes([bytes[0], bytes[1]]) as usize;
        if bytes.len() < 2 + len {
            return;
        }
        into.push(bytes[2..2 + len].to_vec());
        buf.consume(2 + len);
    }
}

/// Sends `payloads` as frames cut into pieces of varying sizes (most of them ending inside a
/// frame); after each piece, reads with `read_buf` until the piece is in, checks that the partial
/// frame held from before is intact, and takes off the complete frames.
fn pieces_accumulate<B: Accumulator>(svc: &IoService, a: &StreamSocket, b: &StreamSocket) {
    let payloads: Vec<Vec<u8>> = (0..40)
        .map(|i| util::pattern((i * 173) % 3000 + 1, i as u64))
        .collect();
    let bytes = wire(&payloads);
    let cuts = [1usize, 7, 3, 500, 2, 4096, 13, 1, 9000, 64];
    let mut buf = B::with_capacity(5); // small: the reads must grow it
    let mut frames = Vec::new();
    let (mut sent, mut consumed, mut turn) = (0, 0, 0);
    while sent < bytes.len() {
        let end = (sent + cuts[turn % cuts.len()]).min(bytes.len());
        turn += 1;
        let (res, _) = svc.block_on(a.write_all(bytes[sent..end].to_vec()));
        res.unwrap();
        sent = end;
        // Everything received and not yet taken off as frames stays in the buffer.
        while consumed + buf.as_ref().len() < sent {
            let held = buf.as_ref().to_vec();
            let (res, back) = svc.block_on(b.read_buf(buf));
            buf = back;
            let n = res.unwrap();
            assert!(n > 0, "end of stream before the data");
            assert_eq!(buf.as_ref().len(), held.len() + n, "the length grows by n");
            assert_eq!(
                &buf.as_ref()[..held.len()],
                &held[..],
                "held bytes overwritten"
            );
        }
        let before = frames.len();
        let held = buf.as_ref().len();
        take_frames(&mut buf, &mut frames);
        consumed += held - buf.as_ref().len();
        for (i, f) in frames.iter().enumerate().skip(before) {
            util::assert_same_bytes(f, &payloads[i]);
        }
        assert_eq!(
            buf.as_ref(),
            &bytes[consumed..sent],
            "the partial frame is what was sent"
        );
    }
    assert_eq!(frames.len(), payloads.len());
}

matrix_test!(vec_accumulates_partial_frames_over_a_socket_pair, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    pieces_accumulate::<Vec<u8>>(svc, &a, &b);
});

matrix_test!(
    bytes_mut_accumulates_partial_frames_over_a_socket_pair,
    |svc| {
        let (a, b) = StreamSocket::pair(svc).unwrap();
        pieces_accumulate::<BytesMut>(svc, &a, &b);
    }
);

matrix_test!(vec_accumulates_partial_frames_over_tcp, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    pieces_accumulate::<Vec<u8>>(svc, &pair.a, &pair.b);
});

matrix_test!(bytes_mut_accumulates_partial_frames_over_tcp, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    pieces_accumulate::<BytesMut>(svc, &pair.a, &pair.b);
});

matrix_test!(spare_capacity_is_read_into_in_place, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    a.try_write(b"def").unwrap();
    let mut buf = Vec::with_capacity(1024);
    buf.extend_from_slice(b"abc");
    let ptr = buf.as_ptr();
    let (res, buf) = svc.block_on(b.read_buf(buf));
    assert_eq!(res.unwrap(), 3);
    assert_eq!(buf, b"abcdef");
    assert_eq!(
        buf.as_ptr(),
        ptr,
        "read in place, not into a new allocation"
    );

    // The same for a BytesMut, awaited in a task.
    a.try_write(b"ghi").unwrap();
    let mut buf = BytesMut::with_capacity(1024);
    buf.extend_from_slice(b"abc");
    let ptr = buf.as_ptr();
    let (res, buf) = svc.block_on(b.read_buf(buf));
    assert_eq!(res.unwrap(), 3);
    assert_eq!(&buf[..], b"abcghi");
    assert_eq!(buf.as_ptr(), ptr);
});

matrix_test!(a_full_buffer_grows_and_keeps_its_bytes, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let data = util::pattern(20_000, 3);
    let (res, _) = svc.block_on(a.write_all(data.clone()));
    res.unwrap();
    let mut buf = b"head".to_vec();
    buf.shrink_to_fit();
    let (res, buf) = svc.block_on(b.read_buf(buf));
    let n = res.unwrap();
    assert!(n > 0 && n <= 20_000);
    assert!(
        buf.capacity() >= 4 + 8 * 1024,
        "8 KiB reserved for a full buffer"
    );
    assert_eq!(&buf[..4], b"head");
    util::assert_same_bytes(&buf[4..], &data[..n]);
});

matrix_test!(end_of_stream_leaves_the_buffer_as_it_was, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    drop(a);
    let mut buf = BytesMut::with_capacity(64);
    buf.extend_from_slice(b"partial");
    let (res, buf) = svc.block_on(b.read_buf(buf));
    assert_eq!(res.unwrap(), 0);
    assert_eq!(&buf[..], b"partial");
});

matrix_test!(read_buf_with_handlers, |svc| {
    // Callback style: each handler reads again with the buffer it got back.
    use std::cell::RefCell;
    use std::rc::Rc;
    fn read_all(socket: Rc<StreamSocket>, buf: Vec<u8>, out: Rc<RefCell<Vec<u8>>>) {
        socket
            .clone()
            .read_buf(buf)
            .then(move |(res, buf)| match res {
                Ok(0) | Err(_) => *out.borrow_mut() = buf,
                Ok(_) => read_all(socket, buf, out),
            });
    }
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let out = Rc::new(RefCell::new(Vec::new()));
    read_all(Rc::new(b), Vec::new(), out.clone());
    let data = util::pattern(100_000, 9);
    a.write_all(data.clone()).then(move |(res, _)| {
        res.unwrap();
        drop(a);
    });
    svc.run_until_done().unwrap();
    util::assert_same_bytes(&out.borrow(), &data);
});

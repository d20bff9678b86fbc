//! `Framed::feed` / `feed_bytes` / `flush`: fed replies wait unwritten until a flush, then the peer
//! gets a pipelined batch whole and in order, over TCP and Unix; ready `Bytes` mixed with encoded
//! messages keep their order and content; a flush waits only for what was fed before it, completes
//! at once with nothing to write, and reports a failed write; `close` writes what was fed.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use aio::IoService;
use aio::framed::{Encoder, Frame, Framed, TypeLengthCodec};
use bytes::{Bytes, BytesMut};

use crate::util::{self, Transport};

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut codec = TypeLengthCodec::new();
    let mut out = BytesMut::new();
    for f in frames {
        codec.encode(f.clone(), &mut out).unwrap();
    }
    out.to_vec()
}

/// Runs the loop a few turns without waiting: whatever is ready goes on.
fn settle(svc: &IoService) {
    for _ in 0..5 {
        svc.poll().unwrap();
    }
}

matrix_test!(a_pipelined_batch_is_answered_by_one_flush, |svc| {
    for transport in [Transport::TcpV4, Transport::Unix] {
        let pair = util::pair(svc, transport).unwrap();
        let requests: Vec<Frame> = (0..100)
            .map(|i| Frame::new(1, util::pattern(i * 7 % 300, i as u64)))
            .collect();
        // The client pipelines the whole batch in one write.
        let (res, _) = svc.block_on(pair.a.write_all(wire(&requests)));
        res.unwrap();
        let server = Framed::new(pair.b, TypeLengthCodec::new());
        let replies: Vec<Frame> = svc.block_on(async {
            let mut replies = Vec::new();
            for _ in 0..requests.len() {
                let req = server.next().await.unwrap().unwrap();
                let reply = Frame::new(2, req.payload);
                server.feed(reply.clone()).unwrap();
                replies.push(reply);
            }
            replies
        });
        let want = wire(&replies);
        assert_eq!(server.queued_bytes(), want.len());
        settle(svc);
        let mut probe = [0u8; 1];
        assert_eq!(
            pair.a.try_read(&mut probe).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "fed replies were written before the flush"
        );
        svc.block_on(server.flush()).unwrap();
        assert_eq!(server.queued_bytes(), 0);
        let (res, got) = svc.block_on(pair.a.read_exact(vec![0u8; want.len()]));
        res.unwrap();
        util::assert_same_bytes(&got, &want);
    }
});

matrix_test!(fed_bytes_keep_their_order_among_encoded_messages, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let framed = Framed::new(pair.a, TypeLengthCodec::new());
    let big = Bytes::from(util::pattern(1 << 20, 5)); // larger than a socket buffer
    let small = Bytes::from_static(b"raw bytes");
    let header = Frame::new(7, &b"header"[..]);
    let trailer = Frame::new(8, &b"trailer"[..]);
    let mut want = Vec::new();
    framed.feed(header.clone()).unwrap();
    want.extend(wire(std::slice::from_ref(&header)));
    framed.feed_bytes(big.clone()).unwrap();
    want.extend_from_slice(&big);
    framed.feed_bytes(small.clone()).unwrap();
    want.extend_from_slice(&small);
    framed.feed_bytes(Bytes::new()).unwrap(); // nothing at all
    framed.feed(trailer.clone()).unwrap();
    want.extend(wire(std::slice::from_ref(&trailer)));
    assert_eq!(framed.queued_bytes(), want.len());

    // Callback style; the reader reads everything meanwhile.
    let flushed = Rc::new(RefCell::new(None));
    let slot = flushed.clone();
    framed
        .flush()
        .then(move |res| *slot.borrow_mut() = Some(res));
    let (res, got) = svc.block_on(pair.b.read_exact(vec![0u8; want.len()]));
    res.unwrap();
    util::assert_same_bytes(&got, &want);
    let deadline = std::time::Instant::now() + util::WATCHDOG;
    while flushed.borrow().is_none() && std::time::Instant::now() < deadline {
        svc.run_one().unwrap();
    }
    flushed
        .borrow_mut()
        .take()
        .expect("flush completed")
        .unwrap();
});

matrix_test!(a_flush_waits_only_for_what_was_fed_before_it, |svc| {
    let (a, b) = aio::StreamSocket::pair(svc).unwrap();
    let framed = Framed::new(a, TypeLengthCodec::new());
    let first = Frame::new(1, &b"first"[..]);
    framed.feed(first.clone()).unwrap();
    let flush = framed.flush();
    let later = Frame::new(2, &b"later"[..]);
    framed.feed(later.clone()).unwrap();
    svc.block_on(flush).unwrap();
    settle(svc);
    // Only the first frame went out; the later one waits for its own flush.
    let want = wire(std::slice::from_ref(&first));
    let mut buf = vec![0u8; 256];
    let n = b.try_read(&mut buf).unwrap();
    assert_eq!(&buf[..n], &want[..]);
    assert_eq!(
        framed.queued_bytes(),
        wire(std::slice::from_ref(&later)).len()
    );

    // `close` writes what was fed.
    let later = wire(std::slice::from_ref(&later));
    framed.close();
    let (res, got) = svc.block_on(b.read_exact(vec![0u8; later.len()]));
    res.unwrap();
    assert_eq!(got, later);
    let (res, _) = svc.block_on(b.read_some(vec![0u8; 16]));
    assert_eq!(res.unwrap(), 0, "closed after writing what was fed");
});

matrix_test!(an_empty_flush_completes_at_once, |svc| {
    let (a, _b) = aio::StreamSocket::pair(svc).unwrap();
    let framed = Framed::new(a, TypeLengthCodec::new());
    svc.block_on(framed.flush()).unwrap();
    framed.encode_and_queue(Frame::new(1, &b"x"[..])).unwrap();
    svc.block_on(framed.flush()).unwrap();
    svc.block_on(framed.flush()).unwrap();
});

matrix_test!(a_failed_write_fails_the_flush, |svc| {
    let (a, b) = aio::StreamSocket::pair(svc).unwrap();
    drop(b);
    let framed = Framed::new(a, TypeLengthCodec::new());
    framed.feed(Frame::new(1, vec![0u8; 1000])).unwrap();
    let err = svc.block_on(framed.flush()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    // The connection sends no more: later feeds and flushes are refused.
    assert!(framed.feed(Frame::new(1, &b"y"[..])).is_err());
    assert!(framed.feed_bytes(Bytes::from_static(b"z")).is_err());
    assert_eq!(
        svc.block_on(framed.flush()).unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
});

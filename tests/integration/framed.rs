//! `Framed` over real sockets: messages in order however they are cut, partial messages kept, an
//! oversize message closing only its own connection, backpressure instead of unbounded memory, a
//! clean close after the queue drains, and 100 clients x 1,000 messages through one server.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;

use aio::framed::{Decoder, Encoder, Frame, Framed, TrySendError, TypeLengthCodec};
use aio::{Acceptor, IoService, StreamSocket};
use bytes::BytesMut;

use crate::util::{self, Transport};

fn wire(frames: &[Frame]) -> Vec<u8> {
    let mut codec = TypeLengthCodec::new();
    let mut out = BytesMut::new();
    for f in frames {
        codec.encode(f.clone(), &mut out).unwrap();
    }
    out.to_vec()
}

fn frames(n: u32) -> Vec<Frame> {
    (0..n)
        .map(|i| Frame::new(i % 7, util::pattern((i as usize * 37) % 700, i as u64)))
        .collect()
}

matrix_test!(many_frames_in_one_read_arrive_in_order, |svc| {
    for transport in [Transport::TcpV4, Transport::Unix] {
        let pair = util::pair(svc, transport).unwrap();
        let sent = frames(300);
        let (res, _) = svc.block_on(pair.a.write_all(wire(&sent)));
        res.unwrap();
        let reader = Framed::new(pair.b, TypeLengthCodec::new());
        for want in &sent {
            let got = svc.block_on(reader.next()).expect("a frame").unwrap();
            assert_eq!(&got, want);
        }
    }
});

matrix_test!(partial_frame_waits_for_the_rest, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let bytes = wire(&[Frame::new(9, vec![5u8; 1000])]);
    let reader = Framed::new(pair.b, TypeLengthCodec::new());
    let got: Rc<RefCell<Vec<Frame>>> = Rc::default();
    let sink = got.clone();
    reader.read_frames(move |item| {
        if let Some(Ok(f)) = item {
            sink.borrow_mut().push(f)
        }
    });
    for chunk in bytes.chunks(333) {
        assert!(
            got.borrow().is_empty(),
            "a frame was delivered before its last byte"
        );
        let (res, _) = svc.block_on(pair.a.write_all(chunk.to_vec()));
        res.unwrap();
        // Let the reader take whatever arrived.
        for _ in 0..5 {
            svc.poll().unwrap();
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while got.borrow().is_empty() && std::time::Instant::now() < deadline {
        svc.run_one().unwrap();
    }
    assert_eq!(*got.borrow(), vec![Frame::new(9, vec![5u8; 1000])]);
});

matrix_test!(oversize_length_closes_only_its_connection, |svc| {
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let ep = acceptor.local_endpoint().unwrap();
    let hostile = svc.block_on(StreamSocket::dial(svc, &ep)).unwrap();
    let (hostile_server, _) = svc.block_on(acceptor.accept()).unwrap();
    let good = svc.block_on(StreamSocket::dial(svc, &ep)).unwrap();
    let (good_server, _) = svc.block_on(acceptor.accept()).unwrap();
    let codec = || TypeLengthCodec::new().max_payload(4096);
    let bad_reader = Framed::new(hostile_server, codec());
    let good_reader = Framed::new(good_server, codec());
    // A header that declares 4 GiB: refused before any of it is buffered.
    let (res, _) = svc.block_on(hostile.write_all(b"\x00\x01\xff\xff\xff\xff".to_vec()));
    res.unwrap();
    let err = svc.block_on(bad_reader.next()).unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(
        err.to_string().contains("over the maximum of 4096"),
        "{err}"
    );
    bad_reader.close();
    // The other connection is unaffected.
    let writer = Framed::new(good, codec());
    writer.try_send(Frame::new(3, &b"still here"[..])).unwrap();
    let got = svc.block_on(good_reader.next()).unwrap().unwrap();
    assert_eq!(got, Frame::new(3, &b"still here"[..]));
    // The hostile peer sees its connection closed.
    let (res, _) = svc.block_on(hostile.read_some(vec![0u8; 16]));
    assert_eq!(res.unwrap(), 0);
});

matrix_test!(slow_reader_gives_backpressure_not_memory, |svc| {
    let pair = util::pair(svc, Transport::Unix).unwrap();
    pair.a.set_send_buffer_size(16 * 1024).unwrap();
    pair.b.set_recv_buffer_size(16 * 1024).unwrap();
    let high_water = 64 * 1024;
    let writer = Framed::new(pair.a, TypeLengthCodec::new());
    writer.set_high_water(high_water);
    let payload = vec![7u8; 1000];
    let mut accepted = 0u32;
    let mut full = 0u32;
    // The reader reads nothing: push until the sender is told to stop, letting writes progress.
    for _ in 0..10_000 {
        match writer.try_send(Frame::new(accepted, payload.clone())) {
            Ok(()) => accepted += 1,
            Err(TrySendError::Full(_)) => {
                full += 1;
                svc.poll().unwrap();
                if full > 50 {
                    break;
                }
            }
            Err(e) => panic!("unexpected: {e}"),
        }
        assert!(
            writer.queued_bytes() < high_water + 1100,
            "queue grew past the high-water mark: {}",
            writer.queued_bytes()
        );
    }
    assert!(full > 0, "the sender never saw backpressure");
    assert!(
        accepted < 10_000,
        "everything was accepted although nobody reads"
    );
    // Now read everything: every accepted frame arrives, in order, and the queue drains.
    let drained = Rc::new(Cell::new(false));
    let flag = drained.clone();
    writer.on_drain(move || flag.set(true));
    let reader = Framed::new(pair.b, TypeLengthCodec::new());
    for i in 0..accepted {
        let f = svc.block_on(reader.next()).unwrap().unwrap();
        assert_eq!(f.kind, i);
        assert_eq!(&f.payload[..], &payload[..]);
    }
    assert!(drained.get(), "on_drain did not fire");
    assert_eq!(writer.queued_bytes(), 0);
});

matrix_test!(close_sends_everything_then_eof, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let writer = Framed::new(pair.a, TypeLengthCodec::new());
    let sent = frames(500);
    for f in &sent {
        writer.encode_and_queue(f.clone()).unwrap();
    }
    writer.close();
    assert!(matches!(
        writer.try_send(Frame::new(1, &b"late"[..])),
        Err(TrySendError::Closed(_))
    ));
    let reader = Framed::new(pair.b, TypeLengthCodec::new());
    for want in &sent {
        assert_eq!(&svc.block_on(reader.next()).unwrap().unwrap(), want);
    }
    assert!(
        svc.block_on(reader.next()).is_none(),
        "expected a clean end of stream"
    );
});

matrix_test!(hundred_clients_thousand_messages_in_order, |svc| {
    const CLIENTS: u32 = 100;
    const MESSAGES: u32 = 1000;
    let acceptor = Rc::new(Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap());
    let ep = acceptor.local_endpoint().unwrap();
    let finished = Rc::new(Cell::new(0u32));
    // Server: every connection must deliver its client's messages 0..MESSAGES in order.
    {
        let svc2 = svc.local();
        let finished = finished.clone();
        let acceptor = acceptor.clone();
        svc.spawn(async move {
            for _ in 0..CLIENTS {
                let (socket, _) = acceptor.accept().await.unwrap();
                let framed = Framed::new(socket, TypeLengthCodec::new());
                let finished = finished.clone();
                svc2.spawn(async move {
                    let first = framed.next().await.unwrap().unwrap();
                    let client = first.kind;
                    assert_eq!(&first.payload[..], &0u32.to_be_bytes());
                    for seq in 1..MESSAGES {
                        let f = framed.next().await.unwrap().unwrap();
                        assert_eq!(f.kind, client, "a message from another client");
                        assert_eq!(&f.payload[..], &seq.to_be_bytes(), "out of order");
                    }
                    assert!(framed.next().await.is_none());
                    finished.set(finished.get() + 1);
                });
            }
        });
    }
    for client in 0..CLIENTS {
        let svc2 = svc.local();
        let ep = ep.clone();
        svc.spawn(async move {
            let socket = StreamSocket::dial(&svc2, &ep).await.unwrap();
            let framed = Framed::new(socket, TypeLengthCodec::new());
            framed.set_high_water(8 * 1024);
            for seq in 0..MESSAGES {
                framed
                    .send(Frame::new(client, seq.to_be_bytes().to_vec()))
                    .await
                    .unwrap();
            }
            framed.close();
        });
    }
    svc.run_until_done().unwrap();
    assert_eq!(finished.get(), CLIENTS);
});

#[test]
fn decoder_trait_objects_are_usable() {
    // The traits are object-safe enough to box a codec behind a dyn Decoder.
    let mut codec: Box<dyn Decoder<Item = Frame>> = Box::new(TypeLengthCodec::new());
    let mut buf = BytesMut::from(&wire(&[Frame::new(1, &b"x"[..])])[..]);
    assert_eq!(
        codec.decode(&mut buf).unwrap(),
        Some(Frame::new(1, &b"x"[..]))
    );
    let _unused: Option<IoService> = None;
}

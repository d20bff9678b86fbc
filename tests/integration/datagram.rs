//! `DatagramSocket`: echo of thousands of datagrams over UDP (IPv4, IPv6) and Unix datagram sockets
//! with none lost, duplicated or corrupted; truncation reported, not silent; oversize datagrams and bad
//! endpoints as clear errors; the sender's endpoint; connected sockets; a receive that does not mark
//! the socket drained; cancellation.

use std::cell::Cell;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use aio::{DatagramSocket, Endpoint, IoBuf, IoService, LocalHandle};

use crate::util;

/// The datagram carrying sequence number `seq`: `seq` (4 bytes), a pattern payload of a length
/// that varies with `seq`, and a checksum (4 bytes) over both.
fn datagram(seq: u32) -> Vec<u8> {
    let len = 16 + (seq as usize * 7919) % 1200;
    let mut d = seq.to_le_bytes().to_vec();
    d.extend(util::pattern(len, u64::from(seq)));
    let sum = checksum(&d);
    d.extend(sum.to_le_bytes());
    d
}

/// FNV-1a.
fn checksum(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Checks a received datagram against what was sent; returns its sequence number.
fn verify(got: &[u8], count: usize) -> Result<u32, String> {
    if got.len() < 8 {
        return Err(format!("a datagram of {} bytes is too short", got.len()));
    }
    let (body, sum) = got.split_at(got.len() - 4);
    if checksum(body).to_le_bytes() != sum {
        return Err(format!(
            "checksum mismatch in a datagram of {} bytes",
            got.len()
        ));
    }
    let seq = u32::from_le_bytes(body[..4].try_into().unwrap());
    if seq as usize >= count || datagram(seq) != got {
        return Err(format!("datagram {seq} differs from what was sent"));
    }
    Ok(seq)
}

/// Echoes every datagram back to its sender until the socket is closed or cancelled.
fn spawn_echo(svc: &LocalHandle, server: Rc<DatagramSocket>) {
    svc.spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            let (res, b) = server.recv_from(buf).await;
            let Ok(meta) = res else { return };
            assert!(
                !meta.truncated,
                "the echo server's buffer holds any test datagram"
            );
            let (res, b) = server.send_to(b.slice(..meta.len), &meta.from).await;
            if res.is_err() {
                return;
            }
            buf = b.into_inner();
        }
    });
}

/// Sends `count` datagrams from `client` to `server`, at most `window` unanswered at a time, and
/// checks every echo. Sending and receiving are separate tasks, so that the client keeps draining its
/// queue while a send waits (a Unix receiver's queue is small, and neither side may block the other).
/// A stall (a lost datagram) cancels the client after a few seconds, so the test fails with a message
/// instead of hanging.
fn echo_many(svc: &IoService, server: Endpoint, client: Endpoint, count: usize, window: usize) {
    let server = Rc::new(DatagramSocket::bind(svc, &server).expect("bind the server"));
    let to = server.local_endpoint().unwrap();
    spawn_echo(svc, server.clone());
    let client = Rc::new(DatagramSocket::bind(svc, &client).expect("bind the client"));
    let progress = Rc::new(Progress::default());
    svc.spawn_background({
        let (svc, client, progress) = (svc.local(), client.clone(), progress.clone());
        async move {
            let mut last = usize::MAX;
            while progress.received.get() < count {
                let _ = svc.after(Duration::from_secs(3)).await;
                if progress.received.get() == last {
                    client.cancel();
                    return;
                }
                last = progress.received.get();
            }
        }
    });
    let sender = svc.spawn({
        let (client, progress, to) = (client.clone(), progress.clone(), to.clone());
        async move {
            for next in 0..count {
                std::future::poll_fn(|cx| progress.room(next, window, cx)).await;
                let (res, _) = client.send_to(datagram(next as u32), &to).await;
                res.map_err(|e| format!("send_to of datagram {next}: {e}"))?;
            }
            Ok::<(), String>(())
        }
    });
    let received: Result<(), String> = svc.block_on(async {
        let mut seen = vec![false; count];
        let mut buf = vec![0u8; 2048];
        for received in 0..count {
            let (res, b) = client.recv_from(buf).await;
            let meta =
                res.map_err(|e| format!("recv_from after {received} of {count} echoes: {e}"))?;
            if meta.truncated || meta.from != to {
                return Err(format!("unexpected {meta:?} (server {to})"));
            }
            let seq = verify(&b[..meta.len], count)? as usize;
            if std::mem::replace(&mut seen[seq], true) {
                return Err(format!("datagram {seq} came back twice"));
            }
            progress.advance();
            buf = b;
        }
        Ok(())
    });
    client.cancel();
    let sent = svc.block_on(sender).expect("the sender task");
    server.close();
    received
        .and(sent)
        .unwrap_or_else(|e| panic!("echo of {count} datagrams: {e}"));
}

/// How many echoes came back, and the sender waiting for room in the window.
#[derive(Default)]
struct Progress {
    received: Cell<usize>,
    sender: std::cell::RefCell<Option<std::task::Waker>>,
}

impl Progress {
    fn room(
        &self,
        next: usize,
        window: usize,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if next - self.received.get() < window {
            std::task::Poll::Ready(())
        } else {
            *self.sender.borrow_mut() = Some(cx.waker().clone());
            std::task::Poll::Pending
        }
    }

    fn advance(&self) {
        self.received.set(self.received.get() + 1);
        if let Some(waker) = self.sender.borrow_mut().take() {
            waker.wake();
        }
    }
}

matrix_test!(
    udp_v4_echo_of_10000_datagrams_loses_duplicates_and_corrupts_none,
    |svc| {
        let ep: Endpoint = "127.0.0.1:0".parse().unwrap();
        echo_many(svc, ep.clone(), ep, 10_000, 16);
    }
);

matrix_test!(
    udp_v6_echo_of_10000_datagrams_loses_duplicates_and_corrupts_none,
    |svc| {
        if !util::ipv6_available("udp_v6_echo") {
            return;
        }
        let ep: Endpoint = "[::1]:0".parse().unwrap();
        echo_many(svc, ep.clone(), ep, 10_000, 16);
    }
);

matrix_test!(unix_datagram_echo_of_10000_datagrams, |svc| {
    let dir = tempfile::tempdir().unwrap();
    let server = Endpoint::unix(dir.path().join("server.sock"));
    let client = Endpoint::unix(dir.path().join("client.sock"));
    echo_many(svc, server, client, 10_000, 8);
    assert!(
        !dir.path().join("server.sock").exists(),
        "closing removes the socket file its bind created"
    );
});

matrix_test!(
    unix_datagram_send_to_a_full_queue_waits_and_resumes,
    |svc| {
        // The kernel queues only a few datagrams per Unix receiver (net.unix.max_dgram_qlen): a window
        // larger than that makes send_to find the queue full (EAGAIN) and wait.
        let dir = tempfile::tempdir().unwrap();
        let client = Endpoint::Unnamed; // auto-bound to an abstract name, so that echoes can come back
        echo_many(svc, Endpoint::unix(dir.path().join("s")), client, 600, 64);
    }
);

matrix_test!(
    a_one_way_unix_send_to_a_full_queue_resumes_once_the_receiver_reads,
    |svc| {
        // No traffic comes back to the sender: only the receiver consuming the sender's datagrams (the
        // kernel then wakes the sender for writing) can wake its waiting send_to.
        let dir = tempfile::tempdir().unwrap();
        let receiver =
            Rc::new(DatagramSocket::bind(svc, &Endpoint::unix(dir.path().join("r"))).unwrap());
        let to = receiver.local_endpoint().unwrap();
        let reader = svc.spawn({
            let (svc, receiver) = (svc.local(), receiver.clone());
            async move {
                // Let the sender fill the queue and wait first.
                let _ = svc.after(Duration::from_millis(50)).await;
                let mut buf = vec![0u8; 64];
                for i in 0..100u32 {
                    let (res, b) = receiver.recv_from(buf).await;
                    let meta = res.expect("recv_from");
                    assert_eq!(b[..meta.len], i.to_le_bytes(), "datagrams in order");
                    buf = b;
                }
            }
        });
        let sender = DatagramSocket::new(svc);
        svc.block_on(async {
            for i in 0..100u32 {
                let (res, _) = sender.send_to(i.to_le_bytes().to_vec(), &to).await;
                res.expect("send_to");
            }
        });
        svc.block_on(reader).expect("the reader task");
    }
);

matrix_test!(
    a_datagram_larger_than_the_buffer_is_reported_truncated,
    |svc| {
        let dir = tempfile::tempdir().unwrap();
        let endpoints: [Endpoint; 2] = [
            "127.0.0.1:0".parse().unwrap(),
            Endpoint::unix(dir.path().join("trunc.sock")),
        ];
        for ep in endpoints {
            let server = DatagramSocket::bind(svc, &ep).unwrap();
            let to = server.local_endpoint().unwrap();
            let client = DatagramSocket::new(svc); // send_to opens it for the endpoint's family
            let big = util::pattern(100, 1);
            for d in [big.clone(), b"small".to_vec()] {
                let (res, _) = svc.block_on(client.send_to(d, &to));
                res.unwrap();
            }
            let (res, buf) = svc.block_on(server.recv_from(Vec::with_capacity(10)));
            let meta = res.unwrap();
            assert!(meta.truncated, "{ep}: {meta:?}");
            assert_eq!((meta.len, meta.datagram_len), (10, 100), "{ep}");
            assert_eq!(buf, big[..10], "{ep}: the bytes that fit are delivered");
            // The rest of the big datagram is gone; the next one is whole.
            let (res, buf) = svc.block_on(server.recv_from(vec![0u8; 64]));
            let meta = res.unwrap();
            assert!(!meta.truncated && meta.len == 5 && meta.datagram_len == 5);
            assert_eq!(&buf[..5], b"small");
        }
    }
);

matrix_test!(an_oversize_datagram_is_a_clear_error, |svc| {
    let socket = DatagramSocket::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let to = socket.local_endpoint().unwrap();
    let (res, buf) = svc.block_on(socket.send_to(vec![7u8; 70_000], &to));
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("70000 bytes") && msg.contains("EMSGSIZE") && msg.contains(&to.to_string()),
        "{msg}"
    );
    assert_eq!(buf.len(), 70_000, "the buffer comes back");
    // The socket still works.
    let (res, _) = svc.block_on(socket.send_to(b"fits".to_vec(), &to));
    assert_eq!(res.unwrap(), 4);

    let (a, _b) = DatagramSocket::pair(svc).unwrap();
    let (res, _) = svc.block_on(a.send(vec![0u8; 8 << 20]));
    let err = res.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("8388608 bytes"), "{err}");
});

matrix_test!(a_unix_path_longer_than_sun_path_is_a_clear_error, |svc| {
    let long = Endpoint::unix(format!("/tmp/{}", "x".repeat(200)));
    let err = DatagramSocket::bind(svc, &long).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("sun_path"), "{err}");
    let socket = DatagramSocket::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let (res, buf) = svc.block_on(socket.send_to(b"x".to_vec(), &long));
    let err = res.unwrap_err();
    assert!(err.to_string().contains("sun_path"), "{err}");
    assert_eq!(buf, b"x");
    let err = socket.connect(&long).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
});

matrix_test!(
    recv_from_names_the_sender_and_connected_sockets_use_send_and_recv,
    |svc| {
        let dir = tempfile::tempdir().unwrap();
        let mut endpoints: Vec<(Endpoint, Endpoint)> = vec![
            (
                "127.0.0.1:0".parse().unwrap(),
                "127.0.0.1:0".parse().unwrap(),
            ),
            (
                Endpoint::unix(dir.path().join("a")),
                Endpoint::unix(dir.path().join("b")),
            ),
            (util::unique_abstract_name(), util::unique_abstract_name()),
        ];
        if util::ipv6_available("recv_from_names_the_sender") {
            endpoints.push(("[::1]:0".parse().unwrap(), "[::1]:0".parse().unwrap()));
        }
        for (server_ep, client_ep) in endpoints {
            let server = DatagramSocket::bind(svc, &server_ep).unwrap();
            let client = DatagramSocket::bind(svc, &client_ep).unwrap();
            let (server_ep, client_ep) = (
                server.local_endpoint().unwrap(),
                client.local_endpoint().unwrap(),
            );
            client.connect(&server_ep).unwrap();
            assert_eq!(client.peer_endpoint().unwrap(), server_ep);
            let (res, _) = svc.block_on(client.send(b"hello".to_vec()));
            assert_eq!(res.unwrap(), 5);
            let (res, buf) = svc.block_on(server.recv_from(vec![0u8; 16]));
            let meta = res.unwrap();
            assert_eq!(
                (meta.from.clone(), &buf[..meta.len]),
                (client_ep.clone(), &b"hello"[..])
            );
            let (res, _) = svc.block_on(server.send_to(b"world".to_vec(), &meta.from));
            res.unwrap();
            let (res, buf) = svc.block_on(client.recv(vec![0u8; 16]));
            let meta = res.unwrap();
            assert_eq!((meta.from, &buf[..meta.len]), (server_ep, &b"world"[..]));
        }
    }
);

matrix_test!(
    a_receive_does_not_mark_the_socket_drained_after_one_datagram,
    |svc| {
        let (a, b) = DatagramSocket::pair(svc).unwrap();
        let peer = a.into_std_unix().unwrap();
        svc.poll().unwrap(); // nothing pending
        for d in [&b"one"[..], b"two", b"three"] {
            peer.send(d).unwrap();
        }
        svc.poll().unwrap(); // the one readiness edge for all three is consumed here
        for want in [&b"one"[..], b"two", b"three"] {
            let got = Rc::new(Cell::new(None));
            b.recv(vec![0u8; 16]).then({
                let got = got.clone();
                move |(res, buf)| got.set(Some(buf[..res.unwrap().len].to_vec()))
            });
            // No new event will come: the datagram must be taken by trying, not by waiting.
            for _ in 0..3 {
                svc.poll().unwrap();
            }
            assert_eq!(got.take().as_deref(), Some(want));
        }
    }
);

matrix_test!(
    close_and_cancel_complete_a_pending_receive_with_ecanceled,
    |svc| {
        let socket = DatagramSocket::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
        let outcome = Rc::new(Cell::new(None));
        let record = |outcome: &Rc<Cell<Option<(bool, usize)>>>| {
            let outcome = outcome.clone();
            move |(res, buf): (io::Result<aio::op::RecvMeta>, Vec<u8>)| {
                let cancelled = res.is_err_and(|e| aio::is_cancelled(&e));
                outcome.set(Some((cancelled, buf.capacity())));
            }
        };
        socket.recv_from(vec![0u8; 8]).then(record(&outcome));
        svc.poll().unwrap();
        assert_eq!(outcome.get(), None, "nothing to receive yet");
        socket.cancel();
        svc.poll().unwrap();
        assert_eq!(
            outcome.take(),
            Some((true, 8)),
            "cancelled, the buffer back"
        );
        assert!(socket.is_open(), "cancel leaves the socket open");

        socket.recv_from(vec![0u8; 8]).then(record(&outcome));
        svc.poll().unwrap();
        socket.close();
        svc.poll().unwrap();
        assert_eq!(outcome.take(), Some((true, 8)), "close cancels too");
        assert!(!socket.is_open());
    }
);

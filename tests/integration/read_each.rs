//! Persistent reads (`read_each`) and the calls that do not wait (`try_read`, `try_write`): an echo
//! built from them moves a large transfer intact over TCP and Unix, each chunk is handed over once
//! and in order, the end of the stream, an error or a cancel ends it with one last call, a break
//! leaves the unread bytes in the socket, a read started meanwhile waits for the persistent read to
//! end, and a pending operation keeps its turn before a try.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::Shutdown;
use std::ops::ControlFlow;
use std::rc::Rc;

use aio::{IoService, StreamSocket};

use crate::util::{self, DropCount, Transport};

/// An echo in the style of the fastest server: each chunk is written back at once with
/// `try_write`; when the socket takes less, the reader stops, `write_all` writes the rest and the
/// reader starts again. Counts those fallbacks in `slow`.
fn echo(socket: Rc<StreamSocket>, slow: Rc<Cell<usize>>) {
    let writer = socket.clone();
    socket.read_each(vec![0u8; 1500], move |res| {
        let chunk = match res {
            Ok(chunk) if !chunk.is_empty() => chunk,
            Ok(_) => return ControlFlow::Break(()),
            Err(e) => panic!("echo read: {e}"),
        };
        let written = match writer.try_write(chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("echo try_write: {e}"),
        };
        if written == chunk.len() {
            return ControlFlow::Continue(());
        }
        slow.set(slow.get() + 1);
        let (socket, slow) = (writer.clone(), slow.clone());
        writer
            .write_all(chunk[written..].to_vec())
            .then(move |(res, _)| {
                res.expect("echo write_all");
                echo(socket, slow);
            });
        ControlFlow::Break(())
    });
}

/// Sends `data` through an echo built on `read_each` and returns what came back, with how many
/// times the echo had to fall back to `write_all`.
fn echo_round_trip(svc: &IoService, transport: Transport, data: Rc<Vec<u8>>) -> (Vec<u8>, usize) {
    let Some(pair) = util::pair(svc, transport) else {
        return (data.to_vec(), 1); // no IPv6 here: nothing to check
    };
    // A small send buffer on the echo's side: its writes must often be short.
    pair.b.set_send_buffer_size(4096).unwrap();
    let slow = Rc::new(Cell::new(0));
    echo(Rc::new(pair.b), slow.clone());
    let client = Rc::new(pair.a);
    let writer = client.clone();
    let sent = data.clone();
    writer.write_all(sent.to_vec()).then(move |(res, _)| {
        res.expect("client write_all");
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let got = Rc::new(RefCell::new(Vec::new()));
    fn read_back(sock: Rc<StreamSocket>, got: Rc<RefCell<Vec<u8>>>, want: usize) {
        if got.borrow().len() == want {
            return;
        }
        let next = sock.clone();
        sock.read_some(vec![0u8; 7_000]).then(move |(res, buf)| {
            let n = res.expect("client read");
            assert!(n > 0, "the echo ended early, after {}", got.borrow().len());
            got.borrow_mut().extend_from_slice(&buf[..n]);
            read_back(next, got, want);
        });
    }
    read_back(client, got.clone(), data.len());
    svc.run_until_done().unwrap();
    let got = got.borrow().clone();
    (got, slow.get())
}

fn echo_moves_the_bytes_intact(svc: &IoService, transport: Transport) {
    let data = Rc::new(util::pattern(1 << 20, 11));
    let (got, slow) = echo_round_trip(svc, transport, data.clone());
    util::assert_same_bytes(&got, &data);
    // 1 MiB through a 4 KiB send buffer: the fallback must have been taken.
    assert!(slow > 0, "the echo never had to fall back to write_all");
}

matrix_test!(echo_with_read_each_and_try_write_tcp_v4, |svc| {
    echo_moves_the_bytes_intact(svc, Transport::TcpV4);
});

matrix_test!(echo_with_read_each_and_try_write_tcp_v6, |svc| {
    echo_moves_the_bytes_intact(svc, Transport::TcpV6);
});

matrix_test!(echo_with_read_each_and_try_write_unix, |svc| {
    echo_moves_the_bytes_intact(svc, Transport::Unix);
});

/// A try found the socket full, then the peer made room before any operation waited to write, so no
/// event told the loop of it: writes started afterwards (a handler's, then a future's) still learn
/// of the room and go out whole.
fn writes_see_room_that_came_before_they_waited(svc: &IoService, transport: Transport) {
    let Some(pair) = util::pair(svc, transport) else {
        return; // no IPv6 here: nothing to check
    };
    let (a, b) = (pair.a, pair.b);
    a.set_send_buffer_size(4096).unwrap();
    for (round, awaited) in [(0, false), (1, true)] {
        let sent = fill_until_full(&a);
        drain_without_the_loop(&b, &sent);
        let tail = util::pattern(3000, 10 + round);
        if awaited {
            let (res, _) = svc.block_on(a.write_all(tail.clone()));
            res.unwrap();
        } else {
            let wrote = Rc::new(Cell::new(false));
            let flag = wrote.clone();
            a.write_all(tail.clone()).then(move |(res, _)| {
                res.unwrap();
                flag.set(true);
            });
            svc.run_until_done().unwrap();
            assert!(wrote.get(), "the handler ran");
        }
        let (res, got) = svc.block_on(b.read_exact(vec![0u8; tail.len()]));
        res.unwrap();
        util::assert_same_bytes(&got, &tail);
    }
}

matrix_test!(writes_see_room_that_came_before_they_waited_tcp, |svc| {
    writes_see_room_that_came_before_they_waited(svc, Transport::TcpV4);
});

matrix_test!(writes_see_room_that_came_before_they_waited_unix, |svc| {
    writes_see_room_that_came_before_they_waited(svc, Transport::Unix);
});

matrix_test!(read_each_hands_over_chunks_then_one_end_of_stream, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let calls = Rc::new(RefCell::new(Vec::<io::Result<Vec<u8>>>::new()));
    let dropped = Rc::new(Cell::new(0));
    let guard = DropCount(dropped.clone());
    b.read_each(vec![0u8; 3], {
        let calls = calls.clone();
        move |res| {
            let _keep = &guard;
            calls.borrow_mut().push(res.map(<[u8]>::to_vec));
            ControlFlow::Continue(())
        }
    });
    assert!(a.try_write(b"abcdefg").unwrap() == 7);
    a.shutdown(Shutdown::Write).unwrap();
    assert!(
        calls.borrow().is_empty(),
        "the handler ran inside read_each or try_write"
    );
    svc.run_until_done().unwrap();
    let calls = calls.borrow();
    let chunks: Vec<&[u8]> = calls
        .iter()
        .map(|c| c.as_ref().expect("no error").as_slice())
        .collect();
    // A 3-byte buffer: the bytes come in order, in chunks of at most 3, then one empty chunk.
    assert_eq!(chunks.last(), Some(&&b""[..]));
    assert_eq!(chunks[..chunks.len() - 1].concat(), b"abcdefg");
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| (1..=3).contains(&c.len()))
    );
    assert_eq!(
        dropped.get(),
        1,
        "the handler is dropped after its last call"
    );
    assert_eq!(svc.pending_work(), 0);
});

matrix_test!(a_break_leaves_the_rest_in_the_socket, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let b = Rc::new(b);
    let calls = Rc::new(Cell::new(0));
    b.read_each(vec![0u8; 4], {
        let calls = calls.clone();
        move |res| {
            assert_eq!(res.expect("first chunk"), b"0123");
            calls.set(calls.get() + 1);
            ControlFlow::Break(())
        }
    });
    a.try_write(b"0123456789").unwrap();
    svc.run_until_done().unwrap();
    assert_eq!(calls.get(), 1, "no call after a break");
    let (res, buf) = svc.block_on(b.read_exact(vec![0u8; 6]));
    res.unwrap();
    assert_eq!(buf, b"456789", "the bytes after the break are still there");
});

matrix_test!(a_read_started_meanwhile_waits_for_read_each_to_end, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let b = Rc::new(b);
    let order = Rc::new(RefCell::new(Vec::<String>::new()));
    b.read_each(vec![0u8; 4], {
        let (order, b) = (order.clone(), b.clone());
        move |res| {
            let chunk = res.expect("chunk").to_vec();
            order
                .borrow_mut()
                .push(format!("each {}", String::from_utf8_lossy(&chunk)));
            if chunk == b"0123" {
                // Queued behind the persistent read: it must not take the next bytes from it.
                let order = order.clone();
                b.read_exact(vec![0u8; 2]).then(move |(res, buf)| {
                    res.expect("read_exact");
                    order
                        .borrow_mut()
                        .push(format!("exact {}", String::from_utf8_lossy(&buf)));
                });
                util::assert_kind(&b.try_read(&mut [0u8; 1]), io::ErrorKind::WouldBlock);
                return ControlFlow::Continue(());
            }
            ControlFlow::Break(()) // "4567": the read behind it gets what follows
        }
    });
    // All there from the start: the read queued behind could take bytes at once if it jumped
    // the line.
    a.try_write(b"01234567ab").unwrap();
    svc.run_until_done().unwrap();
    assert_eq!(
        *order.borrow(),
        ["each 0123", "each 4567", "exact ab"],
        "the read queued during read_each ran after it ended, on the bytes it left"
    );
    assert_eq!(svc.pending_work(), 0);
});

matrix_test!(cancel_ends_read_each_with_one_ecanceled, |svc| {
    let (_a, b) = StreamSocket::pair(svc).unwrap();
    let b = Rc::new(b);
    let results = Rc::new(RefCell::new(Vec::new()));
    b.read_each(vec![0u8; 64], {
        let results = results.clone();
        move |res| {
            results.borrow_mut().push(res.map(|c| c.len()));
            ControlFlow::Continue(())
        }
    });
    assert_eq!(svc.pending_work(), 1, "a persistent read is pending work");
    let canceller = b.clone();
    svc.post(move || canceller.cancel());
    svc.run_until_done().unwrap();
    let results = results.borrow();
    assert_eq!(results.len(), 1, "{results:?}");
    util::assert_cancelled(&results[0]);
});

matrix_test!(closing_from_the_handler_ends_it, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let b = Rc::new(b);
    let results = Rc::new(RefCell::new(Vec::new()));
    b.read_each(vec![0u8; 64], {
        let (results, b) = (results.clone(), b.clone());
        move |res| {
            results.borrow_mut().push(res.map(|c| c.to_vec()));
            b.close();
            ControlFlow::Continue(()) // asks for more of a socket that is gone
        }
    });
    a.try_write(b"x").unwrap();
    svc.run_until_done().unwrap();
    let results = results.borrow();
    assert_eq!(results.len(), 2, "{results:?}");
    assert_eq!(results[0].as_ref().unwrap(), b"x");
    util::assert_cancelled(&results[1]);
    assert!(!b.is_open());
});

matrix_test!(read_each_refuses_an_empty_buffer, |svc| {
    let (_a, b) = StreamSocket::pair(svc).unwrap();
    let result = Rc::new(RefCell::new(None));
    b.read_each(Vec::new(), {
        let result = result.clone();
        move |res| {
            assert!(result.borrow().is_none(), "called twice");
            *result.borrow_mut() = Some(res.map(|c| c.len()));
            ControlFlow::Continue(())
        }
    });
    svc.run_until_done().unwrap();
    util::assert_kind(
        result.borrow().as_ref().expect("called"),
        io::ErrorKind::InvalidInput,
    );
});

matrix_test!(a_dropped_service_drops_the_handler_uncalled, |svc| {
    let svc = util::fresh(svc);
    let (_a, b) = StreamSocket::pair(&svc).unwrap();
    let dropped = Rc::new(Cell::new(0));
    let guard = DropCount(dropped.clone());
    b.read_each(vec![0u8; 8], move |_| {
        let _keep = &guard;
        panic!("no call after the service is dropped");
    });
    drop(svc);
    assert_eq!(dropped.get(), 1);
});

matrix_test!(try_read_and_try_write_do_not_wait, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let mut buf = [0u8; 16];
    util::assert_kind(&b.try_read(&mut buf), io::ErrorKind::WouldBlock);
    assert_eq!(a.try_write(b"hello").unwrap(), 5);
    assert_eq!(b.try_read(&mut buf).unwrap(), 5);
    assert_eq!(&buf[..5], b"hello");
    util::assert_kind(&b.try_read(&mut buf), io::ErrorKind::WouldBlock);
    a.shutdown(Shutdown::Write).unwrap();
    assert_eq!(b.try_read(&mut buf).unwrap(), 0, "end of stream");
    a.close();
    util::assert_kind(&a.try_write(b"x"), io::ErrorKind::NotConnected);
    util::assert_kind(&a.try_read(&mut buf), io::ErrorKind::NotConnected);
});

/// Writes to `socket` with `try_write` until the kernel says WouldBlock; returns what was written.
fn fill_until_full(socket: &StreamSocket) -> Vec<u8> {
    let mut sent = Vec::new();
    let block = util::pattern(1024, 3);
    loop {
        match socket.try_write(&block) {
            Ok(n) => sent.extend_from_slice(&block[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("try_write: {e}"),
        }
        assert!(sent.len() < 64 << 20, "the socket never filled");
    }
    assert!(!sent.is_empty());
    sent
}

/// Reads `want.len()` bytes from `socket` with `try_read`, without running the loop, and checks them.
fn drain_without_the_loop(socket: &StreamSocket, want: &[u8]) {
    let mut drained = vec![0u8; want.len()];
    let mut got = 0;
    while got < want.len() {
        match socket.try_read(&mut drained[got..]) {
            Ok(0) => panic!("end of stream after {got} of {} bytes", want.len()),
            Ok(n) => got += n,
            // TCP: the rest is still on its way through loopback.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::yield_now(),
            Err(e) => panic!("try_read: {e}"),
        }
    }
    util::assert_same_bytes(&drained, want);
}

matrix_test!(a_pending_write_goes_before_try_write, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    a.set_send_buffer_size(4096).unwrap();
    let sent = fill_until_full(&a);
    let tail = util::pattern(5000, 4);
    let wrote = Rc::new(Cell::new(false));
    a.write_all(tail.clone()).then({
        let wrote = wrote.clone();
        move |(res, _)| {
            res.unwrap();
            wrote.set(true);
        }
    });
    // Make room without running the loop: the write still waits, and a try may not jump the line.
    drain_without_the_loop(&b, &sent);
    util::assert_kind(&a.try_write(b"late"), io::ErrorKind::WouldBlock);
    let (res, got) = svc.block_on(b.read_exact(vec![0u8; tail.len()]));
    res.unwrap();
    util::assert_same_bytes(&got, &tail);
    svc.run_until_done().unwrap();
    assert!(wrote.get());
});

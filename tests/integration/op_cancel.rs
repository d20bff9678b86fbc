//! Cancelling one operation through the `OpHandle` that `.then()` returns: only that operation
//! completes with `ECANCELED` (and its buffer), the others of the same object and direction go on,
//! a finished operation is not cancelled again, and a cancel racing the data's arrival has exactly
//! one outcome with no byte lost.

use std::cell::RefCell;
use std::io;
use std::rc::Rc;

use aio::{IoService, StreamSocket};

use crate::util::{self, CountingWaker, Transport};

type ReadOutcome = Rc<RefCell<Option<(io::Result<usize>, Vec<u8>)>>>;

fn slot() -> ReadOutcome {
    Rc::new(RefCell::new(None))
}

fn setter(slot: &ReadOutcome) -> impl FnOnce((io::Result<usize>, Vec<u8>)) + 'static {
    let slot = slot.clone();
    move |out| {
        assert!(slot.borrow().is_none(), "a handler ran twice");
        *slot.borrow_mut() = Some(out);
    }
}

fn wait(svc: &IoService, slot: &ReadOutcome) -> (io::Result<usize>, Vec<u8>) {
    while slot.borrow().is_none() {
        svc.run_one().unwrap();
    }
    slot.take().unwrap()
}

fn only_the_cancelled_read_ends(svc: &IoService, transport: Transport) {
    let Some(pair) = util::pair(svc, transport) else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);
    // Three reads in line on one direction; the second and then the first (on io_uring the one the
    // kernel holds) are cancelled; the third gets the data.
    let (first, second, third) = (slot(), slot(), slot());
    let h1 = a.read_some(b"first".to_vec()).then(setter(&first));
    let h2 = a.read_some(b"second".to_vec()).then(setter(&second));
    let _h3 = a.read_some(vec![0u8; 16]).then(setter(&third));
    assert_eq!(svc.poll().unwrap(), 0, "all three wait");

    assert!(h2.cancel(), "the second read was pending");
    let (res, buf) = wait(svc, &second);
    util::assert_cancelled(&res);
    assert_eq!(buf, b"second", "its buffer comes back as it was");
    assert!(first.borrow().is_none() && third.borrow().is_none());

    assert!(h1.cancel(), "the first read was pending");
    let (res, buf) = wait(svc, &first);
    util::assert_cancelled(&res);
    assert_eq!(buf, b"first");
    assert_eq!(svc.poll().unwrap(), 0, "the third still waits");
    assert!(third.borrow().is_none());

    let (res, _) = svc.block_on(b.write_all(b"data".to_vec()));
    res.unwrap();
    let (res, buf) = wait(svc, &third);
    assert_eq!(res.unwrap(), 4);
    assert_eq!(&buf[..4], b"data");

    // Finished operations: nothing to cancel, nothing runs again.
    assert!(!h1.cancel());
    assert!(!h2.cancel());
    svc.poll().unwrap();
}

matrix_test!(cancels_only_that_operation_tcp, |svc| {
    only_the_cancelled_read_ends(svc, Transport::TcpV4);
});

matrix_test!(cancels_only_that_operation_unix, |svc| {
    only_the_cancelled_read_ends(svc, Transport::Unix);
});

matrix_test!(
    cancelling_a_write_leaves_the_read_of_the_same_socket,
    |svc| {
        let (a, b) = util::stuffed_pair(svc);
        let written = Rc::new(RefCell::new(None));
        let w = written.clone();
        let write = a
            .write_all(vec![1u8; 100_000])
            .then(move |out| *w.borrow_mut() = Some(out));
        let read = slot();
        let _r = a.read_some(vec![0u8; 8]).then(setter(&read));
        assert_eq!(svc.poll().unwrap(), 0, "both wait");

        assert!(write.cancel());
        while written.borrow().is_none() {
            svc.run_one().unwrap();
        }
        let (res, buf) = written.take().unwrap();
        util::assert_cancelled(&res);
        assert_eq!(buf.len(), 100_000, "the write's buffer comes back");
        assert!(read.borrow().is_none(), "the read still waits");

        let (res, _) = svc.block_on(b.write_all(b"x".to_vec()));
        res.unwrap();
        let (res, buf) = wait(svc, &read);
        assert_eq!(res.unwrap(), 1);
        assert_eq!(buf[0], b'x');
    }
);

matrix_test!(dropping_the_handle_does_not_cancel, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let read = slot();
    drop(a.read_some(vec![0u8; 8]).then(setter(&read)));
    assert_eq!(svc.poll().unwrap(), 0);
    let (res, _) = svc.block_on(b.write_all(b"abc".to_vec()));
    res.unwrap();
    let (res, buf) = wait(svc, &read);
    assert_eq!(res.unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
});

matrix_test!(a_cloned_handle_cancels_once, |svc| {
    let (a, _b) = StreamSocket::pair(svc).unwrap();
    let read = slot();
    let handle = a.read_some(vec![0u8; 8]).then(setter(&read));
    let clone = handle.clone();
    assert!(clone.cancel());
    assert!(!handle.cancel(), "already cancelled");
    let (res, _) = wait(svc, &read);
    util::assert_cancelled(&res);
});

matrix_test!(
    an_awaited_operation_turned_into_a_callback_can_be_cancelled,
    |svc| {
        let (a, b) = StreamSocket::pair(svc).unwrap();
        let (_, waker) = CountingWaker::new();
        let mut op = a.read_some(b"polled".to_vec());
        assert!(util::poll_once(&mut op, &waker).is_pending());
        let read = slot();
        let handle = op.then(setter(&read));
        assert!(handle.cancel());
        let (res, buf) = wait(svc, &read);
        util::assert_cancelled(&res);
        assert_eq!(buf, b"polled");

        // The socket reads on afterwards.
        let (res, _) = svc.block_on(b.write_all(b"ok".to_vec()));
        res.unwrap();
        let (res, buf) = svc.block_on(a.read_exact(vec![0u8; 2]));
        res.unwrap();
        assert_eq!(buf, b"ok");
    }
);

matrix_test!(
    cancel_racing_arriving_data_has_one_outcome_and_loses_nothing,
    |svc| {
        let (a, b) = StreamSocket::pair(svc).unwrap();
        const ROUNDS: usize = 300;
        let mut got = Vec::new();
        let mut cancelled = 0;
        for round in 0..ROUNDS {
            let read = slot();
            let handle = a.read_some(vec![0u8; 64]).then(setter(&read));
            // Let it reach the kernel (io_uring) or its line (readiness), then send and cancel at once:
            // the kernel may or may not have completed it when the cancel arrives.
            svc.poll().unwrap();
            let msg = [round as u8; 3];
            assert_eq!(b.try_write(&msg).unwrap(), 3);
            if round % 2 == 1 {
                svc.poll().unwrap(); // sometimes the completion is seen first
            }
            handle.cancel();
            let (res, buf) = wait(svc, &read);
            match res {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert!(aio::is_cancelled(&e), "unexpected error {e}");
                    cancelled += 1;
                }
            }
            // Whatever the cancelled read did not take is still in the socket.
            util::read_available(&a, &mut got);
            assert_eq!(
                svc.poll().unwrap(),
                0,
                "nothing else runs for round {round}"
            );
        }
        let want: Vec<u8> = (0..ROUNDS).flat_map(|r| [r as u8; 3]).collect();
        assert_eq!(got, want, "every byte once, in order");
        assert!(cancelled > 0, "some reads were cancelled");
    }
);

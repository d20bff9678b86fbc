//! Deadlines: `op.timeout(d)` / `op.deadline(t)` complete a late operation with `TimedOut` and its
//! buffer, in both styles; an operation that completes in time is unaffected (and so are later
//! operations, when its deadline passes); a deadline racing the data has exactly one outcome with no
//! byte lost; `aio::time::timeout` reports `Elapsed` and cancels what its future waited on.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::{Acceptor, IoService, StreamSocket, time};

use crate::util::{self, CountingWaker, Transport};

const SHORT: Duration = Duration::from_millis(20);

/// Runs the loop until `done`, bounded by the test's watchdog.
fn run_until(svc: &IoService, done: impl Fn() -> bool) {
    while !done() {
        svc.run_one().unwrap();
    }
}

fn read_times_out(svc: &IoService, transport: Transport) {
    let Some(pair) = util::pair(svc, transport) else {
        return;
    };
    let (a, b) = (&pair.a, &pair.b);

    // Callback style.
    let out = Rc::new(RefCell::new(None));
    let o = out.clone();
    let start = Instant::now();
    let mut buf = Vec::with_capacity(64);
    buf.extend_from_slice(b"keep");
    a.read_some(buf)
        .timeout(SHORT)
        .then(move |res| *o.borrow_mut() = Some(res));
    run_until(svc, || out.borrow().is_some());
    let (res, buf) = out.take().unwrap();
    util::assert_kind(&res, io::ErrorKind::TimedOut);
    assert!(start.elapsed() >= SHORT, "never early");
    assert_eq!(buf, b"keep", "buffer back intact");
    assert_eq!(buf.capacity(), 64);

    // Awaited.
    let start = Instant::now();
    let (res, buf) = svc.block_on(a.read_exact(vec![0u8; 4]).timeout(SHORT));
    util::assert_kind(&res, io::ErrorKind::TimedOut);
    assert!(start.elapsed() >= SHORT);
    assert_eq!(buf.len(), 4);

    // The socket is fine afterwards, and nothing it receives was taken by the timed-out reads.
    let (res, _) = svc.block_on(b.write_all(b"after".to_vec()));
    res.unwrap();
    let (res, buf) = svc.block_on(a.read_exact(vec![0u8; 5]).timeout(Duration::from_secs(10)));
    res.unwrap();
    assert_eq!(buf, b"after");
}

matrix_test!(read_times_out_with_its_buffer_tcp, |svc| {
    read_times_out(svc, Transport::TcpV4);
});

matrix_test!(read_times_out_with_its_buffer_unix, |svc| {
    read_times_out(svc, Transport::Unix);
});

matrix_test!(write_and_accept_time_out, |svc| {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    a.set_send_buffer_size(4096).unwrap();
    b.set_recv_buffer_size(4096).unwrap();
    let (res, buf) = svc.block_on(a.write_all(vec![5u8; 1 << 20]).timeout(SHORT));
    util::assert_kind(&res, io::ErrorKind::TimedOut);
    assert_eq!(buf.len(), 1 << 20, "the write's buffer comes back");

    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let res = svc.block_on(acceptor.accept().timeout(SHORT));
    util::assert_kind(&res.map(|_| ()), io::ErrorKind::TimedOut);
    let res = svc.block_on(
        acceptor
            .accept()
            .deadline(Instant::now() - Duration::from_secs(1)),
    );
    util::assert_kind(&res.map(|_| ()), io::ErrorKind::TimedOut);
});

matrix_test!(
    completing_in_time_is_unaffected_and_later_operations_too,
    |svc| {
        let (a, b) = StreamSocket::pair(svc).unwrap();
        assert_eq!(b.try_write(b"now").unwrap(), 3);
        let runs = Rc::new(Cell::new(0));
        let r = runs.clone();
        a.read_some(vec![0u8; 8])
            .timeout(SHORT)
            .then(move |(res, buf)| {
                assert_eq!(res.unwrap(), 3);
                assert_eq!(&buf[..3], b"now");
                r.set(r.get() + 1);
            });
        run_until(svc, || runs.get() == 1);

        // A read started afterwards (with no deadline) outlives the first one's deadline.
        let later = Rc::new(RefCell::new(None));
        let l = later.clone();
        a.read_some(vec![0u8; 8])
            .then(move |res| *l.borrow_mut() = Some(res));
        let slept = Rc::new(Cell::new(false));
        let s = slept.clone();
        svc.after(SHORT * 3).then(move |res| {
            res.unwrap();
            s.set(true);
        });
        run_until(svc, || slept.get());
        assert!(later.borrow().is_none(), "the later read was not touched");
        assert_eq!(runs.get(), 1, "the first handler ran once");
        assert_eq!(b.try_write(b"later").unwrap(), 5);
        run_until(svc, || later.borrow().is_some());
        let (res, buf) = later.take().unwrap();
        assert_eq!(res.unwrap(), 5);
        assert_eq!(&buf[..5], b"later");
    }
);

matrix_test!(
    deadlines_of_finished_operations_do_not_keep_the_loop_busy,
    |svc| {
        let (a, b) = StreamSocket::pair(svc).unwrap();
        // Many reads with far deadlines that all complete: run_until_done returns once they have (the
        // deadlines left in the timer queue are not work), and in order.
        let got = Rc::new(RefCell::new(Vec::new()));
        const N: usize = 20_000;
        for i in 0..N {
            let g = got.clone();
            a.read_exact(vec![0u8; 2])
                .timeout(Duration::from_secs(3600))
                .then(move |(res, buf)| {
                    res.unwrap();
                    assert_eq!(u16::from_le_bytes([buf[0], buf[1]]) as usize, i);
                    g.borrow_mut().push(i);
                });
        }
        let data: Vec<u8> = (0..N as u16).flat_map(u16::to_le_bytes).collect();
        b.write_all(data).then(|(res, _)| res.unwrap());
        svc.run_until_done().unwrap();
        assert_eq!(got.borrow().len(), N);
    }
);

matrix_test!(
    a_deadline_racing_the_data_has_one_outcome_and_loses_nothing,
    |svc| {
        let (a, b) = StreamSocket::pair(svc).unwrap();
        const ROUNDS: usize = 200;
        let mut got = Vec::new();
        let mut timed_out = 0;
        for round in 0..ROUNDS {
            let out = Rc::new(RefCell::new(None));
            let o = out.clone();
            // A deadline that has passed already: it fires on the loop's next turn, together with the
            // data that arrives meanwhile.
            a.read_some(vec![0u8; 64])
                .deadline(Instant::now())
                .then(move |res| {
                    assert!(o.borrow().is_none(), "one outcome");
                    *o.borrow_mut() = Some(res);
                });
            if round % 3 == 0 {
                svc.poll().unwrap();
            }
            assert_eq!(b.try_write(&[round as u8; 3]).unwrap(), 3);
            run_until(svc, || out.borrow().is_some());
            let (res, buf) = out.take().unwrap();
            match res {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "unexpected error {e}");
                    timed_out += 1;
                }
            }
            util::read_available(&a, &mut got);
            svc.poll().unwrap();
        }
        let want: Vec<u8> = (0..ROUNDS).flat_map(|r| [r as u8; 3]).collect();
        assert_eq!(got, want, "every byte once, in order");
        eprintln!("{timed_out} of {ROUNDS} rounds timed out");

        // The same race, awaited.
        let mut got = Vec::new();
        for round in 0..ROUNDS {
            let (_, waker) = CountingWaker::new();
            let mut op = Box::pin(a.read_some(vec![0u8; 64]).deadline(Instant::now()));
            let first = util::poll_once(&mut op, &waker);
            assert_eq!(b.try_write(&[round as u8; 3]).unwrap(), 3);
            let (res, buf) = match first {
                std::task::Poll::Ready(out) => out,
                std::task::Poll::Pending => svc.block_on(op),
            };
            match res {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::TimedOut, "unexpected error {e}"),
            }
            let mut rest = [0u8; 64];
            while let Ok(n) = a.try_read(&mut rest) {
                got.extend_from_slice(&rest[..n]);
            }
        }
        let want: Vec<u8> = (0..ROUNDS).flat_map(|r| [r as u8; 3]).collect();
        assert_eq!(got, want, "every byte once, in order (awaited)");
    }
);

matrix_test!(
    time_timeout_elapses_and_cancels_the_inner_operation,
    |svc| {
        let (a, b) = StreamSocket::pair(svc).unwrap();
        let res = svc.block_on(time::timeout(SHORT, a.read_exact(vec![0u8; 4])));
        assert_eq!(res.unwrap_err(), time::Elapsed::default());
        let err: io::Error = time::Elapsed::default().into();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);

        // In time: the future's output.
        assert_eq!(b.try_write(b"pong").unwrap(), 4);
        let (res, buf) = svc
            .block_on(time::timeout(
                Duration::from_secs(10),
                a.read_exact(vec![0u8; 4]),
            ))
            .expect("in time");
        res.unwrap();
        assert_eq!(buf, b"pong");

        // Inside a spawned task, and with the loop named.
        let task = svc.spawn(async move {
            let never = std::future::pending::<()>();
            time::timeout_at(Instant::now() + SHORT, never).await
        });
        assert!(svc.block_on(task).unwrap().is_err());
        let never = std::future::pending::<()>();
        assert!(svc.block_on(time::timeout(SHORT, never).on(svc)).is_err());
    }
);

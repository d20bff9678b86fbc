//! How the loop is run: `run_until_done` (returns when the counted work is done, not before, and
//! not held up by background work), `pending_work`, `run_one` / `poll` with timers, and panics
//! passing out of `run` / `run_until_done` with the rest of the work kept for the next call.
//!
//! The background signal waits here are never signalled (signals are sent only in `signals.rs`,
//! each test in its own process).

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aio::signal::SIGUSR2;
use aio::{DeadlineTimer, SignalSet, StreamSocket};

use crate::util;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The text of a caught panic.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

matrix_test!(run_until_done_returns_once_timer_and_io_are_done, |svc| {
    let events = Rc::new(RefCell::new(Vec::new()));
    let start = Instant::now();
    svc.after(ms(20)).then({
        let events = events.clone();
        move |res| {
            res.expect("timer");
            events.borrow_mut().push("timer");
        }
    });
    let (a, b) = StreamSocket::pair(svc).unwrap();
    b.read_exact(vec![0u8; 5]).then({
        let events = events.clone();
        move |(res, buf)| {
            res.expect("read");
            assert_eq!(buf, b"hello");
            events.borrow_mut().push("read");
        }
    });
    a.write_all(b"hello".to_vec()).then({
        let events = events.clone();
        move |(res, _)| {
            res.expect("write");
            events.borrow_mut().push("write");
        }
    });
    assert_eq!(svc.pending_work(), 3);
    svc.run_until_done().unwrap();
    let elapsed = start.elapsed();
    let mut seen = events.borrow().clone();
    assert_eq!(
        seen.last(),
        Some(&"timer"),
        "the timer is the last to complete"
    );
    seen.sort_unstable();
    assert_eq!(seen, ["read", "timer", "write"]);
    assert!(elapsed >= ms(20), "returned before the timer: {elapsed:?}");
    assert_eq!(svc.pending_work(), 0);
    assert!(!svc.is_stopped(), "run_until_done does not stop the loop");
    // With nothing left, it returns at once.
    let start = Instant::now();
    svc.run_until_done().unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
});

matrix_test!(run_until_done_waits_for_every_counted_operation, |svc| {
    // A chain: a timer writes to a socket whose pending read then releases a thread that completes
    // a completion. Each step is pending while the one before runs; run_until_done must see them all.
    let events = Rc::new(RefCell::new(Vec::new()));
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let a = Rc::new(a);
    let (completer, op) = svc.completion::<&'static str>();
    let (go, wait) = mpsc::channel::<()>();
    let helper = std::thread::spawn(move || {
        wait.recv().unwrap();
        completer.complete("from the helper thread");
    });
    op.then({
        let events = events.clone();
        move |res| events.borrow_mut().push(res.unwrap())
    });
    b.read_exact(vec![0u8; 4]).then({
        let events = events.clone();
        move |(res, buf)| {
            res.expect("read");
            assert_eq!(buf, b"ping");
            events.borrow_mut().push("read");
            go.send(()).unwrap();
        }
    });
    let local = svc.local();
    svc.after(ms(10)).then({
        let (events, a) = (events.clone(), a.clone());
        move |res| {
            res.expect("timer");
            events.borrow_mut().push("timer");
            assert_eq!(
                local.pending_work(),
                2,
                "the read and the completion still pend"
            );
            a.write_all(b"ping".to_vec())
                .then(|(res, _)| res.expect("write"));
        }
    });
    assert_eq!(svc.pending_work(), 3);
    svc.run_until_done().unwrap();
    helper.join().unwrap();
    assert_eq!(
        *events.borrow(),
        ["timer", "read", "from the helper thread"]
    );
    assert_eq!(svc.pending_work(), 0);

    // A spawned task counts until it finishes.
    let task = svc.spawn({
        let local = svc.local();
        async move {
            local.after(ms(10)).await.unwrap();
            local.after(ms(10)).await.unwrap();
            "task done"
        }
    });
    assert_eq!(svc.pending_work(), 1);
    let start = Instant::now();
    svc.run_until_done().unwrap();
    assert!(task.is_finished(), "returned before the task finished");
    assert!(start.elapsed() >= ms(20));
    assert_eq!(svc.block_on(task), Ok("task done"));
});

matrix_test!(background_work_does_not_hold_up_run_until_done, |svc| {
    // Never signalled: if these were counted, run_until_done would never return.
    let signals = SignalSet::new(svc, &[SIGUSR2]).expect("SignalSet");
    let signal_result = Rc::new(RefCell::new(None));
    signals.wait().background().then({
        let signal_result = signal_result.clone();
        move |res| *signal_result.borrow_mut() = Some(res)
    });
    let watcher = svc.spawn_background({
        let other = SignalSet::new(svc, &[SIGUSR2]).expect("SignalSet");
        async move { other.wait().await }
    });
    let housekeeping = DeadlineTimer::new(svc).unwrap();
    housekeeping.expires_after(Duration::from_secs(3600));
    housekeeping
        .wait()
        .background()
        .then(|res| util::assert_cancelled(&res));
    assert_eq!(svc.pending_work(), 0, "background work is not counted");

    // The real work: a timer and a round trip.
    let done = Rc::new(Cell::new(0));
    svc.after(ms(10)).then({
        let done = done.clone();
        move |res| {
            res.unwrap();
            done.set(done.get() + 1);
        }
    });
    let (a, b) = StreamSocket::pair(svc).unwrap();
    a.write_all(b"x".to_vec()).then(|(res, _)| res.unwrap());
    b.read_exact(vec![0u8; 1]).then({
        let done = done.clone();
        move |(res, _)| {
            res.unwrap();
            done.set(done.get() + 1);
        }
    });
    assert_eq!(svc.pending_work(), 3);
    let start = Instant::now();
    svc.run_until_done().unwrap();
    assert_eq!(done.get(), 2);
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(
        signal_result.borrow().is_none(),
        "the signal wait is still pending"
    );
    assert!(
        !watcher.is_finished(),
        "the background task is still waiting"
    );

    // Background work still completes normally while the loop runs.
    housekeeping.cancel();
    drop(signals);
    watcher.abort();
    svc.poll().unwrap();
    util::assert_cancelled(signal_result.borrow().as_ref().unwrap());
    assert!(matches!(
        svc.block_on(watcher),
        Err(aio::JoinError::Cancelled)
    ));
});

matrix_test!(pending_work_counts_what_run_until_done_waits_for, |svc| {
    assert_eq!(svc.pending_work(), 0);
    // Unstarted operations and posted closures are not counted work.
    let unstarted = svc.after(ms(1));
    svc.post(|| {});
    assert_eq!(svc.pending_work(), 0);
    drop(unstarted);
    assert_eq!(svc.poll().unwrap(), 1);

    // Callback operations count from then() until their handler has run.
    let timer = DeadlineTimer::new(svc).unwrap();
    timer.expires_after(Duration::from_secs(3600));
    timer.wait().then(|_| {});
    timer.wait().then(|_| {});
    assert_eq!(svc.pending_work(), 2);
    timer.wait().background().then(|_| {});
    assert_eq!(svc.pending_work(), 2, "background ops are not counted");
    let (completer, op) = svc.completion::<()>();
    op.then(|res| res.unwrap());
    assert_eq!(svc.pending_work(), 3);
    // Tasks count until they finish or are aborted; background tasks never.
    let task = svc.spawn(std::future::pending::<()>());
    let background = svc.spawn_background(std::future::pending::<()>());
    assert_eq!(svc.pending_work(), 4);
    // A future-style op inside a block_on is not counted by itself.
    svc.block_on(async {
        let wait = svc.after(ms(1));
        assert_eq!(svc.pending_work(), 4);
        wait.await.unwrap();
    });
    assert_eq!(svc.pending_work(), 4);

    // A cancelled operation counts until its handler has run.
    timer.cancel();
    assert_eq!(svc.pending_work(), 4);
    svc.poll().unwrap();
    assert_eq!(svc.pending_work(), 2);
    completer.complete(());
    assert_eq!(svc.run_one().unwrap(), 1, "the completion's handler ran");
    assert_eq!(svc.pending_work(), 1);
    task.abort();
    background.abort();
    assert_eq!(svc.pending_work(), 0);
    svc.run_until_done().unwrap();
});

matrix_test!(run_one_and_poll_with_timers, |svc| {
    let fired = Rc::new(RefCell::new(Vec::new()));
    let record = |name: &'static str| {
        let fired = fired.clone();
        move |res: std::io::Result<()>| {
            res.unwrap();
            fired.borrow_mut().push(name);
        }
    };
    // Only an hour-long timer pending: poll returns at once, having run nothing.
    let late = DeadlineTimer::new(svc).unwrap();
    late.expires_after(Duration::from_secs(3600));
    let late_result = Rc::new(RefCell::new(None));
    late.wait().then({
        let late_result = late_result.clone();
        move |res| *late_result.borrow_mut() = Some(res)
    });
    let start = Instant::now();
    assert_eq!(svc.poll().unwrap(), 0);
    assert!(start.elapsed() < Duration::from_secs(1), "poll waited");

    // run_one waits for the earliest timer and runs only its handler.
    let start = Instant::now();
    svc.after(ms(20)).then(record("early"));
    assert_eq!(svc.run_one().unwrap(), 1);
    assert!(
        start.elapsed() >= ms(20),
        "run_one returned before the timer"
    );
    assert_eq!(*fired.borrow(), ["early"]);
    assert_eq!(svc.poll().unwrap(), 0, "the hour-long timer is not due");

    // Two timers: each run_one runs one of them, in deadline order.
    let base = Instant::now();
    svc.at(base + ms(20)).then(record("second"));
    svc.at(base + ms(10)).then(record("first"));
    assert_eq!(svc.run_one().unwrap(), 1);
    assert_eq!(*fired.borrow(), ["early", "first"]);
    assert!(Instant::now() >= base + ms(10));
    assert_eq!(svc.run_one().unwrap(), 1);
    assert_eq!(*fired.borrow(), ["early", "first", "second"]);
    assert!(Instant::now() >= base + ms(20));
    late.cancel();
    assert_eq!(svc.poll().unwrap(), 1);
    util::assert_cancelled(late_result.borrow().as_ref().unwrap());

    // Several due at once: run_one runs one, poll the rest.
    let past = Instant::now();
    for name in ["a", "b", "c"] {
        svc.at(past).then(record(name));
    }
    assert_eq!(svc.run_one().unwrap(), 1);
    assert_eq!(fired.borrow().len(), 4);
    assert_eq!(svc.poll().unwrap(), 2);
    assert_eq!(fired.borrow()[3..], ["a", "b", "c"]);

    // A posted closure runs before run_one would wait for a timer.
    svc.after(Duration::from_secs(3600)).then(|_| {});
    let ran = Rc::new(Cell::new(false));
    svc.post({
        let ran = ran.clone();
        move || ran.set(true)
    });
    let start = Instant::now();
    assert_eq!(svc.run_one().unwrap(), 1);
    assert!(ran.get());
    assert!(start.elapsed() < Duration::from_secs(1));
});

matrix_test!(run_one_and_poll_count_a_completions_handler, |svc| {
    // A completion delivered from another thread: run_one returns once its handler has run (the
    // delivery itself is no handler), and poll counts the handler once.
    let got = Rc::new(Cell::new(None));
    let (completer, op) = svc.completion::<u32>();
    op.then({
        let got = got.clone();
        move |res| got.set(Some(res.unwrap()))
    });
    let helper = std::thread::spawn(move || completer.complete(1));
    assert_eq!(svc.run_one().unwrap(), 1);
    assert_eq!(
        got.get(),
        Some(1),
        "run_one returned before the handler ran"
    );
    helper.join().unwrap();

    let (completer, op) = svc.completion::<u32>();
    op.then({
        let got = got.clone();
        move |res| got.set(Some(res.unwrap()))
    });
    std::thread::spawn(move || completer.complete(2))
        .join()
        .unwrap();
    assert_eq!(svc.poll().unwrap(), 1);
    assert_eq!(got.get(), Some(2), "poll returned before the handler ran");

    // spawn_blocking goes the same way.
    svc.spawn_blocking(|| 3).then({
        let got = got.clone();
        move |res| got.set(Some(res.unwrap()))
    });
    assert_eq!(svc.run_one().unwrap(), 1);
    assert_eq!(got.get(), Some(3));

    // A delivery for an operation that was dropped runs nothing: poll reports 0.
    let (completer, op) = svc.completion::<u32>();
    drop(op);
    std::thread::spawn(move || completer.complete(4))
        .join()
        .unwrap();
    assert_eq!(svc.poll().unwrap(), 0);
    assert_eq!(svc.pending_work(), 0);
});

matrix_test!(
    a_handler_panic_passes_out_and_the_next_run_continues,
    |svc| {
        let ran = Rc::new(RefCell::new(Vec::new()));
        let start = Instant::now();
        svc.post(|| panic!("posted handler boom"));
        svc.post({
            let ran = ran.clone();
            move || ran.borrow_mut().push("post")
        });
        svc.after(ms(10)).then({
            let (ran, local) = (ran.clone(), svc.local());
            move |res| {
                res.unwrap();
                ran.borrow_mut().push("timer");
                local.stop();
            }
        });
        let caught =
            catch_unwind(AssertUnwindSafe(|| svc.run())).expect_err("the panic passes out");
        assert_eq!(panic_text(&*caught), "posted handler boom");
        assert!(ran.borrow().is_empty(), "run() ended at the panic");
        assert_eq!(svc.pending_work(), 1, "the timer still pends");
        svc.run().expect("a second run()");
        assert_eq!(*ran.borrow(), ["post", "timer"]);
        assert!(start.elapsed() >= ms(10));

        // The same through run_until_done, with a panicking timer handler and a task.
        svc.restart();
        let ran = Rc::new(RefCell::new(Vec::new()));
        svc.after(ms(1)).then(|_| panic!("timer handler boom"));
        svc.after(ms(5)).then({
            let ran = ran.clone();
            move |res| {
                res.unwrap();
                ran.borrow_mut().push("second timer");
            }
        });
        let task = svc.spawn({
            let (ran, local) = (ran.clone(), svc.local());
            async move {
                local.after(ms(8)).await.unwrap();
                ran.borrow_mut().push("task");
            }
        });
        let caught = catch_unwind(AssertUnwindSafe(|| svc.run_until_done()))
            .expect_err("the panic passes out of run_until_done");
        assert_eq!(panic_text(&*caught), "timer handler boom");
        assert_eq!(
            svc.pending_work(),
            2,
            "the panicking handler's work is settled"
        );
        svc.run_until_done().expect("a second run_until_done()");
        assert_eq!(*ran.borrow(), ["second timer", "task"]);
        assert!(task.is_finished());
        assert_eq!(svc.pending_work(), 0);
    }
);

// Handlers of operations that an event finishes may run from the dispatch itself: `stop()` from one
// still ends `run()` before any other handler, a panic in one loses none of the others, and reads
// queued on one socket still complete in order.
matrix_test!(
    handlers_finished_by_events_keep_stop_panic_and_order,
    |svc| {
        // The writing ends are std sockets: a write of the loop's own could let it run the read
        // handlers early (on io_uring, a write is a request that needs a turn of the loop).
        let pairs: Vec<(StreamSocket, std::os::unix::net::UnixStream)> = (0..4)
            .map(|_| {
                let (a, b) = std::os::unix::net::UnixStream::pair().expect("pair");
                (StreamSocket::from_fd(svc, a).expect("from_fd"), b)
            })
            .collect();
        let ran = Rc::new(RefCell::new(Vec::new()));
        for (i, (a, _)) in pairs.iter().enumerate() {
            let (ran, local) = (ran.clone(), svc.local());
            a.read_some(vec![0u8; 8]).then(move |(res, _)| {
                assert_eq!(res.expect("read"), 1);
                ran.borrow_mut().push(i);
                local.stop();
                if i == 1 {
                    panic!("dispatched handler boom");
                }
            });
        }
        // Nothing to read yet: every read waits for an event.
        assert_eq!(svc.poll().expect("poll"), 0);
        for (_, b) in &pairs {
            std::io::Write::write_all(&mut &*b, &[7u8]).expect("write");
        }
        svc.restart();
        // One handler per run(): each stops the loop; the panicking one passes out and loses nothing.
        let mut runs = 0;
        while ran.borrow().len() < 4 {
            runs += 1;
            assert!(runs <= 8, "handlers lost: {:?}", ran.borrow());
            let before = ran.borrow().len();
            let result = catch_unwind(AssertUnwindSafe(|| svc.run()));
            if let Err(caught) = result {
                assert_eq!(panic_text(&*caught), "dispatched handler boom");
            }
            assert_eq!(
                ran.borrow().len(),
                before + 1,
                "exactly one handler per run()"
            );
            svc.restart();
        }
        let mut seen = ran.borrow().clone();
        seen.sort_unstable();
        assert_eq!(seen, [0, 1, 2, 3]);

        // Two reads waiting on one socket finish in the order they were started, and a read started by
        // the first one's handler comes after both.
        let (a, b) = StreamSocket::pair(svc).expect("pair");
        let a = Rc::new(a);
        let order = Rc::new(RefCell::new(Vec::new()));
        for n in 0..2 {
            let (order, a2) = (order.clone(), a.clone());
            a.read_exact(vec![0u8; 1]).then(move |(res, buf)| {
                res.expect("read");
                order.borrow_mut().push(buf[0]);
                if n == 0 {
                    let order = order.clone();
                    a2.read_exact(vec![0u8; 1]).then(move |(res, buf)| {
                        res.expect("read");
                        order.borrow_mut().push(buf[0]);
                    });
                }
            });
        }
        svc.block_on(b.write_all(vec![1u8, 2, 3])).0.expect("write");
        svc.run_until_done().expect("run_until_done");
        assert_eq!(*order.borrow(), [1, 2, 3]);
    }
);

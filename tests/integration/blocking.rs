//! Blocking work and completions: `spawn_blocking` (result, panics, many calls, the bounded and
//! lazily started pool) and `completion()` (completed, failed or dropped from other threads and from
//! a foreign callback; the handler always runs on the loop thread).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use aio::IoService;

use crate::util;

/// The threads of this process, and how many of them are blocking-pool threads (by name).
fn threads() -> (usize, usize) {
    let mut total = 0;
    let mut pool = 0;
    for entry in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let entry = entry.unwrap();
        total += 1;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == "aio-blocking" {
            pool += 1;
        }
    }
    (total, pool)
}

/// The message of an error, for assertions.
fn message(e: &io::Error) -> String {
    e.to_string()
}

matrix_test!(spawn_blocking_returns_its_result_in_both_styles, |svc| {
    let loop_thread = std::thread::current().id();
    // Future style.
    let (value, ran_on) = svc
        .block_on(svc.spawn_blocking(|| ((1..=100u64).sum::<u64>(), std::thread::current().id())))
        .expect("spawn_blocking");
    assert_eq!(value, 5050);
    assert_ne!(ran_on, loop_thread, "the closure ran on a pool thread");

    // Callback style: the handler runs on the loop thread, after then() returned.
    let got = Rc::new(RefCell::new(None));
    svc.spawn_blocking(|| vec![1u8, 2, 3]).then({
        let got = got.clone();
        move |res| *got.borrow_mut() = Some((res, std::thread::current().id()))
    });
    assert!(got.borrow().is_none());
    assert_eq!(svc.pending_work(), 1);
    svc.run_until_done().unwrap();
    let (res, handler_thread) = got.borrow_mut().take().expect("the handler ran");
    assert_eq!(res.unwrap(), [1, 2, 3]);
    assert_eq!(handler_thread, loop_thread);
    assert_eq!(svc.pending_work(), 0);
});

matrix_test!(
    a_panic_in_blocking_work_is_an_error_and_the_loop_goes_on,
    |svc| {
        // Future style.
        let res = svc.block_on(svc.spawn_blocking(|| -> u32 { panic!("boom in the pool") }));
        let e = res.expect_err("a panicking closure gives an error");
        assert_eq!(e.kind(), io::ErrorKind::Other);
        assert!(message(&e).contains("panicked"), "{e}");
        assert!(message(&e).contains("boom in the pool"), "{e}");

        // Callback style, with a formatted (String) payload, beside work that succeeds.
        let results = Rc::new(RefCell::new(Vec::new()));
        for i in 0..4u32 {
            let results = results.clone();
            svc.spawn_blocking(move || {
                if i == 2 {
                    panic!("job {i} failed");
                }
                i * 10
            })
            .then(move |res| results.borrow_mut().push((i, res)));
        }
        svc.run_until_done().unwrap();
        let mut results = results.take();
        results.sort_by_key(|(i, _)| *i);
        assert_eq!(results.len(), 4);
        for (i, res) in results {
            match res {
                Ok(v) => {
                    assert_ne!(i, 2);
                    assert_eq!(v, i * 10);
                }
                Err(e) => {
                    assert_eq!(i, 2, "{e}");
                    assert!(message(&e).contains("panicked"), "{e}");
                    assert!(message(&e).contains("job 2 failed"), "{e}");
                }
            }
        }
        // The loop and the pool still work.
        assert_eq!(svc.block_on(svc.spawn_blocking(|| 7)).unwrap(), 7);
        let fired = Rc::new(Cell::new(false));
        svc.after(Duration::from_millis(1)).then({
            let fired = fired.clone();
            move |res| fired.set(res.is_ok())
        });
        svc.run_until_done().unwrap();
        assert!(fired.get());
    }
);

matrix_test!(many_blocking_calls_complete_on_a_bounded_pool, |svc| {
    const JOBS: usize = 200;
    const MAX: usize = 4;
    let svc = IoService::builder()
        .backend(svc.backend())
        .max_blocking_threads(MAX)
        .build()
        .unwrap();
    let ids = Arc::new(Mutex::new(HashSet::<ThreadId>::new()));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let done = Rc::new(RefCell::new(vec![None; JOBS]));
    let start = Instant::now();
    for i in 0..JOBS {
        let (ids, running, most) = (ids.clone(), running.clone(), most.clone());
        let done = done.clone();
        svc.spawn_blocking(move || {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            ids.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(Duration::from_millis(1)); // the blocking work
            running.fetch_sub(1, Ordering::SeqCst);
            i * 3
        })
        .then(move |res| {
            let slot = &mut done.borrow_mut()[i];
            assert!(slot.is_none(), "handler {i} ran twice");
            *slot = Some(res.expect("blocking job"));
        });
    }
    assert_eq!(svc.pending_work(), JOBS);
    svc.run_until_done().unwrap();
    let elapsed = start.elapsed();
    for (i, v) in done.borrow().iter().enumerate() {
        assert_eq!(*v, Some(i * 3), "job {i}");
    }
    let threads = ids.lock().unwrap().len();
    let most = most.load(Ordering::SeqCst);
    assert!(
        (1..=MAX).contains(&threads),
        "{threads} pool threads for a bound of {MAX}"
    );
    assert!(most <= MAX, "{most} jobs ran at once for a bound of {MAX}");
    // 200 jobs of 1 ms on at most 4 threads: at least 50 ms.
    assert!(
        elapsed >= Duration::from_millis((JOBS / MAX) as u64),
        "{elapsed:?}"
    );

    // A bound of 1 runs one job at a time.
    let single = IoService::builder()
        .backend(svc.backend())
        .max_blocking_threads(0) // at least 1
        .build()
        .unwrap();
    let ids = Arc::new(Mutex::new(HashSet::<ThreadId>::new()));
    let count = Rc::new(Cell::new(0));
    for _ in 0..20 {
        let (ids, count) = (ids.clone(), count.clone());
        single
            .spawn_blocking(move || ids.lock().unwrap().insert(std::thread::current().id()))
            .then(move |res| {
                res.unwrap();
                count.set(count.get() + 1);
            });
    }
    single.run_until_done().unwrap();
    assert_eq!(count.get(), 20);
    assert_eq!(ids.lock().unwrap().len(), 1);
});

matrix_test!(the_pool_starts_no_thread_before_first_use, |svc| {
    // Counting the process's threads needs a process with no other test running in it.
    util::in_child(|| {
        let (before, pool_before) = threads();
        assert_eq!(pool_before, 0);
        let own = IoService::builder()
            .backend(svc.backend())
            .max_blocking_threads(3)
            .build()
            .unwrap();
        // The loop at work, without blocking work: timers, posts, completions.
        own.block_on(own.after(Duration::from_millis(2))).unwrap();
        let (completer, op) = own.completion::<u8>();
        completer.complete(1);
        assert_eq!(own.block_on(op).unwrap(), 1);
        own.post(|| {});
        own.poll().unwrap();
        assert_eq!(threads(), (before, 0), "a thread started before first use");

        // First use: exactly one thread, named for the pool.
        let name = own
            .block_on(own.spawn_blocking(|| std::thread::current().name().map(String::from)))
            .unwrap();
        assert_eq!(name.as_deref(), Some("aio-blocking"));
        assert_eq!(threads(), (before + 1, 1));

        // Under load, never more than the bound.
        for _ in 0..50 {
            own.spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
                .then(|res| res.unwrap());
        }
        own.run_until_done().unwrap();
        let (total, pool) = threads();
        assert!(
            (1..=3).contains(&pool),
            "{pool} pool threads for a bound of 3"
        );
        assert_eq!(total, before + pool);
    });
});

matrix_test!(completion_from_another_thread, |svc| {
    let loop_thread = std::thread::current().id();
    // Future style: completed.
    let (completer, op) = svc.completion::<String>();
    let t = std::thread::spawn(move || completer.complete("done".to_string()));
    assert_eq!(svc.block_on(op).unwrap(), "done");
    t.join().unwrap();

    // Future style: failed, with the error passed through.
    let (completer, op) = svc.completion::<String>();
    std::thread::spawn(move || {
        completer.fail(io::Error::new(io::ErrorKind::TimedOut, "device timed out"))
    })
    .join()
    .unwrap();
    let e = svc.block_on(op).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    assert_eq!(message(&e), "device timed out");

    // Callback style: the handler runs on the loop thread.
    let got = Rc::new(RefCell::new(None));
    let (completer, op) = svc.completion::<u64>();
    op.then({
        let got = got.clone();
        move |res| *got.borrow_mut() = Some((res, std::thread::current().id()))
    });
    assert_eq!(svc.pending_work(), 1);
    let t = std::thread::spawn(move || completer.complete(99));
    svc.run_until_done().unwrap();
    t.join().unwrap();
    let (res, on) = got.borrow_mut().take().expect("handler ran");
    assert_eq!(res.unwrap(), 99);
    assert_eq!(on, loop_thread);

    // Completed before the operation started: the value is kept for it, still not inline.
    let (completer, op) = svc.completion::<u8>();
    completer.complete(5);
    svc.poll().unwrap();
    let got = Rc::new(Cell::new(None));
    op.then({
        let got = got.clone();
        move |res| got.set(Some(res.unwrap()))
    });
    assert_eq!(got.get(), None);
    svc.run_until_done().unwrap();
    assert_eq!(got.get(), Some(5));
});

matrix_test!(a_dropped_completer_completes_with_broken_pipe, |svc| {
    // Dropped on another thread while the future waits.
    let (completer, op) = svc.completion::<u32>();
    let t = std::thread::spawn(move || drop(completer));
    let start = Instant::now();
    let e = svc.block_on(op).unwrap_err();
    t.join().unwrap();
    assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
    assert!(message(&e).contains("dropped"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(5));

    // Callback style: run_until_done returns (the operation does not hang).
    let got = Rc::new(RefCell::new(None));
    let (completer, op) = svc.completion::<u32>();
    op.then({
        let got = got.clone();
        move |res| *got.borrow_mut() = Some(res)
    });
    drop(completer);
    assert!(got.borrow().is_none(), "the handler ran inside the drop");
    svc.run_until_done().unwrap();
    util::assert_kind(got.borrow().as_ref().unwrap(), io::ErrorKind::BrokenPipe);

    // A completer dropped inside a panicking thread completes the operation too.
    let (completer, op) = svc.completion::<u32>();
    let t = std::thread::spawn(move || {
        let _completer = completer;
        panic!("driver thread died");
    });
    assert!(t.join().is_err());
    util::assert_kind(&svc.block_on(op), io::ErrorKind::BrokenPipe);
});

/// A callback-based "C" API: calls `callback` from its own thread once `go` says so.
fn foreign_start(callback: Box<dyn FnOnce(i32) + Send>, go: mpsc::Receiver<i32>) -> ThreadId {
    let t = std::thread::spawn(move || {
        let value = go.recv().unwrap();
        callback(value);
    });
    t.thread().id()
}

matrix_test!(
    completing_from_a_foreign_callback_runs_the_handler_on_the_loop,
    |svc| {
        let loop_thread = std::thread::current().id();
        let (completer, op) = svc.completion::<(i32, ThreadId)>();
        let (go, wait) = mpsc::channel();
        let foreign = foreign_start(
            Box::new(move |value| completer.complete((value, std::thread::current().id()))),
            wait,
        );
        let got = Rc::new(RefCell::new(None));
        op.then({
            let got = got.clone();
            move |res| *got.borrow_mut() = Some((res, std::thread::current().id()))
        });
        // Released from the loop itself, after it started running.
        svc.post(move || go.send(42).unwrap());
        svc.run_until_done().unwrap();
        let (res, handler_thread) = got.borrow_mut().take().expect("handler ran");
        let (value, completed_on) = res.unwrap();
        assert_eq!(value, 42);
        assert_eq!(
            completed_on, foreign,
            "complete() was called on the foreign thread"
        );
        assert_eq!(
            handler_thread, loop_thread,
            "the handler ran on the loop thread"
        );

        // Future style, inside a task.
        let (completer, op) = svc.completion::<i32>();
        let (go, wait) = mpsc::channel();
        foreign_start(Box::new(move |v| completer.complete(v * 2)), wait);
        let task = svc.spawn(async move { (op.await, std::thread::current().id()) });
        go.send(21).unwrap();
        let (res, on) = svc.block_on(task).unwrap();
        assert_eq!(res.unwrap(), 42);
        assert_eq!(on, loop_thread);
    }
);

matrix_test!(late_completions_are_harmless, |svc| {
    // The operation was dropped before the completer finished: nothing runs, nothing breaks.
    let (completer, op) = svc.completion::<u8>();
    drop(op);
    std::thread::spawn(move || completer.complete(1))
        .join()
        .unwrap();
    svc.poll().unwrap();
    assert_eq!(svc.pending_work(), 0);

    // Blocking work whose future was dropped still runs to the end on its thread.
    let finished = Arc::new(AtomicUsize::new(0));
    let (release, wait) = mpsc::channel::<()>();
    let (ended, ended_rx) = mpsc::channel::<()>();
    let op = svc.spawn_blocking({
        let finished = finished.clone();
        move || {
            wait.recv().unwrap();
            finished.fetch_add(1, Ordering::SeqCst);
            ended.send(()).unwrap();
        }
    });
    drop(op);
    release.send(()).unwrap();
    ended_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    assert_eq!(svc.block_on(svc.spawn_blocking(|| 3)).unwrap(), 3);

    // The service is dropped while blocking work runs: the work finishes, its result goes nowhere.
    let own = util::fresh(svc);
    let (release, wait) = mpsc::channel::<()>();
    let (ended, ended_rx) = mpsc::channel::<()>();
    let (started, started_rx) = mpsc::channel::<()>();
    own.spawn_blocking(move || {
        started.send(()).unwrap();
        wait.recv().unwrap();
        ended.send(()).unwrap();
        5
    })
    .then(|_| panic!("a handler ran after its service was dropped"));
    started_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let local = own.local();
    drop(own);
    release.send(()).unwrap();
    ended_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // New work on the dropped service is refused without running.
    let ran = Arc::new(AtomicUsize::new(0));
    let mut op = local.spawn_blocking({
        let ran = ran.clone();
        move || ran.fetch_add(1, Ordering::SeqCst)
    });
    let (_, waker) = util::CountingWaker::new();
    match util::poll_once(&mut op, &waker) {
        std::task::Poll::Ready(res) => util::assert_kind(&res, io::ErrorKind::BrokenPipe),
        std::task::Poll::Pending => panic!("work on a dropped service stayed pending"),
    }
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    let (completer, mut op) = local.completion::<u8>();
    completer.complete(1);
    assert!(matches!(
        util::poll_once(&mut op, &waker),
        std::task::Poll::Ready(Err(_))
    ));
});

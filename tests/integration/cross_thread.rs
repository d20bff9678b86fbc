//! Other threads and the loop: `Handle::post` from many threads (each closure once, on the loop
//! thread, in per-thread order), `stop` from another thread while the loop sleeps, and posting to a
//! dropped service.

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex, mpsc};
use std::time::{Duration, Instant};

use aio::{DeadlineTimer, Handle, StreamSocket};

use crate::util::{self, SendDropCount};

#[test]
fn handle_is_send_and_sync() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<Handle>();
}

matrix_test!(
    posts_from_eight_threads_run_once_each_in_per_thread_order,
    |svc| {
        const THREADS: usize = 8;
        const PER_THREAD: usize = 10_000;
        let loop_thread = std::thread::current().id();
        // (poster, sequence) in the order the loop ran them; the closures are Send, so a Mutex.
        let log = Arc::new(Mutex::new(Vec::with_capacity(THREADS * PER_THREAD)));
        let off_thread = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(Mutex::new(None));
        let handle = svc.handle();
        let coordinator = std::thread::spawn({
            let (log, off_thread, finished) = (log.clone(), off_thread.clone(), finished.clone());
            move || {
                // All posters start together, so that their posts interleave.
                let start = Arc::new(Barrier::new(THREADS));
                let posters: Vec<_> = (0..THREADS)
                    .map(|t| {
                        let (handle, log, off_thread, start) = (
                            handle.clone(),
                            log.clone(),
                            off_thread.clone(),
                            start.clone(),
                        );
                        std::thread::spawn(move || {
                            start.wait();
                            for seq in 0..PER_THREAD {
                                let (log, off_thread) = (log.clone(), off_thread.clone());
                                handle
                                    .post(move || {
                                        if std::thread::current().id() != loop_thread {
                                            off_thread.fetch_add(1, Ordering::SeqCst);
                                        }
                                        log.lock().unwrap().push((t, seq));
                                    })
                                    .expect("post");
                            }
                        })
                    })
                    .collect();
                for p in posters {
                    p.join().unwrap();
                }
                // Posted after every other post returned: it runs last, then stops the loop.
                let stopper = handle.clone();
                handle
                    .post(move || {
                        *finished.lock().unwrap() = Some(log.lock().unwrap().len());
                        stopper.stop();
                    })
                    .expect("final post");
            }
        });
        let start = Instant::now();
        svc.run().unwrap();
        coordinator.join().unwrap();
        eprintln!(
            "{} posts from {THREADS} threads in {:?}",
            THREADS * PER_THREAD,
            start.elapsed()
        );

        assert_eq!(
            *finished.lock().unwrap(),
            Some(THREADS * PER_THREAD),
            "the final post ran after every other one"
        );
        assert_eq!(
            off_thread.load(Ordering::SeqCst),
            0,
            "a closure ran off the loop thread"
        );
        let log = log.lock().unwrap();
        assert_eq!(
            log.len(),
            THREADS * PER_THREAD,
            "each closure ran exactly once"
        );
        let mut next = [0usize; THREADS];
        for &(t, seq) in log.iter() {
            assert_eq!(
                seq, next[t],
                "thread {t}: closure {seq} ran when {} was due",
                next[t]
            );
            next[t] += 1;
        }
        assert!(next.iter().all(|&n| n == PER_THREAD));
        // Nothing is left over.
        svc.restart();
        assert_eq!(svc.poll().unwrap(), 0);
    }
);

matrix_test!(stop_from_another_thread_wakes_a_sleeping_loop, |svc| {
    // The loop has an hour-long timer and an idle read: only the stop can end run().
    let timer = DeadlineTimer::new(svc).unwrap();
    timer.expires_after(Duration::from_secs(3600));
    timer.wait().then(|res| util::assert_cancelled(&res));
    let (quiet, _peer) = StreamSocket::pair(svc).unwrap();
    quiet
        .read_some(vec![0u8; 8])
        .then(|(res, _)| util::assert_cancelled(&res));

    let (tx, rx) = mpsc::channel::<()>();
    let handle = svc.handle();
    let stopper = std::thread::spawn(move || {
        rx.recv().unwrap();
        handle.stop();
    });
    svc.post(move || tx.send(()).unwrap());
    let start = Instant::now();
    svc.run().unwrap();
    stopper.join().unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert!(svc.is_stopped());
    assert_eq!(
        svc.pending_work(),
        2,
        "the timer wait and the read still pend"
    );

    // The same for run_until_done with counted work pending, and for run_one.
    svc.restart();
    let handle = svc.handle();
    let (tx, rx) = mpsc::channel::<()>();
    let stopper = std::thread::spawn(move || {
        rx.recv().unwrap();
        handle.stop();
    });
    svc.post(move || tx.send(()).unwrap());
    svc.run_until_done().unwrap();
    stopper.join().unwrap();
    assert!(svc.is_stopped());
    assert_eq!(svc.pending_work(), 2);

    svc.restart();
    let handle = svc.handle();
    let barrier = Arc::new(Barrier::new(2));
    let stopper = std::thread::spawn({
        let barrier = barrier.clone();
        move || {
            barrier.wait();
            handle.stop();
        }
    });
    // run_one has nothing to run: it sleeps until the stop, then reports that nothing ran.
    barrier.wait();
    assert_eq!(svc.run_one().unwrap(), 0);
    stopper.join().unwrap();

    // Neither wait completed meanwhile; cancelled now, both handlers run with ECANCELED.
    svc.restart();
    timer.cancel();
    drop(quiet);
    assert_eq!(svc.poll().unwrap(), 2);
    assert_eq!(svc.pending_work(), 0);
});

matrix_test!(posting_to_a_dropped_service_is_an_error, |svc| {
    let own = util::fresh(svc);
    let handle = own.handle();
    drop(own);
    let dropped = Arc::new(AtomicUsize::new(0));
    let res = std::thread::spawn({
        let (handle, dropped) = (handle.clone(), dropped.clone());
        move || {
            let guard = SendDropCount(dropped);
            handle.post(move || {
                let _guard = guard;
                panic!("ran on a dropped service");
            })
        }
    })
    .join()
    .unwrap();
    util::assert_kind(&res, io::ErrorKind::BrokenPipe);
    assert!(
        res.unwrap_err().to_string().contains("dropped"),
        "the error says why"
    );
    assert_eq!(
        dropped.load(Ordering::SeqCst),
        1,
        "the refused closure was dropped"
    );
    // From this thread too, repeatedly; stop() on a dropped service is harmless.
    for _ in 0..3 {
        util::assert_kind(&handle.post(|| {}), io::ErrorKind::BrokenPipe);
    }
    handle.stop();
    assert!(handle.is_stopped());
});

matrix_test!(
    posts_racing_with_the_drop_of_the_service_run_or_are_refused,
    |svc| {
        // Posters keep posting while the loop runs a while and is then dropped: every closure is either
        // run (before the drop) or refused and dropped, never lost or run twice.
        const THREADS: usize = 4;
        let own = util::fresh(svc);
        let ran = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicUsize::new(0));
        let posted = Arc::new(AtomicUsize::new(0));
        let posters: Vec<_> = (0..THREADS)
            .map(|_| {
                let handle = own.handle();
                let (ran, dropped, refused, posted) = (
                    ran.clone(),
                    dropped.clone(),
                    refused.clone(),
                    posted.clone(),
                );
                std::thread::spawn(move || {
                    loop {
                        let guard = SendDropCount(dropped.clone());
                        let ran = ran.clone();
                        match handle.post(move || {
                            let _guard = guard;
                            ran.fetch_add(1, Ordering::SeqCst);
                        }) {
                            Ok(()) => posted.fetch_add(1, Ordering::SeqCst),
                            Err(_) => {
                                refused.fetch_add(1, Ordering::SeqCst);
                                return;
                            }
                        };
                    }
                })
            })
            .collect();
        // Run until a good number of posts have run, then drop the loop.
        while ran.load(Ordering::SeqCst) < 1000 {
            own.run_one().unwrap();
        }
        drop(own);
        for p in posters {
            p.join().unwrap();
        }
        assert_eq!(
            refused.load(Ordering::SeqCst),
            THREADS,
            "each poster saw the refusal"
        );
        let (ran, dropped, posted) = (
            ran.load(Ordering::SeqCst),
            dropped.load(Ordering::SeqCst),
            posted.load(Ordering::SeqCst),
        );
        assert!(ran >= 1000);
        // Every accepted closure ran or was dropped unrun with the loop; refused ones were dropped too.
        assert_eq!(dropped, posted + THREADS, "ran {ran}, posted {posted}");
        assert!(ran <= posted);
    }
);

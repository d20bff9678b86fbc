//! Signals: real signals sent to the process reach the `SignalSet`s waiting for them. Signal
//! dispositions are process-wide, so every test here runs in a child process of its own (the test
//! binary re-executed for that one test), and this module holds the signal tests only.

use std::cell::{Cell, RefCell};
use std::io;
use std::rc::Rc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use aio::signal::{SIGTERM, SIGUSR1, SIGUSR2};
use aio::{IoService, SignalSet};
use rustix::process::{Signal, getpid, kill_process};

use crate::util;

fn raise(signal: Signal) {
    kill_process(getpid(), signal).expect("kill(getpid())");
}

/// The open file descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

matrix_test!(sigterm_reaches_a_waiting_set_in_both_styles, |svc| {
    util::in_child(|| {
        let set = SignalSet::new(svc, &[SIGTERM]).expect("SignalSet");

        // Callback style: the wait is pending when the signal is sent (from a handler).
        let got = Rc::new(RefCell::new(None));
        set.wait().then({
            let (got, local) = (got.clone(), svc.local());
            move |res| {
                *got.borrow_mut() = Some(res);
                local.stop();
            }
        });
        svc.post(|| raise(Signal::TERM));
        svc.run().unwrap();
        assert_eq!(got.borrow_mut().take().unwrap().unwrap(), SIGTERM);

        // Future style: a task waiting, the signal sent from another thread.
        svc.restart();
        let task = svc.spawn(set.wait());
        assert_eq!(svc.poll().unwrap(), 1, "the task ran up to its wait");
        std::thread::spawn(|| raise(Signal::TERM)).join().unwrap();
        assert_eq!(svc.block_on(task).unwrap().unwrap(), SIGTERM);

        // A set of two signals reports which one came.
        set.add(SIGUSR2).unwrap();
        let wait = set.wait();
        raise(Signal::USR2);
        assert_eq!(svc.block_on(wait).unwrap(), SIGUSR2);
    });
});

matrix_test!(one_signal_reaches_sets_of_two_loops_on_two_threads, |svc| {
    util::in_child(|| {
        let backend = svc.backend();
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let own = IoService::builder().backend(backend).build().unwrap();
            let set = SignalSet::new(&own, &[SIGUSR1]).expect("SignalSet on the other loop");
            ready_tx.send(()).unwrap();
            let got = own.block_on(set.wait());
            (got.map_err(|e| e.to_string()), std::thread::current().id())
        });
        let set = SignalSet::new(svc, &[SIGUSR1]).expect("SignalSet");
        let wait = set.wait();
        // Both sets exist before the signal is sent.
        ready_rx.recv().unwrap();
        raise(Signal::USR1);
        assert_eq!(svc.block_on(wait).unwrap(), SIGUSR1, "this loop's set");
        let (theirs, their_thread) = other.join().unwrap();
        assert_eq!(theirs, Ok(SIGUSR1), "the other loop's set");
        assert_ne!(their_thread, std::thread::current().id());
    });
});

matrix_test!(a_signal_arriving_with_no_wait_pending_is_kept, |svc| {
    util::in_child(|| {
        let kept = SignalSet::new(svc, &[SIGUSR2]).expect("SignalSet");
        let witness = SignalSet::new(svc, &[SIGUSR2]).expect("SignalSet");
        // The witness's completed wait proves that the signal has been caught (for both sets).
        let witness_wait = witness.wait();
        raise(Signal::USR2);
        assert_eq!(svc.block_on(witness_wait).unwrap(), SIGUSR2);
        // Turns of the loop with no wait on `kept`.
        for _ in 0..3 {
            svc.poll().unwrap();
        }

        let got = Rc::new(RefCell::new(Vec::new()));
        let record = {
            let got = got.clone();
            move |res: io::Result<i32>| got.borrow_mut().push(res)
        };
        kept.wait().then(record.clone());
        assert!(got.borrow().is_empty(), "then() ran inline");
        assert_eq!(svc.poll().unwrap(), 1);
        assert_eq!(*got.borrow()[0].as_ref().unwrap(), SIGUSR2);

        // Kept once: the next wait waits for the next signal.
        kept.wait().then(record.clone());
        assert_eq!(svc.poll().unwrap(), 0);
        raise(Signal::USR2);
        let start = Instant::now();
        while got.borrow().len() < 2 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "the second signal never came"
            );
            svc.run_one().unwrap();
        }
        assert_eq!(*got.borrow()[1].as_ref().unwrap(), SIGUSR2);
        // Also kept for a future that is polled later (a fresh witness: it has no old signal).
        let fresh = SignalSet::new(svc, &[SIGUSR2]).expect("SignalSet");
        let fresh_wait = fresh.wait();
        raise(Signal::USR2);
        assert_eq!(svc.block_on(fresh_wait).unwrap(), SIGUSR2);
        assert_eq!(svc.block_on(kept.wait()).unwrap(), SIGUSR2);
    });
});

matrix_test!(cancelling_a_signal_wait_gives_ecanceled, |svc| {
    util::in_child(|| {
        let set = SignalSet::new(svc, &[SIGUSR1]).expect("SignalSet");
        // Callback style.
        let got = Rc::new(RefCell::new(None));
        set.wait().then({
            let got = got.clone();
            move |res| *got.borrow_mut() = Some(res)
        });
        assert_eq!(svc.poll().unwrap(), 0);
        set.cancel();
        assert!(got.borrow().is_none(), "cancel ran the handler inline");
        assert_eq!(svc.poll().unwrap(), 1);
        util::assert_cancelled(got.borrow().as_ref().unwrap());

        // Future style.
        let task = svc.spawn(set.wait());
        assert_eq!(svc.poll().unwrap(), 1);
        set.cancel();
        util::assert_cancelled(&svc.block_on(task).unwrap());

        // Signals are still caught after a cancel.
        let wait = set.wait();
        raise(Signal::USR1);
        assert_eq!(svc.block_on(wait).unwrap(), SIGUSR1);
        assert_eq!(svc.pending_work(), 0);
    });
});

matrix_test!(uncatchable_or_unknown_signals_are_invalid_input, |svc| {
    util::in_child(|| {
        util::assert_kind(
            &SignalSet::new(svc, &[libc::SIGKILL]),
            io::ErrorKind::InvalidInput,
        );
        util::assert_kind(
            &SignalSet::new(svc, &[SIGUSR1, libc::SIGSTOP]),
            io::ErrorKind::InvalidInput,
        );
        let set = SignalSet::new(svc, &[]).expect("an empty set");
        for bad in [
            libc::SIGKILL,
            libc::SIGSTOP,
            libc::SIGSEGV,
            0,
            -1,
            100,
            1000,
            i32::MAX,
        ] {
            let res = set.add(bad);
            util::assert_kind(&res, io::ErrorKind::InvalidInput);
            assert!(
                res.unwrap_err().to_string().contains(&bad.to_string()),
                "the error names signal {bad}"
            );
        }
        // The set still works after refused additions.
        set.add(SIGUSR2).unwrap();
        let wait = set.wait();
        raise(Signal::USR2);
        assert_eq!(svc.block_on(wait).unwrap(), SIGUSR2);
    });
});

matrix_test!(
    dropping_a_set_stops_its_delivery_and_leaves_others_alone,
    |svc| {
        util::in_child(|| {
            let dropped = SignalSet::new(svc, &[SIGUSR1]).expect("SignalSet");
            let kept = SignalSet::new(svc, &[SIGUSR1]).expect("SignalSet");
            let on_dropped = Rc::new(RefCell::new(None));
            dropped.wait().then({
                let on_dropped = on_dropped.clone();
                move |res| *on_dropped.borrow_mut() = Some(res)
            });
            let on_kept = Rc::new(RefCell::new(None));
            kept.wait().then({
                let on_kept = on_kept.clone();
                move |res| *on_kept.borrow_mut() = Some(res)
            });
            drop(dropped);
            assert_eq!(svc.poll().unwrap(), 1, "the dropped set's wait completed");
            util::assert_cancelled(on_dropped.borrow().as_ref().unwrap());
            assert!(on_kept.borrow().is_none());

            raise(Signal::USR1);
            let start = Instant::now();
            while on_kept.borrow().is_none() {
                assert!(
                    start.elapsed() < Duration::from_secs(5),
                    "the kept set never heard"
                );
                svc.run_one().unwrap();
            }
            assert_eq!(
                *on_kept.borrow().as_ref().unwrap().as_ref().unwrap(),
                SIGUSR1
            );
            assert_eq!(svc.pending_work(), 0);

            // Sets come and go without leaking descriptors (their socket pairs and registrations go
            // with them), and signals keep reaching the set that stays.
            let fds = open_fds();
            for _ in 0..50 {
                let set = SignalSet::new(svc, &[SIGUSR1, SIGUSR2]).expect("SignalSet");
                set.wait().then(|res| util::assert_cancelled(&res));
                drop(set);
            }
            svc.poll().unwrap();
            assert_eq!(open_fds(), fds, "dropped sets left descriptors open");
            let wait = kept.wait();
            raise(Signal::USR1);
            assert_eq!(svc.block_on(wait).unwrap(), SIGUSR1);
        });
    }
);

matrix_test!(
    a_background_signal_wait_completes_while_the_loop_runs,
    |svc| {
        util::in_child(|| {
            let set = SignalSet::new(svc, &[SIGUSR2]).expect("SignalSet");
            let got = Rc::new(Cell::new(None));
            set.wait().background().then({
                let (got, local) = (got.clone(), svc.local());
                move |res| {
                    got.set(Some(res.unwrap()));
                    local.stop();
                }
            });
            assert_eq!(svc.pending_work(), 0);
            // No counted work: run_until_done returns at once, the wait still pending.
            svc.run_until_done().unwrap();
            assert_eq!(got.get(), None);
            // Under run(), the signal completes it as any operation.
            svc.post(|| raise(Signal::USR2));
            svc.run().unwrap();
            assert_eq!(got.get(), Some(SIGUSR2));
        });
    }
);

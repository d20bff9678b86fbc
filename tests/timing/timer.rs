//! Timers: `LocalHandle::after` / `at` and `DeadlineTimer`. Deadline order, accuracy (never early,
//! late by little on an idle loop), cancel, re-arm, drop, waits on an expired timer (next turn, never
//! inline), dropping an awaited wait, and a million timers scheduled and cancelled.
//!
//! The CPU-use check of a loop waiting on a timer is in `timer_no_spin.rs`.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use aio::{DeadlineTimer, IoService};

use crate::{exclusive, heavy, util};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// How late a timer may fire on an idle loop. Generous: CI machines are noisy; "never early" is
/// asserted strictly everywhere.
const LATE_BOUND: Duration = Duration::from_millis(20);

/// The number of sources the loop holds, from its `Debug` output (`sources: N`).
fn source_count(svc: &IoService) -> usize {
    let text = format!("{svc:?}");
    let rest = text
        .split("sources: ")
        .nth(1)
        .unwrap_or_else(|| panic!("no source count in {text:?}"));
    rest.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no source count in {text:?}"))
}

/// Runs `svc` one handler at a time until `done()` holds, failing after `limit` (a guard timer
/// makes sure that `run_one` returns by then).
fn run_until(svc: &IoService, limit: Duration, done: impl Fn() -> bool) {
    let start = Instant::now();
    let guard = DeadlineTimer::new(svc).unwrap();
    guard.expires_after(limit);
    guard.wait().background().then(|_| {});
    while !done() {
        assert!(start.elapsed() < limit, "gave up after {limit:?}");
        svc.run_one().unwrap();
    }
}

matrix_test!(waits_complete_in_deadline_order, |svc| {
    // Callback style: one-shot `at` and DeadlineTimers mixed, started in shuffled order against one
    // base instant, so that the deadline order is exact.
    let offsets = [35u64, 5, 25, 0, 15, 30, 10, 20, 40, 1, 12, 3];
    let base = Instant::now();
    let order = Rc::new(RefCell::new(Vec::new()));
    let mut timers = Vec::new();
    for (i, &off) in offsets.iter().enumerate() {
        let deadline = base + ms(off);
        let record = {
            let order = order.clone();
            move |res: io::Result<()>| {
                res.expect("timer wait");
                assert!(Instant::now() >= deadline, "timer {off} fired early");
                order.borrow_mut().push(off);
            }
        };
        if i % 2 == 0 {
            svc.at(deadline).then(record);
        } else {
            let timer = DeadlineTimer::new(svc).unwrap();
            timer.expires_at(deadline);
            timer.wait().then(record);
            timers.push(timer);
        }
    }
    svc.run_until_done().unwrap();
    let mut sorted = offsets.to_vec();
    sorted.sort_unstable();
    assert_eq!(*order.borrow(), sorted);

    // `after` with shuffled delays far enough apart that making them takes no part in the order.
    let delays = [150u64, 0, 100, 50, 200];
    let start = Instant::now();
    let order = Rc::new(RefCell::new(Vec::new()));
    for &d in &delays {
        let order = order.clone();
        svc.after(ms(d)).then(move |res| {
            res.expect("after");
            assert!(start.elapsed() >= ms(d), "after({d} ms) fired early");
            order.borrow_mut().push(d);
        });
    }
    svc.run_until_done().unwrap();
    assert_eq!(*order.borrow(), [0, 50, 100, 150, 200]);

    // Future style: one task per timer, spawned in shuffled order.
    let base = Instant::now();
    let order = Rc::new(RefCell::new(Vec::new()));
    let tasks: Vec<_> = offsets
        .iter()
        .enumerate()
        .map(|(i, &off)| {
            let (order, local) = (order.clone(), svc.local());
            svc.spawn(async move {
                let deadline = base + ms(off);
                if i % 2 == 0 {
                    local.at(deadline).await.expect("at");
                } else {
                    let timer = DeadlineTimer::new(&local).unwrap();
                    timer.expires_at(deadline);
                    timer.wait().await.expect("timer wait");
                }
                assert!(Instant::now() >= deadline);
                order.borrow_mut().push(off);
            })
        })
        .collect();
    svc.run_until_done().unwrap();
    assert!(tasks.iter().all(|t| t.is_finished()));
    assert_eq!(*order.borrow(), sorted);
});

matrix_test!(timers_are_never_early_and_late_by_little, |svc| {
    let _alone = exclusive();
    const SAMPLES: u64 = 10;
    let mut lateness = Vec::new();

    // Future style: `after` and a DeadlineTimer, alternately.
    let timer = DeadlineTimer::new(svc).unwrap();
    for i in 0..SAMPLES {
        let delay = ms(2 + i);
        let start = Instant::now();
        if i % 2 == 0 {
            svc.block_on(svc.after(delay)).expect("after");
        } else {
            timer.expires_after(delay);
            svc.block_on(timer.wait()).expect("timer wait");
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= delay, "woke early: {elapsed:?} < {delay:?}");
        lateness.push(elapsed - delay);
    }

    // Callback style: `at`, waited for with run_one.
    for i in 0..SAMPLES {
        let deadline = Instant::now() + ms(2 + (i * 7) % 11);
        let fired = Rc::new(Cell::new(None));
        svc.at(deadline).then({
            let fired = fired.clone();
            move |res| {
                res.expect("at");
                fired.set(Some(Instant::now()));
            }
        });
        assert_eq!(svc.run_one().unwrap(), 1);
        let at = fired.get().expect("run_one ran the timer's handler");
        assert!(at >= deadline, "handler ran {:?} early", deadline - at);
        lateness.push(at - deadline);
    }

    let worst = lateness.iter().max().copied().unwrap();
    eprintln!("worst lateness over {} samples: {worst:?}", lateness.len());
    assert!(
        worst < LATE_BOUND,
        "worst lateness {worst:?} over {} samples (all: {lateness:?})",
        lateness.len()
    );
});

matrix_test!(cancel_completes_pending_waits_with_ecanceled, |svc| {
    // Callback style: two waits on one timer, both cancelled, neither inline.
    let timer = DeadlineTimer::new(svc).unwrap();
    timer.expires_after(Duration::from_secs(3600));
    let results = Rc::new(RefCell::new(Vec::new()));
    for _ in 0..2 {
        let results = results.clone();
        timer.wait().then(move |res| results.borrow_mut().push(res));
    }
    assert_eq!(svc.poll().unwrap(), 0, "nothing is due");
    assert_eq!(svc.pending_work(), 2);
    timer.cancel();
    assert!(results.borrow().is_empty(), "cancel ran a handler inline");
    assert_eq!(timer.expiry(), None);
    assert_eq!(svc.poll().unwrap(), 2);
    assert_eq!(results.borrow().len(), 2);
    for res in results.borrow().iter() {
        util::assert_cancelled(res);
    }
    assert_eq!(svc.pending_work(), 0);

    // Future style: a task awaiting the timer.
    timer.expires_after(Duration::from_secs(3600));
    let wait = timer.wait();
    let task = svc.spawn(wait);
    assert_eq!(svc.poll().unwrap(), 1, "the task ran up to its wait");
    assert!(!task.is_finished());
    let start = Instant::now();
    timer.cancel();
    let res = svc.block_on(task).expect("task");
    util::assert_cancelled(&res);
    assert!(start.elapsed() < Duration::from_secs(5));

    // Cancelling with nothing pending is harmless, and the timer can be used again.
    timer.cancel();
    timer.expires_after(ms(5));
    let start = Instant::now();
    svc.block_on(timer.wait()).expect("wait after cancel");
    assert!(start.elapsed() >= ms(5));
});

matrix_test!(
    rearming_cancels_the_pending_wait_and_uses_the_new_deadline,
    |svc| {
        // Callback style, re-armed to an earlier deadline.
        let timer = DeadlineTimer::new(svc).unwrap();
        timer.expires_after(Duration::from_secs(3600));
        let old = Rc::new(RefCell::new(None));
        timer.wait().then({
            let old = old.clone();
            move |res| *old.borrow_mut() = Some(res)
        });
        let new_deadline = Instant::now() + ms(20);
        timer.expires_at(new_deadline);
        assert_eq!(timer.expiry(), Some(new_deadline));
        assert!(old.borrow().is_none(), "re-arming ran a handler inline");
        assert_eq!(svc.poll().unwrap(), 1);
        util::assert_cancelled(old.borrow().as_ref().unwrap());
        let fired = Rc::new(Cell::new(None));
        timer.wait().then({
            let fired = fired.clone();
            move |res| {
                res.expect("wait on the new deadline");
                fired.set(Some(Instant::now()));
            }
        });
        svc.run_until_done().unwrap();
        let at = fired.get().expect("the new wait completed");
        assert!(at >= new_deadline, "fired before the new deadline");
        assert!(
            at - new_deadline < Duration::from_secs(5),
            "fired far too late"
        );

        // Re-armed to a later deadline: the old deadline's entry comes due first and must not complete
        // the new wait.
        let start = Instant::now();
        timer.expires_after(ms(10));
        let old = Rc::new(RefCell::new(None));
        timer.wait().then({
            let old = old.clone();
            move |res| *old.borrow_mut() = Some(res)
        });
        timer.expires_after(ms(40));
        let fired = Rc::new(Cell::new(None));
        timer.wait().then({
            let fired = fired.clone();
            move |res| {
                res.expect("wait on the later deadline");
                fired.set(Some(start.elapsed()));
            }
        });
        svc.run_until_done().unwrap();
        util::assert_cancelled(old.borrow().as_ref().unwrap());
        let elapsed = fired.get().expect("the new wait completed");
        assert!(
            elapsed >= ms(40),
            "completed at the old deadline: {elapsed:?}"
        );

        // Future style: a task's wait is cancelled by the re-arm; a new wait completes at the new
        // deadline.
        timer.expires_after(Duration::from_secs(3600));
        let task = svc.spawn(timer.wait());
        assert_eq!(svc.poll().unwrap(), 1);
        let new_deadline = Instant::now() + ms(15);
        timer.expires_at(new_deadline);
        util::assert_cancelled(&svc.block_on(task).unwrap());
        svc.block_on(timer.wait())
            .expect("wait on the new deadline");
        assert!(Instant::now() >= new_deadline);
    }
);

matrix_test!(
    a_wait_made_before_the_expiry_is_set_uses_the_expiry_it_starts_with,
    |svc| {
        // Futures are lazy: the wait starts when first polled, so it waits for the expiry current then.
        // Made while no expiry was set:
        let timer = DeadlineTimer::new(svc).unwrap();
        let wait = timer.wait();
        let deadline = Instant::now() + ms(10);
        timer.expires_at(deadline);
        let done = Rc::new(Cell::new(false));
        let task = svc.spawn({
            let done = done.clone();
            async move {
                let res = wait.await;
                done.set(true);
                res
            }
        });
        run_until(svc, Duration::from_secs(5), || done.get());
        svc.block_on(task).unwrap().expect("wait");
        assert!(Instant::now() >= deadline);

        // Made while a later expiry was set, then re-armed earlier before it started.
        timer.expires_after(Duration::from_secs(3600));
        let wait = timer.wait();
        let deadline = Instant::now() + ms(10);
        timer.expires_at(deadline);
        let fired = Rc::new(RefCell::new(None));
        wait.then({
            let fired = fired.clone();
            move |res| *fired.borrow_mut() = Some(res.map(|()| Instant::now()))
        });
        run_until(svc, Duration::from_secs(5), || fired.borrow().is_some());
        let at = fired.borrow_mut().take().unwrap().expect("wait");
        assert!(at >= deadline, "fired early");
    }
);

matrix_test!(dropping_the_timer_cancels_its_waits, |svc| {
    // Callback style.
    let timer = DeadlineTimer::new(svc).unwrap();
    timer.expires_after(Duration::from_secs(3600));
    let got = Rc::new(RefCell::new(None));
    timer.wait().then({
        let got = got.clone();
        move |res| *got.borrow_mut() = Some(res)
    });
    drop(timer);
    assert!(got.borrow().is_none(), "drop ran the handler inline");
    assert_eq!(svc.poll().unwrap(), 1);
    util::assert_cancelled(got.borrow().as_ref().unwrap());
    assert_eq!(svc.pending_work(), 0);

    // Future style: the task holds only the wait, the timer is dropped outside it.
    let timer = DeadlineTimer::new(svc).unwrap();
    timer.expires_after(Duration::from_secs(3600));
    let task = svc.spawn(timer.wait());
    assert_eq!(svc.poll().unwrap(), 1);
    drop(timer);
    let start = Instant::now();
    util::assert_cancelled(&svc.block_on(task).unwrap());
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(source_count(svc), 0, "the timer's source is gone");
});

matrix_test!(
    a_wait_on_an_expired_timer_completes_on_the_next_turn,
    |svc| {
        let timer = DeadlineTimer::new(svc).unwrap();
        let past = Instant::now();
        timer.expires_at(past);
        let ran = Rc::new(Cell::new(0));
        let count = {
            let ran = ran.clone();
            move |res: io::Result<()>| {
                res.expect("expired wait");
                ran.set(ran.get() + 1);
            }
        };
        timer.wait().then(count.clone());
        svc.at(past).then(count.clone());
        svc.after(Duration::ZERO).then(count.clone());
        assert_eq!(ran.get(), 0, "then() ran an expired wait inline");
        let start = Instant::now();
        assert_eq!(
            svc.poll().unwrap(),
            3,
            "all three complete on the next turn"
        );
        assert_eq!(ran.get(), 3);

        // The timer has fired: a further wait completes at once, still not inline.
        timer.wait().then(count.clone());
        assert_eq!(ran.get(), 3);
        assert_eq!(svc.run_one().unwrap(), 1);
        assert_eq!(ran.get(), 4);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "nothing waited for a deadline"
        );

        // Future style: completes on the first poll after a turn of the loop.
        svc.block_on(timer.wait())
            .expect("expired wait, future style");
    }
);

matrix_test!(dropping_an_awaited_wait_early_withdraws_it, |svc| {
    // Polled once by hand (each registers a waiter), then dropped: the waker is never woken.
    let (woken, waker) = util::CountingWaker::new();
    let mut sleep = svc.after(ms(10));
    assert!(util::poll_once(&mut sleep, &waker).is_pending());
    let timer = DeadlineTimer::new(svc).unwrap();
    timer.expires_after(ms(10));
    let mut wait = timer.wait();
    assert!(util::poll_once(&mut wait, &waker).is_pending());
    assert_eq!(source_count(svc), 2);
    drop(sleep);
    drop(wait);
    assert_eq!(
        source_count(svc),
        1,
        "the dropped sleep gave up its source (the timer keeps its own)"
    );
    let start = Instant::now();
    svc.block_on(svc.after(ms(30))).unwrap();
    assert!(start.elapsed() >= ms(30));
    assert_eq!(woken.count(), 0, "a dropped wait was woken");
    // The timer fired with nobody waiting; a new wait completes at once.
    svc.block_on(timer.wait()).expect("new wait");
    drop(timer);

    // A race of two sleeps inside a task: the loser is dropped when the winner completes.
    let task = svc.spawn({
        let local = svc.local();
        async move {
            let mut slow = local.after(Duration::from_secs(3600));
            let mut fast = local.after(ms(5));
            poll_fn(|cx| {
                if let Poll::Ready(res) = Pin::new(&mut fast).poll(cx) {
                    return Poll::Ready(("fast", res));
                }
                if let Poll::Ready(res) = Pin::new(&mut slow).poll(cx) {
                    return Poll::Ready(("slow", res));
                }
                Poll::Pending
            })
            .await
        }
    });
    let start = Instant::now();
    let (winner, res) = svc.block_on(task).unwrap();
    assert_eq!(winner, "fast");
    res.unwrap();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(source_count(svc), 0, "the losing sleep was withdrawn");
    assert_eq!(svc.pending_work(), 0);
    // Nothing is left to wait for: run_until_done returns at once.
    let start = Instant::now();
    svc.run_until_done().unwrap();
    assert!(start.elapsed() < Duration::from_secs(1));
});

matrix_test!(a_million_timers_scheduled_and_cancelled, |svc| {
    let _heavy = heavy();
    const N: usize = 1_000_000;
    let (start, cpu0) = (Instant::now(), util::thread_cpu_time());
    let cancelled = Rc::new(Cell::new(0usize));
    let other = Rc::new(Cell::new(0usize));
    let mut timers = Vec::with_capacity(N);
    for _ in 0..N {
        let timer = DeadlineTimer::new(svc).unwrap();
        timer.expires_after(Duration::from_secs(3600));
        let (cancelled, other) = (cancelled.clone(), other.clone());
        timer.wait().then(move |res| match res {
            Err(e) if aio::is_cancelled(&e) => cancelled.set(cancelled.get() + 1),
            _ => other.set(other.get() + 1),
        });
        timers.push(timer);
    }
    let scheduled = start.elapsed();
    assert_eq!(svc.pending_work(), N);
    assert_eq!(svc.poll().unwrap(), 0, "no timer is due");
    // Half cancelled in place, half dropped.
    for timer in &timers[..N / 2] {
        timer.cancel();
    }
    timers.truncate(N / 2);
    assert_eq!(cancelled.get(), 0, "cancel ran handlers inline");
    assert_eq!(svc.poll().unwrap(), N);
    assert_eq!(cancelled.get(), N, "every handler ran once, with ECANCELED");
    assert_eq!(other.get(), 0);
    assert_eq!(svc.pending_work(), 0);
    drop(timers);
    assert_eq!(source_count(svc), 0);
    let (total, cpu) = (start.elapsed(), util::thread_cpu_time() - cpu0);
    eprintln!(
        "1M timers: scheduled in {scheduled:?}, all cancelled and run in {total:?} ({cpu:?} of CPU)"
    );
    // Bounded in CPU time, which a busy machine does not inflate (the watchdog bounds the wall time).
    assert!(
        cpu < Duration::from_secs(15),
        "took {cpu:?} of CPU ({total:?})"
    );

    // The loop still times correctly with a million stale deadlines behind it.
    let begin = Instant::now();
    svc.block_on(svc.after(ms(10))).expect("short timer");
    let elapsed = begin.elapsed();
    assert!(elapsed >= ms(10));
    // Not held up by the stale deadlines (an hour away), nor by compacting them.
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
    assert_eq!(cancelled.get(), N, "no handler ran twice");
});

//! A loop that waits on a timer sleeps in the kernel: it does not spin. Measured as the CPU time of
//! the loop's own thread (`getrusage(RUSAGE_THREAD)`), so tests running beside it in this process
//! do not count. Never beside a CPU-heavy test all the same (`exclusive()`), so that nothing else
//! competes for the CPU here.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::{DeadlineTimer, StreamSocket};

use crate::{exclusive, util};

matrix_test!(a_loop_waiting_on_a_timer_uses_little_cpu, |svc| {
    let _alone = exclusive();
    const WAIT: Duration = Duration::from_millis(200);
    // Company for the timer: a read that never completes, a long background timer, and a cancelled
    // timer whose stale deadline comes due during the wait.
    let (quiet, _peer) = StreamSocket::pair(svc).unwrap();
    quiet
        .read_some(vec![0u8; 16])
        .background()
        .then(|(res, _)| drop(res));
    let long = DeadlineTimer::new(svc).unwrap();
    long.expires_after(Duration::from_secs(3600));
    long.wait().background().then(|_| {});
    let stale = DeadlineTimer::new(svc).unwrap();
    stale.expires_after(Duration::from_millis(50));
    stale.cancel();

    let fired = Rc::new(Cell::new(false));
    svc.after(WAIT).then({
        let (fired, local) = (fired.clone(), svc.local());
        move |res| {
            res.expect("timer");
            fired.set(true);
            local.stop();
        }
    });
    let (cpu0, start) = (util::thread_cpu_time(), Instant::now());
    svc.run().unwrap();
    let (cpu, elapsed) = (util::thread_cpu_time() - cpu0, start.elapsed());
    assert!(fired.get());
    assert!(elapsed >= WAIT, "{elapsed:?}");
    // A spinning loop would burn about the whole wait; a sleeping one a few hundred microseconds.
    assert!(
        cpu < WAIT / 5,
        "run() used {cpu:?} of CPU while waiting {elapsed:?} for a timer"
    );

    // block_on and run_until_done sleep too.
    svc.restart();
    let (cpu0, start) = (util::thread_cpu_time(), Instant::now());
    svc.block_on(svc.after(WAIT / 2)).unwrap();
    svc.after(WAIT / 2).then(|res| res.expect("timer"));
    svc.run_until_done().unwrap();
    let (cpu, elapsed) = (util::thread_cpu_time() - cpu0, start.elapsed());
    assert!(elapsed >= WAIT, "{elapsed:?}");
    assert!(
        cpu < WAIT / 5,
        "block_on + run_until_done used {cpu:?} of CPU while waiting {elapsed:?}"
    );
    drop((quiet, long));
});

matrix_test!(
    a_held_chunk_with_bytes_waiting_does_not_spin_the_loop,
    |svc| {
        let _alone = exclusive();
        const WAIT: Duration = Duration::from_millis(200);
        let (a, b) = StreamSocket::pair(svc).unwrap();
        let local = svc.local();
        let (cpu, elapsed) = svc.block_on(async move {
            let mut chunks = b.read_stream(vec![0u8; 64]);
            a.try_write(b"first").unwrap();
            let chunk = chunks.next().await.unwrap().unwrap();
            // Bytes wait in the socket while the chunk is held: the stream cannot take them (the
            // buffer is lent out), so a level-triggered backend must not keep reporting them.
            a.try_write(b"second").unwrap();
            let (cpu0, start) = (util::thread_cpu_time(), Instant::now());
            local.after(WAIT).await.expect("timer");
            let measured = (util::thread_cpu_time() - cpu0, start.elapsed());
            assert_eq!(&*chunk, b"first");
            drop(chunk);
            assert_eq!(&*chunks.next().await.unwrap().unwrap(), b"second");
            measured
        });
        assert!(elapsed >= WAIT, "{elapsed:?}");
        assert!(
            cpu < WAIT / 5,
            "the loop used {cpu:?} of CPU in {elapsed:?} while a chunk was held"
        );
    }
);

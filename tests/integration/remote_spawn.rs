//! `Handle::spawn` / `spawn_with` and `RemoteJoinHandle`: tasks spawned on a loop from other threads,
//! joined by blocking a thread or awaited from a task of another loop or another executor; panics,
//! a loop dropped first, a join that would deadlock, and many spawns from many threads.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, Wake, Waker};
use std::thread;
use std::time::Duration;

use aio::{IoService, JoinError, StreamSocket};

/// Runs `svc` on this thread while `work` runs on another, which gets the loop's `Handle`; the loop
/// stops when `work` returns, and its result is returned.
fn with_worker<R: Send + 'static>(
    svc: &IoService,
    work: impl FnOnce(aio::Handle) -> R + Send + 'static,
) -> R {
    let handle = svc.handle();
    let worker = thread::spawn(move || {
        let stop = handle.clone();
        let result = work(handle);
        stop.stop();
        result
    });
    svc.run().unwrap();
    worker.join().expect("the worker thread panicked")
}

matrix_test!(spawn_from_another_thread_and_join, |svc| {
    let (answer, finished_before) = with_worker(svc, |handle| {
        let task = handle.spawn(async { 6 * 7 });
        let _ = task.is_finished(); // either, depending on the loop's pace
        let answer = task.join();
        // A second one, finished before it is joined.
        let task = handle.spawn(async { "second" });
        while !task.is_finished() {
            thread::yield_now();
        }
        (answer, task.join())
    });
    assert_eq!(answer, Ok(42));
    assert_eq!(finished_before, Ok("second"));
});

/// A waker that unparks the thread that made it: the smallest executor that is not `aio`.
struct Unpark(thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

fn park_on<F: std::future::Future>(future: F) -> F::Output {
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        thread::park();
    }
}

matrix_test!(
    await_from_a_task_on_another_loop_and_another_executor,
    |svc| {
        // Loop B runs on its own thread; this test's loop (A) awaits a task spawned on B.
        let backend = svc.backend();
        let (tx, rx) = mpsc::channel();
        let b_thread = thread::spawn(move || {
            let b = IoService::builder().backend(backend).build().unwrap();
            tx.send(b.handle()).unwrap();
            b.run().unwrap();
        });
        let b = rx.recv().unwrap();
        let task = b.spawn_with(|svc| {
            let timer = svc.after(Duration::from_millis(2));
            async move {
                timer.await.unwrap();
                thread::current().id()
            }
        });
        let waiting = svc.spawn(task);
        let ran_on = svc.block_on(waiting).unwrap().unwrap();
        assert_eq!(
            ran_on,
            b_thread.thread().id(),
            "the task ran on loop B's thread"
        );

        // The same from a plain thread-parking executor, outside any loop.
        let task = b.spawn_with(|svc| {
            let timer = svc.after(Duration::from_millis(2));
            async move { timer.await.map(|()| "timer fired") }
        });
        assert_eq!(park_on(task).unwrap().unwrap(), "timer fired");
        b.stop();
        b_thread.join().unwrap();
    }
);

matrix_test!(spawn_with_runs_an_rc_holding_socket_read, |svc| {
    let got = with_worker(svc, |handle| {
        let (mine, theirs) = UnixStream::pair().unwrap();
        let mut mine = mine;
        // The UnixStream travels; the StreamSocket (with its Rc) is made on the loop.
        let task = handle.spawn_with(move |svc| {
            let socket = StreamSocket::from_fd(svc, theirs).expect("from_fd");
            async move {
                let (res, buf) = socket.read_exact(vec![0u8; 11]).await;
                res?;
                let (res, _) = socket.write_all(b"ack".to_vec()).await;
                res.map(|()| buf)
            }
        });
        mine.write_all(b"from thread").unwrap();
        let got = task.join().expect("the task finished").expect("its I/O");
        mine.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut ack = [0u8; 3];
        mine.read_exact(&mut ack).unwrap();
        assert_eq!(&ack, b"ack");
        got
    });
    assert_eq!(got, b"from thread");
});

matrix_test!(
    a_panicking_task_reports_panicked_and_the_loop_runs_on,
    |svc| {
        let (future_panic, make_panic, after) = with_worker(svc, |handle| {
            let future_panic = handle
                .spawn(async {
                    panic!("a remote task panics (expected by the test)");
                })
                .join();
            let make_panic = handle
                .spawn_with(|_| -> std::future::Ready<()> {
                    panic!("a remote spawn_with closure panics (expected by the test)")
                })
                .join();
            let after = handle.spawn(async { "still running" }).join();
            (future_panic, make_panic, after)
        });
        assert_eq!(future_panic, Err::<(), _>(JoinError::Panicked));
        assert_eq!(make_panic, Err(JoinError::Panicked));
        assert_eq!(after, Ok("still running"));
        assert_eq!(
            JoinError::Panicked.to_string(),
            "the task panicked",
            "a clear message"
        );
    }
);

matrix_test!(a_loop_dropped_first_reports_cancelled, |svc| {
    // Spawned, never run: the loop is dropped with the spawn still in its queue.
    let own = crate::util::fresh(svc);
    let handle = own.handle();
    let queued = handle.spawn(async { 1 });
    assert!(!queued.is_finished());
    drop(own);
    assert!(queued.is_finished());
    assert_eq!(queued.join(), Err(JoinError::Cancelled));
    // Spawned after the loop is gone.
    let late = handle.spawn(async { 2 });
    assert!(late.is_finished());
    assert_eq!(late.join(), Err(JoinError::Cancelled));

    // Started, waiting, while another thread blocks in join: dropping the loop wakes it.
    let own = crate::util::fresh(svc);
    let started = own.handle().spawn(std::future::pending::<()>());
    own.poll().unwrap(); // the task runs, and waits for ever
    assert!(!started.is_finished());
    let joiner = thread::spawn(move || started.join());
    drop(own);
    assert_eq!(joiner.join().unwrap(), Err(JoinError::Cancelled));
});

matrix_test!(join_on_the_loops_own_thread_is_would_deadlock, |svc| {
    let ran = Arc::new(AtomicUsize::new(0));
    let handle = svc.handle();
    // Outside the loop, before it runs.
    let task = handle.spawn({
        let ran = ran.clone();
        async move {
            ran.fetch_add(1, Ordering::SeqCst);
        }
    });
    assert_eq!(task.join(), Err(JoinError::WouldDeadlock));
    // Inside a handler of the loop.
    let inside = Arc::new(std::sync::Mutex::new(None));
    svc.post({
        let (handle, inside, ran) = (handle.clone(), inside.clone(), ran.clone());
        move || {
            let task = handle.spawn(async move {
                ran.fetch_add(1, Ordering::SeqCst);
            });
            *inside.lock().unwrap() = Some(task.join());
        }
    });
    while inside.lock().unwrap().is_none() {
        svc.run_one().unwrap();
    }
    assert_eq!(*inside.lock().unwrap(), Some(Err(JoinError::WouldDeadlock)));
    // Both tasks run on, detached (spawns reach the loop through its wake-up fd: run_one waits).
    while ran.load(Ordering::SeqCst) < 2 {
        svc.run_one().unwrap();
    }
    // A finished task joins fine on the loop's thread.
    let done = handle.spawn(async { 3 });
    while !done.is_finished() {
        svc.run_one().unwrap();
    }
    assert_eq!(done.join(), Ok(3));
    assert!(JoinError::WouldDeadlock.to_string().contains("deadlock"));
});

matrix_test!(ten_thousand_spawns_from_four_threads_lose_none, |svc| {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 2_500;
    let handle = svc.handle();
    let finished_threads = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (handle, finished_threads) = (handle.clone(), finished_threads.clone());
            thread::spawn(move || {
                let tasks: Vec<_> = (0..PER_THREAD)
                    .map(|i| handle.spawn(async move { t * PER_THREAD + i }))
                    .collect();
                let results: Vec<usize> = tasks
                    .into_iter()
                    .map(|task| task.join().expect("every task finishes"))
                    .collect();
                if finished_threads.fetch_add(1, Ordering::SeqCst) + 1 == THREADS {
                    handle.stop();
                }
                results
            })
        })
        .collect();
    svc.run().unwrap();
    let mut all: Vec<usize> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    assert_eq!(all.len(), THREADS * PER_THREAD);
    all.sort_unstable();
    assert!(
        all.iter().enumerate().all(|(i, &v)| i == v),
        "each task's own value, once"
    );
});

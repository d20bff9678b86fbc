//! The local executor: `spawn` and `JoinHandle`, `abort`, panicking tasks, wakes from other
//! threads, `block_on`, and dropping the service with unfinished tasks.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll, Waker};

use aio::{JoinError, StreamSocket};

use crate::util::{self, DropCount};

/// A future that is ready once `flag` is set, and hands its waker to whoever listens on `wakers`.
struct RemoteFlag {
    flag: Arc<AtomicBool>,
    wakers: mpsc::Sender<Waker>,
    polls: Rc<Cell<usize>>,
}

impl Future for RemoteFlag {
    type Output = std::thread::ThreadId;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.polls.set(self.polls.get() + 1);
        if self.flag.load(Ordering::SeqCst) {
            return Poll::Ready(std::thread::current().id());
        }
        self.wakers.send(cx.waker().clone()).unwrap();
        Poll::Pending
    }
}

/// A thread that, for each waker it receives, sets the flag and wakes it.
fn waking_thread(flag: Arc<AtomicBool>) -> (mpsc::Sender<Waker>, std::thread::JoinHandle<usize>) {
    let (tx, rx) = mpsc::channel::<Waker>();
    let thread = std::thread::spawn(move || {
        let mut woken = 0;
        for waker in rx {
            flag.store(true, Ordering::SeqCst);
            waker.wake();
            woken += 1;
        }
        woken
    });
    (tx, thread)
}

matrix_test!(join_handle_gives_the_spawned_output, |svc| {
    let task = svc.spawn(async { 6 * 7 });
    assert!(
        !task.is_finished(),
        "a spawned task first runs from the loop"
    );
    assert_eq!(svc.block_on(task), Ok(42));

    // Tasks that do I/O, spawn other tasks and await them.
    let (a, b) = StreamSocket::pair(svc).unwrap();
    let h = svc.local();
    let outer = svc.spawn(async move {
        let reader = h.spawn(async move {
            let (res, buf) = b.read_exact(vec![0u8; 5]).await;
            res.map(|()| buf)
        });
        let (res, _) = a.write_all(b"tasks".to_vec()).await;
        res.unwrap();
        reader.await.unwrap().unwrap()
    });
    assert_eq!(svc.block_on(outer).unwrap(), b"tasks");

    // Spawned tasks also run under run(), in spawn order.
    let order = Rc::new(RefCell::new(Vec::new()));
    for i in 0..3 {
        let order = order.clone();
        let h = svc.local();
        drop(svc.spawn(async move {
            order.borrow_mut().push(i);
            if i == 2 {
                h.stop();
            }
        }));
    }
    svc.run().unwrap();
    assert_eq!(
        *order.borrow(),
        [0, 1, 2],
        "a dropped JoinHandle detaches; the task runs"
    );
});

matrix_test!(abort_cancels_the_task_and_drops_its_future, |svc| {
    let (a, _b) = StreamSocket::pair(svc).unwrap();
    let drops = Rc::new(Cell::new(0));
    let finished = Rc::new(Cell::new(false));
    let task = svc.spawn({
        let guard = DropCount(drops.clone());
        let finished = finished.clone();
        let op = a.read_some(vec![0u8; 4]);
        async move {
            let _guard = guard;
            let _ = op.await; // never completes: nobody writes
            finished.set(true);
        }
    });
    svc.poll().unwrap();
    assert!(!task.is_finished());
    assert_eq!(drops.get(), 0);
    task.abort();
    assert_eq!(svc.block_on(task), Err(JoinError::Cancelled));
    assert_eq!(drops.get(), 1, "the future was dropped");
    assert!(!finished.get(), "and never resumed");

    // Aborting a task that never ran.
    let drops = Rc::new(Cell::new(0));
    let task = svc.spawn({
        let guard = DropCount(drops.clone());
        async move {
            let _guard = guard;
            unreachable!("an aborted task never runs");
        }
    });
    task.abort();
    assert_eq!(svc.block_on(task), Err(JoinError::Cancelled));
    assert_eq!(drops.get(), 1);

    // Aborting a finished task changes nothing.
    let task = svc.spawn(async { 5 });
    svc.poll().unwrap();
    assert!(task.is_finished());
    task.abort();
    assert_eq!(svc.block_on(task), Ok(5));
});

matrix_test!(panicking_task_reports_panicked_and_unwinds_run, |svc| {
    let drops = Rc::new(Cell::new(0));
    let doomed = svc.spawn({
        let guard = DropCount(drops.clone());
        async move {
            let _guard = guard;
            panic!("task boom");
        }
    });
    let joined = Rc::new(RefCell::new(None));
    drop(svc.spawn({
        let (joined, h) = (joined.clone(), svc.local());
        async move {
            *joined.borrow_mut() = Some(doomed.await);
            h.stop();
        }
    }));
    let caught = catch_unwind(AssertUnwindSafe(|| svc.run())).expect_err("the panic passes out");
    assert_eq!(caught.downcast_ref::<&str>(), Some(&"task boom"));
    assert_eq!(drops.get(), 1, "the panicked future was dropped");
    // The loop carries on: the joiner learns of the panic.
    svc.run().unwrap();
    assert_eq!(*joined.borrow(), Some(Err(JoinError::Panicked)));
});

matrix_test!(wake_from_another_thread_runs_task_on_the_loop, |svc| {
    let flag = Arc::new(AtomicBool::new(false));
    let (wakers, thread) = waking_thread(flag.clone());
    let polls = Rc::new(Cell::new(0));
    let task = svc.spawn({
        let (h, polls) = (svc.local(), polls.clone());
        let fut = RemoteFlag {
            flag,
            wakers,
            polls,
        };
        async move {
            let id = fut.await;
            h.stop();
            id
        }
    });
    svc.run().unwrap();
    assert_eq!(
        thread.join().unwrap(),
        1,
        "woken once, from the other thread"
    );
    assert_eq!(polls.get(), 2, "polled before and after the wake");
    assert_eq!(svc.block_on(task), Ok(std::thread::current().id()));

    // block_on's own future, woken from another thread.
    let flag = Arc::new(AtomicBool::new(false));
    let (wakers, thread) = waking_thread(flag.clone());
    let polls = Rc::new(Cell::new(0));
    let id = svc.block_on(RemoteFlag {
        flag,
        wakers,
        polls: polls.clone(),
    });
    assert_eq!(id, std::thread::current().id());
    assert_eq!(polls.get(), 2);
    assert_eq!(thread.join().unwrap(), 1);
});

matrix_test!(dropping_the_service_drops_unfinished_tasks, |svc| {
    let own = util::fresh(svc);
    let drops = Rc::new(Cell::new(0));
    let (a, _b) = StreamSocket::pair(&own).unwrap();
    // One task waiting on I/O, one waiting forever on nothing, one never polled.
    let waiting = own.spawn({
        let guard = DropCount(drops.clone());
        let op = a.read_some(vec![0u8; 1]);
        async move {
            let _guard = guard;
            op.await
        }
    });
    let pending = own.spawn({
        let guard = DropCount(drops.clone());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await
        }
    });
    own.poll().unwrap();
    let never = own.spawn({
        let guard = DropCount(drops.clone());
        async move {
            let _guard = guard;
            unreachable!("dropped before its first poll")
        }
    });
    assert_eq!(drops.get(), 0);
    drop(own);
    assert_eq!(
        drops.get(),
        3,
        "every unfinished future was dropped with the service"
    );
    let (_, waker) = util::CountingWaker::new();
    let mut waiting = waiting;
    assert!(matches!(
        util::poll_once(&mut waiting, &waker),
        Poll::Ready(Err(JoinError::Cancelled))
    ));
    let (mut pending, mut never) = (pending, never);
    assert_eq!(
        util::poll_once(&mut pending, &waker),
        Poll::Ready(Err(JoinError::Cancelled))
    );
    assert_eq!(
        util::poll_once(&mut never, &waker),
        Poll::Ready(Err(JoinError::Cancelled))
    );
});

matrix_test!(block_on_runs_handlers_and_tasks_meanwhile, |svc| {
    let ran = Rc::new(Cell::new(0));
    svc.post({
        let ran = ran.clone();
        move || ran.set(ran.get() + 1)
    });
    drop(svc.spawn({
        let ran = ran.clone();
        async move { ran.set(ran.get() + 10) }
    }));
    let (a, b) = StreamSocket::pair(svc).unwrap();
    a.write_all(b"!".to_vec()).then(|(res, _)| res.unwrap());
    let (res, buf) = svc.block_on(b.read_exact(vec![0u8; 1]));
    res.unwrap();
    assert_eq!(buf, b"!");
    svc.poll().unwrap();
    assert_eq!(ran.get(), 11);
    // stop() does not interrupt block_on.
    svc.stop();
    assert_eq!(svc.block_on(async { 3 }), 3);
});

matrix_test!(
    a_task_aborted_while_it_runs_is_dropped_when_it_yields,
    |svc| {
        let drops = Rc::new(Cell::new(0));
        let resumed = Rc::new(Cell::new(false));
        let own_handle = Rc::new(RefCell::new(None::<aio::JoinHandle<()>>));
        let (a, _b) = StreamSocket::pair(svc).unwrap();
        let task = svc.spawn({
            let (guard, resumed, own_handle) = (
                DropCount(drops.clone()),
                resumed.clone(),
                own_handle.clone(),
            );
            async move {
                let _guard = guard;
                // The task aborts itself, then yields: it must not be polled again.
                own_handle
                    .borrow()
                    .as_ref()
                    .expect("handle stored before the first poll")
                    .abort();
                let _ = a.read_some(vec![0u8; 4]).await; // nobody writes
                resumed.set(true);
            }
        });
        let joined = Rc::new(RefCell::new(None));
        svc.spawn({
            let (joined, own_handle) = (joined.clone(), own_handle.clone());
            *own_handle.borrow_mut() = Some(task);
            async move {
                let task = own_handle.borrow_mut().take().unwrap();
                *joined.borrow_mut() = Some(task.await);
            }
        });
        svc.run_until_done().unwrap();
        assert_eq!(drops.get(), 1, "the future was dropped once");
        assert!(!resumed.get());
        assert_eq!(*joined.borrow(), Some(Err(JoinError::Cancelled)));
    }
);

/// Counts its polls; pending until `ready` is set (woken by whoever holds its waker).
struct CountPolls {
    polls: Rc<Cell<usize>>,
    ready: Rc<Cell<bool>>,
    waker: Rc<RefCell<Option<Waker>>>,
}

impl Future for CountPolls {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.set(self.polls.get() + 1);
        if self.ready.get() {
            return Poll::Ready(());
        }
        *self.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

matrix_test!(a_stale_waker_does_not_poll_the_next_task, |svc| {
    // The first task finishes, leaving its waker behind.
    let stale = Rc::new(RefCell::new(None));
    let first_ready = Rc::new(Cell::new(false));
    let first = svc.spawn(CountPolls {
        polls: Rc::new(Cell::new(0)),
        ready: first_ready.clone(),
        waker: stale.clone(),
    });
    svc.poll().unwrap();
    first_ready.set(true);
    stale.borrow().as_ref().unwrap().wake_by_ref();
    assert_eq!(svc.block_on(first), Ok(()));
    let stale = stale.borrow_mut().take().expect("the first task's waker");

    // The next task may take the finished one's place; waking the old waker must not poll it.
    let polls = Rc::new(Cell::new(0));
    let ready = Rc::new(Cell::new(false));
    let waker = Rc::new(RefCell::new(None));
    let second = svc.spawn(CountPolls {
        polls: polls.clone(),
        ready: ready.clone(),
        waker: waker.clone(),
    });
    svc.poll().unwrap();
    assert_eq!(polls.get(), 1);
    for _ in 0..3 {
        stale.wake_by_ref();
        svc.poll().unwrap();
    }
    assert_eq!(
        polls.get(),
        1,
        "a late wake of a finished task polls nothing"
    );
    // Many wakes before it runs poll it once.
    ready.set(true);
    let current = waker.borrow_mut().take().unwrap();
    current.wake_by_ref();
    current.wake_by_ref();
    current.wake();
    assert_eq!(svc.block_on(second), Ok(()));
    assert_eq!(polls.get(), 2);
});

matrix_test!(a_task_woken_by_an_event_may_wake_others_as_it_runs, |svc| {
    // Task A waits on `a`; task B, woken by data on `c`, closes `a`: A is woken (cancelled) while
    // B runs, and both finish.
    let (a, _b) = StreamSocket::pair(svc).unwrap();
    let (c, d) = StreamSocket::pair(svc).unwrap();
    let a = Rc::new(a);
    let waiter = svc.spawn({
        let a = a.clone();
        async move { a.read_some(vec![0u8; 4]).await.0 }
    });
    let closer = svc.spawn(async move {
        let (res, buf) = c.read_some(vec![0u8; 4]).await;
        a.close();
        (res.unwrap(), buf)
    });
    svc.poll().unwrap();
    assert!(!waiter.is_finished() && !closer.is_finished());
    let (res, _) = svc.block_on(d.write_all(b"go".to_vec()));
    res.unwrap();
    let (n, buf) = svc.block_on(closer).unwrap();
    assert_eq!(&buf[..n], b"go");
    let err = svc
        .block_on(waiter)
        .unwrap()
        .expect_err("its socket was closed");
    assert!(aio::is_cancelled(&err), "{err}");
});

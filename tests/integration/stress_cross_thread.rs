//! Cross-thread storms: 8 threads each post 1,000,000 closures with `Handle::post` and complete
//! 1,000,000 operations of the loop through `completion()` Completers, all at once. Every closure and
//! every completion handler runs exactly once, on the loop thread, each thread's posts in the order
//! they were posted, each completion with the value its thread gave it; counted per thread.
//!
//! The loop makes the completions (a `Completion` belongs to its loop) and hands their Completers to
//! the threads in batches, a new batch whenever one has completed, so that at most two batches per
//! thread are in flight. `AIO_STRESS_STORM` overrides the per-thread count (e.g. for a quick run).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Instant;

use aio::{Completer, LocalHandle};

use crate::util;

const THREADS: usize = 8;
const PER_THREAD: u64 = 1_000_000;
/// Completers handed to a thread at a time.
const BATCH: u64 = 1000;

fn per_thread() -> u64 {
    std::env::var("AIO_STRESS_STORM")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(PER_THREAD)
}

type Batch = Vec<(u64, Completer<u64>)>;

/// The loop's side of the completions: per thread, how many were made, completed, and where to send
/// the next batch.
struct Feeder {
    svc: LocalHandle,
    total: u64,
    made: Vec<Cell<u64>>,
    completed: Vec<Cell<u64>>,
    wrong: Cell<usize>,
    senders: Vec<mpsc::Sender<Batch>>,
    /// Posts run, per thread (the closures are `Send`, so atomics; only the loop thread writes).
    posts: Arc<Vec<AtomicU64>>,
}

impl Feeder {
    /// Makes the next batch of completions for thread `t` and sends their Completers.
    fn feed(self: &Rc<Self>, t: usize) {
        let first = self.made[t].get();
        let end = (first + BATCH).min(self.total);
        if first == end {
            return;
        }
        let mut batch = Vec::with_capacity((end - first) as usize);
        for seq in first..end {
            let (completer, op) = self.svc.completion::<u64>();
            let this = self.clone();
            op.then(move |res| {
                let done = &this.completed[t];
                if res.ok() != Some(seq) {
                    this.wrong.set(this.wrong.get() + 1);
                }
                done.set(done.get() + 1);
                if done.get() % BATCH == 0 {
                    this.feed(t);
                }
                this.stop_when_done();
            });
            batch.push((seq, completer));
        }
        self.made[t].set(end);
        // A thread that has finished its posts still takes batches until it has them all.
        self.senders[t]
            .send(batch)
            .expect("the thread takes its batches");
    }

    fn all_done(&self) -> bool {
        (0..THREADS).all(|t| {
            self.completed[t].get() == self.total
                && self.posts[t].load(Ordering::Relaxed) == self.total
        })
    }

    fn stop_when_done(&self) {
        if self.all_done() {
            self.svc.stop();
        }
    }
}

matrix_test!(eight_threads_post_and_complete_a_million_each, 150, |svc| {
    let test = util::current_test();
    let total = per_thread();
    let posts: Arc<Vec<AtomicU64>> = Arc::new((0..THREADS).map(|_| AtomicU64::new(0)).collect());
    let post_errors = Arc::new(AtomicUsize::new(0));
    let stoppers_run = Arc::new(AtomicUsize::new(0));
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for _ in 0..THREADS {
        let (tx, rx) = mpsc::channel::<Batch>();
        senders.push(tx);
        receivers.push(rx);
    }
    let feeder = Rc::new(Feeder {
        svc: svc.local(),
        total,
        made: (0..THREADS).map(|_| Cell::new(0)).collect(),
        completed: (0..THREADS).map(|_| Cell::new(0)).collect(),
        wrong: Cell::new(0),
        senders,
        posts: posts.clone(),
    });
    // Two batches in flight per thread.
    for t in 0..THREADS {
        feeder.feed(t);
        feeder.feed(t);
    }
    let loop_thread = std::thread::current().id();
    let started = Instant::now();
    let threads: Vec<_> = receivers
        .into_iter()
        .enumerate()
        .map(|(t, batches)| {
            let (handle, posts, post_errors) = (svc.handle(), posts.clone(), post_errors.clone());
            let stoppers_run = stoppers_run.clone();
            std::thread::spawn(move || {
                let (mut posted, mut completed) = (0u64, 0u64);
                while posted < total || completed < total {
                    // A burst of posts, then whatever Completers have arrived.
                    for _ in 0..BATCH.min(total - posted) {
                        let (seq, posts, post_errors) =
                            (posted, posts.clone(), post_errors.clone());
                        handle
                            .post(move || {
                                let n = &posts[t];
                                // In order, once each, on the loop thread.
                                if n.load(Ordering::Relaxed) != seq
                                    || std::thread::current().id() != loop_thread
                                {
                                    post_errors.fetch_add(1, Ordering::Relaxed);
                                }
                                n.fetch_add(1, Ordering::Relaxed);
                            })
                            .expect("post");
                        posted += 1;
                    }
                    let next = if posted < total {
                        batches.try_recv().ok()
                    } else {
                        batches.recv().ok()
                    };
                    for (seq, completer) in next.into_iter().flatten() {
                        completer.complete(seq);
                        completed += 1;
                    }
                }
                // Runs after this thread's posts (and the deliveries of its completions).
                let stopper = handle.clone();
                handle
                    .post(move || {
                        stoppers_run.fetch_add(1, Ordering::Relaxed);
                        stopper.stop();
                    })
                    .expect("post the stopper");
                (posted, completed)
            })
        })
        .collect();
    // The loop stops when a completion handler finds everything done, and whenever a thread's
    // stopper (posted after all its posts and completions) runs: then, if anything is left, again.
    loop {
        svc.restart();
        svc.run().unwrap();
        if feeder.all_done() {
            break;
        }
    }
    let elapsed = started.elapsed();
    let sent: Vec<(u64, u64)> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let ran_posts: Vec<u64> = posts.iter().map(|n| n.load(Ordering::Relaxed)).collect();
    let ran_completions: Vec<u64> = feeder.completed.iter().map(Cell::get).collect();
    eprintln!(
        "{test}: {THREADS} threads x ({total} posts + {total} completions) in {elapsed:?}; \
         per thread sent {sent:?}; posts run {ran_posts:?}; completions run {ran_completions:?}; \
         {} posts out of order, duplicated or off the loop thread, {} completions with a wrong value",
        post_errors.load(Ordering::Relaxed),
        feeder.wrong.get()
    );
    assert!(sent.iter().all(|&(p, c)| p == total && c == total));
    assert!(ran_posts.iter().all(|&n| n == total), "{ran_posts:?}");
    assert!(
        ran_completions.iter().all(|&n| n == total),
        "{ran_completions:?}"
    );
    assert_eq!(post_errors.load(Ordering::Relaxed), 0);
    assert_eq!(feeder.wrong.get(), 0);
    // Nothing is left over but the stoppers that were posted after the last completion stopped the
    // loop (each stops the loop again, so drain one run at a time).
    let stoppers_pending = THREADS - stoppers_run.load(Ordering::Relaxed);
    let mut leftovers = 0;
    loop {
        svc.restart();
        match svc.poll().unwrap() {
            0 => break,
            n => leftovers += n,
        }
    }
    eprintln!("{test}: {leftovers} stoppers ran after the storm");
    assert_eq!(leftovers, stoppers_pending, "handlers run after the storm");
    assert_eq!(stoppers_run.load(Ordering::Relaxed), THREADS);
});

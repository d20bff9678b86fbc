//! Micro benchmarks of the event loop's own operations, each beside tokio's equivalent on a
//! current-thread runtime, in the same run:
//!
//! - `post`: a closure queued and run (tokio: a task spawned and run, its closest equivalent);
//! - `spawn_await`: a task spawned and its result awaited;
//! - `timer_schedule_cancel`: a one-shot timer armed (first poll) and cancelled (dropped);
//! - `eager_read`: `read_some` on a socket that already has 64 bytes waiting (aio tries the read
//!   first; tokio likewise); the peer's write is part of each iteration for both.
//!
//! ```text
//! cargo bench --bench loop_ops                # full
//! cargo bench --bench loop_ops -- --quick     # a quick look
//! cargo bench --bench loop_ops -- timer       # one group
//! ```
//!
//! Each iteration's time is measured inside one `block_on` (criterion's `iter_custom`), so the
//! cost of entering the loop is not counted. The side-by-side echo benchmark against C, tokio,
//! Boost.Asio and libuv is in `bench/` (`bench/run.sh`).

use std::cell::Cell;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use aio::{IoService, StreamSocket};
use criterion::{Criterion, criterion_group, criterion_main};

/// How many posts are queued before the loop runs them (a loop's turn rarely has more).
const POST_BATCH: u64 = 1024;

/// Polls `future` exactly once, whatever it returns, and gives it back unfinished or not.
async fn poll_once<F: Future + Unpin>(mut future: F) -> F {
    std::future::poll_fn(|cx| {
        let _ = Pin::new(&mut future).poll(cx);
        Poll::Ready(())
    })
    .await;
    future
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn post(c: &mut Criterion) {
    let mut group = c.benchmark_group("post");
    group.bench_function("aio", |b| {
        let svc = IoService::new().expect("loop");
        let ran = Rc::new(Cell::new(0u64));
        b.iter_custom(|iters| {
            let start = Instant::now();
            let mut left = iters;
            while left > 0 {
                let n = left.min(POST_BATCH);
                for _ in 0..n {
                    let ran = ran.clone();
                    svc.post(move || ran.set(ran.get() + 1));
                }
                svc.poll().expect("poll");
                left -= n;
            }
            start.elapsed()
        });
    });
    group.bench_function("tokio", |b| {
        let rt = tokio_runtime();
        let ran = Arc::new(AtomicUsize::new(0));
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                let mut left = iters;
                while left > 0 {
                    let n = left.min(POST_BATCH);
                    let target = ran.load(Ordering::Relaxed) + n as usize;
                    for _ in 0..n {
                        let ran = ran.clone();
                        drop(tokio::spawn(async move {
                            ran.fetch_add(1, Ordering::Relaxed);
                        }));
                    }
                    while ran.load(Ordering::Relaxed) < target {
                        tokio::task::yield_now().await;
                    }
                    left -= n;
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn spawn_await(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_await");
    group.bench_function("aio", |b| {
        let svc = IoService::new().expect("loop");
        let handle = svc.local();
        b.iter_custom(|iters| {
            svc.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let v = handle.spawn(async move { i }).await.expect("task");
                    std::hint::black_box(v);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("tokio", |b| {
        let rt = tokio_runtime();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let v = tokio::spawn(async move { i }).await.expect("task");
                    std::hint::black_box(v);
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn timer_schedule_cancel(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_schedule_cancel");
    group.bench_function("aio", |b| {
        let svc = IoService::new().expect("loop");
        let handle = svc.local();
        b.iter_custom(|iters| {
            svc.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    // Armed by its first poll, cancelled by the drop.
                    drop(poll_once(handle.after(Duration::from_secs(60))).await);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("tokio", |b| {
        let rt = tokio_runtime();
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let sleep = Box::pin(tokio::time::sleep(Duration::from_secs(60)));
                    drop(poll_once(sleep).await);
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

fn eager_read(c: &mut Criterion) {
    let mut group = c.benchmark_group("eager_read");
    let message = [7u8; 64];
    group.bench_function("aio", |b| {
        let svc = IoService::new().expect("loop");
        let (reader, writer) = StreamSocket::pair(&svc).expect("socket pair");
        let mut writer = writer.into_std_unix().expect("std socket");
        let mut buf = Some(vec![0u8; 1024]);
        b.iter_custom(|iters| {
            svc.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    writer.write_all(&message).expect("write");
                    let (res, back) = reader.read_some(buf.take().expect("buffer")).await;
                    assert_eq!(res.expect("read"), message.len());
                    buf = Some(back);
                }
                start.elapsed()
            })
        });
    });
    group.bench_function("tokio", |b| {
        use tokio::io::AsyncRead;
        let rt = tokio_runtime();
        let (reader, mut writer) = std::os::unix::net::UnixStream::pair().expect("socket pair");
        reader.set_nonblocking(true).expect("non-blocking");
        let mut reader = {
            let _guard = rt.enter();
            tokio::net::UnixStream::from_std(reader).expect("tokio socket")
        };
        let mut buf = vec![0u8; 1024];
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    writer.write_all(&message).expect("write");
                    // AsyncReadExt::read without tokio's io-util feature: the same poll_read.
                    let n = std::future::poll_fn(|cx| {
                        let mut filled = tokio::io::ReadBuf::new(&mut buf);
                        Pin::new(&mut reader)
                            .poll_read(cx, &mut filled)
                            .map_ok(|()| filled.filled().len())
                    })
                    .await
                    .expect("read");
                    assert_eq!(n, message.len());
                }
                start.elapsed()
            })
        });
    });
    group.finish();
}

criterion_group!(
    loop_ops,
    post,
    spawn_await,
    timer_schedule_cancel,
    eager_read
);
criterion_main!(loop_ops);

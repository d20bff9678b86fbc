//! fd reuse under churn: thousands of objects opened and closed while operations wait on them, so
//! that the kernel hands the same fd numbers (and the loop the same table slots) to new objects while
//! older operations and events are still in flight. Every handler knows what it may receive — its
//! own tag, its own end of stream, or `ECANCELED` — and checks it; every handler runs exactly once.
//!
//! Each round opens `PER_ROUND` socket pairs and gives each a read (a callback on one end, a future
//! on the other half of the time) and a timer, then does one of: write the pair's tag; write it and
//! close the reader at once (the data is in the kernel, the event maybe not yet seen); close the
//! reader; drop the writer (end of stream); or release the reader's fd and adopt it into a new
//! socket, which must then read the tag (the old object's read is cancelled). The loop runs a little
//! between rounds, so that rounds overlap.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::{DeadlineTimer, IoService, StreamSocket};

use crate::util::{self, stress};

const ROUNDS: usize = 1500;
const PER_ROUND: usize = 16;

#[derive(Default)]
struct Tally {
    started: Cell<usize>,
    finished: Cell<usize>,
    got_own_data: Cell<usize>,
    cancelled: Cell<usize>,
    end_of_stream: Cell<usize>,
    timers_fired: Cell<usize>,
    timers_cancelled: Cell<usize>,
    wrong: RefCell<Vec<String>>,
    /// The fd numbers handed out, to show that they were reused.
    fds_seen: RefCell<HashSet<i32>>,
    fds_opened: Cell<usize>,
}

/// What a read may complete with.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    Data,
    Cancelled,
    /// Either: on a completion backend (io_uring) the kernel may finish the read with the data
    /// that arrived before the close; what must never come is another object's data.
    CancelledOrData,
    EndOfStream,
}

fn tag(round: usize, i: usize) -> Vec<u8> {
    format!("<{round}/{i}>").into_bytes()
}

impl Tally {
    fn check_read(
        &self,
        who: &str,
        expect: Expect,
        want: &[u8],
        res: io::Result<usize>,
        buf: &[u8],
    ) {
        self.finished.set(self.finished.get() + 1);
        let ok = match (&res, expect) {
            (Ok(n), Expect::Data | Expect::CancelledOrData) if *n > 0 => {
                // A short read may take a prefix; the tag is tiny and written at once, so it comes whole.
                let own = &buf[..*n] == want;
                if own {
                    self.got_own_data.set(self.got_own_data.get() + 1);
                }
                own
            }
            (Ok(0), Expect::EndOfStream) => {
                self.end_of_stream.set(self.end_of_stream.get() + 1);
                true
            }
            (Err(e), Expect::Cancelled | Expect::CancelledOrData) if aio::is_cancelled(e) => {
                self.cancelled.set(self.cancelled.get() + 1);
                true
            }
            _ => false,
        };
        if !ok {
            let got = res.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
            self.wrong.borrow_mut().push(format!(
                "{who}: expected {expect:?} of {:?}, got {got:?}",
                String::from_utf8_lossy(want)
            ));
        }
    }

    fn note_fd(&self, socket: &StreamSocket) {
        if let Some(fd) = socket.native() {
            self.fds_seen.borrow_mut().insert(fd);
            self.fds_opened.set(self.fds_opened.get() + 1);
        }
    }
}

/// Starts a read on `socket` that expects `expect` (with `want` for data): a callback, or a spawned
/// future when `as_future`.
fn read_expecting(
    svc: &IoService,
    socket: &Rc<StreamSocket>,
    who: String,
    expect: Expect,
    want: Vec<u8>,
    as_future: bool,
    tally: &Rc<Tally>,
) {
    tally.started.set(tally.started.get() + 1);
    let tally = tally.clone();
    if as_future {
        let op = socket.read_some(vec![0u8; 64]);
        svc.spawn(async move {
            let (res, buf) = op.await;
            tally.check_read(&who, expect, &want, res, &buf);
        });
        // Let the task start its read, so that it is pending (waiting) like the callback's.
        svc.poll().unwrap();
    } else {
        socket.read_some(vec![0u8; 64]).then(move |(res, buf)| {
            tally.check_read(&who, expect, &want, res, &buf);
        });
    }
}

matrix_test!(reused_fds_never_deliver_to_the_wrong_object, 60, |svc| {
    // Counts fds: alone in a child process.
    util::in_child(|| {
        let test = util::current_test();
        let fds_before = stress::open_fds();
        let tally = Rc::new(Tally::default());
        let started = Instant::now();
        // Objects that must outlive their round (a reader whose read is still pending keeps its
        // socket; a released fd's new owner): dropped at the end.
        let mut keep: Vec<Rc<StreamSocket>> = Vec::new();
        for round in 0..ROUNDS {
            for i in 0..PER_ROUND {
                let (a, b) = StreamSocket::pair(svc).unwrap();
                let (a, b) = (Rc::new(a), Rc::new(b));
                tally.note_fd(&a);
                tally.note_fd(&b);
                let want = tag(round, i);
                let who = format!("round {round} pair {i}");
                let as_future = (round + i) % 2 == 0;
                // A timer per pair: fires for itself, or is cancelled with its pair's reader.
                let timer = Rc::new(DeadlineTimer::new(svc).unwrap());
                timer.expires_after(Duration::from_millis(((round * 7 + i) % 20) as u64));
                // Read now: a cancel() after the timer fired (its handler still queued) clears it.
                let expiry = timer.expiry().expect("armed");
                tally.started.set(tally.started.get() + 1);
                timer.wait().then({
                    let tally = tally.clone();
                    move |res| {
                        tally.finished.set(tally.finished.get() + 1);
                        match res {
                            Ok(()) if expiry <= Instant::now() => {
                                tally.timers_fired.set(tally.timers_fired.get() + 1)
                            }
                            Err(e) if aio::is_cancelled(&e) => {
                                tally.timers_cancelled.set(tally.timers_cancelled.get() + 1)
                            }
                            other => tally
                                .wrong
                                .borrow_mut()
                                .push(format!("timer of round {round} pair {i}: {other:?}")),
                        }
                    }
                });
                match (round * PER_ROUND + i) % 5 {
                    0 => {
                        read_expecting(svc, &b, who, Expect::Data, want.clone(), as_future, &tally);
                        a.write_all(want).then(|(res, _)| res.expect("write"));
                        keep.push(b);
                    }
                    1 => {
                        // The data reaches the kernel, then the reader closes before the loop runs
                        // its handler.
                        read_expecting(
                            svc,
                            &b,
                            who,
                            Expect::CancelledOrData,
                            want.clone(),
                            as_future,
                            &tally,
                        );
                        svc.block_on(a.write_all(want)).0.expect("write");
                        b.close();
                        timer.cancel();
                    }
                    2 => {
                        read_expecting(svc, &b, who, Expect::Cancelled, want, as_future, &tally);
                        drop(b); // the last handle: closes, cancelling its read
                        timer.cancel();
                    }
                    3 => {
                        read_expecting(svc, &b, who, Expect::EndOfStream, want, as_future, &tally);
                        drop(a);
                        keep.push(b);
                        continue;
                    }
                    _ => {
                        // The fd moves to a new object; the old object's read is cancelled, the new
                        // one reads this pair's tag.
                        read_expecting(
                            svc,
                            &b,
                            format!("{who} (released)"),
                            Expect::Cancelled,
                            want.clone(),
                            as_future,
                            &tally,
                        );
                        let fd = b.release().unwrap();
                        let adopted = Rc::new(StreamSocket::from_fd(svc, fd).unwrap());
                        read_expecting(
                            svc,
                            &adopted,
                            format!("{who} (adopted)"),
                            Expect::Data,
                            want.clone(),
                            !as_future,
                            &tally,
                        );
                        a.write_all(want).then(|(res, _)| res.expect("write"));
                        keep.push(adopted);
                    }
                }
                keep.push(a);
            }
            // Let the loop run a little: some completions happen now, some rounds later.
            svc.poll().unwrap();
            if keep.len() > 8 * PER_ROUND {
                // Closing what is done frees fd numbers for the next rounds.
                keep.drain(..4 * PER_ROUND);
            }
        }
        drop(keep);
        // Everything left completes now (timers within 20 ms).
        svc.restart();
        let deadline = Instant::now() + Duration::from_secs(20);
        while tally.finished.get() < tally.started.get() && Instant::now() < deadline {
            svc.run_one().unwrap();
        }
        svc.poll().unwrap();
        let fds_after = stress::open_fds();
        eprintln!(
            "{test}: {} objects on {} distinct fd numbers in {:?}; {} handlers of {} ran: {} own \
             data, {} ECANCELED, {} end of stream, {} timers fired, {} timers cancelled, {} wrong; \
             open fds before {fds_before}, after {fds_after}",
            tally.fds_opened.get(),
            tally.fds_seen.borrow().len(),
            started.elapsed(),
            tally.finished.get(),
            tally.started.get(),
            tally.got_own_data.get(),
            tally.cancelled.get(),
            tally.end_of_stream.get(),
            tally.timers_fired.get(),
            tally.timers_cancelled.get(),
            tally.wrong.borrow().len(),
        );
        let wrong = tally.wrong.borrow();
        assert!(wrong.is_empty(), "{:?}", &wrong[..wrong.len().min(10)]);
        assert_eq!(
            tally.finished.get(),
            tally.started.get(),
            "every handler ran once"
        );
        assert!(
            tally.fds_seen.borrow().len() * 10 < tally.fds_opened.get(),
            "fd numbers were reused"
        );
        assert_eq!(fds_after, fds_before, "{:?}", stress::fd_table());
    });
});

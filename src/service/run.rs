//! One turn of the loop: run what is ready, wait on the driver, dispatch readiness, fire timers.

use std::cell::RefCell;
use std::io;
use std::time::{Duration, Instant};

use super::{LocalHandle, RunGuard};
use crate::driver::{Driver, Event, Readiness, Token};

/// How many jobs queued during a turn's handlers (a handler that accepts again and finds the next
/// connection waiting, a read that completes at once and starts a write) may still run in that turn
/// before the loop asks the driver for events again. Without it, every link of such a chain costs a
/// driver call. Bounded, so that handlers that keep queueing work cannot starve I/O and timers.
const CHAINED_PER_TURN: usize = 256;

/// The events of one wait while they are dispatched. Dispatching runs user code (a handler, a
/// task, a socket's `on_open` hook when an accept completes): if that panics, the events not yet
/// dispatched, and the one being dispatched, are kept for the next turn instead of being lost with
/// the unwinding stack, since an edge-triggered backend never reports them again.
struct Batch<'a> {
    svc: &'a LocalHandle,
    events: Vec<Event>,
    /// How many events were dispatched completely.
    done: usize,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        let mut events = std::mem::take(&mut self.events);
        events.drain(..self.done); // everything, unless a panic interrupted the dispatch
        *self.svc.inner.events.borrow_mut() = events;
    }
}

thread_local! {
    /// The loop running on this thread (see [`LocalHandle::current`]).
    static CURRENT: RefCell<Option<LocalHandle>> = const { RefCell::new(None) };
}

/// Puts back the loop that ran on this thread before (a loop may be run from a handler of another).
pub(crate) fn restore_current(previous: Option<LocalHandle>) {
    // Taken out before it drops: dropping a handle may run arbitrary drop glue.
    let replaced = CURRENT.with(|c| c.replace(previous));
    drop(replaced);
}

impl LocalHandle {
    pub(crate) fn enter(&self) -> io::Result<RunGuard<'_>> {
        if self.inner.running.replace(true) {
            return Err(io::Error::other(
                "IoService is already running on this thread (run, run_one, poll or block_on called from a handler)",
            ));
        }
        Ok(RunGuard {
            inner: &self.inner,
            _thread: self.reactor().remote().enter(),
            previous: CURRENT.with(|c| c.replace(Some(self.clone()))),
        })
    }

    /// The loop running on this thread, if any: inside one of its handlers or tasks, the loop that
    /// runs them (tokio's `Handle::current`, but an `Option` rather than a panic).
    ///
    /// ```
    /// use aio::{IoService, LocalHandle};
    /// let svc = IoService::new()?;
    /// assert!(LocalHandle::current().is_none(), "not inside a loop");
    /// svc.post(|| assert!(LocalHandle::current().is_some()));
    /// svc.run_until_done()?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn current() -> Option<LocalHandle> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Runs up to `max` ready jobs (posted closures, finished operations, woken tasks): those queued
    /// when it started, and up to [`CHAINED_PER_TURN`] more queued meanwhile; returns how many
    /// handlers ran.
    pub(crate) fn run_ready(&self, max: usize, honor_stop: bool) -> usize {
        let reactor = &**self.reactor();
        let mut budget = reactor.queued_len() + reactor.remote().runnables.len() + CHAINED_PER_TURN;
        let mut ran = 0;
        while budget > 0 && ran < max {
            budget -= 1;
            if let Some(job) = reactor.pop_job() {
                // A completion's delivery runs no handler: its handler runs as a job of its own.
                ran += usize::from(job.run(reactor));
            } else {
                // Taken out first: the task may queue others while it runs.
                let woken_here = reactor.pop_task();
                match woken_here.or_else(|| reactor.remote().runnables.pop().ok()) {
                    Some(task) => {
                        ran += 1;
                        self.run_task(task);
                    }
                    None => break,
                }
            }
            if honor_stop && reactor.is_stopped() {
                break;
            }
        }
        ran
    }

    /// Whether anything is queued to run now.
    pub(crate) fn has_ready(&self) -> bool {
        self.reactor().has_ready()
    }

    /// One wait on the driver (not blocking when `block` is false or work is queued) and the dispatch
    /// of what it reported. With `inline`, handlers of operations that finish in the dispatch may run
    /// right there (see `Reactor::may_complete_here`): the callers that count or limit the handlers
    /// they run (`run_one`, `poll`) pass false.
    pub(crate) fn wait_and_dispatch(&self, block: bool, inline: bool) -> io::Result<()> {
        let reactor = &**self.reactor();
        // Not empty only when a panic interrupted the last dispatch: those events go first.
        let events = std::mem::take(&mut *self.inner.events.borrow_mut());
        let timeout = if !block || reactor.has_ready() || !events.is_empty() {
            Some(Duration::ZERO)
        } else {
            reactor
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()))
        };
        // Handlers may run from the dispatch only when nothing from an earlier turn is left: no job
        // or woken task (it could be an earlier completion of a direction dispatched now), and no
        // event left over by a panic (it could name a source that this wait reports again). Not on
        // io_uring, whose multishot completions may name one source and direction twice in one wait.
        let inline =
            inline && events.is_empty() && reactor.queued_len() == 0 && !reactor.ring_mode();
        let mut batch = Batch {
            svc: self,
            events,
            done: 0,
        };
        let result = reactor.driver.borrow_mut().wait(timeout, &mut batch.events);
        while let Some(&ev) = batch.events.get(batch.done) {
            if ev.token() == Token::WAKE {
                reactor.take_remote();
            } else if let Some(task) = reactor.dispatch_event(ev, inline) {
                // The only waiter of what was served, and nothing queued before it: polled here.
                self.run_task(task);
            }
            batch.done += 1;
        }
        drop(batch);
        reactor.dispatch_completions();
        reactor.fire_timers();
        result
    }
}

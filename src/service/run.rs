//! One turn of the loop: run what is ready, wait on the driver, dispatch readiness, fire timers.

use std::io;
use std::time::{Duration, Instant};

use super::source::{Source, Waiter};
use super::timers::Due;
use super::{Job, LocalHandle, RunGuard};
use crate::driver::{Driver, Event, Readiness, Token};
use crate::op::{Interest, ReadyOp};
use std::cell::RefMut;

/// How many jobs queued during a turn's handlers (a handler that accepts again and finds the next
/// connection waiting, a read that completes at once and starts a write) may still run in that turn
/// before the loop asks the driver for events again. Without it, every link of such a chain costs a
/// driver call, and on the poll backend that call scans every watched fd: 10,000 idle connections
/// made each accept cost 10,000 fd checks. Bounded, so that handlers that keep queueing work cannot
/// starve I/O and timers.
const CHAINED_PER_TURN: usize = 256;

/// The events of one wait while they are dispatched. Dispatching runs user code (a socket's
/// `on_open` hook when an accept completes, a waker): if that panics, the events not yet dispatched,
/// and the one being dispatched, are kept for the next turn instead of being lost with the unwinding
/// stack, since an edge-triggered backend never reports them again.
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

/// Takes in an event for one direction: remembers `closed`, ends an expired back-off (or ignores the
/// event during one), and marks the direction ready at once when nobody waits on it. True when
/// waiters are left to serve (see `serve_waiters`, which marks it ready then).
#[inline]
fn arm(source: &mut Source, interest: Interest, closed: bool) -> bool {
    source.dir_mut(interest).closed |= closed;
    if let Some(until) = source.backoff_until(interest) {
        if Instant::now() < until {
            return false; // backing off: only the wake-up at `until` ends it
        }
        source.set_backoff_until(interest, None);
    }
    let dir = source.dir_mut(interest);
    if dir.waiters.is_empty() {
        dir.ready = true;
        false
    } else {
        true
    }
}

/// How a callback operation taken from the head of its direction's line is served (see
/// [`ReadyOp::serve`](crate::op::ReadyOp::serve)).
#[derive(Clone, Copy)]
pub(crate) struct Serving {
    pub(crate) token: Token,
    pub(crate) interest: Interest,
    /// Others wait behind it.
    pub(crate) more: bool,
    /// It may run its handler right here (see [`LocalHandle::serve_waiters`]).
    pub(crate) inline: bool,
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
            _thread: self.inner.shared.enter(),
        })
    }

    /// Runs up to `max` ready jobs (posted closures, finished operations, woken tasks): those queued
    /// when it started, and up to [`CHAINED_PER_TURN`] more queued meanwhile; returns how many
    /// handlers ran.
    pub(crate) fn run_ready(&self, max: usize, honor_stop: bool) -> usize {
        let inner = &*self.inner;
        let mut budget = inner.ready.borrow().len()
            + inner.run_queue.borrow().len()
            + inner.shared.runnables.len()
            + CHAINED_PER_TURN;
        let mut ran = 0;
        while budget > 0 && ran < max {
            budget -= 1;
            let job = inner.ready.borrow_mut().pop_front();
            ran += 1;
            if job.is_some() {
                inner.dequeued.set(inner.dequeued.get() + 1);
            }
            match job {
                Some(Job::Call(f)) => f(),
                Some(Job::Remote(f)) => {
                    if !f(self) {
                        ran -= 1; // a completion's delivery: its handler runs as a job of its own
                    }
                }
                Some(Job::Op(op)) => op.complete(self),
                Some(Job::Persistent(op)) => op.resume(self),
                None => {
                    // Taken out first: the task may queue others while it runs.
                    let woken_here = inner.run_queue.borrow_mut().pop_front();
                    match woken_here.or_else(|| inner.shared.runnables.pop().ok()) {
                        Some(task) => self.run_task(task),
                        None => {
                            ran -= 1;
                            break;
                        }
                    }
                }
            }
            if honor_stop && inner.shared.is_stopped() {
                break;
            }
        }
        ran
    }

    /// Whether anything is queued to run now.
    pub(crate) fn has_ready(&self) -> bool {
        !self.inner.ready.borrow().is_empty()
            || !self.inner.run_queue.borrow().is_empty()
            || !self.inner.shared.runnables.is_empty()
    }

    /// One wait on the driver (not blocking when `block` is false or work is queued) and the dispatch
    /// of what it reported. With `inline`, handlers of operations that finish in the dispatch may run
    /// right there (see [`serve_waiters`](LocalHandle::serve_waiters)): the callers that count or
    /// limit the handlers they run (`run_one`, `poll`) pass false.
    pub(crate) fn wait_and_dispatch(&self, block: bool, inline: bool) -> io::Result<()> {
        let inner = &*self.inner;
        // Not empty only when a panic interrupted the last dispatch: those events go first.
        let events = std::mem::take(&mut *inner.events.borrow_mut());
        let timeout = if !block || self.has_ready() || !events.is_empty() {
            Some(Duration::ZERO)
        } else {
            inner
                .timers
                .borrow()
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()))
        };
        // Handlers may run from the dispatch only when nothing from an earlier turn is left: no job
        // (it could be an earlier completion of a direction dispatched now), and no event left over
        // by a panic (it could name a source that this wait reports again). Not on io_uring, whose
        // multishot completions may name one source and direction twice in one wait.
        let inline = inline
            && events.is_empty()
            && inner.ready.borrow().is_empty()
            && inner.backend != crate::driver::Backend::Uring;
        let mut batch = Batch {
            svc: self,
            events,
            done: 0,
        };
        let result =
            inner
                .driver
                .borrow_mut()
                .wait(&inner.sources.borrow(), timeout, &mut batch.events);
        while let Some(&ev) = batch.events.get(batch.done) {
            if ev.token() == Token::WAKE {
                self.take_remote();
            } else {
                self.dispatch_event(ev, inline);
            }
            batch.done += 1;
        }
        drop(batch);
        self.dispatch_completions();
        self.fire_timers();
        result
    }

    /// A direction of `token` became ready: retry the callback operations waiting on it, in order,
    /// and wake the futures. `closed` (hang-up, error, peer shut down) is remembered: such a direction
    /// never again waits for an edge that would not come.
    pub(crate) fn on_ready(&self, token: Token, interest: Interest, closed: bool) {
        let serve = {
            let mut sources = self.inner.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                return; // closed since: a stale event
            };
            arm(source, interest, closed)
        };
        if serve {
            self.serve_waiters(token, interest, false);
        }
    }

    /// Dispatches one event of the driver. One look at the source settles the directions nobody
    /// waits on and, on a readiness backend, serves the readers under that same look (see
    /// [`serve_from`](LocalHandle::serve_from)); then the writers are served.
    fn dispatch_event(&self, ev: Event, inline: bool) {
        let token = ev.token();
        let sources = self.inner.sources.borrow_mut();
        let Ok(mut source) = RefMut::filter_map(sources, |t| t.get_mut(token)) else {
            return; // closed since: a stale event
        };
        let read = ev.readable() && arm(&mut source, Interest::Read, ev.closed());
        let write = ev.writable() && arm(&mut source, Interest::Write, ev.closed());
        if read && !self.ring_mode() {
            self.serve_from(source, token, Interest::Read, inline);
        } else {
            drop(source);
            if read {
                // On io_uring, waiters are served in turn with the operations on the ring.
                self.serve_waiters(token, Interest::Read, inline);
            }
        }
        if write {
            self.serve_waiters(token, Interest::Write, inline);
        }
    }

    /// Marks a direction that [`arm`] left to its waiters ready, and serves them in order: callback
    /// operations are retried (their handlers queued), futures woken, until one has to wait again.
    ///
    /// With `inline`, a callback operation that finishes here has its handler called at once, not
    /// queued, when that cannot change the order of handlers: it was the only waiter of its direction
    /// (none finished ahead of it in this call, none is left behind it), and every job queued before
    /// it started has run (an earlier operation on its direction that finished at once, say). This
    /// is the loop, not the call that started the operation. Not once the loop is stopped: nothing
    /// but queueing happens after `stop()`.
    pub(crate) fn serve_waiters(&self, token: Token, interest: Interest, inline: bool) {
        if self.ring_mode() {
            if let Some(source) = self.inner.sources.borrow_mut().get_mut(token) {
                source.dir_mut(interest).ready = true;
            }
            // Waiters are served in turn with the operations on the ring (none while one is there).
            self.ring_next(token, interest);
            return;
        }
        let sources = self.inner.sources.borrow_mut();
        if let Ok(source) = RefMut::filter_map(sources, |t| t.get_mut(token)) {
            self.serve_from(source, token, interest, inline);
        }
    }

    /// Serves the waiters of a direction that [`arm`] left to them, `source` still borrowed from the
    /// lookup that found it: the first one is tried under that borrow (one lookup for the event, the
    /// try and the readiness it finds), the others after it while the direction stays ready.
    #[inline(always)]
    fn serve_from(
        &self,
        source: RefMut<'_, Source>,
        token: Token,
        interest: Interest,
        mut inline: bool,
    ) {
        // Rebound: the lookups of later waiters borrow the table anew, for a shorter lifetime.
        let mut source = source;
        source.dir_mut(interest).ready = true;
        loop {
            let dir = source.dir_mut(interest);
            if let Some(Waiter::Persistent(op)) = dir.waiters.first() {
                // It stays first in line: served in place, and nobody behind it is served while it
                // lasts, so the order of handlers holds whether it runs its handler here or not.
                let op = op.clone();
                op.serve(self, source, inline);
                return;
            }
            // The only waiter, a task of this loop: polled right here when nothing queued earlier on
            // this thread waits to run, as a callback's handler is.
            if let Some(task) = dir
                .waiters
                .take_lone_local_task(|| inline && self.may_run_task_inline())
            {
                drop(source);
                self.run_task(task);
                return;
            }
            let Some(waiter) = dir.waiters.pop_front() else {
                return;
            };
            let more = !dir.waiters.is_empty();
            let go_on = match waiter {
                Waiter::Task { wake, .. } => {
                    drop(source);
                    self.wake_task(wake);
                    more
                }
                Waiter::Callback(op) => op.serve(
                    self,
                    source,
                    Serving {
                        token,
                        interest,
                        more,
                        inline,
                    },
                ),
                // Seen first above: never popped here.
                Waiter::Persistent(_) => unreachable!("a persistent operation is served in place"),
            };
            // Nobody else waited: a waker or a try cannot queue a waiter on this direction meanwhile
            // (a handler run inline returns false), so there is nothing left to look at.
            if !go_on {
                return;
            }
            // Only the first waiter may run its handler here.
            inline = false;
            let sources = self.inner.sources.borrow_mut();
            source = match RefMut::filter_map(sources, |t| t.get_mut(token)) {
                Ok(source) if source.dir(interest).ready => source,
                _ => return,
            };
        }
    }

    /// Serves a callback operation taken from the head of its line, `source` still borrowed: tries it
    /// (under the borrow if its try does not use the loop), then runs its handler (`inline`, the
    /// first and only waiter: see [`serve_waiters`](LocalHandle::serve_waiters)), queues it, or puts
    /// it back first in line. True when others wait behind it and it did not have to wait again.
    ///
    /// Generic, called by each operation type's [`ReadyOp::serve`]: one dynamic call per waiter served.
    #[inline(always)]
    pub(crate) fn serve_op<T: ReadyOp + 'static>(
        &self,
        mut op: Box<T>,
        mut source: RefMut<'_, Source>,
        serving: Serving,
    ) -> bool {
        let done = match op.retry_in(&mut source) {
            Some(done) => {
                drop(source);
                done
            }
            None => {
                let fd = source.raw_fd();
                drop(source);
                // The fd was read under the borrow just released, and nothing ran since.
                op.retry(self, fd)
            }
        };
        if !done {
            // Still not ready: it keeps its place at the head of the line.
            let mut sources = self.inner.sources.borrow_mut();
            match sources.get_mut(serving.token) {
                Some(source) => source
                    .dir_mut(serving.interest)
                    .waiters
                    .push_front(Waiter::Callback(op)),
                None => {
                    drop(sources);
                    self.cancel_waiter(Waiter::Callback(op));
                }
            }
            return false;
        }
        if serving.inline && !serving.more && self.may_run_inline(op.queued_before()) {
            op.complete(self);
            return false;
        }
        self.push_job(Job::Op(op));
        serving.more
    }

    /// Whether a handler may run right where the loop found its operation finished, given the
    /// count of queued jobs when that operation started: all of those ran, and the loop is not
    /// stopped (see [`serve_waiters`](LocalHandle::serve_waiters)).
    #[inline(always)]
    pub(crate) fn may_run_inline(&self, queued_before: u64) -> bool {
        self.inner.dequeued.get() >= queued_before && !self.is_stopped()
    }

    /// Whether a woken task may be polled where its event is dispatched: no job and no task woken
    /// here is queued to run before it, and the loop is not stopping. (Wakes from other threads are
    /// not looked at: they come in their own time anyway.)
    #[inline]
    pub(crate) fn may_run_task_inline(&self) -> bool {
        let inner = &*self.inner;
        inner.ready.borrow().is_empty() && inner.run_queue.borrow().is_empty() && !self.is_stopped()
    }

    /// Makes a virtual source (timer, completion) ready: its waiting operations try again.
    pub(crate) fn fire(&self, token: Token) {
        self.on_ready(token, Interest::Read, false);
    }

    /// Arms the timer source `token` for `deadline` (replacing any earlier deadline).
    pub(crate) fn arm_timer(&self, token: Token, deadline: Instant) {
        let live = {
            let mut sources = self.inner.sources.borrow_mut();
            let Some(source) = sources.get_mut(token) else {
                return;
            };
            source.deadline = Some(deadline);
            source.read.ready = false;
            sources.len()
        };
        let mut timers = self.inner.timers.borrow_mut();
        timers.push(deadline, token, Due::Timer);
        // Re-armed and cancelled timers leave entries behind; keep them from outgrowing the live set.
        if timers.len() > 2 * live + 1024 {
            let sources = self.inner.sources.borrow();
            timers.retain(|at, token, due| match (due, sources.get(token)) {
                (_, None) => false,
                (Due::Timer, Some(s)) => s.deadline == Some(at),
                (Due::Backoff(_), Some(_)) => true,
            });
        }
    }

    /// Disarms the timer source `token`: its pending heap entry will be ignored.
    pub(crate) fn disarm_timer(&self, token: Token) {
        if let Some(source) = self.inner.sources.borrow_mut().get_mut(token) {
            source.deadline = None;
            source.read.ready = false;
        }
    }

    /// Arranges for `token`'s `interest` direction to be treated as ready after `delay`, and ignores
    /// its readiness events until then (a level-triggered backend would otherwise report a listener
    /// with a queued connection as ready at once, and an acceptor out of fds would spin).
    pub(crate) fn wake_after(&self, token: Token, interest: Interest, delay: Duration) {
        let at = Instant::now() + delay;
        if let Some(source) = self.inner.sources.borrow_mut().get_mut(token) {
            source.set_backoff_until(interest, Some(at));
        }
        self.inner
            .timers
            .borrow_mut()
            .push(at, token, Due::Backoff(interest));
    }

    fn fire_timers(&self) {
        let now = Instant::now();
        loop {
            let due = self.inner.timers.borrow_mut().pop_due(now);
            match due {
                Some((at, token, Due::Timer)) => {
                    let armed = self
                        .inner
                        .sources
                        .borrow()
                        .get(token)
                        .is_some_and(|s| s.deadline == Some(at));
                    if armed {
                        self.fire(token);
                    }
                }
                Some((_, token, Due::Backoff(interest))) => self.on_ready(token, interest, false),
                None => return,
            }
        }
    }

    fn take_remote(&self) {
        let mut jobs = std::mem::take(&mut *self.inner.remote_jobs.borrow_mut());
        self.inner.shared.take_remote(&mut jobs);
        for job in jobs.drain(..) {
            self.push_job(Job::Remote(job));
        }
        *self.inner.remote_jobs.borrow_mut() = jobs;
    }
}

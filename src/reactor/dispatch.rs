//! Readiness in: an event, a timer or the end of a back-off serves the line of a direction.
//!
//! One look at the source per event: it takes the event in ([`Source::on_event`]) and, on a
//! readiness backend, serves the readers under that same borrow; the first operation in line is
//! tried right there and, when [`Reactor::may_complete_here`] allows, its handler runs right there
//! too (or the task that awaits it is handed back to be polled at once). Operations behind it are
//! served while the direction stays ready.

use std::cell::RefMut;

use super::block::OpPtr;
use super::source::{EventOutcome, Source, Waiter};
use super::wake::TaskRef;
use super::{Reactor, Token};
use crate::driver::{Driver, Event, Interest, Readiness};

/// How a callback operation taken from the head of its direction's line is served (see
/// [`Reactor::serve_op`]).
#[derive(Clone, Copy)]
struct Serving {
    token: Token,
    interest: Interest,
    /// Others wait behind it.
    more: bool,
    /// Its handler may run right here (it is the first and only one served in this call, and the
    /// caller allows it).
    inline: bool,
}

impl Reactor {
    /// Dispatches one event of the driver. With `inline`, a handler whose operation finishes here
    /// may run right here (see [`may_complete_here`](Reactor::may_complete_here)); the callers that
    /// count or limit the handlers they run (`run_one`, `poll`) pass false. Returns the task of this
    /// loop that awaits what was served and may be polled right now, if any: the caller polls it.
    #[inline]
    pub(crate) fn dispatch_event(&self, ev: Event, inline: bool) -> Option<TaskRef> {
        let token = ev.token();
        let sources = self.sources.borrow_mut();
        let Ok(mut source) = RefMut::filter_map(sources, |t| t.get_mut(token)) else {
            return None; // closed since: a stale event
        };
        let read = ev.readable()
            && self.take_event(&mut source, token, Interest::Read, ev.no_more_edges());
        let write = ev.writable()
            && self.take_event(&mut source, token, Interest::Write, ev.no_more_edges());
        let task = if !read {
            drop(source);
            None
        } else if self.ring {
            drop(source);
            // On io_uring, waiters are served in turn with the operations on the ring.
            self.ring_next(token, Interest::Read);
            None
        } else {
            self.serve_line(source, token, Interest::Read, inline)
        };
        if write {
            // A task handed back for the readers runs next: nothing here may run before it.
            self.serve_direction(token, Interest::Write, inline && task.is_none());
        }
        task
    }

    /// Takes in an event for one direction of `source` (see [`Source::on_event`]); true when its
    /// line is to be served. A level-triggered backend stops watching a direction nobody waits on.
    #[inline(always)]
    fn take_event(
        &self,
        source: &mut Source,
        token: Token,
        interest: Interest,
        no_more_edges: bool,
    ) -> bool {
        match source.on_event(interest, no_more_edges) {
            EventOutcome::Serve => true,
            EventOutcome::Idle => {
                if self.level_triggered {
                    self.sync_watch(source, token, interest);
                }
                false
            }
            EventOutcome::Ignored => false,
        }
    }

    /// A direction of `token` became ready without a kernel event (a timer, a completion delivered
    /// from another thread, the end of a back-off): serves its line, handlers queued.
    pub(crate) fn make_ready(&self, token: Token, interest: Interest) {
        let serve = match self.sources.borrow_mut().get_mut(token) {
            Some(source) => self.take_event(source, token, interest, false),
            None => false, // closed since
        };
        if serve {
            self.serve_direction(token, interest, false);
        }
    }

    /// Serves the line of a direction that an event made ready, looking its source up again.
    pub(crate) fn serve_direction(&self, token: Token, interest: Interest, inline: bool) {
        if self.ring {
            // On io_uring, waiters are served in turn with the operations on the ring.
            self.ring_next(token, interest);
            return;
        }
        let sources = self.sources.borrow_mut();
        if let Ok(source) = RefMut::filter_map(sources, |t| t.get_mut(token)) {
            if let Some(task) = self.serve_line(source, token, interest, inline) {
                // Polled right here only from the dispatch of an event, which hands it back.
                self.queue_task(task);
            }
        }
    }

    /// Serves the line of a direction that is ready, `source` still borrowed from the lookup that
    /// found it: the first waiter is served under that borrow (one lookup for the event, the try and
    /// the readiness it finds), the others after it while the direction stays ready. Callback
    /// operations are tried (their handlers run here or queued), futures woken, until one has to wait
    /// again. Returns a lone task of this loop to poll right here, when `inline` and
    /// [`may_complete_here`](Reactor::may_complete_here) allow.
    #[inline(always)]
    fn serve_line(
        &self,
        source: RefMut<'_, Source>,
        token: Token,
        interest: Interest,
        mut inline: bool,
    ) -> Option<TaskRef> {
        // Rebound: the lookups of later waiters borrow the table anew, for a shorter lifetime.
        let mut source = source;
        loop {
            let line = &mut source.dir_mut(interest).line;
            if let Some(Waiter::Persistent(op)) = line.first() {
                // It stays first in line: served in place, and nobody behind it is served while it
                // lasts, so the order of handlers holds whether it runs its handler here or not.
                let op = op.clone();
                let task = op.serve(self, source, inline);
                if self.level_triggered {
                    self.sync_watch_of(token, interest);
                }
                return task;
            }
            // The only waiter, a task of this loop: handed back to be polled right here.
            if let Some(task) =
                line.take_lone_local_task(|seq| inline && self.may_complete_here(seq))
            {
                return Some(task);
            }
            // A line left empty stays watched: the next operation usually waits again before the
            // next wait, and an event that finds nobody unwatches it (see `take_event`).
            let waiter = line.pop_front()?;
            let more = !line.is_empty();
            let go_on = match waiter {
                Waiter::Task { wake, .. } => {
                    drop(source);
                    self.wake_task(wake);
                    more
                }
                Waiter::Callback(op) => self.serve_op(
                    op,
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
            if !go_on {
                return None;
            }
            // Only the first waiter may complete here.
            inline = false;
            let sources = self.sources.borrow_mut();
            source = match RefMut::filter_map(sources, |t| t.get_mut(token)) {
                Ok(source) if source.dir(interest).ready => source,
                _ => return None,
            };
        }
    }

    /// On a level-triggered backend, makes the driver watch `interest` of `source` while its line
    /// waits for an event (a back-off mutes it in the driver meanwhile).
    #[cold]
    pub(crate) fn sync_watch(&self, source: &Source, token: Token, interest: Interest) {
        let Some(fd) = source.fd() else {
            return;
        };
        let wanted = source.dir(interest).line.wants_events();
        let mut driver = self.driver.borrow_mut();
        if wanted {
            driver.watch(fd, token, interest);
        } else {
            driver.unwatch(fd, interest);
        }
    }

    /// [`sync_watch`](Reactor::sync_watch) after the source's borrow was released.
    #[cold]
    fn sync_watch_of(&self, token: Token, interest: Interest) {
        if let Some(source) = self.sources.borrow().get(token) {
            self.sync_watch(source, token, interest);
        }
    }
}

impl Reactor {
    /// Serves a callback operation taken from the head of its line, `source` still borrowed: tries
    /// it (under the borrow if its try does not use the loop), then runs its handler right here (the
    /// first and only waiter served, when [`may_complete_here`](Reactor::may_complete_here) allows),
    /// queues it, or puts it back first in line. True when others wait behind it and it did not have
    /// to wait again.
    #[inline(always)]
    fn serve_op(&self, mut op: OpPtr, mut source: RefMut<'_, Source>, serving: Serving) -> bool {
        let done = if op.tries_under_table() {
            let (done, attempt) = op.retry_under_borrow(source.fd());
            source.after_attempt(serving.interest, attempt);
            drop(source);
            done
        } else {
            let fd = source.raw_fd();
            drop(source);
            // The fd was read under the borrow just released, and nothing ran since.
            op.retry(self, serving.token, fd)
        };
        if !done {
            // Still not ready: it keeps its place at the head of the line.
            let mut sources = self.sources.borrow_mut();
            match sources.get_mut(serving.token) {
                Some(source) => source
                    .dir_mut(serving.interest)
                    .line
                    .push_front(Waiter::Callback(op)),
                None => {
                    drop(sources);
                    self.cancel_waiter(Waiter::Callback(op));
                }
            }
            return false;
        }
        if serving.inline && !serving.more && self.may_complete_here(op.seq()) {
            self.remote().count_handled(1);
            op.complete(self);
            return false;
        }
        self.push_job(op.into_job());
        serving.more
    }
}

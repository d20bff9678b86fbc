//! The task table of a loop's executor: every spawned future in a slot of its own, polled on the
//! loop's thread when its waker fires.
//!
//! A task's `Waker` is an `Arc<TaskWaker>`, so it may travel to any thread: its wake goes through the
//! loop's cross-thread queue (and the eventfd, unless the loop runs on the waking thread). The loop's
//! own operations wake the task they were polled from by number instead, on the loop's plain run
//! queue (see [`TaskWake`]). The future stays on the loop's thread (in the table, which is not
//! `Send`, or on the stack of the loop polling it), so it may be `!Send`, and dropping the
//! `IoService` drops it there. A wake names its task by slot and by a number no other task of the
//! loop gets, so that a late wake of a finished task is ignored rather than running the slot's next
//! tenant.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use slab::Slab;

use super::LocalHandle;
use crate::reactor::remote::{self, Remote};
use crate::reactor::wake::{CurrentTask, TaskRef};

/// A task's future and the waker it is polled with.
type TaskBody = (Waker, Pin<Box<dyn Future<Output = ()>>>);

pub(crate) struct TaskEntry {
    id: u32,
    waker: Arc<TaskWaker>,
    /// `None` while the task runs: taken out of the table, so that the future may spawn, wake or abort
    /// tasks (itself included) while it is polled.
    body: Option<TaskBody>,
    /// Counted as work for `run_until_done` (not spawned as background).
    counted: bool,
}

#[derive(Default)]
pub(crate) struct TaskTable {
    slots: Slab<TaskEntry>,
    next_id: u32,
}

impl TaskTable {
    /// Adds a task, already marked as queued: the caller schedules its first poll.
    pub(crate) fn insert(
        &mut self,
        remote: &Arc<Remote>,
        future: Pin<Box<dyn Future<Output = ()>>>,
        counted: bool,
    ) -> TaskRef {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let entry = self.slots.vacant_entry();
        let task = TaskRef {
            // Every task holds memory: 2^32 of them at once cannot exist.
            key: u32::try_from(entry.key()).expect("fewer than 2^32 live tasks"),
            id,
        };
        let waker = Arc::new(TaskWaker {
            task,
            queued: AtomicBool::new(true),
            remote: remote.clone(),
        });
        entry.insert(TaskEntry {
            id,
            body: Some((Waker::from(waker.clone()), future)),
            waker,
            counted,
        });
        task
    }

    #[inline]
    fn get_mut(&mut self, task: TaskRef) -> Option<&mut TaskEntry> {
        self.slots
            .get_mut(task.key as usize)
            .filter(|e| e.id == task.id)
    }

    /// Takes a task out (finished, panicked or aborted); the caller settles its work count and drops
    /// it after the table's borrow is released (dropping a future may reach the table).
    pub(crate) fn remove(&mut self, task: TaskRef) -> Option<TaskEntry> {
        self.get_mut(task)?;
        Some(self.slots.remove(task.key as usize))
    }

    /// Takes every task out (the loop is being dropped).
    pub(crate) fn drain(&mut self) -> Vec<TaskEntry> {
        self.slots.drain().collect()
    }
}

/// What a task's `Waker` points to.
struct TaskWaker {
    task: TaskRef,
    /// The task is in a run queue: further wakes before it runs change nothing. Cleared just before
    /// each poll, so that a wake during the poll queues it again.
    queued: AtomicBool,
    remote: Arc<Remote>,
}

impl Wake for TaskWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    #[inline]
    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            remote::schedule(&self.remote, self.task);
        }
    }
}

impl LocalHandle {
    /// Polls a woken task once; a wake that outlived its task is ignored.
    pub(crate) fn run_task(&self, task: TaskRef) {
        let body = {
            let mut tasks = self.inner.tasks.borrow_mut();
            let Some(entry) = tasks.get_mut(task) else {
                return;
            };
            entry.waker.queued.store(false, Ordering::Release);
            entry.body.take()
        };
        // `None`: the task is running further up this thread's stack (its loop was run from inside
        // it, which `enter` refuses; nothing to do).
        let Some((waker, mut future)) = body else {
            return;
        };
        // Declared after the future, so dropped before it when a panic unwinds from the poll: the
        // task leaves the table, then its future is dropped here, on the loop's thread.
        let reap = ReapOnPanic { svc: self, task };
        let reactor = self.reactor();
        reactor.set_current_task(Some(CurrentTask {
            task,
            data: waker.data(),
            vtable: waker.vtable(),
        }));
        let poll = future.as_mut().poll(&mut Context::from_waker(&waker));
        reactor.set_current_task(None);
        std::mem::forget(reap);
        match poll {
            Poll::Ready(()) => drop(self.remove_task(task)),
            Poll::Pending => {
                let mut tasks = self.inner.tasks.borrow_mut();
                match tasks.get_mut(task) {
                    Some(entry) => entry.body = Some((waker, future)),
                    // Aborted while it ran: its future is dropped now, outside the table's borrow.
                    None => {
                        drop(tasks);
                        drop((waker, future));
                    }
                }
            }
        }
    }

    /// Takes a task out of the table (finished, panicked or aborted), settling its work count. The
    /// caller drops it after the table's borrow is released.
    pub(crate) fn remove_task(&self, task: TaskRef) -> Option<TaskEntry> {
        let entry = self.inner.tasks.borrow_mut().remove(task)?;
        if entry.counted {
            self.reactor().finish_work();
        }
        Some(entry)
    }
}

/// Takes a task whose poll panicked out of the table.
struct ReapOnPanic<'a> {
    svc: &'a LocalHandle,
    task: TaskRef,
}

impl Drop for ReapOnPanic<'_> {
    fn drop(&mut self) {
        // No longer polled: a later task whose waker reuses this one's address must not match it.
        self.svc.reactor().set_current_task(None);
        drop(self.svc.remove_task(self.task));
    }
}

/// Drops every task of a loop that is being dropped, on its thread. Dropping a future may drop other
/// tasks' handles, wake or even spawn tasks: repeated until the table stays empty.
pub(crate) fn shutdown_tasks(svc: &LocalHandle) {
    loop {
        let entries = svc.inner.tasks.borrow_mut().drain();
        if entries.is_empty() {
            break;
        }
        for entry in &entries {
            if entry.counted {
                svc.reactor().finish_work();
            }
        }
        drop(entries);
    }
    let remote = svc.reactor().remote();
    remote.runnables.close();
    while remote.runnables.pop().is_ok() {}
}

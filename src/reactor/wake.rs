//! How a waiting future is woken: a task of the loop by its number, anything else by its `Waker`.
//!
//! The service's executor owns the tasks; the reactor knows a task only as a [`TaskRef`], the loop's
//! own run queue of woken tasks, and which task is being polled (so that an operation polled from it
//! can wait with the task's number instead of a clone of its waker).

use std::task::{RawWakerVTable, Waker};

use super::Reactor;

/// A task as its wakes name it: its slot in the executor's table and a number no other task of the
/// loop gets, so that a late wake of a finished task is ignored. Small: a waiting future keeps one
/// in its source's line. The number wraps after 2^32 tasks, when a late wake could at worst poll a
/// task once more than needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TaskRef {
    pub(crate) key: u32,
    pub(crate) id: u32,
}

/// The task being polled, and its waker's identity: an operation it polls with that waker waits with
/// the task's number instead of a clone of the waker (see [`TaskWake`]).
#[derive(Clone, Copy)]
pub(crate) struct CurrentTask {
    pub(crate) task: TaskRef,
    pub(crate) data: *const (),
    pub(crate) vtable: *const RawWakerVTable,
}

impl CurrentTask {
    #[inline]
    fn is_polled_with(&self, waker: &Waker) -> bool {
        std::ptr::eq(self.data, waker.data()) && std::ptr::eq(self.vtable, waker.vtable())
    }
}

/// How a waiting future is woken: through a clone of the waker it was polled with or, when that is
/// the waker of the loop's own task polling it, by queueing the task by its number (no clone, no
/// reference count, no atomic flag; a task queued twice is polled once more, which futures allow).
pub(crate) enum TaskWake {
    Waker(Waker),
    Local(TaskRef),
}

impl Reactor {
    /// How a future polled with `waker` is to be woken (see [`TaskWake`]).
    #[inline]
    pub(crate) fn task_wake(&self, waker: &Waker) -> TaskWake {
        match self.current_task.get() {
            Some(current) if current.is_polled_with(waker) => TaskWake::Local(current.task),
            _ => TaskWake::Waker(waker.clone()),
        }
    }

    /// Whether `wake` still wakes a future now polled with `waker`.
    #[inline]
    pub(crate) fn still_wakes(&self, wake: &TaskWake, waker: &Waker) -> bool {
        match wake {
            TaskWake::Waker(w) => w.will_wake(waker),
            TaskWake::Local(task) => self
                .current_task
                .get()
                .is_some_and(|c| c.task == *task && c.is_polled_with(waker)),
        }
    }

    /// Wakes a waiting future: a task of this loop goes on its run queue, behind what is queued.
    #[inline]
    pub(crate) fn wake_task(&self, wake: TaskWake) {
        match wake {
            TaskWake::Waker(waker) => waker.wake(),
            TaskWake::Local(task) => self.queue_task(task),
        }
    }

    /// Sets (or clears) the task being polled.
    #[inline]
    pub(crate) fn set_current_task(&self, current: Option<CurrentTask>) {
        self.current_task.set(current);
    }
}

//! Operation blocks: Boost.Asio's `operation` (and `reactor_op`) in Rust terms.
//!
//! Every callback operation, and every closure queued to run on the loop, lives in one block from
//! the moment it starts until its handler runs: a small [`Header`] (the ready queue's next pointer,
//! a function table, the sequence number the inline rule needs) followed by the job itself, written
//! in place. Waiter lines, the ready queue and io_uring's table hold thin pointers to blocks
//! ([`OpPtr`], [`JobPtr`]); the function table types the block again where it is tried, cancelled or
//! run. Blocks come from the loop's pool ([`pool`](super::pool)), and a finished block goes back to it
//! before its handler runs, so that the operation the handler starts next takes the same memory.
//!
//! Ownership is plain: a pointer owns its block; running it consumes the pointer, and dropping one
//! drops the job unrun (the loop is gone) and frees the block.

use std::alloc::Layout;
use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::NonNull;
use std::time::Duration;

use super::{Reactor, Token};
use crate::driver::uring::RingEntry;

/// What a block holds: run once when its turn comes.
pub(crate) trait Job: Sized + 'static {
    /// Runs the job; true when it was a handler (a posted closure, an operation's handler) rather
    /// than the loop's own bookkeeping (delivering a completion from another thread), which `run_one`
    /// and `poll` do not count.
    fn run(self, reactor: &Reactor) -> bool;
}

/// A callback operation while it waits in its direction's line or on the ring: what the reactor
/// asks of it besides running its handler (the other side of `op::callback`).
pub(crate) trait Waiting: Job {
    /// Whether its try may run under the borrow of the source table (it does not use the loop: a
    /// read, a write), so that [`retry_under_borrow`](Waiting::retry_under_borrow) applies.
    const TRIES_UNDER_TABLE: bool;
    /// Whether it is done by ring requests on the io_uring backend.
    const RING: bool;
    /// Tries again on `fd`, which the loop looked up in `token`'s source with the event that made
    /// its direction ready (`None` for a source without an fd), outside the table's borrow; true
    /// once finished (the result kept for [`Job::run`]).
    fn retry(&mut self, reactor: &Reactor, token: Token, fd: Option<RawFd>) -> bool;
    /// [`retry`](Waiting::retry) under the borrow of the table that found the source, on its `fd`
    /// (only when [`TRIES_UNDER_TABLE`](Waiting::TRIES_UNDER_TABLE)): true once finished, and what
    /// the syscall said, for the source to take in.
    fn retry_under_borrow(&mut self, fd: Option<BorrowedFd<'_>>) -> (bool, Attempt);
    /// Keeps `err` as its result (cancellation), unless it has finished already.
    fn cancel(&mut self, err: io::Error);
    /// The ring request for its next step on `fd`.
    fn prepare(&mut self, fd: RawFd) -> Option<RingEntry>;
    /// The kernel's answer to its request: whether it finished (or needs another request), and a
    /// back-off its direction is to wait before the next one.
    fn on_cqe(&mut self, res: i32) -> (bool, Option<Duration>);
}

/// What one syscall on a direction said (see `Source::after_attempt`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Attempt {
    /// The kernel said `EAGAIN`: the operation waits.
    pub(crate) would_block: bool,
    /// A short read or write: the direction is probably drained (a hint, see
    /// `Source::drain_hint_holds`).
    pub(crate) drained: bool,
    /// A back-off started (no try before it ends, event or not).
    pub(crate) backing_off: bool,
}

/// What every block starts with.
#[repr(C)]
pub(crate) struct Header {
    /// The block behind this one in the ready queue.
    next: Cell<Option<NonNull<Header>>>,
    vtable: &'static VTable,
    /// The loop's count of queued jobs when the operation started waiting (see
    /// [`Reactor::may_complete_here`]).
    seq: Cell<u32>,
    /// The operation's number, shifted left by one (0 for a plain job), so that a handle to it can
    /// find it in its line or on the ring (see `cancel`); in the low bit, whether the job counts as
    /// work for `run_until_done` until it has run (a callback operation that is not background),
    /// settled when it runs. One word for both keeps the header at three words.
    tag: u32,
}

impl Header {
    #[inline(always)]
    fn counted(&self) -> bool {
        self.tag & 1 != 0
    }
}

/// A block: the header, then the job in place.
#[repr(C)]
struct Block<T> {
    header: Header,
    body: T,
}

/// The function table of a block's type: Asio's `func_` in a table.
pub(crate) struct VTable {
    /// Reads the job out, gives the block back to the pool, runs the job.
    run: unsafe fn(NonNull<Header>, &Reactor) -> bool,
    /// Drops the job unrun and frees the block.
    drop: unsafe fn(NonNull<Header>),
    /// The rest only for operations ([`OpPtr`]): see [`Waiting`].
    retry: unsafe fn(NonNull<Header>, &Reactor, Token, Option<RawFd>) -> bool,
    retry_under_borrow: unsafe fn(NonNull<Header>, Option<BorrowedFd<'_>>) -> (bool, Attempt),
    cancel: unsafe fn(NonNull<Header>, io::Error),
    prepare: unsafe fn(NonNull<Header>, RawFd) -> Option<RingEntry>,
    on_cqe: unsafe fn(NonNull<Header>, i32) -> (bool, Option<Duration>),
    tries_under_table: bool,
    on_ring: bool,
}

/// The function tables of `T`.
struct Table<T>(PhantomData<T>);

impl<T: Job> Table<T> {
    const JOB: VTable = VTable {
        run: run::<T>,
        drop: drop_block::<T>,
        retry: not_an_op_retry,
        retry_under_borrow: not_an_op_retry_under_borrow,
        cancel: not_an_op_cancel,
        prepare: not_an_op_prepare,
        on_cqe: not_an_op_cqe,
        tries_under_table: false,
        on_ring: false,
    };
}

impl<T: Waiting> Table<T> {
    const OP: VTable = VTable {
        run: run::<T>,
        drop: drop_block::<T>,
        retry: retry::<T>,
        retry_under_borrow: retry_under_borrow::<T>,
        cancel: cancel::<T>,
        prepare: prepare::<T>,
        on_cqe: on_cqe::<T>,
        tries_under_table: T::TRIES_UNDER_TABLE,
        on_ring: T::RING,
    };
}

/// The body of the block at `header`.
///
/// # Safety
/// `header` must be the header of a live `Block<T>` (made by [`Reactor::alloc`] for this `T`), which
/// the caller owns for the lifetime it picks.
#[inline(always)]
unsafe fn body<'a, T>(header: NonNull<Header>) -> &'a mut T {
    // SAFETY: `Block<T>` is `repr(C)` with the header first, so the header's address is the block's;
    // the caller guarantees the block is a live `Block<T>` it owns.
    unsafe { &mut (*header.cast::<Block<T>>().as_ptr()).body }
}

/// `VTable::run` for `T`.
///
/// # Safety
/// `header` is a live `Block<T>` owned by the caller, who gives it up.
unsafe fn run<T: Job>(header: NonNull<Header>, reactor: &Reactor) -> bool {
    // The block goes back to the pool once the job has run (or unwound): until then nothing but
    // this function knows it, and its parts are moved out of it where they are used, not copied
    // out first.
    let _release = Release::<T> {
        reactor,
        header,
        _body: PhantomData,
    };
    let block = header.cast::<Block<T>>().as_ptr();
    // SAFETY: the caller owns the live block: its body is read out exactly once, and the block's
    // memory is only given back (by `_release`), never dropped again (the header needs no drop).
    let (counted, body) = unsafe { ((*block).header.counted(), std::ptr::read(&(*block).body)) };
    if counted {
        reactor.finish_work();
    }
    body.run(reactor)
}

/// Gives a run block's memory back to the pool when dropped.
struct Release<'a, T> {
    reactor: &'a Reactor,
    header: NonNull<Header>,
    _body: PhantomData<T>,
}

impl<T> Drop for Release<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        // SAFETY: the block was allocated with `Layout::new::<Block<T>>()` (see `Reactor::alloc`)
        // and its body was moved out: it holds no live value.
        unsafe {
            self.reactor
                .pool
                .put(self.header.cast(), Layout::new::<Block<T>>())
        };
    }
}

/// `VTable::drop` for `T`.
///
/// # Safety
/// `header` is a live `Block<T>` owned by the caller, who gives it up.
unsafe fn drop_block<T>(header: NonNull<Header>) {
    let block = header.cast::<Block<T>>().as_ptr();
    // SAFETY: the caller owns the live block, taken from a pool with `Layout::new::<Block<T>>()`:
    // dropped once, freed once.
    unsafe {
        std::ptr::drop_in_place(block);
        super::pool::free(header.cast(), Layout::new::<Block<T>>());
    }
}

/// # Safety
/// `header` is a live `Block<T>` borrowed for the call.
unsafe fn retry<T: Waiting>(
    header: NonNull<Header>,
    reactor: &Reactor,
    token: Token,
    fd: Option<RawFd>,
) -> bool {
    // SAFETY: passed on from the caller.
    unsafe { body::<T>(header) }.retry(reactor, token, fd)
}

/// # Safety
/// As for [`retry`].
unsafe fn retry_under_borrow<T: Waiting>(
    header: NonNull<Header>,
    fd: Option<BorrowedFd<'_>>,
) -> (bool, Attempt) {
    // SAFETY: passed on from the caller.
    unsafe { body::<T>(header) }.retry_under_borrow(fd)
}

/// # Safety
/// As for [`retry`].
unsafe fn cancel<T: Waiting>(header: NonNull<Header>, err: io::Error) {
    // SAFETY: passed on from the caller.
    unsafe { body::<T>(header) }.cancel(err)
}

/// # Safety
/// As for [`retry`].
unsafe fn prepare<T: Waiting>(header: NonNull<Header>, fd: RawFd) -> Option<RingEntry> {
    // SAFETY: passed on from the caller.
    unsafe { body::<T>(header) }.prepare(fd)
}

/// # Safety
/// As for [`retry`].
unsafe fn on_cqe<T: Waiting>(header: NonNull<Header>, res: i32) -> (bool, Option<Duration>) {
    // SAFETY: passed on from the caller.
    unsafe { body::<T>(header) }.on_cqe(res)
}

// A job that is not an operation is never in a line or on the ring: only an `OpPtr` calls these,
// and an `OpPtr` is made only from a `Waiting` block (`TypedBlock::into_op`).
fn not_an_op_retry(_: NonNull<Header>, _: &Reactor, _: Token, _: Option<RawFd>) -> bool {
    unreachable!("a plain job is never tried")
}
fn not_an_op_retry_under_borrow(_: NonNull<Header>, _: Option<BorrowedFd<'_>>) -> (bool, Attempt) {
    unreachable!("a plain job is never tried")
}
fn not_an_op_cancel(_: NonNull<Header>, _: io::Error) {
    unreachable!("a plain job is never cancelled")
}
fn not_an_op_prepare(_: NonNull<Header>, _: RawFd) -> Option<RingEntry> {
    unreachable!("a plain job is never a ring request")
}
fn not_an_op_cqe(_: NonNull<Header>, _: i32) -> (bool, Option<Duration>) {
    unreachable!("a plain job is never a ring request")
}

/// A block of a known type, just made: its job can still be reached as a `T`.
pub(crate) struct TypedBlock<T> {
    header: NonNull<Header>,
    _owns: PhantomData<T>,
}

impl<T: Job> TypedBlock<T> {
    /// The job, in place.
    #[inline(always)]
    pub(crate) fn body_mut(&mut self) -> &mut T {
        // SAFETY: `header` is the live `Block<T>` this pointer owns (made by `Reactor::alloc`).
        unsafe { body::<T>(self.header) }
    }

    /// The block as a job for the ready queue.
    #[inline(always)]
    pub(crate) fn into_job(self) -> JobPtr {
        let header = self.header;
        std::mem::forget(self);
        JobPtr(header)
    }
}

impl<T: Waiting> TypedBlock<T> {
    /// The block as an operation for a line or the ring. Its table is `Table::<T>::OP` (see
    /// [`Reactor::alloc_op`]).
    #[inline(always)]
    pub(crate) fn into_op(self) -> OpPtr {
        let header = self.header;
        std::mem::forget(self);
        OpPtr(header)
    }
}

impl<T> Drop for TypedBlock<T> {
    fn drop(&mut self) {
        // SAFETY: this pointer owns its live block, whose table is one of `T`'s.
        unsafe { (self.header.as_ref().vtable.drop)(self.header) }
    }
}

/// An owned block in the ready queue: a job to run.
pub(crate) struct JobPtr(NonNull<Header>);

impl JobPtr {
    /// Runs the job (see [`Job::run`]).
    #[inline(always)]
    pub(crate) fn run(self, reactor: &Reactor) -> bool {
        let header = self.0;
        std::mem::forget(self);
        // SAFETY: this pointer owned the live block, whose table is its type's; it is given up here.
        unsafe { (header.as_ref().vtable.run)(header, reactor) }
    }
}

impl Drop for JobPtr {
    fn drop(&mut self) {
        // SAFETY: this pointer owns its live block, whose table is its type's.
        unsafe { (self.0.as_ref().vtable.drop)(self.0) }
    }
}

/// An owned block of a callback operation: in its direction's line, on the ring, or being served.
pub(crate) struct OpPtr(NonNull<Header>);

impl OpPtr {
    #[inline(always)]
    fn vtable(&self) -> &'static VTable {
        // SAFETY: this pointer owns its live block.
        unsafe { self.0.as_ref().vtable }
    }

    /// The operation's number (see [`Reactor::alloc_op`]).
    #[inline(always)]
    pub(crate) fn id(&self) -> u32 {
        // SAFETY: this pointer owns its live block.
        unsafe { self.0.as_ref().tag >> 1 }
    }

    /// The loop's count of queued jobs when the operation started waiting.
    #[inline(always)]
    pub(crate) fn seq(&self) -> u32 {
        // SAFETY: this pointer owns its live block.
        unsafe { self.0.as_ref().seq.get() }
    }

    /// Whether its try may run under the borrow of the source table (see
    /// [`Waiting::TRIES_UNDER_TABLE`]).
    #[inline(always)]
    pub(crate) fn tries_under_table(&self) -> bool {
        self.vtable().tries_under_table
    }

    /// See [`Waiting::retry`].
    #[inline(always)]
    pub(crate) fn retry(&mut self, reactor: &Reactor, token: Token, fd: Option<RawFd>) -> bool {
        // SAFETY: the table is the block's own, and the block is live and borrowed for the call.
        unsafe { (self.vtable().retry)(self.0, reactor, token, fd) }
    }

    /// See [`Waiting::retry_under_borrow`].
    #[inline(always)]
    pub(crate) fn retry_under_borrow(&mut self, fd: Option<BorrowedFd<'_>>) -> (bool, Attempt) {
        // SAFETY: as for `retry`.
        unsafe { (self.vtable().retry_under_borrow)(self.0, fd) }
    }

    /// See [`Waiting::cancel`].
    pub(crate) fn cancel(&mut self, err: io::Error) {
        // SAFETY: as for `retry`.
        unsafe { (self.vtable().cancel)(self.0, err) }
    }

    /// Whether it is done by ring requests on the io_uring backend.
    pub(crate) fn on_ring(&self) -> bool {
        self.vtable().on_ring
    }

    /// See [`Waiting::prepare`].
    pub(crate) fn prepare(&mut self, fd: RawFd) -> Option<RingEntry> {
        // SAFETY: as for `retry`.
        unsafe { (self.vtable().prepare)(self.0, fd) }
    }

    /// See [`Waiting::on_cqe`].
    pub(crate) fn on_cqe(&mut self, res: i32) -> (bool, Option<Duration>) {
        // SAFETY: as for `retry`.
        unsafe { (self.vtable().on_cqe)(self.0, res) }
    }

    /// The operation as a job for the ready queue (finished or cancelled: its handler is to run).
    #[inline(always)]
    pub(crate) fn into_job(self) -> JobPtr {
        let header = self.0;
        std::mem::forget(self);
        JobPtr(header)
    }

    /// Runs the operation's handler right here (see [`Reactor::may_complete_here`]).
    #[inline(always)]
    pub(crate) fn complete(self, reactor: &Reactor) {
        self.into_job().run(reactor);
    }
}

impl Drop for OpPtr {
    fn drop(&mut self) {
        // SAFETY: this pointer owns its live block, whose table is its type's.
        unsafe { (self.0.as_ref().vtable.drop)(self.0) }
    }
}

impl Reactor {
    /// Writes `body` into a block (a recycled one when the pool has its layout), stamped with `seq`;
    /// `counted` work (see [`Header`]) is settled when it runs.
    #[inline(always)]
    pub(crate) fn alloc<T: Job>(&self, body: T, seq: u32, counted: bool) -> TypedBlock<T> {
        self.alloc_with(body, seq, u32::from(counted), &Table::<T>::JOB)
    }

    /// [`alloc`](Reactor::alloc) for an operation that may wait in a line or on the ring, numbered
    /// `id` (its handle's way to find it: see [`Reactor::next_op_id`]; only the low 31 bits count).
    #[inline(always)]
    pub(crate) fn alloc_op<T: Waiting>(
        &self,
        body: T,
        seq: u32,
        counted: bool,
        id: u32,
    ) -> TypedBlock<T> {
        self.alloc_with(body, seq, id << 1 | u32::from(counted), &Table::<T>::OP)
    }

    #[inline(always)]
    fn alloc_with<T: Job>(
        &self,
        body: T,
        seq: u32,
        tag: u32,
        vtable: &'static VTable,
    ) -> TypedBlock<T> {
        let memory = self.pool.take(Layout::new::<Block<T>>());
        let block = memory.cast::<Block<T>>();
        // SAFETY: the pool's block is large and aligned enough for a `Block<T>` (`take`'s promise)
        // and holds no value: writing one overwrites nothing.
        unsafe {
            block.as_ptr().write(Block {
                header: Header {
                    next: Cell::new(None),
                    vtable,
                    seq: Cell::new(seq),
                    tag,
                },
                body,
            })
        };
        TypedBlock {
            header: block.cast(),
            _owns: PhantomData,
        }
    }
}

/// A posted closure.
pub(crate) struct Call<F>(pub(crate) F);

impl<F: FnOnce() + 'static> Job for Call<F> {
    #[inline]
    fn run(self, _reactor: &Reactor) -> bool {
        (self.0)();
        true
    }
}

/// The ready queue: jobs in the order they were queued, linked through their headers.
#[derive(Default)]
pub(crate) struct JobQueue {
    head: Cell<Option<NonNull<Header>>>,
    tail: Cell<Option<NonNull<Header>>>,
    len: Cell<usize>,
}

impl JobQueue {
    #[inline(always)]
    pub(crate) fn push(&self, job: JobPtr) {
        let header = job.0;
        std::mem::forget(job);
        match self.tail.replace(Some(header)) {
            // SAFETY: the tail is a live block the queue owns; only the queue touches its `next`.
            Some(tail) => unsafe { tail.as_ref() }.next.set(Some(header)),
            None => self.head.set(Some(header)),
        }
        self.len.set(self.len.get() + 1);
    }

    #[inline(always)]
    pub(crate) fn pop(&self) -> Option<JobPtr> {
        let header = self.head.get()?;
        // SAFETY: the head is a live block the queue owns; it is handed out, unlinked, below.
        let next = unsafe { header.as_ref() }.next.take();
        self.head.set(next);
        if next.is_none() {
            self.tail.set(None);
        }
        self.len.set(self.len.get() - 1);
        Some(JobPtr(header))
    }

    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.get().is_none()
    }

    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }
}

impl Drop for JobQueue {
    fn drop(&mut self) {
        while let Some(job) = self.pop() {
            drop(job);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn reactor() -> Reactor {
        Reactor::new(crate::Backend::Epoll).expect("reactor")
    }

    #[test]
    fn jobs_run_in_order_and_their_blocks_are_recycled() {
        let reactor = reactor();
        let log = Rc::new(std::cell::RefCell::new(Vec::new()));
        for i in 0..3 {
            let log = log.clone();
            reactor.post(move || log.borrow_mut().push(i));
        }
        assert_eq!(reactor.queued_len(), 3);
        while let Some(job) = reactor.pop_job() {
            assert!(job.run(&reactor));
        }
        assert_eq!(*log.borrow(), [0, 1, 2]);
        // The three blocks are in the pool: the next job of the same layout takes one of them.
        let block = reactor.alloc(Call(|| ()), 0, false).into_job();
        assert!(block.run(&reactor));
    }

    #[test]
    fn unrun_jobs_are_dropped_not_run() {
        let reactor = reactor();
        let dropped = Rc::new(Cell::new(0));
        struct Counted(Rc<Cell<u32>>);
        impl Drop for Counted {
            fn drop(&mut self) {
                self.0.set(self.0.get() + 1);
            }
        }
        for _ in 0..2 {
            let guard = Counted(dropped.clone());
            reactor.post(move || {
                let _keep = &guard;
                panic!("must not run");
            });
        }
        drop(reactor);
        assert_eq!(dropped.get(), 2);
    }
}

//! The io_uring backend: operations submitted to the ring, readiness through multishot `POLL_ADD`.
//!
//! Reads and writes, vectored or not, are requests on the ring (`RECV`, `SEND`, `RECVMSG`,
//! `SENDMSG`): the loop queues one per operation step, tagged [`RING_OP`] with the operation's key,
//! and hands the kernel's answers back through [`UringDriver::pop_completion`]. Every request queued
//! during a turn of the loop goes to the kernel in the same `io_uring_enter` that waits for
//! completions, so a turn costs one syscall however many operations it started or finished.
//!
//! Operations that wait for readiness (accepts, connects, datagrams, fd passing, an `IoDevice`'s
//! `readable()`) use one multishot poll request per fd (the twin of an edge-triggered epoll
//! registration), armed the first time something waits on the fd and removed with `POLL_REMOVE` when
//! it is closed.
//!
//! The kernel must allow io_uring (Linux 5.13 or later for multishot poll, not disabled by
//! `kernel.io_uring_disabled` or a seccomp filter): otherwise creating the loop fails with a clear
//! `Unsupported` error, and `AIO_BACKEND=epoll` is the fallback.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::Duration;

use io_uring::{IoUring, cqueue, opcode, types};

use super::{Driver, Event, Interest, Token, event, waited};

/// Entries in the submission queue (the completion queue is twice as large).
const RING_ENTRIES: u32 = 4096;

/// The user data of requests whose completion carries no event (poll removals, cancellations).
const NO_EVENT: u64 = u64::MAX - 7;

/// The tag of an operation request's user data; the low 32 bits are the operation's key. Source
/// tokens never carry it (generations stay below 2^31), and the two special values above are
/// checked first.
pub(crate) const RING_OP: u64 = 1 << 63;

/// With [`RING_OP`]: the answer to a cancellation of the operation whose key is in the low bits.
const CANCEL: u64 = 1 << 62;

/// How long closing a socket waits, at most, for the kernel to let go of its operations.
const CANCEL_WAIT: Duration = Duration::from_secs(2);

/// A request on the io_uring ring that performs one step of one of aio's own operations (see
/// [`Operation::prepare`](crate::op::Operation::prepare)); the loop tags it with the operation's
/// key. It cannot be made outside aio: it points the kernel at memory.
pub struct RingEntry(pub(crate) io_uring::squeue::Entry);

/// One registered fd: its token, and whether its multishot poll request is armed.
struct Registration {
    token: u64,
    armed: bool,
}

const POLL_IN: u32 = libc::POLLIN as u32;
const POLL_PRI: u32 = libc::POLLPRI as u32;
const POLL_OUT: u32 = libc::POLLOUT as u32;
const POLL_RDHUP: u32 = libc::POLLRDHUP as u32;

pub(crate) struct UringDriver {
    ring: IoUring,
    /// Registered fds and their tokens: to arm a poll request when something first waits for
    /// readiness, to re-arm a multishot poll the kernel ended, and to find the request to remove when
    /// the fd is deregistered.
    registered: HashMap<RawFd, Registration>,
    /// Events reaped while waiting for a removal, handed out by the next `wait`.
    stash: Vec<Event>,
    /// Operation completions (key, result) reaped and not yet taken by the loop.
    completions: VecDeque<(u32, i32)>,
    /// Answers to cancellations (key, result) since `cancel_and_wait` last looked.
    cancel_answers: Vec<(u32, i32)>,
}

impl UringDriver {
    pub(crate) fn new(wake_fd: BorrowedFd<'_>) -> io::Result<UringDriver> {
        // Only the loop's thread submits, and completions are wanted only when it asks for them:
        // with both flags the kernel runs completion work in our io_uring_enter instead of
        // interrupting the thread (Linux 6.1). Older kernels refuse the flags: a plain ring then.
        // The task-run flag tells a poll of the ring (a zero timeout) that completions are pending
        // in the kernel, so that it enters to collect them and skips the syscall otherwise.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(RING_ENTRIES)
            .or_else(|_| IoUring::new(RING_ENTRIES))
            .map_err(|e| {
            io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "io_uring is not available here ({e}); use AIO_BACKEND=epoll (or poll) instead"
                ),
            )
        })?;
        let mut driver = UringDriver {
            ring,
            registered: HashMap::new(),
            stash: Vec::new(),
            completions: VecDeque::new(),
            cancel_answers: Vec::new(),
        };
        driver.register(wake_fd, Token::WAKE)?;
        driver.arm_poll(wake_fd.as_raw_fd());
        Ok(driver)
    }

    /// Arms `fd`'s multishot poll request if it is not armed yet: something waits for readiness on
    /// it. The request reports the fd's state at once if it is ready already, so nothing that
    /// happened before is missed.
    fn arm_poll(&mut self, raw: RawFd) {
        let Some(reg) = self.registered.get_mut(&raw) else {
            return;
        };
        if reg.armed {
            return;
        }
        reg.armed = true;
        let token = reg.token;
        // A failure (no room even after submitting) leaves it unarmed: the next wait tries again.
        if self.arm(raw, token).is_err() {
            if let Some(reg) = self.registered.get_mut(&raw) {
                reg.armed = false;
            }
        }
    }

    /// Queues one step of the operation `key`. Should the ring refuse it, the operation completes
    /// with that error through the usual path.
    pub(crate) fn push_op(&mut self, entry: RingEntry, key: u32) {
        let entry = entry.0.user_data(RING_OP | u64::from(key));
        if let Err(e) = self.push(&entry) {
            let errno = e.raw_os_error().unwrap_or(libc::EIO);
            self.completions.push_back((key, -errno));
        }
    }

    /// Asks the kernel to cancel the operation `key`; it completes (with `ECANCELED`, or with its
    /// result if it finished first) through the usual path.
    pub(crate) fn cancel_op(&mut self, key: u32) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(RING_OP | u64::from(key))
            .build()
            .user_data(RING_OP | CANCEL | u64::from(key));
        self.push(&entry)
    }

    /// Cancels the operations `keys` and waits until the kernel has let go of each of them (their
    /// completions are kept for the loop), so that nothing of the kernel's still refers to their
    /// buffers or files. Returns false if some did not answer within [`CANCEL_WAIT`].
    pub(crate) fn cancel_and_wait(&mut self, keys: &[u32]) -> bool {
        self.cancel_answers.clear();
        let mut pending: Vec<u32> = keys
            .iter()
            .copied()
            .filter(|k| !self.completions.iter().any(|(d, _)| d == k))
            .collect();
        for &key in &pending {
            if self.cancel_op(key).is_err() {
                return false;
            }
        }
        let deadline = std::time::Instant::now() + CANCEL_WAIT;
        while !pending.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            let ts = types::Timespec::from(left.min(Duration::from_millis(50)));
            let args = types::SubmitArgs::new().timespec(&ts);
            if waited(
                self.ring.submitter().submit_with_args(1, &args),
                &[libc::ETIME],
            )
            .is_err()
            {
                return false;
            }
            let mut stash = std::mem::take(&mut self.stash);
            self.reap(&mut stash, None);
            self.stash = stash;
            // Let go: its completion was reaped, or the kernel no longer knew it (`ENOENT`: it had
            // completed before, and its completion was reaped already).
            let answers = std::mem::take(&mut self.cancel_answers);
            pending.retain(|k| {
                !self.completions.iter().any(|(d, _)| d == k)
                    && !answers.iter().any(|(d, r)| d == k && *r == -libc::ENOENT)
            });
        }
        true
    }

    /// The next operation completion reaped: its key and the kernel's result.
    pub(crate) fn pop_completion(&mut self) -> Option<(u32, i32)> {
        self.completions.pop_front()
    }
    fn arm(&mut self, fd: RawFd, token: u64) -> io::Result<()> {
        let entry = opcode::PollAdd::new(types::Fd(fd), POLL_IN | POLL_PRI | POLL_OUT | POLL_RDHUP)
            .multi(true)
            .build()
            .user_data(token);
        self.push(&entry)
    }

    fn push(&mut self, entry: &io_uring::squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: poll, removal and cancel requests reference no memory of ours (only fd numbers,
            // flags and user data). An operation's request points into memory the operation owns
            // (its buffer, a boxed address): the operation stays in the loop's table of operations in
            // flight, unmoved on the heap, until the kernel has answered (see `op::ring`), and the
            // loop waits for those answers before it frees them on close or shutdown.
            if unsafe { self.ring.submission().push(entry) }.is_ok() {
                return Ok(());
            }
            // The queue is full: hand what is queued to the kernel to make room.
            self.ring.submit()?;
        }
    }
}

impl Driver for UringDriver {
    fn register(&mut self, fd: BorrowedFd<'_>, token: Token) -> io::Result<()> {
        let raw = fd.as_raw_fd();
        if self.registered.contains_key(&raw) {
            return Err(io::Error::from_raw_os_error(libc::EEXIST));
        }
        // Nothing goes to the kernel yet: the poll request is armed when something first waits for
        // readiness (`watch`); operations on the ring need none.
        self.registered.insert(
            raw,
            Registration {
                token: token.0,
                armed: false,
            },
        );
        Ok(())
    }

    fn deregister(&mut self, fd: BorrowedFd<'_>) -> io::Result<()> {
        let Some(reg) = self.registered.remove(&fd.as_raw_fd()) else {
            return Ok(());
        };
        // Requests queued for this fd number must reach the kernel while the number still names
        // this file: the caller closes it next, and a new file may get the number.
        if !self.ring.submission().is_empty() {
            self.ring.submit()?;
        }
        if !reg.armed {
            return Ok(());
        }
        let token = reg.token;
        let remove = opcode::PollRemove::new(token).build().user_data(NO_EVENT);
        self.push(&remove)?;
        // A poll request holds a reference to the file: until its last completion is reaped, closing
        // the fd would not close the socket (no FIN would be sent). Wait for it here, keeping the
        // other completions for the next `wait`. It comes at once, the removal cancelling the
        // request; a removal that meets the request while it is posting an event (`EALREADY`) is
        // tried again. Bounded: a request that cannot be found (`ENOENT`) has ended already.
        for _ in 0..1000 {
            waited(self.ring.submit_and_wait(1), &[])?;
            let mut stash = std::mem::take(&mut self.stash);
            let (ended, removal) = self.reap(&mut stash, Some(token));
            self.stash = stash;
            match removal {
                _ if ended => return Ok(()),
                Some(res) if res == -libc::ENOENT => return Ok(()),
                Some(res) if res == -libc::EALREADY => self.push(&remove)?,
                _ => {}
            }
        }
        Err(io::Error::other(format!(
            "io_uring: the poll request of token {token:#x} could not be removed"
        )))
    }

    /// Both directions are reported by the fd's one poll request.
    fn watch(&mut self, fd: BorrowedFd<'_>, _token: Token, _interest: Interest) {
        self.arm_poll(fd.as_raw_fd());
    }

    fn wait(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()> {
        // Events stashed, and completions reaped, while a close waited for the kernel are ready now:
        // do not block.
        let timeout = if self.stash.is_empty() && self.completions.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let submitted = match timeout {
            // A poll of the ring that has nothing to submit and no completion work pending in the
            // kernel needs no syscall: completions are read from shared memory below.
            Some(d)
                if d.is_zero()
                    && self.ring.submission().is_empty()
                    && !self.ring.submission().taskrun()
                    && !self.ring.submission().cq_overflow() =>
            {
                Ok(0)
            }
            Some(d) if d.is_zero() => self.ring.submit(),
            Some(d) => {
                let ts = types::Timespec::from(d.min(Duration::from_secs(86_400)));
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        waited(submitted, &[libc::ETIME, libc::EBUSY])?;
        events.append(&mut self.stash);
        self.reap(events, None);
        // Answers to cancellations matter only while a close waits for them.
        self.cancel_answers.clear();
        Ok(())
    }
}

impl UringDriver {
    /// Turns the completions in the queue into events; re-arms multishot polls the kernel ended.
    /// Returns whether the last completion of the request `removed` (being deregistered) was seen,
    /// and the result of a poll removal if one completed.
    fn reap(&mut self, events: &mut Vec<Event>, removed: Option<u64>) -> (bool, Option<i32>) {
        let mut ended = false;
        let mut removal = None;
        let mut rearm = Vec::new();
        for cqe in self.ring.completion() {
            let token = cqe.user_data();
            let res = cqe.result();
            if token == NO_EVENT {
                removal = Some(res);
                continue;
            }
            if token & RING_OP != 0 && token != Token::WAKE.0 {
                let key = (token & 0xffff_ffff) as u32;
                if token & CANCEL != 0 {
                    self.cancel_answers.push((key, res));
                } else {
                    self.completions.push_back((key, res));
                }
                continue;
            }
            let last = !cqueue::more(cqe.flags());
            if Some(token) == removed {
                ended |= last;
                continue;
            }
            if last {
                rearm.push(token);
            }
            if res < 0 {
                // -ECANCELED after a removal, or the fd went away: no readiness to report.
                continue;
            }
            let revents = res as u32;
            events.push(event(Token(token), revents));
        }
        // A multishot poll the kernel ended (e.g. under memory pressure) is re-armed while its fd is
        // still registered under the same token.
        for token in rearm {
            let fd = self
                .registered
                .iter()
                .find(|(_, r)| r.token == token && r.armed)
                .map(|(fd, _)| *fd);
            if let Some(fd) = fd {
                // A failure to re-arm leaves the fd unwatched; the next registration retries.
                let _ = self.arm(fd, token);
            }
        }
        (ended, removal)
    }
}

//! [`SignalSet`]: waiting for Unix signals as an operation (Asio's `signal_set`).
//!
//! Built on `signal-hook`: its handler writes to a socket pair whose read end the loop watches, so the
//! signal handler itself does nothing but an async-signal-safe `send`. Several sets, in one loop or in
//! several, may watch the same signal: each is told. A signal that arrives while no wait is pending is
//! kept (once per signal number) for the next wait.
//!
//! A signal wait usually should not keep a loop alive: mark it [`background`](crate::Op::background)
//! and [`run_until_done`](crate::IoService::run_until_done) returns once the real work is done.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::rc::Rc;
use std::task::Poll;

use signal_hook::iterator::backend::{Handle as HookHandle, SignalDelivery};
use signal_hook::iterator::exfiltrator::SignalOnly;

use crate::LocalHandle;
use crate::driver::Token;
use crate::op::{Cx, Interest, Op, Operation};
use crate::reactor::FdSlot;

pub use signal_hook::consts::signal::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};

struct SignalState {
    delivery: SignalDelivery<UnixStream, SignalOnly>,
    pending: VecDeque<i32>,
}

/// A set of signals to wait for, bound to a loop.
///
/// ```
/// use aio::{IoService, SignalSet, signal::SIGUSR1};
/// let svc = IoService::new()?;
/// let signals = SignalSet::new(&svc, &[SIGUSR1])?;
/// let wait = signals.wait();
/// rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::USR1)?;
/// assert_eq!(svc.block_on(wait)?, SIGUSR1);
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct SignalSet {
    svc: LocalHandle,
    token: Token,
    state: Rc<RefCell<SignalState>>,
    hook: HookHandle,
}

impl SignalSet {
    /// Starts catching `signals` (e.g. `SIGINT`, `SIGTERM`) for this set.
    ///
    /// # Errors
    /// `InvalidInput` for a signal that cannot be caught (`SIGKILL`, `SIGSTOP`, `SIGSEGV`...) or an
    /// unknown number; what creating the socket pair or registering reports.
    pub fn new(svc: &LocalHandle, signals: &[i32]) -> io::Result<SignalSet> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let watched: OwnedFd = read.try_clone()?.into();
        let delivery =
            SignalDelivery::with_pipe(read, write, SignalOnly, std::iter::empty::<i32>())?;
        let hook = delivery.handle();
        let token = svc.reactor().add_source(FdSlot::Owned(watched))?;
        let set = SignalSet {
            svc: svc.clone(),
            token,
            state: Rc::new(RefCell::new(SignalState {
                delivery,
                pending: VecDeque::new(),
            })),
            hook,
        };
        for &signal in signals {
            set.add(signal)?;
        }
        Ok(set)
    }

    /// Adds a signal to the set.
    ///
    /// # Errors
    /// `InvalidInput` for a signal that cannot be caught or an unknown number.
    pub fn add(&self, signal: i32) -> io::Result<()> {
        // signal-hook indexes a table by the number and panics outside it, poisoning a lock that its
        // drop then unwraps: an abort. Refuse what is not a signal number before it gets there.
        if !(1..=libc::SIGRTMAX()).contains(&signal) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{signal} is not a signal number"),
            ));
        }
        if signal_hook::consts::FORBIDDEN.contains(&signal) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("signal {signal} cannot be caught"),
            ));
        }
        self.hook.add_signal(signal).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot catch signal {signal}: {e}"),
            )
        })
    }

    /// Completes with the number of a signal that arrived (one kept from before, if any).
    pub fn wait(&self) -> Op<SignalWait> {
        Op::new(
            self.svc.reactor(),
            self.token,
            SignalWait {
                state: self.state.clone(),
            },
        )
    }

    /// Completes pending waits with `ECANCELED`; signals keep being caught.
    pub fn cancel(&self) {
        self.svc.reactor().cancel_source(self.token);
    }

    /// The loop this set belongs to.
    pub fn service(&self) -> &LocalHandle {
        &self.svc
    }
}

impl Drop for SignalSet {
    fn drop(&mut self) {
        // Stops delivery to this set; the process keeps signal-hook's handler (other sets may need it).
        self.hook.close();
        drop(self.svc.reactor().remove_source(self.token));
    }
}

impl std::fmt::Debug for SignalSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalSet").finish_non_exhaustive()
    }
}

/// A wait for one signal of a [`SignalSet`]: its number.
pub struct SignalWait {
    state: Rc<RefCell<SignalState>>,
}

impl std::fmt::Debug for SignalWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalWait").finish_non_exhaustive()
    }
}

impl Operation for SignalWait {
    type Output = io::Result<i32>;
    type Value = i32;

    fn interest(&self) -> Interest {
        Interest::Read
    }

    fn attempt(&mut self, cx: &mut Cx<'_>) -> Poll<io::Result<Self::Value>> {
        let signal = {
            let mut state = self.state.borrow_mut();
            if state.pending.is_empty() {
                let arrived: Vec<i32> = state.delivery.pending().collect();
                state.pending.extend(arrived);
            }
            state.pending.pop_front()
        };
        match signal {
            Some(signal) => Poll::Ready(Ok(signal)),
            None => {
                // The socket was drained: wait for the next byte.
                cx.mark_drained();
                Poll::Pending
            }
        }
    }

    fn finish(self, res: io::Result<Self::Value>) -> Self::Output {
        res
    }
}

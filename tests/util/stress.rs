//! Helpers for the `stress_*` tests (`util::stress`): forked children bounded by a deadline, process
//! counters (open fds, the fd limit, resident memory), and a bounded run of a loop. The tests
//! themselves are `matrix_test!`s with a longer watchdog (`matrix_test!(name, SECS, |svc| ...)`).
//!
//! Every stress test prints what it counted with `eprintln!` (`cargo test --test integration --
//! --nocapture stress_x::` shows it; `util::in_child` relays a child process's stderr).

#![allow(dead_code)]

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use aio::{DeadlineTimer, IoService};

/// How many fds this process has open (`/proc/self/fd`, not counting the directory being read).
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .count()
        .saturating_sub(1)
}

/// The open fds by number, with what they point to (for a readable leak report).
pub fn fd_table() -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir("/proc/self/fd")
        .expect("reading /proc/self/fd")
        .filter_map(|e| {
            let e = e.ok()?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

/// Raises the soft `RLIMIT_NOFILE` to at least `want` (and the hard limit too, when privileged and
/// needed). Returns the new soft limit, or why it cannot be done.
pub fn raise_nofile(want: u64) -> Result<u64, String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let old = getrlimit(Resource::Nofile);
    let soft = old.current.unwrap_or(u64::MAX);
    if soft >= want {
        return Ok(soft);
    }
    let hard = old.maximum.unwrap_or(u64::MAX);
    let maximum = if hard >= want {
        old.maximum
    } else {
        Some(want)
    };
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum,
        },
    )
    .map_err(|e| {
        format!("RLIMIT_NOFILE is {soft} (hard {hard}); raising it to {want} failed: {e}")
    })?;
    Ok(want)
}

/// Lowers the soft `RLIMIT_NOFILE` to `limit`, keeping the hard limit.
pub fn lower_nofile(limit: u64) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let old = getrlimit(Resource::Nofile);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(limit),
            maximum: old.maximum,
        },
    )
    .expect("lowering RLIMIT_NOFILE");
}

/// The resident set size of this process, in bytes (`VmRSS` of `/proc/self/status`).
pub fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").expect("reading /proc/self/status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

/// A process made by [`fork`]: its pid, and the read end of a pipe whose only write end the child
/// holds, so that it becomes readable (end of file) when the child exits. (A pidfd would do the
/// same, but valgrind does not know `pidfd_open`.)
pub struct Child {
    pub pid: i32,
    exited: OwnedFd,
}

/// Forks; the child runs `f` and leaves with `libc::_exit`: status 0 if `f` returned `Ok`, 1 with the
/// message on stderr if it returned `Err`, 101 if it panicked. Nothing of the parent's is dropped or
/// unwound in the child (an inherited loop's objects are left alone), and no exit handler runs. The
/// child is killed if the thread that forked it ends first.
pub fn fork(name: &str, f: impl FnOnce() -> Result<(), String>) -> Child {
    let parent = std::process::id() as i32;
    let (exited, alive) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("pipe");
    // SAFETY: fork is called from a test thread; the child only runs `f` (which builds what it needs
    // afresh: loops, sockets) and `_exit`s, never returning into the parent's frames.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // Die with the thread that forked us (a failed test must not leave clients running, nor
        // holding the pipes its parent test process reads until EOF).
        // SAFETY: prctl(PR_SET_PDEATHSIG) and getppid only set and read this process's attributes;
        // _exit ends it at once.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(102);
            }
        }
        let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
            Ok(Ok(())) => 0,
            Ok(Err(msg)) => {
                eprintln!("forked child {name} failed: {msg}");
                1
            }
            Err(_) => 101,
        };
        // SAFETY: `_exit` ends the process at once, without running the parent's destructors or
        // atexit handlers in the child.
        unsafe { libc::_exit(code) };
    }
    // Only the child holds the write end now: it closes when the child exits.
    drop(alive);
    Child { pid, exited }
}

impl Child {
    /// An fd that becomes readable once the child has exited (to watch it from a loop with
    /// `IoDevice`).
    pub fn exited_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.exited.as_fd()
    }

    /// Waits for the child until `deadline`, then reaps it; kills it (SIGKILL) if it is still
    /// running at the deadline. Returns its exit status, or a description of how it ended.
    pub fn wait(self, deadline: Instant) -> Result<i32, String> {
        use rustix::event::{PollFd, PollFlags, poll};
        let left = deadline.saturating_duration_since(Instant::now());
        let ts = rustix::time::Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: left.subsec_nanos() as _,
        };
        let mut fds = [PollFd::new(&self.exited, PollFlags::IN)];
        let exited = loop {
            match poll(&mut fds, Some(&ts)) {
                Ok(n) => break n > 0,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => panic!("poll on a child's exit pipe: {e}"),
            }
        };
        if !exited {
            // SAFETY: kill only sends a signal to our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
        let mut status = 0;
        // SAFETY: waitpid writes the status of our own child into `status`.
        let reaped = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        assert_eq!(reaped, self.pid, "waitpid");
        if !exited {
            return Err(format!(
                "child {} still running at the deadline: killed",
                self.pid
            ));
        }
        if libc::WIFEXITED(status) {
            Ok(libc::WEXITSTATUS(status))
        } else {
            Err(format!(
                "child {} killed by signal {}",
                self.pid,
                libc::WTERMSIG(status)
            ))
        }
    }

    /// Waits as [`wait`](Child::wait) and requires exit status 0.
    #[track_caller]
    pub fn join(self, deadline: Instant) {
        let pid = self.pid;
        match self.wait(deadline) {
            Ok(0) => {}
            Ok(code) => panic!("child {pid} exited with status {code}"),
            Err(e) => panic!("{e}"),
        }
    }
}

/// Runs `svc` (after a `restart`) until `done()` holds, at most `limit` by the loop's own timer;
/// panics with `what` otherwise.
pub fn run_until(svc: &IoService, limit: Duration, what: &str, done: impl Fn() -> bool) {
    svc.restart();
    let deadline = DeadlineTimer::new(svc).unwrap();
    deadline.expires_after(limit);
    let expired = std::rc::Rc::new(std::cell::Cell::new(false));
    deadline.wait().then({
        let expired = expired.clone();
        move |res| expired.set(res.is_ok())
    });
    while !done() {
        assert!(!expired.get(), "{what}: not done after {limit:?}");
        svc.run_one().unwrap();
    }
}

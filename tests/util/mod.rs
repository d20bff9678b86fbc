//! Shared helpers for the integration tests: the backend matrix, a watchdog so that no test can
//! hang, connected socket pairs over every transport, child processes for tests that change
//! process-wide state, and small tools (a deterministic byte pattern, drop counters, a counting
//! waker).
//!
//! Every test module writes its tests as `matrix_test!(name, |svc| { ... });` (the macros are in
//! scope in every module: `util` is declared first in each binary's `main.rs`), which makes one
//! `#[test]` per backend: `module::name::epoll`, `module::name::poll`, `module::name::uring`.
//! `matrix_covers_every_backend` (in `service.rs`) fails if `Backend::all()` grows a backend the
//! macro does not generate: a new backend is added to `MATRIX` and the macro together.

#![allow(dead_code)]

pub mod stress;

use std::cell::{Cell, RefCell};
use std::io;
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Command;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use aio::{Backend, Endpoint, IoService, StreamSocket};

/// The backends the matrix generates a test for (one `#[test]` function each).
pub const MATRIX: &[&str] = &["epoll", "poll", "uring"];

/// How long any one test may run before the watchdog aborts the process.
pub const WATCHDOG: Duration = Duration::from_secs(20);

/// One test body per backend: `matrix_test!(name, |svc| { ... })` gives `name::epoll`,
/// `name::poll` and `name::uring`, each running the body on a fresh `IoService` of that backend under
/// a watchdog of [`WATCHDOG`]. With a number of seconds before the body,
/// `matrix_test!(name, 60, |svc| { ... })`, the watchdog allows that long instead (the stress tests).
#[macro_export]
macro_rules! matrix_test {
    ($(#[$attr:meta])* $name:ident, |$svc:ident| $body:block) => {
        $crate::matrix_test!($(#[$attr])* $name, $crate::util::WATCHDOG.as_secs(), |$svc| $body);
    };
    ($(#[$attr:meta])* $name:ident, $secs:expr, |$svc:ident| $body:block) => {
        $(#[$attr])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[allow(unused_variables)]
            fn body($svc: &::aio::IoService) $body

            #[test]
            fn epoll() {
                $crate::util::run_on("epoll", module_path!(), $secs, body);
            }

            #[test]
            fn poll() {
                $crate::util::run_on("poll", module_path!(), $secs, body);
            }

            #[test]
            fn uring() {
                $crate::util::run_on("uring", module_path!(), $secs, body);
            }
        }
    };
}

/// A plain (single) test under the watchdog: `guarded_test!(name, { ... })`.
#[macro_export]
macro_rules! guarded_test {
    ($(#[$attr:meta])* $name:ident, $body:block) => {
        $(#[$attr])*
        #[test]
        fn $name() {
            let test = $crate::util::test_name(module_path!(), stringify!($name));
            let _guard = $crate::util::Watchdog::new(&test);
            $crate::util::set_current_test(&test);
            $body
        }
    };
}

thread_local! {
    static CURRENT_TEST: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Records the running test's full name (as `--exact` expects it) for [`in_child`].
pub fn set_current_test(name: &str) {
    CURRENT_TEST.with(|c| *c.borrow_mut() = name.to_owned());
}

/// The running test's full name.
pub fn current_test() -> String {
    CURRENT_TEST.with(|c| c.borrow().clone())
}

/// The backend called `name`, if this build has it.
pub fn backend(name: &str) -> Option<Backend> {
    Backend::all().iter().copied().find(|b| b.name() == name)
}

/// The full name of the test `name` whose module path (`module_path!()`) is `module`: the path that
/// libtest prints and `--exact` expects, that is without the crate's name.
pub fn test_name(module: &str, name: &str) -> String {
    match module.split_once("::") {
        Some((_crate, path)) => format!("{path}::{name}"),
        None => name.to_owned(),
    }
}

/// Runs `body`, the test of module `module` for the backend called `name`, on a fresh loop of that
/// backend under a watchdog of `secs` seconds (5 fewer in an `in_child` child, so that its parent
/// can report it); fails when this build lacks that backend.
pub fn run_on(name: &str, module: &str, secs: u64, body: fn(&IoService)) {
    let test = test_name(module, name);
    let backend = backend(name)
        .unwrap_or_else(|| panic!("{test}: backend {name:?} is not in aio::Backend::all()"));
    let _guard = Watchdog::within(&test, Duration::from_secs(secs));
    set_current_test(&test);
    let svc = IoService::builder()
        .backend(backend)
        .build()
        .unwrap_or_else(|e| panic!("building an IoService on {name}: {e}"));
    assert_eq!(svc.backend_name(), name);
    body(&svc);
}

/// Another loop on the same backend as `svc` (for tests that must own and drop their loop).
pub fn fresh(svc: &IoService) -> IoService {
    IoService::builder()
        .backend(svc.backend())
        .build()
        .expect("building a second IoService")
}

/// Aborts the process (after naming the test) unless dropped within [`WATCHDOG`].
pub struct Watchdog {
    _cancel: mpsc::Sender<()>,
}

impl Watchdog {
    pub fn new(test: &str) -> Watchdog {
        Watchdog::within(test, WATCHDOG)
    }

    /// The same with a limit of `limit`.
    pub fn within(test: &str, limit: Duration) -> Watchdog {
        // A child process (see `in_child`) gives up first, so that its parent can report it.
        let limit = if std::env::var_os(CHILD_ENV).is_some() {
            limit.saturating_sub(Duration::from_secs(5))
        } else {
            limit
        };
        let (tx, rx) = mpsc::channel::<()>();
        let test = test.to_owned();
        std::thread::Builder::new()
            .name(format!("watchdog {test}"))
            .spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(limit) {
                    // Straight to fd 2: the test harness's output capture would swallow eprintln!.
                    let msg = format!(
                        "\nwatchdog: test {test} still running after {limit:?}; aborting\n"
                    );
                    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
                    std::process::abort();
                }
            })
            .expect("spawning the watchdog thread");
        Watchdog { _cancel: tx }
    }
}

const CHILD_ENV: &str = "AIO_TEST_CHILD";
const CHILD_DONE: &str = "aio-child-test-finished:";

/// Runs `f` in a child process that runs only the current test (the test binary re-executed with
/// `--exact`), for tests that change process-wide state (rlimits, signal dispositions) or need a
/// single-threaded process (predictable fd numbers). In the parent, waits for the child and fails
/// with its output unless it ran `f` to the end and exited with status 0.
pub fn in_child(f: impl FnOnce()) {
    let name = current_test();
    assert!(
        !name.is_empty(),
        "in_child needs the test name (use matrix_test! or guarded_test!)"
    );
    if std::env::var(CHILD_ENV).ok().as_deref() == Some(name.as_str()) {
        f();
        println!("{CHILD_DONE} {name}");
        return;
    }
    let exe = std::env::current_exe().expect("current_exe");
    let out = Command::new(exe)
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, &name)
        .output()
        .expect("spawning the child test process");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let finished = stdout.contains(&format!("{CHILD_DONE} {name}"));
    assert!(
        out.status.success() && finished,
        "child process for {name} failed ({}; finished: {finished})\n\
         --- stdout\n{stdout}\n--- stderr\n{stderr}",
        describe_status(&out.status),
    );
    // What the child counted and printed (shown with --nocapture).
    eprint!("{stderr}");
}

fn describe_status(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (_, Some(sig)) => format!("killed by signal {sig}"),
        (Some(code), _) => format!("exit status {code}"),
        _ => format!("{status:?}"),
    }
}

/// The transports a stream test can run over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    TcpV4,
    TcpV6,
    Unix,
}

/// A connected pair of sockets; keeps the Unix socket's directory alive.
pub struct Pair {
    pub a: StreamSocket,
    pub b: StreamSocket,
    pub dir: Option<tempfile::TempDir>,
}

/// Whether IPv6 loopback can be bound here; prints why not.
pub fn ipv6_available(test: &str) -> bool {
    match TcpListener::bind((Ipv6Addr::LOCALHOST, 0)) {
        Ok(_) => true,
        Err(e) => {
            eprintln!("skipped {test} over IPv6: cannot bind [::1]:0 ({e})");
            false
        }
    }
}

/// A connected pair over `transport`, registered with `svc`; `None` (with a printed reason) when
/// IPv6
/// loopback is unavailable. Connected with std in blocking mode, then handed to `aio::from_fd`.
pub fn pair(svc: &IoService, transport: Transport) -> Option<Pair> {
    let (a, b, dir): (std::os::fd::OwnedFd, std::os::fd::OwnedFd, _) = match transport {
        Transport::TcpV4 | Transport::TcpV6 => {
            let addr: SocketAddr = if transport == Transport::TcpV4 {
                "127.0.0.1:0".parse().unwrap()
            } else {
                if !ipv6_available(&current_test()) {
                    return None;
                }
                "[::1]:0".parse().unwrap()
            };
            let listener = TcpListener::bind(addr).expect("binding a TCP listener");
            let client = TcpStream::connect(listener.local_addr().unwrap()).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            (client.into(), server.into(), None)
        }
        Transport::Unix => {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("pair.sock");
            let listener = UnixListener::bind(&path).expect("binding a Unix listener");
            let client = UnixStream::connect(&path).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            (client.into(), server.into(), Some(dir))
        }
    };
    Some(Pair {
        a: StreamSocket::from_fd(svc, a).expect("StreamSocket::from_fd"),
        b: StreamSocket::from_fd(svc, b).expect("StreamSocket::from_fd"),
        dir,
    })
}

/// A listening endpoint for `transport`: TCP port 0 on loopback, or a socket file in a new
/// temporary
/// directory (returned, so that it lives as long as the test needs it). `None` without IPv6.
pub fn listen_endpoint(transport: Transport) -> Option<(Endpoint, Option<tempfile::TempDir>)> {
    match transport {
        Transport::TcpV4 => Some(("127.0.0.1:0".parse().unwrap(), None)),
        Transport::TcpV6 => {
            ipv6_available(&current_test()).then(|| ("[::1]:0".parse().unwrap(), None))
        }
        Transport::Unix => {
            let dir = tempfile::tempdir().expect("tempdir");
            let path: PathBuf = dir.path().join("listen.sock");
            Some((Endpoint::unix(path), Some(dir)))
        }
    }
}

/// A Linux abstract socket name no other test (or process) uses.
pub fn unique_abstract_name() -> Endpoint {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("unix:@aio-test-{}-{n}-{nanos}", std::process::id())
        .parse()
        .unwrap()
}

/// `len` bytes of a deterministic pseudo-random pattern (xorshift64*), different for each `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// Position and values of the first difference between two byte strings, for readable failures.
pub fn assert_same_bytes(got: &[u8], want: &[u8]) {
    if got != want {
        let at = got.iter().zip(want).position(|(g, w)| g != w);
        panic!(
            "byte streams differ: got {} bytes, want {}; first difference at {at:?}",
            got.len(),
            want.len()
        );
    }
}

/// Counts its drops (single-threaded).
pub struct DropCount(pub Rc<Cell<usize>>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

/// Counts its drops (any thread).
pub struct SendDropCount(pub Arc<AtomicUsize>);

impl Drop for SendDropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A waker that counts how often it was woken.
pub struct CountingWaker(pub AtomicUsize);

impl CountingWaker {
    pub fn new() -> (Arc<CountingWaker>, Waker) {
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        (counter, waker)
    }
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Polls `fut` once with `waker`.
pub fn poll_once<F: Future + Unpin>(fut: &mut F, waker: &Waker) -> Poll<F::Output> {
    Pin::new(fut).poll(&mut Context::from_waker(waker))
}

/// The raw errno of an error, for assertion messages.
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

/// Whether `fd` is an open file descriptor in this process (`fcntl(F_GETFD)` succeeds).
pub fn fd_is_open(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table; an invalid fd yields EBADF.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// Asserts that `res` failed with kind `kind`.
#[track_caller]
pub fn assert_kind<T: std::fmt::Debug>(res: &io::Result<T>, kind: io::ErrorKind) {
    match res {
        Err(e) => assert_eq!(
            e.kind(),
            kind,
            "unexpected error: {e} ({:?})",
            e.raw_os_error()
        ),
        Ok(v) => panic!("expected an error of kind {kind:?}, got Ok({v:?})"),
    }
}

/// Asserts that `res` failed with `ECANCELED`.
#[track_caller]
pub fn assert_cancelled<T: std::fmt::Debug>(res: &io::Result<T>) {
    match res {
        Err(e) => assert!(
            aio::is_cancelled(e),
            "expected ECANCELED, got {e} ({:?})",
            e.raw_os_error()
        ),
        Ok(v) => panic!("expected ECANCELED, got Ok({v:?})"),
    }
}

/// User plus system CPU time used so far by the calling thread (`getrusage(RUSAGE_THREAD)`): what
/// a loop on this thread cost, whatever else runs in the process or on the machine.
pub fn thread_cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// A Unix pair whose `a` side cannot write any more: small buffers, filled up.
pub fn stuffed_pair(svc: &IoService) -> (StreamSocket, StreamSocket) {
    let (a, b) = StreamSocket::pair(svc).unwrap();
    a.set_send_buffer_size(4096).unwrap();
    b.set_recv_buffer_size(4096).unwrap();
    let (_, waker) = CountingWaker::new();
    loop {
        let mut op = a.write_some(vec![0u8; 65536]);
        match poll_once(&mut op, &waker) {
            Poll::Ready((res, _)) => assert!(res.unwrap() > 0),
            Poll::Pending => return (a, b),
        }
    }
}

/// Appends to `got` what `socket` holds unread now (`try_read` until `WouldBlock`).
pub fn read_available(socket: &StreamSocket, got: &mut Vec<u8>) {
    let mut rest = [0u8; 64];
    loop {
        match socket.try_read(&mut rest) {
            Ok(n) => got.extend_from_slice(&rest[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => panic!("try_read: {e}"),
        }
    }
}

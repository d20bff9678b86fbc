//! Runs the example programs as child processes and talks to them with plain `std` sockets, so that
//! the tests judge `aio` from outside, the way a user or a script would: nothing here uses `aio`.
//!
//! Shared by the `examples*` modules and `echo_integrity`. Every wait is bounded: a stuck server
//! fails its test, it never hangs CI.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a server may take to exit once told to stop.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The path of an example's executable, built first if need be.
///
/// Cargo gives integration tests `CARGO_BIN_EXE_<name>` for binaries only, not for examples. A
/// plain `cargo test` builds the examples before running the tests, but `cargo test --test
/// integration` does not, and a binary left from an older build could be stale. So, once per test
/// process, this runs `cargo build --examples` with the same `cargo` (which is quick when
/// everything is fresh; cargo releases its build lock before it runs test binaries) and the profile
/// this test was built with. The executables are found next to this test's own executable:
/// `<target>/<profile>/deps/<test>` has its examples in `<target>/<profile>/examples/`, whatever
/// `CARGO_TARGET_DIR` says.
pub fn example_path(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(build_examples).as_ref();
    let dir = dir.unwrap_or_else(|e| panic!("cannot build the examples: {e}"));
    let path = dir.join(name);
    assert!(path.is_file(), "{} does not exist", path.display());
    path
}

fn build_examples() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    let examples_dir = profile_dir.join("examples");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet"])
        .stdin(Stdio::null());
    cmd.arg("--examples");
    // The examples that need a feature of this test build (`required-features`) are built with it.
    let features: Vec<&str> = [
        ("futures-io", cfg!(feature = "futures-io")),
        ("tokio-io", cfg!(feature = "tokio-io")),
        ("hyper", cfg!(feature = "hyper")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    if !features.is_empty() {
        cmd.args(["--features", &features.join(",")]);
    }
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    let output = cmd.output().map_err(|e| format!("running cargo: {e}"))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("cargo build failed ({}):\n{stderr}", output.status));
    }
    Ok(examples_dir)
}

/// Whether the IPv6 loopback can be used here; the reason when not.
pub fn ipv6_loopback() -> Result<(), String> {
    std::net::TcpListener::bind("[::1]:0")
        .map(drop)
        .map_err(|e| format!("IPv6 loopback unavailable: {e}"))
}

/// A command for `example` with a chosen backend (`None`: `AIO_BACKEND` unset).
pub fn command(example: &str, backend: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = Command::new(example_path(example));
    cmd.args(args);
    match backend {
        Some(b) => cmd.env("AIO_BACKEND", b),
        None => cmd.env_remove("AIO_BACKEND"),
    };
    cmd
}

/// A finished run of a program.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` to its end with the given stdin, killing it (and failing) after `timeout`.
pub fn run_bounded(mut cmd: Command, stdin: Stdio, timeout: Duration) -> Finished {
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = collect(child.stdout.take().expect("piped stdout"));
    let stderr = collect(child.stderr.take().expect("piped stderr"));
    let status = wait_bounded(&mut child, timeout);
    let stderr = stderr.join().expect("stderr reader");
    let Some(status) = status else {
        panic!("{cmd:?} did not finish within {timeout:?}; stderr:\n{stderr}");
    };
    Finished {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr,
    }
}

/// Reads a pipe to its end in a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits up to `timeout` for `child` to exit; on timeout kills it and returns `None`.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// A running example: its stdin is a pipe (closing it stops the program), and it has printed its
/// first line (for a server, `listening on ENDPOINT (BACKEND)`).
pub struct Server {
    pub name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    /// The first line the server printed.
    pub listening_line: String,
    /// The endpoint from that line: `IP:PORT`, `[IPv6]:PORT`, `unix:PATH` or `unix:@NAME`.
    pub endpoint: String,
    /// Stdout lines after the first one.
    more_stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    /// The thread collecting stderr: it ends when the program (and its stderr) is gone.
    stderr_reader: Option<thread::JoinHandle<()>>,
}

impl Server {
    /// Starts `example` with `args` and waits (bounded) for `listening on ENDPOINT (BACKEND)`.
    pub fn start(example: &str, backend: Option<&str>, args: &[&str]) -> Server {
        let mut server = Server::launch(example, backend, args);
        server.endpoint = parse_listening_line(&server.listening_line)
            .unwrap_or_else(|| {
                panic!(
                    "{example} {args:?}: first line {:?} is not `listening on ENDPOINT (BACKEND)`",
                    server.listening_line
                )
            })
            .0;
        server
    }

    /// Starts `example` with `args`, its stdin a pipe, and waits (bounded) for its first line on
    /// stdout, whatever it says.
    pub fn launch(example: &str, backend: Option<&str>, args: &[&str]) -> Server {
        let mut cmd = command(example, backend, args);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let stderr_reader = {
            let stderr = stderr.clone();
            thread::spawn(move || {
                for line in BufReader::new(stderr_pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut all = stderr.lock().unwrap();
                    all.push_str(&line);
                    all.push('\n');
                }
            })
        };
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            name: example.to_owned(),
            child,
            stdin,
            listening_line: String::new(),
            endpoint: String::new(),
            more_stdout: rx,
            stderr,
            stderr_reader: Some(stderr_reader),
        };
        match server.more_stdout.recv_timeout(START_TIMEOUT) {
            Ok(line) => server.listening_line = line,
            Err(_) => {
                let status = wait_bounded(&mut server.child, Duration::from_secs(1));
                panic!(
                    "{cmd:?} printed nothing within {START_TIMEOUT:?} (exit: {status:?}); \
                     stderr:\n{}",
                    server.stderr()
                );
            }
        }
        server
    }

    /// What the server wrote on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Opens a client connection to the server, with timeouts on every read and write.
    pub fn connect(&self) -> Conn {
        let conn = Conn::connect(&self.endpoint)
            .unwrap_or_else(|e| panic!("connecting to {} ({}): {e}", self.endpoint, self.name));
        conn.set_timeouts(Some(Duration::from_secs(20)))
            .expect("socket timeouts");
        conn
    }

    /// Writes `bytes` to the server's stdin (e.g. a newline: Enter).
    pub fn type_on_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        stdin.write_all(bytes).expect("write to the server's stdin");
        stdin.flush().expect("flush the server's stdin");
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded by [`STOP_TIMEOUT`]) for the server to exit, leaving its stdin as it is (e.g.
    /// after Enter was typed); panics if it does not. Returns its status and any stdout lines after
    /// the first.
    pub fn wait_for_exit(mut self) -> (ExitStatus, Vec<String>) {
        let status = wait_bounded(&mut self.child, STOP_TIMEOUT).unwrap_or_else(|| {
            panic!(
                "{} did not exit within {STOP_TIMEOUT:?} of being told to stop (killed); stderr:\n{}",
                self.name,
                self.stderr()
            )
        });
        let mut rest = Vec::new();
        // The reader thread sees EOF once the process is gone; bounded anyway.
        while let Ok(line) = self.more_stdout.recv_timeout(Duration::from_secs(2)) {
            rest.push(line);
        }
        (status, rest)
    }

    /// Like [`Server::wait_for_exit`], and also returns all the program wrote on stderr.
    pub fn wait_for_exit_with_stderr(mut self) -> (ExitStatus, Vec<String>, String) {
        let reader = self.stderr_reader.take();
        let stderr = self.stderr.clone();
        let (status, rest) = self.wait_for_exit();
        // The program is gone, so its stderr has reached EOF (unless a child of its own kept it).
        if let Some(reader) = reader {
            let _ = reader.join();
        }
        let all = stderr.lock().unwrap().clone();
        (status, rest, all)
    }

    /// Sends `signal` (e.g. `Signal::TERM`) to the program.
    pub fn send_signal(&self, signal: rustix::process::Signal) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
            .expect("a child's pid is a positive i32");
        rustix::process::kill_process(pid, signal)
            .unwrap_or_else(|e| panic!("kill({pid:?}, {signal:?}) for {}: {e}", self.name));
    }

    /// Closes the server's stdin (EOF: the server must stop) and waits for it, bounded.
    pub fn close_stdin_and_wait(mut self) -> (ExitStatus, Vec<String>) {
        self.stdin = None;
        self.wait_for_exit()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // A failing test must not leave a server behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Splits `listening on ENDPOINT (BACKEND)` into its endpoint and backend.
pub fn parse_listening_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("listening on ")?;
    let (endpoint, backend) = rest.rsplit_once(" (")?;
    let backend = backend.strip_suffix(')')?;
    Some((endpoint.to_owned(), backend.to_owned()))
}

/// A client connection over TCP or a Unix socket, with blocking std sockets.
pub enum Conn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Conn {
    /// Connects to `IP:PORT`, `[IPv6]:PORT`, `unix:PATH` or `unix:@NAME` (abstract).
    pub fn connect(endpoint: &str) -> io::Result<Conn> {
        match endpoint.strip_prefix("unix:") {
            Some(name) => match name.strip_prefix('@') {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                    UnixStream::connect_addr(&addr).map(Conn::Unix)
                }
                None => UnixStream::connect(name).map(Conn::Unix),
            },
            None => TcpStream::connect(endpoint).map(Conn::Tcp),
        }
    }

    pub fn set_timeouts(&self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
            Conn::Unix(s) => {
                s.set_read_timeout(timeout)?;
                s.set_write_timeout(timeout)
            }
        }
    }

    /// Half-closes: no more data from us; the server still sends.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => s.shutdown(Shutdown::Write),
            Conn::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Like `&TcpStream`, a shared connection reads on one thread while it writes on another, with one
/// fd.
impl Read for &Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => (&*s).read(buf),
            Conn::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Tcp(s) => (&*s).write(buf),
            Conn::Unix(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), the same stream for the same seed: the writer
/// and the checker of a connection each run one.
pub struct Pattern {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Pattern {
    pub fn new(seed: u64) -> Pattern {
        Pattern {
            // Never zero (xorshift's fixed point); spread small seeds apart.
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            word: [0; 8],
            used: 8,
        }
    }

    /// Fills `out` with the next bytes of the stream.
    pub fn fill(&mut self, out: &mut [u8]) {
        for byte in out {
            if self.used == 8 {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.word = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
                self.used = 0;
            }
            *byte = self.word[self.used];
            self.used += 1;
        }
    }
}

/// Sends `len` pattern bytes of `seed` on one thread while checking the echo on another, then
/// half-closes after the last byte and expects every byte back followed by EOF. Returns a
/// description of what went wrong, if anything. Nothing runs past `deadline`.
pub fn echo_and_verify(conn: Conn, seed: u64, len: usize, deadline: Instant) -> Result<(), String> {
    const CHUNK: usize = 64 * 1024;
    // Shared rather than duplicated: one fd per connection, so hundreds fit in a default fd limit.
    let conn = Arc::new(conn);
    let writer = conn.clone();
    let sender = thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(move || -> Result<(), String> {
            let mut pattern = Pattern::new(seed);
            let mut chunk = vec![0u8; CHUNK.min(len.max(1))];
            let mut sent = 0;
            while sent < len {
                if Instant::now() > deadline {
                    return Err(format!(
                        "deadline passed after sending {sent} of {len} bytes"
                    ));
                }
                let n = chunk.len().min(len - sent);
                pattern.fill(&mut chunk[..n]);
                (&*writer)
                    .write_all(&chunk[..n])
                    .map_err(|e| format!("write after {sent} of {len} bytes: {e}"))?;
                sent += n;
            }
            writer
                .shutdown_write()
                .map_err(|e| format!("shutdown(Write): {e}"))
        })
        .map_err(|e| format!("spawning the writer: {e}"))?;

    let checked = check_echo(&conn, seed, len, deadline);
    let sent = sender
        .join()
        .unwrap_or_else(|_| Err("the writer panicked".to_owned()));
    checked.and(sent)
}

/// Reads from `conn` until EOF, checking that exactly the `len` pattern bytes of `seed` come back.
fn check_echo(mut conn: &Conn, seed: u64, len: usize, deadline: Instant) -> Result<(), String> {
    let mut pattern = Pattern::new(seed);
    let mut got = vec![0u8; 64 * 1024];
    let mut want = vec![0u8; got.len()];
    let mut received = 0usize;
    loop {
        if Instant::now() > deadline {
            return Err(format!(
                "deadline passed after receiving {received} of {len} bytes"
            ));
        }
        let n = match conn.read(&mut got) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read after {received} of {len} bytes: {e}")),
        };
        if n == 0 {
            return if received == len {
                Ok(())
            } else {
                Err(format!("EOF after {received} of {len} bytes"))
            };
        }
        if received + n > len {
            return Err(format!("{} bytes came back, {len} were sent", received + n));
        }
        pattern.fill(&mut want[..n]);
        if let Some(i) = (0..n).find(|&i| got[i] != want[i]) {
            return Err(format!(
                "byte {} of {len} differs: got {:#04x}, sent {:#04x}",
                received + i,
                got[i],
                want[i]
            ));
        }
        received += n;
    }
}

impl Server {
    /// The next line the program prints on stdout, waiting at most `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.more_stdout.recv_timeout(timeout).ok()
    }

    /// Kills the program with SIGKILL (nothing can catch it) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! The benchmark runner: every echo server under the same load, alternating, pinned, measured from
//! outside; writes `BENCHMARKS.md` and the chart.
//!
//! ```text
//! bench/run.sh            # builds everything, then this runner (about 12 minutes)
//! bench/run.sh --quick    # fewer and shorter runs (about 4 minutes)
//! bench/target/release/runner --help
//! ```
//!
//! Per server and scenario, in rounds (A B C ... A B C ...), medians reported:
//! - messages/s and latency percentiles, from the load generator;
//! - server CPU time per message: utime + stime from /proc/PID/stat around the measured phase;
//! - syscalls per message (64 x 64 B ping-pong): `perf stat` on the server's syscall tracepoints
//!   over a fixed message count, or `strace -c` when perf cannot count them;
//! - user-space instructions per message (64 x 64 B ping-pong): the server run twice under
//!   `valgrind --tool=callgrind` with two message counts; the difference of the totals divided by
//!   the difference of the counts, so start-up and connection set-up cancel out. The same
//!   subtraction per function gives where the instructions go;
//! - server memory per idle connection: RSS before and after 10,000 connections are opened.
//!
//! Servers run on one core and the load generator on another (sched_setaffinity); loopback and
//! Unix sockets only; every phase is bounded in messages and time.

mod chart;
mod procs;
mod report;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use serde::{Deserialize, Serialize};

use procs::{Load, Result, Server, cpu_seconds, on_path, output_of, rss_kib, run_load};

#[derive(Parser, Debug)]
#[command(about = "Runs the echo benchmarks and writes BENCHMARKS.md and the chart")]
pub struct Cli {
    /// Shorter runs and smaller counts: a few minutes instead of about fourteen.
    #[arg(long)]
    pub quick: bool,
    /// Rounds of the throughput scenarios (servers alternate within each round); at least 2.
    #[arg(long)]
    pub rounds: Option<usize>,
    /// Seconds of each measured phase.
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds of warm-up before each measured phase.
    #[arg(long)]
    pub warmup: Option<f64>,
    /// Only these servers (comma-separated keys: c, aio, aio-stream, aio-async, aio-async-stream, tokio, asio, libuv, aio-uring,
    /// aio-poll: the callback server on aio's io_uring and poll backends).
    #[arg(long, value_delimiter = ',')]
    pub servers: Option<Vec<String>>,
    /// Only these scenarios (pingpong, inflight, conns1000, large, unix, idle).
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Option<Vec<String>>,
    /// Skip the callgrind measurement.
    #[arg(long)]
    pub no_callgrind: bool,
    /// Skip the criterion micro benchmarks of the loop (`cargo bench --bench loop_ops`).
    #[arg(long)]
    pub no_micro: bool,
    /// Skip the syscall count.
    #[arg(long)]
    pub no_syscalls: bool,
    /// The core the servers run on.
    #[arg(long, default_value_t = 0)]
    pub server_cpu: usize,
    /// The core the load generator runs on.
    #[arg(long, default_value_t = 1)]
    pub client_cpu: usize,
    /// The repository root (default: the parent of bench/).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Where to write the report (default: ROOT/BENCHMARKS.md).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Where to write the chart (default: ROOT/bench/benchmarks.svg).
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Before each run, wait up to this many seconds for other processes to leave the machine
    /// (less than 0.2 CPUs busy); the load seen in each measured window is reported either way.
    #[arg(long, default_value_t = 10.0)]
    pub max_quiet_wait: f64,
    /// The most seconds spent waiting for a quiet machine over the whole run (keeps a run on a
    /// busy machine bounded).
    /// [default: 120, 30 with --quick]
    #[arg(long)]
    pub quiet_budget: Option<f64>,
    /// Only write the report and the chart again from a results.json of an earlier run.
    #[arg(long, value_name = "RESULTS_JSON")]
    pub replot: Option<PathBuf>,
    /// The command to show in the report as the one that produced it.
    #[arg(long)]
    pub invoked_as: Option<String>,
}

/// One server of the comparison.
#[derive(Clone, Debug, Serialize)]
pub struct ServerDef {
    pub key: &'static str,
    pub label: &'static str,
    /// Relative to the repository root.
    pub path: &'static str,
    /// Environment variables it runs with.
    pub env: &'static [(&'static str, &'static str)],
    /// Run unless `--servers` names others.
    pub default: bool,
}

const fn server(key: &'static str, label: &'static str, path: &'static str) -> ServerDef {
    ServerDef {
        key,
        label,
        path,
        env: &[],
        default: true,
    }
}

pub const SERVERS: [ServerDef; 10] = [
    server("c", "C epoll (floor)", "bench/target/servers/c_epoll"),
    server("aio", "aio callbacks", "bench/target/release/aio_echo"),
    server(
        "aio-stream",
        "aio callbacks, persistent read",
        "bench/target/release/aio_echo_stream",
    ),
    server(
        "aio-async",
        "aio async/await",
        "bench/target/release/aio_echo_async",
    ),
    server(
        "aio-async-stream",
        "aio async/await, persistent read",
        "bench/target/release/aio_echo_async_stream",
    ),
    server(
        "tokio",
        "tokio current-thread",
        "bench/target/release/tokio_echo",
    ),
    server("asio", "Boost.Asio", "bench/target/servers/asio_echo"),
    server("libuv", "libuv", "bench/target/servers/uv_echo"),
    // The callback server on aio's io_uring backend.
    ServerDef {
        key: "aio-uring",
        label: "aio callbacks, io_uring",
        path: "bench/target/release/aio_echo",
        env: &[("AIO_BACKEND", "uring")],
        default: true,
    },
    // The callback server on aio's portable poll(2) backend.
    ServerDef {
        key: "aio-poll",
        label: "aio callbacks, poll",
        path: "bench/target/release/aio_echo",
        env: &[("AIO_BACKEND", "poll")],
        default: true,
    },
];

/// A load shape.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    pub key: &'static str,
    pub title: &'static str,
    pub connections: usize,
    pub size: usize,
    pub depth: usize,
    /// Each server's per-connection buffer.
    pub buffer: usize,
    pub unix: bool,
}

pub const SCENARIOS: [Scenario; 5] = [
    Scenario {
        key: "pingpong",
        title: "64 conns x 64 B ping-pong",
        connections: 64,
        size: 64,
        depth: 1,
        buffer: 1024,
        unix: false,
    },
    Scenario {
        key: "inflight",
        title: "64 conns x 64 B, 16 in flight",
        connections: 64,
        size: 64,
        depth: 16,
        buffer: 1024,
        unix: false,
    },
    Scenario {
        key: "conns1000",
        title: "1,000 conns x 64 B ping-pong",
        connections: 1000,
        size: 64,
        depth: 1,
        buffer: 1024,
        unix: false,
    },
    Scenario {
        key: "large",
        title: "8 conns x 64 KiB ping-pong",
        connections: 8,
        size: 65536,
        depth: 1,
        buffer: 65536,
        unix: false,
    },
    Scenario {
        key: "unix",
        title: "64 conns x 64 B ping-pong, Unix socket",
        connections: 64,
        size: 64,
        depth: 1,
        buffer: 1024,
        unix: true,
    },
];

pub const IDLE_CONNECTIONS: usize = 10_000;

/// Other processes using fewer CPUs than this count as a quiet machine.
pub const QUIET_THRESHOLD: f64 = 0.2;

/// One throughput run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub cpu_us_per_msg: f64,
    pub user_us_per_msg: f64,
    pub sys_us_per_msg: f64,
    /// Server CPU time over the window's wall time (1.0: the server's core was saturated).
    pub server_busy: f64,
    /// The load generator's CPU time over the window's wall time.
    pub client_busy: f64,
    /// CPUs' worth of time other processes (and the kernel on their behalf) used in the window.
    pub others: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
}

/// One syscall count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SyscallSample {
    pub per_msg: f64,
    pub messages: u64,
    /// Per message, by syscall name, largest first.
    pub by_name: Vec<(String, f64)>,
    pub tool: String,
}

/// The callgrind measurement of one server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallgrindResult {
    pub per_msg: f64,
    pub counts: (u64, u64),
    pub totals: (u64, u64),
    /// Per message, by function (self cost, summed over the files its inlined code comes from),
    /// largest first.
    pub functions: Vec<(String, f64)>,
    pub files: (String, String),
}

/// The idle-connection memory of one server.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleSample {
    pub bytes_per_conn: f64,
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
}

/// Everything measured, by scenario key then server key.
#[derive(Default, Debug, Serialize, Deserialize)]
pub struct Results {
    pub throughput: BTreeMap<String, BTreeMap<String, Vec<Sample>>>,
    pub syscalls: BTreeMap<String, Vec<SyscallSample>>,
    pub callgrind: BTreeMap<String, CallgrindResult>,
    pub idle: BTreeMap<String, Vec<IdleSample>>,
    /// (what, server, why) for every run that failed or was skipped.
    pub problems: Vec<(String, String, String)>,
    pub notes: Vec<String>,
    /// Criterion's median time per operation, in ns, by benchmark group: (aio, tokio).
    #[serde(default)]
    pub micro: BTreeMap<String, (f64, f64)>,
    /// Seconds spent waiting for other processes to leave the machine before runs.
    pub quiet_waited_s: f64,
    /// Runs started while other processes still used `QUIET_THRESHOLD` CPUs or more.
    pub started_under_load: usize,
}

impl Settings {
    /// The servers run, in order.
    pub fn servers(&self) -> Vec<&'static ServerDef> {
        self.servers
            .iter()
            .filter_map(|k| SERVERS.iter().find(|s| s.key == k))
            .collect()
    }

    /// The throughput scenarios run, in order.
    pub fn scenarios(&self) -> Vec<&'static Scenario> {
        self.scenarios
            .iter()
            .filter_map(|k| SCENARIOS.iter().find(|s| s.key == k))
            .collect()
    }
}

/// What the run was configured with, for the report.
#[derive(Debug, Serialize, Deserialize)]
pub struct Settings {
    pub quick: bool,
    pub rounds: usize,
    pub duration: f64,
    pub warmup: f64,
    pub syscall_messages: u64,
    pub callgrind_counts: (u64, u64),
    pub server_cpu: Option<usize>,
    pub client_cpu: Option<usize>,
    pub syscall_tool: Option<String>,
    pub command: String,
    /// Keys of the servers and scenarios run, in order.
    pub servers: Vec<String>,
    pub scenarios: Vec<String>,
    pub idle: bool,
    pub elapsed_s: f64,
    /// When, on what and with what the run was made (read at the start of the run).
    #[serde(default)]
    pub date: String,
    #[serde(default)]
    pub machine: String,
    #[serde(default)]
    pub software: String,
    /// The aio source measured: `git describe --always --dirty` of the repository.
    #[serde(default)]
    pub revision: String,
}

struct Ctx {
    root: PathBuf,
    loadgen: PathBuf,
    results_dir: PathBuf,
    server_cpu: Option<usize>,
    client_cpu: Option<usize>,
}

impl Ctx {
    fn server_path(&self, s: &ServerDef) -> PathBuf {
        self.root.join(s.path)
    }

    fn endpoint(&self, sc: &Scenario, s: &ServerDef) -> String {
        if sc.unix {
            let path = std::env::temp_dir().join(format!(
                "aio-bench-{}-{}.sock",
                std::process::id(),
                s.key
            ));
            format!("unix:{}", path.display())
        } else {
            "127.0.0.1:0".into()
        }
    }

    fn start(
        &self,
        s: &ServerDef,
        sc: &Scenario,
        wrapper: &[String],
        within: Duration,
    ) -> Result<Server> {
        let args = vec![
            self.endpoint(sc, s),
            "--buffer".into(),
            sc.buffer.to_string(),
        ];
        Server::start(
            wrapper,
            &self.server_path(s),
            &args,
            s.env,
            self.server_cpu,
            within,
        )
    }
}

fn stop(server: Server, grace: Duration) -> Result<()> {
    match server.stop(grace)? {
        status if status.success() => Ok(()),
        status => Err(format!("the server exited with {status}")),
    }
}

/// One throughput run of `s` under scenario `sc`.
fn throughput(
    ctx: &Ctx,
    s: &ServerDef,
    sc: &Scenario,
    warmup: f64,
    duration: f64,
) -> Result<Sample> {
    let server = ctx.start(s, sc, &[], Duration::from_secs(10))?;
    let pid = server.pid;
    let load = Load {
        connections: sc.connections,
        size: sc.size,
        depth: sc.depth,
        warmup,
        duration,
        messages: None,
        idle: false,
    };
    let (report, (before, after), window) = run_load(
        &ctx.loadgen,
        &server.endpoint,
        &load,
        ctx.client_cpu,
        || cpu_seconds(pid),
        |before| Ok((before, cpu_seconds(pid)?)),
    )?;
    let wall = window.wall;
    stop(server, Duration::from_secs(10))?;
    let n = report.messages.max(1) as f64;
    let user = after.0 - before.0;
    let sys = after.1 - before.1;
    let lat = report
        .latency_us
        .clone()
        .ok_or("no latency in the report")?;
    Ok(Sample {
        msgs_per_sec: report.msgs_per_sec,
        mb_per_sec: report.mb_per_sec,
        cpu_us_per_msg: (user + sys) / n * 1e6,
        user_us_per_msg: user / n * 1e6,
        sys_us_per_msg: sys / n * 1e6,
        server_busy: (user + sys) / wall,
        others: ((window.machine_busy - window.client_cpu - user - sys) / wall).max(0.0),
        client_busy: window.client_cpu / wall,
        p50_us: lat.p50,
        p99_us: lat.p99,
        p999_us: lat.p999,
    })
}

/// Which tool counts syscalls here: perf on the syscall tracepoints when it can, else strace.
fn syscall_tool() -> Option<&'static str> {
    if on_path("perf").is_some()
        && output_of(
            "perf",
            &["stat", "-x,", "-e", "raw_syscalls:sys_enter", "true"],
        )
        .is_ok()
    {
        // perf prints the counts on stderr; the call above only proves the event opens.
        return Some("perf");
    }
    on_path("strace").map(|_| "strace")
}

/// The syscalls perf counts by name (the total comes from `raw_syscalls:sys_enter`, so anything
/// else shows up as "other"). All of `syscalls:sys_enter_*` would do, but perf then takes ~15 s to
/// detach from ~700 tracepoints after every run.
const TRACED_SYSCALLS: [&str; 26] = [
    "read",
    "write",
    "readv",
    "writev",
    "recvfrom",
    "sendto",
    "recvmsg",
    "sendmsg",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_ctl",
    "poll",
    "ppoll",
    "accept",
    "accept4",
    "close",
    "futex",
    "ioctl",
    "setsockopt",
    "getsockopt",
    "mmap",
    "munmap",
    "brk",
    "madvise",
    "shutdown",
];

/// Parses `perf stat -x,` output: (total from raw_syscalls, per-name counts).
fn parse_perf(text: &str) -> Result<(u64, Vec<(String, u64)>)> {
    let mut total = None;
    let mut names = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() < 3 {
            continue;
        }
        let Ok(count) = cols[0].trim().parse::<u64>() else {
            continue;
        };
        let event = cols[2].trim();
        if event == "raw_syscalls:sys_enter" {
            total = Some(count);
        } else if let Some(name) = event.strip_prefix("syscalls:sys_enter_")
            && count > 0
        {
            names.push((name.to_string(), count));
        }
    }
    let total = total.ok_or("no raw_syscalls:sys_enter count in perf's output")?;
    let named: u64 = names.iter().map(|(_, c)| c).sum();
    if total > named {
        names.push(("other".into(), total - named));
    }
    Ok((total, names))
}

/// Parses `strace -c` output: (total, per-name counts).
fn parse_strace(text: &str) -> Result<(u64, Vec<(String, u64)>)> {
    let mut names = Vec::new();
    for line in text.lines() {
        let cols: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        if cols.len() < 5 || cols[0].parse::<f64>().is_err() {
            continue;
        }
        let name = *cols.last().unwrap();
        if name == "total" {
            continue;
        }
        if let Ok(calls) = cols[3].parse::<u64>() {
            names.push((name.to_string(), calls));
        }
    }
    if names.is_empty() {
        return Err("no syscalls in strace's summary".into());
    }
    Ok((names.iter().map(|(_, c)| c).sum(), names))
}

/// Counts the server's syscalls over a fixed number of 64 x 64 B ping-pong messages.
fn syscalls(
    ctx: &Ctx,
    s: &ServerDef,
    tool: &'static str,
    messages: u64,
    tag: &str,
) -> Result<SyscallSample> {
    let sc = &SCENARIOS[0];
    let server = ctx.start(s, sc, &[], Duration::from_secs(10))?;
    let pid = server.pid;
    let out = ctx
        .results_dir
        .join(format!("syscalls-{}-{tag}.txt", s.key));
    let load = Load {
        connections: sc.connections,
        size: sc.size,
        depth: sc.depth,
        warmup: 0.5,
        duration: 600.0,
        messages: Some(messages),
        idle: false,
    };
    let out2 = out.clone();
    let (report, (), _) = run_load(
        &ctx.loadgen,
        &server.endpoint,
        &load,
        ctx.client_cpu,
        move || {
            let mut cmd = if tool == "perf" {
                let mut c = std::process::Command::new("perf");
                c.args(["stat", "-x,", "-o"])
                    .arg(&out2)
                    .args(["-e", "raw_syscalls:sys_enter"]);
                for name in TRACED_SYSCALLS {
                    c.arg("-e").arg(format!("syscalls:sys_enter_{name}"));
                }
                c.arg("-p").arg(pid.to_string());
                c
            } else {
                let mut c = std::process::Command::new("strace");
                c.args(["-c", "-f", "-o"])
                    .arg(&out2)
                    .arg("-p")
                    .arg(pid.to_string());
                c
            };
            cmd.stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            // The tracer runs on the load generator's core, not the server's.
            procs::pin(&mut cmd, ctx.client_cpu);
            let child = cmd.spawn().map_err(|e| format!("{tool}: {e}"))?;
            // Time to attach; the server is idle meanwhile (the load generator waits for "go").
            std::thread::sleep(Duration::from_millis(800));
            Ok(child)
        },
        move |mut child| {
            // SAFETY: kill(2) on our own child; SIGINT makes perf and strace print and detach.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
            Ok(())
        },
    )?;
    stop(server, Duration::from_secs(10))?;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (total, mut names) = if tool == "perf" {
        parse_perf(&text)?
    } else {
        parse_strace(&text)?
    };
    names.sort_by_key(|(_, count)| std::cmp::Reverse(*count));
    let n = report.messages.max(1) as f64;
    Ok(SyscallSample {
        per_msg: total as f64 / n,
        messages: report.messages,
        by_name: names
            .into_iter()
            .map(|(name, c)| (name, c as f64 / n))
            .collect(),
        tool: tool.to_string(),
    })
}

/// `path` relative to `root` when inside it.
fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Self cost by function from `callgrind_annotate`, summed over files.
fn annotate(file: &Path) -> Result<BTreeMap<String, u64>> {
    let text = output_of(
        "callgrind_annotate",
        &[
            "--auto=no",
            "--inclusive=no",
            "--threshold=100",
            &file.display().to_string(),
        ],
    )?;
    let mut by_fn = BTreeMap::new();
    let mut libs = BTreeMap::new();
    let mut in_table = false;
    for line in text.lines() {
        if line.trim_start().starts_with("Ir") && line.contains("file:function") {
            in_table = true;
            continue;
        }
        if !in_table || line.starts_with("---") {
            continue;
        }
        let trimmed = line.trim_start();
        let Some(end) = trimmed.find(|c: char| !(c.is_ascii_digit() || c == ',')) else {
            continue;
        };
        let Ok(count) = trimmed[..end].replace(',', "").parse::<u64>() else {
            continue;
        };
        let mut rest = trimmed[end..].trim_start();
        if rest.starts_with('(') {
            rest = rest[rest.find(')').map_or(0, |i| i + 1)..].trim_start();
        }
        // "FILE:FUNCTION [OBJECT]": keep the function and the object's file name.
        let (spec, object) = match rest.rfind(" [") {
            Some(i) => (&rest[..i], rest[i + 2..].trim_end_matches(']')),
            None => (rest, ""),
        };
        let function = match spec.find(':') {
            Some(i) if !spec.starts_with("???:") => &spec[i + 1..],
            Some(i) => &spec[i + 1..],
            None => spec,
        };
        // callgrind_annotate names the object only on a function's first line (the others are
        // code inlined from other files): shared libraries are remembered by function.
        let object = object.rsplit('/').next().unwrap_or(object);
        if object.contains(".so") {
            libs.insert(function.to_string(), object.to_string());
        }
        *by_fn.entry(function.to_string()).or_insert(0) += count;
    }
    let by_fn: BTreeMap<String, u64> = by_fn
        .into_iter()
        .map(|(f, c)| match libs.get(&f) {
            Some(lib) => (format!("{f} [{lib}]"), c),
            None => (f, c),
        })
        .collect();
    if by_fn.is_empty() {
        return Err(format!(
            "no functions in callgrind_annotate's output for {}",
            file.display()
        ));
    }
    Ok(by_fn)
}

fn callgrind_total(file: &Path) -> Result<u64> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no totals in {}", file.display()))
}

/// Runs the server under callgrind twice (64 x 64 B ping-pong, two message counts) and subtracts.
fn callgrind(ctx: &Ctx, s: &ServerDef, counts: (u64, u64)) -> Result<CallgrindResult> {
    let sc = &SCENARIOS[0];
    let mut files = Vec::new();
    for (i, &n) in [counts.0, counts.1].iter().enumerate() {
        let file = ctx
            .results_dir
            .join(format!("callgrind-{}-{}.out", s.key, i + 1));
        let _ = std::fs::remove_file(&file);
        let wrapper = vec![
            "valgrind".to_string(),
            "--tool=callgrind".into(),
            "--quiet".into(),
            format!("--callgrind-out-file={}", file.display()),
        ];
        let server = ctx.start(s, sc, &wrapper, Duration::from_secs(120))?;
        let load = Load {
            connections: sc.connections,
            size: sc.size,
            depth: sc.depth,
            warmup: 0.0,
            duration: 600.0,
            messages: Some(n),
            idle: false,
        };
        let (report, (), _) = run_load(
            &ctx.loadgen,
            &server.endpoint,
            &load,
            ctx.client_cpu,
            || Ok(()),
            |()| Ok(()),
        )?;
        if report.messages != n {
            return Err(format!(
                "expected {n} messages, the load generator counted {}",
                report.messages
            ));
        }
        stop(server, Duration::from_secs(120))?;
        files.push(file);
    }
    let totals = (callgrind_total(&files[0])?, callgrind_total(&files[1])?);
    let dn = (counts.1 - counts.0) as f64;
    let (a, b) = (annotate(&files[0])?, annotate(&files[1])?);
    let mut functions: Vec<(String, f64)> = b
        .iter()
        .map(|(f, &cost)| {
            (
                f.clone(),
                (cost as f64 - *a.get(f).unwrap_or(&0) as f64) / dn,
            )
        })
        .collect();
    functions.sort_by(|x, y| y.1.total_cmp(&x.1));
    Ok(CallgrindResult {
        per_msg: (totals.1 as f64 - totals.0 as f64) / dn,
        counts,
        totals,
        functions,
        files: (rel(&ctx.root, &files[0]), rel(&ctx.root, &files[1])),
    })
}

/// The criterion groups of `benches/loop_ops.rs`, each with an `aio` and a `tokio` function.
pub const MICRO_GROUPS: [&str; 4] = ["post", "spawn_await", "timer_schedule_cancel", "eager_read"];

/// Runs the loop's micro benchmarks (in the main crate) pinned to the server core and reads
/// criterion's median estimates.
fn micro(ctx: &Ctx, quick: bool) -> Result<BTreeMap<String, (f64, f64)>> {
    let log = ctx.results_dir.join("loop_ops.log");
    let out = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    // Built first on every core (bench/build.sh has usually done it), then run on one.
    let built = std::process::Command::new("cargo")
        .current_dir(&ctx.root)
        .args(["bench", "--bench", "loop_ops", "--no-run", "--quiet"])
        .status()
        .map_err(|e| format!("cargo bench: {e}"))?;
    if !built.success() {
        return Err(format!("cargo bench --bench loop_ops --no-run: {built}"));
    }
    let mut cmd = std::process::Command::new("cargo");
    cmd.current_dir(&ctx.root)
        .args(["bench", "--bench", "loop_ops", "--", "--noplot"])
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(out);
    if quick {
        cmd.arg("--quick");
    }
    procs::pin(&mut cmd, ctx.server_cpu);
    let status = cmd.status().map_err(|e| format!("cargo bench: {e}"))?;
    if !status.success() {
        return Err(format!(
            "cargo bench --bench loop_ops: {status} (see {})",
            rel(&ctx.root, &log)
        ));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| ctx.root.join("target"), PathBuf::from);
    let estimate = |group: &str, which: &str| -> Result<f64> {
        let file = target
            .join("criterion")
            .join(group)
            .join(which)
            .join("new/estimates.json");
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        json["median"]["point_estimate"]
            .as_f64()
            .ok_or_else(|| format!("no median in {}", file.display()))
    };
    MICRO_GROUPS
        .iter()
        .map(|g| Ok((g.to_string(), (estimate(g, "aio")?, estimate(g, "tokio")?))))
        .collect()
}

/// Server RSS growth per connection with `IDLE_CONNECTIONS` idle connections.
fn idle(ctx: &Ctx, s: &ServerDef) -> Result<IdleSample> {
    let sc = &SCENARIOS[0];
    let server = ctx.start(s, sc, &[], Duration::from_secs(10))?;
    let pid = server.pid;
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_kib(pid)?;
    let load = Load {
        connections: IDLE_CONNECTIONS,
        size: 1,
        depth: 1,
        warmup: 0.0,
        duration: 0.0,
        messages: None,
        idle: true,
    };
    let (_, after, _) = run_load(
        &ctx.loadgen,
        &server.endpoint,
        &load,
        ctx.client_cpu,
        || {
            std::thread::sleep(Duration::from_millis(300));
            rss_kib(pid)
        },
        Ok,
    )?;
    stop(server, Duration::from_secs(20))?;
    Ok(IdleSample {
        bytes_per_conn: (after as f64 - before as f64) * 1024.0 / IDLE_CONNECTIONS as f64,
        rss_before_kib: before,
        rss_after_kib: after,
    })
}

fn main() {
    let cli = Cli::parse();
    let started = Instant::now();
    let root = cli
        .root
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    let root = root.canonicalize().unwrap_or(root);
    let results_dir = root.join("bench/target/results");
    std::fs::create_dir_all(&results_dir).expect("results directory");
    if let Some(file) = &cli.replot {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| {
            eprintln!("runner: {}: {e}", file.display());
            std::process::exit(2)
        });
        #[derive(Deserialize)]
        struct Saved {
            settings: Settings,
            results: Results,
        }
        let saved: Saved = serde_json::from_str(&text).unwrap_or_else(|e| {
            eprintln!("runner: {}: {e}", file.display());
            std::process::exit(2)
        });
        write_outputs(&cli, &root, &saved.settings, saved.results);
        return;
    }
    let loadgen = root.join("bench/target/release/loadgen");
    if !loadgen.is_file() {
        eprintln!(
            "runner: {} is missing: run bench/build.sh first",
            loadgen.display()
        );
        std::process::exit(2);
    }

    let rounds = cli.rounds.unwrap_or(if cli.quick { 2 } else { 3 }).max(2);
    let duration = cli.duration.unwrap_or(if cli.quick { 1.0 } else { 3.0 });
    let warmup = cli.warmup.unwrap_or(if cli.quick { 0.3 } else { 1.0 });
    let syscall_messages: u64 = if cli.quick { 50_000 } else { 200_000 };
    let callgrind_counts: (u64, u64) = if cli.quick {
        (5_000, 15_000)
    } else {
        (20_000, 60_000)
    };

    let date = output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
        .map(|d| d.trim().to_string())
        .unwrap_or_default();
    let revision = output_of(
        "git",
        &[
            "-C",
            &root.display().to_string(),
            "describe",
            "--always",
            "--dirty",
        ],
    )
    .map(|r| r.trim().to_string())
    .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut results = Results::default();
    let (server_cpu, client_cpu) = if cpus >= 2 && cli.server_cpu != cli.client_cpu {
        (Some(cli.server_cpu), Some(cli.client_cpu))
    } else {
        results.notes.push(format!(
            "Not pinned: {cpus} CPU(s) available; server and load generator share the machine."
        ));
        (None, None)
    };
    let nofile = procs::raise_nofile_limit();

    let wanted = |key: &str, list: &Option<Vec<String>>| {
        list.as_ref().is_none_or(|l| l.iter().any(|k| k == key))
    };
    let mut servers = Vec::new();
    let chosen = |s: &&ServerDef| match &cli.servers {
        Some(list) => list.iter().any(|k| k == s.key),
        None => s.default,
    };
    for s in SERVERS.iter().filter(chosen) {
        if root.join(s.path).is_file() {
            servers.push(s.clone());
        } else {
            results.problems.push((
                "all".into(),
                s.key.into(),
                format!("{} was not built (see bench/build.sh's output)", s.path),
            ));
        }
    }
    let scenarios: Vec<Scenario> = SCENARIOS
        .iter()
        .filter(|sc| wanted(sc.key, &cli.scenarios))
        .cloned()
        .collect();
    let run_idle = wanted("idle", &cli.scenarios);
    let run_pingpong_extras = wanted("pingpong", &cli.scenarios);

    let ctx = Ctx {
        root: root.clone(),
        loadgen,
        results_dir: results_dir.clone(),
        server_cpu,
        client_cpu,
    };
    let tool = if cli.no_syscalls || !run_pingpong_extras {
        None
    } else {
        syscall_tool()
    };
    if !cli.no_syscalls && run_pingpong_extras && tool.is_none() {
        results.notes.push(
            "Syscalls not counted: neither perf (syscall tracepoints) nor strace works here."
                .into(),
        );
    }

    let log = |what: &str| eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
    let max_quiet_wait = Duration::from_secs_f64(cli.max_quiet_wait);
    let quiet_budget = cli
        .quiet_budget
        .unwrap_or(if cli.quick { 30.0 } else { 120.0 });
    let quiet = |results: &mut Results| {
        let left = Duration::from_secs_f64((quiet_budget - results.quiet_waited_s).max(0.0));
        let (load, waited) = procs::wait_for_quiet(QUIET_THRESHOLD, max_quiet_wait.min(left));
        results.quiet_waited_s += waited.as_secs_f64();
        if load >= QUIET_THRESHOLD {
            results.started_under_load += 1;
            log(&format!(
                "  the machine is busy ({load:.2} CPUs in use by others): running anyway"
            ));
        } else if waited >= Duration::from_secs(1) {
            log(&format!(
                "  waited {:.0} s for the machine to be quiet",
                waited.as_secs_f64()
            ));
        }
    };

    for round in 1..=rounds {
        for sc in &scenarios {
            for s in &servers {
                log(&format!("round {round}/{rounds}: {} on {}", s.key, sc.key));
                quiet(&mut results);
                match throughput(&ctx, s, sc, warmup, duration) {
                    Ok(sample) => {
                        log(&format!(
                            "  {:.0} msg/s, {:.2} us CPU/msg, p99 {:.0} us",
                            sample.msgs_per_sec, sample.cpu_us_per_msg, sample.p99_us
                        ));
                        results
                            .throughput
                            .entry(sc.key.into())
                            .or_default()
                            .entry(s.key.into())
                            .or_default()
                            .push(sample);
                    }
                    Err(e) => {
                        log(&format!("  FAILED: {e}"));
                        results.problems.push((
                            sc.key.into(),
                            s.key.into(),
                            format!("round {round}: {e}"),
                        ));
                    }
                }
            }
        }
        if let Some(tool) = tool {
            for s in &servers {
                log(&format!(
                    "round {round}/{rounds}: syscalls of {} ({tool})",
                    s.key
                ));
                quiet(&mut results);
                match syscalls(&ctx, s, tool, syscall_messages, &round.to_string()) {
                    Ok(sample) => {
                        log(&format!("  {:.3} syscalls/msg", sample.per_msg));
                        results
                            .syscalls
                            .entry(s.key.into())
                            .or_default()
                            .push(sample);
                    }
                    Err(e) => {
                        log(&format!("  FAILED: {e}"));
                        results.problems.push((
                            "syscalls".into(),
                            s.key.into(),
                            format!("round {round}: {e}"),
                        ));
                    }
                }
            }
        }
        if run_idle {
            if nofile < IDLE_CONNECTIONS as u64 + 100 {
                if round == 1 {
                    results.problems.push((
                        "idle".into(),
                        "all".into(),
                        format!("skipped: RLIMIT_NOFILE is {nofile} and could not be raised above {IDLE_CONNECTIONS}"),
                    ));
                }
            } else {
                for s in &servers {
                    log(&format!(
                        "round {round}/{rounds}: {IDLE_CONNECTIONS} idle connections on {}",
                        s.key
                    ));
                    quiet(&mut results);
                    match idle(&ctx, s) {
                        Ok(sample) => {
                            log(&format!("  {:.0} bytes/connection", sample.bytes_per_conn));
                            results.idle.entry(s.key.into()).or_default().push(sample);
                        }
                        Err(e) => {
                            log(&format!("  FAILED: {e}"));
                            results.problems.push((
                                "idle".into(),
                                s.key.into(),
                                format!("round {round}: {e}"),
                            ));
                        }
                    }
                }
            }
        }
    }

    if !cli.no_callgrind && run_pingpong_extras {
        if on_path("valgrind").is_none() || on_path("callgrind_annotate").is_none() {
            results
                .notes
                .push("Instructions not counted: valgrind (callgrind) is not installed.".into());
        } else {
            for s in &servers {
                log(&format!(
                    "callgrind: {} ({} and {} messages)",
                    s.key, callgrind_counts.0, callgrind_counts.1
                ));
                match callgrind(&ctx, s, callgrind_counts) {
                    Ok(r) => {
                        log(&format!("  {:.0} instructions/msg", r.per_msg));
                        results.callgrind.insert(s.key.into(), r);
                    }
                    Err(e) => {
                        log(&format!("  FAILED: {e}"));
                        results.problems.push(("callgrind".into(), s.key.into(), e));
                    }
                }
            }
        }
    }

    if !cli.no_micro && cli.servers.is_none() && cli.scenarios.is_none() {
        log("micro benchmarks: cargo bench --bench loop_ops");
        quiet(&mut results);
        match micro(&ctx, cli.quick) {
            Ok(m) => results.micro = m,
            Err(e) => {
                log(&format!("  FAILED: {e}"));
                results
                    .problems
                    .push(("micro".into(), "loop_ops".into(), e));
            }
        }
    }

    let settings = Settings {
        quick: cli.quick,
        rounds,
        duration,
        warmup,
        syscall_messages,
        callgrind_counts,
        server_cpu,
        client_cpu,
        syscall_tool: tool.map(str::to_string),
        command: cli
            .invoked_as
            .clone()
            .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" ")),
        servers: servers.iter().map(|s| s.key.to_string()).collect(),
        scenarios: scenarios.iter().map(|s| s.key.to_string()).collect(),
        idle: run_idle,
        elapsed_s: started.elapsed().as_secs_f64(),
        date,
        machine: report::machine(),
        software: report::versions(),
        revision,
    };
    let json = serde_json::json!({ "settings": &settings, "results": &results });
    let raw = results_dir.join("results.json");
    std::fs::write(&raw, serde_json::to_string_pretty(&json).expect("json"))
        .expect("write results.json");

    write_outputs(&cli, &root, &settings, results);
}

/// Writes the chart and BENCHMARKS.md.
fn write_outputs(cli: &Cli, root: &Path, settings: &Settings, mut results: Results) {
    let chart_path = cli
        .chart
        .clone()
        .unwrap_or_else(|| root.join("bench/benchmarks.svg"));
    let chart_rel = chart_path
        .strip_prefix(root)
        .map(Path::to_path_buf)
        .unwrap_or(chart_path.clone());
    if let Err(e) = chart::draw(&chart_path, settings, &results) {
        results
            .notes
            .push(format!("The chart could not be drawn: {e}"));
    }
    let output = cli
        .output
        .clone()
        .unwrap_or_else(|| root.join("BENCHMARKS.md"));
    let markdown = report::render(settings, &results, &chart_rel.display().to_string());
    std::fs::write(&output, markdown).expect("write the report");
    eprintln!(
        "runner: wrote {} and {}",
        output.display(),
        chart_path.display()
    );
}

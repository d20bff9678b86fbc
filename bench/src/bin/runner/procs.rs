//! Processes: servers and load generators started pinned to a core, driven through their stdin and
//! stdout, and measured from /proc.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub type Result<T> = std::result::Result<T, String>;

/// Pins the command to one CPU (inherited across exec, so valgrind and its guest stay there).
pub fn pin(cmd: &mut Command, cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_SET(cpu, &mut set);
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Lines of a child's stdout, read on a thread so that waits can time out.
fn line_reader(out: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            match line {
                Ok(line) => {
                    if tx.send(line).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    rx
}

fn next_line(rx: &Receiver<String>, timeout: Duration, what: &str) -> Result<String> {
    match rx.recv_timeout(timeout) {
        Ok(line) => Ok(line),
        Err(RecvTimeoutError::Timeout) => Err(format!("{what}: nothing after {timeout:?}")),
        Err(RecvTimeoutError::Disconnected) => Err(format!("{what}: the process ended first")),
    }
}

/// A running echo server.
pub struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    pub pid: u32,
    /// What it printed after `listening on `, up to the backend in parentheses.
    pub endpoint: String,
}

impl Server {
    /// Starts `program args...` (behind `wrapper`, e.g. valgrind, if given), pinned to `cpu`, and
    /// waits for its `listening on ENDPOINT` line.
    pub fn start(
        wrapper: &[String],
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
        cpu: Option<usize>,
        ready_within: Duration,
    ) -> Result<Server> {
        let mut cmd = match wrapper.split_first() {
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(args)
            .env_remove("AIO_BACKEND")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        pin(&mut cmd, cpu);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdin = child.stdin.take();
        let lines = line_reader(child.stdout.take().expect("stdout"));
        let pid = child.id();
        let mut server = Server {
            child,
            stdin,
            pid,
            endpoint: String::new(),
        };
        let line = match next_line(&lines, ready_within, &program.display().to_string()) {
            Ok(line) => line,
            Err(e) => {
                server.kill();
                return Err(e);
            }
        };
        let Some(rest) = line.strip_prefix("listening on ") else {
            server.kill();
            return Err(format!(
                "{}: unexpected first line {line:?}",
                program.display()
            ));
        };
        server.endpoint = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        // Keep draining stdout so that a chatty server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(server)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes its stdin (every server stops at EOF) and waits; SIGTERM, then SIGKILL, if it does
    /// not stop within `grace`.
    pub fn stop(mut self, grace: Duration) -> Result<ExitStatus> {
        drop(self.stdin.take());
        let deadline = Instant::now() + grace;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => break,
                Err(e) => return Err(format!("wait: {e}")),
            }
        }
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        std::thread::sleep(Duration::from_millis(500));
        if let Ok(Some(_)) = self.child.try_wait() {
            return Err("did not stop at stdin EOF; stopped by SIGTERM".into());
        }
        self.kill();
        Err("did not stop at stdin EOF nor on SIGTERM; killed".into())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// CPU time of a process, all threads, in seconds: (user, system), from /proc/PID/stat.
pub fn cpu_seconds(pid: u32) -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name may hold spaces and parentheses: fields are counted after the last ')'.
    let after = &stat[stat.rfind(')').ok_or("bad /proc stat")? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After ')': state is field 3 of stat(5); utime and stime are fields 14 and 15.
    let field = |n: usize| -> Result<f64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse::<f64>().ok())
            .ok_or_else(|| format!("bad field {n} in /proc/{pid}/stat"))
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((field(14)? / ticks, field(15)? / ticks))
}

/// Resident set size in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no VmRSS".to_string())
}

/// What the load generator is asked to do.
#[derive(Clone, Debug)]
pub struct Load {
    pub connections: usize,
    pub size: usize,
    pub depth: usize,
    pub warmup: f64,
    pub duration: f64,
    pub messages: Option<u64>,
    pub idle: bool,
}

/// The load generator's JSON report.
#[derive(Deserialize, Debug, Clone)]
pub struct LoadReport {
    pub messages: u64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
    pub latency_us: Option<LatencyReport>,
}

#[derive(Deserialize, Debug, Clone)]
pub struct LatencyReport {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
}

/// Busy and total CPU time of the whole machine so far, in seconds summed over CPUs (/proc/stat).
pub fn machine_cpu() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("/proc/stat: {e}"))?;
    let line = stat.lines().next().ok_or("empty /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return Err("short /proc/stat".into());
    }
    // user nice system idle iowait irq softirq steal (guest time is already in user); steal counts
    // as busy: a hypervisor taking the CPU disturbs a run as much as another process.
    // irq and softirq are left out: loopback traffic is processed there on behalf of our own processes.
    let busy = v[0] + v[1] + v[2] + v[7];
    let total = busy + v[3] + v[4];
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((busy / ticks, total / ticks))
}

/// How many CPUs' worth of time the machine is busy, sampled over `over`.
pub fn machine_load(over: Duration) -> Result<f64> {
    let (b0, _) = machine_cpu()?;
    let t0 = Instant::now();
    std::thread::sleep(over);
    let (b1, _) = machine_cpu()?;
    Ok((b1 - b0) / t0.elapsed().as_secs_f64())
}

/// Waits until the machine is quiet (other processes using less than `threshold` CPUs), for at
/// most `max_wait`; returns the load last seen and how long it waited.
pub fn wait_for_quiet(threshold: f64, max_wait: Duration) -> (f64, Duration) {
    let start = Instant::now();
    loop {
        let load = machine_load(Duration::from_millis(400)).unwrap_or(0.0);
        if load < threshold || start.elapsed() >= max_wait {
            return (load, start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(1000));
    }
}

/// What happened on the machine during a measured phase.
#[derive(Clone, Copy, Debug, Default)]
pub struct Window {
    /// Wall time of the phase, seconds.
    pub wall: f64,
    /// CPU seconds the load generator used in it.
    pub client_cpu: f64,
    /// CPU seconds the whole machine was busy in it.
    pub machine_busy: f64,
}

/// Runs the load generator against `endpoint` with `--sync`: `before` runs once it is connected
/// and warmed up (right before the measured phase), `after` once the measured phase is drained
/// (before the connections close). With `idle`, `before` runs once all connections are up and
/// `after` right after it.
pub fn run_load<B, A>(
    loadgen: &Path,
    endpoint: &str,
    load: &Load,
    cpu: Option<usize>,
    before: impl FnOnce() -> Result<B>,
    after: impl FnOnce(B) -> Result<A>,
) -> Result<(LoadReport, A, Window)> {
    // Bounds: connecting 10,000 connections or a server under valgrind takes seconds, not minutes.
    let setup = Duration::from_secs_f64(60.0 + load.warmup * 3.0);
    let measured = Duration::from_secs_f64(60.0 + load.duration * 3.0);
    let timeout = (setup + measured).as_secs_f64() + 30.0;
    let mut cmd = Command::new(loadgen);
    cmd.arg(endpoint)
        .args(["--connections", &load.connections.to_string()])
        .args(["--size", &load.size.to_string()])
        .args(["--depth", &load.depth.to_string()])
        .args(["--warmup", &load.warmup.to_string()])
        .args(["--duration", &load.duration.to_string()])
        .args(["--timeout", &timeout.to_string()])
        .arg("--sync")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(m) = load.messages {
        cmd.args(["--messages", &m.to_string()]);
    }
    if load.idle {
        cmd.arg("--idle");
    }
    pin(&mut cmd, cpu);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", loadgen.display()))?;
    let client_pid = child.id();
    let mut stdin = child.stdin.take().expect("stdin");
    let lines = line_reader(child.stdout.take().expect("stdout"));
    let result = (|| {
        let line = next_line(&lines, setup, "loadgen (connect and warm-up)")?;
        if line != "READY" {
            return Err(format!("loadgen: expected READY, got {line:?}"));
        }
        let token = before()?;
        let client0 = cpu_seconds(client_pid)?;
        let machine0 = machine_cpu()?;
        let t0 = Instant::now();
        stdin.write_all(b"go\n").map_err(|e| e.to_string())?;
        if !load.idle {
            let line = next_line(&lines, measured, "loadgen (measured phase)")?;
            if line != "DONE" {
                return Err(format!("loadgen: expected DONE, got {line:?}"));
            }
        }
        let window = Window {
            wall: t0.elapsed().as_secs_f64(),
            client_cpu: {
                let c = cpu_seconds(client_pid)?;
                c.0 + c.1 - client0.0 - client0.1
            },
            machine_busy: machine_cpu()?.0 - machine0.0,
        };
        let after_value = after(token)?;
        if !load.idle {
            stdin.write_all(b"go\n").map_err(|e| e.to_string())?;
        }
        let json = next_line(&lines, Duration::from_secs(30), "loadgen (report)")?;
        let report: LoadReport =
            serde_json::from_str(&json).map_err(|e| format!("loadgen report {json:?}: {e}"))?;
        Ok((report, after_value, window))
    })();
    drop(stdin);
    if result.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    match result {
        Ok(r) if status.success() => Ok(r),
        Ok(_) => Err(format!("loadgen exited with {status}")),
        Err(e) => Err(format!("{e} (loadgen {status})")),
    }
}

/// Runs a command to completion and returns its stdout, or why it failed.
pub fn output_of(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{program} {}: {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is on PATH.
pub fn on_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

/// Raises this process's soft limit on open files to its hard limit (inherited by children);
/// returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        // Root may raise the hard limit too; ask for enough for 10,000 connections plus margin.
        let want = libc::rlimit {
            rlim_cur: limit.rlim_max.max(32_768),
            rlim_max: limit.rlim_max.max(32_768),
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

//! BENCHMARKS.md: medians, ratios to the C server, the targets, the machine and the method.

use std::fmt::Write;

use crate::procs::output_of;
use crate::{IDLE_CONNECTIONS, Results, SCENARIOS, SERVERS, Settings};

/// The median of some values (the mean of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// Median of one metric of one server in one scenario.
pub fn med(
    results: &Results,
    scenario: &str,
    server: &str,
    f: impl Fn(&crate::Sample) -> f64,
) -> Option<f64> {
    let samples = results.throughput.get(scenario)?.get(server)?;
    median(clean(samples).into_iter().map(f).collect())
}

/// Half the range of some values, in % of their median.
pub fn spread_pct(values: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values.collect();
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let m = median(v)?;
    (m > 0.0).then(|| (hi - lo) / 2.0 / m * 100.0)
}

/// Other processes using this many CPUs or more during a measured window disturbed it.
pub const DISTURBED: f64 = 0.05;

/// The runs that no other process disturbed, or all of them if every run was disturbed.
pub fn clean(samples: &[crate::Sample]) -> Vec<&crate::Sample> {
    let undisturbed: Vec<_> = samples.iter().filter(|s| s.others < DISTURBED).collect();
    if undisturbed.is_empty() {
        samples.iter().collect()
    } else {
        undisturbed
    }
}

pub fn syscalls_median(results: &Results, server: &str) -> Option<f64> {
    median(
        results
            .syscalls
            .get(server)?
            .iter()
            .map(|s| s.per_msg)
            .collect(),
    )
}

pub fn idle_median(results: &Results, server: &str) -> Option<f64> {
    median(
        results
            .idle
            .get(server)?
            .iter()
            .map(|s| s.bytes_per_conn)
            .collect(),
    )
}

fn num(v: f64) -> String {
    // Thousands separated, no decimals: 123,456.
    let s = format!("{:.0}", v.abs());
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if v < 0.0 { format!("-{out}") } else { out }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or("–".into(), f)
}

fn ratio(v: Option<f64>, base: Option<f64>) -> String {
    match (v, base) {
        (Some(v), Some(b)) if b > 0.0 => format!("{:.2}x", v / b),
        _ => "–".into(),
    }
}

fn first_line(program: &str, args: &[&str]) -> String {
    output_of(program, args)
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "not found".into())
}

pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or("?".into(), |kib| {
            format!("{:.0} GiB", kib / 1024.0 / 1024.0)
        });
    let kernel = first_line("uname", &["-srm"]);
    format!("{model}, {cpus} CPUs, {mem_gib} RAM; {kernel}")
}

pub fn versions() -> String {
    let boost = std::fs::read_to_string("/usr/include/boost/version.hpp")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("#define BOOST_LIB_VERSION "))
                .map(|v| v.trim_matches('"').replace('_', "."))
        })
        .unwrap_or_else(|| "not installed".into());
    let libuv = output_of("pkg-config", &["--modversion", "libuv"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "not installed".into());
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock"))
        .unwrap_or_default();
    let tokio = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"tokio\"\n"))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map_or("?".into(), |v| v.trim_matches('"').to_string());
    format!(
        "{}; {}; Boost {boost} (Asio, header-only); libuv {libuv}; tokio {tokio}; {}; {}",
        first_line("rustc", &["--version"]),
        first_line("gcc", &["--version"]),
        first_line("valgrind", &["--version"]),
        first_line("perf", &["--version"]),
    )
}

struct Target {
    what: String,
    goal: &'static str,
    shown: String,
    met: Option<bool>,
}

/// The aio servers the targets are checked for (keys of [`SERVERS`]): callbacks and async/await,
/// each with an operation per read and with a persistent read.
const AIO_STYLES: [&str; 4] = ["aio", "aio-stream", "aio-async", "aio-async-stream"];

/// The aio styles with their labels, as [`SERVERS`] names them.
fn aio_styles() -> impl Iterator<Item = (&'static str, &'static str)> {
    AIO_STYLES.into_iter().map(|key| {
        let label = SERVERS
            .iter()
            .find(|s| s.key == key)
            .map_or(key, |s| s.label);
        (key, label)
    })
}

/// `a / b`, with both shown: `0.950x (1.20 µs vs 1.26 µs)`.
fn versus(a: Option<f64>, b: Option<f64>, f: impl Fn(f64) -> String) -> (Option<f64>, String) {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => {
            (Some(a / b), format!("{:.3}x ({} vs {})", a / b, f(a), f(b)))
        }
        _ => (None, "–".into()),
    }
}

fn targets(results: &Results) -> Vec<Target> {
    let cg = |k: &str| results.callgrind.get(k).map(|r| r.per_msg);
    let cpu = |scenario: &str, k: &str| med(results, scenario, k, |s| s.cpu_us_per_msg);
    let infl = |k: &str| med(results, "inflight", k, |s| s.msgs_per_sec);
    let micros = |v: f64| format!("{v:.2} µs");
    let mut t = Vec::new();
    let mut push = |what: String, goal, shown, met| {
        t.push(Target {
            what,
            goal,
            shown,
            met,
        })
    };
    for (key, label) in aio_styles() {
        let (goal, bound) = match key {
            "aio" => ("≤ 250", 250.0),
            "aio-stream" => ("≤ 200", 200.0),
            "aio-async" => ("≤ 400", 400.0),
            _ => ("≤ 500", 500.0),
        };
        let instr = cg(key);
        push(
            format!("{label}: user-space instructions per echoed message (64 x 64 B ping-pong)"),
            goal,
            opt(instr, num),
            instr.map(|v| v <= bound),
        );
    }
    for (key, label) in aio_styles().take(2) {
        let sys = syscalls_median(results, key);
        push(
            format!("{label}: syscalls per echoed message (64 x 64 B ping-pong)"),
            "≤ 2.1",
            opt(sys, |v| format!("{v:.3}")),
            sys.map(|v| v <= 2.1),
        );
    }
    for (key, label) in aio_styles() {
        let (r, shown) = versus(cpu("pingpong", key), cpu("pingpong", "c"), micros);
        push(
            format!("{label}: server CPU per message vs C (64 x 64 B ping-pong)"),
            "≤ 1.03x",
            shown,
            r.map(|r| r <= 1.03),
        );
    }
    let (r, shown) = versus(cpu("pingpong", "aio-poll"), cpu("pingpong", "aio"), micros);
    push(
        "aio callbacks on poll: server CPU per message vs on epoll (64 x 64 B ping-pong)".into(),
        "≤ 1.15x",
        shown,
        r.map(|r| r <= 1.15),
    );
    for (key, label) in aio_styles() {
        let (r, shown) = versus(infl(key), infl("tokio"), |v| format!("{} msg/s", num(v)));
        push(
            format!("{label}: msgs/s with 64 x 64 B x 16 in flight vs tokio"),
            "≥ 1.00x",
            shown,
            r.map(|r| r >= 1.0),
        );
    }
    let sys = syscalls_median(results, "aio-uring");
    push(
        "aio on io_uring: syscalls per echoed message (64 x 64 B ping-pong)".into(),
        "< 1.0",
        opt(sys, |v| format!("{v:.3}")),
        sys.map(|v| v < 1.0),
    );
    for (scenario, shape) in [
        ("pingpong", "64 x 64 B ping-pong"),
        ("conns1000", "1,000 conns ping-pong"),
    ] {
        let (r, shown) = versus(cpu(scenario, "aio-uring"), cpu(scenario, "c"), micros);
        push(
            format!("aio on io_uring: server CPU per message vs C ({shape})"),
            "≤ 0.80x",
            shown,
            r.map(|r| r <= 0.80),
        );
    }
    for (key, label) in aio_styles() {
        let (a, tk) = (idle_median(results, key), idle_median(results, "tokio"));
        push(
            format!("{label}: server memory per idle connection vs tokio"),
            "≤ tokio",
            match (a, tk) {
                (Some(a), Some(t)) => format!("{} B vs {} B", num(a), num(t)),
                _ => "–".into(),
            },
            a.zip(tk).map(|(a, t)| a <= t),
        );
    }
    t
}

/// A short function name for the tables: generic arguments and long paths kept, objects dropped
/// for the program itself.
fn short_fn(f: &str) -> String {
    let s = f.replace('|', "\\|");
    if s.len() > 140 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(139).map_or(s.len(), |(i, _)| i)]
        )
    } else {
        s
    }
}

pub fn render(settings: &Settings, results: &Results, chart: &str) -> String {
    let mut md = String::new();
    let servers = settings.servers();
    let label = |k: &str| {
        servers
            .iter()
            .find(|s| s.key == k)
            .map_or(k.to_string(), |s| s.label.to_string())
    };

    let _ = writeln!(md, "# Benchmarks\n");
    let _ = writeln!(
        md,
        "aio's echo servers beside a hand-written C epoll loop (the floor), tokio, Boost.Asio and libuv, all single-threaded, \
         under the same load generator. Written by the benchmark runner: edit `bench/`, not this file, and run it again.\n"
    );
    let _ = writeln!(md, "- **Date:** {}", settings.date);
    let _ = writeln!(
        md,
        "- **Command:** `{}`{}",
        settings.command,
        if settings.quick {
            " (quick mode: fewer, shorter runs)"
        } else {
            ""
        }
    );
    let _ = writeln!(md, "- **Machine:** {}", settings.machine);
    let pinning = match (settings.server_cpu, settings.client_cpu) {
        (Some(s), Some(c)) => format!("server pinned to CPU {s}, load generator to CPU {c}"),
        _ => "not pinned".into(),
    };
    let _ = writeln!(
        md,
        "- **Placement:** {pinning}; loopback TCP (and one Unix-socket scenario)"
    );
    let _ = writeln!(md, "- **Software:** {}", settings.software);
    if !settings.revision.is_empty() {
        let _ = writeln!(
            md,
            "- **aio measured at:** `{}` (`git describe --always --dirty`; `-dirty`: with uncommitted changes)",
            settings.revision
        );
    }
    let _ = writeln!(
        md,
        "- **Runs:** {} rounds, servers alternating within each round; {} s warm-up and {} s measured per run; medians shown; \
         syscalls over {} messages per round ({}); callgrind over {} and {} messages; the whole run took {:.0} s",
        settings.rounds,
        settings.warmup,
        settings.duration,
        num(settings.syscall_messages as f64),
        settings.syscall_tool.as_deref().unwrap_or("not counted"),
        num(settings.callgrind_counts.0 as f64),
        num(settings.callgrind_counts.1 as f64),
        settings.elapsed_s
    );
    let others: Vec<f64> = results
        .throughput
        .values()
        .flat_map(|m| m.values().flatten().map(|x| x.others))
        .collect();
    if !others.is_empty() {
        let max = others.iter().cloned().fold(0.0, f64::max);
        let disturbed = others.iter().filter(|&&x| x >= 0.05).count();
        let _ = writeln!(
            md,
            "- **Other load:** {disturbed} of {} throughput runs saw other processes use 0.05 CPUs or more during the \
             measured window (at most {max:.2}); {:.0} s spent waiting for a quiet machine before runs, {} runs started \
             without one",
            others.len(),
            results.quiet_waited_s,
            results.started_under_load
        );
    }
    for note in &results.notes {
        let _ = writeln!(md, "- **Note:** {note}");
    }

    let _ = writeln!(md, "\n## Where aio stands against its targets\n");
    let _ = writeln!(md, "| target | goal | measured | met |\n|---|---|---|---|");
    for t in targets(results) {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(md, "| {} | {} | {} | {met} |", t.what, t.goal, t.shown);
    }

    // How far apart the rounds of one server were: below that, differences are not resolved.
    let cpu_spreads: Vec<f64> = results
        .throughput
        .get("pingpong")
        .map(|by| {
            by.values()
                .filter_map(|v| spread_pct(clean(v).into_iter().map(|x| x.cpu_us_per_msg)))
                .collect()
        })
        .unwrap_or_default();
    if let Some(typical) = median(cpu_spreads) {
        let _ = writeln!(
            md,
            "\nReading these: instruction counts are exact and repeatable (valgrind counts, whatever else runs). \
             Server CPU per message is dominated by the kernel and, on this machine, one server's rounds differ \
             by ±{typical:.0}% (median half-range, 64 x 64 B): a ratio to C closer to 1.00 than that is not resolved. \
             Syscalls per message depend on how many connections each `epoll_wait` returns, that is on timing: the \
             C server's own figure is the yardstick of the same run.",
        );
    }
    let _ = writeln!(md, "\n![Benchmark chart]({chart})\n");

    let _ = writeln!(md, "## Throughput, CPU and latency\n");
    let _ = writeln!(
        md,
        "Medians over the rounds that no other process disturbed (others below {DISTURBED} CPUs; all rounds when every \
         one was disturbed), the count of such clean rounds beside `others`. msgs/s: echoed messages per second in the \
         measured window (± the half-range across the rounds used, in % of the median). \
         CPU/msg: server utime + stime (from /proc/PID/stat) over the window divided by the messages echoed in it \
         (± as for msgs/s); user and system shares beside it. busy: server and load-generator CPU time over wall time (100%: that core was \
         saturated). others: CPUs' worth of time used by other processes on the machine during the window (0.00 on a \
         quiet machine; anything above a few hundredths disturbed the run). Latency: from queuing a message to its last byte coming back, \
         as the load generator sees it. Ratios are to the C server.\n"
    );
    let c = "c";
    for sc in settings.scenarios() {
        let Some(by_server) = results.throughput.get(sc.key) else {
            continue;
        };
        let _ = writeln!(
            md,
            "### {} (server buffer {} B)\n",
            sc.title,
            num(sc.buffer as f64)
        );
        let _ = writeln!(
            md,
            "| server | msgs/s | vs C | MB/s | CPU/msg µs | vs C | user / sys µs | busy server / loadgen | others | p50 µs | p99 µs | p99.9 µs |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for s in &servers {
            let Some(samples) = by_server.get(s.key) else {
                let _ = writeln!(md, "| {} | failed | | | | | | | | | | |", s.label);
                continue;
            };
            let used = clean(samples);
            let m = |f: fn(&crate::Sample) -> f64| median(used.iter().map(|x| f(x)).collect());
            let rate = m(|x| x.msgs_per_sec);
            let spread = spread_pct(used.iter().map(|x| x.msgs_per_sec))
                .map_or(String::new(), |p| format!(" ±{p:.0}%"));
            let others = format!(
                "{} ({}/{} clean)",
                opt(m(|x| x.others), |v| format!("{v:.2}")),
                samples.iter().filter(|x| x.others < DISTURBED).count(),
                samples.len()
            );
            let cpu = m(|x| x.cpu_us_per_msg);
            let _ = writeln!(
                md,
                "| {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                s.label,
                opt(rate, num),
                spread,
                ratio(rate, med(results, sc.key, c, |x| x.msgs_per_sec)),
                opt(m(|x| x.mb_per_sec), |v| format!("{v:.1}")),
                opt(cpu, |v| format!(
                    "{v:.2} ±{:.0}%",
                    spread_pct(used.iter().map(|x| x.cpu_us_per_msg)).unwrap_or(0.0)
                )),
                ratio(cpu, med(results, sc.key, c, |x| x.cpu_us_per_msg)),
                match (m(|x| x.user_us_per_msg), m(|x| x.sys_us_per_msg)) {
                    (Some(u), Some(s)) => format!("{u:.2} / {s:.2}"),
                    _ => "–".into(),
                },
                match (m(|x| x.server_busy), m(|x| x.client_busy)) {
                    (Some(a), Some(b)) => format!("{:.0}% / {:.0}%", a * 100.0, b * 100.0),
                    _ => "–".into(),
                },
                others,
                opt(m(|x| x.p50_us), num),
                opt(m(|x| x.p99_us), num),
                opt(m(|x| x.p999_us), num),
            );
        }
        let _ = writeln!(md);
    }

    if !results.callgrind.is_empty() || !results.syscalls.is_empty() {
        let _ = writeln!(
            md,
            "## User-space instructions and syscalls per message (64 x 64 B ping-pong)\n"
        );
        let _ = writeln!(
            md,
            "Instructions: the server run twice under `valgrind --tool=callgrind` with {} and {} messages over the same 64 \
             connections; (total₂ − total₁) / (messages₂ − messages₁), so start-up, connection set-up and shutdown cancel \
             out. Counts user-space instructions only (the kernel's share is in CPU/msg above). Under valgrind the server \
             is slow, so more connections are ready per `epoll_wait` than at full speed: the per-wait share is smaller \
             here than natively.\n\n\
             Syscalls: {} on the running server (no valgrind) over {} messages after a warm-up, per round; medians. \
             By name: per message, in the median round's proportions.\n",
            num(settings.callgrind_counts.0 as f64),
            num(settings.callgrind_counts.1 as f64),
            match settings.syscall_tool.as_deref() {
                Some("perf") =>
                    "`perf stat -e raw_syscalls:sys_enter -e syscalls:sys_enter_NAME... -p PID` (the total from \
                 `raw_syscalls`, 26 common syscalls by name, the rest as `other`)",
                Some(_) => "`strace -c -f -p PID`",
                None => "not counted",
            },
            num(settings.syscall_messages as f64)
        );
        let _ = writeln!(
            md,
            "| server | instructions/msg | vs C | syscalls/msg | vs C | syscalls by name, per message |\n|---|---:|---:|---:|---:|---|"
        );
        let cg = |k: &str| results.callgrind.get(k).map(|r| r.per_msg);
        for s in &servers {
            let sys = syscalls_median(results, s.key);
            let by_name = results
                .syscalls
                .get(s.key)
                .and_then(|v| {
                    let mut v = v.clone();
                    v.sort_by(|a, b| a.per_msg.total_cmp(&b.per_msg));
                    v.get(v.len() / 2).cloned()
                })
                .map_or(String::new(), |m| {
                    m.by_name
                        .iter()
                        .filter(|(_, v)| *v >= 0.001)
                        .map(|(n, v)| format!("{n} {v:.3}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                s.label,
                opt(cg(s.key), num),
                ratio(cg(s.key), cg(c)),
                opt(sys, |v| format!("{v:.3}")),
                ratio(sys, syscalls_median(results, c)),
                by_name
            );
        }
        let _ = writeln!(md);
    }

    if settings.idle && !results.idle.is_empty() {
        let _ = writeln!(md, "## Memory per idle connection\n");
        let _ = writeln!(
            md,
            "{} connections opened in batches, one byte echoed on each (so every session exists and holds its 1,024-byte \
             buffer), then idle; server VmRSS (/proc/PID/status) after minus before, divided by the connections. \
             Kernel socket memory is not in RSS.\n",
            num(IDLE_CONNECTIONS as f64)
        );
        let _ = writeln!(
            md,
            "| server | bytes/connection | vs tokio | vs C |\n|---|---:|---:|---:|"
        );
        for s in &servers {
            let v = idle_median(results, s.key);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} |",
                s.label,
                opt(v, num),
                ratio(v, idle_median(results, "tokio")),
                ratio(v, idle_median(results, c))
            );
        }
        let _ = writeln!(md);
    }

    for key in AIO_STYLES.into_iter().chain(["c"]) {
        let Some(r) = results.callgrind.get(key) else {
            continue;
        };
        let _ = writeln!(md, "## Where the instructions of {} go\n", label(key));
        let _ = writeln!(
            md,
            "Self cost per echoed message by function (inlined code counted in the function it was inlined into), the \
             same subtraction as above applied function by function; functions under 1 instruction per message left out. \
             Total {:.0} per message. For line-level detail: `callgrind_annotate --auto=yes {}` (the run with more \
             messages; start-up included).\n",
            r.per_msg, r.files.1
        );
        let _ = writeln!(
            md,
            "| instructions/msg | share | function |\n|---:|---:|---|"
        );
        let mut shown = 0.0;
        for (f, v) in r.functions.iter().filter(|(_, v)| *v >= 1.0).take(25) {
            shown += v;
            let _ = writeln!(
                md,
                "| {v:.1} | {:.1}% | `{}` |",
                v / r.per_msg * 100.0,
                short_fn(f)
            );
        }
        let _ = writeln!(
            md,
            "| {:.1} | {:.1}% | everything else |\n",
            r.per_msg - shown,
            (r.per_msg - shown) / r.per_msg * 100.0
        );
    }

    if !results.micro.is_empty() {
        let _ = writeln!(md, "## The loop's own operations (criterion)\n");
        let _ = writeln!(
            md,
            "`cargo bench --bench loop_ops` (`benches/loop_ops.rs`{}), pinned to the server's core: criterion's median \
             time per operation, aio beside tokio's current-thread runtime in the same run. post: a closure queued and \
             run (tokio: a task spawned and run, its nearest equivalent); spawn_await: a task spawned and awaited; \
             timer_schedule_cancel: a one-shot timer armed by its first poll and dropped; eager_read: 64 bytes written \
             by the peer, then `read_some` on a socket that already has them (the write included).\n",
            if settings.quick { ", `-- --quick`" } else { "" }
        );
        let _ = writeln!(
            md,
            "| operation | aio ns | tokio ns | aio / tokio |\n|---|---:|---:|---:|"
        );
        for g in crate::MICRO_GROUPS {
            if let Some((a, t)) = results.micro.get(g) {
                let _ = writeln!(md, "| {g} | {a:.1} | {t:.1} | {:.2}x |", a / t);
            }
        }
        let _ = writeln!(md);
    }

    let _ = writeln!(md, "## How it is measured\n");
    let _ = writeln!(
        md,
        "- Servers (`bench/`): `aio_echo` (callbacks, the README's server: `read_some` then `write_all`), \
         `aio_echo_stream` (callbacks in libuv's model: one persistent `read_each`, `try_write` from its handler, \
         `write_all` only for what the socket did not take), `aio_echo_async` (async/await, \
         `examples/echo_server_async.rs`: `read_some` then `write_all`), `aio_echo_async_stream` (async/await with a \
         persistent read: each chunk of `read_stream` awaited, `try_write`, `write_all` only for what the socket did \
         not take), `tokio_echo` (current-thread runtime, a task per connection), `c_epoll.c` \
         (level-triggered epoll, one read and one write per message, no allocation per message), `asio_echo.cpp` \
         (Boost.Asio, `io_context(1)`, `async_read_some` + `async_write`, shared_ptr sessions), `uv_echo.c` (libuv, \
         `uv_try_write` from the read callback). Each is single-threaded, serves a connection with one buffer of the \
         scenario's size (read what has arrived, write it all back, read again), sets `TCP_NODELAY` on accepted \
         sockets, prints `listening on ...` and stops on stdin EOF."
    );
    let _ = writeln!(
        md,
        "- Load generator (`bench/src/bin/loadgen.rs`): one thread, its own level-triggered epoll loop, `TCP_NODELAY`; \
         connections opened in batches of 256 with one byte echoed on each; every echoed byte checked against the \
         stream sent; a warm-up, then a measured phase bracketed by the runner (the CPU readings, perf and strace cover \
         exactly that phase), drained so every message issued in it completes in it. The messages a connection \
         issues together (as many as an echo just completed) go out in one write. Latencies in an HDR histogram."
    );
    let _ = writeln!(
        md,
        "- Scenarios: {}; memory with {} idle connections.",
        SCENARIOS
            .iter()
            .map(|s| s.title)
            .collect::<Vec<_>>()
            .join("; "),
        num(IDLE_CONNECTIONS as f64)
    );
    let _ = writeln!(
        md,
        "- With 64-byte messages most of a server's CPU time is the kernel's (loopback TCP); the user-space \
         instruction count is what tells the event loops apart. With two cores, server and load generator each \
         have one: when a server is faster than the load generator, its messages/s is capped by the generator \
         and its `busy` is below 100%; CPU/msg and instructions/msg remain comparable."
    );
    let _ = writeln!(
        md,
        "- Raw numbers of every run: `bench/target/results/results.json` after a run (not committed)."
    );

    if !results.problems.is_empty() {
        let _ = writeln!(md, "\n## Runs that failed or were skipped\n");
        for (what, server, why) in &results.problems {
            let _ = writeln!(md, "- {what}, {server}: {why}");
        }
    }
    md
}

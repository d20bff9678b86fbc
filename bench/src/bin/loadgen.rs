//! The load generator: many echo connections driven by one thread on its own epoll loop.
//!
//! ```text
//! loadgen 127.0.0.1:8080 --connections 64 --size 64 --depth 1 --warmup 1 --duration 5
//! loadgen unix:/tmp/echo.sock --connections 8 --size 65536 --messages 20000
//! loadgen 127.0.0.1:8080 --connections 10000 --idle --sync
//! ```
//!
//! Every connection sends a byte stream of its own (a slice of a fixed pseudo-random pattern,
//! starting at a different place per connection) cut into messages of `--size` bytes, keeps
//! `--depth` of them in flight, and checks every byte that comes back against the stream it sent. A
//! message is complete when its last byte has come back; its latency runs from when it was queued
//! to then.
//!
//! Phases: connect (in batches, each connection exchanging one byte so that the server has accepted
//! it before the next batch: the accept queue never overflows), warm-up (not recorded, then
//! drained), and the measured phase, which ends after `--duration` seconds or `--messages` messages,
//! whichever comes first, and is drained: every message issued in it is completed in it, so message
//! counts are exact. `--timeout` bounds the whole run: a server that stops answering is an error,
//! never a hang.
//!
//! With `--sync`, the runner brackets the measured phase: the generator prints `READY` once
//! connected and warmed up and waits for a line on stdin, then prints `DONE` once the phase is
//! drained and waits for another line before it closes its connections. With `--idle` there is no
//! traffic after the one-byte exchange: `READY` once all connections are up, then wait.
//!
//! The report is one line of JSON on stdout (after `READY`/`DONE` with `--sync`). Exit status: 0
//! on success, 2 on bad arguments, 3 when an echoed byte is wrong or a connection fails, 4 on
//! timeout.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::exit;
use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;
use rustix::event::epoll;
use rustix::io::Errno;
use serde::Serialize;

/// The pattern repeats every `PERIOD` bytes (a prime, so connections' streams do not line up).
const PERIOD: usize = 1_000_003;
/// The most bytes one read or write handles; the pattern is extended by this much so that any
/// `CHUNK` bytes from a position below `PERIOD` are one contiguous slice.
const CHUNK: usize = 256 * 1024;
/// How many connections are opened before checking that the server has accepted them all.
const CONNECT_BATCH: usize = 256;

#[derive(Parser, Debug)]
#[command(about = "Echo load generator: verifies every byte, reports JSON on stdout")]
struct Args {
    /// Where the echo server listens: IP:PORT, [IPv6]:PORT or unix:PATH.
    endpoint: String,
    /// Concurrent connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages in flight per connection (1: ping-pong).
    #[arg(long, default_value_t = 1)]
    depth: usize,
    /// Seconds of warm-up before the measured phase (not recorded).
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Seconds the measured phase lasts at most.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Messages the measured phase issues at most (all connections together).
    #[arg(long)]
    messages: Option<u64>,
    /// Seconds the whole run may last; beyond it the run fails (exit status 4).
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Bracket the measured phase with READY / DONE lines and wait for a line on stdin after each.
    #[arg(long)]
    sync: bool,
    /// Only open the connections (one byte echoed on each) and keep them idle.
    #[arg(long)]
    idle: bool,
}

#[derive(Serialize)]
struct Report {
    endpoint: String,
    connections: usize,
    size: usize,
    depth: usize,
    connect_seconds: f64,
    /// Messages echoed in the measured phase (0 with `--idle`).
    messages: u64,
    seconds: f64,
    msgs_per_sec: f64,
    /// Echoed payload, one direction, in 10^6 bytes per second.
    mb_per_sec: f64,
    bytes_verified: u64,
    latency_us: Option<Latency>,
}

#[derive(Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    mean: f64,
}

/// One connection's state.
struct Conn {
    fd: OwnedFd,
    /// Where this connection's stream starts in the pattern.
    base: usize,
    /// Bytes of the stream queued to send so far (the end of the last issued message).
    queued: u64,
    /// Bytes written so far.
    sent: u64,
    /// Bytes received (and verified) so far.
    received: u64,
    /// Messages in flight, oldest first: when each was issued and the stream offset it ends at.
    in_flight: VecDeque<(Instant, u64)>,
    /// Whether EPOLLOUT is in the interest set (a write was cut short).
    watching_out: bool,
}

struct Generator {
    args: Args,
    pattern: Vec<u8>,
    epoll: OwnedFd,
    conns: Vec<Conn>,
    read_buf: Vec<u8>,
    hard_deadline: Instant,
    bytes_verified: u64,
}

fn fail(status: i32, msg: impl std::fmt::Display) -> ! {
    eprintln!("loadgen: {msg}");
    exit(status)
}

/// A pseudo-random pattern of `PERIOD + CHUNK` bytes whose tail repeats its head.
fn make_pattern() -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut pattern: Vec<u8> = (0..PERIOD)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect();
    pattern.extend_from_within(..CHUNK);
    pattern
}

/// Raises the soft limit on open files to the hard limit (10,000 connections need it).
fn raise_nofile_limit() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, raised);
}

enum Target {
    Tcp(SocketAddr),
    Unix(String),
}

/// A connected stream, blocking, with a read timeout, as an fd.
fn connect(target: &Target, timeout: Duration) -> std::io::Result<OwnedFd> {
    match target {
        Target::Tcp(addr) => {
            let s = TcpStream::connect_timeout(addr, timeout)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(timeout))?;
            Ok(s.into())
        }
        Target::Unix(path) => {
            let s = UnixStream::connect(path)?;
            s.set_read_timeout(Some(timeout))?;
            Ok(s.into())
        }
    }
}

impl Generator {
    fn remaining(&self) -> Duration {
        self.hard_deadline.saturating_duration_since(Instant::now())
    }

    /// Opens every connection, one byte echoed on each (in batches), then makes them non-blocking
    /// and registers them with epoll.
    fn open_connections(&mut self) {
        let target = match self.args.endpoint.strip_prefix("unix:") {
            Some(path) => Target::Unix(path.to_string()),
            None => Target::Tcp(self.args.endpoint.parse().unwrap_or_else(|e| {
                fail(2, format!("bad endpoint {:?}: {e}", self.args.endpoint))
            })),
        };
        let n = self.args.connections;
        let mut opened = 0;
        while opened < n {
            let batch = CONNECT_BATCH.min(n - opened);
            for i in opened..opened + batch {
                let timeout = self.remaining().max(Duration::from_millis(1));
                let fd = connect(&target, timeout).unwrap_or_else(|e| {
                    fail(3, format!("connection {i} to {}: {e}", self.args.endpoint))
                });
                let base = (i * 7919 * 13) % PERIOD;
                match rustix::io::write(&fd, &self.pattern[base..base + 1]) {
                    Ok(1) => {}
                    Ok(_) => fail(3, format!("connection {i}: first write took nothing")),
                    Err(e) => fail(3, format!("connection {i}: first write: {e}")),
                }
                self.conns.push(Conn {
                    fd,
                    base,
                    queued: 1,
                    sent: 1,
                    received: 0,
                    in_flight: VecDeque::new(),
                    watching_out: false,
                });
            }
            // The server accepts in order: once every connection of the batch has its byte back,
            // all of them are accepted and served.
            for i in opened..opened + batch {
                let conn = &mut self.conns[i];
                let mut byte = [0u8; 1];
                // Blocking, with SO_RCVTIMEO set to what is left of the run: a timeout is EAGAIN.
                match rustix::io::read(&conn.fd, &mut byte) {
                    Ok(1) if byte[0] == self.pattern[conn.base] => conn.received = 1,
                    Ok(1) => fail(3, format!("connection {i}: wrong first byte echoed")),
                    Ok(_) => fail(3, format!("connection {i}: closed by the server")),
                    Err(e) => fail(4, format!("connection {i}: no echo of the first byte: {e}")),
                }
            }
            opened += batch;
        }
        self.bytes_verified += n as u64;
        for (i, conn) in self.conns.iter().enumerate() {
            rustix::io::ioctl_fionbio(&conn.fd, true).expect("non-blocking");
            epoll::add(
                &self.epoll,
                &conn.fd,
                epoll::EventData::new_u64(i as u64),
                epoll::EventFlags::IN,
            )
            .unwrap_or_else(|e| fail(3, format!("epoll_ctl: {e}")));
        }
    }

    /// Queues `count` more messages on connection `i` and writes what it can, in one write when
    /// the socket takes it all (a client with several messages ready sends them together: one
    /// write per message would make this generator, not the server, the bottleneck with messages
    /// in flight).
    fn issue(&mut self, i: usize, count: u64, now: Instant) {
        let size = self.args.size as u64;
        let conn = &mut self.conns[i];
        for _ in 0..count {
            conn.queued += size;
            conn.in_flight.push_back((now, conn.queued));
        }
        self.flush(i);
    }

    /// Writes queued bytes until done or `EAGAIN`; watches EPOLLOUT only while a write is cut short.
    fn flush(&mut self, i: usize) {
        let conn = &mut self.conns[i];
        while conn.sent < conn.queued {
            let pos = (conn.base as u64 + conn.sent) as usize % PERIOD;
            let len = ((conn.queued - conn.sent) as usize).min(CHUNK);
            match rustix::io::write(&conn.fd, &self.pattern[pos..pos + len]) {
                Ok(n) => conn.sent += n as u64,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => {
                    if !conn.watching_out {
                        conn.watching_out = true;
                        let flags = epoll::EventFlags::IN | epoll::EventFlags::OUT;
                        epoll::modify(
                            &self.epoll,
                            &conn.fd,
                            epoll::EventData::new_u64(i as u64),
                            flags,
                        )
                        .unwrap_or_else(|e| fail(3, format!("epoll_ctl: {e}")));
                    }
                    return;
                }
                Err(e) => fail(3, format!("connection {i}: write: {e}")),
            }
        }
        if conn.watching_out {
            conn.watching_out = false;
            epoll::modify(
                &self.epoll,
                &conn.fd,
                epoll::EventData::new_u64(i as u64),
                epoll::EventFlags::IN,
            )
            .unwrap_or_else(|e| fail(3, format!("epoll_ctl: {e}")));
        }
    }

    /// Reads once from connection `i`, verifies the bytes and returns how many messages completed
    /// (their latencies recorded in `hist` when given).
    fn receive(&mut self, i: usize, now: Instant, hist: Option<&mut Histogram<u64>>) -> u64 {
        let conn = &mut self.conns[i];
        let n = match rustix::io::read(&conn.fd, &mut self.read_buf[..]) {
            Ok(0) => fail(
                3,
                format!(
                    "connection {i}: closed by the server after {} bytes",
                    conn.received
                ),
            ),
            Ok(n) => n,
            Err(Errno::AGAIN) | Err(Errno::INTR) => return 0,
            Err(e) => fail(3, format!("connection {i}: read: {e}")),
        };
        if conn.received + n as u64 > conn.sent {
            fail(3, format!("connection {i}: more bytes echoed than sent"));
        }
        let pos = (conn.base as u64 + conn.received) as usize % PERIOD;
        let expected = &self.pattern[pos..pos + n];
        if self.read_buf[..n] != *expected {
            let at = self.read_buf[..n]
                .iter()
                .zip(expected)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            fail(
                3,
                format!(
                    "connection {i}: wrong byte echoed at stream offset {}",
                    conn.received + at as u64
                ),
            );
        }
        conn.received += n as u64;
        self.bytes_verified += n as u64;
        let mut done = 0;
        let mut hist = hist;
        while let Some(&(issued, end)) = conn.in_flight.front() {
            if conn.received < end {
                break;
            }
            conn.in_flight.pop_front();
            done += 1;
            if let Some(h) = hist.as_deref_mut() {
                let ns = now.saturating_duration_since(issued).as_nanos() as u64;
                h.saturating_record(ns.max(1));
            }
        }
        done
    }

    /// Runs one phase: `depth` messages in flight on every connection until `duration` has passed
    /// or `budget` messages were issued, then drains. Returns (messages completed, seconds).
    fn phase(
        &mut self,
        duration: Duration,
        budget: Option<u64>,
        mut hist: Option<&mut Histogram<u64>>,
    ) -> (u64, f64) {
        let start = Instant::now();
        let deadline = start + duration;
        let mut budget = budget.unwrap_or(u64::MAX);
        let mut outstanding: u64 = 0;
        let mut completed: u64 = 0;
        let mut stopping = false;
        // Round-robin, so that a budget smaller than connections x depth still spreads.
        let mut first = vec![0u64; self.conns.len()];
        for _ in 0..self.args.depth {
            for count in first.iter_mut() {
                if budget == 0 {
                    break;
                }
                budget -= 1;
                outstanding += 1;
                *count += 1;
            }
        }
        for (i, count) in first.into_iter().enumerate() {
            if count > 0 {
                self.issue(i, count, start);
            }
        }
        let mut events: Vec<epoll::Event> = Vec::with_capacity(1024);
        let wait = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 10_000_000,
        };
        while outstanding > 0 {
            events.clear();
            match epoll::wait(
                &self.epoll,
                rustix::buffer::spare_capacity(&mut events),
                Some(&wait),
            ) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => fail(3, format!("epoll_wait: {e}")),
            }
            let now = Instant::now();
            if !stopping && now >= deadline {
                stopping = true;
            }
            if now >= self.hard_deadline {
                fail(
                    4,
                    format!("timed out with {outstanding} messages still unanswered"),
                );
            }
            for ev in &events {
                let i = ev.data.u64() as usize;
                let flags = ev.flags;
                if flags.contains(epoll::EventFlags::OUT) {
                    self.flush(i);
                }
                if flags.intersects(
                    epoll::EventFlags::IN | epoll::EventFlags::ERR | epoll::EventFlags::HUP,
                ) {
                    let done = self.receive(i, now, hist.as_deref_mut());
                    outstanding -= done;
                    completed += done;
                    let again = if stopping { 0 } else { done.min(budget) };
                    if again > 0 {
                        budget -= again;
                        outstanding += again;
                        self.issue(i, again, now);
                    }
                }
            }
        }
        (completed, start.elapsed().as_secs_f64())
    }
}

fn wait_for_line() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn main() {
    let args = Args::parse();
    if args.connections == 0 || args.size == 0 || args.depth == 0 {
        fail(2, "--connections, --size and --depth must be at least 1");
    }
    if args.size > CHUNK * 64 {
        fail(2, format!("--size is at most {} bytes", CHUNK * 64));
    }
    raise_nofile_limit();
    let started = Instant::now();
    let mut generator = Generator {
        hard_deadline: started + Duration::from_secs_f64(args.timeout),
        args,
        pattern: make_pattern(),
        epoll: epoll::create(epoll::CreateFlags::CLOEXEC).expect("epoll_create"),
        conns: Vec::new(),
        read_buf: vec![0; CHUNK],
        bytes_verified: 0,
    };
    generator.open_connections();
    let connect_seconds = started.elapsed().as_secs_f64();

    let mut report = Report {
        endpoint: generator.args.endpoint.clone(),
        connections: generator.args.connections,
        size: generator.args.size,
        depth: generator.args.depth,
        connect_seconds,
        messages: 0,
        seconds: 0.0,
        msgs_per_sec: 0.0,
        mb_per_sec: 0.0,
        bytes_verified: 0,
        latency_us: None,
    };

    if generator.args.idle {
        if generator.args.sync {
            say("READY");
            wait_for_line();
        }
    } else {
        if generator.args.warmup > 0.0 {
            generator.phase(Duration::from_secs_f64(generator.args.warmup), None, None);
        }
        if generator.args.sync {
            say("READY");
            wait_for_line();
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000_000, 3).expect("histogram");
        let duration = Duration::from_secs_f64(generator.args.duration);
        let budget = generator.args.messages;
        let (messages, seconds) = generator.phase(duration, budget, Some(&mut hist));
        if generator.args.sync {
            say("DONE");
            wait_for_line();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        report.messages = messages;
        report.seconds = seconds;
        report.msgs_per_sec = messages as f64 / seconds;
        report.mb_per_sec = messages as f64 * generator.args.size as f64 / seconds / 1e6;
        report.latency_us = Some(Latency {
            p50: us(hist.value_at_quantile(0.50)),
            p99: us(hist.value_at_quantile(0.99)),
            p999: us(hist.value_at_quantile(0.999)),
            max: us(hist.max()),
            mean: hist.mean() / 1000.0,
        });
    }
    report.bytes_verified = generator.bytes_verified;
    let json = serde_json::to_string(&report).expect("json");
    say(&json);
    // The connections close at exit.
}

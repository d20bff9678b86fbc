//! A signal wait that does not keep the loop running: the Boost.Asio question "handler that does
//! not keep the io_service running".
//!
//! ```text
//! cargo run --example background_signal                  # does its work and exits by itself
//! cargo run --example background_signal -- --wait-signal # waits (up to 10 s) for Ctrl-C or SIGUSR1
//! ```
//!
//! In Asio, `signals.async_wait(...)` counts as work, so `io_service::run()` never returns once the
//! real work is done: the program hangs until a signal arrives. Here the wait is marked
//! [`background`](aio::Op::background), and the loop runs with `run_until_done()`, which returns as
//! soon as no *counted* operation is pending. The signal wait stays registered the whole time: a
//! signal that arrives while work remains still runs its handler.
//!
//! The real work is small and deterministic: one message echoed over a `StreamSocket::pair`, and
//! three `DeadlineTimer`s expiring after 10, 20 and 30 ms. With `--wait-signal` a fourth timer, of 10
//! s, stands for work that takes a while: send SIGINT (Ctrl-C) or SIGUSR1 meanwhile, and the signal
//! handler cancels the remaining timers, so the work ends early and the loop returns. Either way the
//! program exits with status 0, without anyone calling `stop()`.
//!
//! ## Output
//! The first line says which signals are watched (with the process id, for `kill -USR1 PID`). Then
//! one line per piece of work done or cancelled, in the order it happened (the echo first, then the
//! timers in order), a line for a signal if one came, and finally `run_until_done returned: ...`.

#[allow(dead_code)]
mod common;

use std::cell::Cell;
use std::io;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::signal::{SIGINT, SIGUSR1};
use aio::{DeadlineTimer, IoBuf, IoService, LocalHandle, SignalSet, StreamSocket};

const PROGRAM: &str = "background_signal";
const USAGE: &str = "usage: background_signal [--wait-signal]";
const HELP: &str = "\
--wait-signal  also wait up to 10 s for SIGINT (Ctrl-C) or SIGUSR1, which cancels the timers
AIO_BACKEND    environment variable choosing the backend: epoll (default) or poll

Echoes a message over a socket pair and waits for three short timers while a wait for SIGINT or
SIGUSR1 is pending as background work; exits with status 0 once the work is done.";

/// The short timers: the work that is always done.
const TIMERS: [Duration; 3] = [
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(30),
];
/// The long timer of `--wait-signal`.
const PATIENCE: Duration = Duration::from_secs(10);

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGINT => "SIGINT",
        SIGUSR1 => "SIGUSR1",
        _ => "a signal",
    }
}

/// Echoes one message over a socket pair: `a` sends, `b` reads and writes it back, `a` reads it.
fn echo_over_a_pair(svc: &LocalHandle) -> io::Result<()> {
    let (a, b) = StreamSocket::pair(svc)?;
    let b = Rc::new(b);
    let message: &'static [u8] = b"hello over a socket pair";
    // The echoing side: read what comes, write it back.
    b.clone()
        .read_some(vec![0u8; 64])
        .then(move |(result, buffer)| match result {
            // The handler owns `b`: the socket stays open until its write is done.
            Ok(n) if n > 0 => {
                b.clone()
                    .write_all(buffer.slice(..n))
                    .then(move |(result, _)| {
                        drop(b);
                        if let Err(e) = result {
                            eprintln!("{PROGRAM}: echo side: {e}");
                        }
                    });
            }
            Ok(_) => eprintln!("{PROGRAM}: the echo side read the end of the stream"),
            Err(e) => eprintln!("{PROGRAM}: echo side: {e}"),
        });
    // The sending side: write, then read the echo back.
    let a = Rc::new(a);
    a.clone().write_all(message).then(move |(result, _)| {
        if let Err(e) = result {
            eprintln!("{PROGRAM}: write: {e}");
            return;
        }
        a.clone()
            .read_exact(vec![0u8; message.len()])
            .then(move |(result, buffer)| {
                drop(a);
                match result {
                    Ok(()) => println!(
                        "echo over a socket pair: {:?} came back",
                        String::from_utf8_lossy(&buffer)
                    ),
                    Err(e) => eprintln!("{PROGRAM}: read: {e}"),
                }
            });
    });
    Ok(())
}

/// Arms a timer; its handler says whether it expired or was cancelled.
fn start_timer(timer: &DeadlineTimer, name: String, delay: Duration, start: Instant) {
    timer.expires_at(start + delay);
    timer.wait().then(move |result| match result {
        Ok(()) => println!("{name} expired after {} ms", delay.as_millis()),
        Err(e) if aio::is_cancelled(&e) => println!("{name} cancelled"),
        Err(e) => eprintln!("{PROGRAM}: {name}: {e}"),
    });
}

/// Parses `[--wait-signal]`; `Ok(None)` means `--help`.
fn parse_args(args: impl Iterator<Item = std::ffi::OsString>) -> Result<Option<bool>, String> {
    let mut wait_signal = false;
    for arg in args {
        match arg.to_str() {
            Some("-h" | "--help") => return Ok(None),
            Some("--wait-signal") => wait_signal = true,
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
    }
    Ok(Some(wait_signal))
}

fn main() -> ExitCode {
    let parsed = parse_args(std::env::args_os().skip(1));
    let wait_signal = match common::parsed_or_exit(PROGRAM, USAGE, HELP, parsed) {
        Ok(wait_signal) => wait_signal,
        Err(status) => return status,
    };
    let svc = match common::service_from_env(PROGRAM) {
        Ok(svc) => svc,
        Err(status) => return status,
    };
    match run(&svc, wait_signal) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{PROGRAM}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(svc: &IoService, wait_signal: bool) -> io::Result<()> {
    // Caught from here on: a signal sent once the first line is out finds it caught.
    let signals = SignalSet::new(svc, &[SIGINT, SIGUSR1])?;
    let pid = std::process::id();
    if wait_signal {
        println!(
            "pid {pid} ({}): waiting up to {} s for SIGINT (Ctrl-C) or SIGUSR1 (kill -USR1 {pid})",
            svc.backend_name(),
            PATIENCE.as_secs()
        );
    } else {
        println!(
            "pid {pid} ({}): a wait for SIGINT or SIGUSR1 is pending in the background",
            svc.backend_name()
        );
    }

    // The real work: counted, it keeps `run_until_done` running until it is done.
    echo_over_a_pair(svc)?;
    let start = Instant::now();
    let mut timers = Vec::new();
    for (i, delay) in TIMERS.into_iter().enumerate() {
        let timer = DeadlineTimer::new(svc)?;
        start_timer(&timer, format!("timer {}", i + 1), delay, start);
        timers.push(timer);
    }
    if wait_signal {
        let timer = DeadlineTimer::new(svc)?;
        start_timer(&timer, "the 10 s timer".to_owned(), PATIENCE, start);
        timers.push(timer);
    }
    let timers = Rc::new(timers);

    // The signal wait: background, so it never keeps the loop running by itself. Its handler cancels
    // the timers still pending, which ends the work early.
    let got = Rc::new(Cell::new(None));
    {
        let timers = timers.clone();
        let got = got.clone();
        signals
            .wait()
            .background()
            .then(move |result| match result {
                Ok(signal) => {
                    got.set(Some(signal));
                    println!(
                        "got {} while work remained: cancelling the timers",
                        signal_name(signal)
                    );
                    for timer in timers.iter() {
                        timer.cancel();
                    }
                }
                Err(e) => eprintln!("{PROGRAM}: signal wait: {e}"),
            });
    }

    // Asio's `run()`: returns once no counted operation is pending. Without the background mark the
    // signal wait would keep it running until a signal came. (`signals` lives until `run` returns,
    // so signals stay caught meanwhile.)
    svc.run_until_done()?;
    match got.get() {
        Some(signal) => println!(
            "run_until_done returned: the work ended early ({} arrived)",
            signal_name(signal)
        ),
        None => println!(
            "run_until_done returned: the work is done; the signal wait is still pending ({} \
             counted operations left)",
            svc.pending_work()
        ),
    }
    Ok(())
}

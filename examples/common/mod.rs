//! What the serving examples (the echo servers `echo_server`, `echo_server_async` and
//! `graceful_shutdown`, and others) share, so that they differ only in how they serve and stop:
//! their command line, the choice of backend, the `listening on` line and noticing when Enter is
//! pressed or stdin reaches its end.
//!
//! All follow the conventions for `aio`'s serving examples: the endpoint is the first argument,
//! the first line on stdout is `listening on ENDPOINT (BACKEND)` with the real port, `AIO_BACKEND`
//! picks the backend, bad arguments print a usage line and exit with status 2, and the server stops
//! with status 0 when stdin reaches EOF or Enter is pressed.

use std::ffi::OsString;
use std::io::{self, BufRead, Write};
use std::process::ExitCode;

use aio::{Acceptor, Endpoint, IoDevice, IoService, LocalHandle};

/// Where the servers listen when no endpoint is given.
pub const DEFAULT_ENDPOINT: &str = "127.0.0.1:8080";
/// The size of each session's read buffer when `--buffer` is not given (the tutorial's
/// `char[1024]`).
pub const DEFAULT_BUFFER: usize = 1024;
/// The largest `--buffer` accepted: every session allocates one buffer of this size.
pub const MAX_BUFFER: usize = 16 << 20;

/// The exit status for bad arguments and an unknown or unavailable backend.
fn usage_error() -> ExitCode {
    ExitCode::from(2)
}

/// What an echo server was asked to do.
pub struct ServerArgs {
    /// Where to listen: `IP:PORT`, `[IPv6]:PORT`, `unix:PATH` or `unix:@NAME`.
    pub endpoint: Endpoint,
    /// How many bytes each session reads at most at a time.
    pub buffer_size: usize,
    /// How many loops serve (`--threads`; 1: one loop on the main thread, as before).
    pub threads: usize,
}

impl ServerArgs {
    /// Parses the command line (`[ENDPOINT] [--buffer BYTES]`, in any order). On bad arguments,
    /// prints what is wrong and the usage line on stderr and returns the exit status (2); `--help`
    /// prints the usage on stdout, followed by `more_help` (what else stops this server, if
    /// anything), and returns status 0.
    pub fn from_command_line(program: &str, more_help: &str) -> Result<ServerArgs, ExitCode> {
        ServerArgs::with_default_buffer(program, more_help, DEFAULT_BUFFER)
    }

    /// [`from_command_line`](ServerArgs::from_command_line) for a server whose buffer is
    /// `default_buffer` bytes unless `--buffer` says otherwise (0: the server picks it, for a
    /// datagram server the largest datagram its socket allows).
    pub fn with_default_buffer(
        program: &str,
        more_help: &str,
        default_buffer: usize,
    ) -> Result<ServerArgs, ExitCode> {
        match parse(std::env::args_os().skip(1), default_buffer) {
            Ok(Some(args)) => Ok(args),
            Ok(None) => {
                let default = match default_buffer {
                    0 => "the largest datagram".to_string(),
                    n => n.to_string(),
                };
                let help = HELP.replace("{default}", &default);
                println!("usage: {program} {ARGS}\n\n{help}{more_help}");
                Err(ExitCode::SUCCESS)
            }
            Err(why) => {
                eprintln!("{program}: {why}");
                eprintln!("usage: {program} {ARGS}");
                Err(usage_error())
            }
        }
    }
}

const ARGS: &str = "[ENDPOINT] [--buffer BYTES] [--threads N]";

const HELP: &str = "\
ENDPOINT     where to listen: IP:PORT, [IPv6]:PORT, unix:PATH or unix:@NAME
             (default 127.0.0.1:8080; port 0 picks a free port)
--buffer N   bytes each read takes at most (default {default}, at most 16777216)
--threads N  serve on N loops, one per thread (default 1); with more than one, prints
             `loop I: C connections` for each loop after stopping
AIO_BACKEND  environment variable choosing the backend: epoll (default) or poll

Prints `listening on ENDPOINT (BACKEND)` once ready; stops when Enter is pressed or stdin ends.";

/// `Ok(None)` means `--help`.
fn parse(
    args: impl Iterator<Item = OsString>,
    default_buffer: usize,
) -> Result<Option<ServerArgs>, String> {
    let mut endpoint = None;
    let mut buffer_size = default_buffer;
    let mut threads = 1;
    let mut args = args.map(|a| {
        a.into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))
    });
    while let Some(arg) = args.next() {
        let arg = arg?;
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        } else if let Some(value) = arg.strip_prefix("--buffer=") {
            buffer_size = parse_buffer(value)?;
        } else if arg == "--buffer" {
            let value = args.next().ok_or("--buffer needs a value (bytes)")??;
            buffer_size = parse_buffer(&value)?;
        } else if let Some(value) = arg.strip_prefix("--threads=") {
            threads = parse_threads(value)?;
        } else if arg == "--threads" {
            let value = args
                .next()
                .ok_or("--threads needs a value (a number of loops)")??;
            threads = parse_threads(&value)?;
        } else if arg.starts_with('-') {
            return Err(format!("unknown option {arg:?}"));
        } else if endpoint.is_some() {
            return Err(format!("unexpected argument {arg:?} (only one ENDPOINT)"));
        } else {
            endpoint = Some(arg.parse::<Endpoint>().map_err(|e| e.to_string())?);
        }
    }
    let endpoint = match endpoint {
        Some(ep) => ep,
        None => DEFAULT_ENDPOINT
            .parse()
            .map_err(|e: io::Error| e.to_string())?,
    };
    Ok(Some(ServerArgs {
        endpoint,
        buffer_size,
        threads,
    }))
}

fn parse_threads(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_THREADS).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid --threads {value:?}: expected a number of loops from 1 to {MAX_THREADS}"
        )),
    }
}

const MAX_THREADS: usize = 1024;

/// Serves `args.endpoint` on a pool of `args.threads` loops (backend from `AIO_BACKEND`): one
/// `SO_REUSEPORT` acceptor per loop for TCP, one acceptor handing connections round-robin for a Unix
/// socket. `handler` runs on the loop that owns each connection. Prints `listening on ENDPOINT
/// (BACKEND)`, stops when Enter is pressed or stdin ends, then prints `loop I: C connections` for
/// each loop (C: the connections it served).
pub fn serve_on_pool(
    program: &str,
    args: &ServerArgs,
    handler: impl Fn(aio::StreamSocket, Endpoint) + Send + Sync + 'static,
) -> ExitCode {
    let pool = match aio::LoopPool::builder().threads(args.threads).start() {
        Ok(pool) => pool,
        Err(e) => {
            let name = std::env::var("AIO_BACKEND").unwrap_or_default();
            eprintln!("{program}: cannot start the event loops (AIO_BACKEND={name:?}): {e}");
            return usage_error();
        }
    };
    let mode = if args.endpoint.is_unix() {
        aio::AcceptMode::Handoff(aio::pool::Balance::RoundRobin)
    } else {
        aio::AcceptMode::ReusePort
    };
    let bound = match pool.serve(&args.endpoint, mode, handler) {
        Ok(serving) => serving.endpoint().clone(),
        Err(e) => {
            eprintln!("{program}: cannot listen on {}: {e}", args.endpoint);
            return ExitCode::FAILURE;
        }
    };
    {
        let mut out = io::stdout().lock();
        let _ = writeln!(out, "listening on {bound} ({})", pool.backend().name());
        let _ = out.flush();
    }
    // The main thread is no loop here: it waits for Enter or the end of stdin itself.
    let mut line = String::new();
    let _ = io::stdin().read_line(&mut line);
    pool.stop();
    let stats = pool.stats();
    let result = pool.join();
    for s in &stats {
        println!("loop {}: {} connections", s.index, s.accepted);
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse_buffer(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_BUFFER).contains(&n) => Ok(n),
        _ => Err(format!(
            "invalid --buffer {value:?}: expected a number of bytes from 1 to {MAX_BUFFER}"
        )),
    }
}

/// Creates the event loop on the backend named by `AIO_BACKEND` (epoll when unset). An unknown or
/// unavailable backend is reported on stderr with exit status 2.
pub fn service_from_env(program: &str) -> Result<IoService, ExitCode> {
    IoService::from_env().map_err(|e| {
        let name = std::env::var("AIO_BACKEND").unwrap_or_default();
        eprintln!("{program}: cannot start the event loop (AIO_BACKEND={name:?}): {e}");
        usage_error()
    })
}

/// Prints `listening on ENDPOINT (BACKEND)`, with the port the kernel chose when bound to port 0,
/// and flushes it: scripts and tests wait for this line before connecting.
pub fn announce(svc: &IoService, acceptor: &Acceptor) -> io::Result<()> {
    let endpoint = acceptor.local_endpoint()?;
    let mut out = io::stdout().lock();
    writeln!(out, "listening on {endpoint} ({})", svc.backend_name())?;
    out.flush()
}

/// Calls `on_stop` on the loop once Enter is pressed or stdin reaches EOF (booster's tutorial:
/// watch fd 0 with an `IoDevice`). The wait is a background operation: it never keeps
/// [`IoService::run_until_done`] running by itself.
///
/// epoll cannot watch every kind of stdin: a regular file or `/dev/null` (`< file`, `< /dev/null`,
/// a CI runner without a terminal) is refused with `Unsupported`. Such a stdin never blocks, so a
/// plain thread reads one line (or EOF) there and completes an operation of the loop through the
/// completion bridge ([`LocalHandle::completion`]): `on_stop` still runs on the loop thread.
pub fn on_enter_or_eof(svc: &LocalHandle, on_stop: impl FnOnce() + 'static) {
    // SAFETY: fd 0 stays open for the life of the process: nothing in this program closes it, and
    // the device is dropped with the loop, before `main` returns.
    match unsafe { IoDevice::attach(svc, 0) } {
        Ok(stdin) => {
            // The handler owns the device, so the device lives exactly while the wait is pending.
            // Readable means a line was typed or stdin ended (EOF and hang-ups count as readable):
            // either way, stop. A failed wait is no reason to keep running either.
            stdin.readable().background().then(move |_result| {
                drop(stdin);
                on_stop();
            });
        }
        Err(_) => {
            let (done, line_read) = svc.completion::<()>();
            std::thread::spawn(move || {
                // Returns on a newline, EOF or a read error: all of them mean "stop".
                let _ = io::stdin().lock().read_line(&mut String::new());
                done.complete(());
            });
            // A completer dropped unfinished completes the wait with an error: stop then too.
            line_read.background().then(move |_result| on_stop());
        }
    }
}

/// Turns a parsed command line into its value or the exit status: `Ok(None)` means `--help` was asked
/// for (usage and help on stdout, status 0), `Err` a bad argument (the reason and the usage line on
/// stderr, status 2).
pub fn parsed_or_exit<T>(
    program: &str,
    usage: &str,
    help: &str,
    parsed: Result<Option<T>, String>,
) -> Result<T, ExitCode> {
    match parsed {
        Ok(Some(value)) => Ok(value),
        Ok(None) => {
            println!("{usage}\n\n{help}");
            Err(ExitCode::SUCCESS)
        }
        Err(why) => {
            eprintln!("{program}: {why}");
            eprintln!("{usage}");
            Err(usage_error())
        }
    }
}

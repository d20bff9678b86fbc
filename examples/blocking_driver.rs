//! A blocking driver call awaited as an asynchronous operation: the Boost.Asio question "How to wait
//! for a function to return", where a hardware driver's `receive_data()` blocks until a packet
//! arrives and must not block the event loop that also sends.
//!
//! ```text
//! cargo run --example blocking_driver
//! cargo run --example blocking_driver -- --packets 20
//! AIO_BACKEND=poll cargo run --example blocking_driver
//! ```
//!
//! ## The pieces
//! - [`Driver`] simulates the hardware driver with the question's C-style API: `receive_data()`
//!   blocks (here: sleeps [`RX_INTERVAL`]) and then copies the next of N deterministic packets into
//!   the caller's buffer, or reports the end of data once all N were delivered; `send_data()`
//!   transmits a frame and returns at once. The driver is `Send + Sync`: it is called from the loop
//!   thread and from a pool thread.
//! - [`NetworkAdapter::async_receive`] is the answer to the question: it hands one `receive_data`
//!   call to the loop's blocking pool with `spawn_blocking` and returns an [`Op`] that completes on
//!   the loop thread. Like every `aio` operation it takes its buffer by value and gives it back with
//!   the result, and it can be finished with `.then(handler)` or `.await`.
//! - The receive loop is a chain of handlers, as in the question's `do_receive` / `on_read`:
//!   `do_receive` starts one `async_receive`, and its handler `on_read` handles the packet and
//!   calls `do_receive` again, until the driver reports the end of data.
//! - Meanwhile a [`Reporter`] sends [`REPORTS`] status reports with `send_data`, one every
//!   [`REPORT_INTERVAL`], from a `DeadlineTimer` handler on the loop thread. Its reports go out while
//!   a `receive_data` call is blocked on a pool thread: the loop itself never blocks.
//!
//! The loop runs with `run_until_done()` (Asio's `run()`): it returns by itself once no operation is
//! pending, that is once the driver has reported the end of data and the last report was sent, and
//! the program exits with status 0. Nothing calls `stop()`.
//!
//! ## Output
//! One line per packet received (`received packet 3/8 ...`), one per report sent (`sent report
//! 1/3 ...`), then `driver reports end of data after 8 packets` and a summary. The content of every
//! line is deterministic; only the interleaving of report lines with packet lines depends on
//! timing, and so does whether a report notes that `receive_data` was blocked meanwhile (it is, but
//! for the microseconds between two receive calls, or after the last packet with `--packets 1`
//! or 2).

#[allow(dead_code)]
mod common;

use std::io;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aio::{Completion, DeadlineTimer, LocalHandle, Op};

const PROGRAM: &str = "blocking_driver";
const USAGE: &str = "usage: blocking_driver [--packets N]";
const HELP: &str = "\
--packets N  how many packets the simulated driver delivers before its end of data
             (default 8, at most 10000), one every 25 ms
AIO_BACKEND  environment variable choosing the backend: epoll (default) or poll

Receives every packet with a blocking driver call run by spawn_blocking, sends 3 status reports
from the loop meanwhile, and exits with status 0 once the driver reports the end of its data.";

/// How many packets the driver delivers when `--packets` is not given.
const DEFAULT_PACKETS: u32 = 8;
/// The largest `--packets` accepted.
const MAX_PACKETS: u32 = 10_000;
/// How long `receive_data` blocks before each packet.
const RX_INTERVAL: Duration = Duration::from_millis(25);
/// How many status reports the loop sends.
const REPORTS: u32 = 3;
/// The time between two reports.
const REPORT_INTERVAL: Duration = Duration::from_millis(60);
/// The receive buffer (the question's `uint8_t temp_rx_buffer[2048]`).
const RX_BUFFER: usize = 2048;

/// What `receive_data` says about a packet besides its bytes (the question's `receive_params_t`).
#[derive(Debug, Clone, Copy)]
struct RxParams {
    channel: u8,
    rssi_dbm: i8,
}

/// One packet received: how many bytes were copied into the buffer, and its parameters.
#[derive(Debug, Clone, Copy)]
struct Received {
    len: usize,
    params: RxParams,
}

/// A simulated hardware driver with a blocking receive, as in the question.
struct Driver {
    packets: u32,
    delivered: AtomicU32,
    /// Whether a `receive_data` call is blocked right now (for the demonstration only).
    receiving: AtomicBool,
    frames_sent: AtomicU32,
}

impl Driver {
    fn new(packets: u32) -> Driver {
        Driver {
            packets,
            delivered: AtomicU32::new(0),
            receiving: AtomicBool::new(false),
            frames_sent: AtomicU32::new(0),
        }
    }

    /// Blocks until the next packet has arrived and copies it into `buf`. `Ok(None)` is the end of
    /// data (all packets were delivered); an error is a failed receive (here: a buffer too small).
    fn receive_data(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        let seq = self.delivered.load(Ordering::Acquire) + 1;
        if seq > self.packets {
            return Ok(None);
        }
        self.receiving.store(true, Ordering::Release);
        std::thread::sleep(RX_INTERVAL); // the hardware takes its time
        self.receiving.store(false, Ordering::Release);
        let payload = packet_payload(seq);
        let Some(dest) = buf.get_mut(..payload.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("receive buffer of {} bytes is too small", buf.len()),
            ));
        };
        dest.copy_from_slice(payload.as_bytes());
        self.delivered.store(seq, Ordering::Release);
        Ok(Some(Received {
            len: payload.len(),
            params: RxParams {
                channel: (seq % 4) as u8 + 1,
                rssi_dbm: -40 - (seq % 20) as i8,
            },
        }))
    }

    /// Transmits one frame; returns at once with the number of bytes taken.
    fn send_data(&self, frame: &[u8]) -> io::Result<usize> {
        self.frames_sent.fetch_add(1, Ordering::AcqRel);
        Ok(frame.len())
    }

    /// Whether a `receive_data` call is blocked on some thread right now.
    fn is_receiving(&self) -> bool {
        self.receiving.load(Ordering::Acquire)
    }
}

/// The bytes of packet `seq` (from 1): a sensor reading, the same on every run.
fn packet_payload(seq: u32) -> String {
    format!("sensor reading {seq}: {}.{} C", 18 + seq % 7, seq * 3 % 10)
}

/// The result of one receive, and the buffer back.
type ReceiveResult = (io::Result<Option<Received>>, Vec<u8>);

/// The question's `NetworkAdapter`: the driver, turned into asynchronous operations of a loop.
struct NetworkAdapter {
    svc: LocalHandle,
    driver: Arc<Driver>,
    received: std::cell::Cell<u32>,
}

impl NetworkAdapter {
    /// The asynchronous version of `receive_data`: runs the blocking call on a thread of the loop's
    /// pool and completes on the loop thread, with the result and the buffer. Only one receive is
    /// started at a time (the driver's calls are not meant to overlap).
    ///
    /// The outer `io::Result` of the completion is `spawn_blocking`'s own: an error there means the
    /// call could not run, or panicked (the buffer is then lost with the closure that held it).
    fn async_receive(&self, mut buf: Vec<u8>) -> Op<Completion<ReceiveResult>> {
        let driver = self.driver.clone();
        self.svc.spawn_blocking(move || {
            let result = driver.receive_data(&mut buf);
            (result, buf)
        })
    }

    /// Starts the next receive; its handler is `on_read` (the question's `do_receive`).
    fn do_receive(self: Rc<Self>, buf: Vec<u8>) {
        let this = self.clone();
        self.async_receive(buf)
            .then(move |completed| match completed {
                Ok((result, buf)) => this.on_read(result, buf),
                Err(e) => eprintln!("{PROGRAM}: the receive call failed to run: {e}"),
            });
    }

    /// Handles one receive on the loop thread, then starts the next one (the question's `on_read`).
    fn on_read(self: Rc<Self>, result: io::Result<Option<Received>>, buf: Vec<u8>) {
        match result {
            Ok(Some(packet)) => {
                let seq = self.received.get() + 1;
                self.received.set(seq);
                let payload = String::from_utf8_lossy(&buf[..packet.len]);
                println!(
                    "received packet {seq}/{}: {} bytes on channel {}, rssi {} dBm: {payload:?}",
                    self.driver.packets, packet.len, packet.params.channel, packet.params.rssi_dbm
                );
                self.do_receive(buf);
            }
            Ok(None) => {
                // Not starting another receive ends the chain: once the reporter is done too, the
                // loop has no work left and `run_until_done` returns.
                println!(
                    "driver reports end of data after {} packets",
                    self.received.get()
                );
            }
            Err(e) => eprintln!("{PROGRAM}: receive failed: {e}"),
        }
    }
}

/// Sends status reports from a timer handler on the loop thread.
struct Reporter {
    driver: Arc<Driver>,
    timer: DeadlineTimer,
    start: Instant,
    sent: std::cell::Cell<u32>,
    sent_while_receiving: std::cell::Cell<u32>,
}

impl Reporter {
    /// Arms the timer for the next report. Deadlines are counted from the start, so a late turn of
    /// the loop does not delay the reports after it.
    fn schedule(self: Rc<Self>) {
        let next = self.sent.get() + 1;
        self.timer.expires_at(self.start + REPORT_INTERVAL * next);
        let this = self.clone();
        self.timer.wait().then(move |result| this.on_tick(result));
    }

    fn on_tick(self: Rc<Self>, result: io::Result<()>) {
        if let Err(e) = result {
            eprintln!("{PROGRAM}: report timer: {e}");
            return;
        }
        let seq = self.sent.get() + 1;
        let receiving = self.driver.is_receiving();
        let frame = format!("status report {seq}");
        match self.driver.send_data(frame.as_bytes()) {
            Ok(n) => {
                self.sent.set(seq);
                if receiving {
                    self.sent_while_receiving
                        .set(self.sent_while_receiving.get() + 1);
                }
                let note = if receiving {
                    " while receive_data was blocked on a pool thread"
                } else {
                    ""
                };
                println!("sent report {seq}/{REPORTS} ({n} bytes){note}");
            }
            Err(e) => {
                eprintln!("{PROGRAM}: send_data failed: {e}");
                return;
            }
        }
        if seq < REPORTS {
            self.schedule();
        }
    }
}

/// Parses `[--packets N]`; `Ok(None)` means `--help`.
fn parse_args(args: impl Iterator<Item = std::ffi::OsString>) -> Result<Option<u32>, String> {
    let mut packets = DEFAULT_PACKETS;
    let mut args = args.map(|a| {
        a.into_string()
            .map_err(|a| format!("argument {a:?} is not valid UTF-8"))
    });
    while let Some(arg) = args.next() {
        let arg = arg?;
        let value = if arg == "-h" || arg == "--help" {
            return Ok(None);
        } else if let Some(value) = arg.strip_prefix("--packets=") {
            value.to_owned()
        } else if arg == "--packets" {
            args.next().ok_or("--packets needs a value")??
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        packets = match value.parse::<u32>() {
            Ok(n) if (1..=MAX_PACKETS).contains(&n) => n,
            _ => {
                return Err(format!(
                    "invalid --packets {value:?}: expected a number from 1 to {MAX_PACKETS}"
                ));
            }
        };
    }
    Ok(Some(packets))
}

fn main() -> ExitCode {
    let parsed = parse_args(std::env::args_os().skip(1));
    let packets = match common::parsed_or_exit(PROGRAM, USAGE, HELP, parsed) {
        Ok(packets) => packets,
        Err(status) => return status,
    };
    let svc = match common::service_from_env(PROGRAM) {
        Ok(svc) => svc,
        Err(status) => return status,
    };
    let timer = match DeadlineTimer::new(&svc) {
        Ok(timer) => timer,
        Err(e) => {
            eprintln!("{PROGRAM}: cannot create a timer: {e}");
            return ExitCode::FAILURE;
        }
    };

    println!(
        "driver: {packets} packets, one every {} ms; {REPORTS} status reports, one every {} ms ({})",
        RX_INTERVAL.as_millis(),
        REPORT_INTERVAL.as_millis(),
        svc.backend_name()
    );

    let driver = Arc::new(Driver::new(packets));
    let adapter = Rc::new(NetworkAdapter {
        svc: svc.local(),
        driver: driver.clone(),
        received: std::cell::Cell::new(0),
    });
    adapter.clone().do_receive(vec![0u8; RX_BUFFER]);

    let reporter = Rc::new(Reporter {
        driver: driver.clone(),
        timer,
        start: Instant::now(),
        sent: std::cell::Cell::new(0),
        sent_while_receiving: std::cell::Cell::new(0),
    });
    reporter.clone().schedule();

    // Asio's `run()`: until no operation is pending. Both chains end by themselves.
    if let Err(e) = svc.run_until_done() {
        eprintln!("{PROGRAM}: the event loop failed: {e}");
        return ExitCode::FAILURE;
    }

    let received = adapter.received.get();
    println!(
        "done: {received} packets received, {} reports sent ({} while receive_data was blocked), \
         {} frames given to send_data",
        reporter.sent.get(),
        reporter.sent_while_receiving.get(),
        driver.frames_sent.load(Ordering::Acquire)
    );
    if received == packets && reporter.sent.get() == REPORTS {
        ExitCode::SUCCESS
    } else {
        eprintln!("{PROGRAM}: stopped before the driver's end of data");
        ExitCode::FAILURE
    }
}

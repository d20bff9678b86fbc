//! The first program of booster::aio's tutorial: an event loop that stops when Enter is pressed.
//!
//! ```text
//! cargo run --example stop_on_enter
//! ```
//!
//! Standard input is attached to an [`IoDevice`] without being owned by it (booster's
//! `basic_io_device::attach`), and a readiness wait on it stops the loop. Any program that exposes
//! a pollable file descriptor joins the loop the same way.

use std::process::ExitCode;

use aio::{IoDevice, IoService};

fn main() -> ExitCode {
    // The backend comes from AIO_BACKEND (epoll when unset).
    let svc = match IoService::from_env() {
        Ok(svc) => svc,
        Err(e) => {
            eprintln!("stop_on_enter: cannot start the event loop: {e}");
            return ExitCode::from(2);
        }
    };

    // SAFETY: fd 0 stays open for the life of the process: nothing here closes it, and the device
    // is dropped before `main` returns.
    let stdin = match unsafe { IoDevice::attach(&svc, 0) } {
        Ok(device) => device,
        Err(e) => {
            // epoll refuses regular files and /dev/null (`< file`, `< /dev/null`).
            eprintln!("stop_on_enter: cannot watch stdin: {e}; run it from a terminal or a pipe");
            return ExitCode::FAILURE;
        }
    };

    // When stdin becomes readable (a line was typed, or it reached EOF), stop the loop. The handler
    // gets the result first; whatever it is, we are done.
    let handle = svc.local();
    stdin.readable().then(move |_result| handle.stop());

    println!("Press Enter to stop");

    // `run()` returns only after `stop()`.
    if let Err(e) = svc.run() {
        eprintln!("stop_on_enter: the event loop failed: {e}");
        return ExitCode::FAILURE;
    }
    // `stdin` is dropped here: it stops watching fd 0 but leaves it open (attach does not own it).
    ExitCode::SUCCESS
}

//! `ipc_clients ENDPOINT`: three reconnecting clients, `a`, `b` and `c`, of `ipc_server`.
//!
//! `a` and `b` start at once; `c` starts only when `a` and `b` are both connected (the
//! all-connected combinator). Every observer event is printed as one line `NAME EVENT [detail]`,
//! EVENT being `connecting` (detail: the attempt), `connected`, `disconnected` (detail: the error) or
//! `gave-up`. On each connection a client says `HELLO` with its name, asks the server to `ECHO` a
//! line, and then pings every 200 ms; the replies are printed as `NAME got welcome`,
//! `NAME got echo "..."` and `NAME got pong N` (the first pong of each connection, or every one with
//! `--verbose`).
//!
//! Kill the server (even with SIGKILL) and start it again on the same endpoint: the three clients
//! reconnect, with exponential back-off, and resume. Stdin EOF (or Enter) stops the program with
//! status 0; SIGINT and SIGTERM too.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod ipc;

use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use aio::client::{Backoff, ClientEvent, Observable, ReconnectingClient, all_connected};
use aio::framed::{Frame, TypeLengthCodec};
use aio::{DeadlineTimer, Endpoint, IoService, SignalSet, signal};

type Client = ReconnectingClient<TypeLengthCodec>;

fn main() -> ExitCode {
    let program = "ipc_clients";
    let mut verbose = false;
    let mut endpoint = None;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--verbose" | "-v" => verbose = true,
            a if a.starts_with('-') => return usage(program, &format!("unknown option {a:?}")),
            a if endpoint.is_none() => match a.parse::<Endpoint>() {
                Ok(ep) => endpoint = Some(ep),
                Err(e) => return usage(program, &e.to_string()),
            },
            _ => return usage(program, "expected exactly one ENDPOINT"),
        }
    }
    let Some(endpoint) = endpoint else {
        return usage(program, "expected exactly one ENDPOINT");
    };
    let svc = match common::service_from_env(program) {
        Ok(svc) => svc,
        Err(code) => return code,
    };
    let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    let clients: Vec<Client> = ["a", "b", "c"]
        .into_iter()
        .map(|name| {
            let client =
                ReconnectingClient::new(&svc, name, endpoint.clone(), ipc::codec, backoff.clone());
            watch(&svc, &client, verbose);
            client
        })
        .collect();
    let (a, b, c) = (&clients[0], &clients[1], &clients[2]);
    let start_c = c.clone();
    all_connected(&[a, b], move || start_c.start());
    a.start();
    b.start();

    let local = svc.local();
    common::on_enter_or_eof(&svc, move || local.stop());
    stop_on_signals(&svc);
    let result = svc.run();
    for client in &clients {
        client.stop();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage(program: &str, why: &str) -> ExitCode {
    eprintln!(
        "{program}: {why}\nusage: {program} [--verbose] ENDPOINT   (e.g. 127.0.0.1:9000, unix:/tmp/ipc.sock)"
    );
    ExitCode::from(2)
}

/// Prints every event, greets the server on each connection and pings it while connected.
fn watch(svc: &IoService, client: &Client, verbose: bool) {
    let name = client.name().to_string();
    let pinger = Rc::new(Pinger {
        client: client.clone(),
        timer: DeadlineTimer::new(svc).expect("a timer"),
        next: std::cell::Cell::new(0),
    });
    // Pongs received on the current connection: the first is always printed.
    let pongs = Rc::new(std::cell::Cell::new(0u64));
    let observer_pinger = pinger.clone();
    let observer_pongs = pongs.clone();
    client.subscribe(Box::new(move |event: &ClientEvent| {
        println!("{name} {event}");
        match event {
            ClientEvent::Connected => {
                observer_pongs.set(0);
                let hello = Frame::new(ipc::HELLO, name.clone().into_bytes());
                let echo = Frame::new(ipc::ECHO, format!("echo from {name}").into_bytes());
                let _ = observer_pinger.client.try_send(hello);
                let _ = observer_pinger.client.try_send(echo);
                observer_pinger.clone().tick();
            }
            _ => observer_pinger.timer.cancel(),
        }
    }));
    let name = client.name().to_string();
    client.on_message(move |frame: Frame| match frame.kind {
        ipc::WELCOME => println!("{name} got welcome"),
        ipc::ECHO => println!(
            "{name} got echo {:?}",
            String::from_utf8_lossy(&frame.payload)
        ),
        ipc::PONG => {
            pongs.set(pongs.get() + 1);
            if verbose || pongs.get() == 1 {
                println!("{name} got pong {}", ipc::number(&frame).unwrap_or(0));
            }
        }
        other => println!("{name} got type {other}"),
    });
}

/// Sends `PING n` every 200 ms while its client is connected.
struct Pinger {
    client: Client,
    timer: DeadlineTimer,
    next: std::cell::Cell<u64>,
}

impl Pinger {
    fn tick(self: Rc<Self>) {
        self.timer.expires_after(Duration::from_millis(200));
        self.timer.wait().background().then(move |res| {
            if res.is_ok() && self.client.is_connected() {
                let n = self.next.get();
                self.next.set(n + 1);
                let _ = self.client.try_send(ipc::numbered(ipc::PING, n));
                self.tick();
            }
        });
    }
}

fn stop_on_signals(svc: &IoService) {
    match SignalSet::new(svc, &[signal::SIGINT, signal::SIGTERM]) {
        Ok(signals) => {
            let svc = svc.local();
            signals.wait().background().then(move |_| {
                drop(signals);
                svc.stop();
            });
        }
        Err(e) => eprintln!("ipc_clients: signals will not stop the program: {e}"),
    }
}

//! A handler that panics in the middle of a busy loop: 200 connections echo 50 messages each while
//! the server handlers of some of them panic (a callback session's read handler, and a spawned
//! session task). Each panic passes out of `run()`; the caller catches it and calls `run()` again,
//! which resumes with everything else still pending. Only the panicking sessions' connections end
//! (their socket dropped with the handler that owned it); every other client gets every echo.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::{Acceptor, LocalHandle, StreamSocket};

use crate::util;

const CONNECTIONS: usize = 200;
const MESSAGES: usize = 50;
/// Two sessions in every `PANIC_EVERY` panic, at their `PANIC_AT`-th message.
const PANIC_EVERY: usize = 20;
const PANIC_AT: usize = 25;

/// A message: a 4-byte header (total length, connection number, little-endian u16 each), then data.
fn message(conn: usize, i: usize) -> Vec<u8> {
    let mut m = util::pattern(16 + (conn * 31 + i * 7) % 500, (conn * MESSAGES + i) as u64);
    let len = m.len() as u16;
    m[..2].copy_from_slice(&len.to_le_bytes());
    m[2..4].copy_from_slice(&(conn as u16).to_le_bytes());
    m
}

fn header(h: &[u8]) -> (usize, usize) {
    let len = u16::from_le_bytes([h[0], h[1]]) as usize;
    let conn = u16::from_le_bytes([h[2], h[3]]) as usize;
    (len, conn)
}

fn doomed(conn: usize) -> bool {
    matches!(conn % PANIC_EVERY, 3 | 12)
}

/// A callback session: reads a whole message, echoes it, and panics in its read handler at message
/// `PANIC_AT` if its connection is doomed.
fn callback_session(socket: Rc<StreamSocket>, seen: usize) {
    socket
        .clone()
        .read_exact(vec![0u8; 4])
        .then(move |(res, head)| {
            if res.is_err() {
                return;
            }
            let (len, conn) = header(&head);
            socket
                .clone()
                .read_exact(vec![0u8; len - 4])
                .then(move |(res, body)| {
                    if res.is_err() {
                        return;
                    }
                    if doomed(conn) && seen == PANIC_AT {
                        panic!("handler of connection {conn} panics at message {seen}");
                    }
                    socket
                        .clone()
                        .write_all([head, body].concat())
                        .then(move |(res, _)| {
                            if res.is_ok() {
                                callback_session(socket, seen + 1);
                            }
                        });
                });
        });
}

/// A task session: the same, as a future (its panic makes the task's JoinHandle report `Panicked`).
async fn task_session(socket: StreamSocket) {
    for seen in 0.. {
        let (res, head) = socket.read_exact(vec![0u8; 4]).await;
        if res.is_err() {
            return;
        }
        let (len, conn) = header(&head);
        let (res, body) = socket.read_exact(vec![0u8; len - 4]).await;
        if res.is_err() {
            return;
        }
        if doomed(conn) && seen == PANIC_AT {
            panic!("task of connection {conn} panics at message {seen}");
        }
        let (res, _) = socket.write_all([head, body].concat()).await;
        if res.is_err() {
            return;
        }
    }
}

struct Outcome {
    completed: Cell<usize>,
    ended_early: Cell<usize>,
    echoes: Cell<usize>,
    wrong: RefCell<Vec<String>>,
}

/// Keeps the expected panics' messages (and backtraces) out of the output; others still print.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info.payload().downcast_ref::<String>().map(String::as_str);
            if !msg.is_some_and(|m| m.contains("panics at message")) {
                default(info);
            }
        }));
    });
}

matrix_test!(a_panicking_handler_loses_no_other_connection, 60, |svc| {
    let test = util::current_test();
    quiet_expected_panics();
    let acceptor = Rc::new(Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap());
    let target = acceptor.local_endpoint().unwrap();
    let accepted = Rc::new(Cell::new(0usize));
    let tasks = Rc::new(RefCell::new(Vec::new()));
    fn accept(
        acceptor: Rc<Acceptor>,
        accepted: Rc<Cell<usize>>,
        tasks: Rc<RefCell<Vec<aio::JoinHandle<()>>>>,
    ) {
        let next = acceptor.clone();
        acceptor.accept().then(move |res| {
            let Ok((socket, _)) = res else { return };
            let n = accepted.get();
            accepted.set(n + 1);
            // Half the sessions are callbacks, half are tasks.
            if n % 2 == 0 {
                callback_session(Rc::new(socket), 0);
            } else {
                let handle = next.service().spawn(task_session(socket));
                tasks.borrow_mut().push(handle);
            }
            accept(next, accepted, tasks);
        });
    }
    accept(acceptor.clone(), accepted.clone(), tasks.clone());

    let outcome = Rc::new(Outcome {
        completed: Cell::new(0),
        ended_early: Cell::new(0),
        echoes: Cell::new(0),
        wrong: RefCell::new(Vec::new()),
    });
    fn finish(svc: &LocalHandle, outcome: &Outcome) {
        if outcome.completed.get() + outcome.ended_early.get() == CONNECTIONS {
            svc.stop();
        }
    }
    for conn in 0..CONNECTIONS {
        let (local, target, outcome) = (svc.local(), target.clone(), outcome.clone());
        svc.spawn(async move {
            let socket = StreamSocket::dial(&local, &target).await.expect("dial");
            for i in 0..MESSAGES {
                let (res, sent) = socket.write_all(message(conn, i)).await;
                let echoed = match res {
                    Ok(()) => socket.read_exact(vec![0u8; sent.len()]).await,
                    Err(e) => (Err(e), Vec::new()),
                };
                match echoed {
                    (Ok(()), got) if got == sent => outcome.echoes.set(outcome.echoes.get() + 1),
                    (Ok(()), _) => outcome
                        .wrong
                        .borrow_mut()
                        .push(format!("{conn}/{i}: other bytes")),
                    // The server's session died with its panicking handler: the connection ended.
                    (Err(_), _) if doomed(conn) && i == PANIC_AT => {
                        outcome.ended_early.set(outcome.ended_early.get() + 1);
                        finish(&local, &outcome);
                        return;
                    }
                    (Err(e), _) => {
                        outcome.wrong.borrow_mut().push(format!("{conn}/{i}: {e}"));
                        outcome.ended_early.set(outcome.ended_early.get() + 1);
                        finish(&local, &outcome);
                        return;
                    }
                }
            }
            outcome.completed.set(outcome.completed.get() + 1);
            finish(&local, &outcome);
        });
    }

    // Run; a panic passes out of run(): catch it and run again.
    let started = Instant::now();
    let limit = Duration::from_secs(40);
    let mut panics = Vec::new();
    loop {
        match catch_unwind(AssertUnwindSafe(|| svc.run())) {
            Ok(res) => {
                res.unwrap();
                break;
            }
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .unwrap_or_else(|| "non-string panic".into());
                panics.push(msg);
                assert!(started.elapsed() < limit, "still running after {limit:?}");
            }
        }
    }
    let elapsed = started.elapsed();
    let doomed_count = (0..CONNECTIONS).filter(|&c| doomed(c)).count();
    let panicked_tasks = tasks
        .borrow_mut()
        .drain(..)
        .filter(|t| t.is_finished())
        .map(|t| svc.block_on(t))
        .filter(|r| *r == Err(aio::JoinError::Panicked))
        .count();
    eprintln!(
        "{test}: {} panics caught and run() resumed ({panicked_tasks} in tasks); {} connections \
         completed {MESSAGES} echoes each, {} ended with their panicking session ({doomed_count} \
         doomed), {} echoes verified, {} wrong, in {elapsed:?}",
        panics.len(),
        outcome.completed.get(),
        outcome.ended_early.get(),
        outcome.echoes.get(),
        outcome.wrong.borrow().len(),
    );
    assert!(
        outcome.wrong.borrow().is_empty(),
        "{:?}",
        outcome.wrong.borrow()
    );
    assert_eq!(panics.len(), doomed_count, "{panics:?}");
    // Sessions alternate between callbacks and tasks in accept order: both kinds panicked.
    let in_handlers = panics.iter().filter(|m| m.starts_with("handler")).count();
    assert_eq!(panicked_tasks, panics.len() - in_handlers);
    assert!(in_handlers > 0 && panicked_tasks > 0, "{panics:?}");
    assert_eq!(outcome.completed.get(), CONNECTIONS - doomed_count);
    assert_eq!(outcome.ended_early.get(), doomed_count);
    assert_eq!(
        outcome.echoes.get(),
        (CONNECTIONS - doomed_count) * MESSAGES + doomed_count * PANIC_AT
    );
    assert_eq!(accepted.get(), CONNECTIONS);
});

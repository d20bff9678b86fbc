//! `ipc_server` and `ipc_clients` run as programs: the clients connect in the required order (`c`
//! only after `a` and `b`), every observer event is one `NAME EVENT [detail]` line, each client's
//! hello, echo and ping are answered (`NAME got welcome`, `NAME got echo "..."`, `NAME got pong N`),
//! and killing the server with SIGKILL then restarting it on the same endpoint makes all three
//! reconnect.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::examples_harness::{self, Server};

/// The first word after a client's name: an observer event, or `got` for a reply.
const EVENTS: [&str; 5] = ["connecting", "connected", "disconnected", "gave-up", "got"];

/// Reads lines until every name in `names` has printed a line starting `NAME event`; returns the
/// lines read.
fn until_all(clients: &Server, names: &[&str], event: &str, lines: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(15);
    // Lines read while waiting for an earlier event may already hold this one (the clients' output
    // interleaves): they count too.
    let mut seen: HashSet<String> = lines
        .iter()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let (name, ev) = (words.next()?, words.next()?);
            let what = format!("{ev} {}", words.collect::<Vec<_>>().join(" "));
            ((ev == event || what.starts_with(event)) && names.contains(&name))
                .then(|| name.to_owned())
        })
        .collect();
    while seen.len() < names.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = clients
            .next_line(left)
            .unwrap_or_else(|| panic!("no `{event}` from all of {names:?}; lines: {lines:#?}"));
        let mut words = line.split_whitespace();
        let (name, ev) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let what = format!("{ev} {}", words.collect::<Vec<_>>().join(" "));
        assert!(
            ["a", "b", "c"].contains(&name) && EVENTS.contains(&ev),
            "not a `NAME EVENT [detail]` line: {line:?}"
        );
        if (ev == event || what.starts_with(event)) && names.contains(&name) {
            seen.insert(name.to_string());
        }
        lines.push(line);
    }
}

#[test]
fn clients_start_in_order_and_survive_a_killed_server() {
    for backend in ["epoll", "poll", "uring"] {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("unix:{}", dir.path().join("ipc.sock").display());
        let mut server = Server::start("ipc_server", Some(backend), &[&endpoint]);
        let clients = Server::launch("ipc_clients", Some(backend), &[&endpoint]);
        let mut lines = vec![clients.listening_line.clone()];
        until_all(&clients, &["a", "b", "c"], "connected", &mut lines);
        // c's first event comes after both a and b are connected.
        let pos = |l: &str| lines.iter().position(|x| x == l).unwrap();
        let c_first = lines.iter().position(|l| l.starts_with("c ")).unwrap();
        assert!(
            pos("a connected") < c_first && pos("b connected") < c_first,
            "c started before a and b were up: {lines:#?}"
        );
        // The exchange: each client's hello, echo and first ping answered.
        until_all(&clients, &["a", "b", "c"], "got welcome", &mut lines);
        for name in ["a", "b", "c"] {
            let echo = format!("{name} got echo \"echo from {name}\"");
            let deadline = Instant::now() + Duration::from_secs(15);
            while !lines.contains(&echo)
                || !lines
                    .iter()
                    .any(|l| l.starts_with(&format!("{name} got pong")))
            {
                let left = deadline.saturating_duration_since(Instant::now());
                match clients.next_line(left) {
                    Some(line) => lines.push(line),
                    None => panic!("no echo and pong for {name}: {lines:#?}"),
                }
            }
        }

        server.kill();
        let mut after = Vec::new();
        until_all(&clients, &["a", "b", "c"], "disconnected", &mut after);
        let server = Server::start("ipc_server", Some(backend), &[&endpoint]);
        until_all(&clients, &["a", "b", "c"], "connected", &mut after);

        let (status, _rest) = clients.close_stdin_and_wait();
        assert!(status.success(), "ipc_clients exited with {status}");
        let (status, _) = server.close_stdin_and_wait();
        assert!(status.success(), "ipc_server exited with {status}");
        assert!(
            !dir.path().join("ipc.sock").exists(),
            "the socket file was left behind"
        );
    }
}

#[test]
fn bad_arguments_exit_2() {
    for (example, args) in [
        ("ipc_server", vec![]),
        ("ipc_server", vec!["nonsense"]),
        ("ipc_clients", vec![]),
        ("ipc_clients", vec!["127.0.0.1:1", "extra"]),
        ("ipc_clients", vec!["--bogus", "127.0.0.1:1"]),
    ] {
        let out = examples_harness::run_bounded(
            examples_harness::command(example, None, &args),
            std::process::Stdio::null(),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(2), "{example} {args:?}: {out:?}");
        assert!(out.stderr.contains("usage:"), "{example} {args:?}: {out:?}");
    }
}

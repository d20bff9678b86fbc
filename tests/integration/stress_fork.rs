//! `fork()` after a loop has run: booster's prefork pattern, where forked children each build their
//! own loop and accept from the listening socket they inherited, and the parent's loop goes on
//! unaffected; and a child that closes or drops what it inherited from its parent's loop, which must
//! not touch the parent's registrations (the epoll instance is shared across fork).
//!
//! Children are made with `libc::fork` inside a child test process (`util::in_child`), leave with
//! `libc::_exit`, and are waited for with a deadline (an exit pipe + `waitpid`); they die with the test if
//! it fails first.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::rc::Rc;
use std::time::{Duration, Instant};

use aio::{Acceptor, IoService, SignalSet, StreamSocket};

use crate::util::{self, stress};

/// One echo over a fresh pair: proves a loop serves I/O (and makes it run).
fn echo_once(svc: &IoService, a: &StreamSocket, b: &StreamSocket, what: &str) {
    let got = Rc::new(RefCell::new(None));
    b.read_some(vec![0u8; 16]).then({
        let got = got.clone();
        move |(res, buf)| *got.borrow_mut() = Some(buf[..res.unwrap()].to_vec())
    });
    // The read waits (EAGAIN) before the data comes: the reply needs the backend's event.
    svc.poll().unwrap();
    a.write_all(b"ping".to_vec()).then(|(res, _)| res.unwrap());
    stress::run_until(svc, Duration::from_secs(5), what, || got.borrow().is_some());
    assert_eq!(got.borrow().as_deref(), Some(&b"ping"[..]), "{what}");
}

/// A prefork worker: its own loop, the inherited listener, replies `id ++ its pid` to each client,
/// until SIGTERM. It accepts `quota` connections, then stops accepting, so that the other worker
/// must take the rest (which process wins each accept is the kernel's choice).
fn worker(
    backend: aio::Backend,
    listener: &TcpListener,
    quota: usize,
    ready: &std::fs::File,
) -> Result<(), String> {
    let svc = IoService::builder()
        .backend(backend)
        .build()
        .map_err(|e| format!("a loop of its own: {e}"))?;
    let term = SignalSet::new(&svc, &[libc::SIGTERM]).map_err(|e| e.to_string())?;
    let stopper = svc.local();
    term.wait().then(move |res| {
        res.expect("SIGTERM");
        stopper.stop();
    });
    let fd = listener.try_clone().map_err(|e| e.to_string())?;
    let acceptor = Rc::new(Acceptor::from_fd(&svc, fd).map_err(|e| e.to_string())?);
    let served = Rc::new(Cell::new(0usize));
    fn serve(acceptor: Rc<Acceptor>, served: Rc<Cell<usize>>, quota: usize) {
        let next = acceptor.clone();
        acceptor.accept().then(move |res| {
            let quota = quota - usize::from(res.is_ok());
            if let Ok((socket, _)) = res {
                let socket = Rc::new(socket);
                let served = served.clone();
                socket
                    .clone()
                    .read_exact(vec![0u8; 8])
                    .then(move |(res, id)| {
                        if res.is_ok() {
                            let reply = [id, std::process::id().to_le_bytes().to_vec()].concat();
                            socket.clone().write_all(reply).then(move |(res, _)| {
                                drop(socket);
                                if res.is_ok() {
                                    served.set(served.get() + 1);
                                }
                            });
                        }
                    });
            }
            if quota > 0 {
                serve(next, served, quota);
            }
        });
    }
    serve(acceptor, served.clone(), quota);
    (&*ready).write_all(b"r").map_err(|e| e.to_string())?;
    svc.run().map_err(|e| e.to_string())?;
    // One write, so that the two workers' lines do not interleave.
    let line = format!(
        "  forked worker {}: served {} connections\n",
        std::process::id(),
        served.get()
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    Ok(())
}

matrix_test!(
    prefork_children_share_the_listener_and_the_parent_goes_on,
    40,
    |svc| {
        util::in_child(|| {
            const CLIENTS: usize = 200;
            let test = util::current_test();
            // The parent's loop runs first: an echo over a pair, and an accept of its own.
            let (pa, pb) = StreamSocket::pair(svc).unwrap();
            echo_once(svc, &pa, &pb, "the parent's loop before fork");
            // Room for 200 connections at once (std's backlog of 128 would drop SYNs: a second's
            // retransmission).
            let listener = {
                let socket =
                    socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                        .unwrap();
                let addr: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
                socket.bind(&addr.into()).unwrap();
                socket.listen(1024).unwrap();
                TcpListener::from(socket)
            };
            let target: aio::Endpoint = listener.local_addr().unwrap().into();
            let own = Acceptor::from_fd(svc, listener.try_clone().unwrap()).unwrap();
            let _first = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            svc.block_on(own.accept()).unwrap();

            // Two workers; each says when it is ready through a pipe.
            let (ready_r, ready_w) =
                rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
            let (mut ready_r, ready_w) =
                (std::fs::File::from(ready_r), std::fs::File::from(ready_w));
            let backend = svc.backend();
            let started = Instant::now();
            let workers: Vec<stress::Child> = (0..2)
                .map(|i| {
                    stress::fork(&format!("worker {i}"), || {
                        worker(backend, &listener, CLIENTS / 2, &ready_w)
                    })
                })
                .collect();
            drop(ready_w);
            let mut ready = [0u8; 2];
            ready_r.read_exact(&mut ready).expect("both workers start");

            // The clients, on the parent's loop: each learns which worker served it.
            let by_worker: Rc<RefCell<HashMap<u32, usize>>> = Rc::default();
            let done = Rc::new(Cell::new(0usize));
            for i in 0..CLIENTS {
                let (local, target) = (svc.local(), target.clone());
                let (by_worker, done) = (by_worker.clone(), done.clone());
                svc.spawn(async move {
                    let socket = StreamSocket::dial(&local, &target).await.unwrap();
                    let id = (i as u64).to_le_bytes().to_vec();
                    let (res, id) = socket.write_all(id).await;
                    res.unwrap();
                    let (res, reply) = socket.read_exact(vec![0u8; 12]).await;
                    res.unwrap();
                    assert_eq!(reply[..8], id[..], "client {i} got its own id back");
                    let pid = u32::from_le_bytes(reply[8..].try_into().unwrap());
                    *by_worker.borrow_mut().entry(pid).or_default() += 1;
                    done.set(done.get() + 1);
                });
            }
            stress::run_until(svc, Duration::from_secs(20), "the clients", || {
                done.get() == CLIENTS
            });
            let pids: Vec<i32> = workers.iter().map(|w| w.pid).collect();
            for &pid in &pids {
                // SAFETY: kill only sends a signal to our own child.
                assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
            }
            for w in workers {
                w.join(Instant::now() + Duration::from_secs(10));
            }
            let by_worker = by_worker.borrow().clone();

            // The parent's loop, its acceptor and its pair work as before.
            let accepted = Rc::new(Cell::new(false));
            own.accept().then({
                let accepted = accepted.clone();
                move |res| accepted.set(res.is_ok())
            });
            svc.poll().unwrap();
            let _last = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            stress::run_until(
                svc,
                Duration::from_secs(5),
                "the parent's accept after fork",
                || accepted.get(),
            );
            echo_once(svc, &pa, &pb, "the parent's loop after its children exited");
            eprintln!(
                "{test}: {CLIENTS} clients served by 2 forked workers sharing one listener \
             ({by_worker:?} by pid) in {:?}; the parent's loop then accepted and echoed",
                started.elapsed()
            );
            assert_eq!(by_worker.values().sum::<usize>(), CLIENTS);
            for pid in pids {
                assert!(
                    by_worker.get(&(pid as u32)) == Some(&(CLIENTS / 2)),
                    "worker {pid} served its quota of connections: {by_worker:?}"
                );
            }
        });
    }
);

matrix_test!(
    a_forked_child_dropping_what_it_inherited_leaves_the_parent_registered,
    30,
    |svc| {
        // Regression: the child shares its parent's epoll instance. Closing an inherited socket or
        // dropping the inherited IoService in the child deregistered the fds there, and the parent's
        // loop stopped hearing about them (its reads and accepts waited forever).
        util::in_child(|| {
            let test = util::current_test();
            let inherited = RefCell::new(Some(util::fresh(svc)));
            let (pa, pb, acceptor) = {
                let own = inherited.borrow();
                let own = own.as_ref().unwrap();
                let (pa, pb) = StreamSocket::pair(own).unwrap();
                echo_once(own, &pa, &pb, "before fork");
                let acceptor = Acceptor::bind(own, &"127.0.0.1:0".parse().unwrap()).unwrap();
                (pa, pb, acceptor)
            };
            let backend = svc.backend();
            let child = stress::fork("child", || {
                // Close the inherited objects, then drop the inherited loop itself...
                pa.close();
                pb.close();
                acceptor.close();
                drop(inherited.borrow_mut().take());
                // ...and serve on a loop of its own.
                let mine = IoService::builder()
                    .backend(backend)
                    .build()
                    .map_err(|e| e.to_string())?;
                let (a, b) = StreamSocket::pair(&mine).map_err(|e| e.to_string())?;
                echo_once(&mine, &a, &b, "the child's own loop");
                Ok(())
            });
            child.join(Instant::now() + Duration::from_secs(10));
            let own = inherited.borrow();
            let own = own.as_ref().unwrap();
            // The parent's pair and acceptor still get their events.
            echo_once(
                own,
                &pa,
                &pb,
                "the parent's pair after the child closed its copy",
            );
            let target = acceptor.local_endpoint().unwrap();
            let accepted = Rc::new(Cell::new(false));
            acceptor.accept().then({
                let accepted = accepted.clone();
                move |res| accepted.set(res.is_ok())
            });
            own.poll().unwrap();
            let _client = std::net::TcpStream::connect(target.as_ip().unwrap()).unwrap();
            stress::run_until(own, Duration::from_secs(5), "the parent's accept", || {
                accepted.get()
            });
            eprintln!(
                "{test}: the child closed the inherited pair and acceptor, dropped the inherited loop \
             and echoed on its own; the parent's loop still echoed and accepted"
            );
        });
    }
);

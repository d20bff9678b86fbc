//! The aio echo server in callback style, as the README and `examples/echo_server.rs` write it
//! (booster's tutorial: self-owning sessions, read_some then write_all), plus `TCP_NODELAY` on
//! accepted sockets and the benchmark's uniform command line (see the crate docs).

use std::process::exit;
use std::rc::Rc;

use aio::{Acceptor, Endpoint, IoBuf, IoDevice, IoService, StreamSocket};

/// Reads, writes back what was read, reads again. Each handler owns the session's `Rc`, so the
/// session lives exactly while an operation is pending.
fn echo(socket: Rc<StreamSocket>, buf: Vec<u8>) {
    socket
        .clone()
        .read_some(buf)
        .then(move |(res, buf)| match res {
            Ok(n) if n > 0 => socket
                .clone()
                .write_all(buf.slice(..n))
                .then(move |(res, buf)| {
                    if res.is_ok() {
                        echo(socket, buf.into_inner());
                    }
                }),
            _ => {} // end of stream or error: the last Rc goes away and the socket closes
        });
}

fn accept(acceptor: Rc<Acceptor>, buffer: usize) {
    acceptor.clone().accept().then(move |res| {
        match res {
            Ok((socket, _peer)) => {
                let _ = socket.set_nodelay(true); // fails on Unix sockets: nothing to set there
                echo(Rc::new(socket), vec![0; buffer]);
            }
            Err(e) if aio::is_cancelled(&e) => return,
            Err(e) => eprintln!("aio_echo: accept: {e}"),
        }
        accept(acceptor, buffer);
    });
}

fn main() {
    let args = aio_bench::server_args("aio_echo");
    let endpoint: Endpoint = args.endpoint.parse().unwrap_or_else(|e| {
        eprintln!("aio_echo: {e}");
        exit(2)
    });
    let svc = IoService::from_env().expect("event loop");
    let acceptor = Acceptor::bind(&svc, &endpoint).expect("listen");
    println!(
        "listening on {} ({})",
        acceptor.local_endpoint().expect("local endpoint"),
        svc.backend_name()
    );
    // stdin at EOF stops the loop (the runner gives a pipe; epoll refuses /dev/null: SIGTERM then).
    // SAFETY: fd 0 stays open for the whole process; the device goes away with the loop.
    if let Ok(stdin) = unsafe { IoDevice::attach(&svc, 0) } {
        let stopper = svc.local();
        stdin.readable().background().then(move |_| {
            drop(stdin);
            stopper.stop();
        });
    }
    let acceptor = Rc::new(acceptor);
    accept(acceptor.clone(), args.buffer);
    svc.run().expect("event loop");
    acceptor.close();
}

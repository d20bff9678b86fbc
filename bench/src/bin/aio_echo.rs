//! The aio echo server in callback style, as the README and `examples/echo_server.rs` write it
//! (booster's tutorial: self-owning sessions, read_some then write_all), plus `TCP_NODELAY` on
//! accepted sockets and the benchmark's uniform command line (see the crate docs).

use std::rc::Rc;

use aio::{IoBuf, StreamSocket};

/// Reads, writes back what was read, reads again. Each handler owns the session's `Rc`, so the
/// session lives exactly while an operation is pending.
fn echo(socket: Rc<StreamSocket>, buf: Vec<u8>) {
    socket
        .clone()
        .read_some(buf)
        .then(move |(res, buf)| match res {
            Ok(n) if n > 0 => {
                socket
                    .clone()
                    .write_all(buf.slice(..n))
                    .then(move |(res, buf)| {
                        if res.is_ok() {
                            echo(socket, buf.into_inner());
                        }
                    });
            }
            _ => {} // end of stream or error: the last Rc goes away and the socket closes
        });
}

fn main() {
    let args = aio_bench::server_args("aio_echo");
    let (svc, acceptor) = aio_bench::aio_server("aio_echo", &args.endpoint);
    let acceptor = Rc::new(acceptor);
    aio_bench::accept_each("aio_echo", acceptor.clone(), args.buffer, |socket, size| {
        echo(socket, vec![0; size])
    });
    svc.run().expect("event loop");
    acceptor.close();
}

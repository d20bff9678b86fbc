//! The aio echo server in callback style with a persistent read (libuv's model, as the libuv server
//! here is written): `read_each` hands every chunk to one handler, which writes it back at once with
//! `try_write`; only when the socket takes less does it stop reading, write the rest with
//! `write_all` and read again. Same command line as the other servers (see the crate docs).

use std::ops::ControlFlow;
use std::rc::Rc;

use aio::StreamSocket;

fn echo(socket: Rc<StreamSocket>, buffer: usize) {
    let writer = socket.clone();
    socket.read_each(vec![0; buffer], move |res| {
        let Ok(chunk) = res else {
            return ControlFlow::Break(()); // error: the socket closes with the last Rc
        };
        if chunk.is_empty() {
            return ControlFlow::Break(()); // end of stream
        }
        let written = match writer.try_write(chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(_) => return ControlFlow::Break(()),
        };
        if written == chunk.len() {
            return ControlFlow::Continue(());
        }
        write_rest(&writer, &chunk[written..], buffer);
        ControlFlow::Break(())
    });
}

/// The send buffer is full: writes the rest, then reads again. Out of line, so that the handler's
/// common path stays small.
#[inline(never)]
fn write_rest(socket: &Rc<StreamSocket>, rest: &[u8], buffer: usize) {
    let again = socket.clone();
    socket.write_all(rest.to_vec()).then(move |(res, _)| {
        if res.is_ok() {
            echo(again, buffer);
        }
    });
}

fn main() {
    let args = aio_bench::server_args("aio_echo_stream");
    let (svc, acceptor) = aio_bench::aio_server("aio_echo_stream", &args.endpoint);
    let acceptor = Rc::new(acceptor);
    aio_bench::accept_each("aio_echo_stream", acceptor.clone(), args.buffer, echo);
    svc.run().expect("event loop");
    acceptor.close();
}

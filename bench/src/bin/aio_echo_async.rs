//! The aio echo server with async/await, as `examples/echo_server_async.rs` writes it (one task
//! accepting, one task per connection), plus `TCP_NODELAY` on accepted sockets and the benchmark's
//! uniform command line (see the crate docs).

use std::io;
use std::rc::Rc;

use aio::{Acceptor, IoBuf, LocalHandle, StreamSocket};

async fn accept_loop(svc: LocalHandle, acceptor: Rc<Acceptor>, buffer: usize) {
    loop {
        match acceptor.accept().await {
            Ok((socket, _peer)) => {
                let _ = socket.set_nodelay(true); // fails on Unix sockets: nothing to set there
                svc.spawn(echo(socket, buffer));
            }
            Err(e) if aio::is_cancelled(&e) => return,
            Err(e) => eprintln!("aio_echo_async: accept: {e}"),
        }
    }
}

async fn echo(socket: StreamSocket, buffer: usize) -> io::Result<()> {
    let mut buffer = vec![0u8; buffer];
    loop {
        let (result, read_buffer) = socket.read_some(buffer).await;
        let n = result?;
        if n == 0 {
            return Ok(());
        }
        let (result, written) = socket.write_all(read_buffer.slice(..n)).await;
        result?;
        buffer = written.into_inner();
    }
}

fn main() {
    let args = aio_bench::server_args("aio_echo_async");
    let (svc, acceptor) = aio_bench::aio_server("aio_echo_async", &args.endpoint);
    let acceptor = Rc::new(acceptor);
    svc.spawn(accept_loop(svc.local(), acceptor.clone(), args.buffer));
    svc.run().expect("event loop");
    acceptor.close();
}

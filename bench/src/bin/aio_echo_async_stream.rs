//! The aio echo server with async/await and a persistent read (the future-style twin of
//! `aio_echo_stream`): one task per connection awaits each chunk of `read_stream` and writes it back
//! with `try_write`; only when the socket takes less does it await `write_all` for the rest. One task
//! accepting, `TCP_NODELAY` on accepted sockets, and the benchmark's uniform command line (see the
//! crate docs).

use std::io;
use std::rc::Rc;

use aio::{Acceptor, LocalHandle, StreamSocket};

async fn accept_loop(svc: LocalHandle, acceptor: Rc<Acceptor>, buffer: usize) {
    loop {
        match acceptor.accept().await {
            Ok((socket, _peer)) => {
                let _ = socket.set_nodelay(true); // fails on Unix sockets: nothing to set there
                svc.spawn(echo(socket, buffer));
            }
            Err(e) if aio::is_cancelled(&e) => return,
            Err(e) => eprintln!("aio_echo_async_stream: accept: {e}"),
        }
    }
}

async fn echo(socket: StreamSocket, buffer: usize) -> io::Result<()> {
    let mut chunks = socket.read_stream(vec![0u8; buffer]);
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk?;
        let written = match socket.try_write(&chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if written < chunk.len() {
            let rest = chunk[written..].to_vec();
            drop(chunk);
            let (res, _) = socket.write_all(rest).await;
            res?;
        }
    }
    Ok(())
}

fn main() {
    let args = aio_bench::server_args("aio_echo_async_stream");
    let (svc, acceptor) = aio_bench::aio_server("aio_echo_async_stream", &args.endpoint);
    let acceptor = Rc::new(acceptor);
    svc.spawn(accept_loop(svc.local(), acceptor.clone(), args.buffer));
    svc.run().expect("event loop");
    acceptor.close();
}

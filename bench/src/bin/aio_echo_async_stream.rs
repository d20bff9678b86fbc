//! The aio echo server with async/await and a persistent read (the future-style twin of
//! `aio_echo_stream`): one task per connection awaits each chunk of `read_stream` and writes it back
//! with `try_write`; only when the socket takes less does it await `write_all` for the rest. One task
//! accepting, `TCP_NODELAY` on accepted sockets, and the benchmark's uniform command line (see the
//! crate docs).

use std::io;

use aio::StreamSocket;

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
    aio_bench::run_async_server("aio_echo_async_stream", echo);
}

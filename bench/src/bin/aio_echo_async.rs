//! The aio echo server with async/await, as `examples/echo_server_async.rs` writes it (one task
//! accepting, one task per connection), plus `TCP_NODELAY` on accepted sockets and the benchmark's
//! uniform command line (see the crate docs).

use std::io;

use aio::{IoBuf, StreamSocket};

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
    aio_bench::run_async_server("aio_echo_async", echo);
}

//! The tokio echo server: a current-thread runtime (one thread, as every server here), one task
//! accepting and one task per connection reading what has arrived and writing it all back, with
//! one buffer per connection. The benchmark's uniform command line: see the crate docs.

use std::io;
use std::os::fd::BorrowedFd;

use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, buffer: usize) -> io::Result<()> {
    let mut buf = vec![0u8; buffer];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        stream.write_all(&buf[..n]).await?;
    }
}

/// Completes when stdin is readable (a line or EOF); never when stdin cannot be watched.
async fn stdin_closed() {
    // SAFETY: fd 0 stays open for the whole process, longer than the registration.
    let stdin = unsafe { BorrowedFd::borrow_raw(0) };
    match unsafe { with_interest_registered(stdin) } {
        Ok(fd) => drop(fd.readable().await),
        Err(_) => std::future::pending().await,
    }
}

/// Registers a borrowed fd for readable interest.
///
/// # Safety
/// The fd must stay open while the `AsyncFd` exists.
unsafe fn with_interest_registered(
    fd: BorrowedFd<'static>,
) -> io::Result<AsyncFd<BorrowedFd<'static>>> {
    unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(io::Error::from)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = aio_bench::server_args("tokio_echo");
    let buffer = args.buffer;
    let unix_path = args.endpoint.strip_prefix("unix:").map(str::to_owned);
    let serve = async move {
        if let Some(path) = args.endpoint.strip_prefix("unix:") {
            let listener = UnixListener::bind(path).expect("listen");
            println!("listening on unix:{path} (tokio)");
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => drop(tokio::spawn(echo(stream, buffer))),
                    Err(e) => eprintln!("tokio_echo: accept: {e}"),
                }
            }
        } else {
            let listener = TcpListener::bind(&args.endpoint).await.expect("listen");
            println!(
                "listening on {} (tokio)",
                listener.local_addr().expect("local address")
            );
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        drop(tokio::spawn(echo(stream, buffer)));
                    }
                    Err(e) => eprintln!("tokio_echo: accept: {e}"),
                }
            }
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = stdin_closed() => {}
    }
    if let Some(path) = unix_path {
        let _ = std::fs::remove_file(path); // the socket file this server created
    }
}

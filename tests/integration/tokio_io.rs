//! tokio's `AsyncRead` / `AsyncWrite` on stream sockets (`aio::compat::Io`, feature `tokio-io`),
//! driven by aio's own `block_on` and `spawn`: no tokio runtime is ever started.

use std::io;
use std::mem::MaybeUninit;
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};

use aio::compat::Io;
use aio::{Acceptor, IoService, StreamSocket};

use crate::util::{self, Transport};

const TOTAL: usize = 3 * 1024 * 1024 + 5;

/// A patterned stream through a `tokio::io::copy` echo, the client's halves (`tokio::io::split`)
/// in two tasks, checked byte for byte.
fn echo_through(svc: &IoService, client: StreamSocket, server: StreamSocket) {
    let echo = svc.spawn(async move {
        let (mut reader, mut writer) = tokio::io::split(server.compat());
        let copied = tokio::io::copy(&mut reader, &mut writer).await?;
        writer.shutdown().await?;
        Ok::<_, io::Error>(copied)
    });
    let data = Rc::new(util::pattern(TOTAL, 11));
    let (mut reader, mut writer) = tokio::io::split(client.compat());
    let sent = svc.spawn({
        let data = data.clone();
        async move {
            for chunk in data.chunks(40_961) {
                writer.write_all(chunk).await?;
            }
            writer.shutdown().await?;
            Ok::<_, io::Error>(())
        }
    });
    let received = svc.spawn(async move {
        let mut got = Vec::with_capacity(TOTAL);
        reader.read_to_end(&mut got).await?;
        Ok::<_, io::Error>(got)
    });
    let got = svc.block_on(received).unwrap().unwrap();
    svc.block_on(sent).unwrap().unwrap();
    assert_eq!(svc.block_on(echo).unwrap().unwrap(), TOTAL as u64);
    util::assert_same_bytes(&got, &data);
}

matrix_test!(copy_echo_over_tcp_is_byte_for_byte, |svc| {
    let acceptor = Acceptor::bind(svc, &"127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = acceptor.local_endpoint().unwrap();
    let client = svc.spawn({
        let svc = svc.local();
        async move { StreamSocket::dial(&svc, &addr).await }
    });
    let (server, _) = svc.block_on(acceptor.accept()).unwrap();
    let client = svc.block_on(client).unwrap().unwrap();
    echo_through(svc, client, server);
});

matrix_test!(copy_echo_over_unix_is_byte_for_byte, |svc| {
    let pair = util::pair(svc, Transport::Unix).unwrap();
    echo_through(svc, pair.a, pair.b);
});

matrix_test!(a_read_buf_is_filled_from_uninitialised_memory, |svc| {
    let pair = util::pair(svc, Transport::TcpV4).unwrap();
    let mut b = Io::new(&pair.b);
    pair.a.try_write(b"abcdef").unwrap();
    let mut storage = [MaybeUninit::<u8>::uninit(); 16];
    let mut buf = ReadBuf::uninit(&mut storage);
    let (_counter, waker) = util::CountingWaker::new();
    let mut cx = std::task::Context::from_waker(&waker);
    let mut res = std::pin::Pin::new(&mut b).poll_read_buf_for_test(&mut cx, &mut buf);
    while res.is_pending() {
        svc.poll().unwrap();
        res = std::pin::Pin::new(&mut b).poll_read_buf_for_test(&mut cx, &mut buf);
    }
    match res {
        std::task::Poll::Ready(r) => r.unwrap(),
        std::task::Poll::Pending => unreachable!(),
    }
    assert_eq!(buf.filled(), b"abcdef");
    assert_eq!(
        buf.initialized().len(),
        6,
        "only what the kernel wrote counts as initialised"
    );
});

/// `AsyncRead::poll_read` by its full name (the extension traits have a method of the same name).
trait PollReadBuf {
    fn poll_read_buf_for_test(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>>;
}

impl<T: tokio::io::AsyncRead + Unpin> PollReadBuf for T {
    fn poll_read_buf_for_test(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        tokio::io::AsyncRead::poll_read(self, cx, buf)
    }
}

matrix_test!(shutdown_is_the_peers_end_of_stream, |svc| {
    let pair = util::pair(svc, Transport::Unix).unwrap();
    let (mut a, mut b) = (pair.a.compat(), pair.b.compat());
    svc.block_on(async {
        let slices = [io::IoSlice::new(b"vec"), io::IoSlice::new(b"tored")];
        assert_eq!(a.write_vectored(&slices).await?, 8);
        a.flush().await?;
        a.shutdown().await?;
        let mut got = Vec::new();
        b.read_to_end(&mut got).await?;
        assert_eq!(got, b"vectored");
        assert_eq!(b.read(&mut [0u8; 4]).await?, 0);
        b.write_all(b"still open").await?;
        let mut back = [0u8; 10];
        a.read_exact(&mut back).await?;
        assert_eq!(&back, b"still open");
        Ok::<_, io::Error>(())
    })
    .unwrap();
});

matrix_test!(
    a_pending_read_is_woken_and_a_dropped_one_leaves_the_socket_usable,
    |svc| {
        let pair = util::pair(svc, Transport::TcpV4).unwrap();
        let mut b = Io::new(&pair.b);
        let (counter, waker) = util::CountingWaker::new();
        let mut buf = [0u8; 32];
        {
            let mut read = Box::pin(b.read(&mut buf));
            assert!(util::poll_once(&mut read, &waker).is_pending());
            assert_eq!(svc.poll().unwrap(), 0);
            assert_eq!(counter.count(), 0);
            pair.a.try_write(b"ping").unwrap();
            while counter.count() == 0 {
                svc.poll().unwrap();
            }
            match util::poll_once(&mut read, &waker) {
                std::task::Poll::Ready(n) => assert_eq!(n.unwrap(), 4),
                std::task::Poll::Pending => panic!("woken, yet no bytes"),
            }
        }
        {
            let mut read = Box::pin(b.read(&mut buf));
            assert!(util::poll_once(&mut read, &waker).is_pending());
        }
        pair.a.try_write(b"pong").unwrap();
        let n = svc.block_on(b.read(&mut buf)).unwrap();
        assert_eq!(&buf[..n], b"pong");
    }
);

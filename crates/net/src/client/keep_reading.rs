//! Connections that keep reading after writing failed, so that a server's early answer reaches the client.
//!
//! A server may refuse an upload from its head alone (a store's failed `If-Match`, an object too large, the
//! central Lakegate's refusal) and answer at once, then close the connection without reading the rest of the
//! body. The kernel then fails our next write (broken pipe, connection reset), while the answer it already
//! received stays readable in the socket. hyper's client gives up on the request at the first write error, so
//! the client would hear "unavailable" instead of the server's own `412 PreconditionFailed`. Here a failed write
//! is remembered and later writes are discarded: the read side decides the outcome, either the server's answer
//! or, if there is none, the read error that ends the request. The connection is never reused after that (see
//! [`WriteFailed`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use hyper::rt::{Read, ReadBufCursor, Write};

/// Whether writing to a connection failed.
#[derive(Debug, Clone, Default)]
pub(super) struct WriteFailed(Arc<AtomicBool>);

impl WriteFailed {
    /// True once a write or flush on the connection has failed.
    pub(super) fn happened(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A connection whose writes, after one has failed, are discarded while its reads go on.
#[derive(Debug)]
pub(super) struct KeepReading<S> {
    inner: S,
    failed: WriteFailed,
}

impl<S> KeepReading<S> {
    pub(super) fn new(inner: S) -> Self {
        Self { inner, failed: WriteFailed::default() }
    }

    /// Tells whether a write to this connection has failed, for as long as it is asked.
    pub(super) fn write_failed(&self) -> WriteFailed {
        self.failed.clone()
    }

    /// Turns a failed write into a discarded one; everything else passes through.
    fn absorb<T>(&self, result: Poll<io::Result<T>>, discarded: T) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(Err(e)) => {
                tracing::debug!(error = %e, "writing to the server failed; reading its answer");
                self.failed.set();
                Poll::Ready(Ok(discarded))
            }
            other => other,
        }
    }
}

impl<S: Read + Unpin> Read for KeepReading<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: Write + Unpin> Write for KeepReading<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.failed.happened() {
            return Poll::Ready(Ok(buf.len()));
        }
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.absorb(result, buf.len())
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let total = bufs.iter().map(|b| b.len()).sum();
        if self.failed.happened() {
            return Poll::Ready(Ok(total));
        }
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.absorb(result, total)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.failed.happened() {
            return Poll::Ready(Ok(()));
        }
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.absorb(result, ())
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.failed.happened() {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The server's side: reads the request head, answers and closes with the body unread, which resets the
    /// connection.
    async fn answer_early(listener: tokio::net::TcpListener) {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut head = [0u8; 64];
        let _ = socket.read(&mut head).await.unwrap();
        socket.write_all(b"HTTP/1.1 412 Precondition Failed\r\ncontent-length: 0\r\n\r\n").await.unwrap();
        drop(socket);
    }

    #[tokio::test]
    async fn the_answer_sent_before_the_connection_was_reset_is_still_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(answer_early(listener));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut io = TokioIo::new(KeepReading::new(TokioIo::new(tcp)));
        let failed = io.inner().failed.clone();
        io.write_all(b"PUT /lake/big HTTP/1.1\r\nhost: store\r\nif-match: \"x\"\r\ncontent-length: 4194304\r\n\r\n")
            .await
            .unwrap();
        server.await.unwrap();
        // Far more than the server read: some of these writes fail once the reset arrives.
        for _ in 0..64 {
            io.write_all(&[b'x'; 64 * 1024]).await.expect("a failed write is discarded, not reported");
        }
        assert!(failed.happened());
        let mut answer = Vec::new();
        let _ = io.read_to_end(&mut answer).await;
        assert!(answer.starts_with(b"HTTP/1.1 412"), "{:?}", String::from_utf8_lossy(&answer));
    }
}

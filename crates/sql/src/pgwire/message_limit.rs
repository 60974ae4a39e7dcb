//! The most a client may send in one message, held to as the bytes arrive.
//!
//! pgwire reads a frontend message whole before it hands it over, up to the 1 GiB PostgreSQL allows, so one
//! Query or Bind could make a session hold a gigabyte while it arrives. [`Bounded`] sits under pgwire's framing,
//! on the stream as decrypted, follows the message boundaries (a type byte, then a length that counts its own
//! four bytes) and fails the read at the header of a message longer than the limit: of such a message nothing
//! is kept but what arrived with its header.
//!
//! It follows the boundaries from when it is armed, once the client has authenticated: the startup exchange
//! opens with messages that have no type byte, and pgwire bounds those itself.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::codec::{Encoder, Framed, FramedParts};

/// A message's type byte and length.
const HEADER: usize = 5;

/// A stream that refuses, from when it is armed, any message announcing more than `limit` bytes.
pub(crate) struct Bounded<S> {
    inner: S,
    limit: usize,
    /// Where the stream is among the messages; `None` until armed.
    cursor: Option<Cursor>,
    /// The announced length of the message refused, once one is.
    refused: Option<usize>,
}

/// `framed`, its stream bounded to messages of at most `limit` bytes once armed ([`Bounded::arm`]). What the
/// framing has read already stays its.
pub(crate) fn bound<S, C, I>(framed: Framed<S, C>, limit: usize) -> Framed<Bounded<S>, C>
where
    C: Encoder<I>,
{
    let parts = framed.into_parts();
    let mut bounded =
        FramedParts::new::<I>(Bounded { inner: parts.io, limit, cursor: None, refused: None }, parts.codec);
    bounded.read_buf = parts.read_buf;
    bounded.write_buf = parts.write_buf;
    Framed::from_parts(bounded)
}

impl<S> Bounded<S> {
    /// Starts following the messages from `position` ([`Position::after`] what the framing holds undecoded).
    /// Fails with the announced length when a message the framing holds is over the limit already.
    pub(crate) fn arm(&mut self, position: Result<Position, usize>) -> Result<(), usize> {
        match position {
            Ok(Position(cursor)) => self.cursor = Some(cursor),
            Err(len) => self.refused = Some(len),
        }
        position.map(|_| ())
    }

    pub(crate) fn armed(&self) -> bool {
        self.cursor.is_some() || self.refused.is_some()
    }

    /// The announced length of the message refused, if one was.
    pub(crate) fn refused(&self) -> Option<usize> {
        self.refused
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    fn too_large(&self, len: usize) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message of {len} bytes, over the limit of {}", self.limit),
        )
    }
}

/// Where the stream will be once the framing has decoded what it holds.
#[derive(Debug)]
pub(crate) struct Position(Cursor);

impl Position {
    /// After `buffered`, read from a message boundary on; the announced length of a message in it over `limit`.
    pub(crate) fn after(buffered: &[u8], limit: usize) -> Result<Position, usize> {
        let mut cursor = Cursor::default();
        cursor.advance(buffered, limit).map(|()| Position(cursor))
    }
}

/// The position in the stream of messages: inside a header (how much of it is read), or inside a body.
#[derive(Debug, Default, Clone, Copy)]
struct Cursor {
    header: [u8; HEADER],
    in_header: usize,
    body_left: usize,
}

impl Cursor {
    /// Moves past `bytes`; the announced length of the first message found over `limit`.
    fn advance(&mut self, mut bytes: &[u8], limit: usize) -> Result<(), usize> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (HEADER - self.in_header).min(bytes.len());
            self.header[self.in_header..self.in_header + n].copy_from_slice(&bytes[..n]);
            self.in_header += n;
            bytes = &bytes[n..];
            if self.in_header == HEADER {
                self.in_header = 0;
                let [_, a, b, c, d] = self.header;
                let len = u32::from_be_bytes([a, b, c, d]) as usize;
                if len > limit {
                    return Err(len);
                }
                // A length under four is pgwire's to refuse: it decodes the message from the same bytes.
                self.body_left = len.saturating_sub(4);
            }
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Bounded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(len) = this.refused {
            return Poll::Ready(Err(this.too_large(len)));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        if let Some(cursor) = &mut this.cursor
            && let Err(len) = cursor.advance(&buf.filled()[before..], this.limit)
        {
            this.refused = Some(len);
            return Poll::Ready(Err(this.too_large(len)));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Bounded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A frontend message of type `kind`, as it goes on the wire.
    pub(in crate::pgwire) fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&u32::try_from(body.len() + 4).expect("small").to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn messages_up_to_the_limit_pass_however_the_stream_splits_them() {
        let stream: Vec<u8> = [message(b'Q', &[b'x'; 96]), message(b'S', b""), message(b'Q', &[b'y'; 50])].concat();
        for split in 1..stream.len() {
            let mut cursor = Cursor::default();
            for piece in stream.chunks(split) {
                assert_eq!(cursor.advance(piece, 100), Ok(()), "split every {split} bytes");
            }
            assert_eq!((cursor.in_header, cursor.body_left), (0, 0), "at a boundary after every message");
        }
    }

    #[test]
    fn the_first_message_over_the_limit_is_refused_at_its_header() {
        let stream: Vec<u8> = [message(b'S', b""), message(b'B', &[0; 101])].concat();
        for split in 1..=10 {
            let mut cursor = Cursor::default();
            let refused = stream[..10].chunks(split).map(|piece| cursor.advance(piece, 100)).find(Result::is_err);
            assert_eq!(refused, Some(Err(105)), "split every {split} bytes");
        }
        // A length field of 2^32 - 1 is refused, not wrapped.
        assert_eq!(Cursor::default().advance(&[b'Q', 0xff, 0xff, 0xff, 0xff], 1 << 30), Err(u32::MAX as usize));
    }

    #[tokio::test]
    async fn an_armed_stream_fails_the_read_that_brings_the_header_and_every_read_after() {
        use tokio::io::AsyncReadExt;
        let (mut client, server) = tokio::io::duplex(1024);
        let mut bounded = Bounded { inner: server, limit: 64, cursor: None, refused: None };
        // Already buffered by the framing when armed: one whole message and the start of the next.
        let buffered = [message(b'Q', b"select 1\0"), vec![b'Q', 0, 0]].concat();
        assert_eq!(bounded.arm(Position::after(&buffered, 64)), Ok(()));
        tokio::io::AsyncWriteExt::write_all(&mut client, &[0, 65, b'a']).await.expect("write");
        let mut read = [0u8; 16];
        let e = bounded.read(&mut read).await.expect_err("refused");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(bounded.refused(), Some(65));
        assert!(bounded.read(&mut read).await.is_err());
    }
}

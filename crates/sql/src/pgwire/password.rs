//! The password message, read here when it is longer than pgwire reads one.
//!
//! The password is the client's token. pgwire decodes a password message of at most 10,000 bytes, its limit for
//! every message of the startup exchange; PostgreSQL reads an authentication token of up to 65,535
//! (`PG_MAX_AUTH_TOKEN_LENGTH`), and an access token that carries a user's many groups or roles can be longer
//! than 10,000. So, while the client authenticates, a password message over pgwire's limit is read here and
//! handed on undecoded, as pgwire hands on any password message (the startup handler decodes it with
//! `into_password`). One over PostgreSQL's limit is refused at its header.

use bytes::{Buf, BytesMut};
use pgwire::error::PgWireError;
use pgwire::messages::PgWireFrontendMessage;
use pgwire::messages::startup::PasswordMessageFamily;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::codec::Framed;

/// The longest message of the startup exchange pgwire decodes, its length field included.
const PGWIRE_LIMIT: usize = 10_000;

/// The longest password message taken, its length field included: PostgreSQL's `PG_MAX_AUTH_TOKEN_LENGTH`.
pub(crate) const LIMIT: usize = 65_535;

/// A message's type byte and length field.
const HEADER: usize = 5;

/// The password message at the head of the stream, if it is one pgwire would refuse for its length alone; `None`
/// leaves the next message, whatever it is, to pgwire's decoder (bytes read here stay in the read buffer for it).
///
/// Called only while a password is awaited, and only between messages: the read buffer then starts at a message's
/// first byte, and whatever follows the password in it is left there.
pub(crate) async fn read_long<S, C>(socket: &mut Framed<S, C>) -> Result<Option<PgWireFrontendMessage>, PgWireError>
where
    S: AsyncRead + Unpin,
{
    if !fill(socket, HEADER).await? {
        return Ok(None);
    }
    let head = &socket.read_buffer()[..HEADER];
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if head[0] != b'p' || len <= PGWIRE_LIMIT {
        return Ok(None);
    }
    if len > LIMIT {
        return Err(PgWireError::MessageTooLarge(LIMIT, len));
    }
    if !fill(socket, 1 + len).await? {
        return Ok(None);
    }
    let mut message = socket.read_buffer_mut().split_to(1 + len);
    message.advance(HEADER);
    Ok(Some(PgWireFrontendMessage::PasswordMessageFamily(PasswordMessageFamily::Raw(message))))
}

/// Reads until the read buffer holds `n` bytes; false at the end of the stream short of them (the decoder then
/// meets the same end, and the session ends as it would have).
async fn fill<S, C>(socket: &mut Framed<S, C>, n: usize) -> std::io::Result<bool>
where
    S: AsyncRead + Unpin,
{
    let mut more = BytesMut::new();
    while socket.read_buffer().len() < n {
        more.reserve(n - socket.read_buffer().len());
        if socket.get_mut().read_buf(&mut more).await? == 0 {
            return Ok(false);
        }
        socket.read_buffer_mut().extend_from_slice(&more);
        more.clear();
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;
    use tokio_util::codec::BytesCodec;

    use super::super::message_limit::tests::message;
    use super::*;

    /// What `read_long` makes of `stream` written `split` bytes at a time, and what it leaves in the read buffer.
    async fn read(stream: Vec<u8>, split: usize) -> (Result<Option<BytesMut>, String>, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1 << 17);
        let writer = tokio::spawn(async move {
            for piece in stream.chunks(split) {
                client.write_all(piece).await.expect("written");
                tokio::task::yield_now().await;
            }
            // Dropped: the stream ends once what was written is read.
        });
        let mut framed = Framed::new(server, BytesCodec::new());
        let read = match read_long(&mut framed).await {
            Ok(Some(PgWireFrontendMessage::PasswordMessageFamily(PasswordMessageFamily::Raw(body)))) => Ok(Some(body)),
            Ok(Some(other)) => Err(format!("not a raw password message: {other:?}")),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        };
        writer.await.expect("the writer ends");
        (read, framed.read_buffer().to_vec())
    }

    #[tokio::test]
    async fn a_password_longer_than_pgwire_reads_is_read_whole_and_what_follows_it_left_for_the_decoder() {
        let password = [vec![b't'; 12_000], vec![0]].concat();
        let after = message(b'Q', b"select 1\0");
        for split in [1, 5, 7, 4096, 1 << 17] {
            let (read, left) = read([message(b'p', &password), after.clone()].concat(), split).await;
            assert_eq!(read, Ok(Some(BytesMut::from(&password[..]))), "written {split} bytes at a time");
            // Only what the last read brought past the password is left, and it is the next message's start.
            assert!(after.starts_with(&left), "written {split} bytes at a time");
        }
    }

    #[tokio::test]
    async fn a_password_pgwire_reads_and_any_other_message_are_left_to_the_decoder_unread() {
        for stream in [message(b'p', &[b't'; 9_995]), message(b'Q', &[b'x'; 20_000])] {
            let (read, left) = read(stream.clone(), 1 << 17).await;
            assert_eq!(read, Ok(None));
            assert!(stream.starts_with(&left) && left.len() >= HEADER);
        }
    }

    #[tokio::test]
    async fn a_password_over_postgresqls_limit_is_refused_at_its_header() {
        let header = [vec![b'p'], 65_536u32.to_be_bytes().to_vec()].concat();
        let (read, _) = read(header, 2).await;
        assert_eq!(read, Err(PgWireError::MessageTooLarge(LIMIT, 65_536).to_string()));
    }

    #[tokio::test]
    async fn a_stream_ending_short_of_the_password_is_left_to_the_decoder() {
        let cut = message(b'p', &[b't'; 12_000])[..6_000].to_vec();
        let (read, left) = read(cut.clone(), 1 << 17).await;
        assert_eq!((read, left), (Ok(None), cut));
    }
}

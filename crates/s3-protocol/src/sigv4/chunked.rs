//! aws-chunked decoding with per-chunk signature verification, as a sans-I/O state machine
//! ([`AwsChunkedDecoder`]) and a [`http_body::Body`] adapter over it ([`AwsChunkedBody`]).
//!
//! Wire format, signed: `hex-size;chunk-signature=<64 hex>\r\n<data>\r\n` repeated, a final
//! `0;chunk-signature=<sig>\r\n`, then `\r\n` (no trailer) or trailer lines, a signed
//! `x-amz-trailer-signature:<sig>\r\n` and `\r\n`. Unsigned: `hex-size\r\n<data>\r\n`, `0\r\n`,
//! trailer lines, `\r\n`.
//!
//! Memory is bounded: a signed chunk is held until its signature verifies (at most
//! [`MAX_CHUNK_SIZE`]), a header or trailer line at most [`MAX_LINE_LEN`].

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};

use super::checksum::RunningChecksum;
use super::error::SigV4Error;
use super::key::{EMPTY_SHA256_HEX, SigningKey, macs_equal, parse_hex32, sha256};
use super::payload::{BoxError, PayloadError};

/// Largest chunk accepted. SDKs send 64 KiB to 8 MiB chunks; a signed chunk is held in memory
/// until its signature is checked, so this bounds memory per upload.
pub const MAX_CHUNK_SIZE: u64 = 16 * 1024 * 1024;
/// Longest chunk-header or trailer line, CRLF excluded.
pub const MAX_LINE_LEN: usize = 4096;
/// Most trailer bytes in total.
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Most trailer lines.
pub const MAX_TRAILERS: usize = 16;

const BAD_FRAMING: SigV4Error = SigV4Error::InvalidRequest("malformed aws-chunked encoding");

/// Which aws-chunked variant the request announced in `x-amz-content-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkedMode {
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD`.
    Signed,
    /// `STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER`.
    SignedWithTrailer,
    /// `STREAMING-UNSIGNED-PAYLOAD-TRAILER`.
    UnsignedWithTrailer,
}

impl ChunkedMode {
    fn signed(self) -> bool {
        !matches!(self, Self::UnsignedWithTrailer)
    }
}

/// The chain of chunk signatures: each one signs its chunk and the previous signature, starting
/// from the request's (seed) signature.
#[derive(Debug, Clone)]
pub struct ChunkSigner {
    key: SigningKey,
    previous: [u8; 32],
    amz_date: String,
    scope: String,
}

impl ChunkSigner {
    /// A chain starting at `seed_signature`, the signature of the request head.
    pub fn new(key: SigningKey, seed_signature: [u8; 32], amz_date: &str, scope: &str) -> Self {
        Self { key, previous: seed_signature, amz_date: amz_date.to_owned(), scope: scope.to_owned() }
    }

    /// The signature the next chunk must carry, given the SHA-256 of its data.
    pub fn next_chunk_signature(&self, data_sha256: &[u8; 32]) -> [u8; 32] {
        let sts = format!(
            "AWS4-HMAC-SHA256-PAYLOAD\n{}\n{}\n{}\n{EMPTY_SHA256_HEX}\n{}",
            self.amz_date,
            self.scope,
            hex::encode(self.previous),
            hex::encode(data_sha256)
        );
        self.key.sign(sts.as_bytes())
    }

    /// The signature the trailer must carry, given the SHA-256 of its canonical form.
    pub fn trailer_signature(&self, trailer_sha256: &[u8; 32]) -> [u8; 32] {
        let sts = format!(
            "AWS4-HMAC-SHA256-TRAILER\n{}\n{}\n{}\n{}",
            self.amz_date,
            self.scope,
            hex::encode(self.previous),
            hex::encode(trailer_sha256)
        );
        self.key.sign(sts.as_bytes())
    }

    fn verify_and_advance(
        &mut self,
        expected: [u8; 32],
        given: &[u8; 32],
        what: &'static str,
    ) -> Result<(), SigV4Error> {
        if !macs_equal(&expected, given) {
            return Err(SigV4Error::SignatureDoesNotMatch(what));
        }
        self.previous = expected;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum State {
    Header,
    Data { remaining: u64, signature: Option<[u8; 32]> },
    DataEnd { signature: Option<[u8; 32]> },
    FinalCrlf,
    Trailer,
    Done,
}

/// Sans-I/O aws-chunked decoder: [`push`](Self::push) bytes as they arrive in any split,
/// [`pop`](Self::pop) decoded data, [`finish`](Self::finish) at end of input.
///
/// Decoded data is released only once verified (a signed chunk after its signature), and the
/// last released piece is withheld until the whole body has verified (final chunk, trailer
/// signature, trailing checksum, decoded length): a proxy forwarding the output with the decoded
/// length as `Content-Length` therefore never lets the backend see a complete body that failed.
/// After an error every call returns that error.
#[derive(Debug)]
pub struct AwsChunkedDecoder {
    mode: ChunkedMode,
    signer: Option<ChunkSigner>,
    /// Chunk and trailer signatures are parsed but not checked (see [`Self::framing_only`]).
    skip_signatures: bool,
    declared_length: u64,
    decoded: u64,
    declared_trailers: Vec<String>,
    input: BytesMut,
    state: State,
    chunk_parts: Vec<Bytes>,
    chunk_hasher: Sha256,
    ready: VecDeque<Bytes>,
    held: Option<Bytes>,
    trailers: Vec<(String, String)>,
    trailer_bytes: usize,
    trailer_signed: bool,
    checksum: Option<(String, RunningChecksum)>,
    failed: Option<SigV4Error>,
}

impl std::fmt::Debug for RunningChecksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunningChecksum")
    }
}

impl AwsChunkedDecoder {
    /// A decoder for `mode`. `decoded_length` is `x-amz-decoded-content-length`,
    /// `declared_trailers` the lowercase names in `x-amz-trailer`, `signer` the chain seeded by
    /// the request signature (required for the signed modes: without it every chunk fails).
    pub fn new(
        mode: ChunkedMode,
        decoded_length: u64,
        declared_trailers: Vec<String>,
        signer: Option<ChunkSigner>,
    ) -> Self {
        let checksum =
            declared_trailers.iter().find_map(|name| RunningChecksum::for_trailer(name).map(|c| (name.clone(), c)));
        Self {
            mode,
            signer,
            skip_signatures: false,
            declared_length: decoded_length,
            decoded: 0,
            declared_trailers,
            input: BytesMut::new(),
            state: State::Header,
            chunk_parts: Vec::new(),
            chunk_hasher: Sha256::new(),
            ready: VecDeque::new(),
            held: None,
            trailers: Vec::new(),
            trailer_bytes: 0,
            trailer_signed: false,
            checksum,
            failed: None,
        }
    }

    /// A decoder that checks the framing, lengths and trailing checksum but not the chunk signatures.
    ///
    /// For the sidecar only: its clients sign with dummy credentials on loopback, so their chunk signatures
    /// carry no authority; what reaches the central Lakegate is re-signed by the sidecar itself.
    pub fn framing_only(mode: ChunkedMode, decoded_length: u64, declared_trailers: Vec<String>) -> Self {
        Self { skip_signatures: true, ..Self::new(mode, decoded_length, declared_trailers, None) }
    }

    /// Feeds the next bytes of the encoded body.
    pub fn push(&mut self, data: &[u8]) -> Result<(), SigV4Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.input.extend_from_slice(data);
        let result = self.process();
        self.record(result)
    }

    /// Signals the end of the encoded body; fails if it ended early or did not verify.
    pub fn finish(&mut self) -> Result<(), SigV4Error> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = match self.state {
            State::Done => Ok(()),
            // Tolerated: trailer lines complete but the closing empty line never came. The
            // trailer signature (if any) and checksum are still checked by `complete`.
            State::Trailer if self.input.is_empty() && (!self.trailers.is_empty() || self.trailer_signed) => {
                self.complete()
            }
            _ => Err(SigV4Error::IncompleteBody("the body ended inside the aws-chunked encoding")),
        };
        self.record(result)
    }

    /// The next piece of decoded, verified data.
    pub fn pop(&mut self) -> Option<Bytes> {
        self.ready.pop_front()
    }

    /// Whether the whole body decoded and verified.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done) && self.failed.is_none()
    }

    /// The trailer lines received (lowercase name, trimmed value), signature line excluded.
    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    fn record(&mut self, result: Result<(), SigV4Error>) -> Result<(), SigV4Error> {
        if let Err(e) = &result {
            // Nothing decoded so far may leave once the body is known to be bad.
            self.failed = Some(e.clone());
            self.ready.clear();
            self.held = None;
            self.chunk_parts.clear();
            self.input.clear();
        }
        result
    }

    fn process(&mut self) -> Result<(), SigV4Error> {
        loop {
            match self.state {
                State::Header => {
                    let Some(line) = self.take_line()? else {
                        return Ok(());
                    };
                    self.on_chunk_header(&line)?;
                }
                State::Data { remaining, signature } => {
                    if self.input.is_empty() {
                        return Ok(());
                    }
                    let n = usize::try_from(remaining).unwrap_or(usize::MAX).min(self.input.len());
                    let piece = self.input.split_to(n).freeze();
                    self.decoded = self.decoded.saturating_add(n as u64);
                    if self.decoded > self.declared_length {
                        return Err(SigV4Error::IncompleteBody("more data than x-amz-decoded-content-length"));
                    }
                    if self.mode.signed() {
                        self.chunk_hasher.update(&piece);
                        self.chunk_parts.push(piece);
                    } else {
                        self.release(piece);
                    }
                    let remaining = remaining.saturating_sub(n as u64);
                    self.state = if remaining == 0 {
                        State::DataEnd { signature }
                    } else {
                        State::Data { remaining, signature }
                    };
                }
                State::DataEnd { signature } => {
                    if !self.take_crlf()? {
                        return Ok(());
                    }
                    if let Some(given) = signature {
                        let hash: [u8; 32] = std::mem::take(&mut self.chunk_hasher).finalize().into();
                        self.verify_chunk(&given, &hash)?;
                        for part in std::mem::take(&mut self.chunk_parts) {
                            self.release(part);
                        }
                    }
                    self.state = State::Header;
                }
                State::FinalCrlf => {
                    if !self.take_crlf()? {
                        return Ok(());
                    }
                    self.complete()?;
                }
                State::Trailer => {
                    let Some(line) = self.take_line()? else {
                        return Ok(());
                    };
                    self.on_trailer_line(&line)?;
                }
                State::Done => {
                    return if self.input.is_empty() {
                        Ok(())
                    } else {
                        Err(SigV4Error::InvalidRequest("data after the end of the aws-chunked body"))
                    };
                }
            }
        }
    }

    /// Takes one CRLF-terminated line, without the CRLF, if complete.
    fn take_line(&mut self) -> Result<Option<Bytes>, SigV4Error> {
        // Only the first MAX_LINE_LEN + 2 bytes can hold a valid line end: scanning no further
        // keeps byte-at-a-time input from rescanning a large buffer on every push.
        let window = self.input.get(..MAX_LINE_LEN + 2).unwrap_or(&self.input);
        let end = window.windows(2).position(|w| w == b"\r\n");
        match end {
            Some(pos) if pos <= MAX_LINE_LEN => {
                let line = self.input.split_to(pos).freeze();
                self.input.advance(2);
                Ok(Some(line))
            }
            Some(_) => Err(SigV4Error::InvalidRequest("aws-chunked line too long")),
            None if self.input.len() > MAX_LINE_LEN + 1 => Err(SigV4Error::InvalidRequest("aws-chunked line too long")),
            None => Ok(None),
        }
    }

    fn take_crlf(&mut self) -> Result<bool, SigV4Error> {
        match self.input.get(..2) {
            None if self.input.first().is_none_or(|b| *b == b'\r') => Ok(false),
            Some(b"\r\n") => {
                self.input.advance(2);
                Ok(true)
            }
            _ => Err(BAD_FRAMING),
        }
    }

    fn on_chunk_header(&mut self, line: &[u8]) -> Result<(), SigV4Error> {
        let line = std::str::from_utf8(line).map_err(|_| BAD_FRAMING)?;
        let (size, extension) = match line.split_once(';') {
            Some((s, e)) => (s, Some(e)),
            None => (line, None),
        };
        if size.is_empty() || size.len() > 16 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(BAD_FRAMING);
        }
        let size = u64::from_str_radix(size, 16).map_err(|_| BAD_FRAMING)?;
        if size > MAX_CHUNK_SIZE {
            return Err(SigV4Error::InvalidRequest("aws-chunked chunk larger than allowed"));
        }
        let signature = match (self.mode.signed(), extension) {
            (true, Some(ext)) => {
                let sig = ext.strip_prefix("chunk-signature=").ok_or(BAD_FRAMING)?;
                Some(parse_hex32(sig).ok_or(BAD_FRAMING)?)
            }
            (true, None) => {
                return Err(SigV4Error::SignatureDoesNotMatch("a chunk has no signature"));
            }
            (false, None) => None,
            (false, Some(_)) => return Err(BAD_FRAMING),
        };
        if size > 0 {
            self.state = State::Data { remaining: size, signature };
            return Ok(());
        }
        if let Some(given) = signature {
            self.verify_chunk(&given, &sha256(b""))?;
        }
        self.state = match self.mode {
            ChunkedMode::Signed => State::FinalCrlf,
            ChunkedMode::SignedWithTrailer | ChunkedMode::UnsignedWithTrailer => State::Trailer,
        };
        Ok(())
    }

    fn verify_chunk(&mut self, given: &[u8; 32], data_hash: &[u8; 32]) -> Result<(), SigV4Error> {
        if self.skip_signatures {
            return Ok(());
        }
        let signer =
            self.signer.as_mut().ok_or(SigV4Error::SignatureDoesNotMatch("no seed signature to chain chunks from"))?;
        let expected = signer.next_chunk_signature(data_hash);
        signer.verify_and_advance(expected, given, "a chunk signature is wrong")
    }

    fn on_trailer_line(&mut self, line: &[u8]) -> Result<(), SigV4Error> {
        if line.is_empty() {
            return self.complete();
        }
        if self.trailer_signed {
            return Err(SigV4Error::InvalidRequest("trailer line after the trailer signature"));
        }
        self.trailer_bytes = self.trailer_bytes.saturating_add(line.len());
        if self.trailer_bytes > MAX_TRAILER_BYTES || self.trailers.len() >= MAX_TRAILERS {
            return Err(SigV4Error::InvalidRequest("aws-chunked trailer too large"));
        }
        let line = std::str::from_utf8(line).map_err(|_| BAD_FRAMING)?;
        let (name, value) = line.split_once(':').ok_or(BAD_FRAMING)?;
        let name = name.trim().to_ascii_lowercase();
        let value = value.trim();
        if name == "x-amz-trailer-signature" {
            if !self.mode.signed() {
                return Err(SigV4Error::InvalidRequest("trailer signature on an unsigned payload"));
            }
            let given = parse_hex32(value).ok_or(BAD_FRAMING)?;
            if self.skip_signatures {
                self.trailer_signed = true;
                return Ok(());
            }
            let hash = sha256(&self.canonical_trailers());
            let signer = self
                .signer
                .as_mut()
                .ok_or(SigV4Error::SignatureDoesNotMatch("no seed signature to chain the trailer from"))?;
            let expected = signer.trailer_signature(&hash);
            signer.verify_and_advance(expected, &given, "the trailer signature is wrong")?;
            self.trailer_signed = true;
            return Ok(());
        }
        let allowed = if self.declared_trailers.is_empty() {
            name.starts_with("x-amz-checksum-")
        } else {
            self.declared_trailers.contains(&name)
        };
        if !allowed || self.trailers.iter().any(|(n, _)| *n == name) {
            return Err(SigV4Error::InvalidRequest("a trailer was not declared in x-amz-trailer or is repeated"));
        }
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(BAD_FRAMING);
        }
        self.trailers.push((name, value.to_owned()));
        Ok(())
    }

    /// `name:value\n` per trailer, sorted by name, as the signers hash them.
    fn canonical_trailers(&self) -> Vec<u8> {
        let mut sorted: Vec<&(String, String)> = self.trailers.iter().collect();
        sorted.sort();
        let mut out = Vec::new();
        for (name, value) in sorted {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out
    }

    fn complete(&mut self) -> Result<(), SigV4Error> {
        if self.mode == ChunkedMode::SignedWithTrailer && !self.trailer_signed {
            return Err(SigV4Error::AccessDenied("the trailer signature is missing"));
        }
        if self.decoded != self.declared_length {
            return Err(SigV4Error::IncompleteBody("less data than x-amz-decoded-content-length"));
        }
        for declared in &self.declared_trailers {
            if !self.trailers.iter().any(|(n, _)| n == declared) {
                return Err(SigV4Error::IncompleteBody("a trailer declared in x-amz-trailer is missing"));
            }
        }
        if let Some((name, checksum)) = self.checksum.take() {
            let computed = checksum.finish_base64();
            let received = self.trailers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
            if received != Some(computed.as_str()) {
                return Err(SigV4Error::BadDigest("the trailing checksum does not match the data"));
            }
        }
        self.state = State::Done;
        if let Some(last) = self.held.take() {
            self.ready.push_back(last);
        }
        Ok(())
    }

    /// Queues verified data, keeping the newest piece back until the body completes.
    fn release(&mut self, piece: Bytes) {
        if piece.is_empty() {
            return;
        }
        if let Some((_, checksum)) = &mut self.checksum {
            checksum.update(&piece);
        }
        if let Some(previous) = self.held.replace(piece) {
            self.ready.push_back(previous);
        }
    }
}

/// Fuzz entry point: decodes `data` as an aws-chunked body. The first byte picks the mode and how
/// the rest is split into pushes; the signer uses a fixed key, so signed inputs mostly exercise
/// the framing and the failure paths. Never panics; returns the decoded bytes or the error.
pub fn fuzz_aws_chunked(data: &[u8]) -> Result<Vec<u8>, SigV4Error> {
    let (control, body) = data.split_first().map_or((0, data), |(c, rest)| (*c, rest));
    let mode = match control % 3 {
        0 => ChunkedMode::Signed,
        1 => ChunkedMode::SignedWithTrailer,
        _ => ChunkedMode::UnsignedWithTrailer,
    };
    let split = usize::from(control / 3).max(1);
    let key = super::key::derive_signing_key(&super::SecretKey::new("fuzz"), "20130524", "us-east-1", "s3");
    let signer = ChunkSigner::new(key, [0; 32], "20130524T000000Z", "20130524/us-east-1/s3/aws4_request");
    let mut decoder =
        AwsChunkedDecoder::new(mode, body.len() as u64, vec!["x-amz-checksum-crc32".into()], Some(signer));
    let mut out = Vec::new();
    for piece in body.chunks(split) {
        decoder.push(piece)?;
        while let Some(b) = decoder.pop() {
            out.extend_from_slice(&b);
        }
    }
    decoder.finish()?;
    while let Some(b) = decoder.pop() {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

/// A [`Body`] that decodes and verifies an aws-chunked request body.
///
/// Yields decoded data only once verified; the last data frame is withheld until the whole body
/// (final chunk, trailer, checksum, decoded length) has verified, and an error is yielded instead
/// if it does not, so a forwarding proxy aborts the upstream upload before it is complete. HTTP
/// trailers of the inner body are dropped: aws-chunked carries its own. For a
/// `Stream<Item = Result<Bytes, E>>`, wrap it in `http_body_util::StreamBody` (mapping items to
/// frames); for a body that is not `Unpin`, pass `Box::pin(body)`.
#[derive(Debug)]
pub struct AwsChunkedBody<B> {
    inner: B,
    decoder: AwsChunkedDecoder,
    inner_done: bool,
    errored: bool,
}

impl<B> AwsChunkedBody<B> {
    /// Decodes `inner` with `decoder` (from [`super::Verified::aws_chunked_decoder`]).
    pub fn new(inner: B, decoder: AwsChunkedDecoder) -> Self {
        Self { inner, decoder, inner_done: false, errored: false }
    }

    /// The trailer lines received, once the body has ended.
    pub fn trailers(&self) -> &[(String, String)] {
        self.decoder.trailers()
    }
}

impl<B> Body for AwsChunkedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = PayloadError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, PayloadError>>> {
        let this = &mut *self;
        loop {
            if this.errored {
                // Repeat the refusal rather than look like a clean end of body.
                return Poll::Ready(Some(Err(PayloadError::Rejected(SigV4Error::IncompleteBody(
                    "the body was already refused",
                )))));
            }
            if let Some(data) = this.decoder.pop() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if this.inner_done {
                return Poll::Ready(None);
            }
            let step = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.decoder.push(&data).map_err(PayloadError::Rejected),
                    Err(_trailers) => Ok(()),
                },
                Some(Err(e)) => Err(PayloadError::Body(e.into())),
                None => {
                    this.inner_done = true;
                    this.decoder.finish().map_err(PayloadError::Rejected)
                }
            };
            if let Err(e) = step {
                this.errored = true;
                return Poll::Ready(Some(Err(e)));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner_done && !self.errored && self.decoder.ready.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        // The decoded length is announced; what is still to come is that minus what went out,
        // which this adapter does not track, so only the upper bound is safe to give.
        let mut hint = SizeHint::new();
        hint.set_upper(self.decoder.declared_length);
        hint
    }
}

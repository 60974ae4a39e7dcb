//! Verification of a body whose SHA-256 was signed (`x-amz-content-sha256: <hex>`).

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::error::SigV4Error;
use super::key::macs_equal;

/// The error type bodies are expected to carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a verifying body adapter stopped.
#[derive(Debug, Error)]
pub enum PayloadError {
    /// Reading the underlying body failed (client went away...).
    #[error("reading the request body failed")]
    Body(#[source] BoxError),
    /// The body did not verify; answer with this error and do not commit anything.
    #[error(transparent)]
    Rejected(#[from] SigV4Error),
}

/// A [`Body`] that hashes the data going through and fails at the end if the SHA-256 is not
/// the signed one.
///
/// The last data frame is withheld until the inner body has ended and the hash has been checked:
/// when the hash is wrong the consumer gets [`SigV4Error::XAmzContentSHA256Mismatch`] instead of
/// that frame, so a proxy forwarding with the original `Content-Length` aborts the upstream
/// request before the backend has the whole object, and nothing is committed. HTTP trailers of
/// the inner body are passed on after the last data frame. For a body that is not `Unpin`, pass
/// `Box::pin(body)`.
#[derive(Debug)]
pub struct Sha256VerifiedBody<B> {
    inner: B,
    expected: [u8; 32],
    hasher: Sha256,
    held: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
    verified: bool,
    errored: bool,
}

impl<B> Sha256VerifiedBody<B> {
    /// Wraps `inner`, which must hash to `expected` (from [`super::PayloadMode::Sha256`]).
    pub fn new(inner: B, expected: [u8; 32]) -> Self {
        Self { inner, expected, hasher: Sha256::new(), held: None, trailers: None, verified: false, errored: false }
    }
}

impl<B> Body for Sha256VerifiedBody<B>
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
                return Poll::Ready(Some(Err(PayloadError::Rejected(SigV4Error::XAmzContentSHA256Mismatch))));
            }
            if this.verified {
                if let Some(last) = this.held.take() {
                    return Poll::Ready(Some(Ok(Frame::data(last))));
                }
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => {
                    this.errored = true;
                    return Poll::Ready(Some(Err(PayloadError::Body(e.into()))));
                }
                None => {
                    let actual: [u8; 32] = std::mem::take(&mut this.hasher).finalize().into();
                    if !macs_equal(&actual, &this.expected) {
                        this.errored = true;
                        this.held = None;
                        return Poll::Ready(Some(Err(PayloadError::Rejected(SigV4Error::XAmzContentSHA256Mismatch))));
                    }
                    this.verified = true;
                    continue;
                }
            };
            match frame.into_data() {
                Ok(data) => {
                    if data.is_empty() {
                        continue;
                    }
                    this.hasher.update(&data);
                    if let Some(previous) = this.held.replace(data) {
                        return Poll::Ready(Some(Ok(Frame::data(previous))));
                    }
                }
                Err(frame) => {
                    // Trailers end the data: keep them until the hash is checked.
                    if let Ok(t) = frame.into_trailers() {
                        this.trailers = Some(t);
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.verified && self.held.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let inner = self.inner.size_hint();
        let held = self.held.as_ref().map_or(0, |b| b.len() as u64);
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower().saturating_add(held));
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper.saturating_add(held));
        }
        hint
    }
}

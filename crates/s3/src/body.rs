//! Body adapters of the forwarding path: the request side counts bytes and remembers why a body was refused
//! (so the client gets `XAmzContentSHA256Mismatch`, not the store's reaction to an aborted upload); the response
//! side counts bytes and finishes the request's audit slots when the last byte has gone out.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

use super::backend::BoxBody;
use lakegate_core::audit::AuditSlot;
use lakegate_s3_protocol::sigv4::{BoxError, PayloadError, SigV4Error};

/// How long the rest of a request body is read after Lakegate has answered without it, at most in all and at
/// most between two pieces of it (nginx's `lingering_time` and `lingering_timeout` defaults).
const LINGER_TOTAL: std::time::Duration = std::time::Duration::from_secs(30);
const LINGER_IDLE: std::time::Duration = std::time::Duration::from_secs(5);

/// A client's request body that, when dropped unread (the request was refused, or the store answered before it
/// took the whole upload), is read to its end and discarded for a while before the connection is let go.
///
/// Closing a connection whose request body is still arriving resets it, and a client still sending (one that
/// does not wait for `100 Continue`, such as the AWS SDK for Rust) then sees a broken pipe instead of the answer
/// already sent to it: the refusal, or the store's `412 PreconditionFailed`. S3 and nginx keep reading, so do we.
///
/// Except when the client asked `Expect: 100-continue` and the body was never read: hyper then never sent
/// `100 Continue`, the client need not send the body at all (botocore does not, and reuses the connection), and
/// reading it would eat the next request. hyper closes such a connection, which is right.
#[derive(Debug)]
pub struct Lingering {
    inner: Option<hyper::body::Incoming>,
    awaits_continue: bool,
    /// Set on the first read of the body (when hyper sends `100 Continue` to a client that waits for it).
    read_started: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Lingering {
    /// `expects_continue`: the request carried `Expect: 100-continue`.
    pub fn new(body: hyper::body::Incoming, expects_continue: bool) -> Self {
        Self { inner: Some(body), awaits_continue: expects_continue, read_started: Default::default() }
    }

    /// A flag that turns true once the body is first read.
    pub fn read_started(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.read_started.clone()
    }
}

impl Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // hyper answers `100 Continue` on this first read: from now on the client sends the body.
        self.awaits_continue = false;
        self.read_started.store(true, std::sync::atomic::Ordering::Relaxed);
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(mut body) = self.inner.take() else { return };
        if body.is_end_stream() || self.awaits_continue {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        runtime.spawn(async move {
            let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
            loop {
                let until = deadline.min(tokio::time::Instant::now() + LINGER_IDLE);
                match tokio::time::timeout_at(until, body.frame()).await {
                    Ok(Some(Ok(_))) => {}
                    // The end, the client gone, or out of time: the connection is let go as before.
                    _ => return,
                }
            }
        });
    }
}

/// What the request-body tap observed, shared with the handler.
#[derive(Debug, Default)]
pub struct RequestTap {
    pub bytes: AtomicU64,
    rejected: Mutex<Option<SigV4Error>>,
}

impl RequestTap {
    /// The verifier's refusal of the body, if it refused it.
    pub fn rejected(&self) -> Option<SigV4Error> {
        self.rejected.lock().ok().and_then(|g| g.clone())
    }
}

/// Wraps a request body: counts bytes into `tap` and records a verification refusal.
pub fn tap_request<B>(body: B, tap: Arc<RequestTap>) -> BoxBody
where
    B: Body<Data = Bytes, Error = PayloadError> + Send + Unpin + 'static,
{
    Tapped { inner: body, tap }.boxed_unsync()
}

struct Tapped<B> {
    inner: B,
    tap: Arc<RequestTap>,
}

impl<B> Body for Tapped<B>
where
    B: Body<Data = Bytes, Error = PayloadError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    this.tap.bytes.fetch_add(d.len() as u64, Ordering::Relaxed);
                    lakegate_core::metrics::S3_BYTES.add(&[("direction", "in")], d.len() as u64);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                if let PayloadError::Rejected(reason) = &e
                    && let Ok(mut slot) = this.tap.rejected.lock()
                {
                    *slot = Some(reason.clone());
                }
                Poll::Ready(Some(Err(Box::new(e))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that finishes its audit slots when it ends (status, bytes in and out). A body dropped before
/// its end leaves the slots to record the access as incomplete.
pub struct AuditedBody {
    inner: BoxBody,
    slots: Vec<AuditSlot>,
    status: u16,
    bytes_out: u64,
    /// The response's `Content-Length`: hyper stops polling once that many bytes went out, without asking the
    /// body for its end, so reaching it is the end.
    expected: Option<u64>,
    tap: Option<Arc<RequestTap>>,
}

impl AuditedBody {
    pub fn new(
        inner: BoxBody,
        slots: Vec<AuditSlot>,
        status: u16,
        expected: Option<u64>,
        tap: Option<Arc<RequestTap>>,
    ) -> Self {
        Self { inner, slots, status, bytes_out: 0, expected, tap }
    }

    fn complete(&self) -> bool {
        self.inner.is_end_stream() || self.expected.is_some_and(|n| self.bytes_out >= n)
    }

    fn finish(&mut self, complete: bool) {
        let bytes_in = self.tap.as_ref().map_or(0, |t| t.bytes.load(Ordering::Relaxed));
        for mut slot in self.slots.drain(..) {
            let outcome = slot.event_mut().outcome_mut();
            outcome.status = Some(self.status);
            outcome.bytes_in = bytes_in;
            outcome.bytes_out = self.bytes_out;
            if complete {
                slot.finish();
            }
        }
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
            Some(Ok(frame)) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes_out += d.len() as u64;
                }
                if this.complete() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            None => {
                this.finish(true);
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        // hyper never polls a body it knows is empty (HEAD, 204, Content-Length: 0): that one did end.
        let ended = self.complete();
        self.finish(ended);
    }
}

/// The labels of one S3 front request's metrics; an extension of its response until the body is wrapped.
#[derive(Debug, Clone, Copy)]
pub struct MetricLabels {
    /// The classified operation (`OpKind::name`), or a fixed name for what is not an S3 operation.
    pub operation: &'static str,
    /// `allow`, `deny` or `error`; `None` when the answer's status decides.
    pub decision: Option<&'static str>,
}

/// A response body that counts the bytes going out and, when it is dropped (sent, or abandoned), records the
/// request in the S3 metrics with its latency up to that moment.
pub struct MeteredBody {
    inner: BoxBody,
    started: std::time::Instant,
    operation: &'static str,
    decision: &'static str,
    status_class: &'static str,
}

impl MeteredBody {
    /// Wraps `response`'s body; the labels come from its [`MetricLabels`] extension and status.
    pub fn wrap(response: http::Response<BoxBody>, started: std::time::Instant) -> http::Response<BoxBody> {
        let (mut head, inner) = response.into_parts();
        let labels = head.extensions.remove::<MetricLabels>();
        let status = head.status.as_u16();
        let decision = labels.and_then(|l| l.decision).unwrap_or(match status {
            401 | 403 => "deny",
            400.. => "error",
            _ => "allow",
        });
        let status_class = match status {
            0..200 => "1xx",
            200..300 => "2xx",
            300..400 => "3xx",
            400..500 => "4xx",
            _ => "5xx",
        };
        let operation = labels.map_or("Unknown", |l| l.operation);
        let body = Self { inner, started, operation, decision, status_class };
        http::Response::from_parts(head, body.boxed_unsync())
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(d) = f.data_ref()
        {
            lakegate_core::metrics::S3_BYTES.add(&[("direction", "out")], d.len() as u64);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        lakegate_core::metrics::S3_REQUESTS.inc(&[
            ("operation", self.operation),
            ("decision", self.decision),
            ("status", self.status_class),
        ]);
        lakegate_core::metrics::S3_REQUEST_SECONDS
            .observe(&[("operation", self.operation)], self.started.elapsed().as_secs_f64());
    }
}

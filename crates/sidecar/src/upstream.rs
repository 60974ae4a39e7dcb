//! The sidecar's one road to the central Lakegate: connections kept per thread ([`Connections`]) with the
//! sidecar's TLS identity (its CA and, for mutual TLS, its client certificate), used for the token exchange, STS
//! and every forwarded S3 request alike.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use lakegate_net::client::{ClientError, Connections, Origin, Pooled};
use lakegate_net::describe_error;
use lakegate_s3_protocol::BoxBody;
use lakegate_s3_protocol::sigv4::{PayloadError, SigV4Error};

/// Largest answer read whole (token endpoint and STS answers are a few KiB).
const MAX_ANSWER: usize = 256 * 1024;
/// Time allowed until the central Lakegate's response head arrives.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the central Lakegate could not be asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum UpstreamError {
    #[error("the central Lakegate is unreachable: {0}")]
    Unreachable(String),
    #[error("the central Lakegate did not answer in time")]
    Timeout,
    #[error("the request to the central Lakegate could not be built: {0}")]
    Request(String),
    /// The client's body failed while it was being forwarded (bad aws-chunked framing, checksum, length); the
    /// upload was aborted, so the central Lakegate stored nothing.
    #[error("the request body was refused: {0}")]
    BodyRejected(SigV4Error),
}

/// The central Lakegate as seen from the sidecar.
#[derive(Clone)]
pub struct Upstream {
    /// Per thread, as the sidecar serves each connection on one thread (`lakegate_net::Threads::PerCore`); the
    /// session's clone shares them.
    connections: Arc<Connections>,
    base: url::Url,
    origin: Origin,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").field("base", &self.base.as_str()).finish_non_exhaustive()
    }
}

/// An upstream URL the sidecar cannot use.
#[derive(Debug, thiserror::Error)]
#[error("{0}: the upstream must be an http(s) URL with a host and nothing after it")]
pub struct InvalidUpstream(pub url::Url);

impl Upstream {
    /// A client for `base` (`http(s)://host:port`, no path, query or user info) with `tls` for https.
    pub fn new(base: &url::Url, tls: rustls::ClientConfig) -> Result<Self, InvalidUpstream> {
        let origin = Origin::of_url(base)
            .filter(|_| base.path() == "/" && base.query().is_none() && base.username().is_empty())
            .ok_or_else(|| InvalidUpstream(base.clone()))?;
        let connections = Arc::new(Connections::new(tls, Duration::from_secs(5), Duration::from_secs(30)));
        Ok(Self { connections, base: base.clone(), origin })
    }

    /// `host[:port]` of the central Lakegate, as it is signed into forwarded requests.
    pub fn authority(&self) -> &str {
        self.origin.authority()
    }

    /// Sends `request` (origin form: the path, already encoded, and query) to the central Lakegate; the response
    /// body streams.
    pub async fn send(&self, request: Request<BoxBody>) -> Result<Response<Pooled>, UpstreamError> {
        self.send_to(&self.origin, request).await
    }

    async fn send_to(&self, origin: &Origin, request: Request<BoxBody>) -> Result<Response<Pooled>, UpstreamError> {
        tokio::time::timeout(RESPONSE_TIMEOUT, self.connections.send(origin, request))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| match e {
                ClientError::Send(e) => match rejected_body(&e) {
                    Some(refusal) => UpstreamError::BodyRejected(refusal),
                    None => UpstreamError::Unreachable(describe_error(&e)),
                },
                ClientError::Connect(detail) => UpstreamError::Unreachable(detail),
            })
    }

    /// POSTs an `application/x-www-form-urlencoded` body to `url` (optionally with HTTP Basic client
    /// credentials) and reads the whole answer.
    pub async fn post_form(
        &self,
        url: &url::Url,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> Result<(StatusCode, Bytes), UpstreamError> {
        let body = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(form).finish();
        let origin = Origin::of_url(url)
            .ok_or_else(|| UpstreamError::Request(format!("{url}: not an http(s) URL with a host")))?;
        let target = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let mut builder = Request::post(target)
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8")
            .header(http::header::ACCEPT, "application/json, text/xml");
        if let Some((id, secret)) = basic {
            // RFC 6749 section 2.3.1: both parts form-urlencoded before Basic encoding.
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            let pair = format!("{}:{}", encode(id), encode(secret));
            let value = format!("Basic {}", base64::Engine::encode(&base64::engine::general_purpose::STANDARD, pair));
            let value = HeaderValue::from_str(&value).map_err(|e| UpstreamError::Request(e.to_string()))?;
            builder = builder.header(http::header::AUTHORIZATION, value);
        }
        let body = Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync();
        let request = builder.body(body).map_err(|e| UpstreamError::Request(e.to_string()))?;
        let response = self.send_to(&origin, request).await?;
        let status = response.status();
        let bytes = lakegate_net::http::read_limited(response.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Ok((status, bytes))
    }
}

/// The refusal of the client's body, if that is what ended the request.
fn rejected_body(e: &hyper::Error) -> Option<SigV4Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(PayloadError::Rejected(refusal)) = s.downcast_ref::<PayloadError>() {
            return Some(refusal.clone());
        }
        source = s.source();
    }
    None
}

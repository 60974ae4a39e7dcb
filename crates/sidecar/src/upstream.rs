//! The sidecar's one connection to the central Lakegate: pooled hyper clients (one per thread) with the
//! sidecar's TLS identity (its CA and, for mutual TLS, its client certificate), used for the token exchange, STS
//! and every forwarded S3 request alike.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;

use lakegate_net::describe_error;
use lakegate_net::threads::ClientPerThread;
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
    clients: Arc<ClientPerThread<hyper_rustls::HttpsConnector<HttpConnector>, BoxBody>>,
    base: url::Url,
    authority: String,
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
        if !matches!(base.scheme(), "http" | "https")
            || base.host_str().is_none()
            || base.path() != "/"
            || base.query().is_some()
            || !base.username().is_empty()
        {
            return Err(InvalidUpstream(base.clone()));
        }
        let authority = match base.port() {
            Some(port) => format!("{}:{port}", base.host_str().unwrap_or_default()),
            None => base.host_str().unwrap_or_default().to_owned(),
        };
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(Duration::from_secs(5)));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let clients = Arc::new(ClientPerThread::new(https, Duration::from_secs(30)));
        Ok(Self { clients, base: base.clone(), authority })
    }

    /// `host[:port]` of the central Lakegate, as it is signed into forwarded requests.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The URI of `path` (already encoded) and `query` on the central Lakegate.
    pub fn uri(&self, path: &str, query: Option<&str>) -> String {
        match query {
            Some(q) => format!("{}://{}{path}?{q}", self.base.scheme(), self.authority),
            None => format!("{}://{}{path}", self.base.scheme(), self.authority),
        }
    }

    /// Sends a request; the response body streams.
    pub async fn send(&self, request: Request<BoxBody>) -> Result<Response<Incoming>, UpstreamError> {
        tokio::time::timeout(RESPONSE_TIMEOUT, self.clients.get().request(request))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| match rejected_body(&e) {
                Some(refusal) => UpstreamError::BodyRejected(refusal),
                None => UpstreamError::Unreachable(describe_error(&e)),
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
        let mut builder = Request::post(url.as_str())
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
        let response = self.send(request).await?;
        let status = response.status();
        let bytes = lakegate_net::http::read_limited(response.into_body(), MAX_ANSWER)
            .await
            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
        Ok((status, bytes))
    }
}

/// The refusal of the client's body, if that is what ended the request.
fn rejected_body(e: &hyper_util::client::legacy::Error) -> Option<SigV4Error> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(PayloadError::Rejected(refusal)) = s.downcast_ref::<PayloadError>() {
            return Some(refusal.clone());
        }
        source = s.source();
    }
    None
}

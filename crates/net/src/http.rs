//! HTTP plumbing shared by the HTTP fronts: request ids, bounded bodies, RFC 7807 problems.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use serde::Serialize;

/// The response body type of the control endpoint.
pub type Body = Full<Bytes>;

/// The header carrying the request id, on every response.
pub const REQUEST_ID: &str = "x-request-id";

/// A new request id: a UUIDv7, so ids sort by time in logs. Every request and statement takes one: encoded
/// straight into its buffer rather than through `Display`'s formatter.
pub fn new_request_id() -> String {
    let mut buf = uuid::Uuid::encode_buffer();
    uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf).to_owned()
}

/// An RFC 7807 problem.
#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// The request id, so a client can quote it to an operator.
    pub instance: String,
}

impl Problem {
    /// A problem of kind `slug` (documented in docs/api.md).
    pub fn new(
        status: StatusCode,
        slug: &str,
        title: &'static str,
        detail: impl Into<String>,
        request_id: &str,
    ) -> Self {
        Self {
            kind: format!("https://lakegate.dev/problems/{slug}"),
            title,
            status: status.as_u16(),
            detail: detail.into(),
            instance: request_id.to_owned(),
        }
    }

    /// The problem as an `application/problem+json` response.
    pub fn response(&self) -> Response<Body> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if self.status == 401 {
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        with_request_id(r, &self.instance)
    }
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl Serialize, request_id: &str) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    with_request_id(r, request_id)
}

/// A plain-text response.
pub fn text(status: StatusCode, content_type: &'static str, body: String, request_id: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    with_request_id(r, request_id)
}

/// Stamps the request id on a response.
pub fn with_request_id<B>(mut r: Response<B>, request_id: &str) -> Response<B> {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        r.headers_mut().insert(REQUEST_ID, v);
    }
    r
}

/// The token of an `Authorization: Bearer ...` header, if any.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("request body could not be read: {0}")]
    Read(String),
}

/// Reads a whole body of at most `limit` bytes (for small JSON/form requests only; data paths stream).
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(BodyError::TooLarge(limit)),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::new_request_id;

    #[test]
    fn request_ids_are_hyphenated_uuid_v7s_that_sort_by_time() {
        let ids: Vec<String> = (0..64).map(|_| new_request_id()).collect();
        for id in &ids {
            let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
            assert_eq!(parsed.get_version_num(), 7, "{id}");
            assert_eq!(id, &parsed.hyphenated().to_string(), "lower-case and hyphenated");
        }
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, ids, "distinct, and in the order they were made");
    }
}

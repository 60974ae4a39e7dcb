//! HTTP plumbing shared by the HTTP fronts: request ids, bounded bodies, RFC 7807 problems, hop-by-hop headers.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, header};
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

/// Header fields that describe one connection (RFC 9110 section 7.6.1) and never travel past the hop that
/// received them. `proxy-connection` is not in the RFC; old clients still send it.
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes a message's hop-by-hop fields before a proxy passes it on: the fixed ones, and every field its sender
/// named in `Connection`, as RFC 9110 section 7.6.1 asks of a proxy. A name that is not a valid field name names
/// nothing.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most messages name only fields that go anyway (`Connection: keep-alive`, `close`): only other names are
    // collected, so such a message costs no allocation.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
        .filter(|name| !HOP_BY_HOP.contains(name))
        .collect();
    for name in HOP_BY_HOP.iter().chain(&named) {
        headers.remove(name);
    }
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
    use super::{HeaderMap, HeaderName, HeaderValue, new_request_id, remove_hop_by_hop};

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_do_not_travel() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Store-Private,,  x-other "),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-store-private", "1"),
            ("x-other", "2"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic eA=="),
            ("proxy-connection", "keep-alive"),
            ("content-type", "text/csv"),
            ("content-length", "12"),
            ("x-amz-meta-owner", "alice"),
        ] {
            headers.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        remove_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-length", "content-type", "x-amz-meta-owner"]);
    }

    #[test]
    fn a_connection_value_that_names_no_valid_field_removes_nothing_else() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", HeaderValue::from_bytes(b"bad name, \xff\xfe, ").expect("a value"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        remove_hop_by_hop(&mut headers);
        assert_eq!(headers.keys().map(HeaderName::as_str).collect::<Vec<_>>(), ["content-type"]);
    }

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

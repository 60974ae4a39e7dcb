//! One request through the sidecar: drop the client's (dummy) authentication, decode an aws-chunked body, sign
//! the request with the session credentials and send it to the central Lakegate, body streaming both ways.
//!
//! The client's signature is not checked: it was made with whatever static credentials the client was given
//! and carries no authority. What authorises the request is the session the sidecar holds, and the central
//! Lakegate decides and audits it like any other.

use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};

use super::Sidecar;
use super::session::SessionError;
use super::upstream::UpstreamError;
use lakegate_net::http::{new_request_id, read_limited, remove_hop_by_hop};
use lakegate_s3_protocol::BoxBody;
use lakegate_s3_protocol::sigv4::PRESIGN_PARAMS;
use lakegate_s3_protocol::sigv4::{AwsChunkedBody, AwsChunkedDecoder, ChunkedMode, UNSIGNED_PAYLOAD, sign_request};
use lakegate_s3_protocol::sts;
use lakegate_s3_protocol::xml::s3_error;

/// Largest STS request body the sidecar passes on (STS bodies are forms of a few KiB).
const MAX_STS_BODY: usize = 64 * 1024;

/// The client's own authentication, replaced by the sidecar's.
const CLIENT_AUTH: &[&str] =
    &["authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256", "host", "expect"];

/// A refusal by the sidecar itself, answered as an S3 error.
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, code: "InvalidRequest", message: message.into() }
    }
}

impl From<SessionError> for Refusal {
    fn from(e: SessionError) -> Self {
        let (status, code) = match e {
            SessionError::Refused(_) => (StatusCode::FORBIDDEN, "AccessDenied"),
            SessionError::TokenFile(_) => (StatusCode::FORBIDDEN, "InvalidToken"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable"),
        };
        Self { status, code, message: format!("lakegate sidecar: {e}") }
    }
}

impl From<UpstreamError> for Refusal {
    fn from(e: UpstreamError) -> Self {
        if let UpstreamError::BodyRejected(refusal) = &e {
            let status = StatusCode::from_u16(refusal.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
            return Self { status, code: refusal.s3_code(), message: format!("lakegate sidecar: {e}") };
        }
        let status = match e {
            UpstreamError::Request(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        let code = if status == StatusCode::BAD_REQUEST { "InvalidRequest" } else { "ServiceUnavailable" };
        Self { status, code, message: format!("lakegate sidecar: {e}") }
    }
}

/// Serves one client request.
pub async fn handle(sidecar: &Sidecar, request: Request<Incoming>) -> Response<BoxBody> {
    let path = request.uri().path().to_owned();
    match forward(sidecar, request).await {
        Ok(response) => response,
        Err(refusal) => {
            let rid = new_request_id();
            tracing::debug!(status = %refusal.status, code = refusal.code, message = %refusal.message, "refused");
            let body = s3_error(refusal.code, &refusal.message, &path, &rid);
            let mut response = Response::new(lakegate_s3_protocol::body::full(body));
            *response.status_mut() = refusal.status;
            response.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/xml"));
            lakegate_s3_protocol::body::stamp(response, &rid)
        }
    }
}

async fn forward(sidecar: &Sidecar, request: Request<Incoming>) -> Result<Response<BoxBody>, Refusal> {
    let credentials = sidecar.session.credentials().await?;
    let (parts, body) = request.into_parts();
    let path = path_style(&parts)?;
    let query = without_presign_params(parts.uri.query());
    let mut headers = forwarded_headers(&parts.headers);

    let (service, payload_hash, body) = if sts::is_sts(&parts) {
        // STS signs the hash of the form body, which it does not send in a header: read the small body whole.
        let bytes = read_limited(body, MAX_STS_BODY).await.map_err(|e| Refusal::bad_request(e.to_string()))?;
        let hash = hex::encode(Sha256::digest(&bytes));
        ("sts", hash, lakegate_s3_protocol::body::full_bytes(bytes))
    } else {
        let (hash, body) = payload(&parts.headers, &mut headers, body)?;
        ("s3", hash, body)
    };

    sign_request(
        parts.method.as_str(),
        &path,
        query.as_deref(),
        sidecar.upstream.authority(),
        &mut headers,
        &credentials.store,
        &sidecar.region,
        service,
        &payload_hash,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| Refusal::bad_request(e.to_string()))?;

    // Origin form: the connection is already the central Lakegate's.
    let target = match &query {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut outgoing = Request::builder().method(parts.method).uri(target);
    if let Some(h) = outgoing.headers_mut() {
        *h = headers;
    }
    let outgoing = outgoing.body(body).map_err(|e| Refusal::bad_request(e.to_string()))?;
    let response = sidecar.upstream.send(outgoing).await?;
    let (mut parts, body) = response.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    Ok(Response::from_parts(parts, body.map_err(Into::into).boxed_unsync()))
}

/// The request path in path style (`/bucket/key`). A virtual-hosted request to `bucket.localhost` is turned into
/// one; any other host name is refused, since the sidecar cannot know which part of it would be a bucket.
fn path_style(parts: &http::request::Parts) -> Result<String, Refusal> {
    let path = parts.uri.path();
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.host())
        .unwrap_or("127.0.0.1");
    let authority: http::uri::Authority =
        host.parse().map_err(|_| Refusal::bad_request(format!("lakegate sidecar: invalid Host {host:?}")))?;
    let name = authority.host().trim_start_matches('[').trim_end_matches(']');
    if name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(path.to_owned());
    }
    match name.to_ascii_lowercase().strip_suffix(".localhost") {
        Some(bucket)
            if !bucket.is_empty() && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)) =>
        {
            Ok(format!("/{bucket}{path}"))
        }
        _ => Err(Refusal::bad_request(format!(
            "lakegate sidecar: address it by IP or localhost with path-style requests (Host {host:?})"
        ))),
    }
}

/// The client's headers minus hop-by-hop headers and its own authentication.
fn forwarded_headers(client: &HeaderMap) -> HeaderMap {
    let mut headers = client.clone();
    remove_hop_by_hop(&mut headers);
    for name in CLIENT_AUTH {
        headers.remove(*name);
    }
    headers
}

/// The query without a presigned URL's authentication parameters, replaced by a header signature (raw segments kept as the client encoded
/// them, so the signature covers exactly what is sent).
fn without_presign_params(query: Option<&str>) -> Option<String> {
    let kept: Vec<&str> = query?
        .split('&')
        .filter(|segment| {
            let name = segment.split_once('=').map_or(*segment, |(n, _)| n);
            !segment.is_empty() && !PRESIGN_PARAMS.contains(&name)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// The payload hash to sign and the body to send, from what the client announced in `x-amz-content-sha256`:
/// a literal hash is passed on (the central Lakegate checks the body against it), aws-chunked is decoded here
/// (framing, lengths and trailing checksum checked) and sent unsigned with its decoded length.
fn payload(client: &HeaderMap, headers: &mut HeaderMap, body: Incoming) -> Result<(String, BoxBody), Refusal> {
    let announced = client.get("x-amz-content-sha256").map(|v| v.to_str().unwrap_or("")).unwrap_or(UNSIGNED_PAYLOAD);
    let streaming = |body: Incoming| body.map_err(Into::into).boxed_unsync();
    let mode = match announced {
        UNSIGNED_PAYLOAD => return Ok((UNSIGNED_PAYLOAD.to_owned(), streaming(body))),
        hash if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            return Ok((hash.to_ascii_lowercase(), streaming(body)));
        }
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" => ChunkedMode::Signed,
        "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" => ChunkedMode::SignedWithTrailer,
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER" => ChunkedMode::UnsignedWithTrailer,
        other => {
            return Err(Refusal {
                status: StatusCode::NOT_IMPLEMENTED,
                code: "NotImplemented",
                message: format!("lakegate sidecar: x-amz-content-sha256 {other:?} is not supported"),
            });
        }
    };
    let decoded_length = client
        .get("x-amz-decoded-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| Refusal::bad_request("aws-chunked upload without a valid x-amz-decoded-content-length"))?;
    let trailers: Vec<String> = client
        .get("x-amz-trailer")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect())
        .unwrap_or_default();
    for name in ["x-amz-decoded-content-length", "x-amz-trailer"] {
        headers.remove(name);
    }
    if !trailers.is_empty() {
        // The trailing checksum is verified here while decoding; the algorithm header alone would make the
        // store expect a checksum it no longer receives.
        headers.remove("x-amz-sdk-checksum-algorithm");
    }
    remove_aws_chunked_encoding(headers);
    headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(decoded_length));
    let decoder = AwsChunkedDecoder::framing_only(mode, decoded_length, trailers);
    let body = AwsChunkedBody::new(body, decoder).map_err(Into::into).boxed_unsync();
    Ok((UNSIGNED_PAYLOAD.to_owned(), body))
}

/// Removes `aws-chunked` from `content-encoding`, keeping any other coding the client declared.
fn remove_aws_chunked_encoding(headers: &mut HeaderMap) {
    let Some(value) = headers.remove(http::header::CONTENT_ENCODING) else { return };
    let rest: Vec<&str> = value
        .to_str()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.eq_ignore_ascii_case("aws-chunked"))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&rest.join(", "))
        && !rest.is_empty()
    {
        headers.insert(http::header::CONTENT_ENCODING, v);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn presign_parameters_are_dropped_and_the_rest_kept_as_encoded() {
        let q =
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=x%2F2026&prefix=a%2Fb&X-Amz-Signature=ab&list-type=2";
        assert_eq!(without_presign_params(Some(q)).as_deref(), Some("prefix=a%2Fb&list-type=2"));
        assert_eq!(without_presign_params(Some("X-Amz-Signature=ab")), None);
        assert_eq!(without_presign_params(Some("uploads")).as_deref(), Some("uploads"));
        assert_eq!(without_presign_params(None), None);
    }

    #[test]
    fn the_clients_authentication_and_hop_by_hop_headers_do_not_travel() {
        let mut client = HeaderMap::new();
        for (k, v) in [
            ("authorization", "AWS4-HMAC-SHA256 Credential=x/..."),
            ("x-amz-date", "20261124T000000Z"),
            ("x-amz-security-token", "dummy"),
            ("x-amz-content-sha256", "UNSIGNED-PAYLOAD"),
            ("host", "127.0.0.1:9100"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("x-amz-meta-owner", "alice"),
            ("content-type", "text/csv"),
            ("range", "bytes=0-9"),
        ] {
            client.insert(http::HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = forwarded_headers(&client);
        let mut names: Vec<&str> = out.keys().map(http::HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "range", "x-amz-meta-owner"]);
    }

    #[test]
    fn requests_are_path_style_and_a_bucket_dot_localhost_host_becomes_one() {
        let path = |host: &str, uri: &str| {
            let req = http::Request::builder().uri(uri).header("host", host).body(()).unwrap();
            path_style(&req.into_parts().0).map_err(|r| r.code)
        };
        assert_eq!(path("127.0.0.1:9100", "/lake/sales/a.csv").unwrap(), "/lake/sales/a.csv");
        assert_eq!(path("localhost:9100", "/lake/sales/").unwrap(), "/lake/sales/");
        assert_eq!(path("[::1]:9100", "/lake").unwrap(), "/lake");
        assert_eq!(path("lake.localhost:9100", "/sales/a.csv").unwrap(), "/lake/sales/a.csv");
        assert_eq!(path("lake.s3.example.com", "/sales/a.csv"), Err("InvalidRequest"));
    }

    #[test]
    fn only_the_aws_chunked_coding_is_removed() {
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("aws-chunked, gzip"));
        remove_aws_chunked_encoding(&mut h);
        assert_eq!(h.get(http::header::CONTENT_ENCODING).unwrap(), "gzip");
        h.insert(http::header::CONTENT_ENCODING, HeaderValue::from_static("aws-chunked"));
        remove_aws_chunked_encoding(&mut h);
        assert!(h.get(http::header::CONTENT_ENCODING).is_none());
    }
}

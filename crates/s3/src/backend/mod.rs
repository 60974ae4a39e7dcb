//! Where allowed requests go: one trait, two stores behind the same checks.
//!
//! The front hands a backend a [`ForwardRequest`] built from what it decided (bucket, key, query, an allowlist
//! of headers, a body that is already decoded and verifying); the backend turns it into a request for its store
//! and returns the store's response with the body still streaming. Backends never see client credentials.

mod conditions;
mod embedded;
mod fs;
mod kept_json;
mod key_index;
mod object_file;
mod object_write;
mod remote;
mod store_dir;
mod store_keys;
mod uploads;

use futures::future::BoxFuture;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

pub use embedded::{Embedded, SEED_BUCKET, SEED_PARQUET};
pub use remote::{Remote, RemoteConfig};

pub use lakegate_s3_protocol::BoxBody;

/// A request the front decided to forward.
#[derive(Debug)]
pub struct ForwardRequest {
    pub method: http::Method,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// Decoded query pairs; the backend encodes them.
    pub query: Vec<(String, String)>,
    /// Only the headers the front chose to pass on; no authentication headers.
    pub headers: http::HeaderMap,
    pub body: BoxBody,
}

/// Why a store could not be reached or did not answer. The store's own S3 errors are responses, not these.
///
/// The texts carry the transport's details for the log and the audit record; clients get
/// [`BackendError::client_message`], which names what happened and nothing of Lakegate's insides.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store did not answer in time")]
    Timeout,
    #[error("the forwarded request could not be built: {0}")]
    Request(String),
    /// The connection to the store broke after the request was sent, with no answer to read.
    #[error("the store closed the connection without answering: {0}")]
    Aborted(String),
    /// The client's request body failed while it was forwarded (it ended early, or the client went away).
    #[error("the request body could not be read to its end: {0}")]
    ClientBody(String),
    /// No credentials for the store (the AWS chain failed to give any).
    #[error("{0}")]
    Credentials(String),
}

impl BackendError {
    /// What the client is told.
    pub fn client_message(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "The store is unavailable; retry the request later.",
            Self::Timeout => "The store did not answer in time; retry the request later.",
            Self::Request(_) => "The request for the store could not be built.",
            Self::Aborted(_) => "The store closed the connection without answering; retry the request.",
            Self::ClientBody(_) => "The request body ended before it was complete.",
            Self::Credentials(_) => "Lakegate has no credentials for the store at the moment; retry the request later.",
        }
    }
}

/// A store behind the S3 front.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Sends `request` to the store and returns its response, body streaming.
    fn forward(&self, request: ForwardRequest) -> BoxFuture<'_, Result<http::Response<BoxBody>, BackendError>>;

    /// A short name for logs and the start-up banner.
    fn describe(&self) -> String;
}

/// S3's `UriEncode` for path segments: everything but unreserved characters, `/` kept.
const PATH_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');
/// For query keys and values: `/` encoded too.
const QUERY_ENCODE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// `/bucket/key` (path style) or `/key` (`bucket` = None, for virtual-hosted stores), encoded.
pub(crate) fn encode_path(bucket: Option<&str>, key: Option<&str>) -> String {
    let mut out = String::from("/");
    if let Some(b) = bucket {
        out.push_str(&utf8_percent_encode(b, PATH_ENCODE).to_string());
        if key.is_some() {
            out.push('/');
        }
    }
    if let Some(k) = key {
        out.push_str(&utf8_percent_encode(k, PATH_ENCODE).to_string());
    }
    out
}

/// A key, prefix or delimiter in a listing answered with `encoding-type=url`, encoded as S3 does (`/` kept).
pub(crate) fn encode_key(key: &str) -> String {
    utf8_percent_encode(key, PATH_ENCODE).to_string()
}

/// The query string for decoded pairs; `None` when there are none.
pub(crate) fn encode_query(pairs: &[(String, String)]) -> Option<String> {
    if pairs.is_empty() {
        return None;
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| {
            let k = utf8_percent_encode(k, QUERY_ENCODE);
            if v.is_empty() { k.to_string() } else { format!("{k}={}", utf8_percent_encode(v, QUERY_ENCODE)) }
        })
        .collect();
    Some(parts.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_encoded_once_and_slashes_kept() {
        assert_eq!(encode_path(Some("lake"), Some("sales/a b+c%.csv")), "/lake/sales/a%20b%2Bc%25.csv");
        assert_eq!(encode_path(Some("lake"), None), "/lake");
        assert_eq!(
            encode_query(&[("prefix".into(), "a/b c".into()), ("list-type".into(), "2".into())]).as_deref(),
            Some("prefix=a%2Fb%20c&list-type=2")
        );
    }
}

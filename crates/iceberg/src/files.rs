//! Metadata files in the lake store, read and written through the backend the S3 front forwards to: the
//! catalog acts as Lakegate itself here, after the gate decided the call, so no client credential is involved.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;
use serde_json::Value;

use lakegate_s3::backend::{Backend, ForwardRequest};
use lakegate_s3_protocol::body::{empty, full_bytes};

/// Largest metadata file read (tables with long histories reach megabytes; this is far beyond).
const MAX_METADATA: usize = 64 * 1024 * 1024;

/// Why a metadata file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("no file at {0}")]
    NotFound(String),
    #[error("{0} is not an s3:// location")]
    BadLocation(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(String),
}

/// The lake store, for metadata files.
#[derive(Debug, Clone)]
pub struct Files {
    backend: Arc<dyn Backend>,
}

/// `s3://bucket/key` -> `(bucket, key)`.
fn split(location: &str) -> Result<(String, String), FileError> {
    let rest = location.strip_prefix("s3://").ok_or_else(|| FileError::BadLocation(location.to_owned()))?;
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_owned(), k.to_owned())),
        _ => Err(FileError::BadLocation(location.to_owned())),
    }
}

impl Files {
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        Files { backend }
    }

    async fn send(
        &self,
        method: Method,
        location: &str,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), FileError> {
        let (bucket, key) = split(location)?;
        let body = if body.is_empty() { empty() } else { full_bytes(body) };
        let request = ForwardRequest { method, bucket: Some(bucket), key: Some(key), query: Vec::new(), headers, body };
        let response = self.backend.forward(request).await.map_err(|e| FileError::Store(e.to_string()))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FileError::Store(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_METADATA {
                    return Err(FileError::Invalid(format!("{location} is larger than {MAX_METADATA} bytes")));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok((status, Bytes::from(bytes)))
    }

    /// Reads and parses a metadata file.
    pub async fn read_metadata(&self, location: &str) -> Result<Value, FileError> {
        let (status, bytes) = self.send(Method::GET, location, HeaderMap::new(), Bytes::new()).await?;
        match status {
            StatusCode::OK => serde_json::from_slice(&bytes)
                .map_err(|e| FileError::Invalid(format!("metadata file {location} is not valid JSON: {e}"))),
            StatusCode::NOT_FOUND => Err(FileError::NotFound(location.to_owned())),
            s => Err(FileError::Store(format!("reading {location}: the store answered {s}"))),
        }
    }

    /// Writes version `version` of a table's metadata under `<table location>/metadata/` and returns its
    /// location. The name carries a fresh id, so two writers never overwrite each other's file.
    pub async fn write_metadata(
        &self,
        table_location: &str,
        version: u64,
        metadata: &Value,
    ) -> Result<String, FileError> {
        let file = format!(
            "{}/metadata/{version:05}-{}.metadata.json",
            table_location.trim_end_matches('/'),
            uuid::Uuid::new_v4()
        );
        let body = Bytes::from(serde_json::to_vec(metadata).map_err(|e| FileError::Invalid(e.to_string()))?);
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let (status, _) = self.send(Method::PUT, &file, headers, body).await?;
        if status.is_success() {
            Ok(file)
        } else {
            Err(FileError::Store(format!("writing {file}: the store answered {status}")))
        }
    }

    /// Deletes a file nobody will point at (a commit that lost its race); a failure only leaves an orphan.
    pub async fn delete(&self, location: &str) {
        if let Err(e) = self.send(Method::DELETE, location, HeaderMap::new(), Bytes::new()).await {
            tracing::warn!(location, error = %e, "could not delete an unused metadata file");
        }
    }
}

//! Metadata files in the lake store. The catalog acts as Lakegate itself here, after the gate decided the call,
//! so no client credential is involved. The store is whatever the binary plugs in ([`LakeFiles`]): the same
//! backend the S3 front forwards to, so a front never depends on another front.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use serde_json::Value;

/// Largest metadata file read (tables with long histories reach megabytes; this is far beyond).
pub const MAX_METADATA: usize = 64 * 1024 * 1024;

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

/// Objects of the lake store, by `(bucket, key)`.
pub trait LakeFiles: Send + Sync + std::fmt::Debug {
    /// The object's bytes (at most [`MAX_METADATA`]), `None` when it does not exist.
    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, FileError>>;
    fn put<'a>(&'a self, bucket: &'a str, key: &'a str, body: Bytes) -> BoxFuture<'a, Result<(), FileError>>;
    fn delete<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), FileError>>;
}

/// Table metadata files in the lake store.
#[derive(Debug, Clone)]
pub struct Files {
    store: Arc<dyn LakeFiles>,
}

/// `s3://bucket/key` -> `(bucket, key)`.
fn split(location: &str) -> Result<(&str, &str), FileError> {
    let rest = location.strip_prefix("s3://").ok_or_else(|| FileError::BadLocation(location.to_owned()))?;
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b, k)),
        _ => Err(FileError::BadLocation(location.to_owned())),
    }
}

impl Files {
    pub fn new(store: Arc<dyn LakeFiles>) -> Self {
        Files { store }
    }

    /// Reads a whole file (a metadata file, a manifest list, a manifest).
    pub async fn read_bytes(&self, location: &str) -> Result<Bytes, FileError> {
        let (bucket, key) = split(location)?;
        self.store.get(bucket, key).await?.ok_or_else(|| FileError::NotFound(location.to_owned()))
    }

    /// Reads and parses a metadata file.
    pub async fn read_metadata(&self, location: &str) -> Result<Value, FileError> {
        let bytes = self.read_bytes(location).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| FileError::Invalid(format!("metadata file {location} is not valid JSON: {e}")))
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
        let (bucket, key) = split(&file)?;
        self.store.put(bucket, key, body).await?;
        Ok(file)
    }

    /// Writes a whole file.
    pub async fn write_bytes(&self, location: &str, body: Bytes) -> Result<(), FileError> {
        let (bucket, key) = split(location)?;
        self.store.put(bucket, key, body).await
    }

    /// Deletes a file nobody will point at (a commit that lost its race); a failure only leaves an orphan.
    pub async fn delete(&self, location: &str) {
        let result = match split(location) {
            Ok((bucket, key)) => self.store.delete(bucket, key).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(location, error = %e, "could not delete an unused metadata file");
        }
    }
}

//! The lake store as the Iceberg catalog sees it (metadata files), over the backend the S3 front forwards to.
//! It lives here, where the fronts are assembled, so that neither front depends on the other.

use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use http_body_util::BodyExt;

use lakegate_iceberg::{FileError, LakeFiles, MAX_METADATA};
use lakegate_s3::backend::{Backend, ForwardRequest};
use lakegate_s3_protocol::body::{empty, full_bytes};

/// The S3 front's backend, for the catalog's metadata files.
#[derive(Debug, Clone)]
pub struct BackendFiles(pub Arc<dyn Backend>);

impl BackendFiles {
    async fn send(
        &self,
        method: Method,
        bucket: &str,
        key: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), FileError> {
        let mut headers = HeaderMap::new();
        if method == Method::PUT {
            headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            headers.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let body = if body.is_empty() { empty() } else { full_bytes(body) };
        let request = ForwardRequest {
            method,
            bucket: Some(bucket.to_owned()),
            key: Some(key.to_owned()),
            query: Vec::new(),
            headers,
            body,
        };
        let response = self.0.forward(request).await.map_err(|e| FileError::Store(e.to_string()))?;
        let status = response.status();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| FileError::Store(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > MAX_METADATA {
                    return Err(FileError::Invalid(format!("s3://{bucket}/{key} is larger than {MAX_METADATA} bytes")));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok((status, Bytes::from(bytes)))
    }
}

impl LakeFiles for BackendFiles {
    fn get<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, FileError>> {
        Box::pin(async move {
            match self.send(Method::GET, bucket, key, Bytes::new()).await? {
                (StatusCode::OK, bytes) => Ok(Some(bytes)),
                (StatusCode::NOT_FOUND, _) => Ok(None),
                (status, _) => {
                    Err(FileError::Store(format!("reading s3://{bucket}/{key}: the store answered {status}")))
                }
            }
        })
    }

    fn put<'a>(&'a self, bucket: &'a str, key: &'a str, body: Bytes) -> BoxFuture<'a, Result<(), FileError>> {
        Box::pin(async move {
            match self.send(Method::PUT, bucket, key, body).await? {
                (status, _) if status.is_success() => Ok(()),
                (status, _) => {
                    Err(FileError::Store(format!("writing s3://{bucket}/{key}: the store answered {status}")))
                }
            }
        })
    }

    fn delete<'a>(&'a self, bucket: &'a str, key: &'a str) -> BoxFuture<'a, Result<(), FileError>> {
        Box::pin(async move {
            match self.send(Method::DELETE, bucket, key, Bytes::new()).await? {
                (status, _) if status.is_success() || status == StatusCode::NOT_FOUND => Ok(()),
                (status, _) => {
                    Err(FileError::Store(format!("deleting s3://{bucket}/{key}: the store answered {status}")))
                }
            }
        })
    }
}

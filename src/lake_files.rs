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

/// The Iceberg catalog's tables as local files of the embedded store, for the embedded SQL engine.
#[derive(Debug, Clone)]
pub struct CatalogFiles {
    pub catalog: lakegate_iceberg::Catalog,
    /// The embedded store's directory; `None` when the store is remote.
    pub store_dir: Option<std::path::PathBuf>,
}

impl lakegate_sql::backend::iceberg::IcebergFiles for CatalogFiles {
    fn data_files<'a>(
        &'a self,
        database: &'a str,
        table: &'a str,
    ) -> BoxFuture<'a, Result<Vec<std::path::PathBuf>, String>> {
        Box::pin(async move {
            let Some(root) = &self.store_dir else {
                return Err("the embedded engine reads Iceberg tables from the embedded store only".to_owned());
            };
            let files = self.catalog.data_files(database, table).await.map_err(|e| e.to_string())?;
            files
                .into_iter()
                .map(|f| {
                    let (bucket, key) = f
                        .path
                        .strip_prefix("s3://")
                        .and_then(|rest| rest.split_once('/'))
                        .ok_or_else(|| format!("{} is not an s3:// location", f.path))?;
                    lakegate_s3::backend::Embedded::object_file(root, bucket, key)
                        .ok_or_else(|| format!("{} does not name an object of the store", f.path))
                })
                .collect()
        })
    }
}

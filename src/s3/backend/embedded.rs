//! The embedded local store: `s3s-fs` under `<data_dir>/store`, served in-process by `s3s` with no
//! authentication of its own (Lakegate is its only client, and has already decided every request).

use std::path::Path;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use s3s::service::{S3Service, S3ServiceBuilder};

use super::{Backend, BackendError, BoxBody, ForwardRequest, encode_path, encode_query};

/// The bucket created on first start, with sample objects.
pub const SEED_BUCKET: &str = "lake";

/// Sample objects of the seed bucket: readable by anyone signed in (`public/`), by analysts (`sales/`), by HR
/// (`hr/`) under the demo policies.
const SEED_OBJECTS: &[(&str, &str, &str)] = &[
    ("public/README.txt", "text/plain", "Lakegate demo lake. Everyone signed in may read public/.\n"),
    (
        "public/cities.csv",
        "text/csv",
        "city,country,population\nLisbon,PT,545923\nOslo,NO,709037\nKyoto,JP,1463723\nQuito,EC,2011388\n",
    ),
    ("sales/2024/q1.csv", "text/csv", "region,amount\nEU,1200\nUS,3400\n"),
    ("hr/salaries.csv", "text/csv", "name,salary\nbob,1\n"),
];

/// The embedded store.
#[derive(Clone)]
pub struct Embedded {
    service: S3Service,
    root: std::path::PathBuf,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").field("root", &self.root).finish()
    }
}

impl Embedded {
    /// Opens (creating) the store under `root`.
    pub fn open(root: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(root).map_err(|e| BackendError::Unavailable(format!("{}: {e}", root.display())))?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| BackendError::Unavailable(format!("{}: {e:?}", root.display())))?;
        let service = S3ServiceBuilder::new(fs).build();
        Ok(Self { service, root: root.to_owned() })
    }

    /// Creates the seed bucket and its sample objects when the bucket does not exist yet (never overwrites).
    pub async fn seed(&self) -> Result<(), BackendError> {
        if self.root.join(SEED_BUCKET).exists() {
            return Ok(());
        }
        self.put(http::Method::PUT, Some(SEED_BUCKET), None, "", "").await?;
        for (key, content_type, body) in SEED_OBJECTS {
            self.put(http::Method::PUT, Some(SEED_BUCKET), Some(key), content_type, body).await?;
        }
        Ok(())
    }

    async fn put(
        &self,
        method: http::Method,
        bucket: Option<&str>,
        key: Option<&str>,
        content_type: &str,
        body: &'static str,
    ) -> Result<(), BackendError> {
        let mut headers = http::HeaderMap::new();
        if !content_type.is_empty() {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_str(content_type).map_err(|e| BackendError::Request(e.to_string()))?,
            );
        }
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        let request = ForwardRequest {
            method,
            bucket: bucket.map(str::to_owned),
            key: key.map(str::to_owned),
            query: Vec::new(),
            headers,
            body: Full::new(Bytes::from_static(body.as_bytes())).map_err(|never| match never {}).boxed_unsync(),
        };
        let response = self.forward(request).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(BackendError::Unavailable(format!("seeding the store failed with {}", response.status())))
        }
    }
}

impl Backend for Embedded {
    fn forward(&self, request: ForwardRequest) -> BoxFuture<'_, Result<http::Response<BoxBody>, BackendError>> {
        Box::pin(async move {
            let path = encode_path(request.bucket.as_deref(), request.key.as_deref());
            let uri = match encode_query(&request.query) {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut builder = http::Request::builder().method(request.method).uri(uri);
            if let Some(h) = builder.headers_mut() {
                *h = request.headers;
                h.insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
            }
            let body = s3s::Body::http_body_unsync(request.body);
            let req = builder.body(body).map_err(|e| BackendError::Request(e.to_string()))?;
            let response = self.service.call(req).await.map_err(|e| BackendError::Unavailable(format!("{e:?}")))?;
            Ok(response.map(|b| b.boxed_unsync()))
        })
    }

    fn describe(&self) -> String {
        format!("embedded store in {}", self.root.display())
    }
}

//! The embedded local store: `s3s-fs` under `<data_dir>/store`, served in-process by `s3s` with no
//! authentication of its own (Lakegate is its only client, and has already decided every request).

use std::path::Path;

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use s3s::service::{S3Service, S3ServiceBuilder};

use super::fs::FsStore;
use super::key_index::KeyIndex;
use super::object_file;
use super::{Backend, BackendError, BoxBody, ForwardRequest, encode_path, encode_query, uploads};
use lakegate_s3_protocol::xml::s3_error;

/// The bucket created on first start, with sample objects.
pub const SEED_BUCKET: &str = "lake";

/// Sample objects of the seed bucket: readable by anyone signed in (`public/`), by analysts (`sales/`), by HR
/// (`hr/`) under the demo policies. [`SEED_PARQUET`] is written beside them.
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

/// A sample Parquet object of the seed bucket (the cities of `public/cities.csv`, with typed columns), written
/// at seed time so that it always matches the Arrow and Parquet versions of this build.
pub const SEED_PARQUET: &str = "public/cities.parquet";

/// `(city, country, population, area in km², capital)` of [`SEED_PARQUET`].
const SEED_CITIES: &[(&str, &str, i64, f64, bool)] = &[
    ("Lisbon", "PT", 545_923, 100.05, true),
    ("Oslo", "NO", 709_037, 454.0, true),
    ("Kyoto", "JP", 1_463_723, 827.83, false),
    ("Quito", "EC", 2_011_388, 372.39, true),
];

/// The bytes of [`SEED_PARQUET`].
fn sample_parquet() -> Result<Vec<u8>, BackendError> {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::parquet::arrow::ArrowWriter;

    let failed = |e: &dyn std::fmt::Display| BackendError::Unavailable(format!("writing the sample Parquet file: {e}"));
    let schema = Arc::new(Schema::new(vec![
        Field::new("city", DataType::Utf8, false),
        Field::new("country", DataType::Utf8, false),
        Field::new("population", DataType::Int64, false),
        Field::new("area_km2", DataType::Float64, false),
        Field::new("capital", DataType::Boolean, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(SEED_CITIES.iter().map(|c| c.0))),
        Arc::new(StringArray::from_iter_values(SEED_CITIES.iter().map(|c| c.1))),
        Arc::new(Int64Array::from_iter_values(SEED_CITIES.iter().map(|c| c.2))),
        Arc::new(Float64Array::from_iter_values(SEED_CITIES.iter().map(|c| c.3))),
        Arc::new(BooleanArray::from(SEED_CITIES.iter().map(|c| c.4).collect::<Vec<_>>())),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(|e| failed(&e))?;
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, schema, None).map_err(|e| failed(&e))?;
    writer.write(&batch).map_err(|e| failed(&e))?;
    writer.close().map_err(|e| failed(&e))?;
    Ok(out)
}

/// The embedded store.
#[derive(Clone)]
pub struct Embedded {
    service: S3Service,
    root: std::path::PathBuf,
    index: std::sync::Arc<KeyIndex>,
    files: std::sync::Arc<object_file::AttributeFiles>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").field("root", &self.root).finish()
    }
}

impl Embedded {
    /// Opens (creating) the store under `root`, and opens the key index of every bucket (moving a bucket that
    /// an older Lakegate kept in s3s-fs's own layout to stored names first).
    pub fn open(root: &Path) -> Result<Self, BackendError> {
        std::fs::create_dir_all(root).map_err(|e| BackendError::Unavailable(format!("{}: {e}", root.display())))?;
        let fs = s3s_fs::FileSystem::new(root)
            .map_err(|e| BackendError::Unavailable(format!("{}: {e:?}", root.display())))?;
        let index = std::sync::Arc::new(KeyIndex::new(root));
        index.open_all().map_err(|e| BackendError::Unavailable(format!("{}: {e}", root.display())))?;
        let files = std::sync::Arc::new(
            object_file::AttributeFiles::at(root)
                .map_err(|e| BackendError::Unavailable(format!("{}: {e}", root.display())))?,
        );
        let service = S3ServiceBuilder::new(FsStore::new(fs, root.to_owned(), index.clone(), files.clone())).build();
        Ok(Self { service, root: root.to_owned(), index, files })
    }

    /// The file that holds the bytes of `bucket/key` in a store under `root` (whether or not there is one), for
    /// readers of the store's files beside the S3 front (the embedded SQL engine's Iceberg tables).
    pub fn object_file(root: &Path, bucket: &str, key: &str) -> Option<std::path::PathBuf> {
        super::object_file::object_path(root, bucket, key).ok()
    }

    /// Creates the seed bucket and its sample objects when the bucket does not exist yet (never overwrites).
    pub async fn seed(&self) -> Result<(), BackendError> {
        if self.root.join(SEED_BUCKET).exists() {
            return Ok(());
        }
        self.put(http::Method::PUT, Some(SEED_BUCKET), None, "", Bytes::new()).await?;
        for (key, content_type, body) in SEED_OBJECTS {
            let body = Bytes::from_static(body.as_bytes());
            self.put(http::Method::PUT, Some(SEED_BUCKET), Some(key), content_type, body).await?;
        }
        let parquet = Bytes::from(sample_parquet()?);
        self.put(http::Method::PUT, Some(SEED_BUCKET), Some(SEED_PARQUET), "application/vnd.apache.parquet", parquet)
            .await?;
        Ok(())
    }

    async fn put(
        &self,
        method: http::Method,
        bucket: Option<&str>,
        key: Option<&str>,
        content_type: &str,
        body: Bytes,
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
            body: Full::new(body).map_err(|never| match never {}).boxed_unsync(),
        };
        let response = self.forward(request).await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(BackendError::Unavailable(format!("seeding the store failed with {}", response.status())))
        }
    }
}

impl Embedded {
    /// ListMultipartUploads, answered from the store's files (`s3s-fs` answers NotImplemented).
    async fn list_multipart_uploads(
        &self,
        bucket: &str,
        query: &[(String, String)],
    ) -> Result<http::Response<BoxBody>, BackendError> {
        let resource = format!("/{bucket}");
        let params = match uploads::ListParams::from_query(query) {
            Ok(p) => p,
            Err(e) => return xml_response(400, s3_error("InvalidArgument", &e.to_string(), &resource, "")),
        };
        // Bucket names were checked by the front; this only tells a missing bucket from an empty one.
        if !self.root.join(bucket).is_dir() {
            let message = "The specified bucket does not exist";
            return xml_response(404, s3_error("NoSuchBucket", message, &resource, ""));
        }
        let (index, root, name) = (self.index.clone(), self.root.clone(), bucket.to_owned());
        let found = tokio::task::spawn_blocking(move || {
            index.uploads(&name).map(|mut found| {
                // s3s-fs removes `.upload-<id>.json` first on completion and abort: without it, an upload is over.
                found.retain(|u| root.join(format!(".upload-{}.json", u.upload_id)).exists());
                found
            })
        })
        .await
        .map_err(|e| BackendError::Unavailable(e.to_string()))?
        .map_err(|e| BackendError::Unavailable(format!("listing uploads: {e:?}")))?;
        xml_response(200, uploads::render(bucket, &params, &found))
    }
}

/// Removes a `Range` header that is not one satisfiable-or-not byte range (several ranges, another unit, a
/// last byte before the first, bad syntax): S3 ignores such a header and answers the whole object, as HTTP
/// allows, where s3s would refuse the request (400).
fn drop_unreadable_range(headers: &mut http::HeaderMap) {
    let mut values = headers.get_all(http::header::RANGE).iter();
    let readable = match (values.next(), values.next()) {
        (Some(value), None) => value.to_str().is_ok_and(|v| s3s::dto::Range::parse(v).is_ok()),
        _ => false,
    };
    if !readable {
        headers.remove(http::header::RANGE);
    }
}

fn xml_response(status: u16, text: String) -> Result<http::Response<BoxBody>, BackendError> {
    http::Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/xml")
        .header(http::header::CONTENT_LENGTH, text.len())
        .body(Full::new(Bytes::from(text)).map_err(|never| match never {}).boxed_unsync())
        .map_err(|e| BackendError::Request(e.to_string()))
}

impl Backend for Embedded {
    fn forward(&self, request: ForwardRequest) -> BoxFuture<'_, Result<http::Response<BoxBody>, BackendError>> {
        Box::pin(async move {
            if request.method == http::Method::GET
                && request.key.is_none()
                && let Some(bucket) = &request.bucket
                && request.query.iter().any(|(k, _)| k == "uploads")
            {
                return self.list_multipart_uploads(bucket, &request.query).await;
            }
            let is_head = request.method == http::Method::HEAD;
            let mut headers = request.headers;
            if request.key.is_some() && (request.method == http::Method::GET || is_head) {
                drop_unreadable_range(&mut headers);
            }
            if request.method == http::Method::GET
                && request.query.is_empty()
                && let (Some(bucket), Some(key)) = (&request.bucket, &request.key)
                && let Some(response) = object_file::plain_get(&self.files, bucket, key, &headers).await
            {
                return Ok(response.map(|b| b.boxed_unsync()));
            }
            let path = encode_path(request.bucket.as_deref(), request.key.as_deref());
            let uri = match encode_query(&request.query) {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut builder = http::Request::builder().method(request.method).uri(uri);
            if let Some(h) = builder.headers_mut() {
                *h = headers;
                h.insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
            }
            let body = s3s::Body::http_body_unsync(request.body);
            let req = builder.body(body).map_err(|e| BackendError::Request(e.to_string()))?;
            let mut response = self.service.call(req).await.map_err(|e| BackendError::Unavailable(format!("{e:?}")))?;
            // A ranged HEAD (answered by `FsStore::head_object`) is partial content, as the GET would be.
            if is_head
                && response.status() == http::StatusCode::OK
                && response.headers().contains_key(http::header::CONTENT_RANGE)
            {
                *response.status_mut() = http::StatusCode::PARTIAL_CONTENT;
            }
            Ok(response.map(|b| b.boxed_unsync()))
        })
    }

    fn describe(&self) -> String {
        format!("embedded store in {}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_sample_parquet_file_reads_back_with_its_typed_columns() {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::Int64Type;
        use datafusion::arrow::record_batch::RecordBatchReader;
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        let bytes = Bytes::from(sample_parquet().unwrap());
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes).unwrap().build().unwrap();
        let names: Vec<String> = reader.schema().fields().iter().map(|f| f.name().clone()).collect();
        assert_eq!(names, ["city", "country", "population", "area_km2", "capital"]);
        let batches: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
        let populations: Vec<i64> =
            batches.iter().flat_map(|b| b.column(2).as_primitive::<Int64Type>().values().to_vec()).collect();
        assert_eq!(populations, [545_923, 709_037, 1_463_723, 2_011_388]);
    }

    /// The store's own GET (read from s3s-fs's files) answers with the same status, headers and bytes as
    /// s3s-fs itself, for a whole object, every kind of range, a small and a large body.
    #[tokio::test]
    async fn a_get_answers_what_s3s_fs_answers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        let plain = S3ServiceBuilder::new(s3s_fs::FileSystem::new(dir.path()).unwrap()).build();
        store.put(http::Method::PUT, Some("bkt"), None, "", Bytes::new()).await.unwrap();
        let small: Bytes = (0..100u8).collect::<Vec<u8>>().into();
        let large: Bytes = (0..3 * 1024 * 1024 + 17).map(|i| (i % 251) as u8).collect::<Vec<u8>>().into();
        for (key, body) in [("dir/small.bin", small), ("large.bin", large)] {
            let mut headers = http::HeaderMap::new();
            for (name, value) in [
                ("content-type", "application/x-test"),
                ("cache-control", "max-age=60"),
                ("content-disposition", "attachment"),
                ("content-language", "pt"),
                ("expires", "Thu, 01 Dec 2094 16:00:00 GMT"),
                ("x-amz-meta-colour", "blue"),
                ("x-amz-checksum-sha256", &sha256_base64(&body)),
            ] {
                headers.insert(http::HeaderName::from_static(name), http::HeaderValue::from_str(value).unwrap());
            }
            headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
            let put = ForwardRequest {
                method: http::Method::PUT,
                bucket: Some("bkt".into()),
                key: Some(key.into()),
                query: Vec::new(),
                headers,
                body: Full::new(body.clone()).map_err(|never| match never {}).boxed_unsync(),
            };
            assert!(store.forward(put).await.unwrap().status().is_success());

            for range in [None, Some("bytes=0-9"), Some("bytes=5-"), Some("bytes=-7"), Some("bytes=1048570-2097160")] {
                let mut headers = http::HeaderMap::new();
                if let Some(r) = range {
                    headers.insert(http::header::RANGE, http::HeaderValue::from_static(r));
                }
                let get = ForwardRequest {
                    method: http::Method::GET,
                    bucket: Some("bkt".into()),
                    key: Some(key.into()),
                    query: Vec::new(),
                    headers: headers.clone(),
                    body: Full::new(Bytes::new()).map_err(|never| match never {}).boxed_unsync(),
                };
                let ours = store.forward(get).await.unwrap();
                // s3s-fs itself, asked for the key's stored name (all it is ever given).
                let stored = super::super::key_index::stored_key(key);
                let mut request = http::Request::builder().method("GET").uri(format!("/bkt/{stored}"));
                if let Some(h) = request.headers_mut() {
                    *h = headers;
                    h.insert(http::header::HOST, http::HeaderValue::from_static("localhost"));
                }
                let theirs = plain.call(request.body(s3s::Body::empty()).unwrap()).await.unwrap();
                let what = format!("{key} {range:?}");
                assert_eq!(ours.status(), theirs.status(), "{what}");
                let shown = |h: &http::HeaderMap| {
                    let mut v: Vec<(String, String)> = h
                        .iter()
                        .filter(|(n, _)| !matches!(n.as_str(), "date" | "x-amz-request-id" | "x-amz-id-2"))
                        .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_owned()))
                        .collect();
                    v.sort();
                    v
                };
                assert_eq!(shown(ours.headers()), shown(theirs.headers()), "{what}");
                let ours = ours.into_body().collect().await.unwrap().to_bytes();
                let theirs = theirs.into_body().collect().await.unwrap().to_bytes();
                assert_eq!(ours, theirs, "{what}");
            }
        }
    }

    /// A whole-object or ranged GET, with conditions that hold, is answered without s3s's routing; anything
    /// else the direct road does not know goes through s3s, which answers it in S3's own form. Both roads give
    /// the same answer (checked against s3s-fs above, and here for what only s3s answers).
    #[tokio::test]
    async fn plain_gets_take_the_direct_road_and_everything_else_goes_through_s3s() {
        let (_dir, store) = store_with_bucket().await;
        let headers = [("x-amz-meta-plain", "blue".to_owned())];
        store.forward(request(http::Method::PUT, "k", &headers, Bytes::from_static(b"hello"))).await.unwrap();
        // "café", RFC 2047-encoded as clients send it.
        let headers = [("x-amz-meta-accent", "=?UTF-8?B?Y2Fmw6k=?=".to_owned())];
        store.forward(request(http::Method::PUT, "accented", &headers, Bytes::from("olá"))).await.unwrap();
        let direct = |key: &str, headers: &[(&'static str, &str)]| {
            let mut map = http::HeaderMap::new();
            for (name, value) in headers {
                map.append(http::HeaderName::from_static(name), http::HeaderValue::from_str(value).unwrap());
            }
            let key = key.to_owned();
            let files = store.files.clone();
            async move { object_file::plain_get(&files, "bkt", &key, &map).await }
        };

        let whole = direct("k", &[]).await.expect("a plain GET is answered directly");
        assert_eq!(whole.status(), 200);
        assert_eq!(whole.headers()["x-amz-meta-plain"], "blue");
        let e_tag = whole.headers()[http::header::ETAG].to_str().unwrap().to_owned();
        let ranged = direct("k", &[("range", "bytes=1-2"), ("if-match", &e_tag)]).await.expect("a range");
        assert_eq!(ranged.status(), 206);
        assert_eq!(ranged.into_body().collect().await.unwrap().to_bytes(), Bytes::from_static(b"el"));

        for (key, headers, why) in [
            ("missing", &[][..], "no such key: s3s renders the error"),
            ("k", &[("if-none-match", e_tag.as_str())][..], "304 Not Modified"),
            ("k", &[("if-match", "\"other\"")][..], "412 Precondition Failed"),
            ("k", &[("range", "bytes=0-1"), ("range", "bytes=2-3")][..], "a header twice"),
            ("k", &[("if-modified-since", "yesterday")][..], "a date s3s cannot read"),
            ("k", &[("x-amz-storage-class", "STANDARD")][..], "a header the direct road does not read"),
            ("accented", &[][..], "metadata s3s sends RFC 2047-encoded"),
        ] {
            assert!(direct(key, headers).await.is_none(), "{why}");
        }

        let (status, body) = send(&store, request(http::Method::GET, "missing", &[], Bytes::new()), &[]).await;
        assert_eq!(status, 404);
        assert!(body.contains("<Code>NoSuchKey</Code>"), "{body}");
        let accented = store.forward(request(http::Method::GET, "accented", &[], Bytes::new())).await.unwrap();
        assert_eq!(accented.headers()["x-amz-meta-accent"], "=?UTF-8?B?Y2Fmw6k=?=");
        assert_eq!(accented.into_body().collect().await.unwrap().to_bytes(), Bytes::from("olá"));
    }

    /// An object an older s3s-fs stored without its ETag is still read whole and by range, with the MD5 of its
    /// bytes as ETag (s3s-fs's own answer for such objects), which conditions compare against.
    #[tokio::test]
    async fn an_object_stored_without_an_etag_gets_the_md5_of_its_bytes() {
        let (dir, store) = store_with_bucket().await;
        store.forward(request(http::Method::PUT, "old", &[], Bytes::from_static(b"hello"))).await.unwrap();
        let internal = super::super::object_file::metadata_path(dir.path(), "bkt", "old", "internal");
        let mut info: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&std::fs::read(&internal).unwrap()).unwrap();
        assert!(info.remove("e_tag").is_some());
        std::fs::write(&internal, serde_json::to_vec(&info).unwrap()).unwrap();

        let md5 = "\"5d41402abc4b2a76b9719d911017c592\"";
        let whole = store.forward(request(http::Method::GET, "old", &[], Bytes::new())).await.unwrap();
        assert_eq!(whole.headers()[http::header::ETAG], md5);
        assert_eq!(whole.into_body().collect().await.unwrap().to_bytes(), Bytes::from_static(b"hello"));
        let ranged = [("range", "bytes=1-3".to_owned()), ("if-match", md5.to_owned())];
        let ranged = store.forward(request(http::Method::GET, "old", &ranged, Bytes::new())).await.unwrap();
        assert_eq!(ranged.status(), 206);
        assert_eq!(ranged.into_body().collect().await.unwrap().to_bytes(), Bytes::from_static(b"ell"));
    }

    fn request(method: http::Method, key: &str, headers: &[(&'static str, String)], body: Bytes) -> ForwardRequest {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(http::HeaderName::from_static(name), http::HeaderValue::from_str(value).unwrap());
        }
        map.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
        ForwardRequest {
            method,
            bucket: Some("bkt".into()),
            key: Some(key.into()),
            query: Vec::new(),
            headers: map,
            body: Full::new(body).map_err(|never| match never {}).boxed_unsync(),
        }
    }

    /// GET and HEAD evaluate `If-Match`, `If-None-Match`, `If-Modified-Since` and `If-Unmodified-Since` (s3s-fs
    /// ignored them and sent the object): 304 and 412 come without the object's bytes.
    #[tokio::test]
    async fn conditional_gets_and_heads_answer_304_or_412() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        store.put(http::Method::PUT, Some("bkt"), None, "", Bytes::new()).await.unwrap();
        let put = store.forward(request(http::Method::PUT, "k", &[], Bytes::from_static(b"hello"))).await.unwrap();
        let e_tag = put.headers()[http::header::ETAG].to_str().unwrap().to_owned();
        let head = store.forward(request(http::Method::HEAD, "k", &[], Bytes::new())).await.unwrap();
        let modified = head.headers()[http::header::LAST_MODIFIED].to_str().unwrap().to_owned();
        let past = "Sat, 29 Oct 1994 19:43:31 GMT".to_owned();
        let future = "Tue, 29 Oct 2100 19:43:31 GMT".to_owned();
        let cases: [(&[(&'static str, String)], u16); 9] = [
            (&[("if-match", e_tag.clone())], 200),
            (&[("if-match", "\"other\"".into())], 412),
            (&[("if-none-match", e_tag.clone())], 304),
            (&[("if-none-match", "\"other\"".into())], 200),
            (&[("if-modified-since", modified.clone())], 304),
            (&[("if-modified-since", past.clone())], 200),
            (&[("if-unmodified-since", past.clone())], 412),
            (&[("if-unmodified-since", future)], 200),
            (&[("if-match", e_tag.clone()), ("if-unmodified-since", past)], 200),
        ];
        for (headers, status) in cases {
            for method in [http::Method::GET, http::Method::HEAD] {
                let response = store.forward(request(method.clone(), "k", headers, Bytes::new())).await.unwrap();
                assert_eq!(response.status().as_u16(), status, "{method} {headers:?}");
                if status == 304 {
                    assert_eq!(response.headers().get(http::header::ETAG).unwrap().to_str().unwrap(), e_tag);
                }
                let body = response.into_body().collect().await.unwrap().to_bytes();
                if method == http::Method::GET && status == 200 {
                    assert_eq!(body, Bytes::from_static(b"hello"));
                } else {
                    assert!(!body.starts_with(b"hello"), "{method} {headers:?}");
                }
            }
        }
    }

    async fn store_with_bucket() -> (tempfile::TempDir, Embedded) {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        store.put(http::Method::PUT, Some("bkt"), None, "", Bytes::new()).await.unwrap();
        (dir, store)
    }

    async fn send(store: &Embedded, mut request: ForwardRequest, query: &[(&str, &str)]) -> (u16, String) {
        request.query = query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        let response = store.forward(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn xml_value(doc: &str, tag: &str) -> String {
        let start = doc.find(&format!("<{tag}>")).unwrap() + tag.len() + 2;
        doc[start..].split('<').next().unwrap().to_owned()
    }

    #[tokio::test]
    async fn a_put_into_a_bucket_that_does_not_exist_is_no_such_bucket_and_makes_none() {
        let (dir, store) = store_with_bucket().await;
        let mut put = request(http::Method::PUT, "k", &[], Bytes::from_static(b"x"));
        put.bucket = Some("nobucket".into());
        let (status, body) = send(&store, put, &[]).await;
        assert_eq!(status, 404);
        assert!(body.contains("NoSuchBucket"), "{body}");
        assert!(!dir.path().join("nobucket").exists());
    }

    #[tokio::test]
    async fn a_put_if_match_on_a_missing_key_is_no_such_key() {
        let (_dir, store) = store_with_bucket().await;
        let put = request(http::Method::PUT, "k", &[("if-match", "\"abc\"".into())], Bytes::from_static(b"x"));
        let (status, body) = send(&store, put, &[]).await;
        assert_eq!(status, 404);
        assert!(body.contains("NoSuchKey"), "{body}");
    }

    fn base64_md5(bytes: &[u8]) -> String {
        use base64::Engine;
        use md5::Digest;
        base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(bytes))
    }

    /// Temporary files left in the store's root (a write that failed must leave none).
    fn temporary_files(dir: &Path) -> Vec<String> {
        let names = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned());
        names.filter(|n| n.starts_with(".tmp.")).collect()
    }

    /// A PUT whose body is not what its `Content-MD5` or a checksum says is refused, and changes nothing: the
    /// object already under the key keeps its bytes, ETag and content type (s3s-fs had put the new bytes in
    /// place before comparing, beside the old ETag).
    #[tokio::test]
    async fn a_put_that_fails_its_digest_leaves_the_object_as_it_was() {
        let (dir, store) = store_with_bucket().await;
        let old = request(http::Method::PUT, "k", &[("content-type", "text/csv".into())], Bytes::from_static(b"old"));
        assert_eq!(send(&store, old, &[]).await.0, 200);
        let refused: [(&[(&'static str, String)], &str); 4] = [
            (&[("content-md5", base64_md5(b"other"))], "BadDigest"),
            (&[("x-amz-checksum-sha256", base64_md5(b"not a sha-256"))], "BadDigest"),
            (&[("content-md5", base64_md5(b"new!")), ("x-amz-checksum-crc32", "AAAAAA==".into())], "BadDigest"),
            (&[("content-md5", "bm90IGFuIG1kNQ==".into())], "InvalidDigest"),
        ];
        for (headers, code) in refused {
            let put = request(http::Method::PUT, "k", headers, Bytes::from_static(b"new!"));
            let (status, body) = send(&store, put, &[]).await;
            assert_eq!(status, 400, "{headers:?}: {body}");
            assert!(body.contains(code), "{headers:?}: {body}");
        }
        let got = store.forward(request(http::Method::GET, "k", &[], Bytes::new())).await.unwrap();
        let md5_old = format!("\"{}\"", hex::encode(<md5::Md5 as md5::Digest>::digest(b"old")));
        assert_eq!(got.headers()[http::header::ETAG], md5_old.as_str());
        assert_eq!(got.headers()[http::header::CONTENT_TYPE], "text/csv");
        assert_eq!(got.into_body().collect().await.unwrap().to_bytes(), Bytes::from_static(b"old"));
        assert_eq!(temporary_files(dir.path()), Vec::<String>::new());
    }

    /// A PUT whose digests match is stored with them: the ETag is the body's MD5, a checksum sent is answered
    /// back and kept for GETs.
    #[tokio::test]
    async fn a_put_with_matching_digests_is_stored_with_its_checksum() {
        use base64::Engine;
        use sha2::Digest;
        let (_dir, store) = store_with_bucket().await;
        let sha256 = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(b"new!"));
        let headers = [("content-md5", base64_md5(b"new!")), ("x-amz-checksum-sha256", sha256.clone())];
        let put = store.forward(request(http::Method::PUT, "k", &headers, Bytes::from_static(b"new!"))).await.unwrap();
        assert_eq!(put.status(), 200);
        assert_eq!(put.headers()["x-amz-checksum-sha256"], sha256.as_str());
        let got = store.forward(request(http::Method::GET, "k", &[], Bytes::new())).await.unwrap();
        assert_eq!(got.headers()[http::header::ETAG], put.headers()[http::header::ETAG]);
        assert_eq!(got.headers()["x-amz-checksum-sha256"], sha256.as_str());
        assert_eq!(got.into_body().collect().await.unwrap().to_bytes(), Bytes::from_static(b"new!"));
    }

    /// S3's conditional writes: `If-None-Match: *` does not replace an object, `If-Match` needs its ETag.
    #[tokio::test]
    async fn a_conditional_put_replaces_only_the_object_it_names() {
        let (dir, store) = store_with_bucket().await;
        let put = |headers: &[(&'static str, String)], body: &'static [u8]| {
            request(http::Method::PUT, "k", headers, Bytes::from_static(body))
        };
        assert_eq!(send(&store, put(&[("if-none-match", "*".into())], b"first"), &[]).await.0, 200);
        assert_eq!(send(&store, put(&[("if-none-match", "*".into())], b"second"), &[]).await.0, 412);
        assert_eq!(send(&store, put(&[("if-match", "\"0123\"".into())], b"second"), &[]).await.0, 412);
        let e_tag = format!("\"{}\"", hex::encode(<md5::Md5 as md5::Digest>::digest(b"first")));
        assert_eq!(send(&store, put(&[("if-match", e_tag)], b"third"), &[]).await.0, 200);
        assert_eq!(send(&store, put(&[("if-match", "*".into())], b"fourth"), &[]).await.0, 200);
        let (_, body) = send(&store, request(http::Method::GET, "k", &[], Bytes::new()), &[]).await;
        assert_eq!(body, "fourth");
        // Each replaced object was set aside under a second name and is removed after the answer.
        for _ in 0..100 {
            if temporary_files(dir.path()).is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(temporary_files(dir.path()), Vec::<String>::new());
    }

    /// A part whose body is not what its `Content-MD5` says is `BadDigest` and is not stored (s3s-fs did not
    /// compare a part's digest at all); the same part sent again whole is.
    #[tokio::test]
    async fn a_part_that_fails_its_digest_is_not_stored() {
        let (dir, store) = store_with_bucket().await;
        let (_, created) = send(&store, request(http::Method::POST, "mp", &[], Bytes::new()), &[("uploads", "")]).await;
        let id = xml_value(&created, "UploadId");
        let part = |body: &'static [u8]| {
            request(http::Method::PUT, "mp", &[("content-md5", base64_md5(b"part"))], Bytes::from_static(body))
        };
        let number = [("partNumber", "1"), ("uploadId", id.as_str())];
        let (status, body) = send(&store, part(b"PART"), &number).await;
        assert_eq!((status, body.contains("BadDigest")), (400, true), "{body}");
        let listed = || request(http::Method::GET, "mp", &[], Bytes::new());
        let (_, parts) = send(&store, listed(), &[("uploadId", &id)]).await;
        assert!(!parts.contains("<Part>"), "{parts}");
        assert!(!dir.path().join(format!(".upload_id-{id}.part-1")).exists());
        assert_eq!(temporary_files(dir.path()), Vec::<String>::new());
        assert_eq!(send(&store, part(b"part"), &number).await.0, 200);
        let (_, parts) = send(&store, listed(), &[("uploadId", &id)]).await;
        assert_eq!(parts.matches("<Part>").count(), 1, "{parts}");
    }

    #[tokio::test]
    async fn an_unknown_upload_id_is_no_such_upload() {
        let (_dir, store) = store_with_bucket().await;
        for id in ["56788", "6d1f4b7e-8a47-4c55-9d1e-3f1f1f1f1f1f"] {
            let (status, body) =
                send(&store, request(http::Method::DELETE, "k", &[], Bytes::new()), &[("uploadId", id)]).await;
            assert_eq!(status, 404, "{id}");
            assert!(body.contains("NoSuchUpload"), "{body}");
        }
    }

    /// An upload belongs to its bucket and key: its id used with another key is `NoSuchUpload`, so its parts
    /// cannot be completed into (or listed from) a key the caller may write but the upload was not for.
    #[tokio::test]
    async fn an_upload_id_works_only_with_its_own_key() {
        let (_dir, store) = store_with_bucket().await;
        let (_, created) =
            send(&store, request(http::Method::POST, "hr/k", &[], Bytes::new()), &[("uploads", "")]).await;
        let id = xml_value(&created, "UploadId");
        let mut part = request(http::Method::PUT, "hr/k", &[], Bytes::from_static(b"secret"));
        part.query = vec![("partNumber".into(), "1".into()), ("uploadId".into(), id.clone())];
        assert_eq!(store.forward(part).await.unwrap().status(), 200);
        for method in [http::Method::GET, http::Method::POST, http::Method::DELETE] {
            let body = if method == http::Method::POST {
                Bytes::from_static(
                    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
                )
            } else {
                Bytes::new()
            };
            let (status, answer) =
                send(&store, request(method.clone(), "sales/k", &[], body), &[("uploadId", &id)]).await;
            assert_eq!(status, 404, "{method} {answer}");
            assert!(answer.contains("NoSuchUpload"), "{method} {answer}");
        }
        let (status, _) =
            send(&store, request(http::Method::GET, "hr/k", &[], Bytes::new()), &[("uploadId", &id)]).await;
        assert_eq!(status, 200, "ListParts with its own key");
    }

    #[tokio::test]
    async fn copying_an_object_onto_itself_unchanged_is_refused_but_replacing_its_metadata_is_not() {
        let (_dir, store) = store_with_bucket().await;
        send(&store, request(http::Method::PUT, "k", &[], Bytes::from_static(b"x")), &[]).await;
        let copy = |extra: &[(&'static str, String)]| {
            let mut headers = vec![("x-amz-copy-source", "bkt/k".to_owned())];
            headers.extend_from_slice(extra);
            request(http::Method::PUT, "k", &headers, Bytes::new())
        };
        let (status, body) = send(&store, copy(&[]), &[]).await;
        assert_eq!(status, 400);
        assert!(body.contains("InvalidRequest"), "{body}");
        let (status, _) = send(&store, copy(&[("x-amz-metadata-directive", "REPLACE".into())]), &[]).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn an_empty_delimiter_groups_nothing_and_is_not_echoed() {
        let (_dir, store) = store_with_bucket().await;
        for key in ["bar", "baz", "cab"] {
            send(&store, request(http::Method::PUT, key, &[], Bytes::from_static(b"x")), &[]).await;
        }
        let mut list = request(http::Method::GET, "", &[], Bytes::new());
        list.key = None;
        let (status, body) = send(&store, list, &[("list-type", "2"), ("delimiter", "")]).await;
        assert_eq!(status, 200);
        assert!(!body.contains("CommonPrefixes") && !body.contains("<Delimiter>"), "{body}");
        assert_eq!(body.matches("<Key>").count(), 3, "{body}");
    }

    /// A prefix of other keys (`dir/sub` once `dir/sub/k` exists) holds no object: HEAD, GET and CopyObject are
    /// `404 NoSuchKey` and DeleteObject is `204`, leaving the keys below in place, as on S3.
    #[tokio::test]
    async fn a_key_that_is_a_directory_of_other_keys_is_no_object() {
        let (_dir, store) = store_with_bucket().await;
        send(&store, request(http::Method::PUT, "dir/sub/k", &[], Bytes::from_static(b"x")), &[]).await;
        for method in [http::Method::HEAD, http::Method::GET] {
            let (status, body) = send(&store, request(method.clone(), "dir/sub", &[], Bytes::new()), &[]).await;
            assert_eq!(status, 404, "{method} {body}");
            if method == http::Method::GET {
                assert!(body.contains("NoSuchKey"), "{body}");
            }
        }
        let copy = request(http::Method::PUT, "copy", &[("x-amz-copy-source", "bkt/dir/sub".into())], Bytes::new());
        let (status, body) = send(&store, copy, &[]).await;
        assert_eq!(status, 404, "{body}");
        assert!(body.contains("NoSuchKey"), "{body}");
        let (status, body) = send(&store, request(http::Method::DELETE, "dir/sub", &[], Bytes::new()), &[]).await;
        assert_eq!(status, 204, "{body}");
        let (status, body) = send(&store, request(http::Method::GET, "dir/sub/k", &[], Bytes::new()), &[]).await;
        assert_eq!((status, body.as_str()), (200, "x"), "the keys below are left in place");
    }

    /// DeleteObjects that names a "directory" beside the keys in it (s3fs's recursive `rm` does) deletes the keys
    /// and reports the directory deleted, as S3 reports a key without an object.
    #[tokio::test]
    async fn deleting_objects_with_a_directory_among_them_deletes_the_objects() {
        use base64::Engine;
        use md5::Digest;

        let (_dir, store) = store_with_bucket().await;
        for key in ["tree/a/k1", "tree/a/k2"] {
            send(&store, request(http::Method::PUT, key, &[], Bytes::from_static(b"x")), &[]).await;
        }
        let xml = "<Delete><Object><Key>tree/a</Key></Object><Object><Key>tree/a/k1</Key></Object>\
                   <Object><Key>tree/a/k2</Key></Object></Delete>";
        let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(xml.as_bytes()));
        let mut delete = request(http::Method::POST, "", &[("content-md5", md5)], Bytes::from(xml));
        delete.key = None;
        let (status, body) = send(&store, delete, &[("delete", "")]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body.matches("<Deleted>").count(), 3, "{body}");
        for key in ["tree/a/k1", "tree/a/k2"] {
            let (status, _) = send(&store, request(http::Method::HEAD, key, &[], Bytes::new()), &[]).await;
            assert_eq!(status, 404, "{key} is deleted");
        }
    }

    /// A zero-byte `PUT a/b/` (pyarrow's `create_dir`) is read back as the empty object S3 stores, and `a/b` is
    /// no object.
    #[tokio::test]
    async fn a_key_ending_in_a_slash_reads_as_an_empty_object() {
        let (_dir, store) = store_with_bucket().await;
        let (status, body) = send(&store, request(http::Method::PUT, "marker/", &[], Bytes::new()), &[]).await;
        assert_eq!(status, 200, "{body}");
        for method in [http::Method::HEAD, http::Method::GET] {
            let response = store.forward(request(method.clone(), "marker/", &[], Bytes::new())).await.unwrap();
            assert_eq!(response.status(), 200, "{method}");
            assert_eq!(response.headers()[http::header::CONTENT_LENGTH], "0", "{method}");
            assert_eq!(response.headers()[http::header::ETAG], "\"d41d8cd98f00b204e9800998ecf8427e\"", "{method}");
            assert!(response.into_body().collect().await.unwrap().to_bytes().is_empty(), "{method}");
        }
        let (status, _) = send(&store, request(http::Method::HEAD, "marker", &[], Bytes::new()), &[]).await;
        assert_eq!(status, 404, "without the slash it is no object");
    }

    /// A key, the same key ending in `/`, and keys below it are separate objects with their own bytes, listed in
    /// S3's order and grouped by a delimiter; keys as long as S3's 1024 bytes are kept, uploaded whole or in
    /// parts. (s3s-fs's own layout made `foo/bar` a file or a directory, never both, `foo/bar/` a directory
    /// that holds no bytes, and named files after the base64 of the key, so keys over about 160 bytes failed.)
    #[tokio::test]
    async fn a_key_its_slash_form_and_the_keys_below_it_are_separate_objects() {
        let (_dir, store) = store_with_bucket().await;
        let long = format!("deep/{}", "k".repeat(1019));
        let objects = [("foo/bar", "1"), ("foo/bar/", "22"), ("foo/bar/xyzzy", "333"), (long.as_str(), "4444")];
        for (key, body) in objects {
            let (status, answer) = send(&store, request(http::Method::PUT, key, &[], Bytes::from(body)), &[]).await;
            assert_eq!(status, 200, "{key}: {answer}");
        }
        for (key, body) in objects {
            let (status, answer) = send(&store, request(http::Method::GET, key, &[], Bytes::new()), &[]).await;
            assert_eq!((status, answer.as_str()), (200, body), "{key}");
        }
        let mut list = request(http::Method::GET, "", &[], Bytes::new());
        list.key = None;
        let (_, all) = send(&store, list, &[("list-type", "2")]).await;
        let keys: Vec<&str> = all.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).collect();
        assert_eq!(keys, [long.as_str(), "foo/bar", "foo/bar/", "foo/bar/xyzzy"], "{all}");
        assert!(all.contains("<Size>2</Size><StorageClass>STANDARD</StorageClass>") && all.contains("<ETag>"), "{all}");

        let mut list = request(http::Method::GET, "", &[], Bytes::new());
        list.key = None;
        let (_, grouped) = send(&store, list, &[("list-type", "2"), ("prefix", "foo/"), ("delimiter", "/")]).await;
        assert!(grouped.contains("<Key>foo/bar</Key>"), "{grouped}");
        assert_eq!(grouped.matches("<Key>").count(), 1, "{grouped}");
        assert!(grouped.contains("<CommonPrefixes><Prefix>foo/bar/</Prefix></CommonPrefixes>"), "{grouped}");

        let mut create = request(http::Method::POST, &long, &[], Bytes::new());
        create.query = vec![("uploads".into(), String::new())];
        let (status, created) = send(&store, create, &[("uploads", "")]).await;
        assert_eq!(status, 200, "{created}");
        assert!(created.contains(&format!("<Key>{long}</Key>")), "{created}");
        let mut uploads = request(http::Method::GET, "", &[], Bytes::new());
        uploads.key = None;
        let (_, listed) = send(&store, uploads, &[("uploads", "")]).await;
        assert!(listed.contains(&format!("<Key>{long}</Key>")), "{listed}");

        let (status, _) = send(&store, request(http::Method::DELETE, "foo/bar", &[], Bytes::new()), &[]).await;
        assert_eq!(status, 204);
        let (status, answer) = send(&store, request(http::Method::GET, "foo/bar/", &[], Bytes::new()), &[]).await;
        assert_eq!((status, answer.as_str()), (200, "22"), "deleting foo/bar leaves foo/bar/");
    }

    #[tokio::test]
    async fn a_v1_listing_answers_with_the_marker_it_was_given() {
        let (_dir, store) = store_with_bucket().await;
        let mut list = request(http::Method::GET, "", &[], Bytes::new());
        list.key = None;
        let (status, body) = send(&store, list, &[]).await;
        assert_eq!(status, 200);
        assert!(body.contains("<Marker></Marker>") || body.contains("<Marker/>"), "{body}");
        let mut list = request(http::Method::GET, "", &[], Bytes::new());
        list.key = None;
        let (_, body) = send(&store, list, &[("marker", "zzz")]).await;
        assert!(body.contains("<Marker>zzz</Marker>"), "{body}");
    }

    #[tokio::test]
    async fn a_v2_listing_shows_owners_only_when_asked_to() {
        let (_dir, store) = store_with_bucket().await;
        send(&store, request(http::Method::PUT, "k", &[], Bytes::from_static(b"x")), &[]).await;
        let list = || {
            let mut list = request(http::Method::GET, "", &[], Bytes::new());
            list.key = None;
            list
        };
        let (_, plain) = send(&store, list(), &[("list-type", "2")]).await;
        assert!(!plain.contains("<Owner>"), "{plain}");
        let (_, owned) = send(&store, list(), &[("list-type", "2"), ("fetch-owner", "true")]).await;
        assert!(owned.contains("<Owner><DisplayName>lakegate</DisplayName><ID>lakegate</ID></Owner>"), "{owned}");
    }

    /// GetObject and HeadObject with `partNumber` read that part, as S3 does (s3s-fs sent the whole object):
    /// a multipart object's parts as they were uploaded, an object uploaded whole as its own part 1.
    /// ListParts lists an upload's parts in part-number order, each with the ETag its upload answered, in pages
    /// of `max-parts` after `part-number-marker` (s3s-fs: directory order, no ETags, no pages).
    #[tokio::test]
    async fn parts_are_listed_in_order_with_their_etags_and_in_pages() {
        let (_dir, store) = store_with_bucket().await;
        let (_, created) = send(&store, request(http::Method::POST, "mp", &[], Bytes::new()), &[("uploads", "")]).await;
        let id = xml_value(&created, "UploadId");
        let mut tags = std::collections::BTreeMap::new();
        for number in ["3", "1", "2"] {
            let mut part = request(http::Method::PUT, "mp", &[], Bytes::from(format!("part {number}")));
            part.query = vec![("partNumber".into(), number.into()), ("uploadId".into(), id.clone())];
            let response = store.forward(part).await.unwrap();
            tags.insert(number, response.headers()[http::header::ETAG].to_str().unwrap().to_owned());
        }
        let list = || request(http::Method::GET, "mp", &[], Bytes::new());
        let (status, all) = send(&store, list(), &[("uploadId", &id)]).await;
        assert_eq!(status, 200, "{all}");
        let numbers: Vec<&str> =
            all.split("<PartNumber>").skip(1).filter_map(|s| s.split("</PartNumber>").next()).collect();
        assert_eq!(numbers, ["1", "2", "3"], "{all}");
        for tag in tags.values() {
            assert!(all.contains(tag.trim_matches('"')), "{tag} in {all}");
        }
        let (_, first) = send(&store, list(), &[("uploadId", &id), ("max-parts", "2")]).await;
        assert!(first.contains("<IsTruncated>true</IsTruncated>"), "{first}");
        assert_eq!(xml_value(&first, "NextPartNumberMarker"), "2", "{first}");
        let (_, rest) = send(&store, list(), &[("uploadId", &id), ("part-number-marker", "2")]).await;
        assert_eq!(rest.matches("<Part>").count(), 1, "{rest}");
        assert!(rest.contains("<PartNumber>3</PartNumber>") && rest.contains("<IsTruncated>false</IsTruncated>"));
    }

    #[tokio::test]
    async fn a_part_number_reads_that_part() {
        let (_dir, store) = store_with_bucket().await;
        let first: Bytes = vec![b'a'; 5 * 1024 * 1024].into();
        let (_, created) = send(&store, request(http::Method::POST, "mp", &[], Bytes::new()), &[("uploads", "")]).await;
        let id = xml_value(&created, "UploadId");
        let mut tags = Vec::new();
        for (number, body) in [("1", first.clone()), ("2", Bytes::from_static(b"xyz"))] {
            let mut part = request(http::Method::PUT, "mp", &[], body);
            part.query = vec![("partNumber".into(), number.into()), ("uploadId".into(), id.clone())];
            let response = store.forward(part).await.unwrap();
            tags.push(response.headers()[http::header::ETAG].to_str().unwrap().to_owned());
        }
        let xml = format!(
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>{}</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>{}</ETag></Part></CompleteMultipartUpload>",
            tags.first().unwrap(),
            tags.get(1).unwrap()
        );
        let (status, body) =
            send(&store, request(http::Method::POST, "mp", &[], Bytes::from(xml)), &[("uploadId", &id)]).await;
        assert_eq!(status, 200, "{body}");
        send(&store, request(http::Method::PUT, "whole", &[], Bytes::from_static(b"hello")), &[]).await;

        let read = |method: http::Method, key: &str, number: &str| {
            let mut r = request(method, key, &[], Bytes::new());
            r.query = vec![("partNumber".into(), number.into())];
            r
        };
        for method in [http::Method::GET, http::Method::HEAD] {
            let r = store.forward(read(method.clone(), "mp", "2")).await.unwrap();
            assert_eq!(r.status(), 206, "{method}");
            assert_eq!(r.headers()["content-range"], "bytes 5242880-5242882/5242883", "{method}");
            assert_eq!(r.headers()["content-length"], "3", "{method}");
            assert_eq!(r.headers()["x-amz-mp-parts-count"], "2", "{method}");
            if method == http::Method::GET {
                assert_eq!(r.into_body().collect().await.unwrap().to_bytes(), Bytes::from_static(b"xyz"));
            }
            let r = store.forward(read(method.clone(), "whole", "1")).await.unwrap();
            assert_eq!(r.status(), 206, "{method}");
            assert_eq!(r.headers()["content-range"], "bytes 0-4/5", "{method}");
            assert!(!r.headers().contains_key("x-amz-mp-parts-count"), "{method}");
            for (key, number) in [("mp", "3"), ("whole", "2")] {
                let r = store.forward(read(method.clone(), key, number)).await.unwrap();
                assert_eq!(r.status(), 416, "{method} {key} part {number}");
            }
        }
    }

    /// A multipart upload completes only with the parts the client uploaded (by number and ETag), and the
    /// object it replaces leaves no checksum behind (s3s-fs kept them, and boto3 refused the new bytes).
    #[tokio::test]
    async fn completing_an_upload_checks_its_parts_and_leaves_no_stale_checksum() {
        let (_dir, store) = store_with_bucket().await;
        let old = Bytes::from_static(b"old object");
        let checksum = ("x-amz-checksum-sha256", sha256_base64(&old));
        send(&store, request(http::Method::PUT, "k", &[checksum], old), &[]).await;
        let before = store.forward(request(http::Method::GET, "k", &[], Bytes::new())).await.unwrap();
        assert!(before.headers().contains_key("x-amz-checksum-sha256"), "the old object has a checksum");
        let (_, created) = send(&store, request(http::Method::POST, "k", &[], Bytes::new()), &[("uploads", "")]).await;
        let id = xml_value(&created, "UploadId");
        let part = request(http::Method::PUT, "k", &[], Bytes::from_static(b"new bytes"));
        let response = {
            let mut part = part;
            part.query = vec![("partNumber".into(), "1".into()), ("uploadId".into(), id.clone())];
            store.forward(part).await.unwrap()
        };
        let e_tag = response.headers()[http::header::ETAG].to_str().unwrap().to_owned();
        let complete = |e_tag: &str, number: u32| {
            let xml = format!(
                "<CompleteMultipartUpload><Part><PartNumber>{number}</PartNumber><ETag>{e_tag}</ETag></Part></CompleteMultipartUpload>"
            );
            request(http::Method::POST, "k", &[], Bytes::from(xml))
        };
        for (tag, number) in [("\"0123456789abcdef0123456789abcdef\"", 1), (e_tag.as_str(), 2)] {
            let (status, body) = send(&store, complete(tag, number), &[("uploadId", &id)]).await;
            assert_eq!(status, 400, "{body}");
            assert!(body.contains("InvalidPart"), "{body}");
        }
        let (status, body) = send(&store, complete(&e_tag, 1), &[("uploadId", &id)]).await;
        assert_eq!(status, 200, "{body}");
        // A repeated complete (an SDK retrying a lost answer) gets the same answer, as on S3.
        let (status, again) = send(&store, complete(&e_tag, 1), &[("uploadId", &id)]).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(xml_value(&again, "ETag"), xml_value(&body, "ETag"));
        let get = store.forward(request(http::Method::GET, "k", &[], Bytes::new())).await.unwrap();
        assert!(!get.headers().contains_key("x-amz-checksum-sha256"), "{:?}", get.headers());
        assert_eq!(get.into_body().collect().await.unwrap().to_bytes(), Bytes::from_static(b"new bytes"));
    }

    fn sha256_base64(bytes: &[u8]) -> String {
        use base64::Engine;
        use sha2::Digest;
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(bytes))
    }
}

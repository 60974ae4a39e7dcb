//! From an HTTP request head to the S3 operation it asks for: which bucket, which key, which Cedar action.
//!
//! Fail closed: every query parameter must be one the operation is known to take, so the store can never read
//! the request as an operation other than the one that was decided (`?acl`, `?policy`, `?versioning`... are
//! refused, not passed through). Keys are decoded once and checked with the policy module's rules, `.`/`..`
//! segments refused. A `%` left after decoding is part of the key (Hive and Spark escape partition values so:
//! `ts=2024-01-01 00%3A00%3A00`), decided and stored as it is; only a key that a second decoding would turn into
//! a path step (`%2E%2E`, `..%2F`, a leading `%2F`) is refused, in case a store ever decodes twice.

use lakegate_s3_protocol::sigv4::PRESIGN_PARAMS;
use percent_encoding::percent_decode_str;

use lakegate_core::credentials::Access;
use lakegate_core::policy::Resource;

/// Longest raw path + query accepted (S3 keys are at most 1024 bytes; escapes can triple them).
pub const MAX_URI_LEN: usize = 8 * 1024;
/// Most query parameters accepted.
const MAX_QUERY_PARAMS: usize = 32;

/// The S3 operations Lakegate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    ListBuckets,
    /// `PUT /<bucket>`: answered by Lakegate itself (`409 BucketAlreadyOwnedByYou` for a bucket that exists and
    /// the caller may see into, `403` otherwise); no bucket is ever created.
    CreateBucket,
    HeadBucket,
    GetBucketLocation,
    ListObjectsV1,
    ListObjectsV2,
    ListMultipartUploads,
    DeleteObjects,
    GetObject,
    HeadObject,
    PutObject,
    CopyObject,
    DeleteObject,
    CreateMultipartUpload,
    UploadPart,
    UploadPartCopy,
    CompleteMultipartUpload,
    AbortMultipartUpload,
    ListParts,
}

impl OpKind {
    /// The Cedar action decided for the request's own resource (the destination, for copies).
    pub fn action(self) -> &'static str {
        match self {
            Self::ListBuckets => "s3:ListAllMyBuckets",
            Self::CreateBucket => "s3:CreateBucket",
            Self::HeadBucket => "s3:HeadBucket",
            Self::GetBucketLocation => "s3:GetBucketLocation",
            Self::ListObjectsV1 | Self::ListObjectsV2 => "s3:ListBucket",
            Self::ListMultipartUploads => "s3:ListBucketMultipartUploads",
            Self::DeleteObjects | Self::DeleteObject => "s3:DeleteObject",
            Self::GetObject => "s3:GetObject",
            Self::HeadObject => "s3:HeadObject",
            Self::PutObject | Self::CopyObject => "s3:PutObject",
            Self::CreateMultipartUpload => "s3:CreateMultipartUpload",
            Self::UploadPart | Self::UploadPartCopy => "s3:UploadPart",
            Self::CompleteMultipartUpload => "s3:CompleteMultipartUpload",
            Self::AbortMultipartUpload => "s3:AbortMultipartUpload",
            Self::ListParts => "s3:ListMultipartUploadParts",
        }
    }

    /// What the credential scope must allow.
    pub fn access(self) -> Access {
        match self {
            Self::ListBuckets
            | Self::CreateBucket
            | Self::HeadBucket
            | Self::GetBucketLocation
            | Self::ListObjectsV1
            | Self::ListObjectsV2
            | Self::ListMultipartUploads => Access::List,
            Self::GetObject | Self::HeadObject => Access::Read,
            _ => Access::Write,
        }
    }

    /// The operation's name, as S3 spells it (audit `extra.operation`).
    pub fn name(self) -> &'static str {
        match self {
            Self::ListBuckets => "ListBuckets",
            Self::CreateBucket => "CreateBucket",
            Self::HeadBucket => "HeadBucket",
            Self::GetBucketLocation => "GetBucketLocation",
            Self::ListObjectsV1 => "ListObjects",
            Self::ListObjectsV2 => "ListObjectsV2",
            Self::ListMultipartUploads => "ListMultipartUploads",
            Self::DeleteObjects => "DeleteObjects",
            Self::GetObject => "GetObject",
            Self::HeadObject => "HeadObject",
            Self::PutObject => "PutObject",
            Self::CopyObject => "CopyObject",
            Self::DeleteObject => "DeleteObject",
            Self::CreateMultipartUpload => "CreateMultipartUpload",
            Self::UploadPart => "UploadPart",
            Self::UploadPartCopy => "UploadPartCopy",
            Self::CompleteMultipartUpload => "CompleteMultipartUpload",
            Self::AbortMultipartUpload => "AbortMultipartUpload",
            Self::ListParts => "ListParts",
        }
    }
}

/// A classified request. Query pairs are decoded; what is forwarded is rebuilt from these fields, so the store
/// sees exactly what was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub kind: OpKind,
    pub bucket: Option<String>,
    pub key: Option<String>,
    /// The listing prefix (`prefix` parameter), `""` when absent.
    pub prefix: String,
    /// `x-amz-copy-source`, decoded and checked, for the two copy operations.
    pub copy_source: Option<(String, String)>,
    /// The decoded query, presigned parameters removed.
    pub query: Vec<(String, String)>,
}

impl Operation {
    /// The resource decided for this operation.
    pub fn resource(&self) -> Result<Resource, ClassifyError> {
        let bucket = self.bucket.as_deref().unwrap_or_default();
        let result = match (self.kind, &self.key) {
            (OpKind::ListBuckets, _) => return Ok(Resource::Bucket(String::new())),
            (OpKind::ListObjectsV1 | OpKind::ListObjectsV2 | OpKind::ListMultipartUploads, _) => {
                Resource::prefix(bucket, &self.prefix)
            }
            (OpKind::CreateBucket | OpKind::HeadBucket | OpKind::GetBucketLocation | OpKind::DeleteObjects, _) => {
                Resource::prefix(bucket, "")
            }
            (_, Some(key)) => Resource::object(bucket, key),
            (_, None) => return Err(ClassifyError::InvalidRequest("the operation needs an object key")),
        };
        result.map_err(|e| ClassifyError::InvalidKey(e.to_string()))
    }

    /// The value of query parameter `name`, if present.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// Why a request could not be classified. Mapped to S3 error codes at the edge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClassifyError {
    #[error("{0} is not supported by Lakegate")]
    NotImplemented(&'static str),
    /// An `x-amz-*` request header Lakegate cannot carry out (object tagging, for one): refused rather than
    /// dropped, so nothing is stored without what the client asked for.
    #[error("the {0} header is not supported by Lakegate; nothing was stored or changed")]
    UnsupportedHeader(String),
    #[error("the method is not allowed on this resource")]
    MethodNotAllowed,
    #[error("the bucket name is not valid")]
    InvalidBucketName,
    #[error("invalid object key or prefix: {0}")]
    InvalidKey(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
}

/// Where the bucket name comes from.
#[derive(Debug, Clone, Default)]
pub struct HostStyle {
    /// Domains under which `bucket.<domain>` is a virtual-hosted bucket (e.g. `s3.localhost`).
    pub virtual_host_domains: Vec<String>,
}

impl HostStyle {
    /// The bucket named by `host` (without port), when it is `<bucket>.<domain>` for a configured domain.
    fn bucket_from_host<'h>(&self, host: &'h str) -> Option<&'h str> {
        let host = strip_port(host);
        self.virtual_host_domains
            .iter()
            .find_map(|d| host.strip_suffix(d.as_str()).and_then(|b| b.strip_suffix('.')).filter(|b| !b.is_empty()))
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host;
    }
    host.rsplit_once(':').map_or(host, |(h, _)| h)
}

/// Classifies a request head.
pub fn classify(
    method: &http::Method,
    host: Option<&str>,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &http::HeaderMap,
    style: &HostStyle,
) -> Result<Operation, ClassifyError> {
    if raw_path.len() + raw_query.map_or(0, str::len) > MAX_URI_LEN {
        return Err(ClassifyError::InvalidRequest("the request URI is too long"));
    }
    let query = decode_query(raw_query.unwrap_or(""))?;
    let (bucket, raw_key) = locate(host, raw_path, style)?;
    let key = if raw_key.is_empty() { None } else { Some(decode_key(raw_key)?) };
    let names: Vec<&str> = query.iter().map(|(k, _)| k.as_str()).collect();
    let has = |n: &str| names.contains(&n);
    let copy = headers.contains_key("x-amz-copy-source");

    use OpKind::*;
    let kind = match (bucket.is_some(), key.is_some(), method.as_str()) {
        (false, _, "GET") => ListBuckets,
        (false, _, _) => return Err(ClassifyError::MethodNotAllowed),
        (true, false, "HEAD") => HeadBucket,
        (true, false, "GET") if has("location") => GetBucketLocation,
        (true, false, "GET") if has("uploads") => ListMultipartUploads,
        (true, false, "GET") if query.iter().any(|(k, v)| k == "list-type" && v == "2") => ListObjectsV2,
        (true, false, "GET") => ListObjectsV1,
        (true, false, "POST") if has("delete") => DeleteObjects,
        (true, _, "POST") if !has("uploads") && !has("uploadId") => {
            return Err(ClassifyError::NotImplemented("this POST operation"));
        }
        // A bare PUT of an existing bucket is what rclone (and other tools) send to make sure the bucket is there;
        // it is decided and answered, never forwarded. With a sub-resource (`?acl`, `?versioning`...) it is bucket
        // administration, refused below by the parameter check.
        (true, false, "PUT") => CreateBucket,
        (true, false, "DELETE") => return Err(ClassifyError::NotImplemented("deleting buckets")),
        (true, false, _) => return Err(ClassifyError::MethodNotAllowed),
        (true, true, "GET") if has("uploadId") => ListParts,
        (true, true, "GET") => GetObject,
        (true, true, "HEAD") => HeadObject,
        (true, true, "PUT") if has("uploadId") && copy => UploadPartCopy,
        (true, true, "PUT") if has("uploadId") => UploadPart,
        (true, true, "PUT") if copy => CopyObject,
        (true, true, "PUT") => PutObject,
        (true, true, "POST") if has("uploads") => CreateMultipartUpload,
        (true, true, "POST") if has("uploadId") => CompleteMultipartUpload,
        (true, true, "DELETE") if has("uploadId") => AbortMultipartUpload,
        (true, true, "DELETE") => DeleteObject,
        (true, true, _) => return Err(ClassifyError::MethodNotAllowed),
    };
    for name in &names {
        if !allowed_params(kind).contains(name) && !matches!(*name, "x-id") {
            return Err(ClassifyError::NotImplemented("this sub-resource or query parameter"));
        }
    }
    if copy && !matches!(kind, CopyObject | UploadPartCopy) {
        return Err(ClassifyError::InvalidArgument("x-amz-copy-source is only valid on a copy"));
    }
    let copy_source = if copy { Some(copy_source(headers)?) } else { None };
    // S3 reads an empty `delimiter=` (rclone and s3fs send it to list a whole prefix) as no delimiter: it groups
    // nothing and is not echoed. Dropped here so that every store, remote ones included, sees no delimiter at all
    // (s3s-fs grouped keys by their first character; other stores echo an empty `<Delimiter/>`).
    let mut query = query;
    if matches!(kind, ListObjectsV1 | ListObjectsV2 | ListMultipartUploads) {
        query.retain(|(k, v)| !(k == "delimiter" && v.is_empty()));
    }
    let prefix = query.iter().find(|(k, _)| k == "prefix").map(|(_, v)| v.clone()).unwrap_or_default();
    if prefix.len() > 1024 || prefix.chars().any(char::is_control) || steps_if_decoded_again(&prefix) {
        return Err(ClassifyError::InvalidKey("the listing prefix is not acceptable".into()));
    }
    Ok(Operation { kind, bucket, key, prefix, copy_source, query })
}

/// The bucket a request addresses (by its host, or else its first path segment) and the still-encoded key.
pub(crate) fn locate<'p>(
    host: Option<&str>,
    raw_path: &'p str,
    style: &HostStyle,
) -> Result<(Option<String>, &'p str), ClassifyError> {
    let (bucket, raw_key) = match host.and_then(|h| style.bucket_from_host(h)) {
        Some(bucket) => (Some(bucket.to_owned()), raw_path.strip_prefix('/').unwrap_or(raw_path)),
        None => {
            let rest = raw_path.strip_prefix('/').ok_or(ClassifyError::InvalidRequest("the path must start with /"))?;
            match rest.split_once('/') {
                Some((b, k)) => (Some(decode_bucket(b)?), k),
                None if rest.is_empty() => (None, ""),
                None => (Some(decode_bucket(rest)?), ""),
            }
        }
    };
    if let Some(b) = &bucket {
        Resource::prefix(b, "").map_err(|_| ClassifyError::InvalidBucketName)?;
    }
    Ok((bucket, raw_key))
}

/// The query parameters each operation takes (besides the presigned ones and `x-id`).
fn allowed_params(kind: OpKind) -> &'static [&'static str] {
    const RESPONSE_OVERRIDES: &[&str] = &[
        "partNumber",
        "response-cache-control",
        "response-content-disposition",
        "response-content-encoding",
        "response-content-language",
        "response-content-type",
        "response-expires",
    ];
    match kind {
        OpKind::ListBuckets => &["max-buckets", "continuation-token", "prefix", "bucket-region"],
        OpKind::CreateBucket | OpKind::HeadBucket => &[],
        OpKind::GetBucketLocation => &["location"],
        OpKind::ListObjectsV1 => &["delimiter", "encoding-type", "marker", "max-keys", "prefix"],
        OpKind::ListObjectsV2 => &[
            "list-type",
            "continuation-token",
            "delimiter",
            "encoding-type",
            "fetch-owner",
            "max-keys",
            "prefix",
            "start-after",
        ],
        OpKind::ListMultipartUploads => {
            &["uploads", "delimiter", "encoding-type", "key-marker", "max-uploads", "prefix", "upload-id-marker"]
        }
        OpKind::DeleteObjects => &["delete"],
        OpKind::GetObject => RESPONSE_OVERRIDES,
        OpKind::HeadObject => &["partNumber"],
        OpKind::PutObject | OpKind::CopyObject | OpKind::DeleteObject => &[],
        OpKind::CreateMultipartUpload => &["uploads"],
        OpKind::UploadPart | OpKind::UploadPartCopy => &["partNumber", "uploadId"],
        OpKind::CompleteMultipartUpload | OpKind::AbortMultipartUpload => &["uploadId"],
        OpKind::ListParts => &["uploadId", "max-parts", "part-number-marker", "encoding-type"],
    }
}

/// Decodes the query into pairs, dropping the presigned parameters. `+` is a literal plus, as in SigV4.
pub fn decode_query(raw: &str) -> Result<Vec<(String, String)>, ClassifyError> {
    let mut out = Vec::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let k = percent_decode_str(k)
            .decode_utf8()
            .map_err(|_| ClassifyError::InvalidArgument("a query parameter is not UTF-8"))?;
        if PRESIGN_PARAMS.contains(&k.as_ref()) {
            continue;
        }
        let v = percent_decode_str(v)
            .decode_utf8()
            .map_err(|_| ClassifyError::InvalidArgument("a query parameter is not UTF-8"))?;
        if out.iter().any(|(seen, _): &(String, String)| *seen == k) {
            return Err(ClassifyError::InvalidArgument("a query parameter is repeated"));
        }
        out.push((k.into_owned(), v.into_owned()));
        if out.len() > MAX_QUERY_PARAMS {
            return Err(ClassifyError::InvalidArgument("too many query parameters"));
        }
    }
    Ok(out)
}

fn decode_bucket(raw: &str) -> Result<String, ClassifyError> {
    // Bucket names never need escapes; `lake%2Fhr` must not become a path.
    if raw.contains('%') {
        return Err(ClassifyError::InvalidBucketName);
    }
    Ok(raw.to_owned())
}

/// Decodes a key once and checks it with [`check_key`].
fn decode_key(raw: &str) -> Result<String, ClassifyError> {
    let key = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ClassifyError::InvalidKey("the key is not UTF-8".into()))?
        .into_owned();
    check_key(&key)?;
    Ok(key)
}

/// The rules every object key meets, however it arrived (path, copy source, DeleteObjects body): the policy
/// module's (no `.`/`..` or empty segments, no leading `/`, no control characters, at most 1024 bytes), no
/// backslash (a separator to some file systems), and nothing a second decoding would turn into a path step.
pub(crate) fn check_key(key: &str) -> Result<(), ClassifyError> {
    // Same rules as decisions use, checked here so a bad key is refused before any credential work.
    Resource::object("aaa", key).map_err(|e| ClassifyError::InvalidKey(e.to_string()))?;
    if key.contains('\\') {
        return Err(ClassifyError::InvalidKey("the key holds a backslash".into()));
    }
    if steps_if_decoded_again(key) {
        return Err(ClassifyError::InvalidKey("the key would name another path if decoded twice".into()));
    }
    Ok(())
}

/// Whether decoding `s` once more would give a `.` or `..` segment or a leading separator. Both stores decode
/// a key exactly once (it is forwarded with its `%` encoded as `%25`), so a literal `%` is harmless to them; this
/// keeps a store that wrongly decoded twice from being led out of the prefix that was decided, while leaving
/// Hive's escapes (`%3A`, `%3D`, `%2F`, `%25`...) alone.
fn steps_if_decoded_again(s: &str) -> bool {
    if !s.contains('%') {
        return false;
    }
    let again: Vec<u8> = percent_decode_str(s).collect();
    let separator = |b: &u8| *b == b'/' || *b == b'\\';
    again.first().is_some_and(separator) || again.split(separator).any(|seg| seg == b"." || seg == b"..")
}

/// `x-amz-copy-source: [/]bucket/key` (URL-encoded); versions are not supported.
fn copy_source(headers: &http::HeaderMap) -> Result<(String, String), ClassifyError> {
    const BAD: ClassifyError = ClassifyError::InvalidArgument("x-amz-copy-source must be bucket/key");
    let mut values = headers.get_all("x-amz-copy-source").iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(BAD);
    };
    let raw = value.to_str().map_err(|_| BAD)?;
    if raw.contains('?') {
        return Err(ClassifyError::NotImplemented("copying a specific object version"));
    }
    let raw = raw.strip_prefix('/').unwrap_or(raw);
    let (bucket, key) = raw.split_once('/').ok_or(BAD)?;
    let bucket = decode_bucket(bucket)?;
    Resource::prefix(&bucket, "").map_err(|_| ClassifyError::InvalidBucketName)?;
    Ok((bucket, decode_key(key)?))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn op(method: &str, path: &str, query: Option<&str>) -> Result<Operation, ClassifyError> {
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        classify(&m, Some("127.0.0.1:9000"), path, query, &http::HeaderMap::new(), &HostStyle::default())
    }

    #[test]
    fn path_style_requests_name_bucket_and_key() {
        let o = op("GET", "/lake/sales/a%20b.csv", None).unwrap();
        assert_eq!(
            (o.kind, o.bucket.as_deref(), o.key.as_deref()),
            (OpKind::GetObject, Some("lake"), Some("sales/a b.csv"))
        );
        assert_eq!(op("GET", "/", None).unwrap().kind, OpKind::ListBuckets);
        let l = op("GET", "/lake", Some("list-type=2&prefix=sales%2F")).unwrap();
        assert_eq!((l.kind, l.prefix.as_str()), (OpKind::ListObjectsV2, "sales/"));
    }

    #[test]
    fn virtual_hosted_buckets_come_from_the_host() {
        let style = HostStyle { virtual_host_domains: vec!["s3.localhost".into()] };
        let o = classify(
            &http::Method::GET,
            Some("lake.s3.localhost:9000"),
            "/sales/x",
            None,
            &http::HeaderMap::new(),
            &style,
        )
        .unwrap();
        assert_eq!((o.bucket.as_deref(), o.key.as_deref()), (Some("lake"), Some("sales/x")));
    }

    #[test]
    fn unknown_sub_resources_are_refused_not_passed_through() {
        for q in ["acl", "policy", "versioning", "tagging", "cors", "list-type=2&foo=1", "location&acl"] {
            assert!(matches!(op("GET", "/lake", Some(q)), Err(ClassifyError::NotImplemented(_))), "bucket ?{q}");
        }
        for q in ["acl", "tagging", "versionId=3", "torrent", "retention", "uploadId=u&acl"] {
            assert!(
                matches!(op("GET", "/lake/sales/x", Some(q)), Err(ClassifyError::NotImplemented(_))),
                "object ?{q}"
            );
        }
        for q in ["acl", "versioning", "policy", "tagging", "cors"] {
            assert!(matches!(op("PUT", "/lake", Some(q)), Err(ClassifyError::NotImplemented(_))), "PUT bucket ?{q}");
        }
        assert!(matches!(op("DELETE", "/lake", None), Err(ClassifyError::NotImplemented(_))));
        assert!(matches!(op("POST", "/lake/k", Some("restore")), Err(ClassifyError::NotImplemented(_))));
    }

    #[test]
    fn path_tricks_are_refused() {
        for path in [
            "/lake/sales/../hr/x",
            "/lake/sales/%2E%2E/hr/x",
            "/lake/sales%2F..%2Fhr/x",
            "/lake/sales/%252E%252E/hr/x",
            "/lake%2Fhr/x",
            "/lake/sales//x",
            "/lake/sales/%00x",
            "/lake/sales/a%5C..%5Cb",
        ] {
            assert!(op("GET", path, None).is_err(), "{path}");
        }
    }

    #[test]
    fn a_percent_left_after_decoding_is_part_of_the_key_as_hive_writes_it() {
        let o = op("PUT", "/lake/sales/ts%3D2024-01-01%2000%253A00%253A00/part-0.parquet", None).unwrap();
        assert_eq!(o.key.as_deref(), Some("sales/ts=2024-01-01 00%3A00%3A00/part-0.parquet"));
        for key in ["sales/p=a%252Fb/x", "sales/100%25", "sales/50%", "sales/%zz", "sales/a%25%25b"] {
            assert!(op("GET", &format!("/lake/{key}"), None).is_ok(), "{key}");
        }
        let l = op("GET", "/lake", Some("list-type=2&prefix=sales%2Fts%3D2024-01-01%2000%253A")).unwrap();
        assert_eq!(l.prefix, "sales/ts=2024-01-01 00%3A");
    }

    #[test]
    fn a_key_that_a_second_decoding_would_turn_into_a_path_step_is_refused() {
        for path in [
            "/lake/sales/%252E%252E/hr/x",
            "/lake/sales/..%252Fhr/x",
            "/lake/sales/a%252F..%252F..%252Fhr/x",
            "/lake/%252Fhr/x",
            "/lake/sales/%252e/x",
            "/lake/sales/a%255C..%255Cb",
        ] {
            assert!(matches!(op("GET", path, None), Err(ClassifyError::InvalidKey(_))), "{path}");
        }
        assert!(op("GET", "/lake", Some("prefix=sales%2F%252E%252E%2F")).is_err());
        assert!(check_key("sales/%2E%2E/hr/x").is_err(), "as a DeleteObjects key");
    }

    #[test]
    fn multipart_and_copy_operations_are_told_apart() {
        assert_eq!(op("POST", "/lake/k", Some("uploads")).unwrap().kind, OpKind::CreateMultipartUpload);
        assert_eq!(op("PUT", "/lake/k", Some("partNumber=1&uploadId=u")).unwrap().kind, OpKind::UploadPart);
        assert_eq!(op("POST", "/lake/k", Some("uploadId=u")).unwrap().kind, OpKind::CompleteMultipartUpload);
        assert_eq!(op("DELETE", "/lake/k", Some("uploadId=u")).unwrap().kind, OpKind::AbortMultipartUpload);
        let mut h = http::HeaderMap::new();
        h.insert("x-amz-copy-source", http::HeaderValue::from_static("/lake/sales/a%20b"));
        let c = classify(&http::Method::PUT, None, "/lake/sales/c", None, &h, &HostStyle::default()).unwrap();
        assert_eq!(c.kind, OpKind::CopyObject);
        assert_eq!(c.copy_source, Some(("lake".into(), "sales/a b".into())));
        h.insert("x-amz-copy-source", http::HeaderValue::from_static("/lake/sales/../hr/x"));
        assert!(classify(&http::Method::PUT, None, "/lake/sales/c", None, &h, &HostStyle::default()).is_err());
    }

    #[test]
    fn a_bare_put_of_a_bucket_is_create_bucket_decided_on_the_bucket() {
        let o = op("PUT", "/lake", None).unwrap();
        assert_eq!((o.kind, o.bucket.as_deref(), o.key.as_deref()), (OpKind::CreateBucket, Some("lake"), None));
        assert_eq!(o.kind.action(), "s3:CreateBucket");
        assert_eq!(o.resource().unwrap(), Resource::prefix("lake", "").unwrap());
        let style = HostStyle { virtual_host_domains: vec!["s3.localhost".into()] };
        let h = http::HeaderMap::new();
        let v = classify(&http::Method::PUT, Some("lake.s3.localhost:9000"), "/", None, &h, &style).unwrap();
        assert_eq!((v.kind, v.bucket.as_deref()), (OpKind::CreateBucket, Some("lake")));
        assert!(matches!(op("DELETE", "/lake", None), Err(ClassifyError::NotImplemented(_))));
    }

    #[test]
    fn an_empty_delimiter_is_no_delimiter_on_every_listing() {
        for (query, kind) in [
            ("list-type=2&prefix=sales%2F&delimiter=", OpKind::ListObjectsV2),
            ("prefix=sales%2F&delimiter=", OpKind::ListObjectsV1),
            ("uploads&delimiter=", OpKind::ListMultipartUploads),
        ] {
            let o = op("GET", "/lake", Some(query)).unwrap();
            assert_eq!(o.kind, kind);
            assert_eq!(o.param("delimiter"), None, "{query}");
        }
        let o = op("GET", "/lake", Some("list-type=2&delimiter=%2F")).unwrap();
        assert_eq!(o.param("delimiter"), Some("/"));
    }
}

//! GetObject on the embedded store, read straight from s3s-fs's files.
//!
//! s3s-fs answers a GET with six blocking-pool round trips (open, stat, two metadata files, their existence
//! checks) and streams the body in 4 KiB reads, each one more round trip: a 4 KiB object cost more in
//! scheduling than in bytes, and a 256 MiB object took 65,536 reads. Here the file is opened, the two metadata
//! files beside it read (or their parsed copies taken while the files are unchanged: [`AttributeFiles`]) and,
//! for a small object, the bytes themselves, at once on the runtime's thread; a large
//! body is read in 1 MiB positioned reads on the blocking pool from the file already open, so the bytes sent are
//! the bytes of the file whose size and ETag the headers state, even if the object is replaced meanwhile. A
//! plain GET is also answered without s3s's routing ([`plain_get`]).
//!
//! The files are s3s-fs's own layout (s3s-fs is pinned to one version) for the key's stored name
//! ([`super::key_index::stored_key`]): the object at `<root>/<bucket>/<stored name>`, its attributes (content
//! type, user metadata, ...) in `<root>/.bucket-<b64>.object-<b64>.metadata.json` and its ETag and checksums in
//! `<root>/.bucket-<b64>.object-<b64>.internal.json`, names in unpadded URL-safe base64 of the stored name. The tests compare every header against s3s-fs's own answer for the same object.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::ops::Range as Span;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use md5::{Digest, Md5};
use s3s::dto::{ETag, ETagCondition, GetObjectOutput, Range, StreamingBlob, Timestamp, TimestampFormat};
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::conditions::{Preconditions, unix_seconds};
use super::kept_json::KeptJson;
use super::key_index::{STORED_KEY_LEN, push_stored_key, stored_key};
use super::store_dir::StoreDir;

/// Bodies up to this size are read where the file is opened, on the runtime's thread; larger ones in
/// [`CHUNK_BYTES`] reads on the blocking pool.
const INLINE_BYTES: u64 = 64 * 1024;
/// Size of each positioned read of a larger body (two of them in memory per transfer: see [`chunks`]).
const CHUNK_BYTES: u64 = 512 * 1024;
/// Largest metadata file read; s3s-fs writes a few hundred bytes.
const MAX_METADATA_BYTES: u64 = 1024 * 1024;

/// The attributes s3s-fs stores beside an object (its `ObjectAttributes`, written the same way by
/// [`super::object_write`]); unknown fields are ignored.
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
pub(super) struct StoredAttributes {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) user_metadata: Option<HashMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content_encoding: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content_disposition: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content_language: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) cache_control: Option<String>,
    /// In s3s's `DateTime` form (`2026-12-02T03:04:05.000Z`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) website_redirect_location: Option<String>,
}

/// How a GET finds the store's files: by their names below the store's root, held open ([`StoreDir`]), with the
/// parsed attribute files kept while unchanged on disk ([`KeptJson`]). One per store, shared by both roads of a
/// GET.
pub(super) struct AttributeFiles {
    dir: StoreDir,
    metadata: KeptJson<StoredAttributes>,
    internal: KeptJson<serde_json::Map<String, serde_json::Value>>,
}

impl AttributeFiles {
    /// For the store under `root` (which must exist).
    pub(super) fn at(root: &Path) -> std::io::Result<Self> {
        Ok(Self { dir: StoreDir::open(root)?, metadata: KeptJson::default(), internal: KeptJson::default() })
    }
}

/// Reads `bucket/key` for a GET with an optional range, if its conditional headers hold.
pub(super) async fn get_object(
    files: &AttributeFiles,
    bucket: &str,
    key: &str,
    range: Option<Range>,
    part_number: Option<i32>,
    conditions: Preconditions,
) -> S3Result<GetObjectOutput> {
    let names = ObjectNames::of(bucket, key)?;
    // Opening the object and reading its two attribute files (a few hundred bytes each) are done here, on the
    // runtime's thread: from the page cache they take microseconds, less than handing them to the blocking pool
    // and waking this task again (two thread switches; 4 KiB GETs went from ~19,000 to ~30,000 a second on two
    // cores without them, docs/benchmarks.md). What can take long stays on the blocking pool: hashing an object
    // stored without an ETag, and bodies larger than INLINE_BYTES.
    let found = find(&names, files)?;
    let e_tag = found.e_tag().await?;
    Ok(found.select(e_tag, range, part_number, &conditions)?.into_output())
}

/// The ETag of the object `bucket/key` (`NoSuchKey` when there is none), for a write's `If-Match`.
pub(super) async fn e_tag(files: &AttributeFiles, bucket: &str, key: &str) -> S3Result<String> {
    find(&ObjectNames::of(bucket, key)?, files)?.e_tag().await
}

/// The request headers a plain GET may carry and still be answered by [`plain_get`].
const PLAIN_GET_HEADERS: [http::HeaderName; 5] = [
    http::header::RANGE,
    http::header::IF_MATCH,
    http::header::IF_NONE_MATCH,
    http::header::IF_MODIFIED_SINCE,
    http::header::IF_UNMODIFIED_SINCE,
];

/// A GetObject of a whole object or one byte range, answered without s3s's routing: s3s would encode the
/// request again, route it, parse it into its input type and serialise the output back into a response, about a
/// quarter of the CPU time of a 4 KiB GET. `None` when the request carries anything else (a query, any other
/// header, a header twice or in a form s3s would refuse) or the answer is not a plain success (a missing
/// object, a failed condition, metadata that needs encoding): the caller then sends the request through s3s,
/// which answers every such case in S3's own form. The store is read the same way on both roads.
pub(super) async fn plain_get(
    files: &AttributeFiles,
    bucket: &str,
    key: &str,
    headers: &http::HeaderMap,
) -> Option<http::Response<s3s::Body>> {
    let (range, conditions) = plain_request(headers)?;
    let output = get_object(files, bucket, key, range, None, conditions).await.ok()?;
    serialize(output)
}

/// The range and conditions of a plain GET's headers, read as s3s reads them; `None` for anything else.
fn plain_request(headers: &http::HeaderMap) -> Option<(Option<Range>, Preconditions)> {
    if headers.keys().any(|name| !PLAIN_GET_HEADERS.contains(name)) {
        return None;
    }
    // s3s refuses a header sent twice and reads an empty one as absent.
    let one = |name: http::header::HeaderName| -> Option<Option<&str>> {
        let mut values = headers.get_all(name).iter();
        match (values.next(), values.next()) {
            (None, _) => Some(None),
            (Some(value), None) if value.is_empty() => Some(None),
            (Some(value), None) => value.to_str().ok().map(Some),
            (Some(_), Some(_)) => None,
        }
    };
    let date = |value: Option<&str>| match value {
        None => Some(None),
        Some(text) => Timestamp::parse(TimestampFormat::HttpDate, text).ok().map(Some),
    };
    let e_tags = |value: Option<&str>| match value {
        None => Some(None),
        Some(text) => ETagCondition::parse_http_header(text.as_bytes()).ok().map(Some),
    };
    let range = match one(http::header::RANGE)? {
        None => None,
        Some(text) => Some(Range::parse(text).ok()?),
    };
    let conditions = Preconditions {
        if_match: e_tags(one(http::header::IF_MATCH)?)?,
        if_none_match: e_tags(one(http::header::IF_NONE_MATCH)?)?,
        if_modified_since: date(one(http::header::IF_MODIFIED_SINCE)?)?,
        if_unmodified_since: date(one(http::header::IF_UNMODIFIED_SINCE)?)?,
    };
    Some((range, conditions))
}

/// The response s3s makes of the fields [`Opened::into_output`] fills (its `GetObject::serialize_http`, which
/// is not public), or `None` where s3s would have to encode a value first (user metadata outside printable
/// ASCII, which it sends RFC 2047-encoded).
fn serialize(output: GetObjectOutput) -> Option<http::Response<s3s::Body>> {
    use http::header;

    let status = if output.content_range.is_some() { http::StatusCode::PARTIAL_CONTENT } else { http::StatusCode::OK };
    let mut response = http::Response::new(output.body.map_or_else(s3s::Body::empty, s3s::Body::from));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let mut text = |name: header::HeaderName, value: Option<String>| -> Option<()> {
        if let Some(value) = value {
            headers.insert(name, http::HeaderValue::try_from(value).ok()?);
        }
        Some(())
    };
    text(header::CACHE_CONTROL, output.cache_control)?;
    text(header::HeaderName::from_static("x-amz-checksum-crc32"), output.checksum_crc32)?;
    text(header::HeaderName::from_static("x-amz-checksum-crc32c"), output.checksum_crc32c)?;
    text(header::HeaderName::from_static("x-amz-checksum-crc64nvme"), output.checksum_crc64nvme)?;
    text(header::HeaderName::from_static("x-amz-checksum-sha1"), output.checksum_sha1)?;
    text(header::HeaderName::from_static("x-amz-checksum-sha256"), output.checksum_sha256)?;
    text(header::CONTENT_DISPOSITION, output.content_disposition)?;
    text(header::CONTENT_ENCODING, output.content_encoding)?;
    text(header::CONTENT_LANGUAGE, output.content_language)?;
    text(header::CONTENT_RANGE, output.content_range)?;
    text(header::CONTENT_TYPE, output.content_type)?;
    text(header::HeaderName::from_static("x-amz-website-redirect-location"), output.website_redirect_location)?;
    let headers = response.headers_mut();
    if let Some(length) = output.content_length {
        headers.insert(header::CONTENT_LENGTH, http::HeaderValue::from(length));
    }
    if let Some(count) = output.parts_count {
        headers.insert(header::HeaderName::from_static("x-amz-mp-parts-count"), http::HeaderValue::from(count));
    }
    if let Some(e_tag) = output.e_tag {
        headers.insert(header::ETAG, e_tag.to_http_header().ok()?);
    }
    for (name, time) in [(header::EXPIRES, output.expires), (header::LAST_MODIFIED, output.last_modified)] {
        if let Some(time) = time {
            let mut date = Vec::with_capacity(29);
            time.format(TimestampFormat::HttpDate, &mut date).ok()?;
            headers.insert(name, http::HeaderValue::from_bytes(&date).ok()?);
        }
    }
    for (key, value) in output.metadata.into_iter().flatten() {
        if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return None;
        }
        let name = header::HeaderName::from_bytes(format!("x-amz-meta-{key}").as_bytes()).ok()?;
        headers.insert(name, http::HeaderValue::from_str(&value).ok()?);
    }
    Some(response)
}

/// An object found in the store, with its attributes.
struct Found {
    file: Arc<File>,
    size: u64,
    modified: Option<std::time::SystemTime>,
    attributes: Arc<StoredAttributes>,
    /// The ETag (`e_tag`; absent for objects older s3s-fs versions stored), checksums and part sizes.
    internal: Arc<serde_json::Map<String, serde_json::Value>>,
}

/// An object opened for reading, with what its headers say.
struct Opened {
    file: Arc<File>,
    size: u64,
    span: Span<u64>,
    ranged: bool,
    modified: Option<std::time::SystemTime>,
    /// The parts of a multipart object, when one of them was asked for (`x-amz-mp-parts-count`).
    parts_count: Option<i32>,
    attributes: Arc<StoredAttributes>,
    internal: Arc<serde_json::Map<String, serde_json::Value>>,
    e_tag: String,
    /// The body, when it was small enough to read at once.
    inline: Option<Bytes>,
}

/// Opens the object `names.object` and reads its attribute files.
fn find(names: &ObjectNames, files: &AttributeFiles) -> S3Result<Found> {
    let file = files.dir.open_file(&names.object).map_err(|_| s3_error!(NoSuchKey))?;
    let stat = file.metadata().map_err(internal_error)?;
    if !stat.is_file() {
        return Err(s3_error!(NoSuchKey));
    }
    let attributes = files.metadata.read(&files.dir, &names.metadata)?.unwrap_or_default();
    let internal = files.internal.read(&files.dir, &names.internal)?.unwrap_or_default();
    Ok(Found { file: Arc::new(file), size: stat.len(), modified: stat.modified().ok(), attributes, internal })
}

impl Found {
    /// The stored ETag; for an object stored without one (older s3s-fs versions), the MD5 of its bytes, as
    /// s3s-fs answers.
    async fn e_tag(&self) -> S3Result<String> {
        if let Some(e_tag) = self.internal.get("e_tag").and_then(serde_json::Value::as_str) {
            return Ok(e_tag.to_owned());
        }
        let file = self.file.clone();
        tokio::task::spawn_blocking(move || md5_of(&file)).await.map_err(internal_error)?.map_err(internal_error)
    }

    /// The span a GET asks for, if its conditions hold; the body itself when it is small.
    fn select(
        self,
        e_tag: String,
        range: Option<Range>,
        part_number: Option<i32>,
        conditions: &Preconditions,
    ) -> S3Result<Opened> {
        let Found { file, size, modified, attributes, internal } = self;
        // Conditions before the range (RFC 9110 §13.2.2): a failed one is 412 or 304 even for an unsatisfiable
        // range.
        if !conditions.is_empty() {
            conditions.evaluate(&e_tag, modified.map(unix_seconds))?;
        }
        let mut parts_count = None;
        let (span, ranged) = match (range, part_number) {
            (Some(_), Some(_)) => {
                return Err(s3_error!(
                    InvalidRequest,
                    "Cannot specify both Range header and partNumber query parameter"
                ));
            }
            (None, Some(number)) => {
                let part = part_span(&internal, &e_tag, size, number)?;
                parts_count = part.count;
                (part.span, true)
            }
            (None, None) => (0..size, false),
            (Some(range), None) => {
                let span = range.check(size)?;
                // A suffix of an empty object is as unsatisfiable as any other range of it.
                if span.is_empty() {
                    return Err(s3_error!(InvalidRange));
                }
                (span, true)
            }
        };
        let inline = if span.end - span.start <= INLINE_BYTES { Some(read_span(&file, &span)?) } else { None };
        Ok(Opened { file, size, span, ranged, modified, parts_count, attributes, internal, e_tag, inline })
    }
}

impl Opened {
    fn into_output(self) -> GetObjectOutput {
        let length = self.span.end - self.span.start;
        let checksum = |name: &str| {
            // S3 leaves out the whole-object checksums when only a part of the object is sent.
            (!self.ranged || length == self.size)
                .then(|| self.internal.get(name).and_then(serde_json::Value::as_str).map(str::to_owned))
                .flatten()
        };
        let content_range =
            self.ranged.then(|| format!("bytes {}-{}/{}", self.span.start, self.span.end.saturating_sub(1), self.size));
        let a = &self.attributes;
        let expires = a.expires.as_deref().and_then(|s| Timestamp::parse(TimestampFormat::DateTime, s).ok());
        let body = match self.inline {
            Some(bytes) => StreamingBlob::wrap(futures::stream::once(async move { Ok::<_, std::io::Error>(bytes) })),
            None => StreamingBlob::wrap(chunks(self.file, self.span.clone())),
        };
        GetObjectOutput {
            body: Some(body),
            content_length: i64::try_from(length).ok(),
            content_range,
            parts_count: self.parts_count,
            last_modified: self.modified.map(Timestamp::from),
            metadata: a.user_metadata.clone(),
            content_encoding: a.content_encoding.clone(),
            content_type: a.content_type.clone(),
            content_disposition: a.content_disposition.clone(),
            content_language: a.content_language.clone(),
            cache_control: a.cache_control.clone(),
            expires,
            website_redirect_location: a.website_redirect_location.clone(),
            e_tag: Some(ETag::Strong(self.e_tag)),
            checksum_crc32: checksum("checksum_crc32"),
            checksum_crc32c: checksum("checksum_crc32c"),
            checksum_sha1: checksum("checksum_sha1"),
            checksum_sha256: checksum("checksum_sha256"),
            checksum_crc64nvme: checksum("checksum_crc64nvme"),
            ..Default::default()
        }
    }
}

/// Where Lakegate records the sizes of a multipart object's parts in s3s-fs's internal attributes, at
/// CompleteMultipartUpload (s3s-fs keeps no part boundaries).
pub(super) const PART_SIZES: &str = "lakegate_part_sizes";

/// One part of an object (GetObject or HeadObject with `partNumber`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Part {
    pub(super) span: Span<u64>,
    /// The object's number of parts, for a multipart object (S3 sends `x-amz-mp-parts-count` only for those).
    pub(super) count: Option<i32>,
}

/// The bytes of part `number` of an object of `size` bytes, as S3 reads a part: an object uploaded whole is its
/// own part 1; a multipart object's parts have the sizes recorded when it was completed. A part the object does
/// not have is `416 InvalidPartNumber`. A multipart object completed before Lakegate recorded part sizes cannot
/// be read by part: `501 NotImplemented`, never a wrong span.
pub(super) fn part_span(
    internal: &serde_json::Map<String, serde_json::Value>,
    e_tag: &str,
    size: u64,
    number: i32,
) -> S3Result<Part> {
    let no_such_part = || {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("InvalidPartNumber".into()),
            "The requested partnumber is not satisfiable",
        );
        e.set_status_code(http::StatusCode::RANGE_NOT_SATISFIABLE);
        e
    };
    let index = usize::try_from(number).ok().and_then(|n| n.checked_sub(1)).ok_or_else(no_such_part)?;
    let sizes: Option<Vec<u64>> = internal
        .get(PART_SIZES)
        .and_then(serde_json::Value::as_array)
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect());
    let (sizes, count) = match sizes {
        Some(sizes) => {
            let count = i32::try_from(sizes.len()).ok();
            (sizes, count)
        }
        None if e_tag.contains('-') => {
            return Err(s3_error!(NotImplemented, "This multipart object cannot be read by part number"));
        }
        None => (vec![size], None),
    };
    let part = *sizes.get(index).ok_or_else(no_such_part)?;
    let start: u64 = sizes.iter().take(index).sum();
    let end = start.saturating_add(part);
    if end > size {
        return Err(internal_error("the recorded part sizes do not fit the object"));
    }
    Ok(Part { span: start..end, count })
}

/// The body of a large span: [`CHUNK_BYTES`] positioned reads on the blocking pool, each next one started as
/// soon as one is handed on, so that reading a chunk from the page cache overlaps sending the one before it to
/// the client. One read ahead, no more: a transfer holds at most two chunks, the one being sent and the one
/// being read, whatever the object's size; a client that stops reading stops the reads after the one under way.
fn chunks(
    file: Arc<File>,
    span: Span<u64>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    struct ReadAhead {
        file: Arc<File>,
        /// What is not yet being read.
        rest: Span<u64>,
        reading: Option<tokio::task::JoinHandle<S3Result<Bytes>>>,
    }
    impl ReadAhead {
        fn start_next(&mut self) -> Option<tokio::task::JoinHandle<S3Result<Bytes>>> {
            if self.rest.is_empty() {
                return None;
            }
            let next = self.rest.start..self.rest.end.min(self.rest.start.saturating_add(CHUNK_BYTES));
            self.rest.start = next.end;
            let file = self.file.clone();
            Some(tokio::task::spawn_blocking(move || read_span(&file, &next)))
        }
    }
    let ahead = ReadAhead { file, rest: span, reading: None };
    futures::stream::try_unfold(ahead, |mut ahead| async move {
        let Some(reading) = ahead.reading.take().or_else(|| ahead.start_next()) else {
            return Ok(None);
        };
        let bytes = reading.await.map_err(std::io::Error::other)?.map_err(|e| std::io::Error::other(e.to_string()))?;
        ahead.reading = ahead.start_next();
        Ok(Some((bytes, ahead)))
    })
}

/// Exactly the bytes of `span`; a file that shrank under the read is an error, never a short body.
fn read_span(file: &File, span: &Span<u64>) -> S3Result<Bytes> {
    let len = usize::try_from(span.end - span.start).map_err(internal_error)?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, span.start).map_err(internal_error)?;
    Ok(Bytes::from(buf))
}

/// The hex MD5 of a file's bytes (an S3 ETag of a single-part upload).
pub(super) fn md5_of(mut file: &File) -> std::io::Result<String> {
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(md5.finalize()));
        }
        md5.update(buf.get(..n).unwrap_or_default());
    }
}

/// A small JSON file beside the object; `None` when there is none.
pub(super) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> S3Result<Option<T>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(internal_error(e)),
    };
    let mut text = Vec::new();
    file.take(MAX_METADATA_BYTES).read_to_end(&mut text).map_err(internal_error)?;
    serde_json::from_slice(&text).map(Some).map_err(internal_error)
}

/// `<root>/<bucket>/<stored name of key>`, refusing a bucket that is not one plain path segment (the front
/// refuses such names already; this keeps a read inside the store whatever reaches it).
pub(super) fn object_path(root: &Path, bucket: &str, key: &str) -> S3Result<PathBuf> {
    check_names(bucket, key)?;
    Ok(root.join(bucket).join(stored_key(key)))
}

/// An object's file and its two attribute files, named below the store's root, from one hash of its key (every
/// GET finds all three).
pub(super) struct ObjectNames {
    pub(super) object: String,
    pub(super) metadata: String,
    pub(super) internal: String,
}

impl ObjectNames {
    /// The files of `bucket/key`; refuses what [`object_path`] refuses, so that every name stays below the root.
    ///
    /// Each name is written once into a string of its final length: built with `format!` and base64 strings of
    /// their own, the three took about nine allocations on every GET, a tenth of a 4 KiB GET's (docs/benchmarks.md).
    pub(super) fn of(bucket: &str, key: &str) -> S3Result<Self> {
        check_names(bucket, key)?;
        let mut object = String::with_capacity(bucket.len() + 1 + STORED_KEY_LEN);
        object.push_str(bucket);
        object.push('/');
        push_stored_key(&mut object, key);
        let stored = &object[bucket.len() + 1..];
        // `.bucket-<bucket>.object-<stored>.` is the same for both attribute files; each adds its kind.
        let encoded = |text: &str| base64::encoded_len(text.len(), false).unwrap_or(0);
        let stem_len = ".bucket-".len() + encoded(bucket) + ".object-".len() + encoded(stored) + ".".len();
        let mut metadata = String::with_capacity(stem_len + "metadata.json".len());
        metadata.push_str(".bucket-");
        URL_SAFE_NO_PAD.encode_string(bucket, &mut metadata);
        metadata.push_str(".object-");
        URL_SAFE_NO_PAD.encode_string(stored, &mut metadata);
        metadata.push('.');
        let mut internal = String::with_capacity(metadata.len() + "internal.json".len());
        internal.push_str(&metadata);
        internal.push_str("internal.json");
        metadata.push_str("metadata.json");
        Ok(ObjectNames { object, metadata, internal })
    }
}

/// The [`ObjectNames`] of an object as paths, for the store's writers.
pub(super) struct ObjectPaths {
    pub(super) object: PathBuf,
    pub(super) metadata: PathBuf,
    pub(super) internal: PathBuf,
}

impl ObjectPaths {
    /// The files of `bucket/key` under `root`; refuses what [`object_path`] refuses.
    pub(super) fn of(root: &Path, bucket: &str, key: &str) -> S3Result<Self> {
        let names = ObjectNames::of(bucket, key)?;
        Ok(ObjectPaths {
            object: root.join(names.object),
            metadata: root.join(names.metadata),
            internal: root.join(names.internal),
        })
    }
}

/// Refuses an empty key and a bucket that is not one plain path segment.
fn check_names(bucket: &str, key: &str) -> S3Result<()> {
    let mut parts = Path::new(bucket).components();
    if key.is_empty() || !(matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none()) {
        return Err(s3_error!(NoSuchKey));
    }
    Ok(())
}

/// s3s-fs's `metadata` or `internal` attribute file of an object (or `upload-<id>.metadata`, of an upload).
pub(super) fn metadata_path(root: &Path, bucket: &str, key: &str, kind: &str) -> PathBuf {
    attribute_file(root, &URL_SAFE_NO_PAD.encode(bucket), &URL_SAFE_NO_PAD.encode(stored_key(key)), kind)
}

/// `<root>/.bucket-<bucket>.object-<stored>.<kind>.json`, names already in base64.
pub(super) fn attribute_file(root: &Path, bucket: &str, stored: &str, kind: &str) -> PathBuf {
    root.join(attribute_name(bucket, stored, kind))
}

/// The name of an attribute file below the root (see [`attribute_file`]).
fn attribute_name(bucket: &str, stored: &str, kind: &str) -> String {
    format!(".bucket-{bucket}.object-{stored}.{kind}.json")
}

pub(super) fn internal_error(e: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use futures::TryStreamExt;

    use super::*;

    #[test]
    fn a_gets_names_are_the_files_the_stores_writers_use() {
        let root = Path::new("/store");
        for (bucket, key) in
            [("b", "k"), ("my-bucket", "a/b/c.parquet"), ("x.y", "ключ with spaces/✓"), ("b", "=?&%2F")]
        {
            let names = ObjectNames::of(bucket, key).expect("names");
            assert_eq!(root.join(&names.object), object_path(root, bucket, key).expect("path"));
            assert_eq!(root.join(&names.metadata), metadata_path(root, bucket, key, "metadata"));
            assert_eq!(root.join(&names.internal), metadata_path(root, bucket, key, "internal"));
            for name in [&names.object, &names.metadata, &names.internal] {
                assert_eq!(name.len(), name.capacity(), "{name} was built at its final length");
            }
        }
        assert!(ObjectNames::of("..", "k").is_err() && ObjectNames::of("b", "").is_err());
    }

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        let opened = Arc::new(File::open(file.path()).unwrap());
        (file, opened)
    }

    /// A large body is the span's bytes exactly, whatever chunk boundaries it starts and ends between.
    #[tokio::test]
    async fn a_large_body_is_its_span_in_chunks_read_one_ahead() {
        let chunk = usize::try_from(CHUNK_BYTES).unwrap();
        let bytes: Vec<u8> = (0..3 * chunk + 17).map(|i| (i % 251) as u8).collect();
        let (_kept, file) = file_of(&bytes);
        let whole = 0..bytes.len() as u64;
        let odd = 5..(2 * CHUNK_BYTES + 3);
        for span in [whole, odd, CHUNK_BYTES..2 * CHUNK_BYTES] {
            let chunks: Vec<Bytes> = chunks(file.clone(), span.clone()).try_collect().await.unwrap();
            assert!(chunks.iter().all(|c| c.len() as u64 <= CHUNK_BYTES));
            let expected = bytes.get(usize::try_from(span.start).unwrap()..usize::try_from(span.end).unwrap());
            assert_eq!(Some(chunks.concat().as_slice()), expected);
        }
    }

    /// A file cut short while it is being sent ends the body with an error (the client sees a broken transfer),
    /// never with fewer bytes than the length the response announced; the read already ahead included.
    #[tokio::test]
    async fn a_file_cut_short_under_a_read_ends_the_body_with_an_error() {
        let chunk = usize::try_from(CHUNK_BYTES).unwrap();
        let (kept, file) = file_of(&vec![7u8; 4 * chunk]);
        let mut body = Box::pin(chunks(file, 0..4 * CHUNK_BYTES));
        let first = body.try_next().await.unwrap().unwrap();
        assert_eq!(first.len(), chunk);
        // The second chunk is being read already; the file loses its last two.
        kept.as_file().set_len(2 * CHUNK_BYTES).unwrap();
        let mut sent = first.len();
        let error = loop {
            match body.try_next().await {
                Ok(Some(bytes)) => sent += bytes.len(),
                Ok(None) => panic!("the body ended quietly after {sent} of {} bytes", 4 * chunk),
                Err(e) => break e,
            }
        };
        assert!(sent <= 2 * chunk, "{sent} bytes sent from a file of {}", 2 * chunk);
        assert!(!error.to_string().is_empty());
    }
}

//! GetObject on the embedded store, read straight from s3s-fs's files.
//!
//! s3s-fs answers a GET with six blocking-pool round trips (open, stat, two metadata files, their existence
//! checks) and streams the body in 4 KiB reads, each one more round trip: a 4 KiB object cost more in
//! scheduling than in bytes, and a 256 MiB object took 65,536 reads. Here one blocking task opens the file,
//! reads the two metadata files beside it and, for a small object, the bytes themselves; a large body is read
//! in 1 MiB positioned reads from the file already open, so the bytes sent are the bytes of the file whose size
//! and ETag the headers state, even if the object is replaced meanwhile.
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
use s3s::dto::{ETag, GetObjectOutput, Range, StreamingBlob, Timestamp, TimestampFormat};
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};

use super::conditions::{Preconditions, unix_seconds};
use super::key_index::stored_key;

/// Bodies up to this size are read in the same blocking task that opens the file.
const INLINE_BYTES: u64 = 256 * 1024;
/// Size of each positioned read of a larger body.
const CHUNK_BYTES: u64 = 1024 * 1024;
/// Largest metadata file read; s3s-fs writes a few hundred bytes.
const MAX_METADATA_BYTES: u64 = 1024 * 1024;

/// The attributes s3s-fs stores beside an object (its `ObjectAttributes`); unknown fields are ignored.
#[derive(Debug, Default, serde::Deserialize)]
struct StoredAttributes {
    user_metadata: Option<HashMap<String, String>>,
    content_encoding: Option<String>,
    content_type: Option<String>,
    content_disposition: Option<String>,
    content_language: Option<String>,
    cache_control: Option<String>,
    expires: Option<String>,
    website_redirect_location: Option<String>,
}

/// Reads `bucket/key` under `root` for a GET with an optional range, if its conditional headers hold.
pub(super) async fn get_object(
    root: &Path,
    bucket: &str,
    key: &str,
    range: Option<Range>,
    part_number: Option<i32>,
    conditions: Preconditions,
) -> S3Result<GetObjectOutput> {
    let object = object_path(root, bucket, key)?;
    // The stored name is hashed once for the object and both attribute files.
    let stored = URL_SAFE_NO_PAD.encode(stored_key(key));
    let bucket = URL_SAFE_NO_PAD.encode(bucket);
    let names =
        (attribute_file(root, &bucket, &stored, "metadata"), attribute_file(root, &bucket, &stored, "internal"));
    let opened =
        tokio::task::spawn_blocking(move || open(&object, &names.0, &names.1, range, part_number, &conditions))
            .await
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))??;
    Ok(opened.into_output())
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
    attributes: StoredAttributes,
    internal: serde_json::Map<String, serde_json::Value>,
    e_tag: String,
    /// The body, when it was small enough to read at once.
    inline: Option<Bytes>,
}

/// Opens the object at `object`.
fn open(
    object: &Path,
    metadata: &Path,
    internal: &Path,
    range: Option<Range>,
    part_number: Option<i32>,
    conditions: &Preconditions,
) -> S3Result<Opened> {
    let file = File::open(object).map_err(|_| s3_error!(NoSuchKey))?;
    let stat = file.metadata().map_err(internal_error)?;
    if !stat.is_file() {
        return Err(s3_error!(NoSuchKey));
    }
    let size = stat.len();
    let attributes: StoredAttributes = read_json(metadata)?.unwrap_or_default();
    let internal: serde_json::Map<String, serde_json::Value> = read_json(internal)?.unwrap_or_default();
    let e_tag = match internal.get("e_tag").and_then(serde_json::Value::as_str) {
        Some(e_tag) => e_tag.to_owned(),
        // Objects stored without an ETag (older s3s-fs versions): the MD5 of the content, as s3s-fs does.
        None => md5_of(&file).map_err(internal_error)?,
    };
    let modified = stat.modified().ok();
    // Conditions before the range (RFC 9110 §13.2.2): a failed one is 412 or 304 even for an unsatisfiable range.
    if !conditions.is_empty() {
        conditions.evaluate(&e_tag, modified.map(unix_seconds))?;
    }
    let mut parts_count = None;
    let (span, ranged) = match (range, part_number) {
        (Some(_), Some(_)) => {
            return Err(s3_error!(InvalidRequest, "Cannot specify both Range header and partNumber query parameter"));
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
    Ok(Opened { file: Arc::new(file), size, span, ranged, modified, parts_count, attributes, internal, e_tag, inline })
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

/// The body of a large span: 1 MiB positioned reads, each on the blocking pool, one at a time (the client's
/// pace sets how many are read ahead: none).
fn chunks(
    file: Arc<File>,
    span: Span<u64>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    futures::stream::try_unfold((file, span), |(file, span)| async move {
        if span.is_empty() {
            return Ok(None);
        }
        let next = span.start..span.end.min(span.start.saturating_add(CHUNK_BYTES));
        let (file, bytes) = tokio::task::spawn_blocking(move || {
            let bytes = read_span(&file, &next).map_err(|e| std::io::Error::other(e.to_string()))?;
            Ok::<_, std::io::Error>((file, bytes))
        })
        .await
        .map_err(std::io::Error::other)??;
        let start = span.start + bytes.len() as u64;
        Ok(Some((bytes, (file, start..span.end))))
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
    stored_path(root, bucket, key, &stored_key(key))
}

/// [`object_path`] with the key's stored name already computed.
fn stored_path(root: &Path, bucket: &str, key: &str, stored: &str) -> S3Result<PathBuf> {
    let mut parts = Path::new(bucket).components();
    if key.is_empty() || !(matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none()) {
        return Err(s3_error!(NoSuchKey));
    }
    Ok(root.join(bucket).join(stored))
}

/// s3s-fs's `metadata` or `internal` attribute file of an object (or `upload-<id>.metadata`, of an upload).
pub(super) fn metadata_path(root: &Path, bucket: &str, key: &str, kind: &str) -> PathBuf {
    attribute_file(root, &URL_SAFE_NO_PAD.encode(bucket), &URL_SAFE_NO_PAD.encode(stored_key(key)), kind)
}

/// `<root>/.bucket-<bucket>.object-<stored>.<kind>.json`, names already in base64.
pub(super) fn attribute_file(root: &Path, bucket: &str, stored: &str, kind: &str) -> PathBuf {
    root.join(format!(".bucket-{bucket}.object-{stored}.{kind}.json"))
}

pub(super) fn internal_error(e: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, e.to_string())
}

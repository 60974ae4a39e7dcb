//! `s3s-fs` behind the S3 operations the front forwards, with its departures from S3 put right:
//!
//! - s3s-fs never sees a key, only its stored name ([`super::key_index`]): a key and the keys below it (`a/b`
//!   and `a/b/c`) are all objects, a key ending in `/` holds bytes like any other, and keys are as long as S3's
//!   1024 bytes (s3s-fs's layout made `a/b` a directory, `a/b/` an empty directory, and failed on keys over
//!   about 160 bytes);
//! - listings are answered from the key index, in S3's byte order, with ETags and storage class (s3s-fs walked
//!   the bucket's directories on every listing and showed neither);
//! - `GetObject` is read from s3s-fs's files by [`super::object_file`], which is many times faster and answers
//!   a suffix range longer than the object (`bytes=-N`, N > size: what `object_store` readers such as polars ask
//!   for first) with the whole object as `206` and `Content-Range: bytes 0-(size-1)/size`, where s3s-fs fails
//!   (500, and an arithmetic overflow on an empty object);
//! - `GetObject` and `HeadObject` evaluate their conditional headers ([`super::conditions`]), which s3s-fs
//!   ignored (it sent the object with 200);
//! - `HeadObject` with a `Range` answers `206` with the range's `Content-Length` and `Content-Range`, or `416`;
//! - listings with `encoding-type=url` have their keys, prefixes, delimiter and markers URL-encoded, where s3s-fs
//!   echoed the encoding type over raw keys (which SDKs would then decode a second time);
//! - `PutObject` and `UploadPart` are written by [`super::object_write`], which compares the body with its
//!   `Content-MD5` and checksums before anything takes its place (s3s-fs renamed the new object into place first,
//!   so a PUT refused as `BadDigest` had replaced the object, and never compared a part's `Content-MD5`).
//!
//! Only the operations the front can forward are passed on; every other one is `NotImplemented` here too.

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CommonPrefix, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput, CopySource, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteObjectInput, DeleteObjectOutput,
    DeleteObjectsInput, DeleteObjectsOutput, ETag, ETagCondition, EncodingType, GetBucketLocationInput,
    GetBucketLocationOutput, GetObjectInput, GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput,
    HeadObjectOutput, Initiator, ListBucketsInput, ListBucketsOutput, ListObjectsInput, ListObjectsOutput,
    ListObjectsV2Input, ListObjectsV2Output, ListPartsInput, ListPartsOutput, MetadataDirective, Object,
    ObjectStorageClass, Owner, PutObjectInput, PutObjectOutput, StorageClass, TimestampFormat, UploadPartCopyInput,
    UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::conditions::{Preconditions, unix_seconds};
use super::encode_key;
use super::key_index::{KeyIndex, ListQuery, Listed, Listing, stored_key};
use super::object_file::{StoredAttributes, internal_error};
use super::object_write::{self, Claimed};
use super::uploads::OWNER;

/// The embedded store's S3 implementation: s3s-fs, corrected where it is not S3.
pub(super) struct FsStore {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    index: Arc<KeyIndex>,
    /// The attribute files read by GETs, shared with the direct road.
    files: Arc<super::object_file::AttributeFiles>,
    /// The uploads completed last, to answer a repeated CompleteMultipartUpload as S3 does: with the same result.
    /// SDKs retry a complete whose answer was lost (a timeout, a reset connection); s3s-fs has forgotten the
    /// upload by then and said it never existed.
    completed: Completions,
}

/// How many completed uploads are remembered for repeated completes.
const REMEMBERED_COMPLETIONS: usize = 1024;

/// S3's largest listing page.
const MAX_KEYS: usize = 1000;

/// A completed upload: its id, bucket, key and the ETag of the object it made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Completed {
    upload_id: String,
    bucket: String,
    key: String,
    e_tag: String,
}

/// The uploads completed last, at most [`REMEMBERED_COMPLETIONS`] since start.
#[derive(Default)]
struct Completions(Mutex<VecDeque<Completed>>);

impl Completions {
    fn remembered(&self) -> std::sync::MutexGuard<'_, VecDeque<Completed>> {
        // The list is only pushed to and read: a panic elsewhere cannot leave it half changed.
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, done: Completed) {
        let mut remembered = self.remembered();
        if remembered.len() >= REMEMBERED_COMPLETIONS {
            remembered.pop_front();
        }
        remembered.push_back(done);
    }

    /// The completion of `upload_id`, if it made `key` in `bucket` and is still remembered.
    fn find(&self, upload_id: &str, bucket: &str, key: &str) -> Option<Completed> {
        self.remembered().iter().find(|c| c.upload_id == upload_id && c.bucket == bucket && c.key == key).cloned()
    }
}

impl FsStore {
    pub(super) fn new(
        fs: s3s_fs::FileSystem,
        root: PathBuf,
        index: Arc<KeyIndex>,
        files: Arc<super::object_file::AttributeFiles>,
    ) -> Self {
        Self { fs, root, index, files, completed: Completions::default() }
    }

    /// `NoSuchBucket` unless `bucket` is a bucket of the store. s3s-fs creates every directory on a key's path,
    /// the bucket's included, so a PutObject, copy or upload into a bucket that does not exist made it.
    async fn require_bucket(&self, bucket: &str) -> S3Result<()> {
        let mut parts = Path::new(bucket).components();
        let single = matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none();
        match tokio::fs::metadata(self.root.join(bucket)).await {
            Ok(meta) if single && meta.is_dir() => Ok(()),
            _ => Err(s3_error!(NoSuchBucket)),
        }
    }

    /// `NoSuchUpload` (404) unless `upload_id` is an upload in progress **of this bucket and key**, as S3
    /// answers. s3s-fs said `400 InvalidRequest` for an id that is not a UUID and `403 AccessDenied` for an
    /// unknown one (which clients read as their own fault or a permission problem), and did not check the key
    /// at all: whoever may write one key and knew the id of an upload to another could complete that upload's
    /// parts into their own key, and read bytes the policy let them write but never read. An upload is s3s-fs's
    /// `.upload-<id>.json` and the attributes it keeps for it under its bucket and the key's stored name.
    async fn require_upload(&self, bucket: &str, key: &str, upload_id: &str) -> S3Result<uuid::Uuid> {
        let id = uuid::Uuid::parse_str(upload_id).map_err(|_| s3_error!(NoSuchUpload))?;
        let of_key = super::object_file::metadata_path(&self.root, bucket, key, &format!("upload-{id}.metadata"));
        for file in [self.root.join(format!(".upload-{id}.json")), of_key] {
            if !tokio::fs::try_exists(&file).await.unwrap_or(false) {
                return Err(s3_error!(NoSuchUpload));
            }
        }
        Ok(id)
    }

    /// S3's conditional writes: `If-None-Match: *` refuses to replace an object (412), `If-Match` requires one
    /// (`NoSuchKey` on a key that holds none, as S3 answers; s3s-fs said 412) whose ETag it names (`*`: any).
    async fn check_overwrite(
        &self,
        bucket: &str,
        key: &str,
        if_match: Option<&ETagCondition>,
        if_none_match: Option<&ETagCondition>,
    ) -> S3Result<()> {
        if if_match.is_none() && if_none_match.is_none_or(|c| !c.is_any()) {
            return Ok(());
        }
        let path = super::object_file::object_path(&self.root, bucket, key)?;
        let exists = tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file());
        let failed = || s3_error!(PreconditionFailed, "At least one of the pre-conditions you specified did not hold");
        if exists && if_none_match.is_some_and(ETagCondition::is_any) {
            return Err(failed());
        }
        match if_match {
            Some(_) if !exists => Err(s3_error!(NoSuchKey)),
            Some(ETagCondition::ETag(expected)) => {
                let current = super::object_file::e_tag(&self.files, bucket, key).await?;
                if ETag::Strong(current).strong_cmp(expected) { Ok(()) } else { Err(failed()) }
            }
            _ => Ok(()),
        }
    }

    /// Records the ETag of an uploaded part, for ListParts.
    async fn record_part(
        &self,
        (bucket, upload_id, number): (String, String, i32),
        e_tag: Option<&ETag>,
    ) -> S3Result<()> {
        let Some(e_tag) = e_tag.map(|e| e.value().to_owned()) else { return Ok(()) };
        self.indexed(move |index| index.record_part(&bucket, &upload_id, number, &e_tag)).await
    }

    /// Runs `f` on the key index off the async threads (it reads files and writes SQLite).
    async fn indexed<T: Send + 'static>(
        &self,
        f: impl FnOnce(&KeyIndex) -> S3Result<T> + Send + 'static,
    ) -> S3Result<T> {
        let index = self.index.clone();
        tokio::task::spawn_blocking(move || f(&index)).await.map_err(internal_error)?
    }

    /// Brings the index in line with what is stored under each of `keys` now, after a write of them.
    async fn refresh(&self, bucket: &str, keys: Vec<String>) -> S3Result<()> {
        let bucket = bucket.to_owned();
        self.indexed(move |index| keys.iter().try_for_each(|key| index.refresh(&bucket, key))).await
    }

    async fn list(&self, bucket: &str, query: OwnedQuery) -> S3Result<Listing> {
        let bucket = bucket.to_owned();
        self.indexed(move |index| {
            let q = ListQuery {
                prefix: &query.prefix,
                delimiter: query.delimiter.as_deref(),
                after: query.after.as_deref(),
                max: query.max,
            };
            index.list(&bucket, q)
        })
        .await
    }
}

/// A [`ListQuery`] that can move to the blocking pool.
struct OwnedQuery {
    prefix: String,
    delimiter: Option<String>,
    after: Option<String>,
    max: usize,
}

/// The page size a listing (of keys or parts) asked for: S3's 1000 at most, and by default.
fn page_size(max_keys: Option<i32>) -> usize {
    max_keys.and_then(|m| usize::try_from(m).ok()).map_or(MAX_KEYS, |m| m.min(MAX_KEYS))
}

/// A V2 continuation token: the last key or common prefix of the page, base64url (opaque to clients, and
/// never a string that XML or a URL would have to escape).
fn continuation_token(last: &str) -> String {
    URL_SAFE_NO_PAD.encode(last)
}

fn after_token(token: &str) -> S3Result<String> {
    URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| s3_error!(InvalidArgument, "The continuation token provided is incorrect"))
}

/// The contents and common prefixes of a page, as s3s's DTOs (`None` for an empty list, as S3 omits them).
fn page(listing: Listing, owner: bool) -> (Option<Vec<Object>>, Option<Vec<CommonPrefix>>) {
    let (mut contents, mut prefixes) = (Vec::new(), Vec::new());
    for entry in listing.entries {
        match entry {
            Listed::Object(o) => contents.push(Object {
                key: Some(o.key),
                size: i64::try_from(o.size).ok(),
                e_tag: Some(ETag::Strong(o.e_tag)),
                last_modified: Some(o.modified.into()),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                owner: owner.then(store_owner),
                ..Default::default()
            }),
            Listed::Prefix(p) => prefixes.push(CommonPrefix { prefix: Some(p) }),
        }
    }
    ((!contents.is_empty()).then_some(contents), (!prefixes.is_empty()).then_some(prefixes))
}

fn url_encoded(requested: Option<&EncodingType>) -> bool {
    requested.is_some_and(|e| e.as_str() == EncodingType::URL)
}

fn encode_opt(value: &mut Option<String>) {
    if let Some(v) = value.as_mut() {
        *v = encode_key(v);
    }
}

/// URL-encodes the keys and prefixes of a page (`encoding-type=url`).
fn encode_page(contents: &mut Option<Vec<Object>>, prefixes: &mut Option<Vec<CommonPrefix>>) {
    for object in contents.iter_mut().flatten() {
        encode_opt(&mut object.key);
    }
    for prefix in prefixes.iter_mut().flatten() {
        encode_opt(&mut prefix.prefix);
    }
}

/// The owner shown for every object and upload: the embedded store has one, itself (S3 shows the bucket
/// owner's account; ListObjectsV2 only with `fetch-owner=true`).
fn store_owner() -> Owner {
    Owner { id: Some(OWNER.to_owned()), display_name: Some(OWNER.to_owned()) }
}

/// S3 omits an empty delimiter from a listing and groups nothing by it; s3s-fs echoed it and grouped keys by
/// their first character.
fn no_empty_delimiter(delimiter: &mut Option<String>) {
    if delimiter.as_deref() == Some("") {
        *delimiter = None;
    }
}

/// The copy source with its key replaced by the key's stored name.
fn stored_source(source: &mut CopySource) {
    if let CopySource::Bucket { key, .. } = source {
        *key = stored_key(key).into();
    }
}

/// A CopyObject onto its own source that changes nothing S3 lets a copy change, which S3 refuses (400
/// InvalidRequest) and s3s-fs carried out.
fn copies_onto_itself_unchanged(input: &CopyObjectInput) -> bool {
    let CopySource::Bucket { bucket, key, .. } = &input.copy_source else { return false };
    **bucket == *input.bucket
        && **key == *input.key
        && input.metadata_directive.as_ref().is_none_or(|d| d.as_str() != MetadataDirective::REPLACE)
        && input.storage_class.is_none()
        && input.website_redirect_location.is_none()
}

/// What S3 checks of the parts named by a CompleteMultipartUpload and s3s-fs did not: each was uploaded
/// (s3s-fs's `.upload_id-<id>.part-<n>`) and, when the request gives its ETag, has that ETag (the MD5 of its
/// bytes: one more read of every part, the price of not assembling an object from parts the client did not
/// mean). Otherwise `InvalidPart`, and the upload stays as it was. Returns the parts' sizes, in order.
fn check_parts(root: &Path, id: uuid::Uuid, parts: &[(i32, Option<String>)]) -> S3Result<Vec<u64>> {
    let invalid = || {
        s3_error!(
            InvalidPart,
            "One or more of the specified parts could not be found. The part may not have been uploaded, or the \
             specified entity tag may not have matched the part's entity tag."
        )
    };
    let mut sizes = Vec::with_capacity(parts.len());
    for (number, e_tag) in parts {
        let path = root.join(format!(".upload_id-{id}.part-{number}"));
        let Ok(file) = std::fs::File::open(&path) else { return Err(invalid()) };
        sizes.push(file.metadata().map_err(internal_error)?.len());
        if let Some(e_tag) = e_tag
            && super::object_file::md5_of(&file)
                .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))?
                != *e_tag
        {
            return Err(invalid());
        }
    }
    Ok(sizes)
}

/// The `x-amz-checksum-*` values of a PutObject's or UploadPart's input, as one [`s3s::dto::Checksum`].
macro_rules! claimed_checksum {
    ($input:expr) => {
        s3s::dto::Checksum {
            checksum_crc32: $input.checksum_crc32.take(),
            checksum_crc32c: $input.checksum_crc32c.take(),
            checksum_sha1: $input.checksum_sha1.take(),
            checksum_sha256: $input.checksum_sha256.take(),
            checksum_crc64nvme: $input.checksum_crc64nvme.take(),
            checksum_type: None,
        }
    };
}

/// An answer (`PutObjectOutput`, `UploadPartOutput`) with its ETag and the checksums the body was found to have,
/// as S3 gives them back.
macro_rules! answered_with_checksum {
    ($output:ident, $e_tag:expr, $checksum:expr) => {{
        let checksum: s3s::dto::Checksum = $checksum;
        $output {
            e_tag: Some($e_tag),
            checksum_crc32: checksum.checksum_crc32,
            checksum_crc32c: checksum.checksum_crc32c,
            checksum_sha1: checksum.checksum_sha1,
            checksum_sha256: checksum.checksum_sha256,
            checksum_crc64nvme: checksum.checksum_crc64nvme,
            ..Default::default()
        }
    }};
}

/// The attributes a PutObject stores with its object (s3s-fs's metadata file).
fn stored_attributes(input: &mut PutObjectInput) -> StoredAttributes {
    let expires = input.expires.take().and_then(|at| {
        let mut text = Vec::new();
        at.format(TimestampFormat::DateTime, &mut text).ok()?;
        String::from_utf8(text).ok()
    });
    StoredAttributes {
        user_metadata: input.metadata.take(),
        content_encoding: input.content_encoding.take(),
        content_type: input.content_type.take(),
        content_disposition: input.content_disposition.take(),
        content_language: input.content_language.take(),
        cache_control: input.cache_control.take(),
        expires,
        website_redirect_location: input.website_redirect_location.take(),
    }
}

/// An object's ETag and checksums as s3s-fs keeps them (its internal file).
fn internal_attributes(e_tag: &str, checksum: &s3s::dto::Checksum) -> serde_json::Map<String, serde_json::Value> {
    let mut internal = serde_json::Map::new();
    internal.insert("e_tag".to_owned(), e_tag.into());
    for (name, value) in [
        ("checksum_crc32", &checksum.checksum_crc32),
        ("checksum_crc32c", &checksum.checksum_crc32c),
        ("checksum_sha1", &checksum.checksum_sha1),
        ("checksum_sha256", &checksum.checksum_sha256),
        ("checksum_crc64nvme", &checksum.checksum_crc64nvme),
    ] {
        if let Some(value) = value {
            internal.insert(name.to_owned(), value.as_str().into());
        }
    }
    internal
}

/// Settles the stored internal attributes of an object a multipart upload just made: removes the `checksum_*`
/// entries of the object it replaced and records the sizes of its parts (to read it by part number). Returns
/// its ETag.
fn settle_completed(internal: &Path, part_sizes: &[u64]) -> S3Result<Option<String>> {
    let failed = |e: &dyn std::fmt::Display| S3Error::with_message(S3ErrorCode::InternalError, e.to_string());
    let text = match std::fs::read(internal) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(&e)),
    };
    let mut info: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&text).map_err(|e| failed(&e))?;
    let e_tag = info.get("e_tag").and_then(serde_json::Value::as_str).map(str::to_owned);
    info.retain(|name, _| !name.starts_with("checksum_"));
    info.insert(super::object_file::PART_SIZES.to_owned(), serde_json::json!(part_sizes));
    let text = serde_json::to_vec(&info).map_err(|e| failed(&e))?;
    // Written beside and renamed over, so a reader sees the old or the new attributes, never half of them.
    let tmp = internal.with_extension("json.tmp");
    std::fs::write(&tmp, text).map_err(|e| failed(&e))?;
    std::fs::rename(&tmp, internal).map_err(|e| failed(&e))?;
    Ok(e_tag)
}

#[async_trait::async_trait]
impl S3 for FsStore {
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let conditions = Preconditions {
            if_match: input.if_match,
            if_none_match: input.if_none_match,
            if_modified_since: input.if_modified_since,
            if_unmodified_since: input.if_unmodified_since,
        };
        super::object_file::get_object(
            &self.files,
            &input.bucket,
            &input.key,
            input.range,
            input.part_number,
            conditions,
        )
        .await
        .map(S3Response::new)
    }

    async fn head_object(&self, mut req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let range = req.input.range.take();
        let conditions = Preconditions {
            if_match: req.input.if_match.take(),
            if_none_match: req.input.if_none_match.take(),
            if_modified_since: req.input.if_modified_since.take(),
            if_unmodified_since: req.input.if_unmodified_since.take(),
        };
        let part_number = req.input.part_number.take();
        if range.is_some() && part_number.is_some() {
            return Err(s3_error!(InvalidRequest, "Cannot specify both Range header and partNumber query parameter"));
        }
        let internal = super::object_file::metadata_path(&self.root, &req.input.bucket, &req.input.key, "internal");
        req.input.key = stored_key(&req.input.key);
        let mut response = self.fs.head_object(req).await?;
        if let Some(number) = part_number {
            // s3s-fs ignored the part number and described the whole object.
            let out = &mut response.output;
            let size = out.content_length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
            let e_tag = out.e_tag.as_ref().map(|e| e.value().to_owned()).unwrap_or_default();
            let info = tokio::task::spawn_blocking(move || super::object_file::read_json(&internal))
                .await
                .map_err(internal_error)??
                .unwrap_or_default();
            let part = super::object_file::part_span(&info, &e_tag, size, number)?;
            out.content_length = i64::try_from(part.span.end - part.span.start).ok();
            out.parts_count = part.count;
            out.content_range = Some(format!("bytes {}-{}/{size}", part.span.start, part.span.end.saturating_sub(1)));
        }
        if !conditions.is_empty() {
            let out = &response.output;
            let e_tag = out.e_tag.as_ref().map(|e| e.value().to_owned()).unwrap_or_default();
            conditions.evaluate(&e_tag, out.last_modified.clone().map(unix_seconds))?;
        }
        if let Some(range) = range {
            let size = response.output.content_length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
            let span = range.check(size)?;
            if span.is_empty() {
                return Err(s3_error!(InvalidRange));
            }
            let length = i64::try_from(span.end - span.start).map_err(|_| s3_error!(InvalidRange))?;
            response.output.content_length = Some(length);
            // s3s answers HeadObject 200 whatever the output says; the embedded backend makes a HEAD answer
            // with a Content-Range a 206.
            response.output.content_range = Some(format!("bytes {}-{}/{size}", span.start, span.end - 1));
        }
        Ok(response)
    }

    async fn list_objects_v2(
        &self,
        mut req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let input = &mut req.input;
        no_empty_delimiter(&mut input.delimiter);
        let token = input.continuation_token.as_deref().map(after_token).transpose()?;
        // The later of the token and start-after: a token always is, unless a client pairs them oddly.
        let after = match (token, input.start_after.clone().filter(|s| !s.is_empty())) {
            (Some(t), Some(s)) => Some(t.max(s)),
            (t, s) => t.or(s),
        };
        let query = OwnedQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after,
            max: page_size(input.max_keys),
        };
        let listing = self.list(&input.bucket, query).await?;
        let truncated = listing.truncated;
        let next = listing.entries.last().filter(|_| truncated).map(|last| continuation_token(last.name()));
        let key_count = i32::try_from(listing.entries.len()).unwrap_or(i32::MAX);
        let (mut contents, mut common_prefixes) = page(listing, input.fetch_owner == Some(true));
        let mut out = ListObjectsV2Output {
            name: Some(input.bucket.clone()),
            prefix: input.prefix.take(),
            delimiter: input.delimiter.take(),
            start_after: input.start_after.take(),
            continuation_token: input.continuation_token.take(),
            next_continuation_token: next,
            max_keys: Some(input.max_keys.unwrap_or(1000)),
            key_count: Some(key_count),
            is_truncated: Some(truncated),
            encoding_type: input.encoding_type.take(),
            ..Default::default()
        };
        if url_encoded(out.encoding_type.as_ref()) {
            encode_opt(&mut out.prefix);
            encode_opt(&mut out.delimiter);
            encode_opt(&mut out.start_after);
            encode_page(&mut contents, &mut common_prefixes);
        }
        out.contents = contents;
        out.common_prefixes = common_prefixes;
        Ok(S3Response::new(out))
    }

    async fn list_objects(&self, mut req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = &mut req.input;
        no_empty_delimiter(&mut input.delimiter);
        // S3 answers a V1 listing with the `Marker` it was given, empty when none.
        let marker = input.marker.take().unwrap_or_default();
        let query = OwnedQuery {
            prefix: input.prefix.clone().unwrap_or_default(),
            delimiter: input.delimiter.clone(),
            after: (!marker.is_empty()).then(|| marker.clone()),
            max: page_size(input.max_keys),
        };
        let listing = self.list(&input.bucket, query).await?;
        let truncated = listing.truncated;
        let next_marker = listing.entries.last().filter(|_| truncated).map(|last| last.name().to_owned());
        let (mut contents, mut common_prefixes) = page(listing, true);
        let mut out = ListObjectsOutput {
            name: Some(input.bucket.clone()),
            prefix: input.prefix.take(),
            delimiter: input.delimiter.take(),
            marker: Some(marker),
            next_marker,
            max_keys: Some(input.max_keys.unwrap_or(1000)),
            is_truncated: Some(truncated),
            encoding_type: input.encoding_type.take(),
            ..Default::default()
        };
        if url_encoded(out.encoding_type.as_ref()) {
            encode_opt(&mut out.prefix);
            encode_opt(&mut out.delimiter);
            encode_opt(&mut out.marker);
            encode_opt(&mut out.next_marker);
            encode_page(&mut contents, &mut common_prefixes);
        }
        out.contents = contents;
        out.common_prefixes = common_prefixes;
        Ok(S3Response::new(out))
    }

    // What s3s-fs already does as S3 does, passed on unchanged.

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket.clone();
        let created = self.fs.create_bucket(req).await?;
        // The new bucket's index exists before its first object, which is then never taken for a file of the
        // old layout whose index was lost.
        self.indexed(move |index| index.open(&bucket)).await?;
        Ok(created)
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        self.fs.head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.fs.get_bucket_location(req).await
    }

    // Writes: under the stored name (PutObject and UploadPart by `object_write`, copies and completions by
    // s3s-fs), then the index records what is there (also after a failure, which may have written before it
    // failed).

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let mut input = req.input;
        self.require_bucket(&input.bucket).await?;
        if let Some(class) = &input.storage_class
            && !["STANDARD", "REDUCED_REDUNDANCY"].contains(&class.as_str())
        {
            return Err(s3_error!(InvalidStorageClass));
        }
        let paths = super::object_file::ObjectPaths::of(&self.root, &input.bucket, &input.key)?;
        self.check_overwrite(&input.bucket, &input.key, input.if_match.as_ref(), input.if_none_match.as_ref()).await?;
        let body = input.body.take().ok_or_else(|| s3_error!(IncompleteBody))?;
        let claimed = Claimed::new(input.content_md5.as_deref(), claimed_checksum!(input))?;
        let received = object_write::receive(&self.root, body, &claimed).await?;
        let (e_tag, checksum) = (received.md5_hex(), received.checksum.clone());
        let attributes = serde_json::to_vec(&stored_attributes(&mut input)).map_err(internal_error)?;
        let internal = serde_json::to_vec(&internal_attributes(&e_tag, &checksum)).map_err(internal_error)?;
        let (root, bucket, key) = (self.root.clone(), input.bucket, input.key);
        let placed = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
            // Everything is written before anything takes its place, and the bytes first: a GET between the
            // renames sees the new bytes with the old ETag, which a cache revalidates, never the old bytes
            // under the new ETag, which it would keep.
            let attributes = object_write::small_file(&root, &attributes)?;
            let internal = object_write::small_file(&root, &internal)?;
            let replaced = object_write::set_aside(&root, &paths.object);
            received.place(&paths.object)?;
            attributes.persist(&paths.metadata).map_err(|e| e.error)?;
            internal.persist(&paths.internal).map_err(|e| e.error)?;
            Ok(replaced)
        })
        .await
        .map_err(internal_error)?;
        self.refresh(&bucket, vec![key]).await?;
        if let Some(replaced) = placed.map_err(internal_error)? {
            // The replaced object's blocks are freed while the answer goes out.
            drop(tokio::task::spawn_blocking(move || drop(replaced)));
        }
        Ok(S3Response::new(answered_with_checksum!(PutObjectOutput, ETag::Strong(e_tag), checksum)))
    }

    async fn copy_object(&self, mut req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.require_bucket(&bucket).await?;
        if copies_onto_itself_unchanged(&req.input) {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the \
                 object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        stored_source(&mut req.input.copy_source);
        req.input.key = stored_key(&key);
        let result = self.fs.copy_object(req).await;
        self.refresh(&bucket, vec![key]).await?;
        result
    }

    async fn delete_object(&self, mut req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        req.input.key = stored_key(&key);
        let result = self.fs.delete_object(req).await;
        if result.is_ok() {
            self.refresh(&bucket, vec![key]).await?;
        }
        result
    }

    async fn delete_objects(
        &self,
        mut req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let bucket = req.input.bucket.clone();
        self.require_bucket(&bucket).await?;
        let mut keys = std::collections::HashMap::new();
        for object in &mut req.input.delete.objects {
            let stored = stored_key(&object.key);
            keys.insert(stored.clone(), std::mem::replace(&mut object.key, stored));
        }
        let result = self.fs.delete_objects(req).await;
        self.refresh(&bucket, keys.values().cloned().collect()).await?;
        let mut response = result?;
        let real = |key: &mut Option<String>| {
            if let Some(k) = key.as_mut()
                && let Some(original) = keys.get(k.as_str())
            {
                *k = original.clone();
            }
        };
        for deleted in response.output.deleted.iter_mut().flatten() {
            real(&mut deleted.key);
        }
        for error in response.output.errors.iter_mut().flatten() {
            real(&mut error.key);
        }
        Ok(response)
    }

    async fn create_multipart_upload(
        &self,
        mut req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        self.require_bucket(&bucket).await?;
        req.input.key = stored_key(&key);
        let mut response = self.fs.create_multipart_upload(req).await?;
        let upload_id = response.output.upload_id.clone().unwrap_or_default();
        response.output.key = Some(key.clone());
        self.indexed(move |index| index.add_upload(&bucket, &upload_id, &key)).await?;
        Ok(response)
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let mut input = req.input;
        let id = self.require_upload(&input.bucket, &input.key, &input.upload_id).await?;
        if !(1..=10_000).contains(&input.part_number) {
            return Err(s3_error!(InvalidArgument, "Part number must be an integer between 1 and 10000, inclusive"));
        }
        let body = input.body.take().ok_or_else(|| s3_error!(IncompleteBody))?;
        let claimed = Claimed::new(input.content_md5.as_deref(), claimed_checksum!(input))?;
        let received = object_write::receive(&self.root, body, &claimed).await?;
        let (e_tag, checksum) = (ETag::Strong(received.md5_hex()), received.checksum.clone());
        // s3s-fs's name for a part, which its CompleteMultipartUpload reads.
        let path = self.root.join(format!(".upload_id-{id}.part-{}", input.part_number));
        tokio::task::spawn_blocking(move || received.place(&path))
            .await
            .map_err(internal_error)?
            .map_err(internal_error)?;
        self.record_part((input.bucket, input.upload_id, input.part_number), Some(&e_tag)).await?;
        Ok(S3Response::new(answered_with_checksum!(UploadPartOutput, e_tag, checksum)))
    }

    async fn upload_part_copy(
        &self,
        mut req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.require_upload(&req.input.bucket, &req.input.key, &req.input.upload_id).await?;
        let part = (req.input.bucket.clone(), req.input.upload_id.clone(), req.input.part_number);
        req.input.key = stored_key(&req.input.key);
        stored_source(&mut req.input.copy_source);
        let response = self.fs.upload_part_copy(req).await?;
        let e_tag = response.output.copy_part_result.as_ref().and_then(|r| r.e_tag.as_ref());
        self.record_part(part, e_tag).await?;
        Ok(response)
    }

    async fn complete_multipart_upload(
        &self,
        mut req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let id = match self.require_upload(&bucket, &key, &req.input.upload_id).await {
            Ok(id) => id,
            Err(e) => {
                let input = &req.input;
                let Some(done) = self.completed.find(&input.upload_id, &input.bucket, &input.key) else {
                    return Err(e);
                };
                return Ok(S3Response::new(CompleteMultipartUploadOutput {
                    bucket: Some(done.bucket),
                    key: Some(done.key),
                    e_tag: Some(ETag::Strong(done.e_tag)),
                    ..Default::default()
                }));
            }
        };
        let parts: Vec<(i32, Option<String>)> = req
            .input
            .multipart_upload
            .iter()
            .flat_map(|m| m.parts.iter().flatten())
            .filter_map(|p| Some((p.part_number?, p.e_tag.as_ref().map(|e| e.value().to_owned()))))
            .collect();
        let root = self.root.clone();
        let sizes = tokio::task::spawn_blocking(move || check_parts(&root, id, &parts))
            .await
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))??;
        req.input.key = stored_key(&key);
        let result = self.fs.complete_multipart_upload(req).await;
        let mut response = match result {
            Ok(response) => response,
            Err(e) => {
                self.refresh(&bucket, vec![key]).await?;
                return Err(e);
            }
        };
        response.output.key = Some(key.clone());
        // s3s-fs keeps the stored attributes of the object it replaces and sets only the new ETag: the old
        // object's checksums would be sent with the new bytes, and SDKs that validate them (boto3 does by
        // default) would refuse every read of the new object.
        let internal = super::object_file::metadata_path(&self.root, &bucket, &key, "internal");
        let e_tag = tokio::task::spawn_blocking(move || settle_completed(&internal, &sizes))
            .await
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))??;
        let (b, k, upload) = (bucket.clone(), key.clone(), id.to_string());
        self.indexed(move |index| {
            index.refresh(&b, &k)?;
            index.remove_upload(&b, &upload)
        })
        .await?;
        if let Some(e_tag) = e_tag {
            self.completed.remember(Completed { upload_id: id.to_string(), bucket, key, e_tag });
        }
        Ok(response)
    }

    async fn abort_multipart_upload(
        &self,
        mut req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let id = self.require_upload(&req.input.bucket, &req.input.key, &req.input.upload_id).await?;
        let bucket = req.input.bucket.clone();
        req.input.key = stored_key(&req.input.key);
        let response = self.fs.abort_multipart_upload(req).await?;
        self.indexed(move |index| index.remove_upload(&bucket, &id.to_string())).await?;
        Ok(response)
    }

    /// The parts of an upload, as S3 lists them: in part-number order, each with its ETag, a page of at most
    /// `max-parts` (1000) after `part-number-marker`. s3s-fs listed them in directory order, without ETags or
    /// pages.
    async fn list_parts(&self, mut req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let (bucket, key, upload_id) = (req.input.bucket.clone(), req.input.key.clone(), req.input.upload_id.clone());
        self.require_upload(&bucket, &key, &upload_id).await?;
        let max_parts = page_size(req.input.max_parts);
        let marker = req.input.part_number_marker.unwrap_or(0);
        req.input.key = stored_key(&key);
        let mut response = self.fs.list_parts(req).await?;
        let e_tags = self.indexed(move |index| index.part_e_tags(&bucket, &upload_id)).await?;
        let out = &mut response.output;
        let mut parts = out.parts.take().unwrap_or_default();
        parts.retain(|p| p.part_number.is_some_and(|n| n > marker));
        parts.sort_by_key(|p| p.part_number);
        let truncated = parts.len() > max_parts;
        parts.truncate(max_parts);
        for part in &mut parts {
            // A part uploaded before its ETag was recorded (by an older Lakegate) is listed without one.
            part.e_tag = part.part_number.and_then(|n| e_tags.get(&n)).map(|e| ETag::Strong(e.clone()));
        }
        out.key = Some(key);
        out.part_number_marker = Some(marker);
        out.next_part_number_marker = parts.last().and_then(|p| p.part_number).filter(|_| truncated);
        out.max_parts = i32::try_from(max_parts).ok();
        out.is_truncated = Some(truncated);
        out.owner = Some(store_owner());
        out.initiator = Some(Initiator { id: Some(OWNER.to_owned()), display_name: Some(OWNER.to_owned()) });
        out.storage_class = Some(StorageClass::from_static(StorageClass::STANDARD));
        out.parts = Some(parts);
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn completed(n: usize) -> Completed {
        Completed { upload_id: format!("u{n}"), bucket: "b".into(), key: format!("k{n}"), e_tag: format!("e{n}") }
    }

    #[test]
    fn a_completion_is_found_by_its_upload_bucket_and_key_and_only_the_last_so_many_are_kept() {
        let completions = Completions::default();
        for n in 0..REMEMBERED_COMPLETIONS + 5 {
            completions.remember(completed(n));
        }
        assert_eq!(completions.remembered().len(), REMEMBERED_COMPLETIONS);
        assert_eq!(completions.find("u4", "b", "k4"), None, "the oldest are forgotten first");
        assert_eq!(completions.find("u5", "b", "k5"), Some(completed(5)));
        // The same upload id for another key or bucket is another upload.
        assert_eq!(completions.find("u5", "b", "k6"), None);
        assert_eq!(completions.find("u5", "c", "k5"), None);
    }
}

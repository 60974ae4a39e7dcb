//! `s3s-fs` behind the S3 operations the front forwards, with its departures from S3 put right:
//!
//! - `GetObject` is read from s3s-fs's files by [`super::object_file`], which is many times faster and answers
//!   a suffix range longer than the object (`bytes=-N`, N > size: what `object_store` readers such as polars ask
//!   for first) with the whole object as `206` and `Content-Range: bytes 0-(size-1)/size`, where s3s-fs fails
//!   (500, and an arithmetic overflow on an empty object);
//! - `GetObject` and `HeadObject` evaluate their conditional headers ([`super::conditions`]), which s3s-fs
//!   ignored (it sent the object with 200);
//! - `HeadObject` with a `Range` answers `206` with the range's `Content-Length` and `Content-Range`, or `416`;
//! - a key that is a directory of other keys (`a/b` of `a/b/c`) holds no object: HEAD, GET and copies from it
//!   are `404 NoSuchKey`, deleting it is a success that removes nothing (s3s-fs opened the directory: 500), and
//!   `a/b/` (s3s-fs's layout for a zero-byte `PUT a/b/`) reads as the empty object;
//! - listings with `encoding-type=url` have their keys, prefixes, delimiter and markers URL-encoded, where s3s-fs
//!   echoes the encoding type over raw keys (which SDKs would then decode a second time).
//!
//! Only the operations the front can forward are passed on; every other one is `NotImplemented` here too.

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput, CompleteMultipartUploadOutput,
    CopyObjectInput, CopyObjectOutput, CopySource, CreateBucketInput, CreateBucketOutput, CreateMultipartUploadInput,
    CreateMultipartUploadOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput,
    DeletedObject, ETag, EncodingType, GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput,
    GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput, HeadObjectOutput, ListBucketsInput,
    ListBucketsOutput, ListObjectsInput, ListObjectsOutput, ListObjectsV2Input, ListObjectsV2Output, ListPartsInput,
    ListPartsOutput, MetadataDirective, Owner, PutObjectInput, PutObjectOutput, UploadPartCopyInput,
    UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, s3_error};

use super::conditions::{Preconditions, unix_seconds};
use super::encode_key;

/// The embedded store's S3 implementation: s3s-fs, corrected where it is not S3.
pub(super) struct FsStore {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
    /// The uploads completed last (at most [`REMEMBERED_COMPLETIONS`], since start), to answer a repeated
    /// CompleteMultipartUpload as S3 does: with the same result. SDKs retry a complete whose answer was lost
    /// (a timeout, a reset connection); s3s-fs has forgotten the upload by then and said it never existed.
    completed: Mutex<VecDeque<Completed>>,
}

/// How many completed uploads are remembered for repeated completes.
const REMEMBERED_COMPLETIONS: usize = 1024;

/// A completed upload: its id, bucket, key and the ETag of the object it made.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Completed {
    upload_id: String,
    bucket: String,
    key: String,
    e_tag: String,
}

impl FsStore {
    pub(super) fn new(fs: s3s_fs::FileSystem, root: PathBuf) -> Self {
        Self { fs, root, completed: Mutex::new(VecDeque::new()) }
    }

    fn completions(&self) -> std::sync::MutexGuard<'_, VecDeque<Completed>> {
        // The list is only pushed to and read: a panic elsewhere cannot leave it half changed.
        self.completed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// What is at `bucket/key` in the store, as far as a read of the key must know: s3s-fs keeps an object as a
    /// file at its key's path, so the "directory" `a/b` of keys `a/b/c...` is a directory, and so is the zero-byte
    /// object `a/b/` (s3s-fs stores a key ending in `/` as a directory). S3 answers a HEAD of `a/b` with 404 and
    /// clients (pyarrow, s3fs) then list `a/b/` as a directory; s3s-fs opened the directory and answered 500.
    async fn entry(&self, bucket: &str, key: &str) -> S3Result<Entry> {
        let path = super::object_file::object_path(&self.root, bucket, key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_dir() => {
                // The layout cannot tell a directory made by `PUT a/b/` from one made by keys below it, so every
                // directory read as `a/b/` is the empty object S3 would have after `PUT a/b/`.
                let marker = key.ends_with('/').then(|| meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH));
                Ok(Entry::Directory { marker })
            }
            _ => Ok(Entry::Other),
        }
    }

    /// `NoSuchUpload` (404) unless `upload_id` is an upload in progress **of this bucket and key**, as S3
    /// answers. s3s-fs said `400 InvalidRequest` for an id that is not a UUID and `403 AccessDenied` for an
    /// unknown one (which clients read as their own fault or a permission problem), and did not check the key
    /// at all: whoever may write one key and knew the id of an upload to another could complete that upload's
    /// parts into their own key, and read bytes the policy let them write but never read. An upload is s3s-fs's
    /// `.upload-<id>.json` and the attributes it keeps for it beside its bucket and key.
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
}

/// What [`FsStore::entry`] found at a key's path.
enum Entry {
    /// A directory; for a key ending in `/`, the modification time of the empty object it stands for.
    Directory { marker: Option<std::time::SystemTime> },
    /// A file, nothing, or something s3s-fs answers for itself.
    Other,
}

fn url_encoded(requested: Option<&EncodingType>) -> bool {
    requested.is_some_and(|e| e.as_str() == EncodingType::URL)
}

fn encode_opt(value: &mut Option<String>) {
    if let Some(v) = value.as_mut() {
        *v = encode_key(v);
    }
}

/// The owner shown for every object and upload: the embedded store has one, itself (S3 shows the bucket
/// owner's account; ListObjectsV2 only with `fetch-owner=true`, which s3s-fs ignored).
fn store_owner() -> Owner {
    Owner { id: Some(super::uploads::OWNER.to_owned()), display_name: Some(super::uploads::OWNER.to_owned()) }
}

/// S3 omits an empty delimiter from a listing and groups nothing by it; s3s-fs echoed it and grouped keys by
/// their first character.
fn no_empty_delimiter(delimiter: &mut Option<String>) {
    if delimiter.as_deref() == Some("") {
        *delimiter = None;
    }
}

/// Longest file name the file system takes.
const NAME_MAX: usize = 255;

/// Refuses, as S3's `KeyTooLongError`, a key this store cannot keep: s3s-fs stores an object's attributes in
/// `.bucket-<b64>.object-<b64>.metadata.json` and an upload's in `.bucket-<b64>.object-<b64>.upload-<id>
/// .metadata.json`, so keys over about 164 bytes (130 for multipart uploads) failed half-way as 500
/// InternalError. A remote store has no such limit.
fn key_fits(bucket: &str, key: &str, upload: bool) -> S3Result<()> {
    let b64 = |n: usize| (n * 4).div_ceil(3);
    let kind = if upload { ".upload-".len() + 36 + ".metadata.json".len() } else { ".metadata.json".len() };
    let longest = ".bucket-".len() + b64(bucket.len()) + ".object-".len() + b64(key.len()) + kind;
    if longest > NAME_MAX || key.split('/').any(|segment| segment.len() > NAME_MAX) {
        let most = if upload { "about 130 bytes for multipart uploads" } else { "about 160 bytes" };
        return Err(s3_error!(
            KeyTooLongError,
            "The embedded store keeps keys of at most {most} (this one has {}); a remote store has no such limit.",
            key.len()
        ));
    }
    Ok(())
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
        sizes.push(file.metadata().map_err(super::object_file::internal_error)?.len());
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
            &self.root,
            &input.bucket,
            &input.key,
            input.range,
            input.part_number,
            conditions,
        )
        .await
        .map(S3Response::new)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let range = req.input.range;
        let conditions = Preconditions {
            if_match: req.input.if_match.clone(),
            if_none_match: req.input.if_none_match.clone(),
            if_modified_since: req.input.if_modified_since.clone(),
            if_unmodified_since: req.input.if_unmodified_since.clone(),
        };
        let part_number = req.input.part_number;
        if range.is_some() && part_number.is_some() {
            return Err(s3_error!(InvalidRequest, "Cannot specify both Range header and partNumber query parameter"));
        }
        let internal = super::object_file::metadata_path(&self.root, &req.input.bucket, &req.input.key, "internal");
        let mut response = match self.entry(&req.input.bucket, &req.input.key).await? {
            Entry::Directory { marker: Some(modified) } => S3Response::new(HeadObjectOutput {
                content_length: Some(0),
                e_tag: Some(ETag::Strong(super::object_file::EMPTY_MD5.to_owned())),
                last_modified: Some(modified.into()),
                ..Default::default()
            }),
            Entry::Directory { marker: None } => return Err(s3_error!(NoSuchKey)),
            Entry::Other => self.fs.head_object(req).await?,
        };
        if let Some(number) = part_number {
            // s3s-fs ignored the part number and described the whole object.
            let out = &mut response.output;
            let size = out.content_length.and_then(|l| u64::try_from(l).ok()).unwrap_or(0);
            let e_tag = out.e_tag.as_ref().map(|e| e.value().to_owned()).unwrap_or_default();
            let info = tokio::task::spawn_blocking(move || super::object_file::read_json(&internal))
                .await
                .map_err(super::object_file::internal_error)??
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
        no_empty_delimiter(&mut req.input.delimiter);
        let encode = url_encoded(req.input.encoding_type.as_ref());
        let fetch_owner = req.input.fetch_owner == Some(true);
        let mut response = self.fs.list_objects_v2(req).await?;
        if fetch_owner {
            for object in response.output.contents.iter_mut().flatten() {
                object.owner = Some(store_owner());
            }
        }
        if encode {
            let out = &mut response.output;
            encode_opt(&mut out.prefix);
            encode_opt(&mut out.delimiter);
            encode_opt(&mut out.start_after);
            for object in out.contents.iter_mut().flatten() {
                encode_opt(&mut object.key);
            }
            for prefix in out.common_prefixes.iter_mut().flatten() {
                encode_opt(&mut prefix.prefix);
            }
        }
        Ok(response)
    }

    async fn list_objects(&self, mut req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        no_empty_delimiter(&mut req.input.delimiter);
        let encode = url_encoded(req.input.encoding_type.as_ref());
        let marker = req.input.marker.clone().unwrap_or_default();
        let mut response = self.fs.list_objects(req).await?;
        // S3 answers a V1 listing with the `Marker` it was given, empty when none; s3s-fs left it out.
        response.output.marker = Some(marker);
        if encode {
            let out = &mut response.output;
            encode_opt(&mut out.prefix);
            encode_opt(&mut out.delimiter);
            encode_opt(&mut out.marker);
            encode_opt(&mut out.next_marker);
            for object in out.contents.iter_mut().flatten() {
                encode_opt(&mut object.key);
            }
            for prefix in out.common_prefixes.iter_mut().flatten() {
                encode_opt(&mut prefix.prefix);
            }
        }
        Ok(response)
    }

    // What s3s-fs already does as S3 does, passed on unchanged.

    async fn list_buckets(&self, req: S3Request<ListBucketsInput>) -> S3Result<S3Response<ListBucketsOutput>> {
        self.fs.list_buckets(req).await
    }

    async fn create_bucket(&self, req: S3Request<CreateBucketInput>) -> S3Result<S3Response<CreateBucketOutput>> {
        self.fs.create_bucket(req).await
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

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        key_fits(&req.input.bucket, &req.input.key, false)?;
        // An If-Match on a key that holds no object is S3's 404 NoSuchKey (s3s-fs: 412).
        if req.input.if_match.is_some() {
            let path = super::object_file::object_path(&self.root, &req.input.bucket, &req.input.key)?;
            if !tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_file()) {
                return Err(s3_error!(NoSuchKey));
            }
        }
        self.fs.put_object(req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        key_fits(&req.input.bucket, &req.input.key, false)?;
        if copies_onto_itself_unchanged(&req.input) {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the \
                 object's metadata, storage class, website redirect location or encryption attributes."
            ));
        }
        // A directory is where keys below a prefix live, not an object (s3s-fs read it as one and failed, 500).
        if let CopySource::Bucket { bucket, key, .. } = &req.input.copy_source
            && matches!(self.entry(bucket, key).await?, Entry::Directory { .. })
        {
            return Err(s3_error!(NoSuchKey));
        }
        self.fs.copy_object(req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        // Deleting a key that holds no object is 204 on S3. A key without a trailing `/` that is a directory here
        // names no object: s3s-fs tried to remove it as a file (500). It must never remove the keys below it.
        // (`key/` is s3s-fs's own case: it removes the directory only when it is empty.)
        if !req.input.key.ends_with('/')
            && matches!(self.entry(&req.input.bucket, &req.input.key).await?, Entry::Directory { .. })
        {
            return Ok(S3Response::new(DeleteObjectOutput::default()));
        }
        self.fs.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        mut req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        // As for DeleteObject: a key without a trailing `/` that is a directory holds no object, and deleting it
        // is a success that removes nothing. s3s-fs tried to remove it as a file and failed the whole request
        // (500) at that key, so s3fs's recursive `rm`, which names the "directories" beside the files, removed
        // nothing after it.
        let bucket = req.input.bucket.clone();
        let mut directories = Vec::new();
        let mut objects = Vec::with_capacity(req.input.delete.objects.len());
        for object in std::mem::take(&mut req.input.delete.objects) {
            let directory = !object.key.ends_with('/')
                && matches!(self.entry(&bucket, &object.key).await?, Entry::Directory { .. });
            if directory {
                directories.push(DeletedObject { key: Some(object.key), ..Default::default() });
            } else {
                objects.push(object);
            }
        }
        if objects.is_empty() {
            let output = DeleteObjectsOutput { deleted: Some(directories), ..Default::default() };
            return Ok(S3Response::new(output));
        }
        req.input.delete.objects = objects;
        let mut response = self.fs.delete_objects(req).await?;
        if !directories.is_empty() {
            response.output.deleted.get_or_insert_with(Vec::new).extend(directories);
        }
        Ok(response)
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.require_bucket(&req.input.bucket).await?;
        key_fits(&req.input.bucket, &req.input.key, true)?;
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.require_upload(&req.input.bucket, &req.input.key, &req.input.upload_id).await?;
        self.fs.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.require_upload(&req.input.bucket, &req.input.key, &req.input.upload_id).await?;
        self.fs.upload_part_copy(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let id = match self.require_upload(&req.input.bucket, &req.input.key, &req.input.upload_id).await {
            Ok(id) => id,
            Err(e) => {
                let input = &req.input;
                let again = self
                    .completions()
                    .iter()
                    .find(|c| c.upload_id == input.upload_id && c.bucket == input.bucket && c.key == input.key)
                    .cloned();
                let Some(done) = again else { return Err(e) };
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
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let response = self.fs.complete_multipart_upload(req).await?;
        // s3s-fs keeps the stored attributes of the object it replaces and sets only the new ETag: the old
        // object's checksums would be sent with the new bytes, and SDKs that validate them (boto3 does by
        // default) would refuse every read of the new object.
        let internal = super::object_file::metadata_path(&self.root, &bucket, &key, "internal");
        let e_tag = tokio::task::spawn_blocking(move || settle_completed(&internal, &sizes))
            .await
            .map_err(|e| S3Error::with_message(S3ErrorCode::InternalError, e.to_string()))??;
        if let Some(e_tag) = e_tag {
            let mut completed = self.completions();
            if completed.len() >= REMEMBERED_COMPLETIONS {
                completed.pop_front();
            }
            completed.push_back(Completed { upload_id: id.to_string(), bucket, key, e_tag });
        }
        Ok(response)
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.require_upload(&req.input.bucket, &req.input.key, &req.input.upload_id).await?;
        self.fs.abort_multipart_upload(req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.require_upload(&req.input.bucket, &req.input.key, &req.input.upload_id).await?;
        self.fs.list_parts(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::key_fits;

    #[test]
    fn keys_whose_attribute_files_the_file_system_cannot_name_are_refused() {
        // `.bucket-bGFrZQ.object-<b64 key>` plus `.metadata.json`, or `.upload-<uuid>.metadata.json`, in 255 bytes.
        assert!(key_fits("lake", &"k".repeat(164), false).is_ok());
        assert!(key_fits("lake", &"k".repeat(165), false).is_err());
        assert!(key_fits("lake", &"k".repeat(131), true).is_ok());
        assert!(key_fits("lake", &"k".repeat(132), true).is_err());
    }
}

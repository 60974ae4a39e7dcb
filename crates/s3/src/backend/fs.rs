//! `s3s-fs` behind the S3 operations the front forwards, with its departures from S3 put right:
//!
//! - `GetObject` is read from s3s-fs's files by [`super::object_file`], which is many times faster and answers
//!   a suffix range longer than the object (`bytes=-N`, N > size: what `object_store` readers such as polars ask
//!   for first) with the whole object as `206` and `Content-Range: bytes 0-(size-1)/size`, where s3s-fs fails
//!   (500, and an arithmetic overflow on an empty object);
//! - `HeadObject` with a `Range` answers `206` with the range's `Content-Length` and `Content-Range`, or `416`;
//! - listings with `encoding-type=url` have their keys, prefixes, delimiter and markers URL-encoded, where s3s-fs
//!   echoes the encoding type over raw keys (which SDKs would then decode a second time).
//!
//! Only the operations the front can forward are passed on; every other one is `NotImplemented` here too.

use std::path::PathBuf;

use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput, CompleteMultipartUploadOutput,
    CopyObjectInput, CopyObjectOutput, CreateBucketInput, CreateBucketOutput, CreateMultipartUploadInput,
    CreateMultipartUploadOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput, DeleteObjectsOutput,
    EncodingType, GetBucketLocationInput, GetBucketLocationOutput, GetObjectInput, GetObjectOutput, HeadBucketInput,
    HeadBucketOutput, HeadObjectInput, HeadObjectOutput, ListBucketsInput, ListBucketsOutput, ListObjectsInput,
    ListObjectsOutput, ListObjectsV2Input, ListObjectsV2Output, ListPartsInput, ListPartsOutput, PutObjectInput,
    PutObjectOutput, UploadPartCopyInput, UploadPartCopyOutput, UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use super::encode_key;

/// The embedded store's S3 implementation: s3s-fs, corrected where it is not S3.
pub(super) struct FsStore {
    fs: s3s_fs::FileSystem,
    root: PathBuf,
}

impl FsStore {
    pub(super) fn new(fs: s3s_fs::FileSystem, root: PathBuf) -> Self {
        Self { fs, root }
    }
}

fn url_encoded(requested: Option<&EncodingType>) -> bool {
    requested.is_some_and(|e| e.as_str() == EncodingType::URL)
}

fn encode_opt(value: &mut Option<String>) {
    if let Some(v) = value.as_mut() {
        *v = encode_key(v);
    }
}

#[async_trait::async_trait]
impl S3 for FsStore {
    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let input = &req.input;
        super::object_file::get_object(&self.root, &input.bucket, &input.key, input.range).await.map(S3Response::new)
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let range = req.input.range;
        let mut response = self.fs.head_object(req).await?;
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

    async fn list_objects_v2(&self, req: S3Request<ListObjectsV2Input>) -> S3Result<S3Response<ListObjectsV2Output>> {
        let encode = url_encoded(req.input.encoding_type.as_ref());
        let mut response = self.fs.list_objects_v2(req).await?;
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

    async fn list_objects(&self, req: S3Request<ListObjectsInput>) -> S3Result<S3Response<ListObjectsOutput>> {
        let encode = url_encoded(req.input.encoding_type.as_ref());
        let mut response = self.fs.list_objects(req).await?;
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
        self.fs.put_object(req).await
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        self.fs.copy_object(req).await
    }

    async fn delete_object(&self, req: S3Request<DeleteObjectInput>) -> S3Result<S3Response<DeleteObjectOutput>> {
        self.fs.delete_object(req).await
    }

    async fn delete_objects(&self, req: S3Request<DeleteObjectsInput>) -> S3Result<S3Response<DeleteObjectsOutput>> {
        self.fs.delete_objects(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.fs.create_multipart_upload(req).await
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        self.fs.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.fs.upload_part_copy(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        self.fs.complete_multipart_upload(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.fs.abort_multipart_upload(req).await
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        self.fs.list_parts(req).await
    }
}

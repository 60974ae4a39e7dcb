//! PutObject and UploadPart on the embedded store: a request body written to a temporary file and compared with
//! every digest the client sent before anything takes a stored name.
//!
//! s3s-fs, which wrote both before, renamed the new file into place first and compared it with the client's
//! `Content-MD5` and `x-amz-checksum-*` only afterwards: a PUT refused with `BadDigest` had already replaced the
//! object (its bytes beside the old object's ETag and content type), and a part's `Content-MD5` was not compared
//! at all. It also hashed on the request's task and wrote through an 8 KiB buffer into tokio's `File`, one trip
//! to the blocking pool for every 8 KiB.
//!
//! Here the request's task only gathers the body's chunks into batches of about [`BATCH_BYTES`] and hands them to
//! one task on the blocking pool, which hashes each chunk and writes it: receiving and hashing overlap. MD5 (S3's
//! ETag of a single-part object and of a part) is what bounds an upload, 440-650 MiB/s a core on the project's
//! machines, and one pass over the bytes that no thread can share; so past [`SPLIT_AFTER`] bytes the writes move
//! to a thread of their own and the task only hashes (the page cache's copy of a 256 MiB body took about 15% of
//! the hashing thread's time before). At most [`BATCHES_WAITING`] batches wait at each step, so an upload holds a
//! MiB or two whatever its size, and a slow disk slows the client down instead of filling memory. A body that fails (the
//! client went away, the front refused its signature or trailing checksum) and a digest that does not match
//! leave nothing behind: the temporary file is removed with its handle ([`tempfile::NamedTempFile`]).

use std::io::Write;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use futures::StreamExt;
use md5::{Digest, Md5};
use s3s::checksum::ChecksumHasher;
use s3s::dto::{Checksum, StreamingBlob};
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};
use tempfile::NamedTempFile;
use tokio::sync::mpsc;

use super::object_file::internal_error;

/// A batch is handed to the writer once it holds this many bytes (or the body ends).
const BATCH_BYTES: usize = 256 * 1024;
/// Batches that may wait for the hasher (and, past [`SPLIT_AFTER`], for the writing thread); the sender waits
/// beyond that.
const BATCHES_WAITING: usize = 2;
/// A body longer than this is written by a thread of its own while the blocking task hashes it. A thread costs
/// tens of microseconds to start, nothing beside the hundreds a MiB takes to hash; a small body is not worth one.
const SPLIT_AFTER: usize = 1024 * 1024;

/// What a client said a body's digests are: its `Content-MD5` and the `x-amz-checksum-*` values it sent.
#[derive(Debug, Default)]
pub(super) struct Claimed {
    md5: Option<[u8; 16]>,
    checksum: Checksum,
}

impl Claimed {
    /// The claims of a request: `content_md5` as sent (the base64 of 16 bytes, else `InvalidDigest`, as S3
    /// answers) and the checksum values given in its headers.
    pub(super) fn new(content_md5: Option<&str>, checksum: Checksum) -> S3Result<Self> {
        let md5 = match content_md5 {
            None => None,
            Some(text) => Some(
                STANDARD
                    .decode(text.trim())
                    .ok()
                    .and_then(|digest| <[u8; 16]>::try_from(digest).ok())
                    .ok_or_else(|| s3_error!(InvalidDigest, "The Content-MD5 you specified was invalid."))?,
            ),
        };
        Ok(Self { md5, checksum })
    }

    /// A hasher for each checksum claimed (and only those: a checksum costs a pass over every byte).
    fn hasher(&self) -> ChecksumHasher {
        let c = &self.checksum;
        ChecksumHasher {
            crc32: c.checksum_crc32.as_ref().map(|_| Default::default()),
            crc32c: c.checksum_crc32c.as_ref().map(|_| Default::default()),
            sha1: c.checksum_sha1.as_ref().map(|_| Default::default()),
            sha256: c.checksum_sha256.as_ref().map(|_| Default::default()),
            crc64nvme: c.checksum_crc64nvme.as_ref().map(|_| Default::default()),
        }
    }
}

/// The checksums of `c` by their header names.
fn named(c: &Checksum) -> [(&'static str, Option<&String>); 5] {
    [
        ("x-amz-checksum-crc32", c.checksum_crc32.as_ref()),
        ("x-amz-checksum-crc32c", c.checksum_crc32c.as_ref()),
        ("x-amz-checksum-sha1", c.checksum_sha1.as_ref()),
        ("x-amz-checksum-sha256", c.checksum_sha256.as_ref()),
        ("x-amz-checksum-crc64nvme", c.checksum_crc64nvme.as_ref()),
    ]
}

/// A body received whole into a temporary file in the store's root (removed unless [`Received::place`]d),
/// with what it hashed to.
#[derive(Debug)]
pub(super) struct Received {
    file: NamedTempFile,
    md5: [u8; 16],
    /// The checksums claimed, as computed (base64).
    pub(super) checksum: Checksum,
}

impl Received {
    /// The hex MD5 of the body: the ETag of a single-part object or of a part.
    pub(super) fn md5_hex(&self) -> String {
        hex::encode(self.md5)
    }

    /// `BadDigest` unless the body is what `claimed` says it is.
    fn matches(&self, claimed: &Claimed) -> S3Result<()> {
        if claimed.md5.is_some_and(|md5| md5 != self.md5) {
            return Err(s3_error!(BadDigest, "The Content-MD5 you specified did not match what was received."));
        }
        for ((name, claim), (_, computed)) in named(&claimed.checksum).into_iter().zip(named(&self.checksum)) {
            if claim.is_some() && claim != computed {
                return Err(S3Error::with_message(
                    S3ErrorCode::BadDigest,
                    format!("The {name} you specified did not match the calculated checksum."),
                ));
            }
        }
        Ok(())
    }

    /// Moves the body to `dest`, making its directory; on the blocking pool.
    pub(super) fn place(self, dest: &Path) -> std::io::Result<()> {
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        self.file.persist(dest).map(drop).map_err(|e| e.error)
    }
}

/// Temporary files in the store's root, named as s3s-fs names its own so that a start of the store removes any
/// left by a crash.
fn temporary_name() -> tempfile::Builder<'static, 'static> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp.").suffix(".internal.part");
    builder
}

/// A temporary file in `root`.
fn temporary(root: &Path) -> std::io::Result<NamedTempFile> {
    temporary_name().tempfile_in(root)
}

/// A second, temporary name in `root` for the object at `dest` that a write is about to replace; `None` when
/// there is none (or no second name could be made: this only moves work, the rename still replaces the object).
/// Renaming over a file frees its blocks inside the rename, while the client waits for its answer (0.23 s for a
/// 256 MiB object on the project's machine); with a second name held, the rename only drops a link, and the
/// blocks are freed when the returned path is dropped, after the answer. A reader that opened the old object
/// reads it to its end either way.
pub(super) fn set_aside(root: &Path, dest: &Path) -> Option<tempfile::TempPath> {
    let aside = temporary_name().make_in(root, |link| std::fs::hard_link(dest, link));
    aside.ok().map(NamedTempFile::into_temp_path)
}

/// A small file (an object's attributes) written in full to a temporary file in `root`, to be persisted in its
/// place after the object's bytes; on the blocking pool.
pub(super) fn small_file(root: &Path, bytes: &[u8]) -> std::io::Result<NamedTempFile> {
    let mut file = temporary(root)?;
    file.write_all(bytes)?;
    Ok(file)
}

/// Receives `body` whole into a temporary file in `root` and checks it against `claimed`: `IncompleteBody` if
/// the body failed before its end, `BadDigest` if it is not what the client said, and in either case nothing
/// is left on disk.
pub(super) async fn receive(root: &Path, body: StreamingBlob, claimed: &Claimed) -> S3Result<Received> {
    let (batches, mut waiting) = mpsc::channel::<Vec<Bytes>>(BATCHES_WAITING);
    let checksums = claimed.hasher();
    let root = root.to_owned();
    // The writer ends when the channel closes: after the last batch, after a failed body, or when this future
    // is dropped (the client went away); its file is then dropped, and removed, unless returned here.
    let writer = tokio::task::spawn_blocking(move || hash_and_write(&root, &mut waiting, checksums));
    let sent = send_in_batches(body, batches).await;
    // A failed writer closes the channel early; its error is the one to report.
    let received = writer.await.map_err(internal_error)?.map_err(internal_error)?;
    sent?;
    received.matches(claimed)?;
    Ok(received)
}

/// The blocking side of [`receive`]: a temporary file in `root` holding every batch that comes through `waiting`
/// until it closes, with the body's MD5 and `checksums`. Failing to write stops it, which closes `waiting` and so
/// stops the sender too.
fn hash_and_write(
    root: &Path,
    waiting: &mut mpsc::Receiver<Vec<Bytes>>,
    checksums: ChecksumHasher,
) -> std::io::Result<Received> {
    let mut file = temporary(root)?;
    let mut digests = Digests { md5: Md5::new(), checksums };
    // A long body: this thread hashes, another writes what it has hashed; with no thread to be had, this one
    // goes on writing too.
    if hash_and_write_here(waiting, &mut digests, &mut file, SPLIT_AFTER)?
        && !hash_here_write_there(waiting, &mut digests, &mut file)?
    {
        hash_and_write_here(waiting, &mut digests, &mut file, usize::MAX)?;
    }
    Ok(digests.of(file))
}

/// Hashes and writes batches on this thread until the channel closes (`false`) or more than `limit` bytes have
/// come (`true`: there may be more).
fn hash_and_write_here(
    waiting: &mut mpsc::Receiver<Vec<Bytes>>,
    digests: &mut Digests,
    file: &mut NamedTempFile,
    limit: usize,
) -> std::io::Result<bool> {
    let mut received = 0;
    while received <= limit {
        let Some(batch) = waiting.blocking_recv() else {
            return Ok(false);
        };
        received += digests.update(&batch);
        write_batch(file, &batch)?;
    }
    Ok(true)
}

/// Hashes batches on this thread and writes them on a thread of its own until the channel closes; `false`, with
/// nothing taken from the channel, when no thread could be started.
fn hash_here_write_there(
    waiting: &mut mpsc::Receiver<Vec<Bytes>>,
    digests: &mut Digests,
    file: &mut NamedTempFile,
) -> std::io::Result<bool> {
    std::thread::scope(|scope| {
        let (to_disk, disk) = std::sync::mpsc::sync_channel::<Vec<Bytes>>(BATCHES_WAITING);
        let writing = std::thread::Builder::new()
            .name("lakegate-put-write".into())
            .spawn_scoped(scope, move || disk.iter().try_for_each(|batch| write_batch(file, &batch)));
        let Ok(writing) = writing else {
            return Ok(false);
        };
        while let Some(batch) = waiting.blocking_recv() {
            digests.update(&batch);
            if to_disk.send(batch).is_err() {
                break; // the write failed; its error is the one to report
            }
        }
        drop(to_disk);
        writing.join().unwrap_or_else(|_| Err(std::io::Error::other("the thread writing a body panicked")))?;
        Ok(true)
    })
}

/// What a body hashes to, as it goes.
struct Digests {
    md5: Md5,
    checksums: ChecksumHasher,
}

impl Digests {
    /// Takes in `batch`; its length.
    fn update(&mut self, batch: &[Bytes]) -> usize {
        batch.iter().fold(0, |len, chunk| {
            self.md5.update(chunk);
            self.checksums.update(chunk);
            len + chunk.len()
        })
    }

    fn of(self, file: NamedTempFile) -> Received {
        Received { file, md5: self.md5.finalize().into(), checksum: self.checksums.finalize() }
    }
}

fn write_batch(file: &mut NamedTempFile, batch: &[Bytes]) -> std::io::Result<()> {
    batch.iter().try_for_each(|chunk| file.write_all(chunk))
}

/// Sends `body` to the writer in batches; `IncompleteBody` if it failed before its end. A writer gone early
/// (it failed) stops the sending; the caller reports the writer's error.
async fn send_in_batches(mut body: StreamingBlob, batches: mpsc::Sender<Vec<Bytes>>) -> S3Result<()> {
    let mut batch = Vec::new();
    let mut batched = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::debug!(error = %e, "a request body to the embedded store failed");
            s3_error!(IncompleteBody, "The request body ended before it was complete.")
        })?;
        batched += chunk.len();
        batch.push(chunk);
        if batched >= BATCH_BYTES {
            if batches.send(std::mem::take(&mut batch)).await.is_err() {
                return Ok(());
            }
            batched = 0;
        }
    }
    if !batch.is_empty() {
        // An error here is the writer's, reported by the caller.
        let _ = batches.send(batch).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(chunks: Vec<Result<Bytes, std::io::Error>>) -> StreamingBlob {
        StreamingBlob::wrap(futures::stream::iter(chunks))
    }

    fn md5_b64(bytes: &[u8]) -> String {
        STANDARD.encode(Md5::digest(bytes))
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .map(|entries| {
                entries.filter_map(Result::ok).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_body_in_many_chunks_is_received_whole_with_its_md5_and_the_checksums_claimed() {
        let dir = tempfile::tempdir().unwrap();
        // Chunks across several batches, the last batch short; past SPLIT_AFTER, so written by a thread of its own.
        let chunks: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 100_003])).collect();
        let whole: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let sha256 = STANDARD.encode(<sha2::Sha256 as sha2::Digest>::digest(&whole));
        let claimed = Claimed::new(
            Some(&md5_b64(&whole)),
            Checksum { checksum_sha256: Some(sha256.clone()), ..Default::default() },
        )
        .unwrap();
        let received = receive(dir.path(), body(chunks.into_iter().map(Ok).collect()), &claimed).await.unwrap();
        assert_eq!(received.md5_hex(), hex::encode(Md5::digest(&whole)));
        assert_eq!(received.checksum.checksum_sha256, Some(sha256));
        assert_eq!(received.checksum.checksum_crc32, None, "only what was claimed is computed");
        let dest = dir.path().join("sh/object");
        received.place(&dest).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), whole);
        assert_eq!(files_in(dir.path()), ["sh"], "no temporary file is left");
    }

    #[tokio::test]
    async fn a_body_that_is_not_what_its_digests_say_is_bad_digest_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = Bytes::from_static(b"what was sent");
        let wrong_md5 = Claimed::new(Some(&md5_b64(b"something else")), Checksum::default()).unwrap();
        let wrong_crc = Claimed::new(
            Some(&md5_b64(&data)),
            Checksum { checksum_crc32: Some("AAAAAA==".into()), ..Default::default() },
        )
        .unwrap();
        for claimed in [wrong_md5, wrong_crc] {
            let refused = receive(dir.path(), body(vec![Ok(data.clone())]), &claimed).await.unwrap_err();
            assert_eq!(refused.code(), &S3ErrorCode::BadDigest);
            assert!(files_in(dir.path()).is_empty(), "left behind: {:?}", files_in(dir.path()));
        }
    }

    #[tokio::test]
    async fn a_body_that_fails_before_its_end_is_incomplete_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        // Before and after the writes move to a thread of their own.
        for sent in [300_000, 3 * SPLIT_AFTER] {
            let chunks = vec![Ok(Bytes::from(vec![1u8; sent])), Err(std::io::Error::other("connection reset"))];
            let refused = receive(dir.path(), body(chunks), &Claimed::default()).await.unwrap_err();
            assert_eq!(refused.code(), &S3ErrorCode::IncompleteBody, "after {sent} bytes");
            assert!(files_in(dir.path()).is_empty(), "left behind: {:?}", files_in(dir.path()));
        }
    }

    #[test]
    fn a_content_md5_that_is_not_the_base64_of_sixteen_bytes_is_invalid_digest() {
        for bad in ["", "not base64!", "AAAA", &STANDARD.encode([0u8; 20])] {
            let refused = Claimed::new(Some(bad), Checksum::default()).unwrap_err();
            assert_eq!(refused.code(), &S3ErrorCode::InvalidDigest, "{bad:?}");
        }
        assert!(Claimed::new(Some(&md5_b64(b"x")), Checksum::default()).is_ok());
    }
}

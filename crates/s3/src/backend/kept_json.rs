//! Small JSON files of the embedded store, parsed once and kept while the file on disk is unchanged.
//!
//! Every GET of the embedded store reads the object's two attribute files (content type and user metadata; the
//! ETag and checksums): two opens, reads and closes and two JSON parses, a sixth of the CPU time of a 4 KiB GET
//! (docs/benchmarks.md). They change only when the object is written. A kept copy is used when the file's status
//! (`statx`: device, inode, size, modification and change times) is the one it had when it was read; one system
//! call instead of four and a parse.
//!
//! The change time (ctime) cannot be set by a writer, but it is taken from the kernel's coarse clock, so two
//! writes a few milliseconds apart may leave a file of the same size with the same times. A file is therefore
//! kept only once its change time lies [`SETTLED`] in the past when it is read: any later write then gives it a
//! change time that differs. Whatever writes the file (this process, s3s-fs, another process), a changed file is
//! read again.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lakegate_core::per_cpu_cache::PerCpuCache;
use s3s::S3Result;

use super::object_file::internal_error;
use super::store_dir::{StoreDir, status_of};

/// How long ago a file must have last changed before its parsed copy is kept (see the module's note).
pub(super) const SETTLED: Duration = Duration::from_secs(1);
/// Largest file read; s3s-fs writes a few hundred bytes.
const MAX_BYTES: u64 = 1024 * 1024;
/// Bounds what the kept copies take, counted as the bytes of their files and paths.
const WEIGHT_CAPACITY: u64 = 16 * 1024 * 1024;
const ESTIMATED_ENTRIES: usize = 16 * 1024;

/// Parsed files of one kind, by their names below the store's root. The name's bytes are the key: hashing a
/// `Path` walks its components, and over a GET's two lookups of ~130-byte paths `Path`'s `Hash` alone took 0.8% of
/// a 4 KiB GET's samples (docs/benchmarks.md).
pub(super) struct KeptJson<T> {
    kept: PerCpuCache<Box<[u8]>, Kept<T>, Weight>,
    settled: Duration,
}

/// One file's parsed content and the status it had when read.
struct Kept<T> {
    stamp: Stamp,
    value: Arc<T>,
}

impl<T> Clone for Kept<T> {
    fn clone(&self) -> Self {
        Kept { stamp: self.stamp, value: self.value.clone() }
    }
}

/// What tells one version of a file from another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    dev: (u32, u32),
    ino: u64,
    size: u64,
    mtime: (i64, u32),
    ctime: (i64, u32),
}

impl Stamp {
    fn of(stat: &rustix::fs::Statx) -> Self {
        Stamp {
            dev: (stat.stx_dev_major, stat.stx_dev_minor),
            ino: stat.stx_ino,
            size: stat.stx_size,
            mtime: (stat.stx_mtime.tv_sec, stat.stx_mtime.tv_nsec),
            ctime: (stat.stx_ctime.tv_sec, stat.stx_ctime.tv_nsec),
        }
    }

    /// Whether the file last changed at least `settled` before `now`.
    fn settled(&self, now: SystemTime, settled: Duration) -> bool {
        let Ok(now) = now.duration_since(UNIX_EPOCH) else { return false };
        let Ok(secs) = u64::try_from(self.ctime.0) else { return false };
        Duration::new(secs, self.ctime.1).saturating_add(settled) <= now
    }
}

#[derive(Clone)]
struct Weight;

impl<T> quick_cache::Weighter<Box<[u8]>, Kept<T>> for Weight {
    fn weight(&self, path: &Box<[u8]>, kept: &Kept<T>) -> u64 {
        128 + path.len() as u64 + kept.stamp.size
    }
}

impl<T: serde::de::DeserializeOwned> Default for KeptJson<T> {
    fn default() -> Self {
        Self::settling_for(SETTLED)
    }
}

impl<T: serde::de::DeserializeOwned> KeptJson<T> {
    /// Keeps a file's parsed copy once the file has not changed for `settled`.
    pub(super) fn settling_for(settled: Duration) -> Self {
        KeptJson { kept: PerCpuCache::with_weighter(ESTIMATED_ENTRIES, WEIGHT_CAPACITY, Weight), settled }
    }

    /// The parsed content of the file `name` below the store's root; `None` when there is none.
    pub(super) fn read(&self, dir: &StoreDir, name: &str) -> S3Result<Option<Arc<T>>> {
        let stat = match dir.status(name) {
            Ok(stat) => stat,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(internal_error(e)),
        };
        let key = name.as_bytes();
        if let Some(kept) = self.kept.get(key)
            && kept.stamp == Stamp::of(&stat)
        {
            return Ok(Some(kept.value));
        }
        let file = match dir.open_file(name) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(internal_error(e)),
        };
        // The status of the file actually read: it may have been replaced since the first look.
        let stamp = Stamp::of(&status_of(&file).map_err(internal_error)?);
        let mut text = Vec::new();
        file.take(MAX_BYTES).read_to_end(&mut text).map_err(internal_error)?;
        let value: Arc<T> = Arc::new(serde_json::from_slice(&text).map_err(internal_error)?);
        if stamp.settled(SystemTime::now(), self.settled) {
            self.kept.insert(key.into(), Kept { stamp, value: value.clone() });
        }
        Ok(Some(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Json = serde_json::Map<String, serde_json::Value>;

    fn value(kept: &Option<Arc<Json>>) -> Option<&str> {
        kept.as_ref().and_then(|m| m.get("e_tag")).and_then(serde_json::Value::as_str)
    }

    #[test]
    fn a_file_read_again_unchanged_is_the_copy_kept() {
        // The copies are kept per CPU: a lookup from another CPU than the insert's would miss.
        lakegate_core::per_cpu_cache::stay_on_this_cpu();
        let dir = tempfile::tempdir().expect("dir");
        let (root, name) = (StoreDir::open(dir.path()).expect("root"), "a.internal.json");
        std::fs::write(dir.path().join(name), r#"{"e_tag":"one"}"#).expect("write");
        let files = KeptJson::<Json>::settling_for(Duration::ZERO);
        let first = files.read(&root, name).expect("read").expect("a file");
        let second = files.read(&root, name).expect("read").expect("a file");
        assert!(Arc::ptr_eq(&first, &second), "the second read is the kept copy");
    }

    #[test]
    fn a_file_replaced_rewritten_or_removed_is_read_anew() {
        let dir = tempfile::tempdir().expect("dir");
        let (root, name) = (StoreDir::open(dir.path()).expect("root"), "a.internal.json");
        let path = dir.path().join(name);
        std::fs::write(&path, r#"{"e_tag":"one"}"#).expect("write");
        let files = KeptJson::<Json>::settling_for(Duration::ZERO);
        assert_eq!(value(&files.read(&root, name).expect("read")), Some("one"));

        // Renamed over, as the store writes it: another inode.
        let tmp = dir.path().join("a.internal.json.tmp");
        std::fs::write(&tmp, r#"{"e_tag":"two"}"#).expect("write");
        std::fs::rename(&tmp, &path).expect("rename");
        assert_eq!(value(&files.read(&root, name).expect("read")), Some("two"));

        // Rewritten in place with another length: the same inode.
        std::fs::write(&path, r#"{"e_tag":"three!"}"#).expect("write");
        assert_eq!(value(&files.read(&root, name).expect("read")), Some("three!"));

        std::fs::remove_file(&path).expect("remove");
        assert_eq!(files.read(&root, name).expect("read"), None);
    }

    #[test]
    fn a_file_that_changed_within_the_settling_time_is_not_kept() {
        let dir = tempfile::tempdir().expect("dir");
        let (root, name) = (StoreDir::open(dir.path()).expect("root"), "a.metadata.json");
        std::fs::write(dir.path().join(name), r#"{"e_tag":"one"}"#).expect("write");
        let files = KeptJson::<Json>::default();
        let first = files.read(&root, name).expect("read").expect("a file");
        let second = files.read(&root, name).expect("read").expect("a file");
        assert!(!Arc::ptr_eq(&first, &second), "a file written just now is read each time");
        assert_eq!(value(&Some(second)), Some("one"));
    }

    #[test]
    fn settled_means_changed_at_least_that_long_ago() {
        let stamp = |secs| Stamp { dev: (1, 1), ino: 1, size: 1, mtime: (secs, 0), ctime: (secs, 0) };
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        assert!(stamp(100).settled(at(101), SETTLED));
        assert!(!stamp(100).settled(at(100), SETTLED));
        assert!(!stamp(-1).settled(at(100), SETTLED), "a change time before 1970 is never trusted");
    }
}

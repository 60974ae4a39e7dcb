//! The embedded store's keys: the name s3s-fs keeps each object under, and an index of every key in S3's order.
//!
//! s3s-fs keeps an object as a file at its key's path, and its attributes in files named after the base64 of the
//! key. That layout cannot hold what S3 holds: `a/b` and `a/b/c` both (a file and a directory of one name), bytes
//! under `a/b/` (a directory), or a key over about 160 bytes (a file name ends at 255 bytes). So s3s-fs is never
//! given a key. It is given the key's **stored name**, `<2 hex>/<62 hex>` of the key's SHA-256: always a plain
//! file one directory down, and short. What stored names cannot give back (the keys themselves, in byte order,
//! for listings; the uploads in progress and their keys) is kept per bucket in a SQLite file in the bucket's
//! directory ([`INDEX_FILE`]), so that a bucket's directory is the whole bucket: an operator who removes it
//! removes its index too.
//!
//! The files are the truth for reads (a GET needs no index); the index follows them. After every write the
//! store reads back what is at the stored name and records that ([`KeyIndex::refresh`]), or forgets the key when
//! nothing is there, so two writes of one key that race leave the index as the files are.
//!
//! A store written by an older Lakegate (s3s-fs's own layout, keys as paths) is moved to this layout bucket by
//! bucket when the store opens ([`migrate`]), from a plan recorded in the index first, so that a migration cut
//! off half-way resumes where it stopped.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rusqlite::{Connection, params};
use s3s::{S3Error, S3ErrorCode, S3Result, s3_error};
use sha2::{Digest, Sha256};

use super::uploads::Upload;

/// The index of a bucket, in the bucket's directory (SQLite adds `-wal` and `-shm` beside it).
pub(super) const INDEX_FILE: &str = ".lakegate-keys.sqlite";

/// `PRAGMA user_version` of an index: a migration was planned and has not finished.
const MIGRATING: i64 = 1;
/// `PRAGMA user_version` of an index that holds every key of its bucket.
const READY: i64 = 2;

/// Indexes kept open at once; a store has few buckets, tests make and remove hundreds.
const MAX_OPEN: usize = 64;

/// The name s3s-fs keeps `key` under, relative to its bucket's directory.
pub(super) fn stored_key(key: &str) -> String {
    let mut name = String::with_capacity(STORED_KEY_LEN);
    push_stored_key(&mut name, key);
    name
}

/// Length of a stored name: the key's SHA-256 in hex, split after its first two digits.
pub(super) const STORED_KEY_LEN: usize = 65;

/// Appends [`stored_key`]`(key)` to `out`, for a caller building a longer name around it.
pub(super) fn push_stored_key(out: &mut String, key: &str) {
    // Into a buffer, not through `hex::encode` (which builds its `String` a `char` at a time, and then `format!`
    // a second one): this runs on every GET.
    let mut digits = [0u8; 64];
    let _ = hex::encode_to_slice(Sha256::digest(key.as_bytes()), &mut digits);
    for (i, &digit) in digits.iter().enumerate() {
        if i == 2 {
            out.push('/');
        }
        out.push(char::from(digit));
    }
}

/// Whether `relative` (a path under a bucket's directory) has the shape of a stored name.
fn is_stored_name(relative: &str) -> bool {
    relative.split_once('/').is_some_and(|(shard, rest)| {
        shard.len() == 2 && rest.len() == 62 && relative.bytes().all(|b| b == b'/' || b.is_ascii_hexdigit())
    })
}

/// One object as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IndexedObject {
    pub key: String,
    pub size: u64,
    pub e_tag: String,
    pub modified: SystemTime,
}

/// One entry of a listing page, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Listed {
    Object(IndexedObject),
    /// A common prefix: the keys up to and including the delimiter's first occurrence after the prefix.
    Prefix(String),
}

impl Listed {
    /// The key or common prefix (what a marker or continuation token names).
    pub fn name(&self) -> &str {
        match self {
            Listed::Object(o) => &o.key,
            Listed::Prefix(p) => p,
        }
    }
}

/// What a listing asks for.
#[derive(Debug, Clone, Copy)]
pub(super) struct ListQuery<'a> {
    pub prefix: &'a str,
    pub delimiter: Option<&'a str>,
    /// Only entries after this key (a marker, `start-after` or continuation token).
    pub after: Option<&'a str>,
    pub max: usize,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Listing {
    pub entries: Vec<Listed>,
    pub truncated: bool,
}

/// The embedded store's per-bucket key indexes, opened on first use.
pub(super) struct KeyIndex {
    root: PathBuf,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    indexes: HashMap<String, OpenIndex>,
    uses: u64,
}

struct OpenIndex {
    conn: Connection,
    /// Device and inode of the index file when it was opened: a bucket directory removed and made again (by an
    /// operator) has a new index, and the one held open is stale.
    identity: (u64, u64),
    last_use: u64,
}

fn internal(e: impl std::fmt::Display) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, format!("the embedded store's key index: {e}"))
}

fn identity(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The smallest byte string after every string that starts with `prefix`; `None` when there is none.
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// The smallest byte string after `key` (keys never hold a NUL: the front refuses control characters).
fn just_after(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

impl KeyIndex {
    pub fn new(root: &Path) -> Self {
        Self { root: root.to_owned(), open: Mutex::new(Open::default()) }
    }

    /// Opens the index of every bucket of the store, migrating buckets kept in s3s-fs's own layout.
    pub fn open_all(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
            if !name.starts_with('.') && entry.file_type()?.is_dir() {
                self.with(&name, |_| Ok(())).map_err(|e| std::io::Error::other(format!("bucket {name}: {e:?}")))?;
            }
        }
        Ok(())
    }

    /// Runs `f` on `bucket`'s index, opening it first if needed. `NoSuchBucket` when the bucket's directory does
    /// not exist. Each call is short (one statement or one small transaction), so the indexes share one lock.
    fn with<T>(&self, bucket: &str, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> S3Result<T> {
        let mut parts = Path::new(bucket).components();
        if !(matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none()) {
            return Err(s3_error!(NoSuchBucket));
        }
        let dir = self.root.join(bucket);
        let file = dir.join(INDEX_FILE);
        // The lock only guards a map of connections: a panic elsewhere cannot leave it half changed.
        let mut open = self.open.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        open.uses += 1;
        let uses = open.uses;
        let current = identity(&file);
        let fresh = open.indexes.get(bucket).is_some_and(|o| Some(o.identity) == current);
        if !fresh {
            open.indexes.remove(bucket);
            if !dir.is_dir() {
                return Err(s3_error!(NoSuchBucket));
            }
            let conn = open_index(&self.root, bucket).map_err(internal)?;
            let identity = identity(&file).ok_or_else(|| internal("the index file vanished as it was opened"))?;
            if open.indexes.len() >= MAX_OPEN
                && let Some(oldest) = open.indexes.iter().min_by_key(|(_, o)| o.last_use).map(|(b, _)| b.clone())
            {
                open.indexes.remove(&oldest);
            }
            open.indexes.insert(bucket.to_owned(), OpenIndex { conn, identity, last_use: uses });
        }
        let index = open.indexes.get_mut(bucket).ok_or_else(|| internal("the index was not kept open"))?;
        index.last_use = uses;
        f(&index.conn).map_err(internal)
    }

    /// Opens `bucket`'s index, creating it (empty) for a bucket just made.
    pub fn open(&self, bucket: &str) -> S3Result<()> {
        self.with(bucket, |_| Ok(()))
    }

    /// Records what is stored under `key` now: its size, modification time and ETag, or nothing when no object
    /// is there. Called after every write of the key.
    pub fn refresh(&self, bucket: &str, key: &str) -> S3Result<()> {
        let found = read_stored(&self.root, bucket, key).map_err(internal)?;
        self.with(bucket, |conn| record(conn, key, found.as_ref()))
    }

    /// One page of `bucket`'s keys.
    pub fn list(&self, bucket: &str, query: ListQuery<'_>) -> S3Result<Listing> {
        self.with(bucket, |conn| list(conn, query))
    }

    pub fn add_upload(&self, bucket: &str, upload_id: &str, key: &str) -> S3Result<()> {
        self.with(bucket, |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO uploads (upload_id, key, initiated_ms) VALUES (?1, ?2, ?3)",
                params![upload_id, key.as_bytes(), unix_ms(SystemTime::now())],
            )
            .map(drop)
        })
    }

    pub fn remove_upload(&self, bucket: &str, upload_id: &str) -> S3Result<()> {
        self.with(bucket, |conn| {
            conn.execute("DELETE FROM parts WHERE upload_id = ?1", [upload_id])?;
            conn.execute("DELETE FROM uploads WHERE upload_id = ?1", [upload_id]).map(drop)
        })
    }

    /// Records the ETag of a part just uploaded (s3s-fs keeps only the part's bytes; S3 lists each part's ETag).
    pub fn record_part(&self, bucket: &str, upload_id: &str, number: i32, e_tag: &str) -> S3Result<()> {
        self.with(bucket, |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO parts (upload_id, number, etag) VALUES (?1, ?2, ?3)",
                params![upload_id, number, e_tag],
            )
            .map(drop)
        })
    }

    /// The recorded ETags of an upload's parts, by part number.
    pub fn part_e_tags(&self, bucket: &str, upload_id: &str) -> S3Result<HashMap<i32, String>> {
        self.with(bucket, |conn| {
            let mut stmt = conn.prepare_cached("SELECT number, etag FROM parts WHERE upload_id = ?1")?;
            let rows = stmt.query_map([upload_id], |r| Ok((r.get::<_, i32>(0)?, r.get::<_, String>(1)?)))?;
            rows.collect()
        })
    }

    /// The uploads in progress in `bucket`, in S3's order (key, then initiation).
    pub fn uploads(&self, bucket: &str) -> S3Result<Vec<Upload>> {
        self.with(bucket, |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT key, upload_id, initiated_ms FROM uploads ORDER BY key, initiated_ms, upload_id",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, String>(1)?, r.get(2)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (key, upload_id, initiated) = row?;
                if let Ok(key) = String::from_utf8(key) {
                    out.push(Upload { key, upload_id, initiated: from_unix_ms(initiated) });
                }
            }
            Ok(out)
        })
    }
}

/// What is stored under a key: size, modification time, ETag.
struct Stored {
    size: u64,
    modified: SystemTime,
    e_tag: String,
}

/// Reads the object stored under `key` (its file and s3s-fs's `internal` attributes), if there is one.
fn read_stored(root: &Path, bucket: &str, key: &str) -> std::io::Result<Option<Stored>> {
    let path = root.join(bucket).join(stored_key(key));
    let meta = match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => meta,
        Ok(_) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let info: serde_json::Map<String, serde_json::Value> =
        super::object_file::read_json(&super::object_file::metadata_path(root, bucket, key, "internal"))
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?
            .unwrap_or_default();
    let e_tag = match info.get("e_tag").and_then(serde_json::Value::as_str) {
        Some(e_tag) => e_tag.to_owned(),
        None => super::object_file::md5_of(&std::fs::File::open(&path)?)?,
    };
    Ok(Some(Stored { size: meta.len(), modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), e_tag }))
}

fn record(conn: &Connection, key: &str, found: Option<&Stored>) -> rusqlite::Result<()> {
    match found {
        Some(s) => conn.execute(
            "INSERT OR REPLACE INTO objects (key, size, etag, modified_ms) VALUES (?1, ?2, ?3, ?4)",
            params![key.as_bytes(), i64::try_from(s.size).unwrap_or(i64::MAX), s.e_tag, unix_ms(s.modified)],
        ),
        None => conn.execute("DELETE FROM objects WHERE key = ?1", [key.as_bytes()]),
    }
    .map(drop)
}

/// A page of keys, walked in byte order (SQLite compares BLOBs as `memcmp`, which is S3's order for UTF-8). A
/// common prefix is one entry however many keys it stands for: the walk jumps past it.
fn list(conn: &Connection, q: ListQuery<'_>) -> rusqlite::Result<Listing> {
    let mut entries = Vec::new();
    if q.max == 0 {
        return Ok(Listing { entries, truncated: false });
    }
    let prefix = q.prefix.as_bytes();
    let mut lower = prefix.to_vec();
    if let Some(after) = q.after {
        lower = lower.max(just_after(after.as_bytes()));
    }
    let mut stmt =
        conn.prepare_cached("SELECT key, size, etag, modified_ms FROM objects WHERE key >= ?1 ORDER BY key LIMIT ?2")?;
    loop {
        // One row more than fits in the page: it tells a full page from a truncated one.
        let want = q.max - entries.len() + 1;
        let rows = stmt
            .query_map(params![lower, i64::try_from(want).unwrap_or(i64::MAX)], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let exhausted = rows.len() < want;
        let mut jumped = false;
        for (key, size, e_tag, modified) in rows {
            if !key.starts_with(prefix) {
                return Ok(Listing { entries, truncated: false });
            }
            if entries.len() == q.max {
                return Ok(Listing { entries, truncated: true });
            }
            // Keys are written from `&str`; anything else is not a key of this store, and is stepped over.
            let key = match String::from_utf8(key) {
                Ok(key) => key,
                Err(e) => {
                    lower = just_after(e.as_bytes());
                    continue;
                }
            };
            let rest = key.get(q.prefix.len()..).unwrap_or_default();
            if let Some(delimiter) = q.delimiter
                && let Some(at) = rest.find(delimiter)
            {
                let common = key.get(..q.prefix.len() + at + delimiter.len()).unwrap_or_default().to_owned();
                let next = successor(common.as_bytes());
                // A marker inside a common prefix has already shown it.
                if q.after.is_none_or(|after| common.as_str() > after) {
                    entries.push(Listed::Prefix(common));
                }
                match next {
                    Some(next) => lower = next,
                    None => return Ok(Listing { entries, truncated: false }),
                }
                jumped = true;
                break;
            }
            lower = just_after(key.as_bytes());
            let size = u64::try_from(size).unwrap_or(0);
            entries.push(Listed::Object(IndexedObject { key, size, e_tag, modified: from_unix_ms(modified) }));
        }
        if !jumped && exhausted {
            return Ok(Listing { entries, truncated: false });
        }
    }
}

/// Opens (creating) `bucket`'s index, and migrates the bucket from s3s-fs's own layout when it was never indexed.
fn open_index(root: &Path, bucket: &str) -> Result<Connection, MigrationError> {
    let conn = Connection::open(root.join(bucket).join(INDEX_FILE))?;
    // WAL: readers do not wait for the writer, and a commit is not an fsync (the object files are not synced
    // either; the index is rebuilt from nothing only by migration, see `migrate`).
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))?;
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS objects (
             key BLOB PRIMARY KEY, size INTEGER NOT NULL, etag TEXT NOT NULL, modified_ms INTEGER NOT NULL
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS uploads (
             upload_id TEXT PRIMARY KEY, key BLOB NOT NULL, initiated_ms INTEGER NOT NULL
         );
         CREATE TABLE IF NOT EXISTS parts (
             upload_id TEXT NOT NULL, number INTEGER NOT NULL, etag TEXT NOT NULL, PRIMARY KEY (upload_id, number)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS migration (
             key BLOB NOT NULL, upload_id TEXT NOT NULL, marker INTEGER NOT NULL, PRIMARY KEY (key, upload_id)
         );",
    )?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version < READY {
        migrate(root, bucket, &conn, version)?;
    }
    Ok(conn)
}

/// Why a bucket could not be moved to the stored-name layout.
#[derive(Debug, thiserror::Error)]
enum MigrationError {
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Moves a bucket kept in s3s-fs's own layout (an object at `<bucket>/<key>`, attributes named after the key, a
/// zero-byte `PUT a/b/` as the empty directory `a/b`) to stored names, and indexes every key.
///
/// In three steps, each of which may be cut off and run again: the plan (every key and upload found) is
/// committed to the index first; then each planned key is moved and indexed; then the emptied directories go and
/// the index is marked ready. A new, empty bucket has an empty plan.
fn migrate(root: &Path, bucket: &str, conn: &Connection, version: i64) -> Result<(), MigrationError> {
    let bucket_dir = root.join(bucket);
    if version < MIGRATING {
        let (keys, markers) = old_keys(&bucket_dir)?;
        let uploads = old_uploads(root, bucket)?;
        let tx = conn.unchecked_transaction()?;
        for (key, marker) in keys.iter().map(|k| (k, false)).chain(markers.iter().map(|k| (k, true))) {
            tx.execute("INSERT OR REPLACE INTO migration VALUES (?1, '', ?2)", params![key.as_bytes(), marker])?;
        }
        for (key, upload_id) in &uploads {
            tx.execute("INSERT OR REPLACE INTO migration VALUES (?1, ?2, 0)", params![key.as_bytes(), upload_id])?;
        }
        tx.pragma_update(None, "user_version", MIGRATING)?;
        tx.commit()?;
        if !keys.is_empty() || !markers.is_empty() || !uploads.is_empty() {
            tracing::info!(
                bucket,
                objects = keys.len() + markers.len(),
                uploads = uploads.len(),
                "moving the bucket to the embedded store's stored-name layout"
            );
        }
    }
    let planned: Vec<(Vec<u8>, String, bool)> = conn
        .prepare("SELECT key, upload_id, marker FROM migration")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    for (key, upload_id, marker) in planned {
        let Ok(key) = String::from_utf8(key) else { continue };
        if upload_id.is_empty() {
            move_object(root, bucket, &key, marker)?;
            record(conn, &key, read_stored(root, bucket, &key)?.as_ref())?;
        } else {
            let initiated = move_upload(root, bucket, &key, &upload_id)?;
            if let Some(initiated) = initiated {
                conn.execute(
                    "INSERT OR REPLACE INTO uploads (upload_id, key, initiated_ms) VALUES (?1, ?2, ?3)",
                    params![upload_id, key.as_bytes(), unix_ms(initiated)],
                )?;
            }
        }
    }
    remove_empty_dirs(&bucket_dir, true)?;
    let tx = conn.unchecked_transaction()?;
    tx.execute("DELETE FROM migration", [])?;
    tx.pragma_update(None, "user_version", READY)?;
    tx.commit()?;
    Ok(())
}

/// The keys of a bucket in s3s-fs's layout: its files, and its empty directories (zero-byte `a/b/` objects).
fn old_keys(bucket_dir: &Path) -> std::io::Result<(Vec<String>, Vec<String>)> {
    let (mut keys, mut markers) = (Vec::new(), Vec::new());
    let mut pending = vec![(bucket_dir.to_owned(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let mut empty = true;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            empty = false;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                tracing::warn!(path = %entry.path().display(), "not UTF-8, so no S3 key: left where it is");
                continue;
            };
            if prefix.is_empty() && name.starts_with(INDEX_FILE) {
                continue;
            }
            let key = format!("{prefix}{name}");
            if entry.file_type()?.is_dir() {
                pending.push((entry.path(), format!("{key}/")));
            } else if is_stored_name(&key) {
                // Already a stored name: this bucket was indexed before and its index is gone. The key it stood
                // for cannot be known from the name.
                tracing::warn!(path = %entry.path().display(), "an object under a stored name without its index");
            } else {
                keys.push(key);
            }
        }
        if empty && !prefix.is_empty() {
            markers.push(prefix);
        }
    }
    Ok((keys, markers))
}

/// The uploads in progress of `bucket` in s3s-fs's layout: `(key, upload id)` of each
/// `.bucket-<b64>.object-<b64>.upload-<id>.metadata.json` beside its `.upload-<id>.json`.
fn old_uploads(root: &Path, bucket: &str) -> std::io::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root)? {
        let name = entry?.file_name();
        let Some((b, key, upload_id)) = name.to_str().and_then(super::uploads::parse_metadata_name) else { continue };
        if b == bucket && !is_stored_name(&key) && root.join(format!(".upload-{upload_id}.json")).exists() {
            out.push((key, upload_id));
        }
    }
    Ok(out)
}

/// Renames `from` to `to` when `from` exists (so a step run twice does nothing the second time).
fn rename_if_there(from: &Path, to: &Path) -> std::io::Result<()> {
    match std::fs::rename(from, to) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// An attribute file as s3s-fs's own layout names it: after the key itself rather than its stored name.
fn old_attribute_file(root: &Path, bucket: &str, key: &str, kind: &str) -> PathBuf {
    super::object_file::attribute_file(root, &URL_SAFE_NO_PAD.encode(bucket), &URL_SAFE_NO_PAD.encode(key), kind)
}

/// Moves one object of s3s-fs's layout, and its attribute files, to its stored name.
fn move_object(root: &Path, bucket: &str, key: &str, marker: bool) -> std::io::Result<()> {
    let bucket_dir = root.join(bucket);
    let old = bucket_dir.join(key.trim_end_matches('/'));
    let new = bucket_dir.join(stored_key(key));
    if let Some(parent) = new.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if marker {
        if old.is_dir() && !new.exists() {
            std::fs::write(&new, b"")?;
        }
        // Removed only if still empty; `remove_empty_dirs` takes what is left.
        let _ = std::fs::remove_dir(&old);
        return Ok(());
    }
    for kind in ["metadata", "internal"] {
        rename_if_there(
            &old_attribute_file(root, bucket, key, kind),
            &super::object_file::metadata_path(root, bucket, key, kind),
        )?;
    }
    rename_if_there(&old, &new)
}

/// Moves one upload's attribute file to its stored name; returns when the upload began, or `None` when it is no
/// longer in progress.
fn move_upload(root: &Path, bucket: &str, key: &str, upload_id: &str) -> std::io::Result<Option<SystemTime>> {
    let kind = format!("upload-{upload_id}.metadata");
    rename_if_there(
        &old_attribute_file(root, bucket, key, &kind),
        &super::object_file::metadata_path(root, bucket, key, &kind),
    )?;
    Ok(std::fs::metadata(root.join(format!(".upload-{upload_id}.json")))
        .ok()
        .map(|m| m.modified().unwrap_or(SystemTime::UNIX_EPOCH)))
}

/// Removes the directories left empty under `dir` (not `dir` itself when `top`).
fn remove_empty_dirs(dir: &Path, top: bool) -> std::io::Result<bool> {
    let mut empty = true;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            if !remove_empty_dirs(&entry.path(), false)? {
                empty = false;
            }
        } else {
            empty = false;
        }
    }
    if empty && !top {
        std::fs::remove_dir(dir)?;
    }
    Ok(empty)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn index_with(keys: &[&str]) -> (tempfile::TempDir, KeyIndex) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("b")).unwrap();
        let index = KeyIndex::new(dir.path());
        let stored = Stored { size: 1, modified: SystemTime::UNIX_EPOCH, e_tag: "e".into() };
        for key in keys {
            index.with("b", |conn| record(conn, key, Some(&stored))).unwrap();
        }
        (dir, index)
    }

    fn names(listing: &Listing) -> Vec<&str> {
        listing.entries.iter().map(Listed::name).collect()
    }

    fn query<'a>(prefix: &'a str, delimiter: Option<&'a str>, after: Option<&'a str>, max: usize) -> ListQuery<'a> {
        ListQuery { prefix, delimiter, after, max }
    }

    #[test]
    fn stored_names_are_short_plain_files_one_level_down() {
        for key in ["a", "a/b", "a/b/", &"k".repeat(1024), "../x", "ts=2024-01-01 00%3A00%3A00"] {
            let name = stored_key(key);
            assert!(is_stored_name(&name), "{name}");
            assert_eq!(name.len(), 65);
        }
        assert_ne!(stored_key("a/b"), stored_key("a/b/"));
        assert!(!is_stored_name("sales/2024/q1.csv"));
        // The layout on disk: the key's SHA-256 in lowercase hex, its first two digits a directory.
        assert_eq!(stored_key("a"), "ca/978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb");
    }

    #[test]
    fn keys_are_listed_in_byte_order_with_prefix_and_marker() {
        let (_d, index) = index_with(&["b", "a/c", "a", "a/b/", "é", "z"]);
        let all = index.list("b", query("", None, None, 1000)).unwrap();
        assert_eq!(names(&all), ["a", "a/b/", "a/c", "b", "z", "é"]);
        assert!(!all.truncated);
        let page = index.list("b", query("a", None, Some("a/b/"), 1)).unwrap();
        assert_eq!(names(&page), ["a/c"]);
        assert!(!page.truncated, "nothing after a/c starts with a");
        let first = index.list("b", query("", None, None, 2)).unwrap();
        assert_eq!((names(&first), first.truncated), (vec!["a", "a/b/"], true));
        assert!(index.list("b", query("", None, None, 0)).unwrap().entries.is_empty());
    }

    #[test]
    fn a_key_and_the_keys_below_it_are_all_objects_and_delimiters_group_them() {
        let (_d, index) = index_with(&["foo/bar", "foo/bar/xyzzy", "foo/baz/", "quux/thud", "asdf"]);
        let top = index.list("b", query("", Some("/"), None, 1000)).unwrap();
        assert_eq!(names(&top), ["asdf", "foo/", "quux/"]);
        let foo = index.list("b", query("foo/", Some("/"), None, 1000)).unwrap();
        assert_eq!(names(&foo), ["foo/bar", "foo/bar/", "foo/baz/"]);
        // A page boundary on a common prefix, and a marker inside one, continue after it.
        let first = index.list("b", query("", Some("/"), None, 2)).unwrap();
        assert_eq!((names(&first), first.truncated), (vec!["asdf", "foo/"], true));
        let next = index.list("b", query("", Some("/"), Some("foo/"), 2)).unwrap();
        assert_eq!((names(&next), next.truncated), (vec!["quux/"], false));
        let inside = index.list("b", query("", Some("/"), Some("foo/bar"), 10)).unwrap();
        assert_eq!(names(&inside), ["quux/"]);
    }

    #[test]
    fn rows_that_are_no_utf8_keys_are_stepped_over() {
        let (_d, index) = index_with(&["a", "c"]);
        for bad in [vec![b'b', 0xfe], vec![b'b', 0xff]] {
            index
                .with("b", |conn| conn.execute("INSERT INTO objects VALUES (?1, 1, 'e', 0)", [bad]).map(drop))
                .unwrap();
        }
        // A page that ends on them moves past them rather than asking for them again.
        let page = index.list("b", query("", None, Some("a"), 1)).unwrap();
        assert_eq!((names(&page), page.truncated), (vec!["c"], false));
    }

    #[test]
    fn at_most_so_many_indexes_stay_open_the_least_used_closed_first_and_reopened_when_asked_for() {
        let (dir, index) = index_with(&["kept"]);
        let buckets: Vec<String> = (0..MAX_OPEN + 8).map(|n| format!("bucket-{n}")).collect();
        let stored = Stored { size: 1, modified: SystemTime::UNIX_EPOCH, e_tag: "e".into() };
        for bucket in &buckets {
            std::fs::create_dir(dir.path().join(bucket)).unwrap();
            index.with(bucket, |conn| record(conn, &format!("in-{bucket}"), Some(&stored))).unwrap();
            // "b" is used all along, so it is never the least used.
            index.list("b", query("", None, None, 1)).unwrap();
        }
        let open = |index: &KeyIndex, bucket: &str| index.open.lock().unwrap().indexes.contains_key(bucket);
        assert_eq!(index.open.lock().unwrap().indexes.len(), MAX_OPEN);
        assert!(open(&index, "b"));
        assert!(!open(&index, "bucket-0") && open(&index, &format!("bucket-{}", MAX_OPEN + 7)));
        // A closed index is opened again as it was, with what was recorded in it before it was closed.
        assert_eq!(names(&index.list("b", query("", None, None, 10)).unwrap()), ["kept"]);
        assert_eq!(names(&index.list("bucket-0", query("", None, None, 10)).unwrap()), ["in-bucket-0"]);
        assert!(open(&index, "bucket-0"));
        assert_eq!(index.open.lock().unwrap().indexes.len(), MAX_OPEN);
    }

    #[test]
    fn a_removed_and_remade_bucket_has_a_new_empty_index() {
        let (dir, index) = index_with(&["x"]);
        std::fs::remove_dir_all(dir.path().join("b")).unwrap();
        assert!(index.list("b", query("", None, None, 10)).is_err(), "no bucket, no listing");
        std::fs::create_dir(dir.path().join("b")).unwrap();
        assert!(index.list("b", query("", None, None, 10)).unwrap().entries.is_empty());
    }

    #[test]
    fn a_bucket_in_s3s_fs_layout_is_moved_to_stored_names_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("b/sales/2024")).unwrap();
        std::fs::create_dir_all(root.join("b/empty/dir")).unwrap();
        std::fs::write(root.join("b/sales/2024/q1.csv"), b"region,amount\n").unwrap();
        std::fs::write(root.join("b/top"), b"x").unwrap();
        // s3s-fs's own name for it, written out: the test states the old layout independently of the code.
        let old_attr = root.join(format!(
            ".bucket-{}.object-{}.metadata.json",
            URL_SAFE_NO_PAD.encode("b"),
            URL_SAFE_NO_PAD.encode("sales/2024/q1.csv")
        ));
        std::fs::write(&old_attr, br#"{"content_type":"text/csv"}"#).unwrap();

        let index = KeyIndex::new(root);
        index.open_all().unwrap();
        let listed = index.list("b", query("", None, None, 10)).unwrap();
        assert_eq!(names(&listed), ["empty/dir/", "sales/2024/q1.csv", "top"]);
        let sizes: Vec<_> =
            listed.entries.iter().filter_map(|e| if let Listed::Object(o) = e { Some(o.size) } else { None }).collect();
        assert_eq!(sizes, [0, 14, 1]);
        assert_eq!(std::fs::read(root.join("b").join(stored_key("sales/2024/q1.csv"))).unwrap(), b"region,amount\n");
        assert!(!old_attr.exists());
        assert!(super::super::object_file::metadata_path(root, "b", "sales/2024/q1.csv", "metadata").exists());
        assert!(!root.join("b/sales").exists() && !root.join("b/empty").exists(), "old directories removed");

        // Opened again (a restart), nothing moves twice.
        let again = KeyIndex::new(root);
        again.open_all().unwrap();
        assert_eq!(names(&again.list("b", query("", None, None, 10)).unwrap()), names(&listed));
    }
}

//! The on-disk format: one JSON record per line, each linked to the one before by a SHA-256 hash, plus the
//! checkpoint file that pins the end of the chain.
//!
//! A line is `{"seq":N,"prev":"<hex>","hash":"<hex>","event":{...}}`. The hash covers the previous hash, the
//! sequence number and the exact bytes of `event` as written, so verification reads those bytes back with
//! `RawValue` and never depends on serialising parsed JSON the same way twice.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of the very first record.
pub const GENESIS: Hash = [0; 32];

/// Name of the checkpoint file beside the logs.
pub const CHECKPOINT_FILE: &str = "audit.head";

/// Lines longer than this are refused by the reader, so that a hostile file cannot make verification allocate
/// without bound. Events are far smaller: fronts bound SQL text and headers long before this.
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Separates this hash from any other use of SHA-256 over similar bytes, and names the format version.
const DOMAIN: &[u8] = b"lakegate-audit-v1\0";

/// The hash of a record: SHA-256 over the domain tag, `prev`, `seq` (8 bytes, big-endian) and the event bytes.
pub fn record_hash(prev: &Hash, seq: u64, event: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(prev);
    h.update(seq.to_be_bytes());
    h.update(event);
    h.finalize().into()
}

/// The newest link of a chain: what the next record continues from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// Sequence number of the last record.
    pub seq: u64,
    /// Hash of the last record.
    pub hash: Hash,
}

/// Builds the line for the record after `tip` (or the first record, when `tip` is `None`), newline included,
/// and returns it with the new tip.
pub fn encode_line(tip: Option<Tip>, event: &[u8]) -> (Vec<u8>, Tip) {
    let (seq, prev) = match tip {
        // u64 sequence numbers do not run out in practice; saturating keeps this total and a repeated
        // seq would show up in verification.
        Some(t) => (t.seq.saturating_add(1), t.hash),
        None => (0, GENESIS),
    };
    let hash = record_hash(&prev, seq, event);
    let mut line = Vec::with_capacity(event.len() + 180);
    line.extend_from_slice(b"{\"seq\":");
    // Writing to a Vec cannot fail.
    let _ = write!(line, "{seq}");
    line.extend_from_slice(b",\"prev\":\"");
    push_hex(&mut line, &prev);
    line.extend_from_slice(b"\",\"hash\":\"");
    push_hex(&mut line, &hash);
    line.extend_from_slice(b"\",\"event\":");
    line.extend_from_slice(event);
    line.extend_from_slice(b"}\n");
    (line, Tip { seq, hash })
}

/// Appends the lowercase hex of a hash (`hex::encode` goes through `char`s and a `String`: about a tenth
/// of the audit writer's time on small GETs).
fn push_hex(line: &mut Vec<u8>, hash: &Hash) {
    let mut digits = [0u8; 64];
    // Cannot fail: the output is exactly twice the input.
    let _ = hex::encode_to_slice(hash, &mut digits);
    line.extend_from_slice(&digits);
}

/// A line as stored. Unknown fields are refused: a field outside `event` would not be covered by the hash.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredLine<'a> {
    seq: u64,
    prev: &'a str,
    hash: &'a str,
    #[serde(borrow)]
    event: &'a RawValue,
}

/// A parsed record: its links, and whether its stored hash matches its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record {
    /// Sequence number.
    pub seq: u64,
    /// The stored hash of the previous record.
    pub prev: Hash,
    /// The stored hash of this record.
    pub hash: Hash,
    /// Whether `hash` recomputes from `prev`, `seq` and the event bytes.
    pub hash_ok: bool,
}

/// Why a line of the log is not a record.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("empty line")]
    Empty,
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{field}: {source}")]
    Hash { field: &'static str, source: BadHash },
}

/// A hash field that is not 64 hex digits.
#[derive(Debug, thiserror::Error)]
#[error("not a 64-digit hex SHA-256 ({0})")]
pub struct BadHash(hex::FromHexError);

/// Parses one line (without its newline). The error says what is wrong, for the report.
pub fn parse_line(line: &[u8]) -> Result<Record, LineError> {
    if line.is_empty() {
        return Err(LineError::Empty);
    }
    let stored: StoredLine<'_> = serde_json::from_slice(line)?;
    let prev = decode_hash(stored.prev).map_err(|source| LineError::Hash { field: "prev", source })?;
    let hash = decode_hash(stored.hash).map_err(|source| LineError::Hash { field: "hash", source })?;
    let computed = record_hash(&prev, stored.seq, stored.event.get().as_bytes());
    Ok(Record { seq: stored.seq, prev, hash, hash_ok: computed == hash })
}

fn decode_hash(text: &str) -> Result<Hash, BadHash> {
    let mut out = GENESIS;
    hex::decode_to_slice(text, &mut out).map_err(BadHash)?;
    Ok(out)
}

/// What [`read_line`] found.
pub enum Line {
    /// A complete line, newline stripped, in the buffer.
    Complete,
    /// Bytes without a final newline at the end of the file (a torn write, or an edit).
    Torn,
    /// A line longer than [`MAX_LINE_BYTES`].
    TooLong,
    /// End of file.
    End,
}

/// Reads one line into `buf` (cleared first) without ever holding more than [`MAX_LINE_BYTES`] + 1 bytes.
pub fn read_line(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> io::Result<Line> {
    buf.clear();
    let limit = u64::try_from(MAX_LINE_BYTES).unwrap_or(u64::MAX).saturating_add(1);
    let n = reader.by_ref().take(limit).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(Line::End);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        return Ok(Line::Complete);
    }
    if buf.len() > MAX_LINE_BYTES { Ok(Line::TooLong) } else { Ok(Line::Torn) }
}

/// The checkpoint: the last record the writer flushed, rewritten atomically after every batch, so that
/// cutting records off the end of the log is detectable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Sequence number of the last flushed record.
    pub seq: u64,
    /// Its hash, hex.
    pub hash: String,
    /// The file it is in (informational: verification does not rely on it).
    #[serde(default)]
    pub file: Option<String>,
}

impl Checkpoint {
    /// The checkpoint's link, if its hash is well formed.
    pub fn tip(&self) -> Result<Tip, BadHash> {
        Ok(Tip { seq: self.seq, hash: decode_hash(&self.hash)? })
    }
}

/// Why the checkpoint cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: too large for a checkpoint", .path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: {source}", .path.display())]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("{}: hash: {source}", .path.display())]
    Hash { path: PathBuf, source: BadHash },
}

/// Reads the checkpoint in `dir`; `Ok(None)` when there is none.
pub fn read_checkpoint(dir: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let path = dir.join(CHECKPOINT_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CheckpointError::Read { path, source }),
    };
    if bytes.len() > 4096 {
        return Err(CheckpointError::TooLarge { path });
    }
    let cp: Checkpoint = match serde_json::from_slice(&bytes) {
        Ok(cp) => cp,
        Err(source) => return Err(CheckpointError::Parse { path, source }),
    };
    if let Err(source) = cp.tip() {
        return Err(CheckpointError::Hash { path, source });
    }
    Ok(Some(cp))
}

/// The link the checkpoint in `dir` vouches for; `Ok(None)` when there is none.
pub fn read_checkpoint_tip(dir: &Path) -> Result<Option<Tip>, CheckpointError> {
    let path = || dir.join(CHECKPOINT_FILE);
    read_checkpoint(dir)?
        .map(|cp| cp.tip().map_err(|source| CheckpointError::Hash { path: path(), source }))
        .transpose()
}

/// Replaces the checkpoint atomically: write a temporary file, sync it, rename it over the old one. A reader
/// sees either the old or the new checkpoint, never half of one.
pub fn write_checkpoint(dir: &Path, tip: Tip, file: Option<&Path>) -> io::Result<()> {
    let cp = Checkpoint {
        seq: tip.seq,
        hash: hex::encode(tip.hash),
        file: file.and_then(|f| f.file_name()).map(|n| n.to_string_lossy().into_owned()),
    };
    let mut bytes = serde_json::to_vec(&cp).map_err(io::Error::other)?;
    bytes.push(b'\n');
    let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(CHECKPOINT_FILE))
}

/// File name of log number `n`: zero-padded so names sort in chain order.
pub fn log_file_name(n: u64) -> String {
    format!("audit-{n:08}.jsonl")
}

/// The number in a log file name written by [`log_file_name`].
pub fn log_file_number(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log files in `dir`, by number.
pub fn list_log_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some(n) = name.to_str().and_then(log_file_number) {
            files.push((n, entry.path()));
        }
    }
    files.sort();
    Ok(files)
}

/// Opens a log for reading.
pub fn open_read(path: &Path) -> io::Result<io::BufReader<File>> {
    Ok(io::BufReader::new(File::open(path)?))
}

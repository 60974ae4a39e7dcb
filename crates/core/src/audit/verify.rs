//! `lakegate audit verify`: checks that a set of log files forms one unbroken chain and that nothing was cut
//! off its end.
//!
//! The files are attacker-controlled input: every problem becomes a [`ChainBreak`], never a panic, and no
//! line is read beyond [`MAX_LINE_BYTES`](super::chain::MAX_LINE_BYTES).

use std::fmt;
use std::iter::Peekable;
use std::path::{Path, PathBuf};

use super::chain::{self, CHECKPOINT_FILE, GENESIS, Line, Record, Tip};

/// What is wrong at a [`ChainBreak`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BreakKind {
    /// The file could not be read.
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// The line is not a well-formed record.
    #[error("unparsable line: {0}")]
    Unparsable(String),
    /// The record's hash does not match its contents: the record was edited.
    #[error("edited: the record's hash does not match its contents")]
    Edited,
    /// A record whose sequence number was already passed sits where the next one should be.
    #[error("inserted: seq {found} appears where seq {expected} was expected, and the chain resumes after it")]
    Inserted {
        /// The sequence number the chain called for.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// Records are missing.
    #[error("deleted: records {first_missing}..={last_missing} are missing")]
    Gap {
        /// The first missing sequence number.
        first_missing: u64,
        /// The last missing sequence number.
        last_missing: u64,
    },
    /// Records are out of order.
    #[error("reordered: seq {found} appears where seq {expected} was expected")]
    Reordered {
        /// The sequence number the chain called for.
        expected: u64,
        /// The sequence number found.
        found: u64,
    },
    /// The record's `prev` is not the hash of the record before it: that record was replaced, or this one
    /// was forged in its place.
    #[error("broken link: prev does not match the hash of the record before")]
    BrokenLink,
    /// The checkpoint names a later record than the last one in the files: records were cut off the end.
    #[error(
        "truncated tail: the checkpoint {CHECKPOINT_FILE} records seq {checkpoint_seq}, but the log ends {}",
        match .last_seq { Some(s) => format!("at seq {s}"), None => "before any record".to_owned() }
    )]
    TruncatedTail {
        /// The sequence number in the checkpoint.
        checkpoint_seq: u64,
        /// The last sequence number in the files.
        last_seq: Option<u64>,
    },
    /// The checkpoint's hash differs from the record with its sequence number: the end was rewritten.
    #[error("checkpoint mismatch: {CHECKPOINT_FILE} holds a different hash for seq {checkpoint_seq}")]
    CheckpointMismatch {
        /// The sequence number in the checkpoint.
        checkpoint_seq: u64,
    },
    /// The checkpoint file itself is malformed.
    #[error("bad checkpoint: {0}")]
    BadCheckpoint(String),
}

/// Where and how the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {kind}", location(.file, *.line, *.seq))]
pub struct ChainBreak {
    /// The file where the break was found.
    pub file: PathBuf,
    /// The line (1-based), when the break is at a line.
    pub line: Option<u64>,
    /// The sequence number of the record at that line, when it has one.
    pub seq: Option<u64>,
    /// What is wrong.
    pub kind: BreakKind,
}

fn location(file: &Path, line: Option<u64>, seq: Option<u64>) -> String {
    let mut s = file.display().to_string();
    if let Some(l) = line {
        s.push_str(&format!(":{l}"));
    }
    if let Some(q) = seq {
        s.push_str(&format!(" (seq {q})"));
    }
    s
}

/// The summary of a chain that verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// The files that held records, in chain order.
    pub files: Vec<PathBuf>,
    /// Number of records.
    pub records: u64,
    /// The first sequence number: above 0 when older files were not given (or were removed).
    pub first_seq: Option<u64>,
    /// The last sequence number.
    pub last_seq: Option<u64>,
    /// The sequence number in the checkpoint that was checked against the chain, if one was found.
    pub checkpoint_seq: Option<u64>,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.first_seq, self.last_seq) {
            (Some(first), Some(last)) => {
                write!(f, "ok: {} records, seq {first}..={last}, in {} file(s)", self.records, self.files.len())?
            }
            _ => write!(f, "ok: no records")?,
        }
        if self.first_seq.is_some_and(|s| s > 0) {
            write!(f, "; the chain starts after older records not given here")?;
        }
        match self.checkpoint_seq {
            Some(s) => write!(f, "; checkpoint at seq {s} matches"),
            None => write!(f, "; no checkpoint checked (truncation of the tail is not detectable)"),
        }
    }
}

/// A record with where it was read.
struct Located {
    file: usize,
    line: u64,
    record: Record,
}

/// Reads records of the files in order, one line at a time.
struct Records<'a> {
    files: &'a [PathBuf],
    index: usize,
    reader: Option<std::io::BufReader<std::fs::File>>,
    line: u64,
    buf: Vec<u8>,
    done: bool,
}

impl<'a> Records<'a> {
    fn new(files: &'a [PathBuf]) -> Self {
        Records { files, index: 0, reader: None, line: 0, buf: Vec::new(), done: false }
    }

    fn path(&self) -> PathBuf {
        self.files.get(self.index).cloned().unwrap_or_default()
    }

    fn fail(&mut self, kind: BreakKind) -> Option<Result<Located, ChainBreak>> {
        self.done = true;
        Some(Err(ChainBreak { file: self.path(), line: (self.line > 0).then_some(self.line), seq: None, kind }))
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Located, ChainBreak>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let Some(path) = self.files.get(self.index) else {
                self.done = true;
                return None;
            };
            let reader = match &mut self.reader {
                Some(r) => r,
                None => match chain::open_read(path) {
                    Ok(r) => {
                        self.line = 0;
                        self.reader.insert(r)
                    }
                    Err(e) => return self.fail(BreakKind::Unreadable(e.to_string())),
                },
            };
            let status = chain::read_line(reader, &mut self.buf);
            self.line += 1;
            match status {
                Err(e) => return self.fail(BreakKind::Unreadable(e.to_string())),
                Ok(Line::End) => {
                    self.reader = None;
                    self.index += 1;
                }
                Ok(Line::TooLong) => {
                    return self.fail(BreakKind::Unparsable(format!("longer than {} bytes", chain::MAX_LINE_BYTES)));
                }
                Ok(Line::Torn) => {
                    return self
                        .fail(BreakKind::Unparsable("the file ends inside a line (no final newline)".to_owned()));
                }
                Ok(Line::Complete) => {
                    return match chain::parse_line(&self.buf) {
                        Ok(record) => Some(Ok(Located { file: self.index, line: self.line, record })),
                        Err(e) => self.fail(BreakKind::Unparsable(e.to_string())),
                    };
                }
            }
        }
    }
}

/// The first record of a file, for ordering; `Ok(None)` for an empty file.
fn first_record(path: &Path) -> Result<Option<Record>, ChainBreak> {
    let brk = |line, kind| ChainBreak { file: path.to_path_buf(), line, seq: None, kind };
    let mut reader = chain::open_read(path).map_err(|e| brk(None, BreakKind::Unreadable(e.to_string())))?;
    let mut buf = Vec::new();
    match chain::read_line(&mut reader, &mut buf) {
        Err(e) => Err(brk(None, BreakKind::Unreadable(e.to_string()))),
        Ok(Line::End) => Ok(None),
        Ok(Line::Complete) => {
            chain::parse_line(&buf).map(Some).map_err(|e| brk(Some(1), BreakKind::Unparsable(e.to_string())))
        }
        Ok(Line::TooLong | Line::Torn) => {
            Err(brk(Some(1), BreakKind::Unparsable("incomplete or over-long first line".to_owned())))
        }
    }
}

/// Verifies that `paths` hold one unbroken chain.
///
/// The files are put in chain order by the sequence number of their first record (the order given does not
/// matter); empty files are skipped. Every line must parse, sequence numbers must be continuous, every `prev`
/// must be the hash of the record before and every hash must recompute. If a checkpoint (`audit.head`) sits
/// in the directory of the last file, the record it names must be in the chain with the same hash, and must
/// not lie beyond its end.
pub fn verify_files(paths: &[PathBuf]) -> Result<VerifyReport, ChainBreak> {
    let mut ordered = Vec::with_capacity(paths.len());
    for path in paths {
        if let Some(first) = first_record(path)? {
            ordered.push((first.seq, path.clone()));
        }
    }
    ordered.sort();
    let files: Vec<PathBuf> = ordered.into_iter().map(|(_, p)| p).collect();

    // The checkpoint is read before the records: a writer that is still running only moves it forward after
    // the lines it names are on disk, so read in this order it can never appear ahead of a live log.
    let checkpoint_dir = files.last().or(paths.last()).and_then(|p| p.parent()).map(Path::to_path_buf);
    let checkpoint_path = checkpoint_dir.as_deref().unwrap_or(Path::new(".")).join(CHECKPOINT_FILE);
    let checkpoint = match &checkpoint_dir {
        Some(dir) => chain::read_checkpoint_tip(dir).map_err(|e| ChainBreak {
            file: checkpoint_path.clone(),
            line: None,
            seq: None,
            kind: BreakKind::BadCheckpoint(e.to_string()),
        })?,
        None => None,
    };

    let mut records = Records::new(&files).peekable();
    let mut tip: Option<Tip> = None;
    let mut last_at: Option<(usize, u64)> = None;
    let mut first_seq = None;
    let mut count: u64 = 0;
    let mut checkpoint_seen = false;

    while let Some(item) = records.next() {
        let at = item?;
        let rec = at.record;
        let brk = |kind| ChainBreak {
            file: files.get(at.file).cloned().unwrap_or_default(),
            line: Some(at.line),
            seq: Some(rec.seq),
            kind,
        };
        match tip {
            None => {
                first_seq = Some(rec.seq);
                // Only the very first record has a known predecessor; a later start links to files not given.
                if rec.seq == 0 && rec.prev != GENESIS {
                    return Err(brk(BreakKind::BrokenLink));
                }
            }
            Some(t) => {
                let expected = t
                    .seq
                    .checked_add(1)
                    .ok_or_else(|| brk(BreakKind::Unparsable("sequence number overflow".to_owned())))?;
                if rec.seq != expected {
                    return Err(brk(classify_jump(expected, rec.seq, &mut records)));
                }
                if rec.prev != t.hash {
                    return Err(brk(BreakKind::BrokenLink));
                }
            }
        }
        if !rec.hash_ok {
            return Err(brk(BreakKind::Edited));
        }
        if let Some(cp) = checkpoint
            && cp.seq == rec.seq
        {
            if cp.hash != rec.hash {
                return Err(brk(BreakKind::CheckpointMismatch { checkpoint_seq: cp.seq }));
            }
            checkpoint_seen = true;
        }
        tip = Some(Tip { seq: rec.seq, hash: rec.hash });
        last_at = Some((at.file, at.line));
        count += 1;
    }

    let last_seq = tip.map(|t| t.seq);
    if let Some(cp) = checkpoint
        && last_seq.is_none_or(|last| cp.seq > last)
    {
        let (file, line) = match last_at {
            Some((f, l)) => (files.get(f).cloned().unwrap_or_default(), Some(l)),
            None => (checkpoint_path, None),
        };
        return Err(ChainBreak {
            file,
            line,
            seq: last_seq,
            kind: BreakKind::TruncatedTail { checkpoint_seq: cp.seq, last_seq },
        });
    }

    Ok(VerifyReport {
        files,
        records: count,
        first_seq,
        last_seq,
        // A checkpoint older than the first file given cannot be checked; saying so beats claiming it matched.
        checkpoint_seq: checkpoint.filter(|_| checkpoint_seen).map(|c| c.seq),
    })
}

/// Names a jump in sequence numbers by looking at the record after it: if the chain resumes there, the
/// record in between was inserted or moved; if not, records are missing.
fn classify_jump<I>(expected: u64, found: u64, rest: &mut Peekable<I>) -> BreakKind
where
    I: Iterator<Item = Result<Located, ChainBreak>>,
{
    let resumes = matches!(rest.peek(), Some(Ok(next)) if next.record.seq == expected);
    if found > expected {
        if resumes {
            BreakKind::Reordered { expected, found }
        } else {
            BreakKind::Gap { first_missing: expected, last_missing: found - 1 }
        }
    } else if resumes || rest.peek().is_none() {
        BreakKind::Inserted { expected, found }
    } else {
        BreakKind::Reordered { expected, found }
    }
}

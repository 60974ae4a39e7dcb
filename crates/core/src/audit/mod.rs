//! The audit log: one hash-chained record per decision, written before the request is answered.
//!
//! - [`event`]: the record ([`AuditEvent`]) and its builder.
//! - [`chain`]: the line format, the hash chain and the checkpoint file.
//! - [`writer`]: [`Auditor`], the handle fronts use, and the writer thread that owns the files.
//! - [`verify`]: [`verify_files`], behind `lakegate audit verify`.
//!
//! The rule the module keeps: no event, no access. A front reserves room for its event ([`Auditor::begin`])
//! before it touches data, and cannot lose the event afterwards (a dropped [`AuditSlot`] still submits it).
//! See `docs/audit.md`.

// Log files are read back at startup and by `verify`, and they may have been tampered with: no path in this
// module may panic on their contents.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

pub mod chain;
pub mod config;
pub mod event;
pub mod verify;
pub mod writer;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

pub use config::AuditSection;
pub use event::{AuditEvent, AuditPrincipal, Decision, Front, Outcome, SqlAudit, Stage};
pub use verify::{BreakKind, ChainBreak, VerifyReport, verify_files};
pub use writer::{AuditConfig, AuditSlot, Auditor, Durability, MAX_BATCH_WINDOW};

/// Why the audit log refused to take an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// The queue stayed full for the whole enqueue timeout.
    #[error("the queue is full")]
    QueueFull,
    /// The last write failed; the writer is retrying.
    #[error("the writer cannot write to disk")]
    WriterFailed,
    /// The writer is gone.
    #[error("the writer has stopped")]
    WriterStopped,
}

/// Errors of the audit module.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The event cannot be recorded, so the request must be refused (503 or the protocol's equivalent).
    #[error("audit log unavailable: {0}")]
    Unavailable(Unavailable),
    /// The configuration cannot work.
    #[error("invalid audit configuration: {0}")]
    Config(String),
    /// A file operation failed at startup.
    #[error("audit log {}: {source}", .path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The existing log cannot be continued (its last record is damaged); an operator must look at it.
    #[error("cannot continue the audit chain in {}: {reason}", .dir.display())]
    Recovery {
        /// The audit directory.
        dir: PathBuf,
        /// What is wrong.
        reason: RecoveryError,
    },
}

/// Why the end of an existing audit log cannot be found.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecoveryError {
    #[error(transparent)]
    Checkpoint(#[from] chain::CheckpointError),
    #[error("{}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{}: ends inside a line", .path.display())]
    Torn { path: PathBuf },
    #[error("{}: line too long", .path.display())]
    TooLong { path: PathBuf },
    #[error("{}: last record unparsable: {source}", .path.display())]
    Unparsable { path: PathBuf, source: chain::LineError },
    #[error("{}: last record (seq {seq}) does not match its hash", .path.display())]
    HashMismatch { path: PathBuf, seq: u64 },
}

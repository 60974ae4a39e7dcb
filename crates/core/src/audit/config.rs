//! The `[audit]` section as users write it; [`AuditSection::resolve`] turns it into the writer's
//! [`AuditConfig`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{AuditConfig, Durability};

/// The audit section: the sink settings, with the directory defaulting to `<data_dir>/audit`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    #[serde(default)]
    pub dir: Option<PathBuf>,
    #[serde(flatten)]
    pub sink: AuditSinkSettings,
}

impl AuditSection {
    /// The sink configuration, resolved against the data directory.
    pub fn resolve(&self, data_dir: &Path) -> AuditConfig {
        let s = &self.sink;
        AuditConfig {
            dir: self.dir.clone().unwrap_or_else(|| data_dir.join("audit")),
            max_file_bytes: s.max_file_bytes,
            queue_capacity: s.queue_capacity,
            stdout: s.stdout,
            fail_open: s.fail_open,
            enqueue_timeout: std::time::Duration::from_millis(s.enqueue_timeout_ms),
            durability: s.durability,
            batch_window: std::time::Duration::from_millis(s.batch_window_ms),
        }
    }
}

/// Sink settings that do not depend on the data directory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSinkSettings {
    #[serde(default = "default_audit_max_file_bytes")]
    pub max_file_bytes: u64,
    #[serde(default = "default_audit_queue")]
    pub queue_capacity: usize,
    #[serde(default)]
    pub stdout: bool,
    /// Serve requests even when the audit sink cannot accept events. Off by default: fail closed.
    #[serde(default)]
    pub fail_open: bool,
    #[serde(default = "default_audit_enqueue_ms")]
    pub enqueue_timeout_ms: u64,
    /// `batch` (default) or `sync`: whether an access waits until a record of its decision is synced to disk.
    #[serde(default)]
    pub durability: Durability,
    /// With durability `batch`, how long the writer lets records gather after a batch before it writes and syncs
    /// the next (see [`AuditConfig::batch_window`]).
    #[serde(default = "default_audit_batch_window_ms")]
    pub batch_window_ms: u64,
}

impl Default for AuditSinkSettings {
    fn default() -> Self {
        Self {
            max_file_bytes: default_audit_max_file_bytes(),
            queue_capacity: default_audit_queue(),
            stdout: false,
            fail_open: false,
            enqueue_timeout_ms: default_audit_enqueue_ms(),
            durability: Durability::default(),
            batch_window_ms: default_audit_batch_window_ms(),
        }
    }
}

// The defaults are the writer's own (`AuditConfig::default()`), so that a configuration file and a program that
// starts an auditor without one get the same writer.
fn default_audit_max_file_bytes() -> u64 {
    AuditConfig::default().max_file_bytes
}
fn default_audit_queue() -> usize {
    AuditConfig::default().queue_capacity
}
fn default_audit_enqueue_ms() -> u64 {
    u64::try_from(AuditConfig::default().enqueue_timeout.as_millis()).unwrap_or(u64::MAX)
}
fn default_audit_batch_window_ms() -> u64 {
    u64::try_from(AuditConfig::default().batch_window.as_millis()).unwrap_or(u64::MAX)
}

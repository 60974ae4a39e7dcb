//! Hot reload: the policy directory is polled for changes; a changed set is validated before it replaces the
//! live one, and a set that fails validation is reported and ignored (the last good set stays in force).
//!
//! Polling a fingerprint (names and content hashes) rather than using inotify works the same on every
//! filesystem, including Kubernetes ConfigMap volumes, whose updates are symlink swaps; hashing contents
//! rather than comparing modification times also catches two edits within one timestamp tick.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::{LoadErrors, PolicyEngine, PolicyStore};

/// What a reload attempt did.
#[derive(Debug)]
pub enum ReloadOutcome {
    Reloaded { policies: usize },
    Rejected(LoadErrors),
}

/// Polls `dir` every `interval` and swaps in each new valid set; calls `report` after every attempt.
pub fn watch(
    engine: PolicyEngine,
    dir: PathBuf,
    interval: Duration,
    report: impl Fn(&ReloadOutcome) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    // Taken now, not in the task: a change made right after `watch` returns must count as a change.
    let mut last = fingerprint(&dir);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let now = fingerprint(&dir);
            if now == last {
                continue;
            }
            last = now;
            let loaded = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || PolicyStore::load(&dir)).await
            };
            let outcome = match loaded {
                Ok(Ok(store)) => {
                    let policies = store.len();
                    engine.replace(store);
                    ReloadOutcome::Reloaded { policies }
                }
                Ok(Err(errors)) => ReloadOutcome::Rejected(errors),
                Err(join) => ReloadOutcome::Rejected(LoadErrors(vec![super::Problem {
                    file: dir.clone(),
                    line: 1,
                    column: 1,
                    message: format!("reload task failed: {join}"),
                }])),
            };
            report(&outcome);
        }
    })
}

/// Names and content hashes of the directory's files (following symlinks). Policy directories are small.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, [u8; 32])> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let path = e.path();
            let bytes = std::fs::read(&path).ok()?;
            Some((path, Sha256::digest(bytes).into()))
        })
        .collect();
    out.sort();
    out
}

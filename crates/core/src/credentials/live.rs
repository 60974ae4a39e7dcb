//! The key ring the fronts use, re-read from its directory so that a rotation (a key file added, later one
//! removed, `current` moved) takes effect on every replica without a restart.
//!
//! A directory that does not load (a half-written Secret update, a stray file) leaves the last good ring in
//! force: failing every credential because of a bad rotation step would be an outage, and the previous ring is
//! exactly what the operator had before.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::KeyRingError;
use super::keyring::KeyRing;

/// A [`KeyRing`] kept in step with its directory.
#[derive(Debug)]
pub struct LiveKeyRing {
    dir: PathBuf,
    /// Read by every request that carries a session token or is signed with Lakegate's keys, replaced by a
    /// rotation: an [`ArcSwap`], whose reads write only memory of the reading thread's own.
    ring: ArcSwap<KeyRing>,
}

impl LiveKeyRing {
    /// Loads `dir`, generating a first key when it holds none (see [`KeyRing::load_or_generate`]).
    pub fn load_or_generate(dir: &Path) -> Result<Self, KeyRingError> {
        let ring = KeyRing::load_or_generate(dir)?;
        Ok(Self { dir: dir.to_path_buf(), ring: ArcSwap::from_pointee(ring) })
    }

    /// The ring in force now, for as long as the caller holds it (a reload meanwhile does not change it).
    pub fn current(&self) -> impl std::ops::Deref<Target = Arc<KeyRing>> + Send + Sync + use<> {
        self.ring.load()
    }

    /// Re-reads the directory; on success the new ring is in force, on error the previous one stays. A ring
    /// read with the same keys as the one in force leaves that one in place, with the tokens it opened.
    pub fn reload(&self) -> Result<(), KeyRingError> {
        let ring = KeyRing::load(&self.dir)?;
        // Reloads run one at a time (the watch's loop), so no other swap comes between this check and the swap.
        if !self.ring.load().same_keys(&ring) {
            self.ring.store(Arc::new(ring));
        }
        Ok(())
    }

    /// Reloads every `interval` in the background for as long as the ring is in use.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut last_error = None;
            loop {
                tokio::time::sleep(interval).await;
                let Some(ring) = weak.upgrade() else { return };
                let dir = ring.dir.clone();
                // Key files are tiny, but the read is still file I/O: keep it off the async workers.
                let result = tokio::task::spawn_blocking(move || ring.reload()).await;
                match result {
                    Ok(Ok(())) => last_error = None,
                    Ok(Err(e)) => {
                        let text = e.to_string();
                        if last_error.as_ref() != Some(&text) {
                            tracing::error!(dir = %dir.display(), error = %text, "credential keys did not reload; keeping the last good ring");
                        }
                        last_error = Some(text);
                    }
                    Err(e) => tracing::error!(error = %e, "credential key reload task failed"),
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_rotation_is_picked_up_and_a_broken_directory_keeps_the_last_good_ring() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveKeyRing::load_or_generate(dir.path()).unwrap();
        let first = live.current().current_kid().clone();

        let unchanged = live.current();
        live.reload().unwrap();
        assert!(Arc::ptr_eq(&unchanged, &live.current()), "the same keys read again leave the ring in force");

        let second = KeyRing::generate_key_file(dir.path()).unwrap();
        live.reload().unwrap();
        assert_eq!(live.current().accepted_kids().count(), 2, "the new key is picked up");
        assert!(!Arc::ptr_eq(&unchanged, &live.current()));
        std::fs::write(dir.path().join("current"), second.as_str()).unwrap();
        live.reload().unwrap();
        assert_eq!(live.current().current_kid(), &second, "the key named current mints");
        assert!(live.current().accepted_kids().any(|k| *k == first), "the old key still verifies");

        std::fs::write(dir.path().join("not a kid!"), "x").unwrap();
        assert!(live.reload().is_err());
        assert_eq!(live.current().current_kid(), &second, "the last good ring stays in force");
    }
}

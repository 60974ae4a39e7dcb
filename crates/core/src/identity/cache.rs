//! Tokens seen before: a bounded cache of verified tokens, so a client that sends the same bearer token on
//! every request pays for its signature once.
//!
//! An entry is keyed by the SHA-256 of the token (the token itself is not kept as a key) and serves only while
//! everything that made the token valid still holds:
//! - the clock is before the token's `exp` (no leeway: an expired token never serves from the cache, it goes
//!   through full validation, which applies the issuer's leeway), and past its `nbf`;
//! - the issuer that verified it is still trusted, with the same key set it had then. Any change to an issuer's
//!   keys (a key removed, replaced or added) turns its entries stale, so a removed key stops its tokens at the
//!   next request.
//!
//! The cache holds at most `token_cache_entries` entries and evicts by quick_cache's S3-FIFO policy, so nothing
//! a client sends can grow it without bound; tokens that fail validation are never stored.

use std::sync::Arc;

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::Principal;
use crate::per_cpu_cache::PerCpuCache;

/// A verified token, and what must still hold for the verification to stand.
pub(super) struct Verified {
    pub(super) principal: Principal,
    pub(super) claims: Map<String, Value>,
    /// The configured `iss` that verified it.
    pub(super) issuer: String,
    /// That issuer's key-set generation at the time.
    pub(super) keys: u64,
    pub(super) not_before: i64,
    pub(super) expires_at: i64,
}

impl Verified {
    /// Whether the entry may serve at `now` (Unix seconds) for an issuer now at key generation `keys`.
    pub(super) fn holds(&self, now: i64, keys: u64) -> bool {
        self.keys == keys && self.not_before <= now && now < self.expires_at
    }
}

/// The cache; `None` capacity turns it off.
pub(super) struct TokenCache {
    entries: PerCpuCache<[u8; 32], Arc<Verified>>,
}

impl TokenCache {
    /// A cache of at most `capacity` tokens, or none at all for 0.
    pub(super) fn new(capacity: usize) -> Option<Self> {
        (capacity > 0).then(|| TokenCache { entries: PerCpuCache::new(capacity) })
    }

    pub(super) fn key(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    pub(super) fn get(&self, key: &[u8; 32]) -> Option<Arc<Verified>> {
        self.entries.get(key)
    }

    pub(super) fn insert(&self, key: [u8; 32], verified: Arc<Verified>) {
        self.entries.insert(key, verified);
    }

    pub(super) fn remove(&self, key: &[u8; 32]) {
        self.entries.remove(key);
    }

    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Unix time in seconds.
pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

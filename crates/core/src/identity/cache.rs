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
//! The cache holds at most `token_cache_entries` slots of 4 KiB and evicts by quick_cache's S3-FIFO policy: an
//! entry takes a slot for every 4 KiB its token and claims take (most tokens take one; one of the 16 KiB a token
//! may be takes nine), so nothing a client sends can grow it past about `token_cache_entries` × 4 KiB, however
//! large its tokens. Tokens that fail validation are never stored.

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
    /// The length of the token, of which the claims are a decoding: what the entry weighs.
    pub(super) token_len: usize,
}

impl Verified {
    /// Whether the entry may serve at `now` (Unix seconds) for an issuer now at key generation `keys`.
    pub(super) fn holds(&self, now: i64, keys: u64) -> bool {
        self.keys == keys && self.not_before <= now && now < self.expires_at
    }
}

/// What a slot of the cache holds at most.
const SLOT_BYTES: usize = 4096;

/// An entry's weight in slots: its token, its claims (a decoding of the token, about as long) and a fixed part.
#[derive(Clone)]
pub(super) struct Slots;

impl quick_cache::Weighter<[u8; 32], Arc<Verified>> for Slots {
    fn weight(&self, _: &[u8; 32], verified: &Arc<Verified>) -> u64 {
        (512 + 2 * verified.token_len).div_ceil(SLOT_BYTES) as u64
    }
}

/// The cache; `None` capacity turns it off.
pub(super) struct TokenCache {
    entries: PerCpuCache<[u8; 32], Arc<Verified>, Slots>,
}

impl TokenCache {
    /// A cache of at most `capacity` slots (as many tokens of the usual size), or none at all for 0.
    pub(super) fn new(capacity: usize) -> Option<Self> {
        (capacity > 0).then(|| TokenCache { entries: PerCpuCache::with_weighter(capacity, capacity as u64, Slots) })
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

    /// The slots the entries take, over all CPUs.
    #[cfg(test)]
    fn slots(&self) -> u64 {
        self.entries.weight()
    }
}

/// Unix time in seconds.
pub(super) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use quick_cache::Weighter;

    use super::*;

    fn verified(token_len: usize) -> Arc<Verified> {
        let principal = Principal {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            groups: Vec::new(),
            attributes: Default::default(),
            token_id: None,
            expires_at: i64::MAX,
            actors: Vec::new(),
        };
        let claims = Map::new();
        let issuer = principal.issuer.clone();
        Arc::new(Verified { principal, claims, issuer, keys: 0, not_before: 0, expires_at: i64::MAX, token_len })
    }

    #[test]
    fn usual_tokens_take_a_slot_each_and_large_ones_a_slot_per_4_kib() {
        let cache = TokenCache::new(100).expect("on");
        assert_eq!(Slots.weight(&[0; 32], &verified(900)), 1);
        assert_eq!(Slots.weight(&[0; 32], &verified(16 * 1024)), 9);
        // However many large tokens a client sends, the cache keeps no more slots than it has.
        for i in 0..1_000u32 {
            let mut key = [0u8; 32];
            key[..4].copy_from_slice(&i.to_be_bytes());
            cache.insert(key, verified(16 * 1024));
        }
        assert!(cache.slots() <= 100, "{} slots kept", cache.slots());
        assert!(cache.len() <= 100 / 9 + 2, "{} large tokens kept", cache.len());
    }
}

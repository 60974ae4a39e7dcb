//! Decisions made before: a bounded cache of Cedar decisions for one policy store.
//!
//! A decision is a pure function of the policy store (policies, schema, `entities.json`, the catalog and its
//! tags) and of what the request brings: the principal's issuer, subject, groups and attributes, the acting
//! chain, the action, the resource and the context. Nothing else goes in (no clock, no randomness), so a request
//! that brings exactly the same facts gets exactly the same decision, with the same determining policies.
//!
//! The cache lives in the [`PolicyStore`](super::PolicyStore): a reload builds a new store with an empty cache,
//! so a policy edit binds the very next request. It is keyed by every fact above, written out in full (no hash
//! stands in for the key, so two requests can never share an entry by collision), and bounded by weight: keys
//! hold what clients send (object keys, attribute values), so the cache counts their bytes and evicts by
//! quick_cache's S3-FIFO policy before it grows past [`WEIGHT_CAPACITY`].

use std::sync::Arc;

use super::{Decision, RequestContext, Resource};
use crate::identity::Principal;

/// The most bytes of keys and decisions kept (about 16 MiB; one entry of a typical S3 request weighs 300–600).
const WEIGHT_CAPACITY: u64 = 16 << 20;
/// quick_cache sizes its tables for this many entries up front.
const ESTIMATED_ENTRIES: usize = 16_384;

pub(super) struct DecisionCache {
    entries: quick_cache::sync::Cache<Box<[u8]>, Arc<Decision>, Weight>,
}

/// An entry weighs its key plus its decision's text.
#[derive(Clone)]
struct Weight;

impl quick_cache::Weighter<Box<[u8]>, Arc<Decision>> for Weight {
    fn weight(&self, key: &Box<[u8]>, decision: &Arc<Decision>) -> u64 {
        let policies: usize = decision
            .policies
            .iter()
            .map(|p| 64 + p.id.len() + p.annotations.iter().map(|(k, v)| 32 + k.len() + v.len()).sum::<usize>())
            .sum();
        let errors: usize = decision.errors.iter().map(String::len).sum();
        (64 + key.len() + policies + errors) as u64
    }
}

impl DecisionCache {
    pub(super) fn new() -> Self {
        DecisionCache { entries: quick_cache::sync::Cache::with_weighter(ESTIMATED_ENTRIES, WEIGHT_CAPACITY, Weight) }
    }

    pub(super) fn get(&self, key: &[u8]) -> Option<Decision> {
        self.entries.get(key).map(|d| Decision::clone(&d))
    }

    pub(super) fn insert(&self, key: Box<[u8]>, decision: &Decision) {
        self.entries.insert(key, Arc::new(decision.clone()));
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Every fact a decision depends on, each field length-prefixed so that no two different requests write the
/// same bytes.
pub(super) fn key(principal: &Principal, action: &str, resource: &Resource, context: &RequestContext) -> Box<[u8]> {
    let mut key = Key(Vec::with_capacity(256));
    key.field(principal.issuer.as_bytes());
    key.field(principal.subject.as_bytes());
    key.count(principal.groups.len());
    for group in &principal.groups {
        key.field(group.as_bytes());
    }
    key.count(principal.attributes.len());
    for (name, value) in &principal.attributes {
        key.field(name.as_bytes());
        key.field(value.as_bytes());
    }
    key.count(principal.actors.len());
    for actor in &principal.actors {
        key.field(actor.issuer.as_bytes());
        key.field(actor.subject.as_bytes());
    }
    key.field(action.as_bytes());
    key.field(resource.to_string().as_bytes());
    key.field(context.front.as_bytes());
    // The caller's extra context, as JSON (serde_json writes a map in one order for one content).
    let extra = if context.extra.is_empty() {
        String::new()
    } else {
        serde_json::Value::from(context.extra.clone()).to_string()
    };
    key.field(extra.as_bytes());
    key.0.into_boxed_slice()
}

struct Key(Vec<u8>);

impl Key {
    fn count(&mut self, n: usize) {
        self.0.extend_from_slice(&(n as u64).to_le_bytes());
    }

    fn field(&mut self, bytes: &[u8]) {
        self.count(bytes.len());
        self.0.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::identity::Actor;

    fn alice() -> Principal {
        Principal {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            groups: vec!["analysts".into()],
            attributes: BTreeMap::from([("region".to_owned(), "EU".to_owned())]),
            token_id: None,
            expires_at: 0,
            actors: Vec::new(),
        }
    }

    fn object(key: &str) -> Resource {
        Resource::object("lake", key).expect("resource")
    }

    fn ctx() -> RequestContext {
        RequestContext { front: "s3", ..Default::default() }
    }

    #[test]
    fn every_fact_a_decision_depends_on_is_in_its_key() {
        let base = key(&alice(), "s3:GetObject", &object("sales/a"), &ctx());
        assert_eq!(base, key(&alice(), "s3:GetObject", &object("sales/a"), &ctx()), "same facts, same key");

        let mut other_group = alice();
        other_group.groups = vec!["hr".into()];
        let mut other_region = alice();
        other_region.attributes.insert("region".into(), "US".into());
        let mut other_issuer = alice();
        other_issuer.issuer = "https://other".into();
        let mut acting = alice();
        acting.actors = vec![Actor { subject: "notebook".into(), issuer: "https://idp".into() }];
        let mut extra = ctx();
        extra.extra.insert("ip".into(), serde_json::json!("10.0.0.1"));
        let variants = [
            key(&other_group, "s3:GetObject", &object("sales/a"), &ctx()),
            key(&other_region, "s3:GetObject", &object("sales/a"), &ctx()),
            key(&other_issuer, "s3:GetObject", &object("sales/a"), &ctx()),
            key(&acting, "s3:GetObject", &object("sales/a"), &ctx()),
            key(&alice(), "s3:PutObject", &object("sales/a"), &ctx()),
            key(&alice(), "s3:GetObject", &object("sales/b"), &ctx()),
            key(&alice(), "s3:GetObject", &object("sales/a"), &RequestContext { front: "sql", ..Default::default() }),
            key(&alice(), "s3:GetObject", &object("sales/a"), &extra),
        ];
        for (n, v) in variants.iter().enumerate() {
            assert_ne!(&base, v, "variant {n} must not share the key");
        }
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        let mut a = alice();
        a.groups = vec!["ab".into(), "c".into()];
        let mut b = alice();
        b.groups = vec!["a".into(), "bc".into()];
        assert_ne!(key(&a, "s3:GetObject", &object("x"), &ctx()), key(&b, "s3:GetObject", &object("x"), &ctx()));
    }

    #[test]
    fn the_cache_stays_within_its_weight() {
        let cache = DecisionCache::new();
        let decision = Decision { allowed: false, policies: Vec::new(), errors: Vec::new() };
        // Keys of 1 KiB (long object keys) from a client that never repeats itself.
        for n in 0..40_000u32 {
            let mut k = vec![0u8; 1024];
            k[..4].copy_from_slice(&n.to_le_bytes());
            cache.insert(k.into_boxed_slice(), &decision);
        }
        assert!(cache.len() < 40_000 && (cache.len() as u64) * 1088 <= WEIGHT_CAPACITY + 1088, "{}", cache.len());
    }
}

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
//!
//! Objects that no policy names are decided per prefix ([`Subject::ObjectIn`]): an object has no attributes, and
//! Cedar cannot look into an entity's id, so a policy tells two objects under the same prefix apart only by
//! naming one of them (`resource == Object::"lake/sales/q1.csv"`, in its scope or a condition). The decision for
//! `lake/sales/q1.csv` is then the decision for every other object directly under `lake/sales/`, whose ancestors
//! (the prefixes above it and the bucket) are the same; reading a thousand files of one partition costs Cedar
//! once. An object a policy names is decided on its own.

use std::collections::HashSet;
use std::sync::Arc;

use cedar_policy::PolicySet;

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

/// What of the resource a decision depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subject<'a> {
    /// The resource itself.
    Exact(&'a Resource),
    /// Any object directly under `prefix` (`""` for the bucket's top level) that no policy names.
    ObjectIn { bucket: &'a str, prefix: &'a str },
}

/// The objects the policies name, which are decided on their own rather than with their siblings.
pub(super) enum NamedObjects {
    /// These object ids (`bucket/key`).
    These(HashSet<String>),
    /// A policy could not be read back for its entity literals: every object is decided on its own.
    Unknown,
}

impl NamedObjects {
    /// Every `Object` entity literal in `policies`: scopes, conditions and template links. Reading the policies'
    /// JSON form finds a literal wherever the grammar allows one; anything else of type `Object` that looks
    /// like a literal there is counted too, which costs only sharing.
    pub(super) fn of(policies: &PolicySet) -> Self {
        let mut named = HashSet::new();
        for policy in policies.policies() {
            // A literal spells its type out: a policy whose text never says `Object` names none, and costs no
            // JSON form (a tenth of the load time of a large set).
            if policy.to_string().contains("Object") {
                let Ok(json) = policy.to_json() else { return NamedObjects::Unknown };
                collect_objects(&json, &mut named);
            }
            for uid in policy.template_links().into_iter().flat_map(|links| links.into_values()) {
                if is_object_type(&uid.type_name().to_string()) {
                    named.insert(uid.id().unescaped().to_owned());
                }
            }
        }
        NamedObjects::These(named)
    }

    /// What a decision on `resource` depends on.
    pub(super) fn subject<'a>(&self, resource: &'a Resource) -> Subject<'a> {
        match (self, resource) {
            (NamedObjects::These(named), Resource::Object { bucket, key }) if !named_object(named, bucket, key) => {
                // The ancestors of an object are the `/`-terminated prefixes of its key (the key itself for a
                // folder marker such as `sales/`) and its bucket: all given by the key up to its last `/`.
                let end = key.rfind('/').map_or(0, |i| i + 1);
                Subject::ObjectIn { bucket, prefix: &key[..end] }
            }
            _ => Subject::Exact(resource),
        }
    }
}

fn named_object(named: &HashSet<String>, bucket: &str, key: &str) -> bool {
    !named.is_empty() && named.contains(&format!("{bucket}/{key}"))
}

fn is_object_type(name: &str) -> bool {
    name.rsplit("::").next() == Some("Object")
}

/// Ids of entity references `{"type": "...Object", "id": "..."}` anywhere in a policy's JSON form.
fn collect_objects(value: &serde_json::Value, out: &mut HashSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            if let (Some(serde_json::Value::String(ty)), Some(serde_json::Value::String(id))) =
                (map.get("type"), map.get("id"))
                && is_object_type(ty)
            {
                out.insert(id.clone());
            }
            map.values().for_each(|v| collect_objects(v, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_objects(v, out)),
        _ => {}
    }
}

/// Every fact a decision depends on, each field length-prefixed so that no two different requests write the
/// same bytes.
pub(super) fn key(principal: &Principal, action: &str, subject: &Subject<'_>, context: &RequestContext) -> Box<[u8]> {
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
    match subject {
        Subject::Exact(resource) => {
            // The kind too: an object and a prefix may have the same text (`s3://lake/sales/`).
            key.field(resource.kind().as_bytes());
            key.field(resource.to_string().as_bytes());
        }
        Subject::ObjectIn { bucket, prefix } => {
            key.field(b"objects in");
            key.field(bucket.as_bytes());
            key.field(prefix.as_bytes());
        }
    }
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

    fn exact_key(principal: &Principal, action: &str, resource: &Resource, context: &RequestContext) -> Box<[u8]> {
        key(principal, action, &Subject::Exact(resource), context)
    }

    fn ctx() -> RequestContext {
        RequestContext { front: "s3", ..Default::default() }
    }

    #[test]
    fn every_fact_a_decision_depends_on_is_in_its_key() {
        let base = exact_key(&alice(), "s3:GetObject", &object("sales/a"), &ctx());
        assert_eq!(base, exact_key(&alice(), "s3:GetObject", &object("sales/a"), &ctx()), "same facts, same key");

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
            exact_key(&other_group, "s3:GetObject", &object("sales/a"), &ctx()),
            exact_key(&other_region, "s3:GetObject", &object("sales/a"), &ctx()),
            exact_key(&other_issuer, "s3:GetObject", &object("sales/a"), &ctx()),
            exact_key(&acting, "s3:GetObject", &object("sales/a"), &ctx()),
            exact_key(&alice(), "s3:PutObject", &object("sales/a"), &ctx()),
            exact_key(&alice(), "s3:GetObject", &object("sales/b"), &ctx()),
            exact_key(
                &alice(),
                "s3:GetObject",
                &object("sales/a"),
                &RequestContext { front: "sql", ..Default::default() },
            ),
            exact_key(&alice(), "s3:GetObject", &object("sales/a"), &extra),
        ];
        for (n, v) in variants.iter().enumerate() {
            assert_ne!(&base, v, "variant {n} must not share the key");
        }
    }

    #[test]
    fn an_object_and_a_prefix_of_the_same_text_do_not_share_a_key() {
        let prefix = Resource::prefix("lake", "sales/").expect("prefix");
        assert_ne!(
            exact_key(&alice(), "GetDataAccess", &object("sales/"), &ctx()),
            exact_key(&alice(), "GetDataAccess", &prefix, &ctx())
        );
    }

    fn named(policies: &str) -> NamedObjects {
        NamedObjects::of(&policies.parse().expect("policies"))
    }

    #[test]
    fn objects_no_policy_names_are_decided_by_the_prefix_they_are_in() {
        let named = named(r#"permit(principal, action, resource in Prefix::"lake/sales/");"#);
        let in_prefix = |bucket, prefix| Subject::ObjectIn { bucket, prefix };
        assert_eq!(named.subject(&object("sales/2024/q1.csv")), in_prefix("lake", "sales/2024/"));
        assert_eq!(named.subject(&object("sales/2024/q2.csv")), in_prefix("lake", "sales/2024/"));
        // A folder marker is in the prefix it names, as the objects below it are.
        assert_eq!(named.subject(&object("sales/2024/")), in_prefix("lake", "sales/2024/"));
        assert_eq!(named.subject(&object("top.csv")), in_prefix("lake", ""));
        let prefix = Resource::prefix("lake", "sales/").expect("prefix");
        assert_eq!(named.subject(&prefix), Subject::Exact(&prefix), "only objects are shared");
    }

    #[test]
    fn an_object_named_anywhere_in_a_policy_is_decided_on_its_own() {
        let named = named(
            r#"
            forbid(principal, action, resource == Object::"lake/sales/plan.txt");
            forbid(principal, action, resource) when { resource == Object::"lake/sales/budget.xlsx" };
            forbid(principal, action, resource) unless { !(resource in [Object::"lake/sales/a", Object::"lake/sales/b"]) };
            permit(principal, action, resource) when { context.actors.contains("x") && resource != Object::"lake/c" };
            "#,
        );
        for key in ["sales/plan.txt", "sales/budget.xlsx", "sales/a", "sales/b", "c"] {
            let resource = object(key);
            assert_eq!(named.subject(&resource), Subject::Exact(&resource), "{key}");
        }
        assert!(matches!(named.subject(&object("sales/other.txt")), Subject::ObjectIn { .. }));
        assert!(matches!(named.subject(&object("plan.txt")), Subject::ObjectIn { .. }), "another bucket's key");
    }

    #[test]
    fn a_template_linked_to_an_object_names_it() {
        let template = cedar_policy::Template::parse(
            Some(cedar_policy::PolicyId::new("t")),
            "permit(principal, action, resource == ?resource);",
        )
        .expect("template");
        let mut policies = PolicySet::new();
        policies.add_template(template).expect("add");
        let target: cedar_policy::EntityUid = r#"Object::"lake/sales/linked.csv""#.parse().expect("uid");
        policies
            .link(
                cedar_policy::PolicyId::new("t"),
                cedar_policy::PolicyId::new("linked"),
                [(cedar_policy::SlotId::resource(), target)].into(),
            )
            .expect("link");
        let named = NamedObjects::of(&policies);
        let resource = object("sales/linked.csv");
        assert_eq!(named.subject(&resource), Subject::Exact(&resource));
    }

    #[test]
    fn fields_cannot_run_into_each_other() {
        let mut a = alice();
        a.groups = vec!["ab".into(), "c".into()];
        let mut b = alice();
        b.groups = vec!["a".into(), "bc".into()];
        assert_ne!(
            exact_key(&a, "s3:GetObject", &object("x"), &ctx()),
            exact_key(&b, "s3:GetObject", &object("x"), &ctx())
        );
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

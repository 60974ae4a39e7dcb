//! Decisions made before: a bounded cache of Cedar decisions for one policy store.
//!
//! A decision is a pure function of the policy store (policies, schema, `entities.json`, the catalog and its
//! tags) and of what the request brings: the principal's issuer, subject, groups and attributes, the acting
//! chain, the action, the resource and the context. Nothing else goes in (no clock, no randomness), so a request
//! that brings exactly the same facts gets exactly the same decision, with the same determining policies.
//!
//! The cache lives in the [`PolicyStore`](super::PolicyStore): a reload builds a new store with an empty cache,
//! so a policy edit binds the very next request. It is keyed by every fact above that a policy can tell apart
//! (below), written out in full (no hash stands in for the key, so two requests can never share an entry by
//! collision), and bounded by weight: keys hold what clients send (object keys, attribute values), so the cache
//! counts their bytes and evicts by quick_cache's S3-FIFO policy before it grows past [`WEIGHT_CAPACITY`].
//!
//! Resources that no policy names are decided by the prefixes that are named ([`Subject::Under`]). S3 objects and
//! prefixes have no attributes, and Cedar cannot look into an entity's id, so a policy tells two of them apart
//! only by naming one (`resource == Object::"lake/sales/q1.csv"`, `resource in Prefix::"lake/sales/"`, in its
//! scope, a condition, a template link, or an attribute in `entities.json` it reaches). Two objects whose named
//! ancestors are the same therefore get the same decision: every `/`-terminated prefix of a key that some
//! policy names is an ancestor of both or of neither, and the deepest of them gives all the others (they are
//! its own prefixes). So reading `lake/sales/2024/11/30/part-7.parquet` under a grant on `lake/sales/` costs
//! Cedar once for every object below `lake/sales/` down to the next named prefix, whatever the partition.
//! A resource a policy names is decided on its own, and so is every request whose caller passed context of its
//! own (`/v1/authorize`), which a schema may let carry an entity to compare the resource with.
//!
//! Users are shared the same way ([`Who::Unnamed`]): a user entity holds the issuer, the groups and the
//! attributes of its token, all in the key, and its id, which a policy can tell apart only by naming the user
//! (`principal == User::"alice"`, or alice in `entities.json`). So the ten-thousandth analyst to read a table
//! gets the decision the first one got, unless a policy names one of them.

use std::collections::HashSet;
use std::sync::Arc;

use cedar_policy::{Entity, PolicySet};

use super::{Decision, RequestContext, Resource};
use crate::identity::Principal;
use crate::per_cpu_cache::PerCpuCache;

/// The most bytes of keys and decisions kept (about 16 MiB; one entry of a typical S3 request weighs 300–600).
const WEIGHT_CAPACITY: u64 = 16 << 20;
/// quick_cache sizes its tables for this many entries up front.
const ESTIMATED_ENTRIES: usize = 16_384;

pub(super) struct DecisionCache {
    entries: PerCpuCache<Box<[u8]>, Arc<Decision>, Weight>,
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
        DecisionCache { entries: PerCpuCache::with_weighter(ESTIMATED_ENTRIES, WEIGHT_CAPACITY, Weight) }
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
    /// Any resource of this kind (`object` or `prefix`) that no policy names, whose deepest named ancestor is
    /// `prefix` of `bucket` (`""`: none below the bucket).
    Under { kind: &'static str, bucket: &'a str, prefix: &'a str },
}

/// Whom a decision depends on, besides the issuer, groups, attributes and acting chain (always in the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Who<'a> {
    /// This user (by subject).
    User(&'a str),
    /// Any user no policy and no static entity names.
    Unnamed,
}

/// The S3 resources the policies name, which are decided on their own; anything else is decided with every
/// resource under the same named prefixes.
pub(super) enum Named {
    These {
        /// Object ids (`bucket/key`).
        objects: HashSet<String>,
        /// Prefix ids (`bucket/prefix/`).
        prefixes: HashSet<String>,
        /// User ids (subjects).
        users: HashSet<String>,
    },
    /// A policy or an entity could not be read back for its entity literals: every resource and every user is
    /// decided on its own.
    Unknown,
}

impl Named {
    /// Every `Object`, `Prefix` and `User` entity literal in `policies` (scopes, conditions, template links) and
    /// in `entities` (the static ones, whose attributes a policy can follow to a prefix). Reading their JSON form
    /// finds a literal wherever the grammar allows one; anything else that looks like one there is counted too,
    /// which costs only sharing.
    pub(super) fn of(policies: &PolicySet, entities: &[Entity]) -> Self {
        let mut objects = HashSet::new();
        let mut prefixes = HashSet::new();
        let mut users = HashSet::new();
        let mut add = |type_name: &str, id: &str| match type_name.rsplit("::").next() {
            Some("User") => {
                users.insert(id.to_owned());
            }
            Some("Object") => {
                objects.insert(id.to_owned());
            }
            Some("Prefix") => {
                prefixes.insert(id.to_owned());
            }
            _ => {}
        };
        for policy in policies.policies() {
            // A literal spells its type out: a policy whose text says none of these types names none, and costs
            // no JSON form (a tenth of the load time of a large set).
            let text = policy.to_string();
            if ["Object", "Prefix", "User"].iter().any(|t| text.contains(t)) {
                let Ok(json) = policy.to_json() else { return Named::Unknown };
                collect_literals(&json, &mut add);
            }
            for uid in policy.template_links().into_iter().flat_map(|links| links.into_values()) {
                add(&uid.type_name().to_string(), uid.id().unescaped());
            }
        }
        for entity in entities {
            let Ok(json) = entity.to_json_value() else { return Named::Unknown };
            collect_literals(&json, &mut add);
        }
        Named::These { objects, prefixes, users }
    }

    /// Whom a decision for `principal` with `context` depends on.
    pub(super) fn who<'a>(&self, principal: &'a Principal, context: &RequestContext) -> Who<'a> {
        match self {
            // Context of the caller's own may carry a user to compare the principal with.
            Named::These { users, .. } if context.extra.is_empty() && !users.contains(&principal.subject) => {
                Who::Unnamed
            }
            _ => Who::User(&principal.subject),
        }
    }

    /// What a decision on `resource` with `context` depends on.
    pub(super) fn subject<'a>(&self, resource: &'a Resource, context: &RequestContext) -> Subject<'a> {
        let Named::These { objects, prefixes, .. } = self else { return Subject::Exact(resource) };
        if !context.extra.is_empty() {
            return Subject::Exact(resource);
        }
        match resource {
            // An object is in the prefix its key names when it is a folder marker such as `sales/`.
            Resource::Object { bucket, key } if !contains(objects, bucket, key) => {
                Subject::Under { kind: "object", bucket, prefix: deepest_named(prefixes, bucket, key, true) }
            }
            // A prefix is in itself (`in` is reflexive): one that is named is decided on its own.
            Resource::Prefix { bucket, prefix } if !contains(prefixes, bucket, prefix) => {
                Subject::Under { kind: "prefix", bucket, prefix: deepest_named(prefixes, bucket, prefix, false) }
            }
            _ => Subject::Exact(resource),
        }
    }
}

fn contains(ids: &HashSet<String>, bucket: &str, key: &str) -> bool {
    !ids.is_empty() && ids.contains(&format!("{bucket}/{key}"))
}

/// The longest `/`-terminated prefix of `key` that is named (`key` itself too when `include_self`), or `""`.
fn deepest_named<'a>(named: &HashSet<String>, bucket: &str, key: &'a str, include_self: bool) -> &'a str {
    if named.is_empty() {
        return "";
    }
    let mut id = format!("{bucket}/");
    let base = id.len();
    let ends = key.rmatch_indices('/').map(|(i, _)| i + 1).filter(|&end| include_self || end < key.len());
    for end in ends {
        id.truncate(base);
        id.push_str(&key[..end]);
        if named.contains(&id) {
            return &key[..end];
        }
    }
    ""
}

/// Calls `add(type, id)` for each entity reference (`{"type": ..., "id": ...}`, as policies and entities write
/// them) anywhere in `value`.
fn collect_literals(value: &serde_json::Value, add: &mut impl FnMut(&str, &str)) {
    match value {
        serde_json::Value::Object(map) => {
            if let (Some(serde_json::Value::String(ty)), Some(serde_json::Value::String(id))) =
                (map.get("type"), map.get("id"))
            {
                add(ty, id);
            }
            map.values().for_each(|v| collect_literals(v, add));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_literals(v, add)),
        _ => {}
    }
}

/// Every fact a decision depends on, each field length-prefixed so that no two different requests write the
/// same bytes.
pub(super) fn key(
    principal: &Principal,
    who: &Who<'_>,
    action: &str,
    subject: &Subject<'_>,
    context: &RequestContext,
) -> Box<[u8]> {
    let mut key = Key(Vec::with_capacity(256));
    key.field(principal.issuer.as_bytes());
    match who {
        Who::User(subject) => {
            key.field(b"user");
            key.field(subject.as_bytes());
        }
        Who::Unnamed => key.field(b"any user"),
    }
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
        Subject::Under { kind, bucket, prefix } => {
            key.field(b"under");
            key.field(kind.as_bytes());
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
        key(principal, &Who::User(&principal.subject), action, &Subject::Exact(resource), context)
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

    fn named(policies: &str) -> Named {
        Named::of(&policies.parse().expect("policies"), &[])
    }

    fn under<'a>(kind: &'static str, prefix: &'a str) -> Subject<'a> {
        Subject::Under { kind, bucket: "lake", prefix }
    }

    #[test]
    fn resources_no_policy_names_are_decided_by_the_deepest_prefix_that_is_named() {
        let named = named(
            r#"permit(principal, action, resource in Prefix::"lake/sales/");
               forbid(principal, action, resource in Prefix::"lake/sales/2024/drafts/");"#,
        );
        assert_eq!(named.subject(&object("sales/2024/q1.csv"), &ctx()), under("object", "sales/"));
        assert_eq!(named.subject(&object("sales/2025/11/30/p.parquet"), &ctx()), under("object", "sales/"));
        assert_eq!(named.subject(&object("sales/2024/drafts/a/b.txt"), &ctx()), under("object", "sales/2024/drafts/"));
        // A folder marker is in the prefix it names, as the objects below it are.
        assert_eq!(named.subject(&object("sales/2024/drafts/"), &ctx()), under("object", "sales/2024/drafts/"));
        assert_eq!(named.subject(&object("sales/2024/drafts"), &ctx()), under("object", "sales/"));
        assert_eq!(named.subject(&object("top.csv"), &ctx()), under("object", ""));
        assert_eq!(named.subject(&object("salesman/x"), &ctx()), under("object", ""), "a prefix ends at its `/`");

        let listing = |prefix| Resource::prefix("lake", prefix).expect("prefix");
        assert_eq!(named.subject(&listing("sales/2024/"), &ctx()), under("prefix", "sales/"));
        assert_eq!(named.subject(&listing("sales/20"), &ctx()), under("prefix", "sales/"));
        assert_eq!(named.subject(&listing("other/"), &ctx()), under("prefix", ""));
        for named_prefix in ["sales/", "sales/2024/drafts/"] {
            let resource = listing(named_prefix);
            assert_eq!(named.subject(&resource, &ctx()), Subject::Exact(&resource), "{named_prefix} is named");
        }
        let bucket = Resource::Bucket("lake".into());
        assert_eq!(named.subject(&bucket, &ctx()), Subject::Exact(&bucket));
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
            assert_eq!(named.subject(&resource, &ctx()), Subject::Exact(&resource), "{key}");
        }
        assert!(matches!(named.subject(&object("sales/other.txt"), &ctx()), Subject::Under { .. }));
        assert!(matches!(named.subject(&object("plan.txt"), &ctx()), Subject::Under { .. }), "another bucket's key");
    }

    #[test]
    fn a_prefix_in_a_condition_or_an_entitys_attribute_is_named() {
        let named = named(r#"permit(principal, action, resource) when { resource in Prefix::"lake/hr/" };"#);
        assert_eq!(named.subject(&object("hr/2024/pay.csv"), &ctx()), under("object", "hr/"));

        // `resource in principal.home` with the home prefix written in entities.json only.
        let prefix: cedar_policy::EntityUid = r#"Prefix::"lake/home/alice/""#.parse().expect("uid");
        let alice = Entity::new(
            r#"User::"alice""#.parse().expect("uid"),
            [("home".to_owned(), cedar_policy::RestrictedExpression::new_entity_uid(prefix))].into(),
            HashSet::new(),
        )
        .expect("entity");
        let named = Named::of(&PolicySet::new(), &[alice]);
        assert_eq!(named.subject(&object("home/alice/notes.md"), &ctx()), under("object", "home/alice/"));
        assert_eq!(named.subject(&object("home/bob/notes.md"), &ctx()), under("object", ""));
    }

    #[test]
    fn a_request_with_context_of_its_callers_own_is_decided_on_its_own() {
        // A schema may let such context carry an entity that a policy compares the resource with.
        let named = named(r#"permit(principal, action, resource in Prefix::"lake/sales/");"#);
        let mut extra = ctx();
        extra.extra.insert("ip".into(), serde_json::json!("10.0.0.1"));
        let resource = object("sales/q1.csv");
        assert_eq!(named.subject(&resource, &extra), Subject::Exact(&resource));
    }

    #[test]
    fn a_template_linked_to_an_object_or_a_prefix_names_it() {
        let template = cedar_policy::Template::parse(
            Some(cedar_policy::PolicyId::new("t")),
            "permit(principal, action, resource in ?resource);",
        )
        .expect("template");
        let mut policies = PolicySet::new();
        policies.add_template(template).expect("add");
        for (link, target) in [("object", r#"Object::"lake/sales/linked.csv""#), ("prefix", r#"Prefix::"lake/eu/""#)] {
            let target: cedar_policy::EntityUid = target.parse().expect("uid");
            policies
                .link(
                    cedar_policy::PolicyId::new("t"),
                    cedar_policy::PolicyId::new(link),
                    [(cedar_policy::SlotId::resource(), target)].into(),
                )
                .expect("link");
        }
        let named = Named::of(&policies, &[]);
        let resource = object("sales/linked.csv");
        assert_eq!(named.subject(&resource, &ctx()), Subject::Exact(&resource));
        assert_eq!(named.subject(&object("eu/x/y.csv"), &ctx()), under("object", "eu/"));
    }

    #[test]
    fn users_no_policy_or_entity_names_are_decided_by_what_their_tokens_say() {
        let named = named(r#"forbid(principal == User::"mallory", action, resource);"#);
        let mallory = Principal { subject: "mallory".into(), ..alice() };
        assert_eq!(named.who(&alice(), &ctx()), Who::Unnamed);
        assert_eq!(named.who(&mallory, &ctx()), Who::User("mallory"));
        let mut extra = ctx();
        extra.extra.insert("owner".into(), serde_json::json!("alice"));
        assert_eq!(named.who(&alice(), &extra), Who::User("alice"), "context of the caller's own");

        let in_entities = Entity::new_no_attrs(r#"User::"alice""#.parse().expect("uid"), HashSet::new());
        let named = Named::of(&PolicySet::new(), &[in_entities]);
        assert_eq!(named.who(&alice(), &ctx()), Who::User("alice"), "a user of entities.json");

        let resource = object("sales/a");
        let any = key(&alice(), &Who::Unnamed, "s3:GetObject", &Subject::Exact(&resource), &ctx());
        assert_ne!(any, exact_key(&alice(), "s3:GetObject", &resource, &ctx()));
        let mut other = alice();
        other.subject = "erin".into();
        assert_eq!(any, key(&other, &Who::Unnamed, "s3:GetObject", &Subject::Exact(&resource), &ctx()));
        other.groups.push("hr".into());
        assert_ne!(any, key(&other, &Who::Unnamed, "s3:GetObject", &Subject::Exact(&resource), &ctx()));
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

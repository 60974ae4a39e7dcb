//! Which policies could apply to a request, found by index instead of by evaluating every policy.
//!
//! Cedar's authorizer evaluates every policy of the set it is given, so a decision costs time linear in the
//! policy count (13 ms at 10,000 policies). But a policy's scope (`principal in Group::"analysts"`,
//! `resource in Prefix::"lake/sales/"`, `action in [...]`) can only hold for a request whose principal, action
//! and resource are that entity or its descendants. The index maps each scope entity to its policies; a request
//! collects the entities it is (itself and its ancestors, from the request's own entity data) and hands Cedar
//! only the policies whose three scopes can hold.
//!
//! Leaving a policy out changes no decision: a scope whose entity is not among the request's ancestors is false,
//! and evaluating a scope cannot error, so the policy would neither allow, deny nor report an error. `is` scopes
//! and unconstrained scopes are always kept for Cedar to judge. The slices built are cached by the set of
//! policies they hold; the cache lives in the policy store, so a reload starts afresh and an edit binds the next
//! request.

use std::collections::HashMap;
use std::sync::Arc;

use cedar_policy::{ActionConstraint, Entities, EntityUid, Policy, PolicySet, PrincipalConstraint, ResourceConstraint};

/// Slices kept per policy store; a slice is a handful of policies, so this bounds memory to a few MiB whatever
/// mix of principals and resources arrives.
const SLICE_CACHE_ENTRIES: usize = 4096;

/// The policies of a store, indexed by the entities their scopes name.
pub(super) struct PolicyIndex {
    policies: Vec<Policy>,
    scopes: Vec<Scope>,
    by_principal: HashMap<EntityUid, Vec<u32>>,
    any_principal: Vec<u32>,
    by_resource: HashMap<EntityUid, Vec<u32>>,
    any_resource: Vec<u32>,
    slices: quick_cache::sync::Cache<Box<[u32]>, Arc<PolicySet>>,
    /// The whole set, for the rare slice Cedar will not build (it never refuses policies it accepted before).
    all: Arc<PolicySet>,
}

/// One policy's scope, reduced to what the index needs: the entity it names, if any.
struct Scope {
    principal: Option<EntityUid>,
    action: ActionScope,
    resource: Option<EntityUid>,
}

enum ActionScope {
    Any,
    OneOf(Vec<EntityUid>),
}

impl PolicyIndex {
    pub(super) fn new(set: &PolicySet) -> Self {
        let mut index = PolicyIndex {
            policies: Vec::new(),
            scopes: Vec::new(),
            by_principal: HashMap::new(),
            any_principal: Vec::new(),
            by_resource: HashMap::new(),
            any_resource: Vec::new(),
            slices: quick_cache::sync::Cache::new(SLICE_CACHE_ENTRIES),
            all: Arc::new(set.clone()),
        };
        for (n, policy) in (0u32..).zip(set.policies()) {
            let scope = Scope::of(policy);
            match &scope.principal {
                Some(uid) => index.by_principal.entry(uid.clone()).or_default().push(n),
                None => index.any_principal.push(n),
            }
            match &scope.resource {
                Some(uid) => index.by_resource.entry(uid.clone()).or_default().push(n),
                None => index.any_resource.push(n),
            }
            index.policies.push(policy.clone());
            index.scopes.push(scope);
        }
        index
    }

    /// The policies whose scopes can hold for this request. `entities` must be the request's entity data, with
    /// ancestors computed, so that `in` here means what it means to Cedar.
    pub(super) fn slice(
        &self,
        entities: &Entities,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
    ) -> Arc<PolicySet> {
        let principals = with_ancestors(entities, principal);
        let actions = with_ancestors(entities, action);
        let resources = with_ancestors(entities, resource);

        // Walk the narrower side of the index, then check the other two scopes of each candidate.
        let from_principal = candidates(&self.by_principal, &self.any_principal, &principals);
        let from_resource = candidates(&self.by_resource, &self.any_resource, &resources);
        let narrower = if count(&from_principal) <= count(&from_resource) { from_principal } else { from_resource };
        let mut chosen: Vec<u32> = narrower
            .into_iter()
            .flatten()
            .copied()
            .filter(|&n| self.scopes.get(n as usize).is_some_and(|s| s.can_hold(&principals, &actions, &resources)))
            .collect();
        chosen.sort_unstable();
        chosen.dedup();

        if let Some(slice) = self.slices.get(chosen.as_slice()) {
            return slice;
        }
        let policies = chosen.iter().filter_map(|&n| self.policies.get(n as usize)).cloned();
        match PolicySet::from_policies(policies) {
            Ok(set) => {
                let set = Arc::new(set);
                self.slices.insert(chosen.into_boxed_slice(), set.clone());
                set
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not slice the policy set; evaluating all of it");
                self.all.clone()
            }
        }
    }
}

impl Scope {
    fn of(policy: &Policy) -> Self {
        let principal = match policy.principal_constraint() {
            PrincipalConstraint::Eq(uid) | PrincipalConstraint::In(uid) | PrincipalConstraint::IsIn(_, uid) => {
                Some(uid)
            }
            PrincipalConstraint::Any | PrincipalConstraint::Is(_) => None,
        };
        let resource = match policy.resource_constraint() {
            ResourceConstraint::Eq(uid) | ResourceConstraint::In(uid) | ResourceConstraint::IsIn(_, uid) => Some(uid),
            ResourceConstraint::Any | ResourceConstraint::Is(_) => None,
        };
        let action = match policy.action_constraint() {
            ActionConstraint::Any => ActionScope::Any,
            ActionConstraint::Eq(uid) => ActionScope::OneOf(vec![uid]),
            ActionConstraint::In(uids) => ActionScope::OneOf(uids),
        };
        Scope { principal, action, resource }
    }

    /// Whether the scope can hold: each named entity is the request's entity or one of its ancestors. (`==` is
    /// stricter than `in`; Cedar still checks it, this only has to never leave out a policy that could hold.)
    fn can_hold(&self, principals: &[&EntityUid], actions: &[&EntityUid], resources: &[&EntityUid]) -> bool {
        let named = |uid: &Option<EntityUid>, set: &[&EntityUid]| uid.as_ref().is_none_or(|u| set.contains(&u));
        let action = match &self.action {
            ActionScope::Any => true,
            ActionScope::OneOf(uids) => uids.iter().any(|u| actions.contains(&u)),
        };
        action && named(&self.principal, principals) && named(&self.resource, resources)
    }
}

/// The entity and every ancestor it has in `entities`.
fn with_ancestors<'a>(entities: &'a Entities, uid: &'a EntityUid) -> Vec<&'a EntityUid> {
    std::iter::once(uid).chain(entities.ancestors(uid).into_iter().flatten()).collect()
}

/// The index lists a request can reach on one side: the unconstrained policies and those naming one of `uids`.
fn candidates<'a>(by: &'a HashMap<EntityUid, Vec<u32>>, any: &'a [u32], uids: &[&EntityUid]) -> Vec<&'a [u32]> {
    std::iter::once(any).chain(uids.iter().filter_map(|u| by.get(*u).map(Vec::as_slice))).collect()
}

fn count(lists: &[&[u32]]) -> usize {
    lists.iter().map(|l| l.len()).sum()
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use cedar_policy::{Entity, RestrictedExpression};

    use super::*;

    fn uid(s: &str) -> EntityUid {
        EntityUid::from_str(s).expect("uid")
    }

    fn set(text: &str) -> PolicySet {
        PolicySet::from_str(text).expect("policies")
    }

    /// The `@id`s of a slice's policies (the store names policies by them; a bare set numbers them).
    fn ids(slice: &PolicySet) -> Vec<String> {
        let mut ids: Vec<String> = slice.policies().filter_map(|p| p.annotation("id")).map(str::to_owned).collect();
        ids.sort();
        ids
    }

    /// alice in analysts in staff; an object in prefix lake/sales/ in bucket lake; GetObject in Read.
    fn world() -> Entities {
        let entity = |u: &str, parents: &[&str]| {
            Entity::new(
                uid(u),
                std::iter::empty::<(String, RestrictedExpression)>().collect(),
                parents.iter().map(|p| uid(p)).collect(),
            )
            .expect("entity")
        };
        Entities::from_entities(
            [
                entity(r#"User::"alice""#, &[r#"Group::"analysts""#]),
                entity(r#"Group::"analysts""#, &[r#"Group::"staff""#]),
                entity(r#"Object::"lake/sales/q1""#, &[r#"Prefix::"lake/sales/""#]),
                entity(r#"Prefix::"lake/sales/""#, &[r#"Bucket::"lake""#]),
                entity(r#"Action::"GetObject""#, &[r#"Action::"Read""#]),
            ],
            None,
        )
        .expect("entities")
    }

    #[test]
    fn a_request_sees_the_policies_its_principal_action_and_resource_can_satisfy() {
        let policies = set(r#"
            @id("staff-read") permit(principal in Group::"staff", action in Action::"Read", resource in Bucket::"lake");
            @id("alice-any") permit(principal == User::"alice", action, resource);
            @id("anyone-sales") forbid(principal, action == Action::"GetObject", resource in Prefix::"lake/sales/");
            @id("typed") permit(principal is User, action, resource is Object);
            @id("bob") permit(principal == User::"bob", action, resource);
            @id("hr") permit(principal in Group::"staff", action, resource in Prefix::"lake/hr/");
            @id("write") permit(principal, action in [Action::"Write"], resource);
        "#);
        let index = PolicyIndex::new(&policies);
        let slice = index.slice(
            &world(),
            &uid(r#"User::"alice""#),
            &uid(r#"Action::"GetObject""#),
            &uid(r#"Object::"lake/sales/q1""#),
        );
        assert_eq!(ids(&slice), ["alice-any", "anyone-sales", "staff-read", "typed"]);
    }

    #[test]
    fn the_same_slice_is_built_once() {
        let policies = set(r#"@id("a") permit(principal == User::"alice", action, resource);"#);
        let index = PolicyIndex::new(&policies);
        let (p, a, r) = (uid(r#"User::"alice""#), uid(r#"Action::"GetObject""#), uid(r#"Object::"lake/sales/q1""#));
        let first = index.slice(&world(), &p, &a, &r);
        let second = index.slice(&world(), &p, &a, &r);
        assert!(Arc::ptr_eq(&first, &second));
    }

    #[test]
    fn a_principal_outside_every_scope_gets_only_the_unconstrained_policies() {
        let policies = set(r#"
            @id("alice") permit(principal == User::"alice", action, resource);
            @id("all") forbid(principal, action, resource) when { false };
        "#);
        let index = PolicyIndex::new(&policies);
        let slice =
            index.slice(&world(), &uid(r#"User::"mallory""#), &uid(r#"Action::"GetObject""#), &uid(r#"Object::"x""#));
        assert_eq!(ids(&slice), ["all"]);
    }

    #[test]
    fn at_most_so_many_slices_are_kept_however_many_principals_arrive() {
        // A policy for each of more users than slices are kept, so that each user's requests have a slice of
        // their own.
        let users = SLICE_CACHE_ENTRIES + 512;
        let text: String = (0..users)
            .map(|n| format!("@id(\"u{n}\") permit(principal == User::\"u{n}\", action, resource);\n"))
            .collect();
        let index = PolicyIndex::new(&set(&text));
        let (a, r) = (uid(r#"Action::"GetObject""#), uid(r#"Object::"x""#));
        for n in 0..users {
            let slice = index.slice(&world(), &uid(&format!("User::\"u{n}\"")), &a, &r);
            assert_eq!(ids(&slice), [format!("u{n}")]);
        }
        assert!(index.slices.len() <= SLICE_CACHE_ENTRIES, "{} slices kept", index.slices.len());
    }
}

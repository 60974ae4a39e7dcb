//! May they: Cedar decisions over Lakegate's entity model, and the compiled data filter for tables.
//!
//! The engine holds the last good [`PolicyStore`]; a reload that fails validation leaves it in place. This
//! module does no network I/O and parses neither SQL nor HTTP.

pub mod catalog;
mod closure;
pub mod config;
mod decisions;
pub mod filter;
mod names;
mod resource;
mod slice;
pub mod store;
pub mod watch;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwap;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityUid, PolicyId, PolicySet, Request, RestrictedExpression,
};
use serde::Serialize;

use crate::identity::Principal;
pub use config::PolicyConfig;
pub use filter::{ColumnAccess, Condition, Mask, TableFilter, TableName, TableOp};
pub use resource::Resource;
use store::RequestShape;
pub use store::{LoadErrors, PolicyStore, Problem, StoreId};
pub use watch::watch;

/// Why a decision could not be made (the request is refused either way).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("unknown action {0:?}")]
    UnknownAction(String),
    #[error("invalid resource: {0}")]
    BadResource(String),
    #[error("invalid context: {0}")]
    BadContext(String),
    #[error("request does not fit the schema: {0}")]
    Request(String),
    #[error("entities: {0}")]
    Entities(String),
    #[error("unknown table {0}")]
    UnknownTable(String),
}

/// Facts about the request that policies may use (`context.front`, `context.actor`, `context.actors`).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub front: &'static str,
    /// Extra attributes supplied by the caller (decision API); they may not replace Lakegate's own.
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// A policy that decided, with its annotations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeterminingPolicy {
    pub id: String,
    pub effect: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The outcome of one authorization question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    /// The permits that allowed, or the forbids that denied; empty for a default deny.
    pub policies: Vec<DeterminingPolicy>,
    /// Policies that failed to evaluate; a failing forbid denies (fail closed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

impl Decision {
    /// The ids of the deciding policies.
    pub fn policy_ids(&self) -> Vec<String> {
        self.policies.iter().map(|p| p.id.clone()).collect()
    }
}

/// The live policy set, swapped atomically on reload.
///
/// Every request reads it and a reload is rare, so it is an [`ArcSwap`]: a read writes only memory of its own
/// thread. Under a lock and an `Arc` clone every decision wrote the lock's word and the count, lines that then
/// moved between the cores on each request: a repeated decision on two threads at once took 1.5–1.8 times its
/// time on one (`cargo bench -p lakegate-core --bench core -- decision_repeated`, docs/benchmarks.md).
#[derive(Clone)]
pub struct PolicyEngine {
    current: Arc<ArcSwap<PolicyStore>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").field("store", &self.store()).finish()
    }
}

impl PolicyEngine {
    /// An engine serving `store`.
    pub fn new(store: PolicyStore) -> Self {
        Self { current: Arc::new(ArcSwap::from_pointee(store)) }
    }

    /// Loads `dir`; fails if it does not validate.
    pub fn load(dir: &std::path::Path) -> Result<Self, LoadErrors> {
        Ok(Self::new(PolicyStore::load(dir)?))
    }

    /// The store in force now. Callers keep the `Arc` for the length of one request, so a request is decided
    /// by one policy set even if a reload lands meanwhile.
    pub fn store(&self) -> Arc<PolicyStore> {
        self.current.load_full()
    }

    /// The store in force now, as [`store`](Self::store) gives it, without writing its count (which every
    /// core's requests would then pass back and forth).
    pub(crate) fn pin(&self) -> arc_swap::Guard<Arc<PolicyStore>> {
        self.current.load()
    }

    /// Replaces the policy set.
    pub fn replace(&self, store: PolicyStore) {
        self.current.store(Arc::new(store));
    }

    /// Decides whether `principal` may do `action` on `resource`.
    pub fn decide(
        &self,
        principal: &Principal,
        action: &str,
        resource: &Resource,
        context: &RequestContext,
    ) -> Result<Decision, PolicyError> {
        decide_with(&self.pin(), principal, action, resource, context)
    }

    /// The S3 prefixes policies name in their scope (`resource in Prefix::"bucket/prefix/"`, `resource ==
    /// Bucket::"b"`...), as `(bucket, prefix)` with `""` for a bucket. Used to find where a principal might
    /// see something without enumerating keys; conditions in `when` clauses are not looked into.
    pub fn s3_prefixes(&self) -> Vec<(String, String)> {
        s3_prefixes_of(&self.store())
    }

    /// Compiles what `principal` may see of (or do to) `table` for `op`.
    pub fn table_filter(
        &self,
        principal: &Principal,
        op: TableOp,
        table: &TableName,
        context: &RequestContext,
    ) -> Result<TableFilter, PolicyError> {
        table_filter_with(&self.store(), principal, op, table, context)
    }
}

/// [`PolicyEngine::s3_prefixes`] of a given store.
pub fn s3_prefixes_of(store: &PolicyStore) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = store
        .policies
        .policies()
        .filter_map(|p| match p.resource_constraint() {
            cedar_policy::ResourceConstraint::In(uid)
            | cedar_policy::ResourceConstraint::Eq(uid)
            | cedar_policy::ResourceConstraint::IsIn(_, uid) => {
                let id = uid.id().unescaped().to_owned();
                match uid.type_name().to_string().as_str() {
                    "Bucket" => Some((id, String::new())),
                    "Prefix" => id.split_once('/').map(|(b, p)| (b.to_owned(), p.to_owned())),
                    _ => None,
                }
            }
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// [`PolicyEngine::decide`] against a given store.
pub fn decide_with(
    store: &PolicyStore,
    principal: &Principal,
    action: &str,
    resource: &Resource,
    context: &RequestContext,
) -> Result<Decision, PolicyError> {
    let subject = store.named.subject(resource, context);
    let who = store.named.who(principal, context);
    let key = decisions::key(principal, &who, action, &subject, context);
    if let Some(decision) = store.decisions.get(&key) {
        return Ok(decision);
    }
    let decision = decide_afresh(store, principal, action, resource, context)?;
    // An evaluation error's text may name the resource or the user: such a decision is not handed on.
    let own = matches!((subject, who), (decisions::Subject::Exact(_), decisions::Who::User(_)));
    if own || decision.errors.is_empty() {
        store.decisions.insert(key, &decision);
    }
    Ok(decision)
}

/// A decision made by Cedar, without the cache.
fn decide_afresh(
    store: &PolicyStore,
    principal: &Principal,
    action: &str,
    resource: &Resource,
    context: &RequestContext,
) -> Result<Decision, PolicyError> {
    let action_uid = action_uid(store, action)?;
    let principal_uid = user_uid(&principal.subject);
    // A request whose context Lakegate built alone conforms to the schema whenever one of its shape did; others
    // are checked every time (a caller's context can hold anything).
    let shape = (context.extra.is_empty() && !store.enumerates_ids).then(|| RequestShape {
        action: action_uid.clone(),
        resource_kind: resource.kind(),
        acted_for: !principal.actors.is_empty(),
    });
    let conforms = shape.as_ref().is_some_and(|s| store.conforming.read().is_ok_and(|c| c.contains(s)));
    let context = build_context(store, principal, context, &action_uid)?;
    let resource_uid = resource.uid();
    let schema = if conforms { None } else { Some(&store.schema) };
    let request = Request::new(principal_uid.clone(), action_uid.clone(), resource_uid.clone(), context, schema)
        .map_err(|e| PolicyError::Request(e.to_string()))?;
    if let (Some(shape), false) = (shape, conforms)
        && let Ok(mut conforming) = store.conforming.write()
    {
        conforming.insert(shape);
    }
    let mut entities = vec![user_entity(principal)];
    entities.extend(resource.entities(&store.catalog));
    let entities = request_entities(store, entities, &action_uid)?;
    let slice = store.index.slice(&entities, &principal_uid, &action_uid, &resource_uid);
    Ok(evaluate(store, &slice, &request, &entities))
}

/// The entities of one decision: the request's own (the user, the resource and its parents), the static ones
/// (validated at load), and the action with the actions it is in. Built without the schema: every part was
/// checked against it where it was made, and Cedar would otherwise add every action of the schema and compute
/// their ancestors again on each decision. The hierarchy's closure is computed here, from what the store
/// closed at load ([`closure`]), unless the static entities make that unsound.
fn request_entities(
    store: &PolicyStore,
    own: Vec<closure::OwnEntity>,
    action: &EntityUid,
) -> Result<Entities, PolicyError> {
    let actions = store.action_chains.get(action).into_iter().flatten();
    if store.hierarchy.closes_requests() {
        return store.hierarchy.entities(own, &store.static_entities, actions);
    }
    let own = dedup(own.into_iter().map(Entity::from).collect());
    let uids: HashSet<EntityUid> = own.iter().map(Entity::uid).collect();
    // A static entity with the uid of a request's own (a user given groups in entities.json, say) yields to it.
    let statics = store.static_entities.iter().filter(|e| !uids.contains(&e.uid())).cloned();
    Entities::from_entities(own.into_iter().chain(statics).chain(actions.cloned()), None)
        .map_err(|e| PolicyError::Entities(e.to_string()))
}

/// Decides `request` by the policies of `slice` (those of `store` that can apply to it).
fn evaluate(store: &PolicyStore, slice: &PolicySet, request: &Request, entities: &Entities) -> Decision {
    let response = Authorizer::new().is_authorized(request, slice, entities);
    let is_forbid = |id: &PolicyId| store.described.get(id).is_some_and(|d| d.forbid);
    let mut errors = Vec::new();
    let mut failed_forbid = Vec::new();
    for e in response.diagnostics().errors() {
        errors.push(e.to_string());
        let cedar_policy::AuthorizationError::PolicyEvaluationError(pe) = e;
        let id = pe.policy_id();
        if is_forbid(id) {
            failed_forbid.push(id.clone());
        }
    }
    let describe = |id: &PolicyId| DeterminingPolicy {
        id: id.to_string(),
        effect: if is_forbid(id) { "forbid" } else { "permit" },
        annotations: store.annotations(id),
    };
    if !failed_forbid.is_empty() {
        // Cedar skips a policy whose evaluation errors; for a forbid that would widen access. Deny instead.
        return Decision { allowed: false, policies: failed_forbid.iter().map(describe).collect(), errors };
    }
    let allowed = response.decision() == cedar_policy::Decision::Allow;
    let mut policies: Vec<DeterminingPolicy> = response.diagnostics().reason().map(describe).collect();
    policies.sort_by(|a, b| a.id.cmp(&b.id));
    Decision { allowed, policies, errors }
}

/// [`PolicyEngine::table_filter`] against a given store.
pub fn table_filter_with(
    store: &PolicyStore,
    principal: &Principal,
    op: TableOp,
    table: &TableName,
    context: &RequestContext,
) -> Result<TableFilter, PolicyError> {
    explain_table_filter(store, principal, op, table, context).map(|e| e.filter)
}

/// A compiled table filter together with the forbids that took something out of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExplainedFilter {
    pub filter: TableFilter,
    /// Ids of the forbid policies that denied the table or one of its columns, sorted. Empty where what is
    /// missing is missing by default (no permit holds), so a refusal can name what decided it.
    pub forbidden_by: Vec<String>,
}

/// [`table_filter_with`], also naming the forbids behind whatever the filter leaves out.
pub fn explain_table_filter(
    store: &PolicyStore,
    principal: &Principal,
    op: TableOp,
    table: &TableName,
    context: &RequestContext,
) -> Result<ExplainedFilter, PolicyError> {
    let def =
        store.catalog.table(&table.schema, &table.name).ok_or_else(|| PolicyError::UnknownTable(table.to_string()))?;
    let columns: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
    explain_filter_over(store, principal, op, table, &columns, context)
}

/// [`explain_table_filter`] for a table whose columns are given rather than read from `catalog.toml` (an Iceberg
/// table's current schema). Column tags still come from `catalog.toml` where it declares the table: tags are
/// the policy author's, never the table writer's.
pub fn explain_filter_over(
    store: &PolicyStore,
    principal: &Principal,
    op: TableOp,
    table: &TableName,
    column_names: &[&str],
    context: &RequestContext,
) -> Result<ExplainedFilter, PolicyError> {
    let table_resource = Resource::Table { database: table.schema.clone(), table: table.name.clone() };
    let mut contributing: Vec<String> = Vec::new();
    let mut forbidden_by: Vec<String> = Vec::new();

    let table_decision = decide_with(store, principal, op.action(), &table_resource, context)?;
    let permissive: Vec<Option<String>> = if table_decision.allowed {
        contributing.extend(table_decision.policy_ids());
        table_decision.policies.iter().map(|p| p.annotations.get(store::ROW_FILTER).cloned()).collect()
    } else {
        forbidden_by.extend(table_decision.policy_ids());
        Vec::new()
    };

    let restrict = decide_with(store, principal, "RestrictRows", &table_resource, context)?;
    let restrictive: Vec<String> = if restrict.allowed {
        contributing.extend(restrict.policy_ids());
        restrict.policies.iter().filter_map(|p| p.annotations.get(store::ROW_FILTER).cloned()).collect()
    } else {
        Vec::new()
    };

    let mut columns: Vec<ColumnAccess> = Vec::new();
    if !permissive.is_empty() {
        for &column in column_names {
            let resource = Resource::Column {
                database: table.schema.clone(),
                table: table.name.clone(),
                column: column.to_owned(),
            };
            let d = decide_with(store, principal, op.action(), &resource, context)?;
            if !d.allowed {
                forbidden_by.extend(d.policy_ids());
                continue;
            }
            contributing.extend(d.policy_ids());
            if let Some(access) = column_access(column, &d, &permissive) {
                columns.push(access);
            }
        }
    }
    contributing.sort();
    contributing.dedup();
    forbidden_by.sort();
    forbidden_by.dedup();

    let mut attributes = principal.attributes.clone();
    attributes.insert("sub".into(), principal.subject.clone());
    let filter = TableFilter {
        table: table.clone(),
        permissive,
        restrictive,
        columns,
        principal: attributes,
        policies: contributing,
    };
    Ok(ExplainedFilter { filter, forbidden_by })
}

/// A column is clear where any unmasked permit holds, masked where only masked permits hold.
fn column_access(name: &str, decision: &Decision, permissive: &[Option<String>]) -> Option<ColumnAccess> {
    let mut clear = Vec::new();
    let mut masked: Option<(Mask, Vec<Option<String>>)> = None;
    for p in &decision.policies {
        let row_filter = p.annotations.get(store::ROW_FILTER).cloned();
        let mask = Mask::from_annotations(
            p.annotations.get(store::MASK).map(String::as_str),
            p.annotations.get(store::MASK_EXPR).map(String::as_str),
        );
        match (mask, &mut masked) {
            (None, _) => clear.push(row_filter),
            // Several masks: the first by policy id wins, deterministic (policies are sorted by id).
            (Some(m), None) => masked = Some((m, vec![row_filter])),
            (Some(m), Some((first, conds))) if *first == m => conds.push(row_filter),
            (Some(_), Some(_)) => {}
        }
    }
    let clear = Condition::any_of(&clear).within_rows(permissive);
    let masked = match clear {
        Condition::Always => None,
        _ => masked.map(|(m, conds)| (m, Condition::any_of(&conds).within_rows(permissive))),
    };
    if clear == Condition::Never && masked.is_none() {
        return None;
    }
    Some(ColumnAccess { name: name.to_owned(), clear, masked })
}

fn action_uid(store: &PolicyStore, action: &str) -> Result<EntityUid, PolicyError> {
    let uid = names::uid("Action", action);
    if store.action_chains.contains_key(&uid) {
        Ok(uid)
    } else {
        Err(PolicyError::UnknownAction(action.chars().take(80).collect()))
    }
}

/// The Cedar entity id of a user.
pub fn user_uid(subject: &str) -> EntityUid {
    names::uid("User", subject)
}

fn user_entity(principal: &Principal) -> closure::OwnEntity {
    closure::string_entity(
        user_uid(&principal.subject),
        [("issuer", principal.issuer.as_str())],
        principal.groups.iter().map(|g| names::uid("Group", g)),
        principal.attributes.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

fn build_context(
    store: &PolicyStore,
    principal: &Principal,
    context: &RequestContext,
    action: &EntityUid,
) -> Result<Context, PolicyError> {
    if context.extra.is_empty() {
        // A user acting for themselves gets the same context from the same front: kept, one per front.
        let direct = principal.actors.is_empty();
        if direct && let Some(kept) = store.direct_contexts.read().ok().and_then(|c| c.get(context.front).cloned()) {
            return Ok(kept);
        }
        // Lakegate's own attributes only, built directly (`Request::new` checks them against the schema): parsing
        // them from JSON through the schema cost a quarter of a decision.
        let actors = principal.actors.iter().map(|a| RestrictedExpression::new_string(a.subject.clone()));
        let pairs = [
            ("front".to_owned(), RestrictedExpression::new_string(context.front.to_owned())),
            ("actors".to_owned(), RestrictedExpression::new_set(actors)),
        ]
        .into_iter()
        .chain(
            principal.actors.first().map(|a| ("actor".to_owned(), RestrictedExpression::new_string(a.subject.clone()))),
        );
        let built = Context::from_pairs(pairs).map_err(|e| PolicyError::BadContext(e.to_string()))?;
        if direct && let Ok(mut kept) = store.direct_contexts.write() {
            kept.insert(context.front, built.clone());
        }
        return Ok(built);
    }
    let mut map = serde_json::Map::new();
    for (k, v) in &context.extra {
        if matches!(k.as_str(), "front" | "actor" | "actors") {
            return Err(PolicyError::BadContext(format!("{k:?} is set by Lakegate, not by the caller")));
        }
        map.insert(k.clone(), v.clone());
    }
    map.insert("front".into(), serde_json::Value::String(context.front.to_owned()));
    if let Some(actor) = principal.actors.first() {
        map.insert("actor".into(), serde_json::Value::String(actor.subject.clone()));
    }
    map.insert(
        "actors".into(),
        serde_json::Value::Array(
            principal.actors.iter().map(|a| serde_json::Value::String(a.subject.clone())).collect(),
        ),
    );
    Context::from_json_value(serde_json::Value::Object(map), Some((&store.schema, action)))
        .map_err(|e| PolicyError::BadContext(e.to_string()))
}

fn dedup(entities: Vec<Entity>) -> Vec<Entity> {
    let mut seen = HashSet::new();
    entities.into_iter().filter(|e| seen.insert(e.uid())).collect()
}

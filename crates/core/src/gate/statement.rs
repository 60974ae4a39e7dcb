//! The data filters of the tables of one SQL statement, and the record of the statement.
//!
//! Rewriting sits between deciding and recording: the rewriter asks for a table's filter while it walks the
//! statement (synchronously), and only once it is done is it known which filters and masks were applied. So the
//! decision takes two steps: [`Gate::statement_policy`] pins the policy set in force and compiles filters as the
//! rewriter asks, [`StatementPolicy::finish`] turns what it decided into a [`StatementDecision`], and
//! [`Gate::admit_statement`] (or [`Gate::refuse_statement`]) counts and records it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use super::{DEFAULT_DENY, Gate, GateError, Origin, event, front_name};
use crate::audit::{AuditSlot, SqlAudit};
use crate::identity::Principal;
use crate::policy::catalog::Catalog;
use crate::policy::{
    ExplainedFilter, PolicyError, PolicyStore, RequestContext, StoreId, TableFilter, TableName, TableOp,
};

/// The table filters a session has compiled, valid for one policy set.
///
/// A filter depends on the principal and the request context (the front and the actor chain), which are fixed
/// for a session, on the operation and table, and on the policy set; nothing else goes into a decision (no
/// clock, no request attributes). So a session reuses a filter until the policy set in force is a different
/// one, which makes a revoked permission take effect on the very next statement, as without the cache.
#[derive(Debug, Default)]
pub struct FilterCache {
    store: Option<StoreId>,
    entries: HashMap<(TableOp, TableName), ExplainedFilter>,
}

/// Most filters one session keeps (a session touching more tables than this recompiles some).
const MAX_CACHED_FILTERS: usize = 256;

impl FilterCache {
    fn get_or_compile(
        &mut self,
        store: &Arc<PolicyStore>,
        key: (TableOp, TableName),
        compile: impl FnOnce() -> Result<ExplainedFilter, PolicyError>,
    ) -> Result<ExplainedFilter, PolicyError> {
        if !self.store.as_ref().is_some_and(|s| s.is(store)) {
            self.store = Some(StoreId::of(store));
            self.entries.clear();
        }
        if let Some(filter) = self.entries.get(&key) {
            return Ok(filter.clone());
        }
        let filter = compile()?;
        if self.entries.len() >= MAX_CACHED_FILTERS {
            self.entries.clear();
        }
        self.entries.insert(key, filter.clone());
        Ok(filter)
    }
}

/// The policy set one SQL request is decided under, and what was decided so far. Built by
/// [`Gate::statement_policy`]; the rewriter calls [`StatementPolicy::table_filter`] for every table it meets.
#[derive(Debug)]
pub struct StatementPolicy<'a> {
    store: arc_swap::Guard<Arc<PolicyStore>>,
    principal: &'a Principal,
    context: RequestContext,
    cache: &'a Mutex<FilterCache>,
    /// The rewriter's lookup is a shared-reference callback, so what it decides is kept behind a lock.
    decided: Mutex<StatementDecision>,
}

/// What was decided for the tables of a SQL request: for each visible table the permits behind its filter, the
/// forbids that took a table or column away, and a policy that could not be evaluated.
#[derive(Debug, Clone, Default)]
pub struct StatementDecision {
    permits: BTreeMap<TableName, BTreeSet<String>>,
    forbids: BTreeSet<String>,
    error: Option<PolicyError>,
}

impl StatementDecision {
    /// The part of the decision that concerns `tables` (one statement of a request of several).
    pub fn for_tables(&self, tables: &[TableName]) -> StatementDecision {
        StatementDecision {
            permits: tables
                .iter()
                .filter_map(|t| self.permits.get_key_value(t))
                .map(|(t, p)| (t.clone(), p.clone()))
                .collect(),
            forbids: self.forbids.clone(),
            error: self.error.clone(),
        }
    }

    /// A policy that failed to evaluate while filters were compiled; the tables concerned were treated as not
    /// permitted (fail closed), and the statement must be refused.
    pub fn policy_error(&self) -> Option<&PolicyError> {
        self.error.as_ref()
    }

    /// The forbids that took a table or column away, sorted.
    pub(super) fn forbids(&self) -> impl Iterator<Item = &String> {
        self.forbids.iter()
    }

    /// The permits behind the filters of the statement's tables, sorted.
    pub(super) fn policies(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self.permits.values().flatten().collect();
        all.into_iter().cloned().collect()
    }
}

/// Why a SQL statement was refused, as the front tells it (`reason`, and the SQLSTATE the client sees).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An access the policies do not allow, or that the gateway refuses by its fail-closed rules (DDL, system
    /// functions...): recorded and counted as a denial.
    Denied { reason: String, sqlstate: String },
    /// Not a decision: text that does not parse, a construct the gateway does not support, a size limit.
    /// Recorded as an error, not counted as a decision.
    Invalid { reason: String, sqlstate: String },
}

impl StatementPolicy<'_> {
    /// The governed catalog of the pinned policy set: the rewriter resolves names against the same set that
    /// decides the filters.
    pub fn catalog(&self) -> &Catalog {
        self.store.catalog()
    }

    /// The pinned policy set (what derived indexes of its catalog are keyed by).
    pub fn store(&self) -> &Arc<PolicyStore> {
        &self.store
    }

    /// The data filter of `table` for `op`: what the principal may see of (or do to) it. `None` when no permit
    /// holds for the table, or when a policy could not be evaluated (fail closed; [`StatementPolicy::finish`]
    /// reports it).
    pub fn table_filter(&self, table: &TableName, op: TableOp) -> Option<TableFilter> {
        let compiled = self.cache.lock().unwrap_or_else(PoisonError::into_inner).get_or_compile(
            &self.store,
            (op, table.clone()),
            || crate::policy::explain_table_filter(&self.store, self.principal, op, table, &self.context),
        );
        let mut decided = self.decided.lock().unwrap_or_else(PoisonError::into_inner);
        match compiled {
            Ok(explained) => {
                decided.forbids.extend(explained.forbidden_by.iter().cloned());
                if explained.filter.permissive.is_empty() {
                    return None;
                }
                decided.permits.entry(table.clone()).or_default().extend(explained.filter.policies.iter().cloned());
                Some(explained.filter)
            }
            Err(e) => {
                decided.error.get_or_insert(e);
                None
            }
        }
    }

    /// What was decided, for recording.
    pub fn finish(self) -> StatementDecision {
        self.decided.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Gate {
    /// Pins the policy set in force for one SQL request of `principal` and hands out its table filters,
    /// reusing (and filling) the session's `cache` while the policy set stays the same.
    pub fn statement_policy<'a>(&self, principal: &'a Principal, cache: &'a Mutex<FilterCache>) -> StatementPolicy<'a> {
        StatementPolicy {
            store: self.policy.pin(),
            principal,
            context: RequestContext { front: front_name(crate::audit::Front::Sql), ..Default::default() },
            cache,
            decided: Mutex::new(StatementDecision::default()),
        }
    }

    /// Admits one rewritten statement: counts the allow and reserves its audit slot, which names the permits
    /// behind the filters of its tables and carries `sql` (original and rewritten text, the filters and masks
    /// applied). The backend must not see the statement unless this succeeds.
    ///
    /// A statement that reads no governed table (`SELECT 1`) is decided by no policy; its record is an allow
    /// with an empty `policies` list.
    pub async fn admit_statement(
        &self,
        origin: &Origin,
        principal: &Principal,
        action: &str,
        decision: &StatementDecision,
        sql: SqlAudit,
    ) -> Result<AuditSlot, GateError> {
        let resource = sql.tables.join(",");
        let ev = event(origin, action, &resource).principal(principal).allow(decision.policies()).sql(sql);
        Self::count(origin.front, "allow");
        self.begin(origin.front, ev).await
    }

    /// Reserves the record of a transaction control statement on a block's own backend connection (its COMMIT or
    /// ROLLBACK, a savepoint statement), before the backend sees it. No policy decides these: each statement of
    /// the block was decided on its own, and these records say which of their writes stand (see
    /// [`SqlAudit::transaction`]). `resource` is the backend the block runs on.
    pub async fn admit_transaction_control(
        &self,
        origin: &Origin,
        principal: &Principal,
        action: &str,
        resource: &str,
        sql: SqlAudit,
    ) -> Result<AuditSlot, GateError> {
        let ev = event(origin, action, resource).principal(principal).allow(std::iter::empty::<String>()).sql(sql);
        self.begin(origin.front, ev).await
    }

    /// Records a refused statement. With a decision, a refusal it explains names the forbids that took a table
    /// or column away (none: a default deny); a policy error is recorded and counted as an error.
    pub async fn refuse_statement(
        &self,
        origin: &Origin,
        principal: &Principal,
        decision: Option<&StatementDecision>,
        sql: SqlAudit,
        refusal: Refusal,
    ) -> Result<(), GateError> {
        let ev = event(origin, "sql:Statement", sql.tables.join(",")).principal(principal).sql(sql);
        let (Refusal::Denied { sqlstate, .. } | Refusal::Invalid { sqlstate, .. }) = &refusal;
        let sqlstate = sqlstate.clone();
        let mut ev = match (decision.and_then(StatementDecision::policy_error), refusal) {
            (Some(e), _) => {
                Self::count(origin.front, "error");
                ev.error(format!("policy: {e}"))
            }
            (None, Refusal::Denied { reason, .. }) => {
                Self::count(origin.front, "deny");
                let forbids: Vec<String> = decision.map(|d| d.forbids.iter().cloned().collect()).unwrap_or_default();
                let reason = if forbids.is_empty() { format!("{DEFAULT_DENY}: {reason}") } else { reason };
                ev.deny(reason, forbids)
            }
            (None, Refusal::Invalid { reason, .. }) => ev.error(reason),
        };
        ev.outcome_mut().error_code = Some(sqlstate);
        self.write(origin.front, ev).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo() -> Arc<PolicyStore> {
        // The demo set lives at the workspace root, beside the crates.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        Arc::new(PolicyStore::load(&dir).expect("the demo policies load"))
    }

    fn analyst() -> Principal {
        Principal {
            issuer: "test".into(),
            subject: "alice".into(),
            groups: vec!["analysts".into()],
            attributes: [("region".to_owned(), "EU".to_owned())].into(),
            token_id: None,
            expires_at: i64::MAX,
            actors: Vec::new(),
        }
    }

    /// Compiles `sales.orders` through `cache` under `store`; counts the compilations it needed.
    fn compile(cache: &mut FilterCache, store: &Arc<PolicyStore>, compiled: &mut usize) -> ExplainedFilter {
        let table = TableName::new("sales", "orders");
        let context = RequestContext { front: "sql", ..Default::default() };
        cache
            .get_or_compile(store, (TableOp::Select, table.clone()), || {
                *compiled += 1;
                crate::policy::explain_table_filter(store, &analyst(), TableOp::Select, &table, &context)
            })
            .expect("compiles")
    }

    #[test]
    fn a_session_reuses_a_filter_until_the_policy_set_in_force_is_another_one() {
        let (first, reloaded) = (demo(), demo());
        let mut cache = FilterCache::default();
        let mut compiled = 0;
        let filter = compile(&mut cache, &first, &mut compiled);
        assert_eq!(compile(&mut cache, &first, &mut compiled), filter);
        assert_eq!(compiled, 1, "the second statement under the same set reuses the filter");
        compile(&mut cache, &reloaded, &mut compiled);
        assert_eq!(compiled, 2, "a reload, even to equal text, compiles again: the new set binds at once");
        // An idle session's cache keeps neither set alive once the process has let go of it.
        let probes = (Arc::downgrade(&first), Arc::downgrade(&reloaded));
        drop((first, reloaded));
        assert!(probes.0.upgrade().is_none() && probes.1.upgrade().is_none());
    }

    #[test]
    fn a_statement_is_recorded_with_the_permits_of_its_own_tables_only() {
        let orders = TableName::new("sales", "orders");
        let employees = TableName::new("hr", "employees");
        let decision = StatementDecision {
            permits: [
                (orders.clone(), ["orders-analysts-own-region".to_owned()].into()),
                (employees, ["employees-analysts-directory".to_owned()].into()),
            ]
            .into(),
            forbids: BTreeSet::new(),
            error: None,
        };
        assert_eq!(decision.for_tables(&[orders]).policies(), vec!["orders-analysts-own-region".to_owned()]);
        assert!(decision.for_tables(&[]).policies().is_empty(), "SELECT 1 is decided by no policy");
    }
}

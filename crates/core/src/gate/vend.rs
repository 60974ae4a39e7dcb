//! Vending credentials: STS AssumeRoleWithWebIdentity, GetDataAccess, and full-table credentials (the SQL
//! front's, the Iceberg catalog's).
//!
//! Each decides whether the principal may have credentials at all and how far they may reach; the front then
//! mints them and finishes the slot with what it handed out. Credentials never replace the per-request decision:
//! every S3 request made with them is decided again against the live policy, full-table credentials as an
//! access to their table ([`Gate::authorize_table_files`]).

use std::collections::BTreeMap;

use super::{Allowed, DEFAULT_DENY, Gate, GateError, NotAllowed, Origin, allowed, event, front_name};
use crate::audit::{AuditEvent, AuditSlot, Front};
use crate::credentials::{self, DataAccess, Permission, Privilege, S3Location, Scope, TableBinding};
use crate::identity::Principal;
use crate::policy::{
    Condition, Decision, PolicyError, PolicyStore, RequestContext, Resource, TableFilter, TableName, TableOp,
};

/// The Cedar action (and audit action) of assuming a role.
pub const ASSUME_ROLE: &str = "sts:AssumeRoleWithWebIdentity";
/// The Cedar action of GetDataAccess.
const GET_DATA_ACCESS: &str = "GetDataAccess";
/// The audit action of full-table credentials (decided with `SelectTable` on the table and its columns), by
/// the front that vends them.
fn table_credentials_action(front: Front) -> &'static str {
    match front {
        Front::Catalog => "iceberg:VendCredentials",
        _ => "sql:TableCredentials",
    }
}
/// The Cedar action that lets full-table credentials write.
const COMMIT_TABLE: &str = "CommitTable";

/// Credentials asked for.
#[derive(Debug, Clone, Copy)]
pub enum Vend<'a> {
    /// STS AssumeRoleWithWebIdentity for the role profile of this name.
    Role(&'a str),
    /// GetDataAccess: `permission` on `target`, never wider than `within`, the caller's own credential scope.
    DataAccess { target: &'a S3Location, permission: Permission, privilege: Privilege, within: &'a Scope },
    /// Full-table credentials for a governed table.
    Table(TableAsk<'a>),
}

/// Full-table credentials asked for.
#[derive(Debug, Clone, Copy)]
pub struct TableAsk<'a> {
    pub table: &'a TableName,
    /// The table's location and columns where the front knows them (an Iceberg table's current metadata);
    /// `None` reads them from `catalog.toml`.
    pub shape: Option<&'a TableShape>,
    /// Read-write credentials, granted where the policy also allows `CommitTable` (else read-only).
    pub write: bool,
}

/// Where a table's files are and what its columns are.
#[derive(Debug, Clone)]
pub struct TableShape {
    /// `s3://bucket/prefix/`.
    pub location: String,
    pub columns: Vec<String>,
}

/// What the credentials may reach, besides what the front already knows.
#[derive(Debug, Clone)]
pub enum Grant {
    /// The role profile narrows them (the front holds the profile).
    Role,
    /// The scope to seal and the location to report.
    DataAccess(DataAccess),
    /// The table's storage location, and the binding to seal into the credentials (with `write`, read-write).
    Table { location: S3Location, binding: TableBinding },
}

/// An allowed vending: mint the credentials, fill in the slot (outcome, access key id), finish it.
#[derive(Debug)]
pub struct Vending {
    pub decision: Decision,
    pub slot: AuditSlot,
    pub grant: Grant,
}

impl Gate {
    /// Decides a request for credentials, records it, and on an allow hands back the slot of the record and
    /// what the credentials may reach. `details` go into the record's `extra` either way.
    pub async fn vend(
        &self,
        origin: &Origin,
        principal: &Principal,
        request: Vend<'_>,
        details: BTreeMap<String, serde_json::Value>,
    ) -> Result<Vending, GateError> {
        let store = self.policy.store();
        let context = RequestContext { front: front_name(origin.front), ..Default::default() };
        let base = |action: &str, resource: &Resource| {
            let mut ev = event(origin, action, resource.to_string()).principal(principal);
            ev.extra.extend(details.clone());
            ev
        };
        match request {
            Vend::Role(name) => {
                let resource = Resource::Role(name.to_owned());
                let ev = base(ASSUME_ROLE, &resource);
                let decision = crate::policy::decide_with(&store, principal, ASSUME_ROLE, &resource, &context);
                let Allowed { decision, slot } = self.settle(origin, ev, decision).await?;
                Ok(Vending { decision, slot, grant: Grant::Role })
            }
            Vend::DataAccess { target, permission, privilege, within } => {
                let asked = DataAccessAsk { target, permission, privilege, within };
                self.vend_data_access(origin, principal, &store, &context, asked, base).await
            }
            Vend::Table(ask) => {
                let table = ask.table;
                let resource = Resource::Table { database: table.schema.clone(), table: table.name.clone() };
                let ev = base(table_credentials_action(origin.front), &resource);
                self.vend_table(origin, principal, &store, &context, ask, ev).await
            }
        }
    }

    async fn vend_data_access(
        &self,
        origin: &Origin,
        principal: &Principal,
        store: &PolicyStore,
        context: &RequestContext,
        ask: DataAccessAsk<'_>,
        base: impl Fn(&str, &Resource) -> AuditEvent,
    ) -> Result<Vending, GateError> {
        let event_at = |location: &S3Location| -> Result<AuditEvent, GateError> {
            Ok(base(GET_DATA_ACCESS, &location_resource(location)?))
        };
        let Some(found) = granting_location(store, principal, context, &ask) else {
            // Decided on the target, so the refusal names what decided it.
            let ev = event_at(ask.target)?;
            let resource = location_resource(ask.target)?;
            let decision = crate::policy::decide_with(store, principal, GET_DATA_ACCESS, &resource, context);
            return Err(match allowed(decision) {
                Ok(_) => {
                    // The policy lets the caller ask here, but not for this permission.
                    let reason =
                        format!("{DEFAULT_DENY}: the live policy does not allow {:?} on the target", ask.permission);
                    self.not_grantable(origin, ev, reason, Vec::new()).await
                }
                Err(not) => self.refuse(origin, ev, not).await,
            });
        };
        let ev = event_at(&found.location)?;
        let resolve = |privilege| {
            credentials::resolve_data_access(ask.target, ask.permission, privilege, &found.location)
                .map_err(|e| PolicyError::BadResource(e.to_string()))
        };
        // Never wider than the caller's own credential: fall back to exactly the target, else refuse.
        let access = match resolve(ask.privilege) {
            Ok(a) if within(ask.within, &a.scope) => a,
            Ok(_) => match resolve(Privilege::Minimal) {
                Ok(a) if within(ask.within, &a.scope) => a,
                Ok(_) => {
                    let reason = "wider than the caller's own credential scope".to_owned();
                    return Err(self.not_grantable(origin, ev, reason, Vec::new()).await);
                }
                Err(e) => return Err(self.refuse(origin, ev, NotAllowed::Failed(e)).await),
            },
            Err(e) => return Err(self.refuse(origin, ev, NotAllowed::Failed(e)).await),
        };
        // The permits behind the permission asked for decided too.
        let mut policies = found.decision.policy_ids();
        policies.extend(found.permission_policies);
        policies.sort();
        policies.dedup();
        Self::count(origin.front, "allow");
        let slot = self.begin(origin.front, ev.allow(policies)).await?;
        Ok(Vending { decision: found.decision, slot, grant: Grant::DataAccess(access) })
    }

    async fn vend_table(
        &self,
        origin: &Origin,
        principal: &Principal,
        store: &PolicyStore,
        context: &RequestContext,
        ask: TableAsk<'_>,
        ev: AuditEvent,
    ) -> Result<Vending, GateError> {
        let table = ask.table;
        let shape = match ask.shape {
            Some(shape) => shape.clone(),
            None => match store.catalog().table(&table.schema, &table.name) {
                Some(def) => TableShape {
                    location: def.location.clone().unwrap_or_default(),
                    columns: def.columns.iter().map(|c| c.name.clone()).collect(),
                },
                None => {
                    let e = PolicyError::UnknownTable(table.to_string());
                    self.write(origin.front, ev.error(e.to_string())).await?;
                    return Err(e.into());
                }
            },
        };
        let resource = Resource::Table { database: table.schema.clone(), table: table.name.clone() };
        let decision = crate::policy::decide_with(store, principal, TableOp::Select.action(), &resource, context);
        let decision = match allowed(decision) {
            Ok(d) => d,
            Err(not) => return Err(self.refuse(origin, ev, not).await),
        };
        let columns: Vec<&str> = shape.columns.iter().map(String::as_str).collect();
        let filter =
            match crate::policy::explain_filter_over(store, principal, TableOp::Select, table, &columns, context) {
                Ok(f) => f.filter,
                Err(e) => return Err(self.refuse(origin, ev, NotAllowed::Failed(e)).await),
            };
        let location = S3Location::parse_prefix(&shape.location).ok();
        let Some(location) = location.filter(|_| is_full_access(&filter, &shape.columns)) else {
            let reason = if shape.location.is_empty() {
                format!("table {table} has no storage location in the catalog")
            } else if S3Location::parse_prefix(&shape.location).is_err() {
                format!("table {table} has a storage location credentials cannot be scoped to")
            } else {
                format!(
                    "{} has fine-grained restrictions on {table} (rows, columns or masks); query it through the SQL gateway instead",
                    principal.subject
                )
            };
            // The permits whose row filters or masks make the access fine-grained decided this refusal.
            return Err(self.not_grantable(origin, ev, reason, filter.policies).await);
        };
        let mut policies = filter.policies;
        let write = ask.write
            && match crate::policy::decide_with(store, principal, COMMIT_TABLE, &resource, context) {
                Ok(d) if d.allowed => {
                    policies.extend(d.policy_ids());
                    true
                }
                _ => false,
            };
        policies.sort();
        policies.dedup();
        Self::count(origin.front, "allow");
        let ev = ev.extra("permission", if write { "READ_WRITE" } else { "READ" });
        let slot = self.begin(origin.front, ev.allow(policies)).await?;
        let binding = TableBinding { table: table.to_string(), columns: shape.columns, write };
        Ok(Vending { decision, slot, grant: Grant::Table { location, binding } })
    }

    /// Decides one S3 access made with full-table credentials, as an access to their table under the live
    /// policy: the principal must still have full access to it (every column the credentials were vended for
    /// clear, no row filter) and, to write, `CommitTable` on it. Recorded like any S3 access, naming the table.
    pub async fn authorize_table_files(
        &self,
        origin: &Origin,
        principal: &Principal,
        binding: &TableBinding,
        access: (&str, &Resource),
        write: bool,
        details: BTreeMap<String, serde_json::Value>,
    ) -> Result<AuditSlot, GateError> {
        let (action, resource) = access;
        let store = self.policy.store();
        let context = RequestContext { front: front_name(origin.front), ..Default::default() };
        let mut ev = event(origin, action, resource.to_string()).principal(principal);
        ev.extra.extend(details);
        let ev = ev.extra("table", binding.table.clone());
        let Some((db, name)) = binding.table.split_once('.') else {
            let e = PolicyError::UnknownTable(binding.table.clone());
            return Err(self.refuse(origin, ev, NotAllowed::Failed(e)).await);
        };
        let table = TableName::new(db, name);
        let columns: Vec<&str> = binding.columns.iter().map(String::as_str).collect();
        let filter =
            match crate::policy::explain_filter_over(&store, principal, TableOp::Select, &table, &columns, &context) {
                Ok(f) => f.filter,
                Err(e) => return Err(self.refuse(origin, ev, NotAllowed::Failed(e)).await),
            };
        if !is_full_access(&filter, &binding.columns) {
            let reason = format!("{} no longer has full access to {table}", principal.subject);
            return Err(self.not_grantable(origin, ev, reason, filter.policies).await);
        }
        let mut policies = filter.policies;
        if write {
            if !binding.write {
                return Err(self.not_grantable(origin, ev, "read-only table credentials".into(), policies).await);
            }
            let resource = Resource::Table { database: table.schema.clone(), table: table.name.clone() };
            match allowed(crate::policy::decide_with(&store, principal, COMMIT_TABLE, &resource, &context)) {
                Ok(d) => policies.extend(d.policy_ids()),
                Err(not) => return Err(self.refuse(origin, ev, not).await),
            }
        }
        policies.sort();
        policies.dedup();
        Self::count(origin.front, "allow");
        self.begin(origin.front, ev.allow(policies)).await
    }

    /// Counts and records a refusal of credentials the policy would allow in some narrower form.
    async fn not_grantable(&self, origin: &Origin, ev: AuditEvent, reason: String, policies: Vec<String>) -> GateError {
        Self::count(origin.front, "deny");
        match self.write(origin.front, ev.deny(reason.clone(), policies)).await {
            Ok(()) => GateError::NotGrantable(reason),
            Err(e) => e,
        }
    }
}

/// Whether `filter` is full access to its table with `columns` (the catalog's column names): a permit without
/// row filter, no restrictive filter, every column clear on every row.
pub fn is_full_access(filter: &TableFilter, columns: &[String]) -> bool {
    filter.permissive.iter().any(Option::is_none)
        && filter.restrictive.is_empty()
        && columns.iter().all(|c| filter.columns.iter().any(|a| &a.name == c && a.clear == Condition::Always))
}

/// A GetDataAccess request as the gate decides it.
#[derive(Debug, Clone, Copy)]
struct DataAccessAsk<'a> {
    target: &'a S3Location,
    permission: Permission,
    privilege: Privilege,
    within: &'a Scope,
}

/// Where a GetDataAccess request is granted: the location, the GetDataAccess decision there, and the permits
/// behind the permission asked for.
struct Granting {
    location: S3Location,
    decision: Decision,
    permission_policies: Vec<String>,
}

/// The widest location at or above the target where the live policy allows both GetDataAccess and the
/// permission asked for.
fn granting_location(
    store: &PolicyStore,
    principal: &Principal,
    context: &RequestContext,
    ask: &DataAccessAsk<'_>,
) -> Option<Granting> {
    let target = ask.target;
    let prefix = target.prefix();
    let mut candidates: Vec<String> = vec![String::new()];
    candidates.extend(prefix.match_indices('/').map(|(i, _)| prefix.get(..=i).unwrap_or_default().to_owned()));
    if target.is_object() {
        candidates.push(prefix.to_owned());
    }
    candidates.into_iter().find_map(|p| {
        let text = format!("s3://{}/{p}", target.bucket());
        let location = if p.is_empty() || p.ends_with('/') {
            S3Location::parse_prefix(&text).ok()?
        } else {
            S3Location::parse_target(&text).ok()?
        };
        let resource = location_resource(&location).ok()?;
        let decision = crate::policy::decide_with(store, principal, GET_DATA_ACCESS, &resource, context).ok()?;
        if !decision.allowed {
            return None;
        }
        let permission_policies = permission_allowed(store, principal, context, &location, ask.permission)?;
        Some(Granting { location, decision, permission_policies })
    })
}

/// The permits that allow `permission` at `location`: reading (list and get) and/or writing (put); `None` when
/// the live policy does not allow it there.
fn permission_allowed(
    store: &PolicyStore,
    principal: &Principal,
    context: &RequestContext,
    location: &S3Location,
    permission: Permission,
) -> Option<Vec<String>> {
    let bucket = location.bucket();
    // A probe object inside the location stands for "any object under it"; for an object target, the object.
    let probe_key = if location.is_object() { location.prefix().to_owned() } else { format!("{}*", location.prefix()) };
    let object = Resource::object(bucket, &probe_key).ok()?;
    let allows = |action: &str, resource: &Resource| {
        crate::policy::decide_with(store, principal, action, resource, context)
            .ok()
            .filter(|d| d.allowed)
            .map(|d| d.policy_ids())
    };
    let read = || -> Option<Vec<String>> {
        let mut ids = allows("s3:GetObject", &object)?;
        if !location.is_object() {
            let listing = Resource::prefix(bucket, location.prefix()).ok()?;
            ids.extend(allows("s3:ListBucket", &listing)?);
        }
        Some(ids)
    };
    let write = || allows("s3:PutObject", &object);
    match permission {
        Permission::Read => read(),
        Permission::Write => write(),
        Permission::ReadWrite => {
            let mut ids = read()?;
            ids.extend(write()?);
            Some(ids)
        }
    }
}

fn location_resource(location: &S3Location) -> Result<Resource, PolicyError> {
    if location.is_object() {
        Resource::object(location.bucket(), location.prefix())
    } else {
        Resource::prefix(location.bucket(), location.prefix())
    }
}

/// Whether `inner` allows nothing `outer` does not.
fn within(outer: &Scope, inner: &Scope) -> bool {
    outer.clone().narrow(inner.clone()) == *inner
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{ColumnAccess, Mask};

    fn filter(permissive: Vec<Option<String>>, columns: Vec<ColumnAccess>) -> TableFilter {
        TableFilter {
            table: TableName::new("hr", "employees"),
            permissive,
            restrictive: vec![],
            columns,
            principal: Default::default(),
            policies: vec![],
        }
    }

    #[test]
    fn full_access_means_all_rows_and_every_column_clear() {
        let cols = vec!["id".to_owned(), "ssn".to_owned()];
        assert!(is_full_access(
            &filter(vec![None], vec![ColumnAccess::clear("id"), ColumnAccess::clear("ssn")]),
            &cols
        ));
        // A row filter, a missing column or a mask each make access fine-grained.
        assert!(!is_full_access(
            &filter(vec![Some("id = 1".into())], vec![ColumnAccess::clear("id"), ColumnAccess::clear("ssn")]),
            &cols
        ));
        assert!(!is_full_access(&filter(vec![None], vec![ColumnAccess::clear("id")]), &cols));
        let masked = ColumnAccess {
            name: "ssn".into(),
            clear: Condition::Never,
            masked: Some((Mask::Last4, Condition::Always)),
        };
        assert!(!is_full_access(&filter(vec![None], vec![ColumnAccess::clear("id"), masked]), &cols));
    }
}

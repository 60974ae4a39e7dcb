//! What a listing may show: the buckets of S3 ListBuckets, the relations and columns of a SQL catalog query.
//!
//! A listing is one decision made of many small ones (may the caller list anything in this bucket? see anything
//! of this table?). The gate makes them against one policy set, and records the listing once: what was asked,
//! what it shows, and the permits behind what it shows. A listing that shows nothing is recorded as a denial, by
//! default or by the forbids that hid something, and is answered with an empty list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use super::{DEFAULT_DENY, FilterCache, Gate, GateError, Origin, event, front_name};
use crate::audit::{AuditSlot, SqlAudit};
use crate::identity::Principal;
use crate::policy::catalog::ColumnDef;
use crate::policy::{RequestContext, Resource, TableName, TableOp};

/// A bucket the store holds, with the prefixes inside it that the caller's credential is scoped to (policy may
/// allow listing there even where it does not at the bucket's root).
#[derive(Debug, Clone)]
pub struct BucketCandidate {
    pub bucket: String,
    pub prefixes: Vec<String>,
}

/// The buckets a ListBuckets answer may name, and the slot of its record (fill in the outcome, then finish).
#[derive(Debug)]
pub struct BucketListing {
    pub visible: Vec<String>,
    pub slot: AuditSlot,
}

/// A governed table a catalog query may show, with the columns it may show, in catalog order.
#[derive(Debug, Clone, PartialEq)]
pub struct VisibleTable {
    /// The table's position in the catalog (tools keep oids derived from it between queries).
    pub position: usize,
    pub name: TableName,
    pub columns: Vec<ColumnDef>,
}

/// What a catalog query may show, and the slot of its record.
#[derive(Debug)]
pub struct CatalogListing {
    pub tables: Vec<VisibleTable>,
    pub slot: AuditSlot,
}

/// One entry a listing might show, and the questions any one of which, allowed, shows it.
#[derive(Debug, Clone)]
pub struct ListingCandidate {
    pub name: String,
    pub shown_if: Vec<(&'static str, Resource)>,
}

/// The names a listing may show, in the order asked, and the slot of its record.
#[derive(Debug)]
pub struct Listing {
    pub visible: Vec<String>,
    pub slot: AuditSlot,
}

impl Gate {
    /// Decides which of `candidates` a listing may show (the Iceberg catalog's namespaces and tables): each is
    /// shown when any of its questions is allowed. One record under `operation` on `resource`, naming what is
    /// shown and the permits that show it; a listing that shows nothing is recorded as a denial.
    pub async fn list_visible(
        &self,
        origin: &Origin,
        principal: &Principal,
        operation: &str,
        resource: &str,
        candidates: Vec<ListingCandidate>,
    ) -> Result<Listing, GateError> {
        let store = self.policy.store();
        let context = RequestContext { front: front_name(origin.front), ..Default::default() };
        let mut visible = Vec::new();
        let mut policies = BTreeSet::new();
        for candidate in candidates {
            // The first question allowed shows the entry; a policy error reads as "not shown".
            let shown = candidate.shown_if.iter().find_map(|(action, r)| {
                crate::policy::decide_with(&store, principal, action, r, &context).ok().filter(|d| d.allowed)
            });
            if let Some(decision) = shown {
                policies.extend(decision.policy_ids());
                visible.push(candidate.name);
            }
        }
        let ev = event(origin, operation, resource).principal(principal).extra("shown", visible.clone());
        let ev = if visible.is_empty() {
            Self::count(origin.front, "deny");
            ev.deny(format!("{DEFAULT_DENY}: nothing may be shown"), Vec::<String>::new())
        } else {
            Self::count(origin.front, "allow");
            ev.allow(policies)
        };
        let slot = self.begin(origin.front, ev).await?;
        Ok(Listing { visible, slot })
    }

    /// Decides which of `candidates` a ListBuckets answer may name: a bucket is shown when the live policy lets
    /// the caller list somewhere in it (at its root, at a prefix a policy names, or at a prefix of the caller's
    /// credential). The record names the shown buckets and the permits that let each be shown.
    pub async fn list_buckets(
        &self,
        origin: &Origin,
        principal: &Principal,
        candidates: Vec<BucketCandidate>,
        details: BTreeMap<String, serde_json::Value>,
    ) -> Result<BucketListing, GateError> {
        let (visible, policies) = self.visible_buckets(origin, principal, candidates);
        let mut ev = event(origin, "s3:ListAllMyBuckets", "s3://").principal(principal);
        ev.extra.extend(details);
        let ev = ev.extra("operation", "ListBuckets").extra("buckets", visible.clone());
        let ev = if visible.is_empty() {
            Self::count(origin.front, "deny");
            ev.deny(format!("{DEFAULT_DENY}: no bucket may be listed"), Vec::<String>::new())
        } else {
            Self::count(origin.front, "allow");
            ev.allow(policies)
        };
        let slot = self.begin(origin.front, ev).await?;
        Ok(BucketListing { visible, slot })
    }

    /// Decides whether the caller may see into one bucket by the rule of [`Gate::list_buckets`], for an
    /// operation that answers about the bucket itself without reaching into it (S3 CreateBucket on a bucket
    /// that exists: `409 BucketAlreadyOwnedByYou` to whoever may see it, `403` to everyone else, so the answer
    /// tells no more than ListBuckets would). Recorded under `action` and `operation`, on `s3://<bucket>/`;
    /// `visible` is empty when the bucket may not be seen (recorded as a denial).
    pub async fn see_bucket(
        &self,
        origin: &Origin,
        principal: &Principal,
        candidate: BucketCandidate,
        action: &str,
        operation: &str,
        details: BTreeMap<String, serde_json::Value>,
    ) -> Result<BucketListing, GateError> {
        let resource = format!("s3://{}/", candidate.bucket);
        let (visible, policies) = self.visible_buckets(origin, principal, vec![candidate]);
        let mut ev = event(origin, action, &resource).principal(principal);
        ev.extra.extend(details);
        let ev = ev.extra("operation", operation);
        let ev = if visible.is_empty() {
            Self::count(origin.front, "deny");
            ev.deny(format!("{DEFAULT_DENY}: nothing in the bucket may be listed"), Vec::<String>::new())
        } else {
            Self::count(origin.front, "allow");
            ev.allow(policies)
        };
        let slot = self.begin(origin.front, ev).await?;
        Ok(BucketListing { visible, slot })
    }

    /// The candidates the live policy lets `principal` list somewhere in, and the permits that show them.
    fn visible_buckets(
        &self,
        origin: &Origin,
        principal: &Principal,
        candidates: Vec<BucketCandidate>,
    ) -> (Vec<String>, BTreeSet<String>) {
        let store = self.policy.store();
        let named = crate::policy::s3_prefixes_of(&store);
        let context = RequestContext { front: front_name(origin.front), ..Default::default() };
        let mut visible = Vec::new();
        let mut policies = BTreeSet::new();
        for candidate in candidates {
            let bucket = candidate.bucket.as_str();
            let prefixes = std::iter::once(String::new())
                .chain(named.iter().filter(|(b, _)| b == bucket).map(|(_, p)| p.clone()))
                .chain(candidate.prefixes.iter().cloned());
            // The first place that may be listed shows the bucket; a policy error reads as "not here".
            let permit = prefixes.filter_map(|p| Resource::prefix(bucket, &p).ok()).find_map(|r| {
                crate::policy::decide_with(&store, principal, "s3:ListBucket", &r, &context).ok().filter(|d| d.allowed)
            });
            if let Some(decision) = permit {
                policies.extend(decision.policy_ids());
                visible.push(candidate.bucket);
            }
        }
        (visible, policies)
    }

    /// Decides what a catalog query (`\dt`, JDBC `getTables`, an inspector) may show of the governed catalog:
    /// the tables with at least one visible column, and those columns. The record carries the query as asked,
    /// how many relations and columns it may show, and the permits behind them. `cache` is the session's.
    pub async fn list_catalog(
        &self,
        origin: &Origin,
        principal: &Principal,
        asked: &str,
        cache: &Mutex<FilterCache>,
    ) -> Result<CatalogListing, GateError> {
        let policy = self.statement_policy(principal, cache);
        let mut tables = Vec::new();
        for (position, def) in policy.catalog().tables.iter().enumerate() {
            let Some((db, table)) = def.split_name() else { continue };
            let name = TableName::new(db, table);
            let Some(filter) = policy.table_filter(&name, TableOp::Select) else { continue };
            let columns: Vec<ColumnDef> =
                filter.columns.iter().filter_map(|a| def.columns.iter().find(|c| c.name == a.name)).cloned().collect();
            if !columns.is_empty() {
                tables.push(VisibleTable { position, name, columns });
            }
        }
        let decision = policy.finish();
        let names: Vec<TableName> = tables.iter().map(|t| t.name.clone()).collect();
        let shown = decision.for_tables(&names);
        let column_count: usize = tables.iter().map(|t| t.columns.len()).sum();
        let sql = SqlAudit {
            original: asked.to_owned(),
            tables: names.iter().map(ToString::to_string).collect(),
            ..Default::default()
        };
        let ev = event(origin, "sql:ListCatalog", "catalog")
            .principal(principal)
            .sql(sql)
            .extra("relations", tables.len())
            .extra("columns", column_count);
        if let Some(e) = decision.policy_error() {
            Self::count(origin.front, "error");
            self.write(origin.front, ev.error(format!("policy: {e}"))).await?;
            return Err(GateError::Policy(e.clone()));
        }
        let ev = if tables.is_empty() {
            Self::count(origin.front, "deny");
            let forbids: Vec<String> = decision.forbids().cloned().collect();
            let reason = if forbids.is_empty() {
                format!("{DEFAULT_DENY}: no governed table may be shown")
            } else {
                "forbidden by policy: no governed table may be shown".to_owned()
            };
            ev.deny(reason, forbids)
        } else {
            Self::count(origin.front, "allow");
            ev.allow(shown.policies())
        };
        let slot = self.begin(origin.front, ev).await?;
        Ok(CatalogListing { tables, slot })
    }
}

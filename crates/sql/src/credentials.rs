//! Full-table READ credentials (Lake Formation's full table access): `POST /v1/tables/{db}.{table}/credentials`
//! on the control endpoint.
//!
//! A principal whose data filter for the table has no restriction at all (a permit without row filter, no
//! restrictive filter, every catalog column clear) may read the table's files directly, so it gets READ
//! credentials scoped to the table's storage `location`. Anyone with a fine-grained restriction is refused
//! with a message pointing at the SQL gateway: files cannot carry a row filter or a mask.

use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::SqlService;
use lakegate_core::audit::Front;
use lakegate_core::credentials::{CredentialKind, Permission, S3Location, Scope, ScopeGrant, SessionClaims};
use lakegate_core::gate::{GateError, Origin, event};
use lakegate_core::policy::{Condition, RequestContext, Resource, TableFilter, TableName, TableOp};
use lakegate_net::http::{self as h, Body, Problem};

/// How long table credentials live.
const LIFETIME_SECONDS: i64 = 3600;

/// Whether `path` is a table-credentials route.
pub fn handles(path: &str) -> bool {
    path.starts_with("/v1/tables/") && path.ends_with("/credentials")
}

/// Whether `filter` is full access to `table` with `columns` (the catalog's column names).
pub fn is_full_access(filter: &TableFilter, columns: &[String]) -> bool {
    filter.permissive.iter().any(Option::is_none)
        && filter.restrictive.is_empty()
        && columns.iter().all(|c| filter.columns.iter().any(|a| &a.name == c && a.clear == Condition::Always))
}

/// Serves one table-credentials request.
pub async fn handle<B>(service: &SqlService, req: Request<B>, peer: SocketAddr, rid: &str) -> Response<Body> {
    let origin = Origin { front: Front::Sql, request_id: rid.to_owned(), source: Some(peer.to_string()) };
    if req.method() != Method::POST {
        return Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            "use POST",
            rid,
        )
        .response();
    }
    let name = req
        .uri()
        .path()
        .strip_prefix("/v1/tables/")
        .and_then(|p| p.strip_suffix("/credentials"))
        .unwrap_or_default()
        .to_owned();
    let token = h::bearer(req.headers()).map(str::to_owned);
    let principal = match service.gate.authenticate(&origin, token.as_deref(), "sql:TableCredentials", &name).await {
        Ok(p) => p,
        Err(GateError::Audit(e)) => return unavailable(&e.to_string(), rid),
        Err(e) => {
            return Problem::new(StatusCode::UNAUTHORIZED, "invalid-token", "Invalid token", e.to_string(), rid)
                .response();
        }
    };
    let store = service.gate.policy.store();
    let Some((db, table)) = name.split_once('.') else {
        return Problem::new(StatusCode::NOT_FOUND, "unknown-table", "Unknown table", "use database.table", rid)
            .response();
    };
    let Some(def) = store.catalog().table(db, table) else {
        return Problem::new(StatusCode::NOT_FOUND, "unknown-table", "Unknown table", format!("no table {name}"), rid)
            .response();
    };
    let columns: Vec<String> = def.columns.iter().map(|c| c.name.clone()).collect();
    let context = RequestContext { front: "sql", ..Default::default() };
    let filter = match lakegate_core::policy::table_filter_with(
        &store,
        &principal,
        TableOp::Select,
        &TableName::new(db, table),
        &context,
    ) {
        Ok(f) => f,
        Err(e) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "policy-error", "Policy error", e.to_string(), rid)
                .response();
        }
    };
    let resource = Resource::Table { database: db.to_owned(), table: table.to_owned() };
    let location = def.location.clone().and_then(|l| S3Location::parse_prefix(&l).ok());
    if !is_full_access(&filter, &columns) || location.is_none() {
        let reason = if location.is_none() {
            format!("table {name} has no storage location in the catalog")
        } else {
            format!(
                "{} has fine-grained restrictions on {name} (rows, columns or masks); query it through the SQL gateway instead",
                principal.subject
            )
        };
        let ev = event(&origin, "sql:TableCredentials", &resource.to_string())
            .principal(&principal)
            .deny(reason.clone(), filter.policies.clone());
        if let Err(e) = service.gate.record(ev).await {
            return unavailable(&e.to_string(), rid);
        }
        return Problem::new(StatusCode::FORBIDDEN, "fine-grained-access", "Full table access required", reason, rid)
            .response();
    }
    let (Some(ring), Some(location)) = (service.keyring.as_ref(), location) else {
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "no-keys", "Credentials unavailable", "no key ring", rid)
            .response();
    };
    let allowed = match service.gate.authorize(&origin, &principal, "SelectTable", &resource, context).await {
        Ok(a) => a,
        Err(GateError::Audit(e)) => return unavailable(&e.to_string(), rid),
        Err(e) => {
            return Problem::new(StatusCode::FORBIDDEN, "access-denied", "Access denied", e.to_string(), rid)
                .response();
        }
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = SessionClaims {
        scope: Scope::Grants(vec![ScopeGrant::new(&location, Permission::Read)]),
        expires_at: std::cmp::min(now + LIFETIME_SECONDS, principal.expires_at),
        principal,
        role: None,
        session_name: Some(format!("table:{name}")),
        issued_at: now,
        kind: CredentialKind::AccessGrant,
    };
    let mut slot = allowed.slot;
    match lakegate_core::credentials::mint(&ring.current(), &claims) {
        Ok(creds) => {
            slot.event_mut().outcome_mut().status = Some(200);
            slot.finish();
            h::json(
                StatusCode::OK,
                &json!({
                    "table": name,
                    "location": location.to_string(),
                    "permission": "READ",
                    "credentials": {
                        "accessKeyId": creds.access_key_id,
                        "secretAccessKey": creds.secret_access_key.expose(),
                        "sessionToken": creds.session_token,
                        "expiration": creds.expiration_rfc3339(),
                    },
                }),
                rid,
            )
        }
        Err(e) => {
            slot.event_mut().reason = Some(e.to_string());
            slot.finish();
            Problem::new(StatusCode::FORBIDDEN, "cannot-mint", "Cannot mint credentials", e.to_string(), rid).response()
        }
    }
}

fn unavailable(e: &str, rid: &str) -> Response<Body> {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "audit-unavailable", "Audit log unavailable", e.to_owned(), rid)
        .response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakegate_core::policy::{ColumnAccess, Mask};

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

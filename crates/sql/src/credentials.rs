//! Full-table READ credentials (Lake Formation's full table access): `POST /v1/tables/{db}.{table}/credentials`
//! on the control endpoint.
//!
//! A principal whose data filter for the table has no restriction at all (a permit without row filter, no
//! restrictive filter, every catalog column clear) may read the table's files directly, so it gets READ
//! credentials scoped to the table's storage `location`. Anyone with a fine-grained restriction is refused
//! with a message pointing at the SQL gateway: files cannot carry a row filter or a mask. The gate decides
//! ([`lakegate_core::gate::Gate::vend`]); this route mints and answers.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use http::{Method, Request, Response, StatusCode};
use serde_json::json;

use super::SqlService;
use lakegate_core::audit::Front;
use lakegate_core::credentials::{CredentialKind, Permission, Scope, ScopeGrant, SessionClaims};
use lakegate_core::gate::{GateError, Grant, Origin, TableAsk, Vend};
use lakegate_core::policy::{PolicyError, TableName};
use lakegate_net::http::{self as h, Body, Problem};

/// How long table credentials live.
const LIFETIME_SECONDS: i64 = 3600;

/// Whether `path` is a table-credentials route.
pub fn handles(path: &str) -> bool {
    path.starts_with("/v1/tables/") && path.ends_with("/credentials")
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
    let Some((db, table)) = name.split_once('.') else {
        return Problem::new(StatusCode::NOT_FOUND, "unknown-table", "Unknown table", "use database.table", rid)
            .response();
    };
    let table_name = TableName::new(db, table);
    let ask = TableAsk { table: &table_name, shape: None, write: false };
    let vending = match service.gate.vend(&origin, &principal, Vend::Table(ask), BTreeMap::new()).await {
        Ok(v) => v,
        Err(GateError::Audit(e)) => return unavailable(&e.to_string(), rid),
        Err(GateError::Policy(PolicyError::UnknownTable(_))) => {
            return Problem::new(
                StatusCode::NOT_FOUND,
                "unknown-table",
                "Unknown table",
                format!("no table {name}"),
                rid,
            )
            .response();
        }
        Err(GateError::NotGrantable(reason)) => {
            return Problem::new(
                StatusCode::FORBIDDEN,
                "fine-grained-access",
                "Full table access required",
                reason,
                rid,
            )
            .response();
        }
        Err(GateError::Policy(e)) => {
            return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "policy-error", "Policy error", e.to_string(), rid)
                .response();
        }
        Err(e) => {
            return Problem::new(StatusCode::FORBIDDEN, "access-denied", "Access denied", e.to_string(), rid)
                .response();
        }
    };
    let Grant::Table { location, binding } = vending.grant else {
        return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error", "no table grant", rid)
            .response();
    };
    let mut slot = vending.slot;
    let Some(ring) = service.keyring.as_ref() else {
        slot.event_mut().reason = Some("no key ring".into());
        slot.event_mut().outcome_mut().status = Some(503);
        slot.finish();
        return Problem::new(StatusCode::SERVICE_UNAVAILABLE, "no-keys", "Credentials unavailable", "no key ring", rid)
            .response();
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = SessionClaims {
        scope: Scope::Grants(vec![ScopeGrant::new(&location, Permission::Read)]),
        expires_at: std::cmp::min(now + LIFETIME_SECONDS, principal.expires_at),
        principal,
        role: None,
        session_name: Some(format!("table:{name}")),
        issued_at: now,
        kind: CredentialKind::Table,
        table: Some(binding),
    };
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

//! Specifications of the credentials core: each test name states one rule.
//!
//! The tests use only `super::` paths, so they move with the module into the main crate unchanged.

// Tests fail loudly on purpose: an unwrap on a fixture is an assertion.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod grant;
mod keyring;
mod role;
mod scope;
mod session;

use std::collections::BTreeMap;
use std::path::Path;

use super::*;

/// A fixed "now" for tests: 2026-01-01T00:00:00Z.
const NOW: i64 = 1_767_225_600;

fn kid(name: &str) -> KeyId {
    KeyId::new(name).unwrap()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).unwrap();
    out
}

/// A uniformly random number below `bound` (bias is irrelevant for tests).
fn random_below(bound: usize) -> usize {
    usize::from(u16::from_le_bytes(random_bytes::<2>())) % bound
}

/// A ring of one fresh random key.
fn ring(name: &str) -> KeyRing {
    KeyRing::from_keys(kid(name), [(kid(name), random_bytes::<32>())]).unwrap()
}

fn write_key(dir: &Path, name: &str) {
    std::fs::write(dir.join(name), hex::encode(random_bytes::<32>())).unwrap();
}

fn alice() -> Principal {
    Principal {
        issuer: "https://idp.example.com".into(),
        subject: "alice".into(),
        groups: vec!["analysts".into()],
        attributes: BTreeMap::from([("region".into(), "eu".into())]),
        token_id: Some("jti-1".into()),
        expires_at: NOW + 3600,
        actors: vec![Actor { issuer: "https://idp.example.com".into(), subject: "notebook".into() }],
    }
}

fn sales_scope() -> Scope {
    Scope::Grants(vec![ScopeGrant { bucket: "lake".into(), prefix: "sales/".into(), permission: Permission::Read }])
}

/// Claims valid for an hour from `NOW`.
fn claims() -> SessionClaims {
    SessionClaims {
        principal: alice(),
        scope: sales_scope(),
        role: Some("analyst".into()),
        session_name: Some("spark-job-7".into()),
        issued_at: NOW,
        expires_at: NOW + 3600,
        kind: CredentialKind::Sts,
        table: None,
    }
}

//! The core of a GetDataAccess-style request: from a target, a permission and the location the policy granted,
//! the scope of the credential to vend and the `MatchedGrantTarget` to answer with.

use super::error::GrantError;
use super::location::S3Location;
use super::scope::{Permission, Scope, ScopeGrant};

/// GetDataAccess's `Privilege`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Privilege {
    /// Credentials for the whole granting location, so a client can reuse them for every target under it.
    #[default]
    Default,
    /// Credentials for exactly the requested target.
    Minimal,
}

impl Privilege {
    /// Parses the wire spelling (`Default`, `Minimal`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "Default" => Some(Self::Default),
            "Minimal" => Some(Self::Minimal),
            _ => None,
        }
    }
}

/// What a GetDataAccess answer carries besides the credentials themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataAccess {
    /// The scope to seal into the credential.
    pub scope: Scope,
    /// The location the credential covers, in canonical form (`s3://bucket/dir/*` or `s3://bucket/dir/file`).
    /// Clients (the S3 Access Grants plugins) cache the credential for every path under it, so it must be
    /// exactly what the scope covers, never more.
    pub matched_grant_target: String,
}

/// Computes the scope of a GetDataAccess credential.
///
/// `granting` is the location the policy granted `permission` on (the caller has already decided that the
/// principal holds such a grant); `target` must lie inside it.
pub fn resolve_data_access(
    target: &S3Location,
    permission: Permission,
    privilege: Privilege,
    granting: &S3Location,
) -> Result<DataAccess, GrantError> {
    if !granting.contains(target) {
        return Err(GrantError::TargetOutsideGrant { target: target.to_string(), granting: granting.to_string() });
    }
    let covered = match privilege {
        Privilege::Default => granting,
        Privilege::Minimal => target,
    };
    Ok(DataAccess {
        scope: Scope::Grants(vec![ScopeGrant::new(covered, permission)]),
        matched_grant_target: covered.to_string(),
    })
}

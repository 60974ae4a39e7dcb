//! Role profiles for AssumeRoleWithWebIdentity: which RoleArn they answer to, the scope they give, and how long
//! their sessions may last.
//!
//! ```toml
//! [[roles]]
//! name = "analyst"                      # the profile name, recorded in the credential and the audit log
//! role_name = "lake-analyst"            # matches arn:aws:iam::123456789012:role/lake-analyst (default: name)
//! read_only = true
//! prefixes = ["s3://lake/sales/", "s3://lake/shared/"]   # or ["*"]: no scope of its own, policy alone decides
//! max_duration_seconds = 3600
//! ```

use serde::{Deserialize, Serialize};

use super::error::RoleError;
use super::location::S3Location;
use super::scope::{Permission, Scope, ScopeGrant};

/// AWS's floor for DurationSeconds.
pub const MIN_SESSION_SECONDS: u32 = 900;
/// AWS's ceiling for a role's maximum session duration (12 hours).
pub const MAX_SESSION_SECONDS: u32 = 43_200;
/// AWS's DurationSeconds when the request names none.
pub const DEFAULT_SESSION_SECONDS: u32 = 3_600;
/// AWS's limit on RoleArn length.
const MAX_ROLE_ARN_LEN: usize = 2048;
/// AWS's limit on a role name.
const MAX_ROLE_NAME_LEN: usize = 64;
/// The `prefixes` entry that means "no scope of its own".
const UNRESTRICTED: &str = "*";

/// A configured role. Checked whole when deserialised: a profile that exists is consistent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRoleProfile", into = "RawRoleProfile")]
pub struct RoleProfile {
    name: String,
    role_name: String,
    read_only: bool,
    /// `None` for `["*"]`.
    prefixes: Option<Vec<S3Location>>,
    max_duration_seconds: u32,
}

/// The configuration's spelling of a [`RoleProfile`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoleProfile {
    name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    role_name: Option<String>,
    #[serde(default)]
    read_only: bool,
    prefixes: Vec<String>,
    #[serde(default = "default_max_duration")]
    max_duration_seconds: u32,
}

fn default_max_duration() -> u32 {
    DEFAULT_SESSION_SECONDS
}

impl TryFrom<RawRoleProfile> for RoleProfile {
    type Error = RoleError;

    fn try_from(raw: RawRoleProfile) -> Result<Self, RoleError> {
        let invalid = |reason: String| RoleError::InvalidProfile { name: raw.name.clone(), reason };
        if raw.name.trim().is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        let role_name = raw.role_name.clone().unwrap_or_else(|| raw.name.clone());
        if !is_valid_role_name(&role_name) {
            return Err(invalid(format!("{role_name:?} is not a valid IAM role name")));
        }
        if !(MIN_SESSION_SECONDS..=MAX_SESSION_SECONDS).contains(&raw.max_duration_seconds) {
            return Err(invalid(format!(
                "max_duration_seconds must be between {MIN_SESSION_SECONDS} and {MAX_SESSION_SECONDS}"
            )));
        }
        // An empty list is refused rather than read as "everything": a forgotten line must not widen a role.
        let prefixes = match raw.prefixes.as_slice() {
            [] => {
                return Err(invalid("prefixes is empty; write [\"*\"] to leave the scope to policy".into()));
            }
            [only] if only == UNRESTRICTED => {
                if raw.read_only {
                    // Scope::Unrestricted carries no permission, so read_only would silently be dropped.
                    return Err(invalid("read_only needs explicit prefixes, not \"*\"".into()));
                }
                None
            }
            list => Some(
                list.iter()
                    .map(|p| S3Location::parse_prefix(p).map_err(|e| invalid(format!("prefix {p:?}: {e}"))))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Self {
            name: raw.name,
            role_name,
            read_only: raw.read_only,
            prefixes,
            max_duration_seconds: raw.max_duration_seconds,
        })
    }
}

impl From<RoleProfile> for RawRoleProfile {
    fn from(p: RoleProfile) -> Self {
        Self {
            role_name: (p.role_name != p.name).then_some(p.role_name),
            name: p.name,
            read_only: p.read_only,
            prefixes: match p.prefixes {
                None => vec![UNRESTRICTED.to_owned()],
                Some(list) => list.iter().map(ToString::to_string).collect(),
            },
            max_duration_seconds: p.max_duration_seconds,
        }
    }
}

impl RoleProfile {
    /// The profile name (recorded in [`super::SessionClaims::role`]).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The IAM role name a RoleArn must end with to select this profile.
    pub fn role_name(&self) -> &str {
        &self.role_name
    }

    /// The longest session this role gives, in seconds.
    pub fn max_duration_seconds(&self) -> u32 {
        self.max_duration_seconds
    }

    /// Whether this profile answers to `role_arn`.
    pub fn matches_arn(&self, role_arn: &str) -> bool {
        role_name_from_arn(role_arn).is_ok_and(|n| n == self.role_name)
    }

    /// The scope a session of this role carries: its prefixes, read-only or read-write.
    pub fn scope(&self) -> Scope {
        let permission = if self.read_only { Permission::Read } else { Permission::ReadWrite };
        match &self.prefixes {
            None => Scope::Unrestricted,
            Some(list) => Scope::Grants(list.iter().map(|l| ScopeGrant::new(l, permission)).collect()),
        }
    }

    /// The session length for a requested DurationSeconds: the AWS default (3600, or the role's maximum if
    /// lower) when none was asked for; an error below 900 or above the role's maximum, as AWS answers with
    /// `ValidationError` rather than clamping.
    pub fn session_duration(&self, requested: Option<i64>) -> Result<u32, RoleError> {
        let Some(requested) = requested else {
            return Ok(DEFAULT_SESSION_SECONDS.min(self.max_duration_seconds));
        };
        u32::try_from(requested).ok().filter(|s| (MIN_SESSION_SECONDS..=self.max_duration_seconds).contains(s)).ok_or(
            RoleError::DurationOutOfRange { requested, min: MIN_SESSION_SECONDS, max: self.max_duration_seconds },
        )
    }
}

/// The role name of `arn:<partition>:iam::<account>:role/[path/]<name>`.
///
/// The account may be empty (MinIO's `arn:minio:iam:::role/x`), since Lakegate has no accounts and only the name
/// selects a profile.
pub fn role_name_from_arn(role_arn: &str) -> Result<&str, RoleError> {
    if role_arn.len() > MAX_ROLE_ARN_LEN {
        return Err(RoleError::MalformedArn);
    }
    let mut parts = role_arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account), Some(resource)) =
        (parts.next(), parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(RoleError::MalformedArn);
    };
    if partition.is_empty() || !account.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RoleError::MalformedArn);
    }
    let path_and_name = resource.strip_prefix("role/").ok_or(RoleError::MalformedArn)?;
    let name = path_and_name.rsplit('/').next().unwrap_or_default();
    if !is_valid_role_name(name) {
        return Err(RoleError::MalformedArn);
    }
    Ok(name)
}

/// The profile answering to `role_arn`.
pub fn select_role<'a>(profiles: &'a [RoleProfile], role_arn: &str) -> Result<&'a RoleProfile, RoleError> {
    let name = role_name_from_arn(role_arn)?;
    profiles.iter().find(|p| p.role_name == name).ok_or_else(|| RoleError::UnknownRole(name.to_owned()))
}

/// IAM's role name rule: 1 to 64 of `A-Z a-z 0-9 + = , . @ _ -`.
fn is_valid_role_name(name: &str) -> bool {
    (1..=MAX_ROLE_NAME_LEN).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

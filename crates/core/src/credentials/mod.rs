//! Lakegate session credentials: minting and checking them, and the scopes they carry.
//!
//! Credentials are **stateless**: everything a replica needs to check one (who it was vended to, what it may
//! reach, until when) travels inside the session token, sealed with authenticated encryption under a server key.
//! Any replica that holds the same [`KeyRing`] verifies any credential; nothing is stored per session.
//!
//! The road through this module:
//!
//! * [`KeyRing::load`] reads the server keys (one *current* key mints, every key in the ring verifies), so keys
//!   rotate by adding a file and later removing the old one.
//! * [`mint`] seals [`SessionClaims`] into [`VendedCredentials`] (an AWS-shaped access key id, secret and session
//!   token); [`verify`] opens them again and gives the S3 front the claims and the secret to check SigV4 with.
//! * [`Scope`] is what a credential may reach at most; the S3 front checks it *together with* the live policy.
//!   [`RoleProfile`] (AssumeRoleWithWebIdentity) and [`resolve_data_access`] (GetDataAccess) compute it.
//!
//! Nothing here does I/O except [`KeyRing`] loading and generating key files.

mod error;
mod grant;
mod keyring;
mod live;
mod location;
mod role;
mod scope;
mod session;

pub use crate::identity::{Actor, Principal};

pub use error::{CredentialError, GrantError, KeyRingError, MintError, RoleError, TargetError};
pub use grant::{DataAccess, Privilege, resolve_data_access};
pub use keyring::{KeyId, KeyRing};
pub use live::LiveKeyRing;
pub use location::S3Location;
pub use role::{
    DEFAULT_SESSION_SECONDS, MAX_SESSION_SECONDS, MIN_SESSION_SECONDS, RoleProfile, role_name_from_arn, select_role,
};
pub use scope::{Access, Permission, Scope, ScopeGrant};
pub use session::{
    CredentialKind, MAX_SESSION_TOKEN_LEN, SecretString, SessionClaims, TableBinding, VendedCredentials,
    looks_like_lakegate_access_key_id, mint, verify,
};

#[cfg(test)]
mod tests;

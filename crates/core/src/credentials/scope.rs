//! What a credential may reach at most. Pure functions only: the S3 front asks [`Scope::allows`] on every request,
//! *and* asks the live policy; both must say yes.

use serde::{Deserialize, Serialize};

use super::location::{MAX_KEY_LEN, S3Location, is_object_prefix, prefix_contains};

/// What a credential may do where its grants reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Permission {
    /// Get objects and list.
    Read,
    /// Put and delete objects (and multipart uploads); no reading, no listing.
    Write,
    /// Both.
    #[serde(rename = "READWRITE")]
    ReadWrite,
}

impl Permission {
    /// Whether this permission covers `access`. Listing is reading (as in S3 Access Grants).
    pub fn covers(self, access: Access) -> bool {
        match (self, access) {
            (Self::ReadWrite, _) => true,
            (Self::Read, Access::Read | Access::List) => true,
            (Self::Write, Access::Write) => true,
            (Self::Read, Access::Write) | (Self::Write, Access::Read | Access::List) => false,
        }
    }

    /// The permission both `self` and `other` give, if any.
    pub fn intersect(self, other: Self) -> Option<Self> {
        match (self, other) {
            (Self::ReadWrite, p) | (p, Self::ReadWrite) => Some(p),
            (Self::Read, Self::Read) => Some(Self::Read),
            (Self::Write, Self::Write) => Some(Self::Write),
            (Self::Read, Self::Write) | (Self::Write, Self::Read) => None,
        }
    }

    /// Parses S3 Access Grants' spelling: `READ`, `WRITE`, `READWRITE`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "READ" => Some(Self::Read),
            "WRITE" => Some(Self::Write),
            "READWRITE" => Some(Self::ReadWrite),
            _ => None,
        }
    }
}

/// The kind of an S3 request, as the S3 front classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Reading one object (GetObject, HeadObject, ...): `key_or_prefix` is the object key.
    Read,
    /// Writing one object (PutObject, DeleteObject, multipart, ...): `key_or_prefix` is the object key.
    Write,
    /// Listing (ListObjectsV2, ...): `key_or_prefix` is the request's `prefix` parameter, `""` if absent.
    List,
}

/// One location and what may be done there. `prefix` follows the prefix rule of [`S3Location`]: `""` is the
/// whole bucket, a value ending in `/` a folder, anything else exactly one object.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ScopeGrant {
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    pub permission: Permission,
}

impl ScopeGrant {
    /// A grant of `permission` on `location`.
    pub fn new(location: &S3Location, permission: Permission) -> Self {
        Self { bucket: location.bucket().to_owned(), prefix: location.prefix().to_owned(), permission }
    }

    /// Whether this grant alone allows `access` to `key_or_prefix` in `bucket` (the key already checked clean).
    fn allows(&self, bucket: &str, key_or_prefix: &str, access: Access) -> bool {
        if self.bucket != bucket || !self.permission.covers(access) {
            return false;
        }
        match access {
            // A list under a folder grant must stay inside the folder: listing `sales` would show `salesforce/`.
            // An object grant never lists: every list prefix that matches the object could match others too.
            Access::List => !is_object_prefix(&self.prefix) && key_or_prefix.starts_with(&self.prefix),
            // The bucket itself (empty key) is no object.
            Access::Read | Access::Write => !key_or_prefix.is_empty() && prefix_contains(&self.prefix, key_or_prefix),
        }
    }

    /// The grant that allows exactly what both `self` and `other` allow, if anything.
    fn intersect(&self, other: &Self) -> Option<Self> {
        if self.bucket != other.bucket {
            return None;
        }
        let permission = self.permission.intersect(other.permission)?;
        // With the prefix rule, two locations either nest or are disjoint: the intersection is the inner one.
        let prefix = if prefix_contains(&self.prefix, &other.prefix) {
            other.prefix.clone()
        } else if prefix_contains(&other.prefix, &self.prefix) {
            self.prefix.clone()
        } else {
            return None;
        };
        Some(Self { bucket: self.bucket.clone(), prefix, permission })
    }
}

/// The most a credential may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// No limit of its own: the live policy alone decides.
    Unrestricted,
    /// Only these grants (their union). An empty list allows nothing.
    Grants(Vec<ScopeGrant>),
}

impl Scope {
    /// Whether this scope allows `access` to `key_or_prefix` in `bucket`.
    ///
    /// Keys that a file-system backend could resolve outside their folder (a `.` or `..` segment, with `/` or `\`
    /// as separator), keys with NUL, and keys longer than S3 allows are refused under every scope, even
    /// [`Scope::Unrestricted`]: a hostile key must never depend on which scope it meets.
    pub fn allows(&self, bucket: &str, key_or_prefix: &str, access: Access) -> bool {
        if bucket.is_empty() || !is_clean_request_key(key_or_prefix) {
            return false;
        }
        match self {
            Self::Unrestricted => true,
            Self::Grants(grants) => grants.iter().any(|g| g.allows(bucket, key_or_prefix, access)),
        }
    }

    /// The scope that allows exactly what both `self` and `other` allow (a role's scope narrowed by a request's).
    pub fn narrow(self, other: Scope) -> Scope {
        match (self, other) {
            (Self::Unrestricted, scope) | (scope, Self::Unrestricted) => scope,
            (Self::Grants(a), Self::Grants(b)) => {
                let mut out: Vec<ScopeGrant> = a.iter().flat_map(|x| b.iter().filter_map(|y| x.intersect(y))).collect();
                out.sort();
                out.dedup();
                Self::Grants(out)
            }
        }
    }
}

/// A request key is clean when no path segment is `.` or `..` and it has no NUL. Empty segments are allowed here
/// (unlike in configured locations): S3 keys may contain `//`, and collapsing them cannot leave a folder.
fn is_clean_request_key(key: &str) -> bool {
    key.len() <= MAX_KEY_LEN && !key.contains('\0') && !key.split(['/', '\\']).any(|seg| seg == "." || seg == "..")
}

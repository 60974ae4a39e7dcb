//! `s3://bucket/...` locations: strict parsing and the one prefix rule every scope uses.
//!
//! # The prefix rule
//!
//! A location is a bucket and a `prefix` string that means one of three things:
//!
//! * `""`: the whole bucket;
//! * ends with `/` (`sales/`): every key under that folder, and nothing else. S3 prefixes are string prefixes,
//!   so a grant of `sales` would also reach `salesforce/`; Lakegate never grants such a bare string prefix, it
//!   normalises it to the folder `sales/` (narrower, so a surprise fails closed);
//! * anything else (`sales/q1.csv`): exactly that one object.

use std::fmt;

use super::error::TargetError;

/// Longest S3 object key, in bytes (S3's own limit).
pub(crate) const MAX_KEY_LEN: usize = 1024;
/// Longest accepted `s3://` location: scheme, a maximal bucket, a maximal key, a slash and a wildcard.
const MAX_LOCATION_LEN: usize = "s3://".len() + 63 + 1 + MAX_KEY_LEN + 1;

/// A bucket plus a prefix following the module's prefix rule. Built only by the parsers here, so it always holds
/// a valid bucket name and a clean key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct S3Location {
    bucket: String,
    prefix: String,
}

impl S3Location {
    /// Parses a GetDataAccess target: `s3://bucket`, `s3://bucket/` and `s3://bucket/*` name the bucket;
    /// `s3://bucket/dir/` and `s3://bucket/dir/*` the folder `dir/`; `s3://bucket/dir*` the folder `dir/` too
    /// (see the prefix rule); `s3://bucket/dir/file` exactly that object.
    ///
    /// Refused: another scheme, an empty or invalid bucket, `*` anywhere but at the end, empty, `.` or `..` path
    /// segments, control characters or backslashes, and anything longer than S3 allows.
    pub fn parse_target(text: &str) -> Result<Self, TargetError> {
        let (bucket, key, wildcard) = split(text)?;
        let prefix = if key.is_empty() || key.ends_with('/') || wildcard { folder(key) } else { key.to_owned() };
        Ok(Self { bucket: bucket.to_owned(), prefix })
    }

    /// Parses a configured prefix (a role profile's `prefixes`): the same syntax as [`S3Location::parse_target`],
    /// but always a folder, because a configured prefix that silently meant one object would be a trap.
    pub fn parse_prefix(text: &str) -> Result<Self, TargetError> {
        let (bucket, key, _) = split(text)?;
        Ok(Self { bucket: bucket.to_owned(), prefix: folder(key) })
    }

    /// The bucket name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The prefix: `""` (whole bucket), a folder ending in `/`, or an exact object key.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether this location names one object rather than a folder or bucket.
    pub fn is_object(&self) -> bool {
        is_object_prefix(&self.prefix)
    }

    /// Whether every key reachable through `other` is reachable through `self`.
    pub fn contains(&self, other: &S3Location) -> bool {
        self.bucket == other.bucket && prefix_contains(&self.prefix, &other.prefix)
    }
}

/// The canonical form: `s3://bucket/*`, `s3://bucket/dir/*` or `s3://bucket/dir/file`, the shape S3 Access
/// Grants uses for `MatchedGrantTarget`.
impl fmt::Display for S3Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_object() {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        } else {
            write!(f, "s3://{}/{}*", self.bucket, self.prefix)
        }
    }
}

/// An object prefix names one key; `""` and folder prefixes name subtrees.
pub(crate) fn is_object_prefix(prefix: &str) -> bool {
    !prefix.is_empty() && !prefix.ends_with('/')
}

/// Whether grant prefix `outer` reaches everything `inner` reaches (both following the prefix rule).
pub(crate) fn prefix_contains(outer: &str, inner: &str) -> bool {
    if is_object_prefix(outer) { outer == inner } else { inner.starts_with(outer) }
}

/// A folder prefix for a clean key: `""` stays the whole bucket, anything else ends with exactly one `/`.
fn folder(key: &str) -> String {
    if key.is_empty() || key.ends_with('/') { key.to_owned() } else { format!("{key}/") }
}

/// Splits and checks `s3://bucket[/key][*]`, returning the bucket, the key without the wildcard, and whether a
/// wildcard ended it.
fn split(text: &str) -> Result<(&str, &str, bool), TargetError> {
    if text.len() > MAX_LOCATION_LEN {
        return Err(TargetError::TooLong { max: MAX_LOCATION_LEN });
    }
    let rest = text.strip_prefix("s3://").ok_or(TargetError::BadScheme)?;
    let (bucket, path) = match rest.split_once('/') {
        Some((bucket, path)) => (bucket, path),
        None => (rest, ""),
    };
    // `s3://bucket*` would be a wildcard over bucket names; bucket validation refuses the `*`.
    check_bucket(bucket)?;
    let (key, wildcard) = match path.strip_suffix('*') {
        Some(key) => (key, true),
        None => (path, false),
    };
    if key.contains('*') {
        return Err(TargetError::MisplacedWildcard);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(TargetError::TooLong { max: MAX_LOCATION_LEN });
    }
    check_key(key)?;
    Ok((bucket, key, wildcard))
}

/// S3's bucket naming rules (the current ones; legacy upper case and underscores are refused).
fn check_bucket(bucket: &str) -> Result<(), TargetError> {
    if bucket.is_empty() {
        return Err(TargetError::EmptyBucket);
    }
    let bytes = bucket.as_bytes();
    let edge_ok = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    let valid = (3..=63).contains(&bucket.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-'))
        && edge_ok(bytes.first())
        && edge_ok(bytes.last())
        && !bucket.contains("..");
    if valid { Ok(()) } else { Err(TargetError::InvalidBucket(bucket.to_owned())) }
}

/// A clean key has no empty, `.` or `..` segment (a trailing `/` is allowed: it marks a folder), no control
/// characters and no backslashes. Backends that map keys onto file systems would resolve any of those.
fn check_key(key: &str) -> Result<(), TargetError> {
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return Err(TargetError::BadCharacter);
    }
    if key.is_empty() {
        return Ok(());
    }
    let body = key.strip_suffix('/').unwrap_or(key);
    if body.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..") {
        return Err(TargetError::BadSegment);
    }
    Ok(())
}

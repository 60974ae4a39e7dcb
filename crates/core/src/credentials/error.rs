//! Typed errors of the credentials core. Each is mapped once, at the edge, to its protocol's form.

use std::path::PathBuf;

/// Why a presented credential was refused.
///
/// The messages are safe to log; they never contain key material, tokens or secrets. The S3 edge answers with
/// [`CredentialError::s3_code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    /// The access key id is not one of ours, or does not belong to the session token presented with it.
    #[error("the access key id does not match the session token")]
    InvalidAccessKeyId,
    /// A Lakegate access key id came without a session token (stateless credentials cannot work without it).
    #[error("a Lakegate access key id was presented without its session token")]
    MissingToken,
    /// The session token is malformed, altered, too large, sealed under a key this ring does not hold, or
    /// issued in the future beyond the allowed clock skew.
    #[error("the session token is invalid")]
    InvalidToken,
    /// The session token was valid but its lifetime is over.
    #[error("the session token has expired")]
    ExpiredToken,
    /// The credentials were vended to a user (or through an actor) authenticated by an issuer Lakegate no longer
    /// trusts.
    #[error("the credentials rest on issuer {0:?}, which is no longer trusted")]
    UntrustedIssuer(String),
}

impl CredentialError {
    /// The S3 error code the S3 front answers with (`InvalidAccessKeyId`, `InvalidToken`, `ExpiredToken`).
    ///
    /// `SignatureDoesNotMatch` is the fourth code of this family; it comes from the SigV4 check in the S3 front,
    /// which uses the secret returned by [`super::verify`], never from here.
    pub fn s3_code(&self) -> &'static str {
        match self {
            Self::InvalidAccessKeyId => "InvalidAccessKeyId",
            // AWS answers a temporary key without its token as an invalid token: the key id alone is well formed.
            // The credentials will not work again: the client must get new ones, as for an invalid token.
            Self::MissingToken | Self::InvalidToken | Self::UntrustedIssuer(_) => "InvalidToken",
            Self::ExpiredToken => "ExpiredToken",
        }
    }
}

/// Why credentials could not be minted. These are server-side faults or bad requests, never the client's token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The encoded session token would exceed [`super::MAX_SESSION_TOKEN_LEN`] (clients put it in a header).
    #[error("the session token would be {len} bytes, over the limit of {max}")]
    TokenTooLarge { len: usize, max: usize },
    /// `expires_at` is not after `issued_at`.
    #[error("the session must expire after it is issued")]
    InvalidLifetime,
    /// The claims could not be serialised.
    #[error("the session claims could not be serialised: {0}")]
    Serialize(String),
    /// The crypto provider failed (random source or sealing).
    #[error("the crypto provider failed while minting")]
    Crypto,
}

/// Why the key ring could not be loaded or a key generated. The previous ring, if any, stays in use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyRingError {
    /// Reading or writing the key directory failed.
    #[error("key directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A key file does not hold exactly 32 bytes as hex or base64.
    #[error("key file {path}: {reason}")]
    InvalidKeyFile { path: PathBuf, reason: &'static str },
    /// A key id (a file name, or the content of `current`) is not 1 to 64 of `A-Z a-z 0-9 . _ -`, or starts
    /// with a dot, or is the reserved name `current`.
    #[error("invalid key id {0:?}")]
    InvalidKeyId(String),
    /// The directory holds something that is neither a key file nor `current` nor hidden.
    #[error("unexpected entry in key directory: {0}")]
    UnexpectedEntry(PathBuf),
    /// The directory holds no key.
    #[error("no key in {0}")]
    NoKeys(PathBuf),
    /// The `current` file names a key that is not in the directory.
    #[error("`current` names key {0:?}, which is not in the directory")]
    CurrentKeyMissing(String),
    /// The crypto provider failed (random source or key derivation).
    #[error("the crypto provider failed while preparing keys")]
    Crypto,
}

/// Why an S3 target or prefix was refused. Parsing is strict: anything ambiguous is an error, never guessed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    #[error("the S3 location is longer than {max} bytes")]
    TooLong { max: usize },
    #[error("the S3 location must start with s3://")]
    BadScheme,
    #[error("the bucket name is empty")]
    EmptyBucket,
    #[error("invalid bucket name {0:?}")]
    InvalidBucket(String),
    #[error("the key holds an empty, `.` or `..` path segment")]
    BadSegment,
    #[error("a wildcard `*` may only end the location")]
    MisplacedWildcard,
    #[error("the key holds a control character or a backslash")]
    BadCharacter,
}

/// Why a role or session duration request was refused. The STS edge answers `ValidationError` (400) for the
/// duration errors and `AccessDenied` for [`RoleError::UnknownRole`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoleError {
    /// DurationSeconds below 900 (AWS's floor) or above the role's maximum.
    #[error("DurationSeconds must be between {min} and {max}, got {requested}")]
    DurationOutOfRange { requested: i64, min: u32, max: u32 },
    /// The RoleArn is not `arn:<partition>:iam::<account>:role/[path/]<name>`.
    #[error("malformed RoleArn")]
    MalformedArn,
    /// No configured role profile matches the RoleArn's role name.
    #[error("no role profile matches role {0:?}")]
    UnknownRole(String),
    /// A role profile in the configuration is inconsistent.
    #[error("role profile {name:?}: {reason}")]
    InvalidProfile { name: String, reason: String },
}

impl RoleError {
    /// The STS error code the STS edge answers with.
    pub fn sts_code(&self) -> &'static str {
        match self {
            Self::DurationOutOfRange { .. } | Self::MalformedArn | Self::InvalidProfile { .. } => "ValidationError",
            Self::UnknownRole(_) => "AccessDenied",
        }
    }
}

/// Why a GetDataAccess request could not be turned into a scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// The requested target is not inside the granting location the policy supplied.
    #[error("the target {target} is not inside the granting location {granting}")]
    TargetOutsideGrant { target: String, granting: String },
}

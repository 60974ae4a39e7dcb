//! Errors of the verifier, one variant per S3 error code the edge emits.

use thiserror::Error;

/// Why a request, or its body, was refused.
///
/// Each variant is one S3 error code ([`SigV4Error::s3_code`]) with its HTTP status
/// ([`SigV4Error::http_status`]); the `&'static str` detail is for logs and the `Message` element,
/// and never echoes client input, so it can be logged without escaping.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SigV4Error {
    /// Authenticated by signature but refused by a rule of this verifier (unsigned `x-amz-*`
    /// header, expired presigned URL, request not signed at all...).
    #[error("access denied: {0}")]
    AccessDenied(&'static str),
    /// The signature (of the request, of a chunk or of the trailer) is not the one the secret gives.
    #[error("the request signature does not match: {0}")]
    SignatureDoesNotMatch(&'static str),
    /// The credential lookup does not know the access key id.
    #[error("the access key id does not exist")]
    InvalidAccessKeyId,
    /// The credential lookup says the session token has expired.
    #[error("the provided token has expired")]
    ExpiredToken,
    /// The credential lookup says the session token is not valid (or missing where required).
    #[error("the provided token is malformed or otherwise invalid")]
    InvalidToken,
    /// The `Authorization` header cannot be parsed or its scope is refused.
    #[error("the authorization header is malformed: {0}")]
    AuthorizationHeaderMalformed(&'static str),
    /// The presigned query parameters cannot be parsed or are out of range.
    #[error("the presigned query parameters are invalid: {0}")]
    AuthorizationQueryParametersError(&'static str),
    /// `x-amz-date` (or `date`) is further from the verifier's clock than the allowed skew.
    #[error("the difference between the request time and the current time is too large")]
    RequestTimeTooSkewed,
    /// The body does not hash to the signed `x-amz-content-sha256`.
    #[error("the provided x-amz-content-sha256 does not match what was computed")]
    XAmzContentSHA256Mismatch,
    /// The body is shorter or longer than announced, or ended inside the aws-chunked framing.
    #[error("the body is incomplete: {0}")]
    IncompleteBody(&'static str),
    /// A header the request needs (`x-amz-date`, `x-amz-content-sha256`...) is absent.
    #[error("a required header is missing: {0}")]
    MissingSecurityHeader(&'static str),
    /// `x-amz-decoded-content-length` is absent on a streaming upload.
    #[error("the decoded content length is missing")]
    MissingContentLength,
    /// A header or parameter has a value outside what S3 accepts.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// The request is well formed but cannot be served as sent (bad aws-chunked framing...).
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// A trailing checksum does not match the data received.
    #[error("the checksum does not match: {0}")]
    BadDigest(&'static str),
    /// A SigV4 feature this verifier does not implement (SigV4a, ECDSA streaming).
    #[error("not implemented: {0}")]
    NotImplemented(&'static str),
    /// The credential lookup failed for a reason of its own (store unreachable).
    #[error("the credential store is unavailable")]
    ServiceUnavailable,
    /// Signature Version 2: `Authorization: AWS <key>:<signature>`, or the query parameters `AWSAccessKeyId`,
    /// `Signature` and `Expires` that botocore and the AWS CLI presign with unless told otherwise. Refused (it
    /// signs neither the host nor most query parameters, and has no signing time); the message names the
    /// client setting that switches to SigV4, since the client's own error would not.
    #[error(
        "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256. \
         Lakegate accepts Signature Version 4 only; boto3 and the AWS CLI presign URLs with Signature Version 2 \
         unless configured: set signature_version='s3v4' (boto3: Config(signature_version='s3v4'); \
         django-storages: AWS_S3_SIGNATURE_VERSION = 's3v4'; AWS CLI: aws configure set \
         default.s3.signature_version s3v4)"
    )]
    SignatureVersion2,
}

impl SigV4Error {
    /// The S3 error code for the `<Code>` element of the error response.
    pub fn s3_code(&self) -> &'static str {
        match self {
            Self::AccessDenied(_) => "AccessDenied",
            Self::SignatureDoesNotMatch(_) => "SignatureDoesNotMatch",
            Self::InvalidAccessKeyId => "InvalidAccessKeyId",
            Self::ExpiredToken => "ExpiredToken",
            Self::InvalidToken => "InvalidToken",
            Self::AuthorizationHeaderMalformed(_) => "AuthorizationHeaderMalformed",
            Self::AuthorizationQueryParametersError(_) => "AuthorizationQueryParametersError",
            Self::RequestTimeTooSkewed => "RequestTimeTooSkewed",
            Self::XAmzContentSHA256Mismatch => "XAmzContentSHA256Mismatch",
            Self::IncompleteBody(_) => "IncompleteBody",
            Self::MissingSecurityHeader(_) => "MissingSecurityHeader",
            Self::MissingContentLength => "MissingContentLength",
            Self::InvalidArgument(_) => "InvalidArgument",
            Self::InvalidRequest(_) => "InvalidRequest",
            Self::BadDigest(_) => "BadDigest",
            Self::NotImplemented(_) => "NotImplemented",
            Self::ServiceUnavailable => "ServiceUnavailable",
            // What S3 answers a SigV2 request in a region that accepts SigV4 only.
            Self::SignatureVersion2 => "InvalidRequest",
        }
    }

    /// The HTTP status S3 sends with [`SigV4Error::s3_code`].
    pub fn http_status(&self) -> u16 {
        match self {
            Self::AccessDenied(_)
            | Self::SignatureDoesNotMatch(_)
            | Self::InvalidAccessKeyId
            | Self::RequestTimeTooSkewed => 403,
            // S3 answers 400 for token problems even though they are authentication failures.
            Self::ExpiredToken | Self::InvalidToken => 400,
            Self::AuthorizationHeaderMalformed(_)
            | Self::AuthorizationQueryParametersError(_)
            | Self::XAmzContentSHA256Mismatch
            | Self::IncompleteBody(_)
            | Self::MissingSecurityHeader(_)
            | Self::InvalidArgument(_)
            | Self::InvalidRequest(_)
            | Self::BadDigest(_)
            | Self::SignatureVersion2 => 400,
            Self::MissingContentLength => 411,
            Self::NotImplemented(_) => 501,
            Self::ServiceUnavailable => 503,
        }
    }
}

/// Why the credential lookup could not give a secret.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LookupError {
    /// No such access key id.
    #[error("unknown access key id")]
    UnknownAccessKey,
    /// The session token has expired.
    #[error("session token expired")]
    ExpiredToken,
    /// The session token is invalid, missing where the key needs one, or does not belong to the key.
    #[error("session token invalid")]
    InvalidToken,
    /// The store behind the lookup failed; the request may be retried.
    #[error("credential store unavailable")]
    Unavailable,
}

impl From<LookupError> for SigV4Error {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::UnknownAccessKey => Self::InvalidAccessKeyId,
            LookupError::ExpiredToken => Self::ExpiredToken,
            LookupError::InvalidToken => Self::InvalidToken,
            LookupError::Unavailable => Self::ServiceUnavailable,
        }
    }
}

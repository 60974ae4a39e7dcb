//! AWS Signature Version 4: verification for the S3 front, signing for it and the sidecar.
//!
//! The road through this module:
//!
//! 1. [`SignedRequest::parse`] reads the `Authorization` header or the presigned query, and
//!    applies the checks that need no secret: algorithm, credential scope (service allowed, date
//!    equal to the request date), clock skew or presigned expiry, `host` signed, every
//!    `x-amz-*` header signed, payload mode.
//! 2. The caller looks up the secret (or a cached [`SigningKey`]) for
//!    [`SignedRequest::access_key_id`] and [`SignedRequest::session_token`]; [`verify`] does both
//!    steps with a [`CredentialLookup`].
//! 3. [`SignedRequest::verify_with_key`] rebuilds the canonical request, compares signatures in
//!    constant time and returns [`Verified`].
//! 4. The body is wrapped as [`Verified::payload`] says: [`Sha256VerifiedBody`] for a signed hash,
//!    [`AwsChunkedBody`] over [`Verified::aws_chunked_decoder`] for the streaming modes.
//!
//! Choices a reviewer should know:
//! - Every `x-amz-*` header in the request must be in `SignedHeaders`, `x-amz-content-sha256`
//!   and `x-amz-security-token` included (botocore, the AWS CLI and the other SDKs sign them all);
//!   refusals are `AccessDenied`, as S3 answers. The published test case `post-sts-header-after`,
//!   which adds the token after signing, is therefore refused.
//! - The header that gives the request time (`x-amz-date`, else `date`) must be signed.
//! - `SignedHeaders` must be sorted and unique, as every signer sends it.
//! - A presigned URL may be used from `X-Amz-Date - max_skew` to `X-Amz-Date + X-Amz-Expires`.
//!   `X-Amz-Expires` of zero or less is an expired URL (`AccessDenied`, as S3 answers), not a malformed one.
//! - Signature Version 2 (`Authorization: AWS ...`, or `AWSAccessKeyId`/`Signature`/`Expires` presigned URLs,
//!   which botocore makes by default) is refused with `InvalidRequest` and a message naming the client setting
//!   for SigV4: it signs neither the host nor most query parameters and has no signing time.

// Nothing a client sends may panic the process: these hold for the whole module, tests excepted.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

mod canonical;
mod checksum;
mod chunked;
mod error;
mod key;
mod parse;
mod payload;
mod sign;
mod verify;

#[cfg(test)]
mod tests;

pub use canonical::{PathMode, canonical_uri};
pub use chunked::{
    AwsChunkedBody, AwsChunkedDecoder, ChunkSigner, ChunkedMode, MAX_CHUNK_SIZE, MAX_LINE_LEN, MAX_TRAILER_BYTES,
    MAX_TRAILERS, fuzz_aws_chunked,
};
pub use error::{LookupError, SigV4Error};
pub use key::{SecretKey, SigningKey, derive_signing_key};
pub use parse::{
    ALGORITHM, AuthorizationHeader, Credential, MAX_AUTHORIZATION_LEN, MAX_SIGNED_HEADERS, PRESIGN_PARAMS,
    parse_amz_date, parse_authorization_header,
};
pub use payload::{BoxError, PayloadError, Sha256VerifiedBody};
pub use sign::{SignError, StoreCredentials, UNSIGNED_PAYLOAD, sign_request};
pub use verify::{
    AuthForm, CredentialLookup, MAX_PRESIGNED_EXPIRES_SECS, PayloadMode, RequestHead, Scope, SignedRequest, Verified,
    VerifyOptions, verify,
};

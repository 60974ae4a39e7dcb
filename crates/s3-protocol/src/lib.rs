//! The S3 wire protocol, shared by the S3 front and the sidecar: SigV4 signing and verification, aws-chunked
//! bodies, S3 and STS XML, and the few request shapes both must recognise.
//!
//! Knows nothing of Lakegate's identity, policy or audit.

pub mod body;
pub mod post_policy;
pub mod sigv4;
pub mod sts;
pub mod xml;

pub use body::BoxBody;

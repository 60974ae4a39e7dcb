//! The S3 front: an S3-compatible endpoint that checks every request against policy before forwarding it.
//!
//! So far: SigV4 verification ([`sigv4`]). Request classification, forwarding and the STS endpoint follow.

pub mod sigv4;

//! The S3 front: an S3-compatible endpoint that checks every request against policy before forwarding it.
//!
//! The road, in modules: [`auth`] (who: SigV4 with Lakegate session credentials, or a bearer token) ->
//! [`classify`] (what: operation, bucket, key, Cedar action) -> [`service`] (decide through the gate, live policy
//! AND the credential's scope; forward, narrowed; audit) -> [`backend`] (the embedded store or a remote one).
//! [`sts`] and [`grant`] vend credentials on the same port; the S3 wire protocol itself (SigV4,
//! aws-chunked, XML) is [`lakegate_s3_protocol`], shared with the sidecar.

// Nothing a client sends may panic the process.
#![deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

pub mod auth;
pub mod backend;
mod body;
pub mod classify;
pub mod config;
mod delete;
pub mod error;
pub mod grant;
mod listing;
mod post_object;
pub mod service;
pub mod sts;

pub use config::{BackendConfig, S3Config, StsConfig};
pub use service::{S3Front, handle};

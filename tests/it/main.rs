//! Lakegate's integration tests: one test crate, one module per area, real processes on free ports.

mod control;
mod identity;
mod lifecycle;
mod oidc;
mod policy;
mod s3;
mod sidecar;
mod sql;
mod support;
mod tokens;

//! Lakegate's integration tests: one test crate, one module per area, real processes on free ports.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: a failed step fails the test")]

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

//! Lakegate: an identity-aware data access proxy.
//!
//! Every request takes one road: [`identity`] (who is it) -> [`policy`] (may they) -> a front carries out the
//! narrowed request -> [`audit`] (write it down). [`gate`] is that road; fronts translate their protocol onto
//! it. See `docs/` and `../shared/ARCHITECTURE.md`.

pub mod audit;
pub mod config;
pub mod credentials;
pub mod gate;
pub mod identity;
pub mod metrics;
pub mod policy;
pub mod s3;
pub mod server;
pub mod sidecar;
pub mod sql;

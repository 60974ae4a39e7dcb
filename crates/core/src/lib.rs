//! The core of Lakegate: who is it ([`identity`]), may they ([`policy`]), with what session credentials
//! ([`credentials`]), and the record of it ([`audit`]). The [`gate`] composes them into the one road every
//! front takes; fronts reach policy and audit only through it.
//!
//! This crate knows no protocol and no front: fronts depend on it, never the other way round. Policy
//! evaluation does no I/O.

pub mod audit;
pub mod credentials;
pub mod gate;
pub mod identity;
pub mod metrics;
pub mod per_cpu_cache;
pub mod policy;

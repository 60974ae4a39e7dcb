//! Where governed statements run: one trait, two implementations (the embedded DataFusion engine over files
//! in the data directory, and PostgreSQL). A backend only ever sees rewritten SQL.

pub mod embedded;
mod pg_tls;
pub mod postgres;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::error::SqlError;
use super::rows::{Column, ColumnType, RowSet};

/// The backend name catalog entries use for the embedded engine.
pub const EMBEDDED: &str = "embedded";

/// A SQL engine that runs rewritten statements.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Runs a query and streams its rows.
    async fn query(&self, sql: &str) -> Result<RowSet, SqlError>;
    /// The result columns a query would have, without running it (for the extended protocol's Describe).
    async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError>;
    /// The types of the statement's `$n` parameters as the engine infers them (`None`: unknown).
    async fn parameter_types(&self, sql: &str) -> Result<Vec<Option<ColumnType>>, SqlError>;
    /// Runs a write and returns the number of rows it touched.
    async fn execute(&self, sql: &str) -> Result<u64, SqlError>;
}

/// The configured backends by name.
#[derive(Debug, Clone, Default)]
pub struct Backends {
    by_name: BTreeMap<String, Arc<dyn Backend>>,
}

impl Backends {
    /// Adds a backend under `name`.
    pub fn insert(&mut self, name: impl Into<String>, backend: Arc<dyn Backend>) {
        self.by_name.insert(name.into(), backend);
    }

    /// The backend called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Backend>> {
        self.by_name.get(name).cloned()
    }
}

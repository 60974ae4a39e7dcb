//! Where governed statements run: one trait, three implementations (the embedded DataFusion engine over files
//! in the data directory, PostgreSQL, and Spark over Spark Connect). A backend only ever sees rewritten SQL.

mod arrow;
mod constant;
pub mod embedded;
pub(crate) mod fence;
pub mod iceberg;
mod pg_tls;
pub mod postgres;
pub mod spark;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

pub use super::bind::Param;
use super::error::SqlError;
pub use super::rewrite::IsolationLevel;
use super::rows::{Column, ColumnType, RowSet};

/// The backend name catalog entries use for the embedded engine.
pub const EMBEDDED: &str = "embedded";

/// Who a statement runs for. Engines that can record it do (Spark tags the operation); none decides with it.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub principal: &'a lakegate_core::identity::Principal,
    /// The request id of the statement's audit record.
    pub request_id: &'a str,
}

/// The text the rewriter's WITH CHECK raises with (`rewrite::write`), as an engine reports it inside its own
/// error message.
const POLICY_VIOLATION: &str = "lakegate: new row violates row-level security policy for table \"";

/// A backend's error for a new row that failed its table's policy, as PostgreSQL reports one under row level
/// security: 42501 and the message without Lakegate's marker. `None` for any other message.
pub(crate) fn policy_violation(message: &str) -> Option<SqlError> {
    let (_, rest) = message.split_once(POLICY_VIOLATION)?;
    let (table, _) = rest.split_once('"')?;
    Some(SqlError::Backend {
        sqlstate: "42501".into(),
        message: format!("new row violates row-level security policy for table \"{table}\""),
    })
}

/// A governed read with its parameters apart from its text. An engine that keeps statements prepared may run
/// `sql` with `params`; any other runs `bound`.
#[derive(Debug, Clone, Copy)]
pub struct Parameterised<'a> {
    /// The statement with its `$n` placeholders, each of which PostgreSQL reads as it reads the literal bound
    /// there (see `bind::parameters_read_as_literals`).
    pub sql: &'a str,
    pub params: &'a [Param],
    /// `sql` with each parameter written in as its literal: the statement the audit record names.
    pub bound: &'a str,
}

/// A SQL engine that runs rewritten statements.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// Runs a query for `caller` and streams its rows.
    async fn query(&self, sql: &str, caller: &Caller<'_>) -> Result<RowSet, SqlError>;
    /// Runs a query given with its parameters apart; by default, its bound text.
    async fn query_parameterised(&self, query: Parameterised<'_>, caller: &Caller<'_>) -> Result<RowSet, SqlError> {
        self.query(query.bound, caller).await
    }
    /// The result columns a query would have, without running it (for the extended protocol's Describe).
    async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError>;
    /// The types of the statement's `$n` parameters as the engine infers them (`None`: unknown).
    async fn parameter_types(&self, sql: &str) -> Result<Vec<Option<ColumnType>>, SqlError>;
    /// Runs a write for `caller` and returns the number of rows it touched.
    async fn execute(&self, sql: &str, caller: &Caller<'_>) -> Result<u64, SqlError>;
    /// Whether the engine gives an untyped constant compared with a column the column's type at planning (or
    /// refuses the statement), so that such a comparison cannot fail on any row: PostgreSQL does; DataFusion and
    /// Spark may cast the column instead. Only then may a statement's comparisons meet a table's rows before its
    /// row filter (see `Rewriter::with_comparisons_unfenced`).
    fn comparisons_typed_at_planning(&self) -> bool {
        false
    }
    /// Whether a statement waits for a connection of the pool that the streams of statements run on this thread
    /// take theirs from, so that a stream whose client is slow to read it should give its connection back sooner
    /// (see `read_ahead`). Engines without a pool of connections: never.
    fn connections_awaited(&self) -> bool {
        false
    }
    /// Opens a transaction on a connection of its own; statements run through the handle until it ends.
    /// `None`: the engine has no transactions (the embedded engine, which is read-only).
    async fn begin(&self, _options: &TransactionOptions) -> Result<Option<Arc<dyn Transaction>>, SqlError> {
        Ok(None)
    }
}

/// A transaction on one backend connection. Dropping it unended rolls it back.
#[async_trait]
pub trait Transaction: Backend {
    /// Takes, releases or rolls back to a savepoint (the name as PostgreSQL folded it).
    async fn savepoint(&self, op: SavepointOp, name: &str) -> Result<(), SqlError>;
    /// COMMIT (`true`) or ROLLBACK, and which it was: a COMMIT of a block an error aborted rolls it back. The
    /// connection is released either way; an error means the block did not commit.
    async fn end(&self, commit: bool) -> Result<Ended, SqlError>;
}

/// How a transaction block ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Committed,
    RolledBack,
}

/// What a savepoint statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavepointOp {
    Take,
    Release,
    RollbackTo,
}

impl SavepointOp {
    /// The statement for savepoint `name`, quoted (never the client's text).
    pub fn sql(self, name: &str) -> String {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match self {
            SavepointOp::Take => format!("SAVEPOINT {quoted}"),
            SavepointOp::Release => format!("RELEASE SAVEPOINT {quoted}"),
            SavepointOp::RollbackTo => format!("ROLLBACK TO SAVEPOINT {quoted}"),
        }
    }
}

/// What the client asked for in its BEGIN, as far as the gateway passes it on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransactionOptions {
    pub isolation: IsolationLevel,
    pub read_only: bool,
}

impl TransactionOptions {
    /// The BEGIN statement the gateway sends: built from these options, never from the client's text.
    pub fn begin_sql(&self) -> String {
        let level = match self.isolation {
            IsolationLevel::ReadCommitted => "READ COMMITTED",
            IsolationLevel::RepeatableRead => "REPEATABLE READ",
            IsolationLevel::Serializable => "SERIALIZABLE",
        };
        let access = if self.read_only { "READ ONLY" } else { "READ WRITE" };
        format!("BEGIN ISOLATION LEVEL {level}, {access}")
    }
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

    /// Whether the backend called `name` types comparisons with constants at planning (see
    /// [`Backend::comparisons_typed_at_planning`]); `false` for a name not configured.
    pub fn types_comparisons_at_planning(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|b| b.comparisons_typed_at_planning())
    }
}

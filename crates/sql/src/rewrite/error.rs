//! The rewriter's error type. Every variant carries the SQLSTATE the SQL front answers with, so the
//! mapping to the wire happens once, at the edge, and never by parsing messages.

/// Why a statement was refused. The `Display` text is meant for the client (PostgreSQL's wording where
/// PostgreSQL has one), except [`RewriteError::Policy`], which is a configuration fault on our side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RewriteError {
    /// The text is not SQL the PostgreSQL dialect parser accepts.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The SQL text is longer than the configured bound.
    #[error("statement is {len} bytes, more than the {max} bytes allowed")]
    TooLong {
        /// Length of the rejected text in bytes.
        len: usize,
        /// The bound in force.
        max: usize,
    },
    /// Expressions or subqueries are nested deeper than the configured bound.
    #[error("statement is nested too deeply (more than {0} levels)")]
    TooDeep(usize),
    /// A relation that is not in the catalog of governed tables (whatever the backend may hold).
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    /// A column that the governed table does not have.
    #[error("column \"{column}\" of relation \"{table}\" does not exist")]
    UndefinedColumn {
        /// The relation as the user would name it.
        table: String,
        /// The column as written (folded).
        column: String,
    },
    /// No permit holds for the table and operation.
    #[error("permission denied for table {0}")]
    TableDenied(String),
    /// A column the principal may not see (or, for writes, may not write) was named.
    #[error("permission denied for column {column} of relation {table}")]
    ColumnDenied {
        /// The relation's name, unqualified as PostgreSQL prints it.
        table: String,
        /// The forbidden column.
        column: String,
    },
    /// A statement or construct that reaches around governance (DDL, roles, system catalogs, files...).
    #[error("{0}")]
    NotAllowed(String),
    /// A function outside the allowlist.
    #[error("function {0} is not allowed through the gateway")]
    FunctionNotAllowed(String),
    /// Valid SQL the rewriter does not understand; refused rather than passed through (fail closed).
    #[error("feature not supported by the gateway: {0}")]
    Unsupported(String),
    /// A new row would violate the write policy, detected while rewriting (no backend round trip).
    #[error("new row violates row-level security policy for table \"{0}\"")]
    CheckViolation(String),
    /// A fault inside the rewriter (a template that did not parse); never the client's doing.
    #[error("internal rewriter error: {0}")]
    Internal(String),
    /// A compiled filter or mask is not valid: a fault of the policy, not of the user's query.
    #[error("invalid data filter for {table}: {reason}")]
    Policy {
        /// The governed table whose filter is broken.
        table: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl RewriteError {
    /// The SQLSTATE to report to the client.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            RewriteError::Syntax(_) => "42601",
            // program_limit_exceeded / statement_too_complex
            RewriteError::TooLong { .. } => "54000",
            RewriteError::TooDeep(_) => "54001",
            RewriteError::UndefinedTable(_) => "42P01",
            RewriteError::UndefinedColumn { .. } => "42703",
            RewriteError::TableDenied(_)
            | RewriteError::ColumnDenied { .. }
            | RewriteError::NotAllowed(_)
            | RewriteError::FunctionNotAllowed(_)
            | RewriteError::CheckViolation(_) => "42501",
            RewriteError::Unsupported(_) => "0A000",
            // internal_error: the client did nothing wrong, the policy did.
            RewriteError::Policy { .. } | RewriteError::Internal(_) => "XX000",
        }
    }
}

pub(crate) fn unsupported(what: impl Into<String>) -> RewriteError {
    RewriteError::Unsupported(what.into())
}

pub(crate) fn not_allowed(what: impl Into<String>) -> RewriteError {
    RewriteError::NotAllowed(what.into())
}

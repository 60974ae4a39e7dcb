//! The SQL front's error: one type for every refusal and failure, each carrying its SQLSTATE, so that the
//! wire fronts (PostgreSQL, Trino HTTP) map it once, at the edge.

use super::rewrite::RewriteError;

/// Why a statement was refused or failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SqlError {
    /// The rewriter refused the statement (its own SQLSTATE: 42501, 42P01, 0A000, 42601, ...).
    #[error(transparent)]
    Rewrite(#[from] RewriteError),
    /// The token was missing, invalid or expired.
    #[error("password authentication failed: {0}")]
    Authentication(String),
    /// The token a session authenticated with no longer holds (it expired, or its signing key or issuer is no
    /// longer trusted): the session ends, and the client connects again with a new token.
    #[error("the session's token no longer holds ({0}); connect again with a new token")]
    SessionEnded(String),
    /// The connection may not authenticate this way (plain TCP where TLS is required).
    #[error("{0}")]
    InsecureTransport(String),
    /// The audit log cannot take the event, so the statement was not run (fail closed).
    #[error("audit log unavailable; the statement was not run: {0}")]
    AuditUnavailable(String),
    /// A policy could not be evaluated.
    #[error("policy evaluation failed: {0}")]
    Policy(String),
    /// The backend failed while planning or running the statement. The text is the backend's own message,
    /// which only ever concerns the rewritten (governed) statement.
    #[error("{message}")]
    Backend { sqlstate: String, message: String },
    /// The backend is unreachable.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// Every connection to the backend stayed in use (by other sessions' transaction blocks) for as long as a
    /// statement may wait for one. The client's connection is fine and the statement may be retried.
    #[error(
        "every connection to backend {backend:?} stayed in use for {} ms; try again, or raise its pool_size",
        waited.as_millis()
    )]
    BackendBusy { backend: String, waited: std::time::Duration },
    /// A statement or value the gateway does not support.
    #[error("feature not supported by the gateway: {0}")]
    Unsupported(String),
    /// A bound parameter could not be read.
    #[error("invalid parameter ${index}: {reason}")]
    Parameter { index: usize, reason: String },
    /// Transaction control used out of place (a savepoint outside a block, an unknown savepoint).
    #[error("{message}")]
    Transaction { sqlstate: &'static str, message: String },
    /// Too much input (statement size, rows of a catalog view...).
    #[error("{0}")]
    Limit(String),
    /// A name outside what the gateway serves: a catalog (3D000) or schema (3F000) that does not exist.
    #[error("{message}")]
    Catalog { sqlstate: &'static str, message: String },
    /// A fault of the gateway itself.
    #[error("internal error: {0}")]
    Internal(String),
}

impl SqlError {
    /// The SQLSTATE reported to the client.
    pub fn sqlstate(&self) -> &str {
        match self {
            SqlError::Rewrite(e) => e.sqlstate(),
            SqlError::Authentication(_) => "28P01",
            SqlError::InsecureTransport(_) | SqlError::SessionEnded(_) => "28000",
            // too_many_connections would mislead; cannot_connect_now says "try later", as PostgreSQL does
            // while it cannot serve.
            SqlError::AuditUnavailable(_) => "57P03",
            SqlError::Policy(_) | SqlError::Internal(_) => "XX000",
            SqlError::Backend { sqlstate, .. } => sqlstate,
            SqlError::BackendUnavailable(_) => "08006",
            // too_many_connections, as pgbouncer and PostgreSQL answer when out of connections; a class-08 code
            // would tell pools to throw the client's own (healthy) connection away.
            SqlError::BackendBusy { .. } => "53300",
            SqlError::Unsupported(_) => "0A000",
            SqlError::Parameter { .. } => "22P02",
            SqlError::Limit(_) => "54000",
            SqlError::Transaction { sqlstate, .. } | SqlError::Catalog { sqlstate, .. } => sqlstate,
        }
    }

    /// Whether the refusal is an access decision (recorded as a denial) rather than an error.
    pub fn is_denial(&self) -> bool {
        matches!(self.sqlstate(), "42501" | "42P01" | "28P01" | "28000")
    }
}

//! Session statements: the harmless ones are classified for the gateway to answer itself, the rest
//! (roles, DDL, COPY, cursors, PREPARE, ...) are refused.

use sqlparser::ast::{
    CloseCursor, ContextModifier, DiscardObject, Expr, FunctionArguments, Query, Reset, SelectItem, Set, SetExpr,
    Statement, TransactionAccessMode, TransactionIsolationLevel, TransactionMode, Value,
};

use crate::rewrite::ast::{fold, fold_name};
use crate::rewrite::error::{RewriteError, not_allowed, unsupported};

/// Client settings a session may change. All of them are answered by the gateway; `search_path`
/// changes how the gateway resolves names (it builds its next [`crate::rewrite::Rewriter`] with it).
const SETTINGS: &[&str] = &[
    "application_name",
    "bytea_output",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "idle_in_transaction_session_timeout",
    "intervalstyle",
    "lock_timeout",
    "search_path",
    "statement_timeout",
    "timezone",
];

/// A session statement for the gateway to answer itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionCommand {
    /// `SET name = values` (`local` for `SET LOCAL`). Values are folded identifiers or literal text.
    Set {
        /// The setting, lower case.
        name: String,
        /// Its new value(s).
        values: Vec<String>,
        /// Whether only for the current transaction.
        local: bool,
    },
    /// `RESET name`, or `RESET ALL` (`None`).
    Reset(Option<String>),
    /// `SHOW name` (`all` for `SHOW ALL`).
    Show(String),
    /// Transaction control.
    Transaction(TransactionCommand),
    /// `DISCARD ALL | PLANS | SEQUENCES | TEMP`, as connection poolers send between clients.
    Discard(Discarded),
    /// `DEALLOCATE [PREPARE] name | ALL`: the extended protocol's prepared statements, which the wire front
    /// keeps and answers for (psycopg 3 sends `DEALLOCATE ALL` at every rollback once it has prepared one).
    Deallocate(Deallocation),
    /// `SELECT version()`.
    Version,
    /// `SELECT current_schema()` / `SELECT current_schema`.
    CurrentSchema,
    /// `SELECT pg_advisory_unlock_all()`, `CLOSE ALL` and `UNLISTEN`, which asyncpg sends at every release of a
    /// pooled connection (with `RESET ALL`): the gateway lets no session take an advisory lock, open a cursor or
    /// listen, so there is nothing to release, and each is answered as PostgreSQL answers it then.
    Release(Released),
}

/// What a [`SessionCommand::Release`] lets go of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Released {
    AdvisoryLocks,
    Cursors,
    Notifications,
}

/// What a [`SessionCommand::Discard`] throws away. Only `ALL` touches anything a gateway session has (its
/// settings and the front's prepared statements): it runs no plans a client can see, and no client can make a
/// sequence or a temporary table through it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discarded {
    All,
    Plans,
    Sequences,
    Temp,
}

/// Which prepared statements a `DEALLOCATE` drops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deallocation {
    All,
    /// One, by its name folded as PostgreSQL folds identifiers.
    Named(String),
}

/// A transaction control statement, with savepoint names folded as PostgreSQL folds identifiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionCommand {
    /// `BEGIN` / `START TRANSACTION`, with the isolation level and access mode asked for.
    Begin {
        isolation: IsolationLevel,
        read_only: bool,
    },
    /// `COMMIT` / `END`.
    Commit,
    /// `ROLLBACK` / `ABORT`.
    Rollback,
    Savepoint(String),
    Release(String),
    RollbackTo(String),
    /// `SET TRANSACTION ...`: acknowledged.
    Set,
}

/// PostgreSQL's isolation levels (READ UNCOMMITTED behaves as READ COMMITTED there).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum IsolationLevel {
    #[default]
    ReadCommitted,
    RepeatableRead,
    Serializable,
}

fn begin(modes: &[TransactionMode]) -> Result<TransactionCommand, RewriteError> {
    let (mut isolation, mut read_only) = (IsolationLevel::ReadCommitted, false);
    for mode in modes {
        match mode {
            TransactionMode::AccessMode(TransactionAccessMode::ReadOnly) => read_only = true,
            TransactionMode::AccessMode(TransactionAccessMode::ReadWrite) => read_only = false,
            TransactionMode::IsolationLevel(level) => {
                isolation = match level {
                    TransactionIsolationLevel::ReadUncommitted | TransactionIsolationLevel::ReadCommitted => {
                        IsolationLevel::ReadCommitted
                    }
                    TransactionIsolationLevel::RepeatableRead => IsolationLevel::RepeatableRead,
                    TransactionIsolationLevel::Serializable => IsolationLevel::Serializable,
                    _ => return Err(unsupported("this isolation level")),
                }
            }
        }
    }
    Ok(TransactionCommand::Begin { isolation, read_only })
}

/// `SELECT version()` and `SELECT current_schema()` alone (the probes drivers send on connect).
pub(crate) fn session_query(q: &Query) -> Option<SessionCommand> {
    if q.with.is_some() || q.order_by.is_some() || q.limit_clause.is_some() || !q.locks.is_empty() {
        return None;
    }
    let SetExpr::Select(s) = q.body.as_ref() else {
        return None;
    };
    if !s.from.is_empty() || s.selection.is_some() || s.having.is_some() || s.into.is_some() {
        return None;
    }
    let [item] = s.projection.as_slice() else {
        return None;
    };
    let expr = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return None,
    };
    let name = match expr {
        Expr::Function(f) => {
            let no_args = match &f.args {
                FunctionArguments::None => true,
                FunctionArguments::List(l) => l.args.is_empty() && l.clauses.is_empty(),
                FunctionArguments::Subquery(_) => false,
            };
            if !no_args || f.over.is_some() || f.filter.is_some() {
                return None;
            }
            match fold_name(&f.name)?.as_slice() {
                [n] => n.clone(),
                _ => return None,
            }
        }
        Expr::Identifier(i) => fold(i),
        _ => return None,
    };
    match name.as_str() {
        "version" if matches!(expr, Expr::Function(_)) => Some(SessionCommand::Version),
        "current_schema" => Some(SessionCommand::CurrentSchema),
        "pg_advisory_unlock_all" if matches!(expr, Expr::Function(_)) => {
            Some(SessionCommand::Release(Released::AdvisoryLocks))
        }
        _ => None,
    }
}

fn setting_value(e: &Expr) -> Result<String, RewriteError> {
    match e {
        Expr::Identifier(i) => Ok(fold(i)),
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::Number(s, _) => Ok(s.clone()),
            Value::Boolean(b) => Ok(b.to_string()),
            _ => Err(unsupported("setting value")),
        },
        Expr::UnaryOp { op, expr } => Ok(format!("{op}{}", setting_value(expr)?)),
        _ => Err(unsupported("setting value")),
    }
}

fn setting_name(name: &str) -> Result<String, RewriteError> {
    match name {
        "role" | "session_authorization" => {
            Err(not_allowed("changing the role or session authorization is not allowed through the gateway"))
        }
        n if SETTINGS.contains(&n) => Ok(n.to_string()),
        n => Err(not_allowed(format!("setting {n} cannot be changed through the gateway"))),
    }
}

/// Classifies a statement that is neither a query nor a write: a [`SessionCommand`] or a refusal.
pub(crate) fn session_statement(statement: &Statement) -> Result<SessionCommand, RewriteError> {
    match statement {
        Statement::Set(set) => match set {
            Set::SingleAssignment { scope, hivevar: false, variable, values } => {
                let name = match fold_name(variable).as_deref() {
                    Some([n]) => setting_name(n)?,
                    _ => return Err(unsupported("qualified setting name")),
                };
                Ok(SessionCommand::Set {
                    name,
                    values: values.iter().map(setting_value).collect::<Result<_, _>>()?,
                    local: matches!(scope, Some(ContextModifier::Local)),
                })
            }
            Set::SetTimeZone { local, value } => {
                Ok(SessionCommand::Set { name: "timezone".into(), values: vec![setting_value(value)?], local: *local })
            }
            Set::SetTransaction { .. } => Ok(SessionCommand::Transaction(TransactionCommand::Set)),
            Set::SetRole { .. } | Set::SetSessionAuthorization(_) => {
                Err(not_allowed("changing the role or session authorization is not allowed through the gateway"))
            }
            _ => Err(not_allowed("this SET is not allowed through the gateway")),
        },
        Statement::Reset(reset) => match &reset.reset {
            Reset::ALL => Ok(SessionCommand::Reset(None)),
            Reset::ConfigurationParameter(name) => match fold_name(name).as_deref() {
                Some([n]) => Ok(SessionCommand::Reset(Some(setting_name(n)?))),
                _ => Err(unsupported("qualified setting name")),
            },
        },
        Statement::ShowVariable { variable } => {
            Ok(SessionCommand::Show(variable.iter().map(fold).collect::<Vec<_>>().join(" ")))
        }
        Statement::StartTransaction { modes, statements, exception, .. }
            if statements.is_empty() && exception.is_none() =>
        {
            Ok(SessionCommand::Transaction(begin(modes)?))
        }
        Statement::Commit { chain: true, .. } | Statement::Rollback { chain: true, .. } => {
            Err(unsupported("AND CHAIN"))
        }
        Statement::Commit { .. } => Ok(SessionCommand::Transaction(TransactionCommand::Commit)),
        Statement::Rollback { savepoint: None, .. } => Ok(SessionCommand::Transaction(TransactionCommand::Rollback)),
        Statement::Rollback { savepoint: Some(name), .. } => {
            Ok(SessionCommand::Transaction(TransactionCommand::RollbackTo(fold(name))))
        }
        Statement::Savepoint { name } => Ok(SessionCommand::Transaction(TransactionCommand::Savepoint(fold(name)))),
        Statement::ReleaseSavepoint { name } => {
            Ok(SessionCommand::Transaction(TransactionCommand::Release(fold(name))))
        }
        Statement::Discard { object_type } => Ok(SessionCommand::Discard(match object_type {
            DiscardObject::ALL => Discarded::All,
            DiscardObject::PLANS => Discarded::Plans,
            DiscardObject::SEQUENCES => Discarded::Sequences,
            DiscardObject::TEMP => Discarded::Temp,
        })),
        Statement::Explain { .. } | Statement::ExplainTable { .. } => Err(not_allowed(
            "EXPLAIN is not allowed through the gateway: plans show the policies and the hidden rows' statistics",
        )),
        Statement::Copy { .. } => Err(not_allowed("COPY is not allowed through the gateway")),
        Statement::Close { cursor: CloseCursor::All } => Ok(SessionCommand::Release(Released::Cursors)),
        Statement::UNLISTEN { .. } => Ok(SessionCommand::Release(Released::Notifications)),
        Statement::Declare { .. } | Statement::Fetch { .. } | Statement::Close { .. } => {
            Err(not_allowed("cursors are not allowed through the gateway"))
        }
        // `ALL` is a keyword; `"ALL"` names a statement.
        Statement::Deallocate { name, .. } if name.quote_style.is_none() && name.value.eq_ignore_ascii_case("all") => {
            Ok(SessionCommand::Deallocate(Deallocation::All))
        }
        Statement::Deallocate { name, .. } => Ok(SessionCommand::Deallocate(Deallocation::Named(fold(name)))),
        Statement::Prepare { .. } | Statement::Execute { .. } => {
            Err(not_allowed("PREPARE/EXECUTE are not allowed through the gateway; use the extended protocol"))
        }
        Statement::Call(_) => Err(not_allowed("CALL is not allowed through the gateway")),
        Statement::LISTEN { .. } | Statement::NOTIFY { .. } => {
            Err(not_allowed("LISTEN/NOTIFY are not allowed through the gateway"))
        }
        Statement::Lock(_) | Statement::LockTables { .. } => {
            Err(not_allowed("LOCK is not allowed through the gateway"))
        }
        Statement::Grant(_) | Statement::Revoke(_) | Statement::Deny(_) => {
            Err(not_allowed("GRANT/REVOKE are not allowed through the gateway"))
        }
        other => {
            // DDL and everything else: name the statement by its first word only (the text may be large).
            let text = other.to_string();
            let word = text.split_whitespace().next().unwrap_or("this");
            Err(not_allowed(format!("{word} statements are not allowed through the gateway")))
        }
    }
}

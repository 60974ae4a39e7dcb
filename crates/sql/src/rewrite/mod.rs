//! The SQL gateway's rewriter: every statement a principal sends is parsed (PostgreSQL dialect) and
//! rewritten so that it only sees the rows, columns and cells its data filters allow, with PostgreSQL row
//! level security as the reference semantics.
//!
//! Every reference to a governed table, wherever it stands, becomes the derived table
//! `(SELECT <visible columns, masked> FROM "schema"."table" WHERE <row filter> OFFSET 0) AS "alias"`.
//! `OFFSET 0`, PostgreSQL's optimisation fence, keeps a user's predicates from running on hidden rows (the
//! embedded engine plans it as a fence of its own, `backend::fence`); it is left out where there are none that
//! could: no row filter, or, on an engine that types constants at planning (PostgreSQL), the query's own SELECT
//! over the one table comparing plain columns with constants, as in the example below, so that PostgreSQL can use
//! them for index scans.
//! Names are resolved with PostgreSQL's rules (folding, quoting, CTE scoping, search path) and written
//! back quoted, so the backend reads exactly what was checked. Whatever the rewriter does not
//! understand is refused, never passed through.
//!
//! ```
//! use lakegate_sql::rewrite::{Catalog, ColumnAccess, ColumnDef, Operation, Rewriter, TableFilter, TableName};
//! let mut catalog = Catalog::new();
//! let orders = TableName::new("sales", "orders");
//! catalog.add_table(orders.clone(), vec![ColumnDef::new("id", "integer"), ColumnDef::new("region", "text")]);
//! let filters = |t: &TableName, _op: Operation| {
//!     Some(TableFilter {
//!         table: t.clone(),
//!         permissive: vec![Some("region = principal.region".into())],
//!         restrictive: vec![],
//!         columns: vec![ColumnAccess::clear("id"), ColumnAccess::clear("region")],
//!         principal: [("region".to_string(), "EU".to_string())].into(),
//!         policies: vec![],
//!     })
//! };
//! // The table is on PostgreSQL.
//! let rewriter = Rewriter::new(&catalog, &filters).with_comparisons_unfenced(&|_| true);
//! let out = rewriter.rewrite("SELECT id FROM sales.orders").unwrap();
//! assert_eq!(
//!     out.statements[0].sql,
//!     "SELECT \"id\" FROM (SELECT \"orders\".\"id\" AS \"id\", \"orders\".\"region\" AS \"region\" \
//!      FROM \"sales\".\"orders\" WHERE (\"orders\".\"region\" = 'EU')) AS \"orders\""
//! );
//! ```

mod ast;
mod error;
mod filter;
mod functions;
mod policy;
pub(crate) mod print;
mod session;
mod walk;
mod write;

#[cfg(test)]
mod tests;

pub use error::RewriteError;
pub(crate) use filter::CatalogCache;
pub use filter::{Catalog, ColumnAccess, ColumnDef, Condition, Mask, Operation, TableDef, TableFilter, TableName};
pub use policy::AppliedFilter;
pub use session::{Deallocation, Discarded, IsolationLevel, Released, SessionCommand, TransactionCommand};

use sqlparser::ast::Statement;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

use crate::rewrite::functions::FnContext;
use crate::rewrite::walk::Walker;

/// Longest SQL text accepted by default (1 MiB).
pub const DEFAULT_MAX_SQL_LEN: usize = 1 << 20;
/// Deepest nesting the parser accepts by default (sqlparser counts expressions and subqueries).
pub const DEFAULT_PARSER_DEPTH: usize = 64;
/// Deepest nesting the rewriter's own walk accepts by default. Left-deep chains such as `a OR b OR ...`
/// are not counted by the parser but are by the walk.
pub const DEFAULT_MAX_DEPTH: usize = 256;
/// Stack the rewriter's walk may use by default (bytes). Callers need this much free stack plus the
/// parser's; a tokio worker's 2 MiB is enough.
pub const DEFAULT_MAX_STACK: usize = 1 << 20;

/// The filter lookup: the data filter of a table for one operation, `None` when no permit holds.
pub type FilterLookup<'a> = dyn Fn(&TableName, Operation) -> Option<TableFilter> + 'a;

/// What kind of statement a rewritten statement is, so the gateway knows how to run it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementKind {
    /// A read: run it on the backend.
    Query,
    /// INSERT (with its WITH CHECK compiled in).
    Insert,
    /// UPDATE.
    Update,
    /// DELETE.
    Delete,
    /// A session statement the gateway answers itself; never forwarded as is.
    Session(SessionCommand),
}

/// One statement after rewriting.
#[derive(Debug, Clone, PartialEq)]
pub struct RewrittenStatement {
    /// How the gateway should treat it.
    pub kind: StatementKind,
    /// The rewritten AST.
    pub statement: Statement,
    /// The rewritten text: what to send to the backend (for `Query` and writes).
    pub sql: String,
    /// The governed tables the statement touches.
    pub tables: Vec<TableName>,
    /// The filters and masks applied, one entry per reference, for the audit event.
    pub applied: Vec<AppliedFilter>,
}

/// A whole request after rewriting: every statement passed, or the request was refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Rewritten {
    /// The statements in order.
    pub statements: Vec<RewrittenStatement>,
}

/// Rewrites SQL for one principal: a catalog, the principal's filter lookup and the session's search path.
/// Cheap to build; build one per request.
pub struct Rewriter<'a> {
    pub(crate) catalog: &'a Catalog,
    pub(crate) filters: &'a FilterLookup<'a>,
    pub(crate) search_path: Vec<String>,
    pub(crate) max_sql_len: usize,
    pub(crate) parser_depth: usize,
    pub(crate) max_depth: usize,
    pub(crate) max_stack: usize,
    pub(crate) fence: bool,
    pub(crate) comparisons_unfenced: &'a dyn Fn(&TableName) -> bool,
}

impl<'a> Rewriter<'a> {
    /// A rewriter with the search path `public` and the default bounds.
    pub fn new(catalog: &'a Catalog, filters: &'a FilterLookup<'a>) -> Self {
        Rewriter {
            catalog,
            filters,
            search_path: vec!["public".to_string()],
            max_sql_len: DEFAULT_MAX_SQL_LEN,
            parser_depth: DEFAULT_PARSER_DEPTH,
            max_depth: DEFAULT_MAX_DEPTH,
            max_stack: DEFAULT_MAX_STACK,
            fence: true,
            comparisons_unfenced: &|_| false,
        }
    }

    /// The schemas unqualified names are looked up in, in order (the gateway's own `search_path`
    /// setting; `SET search_path` is answered by the gateway, never forwarded). Empty: unqualified names
    /// never resolve.
    pub fn with_search_path(mut self, schemas: Vec<String>) -> Self {
        self.search_path = schemas;
        self
    }

    /// Shorthand for a search path of at most one schema.
    pub fn with_default_schema(self, schema: Option<&str>) -> Self {
        self.with_search_path(schema.map(str::to_string).into_iter().collect())
    }

    /// Bounds on the input: text length in bytes, nesting depth (parser and walk) and the stack the walk
    /// may use in bytes.
    pub fn with_limits(mut self, max_sql_len: usize, parser_depth: usize, max_depth: usize, max_stack: usize) -> Self {
        self.max_sql_len = max_sql_len;
        self.parser_depth = parser_depth;
        self.max_depth = max_depth;
        self.max_stack = max_stack;
        self
    }

    /// Whether governed views carry `OFFSET 0` (default: yes). Without it PostgreSQL may evaluate a
    /// user's predicate on hidden rows before the row filter (an error then reveals them), but can use
    /// the user's predicates for index scans.
    pub fn with_optimization_fence(mut self, fence: bool) -> Self {
        self.fence = fence;
        self
    }

    /// The tables whose engine cannot fail on a comparison of a column with an untyped constant, on any row:
    /// PostgreSQL gives the constant the column's type at planning, or refuses the statement. A statement's own
    /// SELECT over one such table whose WHERE only makes such comparisons reads it without the fence (see
    /// `walk::constant_comparisons`). Default: none. DataFusion and Spark may cast the column to the
    /// constant's type instead (`customer = 5` casts every customer to a number), which fails on some rows.
    pub fn with_comparisons_unfenced(mut self, tables: &'a dyn Fn(&TableName) -> bool) -> Self {
        self.comparisons_unfenced = tables;
        self
    }

    /// Parses and rewrites `sql`. Every statement must pass; the first refusal refuses the request.
    pub fn rewrite(&self, sql: &str) -> Result<Rewritten, RewriteError> {
        if sql.len() > self.max_sql_len {
            return Err(RewriteError::TooLong { len: sql.len(), max: self.max_sql_len });
        }
        let dialect = PostgreSqlDialect {};
        let statements = Parser::new(&dialect)
            .with_recursion_limit(self.parser_depth)
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| match e {
                ParserError::RecursionLimitExceeded => RewriteError::TooDeep(self.parser_depth),
                other => RewriteError::Syntax(other.to_string()),
            })?;
        let statements = statements.into_iter().map(|s| self.statement(s)).collect::<Result<Vec<_>, _>>()?;
        Ok(Rewritten { statements })
    }

    fn statement(&self, mut statement: Statement) -> Result<RewrittenStatement, RewriteError> {
        let (kind, walker) = match &mut statement {
            Statement::Query(q) => {
                if let Some(cmd) = session::session_query(q) {
                    (StatementKind::Session(cmd), None)
                } else {
                    let mut w = Walker::new(self, FnContext::Read);
                    w.unfenced = walk::constant_comparisons(q);
                    w.query(q)?;
                    (StatementKind::Query, Some(w))
                }
            }
            Statement::Insert(ins) => {
                let mut w = Walker::new(self, FnContext::Write);
                write::insert(&mut w, ins)?;
                (StatementKind::Insert, Some(w))
            }
            Statement::Update(upd) => {
                let mut w = Walker::new(self, FnContext::Write);
                write::update(&mut w, upd)?;
                (StatementKind::Update, Some(w))
            }
            Statement::Delete(del) => {
                let mut w = Walker::new(self, FnContext::Write);
                write::delete(&mut w, del)?;
                (StatementKind::Delete, Some(w))
            }
            other => (StatementKind::Session(session::session_statement(other)?), None),
        };
        let (tables, applied) = walker.map(|w| (w.tables.into_iter().collect(), w.applied)).unwrap_or_default();
        let sql = print::print(&mut statement, self.parser_depth.saturating_mul(2))?;
        Ok(RewrittenStatement { kind, sql, statement, tables, applied })
    }
}

/// Rewrites `sql` with a single default schema: the short form of [`Rewriter::rewrite`].
pub fn rewrite(
    sql: &str,
    catalog: &Catalog,
    filters: &FilterLookup<'_>,
    default_schema: Option<&str>,
) -> Result<Rewritten, RewriteError> {
    Rewriter::new(catalog, filters).with_default_schema(default_schema).rewrite(sql)
}

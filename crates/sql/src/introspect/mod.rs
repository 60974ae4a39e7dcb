//! Catalog introspection as tools do it (psql's `\dt`, JDBC DatabaseMetaData, SQLAlchemy's inspector),
//! answered from the governed catalog: only the relations and columns the principal may see.
//!
//! A query that names `pg_catalog` or `information_schema` runs on a DataFusion context built for the
//! principal's view of the catalog, holding synthetic `pg_catalog` and `information_schema` tables filled from
//! that view, and nothing else: no data table is registered there, so a query mixing catalog and data cannot
//! read data, and catalog queries never reach a backend. A session keeps its last context, and the answers
//! given over it, for as long as the gate decides the same view ([`KeptCatalog`]).
//!
//! - `tables`: every catalog table, filled from the principal's view or kept empty.
//! - `functions`: every function catalog queries call.
//! - `empty`: which queries have no rows by their shape (answered without planning).
//! - here: recognising catalog queries, refusing the relations they may not name, and normalising
//!   PostgreSQL-only syntax into what DataFusion plans.

use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use datafusion::prelude::{SessionConfig, SessionContext};
use sqlparser::ast::{
    BinaryOperator, CastKind, DataType as SqlType, Expr, Ident, ObjectName, ObjectNamePart, Statement, VisitMut,
    VisitorMut, visit_relations,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

mod empty;
mod functions;
mod tables;

use crate::SqlService;
use crate::backend::Backend as _;
use crate::error::SqlError;
use crate::rewrite::print;
use crate::rows::{Answer, Column, ColumnType};
use crate::session::Outcome;
use lakegate_core::gate::{FilterCache, GateError, Origin, VisibleTable};
use lakegate_core::identity::Principal;
use lakegate_core::per_cpu_cache::PerCpuCache;

/// How the catalog names types: PostgreSQL's names (`int8`, `text`, `numeric`) for the wire front, Trino's
/// (`bigint`, `varchar`, `decimal(12,2)`) in `information_schema.columns` for the Trino front.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatalogForm {
    Postgres,
    Trino,
}

/// How a session's catalog queries are answered: the form of the catalog, and the context its last one ran on.
pub struct Catalog<'a> {
    pub form: CatalogForm,
    pub kept: &'a mut KeptCatalog,
}

/// The catalog context a session built for its last catalog query, the view it shows, and the answers given
/// over it. Tools send catalog queries in runs (DBeaver and DataGrip dozens as a user browses, JDBC's
/// `DatabaseMetaData` one per call, the same ones again at every refresh), and the principal's view rarely
/// changes between two of them. Building the context (every catalog table filled and registered, a DataFusion
/// state) was a fifth of such a query's CPU, and planning it on DataFusion most of the rest.
///
/// The context is reused only for exactly the view it was built for: the same visible tables and columns, the
/// same user, the same form. Whatever the gate decides differently (a policy edit, a table added) builds a new
/// one, and the answers kept over the old one go with it. An answer is kept under the query's text (its
/// parameters bound into it) when the query calls no function but immutable ones: over an unchanged context
/// the same text then has the same rows. Every catalog query still goes through the gate and is recorded,
/// kept answer or not.
#[derive(Default)]
pub struct KeptCatalog(Option<KeptView>);

impl std::fmt::Debug for KeptCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeptCatalog").field(&self.0.as_ref().map(|kept| kept.view.tables.len())).finish()
    }
}

/// What a catalog context is built from.
#[derive(PartialEq)]
struct BuiltFor {
    tables: Vec<VisibleTable>,
    user: String,
    form: CatalogForm,
}

/// A session's catalog context and what was answered over it.
struct KeptView {
    view: BuiltFor,
    engine: Introspection,
    answers: quick_cache::unsync::Cache<String, Answer, AnswerWeight>,
}

/// The most bytes of query text and rows a session keeps as catalog answers; a larger answer is not kept. A
/// client sending ever new catalog texts replaces older answers, it does not grow its session.
const KEPT_ANSWERS_WEIGHT: u64 = 128 << 10;

#[derive(Clone)]
struct AnswerWeight;

impl quick_cache::Weighter<String, Answer> for AnswerWeight {
    fn weight(&self, sql: &String, answer: &Answer) -> u64 {
        sql.len() as u64 + answer.weight()
    }
}

impl KeptCatalog {
    /// The context showing `tables` to `user` in `form`, with its answers: the kept one if it was built for
    /// exactly that view.
    fn view(&mut self, tables: Vec<VisibleTable>, user: &str, form: CatalogForm) -> Result<&mut KeptView, SqlError> {
        let view = BuiltFor { tables, user: user.to_owned(), form };
        let kept = match self.0.take() {
            Some(kept) if kept.view == view => kept,
            old => {
                // The old context goes before the new one is built: a session never holds two.
                drop(old);
                let engine = Introspection::build(&view.tables, &view.user, view.form)?;
                let answers = quick_cache::unsync::Cache::with_weighter(64, KEPT_ANSWERS_WEIGHT, AnswerWeight);
                KeptView { view, engine, answers }
            }
        };
        Ok(self.0.insert(kept))
    }

    /// The rows of the catalog query `sql` (normalised) over the context showing `tables` to `user`.
    async fn answer(
        &mut self,
        tables: Vec<VisibleTable>,
        user: &str,
        form: CatalogForm,
        sql: &str,
    ) -> Result<crate::rows::RowSet, SqlError> {
        let kept = self.view(tables, user, form)?;
        if let Some(answer) = kept.answers.get(sql) {
            return Ok(answer.row_set());
        }
        let (rows, repeatable) = kept.engine.query(sql).await.map_err(unsupported)?;
        if !repeatable {
            return Ok(rows);
        }
        match Answer::collect_within(rows, KEPT_ANSWERS_WEIGHT.saturating_sub(sql.len() as u64)).await? {
            Ok(answer) => {
                let rows = answer.row_set();
                kept.answers.insert(sql.to_owned(), answer);
                Ok(rows)
            }
            Err(too_large_to_keep) => Ok(too_large_to_keep),
        }
    }
}

/// Schemas whose relations are answered here.
const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];

/// Whether `sql` reads the system catalogs (`pg_catalog`, `information_schema`, or an unqualified `pg_*`
/// relation, which PostgreSQL finds in `pg_catalog` first), or calls a `pg_catalog.` function.
pub fn is_catalog_query(sql: &str) -> bool {
    // Most statements name no catalog, and parsing each of them here as well as in the rewriter doubled the
    // parsing of every query. Every spelling recognised below contains `pg_` or `information_schema` in some
    // case, so a text without either cannot be one. (A name this cannot see, one written with Unicode escapes,
    // say, goes to the rewriter as a data query and is refused there as an unknown table: this errs closed.)
    let lower = sql.to_ascii_lowercase();
    let session_functions = SESSION_FUNCTIONS.iter().any(|f| lower.contains(f));
    if !lower.contains("pg_") && !lower.contains("information_schema") && !session_functions {
        return false;
    }
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else { return false };
    if session_functions && statements.iter().all(reads_nothing_but_session_functions) {
        return true;
    }
    let mut found = false;
    for s in &statements {
        let _ = visit_relations(s, |name: &ObjectName| {
            let parts = folded(name);
            let system = match parts.as_slice() {
                [schema, _] => SYSTEM_SCHEMAS.contains(&schema.as_str()),
                [table] => table.starts_with("pg_"),
                _ => false,
            };
            if system {
                found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if !found {
            let _ = sqlparser::ast::visit_expressions(s, |e: &Expr| {
                if let Expr::Function(f) = e
                    && let [schema, _] = folded(&f.name).as_slice()
                    && schema == "pg_catalog"
                {
                    found = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
        }
    }
    found
}

/// Functions about the connection that tools call with no relation at all (`SELECT current_schema(),session_user`
/// from DBeaver, `select current_database(), current_schema(), current_user` from DataGrip). The data path has
/// no answer for them; the catalog context has, from the principal alone.
const SESSION_FUNCTIONS: &[&str] = &["current_database", "current_schemas", "current_user", "session_user"];

/// Whether `statement` is a query that reads no relation and calls at least one of [`SESSION_FUNCTIONS`]: with
/// nothing to read, it can show nothing but what the catalog context knows of the principal.
fn reads_nothing_but_session_functions(statement: &Statement) -> bool {
    if !matches!(statement, Statement::Query(_)) {
        return false;
    }
    let mut relations = false;
    let _ = visit_relations(statement, |_: &ObjectName| {
        relations = true;
        ControlFlow::Break(())
    });
    let mut session = false;
    let _ = sqlparser::ast::visit_expressions(statement, |e: &Expr| {
        if let Expr::Function(f) = e
            && let Some(name) = folded(&f.name).last()
            && SESSION_FUNCTIONS.contains(&name.as_str())
        {
            session = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    !relations && session
}

/// The statements of a request that holds more than one (Npgsql sends its type-loading queries as one batch),
/// each as text of its own; `None` for one statement, or text that does not parse (the single-statement path
/// reports the syntax error).
pub fn statements(sql: &str) -> Option<Vec<String>> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    (statements.len() > 1).then(|| statements.iter().map(ToString::to_string).collect())
}

fn folded(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => {
                if i.quote_style.is_some() {
                    i.value.clone()
                } else {
                    i.value.to_ascii_lowercase()
                }
            }
            ObjectNamePart::Function(f) => f.name.value.to_ascii_lowercase(),
        })
        .collect()
}

/// One catalog query's text as the catalog context runs it, read once.
#[derive(Debug)]
pub struct Reading {
    /// The text in what DataFusion plans ([`normalize`]).
    normalized: String,
    /// The columns, when the query's shape leaves it no rows ([`empty_result`]).
    empty: Option<Vec<Column>>,
    /// The columns, once described ([`describe`]).
    columns: tokio::sync::OnceCell<Vec<Column>>,
    /// The parameters' types, once asked for ([`parameter_types`]).
    parameters: tokio::sync::OnceCell<Vec<Option<ColumnType>>>,
}

/// Catalog texts read before, by text. A reading is a function of the text alone (the relations it names, its
/// syntax), not of who sends it, so one store serves every session. A catalog query sent again (tools send the
/// same ones at every refresh) was parsed five times a query: recognised, split, checked, normalised and looked
/// at for an empty answer, a third of its connection thread's time; a kept text is parsed not at all.
///
/// Only a text recognised as one catalog query ([`is_catalog_query`]) that passed the check is kept, so a kept
/// reading tells the session at once that a text takes the catalog's road (see `Session::prepare`).
pub struct Readings {
    kept: PerCpuCache<String, Arc<Reading>, ReadingWeight>,
}

/// The most bytes of text the kept readings hold: a client sending ever new catalog texts replaces older ones.
const KEPT_READINGS_WEIGHT: u64 = 4 << 20;

#[derive(Clone)]
struct ReadingWeight;

impl quick_cache::Weighter<String, Arc<Reading>> for ReadingWeight {
    fn weight(&self, sql: &String, reading: &Arc<Reading>) -> u64 {
        let empty = reading.empty.iter().flatten().map(|c| c.name.len() + 32).sum::<usize>();
        (64 + sql.len() + reading.normalized.len() + empty) as u64
    }
}

impl std::fmt::Debug for Readings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readings").finish_non_exhaustive()
    }
}

impl Default for Readings {
    fn default() -> Self {
        Readings { kept: PerCpuCache::with_weighter(1024, KEPT_READINGS_WEIGHT, ReadingWeight) }
    }
}

impl Readings {
    /// Whether `sql` was read before as one catalog query that passed the check.
    pub fn known(&self, sql: &str) -> bool {
        self.kept.get(sql).is_some()
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.kept.len()
    }

    /// Checks `sql` as one catalog query: the relations it names and the syntax the emulation needs, and reads
    /// it for the engine. The session records a failure as a refusal.
    pub fn read(&self, sql: &str) -> Result<Arc<Reading>, SqlError> {
        if let Some(reading) = self.kept.get(sql) {
            return Ok(reading);
        }
        let (normalized, empty) = (normalize(sql)?, empty_result(sql));
        let reading =
            Arc::new(Reading { normalized, empty, columns: Default::default(), parameters: Default::default() });
        // The text of a prepared catalog query with its parameters bound is read here too; it is one catalog
        // query as the text it was bound into was, and checked as such before it is kept.
        if is_catalog_query(sql) {
            self.kept.insert(sql.to_owned(), reading.clone());
        }
        Ok(reading)
    }
}

/// The types of a catalog query's parameters, as PostgreSQL gives them: drivers that send parameters in binary
/// (asyncpg) encode them as the server says. A parameter written with a cast (`$1::int4`, SQLAlchemy's form for
/// every parameter) has the cast's type; one written without takes the type of what it is compared with or
/// passed to (`c.oid = $1`, `relname = $1`), which the engine infers while planning the text over an empty
/// catalog, once a text. Catalog oids are carried as `int8` (see [`normalize`]), so a parameter cast to `oid`
/// or compared with one is one. A parameter cast to two types, or typed by nothing, is text, as is every
/// parameter of a text the engine cannot plan (the error is the Bind's or Execute's to give).
pub async fn parameter_types(readings: &Readings, sql: &str) -> Vec<Option<ColumnType>> {
    let (count, cast) = cast_types(sql);
    if (1..=count).all(|n| cast.contains_key(&n)) {
        return (1..=count).map(|n| cast.get(&n).copied().flatten()).collect();
    }
    let inferred = match readings.read(sql) {
        Ok(reading) => reading
            .parameters
            .get_or_try_init(|| async { empty_engine()?.parameter_types(&reading.normalized).await })
            .await
            .cloned()
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    (1..=count)
        .map(|n| match cast.get(&n) {
            Some(ty) => *ty,
            None => inferred.get(n - 1).copied().flatten(),
        })
        .collect()
}

/// The highest `$n` in `sql`, and the type of each parameter written with a cast (`None` where its casts
/// disagree).
fn cast_types(sql: &str) -> (usize, std::collections::BTreeMap<usize, Option<ColumnType>>) {
    #[derive(Default)]
    struct Casts {
        count: usize,
        types: std::collections::BTreeMap<usize, Option<ColumnType>>,
    }
    fn number(expr: &Expr) -> Option<usize> {
        match expr {
            Expr::Value(v) => match &v.value {
                sqlparser::ast::Value::Placeholder(p) => p.strip_prefix('$')?.parse().ok(),
                _ => None,
            },
            _ => None,
        }
    }
    impl sqlparser::ast::Visitor for Casts {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            if let Some(n) = number(expr) {
                self.count = self.count.max(n);
            }
            if let Expr::Cast { expr: inner, data_type, .. } = expr
                && let Some(n) = number(inner)
            {
                let name = data_type.to_string().to_ascii_lowercase();
                let ty = match name.trim_start_matches("pg_catalog.") {
                    "oid" => Some(ColumnType::Int8),
                    other => ColumnType::from_sql_type(other),
                };
                let seen = self.types.entry(n).or_insert(ty);
                if *seen != ty {
                    *seen = None;
                }
            }
            ControlFlow::Continue(())
        }
    }
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else { return (0, Default::default()) };
    let mut casts = Casts::default();
    let _ = sqlparser::ast::Visit::visit(&statements, &mut casts);
    (casts.count, casts.types)
}

/// The catalog context with no tables in it: what a query's columns and parameters are does not depend on the
/// view, so one serves every description.
fn empty_engine() -> Result<Introspection, SqlError> {
    static EMPTY: std::sync::OnceLock<Introspection> = std::sync::OnceLock::new();
    if let Some(engine) = EMPTY.get() {
        return Ok(engine.clone());
    }
    let engine = Introspection::build(&[], "", CatalogForm::Postgres)?;
    Ok(EMPTY.get_or_init(|| engine).clone())
}

/// The columns a catalog query returns. They do not depend on what the principal may see, so describing
/// decides nothing: the query is planned over an empty catalog of the same shape, once a text.
pub async fn describe(readings: &Readings, sql: &str) -> Result<Vec<Column>, SqlError> {
    let reading = readings.read(sql)?;
    if let Some(columns) = &reading.empty {
        return Ok(columns.clone());
    }
    let described = reading
        .columns
        .get_or_try_init(|| async { empty_engine()?.describe(&reading.normalized).await.map_err(unsupported) });
    Ok(described.await?.clone())
}

/// A catalog query the engine cannot plan is a feature the emulation lacks (0A000), not a fault of the gateway;
/// the message says so and keeps the engine's reason.
fn unsupported(e: SqlError) -> SqlError {
    match e {
        SqlError::Backend { sqlstate, message } if sqlstate == "XX000" || sqlstate == "42000" => {
            SqlError::Unsupported(format!("this catalog query is beyond the gateway's catalog emulation ({message})"))
        }
        other => other,
    }
}

/// Runs a catalog query over the principal's view of the catalog, which the gate decides and records.
pub async fn query(
    service: &SqlService,
    origin: &Origin,
    principal: &Principal,
    cache: &Mutex<FilterCache>,
    sql: &str,
    catalog: Catalog<'_>,
) -> Result<Outcome, SqlError> {
    let reading = service.catalog_readings.read(sql)?;
    // Through the gate even when the answer is known to be empty: every catalog query is recorded.
    let listing = service.gate.list_catalog(origin, principal, sql, cache).await.map_err(|e| match e {
        GateError::Policy(e) => SqlError::Policy(e.to_string()),
        other => SqlError::AuditUnavailable(other.to_string()),
    })?;
    let mut slot = listing.slot;
    if let Some(columns) = &reading.empty {
        slot.finish();
        let columns = columns.clone();
        return Ok(Outcome::Rows(crate::rows::RowSet { columns, rows: Box::pin(futures::stream::empty()) }));
    }
    match catalog.kept.answer(listing.tables, &principal.subject, catalog.form, &reading.normalized).await {
        Ok(rows) => {
            // Catalog answers are small and built in memory; the record is complete once they are planned.
            slot.finish();
            Ok(Outcome::Rows(rows))
        }
        Err(e) => {
            let event = slot.event_mut();
            event.reason = Some(e.to_string());
            event.outcome_mut().error_code = Some(e.sqlstate().to_owned());
            slot.finish();
            Err(e)
        }
    }
}

/// A query that can have no rows because it must read a catalog Lakegate keeps empty (constraints, indexes,
/// functions, policies...; see [`empty`]) is answered without planning, with its output names as text columns.
fn empty_result(sql: &str) -> Option<Vec<Column>> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Query(query)] = statements.as_slice() else { return None };
    let select = empty::empty_select(query)?;
    let columns = select
        .projection
        .iter()
        .map(|item| {
            let name = match item {
                sqlparser::ast::SelectItem::ExprWithAlias { alias, .. } => output_name(alias),
                sqlparser::ast::SelectItem::UnnamedExpr(Expr::Identifier(i)) => output_name(i),
                sqlparser::ast::SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                    parts.last().map(output_name).unwrap_or_default()
                }
                sqlparser::ast::SelectItem::UnnamedExpr(Expr::Function(f)) => {
                    f.name.0.last().map(|p| p.to_string().to_ascii_lowercase()).unwrap_or_default()
                }
                _ => "?column?".to_owned(),
            };
            Column { name, ty: ColumnType::Text }
        })
        .collect();
    Some(columns)
}

/// The character of a one-character string literal.
fn single_char(v: &sqlparser::ast::Value) -> Option<char> {
    let sqlparser::ast::Value::SingleQuotedString(s) = v else { return None };
    let mut chars = s.chars();
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

/// Rewrites the string literals of a LIKE pattern (a literal or a concatenation of literals) from escape
/// character `esc` to the backslash. False, leaving the pattern as it is, when it is anything else.
fn reescape(pattern: &mut Expr, esc: char) -> bool {
    fn literals(e: &Expr) -> bool {
        match e {
            Expr::Value(v) => matches!(v.value, sqlparser::ast::Value::SingleQuotedString(_)),
            Expr::BinaryOp { left, op: BinaryOperator::StringConcat, right } => literals(left) && literals(right),
            Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => literals(inner),
            _ => false,
        }
    }
    fn rewrite(e: &mut Expr, esc: char) {
        match e {
            Expr::Value(v) => {
                if let sqlparser::ast::Value::SingleQuotedString(s) = &mut v.value {
                    let mut out = String::with_capacity(s.len());
                    let mut chars = s.chars();
                    while let Some(c) = chars.next() {
                        if c == esc {
                            if let Some(next) = chars.next() {
                                out.push('\\');
                                out.push(next);
                            }
                        } else if c == '\\' {
                            out.push_str("\\\\");
                        } else {
                            out.push(c);
                        }
                    }
                    *s = out;
                }
            }
            Expr::BinaryOp { left, right, .. } => {
                rewrite(left, esc);
                rewrite(right, esc);
            }
            Expr::Nested(inner) | Expr::Cast { expr: inner, .. } => rewrite(inner, esc),
            _ => {}
        }
    }
    if !literals(pattern) {
        return false;
    }
    rewrite(pattern, esc);
    true
}

/// Refuses a catalog query that names a relation the catalog context does not have, before anything runs: a
/// system catalog Lakegate does not emulate is 42P01 (as PostgreSQL reports an unknown relation, which tools
/// handle), and a data table is 0A000, since catalog queries never read data.
fn check_relations(statement: &Statement) -> Result<(), SqlError> {
    #[derive(Default)]
    struct Names {
        ctes: std::collections::BTreeSet<String>,
        relations: Vec<Vec<String>>,
    }
    impl sqlparser::ast::Visitor for Names {
        type Break = ();
        fn pre_visit_query(&mut self, query: &sqlparser::ast::Query) -> ControlFlow<()> {
            for cte in query.with.iter().flat_map(|w| w.cte_tables.iter()) {
                self.ctes.insert(output_name(&cte.alias.name));
            }
            ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, factor: &sqlparser::ast::TableFactor) -> ControlFlow<()> {
            // Table functions (`unnest(...)`, `generate_series(...)`) are not relations.
            if let sqlparser::ast::TableFactor::Table { name, args: None, .. } = factor {
                self.relations.push(folded(name));
            }
            ControlFlow::Continue(())
        }
    }
    let mut names = Names::default();
    let _ = sqlparser::ast::Visit::visit(statement, &mut names);
    for parts in &names.relations {
        let known = match parts.as_slice() {
            [table] => names.ctes.contains(table) || tables::exists("pg_catalog", table),
            [schema, table] if SYSTEM_SCHEMAS.contains(&schema.as_str()) => tables::exists(schema, table),
            _ => {
                return Err(SqlError::Rewrite(crate::rewrite::RewriteError::Unsupported(format!(
                    "a catalog query cannot read {}: it sees only pg_catalog and information_schema; query data \
                     tables in statements of their own",
                    parts.join(".")
                ))));
            }
        };
        if !known {
            return Err(SqlError::Rewrite(crate::rewrite::RewriteError::UndefinedTable(parts.join("."))));
        }
    }
    Ok(())
}

/// A column's name as PostgreSQL reports it: unquoted identifiers fold to lower case.
fn output_name(i: &Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_ascii_lowercase() }
}

/// Rewrites PostgreSQL-only catalog syntax into what DataFusion plans: `pg_catalog.f()` -> `f()`,
/// `OPERATOR(pg_catalog.~)` -> `~`, `COLLATE ...` dropped, casts to `regclass`/`oid`-like types -> lookups.
fn normalize(sql: &str) -> Result<String, SqlError> {
    struct Normalizer;
    impl VisitorMut for Normalizer {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            let replacement = match expr {
                // `ARRAY(SELECT ...)`: every array a catalog holds here (options, ACLs, role memberships) is
                // NULL or empty, and DataFusion has no array subqueries.
                Expr::Function(f)
                    if matches!(f.args, sqlparser::ast::FunctionArguments::Subquery(_))
                        && f.name.to_string().eq_ignore_ascii_case("array") =>
                {
                    Some(Expr::value(sqlparser::ast::Value::Null))
                }
                // DataFusion's LIKE knows only the backslash as escape character: re-escape literal patterns.
                Expr::Like { pattern, escape_char, .. } | Expr::ILike { pattern, escape_char, .. } => {
                    if let Some(esc) = escape_char.as_ref().and_then(|v| single_char(&v.value))
                        && esc != '\\'
                        && reescape(pattern, esc)
                    {
                        *escape_char = None;
                    }
                    None
                }
                Expr::Function(f) => {
                    if let [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(name)] = f.name.0.as_slice()
                        && schema.value.eq_ignore_ascii_case("pg_catalog")
                    {
                        f.name = ObjectName::from(vec![Ident::new(name.value.to_ascii_lowercase())]);
                    }
                    // One-dimensional arrays only here: the upper bound is the length (as a bigint, which
                    // `generate_series` takes; DataFusion's length is unsigned).
                    if f.name.to_string().eq_ignore_ascii_case("array_upper") {
                        f.name = ObjectName::from(vec![Ident::new("array_length")]);
                        Some(Expr::Cast {
                            kind: CastKind::Cast,
                            expr: Box::new(Expr::Function(f.clone())),
                            data_type: SqlType::BigInt(None),
                            array: false,
                            format: None,
                        })
                    } else {
                        None
                    }
                }
                Expr::BinaryOp { op: BinaryOperator::PGCustomBinaryOperator(parts), .. } => {
                    let op = match parts.last().map(String::as_str) {
                        Some("~") => Some(BinaryOperator::PGRegexMatch),
                        Some("!~") => Some(BinaryOperator::PGRegexNotMatch),
                        Some("~*") => Some(BinaryOperator::PGRegexIMatch),
                        Some("=") => Some(BinaryOperator::Eq),
                        _ => None,
                    };
                    if let (Some(new), Expr::BinaryOp { op, .. }) = (op, &mut *expr) {
                        *op = new;
                    }
                    None
                }
                Expr::Collate { expr: inner, .. } => Some((**inner).clone()),
                Expr::Subquery(query) if empty::query_is_empty(query) => Some(Expr::value(sqlparser::ast::Value::Null)),
                Expr::Subquery(query) => {
                    // DataFusion plans a correlated scalar subquery only when it is aggregated; PostgreSQL
                    // requires at most one row anyway, so `max(x)` of that row is the same value.
                    if let sqlparser::ast::SetExpr::Select(select) = query.body.as_mut()
                        && let [
                            sqlparser::ast::SelectItem::UnnamedExpr(e)
                            | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. },
                        ] = select.projection.as_mut_slice()
                        && !is_aggregate(e)
                    {
                        *e = call("max", vec![e.clone()]);
                    }
                    None
                }
                Expr::Cast { expr: inner, data_type, kind, .. } => {
                    let full = data_type.to_string().to_ascii_lowercase();
                    match full.trim_start_matches("pg_catalog.") {
                        "regclass" => Some(call("lakegate_regclass", vec![(**inner).clone()])),
                        "regtype" | "regproc" | "regprocedure" | "regnamespace" | "regrole" => {
                            Some(call("lakegate_text", vec![(**inner).clone()]))
                        }
                        "oid" | "xid" | "cid" | "int2vector" | "oidvector" => Some(Expr::Cast {
                            kind: CastKind::Cast,
                            expr: inner.clone(),
                            data_type: SqlType::BigInt(None),
                            array: false,
                            format: None,
                        }),
                        "name" | "char" | "\"char\"" => Some(Expr::Cast {
                            kind: CastKind::Cast,
                            expr: inner.clone(),
                            data_type: SqlType::Text,
                            array: false,
                            format: None,
                        }),
                        _ => full.strip_prefix("pg_catalog.").and_then(|_| {
                            // `x::pg_catalog.text`: the same type without the schema, which DataFusion knows.
                            let bare = data_type.to_string();
                            let bare = bare.split_once('.').map(|(_, t)| t.to_owned()).unwrap_or(bare);
                            let ty =
                                Parser::new(&PostgreSqlDialect {}).try_with_sql(&bare).ok()?.parse_data_type().ok()?;
                            let _ = kind;
                            Some(Expr::Cast {
                                kind: CastKind::Cast,
                                expr: inner.clone(),
                                data_type: ty,
                                array: false,
                                format: None,
                            })
                        }),
                    }
                }
                _ => None,
            };
            if let Some(r) = replacement {
                *expr = r;
            }
            ControlFlow::Continue(())
        }
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| SqlError::Rewrite(crate::rewrite::RewriteError::Syntax(e.to_string())))?;
    let [statement] = statements.as_mut_slice() else {
        return Err(SqlError::Unsupported("one catalog query at a time".into()));
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err(SqlError::Rewrite(crate::rewrite::RewriteError::NotAllowed(
            "only queries may read the system catalogs".into(),
        )));
    }
    check_relations(statement)?;
    drop_columns_repeated_by_wildcards(statement);
    let _ = statement.visit(&mut Normalizer);
    // The text the catalog engine runs must read back as the statement checked here, as a rewritten statement's
    // must (`rewrite::print`: sqlparser's printer can write a string as text that reads as another).
    match print::text(statement) {
        Some(text) if print::reads_back(statement, &text, crate::rewrite::DEFAULT_PARSER_DEPTH) => Ok(text),
        _ => Err(SqlError::Unsupported("a catalog query whose text would not read back as written".into())),
    }
}

/// `SELECT c.oid, c.*` (DBeaver's every listing) names `c.oid` twice, which PostgreSQL allows and DataFusion
/// refuses (duplicate output names). The explicit column is dropped: the wildcard still returns it under the same
/// name, which is how tools read it (`getLong("oid")`).
fn drop_columns_repeated_by_wildcards(statement: &mut Statement) {
    struct Dropper;
    impl VisitorMut for Dropper {
        type Break = ();
        fn pre_visit_query(&mut self, query: &mut sqlparser::ast::Query) -> ControlFlow<()> {
            let sqlparser::ast::SetExpr::Select(select) = query.body.as_mut() else { return ControlFlow::Continue(()) };
            // `None` for `*`, which repeats every column; the qualifier for `q.*`.
            let wildcards: Vec<Option<String>> = select
                .projection
                .iter()
                .filter_map(|item| match item {
                    sqlparser::ast::SelectItem::Wildcard(_) => Some(None),
                    sqlparser::ast::SelectItem::QualifiedWildcard(
                        sqlparser::ast::SelectItemQualifiedWildcardKind::ObjectName(name),
                        _,
                    ) => folded(name).last().cloned().map(Some),
                    _ => None,
                })
                .collect();
            if wildcards.is_empty() {
                return ControlFlow::Continue(());
            }
            select.projection.retain(|item| {
                let sqlparser::ast::SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) = item else {
                    return true;
                };
                let [qualifier, _] = parts.as_slice() else { return true };
                !wildcards.iter().any(|w| w.as_ref().is_none_or(|w| *w == output_name(qualifier)))
            });
            ControlFlow::Continue(())
        }
    }
    let _ = statement.visit(&mut Dropper);
}

pub(super) fn is_aggregate(e: &Expr) -> bool {
    match e {
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            ["count", "max", "min", "sum", "avg", "array_agg", "string_agg", "bool_and", "bool_or", "json_agg", "every"]
                .contains(&name.trim_start_matches("pg_catalog."))
        }
        // `array_agg(...)::varchar` (DataGrip's ancestors and successors of a table): still one aggregated row.
        Expr::Cast { expr, .. } | Expr::Nested(expr) => is_aggregate(expr),
        _ => false,
    }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(sqlparser::ast::Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: sqlparser::ast::FunctionArguments::None,
        args: sqlparser::ast::FunctionArguments::List(sqlparser::ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| sqlparser::ast::FunctionArg::Unnamed(sqlparser::ast::FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

#[derive(Clone)]
struct Introspection {
    ctx: SessionContext,
}

impl Introspection {
    /// A catalog context showing `tables` (what the gate decided the principal may see).
    fn build(tables: &[VisibleTable], user: &str, form: CatalogForm) -> Result<Self, SqlError> {
        let view = tables::View::new(tables, user, form);
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_default_catalog_and_schema("lakegate", "pg_catalog")
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
            .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false);
        let ctx = SessionContext::new_with_state(crate::backend::fence::session_state(config));
        tables::register(&ctx, &view)?;
        functions::register(&ctx, &view);
        Ok(Introspection { ctx })
    }

    async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError> {
        let backend = crate::backend::embedded::Embedded::from_context(self.ctx.clone());
        backend.describe(sql).await
    }

    async fn parameter_types(&self, sql: &str) -> Result<Vec<Option<ColumnType>>, SqlError> {
        let backend = crate::backend::embedded::Embedded::from_context(self.ctx.clone());
        backend.parameter_types(sql).await
    }

    /// The rows of `sql`, and whether the same text gives the same rows again over this context.
    async fn query(&self, sql: &str) -> Result<(crate::rows::RowSet, bool), SqlError> {
        let backend = crate::backend::embedded::Embedded::from_context(self.ctx.clone());
        backend.query_repeatable(sql).await
    }
}

#[cfg(test)]
mod tests {
    use super::functions::format_type;
    use super::tables::typmod_of;
    use super::*;
    use crate::rows::Cell;

    fn visible(name: &str, columns: &[&str]) -> VisibleTable {
        VisibleTable {
            position: 0,
            name: lakegate_core::policy::filter::TableName::new("sales", name),
            columns: columns
                .iter()
                .map(|c| lakegate_core::policy::catalog::ColumnDef {
                    name: (*c).to_owned(),
                    sql_type: "text".into(),
                    tags: Default::default(),
                })
                .collect(),
        }
    }

    #[test]
    fn a_kept_catalog_context_serves_only_the_view_it_was_built_for() {
        let mut kept = KeptCatalog::default();
        let mut id = |tables, user, form| kept.view(tables, user, form).expect("built").engine.ctx.session_id();
        let orders = || vec![visible("orders", &["id", "region"])];
        let first = id(orders(), "alice", CatalogForm::Postgres);
        assert_eq!(id(orders(), "alice", CatalogForm::Postgres), first);
        // Any difference in what the gate let the principal see, or in who or which front asks, builds anew.
        for (tables, user, form) in [
            (vec![visible("orders", &["id"])], "alice", CatalogForm::Postgres),
            (vec![visible("orders", &["id", "region"]), visible("refunds", &["id"])], "alice", CatalogForm::Postgres),
            (orders(), "bob", CatalogForm::Postgres),
            (orders(), "alice", CatalogForm::Trino),
        ] {
            let other = id(tables, user, form);
            assert_ne!(other, first);
            let back = id(orders(), "alice", CatalogForm::Postgres);
            assert_ne!(back, first, "only the last view is kept");
        }
    }

    /// The rows of the catalog query `sql` over `tables` as alice sees them, and how many answers are kept.
    async fn answered(kept: &mut KeptCatalog, tables: Vec<VisibleTable>, sql: &str) -> (Vec<Vec<Cell>>, usize) {
        use futures::TryStreamExt;
        let normalized = normalize(sql).expect("a catalog query");
        let set = kept.answer(tables, "alice", CatalogForm::Postgres, &normalized).await.expect("answered");
        let rows = set.rows.try_collect().await.expect("rows");
        (rows, kept.0.as_ref().map_or(0, |k| k.answers.len()))
    }

    #[tokio::test]
    async fn a_catalog_answer_is_given_again_only_over_the_view_it_was_given_for() {
        let mut kept = KeptCatalog::default();
        let orders = || vec![visible("orders", &["id", "region"])];
        let both =
            || vec![visible("orders", &["id", "region"]), VisibleTable { position: 1, ..visible("refunds", &["id"]) }];
        let names = "SELECT c.relname, pg_catalog.format_type(a.atttypid, a.atttypmod) \
                     FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
                     WHERE c.relkind = 'r' AND a.attnum > 0 ORDER BY 1";
        let text = |name: &str| vec![Cell::Text(name.into()), Cell::Text("text".into())];

        let (first, count) = answered(&mut kept, orders(), names).await;
        assert_eq!(first, vec![text("orders"), text("orders")]);
        assert_eq!(count, 1, "a query of immutable functions is kept");
        assert_eq!(answered(&mut kept, orders(), names).await, (first.clone(), 1));

        // Another view: the answers kept over the old one are gone with it.
        let (second, count) = answered(&mut kept, both(), names).await;
        assert_eq!(second, vec![text("orders"), text("orders"), text("refunds")]);
        assert_eq!(count, 1);
        assert_eq!(answered(&mut kept, orders(), names).await, (first, 1));
    }

    #[tokio::test]
    async fn an_answer_too_large_to_keep_is_given_whole_and_not_kept() {
        let mut kept = KeptCatalog::default();
        let columns: Vec<String> = (0..20).map(|c| format!("a_rather_long_column_name_{c:02}")).collect();
        let columns: Vec<&str> = columns.iter().map(String::as_str).collect();
        let many = || -> Vec<VisibleTable> {
            (0..200).map(|t| VisibleTable { position: t, ..visible(&format!("table_{t:03}"), &columns) }).collect()
        };
        let sql = "SELECT c.relname, a.attname FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid WHERE a.attnum > 0";
        let (rows, count) = answered(&mut kept, many(), sql).await;
        assert_eq!(rows.len(), 200 * 20);
        assert_eq!(count, 0, "about 400 KiB of rows is more than a session keeps");
        assert_eq!(answered(&mut kept, many(), sql).await.0.len(), 200 * 20);
    }

    #[tokio::test]
    async fn a_catalog_query_calling_a_function_that_can_change_is_run_every_time() {
        let mut kept = KeptCatalog::default();
        let orders = || vec![visible("orders", &["id"])];
        for sql in [
            "SELECT relname, now() FROM pg_catalog.pg_class",
            "SELECT relname FROM pg_catalog.pg_class WHERE random() >= 0",
            "SELECT relname FROM pg_catalog.pg_class \
             WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_namespace WHERE current_date IS NOT NULL)",
        ] {
            let (rows, count) = answered(&mut kept, orders(), sql).await;
            assert_eq!(rows.len(), 1, "{sql}");
            assert_eq!(count, 0, "{sql}");
        }
    }

    #[tokio::test]
    async fn only_a_text_recognised_as_one_catalog_query_that_passed_the_check_is_kept_as_read() {
        let readings = Readings::default();
        let listing = "SELECT relname FROM pg_catalog.pg_class WHERE relkind = 'r'";
        let first = readings.read(listing).expect("a catalog query");
        assert_eq!(readings.len(), 1);
        // Refused, or not a catalog query (though the normaliser takes it): never kept, so `Session::prepare`
        // cannot take a data query, or a refused one, for a known catalog text.
        for sql in [
            "SELECT relname FROM pg_catalog.pg_class, sales.orders",
            "SELECT * FROM pg_catalog.pg_no_such_catalog",
            "SELECT 1",
            "SELECT region FROM sales.orders",
        ] {
            let _ = readings.read(sql);
            assert_eq!(readings.len(), 1, "{sql}");
        }
        assert!(readings.read("SELECT relname FROM pg_catalog.pg_class, sales.orders").is_err());
        assert_eq!(readings.read(listing).expect("read again").normalized, first.normalized);
    }

    #[tokio::test]
    async fn a_parameter_takes_the_type_it_is_cast_to_as_in_postgresql() {
        let sql = "SELECT attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                   WHERE a.attcollation != $1::INTEGER AND a.attnum > $2::SMALLINT AND c.relname = $3::VARCHAR \
                   AND c.oid = $4::oid AND a.attidentity != $5::CHAR AND $6::int8 = $6::text";
        use ColumnType::*;
        assert_eq!(
            parameter_types(&Readings::default(), sql).await,
            [Some(Int4), Some(Int2), Some(Text), Some(Int8), Some(Text), None],
            "$6 is cast to two types"
        );
        assert_eq!(parameter_types(&Readings::default(), "SELECT relname FROM pg_catalog.pg_class").await, []);
    }

    #[tokio::test]
    async fn a_parameter_without_a_cast_takes_the_type_of_what_it_is_compared_with() {
        let readings = Readings::default();
        let sql = "SELECT attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                   WHERE c.oid = $1 AND a.attnum > $2 AND c.relname = $3 AND a.attnotnull = $4 \
                   AND a.attcollation != $5::INTEGER AND $6::int8 = $6::text";
        use ColumnType::*;
        let expected = [Some(Int8), Some(Int2), Some(Text), Some(Bool), Some(Int4), None];
        assert_eq!(parameter_types(&readings, sql).await, expected, "a cast still wins; two casts still say text");
        assert_eq!(parameter_types(&readings, sql).await, expected, "asked again, from the kept reading");
        // A text the engine cannot plan leaves an uncast parameter text, as before; the error is the Bind's.
        let unplanned = "SELECT relname FROM pg_catalog.pg_class WHERE no_such_column = $1 AND relpages > $2::int4";
        assert_eq!(parameter_types(&readings, unplanned).await, [None, Some(Int4)]);
    }

    #[tokio::test]
    async fn a_catalog_text_is_described_as_the_engine_plans_it_every_time() {
        let readings = Readings::default();
        let sql = "SELECT c.relname, c.oid::regclass AS name, n.nspname FROM pg_catalog.pg_class c \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace";
        let first = describe(&readings, sql).await.expect("described");
        let names: Vec<&str> = first.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["relname", "name", "nspname"]);
        assert_eq!(describe(&readings, sql).await.expect("described again"), first);
        let empty = "SELECT conname FROM pg_catalog.pg_constraint";
        assert_eq!(describe(&readings, empty).await.expect("described").len(), 1);
    }

    #[test]
    fn system_catalog_references_are_recognised_in_any_spelling() {
        for sql in [
            "select * from pg_catalog.pg_class",
            "SELECT * FROM PG_CATALOG.PG_CLASS",
            "select * from pg_class",
            "select table_name from information_schema.tables",
            "select pg_catalog.version()",
            "select * from \"pg_catalog\".\"pg_class\"",
            "select * from Information_Schema.Columns",
        ] {
            assert!(is_catalog_query(sql), "{sql}");
        }
        assert!(!is_catalog_query("select * from sales.orders"));
        // Text that merely mentions a catalog is not a catalog query.
        assert!(!is_catalog_query("select * from sales.orders where customer = 'pg_catalog.pg_class'"));
    }

    #[test]
    fn catalog_syntax_is_normalised_for_the_engine() {
        let sql = normalize(
            "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid)",
        )
        .expect("normalises");
        assert!(sql.contains("~ '^(orders)$'"), "{sql}");
        assert!(sql.contains("pg_table_is_visible(c.oid)") && !sql.contains("pg_catalog.pg_table"), "{sql}");
    }

    #[test]
    fn a_query_that_must_inner_join_an_empty_catalog_has_no_rows() {
        // SQLAlchemy's primary-key reflection: pg_index is inner-joined inside a derived table.
        let pk = "SELECT attr.conrelid, attr.conname FROM (SELECT con.conrelid, con.conname FROM pg_catalog.pg_attribute \
                  JOIN (SELECT c.conrelid, c.conname FROM pg_catalog.pg_constraint c JOIN pg_catalog.pg_index i \
                  ON c.conindid = i.indexrelid) AS con ON true) AS attr GROUP BY attr.conrelid, attr.conname";
        let columns = empty_result(pk).expect("empty by shape");
        assert_eq!(columns.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["conrelid", "conname"]);
        // A LEFT JOIN to an empty catalog keeps the left side's rows; an aggregate without GROUP BY has a row.
        assert!(empty_result("SELECT c.relname FROM pg_class c LEFT JOIN pg_index i ON i.indrelid = c.oid").is_none());
        assert!(empty_result("SELECT count(*) FROM pg_catalog.pg_index").is_none());
        // An aggregate inside a scalar subquery does not make the outer SELECT an aggregate.
        assert!(empty_result("SELECT (SELECT max(oid) FROM pg_class) FROM pg_catalog.pg_proc").is_some());
        assert!(empty_result("SELECT relname FROM pg_class UNION SELECT proname FROM pg_proc").is_none());
    }

    #[test]
    fn catalog_queries_name_only_catalog_relations() {
        let code = |sql: &str| normalize(sql).err().map(|e| e.sqlstate().to_owned());
        assert_eq!(code("SELECT * FROM pg_catalog.pg_stat_activity"), Some("42P01".into()));
        assert_eq!(code("SELECT * FROM pg_class, sales.orders"), Some("0A000".into()));
        assert_eq!(code("SELECT * FROM pg_class WHERE oid IN (SELECT 1 FROM hr.employees)"), Some("0A000".into()));
        assert_eq!(code("SELECT * FROM information_schema.role_table_grants"), Some("42P01".into()));
        assert_eq!(code("WITH t AS (SELECT relname FROM pg_class) SELECT * FROM t"), None);
        assert_eq!(code("SELECT x FROM pg_catalog.unnest(ARRAY[1]) x, pg_class"), None);
    }

    #[test]
    fn a_catalog_querys_strings_are_run_as_written() {
        // Each string holds `\'`, which sqlparser alone prints undoubled: the engine would read the string as
        // ending at the backslash, and what follows it in the string (a UNION of a relation never checked) as
        // syntax. Written by `rewrite::print`, the string stays one string and the query one SELECT.
        for (sql, literal) in [
            (
                r"SELECT relname FROM pg_class WHERE relname = 'x\'' UNION SELECT rolname FROM pg_roles --'",
                r"= 'x\'' UNION SELECT rolname FROM pg_roles --'",
            ),
            (
                r"SELECT relname FROM pg_class WHERE relname LIKE 'a!'' UNION SELECT rolname FROM pg_roles --' ESCAPE '!'",
                r"LIKE 'a\'' UNION SELECT rolname FROM pg_roles --'",
            ),
        ] {
            let text = normalize(sql).expect("normalises");
            assert!(text.ends_with(literal), "{text}");
            let read = Parser::parse_sql(&PostgreSqlDialect {}, &text).unwrap();
            assert!(
                matches!(&read[..], [Statement::Query(q)] if matches!(*q.body, sqlparser::ast::SetExpr::Select(_))),
                "{text}"
            );
        }
        // A quote doubled in an ordinary string reads back as written.
        let sql = normalize("SELECT relname FROM pg_class WHERE relname = 'o''brien'").expect("normalises");
        assert!(sql.ends_with("'o''brien'"), "{sql}");
    }

    #[test]
    fn like_patterns_with_another_escape_character_are_re_escaped() {
        let sql = normalize("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg/_' || '%' ESCAPE '/'")
            .expect("normalises");
        assert!(sql.contains(r"NOT LIKE 'pg\_' || '%'") && !sql.contains("ESCAPE"), "{sql}");
        let sql = normalize(r"SELECT 1 FROM pg_class WHERE relname LIKE 'a\b#%' ESCAPE '#'").expect("normalises");
        assert!(sql.contains(r"LIKE 'a\\b\%'"), "{sql}");
    }

    #[test]
    fn connection_functions_without_relations_are_catalog_queries() {
        // DBeaver's and DataGrip's first questions: answered from the principal, reading nothing.
        assert!(is_catalog_query("SELECT current_schema(),session_user"));
        assert!(is_catalog_query("select current_database(), current_schema(), current_user"));
        // With a relation, the rewriter decides as for any data query.
        assert!(!is_catalog_query("select current_user, customer from sales.orders"));
        assert!(!is_catalog_query("select current_schema()"));
    }

    #[test]
    fn a_batch_of_statements_is_split_and_one_statement_is_not() {
        let parts = statements("SELECT version();\nSELECT oid FROM pg_type;\n").expect("two statements");
        assert_eq!(parts, ["SELECT version()", "SELECT oid FROM pg_type"]);
        assert!(statements("SELECT oid FROM pg_type;").is_none());
    }

    #[test]
    fn a_column_repeated_by_a_wildcard_is_named_once() {
        let sql = normalize("SELECT db.oid,db.* FROM pg_catalog.pg_database db WHERE datname='lakegate'")
            .expect("normalises");
        assert!(sql.starts_with("SELECT db.* FROM"), "{sql}");
        // A column of another relation is not repeated by `db.*`.
        let sql = normalize("SELECT n.oid, c.* FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace")
            .expect("normalises");
        assert!(sql.starts_with("SELECT n.oid, c.*"), "{sql}");
    }

    #[test]
    fn a_cast_aggregate_in_a_correlated_subquery_is_not_aggregated_again() {
        // DataGrip's table listing: `array_agg(...)::varchar` is one row already; `max` of it would nest aggregates.
        let sql = normalize(
            "select (select pg_catalog.array_agg(inhparent::bigint order by inhseqno)::varchar from \
             pg_catalog.pg_inherits where T.oid = inhrelid) as ancestors from pg_catalog.pg_class T",
        )
        .expect("normalises");
        assert!(!sql.contains("max(") && sql.contains("array_agg("), "{sql}");
        // A plain column still is: PostgreSQL allows at most one row, DataFusion plans only an aggregate.
        let sql = normalize("select (select relname from pg_class c where c.oid = a.attrelid) from pg_attribute a")
            .expect("normalises");
        assert!(sql.contains("max(relname)"), "{sql}");
    }

    #[test]
    fn type_modifiers_follow_postgresql() {
        assert_eq!(format_type("numeric", typmod_of("numeric(12,2)")), "numeric(12,2)");
        assert_eq!(typmod_of("text"), -1);
    }
}

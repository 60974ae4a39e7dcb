//! Turning a [`TableFilter`] into SQL: the row filter, the column expressions with their masks, and the
//! derived table that replaces every reference to a governed table.
//!
//! Filter and mask strings come from the policy module. They are parsed here and validated against a
//! small grammar (the table's columns, `principal.<attr>`, literals, allowed operators and functions) so a
//! broken or malicious policy cannot smuggle in a subquery or a file-reading function.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use sqlparser::ast::{
    DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectName, Query, SelectItem, SetExpr,
    TableFactor, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use crate::rewrite::ast::{
    and_all, call, case, cast, concat_op, fold, int_lit, null_lit, or_all, qcolumn, qident, qname, string_lit,
};
use crate::rewrite::error::RewriteError;
use crate::rewrite::filter::{ColumnAccess, Condition, Mask, Operation, TableDef, TableFilter, TableName};
use crate::rewrite::functions::{FnContext, allowed_binary, allowed_function, allowed_type, allowed_unary};

/// Deepest nesting accepted in one policy expression.
const POLICY_DEPTH: usize = 64;

/// What the rewriter applied for one reference to a governed table, for the audit event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedFilter {
    /// The governed table.
    pub table: TableName,
    /// The permission the filter was asked for.
    pub operation: Operation,
    /// The name the statement refers to the table by (its alias, or the table's name).
    pub alias: String,
    /// The row filter as SQL, `None` when every row is visible.
    pub row_filter: Option<String>,
    /// Each visible column with the SQL expression it is shown as (the bare column when clear).
    pub columns: Vec<(String, String)>,
}

/// How a policy expression refers to a column of its table.
pub(crate) type ColumnRef<'a> = &'a dyn Fn(&str) -> Expr;

/// The environment a policy expression is checked and built in.
pub(crate) struct PolicyEnv<'a> {
    pub table: &'a TableDef,
    /// When set, only this column may be named (masks are expressions of their own column).
    pub only_column: Option<&'a str>,
    pub column_ref: ColumnRef<'a>,
    pub principal: &'a BTreeMap<String, String>,
}

impl PolicyEnv<'_> {
    fn error(&self, reason: impl Into<String>) -> RewriteError {
        RewriteError::Policy { table: self.table.name.to_string(), reason: reason.into() }
    }
}

/// Parses one policy expression and rewrites it for `env`: columns become `env.column_ref`, principal
/// attributes become string literals (NULL when absent, so the filter fails closed).
pub(crate) fn policy_expr(text: &str, env: &PolicyEnv<'_>) -> Result<Expr, RewriteError> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .with_recursion_limit(POLICY_DEPTH)
        .try_with_sql(text)
        .map_err(|e| env.error(format!("cannot parse `{text}`: {e}")))?;
    let mut expr = parser.parse_expr().map_err(|e| env.error(format!("cannot parse `{text}`: {e}")))?;
    if parser.peek_token().token != Token::EOF {
        return Err(env.error(format!("trailing text after expression `{text}`")));
    }
    walk_policy(&mut expr, env, 0)?;
    Ok(expr)
}

fn walk_policy(e: &mut Expr, env: &PolicyEnv<'_>, depth: usize) -> Result<(), RewriteError> {
    if depth > POLICY_DEPTH {
        return Err(env.error("expression nested too deeply"));
    }
    let d = depth + 1;
    match e {
        Expr::Identifier(ident) => {
            let name = fold(ident);
            let allowed = env.table.column(&name).is_some() && env.only_column.is_none_or(|only| only == name);
            if !allowed {
                return Err(env.error(format!("column {name} may not be named here")));
            }
            *e = (env.column_ref)(&name);
        }
        Expr::CompoundIdentifier(parts) => {
            let literal = match parts.as_slice() {
                [head, attr] if fold(head) == "principal" => match env.principal.get(&fold(attr)) {
                    // Built as a literal node: the printer escapes it, so `O'Brien` stays a value.
                    Some(v) => string_lit(v),
                    None => null_lit(),
                },
                _ => return Err(env.error("only principal.<attribute> may be qualified")),
            };
            *e = literal;
        }
        Expr::Value(v) => {
            if matches!(v.value, Value::Placeholder(_)) {
                return Err(env.error("placeholders are not allowed in policies"));
            }
        }
        Expr::Nested(inner)
        | Expr::IsNull(inner)
        | Expr::IsNotNull(inner)
        | Expr::IsTrue(inner)
        | Expr::IsNotTrue(inner)
        | Expr::IsFalse(inner)
        | Expr::IsNotFalse(inner)
        | Expr::IsUnknown(inner)
        | Expr::IsNotUnknown(inner) => walk_policy(inner, env, d)?,
        Expr::UnaryOp { op, expr } => {
            if !allowed_unary(op) {
                return Err(env.error(format!("operator {op} is not allowed")));
            }
            walk_policy(expr, env, d)?;
        }
        Expr::BinaryOp { left, op, right } => {
            if !allowed_binary(op) {
                return Err(env.error(format!("operator {op} is not allowed")));
            }
            walk_policy(left, env, d)?;
            walk_policy(right, env, d)?;
        }
        Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
            walk_policy(a, env, d)?;
            walk_policy(b, env, d)?;
        }
        Expr::InList { expr, list, .. } => {
            walk_policy(expr, env, d)?;
            for item in list {
                walk_policy(item, env, d)?;
            }
        }
        Expr::Between { expr, low, high, .. } => {
            walk_policy(expr, env, d)?;
            walk_policy(low, env, d)?;
            walk_policy(high, env, d)?;
        }
        Expr::Like { any: false, expr, pattern, .. } | Expr::ILike { any: false, expr, pattern, .. } => {
            walk_policy(expr, env, d)?;
            walk_policy(pattern, env, d)?;
        }
        Expr::Case { operand, conditions, else_result, .. } => {
            if let Some(op) = operand {
                walk_policy(op, env, d)?;
            }
            for arm in conditions {
                walk_policy(&mut arm.condition, env, d)?;
                walk_policy(&mut arm.result, env, d)?;
            }
            if let Some(r) = else_result {
                walk_policy(r, env, d)?;
            }
        }
        Expr::Cast { expr, data_type, format: None, .. } => {
            if !allowed_type(data_type) {
                return Err(env.error(format!("cast to {data_type} is not allowed")));
            }
            walk_policy(expr, env, d)?;
        }
        Expr::AnyOp { left, right, .. } | Expr::AllOp { left, right, .. } => {
            walk_policy(left, env, d)?;
            walk_policy(right, env, d)?;
        }
        Expr::Array(array) => {
            for item in &mut array.elem {
                walk_policy(item, env, d)?;
            }
        }
        Expr::Function(f) => {
            let name = allowed_function(&f.name, FnContext::Policy)
                .ok_or_else(|| env.error(format!("function {} is not allowed", f.name)))?;
            let simple = !f.uses_odbc_syntax
                && matches!(f.parameters, FunctionArguments::None)
                && f.filter.is_none()
                && f.null_treatment.is_none()
                && f.over.is_none()
                && f.within_group.is_empty();
            if !simple {
                return Err(env.error(format!("only plain calls of {name} are allowed")));
            }
            f.name = ObjectName::from(vec![Ident::new(name)]);
            match &mut f.args {
                FunctionArguments::None => {}
                FunctionArguments::Subquery(_) => {
                    return Err(env.error("subqueries are not allowed in policies"));
                }
                FunctionArguments::List(list) => {
                    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
                        return Err(env.error("function argument clauses are not allowed"));
                    }
                    for arg in &mut list.args {
                        match arg {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(a)) => walk_policy(a, env, d)?,
                            _ => return Err(env.error("only plain function arguments are allowed")),
                        }
                    }
                }
            }
        }
        Expr::Substring { expr, substring_from, substring_for, .. } => {
            walk_policy(expr, env, d)?;
            if let Some(x) = substring_from {
                walk_policy(x, env, d)?;
            }
            if let Some(x) = substring_for {
                walk_policy(x, env, d)?;
            }
        }
        Expr::Extract { expr, .. } => walk_policy(expr, env, d)?,
        Expr::TypedString(ts) => {
            if !allowed_type(&ts.data_type) {
                return Err(env.error(format!("literal of type {} is not allowed", ts.data_type)));
            }
        }
        other => {
            return Err(env.error(format!("expression `{other}` is not allowed in a policy")));
        }
    }
    Ok(())
}

/// The row filter of `filter` (permissive union AND restrictive conditions); `None` when every row passes.
/// The caller has already refused an empty permissive list.
pub(crate) fn row_filter(
    filter: &TableFilter,
    def: &TableDef,
    column_ref: ColumnRef<'_>,
) -> Result<Option<Expr>, RewriteError> {
    let env = PolicyEnv { table: def, only_column: None, column_ref, principal: &filter.principal };
    // A permit without a filter makes the whole union TRUE, whatever the other permits say.
    let permissive = if filter.permissive.iter().any(Option::is_none) {
        None
    } else {
        let parts = filter.permissive.iter().flatten().map(|t| policy_expr(t, &env)).collect::<Result<Vec<_>, _>>()?;
        or_all(parts)
    };
    let mut parts: Vec<Expr> = permissive.into_iter().collect();
    for text in &filter.restrictive {
        parts.push(policy_expr(text, &env)?);
    }
    Ok(and_all(parts))
}

/// A condition resolved to SQL.
enum Cond {
    Always,
    Never,
    When(Box<Expr>),
}

fn condition(c: &Condition, env: &PolicyEnv<'_>) -> Result<Cond, RewriteError> {
    Ok(match c {
        Condition::Always => Cond::Always,
        Condition::Never => Cond::Never,
        Condition::AnyOf(list) => {
            let parts = list.iter().map(|t| policy_expr(t, env)).collect::<Result<Vec<_>, _>>()?;
            match or_all(parts) {
                Some(e) => Cond::When(Box::new(e)),
                None => Cond::Never,
            }
        }
    })
}

/// Parses a catalog type string (`integer`, `numeric(10,2)`).
pub(crate) fn parse_type(text: &str, table: &TableName) -> Result<DataType, RewriteError> {
    let dialect = PostgreSqlDialect {};
    let err = |e: String| RewriteError::Policy {
        table: table.to_string(),
        reason: format!("cannot parse type `{text}`: {e}"),
    };
    let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| err(e.to_string()))?;
    let ty = parser.parse_data_type().map_err(|e| err(e.to_string()))?;
    if parser.peek_token().token != Token::EOF {
        return Err(err("trailing text".into()));
    }
    Ok(ty)
}

fn is_text_type(ty: &str) -> bool {
    let t = ty.trim().to_ascii_lowercase();
    ["text", "varchar", "character", "char", "bpchar", "citext", "name"].iter().any(|p| t.starts_with(p))
}

/// The expression a visible column is shown as:
/// `CASE WHEN <clear> THEN col WHEN <masked> THEN mask(col) ELSE NULL END`, simplified where a
/// condition is `Always` or `Never`.
pub(crate) fn column_expr(
    access: &ColumnAccess,
    filter: &TableFilter,
    def: &TableDef,
    column_ref: ColumnRef<'_>,
) -> Result<Expr, RewriteError> {
    let col = def.column(&access.name).ok_or_else(|| RewriteError::Policy {
        table: def.name.to_string(),
        reason: format!("column {} is not in the catalog", access.name),
    })?;
    let env = PolicyEnv { table: def, only_column: None, column_ref, principal: &filter.principal };
    let raw = column_ref(&col.name);
    let clear = condition(&access.clear, &env)?;
    if let Cond::Always = clear {
        return Ok(raw);
    }
    let typed_null = || -> Result<Expr, RewriteError> { Ok(cast(null_lit(), parse_type(&col.data_type, &def.name)?)) };
    let masked = match &access.masked {
        None => None,
        Some((mask, when)) => match condition(when, &env)? {
            Cond::Never => None,
            c => Some((mask, c)),
        },
    };
    let Some((mask, mask_when)) = masked else {
        return Ok(match clear {
            Cond::When(c) => case(vec![(*c, raw)], Some(null_lit())),
            _ => typed_null()?,
        });
    };
    let text_mask = matches!(mask, Mask::Redact | Mask::Last4 | Mask::Hash);
    let mask_expr = match mask {
        Mask::Redact => cast(string_lit("****"), DataType::Text),
        Mask::Last4 => {
            concat_op(string_lit("************"), call("right", vec![cast(raw.clone(), DataType::Text), int_lit(4)]))
        }
        Mask::Hash => call("md5", vec![cast(raw.clone(), DataType::Text)]),
        Mask::Null => typed_null()?,
        Mask::Expr(text) => {
            let only = PolicyEnv { only_column: Some(&col.name), ..env };
            policy_expr(text, &only)?
        }
    };
    // CASE branches must share a type: a text mask over a non-text column shows the clear value as text.
    let clear_value = if text_mask && !is_text_type(&col.data_type) { cast(raw, DataType::Text) } else { raw };
    Ok(match (clear, mask_when) {
        (Cond::When(c), Cond::Always) => case(vec![(*c, clear_value)], Some(mask_expr)),
        (Cond::When(c), Cond::When(m)) => case(vec![(*c, clear_value), (*m, mask_expr)], Some(null_lit())),
        (_, Cond::Always) => mask_expr,
        (_, Cond::When(m)) => case(vec![(*m, mask_expr)], Some(null_lit())),
        // `Never` was folded into `None` above.
        (_, Cond::Never) => typed_null()?,
    })
}

/// A constant template statement, parsed once into `parsed` and cloned for each use (a clone of a few nodes
/// costs far less than parsing on every statement). Templates are fixed text in this crate; user values are put
/// into the resulting AST as nodes, never spliced into the text.
pub(crate) fn template_query(
    parsed: &'static OnceLock<Result<Query, String>>,
    text: &'static str,
) -> Result<Query, RewriteError> {
    let template = parsed.get_or_init(|| {
        let dialect = PostgreSqlDialect {};
        let mut parser = Parser::new(&dialect).try_with_sql(text).map_err(|e| e.to_string())?;
        parser.parse_query().map(|q| *q).map_err(|e| e.to_string())
    });
    template.clone().map_err(RewriteError::Internal)
}

/// The governed view of a table: `SELECT <visible columns> FROM "schema"."table" WHERE <row filter>
/// OFFSET 0` (the `OFFSET 0` only when there is a row filter). `OFFSET 0` is PostgreSQL's optimisation fence: it keeps the planner from pulling the
/// subquery up or pushing the user's predicates below the row filter, where a predicate that raises an
/// error (`1/(amount-1234)`) would otherwise run on hidden rows and reveal them.
pub(crate) fn governed_view(
    def: &TableDef,
    filter: &TableFilter,
    alias: &str,
    fence: bool,
) -> Result<(Query, AppliedFilter), RewriteError> {
    let table_ref = |c: &str| qcolumn(&def.name.name, c);
    let selection = row_filter(filter, def, &table_ref)?;
    let mut projection = Vec::with_capacity(filter.columns.len());
    let mut applied_columns = Vec::with_capacity(filter.columns.len());
    for access in &filter.columns {
        let expr = column_expr(access, filter, def, &table_ref)?;
        applied_columns.push((access.name.clone(), expr.to_string()));
        projection.push(SelectItem::ExprWithAlias { expr, alias: qident(&access.name) });
    }
    if projection.is_empty() {
        // Nothing to show; counting rows alone is not a permission PostgreSQL grants either.
        return Err(RewriteError::TableDenied(def.name.name.clone()));
    }
    static VIEW: OnceLock<Result<Query, String>> = OnceLock::new();
    let mut query = template_query(&VIEW, "SELECT 1 FROM t OFFSET 0")?;
    let SetExpr::Select(select) = query.body.as_mut() else {
        return Err(RewriteError::Internal("view template is not a SELECT".into()));
    };
    select.projection = projection;
    let Some(TableFactor::Table { name, .. }) = select.from.first_mut().map(|t| &mut t.relation) else {
        return Err(RewriteError::Internal("view template has no table".into()));
    };
    *name = qname(&[&def.name.schema, &def.name.name]);
    select.selection = selection.clone();
    // Without a row filter there are no hidden rows for a user's predicate to run on, so the fence would
    // only cost index use (a point query would scan the whole table).
    if !fence || selection.is_none() {
        query.limit_clause = None;
    }
    let applied = AppliedFilter {
        table: def.name.clone(),
        operation: Operation::Select,
        alias: alias.to_string(),
        row_filter: selection.map(|e| e.to_string()),
        columns: applied_columns,
    };
    Ok((query, applied))
}

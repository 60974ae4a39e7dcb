//! A rewritten statement in Spark SQL's dialect.
//!
//! The rewriter speaks PostgreSQL, and Spark reads text differently: a backslash escapes in a string literal, a
//! double-quoted word is a string, `${...}` is substituted from configuration and the environment. Text passed on
//! as PostgreSQL wrote it could lex into a different statement on Spark, and a literal could become syntax. So the
//! statement is translated in two steps:
//!
//! 1. On the syntax tree: governed table references become the temporary views the backend registered, or for an
//!    Iceberg table a view named for this statement alone (keeping the table's name as the alias the rewriter's
//!    column references use), and types, functions and operators become Spark's. Whatever has no Spark counterpart with the same meaning is refused, never guessed.
//! 2. Token by token: every token of the result is written in the one form Spark's lexer reads as the same token
//!    (identifiers in backticks, literals with Spark's escapes, `$` escaped), separated by spaces so that no two
//!    tokens can run together. A token without such a form is refused.
//!
//! An INSERT becomes the query of the rows it appends, every column of the table in order (a column the INSERT
//! does not set is NULL), which the backend appends to the table's view; the rewriter's WITH CHECK raise becomes
//! Spark's `raise_error`. UPDATE and DELETE are refused: Parquet and CSV files cannot change rows in place. Writes to
//! Iceberg tables are refused too: Spark would write files no Iceberg snapshot lists.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;

use sqlparser::ast::{
    BinaryOperator, DataType, ExactNumberInfo, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    ObjectName, ObjectNamePart, Statement, TableAlias, TableFactor, TableObject, TimezoneInfo, UnaryOperator, Value,
    VisitMut, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer, Whitespace};

use crate::error::SqlError;

/// The prefix of the views the backend registers; no name in a statement may start with it.
pub(super) const VIEW_PREFIX: &str = "lakegate_";

/// The temporary view a governed table is registered as. The length prefix keeps the mapping one-to-one
/// (`a_b.c` and `a.b_c` differ).
pub(super) fn view_name(database: &str, table: &str) -> String {
    format!("{VIEW_PREFIX}{}_{database}_{table}", database.len())
}

/// The view of the `n`th Iceberg table statement `statement` reads. No [`view_name`] has this form (a database
/// name is never empty, and a statement id never starts with `_`), and statement ids are unique, so statements
/// running at once in the backend's one Spark session never name each other's views.
fn snapshot_view_name(statement: &str, n: usize) -> String {
    format!("{VIEW_PREFIX}0_{statement}_{n}")
}

/// What to do with `$n` placeholders: a statement to run has them bound already; one to describe may still
/// carry them, and NULL gives its result columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Placeholders {
    Refuse,
    Null,
}

/// Functions that mean the same on Spark as on PostgreSQL, under the same name.
const SAME: &[&str] = &[
    "abs",
    "array_agg",
    "avg",
    "bool_and",
    "bool_or",
    "btrim",
    "cardinality",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "coalesce",
    "concat_ws",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "current_date",
    "current_timestamp",
    "date_part",
    "date_trunc",
    "dense_rank",
    "every",
    "exp",
    "first_value",
    "floor",
    "greatest",
    "initcap",
    "lag",
    "last_value",
    "lead",
    "least",
    "left",
    "length",
    "ln",
    "localtimestamp",
    "lower",
    "lpad",
    "ltrim",
    "make_date",
    "max",
    "md5",
    "min",
    "mod",
    "mode",
    "now",
    "nth_value",
    "ntile",
    "nullif",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pi",
    "power",
    "random",
    "rank",
    "regexp_replace",
    "repeat",
    "replace",
    "reverse",
    "right",
    "round",
    "row_number",
    "rpad",
    "rtrim",
    "sign",
    "split_part",
    "sqrt",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "substr",
    "sum",
    "translate",
    "upper",
    "var_pop",
    "var_samp",
    "variance",
];

/// Functions Spark has under another name.
const RENAMED: &[(&str, &str)] = &[("starts_with", "startswith"), ("strpos", "instr")];

/// A statement in Spark SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SparkSql {
    pub(super) text: String,
    /// The views it reads. Spark lists a view's files when the view is registered and never again by itself, so
    /// the backend refreshes these before the statement runs: files added or compacted away since are seen.
    pub(super) reads: BTreeSet<String>,
    /// The Iceberg tables it reads, each under the view name the text gives it, `(database, table)`: the backend
    /// sends each with the statement, over the files of the table's current snapshot.
    pub(super) snapshots: BTreeMap<String, (String, String)>,
}

/// An INSERT as Spark runs it: the query of the rows to append, every column of the table in order, and the view
/// of the table they are appended to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SparkInsert {
    pub(super) view: String,
    pub(super) rows: SparkSql,
}

/// A table of the backend: its columns in order with their catalog types, and how Spark finds its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Table {
    pub(super) columns: Vec<(String, String)>,
    /// An Iceberg table, read from its current snapshot's files, which each statement names anew; otherwise a view
    /// over the table's location, registered once.
    pub(super) iceberg: bool,
}

/// The tables of the backend, by `(database, table)`.
pub(super) type Tables = BTreeMap<(String, String), Table>;

/// Translates one rewritten query (PostgreSQL dialect) to Spark SQL. `tables` holds the backend's tables; any other
/// two-part name is refused. `statement` is unique to this statement: it names the views of its Iceberg tables.
pub(super) fn to_spark(
    sql: &str,
    tables: &Tables,
    statement: &str,
    placeholders: Placeholders,
) -> Result<SparkSql, SqlError> {
    let mut statement_ast = parse_one(sql)?;
    match statement_ast {
        Statement::Query(_) => translate(&mut statement_ast, tables, statement, placeholders),
        Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
            Err(SqlError::Internal("a write reached the Spark backend as a query".into()))
        }
        _ => Err(unsupported("a statement other than a query or INSERT")),
    }
}

/// Translates one rewritten INSERT to the rows it appends (see the module's comment). `tables` and `statement` as
/// for [`to_spark`].
pub(super) fn insert_to_spark(sql: &str, tables: &Tables, statement: &str) -> Result<SparkInsert, SqlError> {
    let insert = match parse_one(sql)? {
        Statement::Insert(insert) => insert,
        Statement::Update(_) | Statement::Delete(_) => {
            return Err(unsupported("UPDATE and DELETE (the backend appends files: it cannot change rows in place)"));
        }
        _ => return Err(SqlError::Internal("a statement that is not a write reached the Spark backend as one".into())),
    };
    let TableObject::TableName(name) = &insert.table else {
        return Err(SqlError::Internal("INSERT into a table function".into()));
    };
    let (db, table) = match ident_parts(name).as_deref() {
        Some([db, table]) => (db.value.clone(), table.value.clone()),
        _ => return Err(SqlError::Internal(format!("{name} is not a table of this backend"))),
    };
    let target = tables
        .get(&(db.clone(), table.clone()))
        .ok_or_else(|| SqlError::Internal(format!("{name} is not a table of this backend")))?;
    if target.iceberg {
        return Err(unsupported(
            "INSERT into an Iceberg table (Spark would write files no snapshot lists; commit through the Iceberg \
             catalog)",
        ));
    }
    let columns = &target.columns;
    let set: Vec<String> = insert
        .columns
        .iter()
        .map(|c| match ident_parts(c).as_deref() {
            Some([one]) if columns.iter().any(|(name, _)| *name == one.value) => Ok(one.value.clone()),
            _ => Err(SqlError::Internal(format!("INSERT column {c} is not a column of {name}"))),
        })
        .collect::<Result<_, _>>()?;
    let source = insert.source.as_ref().ok_or_else(|| SqlError::Internal("INSERT without a source".into()))?;
    // Built as PostgreSQL text and translated like any query: the source's own names, literals and functions
    // pass the same checks, and the views it reads are refreshed.
    const ROWS: &str = "lakegate_rows";
    let quote = |c: &str| Ident::with_quote('"', c).to_string();
    let select: Vec<String> = columns
        .iter()
        .map(|(c, ty)| match set.contains(c) {
            true => format!("{ROWS}.{}", quote(c)),
            false => format!("CAST(NULL AS {ty}) AS {}", quote(c)),
        })
        .collect();
    let aliases: Vec<String> = set.iter().map(|c| quote(c)).collect();
    let source = pg_text(&Statement::Query(source.clone()))?;
    let rows = format!("SELECT {} FROM ({source}) AS {ROWS} ({})", select.join(", "), aliases.join(", "));
    let mut query = parse_one(&rows)?;
    Ok(SparkInsert {
        view: view_name(&db, &table),
        rows: translate(&mut query, tables, statement, Placeholders::Refuse)?,
    })
}

/// Parses one statement of PostgreSQL text.
fn parse_one(sql: &str) -> Result<Statement, SqlError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| SqlError::Internal(format!("re-reading a rewritten statement: {e}")))?;
    <[Statement; 1]>::try_from(statements)
        .map(|[statement]| statement)
        .map_err(|_| SqlError::Internal("a rewritten statement is one statement".into()))
}

/// `statement`'s PostgreSQL text, every string in it as its value: sqlparser's printer alone writes a string
/// holding a backslash before a quote as one ending at the backslash, and the rest of the string would reach
/// Spark's lexer as syntax (see `rewrite::print`). Every statement this module prints (its translation's text,
/// an INSERT's source) is printed here.
fn pg_text(statement: &Statement) -> Result<String, SqlError> {
    crate::rewrite::print::text(statement).ok_or_else(|| unsupported("a string that cannot be written as its value"))
}

fn translate(
    ast: &mut Statement,
    tables: &Tables,
    statement: &str,
    placeholders: Placeholders,
) -> Result<SparkSql, SqlError> {
    let mut translate =
        Translate { tables, statement, reads: BTreeSet::new(), snapshots: BTreeMap::new(), error: None };
    let _ = ast.visit(&mut translate);
    if let Some(e) = translate.error {
        return Err(e);
    }
    let snapshots = translate.snapshots.into_iter().map(|(table, view)| (view, table)).collect();
    Ok(SparkSql { text: spark_tokens(&pg_text(ast)?, placeholders)?, reads: translate.reads, snapshots })
}

/// The message of the rewriter's WITH CHECK raise, `CAST(concat('lakegate: ...') AS BOOLEAN)`, if `expr` is one.
fn raised_message(expr: &Expr) -> Option<&str> {
    let Expr::Cast { expr, data_type: DataType::Boolean, .. } = expr else { return None };
    let Expr::Function(f) = expr.as_ref() else { return None };
    let FunctionArguments::List(list) = &f.args else { return None };
    let [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))] = list.args.as_slice() else { return None };
    let is_concat =
        matches!(ident_parts(&f.name).as_deref(), Some([name]) if name.value.eq_ignore_ascii_case("concat"));
    match &v.value {
        Value::SingleQuotedString(s) if is_concat && s.starts_with("lakegate: ") => Some(s),
        _ => None,
    }
}

fn unsupported(what: impl std::fmt::Display) -> SqlError {
    SqlError::Unsupported(format!("{what} is not supported on the Spark backend"))
}

struct Translate<'a> {
    tables: &'a Tables,
    statement: &'a str,
    reads: BTreeSet<String>,
    /// The view of each Iceberg table read: one per table, so that a table read twice is one snapshot.
    snapshots: BTreeMap<(String, String), String>,
    error: Option<SqlError>,
}

impl Translate<'_> {
    fn refuse(&mut self, e: SqlError) -> ControlFlow<()> {
        self.error = Some(e);
        ControlFlow::Break(())
    }
}

fn ident_parts(name: &ObjectName) -> Option<Vec<&Ident>> {
    name.0.iter().map(ObjectNamePart::as_ident).collect()
}

impl VisitorMut for Translate<'_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table { name, alias, args, .. } = factor else { return ControlFlow::Continue(()) };
        if args.is_some() {
            return self.refuse(unsupported(format!("table function {name}")));
        }
        let Some(parts) = ident_parts(name) else { return self.refuse(unsupported(format!("name {name}"))) };
        match parts.as_slice() {
            [db, table] if self.tables.contains_key(&(db.value.clone(), table.value.clone())) => {
                let key = (db.value.clone(), table.value.clone());
                let view = if self.tables.get(&key).is_some_and(|t| t.iceberg) {
                    let n = self.snapshots.len();
                    self.snapshots.entry(key).or_insert_with(|| snapshot_view_name(self.statement, n)).clone()
                } else {
                    let view = view_name(&db.value, &table.value);
                    self.reads.insert(view.clone());
                    view
                };
                let table = (*table).clone();
                *name = ObjectName::from(vec![Ident::new(&view)]);
                if alias.is_none() {
                    *alias = Some(TableAlias { explicit: true, name: table, columns: Vec::new(), at: None });
                }
                ControlFlow::Continue(())
            }
            // A common table expression.
            [single] if !single.value.to_ascii_lowercase().starts_with(VIEW_PREFIX) => ControlFlow::Continue(()),
            _ => self.refuse(SqlError::Internal(format!("{name} is not a table of this backend"))),
        }
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Some(message) = raised_message(expr) {
            // The cast raises only under ANSI mode (else it is NULL, and the row would be dropped silently) and
            // with Spark's cast wording; `raise_error` raises whatever the session's settings, with the text as
            // written (SQLSTATE P0001).
            // The message quoted as the gateway writes every literal (see `rewrite::print`).
            let call = format!("raise_error({})", crate::rewrite::print::string_literal(message));
            match Parser::new(&PostgreSqlDialect {}).try_with_sql(&call).and_then(|mut p| p.parse_expr()) {
                Ok(raise) => *expr = raise,
                Err(e) => return self.refuse(SqlError::Internal(format!("writing the WITH CHECK for Spark: {e}"))),
            }
            return ControlFlow::Continue(());
        }
        let replacement = match expr {
            Expr::Cast { data_type, .. } | Expr::TypedString(sqlparser::ast::TypedString { data_type, .. }) => {
                match spark_type(data_type) {
                    Ok(t) => *data_type = t,
                    Err(e) => return self.refuse(e),
                }
                None
            }
            Expr::Function(f) => {
                let part = match ident_parts(&f.name).as_deref() {
                    Some([one]) => one.value.to_ascii_lowercase(),
                    _ => return self.refuse(unsupported(format!("function {}", f.name))),
                };
                let arg_count = match &f.args {
                    FunctionArguments::List(list) => list.args.len(),
                    _ => 0,
                };
                let spark = if part == "log" && arg_count == 1 {
                    "log10"
                } else if part == "log" {
                    "log"
                } else if let Some((_, to)) = RENAMED.iter().find(|(from, _)| *from == part) {
                    to
                } else if let Some(same) = SAME.iter().find(|n| **n == part) {
                    same
                } else {
                    return self.refuse(unsupported(format!("function {part}")));
                };
                f.name = ObjectName::from(vec![Ident::new(spark)]);
                // `CURRENT_DATE` and friends without parentheses: Spark wants `current_date()` for some of them.
                if matches!(f.args, FunctionArguments::None) {
                    f.args = FunctionArguments::List(sqlparser::ast::FunctionArgumentList {
                        duplicate_treatment: None,
                        args: Vec::new(),
                        clauses: Vec::new(),
                    });
                }
                None
            }
            Expr::BinaryOp { left, op, right } => {
                use BinaryOperator as B;
                match op {
                    B::Plus
                    | B::Minus
                    | B::Multiply
                    | B::Divide
                    | B::Modulo
                    | B::StringConcat
                    | B::Gt
                    | B::Lt
                    | B::GtEq
                    | B::LtEq
                    | B::Eq
                    | B::NotEq
                    | B::And
                    | B::Or => None,
                    B::PGRegexMatch | B::PGRegexNotMatch => Some(Expr::RLike {
                        negated: matches!(op, B::PGRegexNotMatch),
                        expr: left.clone(),
                        pattern: right.clone(),
                        regexp: false,
                    }),
                    B::PGLikeMatch | B::PGNotLikeMatch | B::PGILikeMatch | B::PGNotILikeMatch => {
                        let negated = matches!(op, B::PGNotLikeMatch | B::PGNotILikeMatch);
                        let (expr, pattern) = (left.clone(), right.clone());
                        Some(if matches!(op, B::PGILikeMatch | B::PGNotILikeMatch) {
                            Expr::ILike { negated, any: false, expr, pattern, escape_char: None }
                        } else {
                            Expr::Like { negated, any: false, expr, pattern, escape_char: None }
                        })
                    }
                    other => return self.refuse(unsupported(format!("operator {other}"))),
                }
            }
            Expr::UnaryOp { op, .. } => match op {
                UnaryOperator::Plus | UnaryOperator::Minus | UnaryOperator::Not => None,
                other => return self.refuse(unsupported(format!("operator {other}"))),
            },
            Expr::SimilarTo { .. } => return self.refuse(unsupported("SIMILAR TO")),
            Expr::AtTimeZone { .. } => return self.refuse(unsupported("AT TIME ZONE")),
            _ => None,
        };
        if let Some(replacement) = replacement {
            *expr = replacement;
        }
        ControlFlow::Continue(())
    }
}

/// The Spark type for a PostgreSQL type the rewriter lets through.
fn spark_type(ty: &DataType) -> Result<DataType, SqlError> {
    use DataType as D;
    Ok(match ty {
        D::Text | D::String(_) => D::String(None),
        D::Varchar(None) | D::CharacterVarying(None) | D::CharVarying(None) | D::Char(None) | D::Character(None) => {
            D::String(None)
        }
        D::Varchar(Some(_)) | D::CharacterVarying(Some(_)) | D::CharVarying(Some(_)) => ty.clone(),
        D::Char(Some(_)) | D::Character(Some(_)) => ty.clone(),
        D::Int2(_) | D::SmallInt(_) => D::SmallInt(None),
        D::Int(_) | D::Int4(_) | D::Integer(_) => D::Int(None),
        D::Int8(_) | D::BigInt(_) => D::BigInt(None),
        D::Float4 | D::Real => D::Real,
        D::Float8 | D::DoublePrecision | D::Double(_) => D::Double(ExactNumberInfo::None),
        D::Float(ExactNumberInfo::Precision(p)) if *p <= 24 => D::Real,
        D::Float(_) => D::Double(ExactNumberInfo::None),
        // PostgreSQL's bare numeric has no fixed scale; Spark's bare DECIMAL is DECIMAL(10,0) and would drop it.
        D::Numeric(ExactNumberInfo::None) | D::Decimal(ExactNumberInfo::None) | D::Dec(ExactNumberInfo::None) => {
            D::Decimal(ExactNumberInfo::PrecisionAndScale(38, 18))
        }
        D::Numeric(info) | D::Decimal(info) | D::Dec(info) => D::Decimal(*info),
        D::Bool | D::Boolean => D::Boolean,
        D::Date => D::Date,
        D::Timestamp(None, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => {
            D::Custom(ObjectName::from(vec![Ident::new("TIMESTAMP_NTZ")]), Vec::new())
        }
        D::Timestamp(None, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => D::Timestamp(None, TimezoneInfo::None),
        D::Bytea => D::Binary(None),
        D::Custom(name, modifiers) if modifiers.is_empty() => {
            let folded = ident_parts(name).and_then(|p| match p.as_slice() {
                [one] => Some(one.value.to_ascii_lowercase()),
                _ => None,
            });
            match folded.as_deref() {
                Some("int2") => D::SmallInt(None),
                Some("int4") => D::Int(None),
                Some("int8") => D::BigInt(None),
                Some("float4") => D::Real,
                Some("float8") => D::Double(ExactNumberInfo::None),
                Some("bpchar") => D::String(None),
                Some("timestamptz") => D::Timestamp(None, TimezoneInfo::None),
                _ => return Err(unsupported(format!("type {ty}"))),
            }
        }
        other => return Err(unsupported(format!("type {other}"))),
    })
}

/// Writes every token of `pg` (PostgreSQL text) in the form Spark's lexer reads as that same token.
fn spark_tokens(pg: &str, placeholders: Placeholders) -> Result<String, SqlError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, pg)
        .tokenize()
        .map_err(|e| SqlError::Internal(format!("re-reading a rewritten statement: {e}")))?;
    let mut out = String::with_capacity(pg.len() + pg.len() / 4);
    for token in &tokens {
        match token {
            // A comment in a printed statement would hide part of it (see `rewrite::print`): never dropped quietly.
            Token::Whitespace(Whitespace::SingleLineComment { .. } | Whitespace::MultiLineComment(_)) => {
                return Err(unsupported("a comment in a rewritten statement"));
            }
            Token::Whitespace(_) => continue,
            _ => {}
        }
        if !out.is_empty() {
            out.push(' ');
        }
        match token {
            Token::Word(w) => match w.quote_style {
                None if w.value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => out.push_str(&w.value),
                None => return Err(unsupported(format!("the name {}", w.value))),
                Some(_) => quoted_identifier(&w.value, &mut out)?,
            },
            Token::Number(n, false) => out.push_str(n),
            Token::SingleQuotedString(s)
            | Token::EscapedStringLiteral(s)
            | Token::NationalStringLiteral(s)
            | Token::UnicodeStringLiteral(s) => string_literal(s, &mut out),
            Token::DollarQuotedString(d) => string_literal(&d.value, &mut out),
            Token::HexStringLiteral(h) if h.chars().all(|c| c.is_ascii_hexdigit()) => {
                out.push_str("X'");
                out.push_str(h);
                out.push('\'');
            }
            Token::Placeholder(_) if placeholders == Placeholders::Null => out.push_str("NULL"),
            Token::Comma
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::DoubleColon
            | Token::LBracket
            | Token::RBracket => out.push_str(&token.to_string()),
            other => return Err(unsupported(format!("the token {other}"))),
        }
    }
    Ok(out)
}

/// An identifier in backticks (Spark's only quoting without escapes: a backtick is doubled). `${` is refused:
/// Spark substitutes variables in the statement text before it lexes it, quoted names included.
fn quoted_identifier(name: &str, out: &mut String) -> Result<(), SqlError> {
    if name.contains("${") || name.is_empty() {
        return Err(unsupported(format!("the name {name:?}")));
    }
    out.push('`');
    out.push_str(&name.replace('`', "``"));
    out.push('`');
    Ok(())
}

/// A string literal with Spark's escapes: backslash and quote escaped, and `$` written as `\u0024` so that the
/// text never holds a `${` for Spark's variable substitution to expand.
pub(super) fn string_literal(value: &str, out: &mut String) {
    out.push('\'');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '$' => out.push_str("\\u0024"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spark(sql: &str) -> Result<String, SqlError> {
        to_spark(sql, &columns(), "s1", Placeholders::Refuse).map(|s| s.text)
    }

    /// `sales.orders` as a view over its files, `hr.payroll` as an Iceberg table.
    fn columns() -> Tables {
        let table = |columns: &[(&str, &str)], iceberg| Table {
            columns: columns.iter().map(|(c, t)| ((*c).to_owned(), (*t).to_owned())).collect(),
            iceberg,
        };
        let orders = table(&[("id", "bigint"), ("region", "text"), ("amount", "numeric(12,2)")], false);
        let payroll = table(&[("id", "bigint"), ("department", "text"), ("salary", "bigint")], true);
        Tables::from([(("sales".into(), "orders".into()), orders), (("hr".into(), "payroll".into()), payroll)])
    }

    #[test]
    fn governed_tables_become_their_views_under_the_name_the_statement_uses() {
        assert_eq!(
            spark(r#"SELECT "orders"."id" FROM "sales"."orders" WHERE ("orders"."region" = 'EU') OFFSET 0"#).unwrap(),
            "SELECT `orders` . `id` FROM lakegate_5_sales_orders AS `orders` WHERE ( `orders` . `region` = 'EU' ) \
             OFFSET 0"
        );
        assert_eq!(
            spark(r#"SELECT o.id FROM sales.orders AS o"#).unwrap(),
            "SELECT o . id FROM lakegate_5_sales_orders AS o"
        );
    }

    #[test]
    fn names_outside_the_backend_and_the_views_themselves_are_refused() {
        assert!(spark("SELECT * FROM hr.employees").is_err());
        assert!(spark("SELECT * FROM lakegate_5_sales_orders").is_err());
        assert!(spark("SELECT * FROM LAKEGATE_5_sales_orders").is_err());
        assert!(spark("SELECT * FROM spark_catalog.sales.orders").is_err());
        assert!(spark("SELECT * FROM parquet.\"/etc/passwd\"").is_err());
        assert!(spark("SELECT * FROM range(10)").is_err());
    }

    #[test]
    fn a_literal_cannot_become_syntax_on_spark() {
        // PostgreSQL reads `'a\'` as the string a\ ; Spark would read the backslash as an escape.
        let out = spark(r#"SELECT 'a\' AS "x", 'it''s' AS y"#).unwrap();
        assert_eq!(out, r#"SELECT 'a\\' AS `x` , 'it\'s' AS y"#);
        // Spark substitutes ${...} from its configuration and environment before it parses.
        let out = spark(r#"SELECT '${env:HOME}', E'\x24{spark.app.name}'"#).unwrap();
        assert!(!out.contains('$'), "{out}");
        assert!(spark(r#"SELECT 1 AS "${env:HOME}""#).is_err());
        assert_eq!(spark(r#"SELECT 1 AS "a`b""#).unwrap(), "SELECT 1 AS `a``b`");
    }

    #[test]
    fn comments_are_dropped_and_tokens_never_run_together() {
        assert_eq!(spark("SELECT 1 - -1 /* x */ -- y\n").unwrap(), "SELECT 1 - - 1");
    }

    #[test]
    fn types_functions_and_operators_become_sparks_or_are_refused() {
        assert_eq!(
            spark("SELECT CAST(1 AS TEXT), 2::numeric, 3::double precision, '2024-01-01'::timestamp").unwrap(),
            "SELECT CAST ( 1 AS STRING ) , 2 :: DECIMAL ( 38 , 18 ) , 3 :: DOUBLE , '2024-01-01' :: TIMESTAMP_NTZ"
        );
        assert_eq!(
            spark("SELECT log(100), log(2, 8), strpos('ab', 'b'), current_date").unwrap(),
            "SELECT log10 ( 100 ) , log ( 2 , 8 ) , instr ( 'ab' , 'b' ) , current_date ( )"
        );
        assert_eq!(spark("SELECT 'a' ~ 'b'").unwrap(), "SELECT 'a' RLIKE 'b'");
        for refused in [
            "SELECT to_char(1, '9')",
            "SELECT trunc(1.5)",
            "SELECT 2 ^ 3",
            "SELECT 1::json",
            "SELECT 'a' SIMILAR TO 'a'",
            "SELECT $1",
            "INSERT INTO sales.orders VALUES (1)",
        ] {
            assert!(spark(refused).is_err(), "{refused}");
        }
        assert_eq!(to_spark("SELECT $1", &columns(), "s1", Placeholders::Null).unwrap().text, "SELECT NULL");
    }

    #[test]
    fn a_statement_names_the_views_it_reads_so_that_their_files_are_listed_again() {
        let read = to_spark(
            "SELECT 1 FROM sales.orders a JOIN sales.orders b ON a.id = b.id",
            &columns(),
            "s1",
            Placeholders::Refuse,
        )
        .unwrap();
        assert_eq!(read.reads, BTreeSet::from(["lakegate_5_sales_orders".to_owned()]));
        assert!(read.snapshots.is_empty());
        assert!(to_spark("SELECT 1", &columns(), "s1", Placeholders::Refuse).unwrap().reads.is_empty());
    }

    #[test]
    fn an_iceberg_table_is_read_under_a_view_of_this_statement_alone_one_per_table() {
        let read = to_spark(
            "SELECT p.id FROM hr.payroll p JOIN hr.payroll q ON p.id = q.id JOIN sales.orders o ON o.id = p.id",
            &columns(),
            "c0ffee",
            Placeholders::Refuse,
        )
        .unwrap();
        assert_eq!(
            read.text,
            "SELECT p . id FROM lakegate_0_c0ffee_0 p JOIN lakegate_0_c0ffee_0 q ON p . id = q . id \
             JOIN lakegate_5_sales_orders o ON o . id = p . id"
        );
        assert_eq!(
            read.snapshots,
            BTreeMap::from([("lakegate_0_c0ffee_0".to_owned(), ("hr".into(), "payroll".into()))])
        );
        assert_eq!(read.reads, BTreeSet::from(["lakegate_5_sales_orders".to_owned()]));
        // A user cannot name it: every name with the views' prefix is refused.
        assert!(spark("SELECT * FROM lakegate_0_c0ffee_0").is_err());
    }

    #[test]
    fn an_insert_becomes_every_column_of_its_table_in_order_with_the_check_raised_by_spark() {
        let insert = insert_to_spark(
            r#"INSERT INTO "sales"."orders" ("region", "id") SELECT CAST(lakegate_new.region AS TEXT) AS region,
               CAST(lakegate_new.id AS BIGINT) AS id FROM (VALUES ('EU', 1)) AS lakegate_new (region, id)
               WHERE CASE WHEN lakegate_new.region = 'EU' THEN true
               ELSE CAST(concat('lakegate: new row violates row-level security policy for table "orders"') AS BOOLEAN) END"#,
            &columns(),
            "s1",
        )
        .unwrap();
        assert_eq!(insert.view, "lakegate_5_sales_orders");
        assert_eq!(
            insert.rows.text,
            "SELECT lakegate_rows . `id` , lakegate_rows . `region` , CAST ( NULL AS DECIMAL ( 12 , 2 ) ) AS `amount` \
             FROM ( SELECT CAST ( lakegate_new . region AS STRING ) AS region , CAST ( lakegate_new . id AS BIGINT ) \
             AS id FROM ( VALUES ( 'EU' , 1 ) ) AS lakegate_new ( region , id ) WHERE CASE WHEN lakegate_new . region \
             = 'EU' THEN true ELSE raise_error ( 'lakegate: new row violates row-level security policy for table \
             \"orders\"' ) END ) AS lakegate_rows ( `region` , `id` )"
        );
        assert!(insert.rows.reads.is_empty(), "VALUES reads no table");
        // The source is translated like any query: it reads its views, and names outside the backend are refused.
        let copy =
            insert_to_spark(r#"INSERT INTO sales.orders (id) SELECT id + 100 FROM sales.orders"#, &columns(), "s1")
                .unwrap();
        assert_eq!(copy.rows.reads, BTreeSet::from(["lakegate_5_sales_orders".to_owned()]));
        for refused in [
            "INSERT INTO sales.orders (id) SELECT id FROM hr.employees",
            "INSERT INTO hr.employees (id) VALUES (1)",
            "INSERT INTO sales.orders (ssn) VALUES ('x')",
        ] {
            assert!(insert_to_spark(refused, &columns(), "s1").is_err(), "{refused}");
        }
        // Rows of an Iceberg table may be copied into a file table; the other way has no Iceberg commit.
        let copy =
            insert_to_spark("INSERT INTO sales.orders (id) SELECT id FROM hr.payroll", &columns(), "s1").unwrap();
        assert_eq!(copy.rows.snapshots.len(), 1);
        let into_iceberg = insert_to_spark("INSERT INTO hr.payroll (id) VALUES (1)", &columns(), "s1").unwrap_err();
        assert_eq!(into_iceberg.sqlstate(), "0A000");
        // A user's own call of raise_error is no function Spark is given.
        assert!(spark("SELECT raise_error('x')").is_err());
    }

    #[test]
    fn a_string_the_printer_would_end_early_reaches_spark_as_its_value() {
        // sqlparser prints a string holding a backslash before a quote as one that ends at the backslash; what
        // followed in the string would reach Spark's lexer as syntax. The translation prints it as its value, in
        // Spark's escapes (a backslash and a quote each escaped by a backslash).
        let text =
            spark(r"SELECT id FROM sales.orders WHERE region = 'x\'' UNION SELECT salary FROM hr.payroll --'").unwrap();
        // Spark reads `\\` as a backslash and `\'` as a quote: one string, the value the client wrote.
        let expected = concat!(
            "SELECT id FROM lakegate_5_sales_orders AS orders ",
            r"WHERE region = 'x\\\' UNION SELECT salary FROM hr.payroll --'"
        );
        assert_eq!(text, expected);
        let text = spark(r"SELECT CAST(concat('lakegate: x\''') AS BOOLEAN) FROM sales.orders").unwrap();
        assert!(text.contains(r"raise_error ( 'lakegate: x\\\'' )"), "{text}");
        // An INSERT's source is printed into the query of its rows: by sqlparser alone, its one value would
        // become three rows, one of them a salary.
        let insert = r"INSERT INTO sales.orders (region)
                       VALUES ('x\''), ((SELECT max(salary) FROM hr.payroll)::text), (''')";
        let rows = insert_to_spark(insert, &columns(), "s1").unwrap().rows.text;
        assert!(rows.contains(r"VALUES ( 'x\\\'), ((SELECT max(salary) FROM hr.payroll)::text), (\'' )"), "{rows}");
        let text = spark("SELECT id FROM sales.orders WHERE region = 'it''s'").unwrap();
        assert!(text.contains(r"'it\'s'"), "{text}");
    }

    #[test]
    fn update_and_delete_are_refused_as_unsupported() {
        for write in ["UPDATE sales.orders SET region = 'US'", "DELETE FROM sales.orders WHERE id = 1"] {
            let e = insert_to_spark(write, &columns(), "s1").unwrap_err();
            assert_eq!(e.sqlstate(), "0A000", "{write}: {e}");
        }
    }
}

//! Binding a statement's `$n` parameters: the statement is printed once with markers where its parameters stand
//! ([`Template`]), and binding writes each value as a literal between the pieces, in the one form every backend
//! reads as that value and nothing else ([`write_literal`]).
//!
//! The literal is written here, not by sqlparser's printer, which writes some strings as others (see
//! `rewrite::print`): the value `x\' UNION SELECT ssn FROM hr.employees --` printed as a string ending at the
//! backslash, followed by a UNION of the raw table. A rewritten statement's text is read back (`rewrite::print`);
//! a bound one is not (that would parse every execution again), so its literals must be right by construction,
//! and its pieces are the statement's text as `rewrite::print` writes it.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, OrderBy, OrderByKind, Query, Select, Statement, Value, Visit, Visitor,
};

use crate::error::SqlError;
use crate::rewrite::RewriteError;
use crate::rewrite::print::{self, Cut, write_string};

/// A bound parameter as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Null,
    /// A number (sent typed as one): inlined unquoted.
    Number(String),
    Bool(bool),
    /// Anything else: inlined as a string literal, which PostgreSQL and DataFusion type from its context.
    Text(String),
}

/// Writes the literal a parameter becomes.
///
/// A string is quoted with every quote inside doubled and nothing else changed: a backslash is an ordinary
/// character to each backend (`standard_conforming_strings = on` on PostgreSQL, the PostgreSQL dialect on
/// DataFusion and in the Spark backend's lexer). A number is written as its digits (a [`Param::Number`] holds only
/// a number: see [`is_number`] where parameters are decoded), a sign kept apart from what the statement writes
/// before the parameter: `-$1` bound to -5 must not read `--5`, the start of a comment (see `rewrite::print`).
fn write_literal(param: &Param, out: &mut String) {
    match param {
        Param::Null => out.push_str("NULL"),
        Param::Bool(true) => out.push_str("true"),
        Param::Bool(false) => out.push_str("false"),
        Param::Number(n) => match n.trim() {
            n if n.starts_with(['-', '+']) => {
                out.push('(');
                out.push_str(n);
                out.push(')');
            }
            n => out.push_str(n),
        },
        Param::Text(t) => write_string(t, out),
    }
}

/// `-12`, `3.5`, `1e-3`: digits with at most one sign, point and exponent.
pub(crate) fn is_number(text: &str) -> bool {
    let t = text.trim();
    let t = t.strip_prefix(['-', '+']).unwrap_or(t);
    let (mantissa, exponent) = match t.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e.strip_prefix(['-', '+']).unwrap_or(e))),
        None => (t, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    (!int.is_empty() || !frac.is_empty())
        && digits(int)
        && digits(frac)
        && exponent.is_none_or(|e| !e.is_empty() && digits(e))
}

/// The number a placeholder names (`$3` is 3).
fn number(placeholder: &str) -> Option<usize> {
    placeholder.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())
}

/// The value bound to `placeholder`, or the error naming it.
fn value_of<'a>(placeholder: &str, params: &'a [Param]) -> Result<&'a Param, SqlError> {
    number(placeholder).and_then(|n| n.checked_sub(1)).and_then(|i| params.get(i)).ok_or_else(|| SqlError::Parameter {
        index: number(placeholder).unwrap_or(0),
        reason: format!("there is no parameter {placeholder}"),
    })
}

/// `statement` printed with its parameters replaced by their values' literals. A statement whose text cannot be
/// cut at its parameters (see [`Cut::of`]), or would not read back as itself, is refused, never bound another way.
pub(crate) fn bind(statement: &Statement, params: &[Param]) -> Result<String, SqlError> {
    let refused = |why: &str| SqlError::Rewrite(RewriteError::Unsupported(format!("parameters in a statement {why}")));
    let cut = Cut::of(statement).ok_or_else(|| refused("whose text cannot be cut where they stand (a NUL in it)"))?;
    // The cut is sqlparser's printing but for the strings `rewrite::print` writes itself, for which a rewritten
    // statement's text was read back and a catalog query's, bound here, was not.
    let text = cut.text();
    let as_written = if print::strings_print_as_written(statement) {
        text == statement.to_string()
    } else {
        print::reads_back(statement, &text, READ_BACK_DEPTH)
    };
    if !as_written {
        return Err(refused("whose text would not read back as written"));
    }
    Template(cut).bind(params)
}

/// How deep the parser reading back a bound statement's text may go: as deep as the rewriter reads back its own.
const READ_BACK_DEPTH: usize = crate::rewrite::DEFAULT_PARSER_DEPTH * 2;

/// Whether PostgreSQL, given `statement`'s `$n` as parameters of a prepared statement, reads each as it reads the
/// literal bound there (`backend::postgres` then keeps the statement prepared). Not at the top of an ORDER BY,
/// GROUP BY or DISTINCT ON item, where an integer literal names an output column by its position (`ORDER BY 2`)
/// and a parameter is a constant: an item that holds a parameter anywhere is taken for one of those.
pub(crate) fn parameters_read_as_literals(statement: &Statement) -> bool {
    struct PositionalClauses;
    impl Visitor for PositionalClauses {
        type Break = ();
        fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
            match &query.order_by {
                Some(OrderBy { kind: OrderByKind::Expressions(items), .. })
                    if items.iter().any(|item| holds_placeholder(&item.expr)) =>
                {
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
        fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
            let grouped =
                matches!(&select.group_by, GroupByExpr::Expressions(items, _) if items.iter().any(holds_placeholder));
            let distinct = matches!(&select.distinct, Some(Distinct::On(items)) if items.iter().any(holds_placeholder));
            if grouped || distinct { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
        }
    }
    statement.visit(&mut PositionalClauses).is_continue()
}

fn holds_placeholder(expr: &Expr) -> bool {
    struct Finds;
    impl Visitor for Finds {
        type Break = ();
        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => ControlFlow::Break(()),
                _ => ControlFlow::Continue(()),
            }
        }
    }
    expr.visit(&mut Finds).is_break()
}

/// [`bind`] for a statement kept as text (catalog queries).
pub(crate) fn bind_text(sql: &str, params: &[Param]) -> Result<String, SqlError> {
    if params.is_empty() {
        return Ok(sql.to_owned());
    }
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let statements = sqlparser::parser::Parser::parse_sql(&dialect, sql)
        .map_err(|e| SqlError::Rewrite(RewriteError::Syntax(e.to_string())))?;
    let parts = statements.iter().map(|s| bind(s, params)).collect::<Result<Vec<_>, _>>()?;
    Ok(parts.join("; "))
}

/// The highest `$n` in the text (outside quotes is not distinguished: an over-count only adds parameters the
/// client will not bind, which binding then reports).
pub(crate) fn placeholder_count(sql: &str) -> usize {
    let dialect = sqlparser::dialect::PostgreSqlDialect {};
    let Ok(tokens) = sqlparser::tokenizer::Tokenizer::new(&dialect, sql).tokenize() else { return 0 };
    tokens
        .iter()
        .filter_map(|t| match t {
            sqlparser::tokenizer::Token::Placeholder(p) => p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()),
            _ => None,
        })
        .max()
        .unwrap_or(0)
        .min(u16::MAX as usize)
}

/// A statement's text cut where its parameters stand, kept to bind each execution's values into.
#[derive(Debug, Clone)]
pub(crate) struct Template(Cut);

impl Template {
    /// The template of `statement`, whose text is `sql` (as `rewrite::print` wrote it); `None` when it cannot be
    /// cut exactly.
    pub(crate) fn new(statement: &Statement, sql: &str) -> Option<Template> {
        let cut = Cut::of(statement)?;
        // The pieces with each placeholder written back must be the statement's own text.
        (cut.text() == sql).then_some(Template(cut))
    }

    /// The statement's text with `params` bound.
    pub(crate) fn bind(&self, params: &[Param]) -> Result<String, SqlError> {
        self.0.try_write(|p, out| {
            write_literal(value_of(p, params)?, out);
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::ast::{UnaryOperator, VisitMut, VisitorMut};
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    /// Calls `f` on every placeholder expression of a statement, in the order they print, until it breaks.
    fn each_placeholder<B>(
        statement: &mut Statement,
        f: impl FnMut(&mut Expr, &str) -> ControlFlow<B>,
    ) -> ControlFlow<B> {
        struct Each<F>(F);
        impl<B, F: FnMut(&mut Expr, &str) -> ControlFlow<B>> VisitorMut for Each<F> {
            type Break = B;
            fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<B> {
                if let Expr::Value(v) = expr
                    && let Value::Placeholder(p) = &v.value
                {
                    let p = p.clone();
                    return (self.0)(expr, &p);
                }
                ControlFlow::Continue(())
            }
        }
        statement.visit(&mut Each(f))
    }

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0)
    }

    /// `statement` with each placeholder replaced by the literal node a backend must read for its value.
    fn with_values(statement: &Statement, params: &[Param]) -> Statement {
        let mut statement = statement.clone();
        let _ = each_placeholder::<()>(&mut statement, |expr, p| {
            let number = |n: &str| Expr::value(Value::Number(n.to_owned(), false));
            *expr = match value_of(p, params).unwrap() {
                Param::Null => Expr::value(Value::Null),
                Param::Bool(b) => Expr::value(Value::Boolean(*b)),
                // `(-5)` reads as a minus applied to 5.
                Param::Number(n) => match n.trim().split_at(1) {
                    ("-", digits) => {
                        Expr::Nested(Box::new(Expr::UnaryOp { op: UnaryOperator::Minus, expr: number(digits).into() }))
                    }
                    ("+", digits) => {
                        Expr::Nested(Box::new(Expr::UnaryOp { op: UnaryOperator::Plus, expr: number(digits).into() }))
                    }
                    _ => number(n.trim()),
                },
                Param::Text(t) => Expr::value(Value::SingleQuotedString(t.clone())),
            };
            ControlFlow::Continue(())
        });
        statement
    }

    #[test]
    fn a_bound_text_reads_back_as_the_statement_with_each_value_and_nothing_else() {
        // Quotes, backslashes and comment markers in a value are the value's: sqlparser's own printer took a quote
        // after a backslash for an escape and left it single, so the first value ended its string and ran a UNION.
        let texts = [
            "x\\' UNION SELECT ssn FROM hr.employees --",
            "a''b",
            "'",
            "''",
            "\\",
            "\\'",
            "'\\",
            "it's\n-- not a comment",
            "$1",
            "",
            "é ' ü",
        ];
        for sql in [
            "SELECT -$1::integer AS x, $2 AS y FROM t WHERE a = $5 AND b IS NOT DISTINCT FROM $3 OR $4",
            "SELECT $2, '$1', \"$1\" FROM t WHERE c IN ($1, $1, $5) LIMIT $5",
            "SELECT a FROM t WHERE a = $2 AND b = $2 || 'x' GROUP BY a, $2",
            "SELECT 1 FROM t",
            "INSERT INTO t (a, b) VALUES ($5, $2)",
        ] {
            let statement = statement(sql);
            for text in texts {
                let params = [
                    Param::Number("-5".into()),
                    Param::Text(text.into()),
                    Param::Null,
                    Param::Bool(true),
                    Param::Number(" 42 ".into()),
                ];
                let bound = bind(&statement, &params).unwrap();
                let read = Parser::parse_sql(&PostgreSqlDialect {}, &bound).unwrap_or_else(|e| panic!("{bound}: {e}"));
                assert_eq!(read, vec![with_values(&statement, &params)], "{sql} with {text:?} bound as {bound}");
            }
        }
    }

    #[test]
    fn a_kept_template_binds_as_the_statement_does() {
        let statement = statement("SELECT a FROM t WHERE a = $1 AND b = -$2");
        let template = Template::new(&statement, &statement.to_string()).unwrap();
        let params = [Param::Text("x\\' OR true --".into()), Param::Number("-1".into())];
        let bound = template.bind(&params).unwrap();
        assert_eq!(bound, bind(&statement, &params).unwrap());
        assert_eq!(bound, "SELECT a FROM t WHERE a = 'x\\'' OR true --' AND b = -(-1)");
    }

    #[test]
    fn a_parameter_where_a_literal_would_name_a_column_by_position_is_not_read_as_the_literal() {
        for sql in [
            "SELECT a, b FROM t WHERE a = $1 ORDER BY $2",
            "SELECT a FROM t ORDER BY (($1))",
            "SELECT a, count(*) FROM t GROUP BY $1",
            "SELECT a FROM (SELECT a FROM t GROUP BY ROLLUP (a, $1)) AS s",
            "SELECT DISTINCT ON ($1) a FROM t",
            "SELECT a FROM t UNION SELECT a FROM u ORDER BY a + $1",
        ] {
            assert!(!parameters_read_as_literals(&statement(sql)), "{sql}");
        }
        for sql in [
            "SELECT a FROM t WHERE a = $1 AND b IN ($2, $3) ORDER BY a LIMIT $4 OFFSET $5",
            "SELECT a, rank() OVER (ORDER BY $1) FROM t GROUP BY a",
            "SELECT string_agg(b, $1 ORDER BY b) FROM t",
            "SELECT 1",
        ] {
            assert!(parameters_read_as_literals(&statement(sql)), "{sql}");
        }
    }

    #[test]
    fn placeholders_are_counted_from_tokens() {
        assert_eq!(placeholder_count("select * from t where a = $1 and b = $3"), 3);
        assert_eq!(placeholder_count("select 1"), 0);
    }

    #[test]
    fn a_statement_whose_own_strings_sqlparser_would_print_otherwise_binds_as_written() {
        // sqlparser alone prints the string as one ending at the backslash, followed by a UNION.
        let statement =
            statement(r"SELECT relname FROM pg_class WHERE relname = 'x\'' UNION SELECT 1 --' AND oid = $1");
        let params = [Param::Number("1".into())];
        let bound = bind(&statement, &params).unwrap();
        assert_eq!(bound, r"SELECT relname FROM pg_class WHERE relname = 'x\'' UNION SELECT 1 --' AND oid = 1");
        assert_eq!(Parser::parse_sql(&PostgreSqlDialect {}, &bound).unwrap(), [with_values(&statement, &params)]);
    }

    #[test]
    fn a_missing_parameter_is_an_error() {
        let statement = statement("SELECT a FROM t WHERE a = $2");
        let template = Template::new(&statement, &statement.to_string()).unwrap();
        let params = [Param::Null];
        assert!(matches!(template.bind(&params), Err(SqlError::Parameter { index: 2, .. })));
    }

    #[test]
    fn a_text_that_is_not_the_statements_own_gets_no_template() {
        let statement = statement("SELECT a FROM t WHERE a = $1");
        assert!(Template::new(&statement, "SELECT a FROM t WHERE a = $2").is_none());
        assert!(Template::new(&statement, "SELECT a\0 FROM t WHERE a = $1").is_none());
    }
}

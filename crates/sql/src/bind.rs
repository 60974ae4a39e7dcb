//! Binding a statement's `$n` parameters: each value becomes a literal node of the syntax tree, never text pasted
//! into the statement, so a value can never become syntax.
//!
//! A governed statement is bound at every execution of a prepared statement. Cloning its tree, substituting and
//! printing it again cost more than the rest of a point query's road through the gateway, so a kept statement is
//! printed once with markers where its parameters stand ([`Template`]), and binding writes each value's literal
//! between the pieces: the same text, the literal printed by the same code.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Distinct, Expr, GroupByExpr, OrderBy, OrderByKind, Query, Select, Statement, Value, Visit, VisitMut, Visitor,
    VisitorMut,
};

use crate::error::SqlError;
use crate::rewrite::RewriteError;

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

/// The literal a parameter becomes.
fn literal(param: &Param) -> Expr {
    match param {
        Param::Null => Expr::value(Value::Null),
        Param::Bool(b) => Expr::value(Value::Boolean(*b)),
        // A sign is kept apart from what the statement writes before the parameter: `-$1` bound to -5 must not
        // print as `--5`, the start of a comment (see `rewrite::print`).
        Param::Number(n) => match n.trim() {
            n if n.starts_with(['-', '+']) => Expr::Nested(Box::new(Expr::value(Value::Number(n.to_owned(), false)))),
            n => Expr::value(Value::Number(n.to_owned(), false)),
        },
        Param::Text(t) => Expr::value(Value::SingleQuotedString(t.clone())),
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

/// Calls `f` on every placeholder expression of a statement, in the order they print, until it breaks.
fn each_placeholder<B>(statement: &mut Statement, f: impl FnMut(&mut Expr, &str) -> ControlFlow<B>) -> ControlFlow<B> {
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

/// `statement` with its parameters replaced by their values' literals, printed.
pub(crate) fn bind(statement: &Statement, params: &[Param]) -> Result<String, SqlError> {
    let mut statement = statement.clone();
    let bound = each_placeholder(&mut statement, |expr, p| match value_of(p, params) {
        Ok(param) => {
            *expr = literal(param);
            ControlFlow::Continue(())
        }
        Err(e) => ControlFlow::Break(e),
    });
    match bound {
        ControlFlow::Break(e) => Err(e),
        ControlFlow::Continue(()) => Ok(statement.to_string()),
    }
}

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

/// A statement's text cut where its parameters stand: `pieces[0] $a pieces[1] $b ... pieces[n]`.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pieces: Vec<String>,
    /// The placeholder between `pieces[i]` and `pieces[i + 1]`, as written (`$2`).
    slots: Vec<String>,
}

/// Marks a parameter's place in the printed text: no statement a client sends holds one (the wire protocol's
/// strings end at a NUL), and a text that does gets no template.
const MARK: char = '\0';

impl Template {
    /// The template of `statement`, whose printed text is `sql`; `None` when it cannot be cut exactly (then
    /// [`bind`] serves).
    pub(crate) fn new(statement: &Statement, sql: &str) -> Option<Template> {
        if sql.contains(MARK) {
            return None;
        }
        let mut marked = statement.clone();
        let _ = each_placeholder::<()>(&mut marked, |expr, p| {
            *expr = Expr::value(Value::Placeholder(format!("{MARK}{p}{MARK}")));
            ControlFlow::Continue(())
        });
        let printed = marked.to_string();
        let mut parts = printed.split(MARK);
        let mut pieces = vec![parts.next()?.to_owned()];
        let mut slots = Vec::new();
        while let Some(slot) = parts.next() {
            slots.push(slot.to_owned());
            pieces.push(parts.next()?.to_owned());
        }
        // The pieces with each placeholder written back must be the statement's own text.
        let template = Template { pieces, slots };
        let written = template.write(|p, out| {
            out.push_str(p);
            Ok(())
        });
        (written.ok()? == sql).then_some(template)
    }

    /// The statement's text with `params` bound: what [`bind`] prints.
    pub(crate) fn bind(&self, params: &[Param]) -> Result<String, SqlError> {
        self.write(|p, out| {
            use std::fmt::Write;
            let _ = write!(out, "{}", literal(value_of(p, params)?));
            Ok(())
        })
    }

    fn write(&self, mut slot: impl FnMut(&str, &mut String) -> Result<(), SqlError>) -> Result<String, SqlError> {
        let mut out = String::with_capacity(self.pieces.iter().map(String::len).sum::<usize>() + 16 * self.slots.len());
        for (piece, p) in self.pieces.iter().zip(&self.slots) {
            out.push_str(piece);
            slot(p, &mut out)?;
        }
        if let Some(last) = self.pieces.last() {
            out.push_str(last);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlparser::dialect::PostgreSqlDialect;
    use sqlparser::parser::Parser;

    fn statement(sql: &str) -> Statement {
        Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0)
    }

    #[test]
    fn a_template_binds_what_the_syntax_tree_binds() {
        let params = [
            Param::Number("-5".into()),
            Param::Text("it's\n-- not a comment".into()),
            Param::Null,
            Param::Bool(true),
            Param::Number(" 42 ".into()),
        ];
        for sql in [
            "SELECT -$1::integer AS x, $2 AS y FROM t WHERE a = $5 AND b IS NOT DISTINCT FROM $3 OR $4",
            "SELECT $2, '$1', \"$1\" FROM t WHERE c IN ($1, $1, $5) LIMIT $5",
            "SELECT 1 FROM t",
            "INSERT INTO t (a, b) VALUES ($5, $2)",
        ] {
            let statement = statement(sql);
            let printed = statement.to_string();
            let template = Template::new(&statement, &printed).expect(sql);
            assert_eq!(template.bind(&params).unwrap(), bind(&statement, &params).unwrap(), "{sql}");
        }
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
    fn a_missing_parameter_is_an_error_either_way() {
        let statement = statement("SELECT a FROM t WHERE a = $2");
        let template = Template::new(&statement, &statement.to_string()).unwrap();
        let params = [Param::Null];
        assert!(matches!(template.bind(&params), Err(SqlError::Parameter { index: 2, .. })));
        assert!(matches!(bind(&statement, &params), Err(SqlError::Parameter { index: 2, .. })));
    }

    #[test]
    fn a_text_that_is_not_the_statements_own_gets_no_template() {
        let statement = statement("SELECT a FROM t WHERE a = $1");
        assert!(Template::new(&statement, "SELECT a FROM t WHERE a = $2").is_none());
        assert!(Template::new(&statement, "SELECT a\0 FROM t WHERE a = $1").is_none());
    }
}

//! Printing a rewritten statement as the text the backend reads.
//!
//! sqlparser's `Display` writes each node without asking what its neighbour wrote, so two tokens can run
//! together into a different one: `- -5` (a minus applied to minus five) prints as `--5`, the start of a comment.
//! What follows on that line is hidden from the backend, and what a string literal later in the statement holds
//! after a newline becomes syntax: a client could write its own statement into a literal and have the backend
//! run it in place of the governed one. So a rewritten statement is printed in two steps: the operands that
//! would run into their operator are put in parentheses, and the printed text must read back, with the same
//! parser, as the very statement the rewriter built. Anything else is refused, never sent.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Statement, UnaryOperator, Value, VisitMut, VisitorMut};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::error::RewriteError;

/// The text of `statement` for the backend. `depth` bounds the parser that reads it back (the rewritten
/// statement is deeper than the client's: each governed table adds a subquery and its filter).
pub(crate) fn print(statement: &mut Statement, depth: usize) -> Result<String, RewriteError> {
    let _ = statement.visit(&mut SeparateSigns);
    let sql = statement.to_string();
    let read_back = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(depth)
        .try_with_sql(&sql)
        .and_then(|mut p| p.parse_statements());
    match read_back {
        Ok(read) if read.len() == 1 && read[0] == *statement => Ok(sql),
        _ => Err(RewriteError::Unsupported("a statement whose rewritten text would not read back as written".into())),
    }
}

/// Whether `expr` prints starting with a sign, which would run into a sign written just before it.
fn starts_with_sign(expr: &Expr) -> bool {
    match expr {
        Expr::UnaryOp { op, .. } => !matches!(op, UnaryOperator::Not),
        Expr::Value(v) => matches!(&v.value, Value::Number(n, _) if n.starts_with(['-', '+'])),
        // `x::type` and `x[i]` print their operand first.
        Expr::Cast { kind: sqlparser::ast::CastKind::DoubleColon, expr, .. } => starts_with_sign(expr),
        Expr::CompoundFieldAccess { root, .. } => starts_with_sign(root),
        _ => false,
    }
}

/// Puts in parentheses the operand of a prefix operator that starts with a sign itself: `- -5` is written
/// `-(-5)`.
struct SeparateSigns;

impl VisitorMut for SeparateSigns {
    type Break = ();

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::UnaryOp { op, expr: operand } = expr
            && !matches!(op, UnaryOperator::Not)
            && starts_with_sign(operand)
        {
            let inner = std::mem::replace(operand.as_mut(), Expr::value(Value::Null));
            **operand = Expr::Nested(Box::new(inner));
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(sql: &str) -> Result<String, RewriteError> {
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
        print(&mut statement, 64)
    }

    #[test]
    fn a_sign_before_a_sign_is_written_apart() {
        assert_eq!(printed("SELECT - -5").unwrap(), "SELECT -(-5)");
        assert_eq!(printed("SELECT - - -x FROM t").unwrap(), "SELECT -(-(-x)) FROM t");
        assert_eq!(printed("SELECT - -5::INT").unwrap(), "SELECT -(-5::INT)");
        assert_eq!(printed("SELECT 1 - -5").unwrap(), "SELECT 1 - -5");
        assert_eq!(printed("SELECT NOT -x FROM t").unwrap(), "SELECT NOT -x FROM t");
    }

    #[test]
    fn no_comment_can_hide_part_of_a_statement() {
        // Printed as `--5`, the rest of the line would be a comment and the literal's second line syntax.
        let text = printed("SELECT - -5 AS x, 'a\n* FROM sales.orders --' AS y FROM t").unwrap();
        let read = Parser::parse_sql(&PostgreSqlDialect {}, &text).unwrap();
        assert_eq!(read.len(), 1);
        assert!(text.starts_with("SELECT -(-5) AS x, 'a\n"), "{text}");
    }

    #[test]
    fn a_statement_that_does_not_read_back_is_refused() {
        // Built by hand as no parser would: `1 - (2 - 3)` without its parentheses.
        let mut statement = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT x FROM t").unwrap().remove(0);
        struct Minus;
        impl VisitorMut for Minus {
            type Break = ();
            fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
                if matches!(expr, Expr::Identifier(_)) {
                    *expr = Expr::BinaryOp {
                        left: Box::new(Expr::value(Value::Number("1".into(), false))),
                        op: sqlparser::ast::BinaryOperator::Minus,
                        right: Box::new(Expr::BinaryOp {
                            left: Box::new(Expr::value(Value::Number("2".into(), false))),
                            op: sqlparser::ast::BinaryOperator::Minus,
                            right: Box::new(Expr::value(Value::Number("3".into(), false))),
                        }),
                    };
                }
                ControlFlow::Continue(())
            }
        }
        let _ = statement.visit(&mut Minus);
        // It prints as `1 - 2 - 3`, which reads as `(1 - 2) - 3`.
        assert!(matches!(print(&mut statement, 64), Err(RewriteError::Unsupported(_))));
    }
}

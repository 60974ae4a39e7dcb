//! Printing a rewritten statement as the text the backend reads.
//!
//! sqlparser's `Display` writes each node without asking what its neighbour wrote, so two tokens can run
//! together into a different one: `- -5` (a minus applied to minus five) prints as `--5`, the start of a comment.
//! What follows on that line is hidden from the backend, and what a string literal later in the statement holds
//! after a newline becomes syntax: a client could write its own statement into a literal and have the backend
//! run it in place of the governed one. So a rewritten statement is printed in two steps: the operands that
//! would run into their operator are put in parentheses, and the printed text must read back, with the same
//! parser, as the very statement the rewriter built. Anything else is refused, never sent.
//!
//! sqlparser's escaper also writes some strings as others: it doubles a quote inside a string only when no
//! backslash comes before it and no quote after it (it takes those for escapes already written), so the value
//! `x\' UNION SELECT ssn FROM hr.employees --` prints as a string ending at the backslash followed by a UNION. A
//! statement holding such a string is printed with that string written here instead ([`write_string`]), at the
//! place sqlparser's printing puts it ([`Cut`]); the read-back then holds the whole text to the statement.

use std::ops::ControlFlow;

use sqlparser::ast::{Expr, Statement, UnaryOperator, Value, ValueWithSpan, Visit, VisitMut, Visitor, VisitorMut};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::error::RewriteError;

/// The text of `statement` for the backend. `depth` bounds the parser that reads it back (the rewritten
/// statement is deeper than the client's: each governed table adds a subquery and its filter).
pub(crate) fn print(statement: &mut Statement, depth: usize) -> Result<String, RewriteError> {
    let _ = VisitMut::visit(statement, &mut SeparateSigns);
    match text(statement) {
        Some(sql) if reads_back(statement, &sql, depth) => Ok(sql),
        _ => Err(RewriteError::Unsupported("a statement whose rewritten text would not read back as written".into())),
    }
}

/// `statement` as sqlparser prints it, but each string its escaper would write as another written by
/// [`write_string`]; `None` when the text cannot be cut where those strings stand (see [`Cut::of`]). Not yet
/// read back: see [`reads_back`].
pub(crate) fn text(statement: &Statement) -> Option<String> {
    if strings_print_as_written(statement) {
        return Some(statement.to_string());
    }
    Cut::of(statement).map(|cut| cut.text())
}

/// Whether `text` reads, with the parser bounded at `depth`, as `statement` and nothing else.
pub(crate) fn reads_back(statement: &Statement, text: &str, depth: usize) -> bool {
    let read = Parser::new(&PostgreSqlDialect {})
        .with_recursion_limit(depth)
        .try_with_sql(text)
        .and_then(|mut p| p.parse_statements());
    matches!(read, Ok(read) if read.len() == 1 && read[0] == *statement)
}

/// Writes `text` as a string literal: in quotes, every quote inside doubled, nothing else changed. A backslash is
/// an ordinary character to each backend (`standard_conforming_strings = on` on PostgreSQL, the PostgreSQL dialect
/// on DataFusion and in the Spark backend's lexer).
pub(crate) fn write_string(text: &str, out: &mut String) {
    out.reserve(text.len() + 2);
    out.push('\'');
    for (i, piece) in text.split('\'').enumerate() {
        if i > 0 {
            out.push_str("''");
        }
        out.push_str(piece);
    }
    out.push('\'');
}

/// `text` as a string literal (see [`write_string`]).
pub(crate) fn string_literal(text: &str) -> String {
    let mut out = String::new();
    write_string(text, &mut out);
    out
}

/// Whether sqlparser's printer writes every string literal of `statement` as text that reads back as its value.
/// Its escaper leaves a quote single where a backslash comes before it or another quote after it, and a national
/// string (`N'...'`) it writes without escaping at all. A statement holding one is printed through a [`Cut`].
pub(crate) fn strings_print_as_written(statement: &Statement) -> bool {
    struct Strings;
    impl Visitor for Strings {
        type Break = ();
        fn pre_visit_value(&mut self, value: &ValueWithSpan) -> ControlFlow<()> {
            if prints_as_written(&value.value) { ControlFlow::Continue(()) } else { ControlFlow::Break(()) }
        }
    }
    statement.visit(&mut Strings).is_continue()
}

fn prints_as_written(value: &Value) -> bool {
    match value {
        Value::SingleQuotedString(s) => !s.contains("\\'") && !s.contains("''"),
        Value::DoubleQuotedString(s) => !s.contains("\\\"") && !s.contains("\"\""),
        Value::NationalStringLiteral(s) => !s.contains('\''),
        _ => true,
    }
}

/// A statement's text cut where its parameters stand, `pieces[0] slots[0] pieces[1] ... pieces[n]`, each slot a
/// placeholder as written (`$2`), and each string sqlparser would print as another written into its piece by
/// [`write_string`].
#[derive(Debug, Clone)]
pub(crate) struct Cut {
    pieces: Vec<String>,
    slots: Vec<String>,
}

/// Marks a cut in printed text: no statement a client sends holds one (the wire protocol's strings end at a NUL),
/// and a statement whose text does is not cut.
const MARK: char = '\0';

/// Where a cut is a string, not a placeholder (which starts with `$`, `?`, `:` or `@`): `MARK ' index MARK`.
const STRING_SLOT: char = '\'';

impl Cut {
    /// `statement` printed with a mark for each placeholder and each string to write here, and cut at them;
    /// `None` when the statement's text holds a NUL, or a string that has no form here (a double-quoted string
    /// sqlparser would print as another, which no PostgreSQL text holds).
    pub(crate) fn of(statement: &Statement) -> Option<Cut> {
        struct Marker {
            marks: usize,
            /// The literal to write at each string's mark.
            literals: Vec<String>,
        }
        impl VisitorMut for Marker {
            type Break = ();
            fn pre_visit_value(&mut self, value: &mut ValueWithSpan) -> ControlFlow<()> {
                let literal = match &value.value {
                    _ if prints_as_written(&value.value) => None,
                    Value::SingleQuotedString(s) => Some(string_literal(s)),
                    Value::NationalStringLiteral(s) => Some(format!("N{}", string_literal(s))),
                    _ => return ControlFlow::Break(()),
                };
                let mark = match (literal, &value.value) {
                    (Some(literal), _) => {
                        self.literals.push(literal);
                        format!("{MARK}{STRING_SLOT}{}{MARK}", self.literals.len() - 1)
                    }
                    (None, Value::Placeholder(p)) => format!("{MARK}{p}{MARK}"),
                    (None, _) => return ControlFlow::Continue(()),
                };
                self.marks += 1;
                value.value = Value::Placeholder(mark);
                ControlFlow::Continue(())
            }
        }
        let mut marked = statement.clone();
        let mut marker = Marker { marks: 0, literals: Vec::new() };
        if VisitMut::visit(&mut marked, &mut marker).is_break() {
            return None;
        }
        let printed = marked.to_string();
        // A NUL of the statement's own would shift every cut after it.
        if printed.matches(MARK).count() != 2 * marker.marks {
            return None;
        }
        let mut parts = printed.split(MARK);
        let mut pieces = vec![parts.next()?.to_owned()];
        let mut slots = Vec::new();
        while let Some(slot) = parts.next() {
            let after = parts.next()?;
            match slot.strip_prefix(STRING_SLOT) {
                Some(index) => {
                    let piece = pieces.last_mut()?;
                    piece.push_str(marker.literals.get(index.parse::<usize>().ok()?)?);
                    piece.push_str(after);
                }
                None => {
                    slots.push(slot.to_owned());
                    pieces.push(after.to_owned());
                }
            }
        }
        Some(Cut { pieces, slots })
    }

    /// The text cut, each placeholder as written.
    pub(crate) fn text(&self) -> String {
        let written = self.try_write(|p, out| {
            out.push_str(p);
            Ok::<(), std::convert::Infallible>(())
        });
        written.unwrap_or_else(|never| match never {})
    }

    /// The pieces with `slot` writing what stands in each slot, until it fails.
    pub(crate) fn try_write<E>(&self, mut slot: impl FnMut(&str, &mut String) -> Result<(), E>) -> Result<String, E> {
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
    fn a_string_prints_as_written_exactly_when_sqlparser_reads_it_back() {
        // Pins sqlparser's escaper to what `strings_print_as_written` expects of it.
        for text in ["plain", "it's", "'", "a''b", "''", "x\\", "x\\'", "\\' OR true --", "'\\", "a\nb"] {
            let statement = Parser::parse_sql(&PostgreSqlDialect {}, &format!("SELECT {}", string_literal(text)))
                .unwrap()
                .remove(0);
            let read = Parser::parse_sql(&PostgreSqlDialect {}, &statement.to_string()).ok();
            let reads_back = read.is_some_and(|r| r == [statement.clone()]);
            assert_eq!(strings_print_as_written(&statement), reads_back, "{text:?}");
        }
        let national = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT N'it''s'").unwrap().remove(0);
        assert!(!strings_print_as_written(&national));
    }

    #[test]
    fn a_string_sqlparser_would_print_as_another_is_written_as_its_value() {
        // Each printed by sqlparser alone as a string ending early: the rewriter refused them, a false refusal.
        for sql in [
            r"SELECT a FROM t WHERE path = 'C:\dir\''s' AND b = 'it''s'",
            r"SELECT 'x\'' UNION SELECT ssn FROM hr.employees --' AS v, DATE '2020-01-01'",
            r"SELECT a FROM t WHERE a LIKE '%\''''%' AND c = $1 OR d = 'a''''b' AND e = $2",
            r"SELECT CAST('\''' AS TEXT), INTERVAL '1 day', ''''''",
            r"SELECT N'it''s', N'a\''b' FROM t",
        ] {
            let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
            assert!(!strings_print_as_written(&statement), "{sql}");
            let text = printed(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
            assert!(reads_back(&statement, &text, 64), "{sql} printed as {text}");
        }
        assert_eq!(printed(r"SELECT 'C:\dir\''s'").unwrap(), r"SELECT 'C:\dir\''s'");
    }

    #[test]
    fn a_cut_keeps_each_placeholder_apart_and_each_string_in_its_piece() {
        let statement =
            Parser::parse_sql(&PostgreSqlDialect {}, r"SELECT $2, 'a\''b' FROM t WHERE x = $1").unwrap().remove(0);
        let cut = Cut::of(&statement).unwrap();
        assert_eq!(cut.slots, ["$2", "$1"]);
        assert_eq!(cut.pieces, ["SELECT ", r", 'a\''b' FROM t WHERE x = ", ""]);
    }

    #[test]
    fn a_statement_holding_a_nul_is_not_cut() {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, "SELECT 'a\0b', 'c\\''d', $1").unwrap().remove(0);
        assert!(Cut::of(&statement).is_none());
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
        let _ = VisitMut::visit(&mut statement, &mut Minus);
        // It prints as `1 - 2 - 3`, which reads as `(1 - 2) - 3`.
        assert!(matches!(print(&mut statement, 64), Err(RewriteError::Unsupported(_))));
    }
}

//! A text's literals lifted out of it, so that texts which differ only in their literals share one rewrite.
//!
//! Clients of the simple query protocol (pgbench, psql, BI tools, drivers that inline their values) write every
//! value into the text, so hardly a text comes twice, and each was parsed, rewritten, printed and read back
//! anew. A text's *shape* is its token stream with every number and plain string literal replaced by a
//! placeholder (`$1`, `$2`, ... in the order they stand). The parser reads tokens, not text, so two texts of one
//! shape parse to the same tree but for those literals; and the rewriter never reads a literal's value (a
//! literal and a placeholder are alike to it: constants it leaves where they stand). The shape's rewrite bound
//! with a text's literals is then that text's rewrite: what the extended protocol sends for the shape's text
//! with the literals as parameters.
//!
//! A session keeps a shape's rewrite only after checking it on the text it was made from (see
//! `Session::rewrite`), and only for reads: a write's rewrite may one day depend on what it writes.

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::bind::Param;

/// A text's shape and the literals lifted out of it, `literals[i]` from the place of `$(i + 1)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lifted {
    pub shape: Vec<Token>,
    pub literals: Vec<Param>,
}

/// The most literals lifted from one text: what the extended protocol can bind.
const MAX_LITERALS: usize = u16::MAX as usize;

/// `sql`'s shape, or `None` when there is nothing to lift: no literal, a text that does not tokenize, or a text
/// with the client's own placeholders (a prepared statement's text is its own shape).
pub(crate) fn lift(sql: &str) -> Option<Lifted> {
    let mut shape = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    let mut literals = Vec::new();
    for token in &mut shape {
        let literal = match token {
            Token::Placeholder(_) => return None,
            // As the tokenizer read them: the number's digits, the string unescaped (`''` is one quote), which is
            // what the tree holds and binding writes back (see `bind::literal`).
            Token::Number(n, false) => Param::Number(std::mem::take(n)),
            Token::SingleQuotedString(s) => Param::Text(std::mem::take(s)),
            _ => continue,
        };
        if literals.len() == MAX_LITERALS {
            return None;
        }
        literals.push(literal);
        *token = Token::Placeholder(format!("${}", literals.len()));
    }
    (!literals.is_empty()).then_some(Lifted { shape, literals })
}

/// The text of a shape, for the rewriter: its tokens written out, if they read back as the same tokens. A token
/// does not always write itself as it was read (an identifier holding a double quote), and a text that would
/// read otherwise is not the shape.
pub(crate) fn shape_text(shape: &[Token]) -> Option<String> {
    let text: String = shape.iter().map(Token::to_string).collect();
    let again = Tokenizer::new(&PostgreSqlDialect {}, &text).tokenize().ok()?;
    (again == shape).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(sql: &str) -> String {
        let lifted = lift(sql).expect(sql);
        shape_text(&lifted.shape).expect(sql)
    }

    #[test]
    fn numbers_and_strings_are_lifted_in_order_as_the_tree_holds_them() {
        let lifted = lift("SELECT a FROM t WHERE b = 'it''s' AND c > -1.5e3 LIMIT 10").unwrap();
        assert_eq!(
            lifted.literals,
            [Param::Text("it's".into()), Param::Number("1.5e3".into()), Param::Number("10".into())]
        );
        assert_eq!(shape_text(&lifted.shape).unwrap(), "SELECT a FROM t WHERE b = $1 AND c > -$2 LIMIT $3");
    }

    #[test]
    fn texts_that_differ_only_in_their_literals_share_a_shape_and_nothing_else_does() {
        let one = lift("SELECT abalance FROM pgbench_accounts WHERE aid = 17").unwrap();
        let other = lift("SELECT abalance FROM pgbench_accounts WHERE aid = 99182").unwrap();
        assert_eq!(one.shape, other.shape);
        // A string in a number's place too: each is bound as what it was, a number or a quoted string.
        let quoted = lift("SELECT abalance FROM pgbench_accounts WHERE aid = '17'").unwrap();
        assert_eq!(quoted.shape, one.shape);
        assert_eq!(quoted.literals, [Param::Text("17".into())]);
        for different in [
            "SELECT abalance FROM pgbench_accounts WHERE bid = 17",
            "SELECT abalance FROM pgbench_accounts WHERE aid < 17",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 17 -- a comment",
            "SELECT abalance FROM \"pgbench_accounts\" WHERE aid = 17",
        ] {
            assert_ne!(lift(different).unwrap().shape, one.shape, "{different}");
        }
    }

    #[test]
    fn other_literals_stay_in_the_shape() {
        for sql in [
            "SELECT E'a\\nb', $$x$$, X'ff', B'01', U&'d\\0061t' FROM t",
            "SELECT \"1\" FROM t",
            "SELECT a FROM t WHERE b = true",
        ] {
            assert_eq!(lift(sql), None, "{sql}");
        }
        assert_eq!(shape_of("SELECT E'a', 'b' FROM t"), "SELECT E'a', $1 FROM t");
    }

    #[test]
    fn a_text_with_the_clients_own_placeholders_or_that_does_not_tokenize_is_not_lifted() {
        assert_eq!(lift("SELECT a FROM t WHERE b = $1 AND c = 5"), None);
        assert_eq!(lift("SELECT 'unterminated"), None);
    }

    #[test]
    fn a_shape_whose_tokens_would_read_back_otherwise_has_no_text() {
        // The identifier `a"b` writes itself as `"a"b"`, which reads as something else.
        let lifted = lift("SELECT \"a\"\"b\" FROM t WHERE c = 1").unwrap();
        assert_eq!(shape_text(&lifted.shape), None);
        // Comments and line ends are tokens too, written as they were read.
        assert_eq!(
            shape_of("SELECT a -- why\nFROM t /* note */ WHERE b = 2"),
            "SELECT a -- why\nFROM t /* note */ WHERE b = $1"
        );
    }
}

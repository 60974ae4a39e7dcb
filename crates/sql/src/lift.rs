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
//! Most such texts are plain (words, numbers, simple strings, a few operators) and are read by [`scan`], a byte
//! at a time, at a few percent of what the tokenizer costs; the rest are read by the tokenizer. Either way a
//! shape is known by its text. A scanned shape's text reads as the text's shape by construction (the tests hold
//! the scan to the tokenizer); a tokenized shape's text is its tokens written out, which do not always read back
//! as themselves, so a tokenized text also carries its shape's tokens, to be checked against those its shape's
//! text reads as.
//!
//! A session keeps a shape's rewrite only after checking it on the text it was made from (see
//! `Session::rewrite`), and only for reads: a write's rewrite may one day depend on what it writes.

use std::fmt::Write as _;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::bind::Param;

/// A text's shape and the literals lifted out of it, `literals[i]` from the place of `$(i + 1)`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lifted {
    /// The shape's text.
    pub shape: String,
    /// The shape's tokens when the tokenizer read the text; `None` when [`scan`] did, and the shape's text reads
    /// as the text's shape.
    pub tokens: Option<Vec<Token>>,
    pub literals: Vec<Param>,
}

/// The most literals lifted from one text: what the extended protocol can bind.
const MAX_LITERALS: usize = u16::MAX as usize;

/// `sql`'s shape, or `None` when there is nothing to lift: no literal, a text that does not tokenize, or a text
/// with the client's own placeholders (a prepared statement's text is its own shape).
pub(crate) fn lift(sql: &str) -> Option<Lifted> {
    match scan(sql) {
        Scan::Plain(lifted) => lifted,
        Scan::Unsure => lift_tokens(sql),
    }
}

/// A text's tokens as the parser reads them, `None` when it does not tokenize: for a shape's text, those a
/// tokenized text of that shape must have (see [`Lifted::tokens`]).
pub(crate) fn tokenize(text: &str) -> Option<Vec<Token>> {
    Tokenizer::new(&PostgreSqlDialect {}, text).tokenize().ok()
}

/// `sql`'s shape as the tokenizer reads it.
fn lift_tokens(sql: &str) -> Option<Lifted> {
    let mut tokens = tokenize(sql)?;
    let mut literals = Vec::new();
    for token in &mut tokens {
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
    if literals.is_empty() {
        return None;
    }
    let shape = tokens.iter().map(Token::to_string).collect();
    Some(Lifted { shape, tokens: Some(tokens), literals })
}

/// What [`scan`] makes of a text.
#[derive(Debug, PartialEq)]
enum Scan {
    /// The text is plain: its shape, or `None` when it holds no literal.
    Plain(Option<Lifted>),
    /// The text holds something the scan does not read: the tokenizer must.
    Unsure,
}

/// The shape of a plain text, the kind most generated and hand-written queries are: words of ASCII letters,
/// digits and `_`, whitespace, the punctuation `( ) , ; . = < > + - * / %`, unsigned numbers (`17`, `1.5`) and
/// single-quoted strings without a backslash. Anything else (quoted identifiers, comments, `$`, other operators,
/// prefixed strings such as `E'..'`, exponents, non-ASCII outside a string) is [`Scan::Unsure`], and so is a
/// literal beside anything but whitespace or that punctuation. Within these bounds a literal is one token of the
/// tokenizer's, and its placeholder in its place is one token with the same tokens around it, so the shape's
/// text reads as the text's shape.
fn scan(sql: &str) -> Scan {
    let bytes = sql.as_bytes();
    let mut shape = String::new();
    let mut literals = Vec::new();
    // Where the text not yet copied to the shape starts.
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let end = match c {
            b'a'..=b'z' | b'A'..=b'Z' | b'_' => {
                i += bytes[i..].iter().take_while(|&&c| c.is_ascii_alphanumeric() || c == b'_').count();
                continue;
            }
            b' ' | b'\t' | b'\n' | b'\r' | b'(' | b')' | b',' | b';' | b'=' | b'<' | b'>' | b'+' | b'*' | b'%' => {
                i += 1;
                continue;
            }
            // Neither a comment's start nor a number's fraction nor `._`, which the tokenizer reads by the token
            // before it.
            b'-' | b'/' | b'.' => {
                let next = bytes.get(i + 1).copied();
                let unsure = match c {
                    b'-' => next == Some(b'-'),
                    b'/' => next == Some(b'*'),
                    _ => next.is_some_and(|n| n.is_ascii_digit() || n == b'_'),
                };
                if unsure {
                    return Scan::Unsure;
                }
                i += 1;
                continue;
            }
            b'0'..=b'9' => {
                let mut end = digits_end(bytes, i);
                if bytes.get(end) == Some(&b'.') {
                    if !bytes.get(end + 1).is_some_and(u8::is_ascii_digit) {
                        return Scan::Unsure;
                    }
                    end = digits_end(bytes, end + 1);
                }
                end
            }
            b'\'' => {
                let Some(end) = string_end(bytes, i) else { return Scan::Unsure };
                // Strings with only whitespace between them are one constant to PostgreSQL when it holds a line end.
                let next = bytes[end..].iter().find(|c| !matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
                if next == Some(&b'\'') {
                    return Scan::Unsure;
                }
                end
            }
            _ => return Scan::Unsure,
        };
        let before = i.checked_sub(1).map(|b| bytes[b]);
        if !before.is_none_or(stands_apart) || !bytes.get(end).copied().is_none_or(stands_apart) {
            return Scan::Unsure;
        }
        if literals.len() == MAX_LITERALS {
            return Scan::Unsure;
        }
        literals.push(match c {
            b'\'' => Param::Text(sql[i + 1..end - 1].replace("''", "'")),
            _ => Param::Number(sql[i..end].to_owned()),
        });
        if shape.is_empty() {
            shape.reserve(sql.len() + 8);
        }
        shape.push_str(&sql[copied..i]);
        let _ = write!(shape, "${}", literals.len());
        copied = end;
        i = end;
    }
    if literals.is_empty() {
        return Scan::Plain(None);
    }
    shape.push_str(&sql[copied..]);
    Scan::Plain(Some(Lifted { shape, tokens: None, literals }))
}

/// What may stand beside a literal in a plain text: whitespace, and punctuation that the tokenizer reads as itself
/// beside a literal or a placeholder. (`-` and `/` after a literal could open a comment; the scan of them sees to
/// that.)
fn stands_apart(c: u8) -> bool {
    b" \t\n\r(),;=<>+-*/%".contains(&c)
}

fn digits_end(bytes: &[u8], from: usize) -> usize {
    from + bytes[from..].iter().take_while(|c| c.is_ascii_digit()).count()
}

/// The end (after the closing quote) of the string whose opening quote is at `from`, `''` being a quote within it;
/// `None` when it is not closed or holds a backslash, an escape under some settings.
fn string_end(bytes: &[u8], from: usize) -> Option<usize> {
    let mut i = from + 1;
    loop {
        match bytes.get(i)? {
            b'\\' => return None,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape_of(sql: &str) -> String {
        lift(sql).expect(sql).shape
    }

    /// The tokenizer's reading of a text, the reference for the scan: its shape's tokens and literals.
    fn by_tokens(sql: &str) -> Option<(Vec<Token>, Vec<Param>)> {
        let lifted = lift_tokens(sql)?;
        Some((lifted.tokens.expect("tokenized"), lifted.literals))
    }

    #[test]
    fn numbers_and_strings_are_lifted_in_order_as_the_tree_holds_them() {
        for sql in [
            "SELECT a FROM t WHERE b = 'it''s' AND c > -1.5 LIMIT 10",
            // An exponent is past the scan: the tokenizer reads it.
            "SELECT a FROM t WHERE b = 'it''s' AND c > -1.5e3 LIMIT 10",
        ] {
            let lifted = lift(sql).unwrap();
            let number = sql.split_once("> -").unwrap().1.split_once(' ').unwrap().0;
            assert_eq!(
                lifted.literals,
                [Param::Text("it's".into()), Param::Number(number.into()), Param::Number("10".into())]
            );
            assert_eq!(lifted.shape, "SELECT a FROM t WHERE b = $1 AND c > -$2 LIMIT $3");
        }
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
    fn a_tokenized_shape_carries_its_tokens_which_its_text_may_not_read_back_as() {
        // The identifier `a"b` writes itself as `"a"b"`, which reads as something else.
        let lifted = lift("SELECT \"a\"\"b\" FROM t WHERE c = 1").unwrap();
        assert_ne!(tokenize(&lifted.shape), lifted.tokens);
        // Comments and line ends are tokens too, written as they were read.
        let lifted = lift("SELECT a -- why\nFROM t /* note */ WHERE b = 2").unwrap();
        assert_eq!(lifted.shape, "SELECT a -- why\nFROM t /* note */ WHERE b = $1");
        assert_eq!(tokenize(&lifted.shape), lifted.tokens);
    }

    #[test]
    fn plain_texts_are_scanned_and_others_are_left_to_the_tokenizer() {
        for plain in [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 81723;",
            "UPDATE t SET a = a + 1, b = 'x y' WHERE id IN (1, 2,3) AND c >= 0.25",
            "select count(*) from t where s = '' or s = 'it''s é'",
        ] {
            assert!(matches!(scan(plain), Scan::Plain(Some(_))), "{plain}");
        }
        assert_eq!(scan("SELECT a FROM t"), Scan::Plain(None));
        for unsure in [
            "SELECT 1e5",
            "SELECT 1_000",
            "SELECT 0x1f",
            "SELECT .5",
            "SELECT 1.",
            "SELECT t.1",
            "SELECT 1L",
            "SELECT a1'x'",
            "SELECT E'x'",
            "SELECT 'a\\'",
            "SELECT 'a'\n'b'",
            "SELECT 'unterminated",
            "SELECT \"q\" FROM t WHERE a = 1",
            "SELECT a FROM t WHERE a = $1",
            "SELECT $$x$$",
            "SELECT 1 -- note",
            "SELECT 1 /* note */",
            "SELECT a::int",
            "SELECT a FROM t WHERE b ~ 'x'",
            "SELECT é FROM t",
            "SELECT 1.5.3",
            "SELECT 'a'.b",
        ] {
            assert_eq!(scan(unsure), Scan::Unsure, "{unsure}");
        }
    }

    /// The scan reads every text it reads as the tokenizer does: the same literals, and a shape whose text reads
    /// as the text's shape. Random texts of pieces the two might read apart.
    #[test]
    fn the_scan_reads_as_the_tokenizer_does() {
        const PIECES: &[&str] = &[
            "SELECT", "a", "t", "_x", "E", "e", "U", "u&", "X", "x", "B", "b", "N", "r", "q", "e1", "1", "12", "007",
            "1.5", "0", "0x1", "1e5", "1E-5", "1_000", "1L", ".", ".5", "._", "'a'", "''", "'it''s'", "'\\'", "'\\''",
            "'", "\"q\"", "\"", "$1", "$$", "$a$", "$", "--", "/*", "*/", "-", "+", "=", "<", ">", "<=", "<>", "!=",
            "!", "(", ")", ",", ";", ":", "::", "%", "*", "/", "|", "&", "@", "#", "?", "\n", " ", "\t", "\r", "\r\n",
            "é", "\\", "L", "_", "[", "]", "{", "}", "`", "~", "^", "\u{a0}", "'é'", "'a\nb'", "' '", "-1", "=-", "->",
            "0.", "..", "1..2",
        ];
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut scanned = 0;
        for _ in 0..100_000 {
            let mut sql = String::new();
            for _ in 0..next() % 10 {
                let r = next();
                sql.push_str(PIECES[(r % PIECES.len() as u64) as usize]);
                if (r >> 32) % 3 == 0 {
                    sql.push(' ');
                }
            }
            let Scan::Plain(lifted) = scan(&sql) else { continue };
            scanned += 1;
            match (lifted, by_tokens(&sql)) {
                (None, None) => {
                    let tokens = tokenize(&sql).unwrap_or_else(|| panic!("{sql:?} does not tokenize"));
                    let literal = |t: &Token| matches!(t, Token::Number(..) | Token::SingleQuotedString(_));
                    assert!(!tokens.iter().any(literal), "{sql:?}");
                }
                (Some(lifted), Some((tokens, literals))) => {
                    assert_eq!(lifted.literals, literals, "{sql:?}");
                    assert_eq!(tokenize(&lifted.shape), Some(tokens), "{sql:?} as {:?}", lifted.shape);
                }
                (scanned, tokenized) => panic!("{sql:?}: scanned {scanned:?}, tokenized {tokenized:?}"),
            }
        }
        assert!(scanned > 10_000, "the pieces make plain texts often enough to test the scan: {scanned}");
    }
}

//! What Trino clients send that PostgreSQL does not say, translated into statements the session runs:
//! `EXECUTE IMMEDIATE '<sql>' USING <literals>` (the trino client's prepared statements), and the older
//! `PREPARE name FROM <sql>` / `EXECUTE name USING <literals>` / `DEALLOCATE PREPARE name` (kept by the client and
//! sent back in `X-Trino-Prepared-Statement`, as `legacy_prepared_statements=True` does), `SHOW CATALOGS`,
//! `SHOW SCHEMAS`, `SHOW TABLES`, `SHOW COLUMNS` / `DESCRIBE`, names qualified by the catalog
//! (`lakegate.information_schema.columns`) and `system.metadata.table_comments`.
//!
//! Every translation ends in the catalog queries of [`crate::introspect`] or an ordinary statement, so it is
//! governed and audited as any other; values and names enter the produced text only as quoted literals.

use std::ops::ControlFlow;

use sqlparser::ast::{Ident, ObjectNamePart, TableFactor, VisitMut, VisitorMut};
use sqlparser::dialect::{GenericDialect, PostgreSqlDialect};
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::error::SqlError;
use crate::rewrite::RewriteError;
use crate::rewrite::print::string_literal;

/// The one catalog the gateway shows to Trino clients.
pub const CATALOG: &str = "lakegate";

/// A statement ready for the session.
#[derive(Debug, PartialEq)]
pub struct Translation {
    pub sql: String,
    /// For `SHOW COLUMNS` / `DESCRIBE`: the table named, which does not exist (for this user) when the listing
    /// is empty, as Trino reports it.
    pub table: Option<String>,
    /// For `PREPARE` and `DEALLOCATE PREPARE`: what changes in the client's session; nothing runs.
    pub change: Option<SessionChange>,
}

/// A change to the prepared statements the client keeps (Trino keeps them in the client, not the server).
#[derive(Debug, PartialEq)]
pub enum SessionChange {
    /// `X-Trino-Added-Prepare: name=<statement>`.
    Prepared { name: String, sql: String },
    /// `X-Trino-Deallocated-Prepare: name`.
    Deallocated(String),
}

/// The session a Trino request carries: `X-Trino-Catalog`, `X-Trino-Schema`, and the client's prepared
/// statements (`X-Trino-Prepared-Statement`, decoded).
#[derive(Debug, Default, Clone)]
pub struct Defaults {
    pub catalog: Option<String>,
    pub schema: Option<String>,
    pub prepared: Vec<(String, String)>,
}

impl Defaults {
    /// Reads `X-Trino-Prepared-Statement: name=<form-encoded statement>,...` (a statement is form-encoded, so a
    /// `,` in it is `%2C` and cannot split the list).
    pub fn with_prepared_header(mut self, header: Option<&str>) -> Self {
        for entry in header.unwrap_or_default().split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if let Some((name, encoded)) = entry.split_once('=') {
                let sql: String = form_urlencoded::parse(format!("s={encoded}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                self.prepared.push((name.trim().to_owned(), sql));
            }
        }
        self
    }
}

/// Translates one Trino statement.
pub fn translate(sql: &str, defaults: &Defaults) -> Result<Translation, SqlError> {
    let sql = sql.trim().trim_end_matches(';').trim();
    if let Some(change) = prepare_or_deallocate(sql)? {
        return Ok(Translation { sql: String::new(), table: None, change: Some(change) });
    }
    let sql = match execute_prepared(sql, defaults)? {
        Some(immediate) => immediate,
        None => sql.to_owned(),
    };
    let sql = match execute_immediate(&sql)? {
        Some(bound) => bound,
        None => sql,
    };
    if let Some(t) = show(&sql, defaults)? {
        return Ok(t);
    }
    Ok(Translation { sql: qualified_names(&sql), table: None, change: None })
}

/// The first whitespace-separated word of `s` and the rest, trimmed.
fn first_word(s: &str) -> Option<(&str, &str)> {
    let s = s.trim_start();
    let end = s.find(char::is_whitespace).unwrap_or(s.len());
    let (word, rest) = s.split_at(end);
    (!word.is_empty()).then_some((word, rest.trim_start()))
}

/// A statement name as Trino takes it: an unquoted identifier.
fn statement_name(name: &str) -> Result<String, SqlError> {
    let valid = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid { Ok(name.to_ascii_lowercase()) } else { Err(syntax(format!("{name} is not a statement name"))) }
}

/// `PREPARE name FROM <statement>` and `DEALLOCATE PREPARE name`. The statement is not run or decided here: it is
/// decided, like any statement, when `EXECUTE` brings it back.
fn prepare_or_deallocate(sql: &str) -> Result<Option<SessionChange>, SqlError> {
    let Some((verb, rest)) = first_word(sql) else { return Ok(None) };
    if verb.eq_ignore_ascii_case("PREPARE") {
        let Some((name, rest)) = first_word(rest) else { return Err(syntax("PREPARE takes a name")) };
        let Some((_, statement)) = first_word(rest).filter(|(w, _)| w.eq_ignore_ascii_case("FROM")) else {
            return Err(syntax("PREPARE name FROM statement"));
        };
        if statement.is_empty() {
            return Err(syntax("PREPARE name FROM statement"));
        }
        return Ok(Some(SessionChange::Prepared { name: statement_name(name)?, sql: statement.to_owned() }));
    }
    if verb.eq_ignore_ascii_case("DEALLOCATE") {
        let (name, rest) = match first_word(rest) {
            Some((w, rest)) if w.eq_ignore_ascii_case("PREPARE") => first_word(rest).unwrap_or_default(),
            _ => return Err(syntax("DEALLOCATE PREPARE name")),
        };
        if !rest.is_empty() {
            return Err(syntax("DEALLOCATE PREPARE name"));
        }
        return Ok(Some(SessionChange::Deallocated(statement_name(name)?)));
    }
    Ok(None)
}

/// `EXECUTE name [USING ...]`: the statement the client prepared under `name`, as `EXECUTE IMMEDIATE`, so it is
/// bound by the same code.
fn execute_prepared(sql: &str, defaults: &Defaults) -> Result<Option<String>, SqlError> {
    let Some((verb, rest)) = first_word(sql) else { return Ok(None) };
    let Some((name, using)) = first_word(rest) else { return Ok(None) };
    if !verb.eq_ignore_ascii_case("EXECUTE") || name.eq_ignore_ascii_case("IMMEDIATE") {
        return Ok(None);
    }
    let name = statement_name(name)?;
    let Some((_, statement)) = defaults.prepared.iter().find(|(n, _)| n.eq_ignore_ascii_case(&name)) else {
        return Err(SqlError::Rewrite(RewriteError::Unsupported(format!(
            "prepared statement {name} is not defined (the client sends it in X-Trino-Prepared-Statement)"
        ))));
    };
    Ok(Some(format!("EXECUTE IMMEDIATE {} {using}", string_literal(statement))))
}

fn unsupported(what: impl Into<String>) -> SqlError {
    SqlError::Rewrite(RewriteError::Unsupported(what.into()))
}

fn syntax(what: impl Into<String>) -> SqlError {
    SqlError::Rewrite(RewriteError::Syntax(what.into()))
}

/// Tokens without whitespace and comments.
fn words(sql: &str) -> Result<Vec<Token>, SqlError> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().map_err(|e| syntax(e.to_string()))?;
    Ok(tokens.into_iter().filter(|t| !matches!(t, Token::Whitespace(_))).collect())
}

fn is_keyword(t: Option<&Token>, keyword: &str) -> bool {
    matches!(t, Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(keyword))
}

/// `EXECUTE IMMEDIATE '<sql>' USING p1, ...`: the statement with each `?` replaced, in order, by its parameter
/// as a literal. Only literals are accepted as parameters (the trino client sends nothing else).
fn execute_immediate(sql: &str) -> Result<Option<String>, SqlError> {
    let tokens = words(sql)?;
    if !(is_keyword(tokens.first(), "EXECUTE") && is_keyword(tokens.get(1), "IMMEDIATE")) {
        return Ok(None);
    }
    let Some(Token::SingleQuotedString(inner)) = tokens.get(2) else {
        return Err(syntax("EXECUTE IMMEDIATE takes the statement as a string literal"));
    };
    let params = match tokens.get(3) {
        None => Vec::new(),
        Some(_) if is_keyword(tokens.get(3), "USING") => parameters(tokens.get(4..).unwrap_or_default())?,
        Some(other) => return Err(syntax(format!("unexpected {other} after the statement of EXECUTE IMMEDIATE"))),
    };
    bind(inner, &params).map(Some)
}

/// The USING list as literals of the PostgreSQL dialect.
fn parameters(tokens: &[Token]) -> Result<Vec<String>, SqlError> {
    let mut out = Vec::new();
    for group in tokens.split(|t| *t == Token::Comma) {
        let literal = match group {
            [Token::Number(n, _)] => n.clone(),
            [Token::Minus, Token::Number(n, _)] => format!("-{n}"),
            [Token::SingleQuotedString(s)] => string_literal(s),
            [Token::Word(w)] if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("null") => "NULL".into(),
            [Token::Word(w)] if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("true") => "TRUE".into(),
            [Token::Word(w)] if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("false") => "FALSE".into(),
            [Token::Word(w), Token::SingleQuotedString(s)] if w.quote_style.is_none() => {
                match w.value.to_ascii_uppercase().as_str() {
                    // A number spelled as text: inlined as the number it must be.
                    "DOUBLE" | "DECIMAL" | "REAL" if is_number(s) => s.clone(),
                    "DATE" | "TIMESTAMP" | "TIME" => format!("{} {}", w.value.to_ascii_uppercase(), string_literal(s)),
                    _ => return Err(unsupported(format!("parameter {w} '{s}'"))),
                }
            }
            other => {
                let text: String = other.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ");
                return Err(unsupported(format!("parameter {text}: only literals can be bound")));
            }
        };
        out.push(literal);
    }
    Ok(out)
}

/// A finite number in plain notation (it is inlined unquoted, so nothing else may pass).
fn is_number(s: &str) -> bool {
    s.chars().all(|c| c.is_ascii_digit() || "+-.eE".contains(c)) && s.parse::<f64>().is_ok_and(f64::is_finite)
}

/// Replaces each `?` placeholder of `sql` (outside literals and quoted names) by the next parameter.
fn bind(sql: &str, params: &[String]) -> Result<String, SqlError> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location().map_err(|e| syntax(e.to_string()))?;
    // Byte offsets of (line, column) positions, both 1-based and counted in characters.
    let mut offsets = Vec::new();
    for t in &tokens {
        if t.token == Token::Placeholder("?".into()) {
            offsets.push((t.span.start.line, t.span.start.column));
        }
    }
    if offsets.len() != params.len() {
        return Err(SqlError::Parameter {
            index: params.len(),
            reason: format!("the statement has {} parameters, {} were given", offsets.len(), params.len()),
        });
    }
    let mut out = String::with_capacity(sql.len());
    let (mut line, mut column) = (1u64, 1u64);
    let mut next = offsets.iter().zip(params).peekable();
    for c in sql.chars() {
        match next.peek() {
            Some(((l, col), param)) if (*l, *col) == (line, column) && c == '?' => {
                out.push_str(param);
                next.next();
            }
            _ => out.push(c),
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    if next.peek().is_some() {
        return Err(SqlError::Internal("a placeholder was not found where the tokenizer put it".into()));
    }
    Ok(out)
}

/// Trino's other SHOW statements, which the gateway does not answer.
const TRINO_SHOW: &[&str] =
    &["FUNCTIONS", "SESSION", "CREATE", "GRANTS", "ROLES", "ROLE", "CURRENT", "STATS", "BRANCHES"];

/// `SHOW ...` and `DESCRIBE`.
fn show(sql: &str, defaults: &Defaults) -> Result<Option<Translation>, SqlError> {
    let tokens = words(sql)?;
    let describe = is_keyword(tokens.first(), "DESCRIBE") || is_keyword(tokens.first(), "DESC");
    if !describe && !is_keyword(tokens.first(), "SHOW") {
        return Ok(None);
    }
    let (what, rest) = if describe {
        ("COLUMNS", tokens.get(1..).unwrap_or_default())
    } else {
        match tokens.get(1) {
            Some(Token::Word(w)) => (w.value.as_str(), tokens.get(2..).unwrap_or_default()),
            _ => return Err(syntax("SHOW what?")),
        }
    };
    let what = what.to_ascii_uppercase();
    // The gateway has no session properties and no roles: the listings are empty, in Trino's columns.
    let empty = |columns: &[&str]| {
        let list: Vec<String> = columns.iter().map(|c| format!("CAST(NULL AS VARCHAR) AS \"{c}\"")).collect();
        Ok(Some(Translation { sql: format!("SELECT {} WHERE FALSE", list.join(", ")), table: None, change: None }))
    };
    match (what.as_str(), rest) {
        ("SESSION", []) => return empty(&["Name", "Value", "Default", "Type", "Description"]),
        ("ROLES", []) => return empty(&["Role"]),
        ("CURRENT", [Token::Word(w)]) if w.value.eq_ignore_ascii_case("ROLES") => return empty(&["Role"]),
        _ => {}
    }
    // Anything else (`SHOW search_path`...) is the session's, as on the PostgreSQL front.
    if !["CATALOGS", "SCHEMAS", "TABLES", "COLUMNS"].contains(&what.as_str()) {
        return if TRINO_SHOW.contains(&what.as_str()) { Err(unsupported(format!("SHOW {what}"))) } else { Ok(None) };
    }
    // [FROM | IN] name [LIKE 'pattern']
    let rest = match rest.first() {
        Some(Token::Word(w)) if !describe && ["FROM", "IN"].contains(&w.value.to_ascii_uppercase().as_str()) => {
            rest.get(1..).unwrap_or_default()
        }
        _ => rest,
    };
    let (name, rest) = dotted(rest);
    let like = match rest {
        [] => None,
        [Token::Word(w), Token::SingleQuotedString(p)] if w.value.eq_ignore_ascii_case("LIKE") => Some(p.clone()),
        _ => return Err(unsupported(format!("SHOW {what} with these clauses"))),
    };
    let like =
        |column: &str| like.as_ref().map(|p| format!(" AND {column} LIKE {}", string_literal(p))).unwrap_or_default();
    let sql = match what.as_str() {
        "CATALOGS" => {
            format!(
                "SELECT datname AS \"Catalog\" FROM pg_catalog.pg_database WHERE TRUE{} ORDER BY 1",
                like("datname")
            )
        }
        "SCHEMAS" => {
            catalog_of(name.first().filter(|_| name.len() == 1), defaults)?;
            if name.len() > 1 {
                return Err(syntax("SHOW SCHEMAS FROM takes a catalog"));
            }
            format!(
                "SELECT schema_name AS \"Schema\" FROM information_schema.schemata WHERE TRUE{} ORDER BY 1",
                like("schema_name")
            )
        }
        "TABLES" => {
            let schema = match name.as_slice() {
                [] => defaults.schema.clone().ok_or_else(|| syntax("no schema: name one, or set the session's"))?,
                [schema] => schema.clone(),
                [catalog, schema] => {
                    catalog_of(Some(catalog), defaults)?;
                    schema.clone()
                }
                _ => return Err(syntax("SHOW TABLES FROM takes [catalog.]schema")),
            };
            format!(
                "SELECT table_name AS \"Table\" FROM information_schema.tables WHERE table_schema = {}{} ORDER BY 1",
                string_literal(&schema),
                like("table_name")
            )
        }
        "COLUMNS" => {
            let (schema, table) = match name.as_slice() {
                [table] => (
                    defaults.schema.clone().ok_or_else(|| syntax("no schema: name one, or set the session's"))?,
                    table.clone(),
                ),
                [schema, table] => (schema.clone(), table.clone()),
                [catalog, schema, table] => {
                    catalog_of(Some(catalog), defaults)?;
                    (schema.clone(), table.clone())
                }
                _ => return Err(syntax("SHOW COLUMNS FROM takes [[catalog.]schema.]table")),
            };
            let sql = format!(
                "SELECT column_name AS \"Column\", data_type AS \"Type\", '' AS \"Extra\", '' AS \"Comment\" \
                 FROM information_schema.columns WHERE table_schema = {} AND table_name = {}{} \
                 ORDER BY ordinal_position",
                string_literal(&schema),
                string_literal(&table),
                like("column_name")
            );
            return Ok(Some(Translation { sql, table: Some(format!("{CATALOG}.{schema}.{table}")), change: None }));
        }
        other => return Err(unsupported(format!("SHOW {other}"))),
    };
    Ok(Some(Translation { sql, table: None, change: None }))
}

/// A dotted name at the start of `tokens` (folded as Trino folds: to lower case) and the tokens after it.
fn dotted(tokens: &[Token]) -> (Vec<String>, &[Token]) {
    let mut parts = Vec::new();
    let mut i = 0;
    while let Some(token @ Token::Word(w)) = tokens.get(i) {
        if is_keyword(Some(token), "LIKE") && !parts.is_empty() {
            break;
        }
        parts.push(if w.quote_style.is_some() { w.value.clone() } else { w.value.to_ascii_lowercase() });
        i += 1;
        if tokens.get(i) == Some(&Token::Period) {
            i += 1;
        } else {
            break;
        }
    }
    (parts, tokens.get(i..).unwrap_or_default())
}

/// Checks that a named (or the session's) catalog is the gateway's.
fn catalog_of(named: Option<&String>, defaults: &Defaults) -> Result<(), SqlError> {
    match named.or(defaults.catalog.as_ref()) {
        Some(c) if c != CATALOG => {
            Err(SqlError::Catalog { sqlstate: "3D000", message: format!("Catalog '{c}' does not exist") })
        }
        _ => Ok(()),
    }
}

/// Relation names as Trino spells them, for the session's PostgreSQL dialect: `lakegate.s.t` -> `s.t`, and
/// `system.metadata.table_comments` -> a derived table over `information_schema.tables` (no table has a
/// comment). Text that does not parse is left as it is, for the session to report.
fn qualified_names(sql: &str) -> String {
    struct Names {
        changed: bool,
    }
    impl VisitorMut for Names {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
            let TableFactor::Table { name, alias, args: None, .. } = factor else { return ControlFlow::Continue(()) };
            let parts: Vec<String> = name
                .0
                .iter()
                .map(|p| match p {
                    ObjectNamePart::Identifier(i) if i.quote_style.is_some() => i.value.clone(),
                    ObjectNamePart::Identifier(i) => i.value.to_ascii_lowercase(),
                    ObjectNamePart::Function(f) => f.name.value.to_ascii_lowercase(),
                })
                .collect();
            match parts.as_slice() {
                [catalog, ..] if parts.len() == 3 && catalog == CATALOG => {
                    name.0.remove(0);
                    self.changed = true;
                }
                [system, metadata, comments]
                    if system == "system" && metadata == "metadata" && comments == "table_comments" =>
                {
                    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, TABLE_COMMENTS) else {
                        return ControlFlow::Continue(());
                    };
                    if let Some(sqlparser::ast::Statement::Query(query)) = statements.pop() {
                        let alias = alias.clone().unwrap_or_else(|| sqlparser::ast::TableAlias {
                            explicit: true,
                            name: Ident::new("table_comments"),
                            columns: vec![],
                            at: None,
                        });
                        *factor =
                            TableFactor::Derived { lateral: false, subquery: query, alias: Some(alias), sample: None };
                        self.changed = true;
                    }
                }
                _ => {}
            }
            ControlFlow::Continue(())
        }
    }
    let Ok(mut statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else { return sql.to_owned() };
    let mut names = Names { changed: false };
    for s in &mut statements {
        let _ = s.visit(&mut names);
    }
    if !names.changed {
        return sql.to_owned();
    }
    statements.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

const TABLE_COMMENTS: &str = "SELECT table_catalog AS catalog_name, table_schema AS schema_name, table_name, \
     CAST(NULL AS TEXT) AS comment FROM information_schema.tables";

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sql: &str) -> String {
        let defaults =
            Defaults { catalog: Some("lakegate".into()), schema: Some("sales".into()), prepared: Vec::new() };
        translate(sql, &defaults).map(|t| t.sql).unwrap_or_else(|e| format!("error {}: {e}", e.sqlstate()))
    }

    #[test]
    fn legacy_prepared_statements_live_in_the_client_and_execute_as_execute_immediate() {
        let none = Defaults::default();
        let prepared = translate("PREPARE st_1 FROM SELECT name FROM hr.employees WHERE id = ?", &none).unwrap();
        assert_eq!(
            prepared.change,
            Some(SessionChange::Prepared {
                name: "st_1".into(),
                sql: "SELECT name FROM hr.employees WHERE id = ?".into()
            })
        );
        assert!(prepared.sql.is_empty(), "PREPARE runs nothing");
        let header = "other=SELECT+1,st_1=SELECT+name+FROM+hr.employees+WHERE+id+%3D+%3F+AND+dept+%3C%3E+%27a%2Cb%27";
        let session = Defaults::default().with_prepared_header(Some(header));
        let executed = translate("EXECUTE st_1 USING 7", &session).unwrap();
        assert_eq!(executed.sql, "SELECT name FROM hr.employees WHERE id = 7 AND dept <> 'a,b'");
        let unknown = translate("EXECUTE st_2 USING 7", &session).unwrap_err();
        assert_eq!(unknown.sqlstate(), "0A000");
        assert_eq!(
            translate("DEALLOCATE PREPARE st_1", &none).unwrap().change,
            Some(SessionChange::Deallocated("st_1".into()))
        );
        for bad in ["PREPARE FROM SELECT 1", "PREPARE st TO SELECT 1", "PREPARE \"x\" FROM SELECT 1", "DEALLOCATE st"] {
            assert_eq!(translate(bad, &none).unwrap_err().sqlstate(), "42601", "{bad}");
        }
    }

    #[test]
    fn show_session_and_roles_are_empty_listings() {
        assert_eq!(
            t("SHOW SESSION"),
            "SELECT CAST(NULL AS VARCHAR) AS \"Name\", CAST(NULL AS VARCHAR) AS \"Value\", CAST(NULL AS VARCHAR) AS \
             \"Default\", CAST(NULL AS VARCHAR) AS \"Type\", CAST(NULL AS VARCHAR) AS \"Description\" WHERE FALSE"
        );
        assert_eq!(t("SHOW CURRENT ROLES"), t("SHOW ROLES"));
        assert!(t("SHOW GRANTS").starts_with("error 0A000"));
    }

    #[test]
    fn execute_immediate_binds_literals_in_order_and_keeps_question_marks_inside_strings() {
        assert_eq!(
            t(
                "EXECUTE IMMEDIATE 'SELECT name FROM hr.employees WHERE id = ? AND name <> ''?'' AND dept = ?' USING 1, 'O''Brien'"
            ),
            "SELECT name FROM hr.employees WHERE id = 1 AND name <> '?' AND dept = 'O''Brien'"
        );
        assert_eq!(t("EXECUTE IMMEDIATE 'SELECT ?' USING DOUBLE '1.5'"), "SELECT 1.5");
        assert_eq!(t("EXECUTE IMMEDIATE 'SELECT 1'"), "SELECT 1");
    }

    #[test]
    fn execute_immediate_refuses_anything_but_literals_and_counts_parameters() {
        assert!(t("EXECUTE IMMEDIATE 'SELECT ?' USING (SELECT 1)").starts_with("error 0A000"));
        assert!(t("EXECUTE IMMEDIATE 'SELECT ?' USING DOUBLE '1; drop'").starts_with("error 0A000"));
        assert!(t("EXECUTE IMMEDIATE 'SELECT ?, ?' USING 1").starts_with("error 22P02"));
    }

    #[test]
    fn show_statements_become_catalog_queries_with_quoted_names() {
        assert!(t("SHOW CATALOGS").contains("FROM pg_catalog.pg_database"));
        assert!(t("SHOW SCHEMAS FROM lakegate").contains("FROM information_schema.schemata"));
        assert!(t("SHOW TABLES").contains("table_schema = 'sales'"));
        assert!(t("SHOW TABLES FROM \"it's\"").contains("table_schema = 'it''s'"));
        assert!(t("DESCRIBE hr.employees").contains("table_schema = 'hr' AND table_name = 'employees'"));
        assert!(t("SHOW COLUMNS FROM lakegate.hr.employees").contains("table_name = 'employees'"));
        assert!(t("SHOW TABLES FROM other.hr").starts_with("error 3D000"));
        assert!(t("SHOW FUNCTIONS").starts_with("error 0A000"));
        assert_eq!(t("SHOW search_path"), "SHOW search_path");
    }

    #[test]
    fn catalog_qualified_names_lose_the_catalog() {
        assert_eq!(
            t("SELECT table_name FROM lakegate.information_schema.tables"),
            "SELECT table_name FROM information_schema.tables"
        );
        assert!(t("SELECT comment FROM system.metadata.table_comments").contains("FROM information_schema.tables"));
    }
}

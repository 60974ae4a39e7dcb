//! Small builders and readers for sqlparser's AST. Everything the rewriter adds to a statement is built
//! here as AST nodes, never as text, so a value can never become syntax.

use sqlparser::ast::{
    BinaryOperator, CaseWhen, CastKind, DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArgumentList,
    FunctionArguments, Ident, ObjectName, ObjectNamePart, Value, helpers::attached_token::AttachedToken,
};

/// An identifier's name as PostgreSQL sees it: unquoted names fold to lower case (ASCII only, as
/// PostgreSQL's `downcase_identifier` does), quoted ones stay exact.
pub(crate) fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() { ident.value.clone() } else { ident.value.to_ascii_lowercase() }
}

/// The folded parts of an object name; `None` if a part is not a plain identifier.
pub(crate) fn fold_name(name: &ObjectName) -> Option<Vec<String>> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Some(fold(ident)),
            ObjectNamePart::Function(_) => None,
        })
        .collect()
}

/// A double-quoted identifier. Names the rewriter has resolved are written back quoted so the backend
/// reads exactly the name we resolved (no keyword or case surprise such as an unquoted `ONLY`).
pub(crate) fn qident(name: &str) -> Ident {
    Ident::with_quote('"', name)
}

/// `"a"."b"`.
pub(crate) fn qcolumn(qualifier: &str, column: &str) -> Expr {
    Expr::CompoundIdentifier(vec![qident(qualifier), qident(column)])
}

/// A quoted object name from folded parts.
pub(crate) fn qname(parts: &[&str]) -> ObjectName {
    ObjectName::from(parts.iter().map(|p| qident(p)).collect::<Vec<_>>())
}

/// A string literal (quotes inside are escaped by the printer).
pub(crate) fn string_lit(value: &str) -> Expr {
    Expr::value(Value::SingleQuotedString(value.to_string()))
}

/// `NULL`.
pub(crate) fn null_lit() -> Expr {
    Expr::value(Value::Null)
}

/// `TRUE` / `FALSE`.
pub(crate) fn bool_lit(b: bool) -> Expr {
    Expr::value(Value::Boolean(b))
}

/// An integer literal.
pub(crate) fn int_lit(n: u32) -> Expr {
    Expr::value(Value::Number(n.to_string(), false))
}

/// `CAST(expr AS ty)`.
pub(crate) fn cast(expr: Expr, data_type: DataType) -> Expr {
    Expr::Cast { kind: CastKind::Cast, expr: Box::new(expr), data_type, array: false, format: None }
}

/// A call of a plain (unqualified, lower-case) function.
pub(crate) fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(FunctionArgumentList {
            duplicate_treatment: None,
            args: args.into_iter().map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a))).collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

fn binary(left: Expr, op: BinaryOperator, right: Expr) -> Expr {
    Expr::BinaryOp { left: Box::new(left), op, right: Box::new(right) }
}

/// `(a) || (b)` without extra parentheses (both are simple here).
pub(crate) fn concat_op(left: Expr, right: Expr) -> Expr {
    binary(left, BinaryOperator::StringConcat, right)
}

/// The conjunction of the parts, each parenthesised; `None` for no parts (no condition).
pub(crate) fn and_all(parts: Vec<Expr>) -> Option<Expr> {
    combine(parts, BinaryOperator::And)
}

/// The disjunction of the parts, each parenthesised; `None` for no parts.
pub(crate) fn or_all(parts: Vec<Expr>) -> Option<Expr> {
    combine(parts, BinaryOperator::Or)
}

fn combine(parts: Vec<Expr>, op: BinaryOperator) -> Option<Expr> {
    parts.into_iter().map(paren).reduce(|acc, e| binary(acc, op.clone(), e))
}

/// `(e)`, without doubling parentheses that are already there.
pub(crate) fn paren(e: Expr) -> Expr {
    match e {
        Expr::Nested(_) => e,
        other => Expr::Nested(Box::new(other)),
    }
}

/// `CASE WHEN c1 THEN r1 ... ELSE e END`.
pub(crate) fn case(arms: Vec<(Expr, Expr)>, else_result: Option<Expr>) -> Expr {
    Expr::Case {
        case_token: AttachedToken::empty(),
        end_token: AttachedToken::empty(),
        operand: None,
        conditions: arms.into_iter().map(|(condition, result)| CaseWhen { condition, result }).collect(),
        else_result: else_result.map(Box::new),
    }
}

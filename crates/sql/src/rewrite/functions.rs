//! Allowlists. Anything not listed is refused: a function can read files, other tables or server state
//! (`pg_read_file`, `dblink`, `query_to_xml`, `current_setting`, `lo_*`), so "unknown" means "no".

use sqlparser::ast::{BinaryOperator, DataType, UnaryOperator};

use crate::rewrite::ast::fold_name;

/// Scalar functions allowed in policy filters and masks as well as in user queries.
const SCALAR: &[&str] = &[
    "abs",
    "btrim",
    "ceil",
    "ceiling",
    "char_length",
    "character_length",
    "coalesce",
    "concat",
    "concat_ws",
    "current_date",
    "current_time",
    "current_timestamp",
    "date_part",
    "date_trunc",
    "exp",
    "floor",
    "greatest",
    "initcap",
    "least",
    "left",
    "length",
    "ln",
    "localtime",
    "localtimestamp",
    "log",
    "lower",
    "lpad",
    "ltrim",
    "md5",
    "mod",
    "now",
    "nullif",
    "power",
    "replace",
    "reverse",
    "right",
    "round",
    "rpad",
    "rtrim",
    "sign",
    "split_part",
    "sqrt",
    "starts_with",
    "strpos",
    "substr",
    "to_char",
    "to_date",
    "to_number",
    "to_timestamp",
    "translate",
    "trunc",
    "upper",
];

/// Further functions allowed in user queries only: aggregates, window functions and a few scalars whose
/// inputs (whole rows, arrays) only ever come from the governed derived tables.
const USER_ONLY: &[&str] = &[
    "age",
    "array_agg",
    "array_length",
    "avg",
    "bool_and",
    "bool_or",
    "cardinality",
    "corr",
    "count",
    "covar_pop",
    "covar_samp",
    "cume_dist",
    "dense_rank",
    "every",
    "first_value",
    "format",
    "generate_series",
    "json_agg",
    "json_build_object",
    "jsonb_agg",
    "jsonb_build_object",
    "lag",
    "last_value",
    "lead",
    "make_date",
    "max",
    "min",
    "mode",
    "nth_value",
    "ntile",
    "percent_rank",
    "percentile_cont",
    "percentile_disc",
    "pi",
    "random",
    "rank",
    "regexp_replace",
    "repeat",
    "row_number",
    "row_to_json",
    "stddev",
    "stddev_pop",
    "stddev_samp",
    "string_agg",
    "sum",
    "to_json",
    "to_jsonb",
    "unnest",
    "var_pop",
    "var_samp",
    "variance",
];

/// Functions whose value changes between two evaluations in one statement. Writes evaluate the new values
/// twice (once for the policy check, once for the write), so these are refused in writes.
const VOLATILE: &[&str] = &["random"];

/// Set-returning functions allowed as a FROM item: they read no table.
const TABLE_FUNCTIONS: &[&str] = &["generate_series", "unnest"];

/// Where a function is called from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FnContext {
    /// A policy filter or mask.
    Policy,
    /// A user's read query.
    Read,
    /// A user's write statement (INSERT/UPDATE/DELETE), including its subqueries.
    Write,
}

/// The function's canonical (folded, unqualified) name if it is allowed, else `None`. Schema-qualified
/// names are refused: `pg_catalog.lower` is fine in itself, but qualification is how lookalike functions
/// in user schemas would be reached.
pub(crate) fn allowed_function(name: &sqlparser::ast::ObjectName, ctx: FnContext) -> Option<String> {
    let parts = fold_name(name)?;
    let [single] = parts.as_slice() else {
        return None;
    };
    let n = single.as_str();
    let ok =
        SCALAR.contains(&n) || (ctx != FnContext::Policy && USER_ONLY.contains(&n) && !TABLE_FUNCTIONS.contains(&n));
    let volatile_in_write = ctx == FnContext::Write && VOLATILE.contains(&n);
    (ok && !volatile_in_write).then(|| n.to_string())
}

/// The canonical name of an allowed table function in FROM.
pub(crate) fn allowed_table_function(name: &sqlparser::ast::ObjectName) -> Option<String> {
    let parts = fold_name(name)?;
    let [single] = parts.as_slice() else {
        return None;
    };
    TABLE_FUNCTIONS.contains(&single.as_str()).then(|| single.clone())
}

/// Binary operators allowed. PostgreSQL operators are functions; custom ones (`OPERATOR(...)`, unknown
/// symbols) could call anything, so only the standard comparison, arithmetic, string, regex and JSON ones pass.
pub(crate) fn allowed_binary(op: &BinaryOperator) -> bool {
    use BinaryOperator as B;
    matches!(
        op,
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
            | B::Or
            | B::BitwiseOr
            | B::BitwiseAnd
            | B::PGBitwiseXor
            | B::PGBitwiseShiftLeft
            | B::PGBitwiseShiftRight
            | B::PGExp
            | B::PGRegexMatch
            | B::PGRegexIMatch
            | B::PGRegexNotMatch
            | B::PGRegexNotIMatch
            | B::PGLikeMatch
            | B::PGILikeMatch
            | B::PGNotLikeMatch
            | B::PGNotILikeMatch
            | B::PGStartsWith
            | B::Arrow
            | B::LongArrow
            | B::HashArrow
            | B::HashLongArrow
            | B::AtArrow
            | B::ArrowAt
            | B::Question
            | B::QuestionAnd
            | B::QuestionPipe
    )
}

/// Unary operators allowed.
pub(crate) fn allowed_unary(op: &UnaryOperator) -> bool {
    matches!(op, UnaryOperator::Plus | UnaryOperator::Minus | UnaryOperator::Not | UnaryOperator::PGAbs)
}

/// Types a value may be cast to. Types whose input function looks things up in the catalogs (`regclass`,
/// `regproc`, ...) or that are user-defined are refused.
pub(crate) fn allowed_type(ty: &DataType) -> bool {
    use DataType as D;
    match ty {
        D::Character(_)
        | D::Char(_)
        | D::CharacterVarying(_)
        | D::CharVarying(_)
        | D::Varchar(_)
        | D::Uuid
        | D::Numeric(_)
        | D::Decimal(_)
        | D::Dec(_)
        | D::Float(_)
        | D::Int2(_)
        | D::SmallInt(_)
        | D::Int(_)
        | D::Int4(_)
        | D::Int8(_)
        | D::Integer(_)
        | D::BigInt(_)
        | D::Float4
        | D::Real
        | D::Float8
        | D::Double(_)
        | D::DoublePrecision
        | D::Bool
        | D::Boolean
        | D::Date
        | D::Time(..)
        | D::Timestamp(..)
        | D::Interval { .. }
        | D::JSON
        | D::JSONB
        | D::Text
        | D::Bytea => true,
        D::Array(elem) => match elem {
            sqlparser::ast::ArrayElemTypeDef::AngleBracket(t)
            | sqlparser::ast::ArrayElemTypeDef::SquareBracket(t, _)
            | sqlparser::ast::ArrayElemTypeDef::Parenthesis(t) => allowed_type(t),
            sqlparser::ast::ArrayElemTypeDef::None => false,
        },
        D::Custom(name, modifiers) => {
            modifiers.is_empty()
                && fold_name(name).is_some_and(|parts| {
                    matches!(
                        parts.as_slice(),
                        [n] if ["timestamptz", "timetz", "bpchar", "int2", "int4", "int8", "float4", "float8"].contains(&n.as_str())
                    )
                })
        }
        _ => false,
    }
}

//! The compiled data filter: what one principal may see of one table, in a form the SQL rewriter carries out.
//!
//! Cedar decides per table and per column; this module turns the *reasons* of those decisions (the permits
//! that held, with their `@row_filter`, `@mask` and `@mask_expr` annotations) into row filters, a column list
//! and masks. Filter and mask texts stay text here: the policy module does not parse SQL.

use std::collections::BTreeMap;

/// A governed table's name, lower case as PostgreSQL folds unquoted identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    /// A name from its two parts.
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        TableName { schema: schema.into(), name: name.into() }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What a statement does to a table; each needs its own permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableOp {
    Select,
    Insert,
    Update,
    Delete,
}

impl TableOp {
    /// The Cedar action deciding this operation.
    pub fn action(self) -> &'static str {
        match self {
            TableOp::Select => "SelectTable",
            TableOp::Insert => "InsertTable",
            TableOp::Update => "UpdateTable",
            TableOp::Delete => "DeleteTable",
        }
    }
}

/// What one principal may see of (or do to) one governed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFilter {
    pub table: TableName,
    /// Permissive row filters of the permits that hold: rows visible = OR of these; `None` = a permit without
    /// a filter = all rows. Empty = no permit holds: the table is not visible at all.
    pub permissive: Vec<Option<String>>,
    /// Restrictive conditions, ANDed with the permissive union (PostgreSQL RESTRICTIVE policies).
    pub restrictive: Vec<String>,
    /// Visible columns in table order, each with when it is clear and how it is masked elsewhere.
    pub columns: Vec<ColumnAccess>,
    /// Values for `principal.<name>` references in filters and masks (`sub` is the user name).
    pub principal: BTreeMap<String, String>,
    /// Ids of the policies that contributed, for audit.
    pub policies: Vec<String>,
}

/// One visible column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnAccess {
    pub name: String,
    pub clear: Condition,
    pub masked: Option<(Mask, Condition)>,
}

impl ColumnAccess {
    /// A column shown clear on every row: the common case.
    pub fn clear(name: impl Into<String>) -> Self {
        ColumnAccess { name: name.into(), clear: Condition::Always, masked: None }
    }
}

/// On which rows something holds: SQL boolean expressions over the table's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Always,
    Never,
    AnyOf(Vec<String>),
}

/// How a masked value is shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mask {
    Redact,
    Last4,
    Hash,
    Null,
    /// A SQL expression of the column, the column written as its own name.
    Expr(String),
}

impl Mask {
    /// Reads `@mask` / `@mask_expr` annotation values.
    pub fn from_annotations(mask: Option<&str>, expr: Option<&str>) -> Option<Mask> {
        if let Some(e) = expr {
            return Some(Mask::Expr(e.to_owned()));
        }
        Some(match mask? {
            "redact" => Mask::Redact,
            "last4" => Mask::Last4,
            "hash" => Mask::Hash,
            // Validation refuses other values; treat anything unknown as the most hiding mask.
            _ => Mask::Null,
        })
    }
}

impl Condition {
    /// The condition under which at least one of `filters` holds (`None` = unconditionally).
    pub fn any_of(filters: &[Option<String>]) -> Condition {
        if filters.is_empty() {
            return Condition::Never;
        }
        if filters.iter().any(Option::is_none) {
            return Condition::Always;
        }
        let mut texts: Vec<String> = filters.iter().flatten().cloned().collect();
        texts.sort();
        texts.dedup();
        Condition::AnyOf(texts)
    }

    /// Simplifies a cell condition given the table's visible rows: when every row filter that can make a row
    /// visible also makes the cell clear, the cell is clear on every visible row.
    pub fn within_rows(self, permissive: &[Option<String>]) -> Condition {
        match self {
            Condition::AnyOf(cell) => {
                let covered = !permissive.is_empty()
                    && permissive.iter().all(|row| row.as_ref().is_some_and(|r| cell.contains(r)));
                if covered { Condition::Always } else { Condition::AnyOf(cell) }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> Option<String> {
        Some(s.to_owned())
    }

    #[test]
    fn a_permit_without_filter_makes_the_condition_unconditional() {
        assert_eq!(Condition::any_of(&[f("a = 1"), None]), Condition::Always);
        assert_eq!(Condition::any_of(&[]), Condition::Never);
    }

    #[test]
    fn a_cell_condition_equal_to_the_row_filter_is_always_true_on_visible_rows() {
        let cell = Condition::any_of(&[f("region = principal.region")]);
        assert_eq!(cell.within_rows(&[f("region = principal.region")]), Condition::Always);
        let cell = Condition::any_of(&[f("region = principal.region")]);
        assert_eq!(
            cell.within_rows(&[f("region = principal.region"), f("amount < 10")]),
            Condition::AnyOf(vec!["region = principal.region".into()])
        );
    }
}

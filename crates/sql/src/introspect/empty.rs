//! Which catalog queries are empty by their shape: a query that must read a catalog Lakegate keeps empty
//! (constraints, indexes, functions, policies...) through an inner join has no rows, whatever else it does.
//!
//! Tools send such queries with constructs DataFusion cannot plan (`unnest` of index keys, correlated
//! subqueries, `generate_subscripts`); answering them here, without planning, keeps them working. The analysis
//! only ever concludes "empty" when no row can exist, so it can hide nothing that would otherwise show.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, GroupByExpr, JoinOperator, Query, Select, SelectItem, SetExpr, SetOperator, TableFactor, TableWithJoins,
};

use super::folded;
use super::tables::EMPTY_TABLES;

/// The leftmost SELECT of `query` (whose items name the result's columns) when the query has no rows.
pub(super) fn empty_select(query: &Query) -> Option<&Select> {
    if !query_is_empty(query) {
        return None;
    }
    leftmost(&query.body)
}

fn leftmost(body: &SetExpr) -> Option<&Select> {
    match body {
        SetExpr::Select(select) => Some(select),
        SetExpr::SetOperation { left, .. } => leftmost(left),
        SetExpr::Query(q) => leftmost(&q.body),
        _ => None,
    }
}

pub(super) fn query_is_empty(query: &Query) -> bool {
    set_is_empty(&query.body)
}

fn set_is_empty(body: &SetExpr) -> bool {
    match body {
        SetExpr::Select(select) => select_is_empty(select),
        SetExpr::Query(q) => query_is_empty(q),
        SetExpr::SetOperation { op, left, right, .. } => match op {
            SetOperator::Intersect => set_is_empty(left) || set_is_empty(right),
            SetOperator::Except | SetOperator::Minus => set_is_empty(left),
            _ => set_is_empty(left) && set_is_empty(right),
        },
        _ => false,
    }
}

fn select_is_empty(select: &Select) -> bool {
    // An aggregate without GROUP BY answers one row even over no input.
    let grouped = match &select.group_by {
        GroupByExpr::All(_) => true,
        GroupByExpr::Expressions(exprs, _) => !exprs.is_empty(),
    };
    if !grouped && select.projection.iter().any(item_aggregates) {
        return false;
    }
    select.from.iter().any(joined_is_empty)
}

fn item_aggregates(item: &SelectItem) -> bool {
    let expr = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
        _ => return false,
    };
    /// Finds an aggregate call of this SELECT, not of a subquery inside it.
    struct Aggregates {
        depth: usize,
        found: bool,
    }
    impl sqlparser::ast::Visitor for Aggregates {
        type Break = ();
        fn pre_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth += 1;
            ControlFlow::Continue(())
        }
        fn post_visit_query(&mut self, _: &Query) -> ControlFlow<()> {
            self.depth = self.depth.saturating_sub(1);
            ControlFlow::Continue(())
        }
        fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
            if self.depth == 0 && super::is_aggregate(e) {
                self.found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut v = Aggregates { depth: 0, found: false };
    let _ = sqlparser::ast::Visit::visit(expr, &mut v);
    v.found
}

/// A FROM item is empty when its first relation is, or when any relation it is inner- or cross-joined with is.
fn joined_is_empty(item: &TableWithJoins) -> bool {
    factor_is_empty(&item.relation)
        || item.joins.iter().any(|j| {
            matches!(
                j.join_operator,
                JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_) | JoinOperator::Semi(_)
            ) && factor_is_empty(&j.relation)
        })
}

fn factor_is_empty(factor: &TableFactor) -> bool {
    match factor {
        TableFactor::Table { name, args: None, .. } => {
            let parts = folded(name);
            let catalog = match parts.as_slice() {
                [table] | [_, table] => EMPTY_TABLES.iter().any(|(n, _)| n == table),
                _ => false,
            };
            catalog && (parts.len() == 1 || parts.first().is_some_and(|s| s == "pg_catalog"))
        }
        TableFactor::Derived { subquery, .. } => query_is_empty(subquery),
        TableFactor::NestedJoin { table_with_joins, .. } => joined_is_empty(table_with_joins),
        _ => false,
    }
}

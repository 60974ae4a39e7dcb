//! Unit tests: each test name states the rule it pins. Shared fixture: a principal `alice` of region EU
//! in department `eng`, and three governed tables.

mod fence;
mod hostile;
mod masks;
mod reads;
mod session;
mod writes;

use std::collections::BTreeMap;
use std::ops::ControlFlow;

use sqlparser::ast::visit_relations;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::rewrite::ast::fold_name;
use crate::rewrite::{
    Catalog, ColumnAccess, ColumnDef, Condition, Mask, Operation, RewriteError, Rewriter, Rewritten, TableFilter,
    TableName,
};

/// The view `sales.orders` becomes for alice (region EU): `note` hidden, `card` shown as last 4.
pub(crate) const ORDERS_VIEW: &str = "(SELECT \"orders\".\"id\" AS \"id\", \"orders\".\"region\" AS \"region\", \
\"orders\".\"amount\" AS \"amount\", \"orders\".\"customer\" AS \"customer\", \
'************' || right(CAST(\"orders\".\"card\" AS TEXT), 4) AS \"card\" \
FROM \"sales\".\"orders\" WHERE (\"orders\".\"region\" = 'EU') OFFSET 0)";

/// [`ORDERS_VIEW`] without the optimisation fence, as the query's own SELECT over `sales.orders` alone gets it when
/// its WHERE only compares plain columns with constants.
pub(crate) fn orders_view_flat() -> String {
    ORDERS_VIEW.replace(" OFFSET 0)", ")")
}

/// The inner FROM and filter every governed reference must carry, per table (with or without the fence: the
/// fence has tests of its own, in `fence.rs`).
const WRAPPED: &[(&str, &str, &str)] = &[
    ("sales", "orders", "FROM \"sales\".\"orders\" WHERE (\"orders\".\"region\" = 'EU')"),
    // Views without a row filter carry no OFFSET 0 fence: there are no hidden rows to protect.
    ("hr", "employees", "FROM \"hr\".\"employees\")"),
    ("public", "products", "FROM \"public\".\"products\")"),
];

pub(crate) fn catalog() -> Catalog {
    let mut c = Catalog::new();
    c.add_table(
        TableName::new("sales", "orders"),
        vec![
            ColumnDef::new("id", "integer"),
            ColumnDef::new("region", "text"),
            ColumnDef::new("amount", "numeric(10,2)"),
            ColumnDef::new("customer", "text"),
            ColumnDef::new("card", "text"),
            ColumnDef::new("note", "text"),
        ],
    );
    c.add_table(
        TableName::new("hr", "employees"),
        vec![
            ColumnDef::new("id", "integer"),
            ColumnDef::new("name", "text"),
            ColumnDef::new("ssn", "text"),
            ColumnDef::new("salary", "integer"),
            ColumnDef::new("dept", "text"),
        ],
    );
    c.add_table(
        TableName::new("public", "products"),
        vec![ColumnDef::new("id", "integer"), ColumnDef::new("name", "text")],
    );
    c.add_table(TableName::new("hr", "secrets"), vec![ColumnDef::new("id", "integer")]);
    c
}

pub(crate) fn alice() -> BTreeMap<String, String> {
    [("sub", "alice"), ("region", "EU"), ("dept", "eng")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn filter(table: &TableName, permissive: Vec<Option<&str>>, columns: Vec<ColumnAccess>) -> TableFilter {
    TableFilter {
        table: table.clone(),
        permissive: permissive.into_iter().map(|p| p.map(str::to_string)).collect(),
        restrictive: vec![],
        columns,
        principal: alice(),
        policies: vec![],
    }
}

/// alice's filters.
pub(crate) fn policy(table: &TableName, op: Operation) -> Option<TableFilter> {
    let clear = ColumnAccess::clear;
    match (table.schema.as_str(), table.name.as_str(), op) {
        ("sales", "orders", Operation::Select) => Some(filter(
            table,
            vec![Some("region = principal.region")],
            vec![
                clear("id"),
                clear("region"),
                clear("amount"),
                clear("customer"),
                ColumnAccess {
                    name: "card".into(),
                    clear: Condition::Never,
                    masked: Some((Mask::Last4, Condition::Always)),
                },
            ],
        )),
        ("sales", "orders", _) => Some(filter(
            table,
            vec![Some("region = principal.region")],
            vec![clear("id"), clear("region"), clear("amount"), clear("customer")],
        )),
        ("hr", "employees", Operation::Select) => Some(filter(
            table,
            vec![None],
            vec![
                clear("id"),
                clear("name"),
                clear("dept"),
                ColumnAccess {
                    name: "salary".into(),
                    clear: Condition::AnyOf(vec!["dept = principal.dept".into()]),
                    masked: Some((Mask::Null, Condition::Always)),
                },
            ],
        )),
        ("public", "products", Operation::Select) => Some(filter(table, vec![None], vec![clear("id"), clear("name")])),
        // A permit list that is empty: no permit holds.
        ("hr", "secrets", _) => Some(filter(table, vec![], vec![clear("id")])),
        _ => None,
    }
}

/// Rewrites with alice's filters and the search path `sales, public`.
pub(crate) fn run(sql: &str) -> Result<Rewritten, RewriteError> {
    run_with(sql, &policy)
}

pub(crate) fn run_with(
    sql: &str,
    lookup: &dyn Fn(&TableName, Operation) -> Option<TableFilter>,
) -> Result<Rewritten, RewriteError> {
    let catalog = catalog();
    // As for tables on PostgreSQL (the fence's tests turn it off again).
    Rewriter::new(&catalog, lookup)
        .with_search_path(vec!["sales".into(), "public".into()])
        .with_comparisons_unfenced(&|_| true)
        .rewrite(sql)
}

/// The rewritten text of a one-statement request; panics (failing the test) on refusal.
pub(crate) fn ok(sql: &str) -> String {
    match run(sql) {
        Ok(r) => r.statements.iter().map(|s| s.sql.clone()).collect::<Vec<_>>().join("; "),
        Err(e) => panic!("refused {sql}: {e}"),
    }
}

/// The refusal of a request; panics if it passed.
pub(crate) fn err(sql: &str) -> RewriteError {
    match run(sql) {
        Ok(r) => panic!("passed {sql}: {:?}", r.statements.iter().map(|s| &s.sql).collect::<Vec<_>>()),
        Err(e) => e,
    }
}

/// Asserts a read's output reads governed tables only through their views: the output parses, every
/// relation it names is a governed table inside its view (with the view's filter right after it), a
/// CTE, or an allowed table function, and at least `min_views` views are present.
pub(crate) fn assert_all_wrapped(out: &str, min_views: usize) {
    let statements = match Parser::parse_sql(&PostgreSqlDialect {}, out) {
        Ok(s) => s,
        Err(e) => panic!("output does not parse: {e}: {out}"),
    };
    let mut governed = 0;
    let _ = visit_relations(&statements, |name| {
        let parts = fold_name(name).unwrap_or_default();
        match parts.as_slice() {
            [schema, table] => {
                let known = WRAPPED.iter().any(|(s, t, _)| s == schema && t == table);
                assert!(known, "unexpected relation {name} in {out}");
                governed += 1;
            }
            [_single] => {} // a CTE or generate_series: checked by the tests that produce them
            _ => panic!("unexpected relation {name} in {out}"),
        }
        ControlFlow::<()>::Continue(())
    });
    let wrapped: usize = WRAPPED.iter().map(|(_, _, w)| out.matches(w).count()).sum();
    assert_eq!(governed, wrapped, "a governed reference is not wrapped: {out}");
    assert!(wrapped >= min_views, "expected at least {min_views} views: {out}");
}

/// Asserts a refusal carries this SQLSTATE.
pub(crate) fn assert_state(e: &RewriteError, state: &str) {
    assert_eq!(e.sqlstate(), state, "{e}");
}

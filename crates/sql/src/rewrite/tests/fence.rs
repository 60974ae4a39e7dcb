//! The optimisation fence (`OFFSET 0`) on a row-filtered view: kept wherever a user's predicate could run on hidden
//! rows, dropped only for the query's own SELECT over the one table when its WHERE compares plain columns with
//! constants (which PostgreSQL may then use for index scans, as under native row level security).

use super::*;

const FENCE: &str = "WHERE (\"orders\".\"region\" = 'EU') OFFSET 0)";
const NO_FENCE: &str = "WHERE (\"orders\".\"region\" = 'EU'))";

#[test]
fn a_plain_select_over_the_table_comparing_columns_with_constants_is_unfenced() {
    for sql in [
        "SELECT count(*), sum(amount) FROM sales.orders",
        "SELECT region, sum(amount) FROM sales.orders GROUP BY region ORDER BY 2 DESC LIMIT 3",
        "SELECT * FROM sales.orders WHERE id = 5",
        "SELECT id FROM sales.orders o WHERE o.id >= 5 AND o.id < -3 AND (amount <> 1.5)",
        "SELECT id FROM sales.orders WHERE 5 = id AND customer = 'x' AND region IS NOT NULL",
        "SELECT id FROM sales.orders WHERE id BETWEEN 1 AND 10 AND customer IN ('a', 'b') AND amount IS NULL",
        "SELECT DISTINCT customer FROM sales.orders WHERE id > $1",
        "WITH n AS (SELECT 1 AS one) SELECT id FROM sales.orders WHERE id = 1",
    ] {
        let out = ok(sql);
        assert!(out.contains(NO_FENCE) && !out.contains(FENCE), "{sql} => {out}");
        assert_all_wrapped(&out, 1);
    }
}

#[test]
fn any_other_predicate_or_shape_keeps_the_fence() {
    for sql in [
        // Predicates that could fail, or tell something, on a hidden row.
        "SELECT id FROM sales.orders WHERE 1 / (amount - 5) = 1",
        "SELECT id FROM sales.orders WHERE CAST(customer AS INTEGER) = 5",
        "SELECT id FROM sales.orders WHERE customer = CAST('5' AS TEXT)",
        "SELECT id FROM sales.orders WHERE amount = '1'::numeric",
        "SELECT id FROM sales.orders WHERE customer LIKE 'a%'",
        "SELECT id FROM sales.orders WHERE length(customer) = 3",
        "SELECT id FROM sales.orders WHERE id = 1 OR id = 2",
        "SELECT id FROM sales.orders WHERE NOT id = 1",
        "SELECT id FROM sales.orders WHERE id = amount",
        "SELECT id FROM sales.orders WHERE id IN (SELECT id FROM sales.orders WHERE amount > 1)",
        // A masked column compares its mask, not the stored value.
        "SELECT id FROM sales.orders WHERE card = '************1234'",
        // HAVING without aggregates may be moved into WHERE by PostgreSQL.
        "SELECT region FROM sales.orders GROUP BY region HAVING 1 / (length(region) - 2) = 1",
        // Joins: the other side's predicates meet this table's rows.
        "SELECT o.id FROM sales.orders o JOIN products p ON p.id = o.id",
        "SELECT o.id FROM sales.orders o, products p",
        // Nested: an outer query's predicates may be pushed into a pulled-up subquery or CTE.
        "SELECT * FROM (SELECT * FROM sales.orders) s WHERE 1 / (s.amount - 5) = 1",
        "WITH s AS (SELECT * FROM sales.orders) SELECT * FROM s WHERE 1 / (amount - 5) = 1",
        "SELECT id FROM sales.orders UNION SELECT id FROM sales.orders",
    ] {
        let out = ok(sql);
        assert!(!out.contains(NO_FENCE), "{sql} => {out}");
        assert!(out.contains(FENCE), "{sql} => {out}");
    }
}

#[test]
fn on_an_engine_that_may_cast_the_column_a_comparison_with_a_constant_keeps_the_fence() {
    // DataFusion and Spark read `customer = 5` as a cast of every customer to a number, which fails on some rows.
    let catalog = catalog();
    let other_tables = |t: &TableName| t.schema != "sales";
    let path = || vec!["sales".into(), "public".into()];
    let by_default = Rewriter::new(&catalog, &policy).with_search_path(path());
    let typed_elsewhere =
        Rewriter::new(&catalog, &policy).with_search_path(path()).with_comparisons_unfenced(&other_tables);
    for rewriter in [by_default, typed_elsewhere] {
        for sql in ["SELECT * FROM sales.orders WHERE id = 5", "SELECT id FROM sales.orders WHERE customer = 5"] {
            let out = rewriter.rewrite(sql).unwrap().statements[0].sql.clone();
            assert!(out.contains(FENCE), "{sql} => {out}");
        }
    }
}

#[test]
fn the_fence_can_still_be_turned_off_for_every_view() {
    let catalog = catalog();
    let rewritten = Rewriter::new(&catalog, &policy)
        .with_search_path(vec!["sales".into(), "public".into()])
        .with_optimization_fence(false)
        .rewrite("SELECT id FROM sales.orders WHERE 1 / (amount - 5) = 1")
        .unwrap();
    assert!(rewritten.statements[0].sql.contains(NO_FENCE), "{}", rewritten.statements[0].sql);
}

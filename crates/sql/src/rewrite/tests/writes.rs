use super::*;
use crate::rewrite::StatementKind;

const RAISE: &str =
    "CAST(concat('lakegate: new row violates row-level security policy for table \"orders\"') AS BOOLEAN)";

#[test]
fn insert_values_is_checked_against_the_insert_filter() {
    let out = ok("INSERT INTO sales.orders (id, region) VALUES (1, 'EU')");
    assert_eq!(
        out,
        format!(
            "INSERT INTO \"sales\".\"orders\" (\"id\", \"region\") \
             SELECT CAST(\"lakegate_new\".\"id\" AS INTEGER) AS \"id\", CAST(\"lakegate_new\".\"region\" AS TEXT) AS \"region\" \
             FROM (VALUES (1, 'EU')) AS \"lakegate_new\" (\"id\", \"region\") \
             WHERE CASE WHEN (CAST(\"lakegate_new\".\"region\" AS TEXT) = 'EU') THEN true ELSE {RAISE} END"
        )
    );
}

#[test]
fn insert_kind_and_tables_are_reported() {
    let r = run("INSERT INTO sales.orders (id, region) VALUES (1, 'EU')").unwrap();
    assert_eq!(r.statements[0].kind, StatementKind::Insert);
    assert_eq!(r.statements[0].tables, vec![TableName::new("sales", "orders")]);
}

#[test]
fn insert_select_source_is_governed() {
    let out = ok("INSERT INTO sales.orders (id, region) SELECT id, 'EU' FROM sales.orders");
    assert!(
        out.contains(&format!("FROM (SELECT \"id\", 'EU' FROM {ORDERS_VIEW} AS \"orders\") AS \"lakegate_new\"")),
        "{out}"
    );
}

#[test]
fn insert_without_column_list_uses_leading_columns() {
    let out = ok("INSERT INTO sales.orders VALUES (1, 'EU')");
    assert!(out.starts_with("INSERT INTO \"sales\".\"orders\" (\"id\", \"region\") SELECT"), "{out}");
}

#[test]
fn insert_into_forbidden_column_is_denied() {
    let e = err("INSERT INTO sales.orders (id, region, note) VALUES (1, 'EU', 'x')");
    assert_eq!(e.to_string(), "permission denied for column note of relation orders");
}

#[test]
fn insert_that_does_not_set_a_checked_column_is_refused() {
    assert_state(&err("INSERT INTO sales.orders (id) VALUES (1)"), "42501");
}

#[test]
fn insert_without_permit_is_denied() {
    assert_state(&err("INSERT INTO hr.employees (id) VALUES (1)"), "42501");
}

#[test]
fn insert_on_conflict_and_returning_are_refused() {
    assert_state(&err("INSERT INTO sales.orders (id, region) VALUES (1, 'EU') ON CONFLICT DO NOTHING"), "0A000");
    assert_state(&err("INSERT INTO sales.orders (id, region) VALUES (1, 'EU') RETURNING id"), "0A000");
}

#[test]
fn update_touches_only_visible_rows_and_checks_new_values() {
    let out = ok("UPDATE sales.orders SET region = 'US' WHERE id = 1");
    // The UPDATE and SELECT filters are the same condition, written once.
    let using = "(\"orders\".\"region\" = 'EU')";
    assert_eq!(
        out,
        format!(
            "UPDATE \"sales\".\"orders\" SET \"region\" = 'US' WHERE {using} AND (CASE WHEN {using} THEN \
             CASE WHEN \"id\" = 1 THEN CASE WHEN (('US') = 'EU') THEN true ELSE {RAISE} END ELSE false END ELSE false END)"
        )
    );
}

#[test]
fn update_of_forbidden_column_is_denied() {
    assert_state(&err("UPDATE sales.orders SET note = 'x'"), "42501");
}

#[test]
fn update_where_on_masked_column_is_denied() {
    let e = err("UPDATE sales.orders SET amount = 1 WHERE card = '4111111111111111'");
    assert_eq!(e.to_string(), "permission denied for column card of relation orders");
}

#[test]
fn update_from_source_is_governed() {
    let out = ok("UPDATE sales.orders o SET amount = p.id FROM products p WHERE p.id = o.id");
    assert!(out.contains("FROM (SELECT \"products\".\"id\" AS \"id\", \"products\".\"name\" AS \"name\" FROM \"public\".\"products\") AS \"p\""), "{out}");
    assert!(out.starts_with("UPDATE \"sales\".\"orders\" \"o\" SET \"amount\" = \"p\".\"id\" FROM (SELECT"), "{out}");
}

#[test]
fn update_with_volatile_function_is_refused() {
    assert_state(&err("UPDATE sales.orders SET amount = random()"), "42501");
}

#[test]
fn delete_touches_only_visible_rows() {
    let out = ok("DELETE FROM sales.orders WHERE amount > 10");
    let using = "(\"orders\".\"region\" = 'EU')";
    assert_eq!(
        out,
        format!(
            "DELETE FROM \"sales\".\"orders\" WHERE {using} AND (CASE WHEN {using} THEN \"amount\" > 10 ELSE false END)"
        )
    );
}

#[test]
fn delete_without_where_gets_the_filter() {
    let out = ok("DELETE FROM sales.orders");
    assert!(out.ends_with("DELETE FROM \"sales\".\"orders\" WHERE (\"orders\".\"region\" = 'EU')"), "{out}");
}

#[test]
fn delete_using_source_is_governed() {
    let out = ok("DELETE FROM sales.orders o USING hr.employees e WHERE e.id = o.id");
    assert!(out.contains("USING (SELECT \"employees\".\"id\" AS \"id\""), "{out}");
    assert!(out.contains("FROM \"hr\".\"employees\") AS \"e\""), "{out}");
}

#[test]
fn delete_without_permit_is_denied() {
    assert_state(&err("DELETE FROM hr.employees"), "42501");
}

#[test]
fn write_inside_a_cte_is_refused() {
    assert_state(&err("WITH d AS (DELETE FROM sales.orders RETURNING id) SELECT * FROM d"), "42501");
}

#[test]
fn default_keyword_in_values_is_refused() {
    assert_state(&err("INSERT INTO sales.orders (id, region) VALUES (1, DEFAULT)"), "0A000");
}

use super::*;

#[test]
fn governed_table_in_from_becomes_its_view() {
    assert_eq!(ok("SELECT id FROM sales.orders"), format!("SELECT \"id\" FROM {} AS \"orders\"", orders_view_flat()));
}

#[test]
fn alias_of_governed_table_is_kept() {
    assert_eq!(
        ok("SELECT o.id FROM sales.orders o"),
        format!("SELECT \"o\".\"id\" FROM {} AS \"o\"", orders_view_flat())
    );
}

#[test]
fn filter_applied_to_joined_tables() {
    let out = ok("SELECT o.id, e.name FROM sales.orders o JOIN hr.employees e ON e.id = o.id");
    assert_all_wrapped(&out, 2);
}

#[test]
fn filter_applied_in_subquery_in_where() {
    let out = ok("SELECT name FROM products WHERE id IN (SELECT id FROM sales.orders)");
    assert_all_wrapped(&out, 2);
}

#[test]
fn filter_applied_in_subquery_in_select_list() {
    let out = ok("SELECT (SELECT max(amount) FROM sales.orders) AS m");
    assert_all_wrapped(&out, 1);
}

#[test]
fn filter_applied_in_exists_and_having_subqueries() {
    let out = ok("SELECT region FROM sales.orders GROUP BY region \
                  HAVING count(*) > (SELECT count(*) FROM hr.employees) \
                  AND EXISTS (SELECT 1 FROM sales.orders o2 WHERE o2.region = orders.region)");
    assert_all_wrapped(&out, 3);
}

#[test]
fn filter_applied_in_join_on_subquery() {
    let out = ok("SELECT p.id FROM products p JOIN products q \
                  ON q.id IN (SELECT id FROM sales.orders)");
    assert_all_wrapped(&out, 3);
}

#[test]
fn filter_applied_in_cte_body() {
    let out = ok("WITH eu AS (SELECT * FROM sales.orders) SELECT * FROM eu");
    assert_all_wrapped(&out, 1);
    assert!(out.starts_with("WITH \"eu\" AS (SELECT * FROM (SELECT"), "{out}");
}

#[test]
fn filter_applied_on_both_sides_of_union() {
    let out = ok("SELECT id FROM sales.orders UNION ALL SELECT id FROM sales.orders ORDER BY id");
    assert_eq!(out.matches("FROM \"sales\".\"orders\" WHERE").count(), 2);
    assert_all_wrapped(&out, 2);
}

#[test]
fn filter_applied_in_lateral_subquery() {
    let out = ok("SELECT p.id, x.amount FROM products p, \
                  LATERAL (SELECT amount FROM sales.orders o WHERE o.id = p.id) x");
    assert_all_wrapped(&out, 2);
}

#[test]
fn cte_named_like_a_table_is_the_cte() {
    let out = ok("WITH orders AS (SELECT 1 AS x) SELECT x FROM orders");
    assert_eq!(out, "WITH \"orders\" AS (SELECT 1 AS \"x\") SELECT \"x\" FROM \"orders\"");
}

#[test]
fn cte_named_like_a_table_does_not_shadow_schema_qualified_reference() {
    let out = ok("WITH orders AS (SELECT 1 AS x) SELECT * FROM sales.orders");
    assert_all_wrapped(&out, 1);
}

#[test]
fn cte_named_like_a_table_does_not_shadow_reference_in_own_body() {
    // Non-recursive: the body's `orders` is the table (search path `sales`), not the CTE itself.
    let out = ok("WITH orders AS (SELECT * FROM orders) SELECT * FROM orders");
    assert_all_wrapped(&out, 1);
    assert!(out.ends_with("SELECT * FROM \"orders\""), "{out}");
}

#[test]
fn cte_named_like_a_table_shadows_it_in_nested_subqueries() {
    let out = ok("WITH orders AS (SELECT 1 AS id) SELECT * FROM products WHERE id IN (SELECT id FROM orders)");
    assert_all_wrapped(&out, 1);
    assert!(!out.contains("\"sales\""), "{out}");
}

#[test]
fn cte_defined_in_subquery_is_not_visible_outside() {
    let out = ok("SELECT * FROM (WITH orders AS (SELECT 1 AS id) SELECT id FROM orders) s, orders");
    assert_all_wrapped(&out, 1);
}

#[test]
fn recursive_cte_refers_to_itself() {
    let out = ok("WITH RECURSIVE orders(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM orders WHERE n < 3) \
                  SELECT n FROM orders");
    assert_all_wrapped(&out, 0);
    assert!(!out.contains("\"sales\""), "{out}");
}

#[test]
fn quoted_uppercase_name_is_a_different_unknown_relation() {
    let e = err("SELECT * FROM \"SALES\".\"ORDERS\"");
    assert_state(&e, "42P01");
    assert_eq!(e.to_string(), "relation \"SALES.ORDERS\" does not exist");
}

#[test]
fn a_system_catalog_spelled_with_unicode_escapes_is_refused_here() {
    // The gateway sends a statement to the catalog emulation only when its text shows `pg_` or
    // `information_schema`; one that hides the name in escapes reaches the rewriter and must be refused there:
    // as a syntax error while the parser reads no `U&` identifiers, as an unknown relation once it does.
    let e = err("SELECT * FROM U&\"pg\\005fcatalog\".U&\"pg\\005fauthid\"");
    assert!(["42601", "42P01"].contains(&e.sqlstate()), "{e}: {}", e.sqlstate());
}

#[test]
fn unquoted_uppercase_name_folds_to_the_governed_table() {
    assert_all_wrapped(&ok("SELECT ID FROM SALES.ORDERS"), 1);
}

#[test]
fn quoted_lowercase_name_is_the_governed_table() {
    assert_all_wrapped(&ok("SELECT \"id\" FROM \"sales\".\"orders\""), 1);
}

#[test]
fn star_expands_to_visible_columns_only() {
    let out = ok("SELECT * FROM sales.orders");
    assert_eq!(out, format!("SELECT * FROM {} AS \"orders\"", orders_view_flat()));
    assert!(!out.contains("note"), "{out}");
}

#[test]
fn qualified_star_is_kept_over_the_view() {
    let out = ok("SELECT o.*, p.* FROM sales.orders o, products p");
    assert!(out.starts_with("SELECT \"o\".*, \"p\".* FROM"), "{out}");
    assert_all_wrapped(&out, 2);
}

#[test]
fn schema_qualified_star_becomes_the_view_alias() {
    let out = ok("SELECT sales.orders.* FROM sales.orders");
    assert!(out.starts_with("SELECT \"orders\".* FROM"), "{out}");
}

#[test]
fn schema_qualified_column_becomes_alias_qualified() {
    let out = ok("SELECT sales.orders.amount FROM sales.orders WHERE sales.orders.id = 1");
    assert!(out.starts_with("SELECT \"orders\".\"amount\" FROM"), "{out}");
    assert!(out.ends_with("WHERE \"orders\".\"id\" = 1"), "{out}");
}

#[test]
fn schema_qualified_column_of_aliased_table_is_an_error() {
    assert_state(&err("SELECT sales.orders.amount FROM sales.orders o"), "42P01");
}

#[test]
fn forbidden_column_in_select_list_is_denied() {
    let e = err("SELECT note FROM sales.orders");
    assert_state(&e, "42501");
    assert_eq!(e.to_string(), "permission denied for column note of relation orders");
}

#[test]
fn forbidden_column_in_where_is_denied() {
    let e = err("SELECT id FROM hr.employees WHERE ssn = '123-45-6789'");
    assert_eq!(e.to_string(), "permission denied for column ssn of relation employees");
}

#[test]
fn forbidden_column_in_order_by_is_denied() {
    assert_state(&err("SELECT id FROM hr.employees ORDER BY ssn"), "42501");
}

#[test]
fn forbidden_column_in_group_by_is_denied() {
    assert_state(&err("SELECT count(*) FROM hr.employees GROUP BY ssn"), "42501");
}

#[test]
fn forbidden_column_in_function_argument_is_denied() {
    assert_state(&err("SELECT length(e.ssn) FROM hr.employees e"), "42501");
}

#[test]
fn forbidden_column_in_join_using_is_denied() {
    let e = err("SELECT id FROM hr.employees JOIN products USING (ssn)");
    assert_eq!(e.to_string(), "permission denied for column ssn of relation employees");
}

#[test]
fn forbidden_column_in_having_is_denied() {
    assert_state(&err("SELECT dept FROM hr.employees GROUP BY dept HAVING max(ssn) > '1'"), "42501");
}

#[test]
fn forbidden_column_in_correlated_subquery_is_denied() {
    assert_state(
        &err("SELECT id FROM products p WHERE EXISTS (SELECT 1 FROM hr.employees e WHERE e.ssn = p.name)"),
        "42501",
    );
}

#[test]
fn forbidden_column_through_schema_qualified_name_is_denied() {
    assert_state(&err("SELECT hr.employees.ssn FROM hr.employees"), "42501");
}

#[test]
fn output_alias_in_order_by_is_not_a_column() {
    let out = ok("SELECT name AS ssn FROM hr.employees ORDER BY ssn");
    assert!(out.ends_with("ORDER BY \"ssn\""), "{out}");
}

#[test]
fn unknown_table_does_not_exist() {
    let e = err("SELECT * FROM sales.refunds");
    assert_state(&e, "42P01");
    assert_eq!(e.to_string(), "relation \"sales.refunds\" does not exist");
}

#[test]
fn unqualified_name_outside_search_path_does_not_exist() {
    assert_state(&err("SELECT * FROM employees"), "42P01");
}

#[test]
fn table_with_no_permit_is_denied() {
    let e = err("SELECT * FROM hr.secrets");
    assert_state(&e, "42501");
    assert_eq!(e.to_string(), "permission denied for table secrets");
}

#[test]
fn table_the_lookup_knows_nothing_of_is_denied() {
    let none = |_: &TableName, _: Operation| None;
    assert_state(&run_with("SELECT 1 FROM products", &none).unwrap_err(), "42501");
}

#[test]
fn pg_catalog_is_refused() {
    assert_state(&err("SELECT * FROM pg_catalog.pg_authid"), "42501");
}

#[test]
fn information_schema_is_refused() {
    assert_state(&err("SELECT * FROM information_schema.columns"), "42501");
}

#[test]
fn unqualified_system_catalog_is_refused() {
    assert_state(&err("SELECT * FROM pg_class"), "42501");
}

#[test]
fn permit_without_filter_shows_all_rows() {
    let out = ok("SELECT name FROM products");
    // All rows are visible: no fence, so the backend may use the user's predicates for index scans.
    assert!(out.contains("FROM \"public\".\"products\") AS"), "{out}");
    assert!(!out.contains("OFFSET 0"), "{out}");
}

#[test]
fn permissive_filters_are_ored_and_restrictive_anded() {
    let lookup = |t: &TableName, _: Operation| {
        Some(TableFilter {
            table: t.clone(),
            permissive: vec![Some("region = 'EU'".into()), Some("region = 'US'".into())],
            restrictive: vec!["amount < 100".into()],
            columns: vec![ColumnAccess::clear("id")],
            principal: alice(),
            policies: vec![],
        })
    };
    let out = run_with("SELECT id FROM sales.orders WHERE id + 1 > 2", &lookup).unwrap().statements[0].sql.clone();
    assert!(
        out.contains("WHERE ((\"orders\".\"region\" = 'EU') OR (\"orders\".\"region\" = 'US')) AND (\"orders\".\"amount\" < 100) OFFSET 0"),
        "{out}"
    );
}

#[test]
fn principal_attribute_with_a_quote_stays_a_literal() {
    let lookup = |t: &TableName, _: Operation| {
        Some(TableFilter {
            table: t.clone(),
            permissive: vec![Some("customer = principal.sub".into())],
            restrictive: vec![],
            columns: vec![ColumnAccess::clear("id")],
            principal: [("sub".to_string(), "O'Brien'); DROP TABLE x; --".to_string())].into(),
            policies: vec![],
        })
    };
    let r = run_with("SELECT id FROM sales.orders", &lookup).unwrap();
    let out = &r.statements[0].sql;
    assert!(out.contains("WHERE (\"orders\".\"customer\" = 'O''Brien''); DROP TABLE x; --')"), "{out}");
    // The output is one statement with the value inside a literal.
    assert_eq!(Parser::parse_sql(&PostgreSqlDialect {}, out).unwrap().len(), 1);
}

#[test]
fn missing_principal_attribute_becomes_null() {
    let lookup = |t: &TableName, _: Operation| {
        Some(TableFilter {
            table: t.clone(),
            permissive: vec![Some("region = principal.country".into())],
            restrictive: vec![],
            columns: vec![ColumnAccess::clear("id")],
            principal: alice(),
            policies: vec![],
        })
    };
    let out = run_with("SELECT id FROM sales.orders", &lookup).unwrap().statements[0].sql.clone();
    assert!(out.contains("WHERE (\"orders\".\"region\" = NULL)"), "{out}");
}

#[test]
fn policy_filter_with_subquery_is_a_policy_error() {
    let lookup = |t: &TableName, _: Operation| {
        Some(TableFilter {
            table: t.clone(),
            permissive: vec![Some("id IN (SELECT id FROM hr.secrets)".into())],
            restrictive: vec![],
            columns: vec![ColumnAccess::clear("id")],
            principal: alice(),
            policies: vec![],
        })
    };
    assert_state(&run_with("SELECT id FROM sales.orders", &lookup).unwrap_err(), "XX000");
}

#[test]
fn policy_filter_with_unknown_function_or_column_is_a_policy_error() {
    for bad in ["pg_read_file('x') = region", "nosuch = 1", "orders.region = 'EU'", "region = 'EU'; DROP TABLE t"] {
        let lookup = move |t: &TableName, _: Operation| {
            Some(TableFilter {
                table: t.clone(),
                permissive: vec![Some(bad.to_string())],
                restrictive: vec![],
                columns: vec![ColumnAccess::clear("id")],
                principal: alice(),
                policies: vec![],
            })
        };
        assert_state(&run_with("SELECT id FROM sales.orders", &lookup).unwrap_err(), "XX000");
    }
}

#[test]
fn generate_series_in_from_is_allowed() {
    let out = ok("SELECT g FROM generate_series(1, 3) AS g");
    assert_eq!(out, "SELECT \"g\" FROM generate_series(1, 3) AS \"g\"");
}

#[test]
fn values_query_passes() {
    assert_eq!(ok("VALUES (1, 'a')"), "VALUES (1, 'a')");
}

#[test]
fn audit_lists_tables_and_applied_filters() {
    let r = run("SELECT o.id FROM sales.orders o JOIN hr.employees e ON e.id = o.id").unwrap();
    let s = &r.statements[0];
    assert_eq!(s.kind, crate::rewrite::StatementKind::Query);
    assert_eq!(s.tables, vec![TableName::new("hr", "employees"), TableName::new("sales", "orders")]);
    assert_eq!(s.applied.len(), 2);
    assert_eq!(s.applied[0].alias, "o");
    assert_eq!(s.applied[0].row_filter.as_deref(), Some("(\"orders\".\"region\" = 'EU')"));
}

#[test]
fn without_fence_views_have_no_offset() {
    let catalog = catalog();
    let out = Rewriter::new(&catalog, &policy)
        .with_optimization_fence(false)
        .rewrite("SELECT id FROM public.products")
        .unwrap();
    assert!(!out.statements[0].sql.contains("OFFSET"), "{}", out.statements[0].sql);
}

#[test]
fn free_function_form_uses_the_default_schema() {
    let catalog = catalog();
    let r = crate::rewrite::rewrite("SELECT id FROM products", &catalog, &policy, Some("public")).unwrap();
    assert_all_wrapped(&r.statements[0].sql, 1);
}

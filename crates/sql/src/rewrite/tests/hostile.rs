//! Hostile input: every query either is refused or comes out reading governed tables only through
//! their views.

use super::*;

/// Queries that must be refused, with the SQLSTATE.
const REFUSED: &[(&str, &str)] = &[
    ("SELECT set_config('row_security', 'off', false)", "42501"),
    ("SELECT pg_read_file('/etc/passwd')", "42501"),
    ("SELECT pg_ls_dir('.')", "42501"),
    ("SELECT lo_import('/etc/passwd')", "42501"),
    ("SELECT * FROM dblink('host=x', 'SELECT 1') AS t(a int)", "42501"),
    ("SELECT current_setting('data_directory')", "42501"),
    ("SELECT query_to_xml('SELECT * FROM sales.orders', true, true, '')", "42501"),
    ("SELECT pg_catalog.lower(name) FROM products", "42501"),
    ("SELECT \"pg_read_file\"('x')", "42501"),
    ("SELECT * FROM pg_catalog.pg_shadow", "42501"),
    ("SELECT * FROM pg_stat_activity", "42501"),
    ("SELECT * FROM information_schema.tables", "42501"),
    ("SELECT 1; SELECT * FROM pg_catalog.pg_class", "42501"),
    ("SELECT id FROM products; DROP TABLE sales.orders", "42501"),
    ("SELECT id FROM products; SELECT note FROM sales.orders", "42501"),
    ("CREATE TABLE x (a int)", "42501"),
    ("ALTER TABLE sales.orders DISABLE ROW LEVEL SECURITY", "42501"),
    ("DROP TABLE sales.orders", "42501"),
    ("TRUNCATE sales.orders", "42501"),
    ("GRANT SELECT ON sales.orders TO PUBLIC", "42501"),
    ("COPY sales.orders TO STDOUT", "42501"),
    ("COPY (SELECT * FROM sales.orders) TO '/tmp/x'", "42501"),
    ("SET ROLE postgres", "42501"),
    ("RESET ROLE", "42501"),
    ("LISTEN ch", "42501"),
    ("SELECT pg_advisory_lock(1)", "42501"),
    ("SELECT pg_advisory_unlock_all() FROM sales.orders", "42501"),
    ("CLOSE c", "42501"),
    ("NOTIFY ch, 'x'", "42501"),
    ("DO $$ BEGIN PERFORM 1; END $$", "42601"),
    ("CALL p()", "42501"),
    ("PREPARE q AS SELECT note FROM sales.orders", "42501"),
    ("EXECUTE q", "42501"),
    ("DECLARE c CURSOR FOR SELECT * FROM sales.orders", "42501"),
    ("LOCK TABLE sales.orders", "42501"),
    ("VACUUM sales.orders", "42501"),
    ("EXPLAIN ANALYZE DELETE FROM sales.orders", "42501"),
    ("EXPLAIN SELECT * FROM sales.orders", "42501"),
    ("SELECT * INTO leaked FROM sales.orders", "42501"),
    ("SELECT * FROM sales.orders FOR UPDATE", "42501"),
    ("TABLE sales.orders", "42601"),
    ("SELECT * FROM sales.orders*", "42601"),
    ("SELECT * FROM ONLY sales.orders", "42601"),
    ("SELECT note FROM sales.orders", "42501"),
    ("SELECT \"note\" FROM sales.orders", "42501"),
    ("SELECT NOTE FROM sales.orders", "42501"),
    ("SELECT x.ssn FROM (SELECT 1) s, hr.employees x", "42501"),
    ("SELECT 1 FROM hr.employees e WHERE e.ssn LIKE '1%'", "42501"),
    ("SELECT CAST('pg_authid' AS regclass)", "42501"),
    ("SELECT 'pg_authid'::regclass", "42501"),
    ("SELECT id FROM products WHERE id OPERATOR(pg_catalog.=) 1", "42501"),
    ("SELECT * FROM \"Sales\".orders", "42P01"),
    ("SELECT * FROM sales.orders_archive", "42P01"),
    ("SELECT * FROM db.sales.orders", "0A000"),
    ("SELECT * FROM sales.orders AS o(a, b)", "0A000"),
    ("SELECT * FROM sales.orders TABLESAMPLE SYSTEM (50)", "0A000"),
    ("WITH x AS (UPDATE sales.orders SET amount = 0 RETURNING *) SELECT * FROM x", "42501"),
    ("SELECT * FROM hr.secrets", "42501"),
    ("SELECT * FROM generate_series(1, 2) g, pg_sleep(10)", "42501"),
    ("SELECT * FROM json_to_recordset('[]') AS x(a int)", "42501"),
    ("SELECT row_to_json(t) FROM pg_roles t", "42501"),
];

#[test]
fn hostile_queries_are_refused() {
    assert!(REFUSED.len() >= 50);
    for (sql, state) in REFUSED {
        let e = err(sql);
        assert_eq!(e.sqlstate(), *state, "{sql}: {e}");
    }
}

/// Queries that may pass, but only with every governed reference wrapped (and at least this many views).
const WRAPPED_OR_REFUSED: &[(&str, usize)] = &[
    ("SELECT * FROM sales.orders -- WHERE region = 'US'", 1),
    ("SELECT * FROM /* hidden */ sales.orders", 1),
    ("SELECT * FROM sales . orders", 1),
    ("SELECT $$x$$ AS a, * FROM sales.orders", 1),
    ("SELECT $tag$ ') OR 1=1 -- $tag$ FROM sales.orders", 1),
    ("SELECT E'\\'' FROM sales.orders", 1),
    ("SELECT U&\"d\\0061t\\+000061\" FROM sales.orders", 1),
    ("SELECT * FROM (SELECT * FROM (SELECT * FROM sales.orders) a) b", 1),
    ("SELECT * FROM sales.orders o1, sales.orders o2", 2),
    ("SELECT * FROM sales.orders NATURAL JOIN hr.employees", 2),
    ("SELECT * FROM (sales.orders o JOIN hr.employees e ON o.id = e.id)", 2),
    ("SELECT * FROM sales.orders UNION SELECT * FROM sales.orders", 2),
    ("SELECT id FROM sales.orders INTERSECT SELECT id FROM hr.employees EXCEPT SELECT id FROM products", 3),
    ("WITH a AS (SELECT * FROM sales.orders), b AS (SELECT * FROM a) SELECT * FROM b", 1),
    ("WITH \"orders\" AS (SELECT * FROM sales.orders) SELECT * FROM orders, sales.orders", 2),
    ("WITH RECURSIVE r AS (SELECT id FROM sales.orders UNION SELECT id FROM r) SELECT * FROM r", 1),
    ("WITH only AS (SELECT 1) SELECT * FROM only", 0),
    ("SELECT (SELECT count(*) FROM sales.orders WHERE amount > x.id) FROM products x", 2),
    ("SELECT * FROM products p WHERE EXISTS (SELECT 1 FROM sales.orders o WHERE o.id = p.id AND o.region = 'US')", 2),
    ("SELECT * FROM products p, LATERAL (SELECT * FROM sales.orders o WHERE o.id = p.id) x", 2),
    ("SELECT ARRAY(SELECT id FROM sales.orders)", 1),
    ("SELECT id FROM products WHERE id = ANY(SELECT id FROM sales.orders)", 2),
    ("SELECT id FROM products WHERE id > ALL(SELECT id FROM sales.orders)", 2),
    ("SELECT count(*) FILTER (WHERE amount > 1) OVER w FROM sales.orders WINDOW w AS (PARTITION BY region)", 1),
    ("SELECT string_agg(customer, ',' ORDER BY id) FROM sales.orders", 1),
    ("SELECT CASE WHEN id IN (SELECT id FROM sales.orders) THEN 1 END FROM products", 2),
    ("SELECT * FROM generate_series(1, (SELECT count(*) FROM sales.orders)) g", 1),
    ("SELECT * FROM unnest(ARRAY(SELECT id FROM sales.orders)) u", 1),
    ("SELECT * FROM sales.orders WHERE 1/(amount - 1234) = 0", 1),
    ("SELECT * FROM sales.orders o WHERE o.region = 'US' OR true", 1),
    ("SELECT o FROM sales.orders o", 1),
    ("SELECT to_json(o) FROM sales.orders o", 1),
    ("SELECT * FROM sales.orders LIMIT 1 OFFSET (SELECT count(*) FROM hr.employees)", 2),
    ("VALUES ((SELECT max(amount) FROM sales.orders))", 1),
    ("SELECT * FROM (VALUES (1)) v(x) JOIN sales.orders ON v.x = orders.id", 1),
    ("SELECT DISTINCT ON (region) region FROM sales.orders ORDER BY region", 1),
    ("SELECT $1::int FROM sales.orders", 1),
    ("SELECT * FROM sales.\"orders\"", 1),
    ("select * from SALES.Orders", 1),
];

#[test]
fn hostile_queries_read_governed_tables_only_through_views() {
    for (sql, views) in WRAPPED_OR_REFUSED {
        match run(sql) {
            Ok(r) => {
                for s in &r.statements {
                    assert_all_wrapped(&s.sql, *views);
                    assert!(!s.sql.contains("\"note\""), "{sql} => {}", s.sql);
                }
            }
            Err(e) => panic!("expected {sql} to pass wrapped, got {e}"),
        }
    }
}

#[test]
fn cte_named_only_is_written_back_quoted_so_only_is_not_a_keyword() {
    let out = ok("WITH only AS (SELECT 1 AS a) SELECT * FROM only pg_shadow");
    assert_eq!(out, "WITH \"only\" AS (SELECT 1 AS \"a\") SELECT * FROM \"only\" \"pg_shadow\"");
}

#[test]
fn multi_statement_with_one_bad_statement_is_refused_whole() {
    assert_state(&err("SELECT id FROM products; SELECT pg_read_file('x'); SELECT 1"), "42501");
}

#[test]
fn multi_statement_passes_when_every_statement_passes() {
    let r = run("SELECT id FROM products; SET application_name = 'x'; SELECT id FROM sales.orders").unwrap();
    assert_eq!(r.statements.len(), 3);
}

#[test]
fn subqueries_nested_200_deep_are_refused_not_overflowing() {
    let sql = format!("SELECT {}1{}", "(SELECT ".repeat(200), ")".repeat(200));
    assert_state(&err(&sql), "54001");
}

#[test]
fn derived_tables_nested_200_deep_are_refused() {
    let sql = format!("SELECT * FROM {}products{}", "(SELECT * FROM ".repeat(200), ") x".repeat(200));
    assert_state(&err(&sql), "54001");
}

#[test]
fn long_left_deep_boolean_chain_is_refused_not_overflowing() {
    let sql = format!("SELECT 1 FROM products WHERE id = 1{}", " OR id = 1".repeat(20_000));
    assert_state(&err(&sql), "54001");
}

#[test]
fn oversized_sql_is_refused() {
    let sql = format!("SELECT 1 /* {} */", "x".repeat(crate::rewrite::DEFAULT_MAX_SQL_LEN));
    assert_state(&err(&sql), "54000");
}

#[test]
fn garbage_is_a_syntax_error() {
    assert_state(&err("SELEC * FORM x"), "42601");
}

//! Rewrite time per query: the demo policy compiled for alice (analyst, EU), then parse + rewrite + print of
//! typical queries. Run with `cargo bench -p lakegate-sql --bench rewrite`; `benches/sql.sh` records it in docs/benchmarks.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "benchmark set-up: a failed step ends the run"
)]

use std::collections::BTreeMap;
use std::path::Path;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use lakegate_core::identity::Principal;
use lakegate_core::policy::{self, PolicyStore, RequestContext};
use lakegate_sql::rewrite::{Catalog, Operation, Rewriter, TableFilter, TableName};

const QUERIES: &[(&str, &str)] = &[
    ("point", "SELECT card_number FROM sales.orders WHERE order_id = 7"),
    ("aggregate", "SELECT region, count(*), sum(amount) FROM sales.orders GROUP BY region"),
    (
        "join_cte",
        "WITH big AS (SELECT customer, amount FROM sales.orders WHERE amount > 100) \
         SELECT e.name, b.amount FROM big b JOIN hr.employees e ON e.name = b.customer ORDER BY 2 DESC LIMIT 10",
    ),
    (
        "subqueries_union",
        "SELECT order_id FROM sales.orders WHERE customer IN (SELECT name FROM hr.employees) \
         UNION SELECT id FROM hr.employees WHERE department = 'sales'",
    ),
];

fn bench(c: &mut Criterion) {
    let store = PolicyStore::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")).expect("policies");
    let alice = Principal {
        issuer: "bench".into(),
        subject: "alice".into(),
        groups: vec!["analysts".into()],
        attributes: BTreeMap::from([("region".to_owned(), "EU".to_owned())]),
        token_id: None,
        expires_at: i64::MAX,
        actors: Vec::new(),
    };
    let catalog = Catalog::from_policy(store.catalog());
    let context = RequestContext { front: "sql", ..Default::default() };
    // Filters compiled once, as the gateway does per statement; the rewrite alone is measured here.
    let mut filters: BTreeMap<TableName, TableFilter> = BTreeMap::new();
    for t in [TableName::new("sales", "orders"), TableName::new("hr", "employees")] {
        let f = policy::table_filter_with(&store, &alice, Operation::Select.table_op(), &t, &context).expect("filter");
        filters.insert(t, f);
    }
    let lookup = |t: &TableName, _op: Operation| filters.get(t).cloned();
    let mut group = c.benchmark_group("rewrite");
    for (name, sql) in QUERIES {
        group.bench_with_input(BenchmarkId::from_parameter(name), sql, |b, sql| {
            b.iter(|| Rewriter::new(&catalog, &lookup).rewrite(sql).expect("rewrites"))
        });
    }
    group.finish();
    c.bench_function("compile_filters_for_two_tables", |b| {
        b.iter(|| {
            for t in filters.keys() {
                policy::table_filter_with(&store, &alice, Operation::Select.table_op(), t, &context).expect("filter");
            }
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Statements whose answer their text alone fixes: one SELECT of literals that reads no table, such as `SELECT 1`,
//! which connection pools (SQLAlchemy's `pool_pre_ping`, HikariCP's test query) and BI tools send before lending
//! a connection. The embedded engine runs such a statement once; its answer is kept under the text and given
//! again without planning and without the hop to the engine's runtime: a plan took about a quarter of a
//! millisecond of CPU, a kept answer is a lookup (docs/benchmarks.md).
//!
//! Only what cannot change between two runs is kept: literals and operators on them. A function (`now()`,
//! `random()`, `current_user`), a cast or a typed literal (which may read the session's time zone), a parameter,
//! a subquery or a relation makes a statement not constant, and it is planned every time as before. An answer is
//! kept only once the engine has given it without error, so a statement the engine refuses is refused every
//! time, as before.

use std::ops::ControlFlow;
use std::sync::Arc;

use lakegate_core::per_cpu_cache::PerCpuCache;
use sqlparser::ast::{Expr, SetExpr, Statement, Value, Visit, Visitor};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use crate::rows::Answer;

/// The most bytes of statement text and answer [`ConstantAnswers`] keeps: a client sending ever new constant
/// texts (`SELECT 1`, `SELECT 2`, ...) replaces older answers, it does not grow the process.
const KEPT_WEIGHT: u64 = 256 << 10;

/// Answers of constant statements, by their text.
pub(super) struct ConstantAnswers {
    kept: PerCpuCache<String, Arc<Answer>, AnswerWeight>,
}

#[derive(Clone)]
struct AnswerWeight;

impl quick_cache::Weighter<String, Arc<Answer>> for AnswerWeight {
    fn weight(&self, sql: &String, answer: &Arc<Answer>) -> u64 {
        sql.len() as u64 + answer.weight()
    }
}

impl ConstantAnswers {
    pub(super) fn new() -> Self {
        ConstantAnswers { kept: PerCpuCache::with_weighter(256, KEPT_WEIGHT, AnswerWeight) }
    }

    /// The kept answer to `sql`, if it is a constant statement answered before.
    pub(super) fn get(&self, sql: &str) -> Option<Arc<Answer>> {
        self.kept.get(sql)
    }

    /// Keeps the engine's answer to `sql`, which the caller found [`is_constant`].
    pub(super) fn keep(&self, sql: &str, answer: Arc<Answer>) {
        self.kept.insert(sql.to_owned(), answer);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.kept.len()
    }
}

/// Whether `sql` is one SELECT that reads no relation and whose every expression is a literal (not a parameter)
/// or an operator on literals: a statement whose answer, or error, no session, time or table can change.
pub(super) fn is_constant(sql: &str) -> bool {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return false;
    };
    let [Statement::Query(query)] = statements.as_slice() else {
        return false;
    };
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    if query.with.is_some() || !select.from.is_empty() || select.into.is_some() {
        return false;
    }
    struct Literals;
    impl Visitor for Literals {
        type Break = ();

        fn pre_visit_relation(&mut self, _: &sqlparser::ast::ObjectName) -> ControlFlow<()> {
            ControlFlow::Break(())
        }

        fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
            match expr {
                Expr::Value(v) if !matches!(v.value, Value::Placeholder(_)) => ControlFlow::Continue(()),
                Expr::UnaryOp { .. } | Expr::BinaryOp { .. } | Expr::Nested(_) => ControlFlow::Continue(()),
                _ => ControlFlow::Break(()),
            }
        }
    }
    statements.visit(&mut Literals).is_continue()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::embedded::Embedded;
    use crate::backend::{Backend, Caller};
    use crate::rows::{Cell, Column};
    use futures::TryStreamExt;

    #[test]
    fn literals_and_operators_on_them_are_constant() {
        for sql in [
            "SELECT 1",
            "select 1 as ping",
            "SELECT 'a', true, NULL, -1.5, (1 + 2) * 3",
            "SELECT 1 WHERE 1 = 1 LIMIT 1",
            "SELECT 'x' || 'y' AS joined",
        ] {
            assert!(is_constant(sql), "{sql}");
        }
    }

    #[test]
    fn anything_a_session_time_or_table_can_change_is_not_constant() {
        for sql in [
            "SELECT now()",
            "SELECT random()",
            "SELECT current_user",
            "SELECT $1",
            "SELECT 1 FROM sales.orders",
            "SELECT (SELECT 1)",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM sales.orders)",
            "SELECT 1 UNION SELECT 2",
            "WITH a AS (SELECT 1) SELECT 1",
            "SELECT 1; SELECT 2",
            "SELECT DATE '2026-12-04'",
            "SELECT CAST('2026-12-04' AS timestamp)",
            "SELECT '1 day'::interval",
            "SELECT 1 INTO copy",
            "VALUES (1)",
            "SELECT ping",
            "not sql at all",
        ] {
            assert!(!is_constant(sql), "{sql}");
        }
    }

    async fn engine() -> Embedded {
        let warehouse = tempfile::tempdir().expect("tempdir");
        Embedded::open(warehouse.path(), &lakegate_core::policy::catalog::Catalog::default(), None)
            .await
            .expect("an engine with no tables")
    }

    async fn answer(engine: &Embedded, sql: &str) -> Result<(Vec<Column>, Vec<Vec<Cell>>), crate::error::SqlError> {
        let principal = lakegate_core::identity::Principal {
            issuer: "https://idp".into(),
            subject: "u".into(),
            groups: Vec::new(),
            attributes: Default::default(),
            token_id: None,
            expires_at: 0,
            actors: Vec::new(),
        };
        let caller = Caller { principal: &principal, request_id: "r" };
        let set = engine.query(sql, &caller).await?;
        Ok((set.columns, set.rows.try_collect().await?))
    }

    #[tokio::test]
    async fn a_constant_statement_is_answered_again_as_the_engine_answered_it_first() {
        let engine = engine().await;
        let first = answer(&engine, "SELECT 1 AS ping, 'a' || 'b'").await.expect("answers");
        assert_eq!(engine.constant_answers_kept(), 1);
        let again = answer(&engine, "SELECT 1 AS ping, 'a' || 'b'").await.expect("answers");
        assert_eq!(first, again);
        assert_eq!(again.1, vec![vec![Cell::Int(1), Cell::Text("ab".into())]]);
        assert_eq!(engine.describe("SELECT 1 AS ping, 'a' || 'b'").await.expect("describes"), first.0);
    }

    #[tokio::test]
    async fn the_engine_plans_queries_only() {
        let engine = engine().await;
        for sql in ["SELECT 1 AS a INTO copy", "CREATE TABLE copy (a int)", "SET datafusion.execution.batch_size = 1"] {
            assert!(answer(&engine, sql).await.is_err(), "{sql}");
        }
        assert!(answer(&engine, "SELECT * FROM copy").await.is_err(), "no table was made");
    }

    #[tokio::test]
    async fn what_may_change_or_fails_is_not_kept() {
        let engine = engine().await;
        let one = answer(&engine, "SELECT now() AS t").await.expect("answers");
        assert_eq!(one.1.len(), 1);
        let error = answer(&engine, "SELECT 1 / 0").await.expect_err("division by zero");
        assert_eq!(answer(&engine, "SELECT 1 / 0").await.expect_err("again").to_string(), error.to_string());
        assert_eq!(engine.constant_answers_kept(), 0);
    }
}

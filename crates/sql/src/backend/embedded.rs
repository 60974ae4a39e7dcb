//! The embedded engine: DataFusion over CSV and Parquet files under `<data_dir>/warehouse/<db>/<table>/`.
//!
//! Each governed table whose backend is `embedded` is registered as `<db>.<table>` (a DataFusion schema per
//! database) with the column types of the catalog, so the rewritten SQL resolves exactly as it would on
//! PostgreSQL. Nothing else is registered: the engine cannot reach a file the catalog does not name.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::execution::context::SQLOptions;
use datafusion::logical_expr::{Expr, LogicalPlan, Volatility};
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use super::arrow::{batch_rows, column_type, columns_of};
use super::constant::{ConstantAnswers, is_constant};
use super::iceberg::{IcebergFiles, IcebergTable};
use super::{Backend, Caller};
use crate::error::SqlError;
use crate::rows::{Answer, Column, ColumnType, RowSet};
use lakegate_core::policy::catalog::{Catalog, TableDef, TableFormat};

/// What a statement may plan on this engine: queries only.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// Whether every function `plan` calls, in its subqueries too, is immutable: its result is fixed by its
/// arguments alone. DataFusion calls `now()` and `current_date` stable (fixed within one statement) and
/// `random()` volatile; the catalog context's own functions are immutable over the view they were built for.
fn calls_only_immutable_functions(plan: &LogicalPlan) -> bool {
    let mut immutable = true;
    let walked = plan.apply_with_subqueries(|node| {
        node.apply_expressions(|expr| {
            expr.apply(|e| {
                if let Expr::ScalarFunction(call) = e
                    && call.func.signature().volatility != Volatility::Immutable
                {
                    immutable = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
                Ok(TreeNodeRecursion::Continue)
            })
        })
    });
    walked.is_ok() && immutable
}

/// DataFusion over the warehouse directory.
#[derive(Clone)]
pub struct Embedded {
    ctx: SessionContext,
    /// The answers of statements their text alone fixes (`SELECT 1`); `None` on a context that lives for one
    /// statement.
    constants: Option<Arc<ConstantAnswers>>,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded").finish_non_exhaustive()
    }
}

/// Why the embedded engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("table {table}: {reason}")]
    Table { table: String, reason: String },
}

/// The directory holding a table's files.
pub fn table_dir(warehouse: &Path, db: &str, table: &str) -> PathBuf {
    warehouse.join(db).join(table)
}

impl Embedded {
    /// Registers every embedded table of `catalog`: Iceberg tables through `iceberg`, the others from their
    /// directory under `warehouse`.
    pub async fn open(
        warehouse: &Path,
        catalog: &Catalog,
        iceberg: Option<Arc<dyn IcebergFiles>>,
    ) -> Result<Self, EmbeddedError> {
        let config = SessionConfig::new()
            .with_information_schema(false)
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
            // Results keep plain Utf8 so that every string column reads the same way.
            .set_bool("datafusion.execution.parquet.schema_force_view_types", false)
            .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false);
        let ctx = SessionContext::new_with_state(super::fence::session_state(config));
        for def in catalog.tables.iter().filter(|t| t.backend == super::EMBEDDED) {
            register(&ctx, warehouse, def, iceberg.as_ref()).await?;
        }
        Ok(Embedded { ctx, constants: Some(Arc::new(ConstantAnswers::new())) })
    }

    /// An engine over a context built elsewhere (the per-query catalog context of introspection), whose state
    /// comes from [`super::fence::session_state`].
    pub fn from_context(ctx: SessionContext) -> Self {
        Embedded { ctx, constants: None }
    }

    /// Plans and runs `sql` over a context that does not change while it is kept (a session's catalog
    /// context): its rows, and whether the same text would give the same rows again over this context, which it
    /// does when its plan calls no function but immutable ones (no `now()`, no `random()`).
    pub async fn query_repeatable(&self, sql: &str) -> Result<(RowSet, bool), SqlError> {
        self.run(sql).await
    }

    /// Plans and runs `sql`; whether its plan calls only immutable functions (see [`Self::query_repeatable`]).
    async fn run(&self, sql: &str) -> Result<(RowSet, bool), SqlError> {
        let (ctx, sql) = (self.ctx.clone(), sql.to_owned());
        let (columns, batches, immutable) = off_connection_thread(async move {
            let plan = ctx.state().create_logical_plan(&sql).await.map_err(backend_error)?;
            // Read-only, whatever the text: `SELECT ... INTO` would register a table in a context that outlives
            // the statement (the engine's, a session's kept catalog context).
            read_only().verify_plan(&plan).map_err(backend_error)?;
            // Before the optimiser, which folds `now()` into a literal.
            let immutable = calls_only_immutable_functions(&plan);
            let plan = super::fence::fenced(plan).map_err(backend_error)?;
            let df = ctx.execute_logical_plan(plan).await.map_err(backend_error)?;
            let columns = columns_of(&Arc::new(df.schema().as_arrow().clone()));
            Ok((columns, df.execute_stream().await.map_err(backend_error)?, immutable))
        })
        .await?;
        // One batch in memory at a time: each batch is turned into rows as the client reads them.
        let batches = batches.map(|batch| match batch {
            Ok(b) => match batch_rows(&b) {
                Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            },
            Err(e) => vec![Err(backend_error(e))],
        });
        let rows = match lakegate_net::threads::shared_runtime() {
            None => batches.boxed(),
            // The plan computes as its batches are polled: there, one batch ahead of the client.
            Some(shared) => {
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                let mut batches = batches;
                let pump = Offloaded(shared.spawn(async move {
                    while let Some(rows) = batches.next().await {
                        if tx.send(rows).await.is_err() {
                            break; // The client stopped reading.
                        }
                    }
                }));
                futures::stream::unfold((rx, pump), |(mut rx, pump)| async move {
                    rx.recv().await.map(|rows| (rows, (rx, pump)))
                })
                .boxed()
            }
        };
        Ok((RowSet { columns, rows: Box::pin(rows.flat_map(futures::stream::iter)) }, immutable))
    }

    /// The kept answer to `sql` if it is a constant statement answered before.
    fn kept_answer(&self, sql: &str) -> Option<Arc<Answer>> {
        self.constants.as_ref()?.get(sql)
    }

    #[cfg(test)]
    pub(super) fn constant_answers_kept(&self) -> usize {
        self.constants.as_ref().map_or(0, |c| c.len())
    }
}

async fn register(
    ctx: &SessionContext,
    warehouse: &Path,
    def: &TableDef,
    iceberg: Option<&Arc<dyn IcebergFiles>>,
) -> Result<(), EmbeddedError> {
    let err = |reason: String| EmbeddedError::Table { table: def.name.clone(), reason };
    let (db, table) = def.split_name().ok_or_else(|| err("name must be database.table".into()))?;
    if def.format == Some(TableFormat::Iceberg) {
        let files = iceberg.ok_or_else(|| err("format iceberg, but the Iceberg catalog is not enabled".into()))?;
        let provider = IcebergTable {
            database: db.to_owned(),
            table: table.to_owned(),
            schema: Arc::new(arrow_schema(def)?),
            files: files.clone(),
        };
        let catalog = ctx.catalog("datafusion").ok_or_else(|| err("default catalog missing".into()))?;
        if catalog.schema(db).is_none() {
            catalog.register_schema(db, Arc::new(MemorySchemaProvider::new())).map_err(|e| err(e.to_string()))?;
        }
        let reference = datafusion::common::TableReference::partial(db, table);
        return ctx.register_table(reference, Arc::new(provider)).map(|_| ()).map_err(|e| err(e.to_string()));
    }
    let dir = table_dir(warehouse, db, table);
    if !dir.is_dir() {
        return Err(err(format!("no data directory {}", dir.display())));
    }
    let catalog = ctx.catalog("datafusion").ok_or_else(|| err("default catalog missing".into()))?;
    if catalog.schema(db).is_none() {
        catalog.register_schema(db, Arc::new(MemorySchemaProvider::new())).map_err(|e| err(e.to_string()))?;
    }
    let schema = arrow_schema(def)?;
    let path = format!("{}/", dir.display());
    let name = format!("{db}.{table}");
    let has_parquet = match def.format {
        Some(TableFormat::Parquet) => true,
        Some(TableFormat::Csv) => false,
        _ => std::fs::read_dir(&dir)
            .map_err(|e| err(e.to_string()))?
            .filter_map(Result::ok)
            .any(|e| e.path().extension().is_some_and(|x| x == "parquet")),
    };
    let result = if has_parquet {
        ctx.register_parquet(name, path, ParquetReadOptions::default().schema(&schema)).await
    } else {
        ctx.register_csv(name, path, CsvReadOptions::new().schema(&schema).has_header(true)).await
    };
    result.map_err(|e| err(e.to_string()))
}

/// The Arrow schema of a catalog table (all columns nullable, as in SQL).
pub(crate) fn arrow_schema(def: &TableDef) -> Result<Schema, EmbeddedError> {
    let fields = def
        .columns
        .iter()
        .map(|c| {
            let ty = match ColumnType::from_sql_type(&c.sql_type) {
                Some(ColumnType::Bool) => DataType::Boolean,
                Some(ColumnType::Int2) => DataType::Int16,
                Some(ColumnType::Int4) => DataType::Int32,
                Some(ColumnType::Int8) => DataType::Int64,
                Some(ColumnType::Float4) => DataType::Float32,
                Some(ColumnType::Float8) => DataType::Float64,
                Some(ColumnType::Numeric) => {
                    let (p, s) = numeric_precision(&c.sql_type);
                    DataType::Decimal128(p, s)
                }
                Some(ColumnType::Text) => DataType::Utf8,
                Some(ColumnType::Date) => DataType::Date32,
                Some(ColumnType::Timestamp) => DataType::Timestamp(TimeUnit::Microsecond, None),
                None => {
                    return Err(EmbeddedError::Table {
                        table: def.name.clone(),
                        reason: format!("column {}: type {} is not supported", c.name, c.sql_type),
                    });
                }
            };
            Ok(Field::new(&c.name, ty, true))
        })
        .collect::<Result<Vec<_>, EmbeddedError>>()?;
    Ok(Schema::new(fields))
}

/// `numeric(p,s)` -> (p, s); a bare `numeric` gets DataFusion's widest exact decimal.
pub(crate) fn numeric_precision(sql_type: &str) -> (u8, i8) {
    let inner = sql_type.split_once('(').and_then(|(_, r)| r.strip_suffix(')'));
    let mut parts = inner.into_iter().flat_map(|s| s.split(',')).map(|p| p.trim().parse::<u8>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(p), Some(s)) if p <= 38 && s <= p => (p, s as i8),
        (Some(p), None) if p <= 38 => (p, 0),
        _ => (38, 10),
    }
}

/// Runs `work` (planning, a plan's first steps) on the runtime that accepted the session's connection when the
/// session is served on a connection thread (`lakegate_net::threads`), so that a long plan holds up no other
/// session of that thread; where the caller is otherwise.
async fn off_connection_thread<T: Send + 'static>(
    work: impl Future<Output = Result<T, SqlError>> + Send + 'static,
) -> Result<T, SqlError> {
    match lakegate_net::threads::shared_runtime() {
        None => work.await,
        Some(shared) => Offloaded(shared.spawn(work)).await,
    }
}

/// Work spawned on another runtime for a caller, aborted when the caller stops waiting for it (a statement
/// cancelled, a client gone): a plan nobody reads does not compute on.
struct Offloaded<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Offloaded<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for Offloaded<Result<T, SqlError>> {
    type Output = Result<T, SqlError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|e| Err(SqlError::Internal(format!("the embedded engine's task failed: {e}"))))
        })
    }
}

fn backend_error(e: datafusion::error::DataFusionError) -> SqlError {
    use datafusion::error::DataFusionError as E;
    let (sqlstate, message) = match &e {
        E::SQL(..) => ("42601", e.to_string()),
        E::Plan(m) => ("42000", m.clone()),
        E::SchemaError(..) => ("42703", e.to_string()),
        E::NotImplemented(m) => ("0A000", m.clone()),
        E::ArrowError(..) => ("22000", e.to_string()),
        _ => ("XX000", e.to_string()),
    };
    SqlError::Backend { sqlstate: sqlstate.into(), message }
}

#[async_trait]
impl Backend for Embedded {
    async fn query(&self, sql: &str, _caller: &Caller<'_>) -> Result<RowSet, SqlError> {
        if let Some(answer) = self.kept_answer(sql) {
            return Ok(answer.row_set());
        }
        let Some(constants) = self.constants.as_ref().filter(|_| is_constant(sql)) else {
            return Ok(self.run(sql).await?.0);
        };
        // One row at most (a SELECT without FROM): read whole, kept once the engine gave it without error.
        let answer = Arc::new(Answer::collect(self.run(sql).await?.0).await?);
        constants.keep(sql, answer.clone());
        Ok(answer.row_set())
    }

    async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError> {
        if let Some(answer) = self.kept_answer(sql) {
            return Ok(answer.columns().to_vec());
        }
        let (ctx, sql) = (self.ctx.clone(), sql.to_owned());
        off_connection_thread(async move {
            let plan = ctx.state().create_logical_plan(&sql).await.map_err(backend_error)?;
            Ok(columns_of(&Arc::new(plan.schema().as_arrow().clone())))
        })
        .await
    }

    async fn parameter_types(&self, sql: &str) -> Result<Vec<Option<ColumnType>>, SqlError> {
        if self.kept_answer(sql).is_some() {
            return Ok(Vec::new()); // A constant statement has no parameters.
        }
        let (ctx, sql) = (self.ctx.clone(), sql.to_owned());
        off_connection_thread(async move {
            let plan = ctx.state().create_logical_plan(&sql).await.map_err(backend_error)?;
            let types = plan.get_parameter_types().map_err(backend_error)?;
            let count = types.keys().filter_map(|k| k.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())).max();
            Ok((1..=count.unwrap_or(0))
                .map(|i| types.get(&format!("${i}")).cloned().flatten().map(|t| column_type(&t)))
                .collect())
        })
        .await
    }

    async fn execute(&self, _sql: &str, _caller: &Caller<'_>) -> Result<u64, SqlError> {
        Err(SqlError::Unsupported("the embedded engine is read-only; writes need a PostgreSQL backend".into()))
    }
}

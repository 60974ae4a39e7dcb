//! The embedded engine: DataFusion over CSV and Parquet files under `<data_dir>/warehouse/<db>/<table>/`.
//!
//! Each governed table whose backend is `embedded` is registered as `<db>.<table>` (a DataFusion schema per
//! database) with the column types of the catalog, so the rewritten SQL resolves exactly as it would on
//! PostgreSQL. Nothing else is registered: the engine cannot reach a file the catalog does not name.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Field, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    Schema, SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use super::Backend;
use super::iceberg::{IcebergFiles, IcebergTable};
use crate::error::SqlError;
use crate::rows::{Cell, Column, ColumnType, RowSet};
use lakegate_core::policy::catalog::{Catalog, TableDef, TableFormat};

/// DataFusion over the warehouse directory.
#[derive(Clone)]
pub struct Embedded {
    ctx: SessionContext,
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
        let ctx = SessionContext::new_with_config(config);
        for def in catalog.tables.iter().filter(|t| t.backend == super::EMBEDDED) {
            register(&ctx, warehouse, def, iceberg.as_ref()).await?;
        }
        Ok(Embedded { ctx })
    }

    /// An engine over a context built elsewhere (the per-query catalog context of introspection).
    pub fn from_context(ctx: SessionContext) -> Self {
        Embedded { ctx }
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
    let has_parquet = std::fs::read_dir(&dir)
        .map_err(|e| err(e.to_string()))?
        .filter_map(Result::ok)
        .any(|e| e.path().extension().is_some_and(|x| x == "parquet"));
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
fn numeric_precision(sql_type: &str) -> (u8, i8) {
    let inner = sql_type.split_once('(').and_then(|(_, r)| r.strip_suffix(')'));
    let mut parts = inner.into_iter().flat_map(|s| s.split(',')).map(|p| p.trim().parse::<u8>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(p), Some(s)) if p <= 38 && s <= p => (p, s as i8),
        (Some(p), None) if p <= 38 => (p, 0),
        _ => (38, 10),
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

fn columns_of(schema: &SchemaRef) -> Vec<Column> {
    schema.fields().iter().map(|f| Column { name: output_name(f.name()), ty: column_type(f.data_type()) }).collect()
}

/// PostgreSQL names an unaliased function call's column after the function (`count`, not `count(*)`);
/// DataFusion names it after the whole expression. Tools key on these names, so follow PostgreSQL.
fn output_name(name: &str) -> String {
    match name.split_once('(') {
        Some((head, _))
            if name.ends_with(')')
                && !head.is_empty()
                && head.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            head.to_ascii_lowercase()
        }
        _ => name.to_owned(),
    }
}

/// How an Arrow type reaches the client; types without a counterpart travel as text.
fn column_type(ty: &DataType) -> ColumnType {
    match ty {
        DataType::Boolean => ColumnType::Bool,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => ColumnType::Int2,
        DataType::Int32 | DataType::UInt16 => ColumnType::Int4,
        DataType::Int64 | DataType::UInt32 => ColumnType::Int8,
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => ColumnType::Numeric,
        DataType::Float16 | DataType::Float32 => ColumnType::Float4,
        DataType::Float64 => ColumnType::Float8,
        DataType::Date32 => ColumnType::Date,
        DataType::Timestamp(..) => ColumnType::Timestamp,
        _ => ColumnType::Text,
    }
}

/// The cells of one batch, row by row.
fn batch_rows(batch: &RecordBatch) -> Result<Vec<Vec<Cell>>, SqlError> {
    let columns: Vec<Vec<Cell>> = batch.columns().iter().map(|a| column_cells(a.as_ref())).collect::<Result<_, _>>()?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    for r in 0..batch.num_rows() {
        rows.push(columns.iter().map(|c| c.get(r).cloned().unwrap_or(Cell::Null)).collect());
    }
    Ok(rows)
}

fn column_cells(a: &dyn Array) -> Result<Vec<Cell>, SqlError> {
    macro_rules! prim {
        ($t:ty, $f:expr) => {{
            let arr = a.as_primitive::<$t>();
            (0..arr.len()).map(|i| if arr.is_null(i) { Cell::Null } else { $f(arr.value(i)) }).collect()
        }};
    }
    Ok(match a.data_type() {
        DataType::Null => vec![Cell::Null; a.len()],
        DataType::Boolean => {
            let arr = a.as_boolean();
            (0..arr.len()).map(|i| if arr.is_null(i) { Cell::Null } else { Cell::Bool(arr.value(i)) }).collect()
        }
        DataType::Int8 => prim!(Int8Type, |v: i8| Cell::Int(i64::from(v))),
        DataType::Int16 => prim!(Int16Type, |v: i16| Cell::Int(i64::from(v))),
        DataType::Int32 => prim!(Int32Type, |v: i32| Cell::Int(i64::from(v))),
        DataType::Int64 => prim!(Int64Type, Cell::Int),
        DataType::UInt8 => prim!(UInt8Type, |v: u8| Cell::Int(i64::from(v))),
        DataType::UInt16 => prim!(UInt16Type, |v: u16| Cell::Int(i64::from(v))),
        DataType::UInt32 => prim!(UInt32Type, |v: u32| Cell::Int(i64::from(v))),
        DataType::UInt64 => prim!(UInt64Type, |v: u64| Cell::Numeric(v.to_string())),
        DataType::Float32 => prim!(Float32Type, |v: f32| Cell::Float(f64::from(v))),
        DataType::Float64 => prim!(Float64Type, Cell::Float),
        DataType::Decimal128(_, scale) => {
            let scale = *scale;
            prim!(Decimal128Type, |v: i128| Cell::Numeric(decimal_text(v, scale)))
        }
        DataType::Date32 => prim!(Date32Type, Cell::Date),
        DataType::Timestamp(TimeUnit::Second, None) => {
            prim!(TimestampSecondType, |v: i64| Cell::Timestamp(v.saturating_mul(1_000_000)))
        }
        DataType::Timestamp(TimeUnit::Millisecond, None) => {
            prim!(TimestampMillisecondType, |v: i64| Cell::Timestamp(v.saturating_mul(1000)))
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => prim!(TimestampMicrosecondType, Cell::Timestamp),
        DataType::Timestamp(TimeUnit::Nanosecond, None) => {
            prim!(TimestampNanosecondType, |v: i64| Cell::Timestamp(v / 1000))
        }
        DataType::Utf8 => {
            let arr = a.as_string::<i32>();
            (0..arr.len())
                .map(|i| if arr.is_null(i) { Cell::Null } else { Cell::Text(arr.value(i).to_owned()) })
                .collect()
        }
        DataType::LargeUtf8 => {
            let arr = a.as_string::<i64>();
            (0..arr.len())
                .map(|i| if arr.is_null(i) { Cell::Null } else { Cell::Text(arr.value(i).to_owned()) })
                .collect()
        }
        DataType::Utf8View => {
            let arr = a.as_string_view();
            (0..arr.len())
                .map(|i| if arr.is_null(i) { Cell::Null } else { Cell::Text(arr.value(i).to_owned()) })
                .collect()
        }
        _ => {
            // Anything else (lists, structs, intervals...) is shown as its text form.
            let text = datafusion::arrow::compute::cast(a, &DataType::Utf8)
                .map_err(|e| SqlError::Unsupported(format!("result type {}: {e}", a.data_type())))?;
            return column_cells(text.as_ref());
        }
    })
}

/// An unscaled decimal as exact text (`1234`, scale 2 -> `12.34`).
fn decimal_text(v: i128, scale: i8) -> String {
    if scale <= 0 {
        let zeros = "0".repeat(usize::from(scale.unsigned_abs()));
        return if v == 0 { "0".into() } else { format!("{v}{zeros}") };
    }
    let scale = usize::from(scale.unsigned_abs());
    let digits = v.unsigned_abs().to_string();
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if v < 0 { "-" } else { "" })
}

#[async_trait]
impl Backend for Embedded {
    async fn query(&self, sql: &str) -> Result<RowSet, SqlError> {
        let df = self.ctx.sql(sql).await.map_err(backend_error)?;
        let columns = columns_of(&Arc::new(df.schema().as_arrow().clone()));
        let stream = df.execute_stream().await.map_err(backend_error)?;
        // One batch in memory at a time: each batch is turned into rows as the client reads them.
        let rows = stream
            .map(|batch| match batch {
                Ok(b) => match batch_rows(&b) {
                    Ok(rows) => futures::stream::iter(rows.into_iter().map(Ok).collect::<Vec<_>>()),
                    Err(e) => futures::stream::iter(vec![Err(e)]),
                },
                Err(e) => futures::stream::iter(vec![Err(backend_error(e))]),
            })
            .flatten();
        Ok(RowSet { columns, rows: Box::pin(rows) })
    }

    async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError> {
        let plan = self.ctx.state().create_logical_plan(sql).await.map_err(backend_error)?;
        Ok(columns_of(&Arc::new(plan.schema().as_arrow().clone())))
    }

    async fn parameter_types(&self, sql: &str) -> Result<Vec<Option<ColumnType>>, SqlError> {
        let plan = self.ctx.state().create_logical_plan(sql).await.map_err(backend_error)?;
        let types = plan.get_parameter_types().map_err(backend_error)?;
        let count = types.keys().filter_map(|k| k.strip_prefix('$').and_then(|n| n.parse::<usize>().ok())).max();
        Ok((1..=count.unwrap_or(0))
            .map(|i| types.get(&format!("${i}")).cloned().flatten().map(|t| column_type(&t)))
            .collect())
    }

    async fn execute(&self, _sql: &str) -> Result<u64, SqlError> {
        Err(SqlError::Unsupported("the embedded engine is read-only; writes need a PostgreSQL backend".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unaliased_calls_are_named_after_the_function_as_in_postgresql() {
        assert_eq!(output_name("count(*)"), "count");
        assert_eq!(output_name("sum(orders.amount)"), "sum");
        assert_eq!(output_name("region"), "region");
    }

    #[test]
    fn decimals_print_with_their_scale() {
        assert_eq!(decimal_text(12345, 2), "123.45");
        assert_eq!(decimal_text(-5, 2), "-0.05");
        assert_eq!(decimal_text(0, 2), "0.00");
        assert_eq!(decimal_text(7, -2), "700");
    }
}

//! Arrow record batches as result rows: the embedded engine and Spark both answer in Arrow.

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type,
    SchemaRef, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType, TimestampNanosecondType,
    TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};

use crate::error::SqlError;
use crate::rows::{Cell, Column, ColumnType};

pub(crate) fn columns_of(schema: &SchemaRef) -> Vec<Column> {
    schema.fields().iter().map(|f| Column { name: output_name(f.name()), ty: column_type(f.data_type()) }).collect()
}

/// PostgreSQL names an unaliased function call's column after the function (`count`, not `count(*)`);
/// DataFusion names it after the whole expression. Tools key on these names, so follow PostgreSQL.
pub(crate) fn output_name(name: &str) -> String {
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
pub(crate) fn column_type(ty: &DataType) -> ColumnType {
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
pub(crate) fn batch_rows(batch: &RecordBatch) -> Result<Vec<Vec<Cell>>, SqlError> {
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
        DataType::Timestamp(TimeUnit::Second, _) => {
            prim!(TimestampSecondType, |v: i64| Cell::Timestamp(v.saturating_mul(1_000_000)))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            prim!(TimestampMillisecondType, |v: i64| Cell::Timestamp(v.saturating_mul(1000)))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => prim!(TimestampMicrosecondType, Cell::Timestamp),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
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

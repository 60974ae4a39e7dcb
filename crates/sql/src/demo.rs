//! The demo warehouse `lakegate serve` writes on first start: `sales.orders` and `hr.employees` as CSV files
//! under `<data_dir>/warehouse/`, deterministic so that tests and the documentation can name exact rows.

use std::fmt::Write as _;
use std::path::Path;

const CUSTOMERS: &[&str] = &[
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
    "Vandelay",
];

/// The demo orders: 24 rows, half EU and half US, with 16-digit card numbers.
pub fn orders_csv() -> String {
    let mut out = String::from("order_id,customer,region,amount,card_number\n");
    for i in 1u64..=24 {
        let customer = CUSTOMERS.get((i as usize - 1) % CUSTOMERS.len()).copied().unwrap_or("Acme");
        let region = if i % 2 == 1 { "EU" } else { "US" };
        let amount_cents = 1000 + (i * 7919) % 90_000;
        let card = 4_000_000_000_000_000u64 + i * 1_234_567_891;
        let _ = writeln!(out, "{i},{customer},{region},{}.{:02},{card}", amount_cents / 100, amount_cents % 100);
    }
    out
}

/// The demo employees: 8 rows with salaries and SSNs.
pub fn employees_csv() -> String {
    let people = [
        ("Ada", "engineering"),
        ("Brian", "engineering"),
        ("Chen", "sales"),
        ("Dana", "sales"),
        ("Eve", "hr"),
        ("Farid", "finance"),
        ("Grace", "engineering"),
        ("Hugo", "finance"),
    ];
    let mut out = String::from("id,name,department,salary,ssn\n");
    for (i, (name, dept)) in (1u64..).zip(people) {
        let salary = 50_000 + i * 6_250;
        let _ = writeln!(out, "{i},{name},{dept},{salary}.00,{:03}-{:02}-{:04}", 100 + i, 10 + i, 1000 + i * 111);
    }
    out
}

/// Writes the demo tables into `warehouse` unless their directories exist (never overwrites data).
pub fn seed(warehouse: &Path) -> std::io::Result<()> {
    for (db, table, csv) in [("sales", "orders", orders_csv()), ("hr", "employees", employees_csv())] {
        let dir = warehouse.join(db).join(table);
        if dir.exists() {
            continue;
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("part-0.csv"), csv)?;
    }
    Ok(())
}

/// A demo table as one Parquet file of an Iceberg table: its Iceberg schema, the file, and its row count.
#[derive(Debug)]
pub struct IcebergSeed {
    pub schema: serde_json::Value,
    pub parquet: Vec<u8>,
    pub rows: i64,
}

/// The demo rows of `def` (`sales.orders` or `hr.employees`, with the catalog's column types) as an Iceberg
/// table's data file, with the field ids Iceberg readers resolve columns by; `None` for any other table.
pub fn iceberg_seed(def: &lakegate_core::policy::catalog::TableDef) -> Result<Option<IcebergSeed>, String> {
    use std::collections::HashMap;
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use datafusion::parquet::arrow::ArrowWriter;

    let csv = match def.name.as_str() {
        "sales.orders" => orders_csv(),
        "hr.employees" => employees_csv(),
        _ => return Ok(None),
    };
    let plain = crate::backend::embedded::arrow_schema(def).map_err(|e| e.to_string())?;
    let mut fields = Vec::new();
    let mut iceberg = Vec::new();
    for (id, f) in (1..).zip(plain.fields().iter()) {
        let ty = match f.data_type() {
            DataType::Boolean => "boolean".to_owned(),
            DataType::Int32 => "int".to_owned(),
            DataType::Int64 => "long".to_owned(),
            DataType::Float32 => "float".to_owned(),
            DataType::Float64 => "double".to_owned(),
            DataType::Decimal128(p, s) => format!("decimal({p}, {s})"),
            DataType::Utf8 => "string".to_owned(),
            DataType::Date32 => "date".to_owned(),
            DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp".to_owned(),
            other => return Err(format!("column {}: {other} has no Iceberg type here", f.name())),
        };
        iceberg.push(serde_json::json!({"id": id, "name": f.name(), "required": false, "type": ty}));
        let metadata = HashMap::from([("PARQUET:field_id".to_owned(), id.to_string())]);
        fields.push(Field::new(f.name(), f.data_type().clone(), true).with_metadata(metadata));
    }
    let schema = Arc::new(Schema::new(fields));
    let reader = datafusion::arrow::csv::ReaderBuilder::new(schema.clone())
        .with_header(true)
        .build(std::io::Cursor::new(csv.into_bytes()))
        .map_err(|e| e.to_string())?;
    let mut parquet = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut parquet, schema, None).map_err(|e| e.to_string())?;
    let mut rows = 0i64;
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        rows += batch.num_rows() as i64;
        writer.write(&batch).map_err(|e| e.to_string())?;
    }
    writer.close().map_err(|e| e.to_string())?;
    let schema = serde_json::json!({"type": "struct", "schema-id": 0, "fields": iceberg});
    Ok(Some(IcebergSeed { schema, parquet, rows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_orders_cover_both_regions_with_sixteen_digit_cards() {
        let csv = orders_csv();
        let rows: Vec<&str> = csv.lines().skip(1).collect();
        assert_eq!(rows.len(), 24);
        assert_eq!(rows.iter().filter(|r| r.contains(",EU,")).count(), 12);
        for r in rows {
            let card = r.rsplit(',').next().unwrap_or_default();
            assert_eq!(card.len(), 16, "{r}");
        }
    }
}

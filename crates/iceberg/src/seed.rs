//! Writing a whole Iceberg table at once: one Parquet data file, its manifest, the manifest list and the first
//! metadata, then registering it. `lakegate serve` makes the demo world's tables this way on first start, so the
//! same files are read by PyIceberg, DuckDB and Spark through the catalog and by the SQL gateway's engine.
//!
//! The Avro schemas are the specification's (format version 2), with the field ids readers resolve by.

use apache_avro::Schema;
use apache_avro::types::{Record, Value as Avro};
use bytes::Bytes;
use serde_json::{Value, json};

use super::metadata::{self, NewTable};
use super::{Catalog, IcebergError};

/// `manifest_entry` with the required fields of `data_file` (partition: unpartitioned).
const MANIFEST_ENTRY: &str = r#"{
  "type": "record", "name": "manifest_entry", "fields": [
    {"name": "status", "type": "int", "field-id": 0},
    {"name": "snapshot_id", "type": ["null", "long"], "default": null, "field-id": 1},
    {"name": "sequence_number", "type": ["null", "long"], "default": null, "field-id": 3},
    {"name": "file_sequence_number", "type": ["null", "long"], "default": null, "field-id": 4},
    {"name": "data_file", "field-id": 2, "type": {"type": "record", "name": "r2", "fields": [
      {"name": "content", "type": "int", "field-id": 134},
      {"name": "file_path", "type": "string", "field-id": 100},
      {"name": "file_format", "type": "string", "field-id": 101},
      {"name": "partition", "type": {"type": "record", "name": "r102", "fields": []}, "field-id": 102},
      {"name": "record_count", "type": "long", "field-id": 103},
      {"name": "file_size_in_bytes", "type": "long", "field-id": 104}
    ]}}
  ]
}"#;

/// `manifest_file`, the entries of a manifest list.
const MANIFEST_FILE: &str = r#"{
  "type": "record", "name": "manifest_file", "fields": [
    {"name": "manifest_path", "type": "string", "field-id": 500},
    {"name": "manifest_length", "type": "long", "field-id": 501},
    {"name": "partition_spec_id", "type": "int", "field-id": 502},
    {"name": "content", "type": "int", "field-id": 517},
    {"name": "sequence_number", "type": "long", "field-id": 515},
    {"name": "min_sequence_number", "type": "long", "field-id": 516},
    {"name": "added_snapshot_id", "type": "long", "field-id": 503},
    {"name": "added_files_count", "type": "int", "field-id": 504},
    {"name": "existing_files_count", "type": "int", "field-id": 505},
    {"name": "deleted_files_count", "type": "int", "field-id": 506},
    {"name": "added_rows_count", "type": "long", "field-id": 512},
    {"name": "existing_rows_count", "type": "long", "field-id": 513},
    {"name": "deleted_rows_count", "type": "long", "field-id": 514}
  ]
}"#;

/// A table to write whole.
pub struct SeedTable<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Where it lives (one Lakegate would assign: `<location><ns>/<name>-<8 hex>`).
    pub location: &'a str,
    /// The Iceberg schema (a `struct` with field ids matching the Parquet file's).
    pub schema: Value,
    /// The one Parquet data file and its row count.
    pub parquet: Bytes,
    pub rows: i64,
}

fn avro_error(e: impl std::fmt::Display) -> IcebergError {
    IcebergError::Internal(format!("writing Avro: {e}"))
}

/// An Avro object container file of `records` with `schema` and the header entries `meta`.
fn container(schema: &Schema, meta: &[(&str, String)], records: Vec<Record<'_>>) -> Result<Bytes, IcebergError> {
    let mut writer = apache_avro::Writer::new(schema, Vec::new());
    for (k, v) in meta {
        writer.add_user_metadata((*k).to_owned(), v.as_bytes()).map_err(avro_error)?;
    }
    for r in records {
        writer.append(r).map_err(avro_error)?;
    }
    Ok(Bytes::from(writer.into_inner().map_err(avro_error)?))
}

impl Catalog {
    /// Writes `table` (data file, manifest, manifest list, metadata) and registers it, unless a table of that
    /// name exists already. Returns whether it wrote.
    pub async fn seed_table(&self, table: SeedTable<'_>) -> Result<bool, IcebergError> {
        if self.state.table(table.namespace, table.name).await?.is_some() {
            return Ok(false);
        }
        self.state.ensure_namespace(table.namespace).await?;
        let base = table.location.trim_end_matches('/');
        let snapshot_id: i64 = 1;
        let data_path = format!("{base}/data/00000-0-seed.parquet");
        let manifest_path = format!("{base}/metadata/seed-m0.avro");
        let list_path = format!("{base}/metadata/snap-{snapshot_id}-0-seed.avro");
        self.files.write_bytes(&data_path, table.parquet.clone()).await?;

        let entry_schema = Schema::parse_str(MANIFEST_ENTRY).map_err(avro_error)?;
        let data_schema = match &entry_schema {
            Schema::Record(r) => r.fields.iter().find(|f| f.name == "data_file").map(|f| f.schema.clone()),
            _ => None,
        }
        .ok_or_else(|| avro_error("manifest_entry has no data_file"))?;
        let partition_schema = match &data_schema {
            Schema::Record(r) => r.fields.iter().find(|f| f.name == "partition").map(|f| f.schema.clone()),
            _ => None,
        }
        .ok_or_else(|| avro_error("data_file has no partition"))?;
        let mut data = Record::new(&data_schema).ok_or_else(|| avro_error("data_file is not a record"))?;
        data.put("content", 0i32);
        data.put("file_path", data_path.as_str());
        data.put("file_format", "PARQUET");
        let partition = Record::new(&partition_schema).ok_or_else(|| avro_error("partition is not a record"))?;
        data.put("partition", Avro::from(partition));
        data.put("record_count", table.rows);
        data.put("file_size_in_bytes", table.parquet.len() as i64);
        let mut entry = Record::new(&entry_schema).ok_or_else(|| avro_error("manifest_entry is not a record"))?;
        entry.put("status", 1i32);
        entry.put("snapshot_id", Avro::Union(1, Box::new(Avro::Long(snapshot_id))));
        entry.put("sequence_number", Avro::Union(0, Box::new(Avro::Null)));
        entry.put("file_sequence_number", Avro::Union(0, Box::new(Avro::Null)));
        entry.put("data_file", Avro::from(data));
        let schema_text = table.schema.to_string();
        let manifest = container(
            &entry_schema,
            &[
                ("schema", schema_text.clone()),
                ("schema-id", "0".into()),
                ("partition-spec", "[]".into()),
                ("partition-spec-id", "0".into()),
                ("format-version", "2".into()),
                ("content", "data".into()),
            ],
            vec![entry],
        )?;
        let manifest_length = manifest.len() as i64;
        self.files.write_bytes(&manifest_path, manifest).await?;

        let list_schema = Schema::parse_str(MANIFEST_FILE).map_err(avro_error)?;
        let mut m = Record::new(&list_schema).ok_or_else(|| avro_error("manifest_file is not a record"))?;
        m.put("manifest_path", manifest_path.as_str());
        m.put("manifest_length", manifest_length);
        m.put("partition_spec_id", 0i32);
        m.put("content", 0i32);
        m.put("sequence_number", 1i64);
        m.put("min_sequence_number", 1i64);
        m.put("added_snapshot_id", snapshot_id);
        m.put("added_files_count", 1i32);
        m.put("existing_files_count", 0i32);
        m.put("deleted_files_count", 0i32);
        m.put("added_rows_count", table.rows);
        m.put("existing_rows_count", 0i64);
        m.put("deleted_rows_count", 0i64);
        let list = container(
            &list_schema,
            &[
                ("snapshot-id", snapshot_id.to_string()),
                ("parent-snapshot-id", "null".into()),
                ("sequence-number", "1".into()),
                ("format-version", "2".into()),
            ],
            vec![m],
        )?;
        self.files.write_bytes(&list_path, list).await?;

        let mut meta = metadata::create(NewTable {
            location: base,
            schema: &table.schema,
            partition_spec: None,
            write_order: None,
            properties: serde_json::Map::new(),
        })?;
        let now = metadata::now_ms();
        let summary = json!({
            "operation": "append", "added-data-files": "1", "added-records": table.rows.to_string(),
            "total-data-files": "1", "total-records": table.rows.to_string(), "total-delete-files": "0",
            "total-position-deletes": "0", "total-equality-deletes": "0",
        });
        let updates = [
            json!({"action": "add-snapshot", "snapshot": {
                "snapshot-id": snapshot_id, "sequence-number": 1, "timestamp-ms": now,
                "manifest-list": list_path, "summary": summary, "schema-id": 0,
            }}),
            json!({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": snapshot_id}),
        ];
        metadata::apply_updates(&mut meta, &updates, &|_| false)?;
        let file = self.files.write_metadata(base, 0, &meta).await?;
        match self.state.create_table(table.namespace, table.name, &file).await {
            Ok(()) => Ok(true),
            // Another replica seeded it first.
            Err(super::state::StateError::TableExists(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

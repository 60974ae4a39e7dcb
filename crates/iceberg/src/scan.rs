//! The data files of a table's current snapshot: the manifest list, then its manifests (Avro object container
//! files), then the live entries of each. This is what an engine reading the table through the catalog needs
//! (the embedded SQL engine reads exactly these Parquet files, under the SQL gateway's rewrite).
//!
//! Only what can be read correctly is read: a snapshot with delete files (position or equality deletes) is
//! refused, since reading its data files alone would bring deleted rows back.

use apache_avro::types::Value as Avro;
use serde_json::Value;

use super::files::{FileError, Files};

/// Why the data files could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{location} is not a valid Iceberg manifest: {reason}")]
    Invalid { location: String, reason: String },
}

/// A data file of the current snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// `s3://bucket/key`.
    pub path: String,
    pub record_count: i64,
}

fn field<'a>(record: &'a Avro, name: &str) -> Option<&'a Avro> {
    match record {
        Avro::Record(fields) => fields.iter().find(|(n, _)| n == name).map(|(_, v)| v),
        Avro::Union(_, inner) => field(inner, name),
        _ => None,
    }
}

fn int(v: Option<&Avro>) -> Option<i64> {
    match v? {
        Avro::Int(i) => Some(i64::from(*i)),
        Avro::Long(l) => Some(*l),
        Avro::Union(_, inner) => int(Some(inner)),
        _ => None,
    }
}

fn text(v: Option<&Avro>) -> Option<&str> {
    match v? {
        Avro::String(s) => Some(s),
        Avro::Union(_, inner) => text(Some(inner)),
        _ => None,
    }
}

/// The records of an Avro object container file.
async fn records(files: &Files, location: &str) -> Result<Vec<Avro>, ScanError> {
    let bytes = files.read_bytes(location).await?;
    let invalid = |reason: String| ScanError::Invalid { location: location.to_owned(), reason };
    let reader = apache_avro::Reader::new(&bytes[..]).map_err(|e| invalid(e.to_string()))?;
    reader.map(|r| r.map_err(|e| invalid(e.to_string()))).collect()
}

/// The data files of `metadata`'s current snapshot (none for a table without one).
pub async fn data_files(files: &Files, metadata: &Value) -> Result<Vec<DataFile>, ScanError> {
    let current = metadata.get("current-snapshot-id").and_then(Value::as_i64).filter(|id| *id >= 0);
    let Some(current) = current else { return Ok(Vec::new()) };
    let snapshot = metadata
        .get("snapshots")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().find(|s| s.get("snapshot-id").and_then(Value::as_i64) == Some(current)))
        .ok_or_else(|| ScanError::Unsupported(format!("the current snapshot {current} is not in the metadata")))?;
    let Some(list) = snapshot.get("manifest-list").and_then(Value::as_str) else {
        return Err(ScanError::Unsupported("a snapshot without a manifest list (format version 1 manifests)".into()));
    };
    // Every file read must be the table's own: a writer could otherwise commit a manifest naming another table's
    // files and read them through this table's policies.
    let location = metadata.get("location").and_then(Value::as_str).unwrap_or_default();
    let inside = format!("{}/", location.trim_end_matches('/'));
    let own = |path: &str| -> Result<(), ScanError> {
        if location.is_empty() || !path.starts_with(&inside) || path.contains("/../") || path.contains("/./") {
            return Err(ScanError::Unsupported(format!("{path} lies outside the table's location {inside}")));
        }
        Ok(())
    };
    own(list)?;
    let mut out = Vec::new();
    for manifest in records(files, list).await? {
        let path = text(field(&manifest, "manifest_path")).ok_or_else(|| ScanError::Invalid {
            location: list.to_owned(),
            reason: "an entry has no manifest_path".into(),
        })?;
        own(path)?;
        if int(field(&manifest, "content")).unwrap_or(0) != 0 {
            return Err(ScanError::Unsupported(
                "the table has delete files (row-level deletes), which Lakegate's engine cannot apply yet".into(),
            ));
        }
        for entry in records(files, path).await? {
            // 2 is DELETED: the file left the table in this manifest's snapshot.
            if int(field(&entry, "status")) == Some(2) {
                continue;
            }
            let invalid = |reason: &str| ScanError::Invalid { location: path.to_owned(), reason: reason.to_owned() };
            let data = field(&entry, "data_file").ok_or_else(|| invalid("an entry has no data_file"))?;
            if int(field(data, "content")).unwrap_or(0) != 0 {
                return Err(ScanError::Unsupported(
                    "the table has delete files (row-level deletes), which Lakegate's engine cannot apply yet".into(),
                ));
            }
            let format = text(field(data, "file_format")).unwrap_or_default();
            if !format.eq_ignore_ascii_case("parquet") {
                return Err(ScanError::Unsupported(format!("data files in {format} format (only Parquet is read)")));
            }
            let file = text(field(data, "file_path")).ok_or_else(|| invalid("a data file has no file_path"))?;
            own(file)?;
            out.push(DataFile { path: file.to_owned(), record_count: int(field(data, "record_count")).unwrap_or(0) });
        }
    }
    Ok(out)
}

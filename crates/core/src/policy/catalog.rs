//! The catalog of governed tables: columns, types, tags and storage locations (`catalog.toml`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// All governed tables.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    #[serde(default)]
    pub tables: Vec<TableDef>,
}

/// One governed table, named `database.table`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    pub name: String,
    /// Which SQL backend holds it (`embedded`, or the name of a configured PostgreSQL or Spark backend).
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Where its files live: `s3://bucket/prefix/` for credential vending. A Spark table's location is the URI
    /// Spark reads its files from (`s3a://...`, `hdfs://...`, `file:///...`), passed to Spark as written.
    #[serde(default)]
    pub location: Option<String>,
    /// How its files are read: `iceberg` reads the data files of the current snapshot of the Iceberg catalog's
    /// table of the same name; `parquet` and `csv` (with a header line) the files under its directory. Absent,
    /// the embedded engine reads Parquet if its warehouse directory holds any, else CSV; a Spark table must name
    /// its format.
    #[serde(default)]
    pub format: Option<TableFormat>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub columns: Vec<ColumnDef>,
}

/// A table's storage format, where the catalog names one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableFormat {
    Iceberg,
    Parquet,
    Csv,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    pub name: String,
    /// The SQL type, as PostgreSQL spells it (`bigint`, `text`, `numeric(12,2)`).
    #[serde(rename = "type")]
    pub sql_type: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

fn default_backend() -> String {
    "embedded".into()
}

impl TableDef {
    /// `(database, table)` from `database.table`.
    pub fn split_name(&self) -> Option<(&str, &str)> {
        self.name.split_once('.')
    }
}

impl Catalog {
    /// The table named `database.table`.
    pub fn table(&self, database: &str, table: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.split_name() == Some((database, table)))
    }

    /// Checks names: `database.table`, unique, lower-case identifiers, at least one column, unique columns.
    pub fn check(&self) -> Result<(), CatalogError> {
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.tables {
            let Some((db, name)) = t.split_name() else {
                return Err(CatalogError::table(t, "name must be database.table"));
            };
            for part in [db, name] {
                if !is_identifier(part) {
                    return Err(CatalogError::table(t, format!("{part:?} is not a lower-case identifier")));
                }
            }
            if !seen.insert(t.name.clone()) {
                return Err(CatalogError::table(t, "declared twice"));
            }
            if t.columns.is_empty() {
                return Err(CatalogError::table(t, "no columns"));
            }
            let mut cols = std::collections::BTreeSet::new();
            for c in &t.columns {
                if !is_identifier(&c.name) {
                    return Err(CatalogError::table(t, format!("column {:?} is not a lower-case identifier", c.name)));
                }
                if !cols.insert(c.name.as_str()) {
                    return Err(CatalogError::table(t, format!("column {:?} is declared twice", c.name)));
                }
            }
        }
        Ok(())
    }
}

/// What is wrong with a catalog entry.
#[derive(Debug, thiserror::Error)]
#[error("table {table:?}: {reason}")]
pub struct CatalogError {
    pub table: String,
    pub reason: String,
}

impl CatalogError {
    fn table(t: &TableDef, reason: impl Into<String>) -> Self {
        CatalogError { table: t.name.clone(), reason: reason.into() }
    }
}

/// A name PostgreSQL would not need quotes for: lower-case letters, digits and `_`, not starting with a digit.
fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

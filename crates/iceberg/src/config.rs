//! The `[iceberg]` configuration section.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// `[iceberg]`: the catalog's one warehouse, where its tables live, where its state is kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcebergConfig {
    /// Serve the catalog under `/iceberg` on the control endpoint.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The warehouse name clients give (`?warehouse=`) and the prefix of every route.
    #[serde(default = "default_warehouse")]
    pub warehouse: String,
    /// Where new tables go, as `s3://bucket/prefix/`, in the store behind the S3 front.
    #[serde(default = "default_location")]
    pub location: String,
    /// A libpq connection string for PostgreSQL state, shared by replicas; without it, SQLite in the data
    /// directory (`sqlite_path`, default `<data_dir>/iceberg-catalog.db`).
    #[serde(default)]
    pub postgres: Option<String>,
    #[serde(default)]
    pub sqlite_path: Option<PathBuf>,
    /// Namespaces created at start-up when missing.
    #[serde(default = "default_namespaces")]
    pub namespaces: Vec<String>,
    /// `s3.endpoint` in vended credentials: Lakegate's S3 front as clients reach it (default: its listener).
    #[serde(default)]
    pub s3_endpoint: Option<String>,
    /// `s3.region` in vended credentials.
    #[serde(default = "default_region")]
    pub region: String,
}

impl Default for IcebergConfig {
    fn default() -> Self {
        IcebergConfig {
            enabled: default_enabled(),
            warehouse: default_warehouse(),
            location: default_location(),
            postgres: None,
            sqlite_path: None,
            namespaces: default_namespaces(),
            s3_endpoint: None,
            region: default_region(),
        }
    }
}

impl IcebergConfig {
    /// The SQLite file.
    pub fn sqlite_path(&self, data_dir: &Path) -> PathBuf {
        self.sqlite_path.clone().unwrap_or_else(|| data_dir.join("iceberg-catalog.db"))
    }

    /// `location`, ending in `/`.
    pub fn location_prefix(&self) -> String {
        format!("{}/", self.location.trim_end_matches('/'))
    }
}

fn default_enabled() -> bool {
    true
}

fn default_warehouse() -> String {
    "lake".into()
}

fn default_location() -> String {
    "s3://lake/iceberg/".into()
}

fn default_namespaces() -> Vec<String> {
    ["sales", "hr", "scratch"].map(String::from).to_vec()
}

fn default_region() -> String {
    "us-east-1".into()
}

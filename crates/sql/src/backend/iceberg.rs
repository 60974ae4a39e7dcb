//! Iceberg tables in the embedded engine: a table provider that reads the Parquet data files of the table's
//! current snapshot, looked up at each scan, so every statement reads the table as last committed.
//!
//! The files come from an [`IcebergFiles`] the binary plugs in (the Iceberg catalog over the embedded store), as
//! local paths: the engine reads them directly, without going through the S3 front, because the SQL gateway has
//! already decided and rewritten the statement that reads them.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::datasource::TableProvider;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use futures::future::BoxFuture;

/// Where an Iceberg table's current data files are, as local files.
pub trait IcebergFiles: Send + Sync + std::fmt::Debug {
    /// The Parquet data files of `database.table`'s current snapshot; an error says why they cannot be read.
    fn data_files<'a>(&'a self, database: &'a str, table: &'a str) -> BoxFuture<'a, Result<Vec<PathBuf>, String>>;
}

/// An Iceberg table with the catalog's column types.
#[derive(Debug)]
pub struct IcebergTable {
    pub database: String,
    pub table: String,
    pub schema: SchemaRef,
    pub files: Arc<dyn IcebergFiles>,
}

#[async_trait]
impl TableProvider for IcebergTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters reach the Parquet scan for pruning, and are applied again above it.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let files = self.files.data_files(&self.database, &self.table).await.map_err(|e| {
            DataFusionError::Plan(format!("Iceberg table {}.{} cannot be read: {e}", self.database, self.table))
        })?;
        if files.is_empty() {
            let schema = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(schema)));
        }
        let urls = files
            .iter()
            .map(|p| ListingTableUrl::parse(format!("file://{}", p.display())))
            .collect::<Result<Vec<_>>>()?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
        let config = ListingTableConfig::new_with_multi_paths(urls)
            .with_listing_options(options)
            .with_schema(self.schema.clone());
        ListingTable::try_new(config)?.scan(state, projection, filters, limit).await
    }
}

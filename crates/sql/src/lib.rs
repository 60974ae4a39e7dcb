//! The SQL front: governed query rewrite over PostgreSQL and the embedded engine, reachable by the
//! PostgreSQL wire protocol and a subset of Trino's HTTP protocol.
//!
//! - [`rewrite`]: the rewriter (sqlparser AST): every governed table reference becomes its governed view.
//! - [`session`]: the road of one statement: rewrite -> audit slot -> backend -> rows; a text with literals runs
//!   as the kept rewrite of its shape (`lift`).
//! - [`backend`]: where statements run ([`backend::embedded`] DataFusion, [`backend::postgres`],
//!   [`backend::spark`] over Spark Connect).
//! - [`pgwire`] and [`trino`]: the fronts. [`introspect`]: catalog queries answered from the governed catalog.
//! - [`credentials`]: full-table READ credentials for principals without fine-grained restrictions.

pub mod backend;
mod bind;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod error;
pub mod introspect;
mod lift;
mod owner;
pub mod pgwire;
mod read_ahead;
pub mod rewrite;
pub mod rows;
pub mod session;
mod spill;
pub mod trino;

use std::sync::Arc;

pub use config::{PostgresBackendConfig, SparkBackendConfig, SqlConfig};
pub use error::SqlError;
use lakegate_core::gate::Gate;
pub use session::Session;

/// Limits and rules of the SQL front.
#[derive(Debug, Clone)]
pub struct SqlSettings {
    pub max_statement_bytes: usize,
    /// Longest message a PostgreSQL wire client may send once authenticated.
    pub max_message_bytes: usize,
    /// How many PostgreSQL wire sessions may be open at once.
    pub max_connections: usize,
    /// How many of them one user may hold.
    pub max_connections_per_user: usize,
    pub trino_page_rows: usize,
    /// How long an open Trino query waits for its client to fetch the next page.
    pub trino_client_timeout: std::time::Duration,
    /// How many bytes of an open Trino query's rows are read ahead of its client.
    pub trino_read_ahead_bytes: usize,
    pub plaintext_password_allowed: bool,
    /// Whether the control endpoint (Trino protocol) is served over TLS, for the `nextUri` scheme.
    pub control_tls: bool,
    /// How long a PostgreSQL wire client may sit idle in a block that holds a backend connection.
    pub idle_in_transaction_timeout: Option<std::time::Duration>,
}

/// What every SQL session shares: the gate, the backends and the settings.
#[derive(Debug)]
pub struct SqlService {
    pub gate: Arc<Gate>,
    pub backends: backend::Backends,
    pub settings: SqlSettings,
    /// Keys for full-table credentials (the same key ring the S3 front verifies, `[credentials] key_dir`).
    pub keyring: Option<Arc<lakegate_core::credentials::LiveKeyRing>>,
    /// The rewriter's index of the catalog in force, shared by every session.
    catalogs: rewrite::CatalogCache,
    /// Catalog query texts read before, shared by every session.
    catalog_readings: introspect::Readings,
    /// The kept rewrites of recent principals, shared by each one's sessions.
    rewrites: session::SharedRewrites,
    /// The bytes of disk the Trino front's rows, spilled while others wait for their connections, may take
    /// together (`sql.trino_spill_bytes`); `None`: nothing is spilled.
    trino_spill: Option<Arc<tokio::sync::Semaphore>>,
}

/// Why the SQL front could not start.
#[derive(Debug, thiserror::Error)]
pub enum SqlStartError {
    #[error("writing the demo warehouse in {path}: {source}")]
    Demo { path: std::path::PathBuf, source: std::io::Error },
    #[error("embedded engine: {0}")]
    Embedded(#[from] backend::embedded::EmbeddedError),
    #[error("PostgreSQL backend {name}: {reason}")]
    Postgres { name: String, reason: backend::postgres::StartError },
    #[error("Spark backend {name}: {reason}")]
    Spark { name: String, reason: backend::spark::StartError },
    #[error("catalog table {table} names backend {backend:?}, which is not configured")]
    UnknownBackend { table: String, backend: String },
    #[error(
        "sql.max_message_bytes ({message}) must be above sql.max_statement_bytes ({statement}): a Query holds its \
         statement"
    )]
    MessageUnderStatement { message: usize, statement: usize },
}

impl SqlService {
    /// Opens the backends of `config` for the tables of the catalog in force, writing the demo warehouse into
    /// `warehouse` on first start when the catalog has embedded tables. `control_tls` says whether the control
    /// listener, which serves the Trino protocol, speaks TLS.
    /// `keyring` mints full-table credentials; without one they are refused as unavailable. `iceberg` finds the
    /// data files of the catalog's `format = "iceberg"` tables.
    pub async fn start(
        config: &SqlConfig,
        warehouse: &std::path::Path,
        control_tls: bool,
        gate: Arc<Gate>,
        keyring: Option<Arc<lakegate_core::credentials::LiveKeyRing>>,
        iceberg: Option<Arc<dyn backend::iceberg::IcebergFiles>>,
    ) -> Result<Arc<SqlService>, SqlStartError> {
        if config.max_message_bytes <= config.max_statement_bytes {
            let (message, statement) = (config.max_message_bytes, config.max_statement_bytes);
            return Err(SqlStartError::MessageUnderStatement { message, statement });
        }
        let snapshot = gate.catalog();
        let catalog: &lakegate_core::policy::catalog::Catalog = &snapshot;
        if catalog.tables.iter().any(|t| t.backend == backend::EMBEDDED) {
            demo::seed(warehouse).map_err(|source| SqlStartError::Demo { path: warehouse.to_owned(), source })?;
        }
        let mut backends = backend::Backends::default();
        let embedded = backend::embedded::Embedded::open(warehouse, catalog, iceberg.clone()).await?;
        backends.insert(backend::EMBEDDED, Arc::new(embedded));
        for pg in &config.postgres {
            let b = backend::postgres::Postgres::connect(pg, catalog)
                .await
                .map_err(|reason| SqlStartError::Postgres { name: pg.name.clone(), reason })?;
            backends.insert(pg.name.clone(), Arc::new(b));
        }
        for spark in &config.spark {
            let b = backend::spark::Spark::open(spark, catalog, iceberg.clone())
                .map_err(|reason| SqlStartError::Spark { name: spark.name.clone(), reason })?;
            backends.insert(spark.name.clone(), Arc::new(b));
        }
        for t in &catalog.tables {
            if backends.get(&t.backend).is_none() {
                return Err(SqlStartError::UnknownBackend { table: t.name.clone(), backend: t.backend.clone() });
            }
        }
        Ok(Arc::new(SqlService {
            gate,
            settings: SqlSettings {
                max_statement_bytes: config.max_statement_bytes,
                max_message_bytes: config.max_message_bytes,
                max_connections: config.max_connections,
                max_connections_per_user: config.max_connections_per_user,
                trino_page_rows: config.trino_page_rows.max(1),
                trino_client_timeout: std::time::Duration::from_millis(config.trino_client_timeout_ms),
                trino_read_ahead_bytes: config.trino_read_ahead_bytes,
                plaintext_password_allowed: config.plaintext_password_allowed(),
                control_tls,
                idle_in_transaction_timeout: (config.idle_in_transaction_timeout_ms > 0)
                    .then(|| std::time::Duration::from_millis(config.idle_in_transaction_timeout_ms)),
            },
            keyring,
            catalogs: rewrite::CatalogCache::default(),
            catalog_readings: introspect::Readings::default(),
            rewrites: session::SharedRewrites::default(),
            trino_spill: (config.trino_spill_bytes > 0).then(|| {
                let bytes = config.trino_spill_bytes.min(tokio::sync::Semaphore::MAX_PERMITS);
                Arc::new(tokio::sync::Semaphore::new(bytes))
            }),
            backends,
        }))
    }
}

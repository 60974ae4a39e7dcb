//! The `[sql]` section: the PostgreSQL wire listener, its authentication rule, limits and backends.

use std::net::SocketAddr;
use std::path::PathBuf;

use lakegate_net::TlsConfig;
use serde::Deserialize;

/// The `[sql]` section: the PostgreSQL wire listener, its authentication rule, limits and backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlConfig {
    /// Where the PostgreSQL wire protocol listens.
    #[serde(default = "default_sql_listen")]
    pub listen: SocketAddr,
    /// TLS for the PostgreSQL wire listener (clients ask for it with `sslmode=require`).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Accept the token (sent as a cleartext password) over a connection without TLS. Unset: allowed exactly
    /// when the listener is on a loopback address, where the token never leaves the machine.
    #[serde(default)]
    pub allow_plaintext_password: Option<bool>,
    /// Longest statement text accepted, in bytes.
    #[serde(default = "default_max_statement_bytes")]
    pub max_statement_bytes: usize,
    /// Longest message a PostgreSQL wire client may send once authenticated (a Query, or a Bind with its
    /// parameters), in bytes. A longer one ends the session at its header (FATAL 54000), before it is read.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// How many PostgreSQL wire sessions may be open at once; a client past it is refused at its startup
    /// message with FATAL 53300, as PostgreSQL refuses one past `max_connections`. A cancel request is always
    /// taken. With `max_message_bytes`, bounds what clients can make the front hold in messages being read.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// How many of those sessions one user may hold at once (the user of an acting chain counts, not the actor);
    /// the next is refused once authenticated, with FATAL 53300 `too many connections for role`, as PostgreSQL
    /// refuses one past a role's `CONNECTION LIMIT`. So that one user cannot take every place.
    #[serde(default = "default_max_connections_per_user")]
    pub max_connections_per_user: usize,
    /// Rows per page of the Trino HTTP protocol.
    #[serde(default = "default_trino_page_rows")]
    pub trino_page_rows: usize,
    /// How long an open query of the Trino HTTP protocol waits for its client to fetch the next page before it is
    /// dropped (recorded as incomplete), as Trino's `query.client.timeout`. Its rows may stream from a backend
    /// connection, which is held until then.
    #[serde(default = "default_trino_client_timeout_ms")]
    pub trino_client_timeout_ms: u64,
    /// How many bytes of an open Trino query's rows are read ahead of its client: a result that fits gives its
    /// backend connection back at once, rather than when its client has fetched the last page. 0: none.
    #[serde(default = "default_trino_read_ahead_bytes")]
    pub trino_read_ahead_bytes: usize,
    /// How many bytes of disk the rows of open Trino queries may take together when a query's client is a
    /// read-ahead behind and other statements wait for its backend connection: its rows are then written to a
    /// temporary file and the connection is given back. 0: never; the connection is held until the client catches up.
    #[serde(default = "default_trino_spill_bytes")]
    pub trino_spill_bytes: usize,
    /// How long a client may sit idle inside a transaction block that holds a backend connection (from the
    /// block's first write) before the gateway rolls the block back and closes the connection (FATAL 25P03, as
    /// PostgreSQL's `idle_in_transaction_session_timeout`); 0 never does. The connection is one of a small pool's,
    /// which other sessions wait for.
    #[serde(default = "default_idle_in_transaction_timeout_ms")]
    pub idle_in_transaction_timeout_ms: u64,
    /// PostgreSQL backends, referred to by name from the catalog's `backend`.
    #[serde(default)]
    pub postgres: Vec<PostgresBackendConfig>,
    /// Spark Connect backends, referred to by name from the catalog's `backend`.
    #[serde(default)]
    pub spark: Vec<SparkBackendConfig>,
}

/// One Spark Connect backend (`[[sql.spark]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkBackendConfig {
    /// The name catalog tables use in `backend = "..."`.
    pub name: String,
    /// The Spark Connect server, `sc://host:port` (15002 when the port is left out). Whoever reaches the server
    /// can read what Spark reads: keep it on a network only Lakegate reaches (see docs/spark-connect.md).
    pub remote: String,
    /// Connect with TLS (what Spark clients call `use_ssl=true`), verifying the server against the Mozilla
    /// roots or `ca_file`. Spark Connect serves plain gRPC itself; TLS ends at a proxy in front of it.
    #[serde(default)]
    pub tls: bool,
    /// A PEM file of CA certificates to trust for the server instead of the Mozilla roots (needs `tls`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate (PEM chain) and its key, for a proxy in front of Spark that asks for one (mutual TLS;
    /// needs `tls`). Both or neither.
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// A file holding Spark Connect's authentication token (`spark.connect.authenticate.token`), sent as a bearer
    /// token with every call. Read at start.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The Spark user id Lakegate's session runs as (the end user goes in each operation's tags).
    #[serde(default = "default_spark_user")]
    pub service_user: String,
}

/// One PostgreSQL backend (`[[sql.postgres]]`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresBackendConfig {
    /// The name catalog tables use in `backend = "..."`.
    pub name: String,
    /// A libpq-style connection string or URL for the backend role, e.g.
    /// `postgresql://lakegate_backend:secret@db.internal:5432/warehouse`.
    pub url: String,
    /// Connections kept, at most: split among the connection threads and the shared runtime, at least one each
    /// (see `backend::postgres`).
    #[serde(default = "default_pool_size")]
    pub pool_size: usize,
    /// How long a statement waits for one of those connections when all are in use (held by other sessions'
    /// transaction blocks, or busy) before it is refused with SQLSTATE 53300; 0 refuses at once.
    #[serde(default = "default_pool_wait_timeout_ms")]
    pub pool_wait_timeout_ms: u64,
    /// Connect with TLS (verifying the server against the system roots, or `ca_file`).
    #[serde(default)]
    pub tls: bool,
    /// A PEM file of CA certificates to trust for the backend instead of the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for PostgresBackendConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry the backend role's password.
        f.debug_struct("PostgresBackendConfig")
            .field("name", &self.name)
            .field("url", &"<redacted>")
            .field("pool_size", &self.pool_size)
            .field("pool_wait_timeout_ms", &self.pool_wait_timeout_ms)
            .field("tls", &self.tls)
            .finish()
    }
}

impl Default for SqlConfig {
    fn default() -> Self {
        Self {
            listen: default_sql_listen(),
            tls: None,
            allow_plaintext_password: None,
            max_statement_bytes: default_max_statement_bytes(),
            max_message_bytes: default_max_message_bytes(),
            max_connections: default_max_connections(),
            max_connections_per_user: default_max_connections_per_user(),
            trino_page_rows: default_trino_page_rows(),
            trino_client_timeout_ms: default_trino_client_timeout_ms(),
            trino_read_ahead_bytes: default_trino_read_ahead_bytes(),
            trino_spill_bytes: default_trino_spill_bytes(),
            idle_in_transaction_timeout_ms: default_idle_in_transaction_timeout_ms(),
            postgres: Vec::new(),
            spark: Vec::new(),
        }
    }
}

impl SqlConfig {
    /// Whether a token may arrive over a connection without TLS (see `allow_plaintext_password`).
    pub fn plaintext_password_allowed(&self) -> bool {
        self.allow_plaintext_password.unwrap_or(self.listen.ip().is_loopback())
    }
}

fn default_sql_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 5433))
}
fn default_max_statement_bytes() -> usize {
    1 << 20
}
fn default_max_message_bytes() -> usize {
    16 << 20
}
fn default_max_connections() -> usize {
    1000
}
fn default_max_connections_per_user() -> usize {
    250
}
fn default_trino_page_rows() -> usize {
    1000
}
fn default_trino_client_timeout_ms() -> u64 {
    300_000
}
fn default_trino_read_ahead_bytes() -> usize {
    256 * 1024
}
fn default_trino_spill_bytes() -> usize {
    1 << 30
}
fn default_idle_in_transaction_timeout_ms() -> u64 {
    600_000
}
fn default_spark_user() -> String {
    "lakegate".into()
}
fn default_pool_size() -> usize {
    8
}
fn default_pool_wait_timeout_ms() -> u64 {
    30_000
}

//! The Spark backend: governed queries on a Spark Connect server, for tables that outgrow one machine.
//!
//! Lakegate keeps one Spark session per backend. Before the session's first statement it turns off Spark's
//! variable substitution and registers each catalog table of the backend as a temporary view over the table's
//! files (its `location`, `format` and the catalog's column types), named by [`dialect::view_name`]. Users never
//! name paths: a statement reaches Spark only rewritten, then translated to Spark SQL ([`dialect`]).
//!
//! Every query is a Spark Connect operation tagged with the user, the acting chain and the request id (Spark lists
//! tags with the operation's jobs, in its UI and event log). Arrow batches stream back one at a time; an operation
//! whose rows are dropped before the end (the client went away or cancelled) is interrupted on Spark.
//!
//! Spark Connect believes whichever user a client names, so no user name sent here authorizes anything: Lakegate
//! authenticates with Spark Connect's token as one service user, and Spark must be reachable by Lakegate alone.
//!
//! If the server loses the session (a restart), Spark says so before running anything (the session id Lakegate
//! last saw is sent with each call), and Lakegate sets up a new session and sends the statement once more.
//!
//! Spark lists a view's files once, when it registers the view; so before each statement the views it reads are
//! refreshed (`REFRESH TABLE`), and files other jobs added or compacted away since are seen.
//!
//! An Iceberg table is no registered view: each statement that reads it carries its own view of it, over the
//! Parquet data files of the table's current snapshot as the Iceberg catalog lists them at that moment (Spark
//! Connect's SQL with references, which Spark drops again once the statement is planned). Every statement thus
//! reads the table as last committed, and statements running at once each read one consistent snapshot. Spark
//! reads those files where Lakegate's embedded store keeps them: it must see the store's directory at the same
//! path (the same machine, or a shared volume).
//!
//! An INSERT appends the rows its translation selects to the table's view (Spark writes new files and commits them
//! as one job), counting them with an observation Spark reports at the end.

mod dialect;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::ipc::reader::StreamReader;
use futures::StreamExt;
use spark_connect_proto as proto;
use spark_connect_proto::spark_connect_service_client::SparkConnectServiceClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::arrow::{batch_rows, columns_of, output_name};
use super::iceberg::IcebergFiles;
use super::{Backend, Caller};
use crate::config::SparkBackendConfig;
use crate::error::SqlError;
use crate::rows::{Cell, Column, ColumnType, RowSet};
use dialect::{Placeholders, SparkSql, Table, Tables, insert_to_spark, to_spark, view_name};
use lakegate_core::policy::catalog::{Catalog, TableDef, TableFormat};

/// Largest message accepted from Spark. Spark cuts Arrow results into batches of about 4 MiB
/// (`spark.connect.grpc.arrow.maxBatchSize`); this leaves room for a server configured larger.
const MAX_MESSAGE_BYTES: usize = 128 << 20;

/// The name of the observation that counts the rows an INSERT appends.
const APPENDED: &str = "lakegate_appended";

/// Settings every Lakegate session on Spark runs with, set before its first statement.
const SESSION_SETTINGS: &[&str] = &[
    // `${...}` in a statement would be replaced by configuration values and environment variables.
    "SET spark.sql.variable.substitute=false",
    // The dialect writes literals with backslash escapes.
    "SET spark.sql.parser.escapedStringLiterals=false",
    // Errors on overflow and invalid casts, as PostgreSQL does, rather than NULLs.
    "SET spark.sql.ansi.enabled=true",
];

/// Why a Spark backend could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "remote {0:?}: expected sc://host[:port] (set `tls = true` rather than `;use_ssl=true`, and the token in \
         token_file)"
    )]
    Remote(String),
    #[error("{0} is set but tls is not: set tls = true to connect with TLS")]
    TlsSettingWithoutTls(&'static str),
    #[error("client_cert and client_key go together: set both or neither")]
    HalfAClientIdentity,
    #[error("TLS: {0}")]
    Tls(#[from] lakegate_net::tls::TlsError),
    #[error("reading token_file {path}: {source}")]
    Token { path: std::path::PathBuf, source: std::io::Error },
    #[error("the token in token_file is not a valid header value")]
    TokenValue,
    #[error("catalog table {table}: {reason}")]
    Table { table: String, reason: String },
}

/// Sends Spark Connect's authentication token with every call.
#[derive(Clone)]
pub(crate) struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Client = SparkConnectServiceClient<InterceptedService<Channel, Bearer>>;

/// A Spark Connect server holding some of the catalog's tables.
#[derive(Clone)]
pub struct Spark {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    client: Client,
    user: proto::UserContext,
    /// The backend's tables, by `(database, table)`, with their columns in order and the catalog's types.
    tables: Tables,
    /// The statements that register the tables read through views over their locations.
    views: Vec<String>,
    /// The Spark schema (DDL) of each Iceberg table, by `(database, table)`.
    iceberg_schemas: BTreeMap<(String, String), String>,
    /// Where the Iceberg tables' current data files are; `None` when the backend has none.
    iceberg: Option<Arc<dyn IcebergFiles>>,
    session: tokio::sync::Mutex<SessionState>,
}

/// Lakegate's session on the server.
struct SessionState {
    /// The client-chosen session id.
    id: String,
    /// The server's id of the session the settings and views were set up in; `None` until that is done.
    ready_in: Option<String>,
}

/// A session ready for statements: its id and the server's id of it.
#[derive(Clone)]
struct Ready {
    id: String,
    server_side: String,
}

impl std::fmt::Debug for Spark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spark").field("name", &self.inner.name).field("tables", &self.inner.tables.keys()).finish()
    }
}

impl Spark {
    /// Prepares the backend for the catalog's tables on it; `iceberg` finds the data files of its Iceberg tables.
    /// Connects lazily: Spark may start after Lakegate, and the first statement sets the session up.
    pub fn open(
        config: &SparkBackendConfig,
        catalog: &Catalog,
        iceberg: Option<Arc<dyn IcebergFiles>>,
    ) -> Result<Self, StartError> {
        let endpoint = endpoint(&config.remote, config.tls)?;
        let token = match &config.token_file {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| StartError::Token { path: path.clone(), source })?;
                let value = format!("Bearer {}", text.trim());
                Some(value.parse::<MetadataValue<Ascii>>().map_err(|_| StartError::TokenValue)?)
            }
            None => None,
        };
        let endpoint = Channel::from_shared(endpoint).map_err(|_| StartError::Remote(config.remote.clone()))?;
        let identity = match (&config.client_cert, &config.client_key) {
            (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
            (None, None) => None,
            _ => return Err(StartError::HalfAClientIdentity),
        };
        let channel = if config.tls {
            endpoint.connect_with_connector_lazy(tls_connector(config.ca_file.as_deref(), identity)?)
        } else if config.ca_file.is_some() {
            return Err(StartError::TlsSettingWithoutTls("ca_file"));
        } else if identity.is_some() {
            return Err(StartError::TlsSettingWithoutTls("client_cert"));
        } else {
            endpoint.connect_lazy()
        };
        let client = SparkConnectServiceClient::with_interceptor(channel, Bearer(token))
            .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let mut tables = Tables::new();
        let mut views = Vec::new();
        let mut iceberg_schemas = BTreeMap::new();
        for def in catalog.tables.iter().filter(|t| t.backend == config.name) {
            let (db, table) = def.split_name().ok_or_else(|| table_error(def, "name must be database.table".into()))?;
            let key = (db.to_owned(), table.to_owned());
            let is_iceberg = def.format == Some(TableFormat::Iceberg);
            if is_iceberg {
                if iceberg.is_none() {
                    return Err(table_error(def, "format iceberg, but the Iceberg catalog is not enabled".into()));
                }
                iceberg_schemas.insert(key.clone(), spark_columns(def)?);
            } else {
                views.push(register_view(def, db, table)?);
            }
            let columns = def.columns.iter().map(|c| (c.name.clone(), c.sql_type.clone())).collect();
            tables.insert(key, Table { columns, iceberg: is_iceberg });
        }
        let iceberg = if iceberg_schemas.is_empty() { None } else { iceberg };
        Ok(Spark {
            inner: Arc::new(Inner {
                name: config.name.clone(),
                client,
                user: proto::UserContext {
                    user_id: config.service_user.clone(),
                    user_name: config.service_user.clone(),
                    extensions: Vec::new(),
                },
                tables,
                views,
                iceberg_schemas,
                iceberg,
                session: tokio::sync::Mutex::new(SessionState { id: new_id(), ready_in: None }),
            }),
        })
    }

    /// The session, set up if it is not yet.
    async fn ready(&self) -> Result<Ready, SqlError> {
        let mut state = self.inner.session.lock().await;
        if let Some(server_side) = &state.ready_in {
            return Ok(Ready { id: state.id.clone(), server_side: server_side.clone() });
        }
        let mut server_side = None;
        for statement in SESSION_SETTINGS.iter().copied().map(str::to_owned).chain(self.inner.views.iter().cloned()) {
            let request = self.request(&state.id, server_side.clone(), sql_plan(statement), Vec::new(), new_id());
            let mut responses =
                self.inner.client.clone().execute_plan(request).await.map_err(|e| self.setup_error(e))?.into_inner();
            while let Some(response) = responses.next().await {
                let response = response.map_err(|e| self.setup_error(e))?;
                server_side.get_or_insert(response.server_side_session_id);
            }
        }
        let server_side = server_side.unwrap_or_default();
        state.ready_in = Some(server_side.clone());
        tracing::info!(backend = %self.inner.name, views = self.inner.views.len(), "Spark session set up");
        Ok(Ready { id: state.id.clone(), server_side })
    }

    /// Forgets a session the server lost, so that the next call sets up a new one.
    async fn lost(&self, ready: &Ready) {
        let mut state = self.inner.session.lock().await;
        if state.id == ready.id {
            tracing::warn!(backend = %self.inner.name, "Spark lost Lakegate's session; setting up a new one");
            state.id = new_id();
            state.ready_in = None;
        }
    }

    fn setup_error(&self, status: tonic::Status) -> SqlError {
        // The details (a missing path, an unreadable file) are for the operator; the client learns the backend
        // cannot serve.
        tracing::error!(backend = %self.inner.name, error = %status.message(), "setting up the Spark session failed");
        SqlError::BackendUnavailable(format!("Spark backend {:?} is not available", self.inner.name))
    }

    fn request(
        &self,
        session: &str,
        server_side: Option<String>,
        plan: proto::Plan,
        tags: Vec<String>,
        operation: String,
    ) -> proto::ExecutePlanRequest {
        proto::ExecutePlanRequest {
            session_id: session.to_owned(),
            client_observed_server_side_session_id: server_side,
            user_context: Some(self.inner.user.clone()),
            operation_id: Some(operation),
            plan: Some(plan),
            client_type: Some(client_type()),
            request_options: Vec::new(),
            tags,
        }
    }

    /// Starts an operation after refreshing the views it reads, setting up a new session once if the server lost
    /// the one it had. The guard interrupts the operation if it is dropped before the operation's end, from the
    /// moment the request is sent: Spark may send nothing, not even the response's headers, until a partition is
    /// done, and cancelling the call alone does not stop the operation.
    async fn start(
        &self,
        plan: proto::Plan,
        reads: &BTreeSet<String>,
        tags: Vec<String>,
    ) -> Result<(Interrupt, tonic::Streaming<proto::ExecutePlanResponse>), SqlError> {
        let mut retried = false;
        loop {
            let ready = self.ready().await?;
            let started = match self.refresh(&ready, reads).await {
                Ok(()) => {
                    let mut guard = Interrupt {
                        client: self.inner.client.clone(),
                        user: self.inner.user.clone(),
                        ready: ready.clone(),
                        operation: new_id(),
                        done: false,
                    };
                    let request = self.request(
                        &ready.id,
                        Some(ready.server_side.clone()),
                        plan.clone(),
                        tags.clone(),
                        guard.operation.clone(),
                    );
                    match self.inner.client.clone().execute_plan(request).await {
                        Ok(response) => Ok((guard, response.into_inner())),
                        Err(status) => {
                            // Refused before it ran: nothing to interrupt.
                            guard.done = true;
                            Err(status)
                        }
                    }
                }
                Err(status) => Err(status),
            };
            match started {
                Ok(started) => return Ok(started),
                Err(status) if session_lost(&status) && !retried => {
                    self.lost(&ready).await;
                    retried = true;
                }
                Err(status) => return Err(self.status_error(&status, &ready).await),
            }
        }
    }

    /// `sql` as the relation Spark runs. Each Iceberg table it reads comes with it as the view its text names, over
    /// the data files of the table's current snapshot, or over none when only the columns are wanted.
    async fn relation(&self, sql: SparkSql, with_files: bool) -> Result<proto::Relation, SqlError> {
        let root = sql_relation(sql.text);
        if sql.snapshots.is_empty() {
            return Ok(root);
        }
        let mut references = Vec::with_capacity(sql.snapshots.len());
        for (view, table) in sql.snapshots {
            let unknown =
                || SqlError::Internal(format!("{}.{} is not an Iceberg table of this backend", table.0, table.1));
            let schema = self.inner.iceberg_schemas.get(&table).ok_or_else(unknown)?;
            let files = self.inner.iceberg.as_ref().ok_or_else(unknown)?;
            let paths = if with_files {
                let unreadable = |e: String| SqlError::Backend {
                    sqlstate: "58030".into(),
                    message: format!("Iceberg table {}.{} cannot be read: {e}", table.0, table.1),
                };
                let found = files.data_files(&table.0, &table.1).await.map_err(unreadable)?;
                found.iter().map(|p| spark_file(p)).collect::<Result<Vec<_>, _>>().map_err(unreadable)?
            } else {
                Vec::new()
            };
            references.push(parquet_view(view, schema.clone(), paths));
        }
        Ok(with_references(root, references))
    }

    /// Has Spark list the files of `views` again.
    async fn refresh(&self, ready: &Ready, views: &BTreeSet<String>) -> Result<(), tonic::Status> {
        for view in views {
            let plan = sql_plan(format!("REFRESH TABLE `{view}`"));
            let request = self.request(&ready.id, Some(ready.server_side.clone()), plan, Vec::new(), new_id());
            let mut responses = self.inner.client.clone().execute_plan(request).await?.into_inner();
            while let Some(response) = responses.next().await {
                response?;
            }
        }
        Ok(())
    }

    async fn status_error(&self, status: &tonic::Status, ready: &Ready) -> SqlError {
        if session_lost(status) {
            self.lost(ready).await;
        }
        status_error(status)
    }
}

fn table_error(def: &TableDef, reason: String) -> StartError {
    StartError::Table { table: def.name.clone(), reason }
}

/// Connects over TLS (rustls, as every other client of Lakegate's), offering HTTP/2 by ALPN as gRPC needs, and
/// presenting `identity` (certificate chain, key) when the server asks for a client certificate.
fn tls_connector(
    ca_file: Option<&std::path::Path>,
    identity: Option<(&std::path::Path, &std::path::Path)>,
) -> Result<hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>, StartError> {
    let tls = lakegate_net::tls::client_config(ca_file, identity)?;
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    // The URI is https; the TLS layer above checks that, the TCP layer must not refuse it.
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    Ok(hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http2().wrap_connector(tcp))
}

/// `sc://host[:port][/]` as the gRPC endpoint URI, `https` when `tls`.
fn endpoint(remote: &str, tls: bool) -> Result<String, StartError> {
    let bad = || StartError::Remote(remote.to_owned());
    let rest = remote.strip_prefix("sc://").ok_or_else(bad)?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains(['/', ';', '?', '#', '@']) {
        return Err(bad());
    }
    // `host`, `host:port`, `[v6]` or `[v6]:port`.
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let port = match port {
        Some(p) => p.parse::<u16>().map_err(|_| bad())?,
        None => 15002,
    };
    if host.is_empty() || (host.contains(':') && !(host.starts_with('[') && host.ends_with(']'))) {
        return Err(bad());
    }
    let scheme = if tls { "https" } else { "http" };
    let uri = format!("{scheme}://{host}:{port}");
    let _: http::Uri = uri.parse().map_err(|_| bad())?;
    Ok(uri)
}

/// The statement that registers a table as a temporary view over its files, with the catalog's columns.
fn register_view(def: &TableDef, db: &str, table: &str) -> Result<String, StartError> {
    let location =
        def.location.as_deref().filter(|l| !l.is_empty()).ok_or_else(|| {
            table_error(def, "a table on Spark needs its location (the URI Spark reads it from)".into())
        })?;
    let (source, options) = match def.format {
        Some(TableFormat::Parquet) => ("parquet", String::new()),
        Some(TableFormat::Csv) => ("csv", ", header 'true'".to_owned()),
        Some(TableFormat::Iceberg) => {
            return Err(table_error(def, "an Iceberg table is read from its snapshot, not registered".into()));
        }
        None => return Err(table_error(def, "a table on Spark needs its format: parquet, csv or iceberg".into())),
    };
    let mut path = String::new();
    dialect::string_literal(location, &mut path);
    Ok(format!(
        "CREATE OR REPLACE TEMPORARY VIEW `{}` ({}) USING {source} OPTIONS (path {path}{options})",
        view_name(db, table),
        spark_columns(def)?
    ))
}

/// The table's columns with their Spark types, as a view's column list or a DDL schema: `` `id` BIGINT, ...``.
fn spark_columns(def: &TableDef) -> Result<String, StartError> {
    let mut columns = Vec::with_capacity(def.columns.len());
    for c in &def.columns {
        let ty = catalog_type(&c.sql_type)
            .ok_or_else(|| table_error(def, format!("column {}: type {} has no Spark type", c.name, c.sql_type)))?;
        columns.push(format!("`{}` {ty}", c.name.replace('`', "``")));
    }
    Ok(columns.join(", "))
}

/// A catalog column type as Spark spells it.
fn catalog_type(sql_type: &str) -> Option<String> {
    Some(match ColumnType::from_sql_type(sql_type)? {
        ColumnType::Bool => "BOOLEAN".into(),
        ColumnType::Int2 => "SMALLINT".into(),
        ColumnType::Int4 => "INT".into(),
        ColumnType::Int8 => "BIGINT".into(),
        ColumnType::Float4 => "FLOAT".into(),
        ColumnType::Float8 => "DOUBLE".into(),
        ColumnType::Numeric => {
            let (p, s) = super::embedded::numeric_precision(sql_type);
            format!("DECIMAL({p},{s})")
        }
        ColumnType::Text => "STRING".into(),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "TIMESTAMP_NTZ".into(),
    })
}

fn sql_relation(query: String) -> proto::Relation {
    proto::Relation {
        common: None,
        rel_type: Some(proto::relation::RelType::Sql(proto::Sql { query, ..Default::default() })),
    }
}

fn sql_plan(query: String) -> proto::Plan {
    root_plan(sql_relation(query))
}

fn root_plan(relation: proto::Relation) -> proto::Plan {
    proto::Plan { op_type: Some(proto::plan::OpType::Root(relation)) }
}

/// `root` with `references`, each a view (`SubqueryAlias`) its SQL text names, for this statement alone.
fn with_references(root: proto::Relation, references: Vec<proto::Relation>) -> proto::Relation {
    use proto::relation::RelType;
    proto::Relation {
        common: None,
        rel_type: Some(RelType::WithRelations(Box::new(proto::WithRelations {
            root: Some(Box::new(root)),
            references,
        }))),
    }
}

/// The view `alias` over the Parquet `paths`, read with `schema` (DDL).
fn parquet_view(alias: String, schema: String, paths: Vec<String>) -> proto::Relation {
    use proto::relation::RelType;
    let read = proto::Relation {
        common: None,
        rel_type: Some(RelType::Read(proto::Read {
            read_type: Some(proto::read::ReadType::DataSource(proto::read::DataSource {
                format: Some("parquet".into()),
                schema: Some(schema),
                paths,
                ..Default::default()
            })),
            is_streaming: false,
        })),
    };
    proto::Relation {
        common: None,
        rel_type: Some(RelType::SubqueryAlias(Box::new(proto::SubqueryAlias {
            input: Some(Box::new(read)),
            alias,
            ..Default::default()
        }))),
    }
}

/// A data file as Spark is given it: a `file:` URI of the path as it is. Spark expands glob patterns in the paths
/// it reads, so a path with a glob character is refused rather than read as a pattern.
fn spark_file(path: &std::path::Path) -> Result<String, String> {
    let text = path.to_str().ok_or_else(|| format!("{} is not UTF-8", path.display()))?;
    if !text.starts_with('/') || text.contains(['{', '}', '[', ']', '*', '?', '\\']) {
        return Err(format!("{text} is not a path Spark reads as itself"));
    }
    Ok(format!("file://{text}"))
}

/// Appends the rows of `rows` to `view`, counting them on the way (the observation [`APPENDED`], which Spark
/// reports once the write has committed).
fn append_plan(rows: proto::Relation, view: String) -> proto::Plan {
    use proto::write_operation::{SaveMode, SaveTable, SaveType, save_table::TableSaveMethod};
    let count = proto::Expression {
        common: None,
        expr_type: Some(proto::expression::ExprType::ExpressionString(proto::expression::ExpressionString {
            expression: "count(1) AS rows".into(),
        })),
    };
    let counted = proto::Relation {
        common: None,
        rel_type: Some(proto::relation::RelType::CollectMetrics(Box::new(proto::CollectMetrics {
            input: Some(Box::new(rows)),
            name: APPENDED.into(),
            metrics: vec![count],
        }))),
    };
    let write = proto::WriteOperation {
        input: Some(counted),
        save_type: Some(SaveType::Table(SaveTable {
            table_name: view,
            save_method: TableSaveMethod::InsertInto as i32,
        })),
        mode: SaveMode::Append as i32,
        ..Default::default()
    };
    proto::Plan {
        op_type: Some(proto::plan::OpType::Command(proto::Command {
            command_type: Some(proto::command::CommandType::WriteOperation(write)),
        })),
    }
}

/// The row count of the [`APPENDED`] observation, if `metrics` holds it.
fn appended_rows(metrics: &[proto::execute_plan_response::ObservedMetrics]) -> Option<u64> {
    use proto::expression::literal::LiteralType;
    let observed = metrics.iter().find(|m| m.name == APPENDED)?;
    match observed.values.first()?.literal_type.as_ref()? {
        LiteralType::Long(n) => u64::try_from(*n).ok(),
        LiteralType::Integer(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

fn client_type() -> String {
    format!("lakegate/{}", env!("CARGO_PKG_VERSION"))
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// A statement's own id, for the names of its views: letters and digits only.
fn statement_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// The tags of an operation: who it runs for. Spark refuses tags with commas, so `%` and `,` are
/// percent-encoded.
fn tags(caller: &Caller<'_>) -> Vec<String> {
    let encode = |s: &str| s.replace('%', "%25").replace(',', "%2C");
    let mut tags = vec![
        format!("lakegate-user={}", encode(&caller.principal.subject)),
        format!("lakegate-request={}", encode(caller.request_id)),
    ];
    if !caller.principal.actors.is_empty() {
        tags.push(format!("lakegate-via={}", encode(&caller.principal.on_behalf_of())));
    }
    tags
}

/// Whether Spark refused a call because the session it names is gone or is a new one.
fn session_lost(status: &tonic::Status) -> bool {
    status.message().contains("INVALID_HANDLE.SESSION")
}

/// A Spark error as the client sees it: Spark's SQLSTATE and the first line of its message. The rest of the
/// message quotes the translated statement (view names, the filters' text) and Spark's plan.
fn status_error(status: &tonic::Status) -> SqlError {
    use tonic::Code;
    if matches!(
        status.code(),
        Code::Unavailable | Code::Unauthenticated | Code::PermissionDenied | Code::DeadlineExceeded
    ) {
        tracing::error!(code = ?status.code(), error = %status.message(), "Spark backend call failed");
        return SqlError::BackendUnavailable("the Spark backend is not reachable".into());
    }
    let message = status.message();
    // A new row that failed its table's policy (the WITH CHECK's `raise_error`).
    if let Some(violation) = super::policy_violation(message) {
        return violation;
    }
    let sqlstate = message
        .split("SQLSTATE: ")
        .nth(1)
        .map(|rest| rest.chars().take(5).collect::<String>())
        .filter(|s| s.len() == 5 && s.chars().all(|c| c.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "XX000".into());
    let first = message.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("Spark failed the statement");
    let first = match first.split_once(" SQLSTATE: ") {
        Some((head, _)) => head.trim_end(),
        None => first,
    };
    SqlError::Backend { sqlstate, message: first.to_owned() }
}

/// Result columns from Spark's schema (a struct).
fn columns_of_spark(schema: &proto::DataType) -> Vec<Column> {
    use proto::data_type::Kind;
    let Some(Kind::Struct(fields)) = &schema.kind else { return Vec::new() };
    fields
        .fields
        .iter()
        .map(|f| {
            let ty = match f.data_type.as_ref().and_then(|t| t.kind.as_ref()) {
                Some(Kind::Boolean(_)) => ColumnType::Bool,
                Some(Kind::Byte(_) | Kind::Short(_)) => ColumnType::Int2,
                Some(Kind::Integer(_)) => ColumnType::Int4,
                Some(Kind::Long(_)) => ColumnType::Int8,
                Some(Kind::Float(_)) => ColumnType::Float4,
                Some(Kind::Double(_)) => ColumnType::Float8,
                Some(Kind::Decimal(_)) => ColumnType::Numeric,
                Some(Kind::Date(_)) => ColumnType::Date,
                Some(Kind::Timestamp(_) | Kind::TimestampNtz(_)) => ColumnType::Timestamp,
                _ => ColumnType::Text,
            };
            Column { name: output_name(&f.name), ty }
        })
        .collect()
}

/// Interrupts the operation on Spark unless it ran to its end.
struct Interrupt {
    client: Client,
    user: proto::UserContext,
    ready: Ready,
    operation: String,
    done: bool,
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let request = proto::InterruptRequest {
            session_id: self.ready.id.clone(),
            client_observed_server_side_session_id: Some(self.ready.server_side.clone()),
            user_context: Some(self.user.clone()),
            client_type: Some(client_type()),
            interrupt_type: proto::interrupt_request::InterruptType::OperationId as i32,
            interrupt: Some(proto::interrupt_request::Interrupt::OperationId(self.operation.clone())),
        };
        let mut client = self.client.clone();
        let operation = self.operation.clone();
        runtime.spawn(async move {
            match client.interrupt(request).await {
                Ok(_) => tracing::debug!(%operation, "interrupted the Spark operation of an abandoned query"),
                Err(e) => tracing::warn!(%operation, error = %e.message(), "interrupting a Spark operation failed"),
            }
        });
    }
}

/// The rows of one operation: Arrow batches decoded one at a time.
struct Batches {
    responses: tonic::Streaming<proto::ExecutePlanResponse>,
    rows: VecDeque<Vec<Cell>>,
    interrupt: Interrupt,
}

impl Batches {
    /// The next batch's rows, `None` at the end of the operation.
    async fn next_batch(&mut self) -> Result<Option<Vec<Vec<Cell>>>, SqlError> {
        use proto::execute_plan_response::ResponseType;
        while let Some(response) = self.responses.next().await {
            let response = response.map_err(|s| status_error(&s))?;
            match response.response_type {
                Some(ResponseType::ArrowBatch(batch)) => return decode(&batch.data).map(Some),
                Some(ResponseType::ResultComplete(_)) => break,
                _ => {}
            }
        }
        self.interrupt.done = true;
        Ok(None)
    }
}

/// The rows of one Arrow IPC stream.
fn decode(data: &[u8]) -> Result<Vec<Vec<Cell>>, SqlError> {
    let reader = StreamReader::try_new(std::io::Cursor::new(data), None)
        .map_err(|e| SqlError::Internal(format!("reading Spark's Arrow batch: {e}")))?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| SqlError::Internal(format!("reading Spark's Arrow batch: {e}")))?;
        rows.extend(batch_rows(&batch)?);
    }
    Ok(rows)
}

/// The schema of the first Arrow batch of a response stream, if it has one.
fn batch_columns(data: &[u8]) -> Option<Vec<Column>> {
    let reader = StreamReader::try_new(std::io::Cursor::new(data), None).ok()?;
    Some(columns_of(&reader.schema()))
}

#[async_trait]
impl Backend for Spark {
    async fn query(&self, sql: &str, caller: &Caller<'_>) -> Result<RowSet, SqlError> {
        use proto::execute_plan_response::ResponseType;
        let mut spark_sql = to_spark(sql, &self.inner.tables, &statement_id(), Placeholders::Refuse)?;
        let reads = std::mem::take(&mut spark_sql.reads);
        let plan = root_plan(self.relation(spark_sql, true).await?);
        let (interrupt, responses) = self.start(plan, &reads, tags(caller)).await?;
        let ready = interrupt.ready.clone();
        let mut batches = Batches { responses, rows: VecDeque::new(), interrupt };
        // The columns come with the first batch (Spark sends one, empty if need be) or as a schema message.
        let mut columns = None;
        while columns.is_none() {
            let Some(response) = batches.responses.next().await else { break };
            let response = match response {
                Ok(r) => r,
                Err(status) => return Err(self.status_error(&status, &ready).await),
            };
            if let Some(schema) = &response.schema {
                columns = Some(columns_of_spark(schema));
            }
            match response.response_type {
                Some(ResponseType::ArrowBatch(batch)) => {
                    if columns.is_none() {
                        columns = batch_columns(&batch.data);
                    }
                    batches.rows.extend(decode(&batch.data)?);
                }
                Some(ResponseType::ResultComplete(_)) => {
                    batches.interrupt.done = true;
                    break;
                }
                _ => {}
            }
        }
        let columns = match columns {
            Some(c) => c,
            None => self.describe(sql).await?,
        };
        let rows = futures::stream::unfold(Some(batches), |state| async move {
            let mut batches = state?;
            loop {
                if let Some(row) = batches.rows.pop_front() {
                    return Some((Ok(row), Some(batches)));
                }
                if batches.interrupt.done {
                    return None;
                }
                match batches.next_batch().await {
                    Ok(Some(rows)) => batches.rows.extend(rows),
                    Ok(None) => return None,
                    Err(e) => return Some((Err(e), None)),
                }
            }
        });
        Ok(RowSet { columns, rows: Box::pin(rows) })
    }

    async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError> {
        use proto::analyze_plan_request::{Analyze, Schema};
        use proto::analyze_plan_response::Result as Analysis;
        let spark_sql = to_spark(sql, &self.inner.tables, &statement_id(), Placeholders::Null)?;
        let plan = root_plan(self.relation(spark_sql, false).await?);
        let ready = self.ready().await?;
        let request = proto::AnalyzePlanRequest {
            session_id: ready.id.clone(),
            client_observed_server_side_session_id: Some(ready.server_side.clone()),
            user_context: Some(self.inner.user.clone()),
            client_type: Some(client_type()),
            analyze: Some(Analyze::Schema(Schema { plan: Some(plan) })),
        };
        let response = match self.inner.client.clone().analyze_plan(request).await {
            Ok(r) => r.into_inner(),
            Err(status) => return Err(self.status_error(&status, &ready).await),
        };
        match response.result {
            Some(Analysis::Schema(s)) => Ok(s.schema.as_ref().map(columns_of_spark).unwrap_or_default()),
            _ => Err(SqlError::Internal("Spark answered a schema request without a schema".into())),
        }
    }

    async fn parameter_types(&self, sql: &str) -> Result<Vec<Option<ColumnType>>, SqlError> {
        // Spark does not infer parameter types; the client's declared types (or text) apply.
        let count = sqlparser::tokenizer::Tokenizer::new(&sqlparser::dialect::PostgreSqlDialect {}, sql)
            .tokenize()
            .map(|tokens| {
                tokens
                    .iter()
                    .filter_map(|t| match t {
                        sqlparser::tokenizer::Token::Placeholder(p) => p.strip_prefix('$')?.parse::<usize>().ok(),
                        _ => None,
                    })
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        Ok(vec![None; count])
    }

    async fn execute(&self, sql: &str, caller: &Caller<'_>) -> Result<u64, SqlError> {
        let mut insert = insert_to_spark(sql, &self.inner.tables, &statement_id())?;
        let reads = std::mem::take(&mut insert.rows.reads);
        let plan = append_plan(self.relation(insert.rows, true).await?, insert.view);
        // A client that goes away mid-write interrupts the job: nothing is committed (Spark's commit is the job's
        // last step).
        let (mut interrupt, mut responses) = self.start(plan, &reads, tags(caller)).await?;
        let ready = interrupt.ready.clone();
        let mut appended = None;
        while let Some(response) = responses.next().await {
            let response = match response {
                Ok(r) => r,
                Err(status) => return Err(self.status_error(&status, &ready).await),
            };
            appended = appended.or_else(|| appended_rows(&response.observed_metrics));
            if matches!(response.response_type, Some(proto::execute_plan_response::ResponseType::ResultComplete(_))) {
                break;
            }
        }
        interrupt.done = true;
        // The rows are written by now; a count Spark did not report is an error rather than a guess.
        appended.ok_or_else(|| SqlError::Internal("Spark committed the INSERT without reporting its row count".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_are_spark_connect_uris_without_parameters() {
        assert_eq!(endpoint("sc://spark.internal:15002", false).unwrap(), "http://spark.internal:15002");
        assert_eq!(endpoint("sc://spark.internal:443", true).unwrap(), "https://spark.internal:443");
        assert_eq!(endpoint("sc://127.0.0.1", false).unwrap(), "http://127.0.0.1:15002");
        assert_eq!(endpoint("sc://[::1]:7/", false).unwrap(), "http://[::1]:7");
        for bad in
            ["http://x:1", "sc://", "sc://x:1/;token=abc", "sc://x:1/;use_ssl=true", "sc://u@x:1", "sc://x:99999"]
        {
            assert!(endpoint(bad, false).is_err(), "{bad}");
        }
    }

    fn config(tls: bool, ca_file: Option<&str>) -> SparkBackendConfig {
        SparkBackendConfig {
            name: "spark".into(),
            remote: "sc://spark.internal:443".into(),
            tls,
            ca_file: ca_file.map(Into::into),
            client_cert: None,
            client_key: None,
            token_file: None,
            service_user: "lakegate".into(),
        }
    }

    #[test]
    fn a_ca_file_without_tls_or_one_that_cannot_be_read_stops_the_start() {
        let catalog = Catalog::default();
        assert!(matches!(
            Spark::open(&config(false, Some("/etc/ssl/ca.pem")), &catalog, None),
            Err(StartError::TlsSettingWithoutTls("ca_file"))
        ));
        let missing = Spark::open(&config(true, Some("/nonexistent/ca.pem")), &catalog, None);
        assert!(matches!(missing, Err(StartError::Tls(_))), "{missing:?}");
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_tls() {
        let catalog = Catalog::default();
        let mut half = config(true, None);
        half.client_cert = Some("/etc/lakegate/spark/client.crt".into());
        assert!(matches!(Spark::open(&half, &catalog, None), Err(StartError::HalfAClientIdentity)));
        let mut plain = config(false, None);
        plain.client_cert = Some("/etc/lakegate/spark/client.crt".into());
        plain.client_key = Some("/etc/lakegate/spark/client.key".into());
        assert!(matches!(Spark::open(&plain, &catalog, None), Err(StartError::TlsSettingWithoutTls("client_cert"))));
        let mut unreadable = plain.clone();
        unreadable.tls = true;
        assert!(matches!(Spark::open(&unreadable, &catalog, None), Err(StartError::Tls(_))));
    }

    #[test]
    fn data_files_reach_spark_as_file_uris_and_never_as_glob_patterns() {
        use std::path::Path;
        assert_eq!(
            spark_file(Path::new("/var/lib/lakegate/store/ab/cd.parquet")).unwrap(),
            "file:///var/lib/lakegate/store/ab/cd.parquet"
        );
        for pattern in ["/store/*", "/store/a?", "/store/[ab]", "/store/{a,b}", "/store/a\\b", "store/relative"] {
            assert!(spark_file(Path::new(pattern)).is_err(), "{pattern}");
        }
    }

    #[test]
    fn a_new_row_the_policy_refuses_is_42501_as_on_postgresql() {
        let status = tonic::Status::internal(
            "[USER_RAISED_EXCEPTION] lakegate: new row violates row-level security policy for table \"orders\" \
             SQLSTATE: P0001\nJVM stacktrace: ...",
        );
        let e = status_error(&status);
        assert_eq!(e.sqlstate(), "42501");
        assert_eq!(e.to_string(), "new row violates row-level security policy for table \"orders\"");
    }

    #[test]
    fn spark_errors_keep_their_sqlstate_and_drop_the_statement_they_quote() {
        let status = tonic::Status::internal(
            "\n[UNSUPPORTED_DATATYPE] Unsupported data type \"TEXT\". SQLSTATE: 0A000\n== SQL (line 1, position 19) ==\n\
             SELECT CAST(secret AS TEXT) FROM lakegate_2_hr_x WHERE dept = 'x'\n",
        );
        let e = status_error(&status);
        assert_eq!(e.sqlstate(), "0A000");
        assert_eq!(e.to_string(), "[UNSUPPORTED_DATATYPE] Unsupported data type \"TEXT\".");
        assert_eq!(status_error(&tonic::Status::internal("boom")).sqlstate(), "XX000");
        assert_eq!(status_error(&tonic::Status::unauthenticated("bad token")).sqlstate(), "08006");
    }

    #[test]
    fn operations_are_tagged_with_the_user_and_the_chain_without_commas() {
        let principal = lakegate_core::identity::Principal {
            issuer: "https://idp".into(),
            subject: "alice,admin%".into(),
            groups: Vec::new(),
            attributes: Default::default(),
            token_id: None,
            expires_at: 0,
            actors: vec![lakegate_core::identity::Actor { issuer: "i".into(), subject: "notebook".into() }],
        };
        let caller = Caller { principal: &principal, request_id: "r1" };
        assert_eq!(tags(&caller), ["lakegate-user=alice%2Cadmin%25", "lakegate-request=r1", "lakegate-via=notebook"]);
    }
}

//! The PostgreSQL backend: a small pool of connections as the configured backend role; rows stream from the
//! server to the client one at a time.
//!
//! The pool is kept per connection thread (`lakegate_net::threads`), `pool_size` split among them and the shared
//! runtime: a PostgreSQL session runs on one connection thread, and a backend connection runs as a task of the
//! thread that opened it, so a statement's round trips on a connection of its own thread wake no other thread.
//!
//! A statement runs as its text, prepared unnamed, unless it comes with its parameters apart
//! ([`Parameterised`]: a client's prepared statement, or a text with literals that runs as its shape): then it is
//! kept prepared on each connection, its parameters typed as PostgreSQL types the literals they stand for, so that
//! PostgreSQL parses it once per connection and may keep one plan for all values, as it does for a driver that
//! prepares its statements itself. It is kept only where PostgreSQL reads it as it reads the text with the literals
//! written in (the same result columns, checked once per text and types), and never more than
//! [`PREPARED_PER_CONNECTION`] on a connection.
//!
//! At start every catalog table assigned to this backend is checked against the backend's
//! `information_schema.columns`: a missing table or column refuses start-up, so a governed view can never
//! silently miss a column the policy relies on.

use std::error::Error as StdError;

use async_trait::async_trait;
use bytes::BytesMut;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime, TimeoutType};
use futures::{StreamExt, TryStreamExt};
use tokio_postgres::types::{Format, FromSql, IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{NoTls, Statement};

use std::sync::{Arc, Mutex};

use super::{Backend, Caller, Ended, Parameterised, SavepointOp, Transaction, TransactionOptions};
use crate::bind::{Param, is_number};
use crate::config::PostgresBackendConfig;
use crate::error::SqlError;
use crate::rows::{Cell, Column, ColumnType, RowSet, numeric};
use lakegate_core::per_cpu_cache::PerCpuCache;
use lakegate_core::policy::catalog::Catalog;

/// An error with its causes: tokio-postgres shows only its kind ("error performing TLS handshake"), and the
/// operator needs the reason ("invalid peer certificate: UnknownIssuer").
fn with_causes(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// A pooled PostgreSQL backend.
#[derive(Clone)]
pub struct Postgres {
    /// Connections for the sessions of each connection thread, by its number.
    per_thread: Vec<Pool>,
    /// Connections for callers elsewhere (the Trino front, on the shared runtime).
    shared: Pool,
    cancel: CancelWith,
    /// The backend's name, for the operator's messages.
    name: Arc<str>,
    /// How long a statement waits for a connection of its pool (`pool_wait_timeout_ms`).
    wait: std::time::Duration,
    /// Whether PostgreSQL reads a parameterised statement as it reads its bound text, by text and types.
    read_alike: Arc<ReadAlike>,
}

/// Statements kept prepared on one connection. Past this many its cache is emptied, which closes them on the
/// server: the shapes of clients' texts cannot grow a connection's memory, or PostgreSQL's, without bound.
const PREPARED_PER_CONNECTION: usize = 128;

/// The most bytes of statement text [`ReadAlike`] remembers.
const READ_ALIKE_WEIGHT: u64 = 1 << 20;

/// Whether PostgreSQL reads a parameterised statement, its parameters typed as [`literal_type`] types them, as it
/// reads the statement with the literals written in. A property of the text and the types (and of the tables,
/// whose change a kept statement reports: see [`Postgres::query_parameterised`]), not of a connection or a value.
type ReadAlike = PerCpuCache<Typed, bool, TypedWeight>;

/// A parameterised statement and its parameters' types.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Typed {
    sql: String,
    types: Vec<Type>,
}

/// A [`Typed`] borrowed, to look one up without copying its text. Hashes as `Typed` does: a `String` as its
/// `str`, a `Vec` as its slice.
#[derive(Hash)]
struct TypedRef<'a> {
    sql: &'a str,
    types: &'a [Type],
}

impl quick_cache::Equivalent<Typed> for TypedRef<'_> {
    fn equivalent(&self, key: &Typed) -> bool {
        self.sql == key.sql && self.types == key.types.as_slice()
    }
}

#[derive(Clone)]
struct TypedWeight;

impl quick_cache::Weighter<Typed, bool> for TypedWeight {
    fn weight(&self, key: &Typed, _: &bool) -> u64 {
        (key.sql.len() + 8 * key.types.len() + 64) as u64
    }
}

/// The type PostgreSQL gives the literal a parameter is written in as: a quoted string and NULL have none of
/// their own and take their context's, as a parameter sent untyped does; an integer is `integer` if it fits, else
/// `bigint`, else `numeric`, as is a number with a point or an exponent. `None` for a number written otherwise.
fn literal_type(param: &Param) -> Option<Type> {
    Some(match param {
        Param::Null | Param::Text(_) => Type::UNKNOWN,
        Param::Bool(_) => Type::BOOL,
        Param::Number(n) if is_number(n) => {
            let n = n.trim();
            let integer = n.strip_prefix(['-', '+']).unwrap_or(n).bytes().all(|b| b.is_ascii_digit());
            if integer && n.parse::<i32>().is_ok() {
                Type::INT4
            } else if integer && n.parse::<i64>().is_ok() {
                Type::INT8
            } else {
                Type::NUMERIC
            }
        }
        Param::Number(_) => return None,
    })
}

/// A parameter sent as text, which PostgreSQL reads with its type's input function, as it reads a literal.
#[derive(Debug)]
struct AsText<'a>(&'a Param);

impl ToSql for AsText<'_> {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn StdError + Sync + Send>> {
        let text = match self.0 {
            Param::Null => return Ok(IsNull::Yes),
            Param::Number(n) => n.trim(),
            Param::Bool(true) => "true",
            Param::Bool(false) => "false",
            Param::Text(t) => t,
        };
        out.extend_from_slice(text.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn encode_format(&self, _: &Type) -> Format {
        Format::Text
    }

    to_sql_checked!();
}

/// How a cancel request reaches the server: over TLS when the connections use it.
#[derive(Clone)]
enum CancelWith {
    Plain,
    Tls(super::pg_tls::MakeRustlsConnect),
}

impl CancelWith {
    /// Cancels what `token`'s backend runs now. Best effort: the connection is closed afterwards anyway.
    async fn send(self, token: tokio_postgres::CancelToken) {
        let sent = match self {
            CancelWith::Plain => token.cancel_query(NoTls).await,
            CancelWith::Tls(tls) => token.cancel_query(tls).await,
        };
        if let Err(e) = sent {
            tracing::warn!(error = %with_causes(&e), "cancelling an abandoned query on the backend failed");
        }
    }
}

impl std::fmt::Debug for Postgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per_thread: Vec<_> = self.per_thread.iter().map(Pool::status).collect();
        f.debug_struct("Postgres").field("per_thread", &per_thread).field("shared", &self.shared.status()).finish()
    }
}

/// Why a PostgreSQL backend could not be opened at start-up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid url: {0}")]
    Url(tokio_postgres::Error),
    #[error("TLS to the backend: {0}")]
    Tls(#[from] lakegate_net::tls::TlsError),
    #[error("ca_file is set but tls is not: set tls = true to connect with TLS")]
    CaWithoutTls,
    #[error("pool: {0}")]
    Pool(String),
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("catalog table {0}: not database.table")]
    NotQualified(String),
    #[error("reading information_schema: {0}")]
    InformationSchema(tokio_postgres::Error),
    #[error("catalog table {0} does not exist in the backend (or the backend role cannot see it)")]
    MissingTable(String),
    #[error("catalog column {table}.{column} does not exist in the backend")]
    MissingColumn { table: String, column: String },
}

impl Postgres {
    /// Connects, then checks the catalog tables of this backend against its information_schema.
    pub async fn connect(config: &PostgresBackendConfig, catalog: &Catalog) -> Result<Self, StartError> {
        let mut pg: tokio_postgres::Config = config.url.parse().map_err(StartError::Url)?;
        // The rewriter writes string literals as the SQL standard reads them, a backslash being a character. A
        // server set otherwise (`standard_conforming_strings = off`, in its configuration or for the backend role)
        // would read `'a\'` as an open string and the rest of the statement as its text: each connection asks
        // for the standard's reading, which the startup packet's options give over any configured default.
        let options = match pg.get_options() {
            Some(given) => format!("{given} -c standard_conforming_strings=on"),
            None => "-c standard_conforming_strings=on".to_owned(),
        };
        pg.options(&options);
        let cancel = if config.tls {
            // Without `sslmode=require` tokio-postgres would fall back to plain TCP when the server declines TLS.
            pg.ssl_mode(tokio_postgres::config::SslMode::Require);
            CancelWith::Tls(super::pg_tls::MakeRustlsConnect::new(config.ca_file.as_deref())?)
        } else if config.ca_file.is_some() {
            return Err(StartError::CaWithoutTls);
        } else {
            CancelWith::Plain
        };
        let wait = std::time::Duration::from_millis(config.pool_wait_timeout_ms);
        let pools = 1 + lakegate_net::threads::connection_threads();
        let mut per_thread = (0..pools)
            .map(|i| {
                let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
                let manager = match &cancel {
                    CancelWith::Tls(tls) => Manager::from_config(pg.clone(), tls.clone(), manager_config),
                    CancelWith::Plain => Manager::from_config(pg.clone(), NoTls, manager_config),
                };
                // A statement waits for a connection at most `wait`: when blocks of other sessions hold every one,
                // the client gets 53300 and may retry, rather than a statement that never answers.
                Pool::builder(manager)
                    .max_size(pool_share(config.pool_size, pools, i))
                    .runtime(Runtime::Tokio1)
                    .wait_timeout(Some(wait))
                    .build()
            })
            .collect::<Result<Vec<Pool>, _>>()
            .map_err(|e| StartError::Pool(e.to_string()))?;
        let shared = per_thread.pop().ok_or_else(|| StartError::Pool("no pool".to_owned()))?;
        let read_alike = Arc::new(ReadAlike::with_weighter(256, READ_ALIKE_WEIGHT, TypedWeight));
        let backend = Postgres { per_thread, shared, cancel, name: config.name.as_str().into(), wait, read_alike };
        backend.check_catalog(&config.name, catalog).await?;
        Ok(backend)
    }

    async fn check_catalog(&self, name: &str, catalog: &Catalog) -> Result<(), StartError> {
        // Its own connection, closed after the check: the pools open theirs on the threads that use them.
        let client = self.shared.get().await.map_err(|e| StartError::Connect(with_causes(&e)))?;
        let client = deadpool_postgres::Object::take(client);
        for table in catalog.tables.iter().filter(|t| t.backend == name) {
            let (db, t) = table.split_name().ok_or_else(|| StartError::NotQualified(table.name.clone()))?;
            let rows = client
                .query(
                    "SELECT column_name::text FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                    &[&db, &t],
                )
                .await
                .map_err(StartError::InformationSchema)?;
            if rows.is_empty() {
                return Err(StartError::MissingTable(table.name.clone()));
            }
            let present: Vec<String> = rows.iter().filter_map(|r| r.try_get::<_, String>(0).ok()).collect();
            for c in &table.columns {
                if !present.contains(&c.name) {
                    return Err(StartError::MissingColumn { table: table.name.clone(), column: c.name.clone() });
                }
            }
        }
        Ok(())
    }

    /// The pool of the connection thread this runs on, or the shared one.
    fn pool(&self) -> &Pool {
        lakegate_net::threads::connection_thread().and_then(|i| self.per_thread.get(i)).unwrap_or(&self.shared)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, SqlError> {
        self.pool().get().await.map_err(|e| match e {
            PoolError::Timeout(TimeoutType::Wait) => {
                SqlError::BackendBusy { backend: self.name.to_string(), waited: self.wait }
            }
            e => SqlError::BackendUnavailable(with_causes(&e)),
        })
    }

    /// `query` kept prepared on `client`, its parameters typed as `types`, if PostgreSQL reads it as it reads the
    /// bound text; `None` otherwise (then the bound text runs).
    async fn prepared(
        &self,
        client: &deadpool_postgres::Object,
        query: &Parameterised<'_>,
        types: &[Type],
    ) -> Option<Statement> {
        let alike = match self.read_alike.get(&TypedRef { sql: query.sql, types }) {
            Some(alike) => alike,
            None => {
                let alike = reads_alike(client, query, types).await?;
                self.read_alike.insert(Typed { sql: query.sql.to_owned(), types: types.to_vec() }, alike);
                alike
            }
        };
        if !alike {
            return None;
        }
        let kept = &client.statement_cache;
        if kept.size() >= PREPARED_PER_CONNECTION {
            kept.clear();
        }
        kept.prepare_typed(client, query.sql, types).await.ok()
    }
}

/// The connections the `i`th of `pools` pools may hold: `pool_size` split evenly, at least one each.
fn pool_share(pool_size: usize, pools: usize, i: usize) -> usize {
    (pool_size / pools + usize::from(i < pool_size % pools)).max(1)
}

/// Whether PostgreSQL reads `query.sql`, its parameters typed as `types`, as it reads `query.bound`: it prepares
/// both, and their result columns must be named and typed alike. A statement PostgreSQL cannot read with such
/// parameters (a syntax or typing error: one it cannot type, `INTERVAL $1`) is not read alike. `None` when it
/// cannot be told now: the bound text fails too (with its own value), or a lock, a cancel or the connection did.
async fn reads_alike(pg: &tokio_postgres::Client, query: &Parameterised<'_>, types: &[Type]) -> Option<bool> {
    let parameterised = match pg.prepare_typed(query.sql, types).await {
        Ok(statement) => statement,
        Err(e) => {
            let class = e.as_db_error().and_then(|db| db.code().code().get(..2));
            return matches!(class, Some("42" | "0A")).then_some(false);
        }
    };
    let bound = pg.prepare(query.bound).await.ok()?;
    let columns =
        |s: &Statement| s.columns().iter().map(|c| (c.name().to_owned(), c.type_().clone())).collect::<Vec<_>>();
    Some(columns(&parameterised) == columns(&bound))
}

fn backend_error(e: tokio_postgres::Error) -> SqlError {
    match e.as_db_error() {
        // The WITH CHECK of a write fails as a cast error (22P02) that quotes the rewriter's marker.
        Some(db) => super::policy_violation(db.message()).unwrap_or_else(|| SqlError::Backend {
            sqlstate: db.code().code().to_owned(),
            message: db.message().to_owned(),
        }),
        None if e.is_closed() => SqlError::BackendUnavailable(e.to_string()),
        None => SqlError::Backend { sqlstate: "XX000".into(), message: e.to_string() },
    }
}

fn column_type(ty: &Type) -> Result<ColumnType, SqlError> {
    Ok(match *ty {
        Type::BOOL => ColumnType::Bool,
        Type::INT2 => ColumnType::Int2,
        Type::INT4 => ColumnType::Int4,
        Type::INT8 => ColumnType::Int8,
        Type::FLOAT4 => ColumnType::Float4,
        Type::FLOAT8 => ColumnType::Float8,
        Type::NUMERIC => ColumnType::Numeric,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => ColumnType::Text,
        Type::DATE => ColumnType::Date,
        Type::TIMESTAMP => ColumnType::Timestamp,
        ref other => {
            return Err(SqlError::Unsupported(format!("result columns of type {other} (cast to text in the query)")));
        }
    })
}

/// Days and microseconds between 1970-01-01 and PostgreSQL's epoch, 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// One value decoded from PostgreSQL's binary format.
struct PgCell(Cell);

impl<'a> FromSql<'a> for PgCell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(PgCell(match *ty {
            Type::BOOL => Cell::Bool(bool::from_sql(ty, raw)?),
            Type::INT2 => Cell::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::INT4 => Cell::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
            Type::FLOAT4 => Cell::Float(f64::from(f32::from_sql(ty, raw)?)),
            Type::FLOAT8 => Cell::Float(f64::from_sql(ty, raw)?),
            Type::NUMERIC => Cell::Numeric(numeric::decode(raw)?),
            Type::DATE => Cell::Date(i32::from_sql(&Type::INT4, raw)?.saturating_add(PG_EPOCH_DAYS)),
            Type::TIMESTAMP => Cell::Timestamp(i64::from_sql(&Type::INT8, raw)?.saturating_add(PG_EPOCH_MICROS)),
            _ => Cell::Text(String::from_utf8(raw.to_vec())?),
        }))
    }

    fn from_sql_null(_: &Type) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(PgCell(Cell::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A connection statements can run on: a pooled one, or one pinned to a transaction (shared with the row
/// streams it feeds).
trait Connection: Send + Sync + 'static {
    fn pg(&self) -> &tokio_postgres::Client;

    /// Gives up the connection in the middle of a query: the query is cancelled on the server.
    fn abandon(self, cancel: CancelWith);
}

impl Connection for deadpool_postgres::Object {
    fn pg(&self) -> &tokio_postgres::Client {
        self
    }

    /// The connection leaves the pool (a cancel arriving after the pool had handed it to another statement would
    /// cancel that one instead) and closes once the query has stopped. A cancel that reaches the server just as
    /// the query starts can be lost (seen in `tests/it/sql.rs` on an analysed table), so it is sent again until
    /// the connection answers an empty query, which it does only once the abandoned one has ended.
    fn abandon(self, cancel: CancelWith) {
        let token = self.cancel_token();
        let detached = deadpool_postgres::Object::take(self);
        spawn_or_drop(async move {
            for wait in CANCEL_WAITS {
                cancel.clone().send(token.clone()).await;
                if tokio::time::timeout(wait, detached.simple_query("")).await.is_ok() {
                    break;
                }
            }
            drop(detached);
        });
    }
}

impl Connection for Arc<deadpool_postgres::Object> {
    fn pg(&self) -> &tokio_postgres::Client {
        self
    }

    /// Not cancelled: the connection stays with its transaction, and the client's next statement on it could
    /// meet the cancel instead of this one. The rest of the result is read and dropped by tokio-postgres, as
    /// before any cancelling; a client that left ends the transaction (see `PgTransaction`'s drop).
    fn abandon(self, _cancel: CancelWith) {}
}

/// How long an abandoned connection is given to answer after each cancel request; after the last it is closed.
const CANCEL_WAITS: [std::time::Duration; 5] = [
    std::time::Duration::from_millis(100),
    std::time::Duration::from_millis(300),
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(2),
    std::time::Duration::from_secs(4),
];

/// Runs `work` on the current runtime; without one (a runtime shutting down) it is dropped, and the connection it
/// holds closes.
fn spawn_or_drop(work: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(work);
    }
}

/// A query's hold on its connection while it runs: dropped before the result's end (the client left or
/// cancelled, or stopped reading), a pooled connection's query is cancelled on the server rather than left running
/// there to its end on a connection no one reads.
struct Running<C: Connection> {
    connection: Option<C>,
    cancel: CancelWith,
}

impl<C: Connection> Running<C> {
    fn new(connection: C, cancel: CancelWith) -> Self {
        Running { connection: Some(connection), cancel }
    }

    fn pg(&self) -> Option<&tokio_postgres::Client> {
        self.connection.as_ref().map(Connection::pg)
    }

    /// The result was read to its end: the connection goes back as it is.
    fn finished(&mut self) {
        self.connection.take();
    }
}

impl<C: Connection> Drop for Running<C> {
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take() {
            connection.abandon(self.cancel.clone());
        }
    }
}

/// What a query runs: a text, or a statement kept prepared with its parameters.
#[derive(Clone, Copy)]
enum Run<'a> {
    Text(&'a str),
    Prepared(&'a Statement, &'a [Param]),
}

fn columns_of(statement: &Statement) -> Result<Vec<Column>, SqlError> {
    statement.columns().iter().map(|c| Ok(Column { name: c.name().to_owned(), ty: column_type(c.type_())? })).collect()
}

/// Runs a query in one round trip (a text is parsed, bound and executed pipelined, its parameters written in; a
/// kept statement is bound and executed) and streams the rows. A text's columns come with its first row; only an
/// empty result costs a second round trip to describe them.
async fn query_on<C: Connection>(connection: C, cancel: CancelWith, run: Run<'_>) -> Result<RowSet, SqlError> {
    // Known before anything runs: an error here leaves nothing to cancel.
    let known = match run {
        Run::Prepared(statement, _) => Some(columns_of(statement)?),
        Run::Text(_) => None,
    };
    let mut running = Running::new(connection, cancel);
    let pg = running.pg().ok_or_else(|| SqlError::BackendUnavailable("no connection".into()))?;
    let started = match run {
        Run::Text(sql) => pg.query_typed_raw(sql, std::iter::empty::<(i32, Type)>()).await,
        Run::Prepared(statement, params) => pg.query_raw(statement, params.iter().map(AsText)).await,
    };
    // An error before the first row ends the query on the server: nothing to cancel.
    let started = match started {
        Ok(stream) => stream,
        Err(e) => {
            running.finished();
            return Err(backend_error(e));
        }
    };
    // Fused: a row stream polled again after its end fails ("connection closed"), and an empty result has ended
    // by the time its columns are known.
    let mut stream = Box::pin(started).fuse();
    let first = match stream.next().await.transpose() {
        Ok(first) => first,
        Err(e) => {
            running.finished();
            return Err(backend_error(e));
        }
    };
    let columns = match (known, &first) {
        (Some(columns), _) => columns,
        (None, Some(row)) => row
            .columns()
            .iter()
            .map(|c| Ok(Column { name: c.name().to_owned(), ty: column_type(c.type_())? }))
            .collect::<Result<Vec<_>, SqlError>>()?,
        (None, None) => {
            // The query has ended: nothing left to cancel while its columns are asked for.
            let columns = match (running.pg(), run) {
                (Some(pg), Run::Text(sql)) => describe_with(pg, sql).await,
                (_, Run::Prepared(statement, _)) => columns_of(statement),
                (None, _) => Err(SqlError::BackendUnavailable("no connection".into())),
            };
            running.finished();
            columns?
        }
    };
    let width = columns.len();
    // The connection travels with the stream, so a pooled one returns to the pool only when the client has read
    // every row; a stream dropped before its end cancels the query (see `Running`).
    let rows = futures::stream::iter(first.map(Ok))
        .chain(stream)
        .map_err(backend_error)
        .map(move |row| {
            let row = row?;
            (0..width)
                .map(|i| row.try_get::<_, PgCell>(i).map(|c| c.0).map_err(backend_error))
                .collect::<Result<Vec<_>, _>>()
        })
        .chain(futures::stream::poll_fn(move |_| {
            // Past the last row (or an error, after which the server has ended the query too).
            running.finished();
            std::task::Poll::Ready(None)
        }));
    Ok(RowSet { columns, rows: Box::pin(rows) })
}

async fn describe_on(connection: &impl Connection, sql: &str) -> Result<Vec<Column>, SqlError> {
    describe_with(connection.pg(), sql).await
}

async fn describe_with(pg: &tokio_postgres::Client, sql: &str) -> Result<Vec<Column>, SqlError> {
    columns_of(&pg.prepare(sql).await.map_err(backend_error)?)
}

async fn parameter_types_on(connection: &impl Connection, sql: &str) -> Result<Vec<Option<ColumnType>>, SqlError> {
    let statement = connection.pg().prepare(sql).await.map_err(backend_error)?;
    Ok(statement.params().iter().map(|t| column_type(t).ok()).collect())
}

#[async_trait]
impl Backend for Postgres {
    async fn query(&self, sql: &str, _caller: &Caller<'_>) -> Result<RowSet, SqlError> {
        query_on(self.client().await?, self.cancel.clone(), Run::Text(sql)).await
    }

    /// Runs the statement kept prepared where PostgreSQL reads it alike (see the module's comment), else the
    /// bound text.
    async fn query_parameterised(&self, query: Parameterised<'_>, caller: &Caller<'_>) -> Result<RowSet, SqlError> {
        let client = self.client().await?;
        let types = query.params.iter().map(literal_type).collect::<Option<Vec<_>>>();
        let kept = match &types {
            Some(types) => self.prepared(&client, &query, types).await,
            None => None,
        };
        let (Some(statement), Some(types)) = (kept, types) else {
            return query_on(client, self.cancel.clone(), Run::Text(query.bound)).await;
        };
        let cache = client.statement_cache.clone();
        match query_on(client, self.cancel.clone(), Run::Prepared(&statement, query.params)).await {
            // A kept statement whose table changed its columns ("cached plan must not change result type"), or
            // one the server no longer has: this once the bound text runs (a read, and nothing has reached the
            // client), and the statement is prepared and checked afresh next time.
            Err(SqlError::Backend { sqlstate, .. }) if sqlstate == "0A000" || sqlstate == "26000" => {
                drop(cache.remove(query.sql, &types));
                self.read_alike.remove(&TypedRef { sql: query.sql, types: &types });
                self.query(query.bound, caller).await
            }
            ran => ran,
        }
    }

    async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError> {
        describe_on(&self.client().await?, sql).await
    }

    async fn parameter_types(&self, sql: &str) -> Result<Vec<Option<ColumnType>>, SqlError> {
        parameter_types_on(&self.client().await?, sql).await
    }

    async fn execute(&self, sql: &str, _caller: &Caller<'_>) -> Result<u64, SqlError> {
        self.client().await?.execute(sql, &[]).await.map_err(backend_error)
    }

    fn comparisons_typed_at_planning(&self) -> bool {
        true
    }

    fn connections_awaited(&self) -> bool {
        self.pool().status().waiting > 0
    }

    async fn begin(&self, options: &TransactionOptions) -> Result<Option<Arc<dyn Transaction>>, SqlError> {
        let client = self.client().await?;
        client.batch_execute(&options.begin_sql()).await.map_err(backend_error)?;
        Ok(Some(Arc::new(PgTransaction {
            connection: Mutex::new(Some(Arc::new(client))),
            cancel: self.cancel.clone(),
        })))
    }
}

/// A transaction pinned to one pooled connection until COMMIT or ROLLBACK.
///
/// The connection must never go back to the pool with the transaction open (the next session would run inside
/// it): ending or dropping the handle rolls back, and a connection whose state is in doubt is detached from the
/// pool and closed, which makes PostgreSQL roll back whatever was open.
struct PgTransaction {
    connection: Mutex<Option<Arc<deadpool_postgres::Object>>>,
    cancel: CancelWith,
}

impl std::fmt::Debug for PgTransaction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTransaction").finish_non_exhaustive()
    }
}

impl PgTransaction {
    fn connection(&self) -> Result<Arc<deadpool_postgres::Object>, SqlError> {
        let slot = self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.clone().ok_or_else(|| SqlError::Unsupported("the transaction has ended".into()))
    }

    fn take(&self) -> Option<Arc<deadpool_postgres::Object>> {
        self.connection.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// Closes a connection instead of returning it to the pool (when nothing else holds it).
fn discard(connection: Arc<deadpool_postgres::Object>) {
    if let Ok(object) = Arc::try_unwrap(connection) {
        drop(deadpool_postgres::Object::take(object));
    }
}

#[async_trait]
impl Backend for PgTransaction {
    async fn query(&self, sql: &str, _caller: &Caller<'_>) -> Result<RowSet, SqlError> {
        query_on(self.connection()?, self.cancel.clone(), Run::Text(sql)).await
    }

    async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError> {
        describe_on(&self.connection()?, sql).await
    }

    async fn parameter_types(&self, sql: &str) -> Result<Vec<Option<ColumnType>>, SqlError> {
        parameter_types_on(&self.connection()?, sql).await
    }

    async fn execute(&self, sql: &str, _caller: &Caller<'_>) -> Result<u64, SqlError> {
        self.connection()?.execute(sql, &[]).await.map_err(backend_error)
    }
}

#[async_trait]
impl Transaction for PgTransaction {
    async fn savepoint(&self, op: SavepointOp, name: &str) -> Result<(), SqlError> {
        self.connection()?.batch_execute(&op.sql(name)).await.map_err(backend_error)
    }

    async fn end(&self, commit: bool) -> Result<Ended, SqlError> {
        // Already ended (a failed end discarded the connection): nothing of the block was committed.
        let Some(connection) = self.take() else { return Ok(Ended::RolledBack) };
        let result = if commit { commit_on(&connection).await } else { rollback_on(&connection).await };
        if result.is_err() {
            discard(connection);
        }
        result.map_err(backend_error)
    }
}

/// COMMIT on `connection`, and whether it committed. PostgreSQL answers a COMMIT of a block an error aborted with
/// the tag ROLLBACK, which tokio-postgres does not show; an empty SELECT sent before it in the same message tells
/// instead, in the same round trip: in an aborted block it fails with 25P02 and the COMMIT is not run, so the
/// block is rolled back here.
async fn commit_on(connection: &deadpool_postgres::Object) -> Result<Ended, tokio_postgres::Error> {
    match connection.batch_execute("SELECT; COMMIT").await {
        Ok(()) => Ok(Ended::Committed),
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::IN_FAILED_SQL_TRANSACTION) => {
            rollback_on(connection).await
        }
        Err(e) => Err(e),
    }
}

async fn rollback_on(connection: &deadpool_postgres::Object) -> Result<Ended, tokio_postgres::Error> {
    connection.batch_execute("ROLLBACK").await.map(|()| Ended::RolledBack)
}

impl Drop for PgTransaction {
    fn drop(&mut self) {
        let Some(connection) = self.take() else { return };
        // The client went away inside a transaction: roll back before the connection is reused.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if connection.batch_execute("ROLLBACK").await.is_err() {
                        discard(connection);
                    }
                });
            }
            Err(_) => discard(connection),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parameter_is_typed_as_postgresql_types_the_literal_it_stands_for() {
        let number = |n: &str| literal_type(&Param::Number(n.into()));
        for (n, ty) in [
            ("17", Type::INT4),
            (" 42 ", Type::INT4),
            ("-2147483648", Type::INT4),
            ("2147483648", Type::INT8),
            ("-9223372036854775808", Type::INT8),
            ("9223372036854775808", Type::NUMERIC),
            ("1.50", Type::NUMERIC),
            ("1e3", Type::NUMERIC),
            (".5", Type::NUMERIC),
        ] {
            assert_eq!(number(n), Some(ty), "{n}");
        }
        for n in ["0x1F", "1_000", "", "-", "NaN", "1;"] {
            assert_eq!(number(n), None, "{n}");
        }
        assert_eq!(literal_type(&Param::Text("17".into())), Some(Type::UNKNOWN));
        assert_eq!(literal_type(&Param::Null), Some(Type::UNKNOWN));
        assert_eq!(literal_type(&Param::Bool(false)), Some(Type::BOOL));
    }

    /// What PostgreSQL reads alike is remembered by the bytes of its text, a mebibyte in all: however many or long
    /// the texts clients send, what is kept of them stays within that, and a text longer than it is not kept.
    #[test]
    fn what_postgresql_reads_alike_is_remembered_within_a_mebibyte_of_text() {
        lakegate_core::per_cpu_cache::stay_on_this_cpu();
        let read_alike = ReadAlike::with_weighter(256, READ_ALIKE_WEIGHT, TypedWeight);
        let text = |n: usize| format!("SELECT $1 AS c{n:04} -- {}", "x".repeat(1_000));
        for n in 0..3_000 {
            read_alike.insert(Typed { sql: text(n), types: vec![Type::INT4] }, true);
        }
        let kept = read_alike.len();
        assert!(kept > 0, "the latest texts are remembered");
        let bytes = kept * text(0).len();
        assert!(bytes as u64 <= READ_ALIKE_WEIGHT, "{kept} texts remembered, {bytes} bytes");
        let latest = text(2_999);
        assert_eq!(read_alike.get(&TypedRef { sql: &latest, types: &[Type::INT4] }), Some(true));

        let long = format!("SELECT $1 -- {}", "x".repeat(READ_ALIKE_WEIGHT as usize));
        read_alike.insert(Typed { sql: long.clone(), types: vec![Type::INT4] }, true);
        assert_eq!(read_alike.get(&TypedRef { sql: &long, types: &[Type::INT4] }), None);
    }

    #[test]
    fn the_pool_size_is_split_among_the_threads_pools_at_least_one_each() {
        let shares = |size, pools| (0..pools).map(|i| pool_share(size, pools, i)).collect::<Vec<_>>();
        assert_eq!(shares(8, 3), [3, 3, 2], "as even as it goes, the total kept");
        assert_eq!(shares(8, 2), [4, 4]);
        assert_eq!(shares(1, 3), [1, 1, 1], "every thread can reach the backend");
        assert_eq!(shares(0, 2), [1, 1]);
    }
}

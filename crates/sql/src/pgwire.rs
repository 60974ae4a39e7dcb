//! The PostgreSQL wire front: psql, pgJDBC, psycopg and SQLAlchemy connect here.
//!
//! Authentication: the client's password is an OIDC or Lakegate token, validated by the gate; the startup
//! `user` must equal the token's subject (a mismatch is refused rather than ignored, so that a log line or a
//! tool's connection label never names someone other than the caller). The token travels as a cleartext
//! password, so it is refused over plain TCP unless the configuration allows it (by default only on a
//! loopback listener).
//!
//! Every statement, simple or extended protocol, goes through [`Session`]: rewrite, audit, backend, rows.

use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::BytesMut;
use futures::{Sink, SinkExt, StreamExt};
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DataRowEncoder, DescribePortalResponse, DescribeStatementResponse, FieldFormat, FieldInfo, QueryResponse, Response,
    Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ErrorHandler, PgWireConnectionState, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::messages::PgWireFrontendMessage;
use pgwire::messages::startup::Authentication;
use pgwire::types::ToSqlText;
use pgwire::types::format::FormatOptions;
use tokio::sync::Mutex;
use tokio_postgres::types::{IsNull, ToSql, to_sql_checked};
use tokio_util::codec::Framed;

mod message_limit;
mod password;
mod per_user;

use super::SqlService;
use super::bind::is_number;
use super::error::SqlError;
use super::rewrite::Deallocation;
use super::rows::{Answer, Cell, Column, ColumnType, RowSet, numeric};
use super::session::{Outcome, Param, Prepared, SERVER_VERSION, Session};
use lakegate_core::audit::Front;
use lakegate_core::gate::{GateError, Origin};
use lakegate_net::Threads;
use lakegate_net::drain::Watch;
use lakegate_net::http::new_request_id;
use lakegate_net::threads::Listeners;

/// Binds the PostgreSQL wire listener and serves it until `drain` starts; returns the bound address.
pub async fn serve(
    listen: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    service: Arc<SqlService>,
    drain: Watch,
) -> std::io::Result<SocketAddr> {
    // Each session stays on the connection thread that accepted it, with its PostgreSQL backend connections
    // (their pools are per thread): a statement's round trips wake no other thread.
    let listeners = Listeners::bind(listen, Threads::PerCore)?;
    let addr = listeners.local_addr();
    let acceptor = tls.map(pgwire::tokio::TlsAcceptor::from);
    let cancels = Arc::new(Cancels::default());
    let sessions = Arc::new(tokio::sync::Semaphore::new(service.settings.max_connections));
    let per_user = per_user::PerUser::new(service.settings.max_connections_per_user);
    let stopping = drain.clone();
    let stop = move || {
        let drain = stopping.clone();
        async move { drain.draining().await }
    };
    listeners.serve("sql", stop, move |socket, peer| {
        // Held for the connection's life; a connection without one is refused at its startup message.
        let place = sessions.clone().try_acquire_owned().ok();
        let handlers = Arc::new(Connection {
            service: service.clone(),
            peer,
            session: Arc::new(Mutex::new(None)),
            cancels: cancels.clone(),
            cancel: Arc::new(std::sync::Mutex::new(None)),
            described: Arc::new(std::sync::Mutex::new(None)),
            named: Arc::default(),
            per_user: per_user.clone(),
            place: Arc::default(),
        });
        let acceptor = acceptor.clone();
        let drain = drain.clone();
        let in_flight = drain.guard();
        async move {
            let _in_flight = in_flight;
            let full = place.is_none();
            let _place = place;
            let connection = handlers.clone();
            tokio::select! {
                result = session_loop(socket, acceptor, Handlers(handlers), &drain, full) => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "sql connection ended with an error");
                    }
                }
                () = drain.closed() => tracing::debug!(%peer, "sql connection dropped at the end of the drain"),
            }
            // Still in flight: a block left open is rolled back, and its record queued before a shutdown
            // flushes the audit log. (The loop's end dropped whatever held the lock; were it still held, the
            // session's drop would queue the record later.)
            let session = connection.session.try_lock().ok().and_then(|mut session| session.take());
            if let Some(session) = session {
                session.close().await;
            }
        }
    });
    Ok(addr)
}

/// How long a client may take to negotiate TLS and authenticate (as pgwire's own loop allows).
const STARTUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One connection's message loop: pgwire's `process_socket`, plus the drain. While Lakegate drains, a session
/// finishes the statement it is running; between statements it is ended with the FATAL error PostgreSQL sends
/// on a shutdown (57P01 `admin_shutdown`; 57P03 `cannot_connect_now` to a client still authenticating).
///
/// Also the front's bounds: a connection over `max_connections` (`full`) is refused at its startup message, and
/// once the client has authenticated, a message over `max_message_bytes` ends the session at its header.
async fn session_loop(
    tcp: tokio::net::TcpStream,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    handlers: Handlers,
    drain: &Watch,
    full: bool,
) -> std::io::Result<()> {
    use pgwire::tokio::server::{negotiate_tls, process_error, process_message};

    // A second handle on the same socket, to notice a client that goes away while its statement runs.
    let mut watch = ClientWatch::of(&tcp)?;
    let startup_deadline = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup_deadline);
    // One wait for the drain, for the whole session: a new one at every message would subscribe to the drain's
    // channel and register with it anew, under a lock every session of the process shares.
    let draining = drain.draining();
    tokio::pin!(draining);
    let negotiated = tokio::select! {
        () = &mut startup_deadline => return Ok(()),
        () = &mut draining => return Ok(()),
        // Also sets TCP_NODELAY: every answer is flushed whole, and none may wait for the client's delayed ACK.
        socket = negotiate_tls(tcp, tls) => socket?,
    };
    // A client that asked for direct TLS when none is configured.
    let Some(socket) = negotiated else { return Ok(()) };
    let connection = handlers.0.clone();
    let mut socket =
        message_limit::bound::<_, _, PgWireBackendMessage>(socket, connection.service.settings.max_message_bytes);
    let startup = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let on_error = handlers.error_handler();
    // True after a Query or a Sync (the end of a statement), false inside an extended-protocol exchange.
    let mut between_statements = true;
    // When the client's socket starts being watched: one timer for the session, moved on only when a message
    // starts within WATCH_AFTER of it (see `watch_deadline`).
    let watch_from = tokio::time::sleep(WATCH_AFTER);
    tokio::pin!(watch_from);
    // A client idle in a block that holds a backend connection, which other sessions may be waiting for, is
    // let go after the session's limit; the timer is armed only then.
    let idle_deadline = tokio::time::sleep(std::time::Duration::ZERO);
    tokio::pin!(idle_deadline);
    loop {
        let authenticating = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress
        );
        let idle_limit = if between_statements { connection.idle_in_block_limit() } else { None };
        if let Some(limit) = idle_limit {
            idle_deadline.as_mut().reset(tokio::time::Instant::now() + limit);
        }
        let idle_in_block = idle_limit.is_some();
        let password_awaited = matches!(socket.state(), PgWireConnectionState::AuthenticationInProgress);
        let msg = tokio::select! {
            // Before reading: a statement the client sent after the signal is not started.
            biased;
            () = &mut draining, if between_statements || authenticating => {
                let (code, message) = if authenticating {
                    ("57P03", "the database system is shutting down")
                } else {
                    ("57P01", "terminating connection due to administrator command")
                };
                let info = ErrorInfo::new("FATAL".to_owned(), code.to_owned(), message.to_owned());
                socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await?;
                return socket.close().await;
            }
            () = &mut startup_deadline, if authenticating => return Ok(()),
            () = &mut idle_deadline, if idle_in_block => {
                if let Ok(mut session) = connection.session.try_lock()
                    && let Some(session) = session.as_mut()
                {
                    session.let_go_idle_block().await;
                }
                let message = "terminating connection due to idle-in-transaction timeout";
                let info = ErrorInfo::new("FATAL".to_owned(), "25P03".to_owned(), message.to_owned());
                socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await?;
                return socket.close().await;
            }
            msg = next_message(&mut socket, password_awaited) => msg,
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(_)) if socket.get_ref().refused().is_some() => return refuse_oversized(&mut socket).await,
            None | Some(Err(PgWireError::IoError(_))) => return Ok(()),
            Some(Err(e)) => return refuse_undecodable(&mut socket, &e).await,
        };
        if full && matches!(msg, PgWireFrontendMessage::Startup(_)) {
            let message = "sorry, too many clients already";
            let info = ErrorInfo::new("FATAL".to_owned(), "53300".to_owned(), message.to_owned());
            socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await?;
            return socket.close().await;
        }
        // The client is leaving: close, as PostgreSQL does.
        if matches!(msg, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        between_statements = match &msg {
            PgWireFrontendMessage::Query(_) | PgWireFrontendMessage::Sync(_) => true,
            PgWireFrontendMessage::Parse(_)
            | PgWireFrontendMessage::Bind(_)
            | PgWireFrontendMessage::Describe(_)
            | PgWireFrontendMessage::Execute(_)
            | PgWireFrontendMessage::Close(_)
            | PgWireFrontendMessage::Flush(_) => false,
            _ => between_statements,
        };
        let extended_query = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => msg.is_extended_query(),
        };
        // Rows run ahead at a Describe wait only for the Execute (or Flush) that follows it.
        if !matches!(msg, PgWireFrontendMessage::Execute(_) | PgWireFrontendMessage::Flush(_)) {
            drop(connection.take_described());
        }
        let cancel_request = matches!(msg, PgWireFrontendMessage::CancelRequest(_));
        // A CancelRequest naming this connection's key fires `cancelled` while a statement runs.
        let cancelled = match connection.cancel_handle() {
            Some(handle) => Some(handle.start_query().await),
            None => None,
        };
        watch_deadline(watch_from.as_mut());
        let processed = tokio::select! {
            processed = process_message(
                msg,
                &mut socket,
                startup.clone(),
                simple.clone(),
                extended.clone(),
                copy.clone(),
                cancel.clone(),
            ) => processed,
            // The client left while its statement ran: dropping the statement stops it on the backend (a Spark
            // operation is interrupted) and records its access as incomplete.
            () = client_gone(watch_from.as_mut(), &mut watch) => return Ok(()),
            // Dropping the statement stops it, as above; the client gets PostgreSQL's answer to a cancel.
            () = fired(cancelled) => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "ERROR".to_owned(),
                "57014".to_owned(),
                "canceling statement due to user request".to_owned(),
            )))),
        };
        if let Err(mut e) = processed {
            on_error.on_error(&socket, &mut e);
            let fatal = e.is_fatal();
            process_error(&mut socket, e, extended_query).await?;
            if fatal {
                return Ok(());
            }
        }
        if cancel_request {
            return Ok(());
        }
        // From the first message after authentication on, every message is bounded.
        if !socket.get_ref().armed() && matches!(socket.state(), PgWireConnectionState::ReadyForQuery) {
            let position = message_limit::Position::after(socket.read_buffer(), socket.get_ref().limit());
            if socket.get_mut().arm(position).is_err() {
                return refuse_oversized(&mut socket).await;
            }
        }
    }
}

/// Ends a session whose client sent a message over the limit, with PostgreSQL's code for a limit passed.
async fn refuse_oversized<S, C>(socket: &mut Framed<message_limit::Bounded<S>, C>) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    C: tokio_util::codec::Encoder<PgWireBackendMessage, Error = std::io::Error>,
{
    let (len, limit) = (socket.get_ref().refused().unwrap_or_default(), socket.get_ref().limit());
    let message = format!("a message of {len} bytes is over the limit of {limit} (sql.max_message_bytes)");
    let info = ErrorInfo::new("FATAL".to_owned(), "54000".to_owned(), message);
    socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await?;
    socket.close().await
}

/// The client's next message: pgwire's decoder's, but for a password longer than it reads (see [`password`]).
async fn next_message<S, C>(
    socket: &mut Framed<S, C>,
    password_awaited: bool,
) -> Option<PgWireResult<PgWireFrontendMessage>>
where
    S: tokio::io::AsyncRead + Unpin,
    C: tokio_util::codec::Decoder<Item = PgWireFrontendMessage, Error = PgWireError>,
{
    if password_awaited {
        match password::read_long(socket).await {
            Ok(Some(message)) => return Some(Ok(message)),
            Ok(None) => {}
            Err(e) => return Some(Err(e)),
        }
    }
    socket.next().await
}

/// Ends a session whose client sent what is not a message of the protocol, or one too long where it came (a
/// startup message over 10,000 bytes, a password over 65,535, as PostgreSQL bounds them). PostgreSQL itself only
/// logs these and closes; the client is told why here, with the code of a protocol violation.
async fn refuse_undecodable<S, C>(socket: &mut Framed<S, C>, e: &PgWireError) -> std::io::Result<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    C: tokio_util::codec::Encoder<PgWireBackendMessage, Error = std::io::Error>,
{
    let message = match e {
        PgWireError::MessageTooLarge(limit, len) => {
            format!("invalid message length: a message of {len} bytes where at most {limit} are read")
        }
        other => format!("invalid message: {other}"),
    };
    let info = ErrorInfo::new("FATAL".to_owned(), "08P01".to_owned(), message);
    socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await?;
    socket.close().await
}

/// Resolves when a cancel request fires `cancelled`; never when there is none, or when its sender is replaced.
async fn fired(cancelled: Option<futures::channel::oneshot::Receiver<()>>) {
    if let Some(rx) = cancelled
        && rx.await.is_ok()
    {
        return;
    }
    std::future::pending().await
}

/// The cancel keys of the listener's connections: each gets a process id and a random secret at authentication
/// (sent in BackendKeyData), and a CancelRequest must name both.
#[derive(Default)]
struct Cancels {
    manager: Arc<pgwire::api::ConnectionManager>,
    keys: pgwire::api::RandomPidSecretKeyGenerator,
}

impl std::fmt::Debug for Cancels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancels").finish_non_exhaustive()
    }
}

/// A duplicate of the connection's socket, only ever watched for readiness. It is registered with the thread's
/// reactor only when a statement first runs past [`WATCH_AFTER`]: most sessions never need it, and a client that
/// connects for each statement would pay the registration and its removal at every connection. A close that came
/// before the registration is reported by it (epoll reports a state, not only a change).
enum ClientWatch {
    Unregistered(Option<std::net::TcpStream>),
    Registered(tokio::net::TcpStream),
}

impl ClientWatch {
    fn of(tcp: &tokio::net::TcpStream) -> std::io::Result<ClientWatch> {
        use std::os::fd::AsFd as _;
        // A duplicate shares the socket's file status, non-blocking included.
        Ok(ClientWatch::Unregistered(Some(std::net::TcpStream::from(tcp.as_fd().try_clone_to_owned()?))))
    }

    /// The duplicate, registered; `None` when it could not be (the client is then not watched, as before the
    /// registration).
    fn registered(&mut self) -> Option<&tokio::net::TcpStream> {
        if let ClientWatch::Unregistered(socket) = self {
            match socket.take().map(tokio::net::TcpStream::from_std) {
                Some(Ok(registered)) => *self = ClientWatch::Registered(registered),
                Some(Err(e)) => tracing::debug!(error = %e, "the client's socket cannot be watched"),
                None => {}
            }
        }
        match self {
            ClientWatch::Registered(socket) => Some(socket),
            ClientWatch::Unregistered(_) => None,
        }
    }
}

/// How long a message's processing runs at least before the client's socket is watched: nearly every message is
/// answered sooner, and a client that half-closes its side after sending a quick statement still gets its answer.
/// A statement that runs longer is stopped at most twice this long after its client left.
const WATCH_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// Moves the session's watch timer so that the message starting now is watched no sooner than [`WATCH_AFTER`]
/// from now (and no later than twice that). The timer is moved only when it would fire sooner: a busy session
/// moves it once per `WATCH_AFTER`, not at every message. A timer armed per message cost each one a reschedule of
/// the thread's clock (a write to the runtime's eventfd and an extra wake-up), five per statement in the extended
/// protocol.
fn watch_deadline(timer: std::pin::Pin<&mut tokio::time::Sleep>) {
    let now = tokio::time::Instant::now();
    if timer.deadline() < now + WATCH_AFTER {
        timer.reset(now + 2 * WATCH_AFTER);
    }
}

/// Resolves when the client has closed or reset the connection, as the kernel reports it (a FIN is `EPOLLRDHUP`,
/// a reset an error), looked at once `watch_from` has fired. Bytes the client sent ahead (a pipelined statement,
/// TLS records) wait unread in the socket and do not hide the close.
async fn client_gone(watch_from: std::pin::Pin<&mut tokio::time::Sleep>, watch: &mut ClientWatch) {
    use tokio::io::Interest;
    watch_from.await;
    let Some(watch) = watch.registered() else { return std::future::pending().await };
    loop {
        let Ok(ready) = watch.ready(Interest::READABLE).await else { return };
        // Closed states are final in tokio's readiness: a close seen once is seen at every later look.
        if ready.is_read_closed() || ready.is_error() {
            return;
        }
        // Readable only: bytes are waiting. Forget that (the main handle reads them in time) and wait for the next
        // event, more bytes or the close.
        let _ = watch.try_io(Interest::READABLE, || Err::<(), _>(std::io::ErrorKind::WouldBlock.into()));
    }
}

/// One client connection: its session exists once the token is validated.
#[derive(Debug, Clone)]
struct Connection {
    service: Arc<SqlService>,
    peer: SocketAddr,
    session: Arc<Mutex<Option<Session>>>,
    cancels: Arc<Cancels>,
    /// This connection's cancel handle once authenticated; the guard unregisters it when the connection ends.
    cancel: Arc<std::sync::Mutex<Option<CancelKey>>>,
    /// The rows of a query run at the Describe of its portal, waiting for that portal's Execute.
    described: Arc<std::sync::Mutex<Option<Described>>>,
    /// The client's named statements and portals in pgwire's store, which lists none and bounds none.
    named: Arc<std::sync::Mutex<Named>>,
    /// The sessions each user holds, and this connection's place among its user's once authenticated.
    per_user: Arc<per_user::PerUser>,
    place: Arc<std::sync::Mutex<Option<per_user::Place>>>,
}

/// Named prepared statements one session may hold. Drivers keep far fewer (pgJDBC caches 256 statements, psycopg
/// and asyncpg 100), and close the ones they evict.
const MAX_NAMED_STATEMENTS: usize = 1024;
/// What a session's named prepared statements may weigh together: their texts, the client's and the rewritten.
const MAX_NAMED_STATEMENT_BYTES: usize = 64 << 20;
/// Named portals one session may hold open at once. A portal lasts until its transaction ends (see `on_sync`), so
/// only a block binds more than one; pgJDBC binds one per result it reads in parts.
const MAX_NAMED_PORTALS: usize = 1024;

/// A session's named statements (with their weights) and named portals: pgwire's store keeps them without a
/// bound, and a client could otherwise grow the gateway's memory by sending names, which PostgreSQL bounds only
/// by its backend's memory. Also the list `DEALLOCATE ALL` drops.
#[derive(Debug, Default)]
struct Named {
    statements: std::collections::BTreeMap<String, usize>,
    statement_bytes: usize,
    portals: std::collections::BTreeSet<String>,
}

impl Named {
    /// Takes a statement of `weight` under `name` (replacing any of that name, as pgwire's store does), unless
    /// the session's statements would then pass their bounds.
    fn admit_statement(&mut self, name: &str, weight: usize) -> Result<(), SqlError> {
        let replaced = self.statements.get(name).copied();
        let count = self.statements.len() + usize::from(replaced.is_none());
        let bytes = self.statement_bytes - replaced.unwrap_or(0) + weight;
        if count > MAX_NAMED_STATEMENTS || bytes > MAX_NAMED_STATEMENT_BYTES {
            return Err(SqlError::Limit(format!(
                "too many prepared statements in this session (at most {MAX_NAMED_STATEMENTS}, and {} MiB of text); \
                 close some (Close, DEALLOCATE) before preparing more",
                MAX_NAMED_STATEMENT_BYTES >> 20
            )));
        }
        self.statements.insert(name.to_owned(), weight);
        self.statement_bytes = bytes;
        Ok(())
    }

    /// Forgets statement `name`; whether there was one.
    fn remove_statement(&mut self, name: &str) -> bool {
        let Some(weight) = self.statements.remove(name) else { return false };
        self.statement_bytes -= weight;
        true
    }

    /// Forgets every statement, and gives their names.
    fn take_statements(&mut self) -> Vec<String> {
        self.statement_bytes = 0;
        std::mem::take(&mut self.statements).into_keys().collect()
    }

    /// Takes a portal named `name`, unless the session would then hold too many.
    fn admit_portal(&mut self, name: &str) -> Result<(), SqlError> {
        if !self.portals.contains(name) && self.portals.len() >= MAX_NAMED_PORTALS {
            return Err(SqlError::Limit(format!(
                "too many open portals in this transaction block (at most {MAX_NAMED_PORTALS}); close some (Close)"
            )));
        }
        self.portals.insert(name.to_owned());
        Ok(())
    }
}

/// A query run at the Describe of its portal, before the Execute asks for it.
///
/// Clients send Describe and Execute of a portal together (libpq's `PQexecParams`, pgJDBC, psycopg 3, pgbench
/// `-M extended`), and PostgreSQL's answer to a query is its columns and its rows at once. Asking the backend to
/// describe, then to run, costs two round trips (and two plans) where running at the Describe costs one: the
/// columns of the Describe are the rows' columns. The rows wait here, their audit record open, until the next
/// message: the Execute of the same portal reads them; any other message drops them and the record closes as
/// incomplete, as for a client that leaves mid-result.
struct Described {
    /// Held, so that no other portal can be allocated at its address while the rows wait.
    portal: Arc<Portal<Statement>>,
    rows: super::rows::RowSet,
}

impl std::fmt::Debug for Described {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Described").field("rows", &self.rows).finish_non_exhaustive()
    }
}

/// A connection's registration with the listener's cancel keys.
type CancelKey = (Arc<pgwire::api::ConnectionHandle>, pgwire::api::ConnectionGuard);

impl Connection {
    /// Whether the session is in a transaction block that holds a backend connection. A session busy with a
    /// statement (its lock taken) is not idle, whatever its block.
    /// How long the client may stay idle now, if it is in a block that holds a backend connection.
    fn idle_in_block_limit(&self) -> Option<std::time::Duration> {
        let session = self.session.try_lock().ok()?;
        session.as_ref().filter(|s| s.pinned()).and_then(Session::idle_in_transaction_limit)
    }

    fn take_described(&self) -> Option<Described> {
        self.described.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }

    fn cancel_handle(&self) -> Option<Arc<pgwire::api::ConnectionHandle>> {
        self.cancel.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().map(|(h, _)| h.clone())
    }

    fn named(&self) -> std::sync::MutexGuard<'_, Named> {
        self.named.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Closes the client's portals, named ones too, as the end of their transaction does in PostgreSQL (pgwire
    /// closes only the unnamed one, at each Sync).
    fn close_portals<S: PortalStore>(&self, store: &S) {
        let mut named = self.named();
        if !named.portals.is_empty() {
            named.portals.clear();
            store.clear_portals();
        }
    }

    /// `DEALLOCATE`: drops prepared statements from the store this front keeps them in, as PostgreSQL does.
    fn deallocate<S: PortalStore>(&self, store: &S, which: &Deallocation) -> Result<Outcome, SqlError> {
        let mut named = self.named();
        match which {
            Deallocation::All => {
                for name in named.take_statements() {
                    store.rm_statement(&name);
                }
                Ok(Outcome::Command("DEALLOCATE ALL".into()))
            }
            Deallocation::Named(name) if named.remove_statement(name) => {
                store.rm_statement(name);
                Ok(Outcome::Command("DEALLOCATE".into()))
            }
            Deallocation::Named(name) => Err(SqlError::Backend {
                sqlstate: "26000".into(),
                message: format!("prepared statement \"{name}\" does not exist"),
            }),
        }
    }
}

struct Handlers(Arc<Connection>);

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.0.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.0.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.0.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(pgwire::api::cancel::DefaultCancelHandler::new(self.0.cancels.manager.clone()))
    }
}

/// The PostgreSQL error of a gateway error.
fn pg_error(e: &SqlError) -> PgWireError {
    let severity = match e {
        SqlError::Authentication(_) | SqlError::InsecureTransport(_) | SqlError::SessionEnded(_) => "FATAL",
        _ => "ERROR",
    };
    PgWireError::UserError(Box::new(ErrorInfo::new(severity.to_owned(), e.sqlstate().to_owned(), e.to_string())))
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".to_owned(), code.to_owned(), message.into())))
}

/// The parameters every client receives after authentication.
struct Parameters {
    user: String,
    application_name: Option<String>,
}

impl ServerParameterProvider for Parameters {
    fn server_parameters<C: ClientInfo>(&self, _client: &C) -> Option<std::collections::HashMap<String, String>> {
        let mut p = std::collections::HashMap::new();
        for (k, v) in [
            ("server_version", SERVER_VERSION),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("IntervalStyle", "postgres"),
            ("TimeZone", "UTC"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", "on"),
            ("is_superuser", "off"),
            ("in_hot_standby", "off"),
            ("default_transaction_read_only", "off"),
        ] {
            p.insert(k.to_owned(), v.to_owned());
        }
        p.insert("session_authorization".into(), self.user.clone());
        p.insert("application_name".into(), self.application_name.clone().unwrap_or_default());
        Some(p)
    }
}

#[async_trait]
impl StartupHandler for Connection {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(startup) => {
                protocol_negotiation(client, &startup).await?;
                save_startup_parameters_to_metadata(client, &startup);
                if !client.is_secure() && !self.service.settings.plaintext_password_allowed {
                    return Err(pg_error(&SqlError::InsecureTransport(
                        "this server requires TLS: connect with sslmode=require (the password is a token)".into(),
                    )));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client.send(PgWireBackendMessage::Authentication(Authentication::CleartextPassword)).await?;
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let password = message.into_password()?;
                let user = client.metadata().get(pgwire::api::METADATA_USER).cloned().unwrap_or_default();
                let origin =
                    Origin { front: Front::Sql, request_id: new_request_id(), source: Some(self.peer.to_string()) };
                let token = password.password.trim();
                let principal = match self.service.gate.authenticate(&origin, Some(token), "sql:Connect", "").await {
                    Ok(p) => p,
                    Err(GateError::Audit(e)) => return Err(pg_error(&SqlError::AuditUnavailable(e.to_string()))),
                    Err(e) => {
                        return Err(pg_error(&SqlError::Authentication(format!(
                            "the password must be a valid token for user \"{user}\" ({e})"
                        ))));
                    }
                };
                if principal.subject != user {
                    return Err(fatal(
                        "28000",
                        format!(
                            "user \"{user}\" does not match the token's subject \"{}\"; connect as user={}",
                            principal.subject, principal.subject
                        ),
                    ));
                }
                let Some(place) = self.per_user.take(&principal) else {
                    return Err(fatal("53300", format!("too many connections for role \"{user}\"")));
                };
                *self.place.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(place);
                let params = Parameters {
                    user: user.clone(),
                    application_name: client.metadata().get(pgwire::api::METADATA_APPLICATION_NAME).cloned(),
                };
                *self.session.lock().await =
                    Some(Session::new(self.service.clone(), principal, Some(self.peer.to_string())).with_token(token));
                let (pid, secret) = pgwire::api::PidSecretKeyGenerator::generate(&self.cancels.keys, client);
                client.set_pid_and_secret_key(pid, secret.clone());
                let registered = self.cancels.manager.register(pid, secret);
                *self.cancel.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(registered);
                finish_authentication(client, &params).await
            }
            _ => Ok(()),
        }
    }
}

/// The wire response of one statement's outcome.
fn response(outcome: Outcome, format: &Format) -> Response {
    match outcome {
        Outcome::Command(tag) => Response::Execution(command_tag(&tag)),
        Outcome::Transaction { tag, open } => {
            if open {
                Response::TransactionStart(Tag::new(&tag))
            } else {
                Response::TransactionEnd(Tag::new(&tag))
            }
        }
        Outcome::Rows(set) => {
            let fields = Arc::new(fields(&set.columns, format));
            let encoder_fields = fields.clone();
            let types: Vec<ColumnType> = set.columns.iter().map(|c| c.ty).collect();
            let rows = set.rows.map(move |row| {
                let row = row.map_err(|e| pg_error(&e))?;
                let mut encoder = DataRowEncoder::new(encoder_fields.clone());
                for (i, cell) in row.iter().enumerate() {
                    let ty = types.get(i).copied().unwrap_or(ColumnType::Text);
                    encoder.encode_field(&WireCell { cell, ty })?;
                }
                Ok(encoder.take_row())
            });
            Response::Query(QueryResponse::new(fields, rows))
        }
    }
}

/// `INSERT 0 3` -> tag `INSERT 0` with 3 rows, as pgwire builds tags.
fn command_tag(text: &str) -> Tag {
    match text.rsplit_once(' ') {
        Some((head, n)) if !head.is_empty() && n.parse::<usize>().is_ok() => {
            Tag::new(head).with_rows(n.parse().unwrap_or(0))
        }
        _ => Tag::new(text),
    }
}

/// The format of result column `i`: one code applies to all columns, as in PostgreSQL.
fn format_of(format: &Format, i: usize) -> FieldFormat {
    match format {
        Format::UnifiedText => FieldFormat::Text,
        Format::UnifiedBinary => FieldFormat::Binary,
        Format::Individual(codes) => {
            let code = if codes.len() == 1 { codes.first() } else { codes.get(i) };
            code.map(|c| FieldFormat::from(*c)).unwrap_or(FieldFormat::Text)
        }
    }
}

fn fields(columns: &[Column], format: &Format) -> Vec<FieldInfo> {
    columns
        .iter()
        .enumerate()
        .map(|(i, c)| FieldInfo::new(c.name.clone(), None, None, pg_type(c.ty), format_of(format, i)))
        .collect()
}

fn pg_type(ty: ColumnType) -> Type {
    Type::from_oid(ty.oid()).unwrap_or(Type::TEXT)
}

/// A cell with the column type it is sent as.
#[derive(Debug)]
struct WireCell<'a> {
    cell: &'a Cell,
    ty: ColumnType,
}

impl ToSql for WireCell<'_> {
    fn to_sql(&self, _ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use bytes::BufMut;
        match (self.cell, self.ty) {
            (Cell::Null, _) => return Ok(IsNull::Yes),
            (Cell::Bool(b), _) => out.put_u8(u8::from(*b)),
            (Cell::Int(i), ColumnType::Int2) => out.put_i16(i16::try_from(*i)?),
            (Cell::Int(i), ColumnType::Int4) => out.put_i32(i32::try_from(*i)?),
            (Cell::Int(i), ColumnType::Int8) => out.put_i64(*i),
            (Cell::Float(f), ColumnType::Float4) => out.put_f32(*f as f32),
            (Cell::Float(f), ColumnType::Float8) => out.put_f64(*f),
            (Cell::Numeric(n), ColumnType::Numeric) => {
                let mut buf = Vec::new();
                numeric::encode(n, &mut buf)?;
                out.extend_from_slice(&buf);
            }
            (Cell::Date(d), ColumnType::Date) => out.put_i32(d.saturating_sub(10_957)),
            (Cell::Timestamp(t), ColumnType::Timestamp) => out.put_i64(t.saturating_sub(946_684_800_000_000)),
            (Cell::Int(i), ColumnType::Numeric) => {
                let mut buf = Vec::new();
                numeric::encode(&i.to_string(), &mut buf)?;
                out.extend_from_slice(&buf);
            }
            (other, _) => out.extend_from_slice(other.to_text().unwrap_or_default().as_bytes()),
        }
        Ok(IsNull::No)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

impl ToSqlText for WireCell<'_> {
    fn to_sql_text(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
        _format_options: &FormatOptions,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self.cell.to_text() {
            Some(text) => {
                out.extend_from_slice(text.as_bytes());
                Ok(IsNull::No)
            }
            None => Ok(IsNull::Yes),
        }
    }
}

impl Connection {
    async fn with_session<T>(&self, f: impl AsyncFnOnce(&mut Session) -> Result<T, SqlError>) -> PgWireResult<T> {
        let mut guard = self.session.lock().await;
        let session = guard.as_mut().ok_or_else(|| fatal("28000", "not authenticated"))?;
        f(session).await.map_err(|e| pg_error(&e))
    }
}

#[async_trait]
impl SimpleQueryHandler for Connection {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let request_id = new_request_id();
        let mut guard = self.session.lock().await;
        let session = guard.as_mut().ok_or_else(|| fatal("28000", "not authenticated"))?;
        // Every statement of the request must pass the rewriter before any of them runs.
        let prepared = session.prepare(query, &request_id).await.map_err(|e| pg_error(&e))?;
        // As PostgreSQL, the statements of one request run as one transaction unless the request controls its
        // own: a failing statement undoes what the ones before it wrote.
        let implicit =
            prepared.len() > 1 && !prepared.iter().any(Prepared::controls_transaction) && session.begin_implicit();
        let mut block = ImplicitBlock { session, open: implicit };
        let mut responses = Vec::with_capacity(prepared.len());
        let mut failed = false;
        for (i, p) in prepared.iter().enumerate() {
            let mut outcome = match p.deallocation() {
                Some(which) => self.deallocate(client.portal_store(), which),
                None => block.session.run(p, &[], &request_id).await,
            };
            if outcome.is_ok()
                && p.discards_all()
                && let Err(e) = self.deallocate(client.portal_store(), &Deallocation::All)
            {
                outcome = Err(e);
            }
            // The responses go out once the last statement has run; rows still to be read from the block's one
            // backend connection would hold back every later answer on it (the next statement's, the COMMIT's).
            let next_on_same_connection = i + 1 < prepared.len() || implicit;
            let outcome = match outcome {
                Ok(Outcome::Rows(set)) if next_on_same_connection && block.session.pinned() => read_whole(set).await,
                other => other,
            };
            match outcome {
                Ok(outcome) => responses.push(response(outcome, &Format::UnifiedText)),
                Err(e) => {
                    failed = true;
                    let PgWireError::UserError(info) = pg_error(&e) else { break };
                    if info.is_fatal() {
                        // The session ends: an error, not an answer, so that the connection closes after it.
                        return Err(PgWireError::UserError(info));
                    }
                    responses.push(Response::Error(info));
                    break;
                }
            }
        }
        if implicit {
            block.open = false;
            if let Err(e) = block.session.end_implicit(!failed, &request_id).await
                && !failed
                && let PgWireError::UserError(info) = pg_error(&e)
            {
                // The COMMIT's failure is the request's, after every statement's answer, as PostgreSQL gives it.
                responses.push(Response::Error(info));
            }
        }
        if !block.session.in_transaction() {
            self.close_portals(client.portal_store());
        }
        Ok(responses)
    }
}

/// A request's implicit block while its statements run. A request that ends early (a cancel drops its future)
/// leaves no block open behind it for the session's next statements: the block is dropped, which rolls it back.
struct ImplicitBlock<'a> {
    session: &'a mut Session,
    open: bool,
}

impl Drop for ImplicitBlock<'_> {
    fn drop(&mut self) {
        if self.open {
            self.session.abandon_implicit();
        }
    }
}

/// The most of one statement's result a request holds in memory while its later statements run in the same
/// transaction block (see `do_query`): a larger one is refused rather than held.
const MAX_HELD_RESULT: u64 = 16 << 20;

/// Reads a result to its end, so that its backend connection is free for the next statement.
async fn read_whole(set: RowSet) -> Result<Outcome, SqlError> {
    match Answer::collect_within(set, MAX_HELD_RESULT).await? {
        Ok(answer) => Ok(Outcome::Rows(answer.into_row_set())),
        Err(_unread) => Err(SqlError::Limit(format!(
            "a result of more than {} MiB is followed by another statement of the same transaction block in one \
             request; send the statements one at a time",
            MAX_HELD_RESULT >> 20
        ))),
    }
}

/// A statement of the extended protocol: prepared (rewritten) at Parse time.
#[derive(Debug, Clone)]
pub struct Statement {
    prepared: Prepared,
    /// The types of its `$n` parameters as the backend infers them (TEXT where it cannot), used when the
    /// client leaves a parameter's type unspecified.
    params: Vec<Type>,
}

#[async_trait]
impl QueryParser for Connection {
    type Statement = Statement;

    async fn parse_sql<C>(&self, _client: &C, sql: &str, types: &[Option<Type>]) -> PgWireResult<Option<Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let request_id = new_request_id();
        let mut prepared = self.with_session(async |s| s.prepare(sql, &request_id).await).await?;
        if prepared.len() > 1 {
            return Err(pg_error(&SqlError::Backend {
                sqlstate: "42601".into(),
                message: "cannot insert multiple commands into a prepared statement".into(),
            }));
        }
        let Some(prepared) = prepared.pop() else { return Ok(None) };
        let count = prepared.placeholders();
        // The backend is asked only for the types the client left open: a declared type is the one used.
        let declared = |i: usize| types.get(i).cloned().flatten().is_some_and(|t| t != Type::UNKNOWN);
        let inferred = if (0..count).all(declared) {
            Arc::from([])
        } else {
            self.with_session(async |s| s.parameter_types(&prepared).await).await.unwrap_or_else(|_| Arc::from([]))
        };
        let params =
            (0..count).map(|i| inferred.get(i).copied().flatten().map(pg_type).unwrap_or(Type::TEXT)).collect();
        Ok(Some(Statement { prepared, params }))
    }

    fn get_parameter_types(&self, stmt: &Statement) -> PgWireResult<Vec<Type>> {
        Ok(stmt.params.clone())
    }

    fn get_result_schema(&self, _stmt: &Statement, _format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        // Describe is answered by `do_describe_*`, which can ask the backend.
        Ok(Vec::new())
    }
}

/// Sends every row of a result and its CommandComplete, buffered until the client's Sync or Flush (see the note on
/// `impl ExtendedQueryHandler for Connection`).
async fn send_rows<C>(client: &mut C, results: &mut QueryResponse) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let tag = Tag::new(results.command_tag());
    let mut sent = 0;
    let rows = results.data_rows();
    while let Some(row) = rows.next().await {
        client.feed(PgWireBackendMessage::DataRow(row?)).await?;
        sent += 1;
    }
    client.feed(PgWireBackendMessage::CommandComplete(tag.with_rows(sent).into())).await?;
    Ok(())
}

/// Writes the answer to a Describe, buffered: ParameterDescription for a statement, then its columns or NoData.
async fn feed_described<C, D>(client: &mut C, described: &D) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    D: pgwire::api::results::DescribeResponse,
{
    use pgwire::messages::data::{NoData, ParameterDescription, RowDescription};
    if let Some(types) = described.parameters() {
        let oids = types.iter().map(Type::oid).collect();
        client.feed(PgWireBackendMessage::ParameterDescription(ParameterDescription::new(oids))).await?;
    }
    if described.is_no_data() {
        client.feed(PgWireBackendMessage::NoData(NoData::new())).await?;
    } else {
        let columns = RowDescription::new(described.fields().iter().map(Into::into).collect());
        client.feed(PgWireBackendMessage::RowDescription(columns)).await?;
    }
    Ok(())
}

/// Reads the bound parameters of a portal.
fn params(portal: &Portal<Statement>) -> Result<Vec<Param>, SqlError> {
    let declared = &portal.statement.parameter_types;
    portal
        .parameters
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let Some(raw) = raw else { return Ok(Param::Null) };
            let ty = declared
                .get(i)
                .cloned()
                .flatten()
                .filter(|t| *t != Type::UNKNOWN)
                .or_else(|| portal.statement.statement.params.get(i).cloned())
                .unwrap_or(Type::UNKNOWN);
            let binary = format_of(&portal.parameter_format, i) == FieldFormat::Binary;
            decode_param(raw, &ty, binary).map_err(|e| SqlError::Parameter { index: i + 1, reason: e.to_string() })
        })
        .collect()
}

/// Why a bound parameter's value was refused.
#[derive(Debug, thiserror::Error)]
enum ParamError {
    #[error("{0}")]
    Binary(Box<dyn std::error::Error + Sync + Send>),
    #[error(transparent)]
    Numeric(#[from] numeric::NumericError),
    #[error("not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    #[error("binary parameters of type {0} are not supported")]
    UnsupportedBinary(Type),
    #[error("{0:?} is not a number")]
    NotNumber(String),
    #[error("{0:?} is not a boolean")]
    NotBoolean(String),
    #[error("non-finite floats are not supported")]
    NonFinite,
}

fn decode_param(raw: &[u8], ty: &Type, binary: bool) -> Result<Param, ParamError> {
    use tokio_postgres::types::FromSql;
    let err = ParamError::Binary;
    if binary {
        return Ok(match *ty {
            Type::BOOL => Param::Bool(bool::from_sql(ty, raw).map_err(err)?),
            Type::INT2 => Param::Number(i16::from_sql(ty, raw).map_err(err)?.to_string()),
            Type::INT4 => Param::Number(i32::from_sql(ty, raw).map_err(err)?.to_string()),
            Type::INT8 => Param::Number(i64::from_sql(ty, raw).map_err(err)?.to_string()),
            Type::FLOAT4 => float_param(f64::from(f32::from_sql(ty, raw).map_err(err)?))?,
            Type::FLOAT8 => float_param(f64::from_sql(ty, raw).map_err(err)?)?,
            Type::NUMERIC => Param::Number(numeric::decode(raw)?),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                Param::Text(std::str::from_utf8(raw)?.to_owned())
            }
            ref other => return Err(ParamError::UnsupportedBinary(other.clone())),
        });
    }
    let text = std::str::from_utf8(raw)?.to_owned();
    Ok(match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => {
            // A number is inlined unquoted, so it must be exactly a number.
            if is_number(&text) { Param::Number(text) } else { return Err(ParamError::NotNumber(text)) }
        }
        Type::BOOL => match text.to_ascii_lowercase().as_str() {
            "t" | "true" | "1" | "on" | "yes" => Param::Bool(true),
            "f" | "false" | "0" | "off" | "no" => Param::Bool(false),
            _ => return Err(ParamError::NotBoolean(text)),
        },
        _ => Param::Text(text),
    })
}

fn float_param(f: f64) -> Result<Param, ParamError> {
    if f.is_finite() { Ok(Param::Number(f.to_string())) } else { Err(ParamError::NonFinite) }
}

/// Answers of the extended protocol are buffered until the client's Sync or Flush (or until the buffer fills),
/// as PostgreSQL does: a driver sends Parse, Bind, Describe, Execute and Sync together and reads the answers
/// when ReadyForQuery has come. pgwire flushes after ParseComplete, BindComplete, RowDescription and
/// CommandComplete, which costs a write on each side and a wake-up of the client per message; the overrides
/// below feed them instead.
#[async_trait]
impl ExtendedQueryHandler for Connection {
    type Statement = Statement;
    type QueryParser = Connection;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        // The parser needs the session: a clone shares it.
        Arc::new(self.clone())
    }

    /// As pgwire's, but outside a transaction block every portal closes, the named ones too (see
    /// [`Connection::close_portals`]). A block's portals close at the first Sync after the block ends, or at the end
    /// of the simple query that ends it.
    async fn on_sync<C>(&self, client: &mut C, _message: pgwire::messages::extendedquery::Sync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::messages::response::{ReadyForQuery, TransactionStatus};
        let status = client.transaction_status();
        if matches!(status, TransactionStatus::Idle) {
            self.close_portals(client.portal_store());
        }
        client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
        client.send(PgWireBackendMessage::ReadyForQuery(ReadyForQuery::new(status))).await?;
        client.flush().await?;
        Ok(())
    }

    /// As pgwire's; a statement closed leaves the names `DEALLOCATE ALL` drops.
    async fn on_close<C>(&self, client: &mut C, message: pgwire::messages::extendedquery::Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::messages::extendedquery::{CloseComplete, TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT};
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                self.named().remove_statement(name);
                client.portal_store().rm_statement(name);
            }
            TARGET_TYPE_BYTE_PORTAL => {
                self.named().portals.remove(name);
                client.portal_store().rm_portal(name);
            }
            _ => {}
        }
        client.send(PgWireBackendMessage::CloseComplete(CloseComplete::new())).await?;
        Ok(())
    }

    /// As pgwire's, but ParseComplete is buffered (see the note on this impl).
    async fn on_parse<C>(&self, client: &mut C, message: pgwire::messages::extendedquery::Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        let parsed = StoredStatement::parse(client, &message, self.query_parser()).await?;
        if name != pgwire::api::DEFAULT_NAME {
            let weight = name.len() + parsed.as_ref().map_or(0, |s| s.statement.prepared.weight());
            self.named().admit_statement(name, weight).map_err(|e| pg_error(&e))?;
        }
        match parsed {
            Some(statement) => client.portal_store().put_statement(Arc::new(statement)),
            None => client.portal_store().put_empty_statement(name),
        }
        client.feed(PgWireBackendMessage::ParseComplete(pgwire::messages::extendedquery::ParseComplete::new())).await?;
        Ok(())
    }

    /// As pgwire's, but BindComplete is buffered (see the note on this impl). An empty statement binds to an empty
    /// portal and takes no parameters, as in PostgreSQL.
    async fn on_bind<C>(&self, client: &mut C, message: pgwire::messages::extendedquery::Bind) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::api::store::Entry;
        let statement_name = message.statement_name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        let portal_name = message.portal_name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        match client.portal_store().get_statement(statement_name) {
            Some(Entry::Value(statement)) => {
                let portal = Portal::try_new(&message, statement)?;
                client.portal_store().put_portal(Arc::new(portal));
            }
            Some(Entry::Empty) if message.parameters.is_empty() => client.portal_store().put_empty_portal(portal_name),
            Some(Entry::Empty) => {
                return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                    "ERROR".to_owned(),
                    "08P01".to_owned(),
                    format!(
                        "bind message supplies {} parameters, but prepared statement {statement_name:?} requires 0",
                        message.parameters.len()
                    ),
                ))));
            }
            None => return Err(PgWireError::StatementNotFound(statement_name.to_owned())),
        }
        if portal_name != pgwire::api::DEFAULT_NAME
            && let Err(e) = self.named().admit_portal(portal_name)
        {
            client.portal_store().rm_portal(portal_name);
            return Err(pg_error(&e));
        }
        client.feed(PgWireBackendMessage::BindComplete(pgwire::messages::extendedquery::BindComplete::new())).await?;
        Ok(())
    }

    /// pgwire's Execute collects all of a portal's rows before it sends the first when the client asks for all
    /// of them (`max_rows` 0, what pgJDBC and psycopg send): a large result would sit whole in memory. Such an
    /// Execute of a fresh portal sends its rows as the backend produces them; any other Execute (a row limit, a
    /// suspended portal) takes pgwire's road.
    async fn on_execute<C>(&self, client: &mut C, message: pgwire::messages::extendedquery::Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::api::portal::PortalExecutionState;
        use pgwire::api::store::Entry;
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME).to_owned();
        let portal = match client.portal_store().get_portal(&name) {
            Some(Entry::Value(portal)) => Some(portal),
            _ => None,
        };
        let fresh = match &portal {
            Some(p) => matches!(*p.state().lock().await, PortalExecutionState::Initial),
            None => false,
        };
        let (Some(portal), true, true, true) =
            (portal, fresh, message.max_rows == 0, matches!(client.state(), PgWireConnectionState::ReadyForQuery))
        else {
            return self._on_execute(client, message).await;
        };
        client.set_state(PgWireConnectionState::QueryInProgress);
        let mut status = client.transaction_status();
        let outcome = ExtendedQueryHandler::do_query(self, client, portal.as_ref(), 0).await;
        let sent = match outcome {
            Ok(Response::Query(mut results)) => {
                let schema = results.row_schema();
                let sent = send_rows(client, &mut results).await;
                // The portal is spent: a second Execute of it answers no rows, as PostgreSQL does.
                portal.start(QueryResponse::new(schema, futures::stream::empty())).await;
                sent.map(|_| ())
            }
            Ok(Response::Execution(tag)) => pgwire::api::query::send_execution_response(client, tag).await,
            Ok(Response::TransactionStart(tag)) => {
                status = status.to_in_transaction_state();
                pgwire::api::query::send_execution_response(client, tag).await
            }
            Ok(Response::TransactionEnd(tag)) => {
                status = status.to_idle_state();
                client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
                pgwire::api::query::send_execution_response(client, tag).await
            }
            Ok(Response::EmptyQuery) => client
                .feed(PgWireBackendMessage::EmptyQueryResponse(pgwire::messages::response::EmptyQueryResponse::new()))
                .await
                .map_err(PgWireError::from),
            Ok(Response::Error(e)) => {
                status = status.to_error_state();
                client.send(PgWireBackendMessage::ErrorResponse((*e).into())).await.map_err(PgWireError::from)
            }
            Ok(_) => Err(pg_error(&SqlError::Unsupported("COPY through the extended protocol".into()))),
            Err(e) => Err(e),
        };
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        sent
    }

    /// The Describe of a fresh portal of a governed query runs the query (see [`Described`]); every other Describe
    /// is answered by `do_describe_*`. Either answer is buffered (see the note on this impl).
    async fn on_describe<C>(
        &self,
        client: &mut C,
        message: pgwire::messages::extendedquery::Describe,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        use pgwire::api::portal::PortalExecutionState;
        use pgwire::api::store::Entry;
        use pgwire::messages::extendedquery::{TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT};
        let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
        let portal = match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                let Some(Entry::Value(statement)) = client.portal_store().get_statement(name) else {
                    return self._on_describe(client, message).await;
                };
                let described = self.do_describe_statement(client, &statement).await?;
                return feed_described(client, &described).await;
            }
            TARGET_TYPE_BYTE_PORTAL => match client.portal_store().get_portal(name) {
                Some(Entry::Value(portal)) => portal,
                _ => return self._on_describe(client, message).await,
            },
            _ => return self._on_describe(client, message).await,
        };
        let fresh = matches!(*portal.state().lock().await, PortalExecutionState::Initial);
        if !fresh || !portal.statement.statement.prepared.is_query() {
            let described = self.do_describe_portal(client, &portal).await?;
            return feed_described(client, &described).await;
        }
        let Outcome::Rows(rows) = self.run_portal(&portal).await? else {
            return Err(pg_error(&SqlError::Internal("a query answered without rows".into())));
        };
        let described = DescribePortalResponse::new(fields(&rows.columns, &portal.result_column_format));
        *self.described.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Described { portal, rows });
        feed_described(client, &described).await
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let count = std::cmp::max(target.parameter_types.len(), target.statement.params.len());
        let param_types: Vec<Type> = (0..count)
            .map(|i| {
                target
                    .parameter_types
                    .get(i)
                    .cloned()
                    .flatten()
                    .filter(|t| *t != Type::UNKNOWN)
                    .or_else(|| target.statement.params.get(i).cloned())
                    .unwrap_or(Type::TEXT)
            })
            .collect();
        // The backends plan statements with placeholders; the columns do not depend on the values.
        let columns = self.describe(&target.statement.prepared).await?;
        Ok(DescribeStatementResponse::new(param_types, fields(&columns, &Format::UnifiedText)))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let columns = if target.parameters.is_empty() {
            self.describe(&target.statement.statement.prepared).await?
        } else {
            // With parameters, describe the bound statement: its types are the ones it will run with.
            let params = params(target).map_err(|e| pg_error(&e))?;
            self.describe_bound(&target.statement.statement.prepared, &params).await?
        };
        Ok(DescribePortalResponse::new(fields(&columns, &target.result_column_format)))
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Statement>, max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Some(which) = portal.statement.statement.prepared.deallocation() {
            let outcome = self.deallocate(client.portal_store(), which).map_err(|e| pg_error(&e))?;
            return Ok(response(outcome, &portal.result_column_format));
        }
        // The rows its Describe ran, if this is that portal; rows run for another portal are dropped, before this
        // one runs (they may hold the connection it needs).
        let described = self.take_described().filter(|d| std::ptr::eq(Arc::as_ptr(&d.portal), portal));
        let outcome = match described {
            Some(described) => Outcome::Rows(described.rows),
            None => {
                let outcome = self.run_portal(portal).await?;
                if portal.statement.statement.prepared.discards_all() {
                    self.deallocate(client.portal_store(), &Deallocation::All).map_err(|e| pg_error(&e))?;
                }
                outcome
            }
        };
        // A portal read in parts (a row limit: pgJDBC's fetch size) stays open while the client runs other
        // statements. In a block pinned to one backend connection, its rows still to be read would hold back every
        // later answer on that connection, so they are read now.
        let pinned = max_rows > 0 && self.with_session(async |s| Ok(s.pinned())).await?;
        let outcome = match outcome {
            Outcome::Rows(set) if pinned => read_whole(set).await.map_err(|e| pg_error(&e))?,
            other => other,
        };
        Ok(response(outcome, &portal.result_column_format))
    }
}

impl Connection {
    /// Runs a portal's statement with its bound parameters.
    async fn run_portal(&self, portal: &Portal<Statement>) -> PgWireResult<Outcome> {
        let request_id = new_request_id();
        let params = params(portal).map_err(|e| pg_error(&e))?;
        let prepared = portal.statement.statement.prepared.clone();
        self.with_session(async |s| s.run_kept(&prepared, &params, &request_id).await).await
    }

    async fn describe(&self, prepared: &Prepared) -> PgWireResult<Vec<Column>> {
        self.with_session(async |s| s.describe(prepared).await).await
    }

    async fn describe_bound(&self, prepared: &Prepared, params: &[Param]) -> PgWireResult<Vec<Column>> {
        self.with_session(async |s| s.describe_bound(prepared, params).await).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_numbers_are_inlined_unquoted() {
        for ok in ["1", "-2", "3.5", ".5", "1e3", "-1.5E-3"] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in ["", "1;", "1 OR 1=1", "0x10", "1e", "--1", "1.2.3", "NaN"] {
            assert!(!is_number(bad), "{bad}");
        }
    }

    #[test]
    fn a_text_parameter_declared_as_integer_must_be_a_number() {
        assert!(decode_param(b"1; DROP TABLE x", &Type::INT4, false).is_err());
        assert_eq!(decode_param(b"42", &Type::INT4, false).ok(), Some(Param::Number("42".into())));
        assert_eq!(decode_param(b"x'y", &Type::UNKNOWN, false).ok(), Some(Param::Text("x'y".into())));
    }
}

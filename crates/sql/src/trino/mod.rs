//! A subset of Trino's client protocol on the control endpoint, enough for the `trino` Python client:
//! `POST /v1/statement` (the SQL text as body, `Authorization: Bearer <token>`), then `GET nextUri` pages
//! until a response has none, `DELETE nextUri` to cancel. `X-Trino-User` is ignored: the token says who
//! the caller is. Errors use Trino's error JSON.
//!
//! The same [`Session`] road as the PostgreSQL front runs every statement; a query's row stream is kept
//! between pages (bounded in number and idle time), so memory stays bounded by one page per query.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use futures::StreamExt;
use http::{Method, Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;

pub mod dialect;

use super::SqlService;
use super::error::SqlError;
use super::owner::Owner;
use super::rows::{Column, ColumnType, RowStream};
use super::session::{Outcome, Session};
use lakegate_core::audit::Front;
use lakegate_core::gate::{GateError, Origin};
use lakegate_net::drain::{Guard, Watch};
use lakegate_net::http::{self as h, Body};

/// Longest statement body read.
const MAX_BODY: usize = 1 << 20;
/// Queries kept open between pages at most; beyond, new queries are refused until some finish.
const MAX_OPEN_QUERIES: usize = 256;
/// Queries one user may keep open at once, so that no user takes every place. A BI tool runs a few at a time.
const MAX_OPEN_QUERIES_PER_USER: usize = 64;
/// Abandoned queries remembered at most, and for how long: Trino keeps a finished query's answer for its
/// `query.min-expire-age` (15 minutes), and a client that comes back within it is told the query was abandoned.
const ABANDONED_REMEMBERED: usize = 1024;
const ABANDONED_KEPT: Duration = Duration::from_secs(15 * 60);

/// Whether `path` belongs to the SQL front's HTTP routes.
pub fn handles(path: &str) -> bool {
    path == "/v1/statement" || path.starts_with("/v1/statement/") || super::credentials::handles(path)
}

/// Whether a request only continues a query already open (the next page, or a cancel): such requests are
/// still served while the process drains, so that clients can fetch what they started.
pub fn continues_open_query(method: &Method, path: &str) -> bool {
    matches!(*method, Method::GET | Method::DELETE) && path.starts_with("/v1/statement/executing/")
}

/// Drops every open query, so that their audit records are submitted (as incomplete) before the process
/// exits. Returns how many there were.
pub async fn close_open_queries() -> usize {
    let mut open = OPEN.lock().await;
    let n = open.len();
    open.clear();
    n
}

struct OpenQuery {
    columns: Vec<Column>,
    rows: RowStream,
    page: u64,
    touched: Instant,
    /// Keeps a draining process alive until the client has fetched the query to its end (or the grace ends).
    _in_flight: Guard,
}

/// An open query and who opened it: only they fetch or cancel it.
struct Kept {
    owner: Owner,
    query: Arc<Mutex<OpenQuery>>,
}

static OPEN: LazyLock<Mutex<HashMap<String, Kept>>> = LazyLock::new(Default::default);

/// A query dropped because its client stopped fetching it: its id, who opened it, when it was dropped and how long
/// its client had been away.
struct Abandoned {
    id: String,
    owner: Owner,
    dropped: Instant,
    idle: Duration,
}

static ABANDONED: LazyLock<std::sync::Mutex<VecDeque<Abandoned>>> = LazyLock::new(Default::default);

/// The abandoned queries still remembered, the oldest first. Only ever held for a short loop, with nothing awaited.
fn abandoned() -> std::sync::MutexGuard<'static, VecDeque<Abandoned>> {
    let mut remembered = ABANDONED.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    while remembered.front().is_some_and(|a| a.dropped.elapsed() >= ABANDONED_KEPT) {
        remembered.pop_front();
    }
    remembered
}

/// Routes one request of the SQL front's HTTP routes.
pub async fn handle<B>(service: &Arc<SqlService>, req: Request<B>, peer: SocketAddr, drain: &Watch) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let request_id = h::new_request_id();
    let path = req.uri().path().to_owned();
    if super::credentials::handles(&path) {
        return super::credentials::handle(service, req, peer, &request_id).await;
    }
    let origin = Origin { front: Front::Sql, request_id: request_id.clone(), source: Some(peer.to_string()) };
    let base = base_uri(&req, service.settings.control_tls);
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let defaults = dialect::Defaults {
        catalog: header("x-trino-catalog"),
        schema: header("x-trino-schema"),
        prepared: Vec::new(),
    }
    .with_prepared_header(header("x-trino-prepared-statement").as_deref());
    let token = h::bearer(req.headers()).map(str::to_owned);
    let principal = match service.gate.authenticate(&origin, token.as_deref(), "sql:Connect", "").await {
        Ok(p) => p,
        Err(GateError::Audit(e)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, &SqlError::AuditUnavailable(e.to_string()), &request_id);
        }
        Err(e) => {
            let mut r =
                h::json(StatusCode::UNAUTHORIZED, &json!({"error": format!("invalid token: {e}")}), &request_id);
            r.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            return r;
        }
    };
    drop_abandoned(service.settings.trino_client_timeout).await;
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/v1/statement") => {
            let sql = match h::read_limited(req.into_body(), MAX_BODY).await {
                Ok(b) => String::from_utf8_lossy(&b).into_owned(),
                Err(e) => return error(StatusCode::BAD_REQUEST, &SqlError::Limit(e.to_string()), &request_id),
            };
            let mut session = Session::new(service.clone(), principal.clone(), Some(peer.to_string()))
                .with_catalog_form(crate::introspect::CatalogForm::Trino)
                .with_read_ahead(service.settings.trino_read_ahead_bytes);
            let outcome = match dialect::translate(&sql, &defaults) {
                Ok(dialect::Translation { change: Some(change), .. }) => {
                    return session_changed(&base, &change, &request_id);
                }
                Ok(translation) => run(&mut session, &translation, &request_id).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok((columns, rows)) => {
                    let id = format!("{}_{}", time_id(), request_id.replace('-', ""));
                    let query =
                        OpenQuery { columns, rows, page: 0, touched: Instant::now(), _in_flight: drain.guard() };
                    let query = Arc::new(Mutex::new(query));
                    {
                        let mut open = OPEN.lock().await;
                        let users = open.values().filter(|kept| kept.owner.is(&principal)).count();
                        let refusal = if users >= MAX_OPEN_QUERIES_PER_USER {
                            Some("too many open queries of yours; fetch or cancel some")
                        } else if open.len() >= MAX_OPEN_QUERIES {
                            Some("too many open queries; fetch or cancel some")
                        } else {
                            None
                        };
                        if let Some(refusal) = refusal {
                            return error(
                                StatusCode::SERVICE_UNAVAILABLE,
                                &SqlError::Limit(refusal.into()),
                                &request_id,
                            );
                        }
                        open.insert(id.clone(), Kept { owner: Owner::of(&principal), query: query.clone() });
                    }
                    let unanswered = Unanswered(Some(id.clone()));
                    let first = page(service, &base, &id, &query, &request_id).await;
                    unanswered.answered();
                    first
                }
                Err(e) => query_error(&e, &request_id),
            }
        }
        (method, p) => {
            let Some(rest) = p.strip_prefix("/v1/statement/executing/") else {
                return h::json(StatusCode::NOT_FOUND, &json!({"error": "no such route"}), &request_id);
            };
            let id = rest.split('/').next().unwrap_or_default().to_owned();
            // Another user's query id is as good as absent.
            let query =
                OPEN.lock().await.get(&id).filter(|kept| kept.owner.is(&principal)).map(|kept| kept.query.clone());
            let Some(query) = query else {
                // A query dropped as abandoned says so until its client cancels it or it is forgotten.
                let forget = method == Method::DELETE;
                return match (was_abandoned(&id, &principal, forget), forget) {
                    (Some(idle), false) => abandoned_error(&id, idle, &request_id),
                    (Some(_), true) => h::json(StatusCode::NO_CONTENT, &json!({}), &request_id),
                    (None, _) => h::json(StatusCode::NOT_FOUND, &json!({"error": "no such query"}), &request_id),
                };
            };
            match method {
                Method::DELETE => {
                    OPEN.lock().await.remove(&id);
                    h::json(StatusCode::NO_CONTENT, &json!({}), &request_id)
                }
                Method::GET => page(service, &base, &id, &query, &request_id).await,
                _ => h::json(StatusCode::METHOD_NOT_ALLOWED, &json!({"error": "method not allowed"}), &request_id),
            }
        }
    }
}

/// Drops the open queries nobody fetched for `timeout` (their audit records say incomplete), which gives back the
/// backend connections their rows stream from. Done at every request of the front, before its own statement waits
/// for a connection: done only when a new query is kept, as it was, it came after that wait, and abandoned queries
/// holding every connection of the front's share stalled each new query until it failed, for good.
///
/// Each is remembered (see [`ABANDONED_KEPT`]) so that its client, if it comes back, is told what happened.
async fn drop_abandoned(timeout: Duration) {
    let mut dropped = Vec::new();
    OPEN.lock().await.retain(|id, kept| {
        // A query being fetched right now is locked, and not idle.
        let Ok(query) = kept.query.try_lock() else { return true };
        let idle = query.touched.elapsed();
        if idle < timeout {
            return true;
        }
        dropped.push(Abandoned { id: id.clone(), owner: kept.owner.clone(), dropped: Instant::now(), idle });
        false
    });
    if !dropped.is_empty() {
        remember_abandoned(dropped);
    }
}

/// Remembers queries just dropped as abandoned, the oldest remembered forgotten past [`ABANDONED_REMEMBERED`].
fn remember_abandoned(dropped: Vec<Abandoned>) {
    let mut remembered = abandoned();
    for query in dropped {
        if remembered.len() >= ABANDONED_REMEMBERED {
            remembered.pop_front();
        }
        remembered.push_back(query);
    }
}

/// If `id` is a query of `principal`'s that was dropped as abandoned, how long its client had been away; `forget`
/// for its client's cancel, after which it is as any query that is gone.
fn was_abandoned(id: &str, principal: &lakegate_core::identity::Principal, forget: bool) -> Option<Duration> {
    let mut remembered = abandoned();
    let at = remembered.iter().position(|a| a.id == id && a.owner.is(principal))?;
    let idle = remembered[at].idle;
    if forget {
        remembered.remove(at);
    }
    Some(idle)
}

/// A query whose first page is not answered yet. The client learns the query's id only from that page: if it goes
/// away before (the request's future is dropped), nobody can fetch or cancel the query, so it is closed at once,
/// which stops it on its backend, rather than left open until the idle timeout.
struct Unanswered(Option<String>);

impl Unanswered {
    fn answered(mut self) {
        self.0 = None;
    }
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        let (Some(id), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) else { return };
        runtime.spawn(async move {
            OPEN.lock().await.remove(&id);
        });
    }
}

/// The finished answer to `PREPARE` or `DEALLOCATE PREPARE`, with the header that tells the client what to keep.
fn session_changed(base: &str, change: &dialect::SessionChange, request_id: &str) -> Response<Body> {
    let (update, header, value) = match change {
        dialect::SessionChange::Prepared { name, sql } => {
            let encoded: String = form_urlencoded::byte_serialize(sql.as_bytes()).collect();
            ("PREPARE", "x-trino-added-prepare", format!("{name}={encoded}"))
        }
        dialect::SessionChange::Deallocated(name) => ("DEALLOCATE", "x-trino-deallocated-prepare", name.clone()),
    };
    let id = format!("{}_{}", time_id(), request_id.replace('-', ""));
    let body = json!({
        "id": id,
        "infoUri": format!("{base}/ui/query.html?{id}"),
        "stats": {"state": "FINISHED", "queued": false, "scheduled": true},
        "updateType": update,
    });
    let mut r = h::json(StatusCode::OK, &body, request_id);
    if let Ok(v) = http::HeaderValue::from_str(&value) {
        r.headers_mut().insert(header, v);
    }
    r
}

/// Prepares and runs one request's statement(s); the last statement's rows are the result.
async fn run(
    session: &mut Session,
    translation: &dialect::Translation,
    request_id: &str,
) -> Result<(Vec<Column>, RowStream), SqlError> {
    let prepared = session.prepare(&translation.sql, request_id).await?;
    let mut last = (Vec::new(), Box::pin(futures::stream::empty()) as RowStream);
    for p in &prepared {
        match session.run(p, &[], request_id).await? {
            Outcome::Rows(set) => last = (set.columns, set.rows),
            Outcome::Command(_) | Outcome::Transaction { .. } => {}
        }
    }
    if let Some(table) = &translation.table {
        // Trino's DESCRIBE of a table the user cannot see (or that does not exist) is an error, not an empty
        // listing; the catalog query shows every visible column, so no rows means no such table.
        let (columns, mut rows) = last;
        let Some(first) = rows.next().await else {
            return Err(SqlError::Rewrite(crate::rewrite::RewriteError::UndefinedTable(table.clone())));
        };
        return Ok((columns, Box::pin(futures::stream::once(async move { first }).chain(rows))));
    }
    Ok(last)
}

/// One page of rows, with `nextUri` while more may follow.
async fn page(
    service: &SqlService,
    base: &str,
    id: &str,
    query: &Arc<Mutex<OpenQuery>>,
    request_id: &str,
) -> Response<Body> {
    let mut q = query.lock().await;
    q.touched = Instant::now();
    q.page += 1;
    let mut data = Vec::new();
    let mut done = false;
    while data.len() < service.settings.trino_page_rows {
        match q.rows.next().await {
            Some(Ok(row)) => data.push(Value::Array(row.iter().map(|c| c.to_json()).collect())),
            Some(Err(e)) => {
                drop(q);
                OPEN.lock().await.remove(id);
                return query_error(&e, request_id);
            }
            None => {
                done = true;
                break;
            }
        }
    }
    let columns: Vec<Value> = q.columns.iter().map(column_json).collect();
    let mut body = json!({
        "id": id,
        "infoUri": format!("{base}/ui/query.html?{id}"),
        "columns": columns,
        "stats": {"state": if done { "FINISHED" } else { "RUNNING" }, "queued": false, "scheduled": true},
    });
    if !data.is_empty() {
        body["data"] = Value::Array(data);
    }
    if done {
        drop(q);
        OPEN.lock().await.remove(id);
    } else {
        body["nextUri"] = Value::String(format!("{base}/v1/statement/executing/{id}/{}", q.page));
    }
    h::json(StatusCode::OK, &body, request_id)
}

fn column_json(c: &Column) -> Value {
    let (name, args): (&str, Vec<Value>) = match c.ty {
        ColumnType::Bool => ("boolean", vec![]),
        ColumnType::Int2 => ("smallint", vec![]),
        ColumnType::Int4 => ("integer", vec![]),
        ColumnType::Int8 => ("bigint", vec![]),
        ColumnType::Float4 => ("real", vec![]),
        ColumnType::Float8 => ("double", vec![]),
        ColumnType::Numeric => {
            ("decimal", vec![json!({"kind": "LONG", "value": 38}), json!({"kind": "LONG", "value": 10})])
        }
        ColumnType::Text => ("varchar", vec![json!({"kind": "LONG", "value": 2147483647})]),
        ColumnType::Date => ("date", vec![]),
        ColumnType::Timestamp => ("timestamp", vec![json!({"kind": "LONG", "value": 6})]),
    };
    let display = match c.ty {
        ColumnType::Numeric => "decimal(38,10)".to_owned(),
        ColumnType::Timestamp => "timestamp(6)".to_owned(),
        _ => name.to_owned(),
    };
    json!({"name": c.name, "type": display, "typeSignature": {"rawType": name, "arguments": args}})
}

/// Trino's error JSON for a failed query (HTTP 200, as Trino answers).
fn query_error(e: &SqlError, request_id: &str) -> Response<Body> {
    let id = format!("{}_{}", time_id(), request_id.replace('-', ""));
    let (name, kind, code) = match e.sqlstate() {
        "42501" => ("PERMISSION_DENIED", "USER_ERROR", 4),
        "42P01" => ("TABLE_NOT_FOUND", "USER_ERROR", 46),
        "42703" => ("COLUMN_NOT_FOUND", "USER_ERROR", 47),
        "42601" => ("SYNTAX_ERROR", "USER_ERROR", 1),
        "0A000" => ("NOT_SUPPORTED", "USER_ERROR", 13),
        "3D000" => ("CATALOG_NOT_FOUND", "USER_ERROR", 44),
        "3F000" => ("SCHEMA_NOT_FOUND", "USER_ERROR", 45),
        "22P02" => ("INVALID_PARAMETER_USAGE", "USER_ERROR", 57),
        "57P03" | "08006" => ("SERVER_SHUTTING_DOWN", "INTERNAL_ERROR", 65_541),
        // No backend connection free within `pool_wait_timeout_ms`: the client may retry, as Trino's kind says.
        "53300" => ("GENERIC_INSUFFICIENT_RESOURCES", "INSUFFICIENT_RESOURCES", 131_072),
        _ => ("GENERIC_INTERNAL_ERROR", "INTERNAL_ERROR", 65_536),
    };
    failed(&id, &e.to_string(), (name, kind, code), e.sqlstate(), request_id)
}

/// The answer to the next page of a query dropped because its client stopped fetching it: Trino's
/// `ABANDONED_QUERY`, rather than a 404 that leaves the client guessing.
fn abandoned_error(id: &str, idle: Duration, request_id: &str) -> Response<Body> {
    let message = format!(
        "Query {id} was abandoned by the client, as it may have exited or stopped checking for query results: \
         they were not fetched for {} s (sql.trino_client_timeout_ms)",
        idle.as_secs()
    );
    // PostgreSQL's `query_canceled`: the query was stopped, not refused.
    failed(id, &message, ("ABANDONED_QUERY", "USER_ERROR", 2), "57014", request_id)
}

/// A failed query's answer in Trino's form: `(errorName, errorType, errorCode)` as Trino's `StandardErrorCode`.
fn failed(id: &str, message: &str, error: (&str, &str, u32), sqlstate: &str, request_id: &str) -> Response<Body> {
    let (name, kind, code) = error;
    let body = json!({
        "id": id,
        "stats": {"state": "FAILED"},
        "error": {
            "message": message,
            "errorCode": code,
            "errorName": name,
            "errorType": kind,
            "sqlState": sqlstate,
            "failureInfo": {"type": "io.lakegate.SqlError", "message": message, "suppressed": [], "stack": []},
        },
    });
    h::json(StatusCode::OK, &body, request_id)
}

fn error(status: StatusCode, e: &SqlError, request_id: &str) -> Response<Body> {
    h::json(status, &json!({"error": e.to_string(), "sqlState": e.sqlstate()}), request_id)
}

/// `http://host:port` as the client addressed us, for `nextUri`.
fn base_uri<B>(req: &Request<B>, tls: bool) -> String {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| h.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '-' | '[' | ']')))
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}")
}

fn time_id() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}_{:02}{:02}{:02}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::owner::tests::principal;

    fn abandoned_by(owner: &Owner, id: &str) -> Abandoned {
        Abandoned { id: id.into(), owner: owner.clone(), dropped: Instant::now(), idle: Duration::from_secs(300) }
    }

    // One test: the remembered queries are the process's, and tests run side by side.
    #[test]
    fn abandoned_queries_are_told_to_their_owner_alone_until_cancelled_or_expired_and_at_most_so_many_are_kept() {
        let (alice, bob) = (principal("https://idp", "alice"), principal("https://idp", "bob"));
        let owner = Owner::of(&alice);
        if let Some(long_ago) = Instant::now().checked_sub(ABANDONED_KEPT) {
            abandoned().clear();
            remember_abandoned(vec![Abandoned { dropped: long_ago, ..abandoned_by(&owner, "old") }]);
            remember_abandoned(vec![abandoned_by(&owner, "new")]);
            assert_eq!(was_abandoned("old", &alice, false), None, "past Trino's expiry age");
            assert!(was_abandoned("new", &alice, false).is_some());
        }
        remember_abandoned((0..ABANDONED_REMEMBERED + 10).map(|n| abandoned_by(&owner, &format!("a{n}"))).collect());
        assert_eq!(abandoned().len(), ABANDONED_REMEMBERED);
        // The oldest are forgotten first.
        assert_eq!(was_abandoned("new", &alice, false), None);
        assert_eq!(was_abandoned("a9", &alice, false), None);
        let last = format!("a{}", ABANDONED_REMEMBERED + 9);
        assert_eq!(was_abandoned(&last, &bob, false), None, "another user's query");
        assert_eq!(was_abandoned(&last, &alice, false), Some(Duration::from_secs(300)));
        assert_eq!(was_abandoned(&last, &alice, false), Some(Duration::from_secs(300)), "told again");
        assert_eq!(was_abandoned(&last, &alice, true), Some(Duration::from_secs(300)), "cancelled");
        assert_eq!(was_abandoned(&last, &alice, false), None);
    }
}

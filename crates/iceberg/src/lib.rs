//! The Iceberg REST catalog front (Apache Iceberg's REST catalog OpenAPI specification), under `/iceberg` on
//! the control endpoint.
//!
//! One catalog, one policy set: an Iceberg namespace is the `Database` and an Iceberg table the `Table` the SQL
//! gateway governs, so a table is decided alike whether it is reached by S3, by SQL or through the catalog.
//! Every call takes the one road: the bearer token becomes a principal, the gate decides (and records) the
//! operation, and only then does the catalog act. Listings show what the principal may see; a table the
//! principal may not read is answered as missing, so its existence is not told.
//!
//! Credential vending is Lake Formation's full table access: with `X-Iceberg-Access-Delegation:
//! vended-credentials`, a principal with full access to a table (every column clear, no row filter) gets
//! Lakegate session credentials bound to the table's location, read-write where it may also `CommitTable`; each
//! S3 request made with them is decided again as an access to that table. Anyone under a row filter, a mask or a
//! column restriction is refused raw credentials and pointed at the SQL gateway.
//!
//! State lives in [`state::State`] (SQLite or PostgreSQL: the pointer to each table's current metadata file);
//! metadata files are written to the lake store through the same backend the S3 front forwards to (plugged in
//! by the binary as [`LakeFiles`]).

pub mod config;
mod error;
pub mod files;
pub mod metadata;
pub mod scan;
pub mod seed;
pub mod state;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Request, Response, StatusCode};
use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use lakegate_core::audit::{AuditSlot, Front};
use lakegate_core::credentials::{
    CredentialKind, LiveKeyRing, Permission, Scope, ScopeGrant, SessionClaims, TableBinding,
};
use lakegate_core::gate::{Gate, GateError, Grant, ListingCandidate, Origin, TableAsk, TableShape, Vend, event};
use lakegate_core::identity::Principal;
use lakegate_core::policy::{Resource, TableName};
use lakegate_net::http::{self as h, Body};

pub use config::IcebergConfig;
pub use error::IcebergError;
use error::IcebergError as E;
use files::Files;
pub use files::{FileError, LakeFiles, MAX_METADATA};
use state::{State, StateError};

/// Largest request body (a commit with many snapshots' worth of updates stays far below).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// How long vended credentials live (at most the token's own lifetime).
const CREDENTIALS_SECONDS: i64 = 3600;
/// Where the routes live on the control endpoint.
const ROOT: &str = "/iceberg";
/// Hex digits of the id that makes a table's location its own.
const LOCATION_ID_LEN: usize = 8;

/// The catalog service.
#[derive(Debug, Clone)]
pub struct Catalog {
    gate: Arc<Gate>,
    state: State,
    files: Files,
    keys: Arc<LiveKeyRing>,
    config: Arc<IcebergConfig>,
    /// Lakegate's S3 front, as clients reach it (`s3.endpoint` in vended credentials).
    s3_endpoint: String,
}

/// Whether `path` is the catalog's.
pub fn handles(path: &str) -> bool {
    path == ROOT || path.starts_with("/iceberg/")
}

impl Catalog {
    /// Opens the catalog's state and seeds the configured namespaces.
    pub async fn start(
        config: IcebergConfig,
        data_dir: &std::path::Path,
        gate: Arc<Gate>,
        lake: Arc<dyn LakeFiles>,
        keys: Arc<LiveKeyRing>,
        s3_endpoint: String,
    ) -> Result<Self, StateError> {
        let state = match &config.postgres {
            Some(conninfo) => State::postgres(conninfo).await?,
            None => State::sqlite(&config.sqlite_path(data_dir))?,
        };
        for ns in &config.namespaces {
            state.ensure_namespace(ns).await?;
        }
        let s3_endpoint = config.s3_endpoint.clone().unwrap_or(s3_endpoint);
        Ok(Catalog { gate, state, files: Files::new(lake), keys, config: Arc::new(config), s3_endpoint })
    }

    /// The data files of table `namespace.name`'s current snapshot, for an engine Lakegate runs itself after
    /// the gate decided the statement that reads them (no decision here: the catalog only locates files).
    pub async fn data_files(&self, namespace: &str, name: &str) -> Result<Vec<scan::DataFile>, IcebergError> {
        let file =
            self.state.table(namespace, name).await?.ok_or_else(|| E::NoSuchTable(format!("{namespace}.{name}")))?;
        let metadata = self.files.read_metadata(&file).await?;
        scan::data_files(&self.files, &metadata).await.map_err(|e| match e {
            scan::ScanError::File(e) => e.into(),
            e => E::Unprocessable(e.to_string()),
        })
    }

    /// Serves one request.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let rid = h::new_request_id();
        let origin = Origin { front: Front::Catalog, request_id: rid.clone(), source: Some(peer.to_string()) };
        let response = match self.serve(&origin, req).await {
            Ok(r) => r,
            Err(e) => e.response(&rid),
        };
        lakegate_core::metrics::REQUESTS.inc(&[("front", "catalog"), ("status", response.status().as_str())]);
        response
    }

    async fn serve<B>(&self, origin: &Origin, req: Request<B>) -> Result<Response<Body>, IcebergError>
    where
        B: hyper::body::Body,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let rid = origin.request_id.as_str();
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().strip_prefix(ROOT).unwrap_or_default().to_owned();
        let segments: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|s| percent_decode_str(s).decode_utf8().map(|c| c.into_owned()))
            .collect::<Result<_, _>>()
            .map_err(|_| E::BadRequest("the path is not UTF-8".into()))?;
        let route = Route::parse(&parts.method, &segments, &self.config.warehouse)?;
        let query: BTreeMap<String, String> = form_pairs(parts.uri.query().unwrap_or_default()).into_iter().collect();
        let token = h::bearer(&parts.headers).map(str::to_owned);
        let principal = match self.gate.authenticate(origin, token.as_deref(), route.operation(), &path).await {
            Ok(p) => p,
            Err(e) => return Err(e.into()),
        };
        let call = Call { catalog: self, origin, principal: &principal, headers: &parts.headers };
        let body = if matches!(parts.method, Method::POST) {
            match h::read_limited(body, MAX_BODY).await {
                Ok(bytes) if bytes.is_empty() => Value::Null,
                Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| E::BadRequest(format!("invalid JSON: {e}")))?,
                Err(h::BodyError::TooLarge(n)) => return Err(E::BadRequest(format!("body larger than {n} bytes"))),
                Err(e) => return Err(E::BadRequest(e.to_string())),
            }
        } else {
            Value::Null
        };
        let head = parts.method == Method::HEAD;
        match route {
            Route::Config => call.config(&query, rid).await,
            Route::ListNamespaces => call.list_namespaces(&query, rid).await,
            Route::CreateNamespace => call.create_namespace(body, rid).await,
            Route::LoadNamespace(ns) => call.load_namespace(&ns, head, rid).await,
            Route::DropNamespace(ns) => call.drop_namespace(&ns, rid).await,
            Route::UpdateNamespace(ns) => call.update_namespace(&ns, body, rid).await,
            Route::ListTables(ns) => call.list_tables(&ns, rid).await,
            Route::CreateTable(ns) => call.create_table(&ns, body, rid).await,
            Route::RegisterTable(ns) => call.register_table(&ns, body, rid).await,
            Route::LoadTable(t) => call.load_table(&t, head, rid).await,
            Route::CommitTable(t) => call.commit_table(&t, body, rid).await,
            Route::DropTable(t) => call.drop_table(&t, rid).await,
            Route::RenameTable => call.rename_table(body, rid).await,
            Route::LoadCredentials(t) => call.load_credentials(&t, rid).await,
            Route::ReportMetrics(t) => call.report_metrics(&t, rid).await,
        }
    }
}

/// What a request asks for.
#[derive(Debug)]
enum Route {
    Config,
    ListNamespaces,
    CreateNamespace,
    LoadNamespace(String),
    DropNamespace(String),
    UpdateNamespace(String),
    ListTables(String),
    CreateTable(String),
    RegisterTable(String),
    LoadTable(TableName),
    CommitTable(TableName),
    DropTable(TableName),
    RenameTable,
    LoadCredentials(TableName),
    ReportMetrics(TableName),
}

impl Route {
    fn parse(method: &Method, segments: &[String], warehouse: &str) -> Result<Route, IcebergError> {
        let s: Vec<&str> = segments.iter().map(String::as_str).collect();
        let not_found = || E::NotFound(format!("no route for /{}", s.join("/").chars().take(200).collect::<String>()));
        let wrong_method = || E::MethodNotAllowed(method.to_string());
        let (prefix, rest) = match s.as_slice() {
            ["v1", "config"] => {
                return if method == Method::GET { Ok(Route::Config) } else { Err(wrong_method()) };
            }
            ["v1", prefix, rest @ ..] => (*prefix, rest),
            _ => return Err(not_found()),
        };
        if prefix != warehouse {
            return Err(E::NotFound(format!("no warehouse {prefix:?}; this catalog serves {warehouse:?}")));
        }
        let m = method.clone();
        let route = match (rest, m) {
            (["namespaces"], Method::GET) => Route::ListNamespaces,
            (["namespaces"], Method::POST) => Route::CreateNamespace,
            (["namespaces", ns], Method::GET | Method::HEAD) => Route::LoadNamespace(name(ns)?),
            (["namespaces", ns], Method::DELETE) => Route::DropNamespace(name(ns)?),
            (["namespaces", ns, "properties"], Method::POST) => Route::UpdateNamespace(name(ns)?),
            (["namespaces", ns, "tables"], Method::GET) => Route::ListTables(name(ns)?),
            (["namespaces", ns, "tables"], Method::POST) => Route::CreateTable(name(ns)?),
            (["namespaces", ns, "register"], Method::POST) => Route::RegisterTable(name(ns)?),
            (["namespaces", ns, "tables", t], Method::GET | Method::HEAD) => Route::LoadTable(table(ns, t)?),
            (["namespaces", ns, "tables", t], Method::POST) => Route::CommitTable(table(ns, t)?),
            (["namespaces", ns, "tables", t], Method::DELETE) => Route::DropTable(table(ns, t)?),
            (["namespaces", ns, "tables", t, "credentials"], Method::GET) => Route::LoadCredentials(table(ns, t)?),
            (["namespaces", ns, "tables", t, "metrics"], Method::POST) => Route::ReportMetrics(table(ns, t)?),
            (["tables", "rename"], Method::POST) => Route::RenameTable,
            (
                ["namespaces"]
                | ["namespaces", _]
                | ["namespaces", _, "properties" | "tables" | "register"]
                | ["namespaces", _, "tables", _]
                | ["namespaces", _, "tables", _, "credentials" | "metrics"]
                | ["tables", "rename"],
                _,
            ) => return Err(wrong_method()),
            _ => return Err(not_found()),
        };
        Ok(route)
    }

    /// The audit action of the operation.
    fn operation(&self) -> &'static str {
        match self {
            Route::Config => "iceberg:GetConfig",
            Route::ListNamespaces => "iceberg:ListNamespaces",
            Route::CreateNamespace => "iceberg:CreateNamespace",
            Route::LoadNamespace(_) => "iceberg:LoadNamespace",
            Route::DropNamespace(_) => "iceberg:DropNamespace",
            Route::UpdateNamespace(_) => "iceberg:UpdateNamespaceProperties",
            Route::ListTables(_) => "iceberg:ListTables",
            Route::CreateTable(_) => "iceberg:CreateTable",
            Route::RegisterTable(_) => "iceberg:RegisterTable",
            Route::LoadTable(_) => "iceberg:LoadTable",
            Route::CommitTable(_) => "iceberg:CommitTable",
            Route::DropTable(_) => "iceberg:DropTable",
            Route::RenameTable => "iceberg:RenameTable",
            Route::LoadCredentials(_) => "iceberg:LoadCredentials",
            Route::ReportMetrics(_) => "iceberg:ReportMetrics",
        }
    }
}

/// A namespace or table name: one level, a lower-case identifier, as the governed catalog names databases and
/// tables (a `.` or a multi-level namespace would make `database.table` ambiguous to policies).
fn name(raw: &str) -> Result<String, IcebergError> {
    if raw.contains('\u{1f}') {
        return Err(E::BadRequest("multi-level namespaces are not supported: use one level".into()));
    }
    let mut chars = raw.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && raw.len() <= 63;
    if ok {
        Ok(raw.to_owned())
    } else {
        Err(E::BadRequest(format!(
            "{:?} is not a valid name: use lower-case letters, digits and _ (at most 63), as SQL names them",
            raw.chars().take(80).collect::<String>()
        )))
    }
}

fn table(ns: &str, t: &str) -> Result<TableName, IcebergError> {
    Ok(TableName::new(&name(ns)?, &name(t)?))
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
            (dec(k), dec(v))
        })
        .collect()
}

/// A request body as the specification's `what` (`CreateTableRequest`, ...); anything else is a 400.
fn request<T: serde::de::DeserializeOwned>(body: Value, what: &str) -> Result<T, IcebergError> {
    serde_json::from_value(body).map_err(|e| E::BadRequest(format!("{what}: {e}")))
}

fn database(ns: &str) -> Resource {
    Resource::Database(ns.to_owned())
}

fn table_resource(t: &TableName) -> Resource {
    Resource::Table { database: t.schema.clone(), table: t.name.clone() }
}

fn identifier(t: &TableName) -> Value {
    json!({"namespace": [t.schema], "name": t.name})
}

/// One request, after authentication.
struct Call<'a> {
    catalog: &'a Catalog,
    origin: &'a Origin,
    principal: &'a Principal,
    headers: &'a HeaderMap,
}

/// An allowed operation in progress: the response is chosen, then the record finished with its status.
fn finish(
    slot: AuditSlot,
    response: Result<Response<Body>, IcebergError>,
    rid: &str,
) -> Result<Response<Body>, IcebergError> {
    let mut slot = slot;
    let (status, error) = match &response {
        Ok(r) => (r.status().as_u16(), None),
        Err(e) => (e.status().as_u16(), Some(e.to_string())),
    };
    slot.event_mut().outcome_mut().status = Some(status);
    if let Some(e) = error {
        slot.event_mut().reason = Some(e);
    }
    slot.finish();
    match response {
        Ok(r) => Ok(h::with_request_id(r, rid)),
        Err(e) => Err(e),
    }
}

fn no_content(rid: &str) -> Response<Body> {
    let mut r = Response::new(Body::default());
    *r.status_mut() = StatusCode::NO_CONTENT;
    h::with_request_id(r, rid)
}

impl Call<'_> {
    /// Decides `operation` on table `t` with Cedar `action`; refused, a 403 saying the principal may not `what` it.
    async fn decide_on_table(
        &self,
        operation: &str,
        action: &str,
        t: &TableName,
        what: &str,
    ) -> Result<AuditSlot, IcebergError> {
        self.decide(operation, action, &table_resource(t), self.forbidden(format!("{what} {t}"))).await
    }

    /// The refusal of something the principal may not do.
    fn forbidden(&self, what: String) -> IcebergError {
        E::Forbidden(format!("{} may not {what}", self.principal.subject))
    }

    fn gate(&self) -> &Gate {
        &self.catalog.gate
    }

    fn state(&self) -> &State {
        &self.catalog.state
    }

    /// Decides `operation` with Cedar `action` on `resource`; a denial is recorded by the gate and becomes
    /// `denied` (a 403, or a 404 where existence must not be told).
    async fn decide(
        &self,
        operation: &str,
        action: &str,
        resource: &Resource,
        denied: IcebergError,
    ) -> Result<AuditSlot, IcebergError> {
        match self
            .gate()
            .authorize_operation(self.origin, self.principal, operation, action, resource, BTreeMap::new())
            .await
        {
            Ok(allowed) => Ok(allowed.slot),
            Err(GateError::Denied(_)) => Err(denied),
            Err(e) => Err(e.into()),
        }
    }

    async fn config(&self, query: &BTreeMap<String, String>, rid: &str) -> Result<Response<Body>, IcebergError> {
        let warehouse = &self.catalog.config.warehouse;
        let ev = event(self.origin, "iceberg:GetConfig", format!("warehouse:{warehouse}")).principal(self.principal);
        if let Some(asked) = query.get("warehouse").filter(|w| *w != warehouse) {
            let e = E::NotFound(format!("no warehouse {asked:?}; this catalog serves {warehouse:?}"));
            self.gate().record(ev.error(e.to_string())).await?;
            return Err(e);
        }
        // Not a decision: what any signed-in caller may learn about the catalog's shape.
        self.gate().record(ev.allow(Vec::<String>::new())).await?;
        let endpoints = [
            "GET /v1/{prefix}/namespaces",
            "POST /v1/{prefix}/namespaces",
            "GET /v1/{prefix}/namespaces/{namespace}",
            "HEAD /v1/{prefix}/namespaces/{namespace}",
            "DELETE /v1/{prefix}/namespaces/{namespace}",
            "POST /v1/{prefix}/namespaces/{namespace}/properties",
            "GET /v1/{prefix}/namespaces/{namespace}/tables",
            "POST /v1/{prefix}/namespaces/{namespace}/tables",
            "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}",
            "HEAD /v1/{prefix}/namespaces/{namespace}/tables/{table}",
            "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}",
            "DELETE /v1/{prefix}/namespaces/{namespace}/tables/{table}",
            "GET /v1/{prefix}/namespaces/{namespace}/tables/{table}/credentials",
            "POST /v1/{prefix}/namespaces/{namespace}/tables/{table}/metrics",
            "POST /v1/{prefix}/namespaces/{namespace}/register",
            "POST /v1/{prefix}/tables/rename",
        ];
        Ok(h::json(
            StatusCode::OK,
            &json!({"defaults": {}, "overrides": {"prefix": warehouse}, "endpoints": endpoints}),
            rid,
        ))
    }

    /// The questions that show a namespace: may create tables in it, or may read one of its tables.
    async fn namespace_candidate(&self, ns: &str) -> Result<ListingCandidate, IcebergError> {
        let mut shown_if = vec![("CreateTable", database(ns))];
        for t in self.state().tables(ns).await? {
            shown_if.push(("SelectTable", table_resource(&TableName::new(ns, &t))));
        }
        Ok(ListingCandidate { name: ns.to_owned(), shown_if })
    }

    async fn list_namespaces(
        &self,
        query: &BTreeMap<String, String>,
        rid: &str,
    ) -> Result<Response<Body>, IcebergError> {
        if query.get("parent").is_some_and(|p| !p.is_empty()) {
            // One level only: nothing lives under a namespace but tables.
            let listing = self
                .gate()
                .list_visible(self.origin, self.principal, "iceberg:ListNamespaces", "namespaces", vec![])
                .await?;
            return finish(listing.slot, Ok(h::json(StatusCode::OK, &json!({"namespaces": []}), rid)), rid);
        }
        let mut candidates = Vec::new();
        for ns in self.state().namespaces().await? {
            candidates.push(self.namespace_candidate(&ns).await?);
        }
        let listing = self
            .gate()
            .list_visible(self.origin, self.principal, "iceberg:ListNamespaces", "namespaces", candidates)
            .await?;
        let namespaces: Vec<Value> = listing.visible.iter().map(|n| json!([n])).collect();
        finish(listing.slot, Ok(h::json(StatusCode::OK, &json!({"namespaces": namespaces}), rid)), rid)
    }

    /// Whether the principal may see namespace `ns` (recorded under `operation`); a namespace that may not be
    /// seen is answered as missing.
    async fn see_namespace(&self, ns: &str, operation: &str) -> Result<AuditSlot, IcebergError> {
        let exists = self.state().namespace(ns).await?.is_some();
        let candidate = if exists {
            self.namespace_candidate(ns).await?
        } else {
            ListingCandidate { name: ns.to_owned(), shown_if: vec![("CreateTable", database(ns))] }
        };
        let listing = self
            .gate()
            .list_visible(self.origin, self.principal, operation, &database(ns).to_string(), vec![candidate])
            .await?;
        if listing.visible.is_empty() || !exists {
            let e = E::NoSuchNamespace(ns.to_owned());
            let _ = finish(listing.slot, Err(e), "");
            return Err(E::NoSuchNamespace(ns.to_owned()));
        }
        Ok(listing.slot)
    }

    async fn create_namespace(&self, body: Value, rid: &str) -> Result<Response<Body>, IcebergError> {
        #[derive(Deserialize)]
        struct Req {
            namespace: Vec<String>,
            #[serde(default)]
            properties: BTreeMap<String, String>,
        }
        let req: Req = request(body, "CreateNamespaceRequest")?;
        let [ns] = req.namespace.as_slice() else {
            return Err(E::BadRequest("multi-level namespaces are not supported: use one level".into()));
        };
        let ns = name(ns)?;
        let slot = self
            .decide(
                "iceberg:CreateNamespace",
                "CreateNamespace",
                &database(&ns),
                self.forbidden(format!("create namespace {ns}")),
            )
            .await?;
        let result = match self.state().create_namespace(&ns, &req.properties).await {
            Ok(()) => Ok(h::json(StatusCode::OK, &json!({"namespace": [ns], "properties": req.properties}), rid)),
            Err(e) => Err(e.into()),
        };
        finish(slot, result, rid)
    }

    async fn load_namespace(&self, ns: &str, head: bool, rid: &str) -> Result<Response<Body>, IcebergError> {
        let slot = self.see_namespace(ns, "iceberg:LoadNamespace").await?;
        let result = match self.state().namespace(ns).await {
            Ok(Some(_)) if head => Ok(no_content(rid)),
            Ok(Some(props)) => Ok(h::json(StatusCode::OK, &json!({"namespace": [ns], "properties": props}), rid)),
            Ok(None) => Err(E::NoSuchNamespace(ns.to_owned())),
            Err(e) => Err(e.into()),
        };
        finish(slot, result, rid)
    }

    async fn drop_namespace(&self, ns: &str, rid: &str) -> Result<Response<Body>, IcebergError> {
        let slot = self
            .decide(
                "iceberg:DropNamespace",
                "DropNamespace",
                &database(ns),
                self.forbidden(format!("drop namespace {ns}")),
            )
            .await?;
        let result = self.state().drop_namespace(ns).await.map(|()| no_content(rid)).map_err(E::from);
        finish(slot, result, rid)
    }

    async fn update_namespace(&self, ns: &str, body: Value, rid: &str) -> Result<Response<Body>, IcebergError> {
        #[derive(Deserialize)]
        struct Req {
            #[serde(default)]
            removals: Vec<String>,
            #[serde(default)]
            updates: BTreeMap<String, String>,
        }
        let req: Req = request(body, "UpdateNamespacePropertiesRequest")?;
        if req.removals.iter().any(|k| req.updates.contains_key(k)) {
            return Err(E::Unprocessable("a key is both removed and updated".into()));
        }
        let slot = self
            .decide(
                "iceberg:UpdateNamespaceProperties",
                "UpdateNamespace",
                &database(ns),
                self.forbidden(format!("change namespace {ns}")),
            )
            .await?;
        let result = match self.state().update_namespace(ns, &req.removals, &req.updates).await {
            Ok(done) => Ok(h::json(
                StatusCode::OK,
                &json!({"updated": done.updated, "removed": done.removed, "missing": done.missing}),
                rid,
            )),
            Err(e) => Err(e.into()),
        };
        finish(slot, result, rid)
    }

    async fn list_tables(&self, ns: &str, rid: &str) -> Result<Response<Body>, IcebergError> {
        // One listing decides both whether the namespace may be seen (its own entry: may create tables in it) and
        // which of its tables may be read; the namespace is seen when anything in the listing is.
        let namespace_entry = database(ns).to_string();
        let mut candidates =
            vec![ListingCandidate { name: namespace_entry.clone(), shown_if: vec![("CreateTable", database(ns))] }];
        for t in self.state().tables(ns).await? {
            let shown_if = vec![("SelectTable", table_resource(&TableName::new(ns, &t)))];
            candidates.push(ListingCandidate { name: t, shown_if });
        }
        let listing = self
            .gate()
            .list_visible(self.origin, self.principal, "iceberg:ListTables", &namespace_entry, candidates)
            .await?;
        let exists = self.state().namespace(ns).await?.is_some();
        if listing.visible.is_empty() || !exists {
            return finish(listing.slot, Err(E::NoSuchNamespace(ns.to_owned())), rid);
        }
        let identifiers: Vec<Value> = listing
            .visible
            .iter()
            .filter(|t| **t != namespace_entry)
            .map(|t| identifier(&TableName::new(ns, t)))
            .collect();
        finish(listing.slot, Ok(h::json(StatusCode::OK, &json!({"identifiers": identifiers}), rid)), rid)
    }

    /// Where a new table lives: under the warehouse, named for the table and a fresh id, so that no two tables
    /// ever share files.
    ///
    /// The id is short because keys under it get long (`metadata/snap-<19 digits>-<n>-<uuid>.avro`) and the
    /// embedded store keeps keys of about 130 bytes at most; creating checks that no table lives there yet.
    fn assigned_location(&self, t: &TableName) -> String {
        let id: String = uuid::Uuid::new_v4().simple().to_string().chars().take(LOCATION_ID_LEN).collect();
        format!("{}{}/{}-{id}", self.catalog.config.location_prefix(), t.schema, t.name)
    }

    /// A location for a new table that no table holds.
    async fn fresh_location(&self, t: &TableName) -> Result<String, IcebergError> {
        for _ in 0..4 {
            let location = self.assigned_location(t);
            if !self.state().any_table_under(&format!("{location}/")).await? {
                return Ok(location);
            }
        }
        Err(E::Internal("no free location for the table".into()))
    }

    /// Whether `location` is one Lakegate would assign to `t` (a stage-create's commit repeats it).
    fn is_assigned_location(&self, t: &TableName, location: &str) -> bool {
        let base = format!("{}{}/{}-", self.catalog.config.location_prefix(), t.schema, t.name);
        location
            .trim_end_matches('/')
            .strip_prefix(&base)
            .is_some_and(|id| id.len() == LOCATION_ID_LEN && id.chars().all(|c| c.is_ascii_hexdigit()))
    }

    async fn create_table(&self, ns: &str, body: Value, rid: &str) -> Result<Response<Body>, IcebergError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Req {
            name: String,
            #[serde(default)]
            location: Option<String>,
            schema: Value,
            #[serde(default)]
            partition_spec: Option<Value>,
            #[serde(default)]
            write_order: Option<Value>,
            #[serde(default)]
            stage_create: bool,
            #[serde(default)]
            properties: Map<String, Value>,
        }
        let req: Req = request(body, "CreateTableRequest")?;
        let t = TableName::new(ns, &name(&req.name)?);
        let slot = self.decide_on_table("iceberg:CreateTable", "CreateTable", &t, "create table").await?;
        let result = self
            .create_table_allowed(
                &t,
                req.location,
                (req.schema, req.partition_spec, req.write_order),
                req.stage_create,
                req.properties,
                rid,
            )
            .await;
        finish(slot, result, rid)
    }

    async fn create_table_allowed(
        &self,
        t: &TableName,
        location: Option<String>,
        (schema, spec, order): (Value, Option<Value>, Option<Value>),
        stage: bool,
        properties: Map<String, Value>,
        rid: &str,
    ) -> Result<Response<Body>, IcebergError> {
        if location.is_some() {
            return Err(E::BadRequest("Lakegate assigns table locations: create the table without a location".into()));
        }
        if self.state().namespace(&t.schema).await?.is_none() {
            return Err(E::NoSuchNamespace(t.schema.clone()));
        }
        if self.state().table(&t.schema, &t.name).await?.is_some() {
            return Err(E::AlreadyExists(format!("table {t} already exists")));
        }
        let location = self.fresh_location(t).await?;
        let new = metadata::NewTable {
            location: &location,
            schema: &schema,
            partition_spec: spec.as_ref(),
            write_order: order.as_ref(),
            properties,
        };
        let metadata = metadata::create(new)?;
        if stage {
            // Nothing is stored: the commit that carries `assert-create` creates the table.
            return self.load_result(t, None, metadata, rid).await;
        }
        let file = self.catalog.files.write_metadata(&location, 0, &metadata).await?;
        if let Err(e) = self.state().create_table(&t.schema, &t.name, &file).await {
            self.catalog.files.delete(&file).await;
            return Err(e.into());
        }
        self.load_result(t, Some(file), metadata, rid).await
    }

    /// The LoadTableResult for `metadata`, with vended credentials when the caller asked for them and may
    /// have them.
    async fn load_result(
        &self,
        t: &TableName,
        file: Option<String>,
        metadata: Value,
        rid: &str,
    ) -> Result<Response<Body>, IcebergError> {
        let wants = self
            .headers
            .get_all("x-iceberg-access-delegation")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|m| m.trim() == "vended-credentials");
        let mut body = json!({"metadata-location": file, "metadata": metadata, "config": {}});
        if wants {
            let (prefix, config) = self.vend(t, &metadata).await?;
            body["config"] = Value::Object(config.clone());
            body["storage-credentials"] = json!([{"prefix": prefix, "config": config}]);
        }
        Ok(h::json(StatusCode::OK, &body, rid))
    }

    /// Full-table credentials for `t`, decided by the gate on the table's current columns.
    async fn vend(&self, t: &TableName, metadata: &Value) -> Result<(String, Map<String, Value>), IcebergError> {
        let location = metadata.get("location").and_then(Value::as_str).unwrap_or_default();
        let shape = TableShape {
            location: format!("{}/", location.trim_end_matches('/')),
            columns: metadata::current_columns(metadata),
        };
        let ask = TableAsk { table: t, shape: Some(&shape), write: true };
        let vending = match self.gate().vend(self.origin, self.principal, Vend::Table(ask), BTreeMap::new()).await {
            Ok(v) => v,
            Err(GateError::NotGrantable(reason)) => {
                return Err(E::Forbidden(format!("no credentials for the raw files: {reason}")));
            }
            Err(GateError::Denied(_)) => return Err(E::NoSuchTable(t.to_string())),
            Err(e) => return Err(e.into()),
        };
        let Grant::Table { location, binding } = vending.grant else {
            return Err(E::Internal("the gate granted something other than table credentials".into()));
        };
        let mut slot = vending.slot;
        match self.mint(&location, binding) {
            Ok((key_id, config)) => {
                slot.event_mut().extra.insert("access_key_id".into(), key_id.into());
                slot.event_mut().outcome_mut().status = Some(200);
                slot.finish();
                Ok((shape.location.trim_end_matches('/').to_owned(), config))
            }
            Err(e) => {
                slot.event_mut().reason = Some(e.to_string());
                slot.event_mut().outcome_mut().status = Some(e.status().as_u16());
                slot.finish();
                Err(e)
            }
        }
    }

    fn mint(
        &self,
        location: &lakegate_core::credentials::S3Location,
        binding: TableBinding,
    ) -> Result<(String, Map<String, Value>), IcebergError> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let permission = if binding.write { Permission::ReadWrite } else { Permission::Read };
        let claims = SessionClaims {
            scope: Scope::Grants(vec![ScopeGrant::new(location, permission)]),
            expires_at: std::cmp::min(now + CREDENTIALS_SECONDS, self.principal.expires_at),
            principal: self.principal.clone(),
            role: None,
            session_name: Some(format!("iceberg:{}", binding.table)),
            issued_at: now,
            kind: CredentialKind::Table,
            table: Some(binding),
        };
        let creds = lakegate_core::credentials::mint(&self.catalog.keys.current(), &claims)
            .map_err(|e| E::Internal(e.to_string()))?;
        let region = &self.catalog.config.region;
        let mut config = Map::new();
        for (k, v) in [
            ("s3.endpoint", self.catalog.s3_endpoint.clone()),
            ("s3.access-key-id", creds.access_key_id.clone()),
            ("s3.secret-access-key", creds.secret_access_key.expose().to_owned()),
            ("s3.session-token", creds.session_token.clone()),
            ("s3.region", region.clone()),
            ("client.region", region.clone()),
            ("s3.path-style-access", "true".to_owned()),
            ("s3.session-token-expires-at-ms", (claims.expires_at * 1000).to_string()),
        ] {
            config.insert(k.to_owned(), Value::String(v));
        }
        Ok((creds.access_key_id, config))
    }

    /// Reads a table's current metadata: `None` when the table does not exist.
    async fn current(&self, t: &TableName) -> Result<Option<(String, Value)>, IcebergError> {
        let Some(file) = self.state().table(&t.schema, &t.name).await? else { return Ok(None) };
        let metadata = self.catalog.files.read_metadata(&file).await?;
        Ok(Some((file, metadata)))
    }

    async fn load_table(&self, t: &TableName, head: bool, rid: &str) -> Result<Response<Body>, IcebergError> {
        let slot =
            self.decide("iceberg:LoadTable", "SelectTable", &table_resource(t), E::NoSuchTable(t.to_string())).await?;
        let result = async {
            if head {
                return match self.state().table(&t.schema, &t.name).await? {
                    Some(_) => Ok(no_content(rid)),
                    None => Err(E::NoSuchTable(t.to_string())),
                };
            }
            let (file, metadata) = self.current(t).await?.ok_or_else(|| E::NoSuchTable(t.to_string()))?;
            self.load_result(t, Some(file), metadata, rid).await
        }
        .await;
        finish(slot, result, rid)
    }

    async fn load_credentials(&self, t: &TableName, rid: &str) -> Result<Response<Body>, IcebergError> {
        let slot = self
            .decide("iceberg:LoadCredentials", "SelectTable", &table_resource(t), E::NoSuchTable(t.to_string()))
            .await?;
        let result = async {
            let (_, metadata) = self.current(t).await?.ok_or_else(|| E::NoSuchTable(t.to_string()))?;
            let (prefix, config) = self.vend(t, &metadata).await?;
            Ok(h::json(StatusCode::OK, &json!({"storage-credentials": [{"prefix": prefix, "config": config}]}), rid))
        }
        .await;
        finish(slot, result, rid)
    }

    async fn report_metrics(&self, t: &TableName, rid: &str) -> Result<Response<Body>, IcebergError> {
        // Engines report scan and commit metrics; Lakegate's own records already say what was read and by whom.
        let slot = self
            .decide("iceberg:ReportMetrics", "SelectTable", &table_resource(t), E::NoSuchTable(t.to_string()))
            .await?;
        finish(slot, Ok(no_content(rid)), rid)
    }

    async fn commit_table(&self, t: &TableName, body: Value, rid: &str) -> Result<Response<Body>, IcebergError> {
        #[derive(Deserialize)]
        struct Req {
            #[serde(default)]
            requirements: Vec<Value>,
            #[serde(default)]
            updates: Vec<Value>,
        }
        let req: Req = request(body, "CommitTableRequest")?;
        let creates = req.requirements.iter().any(|r| r.get("type").and_then(Value::as_str) == Some("assert-create"));
        let (operation, action) =
            if creates { ("iceberg:CreateTable", "CreateTable") } else { ("iceberg:CommitTable", "CommitTable") };
        let slot = self.decide_on_table(operation, action, t, "commit to table").await?;
        let result = if creates {
            self.commit_create(t, &req.requirements, &req.updates, rid).await
        } else {
            self.commit_update(t, &req.requirements, &req.updates, rid).await
        };
        finish(slot, result, rid)
    }

    /// The commit of a staged create: the table is made from the updates alone.
    async fn commit_create(
        &self,
        t: &TableName,
        requirements: &[Value],
        updates: &[Value],
        rid: &str,
    ) -> Result<Response<Body>, IcebergError> {
        if self.state().namespace(&t.schema).await?.is_none() {
            return Err(E::NoSuchNamespace(t.schema.clone()));
        }
        let existing = self.current(t).await?;
        metadata::check_requirements(existing.as_ref().map(|(_, m)| m), requirements)?;
        let mut m = metadata::empty_for_create();
        metadata::apply_updates(&mut m, updates, &|loc| self.is_assigned_location(t, loc))?;
        let location = match m.get("location").and_then(Value::as_str) {
            // The location the stage-create answered (checked by set-location's rule), if no table took it since.
            Some(given) => {
                let given = given.trim_end_matches('/').to_owned();
                if self.state().any_table_under(&format!("{given}/")).await? {
                    return Err(E::CommitFailed(format!("another table already lives at {given}")));
                }
                given
            }
            None => self.fresh_location(t).await?,
        };
        if let Some(obj) = m.as_object_mut() {
            obj.insert("location".into(), json!(location));
            if !obj.get("table-uuid").is_some_and(Value::is_string) {
                obj.insert("table-uuid".into(), json!(uuid::Uuid::new_v4().to_string()));
            }
            if obj.get("schemas").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                return Err(E::BadRequest("a new table needs a schema".into()));
            }
            if obj.get("partition-specs").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                obj.insert("partition-specs".into(), json!([{"spec-id": 0, "fields": []}]));
            }
            if obj.get("sort-orders").and_then(Value::as_array).is_none_or(Vec::is_empty) {
                obj.insert("sort-orders".into(), json!([{"order-id": 0, "fields": []}]));
            }
        }
        let file = self.catalog.files.write_metadata(&location, 0, &m).await?;
        if let Err(e) = self.state().create_table(&t.schema, &t.name, &file).await {
            self.catalog.files.delete(&file).await;
            return Err(match e {
                StateError::TableExists(_) => E::CommitFailed(format!("table {t} was created by another commit")),
                e => e.into(),
            });
        }
        Ok(h::json(StatusCode::OK, &json!({"metadata-location": file, "metadata": m}), rid))
    }

    async fn commit_update(
        &self,
        t: &TableName,
        requirements: &[Value],
        updates: &[Value],
        rid: &str,
    ) -> Result<Response<Body>, IcebergError> {
        let (file, base) = self.current(t).await?.ok_or_else(|| E::NoSuchTable(t.to_string()))?;
        metadata::check_requirements(Some(&base), requirements)?;
        let mut m = base.clone();
        let location = base.get("location").and_then(Value::as_str).unwrap_or_default().to_owned();
        metadata::apply_updates(&mut m, updates, &|loc| loc.trim_end_matches('/') == location.trim_end_matches('/'))?;
        if let Some(obj) = m.as_object_mut() {
            let log = obj.entry("metadata-log").or_insert_with(|| json!([]));
            if let Some(log) = log.as_array_mut() {
                log.push(json!({"metadata-file": file, "timestamp-ms": base.get("last-updated-ms").cloned().unwrap_or(json!(0))}));
            }
        }
        let version = metadata::file_version(&file).map_or(1, |v| v + 1);
        let new_file = self.catalog.files.write_metadata(&location, version, &m).await?;
        if !self.state().swap_table(&t.schema, &t.name, &file, &new_file).await? {
            self.catalog.files.delete(&new_file).await;
            return Err(E::CommitFailed(format!("table {t} was changed by another commit; refresh and retry")));
        }
        Ok(h::json(StatusCode::OK, &json!({"metadata-location": new_file, "metadata": m}), rid))
    }

    async fn drop_table(&self, t: &TableName, rid: &str) -> Result<Response<Body>, IcebergError> {
        let slot = self.decide_on_table("iceberg:DropTable", "DropTable", t, "drop table").await?;
        let result = self.state().drop_table(&t.schema, &t.name).await.map(|()| no_content(rid)).map_err(E::from);
        finish(slot, result, rid)
    }

    async fn rename_table(&self, body: Value, rid: &str) -> Result<Response<Body>, IcebergError> {
        #[derive(Deserialize)]
        struct Ident {
            namespace: Vec<String>,
            name: String,
        }
        #[derive(Deserialize)]
        struct Req {
            source: Ident,
            destination: Ident,
        }
        let req: Req = request(body, "RenameTableRequest")?;
        let ident = |i: &Ident| match i.namespace.as_slice() {
            [ns] => table(ns, &i.name),
            _ => Err(E::BadRequest("multi-level namespaces are not supported: use one level".into())),
        };
        let (from, to) = (ident(&req.source)?, ident(&req.destination)?);
        // Renaming takes the table away from one name and creates it under the other: both are decided, in one
        // record.
        let questions = [("RenameTable", table_resource(&from)), ("CreateTable", table_resource(&to))];
        let label = format!("{} -> {}", table_resource(&from), table_resource(&to));
        let gate = self.gate();
        let slot =
            match gate.authorize_all(self.origin, self.principal, "iceberg:RenameTable", &label, &questions).await {
                Ok(allowed) => allowed.slot,
                Err(GateError::Denied(_)) => {
                    return Err(self.forbidden(format!("rename {from} to {to}")));
                }
                Err(e) => return Err(e.into()),
            };
        let result = self
            .state()
            .rename_table((&from.schema, &from.name), (&to.schema, &to.name))
            .await
            .map(|()| no_content(rid))
            .map_err(|e| match e {
                StateError::TableExists(t) => E::AlreadyExists(format!("table {t} already exists")),
                e => e.into(),
            });
        finish(slot, result, rid)
    }

    async fn register_table(&self, ns: &str, body: Value, rid: &str) -> Result<Response<Body>, IcebergError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "kebab-case")]
        struct Req {
            name: String,
            metadata_location: String,
            #[serde(default)]
            overwrite: bool,
        }
        let req: Req = request(body, "RegisterTableRequest")?;
        let t = TableName::new(ns, &name(&req.name)?);
        let slot = self.decide_on_table("iceberg:RegisterTable", "RegisterTable", &t, "register table").await?;
        let result = async {
            if req.overwrite {
                return Err(E::BadRequest("overwrite is not supported: drop the table first".into()));
            }
            let metadata = self.catalog.files.read_metadata(&req.metadata_location).await?;
            let location = metadata.get("location").and_then(Value::as_str).unwrap_or_default();
            // Files elsewhere could be another table's, or data no table governs: registering them would hand
            // out credentials for them.
            let base = format!("{}{}/{}", self.catalog.config.location_prefix(), t.schema, t.name);
            let inside = format!("{}/", location.trim_end_matches('/'));
            if !self.is_assigned_location(&t, location) || !req.metadata_location.starts_with(&inside) {
                return Err(E::BadRequest(format!(
                    "a registered table must live at {base}-<8 hex digits> in this warehouse, its metadata file inside it"
                )));
            }
            if self.state().any_table_under(&inside).await? {
                return Err(E::AlreadyExists(format!("another table already lives at {inside}")));
            }
            if self.state().namespace(ns).await?.is_none() {
                return Err(E::NoSuchNamespace(ns.to_owned()));
            }
            self.state().create_table(ns, &t.name, &req.metadata_location).await.map_err(|e| match e {
                StateError::TableExists(_) => E::AlreadyExists(format!("table {t} already exists")),
                e => e.into(),
            })?;
            self.load_result(&t, Some(req.metadata_location.clone()), metadata, rid).await
        }
        .await;
        finish(slot, result, rid)
    }
}

#[cfg(test)]
mod send_check {
    fn assert_send<T: Send>(_: T) {}
    #[allow(dead_code)]
    fn all_futures_are_send(c: &super::Call<'_>, t: &super::TableName, v: serde_json::Value) {
        assert_send(c.load_table(t, false, ""));
        assert_send(c.commit_table(t, v.clone(), ""));
        assert_send(c.create_table("x", v.clone(), ""));
        assert_send(c.list_namespaces(&Default::default(), ""));
        assert_send(c.list_tables("x", ""));
        assert_send(c.rename_table(v.clone(), ""));
        assert_send(c.register_table("x", v.clone(), ""));
        assert_send(c.load_credentials(t, ""));
        assert_send(c.drop_table(t, ""));
        assert_send(c.load_namespace("x", false, ""));
        assert_send(c.update_namespace("x", v, ""));
    }
}

//! One client's session and the road every statement takes through the SQL front:
//! parse and rewrite (with the principal's data filters) -> audit slot -> backend -> stream rows.
//!
//! Both fronts (PostgreSQL wire and Trino HTTP) drive a [`Session`]; they differ only in how they read
//! statements and write rows.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::task::Poll;

use futures::Stream;

use super::SqlService;
use super::backend::{Backend, Ended, IsolationLevel, Parameterised, SavepointOp, Transaction, TransactionOptions};
pub use super::bind::Param;
use super::bind::{self, Template, bind, bind_text, placeholder_count};
use super::error::SqlError;
use super::introspect;
use super::lift::{Lifted, lift, tokenize};
use super::rewrite::{
    Deallocation, Discarded, Operation, Released, RewriteError, Rewriter, RewrittenStatement, SessionCommand,
    StatementKind, TableName, TransactionCommand,
};
use super::rows::{Cell, Column, ColumnType, RowSet};
use lakegate_core::audit::{AuditEvent, AuditSlot, Front, SqlAudit};
use lakegate_core::gate::{FilterCache, GateError, Origin, Refusal, StatementDecision};
use lakegate_core::identity::{KeptToken, Principal};
use lakegate_core::policy::StoreId;
use sqlparser::tokenizer::Token;

/// The server version reported to clients (`server_version`, `version()`): the PostgreSQL dialect Lakegate
/// speaks, so drivers pick their PostgreSQL 16 code paths.
pub const SERVER_VERSION: &str = "16.6";

/// A connected, authenticated client.
#[derive(Debug)]
pub struct Session {
    service: Arc<SqlService>,
    principal: Principal,
    /// The token a wire client authenticated with, verified again before each statement runs (see
    /// [`Session::with_token`]); `None` for a session that lives for one request (the Trino front's).
    token: Option<KeptToken>,
    source: Option<String>,
    /// Settings the client changed with SET (lower-case names).
    settings: BTreeMap<String, String>,
    /// The client's open transaction block, if any.
    transaction: Option<OpenTransaction>,
    /// Compiled table filters of this session's principal, for the policy set they were compiled under.
    filters: std::sync::Mutex<FilterCache>,
    /// How catalog queries name types: as PostgreSQL (the wire front) or as Trino (the HTTP front).
    catalog_form: introspect::CatalogForm,
    /// How many bytes of a query's rows are read ahead of the client (see [`crate::read_ahead`]); 0: none.
    read_ahead: usize,
    /// The catalog context this session's last catalog query ran on, for the next one over the same view.
    kept_catalog: introspect::KeptCatalog,
    /// The parameter types the backends inferred for this session's statements, by backend and rewritten text;
    /// made at the first use (only the extended protocol asks, and the Trino front makes a session per statement).
    parameter_types: std::sync::OnceLock<ParameterTypes>,
    /// The rewrites of this session's principal, by search path and text, each for the policy set it was made
    /// under, shared with the principal's other sessions; found at the first rewrite (see [`Session::rewrite`]).
    rewrites: std::sync::OnceLock<Arc<KeptRewrites>>,
}

/// The kept rewrites of the principals whose sessions came last, each shared by that principal's sessions.
///
/// A rewrite is a function of the text, the search path, the policy set and the principal as policies see it
/// (not of its session or its token), so a session starts with what the principal's sessions before it kept.
/// A client that connects for each statement, and the Trino front, which makes a session per statement, would
/// otherwise parse and rewrite every statement afresh. A session holds its principal's rewrites for its whole
/// life; the map keeps them for `PRINCIPALS_KEPT` principals beyond their sessions.
#[derive(Debug)]
pub(crate) struct SharedRewrites(quick_cache::sync::Cache<Principal, Arc<KeptRewrites>>);

/// How many principals' rewrites outlive their sessions: each at most twice `REWRITES_WEIGHT` of text and
/// `SEEN_ONCE_MAX` hashes, 16 MiB and 2 MiB for all of them.
const PRINCIPALS_KEPT: usize = 32;

impl Default for SharedRewrites {
    fn default() -> Self {
        SharedRewrites(quick_cache::sync::Cache::new(PRINCIPALS_KEPT))
    }
}

impl SharedRewrites {
    /// The rewrites kept for `principal`, made empty for a principal the map does not hold.
    fn of(&self, principal: &Principal) -> Arc<KeptRewrites> {
        use quick_cache::sync::GuardResult;
        match self.0.get_value_or_guard(&principal.as_policies_see_it(), None) {
            GuardResult::Value(kept) => kept,
            GuardResult::Guard(place) => {
                let kept = Arc::new(KeptRewrites::new());
                let _ = place.insert(kept.clone());
                kept
            }
            // Not with no time limit; were it, the session would keep its rewrites alone.
            GuardResult::Timeout => Arc::new(KeptRewrites::new()),
        }
    }
}

/// A principal's kept rewrites, and the texts its sessions have seen once. A text is kept at its second sighting:
/// a driver's parameterised text comes again at its next execution. A text with literals is kept by its shape
/// (see [`crate::lift`]), at the shape's second sighting: most texts sent with the simple protocol carry their
/// literals and never come again, but their shapes do.
#[derive(Debug)]
struct KeptRewrites {
    kept: Rewrites,
    shapes: Shapes,
    /// Hashes of the keys seen once and not kept, forgotten all together when there are `SEEN_ONCE_MAX`.
    seen_once: std::sync::Mutex<HashSet<u64>>,
    hasher: std::hash::RandomState,
}

/// How many texts seen once a session remembers (8 bytes each).
const SEEN_ONCE_MAX: usize = 4096;

impl KeptRewrites {
    fn new() -> Self {
        KeptRewrites {
            kept: Rewrites::with_weighter(64, REWRITES_WEIGHT, KeptWeight),
            shapes: Shapes::with_weighter(64, REWRITES_WEIGHT, KeptWeight),
            seen_once: std::sync::Mutex::default(),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Whether `sighting` was seen before (since the set was last forgotten); remembers it when not.
    fn seen_before(&self, sighting: Sighting<'_>) -> bool {
        let hash = self.hasher.hash_one(sighting);
        let Ok(mut seen) = self.seen_once.lock() else { return false };
        if seen.remove(&hash) {
            return true;
        }
        if seen.len() >= SEEN_ONCE_MAX {
            seen.clear();
        }
        seen.insert(hash);
        false
    }
}

/// A key of [`Rewrites`] or [`Shapes`] borrowed, to look one up without copying its texts: hashes as the
/// `(String, String)` it stands for does.
#[derive(Hash)]
struct TextKey<'a>(&'a str, &'a str);

impl quick_cache::Equivalent<(String, String)> for TextKey<'_> {
    fn equivalent(&self, (search_path, text): &(String, String)) -> bool {
        self.0 == search_path && self.1 == text
    }
}

/// What a session sees of a text: the text, or its shape, which may be the same characters.
#[derive(Hash)]
enum Sighting<'a> {
    Text(TextKey<'a>),
    Shape(TextKey<'a>),
}

/// Rewrites by search path and text.
type Rewrites = quick_cache::sync::Cache<(String, String), Arc<Kept>, KeptWeight>;

/// Rewrites of shapes, by search path and shape text.
type Shapes = quick_cache::sync::Cache<(String, String), Shape, KeptWeight>;

/// A text's rewrite: what it prepared, under which policy set. Only rewrites that passed are kept, so what was
/// decided for it (which a refusal's record names) is not: each governed statement holds its own tables' part.
#[derive(Debug)]
struct Kept {
    store: StoreId,
    prepared: Vec<Prepared>,
}

impl Kept {
    /// The bytes of its texts, original and rewritten.
    fn weight(&self) -> usize {
        self.prepared.iter().map(Prepared::weight).sum()
    }
}

/// A text the rewriter or the policies refused, with what was decided for its tables (the forbids its record
/// names).
struct Refused {
    error: SqlError,
    decision: StatementDecision,
}

/// What a session knows of a shape.
#[derive(Debug, Clone)]
enum Shape {
    /// Its rewrite, checked: bound with the literals of the text it was made from, it was that text's own rewrite;
    /// with the tokens its text reads as, which a tokenized text of this shape text must have to take it (see
    /// [`Lifted::tokens`]).
    Kept { kept: Arc<Kept>, tokens: Arc<[Token]> },
    /// Its rewrite failed or was not the text's own: texts of this shape take the road of their own text.
    Unlifted,
}

/// A kept rewrite weighs its texts, original and rewritten; a shape its tokens.
#[derive(Clone)]
struct KeptWeight;

impl quick_cache::Weighter<(String, String), Arc<Kept>> for KeptWeight {
    fn weight(&self, (search_path, sql): &(String, String), kept: &Arc<Kept>) -> u64 {
        (search_path.len() + sql.len() + kept.weight()) as u64
    }
}

impl quick_cache::Weighter<(String, String), Shape> for KeptWeight {
    fn weight(&self, (search_path, shape): &(String, String), kept: &Shape) -> u64 {
        let kept = match kept {
            Shape::Kept { kept, tokens } => kept.weight() + tokens.len() * TOKEN_WEIGHT,
            Shape::Unlifted => 0,
        };
        (search_path.len() + shape.len() + kept) as u64
    }
}

/// What a token of a kept shape is counted as (its size and a short word's text).
const TOKEN_WEIGHT: usize = 64;

/// The most bytes of text a principal's sessions keep rewrites of, by text and again by shape (with
/// `REWRITE_KEPT_MAX_TEXT`, what one user can hold: twice this).
const REWRITES_WEIGHT: u64 = 256 << 10;
/// The longest text whose rewrite is kept: drivers' prepared statements and dashboards' queries are shorter.
const REWRITE_KEPT_MAX_TEXT: usize = 8 << 10;

/// Parameter types by backend and rewritten text.
type ParameterTypes = quick_cache::sync::Cache<(String, String), Arc<[Option<ColumnType>]>, TypesWeight>;

/// How many statements' parameter types a session keeps, about (pgJDBC keeps 256 prepared statements per
/// connection).
const PARAMETER_TYPES_KEPT: usize = 256;
/// The most bytes of rewritten text a session keeps parameter types for: texts may be long, and each is a key.
const PARAMETER_TYPES_WEIGHT: u64 = 1 << 20;

/// A kept entry of [`ParameterTypes`] weighs its texts.
#[derive(Clone)]
struct TypesWeight;

impl quick_cache::Weighter<(String, String), Arc<[Option<ColumnType>]>> for TypesWeight {
    fn weight(&self, (backend, sql): &(String, String), types: &Arc<[Option<ColumnType>]>) -> u64 {
        (64 + backend.len() + sql.len() + types.len()) as u64
    }
}

/// Savepoints a block keeps before it has a backend connection, to take them there when it gets one.
const MAX_SAVEPOINTS_UNPINNED: usize = 1024;

/// A transaction block the client opened with BEGIN.
///
/// Reads run on the pool as outside a block until the block needs a connection of its own: at its first write,
/// or at its first statement when the client asked for more than READ COMMITTED (whose statements each take a
/// fresh snapshot anyway, so reads before the first write see what they would see on the pinned connection).
/// From then on every statement of the block runs on that connection, and COMMIT or ROLLBACK ends it there.
///
/// Savepoints taken before the block is pinned are only remembered: nothing has been written on any backend yet,
/// so they are taken on the pinned connection right after its BEGIN, which is the same point in the block.
///
/// A pinned block is audited as a block: the records of its statements carry its id, and its savepoint
/// statements and its end have records of their own, which say whether its writes stand (see
/// [`SqlAudit::transaction`]).
#[derive(Debug)]
struct OpenTransaction {
    options: TransactionOptions,
    /// The connection the block runs on, once it has one.
    pinned: Option<Pinned>,
    /// Savepoints taken while not pinned, oldest first.
    savepoints: Vec<String>,
    /// Opened for a request of several statements, not by a BEGIN ([`Session::begin_implicit`]).
    implicit: bool,
    /// The session's settings before the block's first SET or RESET: what a rollback restores.
    settings_before: Option<BTreeMap<String, String>>,
    /// The settings a SET LOCAL changed, with the value each takes back at COMMIT (`None`: unset).
    local_until_commit: BTreeMap<String, Option<String>>,
}

impl OpenTransaction {
    fn new(options: TransactionOptions, implicit: bool) -> Self {
        OpenTransaction {
            options,
            pinned: None,
            savepoints: Vec::new(),
            implicit,
            settings_before: None,
            local_until_commit: BTreeMap::new(),
        }
    }
}

/// The backend connection a transaction block is pinned to.
#[derive(Debug)]
struct Pinned {
    backend: String,
    transaction: Arc<dyn Transaction>,
    /// The block's id in the audit log.
    id: String,
}

/// A statement ready to run: rewritten, or answered by the gateway itself.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The client's text of the whole request.
    pub original: String,
    pub kind: PreparedKind,
    /// The literals lifted from the client's text when it runs as the rewrite of its shape (see [`crate::lift`]):
    /// bound in place of parameters, of which such a text has none.
    literals: Vec<Param>,
}

impl Prepared {
    /// The prepared statements a `DEALLOCATE` drops, if this is one: the wire front keeps them and answers it.
    pub fn deallocation(&self) -> Option<&Deallocation> {
        match &self.kind {
            PreparedKind::Session { command: SessionCommand::Deallocate(which), .. } => Some(which),
            _ => None,
        }
    }

    /// Whether this is BEGIN, COMMIT, ROLLBACK, a savepoint's statement or SET TRANSACTION.
    pub fn controls_transaction(&self) -> bool {
        matches!(&self.kind, PreparedKind::Session { command: SessionCommand::Transaction(_), .. })
    }

    /// Whether this is `DISCARD ALL`, after which the front that keeps prepared statements drops them all.
    pub fn discards_all(&self) -> bool {
        matches!(&self.kind, PreparedKind::Session { command: SessionCommand::Discard(Discarded::All), .. })
    }

    /// A governed read. The rewriter admits no function with an effect into a read, so running one early (see
    /// the wire front's Describe) changes nothing but when its rows are produced.
    pub fn is_query(&self) -> bool {
        matches!(&self.kind, PreparedKind::Governed(g) if g.statement.kind == StatementKind::Query)
    }

    /// The highest `$n` of the client's text: how many parameters a client binds. Counted once for a governed
    /// statement (a session keeps its rewrites, and drivers parse the same text for every execution).
    pub fn placeholders(&self) -> usize {
        if !self.literals.is_empty() {
            return 0;
        }
        match &self.kind {
            PreparedKind::Governed(g) => *g.placeholders.get_or_init(|| placeholder_count(&self.original)),
            _ => placeholder_count(&self.original),
        }
    }

    /// What its parameters are bound to: the literals lifted from the client's text if it has them, else `params`.
    fn values<'a>(&'a self, params: &'a [Param]) -> &'a [Param] {
        if self.literals.is_empty() { params } else { &self.literals }
    }

    /// About the bytes it takes: its texts, the client's and the one sent on, and what goes with them.
    pub fn weight(&self) -> usize {
        256 + self.original.len() + self.rewritten_len()
    }

    /// The length of the text sent on for it.
    fn rewritten_len(&self) -> usize {
        match &self.kind {
            PreparedKind::Governed(g) => g.statement.sql.len(),
            PreparedKind::Session { text, .. } => text.len(),
            PreparedKind::Introspect(sql) => sql.len(),
        }
    }
}

/// What a prepared statement does.
#[derive(Debug, Clone)]
pub enum PreparedKind {
    /// A governed statement for a backend.
    Governed(Arc<Governed>),
    /// A session statement the gateway answers itself.
    Session { command: SessionCommand, text: String },
    /// A catalog query answered from the governed catalog.
    Introspect(String),
}

/// A rewritten statement and what is needed to audit it.
#[derive(Debug, Clone)]
pub struct Governed {
    pub statement: RewrittenStatement,
    pub backend: String,
    /// The policy set it was rewritten under (see [`Session::run_kept`]).
    store: StoreId,
    /// What the gate decided for the statement's tables (the permits behind the filters used).
    pub decision: StatementDecision,
    /// Its text cut at its parameters, made at its first execution with parameters (shared by the statement's
    /// copies: a session keeps its rewrites).
    template: std::sync::OnceLock<Option<Template>>,
    /// The highest `$n` of the client's text, counted at its first Parse (see [`Prepared::placeholders`]).
    placeholders: std::sync::OnceLock<usize>,
    /// Whether its parameters may be sent apart from its text (see [`bind::parameters_read_as_literals`]).
    parameters_read_as_literals: std::sync::OnceLock<bool>,
    /// What each execution's record shares.
    audit: AuditParts,
}

impl Governed {
    fn parameters_read_as_literals(&self) -> bool {
        *self.parameters_read_as_literals.get_or_init(|| bind::parameters_read_as_literals(&self.statement.statement))
    }

    /// The text to send on with `params` bound.
    fn bound(&self, params: &[Param]) -> Result<String, SqlError> {
        if params.is_empty() {
            return Ok(self.statement.sql.clone());
        }
        match self.template.get_or_init(|| Template::new(&self.statement.statement, &self.statement.sql)) {
            Some(template) => template.bind(params),
            None => bind(&self.statement.statement, params),
        }
    }
}

/// The result of one statement.
pub enum Outcome {
    Rows(RowSet),
    /// A command without rows: its tag (`SET`, `BEGIN`, `INSERT 0 3`...).
    Command(String),
    /// BEGIN / COMMIT / ROLLBACK, so the front can report the transaction state.
    Transaction {
        tag: String,
        open: bool,
    },
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Rows(r) => f.debug_tuple("Rows").field(&r.columns).finish(),
            Outcome::Command(t) => f.debug_tuple("Command").field(t).finish(),
            Outcome::Transaction { tag, open } => {
                f.debug_struct("Transaction").field("tag", tag).field("open", open).finish()
            }
        }
    }
}

/// Why a block still open when its session ends is rolled back.
const SESSION_ENDED: &str = "ROLLBACK (the session ended inside the block)";

impl Drop for Session {
    /// A session a front did not [`close`](Session::close) (its task was dropped): the rollback's record is queued
    /// from a task of its own.
    fn drop(&mut self) {
        if let Some(record) = self.abandon_block(SESSION_ENDED) {
            spawn_record(record);
        }
    }
}

/// Queues the record of an abandoned block from where no one can wait for it.
fn spawn_record(record: impl Future<Output = ()> + Send + 'static) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(record);
    } else {
        tracing::error!("no runtime to record the rollback of an abandoned block on");
    }
}

impl Session {
    /// A session for an authenticated principal.
    pub fn new(service: Arc<SqlService>, principal: Principal, source: Option<String>) -> Self {
        Session {
            service,
            principal,
            token: None,
            source,
            settings: BTreeMap::new(),
            transaction: None,
            filters: std::sync::Mutex::new(FilterCache::default()),
            catalog_form: introspect::CatalogForm::Postgres,
            read_ahead: 0,
            kept_catalog: introspect::KeptCatalog::default(),
            parameter_types: std::sync::OnceLock::new(),
            rewrites: std::sync::OnceLock::new(),
        }
    }

    /// A session that lives as long as `token` holds: each statement verifies it again before it runs (a token
    /// seen before costs a cache lookup), as the HTTP fronts verify each request's, so that a token that expires,
    /// or whose signing key or issuer stops being trusted, ends the session at its next statement rather than at
    /// the client's leisure.
    pub fn with_token(mut self, token: &str) -> Self {
        self.token = Some(KeptToken::new(token));
        self
    }

    /// The session of a front whose clients read the catalog in `form`.
    pub fn with_catalog_form(mut self, form: introspect::CatalogForm) -> Self {
        self.catalog_form = form;
        self
    }

    /// The session of a front whose clients fetch rows at their own pace: each query's rows are read up to
    /// `bytes` ahead of its client, so that a result that fits gives its backend connection back at once.
    pub fn with_read_ahead(mut self, bytes: usize) -> Self {
        self.read_ahead = bytes;
        self
    }

    /// Where a query's rows read ahead go when its client is a read-ahead behind and others wait for `backend`'s
    /// connections: disk, if the front has any for them.
    fn spill(&self, backend: &Arc<dyn Backend>) -> Option<crate::read_ahead::Spill> {
        let disk = self.service.trino_spill.clone().filter(|_| self.read_ahead > 0)?;
        let backend = backend.clone();
        Some(crate::read_ahead::Spill { disk, awaited: Arc::new(move || backend.connections_awaited()) })
    }

    /// The authenticated principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Whether the client opened a transaction block.
    pub fn in_transaction(&self) -> bool {
        self.transaction.is_some()
    }

    /// The search path for unqualified names.
    fn search_path(&self) -> Vec<String> {
        let raw = self.settings.get("search_path").map(String::as_str).unwrap_or(DEFAULT_SEARCH_PATH);
        raw.split(',')
            .map(|s| s.trim().trim_matches('"').to_owned())
            .filter(|s| !s.is_empty() && s != "$user")
            .collect()
    }

    fn origin(&self, request_id: &str) -> Origin {
        Origin { front: Front::Sql, request_id: request_id.to_owned(), source: self.source.clone() }
    }

    /// Parses and rewrites a request. Every statement must pass; a refusal is audited and returned.
    pub async fn prepare(&self, sql: &str, request_id: &str) -> Result<Vec<Prepared>, SqlError> {
        if sql.len() > self.service.settings.max_statement_bytes {
            let err = SqlError::Rewrite(RewriteError::TooLong {
                len: sql.len(),
                max: self.service.settings.max_statement_bytes,
            });
            return Err(self.refused(sql, request_id, None, err).await);
        }
        // A text read before as one catalog query that passed the check is one again: no parse.
        let readings = &self.service.catalog_readings;
        let known = readings.known(sql);
        if known || introspect::is_catalog_query(sql) {
            if !known {
                if let Some(parts) = introspect::statements(sql) {
                    return self.prepare_each(sql, &parts, request_id).await;
                }
                // A catalog query naming a data table or a catalog the gateway lacks is refused here, so that
                // the refusal is recorded like any other.
                if let Err(e) = readings.read(sql) {
                    return Err(self.refused(sql, request_id, None, e).await);
                }
            }
            let kind = PreparedKind::Introspect(sql.to_owned());
            return Ok(vec![Prepared { original: sql.to_owned(), kind, literals: Vec::new() }]);
        }
        match self.rewrite(sql) {
            Ok(list) => Ok(list),
            Err(refused) => {
                let Refused { error, decision } = *refused;
                Err(self.refused(sql, request_id, Some(&decision), error).await)
            }
        }
    }

    /// A request of several statements among which catalog queries (Npgsql's type loading is `SELECT version()`
    /// and three catalog queries in one message): each statement takes its own road, catalog or rewriter, and all
    /// of them must pass before any runs, as for a request the rewriter takes whole.
    async fn prepare_each(&self, sql: &str, parts: &[String], request_id: &str) -> Result<Vec<Prepared>, SqlError> {
        let mut prepared = Vec::with_capacity(parts.len());
        for part in parts {
            if introspect::is_catalog_query(part) {
                if let Err(e) = self.service.catalog_readings.read(part) {
                    return Err(self.refused(sql, request_id, None, e).await);
                }
                let kind = PreparedKind::Introspect(part.clone());
                prepared.push(Prepared { original: part.clone(), kind, literals: Vec::new() });
            } else {
                match self.rewrite(part) {
                    Ok(list) => prepared.extend(list),
                    Err(refused) => {
                        let Refused { error, decision } = *refused;
                        return Err(self.refused(sql, request_id, Some(&decision), error).await);
                    }
                }
            }
        }
        Ok(prepared)
    }

    /// The synchronous part: rewriting with the filters the gate decides under the policy set in force now.
    ///
    /// A rewrite is a function of the text, the search path, the principal as policies see it and the policy set
    /// (its filters and catalog), so the principal's sessions keep the rewrites of their texts and use one again
    /// while the policy set it was made under is the one in force: drivers parse the same parameterised text for
    /// every execution, dashboards send the same queries again, and clients that connect per statement send the
    /// same shapes in each session ([`SharedRewrites`]). A text with literals is kept by its shape, and
    /// runs as the shape's rewrite bound with its own literals (see [`crate::lift`]). A policy edit makes a new
    /// set, and the next text is rewritten under it. Refusals are never kept (each is recorded anew).
    fn rewrite(&self, sql: &str) -> Result<Vec<Prepared>, Box<Refused>> {
        let policy = self.service.gate.statement_policy(&self.principal, &self.filters);
        if sql.len() > REWRITE_KEPT_MAX_TEXT {
            return self.rewrite_afresh(sql, policy);
        }
        let rewrites = self.rewrites.get_or_init(|| self.service.rewrites.of(&self.principal));
        let search_path = self.settings.get("search_path").map_or("", String::as_str);
        let key = TextKey(search_path, sql);
        if let Some(hit) = rewrites.kept.get(&key).filter(|hit| hit.store.is(policy.store())) {
            return Ok(hit.prepared.clone());
        }
        let mut lifted = lift(sql);
        if let Some(l) = &lifted {
            match rewrites.shapes.get(&TextKey(search_path, &l.shape)) {
                Some(Shape::Kept { kept: hit, tokens })
                    if hit.store.is(policy.store()) && l.tokens.as_deref().is_none_or(|t| *t == *tokens) =>
                {
                    let prepared = hit
                        .prepared
                        .iter()
                        .map(|p| Prepared {
                            original: sql.to_owned(),
                            kind: p.kind.clone(),
                            literals: l.literals.clone(),
                        })
                        .collect();
                    return Ok(prepared);
                }
                Some(Shape::Unlifted) => lifted = None,
                _ => {}
            }
        }
        let store = StoreId::of(policy.store());
        let list = self.rewrite_afresh(sql, policy)?;
        match lifted {
            Some(lifted) => {
                if rewrites.seen_before(Sighting::Shape(TextKey(search_path, &lifted.shape)))
                    && let Some(kept) = self.rewrite_shape(&lifted, &list, store)
                {
                    rewrites.shapes.insert((search_path.to_owned(), lifted.shape), kept);
                }
            }
            None => {
                if rewrites.seen_before(Sighting::Text(key)) {
                    let kept = Arc::new(Kept { store, prepared: list.clone() });
                    rewrites.kept.insert((search_path.to_owned(), sql.to_owned()), kept);
                }
            }
        }
        Ok(list)
    }

    /// The rewrite of a text's shape, kept only when its shape's text reads as its shape and, bound with the
    /// text's literals, it is `own`, the text's own rewrite under `store`, and only for reads. `None` when the
    /// policy set changed meanwhile (nothing is known).
    fn rewrite_shape(&self, lifted: &Lifted, own: &[Prepared], store: StoreId) -> Option<Shape> {
        let Some(tokens) = tokenize(&lifted.shape) else { return Some(Shape::Unlifted) };
        if lifted.tokens.as_ref().is_some_and(|shape| *shape != tokens) {
            return Some(Shape::Unlifted);
        }
        let policy = self.service.gate.statement_policy(&self.principal, &self.filters);
        if !store.is(policy.store()) {
            return None;
        }
        let Ok(prepared) = self.rewrite_afresh(&lifted.shape, policy) else {
            return Some(Shape::Unlifted);
        };
        let reads = |p: &Prepared| match &p.kind {
            PreparedKind::Governed(g) if g.statement.kind == StatementKind::Query => Some(g.clone()),
            _ => None,
        };
        let same = prepared.len() == own.len()
            && prepared.iter().zip(own).all(|(shaped, own)| match (reads(shaped), reads(own)) {
                (Some(shaped), Some(own)) => {
                    shaped.backend == own.backend
                        && shaped.bound(&lifted.literals).is_ok_and(|sql| sql == own.statement.sql)
                }
                _ => false,
            });
        Some(match same {
            true => Shape::Kept { kept: Arc::new(Kept { store, prepared }), tokens: tokens.into() },
            false => Shape::Unlifted,
        })
    }

    fn rewrite_afresh(
        &self,
        sql: &str,
        policy: lakegate_core::gate::StatementPolicy<'_>,
    ) -> Result<Vec<Prepared>, Box<Refused>> {
        let store = StoreId::of(policy.store());
        let catalog = self.service.catalogs.for_store(policy.store());
        let lookup = |table: &TableName, op: Operation| policy.table_filter(table, op.table_op());
        let typed = |table: &TableName| {
            let def = policy.catalog().table(&table.schema, &table.name);
            def.is_some_and(|d| self.service.backends.types_comparisons_at_planning(&d.backend))
        };
        let rewriter = Rewriter::new(&catalog, &lookup)
            .with_search_path(self.search_path())
            .with_limits(
                self.service.settings.max_statement_bytes,
                super::rewrite::DEFAULT_PARSER_DEPTH,
                super::rewrite::DEFAULT_MAX_DEPTH,
                super::rewrite::DEFAULT_MAX_STACK,
            )
            .with_comparisons_unfenced(&typed);
        let rewritten = rewriter.rewrite(sql);
        let backends: Result<Vec<String>, SqlError> = match &rewritten {
            Ok(r) => r.statements.iter().map(|s| backend_of(policy.catalog(), &s.tables)).collect(),
            Err(_) => Ok(Vec::new()),
        };
        let decision = policy.finish();
        if let Some(e) = decision.policy_error() {
            // Fail closed: the tables concerned were treated as not permitted; the statement is refused.
            let error = SqlError::Policy(e.to_string());
            return Err(Box::new(Refused { error, decision }));
        }
        match (rewritten, backends) {
            (Ok(rewritten), Ok(backends)) => Ok(rewritten
                .statements
                .into_iter()
                .zip(backends)
                .map(|(statement, backend)| {
                    let kind = match &statement.kind {
                        StatementKind::Session(cmd) => {
                            PreparedKind::Session { command: cmd.clone(), text: statement.sql.clone() }
                        }
                        _ => {
                            let decision = decision.for_tables(&statement.tables);
                            PreparedKind::Governed(Arc::new(Governed {
                                audit: AuditParts::of(&statement),
                                statement,
                                backend,
                                store: store.clone(),
                                decision,
                                template: Default::default(),
                                placeholders: Default::default(),
                                parameters_read_as_literals: Default::default(),
                            }))
                        }
                    };
                    Prepared { original: sql.to_owned(), kind, literals: Vec::new() }
                })
                .collect()),
            (Err(e), _) => Err(Box::new(Refused { error: e.into(), decision })),
            (_, Err(error)) => Err(Box::new(Refused { error, decision })),
        }
    }

    /// Audits a refusal; if the audit log cannot take it, that is the error the client sees.
    async fn refused(
        &self,
        sql: &str,
        request_id: &str,
        decision: Option<&StatementDecision>,
        err: SqlError,
    ) -> SqlError {
        let audit = SqlAudit { original: sql.to_owned(), ..Default::default() };
        let (reason, sqlstate) = (err.to_string(), err.sqlstate().to_owned());
        let refusal =
            if err.is_denial() { Refusal::Denied { reason, sqlstate } } else { Refusal::Invalid { reason, sqlstate } };
        let origin = self.origin(request_id);
        match self.service.gate.refuse_statement(&origin, &self.principal, decision, audit, refusal).await {
            Ok(()) => err,
            Err(e) => SqlError::AuditUnavailable(e.to_string()),
        }
    }

    /// The result columns of a prepared statement, without running it.
    pub async fn describe(&self, prepared: &Prepared) -> Result<Vec<Column>, SqlError> {
        match &prepared.kind {
            PreparedKind::Governed(g) => match g.statement.kind {
                StatementKind::Query => {
                    let backend = self.describing_backend(&g.backend)?;
                    backend.describe(&g.bound(&prepared.literals)?).await
                }
                _ => Ok(Vec::new()),
            },
            PreparedKind::Session { command, .. } => Ok(session_columns(command)),
            PreparedKind::Introspect(sql) => introspect::describe(&self.service.catalog_readings, sql).await,
        }
    }

    /// The types the backend infers for a prepared statement's `$n` parameters.
    ///
    /// Clients that send parameters untyped (libpq's `PQexecParams`, psycopg 3's strings) parse the same text
    /// again and again, and asking the backend each time costs a round trip per statement. A session keeps what
    /// its backends answered: a text parsed again after its table was altered keeps the types of its first Parse,
    /// as a prepared statement keeps them in PostgreSQL.
    pub async fn parameter_types(&self, prepared: &Prepared) -> Result<Arc<[Option<ColumnType>]>, SqlError> {
        let g = match &prepared.kind {
            PreparedKind::Governed(g) => g,
            PreparedKind::Introspect(sql) => {
                return Ok(introspect::parameter_types(&self.service.catalog_readings, sql).await.into());
            }
            PreparedKind::Session { .. } => return Ok(Arc::new([])),
        };
        if !prepared.literals.is_empty() {
            return Ok(Arc::new([]));
        }
        let kept = self
            .parameter_types
            .get_or_init(|| ParameterTypes::with_weighter(PARAMETER_TYPES_KEPT, PARAMETER_TYPES_WEIGHT, TypesWeight));
        let key = (g.backend.clone(), g.statement.sql.clone());
        if let Some(types) = kept.get(&key) {
            return Ok(types);
        }
        let types: Arc<[Option<ColumnType>]> =
            self.describing_backend(&g.backend)?.parameter_types(&g.statement.sql).await?.into();
        kept.insert(key, types.clone());
        Ok(types)
    }

    /// The result columns of a prepared statement once its parameters are bound.
    pub async fn describe_bound(&self, prepared: &Prepared, params: &[Param]) -> Result<Vec<Column>, SqlError> {
        match &prepared.kind {
            PreparedKind::Governed(g) if g.statement.kind == StatementKind::Query => {
                let sql = g.bound(prepared.values(params))?;
                self.describing_backend(&g.backend)?.describe(&sql).await
            }
            _ => self.describe(prepared).await,
        }
    }

    fn backend(&self, name: &str) -> Result<Arc<dyn super::backend::Backend>, SqlError> {
        self.service
            .backends
            .get(name)
            .ok_or_else(|| SqlError::BackendUnavailable(format!("no backend named {name:?} is configured")))
    }

    /// Where a statement is described or its parameters typed: on the connection the transaction block is pinned
    /// to, if it is pinned to this backend, else on the pool. The block holds a connection of the pool, which may
    /// have no other to lend until the block ends: asking the pool from inside it could wait for ever.
    fn describing_backend(&self, name: &str) -> Result<Arc<dyn Backend>, SqlError> {
        if let Some(pinned) = self.transaction.as_ref().and_then(|open| open.pinned.as_ref())
            && pinned.backend == name
        {
            return Ok(pinned.transaction.clone() as Arc<dyn Backend>);
        }
        self.backend(name)
    }

    /// Runs a statement the client prepared in an earlier message: the extended protocol's Parse, whose Bind and
    /// Execute may come at any time later, as they do for a driver's named statements. A governed statement
    /// rewritten under a policy set no longer in force is rewritten again from its text first, so that a policy
    /// edit binds a client's prepared statements at their next execution, as it binds the next text; under the new
    /// set it may be refused, and the refusal is recorded as any other.
    pub async fn run_kept(
        &mut self,
        prepared: &Prepared,
        params: &[Param],
        request_id: &str,
    ) -> Result<Outcome, SqlError> {
        let PreparedKind::Governed(g) = &prepared.kind else { return self.run(prepared, params, request_id).await };
        let in_force = self.service.gate.statement_policy(&self.principal, &self.filters).store().clone();
        if g.store.is(&in_force) {
            return self.run(prepared, params, request_id).await;
        }
        let mut again = self.prepare(&prepared.original, request_id).await?;
        match (again.pop(), again.is_empty()) {
            (Some(fresh), true) => self.run(&fresh, params, request_id).await,
            // Parse takes one statement, and its text rewrites to one under any policy set.
            _ => Err(SqlError::Internal("a prepared statement's text rewrote to another number of statements".into())),
        }
    }

    /// Runs one prepared statement with its parameters.
    pub async fn run(&mut self, prepared: &Prepared, params: &[Param], request_id: &str) -> Result<Outcome, SqlError> {
        self.still_authenticated(request_id).await?;
        match &prepared.kind {
            PreparedKind::Session { command: SessionCommand::Transaction(command), text } => {
                self.transaction(command, text, request_id).await
            }
            PreparedKind::Session { command, text } => self.session_command(command, text),
            PreparedKind::Introspect(sql) => {
                let sql = bind_text(sql, params)?;
                let origin = self.origin(request_id);
                let catalog = introspect::Catalog { form: self.catalog_form, kept: &mut self.kept_catalog };
                introspect::query(&self.service, &origin, &self.principal, &self.filters, &sql, catalog).await
            }
            PreparedKind::Governed(g) => self.governed(prepared, g, params, request_id).await,
        }
    }

    /// Whether the token of a session that keeps one still holds; a refusal is recorded as a denial (by the gate)
    /// and ends the session.
    async fn still_authenticated(&self, request_id: &str) -> Result<(), SqlError> {
        let Some(token) = &self.token else { return Ok(()) };
        let origin = || self.origin(request_id);
        match self.service.gate.reauthenticate(origin, token, "sql:Statement", "").await {
            Ok(()) => Ok(()),
            Err(GateError::Audit(e)) => Err(SqlError::AuditUnavailable(e.to_string())),
            Err(e) => Err(SqlError::SessionEnded(e.to_string())),
        }
    }

    async fn governed(
        &mut self,
        prepared: &Prepared,
        g: &Governed,
        params: &[Param],
        request_id: &str,
    ) -> Result<Outcome, SqlError> {
        let sql = g.bound(prepared.values(params))?;
        let (action, label) = match g.statement.kind {
            StatementKind::Insert => ("sql:Insert", "INSERT 0"),
            StatementKind::Update => ("sql:Update", "UPDATE"),
            StatementKind::Delete => ("sql:Delete", "DELETE"),
            _ => ("sql:Select", "SELECT"),
        };
        let audit = g.audit.record(&prepared.original, &sql);
        // No event, no access: the slot is reserved before the backend sees the statement.
        let mut slot = self
            .service
            .gate
            .admit_statement(&self.origin(request_id), &self.principal, action, &g.decision, audit)
            .await
            .map_err(|e| SqlError::AuditUnavailable(e.to_string()))?;
        let backend = match self.statement_backend(&g.backend, g.statement.kind != StatementKind::Query).await {
            Ok(b) => b,
            Err(e) => return Err(fail(slot, e)),
        };
        // On the block's own connection: what it writes stands or falls with the block.
        if let Some(pinned) = self.transaction.as_ref().and_then(|open| open.pinned.as_ref())
            && let Some(s) = slot.event_mut().sql.as_mut()
        {
            s.transaction = Some(pinned.id.clone());
        }
        let caller = super::backend::Caller { principal: &self.principal, request_id };
        if g.statement.kind != StatementKind::Query {
            return match backend.execute(&sql, &caller).await {
                Ok(n) => {
                    if let Some(s) = slot.event_mut().sql.as_mut() {
                        s.rows = Some(n);
                    }
                    slot.finish();
                    Ok(Outcome::Command(format!("{label} {n}")))
                }
                Err(e) => Err(fail(slot, e)),
            };
        }
        let values = prepared.values(params);
        let rows = if !values.is_empty() && g.parameters_read_as_literals() {
            let query = Parameterised { sql: &g.statement.sql, params: values, bound: &sql };
            backend.query_parameterised(query, &caller).await
        } else {
            backend.query(&sql, &caller).await
        };
        match rows {
            Ok(rows) => Ok(Outcome::Rows(RowSet {
                columns: rows.columns,
                rows: Box::pin(Audited {
                    inner: crate::read_ahead::read_ahead(rows.rows, self.read_ahead, self.spill(&backend)),
                    slot: Some(slot),
                    rows: 0,
                }),
            })),
            Err(e) => Err(fail(slot, e)),
        }
    }

    fn session_command(&mut self, command: &SessionCommand, text: &str) -> Result<Outcome, SqlError> {
        Ok(match command {
            // As PostgreSQL: in a block, a rollback undoes SET and RESET, and COMMIT ends what SET LOCAL set (a
            // later SET or RESET of the same setting in the block stands instead); outside one, SET LOCAL does
            // nothing.
            SessionCommand::Set { name, values, local } => {
                match self.transaction.as_mut() {
                    None if *local => return Ok(Outcome::Command("SET".into())),
                    None => {}
                    Some(open) => {
                        open.settings_before.get_or_insert_with(|| self.settings.clone());
                        if *local {
                            open.local_until_commit
                                .entry(name.clone())
                                .or_insert_with(|| self.settings.get(name).cloned());
                        } else {
                            open.local_until_commit.remove(name);
                        }
                    }
                }
                let value = values.join(", ");
                if name == IDLE_IN_TRANSACTION && parse_milliseconds(&value).is_none() {
                    return Err(SqlError::Backend {
                        sqlstate: "22023".into(),
                        message: format!("invalid value for parameter \"{name}\": \"{value}\""),
                    });
                }
                self.settings.insert(name.clone(), value);
                Outcome::Command("SET".into())
            }
            SessionCommand::Reset(Some(name)) => {
                if let Some(open) = self.transaction.as_mut() {
                    open.settings_before.get_or_insert_with(|| self.settings.clone());
                    open.local_until_commit.remove(name);
                }
                self.settings.remove(name);
                Outcome::Command("RESET".into())
            }
            SessionCommand::Reset(None) => {
                if let Some(open) = self.transaction.as_mut() {
                    open.settings_before.get_or_insert_with(|| self.settings.clone());
                    open.local_until_commit.clear();
                }
                self.settings.clear();
                Outcome::Command("RESET".into())
            }
            // As PostgreSQL: `DISCARD ALL` resets the settings (the front drops its prepared statements after),
            // and not inside a transaction block, which it could not undo.
            SessionCommand::Discard(Discarded::All) if self.transaction.is_some() => {
                return Err(SqlError::Transaction {
                    sqlstate: "25001",
                    message: "DISCARD ALL cannot run inside a transaction block".into(),
                });
            }
            SessionCommand::Discard(Discarded::All) => {
                self.settings.clear();
                Outcome::Command("DISCARD ALL".into())
            }
            SessionCommand::Discard(Discarded::Plans) => Outcome::Command("DISCARD PLANS".into()),
            SessionCommand::Discard(Discarded::Sequences) => Outcome::Command("DISCARD SEQUENCES".into()),
            SessionCommand::Discard(Discarded::Temp) => Outcome::Command("DISCARD TEMP".into()),
            SessionCommand::Show(name) => {
                let value = self.show(name)?;
                one_row(show_column(name), Cell::Text(value))
            }
            SessionCommand::Version => one_row(
                "version",
                Cell::Text(format!("PostgreSQL {SERVER_VERSION} (Lakegate {})", env!("CARGO_PKG_VERSION"))),
            ),
            SessionCommand::CurrentSchema => {
                let schema = self.search_path().into_iter().next();
                one_row("current_schema", schema.map(Cell::Text).unwrap_or(Cell::Null))
            }
            SessionCommand::Transaction(_) => {
                return Err(SqlError::Internal(format!("{text}: transaction control is not a session setting")));
            }
            SessionCommand::Release(Released::AdvisoryLocks) => one_row("pg_advisory_unlock_all", Cell::Null),
            SessionCommand::Release(Released::Cursors) => Outcome::Command("CLOSE CURSOR ALL".into()),
            SessionCommand::Release(Released::Notifications) => Outcome::Command("UNLISTEN".into()),
            // Answered by the front that keeps prepared statements (the wire front's `deallocate`); a front
            // without them has nothing to drop.
            SessionCommand::Deallocate(_) => {
                return Err(SqlError::Unsupported("DEALLOCATE: this front keeps no prepared statements".into()));
            }
        })
    }

    /// Where a governed statement runs: the backend's pool, or the connection the open transaction block is
    /// pinned to (pinning it now if the statement writes or the block asked for a stricter isolation level).
    async fn statement_backend(&mut self, name: &str, writes: bool) -> Result<Arc<dyn Backend>, SqlError> {
        let Some(open) = self.transaction.as_mut() else { return self.backend(name) };
        if let Some(pinned) = &open.pinned {
            if pinned.backend != name {
                return Err(SqlError::Unsupported(format!(
                    "this transaction block runs on backend {:?}; a statement on {name:?} cannot join it",
                    pinned.backend
                )));
            }
            return Ok(pinned.transaction.clone() as Arc<dyn Backend>);
        }
        let needs_own_connection = writes || open.options.isolation != IsolationLevel::ReadCommitted;
        if !needs_own_connection {
            return self.backend(name);
        }
        let backend = self
            .service
            .backends
            .get(name)
            .ok_or_else(|| SqlError::BackendUnavailable(format!("no backend named {name:?} is configured")))?;
        match backend.begin(&open.options).await? {
            Some(transaction) => {
                for savepoint in std::mem::take(&mut open.savepoints) {
                    transaction.savepoint(SavepointOp::Take, &savepoint).await?;
                }
                let id = lakegate_net::http::new_request_id();
                open.pinned = Some(Pinned { backend: name.to_owned(), transaction: transaction.clone(), id });
                Ok(transaction as Arc<dyn Backend>)
            }
            // No transactions on this engine (Spark, the embedded engine): reads run as they would outside the
            // block. A write would commit at once, where the client still expects to be able to roll it back.
            // In the block of a request of several statements, a write runs as it would alone: this engine cannot
            // undo it if a later statement fails (docs/sql.md says so).
            None if writes && !open.implicit => Err(SqlError::Unsupported(format!(
                "backend {name:?} has no transactions: a write cannot run inside a transaction block (use autocommit)"
            ))),
            None => Ok(backend),
        }
    }

    /// Opens the block PostgreSQL runs a request of several statements in (its implicit transaction block), so
    /// that a failing statement undoes what the ones before it wrote; the front calls it for a request without
    /// transaction control of its own, and [`Session::end_implicit`] after the request's last statement. Nothing
    /// is opened, and `false` returned, inside a block the client opened. As any block, it takes a connection of
    /// its own at its first write only (see [`OpenTransaction`]).
    pub fn begin_implicit(&mut self) -> bool {
        if self.transaction.is_some() {
            return false;
        }
        self.transaction = Some(OpenTransaction::new(TransactionOptions::default(), true));
        true
    }

    /// Ends the block [`Session::begin_implicit`] opened: commits what it wrote if every statement succeeded,
    /// rolls it back if not. `request_id` is the request's, for the record of the block's end.
    pub async fn end_implicit(&mut self, commit: bool, request_id: &str) -> Result<(), SqlError> {
        if !self.transaction.as_ref().is_some_and(|open| open.implicit) {
            return Ok(());
        }
        let text = if commit { "COMMIT" } else { "ROLLBACK" };
        self.end_block(commit, text, request_id).await.map(drop)
    }

    /// Drops the block [`Session::begin_implicit`] opened without ending it, for a request that stopped before its
    /// last statement: what it wrote is rolled back (see `PgTransaction`'s drop).
    pub fn abandon_implicit(&mut self) {
        if self.transaction.as_ref().is_some_and(|open| open.implicit)
            && let Some(record) = self.abandon_block("ROLLBACK (the request stopped before its last statement)")
        {
            spawn_record(record);
        }
    }

    /// Rolls back the block of a client that stayed idle in it too long (`idle_in_transaction_timeout_ms`), and
    /// records why; the front closes the connection.
    pub async fn let_go_idle_block(&mut self) {
        if let Some(record) =
            self.abandon_block("ROLLBACK (idle in the block for longer than idle_in_transaction_timeout_ms)")
        {
            record.await;
        }
    }

    /// Ends the session. A block still open is rolled back and its rollback is in the audit queue when this
    /// returns: a front that counts the session as work in flight until then keeps a shutdown's flush of the
    /// log from passing it by.
    pub async fn close(mut self) {
        if let Some(record) = self.abandon_block(SESSION_ENDED) {
            record.await;
        }
    }

    /// Ends the open block: COMMIT or ROLLBACK on its connection if it is pinned, with the record of how it
    /// ended. No record, no COMMIT: when the audit log cannot take the record, a COMMIT is refused and the block
    /// stays open (the client may retry, or roll back); a ROLLBACK, which only undoes, goes ahead.
    async fn end_block(&mut self, commit: bool, text: &str, request_id: &str) -> Result<Ended, SqlError> {
        let asked = if commit { Ended::Committed } else { Ended::RolledBack };
        let Some(pinned) = self.transaction.as_mut().and_then(|open| open.pinned.take()) else {
            self.forget_block(commit);
            return Ok(asked);
        };
        let action = if commit { "sql:Commit" } else { "sql:Rollback" };
        let sql = SqlAudit { original: text.to_owned(), transaction: Some(pinned.id.clone()), ..Default::default() };
        let origin = self.origin(request_id);
        let slot = match self
            .service
            .gate
            .admit_transaction_control(&origin, &self.principal, action, &pinned.backend, sql)
            .await
        {
            Ok(slot) => Some(slot),
            Err(e) if commit => {
                match self.transaction.as_mut() {
                    Some(open) if !open.implicit => open.pinned = Some(pinned),
                    // A request's implicit block ends with its request: nothing of it is committed.
                    _ => {
                        self.forget_block(false);
                        if let Err(e) = pinned.transaction.end(false).await {
                            tracing::warn!(request_id, error = %e, "rolling back an implicit block failed");
                        }
                    }
                }
                return Err(SqlError::AuditUnavailable(e.to_string()));
            }
            Err(e) => {
                tracing::error!(request_id, error = %e, "the audit log could not take a ROLLBACK; rolling back anyway");
                None
            }
        };
        let settled = self.transaction.take();
        let ended = pinned.transaction.end(commit).await;
        self.settle_settings(settled, matches!(ended, Ok(Ended::Committed)));
        if let Some(mut slot) = slot {
            if let Some(s) = slot.event_mut().sql.as_mut() {
                s.committed = Some(matches!(ended, Ok(Ended::Committed)));
            }
            match &ended {
                Ok(_) => slot.finish(),
                Err(e) => drop(fail(slot, e.clone())),
            }
        }
        ended
    }

    /// Forgets the open block, which committed (`true`) or rolled back; see [`Session::settle_settings`].
    fn forget_block(&mut self, committed: bool) {
        let open = self.transaction.take();
        self.settle_settings(open, committed);
    }

    /// The session's settings as a block that ended leaves them: a rollback restores them as they were before it,
    /// a COMMIT takes back what SET LOCAL set.
    fn settle_settings(&mut self, ended: Option<OpenTransaction>, committed: bool) {
        let Some(open) = ended else { return };
        if !committed {
            if let Some(before) = open.settings_before {
                self.settings = before;
            }
            return;
        }
        for (name, value) in open.local_until_commit {
            match value {
                Some(value) => self.settings.insert(name, value),
                None => self.settings.remove(&name),
            };
        }
    }

    /// Forgets the open block without ending it on its connection, which its transaction's drop rolls back; if
    /// the block was pinned, returns what records that rollback (`why`).
    #[must_use = "the rollback is recorded only when the returned future runs"]
    fn abandon_block(&mut self, why: &str) -> Option<impl Future<Output = ()> + Send + 'static> {
        let mut open = self.transaction.take()?;
        let pinned = open.pinned.take();
        self.settle_settings(Some(open), false);
        let pinned = pinned?;
        let gate = self.service.gate.clone();
        let origin = self.origin(&lakegate_net::http::new_request_id());
        let principal = self.principal.clone();
        let sql = SqlAudit {
            original: why.to_owned(),
            transaction: Some(pinned.id.clone()),
            committed: Some(false),
            ..Default::default()
        };
        let Pinned { backend, .. } = pinned;
        Some(async move {
            match gate.admit_transaction_control(&origin, &principal, "sql:Rollback", &backend, sql).await {
                Ok(slot) => slot.finish(),
                Err(e) => {
                    tracing::error!(error = %e, "the audit log could not take the rollback of an abandoned block")
                }
            }
        })
    }

    /// Whether the statements of a transaction block run on one backend connection now: a result read from it
    /// must be read to its end before anything else is sent on that connection.
    pub fn pinned(&self) -> bool {
        self.transaction.as_ref().is_some_and(|open| open.pinned.is_some())
    }

    /// How long the client may stay idle in a block that holds a backend connection: the gateway's limit
    /// (`idle_in_transaction_timeout_ms`), or the session's own `idle_in_transaction_session_timeout` where that
    /// is shorter. As in PostgreSQL, a session's 0 sets no limit of its own; it cannot lift the gateway's.
    pub fn idle_in_transaction_limit(&self) -> Option<std::time::Duration> {
        let own = self.settings.get(IDLE_IN_TRANSACTION).and_then(|v| parse_milliseconds(v)).filter(|d| !d.is_zero());
        match (self.service.settings.idle_in_transaction_timeout, own) {
            (Some(gateway), Some(own)) => Some(gateway.min(own)),
            (gateway, own) => gateway.or(own),
        }
    }

    /// BEGIN, COMMIT, ROLLBACK and savepoints, with PostgreSQL's answers where no block is open.
    async fn transaction(
        &mut self,
        command: &TransactionCommand,
        text: &str,
        request_id: &str,
    ) -> Result<Outcome, SqlError> {
        let tag = match command {
            TransactionCommand::Begin { isolation, read_only } => {
                // As PostgreSQL: a BEGIN inside a block is a warning, not an error, and changes nothing.
                if self.transaction.is_none() {
                    let options = TransactionOptions { isolation: *isolation, read_only: *read_only };
                    self.transaction = Some(OpenTransaction::new(options, false));
                }
                "BEGIN"
            }
            // As PostgreSQL, a COMMIT that rolled back (of a block an error aborted) answers ROLLBACK.
            TransactionCommand::Commit | TransactionCommand::Rollback => {
                match self.end_block(*command == TransactionCommand::Commit, text, request_id).await? {
                    Ended::Committed => "COMMIT",
                    Ended::RolledBack => "ROLLBACK",
                }
            }
            TransactionCommand::Savepoint(name) => {
                self.savepoint(SavepointOp::Take, name, text, request_id).await?;
                "SAVEPOINT"
            }
            TransactionCommand::Release(name) => {
                self.savepoint(SavepointOp::Release, name, text, request_id).await?;
                "RELEASE"
            }
            TransactionCommand::RollbackTo(name) => {
                self.savepoint(SavepointOp::RollbackTo, name, text, request_id).await?;
                "ROLLBACK"
            }
            TransactionCommand::Set => return Ok(Outcome::Command("SET".into())),
        };
        Ok(Outcome::Transaction { tag: tag.into(), open: self.transaction.is_some() })
    }

    /// A savepoint statement: on the pinned connection, with its record, or kept in step in the block's list until
    /// it is pinned.
    async fn savepoint(&mut self, op: SavepointOp, name: &str, text: &str, request_id: &str) -> Result<(), SqlError> {
        let origin = self.origin(request_id);
        let Some(open) = self.transaction.as_mut() else {
            return Err(SqlError::Transaction {
                sqlstate: "25P01",
                message: "savepoints can only be used in transaction blocks".into(),
            });
        };
        if let Some(pinned) = &open.pinned {
            let action = match op {
                SavepointOp::Take => "sql:Savepoint",
                SavepointOp::Release => "sql:ReleaseSavepoint",
                SavepointOp::RollbackTo => "sql:RollbackToSavepoint",
            };
            let sql =
                SqlAudit { original: text.to_owned(), transaction: Some(pinned.id.clone()), ..Default::default() };
            let slot = self
                .service
                .gate
                .admit_transaction_control(&origin, &self.principal, action, &pinned.backend, sql)
                .await
                .map_err(|e| SqlError::AuditUnavailable(e.to_string()))?;
            return match pinned.transaction.savepoint(op, name).await {
                Ok(()) => {
                    slot.finish();
                    Ok(())
                }
                Err(e) => Err(fail(slot, e)),
            };
        }
        if op == SavepointOp::Take {
            // Each is taken again on the block's connection once it has one: no client grows the list unbounded.
            if open.savepoints.len() >= MAX_SAVEPOINTS_UNPINNED {
                return Err(SqlError::Limit(format!(
                    "too many savepoints in this transaction block before its first write (at most \
                     {MAX_SAVEPOINTS_UNPINNED}); release some"
                )));
            }
            open.savepoints.push(name.to_owned());
            return Ok(());
        }
        let Some(at) = open.savepoints.iter().rposition(|s| s == name) else {
            return Err(SqlError::Transaction {
                sqlstate: "3B001",
                message: format!("savepoint \"{name}\" does not exist"),
            });
        };
        // RELEASE removes the savepoint and every later one; ROLLBACK TO keeps it and removes the later ones.
        open.savepoints.truncate(if op == SavepointOp::Release { at } else { at + 1 });
        Ok(())
    }

    fn show(&self, name: &str) -> Result<String, SqlError> {
        let name = name.to_ascii_lowercase();
        if let Some(v) = self.settings.get(&name).filter(|_| name != IDLE_IN_TRANSACTION) {
            return Ok(v.clone());
        }
        Ok(match name.as_str() {
            "server_version" => SERVER_VERSION.into(),
            "server_version_num" => "160006".into(),
            "search_path" => DEFAULT_SEARCH_PATH.into(),
            "transaction isolation level" | "transaction_isolation" | "default_transaction_isolation" => {
                "read committed".into()
            }
            "transaction_read_only" | "default_transaction_read_only" => "off".into(),
            "standard_conforming_strings" | "integer_datetimes" => "on".into(),
            "client_encoding" | "server_encoding" => "UTF8".into(),
            "datestyle" => "ISO, MDY".into(),
            "intervalstyle" => "postgres".into(),
            "timezone" => "UTC".into(),
            "max_identifier_length" => "63".into(),
            "application_name" => String::new(),
            "extra_float_digits" => "1".into(),
            "lc_collate" | "lc_ctype" => "C".into(),
            "statement_timeout" | "lock_timeout" => "0".into(),
            // The limit the gateway holds a block's idle client to, the session's own where that is shorter, not
            // PostgreSQL's (the backend's pool connections keep its default).
            IDLE_IN_TRANSACTION => show_milliseconds(self.idle_in_transaction_limit().unwrap_or_default()),
            _ => {
                return Err(SqlError::Backend {
                    sqlstate: "42704".into(),
                    message: format!("unrecognized configuration parameter \"{name}\""),
                });
            }
        })
    }
}

const DEFAULT_SEARCH_PATH: &str = "\"$user\", public";

/// The setting a session lowers the gateway's idle-in-transaction limit with.
const IDLE_IN_TRANSACTION: &str = "idle_in_transaction_session_timeout";

/// A time setting whose unit is milliseconds, as PostgreSQL reads one: a number of milliseconds, or a number and
/// a unit (`us`, `ms`, `s`, `min`, `h`, `d`), rounded to the millisecond; `None` for anything else or a value
/// out of PostgreSQL's range for it (0 to `INT_MAX` milliseconds).
fn parse_milliseconds(value: &str) -> Option<std::time::Duration> {
    let value = value.trim();
    let split = value.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit_ms = match unit.trim_start() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return None,
    };
    let ms = (number * unit_ms).round();
    (number.is_finite() && (0.0..=f64::from(i32::MAX)).contains(&ms))
        .then(|| std::time::Duration::from_millis(ms as u64))
}

/// A time setting as PostgreSQL's SHOW gives one whose unit is milliseconds: in the largest unit that holds it
/// whole (`0`, `1500ms`, `30s`, `1min`).
fn show_milliseconds(duration: std::time::Duration) -> String {
    let ms = duration.as_millis();
    if ms == 0 {
        return "0".into();
    }
    const UNITS: [(u128, &str); 5] = [(86_400_000, "d"), (3_600_000, "h"), (60_000, "min"), (1_000, "s"), (1, "ms")];
    let (size, unit) = UNITS.iter().find(|(size, _)| ms.is_multiple_of(*size)).copied().unwrap_or((1, "ms"));
    format!("{}{unit}", ms / size)
}

fn show_column(name: &str) -> &str {
    match name {
        "transaction isolation level" => "transaction_isolation",
        other => other,
    }
}

fn one_row(name: &str, cell: Cell) -> Outcome {
    let columns = vec![Column { name: name.to_owned(), ty: ColumnType::Text }];
    Outcome::Rows(RowSet { columns, rows: Box::pin(futures::stream::iter(vec![Ok(vec![cell])])) })
}

/// The columns a session statement answers with.
fn session_columns(command: &SessionCommand) -> Vec<Column> {
    let text = |n: &str| vec![Column { name: n.to_owned(), ty: ColumnType::Text }];
    match command {
        SessionCommand::Show(name) => text(show_column(name)),
        SessionCommand::Version => text("version"),
        SessionCommand::CurrentSchema => text("current_schema"),
        SessionCommand::Release(Released::AdvisoryLocks) => text("pg_advisory_unlock_all"),
        _ => Vec::new(),
    }
}

/// The statement's backend: every table it reads must live on the same one; a statement without tables
/// runs on the embedded engine.
fn backend_of(catalog: &lakegate_core::policy::catalog::Catalog, tables: &[TableName]) -> Result<String, SqlError> {
    let names: BTreeSet<&str> =
        tables.iter().filter_map(|t| catalog.table(&t.schema, &t.name)).map(|d| d.backend.as_str()).collect();
    let mut it = names.into_iter();
    match (it.next(), it.next()) {
        (None, _) => Ok(super::backend::EMBEDDED.into()),
        (Some(one), None) => Ok(one.to_owned()),
        (Some(_), Some(_)) => {
            Err(SqlError::Unsupported("a statement cannot combine tables of different backends".into()))
        }
    }
}

/// The parts of a governed statement's audit record that are the same at every execution: made once, with the
/// statement's rewrite, and shared by each record.
#[derive(Debug, Clone)]
struct AuditParts {
    tables: Arc<[String]>,
    filters: Arc<BTreeMap<String, String>>,
    masks: Arc<BTreeMap<String, String>>,
}

impl AuditParts {
    fn of(statement: &RewrittenStatement) -> AuditParts {
        let mut filters = BTreeMap::new();
        let mut masks = BTreeMap::new();
        for a in &statement.applied {
            let table = a.table.to_string();
            for (column, expr) in &a.columns {
                if !is_clear_column(expr, column) {
                    masks.insert(format!("{table}.{column}"), expr.clone());
                }
            }
            filters.insert(table, a.row_filter.clone().unwrap_or_else(|| "TRUE".into()));
        }
        AuditParts {
            tables: statement.tables.iter().map(ToString::to_string).collect(),
            filters: Arc::new(filters),
            masks: Arc::new(masks),
        }
    }

    /// The record of one execution, which ran `rewritten` for the client's `original`.
    fn record(&self, original: &str, rewritten: &str) -> SqlAudit {
        SqlAudit {
            original: original.to_owned(),
            rewritten: Some(rewritten.to_owned()),
            tables: self.tables.clone(),
            filters: self.filters.clone(),
            masks: self.masks.clone(),
            rows: None,
            transaction: None,
            committed: None,
        }
    }
}

/// Whether a visible column's expression is the column itself (`<alias>."<column>"`), as a clear column is shown;
/// anything else is a mask or a cell condition. Asked for every column of every governed statement.
fn is_clear_column(expr: &str, column: &str) -> bool {
    expr.strip_suffix('"').and_then(|e| e.strip_suffix(column)).is_some_and(|e| e.ends_with(".\""))
}

/// Records a backend failure in the slot and returns the error.
fn fail(mut slot: AuditSlot, e: SqlError) -> SqlError {
    let ev: &mut AuditEvent = slot.event_mut();
    ev.reason = Some(e.to_string());
    ev.outcome_mut().error_code = Some(e.sqlstate().to_owned());
    slot.finish();
    e
}

/// Counts the rows a client reads and finishes the audit slot when the stream ends (or is dropped, in
/// which case the slot records the access as incomplete).
struct Audited {
    inner: super::rows::RowStream,
    slot: Option<AuditSlot>,
    rows: u64,
}

impl Stream for Audited {
    type Item = Result<Vec<Cell>, SqlError>;

    fn poll_next(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match this.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(row))) => {
                this.rows += 1;
                if let Some(slot) = this.slot.as_mut()
                    && let Some(s) = slot.event_mut().sql.as_mut()
                {
                    s.rows = Some(this.rows);
                }
                Poll::Ready(Some(Ok(row)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(slot) = this.slot.take() {
                    fail(slot, e.clone());
                }
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if let Some(mut slot) = this.slot.take() {
                    if let Some(s) = slot.event_mut().sql.as_mut() {
                        s.rows = Some(this.rows);
                    }
                    slot.finish();
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_record_names_a_column_masked_unless_it_is_shown_as_itself() {
        assert!(is_clear_column(r#""accounts"."aid""#, "aid"));
        assert!(is_clear_column(r#"a."aid""#, "aid"));
        // Another column whose name ends with this one's, a mask, a cell condition, a bare name.
        assert!(!is_clear_column(r#""accounts"."xaid""#, "aid"));
        assert!(!is_clear_column("'***'", "aid"));
        assert!(!is_clear_column(r#"CASE WHEN a."bid" = 1 THEN a."aid" END"#, "aid"));
        assert!(!is_clear_column(r#"CASE WHEN true THEN a."aid" ELSE NULL END "aid""#, "aid"));
        assert!(!is_clear_column(r#""aid""#, "aid"));
    }

    #[test]
    fn a_time_setting_is_shown_in_the_largest_unit_that_holds_it_whole() {
        let shown = |ms| show_milliseconds(std::time::Duration::from_millis(ms));
        assert_eq!(shown(0), "0");
        assert_eq!(shown(500), "500ms");
        assert_eq!(shown(1_500), "1500ms");
        assert_eq!(shown(30_000), "30s");
        assert_eq!(shown(600_000), "10min");
        assert_eq!(shown(5_400_000), "90min");
        assert_eq!(shown(7_200_000), "2h");
        assert_eq!(shown(172_800_000), "2d");
    }

    #[test]
    fn a_time_setting_is_read_as_postgresql_reads_one() {
        let ms = |v| parse_milliseconds(v).map(|d| d.as_millis());
        for (value, want) in [("0", 0), ("500", 500), ("500ms", 500), ("5s", 5_000), ("5 s", 5_000), ("1.5s", 1_500)] {
            assert_eq!(ms(value), Some(want), "{value}");
        }
        assert_eq!(ms("2min"), Some(120_000));
        assert_eq!(ms("1h"), Some(3_600_000));
        assert_eq!(ms("1d"), Some(86_400_000));
        assert_eq!(ms("1500us"), Some(2), "rounded to the millisecond");
        assert_eq!(ms("2147483647"), Some(2_147_483_647));
        for bad in ["", "-5", "5 sec", "5S", "five", "1.2.3", "2147483648", "25d", "5s, 6s", "nan"] {
            assert_eq!(ms(bad), None, "{bad}");
        }
    }

    fn text(sql: &str) -> Sighting<'_> {
        Sighting::Text(TextKey("public", sql))
    }

    #[test]
    fn a_text_is_kept_at_its_second_sighting_and_the_seen_set_stays_bounded() {
        let rewrites = KeptRewrites::new();
        assert!(!rewrites.seen_before(text("SELECT $1")));
        assert!(!rewrites.seen_before(Sighting::Text(TextKey("other", "SELECT $1"))), "the search path is in it");
        assert!(!rewrites.seen_before(Sighting::Shape(TextKey("public", "SELECT $1"))), "a shape is not its text");
        assert!(rewrites.seen_before(text("SELECT $1")));
        for i in 0..3 * SEEN_ONCE_MAX {
            rewrites.seen_before(text(&format!("SELECT {i}")));
            assert!(rewrites.seen_once.lock().expect("lock").len() <= SEEN_ONCE_MAX);
        }
    }

    #[test]
    fn a_principals_sessions_share_its_rewrites_whatever_their_tokens_and_no_one_else_does() {
        let shared = SharedRewrites::default();
        let alice = Principal {
            issuer: "https://idp".into(),
            subject: "alice".into(),
            groups: vec!["analysts".into()],
            attributes: BTreeMap::from([("region".to_owned(), "EU".to_owned())]),
            token_id: Some("first".into()),
            expires_at: 1_000,
            actors: Vec::new(),
        };
        let kept = shared.of(&alice);
        let next_token = Principal { token_id: Some("second".into()), expires_at: 2_000, ..alice.clone() };
        assert!(Arc::ptr_eq(&kept, &shared.of(&next_token)), "a new token of the same user, seen alike");
        let in_us = Principal { attributes: BTreeMap::from([("region".to_owned(), "US".to_owned())]), ..alice.clone() };
        assert!(!Arc::ptr_eq(&kept, &shared.of(&in_us)), "another attribute may be decided otherwise");
        let bob = Principal { subject: "bob".into(), ..alice.clone() };
        assert!(!Arc::ptr_eq(&kept, &shared.of(&bob)));
        // Past the principals kept, the ones seen longest ago are let go; a session holding theirs keeps them.
        for i in 0..4 * PRINCIPALS_KEPT {
            shared.of(&Principal { subject: format!("user-{i}"), ..alice.clone() });
        }
        assert!(shared.0.len() <= PRINCIPALS_KEPT);
    }

    #[test]
    fn a_borrowed_key_finds_what_its_owned_form_was_kept_under() {
        let shapes = Shapes::with_weighter(4, REWRITES_WEIGHT, KeptWeight);
        shapes.insert(("public".to_owned(), "SELECT $1".to_owned()), Shape::Unlifted);
        assert!(shapes.get(&TextKey("public", "SELECT $1")).is_some());
        assert!(shapes.get(&TextKey("other", "SELECT $1")).is_none());
        assert!(shapes.get(&TextKey("public", "SELECT $2")).is_none());
    }
}

//! Catalog introspection as tools do it (psql's `\dt`, JDBC DatabaseMetaData, SQLAlchemy's inspector),
//! answered from the governed catalog: only the relations and columns the principal may see.
//!
//! A query that names `pg_catalog` or `information_schema` runs on a DataFusion context built for this one
//! query, holding synthetic `pg_catalog` and `information_schema` tables filled from the principal's view of
//! the catalog, and nothing else: no data table is registered there, so a query mixing catalog and data
//! cannot read data, and catalog queries never reach a backend.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::common::ScalarValue;
use datafusion::datasource::MemTable;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use sqlparser::ast::{
    BinaryOperator, CastKind, DataType as SqlType, Expr, Ident, ObjectName, ObjectNamePart, Statement, VisitMut,
    VisitorMut, visit_relations,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

use super::SqlService;
use super::backend::Backend as _;
use super::error::SqlError;
use super::rows::{Column, ColumnType};
use super::session::Outcome;
use lakegate_core::gate::{FilterCache, GateError, Origin, VisibleTable};
use lakegate_core::identity::Principal;

/// Schemas whose relations are answered here.
const SYSTEM_SCHEMAS: &[&str] = &["pg_catalog", "information_schema"];

/// Whether `sql` reads the system catalogs (`pg_catalog`, `information_schema`, or an unqualified `pg_*`
/// relation, which PostgreSQL finds in `pg_catalog` first), or calls a `pg_catalog.` function.
pub fn is_catalog_query(sql: &str) -> bool {
    let Ok(statements) = Parser::parse_sql(&PostgreSqlDialect {}, sql) else { return false };
    let mut found = false;
    for s in &statements {
        let _ = visit_relations(s, |name: &ObjectName| {
            let parts = folded(name);
            let system = match parts.as_slice() {
                [schema, _] => SYSTEM_SCHEMAS.contains(&schema.as_str()),
                [table] => table.starts_with("pg_"),
                _ => false,
            };
            if system {
                found = true;
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        });
        if !found {
            let _ = sqlparser::ast::visit_expressions(s, |e: &Expr| {
                if let Expr::Function(f) = e
                    && let [schema, _] = folded(&f.name).as_slice()
                    && schema == "pg_catalog"
                {
                    found = true;
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
        }
    }
    found
}

fn folded(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => {
                if i.quote_style.is_some() {
                    i.value.clone()
                } else {
                    i.value.to_ascii_lowercase()
                }
            }
            ObjectNamePart::Function(f) => f.name.value.to_ascii_lowercase(),
        })
        .collect()
}

/// The columns a catalog query returns. They do not depend on what the principal may see, so describing
/// decides nothing: the query runs over an empty catalog of the same shape.
pub async fn describe(sql: &str) -> Result<Vec<Column>, SqlError> {
    if let Some(columns) = empty_result(sql) {
        return Ok(columns);
    }
    let engine = Introspection::build(&[])?;
    engine.describe(&normalize(sql)?).await
}

/// Runs a catalog query over the principal's view of the catalog, which the gate decides and records.
pub async fn query(
    service: &SqlService,
    origin: &Origin,
    principal: &Principal,
    cache: &Mutex<FilterCache>,
    sql: &str,
) -> Result<Outcome, SqlError> {
    if let Some(columns) = empty_result(sql) {
        return Ok(Outcome::Rows(super::rows::RowSet { columns, rows: Box::pin(futures::stream::empty()) }));
    }
    let normalized = normalize(sql)?;
    let listing = service.gate.list_catalog(origin, principal, sql, cache).await.map_err(|e| match e {
        GateError::Policy(e) => SqlError::Policy(e.to_string()),
        other => SqlError::AuditUnavailable(other.to_string()),
    })?;
    let mut slot = listing.slot;
    let result = match Introspection::build(&listing.tables) {
        Ok(engine) => engine.query(&normalized).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(rows) => {
            // Catalog answers are small and built in memory; the record is complete once they are planned.
            slot.finish();
            Ok(Outcome::Rows(rows))
        }
        Err(e) => {
            let event = slot.event_mut();
            event.reason = Some(e.to_string());
            event.outcome_mut().error_code = Some(e.sqlstate().to_owned());
            slot.finish();
            Err(e)
        }
    }
}

/// A query whose FROM is a catalog Lakegate keeps empty (policies, triggers, publications...) has no rows:
/// answered without planning, with its output names as text columns.
fn empty_result(sql: &str) -> Option<Vec<Column>> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).ok()?;
    let [Statement::Query(query)] = statements.as_slice() else { return None };
    let select = empty_body(&query.body)?;
    let columns = select
        .projection
        .iter()
        .map(|item| {
            let name = match item {
                sqlparser::ast::SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
                sqlparser::ast::SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value.clone(),
                sqlparser::ast::SelectItem::UnnamedExpr(Expr::CompoundIdentifier(parts)) => {
                    parts.last().map(|i| i.value.clone()).unwrap_or_default()
                }
                sqlparser::ast::SelectItem::UnnamedExpr(Expr::Function(f)) => {
                    f.name.0.last().map(|p| p.to_string()).unwrap_or_default()
                }
                _ => "?column?".to_owned(),
            };
            Column { name, ty: ColumnType::Text }
        })
        .collect();
    Some(columns)
}

/// Rewrites PostgreSQL-only catalog syntax into what DataFusion plans: `pg_catalog.f()` -> `f()`,
/// `OPERATOR(pg_catalog.~)` -> `~`, `COLLATE ...` dropped, casts to `regclass`/`oid`-like types -> lookups.
fn normalize(sql: &str) -> Result<String, SqlError> {
    struct Normalizer;
    impl VisitorMut for Normalizer {
        type Break = ();
        fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
            let replacement = match expr {
                Expr::Function(f) => {
                    if let [ObjectNamePart::Identifier(schema), ObjectNamePart::Identifier(name)] = f.name.0.as_slice()
                        && schema.value.eq_ignore_ascii_case("pg_catalog")
                    {
                        f.name = ObjectName::from(vec![Ident::new(name.value.to_ascii_lowercase())]);
                    }
                    None
                }
                Expr::BinaryOp { op: BinaryOperator::PGCustomBinaryOperator(parts), .. } => {
                    let op = match parts.last().map(String::as_str) {
                        Some("~") => Some(BinaryOperator::PGRegexMatch),
                        Some("!~") => Some(BinaryOperator::PGRegexNotMatch),
                        Some("~*") => Some(BinaryOperator::PGRegexIMatch),
                        Some("=") => Some(BinaryOperator::Eq),
                        _ => None,
                    };
                    if let (Some(new), Expr::BinaryOp { op, .. }) = (op, &mut *expr) {
                        *op = new;
                    }
                    None
                }
                Expr::Collate { expr: inner, .. } => Some((**inner).clone()),
                Expr::Subquery(query) if reads_an_empty_catalog(query) => {
                    Some(Expr::value(sqlparser::ast::Value::Null))
                }
                Expr::Subquery(query) => {
                    // DataFusion plans a correlated scalar subquery only when it is aggregated; PostgreSQL
                    // requires at most one row anyway, so `max(x)` of that row is the same value.
                    if let sqlparser::ast::SetExpr::Select(select) = query.body.as_mut()
                        && let [
                            sqlparser::ast::SelectItem::UnnamedExpr(e)
                            | sqlparser::ast::SelectItem::ExprWithAlias { expr: e, .. },
                        ] = select.projection.as_mut_slice()
                        && !is_aggregate(e)
                    {
                        *e = call("max", vec![e.clone()]);
                    }
                    None
                }
                Expr::Cast { expr: inner, data_type, kind, .. } => {
                    let full = data_type.to_string().to_ascii_lowercase();
                    match full.trim_start_matches("pg_catalog.") {
                        "regclass" => Some(call("lakegate_regclass", vec![(**inner).clone()])),
                        "regtype" | "regproc" | "regprocedure" | "regnamespace" | "regrole" => {
                            Some(call("lakegate_text", vec![(**inner).clone()]))
                        }
                        "oid" | "xid" | "cid" | "int2vector" | "oidvector" => Some(Expr::Cast {
                            kind: CastKind::Cast,
                            expr: inner.clone(),
                            data_type: SqlType::BigInt(None),
                            array: false,
                            format: None,
                        }),
                        "name" | "char" | "\"char\"" => Some(Expr::Cast {
                            kind: CastKind::Cast,
                            expr: inner.clone(),
                            data_type: SqlType::Text,
                            array: false,
                            format: None,
                        }),
                        _ => full.strip_prefix("pg_catalog.").and_then(|_| {
                            // `x::pg_catalog.text`: the same type without the schema, which DataFusion knows.
                            let bare = data_type.to_string();
                            let bare = bare.split_once('.').map(|(_, t)| t.to_owned()).unwrap_or(bare);
                            let ty =
                                Parser::new(&PostgreSqlDialect {}).try_with_sql(&bare).ok()?.parse_data_type().ok()?;
                            let _ = kind;
                            Some(Expr::Cast {
                                kind: CastKind::Cast,
                                expr: inner.clone(),
                                data_type: ty,
                                array: false,
                                format: None,
                            })
                        }),
                    }
                }
                _ => None,
            };
            if let Some(r) = replacement {
                *expr = r;
            }
            ControlFlow::Continue(())
        }
    }
    let mut statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .map_err(|e| SqlError::Rewrite(super::rewrite::RewriteError::Syntax(e.to_string())))?;
    let [statement] = statements.as_mut_slice() else {
        return Err(SqlError::Unsupported("one catalog query at a time".into()));
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err(SqlError::Rewrite(super::rewrite::RewriteError::NotAllowed(
            "only queries may read the system catalogs".into(),
        )));
    }
    let _ = statement.visit(&mut Normalizer);
    Ok(statement.to_string())
}

/// Whether a scalar subquery's FROM list has a catalog Lakegate keeps empty as one of its items (or as the
/// left side of one): its result is then no row, i.e. NULL. DataFusion cannot plan some of the correlated
/// subqueries tools send against such catalogs, so they are answered here.
fn reads_an_empty_catalog(query: &sqlparser::ast::Query) -> bool {
    empty_body(&query.body).is_some()
}

/// The leftmost SELECT of a body every branch of which reads an empty catalog.
fn empty_body(body: &sqlparser::ast::SetExpr) -> Option<&sqlparser::ast::Select> {
    match body {
        sqlparser::ast::SetExpr::Select(select) => select_reads_an_empty_catalog(select).then_some(select.as_ref()),
        sqlparser::ast::SetExpr::SetOperation { left, right, .. } => {
            let first = empty_body(left)?;
            empty_body(right).map(|_| first)
        }
        sqlparser::ast::SetExpr::Query(q) => empty_body(&q.body),
        _ => None,
    }
}

fn select_reads_an_empty_catalog(select: &sqlparser::ast::Select) -> bool {
    select.from.iter().any(|item| match &item.relation {
        sqlparser::ast::TableFactor::Table { name, .. } => {
            let parts = folded(name);
            parts.last().is_some_and(|t| EMPTY_TABLES.iter().any(|(n, _)| n == t))
                && parts.first().is_none_or(|s| parts.len() == 1 || s == "pg_catalog")
        }
        _ => false,
    })
}

fn is_aggregate(e: &Expr) -> bool {
    match e {
        Expr::Function(f) => {
            let name = f.name.to_string().to_ascii_lowercase();
            ["count", "max", "min", "sum", "avg", "array_agg", "string_agg", "bool_and", "bool_or"]
                .contains(&name.trim_start_matches("pg_catalog."))
        }
        _ => false,
    }
}

fn call(name: &str, args: Vec<Expr>) -> Expr {
    Expr::Function(sqlparser::ast::Function {
        name: ObjectName::from(vec![Ident::new(name)]),
        uses_odbc_syntax: false,
        parameters: sqlparser::ast::FunctionArguments::None,
        args: sqlparser::ast::FunctionArguments::List(sqlparser::ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: args
                .into_iter()
                .map(|a| sqlparser::ast::FunctionArg::Unnamed(sqlparser::ast::FunctionArgExpr::Expr(a)))
                .collect(),
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

/// One visible table with its visible columns.
struct Visible {
    oid: i64,
    schema: String,
    name: String,
    columns: Vec<(String, ColumnType, String)>,
}

const NAMESPACE_OID_BASE: i64 = 16_384;
const TABLE_OID_BASE: i64 = 20_000;
const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;

struct Introspection {
    ctx: SessionContext,
}

impl Introspection {
    /// A catalog context showing `tables` (what the gate decided the principal may see).
    fn build(tables: &[VisibleTable]) -> Result<Self, SqlError> {
        // Oids are stable per catalog position, so a tool may keep them between queries of one session.
        let mut visible = Vec::new();
        let mut schemas: BTreeMap<String, i64> = BTreeMap::new();
        for t in tables {
            let columns = t
                .columns
                .iter()
                .map(|c| {
                    (
                        c.name.clone(),
                        ColumnType::from_sql_type(&c.sql_type).unwrap_or(ColumnType::Text),
                        c.sql_type.clone(),
                    )
                })
                .collect();
            let next = NAMESPACE_OID_BASE + i64::try_from(schemas.len()).unwrap_or(0);
            schemas.entry(t.name.schema.clone()).or_insert(next);
            visible.push(Visible {
                oid: TABLE_OID_BASE + i64::try_from(t.position).unwrap_or(0),
                schema: t.name.schema.clone(),
                name: t.name.name.clone(),
                columns,
            });
        }
        let config = SessionConfig::new()
            .with_information_schema(false)
            .with_default_catalog_and_schema("lakegate", "pg_catalog")
            .set_str("datafusion.sql_parser.dialect", "PostgreSQL")
            .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false);
        let ctx = SessionContext::new_with_config(config);
        let internal = |e: datafusion::error::DataFusionError| SqlError::Internal(e.to_string());
        let catalog = ctx.catalog("lakegate").ok_or_else(|| SqlError::Internal("no catalog".into()))?;
        let pg = Arc::new(MemorySchemaProvider::new());
        let info = Arc::new(MemorySchemaProvider::new());
        catalog.register_schema("pg_catalog", pg.clone()).map_err(internal)?;
        catalog.register_schema("information_schema", info.clone()).map_err(internal)?;
        let put = |schema: &Arc<MemorySchemaProvider>, name: &str, batch: RecordBatch| -> Result<(), SqlError> {
            let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(internal)?;
            datafusion::catalog::SchemaProvider::register_table(schema.as_ref(), name.to_owned(), Arc::new(table))
                .map_err(internal)?;
            Ok(())
        };
        put(&pg, "pg_namespace", namespaces(&schemas)?)?;
        put(&pg, "pg_class", classes(&visible, &schemas)?)?;
        put(&pg, "pg_attribute", attributes(&visible)?)?;
        put(&pg, "pg_type", types()?)?;
        put(&pg, "pg_database", batch(vec![("oid", int64(vec![1])), ("datname", text(vec!["lakegate".into()]))])?)?;
        put(&pg, "pg_am", batch(vec![("oid", int64(vec![2])), ("amname", text(vec!["heap".into()]))])?)?;
        for (name, cols) in EMPTY_TABLES {
            put(&pg, name, empty(cols)?)?;
        }
        put(&info, "schemata", schemata(&schemas)?)?;
        put(&info, "tables", info_tables(&visible)?)?;
        put(&info, "columns", info_columns(&visible)?)?;
        let oids: Vec<(String, i64)> = visible.iter().map(|v| (format!("{}.{}", v.schema, v.name), v.oid)).collect();
        let type_names: Vec<(i64, String)> = TYPES.iter().map(|(oid, name, _)| (*oid, (*name).to_owned())).collect();
        for udf in functions(oids, type_names) {
            ctx.register_udf(udf);
        }
        Ok(Introspection { ctx })
    }

    async fn describe(&self, sql: &str) -> Result<Vec<Column>, SqlError> {
        let backend = super::backend::embedded::Embedded::from_context(self.ctx.clone());
        backend.describe(sql).await
    }

    async fn query(&self, sql: &str) -> Result<super::rows::RowSet, SqlError> {
        let backend = super::backend::embedded::Embedded::from_context(self.ctx.clone());
        backend.query(sql).await
    }
}

/// Catalogs tools join against that Lakegate has nothing to put in: present, empty.
const EMPTY_TABLES: &[(&str, &[(&str, DataType)])] = &[
    (
        "pg_description",
        &[
            ("objoid", DataType::Int64),
            ("classoid", DataType::Int64),
            ("objsubid", DataType::Int32),
            ("description", DataType::Utf8),
        ],
    ),
    (
        "pg_attrdef",
        &[
            ("oid", DataType::Int64),
            ("adrelid", DataType::Int64),
            ("adnum", DataType::Int16),
            ("adbin", DataType::Utf8),
        ],
    ),
    (
        "pg_index",
        &[
            ("indexrelid", DataType::Int64),
            ("indrelid", DataType::Int64),
            ("indisprimary", DataType::Boolean),
            ("indisunique", DataType::Boolean),
            ("indkey", DataType::Utf8),
        ],
    ),
    (
        "pg_constraint",
        &[
            ("oid", DataType::Int64),
            ("conname", DataType::Utf8),
            ("conrelid", DataType::Int64),
            ("contype", DataType::Utf8),
            ("conkey", DataType::Utf8),
            ("connamespace", DataType::Int64),
        ],
    ),
    ("pg_inherits", &[("inhrelid", DataType::Int64), ("inhparent", DataType::Int64), ("inhseqno", DataType::Int32)]),
    ("pg_collation", &[("oid", DataType::Int64), ("collname", DataType::Utf8), ("collnamespace", DataType::Int64)]),
    ("pg_policy", &[("oid", DataType::Int64), ("polname", DataType::Utf8), ("polrelid", DataType::Int64)]),
    ("pg_trigger", &[("oid", DataType::Int64), ("tgrelid", DataType::Int64), ("tgname", DataType::Utf8)]),
    ("pg_statistic_ext", &[("oid", DataType::Int64), ("stxrelid", DataType::Int64), ("stxname", DataType::Utf8)]),
    ("pg_publication", &[("oid", DataType::Int64), ("pubname", DataType::Utf8), ("puballtables", DataType::Boolean)]),
    ("pg_publication_rel", &[("oid", DataType::Int64), ("prpubid", DataType::Int64), ("prrelid", DataType::Int64)]),
    (
        "pg_publication_namespace",
        &[("oid", DataType::Int64), ("pnpubid", DataType::Int64), ("pnnspid", DataType::Int64)],
    ),
    ("pg_foreign_table", &[("ftrelid", DataType::Int64), ("ftserver", DataType::Int64)]),
    ("pg_partitioned_table", &[("partrelid", DataType::Int64)]),
    ("pg_sequence", &[("seqrelid", DataType::Int64)]),
    ("pg_depend", &[("objid", DataType::Int64), ("refobjid", DataType::Int64), ("deptype", DataType::Utf8)]),
];

/// (oid, name, typlen) of the types the gateway carries.
const TYPES: &[(i64, &str, i16)] = &[
    (16, "bool", 1),
    (20, "int8", 8),
    (21, "int2", 2),
    (23, "int4", 4),
    (25, "text", -1),
    (700, "float4", 4),
    (701, "float8", 8),
    (1043, "varchar", -1),
    (1082, "date", 4),
    (1114, "timestamp", 8),
    (1700, "numeric", -1),
];

fn int64(v: Vec<i64>) -> ArrayRef {
    Arc::new(Int64Array::from(v))
}
fn int32(v: Vec<i32>) -> ArrayRef {
    Arc::new(Int32Array::from(v))
}
fn int16(v: Vec<i16>) -> ArrayRef {
    Arc::new(Int16Array::from(v))
}
fn text(v: Vec<String>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}
fn opt_text(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}
fn boolean(v: Vec<bool>) -> ArrayRef {
    Arc::new(BooleanArray::from(v))
}

fn batch(columns: Vec<(&str, ArrayRef)>) -> Result<RecordBatch, SqlError> {
    let fields: Vec<Field> = columns.iter().map(|(n, a)| Field::new(*n, a.data_type().clone(), true)).collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns.into_iter().map(|(_, a)| a).collect())
        .map_err(|e| SqlError::Internal(e.to_string()))
}

fn empty(columns: &[(&str, DataType)]) -> Result<RecordBatch, SqlError> {
    let fields: Vec<Field> = columns.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect();
    Ok(RecordBatch::new_empty(Arc::new(Schema::new(fields))))
}

fn namespaces(schemas: &BTreeMap<String, i64>) -> Result<RecordBatch, SqlError> {
    let mut oids = vec![PG_CATALOG_OID, PUBLIC_OID];
    let mut names = vec!["pg_catalog".to_owned(), "public".to_owned()];
    for (name, oid) in schemas {
        if name != "public" {
            oids.push(*oid);
            names.push(name.clone());
        }
    }
    let n = oids.len();
    batch(vec![
        ("oid", int64(oids)),
        ("nspname", text(names)),
        ("nspowner", int64(vec![10; n])),
        ("nspacl", opt_text(vec![None; n])),
    ])
}

fn namespace_oid(schemas: &BTreeMap<String, i64>, schema: &str) -> i64 {
    if schema == "public" { PUBLIC_OID } else { schemas.get(schema).copied().unwrap_or(PUBLIC_OID) }
}

fn classes(visible: &[Visible], schemas: &BTreeMap<String, i64>) -> Result<RecordBatch, SqlError> {
    let n = visible.len();
    let f = |b: bool| boolean(vec![b; n]);
    batch(vec![
        ("oid", int64(visible.iter().map(|v| v.oid).collect())),
        ("relname", text(visible.iter().map(|v| v.name.clone()).collect())),
        ("relnamespace", int64(visible.iter().map(|v| namespace_oid(schemas, &v.schema)).collect())),
        ("relkind", text(vec!["r".into(); n])),
        ("relowner", int64(vec![10; n])),
        ("relam", int64(vec![2; n])),
        ("relpersistence", text(vec!["p".into(); n])),
        ("relispartition", f(false)),
        ("relhasindex", f(false)),
        ("relhasrules", f(false)),
        ("relhastriggers", f(false)),
        ("relrowsecurity", f(false)),
        ("relforcerowsecurity", f(false)),
        ("relhassubclass", f(false)),
        ("relchecks", int16(vec![0; n])),
        ("relnatts", int16(visible.iter().map(|v| i16::try_from(v.columns.len()).unwrap_or(i16::MAX)).collect())),
        ("reltablespace", int64(vec![0; n])),
        ("reloftype", int64(vec![0; n])),
        ("reltoastrelid", int64(vec![0; n])),
        ("reltype", int64(vec![0; n])),
        ("relreplident", text(vec!["d".into(); n])),
        ("reltuples", int64(vec![-1; n])),
        ("relacl", opt_text(vec![None; n])),
        ("reloptions", opt_text(vec![None; n])),
        ("relpartbound", opt_text(vec![None; n])),
    ])
}

fn attributes(visible: &[Visible]) -> Result<RecordBatch, SqlError> {
    let (mut rel, mut name, mut ty, mut num, mut typmod) = (vec![], vec![], vec![], vec![], vec![]);
    for v in visible {
        for (i, (c, t, sql_type)) in v.columns.iter().enumerate() {
            rel.push(v.oid);
            name.push(c.clone());
            ty.push(i64::from(t.oid()));
            num.push(i16::try_from(i + 1).unwrap_or(i16::MAX));
            typmod.push(typmod_of(sql_type));
        }
    }
    let n = rel.len();
    batch(vec![
        ("attrelid", int64(rel)),
        ("attname", text(name)),
        ("atttypid", int64(ty)),
        ("attnum", int16(num)),
        ("atttypmod", int32(typmod)),
        ("attnotnull", boolean(vec![false; n])),
        ("attisdropped", boolean(vec![false; n])),
        ("atthasdef", boolean(vec![false; n])),
        ("attidentity", text(vec![String::new(); n])),
        ("attgenerated", text(vec![String::new(); n])),
        ("attcollation", int64(vec![0; n])),
        ("attlen", int16(vec![-1; n])),
        ("attndims", int32(vec![0; n])),
        ("attislocal", boolean(vec![true; n])),
    ])
}

/// PostgreSQL's type modifier: `numeric(p,s)` -> ((p << 16) | s) + 4, `varchar(n)` -> n + 4.
fn typmod_of(sql_type: &str) -> i32 {
    let args: Vec<i32> = sql_type
        .split_once('(')
        .and_then(|(_, r)| r.strip_suffix(')'))
        .map(|r| r.split(',').filter_map(|p| p.trim().parse().ok()).collect())
        .unwrap_or_default();
    match (ColumnType::from_sql_type(sql_type), args.as_slice()) {
        (Some(ColumnType::Numeric), [p, s]) => ((p << 16) | s) + 4,
        (Some(ColumnType::Numeric), [p]) => (p << 16) + 4,
        (Some(ColumnType::Text), [n]) => n + 4,
        _ => -1,
    }
}

fn types() -> Result<RecordBatch, SqlError> {
    let n = TYPES.len();
    batch(vec![
        ("oid", int64(TYPES.iter().map(|t| t.0).collect())),
        ("typname", text(TYPES.iter().map(|t| t.1.to_owned()).collect())),
        ("typnamespace", int64(vec![PG_CATALOG_OID; n])),
        ("typlen", int16(TYPES.iter().map(|t| t.2).collect())),
        ("typtype", text(vec!["b".into(); n])),
        ("typbasetype", int64(vec![0; n])),
        ("typtypmod", int32(vec![-1; n])),
        ("typnotnull", boolean(vec![false; n])),
        ("typrelid", int64(vec![0; n])),
        ("typelem", int64(vec![0; n])),
        ("typcollation", int64(vec![0; n])),
        ("typowner", int64(vec![10; n])),
        ("typarray", int64(vec![0; n])),
        ("typdelim", text(vec![",".into(); n])),
        ("typinput", text(vec![String::new(); n])),
    ])
}

fn schemata(schemas: &BTreeMap<String, i64>) -> Result<RecordBatch, SqlError> {
    let names: Vec<String> = schemas.keys().cloned().collect();
    let n = names.len();
    batch(vec![
        ("catalog_name", text(vec!["lakegate".into(); n])),
        ("schema_name", text(names)),
        ("schema_owner", text(vec!["lakegate".into(); n])),
    ])
}

fn info_tables(visible: &[Visible]) -> Result<RecordBatch, SqlError> {
    let n = visible.len();
    batch(vec![
        ("table_catalog", text(vec!["lakegate".into(); n])),
        ("table_schema", text(visible.iter().map(|v| v.schema.clone()).collect())),
        ("table_name", text(visible.iter().map(|v| v.name.clone()).collect())),
        ("table_type", text(vec!["BASE TABLE".into(); n])),
        ("is_insertable_into", text(vec!["YES".into(); n])),
    ])
}

fn info_columns(visible: &[Visible]) -> Result<RecordBatch, SqlError> {
    let (mut schema, mut table, mut column, mut pos, mut ty, mut udt, mut precision, mut scale) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for v in visible {
        for (i, (c, t, sql_type)) in v.columns.iter().enumerate() {
            schema.push(v.schema.clone());
            table.push(v.name.clone());
            column.push(c.clone());
            pos.push(i32::try_from(i + 1).unwrap_or(i32::MAX));
            ty.push(t.pg_name().to_owned());
            udt.push(TYPES.iter().find(|x| x.0 == i64::from(t.oid())).map(|x| x.1).unwrap_or("text").to_owned());
            let m = typmod_of(sql_type);
            let numeric = *t == ColumnType::Numeric && m >= 4;
            precision.push(if numeric { Some(((m - 4) >> 16) & 0xffff) } else { None });
            scale.push(if numeric { Some((m - 4) & 0xffff) } else { None });
        }
    }
    let n = column.len();
    batch(vec![
        ("table_catalog", text(vec!["lakegate".into(); n])),
        ("table_schema", text(schema)),
        ("table_name", text(table)),
        ("column_name", text(column)),
        ("ordinal_position", int32(pos)),
        ("column_default", opt_text(vec![None; n])),
        ("is_nullable", text(vec!["YES".into(); n])),
        ("data_type", text(ty)),
        ("udt_name", text(udt)),
        ("character_maximum_length", Arc::new(Int32Array::from(vec![None::<i32>; n])) as ArrayRef),
        ("numeric_precision", Arc::new(Int32Array::from(precision)) as ArrayRef),
        ("numeric_scale", Arc::new(Int32Array::from(scale)) as ArrayRef),
    ])
}

/// A function of the catalog context.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CatalogFn {
    name: &'static str,
    kind: FnKind,
    signature: Signature,
}

#[derive(Debug, PartialEq, Eq, Hash)]
enum FnKind {
    /// Always this text (NULL for `None`).
    Text(Option<String>),
    Bool(bool),
    /// `regclass('db.table')`: the table's oid, NULL when invisible.
    RegClass(Vec<(String, i64)>),
    /// `format_type(oid, typmod)`.
    FormatType(Vec<(i64, String)>),
    /// Casts to text.
    ToText,
    /// `to_regtype('name')`: the type's oid, NULL for a type Lakegate does not carry.
    ToRegType(Vec<(i64, String)>),
}

impl ScalarUDFImpl for CatalogFn {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(match self.kind {
            FnKind::Bool(_) => DataType::Boolean,
            FnKind::RegClass(_) | FnKind::ToRegType(_) => DataType::Int64,
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let rows = args.number_rows;
        let first_as_text = |i: usize| -> datafusion::error::Result<Vec<Option<String>>> {
            match args.args.get(i) {
                Some(a) => {
                    let arr = a.to_array(rows)?;
                    let arr = datafusion::arrow::compute::cast(&arr, &DataType::Utf8)?;
                    let s = arr
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .ok_or_else(|| datafusion::error::DataFusionError::Internal("not text".into()))?;
                    Ok((0..rows).map(|r| (!s.is_null(r)).then(|| s.value(r).to_owned())).collect())
                }
                None => Ok(vec![None; rows]),
            }
        };
        Ok(match &self.kind {
            FnKind::Text(v) => ColumnarValue::Scalar(ScalarValue::Utf8(v.clone())),
            FnKind::Bool(b) => ColumnarValue::Scalar(ScalarValue::Boolean(Some(*b))),
            FnKind::ToText => ColumnarValue::Array(text_opt(first_as_text(0)?)),
            FnKind::RegClass(oids) => {
                let names = first_as_text(0)?;
                let out: Vec<Option<i64>> = names
                    .iter()
                    .map(|n| {
                        n.as_ref().and_then(|n| {
                            let n = n.replace('"', "").to_ascii_lowercase();
                            oids.iter().find(|(name, _)| *name == n || name.ends_with(&format!(".{n}"))).map(|x| x.1)
                        })
                    })
                    .collect();
                ColumnarValue::Array(Arc::new(Int64Array::from(out)))
            }
            FnKind::ToRegType(types) => {
                let names = first_as_text(0)?;
                let out: Vec<Option<i64>> = names
                    .iter()
                    .map(|n| {
                        let n = n.as_ref()?.trim().trim_matches('"').to_ascii_lowercase();
                        let n = n.trim_start_matches("pg_catalog.");
                        types.iter().find(|t| t.1 == n).map(|t| t.0)
                    })
                    .collect();
                ColumnarValue::Array(Arc::new(Int64Array::from(out)))
            }
            FnKind::FormatType(types) => {
                let oids = first_as_text(0)?;
                let mods = first_as_text(1)?;
                let out: Vec<Option<String>> = oids
                    .iter()
                    .zip(mods.iter())
                    .map(|(oid, m)| {
                        let oid: i64 = oid.as_ref()?.parse().ok()?;
                        let m: i32 = m.as_ref().and_then(|m| m.parse().ok()).unwrap_or(-1);
                        let name = types.iter().find(|t| t.0 == oid).map(|t| t.1.as_str()).unwrap_or("text");
                        Some(format_type(name, m))
                    })
                    .collect();
                ColumnarValue::Array(text_opt(out))
            }
        })
    }
}

fn text_opt(v: Vec<Option<String>>) -> ArrayRef {
    Arc::new(StringArray::from(v))
}

/// `format_type`: PostgreSQL's display name with modifiers.
fn format_type(name: &str, typmod: i32) -> String {
    match name {
        "int8" => "bigint".into(),
        "int4" => "integer".into(),
        "int2" => "smallint".into(),
        "bool" => "boolean".into(),
        "float8" => "double precision".into(),
        "float4" => "real".into(),
        "timestamp" => "timestamp without time zone".into(),
        "numeric" if typmod >= 4 => format!("numeric({},{})", ((typmod - 4) >> 16) & 0xffff, (typmod - 4) & 0xffff),
        "varchar" if typmod >= 4 => format!("character varying({})", typmod - 4),
        "varchar" => "character varying".into(),
        other => other.to_owned(),
    }
}

fn functions(oids: Vec<(String, i64)>, types: Vec<(i64, String)>) -> Vec<ScalarUDF> {
    let any = || Signature::one_of(vec![TypeSignature::Nullary, TypeSignature::VariadicAny], Volatility::Immutable);
    let f = |name: &'static str, kind: FnKind| ScalarUDF::from(CatalogFn { name, kind, signature: any() });
    let version = format!("PostgreSQL {} (Lakegate {})", super::session::SERVER_VERSION, env!("CARGO_PKG_VERSION"));
    vec![
        f("version", FnKind::Text(Some(version))),
        f("current_database", FnKind::Text(Some("lakegate".into()))),
        f("current_schema", FnKind::Text(Some("public".into()))),
        f("pg_get_userbyid", FnKind::Text(Some("lakegate".into()))),
        f("obj_description", FnKind::Text(None)),
        f("col_description", FnKind::Text(None)),
        f("shobj_description", FnKind::Text(None)),
        f("pg_get_expr", FnKind::Text(None)),
        f("pg_get_constraintdef", FnKind::Text(None)),
        f("pg_get_indexdef", FnKind::Text(None)),
        f("pg_get_partkeydef", FnKind::Text(None)),
        f("pg_encoding_to_char", FnKind::Text(Some("UTF8".into()))),
        f("pg_table_is_visible", FnKind::Bool(true)),
        f("pg_type_is_visible", FnKind::Bool(true)),
        f("has_table_privilege", FnKind::Bool(true)),
        f("has_schema_privilege", FnKind::Bool(true)),
        f("has_column_privilege", FnKind::Bool(true)),
        f("pg_is_in_recovery", FnKind::Bool(false)),
        f("lakegate_regclass", FnKind::RegClass(oids)),
        f("lakegate_text", FnKind::ToText),
        f("to_regtype", FnKind::ToRegType(types.clone())),
        f("format_type", FnKind::FormatType(types)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_catalog_references_are_recognised_in_any_spelling() {
        for sql in [
            "select * from pg_catalog.pg_class",
            "SELECT * FROM PG_CATALOG.PG_CLASS",
            "select * from pg_class",
            "select table_name from information_schema.tables",
            "select pg_catalog.version()",
        ] {
            assert!(is_catalog_query(sql), "{sql}");
        }
        assert!(!is_catalog_query("select * from sales.orders"));
        // Text that merely mentions a catalog is not a catalog query.
        assert!(!is_catalog_query("select * from sales.orders where customer = 'pg_catalog.pg_class'"));
    }

    #[test]
    fn catalog_syntax_is_normalised_for_the_engine() {
        let sql = normalize(
            "SELECT c.relname FROM pg_catalog.pg_class c WHERE c.relname OPERATOR(pg_catalog.~) '^(orders)$' COLLATE pg_catalog.default AND pg_catalog.pg_table_is_visible(c.oid)",
        )
        .expect("normalises");
        assert!(sql.contains("~ '^(orders)$'"), "{sql}");
        assert!(sql.contains("pg_table_is_visible(c.oid)") && !sql.contains("pg_catalog.pg_table"), "{sql}");
    }

    #[test]
    fn type_modifiers_follow_postgresql() {
        assert_eq!(format_type("numeric", typmod_of("numeric(12,2)")), "numeric(12,2)");
        assert_eq!(typmod_of("text"), -1);
    }
}

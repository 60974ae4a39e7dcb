//! The synthetic catalog tables, all in one place: filled from the principal's visible tables, or empty.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, Int16Array, Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::MemorySchemaProvider;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;

use crate::error::SqlError;
use crate::rows::ColumnType;
use lakegate_core::gate::VisibleTable;

/// What one catalog context shows: the principal's visible tables and their schemas, with stable oids.
pub(super) struct View {
    pub(super) visible: Vec<Visible>,
    /// Schema name -> namespace oid, for the schemas of visible tables.
    pub(super) schemas: BTreeMap<String, i64>,
    /// The caller, the one role the context shows.
    pub(super) user: String,
    pub(super) form: super::CatalogForm,
}

impl View {
    pub(super) fn new(tables: &[VisibleTable], user: &str, form: super::CatalogForm) -> Self {
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
        View { visible, schemas, user: user.to_owned(), form }
    }
}

/// The `pg_catalog` tables filled from the view (besides [`EMPTY_TABLES`]), and the `information_schema` ones.
const FILLED: &[&str] = &[
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_type",
    "pg_database",
    "pg_roles",
    "pg_user",
    "pg_settings",
    "pg_am",
];
const INFORMATION_SCHEMA: &[&str] = &["schemata", "tables", "columns", "views"];

/// Whether the catalog context has `schema.table` (`schema` folded: `pg_catalog` or `information_schema`).
pub(super) fn exists(schema: &str, table: &str) -> bool {
    match schema {
        "pg_catalog" => FILLED.contains(&table) || EMPTY_TABLES.iter().any(|(n, _)| *n == table),
        "information_schema" => INFORMATION_SCHEMA.contains(&table),
        _ => false,
    }
}

/// Registers every catalog table of `view` in `ctx`: `pg_catalog.*` and `information_schema.*`.
pub(super) fn register(ctx: &SessionContext, view: &View) -> Result<(), SqlError> {
    let internal = |e: datafusion::error::DataFusionError| SqlError::Internal(e.to_string());
    let catalog = ctx.catalog("lakegate").ok_or_else(|| SqlError::Internal("no catalog".into()))?;
    let pg = Arc::new(MemorySchemaProvider::new());
    let info = Arc::new(MemorySchemaProvider::new());
    catalog.register_schema("pg_catalog", pg.clone()).map_err(internal)?;
    catalog.register_schema("information_schema", info.clone()).map_err(internal)?;
    let put = |schema: &Arc<MemorySchemaProvider>, name: &str, batch: RecordBatch| -> Result<(), SqlError> {
        let batch = with_xmin(name, batch)?;
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).map_err(internal)?;
        datafusion::catalog::SchemaProvider::register_table(schema.as_ref(), name.to_owned(), Arc::new(table))
            .map_err(internal)?;
        Ok(())
    };
    let (visible, schemas) = (&view.visible, &view.schemas);
    put(&pg, "pg_namespace", namespaces(schemas)?)?;
    put(&pg, "pg_class", classes(visible, schemas)?)?;
    put(&pg, "pg_attribute", attributes(visible)?)?;
    put(&pg, "pg_type", types()?)?;
    put(&pg, "pg_database", database()?)?;
    put(&pg, "pg_roles", roles(&view.user)?)?;
    put(&pg, "pg_user", users(&view.user)?)?;
    put(&pg, "pg_settings", settings()?)?;
    put(&pg, "pg_am", batch(vec![("oid", int64(vec![2])), ("amname", text(vec!["heap".into()]))])?)?;
    for (name, cols) in EMPTY_TABLES {
        put(&pg, name, empty(cols)?)?;
    }
    put(&info, "schemata", schemata(schemas)?)?;
    put(&info, "tables", info_tables(visible)?)?;
    put(&info, "columns", info_columns(visible, view.form)?)?;
    put(
        &info,
        "views",
        empty(&[
            ("table_catalog", DataType::Utf8),
            ("table_schema", DataType::Utf8),
            ("table_name", DataType::Utf8),
            ("view_definition", DataType::Utf8),
        ])?,
    )?;
    Ok(())
}

/// One visible table with its visible columns.
pub(super) struct Visible {
    pub(super) oid: i64,
    pub(super) schema: String,
    pub(super) name: String,
    pub(super) columns: Vec<(String, ColumnType, String)>,
}

const NAMESPACE_OID_BASE: i64 = 16_384;
const TABLE_OID_BASE: i64 = 20_000;
pub(super) const PG_CATALOG_OID: i64 = 11;
const PUBLIC_OID: i64 = 2200;

/// Catalogs tools join against that Lakegate has nothing to put in: present, empty.
pub(super) const EMPTY_TABLES: &[(&str, &[(&str, DataType)])] = &[
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
            ("indnatts", DataType::Int16),
            ("indnkeyatts", DataType::Int16),
            ("indisclustered", DataType::Boolean),
            ("indisvalid", DataType::Boolean),
            ("indisreplident", DataType::Boolean),
            ("indimmediate", DataType::Boolean),
            ("indnullsnotdistinct", DataType::Boolean),
            ("indisexclusion", DataType::Boolean),
            ("indoption", DataType::Utf8),
            ("indclass", DataType::Utf8),
            ("indexprs", DataType::Utf8),
            ("indpred", DataType::Utf8),
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
            ("conindid", DataType::Int64),
            ("confrelid", DataType::Int64),
            ("confkey", DataType::Utf8),
            ("confupdtype", DataType::Utf8),
            ("confdeltype", DataType::Utf8),
            ("confmatchtype", DataType::Utf8),
            ("condeferrable", DataType::Boolean),
            ("condeferred", DataType::Boolean),
            ("convalidated", DataType::Boolean),
            ("conislocal", DataType::Boolean),
            ("conparentid", DataType::Int64),
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
    (
        "pg_depend",
        &[
            ("classid", DataType::Int64),
            ("objid", DataType::Int64),
            ("objsubid", DataType::Int32),
            ("refclassid", DataType::Int64),
            ("refobjid", DataType::Int64),
            ("refobjsubid", DataType::Int32),
            ("deptype", DataType::Utf8),
        ],
    ),
    // Functions and procedures: the gateway's allowlist is not a catalog of the backend's functions, and user
    // functions are not reachable through it, so tools list none (psql's `\df`, JDBC's getFunctions).
    (
        "pg_proc",
        &[
            ("oid", DataType::Int64),
            ("proname", DataType::Utf8),
            ("pronamespace", DataType::Int64),
            ("prokind", DataType::Utf8),
            ("prorettype", DataType::Int64),
            ("proretset", DataType::Boolean),
            ("proargtypes", DataType::Utf8),
            ("proargnames", DataType::Utf8),
            ("proargmodes", DataType::Utf8),
            ("proallargtypes", DataType::Utf8),
            ("prolang", DataType::Int64),
            ("proowner", DataType::Int64),
        ],
    ),
    ("pg_aggregate", &[("aggfnoid", DataType::Int64), ("aggkind", DataType::Utf8)]),
    ("pg_operator", &[("oid", DataType::Int64), ("oprname", DataType::Utf8), ("oprnamespace", DataType::Int64)]),
    (
        "pg_extension",
        &[
            ("oid", DataType::Int64),
            ("extname", DataType::Utf8),
            ("extversion", DataType::Utf8),
            ("extnamespace", DataType::Int64),
            ("extowner", DataType::Int64),
        ],
    ),
    (
        "pg_auth_members",
        &[
            ("oid", DataType::Int64),
            ("roleid", DataType::Int64),
            ("member", DataType::Int64),
            ("grantor", DataType::Int64),
            ("admin_option", DataType::Boolean),
        ],
    ),
    (
        "pg_tablespace",
        &[
            ("oid", DataType::Int64),
            ("spcname", DataType::Utf8),
            ("spcowner", DataType::Int64),
            ("spcacl", DataType::Utf8),
            ("spcoptions", DataType::Utf8),
        ],
    ),
    (
        "pg_shdescription",
        &[("objoid", DataType::Int64), ("classoid", DataType::Int64), ("description", DataType::Utf8)],
    ),
    (
        "pg_enum",
        &[
            ("oid", DataType::Int64),
            ("enumtypid", DataType::Int64),
            ("enumlabel", DataType::Utf8),
            ("enumsortorder", DataType::Float32),
        ],
    ),
    ("pg_range", &[("rngtypid", DataType::Int64), ("rngsubtype", DataType::Int64), ("rngmultitypid", DataType::Int64)]),
    ("pg_rewrite", &[("oid", DataType::Int64), ("rulename", DataType::Utf8), ("ev_class", DataType::Int64)]),
    ("pg_event_trigger", &[("oid", DataType::Int64), ("evtname", DataType::Utf8)]),
    ("pg_foreign_server", &[("oid", DataType::Int64), ("srvname", DataType::Utf8), ("srvfdw", DataType::Int64)]),
    ("pg_foreign_data_wrapper", &[("oid", DataType::Int64), ("fdwname", DataType::Utf8)]),
    (
        "pg_opclass",
        &[
            ("oid", DataType::Int64),
            ("opcname", DataType::Utf8),
            ("opcnamespace", DataType::Int64),
            ("opcdefault", DataType::Boolean),
        ],
    ),
    ("pg_cast", &[("oid", DataType::Int64), ("castsource", DataType::Int64), ("casttarget", DataType::Int64)]),
    ("pg_conversion", &[("oid", DataType::Int64), ("conname", DataType::Utf8), ("connamespace", DataType::Int64)]),
    ("pg_ts_config", &[("oid", DataType::Int64), ("cfgname", DataType::Utf8), ("cfgnamespace", DataType::Int64)]),
    ("pg_statistic_ext_data", &[("stxoid", DataType::Int64)]),
    ("pg_matviews", &[("schemaname", DataType::Utf8), ("matviewname", DataType::Utf8)]),
    ("pg_views", &[("schemaname", DataType::Utf8), ("viewname", DataType::Utf8), ("definition", DataType::Utf8)]),
];

/// (oid, name, typlen, typcategory) of the types the gateway carries. The category is PostgreSQL's (Boolean,
/// Numeric, String, Date/time): Npgsql and DBeaver filter on it.
pub(super) const TYPES: &[(i64, &str, i16, &str)] = &[
    (16, "bool", 1, "B"),
    (20, "int8", 8, "N"),
    (21, "int2", 2, "N"),
    (23, "int4", 4, "N"),
    (25, "text", -1, "S"),
    (700, "float4", 4, "N"),
    (701, "float8", 8, "N"),
    (1043, "varchar", -1, "S"),
    (1082, "date", 4, "D"),
    (1114, "timestamp", 8, "D"),
    (1700, "numeric", -1, "N"),
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

/// PostgreSQL's system column `xmin` on every catalog table, which DataGrip reads as each object's "state number"
/// (`N.xmin as state_number`, `C.xmin as column_state_number` of `pg_attribute`). One constant, as for rows written
/// when the cluster was created: Lakegate's catalog has no transaction history to show (and `age` of it is the
/// largest, see `functions.rs`, so DataGrip's "changed since" filters keep every row). Tables with an `oid` column
/// and the catalog tables without one ([`NO_OID_CATALOGS`]) have it; `information_schema` views have not.
fn with_xmin(name: &str, batch: RecordBatch) -> Result<RecordBatch, SqlError> {
    let has_oid = batch.schema().column_with_name("oid").is_some();
    if batch.schema().column_with_name("xmin").is_some() || !(has_oid || NO_OID_CATALOGS.contains(&name)) {
        return Ok(batch);
    }
    let mut fields: Vec<Field> = batch.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("xmin", DataType::Int64, true));
    let mut columns = batch.columns().to_vec();
    columns.push(int64(vec![BOOTSTRAP_XID; batch.num_rows()]));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| SqlError::Internal(e.to_string()))
}

/// PostgreSQL's catalog tables (not views) without an `oid` column: they have `xmin` all the same.
const NO_OID_CATALOGS: &[&str] = &[
    "pg_attribute",
    "pg_description",
    "pg_shdescription",
    "pg_index",
    "pg_inherits",
    "pg_depend",
    "pg_sequence",
    "pg_aggregate",
    "pg_range",
    "pg_foreign_table",
    "pg_partitioned_table",
    "pg_statistic_ext_data",
];

/// The transaction id of the rows initdb writes.
const BOOTSTRAP_XID: i64 = 1;

fn empty(columns: &[(&str, DataType)]) -> Result<RecordBatch, SqlError> {
    let fields: Vec<Field> = columns.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect();
    Ok(RecordBatch::new_empty(Arc::new(Schema::new(fields))))
}

/// The one database: the gateway's.
fn database() -> Result<RecordBatch, SqlError> {
    let none = || opt_text(vec![None]);
    batch(vec![
        ("oid", int64(vec![1])),
        ("datname", text(vec!["lakegate".into()])),
        ("datdba", int64(vec![10])),
        // 6 is UTF8 in PostgreSQL's encoding numbering.
        ("encoding", int32(vec![6])),
        ("datlocprovider", text(vec!["c".into()])),
        ("datistemplate", boolean(vec![false])),
        ("datallowconn", boolean(vec![true])),
        ("datconnlimit", int32(vec![-1])),
        ("dattablespace", int64(vec![0])),
        ("datcollate", text(vec!["C".into()])),
        ("datctype", text(vec!["C".into()])),
        ("daticulocale", none()),
        ("daticurules", none()),
        ("datcollversion", none()),
        ("datacl", none()),
    ])
}

/// Settings drivers read from `pg_settings` (pgJDBC: `max_index_keys`): constants of the dialect Lakegate
/// speaks, never the backend's configuration.
fn settings() -> Result<RecordBatch, SqlError> {
    let rows: &[(&str, &str)] = &[
        ("max_index_keys", "32"),
        ("max_identifier_length", "63"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
        ("standard_conforming_strings", "on"),
        ("integer_datetimes", "on"),
        ("DateStyle", "ISO, MDY"),
        ("TimeZone", "UTC"),
    ];
    let n = rows.len();
    batch(vec![
        ("name", text(rows.iter().map(|r| r.0.to_owned()).collect())),
        ("setting", text(rows.iter().map(|r| r.1.to_owned()).collect())),
        ("unit", opt_text(vec![None; n])),
        ("category", text(vec!["Preset Options".into(); n])),
        ("context", text(vec!["internal".into(); n])),
        ("vartype", text(vec!["string".into(); n])),
        ("source", text(vec!["default".into(); n])),
    ])
}

/// The oid of the caller's role (distinct from the owner `lakegate`, oid 10, of every listed object).
pub(super) const USER_OID: i64 = 16_000;

/// The roles a principal sees: itself only. Other users and the backend role are none of its business.
fn roles(user: &str) -> Result<RecordBatch, SqlError> {
    let no = || boolean(vec![false]);
    batch(vec![
        ("oid", int64(vec![USER_OID])),
        ("rolname", text(vec![user.to_owned()])),
        ("rolsuper", no()),
        ("rolinherit", boolean(vec![true])),
        ("rolcreaterole", no()),
        ("rolcreatedb", no()),
        ("rolcanlogin", boolean(vec![true])),
        ("rolreplication", no()),
        ("rolbypassrls", no()),
        ("rolconnlimit", int32(vec![-1])),
        ("rolpassword", opt_text(vec![None])),
        ("rolvaliduntil", opt_text(vec![None])),
        ("rolconfig", opt_text(vec![None])),
    ])
}

fn users(user: &str) -> Result<RecordBatch, SqlError> {
    let no = || boolean(vec![false]);
    batch(vec![
        ("usename", text(vec![user.to_owned()])),
        ("usesysid", int64(vec![USER_OID])),
        ("usecreatedb", no()),
        ("usesuper", no()),
        ("userepl", no()),
        ("usebypassrls", no()),
        ("passwd", opt_text(vec![None])),
        ("valuntil", opt_text(vec![None])),
        ("useconfig", opt_text(vec![None])),
    ])
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
        ("attinhcount", int32(vec![0; n])),
        ("attstattarget", int32(vec![-1; n])),
        // Storage and compression are the backend's business; `\d+` shows "extended" for every column.
        ("attstorage", text(vec!["x".into(); n])),
        ("attcompression", text(vec![String::new(); n])),
        ("attoptions", opt_text(vec![None; n])),
        ("attfdwoptions", opt_text(vec![None; n])),
        ("attacl", opt_text(vec![None; n])),
    ])
}

/// PostgreSQL's type modifier: `numeric(p,s)` -> ((p << 16) | s) + 4, `varchar(n)` -> n + 4.
pub(super) fn typmod_of(sql_type: &str) -> i32 {
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
        ("typcategory", text(TYPES.iter().map(|t| t.3.to_owned()).collect())),
        ("typispreferred", boolean(vec![false; n])),
        ("typisdefined", boolean(vec![true; n])),
        ("typbyval", boolean(TYPES.iter().map(|t| (1..=8).contains(&t.2)).collect())),
        ("typndims", int32(vec![0; n])),
        ("typdefault", opt_text(vec![None; n])),
        ("typacl", opt_text(vec![None; n])),
        // The I/O functions are procedures of pg_proc, which lists none here (0, as PostgreSQL shows `-`):
        // so no type is taken for an array (Npgsql tells arrays by `typreceive = array_recv`).
        ("typreceive", int64(vec![0; n])),
        ("typsend", int64(vec![0; n])),
        ("typoutput", int64(vec![0; n])),
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

/// A column's type as Trino names it in `information_schema.columns`.
fn trino_type(t: ColumnType, sql_type: &str) -> String {
    match t {
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int2 => "smallint".into(),
        ColumnType::Int4 => "integer".into(),
        ColumnType::Int8 => "bigint".into(),
        ColumnType::Float4 => "real".into(),
        ColumnType::Float8 => "double".into(),
        ColumnType::Numeric => {
            let m = typmod_of(sql_type);
            if m >= 4 {
                format!("decimal({},{})", ((m - 4) >> 16) & 0xffff, (m - 4) & 0xffff)
            } else {
                // What the Trino front declares for an unconstrained numeric result.
                "decimal(38,10)".into()
            }
        }
        ColumnType::Text => match typmod_of(sql_type) {
            m if m >= 4 => format!("varchar({})", m - 4),
            _ => "varchar".into(),
        },
        ColumnType::Date => "date".into(),
        ColumnType::Timestamp => "timestamp(6)".into(),
    }
}

fn info_columns(visible: &[Visible], form: super::CatalogForm) -> Result<RecordBatch, SqlError> {
    let (mut schema, mut table, mut column, mut pos, mut ty, mut udt, mut precision, mut scale) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for v in visible {
        for (i, (c, t, sql_type)) in v.columns.iter().enumerate() {
            schema.push(v.schema.clone());
            table.push(v.name.clone());
            column.push(c.clone());
            pos.push(i32::try_from(i + 1).unwrap_or(i32::MAX));
            ty.push(match form {
                super::CatalogForm::Postgres => t.pg_name().to_owned(),
                super::CatalogForm::Trino => trino_type(*t, sql_type),
            });
            udt.push(TYPES.iter().find(|x| x.0 == i64::from(t.oid())).map(|x| x.1).unwrap_or("text").to_owned());
            let m = typmod_of(sql_type);
            let numeric = *t == ColumnType::Numeric && m >= 4;
            precision.push(if numeric { Some(((m - 4) >> 16) & 0xffff) } else { None });
            scale.push(if numeric { Some((m - 4) & 0xffff) } else { None });
        }
    }
    let n = column.len();
    let mut columns = vec![
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
    ];
    if form == super::CatalogForm::Trino {
        // Trino's own columns of the view (no column has a comment here).
        columns.push(("comment", opt_text(vec![None; n])));
        columns.push(("extra_info", opt_text(vec![None; n])));
    }
    batch(columns)
}

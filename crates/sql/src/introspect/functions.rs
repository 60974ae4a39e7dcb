//! The functions of the catalog context, all in one place: what tools call in catalog queries.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use datafusion::prelude::SessionContext;

use super::tables::{TYPES, View};

/// Registers every function of the catalog context for `view`.
pub(super) fn register(ctx: &SessionContext, view: &View) {
    let oids: Vec<(String, i64)> = view.visible.iter().map(|v| (format!("{}.{}", v.schema, v.name), v.oid)).collect();
    let type_names: Vec<(i64, String)> = TYPES.iter().map(|(oid, name, ..)| (*oid, (*name).to_owned())).collect();
    for udf in functions(oids, type_names, &view.user) {
        ctx.register_udf(udf);
    }
}

fn settings() -> Vec<(String, String)> {
    let num = crate::session::SERVER_VERSION
        .split_once('.')
        .map(|(major, minor)| format!("{major}{minor:0>4}"))
        .unwrap_or_default();
    [
        ("default_table_access_method", "heap"),
        ("server_version", crate::session::SERVER_VERSION),
        ("server_version_num", num.as_str()),
        ("search_path", "\"$user\", public"),
        ("max_identifier_length", "63"),
        ("standard_conforming_strings", "on"),
        ("server_encoding", "UTF8"),
        ("client_encoding", "UTF8"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// The search path catalog queries see (`current_schemas`): the system catalog, then `public`.
const SEARCH_PATH: &[&str] = &["pg_catalog", "public"];

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
    /// A NULL bigint (sizes and counters Lakegate does not disclose: `pg_table_size`...).
    NullInt,
    /// `current_schemas(bool)`: the search path as an array.
    Schemas,
    /// Text in, text out from a fixed table (NULL for anything else): `current_setting`.
    Lookup(Vec<(String, String)>),
    /// `age(xid)`: the largest age for every transaction id, NULL for NULL.
    Age,
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
            FnKind::RegClass(_) | FnKind::ToRegType(_) | FnKind::NullInt => DataType::Int64,
            FnKind::Age => DataType::Int32,
            FnKind::Schemas => DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
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
            FnKind::NullInt => ColumnarValue::Scalar(ScalarValue::Int64(None)),
            FnKind::Lookup(table) => {
                let keys = first_as_text(0)?;
                let out = keys
                    .iter()
                    .map(|k| {
                        let k = k.as_deref()?;
                        table.iter().find(|(name, _)| name.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone())
                    })
                    .collect();
                ColumnarValue::Array(text_opt(out))
            }
            FnKind::Age => {
                let out: Vec<Option<i32>> = first_as_text(0)?.iter().map(|x| x.as_ref().map(|_| i32::MAX)).collect();
                ColumnarValue::Array(Arc::new(Int32Array::from(out)))
            }
            FnKind::Schemas => {
                let path: Vec<ScalarValue> =
                    SEARCH_PATH.iter().map(|s| ScalarValue::Utf8(Some((*s).to_owned()))).collect();
                ColumnarValue::Scalar(ScalarValue::List(ScalarValue::new_list_nullable(&path, &DataType::Utf8)))
            }
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
pub(super) fn format_type(name: &str, typmod: i32) -> String {
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

fn functions(oids: Vec<(String, i64)>, types: Vec<(i64, String)>, user: &str) -> Vec<ScalarUDF> {
    let any = || Signature::one_of(vec![TypeSignature::Nullary, TypeSignature::VariadicAny], Volatility::Immutable);
    let f = |name: &'static str, kind: FnKind| ScalarUDF::from(CatalogFn { name, kind, signature: any() });
    let version = format!("PostgreSQL {} (Lakegate {})", crate::session::SERVER_VERSION, env!("CARGO_PKG_VERSION"));
    vec![
        f("version", FnKind::Text(Some(version))),
        f("current_database", FnKind::Text(Some("lakegate".into()))),
        f("current_schema", FnKind::Text(Some("public".into()))),
        // The caller, as `pg_roles` shows it: the token's subject.
        f("current_user", FnKind::Text(Some(user.to_owned()))),
        f("session_user", FnKind::Text(Some(user.to_owned()))),
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
        f("pg_function_is_visible", FnKind::Bool(true)),
        f("has_database_privilege", FnKind::Bool(true)),
        f("has_function_privilege", FnKind::Bool(true)),
        f("has_sequence_privilege", FnKind::Bool(true)),
        f("pg_get_function_result", FnKind::Text(None)),
        f("pg_get_function_arguments", FnKind::Text(None)),
        f("pg_get_function_identity_arguments", FnKind::Text(None)),
        f("pg_get_viewdef", FnKind::Text(None)),
        f("pg_get_triggerdef", FnKind::Text(None)),
        f("pg_get_ruledef", FnKind::Text(None)),
        f("pg_get_statisticsobjdef_columns", FnKind::Text(None)),
        f("pg_tablespace_location", FnKind::Text(None)),
        f("pg_size_pretty", FnKind::Text(None)),
        f("pg_table_size", FnKind::NullInt),
        f("pg_relation_size", FnKind::NullInt),
        f("pg_total_relation_size", FnKind::NullInt),
        f("pg_database_size", FnKind::NullInt),
        f("pg_stat_get_numscans", FnKind::NullInt),
        f("current_schemas", FnKind::Schemas),
        // `age(xid)`, which DataGrip's introspection filters by (`age(T.xmin) <= ... age($2::varchar::xid)`):
        // every `xmin` here is the bootstrap transaction, whose age PostgreSQL reports as the largest (2^31 - 1),
        // and so is any transaction id a tool passes, so "changed since" keeps every row a principal may see: a
        // refresh after a policy change reads the whole governed view anew.
        f("age", FnKind::Age),
        // Settings tools read while reflecting, answered as constants of the dialect Lakegate speaks: the
        // backend's settings are never read (the data path refuses `current_setting` altogether).
        f("current_setting", FnKind::Lookup(settings())),
        // Every array a catalog holds here is NULL (options, ACLs), so its text is too.
        f("array_to_string", FnKind::ToText),
        f("lakegate_regclass", FnKind::RegClass(oids)),
        f("lakegate_text", FnKind::ToText),
        f("to_regtype", FnKind::ToRegType(types.clone())),
        f("format_type", FnKind::FormatType(types)),
    ]
}

//! What a request touches, as Cedar entities: S3 buckets, prefixes and objects; databases, tables, columns.
//!
//! An object is `in` every prefix above it (`lake/sales/2024/` and `lake/sales/`) and its bucket, so a grant
//! `resource in Prefix::"lake/sales/"` covers a subtree. A column is `in` its table, which is `in` its database.
//! Roles (STS) and audiences (token exchange) stand alone.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use cedar_policy::EntityUid;

use super::PolicyError;
use super::catalog::Catalog;
use super::closure::{OwnEntity, plain_entity, string_entity};

/// Longest object key S3 accepts, in bytes.
const MAX_KEY_BYTES: usize = 1024;

/// A resource of a decision.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resource {
    Bucket(String),
    /// A listing prefix or a granted prefix; ends in `/` unless it is a partial listing prefix.
    Prefix {
        bucket: String,
        prefix: String,
    },
    Object {
        bucket: String,
        key: String,
    },
    Database(String),
    Table {
        database: String,
        table: String,
    },
    Column {
        database: String,
        table: String,
        column: String,
    },
    /// An STS role profile, by its configured name.
    Role(String),
    /// The audience of a token the token service would issue.
    Audience(String),
}

impl Resource {
    /// An object, refusing keys that could mean something else to a backend (`..` segments, NUL, empty).
    pub fn object(bucket: &str, key: &str) -> Result<Self, PolicyError> {
        check_bucket(bucket)?;
        check_key(key)?;
        Ok(Resource::Object { bucket: bucket.into(), key: key.into() })
    }

    /// A prefix (for listing or granting); the empty prefix is the bucket itself.
    pub fn prefix(bucket: &str, prefix: &str) -> Result<Self, PolicyError> {
        check_bucket(bucket)?;
        if prefix.is_empty() {
            return Ok(Resource::Bucket(bucket.into()));
        }
        check_key(prefix)?;
        Ok(Resource::Prefix { bucket: bucket.into(), prefix: prefix.into() })
    }

    /// Parses `s3://bucket/key`, `s3://bucket/prefix/` or an entity literal such as `Table::"sales.orders"`.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            let key = key.strip_suffix('*').unwrap_or(key);
            return if key.is_empty() || key.ends_with('/') {
                Resource::prefix(bucket, key)
            } else {
                Resource::object(bucket, key)
            };
        }
        let uid = EntityUid::from_str(text)
            .map_err(|_| PolicyError::BadResource(format!("{text:?}: expected s3://... or Type::\"id\"")))?;
        let id = uid.id().unescaped().to_owned();
        let parts: Vec<&str> = id.split('.').collect();
        match (uid.type_name().to_string().as_str(), parts.as_slice()) {
            ("Bucket", _) => {
                check_bucket(&id)?;
                Ok(Resource::Bucket(id))
            }
            ("Prefix" | "Object", _) => {
                let (bucket, key) = id
                    .split_once('/')
                    .ok_or_else(|| PolicyError::BadResource(format!("{text}: expected bucket/key")))?;
                if uid.type_name().to_string() == "Prefix" {
                    Resource::prefix(bucket, key)
                } else {
                    Resource::object(bucket, key)
                }
            }
            ("Database", [db]) => Ok(Resource::Database((*db).into())),
            ("Table", [db, t]) => Ok(Resource::Table { database: (*db).into(), table: (*t).into() }),
            ("Column", [db, t, c]) => {
                Ok(Resource::Column { database: (*db).into(), table: (*t).into(), column: (*c).into() })
            }
            ("Role", _) => Ok(Resource::Role(id)),
            ("Audience", _) => Ok(Resource::Audience(id)),
            _ => Err(PolicyError::BadResource(format!("{text}: unknown resource type or id shape"))),
        }
    }

    /// The Cedar entity type of this resource.
    pub fn kind(&self) -> &'static str {
        match self {
            Resource::Bucket(_) => "Bucket",
            Resource::Prefix { .. } => "Prefix",
            Resource::Object { .. } => "Object",
            Resource::Database(_) => "Database",
            Resource::Table { .. } => "Table",
            Resource::Column { .. } => "Column",
            Resource::Role(_) => "Role",
            Resource::Audience(_) => "Audience",
        }
    }

    /// The Cedar entity id of this resource.
    pub fn uid(&self) -> EntityUid {
        match self {
            Resource::Bucket(b) => uid("Bucket", b),
            Resource::Prefix { bucket, prefix } => uid("Prefix", &format!("{bucket}/{prefix}")),
            Resource::Object { bucket, key } => uid("Object", &format!("{bucket}/{key}")),
            Resource::Database(d) => uid("Database", d),
            Resource::Table { database, table } => uid("Table", &format!("{database}.{table}")),
            Resource::Column { database, table, column } => uid("Column", &format!("{database}.{table}.{column}")),
            Resource::Role(name) => uid("Role", name),
            Resource::Audience(name) => uid("Audience", name),
        }
    }

    /// The resource entity and its ancestors, with catalog tags for tables and columns.
    pub(super) fn entities(&self, catalog: &Catalog) -> Vec<OwnEntity> {
        let mut out = Vec::new();
        match self {
            Resource::Bucket(b) => out.push(plain_entity(uid("Bucket", b), [])),
            Resource::Prefix { bucket, prefix } => {
                push_prefix_chain(&mut out, bucket, prefix, Some(self.uid()));
            }
            Resource::Object { bucket, key } => {
                // The object itself, then each `/`-terminated prefix of its key (the key itself included when it
                // is a folder marker such as `sales/`), then the bucket.
                let parent = s3_parent(bucket, key, true);
                out.push(plain_entity(self.uid(), [parent]));
                push_prefix_chain(&mut out, bucket, key, None);
            }
            Resource::Database(d) => out.push(plain_entity(uid("Database", d), [])),
            Resource::Role(_) | Resource::Audience(_) => out.push(plain_entity(self.uid(), [])),
            Resource::Table { database, table } => {
                out.push(table_entity(catalog, database, table));
                out.push(plain_entity(uid("Database", database), []));
            }
            Resource::Column { database, table, column } => {
                let def = catalog.table(database, table).and_then(|t| t.columns.iter().find(|c| &c.name == column));
                out.push(tagged(self.uid(), uid("Table", &format!("{database}.{table}")), def.map(|c| &c.tags)));
                out.push(table_entity(catalog, database, table));
                out.push(plain_entity(uid("Database", database), []));
            }
        }
        out
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Bucket(b) => write!(f, "s3://{b}/"),
            Resource::Prefix { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
            Resource::Object { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            other => write!(f, "{}", other.uid()),
        }
    }
}

fn uid(type_name: &'static str, id: &str) -> EntityUid {
    // Type names are ours; the id is arbitrary text, which Cedar accepts as-is.
    super::names::uid(type_name, id)
}

fn table_entity(catalog: &Catalog, database: &str, table: &str) -> OwnEntity {
    let tags = catalog.table(database, table).map(|t| &t.tags);
    tagged(uid("Table", &format!("{database}.{table}")), uid("Database", database), tags)
}

/// A table or column entity in `parent`, with the catalog's tags if it has any.
fn tagged(id: EntityUid, parent: EntityUid, tags: Option<&BTreeMap<String, String>>) -> OwnEntity {
    let tags = tags.into_iter().flatten().map(|(k, v)| (k.as_str(), v.as_str()));
    string_entity(id, [], [parent], tags)
}

/// The nearest container of `key`: the longest `/`-terminated proper prefix (or the key itself when
/// `include_self` and it ends in `/`), else the bucket.
fn s3_parent(bucket: &str, key: &str, include_self: bool) -> EntityUid {
    let end = if include_self && key.ends_with('/') {
        Some(key.len())
    } else {
        key.strip_suffix('/').unwrap_or(key).rfind('/').map(|i| i + 1)
    };
    match end.and_then(|end| key.get(..end)) {
        Some(prefix) if !prefix.is_empty() => uid("Prefix", &format!("{bucket}/{prefix}")),
        _ => uid("Bucket", bucket),
    }
}

/// Pushes the prefix entities above `key` (each pointing to the next one up) and the bucket. When `first` is
/// given, it is the entity for `key` itself (a prefix resource) and is pushed with its parent.
fn push_prefix_chain(out: &mut Vec<OwnEntity>, bucket: &str, key: &str, first: Option<EntityUid>) {
    let bucket_uid = uid("Bucket", bucket);
    let mut parent = bucket_uid.clone();
    let first_at = out.len();
    for (slash, _) in key.match_indices('/') {
        let end = slash + 1;
        if first.is_some() && end == key.len() {
            // The prefix resource itself, put first below.
            break;
        }
        let Some(prefix) = key.get(..end) else { continue };
        let id = uid("Prefix", &format!("{bucket}/{prefix}"));
        out.push(plain_entity(id.clone(), [parent]));
        parent = id;
    }
    if let Some(first) = first {
        out.insert(first_at, plain_entity(first, [parent]));
    }
    out.push(plain_entity(bucket_uid, []));
}

fn check_bucket(bucket: &str) -> Result<(), PolicyError> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.contains("..");
    if ok { Ok(()) } else { Err(PolicyError::BadResource(format!("invalid bucket name {bucket:?}"))) }
}

fn check_key(key: &str) -> Result<(), PolicyError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(PolicyError::BadResource("object key must be 1 to 1024 bytes".into()));
    }
    if key.chars().any(|c| c.is_control()) {
        return Err(PolicyError::BadResource("object key contains control characters".into()));
    }
    // `.` and `..` segments mean nothing to S3 but a path to file-backed stores and to some proxies: refuse them
    // rather than guess which meaning a backend takes. A leading `/` or `//` would name a different key per store.
    if key.split('/').any(|seg| seg == "." || seg == "..") || key.starts_with('/') || key.contains("//") {
        return Err(PolicyError::BadResource(format!("object key {key:?} has ambiguous path segments")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(r: &Resource) -> Vec<String> {
        r.entities(&Catalog::default()).iter().map(|e| e.uid().to_string()).collect()
    }

    #[test]
    fn an_object_is_in_every_prefix_above_it_and_its_bucket() {
        let r = Resource::parse("s3://lake/sales/2024/q1.parquet").expect("parses");
        assert_eq!(
            ids(&r),
            vec![
                r#"Object::"lake/sales/2024/q1.parquet""#,
                r#"Prefix::"lake/sales/""#,
                r#"Prefix::"lake/sales/2024/""#,
                r#"Bucket::"lake""#
            ]
        );
    }

    #[test]
    fn a_partial_listing_prefix_sits_under_the_last_full_prefix() {
        let r = Resource::prefix("lake", "sales/20").expect("prefix");
        assert_eq!(ids(&r), vec![r#"Prefix::"lake/sales/20""#, r#"Prefix::"lake/sales/""#, r#"Bucket::"lake""#]);
    }

    #[test]
    fn dot_segments_and_empty_segments_are_refused() {
        for key in ["sales/../hr/x", "./x", "sales/./x", "/abs", "a//b", "x\0y"] {
            assert!(Resource::object("lake", key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn sql_entities_parse_from_literals() {
        assert_eq!(
            Resource::parse(r#"Column::"sales.orders.card_number""#).expect("parses"),
            Resource::Column { database: "sales".into(), table: "orders".into(), column: "card_number".into() }
        );
        assert!(Resource::parse(r#"Table::"nodot""#).is_err());
    }

    #[test]
    fn roles_and_audiences_parse_from_literals_and_stand_alone() {
        let role = Resource::parse(r#"Role::"lakegate-sales""#).expect("parses");
        assert_eq!(role, Resource::Role("lakegate-sales".into()));
        assert_eq!(ids(&role), vec![r#"Role::"lakegate-sales""#]);
        assert_eq!(Resource::parse(r#"Audience::"lakegate""#).expect("parses"), Resource::Audience("lakegate".into()));
    }
}

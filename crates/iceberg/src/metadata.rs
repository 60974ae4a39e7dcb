//! Iceberg table metadata (format version 2): creating it, checking a commit's requirements against it, and
//! applying a commit's updates — the spec's `TableMetadata`, `TableRequirement` and `TableUpdate`.
//!
//! Metadata is kept as the JSON the spec defines, not as Rust types of every field: engines write fields this
//! code has no need to understand (statistics, encryption keys, row lineage), and they must come back as they
//! were written. The fields a commit checks or changes are read and written by name, with the spec's rules.

use serde_json::{Map, Value, json};

/// A commit or create that breaks the spec's rules (400), or one whose requirements no longer hold (409).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetadataError {
    #[error("{0}")]
    Invalid(String),
    #[error("requirement failed: {0}")]
    RequirementFailed(String),
}

fn invalid(msg: impl Into<String>) -> MetadataError {
    MetadataError::Invalid(msg.into())
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The highest field id in a schema's fields, nested ones included.
fn max_field_id(value: &Value) -> i64 {
    let mut max = 0;
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if matches!(k.as_str(), "id" | "element-id" | "key-id" | "value-id") {
                    max = max.max(v.as_i64().unwrap_or(0));
                }
                max = max.max(max_field_id(v));
            }
        }
        Value::Array(items) => {
            for v in items {
                max = max.max(max_field_id(v));
            }
        }
        _ => {}
    }
    max
}

fn checked_schema(schema: &Value) -> Result<(), MetadataError> {
    if schema.get("type").and_then(Value::as_str) != Some("struct")
        || !schema.get("fields").is_some_and(Value::is_array)
    {
        return Err(invalid("a schema is a struct with fields"));
    }
    Ok(())
}

/// What `CreateTableRequest` asks for, with the location Lakegate assigned.
pub struct NewTable<'a> {
    pub location: &'a str,
    pub schema: &'a Value,
    pub partition_spec: Option<&'a Value>,
    pub write_order: Option<&'a Value>,
    pub properties: Map<String, Value>,
}

/// The first metadata of a new table.
pub fn create(table: NewTable<'_>) -> Result<Value, MetadataError> {
    checked_schema(table.schema)?;
    let mut schema = table.schema.clone();
    if let Some(s) = schema.as_object_mut() {
        s.insert("schema-id".into(), json!(0));
    }
    let mut spec = table.partition_spec.cloned().unwrap_or_else(|| json!({"spec-id": 0, "fields": []}));
    let mut last_partition_id = 999;
    if let Some(fields) = spec.get_mut("fields").and_then(Value::as_array_mut) {
        for field in fields {
            let id = match field.get("field-id").and_then(Value::as_i64) {
                Some(id) => id,
                None => last_partition_id + 1,
            };
            last_partition_id = last_partition_id.max(id);
            if let Some(f) = field.as_object_mut() {
                f.insert("field-id".into(), json!(id));
            }
        }
    } else {
        return Err(invalid("a partition spec has fields"));
    }
    if let Some(s) = spec.as_object_mut() {
        s.insert("spec-id".into(), json!(0));
    }
    let order = table.write_order.cloned().unwrap_or_else(|| json!({"order-id": 0, "fields": []}));
    let order_id = order.get("order-id").and_then(Value::as_i64).unwrap_or(0);
    let mut properties = table.properties;
    // `format-version` is a request for the table's format, not a property the table keeps.
    match properties.remove("format-version") {
        None => {}
        Some(Value::String(v)) if v == "2" => {}
        Some(v) => return Err(invalid(format!("format-version {v} is not supported: Lakegate writes version 2"))),
    }
    let mut metadata = empty_for_create();
    if let Some(m) = metadata.as_object_mut() {
        m.insert("table-uuid".into(), json!(uuid::Uuid::new_v4().to_string()));
        m.insert("location".into(), json!(table.location));
        m.insert("last-updated-ms".into(), json!(now_ms()));
        m.insert("last-column-id".into(), json!(max_field_id(&schema)));
        m.insert("schemas".into(), json!([schema]));
        m.insert("partition-specs".into(), json!([spec]));
        m.insert("last-partition-id".into(), json!(last_partition_id));
        m.insert("default-sort-order-id".into(), json!(order_id));
        m.insert("sort-orders".into(), json!([order]));
        m.insert("properties".into(), Value::Object(properties));
    }
    Ok(metadata)
}

fn int(v: &Value, key: &str) -> Option<i64> {
    v.get(key).and_then(Value::as_i64)
}

/// The snapshot a ref points at, `None` when the ref does not exist.
fn ref_snapshot(metadata: &Value, name: &str) -> Option<i64> {
    metadata.get("refs").and_then(|r| r.get(name)).and_then(|r| int(r, "snapshot-id")).or_else(|| {
        // Writers of the v1 era kept only `current-snapshot-id`, which is the main branch.
        (name == "main").then(|| int(metadata, "current-snapshot-id").filter(|id| *id >= 0)).flatten()
    })
}

/// Checks a commit's requirements against the current metadata (`None`: the table does not exist).
pub fn check_requirements(metadata: Option<&Value>, requirements: &[Value]) -> Result<(), MetadataError> {
    for req in requirements {
        let kind = req.get("type").and_then(Value::as_str).unwrap_or_default();
        let failed = |what: String| Err(MetadataError::RequirementFailed(what));
        if kind == "assert-create" {
            if metadata.is_some() {
                return failed("the table already exists".into());
            }
            continue;
        }
        let Some(m) = metadata else {
            return failed(format!("{kind}: the table does not exist"));
        };
        let expect = |field: &str, key: &str| -> Result<(), MetadataError> {
            let want = req.get(key).ok_or_else(|| invalid(format!("{kind} needs {key}")))?;
            match m.get(field) {
                Some(have) if have == want => Ok(()),
                have => failed(format!("{kind}: expected {field} {want}, found {}", have.unwrap_or(&Value::Null))),
            }
        };
        match kind {
            "assert-table-uuid" => expect("table-uuid", "uuid")?,
            "assert-ref-snapshot-id" => {
                let name = req
                    .get("ref")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("assert-ref-snapshot-id needs ref"))?;
                let want = req.get("snapshot-id").and_then(Value::as_i64);
                let have = ref_snapshot(m, name);
                if want != have {
                    let show = |v: Option<i64>| v.map_or("none".to_owned(), |v| v.to_string());
                    return failed(format!("branch {name} is at {}, not {}", show(have), show(want)));
                }
            }
            "assert-last-assigned-field-id" => expect("last-column-id", "last-assigned-field-id")?,
            "assert-current-schema-id" => expect("current-schema-id", "current-schema-id")?,
            "assert-last-assigned-partition-id" => expect("last-partition-id", "last-assigned-partition-id")?,
            "assert-default-spec-id" => expect("default-spec-id", "default-spec-id")?,
            "assert-default-sort-order-id" => expect("default-sort-order-id", "default-sort-order-id")?,
            other => return Err(invalid(format!("unknown requirement {other:?}"))),
        }
    }
    Ok(())
}

/// Applies a commit's updates to `metadata` (the table's, or for a create the first metadata made from the
/// updates). `location_ok` decides whether a `set-location` may stand.
pub fn apply_updates(
    metadata: &mut Value,
    updates: &[Value],
    location_ok: &dyn Fn(&str) -> bool,
) -> Result<(), MetadataError> {
    let mut last_schema: Option<i64> = None;
    let mut last_spec: Option<i64> = None;
    let mut last_order: Option<i64> = None;
    for update in updates {
        let action = update.get("action").and_then(Value::as_str).unwrap_or_default();
        let m = metadata.as_object_mut().ok_or_else(|| invalid("table metadata is not an object"))?;
        match action {
            "assign-uuid" => {
                let uuid =
                    update.get("uuid").and_then(Value::as_str).ok_or_else(|| invalid("assign-uuid needs uuid"))?;
                match m.get("table-uuid").and_then(Value::as_str) {
                    Some(have) if have != uuid => return Err(invalid("a table's uuid cannot change")),
                    _ => {
                        m.insert("table-uuid".into(), json!(uuid));
                    }
                }
            }
            "upgrade-format-version" => match int(update, "format-version") {
                Some(2) => {}
                other => {
                    return Err(invalid(format!(
                        "format-version {other:?} is not supported: Lakegate writes version 2"
                    )));
                }
            },
            "add-schema" => {
                let mut schema = update.get("schema").cloned().ok_or_else(|| invalid("add-schema needs schema"))?;
                checked_schema(&schema)?;
                let schemas = array_mut(m, "schemas");
                let next = schemas.iter().filter_map(|s| int(s, "schema-id")).max().map_or(0, |i| i + 1);
                let id = match int(&schema, "schema-id") {
                    Some(id) if id >= 0 && !schemas.iter().any(|s| int(s, "schema-id") == Some(id)) => id,
                    _ => next,
                };
                if let Some(s) = schema.as_object_mut() {
                    s.insert("schema-id".into(), json!(id));
                }
                let highest = max_field_id(&schema);
                schemas.push(schema);
                let last = m.get("last-column-id").and_then(Value::as_i64).unwrap_or(0);
                let given = int(update, "last-column-id").unwrap_or(0);
                m.insert("last-column-id".into(), json!(last.max(highest).max(given)));
                last_schema = Some(id);
            }
            "set-current-schema" => {
                let id = resolve_last(int(update, "schema-id"), last_schema, "schema")?;
                if !m
                    .get("schemas")
                    .and_then(Value::as_array)
                    .is_some_and(|s| s.iter().any(|s| int(s, "schema-id") == Some(id)))
                {
                    return Err(invalid(format!("no schema {id}")));
                }
                m.insert("current-schema-id".into(), json!(id));
            }
            "add-spec" => {
                let mut spec = update.get("spec").cloned().ok_or_else(|| invalid("add-spec needs spec"))?;
                let specs = array_mut(m, "partition-specs");
                let next = specs.iter().filter_map(|s| int(s, "spec-id")).max().map_or(0, |i| i + 1);
                let id = match int(&spec, "spec-id") {
                    Some(id) if id >= 0 && !specs.iter().any(|s| int(s, "spec-id") == Some(id)) => id,
                    _ => next,
                };
                let mut highest = 999;
                let mut assign = m.get("last-partition-id").and_then(Value::as_i64).unwrap_or(999);
                if let Some(fields) = spec.get_mut("fields").and_then(Value::as_array_mut) {
                    for f in fields {
                        let fid = match int(f, "field-id") {
                            Some(fid) => fid,
                            None => {
                                assign += 1;
                                assign
                            }
                        };
                        highest = highest.max(fid);
                        if let Some(f) = f.as_object_mut() {
                            f.insert("field-id".into(), json!(fid));
                        }
                    }
                }
                if let Some(s) = spec.as_object_mut() {
                    s.insert("spec-id".into(), json!(id));
                }
                array_mut(m, "partition-specs").push(spec);
                let last = m.get("last-partition-id").and_then(Value::as_i64).unwrap_or(999);
                m.insert("last-partition-id".into(), json!(last.max(highest)));
                last_spec = Some(id);
            }
            "set-default-spec" => {
                let id = resolve_last(int(update, "spec-id"), last_spec, "partition spec")?;
                m.insert("default-spec-id".into(), json!(id));
            }
            "add-sort-order" => {
                let mut order =
                    update.get("sort-order").cloned().ok_or_else(|| invalid("add-sort-order needs sort-order"))?;
                let orders = array_mut(m, "sort-orders");
                let id = match int(&order, "order-id") {
                    Some(id) if !orders.iter().any(|o| int(o, "order-id") == Some(id)) => id,
                    _ => orders.iter().filter_map(|o| int(o, "order-id")).max().map_or(1, |i| i + 1),
                };
                if let Some(o) = order.as_object_mut() {
                    o.insert("order-id".into(), json!(id));
                }
                orders.push(order);
                last_order = Some(id);
            }
            "set-default-sort-order" => {
                let id = resolve_last(int(update, "sort-order-id"), last_order, "sort order")?;
                m.insert("default-sort-order-id".into(), json!(id));
            }
            "add-snapshot" => {
                let snapshot = update.get("snapshot").cloned().ok_or_else(|| invalid("add-snapshot needs snapshot"))?;
                let id = int(&snapshot, "snapshot-id").ok_or_else(|| invalid("a snapshot needs snapshot-id"))?;
                let snapshots = array_mut(m, "snapshots");
                if snapshots.iter().any(|s| int(s, "snapshot-id") == Some(id)) {
                    return Err(invalid(format!("snapshot {id} already exists")));
                }
                let sequence = int(&snapshot, "sequence-number").unwrap_or(0);
                snapshots.push(snapshot);
                let last = m.get("last-sequence-number").and_then(Value::as_i64).unwrap_or(0);
                if sequence <= last && sequence != 0 {
                    return Err(MetadataError::RequirementFailed(format!(
                        "snapshot sequence number {sequence} is not after the table's {last}"
                    )));
                }
                m.insert("last-sequence-number".into(), json!(last.max(sequence)));
            }
            "set-snapshot-ref" => {
                let name = update
                    .get("ref-name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("set-snapshot-ref needs ref-name"))?;
                let id = int(update, "snapshot-id").ok_or_else(|| invalid("set-snapshot-ref needs snapshot-id"))?;
                if !m
                    .get("snapshots")
                    .and_then(Value::as_array)
                    .is_some_and(|s| s.iter().any(|s| int(s, "snapshot-id") == Some(id)))
                {
                    return Err(invalid(format!("no snapshot {id}")));
                }
                let mut reference = Map::new();
                for (k, v) in update.as_object().into_iter().flatten() {
                    if !matches!(k.as_str(), "action" | "ref-name") {
                        reference.insert(k.clone(), v.clone());
                    }
                }
                object_mut(m, "refs").insert(name.to_owned(), Value::Object(reference));
                if name == "main" {
                    m.insert("current-snapshot-id".into(), json!(id));
                    array_mut(m, "snapshot-log").push(json!({"timestamp-ms": now_ms(), "snapshot-id": id}));
                }
            }
            "remove-snapshot-ref" => {
                let name = update
                    .get("ref-name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("remove-snapshot-ref needs ref-name"))?;
                object_mut(m, "refs").remove(name);
                if name == "main" {
                    m.insert("current-snapshot-id".into(), Value::Null);
                }
            }
            "remove-snapshots" => {
                let ids: Vec<i64> = update
                    .get("snapshot-ids")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_i64)
                    .collect();
                array_mut(m, "snapshots").retain(|s| !int(s, "snapshot-id").is_some_and(|id| ids.contains(&id)));
                object_mut(m, "refs").retain(|_, r| !int(r, "snapshot-id").is_some_and(|id| ids.contains(&id)));
                if m.get("current-snapshot-id").and_then(Value::as_i64).is_some_and(|id| ids.contains(&id)) {
                    m.insert("current-snapshot-id".into(), Value::Null);
                }
            }
            "set-location" => {
                let location = update
                    .get("location")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("set-location needs location"))?;
                if !location_ok(location) {
                    return Err(invalid("Lakegate assigns table locations; set-location to another place is refused"));
                }
                m.insert("location".into(), json!(location.trim_end_matches('/')));
            }
            "set-properties" => {
                let updates = update
                    .get("updates")
                    .and_then(Value::as_object)
                    .ok_or_else(|| invalid("set-properties needs updates"))?;
                let props = object_mut(m, "properties");
                for (k, v) in updates {
                    props.insert(k.clone(), v.clone());
                }
            }
            "remove-properties" => {
                let removals = update
                    .get("removals")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid("remove-properties needs removals"))?;
                let props = object_mut(m, "properties");
                for k in removals.iter().filter_map(Value::as_str) {
                    props.remove(k);
                }
            }
            "set-statistics" | "set-partition-statistics" => {
                let key = if action == "set-statistics" { "statistics" } else { "partition-statistics" };
                let file = update
                    .get(if action == "set-statistics" { "statistics" } else { "partition-statistics" })
                    .cloned()
                    .ok_or_else(|| invalid(format!("{action} needs {key}")))?;
                let id = int(&file, "snapshot-id");
                let list = array_mut(m, key);
                list.retain(|f| int(f, "snapshot-id") != id);
                list.push(file);
            }
            "remove-statistics" | "remove-partition-statistics" => {
                let key = if action == "remove-statistics" { "statistics" } else { "partition-statistics" };
                let id = int(update, "snapshot-id");
                array_mut(m, key).retain(|f| int(f, "snapshot-id") != id);
            }
            "remove-partition-specs" | "remove-schemas" => {
                let (list, id_key, ids_key, current) = if action == "remove-schemas" {
                    ("schemas", "schema-id", "schema-ids", "current-schema-id")
                } else {
                    ("partition-specs", "spec-id", "spec-ids", "default-spec-id")
                };
                let ids: Vec<i64> = update
                    .get(ids_key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_i64)
                    .collect();
                if m.get(current).and_then(Value::as_i64).is_some_and(|c| ids.contains(&c)) {
                    return Err(invalid(format!("{action}: the current one cannot be removed")));
                }
                array_mut(m, list).retain(|s| !int(s, id_key).is_some_and(|id| ids.contains(&id)));
            }
            other => return Err(invalid(format!("unsupported update action {other:?}"))),
        }
    }
    if let Some(m) = metadata.as_object_mut() {
        m.insert("last-updated-ms".into(), json!(now_ms()));
    }
    Ok(())
}

/// `-1` means "the one added last in this commit".
fn resolve_last(id: Option<i64>, last: Option<i64>, what: &str) -> Result<i64, MetadataError> {
    match id {
        Some(-1) => last.ok_or_else(|| invalid(format!("-1 names the {what} added last, but none was added"))),
        Some(id) => Ok(id),
        None => Err(invalid(format!("the {what} id is missing"))),
    }
}

fn array_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let slot = m.entry(key.to_owned()).or_insert_with(|| json!([]));
    if !slot.is_array() {
        *slot = json!([]);
    }
    match slot {
        Value::Array(a) => a,
        _ => unreachable_array(),
    }
}

fn object_mut<'a>(m: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let slot = m.entry(key.to_owned()).or_insert_with(|| json!({}));
    if !slot.is_object() {
        *slot = json!({});
    }
    match slot {
        Value::Object(o) => o,
        _ => unreachable_object(),
    }
}

#[cold]
#[allow(clippy::panic, reason = "the slot was made an array on the line before")]
fn unreachable_array() -> &'static mut Vec<Value> {
    panic!("not an array")
}

#[cold]
#[allow(clippy::panic, reason = "the slot was made an object on the line before")]
fn unreachable_object() -> &'static mut Map<String, Value> {
    panic!("not an object")
}

/// The metadata a stage-create commit starts from (and a new table is made on): empty lists and the format
/// version, filled in by its updates.
pub fn empty_for_create() -> Value {
    json!({
        "format-version": 2,
        "last-sequence-number": 0,
        "last-column-id": 0,
        "current-schema-id": 0,
        "schemas": [],
        "default-spec-id": 0,
        "partition-specs": [],
        "last-partition-id": 999,
        "default-sort-order-id": 0,
        "sort-orders": [],
        "properties": {},
        "current-snapshot-id": null,
        "refs": {},
        "snapshots": [],
        "snapshot-log": [],
        "metadata-log": [],
        "statistics": [],
        "partition-statistics": [],
    })
}

/// The current snapshot's number in the metadata-file name sequence: `00042-<uuid>.metadata.json` -> 42.
pub fn file_version(location: &str) -> Option<u64> {
    let name = location.rsplit('/').next()?;
    name.split('-').next()?.parse().ok()
}

/// The current schema's top-level column names.
pub fn current_columns(metadata: &Value) -> Vec<String> {
    let current = int(metadata, "current-schema-id");
    metadata
        .get("schemas")
        .and_then(Value::as_array)
        .and_then(|s| s.iter().find(|s| int(s, "schema-id") == current))
        .and_then(|s| s.get("fields"))
        .and_then(Value::as_array)
        .map(|fields| fields.iter().filter_map(|f| f.get("name").and_then(Value::as_str).map(str::to_owned)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn schema() -> Value {
        json!({"type": "struct", "schema-id": 0, "fields": [
            {"id": 1, "name": "id", "type": "long", "required": true},
            {"id": 2, "name": "tags", "type": {"type": "list", "element-id": 3, "element": "string", "element-required": false}, "required": false}
        ]})
    }

    fn table() -> Value {
        create(NewTable {
            location: "s3://lake/iceberg/ns/t-1",
            schema: &schema(),
            partition_spec: None,
            write_order: None,
            properties: Map::new(),
        })
        .unwrap()
    }

    fn snapshot(id: i64, parent: Option<i64>, seq: i64) -> Value {
        json!({"action": "add-snapshot", "snapshot": {"snapshot-id": id, "parent-snapshot-id": parent, "sequence-number": seq,
               "timestamp-ms": 1, "manifest-list": "s3://lake/x.avro", "summary": {"operation": "append"}}})
    }

    fn main_ref(id: i64) -> Value {
        json!({"action": "set-snapshot-ref", "ref-name": "main", "type": "branch", "snapshot-id": id})
    }

    #[test]
    fn a_new_table_counts_nested_field_ids_and_keeps_no_format_version_property() {
        let mut props = Map::new();
        props.insert("format-version".into(), json!("2"));
        props.insert("owner".into(), json!("alice"));
        let m = create(NewTable {
            location: "s3://l/t",
            schema: &schema(),
            partition_spec: None,
            write_order: None,
            properties: props,
        })
        .unwrap();
        assert_eq!(m["last-column-id"], 3);
        assert_eq!(m["properties"], json!({"owner": "alice"}));
        assert_eq!(m["last-partition-id"], 999);
        assert_eq!(current_columns(&m), vec!["id", "tags"]);
    }

    #[test]
    fn an_append_moves_main_and_the_sequence_number() {
        let mut m = table();
        apply_updates(&mut m, &[snapshot(10, None, 1), main_ref(10)], &|_| false).unwrap();
        assert_eq!(m["current-snapshot-id"], 10);
        assert_eq!(m["last-sequence-number"], 1);
        assert_eq!(ref_snapshot(&m, "main"), Some(10));
    }

    #[test]
    fn requirements_fail_when_another_commit_came_first() {
        let mut m = table();
        let req = json!({"type": "assert-ref-snapshot-id", "ref": "main", "snapshot-id": null});
        check_requirements(Some(&m), std::slice::from_ref(&req)).unwrap();
        apply_updates(&mut m, &[snapshot(10, None, 1), main_ref(10)], &|_| false).unwrap();
        assert!(matches!(check_requirements(Some(&m), &[req]), Err(MetadataError::RequirementFailed(_))));
        let uuid = json!({"type": "assert-table-uuid", "uuid": "other"});
        assert!(matches!(check_requirements(Some(&m), &[uuid]), Err(MetadataError::RequirementFailed(_))));
        let create = json!({"type": "assert-create"});
        assert!(matches!(
            check_requirements(Some(&m), std::slice::from_ref(&create)),
            Err(MetadataError::RequirementFailed(_))
        ));
        check_requirements(None, &[create]).unwrap();
    }

    #[test]
    fn set_location_is_refused_unless_allowed_and_unknown_updates_are_errors() {
        let mut m = table();
        let to = json!({"action": "set-location", "location": "s3://lake/hr/"});
        assert!(matches!(apply_updates(&mut m, std::slice::from_ref(&to), &|_| false), Err(MetadataError::Invalid(_))));
        assert_eq!(m["location"], "s3://lake/iceberg/ns/t-1");
        let unknown = json!({"action": "grant-everything"});
        assert!(apply_updates(&mut m, &[unknown], &|_| true).is_err());
    }

    #[test]
    fn schema_evolution_assigns_ids_and_minus_one_means_the_last_added() {
        let mut m = table();
        let mut s2 = schema();
        s2["fields"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": 4, "name": "note", "type": "string", "required": false}));
        let add = json!({"action": "add-schema", "schema": s2});
        let set = json!({"action": "set-current-schema", "schema-id": -1});
        apply_updates(&mut m, &[add, set], &|_| false).unwrap();
        assert_eq!(m["current-schema-id"], 1);
        assert_eq!(m["last-column-id"], 4);
        assert_eq!(current_columns(&m), vec!["id", "tags", "note"]);
    }

    #[test]
    fn metadata_file_names_carry_their_version() {
        assert_eq!(file_version("s3://l/t/metadata/00042-abc.metadata.json"), Some(42));
        assert_eq!(file_version("s3://l/t/metadata/v3.metadata.json"), None);
    }
}

//! Lakegate's entity type names, parsed once.
//!
//! `EntityTypeName::from_str` (and `EntityUid::from_str`) run Cedar's parser, microseconds a call, and a decision
//! names a dozen entities: the user and its groups, the action, the resource and its ancestors. A uid built from
//! a parsed type name and an id is the same uid, without the parse.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::LazyLock;

use cedar_policy::{EntityId, EntityTypeName, EntityUid};

/// Every entity type Lakegate builds uids of (the schema, `policies/lakegate.cedarschema`, declares them).
const TYPES: &[&str] =
    &["User", "Group", "Action", "Bucket", "Prefix", "Object", "Database", "Table", "Column", "Role", "Audience"];

static PARSED: LazyLock<HashMap<&'static str, EntityTypeName>> = LazyLock::new(|| {
    TYPES.iter().filter_map(|name| EntityTypeName::from_str(name).ok().map(|parsed| (*name, parsed))).collect()
});

/// The uid `type_name::"id"`; `type_name` is one of [`TYPES`], `id` any text.
pub(super) fn uid(type_name: &'static str, id: &str) -> EntityUid {
    let parsed = PARSED.get(type_name).cloned().unwrap_or_else(|| unknown_type(type_name));
    EntityUid::from_type_name_and_id(parsed, EntityId::new(id))
}

#[cold]
#[allow(
    clippy::panic,
    reason = "only reachable if a literal type name in this crate were not in TYPES; tests build every kind"
)]
fn unknown_type(name: &str) -> EntityTypeName {
    panic!("{name} is not one of Lakegate's entity types")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_and_a_built_uid_equals_the_parsed_literal() {
        assert_eq!(PARSED.len(), TYPES.len());
        for ty in TYPES {
            for id in ["alice", "", "lake/sales/2024/q1.parquet", "a \"quoted\" \\ id", "Group::\"x\""] {
                let literal = format!("{ty}::{}", serde_json::Value::String(id.to_owned()));
                assert_eq!(uid(ty, id), EntityUid::from_str(&literal).unwrap(), "{literal}");
            }
        }
    }
}

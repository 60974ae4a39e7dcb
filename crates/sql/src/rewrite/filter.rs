//! The catalog index the rewriter resolves names in, and the permission a filter is asked for.
//!
//! The compiled data filter itself ([`TableFilter`] and its parts) is the policy module's type: the policy
//! module builds it without knowing SQL beyond the strings it carries, and the rewriter parses and validates
//! those strings itself.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use lakegate_core::policy::{PolicyStore, StoreId};

pub use lakegate_core::policy::filter::{ColumnAccess, Condition, Mask, TableFilter, TableName, TableOp};

/// Which permission a filter is asked for. PostgreSQL policies give UPDATE both a USING expression (which
/// rows may be updated) and a WITH CHECK expression (what the new row must satisfy); one `TableFilter` holds
/// one row filter, so the two are asked for separately. A policy module without a distinct check answers
/// `UpdateCheck` like `Update`, as PostgreSQL does when WITH CHECK is omitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    /// Reading rows: the row filter selects visible rows; columns are what may be read.
    Select,
    /// Inserting: the row filter is the WITH CHECK every new row must satisfy; columns are what may be written.
    Insert,
    /// Updating: the row filter selects updatable rows (USING); columns are what may be assigned.
    Update,
    /// Updating: the row filter is the WITH CHECK every updated row must satisfy (columns unused).
    UpdateCheck,
    /// Deleting: the row filter selects deletable rows (columns unused).
    Delete,
}

impl Operation {
    /// The policy operation that decides this permission: an UPDATE's WITH CHECK is the update's own filter,
    /// as PostgreSQL uses the USING expression when a policy has no WITH CHECK.
    pub fn table_op(self) -> TableOp {
        match self {
            Operation::Select => TableOp::Select,
            Operation::Insert => TableOp::Insert,
            Operation::Update | Operation::UpdateCheck => TableOp::Update,
            Operation::Delete => TableOp::Delete,
        }
    }
}

/// One column of a governed table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    /// The column's name as stored.
    pub name: String,
    /// Its SQL type as PostgreSQL would print it, e.g. `integer`, `text`, `numeric(10,2)`.
    pub data_type: String,
}

impl ColumnDef {
    /// A column from its name and type.
    pub fn new(name: impl Into<String>, data_type: impl Into<String>) -> Self {
        ColumnDef { name: name.into(), data_type: data_type.into() }
    }
}

/// A governed table with all its columns, forbidden ones included.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    /// The table's name.
    pub name: TableName,
    /// All columns in table order.
    pub columns: Vec<ColumnDef>,
}

impl TableDef {
    /// The column of that (exact) name.
    pub fn column(&self, name: &str) -> Option<&ColumnDef> {
        self.columns.iter().find(|c| c.name == name)
    }
}

/// Every governed table. A relation not in here does not exist as far as the gateway is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalog {
    tables: BTreeMap<TableName, TableDef>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a table.
    pub fn add_table(&mut self, name: TableName, columns: Vec<ColumnDef>) {
        self.tables.insert(name.clone(), TableDef { name, columns });
    }

    /// The table of that name.
    pub fn table(&self, name: &TableName) -> Option<&TableDef> {
        self.tables.get(name)
    }

    /// All tables, in name order.
    pub fn tables(&self) -> impl Iterator<Item = &TableDef> {
        self.tables.values()
    }

    /// The index of a policy catalog (`catalog.toml`); entries whose name is not `database.table` are
    /// skipped (the policy store refuses them at load).
    pub fn from_policy(catalog: &lakegate_core::policy::catalog::Catalog) -> Self {
        let mut out = Catalog::new();
        for t in &catalog.tables {
            if let Some((db, name)) = t.split_name() {
                out.add_table(
                    TableName::new(db, name),
                    t.columns.iter().map(|c| ColumnDef::new(&c.name, &c.sql_type)).collect(),
                );
            }
        }
        out
    }
}

/// The catalog index of the policy set in force, built once per policy set instead of once per statement (it
/// indexes every table and column of `catalog.toml`). Keyed by the policy set's [`StoreId`], which does not keep
/// the set alive and cannot be confused with a new one at the same address: a reload (a new catalog) is seen by
/// the very next statement.
#[derive(Debug, Default)]
pub(crate) struct CatalogCache {
    current: Mutex<Option<(StoreId, Arc<Catalog>)>>,
}

impl CatalogCache {
    /// The index of `store`'s catalog.
    pub(crate) fn for_store(&self, store: &Arc<PolicyStore>) -> Arc<Catalog> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        match &*current {
            Some((cached, catalog)) if cached.is(store) => catalog.clone(),
            _ => {
                let catalog = Arc::new(Catalog::from_policy(store.catalog()));
                *current = Some((StoreId::of(store), catalog.clone()));
                catalog
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The demo policy set, with `extra` appended to its catalog.
    fn policies(extra: &str) -> Arc<PolicyStore> {
        let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
        let dir = tempfile::tempdir().expect("tempdir");
        for entry in std::fs::read_dir(&demo).expect("the demo policies") {
            let path = entry.expect("entry").path();
            let mut text = std::fs::read_to_string(&path).expect("a policy file");
            if path.file_name().is_some_and(|n| n == "catalog.toml") {
                text.push_str(extra);
            }
            std::fs::write(dir.path().join(path.file_name().expect("a file name")), text).expect("write");
        }
        Arc::new(PolicyStore::load(dir.path()).expect("the policy set loads"))
    }

    #[test]
    fn the_catalog_index_is_built_once_per_policy_set_and_again_for_a_new_one() {
        let cache = CatalogCache::default();
        let store = policies("");
        let first = cache.for_store(&store);
        assert_eq!(*first, Catalog::from_policy(store.catalog()), "the index of the store's catalog");
        assert!(Arc::ptr_eq(&first, &cache.for_store(&store)), "the same policy set reuses its index");
        let added = TableName::new("sales", "returns");
        assert!(first.table(&added).is_none());

        // A reload whose catalog gained a table: the next statement resolves it.
        let reloaded = policies(
            "\n[[tables]]\nname = \"sales.returns\"\nbackend = \"embedded\"\ncolumns = [{ name = \"id\", type = \"bigint\" }]\n",
        );
        let second = cache.for_store(&reloaded);
        assert!(second.table(&added).is_some(), "the new policy set's index has the new table");
        assert_eq!(*second, Catalog::from_policy(reloaded.catalog()));

        // The cache keeps the index, not the policy set it was built from.
        let probe = Arc::downgrade(&reloaded);
        drop(reloaded);
        assert!(probe.upgrade().is_none());
        assert!(cache.for_store(&store).table(&added).is_none(), "the first set again: its own index");
    }
}

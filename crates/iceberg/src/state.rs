//! Where the catalog keeps its state: namespaces with their properties, and for each table the location of its
//! current metadata file. SQLite in the data directory for one replica, PostgreSQL for replicas that share a
//! catalog.
//!
//! A commit is a compare-and-swap of a table's metadata location ([`State::swap_table`]): of two writers that
//! started from the same metadata, exactly one moves the pointer, the other learns that it lost. Everything
//! else about a table lives in its metadata files in the lake store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use rusqlite::OptionalExtension;

/// The tables of the catalog's own schema, identical on SQLite and PostgreSQL.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS lakegate_iceberg_namespaces (
  name TEXT PRIMARY KEY,
  properties TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS lakegate_iceberg_tables (
  namespace TEXT NOT NULL REFERENCES lakegate_iceberg_namespaces (name),
  name TEXT NOT NULL,
  metadata_location TEXT NOT NULL,
  PRIMARY KEY (namespace, name)
);
";

/// Why the state refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("namespace {0} already exists")]
    NamespaceExists(String),
    #[error("namespace {0} does not exist")]
    NoSuchNamespace(String),
    #[error("namespace {0} is not empty")]
    NamespaceNotEmpty(String),
    #[error("table {0} already exists")]
    TableExists(String),
    #[error("table {0} does not exist")]
    NoSuchTable(String),
    #[error("the catalog database failed: {0}")]
    Database(String),
}

impl From<rusqlite::Error> for StateError {
    fn from(e: rusqlite::Error) -> Self {
        StateError::Database(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StateError {
    fn from(e: tokio_postgres::Error) -> Self {
        StateError::Database(e.to_string())
    }
}

impl From<deadpool_postgres::PoolError> for StateError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StateError::Database(e.to_string())
    }
}

/// What a namespace-properties update did, in the spec's terms.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PropertiesUpdate {
    pub updated: Vec<String>,
    pub removed: Vec<String>,
    pub missing: Vec<String>,
}

/// The catalog's state.
#[derive(Debug, Clone)]
pub enum State {
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
    Postgres(Pool),
}

fn sql_error(name: &str, e: &rusqlite::Error) -> Option<StateError> {
    match e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation => {
            Some(StateError::TableExists(name.to_owned()))
        }
        _ => None,
    }
}

impl State {
    /// Opens (creating if need be) the SQLite database at `path`.
    pub fn sqlite(path: &Path) -> Result<Self, StateError> {
        let conn = rusqlite::Connection::open(path)?;
        // WAL keeps readers off the writer's lock; full sync because a lost commit pointer loses a table version.
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(State::Sqlite(Arc::new(Mutex::new(conn))))
    }

    /// Connects to PostgreSQL with a libpq connection string and creates the catalog's tables if need be.
    pub async fn postgres(conninfo: &str) -> Result<Self, StateError> {
        let config: tokio_postgres::Config = conninfo.parse()?;
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager).max_size(8).build().map_err(|e| StateError::Database(e.to_string()))?;
        let client = pool.get().await?;
        client.batch_execute(SCHEMA).await?;
        Ok(State::Postgres(pool))
    }

    /// Runs `f` on the SQLite connection off the async threads.
    async fn sqlite_do<T: Send + 'static>(
        conn: &Arc<Mutex<rusqlite::Connection>>,
        f: impl FnOnce(&mut rusqlite::Connection) -> Result<T, StateError> + Send + 'static,
    ) -> Result<T, StateError> {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().map_err(|_| StateError::Database("connection lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StateError::Database(e.to_string()))?
    }

    /// Every namespace, sorted.
    pub async fn namespaces(&self) -> Result<Vec<String>, StateError> {
        const Q: &str = "SELECT name FROM lakegate_iceberg_namespaces ORDER BY name";
        match self {
            State::Sqlite(c) => {
                Self::sqlite_do(c, |c| {
                    let mut st = c.prepare(Q)?;
                    let rows = st.query_map([], |r| r.get::<_, String>(0))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
            }
            State::Postgres(p) => Ok(p.get().await?.query(Q, &[]).await?.iter().map(|r| r.get(0)).collect()),
        }
    }

    /// A namespace's properties, or `None` when it does not exist.
    pub async fn namespace(&self, name: &str) -> Result<Option<BTreeMap<String, String>>, StateError> {
        const Q: &str = "SELECT properties FROM lakegate_iceberg_namespaces WHERE name = $1";
        let text: Option<String> = match self {
            State::Sqlite(c) => {
                let name = name.to_owned();
                Self::sqlite_do(c, move |c| Ok(c.query_row(Q, [&name], |r| r.get(0)).optional()?)).await?
            }
            State::Postgres(p) => p.get().await?.query_opt(Q, &[&name]).await?.map(|r| r.get(0)),
        };
        text.map(|t| serde_json::from_str(&t).map_err(|e| StateError::Database(e.to_string()))).transpose()
    }

    /// Creates a namespace.
    pub async fn create_namespace(&self, name: &str, properties: &BTreeMap<String, String>) -> Result<(), StateError> {
        const Q: &str = "INSERT INTO lakegate_iceberg_namespaces (name, properties) VALUES ($1, $2)";
        let props = serde_json::to_string(properties).map_err(|e| StateError::Database(e.to_string()))?;
        let exists = || StateError::NamespaceExists(name.to_owned());
        match self {
            State::Sqlite(c) => {
                let n = name.to_owned();
                Self::sqlite_do(c, move |c| match c.execute(Q, [&n, &props]) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(sql_error(&n, &e).map_or_else(|| e.into(), |_| StateError::NamespaceExists(n))),
                })
                .await
            }
            State::Postgres(p) => match p.get().await?.execute(Q, &[&name, &props]).await {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(exists()),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Creates a namespace unless it exists (seeding at start-up).
    pub async fn ensure_namespace(&self, name: &str) -> Result<(), StateError> {
        match self.create_namespace(name, &BTreeMap::new()).await {
            Ok(()) | Err(StateError::NamespaceExists(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Drops an empty namespace.
    pub async fn drop_namespace(&self, name: &str) -> Result<(), StateError> {
        if self.namespace(name).await?.is_none() {
            return Err(StateError::NoSuchNamespace(name.to_owned()));
        }
        if !self.tables(name).await?.is_empty() {
            return Err(StateError::NamespaceNotEmpty(name.to_owned()));
        }
        const Q: &str = "DELETE FROM lakegate_iceberg_namespaces WHERE name = $1";
        let deleted = match self {
            State::Sqlite(c) => {
                let n = name.to_owned();
                Self::sqlite_do(c, move |c| match c.execute(Q, [&n]) {
                    Ok(n) => Ok(n as u64),
                    // A table created in the meantime holds the namespace (foreign key).
                    Err(e) if sql_error(&n, &e).is_some() => Err(StateError::NamespaceNotEmpty(n)),
                    Err(e) => Err(e.into()),
                })
                .await?
            }
            State::Postgres(p) => match p.get().await?.execute(Q, &[&name]).await {
                Ok(n) => n,
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION) => {
                    return Err(StateError::NamespaceNotEmpty(name.to_owned()));
                }
                Err(e) => return Err(e.into()),
            },
        };
        if deleted == 0 { Err(StateError::NoSuchNamespace(name.to_owned())) } else { Ok(()) }
    }

    /// Removes and sets namespace properties in one step.
    pub async fn update_namespace(
        &self,
        name: &str,
        removals: &[String],
        updates: &BTreeMap<String, String>,
    ) -> Result<PropertiesUpdate, StateError> {
        // Read-modify-write under a compare of the whole property text, retried on a concurrent change.
        for _ in 0..8 {
            let Some(mut props) = self.namespace(name).await? else {
                return Err(StateError::NoSuchNamespace(name.to_owned()));
            };
            let before = serde_json::to_string(&props).map_err(|e| StateError::Database(e.to_string()))?;
            let mut result = PropertiesUpdate::default();
            for key in removals {
                if props.remove(key).is_some() {
                    result.removed.push(key.clone());
                } else {
                    result.missing.push(key.clone());
                }
            }
            for (k, v) in updates {
                props.insert(k.clone(), v.clone());
                result.updated.push(k.clone());
            }
            let after = serde_json::to_string(&props).map_err(|e| StateError::Database(e.to_string()))?;
            const Q: &str =
                "UPDATE lakegate_iceberg_namespaces SET properties = $1 WHERE name = $2 AND properties = $3";
            let changed = match self {
                State::Sqlite(c) => {
                    let n = name.to_owned();
                    Self::sqlite_do(c, move |c| Ok(c.execute(Q, [&after, &n, &before])? as u64)).await?
                }
                State::Postgres(p) => p.get().await?.execute(Q, &[&after, &name, &before]).await?,
            };
            if changed == 1 {
                return Ok(result);
            }
        }
        Err(StateError::Database("namespace properties kept changing; retry".into()))
    }

    /// The tables of one namespace, sorted.
    pub async fn tables(&self, namespace: &str) -> Result<Vec<String>, StateError> {
        const Q: &str = "SELECT name FROM lakegate_iceberg_tables WHERE namespace = $1 ORDER BY name";
        match self {
            State::Sqlite(c) => {
                let ns = namespace.to_owned();
                Self::sqlite_do(c, move |c| {
                    let mut st = c.prepare(Q)?;
                    let rows = st.query_map([&ns], |r| r.get::<_, String>(0))?;
                    Ok(rows.collect::<Result<Vec<_>, _>>()?)
                })
                .await
            }
            State::Postgres(p) => Ok(p.get().await?.query(Q, &[&namespace]).await?.iter().map(|r| r.get(0)).collect()),
        }
    }

    /// The location of a table's current metadata file, or `None` when it does not exist.
    pub async fn table(&self, namespace: &str, name: &str) -> Result<Option<String>, StateError> {
        const Q: &str = "SELECT metadata_location FROM lakegate_iceberg_tables WHERE namespace = $1 AND name = $2";
        match self {
            State::Sqlite(c) => {
                let (ns, n) = (namespace.to_owned(), name.to_owned());
                Self::sqlite_do(c, move |c| Ok(c.query_row(Q, [&ns, &n], |r| r.get(0)).optional()?)).await
            }
            State::Postgres(p) => Ok(p.get().await?.query_opt(Q, &[&namespace, &name]).await?.map(|r| r.get(0))),
        }
    }

    /// Whether some table's current metadata file lies under `prefix` (its location is taken).
    pub async fn any_table_under(&self, prefix: &str) -> Result<bool, StateError> {
        const Q: &str = "SELECT count(*) FROM lakegate_iceberg_tables \
                         WHERE substr(metadata_location, 1, length(CAST($1 AS TEXT))) = CAST($1 AS TEXT)";
        let n: i64 = match self {
            State::Sqlite(c) => {
                let p = prefix.to_owned();
                Self::sqlite_do(c, move |c| Ok(c.query_row(Q, [&p], |r| r.get(0))?)).await?
            }
            State::Postgres(pool) => pool.get().await?.query_one(Q, &[&prefix]).await?.get(0),
        };
        Ok(n > 0)
    }

    /// Registers a new table at its first metadata file.
    pub async fn create_table(&self, namespace: &str, name: &str, metadata: &str) -> Result<(), StateError> {
        if self.namespace(namespace).await?.is_none() {
            return Err(StateError::NoSuchNamespace(namespace.to_owned()));
        }
        const Q: &str = "INSERT INTO lakegate_iceberg_tables (namespace, name, metadata_location) VALUES ($1, $2, $3)";
        let full = format!("{namespace}.{name}");
        match self {
            State::Sqlite(c) => {
                let (ns, n, m) = (namespace.to_owned(), name.to_owned(), metadata.to_owned());
                Self::sqlite_do(c, move |c| match c.execute(Q, [&ns, &n, &m]) {
                    Ok(_) => Ok(()),
                    Err(e) => Err(sql_error(&full, &e).unwrap_or_else(|| e.into())),
                })
                .await
            }
            State::Postgres(p) => match p.get().await?.execute(Q, &[&namespace, &name, &metadata]).await {
                Ok(_) => Ok(()),
                Err(e) if is_unique_violation(&e) => Err(StateError::TableExists(full)),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Moves a table's metadata pointer from `expected` to `new`; `Ok(false)` when another commit moved it first.
    pub async fn swap_table(&self, namespace: &str, name: &str, expected: &str, new: &str) -> Result<bool, StateError> {
        const Q: &str = "UPDATE lakegate_iceberg_tables SET metadata_location = $1 \
                         WHERE namespace = $2 AND name = $3 AND metadata_location = $4";
        let changed = match self {
            State::Sqlite(c) => {
                let args = [new.to_owned(), namespace.to_owned(), name.to_owned(), expected.to_owned()];
                Self::sqlite_do(c, move |c| Ok(c.execute(Q, args)? as u64)).await?
            }
            State::Postgres(p) => p.get().await?.execute(Q, &[&new, &namespace, &name, &expected]).await?,
        };
        Ok(changed == 1)
    }

    /// Forgets a table (its files stay where they are).
    pub async fn drop_table(&self, namespace: &str, name: &str) -> Result<(), StateError> {
        const Q: &str = "DELETE FROM lakegate_iceberg_tables WHERE namespace = $1 AND name = $2";
        let deleted = match self {
            State::Sqlite(c) => {
                let (ns, n) = (namespace.to_owned(), name.to_owned());
                Self::sqlite_do(c, move |c| Ok(c.execute(Q, [&ns, &n])? as u64)).await?
            }
            State::Postgres(p) => p.get().await?.execute(Q, &[&namespace, &name]).await?,
        };
        if deleted == 0 { Err(StateError::NoSuchTable(format!("{namespace}.{name}"))) } else { Ok(()) }
    }

    /// Renames a table, possibly into another namespace.
    pub async fn rename_table(&self, from: (&str, &str), to: (&str, &str)) -> Result<(), StateError> {
        if self.namespace(to.0).await?.is_none() {
            return Err(StateError::NoSuchNamespace(to.0.to_owned()));
        }
        const Q: &str =
            "UPDATE lakegate_iceberg_tables SET namespace = $1, name = $2 WHERE namespace = $3 AND name = $4";
        let target = format!("{}.{}", to.0, to.1);
        let changed = match self {
            State::Sqlite(c) => {
                let args = [to.0.to_owned(), to.1.to_owned(), from.0.to_owned(), from.1.to_owned()];
                let t = target.clone();
                Self::sqlite_do(c, move |c| match c.execute(Q, args) {
                    Ok(n) => Ok(n as u64),
                    Err(e) => Err(sql_error(&t, &e).unwrap_or_else(|| e.into())),
                })
                .await?
            }
            State::Postgres(p) => match p.get().await?.execute(Q, &[&to.0, &to.1, &from.0, &from.1]).await {
                Ok(n) => n,
                Err(e) if is_unique_violation(&e) => return Err(StateError::TableExists(target)),
                Err(e) => return Err(e.into()),
            },
        };
        if changed == 0 { Err(StateError::NoSuchTable(format!("{}.{}", from.0, from.1))) } else { Ok(()) }
    }
}

fn is_unique_violation(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    async fn state() -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        let state = State::sqlite(&dir.path().join("catalog.db")).unwrap();
        (dir, state)
    }

    #[tokio::test]
    async fn a_commit_moves_the_pointer_only_from_the_metadata_it_started_from() {
        let (_dir, s) = state().await;
        s.create_namespace("ns", &BTreeMap::new()).await.unwrap();
        s.create_table("ns", "t", "s3://b/t/metadata/00000.json").await.unwrap();
        assert!(s.swap_table("ns", "t", "s3://b/t/metadata/00000.json", "s3://b/t/metadata/00001.json").await.unwrap());
        // The second writer started from the same version and loses.
        assert!(
            !s.swap_table("ns", "t", "s3://b/t/metadata/00000.json", "s3://b/t/metadata/00001-b.json").await.unwrap()
        );
        assert_eq!(s.table("ns", "t").await.unwrap().as_deref(), Some("s3://b/t/metadata/00001.json"));
    }

    #[tokio::test]
    async fn names_are_unique_and_namespaces_hold_their_tables() {
        let (_dir, s) = state().await;
        s.create_namespace("ns", &BTreeMap::new()).await.unwrap();
        assert!(matches!(s.create_namespace("ns", &BTreeMap::new()).await, Err(StateError::NamespaceExists(_))));
        assert!(matches!(s.create_table("nope", "t", "m").await, Err(StateError::NoSuchNamespace(_))));
        s.create_table("ns", "t", "m").await.unwrap();
        assert!(matches!(s.create_table("ns", "t", "m2").await, Err(StateError::TableExists(_))));
        assert!(matches!(s.drop_namespace("ns").await, Err(StateError::NamespaceNotEmpty(_))));
        s.create_namespace("other", &BTreeMap::new()).await.unwrap();
        s.create_table("other", "u", "m").await.unwrap();
        assert!(matches!(s.rename_table(("ns", "t"), ("other", "u")).await, Err(StateError::TableExists(_))));
        s.rename_table(("ns", "t"), ("other", "t")).await.unwrap();
        assert_eq!(s.tables("other").await.unwrap(), vec!["t", "u"]);
        s.drop_namespace("ns").await.unwrap();
        assert!(matches!(s.drop_table("ns", "t").await, Err(StateError::NoSuchTable(_))));
    }

    #[tokio::test]
    async fn property_updates_report_what_they_did() {
        let (_dir, s) = state().await;
        let props = BTreeMap::from([("a".to_owned(), "1".to_owned())]);
        s.create_namespace("ns", &props).await.unwrap();
        let updates = BTreeMap::from([("b".to_owned(), "2".to_owned())]);
        let done = s.update_namespace("ns", &["a".into(), "z".into()], &updates).await.unwrap();
        assert_eq!(
            done,
            PropertiesUpdate { updated: vec!["b".into()], removed: vec!["a".into()], missing: vec!["z".into()] }
        );
        assert_eq!(s.namespace("ns").await.unwrap().unwrap(), updates);
    }
}

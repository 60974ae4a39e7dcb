//! Start-up wiring: builds the core services from the configuration and serves every front on its listener.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lakegate_core::audit::{AuditEvent, Auditor, Front};
use lakegate_core::gate::Gate;
use lakegate_core::identity::{DevIssuer, Signer, TokenService, Verifier};
use lakegate_core::metrics;
use lakegate_core::policy::{self, PolicyEngine, watch::ReloadOutcome};
use lakegate_net::drain::{Drain, Outcome};
use lakegate_net::{ListenError, OnDrain, Threads, http, serve_http, tls};

use crate::config::Config;

/// The demo policy set built into the binary, seeded into `<data_dir>/policies` on first start.
pub const EMBEDDED_POLICIES: &[(&str, &str)] = &[
    ("lakegate.cedarschema", include_str!("../policies/lakegate.cedarschema")),
    ("identity.cedar", include_str!("../policies/identity.cedar")),
    ("s3.cedar", include_str!("../policies/s3.cedar")),
    ("sql.cedar", include_str!("../policies/sql.cedar")),
    ("iceberg.cedar", include_str!("../policies/iceberg.cedar")),
    ("catalog.toml", include_str!("../policies/catalog.toml")),
];

/// A running Lakegate: its core services and bound addresses.
#[derive(Debug)]
pub struct Running {
    pub gate: Arc<Gate>,
    pub control_addr: SocketAddr,
    pub s3_addr: SocketAddr,
    /// What the S3 front forwards to, for the start-up banner.
    pub s3_backend: String,
    /// The PostgreSQL wire listener of the SQL front.
    pub sql_addr: SocketAddr,
    pub policy_dir: PathBuf,
    pub dev_issuer: Option<PathBuf>,
    /// The drain every listener and connection listens to.
    pub drain: Drain,
}

/// Why start-up failed. A variant that wraps another error names the step only: the wrapped error is its
/// `source`, which `main` prints after it (`{:#}`), so putting it in the message too would print it twice.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("policies in {dir} do not validate:\n{errors}")]
    Policies { dir: PathBuf, errors: policy::LoadErrors },
    #[error("identity")]
    Identity(#[from] lakegate_core::identity::ConfigError),
    #[error("dev issuer key in {path}")]
    DevIssuer { path: PathBuf, source: std::io::Error },
    #[error("signing keys in {path}")]
    SigningKeys { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Audit(#[from] lakegate_core::audit::AuditError),
    #[error("cannot listen on {addr}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Listener(#[from] ListenError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("credentials keys")]
    Credentials(#[from] lakegate_core::credentials::KeyRingError),
    #[error("S3 store")]
    Store(#[from] lakegate_s3::backend::BackendError),
    #[error("SQL front")]
    Sql(#[from] lakegate_sql::SqlStartError),
    #[error("Iceberg catalog")]
    Iceberg(#[from] lakegate_iceberg::state::StateError),
    #[error("writing the demo table {table} as an Iceberg table: {reason}")]
    Seed { table: String, reason: String },
}

/// Builds the core services and starts every listener; returns once they are bound.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let drain = Drain::new();
    let data = &config.data_dir;
    std::fs::create_dir_all(data).map_err(|source| StartError::DataDir { path: data.clone(), source })?;
    let policy_dir = config.policy_dir();
    if config.policy.dir.is_none() {
        seed_policies(&policy_dir).map_err(|source| StartError::DataDir { path: policy_dir.clone(), source })?;
    }
    let engine =
        PolicyEngine::load(&policy_dir).map_err(|errors| StartError::Policies { dir: policy_dir.clone(), errors })?;

    let dev = if config.dev_issuer_enabled() {
        Some(DevIssuer::load_or_create(data).map_err(|source| StartError::DevIssuer { path: data.clone(), source })?)
    } else {
        None
    };
    let key_dir = config.signing_key_dir();
    let signer = Arc::new(
        Signer::load_or_generate(&key_dir)
            .map_err(|source| StartError::SigningKeys { path: key_dir.clone(), source })?,
    );
    let issuer = config.token_issuer();
    let ts = &config.token_service;
    let mut audiences = vec![ts.audience.clone()];
    audiences.extend(ts.audiences.iter().cloned());
    let verifier = Verifier::new(&config.identity, dev.as_ref())
        .and_then(|v| v.trust_lakegate(&issuer, audiences, signer.clone(), ts.max_depth))?;
    let tokens = TokenService::new(ts.clone(), issuer, signer)?;
    for issuer in verifier.issuers() {
        let issuer = issuer.clone();
        // Pre-warm in the background: an IdP that is slow or down must not delay start-up.
        tokio::spawn(async move {
            let _ = issuer.warm().await;
        });
    }

    let auditor = Auditor::start(config.audit_config())?;
    let gate = Arc::new(Gate::new(verifier, engine.clone(), auditor.clone(), tokens));

    policy::watch(engine, policy_dir.clone(), Duration::from_secs(config.policy.reload_interval_seconds), {
        let auditor = auditor.clone();
        let dir = policy_dir.display().to_string();
        move |outcome| report_reload(&auditor, &dir, outcome)
    });

    // One credentials key ring for the S3 front and the SQL front's table credentials, re-read as often as the
    // policies so that a rotation in the shared key directory needs no restart.
    let keys = Arc::new(lakegate_core::credentials::LiveKeyRing::load_or_generate(&config.credentials_key_dir())?);
    keys.watch(Duration::from_secs(config.policy.reload_interval_seconds.max(1)));
    let backend = s3_backend(config).await?;
    let s3 = Arc::new(s3_front(config, gate.clone(), keys.clone(), backend.clone()));
    let s3_backend = s3.backend.describe();
    let s3_addr =
        serve_http(&config.s3.listener(), drain.watch(), OnDrain::StopAccepting, Threads::PerCore, move |req, peer| {
            lakegate_s3::handle(s3.clone(), req, peer)
        })
        .await?;
    // Vended credentials name the S3 front as clients reach it; a wildcard listener is reached on loopback.
    let s3_host = if s3_addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], s3_addr.port()))
    } else {
        s3_addr
    };
    let scheme = if config.s3.listener().tls.is_some() { "https" } else { "http" };
    let catalog = if config.iceberg.enabled {
        let started = lakegate_iceberg::Catalog::start(
            config.iceberg.clone(),
            &config.data_dir,
            gate.clone(),
            Arc::new(crate::lake_files::BackendFiles(backend.clone())),
            keys.clone(),
            format!("{scheme}://{s3_host}"),
        )
        .await?;
        Some(started)
    } else {
        None
    };

    // The demo world: on first start the catalog's Iceberg tables with demo rows are written to the embedded
    // store and registered, for every road (S3, SQL, the catalog) to reach the same files.
    if let (Some(c), lakegate_s3::BackendConfig::Embedded { seed: true, .. }) = (&catalog, &config.s3.backend) {
        seed_demo_tables(c, &gate).await?;
    }
    // The embedded engine reads the catalog's Iceberg tables from the embedded store's files.
    let iceberg_files: Option<Arc<dyn lakegate_sql::backend::iceberg::IcebergFiles>> = catalog.as_ref().map(|c| {
        let files = crate::lake_files::CatalogFiles { catalog: c.clone(), store_dir: embedded_store_dir(config) };
        Arc::new(files) as Arc<dyn lakegate_sql::backend::iceberg::IcebergFiles>
    });
    let sql = lakegate_sql::SqlService::start(
        &config.sql,
        &config.data_dir.join("warehouse"),
        config.control.tls.is_some(),
        gate.clone(),
        Some(keys.clone()),
        iceberg_files,
    )
    .await?;
    let sql_tls = match &config.sql.tls {
        Some(tls) => Some(tls::server_config(tls, &[b"postgresql"])?),
        None => None,
    };
    let sql_addr = lakegate_sql::pgwire::serve(config.sql.listen, sql_tls, sql.clone(), drain.watch())
        .await
        .map_err(|source| StartError::Listen { addr: config.sql.listen, source })?;

    let control_gate = gate.clone();
    let control_drain = drain.watch();
    let control_addr =
        serve_http(&config.control, drain.watch(), OnDrain::KeepServing, Threads::Shared, move |req, peer| {
            let gate = control_gate.clone();
            let sql = sql.clone();
            let catalog = catalog.clone();
            let drain = control_drain.clone();
            async move {
                if drain.is_draining() {
                    let continues = lakegate_sql::trino::continues_open_query(req.method(), req.uri().path());
                    if let Some(refused) = lakegate_control::while_draining(&req, continues) {
                        return refused;
                    }
                }
                // The SQL front's HTTP routes (Trino protocol, table credentials) share the control listener.
                if lakegate_sql::trino::handles(req.uri().path()) {
                    return lakegate_sql::trino::handle(&sql, req, peer, &drain).await;
                }
                // So do the Iceberg REST catalog's.
                if let Some(catalog) = catalog.as_ref().filter(|_| lakegate_iceberg::handles(req.uri().path())) {
                    return catalog.handle(req, peer).await;
                }
                lakegate_control::handle(&gate, req, peer).await
            }
        })
        .await?;

    Ok(Running {
        gate,
        control_addr,
        s3_addr,
        s3_backend,
        sql_addr,
        policy_dir,
        dev_issuer: dev.map(|d| d.path().to_owned()),
        drain,
    })
}

/// Longest wait, after the drain is closed, for connections to drop what they still hold.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Longest wait for the audit log to be written and synced at the end of a shutdown. A writer that cannot
/// write has already printed what it holds to stderr; the process must still end before Kubernetes kills it.
const FLUSH_WAIT: Duration = Duration::from_secs(4);

/// Why a shutdown did not end cleanly.
#[derive(Debug, thiserror::Error)]
pub enum ShutdownError {
    #[error("the audit log could not be flushed: {0}")]
    Audit(#[from] lakegate_core::audit::AuditError),
    #[error("the audit log was not flushed within {0:?} (the events it holds were printed to stderr)")]
    FlushTimeout(Duration),
}

impl Running {
    /// Shuts down gracefully: readiness turns 503 and listeners stop accepting (see [`OnDrain`]), requests in
    /// flight get `grace` to finish, whatever is still open then is dropped (its audit record says
    /// incomplete), and the audit queue is written and synced. Each phase is logged.
    pub async fn shutdown(&self, grace: Duration) -> Result<(), ShutdownError> {
        self.drain.start();
        tracing::info!(
            grace = %humantime::format_duration(grace),
            in_flight = self.drain.in_flight(),
            "draining: /readyz answers 503, listeners stopped accepting, waiting for requests in flight"
        );
        match self.drain.wait(grace).await {
            Outcome::Drained => tracing::info!("drained: no request in flight"),
            Outcome::GraceExpired { in_flight } => tracing::warn!(
                in_flight,
                "grace period over: closing what is still open (its audit records are marked incomplete)"
            ),
        }
        self.drain.close();
        let abandoned = lakegate_sql::trino::close_open_queries().await;
        if abandoned > 0 {
            tracing::warn!(queries = abandoned, "closed Trino queries that were not fetched to their end");
        }
        if let Outcome::GraceExpired { in_flight } = self.drain.wait(CLOSE_WAIT).await {
            tracing::warn!(in_flight, "connections still closing; flushing the audit log regardless");
        }
        tracing::info!("flushing the audit log");
        match tokio::time::timeout(FLUSH_WAIT, self.gate.flush_audit()).await {
            Ok(Ok(())) => {
                tracing::info!("audit log written and synced; stopped");
                Ok(())
            }
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(ShutdownError::FlushTimeout(FLUSH_WAIT)),
        }
    }
}

/// Writes the demo rows of the governed catalog's `format = "iceberg"` tables as Iceberg tables, once.
async fn seed_demo_tables(catalog: &lakegate_iceberg::Catalog, gate: &Gate) -> Result<(), StartError> {
    use lakegate_core::policy::catalog::TableFormat;
    let snapshot = gate.catalog();
    for def in snapshot.tables.iter().filter(|t| t.format == Some(TableFormat::Iceberg)) {
        let failed = |reason: String| StartError::Seed { table: def.name.clone(), reason };
        let (Some((ns, name)), Some(location)) = (def.split_name(), def.location.as_deref()) else { continue };
        let Some(seed) = lakegate_sql::demo::iceberg_seed(def).map_err(failed)? else { continue };
        let table = lakegate_iceberg::seed::SeedTable {
            namespace: ns,
            name,
            location,
            schema: seed.schema,
            parquet: seed.parquet.into(),
            rows: seed.rows,
        };
        if catalog.seed_table(table).await.map_err(|e| failed(e.to_string()))? {
            tracing::info!(table = %def.name, location, "wrote the demo table as an Iceberg table");
        }
    }
    Ok(())
}

/// The directory of the embedded store, `None` for a remote one.
fn embedded_store_dir(config: &Config) -> Option<std::path::PathBuf> {
    match &config.s3.backend {
        lakegate_s3::BackendConfig::Embedded { dir, .. } => {
            Some(dir.clone().unwrap_or_else(|| config.data_dir.join("store")))
        }
        lakegate_s3::BackendConfig::Remote(_) => None,
    }
}

/// Opens the store behind the S3 front (and the Iceberg catalog's metadata files).
async fn s3_backend(config: &Config) -> Result<Arc<dyn lakegate_s3::backend::Backend>, StartError> {
    use lakegate_s3::backend::{Backend, Embedded, Remote};
    let backend: Arc<dyn Backend> = match &config.s3.backend {
        lakegate_s3::BackendConfig::Embedded { seed, .. } => {
            let dir = embedded_store_dir(config).unwrap_or_else(|| config.data_dir.join("store"));
            let store = Embedded::open(&dir)?;
            if *seed {
                store.seed().await?;
            }
            Arc::new(store)
        }
        lakegate_s3::BackendConfig::Remote(remote) => Arc::new(Remote::connect(remote.clone()).await?),
    };
    Ok(backend)
}

/// Builds the S3 front: credentials keys, the store, the role profiles.
fn s3_front(
    config: &Config,
    gate: Arc<Gate>,
    keys: Arc<lakegate_core::credentials::LiveKeyRing>,
    backend: Arc<dyn lakegate_s3::backend::Backend>,
) -> lakegate_s3::S3Front {
    lakegate_s3::S3Front {
        gate,
        keys,
        backend,
        roles: config.sts.roles.clone(),
        style: lakegate_s3::classify::HostStyle { virtual_host_domains: config.s3.virtual_host_domains.clone() },
        max_skew: time::Duration::seconds(i64::from(config.s3.max_clock_skew_seconds)),
        account_id: config.sts.account_id.clone(),
        region: config.s3.region.clone(),
        signing_keys: Default::default(),
        presigned: Default::default(),
    }
}

/// Audits and logs a reload attempt; a rejected set leaves the last good one in force.
fn report_reload(auditor: &Auditor, dir: &str, outcome: &ReloadOutcome) {
    let request_id = http::new_request_id();
    let event = match outcome {
        ReloadOutcome::Reloaded { policies } => {
            tracing::info!(dir, policies, "policies reloaded");
            metrics::POLICY_RELOADS.inc(&[("result", "ok")]);
            AuditEvent::new(Front::Policy, request_id, "policy:Reload", dir).allow(Vec::<String>::new())
        }
        ReloadOutcome::Rejected(errors) => {
            tracing::error!(dir, %errors, "policy reload rejected; keeping the last good set");
            metrics::POLICY_RELOADS.inc(&[("result", "rejected")]);
            AuditEvent::new(Front::Policy, request_id, "policy:Reload", dir)
                .error(format!("rejected, last good set kept: {errors}"))
        }
    };
    let auditor = auditor.clone();
    tokio::spawn(async move {
        if let Err(e) = auditor.record(event).await {
            tracing::error!(error = %e, "could not audit a policy reload");
        }
    });
}

/// Writes the embedded demo policies into `dir` unless it already holds a schema (never overwrites edits).
pub fn seed_policies(dir: &Path) -> std::io::Result<()> {
    if dir.join(policy::store::SCHEMA_FILE).exists() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)?;
    for (name, text) in EMBEDDED_POLICIES {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

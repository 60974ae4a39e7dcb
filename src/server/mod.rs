//! Listeners and start-up wiring: builds the core services from the configuration and serves the fronts.

pub mod control;
pub mod http;
pub mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::audit::{AuditEvent, Auditor, Front};
use crate::config::{Config, ListenerConfig};
use crate::gate::Gate;
use crate::identity::{DevIssuer, Verifier};
use crate::metrics;
use crate::policy::{self, PolicyEngine, watch::ReloadOutcome};

/// The demo policy set built into the binary, seeded into `<data_dir>/policies` on first start.
pub const EMBEDDED_POLICIES: &[(&str, &str)] = &[
    ("lakegate.cedarschema", include_str!("../../policies/lakegate.cedarschema")),
    ("s3.cedar", include_str!("../../policies/s3.cedar")),
    ("sql.cedar", include_str!("../../policies/sql.cedar")),
    ("catalog.toml", include_str!("../../policies/catalog.toml")),
];

/// A running Lakegate: its core services and bound addresses.
#[derive(Debug)]
pub struct Running {
    pub gate: Arc<Gate>,
    pub control_addr: SocketAddr,
    /// The PostgreSQL wire listener of the SQL front.
    pub sql_addr: SocketAddr,
    pub policy_dir: PathBuf,
    pub dev_issuer: Option<PathBuf>,
}

/// Why start-up failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error("policies in {dir} do not validate:\n{errors}")]
    Policies { dir: PathBuf, errors: policy::LoadErrors },
    #[error("identity: {0}")]
    Identity(String),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{0}")]
    Tls(String),
    #[error("SQL front: {0}")]
    Sql(#[from] crate::sql::SqlStartError),
}

/// Builds the core services and starts every listener; returns once they are bound.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    let data = &config.data_dir;
    std::fs::create_dir_all(data).map_err(|source| StartError::DataDir { path: data.clone(), source })?;
    let policy_dir = config.policy_dir();
    if config.policy.dir.is_none() {
        seed_policies(&policy_dir).map_err(|source| StartError::DataDir { path: policy_dir.clone(), source })?;
    }
    let engine =
        PolicyEngine::load(&policy_dir).map_err(|errors| StartError::Policies { dir: policy_dir.clone(), errors })?;

    let dev = if config.dev_issuer_enabled() {
        Some(DevIssuer::load_or_create(data).map_err(|e| StartError::Identity(e.to_string()))?)
    } else {
        None
    };
    let verifier = Verifier::new(&config.identity, dev.as_ref()).map_err(StartError::Identity)?;
    for issuer in verifier.issuers() {
        let issuer = issuer.clone();
        // Pre-warm in the background: an IdP that is slow or down must not delay start-up.
        tokio::spawn(async move {
            let _ = issuer.warm().await;
        });
    }

    let auditor = Auditor::start(config.audit_config())?;
    let gate = Arc::new(Gate { verifier, policy: engine.clone(), auditor: auditor.clone() });

    policy::watch(engine, policy_dir.clone(), Duration::from_secs(config.policy.reload_interval_seconds), {
        let auditor = auditor.clone();
        let dir = policy_dir.display().to_string();
        move |outcome| report_reload(&auditor, &dir, outcome)
    });

    let sql = crate::sql::SqlService::start(config, gate.clone()).await?;
    let sql_tls = match &config.sql.tls {
        Some(tls) => Some(tls::server_config(tls, &[b"postgresql"]).map_err(StartError::Tls)?),
        None => None,
    };
    let sql_addr = crate::sql::pgwire::serve(config.sql.listen, sql_tls, sql.clone())
        .await
        .map_err(|source| StartError::Listen { addr: config.sql.listen, source })?;

    let control_gate = gate.clone();
    let control_addr = serve_http(&config.control, move |req, peer| {
        let gate = control_gate.clone();
        let sql = sql.clone();
        async move {
            // The SQL front's HTTP routes (Trino protocol, table credentials) share the control listener.
            if crate::sql::trino::handles(req.uri().path()) {
                return crate::sql::trino::handle(&sql, req, peer).await;
            }
            control::handle(&gate, req, peer).await
        }
    })
    .await?;

    Ok(Running { gate, control_addr, sql_addr, policy_dir, dev_issuer: dev.map(|d| d.path().to_owned()) })
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

/// Binds `listener` and serves HTTP/1.1 and HTTP/2 (TLS when configured) with `handler`, one task per
/// connection. Returns the bound address (useful with port 0).
pub async fn serve_http<F, Fut>(listener: &ListenerConfig, handler: F) -> Result<SocketAddr, StartError>
where
    F: Fn(::http::Request<hyper::body::Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ::http::Response<http::Body>> + Send + 'static,
{
    let tcp = TcpListener::bind(listener.listen)
        .await
        .map_err(|source| StartError::Listen { addr: listener.listen, source })?;
    let addr = tcp.local_addr().map_err(|source| StartError::Listen { addr: listener.listen, source })?;
    let acceptor = match &listener.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(
            tls::server_config(tls, &[b"h2", b"http/1.1"]).map_err(StartError::Tls)?,
        )),
        None => None,
    };
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match tcp.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req, peer).await) }
                });
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let result = match acceptor {
                    Some(acceptor) => {
                        match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await {
                            Ok(Ok(tls)) => builder.serve_connection(TokioIo::new(tls), service).await,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        }
                    }
                    None => builder.serve_connection(TokioIo::new(stream), service).await,
                };
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
            });
        }
    });
    Ok(addr)
}

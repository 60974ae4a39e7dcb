//! The sidecar (`lakegate-sidecar`, also `lakegate sidecar`): a loopback S3 endpoint inside a workload's pod that acts with the pod's
//! identity token.
//!
//! Spark's S3A, or any S3 client, points at the sidecar with dummy credentials. The sidecar trades the token
//! (optionally exchanged first, so this workload is named as the actor) for session credentials at the central
//! Lakegate's STS, keeps them fresh, and re-signs every request to the central Lakegate, which decides and
//! audits. The sidecar decides nothing itself and holds nothing stronger than the token it was given.

pub mod cli;
mod forward;
mod session;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use session::{ActorCredentials, ExchangeClient, Session, SessionConfig, SessionError};
pub use upstream::{Upstream, UpstreamError};

use lakegate_net::ListenerConfig;
use lakegate_net::drain::Watch;
use lakegate_net::{ListenError, OnDrain, Threads, serve_http, tls};
use lakegate_s3_protocol::sts::valid_session_name;

/// The role a sidecar asks for unless told otherwise: the one where policy alone decides.
pub const DEFAULT_ROLE_ARN: &str = "arn:aws:iam::000000000000:role/lakegate";

/// Everything `lakegate sidecar` is configured with.
#[derive(Debug, Clone)]
pub struct SidecarConfig {
    /// Must be a loopback address: the sidecar's clients are unauthenticated.
    pub listen: SocketAddr,
    /// The central Lakegate's S3 + STS endpoint.
    pub upstream: url::Url,
    pub token_file: PathBuf,
    pub role_arn: String,
    pub region: String,
    pub session_name: String,
    pub duration_seconds: Option<u32>,
    pub exchange: Option<ExchangeClient>,
    /// CA for the central Lakegate's certificate (default: the public web roots).
    pub ca_file: Option<PathBuf>,
    /// Certificate chain and key presented to the central Lakegate (mutual TLS).
    pub client_identity: Option<(PathBuf, PathBuf)>,
    pub token_poll: Duration,
}

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("the sidecar listens on loopback only (its clients are not authenticated); {0} is not loopback")]
    NotLoopback(SocketAddr),
    #[error("invalid RoleSessionName {0:?}: 2 to 64 of [A-Za-z0-9+=,.@_-]")]
    SessionName(String),
    #[error(transparent)]
    Upstream(#[from] upstream::InvalidUpstream),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Listen(#[from] ListenError),
}

/// A running sidecar: what requests share.
#[derive(Debug)]
pub struct Sidecar {
    pub session: Session,
    pub upstream: Upstream,
    pub region: String,
}

/// Starts the credential refresh and the loopback listener; returns the bound address. Once `drain` starts, the
/// listener stops accepting and its connections close as their requests in flight finish.
pub async fn start(config: SidecarConfig, drain: Watch) -> Result<(SocketAddr, Arc<Sidecar>), SidecarError> {
    if !config.listen.ip().is_loopback() {
        return Err(SidecarError::NotLoopback(config.listen));
    }
    if !valid_session_name(&config.session_name) {
        return Err(SidecarError::SessionName(config.session_name));
    }
    let identity = config.client_identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    let tls = tls::client_config(config.ca_file.as_deref(), identity)?;
    let upstream = Upstream::new(&config.upstream, tls)?;
    for url in std::iter::once(&config.upstream).chain(config.exchange.as_ref().map(|e| &e.token_endpoint)) {
        let loopback = url
            .host_str()
            .is_some_and(|h| h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback()));
        if url.scheme() == "http" && !loopback {
            tracing::warn!(%url, "talking to the central Lakegate over plain HTTP: tokens and credentials travel in clear");
        }
    }
    let session = Session::start(
        SessionConfig {
            token_file: config.token_file,
            sts: config.upstream.clone(),
            role_arn: config.role_arn,
            session_name: config.session_name,
            duration_seconds: config.duration_seconds,
            exchange: config.exchange,
            token_poll: config.token_poll,
        },
        upstream.clone(),
    );
    let sidecar = Arc::new(Sidecar { session, upstream, region: config.region });
    let listener = ListenerConfig { listen: config.listen, tls: None };
    let handler = sidecar.clone();
    let addr = serve_http(&listener, drain, OnDrain::StopAccepting, Threads::PerCore, move |req, _peer| {
        let sidecar = handler.clone();
        async move { forward::handle(&sidecar, req).await }
    })
    .await?;
    Ok((addr, sidecar))
}

/// A RoleSessionName from a host name: the allowed characters kept, others replaced, cut to 64.
pub fn session_name_from(host: &str) -> String {
    let name: String = host
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || "+=,.@_-".contains(c) { c } else { '-' })
        .take(64)
        .collect();
    if name.len() >= 2 { name } else { "lakegate-sidecar".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_come_from_host_names_within_iams_rules() {
        assert_eq!(session_name_from("spark-exec-7"), "spark-exec-7");
        assert_eq!(session_name_from("pod/with space"), "pod-with-space");
        assert_eq!(session_name_from("x"), "lakegate-sidecar");
        assert_eq!(session_name_from(&"a".repeat(100)).len(), 64);
        assert!(valid_session_name(&session_name_from("ünïcode-host")));
    }
}

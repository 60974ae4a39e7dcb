//! The listener settings every front shares (`listen`, `[….tls]`).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// One listening socket, optionally with TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub listen: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self { listen: SocketAddr::from(([127, 0, 0, 1], 8080)), tls: None }
    }
}

/// PEM certificate chain and private key for a listener, and optionally the CA that client certificates
/// must chain to (mutual TLS, e.g. between sidecars and the central Lakegate).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, every client must present a certificate issued by this CA; others fail the handshake.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
}

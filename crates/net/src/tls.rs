//! TLS with rustls and the aws-lc-rs provider, certificates and keys from PEM files: listeners (optionally
//! requiring client certificates) and the client side of a sidecar talking to the central Lakegate.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsConfig;

/// Why a TLS configuration could not be built; names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: no {what} found")]
    Missing { path: PathBuf, what: &'static str },
    #[error("{path}: {source}")]
    Rustls { path: PathBuf, source: rustls::Error },
    #[error("TLS client CA {path}: {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("TLS: {0}")]
    Protocol(rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds a server-side TLS configuration offering the given ALPN protocols; with `client_ca`, clients must
/// present a certificate that chains to it.
pub fn server_config(tls: &TlsConfig, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&tls.cert)?;
    let key = read_key(&tls.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?;
    let builder = match &tls.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(root_store(ca)?), provider())
                .build()
                .map_err(|e| TlsError::ClientCa { path: ca.to_owned(), reason: e.to_string() })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config =
        builder.with_single_cert(certs, key).map_err(|source| TlsError::Rustls { path: tls.cert.clone(), source })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A client-side TLS configuration: trust `ca` (or the public web roots when `None`) and present
/// `identity = (certificate chain, key)` when the server asks for a client certificate.
pub fn client_config(ca: Option<&Path>, identity: Option<(&Path, &Path)>) -> Result<ClientConfig, TlsError> {
    let roots = match ca {
        Some(ca) => root_store(ca)?,
        None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Protocol)?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => builder
            .with_client_auth_cert(read_certs(cert)?, read_key(key)?)
            .map_err(|source| TlsError::Rustls { path: cert.to_owned(), source }),
    }
}

fn root_store(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(ca)? {
        roots.add(cert).map_err(|source| TlsError::Rustls { path: ca.to_owned(), source })?;
    }
    Ok(roots)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |source| TlsError::Read { path: path.to_owned(), source };
    let bytes = std::fs::read(path).map_err(read)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice()).collect::<Result<Vec<_>, _>>().map_err(read)?;
    if certs.is_empty() {
        return Err(TlsError::Missing { path: path.to_owned(), what: "certificate" });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let read = |source| TlsError::Read { path: path.to_owned(), source };
    let bytes = std::fs::read(path).map_err(read)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(read)?
        .ok_or_else(|| TlsError::Missing { path: path.to_owned(), what: "private key" })
}

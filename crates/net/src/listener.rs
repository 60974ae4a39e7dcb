//! Serving HTTP on a listener: HTTP/1.1 and HTTP/2, TLS when configured, one task per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::config::ListenerConfig;
use crate::tls::{self, TlsError};

/// Why a listener could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// Binds `listener` and serves HTTP/1.1 and HTTP/2 (TLS when configured) with `handler`, one task per
/// connection. Returns the bound address (useful with port 0).
pub async fn serve_http<F, Fut, B>(listener: &ListenerConfig, handler: F) -> Result<SocketAddr, ListenError>
where
    F: Fn(::http::Request<hyper::body::Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ::http::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bind = |source| ListenError::Bind { addr: listener.listen, source };
    let tcp = TcpListener::bind(listener.listen).await.map_err(bind)?;
    let addr = tcp.local_addr().map_err(bind)?;
    let acceptor = match &listener.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(tls, &[b"h2", b"http/1.1"])?)),
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
            // Responses are written as a head and then body frames: without TCP_NODELAY a small response waits
            // for the client's delayed ACK (about 40 ms per request on Linux).
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
            }
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

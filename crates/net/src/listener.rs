//! Serving HTTP on a listener: HTTP/1.1 and HTTP/2, TLS when configured, one task per connection (on the shared
//! runtime or on the connection threads, see [`Threads`]), and a graceful end when the drain says so.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{Either, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::config::ListenerConfig;
use crate::drain::{Guard, Watch};
use crate::threads::{Listeners, Threads};
use crate::tls::{self, TlsError};

/// Why a listener could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// How an HTTP listener behaves once the drain starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDrain {
    /// A data listener (S3, the sidecar): it stops accepting at once, every connection closes as soon as its
    /// request in flight has finished (idle keep-alive connections at once), a request that starts after the
    /// signal is answered 503, and every connection counts as work in flight until it closes.
    StopAccepting,
    /// The control listener: it keeps accepting until the drain is over, because the kubelet's readiness
    /// probe must see `/readyz` turn 503 and clients page through open queries; its handler refuses new work.
    /// Each request counts as work in flight while its handler runs; idle connections do not hold the drain.
    KeepServing,
}

/// Binds `listener` and serves HTTP/1.1 and HTTP/2 (TLS when configured) with `handler`, one task per
/// connection on `threads`, until `drain` says otherwise (see [`OnDrain`]). Returns the bound address (useful
/// with port 0).
pub async fn serve_http<F, Fut, B>(
    listener: &ListenerConfig,
    drain: Watch,
    on_drain: OnDrain,
    threads: Threads,
    handler: F,
) -> Result<SocketAddr, ListenError>
where
    F: Fn(::http::Request<hyper::body::Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = ::http::Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let bind = |source| ListenError::Bind { addr: listener.listen, source };
    let sockets = Listeners::bind(listener.listen, threads).map_err(bind)?;
    let addr = sockets.local_addr();
    let acceptor = match &listener.tls {
        Some(tls) => Some(tokio_rustls::TlsAcceptor::from(tls::server_config(tls, &[b"h2", b"http/1.1"])?)),
        None => None,
    };
    let stopping = drain.clone();
    let stop = move || {
        let drain = stopping.clone();
        async move { stop_accepting(&drain, on_drain).await }
    };
    sockets.serve("http", stop, move |stream, peer| {
        // Responses are written as a head and then body frames: without TCP_NODELAY a small response waits
        // for the client's delayed ACK (about 40 ms per request on Linux).
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "could not set TCP_NODELAY");
        }
        let guard = (on_drain == OnDrain::StopAccepting).then(|| drain.guard());
        let connection = Connection { peer, drain: drain.clone(), on_drain, _guard: guard };
        connection.serve(stream, acceptor.clone(), handler.clone())
    });
    Ok(addr)
}

/// Resolves when a listener of this kind stops accepting.
async fn stop_accepting(drain: &Watch, on_drain: OnDrain) {
    match on_drain {
        OnDrain::StopAccepting => drain.draining().await,
        OnDrain::KeepServing => drain.closed().await,
    }
}

/// One accepted HTTP connection.
struct Connection {
    peer: SocketAddr,
    drain: Watch,
    on_drain: OnDrain,
    /// Held until the connection closes (data listeners only).
    _guard: Option<Guard>,
}

impl Connection {
    async fn serve<F, Fut, B>(self, stream: TcpStream, acceptor: Option<tokio_rustls::TlsAcceptor>, handler: F)
    where
        F: Fn(::http::Request<hyper::body::Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = ::http::Response<B>> + Send + 'static,
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let peer = self.peer;
        match acceptor {
            Some(acceptor) => {
                let handshake = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream));
                let tls = tokio::select! {
                    tls = handshake => tls,
                    () = stop_accepting(&self.drain, self.on_drain) => return,
                };
                match tls {
                    Ok(Ok(tls)) => self.http(TokioIo::new(tls), handler).await,
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                }
            }
            None => self.http(TokioIo::new(stream), handler).await,
        }
    }

    async fn http<I, F, Fut, B>(&self, io: I, handler: F)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        F: Fn(::http::Request<hyper::body::Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
        Fut: std::future::Future<Output = ::http::Response<B>> + Send + 'static,
        B: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let peer = self.peer;
        let drain = self.drain.clone();
        let on_drain = self.on_drain;
        let service = service_fn(move |req| {
            let handler = handler.clone();
            // Decided as the request arrives, so that its future holds no handle on the drain: cloning one for
            // every request wrote its count, memory both cores then pass back and forth.
            let admitted = match on_drain {
                // Between the signal and hyper closing the connection, a request can still arrive on it.
                OnDrain::StopAccepting if drain.is_draining() => None,
                OnDrain::StopAccepting => Some(None),
                OnDrain::KeepServing => Some(Some(drain.guard())),
            };
            async move {
                let response = match admitted {
                    None => draining_response(),
                    Some(_in_flight) => handler(req, peer).await.map(Either::Left),
                };
                Ok::<_, Infallible>(response)
            }
        });
        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        let connection = builder.serve_connection(io, service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = stop_accepting(&self.drain, self.on_drain) => {
                // Finish the request in flight, then close; an idle connection closes at once.
                connection.as_mut().graceful_shutdown();
                tokio::select! {
                    result = connection.as_mut() => result,
                    () = self.drain.closed() => {
                        tracing::debug!(%peer, "connection dropped at the end of the drain");
                        Ok(())
                    }
                }
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// The answer to a request that arrives on a data listener after the drain started.
fn draining_response<B>() -> ::http::Response<Either<B, Full<bytes::Bytes>>> {
    let mut response = ::http::Response::new(Either::Right(Full::new(bytes::Bytes::from_static(
        b"lakegate is shutting down; retry on another replica\n",
    ))));
    *response.status_mut() = ::http::StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(::http::header::CONNECTION, ::http::HeaderValue::from_static("close"));
    headers.insert(::http::header::RETRY_AFTER, ::http::HeaderValue::from_static("1"));
    headers.insert(::http::header::CONTENT_TYPE, ::http::HeaderValue::from_static("text/plain"));
    response
}

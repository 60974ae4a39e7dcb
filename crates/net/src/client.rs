//! HTTP/1.1 connections to an upstream server (a remote store, the central Lakegate), each thread keeping its
//! own idle ones for its next requests.
//!
//! hyper-util's pooled client (one per thread before this) did more per request than a proxy in front of one
//! server needs: it looked the connection up under its pool's lock, built a connect future to race against that
//! checkout, cloned the pool key and the URI on the way, and, for an answer whose body was still to come (every
//! GET), spawned a task that waited for the body's end to put the connection back; learning whether a
//! connection had to be retired ([`WriteFailed`]) took `capture_connection`, a watch channel per request. Here a
//! thread's idle connections are a list only that thread touches; a connection comes back when its answer's
//! body has been read to the end ([`Pooled`]), unless a write to it failed; a request is written in origin form
//! as it was built. A 4 KiB GET forwarded to a remote store made 0.80–0.85 context switches instead of 1.00–1.03
//! and took about 5 µs less CPU (docs/benchmarks.md).
//!
//! What the pooled client did that matters is kept: a request that meets a reused connection the server has
//! closed meanwhile (its idle timeout may be shorter than ours) is sent again on a new one, since it was not
//! written; connections idle longer than the idle timeout are not used again. No timer reaps them: an idle
//! connection is closed when the server closes it (servers close idle connections after seconds to a minute)
//! or when a later request on its thread finds it too old.
//!
//! Connections are per thread because Lakegate serves each client connection on one thread
//! ([`crate::threads`]): hyper runs each connection as a task spawned where it was opened, and a request sent
//! over a connection opened on another thread would wake that thread to send and again to receive.

mod keep_reading;
mod resolve;

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use thread_local::ThreadLocal;

use crate::describe_error;
use keep_reading::{KeepReading, WriteFailed};
pub use resolve::Resolver;

/// At most so many idle connections to one origin are kept on a thread; a connection beyond them is closed when
/// its answer ends. Concurrent requests bound the number anyway; this bounds it whatever they are.
const MAX_IDLE_PER_THREAD: usize = 512;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made (refused, timed out, TLS failed); the text names the causes.
    #[error("{0}")]
    Connect(String),
    /// The request could not be written or its answer's head not read: the server went away, or the request's
    /// own body failed while it was sent (hyper then reports a user error whose source is the body's error).
    #[error("{}", describe_error(.0))]
    Send(hyper::Error),
}

/// Where requests go: a scheme and an authority, under which each thread keeps its idle connections.
#[derive(Debug, Clone)]
pub struct Origin {
    /// `scheme://authority/`, what the connector is given.
    uri: http::Uri,
    /// `scheme://authority`, the key of the idle lists.
    key: Box<str>,
    /// The `Host` of a request sent without one.
    host: HeaderValue,
}

impl Origin {
    /// `https` or `http` (anything else is `http`) and `host[:port]`.
    pub fn new(https: bool, authority: &str) -> Result<Self, http::Error> {
        let scheme = if https { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
        let uri = http::Uri::builder().scheme(scheme).authority(authority).path_and_query("/").build()?;
        let key = format!("{}://{authority}", if https { "https" } else { "http" }).into_boxed_str();
        Ok(Self { uri, key, host: HeaderValue::from_str(authority)? })
    }

    /// Where requests to an `http` or `https` URL go: its scheme and `host[:port]` (whether its path, query or
    /// user info may be there is the caller's to say). `None` for another scheme or a URL without a host.
    pub fn of_url(url: &url::Url) -> Option<Self> {
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let host = url.host_str()?;
        let authority = match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        Self::new(https, &authority).ok()
    }

    /// `host[:port]`.
    pub fn authority(&self) -> &str {
        self.uri.authority().map_or("", |a| a.as_str())
    }

    /// Whether connections to it are TLS.
    pub fn is_https(&self) -> bool {
        self.uri.scheme() == Some(&http::uri::Scheme::HTTPS)
    }
}

impl PartialEq for Origin {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for Origin {}

impl Hash for Origin {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

/// The body of a request sent upstream: any body, boxed (the fronts' forwarded bodies are).
pub type RequestBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// How connections are made: TCP (`TCP_NODELAY`, a connect timeout) to the addresses [`Resolver`] gives, TLS for
/// `https`.
type Connector = hyper_rustls::HttpsConnector<HttpConnector<Resolver>>;

/// Connections made with one TLS configuration, kept idle per thread and per origin.
pub struct Connections {
    connector: Connector,
    idle_timeout: Duration,
    idle: ThreadLocal<RefCell<HashMap<Origin, Vec<Idle>>>>,
}

/// An idle connection and when it became idle.
struct Idle {
    connection: Connection,
    since: Instant,
}

/// One connection to an origin.
struct Connection {
    sender: SendRequest<RequestBody>,
    /// Set once a write to it failed: the server answered before it read the whole request, and the rest of the
    /// body was discarded (see [`keep_reading`]); the connection is out of step and must not carry another
    /// request.
    failed: WriteFailed,
    /// What it was made to, the key of its idle list.
    origin: Origin,
    /// Whether it carried a request before this one.
    reused: bool,
}

impl Connection {
    /// False once hyper closed it or a write to it failed (a write may fail after its answer has ended: an upload
    /// the server answered early is still being sent).
    fn can_carry_more(&self) -> bool {
        !self.sender.is_closed() && !self.failed.happened()
    }
}

impl Connections {
    /// Connections over TCP with `TCP_NODELAY` and `connect_timeout`, and `tls` for `https`; an idle connection
    /// is not used again after `idle_timeout`.
    pub fn new(tls: rustls::ClientConfig, connect_timeout: Duration, idle_timeout: Duration) -> Self {
        let mut tcp = HttpConnector::new_with_resolver(Resolver::default());
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Self { connector, idle_timeout, idle: ThreadLocal::new() }
    }

    /// Sends `request` (origin form: a path and query; its `Host` is the origin's unless it has one) to `origin`
    /// and returns the answer, its body streaming; the connection goes back to this thread's idle list when the
    /// body has been read to its end.
    pub async fn send(
        self: &Arc<Self>,
        origin: &Origin,
        mut request: http::Request<RequestBody>,
    ) -> Result<http::Response<Pooled>, ClientError> {
        if !request.headers().contains_key(http::header::HOST) {
            request.headers_mut().insert(http::header::HOST, origin.host.clone());
        }
        let mut connection = match self.take_idle(origin) {
            Some(idle) => idle,
            None => self.connect(origin).await?,
        };
        let response = loop {
            match connection.sender.try_send_request(request).await {
                Ok(response) => break response,
                Err(mut e) => match e.take_message() {
                    // Not written: the server closed the connection while it was idle. A new one carries it.
                    Some(unsent) if connection.reused => {
                        tracing::debug!(error = %e.error(), "a kept connection was closed by the server; reconnecting");
                        request = unsent;
                        connection = self.connect(origin).await?;
                    }
                    _ => return Err(ClientError::Send(e.into_error())),
                },
            }
        };
        let pool = Arc::clone(self);
        Ok(response.map(|inner| Pooled { inner, connection: Some(connection), pool }))
    }

    /// A connection from this thread's idle list that can take a request now, dropping those that were closed
    /// or idle too long.
    fn take_idle(&self, origin: &Origin) -> Option<Connection> {
        let mut idle = self.idle.get_or_default().borrow_mut();
        let list = idle.get_mut(origin)?;
        let now = Instant::now();
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(kept) = list.pop() {
            if !kept.connection.can_carry_more() || now.saturating_duration_since(kept.since) > self.idle_timeout {
                continue;
            }
            // Its answer was read to the end, but it is still finishing the request (an upload the server
            // answered early): it stays for a later request.
            if !kept.connection.sender.is_ready() {
                busy.push(kept);
                continue;
            }
            found = Some(Connection { reused: true, ..kept.connection });
            break;
        }
        list.append(&mut busy);
        found
    }

    /// Puts a connection whose answer has ended back on this thread's idle list, if it can carry another request.
    fn give_back(&self, connection: Connection) {
        if !connection.can_carry_more() {
            return;
        }
        let mut idle = self.idle.get_or_default().borrow_mut();
        let kept = Idle { connection, since: Instant::now() };
        if let Some(list) = idle.get_mut(&kept.connection.origin) {
            if list.len() < MAX_IDLE_PER_THREAD {
                list.push(kept);
            }
            return;
        }
        // A list stays when emptied, so that a connection given back after each request does not copy its
        // origin into a new key each time; the emptied lists of other origins go when a new one comes.
        idle.retain(|_, list| !list.is_empty());
        idle.insert(kept.connection.origin.clone(), vec![kept]);
    }

    /// A new connection to `origin`, its hyper task spawned on this thread.
    async fn connect(&self, origin: &Origin) -> Result<Connection, ClientError> {
        let io = tower_service::Service::call(&mut self.connector.clone(), origin.uri.clone())
            .await
            .map_err(|e| ClientError::Connect(describe_error(e.as_ref())))?;
        let io = KeepReading::new(io);
        let failed = io.write_failed();
        let (sender, connection) =
            hyper::client::conn::http1::handshake(io).await.map_err(|e| ClientError::Connect(describe_error(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a connection to an upstream server ended");
            }
        });
        Ok(Connection { sender, failed, origin: origin.clone(), reused: false })
    }
}

/// The body of an answer, which gives its connection back once it has been read to the end.
pub struct Pooled {
    inner: Incoming,
    connection: Option<Connection>,
    pool: Arc<Connections>,
}

impl Pooled {
    fn give_back(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection);
        }
    }
}

impl Body for Pooled {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            // The connection is closed by hyper; it is not given back.
            Some(Err(_)) => drop(self.connection.take()),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        // A server writing this body stops polling it once it reports its end (all of a `content-length`
        // read, or no body at all): the connection is free then too. A body dropped before its end leaves
        // hyper to close the connection.
        if self.inner.is_end_stream() {
            self.give_back();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Empty};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A server that answers every request with the `Host` it was sent, counting the connections it accepted;
    /// with `close_after_answer` it closes each connection once it has answered (as a server whose idle timeout
    /// ran out does), without saying so in the answer.
    async fn server(close_after_answer: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counted = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    loop {
                        let n = socket.read(&mut buf).await.unwrap_or(0);
                        if n == 0 {
                            return;
                        }
                        head.extend_from_slice(buf.get(..n).unwrap());
                        // Requests without bodies: each ends with an empty line.
                        while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            let request = String::from_utf8_lossy(head.get(..end).unwrap()).into_owned();
                            head.drain(..end + 4);
                            let host = request
                                .lines()
                                .find_map(|line| line.strip_prefix("host: "))
                                .unwrap_or("(none)")
                                .to_owned();
                            let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{host}", host.len());
                            if socket.write_all(answer.as_bytes()).await.is_err() || close_after_answer {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn empty() -> RequestBody {
        Empty::new().map_err(|never| match never {}).boxed_unsync()
    }

    fn connections(idle_timeout: Duration) -> Arc<Connections> {
        let tls = crate::tls::client_config(None, None).unwrap();
        Arc::new(Connections::new(tls, Duration::from_secs(5), idle_timeout))
    }

    async fn get(connections: &Arc<Connections>, addr: SocketAddr) -> http::Response<Pooled> {
        let origin = Origin::new(false, &addr.to_string()).unwrap();
        let request = http::Request::get("/lake/k").body(empty()).unwrap();
        connections.send(&origin, request).await.unwrap()
    }

    async fn read(response: http::Response<Pooled>) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[tokio::test]
    async fn a_connection_whose_answer_was_read_to_its_end_carries_the_next_request() {
        let (addr, accepted) = server(false).await;
        let connections = connections(Duration::from_secs(30));
        for _ in 0..3 {
            assert_eq!(read(get(&connections, addr).await).await, addr.to_string(), "sent with its origin's Host");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_that_names_its_host_keeps_it() {
        let (addr, _) = server(false).await;
        let connections = connections(Duration::from_secs(30));
        let origin = Origin::new(false, &addr.to_string()).unwrap();
        let request = http::Request::get("/").header(http::header::HOST, "lake.example").body(empty()).unwrap();
        assert_eq!(read(connections.send(&origin, request).await.unwrap()).await, "lake.example");
    }

    #[tokio::test]
    async fn a_host_under_localhost_is_reached_on_loopback() {
        // The test server listens on 127.0.0.1 only; no resolver of this machine need know the name.
        let (addr, _) = server(false).await;
        let connections = connections(Duration::from_secs(30));
        let authority = format!("lake.localhost:{}", addr.port());
        let origin = Origin::new(false, &authority).unwrap();
        let request = http::Request::get("/k").body(empty()).unwrap();
        assert_eq!(read(connections.send(&origin, request).await.unwrap()).await, authority);
    }

    #[tokio::test]
    async fn an_answer_left_unread_takes_its_connection_with_it() {
        let (addr, accepted) = server(false).await;
        let connections = connections(Duration::from_secs(30));
        drop(get(&connections, addr).await);
        assert_eq!(read(get(&connections, addr).await).await, addr.to_string());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_replaced() {
        let (addr, accepted) = server(true).await;
        let connections = connections(Duration::from_secs(30));
        assert_eq!(read(get(&connections, addr).await).await, addr.to_string());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(read(get(&connections, addr).await).await, addr.to_string());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_is_not_used_after_the_idle_timeout() {
        let (addr, accepted) = server(false).await;
        let connections = connections(Duration::ZERO);
        assert_eq!(read(get(&connections, addr).await).await, addr.to_string());
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(read(get(&connections, addr).await).await, addr.to_string());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn an_origin_keeps_its_scheme_and_authority_apart() {
        let tls = Origin::new(true, "lake.s3.example.com:8443").unwrap();
        assert!(tls.is_https());
        assert_eq!(tls.authority(), "lake.s3.example.com:8443");
        let plain = Origin::new(false, "127.0.0.1:9000").unwrap();
        assert!(!plain.is_https());
        assert_ne!(Origin::new(true, "store").unwrap(), Origin::new(false, "store").unwrap(), "one key each");
        assert!(Origin::new(false, "bad host").is_err());
    }

    #[test]
    fn a_urls_origin_is_its_scheme_host_and_port_only() {
        let origin = |url: &str| Origin::of_url(&url::Url::parse(url).unwrap());
        let store = origin("https://user@store.example.com:8443/base/path?x=1").unwrap();
        assert!(store.is_https());
        assert_eq!(store.authority(), "store.example.com:8443");
        assert_eq!(origin("http://[::1]:9000").unwrap().authority(), "[::1]:9000");
        assert_eq!(origin("http://store:80").unwrap().authority(), "store", "a default port is not written");
        assert!(origin("ftp://store").is_none());
        assert!(origin("unix:/run/store.sock").is_none());
    }

    #[tokio::test]
    async fn a_server_that_cannot_be_reached_is_a_connect_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let origin = Origin::new(false, &addr.to_string()).unwrap();
        let request = http::Request::get("/").body(empty()).unwrap();
        let error = connections(Duration::from_secs(30)).send(&origin, request).await.err().unwrap();
        assert!(matches!(error, ClientError::Connect(_)), "{error:?}");
    }
}

//! Connections to a remote store: HTTP/1.1, each thread keeping its own idle ones for its next requests.
//!
//! hyper-util's pooled client (one per thread before this) did more per request than a proxy in front of one
//! store needs: it looked the connection up under its pool's lock, built a connect future to race against that
//! checkout, cloned the pool key and the URI on the way, and, for an answer whose body was still to come (every
//! GET), spawned a task that waited for the body's end to put the connection back; learning whether a
//! connection had to be retired ([`WriteFailed`]) took `capture_connection`, a watch channel per request. Here a
//! thread's idle connections are a list only that thread touches; a connection comes back when its answer's
//! body has been read to the end ([`StoreBody`]), unless a write to it failed; a request is written in origin
//! form as it was built. A forwarded 4 KiB GET made 0.80–0.85 context switches instead of 1.00–1.03 and took
//! about 5 µs less CPU (docs/benchmarks.md).
//!
//! What the pooled client did that matters is kept: a request that meets a reused connection the store has
//! closed meanwhile (its idle timeout may be shorter than ours) is sent again on a new one, since it was not
//! written; connections idle longer than the idle timeout are not used again. No timer reaps them: an idle
//! connection is closed when the store closes it (stores close idle connections after seconds to a minute) or
//! when a later request on its thread finds it too old.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::client::legacy::connect::HttpConnector;
use lakegate_net::describe_error;
use thread_local::ThreadLocal;

use super::keep_reading::{Connector, KeepReadingConnector, WriteFailed};
use super::{BackendError, BoxBody};

/// At most so many idle connections to one authority are kept on a thread; a connection beyond them is closed
/// when its answer ends. Concurrent requests bound the number anyway; this bounds it whatever they are.
const MAX_IDLE_PER_THREAD: usize = 512;

/// Connections to the store, made with `connector` and kept idle per thread.
pub(super) struct StoreConnections {
    connector: Connector,
    /// `http` or `https`, for the URI the connector is given.
    scheme: http::uri::Scheme,
    idle_timeout: Duration,
    idle: ThreadLocal<RefCell<HashMap<String, Vec<Idle>>>>,
}

/// An idle connection and when it became idle.
struct Idle {
    connection: StoreConnection,
    since: Instant,
}

/// One connection to the store.
struct StoreConnection {
    sender: SendRequest<BoxBody>,
    /// Set once a write to it failed: the store answered before it read the whole request, and the rest of the
    /// body was discarded (see [`super::keep_reading`]); the connection is out of step and must not carry
    /// another request.
    failed: WriteFailed,
    /// The `host[:port]` it was made to, the key of its idle list.
    authority: String,
    /// Whether it carried a request before this one.
    reused: bool,
}

impl StoreConnection {
    /// False once hyper closed it or a write to it failed (a write may fail after its answer has ended: an upload
    /// the store answered early is still being sent).
    fn can_carry_more(&self) -> bool {
        !self.sender.is_closed() && !self.failed.happened()
    }
}

impl StoreConnections {
    /// Connections made over TCP (`TCP_NODELAY`, `connect_timeout`) for `http`, and TLS with the web's roots for
    /// `https`; an idle connection is not used again after `idle_timeout`.
    pub(super) fn new(
        scheme: http::uri::Scheme,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Result<Self, BackendError> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(connect_timeout));
        tcp.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::aws_lc_rs::default_provider())
            .map_err(|e| BackendError::Request(e.to_string()))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        Ok(Self { connector: KeepReadingConnector(https), scheme, idle_timeout, idle: ThreadLocal::new() })
    }

    /// Sends `request` (origin form, `host` set) to the store at `authority` and returns its answer, the body
    /// streaming; the connection goes back to this thread's idle list when the body has been read to its end.
    pub(super) async fn send(
        self: &Arc<Self>,
        authority: &str,
        mut request: http::Request<BoxBody>,
    ) -> Result<http::Response<BoxBody>, BackendError> {
        let mut connection = match self.take_idle(authority) {
            Some(idle) => idle,
            None => self.connect(authority).await?,
        };
        let response = loop {
            match connection.sender.try_send_request(request).await {
                Ok(response) => break response,
                Err(mut e) => match e.take_message() {
                    // Not written: the store closed the connection while it was idle. A new one carries it.
                    Some(unsent) if connection.reused => {
                        tracing::debug!(error = %e.error(), "a kept connection to the store was closed; reconnecting");
                        request = unsent;
                        connection = self.connect(authority).await?;
                    }
                    _ => return Err(send_error(&e.into_error())),
                },
            }
        };
        let pool = Arc::clone(self);
        Ok(response.map(|inner| StoreBody { inner, connection: Some(connection), pool }.boxed_unsync()))
    }

    /// A connection from this thread's idle list that can take a request now, dropping those that were closed
    /// or idle too long.
    fn take_idle(&self, authority: &str) -> Option<StoreConnection> {
        let mut idle = self.idle.get_or_default().borrow_mut();
        let list = idle.get_mut(authority)?;
        let now = Instant::now();
        let mut busy = Vec::new();
        let mut found = None;
        while let Some(kept) = list.pop() {
            if !kept.connection.can_carry_more() || now.saturating_duration_since(kept.since) > self.idle_timeout {
                continue;
            }
            // Its answer was read to the end, but it is still finishing the request (an upload the store
            // answered early): it stays for a later request.
            if !kept.connection.sender.is_ready() {
                busy.push(kept);
                continue;
            }
            found = Some(StoreConnection { reused: true, ..kept.connection });
            break;
        }
        list.append(&mut busy);
        found
    }

    /// Puts a connection whose answer has ended back on this thread's idle list, if it can carry another request.
    fn give_back(&self, connection: StoreConnection) {
        if !connection.can_carry_more() {
            return;
        }
        let mut idle = self.idle.get_or_default().borrow_mut();
        let kept = Idle { connection, since: Instant::now() };
        if let Some(list) = idle.get_mut(&kept.connection.authority) {
            if list.len() < MAX_IDLE_PER_THREAD {
                list.push(kept);
            }
            return;
        }
        // A list stays when emptied, so that a connection given back after each request does not copy its
        // authority into a new key each time; the emptied lists of other authorities go when a new one comes.
        idle.retain(|_, list| !list.is_empty());
        idle.insert(kept.connection.authority.clone(), vec![kept]);
    }

    /// A new connection to `authority`, its hyper task spawned on this thread.
    async fn connect(&self, authority: &str) -> Result<StoreConnection, BackendError> {
        let uri = http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(authority)
            .path_and_query("/")
            .build()
            .map_err(|e| BackendError::Request(e.to_string()))?;
        let io = tower_service::Service::call(&mut self.connector.clone(), uri)
            .await
            .map_err(|e| BackendError::Unavailable(describe_error(e.as_ref())))?;
        let failed = io.write_failed();
        let (sender, connection) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| BackendError::Unavailable(describe_error(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a connection to the store ended");
            }
        });
        Ok(StoreConnection { sender, failed, authority: authority.to_owned(), reused: false })
    }
}

/// Tells why a request to the store failed without an answer: the client's body, or the store going away.
fn send_error(e: &hyper::Error) -> BackendError {
    let detail = describe_error(e);
    // hyper reports a failure of the request body it was sending (the client's upload broke off) as a user
    // error; nothing else Lakegate hands it can fail so once the request is built.
    if e.is_user() { BackendError::ClientBody(detail) } else { BackendError::Aborted(detail) }
}

/// The body of a store's answer, which gives its connection back once it has been read to the end.
struct StoreBody {
    inner: Incoming,
    connection: Option<StoreConnection>,
    pool: Arc<StoreConnections>,
}

impl StoreBody {
    fn give_back(&mut self) {
        if let Some(connection) = self.connection.take() {
            self.pool.give_back(connection);
        }
    }
}

impl Body for StoreBody {
    type Data = Bytes;
    type Error = lakegate_s3_protocol::sigv4::BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let frame = std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            // The connection is closed by hyper; it is not given back.
            Some(Err(_)) => drop(self.connection.take()),
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame.map(|f| f.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for StoreBody {
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

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A store that answers every request with `hello`, counting the connections it accepted; with
    /// `close_after_answer` it closes each connection once it has answered (as a store whose idle timeout ran
    /// out does), without saying so in the answer.
    async fn store(close_after_answer: bool) -> (SocketAddr, Arc<AtomicUsize>) {
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
                            head.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";
                            if socket.write_all(answer).await.is_err() || close_after_answer {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn connections() -> Arc<StoreConnections> {
        let timeout = Duration::from_secs(5);
        Arc::new(StoreConnections::new(http::uri::Scheme::HTTP, timeout, Duration::from_secs(30)).unwrap())
    }

    async fn get(connections: &Arc<StoreConnections>, addr: SocketAddr) -> http::Response<BoxBody> {
        let request = http::Request::get("/lake/k")
            .header(http::header::HOST, addr.to_string())
            .body(lakegate_s3_protocol::body::empty())
            .unwrap();
        connections.send(&addr.to_string(), request).await.unwrap()
    }

    async fn read(response: http::Response<BoxBody>) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn a_connection_whose_answer_was_read_to_its_end_carries_the_next_request() {
        let (addr, accepted) = store(false).await;
        let connections = connections();
        for _ in 0..3 {
            assert_eq!(read(get(&connections, addr).await).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_answer_left_unread_takes_its_connection_with_it() {
        let (addr, accepted) = store(false).await;
        let connections = connections();
        drop(get(&connections, addr).await);
        assert_eq!(read(get(&connections, addr).await).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_store_closed_while_idle_is_replaced() {
        let (addr, accepted) = store(true).await;
        let connections = connections();
        assert_eq!(read(get(&connections, addr).await).await, "hello");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(read(get(&connections, addr).await).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_is_not_used_after_the_idle_timeout() {
        let (addr, accepted) = store(false).await;
        let timeout = Duration::from_secs(5);
        let connections = Arc::new(StoreConnections::new(http::uri::Scheme::HTTP, timeout, Duration::ZERO).unwrap());
        assert_eq!(read(get(&connections, addr).await).await, "hello");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(read(get(&connections, addr).await).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }
}

//! A remote S3-compatible store: every forwarded request is re-signed with the store's own credentials and
//! sent over a connection each thread keeps to the store ([`StoreConnections`]); bodies stream both ways.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;

use super::store_connections::StoreConnections;
use super::store_keys::StoreKeys;
use super::{Backend, BackendError, BoxBody, ForwardRequest, encode_path, encode_query};
use lakegate_s3_protocol::sigv4::{UNSIGNED_PAYLOAD, sign_request};

/// `[s3.backend]` when `kind = "remote"`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteConfig {
    /// `http://host:port` or `https://host`.
    pub endpoint: url::Url,
    #[serde(default = "default_region")]
    pub region: String,
    /// Static keys for the store. Leave both out to take the store's credentials from the standard AWS chain
    /// (environment, profile, web identity, container and instance metadata): see [`super::store_keys`].
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<String>,
    #[serde(default)]
    pub session_token: Option<String>,
    /// Path-style (`endpoint/bucket/key`, the default) or virtual-hosted (`bucket.endpoint/key`).
    #[serde(default = "default_true")]
    pub path_style: bool,
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Time allowed until the store's response head arrives (bodies stream without a deadline).
    #[serde(default = "default_response_timeout")]
    pub response_timeout_seconds: u64,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_true() -> bool {
    true
}
fn default_connect_timeout() -> u64 {
    5_000
}
fn default_response_timeout() -> u64 {
    60
}

/// The remote store.
pub struct Remote {
    /// Each thread's own connections, so that a request and its store connection's task share a thread: the
    /// S3 front serves each connection on one thread (`lakegate_net::Threads::PerCore`), and a connection
    /// spawned on another thread would wake that one twice a request.
    connections: Arc<StoreConnections>,
    config: RemoteConfig,
    keys: StoreKeys,
    /// The endpoint's `host[:port]` and path without its trailing `/`, taken apart once.
    host_port: String,
    base: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("config", &self.config).finish()
    }
}

impl Remote {
    /// A client for the configured store. No connection to the store is made until the first request; the AWS
    /// chain, when it is used, is asked for credentials now.
    pub async fn connect(config: RemoteConfig) -> Result<Self, BackendError> {
        let host = match config.endpoint.host_str() {
            Some(host) if matches!(config.endpoint.scheme(), "http" | "https") => host,
            _ => return Err(BackendError::Request("the endpoint must be an http(s) URL with a host".into())),
        };
        let host_port = match config.endpoint.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_owned(),
        };
        let base = config.endpoint.path().trim_end_matches('/').to_owned();
        let keys = StoreKeys::resolve(
            config.access_key_id.as_deref(),
            config.secret_access_key.as_deref(),
            config.session_token.as_deref(),
            &config.region,
        )
        .await?;
        let scheme =
            if config.endpoint.scheme() == "https" { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let connections = Arc::new(StoreConnections::new(scheme, connect_timeout, Duration::from_secs(30))?);
        Ok(Self { connections, config, keys, host_port, base })
    }

    /// The authority and path for a request, per the addressing style.
    fn locate(&self, bucket: Option<&str>, key: Option<&str>) -> (String, String) {
        let (host_port, base) = (&self.host_port, &self.base);
        match (self.config.path_style, bucket) {
            (false, Some(b)) => (format!("{b}.{host_port}"), format!("{base}{}", encode_path(None, key))),
            _ => (host_port.clone(), format!("{base}{}", encode_path(bucket, key))),
        }
    }
}

impl Backend for Remote {
    fn forward(&self, request: ForwardRequest) -> BoxFuture<'_, Result<http::Response<BoxBody>, BackendError>> {
        Box::pin(async move {
            let (authority, path) = self.locate(request.bucket.as_deref(), request.key.as_deref());
            let query = encode_query(&request.query);
            let mut headers = request.headers;
            let credentials = self.keys.current().await?;
            sign_request(
                request.method.as_str(),
                &path,
                query.as_deref(),
                &authority,
                &mut headers,
                &credentials,
                &self.config.region,
                "s3",
                UNSIGNED_PAYLOAD,
                time::OffsetDateTime::now_utc(),
            )
            .map_err(|e| BackendError::Request(e.to_string()))?;
            // Origin form: the connection is already the store's.
            let uri = match &query {
                Some(q) => format!("{path}?{q}"),
                None => path,
            };
            let mut builder = http::Request::builder().method(request.method).uri(uri);
            if let Some(h) = builder.headers_mut() {
                *h = headers;
            }
            let req = builder.body(request.body).map_err(|e| BackendError::Request(e.to_string()))?;
            let timeout = Duration::from_secs(self.config.response_timeout_seconds);
            tokio::time::timeout(timeout, self.connections.send(&authority, req))
                .await
                .map_err(|_| BackendError::Timeout)?
        })
    }

    fn describe(&self) -> String {
        format!("remote store {} ({}, {})", self.config.endpoint, self.config.region, self.keys.describe())
    }
}

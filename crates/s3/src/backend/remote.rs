//! A remote S3-compatible store: every forwarded request is re-signed with the store's own credentials and
//! sent over a connection each thread keeps to the store ([`Connections`]); bodies stream both ways.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::BodyExt;
use lakegate_net::client::{ClientError, Connections, Origin};
use lakegate_net::describe_error;
use serde::Deserialize;

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
    connections: Arc<Connections>,
    config: RemoteConfig,
    keys: StoreKeys,
    /// The endpoint's scheme and `host[:port]`, where path-style requests go.
    origin: Origin,
    /// The endpoint's path without its trailing `/`.
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
        let origin = Origin::of_url(&config.endpoint)
            .ok_or_else(|| BackendError::Request("the endpoint must be an http(s) URL with a host".into()))?;
        let base = config.endpoint.path().trim_end_matches('/').to_owned();
        let keys = StoreKeys::resolve(
            config.access_key_id.as_deref(),
            config.secret_access_key.as_deref(),
            config.session_token.as_deref(),
            &config.region,
        )
        .await?;
        let tls = lakegate_net::tls::client_config(None, None).map_err(|e| BackendError::Request(e.to_string()))?;
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms);
        let connections = Arc::new(Connections::new(tls, connect_timeout, Duration::from_secs(30)));
        Ok(Self { connections, config, keys, origin, base })
    }

    /// The origin and path for a request, per the addressing style.
    fn locate(&self, bucket: Option<&str>, key: Option<&str>) -> Result<(Cow<'_, Origin>, String), BackendError> {
        let base = &self.base;
        Ok(match (self.config.path_style, bucket) {
            (false, Some(b)) => {
                let authority = format!("{b}.{}", self.origin.authority());
                let origin = Origin::new(self.origin.is_https(), &authority)
                    .map_err(|e| BackendError::Request(format!("the store's host {authority:?}: {e}")))?;
                (Cow::Owned(origin), format!("{base}{}", encode_path(None, key)))
            }
            _ => (Cow::Borrowed(&self.origin), format!("{base}{}", encode_path(bucket, key))),
        })
    }
}

impl Backend for Remote {
    fn forward(&self, request: ForwardRequest) -> BoxFuture<'_, Result<http::Response<BoxBody>, BackendError>> {
        Box::pin(async move {
            let (origin, path) = self.locate(request.bucket.as_deref(), request.key.as_deref())?;
            let query = encode_query(&request.query);
            let mut headers = request.headers;
            let credentials = self.keys.current().await?;
            sign_request(
                request.method.as_str(),
                &path,
                query.as_deref(),
                origin.authority(),
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
            let response = tokio::time::timeout(timeout, self.connections.send(&origin, req))
                .await
                .map_err(|_| BackendError::Timeout)?
                .map_err(send_error)?;
            Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()))
        })
    }

    fn describe(&self) -> String {
        format!("remote store {} ({}, {})", self.config.endpoint, self.config.region, self.keys.describe())
    }
}

/// Tells why a request to the store got no answer: no connection, the client's body, or the store going away.
fn send_error(e: ClientError) -> BackendError {
    match e {
        ClientError::Connect(detail) => BackendError::Unavailable(detail),
        // hyper reports a failure of the request body it was sending (the client's upload broke off) as a user
        // error; nothing else Lakegate hands it can fail so once the request is built.
        ClientError::Send(e) if e.is_user() => BackendError::ClientBody(describe_error(&e)),
        ClientError::Send(e) => BackendError::Aborted(describe_error(&e)),
    }
}

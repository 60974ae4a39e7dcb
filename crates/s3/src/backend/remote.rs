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
    /// Path-style (`endpoint/bucket/key`, the default) or virtual-hosted (`bucket.endpoint/key`). Virtual-hosted
    /// applies where the bucket can be named in the host ([`Remote::virtual_hosted`]); other requests go
    /// path-style.
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
    /// Whether requests naming a bucket go virtual-hosted: asked for, and the endpoint's host is a name.
    virtual_hosts: bool,
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
        let virtual_hosts = !config.path_style && matches!(config.endpoint.host(), Some(url::Host::Domain(_)));
        if !config.path_style && !virtual_hosts {
            tracing::warn!(
                endpoint = %config.endpoint,
                "the remote store's endpoint is an IP address, which names no bucket's host: requests go path-style"
            );
        }
        Ok(Self { connections, config, keys, origin, base, virtual_hosts })
    }

    /// Whether a request for `bucket` goes virtual-hosted: the store is addressed so, and the bucket's name can be
    /// the first label of a host name (one DNS label: lowercase letters, digits, hyphens). As the AWS SDKs do,
    /// other buckets go path-style: a name with a dot would be a host two levels under the endpoint, which a TLS
    /// store's wildcard certificate (`*.s3.amazonaws.com`) does not cover, and one with an uppercase letter or an
    /// underscore (older buckets may have them) is no host name at all.
    fn virtual_hosted(&self, bucket: &str) -> bool {
        let label = bucket.as_bytes();
        self.virtual_hosts
            && (1..=63).contains(&label.len())
            && label.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
    }

    /// The origin and path for a request, per the addressing style.
    fn locate(&self, bucket: Option<&str>, key: Option<&str>) -> Result<(Cow<'_, Origin>, String), BackendError> {
        let base = &self.base;
        Ok(match bucket {
            Some(b) if self.virtual_hosted(b) => {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    async fn store(endpoint: &str, path_style: bool) -> Remote {
        let config = RemoteConfig {
            endpoint: endpoint.parse().unwrap(),
            region: default_region(),
            access_key_id: Some("AKIASTORE".into()),
            secret_access_key: Some("store-secret".into()),
            session_token: None,
            path_style,
            connect_timeout_ms: default_connect_timeout(),
            response_timeout_seconds: default_response_timeout(),
        };
        Remote::connect(config).await.unwrap()
    }

    /// Where a request for `bucket` and `key` goes: `host[:port]/path`.
    fn located(store: &Remote, bucket: Option<&str>, key: Option<&str>) -> String {
        let (origin, path) = store.locate(bucket, key).unwrap();
        format!("{}{path}", origin.authority())
    }

    #[tokio::test]
    async fn a_virtual_hosted_store_is_sent_the_bucket_in_the_host() {
        let store = store("https://s3.example.com:8443/base/", false).await;
        assert_eq!(located(&store, Some("lake"), Some("a/b c.csv")), "lake.s3.example.com:8443/base/a/b%20c.csv");
        assert_eq!(located(&store, Some("lake-2"), None), "lake-2.s3.example.com:8443/base/");
        // Listing the buckets names none.
        assert_eq!(located(&store, None, None), "s3.example.com:8443/base/");
    }

    #[tokio::test]
    async fn a_bucket_that_cannot_be_a_host_label_goes_path_style() {
        let store = store("https://s3.example.com", false).await;
        let long = "l".repeat(64);
        for bucket in ["my.lake", "Lake", "old_lake", "-lake", "lake-", long.as_str()] {
            assert_eq!(located(&store, Some(bucket), Some("k")), format!("s3.example.com/{bucket}/k"), "{bucket}");
        }
    }

    #[tokio::test]
    async fn an_endpoint_given_as_an_ip_address_is_sent_every_request_path_style() {
        for endpoint in ["http://127.0.0.1:9000", "http://[::1]:9000"] {
            let store = store(endpoint, false).await;
            let authority = endpoint.trim_start_matches("http://");
            assert_eq!(located(&store, Some("lake"), Some("k")), format!("{authority}/lake/k"));
        }
    }

    #[tokio::test]
    async fn a_path_style_store_is_sent_the_bucket_in_the_path() {
        let store = store("http://localhost:9000", true).await;
        assert_eq!(located(&store, Some("lake"), Some("k")), "localhost:9000/lake/k");
    }
}

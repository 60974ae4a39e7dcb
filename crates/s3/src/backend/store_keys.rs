//! The remote store's own credentials: static keys from the configuration, or the standard AWS chain.
//!
//! The chain is `aws-config`'s default one, as every AWS SDK resolves it: environment variables, the shared
//! config and credentials files (`AWS_PROFILE`), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` and
//! `AWS_ROLE_ARN`, as EKS injects them; `AWS_ENDPOINT_URL_STS` for an STS other than AWS's), the ECS container
//! endpoint and EC2 instance metadata. Its credentials expire, so they are kept until five minutes before
//! their expiry and then fetched again by one request while the others wait, never by every request.

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_credential_types::provider::ProvideCredentials;

use super::BackendError;
use lakegate_s3_protocol::sigv4::{SecretKey, StoreCredentials};

/// How long before their expiry chain credentials are replaced, so none expires on its way to the store.
const REFRESH_AHEAD: Duration = Duration::from_secs(5 * 60);

/// Where the store's credentials come from.
pub(super) enum StoreKeys {
    Static(Arc<StoreCredentials>),
    Chain(Chain),
}

/// Credentials from the AWS chain, cached until shortly before they expire.
pub(super) struct Chain {
    provider: DefaultCredentialsChain,
    current: RwLock<Option<Cached>>,
    refreshing: tokio::sync::Mutex<()>,
    /// When the last refresh failed, while the credentials held have not expired yet.
    failed: std::sync::Mutex<Option<Instant>>,
}

/// After a failed refresh, how long credentials that are due but not yet expired keep serving before the chain
/// is asked again, so that a failing credentials endpoint is not asked by every request.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);

#[derive(Clone)]
struct Cached {
    credentials: Arc<StoreCredentials>,
    expires: Option<SystemTime>,
}

impl StoreKeys {
    /// Static keys when both are configured; otherwise the AWS chain, which must yield credentials now, so a
    /// deployment without any fails at start with the chain's own explanation rather than on every request.
    pub(super) async fn resolve(
        access_key_id: Option<&str>,
        secret_access_key: Option<&str>,
        session_token: Option<&str>,
        region: &str,
    ) -> Result<Self, BackendError> {
        match (access_key_id, secret_access_key) {
            (Some(id), Some(secret)) => Ok(Self::Static(Arc::new(StoreCredentials {
                access_key_id: id.to_owned(),
                secret: SecretKey::new(secret),
                session_token: session_token.map(str::to_owned),
            }))),
            (None, None) => {
                let provider =
                    DefaultCredentialsChain::builder().region(aws_config::Region::new(region.to_owned())).build().await;
                let chain = Chain {
                    provider,
                    current: RwLock::new(None),
                    refreshing: tokio::sync::Mutex::new(()),
                    failed: std::sync::Mutex::new(None),
                };
                chain.fetch().await?;
                Ok(Self::Chain(chain))
            }
            _ => Err(BackendError::Request(
                "the remote store needs both access_key_id and secret_access_key, or neither (the AWS chain)".into(),
            )),
        }
    }

    /// The credentials to sign the next request with (shared, not copied, per request).
    pub(super) async fn current(&self) -> Result<Arc<StoreCredentials>, BackendError> {
        match self {
            Self::Static(c) => Ok(c.clone()),
            Self::Chain(chain) => match chain.fresh() {
                Some(c) => Ok(c),
                None => chain.refresh().await,
            },
        }
    }

    /// Where the credentials come from, for the start-up banner.
    pub(super) fn describe(&self) -> &'static str {
        match self {
            Self::Static(_) => "static keys",
            Self::Chain(_) => "the AWS credential chain",
        }
    }
}

impl Chain {
    fn fresh(&self) -> Option<Arc<StoreCredentials>> {
        let guard = self.current.read().ok()?;
        let cached = guard.as_ref()?;
        let fresh = cached.expires.is_none_or(|t| t.duration_since(SystemTime::now()).is_ok_and(|d| d > REFRESH_AHEAD));
        fresh.then(|| cached.credentials.clone())
    }

    /// The credentials held, if they have not expired yet (due for refresh or not).
    fn unexpired(&self) -> Option<Arc<StoreCredentials>> {
        let guard = self.current.read().ok()?;
        let cached = guard.as_ref()?;
        cached.expires.is_none_or(|t| t > SystemTime::now()).then(|| cached.credentials.clone())
    }

    fn failed_at(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // A plain value: a panic elsewhere cannot leave it half written.
        self.failed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fetches new credentials, once for all the requests that found the old ones stale. When the chain fails,
    /// credentials that have not expired yet keep serving (and the chain is asked again after
    /// [`RETRY_AFTER_FAILURE`]); without them the request fails (`503`) and the next one asks again.
    async fn refresh(&self) -> Result<Arc<StoreCredentials>, BackendError> {
        let _one_at_a_time = self.refreshing.lock().await;
        if let Some(c) = self.fresh() {
            return Ok(c);
        }
        let unexpired = self.unexpired();
        if let Some(c) = &unexpired
            && self.failed_at().is_some_and(|at| at.elapsed() < RETRY_AFTER_FAILURE)
        {
            return Ok(c.clone());
        }
        match self.fetch().await {
            Ok(c) => {
                *self.failed_at() = None;
                Ok(c)
            }
            Err(e) => match unexpired {
                Some(c) => {
                    tracing::warn!(error = %e, "refreshing the store credentials failed; the current ones serve until they expire");
                    *self.failed_at() = Some(Instant::now());
                    Ok(c)
                }
                None => Err(e),
            },
        }
    }

    async fn fetch(&self) -> Result<Arc<StoreCredentials>, BackendError> {
        let fetched = self.provider.provide_credentials().await.map_err(|e| {
            BackendError::Credentials(format!("no credentials for the store from the AWS chain: {}", chain_error(&e)))
        })?;
        let credentials = Arc::new(StoreCredentials {
            access_key_id: fetched.access_key_id().to_owned(),
            secret: SecretKey::new(fetched.secret_access_key()),
            session_token: fetched.session_token().map(str::to_owned),
        });
        tracing::info!(
            access_key_id = %credentials.access_key_id,
            expires = ?fetched.expiry(),
            "store credentials from the AWS chain"
        );
        let cached = Cached { credentials: credentials.clone(), expires: fetched.expiry() };
        if let Ok(mut slot) = self.current.write() {
            *slot = Some(cached);
        }
        Ok(credentials)
    }
}

/// The chain's error with its causes, which hold the useful part (which provider said what).
fn chain_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

//! One trusted issuer: its signing keys (discovered, fetched or static), cached, refreshed with restraint.
//!
//! Keys are fetched on first use. A token naming a `kid` that is not cached triggers a refresh, but only one
//! refresh runs at a time and only one per `jwks_min_refresh_seconds`, so a flood of tokens with invented
//! `kid`s costs the IdP at most one request per interval. While tokens come, the keys are also fetched again
//! every `jwks_refresh_seconds`: in a rotation the new key is published before the old one is withdrawn, so no
//! token names an unknown `kid` when the old key goes, and without this the old key (and every token cached
//! under it) would stay trusted. A failed fetch keeps the cached keys.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use openidconnect::IssuerUrl;
use openidconnect::core::CoreProviderMetadata;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwt::{Peeked, parse_algorithm};
use super::{ConfigError, IdentityError, IssuerConfig, Principal, claims};

/// Counts JWKS fetches (successful or not), for metrics and for the tests that pin the refresh limit.
pub type JwksFetches = Arc<AtomicU64>;

/// Upper bound on a JWKS document; a real one is a few KiB.
const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// A trusted issuer with its key cache.
pub struct TrustedIssuer {
    config: IssuerConfig,
    allowed: Vec<Algorithm>,
    /// Read by every request whose token is served from the cache (its generation), replaced by a refresh: an
    /// [`ArcSwap`], whose reads write only memory of the reading thread's own.
    keys: ArcSwap<KeySet>,
    refresh: tokio::sync::Mutex<RefreshState>,
    /// When (Unix seconds) the keys are next fetched again unasked (see the module's note): a refresh period after
    /// the last fetch, or after start.
    refresh_due: AtomicI64,
    source: KeySource,
    http: reqwest::Client,
    fetches: JwksFetches,
}

enum KeySource {
    Static,
    /// Lakegate's own signing keys, re-read from their directory on refresh.
    Local(Arc<super::Signer>),
    File(std::path::PathBuf),
    Url(String),
    Discovery,
}

#[derive(Default)]
struct RefreshState {
    last_fetch: Option<Instant>,
    /// Learned through discovery, reused by later refreshes.
    jwks_uri: Option<String>,
}

#[derive(Default)]
struct KeySet {
    /// Bumped whenever the issuer's keys change, which makes every cached token it verified stale.
    generation: u64,
    /// The SHA-256 of the JWKS the set was built from; a refresh that brings the same keys changes nothing.
    fingerprint: Option<[u8; 32]>,
    by_kid: HashMap<String, CachedKey>,
    /// Keys without a `kid`; usable by a token without `kid` when there is exactly one.
    anonymous: Vec<CachedKey>,
}

struct CachedKey {
    key: DecodingKey,
    kind: KeyKind,
    alg: Option<Algorithm>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum KeyKind {
    Rsa,
    Ec,
    Okp,
}

impl KeyKind {
    fn fits(self, alg: Algorithm) -> bool {
        use Algorithm::*;
        matches!(
            (self, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::Ec, ES256 | ES384)
                | (KeyKind::Okp, EdDSA)
        )
    }
}

impl std::fmt::Debug for TrustedIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrustedIssuer").field("issuer", &self.config.issuer).finish()
    }
}

/// When (Unix seconds) the periodic refresh is next due after one at `now`.
fn refresh_after(config: &IssuerConfig, now: i64) -> i64 {
    now.saturating_add(i64::try_from(config.jwks_refresh_seconds).unwrap_or(i64::MAX))
}

/// Why a key set could not be fetched; logged, while the cached keys stay in use.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("static key set")]
    Static,
    #[error("Lakegate's signing keys: {0}")]
    Local(String),
    #[error("{path}: {source}")]
    File { path: std::path::PathBuf, source: std::io::Error },
    #[error("{url}: {error}")]
    Http { url: String, error: reqwest::Error },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: JWKS larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge { url: String },
    #[error("discovery: {0}")]
    Discovery(String),
    #[error("{from}: JWKS: {error}")]
    Jwks { from: String, error: serde_json::Error },
}

impl TrustedIssuer {
    /// An issuer whose keys come from discovery, a URL or a file, per its configuration.
    pub fn new(config: IssuerConfig) -> Result<Self, ConfigError> {
        let source = if config.discovery {
            KeySource::Discovery
        } else if let Some(url) = &config.jwks_url {
            KeySource::Url(url.clone())
        } else if let Some(path) = &config.jwks_file {
            KeySource::File(path.clone())
        } else {
            return Err(ConfigError::issuer(&config.issuer, "no key source"));
        };
        Self::build(config, source, KeySet::default())
    }

    /// Lakegate's own token service as an issuer.
    pub fn local(config: IssuerConfig, signer: Arc<super::Signer>) -> Result<Self, ConfigError> {
        let keys = KeySet::from_jwks(&signer.jwks());
        Self::build(config, KeySource::Local(signer), keys)
    }

    /// An issuer with a fixed key set (the dev issuer).
    pub fn with_static_keys(config: IssuerConfig, jwks: JwkSet) -> Result<Self, ConfigError> {
        let keys = KeySet::from_jwks(&jwks);
        Self::build(config, KeySource::Static, keys)
    }

    fn build(config: IssuerConfig, source: KeySource, keys: KeySet) -> Result<Self, ConfigError> {
        let allowed = config
            .algorithms
            .iter()
            .map(|a| parse_algorithm(a).map_err(|e| ConfigError::issuer(&config.issuer, e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let http = reqwest::Client::builder()
            // Redirects are refused: a JWKS URL that redirects is a configuration error or an attack.
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(config.http_timeout_seconds))
            .build()
            .map_err(|e| ConfigError::issuer(&config.issuer, format!("http client: {e}")))?;
        let first_refresh = refresh_after(&config, super::cache::now());
        Ok(Self {
            config,
            allowed,
            keys: ArcSwap::from_pointee(keys),
            refresh: tokio::sync::Mutex::new(RefreshState::default()),
            refresh_due: AtomicI64::new(first_refresh),
            source,
            http,
            fetches: Arc::default(),
        })
    }

    /// The configured `iss`.
    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// How many times the key source has been fetched.
    pub fn fetch_count(&self) -> JwksFetches {
        self.fetches.clone()
    }

    /// Changes whenever the key set does; tokens cached under an older generation are verified again.
    pub(super) fn key_generation(&self) -> u64 {
        self.keys.load().generation
    }

    /// Fetches the keys now unless they were fetched within the refresh interval (start-up pre-warming).
    pub async fn warm(&self) -> Result<(), IdentityError> {
        if matches!(self.source, KeySource::Static) {
            return Ok(());
        }
        self.refresh_keys().await
    }

    /// Verifies a token already routed to this issuer by [`super::jwt::peek`].
    pub(super) async fn verify(
        &self,
        token: &str,
        peeked: &Peeked,
    ) -> Result<(Principal, Map<String, Value>), IdentityError> {
        if !self.allowed.contains(&peeked.algorithm) {
            return Err(IdentityError::AlgorithmNotAllowed {
                alg: format!("{:?}", peeked.algorithm),
                issuer: self.config.issuer.clone(),
            });
        }
        let key = self.key_for(peeked).await?;
        let mut validation = Validation::new(peeked.algorithm);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&self.config.audiences);
        validation.leeway = self.config.leeway_seconds;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation).map_err(map_jwt_error)?;
        let principal = claims::to_principal(&self.config, &data.claims)?;
        Ok((principal, data.claims))
    }

    async fn key_for(&self, peeked: &Peeked) -> Result<DecodingKey, IdentityError> {
        if let Some(key) = self.cached(peeked)? {
            return Ok(key);
        }
        if !matches!(self.source, KeySource::Static) {
            // Errors of the fetch itself are logged there; what the caller learns is that the key is unknown.
            let _ = self.refresh_keys().await;
            if let Some(key) = self.cached(peeked)? {
                return Ok(key);
            }
        }
        let has_keys = {
            let keys = self.keys.load();
            !keys.by_kid.is_empty() || !keys.anonymous.is_empty()
        };
        if !has_keys {
            return Err(IdentityError::KeysUnavailable(self.config.issuer.clone()));
        }
        Err(IdentityError::UnknownKey {
            kid: peeked.kid.clone().unwrap_or_default().chars().take(64).collect(),
            issuer: self.config.issuer.clone(),
        })
    }

    fn cached(&self, peeked: &Peeked) -> Result<Option<DecodingKey>, IdentityError> {
        let keys = self.keys.load();
        let candidate = match &peeked.kid {
            Some(kid) => keys.by_kid.get(kid),
            None => match (keys.anonymous.as_slice(), keys.by_kid.len()) {
                ([only], 0) => Some(only),
                ([], 1) => keys.by_kid.values().next(),
                _ => return Err(IdentityError::Malformed("token has no kid and the issuer has several keys".into())),
            },
        };
        let Some(candidate) = candidate else { return Ok(None) };
        if !candidate.kind.fits(peeked.algorithm) || candidate.alg.is_some_and(|a| a != peeked.algorithm) {
            return Err(IdentityError::AlgorithmNotAllowed {
                alg: format!("{:?}", peeked.algorithm),
                issuer: self.config.issuer.clone(),
            });
        }
        Ok(Some(candidate.key.clone()))
    }

    /// Starts fetching the keys again if the periodic refresh is due at `now` (Unix seconds; see the module's
    /// note), on a task of its own: the first caller to find it due starts it, and no request waits for it (an IdP
    /// that is down would hold one for the whole HTTP timeout); the keys change for the requests after it.
    pub(super) fn refresh_if_due(self: &Arc<Self>, now: i64) {
        let every = self.config.jwks_refresh_seconds;
        let due = self.refresh_due.load(Ordering::Relaxed);
        if every == 0 || matches!(self.source, KeySource::Static) || now < due {
            return;
        }
        // Claims this round; the fetch moves the next one on again when it ends.
        let next = refresh_after(&self.config, now);
        if self.refresh_due.compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed).is_err() {
            return;
        }
        let issuer = self.clone();
        tokio::spawn(async move {
            let mut state = issuer.refresh.lock().await;
            // Errors are logged there; the cached keys stay, as after any failed fetch.
            let _ = issuer.fetch_keys(&mut state).await;
        });
    }

    /// One refresh at a time, at most one per interval; keeps the old keys when the fetch fails.
    async fn refresh_keys(&self) -> Result<(), IdentityError> {
        let mut state = self.refresh.lock().await;
        let interval = Duration::from_secs(self.config.jwks_min_refresh_seconds);
        if state.last_fetch.is_some_and(|t| t.elapsed() < interval) {
            return Ok(());
        }
        self.fetch_keys(&mut state).await
    }

    /// Fetches the key set and takes it if it changed; the caller holds the refresh lock.
    async fn fetch_keys(&self, state: &mut RefreshState) -> Result<(), IdentityError> {
        state.last_fetch = Some(Instant::now());
        self.refresh_due.store(refresh_after(&self.config, super::cache::now()), Ordering::Relaxed);
        self.fetches.fetch_add(1, Ordering::Relaxed);
        crate::metrics::JWKS_FETCHES.inc(&[("issuer", &self.config.issuer)]);
        match self.fetch(state).await {
            Ok(jwks) => {
                let mut set = KeySet::from_jwks(&jwks);
                // The only writer: refreshes take turns under `state`.
                let keys = self.keys.load();
                if keys.fingerprint != set.fingerprint || set.fingerprint.is_none() {
                    tracing::info!(issuer = %self.config.issuer, keys = set.by_kid.len() + set.anonymous.len(), "JWKS loaded");
                    set.generation = keys.generation.wrapping_add(1);
                    self.keys.store(Arc::new(set));
                }
                Ok(())
            }
            Err(message) => {
                tracing::warn!(issuer = %self.config.issuer, error = %message, "JWKS fetch failed; keeping cached keys");
                Err(IdentityError::KeysUnavailable(self.config.issuer.clone()))
            }
        }
    }

    async fn fetch(&self, state: &mut RefreshState) -> Result<JwkSet, FetchError> {
        match &self.source {
            KeySource::Static => Err(FetchError::Static),
            KeySource::Local(signer) => {
                signer.reload().map_err(|e| FetchError::Local(e.to_string()))?;
                Ok(signer.jwks())
            }
            KeySource::File(path) => {
                let text = tokio::fs::read_to_string(path)
                    .await
                    .map_err(|source| FetchError::File { path: path.clone(), source })?;
                serde_json::from_str(&text).map_err(|e| FetchError::Jwks { from: path.display().to_string(), error: e })
            }
            KeySource::Url(url) => self.fetch_url(url).await,
            KeySource::Discovery => {
                if let Some(uri) = state.jwks_uri.clone() {
                    return self.fetch_url(&uri).await;
                }
                let issuer =
                    IssuerUrl::new(self.config.issuer.clone()).map_err(|e| FetchError::Discovery(e.to_string()))?;
                let metadata = CoreProviderMetadata::discover_async(issuer, &self.http)
                    .await
                    .map_err(|e| FetchError::Discovery(e.to_string()))?;
                state.jwks_uri = Some(metadata.jwks_uri().url().to_string());
                // Discovery fetched the JWKS already; re-read it in jsonwebtoken's form.
                let jwks = |error| FetchError::Jwks { from: "discovery".into(), error };
                let value = serde_json::to_value(metadata.jwks()).map_err(jwks)?;
                serde_json::from_value(value).map_err(jwks)
            }
        }
    }

    async fn fetch_url(&self, url: &str) -> Result<JwkSet, FetchError> {
        let http = |error| FetchError::Http { url: url.to_owned(), error };
        let response = self.http.get(url).send().await.map_err(http)?;
        if !response.status().is_success() {
            return Err(FetchError::Status { url: url.to_owned(), status: response.status().as_u16() });
        }
        if response.content_length().is_some_and(|n| n > MAX_JWKS_BYTES as u64) {
            return Err(FetchError::TooLarge { url: url.to_owned() });
        }
        let body = response.bytes().await.map_err(http)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(FetchError::TooLarge { url: url.to_owned() });
        }
        serde_json::from_slice(&body).map_err(|error| FetchError::Jwks { from: url.to_owned(), error })
    }
}

impl KeySet {
    /// Keeps the signature keys jsonwebtoken can use; skips encryption keys, symmetric keys and unknown types.
    fn from_jwks(jwks: &JwkSet) -> Self {
        let mut set = KeySet {
            fingerprint: serde_json::to_vec(jwks).ok().map(|json| Sha256::digest(json).into()),
            ..KeySet::default()
        };
        for jwk in &jwks.keys {
            if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
                continue;
            }
            let Some(kind) = key_kind(jwk) else { continue };
            let Ok(key) = DecodingKey::from_jwk(jwk) else { continue };
            let alg = jwk.common.key_algorithm.and_then(key_algorithm);
            let cached = CachedKey { key, kind, alg };
            match &jwk.common.key_id {
                Some(kid) => {
                    set.by_kid.insert(kid.clone(), cached);
                }
                None => set.anonymous.push(cached),
            }
        }
        set
    }
}

fn key_kind(jwk: &Jwk) -> Option<KeyKind> {
    match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(KeyKind::Rsa),
        AlgorithmParameters::EllipticCurve(_) => Some(KeyKind::Ec),
        AlgorithmParameters::OctetKeyPair(_) => Some(KeyKind::Okp),
        // Symmetric (`oct`) keys are never accepted from an issuer.
        _ => None,
    }
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> IdentityError {
    use jsonwebtoken::errors::ErrorKind as K;
    match e.kind() {
        K::ExpiredSignature => IdentityError::Expired,
        K::ImmatureSignature => IdentityError::NotYetValid,
        K::InvalidAudience => IdentityError::WrongAudience,
        K::InvalidIssuer => IdentityError::UntrustedIssuer("iss mismatch".into()),
        K::InvalidSignature => IdentityError::BadSignature,
        K::MissingRequiredClaim(c) => IdentityError::MissingClaim(c.clone()),
        K::InvalidClaimFormat(c) => IdentityError::InvalidClaim(c.clone()),
        K::InvalidAlgorithm => IdentityError::AlgorithmNotAllowed { alg: "mismatch".into(), issuer: String::new() },
        other => IdentityError::Malformed(format!("{other:?}").chars().take(120).collect()),
    }
}

//! Who is calling: OIDC token validation against trusted issuers, turned into a [`Principal`].
//!
//! A token is checked in a fixed order, cheapest and most telling first: size, shape, algorithm, issuer, key,
//! signature, then the registered claims (expiry, not-before, audience). Every failure is an
//! [`IdentityError`] whose [`IdentityError::reason`] is a stable code for audit and metrics.

mod cache;
mod claims;
mod dev;
pub mod exchange;
mod issuer;
mod jwt;
mod principal;
pub mod signer;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use cache::{TokenCache, Verified};
pub use dev::{DEV_AUDIENCE, DEV_ISSUER, DevIssuer};
pub use exchange::{TokenService, TokenServiceConfig};
pub use issuer::{JwksFetches, TrustedIssuer};
pub use principal::{Actor, Principal};
pub use signer::Signer;

/// Algorithms an issuer may use. Symmetric algorithms and `none` are never accepted from an issuer: a shared
/// secret would let anyone who validates tokens also mint them.
pub const ALLOWED_ALGORITHMS: &[&str] =
    &["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"];

/// The `[identity]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    /// Trust tokens minted by `lakegate token`. Unset means: trusted exactly when no issuer is configured.
    #[serde(default)]
    pub dev_issuer: Option<bool>,
    /// Tokens longer than this are refused before any parsing.
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Verified tokens remembered (by hash) until they expire, so a token sent again skips its signature check;
    /// 0 turns the cache off. Counted in slots of 4 KiB: a token of the usual size takes one, a larger one a slot
    /// per 4 KiB of it and its claims.
    #[serde(default = "default_token_cache_entries")]
    pub token_cache_entries: usize,
    #[serde(default)]
    pub issuers: Vec<IssuerConfig>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            dev_issuer: None,
            max_token_bytes: default_max_token_bytes(),
            token_cache_entries: default_token_cache_entries(),
            issuers: Vec::new(),
        }
    }
}

/// A token its holder verifies again and again (a SQL session's, before each statement), its key in the cache of
/// verified tokens computed once. Its `Debug` does not show it.
#[derive(Clone)]
pub struct KeptToken {
    token: String,
    digest: [u8; 32],
}

impl KeptToken {
    pub fn new(token: &str) -> Self {
        let token = token.trim().to_owned();
        let digest = TokenCache::key(&token);
        KeptToken { token, digest }
    }
}

impl std::fmt::Debug for KeptToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeptToken(..)")
    }
}

/// The issuer named in credentials an operator mints from the credentials key directory (`lakegate credentials`):
/// they rest on that key, not on anyone's token, and no issuer's removal stops them.
pub const OPERATOR_ISSUER: &str = "lakegate-cli";

/// How often Lakegate's own signing keys are read again from their directory while tokens come.
pub const LOCAL_KEYS_REFRESH_SECONDS: u64 = 5;

fn default_max_token_bytes() -> usize {
    16 * 1024
}

fn default_token_cache_entries() -> usize {
    10_000
}

/// One trusted OIDC issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerConfig {
    /// The exact `iss` value; with `discovery`, also the base of `/.well-known/openid-configuration`.
    pub issuer: String,
    /// Find the JWKS through OpenID discovery.
    #[serde(default)]
    pub discovery: bool,
    /// A JWKS URL, when not using discovery.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// A JWKS file, for issuers whose keys are distributed out of band.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Accepted `aud` values; a token must name at least one.
    pub audiences: Vec<String>,
    /// Accepted signature algorithms (a subset of [`ALLOWED_ALGORITHMS`]).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock leeway for `exp` and `nbf`.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
    /// Claim (dotted path for nested objects) holding the user name.
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Claim holding the groups: an array of strings, or a string split on `groups_delimiter`.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: Option<String>,
    #[serde(default = "default_groups_delimiter")]
    pub groups_delimiter: String,
    /// Principal attribute name -> claim path.
    #[serde(default)]
    pub attribute_claims: BTreeMap<String, String>,
    /// Also take every other top-level scalar claim as an attribute (used by the dev issuer).
    #[serde(default)]
    pub all_claims_as_attributes: bool,
    /// An unknown `kid` triggers a JWKS fetch at most this often (a storm of bad kids must not hammer the IdP).
    #[serde(default = "default_min_refresh")]
    pub jwks_min_refresh_seconds: u64,
    /// The keys are fetched again at least this often while tokens come, so that a key the issuer stopped
    /// publishing stops verifying, and its cached tokens stop serving, within this long; `0`: only when a token
    /// names an unknown `kid`.
    #[serde(default = "default_refresh")]
    pub jwks_refresh_seconds: u64,
    #[serde(default = "default_http_timeout")]
    pub http_timeout_seconds: u64,
    /// Set for Lakegate's own token service: claims follow its format (`attrs`, `orig_iss`, nested `act`).
    #[serde(skip)]
    pub native: Option<NativeClaims>,
}

/// How to read tokens Lakegate issued itself.
#[derive(Debug, Clone, Copy)]
pub struct NativeClaims {
    /// Longest `act` chain accepted.
    pub max_depth: usize,
}

fn default_algorithms() -> Vec<String> {
    ALLOWED_ALGORITHMS.iter().map(|s| s.to_string()).collect()
}
fn default_refresh() -> u64 {
    300
}
fn default_leeway() -> u64 {
    30
}
fn default_user_claim() -> String {
    "sub".into()
}
fn default_groups_claim() -> Option<String> {
    Some("groups".into())
}
fn default_groups_delimiter() -> String {
    ",".into()
}
fn default_min_refresh() -> u64 {
    60
}
fn default_http_timeout() -> u64 {
    5
}

/// Why an identity configuration cannot be used: names the issuer and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("issuer {issuer}: {reason}")]
    Issuer { issuer: String, reason: String },
    #[error("token service: {0}")]
    TokenService(String),
}

impl ConfigError {
    fn issuer(issuer: &str, reason: impl Into<String>) -> Self {
        ConfigError::Issuer { issuer: issuer.to_owned(), reason: reason.into() }
    }
}

impl IdentityConfig {
    /// Checks what serde cannot: key sources, algorithms, audiences.
    pub fn check(&self) -> Result<(), ConfigError> {
        for i in &self.issuers {
            let sources =
                usize::from(i.discovery) + usize::from(i.jwks_url.is_some()) + usize::from(i.jwks_file.is_some());
            if sources != 1 {
                return Err(ConfigError::issuer(&i.issuer, "set exactly one of discovery = true, jwks_url, jwks_file"));
            }
            if i.audiences.is_empty() {
                return Err(ConfigError::issuer(&i.issuer, "audiences must not be empty"));
            }
            if i.algorithms.is_empty() {
                return Err(ConfigError::issuer(&i.issuer, "algorithms must not be empty"));
            }
            for alg in &i.algorithms {
                if !ALLOWED_ALGORITHMS.contains(&alg.as_str()) {
                    return Err(ConfigError::issuer(
                        &i.issuer,
                        format!("algorithm {alg} is not allowed (allowed: {})", ALLOWED_ALGORITHMS.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    #[error("no token was presented")]
    Missing,
    #[error("token is {size} bytes, over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("token is malformed: {0}")]
    Malformed(String),
    #[error("algorithm {0} is not supported (only asymmetric signatures are accepted)")]
    UnsupportedAlgorithm(String),
    #[error("algorithm {alg} is not allowed for issuer {issuer}")]
    AlgorithmNotAllowed { alg: String, issuer: String },
    #[error("issuer {0:?} is not trusted")]
    UntrustedIssuer(String),
    #[error("no key {kid:?} in the JWKS of {issuer}")]
    UnknownKey { kid: String, issuer: String },
    #[error("the keys of issuer {0} are unavailable")]
    KeysUnavailable(String),
    #[error("signature does not verify")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf in the future)")]
    NotYetValid,
    #[error("token audience is not accepted")]
    WrongAudience,
    #[error("token is missing the {0} claim")]
    MissingClaim(String),
    #[error("claim {0} has the wrong type")]
    InvalidClaim(String),
}

impl IdentityError {
    /// A stable, short code for audit events and metrics labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::TooLarge { .. } => "too_large",
            Self::Malformed(_) => "malformed",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::AlgorithmNotAllowed { .. } => "algorithm_not_allowed",
            Self::UntrustedIssuer(_) => "untrusted_issuer",
            Self::UnknownKey { .. } => "unknown_key",
            Self::KeysUnavailable(_) => "keys_unavailable",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::InvalidClaim(_) => "invalid_claim",
        }
    }
}

/// Validates tokens from any trusted issuer.
#[derive(Clone)]
pub struct Verifier {
    issuers: Arc<HashMap<String, Arc<TrustedIssuer>>>,
    max_token_bytes: usize,
    cache: Option<Arc<TokenCache>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("issuers", &self.issuers.keys()).finish()
    }
}

impl Verifier {
    /// Builds a verifier trusting the configured issuers and, when given, the dev issuer. No network I/O
    /// happens here: keys are fetched on first use, so a slow IdP does not block start-up.
    pub fn new(config: &IdentityConfig, dev: Option<&DevIssuer>) -> Result<Self, ConfigError> {
        config.check()?;
        let mut issuers = HashMap::new();
        for c in &config.issuers {
            issuers.insert(c.issuer.clone(), Arc::new(TrustedIssuer::new(c.clone())?));
        }
        if let Some(dev) = dev {
            let issuer = TrustedIssuer::with_static_keys(dev.issuer_config(), dev.jwks())?;
            issuers.insert(DEV_ISSUER.to_owned(), Arc::new(issuer));
        }
        Ok(Self {
            issuers: Arc::new(issuers),
            max_token_bytes: config.max_token_bytes,
            cache: TokenCache::new(config.token_cache_entries).map(Arc::new),
        })
    }

    /// The issuers trusted, for the start-up banner and key pre-warming.
    pub fn issuers(&self) -> impl Iterator<Item = &Arc<TrustedIssuer>> {
        self.issuers.values()
    }

    /// Also trusts tokens issued by Lakegate's own token service as `issuer`, with `signer`'s keys (re-read on
    /// an unknown `kid`, so a key added on another replica is picked up without a restart, and every
    /// [`LOCAL_KEYS_REFRESH_SECONDS`], so a key removed stops its tokens).
    pub fn trust_lakegate(
        mut self,
        issuer: &str,
        audiences: Vec<String>,
        signer: Arc<Signer>,
        max_depth: usize,
    ) -> Result<Self, ConfigError> {
        let config = IssuerConfig {
            issuer: issuer.to_owned(),
            discovery: false,
            jwks_url: None,
            jwks_file: None,
            audiences,
            algorithms: vec!["EdDSA".into()],
            leeway_seconds: 30,
            user_claim: "sub".into(),
            groups_claim: Some("groups".into()),
            groups_delimiter: ",".into(),
            attribute_claims: BTreeMap::new(),
            all_claims_as_attributes: false,
            // Local files, not an IdP: re-reading on every unknown kid costs a directory read (still one at a
            // time), and lets a key added by another replica be used at once; re-reading every few seconds lets a
            // key removed from the directory stop its tokens as soon.
            jwks_min_refresh_seconds: 0,
            jwks_refresh_seconds: LOCAL_KEYS_REFRESH_SECONDS,
            http_timeout_seconds: 5,
            native: Some(NativeClaims { max_depth }),
        };
        let trusted = TrustedIssuer::local(config, signer)?;
        let mut issuers = (*self.issuers).clone();
        issuers.insert(issuer.to_owned(), Arc::new(trusted));
        self.issuers = Arc::new(issuers);
        Ok(self)
    }

    /// Validates `token` and maps its claims to a principal.
    pub async fn verify(&self, token: &str) -> Result<Principal, IdentityError> {
        self.verified(token).await.map(|v| v.principal.clone())
    }

    /// As [`Verifier::verify`], also returning the verified claims (the token service needs `aud` and `scope`).
    pub async fn verify_with_claims(
        &self,
        token: &str,
    ) -> Result<(Principal, serde_json::Map<String, serde_json::Value>), IdentityError> {
        self.verified(token).await.map(|v| (v.principal.clone(), v.claims.clone()))
    }

    /// Whether a kept token is valid now, as [`Verifier::verify`] decides, without making its principal.
    pub async fn check(&self, kept: &KeptToken) -> Result<(), IdentityError> {
        self.verified_with(&kept.token, Some(&kept.digest)).await.map(|_| ())
    }

    /// Whether every issuer `principal` rests on is still trusted: the user's own and each actor's. What Lakegate
    /// vends (an exchanged token, STS, access-grant and table credentials) carries the principal it was vended
    /// to, and stops serving once an issuer that authenticated that user or one of its actors is no longer
    /// trusted, as the issuer's own tokens do. Credentials an operator minted ([`OPERATOR_ISSUER`]) always are.
    pub fn vouches_for(&self, principal: &Principal) -> Result<(), IdentityError> {
        let mut issuers = std::iter::once(&principal.issuer).chain(principal.actors.iter().map(|a| &a.issuer));
        match issuers.find(|issuer| *issuer != OPERATOR_ISSUER && !self.issuers.contains_key(issuer.as_str())) {
            Some(untrusted) => Err(IdentityError::UntrustedIssuer(untrusted.clone())),
            None => Ok(()),
        }
    }

    /// How many verified tokens are cached now.
    pub fn cached_tokens(&self) -> usize {
        self.cache.as_ref().map_or(0, |c| c.len())
    }

    async fn verified(&self, token: &str) -> Result<Arc<Verified>, IdentityError> {
        self.verified_with(token, None).await
    }

    /// As [`Verifier::verified`], with the token's key in the cache when it is known already.
    async fn verified_with(&self, token: &str, digest: Option<&[u8; 32]>) -> Result<Arc<Verified>, IdentityError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(IdentityError::Missing);
        }
        if token.len() > self.max_token_bytes {
            return Err(IdentityError::TooLarge { size: token.len(), max: self.max_token_bytes });
        }
        let key = self.cache.as_ref().map(|cache| (cache, digest.copied().unwrap_or_else(|| TokenCache::key(token))));
        if let Some((cache, key)) = &key
            && let Some(hit) = cache.get(key)
        {
            let now = cache::now();
            let keys = match self.issuers.get(&hit.issuer) {
                Some(issuer) => {
                    issuer.refresh_if_due(now);
                    Some(issuer.key_generation())
                }
                None => None,
            };
            if keys.is_some_and(|keys| hit.holds(now, keys)) {
                return Ok(hit);
            }
            cache.remove(key);
        }

        let parts = jwt::peek(token)?;
        let issuer =
            self.issuers.get(&parts.issuer).ok_or_else(|| IdentityError::UntrustedIssuer(parts.issuer.clone()))?;
        issuer.refresh_if_due(cache::now());
        // Read before verifying: if the keys change meanwhile, the entry is stale at once rather than trusted.
        let keys = issuer.key_generation();
        let (principal, claims) = issuer.verify(token, &parts).await?;
        // A token of Lakegate's own names the user's issuer and the actors' apart from its own `iss`.
        self.vouches_for(&principal)?;
        let verified = Arc::new(Verified {
            not_before: claims.get("nbf").and_then(serde_json::Value::as_i64).unwrap_or(i64::MIN),
            expires_at: principal.expires_at,
            principal,
            claims,
            issuer: parts.issuer,
            keys,
            token_len: token.len(),
        });
        if let Some((cache, key)) = key
            && verified.holds(cache::now(), keys)
        {
            cache.insert(key, verified.clone());
        }
        Ok(verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_algorithms_cannot_be_configured_for_an_issuer() {
        let cfg: IdentityConfig = toml::from_str(
            r#"[[issuers]]
               issuer = "https://idp"
               jwks_url = "https://idp/jwks"
               audiences = ["lakegate"]
               algorithms = ["HS256"]"#,
        )
        .expect("parses");
        assert!(cfg.check().expect_err("HS256 refused").to_string().contains("HS256"));
    }

    #[test]
    fn a_principal_is_vouched_for_only_while_its_issuer_and_every_actors_are_trusted() {
        let dir = tempfile::tempdir().expect("dir");
        let dev = DevIssuer::load_or_create(dir.path()).expect("dev issuer");
        let verifier = Verifier::new(&IdentityConfig::default(), Some(&dev)).expect("verifier");
        let actor = |issuer: &str| Actor { issuer: issuer.to_owned(), subject: "notebook".to_owned() };
        let alice = Principal {
            issuer: DEV_ISSUER.to_owned(),
            subject: "alice".to_owned(),
            groups: Vec::new(),
            attributes: BTreeMap::new(),
            token_id: None,
            expires_at: i64::MAX,
            actors: vec![actor(DEV_ISSUER)],
        };
        assert_eq!(verifier.vouches_for(&alice), Ok(()));
        let gone = || IdentityError::UntrustedIssuer("https://removed.example".to_owned());
        let through_removed =
            Principal { actors: vec![actor(DEV_ISSUER), actor("https://removed.example")], ..alice.clone() };
        assert_eq!(verifier.vouches_for(&through_removed), Err(gone()));
        let of_removed = Principal { issuer: "https://removed.example".to_owned(), ..alice.clone() };
        assert_eq!(verifier.vouches_for(&of_removed), Err(gone()));
        let minted_by_an_operator = Principal { issuer: OPERATOR_ISSUER.to_owned(), actors: Vec::new(), ..alice };
        assert_eq!(verifier.vouches_for(&minted_by_an_operator), Ok(()));
    }

    #[test]
    fn an_issuer_needs_exactly_one_key_source() {
        let cfg: IdentityConfig = toml::from_str(
            r#"[[issuers]]
               issuer = "https://idp"
               discovery = true
               jwks_url = "https://idp/jwks"
               audiences = ["lakegate"]"#,
        )
        .expect("parses");
        assert!(cfg.check().is_err());
    }
}

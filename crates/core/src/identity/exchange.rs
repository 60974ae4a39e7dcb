//! OAuth 2.0 token exchange (RFC 8693): an application (the actor) trades the token of the user it acts for
//! (the subject token) for a short-lived Lakegate token that names both, and can be exchanged again downstream.
//!
//! The result carries the user's identity and a nested `act` claim per hop, outermost = current actor. An
//! exchange may narrow the audience, scope and lifetime of what it is given, never widen them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::signer::Signer;
use super::{IdentityError, Principal, Verifier};

/// `grant_type` of a token exchange.
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// Token types accepted as subject and actor tokens, and issued.
pub const TOKEN_TYPE_JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ACCEPTED_TOKEN_TYPES: &[&str] =
    &[TOKEN_TYPE_JWT, "urn:ietf:params:oauth:token-type:access_token", "urn:ietf:params:oauth:token-type:id_token"];

/// The `[token_service]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenServiceConfig {
    /// `iss` of Lakegate tokens; other replicas and services validate against it. Default: the control
    /// endpoint's URL. All replicas must use the same value.
    #[serde(default)]
    pub issuer: Option<String>,
    /// `aud` of Lakegate tokens unless an exchange asks for a narrower one from `audiences`.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Further audiences an exchange may ask for.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Upper bound of a Lakegate token's lifetime (it never outlives the subject token either).
    #[serde(default = "default_max_ttl")]
    pub max_ttl_seconds: u64,
    /// Longest actor chain (hops) a token may carry.
    #[serde(default = "default_max_depth")]
    pub max_depth: usize,
    /// Signing keys; default `<data_dir>/keys/signing`. Replicas share it (a mounted Secret).
    #[serde(default)]
    pub key_dir: Option<std::path::PathBuf>,
    /// Applications that may exchange tokens, authenticated by client credentials.
    #[serde(default)]
    pub clients: Vec<ClientConfig>,
}

impl Default for TokenServiceConfig {
    fn default() -> Self {
        Self {
            issuer: None,
            audience: default_audience(),
            audiences: Vec::new(),
            max_ttl_seconds: default_max_ttl(),
            max_depth: default_max_depth(),
            key_dir: None,
            clients: Vec::new(),
        }
    }
}

fn default_audience() -> String {
    "lakegate".into()
}
fn default_max_ttl() -> u64 {
    3600
}
fn default_max_depth() -> usize {
    4
}

/// A confidential client of the token service. The secret is stored hashed.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    pub id: String,
    /// Hex SHA-256 of the client secret (`printf %s "$SECRET" | sha256sum`). Secrets are high-entropy random
    /// strings, so a plain hash suffices; the secret itself is never stored.
    pub secret_sha256: String,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig").field("id", &self.id).field("secret_sha256", &"<redacted>").finish()
    }
}

/// How the calling application proves who it is.
#[derive(Debug)]
pub enum ActorAuth<'a> {
    Client { id: &'a str, secret: &'a str },
    Token(&'a str),
    Missing,
}

/// A parsed exchange request.
#[derive(Debug)]
pub struct ExchangeRequest<'a> {
    pub subject_token: &'a str,
    pub subject_token_type: &'a str,
    pub actor: ActorAuth<'a>,
    pub audience: Option<&'a str>,
    pub scope: Option<&'a str>,
    pub requested_token_type: Option<&'a str>,
}

/// A checked exchange the gate has yet to decide: the principal the token would stand for (the subject's user,
/// with the acting application in front of its actor chain) and the audience it would be issued for.
#[derive(Debug)]
pub struct PendingExchange {
    pub principal: Principal,
    pub audience: String,
    scope: Option<String>,
    expires_at: i64,
}

/// The issued token and the principal it stands for.
#[derive(Debug)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: Option<String>,
    pub principal: Principal,
}

/// Why an exchange was refused; each maps to an RFC 6749/8693 error code.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    #[error("client authentication failed")]
    InvalidClient,
    #[error("actor token rejected: {0}")]
    InvalidActor(IdentityError),
    #[error("subject token rejected: {0}")]
    InvalidSubject(IdentityError),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("audience {0:?} is not available to this exchange")]
    InvalidTarget(String),
    #[error("scope {0:?} is wider than the subject token's")]
    InvalidScope(String),
    #[error("the actor chain would be {depth} hops long; at most {max} are allowed")]
    TooDeep { depth: usize, max: usize },
    #[error("token could not be signed: {0}")]
    Signing(String),
}

impl ExchangeError {
    /// The OAuth error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidClient | Self::InvalidActor(_) => "invalid_client",
            Self::InvalidSubject(_) => "invalid_grant",
            Self::InvalidRequest(_) | Self::TooDeep { .. } => "invalid_request",
            Self::InvalidTarget(_) => "invalid_target",
            Self::InvalidScope(_) => "invalid_scope",
            Self::Signing(_) => "server_error",
        }
    }

    /// The HTTP status of the error response.
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidClient | Self::InvalidActor(_) => 401,
            Self::Signing(_) => 500,
            _ => 400,
        }
    }
}

/// The token service: verifies what it is given and signs what it issues.
#[derive(Clone, Debug)]
pub struct TokenService {
    config: TokenServiceConfig,
    issuer: String,
    signer: Arc<Signer>,
    clients: BTreeMap<String, [u8; 32]>,
}

impl TokenService {
    /// A token service issuing as `issuer` with `signer`'s keys.
    pub fn new(config: TokenServiceConfig, issuer: String, signer: Arc<Signer>) -> Result<Self, super::ConfigError> {
        let mut clients = BTreeMap::new();
        for c in &config.clients {
            let bytes = hex::decode(c.secret_sha256.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| {
                    super::ConfigError::TokenService(format!("client {}: secret_sha256 must be 64 hex digits", c.id))
                })?;
            clients.insert(c.id.clone(), bytes);
        }
        Ok(Self { config, issuer, signer, clients })
    }

    /// The `iss` of issued tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing keys (for the JWKS endpoint).
    pub fn signer(&self) -> &Arc<Signer> {
        &self.signer
    }

    /// Checks one exchange request: authenticates the actor, verifies the subject token, and works out what the
    /// issued token would say (who, for whom, for which audience and scope, until when). Nothing is signed: the
    /// gate decides the exchange first and then calls [`TokenService::issue`].
    pub async fn prepare(
        &self,
        verifier: &Verifier,
        req: &ExchangeRequest<'_>,
    ) -> Result<PendingExchange, ExchangeError> {
        if !ACCEPTED_TOKEN_TYPES.contains(&req.subject_token_type) {
            return Err(ExchangeError::InvalidRequest(format!(
                "subject_token_type {:?} is not supported",
                req.subject_token_type
            )));
        }
        if req.requested_token_type.is_some_and(|t| t != TOKEN_TYPE_JWT && t != ACCEPTED_TOKEN_TYPES[1]) {
            return Err(ExchangeError::InvalidRequest("only JWT access tokens are issued".into()));
        }
        let actor = self.authenticate_actor(verifier, &req.actor).await?;
        let (subject, claims) =
            verifier.verify_with_claims(req.subject_token).await.map_err(ExchangeError::InvalidSubject)?;

        let mut actors = Vec::with_capacity(subject.actors.len() + 1);
        actors.push(actor);
        actors.extend(subject.actors.iter().cloned());
        if actors.len() > self.config.max_depth {
            return Err(ExchangeError::TooDeep { depth: actors.len(), max: self.config.max_depth });
        }

        let audience = self.audience(req.audience, &claims)?;
        let scope = narrow_scope(req.scope, claims.get("scope").and_then(Value::as_str))?;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let max_ttl = i64::try_from(self.config.max_ttl_seconds).unwrap_or(i64::MAX);
        let expires_at = subject.expires_at.min(now.saturating_add(max_ttl));
        if expires_at <= now {
            return Err(ExchangeError::InvalidSubject(IdentityError::Expired));
        }
        Ok(PendingExchange { principal: Principal { actors, ..subject }, audience, scope, expires_at })
    }

    /// Signs the token of an exchange the gate allowed.
    pub fn issue(&self, pending: PendingExchange) -> Result<Issued, ExchangeError> {
        // Pick up keys rotated in by an operator (or another replica's Secret update) before signing.
        if let Err(e) = self.signer.reload() {
            tracing::warn!(error = %e, "signing keys could not be re-read; using the loaded ones");
        }
        let PendingExchange { principal, audience, scope, expires_at } = pending;
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if expires_at <= now {
            return Err(ExchangeError::InvalidSubject(IdentityError::Expired));
        }
        let mut out = Map::new();
        out.insert("iss".into(), json!(self.issuer));
        out.insert("sub".into(), json!(principal.subject));
        out.insert("aud".into(), json!(audience));
        out.insert("iat".into(), json!(now));
        out.insert("nbf".into(), json!(now));
        out.insert("exp".into(), json!(expires_at));
        out.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        out.insert("groups".into(), json!(principal.groups));
        out.insert("attrs".into(), json!(principal.attributes));
        out.insert("orig_iss".into(), json!(principal.issuer));
        if let Some(scope) = &scope {
            out.insert("scope".into(), json!(scope));
        }
        if let Some(act) = act_claim(&principal.actors) {
            out.insert("act".into(), act);
        }
        let access_token = self.signer.sign(&out).map_err(|e| ExchangeError::Signing(e.to_string()))?;
        Ok(Issued { access_token, expires_in: expires_at - now, scope, principal })
    }

    async fn authenticate_actor(
        &self,
        verifier: &Verifier,
        auth: &ActorAuth<'_>,
    ) -> Result<super::Actor, ExchangeError> {
        match auth {
            ActorAuth::Client { id, secret } => {
                let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
                // Compare against a dummy for unknown ids too, so timing does not reveal which ids exist.
                let expected = self.clients.get(*id).copied().unwrap_or([0u8; 32]);
                let matches: bool = presented.ct_eq(&expected).into();
                if matches && self.clients.contains_key(*id) {
                    Ok(super::Actor { issuer: self.issuer.clone(), subject: (*id).to_owned() })
                } else {
                    Err(ExchangeError::InvalidClient)
                }
            }
            ActorAuth::Token(token) => {
                let p = verifier.verify(token).await.map_err(ExchangeError::InvalidActor)?;
                Ok(super::Actor { issuer: p.issuer, subject: p.subject })
            }
            ActorAuth::Missing => Err(ExchangeError::InvalidClient),
        }
    }

    fn audience(&self, requested: Option<&str>, subject_claims: &Map<String, Value>) -> Result<String, ExchangeError> {
        let Some(requested) = requested else { return Ok(self.config.audience.clone()) };
        let ours = requested == self.config.audience || self.config.audiences.iter().any(|a| a == requested);
        // A Lakegate token given again may only keep its audience: narrowing happens once, never back.
        let from_us = subject_claims.get("iss").and_then(Value::as_str) == Some(self.issuer.as_str());
        let subject_aud = subject_claims.get("aud").and_then(Value::as_str);
        if !ours || (from_us && subject_aud.is_some_and(|a| a != requested)) {
            return Err(ExchangeError::InvalidTarget(requested.chars().take(200).collect()));
        }
        Ok(requested.to_owned())
    }
}

/// The requested scope, which must be within the subject token's scope when that has one.
fn narrow_scope(requested: Option<&str>, granted: Option<&str>) -> Result<Option<String>, ExchangeError> {
    let granted_set: Option<BTreeSet<&str>> = granted.map(|g| g.split_whitespace().collect());
    match (requested, granted_set) {
        (None, _) => Ok(granted.map(str::to_owned)),
        (Some(r), Some(g)) if !r.split_whitespace().all(|s| g.contains(s)) => {
            Err(ExchangeError::InvalidScope(r.chars().take(200).collect()))
        }
        (Some(r), _) => Ok(Some(r.split_whitespace().collect::<Vec<_>>().join(" "))),
    }
}

/// `{"sub": current, "iss": .., "act": {"sub": previous, ...}}`, outermost = current actor.
fn act_claim(actors: &[super::Actor]) -> Option<Value> {
    actors.iter().rev().fold(None, |inner, a| {
        let mut obj = Map::new();
        obj.insert("sub".into(), json!(a.subject));
        obj.insert("iss".into(), json!(a.issuer));
        if let Some(inner) = inner {
            obj.insert("act".into(), inner);
        }
        Some(Value::Object(obj))
    })
}

/// Reads a nested `act` claim back into an actor list, outermost first; `max` bounds the walk.
pub fn actors_from_claim(act: Option<&Value>, max: usize) -> Result<Vec<super::Actor>, IdentityError> {
    let mut out = Vec::new();
    let mut current = act;
    while let Some(Value::Object(obj)) = current {
        if out.len() >= max {
            return Err(IdentityError::InvalidClaim("act (too deep)".into()));
        }
        let subject =
            obj.get("sub").and_then(Value::as_str).ok_or_else(|| IdentityError::InvalidClaim("act.sub".into()))?;
        let issuer = obj.get("iss").and_then(Value::as_str).unwrap_or_default();
        out.push(super::Actor { issuer: issuer.to_owned(), subject: subject.to_owned() });
        current = obj.get("act");
    }
    match current {
        None | Some(Value::Object(_)) => Ok(out),
        Some(_) => Err(IdentityError::InvalidClaim("act".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_act_claim_nests_outermost_first_and_reads_back() {
        let actors = vec![
            super::super::Actor { issuer: "lg".into(), subject: "spark".into() },
            super::super::Actor { issuer: "lg".into(), subject: "notebook".into() },
        ];
        let claim = act_claim(&actors).expect("claim");
        assert_eq!(claim["sub"], "spark");
        assert_eq!(claim["act"]["sub"], "notebook");
        assert_eq!(actors_from_claim(Some(&claim), 8).expect("reads"), actors);
        assert!(actors_from_claim(Some(&claim), 1).is_err(), "deeper than allowed");
    }

    #[test]
    fn a_scope_can_narrow_but_not_widen() {
        assert_eq!(narrow_scope(Some("read"), Some("read write")).expect("narrower"), Some("read".into()));
        assert!(narrow_scope(Some("admin"), Some("read")).is_err());
        assert_eq!(narrow_scope(None, Some("read")).expect("kept"), Some("read".into()));
    }
}

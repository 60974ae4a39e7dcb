//! Who is calling: SigV4 with Lakegate session credentials (header, presigned, or a POST Object form's policy
//! signature), or an OIDC bearer token.
//!
//! The secret for a SigV4 request is not looked up anywhere: it is recomputed from the session token by the
//! credentials module, which also yields the principal and scope the token carries.

use time::OffsetDateTime;

use super::error::S3Error;
use lakegate_core::credentials::{self, KeyRing, Scope, SessionClaims};
use lakegate_core::gate::{Gate, Origin};
use lakegate_core::identity::Principal;
use lakegate_s3_protocol::post_policy::FormSignature;
use lakegate_s3_protocol::sigv4::{
    PayloadMode, RequestHead, SecretKey, SignedRequest, SigningKey, Verified, VerifyOptions, derive_signing_key,
};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// What the credentials may reach at most (a bearer token has no scope of its own).
    pub scope: Scope,
    /// The session's claims, for SigV4 callers.
    pub session: Option<SessionClaims>,
    pub access_key_id: Option<String>,
    /// The verified signature, for SigV4 callers: says how the body must be checked.
    pub verified: Option<Verified>,
}

impl Caller {
    /// How the body is protected; a bearer request's body is not signed.
    pub fn payload(&self) -> PayloadMode {
        self.verified.as_ref().map_or(PayloadMode::Unsigned, |v| v.payload.clone())
    }
}

/// What a SigV4 check needs besides the request.
#[derive(Debug, Clone, Copy)]
pub struct SigV4Settings<'a> {
    pub max_skew: time::Duration,
    pub services: &'static [&'static str],
    pub signing_keys: &'a SigningKeys,
}

/// Most signing keys kept.
const SIGNING_KEYS: usize = 4096;

/// Signing keys derived before, by secret and credential scope (date, region, service): a client that signs
/// every request with the same credentials costs a lookup instead of four HMACs a request. The key is a function
/// of what it is kept by, so nothing can make a kept key wrong; it is only looked up for a secret recomputed from
/// a token the key ring opened, and at most [`SIGNING_KEYS`] are kept.
pub struct SigningKeys(quick_cache::sync::Cache<String, SigningKey>);

impl Default for SigningKeys {
    fn default() -> Self {
        SigningKeys(quick_cache::sync::Cache::new(SIGNING_KEYS))
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys").field("kept", &self.0.len()).finish()
    }
}

impl SigningKeys {
    /// `kSigning` for `secret` and the scope, derived now or before.
    fn get(&self, secret: &str, date: &str, region: &str, service: &str) -> SigningKey {
        // Length-prefixed, so that no two scopes and secrets make the same text.
        let id = format!("{}.{}.{}.{date}{region}{service}{secret}", date.len(), region.len(), service.len());
        if let Some(key) = self.0.get(&id) {
            return key;
        }
        let key = derive_signing_key(&SecretKey::new(secret), date, region, service);
        self.0.insert(id, key.clone());
        key
    }
}

/// Authenticates a request head. Failures are returned, not audited: the caller audits them with what it knows.
pub async fn authenticate(
    gate: &Gate,
    keys: &KeyRing,
    origin: &Origin,
    parts: &http::request::Parts,
    settings: SigV4Settings<'_>,
    known_body_sha256: Option<[u8; 32]>,
) -> Result<Caller, S3Error> {
    if let Some(token) = lakegate_net::http::bearer(&parts.headers) {
        // The gate audits a refused token itself.
        let principal = gate.authenticate(origin, Some(token), "s3:Authenticate", parts.uri.path()).await?;
        return Ok(Caller {
            principal,
            scope: Scope::Unrestricted,
            session: None,
            access_key_id: None,
            verified: None,
        });
    }
    let now = OffsetDateTime::now_utc();
    let head = RequestHead::from_parts(parts);
    let options = VerifyOptions {
        max_skew: settings.max_skew,
        allowed_services: settings.services,
        known_body_sha256,
        ..VerifyOptions::s3(now)
    };
    let signed = SignedRequest::parse(&head, &options)?;
    let (claims, secret) =
        credentials::verify(keys, signed.access_key_id(), signed.session_token(), now.unix_timestamp())?;
    let access_key_id = signed.access_key_id().to_owned();
    let scope = signed.credential();
    let key = settings.signing_keys.get(secret.expose(), scope.date, scope.region, scope.service);
    let verified = signed.verify_with_key(&key)?;
    Ok(Caller {
        principal: claims.principal.clone(),
        scope: claims.scope.clone(),
        session: Some(claims),
        access_key_id: Some(access_key_id),
        verified: Some(verified),
    })
}

/// Authenticates a POST Object form by its policy signature: the secret is recomputed from the form's session
/// token as for any SigV4 request, and the policy's signature checked with the day's signing key. The policy's
/// own rules are checked by the caller once the signature holds.
pub fn authenticate_form(keys: &KeyRing, form: &FormSignature<'_>) -> Result<Caller, S3Error> {
    let now = OffsetDateTime::now_utc();
    let access_key_id = form.credential.access_key_id;
    let (claims, secret) = credentials::verify(keys, access_key_id, form.session_token, now.unix_timestamp())?;
    let key = derive_signing_key(
        &SecretKey::new(secret.expose()),
        form.credential.date,
        form.credential.region,
        form.credential.service,
    );
    form.verify(&key)?;
    Ok(Caller {
        principal: claims.principal.clone(),
        scope: claims.scope.clone(),
        session: Some(claims),
        access_key_id: Some(access_key_id.to_owned()),
        verified: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signing_key_is_derived_once_per_secret_and_scope() {
        let keys = SigningKeys::default();
        keys.get("c2VjcmV0", "20261130", "us-east-1", "s3");
        keys.get("c2VjcmV0", "20261130", "us-east-1", "s3");
        assert_eq!(keys.0.len(), 1, "the second request found the key derived");
        keys.get("c2VjcmV0", "20261201", "us-east-1", "s3");
        keys.get("b3RoZXI", "20261130", "us-east-1", "s3");
        // Parts that would run together without their lengths ("us-east-1s3" either way).
        keys.get("c2VjcmV0", "20261130", "us-east-1s", "3");
        assert_eq!(keys.0.len(), 4);
    }
}

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
    PayloadMode, RequestHead, SecretKey, SignedRequest, Verified, VerifyOptions, derive_signing_key,
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
pub struct SigV4Settings {
    pub max_skew: time::Duration,
    pub services: &'static [&'static str],
}

/// Authenticates a request head. Failures are returned, not audited: the caller audits them with what it knows.
pub async fn authenticate(
    gate: &Gate,
    keys: &KeyRing,
    origin: &Origin,
    parts: &http::request::Parts,
    settings: SigV4Settings,
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
    let verified = signed.verify_with_secret(&SecretKey::new(secret.expose()))?;
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

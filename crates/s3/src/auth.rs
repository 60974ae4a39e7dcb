//! Who is calling: SigV4 with Lakegate session credentials (header, presigned, or a POST Object form's policy
//! signature), or an OIDC bearer token.
//!
//! The secret for a SigV4 request is not looked up anywhere: it is recomputed from the session token by the
//! credentials module, which also yields the principal and scope the token carries.

use std::sync::Arc;

use time::OffsetDateTime;

use super::error::S3Error;
use lakegate_core::credentials::{self, CredentialError, KeyRing, Scope, SessionClaims};
use lakegate_core::gate::{Gate, Origin};
use lakegate_core::identity::{IdentityError, Principal};
use lakegate_core::per_cpu_cache::PerCpuCache;
use lakegate_s3_protocol::post_policy::FormSignature;
use lakegate_s3_protocol::sigv4::{
    AuthForm, PayloadMode, RequestHead, SecretKey, SignedRequest, SigningKey, Verified, VerifyOptions,
    derive_signing_key,
};

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    /// What the credentials may reach at most (a bearer token has no scope of its own).
    pub scope: Scope,
    /// The session's claims, for SigV4 callers (the key ring's copy, shared).
    pub session: Option<Arc<SessionClaims>>,
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
    /// Presigned URLs verified before; `None` where none are kept.
    pub presigned: Option<&'a PresignedUrls>,
}

/// Most signing keys kept.
const SIGNING_KEYS: usize = 4096;

/// Signing keys derived before, by secret and credential scope (date, region, service): a client that signs
/// every request with the same credentials costs a lookup instead of four HMACs a request. The key is a function
/// of what it is kept by, so nothing can make a kept key wrong; it is only looked up for a secret recomputed from
/// a token the key ring opened, kept only once a signature made with it verified, and at most [`SIGNING_KEYS`]
/// are kept.
pub struct SigningKeys(PerCpuCache<KeyScope, SigningKey>);

/// What a signing key is kept by: the secret and the credential scope.
#[derive(PartialEq, Eq, Hash)]
struct KeyScope {
    secret: Box<str>,
    date: Box<str>,
    region: Box<str>,
    service: Box<str>,
}

impl KeyScope {
    fn new(secret: &str, date: &str, region: &str, service: &str) -> Self {
        KeyScope { secret: secret.into(), date: date.into(), region: region.into(), service: service.into() }
    }
}

/// A [`KeyScope`] borrowed from a request, to look a key up without copying: it hashes as the owned one does
/// (field by field, each as a `str`).
#[derive(Hash)]
struct KeyScopeRef<'a> {
    secret: &'a str,
    date: &'a str,
    region: &'a str,
    service: &'a str,
}

impl quick_cache::Equivalent<KeyScope> for KeyScopeRef<'_> {
    fn equivalent(&self, kept: &KeyScope) -> bool {
        *kept.secret == *self.secret
            && *kept.date == *self.date
            && *kept.region == *self.region
            && *kept.service == *self.service
    }
}

impl Default for SigningKeys {
    fn default() -> Self {
        SigningKeys(PerCpuCache::new(SIGNING_KEYS))
    }
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys").field("kept", &self.0.len()).finish()
    }
}

impl SigningKeys {
    /// `kSigning` for `secret` and the scope: the kept one (`true`), or one derived now.
    fn get(&self, secret: &str, date: &str, region: &str, service: &str) -> (SigningKey, bool) {
        match self.0.get(&KeyScopeRef { secret, date, region, service }) {
            Some(key) => (key, true),
            None => (derive_signing_key(&SecretKey::new(secret), date, region, service), false),
        }
    }

    /// Keeps a key derived by [`SigningKeys::get`], once a signature made with it verified: a request with a
    /// wrong signature leaves nothing behind.
    fn keep(&self, scope: KeyScope, key: &SigningKey) {
        self.0.insert(scope, key.clone());
    }
}

/// What the presigned URLs kept may take, counted as the bytes of each URL plus a fixed share for its caller:
/// some thousands of URLs, 16 MiB at most whatever their length.
const PRESIGNED_WEIGHT: u64 = 16 * 1024 * 1024;
const PRESIGNED_ESTIMATE: usize = 8 * 1024;
/// Longest request (method, host and target) kept.
const PRESIGNED_MAX_KEY: usize = 8 * 1024;

/// Presigned URLs verified before, with the caller each names. A reader that fetches an object in ranges through
/// one presigned URL (DuckDB, polars, a browser's media player) sends the same URL again and again; each use
/// costs a lookup instead of parsing and decoding the URL, hashing its session token and hashing the canonical
/// request and the string to sign.
///
/// A presigned URL is a bearer credential for its method and target until it expires: whoever holds it may use
/// it. What its verification depends on is the method, the host, the path and query as sent, the key material
/// and the clock. So a URL is kept
/// - by the exact method, `Host` header, authority and target, compared in full (the key is the text, not a
///   hash of it);
/// - only when nothing else could count: no `Authorization` header, no `x-amz-*` header, `host` the only signed
///   header, an unsigned payload, and a GET or HEAD;
/// - with the fingerprint of the key ring that verified it: a ring with other keys (one removed, one added)
///   verifies afresh, so a removed key stops its URLs at once;
///
/// and the URL's expiry and the session's are checked at every use. Only verified URLs are kept (a forged one is
/// refused each time), within [`PRESIGNED_WEIGHT`].
pub struct PresignedUrls(PerCpuCache<String, Arc<KeptUrl>, KeptUrlWeight>);

/// A verified presigned URL.
struct KeptUrl {
    caller: Caller,
    /// The fingerprint of the ring that verified it.
    ring: [u8; 32],
    /// When the URL expires (`X-Amz-Date` + `X-Amz-Expires`).
    expires_at: OffsetDateTime,
}

#[derive(Clone)]
struct KeptUrlWeight;

impl quick_cache::Weighter<String, Arc<KeptUrl>> for KeptUrlWeight {
    fn weight(&self, key: &String, _: &Arc<KeptUrl>) -> u64 {
        (1024 + key.len()) as u64
    }
}

impl Default for PresignedUrls {
    fn default() -> Self {
        PresignedUrls(PerCpuCache::with_weighter(PRESIGNED_ESTIMATE, PRESIGNED_WEIGHT, KeptUrlWeight))
    }
}

impl std::fmt::Debug for PresignedUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresignedUrls").field("kept", &self.0.len()).finish()
    }
}

impl PresignedUrls {
    /// What a request would be kept by: `None` when it is not one that may be kept (see [`PresignedUrls`]).
    fn key(parts: &http::request::Parts) -> Option<String> {
        if !matches!(parts.method, http::Method::GET | http::Method::HEAD) {
            return None;
        }
        let query = parts.uri.query()?;
        if !query.contains("X-Amz-Signature=")
            || parts
                .headers
                .keys()
                .any(|name| name == http::header::AUTHORIZATION || name.as_str().starts_with("x-amz-"))
        {
            return None;
        }
        let mut hosts = parts.headers.get_all(http::header::HOST).iter();
        let host = hosts.next().map(http::HeaderValue::as_bytes).unwrap_or_default();
        if hosts.next().is_some() {
            return None;
        }
        let host = std::str::from_utf8(host).ok()?;
        let authority = parts.uri.authority().map_or("", |a| a.as_str());
        let target = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
        // Separated by what neither a header value nor a URI can hold.
        let key = [parts.method.as_str(), host, authority, target].join("\n");
        (key.len() <= PRESIGNED_MAX_KEY).then_some(key)
    }

    /// The caller of a URL kept under `key`, if it was verified with `ring`'s keys and neither it nor its session
    /// has expired at `now`.
    fn get(&self, key: &str, ring: &KeyRing, now: OffsetDateTime) -> Option<Caller> {
        let kept = self.0.get(key)?;
        let fresh = kept.ring == *ring.fingerprint()
            && now <= kept.expires_at
            && kept.caller.session.as_ref().is_some_and(|session| now.unix_timestamp() < session.expires_at);
        fresh.then(|| kept.caller.clone())
    }

    /// Keeps a URL's verified `caller` under `key`, if it is one that may be kept.
    fn keep(&self, key: String, ring: &KeyRing, caller: &Caller) {
        let Some(verified) = &caller.verified else { return };
        // Kept only with its session, whose expiry `get` checks at every use.
        if caller.session.is_none() {
            return;
        }
        let AuthForm::Presigned { expires_at } = verified.form else { return };
        if verified.payload != PayloadMode::Unsigned || verified.signed_headers != ["host"] {
            return;
        }
        let kept = KeptUrl { caller: caller.clone(), ring: *ring.fingerprint(), expires_at };
        self.0.insert(key, Arc::new(kept));
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
    let caller = authenticate_sigv4(keys, parts, settings, known_body_sha256, OffsetDateTime::now_utc())?;
    vouched(gate, caller)
}

/// The caller of vended credentials, if Lakegate still trusts the issuers its principal rests on: the
/// credentials outlive the token they were vended for, not the trust in its issuer.
fn vouched(gate: &Gate, caller: Caller) -> Result<Caller, S3Error> {
    match gate.vouches_for(&caller.principal) {
        Ok(()) => Ok(caller),
        Err(IdentityError::UntrustedIssuer(issuer)) => Err(CredentialError::UntrustedIssuer(issuer).into()),
        Err(_) => Err(CredentialError::InvalidToken.into()),
    }
}

/// Authenticates a SigV4 request (header or presigned) at `now`.
fn authenticate_sigv4(
    keys: &KeyRing,
    parts: &http::request::Parts,
    settings: SigV4Settings<'_>,
    known_body_sha256: Option<[u8; 32]>,
    now: OffsetDateTime,
) -> Result<Caller, S3Error> {
    let kept = settings.presigned.zip(PresignedUrls::key(parts));
    if let Some((urls, key)) = &kept
        && let Some(caller) = urls.get(key, keys, now)
    {
        return Ok(caller);
    }
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
    let (key, derived_before) = settings.signing_keys.get(secret.expose(), scope.date, scope.region, scope.service);
    let to_keep = (!derived_before).then(|| KeyScope::new(secret.expose(), scope.date, scope.region, scope.service));
    let verified = signed.verify_with_key(&key)?;
    if let Some(scope) = to_keep {
        settings.signing_keys.keep(scope, &key);
    }
    let caller = Caller {
        principal: claims.principal.clone(),
        scope: claims.scope.clone(),
        session: Some(claims),
        access_key_id: Some(access_key_id),
        verified: Some(verified),
    };
    if let Some((urls, key)) = kept {
        urls.keep(key, keys, &caller);
    }
    Ok(caller)
}

/// Authenticates a POST Object form by its policy signature: the secret is recomputed from the form's session
/// token as for any SigV4 request, and the policy's signature checked with the day's signing key. The policy's
/// own rules are checked by the caller once the signature holds.
pub fn authenticate_form(gate: &Gate, keys: &KeyRing, form: &FormSignature<'_>) -> Result<Caller, S3Error> {
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
    vouched(
        gate,
        Caller {
            principal: claims.principal.clone(),
            scope: claims.scope.clone(),
            session: Some(claims),
            access_key_id: Some(access_key_id.to_owned()),
            verified: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakegate_core::credentials::{CredentialKind, KeyId, VendedCredentials, mint};

    /// 2026-12-01 00:00 UTC.
    const NOW: i64 = 1_795_996_800;

    fn at(unix: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(unix).expect("time")
    }

    fn ring(material: u8) -> KeyRing {
        let kid = KeyId::new("k1").expect("kid");
        KeyRing::from_keys(kid.clone(), [(kid, [material; 32])]).expect("ring")
    }

    fn session(ring: &KeyRing, expires_at: i64) -> VendedCredentials {
        let principal: Principal = serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.example", "subject": "alice", "groups": ["analysts"], "expires_at": expires_at,
        }))
        .expect("principal");
        let claims = SessionClaims {
            principal,
            scope: Scope::Unrestricted,
            role: None,
            session_name: None,
            issued_at: NOW - 60,
            expires_at,
            kind: CredentialKind::Sts,
            table: None,
        };
        mint(ring, &claims).expect("mint")
    }

    /// A GET of `lake/sales/a.parquet` presigned at `signed_at` for `expires` seconds, as an SDK builds it.
    fn presigned_get(creds: &VendedCredentials, signed_at: i64, expires: i64) -> http::request::Parts {
        let enc = |s: &str| percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string();
        let amz_date = at(signed_at)
            .format(time::macros::format_description!("[year][month][day]T[hour][minute][second]Z"))
            .expect("date");
        let date = &amz_date[..8];
        let query = format!(
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={}&X-Amz-Date={amz_date}&X-Amz-Expires={expires}\
             &X-Amz-Security-Token={}&X-Amz-SignedHeaders=host",
            enc(&format!("{}/{date}/us-east-1/s3/aws4_request", creds.access_key_id)),
            enc(&creds.session_token),
        );
        let request = |signature: &str| {
            let uri = format!("/lake/sales/a.parquet?{query}&X-Amz-Signature={signature}");
            let (parts, ()) =
                http::Request::get(uri).header("host", "lakegate:9000").body(()).expect("request").into_parts();
            parts
        };
        // The string to sign leaves the signature out: compute it on a placeholder, then sign it.
        let unsigned = request(&"0".repeat(64));
        let options = VerifyOptions { allowed_services: &["s3"], ..VerifyOptions::s3(at(signed_at)) };
        let to_sign =
            SignedRequest::parse(&RequestHead::from_parts(&unsigned), &options).expect("parse").string_to_sign();
        let key = derive_signing_key(&SecretKey::new(creds.secret_access_key.expose()), date, "us-east-1", "s3");
        request(&hex::encode(key.sign(&to_sign)))
    }

    fn settings<'a>(keys: &'a SigningKeys, urls: &'a PresignedUrls) -> SigV4Settings<'a> {
        SigV4Settings {
            max_skew: time::Duration::minutes(15),
            services: &["s3"],
            signing_keys: keys,
            presigned: Some(urls),
        }
    }

    /// A session of `ring`'s and a presigned GET of it, valid for 600 s from `NOW`, verified (and so kept in
    /// `urls`), with its caller.
    fn verified_url(
        ring: &KeyRing,
        keys: &SigningKeys,
        urls: &PresignedUrls,
    ) -> (VendedCredentials, http::request::Parts, Caller) {
        let creds = session(ring, NOW + 3600);
        let url = presigned_get(&creds, NOW, 600);
        let caller = authenticate_sigv4(ring, &url, settings(keys, urls), None, at(NOW)).expect("verified");
        (creds, url, caller)
    }

    #[test]
    fn a_presigned_url_is_kept_once_verified_and_recognised_while_it_and_its_session_last() {
        // The URLs are kept per CPU: a lookup from another CPU than the insert's would miss.
        lakegate_core::per_cpu_cache::stay_on_this_cpu();
        let (ring, keys, urls) = (ring(7), SigningKeys::default(), PresignedUrls::default());
        let (creds, url, caller) = verified_url(&ring, &keys, &urls);
        assert_eq!(caller.principal.subject, "alice");
        let key = PresignedUrls::key(&url).expect("a plain presigned GET may be kept");
        let kept = urls.get(&key, &ring, at(NOW + 1)).expect("kept");
        assert_eq!(kept.principal, caller.principal);
        assert_eq!(kept.access_key_id.as_deref(), Some(creds.access_key_id.as_str()));
        assert!(urls.get(&key, &ring, at(NOW + 600)).is_some(), "valid through its last second, as S3 has it");
        assert!(urls.get(&key, &ring, at(NOW + 601)).is_none(), "the URL has expired");
        let err = authenticate_sigv4(&ring, &url, settings(&keys, &urls), None, at(NOW + 601)).expect_err("expired");
        assert!(err.to_string().contains("expired"), "{err}");
    }

    #[test]
    fn a_kept_url_ends_with_its_session_and_with_the_keys_that_verified_it() {
        // The URLs are kept per CPU: a lookup from another CPU than the insert's would miss.
        lakegate_core::per_cpu_cache::stay_on_this_cpu();
        let (ring7, keys, urls) = (ring(7), SigningKeys::default(), PresignedUrls::default());
        let creds = session(&ring7, NOW + 300);
        let url = presigned_get(&creds, NOW, 3600);
        authenticate_sigv4(&ring7, &url, settings(&keys, &urls), None, at(NOW)).expect("verified");
        let key = PresignedUrls::key(&url).expect("key");
        assert!(urls.get(&key, &ring7, at(NOW + 299)).is_some());
        assert!(urls.get(&key, &ring7, at(NOW + 300)).is_none(), "the session has expired, the URL not yet");
        // The key that sealed the session is gone from the ring: the kept URL no longer counts, and the URL is
        // verified afresh, and refused.
        let other = ring(8);
        assert!(urls.get(&key, &other, at(NOW + 1)).is_none());
        authenticate_sigv4(&other, &url, settings(&keys, &urls), None, at(NOW + 1)).expect_err("unknown key");
        // The same keys loaded again (a reload) still recognise it.
        assert!(urls.get(&key, &ring(7), at(NOW + 1)).is_some());
    }

    #[test]
    fn only_verified_plain_presigned_reads_are_kept() {
        // The URLs are kept per CPU: a lookup from another CPU than the insert's would miss.
        lakegate_core::per_cpu_cache::stay_on_this_cpu();
        let (ring, keys, urls) = (ring(7), SigningKeys::default(), PresignedUrls::default());
        let creds = session(&ring, NOW + 3600);
        let url = presigned_get(&creds, NOW, 600);
        // A forged signature is refused every time and never kept.
        let mut forged = url.clone();
        let target = url.uri.to_string();
        let flipped = if target.ends_with('0') { "1" } else { "0" };
        forged.uri = format!("{}{flipped}", &target[..target.len() - 1]).parse().expect("uri");
        for _ in 0..2 {
            authenticate_sigv4(&ring, &forged, settings(&keys, &urls), None, at(NOW)).expect_err("forged");
        }
        assert_eq!(urls.0.len(), 0);
        // What else the signature could cover, or a write, is not kept by the URL alone.
        let mut with_amz_header = url.clone();
        with_amz_header.headers.insert("x-amz-content-sha256", http::HeaderValue::from_static("UNSIGNED-PAYLOAD"));
        assert!(PresignedUrls::key(&with_amz_header).is_none());
        let mut put = url.clone();
        put.method = http::Method::PUT;
        assert!(PresignedUrls::key(&put).is_none());
        let mut two_hosts = url.clone();
        two_hosts.headers.append("host", http::HeaderValue::from_static("elsewhere"));
        assert!(PresignedUrls::key(&two_hosts).is_none());
        // Another host is another key: the signature covers it.
        let mut other_host = url.clone();
        other_host.headers.insert("host", http::HeaderValue::from_static("elsewhere:9000"));
        assert_ne!(PresignedUrls::key(&other_host), PresignedUrls::key(&url));
        authenticate_sigv4(&ring, &other_host, settings(&keys, &urls), None, at(NOW)).expect_err("host is signed");
        authenticate_sigv4(&ring, &url, settings(&keys, &urls), None, at(NOW)).expect("verified");
        assert_eq!(urls.0.len(), 1);
    }

    #[test]
    fn the_kept_urls_stay_within_their_weight_however_many_and_long_they_are() {
        let (ring, keys, urls) = (ring(7), SigningKeys::default(), PresignedUrls::default());
        let (_, url, caller) = verified_url(&ring, &keys, &urls);
        // A URL longer than any kept is not kept at all.
        let mut long = url.clone();
        long.uri = format!("{}&x={}", url.uri, "a".repeat(PRESIGNED_MAX_KEY)).parse().expect("uri");
        assert_eq!(PresignedUrls::key(&long), None);
        // As many of the longest as would take four times the weight.
        let longest = |n: usize| format!("{n:0>width$}", width = PRESIGNED_MAX_KEY);
        let many = 4 * PRESIGNED_WEIGHT as usize / PRESIGNED_MAX_KEY;
        for n in 0..many {
            urls.keep(longest(n), &ring, &caller);
        }
        assert!(urls.0.weight() <= PRESIGNED_WEIGHT, "{} bytes kept", urls.0.weight());
        assert!(urls.0.len() < many / 3, "{} URLs kept", urls.0.len());
    }

    #[test]
    fn at_most_so_many_signing_keys_are_kept() {
        let keys = SigningKeys::default();
        let key = derive_signing_key(&SecretKey::new("c2VjcmV0"), "20261130", "us-east-1", "s3");
        // A secret for every access key a client could name, each kept as if its signature had verified.
        for n in 0..4 * SIGNING_KEYS {
            keys.keep(KeyScope::new(&format!("secret{n}"), "20261130", "us-east-1", "s3"), &key);
        }
        assert!(keys.0.len() <= SIGNING_KEYS, "{} keys kept", keys.0.len());
    }

    #[test]
    fn a_signing_key_is_derived_once_per_secret_and_scope() {
        let keys = SigningKeys::default();
        // As a request whose signature verified uses them: looked up, and kept if derived.
        let get = |secret: &str, date: &str, region: &str, service: &str| {
            let (key, kept) = keys.get(secret, date, region, service);
            if !kept {
                keys.keep(KeyScope::new(secret, date, region, service), &key);
            }
            (key, kept)
        };
        assert!(!get("c2VjcmV0", "20261130", "us-east-1", "s3").1);
        assert!(get("c2VjcmV0", "20261130", "us-east-1", "s3").1, "the second request finds the key derived");
        assert_eq!(keys.0.len(), 1);
        get("c2VjcmV0", "20261201", "us-east-1", "s3");
        get("b3RoZXI", "20261130", "us-east-1", "s3");
        // Parts that would run together in one text ("us-east-1s3" either way).
        get("c2VjcmV0", "20261130", "us-east-1s", "3");
        assert_eq!(keys.0.len(), 4);
        // Each lookup finds the key of its own secret and scope.
        let signs = |(key, kept): (SigningKey, bool), secret: &str, region: &str, service: &str| {
            kept && key.sign(b"x")
                == derive_signing_key(&SecretKey::new(secret), "20261130", region, service).sign(b"x")
        };
        assert!(signs(get("c2VjcmV0", "20261130", "us-east-1", "s3"), "c2VjcmV0", "us-east-1", "s3"));
        assert!(signs(get("c2VjcmV0", "20261130", "us-east-1s", "3"), "c2VjcmV0", "us-east-1s", "3"));
        assert!(signs(get("b3RoZXI", "20261130", "us-east-1", "s3"), "b3RoZXI", "us-east-1", "s3"));
        assert_eq!(keys.0.len(), 4, "all three were kept");
    }

    #[test]
    fn a_request_whose_signature_fails_keeps_no_signing_key() {
        let (ring, keys, urls) = (ring(7), SigningKeys::default(), PresignedUrls::default());
        let creds = session(&ring, NOW + 3600);
        let mut forged = presigned_get(&creds, NOW, 600);
        let uri = forged.uri.to_string();
        let (unsigned, _) = uri.rsplit_once("X-Amz-Signature=").expect("signed");
        forged.uri = format!("{unsigned}X-Amz-Signature={}", "0".repeat(64)).parse().expect("uri");
        authenticate_sigv4(&ring, &forged, settings(&keys, &urls), None, at(NOW)).expect_err("a wrong signature");
        assert_eq!(keys.0.len(), 0, "nothing kept for it");
        authenticate_sigv4(&ring, &presigned_get(&creds, NOW, 600), settings(&keys, &urls), None, at(NOW))
            .expect("the right one");
        assert_eq!(keys.0.len(), 1);
    }

    #[test]
    fn a_borrowed_scope_hashes_as_the_kept_one() {
        use std::hash::BuildHasher;
        let hasher = std::collections::hash_map::RandomState::new();
        let kept =
            KeyScope { secret: "s".into(), date: "20261130".into(), region: "eu-west-1".into(), service: "s3".into() };
        let borrowed = KeyScopeRef { secret: "s", date: "20261130", region: "eu-west-1", service: "s3" };
        assert_eq!(hasher.hash_one(&kept), hasher.hash_one(&borrowed));
        assert!(quick_cache::Equivalent::equivalent(&borrowed, &kept));
        let other = KeyScopeRef { region: "eu-west-1s", service: "3", ..borrowed };
        assert!(!quick_cache::Equivalent::equivalent(&other, &kept));
    }
}

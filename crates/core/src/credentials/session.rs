//! Minting and verifying session credentials.
//!
//! # Session token
//!
//! `base64url_nopad( version || kid_len || kid || nonce || AES-256-GCM(claims_json) || tag )` with
//! `aad = version || kid_len || kid`, so the header cannot be swapped onto another body. The nonce is 96 random
//! bits; with random nonces AES-GCM stays within its safety bound for about 2^32 tokens per key, far beyond what
//! one key mints between rotations.
//!
//! # Access key id and secret
//!
//! Both are MACs of the encoded token under sub-keys of the server key, so any replica with the key recomputes
//! them and nothing is stored: the access key id is `ASIA` + 16 characters of base32 (80 bits), the secret is 30
//! MAC bytes as 40 characters of standard base64, the shape AWS SDKs expect.

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::{aead, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::Principal;
use super::error::{CredentialError, MintError};
use super::keyring::{KeyRing, ServerKey};
use super::scope::Scope;
use crate::per_cpu_cache::PerCpuCache;

/// Longest session token Lakegate mints or reads, in bytes of its encoded form. S3 clients send it in the
/// `X-Amz-Security-Token` header, and proxies commonly cap a header at 8 KiB.
pub const MAX_SESSION_TOKEN_LEN: usize = 8 * 1024;
/// How far a replica's clock may lag the one that minted a token before `issued_at` looks like the future.
const MAX_CLOCK_SKEW_SECONDS: i64 = 300;

const TOKEN_VERSION: u8 = 1;
const NONCE_LEN: usize = aead::NONCE_LEN;
const ACCESS_KEY_ID_PREFIX: &str = "ASIA";
const ACCESS_KEY_ID_LEN: usize = 20;
/// 10 MAC bytes make 16 base32 characters, the length AWS uses after the 4-character prefix.
const ACCESS_KEY_ID_MAC_BYTES: usize = 10;
/// 30 MAC bytes make 40 base64 characters without padding, the length of an AWS secret access key.
const SECRET_MAC_BYTES: usize = 30;
const BASE32_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Which endpoint vended the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialKind {
    /// AssumeRoleWithWebIdentity.
    Sts,
    /// GetDataAccess.
    AccessGrant,
    /// Full-table credentials (the SQL front's table credentials, the Iceberg catalog's vended credentials).
    Table,
}

/// The governed table a full-table credential was vended for. Every S3 request made with it is decided as an
/// access to that table under the live policy (full access still held; `CommitTable` too for writes), the way
/// Lake Formation governs the credentials it vends, rather than by S3 prefix policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableBinding {
    /// `database.table`.
    pub table: String,
    /// The table's columns when the credential was vended: full access is checked on each of them again.
    pub columns: Vec<String>,
    /// Whether the credential may write (its scope says so too).
    pub write: bool,
}

/// Everything a session credential asserts, sealed inside its token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionClaims {
    /// Who the credential was vended to; the live policy is asked about this principal on every request.
    pub principal: Principal,
    /// The most the credential may reach.
    pub scope: Scope,
    /// The role profile name, from the RoleArn of AssumeRoleWithWebIdentity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// RoleSessionName, for audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_name: Option<String>,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds; the credential is expired from this second on.
    pub expires_at: i64,
    pub kind: CredentialKind,
    /// For [`CredentialKind::Table`]: the table every request is decided against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<TableBinding>,
}

/// A secret (the secret access key) whose `Debug` and `Display` never show it.
#[derive(Clone)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret.
    pub fn new(secret: String) -> Self {
        Self(secret)
    }

    /// The secret itself, for signing checks and for the one response that hands it to the client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The credentials handed to a client. `Debug` shows the access key id and expiry only.
#[derive(Clone)]
pub struct VendedCredentials {
    pub access_key_id: String,
    pub secret_access_key: SecretString,
    pub session_token: String,
    pub expiration: time::OffsetDateTime,
}

impl VendedCredentials {
    /// The expiration as RFC 3339 (`2026-03-21T12:00:00Z`), as STS and GetDataAccess responses carry it.
    pub fn expiration_rfc3339(&self) -> String {
        self.expiration
            .format(&time::format_description::well_known::Rfc3339)
            // Cannot fail for a UTC time built from an i64 that `OffsetDateTime` accepted; keep a safe fallback.
            .unwrap_or_else(|_| self.expiration.unix_timestamp().to_string())
    }
}

impl fmt::Debug for VendedCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendedCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &format_args!("<{} bytes>", self.session_token.len()))
            .field("expiration", &self.expiration)
            .finish()
    }
}

/// Seals `claims` under the ring's current key into credentials.
pub fn mint(ring: &KeyRing, claims: &SessionClaims) -> Result<VendedCredentials, MintError> {
    if claims.expires_at <= claims.issued_at {
        return Err(MintError::InvalidLifetime);
    }
    let expiration =
        time::OffsetDateTime::from_unix_timestamp(claims.expires_at).map_err(|_| MintError::InvalidLifetime)?;
    let (kid, key) = ring.current_key().ok_or(MintError::Crypto)?;
    let kid = kid.as_str().as_bytes();
    let kid_len = u8::try_from(kid.len()).map_err(|_| MintError::Crypto)?;

    let mut body = serde_json::to_vec(claims).map_err(|e| MintError::Serialize(e.to_string()))?;
    // Check before sealing so that a huge principal costs no encryption: base64 of header + body + tag.
    let raw_len = 2 + kid.len() + NONCE_LEN + body.len() + aead::AES_256_GCM.tag_len();
    let encoded_len = (raw_len * 4).div_ceil(3);
    if encoded_len > MAX_SESSION_TOKEN_LEN {
        return Err(MintError::TokenTooLarge { len: encoded_len, max: MAX_SESSION_TOKEN_LEN });
    }

    let mut header = Vec::with_capacity(2 + kid.len());
    header.push(TOKEN_VERSION);
    header.push(kid_len);
    header.extend_from_slice(kid);
    let mut nonce = [0u8; NONCE_LEN];
    rand::fill(&mut nonce).map_err(|_| MintError::Crypto)?;
    key.seal
        .seal_in_place_append_tag(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(&header), &mut body)
        .map_err(|_| MintError::Crypto)?;

    let mut raw = header;
    raw.extend_from_slice(&nonce);
    raw.extend_from_slice(&body);
    let session_token = URL_SAFE_NO_PAD.encode(&raw);
    debug_assert_eq!(session_token.len(), encoded_len);

    Ok(VendedCredentials {
        access_key_id: access_key_id_for(key, &session_token),
        secret_access_key: secret(key, &session_token),
        session_token,
        expiration,
    })
}

/// Opens and checks a presented credential at unix time `now`.
///
/// Returns the claims (shared with the ring's kept copy, not cloned: a principal's strings are many small
/// allocations) and the secret access key, with which the S3 front checks the request's SigV4 signature
/// (a mismatch there is `SignatureDoesNotMatch`). Order of checks: the token first (so an altered token is
/// `InvalidToken` whatever key id came with it), then the key id, then the lifetime.
pub fn verify(
    ring: &KeyRing,
    access_key_id: &str,
    session_token: Option<&str>,
    now: i64,
) -> Result<(Arc<SessionClaims>, SecretString), CredentialError> {
    let Some(session_token) = session_token.filter(|t| !t.is_empty()) else {
        return Err(if looks_like_lakegate_access_key_id(access_key_id) {
            CredentialError::MissingToken
        } else {
            CredentialError::InvalidAccessKeyId
        });
    };
    let opened = ring.opened.open(ring, session_token).ok_or(CredentialError::InvalidToken)?;
    // Constant time: the expected id is a MAC, and a timing leak would let a forger learn it byte by byte.
    if !bool::from(opened.access_key_id.as_bytes().ct_eq(access_key_id.as_bytes())) {
        return Err(CredentialError::InvalidAccessKeyId);
    }
    // The lifetime is checked at every use, kept or not.
    let claims = &opened.claims;
    if claims.issued_at > now.saturating_add(MAX_CLOCK_SKEW_SECONDS) {
        return Err(CredentialError::InvalidToken);
    }
    if now >= claims.expires_at {
        return Err(CredentialError::ExpiredToken);
    }
    Ok((Arc::clone(claims), opened.secret.clone()))
}

/// Bounds what a ring keeps of the tokens it opened, counted as the bytes of each token (its claims take about as
/// much) plus a fixed share: some thousands of tokens, 16 MiB at most whatever size the tokens are.
const OPENED_WEIGHT: u64 = 16 * 1024 * 1024;
const OPENED_ESTIMATE: usize = 8 * 1024;

/// The tokens a ring has opened, by the SHA-256 of the token, with what each yields: a client that signs every
/// request with the same session credentials costs a hash per request instead of a base64 decoding, an AES-GCM
/// opening, a JSON parse and two MACs. Kept in the [`KeyRing`], so a ring with other keys starts empty and a
/// removed key opens nothing more; only tokens the ring could open are kept (a forged one is refused each
/// time), and their lifetime is still checked at every use ([`verify`]).
pub(crate) struct OpenedTokens(PerCpuCache<[u8; 32], Arc<Opened>, OpenedWeight>);

/// What an opened token yields.
pub(crate) struct Opened {
    claims: Arc<SessionClaims>,
    access_key_id: String,
    secret: SecretString,
    /// The length of the token it came from, its weight in the cache.
    token_len: usize,
}

#[derive(Clone)]
pub(crate) struct OpenedWeight;

impl quick_cache::Weighter<[u8; 32], Arc<Opened>> for OpenedWeight {
    fn weight(&self, _: &[u8; 32], opened: &Arc<Opened>) -> u64 {
        (512 + 2 * opened.token_len) as u64
    }
}

impl Default for OpenedTokens {
    fn default() -> Self {
        OpenedTokens(PerCpuCache::with_weighter(OPENED_ESTIMATE, OPENED_WEIGHT, OpenedWeight))
    }
}

impl OpenedTokens {
    /// How many tokens are kept.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// What the kept tokens weigh, and the most they may.
    #[cfg(test)]
    pub(crate) fn weight(&self) -> (u64, u64) {
        (self.0.weight(), OPENED_WEIGHT)
    }

    /// What `session_token` yields under `ring`, opened now or before; `None` when the ring cannot open it.
    fn open(&self, ring: &KeyRing, session_token: &str) -> Option<Arc<Opened>> {
        if session_token.len() > MAX_SESSION_TOKEN_LEN {
            return None;
        }
        let digest: [u8; 32] = Sha256::digest(session_token.as_bytes()).into();
        if let Some(opened) = self.0.get(&digest) {
            return Some(opened);
        }
        let (key, claims) = open(ring, session_token)?;
        let opened = Arc::new(Opened {
            claims: Arc::new(claims),
            access_key_id: access_key_id_for(key, session_token),
            secret: secret(key, session_token),
            token_len: session_token.len(),
        });
        self.0.insert(digest, opened.clone());
        Some(opened)
    }
}

/// Whether `access_key_id` has the shape of one Lakegate mints (`ASIA` + 16 base32 characters), so the S3 front
/// can tell "our key without its token" from a key it has never seen.
pub fn looks_like_lakegate_access_key_id(access_key_id: &str) -> bool {
    access_key_id.len() == ACCESS_KEY_ID_LEN
        && access_key_id.starts_with(ACCESS_KEY_ID_PREFIX)
        && access_key_id.bytes().all(|b| BASE32_ALPHABET.contains(&b))
}

/// Decodes and decrypts a token; `None` for anything wrong with it. Bounded before any decoding work.
fn open<'r>(ring: &'r KeyRing, session_token: &str) -> Option<(&'r ServerKey, SessionClaims)> {
    if session_token.len() > MAX_SESSION_TOKEN_LEN {
        return None;
    }
    let raw = URL_SAFE_NO_PAD.decode(session_token).ok()?;
    let (&version, rest) = raw.split_first()?;
    if version != TOKEN_VERSION {
        return None;
    }
    let (&kid_len, rest) = rest.split_first()?;
    let header_len = 2 + usize::from(kid_len);
    let (kid, rest) = rest.split_at_checked(usize::from(kid_len))?;
    let (nonce, sealed) = rest.split_at_checked(NONCE_LEN)?;
    let (_, key) = ring.key_by_kid(kid)?;
    let header = raw.get(..header_len)?;
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut sealed = sealed.to_vec();
    let plain = key.seal.open_in_place(nonce, aead::Aad::from(header), &mut sealed).ok()?;
    let claims = serde_json::from_slice(plain).ok()?;
    Some((key, claims))
}

fn access_key_id_for(key: &ServerKey, session_token: &str) -> String {
    let tag = hmac::sign(&key.access_key_id, session_token.as_bytes());
    let mac = tag.as_ref().get(..ACCESS_KEY_ID_MAC_BYTES).unwrap_or_default();
    let mut out = String::with_capacity(ACCESS_KEY_ID_LEN);
    out.push_str(ACCESS_KEY_ID_PREFIX);
    out.push_str(&base32(mac));
    out
}

fn secret(key: &ServerKey, session_token: &str) -> SecretString {
    let tag = hmac::sign(&key.secret, session_token.as_bytes());
    let mac = tag.as_ref().get(..SECRET_MAC_BYTES).unwrap_or_default();
    SecretString(STANDARD_NO_PAD.encode(mac))
}

/// RFC 4648 base32 without padding; only used on MAC bytes, whose length is a multiple of 5.
fn base32(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer: u32 = 0;
    let mut bits = 0u32;
    for &byte in bytes {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(base32_char(buffer >> bits));
        }
        buffer &= (1 << bits) - 1;
    }
    if bits > 0 {
        out.push(base32_char(buffer << (5 - bits)));
    }
    out
}

fn base32_char(index: u32) -> char {
    BASE32_ALPHABET.get((index & 31) as usize).map_or('A', |&b| char::from(b))
}

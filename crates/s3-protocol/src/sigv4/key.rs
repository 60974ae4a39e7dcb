//! Secrets, signing-key derivation and the HMAC/SHA-256 primitives.

use aws_lc_rs::hmac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret access key. `Debug` never shows it.
#[derive(Clone)]
pub struct SecretKey(String);

impl SecretKey {
    /// Wraps a secret access key as returned by the credential store.
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The derived `kSigning` key for one (secret, date, region, service).
///
/// It is valid for a whole UTC day, so callers may cache it keyed by
/// (access key id, date, region, service) and skip four HMACs per request. `Debug` never shows it.
#[derive(Clone)]
pub struct SigningKey(hmac::Key);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// HMAC-SHA256 of `data` under this key.
    pub(crate) fn sign(&self, data: &[u8]) -> [u8; 32] {
        tag_bytes(hmac::sign(&self.0, data).as_ref())
    }
}

/// Derives `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request")`.
///
/// `date` is the credential-scope date (`YYYYMMDD`).
pub fn derive_signing_key(secret: &SecretKey, date: &str, region: &str, service: &str) -> SigningKey {
    let mut k_secret = Vec::with_capacity(4 + secret.expose().len());
    k_secret.extend_from_slice(b"AWS4");
    k_secret.extend_from_slice(secret.expose().as_bytes());
    let k_date = hmac_once(&k_secret, date.as_bytes());
    let k_region = hmac_once(&k_date, region.as_bytes());
    let k_service = hmac_once(&k_region, service.as_bytes());
    let k_signing = hmac_once(&k_service, b"aws4_request");
    SigningKey(hmac::Key::new(hmac::HMAC_SHA256, &k_signing))
}

fn hmac_once(key: &[u8], data: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    tag_bytes(hmac::sign(&key, data).as_ref())
}

fn tag_bytes(tag: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    // HMAC-SHA256 tags are always 32 bytes; zip keeps this total without indexing.
    for (o, t) in out.iter_mut().zip(tag) {
        *o = *t;
    }
    out
}

/// SHA-256 of `data`.
pub(super) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Lowercase hex SHA-256 of the empty string, used by chunk signatures and empty bodies.
pub(super) const EMPTY_SHA256_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Compares two MACs in constant time so the comparison leaks nothing about how many bytes match.
pub(super) fn macs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.ct_eq(b).into()
}

/// Parses a 64-character hex signature or hash (either case) into bytes.
pub(super) fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

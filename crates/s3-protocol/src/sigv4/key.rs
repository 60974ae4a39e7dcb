//! Secrets, signing-key derivation and the HMAC/SHA-256 primitives.

use std::sync::{Arc, Mutex};

use aws_lc_rs::hmac;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::parse::ALGORITHM;

/// A secret access key. `Debug` never shows it.
///
/// It keeps the signing key it derived last, with its scope: a signer (the remote store's client, the sidecar)
/// signs every request of a day for the same scope, and deriving costs four HMACs. The kept key is a function
/// of the secret and the scope it is kept with, so it cannot go stale; new credentials are a new `SecretKey`.
#[derive(Clone)]
pub struct SecretKey {
    secret: String,
    last: Arc<Mutex<Option<(String, SigningKey)>>>,
}

impl SecretKey {
    /// Wraps a secret access key as returned by the credential store.
    pub fn new(secret: impl Into<String>) -> Self {
        Self { secret: secret.into(), last: Arc::default() }
    }

    fn expose(&self) -> &str {
        &self.secret
    }

    /// `kSigning` for the scope `date/region/service/aws4_request` (`scope` is that text), derived now or kept
    /// from the last request signed for the same scope.
    pub(crate) fn signing_key(&self, scope: &str, date: &str, region: &str, service: &str) -> SigningKey {
        // A poisoned lock only loses the kept key: derive without it.
        let mut last = self.last.lock().ok();
        if let Some(Some((kept_scope, key))) = last.as_deref()
            && kept_scope == scope
        {
            return key.clone();
        }
        let key = derive_signing_key(self, date, region, service);
        if let Some(slot) = last.as_deref_mut() {
            *slot = Some((scope.to_owned(), key.clone()));
        }
        key
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
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
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

/// Lowercase hex of a hash or MAC, without going through `char`s as `hex::encode` does.
pub(crate) fn hex32(bytes: &[u8; 32]) -> HexDigest {
    let mut out = [0u8; 64];
    // Cannot fail: the output is exactly twice the input.
    let _ = hex::encode_to_slice(bytes, &mut out);
    HexDigest(out)
}

/// 64 lowercase hex digits on the stack.
#[derive(Clone, Copy)]
pub(crate) struct HexDigest([u8; 64]);

impl HexDigest {
    pub(crate) fn as_str(&self) -> &str {
        // Hex digits are ASCII.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for HexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for HexDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string to sign: the algorithm, the request time, the credential scope and the hex SHA-256 of the canonical
/// request (hashed as it was written: [`super::canonical::write_canonical_request`]), a line each. The signer and
/// the verifier both build it here.
pub(super) fn string_to_sign(amz_date: &str, scope: &str, canonical_sha256: &[u8; 32]) -> String {
    let hash = hex32(canonical_sha256);
    let mut out = String::with_capacity(ALGORITHM.len() + amz_date.len() + scope.len() + 67);
    for part in [ALGORITHM, "\n", amz_date, "\n", scope, "\n", hash.as_str()] {
        out.push_str(part);
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(key: &SigningKey) -> [u8; 32] {
        key.sign(b"string to sign")
    }

    #[test]
    fn a_kept_signing_key_is_the_one_of_the_scope_asked_for() {
        let secret = SecretKey::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
        let today = mac(&derive_signing_key(&secret, "20261201", "us-east-1", "s3"));
        let tomorrow = mac(&derive_signing_key(&secret, "20261202", "us-east-1", "s3"));
        let sts = mac(&derive_signing_key(&secret, "20261201", "us-east-1", "sts"));
        let asked = |date: &str, service: &str| {
            mac(&secret.signing_key(&format!("{date}/us-east-1/{service}/aws4_request"), date, "us-east-1", service))
        };
        assert_eq!(asked("20261201", "s3"), today);
        assert_eq!(asked("20261201", "s3"), today, "kept");
        assert_eq!(asked("20261202", "s3"), tomorrow, "a new day derives again");
        assert_eq!(asked("20261201", "sts"), sts, "another service derives again");
        assert_eq!(asked("20261201", "s3"), today);
        let other = SecretKey::new("another secret");
        assert_ne!(mac(&other.signing_key("20261201/us-east-1/s3/aws4_request", "20261201", "us-east-1", "s3")), today);
    }

    #[test]
    fn hex32_is_lowercase_hex() {
        let mut bytes = [0u8; 32];
        bytes[0] = 0xAB;
        bytes[31] = 0x0F;
        assert_eq!(hex32(&bytes).as_str(), hex::encode(bytes));
    }
}

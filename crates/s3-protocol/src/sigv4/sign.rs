//! Signing outgoing requests: Lakegate re-signs every forwarded request with the store's own credentials.
//!
//! Built on the same canonical-request pieces as the verifier, so the two cannot drift apart; the tests sign a
//! request here and verify it with [`super::verify`].

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::canonical::{CanonicalParts, PathMode, write_canonical_request};
use super::key::{SecretKey, hex32, string_to_sign};
use super::parse::{ALGORITHM, format_amz_date};
use super::verify::{X_AMZ_CONTENT_SHA256, X_AMZ_DATE, X_AMZ_SECURITY_TOKEN};

/// The payload literal for a body that is streamed unhashed (S3 accepts it on header-signed requests).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// Credentials of the store Lakegate forwards to. `Debug` shows the access key id only.
#[derive(Clone)]
pub struct StoreCredentials {
    pub access_key_id: String,
    pub secret: SecretKey,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StoreCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreCredentials").field("access_key_id", &self.access_key_id).finish_non_exhaustive()
    }
}

/// Why a request could not be signed (only header values that cannot be built).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot sign the forwarded request: {0}")]
pub struct SignError(&'static str);

/// Signs a request in place: sets `host`, `x-amz-date`, `x-amz-content-sha256` (to `payload_hash`, e.g.
/// [`UNSIGNED_PAYLOAD`]), `x-amz-security-token` when the credentials have one, and `authorization`.
///
/// Signs `host`, `content-type`, `content-md5`, `range` and every `x-amz-*` header, so the store sees exactly
/// the headers Lakegate chose to forward.
#[allow(clippy::too_many_arguments)]
pub fn sign_request(
    method: &str,
    path: &str,
    query: Option<&str>,
    host: &str,
    headers: &mut HeaderMap,
    credentials: &StoreCredentials,
    region: &str,
    service: &str,
    payload_hash: &str,
    now: OffsetDateTime,
) -> Result<(), SignError> {
    let amz_date = format_amz_date(now).ok_or(SignError("the clock is out of range"))?;
    let date = amz_date.get(..8).ok_or(SignError("the clock is out of range"))?;
    let value = |s: &str| HeaderValue::from_str(s).map_err(|_| SignError("a header value is not valid"));
    headers.insert(http::header::HOST, value(host)?);
    headers.insert(X_AMZ_DATE, value(&amz_date)?);
    headers.insert(X_AMZ_CONTENT_SHA256, value(payload_hash)?);
    headers.remove(X_AMZ_SECURITY_TOKEN);
    if let Some(token) = &credentials.session_token {
        headers.insert(X_AMZ_SECURITY_TOKEN, value(token)?);
    }
    headers.remove(http::header::AUTHORIZATION);

    let mut signed: Vec<&str> = headers
        .keys()
        .map(http::HeaderName::as_str)
        .filter(|n| n.starts_with("x-amz-") || matches!(*n, "host" | "content-type" | "content-md5" | "range"))
        .collect();
    signed.sort_unstable();
    signed.dedup();
    let signed_list = signed.join(";");

    let mut canonical = Sha256::new();
    let parts = CanonicalParts {
        method,
        path,
        path_mode: PathMode::S3,
        query,
        skip_signature: false,
        headers,
        signed_headers: &signed,
        authority: None,
        payload_hash,
    };
    write_canonical_request(&mut canonical, &parts);

    let mut scope = String::with_capacity(date.len() + region.len() + service.len() + 15);
    for part in [date, "/", region, "/", service, "/aws4_request"] {
        scope.push_str(part);
    }
    let string_to_sign = string_to_sign(&amz_date, &scope, &canonical.finalize().into());
    let key = credentials.secret.signing_key(&scope, date, region, service);
    let signature = hex32(&key.sign(string_to_sign.as_bytes()));
    let mut authorization = String::with_capacity(160 + credentials.access_key_id.len() + signed_list.len());
    for part in [
        ALGORITHM,
        " Credential=",
        &credentials.access_key_id,
        "/",
        &scope,
        ", SignedHeaders=",
        &signed_list,
        ", Signature=",
        signature.as_str(),
    ] {
        authorization.push_str(part);
    }
    // Handed over whole rather than copied again.
    let authorization = HeaderValue::from_maybe_shared(Bytes::from(authorization))
        .map_err(|_| SignError("a header value is not valid"))?;
    headers.insert(http::header::AUTHORIZATION, authorization);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::sigv4::{LookupError, RequestHead, VerifyOptions, verify};

    #[test]
    fn a_request_signed_for_the_store_verifies_with_the_store_secret() {
        let now = OffsetDateTime::now_utc();
        let creds = StoreCredentials {
            access_key_id: "STOREKEY".into(),
            secret: SecretKey::new("store-secret"),
            session_token: None,
        };
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-meta-owner", HeaderValue::from_static("alice"));
        headers.insert("content-type", HeaderValue::from_static("text/plain"));
        let path = "/lake/sales/a%20b.txt";
        let query = Some("partNumber=1&uploadId=x%2By");
        sign_request("PUT", path, query, "store:9000", &mut headers, &creds, "us-east-1", "s3", UNSIGNED_PAYLOAD, now)
            .unwrap();
        let head = RequestHead { method: "PUT", path, query, headers: &headers, authority: None };
        let lookup = |akid: &str, _: Option<&str>| {
            if akid == "STOREKEY" { Ok(SecretKey::new("store-secret")) } else { Err(LookupError::UnknownAccessKey) }
        };
        verify(&head, &VerifyOptions::s3(now), &lookup).expect("verifies");
        let wrong = |_: &str, _: Option<&str>| Ok(SecretKey::new("other"));
        assert!(verify(&head, &VerifyOptions::s3(now), &wrong).is_err());
    }
}

//! Looking inside a JWT before its signature is checked, only to route it: which algorithm, which key,
//! which issuer. Nothing read here is trusted until the signature verifies.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::Algorithm;
use serde::Deserialize;

use super::IdentityError;

/// The routing facts of an unverified token.
#[derive(Debug, Clone)]
pub struct Peeked {
    pub algorithm: Algorithm,
    pub kid: Option<String>,
    pub issuer: String,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
}

#[derive(Deserialize)]
struct RawPayload {
    iss: Option<serde_json::Value>,
}

/// Splits the compact form and reads `alg`, `kid` and `iss`.
pub fn peek(token: &str) -> Result<Peeked, IdentityError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_sig), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdentityError::Malformed("a JWT has three dot-separated parts".into()));
    };
    let header: RawHeader = decode_json(header, "header")?;
    let alg = header.alg.ok_or_else(|| IdentityError::Malformed("header has no alg".into()))?;
    let algorithm = parse_algorithm(&alg)?;
    let payload: RawPayload = decode_json(payload, "payload")?;
    let issuer = match payload.iss {
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err(IdentityError::InvalidClaim("iss".into())),
        None => return Err(IdentityError::MissingClaim("iss".into())),
    };
    Ok(Peeked { algorithm, kid: header.kid, issuer })
}

fn decode_json<T: serde::de::DeserializeOwned>(part: &str, what: &str) -> Result<T, IdentityError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| IdentityError::Malformed(format!("{what} is not base64url")))?;
    serde_json::from_slice(&bytes).map_err(|_| IdentityError::Malformed(format!("{what} is not a JSON object")))
}

/// Maps the header's `alg` to an asymmetric algorithm; `none` and HMAC are refused here already.
pub fn parse_algorithm(alg: &str) -> Result<Algorithm, IdentityError> {
    Ok(match alg {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        other => return Err(IdentityError::UnsupportedAlgorithm(other.chars().take(32).collect())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn alg_none_is_refused_before_any_key_lookup() {
        let t = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64(r#"{"iss":"x"}"#));
        assert_eq!(peek(&t).unwrap_err(), IdentityError::UnsupportedAlgorithm("none".into()));
    }

    #[test]
    fn hmac_is_refused_before_any_key_lookup() {
        let t = format!("{}.{}.sig", b64(r#"{"alg":"HS256"}"#), b64(r#"{"iss":"x"}"#));
        assert_eq!(peek(&t).unwrap_err(), IdentityError::UnsupportedAlgorithm("HS256".into()));
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        for t in ["", ".", "..", "a.b.c", "a.b.c.d", "\u{0}.\u{0}.\u{0}", "eyJ.eyJ.x"] {
            assert!(matches!(peek(t), Err(IdentityError::Malformed(_))), "{t:?}");
        }
    }
}

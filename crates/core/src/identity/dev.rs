//! The dev token issuer: an Ed25519 key kept in the data directory, for `lakegate token` and the demo.
//!
//! Its tokens go through exactly the same validation as a real issuer's (a static JWKS); it is only trusted
//! when the configuration enables it, and `serve` says so loudly.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::IssuerConfig;

/// `iss` of dev tokens.
pub const DEV_ISSUER: &str = "lakegate-dev";
/// `aud` of dev tokens.
pub const DEV_AUDIENCE: &str = "lakegate";

/// The dev issuer's key pair.
pub struct DevIssuer {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
    kid: String,
    path: PathBuf,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevIssuer").field("kid", &self.kid).field("path", &self.path).finish_non_exhaustive()
    }
}

impl DevIssuer {
    /// Where the key lives under a data directory.
    pub fn key_path(data_dir: &Path) -> PathBuf {
        data_dir.join("keys").join("dev-issuer.pk8")
    }

    /// Loads the key from the data directory, creating it (mode 0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> std::io::Result<Self> {
        let path = Self::key_path(data_dir);
        let pkcs8 = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create_key(&path)?,
            Err(e) => return Err(e),
        };
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = hex::encode(Sha256::digest(&public).get(..8).unwrap_or_default());
        Ok(Self { pkcs8, public, kid, path })
    }

    /// The key file, for the start-up banner.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Mints a token for `subject`; attributes become top-level claims.
    pub fn mint(
        &self,
        subject: &str,
        groups: &[String],
        attributes: &BTreeMap<String, String>,
        ttl: Duration,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut claims = serde_json::Map::new();
        for (k, v) in attributes {
            claims.insert(k.clone(), json!(v));
        }
        claims.insert("iss".into(), json!(DEV_ISSUER));
        claims.insert("sub".into(), json!(subject));
        claims.insert("aud".into(), json!(DEV_AUDIENCE));
        claims.insert("groups".into(), json!(groups));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX))));
        claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&self.pkcs8))
    }

    /// The public key as a JWKS.
    pub fn jwks(&self) -> JwkSet {
        let doc = json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA",
            "kid": self.kid, "x": URL_SAFE_NO_PAD.encode(&self.public),
        }]});
        serde_json::from_value(doc).unwrap_or(JwkSet { keys: Vec::new() })
    }

    /// How the dev issuer's tokens are mapped: every extra claim is an attribute.
    pub fn issuer_config(&self) -> IssuerConfig {
        IssuerConfig {
            issuer: DEV_ISSUER.into(),
            discovery: false,
            jwks_url: None,
            jwks_file: None,
            audiences: vec![DEV_AUDIENCE.into()],
            algorithms: vec!["EdDSA".into()],
            leeway_seconds: 30,
            user_claim: "sub".into(),
            groups_claim: Some("groups".into()),
            groups_delimiter: ",".into(),
            attribute_claims: BTreeMap::new(),
            all_claims_as_attributes: true,
            jwks_min_refresh_seconds: 60,
            jwks_refresh_seconds: 0,
            http_timeout_seconds: 5,
            native: None,
        }
    }
}

fn create_key(path: &Path) -> std::io::Result<Vec<u8>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| std::io::Error::other("key generation failed"))?;
    let bytes = doc.as_ref().to_vec();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(&bytes)?;
            file.sync_all()?;
            Ok(bytes)
        }
        // Another process (`serve` and `token` started together) created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path),
        Err(e) => Err(e),
    }
}

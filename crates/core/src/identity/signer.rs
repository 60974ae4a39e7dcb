//! Lakegate's own signing keys, for the tokens the token service issues.
//!
//! One Ed25519 key per file in a directory (`<data_dir>/keys/signing`, or a mounted Secret shared by all
//! replicas); the file name is the `kid`. The lexicographically greatest kid signs (generated kids start with a
//! UTC timestamp, so that is the newest); every key in the directory verifies and is published in the JWKS.
//! Rotation: add a key file on every replica (it is picked up on the next reload), later remove the old one.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

/// Key files are small; a large file in the directory is a mistake, not a key.
const MAX_KEY_FILE: u64 = 4096;

/// The signing key set, reloadable.
pub struct Signer {
    dir: PathBuf,
    keys: RwLock<Arc<Keys>>,
}

struct Keys {
    current_kid: String,
    current: EncodingKey,
    jwks: JwkSet,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Signer {
    /// Loads the keys in `dir`, generating a first key when the directory is empty or missing.
    pub fn load_or_generate(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        if read_keys(dir)?.is_empty() {
            generate_key_file(dir)?;
        }
        let keys = load(dir)?;
        Ok(Self { dir: dir.to_owned(), keys: RwLock::new(Arc::new(keys)) })
    }

    /// Re-reads the directory; on error the previous keys stay in force.
    pub fn reload(&self) -> std::io::Result<()> {
        let keys = load(&self.dir)?;
        if let Ok(mut guard) = self.keys.write() {
            *guard = Arc::new(keys);
        }
        Ok(())
    }

    fn current(&self) -> Arc<Keys> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The public keys, as published at `/.well-known/jwks.json`.
    pub fn jwks(&self) -> JwkSet {
        self.current().jwks.clone()
    }

    /// The kid that signs now.
    pub fn current_kid(&self) -> String {
        self.current().current_kid.clone()
    }

    /// Signs `claims` with the current key.
    pub fn sign(
        &self,
        claims: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let keys = self.current();
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(keys.current_kid.clone());
        jsonwebtoken::encode(&header, claims, &keys.current)
    }
}

/// Writes a new key file named `<UTC timestamp>-<random>`; returns its kid.
pub fn generate_key_file(dir: &Path) -> std::io::Result<String> {
    let rng = SystemRandom::new();
    let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| std::io::Error::other("key generation failed"))?;
    let mut suffix = [0u8; 3];
    aws_lc_rs::rand::SecureRandom::fill(&rng, &mut suffix).map_err(|_| std::io::Error::other("random failed"))?;
    let now = time::OffsetDateTime::now_utc();
    let kid = format!(
        // Nanoseconds too: two keys made within one second must still sort in the order they were made.
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z-{}",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second(),
        now.nanosecond(),
        hex::encode(suffix)
    );
    let tmp = dir.join(format!(".tmp-{kid}"));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(doc.as_ref())?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(&kid))?;
    Ok(kid)
}

/// (kid, PKCS#8 bytes) of every key file, sorted by kid; hidden entries (Secret volume internals) skipped.
fn read_keys(dir: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let meta = std::fs::metadata(entry.path())?;
        if !meta.is_file() || meta.len() > MAX_KEY_FILE {
            continue;
        }
        out.push((name, std::fs::read(entry.path())?));
    }
    out.sort();
    Ok(out)
}

fn load(dir: &Path) -> std::io::Result<Keys> {
    let mut keys = Vec::new();
    let mut jwks = Vec::new();
    for (kid, pkcs8) in read_keys(dir)? {
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: {e}", dir.join(&kid).display()))
        })?;
        jwks.push(json!({
            "kty": "OKP", "crv": "Ed25519", "use": "sig", "alg": "EdDSA", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(pair.public_key().as_ref()),
        }));
        keys.push((kid, pkcs8));
    }
    let (current_kid, pkcs8) = keys.pop().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, format!("no signing key in {}", dir.display()))
    })?;
    let jwks: JwkSet = serde_json::from_value(json!({ "keys": jwks }))
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    Ok(Keys { current_kid, current: EncodingKey::from_ed_der(&pkcs8), jwks })
}

//! Server keys: one current key mints, every key in the ring verifies, so keys rotate without a restart.
//!
//! # Key directory
//!
//! One regular file per key; the file name is the key id (kid), the content is 32 random bytes as hex (64
//! digits) or base64 (standard or URL-safe, padding optional), surrounding whitespace ignored.
//!
//! * **Which key mints**: the key named by a file called `current` if there is one (its content is a kid),
//!   otherwise the lexicographically greatest kid. Generated kids start with a UTC timestamp
//!   (`20260321T120000Z-1a2b`), so "greatest" is "newest" unless an operator says otherwise with `current`.
//! * **Hidden entries** (names starting with `.`) are skipped, so a writer can stage `.tmp-…` and rename it, and
//!   a Kubernetes Secret volume (whose `..data` folder and symlinks live beside the keys) works as mounted.
//! * **Anything else** that is not a valid kid is an error rather than silently ignored: a key that the
//!   operator believes is accepted but is not would be a confusing outage.
//!
//! # Rotation
//!
//! Add the new key file (and point `current` at it, or let it sort last), call [`KeyRing::load`] again on every
//! replica; credentials sealed under the old key keep verifying until its file is removed and the ring reloaded.
//! Add the new key to every replica *before* any replica mints with it; `current` makes that a two-step change.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use aws_lc_rs::{aead, hkdf, hmac, rand};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

use super::error::KeyRingError;

/// Length of a server key in bytes.
const KEY_LEN: usize = 32;
/// The reserved file name that names the current key.
const CURRENT_FILE: &str = "current";
/// Longest accepted kid; it travels inside every session token, so it is kept short.
const MAX_KID_LEN: usize = 64;
/// Key files are tiny; refusing big ones keeps a misplaced file from being read whole.
const MAX_KEY_FILE_LEN: u64 = 1024;

/// HKDF salt: binds derived keys to this use, so the same master bytes used elsewhere would yield other keys.
const HKDF_SALT: &[u8] = b"lakegate credentials keys v1";
/// One sub-key per purpose, so a MAC under one can never be replayed as another.
const INFO_SEAL: &[u8] = b"lakegate token seal v1";
const INFO_ACCESS_KEY_ID: &[u8] = b"lakegate access key id v1";
const INFO_SECRET: &[u8] = b"lakegate secret v1";

/// A key id: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.`, not `current`.
///
/// Restricted because it is both a file name and a field of every session token.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(String);

impl KeyId {
    /// Checks and wraps a key id.
    pub fn new(kid: &str) -> Result<Self, KeyRingError> {
        let valid_chars = kid.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if kid.is_empty() || kid.len() > MAX_KID_LEN || !valid_chars || kid.starts_with('.') || kid == CURRENT_FILE {
            return Err(KeyRingError::InvalidKeyId(kid.to_owned()));
        }
        Ok(Self(kid.to_owned()))
    }

    /// The key id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// `KeyId`'s ordering and equality are its string's, so looking keys up by `&str` is sound.
impl std::borrow::Borrow<str> for KeyId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The keys derived from one master key. The master bytes themselves are dropped after derivation.
pub(crate) struct ServerKey {
    /// Seals and opens session tokens (AES-256-GCM).
    pub(crate) seal: aead::LessSafeKey,
    /// MACs a token into its access key id.
    pub(crate) access_key_id: hmac::Key,
    /// MACs a token into its secret access key.
    pub(crate) secret: hmac::Key,
}

impl ServerKey {
    fn derive(master: &[u8; KEY_LEN]) -> Result<Self, KeyRingError> {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, HKDF_SALT).extract(master);
        let seal_info = [INFO_SEAL];
        let seal = prk.expand(&seal_info, &aead::AES_256_GCM).map_err(|_| KeyRingError::Crypto)?;
        let akid_info = [INFO_ACCESS_KEY_ID];
        let access_key_id = prk.expand(&akid_info, hmac::HMAC_SHA256).map_err(|_| KeyRingError::Crypto)?;
        let secret_info = [INFO_SECRET];
        let secret = prk.expand(&secret_info, hmac::HMAC_SHA256).map_err(|_| KeyRingError::Crypto)?;
        Ok(Self {
            seal: aead::LessSafeKey::new(aead::UnboundKey::from(seal)),
            access_key_id: hmac::Key::from(access_key_id),
            secret: hmac::Key::from(secret),
        })
    }
}

/// The server keys of one replica: the current key (mints) and all accepted keys (verify).
///
/// `Debug` shows key ids only, never key material.
pub struct KeyRing {
    current: KeyId,
    keys: BTreeMap<KeyId, ServerKey>,
    /// Which key material the ring holds: a reload that reads the same keeps the ring in force, and with it
    /// the tokens it opened.
    fingerprint: [u8; 32],
    /// The session tokens this ring opened ([`super::session`]).
    pub(crate) opened: super::session::OpenedTokens,
}

impl fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyRing")
            .field("current", &self.current)
            .field("accepted", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Builds a ring from raw key material: `current` mints, every key in `keys` verifies.
    ///
    /// For tests and for callers that keep keys elsewhere (a secret manager); files go through [`KeyRing::load`].
    pub fn from_keys(
        current: KeyId,
        keys: impl IntoIterator<Item = (KeyId, [u8; KEY_LEN])>,
    ) -> Result<Self, KeyRingError> {
        let mut derived = BTreeMap::new();
        let mut masters = BTreeMap::new();
        for (kid, master) in keys {
            derived.insert(kid.clone(), ServerKey::derive(&master)?);
            masters.insert(kid, master);
        }
        if !derived.contains_key(&current) {
            return Err(KeyRingError::CurrentKeyMissing(current.0));
        }
        let mut fingerprint = Sha256::new();
        fingerprint.update(current.0.as_bytes());
        for (kid, master) in &masters {
            fingerprint.update([0]);
            fingerprint.update(kid.0.as_bytes());
            fingerprint.update([0]);
            fingerprint.update(master);
        }
        Ok(Self { current, keys: derived, fingerprint: fingerprint.finalize().into(), opened: Default::default() })
    }

    /// Reads the key directory (see the module docs for its layout and the current-key rule).
    ///
    /// Call it again to pick up a rotation; on error keep using the previous ring.
    pub fn load(dir: &Path) -> Result<Self, KeyRingError> {
        let io = |source| KeyRingError::Io { path: dir.to_path_buf(), source };
        let mut keys = Vec::new();
        let mut named_current = None;
        for entry in fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(KeyRingError::UnexpectedEntry(path));
            };
            if name.starts_with('.') {
                continue;
            }
            // Follows symlinks on purpose: mounted secrets are usually symlinks into a hidden folder.
            let meta = fs::metadata(&path).map_err(|source| KeyRingError::Io { path: path.clone(), source })?;
            if !meta.is_file() {
                return Err(KeyRingError::UnexpectedEntry(path));
            }
            if meta.len() > MAX_KEY_FILE_LEN {
                return Err(KeyRingError::InvalidKeyFile { path, reason: "file too large for a key" });
            }
            let text = read_text(&path)?;
            if name == CURRENT_FILE {
                named_current = Some(KeyId::new(text.trim())?);
            } else {
                let kid = KeyId::new(name)?;
                let master = decode_key(text.trim())
                    .ok_or(KeyRingError::InvalidKeyFile { path, reason: "expected 32 bytes as hex or base64" })?;
                keys.push((kid, master));
            }
        }
        let current = match named_current {
            Some(kid) => kid,
            None => {
                keys.iter().map(|(kid, _)| kid.clone()).max().ok_or_else(|| KeyRingError::NoKeys(dir.to_path_buf()))?
            }
        };
        Self::from_keys(current, keys)
    }

    /// Loads the key directory, first generating a key into it when it holds none (the dev setup's first start).
    ///
    /// The directory is created with mode 0700 and the key file with mode 0600.
    pub fn load_or_generate(dir: &Path) -> Result<Self, KeyRingError> {
        let io = |source| KeyRingError::Io { path: dir.to_path_buf(), source };
        create_private_dir(dir).map_err(io)?;
        let has_key = fs::read_dir(dir).map_err(io)?.any(|entry| {
            entry.is_ok_and(|e| e.file_name().to_str().is_some_and(|n| !n.starts_with('.') && n != CURRENT_FILE))
        });
        if !has_key {
            Self::generate_key_file(dir)?;
        }
        Self::load(dir)
    }

    /// Writes a new random key into `dir` (mode 0600) and returns its kid, which sorts after every kid generated
    /// before it. The ring is not changed: call [`KeyRing::load`] on every replica to pick it up.
    pub fn generate_key_file(dir: &Path) -> Result<KeyId, KeyRingError> {
        let mut master = [0u8; KEY_LEN];
        rand::fill(&mut master).map_err(|_| KeyRingError::Crypto)?;
        let mut suffix = [0u8; 2];
        rand::fill(&mut suffix).map_err(|_| KeyRingError::Crypto)?;
        let now = time::OffsetDateTime::now_utc();
        // A timestamp first so that "greatest kid" means "newest"; the random suffix keeps two keys generated in
        // the same second (two replicas on first start) from colliding.
        let kid = KeyId::new(&format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z-{}",
            now.year(),
            u8::from(now.month()),
            now.day(),
            now.hour(),
            now.minute(),
            now.second(),
            hex::encode(suffix)
        ))?;
        write_private_file_new(&dir.join(kid.as_str()), hex::encode(master).as_bytes())
            .map_err(|source| KeyRingError::Io { path: dir.join(kid.as_str()), source })?;
        Ok(kid)
    }

    /// The key id that [`super::mint`] seals new tokens under.
    pub fn current_kid(&self) -> &KeyId {
        &self.current
    }

    /// Every key id this ring accepts, in order.
    pub fn accepted_kids(&self) -> impl Iterator<Item = &KeyId> {
        self.keys.keys()
    }

    /// What tells this ring's keys (their ids and material, and which is current) from any other ring's: what
    /// one ring verified, another with the same fingerprint verifies alike.
    pub fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    /// Whether `other` holds the same keys with the same current one.
    pub(crate) fn same_keys(&self, other: &KeyRing) -> bool {
        self.fingerprint == other.fingerprint
    }

    pub(crate) fn current_key(&self) -> Option<(&KeyId, &ServerKey)> {
        self.keys.get_key_value(&self.current)
    }

    pub(crate) fn key_by_kid(&self, kid: &[u8]) -> Option<(&KeyId, &ServerKey)> {
        self.keys.get_key_value(std::str::from_utf8(kid).ok()?)
    }
}

fn read_text(path: &Path) -> Result<String, KeyRingError> {
    let bytes = fs::read(path).map_err(|source| KeyRingError::Io { path: path.to_path_buf(), source })?;
    String::from_utf8(bytes).map_err(|_| KeyRingError::InvalidKeyFile { path: path.to_path_buf(), reason: "not text" })
}

/// Hex first (64 digits is never valid base64 of 32 bytes, which is 43 or 44 characters), then base64 variants.
fn decode_key(text: &str) -> Option<[u8; KEY_LEN]> {
    let bytes = if text.len() == 2 * KEY_LEN {
        hex::decode(text).ok()?
    } else {
        [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD].iter().find_map(|engine| engine.decode(text).ok())?
    };
    bytes.try_into().ok()
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

/// Creates `path` (never overwrites: a kid names one key forever) with mode 0600 from the first byte on, via a
/// hidden temporary name so that a concurrent [`KeyRing::load`] never sees a half-written key.
fn write_private_file_new(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let tmp: PathBuf = match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => parent.join(format!(".tmp-{}", name.to_string_lossy())),
        _ => return Err(std::io::Error::other("key path has no parent")),
    };
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let result = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(content)?;
        file.sync_all()?;
        if path.exists() {
            return Err(std::io::Error::new(std::io::ErrorKind::AlreadyExists, "a key with this id already exists"));
        }
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        // Best effort: a stale hidden temp file is skipped by `load` anyway.
        let _ = fs::remove_file(&tmp);
    }
    result
}

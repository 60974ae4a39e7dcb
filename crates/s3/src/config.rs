//! The `[s3]` and `[sts]` configuration sections. Every key is documented in docs/configuration.md.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

use super::backend::RemoteConfig;
use lakegate_core::credentials::RoleProfile;
use lakegate_net::{ListenerConfig, TlsConfig};

/// `[s3]`: the S3 (and STS) listener and the store behind it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Domains under which `bucket.<domain>` names a bucket (virtual-hosted style).
    #[serde(default = "default_domains")]
    pub virtual_host_domains: Vec<String>,
    /// The region reported to clients (GetBucketLocation).
    #[serde(default = "default_region")]
    pub region: String,
    /// How far a request's signed time may be from Lakegate's clock (S3: 900 s).
    #[serde(default = "default_skew")]
    pub max_clock_skew_seconds: u32,
    #[serde(default)]
    pub backend: BackendConfig,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            tls: None,
            virtual_host_domains: default_domains(),
            region: default_region(),
            max_clock_skew_seconds: default_skew(),
            backend: BackendConfig::default(),
        }
    }
}

impl S3Config {
    /// The listener part.
    pub fn listener(&self) -> ListenerConfig {
        ListenerConfig { listen: self.listen, tls: self.tls.clone() }
    }
}

/// `[s3.backend]`: where allowed requests go.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum BackendConfig {
    /// The embedded store (default), under `dir` or `<data_dir>/store`.
    Embedded {
        #[serde(default)]
        dir: Option<PathBuf>,
        /// Create bucket `lake` with sample objects on first start.
        #[serde(default = "default_true")]
        seed: bool,
    },
    /// A remote S3-compatible store.
    Remote(RemoteConfig),
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self::Embedded { dir: None, seed: true }
    }
}

/// `[sts]`: credential vending.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StsConfig {
    /// The account id shown in ARNs (Lakegate has no accounts).
    #[serde(default = "default_account")]
    pub account_id: String,
    /// Role profiles for AssumeRoleWithWebIdentity; replaces the defaults when given.
    #[serde(default = "default_roles")]
    pub roles: Vec<RoleProfile>,
}

impl Default for StsConfig {
    fn default() -> Self {
        Self { account_id: default_account(), roles: default_roles() }
    }
}

/// `[credentials]`: the server keys that seal session credentials.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Key directory; default `<data_dir>/keys/credentials`, generated on first start.
    #[serde(default)]
    pub key_dir: Option<PathBuf>,
}

/// The roles `lakegate serve` ships with: `lakegate` (policy alone decides), `lakegate-readonly` (reads only, in
/// bucket `lake`) and `lakegate-sales` (only `lake/sales/`).
const DEFAULT_ROLES: &str = r#"
[[roles]]
name = "lakegate"
prefixes = ["*"]
max_duration_seconds = 43200

[[roles]]
name = "lakegate-readonly"
read_only = true
prefixes = ["s3://lake/"]
max_duration_seconds = 43200

[[roles]]
name = "lakegate-sales"
prefixes = ["s3://lake/sales/"]
"#;

fn default_roles() -> Vec<RoleProfile> {
    #[derive(Deserialize)]
    struct Roles {
        roles: Vec<RoleProfile>,
    }
    // Parsed from a constant checked by a test; an empty list (no role at all) is the fail-closed fallback.
    toml::from_str::<Roles>(DEFAULT_ROLES).map(|r| r.roles).unwrap_or_default()
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9000))
}
fn default_domains() -> Vec<String> {
    vec!["localhost".into()]
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_skew() -> u32 {
    900
}
fn default_true() -> bool {
    true
}
fn default_account() -> String {
    "000000000000".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_roles_parse() {
        let names: Vec<String> = default_roles().iter().map(|r| r.name().to_owned()).collect();
        assert_eq!(names, ["lakegate", "lakegate-readonly", "lakegate-sales"]);
    }
}

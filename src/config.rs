//! Configuration: one TOML file, environment overrides, embedded defaults.
//!
//! Each section's type belongs to the crate that reads it (`[audit]` and `[policy]` to the core, `[s3]` to the S3
//! front, `[sql]` to the SQL gateway, listeners to the networking crate); this file only assembles them.
//!
//! Precedence, lowest first: built-in defaults, the TOML file (`--config` or `LAKEGATE_CONFIG`), environment
//! variables `LAKEGATE__SECTION__KEY=value` (double underscores separate the path; the value is read as a TOML
//! literal when it parses as one, else as a string), and finally `--data-dir` / `LAKEGATE_DATA_DIR`.

use std::path::{Path, PathBuf};

use lakegate_core::audit::{AuditConfig, AuditSection};
use lakegate_core::identity::{IdentityConfig, TokenServiceConfig};
use lakegate_core::policy::PolicyConfig;
use lakegate_net::ListenerConfig;
use lakegate_s3::config::CredentialsConfig;
use lakegate_s3::{S3Config, StsConfig};
use lakegate_sql::SqlConfig;
use serde::Deserialize;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "LAKEGATE__";

/// Everything `lakegate serve` needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where Lakegate keeps its keys, audit log, embedded store and seeded policies.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub control: ListenerConfig,
    #[serde(default)]
    pub s3: S3Config,
    #[serde(default)]
    pub sts: StsConfig,
    #[serde(default)]
    pub credentials: CredentialsConfig,
    #[serde(default)]
    pub sql: SqlConfig,
    #[serde(default)]
    pub policy: PolicyConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub token_service: TokenServiceConfig,
    #[serde(default)]
    pub shutdown: ShutdownConfig,
    #[serde(default)]
    pub iceberg: lakegate_iceberg::IcebergConfig,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("./lakegate-data")
}

/// The `[shutdown]` section: what happens on SIGTERM or SIGINT (read by the runtime, which runs the drain).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long requests in flight get to finish once the drain starts; what is still open then is cut (and
    /// audited as incomplete). Kubernetes kills a pod `terminationGracePeriodSeconds` (default 30 s) after
    /// SIGTERM, so the default leaves 5 s to flush the audit log.
    #[serde(default = "default_shutdown_grace", deserialize_with = "de_humantime")]
    pub grace: std::time::Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace: default_shutdown_grace() }
    }
}

fn default_shutdown_grace() -> std::time::Duration {
    std::time::Duration::from_secs(25)
}

/// A duration written as humantime text (`"25s"`, `"1m 30s"`, `"500ms"`). A bare number is refused: its unit
/// would be a guess.
fn de_humantime<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(text.trim())
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?} ({e}); write e.g. \"25s\"")))
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("environment variable {name}: {message}")]
    Env { name: String, message: String },
    #[error("configuration: {0}")]
    Identity(#[from] lakegate_core::identity::ConfigError),
}

impl Config {
    /// The policy directory in force (see [`PolicyConfig::dir`]).
    pub fn policy_dir(&self) -> PathBuf {
        self.policy.dir_in(&self.data_dir)
    }

    /// The audit sink configuration, resolved against the data directory.
    pub fn audit_config(&self) -> AuditConfig {
        self.audit.resolve(&self.data_dir)
    }

    /// Loads the configuration from an optional file, the process environment and an optional data dir.
    pub fn load(file: Option<&Path>, data_dir: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_from(file, data_dir, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests feed their own).
    pub fn load_from(
        file: Option<&Path>,
        data_dir: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut root = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                toml::from_str::<toml::Table>(&text)
                    .map_err(|e| ConfigError::Parse { path: path.to_owned(), message: e.to_string() })?
            }
            None => toml::Table::new(),
        };
        for (name, value) in env {
            if let Some(path) = name.strip_prefix(ENV_PREFIX) {
                apply_env_override(&mut root, &name, path, &value)?;
            }
        }
        let mut config: Config = root.try_into().map_err(|e: toml::de::Error| ConfigError::Parse {
            path: file.map(Path::to_owned).unwrap_or_else(|| PathBuf::from("<environment>")),
            message: e.to_string(),
        })?;
        if let Some(dir) = data_dir {
            config.data_dir = dir.to_owned();
        }
        config.identity.check()?;
        Ok(config)
    }

    /// The credentials key directory in force.
    pub fn credentials_key_dir(&self) -> PathBuf {
        self.credentials.key_dir.clone().unwrap_or_else(|| self.data_dir.join("keys").join("credentials"))
    }

    /// The `iss` of Lakegate's own tokens: configured, or the control endpoint's URL.
    pub fn token_issuer(&self) -> String {
        self.token_service.issuer.clone().unwrap_or_else(|| {
            let scheme = if self.control.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}", self.control.listen)
        })
    }

    /// Where Lakegate's token-signing keys live.
    pub fn signing_key_dir(&self) -> PathBuf {
        self.token_service.key_dir.clone().unwrap_or_else(|| self.data_dir.join("keys").join("signing"))
    }

    /// Whether the dev token issuer is trusted: on by default, off as soon as a real issuer is configured,
    /// unless explicitly forced either way.
    pub fn dev_issuer_enabled(&self) -> bool {
        self.identity.dev_issuer.unwrap_or(self.identity.issuers.is_empty())
    }
}

fn apply_env_override(root: &mut toml::Table, name: &str, path: &str, raw: &str) -> Result<(), ConfigError> {
    let keys: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let Some((last, parents)) = keys.split_last() else {
        return Err(ConfigError::Env { name: name.into(), message: "empty key".into() });
    };
    let mut table = root;
    for key in parents {
        let entry = table.entry(key.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .ok_or_else(|| ConfigError::Env { name: name.into(), message: format!("`{key}` is not a table") })?;
    }
    table.insert(last.clone(), parse_env_value(raw));
    Ok(())
}

/// Reads `raw` as a TOML value (`8080`, `true`, `["a","b"]`) when it is one, else as a plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

#[cfg(test)]
mod tests {
    use lakegate_core::audit::Durability;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_listen_on_loopback_with_the_documented_ports() {
        let c = Config::load_from(None, None, env(&[])).expect("defaults load");
        assert_eq!(c.control.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.s3.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(c.sql.listen.to_string(), "127.0.0.1:5433");
        assert!(c.dev_issuer_enabled());
    }

    #[test]
    fn environment_overrides_nested_keys_with_typed_values() {
        let c = Config::load_from(
            None,
            None,
            env(&[
                ("LAKEGATE__CONTROL__LISTEN", "127.0.0.1:18080"),
                ("LAKEGATE__AUDIT__FAIL_OPEN", "true"),
                ("LAKEGATE__POLICY__DIR", "/etc/lakegate/policies"),
            ]),
        )
        .expect("env overrides load");
        assert_eq!(c.control.listen.port(), 18080);
        assert!(c.audit.sink.fail_open);
        assert_eq!(c.policy_dir(), PathBuf::from("/etc/lakegate/policies"));
    }

    #[test]
    fn configuring_a_real_issuer_switches_the_dev_issuer_off() {
        let c = Config::load_from(
            None,
            None,
            env(&[
                ("LAKEGATE__IDENTITY__ISSUERS", r#"[{issuer = "https://idp.example", audiences = ["lakegate"], jwks_url = "https://idp.example/jwks"}]"#),
            ]),
        )
        .expect("issuer config loads");
        assert!(!c.dev_issuer_enabled());
    }

    #[test]
    fn the_shutdown_grace_is_25s_unless_a_duration_is_given() {
        let c = Config::load_from(None, None, env(&[])).expect("defaults load");
        assert_eq!(c.shutdown.grace, std::time::Duration::from_secs(25));
        let c = Config::load_from(None, None, env(&[("LAKEGATE__SHUTDOWN__GRACE", "1m 30s")])).expect("loads");
        assert_eq!(c.shutdown.grace, std::time::Duration::from_secs(90));
    }

    #[test]
    fn a_shutdown_grace_without_a_unit_is_refused() {
        let err = Config::load_from(None, None, env(&[("LAKEGATE__SHUTDOWN__GRACE", "25")])).expect_err("no unit");
        assert!(err.to_string().contains("grace"), "{err}");
    }

    #[test]
    fn audit_durability_is_batch_unless_sync_is_chosen() {
        let c = Config::load_from(None, None, env(&[])).expect("defaults load");
        assert_eq!(c.audit_config().durability, Durability::Batch);
        let c = Config::load_from(None, None, env(&[("LAKEGATE__AUDIT__DURABILITY", "sync")])).expect("loads");
        assert_eq!(c.audit_config().durability, Durability::Sync);
    }

    #[test]
    fn an_unknown_audit_durability_is_refused() {
        let err = Config::load_from(None, None, env(&[("LAKEGATE__AUDIT__DURABILITY", "fsync")]))
            .expect_err("unknown durability");
        assert!(err.to_string().contains("fsync"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = Config::load_from(None, None, env(&[("LAKEGATE__CONTROL__LISTN", "1")]))
            .expect_err("typo must not be ignored");
        assert!(err.to_string().contains("listn"), "{err}");
    }
}

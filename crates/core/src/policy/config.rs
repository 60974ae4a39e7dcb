//! The `[policy]` section: where policies live and how often they are re-read.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where policies live and how often they are re-read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Policy directory (schema, `*.cedar`, `catalog.toml`, optional `entities.json`). When unset, Lakegate
    /// seeds `<data_dir>/policies` with the demo set built into the binary and uses that.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// How often the directory is checked for changes.
    #[serde(default = "default_reload_seconds")]
    pub reload_interval_seconds: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self { dir: None, reload_interval_seconds: default_reload_seconds() }
    }
}

impl PolicyConfig {
    /// The policy directory in force: the configured one, else `<data_dir>/policies`.
    pub fn dir_in(&self, data_dir: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| data_dir.join("policies"))
    }
}

fn default_reload_seconds() -> u64 {
    2
}

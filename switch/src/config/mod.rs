//! Configuration: Asterisk's `iax.conf` read as-is, plus the switch's own
//! `switch.toml` for what `iax.conf` does not cover.
//!
//! INTERIM: the parser lands with the config work; until then `load` yields defaults.

pub mod model;

pub use model::*;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A problem found in a configuration file, with where and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub location: Location,
    pub key: Option<String>,
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: ", self.location)?;
        if let Some(key) = &self.key {
            write!(f, "`{key}`: ")?;
        }
        write!(f, "{}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, " ({})", self.hint)?;
        }
        Ok(())
    }
}

/// Settings of the switch's own that `iax.conf` has no place for (`switch.toml`).
#[derive(Clone, Debug, PartialEq)]
pub struct SwitchSettings {
    /// Operator control socket (TCP, line-oriented); loopback by default.
    pub control: Option<SocketAddr>,
}

impl Default for SwitchSettings {
    fn default() -> Self {
        SwitchSettings { control: Some(SocketAddr::from(([127, 0, 0, 1], 5039))) }
    }
}

/// A fully parsed configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedConfig {
    pub iax: IaxConfig,
    pub switch: SwitchSettings,
    /// Options recognised but not supported: reported once each, not fatal.
    pub notes: Vec<Diagnostic>,
}

/// Where configuration files come from.
pub trait SourceLoader: Send + Sync + 'static {
    /// The text of `name` (`iax.conf`, `switch.toml`, or an `#include`d file),
    /// or `None` when absent.
    fn read(&self, name: &str) -> std::io::Result<Option<String>>;
    /// How to name `name` in messages (a path, for files on disk).
    fn display_name(&self, name: &str) -> String {
        name.to_string()
    }
}

/// Files in a directory on disk.
#[derive(Clone, Debug)]
pub struct DirLoader(pub PathBuf);

impl SourceLoader for DirLoader {
    fn read(&self, name: &str) -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(self.0.join(name)) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn display_name(&self, name: &str) -> String {
        self.0.join(name).display().to_string()
    }
}

/// Files held in memory (scenario files carry their configs inline).
#[derive(Clone, Debug, Default)]
pub struct MapLoader(pub std::sync::Arc<std::sync::Mutex<BTreeMap<String, String>>>);

impl SourceLoader for MapLoader {
    fn read(&self, name: &str) -> std::io::Result<Option<String>> {
        Ok(self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.get(name).cloned())
    }
}

/// Loads `iax.conf` and `switch.toml` from `loader`; absent files mean defaults.
pub fn load(_loader: &impl SourceLoader) -> Result<LoadedConfig, Vec<Diagnostic>> {
    Ok(LoadedConfig {
        iax: IaxConfig {
            general: General::default(),
            peers: Vec::new(),
            registrations: Vec::new(),
            callnumberlimits: Vec::new(),
        },
        switch: SwitchSettings::default(),
        notes: Vec::new(),
    })
}

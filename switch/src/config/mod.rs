//! Configuration: Asterisk's `iax.conf` read as-is, plus the switch's own
//! `switch.toml` for what `iax.conf` does not cover.
//!
//! [`load`] reads both through a [`SourceLoader`] (a directory live, a map in the
//! simulator) and returns either the whole typed configuration or every problem
//! found, each with file, line, option, what is wrong and what to write instead.
//! Options the switch recognises but does not act on come back as
//! [`LoadedConfig::notes`]; [`options::OPTIONS`] says which those are.

pub mod extensions_conf;
pub mod iax_conf;
pub mod model;
pub mod options;
pub mod passwords;
pub mod switch_toml;

pub use extensions_conf::EXTENSIONS_CONF;
pub use iax_conf::IAX_CONF;
pub use model::*;
pub use switch_toml::SWITCH_TOML;

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

impl Diagnostic {
    pub fn new(location: Location, key: Option<&str>, message: impl Into<String>, hint: impl Into<String>) -> Self {
        Diagnostic { location, key: key.map(str::to_string), message: message.into(), hint: hint.into() }
    }
}

/// Renders as
/// ```text
/// iax.conf:12: `bindport`: expected a port number 1-65535, got "45x9" (write e.g. bindport=4569)
/// ```
/// A problem with a whole file (line 0) shows the file name alone.
impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.location.line == 0 {
            write!(f, "{}: ", self.location.file)?;
        } else {
            write!(f, "{}: ", self.location)?;
        }
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
    /// Operator control socket (TCP, line-oriented); loopback by default, `None` = off
    /// (`[control] listen`). Always a loopback address: the socket has no authentication.
    pub control: Option<SocketAddr>,
    /// `[log]`.
    pub log: LogSettings,
    /// `[dialplan.CONTEXT]` tables: what calls into each context do (empty by default).
    pub dialplan: crate::dialplan::Dialplan,
    /// `[iax2] enabled`: whether IAX2 runs (binds `iax.conf`'s `bindaddr`);
    /// default `true`. With `false`, `iax.conf` is still read and checked.
    pub iax2: bool,
    /// `[sip]`: the SIP listener, its media socket and its users; `None` = SIP off.
    pub sip: Option<SipSettings>,
    /// `[state] dir`: where state that outlives a restart is kept (the IAX2
    /// registrar's dynamic peers); `None` = nothing is kept. A relative path
    /// is relative to the configuration directory.
    pub state_dir: Option<String>,
    /// Warnings that do not stop the switch (a weak password on loopback).
    pub notes: Vec<Diagnostic>,
}

/// `[sip]` and `[sip.users.NAME]` in `switch.toml`.
#[derive(Clone, Debug, PartialEq)]
pub struct SipSettings {
    /// `listen`: the UDP address SIP is served on (default `127.0.0.1:5060`:
    /// nothing is reachable from other hosts unless the file says so).
    pub listen: SocketAddr,
    /// `rtp`: the address media sockets bind to (default: the listen address's IP).
    pub rtp: std::net::IpAddr,
    /// `rtp_ports`: each call takes an even RTP port and the odd RTCP port
    /// above it from this range (default 16384-32768, as FreeSWITCH).
    pub rtp_ports: std::ops::RangeInclusive<u16>,
    /// `rtp_learning_packets`: packets with consecutive sequence numbers and
    /// one SSRC before a new RTP source is taken (default 4, Asterisk's
    /// `learning_min_sequential`).
    pub rtp_learning_packets: u16,
    /// `rtp_learning_window`: seconds after the media starts (or moves) during
    /// which a source may be learnt (default 5).
    pub rtp_learning_window: u32,
    /// `nat_keepalive`: seconds between the OPTIONS sent to registrations
    /// behind NAT (default 20; 0 = none).
    pub nat_keepalive: u32,
    /// `external_ip`: the address written into Contact and SDP when the switch
    /// sits behind NAT or listens on a wildcard address.
    pub external_ip: Option<std::net::IpAddr>,
    /// `realm`: the digest realm of challenges (default `switch`).
    pub realm: String,
    /// `context`: the dialplan context of calls from users without their own (default `default`).
    pub context: String,
    /// `min_expires` / `max_expires`: registration intervals granted (60 / 3600 s).
    pub min_expires: u32,
    pub max_expires: u32,
    /// `max_calls`: SIP calls up at once; more get 503 (default 1000).
    pub max_calls: usize,
    /// `rtp_timeout`: seconds without RTP before an answered call is hung up (default 60, 0 = never).
    pub rtp_timeout: u32,
    /// `transaction_memory`: bytes the open SIP transactions may hold (default
    /// 64 MiB); beyond it completed ones are shed and REGISTERs, then INVITEs, get 503.
    pub transaction_memory: usize,
    /// `[sip.users.NAME]`: who may register and call, in file order.
    pub users: Vec<SipUser>,
    /// `[sip.gateways.NAME]`: upstream servers the switch registers to, in file order.
    pub gateways: Vec<SipGateway>,
    /// `auth_failures_before_throttle` (5), `auth_failures_before_ban` (10),
    /// `ban_time` (600 s): the brute-force defence ([`crate::guard`]).
    pub guard: crate::guard::GuardSettings,
}

impl Default for SipSettings {
    /// What a `[sip]` table without keys means: loopback only, no users.
    fn default() -> Self {
        SipSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 5060)),
            rtp: std::net::IpAddr::from([127, 0, 0, 1]),
            rtp_ports: 16384..=32768,
            rtp_learning_packets: 4,
            rtp_learning_window: 5,
            nat_keepalive: 20,
            external_ip: None,
            realm: "switch".into(),
            context: "default".into(),
            min_expires: 60,
            max_expires: 3600,
            max_calls: 1000,
            rtp_timeout: 60,
            transaction_memory: switch_toml::DEFAULT_TRANSACTION_MEMORY,
            users: Vec::new(),
            gateways: Vec::new(),
            guard: crate::guard::GuardSettings::default(),
        }
    }
}

/// One `[sip.gateways.NAME]` table: a registration of ours to an upstream
/// server, as a FreeSWITCH gateway or an Asterisk `register =>` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipGateway {
    pub name: String,
    /// `proxy`: host name or address, and port (default 5060).
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    /// `expires`: the registration interval asked for (default 600 s).
    pub expires: u32,
    /// `register`: whether to register at all (default true); a gateway that
    /// does not is still used for calls out, as FreeSWITCH's `register=false`.
    pub register: bool,
}

/// One `[sip.users.NAME]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SipUser {
    pub name: String,
    pub password: String,
    /// The dialplan context of this user's calls (default: `[sip] context`).
    pub context: Option<String>,
}

impl Default for SwitchSettings {
    fn default() -> Self {
        SwitchSettings {
            control: Some(SocketAddr::from(([127, 0, 0, 1], 5039))),
            log: LogSettings::default(),
            dialplan: crate::dialplan::Dialplan::default(),
            iax2: true,
            sip: None,
            state_dir: None,
            notes: Vec::new(),
        }
    }
}

/// `[log]` in `switch.toml`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogSettings {
    /// `level`: the least severe messages logged (default `info`).
    pub level: LogLevel,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    #[default]
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    /// The name `tracing`'s filters understand.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl std::str::FromStr for LogLevel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s.trim().to_ascii_lowercase().as_str() {
            "error" => Ok(LogLevel::Error),
            "warn" | "warning" => Ok(LogLevel::Warn),
            "info" => Ok(LogLevel::Info),
            "debug" => Ok(LogLevel::Debug),
            "trace" => Ok(LogLevel::Trace),
            _ => Err(()),
        }
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

impl MapLoader {
    /// A loader holding `files` (name, text).
    pub fn from_files<K: Into<String>, V: Into<String>>(files: impl IntoIterator<Item = (K, V)>) -> Self {
        let map = files.into_iter().map(|(k, v)| (k.into(), v.into())).collect();
        MapLoader(std::sync::Arc::new(std::sync::Mutex::new(map)))
    }

    /// Adds or replaces a file (e.g. before a reload).
    pub fn insert(&self, name: impl Into<String>, text: impl Into<String>) {
        if let Ok(mut map) = self.0.lock() {
            map.insert(name.into(), text.into());
        }
    }

    /// Removes a file.
    pub fn remove(&self, name: &str) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(name);
        }
    }
}

impl SourceLoader for MapLoader {
    fn read(&self, name: &str) -> std::io::Result<Option<String>> {
        Ok(self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.get(name).cloned())
    }
}

/// Loads `iax.conf`, `extensions.conf` and `switch.toml` from `loader`;
/// absent files mean defaults.
///
/// On failure, every problem found in any file (not just the first), in file
/// order. On success, the notes about what is recognised but not honoured.
///
/// The dialplan is `extensions.conf`'s contexts with `switch.toml`'s
/// `[dialplan.CONTEXT]` tables on top: a context defined in both is taken
/// whole from `switch.toml` (the switch's own file is the more specific one),
/// and a note says so.
pub fn load(loader: &impl SourceLoader) -> Result<LoadedConfig, Vec<Diagnostic>> {
    let iax = iax_conf::read(loader);
    let mut errors = iax.errors;
    let switch = match loader.read(SWITCH_TOML) {
        Ok(Some(text)) => match switch_toml::parse(&loader.display_name(SWITCH_TOML), &text) {
            Ok(settings) => settings,
            Err(mut e) => {
                errors.append(&mut e);
                SwitchSettings::default()
            }
        },
        Ok(None) => SwitchSettings::default(),
        Err(e) => {
            errors.push(Diagnostic::new(
                Location { file: loader.display_name(SWITCH_TOML), line: 0 },
                None,
                format!("cannot read the file: {e}"),
                "check the file's permissions",
            ));
            SwitchSettings::default()
        }
    };
    let mut switch = switch;
    let mut notes = iax.notes;
    notes.append(&mut switch.notes);
    let extensions = extensions_conf::read(loader);
    errors.extend(extensions.errors);
    notes.extend(extensions.notes);
    let mut dialplan = extensions.dialplan;
    let toml_name = loader.display_name(SWITCH_TOML);
    for name in dialplan.overlay(std::mem::take(&mut switch.dialplan)) {
        let location = extensions.contexts.get(&name).cloned().unwrap_or_default();
        notes.push(Diagnostic::new(
            location,
            None,
            format!("context [{name}] is also defined in {toml_name}; [dialplan.{name}] there wins and this one is not used"),
            "keep each context in one file",
        ));
    }
    for (context, included) in dialplan.missing_includes() {
        let location = extensions.contexts.get(&context).cloned().unwrap_or_default();
        notes.push(Diagnostic::new(
            location,
            Some("include"),
            format!("[{context}] includes [{included}], which no file defines; the include finds nothing"),
            "define the context, or remove the include",
        ));
    }
    switch.dialplan = dialplan;
    if errors.is_empty() {
        Ok(LoadedConfig { iax: iax.config, switch, notes })
    } else {
        Err(errors)
    }
}

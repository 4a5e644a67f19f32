//! Scenario files: hosts running switches, a timeline of network and
//! operator actions, and expectations over the event trace.
//! The schema is documented in `docs/scenarios.md`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::net::LinkConditions;
use crate::parties::{self, ActorSpec, NatSpec};
use crate::pcap::{CaptureOptions, DEFAULT_SNAPLEN};
use crate::units::{fmt_duration, Dur, Prob};

const SCHEMA_HINT: &str = "docs/scenarios.md describes every key";

/// A scenario file that cannot be used, with where and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScenarioError {
    /// The file at fault (the scenario, or a file of a `config_dir`).
    pub path: PathBuf,
    /// 1-based line and column, when the problem has a place.
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
    pub hint: String,
}

impl fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, "\n  hint: {}", self.hint)?;
        }
        Ok(())
    }
}

impl std::error::Error for ScenarioError {}

/// The network variant a run uses: every host gets an address of this family only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Network {
    V4,
    V6,
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::V4 => "v4",
            Network::V6 => "v6",
        })
    }
}

impl std::str::FromStr for Network {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "v4" | "ipv4" | "4" => Ok(Network::V4),
            "v6" | "ipv6" | "6" => Ok(Network::V6),
            other => Err(format!("unknown network `{other}` (expected v4 or v6)")),
        }
    }
}

/// A loaded, validated scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub path: PathBuf,
    /// Simulated time the scenario runs for.
    pub duration: Duration,
    pub(crate) networks: Vec<Network>,
    pub(crate) link: LinkConditions,
    pub(crate) capture: CaptureOptions,
    /// Sorted by name.
    pub(crate) hosts: Vec<HostSpec>,
    /// NAT devices (firewalls on IPv6), sorted by name.
    pub(crate) nats: Vec<NatSpec>,
    /// Parties that are not our switch, sorted by name.
    pub(crate) actors: Vec<ActorSpec>,
    /// Sorted by time (file order among equal times).
    pub(crate) timeline: Vec<TimelineEntry>,
    pub(crate) expectations: Vec<Expectation>,
}

#[derive(Clone, Debug)]
pub(crate) struct HostSpec {
    pub name: String,
    /// File name (`iax.conf`, `switch.toml`, includes) -> text with placeholders.
    pub files: BTreeMap<String, String>,
    /// The NAT device it sits behind.
    pub behind: Option<String>,
    /// `ipv6 = false`: the host has no IPv6, so binding `[::]` fails as on a
    /// kernel without it (the switch falls back to `0.0.0.0`, with an event).
    pub ipv6: bool,
}

#[derive(Clone, Debug)]
pub(crate) struct TimelineEntry {
    pub at: Duration,
    pub label: Option<String>,
    pub action: Action,
}

#[derive(Clone, Debug)]
pub(crate) enum Action {
    /// Drop datagrams from `from` to `to`, and back unless `oneway`.
    Partition {
        from: String,
        to: String,
        oneway: bool,
    },
    Heal {
        from: String,
        to: String,
        oneway: bool,
    },
    Crash {
        host: String,
    },
    Restart {
        host: String,
    },
    SetLink {
        between: Option<(String, String)>,
        change: LinkChange,
    },
    SetConfig {
        host: String,
        files: BTreeMap<String, String>,
    },
    Reload {
        host: String,
    },
    /// Run an operator command line on the host's switch.
    Command {
        host: String,
        /// May contain placeholders; expanded per run.
        line: String,
    },
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct LinkChange {
    pub latency: Option<Duration>,
    pub jitter: Option<Duration>,
    pub loss: Option<f64>,
    pub duplicate: Option<f64>,
}

impl LinkChange {
    pub fn apply(&self, mut c: LinkConditions) -> LinkConditions {
        if let Some(v) = self.latency {
            c.latency = v;
        }
        if let Some(v) = self.jitter {
            c.jitter = v;
        }
        if let Some(v) = self.loss {
            c.loss = v;
        }
        if let Some(v) = self.duplicate {
            c.duplicate = v;
        }
        c
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExpectKind {
    /// A matching event happens (`at_least`..=`at_most` times) in the window.
    Happens,
    /// No matching event in the window.
    Never,
    /// At the end, the last matching event has the `is` fields.
    Last,
    /// The number of matching events in the window passes the `value` tests.
    Count,
    /// The sum of numeric `field`s over matching events in the window passes `value`.
    Sum,
    /// A world metric measured on the wire passes `value` and/or `tolerance`.
    Metric,
}

impl ExpectKind {
    pub fn name(self) -> &'static str {
        match self {
            ExpectKind::Happens => "happens",
            ExpectKind::Never => "never",
            ExpectKind::Last => "last",
            ExpectKind::Count => "count",
            ExpectKind::Sum => "sum",
            ExpectKind::Metric => "metric",
        }
    }
}

/// The world metrics a `kind = "metric"` expectation can test (see docs/scenarios.md).
pub const METRICS: &[&str] = &[
    "trunk_datagrams_per_tick",
    "wire_bytes_per_second",
    "datagrams_per_second",
    "cleartext_pattern_frames",
    "max_backlog",
];

/// Which hosts a metric is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MetricSpec {
    pub name: String,
    /// Sender (link metrics); `None`: every host.
    pub from: Option<String>,
    /// Receiver (link metrics); `None`: every host.
    pub to: Option<String>,
    /// The host of host metrics (`max_backlog`).
    pub host: Option<String>,
}

#[derive(Clone, Debug)]
pub(crate) struct Anchor {
    /// `None`: the start of the run.
    pub label: Option<String>,
    pub offset: Duration,
}

impl fmt::Display for Anchor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.label {
            None => f.write_str("start")?,
            Some(l) => write!(f, "`{l}`")?,
        }
        if !self.offset.is_zero() {
            write!(f, "+{}", fmt_duration(self.offset))?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Expectation {
    pub description: String,
    pub kind: ExpectKind,
    pub host: Option<String>,
    /// Empty for `metric`.
    pub event: String,
    pub filter: Vec<FieldTest>,
    pub after: Anchor,
    pub within: Option<Duration>,
    pub at_least: u32,
    pub at_most: Option<u32>,
    pub is: Vec<FieldTest>,
    /// `sum`: the fields added up.
    pub fields: Vec<String>,
    /// `count`, `sum`, `metric`: numeric tests of the result.
    pub value: Vec<(Op, f64)>,
    /// `metric`: largest relative distance from the metric's expected value.
    pub tolerance: Option<f64>,
    pub metric: Option<MetricSpec>,
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum MatchValue {
    /// May contain placeholders; expanded per run.
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Contains,
    Present,
}

impl Op {
    pub fn symbol(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Contains => " contains ",
            Op::Present => " present=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct FieldTest {
    pub field: String,
    pub op: Op,
    pub value: MatchValue,
}

/// Event names of `switch::event::Event` (keep in step with `Event::name`).
pub const SWITCH_EVENTS: &[&str] = &[
    "started",
    "config_loaded",
    "config_rejected",
    "registration_sent",
    "registered",
    "registration_rejected",
    "registration_timeout",
    "peer_registered",
    "peer_registration_refused",
    "peer_unregistered",
    "peer_restored",
    "peer_state_changed",
    "call_started",
    "call_answered",
    "call_rejected",
    "call_ended",
    "dtmf",
    "sip_registered",
    "sip_registration_refused",
    "sip_auth_failed",
    "sip_unregistered",
    "sip_call_started",
    "sip_call_answered",
    "sip_call_rejected",
    "sip_call_ended",
    "sip_dtmf",
    "sip_gateway_registered",
    "sip_gateway_refused",
    "sip_gateway_timeout",
    "sip_nat_detected",
    "rtp_source_learned",
    "rtp_source_refused",
    "rtp_port_unavailable",
    "sip_overload_started",
    "sip_overload_ended",
    "datagram_dropped",
    "datagrams_dropped",
    "call_token_required",
    "auth_throttled",
    "source_banned",
    "source_unbanned",
    "listener_fallback",
];

/// Event names the simulator adds to the trace.
pub const WORLD_EVENTS: &[&str] =
    &["partition", "heal", "crash", "restart", "set_link", "set_config", "reload", "switch_exited", "command"];

/// Event names NAT devices and firewalls add to the trace.
pub const NAT_EVENTS: &[&str] = &["nat_binding_created", "nat_binding_expired", "nat_refused"];

/// Host names that would clash with placeholders or trace fields.
const RESERVED_HOSTS: &[&str] = &["any", "self", "world", "network"];

// ---------------------------------------------------------------------------
// Raw TOML shape.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    description: String,
    duration: Dur,
    #[serde(default)]
    networks: Option<Spanned<RawNetworks>>,
    #[serde(default)]
    link: RawLink,
    #[serde(default)]
    capture: RawCapture,
    #[serde(default)]
    hosts: BTreeMap<String, Spanned<RawHost>>,
    #[serde(default)]
    nats: parties::Nats,
    #[serde(default)]
    actors: parties::Actors,
    #[serde(default)]
    timeline: Vec<Spanned<RawAction>>,
    #[serde(default)]
    expect: Vec<Spanned<RawExpect>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawNetworks {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLink {
    latency: Option<Dur>,
    jitter: Option<Dur>,
    loss: Option<Prob>,
    duplicate: Option<Prob>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCapture {
    snaplen: Option<u32>,
    from: Option<Dur>,
    until: Option<Dur>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    iax_conf: Option<Spanned<String>>,
    extensions_conf: Option<Spanned<String>>,
    switch_toml: Option<Spanned<String>>,
    config_dir: Option<Spanned<String>>,
    #[serde(default)]
    files: BTreeMap<String, Spanned<String>>,
    behind: Option<Spanned<String>>,
    ipv6: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    at: Dur,
    action: Spanned<String>,
    label: Option<Spanned<String>>,
    between: Option<Spanned<Vec<String>>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    latency: Option<Dur>,
    jitter: Option<Dur>,
    loss: Option<Prob>,
    duplicate: Option<Prob>,
    iax_conf: Option<Spanned<String>>,
    extensions_conf: Option<Spanned<String>>,
    switch_toml: Option<Spanned<String>>,
    files: Option<BTreeMap<String, Spanned<String>>>,
    line: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    description: String,
    kind: Option<Spanned<String>>,
    host: Option<Spanned<String>>,
    event: Option<Spanned<String>>,
    #[serde(rename = "where", default)]
    filter: BTreeMap<String, Spanned<toml::Value>>,
    after: Option<Spanned<String>>,
    within: Option<Dur>,
    at_least: Option<u32>,
    at_most: Option<u32>,
    #[serde(default)]
    is: BTreeMap<String, Spanned<toml::Value>>,
    field: Option<Spanned<RawFields>>,
    value: Option<Spanned<toml::Value>>,
    tolerance: Option<Spanned<Prob>>,
    metric: Option<Spanned<String>>,
    from: Option<Spanned<String>>,
    to: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawFields {
    One(String),
    Many(Vec<String>),
}

// ---------------------------------------------------------------------------
// Loading.

/// Where a problem is: a file and its text, to turn byte offsets into lines.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = self.text.get(..offset).unwrap_or("");
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn err(&self, span: Option<Range<usize>>, message: impl Into<String>, hint: impl Into<String>) -> ScenarioError {
        let (line, column) = match span {
            Some(s) => {
                let (l, c) = self.line_col(s.start);
                (Some(l), Some(c))
            }
            None => (None, None),
        };
        ScenarioError { path: self.path.to_path_buf(), line, column, message: message.into(), hint: hint.into() }
    }

    fn at<T>(&self, spanned: &Spanned<T>, message: impl Into<String>, hint: impl Into<String>) -> ScenarioError {
        self.err(Some(spanned.span()), message, hint)
    }

    /// Line of byte `offset` inside the string value at `span` (multi-line strings
    /// drop a newline right after the opening delimiter).
    fn line_in_string(&self, span: &Range<usize>, value: &str, offset: usize) -> usize {
        let (line, _) = self.line_col(span.start);
        let raw = self.text.get(span.clone()).unwrap_or("");
        let trimmed_newline = (raw.starts_with("\"\"\"") || raw.starts_with("'''"))
            && (raw[3..].starts_with('\n') || raw[3..].starts_with("\r\n"));
        line + usize::from(trimmed_newline) + value.get(..offset).unwrap_or("").matches('\n').count()
    }
}

fn toml_hint(message: &str) -> String {
    if message.contains("unknown field") {
        format!("check the key's spelling; {SCHEMA_HINT}")
    } else if message.contains("missing field") {
        format!("add the missing key; {SCHEMA_HINT}")
    } else if message.contains("duration") || message.contains("probability") {
        "durations look like \"30s\", \"10m\", \"250ms\"; probabilities like 0.1 or \"10%\"".into()
    } else {
        format!("the file must be valid TOML; {SCHEMA_HINT}")
    }
}

impl Scenario {
    /// Reads and validates a scenario file (and its `config_dir`s).
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            path: path.to_path_buf(),
            line: None,
            column: None,
            message: format!("cannot read the scenario file: {e}"),
            hint: "scenarios live in scenarios/*.toml".into(),
        })?;
        Scenario::parse(path, &text)
    }

    /// Parses scenario text; `path` names it in errors and anchors `config_dir`.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let src = Source { path, text };
        let raw: RawScenario = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().to_string();
            let hint = toml_hint(&message);
            src.err(e.span(), message, hint)
        })?;
        build(&src, raw)
    }

    /// The network variants to run over, in order.
    pub fn networks(&self) -> Vec<Network> {
        self.networks.clone()
    }

    /// Names of the simulated hosts, sorted.
    pub fn host_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.name.clone()).collect()
    }
}

/// Loads every `*.toml` in `dir`, sorted by scenario name.
pub fn list_scenarios(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ScenarioError {
        path: dir.to_path_buf(),
        line: None,
        column: None,
        message: format!("cannot list scenarios: {e}"),
        hint: "pass the directory that holds the scenario *.toml files".into(),
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut scenarios = paths.iter().map(|p| Scenario::load(p)).collect::<Result<Vec<_>, _>>()?;
    scenarios.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.path.cmp(&b.path)));
    for pair in scenarios.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(ScenarioError {
                path: pair[1].path.clone(),
                line: None,
                column: None,
                message: format!("scenario name `{}` is also used by {}", pair[1].name, pair[0].path.display()),
                hint: "scenario names must be unique".into(),
            });
        }
    }
    Ok(scenarios)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn build(src: &Source<'_>, raw: RawScenario) -> Result<Scenario, ScenarioError> {
    let name = raw.name.get_ref().trim().to_string();
    if name.is_empty() {
        return Err(src.at(&raw.name, "`name` is empty", "name the scenario, e.g. name = \"double-registration\""));
    }
    let duration = raw.duration.0;
    if duration.is_zero() {
        return Err(src.err(None, "`duration` is zero", "set e.g. duration = \"10m\""));
    }

    let networks = match &raw.networks {
        None => vec![Network::V4, Network::V6],
        Some(spanned) => {
            let names: Vec<&str> = match spanned.get_ref() {
                RawNetworks::One(s) => vec![s.as_str()],
                RawNetworks::Many(v) => v.iter().map(String::as_str).collect(),
            };
            let mut nets = Vec::new();
            for n in names {
                let parsed: Vec<Network> = if n == "both" {
                    vec![Network::V4, Network::V6]
                } else {
                    vec![n.parse().map_err(|e: String| src.at(spanned, e, "networks = [\"v4\", \"v6\"]"))?]
                };
                for p in parsed {
                    if !nets.contains(&p) {
                        nets.push(p);
                    }
                }
            }
            if nets.is_empty() {
                return Err(src.at(spanned, "`networks` is empty", "networks = [\"v4\", \"v6\"]"));
            }
            nets
        }
    };

    let d = LinkConditions::default();
    let link = LinkConditions {
        latency: raw.link.latency.map_or(d.latency, |v| v.0),
        jitter: raw.link.jitter.map_or(d.jitter, |v| v.0),
        loss: raw.link.loss.map_or(d.loss, |v| v.0),
        duplicate: raw.link.duplicate.map_or(d.duplicate, |v| v.0),
    };

    let capture = CaptureOptions {
        snaplen: raw.capture.snaplen.unwrap_or(DEFAULT_SNAPLEN),
        from: raw.capture.from.map_or(Duration::ZERO, |v| v.0),
        until: raw.capture.until.map(|v| v.0),
    };
    if capture.snaplen < 64 {
        return Err(src.err(
            None,
            format!("capture.snaplen = {} is too small", capture.snaplen),
            "use at least 64 bytes, enough for the Ethernet, IP and UDP headers",
        ));
    }

    // Hosts.
    if raw.hosts.is_empty() {
        return Err(src.err(None, "the scenario has no hosts", "add a [hosts.NAME] table per switch"));
    }
    let switch_names: BTreeSet<String> = raw.hosts.keys().cloned().collect();
    // Every name an address placeholder or a field may mention.
    let mut host_names = switch_names.clone();
    for (n, spanned) in raw.nats.iter().map(|(n, s)| (n, s.span())).chain(raw.actors.iter().map(|(n, s)| (n, s.span())))
    {
        if !valid_name(n) || RESERVED_HOSTS.contains(&n.as_str()) || !host_names.insert(n.clone()) {
            return Err(src.err(
                Some(spanned),
                format!("name `{n}` is not allowed or is used twice"),
                "hosts, nats and actors share one namespace of lowercase names",
            ));
        }
    }
    let nat_names: BTreeSet<String> = raw.nats.keys().cloned().collect();
    let check_behind = |b: &Spanned<String>| -> Result<String, ScenarioError> {
        if nat_names.contains(b.get_ref()) {
            Ok(b.get_ref().clone())
        } else {
            Err(src.at(
                b,
                format!("`behind = \"{}\"` names no NAT", b.get_ref()),
                format!("nats: {}", join(&nat_names)),
            ))
        }
    };
    let mut nats = Vec::new();
    for (n, spanned) in &raw.nats {
        nats.push(parties::nat(n, spanned.get_ref()).map_err(|(span, m, h)| src.err(span, m, h))?);
    }
    let mut actors = Vec::new();
    for (n, spanned) in &raw.actors {
        let a = spanned.get_ref();
        let spec = parties::actor(n, a, duration).map_err(|(span, m, h)| src.err(span, m, h))?;
        if let Some(b) = &a.behind {
            check_behind(b)?;
        }
        if !switch_names.contains(&spec.server) {
            return Err(src.at(
                &a.server,
                format!("`server = \"{}\"` names no switch host", spec.server),
                format!("hosts: {}", join(&switch_names)),
            ));
        }
        actors.push(spec);
    }
    let mut hosts = Vec::new();
    for (hname, spanned) in &raw.hosts {
        if !valid_name(hname) || RESERVED_HOSTS.contains(&hname.as_str()) {
            return Err(src.at(
                spanned,
                format!("host name `{hname}` is not allowed"),
                format!(
                    "use lowercase letters, digits and `-` (it becomes a host name); reserved: {}",
                    RESERVED_HOSTS.join(", ")
                ),
            ));
        }
        let h = spanned.get_ref();
        let mut files: BTreeMap<String, String> = BTreeMap::new();
        if let Some(dir) = &h.config_dir {
            let base = src.path.parent().unwrap_or(Path::new("."));
            let dir_path = base.join(dir.get_ref());
            let entries = std::fs::read_dir(&dir_path).map_err(|e| {
                src.at(
                    dir,
                    format!("cannot read config_dir {}: {e}", dir_path.display()),
                    "config_dir is relative to the scenario file",
                )
            })?;
            let mut paths: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
            paths.sort();
            for p in paths {
                let Some(fname) = p.file_name().and_then(|f| f.to_str()).map(str::to_string) else {
                    continue;
                };
                let text = std::fs::read_to_string(&p).map_err(|e| {
                    src.at(dir, format!("cannot read {}: {e}", p.display()), "config files must be UTF-8 text")
                })?;
                check_placeholders_in_file(&p, &text, &host_names)?;
                files.insert(fname, text);
            }
        }
        let mut inline = |fname: &str, value: &Spanned<String>| -> Result<(), ScenarioError> {
            check_placeholders(src, value, &host_names)?;
            if files.insert(fname.to_string(), value.get_ref().clone()).is_some() && h.config_dir.is_some() {
                return Err(src.at(
                    value,
                    format!("`{fname}` of host `{hname}` is given both inline and in config_dir"),
                    "keep one of them",
                ));
            }
            Ok(())
        };
        if let Some(v) = &h.iax_conf {
            inline("iax.conf", v)?;
        }
        if let Some(v) = &h.extensions_conf {
            inline("extensions.conf", v)?;
        }
        if let Some(v) = &h.switch_toml {
            inline("switch.toml", v)?;
        }
        for (fname, v) in &h.files {
            inline(fname, v)?;
        }
        if !files.contains_key("iax.conf") {
            return Err(src.at(
                spanned,
                format!("host `{hname}` has no iax.conf"),
                "set iax_conf = \"\"\"...\"\"\" or config_dir = \"DIR\" holding iax.conf",
            ));
        }
        let behind = h.behind.as_ref().map(check_behind).transpose()?;
        hosts.push(HostSpec { name: hname.clone(), files, behind, ipv6: h.ipv6.unwrap_or(true) });
    }

    let known_host = |s: &Spanned<String>| -> Result<String, ScenarioError> {
        let n = s.get_ref();
        if host_names.contains(n) {
            Ok(n.clone())
        } else {
            Err(src.at(s, format!("unknown host `{n}`"), format!("hosts: {}", join(&host_names))))
        }
    };

    // Timeline.
    let mut timeline = Vec::new();
    let mut labels: BTreeSet<String> = BTreeSet::new();
    for spanned in &raw.timeline {
        let a = spanned.get_ref();
        let at = a.at.0;
        let aname = a.action.get_ref().as_str();
        if at > duration {
            return Err(src.at(
                spanned,
                format!(
                    "`{aname}` at {} is after the end of the scenario ({})",
                    fmt_duration(at),
                    fmt_duration(duration)
                ),
                "move it earlier or raise `duration`",
            ));
        }
        let label = match &a.label {
            Some(l) => {
                let t = l.get_ref().trim().to_string();
                if t.is_empty() || t.contains('+') || t == "start" {
                    return Err(src.at(
                        l,
                        format!("label `{t}` is not allowed"),
                        "labels are non-empty and contain no `+`; `start` is reserved",
                    ));
                }
                if !labels.insert(t.clone()) {
                    return Err(src.at(l, format!("label `{t}` is used twice"), "labels must be unique"));
                }
                Some(t)
            }
            None => None,
        };
        // Which optional keys each action takes.
        let used: &[&str] = match aname {
            "partition" | "heal" => &["between", "from", "to"],
            "crash" | "restart" | "reload" => &["host"],
            "set_link" => &["between", "latency", "jitter", "loss", "duplicate"],
            "set_config" => &["host", "iax_conf", "extensions_conf", "switch_toml", "files"],
            "command" => &["host", "line"],
            other => {
                return Err(src.at(
                    &a.action,
                    format!("unknown action `{other}`"),
                    "actions: partition, heal, crash, restart, set_link, set_config, reload, command",
                ))
            }
        };
        let present: [(&str, bool); 13] = [
            ("between", a.between.is_some()),
            ("from", a.from.is_some()),
            ("to", a.to.is_some()),
            ("host", a.host.is_some()),
            ("latency", a.latency.is_some()),
            ("jitter", a.jitter.is_some()),
            ("loss", a.loss.is_some()),
            ("duplicate", a.duplicate.is_some()),
            ("iax_conf", a.iax_conf.is_some()),
            ("extensions_conf", a.extensions_conf.is_some()),
            ("switch_toml", a.switch_toml.is_some()),
            ("files", a.files.is_some()),
            ("line", a.line.is_some()),
        ];
        for (key, is) in present {
            if is && !used.contains(&key) {
                return Err(src.at(
                    spanned,
                    format!("`{key}` does not apply to action `{aname}`"),
                    format!("`{aname}` takes: at, action, label, {}", used.join(", ")),
                ));
            }
        }
        let need_host = || -> Result<String, ScenarioError> {
            match &a.host {
                Some(h) => known_host(h),
                None => Err(src.at(spanned, format!("`{aname}` needs `host`"), "e.g. host = \"b\"")),
            }
        };
        let pair_of = |between: &Spanned<Vec<String>>| -> Result<(String, String), ScenarioError> {
            let v = between.get_ref();
            if v.len() != 2 || v[0] == v[1] {
                return Err(src.at(between, "`between` names two different hosts", "e.g. between = [\"a\", \"b\"]"));
            }
            for n in v {
                if !host_names.contains(n) {
                    return Err(src.at(
                        between,
                        format!("unknown host `{n}`"),
                        format!("hosts: {}", join(&host_names)),
                    ));
                }
            }
            Ok((v[0].clone(), v[1].clone()))
        };
        let action = match aname {
            "partition" | "heal" => {
                let (from, to, oneway) = match (&a.between, &a.from, &a.to) {
                    (Some(b), None, None) => {
                        let (x, y) = pair_of(b)?;
                        (x, y, false)
                    }
                    (None, Some(f), Some(t)) => {
                        let (x, y) = (known_host(f)?, known_host(t)?);
                        if x == y {
                            return Err(src.at(t, "`from` and `to` are the same host", "name two different hosts"));
                        }
                        (x, y, true)
                    }
                    _ => {
                        return Err(src.at(
                            spanned,
                            format!("`{aname}` needs either `between` (both directions) or `from` and `to` (one way)"),
                            "e.g. between = [\"a\", \"b\"]",
                        ))
                    }
                };
                if aname == "partition" {
                    Action::Partition { from, to, oneway }
                } else {
                    Action::Heal { from, to, oneway }
                }
            }
            "crash" => Action::Crash { host: need_host()? },
            "restart" => Action::Restart { host: need_host()? },
            "reload" => Action::Reload { host: need_host()? },
            "command" => {
                let host = need_host()?;
                let Some(line) = &a.line else {
                    return Err(src.at(
                        spanned,
                        "`command` needs `line`",
                        "e.g. line = \"originate IAX2/b/600 app=pattern count=10 hold=30\"",
                    ));
                };
                check_placeholders(src, line, &host_names)?;
                check_command(line.get_ref()).map_err(|(message, hint)| src.at(line, message, hint))?;
                Action::Command { host, line: line.get_ref().trim().to_string() }
            }
            "set_link" => {
                let between = a.between.as_ref().map(pair_of).transpose()?;
                let change = LinkChange {
                    latency: a.latency.map(|v| v.0),
                    jitter: a.jitter.map(|v| v.0),
                    loss: a.loss.map(|v| v.0),
                    duplicate: a.duplicate.map(|v| v.0),
                };
                if change == LinkChange::default() {
                    return Err(src.at(
                        spanned,
                        "`set_link` changes nothing",
                        "set latency, jitter, loss and/or duplicate",
                    ));
                }
                Action::SetLink { between, change }
            }
            _ => {
                // set_config
                let host = need_host()?;
                let mut files = BTreeMap::new();
                let mut add = |fname: &str, v: &Spanned<String>| -> Result<(), ScenarioError> {
                    check_placeholders(src, v, &host_names)?;
                    files.insert(fname.to_string(), v.get_ref().clone());
                    Ok(())
                };
                if let Some(v) = &a.iax_conf {
                    add("iax.conf", v)?;
                }
                if let Some(v) = &a.extensions_conf {
                    add("extensions.conf", v)?;
                }
                if let Some(v) = &a.switch_toml {
                    add("switch.toml", v)?;
                }
                for (fname, v) in a.files.iter().flatten() {
                    add(fname, v)?;
                }
                if files.is_empty() {
                    return Err(src.at(
                        spanned,
                        "`set_config` sets no file",
                        "set iax_conf, extensions_conf, switch_toml and/or files",
                    ));
                }
                Action::SetConfig { host, files }
            }
        };
        timeline.push(TimelineEntry { at, label, action });
    }
    timeline.sort_by_key(|e| e.at);

    // Expectations.
    let mut expectations = Vec::new();
    for spanned in &raw.expect {
        let e = spanned.get_ref();
        let kind = match e.kind.as_ref().map(|k| k.get_ref().as_str()) {
            None | Some("happens") => ExpectKind::Happens,
            Some("never") => ExpectKind::Never,
            Some("last") => ExpectKind::Last,
            Some("count") => ExpectKind::Count,
            Some("sum") => ExpectKind::Sum,
            Some("metric") => ExpectKind::Metric,
            Some(other) => {
                return Err(src.at(
                    e.kind.as_ref().unwrap_or_else(|| unreachable!()),
                    format!("unknown expectation kind `{other}`"),
                    "kinds: happens (default), never, last, count, sum, metric",
                ));
            }
        };
        // Which optional keys each kind takes (`description`, `kind` always apply).
        let allowed: &[&str] = match kind {
            ExpectKind::Happens => &["host", "event", "where", "after", "within", "at_least", "at_most"],
            ExpectKind::Never => &["host", "event", "where", "after", "within"],
            ExpectKind::Last => &["host", "event", "where", "is"],
            ExpectKind::Count => &["host", "event", "where", "after", "within", "value"],
            ExpectKind::Sum => &["host", "event", "where", "after", "within", "field", "value"],
            ExpectKind::Metric => &["metric", "host", "from", "to", "after", "within", "value", "tolerance"],
        };
        let present: [(&str, bool); 14] = [
            ("host", e.host.is_some()),
            ("event", e.event.is_some()),
            ("where", !e.filter.is_empty()),
            ("after", e.after.is_some()),
            ("within", e.within.is_some()),
            ("at_least", e.at_least.is_some()),
            ("at_most", e.at_most.is_some()),
            ("is", !e.is.is_empty()),
            ("field", e.field.is_some()),
            ("value", e.value.is_some()),
            ("tolerance", e.tolerance.is_some()),
            ("metric", e.metric.is_some()),
            ("from", e.from.is_some()),
            ("to", e.to.is_some()),
        ];
        for (key, is) in present {
            if is && !allowed.contains(&key) {
                let hint = match (kind, key) {
                    (ExpectKind::Last, "after" | "within" | "at_least" | "at_most") => {
                        "`last` looks at the end of the run; use kind = \"happens\" for windows and counts".to_string()
                    }
                    (_, "is") => "`is` only applies to kind = \"last\"; put field filters in `where`".to_string(),
                    (ExpectKind::Never, "at_least" | "at_most") => {
                        "`never` takes no counts; use kind = \"happens\" with at_most".to_string()
                    }
                    _ => format!("kind = \"{}\" takes: description, kind, {}", kind.name(), allowed.join(", ")),
                };
                return Err(src.at(spanned, format!("`{key}` does not apply to kind = \"{}\"", kind.name()), hint));
            }
        }
        let host = e.host.as_ref().map(known_host).transpose()?;
        let event = match (&e.event, kind) {
            (None, ExpectKind::Metric) => String::new(),
            (None, _) => {
                return Err(src.at(
                    spanned,
                    format!("kind = \"{}\" needs `event`", kind.name()),
                    "e.g. event = \"call_ended\"",
                ))
            }
            (Some(ev), _) => {
                let event = ev.get_ref().clone();
                if !SWITCH_EVENTS.contains(&event.as_str())
                    && !WORLD_EVENTS.contains(&event.as_str())
                    && !crate::actors::ACTOR_EVENTS.contains(&event.as_str())
                    && !NAT_EVENTS.contains(&event.as_str())
                {
                    return Err(src.at(
                        ev,
                        format!("unknown event `{event}`"),
                        format!(
                            "switch events: {}; simulator events: {}",
                            SWITCH_EVENTS.join(", "),
                            WORLD_EVENTS.join(", ")
                        ),
                    ));
                }
                event
            }
        };
        let after = match &e.after {
            None => Anchor { label: None, offset: Duration::ZERO },
            Some(s) => {
                let text = s.get_ref().trim();
                let (label, offset) = match text.split_once('+') {
                    Some((l, o)) => {
                        let off =
                            crate::units::parse_duration(o).map_err(|m| src.at(s, m, "e.g. after = \"heal+5s\""))?;
                        (l.trim(), off)
                    }
                    None => (text, Duration::ZERO),
                };
                if label == "start" {
                    Anchor { label: None, offset }
                } else if labels.contains(label) {
                    Anchor { label: Some(label.to_string()), offset }
                } else {
                    return Err(src.at(
                        s,
                        format!("`after` names no timeline label `{label}`"),
                        format!(
                            "use `start` or a label: {}",
                            if labels.is_empty() { "(none defined)".into() } else { join(&labels) }
                        ),
                    ));
                }
            }
        };
        let filter = field_tests(src, &e.filter, &host_names)?;
        let is = field_tests(src, &e.is, &host_names)?;
        if kind == ExpectKind::Last && is.is_empty() {
            return Err(src.at(spanned, "a `last` expectation needs `is`", "e.g. is = { to = \"OK\" }"));
        }
        let at_least = e.at_least.unwrap_or(1);
        if let Some(most) = e.at_most {
            if most < at_least && e.at_least.is_some() {
                return Err(src.at(
                    spanned,
                    format!("at_most = {most} is below at_least = {at_least}"),
                    "fix the bounds",
                ));
            }
        }
        let at_least = if e.at_most.is_some() && e.at_least.is_none() { 0 } else { at_least };
        let value = match &e.value {
            Some(v) => value_tests(src, v)?,
            None => Vec::new(),
        };
        if matches!(kind, ExpectKind::Count | ExpectKind::Sum) && value.is_empty() {
            return Err(src.at(
                spanned,
                format!("kind = \"{}\" needs `value`", kind.name()),
                "e.g. value = 800 or value = { ge = 798, le = 800 }",
            ));
        }
        let fields = match &e.field {
            None if kind == ExpectKind::Sum => {
                return Err(src.at(spanned, "kind = \"sum\" needs `field`", "e.g. field = [\"lost\", \"reordered\"]"))
            }
            None => Vec::new(),
            Some(f) => {
                let list = match f.get_ref() {
                    RawFields::One(s) => vec![s.clone()],
                    RawFields::Many(v) => v.clone(),
                };
                if list.is_empty() || list.iter().any(|s| s.trim_start_matches('-').trim().is_empty()) {
                    return Err(src.at(f, "`field` names no field", "e.g. field = \"lost\""));
                }
                list
            }
        };
        let tolerance = e.tolerance.as_ref().map(|t| t.get_ref().0);
        let metric = match &e.metric {
            None if kind == ExpectKind::Metric => {
                return Err(src.at(
                    spanned,
                    "kind = \"metric\" needs `metric`",
                    format!("metrics: {}", METRICS.join(", ")),
                ))
            }
            None => None,
            Some(m) => {
                let name = m.get_ref().trim().to_string();
                if !METRICS.contains(&name.as_str()) {
                    return Err(src.at(
                        m,
                        format!("unknown metric `{name}`"),
                        format!("metrics: {}", METRICS.join(", ")),
                    ));
                }
                if value.is_empty() && tolerance.is_none() {
                    return Err(src.at(
                        spanned,
                        "a metric expectation needs `value` and/or `tolerance`",
                        "e.g. value = { le = 100 }, or tolerance = \"5%\" to compare with the expected value",
                    ));
                }
                let from = e.from.as_ref().map(known_host).transpose()?;
                let to = e.to.as_ref().map(known_host).transpose()?;
                let link_metric = name != "max_backlog";
                let needs_link = matches!(
                    name.as_str(),
                    "trunk_datagrams_per_tick" | "wire_bytes_per_second" | "datagrams_per_second"
                );
                if needs_link && (from.is_none() || to.is_none()) {
                    return Err(src.at(
                        spanned,
                        format!("metric `{name}` needs `from` and `to`"),
                        "e.g. from = \"a\", to = \"b\" (the sending and the receiving host)",
                    ));
                }
                if from.is_some() && from == to {
                    return Err(src.at(spanned, "`from` and `to` are the same host", "name two different hosts"));
                }
                if !link_metric && host.is_none() {
                    return Err(src.at(spanned, format!("metric `{name}` needs `host`"), "e.g. host = \"b\""));
                }
                if link_metric && host.is_some() {
                    return Err(src.at(
                        spanned,
                        format!("metric `{name}` is about a link: use `from` and `to`, not `host`"),
                        "e.g. from = \"a\", to = \"b\"",
                    ));
                }
                if !link_metric && (from.is_some() || to.is_some()) {
                    return Err(src.at(
                        spanned,
                        format!("metric `{name}` is about a host: use `host`, not `from`/`to`"),
                        "e.g. host = \"b\"",
                    ));
                }
                if tolerance.is_some() && !matches!(name.as_str(), "trunk_datagrams_per_tick" | "wire_bytes_per_second")
                {
                    return Err(src.at(
                        spanned,
                        format!("metric `{name}` has no expected value to compare with: use `value`"),
                        "tolerance applies to trunk_datagrams_per_tick and wire_bytes_per_second",
                    ));
                }
                Some(MetricSpec { name, from, to, host: if link_metric { None } else { host.clone() } })
            }
        };
        expectations.push(Expectation {
            description: e.description.clone(),
            kind,
            host: if kind == ExpectKind::Metric { None } else { host },
            event,
            filter,
            after,
            within: e.within.map(|v| v.0),
            at_least,
            at_most: e.at_most,
            is,
            fields,
            value,
            tolerance,
            metric,
        });
    }

    Ok(Scenario {
        name,
        description: raw.description.trim().to_string(),
        path: src.path.to_path_buf(),
        duration,
        networks,
        link,
        capture,
        hosts,
        nats,
        actors,
        timeline,
        expectations,
    })
}

/// Refuses command lines the control socket would not understand, so a typo
/// fails at load time; `originate` lines without placeholders are parsed.
fn check_command(line: &str) -> Result<(), (String, String)> {
    let words: Vec<String> = line.split_whitespace().map(str::to_ascii_lowercase).collect();
    let joined = words.join(" ");
    if words.first().map(String::as_str) == Some("originate") {
        if line.contains("${") {
            return Ok(());
        }
        return switch::control::parse_originate(line.trim()).map(|_| ()).map_err(|e| {
            (
                format!("`{}`: {e}", line.trim()),
                "e.g. line = \"originate IAX2/b/600 app=pattern count=10 hold=30\"".to_string(),
            )
        });
    }
    if switch::control::COMMANDS.contains(&joined.as_str()) {
        return Ok(());
    }
    Err((
        format!("unknown operator command `{}`", line.trim()),
        format!(
            "commands: originate DIAL [app=APP] [count=N] [hold=SECONDS], {}",
            switch::control::COMMANDS.join(", ")
        ),
    ))
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().map(String::as_str).collect::<Vec<_>>().join(", ")
}

fn field_tests(
    src: &Source<'_>,
    table: &BTreeMap<String, Spanned<toml::Value>>,
    hosts: &BTreeSet<String>,
) -> Result<Vec<FieldTest>, ScenarioError> {
    let mut out = Vec::new();
    for (field, spanned) in table {
        if field == "event" || field == "host" || field == "t_ms" {
            return Err(src.at(
                spanned,
                format!("`{field}` cannot be filtered here"),
                "use the expectation's own `event` / `host` keys",
            ));
        }
        let scalar = |v: &toml::Value| -> Result<MatchValue, ScenarioError> {
            match v {
                toml::Value::String(s) => {
                    if let Err((_, m)) = placeholders(s, hosts) {
                        return Err(src.at(spanned, m, PLACEHOLDER_HINT));
                    }
                    Ok(MatchValue::Str(s.clone()))
                }
                toml::Value::Integer(i) => Ok(MatchValue::Num(*i as f64)),
                toml::Value::Float(f) => Ok(MatchValue::Num(*f)),
                toml::Value::Boolean(b) => Ok(MatchValue::Bool(*b)),
                _ => Err(src.at(spanned, format!("`{field}`: compare with a string, number or boolean"), FILTER_HINT)),
            }
        };
        match spanned.get_ref() {
            toml::Value::Table(ops) => {
                if ops.is_empty() {
                    return Err(src.at(spanned, format!("`{field}`: empty comparison"), FILTER_HINT));
                }
                for (op, v) in ops {
                    let op = match op.as_str() {
                        "eq" => Op::Eq,
                        "ne" => Op::Ne,
                        "gt" => Op::Gt,
                        "ge" => Op::Ge,
                        "lt" => Op::Lt,
                        "le" => Op::Le,
                        "contains" => Op::Contains,
                        "present" => Op::Present,
                        other => {
                            return Err(src.at(
                                spanned,
                                format!("`{field}`: unknown comparison `{other}`"),
                                FILTER_HINT,
                            ))
                        }
                    };
                    let value = scalar(v)?;
                    let ok = match op {
                        Op::Gt | Op::Ge | Op::Lt | Op::Le => matches!(value, MatchValue::Num(_)),
                        Op::Contains => matches!(value, MatchValue::Str(_)),
                        Op::Present => matches!(value, MatchValue::Bool(_)),
                        Op::Eq | Op::Ne => true,
                    };
                    if !ok {
                        return Err(src.at(spanned, format!("`{field}`: wrong value type for `{op:?}`"), FILTER_HINT));
                    }
                    out.push(FieldTest { field: field.clone(), op, value });
                }
            }
            v => out.push(FieldTest { field: field.clone(), op: Op::Eq, value: scalar(v)? }),
        }
    }
    Ok(out)
}

/// `value = 800` or `value = { ge = 798, le = 800 }`: numeric tests of a result.
fn value_tests(src: &Source<'_>, spanned: &Spanned<toml::Value>) -> Result<Vec<(Op, f64)>, ScenarioError> {
    const HINT: &str = "value = NUMBER, or value = { eq|ne|gt|ge|lt|le = NUMBER, ... }";
    let number = |v: &toml::Value| match v {
        toml::Value::Integer(i) => Some(*i as f64),
        toml::Value::Float(f) => Some(*f),
        _ => None,
    };
    match spanned.get_ref() {
        toml::Value::Table(ops) => {
            if ops.is_empty() {
                return Err(src.at(spanned, "`value`: empty comparison", HINT));
            }
            let mut out = Vec::new();
            for (op, v) in ops {
                let op = match op.as_str() {
                    "eq" => Op::Eq,
                    "ne" => Op::Ne,
                    "gt" => Op::Gt,
                    "ge" => Op::Ge,
                    "lt" => Op::Lt,
                    "le" => Op::Le,
                    other => return Err(src.at(spanned, format!("`value`: unknown comparison `{other}`"), HINT)),
                };
                let n = number(v).ok_or_else(|| src.at(spanned, "`value`: compare with a number", HINT))?;
                out.push((op, n));
            }
            Ok(out)
        }
        v => match number(v) {
            Some(n) => Ok(vec![(Op::Eq, n)]),
            None => Err(src.at(spanned, "`value` is a number or a table of comparisons", HINT)),
        },
    }
}

const FILTER_HINT: &str = "filters: field = value, or field = { eq|ne = value, gt|ge|lt|le = number, contains = \"text\", present = true|false }";
const PLACEHOLDER_HINT: &str =
    "placeholders: ${HOST} (address), ${[HOST]} (address, bracketed if IPv6), ${self}, ${[self]}, ${any} (wildcard); $${ is a literal ${";

/// One placeholder use: byte offset of `${` and the inside text.
type PlaceholderUse = (usize, String);

/// Finds placeholders in `text`; errors carry the byte offset and a message.
fn placeholders(text: &str, hosts: &BTreeSet<String>) -> Result<Vec<PlaceholderUse>, (usize, String)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes[i + 1] == b'$' && bytes.get(i + 2) == Some(&b'{') {
            i += 3;
            continue;
        }
        if bytes[i] == b'$' && bytes[i + 1] == b'{' {
            let Some(end) = text[i + 2..].find('}') else {
                return Err((i, "unterminated placeholder `${`".into()));
            };
            let inner = &text[i + 2..i + 2 + end];
            let name = inner.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(inner);
            if !(name == "self" || name == "any" || hosts.contains(name)) || (inner.starts_with('[') && name == "any") {
                return Err((i, format!("unknown placeholder `${{{inner}}}` (hosts: {})", join(hosts))));
            }
            out.push((i, inner.to_string()));
            i += 3 + end;
            continue;
        }
        i += 1;
    }
    Ok(out)
}

fn check_placeholders(
    src: &Source<'_>,
    value: &Spanned<String>,
    hosts: &BTreeSet<String>,
) -> Result<(), ScenarioError> {
    placeholders(value.get_ref(), hosts).map(|_| ()).map_err(|(offset, message)| {
        let span = value.span();
        let line = src.line_in_string(&span, value.get_ref(), offset);
        ScenarioError {
            path: src.path.to_path_buf(),
            line: Some(line),
            column: None,
            message,
            hint: PLACEHOLDER_HINT.into(),
        }
    })
}

fn check_placeholders_in_file(path: &Path, text: &str, hosts: &BTreeSet<String>) -> Result<(), ScenarioError> {
    placeholders(text, hosts).map(|_| ()).map_err(|(offset, message)| {
        let (line, column) = Source { path, text }.line_col(offset);
        ScenarioError {
            path: path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message,
            hint: PLACEHOLDER_HINT.into(),
        }
    })
}

/// Addresses placeholders expand to in one run.
#[derive(Clone, Debug)]
pub(crate) struct Addresses {
    pub network: Network,
    pub ips: BTreeMap<String, IpAddr>,
}

impl Addresses {
    /// Expands placeholders in `text` as seen from host `me` (`None`: no `${self}`).
    pub fn expand(&self, text: &str, me: Option<&str>) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let tail = &rest[pos..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
            } else if let Some(after) = tail.strip_prefix("${") {
                let end = after.find('}').ok_or_else(|| "unterminated placeholder `${`".to_string())?;
                let inner = &after[..end];
                let (bracket, name) = match inner.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
                    Some(n) => (true, n),
                    None => (false, inner),
                };
                let ip = match name {
                    "any" => match self.network {
                        Network::V4 => IpAddr::from([0, 0, 0, 0]),
                        Network::V6 => IpAddr::from([0u16; 8]),
                    },
                    "self" => {
                        let me = me.ok_or_else(|| "`${self}` has no meaning here".to_string())?;
                        *self.ips.get(me).ok_or_else(|| format!("no address for host `{me}`"))?
                    }
                    host => *self.ips.get(host).ok_or_else(|| format!("unknown placeholder `${{{inner}}}`"))?,
                };
                match (bracket, ip) {
                    (true, IpAddr::V6(v6)) => out.push_str(&format!("[{v6}]")),
                    (_, ip) => out.push_str(&ip.to_string()),
                }
                rest = &after[end + 1..];
            } else {
                out.push('$');
                rest = &tail[1..];
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(network: Network) -> Addresses {
        let (a, b): (IpAddr, IpAddr) = match network {
            Network::V4 => ("192.168.0.1".parse().unwrap(), "192.168.0.2".parse().unwrap()),
            Network::V6 => ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap()),
        };
        Addresses { network, ips: [("a".to_string(), a), ("b".to_string(), b)].into_iter().collect() }
    }

    #[test]
    fn placeholders_expand_per_network() {
        let text = "bindaddr = ${any}\nregister => A:s@${[b]}:4569\npermit=${b}\nme=${self} ${[self]} $${b}";
        assert_eq!(
            addrs(Network::V4).expand(text, Some("a")).unwrap(),
            "bindaddr = 0.0.0.0\nregister => A:s@192.168.0.2:4569\npermit=192.168.0.2\nme=192.168.0.1 192.168.0.1 ${b}"
        );
        assert_eq!(
            addrs(Network::V6).expand(text, Some("a")).unwrap(),
            "bindaddr = ::\nregister => A:s@[fe80::2]:4569\npermit=fe80::2\nme=fe80::1 [fe80::1] ${b}"
        );
        assert!(addrs(Network::V4).expand("${c}", None).is_err());
        assert!(addrs(Network::V4).expand("${self}", None).is_err());
    }

    /// One of every `switch::event::Event`. The match below is exhaustive, so a
    /// new variant stops this test from compiling until SWITCH_EVENTS and
    /// docs/scenarios.md know it.
    fn every_event() -> Vec<switch::event::Event> {
        use switch::event::{Event, PeerState};
        let addr: std::net::SocketAddr = "192.0.2.1:4569".parse().unwrap();
        let s = String::new;
        let all = vec![
            Event::Started { bind: addr },
            Event::ConfigLoaded { peers: 0, registrations: 0, problems: 0 },
            Event::ConfigRejected { error: s() },
            Event::RegistrationSent { server: s(), username: s(), attempt: 0 },
            Event::Registered { server: s(), username: s(), refresh: 0 },
            Event::RegistrationRejected { server: s(), username: s(), cause: s() },
            Event::RegistrationTimeout { server: s(), username: s(), retry_in_ms: 0 },
            Event::PeerRegistered { peer: s(), addr, expiry: 0 },
            Event::PeerRegistrationRefused { peer: s(), addr, cause: s() },
            Event::PeerUnregistered { peer: s(), reason: s() },
            Event::PeerRestored { peer: s(), addr, remaining_s: 0 },
            Event::PeerStateChanged { peer: s(), from: PeerState::Unknown, to: PeerState::Ok, latency_ms: None },
            Event::CallStarted { call: 1, direction: s(), peer: s(), exten: s(), context: s(), caller: s() },
            Event::CallAnswered { call: 1, format: s(), encrypted: false },
            Event::CallRejected { call: 1, direction: s(), peer: s(), exten: s(), cause: s(), code: 0 },
            Event::CallEnded {
                call: 1,
                direction: s(),
                peer: s(),
                cause: s(),
                code: 0,
                duration_ms: 0,
                frames_sent: 0,
                frames_received: 0,
                lost: 0,
                reordered: 0,
                duplicated: 0,
                late: 0,
                concealed: 0,
                jitter_ms: 0,
                ts_irregular: 0,
            },
            Event::Dtmf { call: 1, digit: s() },
            Event::SipRegistered { user: s(), contact: s(), addr, expires: 0 },
            Event::SipRegistrationRefused { user: s(), addr, status: 0, reason: s() },
            Event::SipAuthFailed { method: s(), user: s(), addr, status: 0 },
            Event::SipUnregistered { user: s(), reason: s() },
            Event::SipCallStarted { call: 1, user: s(), exten: s(), context: s(), caller: s() },
            Event::SipCallAnswered { call: 1, codec: s() },
            Event::SipCallRejected { call: 1, exten: s(), status: 0, reason: s() },
            Event::SipCallEnded {
                call: 1,
                cause: s(),
                duration_ms: 0,
                packets_sent: 0,
                packets_received: 0,
                lost: 0,
                duplicated: 0,
                jitter_ms: 0,
                pattern_lost: 0,
            },
            Event::SipDtmf { call: 1, digit: s() },
            Event::SipGatewayRegistered { gateway: s(), expires: 0 },
            Event::SipGatewayRefused { gateway: s(), status: 0, retry_in_ms: 0 },
            Event::SipGatewayTimeout { gateway: s(), retry_in_ms: 0 },
            Event::SipNatDetected { user: s(), contact: s(), source: addr },
            Event::RtpSourceLearned { call: 1, source: addr },
            Event::RtpSourceRefused { call: 1, source: addr, packets: 0 },
            Event::RtpPortUnavailable { port: 0, reason: s() },
            Event::SipOverloadStarted { reason: s(), transactions: 0, bytes: 0 },
            Event::SipOverloadEnded { duration_ms: 0, refused_register: 0, refused_invite: 0, shed: 0 },
            Event::DatagramDropped { from: addr, reason: s() },
            Event::DatagramsDropped { reason: s(), count: 0, for_ms: 0, first: None, sources: 0, top: Vec::new() },
            Event::CallTokenRequired { from: addr },
            Event::AuthThrottled { protocol: s(), scope: s(), source: addr.ip(), user: s(), failures: 0, for_ms: 0 },
            Event::SourceBanned { protocol: s(), source: addr.ip(), failures: 0, for_ms: 0 },
            Event::SourceUnbanned { protocol: s(), source: addr.ip(), reason: s() },
            Event::ListenerFallback { listener: s(), requested: addr, bound: addr, error: s() },
        ];
        for e in &all {
            match e {
                Event::Started { .. }
                | Event::ConfigLoaded { .. }
                | Event::ConfigRejected { .. }
                | Event::RegistrationSent { .. }
                | Event::Registered { .. }
                | Event::RegistrationRejected { .. }
                | Event::RegistrationTimeout { .. }
                | Event::PeerRegistered { .. }
                | Event::PeerRegistrationRefused { .. }
                | Event::PeerUnregistered { .. }
                | Event::PeerRestored { .. }
                | Event::PeerStateChanged { .. }
                | Event::CallStarted { .. }
                | Event::CallAnswered { .. }
                | Event::CallRejected { .. }
                | Event::CallEnded { .. }
                | Event::Dtmf { .. }
                | Event::SipRegistered { .. }
                | Event::SipRegistrationRefused { .. }
                | Event::SipAuthFailed { .. }
                | Event::SipUnregistered { .. }
                | Event::SipCallStarted { .. }
                | Event::SipCallAnswered { .. }
                | Event::SipCallRejected { .. }
                | Event::SipCallEnded { .. }
                | Event::SipDtmf { .. }
                | Event::SipGatewayRegistered { .. }
                | Event::SipGatewayRefused { .. }
                | Event::SipGatewayTimeout { .. }
                | Event::SipNatDetected { .. }
                | Event::RtpSourceLearned { .. }
                | Event::RtpSourceRefused { .. }
                | Event::RtpPortUnavailable { .. }
                | Event::SipOverloadStarted { .. }
                | Event::SipOverloadEnded { .. }
                | Event::DatagramDropped { .. }
                | Event::DatagramsDropped { .. }
                | Event::CallTokenRequired { .. }
                | Event::AuthThrottled { .. }
                | Event::SourceBanned { .. }
                | Event::SourceUnbanned { .. }
                | Event::ListenerFallback { .. } => {}
            }
        }
        all
    }

    #[test]
    fn switch_events_are_in_step_with_the_switch() {
        let names: Vec<&str> = every_event().iter().map(|e| e.name()).collect();
        assert_eq!(names, SWITCH_EVENTS, "SWITCH_EVENTS lists switch::event::Event's names in declaration order");
        let docs = include_str!("../../docs/scenarios.md");
        for name in SWITCH_EVENTS.iter().chain(WORLD_EVENTS).chain(NAT_EVENTS).chain(crate::actors::ACTOR_EVENTS) {
            assert!(docs.contains(&format!("| `{name}`")), "docs/scenarios.md does not describe event `{name}`");
        }
        for metric in METRICS {
            assert!(docs.contains(&format!("`{metric}`")), "docs/scenarios.md does not describe metric `{metric}`");
        }
    }

    #[test]
    fn placeholder_validation() {
        let hosts: BTreeSet<String> = ["a".to_string(), "b".to_string()].into_iter().collect();
        assert_eq!(placeholders("x ${a} ${[b]} ${any} ${self} $${zz}", &hosts).unwrap().len(), 4);
        assert_eq!(placeholders("ok\n${c}", &hosts).unwrap_err().0, 3);
        assert!(placeholders("${a", &hosts).is_err());
        assert!(placeholders("${[any]}", &hosts).is_err());
    }
}

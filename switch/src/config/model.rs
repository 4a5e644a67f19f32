//! The typed configuration the protocol cores consume.
//!
//! Parsers (`iax_conf`, `switch_toml`) turn files into these types; nothing
//! downstream ever sees raw text. Defaults follow Asterisk's chan_iax2.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Where a setting came from, for messages an operator can act on.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub file: String,
    pub line: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// A note's hint with the other places it applies to appended ("also at
/// iax.conf:3, iax.conf:9 and 4 more"), so a note repeated on many lines is
/// reported once.
pub(crate) fn hint_with_also(hint: &str, also: &[Location]) -> String {
    if also.is_empty() {
        return hint.to_string();
    }
    let shown: Vec<String> = also.iter().take(5).map(ToString::to_string).collect();
    let more = also.len().saturating_sub(5);
    let mut text = format!("also at {}", shown.join(", "));
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    if hint.is_empty() {
        text
    } else {
        format!("{hint}; {text}")
    }
}

/// Everything the IAX2 side of the switch is configured with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IaxConfig {
    pub general: General,
    /// Users, peers and friends, in file order. A `type=friend` section is one entry.
    pub peers: Vec<PeerConfig>,
    /// `register =>` lines, in file order.
    pub registrations: Vec<RegisterLine>,
    /// `[callnumberlimits]`: per-address limits on call numbers.
    pub callnumberlimits: Vec<(IpNet, u16)>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct General {
    /// `bindaddr` (with `bindport` applied); default `127.0.0.1:4569` (Asterisk's
    /// is `0.0.0.0`: binding every address must be written down here).
    pub bind: SocketAddr,
    pub delayreject: bool,
    pub minregexpire: u32,
    pub maxregexpire: u32,
    /// `calltokenoptional`: sources that may skip call-token validation.
    pub calltokenoptional: Vec<IpNet>,
    /// `calltokenexpiration`: how long an issued token stays valid.
    pub calltokenexpiration: Duration,
    /// `maxcallnumbers`: call numbers one validated source address may hold.
    pub maxcallnumbers: u16,
    /// `maxcallnumbers_nonvalidated`: call numbers all unvalidated sources may hold together.
    pub maxcallnumbers_nonvalidated: u16,
    /// `autokill`: `None` = off; `yes` = 2000 ms.
    pub autokill: Option<Duration>,
    pub authdebug: bool,
    pub trunkfreq: Duration,
    /// `natkeepalive` (this switch's own option): when a REGACK shows that a
    /// `register =>` line goes through NAT, a POKE to the server this often
    /// keeps the binding open between refreshes; `None` (0) turns it off.
    pub natkeepalive: Option<Duration>,
    pub trunkmtu: u16,
    pub trunkmaxsize: u32,
    pub trunktimestamps: bool,
    pub jitterbuffer: bool,
    pub maxjitterbuffer: u32,
    pub resyncthreshold: i32,
    pub maxjitterinterps: u32,
    pub jittertargetextra: u32,
    pub encryption: bool,
    pub forceencryption: bool,
    pub codecs: CodecPrefs,
    pub codecpriority: CodecPriority,
    pub language: Option<String>,
    pub defaults: PeerDefaults,
}

impl Default for General {
    fn default() -> Self {
        General {
            bind: SocketAddr::from(([127, 0, 0, 1], 4569)),
            delayreject: false,
            minregexpire: 60,
            maxregexpire: 60,
            calltokenoptional: Vec::new(),
            calltokenexpiration: Duration::from_secs(10),
            maxcallnumbers: 2048,
            maxcallnumbers_nonvalidated: 8192,
            autokill: None,
            authdebug: false,
            trunkfreq: Duration::from_millis(20),
            natkeepalive: Some(Duration::from_secs(20)),
            trunkmtu: 1240,
            trunkmaxsize: 128_000,
            trunktimestamps: false,
            jitterbuffer: false,
            maxjitterbuffer: 1000,
            resyncthreshold: 1000,
            maxjitterinterps: 10,
            jittertargetextra: 40,
            encryption: false,
            forceencryption: false,
            codecs: CodecPrefs::default(),
            codecpriority: CodecPriority::Host,
            language: None,
            defaults: PeerDefaults::default(),
        }
    }
}

/// Options that may be set in `[general]` and overridden per peer.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerDefaults {
    pub requirecalltoken: CallTokenRequirement,
    pub qualify: Qualify,
    pub qualifysmoothing: bool,
    pub qualifyfreqok: Duration,
    pub qualifyfreqnotok: Duration,
    pub context: String,
    pub trunk: bool,
    /// `maxauthreq`: calls of one user waiting for authentication at once (0: no limit).
    pub maxauthreq: u16,
}

impl Default for PeerDefaults {
    fn default() -> Self {
        PeerDefaults {
            requirecalltoken: CallTokenRequirement::Yes,
            qualify: Qualify::Off,
            qualifysmoothing: false,
            qualifyfreqok: Duration::from_millis(60_000),
            qualifyfreqnotok: Duration::from_millis(10_000),
            context: "default".to_string(),
            trunk: false,
            maxauthreq: 3,
        }
    }
}

/// `type=` of a section.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerKind {
    /// Accepts calls and registrations from the remote side.
    User,
    /// A remote side we call or qualify; may register to us when `host=dynamic`.
    Peer,
    /// Both.
    Friend,
}

impl PeerKind {
    pub fn is_peer(self) -> bool {
        matches!(self, PeerKind::Peer | PeerKind::Friend)
    }
    pub fn is_user(self) -> bool {
        matches!(self, PeerKind::User | PeerKind::Friend)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// `host=dynamic`: the address is learned from REGREQ.
    Dynamic { defaultip: Option<IpAddr> },
    /// A fixed host name or address literal, resolved by the runtime.
    Static(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallTokenRequirement {
    Yes,
    No,
    /// Require a token once the peer has shown it supports them.
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Qualify {
    Off,
    /// Qualify; a PONG slower than this many milliseconds makes the peer LAGGED.
    MaxMs(u32),
}

/// `auth=` methods accepted from (or offered to) a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AuthMethods {
    pub plaintext: bool,
    pub md5: bool,
    pub rsa: bool,
}

impl AuthMethods {
    /// The IE 0x0e bitmask: 0x01 plaintext, 0x02 md5, 0x04 rsa.
    pub fn bits(self) -> u16 {
        (self.plaintext as u16) | (self.md5 as u16) << 1 | (self.rsa as u16) << 2
    }
    pub fn from_bits(bits: u16) -> Self {
        AuthMethods { plaintext: bits & 1 != 0, md5: bits & 2 != 0, rsa: bits & 4 != 0 }
    }
}

impl Default for AuthMethods {
    fn default() -> Self {
        AuthMethods { plaintext: false, md5: true, rsa: false }
    }
}

/// One user/peer/friend section.
#[derive(Clone, Debug, PartialEq)]
pub struct PeerConfig {
    pub name: String,
    pub kind: PeerKind,
    pub location: Location,
    /// Every `secret=` line; any of them is accepted.
    pub secrets: Vec<String>,
    pub auth: AuthMethods,
    pub username: Option<String>,
    pub host: Host,
    pub port: u16,
    pub acl: Acl,
    pub context: String,
    pub trunk: bool,
    pub requirecalltoken: CallTokenRequirement,
    pub qualify: Qualify,
    pub qualifysmoothing: bool,
    pub qualifyfreqok: Duration,
    pub qualifyfreqnotok: Duration,
    pub callerid: Option<String>,
    pub description: Option<String>,
    pub encryption: bool,
    pub codecs: Option<CodecPrefs>,
    pub jitterbuffer: Option<bool>,
    /// Every context a caller of this user may ask for (`context=` lines in order);
    /// never empty, and `contexts[0] == context`.
    pub contexts: Vec<String>,
    /// `callerid=` split as Asterisk does (`"Name" <number>`), or `fullname=` / `cid_number=`.
    pub callerid_name: Option<String>,
    pub callerid_number: Option<String>,
    /// `forceencryption`: refuse unencrypted calls (implies `encryption`).
    pub forceencryption: bool,
    /// `codecpriority`, defaulting to `[general]`'s.
    pub codecpriority: CodecPriority,
    /// `language`, defaulting to `[general]`'s.
    pub language: Option<String>,
    /// `maxcallnumbers` for this peer's address, overriding `[general]`'s.
    pub maxcallnumbers: Option<u16>,
    /// `maxauthreq`: as a user, calls of this user waiting for authentication
    /// at once (more are rejected, as chan_iax2 does); as a peer, how many of
    /// our calls to it may be in setup at once (the rest wait). 0: no limit.
    pub maxauthreq: u16,
}

impl PeerConfig {
    /// Calls to this peer travel in meta trunk frames: `trunk=yes` and not
    /// encrypted (trunk frames are never encrypted, so encrypted calls go untrunked).
    pub fn trunked(&self) -> bool {
        self.trunk && !(self.encryption || self.forceencryption)
    }

    /// A section with nothing set: every option at its `[general]` default.
    /// `host` starts as `dynamic` with no default address (what a `type=user` without
    /// `host=` means: calls are accepted from any address its ACL permits).
    pub fn new(name: &str, kind: PeerKind, location: Location, general: &General) -> Self {
        let d = &general.defaults;
        PeerConfig {
            name: name.to_string(),
            kind,
            location,
            secrets: Vec::new(),
            auth: AuthMethods::default(),
            username: None,
            host: Host::Dynamic { defaultip: None },
            port: 4569,
            acl: Acl::default(),
            context: d.context.clone(),
            trunk: d.trunk,
            requirecalltoken: d.requirecalltoken,
            qualify: d.qualify,
            qualifysmoothing: d.qualifysmoothing,
            qualifyfreqok: d.qualifyfreqok,
            qualifyfreqnotok: d.qualifyfreqnotok,
            callerid: None,
            description: None,
            encryption: general.encryption,
            codecs: None,
            jitterbuffer: None,
            contexts: vec![d.context.clone()],
            callerid_name: None,
            callerid_number: None,
            forceencryption: general.forceencryption,
            codecpriority: general.codecpriority,
            language: general.language.clone(),
            maxcallnumbers: None,
            maxauthreq: d.maxauthreq,
        }
    }
}

/// `register => user[:secret]@host[:port]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RegisterLine {
    pub username: String,
    pub secret: Option<String>,
    pub host: String,
    pub port: u16,
    pub location: Location,
}

/// An IPv4 or IPv6 network (`addr/mask` or `addr/prefix`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl IpNet {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix as u32).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix as u32).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) compare as IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// `permit=`/`deny=` rules in file order; as in Asterisk, the last matching rule wins
/// and an address no rule matches is permitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    pub rules: Vec<AclRule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AclRule {
    pub permit: bool,
    pub net: IpNet,
}

impl Acl {
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.rules.iter().rev().find(|r| r.net.contains(ip)).is_none_or(|r| r.permit)
    }
}

/// `allow=`/`disallow=` applied in order to the codecs we know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodecPrefs {
    /// Allowed codecs, in preference order (names as in Asterisk: ulaw, alaw, gsm, ...).
    pub allowed: Vec<String>,
}

impl Default for CodecPrefs {
    fn default() -> Self {
        CodecPrefs { allowed: vec!["ulaw".into(), "alaw".into(), "gsm".into()] }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodecPriority {
    Caller,
    Host,
    Disabled,
    ReqOnly,
}

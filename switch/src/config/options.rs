//! The table of `iax.conf` options this switch knows: the single source of truth
//! for which keys are accepted where, and which of them only earn a note.
//!
//! Every option `chan_iax2` documents is listed. `Supported` options are mapped
//! into [`crate::config::model`]; `Unsupported` ones are recognised, have no
//! effect, and are reported once per load as a note. A key that is not in this
//! table is an error.

/// Where an option may appear.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Only in `[general]`.
    General,
    /// Only in a user/peer/friend section (or a template for one).
    Peer,
    /// In `[general]` (as the default) and in user/peer/friend sections.
    Both,
}

impl Scope {
    pub fn allows_general(self) -> bool {
        matches!(self, Scope::General | Scope::Both)
    }
    pub fn allows_peer(self) -> bool {
        matches!(self, Scope::Peer | Scope::Both)
    }
}

/// Whether the switch acts on an option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    /// Parsed, validated and mapped into the model.
    Supported,
    /// Recognised; has no effect; reported once as a note.
    Unsupported,
}

/// One row of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OptionSpec {
    /// The key, lower case (keys are case-insensitive as in Asterisk).
    pub name: &'static str,
    pub scope: Scope,
    pub support: Support,
    /// What it does (supported) or why it has no effect here (unsupported).
    pub about: &'static str,
}

use Scope::{Both, General, Peer};
use Support::{Supported, Unsupported};

const fn opt(name: &'static str, scope: Scope, support: Support, about: &'static str) -> OptionSpec {
    OptionSpec { name, scope, support, about }
}

/// Every option of `iax.conf`, grouped as in Asterisk's sample file.
pub const OPTIONS: &[OptionSpec] = &[
    // --- [general]: network --------------------------------------------------------
    opt(
        "bindport",
        General,
        Supported,
        "UDP port to listen on (default 4569); applies whether it comes before or after bindaddr",
    ),
    opt("bindaddr", General, Supported, "address to listen on, optionally with :port (default 127.0.0.1; Asterisk's is 0.0.0.0); only one"),
    opt(
        "iaxcompat",
        General,
        Unsupported,
        "Asterisk thread model for dialplan lookups; this switch has no dialplan switch",
    ),
    opt("nochecksums", General, Unsupported, "UDP checksum suppression is left to the operating system"),
    opt("tos", General, Unsupported, "IP TOS/DSCP marking is not applied to the socket"),
    opt("cos", General, Unsupported, "802.1p CoS marking is not applied"),
    opt("iaxthreadcount", General, Unsupported, "the switch runs one event loop, not a thread pool"),
    opt("iaxmaxthreadcount", General, Unsupported, "the switch runs one event loop, not a thread pool"),
    opt("subscribe_network_change_event", General, Unsupported, "no res_stun_monitor network-change events"),
    opt("srvlookup", General, Unsupported, "host names are resolved with A/AAAA lookups only, no DNS SRV"),
    opt("pingtime", General, Unsupported, "PING interval on calls is fixed by the protocol core"),
    opt("lagrqtime", General, Unsupported, "LAGRQ interval on calls is fixed by the protocol core"),
    // --- [general]: security and call numbers ---------------------------------------
    opt("delayreject", General, Supported, "delay REJECT/REGREJ after failed authentication"),
    opt("authdebug", General, Supported, "log authentication failures in detail"),
    opt("calltokenoptional", General, Supported, "addr/mask sources that may skip call-token validation; repeatable"),
    opt("calltokenexpiration", General, Supported, "seconds an issued call token stays valid"),
    opt("maxcallnumbers", Both, Supported, "call numbers one source address (general) or this peer may hold"),
    opt("maxcallnumbers_nonvalidated", General, Supported, "call numbers all unvalidated sources may hold together"),
    opt("shrinkcallerid", General, Unsupported, "caller ID numbers are passed through unchanged"),
    opt("allowfwdownload", General, Unsupported, "no IAXy firmware is served (FWDOWNL is refused)"),
    // --- [general]: registration -------------------------------------------------------
    opt(
        "register",
        General,
        Supported,
        "register => user[:secret]@host[:port]: register this switch with another server",
    ),
    opt("minregexpire", General, Supported, "shortest registration refresh (seconds) granted to peers"),
    opt("maxregexpire", General, Supported, "longest registration refresh (seconds) granted to peers"),
    opt("regcontext", General, Unsupported, "no dialplan: registrations do not create NoOp extensions"),
    // --- [general]: calls and media -------------------------------------------------------
    opt("autokill", General, Supported, "hang up a NEW not ACKed within this many ms (yes = 2000)"),
    opt(
        "bandwidth",
        General,
        Supported,
        "low|medium|high: drops (or restores) codec classes from the allow list at that point",
    ),
    opt("trunkfreq", General, Supported, "trunk frame interval in ms (10-1000)"),
    opt(
        "natkeepalive",
        General,
        Supported,
        "this switch's own: seconds between POKEs to a registration server when its REGACK shows NAT (default 20, 0 off)",
    ),
    opt("trunkmtu", General, Supported, "largest trunk datagram in bytes (0 = no limit, else 172-3999)"),
    opt("trunkmaxsize", General, Supported, "largest trunk buffer in bytes (0 = default 128000)"),
    opt("trunktimestamps", General, Supported, "send per-call timestamps inside trunk frames"),
    opt("maxjitterbuffer", General, Supported, "jitter buffer ceiling in ms"),
    opt("resyncthreshold", General, Supported, "jitter buffer resync threshold in ms (-1 = never)"),
    opt("maxjitterinterps", General, Supported, "interpolated frames in a row before assuming silence"),
    opt("jittertargetextra", General, Supported, "extra ms the jitter buffer pads its target"),
    // --- [general]: realtime -------------------------------------------------------------
    opt("rtcachefriends", General, Unsupported, "no realtime database"),
    opt("rtsavesysname", General, Unsupported, "no realtime database"),
    opt("rtupdate", General, Unsupported, "no realtime database"),
    opt("rtautoclear", General, Unsupported, "no realtime database"),
    opt("rtignoreregexpire", General, Unsupported, "no realtime database"),
    // --- both: codecs, media, encryption --------------------------------------------------
    opt("allow", Both, Supported, "add codecs (comma list, or all) to the preference list"),
    opt("disallow", Both, Supported, "remove codecs (comma list, or all) from the preference list"),
    opt("codecpriority", Both, Supported, "caller|host|disabled|reqonly: whose codec preference wins"),
    opt("jitterbuffer", Both, Supported, "use a jitter buffer on incoming audio"),
    opt(
        "forcejitterbuffer",
        Both,
        Unsupported,
        "the jitter buffer is used or not as jitterbuffer= says; it is never forced",
    ),
    opt("encryption", Both, Supported, "yes|no|aes128: offer AES-128 media encryption"),
    opt("forceencryption", Both, Supported, "refuse calls that are not encrypted (implies encryption=yes)"),
    opt("keyrotate", Both, Unsupported, "encryption keys are not rotated (no RTENC)"),
    opt("language", Both, Supported, "language sent in NEW (IE LANGUAGE)"),
    opt("context", Both, Supported, "context for calls from this user; repeatable on users (first is the default)"),
    opt("trunk", Both, Supported, "use IAX2 trunking (meta trunk frames) with this peer"),
    opt("requirecalltoken", Both, Supported, "yes|no|auto: demand call-token validation"),
    opt("qualify", Both, Supported, "yes|no|<ms>: POKE the peer; slower PONGs mark it LAGGED (yes = 2000 ms)"),
    opt("qualifysmoothing", Both, Supported, "average the last two PONG times"),
    opt("qualifyfreqok", Both, Supported, "ms between POKEs while the peer is OK"),
    opt("qualifyfreqnotok", Both, Supported, "ms between POKEs while the peer is LAGGED/UNREACHABLE"),
    // --- both: PBX features this switch does not have ---------------------------------------
    opt("accountcode", Both, Unsupported, "no CDRs are written"),
    opt("amaflags", Both, Unsupported, "no CDRs are written"),
    opt("adsi", Both, Unsupported, "no ADSI CPE support"),
    opt("mohinterpret", Both, Unsupported, "no music on hold; hold is relayed as signalling"),
    opt("mohsuggest", Both, Unsupported, "no music on hold; hold is relayed as signalling"),
    opt("parkinglot", Both, Unsupported, "no call parking"),
    opt("transfer", Both, Unsupported, "native IAX2 transfer (TXREQ) is not initiated; media stays through the switch"),
    opt("maxauthreq", Both, Supported, "calls awaiting authentication at once: inbound per user (REJECT beyond), outbound per peer (paced); 0: no limit"),
    opt("connectedline", Both, Unsupported, "connected-line updates are not sent or acted on"),
    // --- user/peer/friend -------------------------------------------------------------------
    opt("type", Peer, Supported, "user|peer|friend"),
    opt(
        "secret",
        Peer,
        Supported,
        "shared secret; repeatable (any is accepted from users; the last is used towards peers)",
    ),
    opt("auth", Peer, Supported, "md5,plaintext,rsa: authentication methods accepted/offered"),
    opt("username", Peer, Supported, "user name sent when calling or qualifying this peer"),
    opt("host", Peer, Supported, "dynamic | host name | IP address"),
    opt("port", Peer, Supported, "the peer's UDP port (with host=dynamic: the port for defaultip)"),
    opt("defaultip", Peer, Supported, "address of a host=dynamic peer until it registers"),
    opt("permit", Peer, Supported, "addr/mask allowed (ACL rule, last match wins)"),
    opt("deny", Peer, Supported, "addr/mask refused (ACL rule, last match wins)"),
    opt("callerid", Peer, Supported, "\"Name\" <number> presented for calls from this user/peer"),
    opt("fullname", Peer, Supported, "caller ID name only"),
    opt("cid_number", Peer, Supported, "caller ID number only"),
    opt("description", Peer, Supported, "free text shown by `iax2 show peers`"),
    opt(
        "acl",
        Peer,
        Unsupported,
        "named ACLs (acl.conf) are not read; this rule does NOT restrict anything; use permit=/deny=",
    ),
    opt("inkeys", Peer, Unsupported, "RSA keys are not read; RSA authentication is not available"),
    opt("outkey", Peer, Unsupported, "RSA keys are not read; RSA authentication is not available"),
    opt("dbsecret", Peer, Unsupported, "no astdb: secrets must be written with secret="),
    opt("setvar", Peer, Unsupported, "no channel variables (no dialplan)"),
    opt("mask", Peer, Unsupported, "deprecated in Asterisk; use permit=/deny="),
    opt("sendani", Peer, Unsupported, "ANI is not sent separately from caller ID"),
    opt("mailbox", Peer, Unsupported, "no voicemail / MWI"),
    opt("hasvoicemail", Peer, Unsupported, "no voicemail / MWI"),
    opt("peercontext", Peer, Unsupported, "the called context sent to peers is taken from the dial string only"),
    opt("regexten", Peer, Unsupported, "no dialplan: registrations do not create extensions"),
    opt("timezone", Peer, Unsupported, "DATETIME IE is sent in UTC"),
    opt("immediate", Peer, Unsupported, "no hot-line behaviour (no dialplan)"),
    opt("sourceaddress", Peer, Unsupported, "outgoing traffic always leaves from the bound socket"),
];

/// The table row for `key` (any case).
pub fn lookup(key: &str) -> Option<&'static OptionSpec> {
    OPTIONS.iter().find(|o| o.name.eq_ignore_ascii_case(key))
}

/// The known option closest to a misspelt `key`, if any is close enough to suggest.
pub fn suggest(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase();
    let max = if key.chars().count() <= 4 { 1 } else { 2 };
    OPTIONS
        .iter()
        .map(|o| (edit_distance(&key, o.name), o.name))
        .filter(|(d, _)| *d <= max)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            let best = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            cur.push(best);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// What kind of media a codec carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
    Image,
    Text,
}

/// Codec names accepted by `allow=`/`disallow=`, as Asterisk spells them, in
/// Asterisk's format order (the order `allow=all` adds them in).
pub const CODECS: &[(&str, MediaKind)] = &[
    ("g723", MediaKind::Audio),
    ("gsm", MediaKind::Audio),
    ("ulaw", MediaKind::Audio),
    ("alaw", MediaKind::Audio),
    ("g726aal2", MediaKind::Audio),
    ("adpcm", MediaKind::Audio),
    ("slin", MediaKind::Audio),
    ("lpc10", MediaKind::Audio),
    ("g729", MediaKind::Audio),
    ("speex", MediaKind::Audio),
    ("ilbc", MediaKind::Audio),
    ("g726", MediaKind::Audio),
    ("g722", MediaKind::Audio),
    ("siren7", MediaKind::Audio),
    ("siren14", MediaKind::Audio),
    ("slin16", MediaKind::Audio),
    ("g719", MediaKind::Audio),
    ("speex16", MediaKind::Audio),
    ("opus", MediaKind::Audio),
    ("testlaw", MediaKind::Audio),
    ("jpeg", MediaKind::Image),
    ("png", MediaKind::Image),
    ("h261", MediaKind::Video),
    ("h263", MediaKind::Video),
    ("h263p", MediaKind::Video),
    ("h264", MediaKind::Video),
    ("mpeg4", MediaKind::Video),
    ("vp8", MediaKind::Video),
    ("t140red", MediaKind::Text),
    ("t140", MediaKind::Text),
];

/// Other spellings seen in sample configs, mapped to the canonical name.
pub const CODEC_ALIASES: &[(&str, &str)] = &[("g723.1", "g723"), ("g729a", "g729"), ("mulaw", "ulaw")];

/// The canonical codec name for `name` (any case, aliases resolved).
pub fn codec(name: &str) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase();
    if let Some((_, canon)) = CODEC_ALIASES.iter().find(|(alias, _)| *alias == lower) {
        return Some(canon);
    }
    CODECS.iter().find(|(n, _)| *n == lower).map(|(n, _)| *n)
}

/// Codecs Asterisk counts as "full bandwidth" audio (`bandwidth=high`).
pub const BANDWIDTH_HIGH: &[&str] = &[
    "g723", "gsm", "ulaw", "alaw", "g726aal2", "adpcm", "slin", "lpc10", "g729", "speex", "ilbc", "g726", "g722",
    "siren7", "siren14", "slin16",
];
/// Removed by `bandwidth=medium` (and `low`).
pub const NOT_MEDIUM: &[&str] = &["slin", "slin16", "siren7", "siren14", "g719", "ulaw", "alaw", "g722"];
/// Removed by `bandwidth=low` on top of [`NOT_MEDIUM`].
pub const NOT_LOW: &[&str] = &["g726", "g726aal2", "adpcm"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_lower_case() {
        for (i, o) in OPTIONS.iter().enumerate() {
            assert_eq!(o.name, o.name.to_ascii_lowercase());
            assert!(OPTIONS[i + 1..].iter().all(|p| p.name != o.name), "duplicate {}", o.name);
        }
    }

    #[test]
    fn lookup_is_case_insensitive() {
        assert_eq!(lookup("BindPort").map(|o| o.name), Some("bindport"));
        assert!(lookup("bindprot").is_none());
        assert_eq!(suggest("bindprot"), Some("bindport"));
        assert_eq!(suggest("zzzzzzzz"), None);
    }

    #[test]
    fn codecs_resolve_aliases() {
        assert_eq!(codec("G723.1"), Some("g723"));
        assert_eq!(codec("ULAW"), Some("ulaw"));
        assert_eq!(codec("g999"), None);
        for name in BANDWIDTH_HIGH.iter().chain(NOT_MEDIUM).chain(NOT_LOW) {
            assert!(codec(name).is_some(), "{name}");
        }
    }
}

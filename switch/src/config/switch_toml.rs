//! `switch.toml`: what the switch needs that `iax.conf` has no place for.
//!
//! ```toml
//! [control]
//! listen = "127.0.0.1:5039"   # operator control socket; "off" disables it
//!
//! [log]
//! level = "info"              # error | warn | info | debug | trace
//!
//! [dialplan.iaxinbound]       # one table per context (see `crate::dialplan`)
//! "9196" = "echo"
//! "_1XXX" = "dial(IAX2/b/${EXTEN})"
//! "1000" = ["answer", "tone(1000)", "wait(10)", "hangup"]   # steps, as priorities
//!
//! [iax2]
//! enabled = true              # false: no IAX2 (iax.conf is still read and checked)
//!
//! [sip]                       # SIP is off without this table
//! listen = "0.0.0.0:5060"     # default 127.0.0.1:5060: other hosts only if written
//! rtp = "0.0.0.0"             # media bind address (default: listen's IP); no port
//! rtp_ports = "16384-32768"   # each call: an even RTP port and RTCP on the next
//! rtp_learning_packets = 4    # strict RTP: sequential packets before a source is taken
//! rtp_learning_window = 5     # seconds after media starts or moves while learning is open
//! nat_keepalive = 20          # seconds between OPTIONS to phones behind NAT; 0 = none
//! external_ip = "203.0.113.5" # written in Contact and SDP (NAT, wildcard binds)
//! realm = "switch"
//! context = "default"         # dialplan context of users' calls
//! min_expires = 60
//! max_expires = 3600
//! max_calls = 1000
//! rtp_timeout = 60            # seconds without RTP before hanging up; 0 = never
//! transaction_memory = "64MiB" # open SIP transactions' memory (B, KiB, MiB, GiB)
//! auth_failures_before_throttle = 5  # failed proofs in a row, then 1 s, 2 s, 4 s... of silence; 0 = off
//! auth_failures_before_ban = 10      # then the source is banned; 0 = never
//! ban_time = 600                     # seconds a ban lasts
//!
//! [sip.users.alice]
//! password = "a long secret"
//! context = "default"         # optional
//!
//! [sip.gateways.provider]     # register to an upstream SIP server
//! proxy = "sip.example.net:5060"
//! username = "441234567"
//! password = "from the provider"
//! expires = 600               # seconds asked for (60-86400)
//! register = true             # false: only for calls out (`originate SIP/provider/EXTEN`)
//!
//! [state]
//! dir = "/var/lib/switch"     # dynamic peers' registrations survive a restart; off without it
//! ```
//!
//! `rtp` used to be one `"address:port"` socket shared by every call. It is
//! now only the address media binds to: each call takes its own port pair
//! from `rtp_ports`, so an old `rtp = "0.0.0.0:16384"` is refused with a hint
//! rather than silently read as a one-port range (which would allow one call).
//!
//! Every table and key is optional; unknown ones are errors. The control socket
//! has no authentication, so it may only listen on a loopback address; a SIP
//! user on a non-loopback listener may not have a weak password
//! ([`super::passwords`]: shorter than 8 characters, a well-known one such as
//! `1234` or `secret`, or the user name), the first things SIP crackers try;
//! on loopback it is a warning. Dialplan
//! entries keep their order in the file (among patterns, the first written wins).

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::passwords::{weakness, MIN_LEN};
use super::{Diagnostic, Location, LogLevel, SipGateway, SipSettings, SipUser, SwitchSettings};
use crate::dialplan::{reduce, App, Step};

/// The file's name.
pub const SWITCH_TOML: &str = "switch.toml";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    control: Option<Control>,
    log: Option<Log>,
    dialplan: Option<Ordered<Spanned<String>, Extensions>>,
    iax2: Option<Iax2>,
    sip: Option<Sip>,
    state: Option<State>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Iax2 {
    /// Any value, so that a wrong one is reported with its key.
    enabled: Option<Spanned<toml::Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct State {
    dir: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Sip {
    listen: Option<Spanned<String>>,
    rtp: Option<Spanned<String>>,
    external_ip: Option<Spanned<String>>,
    realm: Option<Spanned<String>>,
    context: Option<Spanned<String>>,
    min_expires: Option<Spanned<u32>>,
    max_expires: Option<Spanned<u32>>,
    max_calls: Option<Spanned<u32>>,
    rtp_timeout: Option<Spanned<u32>>,
    rtp_ports: Option<Spanned<String>>,
    rtp_learning_packets: Option<Spanned<u16>>,
    rtp_learning_window: Option<Spanned<u32>>,
    nat_keepalive: Option<Spanned<u32>>,
    transaction_memory: Option<Spanned<String>>,
    auth_failures_before_throttle: Option<Spanned<u32>>,
    auth_failures_before_ban: Option<Spanned<u32>>,
    ban_time: Option<Spanned<u32>>,
    users: Option<Ordered<Spanned<String>, Spanned<SipUserTable>>>,
    gateways: Option<Ordered<Spanned<String>, Spanned<SipGatewayTable>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipGatewayTable {
    proxy: Spanned<String>,
    username: Spanned<String>,
    password: Spanned<String>,
    expires: Option<Spanned<u32>>,
    register: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SipUserTable {
    password: Spanned<String>,
    context: Option<Spanned<String>>,
}

/// One `[dialplan.CONTEXT]` table: extension pattern -> application, in file order.
type Extensions = Ordered<Spanned<String>, Spanned<Program>>;

/// An extension's value: one application, or a list of steps run in order
/// (`["answer", "tone(1000)", "wait(10)", "hangup"]`), as `extensions.conf`'s priorities.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Program {
    One(String),
    Steps(Vec<String>),
}

/// A TOML table read as a list, keeping the order of the file.
#[derive(Debug)]
struct Ordered<K, V>(Vec<(K, V)>);

impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for Ordered<K, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TableVisitor<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for TableVisitor<K, V> {
            type Value = Ordered<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Ordered(entries))
            }
        }
        deserializer.deserialize_map(TableVisitor(PhantomData))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Control {
    listen: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Log {
    level: Option<Spanned<String>>,
}

/// Parses the text of `switch.toml`; `file` names it in messages.
pub fn parse(file: &str, text: &str) -> Result<SwitchSettings, Vec<Diagnostic>> {
    let parsed: File = match toml::from_str(text) {
        Ok(parsed) => parsed,
        Err(e) => return Err(vec![toml_error(file, text, &e)]),
    };
    let mut settings = SwitchSettings::default();
    let mut errors = Vec::new();
    if let Some(listen) = parsed.control.and_then(|c| c.listen) {
        match parse_listen(listen.get_ref()) {
            Ok(addr) => settings.control = addr,
            Err((message, hint)) => errors.push(diag(file, text, listen.span().start, "listen", message, hint)),
        }
    }
    if let Some(enabled) = parsed.iax2.and_then(|t| t.enabled) {
        match enabled.get_ref() {
            toml::Value::Boolean(on) => settings.iax2 = *on,
            other => errors.push(diag(
                file,
                text,
                enabled.span().start,
                "enabled",
                format!("expected true or false, got {other}"),
                "write enabled = false to run without IAX2 (or remove [iax2])".to_string(),
            )),
        }
    }
    if let Some(level) = parsed.log.and_then(|l| l.level) {
        match LogLevel::from_str(level.get_ref()) {
            Ok(l) => settings.log.level = l,
            Err(()) => errors.push(diag(
                file,
                text,
                level.span().start,
                "level",
                format!("expected one of error, warn, info, debug, trace; got {:?}", level.get_ref()),
                "write e.g. level = \"info\"".to_string(),
            )),
        }
    }
    for (context, extensions) in parsed.dialplan.map(|d| d.0).unwrap_or_default() {
        if context.get_ref().trim().is_empty() {
            errors.push(diag(
                file,
                text,
                context.span().start,
                "dialplan",
                "empty context name".to_string(),
                "write e.g. [dialplan.iaxinbound]".to_string(),
            ));
            continue;
        }
        for (pattern, app) in extensions.0 {
            if let Err(message) = check_pattern(pattern.get_ref()) {
                let hint = "write e.g. \"9196\" = \"echo\" or \"_1XXX\" = \"dial(IAX2/b/${EXTEN})\"".to_string();
                errors.push(diag(file, text, pattern.span().start, pattern.get_ref(), message, hint));
                continue;
            }
            let at = app.span().start;
            match app.into_inner() {
                Program::One(one) => match App::parse(&one) {
                    Ok(parsed) => settings.dialplan.add(context.get_ref(), pattern.get_ref(), parsed),
                    Err(e) => errors.push(diag(file, text, at, pattern.get_ref(), e.to_string(), String::new())),
                },
                Program::Steps(list) => {
                    let mut steps = Vec::new();
                    for step in &list {
                        match Step::parse(step) {
                            Ok(s) => steps.push(s),
                            Err(e) => {
                                errors.push(diag(file, text, at, pattern.get_ref(), e.to_string(), String::new()))
                            }
                        }
                    }
                    if steps.len() != list.len() {
                        continue;
                    }
                    if steps.is_empty() {
                        let hint = "write e.g. [\"answer\", \"tone(1000)\", \"wait(10)\", \"hangup\"]".to_string();
                        errors.push(diag(file, text, at, pattern.get_ref(), "empty list of steps".into(), hint));
                        continue;
                    }
                    // The switch's own file says exactly what happens: a step
                    // that would not be honoured is an error here, not a note.
                    let (route, unhonoured) = reduce(&steps);
                    for u in &unhonoured {
                        let step = list.get(u.step).map_or("", String::as_str);
                        let message = format!("step {} `{step}`: {}", u.step + 1, u.why);
                        errors.push(diag(
                            file,
                            text,
                            at,
                            pattern.get_ref(),
                            message,
                            "remove or reorder the step".into(),
                        ));
                    }
                    if unhonoured.is_empty() {
                        settings.dialplan.add_route(context.get_ref(), pattern.get_ref(), route);
                    }
                }
            }
        }
    }
    if let Some(sip) = parsed.sip {
        settings.sip = sip_settings(file, text, sip, &mut errors, &mut settings.notes);
    }
    if let Some(dir) = parsed.state.and_then(|s| s.dir) {
        // An empty or odd path would silently write state somewhere unexpected.
        let d = dir.get_ref();
        if d.trim().is_empty() || d.contains(|c: char| c.is_control()) {
            errors.push(diag(
                file,
                text,
                dir.span().start,
                "dir",
                format!("{d:?} is not a usable directory name"),
                "write e.g. dir = \"/var/lib/switch\", or remove [state] to keep nothing".to_string(),
            ));
        } else {
            settings.state_dir = Some(d.clone());
        }
    }
    if errors.is_empty() {
        Ok(settings)
    } else {
        Err(errors)
    }
}

fn sip_settings(
    file: &str,
    text: &str,
    sip: Sip,
    errors: &mut Vec<Diagnostic>,
    notes: &mut Vec<Diagnostic>,
) -> Option<SipSettings> {
    let mut bad = |offset: usize, key: &str, message: String, hint: &str| {
        errors.push(diag(file, text, offset, key, message, hint.to_string()));
    };
    let d = SipSettings::default();
    let listen = match &sip.listen {
        // Reachable from other hosts only when the file says so.
        None => d.listen,
        Some(v) => match SocketAddr::from_str(v.get_ref().trim()) {
            Ok(addr) => addr,
            Err(_) => {
                bad(
                    v.span().start,
                    "listen",
                    format!("expected \"address:port\", got {:?}", v.get_ref()),
                    "write e.g. listen = \"0.0.0.0:5060\"",
                );
                return None;
            }
        },
    };
    let rtp = match &sip.rtp {
        None => listen.ip(),
        Some(v) => match parse_rtp_ip(v.get_ref()) {
            Ok(ip) => ip,
            Err((message, hint)) => {
                bad(v.span().start, "rtp", message, &hint);
                return None;
            }
        },
    };
    let rtp_ports = match &sip.rtp_ports {
        None => d.rtp_ports.clone(),
        Some(v) => match parse_port_range(v.get_ref()) {
            Some(range) => range,
            None => {
                bad(
                    v.span().start,
                    "rtp_ports",
                    format!("expected \"FIRST-LAST\" with room for one even port and the next, got {:?}", v.get_ref()),
                    "write e.g. rtp_ports = \"16384-32768\"",
                );
                return None;
            }
        },
    };
    let rtp_learning_packets = sip.rtp_learning_packets.as_ref().map_or(d.rtp_learning_packets, |v| *v.get_ref());
    if let Some(v) = sip.rtp_learning_packets.as_ref().filter(|v| !(1..=64).contains(v.get_ref())) {
        bad(
            v.span().start,
            "rtp_learning_packets",
            format!("{} is outside 1-64", v.get_ref()),
            "write e.g. rtp_learning_packets = 4",
        );
    }
    let rtp_learning_window = sip.rtp_learning_window.as_ref().map_or(d.rtp_learning_window, |v| *v.get_ref());
    if let Some(v) = sip.rtp_learning_window.as_ref().filter(|v| !(1..=300).contains(v.get_ref())) {
        bad(
            v.span().start,
            "rtp_learning_window",
            format!("{} s is outside 1-300", v.get_ref()),
            "write e.g. rtp_learning_window = 5",
        );
    }
    let nat_keepalive = sip.nat_keepalive.as_ref().map_or(d.nat_keepalive, |v| *v.get_ref());
    if let Some(v) = sip.nat_keepalive.as_ref().filter(|v| *v.get_ref() > 3600) {
        bad(
            v.span().start,
            "nat_keepalive",
            format!("{} s is more than an hour: NAT bindings would close long before", v.get_ref()),
            "write e.g. nat_keepalive = 20 (0 disables)",
        );
    }
    let external_ip = match &sip.external_ip {
        None => None,
        Some(v) => match v.get_ref().trim().parse() {
            Ok(ip) => Some(ip),
            Err(_) => {
                bad(
                    v.span().start,
                    "external_ip",
                    format!("expected an IP address, got {:?}", v.get_ref()),
                    "write e.g. external_ip = \"203.0.113.5\"",
                );
                return None;
            }
        },
    };
    let word = |v: &Option<Spanned<String>>, default: &str| {
        v.as_ref().map_or(default.to_string(), |s| s.get_ref().trim().to_string())
    };
    let realm = word(&sip.realm, &d.realm);
    let context = word(&sip.context, &d.context);
    for (v, key) in [(&sip.realm, "realm"), (&sip.context, "context")] {
        if let Some(v) = v {
            let s = v.get_ref().trim();
            if s.is_empty() || s.contains(|c: char| c == '"' || c == '\\' || c.is_control()) {
                bad(
                    v.span().start,
                    key,
                    format!("{s:?} must be non-empty text without quotes or control characters"),
                    "write e.g. realm = \"switch\"",
                );
            }
        }
    }
    let min_expires = sip.min_expires.as_ref().map_or(d.min_expires, |v| *v.get_ref());
    let max_expires = sip.max_expires.as_ref().map_or(d.max_expires, |v| *v.get_ref());
    if min_expires == 0 || min_expires > max_expires {
        let at = sip.min_expires.as_ref().or(sip.max_expires.as_ref()).map_or(0, |v| v.span().start);
        bad(
            at,
            "min_expires",
            format!("min_expires={min_expires} must be at least 1 and at most max_expires={max_expires}"),
            "write e.g. min_expires = 60 and max_expires = 3600",
        );
    }
    let max_calls = sip.max_calls.as_ref().map_or(d.max_calls, |v| *v.get_ref() as usize);
    let rtp_timeout = sip.rtp_timeout.as_ref().map_or(d.rtp_timeout, |v| *v.get_ref());
    let transaction_memory = match &sip.transaction_memory {
        None => d.transaction_memory,
        Some(v) => match parse_size(v.get_ref()) {
            Some(n) if (MIN_TRANSACTION_MEMORY..=MAX_TRANSACTION_MEMORY).contains(&n) => n,
            _ => {
                bad(
                    v.span().start,
                    "transaction_memory",
                    format!("expected a size from 64KiB to 16GiB, got {:?}", v.get_ref()),
                    "write e.g. transaction_memory = \"64MiB\"",
                );
                return None;
            }
        },
    };
    let mut guard = d.guard;
    if let Some(v) = &sip.auth_failures_before_throttle {
        guard.failures_before_throttle = *v.get_ref();
    }
    if let Some(v) = &sip.auth_failures_before_ban {
        guard.failures_before_ban = *v.get_ref();
    }
    if let Some(v) = &sip.ban_time {
        guard.ban_time = std::time::Duration::from_secs(u64::from(*v.get_ref()));
    }
    if guard.failures_before_ban > 0 && guard.failures_before_ban < guard.failures_before_throttle {
        let at = sip.auth_failures_before_ban.as_ref().map_or(0, |v| v.span().start);
        bad(
            at,
            "auth_failures_before_ban",
            format!(
                "auth_failures_before_ban={} is below auth_failures_before_throttle={}",
                guard.failures_before_ban, guard.failures_before_throttle
            ),
            "write e.g. auth_failures_before_throttle = 5 and auth_failures_before_ban = 10 (0 turns either off)",
        );
    }
    if guard.failures_before_ban > 0 && guard.ban_time.is_zero() {
        let at = sip.ban_time.as_ref().map_or(0, |v| v.span().start);
        bad(
            at,
            "ban_time",
            "ban_time=0 bans nothing".to_string(),
            "write e.g. ban_time = 600, or auth_failures_before_ban = 0 to never ban",
        );
    }

    let mut users = Vec::new();
    for (name, table) in sip.users.map(|u| u.0).unwrap_or_default() {
        let user = name.get_ref().trim();
        if user.is_empty() || !user.chars().all(|c| c.is_ascii_alphanumeric() || "-_.!~*'()&=+$,;?/".contains(c)) {
            bad(
                name.span().start,
                user,
                format!("user name {user:?} is empty or has characters a SIP URI user part cannot hold"),
                "write e.g. [sip.users.alice]",
            );
            continue;
        }
        let table = table.into_inner();
        let password = table.password.get_ref();
        if let Some(why) = weakness(user, &[], password) {
            let at = table.password.span().start;
            if !listen.ip().is_loopback() {
                bad(
                    at,
                    "password",
                    format!("user {user:?}'s password {why}, and {listen} is not a loopback address; SIP crackers (svcrack) try such passwords first"),
                    &format!("set a long random password (e.g. `openssl rand -hex 16`, at least {MIN_LEN} characters), or listen on 127.0.0.1 for tests"),
                );
                continue;
            }
            notes.push(diag(
                file,
                text,
                at,
                "password",
                format!("user {user:?}'s password {why}; allowed only because {listen} is loopback"),
                "use a long random password before listening on another address".to_string(),
            ));
        }
        users.push(SipUser {
            name: user.to_string(),
            password: password.clone(),
            context: table.context.map(|c| c.into_inner().trim().to_string()),
        });
    }
    let mut gateways = Vec::new();
    for (name, table) in sip.gateways.map(|g| g.0).unwrap_or_default() {
        let gw = name.get_ref().trim().to_string();
        let table = table.into_inner();
        let proxy = table.proxy.get_ref().trim();
        let (host, port) = match proxy.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(':') => match p.parse::<u16>() {
                Ok(port) if port > 0 => (h.trim_matches(|c| c == '[' || c == ']').to_string(), port),
                _ => (String::new(), 0),
            },
            _ => (proxy.trim_matches(|c| c == '[' || c == ']').to_string(), 5060),
        };
        if host.is_empty() || host.contains(char::is_whitespace) {
            bad(
                table.proxy.span().start,
                "proxy",
                format!("gateway {gw:?}: expected \"host[:port]\", got {proxy:?}"),
                "write e.g. proxy = \"sip.example.net:5060\"",
            );
            continue;
        }
        let expires = table.expires.as_ref().map_or(600, |v| *v.get_ref());
        if !(60..=86_400).contains(&expires) {
            let at = table.expires.as_ref().map_or(0, |v| v.span().start);
            bad(
                at,
                "expires",
                format!("gateway {gw:?}: expires={expires} is outside 60-86400 seconds"),
                "write e.g. expires = 600",
            );
            continue;
        }
        if listen.ip().is_unspecified() && external_ip.is_none() {
            bad(
                name.span().start,
                &gw,
                format!(
                    "gateway {gw:?}: the switch listens on {listen}, so it cannot tell the provider where to reach it"
                ),
                "set [sip] external_ip to the address the provider reaches, or listen on a specific address",
            );
            continue;
        }
        gateways.push(SipGateway {
            name: gw,
            host,
            port,
            username: table.username.get_ref().trim().to_string(),
            password: table.password.into_inner(),
            expires,
            register: table.register.unwrap_or(true),
        });
    }
    Some(SipSettings {
        gateways,
        listen,
        rtp,
        rtp_ports,
        rtp_learning_packets,
        rtp_learning_window,
        nat_keepalive,
        external_ip,
        realm,
        context,
        min_expires,
        max_expires,
        max_calls,
        rtp_timeout,
        transaction_memory,
        users,
        guard,
    })
}

/// `rtp`: an IP address. A port is refused rather than ignored: the old
/// meaning (one shared socket) is gone, and the operator should know.
fn parse_rtp_ip(v: &str) -> Result<std::net::IpAddr, (String, String)> {
    let v = v.trim();
    if let Ok(ip) = v.trim_matches(|c| c == '[' || c == ']').parse() {
        return Ok(ip);
    }
    match SocketAddr::from_str(v) {
        Ok(addr) => Err((
            format!("{v:?} has a port, but calls no longer share one media socket: `rtp` is only the address media binds to"),
            format!("write rtp = \"{}\" and, for the ports, rtp_ports = \"16384-32768\"", addr.ip()),
        )),
        Err(_) => Err((format!("expected an IP address, got {v:?}"), "write e.g. rtp = \"0.0.0.0\"".to_string())),
    }
}

/// `"FIRST-LAST"`, trimmed to whole even/odd pairs; `None` without one.
fn parse_port_range(v: &str) -> Option<std::ops::RangeInclusive<u16>> {
    let (a, b) = v.trim().split_once('-')?;
    let (a, b): (u16, u16) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    let first = a.checked_add(a % 2)?;
    (first > 0 && first < b).then_some(first..=b)
}

/// `[sip] transaction_memory` when absent: at about 600 bytes a completed
/// REGISTER, 32 s of 2,500 REGISTER/s fit under the REGISTER ceiling (3/4).
pub const DEFAULT_TRANSACTION_MEMORY: usize = 64 << 20;
/// Below this a handful of calls would exhaust it.
const MIN_TRANSACTION_MEMORY: usize = 64 << 10;
const MAX_TRANSACTION_MEMORY: usize = 16 << 30;

/// `"64MiB"`, `"512 KiB"`, `"1GiB"`, `"65536"` (bytes): binary units, as memory is counted.
fn parse_size(text: &str) -> Option<usize> {
    let text = text.trim();
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let n: usize = text[..digits].parse().ok()?;
    let shift = match text[digits..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "kib" | "k" => 10,
        "mib" | "m" => 20,
        "gib" | "g" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

fn parse_listen(v: &str) -> Result<Option<SocketAddr>, (String, String)> {
    if v.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let addr = SocketAddr::from_str(v.trim()).map_err(|_| {
        (
            format!("expected \"address:port\" or \"off\", got {v:?}"),
            "write e.g. listen = \"127.0.0.1:5039\"".to_string(),
        )
    })?;
    if !addr.ip().is_loopback() {
        return Err((
            format!("{addr} is not a loopback address; the control socket has no authentication"),
            "listen on 127.0.0.1 or [::1] and reach it through SSH, or write listen = \"off\"".to_string(),
        ));
    }
    Ok(Some(addr))
}

/// An extension (`9196`, `s`, `h`) or an Asterisk pattern (`_1XXX`, `_9.`, `_[1-3]XX`).
pub(crate) fn check_pattern(p: &str) -> Result<(), String> {
    if p.trim().is_empty() || p.chars().any(char::is_whitespace) {
        return Err(format!("extension {p:?} is empty or contains spaces"));
    }
    if let Some(body) = p.strip_prefix('_') {
        if body.is_empty() {
            return Err("pattern `_` has nothing after the `_`".to_string());
        }
        let mut open = false;
        for c in body.chars() {
            match c {
                '[' if open => return Err(format!("pattern {p:?} opens `[` twice")),
                '[' => open = true,
                ']' if !open => return Err(format!("pattern {p:?} has `]` without `[`")),
                ']' => open = false,
                _ => {}
            }
        }
        if open {
            return Err(format!("pattern {p:?} has `[` without `]`"));
        }
    }
    Ok(())
}

fn toml_error(file: &str, text: &str, e: &toml::de::Error) -> Diagnostic {
    let message = e.message().trim().replace('\n', "; ");
    let start = e.span().map_or(0, |s| s.start);
    // serde's messages name the offending key between backticks: "unknown field `lisen`, ..."
    let key = if message.starts_with("unknown field") { message.split('`').nth(1).map(str::to_string) } else { None };
    let hint = if key.is_some() {
        "remove it or correct the spelling; known: [control] listen, [log] level, [iax2] enabled, [dialplan.CONTEXT], [sip] listen rtp rtp_ports rtp_learning_packets rtp_learning_window nat_keepalive external_ip realm context min_expires max_expires max_calls rtp_timeout transaction_memory auth_failures_before_throttle auth_failures_before_ban ban_time, [sip.users.NAME] password context, [sip.gateways.NAME] proxy username password expires register, [state] dir"
    } else {
        "see https://toml.io for the syntax; e.g. [control] then listen = \"127.0.0.1:5039\""
    };
    let line = line_of(text, start);
    Diagnostic { location: Location { file: file.to_string(), line }, key, message, hint: hint.to_string() }
}

fn diag(file: &str, text: &str, offset: usize, key: &str, message: String, hint: String) -> Diagnostic {
    Diagnostic {
        location: Location { file: file.to_string(), line: line_of(text, offset) },
        key: Some(key.to_string()),
        message,
        hint,
    }
}

/// 1-based line of a byte offset (clamped to the text).
fn line_of(text: &str, offset: usize) -> u32 {
    let end = offset.min(text.len());
    let newlines = text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count();
    u32::try_from(newlines + 1).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::GuardSettings;

    fn errs(text: &str) -> Vec<String> {
        parse("switch.toml", text).err().unwrap_or_default().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn iax2_is_on_unless_switched_off() {
        assert!(parse("switch.toml", "").unwrap().iax2);
        assert!(!parse("switch.toml", "[iax2]\nenabled = false\n").unwrap().iax2);
        let errors = parse("switch.toml", "[iax2]\nenabled = \"no\"\n").unwrap_err();
        let message = errors[0].to_string();
        assert!(message.contains("switch.toml:2") && message.contains("enabled"), "{message}");
        let errors = parse("switch.toml", "[iax2]\nbind = 1\n").unwrap_err();
        assert!(errors[0].to_string().contains("bind"), "{}", errors[0]);
    }

    #[test]
    fn state_dir_is_off_by_default_and_must_be_a_usable_name() {
        assert_eq!(parse("switch.toml", "").unwrap().state_dir, None);
        assert_eq!(parse("switch.toml", "[state]\n").unwrap().state_dir, None);
        let s = parse("switch.toml", "[state]\ndir = \"/var/lib/switch\"\n").unwrap();
        assert_eq!(s.state_dir.as_deref(), Some("/var/lib/switch"));
        let e = errs("[state]\ndir = \" \"\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("switch.toml:2: `dir`: \" \" is not a usable directory name"), "{e:?}");
        assert!(errs("[state]\ndri = \"x\"\n")[0].contains("[state] dir"));
    }

    #[test]
    fn defaults_and_values() {
        assert_eq!(parse("switch.toml", "").unwrap(), SwitchSettings::default());
        let s = parse("switch.toml", "[control]\nlisten = \"[::1]:6000\"\n[log]\nlevel = \"DEBUG\"\n").unwrap();
        assert_eq!(s.control, Some("[::1]:6000".parse().unwrap()));
        assert_eq!(s.log.level, LogLevel::Debug);
        assert_eq!(parse("switch.toml", "[control]\nlisten = \"off\"\n").unwrap().control, None);
    }

    #[test]
    fn dialplan_keeps_file_order() {
        let text = "[dialplan.in]\n\"_X.\" = \"echo\"\n\"_1XXX\" = \"music\"\n\"1000\" = \"tone(1000)\"\n\
                    [dialplan.other]\n\"_1XXX\" = \"dial(IAX2/b/${EXTEN})\"\n";
        let s = parse("switch.toml", text).unwrap();
        assert_eq!(s.dialplan.lookup("in", "1234"), Some(App::Echo)); // first pattern written wins
        assert_eq!(s.dialplan.lookup("in", "1000"), Some(App::Tone { freq_hz: 1000.0 })); // exact beats patterns
        assert_eq!(s.dialplan.lookup("other", "1234"), Some(App::Dial { target: "IAX2/b/1234".into() }));
        assert!(s.dialplan.lookup("none", "1").is_none());
    }

    #[test]
    fn dialplan_step_lists() {
        use crate::dialplan::{Route, TimedHangup};
        let s = parse(
            "switch.toml",
            "[dialplan.in]\n\"1000\" = [\"answer\", \"tone(1000)\", \"wait(10)\", \"hangup(17)\"]\n\"2\" = [\"echo\"]\n",
        )
        .unwrap();
        let hangup = Some(TimedHangup { after: std::time::Duration::from_secs(10), cause: 17 });
        assert_eq!(s.dialplan.route("in", "1000"), Some(Route { app: App::Tone { freq_hz: 1000.0 }, hangup }));
        assert_eq!(s.dialplan.lookup("in", "2"), Some(App::Echo));
        let e =
            errs("[dialplan.in]\n\"1\" = [\"wait(2)\", \"echo\"]\n\"2\" = []\n\"3\" = [\"answer\", \"voicemail\"]\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(e[0].starts_with("switch.toml:2: `1`: step 1 `wait(2)`: a Wait before Echo is skipped"), "{e:?}");
        assert!(e[1].starts_with("switch.toml:3: `2`: empty list of steps"), "{e:?}");
        assert!(e[2].starts_with("switch.toml:4: `3`: `voicemail`: unknown application"), "{e:?}");
    }

    #[test]
    fn dialplan_errors_have_lines() {
        let e =
            errs("[dialplan.in]\n\"9196\" = \"echo\"\n\"1000\" = \"tone(99999)\"\n\"_1[23\" = \"echo\"\n\"x\" = 5\n");
        assert_eq!(e.len(), 1, "{e:?}"); // the integer is a TOML type error: reported alone
        assert!(e[0].starts_with("switch.toml:5: "), "{e:?}");
        let e = errs("[dialplan.in]\n\"9196\" = \"echo\"\n\"1000\" = \"tone(99999)\"\n\"_1[23\" = \"echo\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("switch.toml:3: `1000`: `tone(99999)`: tone frequency must be 20-3900 Hz"), "{e:?}");
        assert!(e[1].starts_with("switch.toml:4: `_1[23`: pattern"), "{e:?}");
        let e = errs("[dialplan]\nin = \"echo\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("switch.toml:2: "), "{e:?}");
    }

    #[test]
    fn errors_have_lines() {
        assert_eq!(
            errs("[control]\nlisten = \"127.0.0.1:5039\"\nlisen = 3\n"),
            vec!["switch.toml:3: `lisen`: unknown field `lisen`, expected `listen` (remove it or correct the spelling; known: [control] listen, [log] level, [iax2] enabled, [dialplan.CONTEXT], [sip] listen rtp rtp_ports rtp_learning_packets rtp_learning_window nat_keepalive external_ip realm context min_expires max_expires max_calls rtp_timeout transaction_memory auth_failures_before_throttle auth_failures_before_ban ban_time, [sip.users.NAME] password context, [sip.gateways.NAME] proxy username password expires register, [state] dir)"]
        );
        let e = errs("\n[control\nlisten = 1\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].starts_with("switch.toml:2: "), "{e:?}");
        let e = errs("[control]\nlisten = \"0.0.0.0:5039\"\n[log]\nlevel = \"loud\"\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("switch.toml:2: `listen`: 0.0.0.0:5039 is not a loopback address"), "{e:?}");
        assert!(e[1].starts_with("switch.toml:4: `level`:"), "{e:?}");
    }

    #[test]
    fn sip_settings_defaults_and_users() {
        assert_eq!(parse("switch.toml", "").unwrap().sip, None, "SIP is off without [sip]");
        let s = parse("switch.toml", "[sip]\n[sip.users.alice]\npassword = \"wonderland-42\"\n[sip.users.bob]\npassword = \"x9\"\ncontext = \"lab\"\n")
            .unwrap()
            .sip
            .unwrap();
        assert_eq!(s.listen, "127.0.0.1:5060".parse().unwrap(), "loopback unless the file says otherwise");
        assert_eq!(s.rtp, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
        assert_eq!(s.guard, GuardSettings::default());
        assert_eq!(s.rtp_ports, 16384..=32768);
        assert_eq!((s.rtp_learning_packets, s.rtp_learning_window, s.nat_keepalive), (4, 5, 20));
        assert_eq!(
            (s.realm.as_str(), s.context.as_str(), s.min_expires, s.max_expires),
            ("switch", "default", 60, 3600)
        );
        assert_eq!(s.users.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(s.users[1].context.as_deref(), Some("lab"));
        assert_eq!(s.transaction_memory, 64 << 20);
    }

    #[test]
    fn transaction_memory_takes_binary_sizes_within_bounds() {
        let memory = |v: &str| {
            parse("switch.toml", &format!("[sip]\ntransaction_memory = \"{v}\"\n"))
                .map(|s| s.sip.unwrap().transaction_memory)
        };
        assert_eq!(memory("64MiB").unwrap(), 64 << 20);
        assert_eq!(memory("512 KiB").unwrap(), 512 << 10);
        assert_eq!(memory("1gib").unwrap(), 1 << 30);
        assert_eq!(memory("65536").unwrap(), 65536);
        for bad in ["1KiB", "64MB", "-1", "lots", "17GiB", "99999999999999999999GiB"] {
            assert!(memory(bad).is_err(), "{bad}");
        }
        let e = errs("[sip]\ntransaction_memory = \"64 megs\"\n");
        assert!(e[0].starts_with("switch.toml:2: `transaction_memory`: expected a size"), "{e:?}");
    }

    #[test]
    fn sip_refuses_weak_passwords_on_public_listeners() {
        for (user, password, why) in [
            ("1000", "1234", "is on the list of passwords crackers try first"),
            ("1000", "0000", "is on the list"),
            ("alice", "secret", "is on the list"),
            ("alice", "Password", "is on the list"),
            ("alice", "alice", "is the account name"),
            ("alice", "ecila", "is the account name \"alice\" reversed"),
            ("alice", "x9-long", "is shorter than 8 characters"),
            ("alice", "", "is shorter than 8 characters"),
        ] {
            let text = format!("[sip]\nlisten = \"0.0.0.0:5060\"\n\n[sip.users.{user}]\npassword = \"{password}\"\n");
            let e = errs(&text);
            assert_eq!(e.len(), 1, "{e:?}");
            let start = format!("switch.toml:5: `password`: user \"{user}\"'s password {why}");
            assert!(e[0].starts_with(&start), "{e:?}");
            assert!(e[0].contains("0.0.0.0:5060 is not a loopback address"), "{e:?}");
            assert!(e[0].contains("openssl rand"), "{e:?}");
        }
        assert!(
            errs("[sip]\nlisten = \"192.0.2.5:5060\"\n[sip.users.alice]\npassword = \"wonderland-42\"\n").is_empty()
        );
        // On loopback (tests, a lab) it is allowed, with a warning.
        let s = parse("switch.toml", "[sip]\nlisten = \"127.0.0.1:5060\"\n[sip.users.1000]\npassword = \"1234\"\n")
            .unwrap();
        assert_eq!(s.sip.unwrap().users.len(), 1);
        assert_eq!(s.notes.len(), 1);
        assert!(
            s.notes[0].to_string().starts_with("switch.toml:4: `password`: user \"1000\"'s password is on the list"),
            "{}",
            s.notes[0]
        );
    }

    #[test]
    fn sip_guard_keys() {
        let s = parse(
            "switch.toml",
            "[sip]\nauth_failures_before_throttle = 3\nauth_failures_before_ban = 6\nban_time = 3600\n",
        )
        .unwrap();
        let g = s.sip.unwrap().guard;
        assert_eq!((g.failures_before_throttle, g.failures_before_ban, g.ban_time.as_secs()), (3, 6, 3600));
        let e = errs("[sip]\nauth_failures_before_throttle = 5\nauth_failures_before_ban = 2\n");
        assert!(
            e[0].starts_with("switch.toml:3: `auth_failures_before_ban`: auth_failures_before_ban=2 is below"),
            "{e:?}"
        );
        let e = errs("[sip]\nban_time = 0\n");
        assert!(e[0].starts_with("switch.toml:2: `ban_time`: ban_time=0 bans nothing"), "{e:?}");
        let s =
            parse("switch.toml", "[sip]\nauth_failures_before_throttle = 0\nauth_failures_before_ban = 0\n").unwrap();
        assert_eq!(s.sip.unwrap().guard.failures_before_ban, 0);
    }

    #[test]
    fn sip_errors_have_lines() {
        let e = errs("[sip]\nlisten = \"nowhere\"\n");
        assert!(e[0].starts_with("switch.toml:2: `listen`: expected \"address:port\""), "{e:?}");
        let e = errs("[sip]\nrtp = \"0.0.0.0:16384\"\n");
        assert!(e[0].starts_with("switch.toml:2: `rtp`: \"0.0.0.0:16384\" has a port"), "{e:?}");
        assert!(e[0].contains("rtp = \"0.0.0.0\" and, for the ports, rtp_ports"), "{e:?}");
        for bad in ["30000", "30001-30001", "30000-30000", "b-a", "40000-30000"] {
            let e = errs(&format!("[sip]\nrtp_ports = \"{bad}\"\n"));
            assert!(e[0].starts_with("switch.toml:2: `rtp_ports`:"), "{bad}: {e:?}");
        }
        let s = parse("switch.toml", "[sip]\nrtp = \"[::1]\"\nrtp_ports = \"30001-30004\"\n").unwrap().sip.unwrap();
        assert_eq!((s.rtp, s.rtp_ports), ("::1".parse::<std::net::IpAddr>().unwrap(), 30002..=30004));
        let e = errs("[sip]\nrtp_learning_packets = 0\n");
        assert!(e[0].starts_with("switch.toml:2: `rtp_learning_packets`:"), "{e:?}");
        let e = errs("[sip]\nrtp = \"127.0.0.1:5060\"\n"); // the listen address by default
        assert!(e[0].starts_with("switch.toml:2: `rtp`:"), "{e:?}");
        let e = errs("[sip]\nmin_expires = 600\nmax_expires = 60\n");
        assert!(e[0].starts_with("switch.toml:2: `min_expires`:"), "{e:?}");
        let e = errs("[sip]\n[sip.users.alice]\npasword = \"x\"\n");
        assert!(e[0].starts_with("switch.toml:3: `pasword`: unknown field"), "{e:?}");
        let e = errs("[sip]\n[sip.users.\"a b\"]\npassword = \"secret-1\"\n");
        assert!(e[0].starts_with("switch.toml:2: "), "{e:?}");
    }
}

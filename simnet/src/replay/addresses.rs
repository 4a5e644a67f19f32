//! The operator's configuration, moved onto the simulated network.
//!
//! `--config` is written for the captured network: `bindaddr` is the
//! switch's captured address, `register =>` lines, static peers' `host=`
//! and SIP gateways' `proxy` name the captured remote parties. In the
//! replay those parties may live elsewhere (a loopback capture's parties all
//! get private addresses, one per host), so every such address is mapped to
//! the simulated address of the party it names. The files are rewritten as
//! text, line by line, so the switch still loads them itself (with
//! `#include`s, templates and comments as the operator wrote them) and the
//! report can say `iax.conf:3: bindaddr 127.0.0.1 -> 192.168.0.1`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

/// The captured parties and where they are in the replay.
pub(crate) struct Parties<'a> {
    /// The switch: captured endpoint, simulated IP.
    pub switch: (SocketAddr, IpAddr),
    /// The remote parties, in the role's order.
    pub remotes: &'a [(SocketAddr, IpAddr)],
}

/// What a configured address names.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Names {
    /// The switch's own address (`bindaddr`, `[sip] listen`/`rtp`).
    Switch,
    /// A party the switch talks to (`register =>`, `host=`, `proxy`).
    Remote { default_port: u16 },
}

impl Parties<'_> {
    /// The simulated IP for a configured address, and who it is.
    fn map(&self, ip: IpAddr, port: Option<u16>, names: Names) -> Option<(IpAddr, String)> {
        match names {
            // The switch binds its own simulated address whatever the file
            // says, unless it binds every address (0.0.0.0, ::).
            Names::Switch => (!ip.is_unspecified() && ip != self.switch.1)
                .then(|| (self.switch.1, "the switch's simulated address".to_string())),
            Names::Remote { default_port } => {
                // A remote party, never the switch itself: a loopback capture
                // has both on 127.0.0.1, told apart by port.
                let port = port.unwrap_or(default_port);
                let by_ip = || self.remotes.iter().filter(|(c, _)| c.ip() == ip);
                let found = by_ip().find(|(c, _)| c.port() == port).or_else(|| by_ip().next())?;
                (found.1 != ip).then(|| (found.1, format!("the captured party {}", found.0)))
            }
        }
    }
}

/// One rewrite, for the report.
fn note(file: &str, line: usize, key: &str, from: IpAddr, to: IpAddr, who: &str) -> String {
    format!("{file}:{line}: {key} {from} -> {to} ({who})")
}

/// An IP address as written in a file: bare or in brackets.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// `ip`, `ip:port`, `[v6]:port` or a bare v6 address: the address and port.
fn parse_host_port(s: &str) -> Option<(IpAddr, Option<u16>)> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Some((a.ip(), Some(a.port())));
    }
    if let Some(ip) = parse_ip(s) {
        return Some((ip, None));
    }
    let (host, port) = s.rsplit_once(':')?;
    Some((parse_ip(host)?, port.trim().parse().ok()))
}

/// Replaces the address `from` in `text` by `to`, as written (bracketed or not).
fn swap(text: &str, from: IpAddr, to: IpAddr) -> String {
    text.replacen(&from.to_string(), &to.to_string(), 1)
}

/// Rewrites `iax.conf`-syntax text (also `#include`d files).
fn iax_conf(name: &str, text: &str, parties: &Parties<'_>, notes: &mut Vec<String>) -> String {
    // A static peer's `port=` may follow its `host=`: read each section's port first.
    let mut section_port: BTreeMap<usize, u16> = BTreeMap::new();
    let mut section = 0;
    for line in text.lines() {
        let code = line.split(';').next().unwrap_or("").trim();
        if code.starts_with('[') {
            section += 1;
        } else if let Some((k, v)) = code.split_once('=') {
            if k.trim().eq_ignore_ascii_case("port") {
                if let Ok(p) = v.trim().trim_start_matches('>').trim().parse() {
                    section_port.insert(section, p);
                }
            }
        }
    }
    let mut out = String::with_capacity(text.len());
    section = 0;
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let code = line.split(';').next().unwrap_or("");
        let trimmed = code.trim();
        if trimmed.starts_with('[') {
            section += 1;
        }
        let rewritten = trimmed.split_once('=').and_then(|(k, v)| {
            let key = k.trim().to_ascii_lowercase();
            let v = v.trim_start_matches('>').trim();
            match key.as_str() {
                "bindaddr" => {
                    let ip = parse_ip(v)?;
                    let (to, who) = parties.map(ip, None, Names::Switch)?;
                    Some((ip, to, who, key))
                }
                "host" => {
                    let ip = parse_ip(v)?;
                    let port = section_port.get(&section).copied();
                    let (to, who) = parties.map(ip, port, Names::Remote { default_port: 4569 })?;
                    Some((ip, to, who, key))
                }
                "register" => {
                    // [user[:secret]@]host[:port][/contact]
                    let target = v.rsplit_once('@').map_or(v, |(_, h)| h);
                    let target = target.split('/').next().unwrap_or(target);
                    let (ip, port) = parse_host_port(target)?;
                    let (to, who) = parties.map(ip, port, Names::Remote { default_port: 4569 })?;
                    Some((ip, to, who, "register =>".to_string()))
                }
                _ => None,
            }
        });
        match rewritten {
            Some((from, to, who, key)) => {
                notes.push(note(name, n + 1, &key, from, to, &who));
                // Only the code part changes; a comment after it is kept.
                let comment = &line[code.len()..];
                out.push_str(&swap(code, from, to));
                out.push_str(comment);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// Rewrites `switch.toml`: `[sip] listen`/`rtp` (the switch) and gateways' `proxy`.
fn switch_toml(name: &str, text: &str, parties: &Parties<'_>, notes: &mut Vec<String>) -> String {
    let mut out = String::with_capacity(text.len());
    for (n, line) in text.split_inclusive('\n').enumerate() {
        let code = line.split('#').next().unwrap_or("");
        let rewritten = code.split_once('=').and_then(|(k, v)| {
            let key = k.trim().to_ascii_lowercase();
            let names = match key.as_str() {
                "listen" | "rtp" => Names::Switch,
                "proxy" => Names::Remote { default_port: 5060 },
                _ => return None,
            };
            let (ip, port) = parse_host_port(v.trim().trim_matches('"'))?;
            let (to, who) = parties.map(ip, port, names)?;
            Some((ip, to, who, key))
        });
        match rewritten {
            Some((from, to, who, key)) => {
                notes.push(note(name, n + 1, &key, from, to, &who));
                out.push_str(&swap(code, from, to));
                out.push_str(&line[code.len()..]);
            }
            None => out.push_str(line),
        }
    }
    out
}

/// The configuration files with every address of a captured party mapped to
/// its simulated one, and one note per rewrite (in file and line order).
pub(crate) fn map(files: &BTreeMap<String, String>, parties: &Parties<'_>) -> (BTreeMap<String, String>, Vec<String>) {
    let mut notes = Vec::new();
    let out = files
        .iter()
        .map(|(name, text)| {
            let text = if name.ends_with(".toml") {
                switch_toml(name, text, parties, &mut notes)
            } else if name.ends_with(".conf") {
                iax_conf(name, text, parties, &mut notes)
            } else {
                text.clone()
            };
            (name.clone(), text)
        })
        .collect();
    (out, notes)
}

/// The endpoint the configuration binds, when it names one address (not
/// 0.0.0.0/::): the party the switch plays.
pub(crate) fn bound(bind: SocketAddr, endpoints: &[SocketAddr]) -> Option<SocketAddr> {
    if bind.ip().is_unspecified() {
        // Only the port is known: the party if exactly one endpoint uses it.
        let mut on_port = endpoints.iter().filter(|e| e.port() == bind.port());
        let one = on_port.next()?;
        return on_port.next().is_none().then_some(*one);
    }
    endpoints.iter().find(|e| **e == bind).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn loopback_addresses_map_by_port() {
        let remotes = [(a("127.0.0.1:4570"), a("192.168.0.2:1").ip())];
        let parties = Parties { switch: (a("127.0.0.1:4569"), a("192.168.0.1:1").ip()), remotes: &remotes };
        let iax = "[general]\nbindaddr = 127.0.0.1 ; loopback\nregister => me:pw@127.0.0.1:4570/100\n\n\
                   [peer]\ntype=friend\nhost=127.0.0.1\nport=4570\n";
        let toml = "[sip]\nlisten = \"127.0.0.1:5060\"\n[sip.gateways.g]\nproxy = \"127.0.0.1:4570\"\n";
        let files = BTreeMap::from([("iax.conf".to_string(), iax.to_string()), ("switch.toml".into(), toml.into())]);
        let (out, notes) = map(&files, &parties);
        assert_eq!(
            out["iax.conf"],
            "[general]\nbindaddr = 192.168.0.1 ; loopback\nregister => me:pw@192.168.0.2:4570/100\n\n\
             [peer]\ntype=friend\nhost=192.168.0.2\nport=4570\n"
        );
        assert_eq!(
            out["switch.toml"],
            "[sip]\nlisten = \"192.168.0.1:5060\"\n[sip.gateways.g]\nproxy = \"192.168.0.2:4570\"\n"
        );
        assert_eq!(notes[0], "iax.conf:2: bindaddr 127.0.0.1 -> 192.168.0.1 (the switch's simulated address)");
        assert_eq!(notes.len(), 5);
    }

    #[test]
    fn unspecified_bind_and_unknown_hosts_stay() {
        let remotes = [(a("10.0.0.2:4569"), a("10.0.0.2:1").ip())];
        let parties = Parties { switch: (a("10.0.0.1:4569"), a("10.0.0.1:1").ip()), remotes: &remotes };
        let iax = "[general]\nbindaddr = 0.0.0.0\n[p]\nhost = 10.9.9.9\n";
        let files = BTreeMap::from([("iax.conf".to_string(), iax.to_string())]);
        let (out, notes) = map(&files, &parties);
        assert_eq!(out["iax.conf"], iax);
        assert!(notes.is_empty());
    }

    #[test]
    fn the_bound_party() {
        let eps = [a("127.0.0.1:4569"), a("127.0.0.1:4570")];
        assert_eq!(bound(a("127.0.0.1:4570"), &eps), Some(eps[1]));
        assert_eq!(bound(a("0.0.0.0:4570"), &eps), Some(eps[1]));
        assert_eq!(bound(a("0.0.0.0:4569"), &[a("10.0.0.1:4569"), a("10.0.0.2:4569")]), None);
    }
}

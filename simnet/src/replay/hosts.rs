//! Which simulated address each captured party gets, and what in a capture
//! cannot be driven at all.
//!
//! turmoil gives every host one IP address and refuses a second host on an
//! address already taken (it panics), so the address plan is made here,
//! before any host exists, and is checked to be one address per party.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::capture::Capture;

/// Remote parties the fallback plan (192.168.0.2 ... .254) can hold.
const MAX_FALLBACK_REMOTES: usize = 253;

/// The simulated address of the switch and of each remote party, in the
/// order of the role's remotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Hosts {
    pub switch: IpAddr,
    pub remotes: Vec<IpAddr>,
}

/// The captured addresses when they make a valid simulated network (every
/// party on its own usable address of one family), else a private plan.
pub(crate) fn assign(switch: SocketAddr, remotes: &[SocketAddr]) -> Result<Hosts, String> {
    if let Some(h) = captured(switch.ip(), remotes) {
        return Ok(h);
    }
    if remotes.len() > MAX_FALLBACK_REMOTES {
        return Err(format!(
            "{} remote parties talk to the switch; the simulated network gives at most {MAX_FALLBACK_REMOTES} of them an address",
            remotes.len()
        ));
    }
    let v4 = switch.is_ipv4();
    let ip = |n: u16| -> IpAddr {
        if v4 {
            IpAddr::V4(Ipv4Addr::new(192, 168, 0, n as u8))
        } else {
            IpAddr::V6(Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, n))
        }
    };
    Ok(Hosts { switch: ip(1), remotes: (0..remotes.len()).map(|i| ip(i as u16 + 2)).collect() })
}

/// The captured addresses, when every party has its own usable one.
fn captured(switch: IpAddr, remotes: &[SocketAddr]) -> Option<Hosts> {
    let usable = |ip: &IpAddr| !ip.is_loopback() && !ip.is_unspecified() && !ip.is_multicast();
    if !usable(&switch) {
        return None;
    }
    // One host per address: two parties on one IP (different ports, or the
    // switch's own IP) cannot keep it, so the whole plan falls back.
    let mut seen = BTreeSet::from([switch]);
    for r in remotes {
        let ip = r.ip();
        if !usable(&ip) || ip.is_ipv4() != switch.is_ipv4() || !seen.insert(ip) {
            return None;
        }
    }
    Some(Hosts { switch, remotes: remotes.iter().map(SocketAddr::ip).collect() })
}

/// Why nothing in `capture` can be driven, when the reason is a transport
/// or encapsulation the switch does not serve; `None` when the capture
/// simply holds no IAX2 or SIP.
pub(crate) fn undrivable(capture: &Capture) -> Option<String> {
    let mut reasons = Vec::new();
    if capture.skipped.websocket_streams > 0 {
        reasons.push(format!(
            "SIP over WebSocket ({} TCP direction(s) upgraded to WebSocket; the switch serves SIP on UDP only)",
            capture.skipped.websocket_streams
        ));
    }
    // BTreeMap: the reasons come in protocol-number order, the same every run.
    for (proto, n) in &capture.skipped.other_ip_protocols {
        let what = match proto {
            4 => "IP-in-IP (IPv4 inside IP: a tunnel this replay does not open)",
            41 => "IPv6-in-IP (6in4: a tunnel this replay does not open)",
            47 => "GRE (a tunnel this replay does not open)",
            50 => "ESP (encrypted IPsec)",
            132 => "SCTP (the switch serves SIP on UDP only)",
            _ => continue,
        };
        reasons.push(format!("{n} packet(s) of {what}"));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn captured_addresses_are_kept_when_distinct() {
        let h = assign(a("10.0.0.1:4569"), &[a("10.0.0.2:4569"), a("10.0.0.3:4569")]).unwrap();
        assert_eq!(h.switch, a("10.0.0.1:1").ip());
        assert_eq!(h.remotes, vec![a("10.0.0.2:1").ip(), a("10.0.0.3:1").ip()]);
    }

    #[test]
    fn shared_addresses_get_one_host_each() {
        // Two remotes on one IP used to give turmoil two hosts on one address (a panic).
        let remotes = [a("10.0.0.2:5060"), a("10.0.0.2:5070")];
        let h = assign(a("10.0.0.1:5060"), &remotes).unwrap();
        let all: BTreeSet<IpAddr> = std::iter::once(h.switch).chain(h.remotes.iter().copied()).collect();
        assert_eq!(all.len(), 3);
        // Loopback: every party on 127.0.0.1, told apart by port.
        let h = assign(a("127.0.0.1:4569"), &[a("127.0.0.1:4570")]).unwrap();
        assert!(!h.switch.is_loopback() && h.switch != h.remotes[0]);
    }

    #[test]
    fn too_many_parties_is_a_reason_not_a_panic() {
        let remotes: Vec<SocketAddr> = (0..300).map(|i| SocketAddr::new(a("127.0.0.1:1").ip(), 1000 + i)).collect();
        assert!(assign(a("127.0.0.1:5060"), &remotes).is_err());
    }
}

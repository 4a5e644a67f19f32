//! Telling a phone behind NAT, as Kamailio's nathelper `nat_uac_test` does:
//! the request came from another address than its top Via claims, or its
//! Contact names another address than the one it came from, or its Contact
//! or SDP uses a private address while it came from a routable one.
//!
//! What follows from it lives in the endpoint: the binding's reach address is
//! the source (fix_nated_register), a call's SDP address becomes the source IP
//! (fix_nated_sdp) until strict RTP learns the real one, and NATed bindings
//! get OPTIONS keepalives (natping).

use std::net::{IpAddr, SocketAddr};

use super::header::Via;
use super::uri::Uri;

/// Addresses that do not route on the Internet: RFC 1918, shared address
/// space (RFC 6598, carrier-grade NAT), link-local, IPv6 unique-local and
/// link-local. Loopback is not among them: a phone on the switch's host is
/// not behind NAT.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || v4.is_link_local() || (o[0] == 100 && (o[1] & 0xc0) == 64) || v4.is_unspecified()
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80 || v6.is_unspecified()
        }
    }
}

/// An address literal, IPv4-mapped IPv6 as IPv4 (a dual-stack socket
/// reports IPv4 sources that way).
fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// The top Via's sent-by is not where the request came from.
pub fn via_differs(via: &Via, from: SocketAddr) -> bool {
    host_ip(&via.host) != Some(from.ip().to_canonical()) || via.port.unwrap_or(5060) != from.port()
}

/// The Contact names another address than the source, or a private one
/// while the source is routable. A Contact with a host name says nothing.
pub fn contact_differs(contact: &Uri, from: SocketAddr) -> bool {
    let Some(ip) = host_ip(&contact.host) else { return false };
    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
    SocketAddr::new(ip, contact.port.unwrap_or(5060)) != from || private_behind_public(ip, from.ip())
}

/// `signalled` is private but the packet came from a routable address.
pub fn private_behind_public(signalled: IpAddr, source: IpAddr) -> bool {
    let (signalled, source) = (signalled.to_canonical(), source.to_canonical());
    is_private(signalled) && !is_private(source) && !source.is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn via(s: &str) -> Via {
        Via::parse(s).unwrap()
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "169.254.1.1",
            "fd00::1",
            "fe80::1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "192.0.2.1", "127.0.0.1", "2001:db8::1", "::1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn a_phone_behind_nat_is_told_by_via_and_contact() {
        let from: SocketAddr = "203.0.113.7:34567".parse().unwrap();
        assert!(via_differs(&via("SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK1;rport"), from));
        assert!(via_differs(&via("SIP/2.0/UDP 203.0.113.7;branch=z9hG4bK1"), from), "default port 5060");
        assert!(!via_differs(&via("SIP/2.0/UDP 203.0.113.7:34567;branch=z9hG4bK1"), from));
        let mapped: SocketAddr = "[::ffff:203.0.113.7]:34567".parse().unwrap();
        assert!(!via_differs(&via("SIP/2.0/UDP 203.0.113.7:34567;branch=z9hG4bK1"), mapped), "dual-stack socket");
        assert!(via_differs(&via("SIP/2.0/UDP phone.example;branch=z9hG4bK1"), from), "a name is not the source");
        assert!(contact_differs(&Uri::parse("sip:alice@192.168.1.20:5060").unwrap(), from));
        assert!(!contact_differs(&Uri::parse("sip:alice@203.0.113.7:34567").unwrap(), from));
        assert!(!contact_differs(&Uri::parse("sip:alice@phone.example").unwrap(), from));
        // Same address, but a private Contact from a public source (a SIP ALG rewrote the port only).
        let lan: SocketAddr = "10.0.0.5:5060".parse().unwrap();
        assert!(!contact_differs(&Uri::parse("sip:alice@10.0.0.5").unwrap(), lan), "both on the LAN");
        assert!(private_behind_public("10.0.0.5".parse().unwrap(), from.ip()));
        assert!(!private_behind_public("10.0.0.5".parse().unwrap(), "127.0.0.1".parse().unwrap()));
    }
}

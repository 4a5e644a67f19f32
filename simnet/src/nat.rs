//! NAT devices after RFC 4787 and, on IPv6 networks, stateful firewalls after
//! RFC 6092: the middleboxes a phone or a switch sits behind.
//!
//! A [`Nat`] is a plain state machine fed the simulated time: the world asks
//! it, for each datagram crossing it, which public source an inside endpoint
//! gets ([`Nat::outbound`]) and whether an outside datagram may come in and
//! to whom ([`Nat::inbound`]). It draws its random ports from its own seeded
//! RNG, so a run is reproducible.
//!
//! The three behaviours of RFC 4787 section 4 apply to both mapping (which
//! outbound flows share one public port) and filtering (which outside
//! endpoints may send in through it): endpoint-independent, address-dependent
//! and address-and-port-dependent. "Full cone" is independent/independent,
//! "restricted cone" independent/address, "port-restricted cone"
//! independent/address-and-port, and "symmetric" address-and-port for both.
//!
//! A firewall ([`Nat::firewall`]) keeps the same filtering state but does not
//! translate: the inside address is its own public address (RFC 6092).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

/// One of RFC 4787's three behaviours, for mapping or for filtering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Whatever the remote endpoint is.
    EndpointIndependent,
    /// Per remote IP address.
    AddressDependent,
    /// Per remote IP address and port.
    AddressAndPortDependent,
}

impl Behaviour {
    pub const NAMES: &'static [&'static str] =
        &["endpoint-independent", "address-dependent", "address-and-port-dependent"];

    pub fn parse(s: &str) -> Option<Behaviour> {
        match s {
            "endpoint-independent" => Some(Behaviour::EndpointIndependent),
            "address-dependent" => Some(Behaviour::AddressDependent),
            "address-and-port-dependent" => Some(Behaviour::AddressAndPortDependent),
            _ => None,
        }
    }

    /// The part of a remote endpoint this behaviour tells apart.
    fn remote_key(self, remote: SocketAddr) -> Option<SocketAddr> {
        match self {
            Behaviour::EndpointIndependent => None,
            Behaviour::AddressDependent => Some(SocketAddr::new(remote.ip(), 0)),
            Behaviour::AddressAndPortDependent => Some(remote),
        }
    }
}

/// How a NAT device behaves.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NatConfig {
    pub mapping: Behaviour,
    pub filtering: Behaviour,
    /// Idle time after which a mapping is forgotten. Outbound traffic
    /// refreshes it (RFC 4787 REQ-6); inbound traffic only with
    /// `inbound_refresh`.
    pub binding_timeout: Duration,
    /// Inbound datagrams let through refresh the mapping too (REQ-6 leaves it
    /// open; Linux conntrack does, checked live in `tests/live_actors.rs`).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub inbound_refresh: bool,
    /// Keep the inside port as the public port when it is free (REQ-3 allows it).
    pub port_preservation: bool,
    /// Let inside hosts reach each other through the public address (REQ-9).
    pub hairpinning: bool,
}

impl Default for NatConfig {
    /// RFC 4787's recommendations: endpoint-independent mapping,
    /// address-dependent filtering, a 2 minute timeout (REQ-5), hairpinning.
    fn default() -> Self {
        NatConfig {
            mapping: Behaviour::EndpointIndependent,
            filtering: Behaviour::AddressDependent,
            binding_timeout: Duration::from_secs(120),
            inbound_refresh: false,
            port_preservation: true,
            hairpinning: true,
        }
    }
}

/// Why a datagram did not cross the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Nothing inside ever sent through that public port (or it expired).
    NoMapping,
    /// A mapping exists, but the inside endpoint never sent to this remote.
    Filtered,
    /// Inside to the device's own public address, with hairpinning off.
    NoHairpinning,
    /// An outside host addressed an inside (private) address directly.
    PrivateAddress,
}

impl Refusal {
    pub fn describe(self) -> &'static str {
        match self {
            Refusal::NoMapping => "no binding for that public port (never opened, or expired)",
            Refusal::Filtered => "the inside endpoint never sent to that remote (filtering)",
            Refusal::NoHairpinning => "hairpinning is off",
            Refusal::PrivateAddress => "sent to a private address behind the NAT",
        }
    }
}

/// What a NAT tells the world about its bindings (for the trace).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NatNotice {
    Created { at: Duration, inside: SocketAddr, public: SocketAddr },
    Expired { at: Duration, inside: SocketAddr, public: SocketAddr, idle: Duration },
}

#[derive(Clone, Debug)]
struct Mapping {
    inside: SocketAddr,
    /// Remote endpoints the inside sent to, with the last time it did.
    contacted: BTreeMap<SocketAddr, Duration>,
    last_out: Duration,
}

/// A NAT device (or, with `translate` off, a stateful firewall).
#[derive(Clone, Debug)]
pub struct Nat {
    public_ip: IpAddr,
    translate: bool,
    config: NatConfig,
    rng: ChaCha20Rng,
    /// (inside, remote key of the mapping behaviour) -> public address.
    by_flow: BTreeMap<(SocketAddr, Option<SocketAddr>), SocketAddr>,
    /// Public address (the inside address, for a firewall) -> mapping.
    mappings: BTreeMap<SocketAddr, Mapping>,
    notices: Vec<NatNotice>,
}

/// RFC 6092 (REC-15 and RFC 4787 REQ-5 before it): UDP state lives at least this long.
pub const FIREWALL_MIN_TIMEOUT: Duration = Duration::from_secs(120);

/// The first public port a NAT picks when it does not preserve ports.
const DYNAMIC_PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;

impl Nat {
    /// A NAT translating inside endpoints to `public_ip`.
    pub fn new(public_ip: IpAddr, config: NatConfig, seed: u64) -> Nat {
        Nat {
            public_ip,
            translate: true,
            config,
            rng: ChaCha20Rng::seed_from_u64(seed),
            by_flow: BTreeMap::new(),
            mappings: BTreeMap::new(),
            notices: Vec::new(),
        }
    }

    /// A stateful firewall without translation (IPv6, RFC 6092): only the
    /// filtering and the timeout of `config` apply, and the timeout is at
    /// least the two minutes RFC 6092 requires for UDP state.
    pub fn firewall(mut config: NatConfig, seed: u64) -> Nat {
        config.binding_timeout = config.binding_timeout.max(FIREWALL_MIN_TIMEOUT);
        let mut nat = Nat::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), config, seed);
        nat.translate = false;
        nat
    }

    pub fn public_ip(&self) -> IpAddr {
        self.public_ip
    }

    pub fn translates(&self) -> bool {
        self.translate
    }

    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    /// What happened to bindings since the last call.
    pub fn take_notices(&mut self) -> Vec<NatNotice> {
        std::mem::take(&mut self.notices)
    }

    /// Forgets mappings idle longer than the timeout, noting when each expired.
    /// (`last_out` is the last refresh: outbound, or inbound with `inbound_refresh`.)
    fn expire(&mut self, now: Duration) {
        let timeout = self.config.binding_timeout;
        let dead: Vec<SocketAddr> =
            self.mappings.iter().filter(|(_, m)| now >= m.last_out + timeout).map(|(p, _)| *p).collect();
        for public in dead {
            let Some(m) = self.mappings.remove(&public) else { continue };
            self.by_flow.retain(|_, p| *p != public);
            self.notices.push(NatNotice::Expired { at: m.last_out + timeout, inside: m.inside, public, idle: timeout });
        }
    }

    /// An inside endpoint sends to `remote`: the source the remote sees.
    pub fn outbound(&mut self, now: Duration, inside: SocketAddr, remote: SocketAddr) -> SocketAddr {
        self.expire(now);
        let flow = (inside, if self.translate { self.config.mapping.remote_key(remote) } else { None });
        let public = match self.by_flow.get(&flow) {
            Some(p) => *p,
            None => {
                let public = self.pick_public(inside);
                self.by_flow.insert(flow, public);
                self.mappings.entry(public).or_insert_with(|| Mapping {
                    inside,
                    contacted: BTreeMap::new(),
                    last_out: now,
                });
                self.notices.push(NatNotice::Created { at: now, inside, public });
                public
            }
        };
        let m = self.mappings.get_mut(&public).expect("by_flow names live mappings");
        m.last_out = now;
        m.contacted.insert(remote, now);
        let timeout = self.config.binding_timeout;
        m.contacted.retain(|_, t| now < *t + timeout);
        public
    }

    fn pick_public(&mut self, inside: SocketAddr) -> SocketAddr {
        if !self.translate {
            return inside;
        }
        let preserved = SocketAddr::new(self.public_ip, inside.port());
        if self.config.port_preservation && !self.mappings.contains_key(&preserved) {
            return preserved;
        }
        loop {
            let p = SocketAddr::new(self.public_ip, self.rng.gen_range(DYNAMIC_PORTS));
            if !self.mappings.contains_key(&p) {
                return p;
            }
        }
    }

    /// An outside endpoint `remote` sends to `public` (an inside address, for
    /// a firewall): the inside endpoint it reaches, or why not.
    pub fn inbound(&mut self, now: Duration, remote: SocketAddr, public: SocketAddr) -> Result<SocketAddr, Refusal> {
        self.expire(now);
        let Some(m) = self.mappings.get(&public) else {
            return Err(Refusal::NoMapping);
        };
        let timeout = self.config.binding_timeout;
        let allowed = match self.config.filtering.remote_key(remote) {
            None => true,
            Some(key) => m.contacted.iter().any(|(r, t)| {
                now < *t + timeout
                    && match self.config.filtering {
                        Behaviour::AddressDependent => r.ip() == key.ip(),
                        _ => *r == key,
                    }
            }),
        };
        if allowed {
            let inside = m.inside;
            if self.config.inbound_refresh {
                let m = self.mappings.get_mut(&public).expect("looked up above");
                m.last_out = now;
                if let Some(t) = m.contacted.get_mut(&remote) {
                    *t = now;
                }
            }
            Ok(inside)
        } else {
            Err(Refusal::Filtered)
        }
    }

    /// An inside endpoint sends to another one through the public address.
    pub fn hairpin(
        &mut self,
        now: Duration,
        inside: SocketAddr,
        public: SocketAddr,
    ) -> Result<(SocketAddr, SocketAddr), Refusal> {
        if !self.config.hairpinning {
            return Err(Refusal::NoHairpinning);
        }
        // REQ-9: the target sees the sender's external source address.
        let src = self.outbound(now, inside, public);
        let to = self.inbound(now, src, public)?;
        Ok((src, to))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }
    const S: fn(u64) -> Duration = Duration::from_secs;

    fn nat(mapping: Behaviour, filtering: Behaviour) -> Nat {
        let config = NatConfig {
            mapping,
            filtering,
            binding_timeout: S(30),
            inbound_refresh: false,
            port_preservation: false,
            hairpinning: false,
        };
        Nat::new("203.0.113.1".parse().unwrap(), config, 7)
    }

    #[test]
    fn full_cone_lets_anyone_in_once_a_mapping_exists() {
        let mut n = nat(Behaviour::EndpointIndependent, Behaviour::EndpointIndependent);
        let public = n.outbound(S(0), a("10.0.0.2:5060"), a("192.168.0.1:5060"));
        assert_eq!(public.ip(), n.public_ip());
        // Same mapping to another remote (endpoint-independent mapping).
        assert_eq!(n.outbound(S(1), a("10.0.0.2:5060"), a("192.168.0.9:7000")), public);
        assert_eq!(n.inbound(S(2), a("192.168.0.50:1"), public), Ok(a("10.0.0.2:5060")));
        assert_eq!(n.inbound(S(2), a("192.168.0.50:1"), a("203.0.113.1:1")), Err(Refusal::NoMapping));
    }

    #[test]
    fn restricted_cones_filter_by_address_or_address_and_port() {
        let mut n = nat(Behaviour::EndpointIndependent, Behaviour::AddressDependent);
        let public = n.outbound(S(0), a("10.0.0.2:5060"), a("192.168.0.1:5060"));
        assert!(n.inbound(S(1), a("192.168.0.1:16400"), public).is_ok());
        assert_eq!(n.inbound(S(1), a("192.168.0.2:5060"), public), Err(Refusal::Filtered));
        let mut n = nat(Behaviour::EndpointIndependent, Behaviour::AddressAndPortDependent);
        let public = n.outbound(S(0), a("10.0.0.2:5060"), a("192.168.0.1:5060"));
        assert!(n.inbound(S(1), a("192.168.0.1:5060"), public).is_ok());
        assert_eq!(n.inbound(S(1), a("192.168.0.1:16400"), public), Err(Refusal::Filtered));
    }

    #[test]
    fn symmetric_nat_maps_each_remote_to_its_own_port() {
        let mut n = nat(Behaviour::AddressAndPortDependent, Behaviour::AddressAndPortDependent);
        let p1 = n.outbound(S(0), a("10.0.0.2:4000"), a("192.168.0.1:5060"));
        let p2 = n.outbound(S(0), a("10.0.0.2:4000"), a("192.168.0.1:16400"));
        assert_ne!(p1, p2);
        assert_eq!(n.inbound(S(1), a("192.168.0.1:16400"), p1), Err(Refusal::Filtered));
        assert_eq!(n.inbound(S(1), a("192.168.0.1:16400"), p2), Ok(a("10.0.0.2:4000")));
    }

    #[test]
    fn idle_bindings_expire_and_outbound_traffic_refreshes_them() {
        let mut n = nat(Behaviour::EndpointIndependent, Behaviour::AddressDependent);
        let public = n.outbound(S(0), a("10.0.0.2:5060"), a("192.168.0.1:5060"));
        n.outbound(S(20), a("10.0.0.2:5060"), a("192.168.0.1:5060"));
        assert!(n.inbound(S(45), a("192.168.0.1:5060"), public).is_ok(), "refreshed at 20 s");
        assert_eq!(n.inbound(S(50), a("192.168.0.1:5060"), public), Err(Refusal::NoMapping));
        let notices = n.take_notices();
        assert!(matches!(notices.last(), Some(NatNotice::Expired { at, .. }) if *at == S(50)), "{notices:?}");
    }

    #[test]
    fn inbound_traffic_refreshes_only_when_configured() {
        for (inbound_refresh, alive) in [(false, false), (true, true)] {
            let config = NatConfig { binding_timeout: S(30), inbound_refresh, ..NatConfig::default() };
            let mut n = Nat::new("203.0.113.1".parse().unwrap(), config, 1);
            let public = n.outbound(S(0), a("10.0.0.2:5060"), a("192.168.0.1:5060"));
            assert!(n.inbound(S(20), a("192.168.0.1:5060"), public).is_ok());
            assert_eq!(
                n.inbound(S(40), a("192.168.0.1:5060"), public).is_ok(),
                alive,
                "inbound_refresh {inbound_refresh}"
            );
        }
    }

    #[test]
    fn two_hosts_on_one_port_get_different_public_ports() {
        let config = NatConfig { port_preservation: true, ..NatConfig::default() };
        let mut n = Nat::new("203.0.113.1".parse().unwrap(), config, 1);
        let p1 = n.outbound(S(0), a("10.0.0.2:5060"), a("192.168.0.1:5060"));
        let p2 = n.outbound(S(0), a("10.0.0.3:5060"), a("192.168.0.1:5060"));
        assert_eq!(p1.port(), 5060, "preserved");
        assert_ne!(p1, p2);
        assert_eq!(n.inbound(S(1), a("192.168.0.1:5060"), p2), Ok(a("10.0.0.3:5060")));
    }

    #[test]
    fn hairpinning_shows_the_external_source() {
        let full_cone = NatConfig { filtering: Behaviour::EndpointIndependent, ..NatConfig::default() };
        let mut n = Nat::new("203.0.113.1".parse().unwrap(), full_cone, 1);
        let pb = n.outbound(S(0), a("10.0.0.3:4000"), a("10.0.0.2:4000"));
        let (src, to) = n.hairpin(S(1), a("10.0.0.2:4000"), pb).unwrap();
        assert_eq!(src.ip(), n.public_ip());
        assert_eq!(to, a("10.0.0.3:4000"));
        let mut off =
            Nat::new("203.0.113.1".parse().unwrap(), NatConfig { hairpinning: false, ..NatConfig::default() }, 1);
        assert_eq!(off.hairpin(S(0), a("10.0.0.2:4000"), pb), Err(Refusal::NoHairpinning));
    }

    #[test]
    fn a_firewall_filters_without_translating() {
        let mut f = Nat::firewall(NatConfig::default(), 1);
        let inside = a("[2001:db8::2]:5060");
        assert_eq!(f.inbound(S(0), a("[2001:db8:1::1]:5060"), inside), Err(Refusal::NoMapping));
        assert_eq!(f.outbound(S(0), inside, a("[2001:db8:1::1]:5060")), inside);
        assert_eq!(f.inbound(S(1), a("[2001:db8:1::1]:16400"), inside), Ok(inside));
        assert_eq!(f.inbound(S(1), a("[2001:db8:1::7]:5060"), inside), Err(Refusal::Filtered));
    }
}

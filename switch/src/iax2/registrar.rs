//! The server role of registration: deciding on REGREQ/REGREL from peers with
//! `host=dynamic`, and remembering where each registered peer is until its
//! registration expires.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{General, Host, IaxConfig, PeerConfig};

/// Grace after the granted interval before a silent peer is dropped.
const EXPIRY_GRACE: Duration = Duration::from_secs(5);

/// Why a registration was refused. The peer is only ever told
/// "Registration Refused", so it cannot probe which names exist; the
/// operator sees this reason in the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NoSuchPeer,
    NotDynamic,
    AclDenied,
    NoUsername,
    WrongSecret,
    NoAuthMethod,
    CallTokenRequired,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::NoSuchPeer => "no peer of that name",
            Refusal::NotDynamic => "peer is not host=dynamic",
            Refusal::AclDenied => "source address denied by permit/deny",
            Refusal::NoUsername => "REGREQ without USERNAME",
            Refusal::WrongSecret => "authentication failed: response matches no secret",
            Refusal::NoAuthMethod => "no authentication method in common",
            Refusal::CallTokenRequired => "call token required but the peer sent none",
        }
    }
}

/// A peer registered to us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    pub addr: SocketAddr,
    pub expiry: u16,
    pub expires_at: Instant,
}

#[derive(Default)]
pub struct Registrar {
    registered: BTreeMap<String, Registered>,
}

/// Looks up the peer a REGREQ names and checks it may register from `from`.
pub fn find_peer<'c>(config: &'c IaxConfig, username: &str, from: SocketAddr) -> Result<&'c PeerConfig, Refusal> {
    let peer = config
        .peers
        .iter()
        .find(|p| p.kind.is_peer() && p.name.eq_ignore_ascii_case(username))
        .ok_or(Refusal::NoSuchPeer)?;
    if !matches!(peer.host, Host::Dynamic { .. }) {
        return Err(Refusal::NotDynamic);
    }
    if !peer.acl.permits(from.ip()) {
        return Err(Refusal::AclDenied);
    }
    Ok(peer)
}

/// The interval we grant for a requested REFRESH (absent: the default 60 s).
pub fn granted_expiry(general: &General, requested: Option<u16>) -> u16 {
    let requested = u32::from(requested.unwrap_or(60));
    requested.clamp(general.minregexpire, general.maxregexpire.max(general.minregexpire)).min(u16::MAX.into()) as u16
}

impl Registrar {
    /// Records a registration; returns whether the peer's address changed.
    pub fn register(&mut self, now: Instant, peer: &str, addr: SocketAddr, expiry: u16) -> bool {
        let expires_at = now + Duration::from_secs(expiry.into()) + EXPIRY_GRACE;
        let previous = self.registered.insert(peer.to_string(), Registered { addr, expiry, expires_at });
        previous.is_none_or(|p| p.addr != addr)
    }

    pub fn unregister(&mut self, peer: &str) -> Option<Registered> {
        self.registered.remove(peer)
    }

    pub fn get(&self, peer: &str) -> Option<&Registered> {
        self.registered.get(peer)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Registered)> {
        self.registered.iter()
    }

    /// Removes and returns the peers whose registration has expired.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let expired: Vec<String> =
            self.registered.iter().filter(|(_, r)| r.expires_at <= now).map(|(n, _)| n.clone()).collect();
        for name in &expired {
            self.registered.remove(name);
        }
        expired
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.registered.values().map(|r| r.expires_at).min()
    }

    /// Drops registrations of peers that a new configuration no longer has.
    pub fn retain_configured(&mut self, config: &IaxConfig) -> Vec<String> {
        let gone: Vec<String> = self
            .registered
            .keys()
            .filter(|name| !config.peers.iter().any(|p| p.kind.is_peer() && &p.name == *name))
            .cloned()
            .collect();
        for name in &gone {
            self.registered.remove(name);
        }
        gone
    }
}

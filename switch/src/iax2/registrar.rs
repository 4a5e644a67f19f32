//! The server role of registration: deciding on REGREQ/REGREL from peers with
//! `host=dynamic`, and remembering where each registered peer is until its
//! registration expires.
//!
//! The registry can outlive the process: [`Registrar::take_changed`] tells the
//! runtime when to save a [`Registrar::snapshot`], and [`Registrar::restore`]
//! takes saved entries back at start. Time stays relative here (an `Instant`
//! and what remains of an interval); the runtime owns the wall clock.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::config::{General, Host, IaxConfig, PeerConfig};
use crate::deadline::DeadlineIndex;

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

/// A registration as it is saved and restored: who, where, the granted
/// interval and how much of it (with the grace) was left when saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedRegistration {
    pub peer: String,
    pub addr: SocketAddr,
    pub expiry: u16,
    pub remaining: Duration,
}

#[derive(Default)]
pub struct Registrar {
    registered: BTreeMap<String, Registered>,
    /// When each registration expires: the next expiry without a walk.
    expiries: DeadlineIndex<String>,
    /// Set by every change of the registry, including a refresh (which moves
    /// the deadline a saved copy must carry); cleared by `take_changed`.
    changed: bool,
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
        let previous = self.put(peer, Registered { addr, expiry, expires_at });
        self.changed = true;
        previous.is_none_or(|p| p.addr != addr)
    }

    pub fn unregister(&mut self, peer: &str) -> Option<Registered> {
        let removed = self.take(peer);
        self.changed |= removed.is_some();
        removed
    }

    /// Whether the registry changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// Every live registration with the time it has left at `now`.
    pub fn snapshot(&self, now: Instant) -> Vec<SavedRegistration> {
        self.registered
            .iter()
            .filter(|(_, r)| r.expires_at > now)
            .map(|(peer, r)| SavedRegistration {
                peer: peer.clone(),
                addr: r.addr,
                expiry: r.expiry,
                remaining: r.expires_at - now,
            })
            .collect()
    }

    /// Takes back a saved registration unless one is already known (a fresh
    /// REGREQ wins over a saved one) or it has no time left; returns whether
    /// it was restored. The caller has checked the peer may register.
    pub fn restore(&mut self, now: Instant, saved: &SavedRegistration) -> bool {
        if saved.remaining.is_zero() || self.registered.contains_key(&saved.peer) {
            return false;
        }
        // A saved interval can never exceed what a REGREQ could have been granted.
        let remaining = saved.remaining.min(Duration::from_secs(saved.expiry.into()) + EXPIRY_GRACE);
        let entry = Registered { addr: saved.addr, expiry: saved.expiry, expires_at: now + remaining };
        self.put(&saved.peer, entry);
        self.changed = true;
        true
    }

    pub fn get(&self, peer: &str) -> Option<&Registered> {
        self.registered.get(peer)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Registered)> {
        self.registered.iter()
    }

    /// Removes and returns the peers whose registration has expired.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let mut expired = self.expiries.due(now);
        expired.sort_unstable();
        for name in &expired {
            self.take(name);
        }
        self.changed |= !expired.is_empty();
        expired
    }

    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiries.next()
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
            self.take(name);
        }
        self.changed |= !gone.is_empty();
        gone
    }

    fn put(&mut self, peer: &str, entry: Registered) -> Option<Registered> {
        let new = Some(entry.expires_at);
        let previous = self.registered.insert(peer.to_string(), entry);
        self.expiries.set(&peer.to_string(), previous.as_ref().map(|p| p.expires_at), new);
        previous
    }

    fn take(&mut self, peer: &str) -> Option<Registered> {
        let removed = self.registered.remove(peer)?;
        self.expiries.set(&peer.to_string(), Some(removed.expires_at), None);
        Some(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr() -> SocketAddr {
        "192.0.2.7:4569".parse().unwrap()
    }

    #[test]
    fn snapshot_and_restore_keep_the_remaining_time() {
        let t0 = Instant::now();
        let mut r = Registrar::default();
        assert!(!r.take_changed());
        r.register(t0, "b", addr(), 60);
        assert!(r.take_changed());
        assert!(!r.take_changed());
        let later = t0 + Duration::from_secs(20);
        let saved = r.snapshot(later);
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].remaining, Duration::from_secs(45)); // 60 + 5 grace - 20

        let t1 = t0 + Duration::from_secs(1000);
        let mut fresh = Registrar::default();
        assert!(fresh.restore(t1, &saved[0]));
        assert_eq!(fresh.get("b").map(|g| (g.addr, g.expires_at)), Some((addr(), t1 + Duration::from_secs(45))));
        assert_eq!(fresh.next_expiry(), Some(t1 + Duration::from_secs(45)));
        // A second copy, or one with nothing left, is not taken.
        assert!(!fresh.restore(t1, &saved[0]));
        let none_left = SavedRegistration { remaining: Duration::ZERO, peer: "c".into(), ..saved[0].clone() };
        assert!(!fresh.restore(t1, &none_left));
    }

    #[test]
    fn restored_time_is_capped_by_the_interval() {
        let now = Instant::now();
        let mut r = Registrar::default();
        let saved =
            SavedRegistration { peer: "b".into(), addr: addr(), expiry: 60, remaining: Duration::from_secs(86_400) };
        assert!(r.restore(now, &saved));
        assert_eq!(r.get("b").unwrap().expires_at, now + Duration::from_secs(65));
    }

    #[test]
    fn expiry_and_release_are_changes() {
        let now = Instant::now();
        let mut r = Registrar::default();
        r.register(now, "b", addr(), 60);
        r.take_changed();
        assert!(r.expire(now).is_empty());
        assert!(!r.take_changed());
        assert_eq!(r.expire(now + Duration::from_secs(65)), vec!["b".to_string()]);
        assert!(r.take_changed());
        assert!(r.snapshot(now).is_empty());
        assert!(r.unregister("b").is_none());
        assert!(!r.take_changed());
    }
}

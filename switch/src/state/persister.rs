//! The runtime's side of saved registrations: read them once at start, write
//! them after changes. Writes are coalesced to at most one per
//! [`MIN_INTERVAL`], so a registration storm costs one small file a second,
//! never a write per REGREQ.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registrations::{self, FILE, MAX_BYTES};
use super::StateStore;
use crate::iax2::endpoint::Endpoint;

/// The shortest time between two writes of the file.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

pub struct Persister {
    store: Arc<dyn StateStore>,
    dir: String,
    last_save: Option<Instant>,
    /// The registry changed since the last write.
    pending: bool,
    /// The last write failed (logged once until one succeeds again).
    failing: bool,
}

impl Persister {
    pub fn new(store: Arc<dyn StateStore>, dir: String) -> Self {
        Persister { store, dir, last_save: None, pending: false, failing: false }
    }

    /// Hands the saved registrations that are still valid to `endpoint`. A
    /// missing file is a first start; an unreadable or corrupt one is logged
    /// and ignored (the peers will register again), never fatal.
    pub fn restore(&mut self, endpoint: &mut Endpoint, now: Instant) {
        let saved = match self.store.load(&self.dir, FILE, MAX_BYTES) {
            Ok(None) => return,
            Ok(Some(bytes)) => registrations::decode(&bytes, self.store.wall_clock()),
            Err(e) => Err(e),
        };
        match saved {
            Ok(saved) => {
                let restored = endpoint.restore_registrations(now, &saved);
                tracing::info!("restored {restored} of {} saved IAX2 registration(s) from {}", saved.len(), self.dir);
            }
            Err(e) => tracing::warn!("ignoring saved IAX2 registrations in {} ({FILE}): {e}", self.dir),
        }
    }

    /// When the next coalesced write is due, if one is waiting.
    pub fn deadline(&self) -> Option<Instant> {
        // `poll` writes at once when nothing was written yet, so a waiting
        // change always has a previous write to count from.
        self.last_save.filter(|_| self.pending).map(|at| at + MIN_INTERVAL)
    }

    /// Notes whether `endpoint`'s registry changed and writes it when a write
    /// is due; `force` writes a waiting change at once (shutdown).
    pub fn poll(&mut self, endpoint: &mut Endpoint, now: Instant, force: bool) {
        self.pending |= endpoint.registrar_changed();
        let due = force || self.last_save.is_none_or(|at| now >= at + MIN_INTERVAL);
        if !self.pending || !due {
            return;
        }
        self.pending = false;
        self.last_save = Some(now);
        let bytes = registrations::encode(&endpoint.saved_registrations(now), self.store.wall_clock());
        match self.store.save(&self.dir, FILE, &bytes) {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !self.failing {
                    tracing::warn!("cannot save IAX2 registrations in {}: {e}; retrying on the next change", self.dir);
                }
                self.failing = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::{SystemTime, UNIX_EPOCH};

    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;
    use crate::config::{General, Host, IaxConfig, Location, PeerConfig, PeerKind};
    use crate::iax2::endpoint::ResolvedHosts;
    use crate::iax2::registrar::SavedRegistration;
    use crate::state::MemoryStore;

    const DIR: &str = "state";

    fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn endpoint(now: Instant) -> Endpoint {
        let general = General::default();
        let peers = ["b", "c"]
            .iter()
            .map(|name| {
                let mut p = PeerConfig::new(name, PeerKind::Friend, Location::default(), &general);
                p.host = Host::Dynamic { defaultip: None };
                p
            })
            .collect();
        let config = IaxConfig { general, peers, registrations: vec![], callnumberlimits: vec![] };
        Endpoint::new(Arc::new(config), ResolvedHosts::default(), ChaCha20Rng::seed_from_u64(1), now)
    }

    fn saved(peer: &str) -> SavedRegistration {
        let addr: SocketAddr = "192.0.2.9:4569".parse().unwrap();
        SavedRegistration { peer: peer.into(), addr, expiry: 60, remaining: Duration::from_secs(30) }
    }

    fn peers_in(store: &MemoryStore) -> Vec<String> {
        let bytes = store.get(DIR, FILE).expect("a file was written");
        registrations::decode(&bytes, wall()).unwrap().into_iter().map(|s| s.peer).collect()
    }

    #[test]
    fn a_corrupt_or_missing_file_is_ignored() {
        let now = Instant::now();
        let store = MemoryStore::new(wall);
        let mut ep = endpoint(now);
        let mut p = Persister::new(Arc::new(store.clone()), DIR.into());
        p.restore(&mut ep, now); // no file yet: a first start
        store.insert(DIR, FILE, b"{\"version\":1,\"peers\":[{\"peer\":".to_vec());
        p.restore(&mut ep, now);
        assert!(ep.saved_registrations(now).is_empty());
        // Nothing changed, so nothing is written over the corrupt file.
        p.poll(&mut ep, now, false);
        assert!(p.deadline().is_none());
    }

    #[test]
    fn restores_then_writes_changes_at_most_once_a_second() {
        let t0 = Instant::now();
        let store = MemoryStore::new(wall);
        store.insert(DIR, FILE, registrations::encode(&[saved("b"), saved("gone")], wall()));
        let mut ep = endpoint(t0);
        let mut p = Persister::new(Arc::new(store.clone()), DIR.into());
        p.restore(&mut ep, t0);
        // `gone` is not configured: restored without it, and the file says so.
        p.poll(&mut ep, t0, false);
        assert_eq!(peers_in(&store), vec!["b".to_string()]);
        assert!(p.deadline().is_none());

        // A change half a second later waits for the next second.
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(ep.restore_registrations(t1, &[saved("c")]), 1);
        p.poll(&mut ep, t1, false);
        assert_eq!(peers_in(&store), vec!["b".to_string()]);
        assert_eq!(p.deadline(), Some(t0 + MIN_INTERVAL));
        p.poll(&mut ep, t0 + MIN_INTERVAL, false);
        assert_eq!(peers_in(&store), vec!["b".to_string(), "c".to_string()]);
        assert!(p.deadline().is_none());
    }

    #[test]
    fn shutdown_writes_a_waiting_change_at_once() {
        let t0 = Instant::now();
        let store = MemoryStore::new(wall);
        let mut ep = endpoint(t0);
        let mut p = Persister::new(Arc::new(store.clone()), DIR.into());
        ep.restore_registrations(t0, &[saved("b")]);
        p.poll(&mut ep, t0, false);
        ep.restore_registrations(t0, &[saved("c")]);
        p.poll(&mut ep, t0, true);
        assert_eq!(peers_in(&store), vec!["b".to_string(), "c".to_string()]);
    }
}

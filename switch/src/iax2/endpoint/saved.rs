//! Dynamic peers' registrations across a restart: the endpoint says when its
//! registry changed and what it holds, and takes saved entries back at start.
//! Where and how they are kept is the runtime's business (`crate::state`).

use std::time::{Duration, Instant};

use super::Endpoint;
use crate::config::Host;
use crate::event::Event;
use crate::iax2::registrar::SavedRegistration;

impl Endpoint {
    /// Whether the registrar's registry changed since the last call (then a
    /// saved copy is stale).
    pub fn registrar_changed(&mut self) -> bool {
        self.registrar.take_changed()
    }

    /// The registry as it should be saved at `now`.
    pub fn saved_registrations(&self, now: Instant) -> Vec<SavedRegistration> {
        self.registrar.snapshot(now)
    }

    /// Restores saved registrations of peers the configuration still has as
    /// `host=dynamic` and whose ACL still admits the saved address. Each one
    /// restored is reachable at once (calls, and a POKE right now when it is
    /// qualified) and reported as `peer_restored`; returns how many.
    pub fn restore_registrations(&mut self, now: Instant, saved: &[SavedRegistration]) -> usize {
        let mut restored = 0;
        for entry in saved {
            let admitted = self.config.peers.iter().any(|p| {
                p.kind.is_peer()
                    && p.name == entry.peer
                    && matches!(p.host, Host::Dynamic { .. })
                    && p.acl.permits(entry.addr.ip())
            });
            if !admitted || !self.registrar.restore(now, entry) {
                continue;
            }
            restored += 1;
            let remaining = self.registrar.get(&entry.peer).map_or(Duration::ZERO, |r| r.expires_at - now);
            self.events.push_back(Event::PeerRestored {
                peer: entry.peer.clone(),
                addr: entry.addr,
                remaining_s: remaining.as_secs(),
            });
            if let Some(q) = self.qualify.get_mut(&entry.peer) {
                if q.in_flight.is_none() {
                    q.next_poke = Some(now);
                }
            }
        }
        restored
    }
}

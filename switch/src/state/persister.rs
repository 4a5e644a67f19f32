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

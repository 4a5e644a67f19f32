//! Paced origination: `originate count=N` to one peer keeps at most
//! [`MAX_AUTHENTICATING`] of its calls in call setup (NEW sent, not yet
//! accepted) and queues the rest. chan_iax2 refuses more unauthenticated
//! calls than its `maxauthreq` (3 by default) from one user with REJECT
//! "Unauthenticated call limit reached", so a burst of NEWs would lose all
//! but three of its calls.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::calls::Originate;
use super::{Endpoint, Role};
use crate::iax2::call::{CallState, DialString, Direction};

/// Calls to one peer in setup at once: chan_iax2's default `maxauthreq`.
pub const MAX_AUTHENTICATING: usize = 3;

/// What became of an originate request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// The NEW went out; the local call number.
    Started(u16),
    /// Waiting for an earlier call to the same peer to finish its setup.
    Queued,
}

impl Endpoint {
    /// Places a call as [`Endpoint::originate`] does, or queues it while
    /// [`MAX_AUTHENTICATING`] calls to the same peer are still in setup.
    /// Queued calls start, in order, as earlier ones are accepted or fail.
    pub fn originate_paced(&mut self, now: Instant, req: &Originate) -> Result<Placement, String> {
        let addr = self.dial_addr(&DialString::parse(&req.dial)?)?;
        if self.in_setup_to(addr) < MAX_AUTHENTICATING && self.queued_to(addr) == 0 {
            return self.originate(now, req).map(Placement::Started);
        }
        if self.is_trunked(req) {
            self.check_trunk_capacity(addr)?;
        }
        self.queued.push_back((addr, req.clone()));
        Ok(Placement::Queued)
    }

    /// Starts the queued calls whose peer has room (after every input).
    pub(super) fn start_queued(&mut self, now: Instant) {
        if self.queued.is_empty() {
            return;
        }
        let mut in_setup = self.in_setup();
        let mut waiting = VecDeque::with_capacity(self.queued.len());
        while let Some((addr, req)) = self.queued.pop_front() {
            let n = in_setup.entry(addr).or_default();
            if *n >= MAX_AUTHENTICATING {
                waiting.push_back((addr, req));
                continue;
            }
            *n += 1;
            if let Err(e) = self.originate(now, &req) {
                tracing::warn!("queued call to {} not placed: {e}", req.dial);
            }
        }
        self.queued = waiting;
    }

    /// Calls queued for `addr`.
    pub(super) fn queued_to(&self, addr: SocketAddr) -> usize {
        self.queued.iter().filter(|(a, _)| *a == addr).count()
    }

    /// Our calls to `addr` that sent a NEW and are not yet accepted.
    fn in_setup_to(&self, addr: SocketAddr) -> usize {
        self.in_setup().get(&addr).copied().unwrap_or(0)
    }

    /// Our calls in setup (NEW sent, not yet accepted), per peer address.
    fn in_setup(&self) -> BTreeMap<SocketAddr, usize> {
        let mut counts = BTreeMap::new();
        for (_, e) in self.dialogs.iter() {
            let Role::Call(c) = &e.role else { continue };
            let in_setup = matches!(c.state, CallState::NewSent | CallState::AuthSent);
            if c.direction == Direction::Outbound && in_setup && !e.dialog.is_finished() {
                *counts.entry(e.dialog.remote_addr).or_default() += 1;
            }
        }
        counts
    }

    /// Whether a request's calls go in trunk frames (a trunk peer, not encrypted).
    fn is_trunked(&self, req: &Originate) -> bool {
        let Ok(dial) = DialString::parse(&req.dial) else { return false };
        let peer = self.config.peers.iter().find(|p| p.kind.is_peer() && p.name.eq_ignore_ascii_case(&dial.peer));
        peer.is_some_and(|p| p.trunk && !(p.encryption || p.forceencryption))
    }
}

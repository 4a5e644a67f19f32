//! Calls waiting for authentication, capped as chan_iax2's `maxauthreq` caps
//! them (3 by default, 0 for no limit).
//!
//! - Inbound, per user: chan_iax2 counts a call from when it sends AUTHREQ
//!   until the AUTHREP arrives, and REJECTs a NEW beyond the limit with
//!   "Unauthenticated call limit reached". The switch does the same.
//! - Outbound, per peer: `originate count=N` keeps at most the peer's
//!   `maxauthreq` of its calls in setup (NEW sent, not yet accepted or
//!   refused) and queues the rest. Without this, a burst of NEWs to an
//!   Asterisk loses all but three of its calls. The window ends at ACCEPT,
//!   not at our AUTHREP: chan_iax2 handles datagrams on several threads, and
//!   a NEW sent right after an AUTHREP can be checked before that AUTHREP
//!   has been counted off (seen live: 1 call in 250 refused).

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::Instant;

use super::{Endpoint, Role};
use crate::config::PeerConfig;
use crate::iax2::call::{CallState, DialString, Direction};
use crate::protocol::{Originate, OriginateError, Placement};

/// An originate request waiting for its peer to have room.
pub(super) struct Queued {
    addr: SocketAddr,
    /// The peer's `maxauthreq` (never 0 here: unlimited peers do not queue).
    limit: usize,
    req: Originate,
}

impl Endpoint {
    /// Places a call as [`Endpoint::originate`] does, or queues it while the
    /// peer's `maxauthreq` calls to it are waiting for authentication.
    /// Queued calls start, in order, as earlier ones get through.
    pub fn originate_paced(&mut self, now: Instant, req: &Originate) -> Result<Placement, OriginateError> {
        let dial = DialString::parse(&req.dial)?;
        let addr = self.dial_addr(&dial)?;
        let peer = self.config.peers.iter().find(|p| p.kind.is_peer() && p.name.eq_ignore_ascii_case(&dial.peer));
        let limit = peer.map_or(usize::from(self.config.general.defaults.maxauthreq), |p| usize::from(p.maxauthreq));
        let unlimited = limit == 0;
        if unlimited || self.unauthenticated_to().get(&addr).copied().unwrap_or(0) < limit && self.queued_to(addr) == 0
        {
            return self.originate(now, req).map(|_| Placement::Started);
        }
        if peer.is_some_and(PeerConfig::trunked) {
            self.check_trunk_capacity(addr)?;
        }
        self.queued.push_back(Queued { addr, limit, req: req.clone() });
        Ok(Placement::Queued)
    }

    /// Starts the queued calls whose peer has room (after every input).
    pub(super) fn start_queued(&mut self, now: Instant) {
        if self.queued.is_empty() {
            return;
        }
        let mut waiting = self.unauthenticated_to();
        let mut still_queued = VecDeque::with_capacity(self.queued.len());
        while let Some(q) = self.queued.pop_front() {
            let n = waiting.entry(q.addr).or_default();
            if *n >= q.limit {
                still_queued.push_back(q);
                continue;
            }
            *n += 1;
            if let Err(e) = self.originate(now, &q.req) {
                tracing::warn!("queued call to {} not placed: {e}", q.req.dial);
            }
        }
        self.queued = still_queued;
    }

    /// Calls queued for `addr`.
    pub(super) fn queued_to(&self, addr: SocketAddr) -> usize {
        self.queued.iter().filter(|q| q.addr == addr).count()
    }

    /// Our calls in setup (NEW sent, not yet accepted or refused), per peer address.
    fn unauthenticated_to(&self) -> BTreeMap<SocketAddr, usize> {
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

    /// Calls from `user` we challenged and that have not answered yet.
    pub(super) fn unauthenticated_from(&self, user: &str) -> usize {
        self.dialogs
            .iter()
            .filter(|(_, e)| match &e.role {
                Role::Call(c) => {
                    c.state == CallState::Authenticating && c.peer.as_deref() == Some(user) && !e.dialog.is_finished()
                }
                _ => false,
            })
            .count()
    }
}

//! The IAX2 endpoint as the runtime drives it: [`ProtocolCore`] over the
//! inherent methods. IAX2 has one socket and never asks for media sockets:
//! voice travels in the same datagrams as signalling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::Endpoint;
use crate::config::LoadedConfig;
use crate::event::Event;
use crate::protocol::{
    dial_has_tech, Originate, OriginateError, Placement, ProtocolCore, ResolvedHosts, SocketId, Transmit,
};

impl ProtocolCore for Endpoint {
    fn name(&self) -> &'static str {
        "IAX2"
    }

    fn handle_input(&mut self, now: Instant, _socket: SocketId, from: SocketAddr, bytes: &[u8]) {
        self.handle_datagram(now, from, bytes);
    }

    fn handle_timeout(&mut self, now: Instant) {
        Endpoint::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        Endpoint::poll_transmit(self)
    }

    fn poll_timeout(&self) -> Option<Instant> {
        Endpoint::poll_timeout(self)
    }

    fn poll_event(&mut self) -> Option<Event> {
        Endpoint::poll_event(self)
    }

    fn reconfigure(&mut self, now: Instant, loaded: &LoadedConfig, resolved: &ResolvedHosts) {
        Endpoint::reconfigure(self, now, Arc::new(loaded.iax.clone()), resolved.clone());
        self.set_dialplan(loaded.switch.dialplan.clone());
    }

    fn accepts_dial(&self, dial: &str) -> bool {
        dial_has_tech(dial, "IAX2")
    }

    /// Paced by the peer's `maxauthreq` ([`Endpoint::originate_paced`]).
    fn originate(&mut self, now: Instant, request: &Originate) -> Result<Placement, OriginateError> {
        self.originate_paced(now, request)
    }

    fn hangup_all(&mut self, now: Instant) -> usize {
        Endpoint::hangup_all(self, now)
    }
}

//! The SIP endpoint as the runtime drives it: [`ProtocolCore`] over the
//! inherent methods. Signalling arrives on the listener; each call's RTP and
//! RTCP on the media pair it asked for with [`SocketRequest::Open`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::SipEndpoint;
use crate::config::LoadedConfig;
use crate::event::Event;
use crate::protocol::{
    dial_has_tech, Originate, OriginateError, Placement, ProtocolCore, ResolvedHosts, SocketId, SocketRequest, Transmit,
};

impl ProtocolCore for SipEndpoint {
    fn name(&self) -> &'static str {
        "SIP"
    }

    fn handle_input(&mut self, now: Instant, socket: SocketId, from: SocketAddr, bytes: &[u8]) {
        match socket {
            SocketId::Listener => self.handle_signalling(now, from, bytes),
            SocketId::Media(port) => self.handle_media(now, port, from, bytes),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        SipEndpoint::handle_timeout(self, now);
    }

    fn poll_transmit(&mut self) -> Option<Transmit> {
        SipEndpoint::poll_transmit(self)
    }

    fn poll_socket_request(&mut self) -> Option<SocketRequest> {
        self.poll_media_socket()
    }

    fn socket_opened(&mut self, now: Instant, port: u16) {
        self.media_socket_opened(now, port);
    }

    fn socket_failed(&mut self, now: Instant, port: u16, error: &str) {
        self.media_socket_failed(now, port, error);
    }

    fn poll_timeout(&self) -> Option<Instant> {
        SipEndpoint::poll_timeout(self)
    }

    fn poll_event(&mut self) -> Option<Event> {
        SipEndpoint::poll_event(self)
    }

    /// Without `[sip]` in the new configuration SIP stays up, as it is, until a restart.
    fn reconfigure(&mut self, now: Instant, loaded: &LoadedConfig, resolved: &ResolvedHosts) {
        match &loaded.switch.sip {
            Some(settings) => {
                if settings.listen != self.settings.listen || settings.rtp != self.settings.rtp {
                    tracing::warn!("[sip] listen or rtp changed: restart the switch to rebind");
                }
                SipEndpoint::reconfigure(self, now, Arc::new(settings.clone()), resolved);
            }
            None => tracing::warn!("[sip] was removed from switch.toml: SIP stays up until a restart"),
        }
        self.set_dialplan(loaded.switch.dialplan.clone());
    }

    fn accepts_dial(&self, dial: &str) -> bool {
        dial_has_tech(dial, "SIP")
    }

    fn originate(&mut self, now: Instant, request: &Originate) -> Result<Placement, OriginateError> {
        SipEndpoint::originate(self, now, request).map(|_| Placement::Started)
    }

    fn hangup_all(&mut self, now: Instant) -> usize {
        SipEndpoint::hangup_all(self, now)
    }
}

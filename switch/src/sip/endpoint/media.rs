//! RTP on the one media socket: which call a packet belongs to (latching
//! through NAT), echo and bridge relay, the 20 ms clock of generated audio,
//! hold times and the RTP timeout.

use super::*;

impl SipEndpoint {
    /// A datagram on the media socket.
    pub fn handle_media(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        self.stats.rtp_in += 1;
        if rtp::is_rtcp(datagram) {
            // Reports are read for validity only; our figures come from the RTP itself.
            if let Err(e) = rtp::parse_rtcp(datagram) {
                self.drop_datagram(now, from, format!("malformed RTCP: {e}"));
            }
            return;
        }
        let packet = match RtpPacket::parse(datagram) {
            Ok(p) => p,
            Err(e) => return self.drop_datagram(now, from, format!("malformed RTP: {e}")),
        };
        let Some(id) = self.media_call(from) else {
            return self.drop_datagram(now, from, "RTP from no call's address".into());
        };
        let since = now.saturating_duration_since(self.epoch);
        let Some(call) = self.calls.get_mut(&id) else { return };
        let result = call.media.on_rtp(now, since, &packet);
        let destination = call.media.destination();
        // A bridge relays the packet as it came, so DTMF and timing pass untouched.
        if let Some(peer) = call.peer.and_then(|p| self.calls.get_mut(&p)) {
            if peer.answered && peer.media.offered.port() != 0 {
                peer.media.packets_sent += 1;
                let to = peer.media.destination();
                self.send(SipSocket::Media, to, datagram.to_vec());
            }
        }
        if let Some(digit) = result.digit {
            self.events.push_back(Event::SipDtmf { call: id, digit: digit.to_string() });
        }
        if let Some(reply) = result.reply {
            self.send(SipSocket::Media, destination, reply);
        }
    }

    /// The call an RTP packet from `from` belongs to, latching it on the first one.
    pub(super) fn media_call(&mut self, from: SocketAddr) -> Option<u32> {
        let id = match self.by_media_source.get(&from) {
            Some(id) => *id,
            // Not where any SDP said: a phone behind NAT sends from another
            // port (or address) than it offered. Latch the first call still
            // waiting for media from that host.
            None => {
                let id = self
                    .calls
                    .values()
                    .filter(|c| c.media.latched.is_none())
                    .find(|c| c.media.offered.ip() == from.ip() || c.dialog.signalling.ip() == from.ip())?
                    .id;
                self.by_media_source.insert(from, id);
                id
            }
        };
        if let Some(call) = self.calls.get_mut(&id) {
            call.media.latched.get_or_insert(from);
        }
        Some(id)
    }

    /// Routes RTP from the address call `id`'s SDP named to it. A newer offer
    /// of the same address wins over an older call's latch: that phone has
    /// moved on (RFC 3264: the offer says where the offerer receives).
    pub(super) fn expect_media(&mut self, id: u32) {
        let Some(offered) = self.calls.get(&id).map(|c| c.media.offered).filter(|a| a.port() != 0) else { return };
        if let Some(old) = self.by_media_source.insert(offered, id).filter(|old| *old != id) {
            if let Some(call) = self.calls.get_mut(&old) {
                call.media.latched = None;
            }
        }
    }

    pub(super) fn on_media_tick(&mut self, now: Instant) {
        let timeout = Duration::from_secs(u64::from(self.settings.rtp_timeout));
        let mut silent = Vec::new();
        let mut packets = Vec::new();
        let mut held = Vec::new();
        // Legs still ringing have no media yet, and no RTP to miss.
        for call in self.calls.values_mut().filter(|c| c.answered) {
            if call.hangup_at.is_some_and(|t| t <= now) {
                // Our own originate's hold time, or the dialplan's Wait before Hangup.
                let why = if call.outbound.is_some() { "hold time over" } else { "dialplan hangup" };
                held.push((call.id, why, call.hangup_cause));
                continue;
            }
            if !timeout.is_zero() && now.saturating_duration_since(call.media.last_received) >= timeout {
                silent.push(call.id);
                continue;
            }
            if let Some(packet) = call.media.tick() {
                packets.push((call.media.destination(), packet));
            }
        }
        for (destination, packet) in packets {
            self.send(SipSocket::Media, destination, packet);
        }
        for id in silent {
            self.hang_up(now, id, "RTP timeout");
        }
        for (id, why, cause) in held {
            match cause {
                Some(cause) => self.bye_with_cause(now, id, why, cause),
                None => self.hang_up(now, id, why),
            }
        }
        self.media_tick = if self.calls.is_empty() {
            None
        } else {
            // Keep the 20 ms grid; after a stall, skip ahead rather than burst.
            let next = self.media_tick.unwrap_or(now) + FRAME;
            Some(if next <= now { now + FRAME } else { next })
        };
    }

    /// Starts the 20 ms media clock if it is not running.
    pub(super) fn media_tick_from(&mut self, now: Instant) {
        self.media_tick.get_or_insert(now + FRAME);
    }
}

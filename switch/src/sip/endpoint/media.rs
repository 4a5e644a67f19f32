//! RTP on each call's own port pair: allocation and release of the ports
//! (the runtime binds what [`SocketRequest`](crate::protocol::SocketRequest) asks), strict source learning,
//! echo and bridge relay, the 20 ms clock of generated audio, hold times and
//! the RTP timeout.

use super::*;
use crate::sip::strict::{StrictRtp, Verdict};

/// Counted, never logged per packet: a sprayer must not flood the log.
const REFUSED: &str = "RTP from a source strict RTP refused";

impl SipEndpoint {
    /// A datagram on our media port `local_port` (RTP on the even port,
    /// RTCP on the odd one above it).
    pub fn handle_media(&mut self, now: Instant, local_port: u16, from: SocketAddr, datagram: &[u8]) {
        self.stats.rtp_in += 1;
        if local_port % 2 == 1 || rtp::is_rtcp(datagram) {
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
        let Some(id) = self.by_media_port.get(&local_port).copied() else {
            // A resting port: late packets of an ended call.
            return self.drop_datagram(now, from, "RTP on no call's port".into());
        };
        let since = now.saturating_duration_since(self.epoch);
        let Some(call) = self.calls.get_mut(&id) else { return };
        match call.media.admit(now, from, &packet) {
            Verdict::Refuse => {
                *self.stats.dropped.entry(REFUSED.into()).or_default() += 1;
                return;
            }
            Verdict::Learnt(source) => self.events.push_back(Event::RtpSourceLearned { call: id, source }),
            Verdict::Accept => {}
        }
        let Some(call) = self.calls.get_mut(&id) else { return };
        let result = call.media.on_rtp(now, since, &packet);
        let (destination, port) = (call.media.destination(), call.media.local_port);
        // A bridge relays the packet as it came, so DTMF and timing pass untouched.
        if let Some(peer) = call.peer.and_then(|p| self.calls.get_mut(&p)) {
            if peer.answered && peer.media.offered.port() != 0 {
                peer.media.packets_sent += 1;
                let (to, from_port) = (peer.media.destination(), peer.media.local_port);
                self.send(SocketId::Media(from_port), to, datagram.to_vec());
            }
        }
        if let Some(digit) = result.digit {
            self.events.push_back(Event::SipDtmf { call: id, digit: digit.to_string() });
        }
        if let Some(reply) = result.reply {
            self.send(SocketId::Media(port), destination, reply);
        }
    }

    /// A port pair for a new call leg, asked of the runtime; `None` when
    /// `rtp_ports` has no free pair.
    pub(super) fn allocate_port(&mut self, now: Instant) -> Option<u16> {
        let port = self.ports.allocate(now, &mut self.rng)?;
        self.media_sockets.push_back(SocketRequest::Open(port));
        Some(port)
    }

    /// Binds call `id` to `port` for incoming media.
    pub(super) fn route_port(&mut self, id: u32, port: u16) {
        self.by_media_port.insert(port, id);
    }

    pub(super) fn release_port(&mut self, now: Instant, id: u32, port: u16) {
        if self.by_media_port.get(&port) == Some(&id) {
            self.by_media_port.remove(&port);
        }
        if port != 0 {
            self.ports.release(now, port);
            self.media_sockets.push_back(SocketRequest::Close(port));
        }
    }

    /// The host bound `port` and the RTCP port above it: the call leg that
    /// waited for them sends its SDP now (the 200 inbound, the INVITE
    /// outbound), so no SDP names a port we may not get.
    pub fn media_socket_opened(&mut self, now: Instant, port: u16) {
        let Some(id) = self.by_media_port.get(&port).copied() else { return };
        let Some(call) = self.calls.get_mut(&id) else { return };
        if !std::mem::take(&mut call.awaiting_port) {
            return;
        }
        if call.outbound.is_some() {
            self.send_invite(now, id, None);
        } else {
            self.answer_inbound(now, id);
        }
        self.txns.settle(now, &mut self.events);
    }

    /// The host would not bind `port` (or the RTCP port above it): another
    /// process holds it. The pair is never offered again, and the call that
    /// got it fails before its SDP goes out: an inbound call with 503, an
    /// outbound leg without an INVITE.
    pub fn media_socket_failed(&mut self, now: Instant, port: u16, error: &str) {
        self.ports.mark_unusable(port);
        self.events.push_back(Event::RtpPortUnavailable { port, reason: error.to_string() });
        let Some(id) = self.by_media_port.remove(&port) else { return };
        if let Some(call) = self.calls.get_mut(&id) {
            // Nothing to close, and the pair must not go to rest.
            call.media.local_port = 0;
        }
        let pending = self.calls.get(&id).is_some_and(|c| c.pending.is_some());
        if pending {
            self.reject_inbound(now, id, 503, "RTP port unavailable");
        } else {
            self.hang_up(now, id, "RTP port unavailable");
        }
    }

    /// Strict RTP for a call leg: learning from the SDP's address and the
    /// signalling source's IP.
    pub(super) fn strict_rtp(&self, now: Instant, signalled: SocketAddr, signalling: IpAddr) -> StrictRtp {
        StrictRtp::new(
            now,
            self.settings.rtp_learning_packets,
            Duration::from_secs(u64::from(self.settings.rtp_learning_window)),
            signalled,
            signalling,
        )
    }

    /// One summary per refused source when the call ends.
    pub(super) fn report_refused(&mut self, id: u32, strict: &StrictRtp) {
        let (per_source, elsewhere) = strict.refused();
        for (source, packets) in per_source {
            self.events.push_back(Event::RtpSourceRefused { call: id, source: *source, packets: *packets });
        }
        if elsewhere > 0 {
            let any = SocketAddr::from(([0, 0, 0, 0], 0));
            self.events.push_back(Event::RtpSourceRefused { call: id, source: any, packets: elsewhere });
        }
    }

    pub(super) fn on_media_tick(&mut self, now: Instant) {
        let timeout = self.rtp_timeout();
        let mut silent = Vec::new();
        let mut held = Vec::new();
        for id in self.media_clock.due(now) {
            let Some(call) = self.calls.get(&id) else { continue };
            if call.hangup_at.is_some_and(|t| t <= now) {
                // Our own originate's hold time, or the dialplan's Wait before Hangup.
                let why = if call.outbound.is_some() { "hold time over" } else { "dialplan hangup" };
                held.push((id, why, call.hangup_cause));
            } else if !timeout.is_zero() && now.saturating_duration_since(call.media.last_received) >= timeout {
                silent.push(id);
            } else {
                // RTP came since the deadline was set: the real one is later.
                let deadline = self.media_deadline(call);
                self.media_clock.reschedule(id, deadline);
            }
        }
        // A call that ends on this tick sends no more audio.
        let ending = |id: &u32| held.iter().any(|(h, _, _)| h == id) || silent.contains(id);
        let mut packets = Vec::new();
        for id in self.media_clock.generating().filter(|id| !ending(id)) {
            let Some(call) = self.calls.get_mut(&id) else { continue };
            if let Some(packet) = call.media.tick() {
                packets.push((call.media.local_port, call.media.destination(), packet));
            }
        }
        for (port, destination, packet) in packets {
            self.send(SocketId::Media(port), destination, packet);
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

    fn rtp_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.settings.rtp_timeout))
    }

    /// When the tick must look at an answered call: its hangup time, or its
    /// RTP timeout counted from the last packet so far.
    fn media_deadline(&self, call: &SipCall) -> Option<Instant> {
        let timeout = self.rtp_timeout();
        let silent = (!timeout.is_zero()).then(|| call.media.last_received + timeout);
        call.hangup_at.into_iter().chain(silent).min()
    }

    /// Call `id` was just answered: the media tick plays its audio and watches its deadline.
    pub(super) fn watch_media(&mut self, id: u32) {
        let Some(call) = self.calls.get(&id) else { return };
        let (deadline, generates) = (self.media_deadline(call), call.media.generates());
        self.media_clock.watch(id, deadline, generates);
    }

    /// A reload changed `rtp_timeout`: every deadline moves with it.
    pub(super) fn rewatch_media(&mut self) {
        for id in self.media_clock.watched() {
            let deadline = self.calls.get(&id).and_then(|call| self.media_deadline(call));
            self.media_clock.reschedule(id, deadline);
        }
    }

    /// Starts the 20 ms media clock if it is not running.
    pub(super) fn media_tick_from(&mut self, now: Instant) {
        self.media_tick.get_or_insert(now + FRAME);
    }
}

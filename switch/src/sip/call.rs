//! One SIP call the switch answered: its dialog (RFC 3261 12) and its RTP
//! media (RFC 3550) on its own port pair, with strict source learning.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::strict::{StrictRtp, Verdict};
use crate::dialplan::App;
use crate::media::{MediaStats, Source, G711};
use crate::rtp::{RtpPacket, RtpReceiverStats, RtpSender, TelephoneEvent};

/// The dialog state a BYE of ours needs, and what identifies requests in it.
#[derive(Clone, Debug)]
pub struct Dialog {
    pub call_id: String,
    /// Our To tag, chosen when we answered.
    pub local_tag: String,
    /// The caller's From tag.
    pub remote_tag: String,
    /// The INVITE's To header without its tag: our side of the dialog.
    pub local_uri: String,
    /// The INVITE's From header without its tag: the caller's side.
    pub remote_uri: String,
    /// The caller's Contact: where in-dialog requests are addressed.
    pub remote_target: String,
    /// Where the INVITE came from; requests go back there (NAT).
    pub signalling: SocketAddr,
    /// The address we wrote in Contact and SDP.
    pub local_ip: std::net::IpAddr,
    pub local_cseq: u32,
    pub remote_cseq: u32,
}

/// The call's media: one codec, an optional telephone-event type, and what we send.
pub struct CallMedia {
    pub codec: G711,
    pub payload_type: u8,
    pub dtmf_payload_type: Option<u8>,
    /// Where the SDP said to send RTP (its IP replaced by the signalling
    /// source's for a phone behind NAT, as Kamailio's fix_nated_sdp).
    pub offered: SocketAddr,
    /// Our RTP port (RTCP on the next); 0 until one is allocated.
    pub local_port: u16,
    /// Which source the call's RTP is taken from (symmetric RTP through NAT).
    pub strict: StrictRtp,
    pub echo: bool,
    pub source: Source,
    pub sender: RtpSender,
    pub receiver: RtpReceiverStats,
    pub pattern: MediaStats,
    pub packets_sent: u64,
    /// Every RTP packet of the call, whatever its SSRC (the RFC 3550
    /// statistics restart when a source changes, e.g. for DTMF).
    pub packets_received: u64,
    pub last_received: Instant,
    /// Timestamp of the last telephone-event reported: its end packets repeat (RFC 4733 2.5.1.4).
    last_dtmf: Option<u32>,
}

/// What one received RTP packet asks of the call.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MediaIn {
    /// An RTP packet to send back (echo).
    pub reply: Option<Vec<u8>>,
    /// A telephone-event that ended.
    pub digit: Option<char>,
}

/// What the SDP offer and our codecs agreed on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub codec: G711,
    pub payload_type: u8,
    /// The offer's telephone-event payload type, if any.
    pub dtmf: Option<u8>,
    /// Where the offer asks for RTP.
    pub remote: SocketAddr,
}

impl CallMedia {
    /// Media for `app` (`tag` numbers its test pattern) on our port `local_port`.
    pub fn new(
        now: Instant,
        agreed: &Negotiated,
        app: &App,
        tag: u16,
        local_port: u16,
        strict: StrictRtp,
        rng: &mut impl RngCore,
    ) -> Self {
        CallMedia {
            codec: agreed.codec,
            payload_type: agreed.payload_type,
            dtmf_payload_type: agreed.dtmf,
            offered: agreed.remote,
            local_port,
            strict,
            echo: *app == App::Echo,
            source: Source::for_app(app, tag),
            sender: RtpSender::new(agreed.payload_type, rng),
            receiver: RtpReceiverStats::new(crate::media::SAMPLE_RATE),
            pattern: MediaStats::default(),
            packets_sent: 0,
            packets_received: 0,
            last_received: now,
            last_dtmf: None,
        }
    }

    /// Where our RTP goes: the learnt source, else the SDP's address.
    pub fn destination(&self) -> SocketAddr {
        self.strict.destination()
    }

    /// The far end's SDP names a new address (answer, re-INVITE, UPDATE):
    /// learning starts over for it.
    pub fn move_to(&mut self, now: Instant, remote: SocketAddr, signalling: std::net::IpAddr) {
        self.offered = remote;
        self.strict.restart(now, remote, signalling);
    }

    /// Whether a packet from `from` is the call's, learning its source on the way.
    pub fn admit(&mut self, now: Instant, from: SocketAddr, packet: &RtpPacket<'_>) -> Verdict {
        self.strict.on_packet(now, from, packet.header.ssrc, packet.header.sequence)
    }

    /// Accounts a received packet; `since_epoch` is its arrival on the switch's clock.
    pub fn on_rtp(&mut self, now: Instant, since_epoch: Duration, packet: &RtpPacket<'_>) -> MediaIn {
        self.last_received = now;
        self.packets_received += 1;
        self.receiver.on_packet(&packet.header, since_epoch);
        let mut result = MediaIn::default();
        if Some(packet.header.payload_type) == self.dtmf_payload_type {
            if let Ok(event) = TelephoneEvent::parse(packet.payload) {
                if event.end && self.last_dtmf != Some(packet.header.timestamp) {
                    self.last_dtmf = Some(packet.header.timestamp);
                    result.digit = event.digit();
                }
            }
            return result;
        }
        if packet.header.payload_type != self.payload_type {
            return result;
        }
        let media_ms = packet.header.timestamp / (crate::media::SAMPLE_RATE / 1000);
        self.pattern.received(packet.payload, media_ms, since_epoch.as_micros() as i64);
        if self.echo {
            result.reply = Some(self.packet(packet.payload, packet.header.marker));
        }
        result
    }

    /// Whether the application plays audio of its own (a tone, music, a pattern).
    pub fn generates(&self) -> bool {
        !matches!(self.source, Source::None)
    }

    /// The next 20 ms of our own audio, as an RTP packet, if the application makes any.
    pub fn tick(&mut self) -> Option<Vec<u8>> {
        let frame = self.source.next_frame(self.codec)?;
        Some(self.packet(&frame, false))
    }

    fn packet(&mut self, payload: &[u8], marker: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + payload.len());
        self.sender.next(payload, payload.len() as u32, marker, &mut out);
        self.packets_sent += 1;
        out
    }
}

/// Our INVITE to a registered user (the callee leg of a bridge).
pub struct Outbound {
    /// Its client transaction's key in the endpoint (which keeps the INVITE for CANCEL and ACK).
    pub branch: String,
    /// The ACK we sent for the callee's 2xx, sent again if the 2xx is.
    pub ack: Option<Vec<u8>>,
    /// A gateway's username and password, to answer its challenge.
    pub credentials: Option<(String, String)>,
    /// Credentials were sent once already: a second challenge is a refusal.
    pub challenged: bool,
    /// Placed by `originate` (no caller leg): our side plays its application.
    pub originated: bool,
    /// Hang up this long after the answer (`originate ... hold=S`).
    pub hold: Option<std::time::Duration>,
    /// The callee's registration showed it behind NAT.
    pub behind_nat: bool,
}

/// One leg of a call: a caller's INVITE we answered (or will), or our INVITE to a callee.
pub struct SipCall {
    pub id: u32,
    pub exten: String,
    pub dialog: Dialog,
    pub media: CallMedia,
    pub started: Instant,
    /// Answered: a 2xx went out (inbound) or came in (outbound).
    pub answered: bool,
    /// The ACK for our 200 arrived.
    pub confirmed: bool,
    /// Key of the INVITE server transaction, while it lives.
    pub invite: Option<String>,
    /// An inbound INVITE not answered yet (its callee is ringing): what the
    /// final response is built from.
    pub pending: Option<crate::sip::message::Request>,
    /// Set on the callee leg of a bridge.
    pub outbound: Option<Outbound>,
    /// The other leg of a bridge: RTP is relayed to it, and a BYE ends both.
    pub peer: Option<u32>,
    /// Our SDP (answer inbound, offer outbound), sent again for a re-INVITE.
    pub local_sdp: Vec<u8>,
    /// When `originate`'s hold time ends, or the dialplan's `Wait` before `Hangup`.
    pub hangup_at: Option<Instant>,
    /// The dialplan's Q.850 cause for that hangup, sent in the BYE's `Reason` (RFC 3326).
    pub hangup_cause: Option<u8>,
    /// Our SDP (the 200 inbound, the INVITE outbound) waits until the host
    /// has bound the port it names.
    pub awaiting_port: bool,
}

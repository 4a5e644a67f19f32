//! RTP and RTCP (RFC 3550) for SIP calls: the packet formats, RTP/RTCP
//! demultiplexing on one port (RFC 5761), RFC 4733 telephone events, the
//! receive statistics behind reception reports, and the sending side's
//! sequence/timestamp stamping.
//!
//! Like the IAX2 core, nothing here owns a socket or reads a clock: parsers
//! take byte slices, writers append to a `Vec`, arrival times and the random
//! source are passed in.

mod event;
mod packet;
mod rtcp;
mod stats;

pub use event::{char_event, event_char, TelephoneEvent};
pub use packet::{is_rtcp, write_rtp, HeaderExtension, RtpError, RtpHeader, RtpPacket, MAX_CSRC, RTP_HEADER_LEN};
pub use rtcp::{
    ntp_middle, ntp_timestamp, parse_rtcp, write_bye, write_receiver_report, write_sdes_cname, write_sender_report,
    Bye, ReceiverReport, ReportBlock, RtcpError, RtcpPacket, SdesChunk, SdesItem, SenderInfo, SenderReport, RTCP_APP,
    RTCP_BYE, RTCP_RR, RTCP_SDES, RTCP_SR, SDES_CNAME,
};
pub use stats::{RtpReceiverStats, MAX_DROPOUT, MAX_MISORDER, MIN_SEQUENTIAL};

use rand::RngCore;

/// Static payload type of G.711 μ-law (RFC 3551).
pub const PT_PCMU: u8 = 0;
/// Static payload type of G.711 A-law (RFC 3551).
pub const PT_PCMA: u8 = 8;

/// The sending side of one RTP stream: owns the SSRC, the next sequence
/// number and the next timestamp, and counts what was sent for SRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtpSender {
    pub ssrc: u32,
    /// Sequence number of the next packet.
    pub sequence: u16,
    /// RTP timestamp of the next packet.
    pub timestamp: u32,
    /// Payload type `next` uses.
    pub payload_type: u8,
    /// Packets sent, for the SR sender info (wraps as RFC 3550 allows).
    pub packet_count: u32,
    /// Payload octets sent, likewise.
    pub octet_count: u32,
}

impl RtpSender {
    /// A stream with random SSRC, initial sequence number and timestamp,
    /// as RFC 3550 5.1 asks, so that plaintext attacks on SRTP and
    /// collisions between restarted streams are unlikely. The randomness is
    /// passed in to keep simulated runs reproducible from their seed.
    pub fn new(payload_type: u8, rng: &mut impl RngCore) -> Self {
        RtpSender {
            ssrc: rng.next_u32(),
            sequence: (rng.next_u32() >> 16) as u16,
            timestamp: rng.next_u32(),
            payload_type,
            packet_count: 0,
            octet_count: 0,
        }
    }

    /// Appends the next packet carrying `payload` with the stream's payload
    /// type, then advances the sequence number by one and the timestamp by
    /// `samples` (the payload's duration in clock ticks: 160 for 20 ms of G.711).
    pub fn next(&mut self, payload: &[u8], samples: u32, marker: bool, out: &mut Vec<u8>) {
        self.next_as(self.payload_type, payload, samples, marker, out);
    }

    /// [`next`](Self::next) with another payload type on the same stream and
    /// clock, as RFC 4733 events are sent between audio frames. Pass
    /// `samples` 0 for all but the last packet of an event, whose packets
    /// share the timestamp of its start.
    pub fn next_as(&mut self, payload_type: u8, payload: &[u8], samples: u32, marker: bool, out: &mut Vec<u8>) {
        let mut header = RtpHeader::new(payload_type, self.sequence, self.timestamp, self.ssrc);
        header.marker = marker;
        write_rtp(&header, payload, out);
        self.sequence = self.sequence.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(samples);
        self.packet_count = self.packet_count.wrapping_add(1);
        self.octet_count = self.octet_count.wrapping_add(payload.len() as u32);
    }

    /// The sender info of an SR sent at `ntp_timestamp`, which corresponds
    /// to `rtp_timestamp` on this stream's clock (only the caller, who runs
    /// the media clock, knows that pairing).
    pub fn sender_info(&self, ntp_timestamp: u64, rtp_timestamp: u32) -> SenderInfo {
        SenderInfo { ntp_timestamp, rtp_timestamp, packet_count: self.packet_count, octet_count: self.octet_count }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::time::Duration;

    #[test]
    fn sender_stamps_consecutive_frames_and_wraps() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        let mut sender = RtpSender::new(PT_PCMA, &mut rng);
        let again = RtpSender::new(PT_PCMA, &mut rand_chacha::ChaCha20Rng::seed_from_u64(7));
        assert_eq!(sender, again, "same seed, same stream");
        let other = RtpSender::new(PT_PCMA, &mut rand_chacha::ChaCha20Rng::seed_from_u64(8));
        assert_ne!((sender.ssrc, sender.sequence, sender.timestamp), (other.ssrc, other.sequence, other.timestamp));

        sender.sequence = 65534;
        sender.timestamp = u32::MAX - 100;
        let first = (sender.sequence, sender.timestamp);
        let mut stats = RtpReceiverStats::new(8000);
        for i in 0..4u32 {
            let mut out = Vec::new();
            sender.next(&[0xd5; 160], 160, i == 0, &mut out);
            let p = RtpPacket::parse(&out).expect("parses");
            assert_eq!(p.header.ssrc, sender.ssrc);
            assert_eq!(p.header.payload_type, PT_PCMA);
            assert_eq!(p.header.marker, i == 0);
            assert_eq!(p.header.sequence, first.0.wrapping_add(i as u16));
            assert_eq!(p.header.timestamp, first.1.wrapping_add(i * 160));
            stats.on_packet(&p.header, Duration::from_millis(u64::from(i) * 20));
        }
        assert_eq!((sender.sequence, sender.packet_count, sender.octet_count), (2, 4, 640));
        assert_eq!((stats.received(), stats.lost(), stats.cycles()), (4, 0, 1));
        assert_eq!(stats.jitter(), 0.0);
        let info = sender.sender_info(ntp_timestamp(Duration::from_secs(1)), 1234);
        assert_eq!((info.packet_count, info.octet_count, info.rtp_timestamp), (4, 640, 1234));
    }

    #[test]
    fn dtmf_event_packets_share_the_timestamp() {
        let mut sender = RtpSender::new(PT_PCMU, &mut rand_chacha::ChaCha20Rng::seed_from_u64(1));
        let start = sender.timestamp;
        let mut stamps = Vec::new();
        for (i, end) in [false, false, true].into_iter().enumerate() {
            let mut payload = Vec::new();
            TelephoneEvent { event: 11, end, volume: 10, duration: 160 * (i as u16 + 1) }.write(&mut payload);
            let mut out = Vec::new();
            sender.next_as(101, &payload, if end { 480 } else { 0 }, i == 0, &mut out);
            let p = RtpPacket::parse(&out).expect("parses");
            assert_eq!(TelephoneEvent::parse(p.payload).map(|e| e.digit()), Ok(Some('#')));
            stamps.push((p.header.payload_type, p.header.timestamp));
        }
        assert_eq!(stamps, [(101, start), (101, start), (101, start)]);
        assert_eq!(sender.timestamp, start.wrapping_add(480));
        assert_eq!(sender.payload_type, PT_PCMU);
    }
}

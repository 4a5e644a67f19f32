//! RTCP (RFC 3550 section 6): compound packets of sender and receiver
//! reports, source descriptions and goodbyes, parsed into typed items and
//! built for sending.

use std::time::Duration;

use super::packet::{be16, be32, RTP_VERSION};

pub const RTCP_SR: u8 = 200;
pub const RTCP_RR: u8 = 201;
pub const RTCP_SDES: u8 = 202;
pub const RTCP_BYE: u8 = 203;
pub const RTCP_APP: u8 = 204;
/// SDES item type of the canonical name, the one item every compound packet carries.
pub const SDES_CNAME: u8 = 1;
/// The five-bit count field caps report blocks, chunks and BYE sources.
pub const MAX_COUNT: usize = 31;

/// Why a datagram is not a well-formed RTCP compound packet. `offset` is
/// where the offending sub-packet starts, to find it in a capture.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RtcpError {
    #[error("empty RTCP datagram")]
    Empty,
    #[error("RTCP header at byte {offset} truncated ({remaining} bytes left)")]
    TruncatedHeader { offset: usize, remaining: usize },
    #[error("RTCP version {version} at byte {offset}, expected 2")]
    BadVersion { offset: usize, version: u8 },
    #[error("RTCP packet at byte {offset} claims {length} bytes, only {available} left")]
    LengthOutOfBounds { offset: usize, length: usize, available: usize },
    #[error("RTCP padding at byte {offset} is zero or longer than the packet")]
    BadPadding { offset: usize },
    #[error("RTCP packet type {packet_type} at byte {offset} is too short for its contents")]
    Truncated { offset: usize, packet_type: u8 },
}

/// The sender-info block of an SR: what a receiver needs to compute round
/// trip time (via LSR/DLSR) and to map RTP time to wall-clock time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SenderInfo {
    /// 64-bit NTP timestamp (seconds since 1900 in the high half).
    pub ntp_timestamp: u64,
    /// The same instant in the stream's RTP clock.
    pub rtp_timestamp: u32,
    pub packet_count: u32,
    pub octet_count: u32,
}

/// One reception report block (RFC 3550 6.4.1), shared by SR and RR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ReportBlock {
    /// The source this block reports on.
    pub ssrc: u32,
    /// Fraction lost since the previous report, in 1/256 units.
    pub fraction_lost: u8,
    /// Cumulative packets lost, a signed 24-bit value (duplicates can make it negative).
    pub cumulative_lost: i32,
    /// Extended highest sequence number received (cycles in the upper 16 bits).
    pub highest_sequence: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
    /// Middle 32 bits of the last SR's NTP timestamp, 0 if none received.
    pub last_sr: u32,
    /// Delay since that SR in 1/65536 seconds, 0 if none received.
    pub delay_since_last_sr: u32,
}

impl ReportBlock {
    const LEN: usize = 24;

    fn parse(data: &[u8], at: usize) -> Option<ReportBlock> {
        let lost = be32(data, at + 4)?;
        // Sign-extend the 24-bit cumulative count.
        let cumulative_lost = ((lost << 8) as i32) >> 8;
        Some(ReportBlock {
            ssrc: be32(data, at)?,
            fraction_lost: (lost >> 24) as u8,
            cumulative_lost,
            highest_sequence: be32(data, at + 8)?,
            jitter: be32(data, at + 12)?,
            last_sr: be32(data, at + 16)?,
            delay_since_last_sr: be32(data, at + 20)?,
        })
    }

    fn write(&self, out: &mut Vec<u8>) {
        let lost = self.cumulative_lost.clamp(-0x80_0000, 0x7f_ffff) as u32 & 0x00ff_ffff;
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(&((u32::from(self.fraction_lost) << 24) | lost).to_be_bytes());
        out.extend_from_slice(&self.highest_sequence.to_be_bytes());
        out.extend_from_slice(&self.jitter.to_be_bytes());
        out.extend_from_slice(&self.last_sr.to_be_bytes());
        out.extend_from_slice(&self.delay_since_last_sr.to_be_bytes());
    }
}

/// An SR: the reporter sends media as well as receiving it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SenderReport {
    pub ssrc: u32,
    pub info: SenderInfo,
    pub reports: Vec<ReportBlock>,
}

/// An RR: the reporter only receives (or has not sent since the last report).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReceiverReport {
    pub ssrc: u32,
    pub reports: Vec<ReportBlock>,
}

/// One SDES item, value left as bytes: RFC 3550 says UTF-8, but a peer's
/// CNAME is an opaque identifier and need not be valid text to be compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SdesItem<'a> {
    pub kind: u8,
    pub value: &'a [u8],
}

/// The items describing one source.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdesChunk<'a> {
    pub ssrc: u32,
    pub items: Vec<SdesItem<'a>>,
}

impl<'a> SdesChunk<'a> {
    /// The CNAME, which ties a source's SSRCs together across restarts.
    pub fn cname(&self) -> Option<&'a [u8]> {
        self.items.iter().find(|i| i.kind == SDES_CNAME).map(|i| i.value)
    }
}

/// A BYE: these sources are leaving, stop expecting their media.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bye<'a> {
    pub sources: Vec<u32>,
    pub reason: Option<&'a [u8]>,
}

/// One sub-packet of a compound RTCP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RtcpPacket<'a> {
    SenderReport(SenderReport),
    ReceiverReport(ReceiverReport),
    SourceDescription(Vec<SdesChunk<'a>>),
    Bye(Bye<'a>),
    /// APP and any type we do not interpret, kept raw (body without the
    /// 4-byte header and without padding) so it can be logged or relayed.
    Other {
        packet_type: u8,
        count: u8,
        body: &'a [u8],
    },
}

impl RtcpPacket<'_> {
    /// The packet type number (200 SR, 201 RR, ...).
    pub fn packet_type(&self) -> u8 {
        match self {
            RtcpPacket::SenderReport(_) => RTCP_SR,
            RtcpPacket::ReceiverReport(_) => RTCP_RR,
            RtcpPacket::SourceDescription(_) => RTCP_SDES,
            RtcpPacket::Bye(_) => RTCP_BYE,
            RtcpPacket::Other { packet_type, .. } => *packet_type,
        }
    }
}

/// Parses a compound RTCP datagram into its sub-packets, in order.
///
/// The compound rules are checked loosely, as most stacks do: every
/// sub-packet must be version 2 and lie within the datagram, and its contents
/// within its length; we do not insist on an SR/RR first or a CNAME, since
/// reduced-size RTCP (RFC 5506) and sloppy peers omit them and rejecting
/// their reports would only lose information.
pub fn parse_rtcp(datagram: &[u8]) -> Result<Vec<RtcpPacket<'_>>, RtcpError> {
    if datagram.is_empty() {
        return Err(RtcpError::Empty);
    }
    let mut packets = Vec::new();
    let mut offset = 0;
    while offset < datagram.len() {
        let remaining = datagram.len() - offset;
        let (Some(&b0), Some(&packet_type), Some(words)) =
            (datagram.get(offset), datagram.get(offset + 1), be16(datagram, offset + 2))
        else {
            return Err(RtcpError::TruncatedHeader { offset, remaining });
        };
        let version = b0 >> 6;
        if version != RTP_VERSION {
            return Err(RtcpError::BadVersion { offset, version });
        }
        let length = (usize::from(words) + 1) * 4;
        let packet = datagram.get(offset..offset + length).ok_or(RtcpError::LengthOutOfBounds {
            offset,
            length,
            available: remaining,
        })?;
        let mut body = packet.get(4..).unwrap_or(&[]);
        if b0 & 0x20 != 0 {
            let pad = usize::from(body.last().copied().unwrap_or(0));
            body = body
                .len()
                .checked_sub(pad)
                .filter(|_| pad > 0)
                .and_then(|n| body.get(..n))
                .ok_or(RtcpError::BadPadding { offset })?;
        }
        let count = b0 & 0x1f;
        let truncated = RtcpError::Truncated { offset, packet_type };
        let item = match packet_type {
            RTCP_SR => parse_sr(body, count).map(RtcpPacket::SenderReport),
            RTCP_RR => parse_rr(body, count).map(RtcpPacket::ReceiverReport),
            RTCP_SDES => parse_sdes(body, count).map(RtcpPacket::SourceDescription),
            RTCP_BYE => parse_bye(body, count).map(RtcpPacket::Bye),
            _ => Some(RtcpPacket::Other { packet_type, count, body }),
        };
        packets.push(item.ok_or(truncated)?);
        offset += length;
    }
    Ok(packets)
}

fn report_blocks(body: &[u8], at: usize, count: u8) -> Option<Vec<ReportBlock>> {
    (0..usize::from(count)).map(|i| ReportBlock::parse(body, at + i * ReportBlock::LEN)).collect()
}

// Bytes after the report blocks are profile-specific extensions; ignored.
fn parse_sr(body: &[u8], count: u8) -> Option<SenderReport> {
    let info = SenderInfo {
        ntp_timestamp: (u64::from(be32(body, 4)?) << 32) | u64::from(be32(body, 8)?),
        rtp_timestamp: be32(body, 12)?,
        packet_count: be32(body, 16)?,
        octet_count: be32(body, 20)?,
    };
    Some(SenderReport { ssrc: be32(body, 0)?, info, reports: report_blocks(body, 24, count)? })
}

fn parse_rr(body: &[u8], count: u8) -> Option<ReceiverReport> {
    Some(ReceiverReport { ssrc: be32(body, 0)?, reports: report_blocks(body, 4, count)? })
}

fn parse_sdes(body: &[u8], count: u8) -> Option<Vec<SdesChunk<'_>>> {
    let mut chunks = Vec::with_capacity(usize::from(count));
    let mut at = 0;
    for _ in 0..count {
        let ssrc = be32(body, at)?;
        at += 4;
        let mut items = Vec::new();
        // Items run until a zero type octet, then the chunk is padded to a
        // 32-bit boundary. Running into the end of the packet instead of a
        // terminator is tolerated: nothing is lost by accepting it.
        while let Some(&kind) = body.get(at) {
            if kind == 0 {
                at = (at + 4) & !3;
                break;
            }
            let len = usize::from(*body.get(at + 1)?);
            let value = body.get(at + 2..at + 2 + len)?;
            items.push(SdesItem { kind, value });
            at += 2 + len;
        }
        chunks.push(SdesChunk { ssrc, items });
    }
    Some(chunks)
}

fn parse_bye(body: &[u8], count: u8) -> Option<Bye<'_>> {
    let sources = (0..usize::from(count)).map(|i| be32(body, i * 4)).collect::<Option<Vec<_>>>()?;
    let at = usize::from(count) * 4;
    let reason = match body.get(at) {
        Some(&len) if len > 0 => Some(body.get(at + 1..at + 1 + usize::from(len))?),
        _ => None,
    };
    Some(Bye { sources, reason })
}

/// Writes a sub-packet header, lets `body` append the rest, pads to a 32-bit
/// boundary with zeros (not RTCP padding, which would need the P bit) and
/// fills in the length, so no builder can get the length field wrong.
fn write_packet(out: &mut Vec<u8>, count: usize, packet_type: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[(RTP_VERSION << 6) | count.min(MAX_COUNT) as u8, packet_type, 0, 0]);
    body(out);
    while !(out.len() - start).is_multiple_of(4) {
        out.push(0);
    }
    let words = ((out.len() - start) / 4 - 1) as u16;
    if let Some(len) = out.get_mut(start + 2..start + 4) {
        len.copy_from_slice(&words.to_be_bytes());
    }
}

/// Appends an SR. At most 31 report blocks fit the count field; a caller
/// with more sources must send further RRs, so extra blocks are not written.
pub fn write_sender_report(ssrc: u32, info: &SenderInfo, reports: &[ReportBlock], out: &mut Vec<u8>) {
    let reports = reports.get(..reports.len().min(MAX_COUNT)).unwrap_or(&[]);
    write_packet(out, reports.len(), RTCP_SR, |out| {
        out.extend_from_slice(&ssrc.to_be_bytes());
        out.extend_from_slice(&info.ntp_timestamp.to_be_bytes());
        out.extend_from_slice(&info.rtp_timestamp.to_be_bytes());
        out.extend_from_slice(&info.packet_count.to_be_bytes());
        out.extend_from_slice(&info.octet_count.to_be_bytes());
        reports.iter().for_each(|r| r.write(out));
    });
}

/// Appends an RR (at most 31 report blocks, as for [`write_sender_report`]).
pub fn write_receiver_report(ssrc: u32, reports: &[ReportBlock], out: &mut Vec<u8>) {
    let reports = reports.get(..reports.len().min(MAX_COUNT)).unwrap_or(&[]);
    write_packet(out, reports.len(), RTCP_RR, |out| {
        out.extend_from_slice(&ssrc.to_be_bytes());
        reports.iter().for_each(|r| r.write(out));
    });
}

/// Appends an SDES with one chunk carrying only the CNAME, the mandatory
/// item of every compound packet. A CNAME is cut to the 255 bytes an item
/// can hold, at a character boundary so it stays valid UTF-8.
pub fn write_sdes_cname(ssrc: u32, cname: &str, out: &mut Vec<u8>) {
    let cname = truncate_utf8(cname, 255);
    write_packet(out, 1, RTCP_SDES, |out| {
        out.extend_from_slice(&ssrc.to_be_bytes());
        out.push(SDES_CNAME);
        out.push(cname.len() as u8);
        out.extend_from_slice(cname.as_bytes());
        // The END item; write_packet then pads the chunk to 32 bits.
        out.push(0);
    });
}

/// Appends a BYE for up to 31 sources with an optional reason (cut to 255 bytes).
pub fn write_bye(sources: &[u32], reason: Option<&str>, out: &mut Vec<u8>) {
    let sources = sources.get(..sources.len().min(MAX_COUNT)).unwrap_or(&[]);
    write_packet(out, sources.len(), RTCP_BYE, |out| {
        sources.iter().for_each(|s| out.extend_from_slice(&s.to_be_bytes()));
        if let Some(reason) = reason.map(|r| truncate_utf8(r, 255)).filter(|r| !r.is_empty()) {
            out.push(reason.len() as u8);
            out.extend_from_slice(reason.as_bytes());
        }
    });
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// The 64-bit NTP timestamp of an instant given as time since the Unix epoch,
/// for SRs (the caller owns the clock; protocol code never reads one).
pub fn ntp_timestamp(since_unix_epoch: Duration) -> u64 {
    let secs = since_unix_epoch.as_secs().wrapping_add(NTP_UNIX_OFFSET);
    let frac = (u64::from(since_unix_epoch.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// The middle 32 bits of an NTP timestamp, the form LSR carries.
pub fn ntp_middle(ntp_timestamp: u64) -> u32 {
    (ntp_timestamp >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn block(ssrc: u32) -> ReportBlock {
        ReportBlock {
            ssrc,
            fraction_lost: 64,
            cumulative_lost: -3,
            highest_sequence: 0x0001_0005,
            jitter: 42,
            last_sr: 0xc170_4d61,
            delay_since_last_sr: 263_452,
        }
    }

    #[test]
    fn round_trips_a_full_compound_packet() {
        let info = SenderInfo {
            ntp_timestamp: 0xdd3a_c170_4d61_4df8,
            rtp_timestamp: 32000,
            packet_count: 200,
            octet_count: 32000,
        };
        let mut out = Vec::new();
        write_sender_report(0x5d93_1534, &info, &[block(1), block(2)], &mut out);
        assert_eq!(out.len(), 4 + 24 + 2 * 24);
        write_receiver_report(7, &[block(3)], &mut out);
        write_sdes_cname(0x5d93_1534, "switch@example.net", &mut out);
        write_bye(&[0x5d93_1534, 9], Some("hangup"), &mut out);
        write_bye(&[5], None, &mut out);
        assert_eq!(out.len() % 4, 0);
        let packets = parse_rtcp(&out).expect("parses");
        let types: Vec<u8> = packets.iter().map(RtcpPacket::packet_type).collect();
        assert_eq!(types, [RTCP_SR, RTCP_RR, RTCP_SDES, RTCP_BYE, RTCP_BYE]);
        assert_eq!(
            packets[0],
            RtcpPacket::SenderReport(SenderReport { ssrc: 0x5d93_1534, info, reports: vec![block(1), block(2)] })
        );
        assert_eq!(packets[1], RtcpPacket::ReceiverReport(ReceiverReport { ssrc: 7, reports: vec![block(3)] }));
        let RtcpPacket::SourceDescription(chunks) = &packets[2] else { panic!("{:?}", packets[2]) };
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].ssrc, 0x5d93_1534);
        assert_eq!(chunks[0].cname(), Some(&b"switch@example.net"[..]));
        assert_eq!(packets[3], RtcpPacket::Bye(Bye { sources: vec![0x5d93_1534, 9], reason: Some(b"hangup") }));
        assert_eq!(packets[4], RtcpPacket::Bye(Bye { sources: vec![5], reason: None }));
    }

    #[test]
    fn cname_of_four_bytes_still_gets_a_terminator() {
        // ssrc(4) + type + len + 4 bytes = 10, + END = 11, padded to 12.
        let mut out = Vec::new();
        write_sdes_cname(1, "abcd", &mut out);
        assert_eq!(out.len(), 16);
        assert_eq!(&out[2..4], &[0, 3]);
        assert_eq!(out[14], 0);
        let mut exact = Vec::new();
        write_sdes_cname(1, "abcdef", &mut exact); // 4+2+6 = 12: END needs a whole new word
        assert_eq!(exact.len(), 20);
        assert!(parse_rtcp(&exact).is_ok());
    }

    #[test]
    fn keeps_app_and_unknown_types_raw() {
        let mut out = vec![0x81, RTCP_APP, 0, 2, 0, 0, 0, 1, b'N', b'A', b'M', b'E'];
        out.extend_from_slice(&[0x80, 207, 0, 0]); // XR, empty
        let packets = parse_rtcp(&out).expect("parses");
        assert_eq!(packets[0], RtcpPacket::Other { packet_type: RTCP_APP, count: 1, body: &out[4..12] });
        assert_eq!(packets[1], RtcpPacket::Other { packet_type: 207, count: 0, body: &[] });
    }

    #[test]
    fn strips_padding() {
        // An RR with no blocks plus 4 bytes of padding.
        let data = [0xa0, RTCP_RR, 0, 2, 0, 0, 0, 9, 0, 0, 0, 4];
        assert_eq!(
            parse_rtcp(&data),
            Ok(vec![RtcpPacket::ReceiverReport(ReceiverReport { ssrc: 9, reports: vec![] })])
        );
    }

    #[test]
    fn reports_each_malformation() {
        assert_eq!(parse_rtcp(&[]), Err(RtcpError::Empty));
        let mut rr = Vec::new();
        write_receiver_report(9, &[], &mut rr);
        let mut trailing = rr.clone();
        trailing.extend_from_slice(&[0x80, 201]);
        assert_eq!(parse_rtcp(&trailing), Err(RtcpError::TruncatedHeader { offset: 8, remaining: 2 }));
        let mut v1 = rr.clone();
        v1.extend_from_slice(&[0x40, 201, 0, 0]);
        assert_eq!(parse_rtcp(&v1), Err(RtcpError::BadVersion { offset: 8, version: 1 }));
        let mut long = rr.clone();
        long[3] = 2;
        assert_eq!(parse_rtcp(&long), Err(RtcpError::LengthOutOfBounds { offset: 0, length: 12, available: 8 }));
        let mut pad = rr.clone();
        pad[0] |= 0x20;
        pad[7] = 5; // pads 5 of a 4-byte body
        assert_eq!(parse_rtcp(&pad), Err(RtcpError::BadPadding { offset: 0 }));
        pad[7] = 0;
        assert_eq!(parse_rtcp(&pad), Err(RtcpError::BadPadding { offset: 0 }));
        let mut blocks = rr.clone();
        blocks[0] |= 1; // claims a report block the length does not hold
        assert_eq!(parse_rtcp(&blocks), Err(RtcpError::Truncated { offset: 0, packet_type: RTCP_RR }));
        let short_sr = [0x80, RTCP_SR, 0, 1, 0, 0, 0, 1];
        assert_eq!(parse_rtcp(&short_sr), Err(RtcpError::Truncated { offset: 0, packet_type: RTCP_SR }));
        let sdes_overrun = [0x81, RTCP_SDES, 0, 2, 0, 0, 0, 1, SDES_CNAME, 9, b'a', b'b'];
        assert_eq!(parse_rtcp(&sdes_overrun), Err(RtcpError::Truncated { offset: 0, packet_type: RTCP_SDES }));
        let bye_reason_overrun = [0x81, RTCP_BYE, 0, 2, 0, 0, 0, 1, 200, b'a', b'b', b'c'];
        assert_eq!(parse_rtcp(&bye_reason_overrun), Err(RtcpError::Truncated { offset: 0, packet_type: RTCP_BYE }));
        let bye_sources = [0x82, RTCP_BYE, 0, 1, 0, 0, 0, 1];
        assert_eq!(parse_rtcp(&bye_sources), Err(RtcpError::Truncated { offset: 0, packet_type: RTCP_BYE }));
    }

    #[test]
    fn cumulative_lost_is_signed_24_bits_and_clamped() {
        let mut out = Vec::new();
        let big = ReportBlock { cumulative_lost: 50_000_000, ..block(1) };
        let neg = ReportBlock { cumulative_lost: -50_000_000, ..block(2) };
        write_receiver_report(1, &[big, neg], &mut out);
        let packets = parse_rtcp(&out).expect("parses");
        let RtcpPacket::ReceiverReport(rr) = &packets[0] else { panic!() };
        assert_eq!(rr.reports[0].cumulative_lost, 0x7f_ffff);
        assert_eq!(rr.reports[1].cumulative_lost, -0x80_0000);
        assert_eq!(rr.reports[0].fraction_lost, 64);
    }

    #[test]
    fn builders_cap_counts_at_31_and_names_at_255_bytes() {
        let mut out = Vec::new();
        write_receiver_report(1, &[block(1); 40], &mut out);
        write_bye(&[1; 40], Some(&"é".repeat(200)), &mut out);
        write_sdes_cname(1, &"x".repeat(300), &mut out);
        let packets = parse_rtcp(&out).expect("parses");
        let RtcpPacket::ReceiverReport(rr) = &packets[0] else { panic!() };
        assert_eq!(rr.reports.len(), 31);
        let RtcpPacket::Bye(bye) = &packets[1] else { panic!() };
        assert_eq!(bye.sources.len(), 31);
        assert_eq!(bye.reason.map(<[u8]>::len), Some(254)); // 127 two-byte characters
        let RtcpPacket::SourceDescription(chunks) = &packets[2] else { panic!() };
        assert_eq!(chunks[0].cname().map(<[u8]>::len), Some(255));
    }

    #[test]
    fn ntp_conversion_matches_rfc_epoch() {
        assert_eq!(ntp_timestamp(Duration::ZERO), NTP_UNIX_OFFSET << 32);
        let half = ntp_timestamp(Duration::from_millis(1500));
        assert_eq!(half >> 32, NTP_UNIX_OFFSET + 1);
        assert_eq!(half as u32, 0x8000_0000);
        assert_eq!(ntp_middle(0x1122_3344_5566_7788), 0x3344_5566);
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_rtcp(&bytes);
        }

        #[test]
        fn parse_never_panics_on_plausible_headers(
            parts in proptest::collection::vec(
                (0x80u8..0xc0, 200u8..=204, 0u16..20, proptest::collection::vec(any::<u8>(), 0..80)), 1..4)
        ) {
            let mut bytes = Vec::new();
            for (b0, pt, words, body) in parts {
                bytes.extend_from_slice(&[b0, pt]);
                bytes.extend_from_slice(&words.to_be_bytes());
                bytes.extend(body);
            }
            let _ = parse_rtcp(&bytes);
        }
    }
}

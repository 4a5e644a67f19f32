//! The RTP data packet (RFC 3550 section 5.1): parsing and writing.

/// RTP is version 2; versions 0 and 1 (vat, RFC 1889 drafts) are long dead,
/// so anything else on a media port is not ours.
pub const RTP_VERSION: u8 = 2;
/// Fixed header length, before CSRCs and extension.
pub const RTP_HEADER_LEN: usize = 12;
/// The CC field is four bits.
pub const MAX_CSRC: usize = 15;

/// Why a datagram is not a well-formed RTP packet. Every malformation has its
/// own variant so a counter or log line can say what the peer got wrong.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum RtpError {
    #[error("RTP packet of {len} bytes is shorter than the 12-byte fixed header")]
    TooShort { len: usize },
    #[error("RTP version {0}, expected 2")]
    BadVersion(u8),
    #[error("RTP packet of {len} bytes cannot hold its {count} CSRCs")]
    CsrcTruncated { count: u8, len: usize },
    #[error("RTP header extension runs past the end of the packet")]
    ExtensionTruncated,
    #[error("RTP padding count {pad} is zero or exceeds the {available} bytes after the header")]
    BadPadding { pad: u8, available: usize },
    #[error("telephone-event payload of {len} bytes, expected at least 4")]
    EventTooShort { len: usize },
}

/// The fixed RTP header plus the CSRC list. `Copy`, so the stats and the
/// jitter buffer can keep it without borrowing the datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RtpHeader {
    pub marker: bool,
    /// Seven bits; `write_rtp` masks anything larger.
    pub payload_type: u8,
    pub sequence: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// How many entries of `csrc` are in use (0..=15).
    pub csrc_count: u8,
    /// Contributing sources (a mixer's inputs); only the first `csrc_count` count.
    pub csrc: [u32; MAX_CSRC],
}

impl RtpHeader {
    /// A header with no contributing sources, the common case for a
    /// softswitch that relays or originates a single stream.
    pub fn new(payload_type: u8, sequence: u16, timestamp: u32, ssrc: u32) -> Self {
        RtpHeader { marker: false, payload_type, sequence, timestamp, ssrc, csrc_count: 0, csrc: [0; MAX_CSRC] }
    }

    /// The contributing sources in use.
    pub fn csrcs(&self) -> &[u32] {
        let n = usize::from(self.csrc_count).min(MAX_CSRC);
        self.csrc.get(..n).unwrap_or(&[])
    }

    /// Bytes `write_rtp` produces for this header (no extension, no padding).
    pub fn wire_len(&self) -> usize {
        RTP_HEADER_LEN + 4 * usize::from(self.csrc_count).min(MAX_CSRC)
    }
}

/// A header extension (RFC 3550 5.3.1). Kept only so a caller can look at it;
/// nothing in the switch negotiates extensions, so they are otherwise skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderExtension<'a> {
    /// The "defined by profile" field (0xBEDE for RFC 8285 one-byte headers).
    pub profile: u16,
    pub data: &'a [u8],
}

/// A parsed RTP packet borrowing the datagram: media is copied at most once,
/// by whoever consumes the payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    pub header: RtpHeader,
    /// The payload without padding.
    pub payload: &'a [u8],
    pub extension: Option<HeaderExtension<'a>>,
    /// Padding bytes removed from the end (0 when the P bit is clear).
    pub padding: u8,
}

pub(crate) fn be16(data: &[u8], at: usize) -> Option<u16> {
    data.get(at..at.checked_add(2)?)?.try_into().ok().map(u16::from_be_bytes)
}

pub(crate) fn be32(data: &[u8], at: usize) -> Option<u32> {
    data.get(at..at.checked_add(4)?)?.try_into().ok().map(u32::from_be_bytes)
}

impl<'a> RtpPacket<'a> {
    /// Parses one RTP datagram. Never panics: every length in the packet is
    /// checked against the datagram before it is used, because media ports
    /// receive whatever anyone on the network cares to send.
    pub fn parse(data: &'a [u8]) -> Result<RtpPacket<'a>, RtpError> {
        let len = data.len();
        let (Some(&b0), Some(&b1)) = (data.first(), data.get(1)) else {
            return Err(RtpError::TooShort { len });
        };
        if len < RTP_HEADER_LEN {
            return Err(RtpError::TooShort { len });
        }
        let version = b0 >> 6;
        if version != RTP_VERSION {
            return Err(RtpError::BadVersion(version));
        }
        let has_padding = b0 & 0x20 != 0;
        let has_extension = b0 & 0x10 != 0;
        let csrc_count = b0 & 0x0f;
        let too_short = RtpError::TooShort { len };
        let mut header = RtpHeader {
            marker: b1 & 0x80 != 0,
            payload_type: b1 & 0x7f,
            sequence: be16(data, 2).ok_or(too_short.clone())?,
            timestamp: be32(data, 4).ok_or(too_short.clone())?,
            ssrc: be32(data, 8).ok_or(too_short)?,
            csrc_count,
            csrc: [0; MAX_CSRC],
        };
        let mut at = RTP_HEADER_LEN;
        for slot in header.csrc.iter_mut().take(usize::from(csrc_count)) {
            *slot = be32(data, at).ok_or(RtpError::CsrcTruncated { count: csrc_count, len })?;
            at += 4;
        }
        let extension = if has_extension {
            let profile = be16(data, at).ok_or(RtpError::ExtensionTruncated)?;
            let words = be16(data, at + 2).ok_or(RtpError::ExtensionTruncated)?;
            let start = at + 4;
            let end = start + 4 * usize::from(words);
            let ext = data.get(start..end).ok_or(RtpError::ExtensionTruncated)?;
            at = end;
            Some(HeaderExtension { profile, data: ext })
        } else {
            None
        };
        let rest = data.get(at..).unwrap_or(&[]);
        let (payload, padding) = if has_padding {
            // The last octet counts the padding including itself, so 0 is as
            // malformed as a count reaching back into the header.
            let pad = rest.last().copied().unwrap_or(0);
            let body = rest.len().checked_sub(usize::from(pad)).filter(|_| pad > 0);
            match body.and_then(|n| rest.get(..n)) {
                Some(payload) => (payload, pad),
                None => return Err(RtpError::BadPadding { pad, available: rest.len() }),
            }
        } else {
            (rest, 0)
        };
        Ok(RtpPacket { header, payload, extension, padding })
    }
}

/// Appends an RTP packet: version 2, no padding, no extension (the switch
/// never needs either on what it sends), the header's CSRCs, then `payload`.
pub fn write_rtp(header: &RtpHeader, payload: &[u8], out: &mut Vec<u8>) {
    let csrcs = header.csrcs();
    out.reserve(header.wire_len() + payload.len());
    out.push((RTP_VERSION << 6) | csrcs.len() as u8);
    out.push((u8::from(header.marker) << 7) | (header.payload_type & 0x7f));
    out.extend_from_slice(&header.sequence.to_be_bytes());
    out.extend_from_slice(&header.timestamp.to_be_bytes());
    out.extend_from_slice(&header.ssrc.to_be_bytes());
    for csrc in csrcs {
        out.extend_from_slice(&csrc.to_be_bytes());
    }
    out.extend_from_slice(payload);
}

/// RFC 5761 section 4: with RTP and RTCP multiplexed on one port, RTCP is
/// told apart by its packet type, which lands in RTP's marker+PT byte as
/// 192..=223 (RTCP types 192-223, of which SR..APP are 200-204). RTP payload
/// types 64-95 are therefore never used when multiplexing.
pub fn is_rtcp(datagram: &[u8]) -> bool {
    datagram.get(1).is_some_and(|b| (192..=223).contains(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample_header() -> RtpHeader {
        let mut h = RtpHeader::new(8, 59133, 240, 0xdee0_ee8f);
        h.marker = true;
        h
    }

    #[test]
    fn round_trips_a_plain_packet() {
        let payload = [0xd5u8; 160];
        let mut out = Vec::new();
        write_rtp(&sample_header(), &payload, &mut out);
        assert_eq!(out.len(), 12 + 160);
        assert_eq!(&out[..2], &[0x80, 0x88]);
        let p = RtpPacket::parse(&out).expect("parses");
        assert_eq!(p.header, sample_header());
        assert_eq!(p.payload, &payload);
        assert_eq!((p.extension, p.padding), (None, 0));
    }

    #[test]
    fn round_trips_csrcs() {
        let mut h = RtpHeader::new(0, 65535, u32::MAX, 1);
        h.csrc_count = 3;
        h.csrc[..3].copy_from_slice(&[10, 20, 30]);
        let mut out = Vec::new();
        write_rtp(&h, b"xy", &mut out);
        assert_eq!(out.len(), h.wire_len() + 2);
        let p = RtpPacket::parse(&out).expect("parses");
        assert_eq!(p.header.csrcs(), &[10, 20, 30]);
        assert_eq!(p.header, h);
        assert_eq!(p.payload, b"xy");
    }

    #[test]
    fn skips_extension_and_strips_padding() {
        // V=2 P=1 X=1 CC=1, PT 0; CSRC 7; extension 0xBEDE with one word;
        // payload "abc" then 3 bytes of padding whose last byte counts them.
        let mut d = vec![0xb1, 0x00, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3];
        d.extend_from_slice(&[0, 0, 0, 7]);
        d.extend_from_slice(&[0xbe, 0xde, 0, 1, 0x10, 0xaa, 0, 0]);
        d.extend_from_slice(b"abc");
        d.extend_from_slice(&[0, 0, 3]);
        let p = RtpPacket::parse(&d).expect("parses");
        assert_eq!(p.header.csrcs(), &[7]);
        assert_eq!(p.extension, Some(HeaderExtension { profile: 0xbede, data: &[0x10, 0xaa, 0, 0] }));
        assert_eq!(p.payload, b"abc");
        assert_eq!(p.padding, 3);
    }

    #[test]
    fn reports_each_malformation() {
        assert_eq!(RtpPacket::parse(&[]), Err(RtpError::TooShort { len: 0 }));
        assert_eq!(RtpPacket::parse(&[0x80; 11]), Err(RtpError::TooShort { len: 11 }));
        let mut ok = Vec::new();
        write_rtp(&RtpHeader::new(0, 1, 2, 3), b"pay", &mut ok);

        let mut v1 = ok.clone();
        v1[0] = 0x40;
        assert_eq!(RtpPacket::parse(&v1), Err(RtpError::BadVersion(1)));

        let mut cc = ok.clone();
        cc[0] = 0x82; // two CSRCs need 8 bytes, only 3 follow
        assert_eq!(RtpPacket::parse(&cc), Err(RtpError::CsrcTruncated { count: 2, len: 15 }));

        let mut ext = ok.clone();
        ext[0] = 0x90; // extension header needs 4 bytes, only 3 follow
        assert_eq!(RtpPacket::parse(&ext), Err(RtpError::ExtensionTruncated));
        let mut ext_words = ok[..12].to_vec();
        ext_words[0] = 0x90;
        ext_words.extend_from_slice(&[0, 0, 0, 2, 1, 2, 3, 4]); // claims 2 words, has 1
        assert_eq!(RtpPacket::parse(&ext_words), Err(RtpError::ExtensionTruncated));

        let mut pad = ok.clone();
        pad[0] = 0xa0;
        *pad.last_mut().unwrap() = 4; // 4 > the 3 bytes after the header
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::BadPadding { pad: 4, available: 3 }));
        *pad.last_mut().unwrap() = 0;
        assert_eq!(RtpPacket::parse(&pad), Err(RtpError::BadPadding { pad: 0, available: 3 }));
        let mut empty_pad = ok[..12].to_vec();
        empty_pad[0] = 0xa0;
        assert_eq!(RtpPacket::parse(&empty_pad), Err(RtpError::BadPadding { pad: 0, available: 0 }));
        // Padding that takes everything after the header is legal: an empty payload.
        *pad.last_mut().unwrap() = 3;
        assert_eq!(RtpPacket::parse(&pad).map(|p| p.payload.len()), Ok(0));
    }

    #[test]
    fn demultiplexes_rtcp_from_rtp() {
        assert!(is_rtcp(&[0x80, 200, 0, 6])); // SR
        assert!(is_rtcp(&[0x81, 201]));
        assert!(is_rtcp(&[0x80, 223]));
        assert!(!is_rtcp(&[0x80, 191]));
        assert!(!is_rtcp(&[0x80, 224]));
        assert!(!is_rtcp(&[0x80, 0x88])); // PCMA with marker
        assert!(!is_rtcp(&[0x80, 101]));
        assert!(!is_rtcp(&[0x80]));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = RtpPacket::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_version_2(
            first in 0x80u8..0xc0, rest in proptest::collection::vec(any::<u8>(), 0..120)
        ) {
            let mut bytes = vec![first];
            bytes.extend(rest);
            if let Ok(p) = RtpPacket::parse(&bytes) {
                prop_assert!(p.payload.len() + p.header.wire_len() <= bytes.len());
            }
        }

        #[test]
        fn written_packets_parse_back(
            pt in 0u8..128, seq in any::<u16>(), ts in any::<u32>(), ssrc in any::<u32>(), marker in any::<bool>(),
            csrcs in proptest::collection::vec(any::<u32>(), 0..=15),
            payload in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut h = RtpHeader::new(pt, seq, ts, ssrc);
            h.marker = marker;
            h.csrc_count = csrcs.len() as u8;
            h.csrc[..csrcs.len()].copy_from_slice(&csrcs);
            let mut out = Vec::new();
            write_rtp(&h, &payload, &mut out);
            let p = RtpPacket::parse(&out).expect("own packet parses");
            prop_assert_eq!(p.header, h);
            prop_assert_eq!(p.payload, &payload[..]);
        }
    }
}

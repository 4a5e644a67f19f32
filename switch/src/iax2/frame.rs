//! IAX2 datagrams: full frames, mini voice frames, mini video frames and
//! trunk meta frames (RFC 5456 section 8.1), encoded and decoded.
//!
//! The first two 16-bit words tell the kinds apart:
//!
//! ```text
//! word 0        word 1
//! 1ccc...       R ddd...        full frame: F bit, source call; R bit, dest call
//! 0ccc... (≠0)  timestamp       mini voice frame
//! 0000 0000     1ccc...         mini video frame: V bit, source call
//! 0000 0000     0mmm... dddd    meta frame: meta command (1 = trunk), command data
//! ```
//!
//! [`decode`] never panics and returns a typed error for anything it cannot
//! make sense of; encoders validate before they write, so a failed encode
//! leaves the output buffer as it was.

use super::ie::{self, Ie, IeError};
use super::subclass::{ControlSubclass, FrameType, IaxSubclass};

/// Full frame header length.
pub const FULL_HEADER_LEN: usize = 12;
/// Mini voice frame header length.
pub const MINI_HEADER_LEN: usize = 4;
/// Mini video frame header length.
pub const MINI_VIDEO_HEADER_LEN: usize = 6;
/// Trunk meta frame header length (meta header plus 32-bit timestamp).
pub const TRUNK_HEADER_LEN: usize = 8;
/// Call numbers are 15 bits; the top bit of each word is a flag.
pub const MAX_CALL_NUMBER: u16 = 0x7fff;

const FLAG_FULL: u16 = 0x8000;
const FLAG_RETRANS: u16 = 0x8000;
const FLAG_VIDEO: u16 = 0x8000;
const FLAG_VIDEO_MARKER: u16 = 0x8000;
/// C bit of the subclass octet: the low bits are a power of two.
const FLAG_SC_LOG: u8 = 0x80;
/// Asterisk's shift mask for compressed subclasses.
const SC_SHIFT_MASK: u8 = 0x3f;
/// Full video frames carry the RTP marker in this bit of the subclass octet.
const VIDEO_MARKER_CSUB: u8 = 0x40;
/// Subclass octet 0xff stands for -1 (Asterisk's "stop sounds" indication).
const CSUB_MINUS_ONE: u8 = 0xff;
const META_TRUNK: u8 = 0x01;
/// Command data bit: entries carry their own length, call and timestamp.
const TRUNK_TIMESTAMPS: u8 = 0x01;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FrameError {
    #[error("{what} needs {needed} bytes but the datagram has {got}")]
    Truncated { what: &'static str, needed: usize, got: usize },
    #[error("unknown full frame type {0}")]
    UnknownFrameType(u8),
    #[error("subclass {0:#x} cannot be sent: from 0x80 up only single bits (C bit) or u32::MAX (-1) are encodable, and in VIDEO frames octet bit 0x40 is the marker")]
    BadSubclass(u32),
    #[error("subclass octet {csub:#04x} means 2^{shift}, which does not fit in 32 bits")]
    UnrepresentableSubclass { csub: u8, shift: u8 },
    #[error("call number {0} does not fit in 15 bits")]
    CallNumberOutOfRange(u16),
    #[error("a mini frame cannot have source call number 0: that marks a meta frame")]
    ZeroMiniCallNumber,
    #[error("unknown meta command {0:#04x} (only 0x01, trunk, is defined)")]
    UnknownMetaCommand(u8),
    #[error("mini video timestamp {0} does not fit in 15 bits")]
    VideoTimestampOutOfRange(u16),
    #[error("trunk entry for call {call}: timestamp presence disagrees with the frame's with_timestamps = {with_timestamps}")]
    TrunkTimestampMismatch { call: u16, with_timestamps: bool },
    #[error("trunk entry for call {call} carries {len} bytes, at most 65535 fit")]
    TrunkPayloadTooLong { call: u16, len: usize },
}

/// A full frame: reliable, sequenced, carries signalling (RFC 5456 8.1.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FullFrame {
    /// 15-bit source call number.
    pub src_call: u16,
    /// 15-bit destination call number.
    pub dst_call: u16,
    /// The R bit: this is a retransmission.
    pub retransmitted: bool,
    pub timestamp: u32,
    pub oseqno: u8,
    pub iseqno: u8,
    pub frame_type: FrameType,
    /// The expanded subclass: a C-bit octet `0x80 | n` decodes to `1 << n`,
    /// and octet 0xff to `u32::MAX` (-1). For VIDEO frames the RTP marker
    /// bit (0x40) of the octet is dropped, as Asterisk does when it reads it.
    pub subclass: u32,
    /// IEs for IAX frames, media for VOICE/VIDEO, text for TEXT, ...
    pub payload: Vec<u8>,
}

/// A mini voice frame: source call, low 16 bits of the timestamp, media.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiniFrame {
    /// 15-bit source call number, never 0.
    pub src_call: u16,
    pub timestamp: u16,
    pub payload: Vec<u8>,
}

/// A mini video frame (RFC 5456 8.1.3): after 16 zero bits, V bit + source
/// call, then the marker bit + 15-bit timestamp.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MiniVideoFrame {
    pub src_call: u16,
    pub marker: bool,
    /// 15 bits.
    pub timestamp: u16,
    pub payload: Vec<u8>,
}

/// A trunk meta frame (RFC 5456 8.1.2) carrying media of several calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrunkFrame {
    pub timestamp: u32,
    pub entries: Vec<TrunkEntry>,
    /// Asterisk's `trunktimestamps` layout: each entry is data length, call
    /// number, 16-bit timestamp, data. Without it: call number, length, data.
    pub with_timestamps: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrunkEntry {
    /// 15-bit source call number.
    pub call: u16,
    /// Present exactly when the frame is `with_timestamps`.
    pub timestamp: Option<u16>,
    pub payload: Vec<u8>,
}

/// Any IAX2 datagram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Full(FullFrame),
    Mini(MiniFrame),
    MiniVideo(MiniVideoFrame),
    Trunk(TrunkFrame),
}

/// Expands a subclass octet (the C bit, RFC 5456 8.1.1).
pub fn uncompress_subclass(csub: u8) -> Result<u32, FrameError> {
    if csub == CSUB_MINUS_ONE {
        return Ok(u32::MAX);
    }
    if csub & FLAG_SC_LOG == 0 {
        return Ok(u32::from(csub));
    }
    // Asterisk masks the shift with 0x3f; shifts 32..63 are 64-bit formats
    // (Opus, G.719, ...) that our 32-bit subclass cannot hold.
    let shift = csub & SC_SHIFT_MASK;
    1u32.checked_shl(u32::from(shift)).ok_or(FrameError::UnrepresentableSubclass { csub, shift })
}

/// Packs a subclass into its octet: values below 0x80 as they are, single
/// bits as `0x80 | log2`, `u32::MAX` as 0xff.
pub fn compress_subclass(subclass: u32) -> Result<u8, FrameError> {
    if let Ok(small) = u8::try_from(subclass) {
        if small & FLAG_SC_LOG == 0 {
            return Ok(small);
        }
    }
    if subclass == u32::MAX {
        return Ok(CSUB_MINUS_ONE);
    }
    if subclass.is_power_of_two() {
        // trailing_zeros of a u32 is at most 31, so this fits the 6-bit shift.
        return Ok(FLAG_SC_LOG | subclass.trailing_zeros() as u8);
    }
    Err(FrameError::BadSubclass(subclass))
}

fn check_call(call: u16) -> Result<u16, FrameError> {
    if call > MAX_CALL_NUMBER {
        Err(FrameError::CallNumberOutOfRange(call))
    } else {
        Ok(call)
    }
}

/// Bounds-checked big-endian reads over a datagram; every shortfall
/// becomes [`FrameError::Truncated`] naming what was being read.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        let end = self.pos.checked_add(n);
        match end.and_then(|end| self.buf.get(self.pos..end)) {
            Some(s) => {
                self.pos += n;
                Ok(s)
            }
            None => Err(FrameError::Truncated { what, needed: self.pos.saturating_add(n), got: self.buf.len() }),
        }
    }

    /// Fails unless the datagram is at least `total` bytes long, so that a
    /// short header is reported with the full header length.
    fn need(&self, total: usize, what: &'static str) -> Result<(), FrameError> {
        if self.buf.len() < total {
            Err(FrameError::Truncated { what, needed: total, got: self.buf.len() })
        } else {
            Ok(())
        }
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], FrameError> {
        let got = self.buf.len();
        let needed = self.pos.saturating_add(N);
        self.take(N, what)?.try_into().map_err(|_| FrameError::Truncated { what, needed, got })
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        self.array::<1>(what).map(|[b]| b)
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        self.array(what).map(u16::from_be_bytes)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        self.array(what).map(u32::from_be_bytes)
    }

    fn rest(&mut self) -> &'a [u8] {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        self.pos = self.buf.len();
        rest
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Decodes one datagram. Never panics, on any input.
pub fn decode(datagram: &[u8]) -> Result<Frame, FrameError> {
    let mut r = Reader::new(datagram);
    let w0 = r.u16("frame header")?;
    if w0 & FLAG_FULL != 0 {
        r.need(FULL_HEADER_LEN, "full frame header")?;
        return decode_full(w0 & MAX_CALL_NUMBER, &mut r).map(Frame::Full);
    }
    if w0 != 0 {
        r.need(MINI_HEADER_LEN, "mini frame header")?;
        let timestamp = r.u16("mini frame header")?;
        return Ok(Frame::Mini(MiniFrame { src_call: w0, timestamp, payload: r.rest().to_vec() }));
    }
    let w1 = r.u16("meta frame header")?;
    if w1 & FLAG_VIDEO != 0 {
        r.need(MINI_VIDEO_HEADER_LEN, "mini video frame header")?;
        let ts = r.u16("mini video frame header")?;
        return Ok(Frame::MiniVideo(MiniVideoFrame {
            src_call: w1 & MAX_CALL_NUMBER,
            marker: ts & FLAG_VIDEO_MARKER != 0,
            timestamp: ts & !FLAG_VIDEO_MARKER,
            payload: r.rest().to_vec(),
        }));
    }
    let [metacmd, cmddata] = w1.to_be_bytes();
    if metacmd != META_TRUNK {
        return Err(FrameError::UnknownMetaCommand(metacmd));
    }
    decode_trunk(cmddata & TRUNK_TIMESTAMPS != 0, &mut r).map(Frame::Trunk)
}

fn decode_full(src_call: u16, r: &mut Reader<'_>) -> Result<FullFrame, FrameError> {
    const WHAT: &str = "full frame header";
    let w1 = r.u16(WHAT)?;
    let timestamp = r.u32(WHAT)?;
    let oseqno = r.u8(WHAT)?;
    let iseqno = r.u8(WHAT)?;
    let type_octet = r.u8(WHAT)?;
    let csub = r.u8(WHAT)?;
    let frame_type = FrameType::from_u8(type_octet).ok_or(FrameError::UnknownFrameType(type_octet))?;
    let csub = if frame_type == FrameType::Video { csub & !VIDEO_MARKER_CSUB } else { csub };
    Ok(FullFrame {
        src_call,
        dst_call: w1 & MAX_CALL_NUMBER,
        retransmitted: w1 & FLAG_RETRANS != 0,
        timestamp,
        oseqno,
        iseqno,
        frame_type,
        subclass: uncompress_subclass(csub)?,
        payload: r.rest().to_vec(),
    })
}

fn decode_trunk(with_timestamps: bool, r: &mut Reader<'_>) -> Result<TrunkFrame, FrameError> {
    let mut entries = Vec::new();
    let timestamp = parse_trunk(with_timestamps, r, |call, timestamp, payload| {
        entries.push(TrunkEntry { call, timestamp, payload: payload.to_vec() })
    })?;
    Ok(TrunkFrame { timestamp, entries, with_timestamps })
}

/// The trunk header and every entry, handed to `entry` as they are read;
/// the trunk timestamp.
fn parse_trunk<'a>(
    with_timestamps: bool,
    r: &mut Reader<'a>,
    mut entry: impl FnMut(u16, Option<u16>, &'a [u8]),
) -> Result<u32, FrameError> {
    r.need(TRUNK_HEADER_LEN, "trunk frame header")?;
    let timestamp = r.u32("trunk frame header")?;
    while !r.is_empty() {
        const WHAT: &str = "trunk entry header";
        if with_timestamps {
            let len = r.u16(WHAT)?;
            let call = r.u16(WHAT)? & MAX_CALL_NUMBER;
            let ts = r.u16(WHAT)?;
            entry(call, Some(ts), r.take(usize::from(len), "trunk entry data")?);
        } else {
            let call = r.u16(WHAT)? & MAX_CALL_NUMBER;
            let len = r.u16(WHAT)?;
            entry(call, None, r.take(usize::from(len), "trunk entry data")?);
        }
    }
    Ok(timestamp)
}

/// A meta trunk frame's entries (call number, timestamp, payload), borrowed
/// from the datagram.
pub type TrunkEntries<'a> = Vec<(u16, Option<u16>, &'a [u8])>;

/// [`decode`] for a meta trunk frame without copying its entries: `None`
/// when `datagram` is not one (decode it then), else what [`decode`] would
/// make of it. The receive path reads tens of thousands of entries a second
/// and only looks at each once.
pub fn decode_trunk_entries(datagram: &[u8]) -> Option<Result<TrunkEntries<'_>, FrameError>> {
    let mut r = Reader::new(datagram);
    let (Ok(0), Ok(w1)) = (r.u16(""), r.u16("")) else { return None };
    let [metacmd, cmddata] = w1.to_be_bytes();
    if w1 & FLAG_VIDEO != 0 || metacmd != META_TRUNK {
        return None;
    }
    // Room for entries of 32 bytes, 20 ms of G.729 or more: one allocation
    // for the usual datagram rather than one per doubling.
    let mut entries = Vec::with_capacity(datagram.len() / 32);
    Some(
        parse_trunk(cmddata & TRUNK_TIMESTAMPS != 0, &mut r, |call, ts, payload| entries.push((call, ts, payload)))
            .map(|_| entries),
    )
}

impl FullFrame {
    /// An IAX (signalling) frame carrying `ies`. A value longer than 255
    /// bytes cannot be sent; it is cut to 255 and a warning logged. Use
    /// [`FullFrame::try_new_iax`] to get an error instead.
    pub fn new_iax(
        src_call: u16,
        dst_call: u16,
        timestamp: u32,
        oseqno: u8,
        iseqno: u8,
        sub: IaxSubclass,
        ies: &[Ie],
    ) -> FullFrame {
        let mut payload = Vec::new();
        if let Err(e) = ie::encode_ies(ies, &mut payload) {
            tracing::warn!(subclass = %sub, error = %e, "over-long IE value truncated");
            for ie in ies {
                ie.encode_truncating(&mut payload);
            }
        }
        Self::iax_with_payload(src_call, dst_call, timestamp, oseqno, iseqno, sub, payload)
    }

    /// Like [`FullFrame::new_iax`] but fails on an IE value over 255 bytes.
    pub fn try_new_iax(
        src_call: u16,
        dst_call: u16,
        timestamp: u32,
        oseqno: u8,
        iseqno: u8,
        sub: IaxSubclass,
        ies: &[Ie],
    ) -> Result<FullFrame, IeError> {
        let mut payload = Vec::new();
        ie::encode_ies(ies, &mut payload)?;
        Ok(Self::iax_with_payload(src_call, dst_call, timestamp, oseqno, iseqno, sub, payload))
    }

    fn iax_with_payload(
        src_call: u16,
        dst_call: u16,
        timestamp: u32,
        oseqno: u8,
        iseqno: u8,
        sub: IaxSubclass,
        payload: Vec<u8>,
    ) -> FullFrame {
        FullFrame {
            src_call,
            dst_call,
            retransmitted: false,
            timestamp,
            oseqno,
            iseqno,
            frame_type: FrameType::Iax,
            subclass: sub.as_u32(),
            payload,
        }
    }

    /// The IAX message, when this is an IAX frame with a known subclass.
    pub fn iax(&self) -> Option<IaxSubclass> {
        match self.frame_type {
            FrameType::Iax => IaxSubclass::from_u32(self.subclass),
            _ => None,
        }
    }

    /// The control indication, when this is a CONTROL frame with a known subclass.
    pub fn control(&self) -> Option<ControlSubclass> {
        match self.frame_type {
            FrameType::Control => ControlSubclass::from_u32(self.subclass),
            _ => None,
        }
    }

    /// The payload decoded as IEs (meaningful for IAX frames).
    pub fn ies(&self) -> Result<Vec<Ie>, IeError> {
        ie::decode_ies(&self.payload)
    }

    /// Appends the wire form to `out`. Fails, leaving `out` untouched, if a
    /// call number exceeds 15 bits or the subclass has no octet encoding.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let src = check_call(self.src_call)?;
        let dst = check_call(self.dst_call)?;
        let csub = compress_subclass(self.subclass)?;
        // In a VIDEO frame 0x40 of the octet is the marker, so a subclass
        // whose octet has it set would not read back as itself.
        if self.frame_type == FrameType::Video && csub & VIDEO_MARKER_CSUB != 0 {
            return Err(FrameError::BadSubclass(self.subclass));
        }
        out.reserve(FULL_HEADER_LEN + self.payload.len());
        out.extend_from_slice(&(FLAG_FULL | src).to_be_bytes());
        let retrans = if self.retransmitted { FLAG_RETRANS } else { 0 };
        out.extend_from_slice(&(retrans | dst).to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&[self.oseqno, self.iseqno, self.frame_type.as_u8(), csub]);
        out.extend_from_slice(&self.payload);
        Ok(())
    }
}

impl MiniFrame {
    /// Appends the wire form to `out`; the call number must be 1..=0x7fff.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let call = check_call(self.src_call)?;
        if call == 0 {
            return Err(FrameError::ZeroMiniCallNumber);
        }
        out.extend_from_slice(&call.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(())
    }
}

impl MiniVideoFrame {
    /// Appends the wire form to `out`; call number and timestamp are 15 bits.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let call = check_call(self.src_call)?;
        if self.timestamp > MAX_CALL_NUMBER {
            return Err(FrameError::VideoTimestampOutOfRange(self.timestamp));
        }
        let marker = if self.marker { FLAG_VIDEO_MARKER } else { 0 };
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(FLAG_VIDEO | call).to_be_bytes());
        out.extend_from_slice(&(marker | self.timestamp).to_be_bytes());
        out.extend_from_slice(&self.payload);
        Ok(())
    }
}

impl TrunkFrame {
    /// Appends the wire form to `out` after checking every entry.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        for e in &self.entries {
            check_trunk_entry(e.call, e.timestamp, e.payload.len(), self.with_timestamps)?;
        }
        encode_trunk_header(out, self.timestamp, self.with_timestamps);
        for e in &self.entries {
            encode_trunk_entry(out, e.call, e.timestamp, &e.payload);
        }
        Ok(())
    }
}

/// What [`TrunkFrame::encode`] refuses in an entry.
pub(crate) fn check_trunk_entry(
    call: u16,
    timestamp: Option<u16>,
    len: usize,
    with_timestamps: bool,
) -> Result<(), FrameError> {
    check_call(call)?;
    if timestamp.is_some() != with_timestamps {
        return Err(FrameError::TrunkTimestampMismatch { call, with_timestamps });
    }
    if u16::try_from(len).is_err() {
        return Err(FrameError::TrunkPayloadTooLong { call, len });
    }
    Ok(())
}

/// The meta trunk header ([`TRUNK_HEADER_LEN`] bytes).
pub(crate) fn encode_trunk_header(out: &mut Vec<u8>, timestamp: u32, with_timestamps: bool) {
    let cmddata = if with_timestamps { TRUNK_TIMESTAMPS } else { 0 };
    out.extend_from_slice(&[0, 0, META_TRUNK, cmddata]);
    out.extend_from_slice(&timestamp.to_be_bytes());
}

/// One entry, already checked by [`check_trunk_entry`] (the length fits in 16 bits).
pub(crate) fn encode_trunk_entry(out: &mut Vec<u8>, call: u16, timestamp: Option<u16>, payload: &[u8]) {
    let [l0, l1] = (payload.len() as u16).to_be_bytes();
    let [c0, c1] = call.to_be_bytes();
    match timestamp {
        Some(ts) => {
            let [t0, t1] = ts.to_be_bytes();
            out.extend_from_slice(&[l0, l1, c0, c1, t0, t1]);
        }
        None => out.extend_from_slice(&[c0, c1, l0, l1]),
    }
    out.extend_from_slice(payload);
}

impl Frame {
    /// Decodes one datagram; same as [`decode`].
    pub fn decode(datagram: &[u8]) -> Result<Frame, FrameError> {
        decode(datagram)
    }

    /// Appends the wire form to `out`; on error `out` is left untouched.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match self {
            Frame::Full(f) => f.encode(out),
            Frame::Mini(f) => f.encode(out),
            Frame::MiniVideo(f) => f.encode(out),
            Frame::Trunk(f) => f.encode(out),
        }
    }

    /// The wire form as a new buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        self.encode(&mut out)?;
        Ok(out)
    }

    /// The sender's call number; `None` for trunk frames, which carry many.
    pub fn src_call(&self) -> Option<u16> {
        match self {
            Frame::Full(f) => Some(f.src_call),
            Frame::Mini(f) => Some(f.src_call),
            Frame::MiniVideo(f) => Some(f.src_call),
            Frame::Trunk(_) => None,
        }
    }
}

impl From<FullFrame> for Frame {
    fn from(f: FullFrame) -> Self {
        Frame::Full(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iax2::ie::tests::every_ie;
    use crate::iax2::subclass::format;

    fn full(frame_type: FrameType, subclass: u32) -> FullFrame {
        FullFrame {
            src_call: 0x1234,
            dst_call: 0x0567,
            retransmitted: false,
            timestamp: 0x0102_0304,
            oseqno: 5,
            iseqno: 6,
            frame_type,
            subclass,
            payload: vec![0xaa, 0xbb],
        }
    }

    fn round_trip(frame: &Frame) -> Vec<u8> {
        let bytes = frame.to_bytes().unwrap();
        assert_eq!(&decode(&bytes).unwrap(), frame, "{bytes:02x?}");
        bytes
    }

    #[test]
    fn full_frame_bytes_by_hand() {
        // RFC 5456 8.1.1: F|src, R|dst, timestamp, oseq, iseq, type, C|subclass.
        let mut f = full(FrameType::Iax, IaxSubclass::Ping.as_u32());
        f.retransmitted = true;
        let bytes = round_trip(&Frame::Full(f));
        assert_eq!(bytes, [0x92, 0x34, 0x85, 0x67, 0x01, 0x02, 0x03, 0x04, 5, 6, 6, 2, 0xaa, 0xbb]);
    }

    #[test]
    fn ack_from_the_capture() {
        // Frame 2 of ndpi__iax.pcap: ACK from call 23 to call 4, ts 1, oseq 0, iseq 1.
        let wire = [0x80, 0x17, 0x00, 0x04, 0, 0, 0, 1, 0, 1, 6, 4];
        let Frame::Full(f) = decode(&wire).unwrap() else { panic!("not full") };
        assert_eq!((f.src_call, f.dst_call, f.timestamp, f.oseqno, f.iseqno), (23, 4, 1, 0, 1));
        assert_eq!(f.iax(), Some(IaxSubclass::Ack));
        assert!(!f.retransmitted);
        assert!(f.payload.is_empty());
        let mut out = Vec::new();
        f.encode(&mut out).unwrap();
        assert_eq!(out, wire);
    }

    #[test]
    fn every_iax_subclass_round_trips() {
        for sub in IaxSubclass::ALL {
            let f = FullFrame::new_iax(1, 2, 3, 4, 5, *sub, &[Ie::Version(2)]);
            assert_eq!(f.iax(), Some(*sub));
            let bytes = round_trip(&Frame::Full(f));
            assert_eq!(bytes[11], sub.as_u32() as u8);
            assert_eq!(&bytes[12..], [0x0b, 2, 0, 2]);
        }
    }

    #[test]
    fn every_frame_type_round_trips() {
        for t in FrameType::ALL {
            let f = full(*t, 3);
            let bytes = round_trip(&Frame::Full(f));
            assert_eq!(bytes[10], t.as_u8());
        }
        for c in ControlSubclass::ALL {
            let f = full(FrameType::Control, c.as_u32());
            assert_eq!(f.control(), Some(*c));
            assert_eq!(f.iax(), None);
            round_trip(&Frame::Full(f));
        }
    }

    #[test]
    fn c_bit_subclasses() {
        assert_eq!(uncompress_subclass(0x80 | 7), Ok(128));
        assert_eq!(compress_subclass(128), Ok(0x87));
        assert_eq!(compress_subclass(0x7f), Ok(0x7f));
        assert_eq!(compress_subclass(format::H264), Ok(0x80 | 21));
        assert_eq!(compress_subclass(1 << 31), Ok(0x80 | 31));
        assert_eq!(uncompress_subclass(0x80 | 31), Ok(1 << 31));
        assert_eq!(compress_subclass(0x81), Err(FrameError::BadSubclass(0x81)));
        assert_eq!(compress_subclass(u32::MAX), Ok(0xff));
        assert_eq!(uncompress_subclass(0xff), Ok(u32::MAX));
        // 0x80 | 0 is a legal but non-canonical spelling of 1.
        assert_eq!(uncompress_subclass(0x80), Ok(1));
        // Opus is bit 34: fine for Asterisk's 64-bit formats, not for us.
        assert_eq!(uncompress_subclass(0x80 | 34), Err(FrameError::UnrepresentableSubclass { csub: 0xa2, shift: 34 }));
        for shift in 0..32 {
            let v = 1u32 << shift;
            assert_eq!(uncompress_subclass(compress_subclass(v).unwrap()), Ok(v));
        }
        for csub in 0..=0x7f {
            assert_eq!(uncompress_subclass(csub), Ok(u32::from(csub)));
        }
    }

    #[test]
    fn voice_frame_with_c_bit() {
        let f = full(FrameType::Voice, format::SLINEAR16);
        let bytes = round_trip(&Frame::Full(f));
        assert_eq!(bytes[11], 0x80 | 15);
        let f = full(FrameType::Voice, format::GSM);
        assert_eq!(round_trip(&Frame::Full(f))[11], 0x02);
    }

    #[test]
    fn video_marker_bit_is_dropped_like_asterisk() {
        let mut wire = full(FrameType::Video, format::H263).clone();
        wire.payload.clear();
        let mut bytes = Vec::new();
        wire.encode(&mut bytes).unwrap();
        assert_eq!(bytes[11], 0x80 | 19);
        bytes[11] |= 0x40;
        let Frame::Full(f) = decode(&bytes).unwrap() else { panic!() };
        assert_eq!(f.subclass, format::H263);
        // Octets with 0x40 set cannot be sent as a video subclass.
        for bad in [0x40, 0x7f, u32::MAX] {
            let f = full(FrameType::Video, bad);
            assert_eq!(f.encode(&mut Vec::new()), Err(FrameError::BadSubclass(bad)));
        }
    }

    #[test]
    fn full_frame_with_every_ie() {
        let ies = every_ie();
        let f = FullFrame::try_new_iax(9, 0, 10, 0, 0, IaxSubclass::New, &ies).unwrap();
        let bytes = round_trip(&Frame::Full(f.clone()));
        let Frame::Full(back) = decode(&bytes).unwrap() else { panic!() };
        assert_eq!(back.ies().unwrap(), ies);
    }

    #[test]
    fn new_iax_truncates_over_long_values() {
        let long = Ie::Username("u".repeat(300));
        assert!(FullFrame::try_new_iax(1, 2, 3, 0, 0, IaxSubclass::New, std::slice::from_ref(&long)).is_err());
        let f = FullFrame::new_iax(1, 2, 3, 0, 0, IaxSubclass::New, &[Ie::Version(2), long]);
        assert_eq!(f.ies().unwrap(), vec![Ie::Version(2), Ie::Username("u".repeat(255))]);
    }

    #[test]
    fn mini_frame() {
        let f = Frame::Mini(MiniFrame { src_call: 4, timestamp: 0x1234, payload: vec![1, 2, 3] });
        assert_eq!(round_trip(&f), [0x00, 0x04, 0x12, 0x34, 1, 2, 3]);
        let empty = Frame::Mini(MiniFrame { src_call: 0x7fff, timestamp: 0, payload: vec![] });
        assert_eq!(round_trip(&empty), [0x7f, 0xff, 0, 0]);
        let zero = MiniFrame { src_call: 0, timestamp: 0, payload: vec![] };
        assert_eq!(zero.encode(&mut Vec::new()), Err(FrameError::ZeroMiniCallNumber));
    }

    #[test]
    fn mini_video_frame() {
        // RFC 5456 8.1.3: 16 zero bits, V bit + call, marker + 15-bit timestamp.
        let f =
            Frame::MiniVideo(MiniVideoFrame { src_call: 0x0102, marker: true, timestamp: 0x0304, payload: vec![9] });
        assert_eq!(round_trip(&f), [0, 0, 0x81, 0x02, 0x83, 0x04, 9]);
        let no_marker =
            Frame::MiniVideo(MiniVideoFrame { src_call: 0, marker: false, timestamp: 0x7fff, payload: vec![] });
        assert_eq!(round_trip(&no_marker), [0, 0, 0x80, 0, 0x7f, 0xff]);
        let bad = MiniVideoFrame { src_call: 1, marker: false, timestamp: 0x8000, payload: vec![] };
        assert_eq!(bad.encode(&mut Vec::new()), Err(FrameError::VideoTimestampOutOfRange(0x8000)));
    }

    #[test]
    fn trunk_frame_without_timestamps() {
        let f = Frame::Trunk(TrunkFrame {
            timestamp: 0x0a0b_0c0d,
            with_timestamps: false,
            entries: vec![
                TrunkEntry { call: 1, timestamp: None, payload: vec![0x11, 0x22] },
                TrunkEntry { call: 0x7fff, timestamp: None, payload: vec![] },
            ],
        });
        assert_eq!(round_trip(&f), [0, 0, 1, 0, 0x0a, 0x0b, 0x0c, 0x0d, 0, 1, 0, 2, 0x11, 0x22, 0x7f, 0xff, 0, 0]);
    }

    #[test]
    fn trunk_frame_with_timestamps() {
        let f = Frame::Trunk(TrunkFrame {
            timestamp: 20,
            with_timestamps: true,
            entries: vec![TrunkEntry { call: 3, timestamp: Some(0x0102), payload: vec![7, 8, 9] }],
        });
        assert_eq!(round_trip(&f), [0, 0, 1, 1, 0, 0, 0, 20, 0, 3, 0, 3, 1, 2, 7, 8, 9]);
        let empty = Frame::Trunk(TrunkFrame { timestamp: 0, with_timestamps: true, entries: vec![] });
        assert_eq!(round_trip(&empty), [0, 0, 1, 1, 0, 0, 0, 0]);
    }

    #[test]
    fn trunk_encode_checks_entries() {
        let mut t = TrunkFrame {
            timestamp: 0,
            with_timestamps: true,
            entries: vec![TrunkEntry { call: 3, timestamp: None, payload: vec![] }],
        };
        let mut out = vec![1];
        assert!(matches!(t.encode(&mut out), Err(FrameError::TrunkTimestampMismatch { call: 3, .. })));
        t.entries[0].timestamp = Some(1);
        t.entries[0].payload = vec![0; 70_000];
        assert!(matches!(t.encode(&mut out), Err(FrameError::TrunkPayloadTooLong { .. })));
        t.entries[0].payload.clear();
        t.entries[0].call = 0x8000;
        assert_eq!(t.encode(&mut out), Err(FrameError::CallNumberOutOfRange(0x8000)));
        assert_eq!(out, [1], "output untouched on error");
    }

    #[test]
    fn encode_rejects_out_of_range_fields() {
        let mut f = full(FrameType::Iax, 1);
        f.src_call = 0x8000;
        let mut out = Vec::new();
        assert_eq!(f.encode(&mut out), Err(FrameError::CallNumberOutOfRange(0x8000)));
        f.src_call = 1;
        f.dst_call = 0xffff;
        assert_eq!(f.encode(&mut out), Err(FrameError::CallNumberOutOfRange(0xffff)));
        f.dst_call = 1;
        f.subclass = 0x300;
        assert_eq!(f.encode(&mut out), Err(FrameError::BadSubclass(0x300)));
        assert!(out.is_empty());
    }

    #[test]
    fn decode_errors() {
        let t = |needed, got| Err(FrameError::Truncated { what: "", needed, got });
        let strip = |r: Result<Frame, FrameError>| match r {
            Err(FrameError::Truncated { needed, got, .. }) => Err(FrameError::Truncated { what: "", needed, got }),
            other => other,
        };
        assert_eq!(strip(decode(&[])), t(2, 0));
        assert_eq!(strip(decode(&[0x80])), t(2, 1));
        assert_eq!(strip(decode(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 6])), t(12, 11));
        assert_eq!(strip(decode(&[0x00, 1, 0])), t(4, 3));
        assert_eq!(strip(decode(&[0, 0, 0])), t(4, 3));
        assert_eq!(strip(decode(&[0, 0, 0x80, 1, 0])), t(6, 5));
        assert_eq!(strip(decode(&[0, 0, 1, 0, 0, 0])), t(8, 6));
        // Trunk entry header and data running past the end.
        assert_eq!(strip(decode(&[0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0])), t(12, 11));
        assert_eq!(strip(decode(&[0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 3, 9])), t(15, 13));
        assert_eq!(strip(decode(&[0, 0, 1, 1, 0, 0, 0, 0, 0, 5, 0, 1, 0, 0, 9])), t(19, 15));
        assert_eq!(decode(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]), Err(FrameError::UnknownFrameType(0)));
        assert_eq!(decode(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 13, 1]), Err(FrameError::UnknownFrameType(13)));
        assert_eq!(decode(&[0, 0, 2, 0, 0, 0, 0, 0]), Err(FrameError::UnknownMetaCommand(2)));
        assert!(matches!(
            decode(&[0x80, 1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0xa2]),
            Err(FrameError::UnrepresentableSubclass { .. })
        ));
        let msg = decode(&[0x80, 1, 0]).unwrap_err().to_string();
        assert!(msg.contains("full frame header") && msg.contains("12"), "{msg}");
    }

    #[test]
    fn reserved_bits_are_masked_on_decode() {
        // The R bit in front of a trunk entry's call number is reserved.
        let Frame::Trunk(t) = decode(&[0, 0, 1, 0, 0, 0, 0, 0, 0x80, 5, 0, 0]).unwrap() else { panic!() };
        assert_eq!(t.entries[0].call, 5);
    }

    #[test]
    fn src_call_accessor() {
        assert_eq!(Frame::from(full(FrameType::Null, 0)).src_call(), Some(0x1234));
        let t = Frame::Trunk(TrunkFrame { timestamp: 0, with_timestamps: false, entries: vec![] });
        assert_eq!(t.src_call(), None);
    }
}

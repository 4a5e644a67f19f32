//! Record framing of pcap and pcapng files (pcap-file 2), with lenient
//! handling: a broken record is reported with its number and skipped; a file
//! cut short ends the reading with a problem, never an error.

use std::borrow::Cow;
use std::time::Duration;

use pcap_file::pcap::PcapParser;
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::Block;
use pcap_file::pcapng::PcapNgParser;
use pcap_file::{Endianness, PcapError, TsResolution};

use super::{CaptureError, FileFormat, Problem};

/// One packet record of the file.
pub(crate) struct Record<'a> {
    /// 1-based, as Wireshark numbers frames.
    pub frame: usize,
    /// Since the Unix epoch.
    pub ts: Duration,
    /// The link type (pcap LINKTYPE_* value).
    pub link: u32,
    pub data: Cow<'a, [u8]>,
}

const PCAP_MAGICS: [[u8; 4]; 4] =
    [[0xd4, 0xc3, 0xb2, 0xa1], [0xa1, 0xb2, 0xc3, 0xd4], [0x4d, 0x3c, 0xb2, 0xa1], [0xa1, 0xb2, 0x3c, 0x4d]];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

/// Reads every record of `bytes`, calling `each` in file order.
pub(crate) fn read_records(
    bytes: &[u8],
    problems: &mut Vec<Problem>,
    mut each: impl FnMut(Record<'_>),
) -> Result<FileFormat, CaptureError> {
    let magic: [u8; 4] = bytes
        .get(..4)
        .and_then(|m| m.try_into().ok())
        .ok_or_else(|| CaptureError::NotACapture(format!("only {} bytes", bytes.len())))?;
    if PCAP_MAGICS.contains(&magic) {
        read_pcap(bytes, problems, &mut each)
    } else if magic == PCAPNG_MAGIC {
        read_pcapng(bytes, problems, &mut each)
    } else {
        Err(CaptureError::NotACapture(format!(
            "unknown magic number {:02x}{:02x}{:02x}{:02x} (neither pcap nor pcapng)",
            magic[0], magic[1], magic[2], magic[3]
        )))
    }
}

fn read_pcap(
    bytes: &[u8],
    problems: &mut Vec<Problem>,
    each: &mut impl FnMut(Record<'_>),
) -> Result<FileFormat, CaptureError> {
    let (mut rest, parser) =
        PcapParser::new(bytes).map_err(|e| CaptureError::NotACapture(format!("pcap file header: {e}")))?;
    let header = parser.header();
    let link = u32::from(header.datalink);
    let nanos = header.ts_resolution == TsResolution::NanoSecond;
    let mut frame = 0;
    while !rest.is_empty() {
        frame += 1;
        let (next, raw) = match parser.next_raw_packet(rest) {
            Ok(x) => x,
            Err(e) => {
                let why = match e {
                    PcapError::IncompleteBuffer => format!("file ends inside the record ({} bytes left)", rest.len()),
                    e => e.to_string(),
                };
                problems.push(Problem::new(frame, format!("record cut short, reading stops: {why}")));
                break;
            }
        };
        rest = next;
        let frac_limit = if nanos { 1_000_000_000 } else { 1_000_000 };
        if raw.ts_frac >= frac_limit {
            problems
                .push(Problem::new(frame, format!("timestamp fraction {} out of range, record skipped", raw.ts_frac)));
            continue;
        }
        let subsec = if nanos { raw.ts_frac } else { raw.ts_frac * 1000 };
        let ts = Duration::new(u64::from(raw.ts_sec), subsec);
        each(Record { frame, ts, link, data: raw.data });
    }
    Ok(FileFormat::Pcap { nanosecond: nanos, link })
}

/// Timestamp units of one pcapng interface.
#[derive(Clone, Copy)]
struct Interface {
    link: u32,
    /// Units per second as (base, exponent): 10^6 by default.
    resol: u8,
    offset_secs: u64,
}

impl Interface {
    fn from_idb(idb: &InterfaceDescriptionBlock<'_>) -> Self {
        let mut i = Interface { link: u32::from(idb.linktype), resol: 6, offset_secs: 0 };
        for o in &idb.options {
            match o {
                InterfaceDescriptionOption::IfTsResol(r) => i.resol = *r,
                InterfaceDescriptionOption::IfTsOffset(s) => i.offset_secs = *s,
                _ => {}
            }
        }
        i
    }

    fn time(&self, raw: u64) -> Option<Duration> {
        let per_sec: u128 = if self.resol & 0x80 != 0 {
            1u128.checked_shl(u32::from(self.resol & 0x7f))?
        } else {
            10u128.checked_pow(u32::from(self.resol))?
        };
        let raw = u128::from(raw);
        let secs = raw / per_sec;
        let frac = raw % per_sec;
        let nanos = frac * 1_000_000_000 / per_sec;
        let secs = u64::try_from(secs).ok()?.checked_add(self.offset_secs)?;
        Some(Duration::new(secs, nanos as u32))
    }
}

fn read_pcapng(
    bytes: &[u8],
    problems: &mut Vec<Problem>,
    each: &mut impl FnMut(Record<'_>),
) -> Result<FileFormat, CaptureError> {
    let (mut rest, mut parser) =
        PcapNgParser::new(bytes).map_err(|e| CaptureError::NotACapture(format!("pcapng section header: {e}")))?;
    let mut frame = 0;
    let mut block_no = 1;
    let mut last_ts = Duration::ZERO;
    let mut links = Vec::new();
    while !rest.is_empty() {
        block_no += 1;
        let big = parser.section().endianness == Endianness::Big;
        let cur = rest;
        let word = |at: usize| {
            cur.get(at..at + 4).map(|b| {
                let b = [b[0], b[1], b[2], b[3]];
                if big {
                    u32::from_be_bytes(b)
                } else {
                    u32::from_le_bytes(b)
                }
            })
        };
        let block_type = word(0);
        let is_packet = matches!(block_type, Some(2 | 3 | 6));
        if is_packet {
            frame += 1;
        }
        let block = match parser.next_block(rest) {
            Ok((next, block)) => {
                rest = next;
                block
            }
            Err(PcapError::IncompleteBuffer) => {
                let why =
                    format!("file ends inside pcapng block {block_no} ({} bytes left), reading stops", rest.len());
                problems.push(Problem::new(frame.max(1), why));
                break;
            }
            Err(e) => {
                // Skip the block by its own length when that is sane; else stop.
                let len = word(4).map(|l| l as usize).filter(|l| *l >= 12 && l % 4 == 0 && *l <= rest.len());
                match len {
                    Some(len) => {
                        let what = if is_packet { "packet block" } else { "block" };
                        problems
                            .push(Problem::new(frame.max(1), format!("broken pcapng {what} {block_no}, skipped: {e}")));
                        rest = &rest[len..];
                        continue;
                    }
                    None => {
                        let why = format!("pcapng block {block_no} unreadable, reading stops: {e}");
                        problems.push(Problem::new(frame.max(1), why));
                        break;
                    }
                }
            }
        };
        let (iface, raw_ts, data) = match block {
            Block::EnhancedPacket(EnhancedPacketBlock { interface_id, timestamp, data, .. }) => {
                (interface_id as usize, Some(timestamp.as_nanos() as u64), data)
            }
            Block::Packet(p) => (usize::from(p.interface_id), Some(p.timestamp), p.data),
            Block::SimplePacket(p) => (0, None, p.data),
            _ => continue,
        };
        let Some(interface) = parser.interfaces().get(iface).map(Interface::from_idb) else {
            problems
                .push(Problem::new(frame, format!("packet names interface {iface}, which is not described; skipped")));
            continue;
        };
        let ts = match raw_ts {
            Some(raw) => match interface.time(raw) {
                Some(ts) => ts,
                None => {
                    problems.push(Problem::new(frame, "timestamp out of range, skipped".to_string()));
                    continue;
                }
            },
            None => last_ts,
        };
        last_ts = ts;
        if !links.contains(&interface.link) {
            links.push(interface.link);
        }
        each(Record { frame, ts, link: interface.link, data });
    }
    Ok(FileFormat::PcapNg { links })
}

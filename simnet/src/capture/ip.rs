//! IPv4 and IPv6 (etherparse headers), fragment reassembly with bounded
//! memory, and the UDP/TCP headers above them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use etherparse::{Ipv4HeaderSlice, Ipv6HeaderSlice};

/// Reassemblies in progress at most; the oldest is dropped beyond.
pub const MAX_REASSEMBLIES: usize = 256;
/// Largest reassembled packet (an IP packet's length field is 16 bits).
pub const MAX_REASSEMBLED: usize = 65_535;
/// A reassembly that has not completed after this much capture time is dropped.
pub const REASSEMBLY_TIMEOUT: Duration = Duration::from_secs(30);

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// An IP payload ready for the transport layer.
pub(crate) struct IpPayload {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub payload: Vec<u8>,
    /// Reassembled from this many fragments (1: not fragmented).
    pub fragments: usize,
}

pub(crate) enum IpResult {
    Packet(IpPayload),
    /// A fragment was stored; nothing complete yet.
    Pending,
    Broken(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    id: u32,
}

struct Reassembly {
    started: Duration,
    /// (offset, bytes), in arrival order.
    pieces: Vec<(usize, Vec<u8>)>,
    bytes: usize,
    /// Known once the last fragment (MF clear) arrived.
    total: Option<usize>,
}

/// Fragment reassembly across the records of one capture.
#[derive(Default)]
pub(crate) struct Defrag {
    pending: BTreeMap<FragKey, Reassembly>,
    /// Problems to report (dropped reassemblies), drained by the reader.
    pub dropped: Vec<String>,
}

impl Defrag {
    fn expire(&mut self, now: Duration) {
        let old: Vec<FragKey> = self
            .pending
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.started) > REASSEMBLY_TIMEOUT)
            .map(|(k, _)| *k)
            .collect();
        for k in old {
            self.pending.remove(&k);
            self.dropped.push(format!("fragments of {} -> {} id {} never completed, dropped", k.src, k.dst, k.id));
        }
    }

    fn add(
        &mut self,
        now: Duration,
        key: FragKey,
        offset: usize,
        more: bool,
        data: &[u8],
    ) -> Result<Option<(Vec<u8>, usize)>, String> {
        self.expire(now);
        if offset + data.len() > MAX_REASSEMBLED {
            self.pending.remove(&key);
            return Err(format!("fragment at offset {offset} reaches past {MAX_REASSEMBLED} bytes"));
        }
        if !self.pending.contains_key(&key) && self.pending.len() >= MAX_REASSEMBLIES {
            let oldest = self.pending.iter().min_by_key(|(_, r)| r.started).map(|(k, _)| *k);
            if let Some(k) = oldest {
                self.pending.remove(&k);
                self.dropped.push(format!("too many reassemblies at once: fragments of id {} dropped", k.id));
            }
        }
        let r = self.pending.entry(key).or_insert_with(|| Reassembly {
            started: now,
            pieces: Vec::new(),
            bytes: 0,
            total: None,
        });
        if r.bytes + data.len() > 2 * MAX_REASSEMBLED {
            self.pending.remove(&key);
            return Err("too many overlapping fragments".into());
        }
        r.bytes += data.len();
        r.pieces.push((offset, data.to_vec()));
        if !more {
            r.total = Some(offset + data.len());
        }
        let Some(total) = r.total else { return Ok(None) };
        // Complete when the pieces cover 0..total without a hole.
        let mut sorted: Vec<&(usize, Vec<u8>)> = r.pieces.iter().collect();
        sorted.sort_by_key(|(o, _)| *o);
        let mut covered = 0;
        for (o, d) in &sorted {
            if *o > covered {
                return Ok(None);
            }
            covered = covered.max(o + d.len());
        }
        if covered < total {
            return Ok(None);
        }
        let mut out = vec![0u8; total];
        for (o, d) in &r.pieces {
            let end = (o + d.len()).min(total);
            if *o < end {
                out[*o..end].copy_from_slice(&d[..end - o]);
            }
        }
        let n = r.pieces.len();
        self.pending.remove(&key);
        Ok(Some((out, n)))
    }

    /// Parses one IP packet; fragments are held until their packet is whole.
    pub fn packet(&mut self, now: Duration, data: &[u8]) -> IpResult {
        match data.first().map(|b| b >> 4) {
            Some(4) => self.ipv4(now, data),
            Some(6) => self.ipv6(now, data),
            Some(v) => IpResult::Broken(format!("IP version {v}")),
            None => IpResult::Broken("empty IP packet".into()),
        }
    }

    fn ipv4(&mut self, now: Duration, data: &[u8]) -> IpResult {
        let h = match Ipv4HeaderSlice::from_slice(data) {
            Ok(h) => h,
            Err(e) => return IpResult::Broken(format!("IPv4 header: {e}")),
        };
        let hlen = usize::from(h.ihl()) * 4;
        let total = usize::from(h.total_len());
        if total < hlen {
            return IpResult::Broken(format!("IPv4 total length {total} shorter than its header ({hlen})"));
        }
        if total > data.len() {
            return IpResult::Broken(format!(
                "IPv4 packet of {total} bytes cut to {} by the capture's snap length",
                data.len()
            ));
        }
        let payload = &data[hlen..total];
        let src = IpAddr::V4(Ipv4Addr::from(h.source()));
        let dst = IpAddr::V4(Ipv4Addr::from(h.destination()));
        let proto = h.protocol().0;
        let offset = usize::from(h.fragments_offset().value()) * 8;
        if !h.more_fragments() && offset == 0 {
            return IpResult::Packet(IpPayload { src, dst, proto, payload: payload.to_vec(), fragments: 1 });
        }
        let key = FragKey { src, dst, proto, id: u32::from(h.identification()) };
        match self.add(now, key, offset, h.more_fragments(), payload) {
            Ok(Some((payload, fragments))) => IpResult::Packet(IpPayload { src, dst, proto, payload, fragments }),
            Ok(None) => IpResult::Pending,
            Err(e) => IpResult::Broken(e),
        }
    }

    fn ipv6(&mut self, now: Duration, data: &[u8]) -> IpResult {
        let h = match Ipv6HeaderSlice::from_slice(data) {
            Ok(h) => h,
            Err(e) => return IpResult::Broken(format!("IPv6 header: {e}")),
        };
        let src = IpAddr::V6(Ipv6Addr::from(h.source()));
        let dst = IpAddr::V6(Ipv6Addr::from(h.destination()));
        let plen = usize::from(h.payload_length());
        let end = if plen == 0 { data.len() } else { 40 + plen }; // 0: jumbogram, take what there is
        if end > data.len() {
            return IpResult::Broken(format!(
                "IPv6 packet of {end} bytes cut to {} by the capture's snap length",
                data.len()
            ));
        }
        let mut next = h.next_header().0;
        let mut at = 40;
        let mut fragment: Option<(usize, bool, u32)> = None;
        // Extension headers: hop-by-hop, routing, fragment, destination options, AH.
        loop {
            match next {
                0 | 43 | 60 => {
                    let (Some(&nh), Some(&len)) = (data.get(at), data.get(at + 1)) else {
                        return IpResult::Broken("IPv6 extension header cut short".into());
                    };
                    next = nh;
                    at += (usize::from(len) + 1) * 8;
                }
                51 => {
                    let (Some(&nh), Some(&len)) = (data.get(at), data.get(at + 1)) else {
                        return IpResult::Broken("IPv6 AH header cut short".into());
                    };
                    next = nh;
                    at += (usize::from(len) + 2) * 4;
                }
                44 => {
                    let Some(f) = data.get(at..at + 8) else {
                        return IpResult::Broken("IPv6 fragment header cut short".into());
                    };
                    next = f[0];
                    let off_flags = u16::from_be_bytes([f[2], f[3]]);
                    let id = u32::from_be_bytes([f[4], f[5], f[6], f[7]]);
                    fragment = Some((usize::from(off_flags >> 3) * 8, off_flags & 1 != 0, id));
                    at += 8;
                }
                _ => break,
            }
            if at > end {
                return IpResult::Broken("IPv6 extension headers run past the packet".into());
            }
        }
        let payload = &data[at..end];
        match fragment {
            Some((offset, more, id)) if offset != 0 || more => {
                let key = FragKey { src, dst, proto: next, id };
                match self.add(now, key, offset, more, payload) {
                    Ok(Some((payload, fragments))) => {
                        IpResult::Packet(IpPayload { src, dst, proto: next, payload, fragments })
                    }
                    Ok(None) => IpResult::Pending,
                    Err(e) => IpResult::Broken(e),
                }
            }
            _ => IpResult::Packet(IpPayload { src, dst, proto: next, payload: payload.to_vec(), fragments: 1 }),
        }
    }
}

/// A UDP datagram's ports and payload, after the length checks.
pub(crate) fn udp(payload: &[u8]) -> Result<(u16, u16, &[u8]), String> {
    let h = etherparse::UdpHeaderSlice::from_slice(payload).map_err(|e| format!("UDP header: {e}"))?;
    let len = usize::from(h.length());
    let body = match len {
        0 => &payload[8..], // jumbogram
        l if l < 8 => return Err(format!("UDP length {l} shorter than its header")),
        l if l > payload.len() => {
            return Err(format!("UDP datagram of {l} bytes has only {} in the packet", payload.len()));
        }
        l => &payload[8..l],
    };
    Ok((h.source_port(), h.destination_port(), body))
}

/// One TCP segment's header fields and payload.
pub(crate) struct Segment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub syn: bool,
    pub rst: bool,
    pub payload: &'a [u8],
}

pub(crate) fn tcp(payload: &[u8]) -> Result<Segment<'_>, String> {
    let t = etherparse::TcpSlice::from_slice(payload).map_err(|e| format!("TCP header: {e}"))?;
    Ok(Segment {
        src_port: t.source_port(),
        dst_port: t.destination_port(),
        seq: t.sequence_number(),
        syn: t.syn(),
        rst: t.rst(),
        payload: t.payload(),
    })
}

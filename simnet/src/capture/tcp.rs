//! TCP streams per direction: segments put in order, retransmissions
//! dropped, out-of-order data held within bounds, then split into SIP
//! messages by Content-Length.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::sip::{Framed, StreamFramer};

/// Out-of-order bytes held per direction before a gap is declared.
pub const MAX_PENDING_BYTES: usize = 256 * 1024;
/// Directions followed at once; beyond, the least recently used is dropped.
pub const MAX_STREAMS: usize = 4096;

#[derive(Default)]
struct Direction {
    next_seq: Option<u32>,
    /// Out-of-order segments by sequence number.
    pending: BTreeMap<u32, Vec<u8>>,
    pending_bytes: usize,
    framer: StreamFramer,
    last_used: u64,
}

/// What reassembly made of one segment.
pub(crate) struct Output {
    pub messages: Vec<Vec<u8>>,
    pub problems: Vec<String>,
    /// Bytes of this segment that were already seen (retransmission).
    pub retransmitted: usize,
}

#[derive(Default)]
pub(crate) struct Streams {
    dirs: BTreeMap<(SocketAddr, SocketAddr), Direction>,
    clock: u64,
    pub retransmitted_segments: usize,
    /// Directions whose first bytes are an HTTP upgrade to WebSocket.
    pub websocket_streams: usize,
}

/// An HTTP request or response that upgrades the connection to WebSocket:
/// the framer drops such a stream (it does not start with a SIP line), and
/// the replay names it as the reason it has nothing to drive.
fn is_websocket_upgrade(first: &[u8]) -> bool {
    let head = &first[..first.len().min(2048)];
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    (text.starts_with("get ") || text.starts_with("http/1.1 101")) && text.contains("upgrade: websocket")
}

/// `a - b` in sequence space, as a signed distance.
fn seq_diff(a: u32, b: u32) -> i64 {
    i64::from(a.wrapping_sub(b) as i32)
}

impl Streams {
    pub fn segment(&mut self, src: SocketAddr, dst: SocketAddr, seg: &super::ip::Segment<'_>) -> Output {
        let mut out = Output { messages: Vec::new(), problems: Vec::new(), retransmitted: 0 };
        self.clock += 1;
        if !self.dirs.contains_key(&(src, dst)) && self.dirs.len() >= MAX_STREAMS {
            if let Some(k) = self.dirs.iter().min_by_key(|(_, d)| d.last_used).map(|(k, _)| *k) {
                self.dirs.remove(&k);
                out.problems.push(format!("too many TCP streams: stream {} -> {} forgotten", k.0, k.1));
            }
        }
        let d = self.dirs.entry((src, dst)).or_default();
        d.last_used = self.clock;
        if seg.rst {
            d.pending.clear();
            d.pending_bytes = 0;
        }
        if seg.syn {
            // A new connection on this 4-tuple starts a new stream.
            if d.next_seq.is_some() {
                *d = Direction { last_used: self.clock, ..Direction::default() };
            }
            d.next_seq = Some(seg.seq.wrapping_add(1));
        }
        if seg.payload.is_empty() || d.framer.not_sip {
            return out;
        }
        if !d.framer.framed_any && is_websocket_upgrade(seg.payload) {
            self.websocket_streams += 1;
        }
        let seq = if seg.syn { seg.seq.wrapping_add(1) } else { seg.seq };
        let next = *d.next_seq.get_or_insert(seq);
        let mut frames = Vec::new();
        let ahead = seq_diff(seq, next);
        if ahead <= 0 {
            let overlap = (-ahead) as usize;
            if overlap >= seg.payload.len() {
                out.retransmitted = seg.payload.len();
                self.retransmitted_segments += 1;
                return out;
            }
            out.retransmitted = overlap;
            let fresh = &seg.payload[overlap..];
            d.next_seq = Some(next.wrapping_add(fresh.len() as u32));
            d.framer.push(fresh, &mut frames);
            drain_pending(d, &mut frames, &mut out);
        } else {
            d.pending_bytes += seg.payload.len();
            d.pending.entry(seq).or_insert_with(|| seg.payload.to_vec());
            if d.pending_bytes > MAX_PENDING_BYTES {
                // Give up on the hole: continue from the earliest held segment.
                let first = *d.pending.keys().min_by_key(|s| seq_diff(**s, next)).unwrap_or(&seq);
                out.problems.push(format!(
                    "TCP {src} -> {dst}: {} bytes missing before sequence {first}, stream continues after the gap",
                    seq_diff(first, next)
                ));
                d.next_seq = Some(first);
                d.framer.gap();
                drain_pending(d, &mut frames, &mut out);
            }
        }
        for f in frames {
            match f {
                Framed::Message(m) => out.messages.push(m),
                Framed::Problem(p) => out.problems.push(format!("TCP {src} -> {dst}: {p}")),
            }
        }
        out
    }

    /// Streams that still hold unframed bytes at the end of the capture.
    pub fn leftovers(&self) -> Vec<String> {
        self.dirs
            .iter()
            .filter(|(_, d)| d.framer.framed_any && (d.framer.leftover() > 0 || d.pending_bytes > 0))
            .map(|((s, t), d)| {
                format!(
                    "TCP {s} -> {t}: {} bytes of an incomplete SIP message and {} bytes after a gap left at the end",
                    d.framer.leftover(),
                    d.pending_bytes
                )
            })
            .collect()
    }
}

/// Moves held segments that now fit onto the stream.
fn drain_pending(d: &mut Direction, frames: &mut Vec<Framed>, out: &mut Output) {
    loop {
        let Some(next) = d.next_seq else { return };
        let ready = d.pending.keys().copied().find(|s| seq_diff(*s, next) <= 0);
        let Some(seq) = ready else { return };
        let data = d.pending.remove(&seq).unwrap_or_default();
        d.pending_bytes -= data.len();
        let overlap = (-seq_diff(seq, next)) as usize;
        if overlap >= data.len() {
            out.retransmitted += data.len();
            continue;
        }
        let fresh = &data[overlap..];
        d.next_seq = Some(next.wrapping_add(fresh.len() as u32));
        d.framer.push(fresh, frames);
    }
}

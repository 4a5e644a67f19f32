//! IAX2 trunking (RFC 5456 section 8.1.2 meta trunk frames): the voice of
//! every call to one trunk peer, gathered for `trunkfreq` and sent as as few
//! datagrams as `trunkmtu` allows, instead of one mini frame per call.

use std::net::SocketAddr;
use std::ops::Range;

use super::frame::{check_trunk_entry, encode_trunk_entry, encode_trunk_header, TRUNK_HEADER_LEN};

/// Bytes an entry adds besides its payload: call number and length, plus the
/// per-call timestamp when `trunktimestamps=yes`.
pub fn entry_overhead(with_timestamps: bool) -> usize {
    if with_timestamps {
        6
    } else {
        4
    }
}

/// Voice waiting for the next trunk tick, for one trunk peer.
#[derive(Debug, Default)]
pub struct TrunkQueue {
    /// Queued entries: call number, timestamp and payload (a range of
    /// `payloads`). One buffer for every payload, reused from tick to tick,
    /// instead of an allocation per entry: a trunk of 800 calls queues 40 000
    /// entries a second.
    entries: Vec<(u16, u16, Range<usize>)>,
    payloads: Vec<u8>,
    /// Calls currently carried on this trunk (for `trunkmaxsize`).
    pub calls: usize,
    pub frames_sent: u64,
    pub datagrams_sent: u64,
    /// The trunk's own clock (see [`TrunkQueue::stamp`]): when it started, on
    /// the caller's millisecond clock, and the last stamp it gave.
    clock_start: Option<u32>,
    last_stamp: Option<u32>,
}

/// The trunk queues, one per trunk peer address, in address order (the order
/// a trunk tick sends them in). Every trunked voice frame finds its queue
/// here; a switch has few trunk peers and a run of frames goes to the same
/// one, so the last queue used is tried first.
#[derive(Debug, Default)]
pub struct Trunks {
    queues: Vec<(SocketAddr, TrunkQueue)>,
    last: usize,
}

impl Trunks {
    fn position(&self, addr: &SocketAddr) -> Result<usize, usize> {
        match self.queues.get(self.last) {
            Some((a, _)) if a == addr => Ok(self.last),
            _ => self.queues.binary_search_by(|(a, _)| a.cmp(addr)),
        }
    }

    /// The queue for `addr`, created empty if there is none.
    pub fn queue(&mut self, addr: SocketAddr) -> &mut TrunkQueue {
        let i = match self.position(&addr) {
            Ok(i) => i,
            Err(i) => {
                self.queues.insert(i, (addr, TrunkQueue::default()));
                i
            }
        };
        self.last = i;
        &mut self.queues[i].1
    }

    pub fn get(&self, addr: &SocketAddr) -> Option<&TrunkQueue> {
        self.position(addr).ok().map(|i| &self.queues[i].1)
    }

    pub fn get_mut(&mut self, addr: &SocketAddr) -> Option<&mut TrunkQueue> {
        let i = self.position(addr).ok()?;
        Some(&mut self.queues[i].1)
    }

    /// Every queue, in address order.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&SocketAddr, &mut TrunkQueue)> {
        self.queues.iter_mut().map(|(a, q)| (&*a, q))
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&TrunkQueue) -> bool) {
        self.queues.retain(|(_, q)| keep(q));
    }
}

/// How far the trunk clock may drift from the real one before it follows it
/// (chan_iax2's `MAX_TIMESTAMP_SKEW`).
const MAX_SKEW_MS: i64 = 160;

impl TrunkQueue {
    pub fn push(&mut self, call: u16, timestamp: u16, payload: impl AsRef<[u8]>) {
        let start = self.payloads.len();
        self.payloads.extend_from_slice(payload.as_ref());
        self.entries.push((call, timestamp, start..self.payloads.len()));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The timestamp of a trunk datagram sent at `now_ms`, as chan_iax2's
    /// `calc_txpeerstamp` makes it: 0 at the trunk's first send, then the last
    /// stamp plus `interval_ms` while that stays within 160 ms of the real
    /// clock, and never the same stamp twice. A receiver's jitter buffer sees
    /// a steady 20 ms grid instead of a switch-wide clock that starts anywhere.
    fn stamp(&mut self, now_ms: u32, interval_ms: u32) -> u32 {
        let start = *self.clock_start.get_or_insert(now_ms);
        let real = now_ms.wrapping_sub(start);
        let mut ms = match self.last_stamp {
            Some(last) if (i64::from(real) - i64::from(last) - i64::from(interval_ms)).abs() < MAX_SKEW_MS => {
                last.wrapping_add(interval_ms)
            }
            _ => real,
        };
        if Some(ms) == self.last_stamp {
            ms = ms.wrapping_add(1);
        }
        self.last_stamp = Some(ms);
        ms
    }

    /// Packs everything queued into trunk datagrams of at most `mtu` bytes
    /// (0 = one datagram, letting IP fragment). An entry larger than the MTU
    /// on its own still goes, alone, rather than being lost.
    pub fn flush(&mut self, now_ms: u32, interval_ms: u32, mtu: u16, with_timestamps: bool) -> Vec<Vec<u8>> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let timestamp = self.stamp(now_ms, interval_ms);
        let overhead = entry_overhead(with_timestamps);
        let limit = if mtu == 0 { usize::MAX } else { usize::from(mtu) };
        // Entries per datagram, in order.
        let mut chunks = Vec::new();
        let mut current = 0;
        let mut size = TRUNK_HEADER_LEN;
        for (_, _, payload) in &self.entries {
            let cost = overhead + payload.len();
            if current > 0 && size + cost > limit {
                chunks.push(std::mem::take(&mut current));
                size = TRUNK_HEADER_LEN;
            }
            size += cost;
            current += 1;
        }
        if current > 0 {
            chunks.push(current);
        }
        let mut out = Vec::with_capacity(chunks.len());
        let mut rest = &self.entries[..];
        for n in chunks {
            let (entries, after) = rest.split_at(n);
            rest = after;
            self.frames_sent += n as u64;
            let ts = |t: u16| with_timestamps.then_some(t);
            if entries.iter().any(|(call, t, p)| check_trunk_entry(*call, ts(*t), p.len(), with_timestamps).is_err()) {
                continue;
            }
            let mut bytes = Vec::with_capacity(limit.min(65_535));
            encode_trunk_header(&mut bytes, timestamp, with_timestamps);
            for (call, t, p) in entries {
                encode_trunk_entry(&mut bytes, *call, ts(*t), &self.payloads[p.clone()]);
            }
            self.datagrams_sent += 1;
            out.push(bytes);
        }
        self.entries.clear();
        self.payloads.clear();
        out
    }
}

/// Datagrams one trunk tick needs for `calls` frames of `payload` bytes: what
/// the trunk-800 scenario checks the wire against.
pub fn expected_datagrams(calls: usize, payload: usize, mtu: u16, with_timestamps: bool) -> usize {
    if calls == 0 {
        return 0;
    }
    let per_entry = entry_overhead(with_timestamps) + payload;
    let per_datagram = ((usize::from(mtu).max(TRUNK_HEADER_LEN + per_entry) - TRUNK_HEADER_LEN) / per_entry).max(1);
    calls.div_ceil(per_datagram)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iax2::frame::{decode, Frame};

    #[test]
    fn splits_at_the_mtu_and_keeps_every_entry_in_order() {
        let mut q = TrunkQueue::default();
        for call in 1..=800u16 {
            q.push(call, call, vec![call as u8; 160]);
        }
        let datagrams = q.flush(1234, 20, 1240, true);
        // (1240 - 8) / 166 = 7 entries per datagram -> ceil(800 / 7) = 115.
        assert_eq!(datagrams.len(), 115);
        assert_eq!(datagrams.len(), expected_datagrams(800, 160, 1240, true));
        let mut calls = vec![];
        for d in &datagrams {
            assert!(d.len() <= 1240);
            let Ok(Frame::Trunk(t)) = decode(d) else { panic!("trunk frame") };
            assert_eq!(t.timestamp, 0, "the trunk's clock starts at its first send");
            calls.extend(t.entries.iter().map(|e| (e.call, e.timestamp, e.payload[0])));
        }
        let expected: Vec<_> = (1..=800u16).map(|c| (c, Some(c), c as u8)).collect();
        assert_eq!(calls, expected);
        assert!(q.is_empty());
    }

    #[test]
    fn without_timestamps_entries_are_smaller() {
        let mut q = TrunkQueue::default();
        for call in 1..=800u16 {
            q.push(call, 0, vec![0; 160]);
        }
        // (1240 - 8) / 164 = 7 as well; at 164 bytes 100 calls need 15.
        assert_eq!(q.flush(0, 20, 1240, false).len(), expected_datagrams(800, 160, 1240, false));
        assert_eq!(expected_datagrams(100, 160, 1240, false), 15);
        assert_eq!(expected_datagrams(1, 160, 1240, false), 1);
        assert_eq!(expected_datagrams(0, 160, 1240, false), 0);
    }

    #[test]
    fn mtu_zero_means_one_datagram() {
        let mut q = TrunkQueue::default();
        for call in 1..=50u16 {
            q.push(call, 0, vec![0; 160]);
        }
        assert_eq!(q.flush(0, 20, 0, false).len(), 1);
    }

    #[test]
    fn the_trunk_clock_starts_at_zero_and_keeps_the_20_ms_grid() {
        let mut q = TrunkQueue::default();
        let mut stamps = vec![];
        // Ticks on a clock that started long before, a little late or early, then a long pause.
        for now in [50_007, 50_027, 50_049, 50_066, 50_087, 60_000] {
            q.push(1, 0, vec![0; 160]);
            let d = q.flush(now, 20, 1240, false);
            let Ok(Frame::Trunk(t)) = decode(&d[0]) else { panic!("trunk frame") };
            stamps.push(t.timestamp);
        }
        assert_eq!(stamps, vec![0, 20, 40, 60, 80, 9993], "predicted while within 160 ms, then the real clock");
        assert!(q.flush(60_020, 20, 1240, false).is_empty(), "nothing queued, nothing sent");
    }
}

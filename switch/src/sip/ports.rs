//! RTP port pairs, one per call leg, from `rtp_ports`.
//!
//! A call's RTP port is even and its RTCP port the odd one above it (RFC 3550
//! 11). Ports are drawn at random from the free ones with the endpoint's
//! seeded RNG: a sprayer that cannot guess the port of a new call has to
//! sweep the range, and strict learning refuses it on the port it does find.
//! A released port rests for [`QUARANTINE`] before reuse, so RTP still in
//! flight for an ended call never reaches the next call given that port.
//!
//! Memory is bounded by the range: at most one entry per pair.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use rand::RngCore;

/// How long a released port stays unused. Late RTP of an ended call comes
/// within a round trip or a jitter buffer; ten seconds is well past both.
pub const QUARANTINE: Duration = Duration::from_secs(10);

/// Random draws tried before counting the free pairs: cheap while the range
/// is mostly free, and the count keeps the choice uniform when it is not.
const QUICK_DRAWS: usize = 8;

#[derive(Debug)]
pub struct PortPool {
    /// First (even) RTP port.
    first: u16,
    /// How many pairs fit in the range.
    pairs: u32,
    in_use: BTreeSet<u16>,
    /// Released pairs and when they may be used again.
    resting: BTreeMap<u16, Instant>,
    /// Ports the host would not bind (another process holds them): never again.
    unusable: BTreeSet<u16>,
}

impl PortPool {
    /// The pairs of `range` (its first port rounded up to even); `excluded`
    /// ports (the SIP listener) and their pair partners are never handed out.
    pub fn new(range: RangeInclusive<u16>, excluded: &[u16]) -> Self {
        let first = range.start().saturating_add(range.start() % 2);
        let pairs = if *range.end() > first { (u32::from(*range.end()) - u32::from(first)).div_ceil(2) } else { 0 };
        let mut pool =
            PortPool { first, pairs, in_use: BTreeSet::new(), resting: BTreeMap::new(), unusable: BTreeSet::new() };
        for port in excluded {
            if let Some(rtp) = pool.pair_of(*port) {
                pool.unusable.insert(rtp);
            }
        }
        pool
    }

    /// The even RTP port of the pair `port` belongs to, if it is in the range.
    pub fn pair_of(&self, port: u16) -> Option<u16> {
        let rtp = port & !1;
        let index = u32::from(rtp.checked_sub(self.first)?) / 2;
        (index < self.pairs).then_some(rtp)
    }

    fn port(&self, index: u32) -> u16 {
        // index < pairs, and the last pair's RTCP port fits in u16: no overflow.
        self.first + (index * 2) as u16
    }

    fn is_free(&self, now: Instant, rtp: u16) -> bool {
        !self.in_use.contains(&rtp)
            && !self.unusable.contains(&rtp)
            && self.resting.get(&rtp).is_none_or(|until| *until <= now)
    }

    /// A random free pair's RTP port, taken; `None` when the range is exhausted.
    pub fn allocate(&mut self, now: Instant, rng: &mut impl RngCore) -> Option<u16> {
        if self.pairs == 0 {
            return None;
        }
        self.resting.retain(|_, until| *until > now);
        let mut chosen = None;
        for _ in 0..QUICK_DRAWS {
            let port = self.port(rng.next_u32() % self.pairs);
            if self.is_free(now, port) {
                chosen = Some(port);
                break;
            }
        }
        if chosen.is_none() {
            let free = (0..self.pairs).filter(|i| self.is_free(now, self.port(*i))).count();
            if free == 0 {
                return None;
            }
            let k = rng.next_u32() as usize % free;
            chosen = (0..self.pairs).map(|i| self.port(i)).filter(|p| self.is_free(now, *p)).nth(k);
        }
        let port = chosen?;
        self.in_use.insert(port);
        Some(port)
    }

    /// Gives a pair back; it rests before anyone gets it again.
    pub fn release(&mut self, now: Instant, rtp: u16) {
        if self.in_use.remove(&rtp) {
            self.resting.insert(rtp, now + QUARANTINE);
        }
    }

    /// The host refused to bind this pair: it is never offered again.
    pub fn mark_unusable(&mut self, rtp: u16) {
        self.in_use.remove(&rtp);
        if self.pair_of(rtp) == Some(rtp) {
            self.unusable.insert(rtp);
        }
    }

    /// A reload changed the range: what is in use, resting or unusable stays so.
    pub fn resize(&mut self, range: RangeInclusive<u16>, excluded: &[u16]) {
        let fresh = PortPool::new(range, excluded);
        self.first = fresh.first;
        self.pairs = fresh.pairs;
        self.unusable.extend(fresh.unusable);
    }

    pub fn in_use(&self) -> usize {
        self.in_use.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn ports_are_even_random_in_range_and_never_shared() {
        let now = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut pool = PortPool::new(16384..=32768, &[5060]);
        let ports: Vec<u16> = (0..200).map(|_| pool.allocate(now, &mut rng).unwrap()).collect();
        assert!(ports.iter().all(|p| p % 2 == 0 && (16384..=32766).contains(p)), "{ports:?}");
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "two calls on one port");
        // Random, not sequential: consecutive allocations are not neighbours.
        let neighbours = ports.windows(2).filter(|w| w[0].abs_diff(w[1]) == 2).count();
        assert!(neighbours < 5, "{neighbours} sequential pairs in {ports:?}");
        // Another seed, other ports.
        let mut other = PortPool::new(16384..=32768, &[]);
        let mut rng2 = ChaCha20Rng::seed_from_u64(8);
        assert_ne!(other.allocate(now, &mut rng2), Some(ports[0]));
    }

    #[test]
    fn a_small_range_is_used_to_the_last_pair_then_refuses() {
        let now = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        // 30001 rounds up to 30002: pairs 30002, 30004, 30006 (30008 has no RTCP port).
        let mut pool = PortPool::new(30001..=30008, &[30005]);
        let mut got: Vec<u16> = std::iter::from_fn(|| pool.allocate(now, &mut rng)).take(10).collect();
        got.sort();
        assert_eq!(got, [30002, 30006], "30004 is excluded with its partner 30005");
        assert_eq!(pool.allocate(now, &mut rng), None, "exhausted");
    }

    #[test]
    fn a_released_port_rests_before_reuse() {
        let t0 = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(3);
        let mut pool = PortPool::new(40000..=40001, &[]);
        assert_eq!(pool.allocate(t0, &mut rng), Some(40000));
        pool.release(t0, 40000);
        assert_eq!(pool.allocate(t0 + QUARANTINE - Duration::from_millis(1), &mut rng), None, "still resting");
        assert_eq!(pool.allocate(t0 + QUARANTINE, &mut rng), Some(40000));
        pool.mark_unusable(40000);
        assert_eq!(pool.allocate(t0 + QUARANTINE * 10, &mut rng), None, "taken by another process");
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn a_reload_that_moves_the_range_keeps_ports_in_use() {
        let now = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(5);
        let mut pool = PortPool::new(40000..=40003, &[]);
        let a = pool.allocate(now, &mut rng).unwrap();
        pool.resize(40000..=40001, &[]);
        // Whichever pair the call holds, the narrowed range must not hand it out again.
        let again = pool.allocate(now, &mut rng);
        assert_ne!(again, Some(a));
        pool.release(now, a);
        assert_eq!(pool.in_use(), usize::from(again.is_some()));
    }

    #[test]
    fn pair_of_is_bounded_by_the_range() {
        let pool = PortPool::new(16384..=16389, &[]);
        assert_eq!(pool.pair_of(16385), Some(16384));
        assert_eq!(pool.pair_of(16389), Some(16388));
        assert_eq!(pool.pair_of(16390), None);
        assert_eq!(pool.pair_of(16383), None);
        assert_eq!(pool.pair_of(0), None);
    }
}

//! RTP port pairs, one per call leg, from `rtp_ports`.
//!
//! A call's RTP port is even and its RTCP port the odd one above it (RFC 3550
//! 11). Ports are drawn at random from the free ones with the endpoint's
//! seeded RNG: a sprayer that cannot guess the port of a new call has to
//! sweep the range, and strict learning refuses it on the port it does find.
//!
//! A released pair rests before reuse, so RTP still in flight for an ended
//! call does not reach the next call given that port. It rests [`REST`] while
//! the range has other pairs to give; when every other pair is taken (many
//! short calls on a narrow range), the pair that has rested longest is reused
//! once it has rested [`MIN_REST`], and the early reuse is counted, rather
//! than refusing the call. Strict RTP still refuses a stale stream from
//! anywhere but the new call's addresses.
//!
//! Memory is bounded by the range: a state byte per pair, and each pair in
//! at most one of the free list and the resting queue.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use rand::RngCore;

/// How long a released pair rests while others are free. Late RTP of an
/// ended call comes within a round trip or a jitter buffer; ten seconds is
/// well past both.
pub const REST: Duration = Duration::from_secs(10);

/// The least a pair rests, however busy the range: the far end stops sending
/// when our BYE reaches it, or when it sends its own, within one one-way
/// delay (under 400 ms on any usable path, ITU-T G.114), or retransmits a
/// lost BYE after T1 (500 ms).
pub const MIN_REST: Duration = Duration::from_millis(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pair {
    Free,
    InUse,
    Resting,
    /// The host would not bind it (another process holds it), or it is the
    /// SIP listener's: never handed out.
    Unusable,
}

/// What `sip show stats` reports of the range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortUsage {
    pub pairs: usize,
    pub in_use: usize,
    pub resting: usize,
    /// Pairs handed out before they had rested [`REST`]: the range is too narrow for the call rate.
    pub reused_early: u64,
}

#[derive(Debug)]
pub struct PortPool {
    /// First (even) RTP port.
    first: u16,
    /// One entry per pair of the range.
    pairs: Vec<Pair>,
    /// Free pairs by index, in no order: a uniform draw is one `swap_remove`.
    free: Vec<u32>,
    /// Released pairs by index with their release time, oldest first.
    resting: VecDeque<(u32, Instant)>,
    in_use: usize,
    reused_early: u64,
}

impl PortPool {
    /// The pairs of `range` (its first port rounded up to even); `excluded`
    /// ports (the SIP listener) and their pair partners are never handed out.
    pub fn new(range: RangeInclusive<u16>, excluded: &[u16]) -> Self {
        let first = range.start().saturating_add(range.start() % 2);
        let count = if *range.end() > first { (u32::from(*range.end()) - u32::from(first)).div_ceil(2) } else { 0 };
        let mut pool = PortPool {
            first,
            pairs: vec![Pair::Free; count as usize],
            free: Vec::new(),
            resting: VecDeque::new(),
            in_use: 0,
            reused_early: 0,
        };
        for port in excluded {
            if let Some(index) = pool.index_of(*port) {
                pool.pairs[index as usize] = Pair::Unusable;
            }
        }
        pool.free = (0..count).filter(|i| pool.pairs[*i as usize] == Pair::Free).collect();
        pool
    }

    /// The even RTP port of the pair `port` belongs to, if it is in the range.
    pub fn pair_of(&self, port: u16) -> Option<u16> {
        self.index_of(port).map(|i| self.port(i))
    }

    fn index_of(&self, port: u16) -> Option<u32> {
        let index = u32::from((port & !1).checked_sub(self.first)?) / 2;
        ((index as usize) < self.pairs.len()).then_some(index)
    }

    /// The index of the pair whose RTP (even) port is `rtp`.
    fn rtp_index(&self, rtp: u16) -> Option<u32> {
        self.index_of(rtp).filter(|_| rtp.is_multiple_of(2))
    }

    fn port(&self, index: u32) -> u16 {
        // index < pairs, and the last pair's RTCP port fits in u16: no overflow.
        self.first + (index * 2) as u16
    }

    /// A free pair's RTP port, taken: drawn at random among the rested ones,
    /// else the longest-resting one past [`MIN_REST`]; `None` when neither.
    pub fn allocate(&mut self, now: Instant, rng: &mut impl RngCore) -> Option<u16> {
        while let Some(&(index, since)) = self.resting.front() {
            if now.saturating_duration_since(since) < REST {
                break;
            }
            self.resting.pop_front();
            self.make_free(index);
        }
        let index = if self.free.is_empty() {
            let (index, since) = *self.resting.front()?;
            if now.saturating_duration_since(since) < MIN_REST {
                return None;
            }
            self.resting.pop_front();
            self.reused_early += 1;
            index
        } else {
            let k = rng.next_u32() as usize % self.free.len();
            self.free.swap_remove(k)
        };
        self.pairs[index as usize] = Pair::InUse;
        self.in_use += 1;
        Some(self.port(index))
    }

    fn make_free(&mut self, index: u32) {
        self.pairs[index as usize] = Pair::Free;
        self.free.push(index);
    }

    /// Gives a pair back; it rests before anyone gets it again.
    pub fn release(&mut self, now: Instant, rtp: u16) {
        let Some(index) = self.rtp_index(rtp) else { return };
        if self.pairs[index as usize] == Pair::InUse {
            self.pairs[index as usize] = Pair::Resting;
            self.in_use -= 1;
            self.resting.push_back((index, now));
        }
    }

    /// The host refused to bind a pair we handed out: it is never offered again.
    pub fn mark_unusable(&mut self, rtp: u16) {
        let Some(index) = self.rtp_index(rtp) else { return };
        if self.pairs[index as usize] == Pair::InUse {
            self.pairs[index as usize] = Pair::Unusable;
            self.in_use -= 1;
        }
    }

    /// A reload changed the range: what is in use, resting or unusable stays
    /// so (pairs that leave the range are forgotten as they are released).
    pub fn resize(&mut self, range: RangeInclusive<u16>, excluded: &[u16]) {
        let old = std::mem::replace(self, PortPool::new(range, excluded));
        self.reused_early = old.reused_early;
        for (index, state) in old.pairs.iter().enumerate() {
            let Some(new) = self.index_of(old.port(index as u32)) else { continue };
            if matches!(state, Pair::InUse | Pair::Unusable) && self.pairs[new as usize] == Pair::Free {
                self.pairs[new as usize] = *state;
            }
        }
        for &(index, since) in &old.resting {
            let Some(new) = self.index_of(old.port(index)) else { continue };
            if self.pairs[new as usize] == Pair::Free {
                self.pairs[new as usize] = Pair::Resting;
                self.resting.push_back((new, since));
            }
        }
        self.in_use = self.pairs.iter().filter(|p| **p == Pair::InUse).count();
        self.free = (0..self.pairs.len() as u32).filter(|i| self.pairs[*i as usize] == Pair::Free).collect();
    }

    pub fn usage(&self) -> PortUsage {
        PortUsage {
            pairs: self.pairs.len(),
            in_use: self.in_use,
            resting: self.resting.len(),
            reused_early: self.reused_early,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;
    use std::collections::BTreeSet;

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
        assert_eq!(pool.allocate(t0 + MIN_REST - Duration::from_millis(1), &mut rng), None, "still resting");
        assert_eq!(pool.usage(), PortUsage { pairs: 1, in_use: 0, resting: 1, reused_early: 0 });
        assert_eq!(pool.allocate(t0 + REST, &mut rng), Some(40000));
        pool.mark_unusable(40000);
        assert_eq!(pool.allocate(t0 + REST * 10, &mut rng), None, "taken by another process");
        assert_eq!(pool.usage().in_use, 0);
    }

    #[test]
    fn with_nothing_rested_the_longest_resting_pair_goes_first_and_is_counted() {
        let t0 = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(4);
        let mut pool = PortPool::new(40000..=40005, &[]);
        let taken: Vec<u16> = std::iter::from_fn(|| pool.allocate(t0, &mut rng)).collect();
        assert_eq!(taken.len(), 3);
        // Released in this order, a second apart.
        for (n, port) in taken.iter().enumerate() {
            pool.release(t0 + Duration::from_secs(n as u64), *port);
        }
        let now = t0 + Duration::from_millis(2250);
        assert_eq!(pool.allocate(now, &mut rng), Some(taken[0]), "rested 2.25 s, the longest");
        assert_eq!(pool.allocate(now, &mut rng), Some(taken[1]), "rested 1.25 s");
        assert_eq!(pool.allocate(now, &mut rng), None, "the last one has rested 0.25 s, under MIN_REST");
        assert_eq!(pool.usage().reused_early, 2);
    }

    #[test]
    fn a_fully_rested_pair_is_drawn_before_any_early_reuse() {
        let t0 = Instant::now();
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let mut pool = PortPool::new(40000..=40003, &[]);
        let a = pool.allocate(t0, &mut rng).unwrap();
        let b = pool.allocate(t0, &mut rng).unwrap();
        pool.release(t0, a);
        pool.release(t0 + REST - Duration::from_secs(2), b);
        // a has rested REST, b only 2 s: a comes back at random, not early.
        assert_eq!(pool.allocate(t0 + REST, &mut rng), Some(a));
        assert_eq!(pool.allocate(t0 + REST, &mut rng), Some(b), "then b, early");
        assert_eq!(pool.usage(), PortUsage { pairs: 2, in_use: 2, resting: 0, reused_early: 1 });
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
        assert_eq!(pool.usage().in_use, usize::from(again.is_some()));
        // What rests keeps resting across a reload.
        if a == 40000 {
            pool.resize(40000..=40003, &[]);
            assert_eq!(pool.usage().resting, 1);
            assert_ne!(pool.allocate(now, &mut rng), Some(a));
        }
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

//! Receive-side statistics of one RTP source, as RFC 3550 Appendix A
//! computes them, so the reception reports we send mean what peers and
//! monitoring tools expect them to mean.

use std::time::Duration;

use super::packet::RtpHeader;
use super::rtcp::{ntp_middle, ReportBlock};

/// A.1: a forward jump larger than this is not believed until confirmed.
pub const MAX_DROPOUT: u16 = 3000;
/// A.1: packets up to this far behind are late arrivals, not a restart.
pub const MAX_MISORDER: u16 = 100;
/// A.1: in-sequence packets needed before a new source is believed.
pub const MIN_SEQUENTIAL: u16 = 2;
const SEQ_MOD: u32 = 1 << 16;
/// Width of the window in which exact duplicates are recognised.
const DUP_WINDOW: u16 = 64;
/// Arrival and transit are kept in RTP units with 16 fractional bits, modulo
/// 2^48 so the 32-bit RTP timestamp wraps along with them.
const FRAC_BITS: u32 = 16;
const TRANSIT_BITS: u32 = 32 + FRAC_BITS;

/// Reception statistics of one source: sequence validation, loss and
/// interarrival jitter (RFC 3550 A.1, A.3, A.8), plus duplicates.
///
/// Two deliberate departures from the appendix's code, both documented where
/// they happen: the packets that pass probation are counted (A.1 drops the
/// first), and exact duplicates seen within the last 64 sequence numbers are
/// counted in `duplicates` rather than as received, so loss does not go
/// negative when a peer repeats packets, as RFC 4733 end-of-event packets are.
#[derive(Clone, Debug)]
pub struct RtpReceiverStats {
    clock_rate: u32,
    ssrc: Option<u32>,
    max_seq: u16,
    /// Sequence wraps seen, each worth 2^16.
    cycles: u64,
    /// Extended sequence number of the first counted packet; may be -1 when
    /// probation started at 65535.
    base_seq: i64,
    /// The sequence number that would confirm a large jump (A.1), or none.
    bad_seq: Option<u16>,
    probation: u16,
    received: u64,
    expected_prior: i64,
    received_prior: u64,
    duplicates: u64,
    /// Bit i set: sequence `max_seq - i` has been received.
    seen: u64,
    /// Relative transit time of the previous packet (A.8), fixed point.
    transit: Option<u64>,
    /// Interarrival jitter in RTP timestamp units.
    jitter: f64,
    /// Middle 32 bits of the last SR's NTP time and when it arrived.
    last_sr: Option<(u32, Duration)>,
}

impl RtpReceiverStats {
    /// Statistics for a stream whose RTP clock runs at `clock_rate` Hz (8000
    /// for G.711 and telephone-event at 8 kHz), needed to bring arrival times
    /// into timestamp units for the jitter.
    pub fn new(clock_rate: u32) -> Self {
        RtpReceiverStats {
            clock_rate,
            ssrc: None,
            max_seq: 0,
            cycles: 0,
            base_seq: 0,
            bad_seq: None,
            probation: MIN_SEQUENTIAL,
            received: 0,
            expected_prior: 0,
            received_prior: 0,
            duplicates: 0,
            seen: 0,
            transit: None,
            jitter: 0.0,
            last_sr: None,
        }
    }

    /// Accounts one received packet; `arrival` is when it arrived, as time
    /// since any fixed epoch (only differences matter). Returns whether the
    /// packet is valid and new: false while a new source is on probation,
    /// for a duplicate and for an unconfirmed large jump, i.e. whenever A.1
    /// would not pass it on.
    ///
    /// A packet from another SSRC restarts the statistics: a peer that
    /// changes SSRC (a re-INVITE, a transfer) has started a new stream.
    pub fn on_packet(&mut self, header: &RtpHeader, arrival: Duration) -> bool {
        if self.ssrc != Some(header.ssrc) {
            *self = RtpReceiverStats::new(self.clock_rate);
            self.ssrc = Some(header.ssrc);
            self.max_seq = header.sequence.wrapping_sub(1);
        }
        let seq = header.sequence;
        let valid = self.update_seq(seq);
        if valid || self.probation > 0 {
            self.update_jitter(header.timestamp, arrival);
        }
        valid
    }

    /// A.1 `update_seq`, plus the duplicate window.
    fn update_seq(&mut self, seq: u16) -> bool {
        let udelta = seq.wrapping_sub(self.max_seq);
        if self.probation > 0 {
            if seq == self.max_seq.wrapping_add(1) {
                self.probation -= 1;
                self.max_seq = seq;
                if self.probation == 0 {
                    // A.1 restarts counting here, leaving the earlier
                    // probation packets out of `received` and `expected`
                    // alike; we count them, since they were in sequence and
                    // are as real as the rest (a 236-packet call shows 236).
                    self.init_seq(seq, MIN_SEQUENTIAL);
                    return true;
                }
            } else {
                self.probation = MIN_SEQUENTIAL - 1;
                self.max_seq = seq;
            }
            return false;
        }
        if udelta == 0 {
            self.duplicates += 1;
            return false;
        }
        if udelta < MAX_DROPOUT {
            // In order, with a permissible gap.
            if seq < self.max_seq {
                self.cycles += 1;
            }
            self.max_seq = seq;
            self.seen = if udelta >= DUP_WINDOW { 1 } else { (self.seen << udelta) | 1 };
        } else if u32::from(udelta) <= SEQ_MOD - u32::from(MAX_MISORDER) {
            // A very large jump: believe it only when the next packet follows
            // on (the sender restarted without telling us).
            if Some(seq) == self.bad_seq {
                self.init_seq(seq, 2);
                self.transit = None;
                return true;
            }
            self.bad_seq = Some(seq.wrapping_add(1));
            return false;
        } else {
            // Late or duplicated, within MAX_MISORDER behind.
            let behind = self.max_seq.wrapping_sub(seq);
            if behind < DUP_WINDOW {
                let bit = 1u64 << behind;
                if self.seen & bit != 0 {
                    self.duplicates += 1;
                    return false;
                }
                self.seen |= bit;
            }
        }
        self.received += 1;
        true
    }

    /// A.1 `init_seq` for a source confirmed by `run` packets in sequence
    /// ending at `seq`, all of which are counted.
    fn init_seq(&mut self, seq: u16, run: u16) {
        self.base_seq = i64::from(seq) - i64::from(run) + 1;
        self.max_seq = seq;
        self.bad_seq = None;
        self.cycles = 0;
        self.received = u64::from(run);
        self.received_prior = 0;
        self.expected_prior = 0;
        self.seen = (1u64 << run) - 1;
    }

    /// A.8: J += (|D| - J) / 16, where D is the change in transit time. Kept
    /// in floating point (the appendix's first form) so that sub-unit arrival
    /// precision is not thrown away before averaging.
    fn update_jitter(&mut self, timestamp: u32, arrival: Duration) {
        let mask = (1u64 << TRANSIT_BITS) - 1;
        // Wrapping: only differences matter, and absurd clock rates or epochs
        // must not panic.
        let scaled = arrival.as_nanos().wrapping_mul(u128::from(self.clock_rate)).wrapping_shl(FRAC_BITS);
        let arrival_fx = (scaled / 1_000_000_000) as u64;
        let transit = arrival_fx.wrapping_sub(u64::from(timestamp) << FRAC_BITS) & mask;
        if let Some(previous) = self.transit {
            // Sign-extend the 48-bit difference, so a wrap of either clock
            // is a small step and not an enormous one.
            let d = (((transit.wrapping_sub(previous) & mask) << (64 - TRANSIT_BITS)) as i64) >> (64 - TRANSIT_BITS);
            let d = d.unsigned_abs() as f64 / f64::from(1u32 << FRAC_BITS);
            self.jitter += (d - self.jitter) / 16.0;
        }
        self.transit = Some(transit);
    }

    /// Notes an SR from this source, so the next report block can carry LSR
    /// and DLSR and the sender can compute the round trip.
    pub fn on_sender_report(&mut self, ntp_timestamp: u64, arrival: Duration) {
        self.last_sr = Some((ntp_middle(ntp_timestamp), arrival));
    }

    /// The reception report block for this source (A.3), without LSR/DLSR.
    /// Each call starts a new interval for `fraction_lost`.
    pub fn report_block(&mut self, ssrc: u32) -> ReportBlock {
        let expected = self.expected();
        let received = self.received;
        let expected_interval = expected - self.expected_prior;
        let received_interval = received.saturating_sub(self.received_prior) as i64;
        self.expected_prior = expected;
        self.received_prior = received;
        let lost_interval = expected_interval - received_interval;
        // A.3: no fraction when nothing was expected or when duplicates
        // made the loss negative.
        let fraction_lost = if expected_interval <= 0 || lost_interval <= 0 {
            0
        } else {
            ((lost_interval << 8) / expected_interval) as u8
        };
        ReportBlock {
            ssrc,
            fraction_lost,
            cumulative_lost: self.lost().clamp(-0x80_0000, 0x7f_ffff) as i32,
            highest_sequence: self.extended_max_seq() as u32,
            jitter: self.jitter.round() as u32,
            last_sr: 0,
            delay_since_last_sr: 0,
        }
    }

    /// [`report_block`](Self::report_block) with LSR and DLSR filled in from
    /// the last SR noted, `now` on the same clock as its arrival.
    pub fn report_block_at(&mut self, ssrc: u32, now: Duration) -> ReportBlock {
        let mut block = self.report_block(ssrc);
        if let Some((lsr, arrival)) = self.last_sr {
            block.last_sr = lsr;
            // DLSR is in units of 1/65536 s.
            let delay = now.saturating_sub(arrival);
            block.delay_since_last_sr = ((delay.as_nanos() << 16) / 1_000_000_000).min(u128::from(u32::MAX)) as u32;
        }
        block
    }

    /// The SSRC being tracked, once a packet has arrived.
    pub fn ssrc(&self) -> Option<u32> {
        self.ssrc
    }

    /// Whether the source has passed probation (A.1).
    pub fn is_valid(&self) -> bool {
        self.ssrc.is_some() && self.probation == 0
    }

    /// Highest sequence number seen, extended with the wrap count.
    pub fn extended_max_seq(&self) -> u64 {
        if self.is_valid() {
            (self.cycles << 16) + u64::from(self.max_seq)
        } else {
            0
        }
    }

    /// Sequence wraps seen since the source became valid.
    pub fn cycles(&self) -> u64 {
        self.cycles
    }

    /// Packets the sequence numbers say should have arrived (A.3).
    pub fn expected(&self) -> i64 {
        if self.is_valid() {
            self.extended_max_seq() as i64 - self.base_seq + 1
        } else {
            0
        }
    }

    /// Distinct valid packets received.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Expected minus received: packets never seen (late ones are not lost).
    pub fn lost(&self) -> i64 {
        self.expected() - self.received as i64
    }

    /// Packets that repeated one already received.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Interarrival jitter in RTP timestamp units.
    pub fn jitter(&self) -> f64 {
        self.jitter
    }

    /// Interarrival jitter as time, for people and logs.
    pub fn jitter_duration(&self) -> Duration {
        if self.clock_rate == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(self.jitter / f64::from(self.clock_rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SSRC: u32 = 0x1234_5678;

    fn packet(seq: u16, ts: u32) -> RtpHeader {
        RtpHeader::new(0, seq, ts, SSRC)
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    /// Feeds sequence numbers at 20 ms spacing, timestamps following.
    fn feed(stats: &mut RtpReceiverStats, seqs: impl IntoIterator<Item = u16>) -> Vec<bool> {
        seqs.into_iter()
            .enumerate()
            .map(|(i, seq)| stats.on_packet(&packet(seq, u32::from(seq) * 160), ms(i as u64 * 20)))
            .collect()
    }

    #[test]
    fn probation_then_counts_every_packet() {
        let mut s = RtpReceiverStats::new(8000);
        assert_eq!(feed(&mut s, [10, 11, 12]), [false, true, true]);
        assert!(s.is_valid());
        assert_eq!((s.expected(), s.received(), s.lost()), (3, 3, 0));
    }

    #[test]
    fn probation_restarts_on_a_gap() {
        let mut s = RtpReceiverStats::new(8000);
        assert_eq!(feed(&mut s, [10, 20, 21]), [false, false, true]);
        assert_eq!((s.expected(), s.received()), (2, 2));
        let mut fresh = RtpReceiverStats::new(8000);
        assert_eq!(fresh.report_block(SSRC), ReportBlock { ssrc: SSRC, ..ReportBlock::default() });
    }

    #[test]
    fn sequence_wrap_counts_a_cycle() {
        let mut s = RtpReceiverStats::new(8000);
        let seqs = (65530..=65535).chain(0..=4);
        assert!(feed(&mut s, seqs).iter().skip(1).all(|v| *v));
        assert_eq!(s.cycles(), 1);
        assert_eq!(s.extended_max_seq(), 65536 + 4);
        assert_eq!((s.expected(), s.received(), s.lost()), (11, 11, 0));
        assert_eq!(s.report_block(SSRC).highest_sequence, 0x0001_0004);
    }

    #[test]
    fn probation_across_the_wrap() {
        let mut s = RtpReceiverStats::new(8000);
        feed(&mut s, [65535, 0, 1]);
        // The base sits just before the wrap, so no cycle is needed to count 3.
        assert_eq!((s.expected(), s.received(), s.cycles()), (3, 3, 0));
        feed(&mut s, [2, 3]);
        assert_eq!((s.expected(), s.lost()), (5, 0));
    }

    #[test]
    fn lost_and_fraction_for_a_known_drop_pattern() {
        let mut s = RtpReceiverStats::new(8000);
        // 0..=99 with every tenth packet (9, 19, ..., 99) missing except that
        // 99 is the last one and arrives: expected 100, lost 9.
        let seqs: Vec<u16> = (0..100).filter(|n| n % 10 != 9 || *n == 99).collect();
        feed(&mut s, seqs);
        assert_eq!((s.expected(), s.received(), s.lost()), (100, 91, 9));
        let first = s.report_block(SSRC);
        assert_eq!(first.cumulative_lost, 9);
        assert_eq!(first.fraction_lost, (9 * 256 / 100) as u8); // 23
        assert_eq!(first.highest_sequence, 99);
        // Next interval: 100..=149 with 120..=124 missing -> 5/50 lost.
        feed(&mut s, (100..150).filter(|n| !(120..125).contains(n)));
        let second = s.report_block(SSRC);
        assert_eq!(second.cumulative_lost, 14);
        assert_eq!(second.fraction_lost, (5 * 256 / 50) as u8); // 25
                                                                // An interval with nothing new reports no fraction.
        assert_eq!(s.report_block(SSRC).fraction_lost, 0);
    }

    #[test]
    fn late_packets_are_recovered_and_duplicates_counted() {
        let mut s = RtpReceiverStats::new(8000);
        assert_eq!(feed(&mut s, [1, 2, 4, 5, 3, 5, 3, 6]), [false, true, true, true, true, false, false, true]);
        assert_eq!((s.expected(), s.received(), s.lost(), s.duplicates()), (6, 6, 0, 2));
        // A late packet fills its gap in the loss count.
        let block = s.report_block(SSRC);
        assert_eq!((block.cumulative_lost, block.fraction_lost), (0, 0));
    }

    #[test]
    fn large_jump_needs_confirmation() {
        let mut s = RtpReceiverStats::new(8000);
        feed(&mut s, [100, 101, 102]);
        // A stray packet far ahead is ignored...
        assert!(!s.on_packet(&packet(40000, 0), ms(100)));
        assert!(s.on_packet(&packet(103, 103 * 160), ms(120)));
        assert_eq!(s.extended_max_seq(), 103);
        // ...but two in a row mean the sender restarted: counting starts over.
        assert!(!s.on_packet(&packet(50000, 0), ms(140)));
        assert!(s.on_packet(&packet(50001, 160), ms(160)));
        assert_eq!((s.expected(), s.received(), s.lost()), (2, 2, 0));
        // Far behind (beyond MAX_MISORDER) is treated like a jump too.
        assert!(!s.on_packet(&packet(49000, 0), ms(180)));
    }

    #[test]
    fn new_ssrc_restarts() {
        let mut s = RtpReceiverStats::new(8000);
        feed(&mut s, [1, 2, 3]);
        let mut other = packet(9000, 0);
        other.ssrc = 99;
        assert!(!s.on_packet(&other, ms(100)));
        assert_eq!((s.ssrc(), s.received()), (Some(99), 0));
    }

    #[test]
    fn jitter_converges_to_zero_for_constant_spacing() {
        let mut s = RtpReceiverStats::new(8000);
        // Arrival offset by an arbitrary constant network delay.
        for i in 0..200u32 {
            s.on_packet(&packet(i as u16, 1000 + i * 160), ms(7 + u64::from(i) * 20));
        }
        assert_eq!(s.jitter(), 0.0);
    }

    #[test]
    fn jitter_decays_back_towards_zero() {
        let mut s = RtpReceiverStats::new(8000);
        s.on_packet(&packet(0, 0), ms(0));
        s.on_packet(&packet(1, 160), ms(36)); // 16 ms late: D = 128 units
        assert!((s.jitter() - 8.0).abs() < 1e-9, "{}", s.jitter());
        for i in 2..300u32 {
            s.on_packet(&packet(i as u16, i * 160), ms(16 + u64::from(i) * 20));
        }
        assert!(s.jitter() < 0.01, "{}", s.jitter());
    }

    #[test]
    fn jitter_for_alternating_delays() {
        // Delays alternate 0 and 10 ms, so |D| is always 80 units and J tends
        // to 80 (10 ms): J_n = 80 (1 - (15/16)^n) after n differences.
        let mut s = RtpReceiverStats::new(8000);
        for i in 0..=400u32 {
            let delay = if i % 2 == 0 { 0 } else { 10 };
            s.on_packet(&packet(i as u16, i * 160), ms(u64::from(i) * 20 + delay));
        }
        assert!((s.jitter() - 80.0).abs() < 1e-6, "{}", s.jitter());
        assert_eq!(s.report_block(SSRC).jitter, 80);
        assert!(s.jitter_duration().abs_diff(Duration::from_millis(10)) < Duration::from_nanos(10));
        // And exactly the closed form after 4 differences.
        let mut s = RtpReceiverStats::new(8000);
        for i in 0..=4u32 {
            s.on_packet(&packet(i as u16, i * 160), ms(u64::from(i) * 20 + if i % 2 == 0 { 0 } else { 10 }));
        }
        let expect = 80.0 * (1.0 - (15.0f64 / 16.0).powi(4));
        assert!((s.jitter() - expect).abs() < 1e-9, "{} vs {expect}", s.jitter());
    }

    #[test]
    fn jitter_ignores_timestamp_and_clock_wrap() {
        let mut s = RtpReceiverStats::new(8000);
        let start = u32::MAX - 3 * 160;
        for i in 0..10u32 {
            s.on_packet(&packet(i as u16, start.wrapping_add(i * 160)), ms(u64::from(i) * 20));
        }
        assert_eq!(s.jitter(), 0.0);
    }

    #[test]
    fn lsr_and_dlsr_come_from_the_last_sender_report() {
        let mut s = RtpReceiverStats::new(8000);
        feed(&mut s, [1, 2]);
        assert_eq!(s.report_block_at(SSRC, ms(1000)).last_sr, 0);
        s.on_sender_report(0x1122_3344_5566_7788, ms(1000));
        let block = s.report_block_at(SSRC, ms(1500));
        assert_eq!((block.last_sr, block.delay_since_last_sr), (0x3344_5566, 32768));
    }
}

//! Strict RTP, as Asterisk's `strictrtp=yes` with `learning_min_sequential`:
//! which source a call's RTP is taken from.
//!
//! Until a source is learnt, only the address the SDP signalled is played
//! (a phone with a public address needs no learning). A phone behind NAT
//! sends from another port, so a new source is learnt after `min_sequential`
//! packets with consecutive sequence numbers and one SSRC, and only while the
//! learning window is open (after the media starts or moves) and only from
//! the SDP's IP or the phone's signalling IP. Once learnt, every other
//! source is refused: an RTP sprayer hitting the port between the 200 OK and
//! the phone's first packet ("RTP bleed") cannot take the call, because
//! random sequence numbers never make a run and its IP is not eligible.
//!
//! Refusals are counted per source, not logged per packet; the endpoint
//! reports the totals once, when the call ends.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Sources whose refusals are counted one by one; the rest are summed, so a
/// sprayer rotating source ports cannot grow the map.
pub const MAX_COUNTED_SOURCES: usize = 8;

/// What to do with one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Play it.
    Accept,
    /// This packet completed learning: play it, and the source is the call's from now on.
    Learnt(SocketAddr),
    /// Drop it (counted).
    Refuse,
}

#[derive(Clone, Copy, Debug)]
struct Candidate {
    source: SocketAddr,
    ssrc: u32,
    sequence: u16,
    run: u16,
}

#[derive(Debug)]
pub struct StrictRtp {
    min_sequential: u16,
    window: Duration,
    learning_until: Instant,
    /// Where the SDP (as corrected for NAT) said the phone sends from.
    signalled: SocketAddr,
    /// IPs a source may be learnt from: the SDP's and the signalling source's.
    eligible: [IpAddr; 2],
    learnt: Option<SocketAddr>,
    candidate: Option<Candidate>,
    refused: BTreeMap<SocketAddr, u64>,
    refused_elsewhere: u64,
}

impl StrictRtp {
    pub fn new(now: Instant, min_sequential: u16, window: Duration, signalled: SocketAddr, signalling: IpAddr) -> Self {
        StrictRtp {
            min_sequential: min_sequential.max(1),
            window,
            learning_until: now + window,
            signalled,
            eligible: [signalled.ip().to_canonical(), signalling.to_canonical()],
            learnt: None,
            candidate: None,
            refused: BTreeMap::new(),
            refused_elsewhere: 0,
        }
    }

    /// The media starts (answer) or moves (a re-INVITE or UPDATE with a new
    /// address): forget what was learnt and learn again for one window.
    pub fn restart(&mut self, now: Instant, signalled: SocketAddr, signalling: IpAddr) {
        self.signalled = signalled;
        self.eligible = [signalled.ip().to_canonical(), signalling.to_canonical()];
        self.learnt = None;
        self.candidate = None;
        self.learning_until = now + self.window;
    }

    /// Reopens the window without forgetting (the call was answered).
    pub fn open_window(&mut self, now: Instant) {
        if self.learnt.is_none() {
            self.learning_until = now + self.window;
        }
    }

    pub fn learnt(&self) -> Option<SocketAddr> {
        self.learnt
    }

    /// Where our RTP goes: the learnt source, else where the SDP said.
    pub fn destination(&self) -> SocketAddr {
        self.learnt.unwrap_or(self.signalled)
    }

    pub fn on_packet(&mut self, now: Instant, from: SocketAddr, ssrc: u32, sequence: u16) -> Verdict {
        if let Some(learnt) = self.learnt {
            return if learnt == from { Verdict::Accept } else { self.refuse(from) };
        }
        // A dual-stack socket reports IPv4 sources as ::ffff:a.b.c.d.
        if now < self.learning_until && self.eligible.contains(&from.ip().to_canonical()) {
            let run = match self.candidate {
                Some(c) if c.source == from && c.ssrc == ssrc && c.sequence.wrapping_add(1) == sequence => {
                    c.run.saturating_add(1)
                }
                _ => 1,
            };
            self.candidate = Some(Candidate { source: from, ssrc, sequence, run });
            if run >= self.min_sequential {
                self.learnt = Some(from);
                self.candidate = None;
                // Its packets before the run completed were learning, not refusal.
                self.refused.remove(&from);
                return Verdict::Learnt(from);
            }
        }
        if from == self.signalled {
            Verdict::Accept
        } else {
            self.refuse(from)
        }
    }

    fn refuse(&mut self, from: SocketAddr) -> Verdict {
        if let Some(n) = self.refused.get_mut(&from) {
            *n += 1;
        } else if self.refused.len() < MAX_COUNTED_SOURCES {
            self.refused.insert(from, 1);
        } else {
            self.refused_elsewhere += 1;
        }
        Verdict::Refuse
    }

    /// Refused packets per source (address order), and those of sources past
    /// [`MAX_COUNTED_SOURCES`] together.
    pub fn refused(&self) -> (&BTreeMap<SocketAddr, u64>, u64) {
        (&self.refused, self.refused_elsewhere)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    const PHONE_SDP: &str = "192.0.2.10:40000";
    const PHONE_NAT: &str = "192.0.2.10:61000";

    fn strict(now: Instant) -> StrictRtp {
        StrictRtp::new(now, 4, Duration::from_secs(5), addr(PHONE_SDP), addr("192.0.2.10:5060").ip())
    }

    #[test]
    fn four_sequential_packets_from_the_phones_ip_are_learnt() {
        let t0 = Instant::now();
        let mut s = strict(t0);
        let verdicts: Vec<Verdict> = (0..4u16).map(|i| s.on_packet(t0, addr(PHONE_NAT), 7, 100 + i)).collect();
        assert_eq!(verdicts[..3], [Verdict::Refuse; 3], "not yet learnt, not the signalled address");
        assert_eq!(verdicts[3], Verdict::Learnt(addr(PHONE_NAT)));
        assert_eq!(s.destination(), addr(PHONE_NAT));
        assert!(s.refused().0.is_empty(), "learning packets are not refusals");
        // Now the signalled address itself is another source.
        assert_eq!(s.on_packet(t0, addr(PHONE_SDP), 7, 104), Verdict::Refuse);
    }

    #[test]
    fn the_signalled_address_plays_before_learning() {
        let t0 = Instant::now();
        let mut s = strict(t0);
        assert_eq!(s.on_packet(t0, addr(PHONE_SDP), 1, 1), Verdict::Accept);
        assert_eq!(s.destination(), addr(PHONE_SDP));
    }

    #[test]
    fn a_sprayer_from_another_ip_is_never_learnt() {
        let t0 = Instant::now();
        let mut s = strict(t0);
        for i in 0..100u16 {
            assert_eq!(s.on_packet(t0, addr("198.51.100.66:5004"), 9, i), Verdict::Refuse);
        }
        assert_eq!(s.learnt(), None);
        assert_eq!(s.refused().0.get(&addr("198.51.100.66:5004")), Some(&100));
        // The phone still gets learnt afterwards.
        for i in 0..4u16 {
            s.on_packet(t0, addr(PHONE_NAT), 3, i);
        }
        assert_eq!(s.learnt(), Some(addr(PHONE_NAT)));
    }

    #[test]
    fn a_sprayer_from_the_phones_ip_with_random_sequence_or_ssrc_is_not_learnt() {
        let t0 = Instant::now();
        let mut s = strict(t0);
        let spray = addr("192.0.2.10:7777");
        let mut x: u32 = 12345;
        for _ in 0..1000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            s.on_packet(t0, spray, x >> 8, (x >> 16) as u16);
        }
        // Sequential numbers but a new SSRC each time do not make a run either.
        for i in 0..10u16 {
            s.on_packet(t0, spray, u32::from(i), i);
        }
        assert_eq!(s.learnt(), None);
        // Interleaving with the phone's run resets it.
        assert_eq!(s.on_packet(t0, addr(PHONE_NAT), 5, 1), Verdict::Refuse);
        assert_eq!(s.on_packet(t0, addr(PHONE_NAT), 5, 2), Verdict::Refuse);
        assert_eq!(s.on_packet(t0, spray, 5, 3), Verdict::Refuse);
        assert_eq!(s.on_packet(t0, addr(PHONE_NAT), 5, 3), Verdict::Refuse);
        assert_eq!(s.learnt(), None);
    }

    #[test]
    fn nothing_is_learnt_after_the_window_until_the_media_moves() {
        let t0 = Instant::now();
        let mut s = strict(t0);
        let late = t0 + Duration::from_secs(5);
        for i in 0..10u16 {
            assert_eq!(s.on_packet(late, addr(PHONE_NAT), 1, i), Verdict::Refuse);
        }
        assert_eq!(s.learnt(), None);
        assert_eq!(s.on_packet(late, addr(PHONE_SDP), 1, 11), Verdict::Accept, "the SDP's address still plays");
        // A re-INVITE moves the media: a new window.
        s.restart(late, addr("192.0.2.10:42000"), addr("192.0.2.10:5060").ip());
        for i in 0..4u16 {
            s.on_packet(late, addr(PHONE_NAT), 1, 20 + i);
        }
        assert_eq!(s.learnt(), Some(addr(PHONE_NAT)));
        // Once learnt, a new run from elsewhere changes nothing, even in the window.
        for i in 0..10u16 {
            assert_eq!(s.on_packet(late, addr("192.0.2.10:42000"), 2, i), Verdict::Refuse);
        }
        assert_eq!(s.learnt(), Some(addr(PHONE_NAT)));
    }

    #[test]
    fn an_ipv4_phone_seen_through_a_dual_stack_socket_is_eligible() {
        let t0 = Instant::now();
        let mut s = strict(t0);
        let mapped: SocketAddr = "[::ffff:192.0.2.10]:61000".parse().unwrap();
        for i in 0..4u16 {
            s.on_packet(t0, mapped, 1, i);
        }
        assert_eq!(s.learnt(), Some(mapped));
    }

    #[test]
    fn refusal_counts_are_bounded() {
        let t0 = Instant::now();
        let mut s = strict(t0);
        for port in 0..1000u16 {
            s.on_packet(t0, SocketAddr::new(addr("203.0.113.1:1").ip(), port), 1, 1);
        }
        let (per_source, elsewhere) = s.refused();
        assert_eq!(per_source.len(), MAX_COUNTED_SOURCES);
        assert_eq!(elsewhere, 1000 - MAX_COUNTED_SOURCES as u64);
    }
}

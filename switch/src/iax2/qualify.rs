//! Qualify: POKE/PONG reachability of peers with `qualify=`, with Asterisk's
//! states OK / LAGGED / UNREACHABLE (and UNMONITORED when qualify is off).

use std::time::{Duration, Instant};

use crate::config::{PeerConfig, Qualify};
use crate::event::{Event, PeerState};

pub struct PeerQualify {
    pub peer: String,
    pub state: PeerState,
    /// Latency of the last PONG (smoothed when `qualifysmoothing=yes`).
    pub latency_ms: Option<u32>,
    max_ms: u32,
    smoothing: bool,
    freq_ok: Duration,
    freq_notok: Duration,
    pub next_poke: Option<Instant>,
    /// The POKE in flight: its dialog and when it left.
    pub in_flight: Option<(u16, Instant)>,
}

impl PeerQualify {
    /// `None` when the peer is not qualified.
    pub fn new(peer: &PeerConfig) -> Option<Self> {
        let Qualify::MaxMs(max_ms) = peer.qualify else { return None };
        Some(PeerQualify {
            peer: peer.name.clone(),
            state: PeerState::Unknown,
            latency_ms: None,
            max_ms: max_ms.max(1),
            smoothing: peer.qualifysmoothing,
            freq_ok: peer.qualifyfreqok,
            freq_notok: peer.qualifyfreqnotok,
            next_poke: None,
            in_flight: None,
        })
    }

    /// Takes new settings, keeping the observed state.
    pub fn update(&mut self, peer: &PeerConfig) {
        if let Some(fresh) = Self::new(peer) {
            self.max_ms = fresh.max_ms;
            self.smoothing = fresh.smoothing;
            self.freq_ok = fresh.freq_ok;
            self.freq_notok = fresh.freq_notok;
        }
    }

    /// How long a POKE may go unanswered before the peer is UNREACHABLE.
    pub fn answer_timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.max_ms) * 2)
    }

    pub fn poke_sent(&mut self, call: u16, now: Instant) {
        self.in_flight = Some((call, now));
        self.next_poke = None;
    }

    /// A PONG arrived for the POKE in flight.
    pub fn pong(&mut self, now: Instant, events: &mut std::collections::VecDeque<Event>) {
        let Some((_, sent)) = self.in_flight.take() else { return };
        let sample = now.saturating_duration_since(sent).as_millis().min(u32::MAX as u128) as u32;
        let latency = match (self.smoothing, self.latency_ms) {
            (true, Some(previous)) => (previous + sample) / 2,
            _ => sample,
        };
        self.latency_ms = Some(latency);
        let state = if latency > self.max_ms { PeerState::Lagged } else { PeerState::Ok };
        self.set_state(state, events);
        self.next_poke = Some(now + if state == PeerState::Ok { self.freq_ok } else { self.freq_notok });
    }

    /// The POKE in flight went unanswered.
    pub fn no_answer(&mut self, now: Instant, events: &mut std::collections::VecDeque<Event>) {
        self.in_flight = None;
        self.latency_ms = None;
        self.set_state(PeerState::Unreachable, events);
        self.next_poke = Some(now + self.freq_notok);
    }

    /// The peer has no address any more (registration expired or released).
    pub fn lost_address(&mut self, events: &mut std::collections::VecDeque<Event>) {
        self.in_flight = None;
        self.next_poke = None;
        if matches!(self.state, PeerState::Ok | PeerState::Lagged) {
            self.latency_ms = None;
            self.set_state(PeerState::Unreachable, events);
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        let expiry = self.in_flight.map(|(_, sent)| sent + self.answer_timeout());
        match (self.next_poke, expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn set_state(&mut self, to: PeerState, events: &mut std::collections::VecDeque<Event>) {
        if self.state != to {
            events.push_back(Event::PeerStateChanged {
                peer: self.peer.clone(),
                from: self.state,
                to,
                latency_ms: self.latency_ms,
            });
            self.state = to;
        }
    }
}

//! The causal schedule of a scripted party, the same for every protocol.
//!
//! A captured datagram is sent at its captured time, unless it carries
//! something it could only have learnt from an answer of the switch (a call
//! token, a call number, a challenge, a To tag): then it waits for that
//! answer, at most [`DEPENDENCY_WAIT`], and every later datagram of the party
//! keeps its captured gap to it. The capture's own timing is only a record
//! of one network: on a loopback capture the answers took 0.2 ms, and a
//! schedule that ignored causality would send the reply before the answer it
//! depends on has crossed the simulated link.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a datagram that needs an answer of the switch waits past its
/// (slipped) time before it is sent without it or given up.
pub const DEPENDENCY_WAIT: Duration = Duration::from_secs(2);

/// How far a party's schedule slipped behind the captured times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slip {
    /// Datagrams that had to wait for an answer of the switch.
    pub waited: usize,
    /// Of those, the ones whose answer never came within the bound.
    pub gave_up: usize,
    /// The longest single wait.
    pub max: Duration,
    /// The schedule's shift at the end: the sum of all waits.
    pub total: Duration,
}

impl Slip {
    /// The slips of several parties as one: their waits added, the largest wait and shift.
    pub fn combine(all: &[Slip]) -> Slip {
        Slip {
            waited: all.iter().map(|s| s.waited).sum(),
            gave_up: all.iter().map(|s| s.gave_up).sum(),
            max: all.iter().map(|s| s.max).max().unwrap_or_default(),
            total: all.iter().map(|s| s.total).max().unwrap_or_default(),
        }
    }

    /// One sentence for the report.
    pub fn describe(&self) -> String {
        if self.waited == 0 {
            return "every datagram left at its captured time (none waited for an answer of the switch)".into();
        }
        let gave_up = match self.gave_up {
            0 => String::new(),
            n => format!(", {n} of them in vain (sent or dropped after {} s)", DEPENDENCY_WAIT.as_secs()),
        };
        format!(
            "{} datagram(s) waited for the switch's answer they depend on{gave_up}; slip: max {:.1} ms, total {:.1} ms",
            self.waited,
            self.max.as_secs_f64() * 1e3,
            self.total.as_secs_f64() * 1e3
        )
    }
}

/// Shared with the drive loop, which runs the simulation longer by the slip.
pub(crate) type SharedSlip = Arc<Mutex<Slip>>;

/// One party's schedule: captured times, shifted by what it waited.
#[derive(Debug)]
pub(crate) struct Schedule {
    /// Captured time 0 happens this long after the start.
    lead: Duration,
    shift: Duration,
    /// The datagram (its index) held for an answer, and when it gives up.
    held: Option<(usize, Duration)>,
    slip: SharedSlip,
}

impl Schedule {
    pub fn new(lead: Duration, slip: SharedSlip) -> Schedule {
        Schedule { lead, shift: Duration::ZERO, held: None, slip }
    }

    /// When a datagram captured at `at` is due.
    pub fn due_at(&self, at: Duration) -> Duration {
        self.lead + at + self.shift
    }

    /// The datagram held, and when it gives up.
    pub fn held(&self) -> Option<(usize, Duration)> {
        self.held
    }

    /// Datagram `i` waits for an answer; everything after it waits behind it.
    pub fn hold(&mut self, i: usize, now: Duration) {
        if self.held.map(|(h, _)| h) != Some(i) {
            self.held = Some((i, now + DEPENDENCY_WAIT));
            self.update(|s| s.waited += 1);
        }
    }

    /// Datagram `i` (captured at `at`) leaves now (or is given up): the
    /// schedule shifts by how late it is.
    pub fn release(&mut self, at: Duration, now: Duration, gave_up: bool) {
        let late = now.saturating_sub(self.due_at(at));
        self.shift += late;
        self.held = None;
        let shift = self.shift;
        self.update(|s| {
            s.max = s.max.max(late);
            s.total = shift;
            s.gave_up += usize::from(gave_up);
        });
    }

    fn update(&self, f: impl FnOnce(&mut Slip)) {
        f(&mut self.slip.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_shifts_everything_after_it() {
        let slip = SharedSlip::default();
        let mut s = Schedule::new(Duration::from_secs(1), slip.clone());
        let ms = Duration::from_millis;
        assert_eq!(s.due_at(ms(10)), ms(1010));
        s.hold(3, ms(1010));
        s.hold(3, ms(1011)); // the same datagram, checked again
        assert_eq!(s.held(), Some((3, ms(3010))));
        s.release(ms(10), ms(1012), false);
        assert_eq!(s.due_at(ms(20)), ms(1022));
        let got = *slip.lock().unwrap();
        assert_eq!(got, Slip { waited: 1, gave_up: 0, max: ms(2), total: ms(2) });
        assert!(got.describe().contains("max 2.0 ms, total 2.0 ms"), "{}", got.describe());
    }
}

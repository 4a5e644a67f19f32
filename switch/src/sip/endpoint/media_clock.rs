//! Which answered calls the 20 ms media tick has to look at.
//!
//! A carrier's switch holds thousands of echo and bridged calls that make no
//! audio of their own; walking all of them every 20 ms for the few that play
//! a tone, or whose RTP timeout or hold time is up, was a tenth of the CPU
//! of a SIP call load. The tick now visits the calls that generate audio and
//! the calls whose deadline has come.
//!
//! A call's deadline is a lower bound: the earlier of its hangup time and its
//! last RTP plus the RTP timeout, as of when it was computed. RTP keeps
//! arriving without touching the index; when the bound comes, the tick looks
//! at the call and either ends it or moves the bound to the real deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use crate::deadline::DeadlineIndex;

#[derive(Debug, Default)]
pub(super) struct MediaClock {
    due: DeadlineIndex<u32>,
    deadline: BTreeMap<u32, Instant>,
    /// Answered calls whose application plays audio of its own (tone, music, pattern).
    generating: BTreeSet<u32>,
}

impl MediaClock {
    /// Call `id` is answered: tick it if it `generates`, and look at it again
    /// at `deadline`.
    pub fn watch(&mut self, id: u32, deadline: Option<Instant>, generates: bool) {
        if generates {
            self.generating.insert(id);
        }
        self.reschedule(id, deadline);
    }

    /// Moves call `id`'s deadline (none: nothing to watch for).
    pub fn reschedule(&mut self, id: u32, deadline: Option<Instant>) {
        let old = match deadline {
            Some(at) => self.deadline.insert(id, at),
            None => self.deadline.remove(&id),
        };
        self.due.set(&id, old, deadline);
    }

    pub fn forget(&mut self, id: u32) {
        self.reschedule(id, None);
        self.generating.remove(&id);
    }

    /// Calls whose deadline has come, by call number (the order the tick
    /// has always ended calls in).
    pub fn due(&self, now: Instant) -> Vec<u32> {
        let mut ids = self.due.due(now);
        ids.sort_unstable();
        ids
    }

    /// Answered calls that play audio of their own, by call number.
    pub fn generating(&self) -> impl Iterator<Item = u32> + '_ {
        self.generating.iter().copied()
    }

    /// Every watched call, for a change of the RTP timeout.
    pub fn watched(&self) -> Vec<u32> {
        self.deadline.keys().chain(&self.generating).copied().collect::<BTreeSet<_>>().into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn only_due_calls_come_out_in_call_order_and_forgotten_ones_never() {
        let t0 = Instant::now();
        let mut clock = MediaClock::default();
        clock.watch(7, Some(t0 + Duration::from_secs(2)), false);
        clock.watch(3, Some(t0 + Duration::from_secs(1)), true);
        clock.watch(5, Some(t0 + Duration::from_secs(1)), false);
        clock.watch(9, None, true);
        assert!(clock.due(t0).is_empty());
        assert_eq!(clock.due(t0 + Duration::from_secs(2)), [3, 5, 7]);
        clock.reschedule(5, Some(t0 + Duration::from_secs(30)));
        clock.forget(3);
        assert_eq!(clock.due(t0 + Duration::from_secs(2)), [7]);
        assert_eq!(clock.generating().collect::<Vec<_>>(), [9]);
        assert_eq!(clock.watched(), [5, 7, 9]);
    }
}

//! Dropped datagrams in the trace and the log, summarised: a flood of junk
//! must not become a flood of log lines (200,000 datagrams once wrote 34 MB).
//!
//! The first drop of a reason is reported at once, as `datagram_dropped`
//! with its source and full reason, so a single odd packet is still visible
//! where it happened. Further drops of that reason within [`INTERVAL`] are
//! only counted; when the interval ends one `datagrams_dropped` says how many
//! there were, the first source and the busiest ones. A reason quiet for a
//! whole interval is forgotten, and its next drop is reported at once again.
//! The exact per-reason counters for `show stats` are kept by the cores.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::event::Event;

/// How long drops of one reason are gathered into one summary.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Reasons with an open interval at once; more share the reason `other`.
const MAX_REASONS: usize = 64;
/// Distinct sources counted per interval; later new ones still count in the total.
const MAX_SOURCES: usize = 256;
/// Busiest sources named in a summary.
const TOP: usize = 3;

#[derive(Debug)]
struct Window {
    ends: Instant,
    count: u64,
    first: Option<SocketAddr>,
    sources: BTreeMap<IpAddr, u64>,
}

#[derive(Debug, Default)]
pub struct DropLog {
    open: BTreeMap<String, Window>,
}

impl DropLog {
    /// One dropped datagram; `key` is the reason without its details (the
    /// `show stats` counter), `reason` the whole text.
    pub fn record(&mut self, now: Instant, from: SocketAddr, key: &str, reason: &str, events: &mut VecDeque<Event>) {
        let key = if self.open.len() >= MAX_REASONS && !self.open.contains_key(key) { "other" } else { key };
        if let Some(w) = self.open.get_mut(key) {
            w.count += 1;
            w.first.get_or_insert(from);
            if w.sources.len() < MAX_SOURCES || w.sources.contains_key(&from.ip()) {
                *w.sources.entry(from.ip()).or_default() += 1;
            }
            return;
        }
        self.open
            .insert(key.to_string(), Window { ends: now + INTERVAL, count: 0, first: None, sources: BTreeMap::new() });
        events.push_back(Event::DatagramDropped { from, reason: reason.to_string() });
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.open.values().map(|w| w.ends).min()
    }

    /// Ends the intervals due: a summary for each that counted anything.
    pub fn handle_timeout(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        let due: Vec<String> = self.open.iter().filter(|(_, w)| w.ends <= now).map(|(k, _)| k.clone()).collect();
        for key in due {
            let Some(w) = self.open.remove(&key) else { continue };
            if w.count == 0 {
                continue;
            }
            let mut busiest: Vec<(IpAddr, u64)> = w.sources.into_iter().collect();
            // Most drops first; among equals the lower address, so traces are stable.
            busiest.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            let top = busiest.iter().take(TOP).map(|(ip, n)| format!("{ip}={n}")).collect();
            events.push_back(Event::DatagramsDropped {
                reason: key.clone(),
                count: w.count,
                for_ms: u64::try_from(INTERVAL.as_millis()).unwrap_or(u64::MAX),
                first: w.first,
                sources: busiest.len() as u64,
                top,
            });
            self.open.insert(key, Window { ends: now + INTERVAL, count: 0, first: None, sources: BTreeMap::new() });
        }
    }
}

/// The `show stats` key of a reason: the text before its first colon.
pub fn reason_key(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(n: u8) -> SocketAddr {
        SocketAddr::from(([198, 51, 100, n], 5060))
    }

    #[test]
    fn a_flood_is_one_event_then_one_summary_per_interval_counting_exactly() {
        let t0 = Instant::now();
        let mut log = DropLog::default();
        let mut ev = VecDeque::new();
        let mut now = t0;
        for i in 0..100_000u32 {
            now = t0 + Duration::from_micros(u64::from(i) * 250); // 25 s of junk
            if log.poll_timeout().is_some_and(|t| t <= now) {
                log.handle_timeout(now, &mut ev);
            }
            let source = if i % 10 == 0 { from(2) } else { from(1) };
            log.record(now, source, "malformed SIP", "malformed SIP: no CRLF", &mut ev);
        }
        log.handle_timeout(now + INTERVAL, &mut ev);
        log.handle_timeout(now + INTERVAL * 2, &mut ev);
        assert_eq!(ev.len(), 4, "{ev:?}"); // the first at once, then one per 10 s (0-10, 10-20, 20-25)
        assert!(matches!(&ev[0], Event::DatagramDropped { reason, .. } if reason == "malformed SIP: no CRLF"));
        let mut total = 1;
        for e in ev.iter().skip(1) {
            let Event::DatagramsDropped { reason, count, top, sources, .. } = e else { panic!("{e:?}") };
            assert_eq!(reason, "malformed SIP");
            assert_eq!(*sources, 2);
            assert!(top[0].starts_with("198.51.100.1="), "{top:?}");
            total += count;
        }
        assert_eq!(total, 100_000, "every drop is counted once");
        assert_eq!(log.poll_timeout(), None, "a quiet interval closes the reason");
        ev.clear();
        log.record(now + INTERVAL * 3, from(3), "malformed SIP", "malformed SIP: x", &mut ev);
        assert_eq!(ev.len(), 1, "after a quiet interval the next drop is reported at once");
    }

    #[test]
    fn reasons_are_separate_and_capped() {
        let t0 = Instant::now();
        let mut log = DropLog::default();
        let mut ev = VecDeque::new();
        for n in 0..1000 {
            let reason = format!("METHOD{n} from an address with no registration");
            log.record(t0, from(1), &reason, &reason, &mut ev);
        }
        assert_eq!(ev.len(), MAX_REASONS + 1, "one each, then one for `other`");
        assert!(log.open.len() <= MAX_REASONS + 1);
        log.handle_timeout(t0 + INTERVAL, &mut ev);
        let Some(Event::DatagramsDropped { reason, count, .. }) = ev.back() else { panic!() };
        assert_eq!((reason.as_str(), *count), ("other", 1000 - MAX_REASONS as u64 - 1));
    }
}

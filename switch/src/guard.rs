//! Brute-force defence, sans IO: authentication failures counted per source
//! address and per user name, growing silences, then a temporary ban of the
//! source. It is what fail2ban and Kamailio's pike give an Asterisk or a
//! Kamailio, inside the core, so it works the same live and in simulation.
//!
//! A failure is a refused proof (a wrong digest or MD5 answer, an unknown
//! user); a challenge is not, since every honest client gets one first. From
//! the `failures_before_throttle`th failure in a row (each within
//! [`WINDOW`] of the last) the source is answered with nothing for 1 s, then
//! 2 s, 4 s... up to [`MAX_PENALTY`]: silence costs the switch nothing and
//! amplifies nothing, and a cracker's tool waits out its own timeouts. At
//! `failures_before_ban` the source is banned for `ban_time` and everything
//! it sends is dropped unanswered.
//!
//! The per-user count catches a guess spread over many addresses. It only
//! silences requests naming that user, and never from an address where the
//! user holds a live registration (the caller says which: see
//! [`Guard::user_throttled`]), so an attack on a name cannot lock its phone
//! out. Users are throttled, never banned: a ban belongs to an address.
//!
//! Every table is capped; a full table forgets its stalest entry.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::event::Event;

/// Failures further apart than this start the count again.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The longest silence before a ban; below [`WINDOW`], so the count survives it.
pub const MAX_PENALTY: Duration = Duration::from_secs(32);
/// Sources, user names and bans remembered at once (each).
pub const MAX_ENTRIES: usize = 4096;
/// User names are attacker-chosen: longer ones are kept truncated.
const MAX_NAME: usize = 64;

/// `[sip] auth_failures_before_throttle`, `auth_failures_before_ban`, `ban_time`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardSettings {
    /// Failures in a row before the first silence; 0 turns throttling off.
    pub failures_before_throttle: u32,
    /// Failures in a row from one source before it is banned; 0 never bans.
    pub failures_before_ban: u32,
    pub ban_time: Duration,
}

impl Default for GuardSettings {
    fn default() -> Self {
        GuardSettings { failures_before_throttle: 5, failures_before_ban: 10, ban_time: Duration::from_secs(600) }
    }
}

/// What may be done with a datagram from a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// In a penalty silence.
    Throttled,
    Banned,
}

#[derive(Clone, Copy, Debug)]
struct Tally {
    failures: u32,
    last: Instant,
    silent_until: Option<Instant>,
}

/// A banned source, as `sip show bans` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ban {
    pub until: Instant,
    pub failures: u32,
}

#[derive(Debug)]
pub struct Guard {
    settings: GuardSettings,
    /// Which protocol's events these are (`sip`, `iax2`).
    protocol: &'static str,
    sources: BTreeMap<IpAddr, Tally>,
    users: BTreeMap<String, Tally>,
    bans: BTreeMap<IpAddr, Ban>,
}

impl Guard {
    pub fn new(protocol: &'static str, settings: GuardSettings) -> Self {
        Guard { settings, protocol, sources: BTreeMap::new(), users: BTreeMap::new(), bans: BTreeMap::new() }
    }

    /// A reload: counts and bans in force stay.
    pub fn set_settings(&mut self, settings: GuardSettings) {
        self.settings = settings;
    }

    pub fn source_verdict(&self, now: Instant, source: IpAddr) -> Verdict {
        if self.bans.get(&source).is_some_and(|b| b.until > now) {
            return Verdict::Banned;
        }
        if self.sources.get(&source).and_then(|t| t.silent_until).is_some_and(|t| t > now) {
            return Verdict::Throttled;
        }
        Verdict::Allow
    }

    /// Whether requests naming `user` are to go unanswered; the caller exempts
    /// a source holding a live registration of `user`.
    pub fn user_throttled(&self, now: Instant, user: &str) -> bool {
        self.users.get(key(user)).and_then(|t| t.silent_until).is_some_and(|t| t > now)
    }

    /// Records a refused proof from `source` for `user`. `exempt`: the source
    /// holds a live registration of `user`, so the user's own count is spared.
    pub fn failure(&mut self, now: Instant, source: IpAddr, user: &str, exempt: bool, events: &mut VecDeque<Event>) {
        let s = self.settings;
        let failures = bump(&mut self.sources, source, now);
        if s.failures_before_ban > 0 && failures >= s.failures_before_ban {
            self.sources.remove(&source);
            if self.bans.len() >= MAX_ENTRIES && !self.bans.contains_key(&source) {
                // The ban nearest its end goes: the newest offender matters more.
                if let Some(ip) = self.bans.iter().min_by_key(|(_, b)| b.until).map(|(ip, _)| *ip) {
                    self.bans.remove(&ip);
                }
            }
            self.bans.insert(source, Ban { until: now + s.ban_time, failures });
            events.push_back(Event::SourceBanned {
                protocol: self.protocol.to_string(),
                source,
                failures,
                for_ms: millis(s.ban_time),
            });
        } else if let Some(penalty) = penalty(failures, s.failures_before_throttle) {
            if let Some(t) = self.sources.get_mut(&source) {
                t.silent_until = Some(now + penalty);
            }
            events.push_back(Event::AuthThrottled {
                protocol: self.protocol.to_string(),
                scope: "source".into(),
                source,
                user: key(user).to_string(),
                failures,
                for_ms: millis(penalty),
            });
        }
        if exempt {
            return;
        }
        let name = key(user).to_string();
        let failures = bump(&mut self.users, name.clone(), now);
        if let Some(penalty) = penalty(failures, s.failures_before_throttle) {
            if let Some(t) = self.users.get_mut(&name) {
                t.silent_until = Some(now + penalty);
            }
            events.push_back(Event::AuthThrottled {
                protocol: self.protocol.to_string(),
                scope: "user".into(),
                source,
                user: name,
                failures,
                for_ms: millis(penalty),
            });
        }
    }

    /// When the next ban ends.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.bans.values().map(|b| b.until).min()
    }

    /// Lifts bans that have run out and forgets counts gone cold.
    pub fn handle_timeout(&mut self, now: Instant, events: &mut VecDeque<Event>) {
        let ended: Vec<IpAddr> = self.bans.iter().filter(|(_, b)| b.until <= now).map(|(ip, _)| *ip).collect();
        for source in ended {
            self.bans.remove(&source);
            events.push_back(Event::SourceUnbanned {
                protocol: self.protocol.to_string(),
                source,
                reason: "expired".into(),
            });
        }
        let cold =
            |t: &Tally| now.saturating_duration_since(t.last) > WINDOW && t.silent_until.is_none_or(|u| u <= now);
        self.sources.retain(|_, t| !cold(t));
        self.users.retain(|_, t| !cold(t));
    }

    /// The operator lifts a ban (and any silence) on `source`.
    pub fn unban(&mut self, source: IpAddr, events: &mut VecDeque<Event>) -> bool {
        let banned = self.bans.remove(&source).is_some();
        let silenced = self.sources.remove(&source).is_some();
        if banned {
            events.push_back(Event::SourceUnbanned {
                protocol: self.protocol.to_string(),
                source,
                reason: "operator".into(),
            });
        }
        banned || silenced
    }

    /// Bans in force, by address.
    pub fn bans(&self, now: Instant) -> impl Iterator<Item = (IpAddr, Ban)> + '_ {
        self.bans.iter().filter(move |(_, b)| b.until > now).map(|(ip, b)| (*ip, *b))
    }

    #[cfg(test)]
    fn table_sizes(&self) -> (usize, usize, usize) {
        (self.sources.len(), self.users.len(), self.bans.len())
    }
}

/// Counts one more failure for `k`, starting again after a quiet [`WINDOW`];
/// a full table first forgets the entry that failed longest ago.
fn bump<K: Ord + Clone>(table: &mut BTreeMap<K, Tally>, k: K, now: Instant) -> u32 {
    if table.len() >= MAX_ENTRIES && !table.contains_key(&k) {
        if let Some(oldest) = table.iter().min_by_key(|(_, t)| t.last).map(|(k, _)| k.clone()) {
            table.remove(&oldest);
        }
    }
    let t = table.entry(k).or_insert(Tally { failures: 0, last: now, silent_until: None });
    if now.saturating_duration_since(t.last) > WINDOW {
        t.failures = 0;
    }
    t.failures = t.failures.saturating_add(1);
    t.last = now;
    t.failures
}

/// 1 s at the threshold, doubling with each failure after it, capped.
fn penalty(failures: u32, threshold: u32) -> Option<Duration> {
    if threshold == 0 || failures < threshold {
        return None;
    }
    let doublings = (failures - threshold).min(16);
    Some(Duration::from_secs(1u64 << doublings).min(MAX_PENALTY))
}

fn key(user: &str) -> &str {
    match user.char_indices().nth(MAX_NAME) {
        Some((at, _)) => &user[..at],
        None => user,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([203, 0, 113, n])
    }

    fn names(events: &VecDeque<Event>) -> Vec<String> {
        events
            .iter()
            .map(|e| match e {
                Event::AuthThrottled { scope, failures, for_ms, .. } => {
                    format!("throttled {scope} {failures} {for_ms}")
                }
                Event::SourceBanned { failures, for_ms, .. } => format!("banned {failures} {for_ms}"),
                Event::SourceUnbanned { reason, .. } => format!("unbanned {reason}"),
                other => other.name().to_string(),
            })
            .collect()
    }

    #[test]
    fn penalties_grow_then_the_source_is_banned_until_the_ban_ends() {
        let t0 = Instant::now();
        let mut g = Guard::new("sip", GuardSettings::default());
        let mut ev = VecDeque::new();
        let mut now = t0;
        for n in 1..=4 {
            g.failure(now, ip(1), &format!("u{n}"), false, &mut ev);
            assert_eq!(g.source_verdict(now, ip(1)), Verdict::Allow, "failure {n} is below the threshold");
        }
        assert!(ev.is_empty());
        // 5th: 1 s of silence; each later failure (after the silence) doubles it.
        for (n, ms) in [(5, 1000), (6, 2000), (7, 4000), (8, 8000), (9, 16000)] {
            g.failure(now, ip(1), &format!("u{n}"), false, &mut ev);
            assert_eq!(names(&ev).pop().unwrap(), format!("throttled source {n} {ms}"));
            assert_eq!(g.source_verdict(now, ip(1)), Verdict::Throttled);
            assert_eq!(g.source_verdict(now + Duration::from_millis(ms - 1), ip(1)), Verdict::Throttled);
            now += Duration::from_millis(ms);
            assert_eq!(g.source_verdict(now, ip(1)), Verdict::Allow);
        }
        assert_eq!(g.source_verdict(now, ip(2)), Verdict::Allow, "other sources are untouched");
        g.failure(now, ip(1), "u10", false, &mut ev);
        assert_eq!(names(&ev).pop().unwrap(), "banned 10 600000");
        assert_eq!(g.source_verdict(now + Duration::from_secs(599), ip(1)), Verdict::Banned);
        assert_eq!(g.poll_timeout(), Some(now + Duration::from_secs(600)));
        ev.clear();
        g.handle_timeout(now + Duration::from_secs(600), &mut ev);
        assert_eq!(names(&ev), ["unbanned expired"]);
        assert_eq!(g.source_verdict(now + Duration::from_secs(600), ip(1)), Verdict::Allow);
        assert_eq!(g.poll_timeout(), None);
    }

    #[test]
    fn failures_a_window_apart_start_the_count_again() {
        let t0 = Instant::now();
        let mut g = Guard::new("sip", GuardSettings::default());
        let mut ev = VecDeque::new();
        for n in 0..20u64 {
            g.failure(t0 + (WINDOW + Duration::from_secs(1)) * n as u32, ip(1), "alice", false, &mut ev);
        }
        assert!(ev.is_empty(), "{:?}", names(&ev));
    }

    #[test]
    fn a_user_is_throttled_across_sources_but_not_from_its_registered_address() {
        let t0 = Instant::now();
        let mut g = Guard::new("sip", GuardSettings::default());
        let mut ev = VecDeque::new();
        for n in 1..=5 {
            g.failure(t0, ip(n), "alice", false, &mut ev);
        }
        assert_eq!(names(&ev), ["throttled user 5 1000"]);
        assert!(g.user_throttled(t0, "alice"));
        assert!(!g.user_throttled(t0, "bob"));
        assert!(!g.user_throttled(t0 + Duration::from_secs(1), "alice"));
        // The phone's own failures (exempt) count against its address only.
        ev.clear();
        let mut g = Guard::new("sip", GuardSettings::default());
        for _ in 0..4 {
            g.failure(t0, ip(9), "alice", true, &mut ev);
        }
        assert!(!g.user_throttled(t0, "alice"));
        assert!(ev.is_empty());
    }

    #[test]
    fn zero_turns_throttling_and_bans_off() {
        let t0 = Instant::now();
        let settings = GuardSettings { failures_before_throttle: 0, failures_before_ban: 0, ..Default::default() };
        let mut g = Guard::new("sip", settings);
        let mut ev = VecDeque::new();
        for _ in 0..100 {
            g.failure(t0, ip(1), "alice", false, &mut ev);
        }
        assert!(ev.is_empty());
        assert_eq!(g.source_verdict(t0, ip(1)), Verdict::Allow);
    }

    #[test]
    fn tables_are_capped_and_forget_the_stalest() {
        let t0 = Instant::now();
        let mut g = Guard::new("sip", GuardSettings { failures_before_ban: 1, ..Default::default() });
        let mut ev = VecDeque::new();
        for n in 0..(MAX_ENTRIES as u32 + 10) {
            let source = IpAddr::from((0x0a00_0000u32 + n).to_be_bytes());
            g.failure(
                t0 + Duration::from_millis(u64::from(n)),
                source,
                &format!("user{n}{}", "x".repeat(200)),
                false,
                &mut ev,
            );
        }
        let (sources, users, bans) = g.table_sizes();
        assert!(sources <= MAX_ENTRIES && users <= MAX_ENTRIES && bans <= MAX_ENTRIES);
        assert_eq!(bans, MAX_ENTRIES);
        assert_eq!(g.source_verdict(t0, IpAddr::from([10, 0, 0, 0])), Verdict::Allow, "the first ban was evicted");
        assert!(g.users.keys().all(|k| k.len() <= MAX_NAME));
    }

    #[test]
    fn the_operator_lifts_a_ban() {
        let t0 = Instant::now();
        let mut g = Guard::new("sip", GuardSettings { failures_before_ban: 1, ..Default::default() });
        let mut ev = VecDeque::new();
        g.failure(t0, ip(1), "alice", false, &mut ev);
        assert_eq!(g.source_verdict(t0, ip(1)), Verdict::Banned);
        assert_eq!(g.bans(t0).count(), 1);
        ev.clear();
        assert!(g.unban(ip(1), &mut ev));
        assert_eq!(names(&ev), ["unbanned operator"]);
        assert_eq!(g.source_verdict(t0, ip(1)), Verdict::Allow);
        assert!(!g.unban(ip(1), &mut ev));
    }
}

//! [`SimNet`]: `switch::net::Net` on turmoil, with a seeded link model
//! (loss, duplication, jitter, partitions), the pcap tap and the wire
//! statistics (per-link traffic in 20 ms buckets, receive backlog, IAX2 full
//! frame headers for the signalling ladder).
//!
//! Latency is turmoil's (per-link, min = max); everything random here comes
//! from one ChaCha RNG shared by the world. turmoil runs every host on one
//! thread in a fixed order, so the draws happen in a reproducible sequence.
//!
//! The per-datagram path allocates nothing beyond what turmoil itself does
//! (and a copy for a datagram delayed by jitter): hosts are indices, the
//! statistics are counters in vectors, and only datagrams inside the capture
//! window are framed for the pcap.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

use crate::nat::{Nat, NatNotice, Refusal};
use crate::pcap::{Capture, CaptureOptions};

/// Conditions on the link between two hosts (both directions alike).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LinkConditions {
    /// One-way delay, applied by turmoil (min = max).
    #[serde(serialize_with = "ser_ms")]
    pub latency: Duration,
    /// Extra delay per datagram, uniform in `0..=jitter` (may reorder).
    #[serde(serialize_with = "ser_ms")]
    pub jitter: Duration,
    /// Probability that a datagram is lost.
    pub loss: f64,
    /// Probability that a datagram is delivered twice.
    pub duplicate: f64,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Default for LinkConditions {
    fn default() -> Self {
        LinkConditions { latency: Duration::from_millis(10), jitter: Duration::ZERO, loss: 0.0, duplicate: 0.0 }
    }
}

/// What the link model did with one host's datagrams.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HostStats {
    /// Datagrams the software handed to `send_to` (loopback excluded).
    pub sent: u64,
    /// Dropped by the loss model.
    pub lost: u64,
    /// Dropped because the path was partitioned.
    pub blocked: u64,
    /// Extra copies made by the duplication model.
    pub duplicated: u64,
    /// Datagrams that went onto the wire (duplicates included).
    pub on_wire: u64,
    /// Dropped by a NAT or firewall on the way (see [`NatEvent`]).
    pub filtered: u64,
}

/// Width of one bucket of the wire statistics.
pub const BUCKET: Duration = Duration::from_millis(20);

/// IP + UDP header bytes of a datagram on this address family.
pub fn ip_udp_overhead(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(_) => 20 + 8,
        IpAddr::V6(_) => 40 + 8,
    }
}

/// Wire counters of one 20 ms bucket of one directed link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bucket {
    /// Datagrams put on the wire.
    pub datagrams: u32,
    /// Of those, IAX2 meta trunk frames.
    pub trunk: u32,
    /// Bytes on the wire at the IP layer: IP and UDP headers plus payload.
    pub ip_bytes: u64,
    /// IAX2 full or mini frames carrying a test-pattern frame in clear text.
    pub cleartext_pattern: u32,
}

/// What went onto the wire from one host to another, in [`BUCKET`]s of send time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinkTraffic {
    /// Index `i` covers `[i * BUCKET, (i + 1) * BUCKET)` of simulated time.
    pub buckets: Vec<Bucket>,
}

impl LinkTraffic {
    fn bucket(&mut self, at: Duration) -> &mut Bucket {
        let i = bucket_index(at);
        if i >= self.buckets.len() {
            self.buckets.resize(i + 1, Bucket::default());
        }
        &mut self.buckets[i]
    }

    /// Totals over the buckets that start in `[from, until)`.
    pub fn total(&self, from: Duration, until: Duration) -> Bucket {
        let mut t = Bucket::default();
        for b in self.window(from, until) {
            t.datagrams += b.datagrams;
            t.trunk += b.trunk;
            t.ip_bytes += b.ip_bytes;
            t.cleartext_pattern += b.cleartext_pattern;
        }
        t
    }

    /// Totals over the whole run.
    pub fn all(&self) -> Bucket {
        self.total(Duration::ZERO, BUCKET * self.buckets.len() as u32)
    }

    /// The buckets that start in `[from, until)` (missing ones count as empty).
    pub fn window(&self, from: Duration, until: Duration) -> impl Iterator<Item = Bucket> + '_ {
        let (a, b) = (bucket_ceil(from), bucket_ceil(until));
        (a..b).map(|i| self.buckets.get(i).copied().unwrap_or_default())
    }
}

/// The bucket a time falls in.
pub fn bucket_index(at: Duration) -> usize {
    (at.as_micros() / BUCKET.as_micros()) as usize
}

/// The first bucket that starts at or after `at`.
pub fn bucket_ceil(at: Duration) -> usize {
    at.as_micros().div_ceil(BUCKET.as_micros()) as usize
}

/// The receive side of one host: datagrams sent to it over the wire that its
/// software has not read yet (in flight or waiting in the socket queue).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Highest backlog seen, over the whole run.
    pub high_water: u64,
    /// Highest backlog seen per [`BUCKET`].
    pub buckets: Vec<u32>,
    bound: bool,
    wire: u64,
    read: u64,
}

impl Backlog {
    /// Highest backlog in the buckets that start in `[from, until)`.
    pub fn high_water_in(&self, from: Duration, until: Duration) -> u64 {
        let (a, b) = (bucket_ceil(from), bucket_ceil(until));
        (a..b).filter_map(|i| self.buckets.get(i)).map(|v| u64::from(*v)).max().unwrap_or(0)
    }
}

/// What became of a datagram the software sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// It went onto the wire.
    Wire,
    /// The loss model dropped it.
    Lost,
    /// A partition dropped it.
    Blocked,
}

/// The fixed header of an IAX2 full frame the software sent (for the
/// signalling ladder; payloads are not kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FullFrameRecord {
    /// When it went onto the wire, or was dropped.
    pub at: Duration,
    /// Host names by index, see [`WireStats::hosts`].
    pub from: usize,
    pub to: usize,
    pub header: [u8; 12],
    /// Datagram length.
    pub len: u32,
    pub fate: Fate,
}

/// Full frame headers kept at most (a bound for very long runs).
pub const MAX_FULL_FRAMES: usize = 500_000;

/// Everything the world measured on the wire, independent of the capture window.
#[derive(Clone, Debug, Default)]
pub struct WireStats {
    /// Host names; the indices used below.
    pub hosts: Vec<String>,
    /// Each host's address, when known.
    pub addresses: Vec<Option<IpAddr>>,
    /// Traffic by directed link `(from, to)`.
    pub links: BTreeMap<(usize, usize), LinkTraffic>,
    /// Receive backlog by host.
    pub backlog: Vec<Backlog>,
    /// IAX2 full frame headers in send order, dropped ones included (at most [`MAX_FULL_FRAMES`]).
    pub full_frames: Vec<FullFrameRecord>,
    /// Full frames not kept because of the bound.
    pub full_frames_dropped: u64,
}

impl WireStats {
    pub fn index(&self, host: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h == host)
    }

    /// Traffic from `from` to `to` (empty when nothing was sent).
    pub fn link(&self, from: &str, to: &str) -> Option<&LinkTraffic> {
        let (f, t) = (self.index(from)?, self.index(to)?);
        self.links.get(&(f, t))
    }
}

#[derive(Debug)]
struct WorldState {
    rng: ChaCha20Rng,
    defaults: LinkConditions,
    /// Host names by index, and the index of each name.
    names: Vec<String>,
    by_name: BTreeMap<String, usize>,
    /// Known host addresses (set by the runner, or learnt from turmoil).
    by_ip: Vec<(IpAddr, usize)>,
    /// Per-pair overrides, keyed by the ordered pair of host indices.
    links: BTreeMap<(usize, usize), LinkConditions>,
    /// Directed (from, to) host pairs whose datagrams are dropped.
    blocked: BTreeSet<(usize, usize)>,
    stats: Vec<HostStats>,
    capture: Option<Capture>,
    traffic: Vec<Vec<LinkTraffic>>,
    backlog: Vec<Backlog>,
    full_frames: Vec<FullFrameRecord>,
    full_frames_dropped: u64,
    /// NAT devices and firewalls, by index.
    nats: Vec<NatDevice>,
    /// The device each host sits behind, by host index.
    behind: Vec<Option<usize>>,
    /// What the devices did, for the trace (drained by the runner).
    nat_events: Vec<(Duration, NatEvent)>,
    /// When a refusal of (device, remote, addressed) was last reported, so a
    /// stream of refused datagrams makes one event per [`REFUSAL_REPORT_EVERY`].
    refusals_reported: BTreeMap<(usize, SocketAddr, SocketAddr), (Duration, u64)>,
    /// Hosts whose kernel has no IPv6: binding an IPv6 address fails.
    no_ipv6: BTreeSet<String>,
    /// Per host, the simulated time last read and the host's clock then
    /// (see [`WorldState::sim_time`]).
    clocks: Vec<Option<(tokio::time::Instant, Duration)>>,
}

/// A NAT device or firewall in the world.
#[derive(Debug)]
struct NatDevice {
    name: String,
    nat: Nat,
}

/// How often a continuing stream of refused datagrams is reported again.
const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(10);

/// What a NAT device or firewall did, as the trace shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum NatEvent {
    /// A new binding: `inside` is seen as `public` from outside.
    NatBindingCreated { nat: String, inside: SocketAddr, public: SocketAddr },
    /// A binding idle for `idle_ms` was forgotten.
    NatBindingExpired { nat: String, inside: SocketAddr, public: SocketAddr, idle_ms: u64 },
    /// Datagrams from `from` to `to` did not cross the device (`dropped` of
    /// them since the last report of this pair).
    NatRefused { nat: String, from: SocketAddr, to: SocketAddr, reason: Refusal, why: String, dropped: u64 },
}

impl NatEvent {
    /// The device that noted it.
    pub fn nat(&self) -> &str {
        match self {
            NatEvent::NatBindingCreated { nat, .. }
            | NatEvent::NatBindingExpired { nat, .. }
            | NatEvent::NatRefused { nat, .. } => nat,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            NatEvent::NatBindingCreated { .. } => "nat_binding_created",
            NatEvent::NatBindingExpired { .. } => "nat_binding_expired",
            NatEvent::NatRefused { .. } => "nat_refused",
        }
    }
}

/// Where one datagram goes once NATs and firewalls have had their say.
#[derive(Clone, Copy, Debug)]
struct Route {
    /// The receiving host, when it is a simulated one.
    to: Option<usize>,
    /// The turmoil address it is delivered to (an inside address after translation).
    deliver: SocketAddr,
    /// The source the receiver sees (the sender's public mapping behind a NAT).
    src: SocketAddr,
    /// The destination as addressed on the public side (what the tap records).
    dst: SocketAddr,
    /// `src` is not the sender's own address: the receiver is told it.
    rewritten: bool,
}

impl WorldState {
    fn add(&mut self, name: &str) -> usize {
        if let Some(i) = self.by_name.get(name) {
            return *i;
        }
        let i = self.names.len();
        self.names.push(name.to_string());
        self.by_name.insert(name.to_string(), i);
        self.stats.push(HostStats::default());
        self.backlog.push(Backlog::default());
        self.behind.push(None);
        self.clocks.push(None);
        i
    }

    /// The simulated time on host `host`, whose clock reads `now`. Asking
    /// turmoil costs a hashed look-up of the host; a burst of sends shares
    /// one clock reading, and a reading maps to one simulated time as long as
    /// the host runs (its sockets are bound).
    fn sim_time(&mut self, host: usize, now: tokio::time::Instant) -> Duration {
        match self.clocks[host] {
            Some((read, at)) if read == now => at,
            _ => {
                let at = turmoil::sim_elapsed().unwrap_or_default();
                self.clocks[host] = Some((now, at));
                at
            }
        }
    }

    fn host_of_ip(&self, ip: IpAddr) -> Option<usize> {
        self.by_ip.iter().find(|(a, _)| *a == ip).map(|(_, i)| *i)
    }

    fn nat_of_public_ip(&self, ip: IpAddr) -> Option<usize> {
        self.nats.iter().position(|d| d.nat.translates() && d.nat.public_ip() == ip)
    }

    /// Moves what the devices noted into the trace buffer.
    fn collect_notices(&mut self, nat: usize) {
        let name = self.nats[nat].name.clone();
        for notice in self.nats[nat].nat.take_notices() {
            let (at, event) = match notice {
                NatNotice::Created { at, inside, public } => {
                    (at, NatEvent::NatBindingCreated { nat: name.clone(), inside, public })
                }
                NatNotice::Expired { at, inside, public, idle } => (
                    at,
                    NatEvent::NatBindingExpired { nat: name.clone(), inside, public, idle_ms: idle.as_millis() as u64 },
                ),
            };
            self.nat_events.push((at, event));
        }
    }

    fn refused(&mut self, at: Duration, nat: usize, from: SocketAddr, to: SocketAddr, reason: Refusal) {
        let key = (nat, from, to);
        let entry = self.refusals_reported.entry(key).or_insert((Duration::ZERO, 0));
        entry.1 += 1;
        let first = entry.1 == 1 && entry.0.is_zero();
        if first || at >= entry.0 + REFUSAL_REPORT_EVERY {
            let dropped = std::mem::take(&mut entry.1);
            entry.0 = at.max(Duration::from_nanos(1));
            let nat_name = self.nats[nat].name.clone();
            self.nat_events.push((
                at,
                NatEvent::NatRefused { nat: nat_name, from, to, reason, why: reason.describe().to_string(), dropped },
            ));
        }
    }

    /// Applies the sender's NAT (or firewall) and the receiver's to one datagram.
    fn route(
        &mut self,
        at: Duration,
        from: usize,
        to: Option<usize>,
        src: SocketAddr,
        dst: SocketAddr,
    ) -> Result<Route, ()> {
        let mut route = Route { to, deliver: dst, src, dst, rewritten: false };
        if self.nats.is_empty() {
            return Ok(route);
        }
        if let Some(n) = self.behind.get(from).copied().flatten() {
            let lan = route.to.is_some_and(|to| self.behind[to] == Some(n));
            if lan {
                // Two hosts on the same inside network talk directly.
                return Ok(route);
            }
            let device = &mut self.nats[n];
            if device.nat.translates() && dst.ip() == device.nat.public_ip() {
                let result = device.nat.hairpin(at, src, dst);
                self.collect_notices(n);
                return match result {
                    Ok((public_src, inside)) => Ok(Route {
                        to: self.host_of_ip(inside.ip()),
                        deliver: inside,
                        src: public_src,
                        dst,
                        rewritten: true,
                    }),
                    Err(reason) => {
                        self.refused(at, n, src, dst, reason);
                        Err(())
                    }
                };
            }
            route.src = device.nat.outbound(at, src, dst);
            route.rewritten = route.src != src;
            self.collect_notices(n);
        }
        if let Some(n) = self.nat_of_public_ip(dst.ip()) {
            let result = self.nats[n].nat.inbound(at, route.src, dst);
            self.collect_notices(n);
            return match result {
                Ok(inside) => {
                    route.to = self.host_of_ip(inside.ip());
                    route.deliver = inside;
                    Ok(route)
                }
                Err(reason) => {
                    self.refused(at, n, route.src, dst, reason);
                    Err(())
                }
            };
        }
        if let Some(n) = route.to.and_then(|to| self.behind[to]) {
            let result = if self.nats[n].nat.translates() {
                Err(Refusal::PrivateAddress)
            } else {
                self.nats[n].nat.inbound(at, route.src, dst)
            };
            self.collect_notices(n);
            if let Err(reason) = result {
                self.refused(at, n, route.src, dst, reason);
                return Err(());
            }
        }
        Ok(route)
    }

    /// The host at `ip`, learning it from turmoil the first time.
    fn host_at(&mut self, ip: IpAddr) -> Option<usize> {
        if let Some((_, i)) = self.by_ip.iter().find(|(a, _)| *a == ip) {
            return Some(*i);
        }
        let name = turmoil::reverse_lookup(ip)?;
        let i = self.add(&name);
        self.by_ip.push((ip, i));
        Some(i)
    }

    /// Decides the fate of one datagram: the delays of the copies to send
    /// (none when lost or blocked).
    fn plan(&mut self, at: Duration, from: usize, to: Option<usize>, payload: &[u8]) -> Plan {
        let cond = self.conditions(from, to);
        // Fixed draw order per datagram: loss, duplicate, then one jitter per copy.
        let lost = self.rng.gen::<f64>() < cond.loss;
        let dup = self.rng.gen::<f64>() < cond.duplicate;
        let blocked = self.is_blocked(from, to);
        let stats = &mut self.stats[from];
        stats.sent += 1;
        let mut plan = Plan::default();
        if blocked || lost {
            let fate = if blocked {
                stats.blocked += 1;
                Fate::Blocked
            } else {
                stats.lost += 1;
                Fate::Lost
            };
            self.full_frame(at, from, to, payload, fate);
            return plan;
        }
        plan.copies = if dup { 2 } else { 1 };
        stats.duplicated += plan.copies as u64 - 1;
        let jitter_us = u64::try_from(cond.jitter.as_micros()).unwrap_or(u64::MAX);
        for d in plan.delays.iter_mut().take(plan.copies) {
            if jitter_us != 0 {
                *d = Duration::from_micros(self.rng.gen_range(0..=jitter_us));
            }
        }
        plan
    }

    /// Counts one datagram going onto the wire now: partition check, tap,
    /// statistics. False when a partition that started meanwhile blocks it.
    fn account(&mut self, at: Duration, from: usize, route: Route, payload: &[u8]) -> bool {
        let Route { to, src, dst, .. } = route;
        // A copy delayed by jitter may meet a partition that started meanwhile.
        if self.is_blocked(from, to) {
            self.stats[from].blocked += 1;
            self.full_frame(at, from, to, payload, Fate::Blocked);
            return false;
        }
        self.stats[from].on_wire += 1;
        if let Some(capture) = &mut self.capture {
            capture.record(at, src, dst, payload);
        }
        if let Some(to) = to {
            let kind = classify(payload);
            let bucket = self.traffic(from, to).bucket(at);
            bucket.datagrams += 1;
            bucket.ip_bytes += ip_udp_overhead(dst.ip()) + payload.len() as u64;
            bucket.trunk += u32::from(kind.trunk);
            bucket.cleartext_pattern += kind.cleartext_pattern;
            if kind.full {
                self.full_frame(at, from, Some(to), payload, Fate::Wire);
            }
            let backlog = &mut self.backlog[to];
            if backlog.bound {
                backlog.wire += 1;
                let now = backlog.wire.saturating_sub(backlog.read);
                backlog.high_water = backlog.high_water.max(now);
                let i = bucket_index(at);
                if i >= backlog.buckets.len() {
                    backlog.buckets.resize(i + 1, 0);
                }
                let slot = &mut backlog.buckets[i];
                *slot = (*slot).max(u32::try_from(now).unwrap_or(u32::MAX));
            }
        }
        true
    }

    fn idx(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    fn conditions(&self, a: usize, b: Option<usize>) -> LinkConditions {
        b.and_then(|b| self.links.get(&pair(a, b)).copied()).unwrap_or(self.defaults)
    }

    fn is_blocked(&self, from: usize, to: Option<usize>) -> bool {
        !self.blocked.is_empty() && to.is_some_and(|to| self.blocked.contains(&(from, to)))
    }

    /// Keeps the header of a full frame for the ladder.
    fn full_frame(&mut self, at: Duration, from: usize, to: Option<usize>, payload: &[u8], fate: Fate) {
        let (Some(to), Some(head)) = (to, payload.get(..12)) else { return };
        if payload[0] & 0x80 == 0 {
            return;
        }
        if self.full_frames.len() < MAX_FULL_FRAMES {
            let mut header = [0u8; 12];
            header.copy_from_slice(head);
            let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
            self.full_frames.push(FullFrameRecord { at, from, to, header, len, fate });
        } else {
            self.full_frames_dropped += 1;
        }
    }

    fn traffic(&mut self, from: usize, to: usize) -> &mut LinkTraffic {
        let n = self.names.len();
        if self.traffic.len() < n {
            self.traffic.resize_with(n, Vec::new);
        }
        let row = &mut self.traffic[from];
        if row.len() < n {
            row.resize_with(n, LinkTraffic::default);
        }
        &mut row[to]
    }
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// Civil time at the start of every simulation (2026-01-01T00:00:00Z).
pub const SIM_EPOCH_UNIX: u64 = 1_767_225_600;

/// The simulated network's shared state: link model, RNG, counters, capture.
///
/// Cheap to clone; all clones are the same world.
#[derive(Clone, Debug)]
pub struct SimWorld(Arc<Mutex<WorldState>>);

/// How one datagram fares: up to two copies, each with its jitter delay.
#[derive(Clone, Copy, Debug, Default)]
struct Plan {
    copies: usize,
    delays: [Duration; 2],
}

impl SimWorld {
    /// A world whose link model draws from a ChaCha RNG seeded with `seed`.
    pub fn new(seed: u64, defaults: LinkConditions) -> Self {
        SimWorld(Arc::new(Mutex::new(WorldState {
            rng: ChaCha20Rng::seed_from_u64(seed),
            defaults,
            names: Vec::new(),
            by_name: BTreeMap::new(),
            by_ip: Vec::new(),
            links: BTreeMap::new(),
            blocked: BTreeSet::new(),
            stats: Vec::new(),
            capture: None,
            traffic: Vec::new(),
            backlog: Vec::new(),
            full_frames: Vec::new(),
            full_frames_dropped: 0,
            nats: Vec::new(),
            behind: Vec::new(),
            nat_events: Vec::new(),
            refusals_reported: BTreeMap::new(),
            no_ipv6: BTreeSet::new(),
            clocks: Vec::new(),
        })))
    }

    /// Adds a NAT device or firewall named `name` (a host name too, so its
    /// public address can be named in configurations).
    pub fn add_nat(&self, name: &str, nat: Nat) {
        let mut w = self.lock();
        w.add(name);
        w.nats.push(NatDevice { name: name.to_string(), nat });
    }

    /// Puts `host` on the inside of the device `nat`.
    pub fn put_behind(&self, host: &str, nat: &str) {
        let mut w = self.lock();
        let i = w.add(host);
        let n = w.nats.iter().position(|d| d.name == nat);
        w.behind[i] = n;
    }

    /// The NAT or firewall events noted since the last call, in order.
    pub fn take_nat_events(&self) -> Vec<(Duration, NatEvent)> {
        std::mem::take(&mut self.lock().nat_events)
    }

    fn lock(&self) -> MutexGuard<'_, WorldState> {
        // One thread drives the simulation; a poisoned lock only means a host
        // panicked, and the state is still consistent for reporting.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `name` known to [`SimNet::resolve`] and the counters.
    pub fn add_host(&self, name: &str) {
        self.lock().add(name);
    }

    /// Tells the world `name`'s address (the runner does, from turmoil), so
    /// that sending needs no reverse lookup.
    pub fn set_address(&self, name: &str, ip: IpAddr) {
        let mut w = self.lock();
        let i = w.add(name);
        w.by_ip.retain(|(a, _)| *a != ip);
        w.by_ip.push((ip, i));
    }

    /// Host names known to the world, sorted (NAT devices are not hosts).
    /// Host `name` has no IPv6 (a kernel booted with `ipv6.disable=1`, a
    /// container without it): binding any IPv6 address there fails as an OS
    /// says EAFNOSUPPORT, with [`io::ErrorKind::AddrNotAvailable`].
    pub fn set_ipv6_unavailable(&self, name: &str) {
        self.lock().no_ipv6.insert(name.to_string());
    }

    fn ipv6_unavailable(&self, name: &str) -> bool {
        self.lock().no_ipv6.contains(name)
    }

    /// Host names known to the world, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let w = self.lock();
        w.by_name.keys().filter(|n| !w.nats.iter().any(|d| &d.name == *n)).cloned().collect()
    }

    /// A [`switch::net::Net`] for software running on host `name`.
    pub fn net(&self, name: &str) -> SimNet {
        let index = self.lock().add(name);
        SimNet { world: self.clone(), host: Arc::from(name), index }
    }

    /// Conditions for datagrams between `a` and `b`.
    pub fn link(&self, a: &str, b: &str) -> LinkConditions {
        let w = self.lock();
        match w.idx(a) {
            Some(a) => w.conditions(a, w.idx(b)),
            None => w.defaults,
        }
    }

    pub fn default_link(&self) -> LinkConditions {
        self.lock().defaults
    }

    /// Sets the link model between `a` and `b`. Latency is turmoil's: apply it
    /// to the simulation too (see [`SimWorld::apply_latency`]).
    pub fn set_link(&self, a: &str, b: &str, conditions: LinkConditions) {
        let mut w = self.lock();
        let (a, b) = (w.add(a), w.add(b));
        w.links.insert(pair(a, b), conditions);
    }

    /// Sets the default link model and drops per-pair overrides.
    pub fn set_default_link(&self, conditions: LinkConditions) {
        let mut w = self.lock();
        w.defaults = conditions;
        w.links.clear();
    }

    /// Sets turmoil's latency between `a` and `b` to the world's current value.
    pub fn apply_latency(&self, sim: &turmoil::Sim<'_>, a: &str, b: &str) {
        let latency = self.link(a, b).latency;
        sim.set_link_latency(a, b, latency);
    }

    /// Drops datagrams from `from` to `to` (one direction).
    pub fn block(&self, from: &str, to: &str) {
        let mut w = self.lock();
        let (f, t) = (w.add(from), w.add(to));
        w.blocked.insert((f, t));
    }

    /// Lets datagrams from `from` to `to` through again.
    pub fn unblock(&self, from: &str, to: &str) {
        let mut w = self.lock();
        let (f, t) = (w.add(from), w.add(to));
        w.blocked.remove(&(f, t));
    }

    /// Blocks both directions between `a` and `b`.
    pub fn partition(&self, a: &str, b: &str) {
        self.block(a, b);
        self.block(b, a);
    }

    /// Unblocks both directions between `a` and `b`.
    pub fn heal(&self, a: &str, b: &str) {
        self.unblock(a, b);
        self.unblock(b, a);
    }

    pub fn is_blocked(&self, from: &str, to: &str) -> bool {
        let w = self.lock();
        match (w.idx(from), w.idx(to)) {
            (Some(f), Some(t)) => w.blocked.contains(&(f, t)),
            _ => false,
        }
    }

    /// Starts recording datagrams that go onto the wire.
    pub fn enable_capture(&self, options: CaptureOptions) {
        self.lock().capture = Some(Capture::new(options));
    }

    /// The capture so far as a pcap file (empty when capture is off).
    pub fn pcap(&self) -> Vec<u8> {
        self.lock().capture.as_ref().map(Capture::to_pcap).unwrap_or_default()
    }

    /// Frames captured so far.
    pub fn captured(&self) -> usize {
        self.lock().capture.as_ref().map_or(0, Capture::len)
    }

    /// Per-host counters, by host name.
    pub fn stats(&self) -> BTreeMap<String, HostStats> {
        let w = self.lock();
        w.by_name.iter().map(|(name, i)| (name.clone(), w.stats[*i])).collect()
    }

    /// The wire statistics so far (a copy).
    pub fn wire_stats(&self) -> WireStats {
        let w = self.lock();
        let mut links = BTreeMap::new();
        for (f, row) in w.traffic.iter().enumerate() {
            for (t, traffic) in row.iter().enumerate() {
                if !traffic.buckets.is_empty() {
                    links.insert((f, t), traffic.clone());
                }
            }
        }
        let mut addresses = vec![None; w.names.len()];
        for (ip, i) in &w.by_ip {
            addresses[*i] = Some(*ip);
        }
        WireStats {
            hosts: w.names.clone(),
            addresses,
            links,
            backlog: w.backlog.clone(),
            full_frames: w.full_frames.clone(),
            full_frames_dropped: w.full_frames_dropped,
        }
    }

    /// Routes one datagram from host `from` through the NATs and firewalls
    /// and the link model, and puts the copies due now on the wire; a copy
    /// delayed by jitter goes out from a task of its own. One clock reading
    /// and one lock per datagram: this is the simulator's busiest path.
    fn send(
        &self,
        inner: &Arc<turmoil::net::UdpSocket>,
        from: usize,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) {
        let now = tokio::time::Instant::now();
        let mut w = self.lock();
        let at = w.sim_time(from, now);
        let to = w.host_at(dst.ip());
        let Ok(route) = w.route(at, from, to, src, dst) else {
            // A NAT or firewall dropped it (and reported why).
            w.stats[from].sent += 1;
            w.stats[from].filtered += 1;
            return;
        };
        let plan = w.plan(at, from, route.to, payload);
        let mut due_now = 0;
        for delay in &plan.delays[..plan.copies] {
            if delay.is_zero() {
                due_now += usize::from(w.account(at, from, route, payload));
            } else {
                let (world, inner, payload, delay) = (self.clone(), Arc::clone(inner), payload.to_vec(), *delay);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    world.transmit(&inner, from, route, &payload);
                });
            }
        }
        drop(w);
        for _ in 0..due_now {
            put_on_wire(inner, route, payload);
        }
    }

    /// Puts one datagram delayed by jitter on the wire.
    fn transmit(&self, inner: &turmoil::net::UdpSocket, from: usize, route: Route, payload: &[u8]) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        if self.lock().account(at, from, route, payload) {
            put_on_wire(inner, route, payload);
        }
    }

    /// The software of host `i` read a datagram that came over the wire.
    fn read_one(&self, i: usize) {
        let mut w = self.lock();
        let b = &mut w.backlog[i];
        b.read = (b.read + 1).min(b.wire);
    }

    /// Host `i` bound (or closed) its socket: what was in flight before does not count.
    fn rebind(&self, i: usize, bound: bool) {
        let mut w = self.lock();
        let b = &mut w.backlog[i];
        b.bound = bound;
        b.read = b.wire;
        // A restarted host has a new runtime, whose clock starts anew.
        w.clocks[i] = None;
    }
}

/// What the statistics need to know about an IAX2 datagram.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Kind {
    full: bool,
    trunk: bool,
    cleartext_pattern: u32,
}

/// Marker of the switch's numbered test pattern (`switch::media::pattern_frame`).
const PATTERN_MAGIC: &[u8; 2] = b"SW";
const PATTERN_HEADER: usize = 8;

/// A cleartext test-pattern frame starts at `at`: the magic, tag and sequence
/// number, then codec silence (μ-law 0xff or A-law 0xd5). Ciphertext matches
/// this with probability 2^-80.
fn pattern_at(payload: &[u8], at: usize) -> bool {
    let Some(p) = payload.get(at..at + PATTERN_HEADER + 8) else { return false };
    &p[..2] == PATTERN_MAGIC && {
        let fill = p[PATTERN_HEADER];
        (fill == 0xff || fill == 0xd5) && p[PATTERN_HEADER..].iter().all(|b| *b == fill)
    }
}

/// Looks at the first bytes only: constant work per datagram.
fn classify(p: &[u8]) -> Kind {
    let mut k = Kind::default();
    if p.len() < 4 {
        return k;
    }
    if p[0] & 0x80 != 0 {
        k.full = p.len() >= 12;
        k.cleartext_pattern = u32::from(k.full && pattern_at(p, 12));
    } else if p[0] != 0 || p[1] != 0 {
        k.cleartext_pattern = u32::from(pattern_at(p, 4));
    } else if p[2] == 0x01 && p.len() >= 8 {
        // Meta trunk frame: 0x0000, meta command 1. Trunk frames are never
        // encrypted (chan_iax2 neither), so their entries are not inspected.
        k.trunk = true;
    }
    k
}

/// `switch::net::Net` for the software of one simulated host.
#[derive(Clone, Debug)]
pub struct SimNet {
    world: SimWorld,
    host: Arc<str>,
    index: usize,
}

fn not_in_sim() -> io::Error {
    io::Error::other("SimNet used outside a turmoil simulation host")
}

impl SimNet {
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn world(&self) -> &SimWorld {
        &self.world
    }

    /// This host's address in the simulated network.
    pub fn address(&self) -> io::Result<IpAddr> {
        self.host_ip()
    }

    /// The address turmoil gave this host (the runner tells the world; a
    /// host inside a NAT has an address turmoil knows only by number).
    fn host_ip(&self) -> io::Result<IpAddr> {
        if !turmoil::in_simulation() {
            return Err(not_in_sim());
        }
        let known = self.world.lock().by_ip.iter().find(|(_, i)| *i == self.index).map(|(ip, _)| *ip);
        Ok(known.unwrap_or_else(|| turmoil::lookup(&*self.host)))
    }

    /// What turmoil can bind for a requested address on this host.
    fn bindable(&self, addr: SocketAddr, host_ip: IpAddr) -> io::Result<SocketAddr> {
        let ip = addr.ip();
        if ip.is_ipv6() && self.world.ipv6_unavailable(&self.host) {
            return Err(io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!(
                    "Address family not supported by protocol (EAFNOSUPPORT): simulated host `{}` has no IPv6",
                    self.host
                ),
            ));
        }
        let wildcard = match host_ip {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        let mapped = match (ip, host_ip) {
            // Same family wildcard or this host's own address: the wildcard.
            (ip, host) if ip.is_unspecified() && ip.is_ipv4() == host.is_ipv4() => wildcard,
            (ip, host) if ip == host => wildcard,
            // `::` is dual-stack (IPV6_V6ONLY off): on an IPv4 network it serves IPv4.
            (IpAddr::V6(v6), IpAddr::V4(_)) if v6.is_unspecified() => wildcard,
            (ip, host) if ip.is_loopback() && ip.is_ipv4() == host.is_ipv4() => ip,
            (IpAddr::V4(v4), IpAddr::V6(_)) if v4.is_unspecified() => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!(
                        "simulated host `{}` is on an IPv6-only network ({host_ip}); bind `::` instead of `0.0.0.0` \
                         (bindaddr = :: or ${{any}} in scenario configs)",
                        self.host
                    ),
                ));
            }
            (ip, host) => {
                return Err(io::Error::new(
                    io::ErrorKind::AddrNotAvailable,
                    format!("{ip} is not an address of simulated host `{}` (its address is {host})", self.host),
                ));
            }
        };
        Ok(SocketAddr::new(mapped, addr.port()))
    }
}

impl switch::net::Net for SimNet {
    type Socket = SimUdpSocket;

    /// The simulated world's civil time: [`SIM_EPOCH_UNIX`] at the start of the
    /// simulation plus the simulated time elapsed, so DATETIME IEs are the same on every run.
    fn unix_time(&self) -> u64 {
        let elapsed =
            if turmoil::in_simulation() { turmoil::sim_elapsed().unwrap_or_default() } else { Default::default() };
        SIM_EPOCH_UNIX + elapsed.as_secs()
    }

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<SimUdpSocket> {
        let host_ip = self.host_ip()?;
        let local = self.bindable(addr, host_ip)?;
        let inner = turmoil::net::UdpSocket::bind(local).await?;
        let local = inner.local_addr()?;
        self.world.rebind(self.index, true);
        Ok(SimUdpSocket { inner: Arc::new(inner), world: self.world.clone(), index: self.index, host_ip, local })
    }

    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let literal = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if !turmoil::in_simulation() {
            return Err(not_in_sim());
        }
        let known = {
            let w = self.world.lock();
            w.by_name.get(host).map(|i| w.by_ip.iter().find(|(_, j)| j == i).map(|(ip, _)| *ip))
        };
        if let Some(ip) = known {
            Ok(vec![ip.unwrap_or_else(|| turmoil::lookup(host))])
        } else {
            Err(io::Error::new(io::ErrorKind::NotFound, format!("no simulated host named `{host}`")))
        }
    }
}

/// A turmoil UDP socket behind the link model and the tap.
#[derive(Debug)]
pub struct SimUdpSocket {
    inner: Arc<turmoil::net::UdpSocket>,
    world: SimWorld,
    index: usize,
    host_ip: IpAddr,
    local: SocketAddr,
}

impl Drop for SimUdpSocket {
    fn drop(&mut self) {
        self.world.rebind(self.index, false);
    }
}

impl SimUdpSocket {
    /// The bound address (a wildcard or loopback, as turmoil binds).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address peers see datagrams from.
    pub fn public_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host_ip, self.local.port())
    }

    fn send_now(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        if !turmoil::in_simulation() {
            return Err(not_in_sim());
        }
        // A dual-stack socket on an IPv4 network sends to v4-mapped targets as IPv4.
        let target = match target {
            SocketAddr::V6(v6) if self.local.is_ipv4() => match v6.ip().to_ipv4_mapped() {
                Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
                None => target,
            },
            t => t,
        };
        if target.is_ipv4() != self.local.is_ipv4() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send to {target} from a socket bound to {}", self.local),
            ));
        }
        if target.ip().is_loopback() || target.ip() == self.host_ip {
            // Never on the wire: no link model, no tap.
            send_sealed(&self.inner, None, buf, target)?;
            return Ok(buf.len());
        }
        self.world.send(&self.inner, self.index, self.public_addr(), target, buf);
        Ok(buf.len())
    }
}

impl switch::net::DatagramSocket for SimUdpSocket {
    /// Never blocks: the link model decides, copies go out now or after their jitter.
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.send_now(buf, target)
    }

    /// Cancel-safe: turmoil's socket parks a datagram it has taken off its queue
    /// in a buffer until a `recv_from` completes with it; the backlog counter
    /// only moves when it completes.
    async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (len, from) = self.inner.recv_from(buf).await?;
        self.received(buf, len, from)
    }

    fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let (len, from) = self.inner.try_recv_from(buf)?;
        self.received(buf, len, from)
    }
}

impl SimUdpSocket {
    /// Counts a datagram read off the wire and opens its envelope.
    fn received(&self, buf: &mut [u8], len: usize, from: SocketAddr) -> io::Result<(usize, SocketAddr)> {
        if !from.ip().is_loopback() && from.ip() != self.host_ip {
            self.world.read_one(self.index);
        }
        open_sealed(buf, len, from)
    }
}

// Every datagram between simulated sockets carries a small envelope: a tag
// and, when a NAT rewrote the source, the source the receiver must see
// (turmoil itself always delivers the sender's own address). The tap and the
// statistics never see the envelope.
const SEAL_PLAIN: u8 = 0;
const SEAL_V4: u8 = 4;
const SEAL_V6: u8 = 6;

/// Hands one routed datagram to turmoil. UDP: a datagram to nowhere just vanishes.
fn put_on_wire(inner: &turmoil::net::UdpSocket, route: Route, payload: &[u8]) {
    let apparent = route.rewritten.then_some(route.src);
    if let Err(e) = send_sealed(inner, apparent, payload, route.deliver) {
        tracing::debug!("simulated send {} -> {}: {e}", route.src, route.dst);
    }
}

fn send_sealed(
    inner: &turmoil::net::UdpSocket,
    apparent: Option<SocketAddr>,
    payload: &[u8],
    to: SocketAddr,
) -> io::Result<usize> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut out = scratch.borrow_mut();
        out.clear();
        match apparent {
            None => out.push(SEAL_PLAIN),
            Some(SocketAddr::V4(a)) => {
                out.push(SEAL_V4);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
            Some(SocketAddr::V6(a)) => {
                out.push(SEAL_V6);
                out.extend_from_slice(&a.ip().octets());
                out.extend_from_slice(&a.port().to_be_bytes());
            }
        }
        out.extend_from_slice(payload);
        inner.try_send_to(&out, to)
    })
}

/// Strips the envelope in place: the payload's length and the source to report.
fn open_sealed(buf: &mut [u8], len: usize, from: SocketAddr) -> io::Result<(usize, SocketAddr)> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "simulated datagram without its envelope");
    let (skip, src) = match buf.first().copied().filter(|_| len > 0) {
        Some(SEAL_PLAIN) => (1, from),
        Some(SEAL_V4) if len >= 7 => {
            let ip = Ipv4Addr::new(buf[1], buf[2], buf[3], buf[4]);
            (7, SocketAddr::new(IpAddr::V4(ip), u16::from_be_bytes([buf[5], buf[6]])))
        }
        Some(SEAL_V6) if len >= 19 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&buf[1..17]);
            (19, SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), u16::from_be_bytes([buf[17], buf[18]])))
        }
        _ => return Err(bad()),
    };
    buf.copy_within(skip..len, 0);
    Ok((len - skip, src))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_iax2_datagrams() {
        let mut pattern = b"SW\x00\x07\x00\x00\x00\x01".to_vec();
        pattern.resize(160, 0xff);
        // Mini frame: call 5, timestamp, pattern.
        let mut mini = vec![0x00, 0x05, 0x12, 0x34];
        mini.extend_from_slice(&pattern);
        assert_eq!(classify(&mini), Kind { full: false, trunk: false, cleartext_pattern: 1 });
        // The same, scrambled.
        let scrambled: Vec<u8> = mini.iter().enumerate().map(|(i, b)| if i > 3 { b ^ 0x5a } else { *b }).collect();
        assert_eq!(classify(&scrambled).cleartext_pattern, 0);
        // Full voice frame.
        let mut full = vec![0x80, 0x05, 0x00, 0x09, 0, 0, 0, 20, 1, 1, 2, 4];
        full.extend_from_slice(&pattern);
        assert_eq!(classify(&full), Kind { full: true, trunk: false, cleartext_pattern: 1 });
        // Trunk frames are recognised, their entries not inspected.
        let mut trunk = vec![0x00, 0x00, 0x01, 0x01, 0, 0, 0, 40];
        trunk.extend_from_slice(&[0, 160, 0x80, 1, 0, 20]);
        trunk.extend_from_slice(&pattern);
        assert_eq!(classify(&trunk), Kind { full: false, trunk: true, cleartext_pattern: 0 });
        assert_eq!(classify(&[0x00, 0x00]), Kind::default());
    }

    #[test]
    fn windows_round_to_buckets() {
        let mut t = LinkTraffic::default();
        t.bucket(Duration::from_millis(5)).datagrams += 1;
        t.bucket(Duration::from_millis(25)).datagrams += 2;
        t.bucket(Duration::from_millis(45)).datagrams += 4;
        assert_eq!(t.total(Duration::ZERO, Duration::from_millis(60)).datagrams, 7);
        assert_eq!(t.total(Duration::from_millis(20), Duration::from_millis(40)).datagrams, 2);
        assert_eq!(t.total(Duration::from_millis(10), Duration::from_millis(100)).datagrams, 6);
        assert_eq!(t.window(Duration::from_millis(20), Duration::from_millis(100)).count(), 4);
    }
}

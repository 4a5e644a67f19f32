//! [`SimNet`]: `switch::net::Net` on turmoil, with a seeded link model
//! (loss, duplication, jitter, partitions) and the pcap tap.
//!
//! Latency is turmoil's (per-link, min = max); everything random here comes
//! from one ChaCha RNG shared by the world. turmoil runs every host on one
//! thread in a fixed order, so the draws happen in a reproducible sequence.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::Serialize;

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
        LinkConditions {
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
        }
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
}

#[derive(Debug)]
struct WorldState {
    rng: ChaCha20Rng,
    defaults: LinkConditions,
    /// Per-pair overrides, keyed by the ordered pair of host names.
    links: BTreeMap<(String, String), LinkConditions>,
    /// Directed (from, to) host pairs whose datagrams are dropped.
    blocked: BTreeSet<(String, String)>,
    hosts: BTreeSet<String>,
    stats: BTreeMap<String, HostStats>,
    capture: Option<Capture>,
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// The simulated network's shared state: link model, RNG, counters, capture.
///
/// Cheap to clone; all clones are the same world.
#[derive(Clone, Debug)]
pub struct SimWorld(Arc<Mutex<WorldState>>);

impl SimWorld {
    /// A world whose link model draws from a ChaCha RNG seeded with `seed`.
    pub fn new(seed: u64, defaults: LinkConditions) -> Self {
        SimWorld(Arc::new(Mutex::new(WorldState {
            rng: ChaCha20Rng::seed_from_u64(seed),
            defaults,
            links: BTreeMap::new(),
            blocked: BTreeSet::new(),
            hosts: BTreeSet::new(),
            stats: BTreeMap::new(),
            capture: None,
        })))
    }

    fn lock(&self) -> MutexGuard<'_, WorldState> {
        // One thread drives the simulation; a poisoned lock only means a host
        // panicked, and the state is still consistent for reporting.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `name` known to [`SimNet::resolve`] and the counters.
    pub fn add_host(&self, name: &str) {
        let mut w = self.lock();
        w.hosts.insert(name.to_string());
        w.stats.entry(name.to_string()).or_default();
    }

    /// Host names known to the world, sorted.
    pub fn hosts(&self) -> Vec<String> {
        self.lock().hosts.iter().cloned().collect()
    }

    /// A [`switch::net::Net`] for software running on host `name`.
    pub fn net(&self, name: &str) -> SimNet {
        SimNet {
            world: self.clone(),
            host: Arc::from(name),
        }
    }

    /// Conditions for datagrams between `a` and `b`.
    pub fn link(&self, a: &str, b: &str) -> LinkConditions {
        let w = self.lock();
        w.links.get(&pair(a, b)).copied().unwrap_or(w.defaults)
    }

    pub fn default_link(&self) -> LinkConditions {
        self.lock().defaults
    }

    /// Sets the link model between `a` and `b`. Latency is turmoil's: apply it
    /// to the simulation too (see [`SimWorld::apply_latency`]).
    pub fn set_link(&self, a: &str, b: &str, conditions: LinkConditions) {
        self.lock().links.insert(pair(a, b), conditions);
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
        self.lock()
            .blocked
            .insert((from.to_string(), to.to_string()));
    }

    /// Lets datagrams from `from` to `to` through again.
    pub fn unblock(&self, from: &str, to: &str) {
        self.lock()
            .blocked
            .remove(&(from.to_string(), to.to_string()));
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
        self.lock()
            .blocked
            .contains(&(from.to_string(), to.to_string()))
    }

    /// Starts recording datagrams that go onto the wire.
    pub fn enable_capture(&self, options: CaptureOptions) {
        self.lock().capture = Some(Capture::new(options));
    }

    /// The capture so far as a pcap file (empty when capture is off).
    pub fn pcap(&self) -> Vec<u8> {
        self.lock()
            .capture
            .as_ref()
            .map(Capture::to_pcap)
            .unwrap_or_default()
    }

    /// Frames captured so far.
    pub fn captured(&self) -> usize {
        self.lock().capture.as_ref().map_or(0, Capture::len)
    }

    /// Per-host counters, by host name.
    pub fn stats(&self) -> BTreeMap<String, HostStats> {
        self.lock().stats.clone()
    }

    /// Decides the fate of one datagram: the delays of the copies to send
    /// (empty when lost or blocked).
    fn plan(&self, from: &str, to: Option<&str>) -> Vec<Duration> {
        let mut w = self.lock();
        let w = &mut *w;
        let cond = to
            .and_then(|t| w.links.get(&pair(from, t)).copied())
            .unwrap_or(w.defaults);
        // Fixed draw order per datagram: loss, duplicate, then one jitter per copy.
        let lost = w.rng.gen::<f64>() < cond.loss;
        let dup = w.rng.gen::<f64>() < cond.duplicate;
        let stats = w.stats.entry(from.to_string()).or_default();
        stats.sent += 1;
        if let Some(to) = to {
            if w.blocked.contains(&(from.to_string(), to.to_string())) {
                stats.blocked += 1;
                return Vec::new();
            }
        }
        if lost {
            stats.lost += 1;
            return Vec::new();
        }
        let copies = if dup { 2 } else { 1 };
        stats.duplicated += copies - 1;
        let jitter_us = u64::try_from(cond.jitter.as_micros()).unwrap_or(u64::MAX);
        (0..copies)
            .map(|_| {
                if jitter_us == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_micros(w.rng.gen_range(0..=jitter_us))
                }
            })
            .collect()
    }

    /// Puts one datagram on the wire now: partition check, tap, turmoil send.
    fn transmit(
        &self,
        inner: &turmoil::net::UdpSocket,
        from: &str,
        to: Option<&str>,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
    ) {
        let at = turmoil::sim_elapsed().unwrap_or_default();
        {
            let mut w = self.lock();
            let w = &mut *w;
            let stats = w.stats.entry(from.to_string()).or_default();
            // A copy delayed by jitter may meet a partition that started meanwhile.
            if let Some(to) = to {
                if w.blocked.contains(&(from.to_string(), to.to_string())) {
                    stats.blocked += 1;
                    return;
                }
            }
            stats.on_wire += 1;
            if let Some(capture) = &mut w.capture {
                capture.record(at, src, dst, payload);
            }
        }
        // UDP: a datagram to nowhere just vanishes.
        if let Err(e) = inner.try_send_to(payload, dst) {
            tracing::debug!("simulated send {src} -> {dst}: {e}");
        }
    }
}

/// `switch::net::Net` for the software of one simulated host.
#[derive(Clone, Debug)]
pub struct SimNet {
    world: SimWorld,
    host: Arc<str>,
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

    /// The address turmoil gave this host.
    fn host_ip(&self) -> io::Result<IpAddr> {
        if !turmoil::in_simulation() {
            return Err(not_in_sim());
        }
        Ok(turmoil::lookup(&*self.host))
    }

    /// What turmoil can bind for a requested address on this host.
    fn bindable(&self, addr: SocketAddr, host_ip: IpAddr) -> io::Result<SocketAddr> {
        let ip = addr.ip();
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
                    format!(
                        "{ip} is not an address of simulated host `{}` (its address is {host})",
                        self.host
                    ),
                ));
            }
        };
        Ok(SocketAddr::new(mapped, addr.port()))
    }
}

impl switch::net::Net for SimNet {
    type Socket = SimUdpSocket;

    async fn bind_udp(&self, addr: SocketAddr) -> io::Result<SimUdpSocket> {
        let host_ip = self.host_ip()?;
        let local = self.bindable(addr, host_ip)?;
        let inner = turmoil::net::UdpSocket::bind(local).await?;
        let local = inner.local_addr()?;
        Ok(SimUdpSocket {
            inner: Arc::new(inner),
            world: self.world.clone(),
            host: self.host.clone(),
            host_ip,
            local,
        })
    }

    async fn resolve(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if !turmoil::in_simulation() {
            return Err(not_in_sim());
        }
        let known = self.world.lock().hosts.contains(host);
        if known {
            Ok(vec![turmoil::lookup(host)])
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("no simulated host named `{host}`"),
            ))
        }
    }
}

/// A turmoil UDP socket behind the link model and the tap.
#[derive(Debug)]
pub struct SimUdpSocket {
    inner: Arc<turmoil::net::UdpSocket>,
    world: SimWorld,
    host: Arc<str>,
    host_ip: IpAddr,
    local: SocketAddr,
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
                format!(
                    "cannot send to {target} from a socket bound to {}",
                    self.local
                ),
            ));
        }
        if target.ip().is_loopback() || target.ip() == self.host_ip {
            // Never on the wire: no link model, no tap.
            self.inner.try_send_to(buf, target)?;
            return Ok(buf.len());
        }
        let to = turmoil::reverse_lookup(target.ip());
        let src = self.public_addr();
        for delay in self.world.plan(&self.host, to.as_deref()) {
            if delay.is_zero() {
                self.world
                    .transmit(&self.inner, &self.host, to.as_deref(), src, target, buf);
            } else {
                let (world, inner, host, to, payload) = (
                    self.world.clone(),
                    self.inner.clone(),
                    self.host.clone(),
                    to.clone(),
                    buf.to_vec(),
                );
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    world.transmit(&inner, &host, to.as_deref(), src, target, &payload);
                });
            }
        }
        Ok(buf.len())
    }
}

impl switch::net::DatagramSocket for SimUdpSocket {
    /// Never blocks: the link model decides, copies go out now or after their jitter.
    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<usize> {
        self.send_now(buf, target)
    }

    /// Cancel-safe: turmoil's socket parks a datagram it has taken off its queue
    /// in a buffer until a `recv_from` completes with it.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl std::future::Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        self.inner.recv_from(buf)
    }
}

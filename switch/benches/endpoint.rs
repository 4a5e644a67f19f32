//! The sans-IO endpoint at the seed's headline load: two switches, A and B,
//! friends with `trunk=yes` registered to each other, 800 calls from A to B's
//! echo, all up. One iteration is one 20 ms trunk tick of both endpoints with
//! a virtual clock: A's media tick and trunk flush, B decoding the trunk
//! frames, echoing and flushing its own, A decoding those. The rate is in
//! call-ticks per second: 800 per iteration, so `rate / 800 / 50` is how many
//! such pairs of switches one core could carry in real time.
//!
//! `cargo bench -p switch --bench endpoint`.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switch::control::text;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use switch::config::{self, MapLoader};
use switch::dialplan::App;
use switch::iax2::endpoint::{Endpoint, Originate, ResolvedHosts};

const CALLS: usize = 800;
const A: &str = "10.0.0.1:4569";
const B: &str = "10.0.0.2:4569";
const TICK: Duration = Duration::from_millis(20);
/// One-way delay of the virtual link.
const LATENCY: Duration = Duration::from_millis(1);

fn iax_conf(me: &str, other: &str, other_secret: &str, my_secret: &str, other_ip: &str) -> String {
    format!(
        "[general]\nbindaddr=0.0.0.0\nbindport=4569\n\
         register => {me}:{my_secret}@{other_ip}\n\n\
         [{other}]\ntype=friend\nhost=dynamic\ntrunk=yes\nsecret={other_secret}\nauth=md5\n\
         qualify=yes\ncontext=iaxinbound\nrequirecalltoken=yes\n"
    )
}

fn endpoint(iax: String, switch_toml: &str, seed: u64, now: Instant) -> Endpoint {
    let loader = MapLoader::from_files([("iax.conf", iax), ("switch.toml", switch_toml.to_string())]);
    let loaded = config::load(&loader).unwrap_or_else(|e| panic!("bench config: {e:?}"));
    let mut resolved = ResolvedHosts::default();
    for a in [A, B] {
        let a: SocketAddr = a.parse().unwrap();
        resolved.0.insert(a.ip().to_string(), vec![a.ip()]);
    }
    let mut ep = Endpoint::new(Arc::new(loaded.iax), resolved, ChaCha20Rng::seed_from_u64(seed), now);
    ep.set_dialplan(loaded.switch.dialplan);
    ep
}

/// Two endpoints on a lossless virtual link with a fixed delay.
struct Pair {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    /// (deliver at, to A?, source, bytes), in delivery order.
    wire: VecDeque<(Instant, bool, SocketAddr, Vec<u8>)>,
    datagrams: u64,
}

impl Pair {
    fn new() -> Pair {
        let now = Instant::now();
        let a = endpoint(iax_conf("A", "B", "bsecret", "asecret", "10.0.0.2"), "", 1, now);
        let b = endpoint(
            iax_conf("B", "A", "asecret", "bsecret", "10.0.0.1"),
            "[dialplan.iaxinbound]\n\"600\" = \"echo\"\n",
            2,
            now,
        );
        Pair { now, a, b, a_addr: A.parse().unwrap(), b_addr: B.parse().unwrap(), wire: VecDeque::new(), datagrams: 0 }
    }

    fn collect(&mut self) {
        let at = self.now + LATENCY;
        for (from_a, ep) in [(true, &mut self.a), (false, &mut self.b)] {
            while ep.poll_event().is_some() {}
            let me = if from_a { self.a_addr } else { self.b_addr };
            while let Some(t) = ep.poll_transmit() {
                self.datagrams += 1;
                // Same delay for all: appending keeps the queue in time order.
                self.wire.push_back((at, !from_a, me, t.payload));
            }
        }
    }

    fn advance(&mut self, by: Duration) {
        let until = self.now + by;
        loop {
            self.collect();
            let next_wire = self.wire.front().map(|w| w.0);
            let next_timer = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            let Some(next) = [next_wire, next_timer].into_iter().flatten().min().filter(|t| *t <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(next);
            if next_wire == Some(next) {
                let (_, to_a, src, bytes) = self.wire.pop_front().unwrap();
                let ep = if to_a { &mut self.a } else { &mut self.b };
                ep.handle_datagram(self.now, src, &bytes);
            } else {
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
            }
        }
    }
}

fn active_calls(show_channels: &str) -> usize {
    show_channels
        .lines()
        .rev()
        .find_map(|l| l.strip_suffix(" active IAX2 call(s)"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn trunk_tick(c: &mut Criterion) {
    let mut p = Pair::new();
    p.advance(Duration::from_secs(2));
    assert!(
        text::iax_registry(&p.a.registry(p.now)).contains("Registered"),
        "A registered: {}",
        text::iax_registry(&p.a.registry(p.now))
    );
    // Held far longer than any bench run advances the virtual clock.
    let req = Originate {
        dial: "IAX2/B/600".into(),
        app: App::Pattern,
        hold: Some(Duration::from_secs(10_000_000)),
        calling: (None, None),
    };
    for _ in 0..CALLS {
        p.a.originate(p.now, &req).expect("the trunk takes 800 calls");
    }
    p.advance(Duration::from_secs(3));
    let (up_a, up_b) =
        (active_calls(&text::iax_channels(&p.a.channels())), active_calls(&text::iax_channels(&p.b.channels())));
    assert_eq!((up_a, up_b), (CALLS, CALLS), "every call is up before measuring");
    let before = p.datagrams;
    p.advance(Duration::from_secs(1));
    let per_tick = (p.datagrams - before) as f64 / 50.0;
    eprintln!(
        "endpoint bench: {CALLS} calls up, {per_tick:.1} datagrams per 20 ms tick on the virtual link (both ways)"
    );

    let mut g = c.benchmark_group("endpoint");
    g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    g.throughput(Throughput::Elements(CALLS as u64));
    g.bench_function("trunk tick 800", |b| b.iter(|| p.advance(TICK)));
    g.finish();
    assert_eq!(active_calls(&text::iax_channels(&p.a.channels())), CALLS, "no call dropped while measuring");
}

criterion_group!(benches, trunk_tick);
criterion_main!(benches);

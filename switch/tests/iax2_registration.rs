//! Two sans-IO endpoints wired back to back with a virtual clock: registration
//! in both roles, call tokens, authentication, qualify and recovery.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switch::control::text;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use switch::config::*;
use switch::event::{Event, PeerState};
use switch::iax2::endpoint::{Endpoint, ResolvedHosts};

const A: &str = "10.0.0.1:4569";
const B: &str = "10.0.0.2:4569";

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn friend(name: &str, secret: &str) -> PeerConfig {
    let mut p = PeerConfig::new(name, PeerKind::Friend, Location::default(), &General::default());
    p.secrets = vec![secret.into()];
    p.host = Host::Dynamic { defaultip: None };
    p.trunk = true;
    p.context = "iaxinbound".into();
    p.contexts = vec!["iaxinbound".into()];
    p.requirecalltoken = CallTokenRequirement::Yes;
    p.qualify = Qualify::MaxMs(2000);
    p.qualifyfreqok = Duration::from_secs(10);
    p.qualifyfreqnotok = Duration::from_secs(5);
    p
}

/// A's view: peer `B` (B registers to us with `b_secret`), and we register to B as `A`.
fn config(peer: &str, peer_secret: &str, reg_user: &str, reg_secret: &str, reg_host: &str) -> IaxConfig {
    IaxConfig {
        general: General::default(),
        peers: vec![friend(peer, peer_secret)],
        registrations: vec![RegisterLine {
            username: reg_user.into(),
            secret: Some(reg_secret.into()),
            host: reg_host.into(),
            port: 4569,
            location: Location::default(),
        }],
        callnumberlimits: vec![],
    }
}

fn resolved() -> ResolvedHosts {
    let mut r = ResolvedHosts::default();
    r.0.insert("a".into(), vec![addr(A).ip()]);
    r.0.insert("b".into(), vec![addr(B).ip()]);
    r
}

struct Pair {
    now: Instant,
    a: Endpoint,
    b: Endpoint,
    /// (deliver at, destination, source, bytes)
    wire: VecDeque<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    events: Vec<(Duration, &'static str, Event)>,
    start: Instant,
    /// Drop everything while true.
    partitioned: bool,
    latency: Duration,
    /// Extra delay, uniform in 0..=jitter, per datagram (so datagrams may reorder).
    jitter: Duration,
    loss: f64,
    duplicate: f64,
    net_rng: ChaCha20Rng,
    /// Every datagram put on the wire, for assertions about what an eavesdropper sees.
    sniffed: Vec<Vec<u8>>,
    /// A NAT in front of B: what B sends appears to come from this address,
    /// and what is sent to it reaches B.
    b_behind_nat: Option<SocketAddr>,
    /// Where A sent each datagram.
    a_sent_to: Vec<SocketAddr>,
}

impl Pair {
    fn new(a: IaxConfig, b: IaxConfig) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            start: now,
            a: Endpoint::new(Arc::new(a), resolved(), ChaCha20Rng::seed_from_u64(1), now),
            b: Endpoint::new(Arc::new(b), resolved(), ChaCha20Rng::seed_from_u64(2), now),
            wire: VecDeque::new(),
            events: vec![],
            partitioned: false,
            latency: Duration::from_millis(10),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            net_rng: ChaCha20Rng::seed_from_u64(99),
            sniffed: vec![],
            b_behind_nat: None,
            a_sent_to: vec![],
        }
    }

    fn collect(&mut self) {
        use rand::Rng;
        let latency = self.latency;
        let b_apparent = self.b_behind_nat.unwrap_or(addr(B));
        for (name, ep, me) in [("a", &mut self.a, addr(A)), ("b", &mut self.b, b_apparent)] {
            while let Some(e) = ep.poll_event() {
                self.events.push((self.now - self.start, name, e));
            }
            while let Some(t) = ep.poll_transmit() {
                self.sniffed.push(t.payload.clone());
                if name == "a" {
                    self.a_sent_to.push(t.destination);
                }
                if self.partitioned || self.net_rng.gen_bool(self.loss) {
                    continue;
                }
                let copies = if self.net_rng.gen_bool(self.duplicate) { 2 } else { 1 };
                for _ in 0..copies {
                    let extra = self.jitter.mul_f64(self.net_rng.gen_range(0.0..=1.0));
                    let at = self.now + latency + extra;
                    let pos = self.wire.partition_point(|w| w.0 <= at);
                    self.wire.insert(pos, (at, t.destination, me, t.payload.clone()));
                }
            }
        }
    }

    /// Advances virtual time to `until`, delivering datagrams and firing timers in order.
    fn run_until(&mut self, until: Duration) {
        let until = self.start + until;
        loop {
            self.collect();
            let next_wire = self.wire.front().map(|w| w.0);
            let next_timer = [self.a.poll_timeout(), self.b.poll_timeout()].into_iter().flatten().min();
            let next = [next_wire, next_timer].into_iter().flatten().min();
            let Some(next) = next.filter(|t| *t <= until) else {
                self.now = until;
                return;
            };
            self.now = self.now.max(next);
            if next_wire == Some(next) {
                let (_, dst, src, bytes) = self.wire.pop_front().unwrap();
                let ep = if dst == addr(A) { &mut self.a } else { &mut self.b };
                ep.handle_datagram(self.now, src, &bytes);
            } else {
                self.a.handle_timeout(self.now);
                self.b.handle_timeout(self.now);
            }
        }
    }

    fn find(&self, host: &str, pred: impl Fn(&Event) -> bool) -> Vec<Duration> {
        self.events.iter().filter(|(_, h, e)| *h == host && pred(e)).map(|(t, _, _)| *t).collect()
    }
}

#[test]
fn double_registration_with_call_tokens_and_md5() {
    let mut p = Pair::new(config("B", "bsecret", "A", "asecret", "b"), config("A", "asecret", "B", "bsecret", "a"));
    p.run_until(Duration::from_secs(5));
    for host in ["a", "b"] {
        let registered = p.find(host, |e| matches!(e, Event::Registered { refresh: 60, .. }));
        assert!(!registered.is_empty(), "{host} registered: {:#?}", p.events);
        assert!(registered[0] < Duration::from_secs(1));
        let accepted = p.find(host, |e| matches!(e, Event::PeerRegistered { .. }));
        assert_eq!(accepted.len(), 1, "{host} accepted the other once");
        let ok = p.find(host, |e| matches!(e, Event::PeerStateChanged { to: PeerState::Ok, .. }));
        assert_eq!(ok.len(), 1, "{host} qualified its peer OK");
    }
    assert!(p.find("a", |e| matches!(e, Event::DatagramDropped { .. })).is_empty(), "{:#?}", p.events);

    // Refreshes keep it registered: one new REGACK per 50 s, no rejections.
    p.run_until(Duration::from_secs(200));
    let registered = p.find("a", |e| matches!(e, Event::Registered { .. }));
    assert_eq!(registered.len(), 4, "initial + refresh at 50, 100, 150 s");
    assert!(p.find("a", |e| matches!(e, Event::PeerUnregistered { .. })).is_empty());
    assert!(text::iax_registry(&p.a.registry(p.now)).contains("Registered"));
    assert!(text::iax_peers(&p.a.peers()).contains("OK ("), "{}", text::iax_peers(&p.a.peers()));
}

#[test]
fn wrong_secret_is_rejected_and_reload_recovers_without_restart() {
    let mut p = Pair::new(config("B", "bsecret", "A", "asecret", "b"), config("A", "asecret", "B", "WRONG", "a"));
    p.run_until(Duration::from_secs(30));
    let rejected = p.find("b", |e| matches!(e, Event::RegistrationRejected { .. }));
    assert!(!rejected.is_empty());
    let refused = p.find(
        "a",
        |e| matches!(e, Event::PeerRegistrationRefused { cause, .. } if cause.contains("matches no secret")),
    );
    assert!(!refused.is_empty(), "{:#?}", p.events);
    // Backoff: not hammering (10 s, 20 s ... between tries).
    assert!(rejected.len() <= 3, "{rejected:?}");

    p.b.reconfigure(p.now, Arc::new(config("A", "asecret", "B", "bsecret", "a")), resolved());
    let reload = p.now - p.start;
    p.run_until(reload + Duration::from_secs(2));
    let ok = p.find("b", |e| matches!(e, Event::Registered { .. }));
    assert_eq!(ok.len(), 1);
    assert!(ok[0] >= reload && ok[0] < reload + Duration::from_secs(1));
}

#[test]
fn a_peer_that_keeps_failing_is_throttled_then_banned_but_our_own_registration_goes_on() {
    let mut p = Pair::new(config("B", "bsecret", "A", "asecret", "b"), config("A", "asecret", "B", "WRONG", "a"));
    p.run_until(Duration::from_secs(400));
    let throttled = p.find("a", |e| matches!(e, Event::AuthThrottled { protocol, scope, failures: 5, .. } if protocol == "iax2" && scope == "source"));
    assert_eq!(throttled.len(), 1, "{:#?}", p.events);
    let banned = p.find("a", |e| matches!(e, Event::SourceBanned { protocol, failures: 10, .. } if protocol == "iax2"));
    assert_eq!(banned.len(), 1, "{:#?}", p.events);
    // Banned, B starts no new exchange with A...
    let dropped =
        p.find("a", |e| matches!(e, Event::DatagramDropped { reason, .. } if reason.starts_with("source banned")));
    assert!(!dropped.is_empty(), "{:#?}", p.events);
    // ...but A's own registration with B (B's answers to A's requests) goes on.
    let refreshed = p.find("a", |e| matches!(e, Event::Registered { .. }));
    assert!(refreshed.iter().any(|t| *t > banned[0]), "{refreshed:?} after {banned:?}");
    // Fixed, B still waits out the ban; the operator lifts it and B registers at its next try.
    p.b.reconfigure(p.now, Arc::new(config("A", "asecret", "B", "bsecret", "a")), resolved());
    let fixed = p.now - p.start;
    p.run_until(fixed + Duration::from_secs(40));
    assert!(p.find("a", |e| matches!(e, Event::PeerRegistered { .. })).iter().all(|t| *t < fixed));
    assert!(p.a.unban(addr(B).ip()));
    let unbanned = p.now - p.start;
    p.run_until(unbanned + Duration::from_secs(40));
    assert!(
        p.find("a", |e| matches!(e, Event::PeerRegistered { .. })).iter().any(|t| *t > unbanned),
        "{:#?}",
        p.events
    );
}

#[test]
fn partition_goes_unreachable_backs_off_and_recovers() {
    let mut p = Pair::new(config("B", "bsecret", "A", "asecret", "b"), config("A", "asecret", "B", "bsecret", "a"));
    p.run_until(Duration::from_secs(60));
    p.partitioned = true;
    p.wire.clear();
    p.run_until(Duration::from_secs(360));
    for host in ["a", "b"] {
        let down = p.find(host, |e| matches!(e, Event::PeerStateChanged { to: PeerState::Unreachable, .. }));
        assert!(!down.is_empty() && down[0] < Duration::from_secs(90), "{host}: {down:?}");
        let timeouts: Vec<u64> = p
            .events
            .iter()
            .filter_map(|(_, h, e)| match e {
                Event::RegistrationTimeout { retry_in_ms, .. } if *h == host => Some(*retry_in_ms),
                _ => None,
            })
            .collect();
        assert!(timeouts.len() >= 5, "keeps retrying: {timeouts:?}");
        assert!(timeouts.iter().all(|ms| *ms <= 33_000), "bounded backoff: {timeouts:?}");
    }
    p.partitioned = false;
    p.run_until(Duration::from_secs(420));
    for host in ["a", "b"] {
        let back = p.find(host, |e| matches!(e, Event::Registered { .. }));
        let last = *back.last().unwrap();
        assert!(last > Duration::from_secs(360) && last <= Duration::from_secs(420), "{host}: {back:?}");
        let ok = p.find(host, |e| matches!(e, Event::PeerStateChanged { to: PeerState::Ok, .. }));
        assert!(*ok.last().unwrap() > Duration::from_secs(360));
    }
}

#[test]
fn token_less_registration_is_refused_unless_the_peer_says_requirecalltoken_no() {
    // A raw REGREQ without CALLTOKEN IE, as iaxmodem sends it.
    use switch::iax2::frame::{decode, Frame, FullFrame};
    use switch::iax2::ie::Ie;
    use switch::iax2::subclass::IaxSubclass;
    let regreq = FullFrame::new_iax(5, 0, 0, 0, 0, IaxSubclass::RegReq, &[Ie::Username("A".into()), Ie::Refresh(60)]);
    let mut bytes = vec![];
    regreq.encode(&mut bytes).unwrap();

    for (requirement, expect) in
        [(CallTokenRequirement::Yes, IaxSubclass::RegRej), (CallTokenRequirement::No, IaxSubclass::RegAuth)]
    {
        let mut cfg = config("A", "asecret", "X", "x", "a");
        cfg.registrations.clear();
        cfg.peers[0].requirecalltoken = requirement;
        let now = Instant::now();
        let mut b = Endpoint::new(Arc::new(cfg), resolved(), ChaCha20Rng::seed_from_u64(3), now);
        b.handle_datagram(now, addr(A), &bytes);
        let reply = b.poll_transmit().expect("an answer");
        let Ok(Frame::Full(f)) = decode(&reply.payload) else { panic!("full frame") };
        assert_eq!(f.iax(), Some(expect), "requirecalltoken={requirement:?}");
        assert_eq!(f.dst_call, 5);
    }
}

#[test]
fn hostile_datagrams_are_dropped_and_counted() {
    let now = Instant::now();
    let mut b =
        Endpoint::new(Arc::new(config("A", "s", "X", "x", "a")), resolved(), ChaCha20Rng::seed_from_u64(4), now);
    while b.poll_transmit().is_some() {}
    for junk in
        [&b""[..], b"\x80", b"\x80\x01\x00\x00\x00\x00\x00\x00\x00\x00\x06\x0d\x06\xff", b"hello world, not iax"]
    {
        b.handle_datagram(now, addr(A), junk);
    }
    // A frame for a call that does not exist gets no answer (no reflection).
    b.handle_datagram(now, addr(A), &[0x80, 0x01, 0x12, 0x34, 0, 0, 0, 0, 0, 0, 6, 2]);
    assert!(b.poll_transmit().is_none());
    assert!(b.stats().datagrams_in == 5);
    assert_eq!(b.stats().dropped.values().sum::<u64>(), 5, "{:?}", b.stats().dropped);
}

#[test]
fn poke_gets_a_stateless_pong() {
    use switch::iax2::frame::{decode, Frame, FullFrame};
    use switch::iax2::subclass::IaxSubclass;
    let now = Instant::now();
    let mut b =
        Endpoint::new(Arc::new(config("A", "s", "X", "x", "a")), resolved(), ChaCha20Rng::seed_from_u64(5), now);
    while b.poll_transmit().is_some() {}
    let mut poke = vec![];
    FullFrame::new_iax(77, 0, 1234, 0, 0, IaxSubclass::Poke, &[]).encode(&mut poke).unwrap();
    b.handle_datagram(now, addr(A), &poke);
    let reply = b.poll_transmit().expect("PONG");
    let Ok(Frame::Full(f)) = decode(&reply.payload) else { panic!() };
    assert_eq!((f.iax(), f.dst_call, f.timestamp), (Some(IaxSubclass::Pong), 77, 1234));
    assert!(reply.payload.len() <= poke.len(), "no amplification");
    assert!(b.poll_transmit().is_none(), "exactly one answer");
}

#[test]
fn registrations_survive_loss_and_duplication() {
    let mut p = Pair::new(config("B", "bsecret", "A", "asecret", "b"), config("A", "asecret", "B", "bsecret", "a"));
    p.loss = 0.2;
    p.duplicate = 0.1;
    p.run_until(Duration::from_secs(600));
    for host in ["a", "b"] {
        let ok = p.find(host, |e| matches!(e, Event::Registered { .. }));
        // One registration per 50 s refresh, allowing a few refreshes lost to 20% loss.
        assert!(ok.len() >= 9, "{host}: {ok:?}");
        assert!(p.find(host, |e| matches!(e, Event::RegistrationRejected { .. })).is_empty());
        assert!(p.find(host, |e| matches!(e, Event::PeerRegistrationRefused { .. })).is_empty());
    }
}

#[test]
fn plaintext_acl_and_expiry_limits() {
    // B accepts A with plaintext only, clamps expiry to 30..45 s, and denies 10.0.0.0/8 except A.
    let mut b_cfg = config("A", "asecret", "X", "x", "a");
    b_cfg.registrations.clear();
    b_cfg.general.minregexpire = 30;
    b_cfg.general.maxregexpire = 45;
    b_cfg.peers[0].auth = AuthMethods { plaintext: true, md5: false, rsa: false };
    let net = |s: &str, prefix| IpNet { addr: s.parse().unwrap(), prefix };
    b_cfg.peers[0].acl = Acl {
        rules: vec![
            AclRule { permit: false, net: net("10.0.0.0", 8) },
            AclRule { permit: true, net: net("10.0.0.1", 32) },
        ],
    };
    let mut a_cfg = config("B", "bsecret", "A", "asecret", "b");
    a_cfg.peers.clear();
    let mut p = Pair::new(a_cfg.clone(), b_cfg.clone());
    p.run_until(Duration::from_secs(2));
    let granted: Vec<u32> = p
        .events
        .iter()
        .filter_map(|(_, h, e)| match e {
            Event::Registered { refresh, .. } if *h == "a" => Some(*refresh),
            _ => None,
        })
        .collect();
    assert_eq!(granted, vec![45], "60 s asked, clamped to maxregexpire");

    // Now deny A too: refused with the ACL named as the cause.
    b_cfg.peers[0].acl.rules.push(AclRule { permit: false, net: net("10.0.0.1", 32) });
    let mut p = Pair::new(a_cfg, b_cfg);
    p.run_until(Duration::from_secs(2));
    assert!(!p
        .find("b", |e| matches!(e, Event::PeerRegistrationRefused { cause, .. } if cause.contains("permit/deny")))
        .is_empty());
    assert!(!p
        .find("a", |e| matches!(e, Event::RegistrationRejected { cause, .. } if cause == "Registration Refused"))
        .is_empty());
}

#[test]
fn slow_pongs_make_a_peer_lagged() {
    let mut a_cfg = config("B", "bsecret", "A", "asecret", "b");
    a_cfg.peers[0].qualify = Qualify::MaxMs(100);
    let mut p = Pair::new(a_cfg, config("A", "asecret", "B", "bsecret", "a"));
    p.latency = Duration::from_millis(80); // 160 ms round trip
    p.run_until(Duration::from_secs(3));
    let lagged =
        p.find("a", |e| matches!(e, Event::PeerStateChanged { to: PeerState::Lagged, latency_ms: Some(160), .. }));
    assert_eq!(lagged.len(), 1, "{:#?}", p.events);
    assert!(text::iax_peers(&p.a.peers()).contains("LAGGED"));
}

#[test]
fn delayreject_holds_the_regrej_back() {
    let mut b_cfg = config("A", "asecret", "X", "x", "a");
    b_cfg.registrations.clear();
    b_cfg.general.delayreject = true;
    let mut a_cfg = config("B", "bsecret", "A", "WRONG", "b");
    a_cfg.peers.clear();
    let mut p = Pair::new(a_cfg, b_cfg);
    p.run_until(Duration::from_secs(5));
    let refused = p.find("b", |e| matches!(e, Event::PeerRegistrationRefused { .. }));
    let rejected = p.find("a", |e| matches!(e, Event::RegistrationRejected { .. }));
    assert_eq!((refused.len(), rejected.len()), (1, 1));
    let held = rejected[0] - refused[0];
    assert!(held >= Duration::from_secs(1) && held < Duration::from_millis(1100), "{held:?}");
    assert!(!p
        .find("a", |e| matches!(e, Event::RegistrationTimeout { .. }))
        .iter()
        .any(|t| *t < Duration::from_secs(5)));
}

#[test]
fn unvalidated_sources_share_a_bounded_pool() {
    use switch::iax2::frame::FullFrame;
    use switch::iax2::ie::Ie;
    use switch::iax2::subclass::IaxSubclass;
    let mut cfg = config("A", "asecret", "X", "x", "a");
    cfg.registrations.clear();
    cfg.peers[0].requirecalltoken = CallTokenRequirement::No;
    cfg.general.maxcallnumbers_nonvalidated = 3;
    let now = Instant::now();
    let mut b = Endpoint::new(Arc::new(cfg), resolved(), ChaCha20Rng::seed_from_u64(6), now);
    while b.poll_transmit().is_some() {}
    let mut answered = 0;
    for call in 1..=10u16 {
        let mut bytes = vec![];
        FullFrame::new_iax(call, 0, 0, 0, 0, IaxSubclass::RegReq, &[Ie::Username("A".into())])
            .encode(&mut bytes)
            .unwrap();
        b.handle_datagram(now, format!("10.9.9.{call}:4569").parse().unwrap(), &bytes);
        while b.poll_transmit().is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 3, "only the pool's worth of spoofable sources get state");
    assert_eq!(b.stats().dropped.values().sum::<u64>(), 7);
}

mod calls {
    use super::*;
    use switch::dialplan::{App, Dialplan};
    use switch::iax2::endpoint::{Originate, Placement};

    fn echo_plan() -> Dialplan {
        let mut plan = Dialplan::default();
        plan.add("iaxinbound", "600", App::Echo);
        plan
    }

    fn pair(trunk: bool) -> Pair {
        let mut a = config("B", "bsecret", "A", "asecret", "b");
        let mut b = config("A", "asecret", "B", "bsecret", "a");
        a.peers[0].trunk = trunk;
        b.peers[0].trunk = trunk;
        let mut p = Pair::new(a, b);
        p.b.set_dialplan(echo_plan());
        p.run_until(Duration::from_secs(2)); // registered both ways
        p
    }

    fn ended(p: &Pair, host: &str) -> Vec<Event> {
        p.events
            .iter()
            .filter(|(_, h, e)| *h == host && matches!(e, Event::CallEnded { .. }))
            .map(|(_, _, e)| e.clone())
            .collect()
    }

    #[test]
    fn echo_call_returns_every_frame_in_order() {
        let mut p = pair(false);
        let hold = Duration::from_secs(30);
        let req = Originate { dial: "IAX2/B/600".into(), app: App::Pattern, hold: Some(hold), calling: (None, None) };
        p.a.originate(p.now, &req).unwrap();
        p.run_until(Duration::from_secs(40));
        let a_end = ended(&p, "a");
        assert_eq!(a_end.len(), 1, "{:#?}", p.events);
        let Event::CallEnded { frames_sent, frames_received, lost, reordered, duplicated, ts_irregular, code, .. } =
            a_end[0]
        else {
            unreachable!()
        };
        assert_eq!(code, 16);
        assert!((1490..=1510).contains(&frames_sent), "30 s of 20 ms frames: {frames_sent}");
        // Frames still in flight at hangup do not come back.
        assert!(frames_sent - frames_received <= 2, "{frames_sent} sent, {frames_received} back");
        assert_eq!((lost, reordered, duplicated, ts_irregular), (0, 0, 0, 0));
        let b_end = ended(&p, "b");
        assert_eq!(b_end.len(), 1, "the far end saw the hangup");
        assert!(text::iax_channels(&p.a.channels()).contains("0 active"));
        assert!(text::iax_channels(&p.b.channels()).contains("0 active"));
    }

    /// chan_iax2's `maxauthreq` (3 by default): a burst of NEWs beyond it is
    /// refused by the callee; paced, every call gets through.
    #[test]
    fn maxauthreq_refuses_a_burst_and_pacing_gets_every_call_through() {
        let req = Originate {
            dial: "IAX2/B/600".into(),
            app: App::Pattern,
            hold: Some(Duration::from_secs(2)),
            calling: (None, None),
        };
        let mut p = pair(false);
        for _ in 0..8 {
            p.a.originate(p.now, &req).unwrap();
        }
        p.run_until(Duration::from_secs(10));
        let refused: Vec<_> = p
            .events
            .iter()
            .filter(|(_, h, e)| {
                *h == "b" && matches!(e, Event::CallRejected { cause, code: 21, .. } if cause.contains("Unauthenticated call limit reached"))
            })
            .collect();
        assert_eq!(refused.len(), 5, "B challenges 3 at once and refuses the rest: {:#?}", p.events);

        let mut p = pair(false);
        let placed: Vec<_> = (0..8).map(|_| p.a.originate_paced(p.now, &req).unwrap()).collect();
        assert_eq!(placed.iter().filter(|pl| **pl == Placement::Queued).count(), 5, "{placed:?}");
        p.run_until(Duration::from_secs(15));
        let ends = ended(&p, "a");
        assert_eq!(ends.len(), 8, "{:#?}", p.events);
        assert!(ends.iter().all(|e| matches!(e, Event::CallEnded { code: 16, .. })), "{ends:#?}");
    }

    #[test]
    fn jitter_buffer_absorbs_jitter_and_counts_loss() {
        let mut a = config("B", "bsecret", "A", "asecret", "b");
        let mut b = config("A", "asecret", "B", "bsecret", "a");
        for cfg in [&mut a, &mut b] {
            cfg.general.jitterbuffer = true;
            cfg.peers[0].trunk = true;
        }
        let mut p = Pair::new(a, b);
        p.b.set_dialplan(echo_plan());
        p.run_until(Duration::from_secs(2));
        p.jitter = Duration::from_millis(60);
        p.loss = 0.02;
        let req = Originate {
            dial: "IAX2/B/600".into(),
            app: App::Pattern,
            hold: Some(Duration::from_secs(60)),
            calling: (None, None),
        };
        for _ in 0..10 {
            p.a.originate_paced(p.now, &req).unwrap();
        }
        p.run_until(Duration::from_secs(70));
        let ends = ended(&p, "a");
        assert_eq!(
            ends.len(),
            10,
            "no call dropped: {:#?}",
            p.events
                .iter()
                .filter(|e| e.1 == "a" && !matches!(e.2, Event::Registered { .. } | Event::RegistrationSent { .. }))
                .collect::<Vec<_>>()
        );
        for e in ends {
            let Event::CallEnded { frames_sent, frames_received, lost, late, concealed, jitter_ms, code, .. } = e
            else {
                unreachable!()
            };
            assert_eq!(code, 16, "ended by our hangup");
            // 2% loss each way: about 4% of the echoed pattern is missing.
            let missing = frames_sent - frames_received;
            assert!((frames_sent / 100..=frames_sent / 10).contains(&missing), "{missing} of {frames_sent} missing");
            assert!(lost > 0 && lost <= missing, "lost {lost}, missing {missing}");
            assert!(concealed > 0, "the jitter buffer filled gaps");
            assert!(late <= frames_sent / 100, "late {late}");
            assert!(jitter_ms > 5 && jitter_ms < 60, "jitter {jitter_ms} ms");
        }
    }

    #[test]
    fn encrypted_call_carries_no_clear_audio() {
        let mut a = config("B", "bsecret", "A", "asecret", "b");
        let mut b = config("A", "asecret", "B", "bsecret", "a");
        a.peers[0].encryption = true;
        b.peers[0].forceencryption = true;
        let mut p = Pair::new(a, b);
        p.b.set_dialplan(echo_plan());
        p.run_until(Duration::from_secs(2));
        p.sniffed.clear();
        let req = Originate {
            dial: "IAX2/B/600".into(),
            app: App::Pattern,
            hold: Some(Duration::from_secs(5)),
            calling: (None, None),
        };
        p.a.originate(p.now, &req).unwrap();
        p.run_until(Duration::from_secs(10));
        for host in ["a", "b"] {
            let answered = p.find(host, |e| matches!(e, Event::CallAnswered { encrypted: true, .. }));
            assert_eq!(answered.len(), 1, "{host}: {:#?}", p.events);
        }
        let Event::CallEnded { frames_sent, frames_received, lost, .. } = ended(&p, "a")[0] else { unreachable!() };
        assert!(
            frames_sent >= 245 && frames_sent - frames_received <= 2 && lost == 0,
            "{frames_sent} {frames_received}"
        );
        // The test pattern starts with "SW": it must never cross the wire in clear.
        let clear = p.sniffed.iter().filter(|d| d.windows(2).any(|w| w == b"SW")).count();
        assert!(clear < 3, "{clear} datagrams carry pattern bytes in clear");
        assert!(p.sniffed.len() > 500);
    }

    #[test]
    fn forceencryption_refuses_a_clear_caller() {
        let a = config("B", "bsecret", "A", "asecret", "b");
        let mut b = config("A", "asecret", "B", "bsecret", "a");
        b.peers[0].forceencryption = true;
        let mut p = Pair::new(a, b);
        p.b.set_dialplan(echo_plan());
        p.run_until(Duration::from_secs(2));
        p.a.originate(
            p.now,
            &Originate { dial: "IAX2/B/600".into(), app: App::Pattern, hold: None, calling: (None, None) },
        )
        .unwrap();
        p.run_until(Duration::from_secs(5));
        assert_eq!(
            p.find("b", |e| matches!(e, Event::CallRejected { cause, .. } if cause.starts_with("Encryption required")))
                .len(),
            1
        );
        assert_eq!(p.find("a", |e| matches!(e, Event::CallRejected { .. })).len(), 1);
    }

    #[test]
    fn media_crosses_the_16_bit_timestamp_wrap() {
        // Mini frames carry 16 bits of timestamp: at 65.536 s a full voice
        // frame must resynchronise the far end, in both directions.
        let mut p = pair(false);
        p.sniffed.clear();
        let req = Originate {
            dial: "IAX2/B/600".into(),
            app: App::Pattern,
            hold: Some(Duration::from_secs(75)),
            calling: (None, None),
        };
        p.a.originate(p.now, &req).unwrap();
        p.run_until(Duration::from_secs(85));
        let Event::CallEnded { frames_sent, frames_received, lost, reordered, ts_irregular, .. } = ended(&p, "a")[0]
        else {
            unreachable!()
        };
        assert!(frames_sent >= 3740 && frames_sent - frames_received <= 2, "{frames_sent} {frames_received}");
        assert_eq!((lost, reordered, ts_irregular), (0, 0, 0));
        // Full voice frames (type 2): the first of each direction, then one each per wrap.
        let full_voice = p.sniffed.iter().filter(|d| d.len() > 12 && d[0] & 0x80 != 0 && d[10] == 2).count();
        assert_eq!(full_voice, 4, "first frame and wrap resync, each way");
    }

    #[test]
    fn trunked_calls_share_trunk_frames() {
        let mut p = pair(true);
        let now = p.now;
        for (ep, mut cfg) in [
            (&mut p.a, config("B", "bsecret", "A", "asecret", "b")),
            (&mut p.b, config("A", "asecret", "B", "bsecret", "a")),
        ] {
            cfg.peers[0].trunk = true;
            cfg.general.trunktimestamps = true;
            ep.reconfigure(now, Arc::new(cfg), resolved());
        }
        for _ in 0..50 {
            let req = Originate {
                dial: "IAX2/B/600".into(),
                app: App::Pattern,
                hold: Some(Duration::from_secs(10)),
                calling: (None, None),
            };
            p.a.originate_paced(p.now, &req).unwrap();
        }
        p.run_until(Duration::from_secs(20));
        let ends = ended(&p, "a");
        assert_eq!(ends.len(), 50);
        for e in ends {
            let Event::CallEnded { frames_sent, frames_received, lost, reordered, ts_irregular, .. } = e else {
                unreachable!()
            };
            assert!(frames_sent >= 490 && frames_sent - frames_received <= 2, "{frames_sent} {frames_received}");
            assert_eq!((lost, reordered, ts_irregular), (0, 0, 0));
        }
    }

    #[test]
    fn dial_bridges_two_calls_and_passes_caller_id_through() {
        let mut p = pair(false);
        let mut b_plan = echo_plan();
        b_plan.add("iaxinbound", "_7XX", App::parse("dial(IAX2/A/6${EXTEN})").unwrap());
        p.b.set_dialplan(b_plan);
        let mut a_plan = Dialplan::default();
        a_plan.add("iaxinbound", "6700", App::Echo);
        p.a.set_dialplan(a_plan);
        let req = Originate {
            dial: "IAX2/B/700".into(),
            app: App::Pattern,
            hold: Some(Duration::from_secs(10)),
            calling: (Some("5551234".into()), Some("Alice".into())),
        };
        p.a.originate(p.now, &req).unwrap();
        p.run_until(Duration::from_secs(20));
        // A's echo leg saw the original caller, relayed by B's bridge.
        let relayed = p.find("a", |e| {
            matches!(e, Event::CallStarted { direction, exten, caller, .. }
            if direction == "inbound" && exten == "6700" && caller == "5551234")
        });
        assert_eq!(relayed.len(), 1, "{:#?}", p.events);
        let ends = ended(&p, "a");
        let outbound =
            ends.iter().find(|e| matches!(e, Event::CallEnded { direction, .. } if direction == "outbound")).unwrap();
        let Event::CallEnded { frames_sent, frames_received, lost, reordered, .. } = outbound else { unreachable!() };
        assert!(*frames_sent >= 490 && frames_sent - frames_received <= 4, "{frames_sent} {frames_received}");
        assert_eq!((*lost, *reordered), (0, 0));
        // Hanging up one leg hung up the other: nothing is left on B.
        assert!(text::iax_channels(&p.b.channels()).contains("0 active"), "{}", text::iax_channels(&p.b.channels()));
        assert!(text::iax_channels(&p.a.channels()).contains("0 active"));
    }

    /// Calls into a context read from extensions.conf do what its priorities say.
    #[test]
    fn extensions_conf_priorities_run_on_calls() {
        let mut p = pair(false);
        let ext = "[iaxinbound]\n\
                   exten => 1000,1,Answer()\n same => n,Playtones(1000)\n same => n,Wait(10)\n same => n,Hangup(17)\n\
                   exten => 2000,1,Busy()\n\
                   exten => 9196,1,Answer()\n same => n,Echo()\n";
        let loaded = load(&MapLoader::from_files([("extensions.conf", ext)])).expect("loads");
        assert!(loaded.notes.is_empty(), "{:?}", loaded.notes);
        p.b.set_dialplan(loaded.switch.dialplan);

        // 1000: ten seconds of tone, then B hangs up with cause 17.
        let start = p.now - p.start;
        let quiet = Originate { dial: "IAX2/B/1000".into(), app: App::Silence, hold: None, calling: (None, None) };
        p.a.originate(p.now, &quiet).unwrap();
        p.run_until(start + Duration::from_secs(20));
        let answered = p.find("a", |e| matches!(e, Event::CallAnswered { .. }));
        let ended_at = p.find("a", |e| matches!(e, Event::CallEnded { code: 17, .. }));
        assert_eq!((answered.len(), ended_at.len()), (1, 1), "{:#?}", p.events);
        let held = ended_at[0] - answered[0];
        assert!(held >= Duration::from_secs(10) && held <= Duration::from_millis(10_100), "{held:?}");
        let Event::CallEnded { frames_received, frames_sent, .. } = ended(&p, "a")[0] else { unreachable!() };
        assert!((490..=502).contains(&frames_received), "ten seconds of tone: {frames_received}");
        assert_eq!(frames_sent, 0, "the caller was silent");

        // 2000: Busy() refuses with cause 17 before answering.
        let start = p.now - p.start;
        p.a.originate(p.now, &Originate { dial: "IAX2/B/2000".into(), ..quiet.clone() }).unwrap();
        p.run_until(start + Duration::from_secs(5));
        let busy = p.find("a", |e| matches!(e, Event::CallRejected { code: 17, .. }));
        assert_eq!(busy.len(), 1, "{:#?}", p.events);

        // 9196: Answer() then Echo(): every frame comes back until the caller hangs up.
        let start = p.now - p.start;
        let echo = Originate {
            dial: "IAX2/B/9196".into(),
            app: App::Pattern,
            hold: Some(Duration::from_secs(5)),
            calling: (None, None),
        };
        p.a.originate(p.now, &echo).unwrap();
        p.run_until(start + Duration::from_secs(10));
        let ends = ended(&p, "a");
        let Event::CallEnded { code, frames_sent, frames_received, lost, .. } = ends[1] else { unreachable!() };
        assert_eq!(code, 16);
        assert!(frames_sent >= 245 && frames_sent - frames_received <= 2, "{frames_sent} {frames_received}");
        assert_eq!(lost, 0);
    }

    #[test]
    fn unknown_extension_is_rejected_with_no_route() {
        let mut p = pair(false);
        let req = Originate { dial: "IAX2/B/999".into(), app: App::Pattern, hold: None, calling: (None, None) };
        p.a.originate(p.now, &req).unwrap();
        p.run_until(Duration::from_secs(5));
        let b = p.find("b", |e| matches!(e, Event::CallRejected { code: 3, cause, .. } if cause.contains("no extension 999 in context iaxinbound")));
        let a = p.find("a", |e| matches!(e, Event::CallRejected { code: 3, .. }));
        assert_eq!((a.len(), b.len()), (1, 1), "{:#?}", p.events);
    }

    #[test]
    fn autokill_gives_up_on_a_silent_peer() {
        let mut p = pair(false);
        let mut cfg = config("B", "bsecret", "A", "asecret", "b");
        cfg.general.autokill = Some(Duration::from_millis(2000));
        p.a.reconfigure(p.now, Arc::new(cfg), resolved());
        p.partitioned = true;
        let start = p.now - p.start;
        p.a.originate(
            p.now,
            &Originate { dial: "IAX2/B/600".into(), app: App::Pattern, hold: None, calling: (None, None) },
        )
        .unwrap();
        p.run_until(start + Duration::from_secs(5));
        let killed =
            p.find("a", |e| matches!(e, Event::CallRejected { cause, code: 19, .. } if cause.contains("autokill")));
        assert_eq!(killed.len(), 1);
        assert_eq!(killed[0] - start, Duration::from_millis(2000));
        // The killed NEW is not retransmitted: after the heal B never hears of the call.
        p.partitioned = false;
        p.run_until(start + Duration::from_secs(60));
        assert!(p.find("b", |e| matches!(e, Event::CallStarted { .. })).is_empty(), "{:#?}", p.events);
    }

    #[test]
    fn calls_beyond_trunkmaxsize_are_refused() {
        let mut p = pair(true);
        let mut cfg = config("B", "bsecret", "A", "asecret", "b");
        cfg.peers[0].trunk = true;
        cfg.general.trunkmaxsize = 160 * 3;
        p.a.reconfigure(p.now, Arc::new(cfg), resolved());
        let req = Originate {
            dial: "IAX2/B/600".into(),
            app: App::Pattern,
            hold: Some(Duration::from_secs(5)),
            calling: (None, None),
        };
        for _ in 0..3 {
            p.a.originate_paced(p.now, &req).unwrap();
        }
        let err = p.a.originate(p.now, &req).unwrap_err();
        assert!(err.to_string().contains("trunkmaxsize=480"), "{err}");
        p.run_until(Duration::from_secs(10));
        // Slots come back when calls end.
        p.a.originate(p.now, &req).unwrap();
    }
}

/// The seed's headline load on the sans-IO core alone: 800 trunked calls,
/// 60 s of pattern audio each way through B's echo. Ignored by default (it
/// takes a few seconds in release); `cargo test --release -- --ignored trunk_800`.
#[test]
#[ignore]
fn trunk_800_on_the_core() {
    use switch::dialplan::{App, Dialplan};
    use switch::iax2::endpoint::Originate;
    let mut a = config("B", "bsecret", "A", "asecret", "b");
    let mut b = config("A", "asecret", "B", "bsecret", "a");
    a.peers[0].trunk = true;
    b.peers[0].trunk = true;
    let mut p = Pair::new(a, b);
    let mut plan = Dialplan::default();
    plan.add("iaxinbound", "600", App::Echo);
    p.b.set_dialplan(plan);
    p.run_until(Duration::from_secs(2));
    let secs: u64 = std::env::var("TRUNK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(60);
    let req = Originate {
        dial: "IAX2/B/600".into(),
        app: App::Pattern,
        hold: Some(Duration::from_secs(secs)),
        calling: (None, None),
    };
    for _ in 0..800 {
        p.a.originate(p.now, &req).unwrap();
    }
    assert!(p.a.originate(p.now, &req).unwrap_err().to_string().contains("trunkmaxsize"));
    let wall = std::time::Instant::now();
    p.run_until(Duration::from_secs(secs + 10));
    let elapsed = wall.elapsed();
    let ends: Vec<_> = p.events.iter().filter(|(_, h, e)| *h == "a" && matches!(e, Event::CallEnded { .. })).collect();
    assert_eq!(ends.len(), 800);
    let (mut sent, mut received, mut lost) = (0, 0, 0);
    for (_, _, e) in &ends {
        if let Event::CallEnded { frames_sent, frames_received, lost: l, .. } = e {
            sent += frames_sent;
            received += frames_received;
            lost += l;
        }
    }
    println!(
        "trunk-800 core: {sent} frames sent, {received} echoed back, {lost} lost, {:.2} s wall for {} s simulated",
        elapsed.as_secs_f64(),
        secs + 8
    );
    assert_eq!(lost, 0);
}

/// B registered at A; A restarts. With the registrations A saved (through the
/// state file's format, as the runtime does) A can call B and qualifies it at
/// once, long before B's next refresh; without them it cannot.
#[test]
fn a_restarted_registrar_reaches_its_peer_at_once_from_saved_state() {
    use switch::dialplan::{App, Dialplan};
    use switch::iax2::endpoint::Originate;
    use switch::state::registrations;

    let wall = std::time::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let mut p = Pair::new(config("B", "bsecret", "A", "asecret", "b"), config("A", "asecret", "B", "bsecret", "a"));
    let mut plan = Dialplan::default();
    plan.add("iaxinbound", "600", App::Echo);
    p.b.set_dialplan(plan);
    p.run_until(Duration::from_secs(20));
    assert!(p.a.registrar_changed(), "B's registration is a change to save");
    let saved_at = p.now;
    let file = registrations::encode(&p.a.saved_registrations(saved_at), wall);

    // A is down for 10 s: nothing reaches it, then it starts afresh.
    p.partitioned = true;
    p.run_until(Duration::from_secs(30));
    p.partitioned = false;
    let a_config = || Arc::new(config("B", "bsecret", "A", "asecret", "b"));
    let call = Originate {
        dial: "IAX2/B/600".into(),
        app: App::Echo,
        hold: Some(Duration::from_secs(2)),
        calling: (None, None),
    };
    let mut forgetful = Endpoint::new(a_config(), resolved(), ChaCha20Rng::seed_from_u64(3), p.now);
    assert!(forgetful.originate(p.now, &call).is_err(), "without saved state B has no address yet");

    p.a = Endpoint::new(a_config(), resolved(), ChaCha20Rng::seed_from_u64(3), p.now);
    let saved = registrations::decode(&file, wall + (p.now - saved_at)).unwrap();
    assert_eq!(saved.len(), 1);
    // Registered in the first second for 60 s (+5 s grace), restarted at 30 s.
    let left = saved[0].remaining;
    assert!(left > Duration::from_secs(34) && left <= Duration::from_secs(36), "{left:?}");
    assert_eq!(p.a.restore_registrations(p.now, &saved), 1);
    let restarted = p.now - p.start;
    p.a.originate(p.now, &call).expect("the restored peer is reachable at once");
    p.run_until(restarted + Duration::from_secs(3));

    let after = |t: &Duration| *t >= restarted;
    assert_eq!(p.find("a", |e| matches!(e, Event::PeerRestored { .. })).len(), 1, "{:#?}", p.events);
    let ok: Vec<_> = p
        .find("a", |e| matches!(e, Event::PeerStateChanged { to: PeerState::Ok, .. }))
        .into_iter()
        .filter(after)
        .collect();
    assert!(ok.first().is_some_and(|t| *t < restarted + Duration::from_secs(1)), "qualified at once: {:#?}", p.events);
    let answered: Vec<_> = p.find("a", |e| matches!(e, Event::CallAnswered { .. })).into_iter().filter(after).collect();
    assert!(answered.first().is_some_and(|t| *t < restarted + Duration::from_secs(1)), "{:#?}", p.events);
    // The call did not wait for B to register again (B does so only once
    // it sees A answer its POKEs again).
    let refreshed: Vec<_> =
        p.find("a", |e| matches!(e, Event::PeerRegistered { .. })).into_iter().filter(after).collect();
    assert!(refreshed.first().is_none_or(|r| answered[0] < *r), "{refreshed:?} {answered:?}");
}

/// A `host=dynamic` peer registered from behind NAT: the registrar knows it
/// only by the apparent address its REGREQ came from (nothing in its
/// configuration names it), and it is qualified, called and sent media there.
#[test]
fn a_dynamic_peer_behind_nat_is_reached_at_its_apparent_address() {
    use switch::dialplan::{App, Dialplan};
    use switch::iax2::endpoint::Originate;
    let apparent = addr("198.51.100.9:40123");
    // One secret both ways: A has no registration of its own to take its
    // outbound secret from.
    let mut a = config("B", "shared", "A", "shared", "b");
    a.registrations.clear(); // A only serves; it never learns B's real address
    let b = config("A", "shared", "B", "shared", "a");
    let mut p = Pair::new(a, b);
    p.b_behind_nat = Some(apparent);
    let mut plan = Dialplan::default();
    plan.add("iaxinbound", "600", App::Echo);
    p.b.set_dialplan(plan);
    p.run_until(Duration::from_secs(2));
    assert!(
        p.events.iter().any(|(_, h, e)| *h == "a"
            && matches!(e, Event::PeerRegistered { peer, addr, .. } if peer == "B" && *addr == apparent)),
        "{:#?}",
        p.events
    );
    p.run_until(Duration::from_secs(15));
    assert!(
        !p.find("a", |e| matches!(e, Event::PeerStateChanged { peer, to: PeerState::Ok, .. } if peer == "B"))
            .is_empty(),
        "qualified OK through the NAT: {:#?}",
        p.events
    );
    let hold = Duration::from_secs(5);
    let req = Originate { dial: "IAX2/B/600".into(), app: App::Pattern, hold: Some(hold), calling: (None, None) };
    p.a.originate(p.now, &req).unwrap();
    p.run_until(Duration::from_secs(25));
    let ended: Vec<&Event> = p
        .events
        .iter()
        .filter(|(_, h, e)| *h == "a" && matches!(e, Event::CallEnded { .. }))
        .map(|(_, _, e)| e)
        .collect();
    let [Event::CallEnded { frames_sent, frames_received, code, .. }] = ended[..] else {
        panic!("one call on A: {:#?}", p.events)
    };
    assert_eq!(*code, 16);
    assert!(*frames_sent > 200 && frames_sent - frames_received <= 2, "{frames_sent} sent, {frames_received} echoed");
    assert!(!p.a_sent_to.is_empty());
    assert!(
        p.a_sent_to.iter().all(|d| *d == apparent),
        "A sent to {:?}",
        p.a_sent_to.iter().collect::<std::collections::BTreeSet<_>>()
    );
}

//! Rates of the SIP and RTP hot paths: parsing and encoding an INVITE with
//! SDP as a softphone sends it, verifying a digest answer, parsing an RTP
//! packet, the endpoint answering a REGISTER with a stateless challenge
//! (what a scanner flood costs), and authenticated REGISTERs answered 200
//! with 1,000 and 100,000 completed transactions live (a registration
//! storm's steady state: the cost per request must not grow with them).
//!
//! `cargo bench -p switch --bench sip`; `cargo xtask bench` runs every bench.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use switch::config::{SipSettings, SipUser};
use switch::iax2::endpoint::ResolvedHosts;
use switch::rtp::{write_rtp, RtpHeader, RtpPacket};
use switch::sip::digest::{Authorization, Challenge};
use switch::sip::endpoint::SipEndpoint;
use switch::sip::message::Message;

/// The SDP offer of a softphone (Linphone-like).
const OFFER: &str = "v=0\r\no=1000 3287 1234 IN IP4 192.0.2.10\r\ns=Talk\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
m=audio 7078 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\na=rtcp-mux\r\n";

/// An INVITE as that softphone sends it.
fn invite() -> String {
    format!(
        "INVITE sip:9196@192.0.2.1 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK.p3Fq1x8Zr;rport\r\n\
         From: \"Alice\" <sip:1000@192.0.2.1>;tag=8hZf1~Yq2\r\n\
         To: <sip:9196@192.0.2.1>\r\n\
         CSeq: 20 INVITE\r\n\
         Call-ID: 2Vh3yK8sQf\r\n\
         Max-Forwards: 70\r\n\
         Supported: replaces, outbound, gruu\r\n\
         Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO, PRACK, UPDATE\r\n\
         Content-Type: application/sdp\r\n\
         Contact: <sip:1000@192.0.2.10:5060;transport=udp>;+sip.instance=\"<urn:uuid:5b1e0a52-1b8f-4b4c-9d3a-2c1f0e8a7d6b>\"\r\n\
         User-Agent: Linphone Desktop/5.2.0 (Debian) LinphoneSDK/5.3.0\r\n\
         Content-Length: {}\r\n\r\n{OFFER}",
        OFFER.len()
    )
}

fn sip_messages(c: &mut Criterion) {
    let text = invite();
    let bytes = text.as_bytes();
    let message = Message::parse(bytes).unwrap_or_else(|e| panic!("the bench INVITE must parse: {e}"));
    let mut g = c.benchmark_group("sip");
    g.sample_size(20).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(1));
    g.bench_function("parse INVITE with SDP", |b| b.iter(|| Message::parse(black_box(bytes))));
    g.bench_function("encode INVITE with SDP", |b| b.iter(|| black_box(&message).encode()));

    let challenge = Challenge::new("switch", "0123456789abcdef0123456789abcdef0123456789abcdef".into(), false);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let auth = Authorization::answer(&challenge, ("1000", "secret"), "INVITE", "sip:9196@192.0.2.1", 1, &mut rng)
        .unwrap_or_else(|e| panic!("{e}"));
    g.bench_function("verify digest", |b| b.iter(|| black_box(&auth).verify("INVITE", "secret")));

    let mut packet = Vec::new();
    write_rtp(&RtpHeader::new(0, 1, 160, 0x1234), &[0xff; 160], &mut packet);
    g.bench_function("parse RTP", |b| b.iter(|| RtpPacket::parse(black_box(&packet)).is_ok()));
    g.finish();
}

fn challenges(c: &mut Criterion) {
    let settings = SipSettings {
        listen: "192.0.2.1:5060".parse().unwrap_or_else(|e| panic!("{e}")),
        rtp: "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}")),
        users: vec![SipUser { name: "1000".into(), password: "secret".into(), context: None }],
        ..SipSettings::default()
    };
    let now = Instant::now();
    let mut sip = SipEndpoint::new(Arc::new(settings), &ResolvedHosts::default(), ChaCha20Rng::seed_from_u64(1), now);
    let register = "REGISTER sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.7:5060;branch=z9hG4bK-scan\r\n\
                    Max-Forwards: 70\r\nFrom: <sip:100@192.0.2.1>;tag=1\r\nTo: <sip:100@192.0.2.1>\r\n\
                    Call-ID: scan\r\nCSeq: 1 REGISTER\r\nContact: <sip:100@198.51.100.7>\r\nContent-Length: 0\r\n\r\n";
    let from = "198.51.100.7:5060".parse().unwrap_or_else(|e| panic!("{e}"));
    let mut g = c.benchmark_group("sip endpoint");
    g.sample_size(20).measurement_time(Duration::from_secs(2));
    g.throughput(Throughput::Elements(1));
    g.bench_function("REGISTER to 401 challenge", |b| {
        b.iter(|| {
            sip.handle_signalling(now, from, register.as_bytes());
            while sip.poll_transmit().is_some() {}
            while sip.poll_event().is_some() {}
        })
    });
    g.finish();
}

/// A steady registration storm: every request is a new authenticated
/// REGISTER (own branch, next CSeq) answered 200 in a new transaction, and
/// the fake clock moves so that Timer J expires one old transaction per new
/// one, keeping `live` of them.
struct Storm {
    sip: SipEndpoint,
    now: Instant,
    step: Duration,
    auths: Vec<String>,
    rng: ChaCha20Rng,
    sent: usize,
}

const STORM_USERS: usize = 100;

impl Storm {
    fn new(live: u32) -> Storm {
        let settings = SipSettings {
            listen: "192.0.2.1:5060".parse().unwrap_or_else(|e| panic!("{e}")),
            rtp: "192.0.2.1".parse().unwrap_or_else(|e| panic!("{e}")),
            transaction_memory: 1 << 30,
            users: (0..STORM_USERS)
                .map(|u| SipUser { name: format!("u{u}"), password: format!("pw{u}"), context: None })
                .collect(),
            ..SipSettings::default()
        };
        let now = Instant::now();
        let mut sip =
            SipEndpoint::new(Arc::new(settings), &ResolvedHosts::default(), ChaCha20Rng::seed_from_u64(1), now);
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let auths = (0..STORM_USERS)
            .map(|u| {
                sip.handle_signalling(now, Self::source(u), Self::text(u, u, None).as_bytes());
                let out = sip.poll_transmit().unwrap_or_else(|| panic!("no challenge"));
                Self::answer(u, &out.payload, &mut rng)
            })
            .collect();
        while sip.poll_event().is_some() {}
        // Timer J is 32 s: `live` transactions over it.
        let step = Duration::from_secs(32) / live;
        let mut storm = Storm { sip, now, step, auths, rng, sent: STORM_USERS };
        for _ in 0..live {
            storm.register();
        }
        let usage = storm.sip.transaction_usage();
        assert!(usage.transactions + 2 >= live as usize && usage.shed == 0, "{usage:?}");
        storm
    }

    /// User `u`'s credentials for the challenge in `payload`.
    fn answer(u: usize, payload: &[u8], rng: &mut ChaCha20Rng) -> String {
        let challenge = match Message::parse(payload) {
            Ok(Message::Response(r)) => r.headers.get("WWW-Authenticate").map(str::to_string),
            _ => None,
        };
        let challenge =
            Challenge::parse(&challenge.unwrap_or_else(|| panic!("no challenge"))).unwrap_or_else(|e| panic!("{e}"));
        let (user, password) = (format!("u{u}"), format!("pw{u}"));
        Authorization::answer(&challenge, (&user, &password), "REGISTER", "sip:192.0.2.1", 1, rng)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    }

    fn source(u: usize) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([10, 0, (u / 250) as u8, (u % 250 + 1) as u8], 5060))
    }

    fn text(i: usize, u: usize, auth: Option<&str>) -> String {
        format!(
            "REGISTER sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKs{i};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:u{u}@192.0.2.1>;tag=t{u}\r\nTo: <sip:u{u}@192.0.2.1>\r\n\
             Call-ID: storm-{u}@phone\r\nCSeq: {} REGISTER\r\nContact: <sip:u{u}@{}>\r\n\
             Expires: 600\r\n{}Content-Length: 0\r\n\r\n",
            Self::source(u),
            i / STORM_USERS + 1,
            Self::source(u),
            auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default()
        )
    }

    /// One turn of the event loop: due timers, then one REGISTER in and its 200 out.
    fn register(&mut self) {
        self.now += self.step;
        while let Some(t) = self.sip.poll_timeout().filter(|t| *t <= self.now) {
            self.sip.handle_timeout(t);
        }
        loop {
            let (i, u) = (self.sent, self.sent % STORM_USERS);
            self.sent += 1;
            let text = Self::text(i, u, Some(&self.auths[u]));
            self.sip.handle_signalling(self.now, Self::source(u), text.as_bytes());
            let out = self.sip.poll_transmit().unwrap_or_else(|| panic!("no answer"));
            if out.payload.starts_with(b"SIP/2.0 200") {
                break;
            }
            // Nonces go stale after 300 s of the fake clock: answer the new challenge, as a phone does.
            assert!(out.payload.starts_with(b"SIP/2.0 401"), "{}", String::from_utf8_lossy(&out.payload));
            self.auths[u] = Self::answer(u, &out.payload, &mut self.rng);
            self.sent -= 1;
        }
        while self.sip.poll_event().is_some() {}
    }
}

fn storm(c: &mut Criterion) {
    let mut g = c.benchmark_group("sip storm");
    g.sample_size(10).measurement_time(Duration::from_secs(3));
    g.throughput(Throughput::Elements(1));
    for live in [1_000u32, 100_000] {
        let mut storm = Storm::new(live);
        g.bench_function(format!("REGISTER 200 with {live} live"), |b| b.iter(|| storm.register()));
    }
    g.finish();
}

criterion_group!(benches, sip_messages, challenges, storm);
criterion_main!(benches);

//! Rates of the SIP and RTP hot paths: parsing and encoding an INVITE with
//! SDP as a softphone sends it, verifying a digest answer, parsing an RTP
//! packet, and the endpoint answering a REGISTER with a stateless challenge
//! (what a scanner flood costs).
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
        rtp: "192.0.2.1:16384".parse().unwrap_or_else(|e| panic!("{e}")),
        external_ip: None,
        realm: "switch".into(),
        context: "default".into(),
        min_expires: 60,
        max_expires: 3600,
        max_calls: 1000,
        rtp_timeout: 60,
        gateways: Vec::new(),
        guard: Default::default(),
        users: vec![SipUser { name: "1000".into(), password: "secret".into(), context: None }],
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

criterion_group!(benches, sip_messages, challenges);
criterion_main!(benches);

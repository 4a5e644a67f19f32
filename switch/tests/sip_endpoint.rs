//! The SIP endpoint, sans IO: a scripted phone registers with digest
//! authentication, calls the echo extension, sends RTP and hangs up; and the
//! ways strangers are kept out (challenges, identical 403s, silence to OPTIONS).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switch::control::text;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use switch::config::{SipSettings, SipUser};
use switch::dialplan::{App, Dialplan};
use switch::event::Event;
use switch::iax2::endpoint::ResolvedHosts;
use switch::protocol::{SocketId, SocketRequest, Transmit};
use switch::rtp::{write_rtp, RtpHeader, RtpPacket};
use switch::sip::digest::{Authorization, Challenge};
use switch::sip::endpoint::SipEndpoint;
use switch::sip::message::{Message, Response};

const PHONE: &str = "192.0.2.10:5060";
const PHONE_RTP: &str = "192.0.2.10:40000";

fn settings() -> SipSettings {
    SipSettings {
        listen: "192.0.2.1:5060".parse().unwrap(),
        rtp: "192.0.2.1".parse().unwrap(),
        max_calls: 2,
        rtp_timeout: 10,
        users: vec![
            SipUser { name: "alice".into(), password: "wonderland".into(), context: None },
            SipUser { name: "bob".into(), password: "builder".into(), context: None },
        ],
        ..SipSettings::default()
    }
}

struct Bench {
    sip: SipEndpoint,
    now: Instant,
    phone: SocketAddr,
    /// Media socket requests as the runtime saw them, until read.
    sockets: Vec<SocketRequest>,
    /// The host refuses to bind media ports (another process holds them).
    binds_fail: bool,
}

impl Bench {
    fn new() -> Bench {
        let now = Instant::now();
        let mut sip =
            SipEndpoint::new(Arc::new(settings()), &ResolvedHosts::default(), ChaCha20Rng::seed_from_u64(7), now);
        let mut plan = Dialplan::default();
        plan.add("default", "9196", App::Echo);
        plan.add("default", "9664", App::Music);
        plan.add("default", "17", App::Hangup { cause: 17 });
        plan.add("default", "bob", App::Dial { target: "SIP/bob".into() });
        plan.add("default", "carol", App::Dial { target: "SIP/carol".into() });
        sip.set_dialplan(plan);
        Bench { sip, now, phone: PHONE.parse().unwrap(), sockets: Vec::new(), binds_fail: false }
    }

    fn send(&mut self, text: &str) -> Vec<Transmit> {
        let from = self.phone;
        self.send_from(from, text)
    }

    fn send_from(&mut self, from: SocketAddr, text: &str) -> Vec<Transmit> {
        // Written with \n for readability; the wire wants CRLF.
        let wire = if text.contains("\r\n") { text.to_string() } else { text.replace('\n', "\r\n") };
        self.sip.handle_signalling(self.now, from, wire.as_bytes());
        self.drain()
    }

    /// What the endpoint sends, with its media sockets opened (or refused)
    /// before each datagram as the runtime does.
    fn drain(&mut self) -> Vec<Transmit> {
        let mut out = Vec::new();
        loop {
            while let Some(request) = self.sip.poll_media_socket() {
                self.sockets.push(request);
                if let SocketRequest::Open(port) = request {
                    if self.binds_fail {
                        self.sip.media_socket_failed(self.now, port, "address in use");
                    } else {
                        self.sip.media_socket_opened(self.now, port);
                    }
                }
            }
            let Some(t) = self.sip.poll_transmit() else { return out };
            out.push(t);
        }
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.sip.poll_event()).collect()
    }

    /// The causes of the calls that ended since the last look at the events.
    fn ended_causes(&mut self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::SipCallEnded { cause, .. } => Some(cause),
                _ => None,
            })
            .collect()
    }

    /// Registers bob from 192.0.2.11:5060; returns that address.
    fn register_bob(&mut self) -> SocketAddr {
        let bob: SocketAddr = "192.0.2.11:5060".parse().unwrap();
        let reg = |branch: &str, cseq: u32, auth: Option<&str>| {
            register(branch, cseq, auth)
                .replace("alice@", "bob@")
                .replace("192.0.2.10:5060", "192.0.2.11:5060")
                .replace("reg-1@phone", "reg-2@phone")
        };
        let challenge = responses(&self.send_from(bob, &reg("b1", 1, None)))[0]
            .headers
            .get("WWW-Authenticate")
            .unwrap()
            .to_string();
        let auth = answer_as("bob", &challenge, "REGISTER", "sip:192.0.2.1", "builder");
        assert_eq!(responses(&self.send_from(bob, &reg("b2", 2, Some(&auth))))[0].status, 200);
        bob
    }

    fn advance(&mut self, by: Duration) -> Vec<Transmit> {
        let until = self.now + by;
        let mut out = Vec::new();
        while let Some(t) = self.sip.poll_timeout().filter(|t| *t <= until) {
            self.now = t.max(self.now);
            self.sip.handle_timeout(self.now);
            out.extend(self.drain());
        }
        self.now = until;
        out
    }
}

fn is_media(t: &Transmit) -> bool {
    matches!(t.socket, SocketId::Media(_))
}

/// The audio port of an SDP body.
fn sdp_port(body: &[u8]) -> u16 {
    let sdp = String::from_utf8_lossy(body);
    let line = sdp.lines().find(|l| l.starts_with("m=audio ")).unwrap_or_else(|| panic!("no m=audio in {sdp}"));
    line.split(' ').nth(1).unwrap().parse().unwrap()
}

fn rtp(seq: u16, ssrc: u32) -> Vec<u8> {
    let mut packet = Vec::new();
    write_rtp(&RtpHeader::new(8, seq, 160 * u32::from(seq), ssrc), &[0xd5; 160], &mut packet);
    packet
}

fn responses(out: &[Transmit]) -> Vec<Response> {
    out.iter()
        .filter(|t| t.socket == SocketId::Listener)
        .map(|t| match Message::parse(&t.payload).unwrap() {
            Message::Response(r) => r,
            Message::Request(r) => panic!("expected a response, got {:?}", r.method),
        })
        .collect()
}

fn register(branch: &str, cseq: u32, auth: Option<&str>) -> String {
    format!(
        "REGISTER sip:192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{branch};rport\n\
         Max-Forwards: 70\nFrom: <sip:alice@192.0.2.1>;tag=a1\nTo: <sip:alice@192.0.2.1>\nCall-ID: reg-1@phone\n\
         CSeq: {cseq} REGISTER\nContact: <sip:alice@192.0.2.10:5060>\nExpires: 120\n{}Content-Length: 0\n\n",
        auth.map(|a| format!("Authorization: {a}\n")).unwrap_or_default()
    )
}

fn invite(exten: &str, branch: &str, cseq: u32, auth: Option<&str>) -> String {
    let sdp = "v=0\no=- 1 1 IN IP4 192.0.2.10\ns=-\nc=IN IP4 192.0.2.10\nt=0 0\nm=audio 40000 RTP/AVP 8 0 101\n\
               a=rtpmap:8 PCMA/8000\na=rtpmap:0 PCMU/8000\na=rtpmap:101 telephone-event/8000\n"
        .replace('\n', "\r\n");
    let head = format!(
        "INVITE sip:{exten}@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{branch}\n\
         Max-Forwards: 70\nFrom: \"Alice\" <sip:alice@192.0.2.1>;tag=c1\nTo: <sip:{exten}@192.0.2.1>\n\
         Call-ID: call-{branch}@phone\nCSeq: {cseq} INVITE\nContact: <sip:alice@192.0.2.10:5060>\n{}\
         Content-Type: application/sdp\nContent-Length: {}\n\n",
        auth.map(|a| format!("Proxy-Authorization: {a}\n")).unwrap_or_default(),
        sdp.len()
    );
    head.replace('\n', "\r\n") + &sdp
}

fn answer(challenge: &str, method: &str, uri: &str, password: &str) -> String {
    answer_as("alice", challenge, method, uri, password)
}

fn answer_as(user: &str, challenge: &str, method: &str, uri: &str, password: &str) -> String {
    answer_nc(user, challenge, method, uri, password, 1)
}

/// Credentials for the `nc`-th use of one challenge's nonce (RFC 2617 3.2.2).
fn answer_nc(user: &str, challenge: &str, method: &str, uri: &str, password: &str, nc: u32) -> String {
    let challenge = Challenge::parse(challenge).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    Authorization::answer(&challenge, (user, password), method, uri, nc, &mut rng).unwrap().to_string()
}

#[test]
fn a_phone_registers_calls_echo_and_hangs_up() {
    let mut b = Bench::new();

    // REGISTER is challenged statelessly, then accepted.
    let out = responses(&b.send(&register("r1", 1, None)));
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].status, 401);
    let challenge = out[0].headers.get("WWW-Authenticate").unwrap().to_string();
    assert!(out[0].top_via().unwrap().rport() == Some(Some(5060)), "rport filled in (RFC 3581)");
    let auth = answer(&challenge, "REGISTER", "sip:192.0.2.1", "wonderland");
    let out = responses(&b.send(&register("r2", 2, Some(&auth))));
    assert_eq!(out.iter().map(|r| r.status).collect::<Vec<_>>(), [200]);
    assert_eq!(out[0].headers.get("Contact"), Some("<sip:alice@192.0.2.10:5060>;expires=120"));
    assert!(b.events().iter().any(|e| matches!(e, Event::SipRegistered { user, expires: 120, .. } if user == "alice")));
    // A retransmission of the accepted REGISTER gets the same answer from its transaction.
    let again = responses(&b.send(&register("r2", 2, Some(&auth))));
    assert_eq!(again[0].encode(), out[0].encode());

    // INVITE: 407, then 100 and 200 with an SDP answer choosing the caller's first codec.
    let out = responses(&b.send(&invite("9196", "i1", 1, None)));
    assert_eq!(out[0].status, 407);
    let challenge = out[0].headers.get("Proxy-Authenticate").unwrap().to_string();
    let auth = answer(&challenge, "INVITE", "sip:9196@192.0.2.1", "wonderland");
    let out = responses(&b.send(&invite("9196", "i2", 2, Some(&auth))));
    assert_eq!(out.iter().map(|r| r.status).collect::<Vec<_>>(), [100, 200]);
    let ok = &out[1];
    let to_tag = ok.to().unwrap().tag().unwrap().to_string();
    let sdp = String::from_utf8(ok.body.clone()).unwrap();
    let port = sdp_port(&ok.body);
    assert!(port.is_multiple_of(2) && (16384..=32766).contains(&port), "{sdp}");
    assert!(sdp.contains(&format!("m=audio {port} RTP/AVP 8 101\r\n")), "{sdp}");
    assert_eq!(b.media_sockets(), [SocketRequest::Open(port)], "the runtime binds the call's pair");
    assert!(sdp.contains("c=IN IP4 192.0.2.1\r\n"), "{sdp}");
    let events = b.events();
    assert!(
        events.iter().any(|e| matches!(e, Event::SipCallAnswered { call: 1, codec } if codec == "PCMA")),
        "{events:?}"
    );

    // Without an ACK the 200 is retransmitted at T1, 2*T1 ...
    let re = responses(&b.advance(Duration::from_millis(600)));
    assert_eq!(re.iter().map(|r| r.status).collect::<Vec<_>>(), [200]);
    let ack = format!(
        "ACK sip:9196@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKack1\nMax-Forwards: 70\n\
         From: \"Alice\" <sip:alice@192.0.2.1>;tag=c1\nTo: <sip:9196@192.0.2.1>;tag={to_tag}\nCall-ID: call-i2@phone\n\
         CSeq: 2 ACK\nContent-Length: 0\n\n"
    );
    assert!(b.send(&ack).is_empty(), "ACK is never answered");
    assert!(responses(&b.advance(Duration::from_secs(2))).is_empty(), "no 200 after the ACK");

    // RTP from the phone is echoed back to where it came from, from the call's port.
    let rtp_from: SocketAddr = PHONE_RTP.parse().unwrap();
    for seq in 0..5u16 {
        b.sip.handle_media(b.now, port, rtp_from, &rtp(1000 + seq, 0xfeed));
    }
    assert!(b.events().contains(&Event::RtpSourceLearned { call: 1, source: rtp_from }));
    let echoed = b.drain();
    assert_eq!(echoed.len(), 5);
    for t in &echoed {
        assert_eq!((t.socket, t.destination), (SocketId::Media(port), rtp_from));
        let p = RtpPacket::parse(&t.payload).unwrap();
        assert_eq!((p.header.payload_type, p.payload.len()), (8, 160));
        assert_ne!(p.header.ssrc, 0xfeed, "our own SSRC");
    }

    // BYE from the phone: 200 and the call's figures.
    let bye = format!(
        "BYE sip:9196@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbye1\nMax-Forwards: 70\n\
         From: \"Alice\" <sip:alice@192.0.2.1>;tag=c1\nTo: <sip:9196@192.0.2.1>;tag={to_tag}\nCall-ID: call-i2@phone\n\
         CSeq: 3 BYE\nContent-Length: 0\n\n"
    );
    assert_eq!(responses(&b.send(&bye)).iter().map(|r| r.status).collect::<Vec<_>>(), [200]);
    let ended = b.events().into_iter().find_map(|e| match e {
        Event::SipCallEnded { call, cause, packets_received, packets_sent, lost, .. } => {
            Some((call, cause, packets_received, packets_sent, lost))
        }
        _ => None,
    });
    assert_eq!(ended, Some((1, "remote BYE".to_string(), 5, 5, 0)));
    assert_eq!(b.media_sockets(), [SocketRequest::Close(port)]);
    // A BYE for a dialog that is gone: 481.
    assert_eq!(responses(&b.send(&bye.replace("bye1", "bye2").replace("3 BYE", "4 BYE")))[0].status, 481);
}

#[test]
fn strangers_get_challenges_and_identical_refusals_but_no_state() {
    let mut b = Bench::new();
    // OPTIONS from an address with no registration: silence (svmap finds nothing).
    let options = "OPTIONS sip:100@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKo1\n\
                   Max-Forwards: 70\nFrom: <sip:scan@x>;tag=s\nTo: <sip:100@192.0.2.1>\nCall-ID: o1\nCSeq: 1 OPTIONS\n\
                   Content-Length: 0\n\n";
    assert!(b.send(options).is_empty());

    // Wrong password and unknown user look the same (svwar cannot enumerate).
    let challenge =
        responses(&b.send(&register("s1", 1, None)))[0].headers.get("WWW-Authenticate").unwrap().to_string();
    let wrong = answer(&challenge, "REGISTER", "sip:192.0.2.1", "guess");
    let unknown = answer(&challenge, "REGISTER", "sip:192.0.2.1", "guess").replace("\"alice\"", "\"bob\"");
    let a = responses(&b.send(&register("s2", 2, Some(&wrong))));
    let c = responses(&b.send(&register("s3", 3, Some(&unknown))));
    assert_eq!((a[0].status, c[0].status), (403, 403));
    assert_eq!(a[0].headers.iter().count(), c[0].headers.iter().count());
    // No transaction and no timer but the drop summary's (the OPTIONS), which is bounded.
    assert!(
        b.sip.poll_timeout().is_none_or(|t| t >= b.now + switch::droplog::INTERVAL),
        "nothing was kept: no transaction, no timer"
    );

    // An INVITE with a bad password gets no call, and unparseable bytes are dropped and counted.
    let challenge =
        responses(&b.send(&invite("9196", "x1", 1, None)))[0].headers.get("Proxy-Authenticate").unwrap().to_string();
    let wrong = answer(&challenge, "INVITE", "sip:9196@192.0.2.1", "guess");
    assert_eq!(responses(&b.send(&invite("9196", "x2", 2, Some(&wrong))))[0].status, 403);
    assert!(b.send("INVITE sip:x SIP/2.0\nVia: nonsense\n\n").is_empty());
    assert!(b.sip.stats().dropped.values().sum::<u64>() >= 2, "{:?}", b.sip.stats().dropped);
    assert!(b.sip.poll_timeout().is_none_or(|t| t >= b.now + switch::droplog::INTERVAL));
}

#[test]
fn dialplan_refusals_map_to_sip_statuses_and_calls_are_limited() {
    let mut b = Bench::new();
    let call = |b: &mut Bench, exten: &str, n: u32| {
        let branch = format!("{exten}n{n}");
        let challenge = responses(&b.send(&invite(exten, &branch, 1, None)))[0]
            .headers
            .get("Proxy-Authenticate")
            .unwrap()
            .to_string();
        let auth = answer(&challenge, "INVITE", &format!("sip:{exten}@192.0.2.1"), "wonderland");
        let out = responses(&b.send(&invite(exten, &format!("{branch}b"), 2, Some(&auth))));
        out.iter().map(|r| r.status).collect::<Vec<_>>()
    };
    assert_eq!(call(&mut b, "555", 1), [100, 404], "no such extension");
    assert_eq!(call(&mut b, "17", 1), [100, 486], "hangup(17) is user busy");
    assert_eq!(call(&mut b, "9664", 1), [100, 200]);
    assert_eq!(call(&mut b, "9664", 2), [100, 200]);
    assert_eq!(call(&mut b, "9664", 3), [503], "max_calls = 2");

    // Music flows every 20 ms to the offered address until RTP silence ends the calls.
    let out = b.advance(Duration::from_millis(100));
    let media: Vec<_> = out.iter().filter(|t| is_media(t)).collect();
    assert_eq!(media.len(), 10, "2 calls x 5 frames");
    assert!(media.iter().all(|t| t.destination == PHONE_RTP.parse().unwrap()));
    let out = b.advance(Duration::from_secs(11));
    let byes = out
        .iter()
        .filter(|t| t.socket == SocketId::Listener)
        .filter(|t| matches!(Message::parse(&t.payload), Ok(Message::Request(r)) if r.method.as_str() == "BYE"))
        .count();
    assert!(byes >= 2, "an RTP timeout sends BYE (and retransmits it unanswered)");
    assert_eq!(b.ended_causes(), ["RTP timeout", "RTP timeout"]);
}

/// A context read from extensions.conf: the tone plays, and the Wait before
/// Hangup ends the call with a BYE when it runs out.
#[test]
fn extensions_conf_wait_then_hangup_sends_bye() {
    let mut b = Bench::new();
    let ext =
        "[default]\nexten => 1000,1,Answer()\n same => n,Playtones(1000)\n same => n,Wait(2)\n same => n,Hangup()\n";
    let loaded = switch::config::load(&switch::config::MapLoader::from_files([("extensions.conf", ext)])).unwrap();
    b.sip.set_dialplan(loaded.switch.dialplan);
    let challenge =
        responses(&b.send(&invite("1000", "t1", 1, None)))[0].headers.get("Proxy-Authenticate").unwrap().to_string();
    let auth = answer(&challenge, "INVITE", "sip:1000@192.0.2.1", "wonderland");
    let out = responses(&b.send(&invite("1000", "t2", 2, Some(&auth))));
    assert_eq!(out.iter().map(|r| r.status).collect::<Vec<_>>(), [100, 200]);
    let out = b.advance(Duration::from_millis(1990));
    let media = out.iter().filter(|t| is_media(t)).count();
    assert!((98..=100).contains(&media), "two seconds of tone: {media}");
    assert!(b.ended_causes().is_empty());
    let out = b.advance(Duration::from_millis(40));
    let bye = out.iter().filter(|t| t.socket == SocketId::Listener).find_map(|t| match Message::parse(&t.payload) {
        Ok(Message::Request(r)) if r.method.as_str() == "BYE" => Some(r),
        _ => None,
    });
    let bye = bye.expect("the switch hangs up after the Wait");
    assert_eq!(bye.headers.get("Reason"), Some("Q.850;cause=16"), "Hangup()'s cause, RFC 3326");
    assert_eq!(b.ended_causes(), ["dialplan hangup"]);
}

/// Calls between registered users go through the switch as a back-to-back
/// user agent; an unregistered one is USER_NOT_REGISTERED (480).
#[test]
fn a_call_to_a_registered_user_is_bridged() {
    let mut b = Bench::new();
    let bob = b.register_bob();

    // carol never registered.
    let invite_to = |b: &mut Bench, exten: &str, branch: &str| {
        let challenge = responses(&b.send(&invite(exten, &format!("{branch}x"), 1, None)))[0]
            .headers
            .get("Proxy-Authenticate")
            .unwrap()
            .to_string();
        let auth = answer(&challenge, "INVITE", &format!("sip:{exten}@192.0.2.1"), "wonderland");
        b.send(&invite(exten, branch, 2, Some(&auth)))
    };
    let out = responses(&invite_to(&mut b, "carol", "c1"));
    assert_eq!(out.iter().map(|r| r.status).collect::<Vec<_>>(), [100, 480]);
    assert!(b
        .events()
        .iter()
        .any(|e| matches!(e, Event::SipCallRejected { reason, .. } if reason == "USER_NOT_REGISTERED")));

    // alice calls bob: 100 to alice, an INVITE from the switch to bob's contact.
    let out = invite_to(&mut b, "bob", "a1");
    assert_eq!(responses(&out[..1]).iter().map(|r| r.status).collect::<Vec<_>>(), [100]);
    let to_bob = &out[1];
    assert_eq!(to_bob.destination, bob);
    let Ok(Message::Request(invite_b)) = Message::parse(&to_bob.payload) else { panic!("an INVITE to bob") };
    assert_eq!(invite_b.uri.to_string(), "sip:alice@192.0.2.11:5060".replace("alice", "bob"));
    assert!(String::from_utf8_lossy(&invite_b.body).contains(" RTP/AVP 8 101"), "the caller's codec");
    let bob_port = sdp_port(&invite_b.body);

    // bob rings and answers; the switch ACKs bob and relays 180 and 200 to alice.
    let reply = |status: u16, tag: bool, sdp: bool| {
        let mut r = Response::to_request(&invite_b, status, if status == 180 { "Ringing" } else { "OK" });
        if tag {
            let to = r.headers.get("To").unwrap().to_string();
            r.headers.set("To", format!("{to};tag=bobtag"));
            r.headers.push("Contact", "<sip:bob@192.0.2.11:5060>");
        }
        if sdp {
            r.headers.push("Content-Type", "application/sdp");
            r.body = b"v=0\r\no=- 2 2 IN IP4 192.0.2.11\r\ns=-\r\nc=IN IP4 192.0.2.11\r\nt=0 0\r\n\
                       m=audio 41000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\n"
                .to_vec();
        }
        String::from_utf8(r.encode()).unwrap()
    };
    let out = b.send_from(bob, &reply(180, true, false));
    assert_eq!(responses(&out).iter().map(|r| r.status).collect::<Vec<_>>(), [180]);
    assert_eq!(out[0].destination, b.phone);
    let out = b.send_from(bob, &reply(200, true, true));
    let ack = out.iter().find(|t| t.destination == bob).expect("an ACK to bob");
    let Ok(Message::Request(ack)) = Message::parse(&ack.payload) else { panic!("ACK") };
    assert_eq!((ack.method.as_str(), ack.cseq().unwrap().seq), ("ACK", 1));
    assert_eq!(ack.to().unwrap().tag(), Some("bobtag"));
    let ok: Vec<Response> = responses(&out.iter().filter(|t| t.destination == b.phone).cloned().collect::<Vec<_>>());
    assert_eq!(ok.iter().map(|r| r.status).collect::<Vec<_>>(), [200]);
    let alice_tag = ok[0].to().unwrap().tag().unwrap().to_string();
    let alice_port = sdp_port(&ok[0].body);
    assert_ne!(alice_port, bob_port, "each leg has its own port");

    // RTP is relayed both ways, as it came, each leg on its own port.
    let mut packet = Vec::new();
    write_rtp(&RtpHeader::new(8, 7, 160, 0xa11ce), &[0x55; 160], &mut packet);
    b.sip.handle_media(b.now, alice_port, PHONE_RTP.parse().unwrap(), &packet);
    let relayed = b.drain();
    assert_eq!(relayed.len(), 1);
    assert_eq!(
        (relayed[0].socket, relayed[0].destination, &relayed[0].payload),
        (SocketId::Media(bob_port), "192.0.2.11:41000".parse().unwrap(), &packet)
    );
    b.sip.handle_media(b.now, bob_port, "192.0.2.11:41000".parse().unwrap(), &packet);
    let back = b.drain();
    assert_eq!((back[0].socket, back[0].destination), (SocketId::Media(alice_port), PHONE_RTP.parse().unwrap()));

    // alice hangs up: 200 to her, BYE to bob.
    let bye = format!(
        "BYE sip:bob@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKbyeA\nMax-Forwards: 70\n\
         From: \"Alice\" <sip:alice@192.0.2.1>;tag=c1\nTo: <sip:bob@192.0.2.1>;tag={alice_tag}\nCall-ID: call-a1@phone\n\
         CSeq: 3 BYE\nContent-Length: 0\n\n"
    );
    let out = b.send(&bye);
    assert_eq!(responses(&out[..1])[0].status, 200);
    let Ok(Message::Request(bye_b)) = Message::parse(&out[1].payload) else { panic!("a BYE to bob") };
    assert_eq!((bye_b.method.as_str(), out[1].destination), ("BYE", bob));
    assert_eq!(bye_b.to().unwrap().tag(), Some("bobtag"));
    assert_eq!(b.ended_causes(), ["remote BYE", "other leg ended: remote BYE"]);
}

/// A caller's CANCEL while the callee rings: 200 to the CANCEL, 487 to the
/// INVITE, and a CANCEL of our INVITE to the callee.
#[test]
fn a_cancel_while_the_callee_rings_is_passed_on() {
    let mut b = Bench::new();
    let bob = b.register_bob();
    let challenge =
        responses(&b.send(&invite("bob", "k0", 1, None)))[0].headers.get("Proxy-Authenticate").unwrap().to_string();
    let auth = answer(&challenge, "INVITE", "sip:bob@192.0.2.1", "wonderland");
    let out = b.send(&invite("bob", "k1", 2, Some(&auth)));
    let Ok(Message::Request(invite_b)) = Message::parse(&out[1].payload) else { panic!("an INVITE to bob") };
    let mut ringing = Response::to_request(&invite_b, 180, "Ringing");
    let to = ringing.headers.get("To").unwrap().to_string();
    ringing.headers.set("To", format!("{to};tag=bobtag"));
    b.send_from(bob, &String::from_utf8(ringing.encode()).unwrap());

    let cancel = "CANCEL sip:bob@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKk1\n\
                  Max-Forwards: 70\nFrom: \"Alice\" <sip:alice@192.0.2.1>;tag=c1\nTo: <sip:bob@192.0.2.1>\n\
                  Call-ID: call-k1@phone\nCSeq: 2 CANCEL\nContent-Length: 0\n\n";
    let out = b.send(cancel);
    let to_alice = responses(&out.iter().filter(|t| t.destination == b.phone).cloned().collect::<Vec<_>>());
    assert_eq!(
        to_alice.iter().map(|r| (r.status, r.cseq().unwrap().method.as_str().to_string())).collect::<Vec<_>>(),
        [(200, "CANCEL".to_string()), (487, "INVITE".to_string())]
    );
    let to_bob: Vec<_> = out.iter().filter(|t| t.destination == bob).collect();
    let Ok(Message::Request(cancel_b)) = Message::parse(&to_bob[0].payload) else { panic!("a CANCEL to bob") };
    assert_eq!(cancel_b.method.as_str(), "CANCEL");
    assert_eq!(
        cancel_b.top_via().unwrap().branch(),
        invite_b.top_via().unwrap().branch(),
        "same branch (RFC 3261 9.1)"
    );

    // bob's 487 to the INVITE is ACKed by the client transaction (RFC 3261 17.1.1.3).
    let mut terminated = Response::to_request(&invite_b, 487, "Request Terminated");
    terminated.headers.set("To", format!("{to};tag=bobtag"));
    let out = b.send_from(bob, &String::from_utf8(terminated.encode()).unwrap());
    assert_eq!(out.len(), 1);
    let Ok(Message::Request(ack)) = Message::parse(&out[0].payload) else { panic!("an ACK to bob") };
    assert_eq!((ack.method.as_str(), ack.cseq().unwrap().seq, out[0].destination), ("ACK", 1, bob));
    assert_eq!(ack.top_via().unwrap().branch(), invite_b.top_via().unwrap().branch());
}

mod hostile {
    use super::*;
    use proptest::prelude::*;

    /// Valid messages of every kind the endpoint handles, to mutate.
    fn seeds() -> Vec<Vec<u8>> {
        let bye = "BYE sip:9196@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKb\r\n\
                   Max-Forwards: 70\r\nFrom: <sip:alice@192.0.2.1>;tag=c1\r\nTo: <sip:9196@192.0.2.1>;tag=x\r\n\
                   Call-ID: c\r\nCSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n";
        vec![
            register("h1", 1, None).replace('\n', "\r\n").into_bytes(),
            invite("9196", "h2", 1, None).into_bytes(),
            bye.as_bytes().to_vec(),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Any sequence of mutated requests and arbitrary RTP: no panic, and
        /// never more answers than requests (no amplification).
        #[test]
        fn mutated_traffic_never_panics_or_amplifies(
            edits in proptest::collection::vec((0usize..3, any::<prop::sample::Index>(), any::<u8>()), 1..40),
            rtp in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..20),
        ) {
            let mut b = Bench::new();
            let seeds = seeds();
            let mut requests = 0usize;
            let mut answers = 0usize;
            for (which, at, byte) in edits {
                let mut msg = seeds[which].clone();
                let i = at.index(msg.len());
                msg[i] = byte;
                b.sip.handle_signalling(b.now, b.phone, &msg);
                requests += 1;
                answers += b.drain().iter().filter(|t| t.socket == SocketId::Listener).count();
            }
            for (i, datagram) in rtp.iter().enumerate() {
                b.sip.handle_media(b.now, 16384 + i as u16, PHONE_RTP.parse().unwrap(), datagram);
            }
            let _ = b.advance(Duration::from_secs(70));
            prop_assert!(answers <= 2 * requests, "{answers} answers to {requests} requests");
        }
    }
}

/// `[sip.gateways.NAME]`: the switch registers upstream, answers the
/// provider's challenge, refreshes, and reports a refusal.
#[test]
fn the_switch_registers_to_a_gateway() {
    let mut s = settings();
    s.gateways.push(switch::config::SipGateway {
        name: "provider".into(),
        host: "198.51.100.5".into(),
        port: 5060,
        username: "4411".into(),
        password: "upstream".into(),
        expires: 300,
        register: true,
    });
    let resolved = ResolvedHosts([("198.51.100.5".to_string(), vec!["198.51.100.5".parse().unwrap()])].into());
    let now = Instant::now();
    let mut sip = SipEndpoint::new(Arc::new(s), &resolved, ChaCha20Rng::seed_from_u64(3), now);
    let provider: SocketAddr = "198.51.100.5:5060".parse().unwrap();
    assert_eq!(sip.poll_timeout(), Some(now), "the first REGISTER goes out at once");
    sip.handle_timeout(now);
    let sent: Vec<Transmit> = std::iter::from_fn(|| sip.poll_transmit()).collect();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].destination, provider);
    let Ok(Message::Request(first)) = Message::parse(&sent[0].payload) else { panic!("a REGISTER") };
    assert_eq!(first.uri.to_string(), "sip:198.51.100.5");
    assert_eq!(first.headers.get("Contact"), Some("<sip:4411@192.0.2.1:5060>"));

    let mut challenge = Response::to_request(&first, 401, "Unauthorized");
    challenge.headers.push("WWW-Authenticate", "Digest realm=\"up\", nonce=\"n1\", algorithm=MD5");
    sip.handle_signalling(now, provider, &challenge.encode());
    let Some(Ok(Message::Request(second))) = sip.poll_transmit().map(|t| Message::parse(&t.payload)) else {
        panic!("a REGISTER with credentials")
    };
    let auth = Authorization::parse(second.headers.get("Authorization").unwrap()).unwrap();
    assert!(auth.verify("REGISTER", "upstream"));
    assert_eq!(second.cseq().unwrap().seq, first.cseq().unwrap().seq + 1);

    let mut ok = Response::to_request(&second, 200, "OK");
    ok.headers.push("Contact", "<sip:4411@192.0.2.1:5060>;expires=240");
    sip.handle_signalling(now, provider, &ok.encode());
    let events: Vec<Event> = std::iter::from_fn(|| sip.poll_event()).collect();
    assert!(events.contains(&Event::SipGatewayRegistered { gateway: "provider".into(), expires: 240 }), "{events:?}");
    assert!(
        text::sip_gateways(&sip.gateways(now)).contains("Registered"),
        "{}",
        text::sip_gateways(&sip.gateways(now))
    );
    // The refresh is due at 5/6 of what was granted (200 s), not before.
    let mut refreshed_at = None;
    while let Some(t) = sip.poll_timeout().filter(|t| t.duration_since(now) <= Duration::from_secs(300)) {
        sip.handle_timeout(t);
        if let Some(sent) = sip.poll_transmit() {
            assert!(
                matches!(Message::parse(&sent.payload), Ok(Message::Request(r)) if r.method.as_str() == "REGISTER")
            );
            refreshed_at = Some(t.duration_since(now));
            break;
        }
    }
    assert_eq!(refreshed_at, Some(Duration::from_secs(200)));
}

/// `originate SIP/gateway/exten`: the INVITE goes to the gateway's proxy, its
/// 407 is answered with the gateway's credentials, the answer's address gets
/// our pattern, and the hold time ends the call with a BYE.
#[test]
fn originate_through_a_gateway_answers_its_challenge_and_holds() {
    let mut s = settings();
    s.gateways.push(switch::config::SipGateway {
        name: "provider".into(),
        host: "198.51.100.5".into(),
        port: 5060,
        username: "4411".into(),
        password: "upstream".into(),
        expires: 300,
        register: true,
    });
    let resolved = ResolvedHosts([("198.51.100.5".to_string(), vec!["198.51.100.5".parse().unwrap()])].into());
    let mut b = Bench::new();
    b.sip = SipEndpoint::new(Arc::new(s), &resolved, ChaCha20Rng::seed_from_u64(5), b.now);
    b.phone = "198.51.100.5:5060".parse().unwrap();
    let _ = b.advance(Duration::from_millis(1)); // the gateway's REGISTER
    let request = switch::iax2::endpoint::Originate {
        dial: "SIP/provider/4412345".into(),
        app: App::Pattern,
        hold: Some(Duration::from_secs(1)),
        calling: (None, None),
    };
    b.sip.originate(b.now, &request).unwrap();
    let out = b.drain();
    let Ok(Message::Request(invite)) = Message::parse(&out[0].payload) else { panic!("an INVITE") };
    assert_eq!((invite.method.as_str(), invite.uri.to_string()), ("INVITE", "sip:4412345@198.51.100.5".to_string()));

    let mut challenge = Response::to_request(&invite, 407, "Proxy Authentication Required");
    let to = challenge.headers.get("To").unwrap().to_string();
    challenge.headers.set("To", format!("{to};tag=p1"));
    challenge.headers.push("Proxy-Authenticate", "Digest realm=\"up\", nonce=\"n2\"");
    let out = b.send(&String::from_utf8(challenge.encode()).unwrap());
    let methods: Vec<String> = out
        .iter()
        .filter_map(|t| match Message::parse(&t.payload) {
            Ok(Message::Request(r)) => Some(r.method.as_str().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(methods, ["ACK", "INVITE"]);
    let Ok(Message::Request(second)) = Message::parse(&out[1].payload) else { panic!() };
    let auth = Authorization::parse(second.headers.get("Proxy-Authorization").unwrap()).unwrap();
    assert!(auth.verify("INVITE", "upstream"));
    assert_eq!(second.cseq().unwrap().seq, invite.cseq().unwrap().seq + 1);

    let mut ok = Response::to_request(&second, 200, "OK");
    ok.headers.set("To", format!("{to};tag=p2"));
    ok.headers.push("Contact", "<sip:4412345@198.51.100.5>");
    ok.headers.push("Content-Type", "application/sdp");
    ok.body =
        b"v=0\r\no=- 1 1 IN IP4 198.51.100.9\r\ns=-\r\nc=IN IP4 198.51.100.9\r\nt=0 0\r\nm=audio 30000 RTP/AVP 0\r\n"
            .to_vec();
    let out = b.send(&String::from_utf8(ok.encode()).unwrap());
    assert!(matches!(Message::parse(&out[0].payload), Ok(Message::Request(r)) if r.method.as_str() == "ACK"));
    let out = b.advance(Duration::from_millis(1100));
    let media = out.iter().filter(|t| is_media(t)).count();
    assert!((49..=51).contains(&media), "{media} pattern frames in the 1 s hold");
    assert!(out.iter().all(|t| !is_media(t) || t.destination == "198.51.100.9:30000".parse().unwrap()));
    let bye = out.iter().find_map(|t| match Message::parse(&t.payload) {
        Ok(Message::Request(r)) if r.method.as_str() == "BYE" => Some(r),
        _ => None,
    });
    assert_eq!(bye.map(|r| r.to().unwrap().tag().map(str::to_string)), Some(Some("p2".into())));
    assert!(b.events().iter().any(|e| matches!(e, Event::SipCallEnded { cause, .. } if cause == "hold time over")));
}

// ---- media ports, strict RTP and NAT (issue 9) ----

/// The public address of a NAT with phones behind it on 10.0.0.0/8.
const NAT_IP: &str = "203.0.113.7";

/// An INVITE from `user` whose Via, Contact and SDP name its inside address
/// `lan` (the SDP's audio port `sdp_port`), as a phone behind NAT writes it.
fn invite_from(
    user: &str,
    lan: &str,
    sdp_port: u16,
    exten: &str,
    branch: &str,
    cseq: u32,
    auth: Option<&str>,
) -> String {
    let text = invite(exten, branch, cseq, auth)
        .replace("alice@", &format!("{user}@"))
        .replace("192.0.2.10:5060", &format!("{lan}:5060"))
        .replace("IN IP4 192.0.2.10", &format!("IN IP4 {lan}"))
        .replace("m=audio 40000", &format!("m=audio {sdp_port}"))
        .replace("tag=c1", &format!("tag=c1{user}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let head: Vec<String> =
        head.split("\r\n")
            .map(|l| {
                if l.starts_with("Content-Length:") {
                    format!("Content-Length: {}", body.len())
                } else {
                    l.to_string()
                }
            })
            .collect();
    format!("{}\r\n\r\n{body}", head.join("\r\n"))
}

fn password(user: &str) -> &'static str {
    if user == "alice" {
        "wonderland"
    } else {
        "builder"
    }
}

impl Bench {
    /// An authenticated INVITE from `user` at `from`; returns what came back.
    fn call_from(
        &mut self,
        from: SocketAddr,
        user: &str,
        lan: &str,
        sdp_port: u16,
        exten: &str,
        branch: &str,
    ) -> Vec<Transmit> {
        let first = invite_from(user, lan, sdp_port, exten, &format!("{branch}x"), 1, None);
        let challenge =
            responses(&self.send_from(from, &first))[0].headers.get("Proxy-Authenticate").unwrap().to_string();
        let auth = answer_as(user, &challenge, "INVITE", &format!("sip:{exten}@192.0.2.1"), password(user));
        self.send_from(from, &invite_from(user, lan, sdp_port, exten, branch, 2, Some(&auth)))
    }

    /// The audio port of the 200 OK among `out`.
    fn answered_port(out: &[Transmit]) -> u16 {
        let ok = responses(out).into_iter().find(|r| r.status == 200).expect("a 200 OK");
        sdp_port(&ok.body)
    }

    fn media_sockets(&mut self) -> Vec<SocketRequest> {
        std::mem::take(&mut self.sockets)
    }
}

fn bench_with(f: impl FnOnce(&mut SipSettings)) -> Bench {
    let mut s = settings();
    f(&mut s);
    let mut b = Bench::new();
    let plan = {
        let mut plan = Dialplan::default();
        plan.add("default", "9196", App::Echo);
        plan.add("default", "9664", App::Music);
        plan.add("default", "bob", App::Dial { target: "SIP/bob".into() });
        plan
    };
    b.sip = SipEndpoint::new(Arc::new(s), &ResolvedHosts::default(), ChaCha20Rng::seed_from_u64(11), b.now);
    b.sip.set_dialplan(plan);
    b
}

#[test]
fn an_exhausted_port_range_refuses_calls_with_503_and_ports_rest_after_a_call() {
    // One pair: 30000 (RTP) and 30001 (RTCP).
    let mut b = bench_with(|s| {
        s.rtp_ports = 30000..=30001;
        s.max_calls = 10;
    });
    let phone = b.phone;
    let out = b.call_from(phone, "alice", "192.0.2.10", 40000, "9664", "p1");
    assert_eq!(Bench::answered_port(&out), 30000);
    assert_eq!(b.media_sockets(), [SocketRequest::Open(30000)]);
    let out = b.call_from(phone, "alice", "192.0.2.10", 40002, "9664", "p2");
    assert_eq!(responses(&out).iter().map(|r| r.status).collect::<Vec<_>>(), [100, 503]);
    assert!(b.events().iter().any(|e| matches!(e, Event::SipCallRejected { status: 503, reason, .. }
        if reason == "no free RTP port in rtp_ports 30000-30001")));
    assert!(b.media_sockets().is_empty());

    // The first call ends (hangup all): its port closes but rests before reuse,
    // so its late RTP cannot reach the next call.
    assert_eq!(b.sip.hangup_all(b.now), 1);
    let _bye = b.drain();
    assert_eq!(b.media_sockets(), [SocketRequest::Close(30000)]);
    let out = b.call_from(phone, "alice", "192.0.2.10", 40004, "9664", "p3");
    assert_eq!(responses(&out).last().map(|r| r.status), Some(503), "still resting");
    b.sip.handle_media(b.now, 30000, PHONE_RTP.parse().unwrap(), &rtp(1, 1));
    assert!(b.drain().iter().all(|t| !is_media(t)), "late RTP of the old call goes nowhere");
    // With no other pair, it is reused after the least rest, and that is counted.
    let _ = b.advance(Duration::from_millis(500));
    let out = b.call_from(phone, "alice", "192.0.2.10", 40006, "9664", "p4");
    assert_eq!(Bench::answered_port(&out), 30000, "after the least rest");
    let ports = b.sip.stats_view().rtp_ports;
    assert_eq!((ports.pairs, ports.in_use, ports.resting, ports.reused_early), (1, 1, 0, 1));
}

#[test]
fn a_port_the_host_will_not_bind_fails_its_call_before_the_answer_and_is_not_offered_again() {
    let mut b = bench_with(|s| {
        s.rtp_ports = 30000..=30003;
        s.max_calls = 10;
    });
    let phone = b.phone;
    b.binds_fail = true;
    let out = b.call_from(phone, "alice", "192.0.2.10", 40000, "9196", "f1");
    assert_eq!(responses(&out).iter().map(|r| r.status).collect::<Vec<_>>(), [100, 503], "no 200 names a port we lack");
    assert!(out.iter().all(|t| !matches!(Message::parse(&t.payload), Ok(Message::Request(_)))), "and so no BYE");
    let [SocketRequest::Open(port)] = b.media_sockets()[..] else { panic!("one pair asked for") };
    let events = b.events();
    assert!(events.contains(&Event::RtpPortUnavailable { port, reason: "address in use".into() }), "{events:?}");
    assert!(
        events.iter().any(
            |e| matches!(e, Event::SipCallRejected { status: 503, reason, .. } if reason == "RTP port unavailable")
        ),
        "{events:?}"
    );
    b.binds_fail = false;
    let _ = b.advance(Duration::from_secs(60));
    assert!(b.media_sockets().is_empty(), "nothing to close: it never opened");
    for n in 0..3 {
        let out = b.call_from(phone, "alice", "192.0.2.10", 40010 + n * 2, "9664", &format!("g{n}"));
        let statuses: Vec<u16> = responses(&out).iter().map(|r| r.status).collect();
        if n == 0 {
            assert_ne!(Bench::answered_port(&out), port);
        } else {
            assert_eq!(statuses.last(), Some(&503), "one usable pair left, and it is taken");
        }
    }
}

/// RTP bleed: a sprayer hitting the call's port before the phone's first
/// packet takes nothing; the phone behind NAT is learnt from its signalling
/// IP; the sprayer's packets are summarised once at the end.
#[test]
fn strict_rtp_learns_the_phone_and_refuses_a_sprayer() {
    let mut b = bench_with(|_| {});
    let source: SocketAddr = format!("{NAT_IP}:34567").parse().unwrap();
    let out = b.call_from(source, "alice", "10.0.0.5", 40000, "9196", "s1");
    let port = Bench::answered_port(&out);
    let sprayer: SocketAddr = "198.51.100.66:5004".parse().unwrap();
    for seq in 0..20u16 {
        b.sip.handle_media(b.now, port, sprayer, &rtp(seq, 0x5ba7));
    }
    assert!(b.drain().is_empty(), "nothing is echoed to a sprayer");
    // A sprayer behind the phone's own NAT, random sequence and SSRC: not learnt either.
    let neighbour: SocketAddr = format!("{NAT_IP}:9999").parse().unwrap();
    let mut x: u32 = 1;
    for _ in 0..50 {
        x = x.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
        b.sip.handle_media(b.now, port, neighbour, &rtp((x >> 16) as u16, x));
    }
    assert!(b.drain().is_empty());
    // The phone's RTP leaves the NAT from another port than the SDP's.
    let phone_rtp: SocketAddr = format!("{NAT_IP}:61000").parse().unwrap();
    for seq in 0..6u16 {
        b.sip.handle_media(b.now, port, phone_rtp, &rtp(500 + seq, 0xfeed));
    }
    let echoed = b.drain();
    assert_eq!(echoed.len(), 3, "the 4th sequential packet learns the source; it and the rest are echoed");
    assert!(echoed.iter().all(|t| t.destination == phone_rtp && t.socket == SocketId::Media(port)));
    assert!(b.events().contains(&Event::RtpSourceLearned { call: 1, source: phone_rtp }));
    // Once learnt, even a perfect run from the sprayer is refused.
    for seq in 0..10u16 {
        b.sip.handle_media(b.now, port, sprayer, &rtp(seq + 100, 0x5ba7));
    }
    assert!(b.drain().is_empty());
    assert_eq!(b.sip.hangup_all(b.now), 1);
    let refused: Vec<(SocketAddr, u64)> = b
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::RtpSourceRefused { call: 1, source, packets } => Some((source, packets)),
            _ => None,
        })
        .collect();
    assert_eq!(refused, [(sprayer, 30), (neighbour, 50)], "one summary per source, none for the phone");
}

#[test]
fn after_the_learning_window_only_the_signalled_address_plays() {
    let mut b = bench_with(|_| {});
    let source: SocketAddr = format!("{NAT_IP}:34567").parse().unwrap();
    let out = b.call_from(source, "alice", "10.0.0.5", 40000, "9196", "w1");
    let port = Bench::answered_port(&out);
    let _ = b.advance(Duration::from_secs(6));
    let _ = b.drain();
    let late: SocketAddr = format!("{NAT_IP}:61000").parse().unwrap();
    for seq in 0..10u16 {
        b.sip.handle_media(b.now, port, late, &rtp(seq, 7));
    }
    assert!(b.drain().is_empty(), "no learning after the window");
    // The SDP's port at the signalling IP (fix_nated_sdp) still plays.
    let signalled: SocketAddr = format!("{NAT_IP}:40000").parse().unwrap();
    b.sip.handle_media(b.now, port, signalled, &rtp(20, 7));
    assert_eq!(b.drain().iter().map(|t| t.destination).collect::<Vec<_>>(), [signalled]);
}

/// Two phones behind one NAT (one public IP, different ports) call echo at
/// once: each hears only itself.
#[test]
fn two_phones_behind_one_nat_each_get_their_own_echo() {
    let mut b = bench_with(|_| {});
    let alice: SocketAddr = format!("{NAT_IP}:5060").parse().unwrap();
    let bob: SocketAddr = format!("{NAT_IP}:5062").parse().unwrap();
    let pa = Bench::answered_port(&b.call_from(alice, "alice", "10.0.0.5", 40000, "9196", "n1"));
    let pb = Bench::answered_port(&b.call_from(bob, "bob", "10.0.0.6", 40000, "9196", "n2"));
    assert_ne!(pa, pb);
    // Before any RTP, our audio goes to the NAT's address at each SDP's port.
    let (alice_rtp, bob_rtp): (SocketAddr, SocketAddr) =
        (format!("{NAT_IP}:40001").parse().unwrap(), format!("{NAT_IP}:40003").parse().unwrap());
    for seq in 0..8u16 {
        b.sip.handle_media(b.now, pa, alice_rtp, &rtp(seq, 0xa));
        b.sip.handle_media(b.now, pb, bob_rtp, &rtp(seq + 1000, 0xb));
    }
    let out = b.drain();
    let to = |port: u16| out.iter().filter(move |t| t.socket == SocketId::Media(port)).map(|t| t.destination);
    assert_eq!(to(pa).count(), 5);
    assert!(to(pa).all(|d| d == alice_rtp), "alice's echo goes to alice only");
    assert_eq!(to(pb).count(), 5);
    assert!(to(pb).all(|d| d == bob_rtp), "bob's echo goes to bob only");
}

/// Kamailio's nathelper on REGISTER: rport/received in the answer, the
/// source kept as the binding's reach address, INVITEs sent there with the
/// Contact as Request-URI, OPTIONS keepalives every `nat_keepalive`, and no
/// unregistration for keepalives unanswered.
#[test]
fn a_phone_behind_nat_is_registered_at_its_source_and_kept_alive() {
    let mut b = bench_with(|_| {});
    let source: SocketAddr = format!("{NAT_IP}:34567").parse().unwrap();
    let reg =
        |branch: &str, cseq: u32, auth: Option<&str>| register(branch, cseq, auth).replace("192.0.2.10", "10.0.0.5");
    let out = responses(&b.send_from(source, &reg("r1", 1, None)));
    let via = out[0].top_via().unwrap();
    assert_eq!((via.received(), via.rport()), (Some(NAT_IP), Some(Some(34567))), "RFC 3581");
    let challenge = out[0].headers.get("WWW-Authenticate").unwrap().to_string();
    let auth = answer(&challenge, "REGISTER", "sip:192.0.2.1", "wonderland");
    let out = b.send_from(source, &reg("r2", 2, Some(&auth)));
    assert_eq!((responses(&out)[0].status, out[0].destination), (200, source), "answered at the source");
    let events = b.events();
    assert!(events.contains(&Event::SipNatDetected {
        user: "alice".into(),
        contact: "sip:alice@10.0.0.5:5060".into(),
        source
    }));
    // A refresh from the same mapping is not news.
    let out = responses(&b.send_from(source, &reg("r3", 3, None)));
    let auth = answer(out[0].headers.get("WWW-Authenticate").unwrap(), "REGISTER", "sip:192.0.2.1", "wonderland");
    b.send_from(source, &reg("r4", 4, Some(&auth)));
    assert!(!b.events().iter().any(|e| matches!(e, Event::SipNatDetected { .. })));

    // Keepalives: one OPTIONS every 20 s to the source, none answered.
    let mut pings = Vec::new();
    let start = b.now;
    for _ in 0..110 {
        for t in b.advance(Duration::from_secs(1)) {
            if let Ok(Message::Request(r)) = Message::parse(&t.payload) {
                assert_eq!((r.method.as_str(), t.destination, t.socket), ("OPTIONS", source, SocketId::Listener));
                assert_eq!(r.uri.to_string(), "sip:alice@10.0.0.5:5060");
                pings.push(b.now.duration_since(start).as_secs());
            }
        }
    }
    assert_eq!(pings, [20, 40, 60, 80, 100]);
    assert!(
        !b.events().iter().any(|e| matches!(e, Event::SipUnregistered { .. })),
        "unanswered keepalives do not unregister"
    );

    // bob calls alice: the INVITE goes to the NAT's mapping, Request-URI the Contact.
    let bob_src: SocketAddr = "192.0.2.11:5060".parse().unwrap();
    let mut plan = Dialplan::default();
    plan.add("default", "2000", App::Dial { target: "SIP/alice".into() });
    b.sip.set_dialplan(plan);
    let out = b.call_from(bob_src, "bob", "192.0.2.11", 41000, "2000", "b1");
    let to_alice = out.iter().find(|t| t.destination == source).unwrap_or_else(|| {
        panic!(
            "an INVITE to alice's mapping: {:?} {:?}",
            out.iter()
                .map(|t| (t.destination, String::from_utf8_lossy(&t.payload).lines().next().map(str::to_string)))
                .collect::<Vec<_>>(),
            b.events()
        )
    });
    let Ok(Message::Request(inv)) = Message::parse(&to_alice.payload) else { panic!("an INVITE") };
    assert_eq!((inv.method.as_str(), inv.uri.to_string()), ("INVITE", "sip:alice@10.0.0.5:5060".to_string()));
    // Her answer names her inside address; our RTP goes to the NAT at its port.
    let mut ok = Response::to_request(&inv, 200, "OK");
    let to = ok.headers.get("To").unwrap().to_string();
    ok.headers.set("To", format!("{to};tag=at"));
    ok.headers.push("Contact", "<sip:alice@10.0.0.5:5060>");
    ok.headers.push("Content-Type", "application/sdp");
    ok.body =
        b"v=0\r\no=- 2 2 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 42000 RTP/AVP 8\r\n".to_vec();
    let out = b.send_from(source, &String::from_utf8(ok.encode()).unwrap());
    let to_bob: Vec<Transmit> = out.into_iter().filter(|t| t.destination == bob_src).collect();
    let caller_port = Bench::answered_port(&to_bob);
    b.sip.handle_media(b.now, caller_port, "192.0.2.11:41000".parse().unwrap(), &rtp(1, 9));
    let relayed = b.drain();
    assert_eq!(relayed.iter().map(|t| t.destination).collect::<Vec<_>>(), [format!("{NAT_IP}:42000").parse().unwrap()]);
}

#[test]
fn a_phone_on_a_public_address_is_not_taken_for_natted() {
    let mut b = Bench::new();
    let out = responses(&b.send(&register("p1", 1, None)));
    let via = out[0].top_via().unwrap();
    assert_eq!(via.received(), None, "Via sent-by is the source: no received=");
    let auth = answer(out[0].headers.get("WWW-Authenticate").unwrap(), "REGISTER", "sip:192.0.2.1", "wonderland");
    b.send(&register("p2", 2, Some(&auth)));
    assert!(!b.events().iter().any(|e| matches!(e, Event::SipNatDetected { .. })));
    assert!(b.advance(Duration::from_secs(100)).is_empty(), "no keepalives");
}

// ---- overload: a registration storm must not block calls (issue 9) ----

/// Users of the storm, each with its own address, credentials and Call-ID.
const STORM_USERS: usize = 100;

/// A REGISTER storm at 10,000/s of simulated time with an INVITE (answered,
/// ACKed, hung up half a second later) every second, against a switch with
/// `budget` bytes of transaction memory.
struct Storm {
    b: Bench,
    budget: usize,
    register_ok: usize,
    register_503: usize,
    retry_after: Vec<u32>,
    invites_ok: usize,
    invites_refused: Vec<u16>,
    peak_bytes: usize,
    /// The first accepted REGISTER and its answer, to retransmit.
    first: Option<(SocketAddr, String, Vec<u8>)>,
    /// REGISTERs sent so far (each has its own branch and the next CSeq).
    sent: usize,
    /// Each user's challenge and alice's for INVITE, one each: stateless
    /// nonces stay valid for minutes; every use counts on (nc), as a client's.
    challenges: Vec<String>,
    invite_challenge: String,
    /// Uses of each nonce so far (users, then alice's INVITE last).
    ncs: Vec<u32>,
}

fn storm_settings(budget: usize) -> SipSettings {
    let mut s = settings();
    s.transaction_memory = budget;
    s.users.extend((0..STORM_USERS).map(|i| SipUser {
        name: format!("u{i}"),
        password: format!("pw{i}"),
        context: None,
    }));
    s
}

fn storm_register(i: usize, auth: &str) -> String {
    let u = i % STORM_USERS;
    let cseq = i / STORM_USERS + 1;
    format!(
        "REGISTER sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.{}.{}:5060;branch=z9hG4bKs{i};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:u{u}@192.0.2.1>;tag=t{u}\r\nTo: <sip:u{u}@192.0.2.1>\r\n\
         Call-ID: storm-{u}@phone\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:u{u}@10.0.{}.{}:5060>\r\n\
         Expires: 600\r\nAuthorization: {auth}\r\nContent-Length: 0\r\n\r\n",
        u / 250,
        u % 250 + 1,
        u / 250,
        u % 250 + 1
    )
}

fn status_of(payload: &[u8]) -> u16 {
    std::str::from_utf8(payload.get(8..11).unwrap_or_default()).ok().and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl Storm {
    fn new(budget: usize) -> Storm {
        let mut b = Bench::new();
        b.sip = SipEndpoint::new(
            Arc::new(storm_settings(budget)),
            &ResolvedHosts::default(),
            ChaCha20Rng::seed_from_u64(7),
            b.now,
        );
        let mut plan = Dialplan::default();
        plan.add("default", "9196", App::Echo);
        b.sip.set_dialplan(plan);
        Storm {
            b,
            budget,
            register_ok: 0,
            register_503: 0,
            retry_after: Vec::new(),
            invites_ok: 0,
            invites_refused: Vec::new(),
            peak_bytes: 0,
            first: None,
            sent: 0,
            challenges: Vec::new(),
            invite_challenge: String::new(),
            ncs: Vec::new(),
        }
    }

    /// Moves the clock to `t`, running every timer due on the way.
    fn until(&mut self, t: Instant) {
        let out = self.b.advance(t.saturating_duration_since(self.b.now));
        self.check(&out);
    }

    fn check(&mut self, out: &[Transmit]) {
        let usage = self.b.sip.transaction_usage();
        assert!(usage.bytes <= self.budget, "{} bytes held over a budget of {}", usage.bytes, self.budget);
        self.peak_bytes = self.peak_bytes.max(usage.bytes);
        // Only our BYE-less echo calls and REGISTERs: nothing else is sent.
        assert!(out.iter().all(|t| t.socket == SocketId::Listener || t.destination == PHONE_RTP.parse().unwrap()));
    }

    fn run(&mut self, registers: usize, rate: u32) {
        let t0 = self.b.now;
        let step = Duration::from_secs(1) / rate;
        if self.challenges.is_empty() {
            self.challenge();
        }
        let mut pending_bye: Option<(Instant, String)> = None;
        for n in 0..registers {
            let at = t0 + step * n as u32;
            let i = self.sent + n;
            self.until(at);
            if let Some((_, bye)) = pending_bye.take_if(|(when, _)| *when <= at) {
                let out = responses(&self.b.send(&bye));
                assert_eq!(out.iter().map(|r| r.status).collect::<Vec<_>>(), [200], "BYE of a storm call");
            }
            if n % rate as usize == 0 {
                let auth = self.next_auth(STORM_USERS);
                pending_bye = self.call(i, &auth).map(|bye| (at + Duration::from_millis(500), bye));
            }
            let u = i % STORM_USERS;
            let from: SocketAddr = format!("10.0.{}.{}:5060", u / 250, u % 250 + 1).parse().unwrap();
            let text = storm_register(i, &self.next_auth(u));
            let out = self.b.send_from(from, &text);
            self.check(&out);
            assert_eq!(out.len(), 1, "one answer per REGISTER");
            match status_of(&out[0].payload) {
                200 => {
                    self.register_ok += 1;
                    if self.first.is_none() {
                        self.first = Some((from, text, out[0].payload.clone()));
                    }
                }
                503 => {
                    self.register_503 += 1;
                    let r = responses(&out).remove(0);
                    self.retry_after.push(r.headers.get("Retry-After").unwrap().parse().unwrap());
                }
                s => panic!("REGISTER {i} got {s}"),
            }
        }
        if let Some((_, bye)) = pending_bye {
            let out = responses(&self.b.send(&bye));
            assert_eq!(out.iter().map(|r| r.status).collect::<Vec<_>>(), [200]);
        }
        self.sent += registers;
    }

    fn challenge(&mut self) {
        self.challenges = (0..STORM_USERS)
            .map(|u| {
                let from: SocketAddr = format!("10.0.{}.{}:5060", u / 250, u % 250 + 1).parse().unwrap();
                let text = storm_register(u, "x").replace("Authorization: x\r\n", "");
                let out = self.b.send_from(from, &text.replace(";branch=z9hG4bKs", ";branch=z9hG4bKc"));
                responses(&out)[0].headers.get("WWW-Authenticate").unwrap().to_string()
            })
            .collect();
        let out = responses(&self.b.send(&invite("9196", "storm-c", 1, None)));
        self.invite_challenge = out[0].headers.get("Proxy-Authenticate").unwrap().to_string();
        self.ncs = vec![0; STORM_USERS + 1];
        self.b.events();
    }

    /// The next credentials of storm user `u` (`STORM_USERS`: alice's INVITE).
    fn next_auth(&mut self, u: usize) -> String {
        self.ncs[u] += 1;
        if u == STORM_USERS {
            answer_nc("alice", &self.invite_challenge, "INVITE", "sip:9196@192.0.2.1", "wonderland", self.ncs[u])
        } else {
            let (user, password) = (format!("u{u}"), format!("pw{u}"));
            answer_nc(&user, &self.challenges[u], "REGISTER", "sip:192.0.2.1", &password, self.ncs[u])
        }
    }

    /// An authenticated INVITE to echo; on a 200 it is ACKed and the BYE to
    /// send later is returned.
    fn call(&mut self, i: usize, auth: &str) -> Option<String> {
        let branch = format!("storm-i{i}");
        let out = self.b.send(&invite("9196", &branch, 2, Some(auth)));
        self.check(&out);
        let statuses: Vec<u16> = responses(&out).iter().map(|r| r.status).collect();
        if statuses != [100, 200] {
            self.invites_refused.push(*statuses.last().unwrap_or(&0));
            return None;
        }
        self.invites_ok += 1;
        let ok = responses(&out).remove(1);
        let to_tag = ok.to().unwrap().tag().unwrap().to_string();
        let dialog = format!(
            "From: \"Alice\" <sip:alice@192.0.2.1>;tag=c1\nTo: <sip:9196@192.0.2.1>;tag={to_tag}\n\
             Call-ID: call-{branch}@phone\n"
        );
        let ack = format!(
            "ACK sip:9196@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKa{i}\n\
             Max-Forwards: 70\n{dialog}CSeq: 2 ACK\nContent-Length: 0\n\n"
        );
        assert!(self.b.send(&ack).is_empty());
        Some(format!(
            "BYE sip:9196@192.0.2.1 SIP/2.0\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKb{i}\n\
             Max-Forwards: 70\n{dialog}CSeq: 3 BYE\nContent-Length: 0\n\n"
        ))
    }

    fn overload_events(&mut self) -> Vec<Event> {
        self.b
            .events()
            .into_iter()
            .filter(|e| matches!(e, Event::SipOverloadStarted { .. } | Event::SipOverloadEnded { .. }))
            .collect()
    }
}

/// With the default budget a storm of 200,000 authenticated REGISTERs at
/// 10,000/s is served in full: completed transactions older than T2 are
/// shed to make room (one overload period says so), none gets 503, and
/// every call in the middle of it is answered.
#[test]
fn a_registration_storm_within_budget_refuses_nothing_and_calls_go_through() {
    let budget = 64 << 20;
    let mut s = Storm::new(budget);
    s.run(200_000, 10_000);
    assert_eq!((s.register_ok, s.register_503), (200_000, 0));
    assert_eq!((s.invites_ok, s.invites_refused.clone()), (20, vec![]));
    let during = s.overload_events();
    let t = s.b.now;
    s.until(t + Duration::from_secs(40));
    let after = s.overload_events();
    let usage = s.b.sip.transaction_usage();
    assert_eq!((usage.transactions, usage.bytes), (0, 0), "everything expired and nothing leaked");
    // 10,000/s for 32 s would need about 250 MB: the window shrinks instead.
    assert!(s.peak_bytes > budget / 2, "peak {}", s.peak_bytes);
    match (during.as_slice(), after.as_slice()) {
        (
            [Event::SipOverloadStarted { reason, .. }],
            [Event::SipOverloadEnded { refused_register, refused_invite, shed, .. }],
        ) => {
            assert!(reason.contains("shedding"), "{reason}");
            assert_eq!((*refused_register, *refused_invite), (0, 0));
            assert_eq!(*shed, usage.shed);
            assert!(*shed > 50_000, "{shed}");
            println!("default budget: {during:?} {after:?}, peak {} bytes", s.peak_bytes);
        }
        other => panic!("expected one overload period, got {other:?}"),
    }
}

/// At a storm's rate but within what the budget holds for 32 s, nothing is
/// shed and no overload is reported.
#[test]
fn a_storm_the_budget_holds_is_not_an_overload() {
    let mut s = Storm::new(64 << 20);
    s.run(20_000, 800);
    assert_eq!((s.register_ok, s.register_503, s.invites_ok), (20_000, 0, 25));
    let t = s.b.now;
    s.until(t + Duration::from_secs(40));
    assert_eq!(s.overload_events(), vec![]);
    assert_eq!(s.b.sip.transaction_usage().shed, 0);
}

/// A tiny budget: REGISTERs get 503 with a spread Retry-After, calls keep
/// being answered, the young completed transactions keep absorbing
/// retransmissions, and the period is reported once, with its counts.
#[test]
fn a_tiny_budget_refuses_registers_but_not_calls() {
    let budget = 256 << 10;
    let mut s = Storm::new(budget);
    s.run(200_000, 10_000);
    assert_eq!((s.invites_ok, s.invites_refused.clone()), (20, vec![]), "every INVITE is answered");
    assert!(s.register_503 > 150_000 && s.register_ok > 500, "{} refused, {} served", s.register_503, s.register_ok);
    let spread: std::collections::BTreeSet<u32> = s.retry_after.iter().copied().collect();
    assert!(spread.iter().all(|r| (10..=20).contains(r)) && spread.len() > 5, "{spread:?}");
    let during = s.overload_events();
    let t = s.b.now;
    s.until(t + Duration::from_secs(40));
    let after = s.overload_events();
    let usage = s.b.sip.transaction_usage();
    match (during.as_slice(), after.as_slice()) {
        (
            [Event::SipOverloadStarted { transactions, bytes, .. }],
            [Event::SipOverloadEnded { refused_register, refused_invite, shed, duration_ms }],
        ) => {
            assert!(*transactions > 0 && *bytes as usize <= budget);
            assert_eq!(*refused_register as usize, s.register_503);
            assert_eq!(*refused_invite, 0);
            assert_eq!(*shed, usage.shed);
            assert!((20_000..30_000).contains(duration_ms), "{duration_ms} ms: the storm's 20 s and the 5 s hold");
            println!(
                "tiny budget: {} REGISTERs served, {during:?} {after:?}, peak {} bytes",
                s.register_ok, s.peak_bytes
            );
        }
        other => panic!("expected one overload period, got {other:?}"),
    }
}

/// Under the same tiny budget, a REGISTER retransmitted a second after its
/// answer still gets that answer from its completed transaction: the storm
/// may only shed what is older than T2.
#[test]
fn completed_transactions_within_budget_absorb_retransmissions_during_a_storm() {
    let mut s = Storm::new(256 << 10);
    s.run(12_000, 10_000);
    assert!(s.register_503 > 0, "the storm is refused by now");
    let (from, text, answer) = s.first.clone().unwrap();
    // The first REGISTER completed at 0 s, 1.2 s ago.
    s.b.events();
    let out = s.b.send_from(from, &text);
    assert_eq!(out.iter().map(|t| t.payload.clone()).collect::<Vec<_>>(), vec![answer], "same bytes");
    assert!(!s.b.events().iter().any(|e| matches!(e, Event::SipRegistered { .. })), "absorbed, not processed again");
    // Once older than T2 it may be shed; processed again, the registrar's
    // Call-ID/CSeq ordering refuses it and keeps the binding as it was.
    s.run(50_000, 10_000);
    let out = s.b.send_from(from, &text);
    assert!(matches!(status_of(&out[0].payload), 500 | 503), "{}", status_of(&out[0].payload));
}

/// Only when calls cannot get state either is an INVITE refused, with 503
/// and Retry-After, and that is counted too.
#[test]
fn an_invite_is_refused_only_when_calls_cannot_get_state() {
    let mut s = Storm::new(1024);
    s.run(100, 100);
    assert_eq!(s.invites_refused, vec![503]);
    assert_eq!(s.register_ok, 0);
    let t = s.b.now;
    s.until(t + Duration::from_secs(10));
    let refused = s.overload_events().into_iter().find_map(|e| match e {
        Event::SipOverloadEnded { refused_invite, refused_register, .. } => Some((refused_invite, refused_register)),
        _ => None,
    });
    assert_eq!(refused, Some((1, 100)));
}

/// Two storms ten seconds apart are two overload periods, each reported by
/// one start and one end event, whose counts add up to what was refused.
#[test]
fn two_storms_apart_are_two_overload_periods() {
    let mut s = Storm::new(256 << 10);
    s.run(20_000, 10_000);
    let t = s.b.now;
    s.until(t + Duration::from_secs(10));
    s.run(20_000, 10_000);
    let t = s.b.now;
    s.until(t + Duration::from_secs(10));
    let events = s.overload_events();
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["sip_overload_started", "sip_overload_ended", "sip_overload_started", "sip_overload_ended"]);
    let refused: u64 = events
        .iter()
        .map(|e| match e {
            Event::SipOverloadEnded { refused_register, .. } => *refused_register,
            _ => 0,
        })
        .sum();
    assert_eq!(refused as usize, s.register_503);
    assert!(s.invites_refused.is_empty(), "{:?}", s.invites_refused);
}

/// A challenge for a REGISTER sent from `from`, and the 403 or 200 of answering it with `password`.
fn try_password(b: &mut Bench, from: SocketAddr, n: u32, user: &str, password: &str) -> Vec<u16> {
    let reg = |branch: String, cseq: u32, auth: Option<&str>| {
        register(&branch, cseq, auth).replace("alice@", &format!("{user}@"))
    };
    let out = responses(&b.send_from(from, &reg(format!("c{n}"), 2 * n, None)));
    let Some(challenge) = out.first().and_then(|r| r.headers.get("WWW-Authenticate")).map(str::to_string) else {
        return out.iter().map(|r| r.status).collect();
    };
    let auth = answer_as(user, &challenge, "REGISTER", "sip:192.0.2.1", password);
    let second = responses(&b.send_from(from, &reg(format!("a{n}"), 2 * n + 1, Some(&auth))));
    out.iter().chain(&second).map(|r| r.status).collect()
}

fn guard_events(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AuthThrottled { scope, user, failures, for_ms, .. } => {
                Some(format!("throttled {scope} {user} {failures} {for_ms}"))
            }
            Event::SourceBanned { source, failures, for_ms, .. } => {
                Some(format!("banned {source} {failures} {for_ms}"))
            }
            Event::SourceUnbanned { source, reason, .. } => Some(format!("unbanned {source} {reason}")),
            _ => None,
        })
        .collect()
}

#[test]
fn a_password_guesser_is_silenced_then_banned_and_the_ban_ends() {
    let mut b = Bench::new();
    let cracker: SocketAddr = "198.51.100.66:5060".parse().unwrap();
    for n in 1..=4 {
        assert_eq!(try_password(&mut b, cracker, n, "alice", &format!("{n:04}")), [401, 403]);
    }
    // The 5th failure buys a second of silence: even a plain challenge goes unanswered.
    assert_eq!(try_password(&mut b, cracker, 5, "alice", "0005"), [401, 403]);
    // Both counts reach the threshold: the address and the name it guesses for.
    assert_eq!(guard_events(&b.events()), ["throttled source alice 5 1000", "throttled user alice 5 1000"]);
    assert_eq!(try_password(&mut b, cracker, 6, "alice", "0006"), Vec::<u16>::new());
    b.advance(Duration::from_secs(1));
    assert_eq!(try_password(&mut b, cracker, 7, "alice", "0007"), [401, 403]);
    // Guesses spread over 10 s of silences (2+4+8 s) reach the ban at the 10th failure.
    let mut n = 8;
    let mut answered = 6;
    while answered < 10 {
        b.advance(Duration::from_secs(1));
        if try_password(&mut b, cracker, n, "alice", &format!("{n:04}")) == [401, 403] {
            answered += 1;
        }
        n += 1;
    }
    let events = guard_events(&b.events());
    assert!(
        events.ends_with(&["banned 198.51.100.66 10 600000".into(), "throttled user alice 10 32000".into()]),
        "{events:?}"
    );
    // Banned: nothing at all is answered, not even the right password.
    assert_eq!(try_password(&mut b, cracker, 100, "alice", "wonderland"), Vec::<u16>::new());
    let stats = b.sip.stats().dropped.clone();
    assert!(stats.get("source banned after failed authentication").is_some_and(|n| *n >= 1), "{stats:?}");
    assert!(text::bans(&b.sip.bans(b.now)).starts_with("198.51.100.66"), "{}", text::bans(&b.sip.bans(b.now)));
    // Other addresses and users are untouched.
    assert_eq!(try_password(&mut b, PHONE.parse().unwrap(), 200, "bob", "builder"), [401, 200]);
    b.advance(Duration::from_secs(600));
    assert_eq!(guard_events(&b.events()), ["unbanned 198.51.100.66 expired"]);
    assert_eq!(try_password(&mut b, cracker, 101, "alice", "wonderland"), [401, 200]);
}

#[test]
fn a_guess_spread_over_addresses_throttles_the_user_but_not_its_registered_phone() {
    let mut b = Bench::new();
    let phone: SocketAddr = PHONE.parse().unwrap();
    assert_eq!(try_password(&mut b, phone, 1, "alice", "wonderland"), [401, 200]);
    for n in 1..=5u8 {
        let from = SocketAddr::from(([198, 51, 100, n], 5060));
        assert_eq!(try_password(&mut b, from, u32::from(n) + 10, "alice", "guess"), [401, 403]);
    }
    assert_eq!(guard_events(&b.events()), ["throttled user alice 5 1000"]);
    // From a sixth address even the right password gets a challenge, then silence.
    let sixth: SocketAddr = "198.51.100.6:5060".parse().unwrap();
    assert_eq!(try_password(&mut b, sixth, 30, "alice", "wonderland"), [401]);
    // The phone, registered from its address, refreshes as usual; bob is not concerned.
    assert_eq!(try_password(&mut b, phone, 31, "alice", "wonderland"), [401, 200]);
    assert_eq!(try_password(&mut b, sixth, 32, "bob", "builder"), [401, 200]);
    b.advance(Duration::from_secs(1));
    assert_eq!(try_password(&mut b, sixth, 33, "alice", "wonderland"), [401, 200]);
}

#[test]
fn credentials_replayed_from_another_address_or_with_a_used_count_are_refused() {
    let mut b = Bench::new();
    let challenge =
        responses(&b.send(&register("r1", 1, None)))[0].headers.get("WWW-Authenticate").unwrap().to_string();
    let good = answer(&challenge, "REGISTER", "sip:192.0.2.1", "wonderland");
    // Captured on the way and sent from elsewhere: a fresh challenge, no registration.
    let thief: SocketAddr = "198.51.100.9:5060".parse().unwrap();
    let out = responses(&b.send_from(thief, &register("r2", 2, Some(&good))));
    assert_eq!(out.iter().map(|r| r.status).collect::<Vec<_>>(), [401]);
    assert!(!out[0].headers.get("WWW-Authenticate").unwrap().contains("stale=true"));
    assert!(!b.events().iter().any(|e| matches!(e, Event::SipRegistered { .. })));
    // From the phone the same credentials work once...
    assert_eq!(responses(&b.send(&register("r3", 3, Some(&good))))[0].status, 200);
    // ...a retransmission gets the same answer from the transaction...
    assert_eq!(responses(&b.send(&register("r3", 3, Some(&good))))[0].status, 200);
    // ...but a new request with the used nonce count is a replay: challenged again, stale.
    let out = responses(&b.send(&register("r4", 4, Some(&good))));
    assert_eq!(out[0].status, 401);
    assert!(out[0].headers.get("WWW-Authenticate").unwrap().contains("stale=true"));
    // A higher count on the same nonce is how a client reuses it: accepted.
    let challenge = Challenge::parse(&challenge).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let next = Authorization::answer(&challenge, ("alice", "wonderland"), "REGISTER", "sip:192.0.2.1", 2, &mut rng)
        .unwrap()
        .to_string();
    assert_eq!(responses(&b.send(&register("r5", 5, Some(&next))))[0].status, 200);
    // Replays are not password failures: nobody was throttled.
    assert!(guard_events(&b.events()).is_empty());
}

#[test]
fn a_flood_of_junk_is_counted_exactly_but_reported_once_per_interval() {
    let mut b = Bench::new();
    let from: SocketAddr = "203.0.113.50:5060".parse().unwrap();
    for i in 0..20_000u32 {
        if i % 1000 == 0 {
            b.advance(Duration::from_secs(1));
        }
        b.sip.handle_signalling(b.now, from, b"\x00\x01junk that is not SIP");
    }
    b.advance(Duration::from_secs(30));
    let events = b.events();
    let single = events.iter().filter(|e| matches!(e, Event::DatagramDropped { .. })).count();
    let summed: u64 = events
        .iter()
        .filter_map(|e| match e {
            Event::DatagramsDropped { count, .. } => Some(*count),
            _ => None,
        })
        .sum();
    assert_eq!(single, 1);
    assert!(events.len() <= 4, "one at once, then one per 10 s: {events:?}");
    assert_eq!(single as u64 + summed, 20_000);
    assert_eq!(b.sip.stats().dropped.get("malformed SIP"), Some(&20_000));
}

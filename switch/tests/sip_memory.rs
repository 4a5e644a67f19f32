//! What the SIP endpoint counts against `[sip] transaction_memory` is what
//! its transactions really take from the allocator: a counting allocator
//! measures the heap that 20,000 completed REGISTER transactions hold and
//! compares it with the endpoint's own count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use switch::config::{SipSettings, SipUser};
use switch::iax2::endpoint::ResolvedHosts;
use switch::protocol::SocketRequest;
use switch::sip::digest::{Authorization, Challenge};
use switch::sip::endpoint::SipEndpoint;
use switch::sip::message::Message;

struct Counting;

static IN_USE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        IN_USE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const USERS: usize = 100;

/// The counter is the whole process's: tests that read it run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn source(u: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, (u + 1) as u8], 5060))
}

fn register(i: usize, u: usize, auth: Option<&str>) -> String {
    format!(
        "REGISTER sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKm{i};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:u{u}@192.0.2.1>;tag=t{u}\r\nTo: <sip:u{u}@192.0.2.1>\r\n\
         Call-ID: mem-{u}@phone\r\nCSeq: {} REGISTER\r\nContact: <sip:u{u}@{}>\r\n\
         Expires: 600\r\n{}Content-Length: 0\r\n\r\n",
        source(u),
        i / USERS + 1,
        source(u),
        auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default()
    )
}

#[test]
fn counted_transaction_memory_matches_the_heap() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let settings = SipSettings {
        listen: "192.0.2.1:5060".parse().unwrap(),
        rtp: "192.0.2.1".parse().unwrap(),
        max_calls: 10,
        transaction_memory: 1 << 30,
        users: (0..USERS)
            .map(|u| SipUser { name: format!("u{u}"), password: format!("pw{u}"), context: None })
            .collect(),
        ..SipSettings::default()
    };
    let mut now = Instant::now();
    let mut sip = SipEndpoint::new(Arc::new(settings), &ResolvedHosts::default(), ChaCha20Rng::seed_from_u64(1), now);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let challenges: Vec<Challenge> = (0..USERS)
        .map(|u| {
            sip.handle_signalling(now, source(u), register(u, u, None).as_bytes());
            let out = sip.poll_transmit().unwrap();
            let Ok(Message::Response(r)) = Message::parse(&out.payload) else { panic!("no challenge") };
            Challenge::parse(r.headers.get("WWW-Authenticate").unwrap()).unwrap()
        })
        .collect();
    // Each use of a nonce counts on (nc), as a client's does.
    let mut ncs = vec![0u32; USERS];
    let mut send = |sip: &mut SipEndpoint, i: usize, now: Instant| {
        let u = i % USERS;
        ncs[u] += 1;
        let (user, password) = (format!("u{u}"), format!("pw{u}"));
        let auth =
            Authorization::answer(&challenges[u], (&user, &password), "REGISTER", "sip:192.0.2.1", ncs[u], &mut rng)
                .unwrap()
                .to_string();
        let text = register(i, u, Some(&auth));
        sip.handle_signalling(now, source(u), text.as_bytes());
        let out = sip.poll_transmit().unwrap();
        assert!(out.payload.starts_with(b"SIP/2.0 200"));
        while sip.poll_event().is_some() {}
    };
    // Every user has its binding and the registrar stops growing.
    for i in USERS..2 * USERS {
        send(&mut sip, i, now);
    }
    let (heap, counted) = (IN_USE.load(Ordering::Relaxed), sip.transaction_usage().bytes as isize);
    let n = 20_000;
    for i in 2 * USERS..2 * USERS + n {
        now += Duration::from_micros(100);
        send(&mut sip, i, now);
    }
    let heap = IN_USE.load(Ordering::Relaxed) - heap;
    let counted = sip.transaction_usage().bytes as isize - counted;
    let ratio = heap as f64 / counted as f64;
    println!("{n} completed REGISTER transactions: heap {heap} bytes, counted {counted} ({ratio:.2})");
    assert!((0.8..1.25).contains(&ratio), "heap {heap} bytes, counted {counted} bytes");
}

/// What a carrier's registrar keeps per phone once the REGISTER
/// transactions are over: the binding, its indexes, the nonce count.
#[test]
fn an_idle_registration_holds_under_2_kib() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const PHONES: usize = 5_000;
    let phone = |u: usize| SocketAddr::from(([10, 1, (u / 250) as u8, (u % 250 + 1) as u8], 5060));
    let register = |u: usize, cseq: u32, auth: Option<&str>| {
        format!(
            "REGISTER sip:192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKidle{u}x{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:p{u}@192.0.2.1>;tag=t{u}\r\nTo: <sip:p{u}@192.0.2.1>\r\n\
             Call-ID: idle-{u}@phone\r\nCSeq: {cseq} REGISTER\r\nContact: <sip:p{u}@{};transport=udp>\r\n\
             Expires: 3600\r\n{}User-Agent: Desk Phone 1.0\r\nContent-Length: 0\r\n\r\n",
            phone(u),
            phone(u),
            auth.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default()
        )
    };
    let settings = SipSettings {
        listen: "192.0.2.1:5060".parse().unwrap(),
        rtp: "192.0.2.1".parse().unwrap(),
        users: (0..PHONES)
            .map(|u| SipUser { name: format!("p{u}"), password: format!("secret-{u}"), context: None })
            .collect(),
        ..SipSettings::default()
    };
    let mut now = Instant::now();
    let mut sip = SipEndpoint::new(Arc::new(settings), &ResolvedHosts::default(), ChaCha20Rng::seed_from_u64(1), now);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let before = IN_USE.load(Ordering::Relaxed);
    for u in 0..PHONES {
        sip.handle_signalling(now, phone(u), register(u, 1, None).as_bytes());
        let out = sip.poll_transmit().unwrap();
        let Ok(Message::Response(r)) = Message::parse(&out.payload) else { panic!("no challenge") };
        let challenge = Challenge::parse(r.headers.get("WWW-Authenticate").unwrap()).unwrap();
        let (user, password) = (format!("p{u}"), format!("secret-{u}"));
        let auth = Authorization::answer(&challenge, (&user, &password), "REGISTER", "sip:192.0.2.1", 1, &mut rng)
            .unwrap()
            .to_string();
        sip.handle_signalling(now, phone(u), register(u, 2, Some(&auth)).as_bytes());
        assert!(sip.poll_transmit().unwrap().payload.starts_with(b"SIP/2.0 200"));
        now += Duration::from_micros(200);
    }
    // The transactions end (Timer J, 32 s); the bindings stay for the hour.
    now += Duration::from_secs(60);
    sip.handle_timeout(now);
    while sip.poll_event().is_some() {}
    assert_eq!(sip.transaction_usage().bytes, 0, "transactions over");
    let per_phone = (IN_USE.load(Ordering::Relaxed) - before) as f64 / PHONES as f64;
    println!("{PHONES} idle registrations: {per_phone:.0} bytes each");
    assert!(per_phone < 2048.0, "{per_phone:.0} bytes per registration");
}

/// What an answered call holds while it is up, its transactions over: both
/// dialogs' state, the negotiated media, the echo's buffers.
#[test]
fn an_answered_call_holds_a_few_kib() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    const CALLS: usize = 1_000;
    let phone: SocketAddr = "10.2.0.1:5060".parse().unwrap();
    let invite = |i: usize, cseq: u32, auth: Option<&str>| {
        let sdp = "v=0\r\no=- 1 1 IN IP4 10.2.0.1\r\ns=-\r\nc=IN IP4 10.2.0.1\r\nt=0 0\r\n\
                   m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n\
                   a=rtpmap:101 telephone-event/8000\r\n";
        format!(
            "INVITE sip:9196@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.2.0.1:5060;branch=z9hG4bKcall{i}x{cseq}\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@192.0.2.1>;tag=c{i}\r\nTo: <sip:9196@192.0.2.1>\r\n\
             Call-ID: call-{i}@phone\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@10.2.0.1:5060>\r\n{}\
             Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
            auth.map(|a| format!("Proxy-Authorization: {a}\r\n")).unwrap_or_default(),
            sdp.len()
        )
    };
    let settings = SipSettings {
        listen: "192.0.2.1:5060".parse().unwrap(),
        rtp: "192.0.2.1".parse().unwrap(),
        max_calls: CALLS,
        rtp_timeout: 0,
        users: vec![SipUser { name: "alice".into(), password: "wonderland-42".into(), context: None }],
        ..SipSettings::default()
    };
    let mut now = Instant::now();
    let mut sip = SipEndpoint::new(Arc::new(settings), &ResolvedHosts::default(), ChaCha20Rng::seed_from_u64(1), now);
    let mut plan = switch::dialplan::Dialplan::default();
    plan.add("default", "9196", switch::dialplan::App::Echo);
    sip.set_dialplan(plan);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let before = IN_USE.load(Ordering::Relaxed);
    for i in 0..CALLS {
        sip.handle_signalling(now, phone, invite(i, 1, None).as_bytes());
        let out = sip.poll_transmit().unwrap();
        let Ok(Message::Response(r)) = Message::parse(&out.payload) else { panic!("no challenge") };
        assert_eq!(r.status, 407);
        let challenge = Challenge::parse(r.headers.get("Proxy-Authenticate").unwrap()).unwrap();
        let ack = format!(
            "ACK sip:9196@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.2.0.1:5060;branch=z9hG4bKcall{i}x1\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@192.0.2.1>;tag=c{i}\r\n{}\r\n\
             Call-ID: call-{i}@phone\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            r.headers.get("To").map(|t| format!("To: {t}")).unwrap()
        );
        sip.handle_signalling(now, phone, ack.as_bytes());
        let auth =
            Authorization::answer(&challenge, ("alice", "wonderland-42"), "INVITE", "sip:9196@192.0.2.1", 1, &mut rng)
                .unwrap()
                .to_string();
        sip.handle_signalling(now, phone, invite(i, 2, Some(&auth)).as_bytes());
        // As the runtime does: the call's pair is bound, then the 200 goes.
        while let Some(request) = sip.poll_media_socket() {
            if let SocketRequest::Open(port) = request {
                sip.media_socket_opened(now, port);
            }
        }
        let mut ok = None;
        while let Some(t) = sip.poll_transmit() {
            if let Ok(Message::Response(r)) = Message::parse(&t.payload) {
                if r.status == 200 {
                    ok = Some(r);
                }
            }
        }
        let ok = ok.expect("the echo answers");
        let ack = format!(
            "ACK sip:9196@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.2.0.1:5060;branch=z9hG4bKack{i}\r\n\
             Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@192.0.2.1>;tag=c{i}\r\nTo: {}\r\n\
             Call-ID: call-{i}@phone\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n",
            ok.headers.get("To").unwrap()
        );
        sip.handle_signalling(now, phone, ack.as_bytes());
        while sip.poll_media_socket().is_some() {}
        while sip.poll_event().is_some() {}
        now += Duration::from_millis(1);
    }
    // The INVITE transactions end; the calls stay up (no RTP timeout).
    now += Duration::from_secs(40);
    sip.handle_timeout(now);
    while sip.poll_transmit().is_some() {}
    while sip.poll_event().is_some() {}
    assert_eq!(sip.transaction_usage().bytes, 0, "transactions over");
    let per_call = (IN_USE.load(Ordering::Relaxed) - before) as f64 / CALLS as f64;
    println!("{CALLS} answered calls: {per_call:.0} bytes each");
    assert!(per_call < 16.0 * 1024.0, "{per_call:.0} bytes per call");
}

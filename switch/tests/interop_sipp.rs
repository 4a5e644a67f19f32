//! The live `switch` binary's SIP side against third-party SIP software on
//! loopback: SIPp 3.6.1 (Debian `sip-tester`, built with PCAP and RTPSTREAM
//! support) as the phone, and SIPVicious 0.3 (`svmap`, `svwar`) as the
//! attacker. Scenarios are in `tests/data/sipp/`; each says what it checks.
//!
//! What is proven, against which program:
//! * SIPp registers with digest authentication (REGISTER, 401, REGISTER with
//!   Authorization, 200 listing the binding): the switch emits `sip_registered`
//!   and `sip show registrations` lists the contact. With a wrong password, or
//!   a user the switch does not have, SIPp gets 403, and the two 401s and the
//!   two 403s look the same (status line and header fields).
//! * SIPp calls the echo extension 9196 with proxy authentication (INVITE, 407,
//!   ACK, INVITE with Proxy-Authorization, 100, 200 with a PCMA answer, ACK),
//!   streams 4 s of A-law (the audio of SIPp's public `g711a.pcap`), BYE: the
//!   switch echoes every packet (`packets_sent == packets_received`, no loss on
//!   loopback), and with root tshark decodes every frame of it, SIP and RTP,
//!   with nothing malformed. As root, the public captures themselves are
//!   replayed packet for packet (`play_pcap_audio`), the RFC 4733 digit in
//!   `dtmf_2833_1.pcap` included.
//! * SIPp places 100 authenticated calls at 20 calls/s, up to 50 at once,
//!   each held 2 s: all succeed (the rate is printed, never asserted).
//! * svmap's OPTIONS sweep finds nothing while no one is registered from the
//!   scanning address (and finds the switch once someone is: the scan works),
//!   and svwar cannot tell the real user from invented ones, because every
//!   name gets the same challenge.
//!
//! Two tests fail on purpose until the switch is fixed (see their docs):
//! `registration_responses_carry_a_to_tag` (RFC 3261 8.2.6.2) and
//! `vanished_phone_does_not_keep_the_next_calls_media` (RTP latching).
//!
//! Skipped (with a message) when sipp, or for the scanners sipvicious, is not
//! installed. The cases run one at a time (2-core CI: RTP pacing and a load
//! run share the machine badly); processes are killed on drop and temp
//! directories removed.

#[path = "common/iaxmodem.rs"]
#[allow(dead_code)]
mod common;
#[path = "common/sipp.rs"]
#[allow(dead_code)]
mod sipp;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use common::{free_tcp_port, free_udp_port, is_root, Switch, TempDir};
use sipp::{free_udp_ports, program, run_bounded, run_sipp, SipCapture, SipConfig, SippRun};

/// The one SIP user, with a password a scanner's wordlist would not hold.
const USER: &str = "alice";
const PASSWORD: &str = "c0rrect-h0rse-7-battery";
/// The echo extension.
const ECHO: &str = "9196";
/// How long a step waits for the event it needs.
const STEP: Duration = Duration::from_secs(5);
/// A SIPp run of one short call is over well within this; SIPp is killed after it.
const SIPP_LIMIT: Duration = Duration::from_secs(30);

const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sipp");
/// SIPp's own public media captures, kept in the repository (captures/README.md).
const CAPTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../captures");

/// One case at a time (see the module doc).
static SERIAL: Mutex<()> = Mutex::new(());

fn scenario(name: &str) -> PathBuf {
    let path = Path::new(SCENARIOS).join(name);
    assert!(path.is_file(), "scenario {} is missing", path.display());
    path
}

fn public_capture(name: &str) -> PathBuf {
    let path = Path::new(CAPTURES).join(name);
    assert!(path.is_file(), "public capture {} is missing (expected under {CAPTURES})", path.display());
    path
}

/// The SIPp binary, or `None` after saying the test is skipped.
fn sipp_binary() -> Option<PathBuf> {
    program(&["sipp"], "sip-tester")
}

/// Ports in the switch's `rtp_ports` (pairs: half as many calls).
const RTP_PORTS: u16 = 400;

/// The live switch with one SIP user and the echo extension.
struct Rig {
    switch: Switch,
    sip_port: u16,
    /// The switch's `rtp_ports`.
    rtp_ports: (u16, u16),
    dir: TempDir,
    _serial: MutexGuard<'static, ()>,
}

/// Where one SIPp instance listens: signalling, and the first RTP port of a free range.
struct Phone {
    port: u16,
    media: u16,
}

impl Phone {
    fn new() -> Phone {
        // rtp_stream binds RTP and RTCP from -mp up, two per call.
        Phone { port: free_udp_port(), media: free_udp_ports(4) }
    }
}

impl Rig {
    fn start(tag: &str, rtp_timeout: u32) -> Rig {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new(tag);
        let config = dir.0.join("switch");
        std::fs::create_dir_all(&config).unwrap();
        let control = free_tcp_port();
        let sip_port = free_udp_port();
        // Enough pairs for the load test's 100 calls within the ports' rest.
        let first = free_udp_ports(RTP_PORTS);
        let rtp_ports = (first, first + RTP_PORTS - 1);
        SipConfig {
            iax_port: free_udp_port(),
            control,
            sip_port,
            rtp_ports,
            rtp_timeout,
            users: &[(USER, PASSWORD)],
            dialplan: &[(ECHO, "echo")],
        }
        .write(&config);
        let switch = Switch::start(&config, Some(control));
        Rig { switch, sip_port, rtp_ports, dir, _serial: serial }
    }

    /// SIPp's address options for `phone`, the scenario's `service` and the
    /// credentials, one call, against the switch.
    fn args(&self, phone: &Phone, service: &str, user: &str, password: &str) -> Vec<String> {
        [
            "-i",
            "127.0.0.1",
            "-p",
            &phone.port.to_string(),
            "-mi",
            "127.0.0.1",
            "-mp",
            &phone.media.to_string(),
            "-s",
            service,
            "-au",
            user,
            "-ap",
            password,
            "-m",
            "1",
            &format!("127.0.0.1:{}", self.sip_port),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// One SIPp run of `name` with `args`, in the rig's directory (where media files are).
    fn sipp(&self, sipp: &Path, name: &str, args: &[String]) -> SippRun {
        run_sipp(sipp, &self.dir.0, &scenario(name), args, SIPP_LIMIT)
    }

    fn context(&self) -> String {
        format!("\n--- switch ---\n{}", self.switch.output())
    }

    /// Waits for an event or fails with `run`'s and the switch's output.
    fn event(&mut self, what: &str, run: &SippRun, pred: impl Fn(&Value) -> bool) -> Value {
        match self.switch.wait_for(STEP, pred) {
            Some(e) => e,
            None => panic!("no {what} within {STEP:?}{}{}", run.context(), self.context()),
        }
    }
}

/// The status line and header field names of the first response `status` in a
/// SIPp message log: what tells one answer from another, values aside.
fn response_shape(messages: &str, status: u16) -> Vec<String> {
    let start = format!("SIP/2.0 {status} ");
    let Some(at) = messages.find(&start) else { return Vec::new() };
    messages[at..]
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| if i == 0 { l.trim().to_string() } else { l.split(':').next().unwrap_or("").trim().to_string() })
        .collect()
}

/// The A-law audio of SIPp's public `g711a.pcap` (RTP payloads in order), for rtp_stream.
fn g711a_audio() -> Vec<u8> {
    let file = std::fs::File::open(public_capture("sipp__g711a.pcap")).expect("open g711a.pcap");
    let mut reader = pcap_file::pcap::PcapReader::new(file).expect("pcap header");
    let mut audio = Vec::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.expect("pcap record");
        let sliced = etherparse::SlicedPacket::from_ethernet(&packet.data).expect("ethernet/ip/udp");
        let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else { continue };
        let rtp = udp.payload();
        // RFC 3550 5.1: version 2; skip the CSRCs and any header extension.
        assert!(rtp.len() > 12 && rtp[0] >> 6 == 2, "not RTP in g711a.pcap");
        assert_eq!(rtp[1] & 0x7f, 8, "g711a.pcap carries PT 8 (PCMA) only");
        let mut header = 12 + 4 * usize::from(rtp[0] & 0x0f);
        if rtp[0] & 0x10 != 0 {
            header += 4 + 4 * usize::from(u16::from_be_bytes([rtp[header + 2], rtp[header + 3]]));
        }
        audio.extend_from_slice(&rtp[header..]);
    }
    audio
}

/// Writes `g711a.alaw` (the first `seconds` of the capture's audio) into `dir`.
fn write_alaw(dir: &Path, seconds: usize) {
    let audio = g711a_audio();
    assert!(audio.len() >= seconds * 8000, "g711a.pcap holds only {} bytes of audio", audio.len());
    std::fs::write(dir.join("g711a.alaw"), &audio[..seconds * 8000]).expect("write g711a.alaw");
}

fn u(e: &Value, key: &str) -> u64 {
    e[key].as_u64().unwrap_or_else(|| panic!("no number {key:?} in {e}"))
}

// ---------------------------------------------------------------- registration

/// SIPp registers with digest: 401, then 200 with the binding; the switch
/// says `sip_registered` and lists the contact in `sip show registrations`.
#[test]
fn sipp_registers_with_digest() {
    let Some(sipp) = sipp_binary() else { return };
    let mut rig = Rig::start("sipp-register", 60);
    let phone = Phone::new();
    let run = rig.sipp(&sipp, "register.xml", &rig.args(&phone, USER, USER, PASSWORD));
    assert_eq!(run.code, Some(0), "SIPp's REGISTER scenario failed{}{}", run.context(), rig.context());

    // The 401 is counted, not logged: a challenge is no failure.
    let stats = rig.switch.ctl("show stats");
    assert!(stats.contains("challenges=1 "), "one 401 for the first REGISTER: {stats}{}", rig.context());
    assert!(rig.switch.named("sip_auth_failed").is_empty(), "a challenge is not a failure{}", rig.context());
    let contact = format!("sip:{USER}@127.0.0.1:{}", phone.port);
    let registered = rig.event("sip_registered", &run, |e| e["event"] == "sip_registered");
    assert_eq!(registered["user"], USER, "{registered}");
    assert_eq!(registered["contact"], contact.as_str(), "{registered}");
    assert_eq!(registered["addr"], format!("127.0.0.1:{}", phone.port).as_str(), "{registered}");
    assert_eq!(u(&registered, "expires"), 120, "{registered}");

    let table = rig.switch.ctl("sip show registrations");
    eprintln!("sip show registrations:\n{table}");
    let row = table.lines().find(|l| l.split_whitespace().next() == Some(USER));
    let Some(row) = row else { panic!("{USER} missing from `sip show registrations`:\n{table}{}", rig.context()) };
    assert!(row.contains(&contact), "row {row:?} lacks the contact {contact}");
    assert!(table.contains("1 registration(s)"), "{table}");
}

/// A wrong password and an unknown user both end in 403, and nothing on the
/// wire tells them apart: same status lines and header fields in the 401 and
/// in the 403 (what svwar-like tools compare). Nothing gets registered.
#[test]
fn sipp_wrong_password_and_unknown_user_get_the_same_403() {
    let Some(sipp) = sipp_binary() else { return };
    let mut rig = Rig::start("sipp-refused", 60);
    let phone = Phone::new();
    let wrong = rig.sipp(&sipp, "register_refused.xml", &rig.args(&phone, USER, USER, "not-the-password"));
    assert_eq!(
        wrong.code,
        Some(0),
        "wrong password: SIPp did not get 401 then 403{}{}",
        wrong.context(),
        rig.context()
    );
    let stranger = Phone::new();
    let unknown = rig.sipp(&sipp, "register_refused.xml", &rig.args(&stranger, "mallory", "mallory", PASSWORD));
    assert_eq!(
        unknown.code,
        Some(0),
        "unknown user: SIPp did not get 401 then 403{}{}",
        unknown.context(),
        rig.context()
    );

    for (name, run) in [(USER, &wrong), ("mallory", &unknown)] {
        let n = name.to_string();
        let refused = rig.event("403", run, move |e| {
            e["event"] == "sip_auth_failed" && e["user"] == n.as_str() && e["status"] == 403
        });
        assert_eq!(refused["method"], "REGISTER", "{refused}");
    }
    for status in [401, 403] {
        let (a, b) = (response_shape(&wrong.messages, status), response_shape(&unknown.messages, status));
        assert!(!a.is_empty(), "no {status} in SIPp's log{}", wrong.context());
        assert_eq!(a, b, "the {status} for a wrong password differs from the one for an unknown user");
        eprintln!("{status} for either: {a:?}");
    }
    assert!(rig.switch.named("sip_registered").is_empty(), "something registered{}", rig.context());
    let table = rig.switch.ctl("sip show registrations");
    assert!(table.contains("0 registration(s)"), "{table}");
}

/// FAILS until fixed. RFC 3261 8.2.6.2: when the request's To has no tag, "the
/// UAS MUST add a tag to the To header field in the response (with the
/// exception of the 100 (Trying) response)"; a registrar is a UAS (10.3).
/// The switch's 401 challenge and its 200 to REGISTER (and its 407 and 403)
/// copy the request's To unchanged.
#[test]
fn registration_responses_carry_a_to_tag() {
    let Some(sipp) = sipp_binary() else { return };
    let rig = Rig::start("sipp-to-tag", 60);
    let phone = Phone::new();
    let run = rig.sipp(&sipp, "register_to_tag.xml", &rig.args(&phone, USER, USER, PASSWORD));
    assert_eq!(
        run.code,
        Some(0),
        "the switch's 401 and/or 200 to REGISTER has no To tag (RFC 3261 8.2.6.2){}",
        run.context()
    );
}

// ---------------------------------------------------------------- calls with media

/// SIPp calls the echo with proxy authentication and streams 4 s of A-law:
/// every packet comes back, none is lost, and tshark dissects it all cleanly.
#[test]
fn sipp_calls_the_echo_and_hears_every_packet() {
    let Some(sipp) = sipp_binary() else { return };
    let mut rig = Rig::start("sipp-echo", 60);
    write_alaw(&rig.dir.0, 4);
    let phone = Phone::new();
    let capture = SipCapture::start(&rig.dir.0, &[rig.sip_port, phone.port, phone.media], rig.rtp_ports);
    let run = rig.sipp(&sipp, "call_echo.xml", &rig.args(&phone, ECHO, USER, PASSWORD));
    assert_eq!(run.code, Some(0), "SIPp's call to the echo failed{}{}", run.context(), rig.context());

    let stats = rig.switch.ctl("show stats");
    assert!(stats.contains("challenges=1 "), "one 407 for the first INVITE: {stats}{}", rig.context());
    let started = rig.event("sip_call_started", &run, |e| e["event"] == "sip_call_started");
    assert_eq!((started["user"].as_str(), started["exten"].as_str()), (Some(USER), Some(ECHO)), "{started}");
    let call = started["call"].clone();
    let answered = rig.event("sip_call_answered", &run, |e| e["event"] == "sip_call_answered");
    assert_eq!((&answered["call"], answered["codec"].as_str()), (&call, Some("PCMA")), "{answered}");
    let ended = rig.event("sip_call_ended", &run, |e| e["event"] == "sip_call_ended");
    eprintln!("sip_call_ended: {ended}");
    assert_eq!(ended["call"], call);
    assert_eq!(ended["cause"], "remote BYE", "{ended}");
    let (sent, received) = (u(&ended, "packets_sent"), u(&ended, "packets_received"));
    assert!(received > 100, "only {received} RTP packets from SIPp in 4 s{}", rig.context());
    // The echo answers each PCMA packet with one of its own.
    assert_eq!(sent, received, "the echo did not send one packet per packet received: {ended}");
    assert_eq!(u(&ended, "lost"), 0, "loss on loopback: {ended}");
    assert_eq!(u(&ended, "duplicated"), 0, "{ended}");

    let Some(capture) = capture else { return };
    let d = capture.finish(rig.sip_port, rig.rtp_ports);
    let ladder = d.ladder();
    eprintln!("SIP on lo (switch {}; phone {}):\n{ladder}", rig.sip_port, phone.port);
    assert!(d.malformed.trim().is_empty(), "tshark reports malformed or erroneous frames:\n{}", d.malformed);
    let count = |pred: &dyn Fn(&sipp::Frame) -> bool| d.frames.iter().filter(|f| pred(f)).count();
    let to_switch = |f: &sipp::Frame| f.dst_port == rig.sip_port;
    let from_switch = |f: &sipp::Frame| f.src_port == rig.sip_port;
    assert_eq!(count(&|f| to_switch(f) && f.method == "INVITE"), 2, "{ladder}");
    assert_eq!(count(&|f| to_switch(f) && f.method == "ACK"), 2, "{ladder}");
    assert_eq!(count(&|f| to_switch(f) && f.method == "BYE"), 1, "{ladder}");
    assert_eq!(count(&|f| from_switch(f) && f.status == Some(407)), 1, "{ladder}");
    assert_eq!(count(&|f| from_switch(f) && f.status == Some(200) && f.cseq_method == "INVITE"), 1, "{ladder}");
    assert_eq!(count(&|f| from_switch(f) && f.status == Some(200) && f.cseq_method == "BYE"), 1, "{ladder}");
    // The call's own port, as its SDP said: the one RTP went to.
    let in_range = |p: u16| (rig.rtp_ports.0..=rig.rtp_ports.1).contains(&p);
    let port = d.frames.iter().find(|f| f.rtp_pt.is_some() && in_range(f.dst_port)).map(|f| f.dst_port);
    let port = port.unwrap_or_else(|| panic!("no RTP to the switch's rtp_ports {:?}:\n{ladder}", rig.rtp_ports));
    assert_eq!(port % 2, 0, "RTP on an odd port");
    assert!(d.frames.iter().filter(|f| f.rtp_pt.is_some()).all(|f| f.dst_port == port || f.src_port == port));
    let (inbound, outbound) = (d.rtp_to(port), d.rtp_from(port));
    eprintln!("RTP on lo: {} packets to the switch, {} back", inbound.len(), outbound.len());
    assert_eq!(inbound.len() as u64, received, "tshark's count of RTP to the switch");
    assert_eq!(outbound.len() as u64, sent, "tshark's count of RTP from the switch");
    assert!(inbound.iter().chain(&outbound).all(|f| f.rtp_pt == Some(8)), "RTP other than PCMA (PT 8)");
    let ssrcs: std::collections::BTreeSet<&str> = outbound.iter().map(|f| f.rtp_ssrc.as_str()).collect();
    assert_eq!(ssrcs.len(), 1, "the echo's RTP changed SSRC: {ssrcs:?}");
}

/// As root: SIPp replays SIPp's public captures packet for packet
/// (`play_pcap_audio` sends through raw sockets): 236 PCMA packets of 30 ms,
/// then RFC 4733 digit 1 under another SSRC. Each audio packet is echoed
/// once, the digit is reported once.
#[test]
fn sipp_replays_the_public_captures_to_the_echo() {
    let Some(sipp) = sipp_binary() else { return };
    if !is_root() {
        eprintln!("SKIPPED: play_pcap_audio needs raw sockets (root); the rtp_stream test covers media without it");
        return;
    }
    let mut rig = Rig::start("sipp-pcap", 60);
    for (name, file) in [("g711a.pcap", "sipp__g711a.pcap"), ("dtmf_2833_1.pcap", "sipp__dtmf_2833_1.pcap")] {
        std::fs::copy(public_capture(file), rig.dir.0.join(name)).expect("copy a public capture");
    }
    let phone = Phone::new();
    let run = rig.sipp(&sipp, "call_echo_pcap.xml", &rig.args(&phone, ECHO, USER, PASSWORD));
    assert_eq!(run.code, Some(0), "SIPp's pcap replay to the echo failed{}{}", run.context(), rig.context());
    let started = rig.event("sip_call_started", &run, |e| e["event"] == "sip_call_started");
    let call = started["call"].clone();
    let c = call.clone();
    let digit = rig.event("sip_dtmf", &run, move |e| e["event"] == "sip_dtmf" && e["call"] == c);
    assert_eq!(digit["digit"], "1", "{digit}");
    let ended = rig.event("sip_call_ended", &run, |e| e["event"] == "sip_call_ended");
    eprintln!("sip_call_ended: {ended}");
    assert_eq!(ended["call"], call);
    assert_eq!(ended["cause"], "remote BYE", "{ended}");
    // Every packet of the capture's audio came back once; telephone-events are not echoed.
    assert_eq!(u(&ended, "packets_sent"), 236, "{ended}{}", rig.context());
    assert_eq!(u(&ended, "lost"), 0, "{ended}");
    assert_eq!(rig.switch.named("sip_dtmf").len(), 1, "the digit's three end packets were reported more than once");
    // The receive figures are those of the last SSRC (the digit's): note, do not assert.
    eprintln!("packets_received {} (RFC 3550 figures restart with the digit's SSRC)", u(&ended, "packets_received"));
}

/// A phone vanishes mid-call (power cut: no BYE, RTP just stops); it comes
/// back and calls again from the same RTP port, as phones with a fixed RTP
/// port range do. The new call's RTP must reach the new call.
///
/// When all calls shared one media socket, the dead call's latch on that
/// source address won, kept the dead call alive past `rtp_timeout` and
/// starved the new one. Now each call has its own port, so the new call's
/// RTP goes to the port its own SDP answer named, and the dead call, hearing
/// nothing on its port, ends for "RTP timeout".
#[test]
fn vanished_phone_does_not_keep_the_next_calls_media() {
    let Some(sipp) = sipp_binary() else { return };
    let mut rig = Rig::start("sipp-vanish", 3);
    write_alaw(&rig.dir.0, 4);
    let phone = Phone::new();
    let first = rig.sipp(&sipp, "call_abandon.xml", &rig.args(&phone, ECHO, USER, PASSWORD));
    assert_eq!(first.code, Some(0), "the first call failed{}{}", first.context(), rig.context());
    let first_call = rig.event("the first call", &first, |e| e["event"] == "sip_call_answered")["call"].clone();

    // Same phone, same ports, at once: within the first call's rtp_timeout.
    let again = Phone { port: free_udp_port(), media: phone.media };
    let second = rig.sipp(&sipp, "call_echo.xml", &rig.args(&again, ECHO, USER, PASSWORD));
    let fc = first_call.clone();
    let second_call = rig
        .event("the second call", &second, move |e| e["event"] == "sip_call_answered" && e["call"] != fc)["call"]
        .clone();
    let sc = second_call.clone();
    let ended = rig.event("the second call's end", &second, move |e| e["event"] == "sip_call_ended" && e["call"] == sc);
    let fc = first_call.clone();
    let first_end = rig.switch.wait_for(STEP, move |e| e["event"] == "sip_call_ended" && e["call"] == fc);
    eprintln!("second call ended: {ended}\nfirst call ended: {first_end:?}");
    assert!(
        u(&ended, "packets_received") > 100,
        "the second call got {} RTP packets: the vanished first call {first_call} took them (each call \
         has its own media port: did the second call's SDP name the first call's?); second call: {ended}; \
         first call: {first_end:?}",
        u(&ended, "packets_received")
    );
    assert_eq!(second.code, Some(0), "the second call failed{}{}", second.context(), rig.context());
    let first_end = first_end.expect("the vanished call never ended");
    assert_eq!(first_end["cause"], "RTP timeout", "{first_end}");
}

// ---------------------------------------------------------------- load

/// SIPp places 100 authenticated calls to the echo, 20 per second, at most 50
/// at once, each held 2 s without media: every one succeeds on both sides.
#[test]
fn sipp_load_100_authenticated_calls() {
    let Some(sipp) = sipp_binary() else { return };
    let mut rig = Rig::start("sipp-load", 60);
    let phone = Phone::new();
    let mut args = rig.args(&phone, ECHO, USER, PASSWORD);
    // Replace "-m 1" with the load parameters.
    let m = args.iter().position(|a| a == "-m").unwrap();
    args.splice(m..m + 2, ["-r", "20", "-m", "100", "-l", "50"].map(String::from));
    let run = run_sipp(&sipp, &rig.dir.0, &scenario("call_load.xml"), &args, Duration::from_secs(60));
    let ok = run.stat("SuccessfulCall(C)");
    let failed = run.stat("FailedCall(C)");
    let secs = run.elapsed.as_secs_f64();
    println!(
        "SIPp load: {ok:?} successful, {failed:?} failed calls in {secs:.1} s ({:.1} calls/s including the 2 s hold; \
         SIPp CallRate(C) {:?} cps, retransmissions {:?}, response time {:?})",
        ok.unwrap_or(0) as f64 / secs,
        run.stats.get("CallRate(C)"),
        run.stat("Retransmissions(C)"),
        run.stats.get("ResponseTime1(C)"),
    );
    assert_eq!(run.code, Some(0), "SIPp's load run failed{}", run.context());
    assert_eq!((ok, failed), (Some(100), Some(0)), "SIPp's statistics{}", run.context());

    // The switch saw the same: 100 challenges, 100 answered calls, 100 ended by BYE.
    // A fresh switch numbers its SIP calls 1, 2, ...
    for id in 1..=100u64 {
        if rig.switch.wait_for(STEP, move |e| e["event"] == "sip_call_ended" && e["call"] == id).is_none() {
            panic!("call {id} never ended{}", rig.context());
        }
    }
    let byes = rig.switch.named("sip_call_ended").iter().filter(|e| e["cause"] == "remote BYE").count();
    assert_eq!(rig.switch.named("sip_call_ended").len(), 100, "{}", rig.context());
    assert_eq!(byes, 100, "calls not ended by the caller's BYE{}", rig.context());
    assert_eq!(rig.switch.named("sip_call_answered").len(), 100);
    let stats = rig.switch.ctl("show stats");
    assert!(stats.contains("challenges=100 "), "one 407 per call: {stats}");
    let channels = rig.switch.ctl("sip show channels");
    assert!(channels.contains("0 active SIP call(s)"), "{channels}");
}

// ---------------------------------------------------------------- scanners

/// svmap's OPTIONS sweep: nothing while no one is registered from 127.0.0.1
/// (the switch drops the probe), the switch once SIPp has registered from
/// there (proof that the scan itself works).
#[test]
fn svmap_finds_nothing_until_an_address_registers() {
    let Some(svmap) = program(&["svmap", "sipvicious_svmap"], "sipvicious") else { return };
    let mut rig = Rig::start("svmap", 60);
    let scan = |rig: &Rig| {
        let mut command = Command::new(&svmap);
        command.args(["-p", &rig.sip_port.to_string(), "-P", &free_udp_port().to_string(), "127.0.0.1"]);
        let (status, out) = run_bounded(command, Duration::from_secs(20));
        assert!(status.is_some(), "svmap did not finish:\n{out}");
        out
    };
    let target = format!("127.0.0.1:{}", rig.sip_port);

    let out = scan(&rig);
    eprintln!("svmap, nobody registered:\n{out}");
    assert!(!out.contains(&target), "svmap found the switch although nobody is registered:\n{out}");
    assert!(out.contains("found nothing"), "{out}");
    let dropped = rig.switch.wait_for(STEP, |e| {
        e["event"] == "datagram_dropped" && e["reason"].as_str().is_some_and(|r| r.starts_with("OPTIONS"))
    });
    assert!(dropped.is_some(), "svmap's OPTIONS never reached the switch{}", rig.context());

    let Some(sipp) = sipp_binary() else { return };
    let phone = Phone::new();
    let run = rig.sipp(&sipp, "register.xml", &rig.args(&phone, USER, USER, PASSWORD));
    assert_eq!(run.code, Some(0), "SIPp could not register{}", run.context());
    let out = scan(&rig);
    eprintln!("svmap, {USER} registered from 127.0.0.1:\n{out}");
    assert!(out.contains(&target) && out.contains("switch/"), "svmap missed a switch that answers OPTIONS:\n{out}");
}

/// svwar with a wordlist holding the real user among invented ones cannot
/// single it out: an invented name is challenged exactly like a real one.
#[test]
fn svwar_cannot_tell_the_real_user_from_fake_ones() {
    let Some(svwar) = program(&["svwar", "sipvicious_svwar"], "sipvicious") else { return };
    let rig = Rig::start("svwar", 60);
    let words = rig.dir.0.join("users.txt");
    // The real user first: forced on, svwar stops at the first name answered
    // like its random one, so that name must be the one worth finding.
    std::fs::write(&words, format!("{USER}\n100\n1000\nadmin\nbob\nmallory\n")).unwrap();
    let war = |extra: &[&str]| {
        let mut command = Command::new(&svwar);
        command
            .args(["-p", &rig.sip_port.to_string(), "-P", &free_udp_port().to_string(), "-d"])
            .arg(&words)
            .args(extra)
            .arg("127.0.0.1");
        let (status, out) = run_bounded(command, Duration::from_secs(20));
        assert!(status.is_some(), "svwar did not finish:\n{out}");
        out
    };
    for method in ["REGISTER", "INVITE"] {
        // svwar first sends a random name; being challenged for it, it gives up.
        let out = war(&["-m", method]);
        eprintln!("svwar -m {method}:\n{out}");
        assert!(out.contains("authentication request for an unknown extension"), "{out}");
        assert!(!out.contains(USER) && out.contains("found nothing"), "svwar told {USER} apart:\n{out}");
        // Forced on, it sees the same answer for every name.
        let out = war(&["-m", method, "--force"]);
        eprintln!("svwar -m {method} --force:\n{out}");
        assert!(!out.contains(&format!("'{USER}' exists")) && out.contains("found nothing"), "{out}");
        // ... and it did ask about the real user (the answer it quotes is to that name).
        assert!(out.contains(&format!("<sip:{USER}@127.0.0.1>")), "svwar never asked about {USER}:\n{out}");
    }
}

/// svcrack, which found a 4-digit password in 79 s on the unprotected switch,
/// against a user whose password is `0042` (weak, allowed on loopback only):
/// after 5 wrong guesses the switch goes silent for growing spells (1, 2, 4,
/// 8, 16 s; svcrack waits up to 20 s for an answer) and after 10 it bans the
/// address, so svcrack never reaches guess 43. The switch
/// reports the throttling and the ban, `sip show bans` lists the address,
/// and `sip unban` lifts it.
#[test]
fn svcrack_is_throttled_and_banned_before_it_finds_a_4_digit_password() {
    let Some(svcrack) = program(&["svcrack", "sipvicious_svcrack"], "sipvicious") else { return };
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = TempDir::new("svcrack");
    let config = dir.0.join("switch");
    std::fs::create_dir_all(&config).unwrap();
    let (control, sip_port) = (free_tcp_port(), free_udp_port());
    let weak = "0042";
    SipConfig {
        iax_port: free_udp_port(),
        control,
        sip_port,
        rtp_ports: {
            let first = free_udp_ports(4);
            (first, first + 3)
        },
        rtp_timeout: 60,
        users: &[(USER, weak)],
        dialplan: &[(ECHO, "echo")],
    }
    .write(&config);
    let mut switch = Switch::start(&config, Some(control));
    let mut command = Command::new(&svcrack);
    command.args([
        "-u",
        USER,
        "-r",
        "0-9999",
        "-z",
        "4",
        "--maximumtime=20",
        "-p",
        &sip_port.to_string(),
        "-P",
        &free_udp_port().to_string(),
        "127.0.0.1",
    ]);
    let (status, out) = run_bounded(command, Duration::from_secs(90));
    eprintln!("svcrack:\n{out}");
    assert!(status.is_some(), "svcrack did not finish:\n{out}");
    // As a word: svcrack's own timings ("20.000420570373535 seconds") may hold the digits.
    let found = out.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| word == weak);
    assert!(!found, "svcrack found the password:\n{out}\n--- switch ---\n{}", switch.output());
    let banned = switch.wait_for(STEP, |e| e["event"] == "source_banned");
    let Some(banned) = banned else { panic!("no source_banned\n--- switch ---\n{}", switch.output()) };
    assert_eq!((banned["source"].as_str(), banned["protocol"].as_str()), (Some("127.0.0.1"), Some("sip")), "{banned}");
    assert_eq!(u(&banned, "failures"), 10, "{banned}");
    assert_eq!(u(&banned, "for_ms"), 600_000, "{banned}");
    // Every guess that got an answer is a 403; the ban comes at the 10th.
    switch.settle(Duration::from_millis(500));
    let refused = switch.named("sip_auth_failed").iter().filter(|e| e["status"] == 403).count();
    assert_eq!(refused, 10, "guesses answered");
    let throttled = switch.named("auth_throttled");
    assert!(throttled.iter().any(|e| e["scope"] == "source" && u(e, "for_ms") == 1000), "{throttled:?}");
    // One summary line per 10 s for what was dropped, not one per datagram.
    let dropped = switch.named("datagram_dropped").len();
    assert!(dropped <= 3, "{dropped} datagram_dropped lines:\n{}", switch.output());

    let bans = switch.ctl("sip show bans");
    assert!(bans.starts_with("127.0.0.1"), "{bans}");
    assert!(switch.ctl("sip unban 127.0.0.1").contains("127.0.0.1 unbanned"));
    assert!(switch.wait_for(STEP, |e| e["event"] == "source_unbanned" && e["reason"] == "operator").is_some());
    assert!(switch.ctl("sip show bans").contains("no banned sources"));
}

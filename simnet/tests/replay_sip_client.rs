//! SIP replay, client role (`--role client`): the switch takes the place of
//! the captured party that sent the REGISTERs and INVITEs, with a
//! `[sip.gateways]` entry per captured server and an `originate` at each
//! captured INVITE's time; a scripted remote party plays the captured
//! server's responses (and requests). The switch's requests are compared
//! with the captured client's, exchange by exchange; the same capture and
//! seed give byte-identical outputs.

use std::path::PathBuf;

use simnet::capture::{self, RoleRequest};
use simnet::replay::{self, ReplayOptions};

#[path = "common/sip_synthetic.rs"]
mod sip_synthetic;

fn verdicts(o: &replay::ReplayOutcome) -> Vec<String> {
    o.exchanges
        .iter()
        .map(|x| {
            let what = x
                .stimulus
                .as_ref()
                .map(|s| s.label.clone())
                .or_else(|| x.captured.first().or(x.replayed.first()).map(|a| replay::compare::label(&a.bytes)))
                .unwrap_or_default();
            format!("{what} {}", x.verdict)
        })
        .collect()
}

fn replay_client(c: &capture::Capture, name: &str) -> replay::ReplayOutcome {
    let opts = ReplayOptions { role: RoleRequest::Client, capture_name: name.into(), ..ReplayOptions::default() };
    let started = std::time::Instant::now();
    let a = replay::replay(c, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("{name}: {:?} wall, {:?} simulated", started.elapsed(), a.sim_duration);
    let b = replay::replay(c, &opts).unwrap();
    assert_eq!(a.report_md, b.report_md, "{name}");
    assert_eq!(a.events_jsonl, b.events_jsonl, "{name}");
    assert_eq!(a.pcap, b.pcap, "{name}");
    assert_eq!(a.ladder_svg, b.ladder_svg, "{name}");
    assert!(a.report_md.ends_with(&format!("{}\n", a.counts.line())), "{name}");
    a
}

/// The synthetic UA (REGISTER/401/REGISTER+auth/200, INVITE/407/ACK/
/// INVITE+auth/100/180/200/ACK, the UA's BYE/200) with the switch as the UA:
/// its gateway registers, answers the captured 401 with credentials (made
/// with the placeholder password: compared for presence only), and the
/// captured 200 is played back; the call placed at the captured time
/// answers the 407, ACKs the 200 and hangs up after the captured hold.
/// Every exchange matches.
#[test]
fn synthetic_client_matches() {
    let c = capture::read(&sip_synthetic::pcap(true)).unwrap();
    let o = replay_client(&c, "synthetic-sip-client");
    let role = o.role.as_ref().unwrap();
    assert_eq!(role.switch, "10.0.0.1:5060".parse().unwrap(), "{}", o.report_md);
    assert!(o.report_md.contains("[sip.gateways.replay-remote]"), "{}", o.report_md);
    assert!(o.report_md.contains("username = \"alice\""), "{}", o.report_md);
    assert!(o.report_md.contains("expires = 3600"), "{}", o.report_md);
    assert!(o.report_md.contains("originate SIP/replay-remote/echo app=pattern hold=0.370"), "{}", o.report_md);
    assert!(o.report_md.contains("compared for presence only"), "{}", o.report_md);
    assert_eq!(
        verdicts(&o),
        [
            "REGISTER matched",
            "REGISTER matched",
            "INVITE matched",
            "ACK matched",
            "INVITE matched",
            "ACK matched",
            "BYE matched",
        ],
        "{}",
        o.report_md
    );
    assert_eq!(o.counts.line(), "replay: exchanges=7 matched=7 diverged=0 missing=0 extra=0", "{}", o.report_md);
    assert!(o.events_jsonl.contains("\"event\":\"sip_gateway_registered\""), "{}", o.events_jsonl);
    assert!(o.events_jsonl.contains("\"event\":\"sip_call_answered\""), "{}", o.events_jsonl);
    // Another seed: other tags, branches and nonces answers, the same verdicts.
    let opts = ReplayOptions { seed: 2, role: RoleRequest::Client, ..ReplayOptions::default() };
    assert_eq!(replay::replay(&c, &opts).unwrap().counts, o.counts);
}

fn public(name: &str) -> capture::Capture {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures").join(name);
    capture::read_file(&path).unwrap()
}

/// The public SIP captures kept in captures/, with the switch as the client
/// (built-in configuration: one gateway per captured server, placeholder
/// password), each replayed twice to the same bytes:
///
/// - `sngrep__aaa.pcap` (the client 192.168.1.2 with the servers
///   212.242.33.35 and 200.68.120.81), 34 exchanges: 22 matched: the first 8
///   REGISTER transactions up to the captured 200 (each 401 is answered with
///   credentials; after the captured 403 "Wrong password" and the 401 "nonce
///   has changed" the gateway backs off and starts again without, as the
///   captured client did), and the 7 INVITE/ACK pairs of the four calls
///   (the 407s answered with credentials, the 403/480/408 failures ACKed).
///   11 missing: the client's CANCEL of the unanswered call to
///   200.68.120.81 (an `originate` does not cancel), and 10 REGISTERs the
///   captured client sent after its registration succeeded (partly under a
///   second Call-ID and user), while the switch refreshes only at 5/6 of the
///   1200 s granted, after the replay. The gateway of 200.68.120.81, a
///   server the client only called, has `register = false`: no extra REGISTER.
/// - `ndpi__sip_hello.pcapng`: REGISTER/401 and REGISTER+auth/200 match; the
///   captured client's second round 300 s later (shortened to 40 s) is
///   missing twice: the switch refreshes at 5/6 of the 600 s granted. Its 11
///   "hello" keep-alives are not compared (the switch sends none).
/// - `heplify__sip_ipv6_udp.pcap`: the INVITE to 4321 matches (no
///   credentials, same SDP media); its gateway does not register (the
///   server was only called); the capture's clock jumps by years, so even
///   shortened to 40 s the captured 100 comes after the switch's Timer B
///   (32 s) ended its INVITE with 408: the ACK and BYE are missing.
/// - `heplify__sip_ipv4_tcp.pcap` (replayed over UDP): the INVITE diverges
///   in SDP media (the captured client offered PCMA first, PT 8; the switch
///   offers PCMU, PT 0); the ACK of the 200
///   matches, and the captured server's BYE, sent at its time in the
///   switch's dialog, gets the switch's 200 as it got the client's (matched).
#[test]
fn public_sip_captures_as_the_client() {
    let cases: [(&str, &str); 4] = [
        ("sngrep__aaa.pcap", "replay: exchanges=33 matched=22 diverged=0 missing=11 extra=0"),
        ("ndpi__sip_hello.pcapng", "replay: exchanges=4 matched=2 diverged=0 missing=2 extra=0"),
        ("heplify__sip_ipv6_udp.pcap", "replay: exchanges=3 matched=1 diverged=0 missing=2 extra=0"),
        ("heplify__sip_ipv4_tcp.pcap", "replay: exchanges=3 matched=2 diverged=1 missing=0 extra=0"),
    ];
    let mut got = Vec::new();
    for (name, want) in cases {
        let o = replay_client(&public(name), name);
        got.push((name, o.counts.line(), want));
    }
    for (name, line, want) in &got {
        assert_eq!(line, want, "{name}: {got:?}");
    }
}

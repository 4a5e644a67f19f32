//! SIP replay (server role): a capture made here of a registration and an
//! authenticated echo call, replayed with the right password (everything
//! matches) and with the built-in configuration (authentication fails as the
//! report explains); and the public SIP captures, each replayed twice to the
//! same bytes with its verdict pinned.

use std::collections::BTreeMap;
use std::path::PathBuf;

use simnet::capture;
use simnet::replay::{self, ReplayOptions, Verdict};

#[path = "common/sip_synthetic.rs"]
mod sip_synthetic;
use sip_synthetic::{pcap as synthetic_pcap, PASSWORD};

fn config() -> BTreeMap<String, String> {
    let toml = format!(
        "[sip]\nlisten = \"10.0.0.2:5060\"\nrtp = \"10.0.0.2\"\nrealm = \"switch\"\ncontext = \"default\"\n\
         [sip.users.alice]\npassword = \"{PASSWORD}\"\n[dialplan.default]\n\"echo\" = \"echo\"\n"
    );
    BTreeMap::from([("iax.conf".to_string(), "[general]\nbindport = 4569\n".to_string()), ("switch.toml".into(), toml)])
}

fn verdicts(o: &replay::ReplayOutcome) -> Vec<String> {
    o.exchanges
        .iter()
        .map(|x| format!("{} {}", x.stimulus.as_ref().map_or("-".into(), |s| s.label.clone()), x.verdict))
        .collect()
}

#[test]
fn synthetic_call_matches_with_the_password() {
    let c = capture::read(&synthetic_pcap(false)).unwrap();
    assert_eq!((c.count("SIP"), c.count("RTP")), (13, 10), "{:?}", c.problems);
    let opts = ReplayOptions { config: Some(config()), config_label: Some("test".into()), ..ReplayOptions::default() };
    let o = replay::replay(&c, &opts).unwrap();
    assert_eq!(
        verdicts(&o),
        [
            "REGISTER matched",
            "REGISTER matched",
            "INVITE matched",
            "ACK matched",
            "INVITE matched",
            "ACK matched",
            "BYE matched"
        ],
        "{}",
        o.report_md
    );
    assert!(o.report_md.ends_with("replay: exchanges=7 matched=7 diverged=0 missing=0 extra=0\n"), "{}", o.report_md);
    assert!(o.report_md.contains("recomputed for the switch's nonce as alice with the password of [sip.users]"));
    // The RTP went to the call's own media port, as the switch announced it
    // (even, from rtp_ports), and came back (echo).
    let sent = "10 captured packet(s) to the switch's media; 10 sent to 10.0.0.2:";
    let port: u16 =
        o.report_md.split(sent).nth(1).and_then(|r| r.split(',').next()?.parse().ok()).unwrap_or_else(|| {
            panic!("{}", o.report_md);
        });
    assert!(port.is_multiple_of(2) && (16384..=32766).contains(&port), "{port}");
    assert!(!o.report_md.contains(" 0 packet(s) received from the switch"), "{}", o.report_md);
    assert!(o.events_jsonl.contains("\"event\":\"sip_call_answered\""), "{}", o.events_jsonl);
}

#[test]
fn synthetic_call_with_the_builtin_configuration_fails_authentication() {
    let c = capture::read(&synthetic_pcap(false)).unwrap();
    let o = replay::replay(&c, &ReplayOptions::default()).unwrap();
    let v = verdicts(&o);
    // The challenges match; the recomputed credentials carry a placeholder password: 403.
    assert_eq!(v[0], "REGISTER matched");
    assert_eq!(v[1], "REGISTER diverged: status: captured 200, replayed 403");
    assert_eq!(v[2], "INVITE matched");
    assert_eq!(v[3], "ACK matched");
    assert_eq!(v[4], "INVITE diverged: status: captured 200, replayed 403");
    // In words, from the switch's events.
    assert!(
        o.report_md.contains(
            "- exchange 2: the switch answered 403 where the captured server answered 200: the switch refused \
             alice's credentials for REGISTER"
        ),
        "{}",
        o.report_md
    );
    // No dialog: the ACK of the 200 and the BYE are not sent.
    assert!(
        v[5].starts_with(
            "ACK diverged: stimulus: captured sent, replayed not sent (the switch answered INVITE CSeq 2 with 403"
        ),
        "{v:?}"
    );
    assert!(v[6].starts_with("BYE diverged: stimulus: captured sent, replayed not sent"), "{v:?}");
    assert!(o.report_md.ends_with("replay: exchanges=7 matched=3 diverged=4 missing=0 extra=0\n"), "{}", o.report_md);
    assert!(o.report_md.contains("placeholder password"), "{}", o.report_md);
    assert!(o.report_md.contains("[sip.users.\"alice\"]"), "{}", o.report_md);
    assert!(o.report_md.contains("\"echo\" = \"echo\""), "{}", o.report_md);
    assert!(o.report_md.contains("0 sent, 10 not sent"), "{}", o.report_md);
}

/// A public capture kept in the repository's `captures/` (captures/README.md).
fn public(name: &str) -> Option<capture::Capture> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../captures/")).join(name);
    assert!(path.is_file(), "{} is missing from the repository", path.display());
    Some(capture::read_file(&path).unwrap())
}

/// Replays a public capture twice with the built-in configuration, checks the
/// outputs are byte-identical, and returns the verdict line.
fn replay_public(name: &str) -> Option<String> {
    let c = public(name)?;
    let opts = ReplayOptions { capture_name: name.into(), ..ReplayOptions::default() };
    let started = std::time::Instant::now();
    let a = replay::replay(&c, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    eprintln!("{name}: {:?} wall, {:?} simulated", started.elapsed(), a.sim_duration);
    let b = replay::replay(&c, &opts).unwrap();
    assert_eq!(a.report_md, b.report_md, "{name}");
    assert_eq!(a.pcap, b.pcap, "{name}");
    assert_eq!(a.events_jsonl, b.events_jsonl, "{name}");
    assert_eq!(a.ladder_svg, b.ladder_svg, "{name}");
    assert_eq!(a.sip_skipped, 0, "{name}");
    assert!(a.report_md.ends_with(&format!("{}\n", a.counts.line())), "{name}");
    assert!(!a.pcap.is_empty() && a.ladder_svg.starts_with("<svg"), "{name}");
    Some(a.counts.line())
}

/// The public SIP captures with the built-in configuration (the capture holds
/// no passwords), each replayed twice to the same bytes:
///
/// - `sngrep__aaa.pcap`: 51 exchanges with 212.242.33.35 (the REGISTER/INVITE
///   server; the INVITE/CANCEL flow to 200.68.120.81 is another server's and
///   not replayed). Every unauthenticated REGISTER/INVITE gets the same 401/407
///   as captured, the 5-byte keep-alives get no answer on either side, and
///   the ACKs of failures are sent (matched). The 9 divergences are all
///   credentials: recomputed with the placeholder password, the switch
///   answers 403 where the captured server said 200 (3 REGISTERs), re-challenged
///   with 401 (5 REGISTERs, stale nonces) or ran the call to 183/480 (1 INVITE).
/// - `heplify__sip_ipv6_udp.pcap`: the INVITE's Request-URI is
///   `sip:4321@fec0:0:0:0:216:d3ff:fe0d:22c:5060`, an IPv6 address without
///   brackets, which the switch's parser recovers (RFC 5118 4.10). The
///   captured server took the INVITE without credentials; the switch
///   authenticates every INVITE, so it answers 407 (diverged), and the ACK
///   and BYE of the captured dialog are not sent (2 diverged, no dialog).
///   Its timestamps jump by years; 5 gaps are shortened to 40 s.
/// - `ndpi__sip_hello.pcapng`: two REGISTER/401/REGISTER+auth/200 rounds and
///   11 5-byte "hello" keep-alives of the remote party: the 401s and the
///   keep-alives match, the 2 authenticated REGISTERs get 403 (placeholder).
/// - `heplify__sip_ipv4_tcp.pcap` (replayed over UDP): the INVITE without
///   credentials gets 407 where the captured server rang (180) and answered;
///   the ACK of its 200 is not sent (no dialog), and the BYE the captured
///   server sent never comes (missing); its RTP is not sent (no SDP answer).
/// - `zeek__sip-junk-before-request.pcap`: 4 bytes of junk, then a REGISTER
///   without Via, From, To, Call-ID or CSeq, to which nobody answered: the
///   switch answers neither (2 matched). No request was answered, so the
///   switch plays the endpoint the request went to.
#[test]
fn public_sip_captures() {
    let cases: [(&str, &str); 5] = [
        ("sngrep__aaa.pcap", "replay: exchanges=51 matched=42 diverged=9 missing=0 extra=0"),
        ("heplify__sip_ipv6_udp.pcap", "replay: exchanges=3 matched=0 diverged=3 missing=0 extra=0"),
        ("ndpi__sip_hello.pcapng", "replay: exchanges=15 matched=13 diverged=2 missing=0 extra=0"),
        ("heplify__sip_ipv4_tcp.pcap", "replay: exchanges=3 matched=0 diverged=2 missing=1 extra=0"),
        ("zeek__sip-junk-before-request.pcap", "replay: exchanges=2 matched=2 diverged=0 missing=0 extra=0"),
    ];
    let mut got = Vec::new();
    for (name, want) in cases {
        if let Some(line) = replay_public(name) {
            got.push((name, line, want));
        }
    }
    for (name, line, want) in &got {
        assert_eq!(line, want, "{name}: {got:?}");
    }
}

/// The SIP over TCP replay says so, and the in-dialog ACK is explained.
#[test]
fn tcp_capture_is_replayed_over_udp() {
    let Some(c) = public("heplify__sip_ipv4_tcp.pcap") else { return };
    let o = replay::replay(&c, &ReplayOptions::default()).unwrap();
    assert!(o.report_md.contains("captured over TCP and is replayed over UDP"), "{}", o.report_md);
    assert!(o.report_md.contains("Via transport TCP -> UDP"), "{}", o.report_md);
    let ack = &o.exchanges[1];
    assert!(matches!(&ack.verdict, Verdict::Diverged { field, .. } if field == "stimulus"), "{:?}", ack.verdict);
}

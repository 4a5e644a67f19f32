//! `--role client`: the switch takes the place of the party that sent the
//! requests of the simulator's own capture (`captures/simnet__register-md5-call.pcap`:
//! a client registering with MD5 and call token, then calling the server's
//! echo extension); a scripted remote party plays the captured server's
//! answers. The verdict counts are pinned, and the same seed must give
//! byte-identical outputs.

use std::collections::BTreeMap;
use std::path::PathBuf;

use simnet::capture::{self, RoleRequest};
use simnet::replay::{self, ReplayOptions};

/// The captured client's configuration (the `client` host of simnet/tests/replay_self.rs),
/// as captures/manifest.toml replays it.
fn client_config() -> BTreeMap<String, String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures/simnet__register-md5-call-client/iax.conf");
    BTreeMap::from([("iax.conf".to_string(), std::fs::read_to_string(path).unwrap())])
}

fn replay_it(seed: u64, config: Option<BTreeMap<String, String>>) -> replay::ReplayOutcome {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bytes = std::fs::read(root.join("captures/simnet__register-md5-call.pcap")).unwrap();
    let c = capture::read(&bytes).unwrap();
    let opts = ReplayOptions {
        seed,
        role: RoleRequest::Client,
        config,
        capture_name: "simnet__register-md5-call.pcap".into(),
        ..ReplayOptions::default()
    };
    replay::replay(&c, &opts).unwrap()
}

/// With the built-in configuration the switch registers, gets challenged and
/// places the echo call at the captured time with the captured called number,
/// but the capture does not hold the client's secret: its two MD5 answers
/// (REGREQ after REGAUTH, AUTHREP after AUTHREQ) differ, and only those.
#[test]
fn the_kept_capture_replays_as_the_client_with_the_builtin_configuration() {
    let r = replay_it(1, None);
    let role = r.role.as_ref().unwrap();
    assert_eq!(role.switch, "192.168.0.1:4569".parse().unwrap(), "the client sent REGREQ and NEW");
    assert!(r.report_md.contains("register => client:replay-unknown@192.168.0.2:4569"), "{}", r.report_md);
    assert!(r.report_md.contains("originate IAX2/replay-remote/600 app=pattern hold=1.000"), "{}", r.report_md);
    assert!(r.report_md.trim_end().ends_with(&r.counts.line()));
    assert_eq!(r.counts.line(), "replay: exchanges=60 matched=58 diverged=2 missing=0 extra=0", "{}", r.report_md);
    let diverged: Vec<&replay::Exchange> =
        r.exchanges.iter().filter(|e| e.verdict != replay::Verdict::Matched).collect();
    assert_eq!(diverged.len(), 2);
    assert!(r.report_md.matches("IE MD5 RESULT").count() >= 2, "{}", r.report_md);

    let again = replay_it(1, None);
    assert_eq!(again.report_md, r.report_md);
    assert_eq!(again.events_jsonl, r.events_jsonl);
    assert_eq!(again.pcap, r.pcap);
    assert_eq!(again.ladder_svg, r.ladder_svg);
}

/// With the client's own configuration (its secret) every exchange matches.
#[test]
fn the_kept_capture_replays_as_the_client_with_its_configuration() {
    let config = client_config();
    let r = replay_it(1, Some(config.clone()));
    assert!(r.report_md.contains("originate IAX2/server/600"), "{}", r.report_md);
    assert_eq!(r.counts.line(), "replay: exchanges=60 matched=60 diverged=0 missing=0 extra=0", "{}", r.report_md);
    let other = replay_it(2, Some(config));
    assert_eq!(other.counts, r.counts, "{}", other.report_md);
}

/// The public 2005 capture as the caller (built-in configuration): the switch
/// places the call to 442088205155 at the captured time and the captured
/// peer's ACCEPT/ANSWER/media are played to it. It differs where the switch
/// is not that 3G-324M caller: its NEW has no CALLING NUMBER (the built-in
/// configuration sets no caller ID; exchange 1); after the ANSWER it sends a
/// full VOICE before its first mini frame (exchange 4), so its next ACK has
/// another `oseqno` (5); its 20 ms ulaw stream is not the captured party's
/// irregular H.223 mini frames (media: counted, not compared exchange by
/// exchange); the peer's ACK of the caller's second
/// VOICE cannot be sent (7, the switch sent no such frame); and with no
/// captured HANGUP there is no hold time, so it goes on sending after the
/// peer's last datagram (media, counted in the report's media row, not
/// compared exchange by exchange).
#[test]
fn ndpi_iax_replays_as_the_caller() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let bytes = std::fs::read(root.join("captures/ndpi__iax.pcap")).unwrap();
    let c = capture::read(&bytes).unwrap();
    let opts = ReplayOptions { role: RoleRequest::Client, capture_name: "ndpi__iax.pcap".into(), ..Default::default() };
    let r = replay::replay(&c, &opts).unwrap();
    assert!(r.report_md.contains("originate IAX2/replay-remote/442088205155 app=pattern"), "{}", r.report_md);
    assert_eq!(r.counts.line(), "replay: exchanges=23 matched=19 diverged=4 missing=0 extra=0", "{}", r.report_md);
    let again = replay::replay(&c, &opts).unwrap();
    assert_eq!(again.report_md, r.report_md);
    assert_eq!(again.pcap, r.pcap);
}

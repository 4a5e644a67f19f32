//! Replays ndpi__iax.pcap (the one public IAX2 capture: a 2005 H.223 data
//! call) end to end against the switch with the built-in configuration, and
//! pins its verdicts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use simnet::capture;
use simnet::replay::{self, ReplayOptions, Verdict};

/// The capture is kept in the repository (captures/README.md), so a missing
/// file is a failure rather than a skip.
fn capture_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures/ndpi__iax.pcap");
    assert!(p.is_file(), "{} is missing from the repository", p.display());
    Some(p)
}

fn run(seed: u64, config: Option<BTreeMap<String, String>>) -> Option<replay::ReplayOutcome> {
    let path = capture_path()?;
    let c = capture::read_file(&path).unwrap();
    let opts = ReplayOptions { seed, config, capture_name: "ndpi__iax.pcap".into(), ..ReplayOptions::default() };
    Some(replay::replay(&c, &opts).unwrap())
}

const PINNED: &str = "replay: exchanges=28 matched=22 diverged=4 missing=2 extra=0";

#[test]
fn ndpi_iax_replays_with_pinned_verdicts() {
    let Some(o) = run(1, None) else { return };
    assert_eq!(o.counts.line(), PINNED, "{}", o.report_md);
    assert_eq!(o.report_md.lines().last(), Some(PINNED), "report.md ends with the summary line");

    // The switch takes 192.168.2.120's place (it answered the NEW) on its captured port.
    let role = o.role.clone().unwrap();
    assert_eq!(role.switch.to_string(), "192.168.2.120:4566");

    // The NEW: the switch demands a call token (the 2005 capture has none),
    // the remote party does the dance, then the switch refuses the call: its
    // NEW offers no codec the switch carries (an H.223 data call, no FORMAT IE).
    let first = &o.exchanges[0];
    assert_eq!(first.stimulus.as_ref().unwrap().frame_no, 1);
    assert_eq!(
        first.verdict,
        Verdict::Diverged { field: "answer 1 frame".into(), captured: "ACK".into(), replayed: "REJECT".into() }
    );
    let adapted: Vec<&str> = first.adaptations.iter().map(|a| a.why.as_str()).collect();
    assert!(adapted.iter().any(|w| w.contains("asking for a call token")), "{adapted:?}");
    assert!(adapted.iter().any(|w| w.contains("with the call token")), "{adapted:?}");
    assert!(o.events_jsonl.contains("Unable to negotiate codec"));

    // The ACKs of ACCEPT and ANSWER cannot be sent: the switch never sent those.
    let not_sent: Vec<usize> = o
        .exchanges
        .iter()
        .filter(|x| x.stimulus.as_ref().is_some_and(|s| s.sent.is_err()))
        .map(|x| x.stimulus.as_ref().unwrap().frame_no)
        .collect();
    assert_eq!(not_sent, vec![4, 6, 10]);
    // The last exchange: the captured switch's burst of media, which the replay's refused call lacks.
    assert_eq!(o.exchanges.last().unwrap().verdict, Verdict::Missing);

    assert!(o.ladder_svg.starts_with("<svg") && o.ladder_svg.contains("DIVERGED"));
    assert!(!o.pcap.is_empty());
}

#[test]
fn same_capture_and_seed_give_byte_identical_outputs() {
    let (Some(a), Some(b)) = (run(7, None), run(7, None)) else { return };
    assert_eq!(a.report_md, b.report_md);
    assert_eq!(a.events_jsonl, b.events_jsonl);
    assert_eq!(a.pcap, b.pcap);
    assert_eq!(a.ladder_svg, b.ladder_svg);
    // Another seed changes the switch's call numbers and tokens, not the verdicts.
    let Some(c) = run(8, None) else { return };
    assert_eq!(c.counts, a.counts);
    assert_ne!(c.pcap, a.pcap);
}

#[test]
fn with_a_config_that_needs_no_call_token_there_is_no_dance() {
    let iax = "[general]\nbindport = 4566\nrequirecalltoken = no\n\n[guest]\ntype = user\ncontext = replay\n";
    let toml = "[dialplan.replay]\n\"_.\" = \"echo\"\n";
    let files =
        BTreeMap::from([("iax.conf".to_string(), iax.to_string()), ("switch.toml".to_string(), toml.to_string())]);
    let Some(o) = run(1, Some(files)) else { return };
    assert_eq!(o.counts.line(), PINNED);
    assert!(!o.exchanges[0].adaptations.iter().any(|a| a.why.contains("call token")));
}

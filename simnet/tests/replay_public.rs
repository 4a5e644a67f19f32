//! Every capture kept in the repository's `captures/` replays (or says there
//! is nothing to replay) without failing: SIP alone is replayed, SIP next to
//! IAX2 is reported as skipped. The verdict counts themselves are pinned by
//! `captures/manifest.toml` (`cargo xtask certify`); each is printed here.

use std::path::PathBuf;

use simnet::capture;
use simnet::replay::{self, ReplayOptions};

#[test]
fn every_capture_replays_or_has_nothing_to_replay() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{} is part of the repository: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 16, "captures/ holds {} captures", paths.len());
    for path in paths {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let c = capture::read_file(&path).unwrap();
        let opts = ReplayOptions { capture_name: name.clone(), ..ReplayOptions::default() };
        let o = replay::replay(&c, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        eprintln!("{name}: {}", o.counts.line());
        assert!(o.report_md.trim_end().ends_with(&o.counts.line()), "{name}");
        let sip = c.count("SIP");
        assert!(o.ladder_svg.starts_with("<svg"));
        match (c.count("IAX2"), sip) {
            // SIP alone is replayed (simnet/tests/replay_sip.rs pins the verdicts).
            (0, 1..) => {
                assert_eq!(o.sip_skipped, 0, "{name}");
                assert!(o.report_md.contains("SIP replayed: "), "{name}:\n{}", o.report_md);
            }
            (0, 0) => assert_eq!(o.counts.exchanges, 0, "{name}"),
            (_, _) => {
                assert_eq!(o.sip_skipped, sip, "{name}");
                if sip > 0 {
                    assert!(o.report_md.contains(&format!("SIP skipped: {sip} SIP message(s)")), "{name}");
                }
            }
        }
    }
}

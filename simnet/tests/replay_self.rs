//! Replays a capture the simulator itself made (a client registering with
//! MD5 and call token, then calling the server's echo extension) against the
//! server's own configuration: with call numbers, challenges, tokens and MD5
//! answers adapted, every exchange must match. Then checks that the same
//! seed gives byte-identical outputs.
//!
//! The same capture is kept as `captures/simnet__register-md5-call.pcap`
//! (with the server's configuration in `captures/simnet__register-md5-call/`);
//! `cargo test -p simnet --test replay_self -- --ignored` rewrites it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use simnet::capture;
use simnet::replay::{self, ReplayOptions};
use simnet::{Network, RunOptions, Scenario};

const SERVER_IAX: &str = "[general]
bindaddr = 0.0.0.0
minregexpire = 300
maxregexpire = 300

[client]
type = friend
host = dynamic
secret = s3cret-long-enough
auth = md5
context = inbound
";

const SERVER_TOML: &str = "[dialplan.inbound]
\"600\" = \"echo\"
";

fn scenario() -> Scenario {
    let text = format!(
        r#"
name = "replay-self"
description = "client registers to server and calls its echo extension"
duration = "12s"
networks = ["v4"]

[link]
latency = "5ms"

[hosts.client]
iax_conf = """
[general]
bindaddr = 0.0.0.0
register => client:s3cret-long-enough@192.168.0.2

[server]
type = friend
host = 192.168.0.2
username = client
secret = s3cret-long-enough
auth = md5
context = inbound
"""

[hosts.server]
iax_conf = """
{SERVER_IAX}"""
switch_toml = """
{SERVER_TOML}"""

[[timeline]]
at = "2s"
action = "command"
host = "client"
line = "originate IAX2/server/600 app=pattern hold=1"
label = "call"
"#
    );
    Scenario::parse(Path::new("replay-self.toml"), &text).unwrap()
}

fn server_config() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("iax.conf".to_string(), SERVER_IAX.to_string()),
        ("switch.toml".to_string(), SERVER_TOML.to_string()),
    ])
}

fn replay_it(pcap: &[u8], seed: u64) -> replay::ReplayOutcome {
    let c = capture::read(pcap).unwrap();
    assert!(c.problems.is_empty(), "{:?}", c.problems);
    let opts = ReplayOptions {
        seed,
        config: Some(server_config()),
        config_label: Some("server".into()),
        capture_name: "replay-self.pcap".into(),
        ..ReplayOptions::default()
    };
    replay::replay(&c, &opts).unwrap()
}

#[test]
fn a_simulated_capture_replays_with_every_exchange_matched() {
    let outcome = simnet::run(&scenario(), &RunOptions { seed: 3, network: Network::V4, pcap: true }).unwrap();
    assert!(!outcome.pcap.is_empty());
    let r = replay_it(&outcome.pcap, 1);
    let role = r.role.clone().unwrap();
    assert_eq!(role.switch, "192.168.0.2:4569".parse().unwrap(), "the server answered REGREQ and NEW");
    let bad: Vec<String> = r
        .exchanges
        .iter()
        .filter(|x| x.verdict != replay::Verdict::Matched)
        .map(|x| format!("#{} {:?}: {}", x.n, x.stimulus.as_ref().map(|s| &s.label), x.verdict))
        .collect();
    assert!(bad.is_empty(), "{}\n\n{}", bad.join("\n"), r.report_md);
    assert!(r.counts.exchanges > 50, "{}", r.counts.line());
    assert!(r.report_md.contains("MD5 result recomputed"), "{}", r.report_md);
    assert!(r.report_md.contains("call token replaced"), "{}", r.report_md);
    assert!(r.report_md.trim_end().ends_with(&r.counts.line()));

    // Same capture, same seed: byte-identical outputs; another seed: same verdicts.
    let again = replay_it(&outcome.pcap, 1);
    assert_eq!(again.report_md, r.report_md);
    assert_eq!(again.events_jsonl, r.events_jsonl);
    assert_eq!(again.pcap, r.pcap);
    assert_eq!(again.ladder_svg, r.ladder_svg);
    let other = replay_it(&outcome.pcap, 2);
    assert_eq!(other.counts, r.counts);
}

fn kept() -> (PathBuf, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../captures");
    (root.join("simnet__register-md5-call.pcap"), root.join("simnet__register-md5-call"))
}

/// Rewrites the kept capture and its configuration directory.
#[test]
#[ignore]
fn regenerate_the_kept_capture() {
    let outcome = simnet::run(&scenario(), &RunOptions { seed: 3, network: Network::V4, pcap: true }).unwrap();
    let (pcap, dir) = kept();
    std::fs::write(&pcap, &outcome.pcap).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in server_config() {
        std::fs::write(dir.join(name), text).unwrap();
    }
}

#[test]
fn the_kept_capture_replays_with_every_exchange_matched() {
    let (pcap, dir) = kept();
    let bytes = std::fs::read(&pcap).unwrap();
    let mut config = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let e = e.unwrap();
        config.insert(e.file_name().to_string_lossy().into_owned(), std::fs::read_to_string(e.path()).unwrap());
    }
    assert_eq!(config, server_config(), "the kept configuration is the scenario's");
    let c = capture::read(&bytes).unwrap();
    let opts = ReplayOptions { config: Some(config), ..ReplayOptions::default() };
    let r = replay::replay(&c, &opts).unwrap();
    assert_eq!(r.counts.exchanges, r.counts.matched, "{}", r.report_md);
}

/// IPv6, and the client qualifies the server (POKE, stateless PONG, ACK).
#[test]
fn ipv6_with_pokes_replays_with_every_exchange_matched() {
    let server_iax = SERVER_IAX.replace("bindaddr = 0.0.0.0", "bindaddr = ::");
    let text = format!(
        r#"
name = "replay-self-v6"
description = "client registers to server, qualifies it and calls its echo extension, over IPv6"
duration = "20s"
networks = ["v6"]

[link]
latency = "5ms"

[hosts.client]
iax_conf = """
[general]
bindaddr = ::
register => client:s3cret-long-enough@${{[server]}}

[server]
type = friend
host = ${{server}}
username = client
secret = s3cret-long-enough
auth = md5
qualify = yes
qualifyfreqok = 5000
context = inbound
"""

[hosts.server]
iax_conf = """
{server_iax}"""
switch_toml = """
{SERVER_TOML}"""

[[timeline]]
at = "2s"
action = "command"
host = "client"
line = "originate IAX2/server/600 app=pattern hold=1"
label = "call"
"#
    );
    let scenario = Scenario::parse(Path::new("replay-self-v6.toml"), &text).unwrap();
    let outcome = simnet::run(&scenario, &RunOptions { seed: 5, network: Network::V6, pcap: true }).unwrap();
    let c = capture::read(&outcome.pcap).unwrap();
    let config = BTreeMap::from([
        ("iax.conf".to_string(), server_iax.clone()),
        ("switch.toml".to_string(), SERVER_TOML.to_string()),
    ]);
    let r = replay::replay(&c, &ReplayOptions { config: Some(config), ..ReplayOptions::default() }).unwrap();
    assert!(r.role.as_ref().unwrap().switch.is_ipv6());
    assert!(r.report_md.contains("POKE"), "{}", r.report_md);
    assert_eq!(r.counts.exchanges, r.counts.matched, "{}", r.report_md);
}

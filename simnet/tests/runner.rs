//! Running scenarios: determinism, timeline actions in the trace, verdicts.
//!
//! These tests only rely on what the runtime does regardless of the IAX2
//! endpoint (started/config_loaded events, world events), so they hold while
//! the protocol is being written.

use std::path::Path;

use simnet::{run, Network, Outcome, RunOptions, Scenario, TraceEvent, WorldEvent};

const SCENARIO: &str = r#"name = "runner-test"
description = "Every timeline action once, on a lossy jittery link."
duration = "100s"

[link]
latency = "20ms"
jitter = "5ms"
loss = "5%"
duplicate = 0.01

[capture]
until = "60s"

[hosts.a]
iax_conf = """
[general]
bindaddr = ${any}
register => A:trunk-secret-A@${[b]}

[B]
type = friend
host = dynamic
secret = trunk-secret-B
"""

[hosts.b]
iax_conf = """
[general]
bindaddr = ${any}
register => B:trunk-secret-B@${[a]}

[A]
type = friend
host = dynamic
secret = trunk-secret-A
"""

[[timeline]]
at = "10s"
action = "set_link"
between = ["a", "b"]
loss = 0.2
label = "worse"

[[timeline]]
at = "20s"
action = "partition"
between = ["a", "b"]
label = "cut"

[[timeline]]
at = "30s"
action = "heal"
between = ["a", "b"]
label = "heal"

[[timeline]]
at = "40s"
action = "partition"
from = "a"
to = "b"

[[timeline]]
at = "45s"
action = "heal"
from = "a"
to = "b"

[[timeline]]
at = "50s"
action = "crash"
host = "b"
label = "crash"

[[timeline]]
at = "55s"
action = "reload"
host = "b"
label = "reload-down"

[[timeline]]
at = "60s"
action = "restart"
host = "b"
label = "restart"

[[timeline]]
at = "70s"
action = "set_config"
host = "b"
label = "newconf"
iax_conf = """
[general]
bindaddr = ${any}
"""

[[timeline]]
at = "70s"
action = "reload"
host = "b"
label = "reload"

[[timeline]]
at = "80s"
action = "set_link"
latency = "50ms"
label = "slow"

[[expect]]
description = "b crashes at its time"
host = "b"
event = "crash"
after = "crash"
within = "0s"

[[expect]]
description = "a reload while b is down is not delivered"
host = "b"
event = "reload"
where = { delivered = false }
after = "reload-down"
within = "1s"

[[expect]]
description = "the reload after the restart is delivered"
host = "b"
event = "reload"
where = { delivered = true, label = "reload" }
after = "reload"
within = "0s"

[[expect]]
description = "deliberately failing: a partition happens"
kind = "never"
event = "partition"

[[expect]]
description = "deliberately failing: at most one partition"
event = "partition"
at_most = 1

[[expect]]
description = "the last link change is the latency one"
kind = "last"
event = "set_link"
is = { latency_ms = 50, loss = { lt = 0.1 } }

[[expect]]
description = "deliberately failing: a set_config before the start of the window"
host = "b"
event = "set_config"
after = "slow"
within = "10s"

[[expect]]
description = "b starts twice (v4: the runtime emits started)"
host = "b"
event = "started"
at_least = 2

[[expect]]
description = "b loads its config after the reload (v4)"
host = "b"
event = "config_loaded"
after = "reload"
within = "1s"
"#;

fn scenario() -> Scenario {
    Scenario::parse(Path::new("runner-test.toml"), SCENARIO).unwrap_or_else(|e| panic!("{e}"))
}

fn go(network: Network, seed: u64) -> Outcome {
    run(&scenario(), &RunOptions { seed, network, pcap: true }).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn same_seed_same_bytes() {
    for network in [Network::V4, Network::V6] {
        let a = go(network, 42);
        let b = go(network, 42);
        assert_eq!(a.events_jsonl, b.events_jsonl, "{network}");
        assert_eq!(a.report_md, b.report_md, "{network}");
        assert_eq!(a.pcap, b.pcap, "{network}");
        assert_eq!(a.datagrams, b.datagrams, "{network}");
        assert!(a.report_md.contains("seed 42"), "{}", a.report_md);
        assert!(a.report_md.contains(&format!("Network: {network}")));
    }
}

#[test]
fn shipped_scenarios_are_deterministic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let s = Scenario::load(&dir.join("double-registration-restart.toml")).unwrap_or_else(|e| panic!("{e}"));
    for network in s.networks() {
        let opts = RunOptions { seed: 3, network, pcap: true };
        let (a, b) = (run(&s, &opts).unwrap(), run(&s, &opts).unwrap());
        assert_eq!((a.events_jsonl, a.report_md, a.pcap), (b.events_jsonl, b.report_md, b.pcap), "{network}");
    }
}

#[test]
fn timeline_actions_appear_in_the_trace_at_their_times() {
    let o = go(Network::V4, 1);
    let world: Vec<(u128, &str, &str)> = o
        .events
        .iter()
        .filter(|e| matches!(e.event, TraceEvent::World(_)))
        .map(|e| (e.at.as_millis(), e.host.as_str(), e.event.name()))
        .collect();
    assert_eq!(
        world,
        vec![
            (10_000, "world", "set_link"),
            (20_000, "world", "partition"),
            (30_000, "world", "heal"),
            (40_000, "world", "partition"),
            (45_000, "world", "heal"),
            (50_000, "b", "crash"),
            (55_000, "b", "reload"),
            (60_000, "b", "restart"),
            (70_000, "b", "set_config"),
            (70_000, "b", "reload"),
            (80_000, "world", "set_link"),
        ]
    );
    let oneway = o.events.iter().find_map(|e| match &e.event {
        TraceEvent::World(WorldEvent::Partition { oneway: true, from, to, .. }) => Some((from.clone(), to.clone())),
        _ => None,
    });
    assert_eq!(oneway, Some(("a".to_string(), "b".to_string())));
    assert!(o.events.windows(2).all(|w| w[0].at <= w[1].at), "trace in time order");
    assert_eq!(o.sim_duration.as_secs(), 100);
}

#[test]
fn events_jsonl_lines_lead_with_time_host_and_event() {
    let o = go(Network::V4, 1);
    let lines: Vec<&str> = o.events_jsonl.lines().collect();
    assert_eq!(lines.len(), o.events.len());
    assert!(lines[0].starts_with(r#"{"t_ms":0,"host":"a","event":"started","#), "{}", lines[0]);
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON");
        assert!(v["t_ms"].is_u64() && v["host"].is_string() && v["event"].is_string(), "{line}");
    }
    let crash = lines.iter().find(|l| l.contains(r#""event":"crash""#)).expect("crash line");
    assert_eq!(*crash, r#"{"t_ms":50000,"host":"b","event":"crash","label":"crash"}"#);
}

#[test]
fn verdicts_pass_and_fail_with_reasons() {
    let o = go(Network::V4, 1);
    let v = &o.verdicts;
    assert_eq!(v.len(), 9);
    assert!(v[0].passed, "{:?}", v[0]);
    assert!(v[0].detail.contains("50.000s"), "{:?}", v[0]);
    assert!(v[1].passed, "{:?}", v[1]);
    assert!(v[2].passed, "{:?}", v[2]);
    assert!(!v[3].passed);
    assert!(v[3].detail.contains("20.000s") && v[3].detail.contains("1 more"), "{:?}", v[3]);
    assert!(!v[4].passed);
    assert!(v[4].detail.contains("at most 1"), "{:?}", v[4]);
    assert!(v[5].passed, "{:?}", v[5]);
    assert!(!v[6].passed);
    assert!(v[6].detail.contains("before the window") && v[6].detail.contains("70.000s"), "{:?}", v[6]);
    assert!(v[7].passed, "{:?}", v[7]);
    assert!(v[8].passed, "{:?}", v[8]);
    assert!(!o.passed);
    assert!(o.report_md.contains("**FAIL**"));
    assert!(o.report_md.contains("| 50.000s | b | *crash* | label=crash |"), "{}", o.report_md);
}

#[test]
fn a_switch_that_cannot_start_is_an_event() {
    // 0.0.0.0 cannot be bound on an IPv6-only host; the switch's error lands in the trace.
    let text = SCENARIO.replace("bindaddr = ${any}", "bindaddr = 0.0.0.0");
    let s = Scenario::parse(Path::new("t.toml"), &text).unwrap();
    let o = run(&s, &RunOptions { seed: 1, network: Network::V6, pcap: false }).unwrap();
    let exited: Vec<&str> = o.events_jsonl.lines().filter(|l| l.contains("switch_exited")).collect();
    assert!(!exited.is_empty());
    assert!(exited[0].contains("IPv6-only"), "{}", exited[0]);
    assert!(o.pcap.is_empty());
}

#[test]
fn a_listener_on_the_v6_wildcard_falls_back_to_v4_on_a_host_without_ipv6() {
    // Host a has no IPv6: its `bindaddr = ::` falls back to 0.0.0.0 and says so;
    // host b keeps `::` (dual-stack on the v4 network). They still register.
    let text = SCENARIO.replacen("bindaddr = ${any}", "bindaddr = ::", 2).replacen(
        "[hosts.a]\niax_conf",
        "[hosts.a]\nipv6 = false\niax_conf",
        1,
    );
    let s = Scenario::parse(Path::new("t.toml"), &text).unwrap();
    let o = run(&s, &RunOptions { seed: 1, network: Network::V4, pcap: false }).unwrap();
    let fallback: Vec<&str> = o.events_jsonl.lines().filter(|l| l.contains("listener_fallback")).collect();
    assert_eq!(fallback.len(), 1, "{}", o.events_jsonl);
    assert!(fallback[0].contains(r#""host":"a""#), "{}", fallback[0]);
    assert!(fallback[0].contains(r#""requested":"[::]:4569""#), "{}", fallback[0]);
    assert!(fallback[0].contains(r#""bound":"0.0.0.0:4569""#), "{}", fallback[0]);
    assert!(fallback[0].contains(r#""listener":"iax.conf bindaddr""#), "{}", fallback[0]);
    assert!(fallback[0].contains("EAFNOSUPPORT"), "{}", fallback[0]);
    assert!(o.events_jsonl.lines().any(|l| l.contains(r#""host":"b""#) && l.contains("peer_registered")));
    assert!(o.events_jsonl.lines().any(|l| l.contains(r#""host":"a""#) && l.contains("peer_registered")));
    // A specific IPv6 address is not the wildcard: no fallback, the switch stops and says why.
    let text = text.replacen("bindaddr = ::", "bindaddr = 2001:db8::1", 1);
    let s = Scenario::parse(Path::new("t.toml"), &text).unwrap();
    let o = run(&s, &RunOptions { seed: 1, network: Network::V4, pcap: false }).unwrap();
    let exited: Vec<&str> = o.events_jsonl.lines().filter(|l| l.contains("switch_exited")).collect();
    assert!(exited.iter().any(|l| l.contains("2001:db8::1") && l.contains("no IPv6")), "{exited:?}");
}

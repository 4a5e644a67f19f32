//! `report.md` of a run: verdicts, traffic counters and the timeline.

use std::fmt::Write as _;

use crate::expect::summary;
use crate::runner::Outcome;
use crate::scenario::Scenario;
use crate::trace::TraceEvent;
use crate::units::{fmt_duration, fmt_time};

/// Timeline rows shown before the rest is left to `events.jsonl`.
const MAX_TIMELINE_ROWS: usize = 400;

/// Event kinds too chatty for the report's timeline (counted instead).
const QUIET: &[&str] = &["registration_sent", "datagram_dropped"];

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub(crate) fn render(scenario: &Scenario, o: &Outcome, captured: usize) -> String {
    let mut md = String::new();
    let passed = o.verdicts.iter().filter(|v| v.passed).count();
    let _ = writeln!(
        md,
        "# Scenario `{}` ({}, seed {})\n",
        o.scenario, o.network, o.seed
    );
    if !scenario.description.is_empty() {
        let _ = writeln!(md, "{}\n", scenario.description);
    }
    let _ = writeln!(
        md,
        "- **Result: {}** ({passed}/{} expectations)",
        if o.passed { "PASS" } else { "FAIL" },
        o.verdicts.len()
    );
    let _ = writeln!(md, "- Seed: {}", o.seed);
    let _ = writeln!(md, "- Network: {}", o.network);
    let _ = writeln!(md, "- Simulated time: {}", fmt_duration(o.sim_duration));
    let _ = writeln!(md, "- Datagrams on the wire: {}", o.datagrams);
    if !o.pcap.is_empty() {
        let _ = writeln!(md, "- Captured frames: {captured}");
    }
    let l = &scenario.link;
    let _ = writeln!(
        md,
        "- Default link: latency {}, jitter {}, loss {}, duplicate {}",
        fmt_duration(l.latency),
        fmt_duration(l.jitter),
        l.loss,
        l.duplicate
    );

    let _ = writeln!(md, "\n## Expectations\n");
    let _ = writeln!(md, "| # | Result | Expectation | Detail |");
    let _ = writeln!(md, "|---|--------|-------------|--------|");
    for (i, v) in o.verdicts.iter().enumerate() {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            i + 1,
            if v.passed { "pass" } else { "**FAIL**" },
            cell(&v.description),
            cell(&v.detail)
        );
    }

    let _ = writeln!(md, "\n## Hosts and traffic\n");
    let _ = writeln!(
        md,
        "| Host | Address | Sent | Lost | Blocked (partition) | Duplicated | On the wire |"
    );
    let _ = writeln!(
        md,
        "|------|---------|------|------|---------------------|------------|-------------|"
    );
    for (host, s) in &o.stats {
        let addr = o
            .addresses
            .get(host)
            .map(|a| a.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            md,
            "| {host} | {addr} | {} | {} | {} | {} | {} |",
            s.sent, s.lost, s.blocked, s.duplicated, s.on_wire
        );
    }

    let _ = writeln!(md, "\n## Timeline\n");
    let _ = writeln!(md, "| Time | Host | Event | Details |");
    let _ = writeln!(md, "|------|------|-------|---------|");
    let mut rows = 0;
    let mut omitted = 0;
    let mut quiet: std::collections::BTreeMap<&str, u64> = Default::default();
    for e in &o.events {
        let name = e.event.name();
        if QUIET.contains(&name) {
            *quiet.entry(name).or_default() += 1;
            continue;
        }
        if rows >= MAX_TIMELINE_ROWS {
            omitted += 1;
            continue;
        }
        rows += 1;
        let fields = match e.event.to_json() {
            serde_json::Value::Object(mut m) => {
                m.remove("event");
                m
            }
            _ => Default::default(),
        };
        let details = summary("", &fields);
        let shown = match &e.event {
            TraceEvent::World(_) => format!("*{name}*"),
            TraceEvent::Switch(_) => name.to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            fmt_time(e.at),
            cell(&e.host),
            shown,
            cell(details.trim())
        );
    }
    if omitted > 0 {
        let _ = writeln!(md, "\n{omitted} more events are in events.jsonl.");
    }
    if !quiet.is_empty() {
        let counts: Vec<String> = quiet.iter().map(|(k, v)| format!("{v} × `{k}`")).collect();
        let _ = writeln!(md, "\nNot listed above: {}.", counts.join(", "));
    }
    let _ = writeln!(
        md,
        "\n*Italic* events are the simulator's (timeline actions, switch exits)."
    );
    md
}

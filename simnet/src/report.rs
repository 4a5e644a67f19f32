//! `report.md` of a run: verdicts, traffic counters and the timeline.

use std::fmt::Write as _;
use std::time::Duration;

use crate::calls::{CallRecord, Media};
use crate::expect::summary;
use crate::ladder::{self, Ladder};
use crate::net::WireStats;
use crate::runner::Outcome;
use crate::scenario::Scenario;
use crate::trace::TraceEvent;
use crate::units::{fmt_duration, fmt_time};

/// Timeline rows shown before the rest is left to `events.jsonl`.
const MAX_TIMELINE_ROWS: usize = 400;

/// Event kinds too chatty for the report's timeline (counted instead).
const QUIET: &[&str] = &["registration_sent", "datagram_dropped"];

/// Call events, listed in the timeline only when the run has few calls.
const CALL_EVENTS: &[&str] = &["call_started", "call_answered", "call_rejected", "call_ended"];

/// Calls listed one by one in the calls table; the rest are summed up in one row.
const MAX_CALL_ROWS: usize = 20;

/// Longest text of a timeline cell (command answers can be long).
const MAX_CELL: usize = 300;

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn short(s: &str) -> String {
    if s.chars().count() <= MAX_CELL {
        return s.to_string();
    }
    let cut: String = s.chars().take(MAX_CELL).collect();
    format!("{cut}... (see events.jsonl)")
}

/// What the runner measured besides the trace.
pub(crate) struct Extra<'a> {
    pub calls: &'a [CallRecord],
    pub wire: &'a WireStats,
    pub ladders: &'a [Ladder],
}

pub(crate) fn render(scenario: &Scenario, o: &Outcome, captured: usize, x: &Extra<'_>) -> String {
    let mut md = String::new();
    let passed = o.verdicts.iter().filter(|v| v.passed).count();
    let _ = writeln!(md, "# Scenario `{}` ({}, seed {})\n", o.scenario, o.network, o.seed);
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
    let _ = writeln!(md, "| Host | Address | Sent | Lost | Blocked (partition) | Duplicated | On the wire |");
    let _ = writeln!(md, "|------|---------|------|------|---------------------|------------|-------------|");
    for (host, s) in &o.stats {
        let addr = o.addresses.get(host).map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(
            md,
            "| {host} | {addr} | {} | {} | {} | {} | {} |",
            s.sent, s.lost, s.blocked, s.duplicated, s.on_wire
        );
    }

    wire(&mut md, x.wire);
    if !x.calls.is_empty() {
        calls(&mut md, x.calls);
        media(&mut md, x.calls);
    }
    if !x.ladders.is_empty() {
        let _ = writeln!(md, "\n## Signalling ladder\n");
        let _ = writeln!(
            md,
            "IAX2 full frames of the first {} call(s), from the frame headers seen on the wire \
             (decoded with `switch::iax2::frame::decode`; mini and trunk voice frames are not shown; \
             the same as ladder.svg).\n",
            x.ladders.len()
        );
        for l in x.ladders {
            let _ = writeln!(md, "### {}\n", l.title);
            let _ = writeln!(md, "```text\n{}```\n", ladder::ascii(l));
        }
    }

    let _ = writeln!(md, "\n## Timeline\n");
    let _ = writeln!(md, "| Time | Host | Event | Details |");
    let _ = writeln!(md, "|------|------|-------|---------|");
    let mut rows = 0;
    let mut omitted = 0;
    let mut quiet: std::collections::BTreeMap<&str, u64> = Default::default();
    let many_calls = x.calls.len() > MAX_CALL_ROWS;
    for e in &o.events {
        let name = e.event.name();
        if QUIET.contains(&name) || (many_calls && CALL_EVENTS.contains(&name)) {
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
            TraceEvent::World(_) | TraceEvent::Nat(_) => format!("*{name}*"),
            TraceEvent::Switch(_) | TraceEvent::Actor(_) => name.to_string(),
        };
        let _ =
            writeln!(md, "| {} | {} | {} | {} |", fmt_time(e.at), cell(&e.host), shown, cell(&short(details.trim())));
    }
    if omitted > 0 {
        let _ = writeln!(md, "\n{omitted} more events are in events.jsonl.");
    }
    if !quiet.is_empty() {
        let counts: Vec<String> = quiet.iter().map(|(k, v)| format!("{v} × `{k}`")).collect();
        let _ = writeln!(md, "\nNot listed above: {}.", counts.join(", "));
    }
    let _ = writeln!(md, "\n*Italic* events are the simulator's (timeline actions, switch exits).");
    md
}

fn ms(d: Option<Duration>) -> String {
    d.map(fmt_time).unwrap_or_else(|| "-".into())
}

/// Per directed link: what went onto the wire, over the whole run.
fn wire(md: &mut String, w: &WireStats) {
    if w.links.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n## Wire\n");
    let _ = writeln!(
        md,
        "Measured at the senders' interfaces over the whole run (independent of the capture window). \
         Bytes are IP packets: IP and UDP headers plus the IAX2 datagram. The backlog is the most datagrams \
         sent to a host that its switch had not read yet (on the wire or in its socket queue).\n"
    );
    let _ =
        writeln!(md, "| From | To | Datagrams | IP bytes | Trunk datagrams | Busiest 20 ms | Receiver's max backlog |");
    let _ =
        writeln!(md, "|------|----|-----------|----------|-----------------|---------------|------------------------|");
    for ((f, t), traffic) in &w.links {
        let total = traffic.all();
        let busiest = traffic.buckets.iter().map(|b| b.datagrams).max().unwrap_or(0);
        let name = |i: &usize| w.hosts.get(*i).cloned().unwrap_or_default();
        let backlog = w.backlog.get(*t).map_or(0, |b| b.high_water);
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {busiest} datagrams | {backlog} |",
            name(f),
            name(t),
            total.datagrams,
            total.ip_bytes,
            total.trunk
        );
    }
}

fn media_cells(m: &Option<Media>) -> String {
    match m {
        Some(m) => format!(
            "{} | {} | {} | {} | {} | {} | {}",
            m.frames_sent, m.frames_received, m.lost, m.reordered, m.late, m.concealed, m.jitter_ms
        ),
        None => "- | - | - | - | - | - | -".into(),
    }
}

/// One row per call (the first [`MAX_CALL_ROWS`]), then the rest summed up.
fn calls(md: &mut String, calls: &[CallRecord]) {
    let _ = writeln!(md, "\n## Calls\n");
    let answered = calls.iter().filter(|c| c.answered.is_some()).count();
    let rejected = calls.iter().filter(|c| c.rejected).count();
    let ended = calls.iter().filter(|c| c.media.is_some()).count();
    let _ = writeln!(
        md,
        "{} call record(s) (a call between two switches is one on each): {answered} answered, {rejected} rejected, \
         {ended} ended with media statistics, {} still up at the end.\n",
        calls.len(),
        calls.iter().filter(|c| c.answered.is_some() && c.finished.is_none()).count()
    );
    let _ = writeln!(
        md,
        "| Host | Call | Direction | Peer | Extension | Started | Answered | Finished | Outcome | Enc | Sent | Received | Lost | Reordered | Late | Concealed | Jitter ms |"
    );
    let _ = writeln!(
        md,
        "|------|------|-----------|------|-----------|---------|----------|----------|---------|-----|------|----------|------|-----------|------|-----------|-----------|"
    );
    for c in calls.iter().take(MAX_CALL_ROWS) {
        let exten = if c.context.is_empty() { c.exten.clone() } else { format!("{}@{}", c.exten, c.context) };
        let outcome = match (&c.code, c.rejected) {
            (Some(code), true) => format!("rejected {code}: {}", c.cause),
            (Some(code), false) => format!("ended {code}: {}", c.cause),
            (None, _) if c.answered.is_some() => "up".into(),
            (None, _) => "ringing".into(),
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell(&c.host),
            c.call,
            c.direction,
            cell(&c.peer),
            cell(&exten),
            ms(c.started),
            ms(c.answered),
            ms(c.finished),
            cell(&outcome),
            if c.encrypted { "yes" } else { "no" },
            media_cells(&c.media)
        );
    }
    if calls.len() > MAX_CALL_ROWS {
        let rest = &calls[MAX_CALL_ROWS..];
        let sum = sum_media(rest.iter());
        let _ = writeln!(
            md,
            "| *{} more* | | | | | {} .. {} | {} answered | {} finished | {} rejected | {} | {} |",
            rest.len(),
            ms(rest.first().map(CallRecord::begin)),
            ms(rest.last().map(CallRecord::begin)),
            rest.iter().filter(|c| c.answered.is_some()).count(),
            rest.iter().filter(|c| c.finished.is_some()).count(),
            rest.iter().filter(|c| c.rejected).count(),
            rest.iter().filter(|c| c.encrypted).count(),
            media_cells(&Some(Media { jitter_ms: sum.max_jitter_ms, ..sum.media }))
        );
        let _ = writeln!(md, "\nThe last row sums the other calls (jitter: the largest).");
    }
}

struct MediaSum {
    media: Media,
    calls: u64,
    jitter_sum_ms: u64,
    max_jitter_ms: u64,
}

fn sum_media<'a>(calls: impl Iterator<Item = &'a CallRecord>) -> MediaSum {
    let mut s = MediaSum { media: Media::default(), calls: 0, jitter_sum_ms: 0, max_jitter_ms: 0 };
    for m in calls.filter_map(|c| c.media.as_ref()) {
        s.calls += 1;
        s.media.frames_sent += m.frames_sent;
        s.media.frames_received += m.frames_received;
        s.media.lost += m.lost;
        s.media.reordered += m.reordered;
        s.media.duplicated += m.duplicated;
        s.media.late += m.late;
        s.media.concealed += m.concealed;
        s.media.ts_irregular += m.ts_irregular;
        s.jitter_sum_ms += m.jitter_ms;
        s.max_jitter_ms = s.max_jitter_ms.max(m.jitter_ms);
    }
    s
}

/// Media statistics summed per host and direction over the calls that ended.
fn media(md: &mut String, calls: &[CallRecord]) {
    if !calls.iter().any(|c| c.media.is_some()) {
        return;
    }
    let mut groups: Vec<(&str, &str)> = calls.iter().map(|c| (c.host.as_str(), c.direction.as_str())).collect();
    groups.sort();
    groups.dedup();
    let _ = writeln!(md, "\n## Media\n");
    let _ = writeln!(
        md,
        "Summed over the calls that ended (their `call_ended` statistics: what each side received). \
         Jitter is RFC 3550 interarrival jitter.\n"
    );
    let _ = writeln!(
        md,
        "| Host | Direction | Calls | Frames sent | Frames received | Lost | Reordered | Duplicated | Late | Concealed | Timestamp irregular | Mean jitter ms | Max jitter ms |"
    );
    let _ = writeln!(
        md,
        "|------|-----------|-------|-------------|-----------------|------|-----------|------------|------|-----------|---------------------|----------------|---------------|"
    );
    for (host, direction) in groups {
        let s = sum_media(calls.iter().filter(|c| c.host == host && c.direction == direction));
        if s.calls == 0 {
            continue;
        }
        let m = &s.media;
        let _ = writeln!(
            md,
            "| {} | {direction} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            cell(host),
            s.calls,
            m.frames_sent,
            m.frames_received,
            m.lost,
            m.reordered,
            m.duplicated,
            m.late,
            m.concealed,
            m.ts_irregular,
            s.jitter_sum_ms as f64 / s.calls as f64,
            s.max_jitter_ms
        );
    }
}

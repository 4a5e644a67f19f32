//! report.md and events.jsonl of a replay.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::compare::{header, label, Counts, Exchange, Verdict};
use super::remote::Entry;
use super::{ladder, ReplayOptions, ReplayOutcome, LATENCY, LEAD};
use crate::capture::{Capture, RoleChoice};
use crate::trace::TimedEvent;

/// What the report is made of.
pub(crate) struct Inputs<'a> {
    pub capture: &'a Capture,
    pub opts: &'a ReplayOptions,
    pub summary: &'a str,
    /// The role, the switch's replay address and the remote parties' replay addresses.
    pub role: Option<(&'a RoleChoice, SocketAddr, &'a [SocketAddr])>,
    pub sip_role: Option<&'a RoleChoice>,
    /// The built-in configuration's text (`None` with `--config`).
    pub config_text: Option<String>,
    pub exchanges: &'a [Exchange],
    pub switch_events: &'a [TimedEvent],
    pub logs: &'a [Vec<Entry>],
    /// Simulated host names of the remote parties.
    pub remotes: &'a [String],
    pub sim_duration: Duration,
    pub note: Option<String>,
    /// The SIP replay's own section (transport, shortened gaps, passwords,
    /// RTP); `None` when SIP was not replayed.
    pub sip_section: Option<String>,
    /// How far the parties' schedules slipped waiting for the switch's
    /// answers; `None` when nothing was driven.
    pub slip: Option<super::Slip>,
    /// The SIP context callers land in (to name it in explanations).
    pub sip_context: Option<String>,
}

fn ms(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// Escapes a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn json_line(at: Duration, host: &str, event: &str, fields: serde_json::Value) -> String {
    let mut line = format!("{{\"t_ms\":{},\"host\":{},\"event\":{}", at.as_millis(), json_str(host), json_str(event));
    if let serde_json::Value::Object(map) = fields {
        for (k, v) in map {
            let _ = write!(line, ",{}:{}", json_str(&k), v);
        }
    }
    line.push('}');
    line
}

impl Inputs<'_> {
    pub fn finish(self, pcap: Vec<u8>, sip_skipped: usize) -> ReplayOutcome {
        let counts = Counts::of(self.exchanges);
        let events_jsonl = self.events();
        let ladder_svg = ladder::svg(self.exchanges, self.role.map(|r| r.0), &self.opts.capture_name, &counts);
        let report_md = self.report(&counts, sip_skipped);
        ReplayOutcome {
            exchanges: self.exchanges.to_vec(),
            counts,
            summary: self.summary.to_string(),
            report_md,
            events_jsonl,
            pcap,
            ladder_svg,
            role: self.role.map(|r| r.0.clone()),
            sip_skipped,
            sim_duration: self.sim_duration,
            not_replayable: None,
        }
    }

    fn events(&self) -> String {
        let mut lines: Vec<(Duration, String)> = Vec::new();
        for e in self.switch_events {
            lines.push((e.at, e.to_json_line()));
        }
        for (log, host) in self.logs.iter().zip(self.remotes) {
            for e in log {
                let line = match e {
                    Entry::Sent { at, stimulus: _, bytes, notes } => json_line(
                        *at,
                        host,
                        "replay_sent",
                        serde_json::json!({ "frame": label(bytes), "header": header(bytes), "rewrites": notes }),
                    ),
                    Entry::Adapted { at, bytes, why } => json_line(
                        *at,
                        host,
                        "replay_adapted",
                        serde_json::json!({ "frame": label(bytes), "header": header(bytes), "why": why }),
                    ),
                    Entry::NotSent { at, stimulus: _, why } => {
                        json_line(*at, host, "replay_not_sent", serde_json::json!({ "why": why }))
                    }
                    Entry::Received { at, bytes, adaptation } => json_line(
                        *at,
                        host,
                        "replay_received",
                        serde_json::json!({ "frame": label(bytes), "header": header(bytes), "not_compared": adaptation }),
                    ),
                };
                lines.push((e.at(), line));
            }
        }
        for x in self.exchanges {
            let at = x.stimulus.as_ref().and_then(|s| s.sent.as_ref().ok()).map_or(self.sim_duration, |t| LEAD + *t);
            let mut fields = serde_json::json!({
                "n": x.n,
                "remote": x.remote.to_string(),
                "capture_frame": x.stimulus.as_ref().map(|s| s.frame_no),
                "verdict": x.verdict.name(),
            });
            if let (Verdict::Diverged { field, captured, replayed }, Some(map)) = (&x.verdict, fields.as_object_mut()) {
                map.insert("field".into(), field.clone().into());
                map.insert("captured".into(), captured.clone().into());
                map.insert("replayed".into(), replayed.clone().into());
            }
            lines.push((at, json_line(at, "replay", "replay_exchange", fields)));
        }
        lines.sort_by_key(|(at, _)| *at); // stable: ties keep their order
        let mut out = String::new();
        for (_, l) in lines {
            out.push_str(&l);
            out.push('\n');
        }
        out
    }

    fn report(&self, counts: &Counts, sip_skipped: usize) -> String {
        let mut s = String::new();
        let o = self.opts;
        let _ = writeln!(s, "# Replay of `{}`\n", o.capture_name);
        let c = self.capture;
        let _ = writeln!(s, "| | |\n|---|---|");
        let _ = writeln!(s, "| capture | `{}`: {}, {} records |", cell(&o.capture_name), c.format, c.records);
        let _ = writeln!(s, "| seed | {} |", o.seed);
        match self.role {
            Some((r, switch, remotes)) => {
                let rs: Vec<String> =
                    r.remotes.iter().zip(remotes).map(|(c, p)| format!("{c} (replayed as {p})")).collect();
                let _ = writeln!(s, "| role | the switch plays {} ({}) |", r.switch, cell(&r.reason));
                let _ = writeln!(s, "| switch in the replay | {switch} |");
                let _ = writeln!(s, "| remote parties | {} |", rs.join(", "));
            }
            None => {
                let _ = writeln!(s, "| role | none: nothing to replay |");
            }
        }
        let config = match (&o.config_label, &self.config_text) {
            (Some(l), _) => format!("`{}`", cell(l)),
            (None, Some(_)) => "built-in (below)".into(),
            (None, None) => "built-in".into(),
        };
        let _ = writeln!(s, "| configuration | {config} |");
        let sip_client = self.sip_section.is_some() && o.role == crate::capture::RoleRequest::Client;
        if sip_client {
            let _ = writeln!(
                s,
                "| comparison | per SIP transaction of the switch: method, Request-URI user, credentials (presence only), SDP media (kind, first payload type); tags, branches, Call-IDs, nonces, cnonce/response, Contact, User-Agent, addresses, CSeq numbers and retransmissions normalised; the switch's responses to the server's requests as in the server role |"
            );
        } else if self.sip_section.is_some() {
            let _ = writeln!(
                s,
                "| comparison | per SIP transaction: status codes, challenge kind, Content-Type and SDP media (kind, first payload type); tags, nonces, branches, Server/User-Agent, Contact, Via received/rport, SDP origin/addresses/ports, 100 Trying and retransmissions normalised |"
            );
        } else {
            let _ = writeln!(
                s,
                "| comparison | switch timestamps within {} ms; call numbers, challenges, call tokens and the remote's apparent address normalised |",
                o.tolerance.timestamp.as_millis()
            );
        }
        let _ = writeln!(
            s,
            "| simulation | captured time 0 at {} s; {} ms one way; {} simulated |",
            LEAD.as_secs(),
            LATENCY.as_millis(),
            crate::units::fmt_time(self.sim_duration)
        );
        if let Some(slip) = &self.slip {
            let _ = writeln!(s, "| schedule | {} |", cell(&slip.describe()));
        }
        let media = |f: fn(&super::Exchange) -> &[super::compare::Answer]| {
            self.exchanges.iter().map(|e| super::compare::media_frames(f(e))).sum::<usize>()
        };
        let (mc, mr) = (media(|e| &e.captured), media(|e| &e.replayed));
        if mc + mr > 0 {
            let _ = writeln!(
                s,
                "| media | the switch's voice (trunk entries and mini frames), counted over the conversation, not \
                 compared exchange by exchange: captured {mc}, replayed {mr} |"
            );
        }
        let _ = writeln!(
            s,
            "| verdicts | {} exchanges: {} matched, {} diverged, {} missing, {} extra |\n",
            counts.exchanges, counts.matched, counts.diverged, counts.missing, counts.extra
        );
        if let Some(n) = &self.note {
            let _ = writeln!(s, "{n}\n");
        }

        let _ = writeln!(s, "## What the capture holds\n\n```text\n{}```\n", self.summary);

        if !self.exchanges.is_empty() {
            if self.sip_section.is_some() {
                let _ = writeln!(s, "## Exchanges (SIP)\n");
                let _ = writeln!(
                    s,
                    "Each exchange is one SIP transaction: a request of the remote party (captured frame number; \
                     its retransmissions included) and the switch's responses to it, or a request of the switch \
                     (with --role client: compared with the captured client's request). \
                     Times are seconds from the conversation's first captured message. `ladder.svg` draws them \
                     side by side.\n"
                );
            } else {
                let _ = writeln!(s, "## Exchanges (IAX2)\n");
                let _ = writeln!(
                    s,
                    "Each exchange is one datagram of the remote party (captured frame number) and what the switch \
                     sent until the remote party's next one. Times are seconds from the conversation's first \
                     captured datagram. `ladder.svg` draws them side by side.\n"
                );
            }
            let _ = writeln!(s, "| # | time | remote party sent | captured answers | replayed answers | verdict |");
            let _ = writeln!(s, "|---:|---:|---|---|---|---|");
            for x in self.exchanges {
                let (time, stim) = match &x.stimulus {
                    Some(st) => {
                        let sent = match &st.sent {
                            Ok(_) => String::new(),
                            Err(_) => " (not sent)".into(),
                        };
                        (ms(st.captured_at), format!("#{} {}{sent}", st.frame_no, st.label))
                    }
                    None => (
                        x.captured.first().or(x.replayed.first()).map_or(String::new(), |a| ms(a.at)),
                        if self.sip_section.is_some() {
                            "(a request of the switch)".into()
                        } else {
                            "(nothing yet: the switch spoke first)".into()
                        },
                    ),
                };
                let list = |l: &[super::compare::Answer]| {
                    if l.is_empty() {
                        "—".to_string()
                    } else {
                        l.iter().map(|a| label(&a.bytes)).collect::<Vec<_>>().join(", ")
                    }
                };
                let verdict = match &x.verdict {
                    Verdict::Diverged { field, captured, replayed } => {
                        format!("**diverged**: {field}: captured `{captured}`, replayed `{replayed}`")
                    }
                    Verdict::Matched => "matched".into(),
                    Verdict::Missing => "**missing**".into(),
                    Verdict::Extra => "**extra**".into(),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} | {} |",
                    x.n,
                    time,
                    cell(&stim),
                    cell(&list(&x.captured)),
                    cell(&list(&x.replayed)),
                    cell(&verdict)
                );
            }
            let _ = writeln!(s);

            // What each divergence means, from the switch's events.
            let party = match self.role {
                Some((r, ..)) if r.reason.contains("client") => "client",
                _ => "server",
            };
            let cx = super::explain::Context {
                events: self.switch_events,
                lead: LEAD,
                party,
                sip_context: self.sip_context.as_deref(),
            };
            let words: Vec<String> = self
                .exchanges
                .iter()
                .filter_map(|x| super::explain::explain(x, &cx).map(|w| format!("- exchange {}: {w}", x.n)))
                .collect();
            if !words.is_empty() {
                let _ = writeln!(s, "### What the differences mean\n\n{}\n", words.join("\n"));
            }

            // Rewrites, adaptations and normalisations, per exchange.
            let mut details = String::new();
            for x in self.exchanges {
                let mut lines = Vec::new();
                if let Some(st) = &x.stimulus {
                    if let Err(why) = &st.sent {
                        lines.push(format!("not sent: {why}"));
                    }
                    if !st.notes.is_empty() {
                        lines.push(format!("rewritten: {}", st.notes.join("; ")));
                    }
                }
                for a in &x.adaptations {
                    let dir = if a.sent { "remote sent" } else { "switch sent (not compared)" };
                    lines.push(format!("adaptation at {}: {dir} {}: {}", ms(a.at), a.label, a.why));
                }
                let mut norm = x.normalised.clone();
                norm.dedup();
                if !norm.is_empty() {
                    lines.push(format!("normalised: {}", norm.join("; ")));
                }
                if !lines.is_empty() {
                    let _ = writeln!(details, "- exchange {}:", x.n);
                    for l in lines {
                        let _ = writeln!(details, "  - {l}");
                    }
                }
            }
            if !details.is_empty() {
                let _ = writeln!(s, "### Rewrites and adaptations\n\n{details}");
            }
        }

        let _ = writeln!(s, "## SIP\n");
        if let Some(section) = &self.sip_section {
            s.push_str(section);
        } else if sip_skipped == 0 {
            let _ = writeln!(s, "The capture holds no SIP.\n");
        } else {
            let who = self.sip_role.map_or(String::new(), |r| format!(" (the answering party is {})", r.switch));
            let why = if self.capture.count("IAX2") > 0 {
                "the capture also holds IAX2, which is what is replayed"
            } else {
                "no SIP REGISTER or INVITE was answered, so there is no party to take the place of"
            };
            let _ = writeln!(
                s,
                "SIP skipped: {sip_skipped} SIP message(s) were found{who} and not replayed, because {why}. They are \
                 not counted in the verdicts below.\n"
            );
        }

        let _ = writeln!(s, "## The switch's events\n");
        let mut by_name: BTreeMap<&str, usize> = BTreeMap::new();
        for e in self.switch_events {
            *by_name.entry(e.event.name()).or_default() += 1;
        }
        if by_name.is_empty() {
            let _ = writeln!(s, "None.\n");
        } else {
            for e in self.switch_events.iter().filter(|e| e.event.name() != "datagram_dropped").take(40) {
                let mut json = e.to_json_line();
                json.truncate(300);
                let _ = writeln!(s, "- {} `{}`", crate::units::fmt_time(e.at), json);
            }
            let counted: Vec<String> = by_name.iter().map(|(k, n)| format!("{k} x{n}")).collect();
            let _ = writeln!(s, "\nAll events: {} (`events.jsonl` has them all).\n", counted.join(", "));
        }
        if let Some(text) = &self.config_text {
            let _ = writeln!(s, "## Built-in configuration\n\n```ini\n{text}```\n");
        }
        s.push_str(&counts.line());
        s.push('\n');
        s
    }
}

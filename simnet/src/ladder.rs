//! Ladder diagrams of the IAX2 signalling of the first calls of a run, drawn
//! from the full frame headers the world kept off the wire (independent of the
//! capture window), as ASCII for report.md and as SVG.

use std::fmt::Write as _;
use std::time::Duration;

use switch::iax2::frame::{decode, Frame};
use switch::iax2::subclass::{format, FrameType, IaxSubclass};

use crate::calls::CallRecord;
use crate::net::{Fate, FullFrameRecord, WireStats};
use crate::units::fmt_time;

/// Calls drawn.
pub(crate) const LADDER_CALLS: usize = 3;
/// Rows drawn per call: the first [`HEAD_ROWS`] and the last [`TAIL_ROWS`] of longer ones.
const HEAD_ROWS: usize = 24;
const TAIL_ROWS: usize = 10;
/// Frames that still belong to a call after it ended (the HANGUP's ACK, retransmissions).
const LINGER: Duration = Duration::from_secs(3);
/// Characters between two lifelines.
const WIDTH: usize = 34;
/// How far short of its target a dropped frame's arrow stops.
const DROP_GAP: usize = 6;

/// One frame of a ladder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Row {
    pub at: Duration,
    /// Column indices.
    pub from: usize,
    pub to: usize,
    /// `NEW`, `ANSWER (Control)`, `VOICE ulaw`, ...
    pub name: String,
    /// Call numbers, sequence numbers, timestamp.
    pub note: String,
    /// Dropped on the way (lost or blocked): the arrow stops short.
    pub dropped: bool,
}

/// The ladder of one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ladder {
    pub title: String,
    /// Host names of the columns.
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
}

/// The frame's name as a ladder label.
fn frame_name(header: &[u8; 12], encrypted: bool) -> String {
    if encrypted {
        return "(encrypted)".into();
    }
    match decode(header) {
        Ok(Frame::Full(f)) => {
            let name = match f.frame_type {
                FrameType::Iax => f.iax().map_or_else(|| format!("IAX {}", f.subclass), |s| s.name().to_string()),
                FrameType::Control => {
                    f.control().map_or_else(|| format!("CONTROL {}", f.subclass), |s| format!("{} (Control)", s.name()))
                }
                FrameType::Voice => format!("VOICE {}", format::name(f.subclass).unwrap_or("?")),
                other => other.name().to_string(),
            };
            if f.retransmitted {
                format!("{name} (retx)")
            } else {
                name
            }
        }
        Ok(_) => "(not a full frame)".into(),
        Err(e) => format!("(undecodable: {e})"),
    }
}

fn calls_of(header: &[u8; 12]) -> (u16, u16) {
    (u16::from_be_bytes([header[0], header[1]]) & 0x7fff, u16::from_be_bytes([header[2], header[3]]) & 0x7fff)
}

/// Ladders of the first [`LADDER_CALLS`] calls (outbound ones when there are any).
pub(crate) fn ladders(calls: &[CallRecord], wire: &WireStats, end: Duration) -> Vec<Ladder> {
    let outbound: Vec<&CallRecord> = calls.iter().filter(|c| c.direction == "outbound").collect();
    let chosen: Vec<&CallRecord> = if outbound.is_empty() { calls.iter().collect() } else { outbound };
    chosen.into_iter().take(LADDER_CALLS).filter_map(|c| ladder(c, wire, end)).collect()
}

fn ladder(c: &CallRecord, wire: &WireStats, end: Duration) -> Option<Ladder> {
    let me = wire.index(&c.host)?;
    let (from_t, until) = (c.begin(), c.finished.map_or(end, |f| f + LINGER));
    let frames: Vec<&FullFrameRecord> = wire
        .full_frames
        .iter()
        .filter(|f| f.at >= from_t && f.at <= until)
        .filter(|f| {
            let (src, dst) = calls_of(&f.header);
            (f.from == me && src == c.call) || (f.to == me && dst == c.call)
        })
        .collect();
    if frames.is_empty() {
        return None;
    }
    let mut columns = vec![me];
    for f in &frames {
        for h in [f.from, f.to] {
            if !columns.contains(&h) {
                columns.push(h);
            }
        }
    }
    let col = |h: usize| columns.iter().position(|c| *c == h).unwrap_or(0);
    let mut encrypted = false;
    let mut rows = Vec::new();
    for f in frames {
        let name = frame_name(&f.header, encrypted);
        let (src, dst) = calls_of(&f.header);
        let mut note = match decode(&f.header) {
            Ok(Frame::Full(x)) if !encrypted => {
                format!("{src}->{dst} o{} i{} ts {} ({} B)", x.oseqno, x.iseqno, x.timestamp, f.len)
            }
            _ => format!("{src}->{dst} ({} B)", f.len),
        };
        match f.fate {
            Fate::Wire => {}
            Fate::Lost => note.push_str(" LOST"),
            Fate::Blocked => note.push_str(" BLOCKED (partition)"),
        }
        // NEW and AUTHREQ travel in clear; an encrypted call encrypts from the AUTHREP on.
        if c.encrypted && name == IaxSubclass::AuthReq.name() {
            encrypted = true;
        }
        rows.push(Row { at: f.at, from: col(f.from), to: col(f.to), name, note, dropped: f.fate != Fate::Wire });
    }
    let exten = if c.context.is_empty() { c.exten.clone() } else { format!("{}@{}", c.exten, c.context) };
    let outcome = match (c.rejected, c.answered.is_some(), &c.code) {
        (true, _, Some(code)) => format!("rejected: {} (cause {code})", c.cause),
        (_, true, Some(code)) => format!("answered, ended: {} (cause {code})", c.cause),
        (_, true, None) => "answered, still up at the end".into(),
        _ => "not answered".into(),
    };
    Some(Ladder {
        title: format!("Call {} on {} ({}) to {} `{exten}`: {outcome}", c.call, c.host, c.direction, c.peer),
        columns: columns.iter().map(|i| wire.hosts.get(*i).cloned().unwrap_or_default()).collect(),
        rows,
    })
}

/// The rows shown: all of a short ladder; the head and tail of a long one
/// (`None` marks the gap, with the number of rows left out).
fn shown(rows: &[Row]) -> Vec<Result<&Row, usize>> {
    if rows.len() <= HEAD_ROWS + TAIL_ROWS + 1 {
        return rows.iter().map(Ok).collect();
    }
    let mut out: Vec<Result<&Row, usize>> = rows[..HEAD_ROWS].iter().map(Ok).collect();
    out.push(Err(rows.len() - HEAD_ROWS - TAIL_ROWS));
    out.extend(rows[rows.len() - TAIL_ROWS..].iter().map(Ok));
    out
}

/// One ladder as ASCII art (for a Markdown code block).
pub(crate) fn ascii(l: &Ladder) -> String {
    let n = l.columns.len();
    let line_len = (n - 1) * WIDTH + 1;
    let mut s = String::new();
    let mut head = format!("{:>10}  ", "time");
    for (i, name) in l.columns.iter().enumerate() {
        let cell = if i + 1 < n { WIDTH } else { name.len() };
        let _ = write!(head, "{name:<cell$}");
    }
    let _ = writeln!(s, "{}", head.trim_end());
    for r in shown(&l.rows) {
        let mut line: Vec<char> = vec![' '; line_len];
        for c in 0..n {
            line[c * WIDTH] = '|';
        }
        match r {
            Err(skipped) => {
                let _ = writeln!(s, "{:>10}  {}", "...", format!("({skipped} more frames)").trim_end());
                continue;
            }
            Ok(r) => {
                let (a, b) = (r.from.min(r.to) * WIDTH, r.from.max(r.to) * WIDTH);
                if a == b {
                    // Loopback: never on the wire, cannot happen; draw nothing.
                } else {
                    // Dash positions lo..=hi; a dropped frame stops short with an `x`.
                    let (mut lo, mut hi) = (a + 1, b - 1);
                    let rightwards = r.to > r.from;
                    if r.dropped {
                        if rightwards {
                            hi -= DROP_GAP;
                        } else {
                            lo += DROP_GAP;
                        }
                    }
                    for ch in &mut line[lo..=hi] {
                        *ch = '-';
                    }
                    match (rightwards, r.dropped) {
                        (true, false) => line[hi] = '>',
                        (false, false) => line[lo] = '<',
                        (true, true) => line[hi] = 'x',
                        (false, true) => line[lo] = 'x',
                    }
                    let label: Vec<char> = format!(" {} ", r.name).chars().collect();
                    let room = hi - lo - 1;
                    let label: Vec<char> = label.into_iter().take(room).collect();
                    let start = lo + 1 + (room - label.len()) / 2;
                    line[start..start + label.len()].copy_from_slice(&label);
                }
                let drawn: String = line.into_iter().collect();
                let _ = writeln!(s, "{:>10}  {drawn}  {}", fmt_time(r.at), r.note);
            }
        }
    }
    s
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// All ladders as one SVG picture, one under the other.
pub(crate) fn svg(ladders: &[Ladder]) -> String {
    const COL: usize = 300;
    const ROW: usize = 20;
    const LEFT: usize = 90;
    const TOP: usize = 30;
    let width = LEFT + ladders.iter().map(|l| l.columns.len()).max().unwrap_or(2).saturating_sub(1) * COL + 320;
    let mut body = String::new();
    let mut y = 10;
    for l in ladders {
        let rows = shown(&l.rows);
        let _ = writeln!(body, r#"<text x="10" y="{}" font-weight="bold">{}</text>"#, y + 14, xml(&l.title));
        let top = y + TOP;
        let bottom = top + (rows.len() + 1) * ROW;
        for (i, name) in l.columns.iter().enumerate() {
            let x = LEFT + i * COL;
            let _ = writeln!(
                body,
                r#"<text x="{x}" y="{}" text-anchor="middle" font-weight="bold">{}</text>"#,
                top,
                xml(name)
            );
            let _ = writeln!(body, r##"<line x1="{x}" y1="{}" x2="{x}" y2="{bottom}" stroke="#888"/>"##, top + 6);
        }
        for (k, r) in rows.iter().enumerate() {
            let yy = top + (k + 1) * ROW + 6;
            match r {
                Err(skipped) => {
                    let _ = writeln!(
                        body,
                        r##"<text x="{}" y="{yy}" fill="#666">... {skipped} more frames</text>"##,
                        LEFT + 10
                    );
                }
                Ok(r) => {
                    let (x1, mut x2) = (LEFT + r.from * COL, LEFT + r.to * COL);
                    if r.dropped {
                        x2 = (x1 * 3 + x2 * 7) / 10;
                        let _ = writeln!(
                            body,
                            r##"<text x="{x2}" y="{}" text-anchor="middle" fill="#c00" font-weight="bold">x</text>"##,
                            yy + 4
                        );
                    }
                    let _ = writeln!(body, r##"<text x="8" y="{yy}" fill="#444">{}</text>"##, fmt_time(r.at));
                    let _ = writeln!(
                        body,
                        r##"<line x1="{x1}" y1="{yy}" x2="{x2}" y2="{yy}" stroke="#236" marker-end="url(#arrow)"/>"##
                    );
                    let _ = writeln!(
                        body,
                        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                        (x1 + x2) / 2,
                        yy - 4,
                        xml(&r.name)
                    );
                    let right = LEFT + (l.columns.len() - 1) * COL + 14;
                    let _ = writeln!(body, r##"<text x="{right}" y="{yy}" fill="#666">{}</text>"##, xml(&r.note));
                }
            }
        }
        y = bottom + 30;
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{y}" font-family="monospace" font-size="12">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#236"/></marker></defs>
<rect width="100%" height="100%" fill="white"/>
{body}</svg>
"##
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrows_point_the_right_way() {
        let l = Ladder {
            title: "t".into(),
            columns: vec!["a".into(), "b".into()],
            rows: vec![
                Row {
                    at: Duration::from_millis(5),
                    from: 0,
                    to: 1,
                    name: "NEW".into(),
                    note: "1->0".into(),
                    dropped: false,
                },
                Row {
                    at: Duration::from_millis(25),
                    from: 1,
                    to: 0,
                    name: "CALLTOKEN".into(),
                    note: "1->1".into(),
                    dropped: false,
                },
                Row {
                    at: Duration::from_millis(45),
                    from: 0,
                    to: 1,
                    name: "NEW".into(),
                    note: "LOST".into(),
                    dropped: true,
                },
                Row {
                    at: Duration::from_millis(65),
                    from: 1,
                    to: 0,
                    name: "ACK".into(),
                    note: "LOST".into(),
                    dropped: true,
                },
            ],
        };
        let text = ascii(&l);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].trim_start().starts_with("time  a"), "{text}");
        assert!(lines[1].contains("|-------------- NEW ------------->|  1->0"), "{text}");
        assert!(lines[2].contains("|<---------- CALLTOKEN -----------|  1->1"), "{text}");
        assert!(lines[3].contains("|----------- NEW ----------x      |  LOST"), "{text}");
        assert!(lines[4].contains("|      x---------- ACK -----------|  LOST"), "{text}");
        assert!(svg(&[l]).starts_with("<svg"));
    }

    #[test]
    fn frame_names() {
        let new = [0x80, 0x01, 0, 0, 0, 0, 0, 3, 0, 0, 6, 1];
        assert_eq!(frame_name(&new, false), "NEW");
        let answer = [0x80, 0x01, 0x80, 0x02, 0, 0, 0, 3, 0, 0, 4, 4];
        assert_eq!(frame_name(&answer, false), "ANSWER (Control) (retx)");
        assert_eq!(frame_name(&answer, true), "(encrypted)");
    }
}

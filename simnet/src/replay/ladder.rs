//! ladder.svg: the captured and the replayed exchanges side by side, like a
//! Wireshark/sngrep flow graph, with each exchange's verdict marked.

use std::fmt::Write as _;
use std::time::Duration;

use super::compare::{label, Counts, Exchange, Verdict};
use crate::capture::RoleChoice;

/// Exchanges drawn at most (the report lists them all).
pub const MAX_EXCHANGES: usize = 400;
const ROW: u32 = 18;
const PANEL: u32 = 560;
const GAP: u32 = 40;
const MARGIN: u32 = 110;
const TOP: u32 = 90;
const LEFT_LINE: u32 = 70;
const RIGHT_LINE: u32 = 490;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

fn secs(d: Duration) -> String {
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
}

/// One arrow of a panel.
struct Arrow {
    to_switch: bool,
    text: String,
    style: Style,
}

#[derive(Clone, Copy, PartialEq)]
enum Style {
    Normal,
    /// Not compared: an adaptation of the replay.
    Adaptation,
    /// Not sent.
    Missing,
}

fn captured_arrows(x: &Exchange) -> Vec<Arrow> {
    let mut v = Vec::new();
    if let Some(s) = &x.stimulus {
        v.push(Arrow {
            to_switch: true,
            text: format!("{} #{} {}", secs(s.captured_at), s.frame_no, s.label),
            style: Style::Normal,
        });
    }
    for a in &x.captured {
        let frame = a.frame_no.map_or(String::new(), |n| format!("#{n} "));
        v.push(Arrow {
            to_switch: false,
            text: format!("{} {frame}{}", secs(a.at), label(&a.bytes)),
            style: Style::Normal,
        });
    }
    v
}

fn replayed_arrows(x: &Exchange) -> Vec<Arrow> {
    let mut timed: Vec<(Duration, usize, Arrow)> = Vec::new();
    if let Some(s) = &x.stimulus {
        match &s.sent {
            Ok(at) => timed.push((
                *at,
                0,
                Arrow { to_switch: true, text: format!("{} {}", secs(*at), s.label), style: Style::Normal },
            )),
            Err(_) => timed.push((
                Duration::ZERO,
                0,
                Arrow { to_switch: true, text: format!("{} not sent", s.label), style: Style::Missing },
            )),
        }
    }
    for (i, a) in x.adaptations.iter().enumerate() {
        let text = format!("{} {} (adaptation)", secs(a.at), a.label);
        timed.push((a.at, 1 + i, Arrow { to_switch: a.sent, text, style: Style::Adaptation }));
    }
    for (i, a) in x.replayed.iter().enumerate() {
        let text = format!("{} {}", secs(a.at), label(&a.bytes));
        timed.push((a.at, 1000 + i, Arrow { to_switch: false, text, style: Style::Normal }));
    }
    timed.sort_by_key(|(at, k, _)| (*at, *k));
    timed.into_iter().map(|(_, _, a)| a).collect()
}

fn arrow(s: &mut String, x0: u32, y: u32, a: &Arrow) {
    let (from, to) = if a.to_switch { (x0 + LEFT_LINE, x0 + RIGHT_LINE) } else { (x0 + RIGHT_LINE, x0 + LEFT_LINE) };
    let (color, dash) = match a.style {
        Style::Normal => ("#1f4e9a", ""),
        Style::Adaptation => ("#8a8a8a", " stroke-dasharray=\"4 3\""),
        Style::Missing => ("#c0392b", " stroke-dasharray=\"2 3\""),
    };
    let _ = writeln!(
        s,
        "<line x1=\"{from}\" y1=\"{y}\" x2=\"{to}\" y2=\"{y}\" stroke=\"{color}\" stroke-width=\"1.2\"{dash} marker-end=\"url(#head)\"/>"
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" font-size=\"11\" fill=\"{color}\" text-anchor=\"middle\">{}</text>",
        (from + to) / 2,
        y - 3,
        esc(&a.text)
    );
}

/// The SVG document.
pub(crate) fn svg(exchanges: &[Exchange], role: Option<&RoleChoice>, capture: &str, counts: &Counts) -> String {
    let shown = &exchanges[..exchanges.len().min(MAX_EXCHANGES)];
    let rows: Vec<(Vec<Arrow>, Vec<Arrow>)> = shown.iter().map(|x| (captured_arrows(x), replayed_arrows(x))).collect();
    let mut height = TOP;
    for (c, r) in &rows {
        height += ROW * (c.len().max(r.len()).max(1) as u32 + 1) + 4;
    }
    height += 40;
    let width = MARGIN + 2 * PANEL + GAP;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\" font-family=\"monospace\">"
    );
    let _ = writeln!(
        s,
        "<defs><marker id=\"head\" markerWidth=\"8\" markerHeight=\"8\" refX=\"7\" refY=\"4\" orient=\"auto\"><path d=\"M0,0 L8,4 L0,8 z\" fill=\"context-stroke\"/></marker></defs>"
    );
    let _ = writeln!(s, "<rect width=\"{width}\" height=\"{height}\" fill=\"white\"/>");
    let _ = writeln!(
        s,
        "<text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">Replay of {}: {}</text>",
        esc(capture),
        esc(&counts.line())
    );
    let (remote, switch) = match role {
        Some(r) => (
            r.remotes.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", "),
            format!("{} (the switch)", r.switch),
        ),
        None => ("remote".into(), "switch".into()),
    };
    for (p, title) in [(0u32, "captured"), (1, "replayed")] {
        let x0 = MARGIN + p * (PANEL + GAP);
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"44\" font-size=\"13\" font-weight=\"bold\" text-anchor=\"middle\">{title}</text>",
            x0 + (LEFT_LINE + RIGHT_LINE) / 2
        );
        for (x, name) in [(x0 + LEFT_LINE, &remote), (x0 + RIGHT_LINE, &switch)] {
            let _ =
                writeln!(s, "<text x=\"{x}\" y=\"66\" font-size=\"11\" text-anchor=\"middle\">{}</text>", esc(name));
            let _ = writeln!(
                s,
                "<line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#444\" stroke-width=\"1\"/>",
                TOP - 14,
                height - 30
            );
        }
    }
    let mut y = TOP;
    for (x, (c, r)) in shown.iter().zip(&rows) {
        let n = c.len().max(r.len()).max(1) as u32;
        let h = ROW * (n + 1);
        let (fill, mark) = match &x.verdict {
            Verdict::Matched => ("#eef8ee", "matched"),
            Verdict::Diverged { .. } => ("#fde3e3", "DIVERGED"),
            Verdict::Missing => ("#fff1cc", "MISSING"),
            Verdict::Extra => ("#e3ecfd", "EXTRA"),
        };
        let _ = writeln!(s, "<rect x=\"4\" y=\"{}\" width=\"{}\" height=\"{h}\" fill=\"{fill}\"/>", y - 2, width - 8);
        let _ =
            writeln!(s, "<text x=\"8\" y=\"{}\" font-size=\"11\" font-weight=\"bold\">#{} {mark}</text>", y + 12, x.n);
        for (i, a) in c.iter().enumerate() {
            arrow(&mut s, MARGIN, y + ROW * (i as u32 + 1), a);
        }
        for (i, a) in r.iter().enumerate() {
            arrow(&mut s, MARGIN + PANEL + GAP, y + ROW * (i as u32 + 1), a);
        }
        if let Verdict::Diverged { field, captured, replayed } = &x.verdict {
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#c0392b\">{}</text>",
                MARGIN + PANEL + GAP + 4,
                y + h - 5,
                esc(&format!("✗ {field}: captured {captured}, replayed {replayed}"))
            );
        }
        y += h + 4;
    }
    if exchanges.len() > shown.len() {
        let _ = writeln!(
            s,
            "<text x=\"10\" y=\"{}\" font-size=\"12\">… {} more exchanges in report.md</text>",
            y + 14,
            exchanges.len() - shown.len()
        );
    }
    s.push_str("</svg>\n");
    s
}

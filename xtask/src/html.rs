//! `reports/index.html`: a static page (plain HTML and CSS, no script, no
//! server) listing the runs and replayed captures with their verdicts, linking
//! each report.md and ladder.svg, and plotting the calls up over time of load
//! runs as inline SVG. Written by `cargo xtask certify` and `cargo xtask scenario`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::TaskError;

/// One table cell.
pub enum Cell {
    Text(String),
    /// `PASS`, `FAIL` or `ERROR`, coloured.
    Verdict(String),
    /// (label, href relative to the index)
    Links(Vec<(String, String)>),
}

pub struct Table {
    pub heading: String,
    pub intro: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

/// A picture below the tables: a linked SVG file or our own inline SVG.
pub enum Picture {
    File { caption: String, href: String },
    Inline { caption: String, svg: String },
}

pub struct Index {
    pub title: String,
    pub passed: bool,
    pub summary: String,
    pub tables: Vec<Table>,
    pub pictures: Vec<(String, Vec<Picture>)>,
}

/// Escapes text for HTML element bodies and quoted attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}\
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}\
th{background:#f3f3f3}.PASS{background:#dfd;font-weight:bold}.FAIL,.ERROR{background:#fdd;font-weight:bold}\
.verdict{display:inline-block;padding:.2em .8em;font-size:1.2em}figure{margin:1em 0}figcaption{font-weight:bold}\
img.ladder{max-width:100%;border:1px solid #ccc}details{margin:.5em 0}code{background:#f6f6f6}";

pub fn render(index: &Index) -> String {
    let mut h = String::new();
    let verdict = if index.passed { "PASS" } else { "FAIL" };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<h1>{}</h1>\n<p><span class=\"verdict {verdict}\">{verdict}</span> {}</p>\n",
        escape(&index.title),
        escape(&index.title),
        escape(&index.summary)
    );
    for t in &index.tables {
        let _ = writeln!(h, "<h2>{}</h2>", escape(&t.heading));
        if !t.intro.is_empty() {
            let _ = writeln!(h, "<p>{}</p>", escape(&t.intro));
        }
        h.push_str("<table>\n<tr>");
        for c in &t.header {
            let _ = write!(h, "<th>{}</th>", escape(c));
        }
        h.push_str("</tr>\n");
        for row in &t.rows {
            h.push_str("<tr>");
            for cell in row {
                match cell {
                    Cell::Text(s) => {
                        let _ = write!(h, "<td>{}</td>", escape(s));
                    }
                    Cell::Verdict(v) => {
                        let _ = write!(h, "<td class=\"{}\">{}</td>", escape(v), escape(v));
                    }
                    Cell::Links(links) => {
                        h.push_str("<td>");
                        let parts: Vec<String> = links
                            .iter()
                            .map(|(label, href)| format!("<a href=\"{}\">{}</a>", escape(href), escape(label)))
                            .collect();
                        h.push_str(&parts.join(" "));
                        h.push_str("</td>");
                    }
                }
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</table>\n");
    }
    for (heading, pictures) in &index.pictures {
        if pictures.is_empty() {
            continue;
        }
        let _ = writeln!(h, "<h2>{}</h2>", escape(heading));
        for p in pictures {
            match p {
                Picture::File { caption, href } => {
                    let _ = write!(
                        h,
                        "<details><summary>{}</summary>\n<a href=\"{href}\"><img class=\"ladder\" src=\"{href}\" alt=\"{}\" loading=\"lazy\"></a>\n</details>\n",
                        escape(caption),
                        escape(caption),
                        href = escape(href)
                    );
                }
                Picture::Inline { caption, svg } => {
                    let _ = write!(h, "<figure>\n<figcaption>{}</figcaption>\n{svg}\n</figure>\n", escape(caption));
                }
            }
        }
    }
    h.push_str("</body>\n</html>\n");
    h
}

pub fn write(out: &Path, index: &Index) -> Result<std::path::PathBuf, TaskError> {
    std::fs::create_dir_all(out).map_err(|e| TaskError::io("cannot create", out, e))?;
    let path = out.join("index.html");
    std::fs::write(&path, render(index)).map_err(|e| TaskError::io("cannot write", &path, e))?;
    Ok(path)
}

/// Calls up per host over simulated time, from a run's events.jsonl
/// (`call_answered` +1, `call_ended` of an answered call -1): the steps per
/// host as (t_ms, calls up), and the peak over all hosts.
pub fn calls_up(events_jsonl: &str) -> (BTreeMap<String, Vec<(u64, u64)>>, u64) {
    // Per host: calls up now, the answered calls still up, the steps so far.
    type HostCalls = (u64, std::collections::BTreeSet<i64>, Vec<(u64, u64)>);
    let mut up: BTreeMap<String, HostCalls> = BTreeMap::new();
    let mut peak = 0;
    for line in events_jsonl.lines() {
        // Cheap filter before parsing: most lines of a load trace are not these.
        if !(line.contains("\"call_answered\"") || line.contains("\"call_ended\"")) {
            continue;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let (Some(event), Some(host), Some(t)) = (v["event"].as_str(), v["host"].as_str(), v["t_ms"].as_u64()) else {
            continue;
        };
        let call = v["call"].as_i64().unwrap_or(-1);
        let entry = up.entry(host.to_string()).or_insert_with(|| (0, Default::default(), vec![(0, 0)]));
        let changed = match event {
            "call_answered" if entry.1.insert(call) => {
                entry.0 += 1;
                true
            }
            "call_ended" if entry.1.remove(&call) => {
                entry.0 -= 1;
                true
            }
            _ => false,
        };
        if changed {
            peak = peak.max(entry.0);
            match entry.2.last_mut() {
                Some(last) if last.0 == t => last.1 = entry.0,
                _ => entry.2.push((t, entry.0)),
            }
        }
    }
    (up.into_iter().map(|(h, (_, _, steps))| (h, steps)).collect(), peak)
}

const COLOURS: [&str; 6] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"];

/// An SVG step plot of calls up over time per host, or `None` when the run
/// had fewer than `min_peak` calls up at once.
pub fn calls_up_plot(events_jsonl: &str, end_ms: u64, min_peak: u64) -> Option<String> {
    let (hosts, peak) = calls_up(events_jsonl);
    if peak < min_peak.max(1) {
        return None;
    }
    let end = hosts.values().flatten().map(|p| p.0).max().unwrap_or(0).max(end_ms).max(1);
    let (w, hgt, left, right, top, bottom) = (640.0, 240.0, 56.0, 110.0, 12.0, 36.0);
    let pw = w - left - right;
    let ph = hgt - top - bottom;
    let x = |t: u64| left + pw * t as f64 / end as f64;
    let y = |n: u64| top + ph - ph * n as f64 / peak as f64;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{hgt}\" viewBox=\"0 0 {w} {hgt}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"{w}\" height=\"{hgt}\" fill=\"white\"/>\n"
    );
    // Axes with three ticks each.
    let _ = writeln!(s, "<path d=\"M{left},{top} V{} H{}\" stroke=\"#444\" fill=\"none\"/>", top + ph, left + pw);
    for i in 0..=2u64 {
        let n = peak * i / 2;
        let t = end * i / 2;
        let _ = writeln!(s, "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{n}</text>", left - 4.0, y(n) + 4.0);
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">{:.0} s</text>",
            x(t),
            top + ph + 14.0,
            t as f64 / 1000.0
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\">simulated time</text>",
        left + pw / 2.0,
        hgt - 4.0
    );
    let _ = writeln!(
        s,
        "<text transform=\"translate(12,{:.1}) rotate(-90)\" text-anchor=\"middle\">calls up</text>",
        top + ph / 2.0
    );
    for (i, (host, steps)) in hosts.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut d = String::new();
        let mut prev = 0;
        for (j, &(t, n)) in steps.iter().enumerate() {
            if j == 0 {
                let _ = write!(d, "M{:.1},{:.1}", x(t), y(n));
            } else {
                let _ = write!(d, " H{:.1} V{:.1}", x(t), y(n));
            }
            prev = n;
        }
        let _ = write!(d, " H{:.1}", x(end));
        let _ = writeln!(s, "<path d=\"{d}\" stroke=\"{colour}\" fill=\"none\" stroke-width=\"1.5\"/>");
        let ly = top + 14.0 * i as f64 + 8.0;
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{:.1}\" width=\"10\" height=\"3\" fill=\"{colour}\"/><text x=\"{}\" y=\"{:.1}\">{} (peak {})</text>",
            left + pw + 10.0,
            ly - 3.0,
            left + pw + 24.0,
            ly,
            escape(host),
            steps.iter().map(|p| p.1).max().unwrap_or(prev)
        );
    }
    s.push_str("</svg>");
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "{\"t_ms\":0,\"host\":\"a\",\"event\":\"started\"}\n\
{\"t_ms\":100,\"host\":\"a\",\"event\":\"call_answered\",\"call\":1}\n\
{\"t_ms\":100,\"host\":\"a\",\"event\":\"call_answered\",\"call\":2}\n\
{\"t_ms\":150,\"host\":\"b\",\"event\":\"call_answered\",\"call\":9}\n\
{\"t_ms\":200,\"host\":\"a\",\"event\":\"call_ended\",\"call\":7}\n\
{\"t_ms\":300,\"host\":\"a\",\"event\":\"call_ended\",\"call\":1}\n\
{\"t_ms\":400,\"host\":\"a\",\"event\":\"call_ended\",\"call\":2}\n";

    #[test]
    fn calls_up_counts_answered_calls_per_host() {
        let (hosts, peak) = calls_up(TRACE);
        assert_eq!(peak, 2);
        assert_eq!(hosts["a"], vec![(0, 0), (100, 2), (300, 1), (400, 0)]);
        assert_eq!(hosts["b"], vec![(0, 0), (150, 1)]);
    }

    #[test]
    fn plot_only_for_loads() {
        let svg = calls_up_plot(TRACE, 500, 2).unwrap();
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert!(svg.contains("a (peak 2)") && svg.contains("b (peak 1)"), "{svg}");
        assert!(calls_up_plot(TRACE, 500, 3).is_none());
        assert!(calls_up_plot("", 500, 0).is_none());
    }

    #[test]
    fn index_escapes_text_and_links_reports() {
        let index = Index {
            title: "Certification <report>".into(),
            passed: false,
            summary: "1 run & 1 capture".into(),
            tables: vec![Table {
                heading: "Runs".into(),
                intro: String::new(),
                header: vec!["scenario".into(), "verdict".into(), "reports".into()],
                rows: vec![vec![
                    Cell::Text("a<b".into()),
                    Cell::Verdict("FAIL".into()),
                    Cell::Links(vec![("seed 1".into(), "a/v4/seed-1/report.md".into())]),
                ]],
            }],
            pictures: vec![(
                "Ladders".into(),
                vec![Picture::File { caption: "x \"y\"".into(), href: "a/ladder.svg".into() }],
            )],
        };
        let h = render(&index);
        assert!(h.starts_with("<!DOCTYPE html>") && h.ends_with("</html>\n"));
        assert!(h.contains("<title>Certification &lt;report&gt;</title>"), "{h}");
        assert!(h.contains("1 run &amp; 1 capture"), "{h}");
        assert!(h.contains("<td>a&lt;b</td><td class=\"FAIL\">FAIL</td>"), "{h}");
        assert!(h.contains("<a href=\"a/v4/seed-1/report.md\">seed 1</a>"), "{h}");
        assert!(h.contains("src=\"a/ladder.svg\" alt=\"x &quot;y&quot;\""), "{h}");
        assert!(!h.contains("<script"));
    }
}

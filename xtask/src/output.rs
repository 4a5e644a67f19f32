//! Tables, durations, file layout and terminal detection shared by the tasks.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::TaskError;

/// Progress lines go to stderr only for a person watching: a terminal, not CI.
pub fn show_progress() -> bool {
    let ci = matches!(std::env::var_os("CI"), Some(v) if !(v.is_empty() || v == "false" || v == "0"));
    !ci && std::io::stderr().is_terminal()
}

/// `DIR/NAME/NETWORK/seed-N`: where one run's files go. The same layout is
/// used by `scenario`, by `certify` and by simnet/tests/certify.rs.
pub fn run_dir(out: &Path, scenario: &str, network: &str, seed: u64) -> PathBuf {
    out.join(path_safe(scenario)).join(network).join(format!("seed-{seed}"))
}

/// A scenario name as one path component (names are normally safe already).
pub fn path_safe(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Writes report.md, events.jsonl and capture.pcap of one run into `dir`.
pub fn write_run_files(dir: &Path, report_md: &str, events_jsonl: &str, pcap: &[u8]) -> Result<(), TaskError> {
    std::fs::create_dir_all(dir).map_err(|e| TaskError::io("cannot create", dir, e))?;
    for (name, bytes) in
        [("report.md", report_md.as_bytes()), ("events.jsonl", events_jsonl.as_bytes()), ("capture.pcap", pcap)]
    {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|e| TaskError::io("cannot write", &path, e))?;
    }
    Ok(())
}

/// `path` relative to the current directory when it is below it, for messages.
pub fn shown(path: &Path) -> String {
    let cwd = std::env::current_dir().ok();
    match cwd.as_deref().and_then(|cwd| path.strip_prefix(cwd).ok()) {
        Some(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
        _ => path.display().to_string(),
    }
}

/// Seconds with millisecond precision: `62.500 s`.
pub fn secs(d: Duration) -> String {
    format!("{}.{:03} s", d.as_secs(), d.subsec_millis())
}

/// A plain-text table with left-aligned columns, two spaces apart.
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Table { header: header.iter().map(|s| s.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(cell.chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(cell);
                } else {
                    let pad = widths.get(i).copied().unwrap_or(0);
                    s.push_str(&format!("{cell:<pad$}  "));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = line(&self.header);
        out.push('\n');
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        out.push_str(&line(&rule));
        out.push('\n');
        for row in &self.rows {
            out.push_str(&line(row));
            out.push('\n');
        }
        out
    }

    /// The same table as GitHub-flavoured Markdown.
    pub fn markdown(&self) -> String {
        let esc = |s: &String| s.replace('|', "\\|").replace('\n', " ");
        let mut out = format!("| {} |\n", self.header.iter().map(esc).collect::<Vec<_>>().join(" | "));
        out.push_str(&format!("|{}\n", "---|".repeat(self.header.len())));
        for row in &self.rows {
            out.push_str(&format!("| {} |\n", row.iter().map(esc).collect::<Vec<_>>().join(" | ")));
        }
        out
    }
}

/// Escapes text for an XML attribute or element body.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(&["a", "bb"]);
        t.row(vec!["xxx".into(), "y".into()]);
        assert_eq!(t.render(), "a    bb\n---  --\nxxx  y\n");
        assert_eq!(t.markdown(), "| a | bb |\n|---|---|\n| xxx | y |\n");
    }

    #[test]
    fn names_become_safe_path_components() {
        assert_eq!(path_safe("reg-md5_ok"), "reg-md5_ok");
        assert_eq!(path_safe("../x y"), "_.._x_y");
        assert_eq!(path_safe(""), "_");
    }

    #[test]
    fn xml_is_escaped() {
        assert_eq!(xml_escape("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;?");
    }

    #[test]
    fn distances() {
        assert_eq!(edit_distance("registration", "registraton"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn seconds() {
        assert_eq!(secs(Duration::from_millis(62_500)), "62.500 s");
    }
}

/// Runs a test binary that prints `[n/total] what: verdict` per finished run,
/// showing those lines as a progress bar on the terminal (indicatif draws on
/// stderr and only when it is a terminal); every other line is passed through.
pub fn run_with_progress(cmd: &mut std::process::Command, label: &str) -> std::io::Result<std::process::ExitStatus> {
    use std::io::BufRead;

    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn()?;
    let bar = progress_bar(label, 0);
    if let Some(stdout) = child.stdout.take() {
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            match progress_line(&line) {
                Some((done, total, what)) => {
                    bar.set_length(total);
                    bar.set_position(done);
                    bar.set_message(what.to_string());
                    if what.ends_with("FAIL") {
                        bar.println(&line);
                    }
                }
                None => bar.println(&line),
            }
        }
    }
    bar.finish_and_clear();
    child.wait()
}

/// A progress bar on stderr: `LABEL [=====>    ] 3/66 00:00:41 what is running`.
pub fn progress_bar(label: &str, total: u64) -> indicatif::ProgressBar {
    let style = indicatif::ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    let bar = indicatif::ProgressBar::new(total).with_style(style);
    bar.set_prefix(label.to_string());
    bar
}

/// `[3/66] trunk-800 v4 seed 1: ok` -> (3, 66, "trunk-800 v4 seed 1: ok").
fn progress_line(line: &str) -> Option<(u64, u64, &str)> {
    let rest = line.strip_prefix('[')?;
    let (counts, what) = rest.split_once("] ")?;
    let (done, total) = counts.split_once('/')?;
    Some((done.parse().ok()?, total.parse().ok()?, what))
}

#[cfg(test)]
mod progress_tests {
    use super::progress_line;

    #[test]
    fn progress_lines_are_recognised_and_others_are_not() {
        assert_eq!(progress_line("[3/66] trunk-800 v4 seed 1: ok"), Some((3, 66, "trunk-800 v4 seed 1: ok")));
        assert_eq!(progress_line("running 1 test"), None);
        assert_eq!(progress_line("[a/66] x"), None);
        assert_eq!(progress_line("[3/66]x"), None);
    }
}

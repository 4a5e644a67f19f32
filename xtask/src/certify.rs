//! `cargo xtask certify`: the CI regression gate.
//!
//! The work is done by the ignored integration test `simnet/tests/certify.rs`
//! (so the pinned traces are ordinary insta snapshots that `cargo insta review`
//! also understands). It writes one JSON record per run to
//! `DIR/certify.jsonl`; this task turns those into `summary.md` and `junit.xml`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::html;
use crate::output::{self, secs, shown, xml_escape, Table};
use crate::{workspace_root, CertifyArgs, TaskError};

/// One run as the certify test reports it (see simnet/tests/certify.rs).
#[derive(Debug, Deserialize)]
struct Record {
    scenario: String,
    #[serde(default)]
    description: String,
    network: String,
    seed: u64,
    /// Verdicts passed AND trace matched AND no error.
    passed: bool,
    expectations_passed: usize,
    expectations_total: usize,
    #[serde(default)]
    failed_expectations: Vec<FailedExpectation>,
    /// `matched`, `mismatch`, `missing`, `written` (bless) or `not-run`.
    snapshot: String,
    snapshot_name: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    datagrams: u64,
    #[serde(default)]
    sim_ms: u64,
    #[serde(default)]
    wall_ms: u64,
    /// report.md relative to the output directory.
    report: String,
}

#[derive(Debug, Deserialize)]
struct FailedExpectation {
    description: String,
    #[serde(default)]
    detail: String,
}

impl Record {
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(e) = &self.error {
            out.push(format!("run error: {e}"));
        }
        for f in &self.failed_expectations {
            if f.detail.is_empty() {
                out.push(format!("expectation failed: {}", f.description));
            } else {
                out.push(format!("expectation failed: {}: {}", f.description, f.detail));
            }
        }
        match self.snapshot.as_str() {
            "matched" | "written" => {}
            "missing" => out.push(format!(
                "no pinned trace {} (run `cargo xtask certify --bless` and commit the snapshot)",
                self.snapshot_name
            )),
            "mismatch" => out.push(format!(
                "event trace differs from the pinned snapshot {} (diff in the cargo test output)",
                self.snapshot_name
            )),
            other => out.push(format!("trace not compared ({other})")),
        }
        if out.is_empty() && !self.passed {
            out.push("failed".into());
        }
        out
    }
}

pub fn run(args: &CertifyArgs) -> Result<bool, TaskError> {
    let root = workspace_root();
    let out = args.out.clone().unwrap_or_else(|| root.join("reports"));
    std::fs::create_dir_all(&out).map_err(|e| TaskError::io("cannot create", &out, e))?;
    let out = out.canonicalize().map_err(|e| TaskError::io("cannot resolve", &out, e))?;
    let records_path = out.join("certify.jsonl");
    let captures_path = out.join("certify_captures.jsonl");
    for path in [&records_path, &captures_path] {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(TaskError::io("cannot remove", path, e)),
        }
    }
    if args.bless {
        remove_pinned_traces(&root.join("simnet/tests/snapshots"))?;
    }

    let progress = output::show_progress();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        // `--workspace` (not `-p simnet`) resolves features as the README's test
        // command `cargo test --workspace --release` does, so CI reuses that build.
        .args(["test", "--release", "--workspace", "--test", "certify", "--", "--ignored"])
        .env("SIMNET_CERTIFY_OUT", &out)
        .env_remove("INSTA_FORCE_PASS");
    if progress {
        cmd.arg("--nocapture");
    }
    if args.bless {
        cmd.env("INSTA_UPDATE", "always");
    } else {
        cmd.env("INSTA_UPDATE", "no").env("CI", "true");
    }
    if progress {
        eprintln!(
            "running: cargo test --release --workspace --test certify -- --ignored{}",
            if args.bless { "  (blessing: snapshots are rewritten)" } else { "" }
        );
    }
    let started = Instant::now();
    let status = if progress { output::run_with_progress(&mut cmd, "scenarios") } else { cmd.status() }
        .map_err(|e| TaskError::new(format!("cannot run cargo: {e}")))?;

    // The captures of captures/manifest.toml (simnet/tests/certify_captures.rs);
    // their expected verdicts are in the manifest, --bless does not touch them.
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["test", "--release", "--workspace", "--test", "certify_captures", "--", "--ignored"])
        .env("SIMNET_CERTIFY_OUT", &out);
    if progress {
        cmd.arg("--nocapture");
        eprintln!("running: cargo test --release --workspace --test certify_captures -- --ignored");
    }
    let captures_status = if progress { output::run_with_progress(&mut cmd, "captures") } else { cmd.status() }
        .map_err(|e| TaskError::new(format!("cannot run cargo: {e}")))?;
    let elapsed = started.elapsed();

    let records = read_records(&records_path)?;
    if records.is_empty() {
        return Err(TaskError::new(format!(
            "the certify test produced no results ({}; cargo test exited with {status})",
            shown(&records_path)
        ))
        .hint("see the cargo output above: the test did not build, found no scenarios, or crashed"));
    }
    let mut captures = read_capture_records(&captures_path)?;
    if captures.is_empty() {
        captures.push(CaptureRecord::failed_test(format!(
            "the capture certification test produced no results ({}; cargo test exited with {captures_status}); \
             see its output above",
            shown(&captures_path)
        )));
    }
    let captures_ok = captures_status.success() && captures.iter().all(|c| c.passed);

    let stale = if args.bless { Vec::new() } else { stale_traces(&root.join("simnet/tests/snapshots"), &records) };
    let summary = out.join("summary.md");
    std::fs::write(&summary, summary_md(&records, &captures, &stale, args.bless, status.success(), elapsed))
        .map_err(|e| TaskError::io("cannot write", &summary, e))?;
    let junit = out.join("junit.xml");
    std::fs::write(&junit, junit_xml(&records, &captures, &stale, elapsed))
        .map_err(|e| TaskError::io("cannot write", &junit, e))?;
    let passed = status.success() && captures_ok && records.iter().all(|r| r.passed) && stale.is_empty();
    let index = html::write(&out, &index_html(&out, &records, &captures, passed))?;

    let failed: Vec<&Record> = records.iter().filter(|r| !r.passed).collect();
    print!("{}", grouped_table(&records, false).render());
    println!();
    print!("{}", captures_table(&captures, false).render());
    if !failed.is_empty() {
        println!();
        for r in &failed {
            println!("FAIL {} over {}, seed {}:", r.scenario, r.network, r.seed);
            for p in r.problems() {
                println!("  - {p}");
            }
            println!("  report: {}", shown(&out.join(&r.report)));
        }
    }
    let failed_captures: Vec<&CaptureRecord> = captures.iter().filter(|c| !c.passed).collect();
    if !failed_captures.is_empty() {
        println!();
        for c in &failed_captures {
            println!("FAIL capture {} (seed {}): {}", c.capture, c.seed, c.problem());
            if !c.report.is_empty() {
                println!("  report: {}", shown(&out.join(&c.report)));
            }
        }
    }
    if !stale.is_empty() {
        println!();
        for file in &stale {
            println!("FAIL stale pinned trace simnet/tests/snapshots/{file}: no run produces it (`cargo xtask certify --bless` drops it)");
        }
    }
    if !status.success() && failed.is_empty() && stale.is_empty() {
        println!("\nthe certify test failed although every run passed (see its output above)");
    }
    if !captures_status.success() && failed_captures.is_empty() {
        println!(
            "\nthe capture certification test failed although every capture kept its verdict (see its output above)"
        );
    }
    println!(
        "\n{} run(s), {} passed, {} failed; {} capture(s), {} changed; in {}; {}, {} and {} written",
        records.len(),
        records.len() - failed.len(),
        failed.len(),
        captures.len(),
        failed_captures.len(),
        secs(elapsed),
        shown(&summary),
        shown(&junit),
        shown(&index)
    );
    if args.bless {
        println!("snapshots rewritten in simnet/tests/snapshots/: review them with `git diff` before committing");
    }
    Ok(passed)
}

/// One replayed capture as simnet/tests/certify_captures.rs reports it.
#[derive(Debug, Deserialize)]
struct CaptureRecord {
    capture: String,
    #[serde(default)]
    config: Option<String>,
    seed: u64,
    /// The verdict counts equal the manifest's and the replay ran.
    passed: bool,
    #[serde(default)]
    why: String,
    /// `replay: exchanges=N ...` as the manifest expects it.
    #[serde(default)]
    expected: String,
    /// The same line from this replay.
    #[serde(default)]
    got: Option<String>,
    #[serde(default)]
    error: Option<String>,
    /// report.md and ladder.svg relative to the output directory.
    #[serde(default)]
    report: String,
    #[serde(default)]
    ladder: String,
    #[serde(default)]
    wall_ms: u64,
}

impl CaptureRecord {
    fn failed_test(error: String) -> Self {
        CaptureRecord {
            capture: "captures/manifest.toml".into(),
            config: None,
            seed: 0,
            passed: false,
            why: String::new(),
            expected: String::new(),
            got: None,
            error: Some(error),
            report: String::new(),
            ladder: String::new(),
            wall_ms: 0,
        }
    }

    /// The counts without the `replay: ` prefix.
    fn figures(line: &str) -> &str {
        line.strip_prefix("replay: ").unwrap_or(line)
    }

    fn problem(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        match &self.got {
            Some(got) if !self.passed => format!(
                "verdict changed: captures/manifest.toml expects `{}`, the replay gave `{}`",
                Self::figures(&self.expected),
                Self::figures(got)
            ),
            Some(_) => String::new(),
            None => "not replayed".into(),
        }
    }
}

fn read_capture_records(path: &Path) -> Result<Vec<CaptureRecord>, TaskError> {
    read_jsonl(path, "capture record")
}

/// One row per replayed capture.
fn captures_table(captures: &[CaptureRecord], markdown_links: bool) -> Table {
    let mut table = Table::new(&["capture", "config", "seed", "verdict", "figures", "expected", "report"]);
    for c in captures {
        let figures = c.got.as_deref().map_or("-", CaptureRecord::figures).to_string();
        let expected = CaptureRecord::figures(&c.expected);
        let report = if c.report.is_empty() {
            "-".to_string()
        } else if markdown_links {
            format!("[report]({})", c.report)
        } else {
            c.report.clone()
        };
        table.row(vec![
            c.capture.clone(),
            c.config.clone().unwrap_or_else(|| "built-in".into()),
            c.seed.to_string(),
            if c.passed { "PASS" } else { "FAIL" }.into(),
            figures.clone(),
            if expected == figures { "same".into() } else { expected.to_string() },
            report,
        ]);
    }
    table
}

/// reports/index.html: the runs and captures with their verdicts and links,
/// the ladders, and a plot of calls up over time for load runs.
fn index_html(out: &Path, records: &[Record], captures: &[CaptureRecord], passed: bool) -> html::Index {
    let mut groups: BTreeMap<(&str, &str), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups.entry((&r.scenario, &r.network)).or_default().push(r);
    }
    let mut rows = Vec::new();
    let mut ladders = Vec::new();
    let mut plots = Vec::new();
    for ((scenario, network), runs) in &groups {
        let ok = runs.iter().all(|r| r.passed);
        let exp_passed: usize = runs.iter().map(|r| r.expectations_passed).sum();
        let exp_total: usize = runs.iter().map(|r| r.expectations_total).sum();
        let mut links = Vec::new();
        for r in runs {
            links.push((format!("seed {}", r.seed), r.report.clone()));
            let dir = r.report.strip_suffix("report.md").unwrap_or("");
            if out.join(dir).join("ladder.svg").is_file() {
                links.push((format!("ladder {}", r.seed), format!("{dir}ladder.svg")));
            }
        }
        let problems: Vec<String> = runs
            .iter()
            .filter(|r| !r.passed)
            .map(|r| format!("seed {}: {}", r.seed, r.problems().join("; ")))
            .collect();
        rows.push(vec![
            html::Cell::Text(scenario.to_string()),
            html::Cell::Text(network.to_string()),
            html::Cell::Verdict(if ok { "PASS" } else { "FAIL" }.into()),
            html::Cell::Text(format!(
                "expectations {exp_passed}/{exp_total}, datagrams {}, sim time {}",
                range(runs.iter().map(|r| r.datagrams)),
                range_secs(runs.iter().map(|r| r.sim_ms))
            )),
            html::Cell::Links(links),
            html::Cell::Text(problems.join("\n")),
        ]);
        // One picture per scenario and network: its first seed.
        if let Some(first) = runs.first() {
            let dir = first.report.strip_suffix("report.md").unwrap_or("");
            if out.join(dir).join("ladder.svg").is_file() {
                ladders.push(html::Picture::File {
                    caption: format!("{scenario} over {network}, seed {}", first.seed),
                    href: format!("{dir}ladder.svg"),
                });
            }
            if let Ok(events) = std::fs::read_to_string(out.join(dir).join("events.jsonl")) {
                if let Some(svg) = html::calls_up_plot(&events, first.sim_ms, LOAD_MIN_CALLS) {
                    plots.push(html::Picture::Inline {
                        caption: format!("{scenario} over {network}, seed {}: calls up", first.seed),
                        svg,
                    });
                }
            }
        }
    }
    let mut capture_rows = Vec::new();
    for c in captures {
        let mut links = Vec::new();
        if !c.report.is_empty() {
            links.push(("report".to_string(), c.report.clone()));
        }
        if !c.ladder.is_empty() && out.join(&c.ladder).is_file() {
            links.push(("ladder".to_string(), c.ladder.clone()));
            ladders.push(html::Picture::File {
                caption: format!("capture {} (seed {})", c.capture, c.seed),
                href: c.ladder.clone(),
            });
        }
        capture_rows.push(vec![
            html::Cell::Text(c.capture.clone()),
            html::Cell::Text(c.seed.to_string()),
            html::Cell::Verdict(if c.passed { "PASS" } else { "FAIL" }.into()),
            html::Cell::Text(c.got.as_deref().map_or("-", CaptureRecord::figures).to_string()),
            html::Cell::Links(links),
            html::Cell::Text(if c.passed { c.why.clone() } else { c.problem() }),
        ]);
    }
    let failed = records.iter().filter(|r| !r.passed).count();
    let failed_captures = captures.iter().filter(|c| !c.passed).count();
    html::Index {
        title: "Certification".into(),
        passed,
        summary: format!(
            "{} run(s), {failed} failed; {} capture(s), {failed_captures} changed. Generated by `cargo xtask certify`; \
             summary.md and junit.xml are next to this file.",
            records.len(),
            captures.len()
        ),
        tables: vec![
            html::Table {
                heading: "Scenarios".into(),
                intro: "A run passes when all its expectations hold and its event trace equals the pinned snapshot."
                    .into(),
                header: ["scenario", "network", "verdict", "figures", "reports", "problems"].map(String::from).to_vec(),
                rows,
            },
            html::Table {
                heading: "Captures".into(),
                intro:
                    "Each capture of captures/manifest.toml is replayed; its verdict counts must equal the manifest's."
                        .into(),
                header: ["capture", "seed", "verdict", "figures", "reports", "why"].map(String::from).to_vec(),
                rows: capture_rows,
            },
        ],
        pictures: vec![("Calls up over time (load runs)".into(), plots), ("Ladders".into(), ladders)],
    }
}

/// Runs with at least this many calls up at once get a plot in index.html.
pub const LOAD_MIN_CALLS: u64 = 10;

/// Pinned traces in `dir` that no run of this certification compared against.
fn stale_traces(dir: &Path, records: &[Record]) -> Vec<String> {
    let expected: std::collections::BTreeSet<String> =
        records.iter().map(|r| format!("certify__{}.snap", r.snapshot_name)).collect();
    let mut stale: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| f.starts_with("certify__") && f.ends_with(".snap") && !expected.contains(f))
                .collect()
        })
        .unwrap_or_default();
    stale.sort();
    stale
}

/// `--bless` starts from an empty set so that traces of removed scenarios go too.
fn remove_pinned_traces(dir: &Path) -> Result<(), TaskError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(TaskError::io("cannot read", dir, e)),
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("certify__") && (name.ends_with(".snap") || name.ends_with(".snap.new")) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| TaskError::io("cannot remove", &path, e))?;
        }
    }
    Ok(())
}

/// One JSON record per non-blank line; a missing file is no records.
fn read_jsonl<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<Vec<T>, TaskError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TaskError::io("cannot read", path, e)),
    };
    let lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
    lines
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| TaskError::new(format!("{}:{}: unreadable {what}: {e}", shown(path), i + 1)))
        })
        .collect()
}

fn read_records(path: &Path) -> Result<Vec<Record>, TaskError> {
    let mut records: Vec<Record> = read_jsonl(path, "result record")?;
    records.sort_by(|a, b| (&a.scenario, &a.network, a.seed).cmp(&(&b.scenario, &b.network, b.seed)));
    Ok(records)
}

/// One row per (scenario, network), seeds aggregated.
fn grouped_table(records: &[Record], markdown_links: bool) -> Table {
    let mut groups: BTreeMap<(&str, &str), Vec<&Record>> = BTreeMap::new();
    for r in records {
        groups.entry((&r.scenario, &r.network)).or_default().push(r);
    }
    let mut table = Table::new(&[
        "scenario",
        "network",
        "seeds",
        "verdict",
        "expectations",
        "trace",
        "datagrams",
        "sim time",
        if markdown_links { "reports" } else { "wall time" },
    ]);
    for ((scenario, network), runs) in groups {
        let seeds: Vec<String> = runs.iter().map(|r| r.seed.to_string()).collect();
        let ok = runs.iter().all(|r| r.passed);
        let exp_passed: usize = runs.iter().map(|r| r.expectations_passed).sum();
        let exp_total: usize = runs.iter().map(|r| r.expectations_total).sum();
        let traces_ok = runs.iter().filter(|r| matches!(r.snapshot.as_str(), "matched" | "written")).count();
        let trace = if runs.iter().all(|r| r.snapshot == "written") {
            "blessed".to_string()
        } else {
            format!("{traces_ok}/{} pinned", runs.len())
        };
        let datagrams = range(runs.iter().map(|r| r.datagrams));
        let sim = range_secs(runs.iter().map(|r| r.sim_ms));
        let last = if markdown_links {
            runs.iter().map(|r| format!("[seed {}]({})", r.seed, r.report)).collect::<Vec<_>>().join(" ")
        } else {
            secs(Duration::from_millis(runs.iter().map(|r| r.wall_ms).sum()))
        };
        table.row(vec![
            scenario.to_string(),
            network.to_string(),
            seeds.join(", "),
            if ok { "PASS" } else { "FAIL" }.into(),
            format!("{exp_passed}/{exp_total}"),
            trace,
            datagrams,
            sim,
            last,
        ]);
    }
    table
}

fn range(values: impl Iterator<Item = u64>) -> String {
    let v: Vec<u64> = values.collect();
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => lo.to_string(),
        (Some(lo), Some(hi)) => format!("{lo}-{hi}"),
        _ => "-".into(),
    }
}

fn range_secs(values: impl Iterator<Item = u64>) -> String {
    let v: Vec<u64> = values.collect();
    match (v.iter().min(), v.iter().max()) {
        (Some(lo), Some(hi)) if lo == hi => secs(Duration::from_millis(*lo)),
        (Some(lo), Some(hi)) => {
            format!("{} - {}", secs(Duration::from_millis(*lo)), secs(Duration::from_millis(*hi)))
        }
        _ => "-".into(),
    }
}

fn summary_md(
    records: &[Record],
    captures: &[CaptureRecord],
    stale: &[String],
    bless: bool,
    test_ok: bool,
    elapsed: Duration,
) -> String {
    let failed: Vec<&Record> = records.iter().filter(|r| !r.passed).collect();
    let changed: Vec<&CaptureRecord> = captures.iter().filter(|c| !c.passed).collect();
    let verdict = if failed.is_empty() && changed.is_empty() && stale.is_empty() && test_ok { "PASS" } else { "FAIL" };
    let mut md = String::from("# Certification summary\n\n");
    md.push_str(&format!(
        "**{verdict}**: {} run(s), {} passed, {} failed; {} capture(s), {} changed ({} of wall time, build \
         included){}. Also: [index.html](index.html), junit.xml.\n\n",
        records.len(),
        records.len() - failed.len(),
        failed.len(),
        captures.len(),
        changed.len(),
        secs(elapsed),
        if bless { "; pinned traces were rewritten (`--bless`)" } else { "" }
    ));
    md.push_str(
        "Every scenario runs over each seed and network below. A run passes when all its \
expectations hold and its event trace equals the pinned snapshot in \
`simnet/tests/snapshots/`. Generated by `cargo xtask certify`.\n\n",
    );
    md.push_str(&grouped_table(records, true).markdown());
    md.push_str(
        "\n## Captures\n\nEach capture listed in `captures/manifest.toml` is replayed against the switch \
(docs/replay.md); its verdict counts must equal the manifest's.\n\n",
    );
    md.push_str(&captures_table(captures, true).markdown());
    if !changed.is_empty() {
        md.push_str("\n## Changed capture verdicts\n\n");
        for c in &changed {
            md.push_str(&format!("- `{}` (seed {}): {}\n", c.capture, c.seed, c.problem()));
        }
    }
    if !failed.is_empty() {
        md.push_str("\n## Failures\n\n");
        for r in &failed {
            md.push_str(&format!("### {} over {}, seed {}\n\n", r.scenario, r.network, r.seed));
            for p in r.problems() {
                md.push_str(&format!("- {p}\n"));
            }
            md.push_str(&format!("- report: [{}]({})\n\n", r.report, r.report));
        }
    }
    if !stale.is_empty() {
        md.push_str("\n## Stale pinned traces\n\nNo run produces these any more (a scenario, seed or network was removed or renamed); `cargo xtask certify --bless` drops them.\n\n");
        for file in stale {
            md.push_str(&format!("- `simnet/tests/snapshots/{file}`\n"));
        }
    }
    if !test_ok && failed.is_empty() && stale.is_empty() {
        md.push_str("\nThe certify test itself failed although every run passed; see the CI log.\n");
    }
    let mut described: BTreeMap<&str, &str> = BTreeMap::new();
    for r in records {
        described.entry(&r.scenario).or_insert(&r.description);
    }
    md.push_str("\n## Scenarios\n\n");
    for (name, description) in described {
        let description = description.split_whitespace().collect::<Vec<_>>().join(" ");
        md.push_str(&format!("- `{name}`: {description}\n"));
    }
    md
}

fn junit_xml(records: &[Record], captures: &[CaptureRecord], stale: &[String], elapsed: Duration) -> String {
    let failures = records.iter().filter(|r| !r.passed).count() + stale.len();
    let tests = records.len() + stale.len();
    let capture_failures = captures.iter().filter(|c| !c.passed).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"certify\" tests=\"{}\" failures=\"{}\" time=\"{:.3}\">\n",
        tests + captures.len(),
        failures + capture_failures,
        elapsed.as_secs_f64()
    ));
    x.push_str(&format!(
        "  <testsuite name=\"simnet.certify\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\" time=\"{:.3}\">\n",
        elapsed.as_secs_f64()
    ));
    for r in records {
        x.push_str(&format!(
            "    <testcase classname=\"certify.{}.{}\" name=\"seed-{}\" time=\"{:.3}\"",
            xml_escape(&r.scenario),
            xml_escape(&r.network),
            r.seed,
            r.wall_ms as f64 / 1000.0
        ));
        if r.passed {
            x.push_str("/>\n");
        } else {
            let problems = r.problems();
            let kind = if r.error.is_some() {
                "error"
            } else if !r.failed_expectations.is_empty() {
                "expectation"
            } else {
                "trace"
            };
            x.push_str(">\n");
            x.push_str(&format!(
                "      <failure type=\"{kind}\" message=\"{}\">{}\nreport: {}</failure>\n",
                xml_escape(problems.first().map(String::as_str).unwrap_or("failed")),
                xml_escape(&problems.join("\n")),
                xml_escape(&r.report)
            ));
            x.push_str("    </testcase>\n");
        }
    }
    for file in stale {
        x.push_str(&format!(
            "    <testcase classname=\"certify.stale\" name=\"{}\" time=\"0\">\n      <failure type=\"stale\" message=\"stale pinned trace: no run produces it; `cargo xtask certify --bless` drops it\"/>\n    </testcase>\n",
            xml_escape(file)
        ));
    }
    x.push_str("  </testsuite>\n");
    let capture_ms: u64 = captures.iter().map(|c| c.wall_ms).sum();
    x.push_str(&format!(
        "  <testsuite name=\"simnet.certify_captures\" tests=\"{}\" failures=\"{capture_failures}\" errors=\"0\" \
         skipped=\"0\" time=\"{:.3}\">\n",
        captures.len(),
        capture_ms as f64 / 1000.0
    ));
    for c in captures {
        x.push_str(&format!(
            "    <testcase classname=\"certify.capture\" name=\"{} seed-{}\" time=\"{:.3}\"",
            xml_escape(&c.capture),
            c.seed,
            c.wall_ms as f64 / 1000.0
        ));
        if c.passed {
            x.push_str("/>\n");
        } else {
            let kind = if c.error.is_some() { "error" } else { "verdict" };
            x.push_str(&format!(
                ">\n      <failure type=\"{kind}\" message=\"{}\">{}\nreport: {}</failure>\n    </testcase>\n",
                xml_escape(&c.problem()),
                xml_escape(&c.why),
                xml_escape(&c.report)
            ));
        }
    }
    x.push_str("  </testsuite>\n</testsuites>\n");
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seed: u64, passed: bool, snapshot: &str) -> Record {
        Record {
            scenario: "reg".into(),
            description: "A peer registers.".into(),
            network: "v4".into(),
            seed,
            passed,
            expectations_passed: 2,
            expectations_total: 2,
            failed_expectations: Vec::new(),
            snapshot: snapshot.into(),
            snapshot_name: format!("reg__v4__seed{seed}"),
            error: None,
            datagrams: 10 + seed,
            sim_ms: 1500,
            wall_ms: 20,
            report: format!("reg/v4/seed-{seed}/report.md"),
        }
    }

    #[test]
    fn summary_groups_seeds_and_links_reports() {
        let records = vec![rec(1, true, "matched"), rec(2, false, "mismatch")];
        let md = summary_md(&records, &[cap(true)], &[], false, false, Duration::from_secs(3));
        assert!(md.contains("**FAIL**: 2 run(s), 1 passed, 1 failed"), "{md}");
        assert!(md.contains("| reg | v4 | 1, 2 | FAIL | 4/4 | 1/2 pinned | 11-12 | 1.500 s |"), "{md}");
        assert!(md.contains("[seed 2](reg/v4/seed-2/report.md)"), "{md}");
        assert!(md.contains("event trace differs from the pinned snapshot reg__v4__seed2"), "{md}");
    }

    #[test]
    fn junit_marks_failures() {
        let records = vec![rec(1, true, "matched"), rec(2, false, "missing")];
        let x = junit_xml(&records, &[], &["certify__gone__v4__seed1.snap".into()], Duration::from_secs(1));
        assert!(x.contains("tests=\"3\" failures=\"2\""), "{x}");
        assert!(x.contains("name=\"certify__gone__v4__seed1.snap\""), "{x}");
        assert!(x.contains("<testcase classname=\"certify.reg.v4\" name=\"seed-1\" time=\"0.020\"/>"), "{x}");
        assert!(x.contains("<failure type=\"trace\" message=\"no pinned trace reg__v4__seed2"), "{x}");
    }

    fn cap(passed: bool) -> CaptureRecord {
        CaptureRecord {
            capture: "x.pcap".into(),
            config: Some("x".into()),
            seed: 1,
            passed,
            why: "Because <reasons>.".into(),
            expected: "replay: exchanges=2 matched=2 diverged=0 missing=0 extra=0".into(),
            got: Some(if passed {
                "replay: exchanges=2 matched=2 diverged=0 missing=0 extra=0".into()
            } else {
                "replay: exchanges=2 matched=1 diverged=1 missing=0 extra=0".into()
            }),
            error: None,
            report: "captures/x/seed-1/report.md".into(),
            ladder: "captures/x/seed-1/ladder.svg".into(),
            wall_ms: 30,
        }
    }

    #[test]
    fn summary_has_a_row_per_capture_and_a_changed_verdict_fails() {
        let records = vec![rec(1, true, "matched")];
        let md = summary_md(&records, &[cap(true)], &[], false, true, Duration::from_secs(3));
        assert!(md.contains("**PASS**: 1 run(s), 1 passed, 0 failed; 1 capture(s), 0 changed"), "{md}");
        assert!(
            md.contains(
                "| x.pcap | x | 1 | PASS | exchanges=2 matched=2 diverged=0 missing=0 extra=0 | same | \
                 [report](captures/x/seed-1/report.md) |"
            ),
            "{md}"
        );
        let md = summary_md(&records, &[cap(false)], &[], false, true, Duration::from_secs(3));
        assert!(md.contains("**FAIL**: 1 run(s), 1 passed, 0 failed; 1 capture(s), 1 changed"), "{md}");
        assert!(
            md.contains("| FAIL | exchanges=2 matched=1 diverged=1 missing=0 extra=0 | exchanges=2 matched=2"),
            "{md}"
        );
        assert!(md.contains("## Changed capture verdicts"), "{md}");
    }

    #[test]
    fn junit_has_a_testcase_per_capture() {
        let records = vec![rec(1, true, "matched")];
        let x = junit_xml(&records, &[cap(true), cap(false)], &[], Duration::from_secs(1));
        assert!(x.contains("<testsuites name=\"certify\" tests=\"3\" failures=\"1\""), "{x}");
        assert!(x.contains("<testsuite name=\"simnet.certify_captures\" tests=\"2\" failures=\"1\""), "{x}");
        assert!(x.contains("<testcase classname=\"certify.capture\" name=\"x.pcap seed-1\" time=\"0.030\"/>"), "{x}");
        assert!(
            x.contains("<failure type=\"verdict\" message=\"verdict changed: captures/manifest.toml expects"),
            "{x}"
        );
        assert!(x.contains("Because &lt;reasons&gt;."), "{x}");
    }

    #[test]
    fn index_lists_runs_and_captures() {
        let out = std::env::temp_dir().join(format!("xtask-index-{}", std::process::id()));
        let dir = out.join("captures/x/seed-1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ladder.svg"), "<svg/>").unwrap();
        let load = out.join("reg/v4/seed-1");
        std::fs::create_dir_all(&load).unwrap();
        let mut events = String::new();
        for call in 0..12 {
            events.push_str(&format!(
                "{{\"t_ms\":{},\"host\":\"a\",\"event\":\"call_answered\",\"call\":{call}}}\n",
                100 + call
            ));
        }
        std::fs::write(load.join("events.jsonl"), events).unwrap();
        std::fs::write(load.join("ladder.svg"), "<svg/>").unwrap();
        let h = html::render(&index_html(
            &out,
            &[rec(1, true, "matched"), rec(2, false, "mismatch")],
            &[cap(false)],
            false,
        ));
        std::fs::remove_dir_all(&out).unwrap();
        assert!(h.contains("<a href=\"reg/v4/seed-1/report.md\">seed 1</a> <a href=\"reg/v4/seed-1/ladder.svg\">ladder 1</a> <a href=\"reg/v4/seed-2/report.md\">seed 2</a>"), "{h}");
        assert!(h.contains("<td class=\"FAIL\">FAIL</td>"), "{h}");
        assert!(h.contains("<a href=\"captures/x/seed-1/ladder.svg\">ladder</a>"), "{h}");
        assert!(h.contains("src=\"captures/x/seed-1/ladder.svg\""), "{h}");
        assert!(h.contains("reg over v4, seed 1: calls up"), "{h}");
        assert!(h.contains("a (peak 12)"), "{h}");
    }
}

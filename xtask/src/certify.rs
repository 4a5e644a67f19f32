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
                out.push(format!(
                    "expectation failed: {}: {}",
                    f.description, f.detail
                ));
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
    let out = out
        .canonicalize()
        .map_err(|e| TaskError::io("cannot resolve", &out, e))?;
    let records_path = out.join("certify.jsonl");
    match std::fs::remove_file(&records_path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(TaskError::io("cannot remove", &records_path, e)),
    }
    if args.bless {
        remove_pinned_traces(&root.join("simnet/tests/snapshots"))?;
    }

    let progress = output::show_progress();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        // `--workspace` (not `-p simnet`) resolves features as the README's test
        // command `cargo test --workspace --release` does, so CI reuses that build.
        .args([
            "test",
            "--release",
            "--workspace",
            "--test",
            "certify",
            "--",
            "--ignored",
        ])
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
            if args.bless {
                "  (blessing: snapshots are rewritten)"
            } else {
                ""
            }
        );
    }
    let started = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| TaskError::new(format!("cannot run cargo: {e}")))?;
    let elapsed = started.elapsed();

    let records = read_records(&records_path)?;
    if records.is_empty() {
        return Err(TaskError::new(format!(
            "the certify test produced no results ({}; cargo test exited with {status})",
            shown(&records_path)
        ))
        .hint(
            "see the cargo output above: the test did not build, found no scenarios, or crashed",
        ));
    }

    let stale = if args.bless {
        Vec::new()
    } else {
        stale_traces(&root.join("simnet/tests/snapshots"), &records)
    };
    let summary = out.join("summary.md");
    std::fs::write(
        &summary,
        summary_md(&records, &stale, args.bless, status.success(), elapsed),
    )
    .map_err(|e| TaskError::io("cannot write", &summary, e))?;
    let junit = out.join("junit.xml");
    std::fs::write(&junit, junit_xml(&records, &stale, elapsed))
        .map_err(|e| TaskError::io("cannot write", &junit, e))?;

    let failed: Vec<&Record> = records.iter().filter(|r| !r.passed).collect();
    print!("{}", grouped_table(&records, false).render());
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
    if !stale.is_empty() {
        println!();
        for file in &stale {
            println!("FAIL stale pinned trace simnet/tests/snapshots/{file}: no run produces it (`cargo xtask certify --bless` drops it)");
        }
    }
    if !status.success() && failed.is_empty() && stale.is_empty() {
        println!("\nthe certify test failed although every run passed (see its output above)");
    }
    println!(
        "\n{} run(s), {} passed, {} failed in {}; {} and {} written",
        records.len(),
        records.len() - failed.len(),
        failed.len(),
        secs(elapsed),
        shown(&summary),
        shown(&junit)
    );
    if args.bless {
        println!("snapshots rewritten in simnet/tests/snapshots/: review them with `git diff` before committing");
    }
    Ok(status.success() && failed.is_empty() && stale.is_empty())
}

/// Pinned traces in `dir` that no run of this certification compared against.
fn stale_traces(dir: &Path, records: &[Record]) -> Vec<String> {
    let expected: std::collections::BTreeSet<String> = records
        .iter()
        .map(|r| format!("certify__{}.snap", r.snapshot_name))
        .collect();
    let mut stale: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|f| {
                    f.starts_with("certify__") && f.ends_with(".snap") && !expected.contains(f)
                })
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
        if name.starts_with("certify__") && (name.ends_with(".snap") || name.ends_with(".snap.new"))
        {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| TaskError::io("cannot remove", &path, e))?;
        }
    }
    Ok(())
}

fn read_records(path: &Path) -> Result<Vec<Record>, TaskError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(TaskError::io("cannot read", path, e)),
    };
    let mut records = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let r: Record = serde_json::from_str(line).map_err(|e| {
            TaskError::new(format!(
                "{}:{}: unreadable result record: {e}",
                shown(path),
                i + 1
            ))
        })?;
        records.push(r);
    }
    records
        .sort_by(|a, b| (&a.scenario, &a.network, a.seed).cmp(&(&b.scenario, &b.network, b.seed)));
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
        if markdown_links {
            "reports"
        } else {
            "wall time"
        },
    ]);
    for ((scenario, network), runs) in groups {
        let seeds: Vec<String> = runs.iter().map(|r| r.seed.to_string()).collect();
        let ok = runs.iter().all(|r| r.passed);
        let exp_passed: usize = runs.iter().map(|r| r.expectations_passed).sum();
        let exp_total: usize = runs.iter().map(|r| r.expectations_total).sum();
        let traces_ok = runs
            .iter()
            .filter(|r| matches!(r.snapshot.as_str(), "matched" | "written"))
            .count();
        let trace = if runs.iter().all(|r| r.snapshot == "written") {
            "blessed".to_string()
        } else {
            format!("{traces_ok}/{} pinned", runs.len())
        };
        let datagrams = range(runs.iter().map(|r| r.datagrams));
        let sim = range_secs(runs.iter().map(|r| r.sim_ms));
        let last = if markdown_links {
            runs.iter()
                .map(|r| format!("[seed {}]({})", r.seed, r.report))
                .collect::<Vec<_>>()
                .join(" ")
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
            format!(
                "{} - {}",
                secs(Duration::from_millis(*lo)),
                secs(Duration::from_millis(*hi))
            )
        }
        _ => "-".into(),
    }
}

fn summary_md(
    records: &[Record],
    stale: &[String],
    bless: bool,
    test_ok: bool,
    elapsed: Duration,
) -> String {
    let failed: Vec<&Record> = records.iter().filter(|r| !r.passed).collect();
    let verdict = if failed.is_empty() && stale.is_empty() && test_ok {
        "PASS"
    } else {
        "FAIL"
    };
    let mut md = String::from("# Certification summary\n\n");
    md.push_str(&format!(
        "**{verdict}**: {} run(s), {} passed, {} failed ({} of wall time, build included){}.\n\n",
        records.len(),
        records.len() - failed.len(),
        failed.len(),
        secs(elapsed),
        if bless {
            "; pinned traces were rewritten (`--bless`)"
        } else {
            ""
        }
    ));
    md.push_str(
        "Every scenario runs over each seed and network below. A run passes when all its \
expectations hold and its event trace equals the pinned snapshot in \
`simnet/tests/snapshots/`. Generated by `cargo xtask certify`.\n\n",
    );
    md.push_str(&grouped_table(records, true).markdown());
    if !failed.is_empty() {
        md.push_str("\n## Failures\n\n");
        for r in &failed {
            md.push_str(&format!(
                "### {} over {}, seed {}\n\n",
                r.scenario, r.network, r.seed
            ));
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
        md.push_str(
            "\nThe certify test itself failed although every run passed; see the CI log.\n",
        );
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

fn junit_xml(records: &[Record], stale: &[String], elapsed: Duration) -> String {
    let failures = records.iter().filter(|r| !r.passed).count() + stale.len();
    let tests = records.len() + stale.len();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"certify\" tests=\"{tests}\" failures=\"{failures}\" time=\"{:.3}\">\n",
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
        let md = summary_md(&records, &[], false, false, Duration::from_secs(3));
        assert!(
            md.contains("**FAIL**: 2 run(s), 1 passed, 1 failed"),
            "{md}"
        );
        assert!(
            md.contains("| reg | v4 | 1, 2 | FAIL | 4/4 | 1/2 pinned | 11-12 | 1.500 s |"),
            "{md}"
        );
        assert!(md.contains("[seed 2](reg/v4/seed-2/report.md)"), "{md}");
        assert!(
            md.contains("event trace differs from the pinned snapshot reg__v4__seed2"),
            "{md}"
        );
    }

    #[test]
    fn junit_marks_failures() {
        let records = vec![rec(1, true, "matched"), rec(2, false, "missing")];
        let x = junit_xml(
            &records,
            &["certify__gone__v4__seed1.snap".into()],
            Duration::from_secs(1),
        );
        assert!(x.contains("tests=\"3\" failures=\"2\""), "{x}");
        assert!(x.contains("name=\"certify__gone__v4__seed1.snap\""), "{x}");
        assert!(
            x.contains("<testcase classname=\"certify.reg.v4\" name=\"seed-1\" time=\"0.020\"/>"),
            "{x}"
        );
        assert!(
            x.contains("<failure type=\"trace\" message=\"no pinned trace reg__v4__seed2"),
            "{x}"
        );
    }
}

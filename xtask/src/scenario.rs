//! `cargo xtask scenario`: run scenario files in the simulated network.

use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::sim::{self, RunOptions, Scenario};

use indicatif::ProgressBar;

use crate::html;
use crate::output::{self, secs, shown, Table};
use crate::{workspace_root, ScenarioArgs, TaskError};

pub fn run(args: &ScenarioArgs) -> Result<bool, TaskError> {
    let dir = args.scenarios.clone().unwrap_or_else(|| workspace_root().join("scenarios"));
    if args.list {
        list(&dir)?;
        return Ok(true);
    }
    let target = args.target.as_deref().unwrap_or("all");
    let scenarios = resolve(target, &dir)?;
    let out = args.out.clone().unwrap_or_else(|| workspace_root().join("reports"));

    // Every (scenario, network) pair to run, in order.
    let mut plan = Vec::new();
    for scenario in &scenarios {
        let networks = scenario.networks();
        match args.network {
            Some(only) => {
                let only = only.to_simnet();
                if networks.contains(&only) {
                    plan.push((scenario, only));
                } else {
                    eprintln!(
                        "note: skipping {}: it does not run over {only} (it declares {})",
                        scenario.name,
                        join(&networks)
                    );
                }
            }
            None => plan.extend(networks.into_iter().map(|n| (scenario, n))),
        }
    }
    if plan.is_empty() {
        return Err(TaskError::new("nothing to run").hint("no selected scenario runs over the requested network"));
    }

    let progress = output::show_progress();
    let mut table = Table::new(&["scenario", "network", "seed", "verdict", "expectations", "sim time", "wall time"]);
    let mut failures: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    let mut ladders = Vec::new();
    let mut plots = Vec::new();
    let bar = if progress { output::progress_bar("scenarios", plan.len() as u64) } else { ProgressBar::hidden() };
    for (scenario, network) in &plan {
        bar.set_message(format!("{} over {network}, seed {}", scenario.name, args.seed));
        let options = RunOptions { seed: args.seed, network: *network, pcap: true };
        let started = Instant::now();
        let result = sim::run(scenario, &options);
        let wall = started.elapsed();
        let run_dir = output::run_dir(&out, &scenario.name, &network.to_string(), args.seed);
        match result {
            Ok(outcome) => {
                output::write_run_files(&run_dir, &outcome.report_md, &outcome.events_jsonl, &outcome.pcap)?;
                let ladder = run_dir.join("ladder.svg");
                match &outcome.ladder_svg {
                    Some(svg) => std::fs::write(&ladder, svg).map_err(|e| TaskError::io("cannot write", &ladder, e))?,
                    // Not one left over from an earlier run that placed calls.
                    None => match std::fs::remove_file(&ladder) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(TaskError::io("cannot remove", &ladder, e)),
                    },
                }
                let passed = outcome.verdicts.iter().filter(|v| v.passed).count();
                let total = outcome.verdicts.len();
                let ok = outcome.passed && passed == total;
                let rel = format!("{}/{network}/seed-{}/", output::path_safe(&scenario.name), args.seed);
                let mut links = vec![
                    ("report.md".to_string(), format!("{rel}report.md")),
                    ("events.jsonl".to_string(), format!("{rel}events.jsonl")),
                    ("capture.pcap".to_string(), format!("{rel}capture.pcap")),
                ];
                let caption = format!("{} over {network}, seed {}", scenario.name, args.seed);
                if outcome.ladder_svg.is_some() {
                    links.push(("ladder.svg".to_string(), format!("{rel}ladder.svg")));
                    ladders.push(html::Picture::File { caption: caption.clone(), href: format!("{rel}ladder.svg") });
                }
                let sim_ms = outcome.sim_duration.as_millis() as u64;
                if let Some(svg) = html::calls_up_plot(&outcome.events_jsonl, sim_ms, crate::certify::LOAD_MIN_CALLS) {
                    plots.push(html::Picture::Inline { caption: format!("{caption}: calls up"), svg });
                }
                let problems: Vec<String> = outcome
                    .verdicts
                    .iter()
                    .filter(|v| !v.passed)
                    .map(|v| {
                        if v.detail.is_empty() {
                            v.description.clone()
                        } else {
                            format!("{}: {}", v.description, v.detail)
                        }
                    })
                    .collect();
                rows.push(vec![
                    html::Cell::Text(scenario.name.clone()),
                    html::Cell::Text(network.to_string()),
                    html::Cell::Text(args.seed.to_string()),
                    html::Cell::Verdict(if ok { "PASS" } else { "FAIL" }.into()),
                    html::Cell::Text(format!(
                        "expectations {passed}/{total}, datagrams {}, sim time {}",
                        outcome.datagrams,
                        secs(outcome.sim_duration)
                    )),
                    html::Cell::Links(links),
                    html::Cell::Text(problems.join("\n")),
                ]);
                table.row(vec![
                    scenario.name.clone(),
                    network.to_string(),
                    args.seed.to_string(),
                    if ok { "PASS" } else { "FAIL" }.into(),
                    format!("{passed}/{total}"),
                    secs(outcome.sim_duration),
                    secs(wall),
                ]);
                if !ok {
                    let mut text = format!("FAIL {} over {network}, seed {}:\n", scenario.name, args.seed);
                    for v in outcome.verdicts.iter().filter(|v| !v.passed) {
                        text.push_str(&format!("  - {}", v.description));
                        if !v.detail.is_empty() {
                            text.push_str(&format!(": {}", v.detail));
                        }
                        text.push('\n');
                    }
                    text.push_str(&format!("  report: {}\n", shown(&run_dir.join("report.md"))));
                    failures.push(text);
                }
            }
            Err(e) => {
                table.row(vec![
                    scenario.name.clone(),
                    network.to_string(),
                    args.seed.to_string(),
                    "ERROR".into(),
                    "-".into(),
                    "-".into(),
                    secs(wall),
                ]);
                rows.push(vec![
                    html::Cell::Text(scenario.name.clone()),
                    html::Cell::Text(network.to_string()),
                    html::Cell::Text(args.seed.to_string()),
                    html::Cell::Verdict("ERROR".into()),
                    html::Cell::Text("-".into()),
                    html::Cell::Links(Vec::new()),
                    html::Cell::Text(e.to_string()),
                ]);
                failures.push(format!("ERROR {} over {network}, seed {}: {e}\n", scenario.name, args.seed));
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();

    print!("{}", table.render());
    let failed = failures.len();
    let index = html::Index {
        title: "Scenario runs".into(),
        passed: failed == 0,
        summary: format!(
            "{} run(s), {} passed, {failed} failed, seed {}. Generated by `cargo xtask scenario`; \
             `cargo xtask certify` rewrites this page with every scenario and capture.",
            plan.len(),
            plan.len() - failed,
            args.seed
        ),
        tables: vec![html::Table {
            heading: "Runs".into(),
            intro: String::new(),
            header: ["scenario", "network", "seed", "verdict", "figures", "files", "problems"]
                .map(String::from)
                .to_vec(),
            rows,
        }],
        pictures: vec![("Calls up over time (load runs)".into(), plots), ("Ladders".into(), ladders)],
    };
    let index = html::write(&out, &index)?;
    if failed > 0 {
        println!();
        for f in &failures {
            print!("{f}");
        }
    }
    println!(
        "\n{} run(s), {} passed, {} failed; reports in {} (index: {})",
        plan.len(),
        plan.len() - failed,
        failed,
        shown(&out),
        shown(&index)
    );
    Ok(failed == 0)
}

fn list(dir: &Path) -> Result<(), TaskError> {
    let scenarios = all(dir)?;
    let mut table = Table::new(&["name", "networks", "description"]);
    for s in &scenarios {
        let first_line = s.description.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
        table.row(vec![s.name.clone(), join(&s.networks()), first_line.to_string()]);
    }
    print!("{}", table.render());
    Ok(())
}

fn join(networks: &[sim::Network]) -> String {
    networks.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")
}

/// Every scenario in `dir`, sorted by name; an error when there are none.
fn all(dir: &Path) -> Result<Vec<Scenario>, TaskError> {
    if !dir.is_dir() {
        return Err(TaskError::new(format!("scenario directory {} does not exist", shown(dir)))
            .hint("run from inside the workspace, or pass --scenarios DIR"));
    }
    let mut scenarios = sim::list_scenarios(dir)
        .map_err(|e| TaskError::new(format!("cannot read the scenarios in {}: {e}", shown(dir))))?;
    if scenarios.is_empty() {
        return Err(TaskError::new(format!("no scenario files in {}", shown(dir)))
            .hint("docs/scenarios.md explains how to write one"));
    }
    scenarios.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(scenarios)
}

/// `all`, a path to a scenario file, or the name of one in `dir`.
fn resolve(target: &str, dir: &Path) -> Result<Vec<Scenario>, TaskError> {
    if target == "all" {
        return all(dir);
    }
    let path = PathBuf::from(target);
    let looks_like_path = path.components().count() > 1 || path.extension().is_some();
    if path.is_file() || looks_like_path {
        if !path.exists() {
            return Err(TaskError::new(format!("no such scenario file: {target}"))
                .hint("give a scenario name (see `cargo xtask scenario --list`), a path to a file, or `all`"));
        }
        let scenario = Scenario::load(&path).map_err(|e| TaskError::new(format!("{}: {e}", shown(&path))))?;
        return Ok(vec![scenario]);
    }
    let scenarios = all(dir)?;
    let names: Vec<String> = scenarios.iter().map(|s| s.name.clone()).collect();
    if let Some(found) = scenarios.into_iter().find(|s| s.name == target) {
        return Ok(vec![found]);
    }
    let mut hint = String::new();
    let mut close: Vec<&String> = names.iter().filter(|n| output::edit_distance(n, target) <= 3).collect();
    close.sort_by_key(|n| output::edit_distance(n, target));
    if let Some(best) = close.first() {
        hint.push_str(&format!("did you mean `{best}`?\n"));
    }
    hint.push_str(&format!("available: {}, or `all`\n", names.join(", ")));
    hint.push_str("`cargo xtask scenario --list` describes each one");
    Err(TaskError::new(format!("no scenario named `{target}` in {}", shown(dir))).hint(hint))
}

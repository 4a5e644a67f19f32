//! `cargo xtask bench`: the criterion benches of the switch, summarised as
//! rates, and the simulator's speed on the trunk-800 scenario.
//!
//! Nothing here judges the figures: slowness is never a failure (a shared
//! 2-core machine makes wall-clock limits flaky). The task fails only when
//! something could not run: the benches did not build or run, the scenario
//! could not be loaded or played.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use crate::output::shown;
use crate::sim::{self, RunOptions, Scenario};
use crate::{workspace_root, BenchArgs, TaskError};

/// The criterion benchmarks summarised, in print order: (criterion id, label, unit).
const SUMMARY: &[(&str, &str, &str)] = &[
    ("full/encode voice", "encode full", "frames/s"),
    ("full/encode NEW", "encode full NEW", "frames/s"),
    ("full/decode voice", "decode full", "frames/s"),
    ("full/decode NEW", "decode full NEW", "frames/s"),
    ("mini/decode", "decode mini", "frames/s"),
    ("ies/decode NEW", "decode IEs of a NEW", "lists/s"),
    ("trunk/pack 800 ts", "trunk pack 800", "entries/s"),
    ("trunk/pack 800", "trunk pack 800 no-ts", "entries/s"),
    ("trunk/decode 800 ts", "trunk decode", "entries/s"),
    ("trunk/decode 800", "trunk decode no-ts", "entries/s"),
    ("g711/encode ulaw 160", "g711 ulaw encode 160", "frames/s"),
    ("g711/encode alaw 160", "g711 alaw encode 160", "frames/s"),
    ("endpoint/trunk tick 800", "endpoint trunk tick 800", "call-ticks/s"),
    ("sip storm/REGISTER 200 with 1000 live", "sip REGISTER 200, 1k live", "requests/s"),
    ("sip storm/REGISTER 200 with 100000 live", "sip REGISTER 200, 100k live", "requests/s"),
];

pub fn run(args: &BenchArgs) -> Result<bool, TaskError> {
    if !args.no_criterion {
        let started = SystemTime::now();
        run_criterion(args.filter.as_deref())?;
        summarise(&target_dir().join("criterion"), started)?;
    }
    if !args.no_sim {
        crate::no_huge_pages();
        sim_speed(&args.scenario, args.seed)?;
    }
    Ok(true)
}

/// `cargo bench -q -p switch --bench '*' [-- FILTER]`, criterion's output passed through.
fn run_criterion(filter: Option<&str>) -> Result<(), TaskError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).args(["bench", "-q", "-p", "switch", "--bench", "*"]);
    if let Some(f) = filter {
        cmd.args(["--", f]);
    }
    let status = cmd.status().map_err(|e| TaskError::new(format!("cannot run cargo bench: {e}")))?;
    if !status.success() {
        return Err(TaskError::new(format!("cargo bench -p switch failed ({status})"))
            .hint("its output above says why; `cargo bench -p switch --no-run` builds the benches alone"));
    }
    Ok(())
}

/// Where cargo puts its output: `CARGO_TARGET_DIR` or `target/` at the root.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// One criterion result: elements per iteration and nanoseconds per iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub id: String,
    pub elements: u64,
    pub ns_per_iter: f64,
}

impl Measured {
    pub fn rate(&self) -> f64 {
        self.elements as f64 * 1e9 / self.ns_per_iter
    }
}

/// Reads `DIR/<bench>/new/{benchmark,estimates}.json` written by criterion;
/// `None` for a directory that is not one result or has no element throughput.
pub fn read_result(dir: &Path) -> Option<Measured> {
    let bench: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("benchmark.json")).ok()?).ok()?;
    let est: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("estimates.json")).ok()?).ok()?;
    let elements = bench.get("throughput")?.get("Elements")?.as_u64()?;
    // Criterion's headline "time" is the slope of the linear fit when it has one.
    let ns = est
        .get("slope")
        .and_then(|s| s.get("point_estimate"))
        .and_then(|v| v.as_f64())
        .or_else(|| est.get("mean")?.get("point_estimate")?.as_f64())?;
    let id = bench.get("full_id")?.as_str()?.to_string();
    (ns > 0.0).then_some(Measured { id, elements, ns_per_iter: ns })
}

/// Every result under `root` written at or after `since`.
fn results(root: &Path, since: SystemTime) -> Vec<Measured> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let path = e.path();
            if !path.is_dir() {
                continue;
            }
            if path.file_name().is_some_and(|n| n == "new") {
                let fresh =
                    std::fs::metadata(path.join("estimates.json")).and_then(|m| m.modified()).is_ok_and(|t| t >= since);
                if fresh {
                    found.extend(read_result(&path));
                }
            } else {
                stack.push(path);
            }
        }
    }
    found
}

/// A rate as a whole number: `16118000`.
pub fn whole(rate: f64) -> String {
    format!("{:.0}", rate.max(0.0))
}

fn summarise(root: &Path, since: SystemTime) -> Result<(), TaskError> {
    // Criterion's file times have the file system's resolution; allow a second.
    let since = since.checked_sub(std::time::Duration::from_secs(1)).unwrap_or(since);
    let found = results(root, since);
    if found.is_empty() {
        return Err(TaskError::new(format!("cargo bench ran but wrote no results under {}", shown(root)))
            .hint("is CARGO_TARGET_DIR the same for this task and for cargo?"));
    }
    println!();
    for (id, label, unit) in SUMMARY {
        if let Some(m) = found.iter().find(|m| m.id == *id) {
            let mut line = format!("{label}: {} {unit}", whole(m.rate()));
            if *id == "endpoint/trunk tick 800" {
                // 800 calls need 50 ticks a second in real time.
                let core = 800.0 * 50.0 / m.rate() * 100.0;
                line.push_str(&format!(" ({core:.1}% of a core for both ends of 800 trunked calls, no I/O)"));
            }
            println!("{line}");
        }
    }
    for m in found.iter().filter(|m| !SUMMARY.iter().any(|(id, _, _)| *id == m.id)) {
        println!("{}: {} elements/s", m.id, whole(m.rate()));
    }
    Ok(())
}

/// Plays the scenario once (first network it declares, no capture) and prints
/// simulated seconds per wall second.
fn sim_speed(name: &str, seed: u64) -> Result<(), TaskError> {
    let path = if name.ends_with(".toml") || name.contains('/') {
        PathBuf::from(name)
    } else {
        workspace_root().join("scenarios").join(format!("{name}.toml"))
    };
    let scenario = Scenario::load(&path).map_err(|e| {
        TaskError::new(format!("cannot load scenario {}: {e}", shown(&path)))
            .hint("`cargo xtask scenario --list` shows the scenarios; --no-sim skips this step")
    })?;
    let network = *scenario
        .networks()
        .first()
        .ok_or_else(|| TaskError::new(format!("scenario {} declares no network", scenario.name)))?;
    let options = RunOptions { seed, network, pcap: false };
    let started = Instant::now();
    let outcome = sim::run(&scenario, &options)
        .map_err(|e| TaskError::new(format!("scenario {} over {network}, seed {seed}: {e}", scenario.name)))?;
    let wall = started.elapsed().as_secs_f64();
    let simulated = outcome.sim_duration.as_secs_f64();
    let passed = outcome.verdicts.iter().filter(|v| v.passed).count();
    eprintln!(
        "{} over {network}, seed {seed}: {simulated:.1} s simulated in {wall:.2} s wall, {} datagrams, expectations {passed}/{}{}",
        scenario.name,
        outcome.datagrams,
        outcome.verdicts.len(),
        if outcome.passed { "" } else { " (FAILED: `cargo xtask scenario` shows which)" }
    );
    println!("sim-speed {}: {:.1}x real time", scenario.name, simulated / wall.max(1e-9));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_numbers() {
        assert_eq!(whole(16_118_000.4), "16118000");
        assert_eq!(whole(0.2), "0");
        assert_eq!(whole(-1.0), "0");
    }

    #[test]
    fn reads_criterion_results() {
        let dir = std::env::temp_dir().join(format!("xtask-bench-test-{}", std::process::id()));
        let new = dir.join("trunk").join("pack 800").join("new");
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(
            new.join("benchmark.json"),
            r#"{"group_id":"trunk","function_id":"pack 800","full_id":"trunk/pack 800","throughput":{"Elements":800}}"#,
        )
        .unwrap();
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":60000.0},"slope":{"point_estimate":50000.0}}"#,
        )
        .unwrap();
        let found = results(&dir, SystemTime::UNIX_EPOCH);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].id, "trunk/pack 800");
        assert!((found[0].rate() - 16_000_000.0).abs() < 1.0);
    }
}

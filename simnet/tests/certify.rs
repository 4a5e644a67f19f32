//! The certification run: every scenario over every seed in [`SEEDS`] and every
//! network it declares must pass, and its event trace must equal the pinned
//! snapshot `snapshots/certify__{scenario}__{network}__seed{n}.snap`.
//!
//! Ignored by default so `cargo test` does not run it a second time; run it with
//! `cargo xtask certify` (CI) or directly:
//!
//! ```text
//! cargo test --release -p simnet --test certify -- --ignored
//! ```
//!
//! Environment:
//! * `SIMNET_CERTIFY_OUT=DIR`: also write each run's report.md, events.jsonl and
//!   capture.pcap under `DIR/NAME/NETWORK/seed-N/`, and one JSON record per run
//!   to `DIR/certify.jsonl` (read by `cargo xtask certify` for summary.md and junit.xml).
//! * `SIMNET_CERTIFY_JOBS=N`: runs in parallel (default: the number of CPUs).
//! * `INSTA_UPDATE=always` rewrites the snapshots (what `cargo xtask certify --bless` does).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use simnet::{Network, RunOptions, Scenario};

/// The fixed seeds every scenario is certified with. Changing them means re-blessing.
const SEEDS: [u64; 3] = [1, 2, 3];

/// Runs go in parallel; snapshot comparisons one at a time, so insta's diffs do not interleave.
static SNAPSHOT_LOCK: Mutex<()> = Mutex::new(());

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("simnet sits in the workspace").to_path_buf()
}

fn snapshot_name(scenario: &str, network: Network, seed: u64) -> String {
    format!("{scenario}__{network}__seed{seed}")
}

/// A scenario name as one path component.
fn path_safe(name: &str) -> String {
    let s: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if s.is_empty() || s.starts_with('.') {
        format!("_{s}")
    } else {
        s
    }
}

/// Traces longer than this are pinned condensed (see [`pinned_trace`]).
const FULL_TRACE_EVENTS: usize = 2000;

/// Beyond this many events of one kind on one host, a long trace pins their
/// count and sums instead of each line (registration storms, floods).
const FULL_KIND_EVENTS: usize = 1000;

/// What is pinned of a run's trace. Ordinary scenarios: the whole trace.
/// Load scenarios (thousands of calls, storms): every event that is not
/// about one call and not of a kind repeated more than [`FULL_KIND_EVENTS`]
/// times on its host, in full and in order, then per host and condensed
/// event kind the count and the sums of every numeric field. Any change in
/// what happened still shows, without megabytes of lines in the repository.
fn pinned_trace(events_jsonl: &str) -> String {
    let lines: Vec<&str> = events_jsonl.lines().collect();
    if lines.len() <= FULL_TRACE_EVENTS {
        return events_jsonl.to_string();
    }
    let values: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad trace line {line}: {e}")))
        .collect();
    let kind = |v: &serde_json::Value| {
        (v["host"].as_str().unwrap_or_default().to_string(), v["event"].as_str().unwrap_or_default().to_string())
    };
    let mut per_kind: BTreeMap<(String, String), usize> = BTreeMap::new();
    for v in &values {
        *per_kind.entry(kind(v)).or_default() += 1;
    }
    let mut kept = String::new();
    // (host, event) -> (count, field -> sum); BTreeMaps keep the output ordered.
    let mut calls: BTreeMap<(String, String), (u64, BTreeMap<String, i128>)> = BTreeMap::new();
    for (line, value) in lines.into_iter().zip(&values) {
        let event = value["event"].as_str().unwrap_or_default();
        if !event.starts_with("call_") && per_kind[&kind(value)] <= FULL_KIND_EVENTS {
            kept.push_str(line);
            kept.push('\n');
            continue;
        }
        let host = value["host"].as_str().unwrap_or_default().to_string();
        let entry = calls.entry((host, event.to_string())).or_default();
        entry.0 += 1;
        for (field, v) in value.as_object().into_iter().flatten() {
            // Times and call numbers differ per call and are not quantities.
            if matches!(field.as_str(), "t_ms" | "call") {
                continue;
            }
            if let Some(n) = v.as_i64() {
                *entry.1.entry(field.clone()).or_default() += i128::from(n);
            }
        }
    }
    kept.push_str(&format!(
        "# {} call events condensed: count and sums per host and kind\n",
        calls.values().map(|c| c.0).sum::<u64>()
    ));
    for ((host, event), (count, sums)) in calls {
        let sums: Vec<String> = sums.iter().map(|(f, n)| format!("{f}={n}")).collect();
        kept.push_str(&format!("{host} {event} count={count} {}\n", sums.join(" ")));
    }
    kept
}

struct Job<'a> {
    scenario: &'a Scenario,
    network: Network,
    seed: u64,
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Runs one job; returns its JSON record and, when it failed, a one-line reason.
fn certify_one(job: &Job<'_>, out: Option<&Path>, snapshots: &Path) -> (serde_json::Value, Option<String>) {
    let Job { scenario, network, seed } = *job;
    let name = snapshot_name(&scenario.name, network, seed);
    let report_rel = format!("{}/{network}/seed-{seed}/report.md", path_safe(&scenario.name));
    let started = Instant::now();
    let options = RunOptions { seed, network, pcap: out.is_some() };
    let result = catch_unwind(AssertUnwindSafe(|| simnet::run(scenario, &options)));
    let wall = started.elapsed();

    let mut record = serde_json::json!({
        "scenario": scenario.name,
        "description": scenario.description,
        "network": network.to_string(),
        "seed": seed,
        "snapshot_name": name,
        "report": report_rel,
        "wall_ms": wall.as_millis() as u64,
        "expectations_passed": 0,
        "expectations_total": 0,
        "snapshot": "not-run",
    });
    let outcome = match result {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            record["passed"] = false.into();
            record["error"] = e.to_string().into();
            return (record, Some(format!("{name}: run error: {e}")));
        }
        Err(p) => {
            let text = panic_text(&*p);
            record["passed"] = false.into();
            record["error"] = format!(
                "the simulation panicked: {text} (for a backtrace: RUST_BACKTRACE=1 cargo xtask scenario {} --seed {seed} --network {network})",
                scenario.name
            )
            .into();
            return (record, Some(format!("{name}: panicked: {text}")));
        }
    };

    if let Some(out) = out {
        let dir = out.join(path_safe(&scenario.name)).join(network.to_string()).join(format!("seed-{seed}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        for (file, bytes) in [
            ("report.md", outcome.report_md.as_bytes()),
            ("events.jsonl", outcome.events_jsonl.as_bytes()),
            ("capture.pcap", &outcome.pcap[..]),
            ("ladder.svg", outcome.ladder_svg.as_deref().unwrap_or_default().as_bytes()),
        ] {
            if bytes.is_empty() && file == "ladder.svg" {
                continue;
            }
            let path = dir.join(file);
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
    }

    let existed = snapshots.join(format!("certify__{name}.snap")).is_file();
    let description = scenario.description.clone();
    let trace = pinned_trace(&outcome.events_jsonl);
    let guard = SNAPSHOT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let snapshot = catch_unwind(AssertUnwindSafe(|| {
        insta::with_settings!({ description => description, omit_expression => true }, {
            insta::assert_snapshot!(name.clone(), trace);
        });
    }));
    drop(guard);
    let blessing = std::env::var("INSTA_UPDATE").is_ok_and(|v| v == "always" || v == "force");
    let snapshot_state = match (&snapshot, existed, blessing) {
        (Ok(()), _, true) => "written",
        (Ok(()), _, false) => "matched",
        (Err(_), false, _) => "missing",
        (Err(_), true, _) => "mismatch",
    };

    let passed_count = outcome.verdicts.iter().filter(|v| v.passed).count();
    let failed: Vec<serde_json::Value> = outcome
        .verdicts
        .iter()
        .filter(|v| !v.passed)
        .map(|v| serde_json::json!({ "description": v.description, "detail": v.detail }))
        .collect();
    let verdicts_ok = outcome.passed && failed.is_empty();
    let passed = verdicts_ok && snapshot.is_ok();
    record["passed"] = passed.into();
    record["expectations_passed"] = passed_count.into();
    record["expectations_total"] = outcome.verdicts.len().into();
    record["failed_expectations"] = failed.into();
    record["snapshot"] = snapshot_state.into();
    record["datagrams"] = outcome.datagrams.into();
    record["sim_ms"] = (outcome.sim_duration.as_millis() as u64).into();

    let reason = if passed {
        None
    } else if !verdicts_ok {
        let names: Vec<&str> = outcome.verdicts.iter().filter(|v| !v.passed).map(|v| v.description.as_str()).collect();
        Some(format!("{name}: expectations failed: {}", names.join("; ")))
    } else {
        Some(format!("{name}: event trace {snapshot_state} (see the insta output above)"))
    };
    (record, reason)
}

#[test]
#[ignore = "the certification run; use `cargo xtask certify` (or pass --ignored)"]
fn certify() {
    let root = workspace_root();
    let snapshots = root.join("simnet/tests/snapshots");
    let mut scenarios = simnet::list_scenarios(&root.join("scenarios")).expect("scenarios/ must load");
    scenarios.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(!scenarios.is_empty(), "no scenario files in scenarios/");

    let out = std::env::var_os("SIMNET_CERTIFY_OUT").map(PathBuf::from);
    let records_file = out.as_ref().map(|dir| {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("certify.jsonl"))
                .expect("cannot open certify.jsonl"),
        )
    });

    let mut queue = VecDeque::new();
    let mut expected_snapshots = BTreeSet::new();
    for scenario in &scenarios {
        for &seed in &SEEDS {
            for network in scenario.networks() {
                expected_snapshots.insert(format!("certify__{}.snap", snapshot_name(&scenario.name, network, seed)));
                queue.push_back(Job { scenario, network, seed });
            }
        }
    }
    let total = queue.len();
    let queue = Mutex::new(queue);
    let failures = Mutex::new(Vec::<String>::new());
    let done = Mutex::new(0usize);
    let jobs = std::env::var("SIMNET_CERTIFY_JOBS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, total.max(1));
    let started = Instant::now();

    // Failures are caught per run and reported together at the end; keep the
    // default hook's message and backtrace for the final assertion only.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| loop {
                let Some(job) = queue.lock().unwrap().pop_front() else {
                    break;
                };
                let (record, failure) = certify_one(&job, out.as_deref(), &snapshots);
                if let Some(file) = &records_file {
                    let mut file = file.lock().unwrap();
                    writeln!(file, "{record}").expect("cannot write certify.jsonl");
                }
                let n = {
                    let mut d = done.lock().unwrap();
                    *d += 1;
                    *d
                };
                println!(
                    "[{n}/{total}] {} {} seed {}: {}",
                    job.scenario.name,
                    job.network,
                    job.seed,
                    if failure.is_some() { "FAIL" } else { "ok" }
                );
                if let Some(f) = failure {
                    failures.lock().unwrap().push(f);
                }
            });
        }
    });

    std::panic::set_hook(default_hook);

    // Snapshots nobody asserted any more: a scenario, seed or network was removed or renamed.
    let blessing = std::env::var("INSTA_UPDATE").is_ok_and(|v| v == "always" || v == "force");
    let mut failures = failures.into_inner().unwrap();
    if let Ok(entries) = std::fs::read_dir(&snapshots) {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            if file.starts_with("certify__") && file.ends_with(".snap") && !expected_snapshots.contains(&file) {
                if blessing {
                    let _ = std::fs::remove_file(entry.path());
                } else {
                    failures.push(format!(
                        "stale pinned trace simnet/tests/snapshots/{file}: no scenario run produces it \
                         (run `cargo xtask certify --bless` to drop it)"
                    ));
                }
            }
        }
    }

    failures.sort();
    let elapsed: Duration = started.elapsed();
    println!("{total} run(s) in {:.1} s with {jobs} job(s), {} failure(s)", elapsed.as_secs_f64(), failures.len());
    assert!(failures.is_empty(), "certification failed:\n  {}", failures.join("\n  "));
}

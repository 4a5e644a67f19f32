//! Captures as regression tests: every capture listed in
//! `captures/manifest.toml` is replayed against the switch (docs/replay.md)
//! and its verdict counts must equal the manifest's.
//!
//! The replay itself is ignored by default, like `certify.rs`; run it with
//! `cargo xtask certify` (CI) or directly:
//!
//! ```text
//! cargo test --release -p simnet --test certify_captures -- --ignored
//! ```
//!
//! Environment:
//! * `SIMNET_CERTIFY_OUT=DIR`: also write each replay's report.md, ladder.svg,
//!   events.jsonl and replay.pcap under `DIR/captures/STEM/seed-N/`, and one
//!   JSON record per capture to `DIR/certify_captures.jsonl` (read by
//!   `cargo xtask certify` for summary.md, junit.xml and index.html).
//!
//! The manifest's own checks (it parses, its files exist, errors name
//! file:line) are ordinary tests and run with `cargo test`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Deserialize;
use simnet::capture;
use simnet::replay::{self, ReplayOptions};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("simnet sits in the workspace").to_path_buf()
}

/// One `[[capture]]` of the manifest.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Entry {
    file: String,
    #[serde(default)]
    config: Option<String>,
    /// `server`, `client` or `auto` (the default): the part the switch plays.
    #[serde(default)]
    role: Option<String>,
    seed: u64,
    exchanges: usize,
    matched: usize,
    diverged: usize,
    missing: usize,
    extra: usize,
    why: String,
}

impl Entry {
    fn expected_line(&self) -> String {
        format!(
            "replay: exchanges={} matched={} diverged={} missing={} extra={}",
            self.exchanges, self.matched, self.diverged, self.missing, self.extra
        )
    }

    /// The run directory's name: the file's stem, plus the role when one is asked for.
    fn stem(&self) -> String {
        let name = Path::new(&self.file).file_name().map_or_else(|| self.file.clone(), |n| n.to_string_lossy().into());
        let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s);
        let stem: String = stem
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' })
            .collect();
        let stem = match &self.role {
            Some(role) if role != "auto" => format!("{stem}-{role}"),
            _ => stem,
        };
        match self.config_name() {
            Some(c) => format!("{stem}-{c}"),
            None => stem,
        }
    }

    /// The configuration directory's name when it tells this entry from
    /// another of the same file and role (one capture replayed as each of its
    /// parties, `asterisk__double-registration-call/B` and `/A`); `None` when
    /// it is named after the capture (`simnet__register-md5-call[-client]`).
    fn config_name(&self) -> Option<String> {
        let config = self.config.as_deref()?;
        let last = Path::new(config).file_name()?.to_string_lossy().into_owned();
        let file = Path::new(&self.file).file_name()?.to_string_lossy().into_owned();
        let stem = file.rsplit_once('.').map_or(file.as_str(), |(s, _)| s);
        let named = last == stem || self.role.as_deref().is_some_and(|r| last == format!("{stem}-{r}"));
        (!named).then(|| {
            last.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') { c } else { '_' }).collect()
        })
    }

    /// How summaries name the entry: the file, and the role when one is asked for.
    fn label(&self) -> String {
        let label = match &self.role {
            Some(role) if role != "auto" => format!("{} (as {role})", self.file),
            _ => self.file.clone(),
        };
        match (self.config_name(), &self.config) {
            (Some(_), Some(config)) => format!("{label} (config {config})"),
            _ => label,
        }
    }

    fn role_request(&self) -> capture::RoleRequest {
        match self.role.as_deref() {
            Some("client") => capture::RoleRequest::Client,
            Some("server") => capture::RoleRequest::Server,
            _ => capture::RoleRequest::Auto,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[serde(default)]
    capture: Vec<toml::Spanned<Entry>>,
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].bytes().filter(|b| *b == b'\n').count() + 1
}

/// Parses and checks a manifest; `shown` names it in errors, `dir` is where
/// its files are. Errors read `FILE:LINE: message`.
fn load_manifest(shown: &str, text: &str, dir: &Path) -> Result<Vec<Entry>, String> {
    let manifest: Manifest = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        format!("{shown}:{line}: {}", e.message().trim())
    })?;
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for spanned in manifest.capture {
        let line = line_of(text, spanned.span().start);
        let entry = spanned.into_inner();
        let err = |m: String| Err(format!("{shown}:{line}: {m}"));
        if entry.file.trim().is_empty() || entry.file.contains("..") || Path::new(&entry.file).is_absolute() {
            return err(format!("`file = {:?}` must name a capture inside {}", entry.file, dir.display()));
        }
        if !dir.join(&entry.file).is_file() {
            return err(format!("no such capture {}", dir.join(&entry.file).display()));
        }
        if let Some(config) = &entry.config {
            if config.contains("..") || Path::new(config).is_absolute() {
                return err(format!("`config = {config:?}` must name a directory inside {}", dir.display()));
            }
            if !dir.join(config).join("iax.conf").is_file() {
                return err(format!("`config = {config:?}`: {} holds no iax.conf", dir.join(config).display()));
            }
        }
        if let Some(role) = &entry.role {
            if !matches!(role.as_str(), "auto" | "server" | "client") {
                return err(format!("`role = {role:?}`: write \"server\", \"client\" or \"auto\""));
            }
        }
        if entry.why.trim().is_empty() {
            return err("`why` is empty: say in one sentence why this verdict is expected".into());
        }
        let sum = entry.matched + entry.diverged + entry.missing + entry.extra;
        if sum != entry.exchanges {
            return err(format!("matched + diverged + missing + extra = {sum}, but exchanges = {}", entry.exchanges));
        }
        if !seen.insert((entry.label(), entry.seed)) {
            return err(format!("{} with seed {} is listed twice", entry.label(), entry.seed));
        }
        out.push(entry);
    }
    if out.is_empty() {
        return Err(format!("{shown}:1: no [[capture]] entries"));
    }
    Ok(out)
}

fn real_manifest() -> Result<Vec<Entry>, String> {
    let dir = workspace_root().join("captures");
    let path = dir.join("manifest.toml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    load_manifest("captures/manifest.toml", &text, &dir)
}

/// The text files of a configuration directory, by name (as `cargo xtask replay --config`).
fn read_config(dir: &Path) -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        if path.is_file() {
            if let Ok(text) = std::fs::read_to_string(&path) {
                files.insert(path.file_name().unwrap().to_string_lossy().into_owned(), text);
            }
        }
    }
    files
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

/// Replays one entry; its JSON record and, when it failed, why.
fn certify_one(entry: &Entry, dir: &Path, out: Option<&Path>) -> (serde_json::Value, Option<String>) {
    let run_rel = format!("captures/{}/seed-{}", entry.stem(), entry.seed);
    let mut record = serde_json::json!({
        "capture": entry.label(),
        "config": entry.config,
        "seed": entry.seed,
        "why": entry.why,
        "expected": entry.expected_line(),
        "report": format!("{run_rel}/report.md"),
        "ladder": format!("{run_rel}/ladder.svg"),
        "passed": false,
    });
    let started = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<replay::ReplayOutcome, String> {
        let c = capture::read_file(&dir.join(&entry.file)).map_err(|e| e.to_string())?;
        let opts = ReplayOptions {
            seed: entry.seed,
            config: entry.config.as_ref().map(|d| read_config(&dir.join(d))),
            config_label: entry.config.as_ref().map(|d| format!("captures/{d}")),
            capture_name: entry.file.clone(),
            role: entry.role_request(),
            ..ReplayOptions::default()
        };
        replay::replay(&c, &opts).map_err(|e| e.to_string())
    }));
    record["wall_ms"] = (started.elapsed().as_millis() as u64).into();
    let outcome = match result {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => {
            record["error"] = e.clone().into();
            return (record, Some(format!("{}: cannot replay: {e}", entry.label())));
        }
        Err(p) => {
            let text = panic_text(&*p);
            record["error"] = format!("the replay panicked: {text}").into();
            return (record, Some(format!("{}: panicked: {text}", entry.label())));
        }
    };
    if let Some(out) = out {
        let run_dir = out.join(&run_rel);
        std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", run_dir.display()));
        for (file, bytes) in [
            ("report.md", outcome.report_md.as_bytes()),
            ("ladder.svg", outcome.ladder_svg.as_bytes()),
            ("events.jsonl", outcome.events_jsonl.as_bytes()),
            ("replay.pcap", &outcome.pcap[..]),
        ] {
            let path = run_dir.join(file);
            std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        }
    }
    let got = outcome.counts.line();
    let passed = got == entry.expected_line();
    record["got"] = got.clone().into();
    record["exchanges"] = outcome.counts.exchanges.into();
    record["matched"] = outcome.counts.matched.into();
    record["sim_ms"] = (outcome.sim_duration.as_millis() as u64).into();
    record["passed"] = passed.into();
    let failure = (!passed).then(|| {
        format!(
            "{} (seed {}): verdict changed: expected `{}`, got `{got}`",
            entry.label(),
            entry.seed,
            entry.expected_line()
        )
    });
    (record, failure)
}

#[test]
#[ignore = "replays every capture of captures/manifest.toml; use `cargo xtask certify` (or pass --ignored)"]
fn certify_captures() {
    let dir = workspace_root().join("captures");
    let out = std::env::var_os("SIMNET_CERTIFY_OUT").map(PathBuf::from);
    let mut records = out.as_ref().map(|o| {
        std::fs::create_dir_all(o).unwrap_or_else(|e| panic!("cannot create {}: {e}", o.display()));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(o.join("certify_captures.jsonl"))
            .expect("cannot open certify_captures.jsonl")
    });
    let entries = match real_manifest() {
        Ok(entries) => entries,
        Err(e) => {
            if let Some(file) = &mut records {
                let record = serde_json::json!({
                    "capture": "manifest.toml", "seed": 0, "passed": false, "error": e,
                    "why": "", "expected": "", "report": "",
                });
                writeln!(file, "{record}").expect("cannot write certify_captures.jsonl");
            }
            panic!("{e}");
        }
    };
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut failures = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let (record, failure) = certify_one(entry, &dir, out.as_deref());
        if let Some(file) = &mut records {
            writeln!(file, "{record}").expect("cannot write certify_captures.jsonl");
        }
        println!(
            "[{}/{}] {} seed {}: {}",
            i + 1,
            entries.len(),
            entry.label(),
            entry.seed,
            if failure.is_some() { "FAIL" } else { "ok" }
        );
        failures.extend(failure);
    }
    std::panic::set_hook(default_hook);
    assert!(failures.is_empty(), "capture certification failed:\n  {}", failures.join("\n  "));
}

#[test]
fn the_manifest_is_well_formed_and_lists_every_capture() {
    let entries = real_manifest().unwrap_or_else(|e| panic!("{e}"));
    let listed: BTreeSet<&str> = entries.iter().map(|e| e.file.as_str()).collect();
    let dir = workspace_root().join("captures");
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        if name.ends_with(".pcap") || name.ends_with(".pcapng") {
            assert!(listed.contains(name.as_str()), "captures/{name} is not in captures/manifest.toml");
        }
    }
    assert!(listed.contains("ndpi__iax.pcap") && listed.contains("simnet__register-md5-call.pcap"));
}

#[test]
fn malformed_manifests_are_errors_with_file_and_line() {
    let dir = workspace_root().join("captures");
    let ok = "[[capture]]\nfile = \"ndpi__iax.pcap\"\nseed = 1\nexchanges = 2\nmatched = 1\ndiverged = 1\n\
              missing = 0\nextra = 0\nwhy = \"x\"\n";
    assert_eq!(load_manifest("m.toml", ok, &dir).unwrap().len(), 1);
    // The same file and seed may be listed once per role the switch plays.
    let as_client = ok.replace("seed = 1\n", "seed = 1\nrole = \"client\"\n");
    let both = load_manifest("m.toml", &format!("{ok}\n{as_client}"), &dir).unwrap();
    assert_eq!(both.iter().map(Entry::stem).collect::<Vec<_>>(), ["ndpi__iax", "ndpi__iax-client"]);

    let cases: [(String, &str, &str); 9] = [
        (ok.replace("seed = 1", "seed = \"one\""), "m.toml:3:", "invalid type"),
        (ok.replace("seed = 1\n", "seed = 1\nseeds = 2\n"), "m.toml:", "unknown field `seeds`"),
        (ok.replace("why = \"x\"\n", ""), "m.toml:1:", "missing field `why`"),
        (format!("\n\n{ok}exchanges = 3\n"), "m.toml:", "duplicate key"),
        (ok.replace("ndpi__iax.pcap", "nope.pcap"), "m.toml:1:", "no such capture"),
        (ok.replace("seed = 1\n", "seed = 1\nconfig = \"nope\"\n"), "m.toml:1:", "holds no iax.conf"),
        (ok.replace("exchanges = 2", "exchanges = 3"), "m.toml:1:", "exchanges = 3"),
        (format!("{ok}\n{ok}"), "m.toml:11:", "listed twice"),
        (ok.replace("seed = 1\n", "seed = 1\nrole = \"callee\"\n"), "m.toml:1:", "`role = \"callee\"`"),
    ];
    for (text, at, what) in cases {
        let e = load_manifest("m.toml", &text, &dir).expect_err(&text);
        assert!(e.starts_with(at) && e.contains(what), "{e}\n--- for ---\n{text}");
    }
    let e = load_manifest("m.toml", "[[capture]\n", &dir).unwrap_err();
    assert!(e.starts_with("m.toml:1:"), "{e}");
    assert!(load_manifest("m.toml", "", &dir).unwrap_err().contains("no [[capture]]"));
}

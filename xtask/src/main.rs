//! `cargo xtask`: the project's own tasks, in Rust so they run wherever cargo does.
//!
//! * `cargo xtask scenario ...` runs scenario files in the deterministic
//!   simulated network and writes a report, an event trace and a capture per run.
//! * `cargo xtask certify` is the CI regression gate: every scenario, over a fixed
//!   set of seeds and both networks, must pass and reproduce its pinned trace.

mod certify;
mod output;
mod scenario;
mod sim;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit status: 0 when everything passed, 1 when an expectation, a pinned trace or a
test failed, 2 when the task could not run at all (bad arguments, unreadable or
invalid scenario file, I/O error).

Progress lines are printed only when stderr is a terminal and CI is not set.

Examples:
  cargo xtask scenario --list
  cargo xtask scenario all
  cargo xtask scenario registration --seed 7 --network v6
  cargo xtask scenario path/to/my-scenario.toml --out /tmp/reports
  cargo xtask certify
  cargo xtask certify --bless";

/// Project tasks for the softswitch: run simulated scenarios, certify pinned traces.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    arg_required_else_help = true,
    after_help = AFTER_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run scenarios in the simulated network; write report.md, events.jsonl and capture.pcap per run
    #[command(
        long_about = "Run scenarios in the deterministic simulated network (crate simnet).\n\n\
Each scenario runs over each network it declares (IPv4 and IPv6 unless it says\n\
otherwise) with the given seed. The same seed always gives the same run, byte\n\
for byte. A result table is printed; the exit status is 1 if any expectation\n\
failed.\n\n\
Files written per run:\n  \
DIR/NAME/NETWORK/seed-N/report.md      human-readable verdicts and timeline\n  \
DIR/NAME/NETWORK/seed-N/events.jsonl   the event trace, one JSON object per line\n  \
DIR/NAME/NETWORK/seed-N/capture.pcap   every simulated datagram (open with Wireshark)",
        after_help = "Scenario files are described in docs/scenarios.md."
    )]
    Scenario(ScenarioArgs),
    /// CI gate: all scenarios x seeds x networks must pass and match their pinned traces
    #[command(long_about = "The CI regression gate.\n\n\
Runs every scenario over a fixed set of seeds and both networks (the ignored\n\
integration test simnet/tests/certify.rs, in release mode). Each run must pass\n\
all its expectations AND its event trace must equal the pinned insta snapshot\n\
in simnet/tests/snapshots/. Writes DIR/summary.md, DIR/junit.xml and each\n\
run's report under DIR/NAME/NETWORK/seed-N/.\n\n\
After an intended change of behaviour, `cargo xtask certify --bless` rewrites\n\
the snapshots; review the diff with git and commit it.")]
    Certify(CertifyArgs),
}

#[derive(Debug, clap::Args)]
pub struct ScenarioArgs {
    /// A scenario name (see --list), a path to a scenario file, or `all`
    #[arg(value_name = "NAME|PATH|all", required_unless_present = "list")]
    pub target: Option<String>,

    /// List the scenarios (name and description) and exit
    #[arg(long, conflicts_with_all = ["target", "seed", "out", "network"])]
    pub list: bool,

    /// Seed of the run; the same seed reproduces the same run exactly
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Directory the reports are written to [default: reports/ at the workspace root]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Run over this network only [default: every network the scenario declares]
    #[arg(long, value_enum, value_name = "NETWORK")]
    pub network: Option<NetworkArg>,

    /// Directory holding the scenario files
    #[arg(long, value_name = "DIR", hide_short_help = true)]
    pub scenarios: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CertifyArgs {
    /// Rewrite the pinned traces from this run instead of comparing (review with `git diff`)
    #[arg(long)]
    pub bless: bool,

    /// Directory summary.md, junit.xml and the reports go to [default: reports/ at the workspace root]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// IPv4
    V4,
    /// IPv6
    V6,
}

impl NetworkArg {
    pub fn to_simnet(self) -> sim::Network {
        match self {
            NetworkArg::V4 => sim::Network::V4,
            NetworkArg::V6 => sim::Network::V6,
        }
    }
}

/// A task that could not run; printed as `error: ...` with an optional hint.
#[derive(Debug)]
pub struct TaskError {
    pub message: String,
    pub hint: Option<String>,
}

impl TaskError {
    pub fn new(message: impl Into<String>) -> Self {
        TaskError {
            message: message.into(),
            hint: None,
        }
    }
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn io(what: impl std::fmt::Display, path: &Path, e: std::io::Error) -> Self {
        TaskError::new(format!("{what} {}: {e}", path.display()))
    }
}

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Scenario(args) => scenario::run(&args),
        Command::Certify(args) => certify::run(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {}", e.message);
            if let Some(hint) = e.hint {
                eprintln!();
                for line in hint.lines() {
                    eprintln!("  {line}");
                }
            }
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn list_needs_no_target_and_target_needs_no_list() {
        assert!(Cli::try_parse_from(["xtask", "scenario", "--list"]).is_ok());
        assert!(Cli::try_parse_from([
            "xtask",
            "scenario",
            "all",
            "--seed",
            "3",
            "--network",
            "v6"
        ])
        .is_ok());
        assert!(Cli::try_parse_from(["xtask", "scenario"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "scenario", "--list", "all"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "scenario", "all", "--network", "v5"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "certify", "--bless"]).is_ok());
    }
}

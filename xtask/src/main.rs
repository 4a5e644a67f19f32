//! `cargo xtask`: the project's own tasks, in Rust so they run wherever cargo does.
//!
//! * `cargo xtask scenario ...` runs scenario files in the deterministic
//!   simulated network and writes a report, an event trace and a capture per run.
//! * `cargo xtask certify` is the CI regression gate: every scenario, over a fixed
//!   set of seeds and both networks, must pass and reproduce its pinned trace.
//! * `cargo xtask replay CAPTURE` drives the switch with a captured conversation
//!   and compares its answers with the captured ones.
//! * `cargo xtask bench` runs the criterion benches and measures the simulator's speed.
//! * `cargo xtask load trunk` runs two live switches on loopback under a call load;
//!   `cargo xtask load asterisk` the switch against Asterisk, with Asterisk against Asterisk as the anchor;
//!   `cargo xtask load sip` ramps REGISTER/s and calls/s from SIPp against the switch and against Kamailio.

mod bench;
mod certify;
mod emit;
mod html;
mod load;
mod output;
mod replay;
mod scenario;
mod sim;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// The simulator allocates a few short-lived buffers per datagram (turmoil's
/// copy of each one, the jitter buffer's frames); glibc's malloc was 8-13 %
/// of `sim-speed` (docs/performance.md). Allocation never shows in a trace.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc asks for transparent huge pages where the kernel leaves them to
/// madvise, and the kernel then zeroes 2 MiB at each first touch of the
/// simulator's growing heap: about twice the memory and 2-3 % of `sim-speed`
/// (docs/performance.md). The simulated world gains nothing from them.
/// Only for the tasks that simulate in this process: children inherit the
/// setting, and `load` measures the switch as an operator runs it.
fn no_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

const AFTER_HELP: &str = "\
Exit status: 0 when everything passed, 1 when an expectation, a pinned trace or a
test failed, 2 when the task could not run at all (bad arguments, unreadable or
invalid scenario file, I/O error).

Progress lines are printed only when stderr is a terminal and CI is not set.

Examples:
  cargo xtask scenario --list
  cargo xtask scenario all
  cargo xtask scenario registration --seed 7 --network v6
  cargo xtask scenario path/to/my-scenario.toml --out my-reports
  cargo xtask certify
  cargo xtask certify --bless
  cargo xtask bench
  cargo xtask load trunk --calls 800 --seconds 60
  cargo xtask load asterisk --calls 250 --seconds 30
  cargo xtask load sip --register --start-rate 200 --step 200
  cargo xtask load sip --calls --step-seconds 10";

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
in simnet/tests/snapshots/. Then replays every capture of captures/manifest.toml\n\
(simnet/tests/certify_captures.rs); its verdict counts must equal the manifest's.\n\
Writes DIR/summary.md, DIR/junit.xml, DIR/index.html (a static page with the\n\
verdicts, links, ladders and load plots), each run's report under\n\
DIR/NAME/NETWORK/seed-N/ and each capture's under DIR/captures/STEM/seed-N/.\n\n\
After an intended change of behaviour, `cargo xtask certify --bless` rewrites\n\
the snapshots; review the diff with git and commit it.")]
    Certify(CertifyArgs),
    /// Criterion benches of the switch as rates, and the simulator's speed on trunk-800
    #[command(long_about = "Runs `cargo bench -p switch` (criterion's own output is shown), then\n\
prints each benchmark as a rate (`encode full: N frames/s`, ...) and plays the\n\
trunk-800 scenario once to print `sim-speed trunk-800: R x real time`\n\
(simulated seconds per wall second).\n\n\
Slowness never fails this task: it exits non-zero only when something could\n\
not run. Figures and how to read them: docs/performance.md.")]
    Bench(BenchArgs),
    /// Two live switches on loopback under a call load; prints calls up, packets, CPU and memory
    #[command(long_about = "Builds the release switch, starts two instances A and B on 127.0.0.1\n\
(friends with md5 secrets registering to each other; B's dialplan: 600 = echo),\n\
runs `originate IAX2/B/600 app=pattern count=CALLS hold=SECONDS` on A, samples\n\
once a second through the control sockets and /proc, hangs up, stops both and\n\
prints one final line:\n\n  \
load trunk: calls_up=N pps=N bytes_per_s=N cpu_a=PCT cpu_b=PCT rss_a_kib=N rss_b_kib=N\n\n\
calls_up is the least number of calls up on A after the ramp-up; pps and\n\
bytes_per_s are what A sends to B; CPU is percent of one core.\n\
Exit status 1 when fewer calls than asked stayed up, 2 when it could not run.\n\
Ports: IAX2 of A and B at PORT_BASE and +1, control sockets at +2 and +3.\n\n\
`load asterisk` needs the Asterisk peer folder ($ASTERISK_PEER or\n\
../shared/peers/asterisk) and root: the switch (127.0.2.2) calls Asterisk A's\n\
Echo (127.0.2.1), then Asterisk C (127.0.2.3) calls it the same way; one line\n\
per measure (calls up, loss, CPU, CPU per 100 calls, RSS) and a ratio line.\n\n\
`load sip` needs SIPp (Debian `sip-tester`) and Kamailio 5.6 (`kamailio`). It\n\
writes one list of users (N = --users, strong passwords) into the switch's\n\
switch.toml and into a generated kamailio.cfg (registrar and usrloc in memory,\n\
digest auth from an htable, children=4), starts both on 127.0.0.1 and ramps\n\
SIPp against each in turn: one SIPp run per step of --step-seconds at\n\
--start-rate, then --step more each step up to --max-rate, while the step\n\
passes (under 1 % failed and at least 90 % of the offered requests completed\n\
within the step and the calls' hold). Measures, all when no flag is given:\n\n  \
--register  REGISTER, 401, REGISTER with Authorization, 200, user after user\n  \
--calls     INVITE, 407, ACK, INVITE with Proxy-Authorization, 100/180/200,\n              \
ACK, 3 s held without RTP, BYE, 200: to the switch's 9196 (echo), and\n              \
through Kamailio (record_route, t_relay) to a SIPp UAS\n  \
--memory    --users registrations held 3600 s: the switch's RSS per\n              \
registration, then its idle CPU with them (and the transactions\n              \
of the burst still open)\n\n\
One line per measure, e.g.\n  \
load sip register: switch=N/s kamailio=M/s ratio=R cpu_us_per_req switch=A kamailio=B rss_switch_kib=K\n\
CPU is utime+stime (/proc) of the switch and of every Kamailio process.\n\
Ports: PORT_BASE (default 9060) to +11; the switch's RTP range 10000-32767.\n\
Exit status 0 when it ran (slowness never fails it), 2 when it could not.")]
    Load(LoadArgs),
    /// Replay a capture (pcap/pcapng) against the switch in the simulator; compare its answers
    #[command(long_about = replay::LONG_ABOUT, after_help = replay::AFTER_HELP)]
    Replay(replay::ReplayArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Run only the criterion benchmarks whose id contains this (e.g. `trunk`)
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,

    /// Skip the criterion benches (only measure the simulator)
    #[arg(long, conflicts_with = "no_sim")]
    pub no_criterion: bool,

    /// Skip the simulator measurement
    #[arg(long)]
    pub no_sim: bool,

    /// The scenario whose simulator speed is measured (a name or a path)
    #[arg(long, value_name = "NAME|PATH", default_value = "trunk-800")]
    pub scenario: String,

    /// Seed of the simulator run
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LoadMode {
    /// Calls trunked (trunk=yes on both friends): meta trunk frames
    Trunk,
    /// trunk=no: one mini frame per call and 20 ms
    Notrunk,
    /// The switch calling Asterisk's Echo over a trunk, then Asterisk calling it the same way (the anchor)
    Asterisk,
    /// SIPp ramping REGISTER/s and calls/s against the switch, then against Kamailio (the anchor)
    Sip,
}

impl LoadMode {
    pub fn name(self) -> &'static str {
        match self {
            LoadMode::Trunk => "trunk",
            LoadMode::Notrunk => "notrunk",
            LoadMode::Asterisk => "asterisk",
            LoadMode::Sip => "sip",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// How the calls are carried
    #[arg(value_enum, value_name = "MODE")]
    pub mode: LoadMode,

    /// Calls A places to B's echo [default: 800]. In `sip` mode, without a number: run the calls/s measure
    #[arg(long = "calls", value_name = "N", num_args = 0..=1)]
    pub calls_arg: Option<Option<u32>>,

    /// How long each call is held after its answer, and so how long the load runs
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub seconds: u64,

    /// First of the loopback ports used (A and B IAX2, A and B control). In `asterisk` mode:
    /// the IAX2 port of every instance (on 127.0.2.1-3), the switch's control socket at +2.
    /// In `sip` mode: the switch's SIP port, the rest of the run's ports up to +11
    /// [default: 14569; 9060 in `sip` mode]
    #[arg(long, value_name = "PORT")]
    pub port_base: Option<u16>,

    /// Use this switch binary instead of building target/release/switch
    #[arg(long, value_name = "PATH", hide_short_help = true)]
    pub switch_bin: Option<PathBuf>,

    /// Keep the temporary directory: configurations, logs, and samples.csv (one row a second);
    /// in `sip` mode every SIPp statistics file. A run that fails keeps it anyway.
    #[arg(long)]
    pub keep: bool,

    /// `sip` mode: run the REGISTER/s measure
    #[arg(long)]
    pub register: bool,

    /// `sip` mode: run the memory and idle measure (--users registrations held)
    #[arg(long)]
    pub memory: bool,

    /// `sip` mode: users written into both configurations (and registered by --memory)
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    pub users: u32,

    /// `sip` mode: the rate of the ramp's first step, per second
    #[arg(long, value_name = "RATE", default_value_t = 100)]
    pub start_rate: u32,

    /// `sip` mode: what each step adds to the rate
    #[arg(long, value_name = "RATE", default_value_t = 100)]
    pub step: u32,

    /// `sip` mode: the ramp stops after this rate
    #[arg(long, value_name = "RATE", default_value_t = 5_000)]
    pub max_rate: u32,

    /// `sip` mode: how long each step offers its rate
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub step_seconds: u64,
}

impl LoadArgs {
    /// `--calls N` of the call modes (800 when not given).
    pub fn calls(&self) -> u32 {
        self.calls_arg.flatten().unwrap_or(800)
    }

    pub fn port_base(&self) -> u16 {
        self.port_base.unwrap_or(if self.mode == LoadMode::Sip { 9060 } else { 14569 })
    }
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
        TaskError { message: message.into(), hint: None }
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
        Command::Scenario(args) => {
            no_huge_pages();
            scenario::run(&args)
        }
        Command::Certify(args) => certify::run(&args),
        Command::Replay(args) => {
            no_huge_pages();
            replay::run(&args)
        }
        Command::Bench(args) => bench::run(&args),
        Command::Load(args) => load::run(&args),
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
        assert!(Cli::try_parse_from(["xtask", "scenario", "all", "--seed", "3", "--network", "v6"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "scenario"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "scenario", "--list", "all"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "scenario", "all", "--network", "v5"]).is_err());
        assert!(Cli::try_parse_from(["xtask", "certify", "--bless"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "bench"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "bench", "trunk", "--no-sim"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "load", "trunk", "--calls", "100", "--seconds", "10"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "load", "trunk", "--port-base", "20000"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "load"]).is_err());
        let sip = Cli::try_parse_from(["xtask", "load", "sip", "--calls", "--register", "--step-seconds", "5"]);
        match sip.map(|c| c.command) {
            Ok(Command::Load(args)) => {
                assert_eq!(args.calls_arg, Some(None));
                assert!(args.register && !args.memory);
                assert_eq!((args.step_seconds, args.port_base()), (5, 9060));
            }
            other => panic!("load sip --calls --register: {other:?}"),
        }
        match Cli::try_parse_from(["xtask", "load", "trunk", "--calls", "100"]).map(|c| c.command) {
            Ok(Command::Load(args)) => assert_eq!((args.calls(), args.port_base()), (100, 14569)),
            other => panic!("load trunk --calls 100: {other:?}"),
        }
        assert!(Cli::try_parse_from(["xtask", "replay", "x.pcap", "--emit-scenario", "x.toml"]).is_ok());
    }
}

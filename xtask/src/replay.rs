//! `cargo xtask replay CAPTURE`: drive the switch with a captured
//! conversation in the simulator and compare its answers with the captured
//! ones (simnet's `capture` and `replay` modules; docs/replay.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ValueEnum;
use simnet::capture::{self, FlowProto, RoleRequest};
use simnet::replay::{self, ReplayOptions, Tolerance};

use crate::{workspace_root, TaskError};

pub const LONG_ABOUT: &str = "Replay a packet capture against the unchanged switch in the simulator.\n\n\
Reads pcap or pcapng (Ethernet, Linux cooked v1/v2, raw IP, loopback; IPv4 and\n\
IPv6 with fragments reassembled; SIP over TCP framed by Content-Length), finds\n\
the SIP, IAX2 and RTP flows, and lets the switch play the party that answered\n\
REGREQ/NEW/POKE (--role; --role client: the party that sent them, the switch\n\
registering and calling with `originate` at the captured times). A scripted\n\
remote party sends the captured datagrams at their captured times, adapting\n\
what depends on the switch's own answers (call\n\
numbers, sequence numbers, timestamps, call tokens, MD5 answers recomputed with\n\
the secrets of --config). The switch's answers are compared exchange by exchange\n\
with the captured ones. A capture with SIP and no IAX2 is replayed as SIP (server\n\
role; To tags, digest credentials with --config's [sip.users] passwords, addresses,\n\
RTP to the switch's SDP answer; TCP replayed over UDP).\n\n\
Files written (same capture + same seed = byte-identical files):\n  \
DIR/report.md      verdict per exchange; last line:\n                     \
replay: exchanges=N matched=N diverged=N missing=N extra=N\n  \
DIR/ladder.svg     captured and replayed exchanges side by side\n  \
DIR/events.jsonl   the switch's events and the replay's own\n  \
DIR/replay.pcap    what went over the simulated wire\n\n\
Exit status: 0 when the capture could be replayed, whatever the verdicts, or was\n\
read and found not replayable (SIP over WebSocket, SCTP, tunnels: `not replayable:\n\
REASON`); 2 when it could not be read or driven. Never 101 (a panic).";

pub const AFTER_HELP: &str = "\
Examples:
  cargo xtask replay captures/sngrep__aaa.pcap
  cargo xtask replay call.pcapng --config /etc/switch --seed 3
  cargo xtask replay call.pcap --summary-only
  cargo xtask replay captures/ndpi__iax.pcap --emit-scenario scenarios/ndpi-call.toml
  cargo xtask replay captures/simnet__register-md5-call.pcap --role client

Without --config the switch runs a permissive built-in configuration (a guest
user, a friend per captured USERNAME without secret, every extension answered
with echo); with --role client, a `register =>` line per captured REGREQ user
name and the remote party as the friend `replay-remote` (the capture holds no
secret, so MD5 answers differ unless --config gives it); see docs/replay.md.";

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// The party that answered REGREQ/NEW/POKE (IAX2) or REGISTER/INVITE (SIP)
    Auto,
    /// Same as auto
    Server,
    /// The party that sent those requests (IAX2): the switch registers and calls, a scripted remote answers
    Client,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// The capture (pcap or pcapng)
    #[arg(value_name = "CAPTURE")]
    pub capture: PathBuf,

    /// The switch's configuration directory (iax.conf, switch.toml) [default: built-in]
    #[arg(long, value_name = "DIR")]
    pub config: Option<PathBuf>,

    /// Which captured party the switch plays
    #[arg(long, value_enum, value_name = "ROLE", default_value = "auto")]
    pub role: RoleArg,

    /// Directory the files go to [default: reports/replay/CAPTURE-NAME/seed-N at the workspace root]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Seed of the simulation (the switch's randomness)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Only read the capture and print what it holds and the role; replay nothing
    #[arg(long)]
    pub summary_only: bool,

    /// Also write a scenario skeleton (the switch with this configuration, each remote party as a host
    /// commanded to do what the capture shows) to FILE; `cargo xtask scenario FILE` runs it
    #[arg(long, value_name = "FILE.toml")]
    pub emit_scenario: Option<PathBuf>,

    /// How far the switch's timestamps may be from the captured ones, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 250)]
    pub tolerance_ms: u64,
}

fn read_config(dir: &Path) -> Result<BTreeMap<String, String>, TaskError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| TaskError::io("cannot read the configuration directory", dir, e))?;
    let mut files = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(|e| TaskError::io("cannot read", dir, e))?;
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                files.insert(name, text);
            }
            // Binary files (keys, ...) are not configuration text.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {}
            Err(e) => return Err(TaskError::io("cannot read", &path, e)),
        }
    }
    if !files.contains_key("iax.conf") {
        return Err(TaskError::new(format!("{} holds no iax.conf", dir.display()))
            .hint("--config names a directory with iax.conf (and optionally switch.toml), as `switch run --config`"));
    }
    Ok(files)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TaskError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes).map_err(|e| TaskError::io("cannot write", &path, e))
}

pub fn run(args: &ReplayArgs) -> Result<bool, TaskError> {
    let c = capture::read_file(&args.capture).map_err(|e| {
        TaskError::new(e.to_string()).hint("the capture must be a pcap or pcapng file (tcpdump -w, Wireshark, dumpcap)")
    })?;
    let name = args.capture.file_name().map_or_else(|| "capture".into(), |n| n.to_string_lossy().into_owned());
    let role = match args.role {
        RoleArg::Auto => RoleRequest::Auto,
        RoleArg::Server => RoleRequest::Server,
        RoleArg::Client => RoleRequest::Client,
    };
    if args.summary_only {
        let flows = capture::find_flows(&c);
        let roles = [capture::choose_role(&c, FlowProto::Iax2, role), capture::choose_role(&c, FlowProto::Sip, role)];
        print!("{}", capture::summarize(&c, &flows, &roles).text);
        return Ok(true);
    }
    let config = args.config.as_deref().map(read_config).transpose()?;
    if let Some(file) = &args.emit_scenario {
        let text = crate::emit::skeleton(&c, &name, config.as_ref())
            .map_err(|e| TaskError::new(format!("cannot emit a scenario: {e}")))?;
        std::fs::write(file, text).map_err(|e| TaskError::io("cannot write", file, e))?;
        println!(
            "scenario skeleton written: {} (run it with `cargo xtask scenario {}`)",
            file.display(),
            file.display()
        );
    }
    let opts = ReplayOptions {
        seed: args.seed,
        role,
        config,
        config_label: args.config.as_ref().map(|d| d.display().to_string()),
        capture_name: name.clone(),
        tolerance: Tolerance { timestamp: Duration::from_millis(args.tolerance_ms) },
    };
    let outcome = replay::replay(&c, &opts).map_err(|e| {
        let hint = match e {
            replay::ReplayError::Role(_) => "the capture must hold an answered IAX2 REGREQ, NEW or POKE",
            replay::ReplayError::Config(_) => {
                "fix the configuration (`switch check-config --config DIR` shows every problem)"
            }
            _ => "",
        };
        let err = TaskError::new(e.to_string());
        if hint.is_empty() {
            err
        } else {
            err.hint(hint)
        }
    })?;
    let stem = name.rsplit_once('.').map_or(name.as_str(), |(s, _)| s).to_string();
    let dir = args.out.clone().unwrap_or_else(|| {
        workspace_root().join("reports").join("replay").join(stem).join(format!("seed-{}", args.seed))
    });
    std::fs::create_dir_all(&dir).map_err(|e| TaskError::io("cannot create", &dir, e))?;
    write(&dir, "report.md", outcome.report_md.as_bytes())?;
    write(&dir, "events.jsonl", outcome.events_jsonl.as_bytes())?;
    write(&dir, "replay.pcap", &outcome.pcap)?;
    write(&dir, "ladder.svg", outcome.ladder_svg.as_bytes())?;
    print!("{}", outcome.summary);
    if outcome.sip_skipped > 0 {
        println!("SIP skipped: {} message(s), not replayed (the capture also holds IAX2)", outcome.sip_skipped);
    }
    if let Some(why) = &outcome.not_replayable {
        println!("not replayable: {why}");
    }
    println!("written: {}", dir.display());
    println!("{}", outcome.counts.line());
    Ok(true)
}

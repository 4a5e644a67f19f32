//! `switch`: run the softswitch live, check its configuration, or talk to a
//! running one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use rand::RngCore;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use switch::config::{self, DirLoader, MapLoader, SourceLoader};
use switch::event::LogSink;
use switch::net::TokioNet;
use switch::runtime::{self, Command, SwitchSetup};
use switch::state::{DirStore, StateStore};

/// A SIP request is a few dozen short strings made and dropped within
/// microseconds; glibc's malloc spent a third of a REGISTER's CPU on them
/// (docs/performance.md, docs/decisions.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The configuration used when no --config is given: IAX2 on loopback only,
/// no peers, nothing reachable from outside this host.
const BUILTIN_IAX_CONF: &str = "[general]\nbindaddr=127.0.0.1\nbindport=4569\n";

#[derive(Parser)]
#[command(name = "switch", version, about = "An IAX2 and SIP softswitch with a deterministic simulator twin")]
#[command(long_about = "An IAX2 and SIP softswitch: IAX2 (RFC 5456) peers, users and trunks configured\n\
    with Asterisk's own iax.conf, and SIP (RFC 3261) phones registering with digest\n\
    authentication, calling each other, the dialplan and IAX2 peers.\n\n\
    Configuration is read from one directory (--config DIR):\n  \
      iax.conf         IAX2 as in Asterisk: [general], peers, users, register => lines\n  \
      switch.toml      control socket, log level, dialplan, [sip] and its users and\n                   \
                       gateways, [state] dir (what survives a restart)\n  \
      extensions.conf  the dialplan in Asterisk's syntax, when present\n\
    A missing file means built-in defaults; SIP is off until switch.toml has [sip].\n\n\
    Safe defaults: nothing listens beyond this host unless the configuration says\n\
    so. IAX2 serves 127.0.0.1:4569 without iax.conf or bindaddr, SIP listens on\n\
    127.0.0.1:5060 without [sip] listen, weak passwords are refused on any other\n\
    address, and password guessing is throttled, then banned ([sip]\n\
    auth_failures_before_throttle, auth_failures_before_ban, ban_time).\n\
    The control socket listens on 127.0.0.1:5039 and never on a\n\
    non-loopback address.\n\n\
    The same switch code runs inside the simulator (`cargo xtask scenario`).\n\
    See README.md and docs/operations.md.")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the switch in the foreground (SIGHUP reloads, Ctrl-C or SIGTERM stops).
    #[command(long_about = "Run the switch in the foreground on this host's network. \
        Events are logged as JSON lines on stderr (target switch::event; RUST_LOG sets the level). \
        SIGHUP or `switch ctl reload` re-reads the configuration and keeps the old one if the new \
        one is invalid; Ctrl-C or SIGTERM stops the switch.")]
    Run {
        /// Configuration directory: iax.conf, switch.toml and extensions.conf, each optional
        /// (a missing file means built-in defaults). Without --config: IAX2 on
        /// 127.0.0.1:4569 with no peers, SIP off, nothing kept across restarts.
        #[arg(long, value_name = "DIR")]
        config: Option<PathBuf>,
        /// Seed for the protocol RNG (call numbers, challenges). Default: from the OS.
        /// Only useful to reproduce a run exactly.
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Validate a configuration directory; print every problem as file:line and exit 1 if any.
    CheckConfig {
        /// The directory `switch run --config` would read (iax.conf, switch.toml, extensions.conf).
        #[arg(long, value_name = "DIR")]
        config: PathBuf,
    },
    /// Send one command to a running switch's control socket and print the answer.
    #[command(long_about = "Send one command to a running switch's control socket (line-oriented TCP, \
        loopback only) and print the answer, e.g. `switch ctl iax2 show peers`, \
        `switch ctl sip show registrations`, `switch ctl originate IAX2/b/9196 app=echo`, \
        `switch ctl reload`. `switch ctl help` lists every command.")]
    Ctl {
        /// The control socket's address ([control] listen in switch.toml).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:5039")]
        control: SocketAddr,
        /// The command and its arguments, e.g. `iax2 show peers`; `help` lists them.
        #[arg(required = true, num_args = 1.., value_name = "WORDS")]
        words: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One worker per CPU, at most one per event loop and a spare for the
    // media readers and the control socket: the IAX2 and SIP loops then run
    // side by side on a multi-core host.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 3);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Cmd::Run { config: Some(dir), seed } => {
            // `[state] dir`, when relative, is relative to the configuration directory.
            let store: Arc<dyn StateStore> = Arc::new(DirStore::new(dir.clone()));
            runtime.block_on(run(DirLoader(dir), seed, Some(store)))
        }
        Cmd::Run { config: None, seed } => {
            let files = BTreeMap::from([("iax.conf".to_string(), BUILTIN_IAX_CONF.to_string())]);
            let loader = MapLoader(Arc::new(std::sync::Mutex::new(files)));
            runtime.block_on(run(loader, seed, None))
        }
        Cmd::CheckConfig { config } => {
            init_logging("warn");
            check_config(config)
        }
        Cmd::Ctl { control, words } => {
            init_logging("warn");
            runtime.block_on(ctl(control, words.join(" ")))
        }
    }
}

/// Logs go to stderr; `RUST_LOG` wins over `[log] level` in switch.toml.
fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

async fn run(loader: impl SourceLoader, seed: Option<u64>, state: Option<Arc<dyn StateStore>>) -> ExitCode {
    let loaded = match config::load(&loader) {
        Ok(loaded) => {
            init_logging(loaded.switch.log.level.as_str());
            loaded
        }
        Err(diags) => {
            for d in &diags {
                eprintln!("error: {d}");
            }
            eprintln!("{} problem(s); the switch did not start.", diags.len());
            return ExitCode::FAILURE;
        }
    };
    for note in &loaded.notes {
        tracing::warn!("{note}");
    }
    let (tx, rx) = mpsc::channel(64);
    if let Some(addr) = loaded.switch.control {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                tracing::info!("control socket on {addr}");
                tokio::spawn(switch::control::serve(listener, tx.clone()));
            }
            Err(e) => {
                eprintln!("error: cannot listen on control socket {addr}: {e} (set [control] listen in switch.toml, or \"off\")");
                return ExitCode::FAILURE;
            }
        }
    }
    let reload = tx.clone();
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            if reload.send(Command::Reload).await.is_err() {
                break;
            }
        }
    });
    let shutdown = tx.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            let _ = shutdown.send(Command::Shutdown).await;
        }
    });
    // systemd stops services with SIGTERM: stop as for Ctrl-C, so a waiting
    // write of the state directory is not lost.
    let terminate = tx.clone();
    tokio::spawn(async move {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else { return };
        if term.recv().await.is_some() {
            let _ = terminate.send(Command::Shutdown).await;
        }
    });
    let seed = seed.unwrap_or_else(|| rand::rngs::OsRng.next_u64());
    let setup = SwitchSetup { loader, seed, events: LogSink, commands: rx, state };
    match runtime::run(TokioNet, setup).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn check_config(dir: PathBuf) -> ExitCode {
    let loader = DirLoader(dir.clone());
    match config::load(&loader) {
        Ok(loaded) => {
            for note in &loaded.notes {
                println!("note: {note}");
            }
            println!(
                "{}: OK ({} peers, {} registrations, {} dialplan contexts, {} notes)",
                dir.display(),
                loaded.iax.peers.len(),
                loaded.iax.registrations.len(),
                loaded.switch.dialplan.context_names().count(),
                loaded.notes.len()
            );
            ExitCode::SUCCESS
        }
        Err(diags) => {
            for d in &diags {
                println!("error: {d}");
            }
            println!("{}: {} problem(s)", dir.display(), diags.len());
            ExitCode::FAILURE
        }
    }
}

async fn ctl(addr: SocketAddr, line: String) -> ExitCode {
    let stream = match tokio::net::TcpStream::connect(addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot connect to the control socket at {addr}: {e}. Is the switch running, and is [control] listen set to this address?");
            return ExitCode::FAILURE;
        }
    };
    let (read, mut write) = stream.into_split();
    if write.write_all(format!("{line}\nquit\n").as_bytes()).await.is_err() {
        return ExitCode::FAILURE;
    }
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        if l == "." {
            break;
        }
        println!("{l}");
    }
    ExitCode::SUCCESS
}

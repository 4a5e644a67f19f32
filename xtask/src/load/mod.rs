//! `cargo xtask load`: live processes on loopback under a call load, measured
//! from the outside the way an operator would (control sockets, CLI, /proc).
//!
//! - `trunk` / `notrunk` (trunk.rs): two switches, A calling B's echo.
//! - `asterisk` (asterisk.rs): the switch calling Asterisk's Echo, then
//!   Asterisk calling Asterisk the same way, as the anchor the switch's
//!   figures are read against.
//! - `sip` (sip.rs): SIPp ramping REGISTER/s and calls/s against the switch,
//!   then against Kamailio configured with the same users; memory per
//!   registration and idle CPU.
//!
//! This file holds what the modes share: the release build, the temporary
//! directory, one running switch and its control socket, the parsers of the
//! switch's answers, and Ctrl-C handling; proc.rs reads /proc.

mod asterisk;
mod proc;
mod sip;
mod trunk;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::output::shown;
use crate::{LoadArgs, LoadMode, TaskError};
use proc::{cpu_ticks, rss_kib};

/// Longest wait for one control-socket answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(10);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

pub fn run(args: &LoadArgs) -> Result<bool, TaskError> {
    if args.mode != LoadMode::Sip && (args.calls() == 0 || args.seconds == 0) {
        return Err(TaskError::new("--calls and --seconds must be at least 1"));
    }
    if args.mode != LoadMode::Sip && (args.register || args.memory || args.calls_arg == Some(None)) {
        return Err(TaskError::new("--register, --memory and --calls without a number are for `load sip`"));
    }
    catch_interrupts();
    match args.mode {
        LoadMode::Sip => sip::run(args),
        LoadMode::Trunk | LoadMode::Notrunk => trunk::run(args),
        LoadMode::Asterisk => asterisk::run(args),
    }
}

/// Set by SIGINT or SIGTERM; the sampling loops check it and return an
/// error, so that every process of the run is stopped by its `Drop` (Ctrl-C
/// would otherwise kill xtask at once and leave Asterisk, which ignores the
/// terminal's SIGINT as a background job of start.sh, running).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_interrupts() {
    let handler = on_signal as extern "C" fn(libc::c_int);
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
    }
}

/// `Err` once Ctrl-C (or SIGTERM) was received.
fn interrupted() -> Result<(), TaskError> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        return Err(TaskError::new("interrupted; every process of the run was stopped"));
    }
    Ok(())
}

/// Sleeps `d` in short steps, returning early with `Err` on Ctrl-C.
fn sleep(d: Duration) -> Result<(), TaskError> {
    let end = Instant::now() + d;
    loop {
        interrupted()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// `cargo build --release -p switch`; the path of the binary.
pub(super) fn build_switch() -> Result<PathBuf, TaskError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(crate::workspace_root())
        .args(["build", "--release", "-q", "-p", "switch", "--bin", "switch"])
        .status()
        .map_err(|e| TaskError::new(format!("cannot run cargo build: {e}")))?;
    if !status.success() {
        return Err(TaskError::new(format!("cargo build --release -p switch failed ({status})")));
    }
    let bin = crate::bench::target_dir().join("release").join("switch");
    if !bin.is_file() {
        return Err(TaskError::new(format!("built, but {} is not there", shown(&bin))));
    }
    Ok(bin)
}

/// A temporary directory, removed on drop unless kept.
struct WorkDir {
    path: PathBuf,
    keep: std::cell::Cell<bool>,
}

impl WorkDir {
    fn create(keep: bool) -> Result<WorkDir, TaskError> {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let path = std::env::temp_dir().join(format!("switch-load-{}-{stamp}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| TaskError::io("cannot create", &path, e))?;
        if keep {
            eprintln!("configurations and logs: {}", path.display());
        }
        Ok(WorkDir { path, keep: std::cell::Cell::new(keep) })
    }

    fn keep_for_inspection(&self) {
        self.keep.set(true);
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep.get() {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// One running switch process; killed when dropped.
struct Switch {
    name: &'static str,
    child: Option<Child>,
    pid: u32,
    control: SocketAddr,
    log: PathBuf,
}

impl Switch {
    fn start(name: &'static str, binary: &Path, dir: &Path, control_port: u16) -> Result<Switch, TaskError> {
        let log = dir.join("switch.log");
        let file = std::fs::File::create(&log).map_err(|e| TaskError::io("cannot create", &log, e))?;
        let err = file.try_clone().map_err(|e| TaskError::io("cannot open", &log, e))?;
        let child = Command::new(binary)
            .arg("run")
            .arg("--config")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| TaskError::new(format!("cannot start {}: {e}", shown(binary))))?;
        let pid = child.id();
        let control = SocketAddr::from(([127, 0, 0, 1], control_port));
        let mut switch = Switch { name, child: Some(child), pid, control, log };
        // Up when its control socket answers.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if !switch.alive() {
                return Err(TaskError::new(format!("switch {name} exited at start:\n{}", switch.log_tail())));
            }
            if switch.ctl("help").is_ok() {
                return Ok(switch);
            }
            if Instant::now() > deadline {
                return Err(TaskError::new(format!("switch {name}'s control socket {control} never answered")));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// One control-socket command; the answer without its closing ".".
    fn ctl(&self, command: &str) -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.control, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(CONTROL_TIMEOUT))?;
        stream.set_write_timeout(Some(CONTROL_TIMEOUT))?;
        stream.write_all(format!("{command}\nquit\n").as_bytes())?;
        let mut answer = String::new();
        for line in BufReader::new(stream).lines() {
            let line = line?;
            if line == "." {
                return Ok(answer);
            }
            answer.push_str(&line);
            answer.push('\n');
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("{} closed the control connection", self.name),
        ))
    }

    fn cpu_ticks(&self) -> Option<u64> {
        cpu_ticks(&std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?)
    }

    fn rss_kib(&self) -> Option<u64> {
        rss_kib(&std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What `iax2 show channels` says.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Channels {
    /// The count line: calls not yet ended, in any state.
    pub active: u64,
    /// Rows whose state is `Up` (answered, media flowing).
    pub up: u64,
    pub tx: u64,
    pub rx: u64,
    pub lost: u64,
}

pub fn parse_channels(text: &str) -> Channels {
    let mut c = Channels::default();
    for line in text.lines() {
        if let Some(n) = line.strip_suffix(" active IAX2 call(s)") {
            c.active = n.trim().parse().unwrap_or(0);
            continue;
        }
        // Call Direction Peer Remote State Format Tx Rx Lost
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 9 && f[0].parse::<u16>().is_ok() {
            if f[4] == "Up" {
                c.up += 1;
            }
            c.tx += f[6].parse::<u64>().unwrap_or(0);
            c.rx += f[7].parse::<u64>().unwrap_or(0);
            c.lost += f[8].parse::<u64>().unwrap_or(0);
        }
    }
    c
}

/// The counters of `show stats` (`name: N` lines); `dropped (reason)` lines are kept by reason.
pub fn parse_stats(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(':')?;
            Some((k.trim().to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

fn stat(stats: &[(String, u64)], name: &str) -> Option<u64> {
    stats.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> TaskError + '_ {
    move |e| TaskError::new(format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_are_counted() {
        let text = "Call     Direction  Peer             Remote                       State      Format         Tx       Rx   Lost\n\
                    1234     outbound   B                127.0.0.1:14570              Up         ulaw          100       98      1\n\
                    99       outbound   B                127.0.0.1:14570              NewSent    ulaw            0        0      0\n\
                    2 active IAX2 call(s)\n";
        assert_eq!(parse_channels(text), Channels { active: 2, up: 1, tx: 100, rx: 98, lost: 1 });
    }
}

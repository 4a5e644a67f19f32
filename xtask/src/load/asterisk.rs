//! `cargo xtask load asterisk`: the switch against a real Asterisk 20
//! (chan_iax2), with Asterisk against Asterisk as the anchor, in one run on
//! one machine, one measure after the other.
//!
//! 1. **switch -> asterisk**: the switch (B, 127.0.2.2) runs
//!    `originate IAX2/A/9196 app=pattern count=N hold=H` towards Asterisk A
//!    (127.0.2.1), whose `9196` answers and runs `Echo()`.
//! 2. **asterisk -> asterisk**: a second Asterisk C (127.0.2.3), configured as
//!    the switch was (the trunked friend of A with md5 and qualify,
//!    registering to A and A to it), places the same N calls with
//!    `channel originate IAX2/A/9196 extension 100@gen` (`Playtones(440)`,
//!    then `Wait(H)`), three at a time as chan_iax2's `maxauthreq=3` needs.
//!
//! The configurations are the seed's (`captures/asterisk__double-registration-call`)
//! on port `--port-base` of each address, plus `jitterbuffer=yes` on A in both
//! measures: chan_iax2 counts lost frames only in its jitterbuffer
//! (`iax2 show netstats`), and A is the one process both measures share, so
//! its loss figure and its CPU compare between them. The originators (the
//! switch and C) run no jitterbuffer.
//!
//! Each measure waits for the registrations, places the calls, waits until
//! both ends have N calls up (or a ramp-up limit passes), then samples once a
//! second for S seconds: calls up on both ends (the switch's
//! `iax2 show channels`, Asterisk's `core show channels concise`), CPU of
//! each process (/proc, all threads), resident memory. Then it hangs up and
//! stops every process, also on error, panic or Ctrl-C. The calls are held
//! longer than the run needs (H = ramp limit + S + 10 s) so none ends inside
//! the window; H also bounds them if the tool itself is killed.
//!
//! Exit status 1 when fewer than N calls stayed up in either measure, 2 when
//! the run could not happen (no Asterisk folder, not root, ports taken).

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::proc::{clock_ticks_per_second, cpu_ticks, rss_kib, socket_drops_at};
use super::{build_switch, interrupted, parse_channels, sleep, Switch, WorkDir, SAMPLE_EVERY};
use crate::output::{self, shown};
use crate::{LoadArgs, TaskError};

/// Asterisk A, the echo of both measures.
const ECHO_ADDR: &str = "127.0.2.1";
/// The switch, caller of the first measure.
const SWITCH_ADDR: &str = "127.0.2.2";
/// Asterisk C, caller of the anchor measure.
const CALLER_ADDR: &str = "127.0.2.3";
/// The seed's one secret per trunk.
const SECRET: &str = "trunksecret";
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one `asterisk -rx` answer.
const CLI_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls C puts in setup at once: chan_iax2's `maxauthreq` default, the
/// number of calls from one peer A lets wait for authentication.
const BATCH: u64 = 3;
/// Pause between two batches of C's originates: a call's setup on loopback
/// takes a few milliseconds, so a batch is through before the next.
const BATCH_EVERY: Duration = Duration::from_millis(100);
/// The receive buffer chan_iax2 needs for 800 trunked calls: it keeps the
/// kernel default (`net.core.rmem_default`), 212 992 bytes, which a 20 ms
/// burst of trunk datagrams overflows.
const RMEM: u64 = 4_194_304;

pub(super) fn run(args: &LoadArgs) -> Result<bool, TaskError> {
    let peer = peer_dir()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(TaskError::new("`load asterisk` must run as root: Asterisk runs with -U root (start.sh)")
            .hint("run it as root, or use `cargo xtask load trunk` for the switch alone"));
    }
    let port = args.port_base();
    let control = port.checked_add(2).ok_or_else(|| TaskError::new(format!("--port-base {port} is too high")))?;
    check_free(port, control)?;
    let _rmem = RmemGuard::raise()?;
    let binary = match &args.switch_bin {
        Some(bin) => bin.clone(),
        None => build_switch()?,
    };
    let tree = crate::bench::target_dir().join("asterisk-tree");
    let work = WorkDir::create(args.keep)?;
    let ctx = Ctx { args, peer: &peer, tree: &tree, work: &work.path, binary: &binary, port, control };

    let first = switch_to_asterisk(&ctx);
    let first = match first {
        Ok(m) => m,
        Err(e) => {
            work.keep_for_inspection();
            return Err(e.hint(format!("configurations and logs kept in {}", shown(&work.path))));
        }
    };
    first.print();
    let second = match asterisk_to_asterisk(&ctx) {
        Ok(m) => m,
        Err(e) => {
            work.keep_for_inspection();
            return Err(e.hint(format!("configurations and logs kept in {}", shown(&work.path))));
        }
    };
    second.print();
    println!("{}", ratio_line(&first, &second));
    let want = u64::from(args.calls());
    let ok = first.calls_up >= want && second.calls_up >= want;
    if !ok {
        work.keep_for_inspection();
        eprintln!(
            "not every call stayed up (switch->asterisk {}, asterisk->asterisk {} of {want}); configurations and \
             Asterisk logs (log/messages) kept in {}",
            first.calls_up,
            second.calls_up,
            shown(&work.path)
        );
    }
    Ok(ok)
}

/// The Asterisk peer folder: `$ASTERISK_PEER`, or `shared/peers/asterisk`
/// beside the repository (where the interop tests look too).
fn peer_dir() -> Result<PathBuf, TaskError> {
    let dir = std::env::var_os("ASTERISK_PEER")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("../shared/peers/asterisk"));
    if !dir.join("start.sh").is_file() || !dir.join("asterisk-20.20.1-bin.tar.xz").is_file() {
        return Err(TaskError::new(format!(
            "no Asterisk peer folder at {}: the load against Asterisk did not run",
            shown(&dir)
        ))
        .hint("set ASTERISK_PEER to the folder holding start.sh, cli.sh and asterisk-20.20.1-bin.tar.xz"));
    }
    Ok(dir)
}

/// Fails early, with a clear message, when an address of the run is taken
/// (an interop test or another load may be using 127.0.2.x).
fn check_free(port: u16, control: u16) -> Result<(), TaskError> {
    let taken = |what: String, e: std::io::Error| {
        TaskError::new(format!("{what} is not free: {e}"))
            .hint("another load run or Asterisk may be using it; pick another port with --port-base")
    };
    for addr in [ECHO_ADDR, SWITCH_ADDR, CALLER_ADDR] {
        UdpSocket::bind((addr, port)).map_err(|e| taken(format!("UDP {addr}:{port}"), e))?;
    }
    TcpListener::bind(("127.0.0.1", control)).map_err(|e| taken(format!("TCP 127.0.0.1:{control}"), e))?;
    Ok(())
}

/// Raises `net.core.rmem_max` and `rmem_default` to [`RMEM`] for the run and
/// puts the old values back when dropped (the machine is shared).
struct RmemGuard {
    restore: Vec<(&'static str, String)>,
}

impl RmemGuard {
    fn raise() -> Result<RmemGuard, TaskError> {
        let mut guard = RmemGuard { restore: Vec::new() };
        for path in ["/proc/sys/net/core/rmem_max", "/proc/sys/net/core/rmem_default"] {
            let Ok(old) = std::fs::read_to_string(path) else { continue };
            let old = old.trim().to_string();
            if old.parse::<u64>().is_ok_and(|v| v >= RMEM) {
                continue;
            }
            match std::fs::write(path, RMEM.to_string()) {
                Ok(()) => {
                    eprintln!(
                        "note: raised {} from {old} to {RMEM} for this run (chan_iax2 keeps the default socket \
                         receive buffer, which a burst of trunk datagrams overflows); restored at the end",
                        sysctl_name(path)
                    );
                    guard.restore.push((path, old));
                }
                Err(e) => eprintln!("note: cannot raise {} ({e}); the kernel may drop bursts", sysctl_name(path)),
            }
        }
        Ok(guard)
    }
}

fn sysctl_name(path: &str) -> String {
    path.trim_start_matches("/proc/sys/").replace('/', ".")
}

impl Drop for RmemGuard {
    fn drop(&mut self) {
        // rmem_default first: it may not exceed rmem_max at any moment.
        for (path, old) in self.restore.iter().rev() {
            let _ = std::fs::write(path, old);
        }
    }
}

/// What both measures share.
struct Ctx<'a> {
    args: &'a LoadArgs,
    peer: &'a Path,
    tree: &'a Path,
    work: &'a Path,
    binary: &'a Path,
    port: u16,
    control: u16,
}

impl Ctx<'_> {
    fn calls(&self) -> u64 {
        u64::from(self.args.calls())
    }

    /// How long the calls may take to come up before the window starts anyway:
    /// C places about 20 calls a second, the switch more.
    fn ramp_limit(&self) -> Duration {
        Duration::from_secs(20 + self.calls() / 10)
    }

    /// How long each call is held: past the ramp-up and the window, so none
    /// ends inside it; the tool hangs up once the window is over.
    fn hold_secs(&self) -> u64 {
        self.ramp_limit().as_secs() + self.args.seconds + 10
    }
}

/// Measure 1: the switch B calls Asterisk A's Echo.
fn switch_to_asterisk(ctx: &Ctx) -> Result<Measure, TaskError> {
    let dir = ctx.work.join("switch-asterisk");
    let (a_conf, b_conf) = (dir.join("A-conf"), dir.join("B"));
    write_files(
        &a_conf,
        &[
            ("iax.conf", asterisk_iax_conf("A", ECHO_ADDR, ctx.port, "B", SWITCH_ADDR, true)),
            ("extensions.conf", echo_extensions()),
        ],
    )?;
    write_files(
        &b_conf,
        &[
            ("iax.conf", switch_iax_conf(ctx.port, ctx.args.calls())),
            ("switch.toml", format!("[control]\nlisten = \"127.0.0.1:{}\"\n", ctx.control)),
        ],
    )?;
    let echo = Asterisk::start("A", ctx, &dir.join("A"), &a_conf)?;
    let mut switch = Switch::start("B (switch)", ctx.binary, &b_conf, ctx.control)?;
    let result = {
        let mut caller = Caller::Switch(&mut switch);
        drive("switch->asterisk", ctx, &mut caller, &echo, &dir)
    };
    let tail = switch.log_tail();
    switch.stop();
    let ended = call_ended_totals(&std::fs::read_to_string(&switch.log).unwrap_or_default());
    echo.stop();
    let mut m = result.map_err(|e| with_logs(e, &[("A", echo.log_tail())], Some(&tail)))?;
    m.ended = Some(ended);
    Ok(m)
}

/// Measure 2, the anchor: Asterisk C calls Asterisk A's Echo.
fn asterisk_to_asterisk(ctx: &Ctx) -> Result<Measure, TaskError> {
    let dir = ctx.work.join("asterisk-asterisk");
    let (a_conf, c_conf) = (dir.join("A-conf"), dir.join("C-conf"));
    write_files(
        &a_conf,
        &[
            ("iax.conf", asterisk_iax_conf("A", ECHO_ADDR, ctx.port, "C", CALLER_ADDR, true)),
            ("extensions.conf", echo_extensions()),
        ],
    )?;
    write_files(
        &c_conf,
        &[
            ("iax.conf", asterisk_iax_conf("C", CALLER_ADDR, ctx.port, "A", ECHO_ADDR, false)),
            ("extensions.conf", tone_extensions(ctx.hold_secs())),
        ],
    )?;
    let echo = Asterisk::start("A", ctx, &dir.join("A"), &a_conf)?;
    let caller = Asterisk::start("C", ctx, &dir.join("C"), &c_conf)?;
    let result = drive("asterisk->asterisk", ctx, &mut Caller::Asterisk(&caller), &echo, &dir);
    let logs = [("A", echo.log_tail()), ("C", caller.log_tail())];
    caller.stop();
    echo.stop();
    result.map_err(|e| with_logs(e, &logs, None))
}

fn with_logs(e: TaskError, asterisks: &[(&str, String)], switch: Option<&str>) -> TaskError {
    for (name, tail) in asterisks {
        if !tail.is_empty() {
            eprintln!("--- last warnings and errors of Asterisk {name} ---\n{tail}");
        }
    }
    if let Some(tail) = switch.filter(|t| !t.is_empty()) {
        eprintln!("--- last lines of the switch's log ---\n{tail}");
    }
    e
}

fn write_files(dir: &Path, files: &[(&str, String)]) -> Result<(), TaskError> {
    std::fs::create_dir_all(dir).map_err(|e| TaskError::io("cannot create", dir, e))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| TaskError::io("cannot write", &path, e))?;
    }
    Ok(())
}

/// An Asterisk's iax.conf: the seed's trunked friend, on `port`.
fn asterisk_iax_conf(me: &str, addr: &str, port: u16, peer: &str, peer_addr: &str, jitterbuffer: bool) -> String {
    let jb = if jitterbuffer {
        "; Only so that `iax2 show netstats` counts lost frames: chan_iax2 counts them in its jitterbuffer.\n\
         jitterbuffer=yes\n"
    } else {
        ""
    };
    format!(
        "; Asterisk {me} of `cargo xtask load asterisk`: the seed's trunk friend\n\
         ; (captures/asterisk__double-registration-call) on port {port}.\n\
         [general]\n\
         ; bindport before bindaddr: chan_iax2 binds when it reads bindaddr, with the port read so far.\n\
         bindport={port}\nbindaddr={addr}\n{jb}register => {me}:{SECRET}@{peer_addr}:{port}\n\n\
         [{peer}]\ntype=friend\nhost=dynamic\ntrunk=yes\nsecret={SECRET}\nauth=md5\nqualify=yes\ncontext=iaxinbound\n"
    )
}

/// The switch's iax.conf: the seed's B, on `port`.
fn switch_iax_conf(port: u16, calls: u32) -> String {
    let mut general = format!("[general]\nbindport = {port}\nbindaddr = {SWITCH_ADDR}\n");
    // The switch refuses trunk calls past trunkmaxsize / 160 bytes (800 by default).
    if u64::from(calls) * 160 > 128_000 {
        general.push_str(&format!("trunkmaxsize = {}\n", u64::from(calls) * 160));
    }
    format!(
        "{general}register => B:{SECRET}@{ECHO_ADDR}:{port}\n\n\
         [A]\ntype = friend\nhost = dynamic\ntrunk = yes\nsecret = {SECRET}\nauth = md5\nqualify = yes\n\
         context = iaxinbound\n"
    )
}

/// A's dialplan: the seed's echo.
fn echo_extensions() -> String {
    "[iaxinbound]\nexten => 9196,1,Answer()\n same => n,Echo()\n same => n,Hangup()\n".to_string()
}

/// C's dialplan: the seed's tone generator, held `hold` seconds.
fn tone_extensions(hold: u64) -> String {
    format!("[gen]\nexten => 100,1,Answer()\n same => n,Playtones(440)\n same => n,Wait({hold})\n same => n,Hangup()\n")
}

/// One running Asterisk instance, started by the peer folder's start.sh;
/// stopped (`core stop now`, then SIGKILL) when dropped.
struct Asterisk {
    name: &'static str,
    tree: PathBuf,
    work: PathBuf,
    pid: std::cell::Cell<Option<u32>>,
}

impl Asterisk {
    fn start(name: &'static str, ctx: &Ctx, work: &Path, conf: &Path) -> Result<Asterisk, TaskError> {
        let out = Command::new(ctx.peer.join("start.sh"))
            .arg(work)
            .arg(conf)
            .env("ASTERISK_TREE", ctx.tree)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TaskError::new(format!("cannot run {}: {e}", shown(&ctx.peer.join("start.sh")))))?;
        let pid = std::fs::read_to_string(work.join("run/asterisk.pid")).ok().and_then(|p| p.trim().parse().ok());
        let asterisk =
            Asterisk { name, tree: ctx.tree.to_path_buf(), work: work.to_path_buf(), pid: std::cell::Cell::new(pid) };
        if !out.status.success() || pid.is_none() {
            return Err(TaskError::new(format!(
                "start.sh of Asterisk {name} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if asterisk.cli("core show uptime").is_ok_and(|s| s.contains("System uptime")) {
                return Ok(asterisk);
            }
            if !asterisk.alive() || Instant::now() > deadline {
                return Err(TaskError::new(format!(
                    "Asterisk {name} did not come up; its console:\n{}",
                    std::fs::read_to_string(work.join("log/console.log")).unwrap_or_default()
                )));
            }
            sleep(Duration::from_millis(200))?;
        }
    }

    /// One CLI command, as cli.sh runs it but without a shell per command
    /// (the anchor's pacing runs hundreds); killed after [`CLI_TIMEOUT`].
    fn cli(&self, command: &str) -> Result<String, String> {
        let child = Command::new(self.tree.join("sbin/asterisk"))
            .env("LD_LIBRARY_PATH", self.tree.join("lib"))
            .arg("-C")
            .arg(self.work.join("etc/asterisk.conf"))
            .arg("-rx")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: cannot run asterisk -rx: {e}", self.name))?;
        let pid = child.id();
        let (tx, rx) = std::sync::mpsc::channel();
        // A thread reads the output, so a long answer never blocks on a full pipe.
        std::thread::spawn(move || {
            let _ = tx.send(child.wait_with_output());
        });
        match rx.recv_timeout(CLI_TIMEOUT) {
            Ok(Ok(out)) => {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                let err = String::from_utf8_lossy(&out.stderr);
                if text.contains("Unable to connect to remote asterisk") || err.contains("Unable to connect") {
                    return Err(format!("{}: `{command}`: Asterisk is not answering ({})", self.name, err.trim()));
                }
                Ok(text)
            }
            Ok(Err(e)) => Err(format!("{}: `{command}`: {e}", self.name)),
            Err(_) => {
                kill(pid);
                Err(format!("{}: `{command}`: no answer within {} s", self.name, CLI_TIMEOUT.as_secs()))
            }
        }
    }

    fn alive(&self) -> bool {
        self.pid.get().is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    fn cpu_ticks(&self) -> Option<u64> {
        cpu_ticks(&std::fs::read_to_string(format!("/proc/{}/stat", self.pid.get()?)).ok()?)
    }

    fn rss_kib(&self) -> Option<u64> {
        rss_kib(&std::fs::read_to_string(format!("/proc/{}/status", self.pid.get()?)).ok()?)
    }

    /// The last warnings and errors of its log.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.work.join("log/messages")).unwrap_or_default();
        // What every boot logs for the files and directories this minimal instance has not.
        let boot = ["config_options.c", "ccss.c", "indications.c", "res_crypto.c", "firmware.c", "file.c:"];
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARNING[") || l.contains("ERROR["))
            .filter(|l| !boot.iter().any(|b| l.contains(b)))
            .collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn stop(&self) {
        let Some(pid) = self.pid.take() else { return };
        let _ = self.cli("core stop now");
        let alive = || Path::new(&format!("/proc/{pid}")).exists();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive() {
            kill(pid);
        }
    }
}

impl Drop for Asterisk {
    fn drop(&mut self) {
        self.stop();
    }
}

fn kill(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill has no memory-safety preconditions; pid is one we started.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// The originating side of a measure.
enum Caller<'a> {
    Switch(&'a mut Switch),
    Asterisk(&'a Asterisk),
}

impl Caller<'_> {
    fn alive(&mut self) -> bool {
        match self {
            Caller::Switch(s) => s.alive(),
            Caller::Asterisk(a) => a.alive(),
        }
    }

    fn cpu_ticks(&self) -> Option<u64> {
        match self {
            Caller::Switch(s) => s.cpu_ticks(),
            Caller::Asterisk(a) => a.cpu_ticks(),
        }
    }

    fn rss_kib(&self) -> Option<u64> {
        match self {
            Caller::Switch(s) => s.rss_kib(),
            Caller::Asterisk(a) => a.rss_kib(),
        }
    }

    fn registry(&self) -> Result<String, String> {
        match self {
            Caller::Switch(s) => s.ctl("iax2 show registry").map_err(|e| format!("switch: {e}")),
            Caller::Asterisk(a) => a.cli("iax2 show registry"),
        }
    }

    fn channels(&self) -> Result<CallerChannels, String> {
        match self {
            Caller::Switch(s) => {
                let c = parse_channels(&s.ctl("iax2 show channels").map_err(|e| format!("switch: {e}"))?);
                Ok(CallerChannels { up: c.up, all: c.active, pattern: Some((c.lost, c.tx)) })
            }
            Caller::Asterisk(a) => {
                let (up, all) = concise_up(&a.cli("core show channels concise")?);
                Ok(CallerChannels { up, all, pattern: None })
            }
        }
    }

    fn hangup(&self) {
        match self {
            Caller::Switch(s) => {
                let _ = s.ctl("hangup all");
            }
            Caller::Asterisk(a) => {
                let _ = a.cli("channel request hangup all");
            }
        }
    }
}

/// The caller's calls up, its calls in any state, and for the switch its
/// pattern counters (lost, sent).
struct CallerChannels {
    up: u64,
    all: u64,
    pattern: Option<(u64, u64)>,
}

/// Channels in state Up, and all channels, of `core show channels concise`
/// (`IAX2/A-123!gen!100!3!Up!Wait!...`, one line per channel).
fn concise_up(text: &str) -> (u64, u64) {
    let channels: Vec<&str> = text.lines().filter(|l| l.matches('!').count() >= 5).collect();
    let up = channels.iter().filter(|l| l.split('!').nth(4) == Some("Up")).count();
    (up as u64, channels.len() as u64)
}

/// Lost frames counted by Asterisk's jitterbuffers in `iax2 show netstats`:
/// the sum of the local Lost column, the mean of its %, and how many
/// channels had a jitterbuffer (the others show -1).
#[derive(Debug, Clone, Copy, PartialEq)]
struct JbLoss {
    lost: u64,
    mean_pct: f64,
    channels: u64,
}

fn netstats_loss(text: &str) -> JbLoss {
    let (mut lost, mut pct, mut channels) = (0u64, 0u64, 0u64);
    for line in text.lines().filter(|l| l.starts_with("IAX2/")) {
        // Channel RTT Jit Del Lost % Drop OOO Kpkts (local), then the same for the remote end.
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(Ok(l)), Some(Ok(p))) = (f.get(4).map(|v| v.parse::<i64>()), f.get(5).map(|v| v.parse::<i64>()))
        else {
            continue;
        };
        if l >= 0 && p >= 0 {
            lost += l.unsigned_abs();
            pct += p.unsigned_abs();
            channels += 1;
        }
    }
    JbLoss { lost, mean_pct: if channels > 0 { pct as f64 / channels as f64 } else { 0.0 }, channels }
}

/// Totals of the switch's `call_ended` events (its log, one JSON object a line).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Ended {
    calls: u64,
    frames_sent: u64,
    frames_received: u64,
    lost: u64,
}

fn call_ended_totals(log: &str) -> Ended {
    let mut t = Ended::default();
    // Each event is logged as `<time> INFO switch::event: {json}`.
    for line in log.lines().filter(|l| l.contains("\"call_ended\"")) {
        let Some(json) = line.find('{').map(|i| &line[i..]) else { continue };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else { continue };
        if v["event"] != "call_ended" {
            continue;
        }
        t.calls += 1;
        t.frames_sent += v["frames_sent"].as_u64().unwrap_or(0);
        t.frames_received += v["frames_received"].as_u64().unwrap_or(0);
        t.lost += v["lost"].as_u64().unwrap_or(0);
    }
    t
}

/// C's originates, paced: [`BATCH`] calls, then [`BATCH_EVERY`]; once all N
/// are placed, calls that failed (gone from C's channel list) are placed
/// again, up to 2N originates in all.
struct Pacer {
    placed: u64,
    next: Instant,
    /// When the last originate went out: a top-up waits for calls still in setup.
    last_batch: Instant,
}

impl Pacer {
    fn step(&mut self, asterisk: &Asterisk, want: u64, last: Option<&Sample>) {
        if Instant::now() < self.next || self.placed >= 2 * want {
            return;
        }
        let missing = if self.placed < want {
            want - self.placed
        } else {
            // Top up only from a sample taken well after the last batch, so calls still in setup count.
            match last {
                Some(s) if s.taken > self.last_batch + Duration::from_secs(2) => want.saturating_sub(s.caller_all),
                _ => 0,
            }
        };
        if missing == 0 {
            return;
        }
        for _ in 0..missing.min(BATCH) {
            match asterisk.cli("channel originate IAX2/A/9196 extension 100@gen") {
                Ok(_) => self.placed += 1,
                Err(e) => eprintln!("{e}"),
            }
        }
        self.last_batch = Instant::now();
        self.next = self.last_batch + BATCH_EVERY;
    }
}

/// One sample, `at` after the calls were first placed.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    taken: Instant,
    caller_up: u64,
    caller_all: u64,
    echo_up: u64,
    cpu_caller: u64,
    cpu_echo: u64,
    rss_caller: u64,
    rss_echo: u64,
    /// The switch's pattern counters so far: lost, sent.
    pattern: Option<(u64, u64)>,
    /// Datagrams the kernel dropped so far because the caller's or A's socket
    /// receive buffer was full (/proc/net/udp).
    drops: (Option<u64>, Option<u64>),
}

impl Sample {
    const CSV_HEADER: &'static str =
        "t_s,caller_up,caller_channels,echo_up,cpu_caller_ticks,cpu_echo_ticks,rss_caller_kib,rss_echo_kib,lost,tx,\
udp_drops_caller,udp_drops_echo";

    fn csv_row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or(String::new(), |n| n.to_string());
        let (lost, tx) = (opt(self.pattern.map(|p| p.0)), opt(self.pattern.map(|p| p.1)));
        format!(
            "{:.3},{},{},{},{},{},{},{},{lost},{tx},{},{}",
            self.at.as_secs_f64(),
            self.caller_up,
            self.caller_all,
            self.echo_up,
            self.cpu_caller,
            self.cpu_echo,
            self.rss_caller,
            self.rss_echo,
            opt(self.drops.0),
            opt(self.drops.1)
        )
    }

    fn up(&self) -> u64 {
        self.caller_up.min(self.echo_up)
    }
}

fn take_sample(caller: &Caller, echo: &Asterisk, port: u16, t0: Instant) -> Result<Sample, String> {
    let taken = Instant::now();
    // CPU first and together, so both cover the same wall-clock interval.
    let (cpu_caller, cpu_echo) =
        (caller.cpu_ticks().ok_or("caller: /proc stat")?, echo.cpu_ticks().ok_or("A: /proc stat")?);
    let (rss_caller, rss_echo) = (caller.rss_kib().unwrap_or(0), echo.rss_kib().unwrap_or(0));
    let CallerChannels { up: caller_up, all: caller_all, pattern } = caller.channels()?;
    let (echo_up, _) = concise_up(&echo.cli("core show channels concise")?);
    Ok(Sample {
        at: taken - t0,
        taken,
        caller_up,
        caller_all,
        echo_up,
        cpu_caller,
        cpu_echo,
        rss_caller,
        rss_echo,
        pattern,
        drops: udp_drops(caller, port),
    })
}

/// Kernel receive-buffer drops of the caller's and A's IAX2 sockets so far.
fn udp_drops(caller: &Caller, port: u16) -> (Option<u64>, Option<u64>) {
    let Ok(text) = std::fs::read_to_string("/proc/net/udp") else { return (None, None) };
    let caller_addr = if matches!(caller, Caller::Switch(_)) { SWITCH_ADDR } else { CALLER_ADDR };
    let at = |addr: &str| socket_drops_at(&text, addr.parse().ok()?, port);
    (at(caller_addr), at(ECHO_ADDR))
}

/// The figures of one measure.
#[derive(Debug)]
struct Measure {
    label: &'static str,
    /// The caller's name in the line: `switch`, or `caller` (Asterisk C).
    caller: &'static str,
    calls: u64,
    /// Least calls up on both ends over the window.
    calls_up: u64,
    caller_up_min: u64,
    echo_up_min: u64,
    ramp_s: f64,
    window_s: f64,
    cpu_caller: f64,
    cpu_echo: f64,
    rss_caller: u64,
    rss_echo: u64,
    /// The switch's pattern counters over the window: lost, sent.
    pattern: Option<(u64, u64)>,
    /// The switch's `call_ended` totals, read once it stopped.
    ended: Option<Ended>,
    echo_loss: Option<JbLoss>,
    originates: Option<u64>,
    /// Kernel drops on the caller's and A's sockets: over the window, and since the calls were placed.
    drops_window: (Option<u64>, Option<u64>),
    drops_total: (Option<u64>, Option<u64>),
}

impl Measure {
    fn per_100(cpu: f64, calls: u64) -> f64 {
        if calls == 0 {
            0.0
        } else {
            cpu * 100.0 / calls as f64
        }
    }

    fn cpu_per_100_caller(&self) -> f64 {
        Self::per_100(self.cpu_caller, self.calls_up)
    }

    fn cpu_per_100_echo(&self) -> f64 {
        Self::per_100(self.cpu_echo, self.calls_up)
    }

    fn print(&self) {
        let mut detail = format!(
            "load asterisk detail: {} ramp_s={:.1} window_s={:.1} {}_up_min={} asterisk_up_min={}",
            self.label, self.ramp_s, self.window_s, self.caller, self.caller_up_min, self.echo_up_min
        );
        if let Some(e) = self.ended {
            detail.push_str(&format!(
                " call_ended={} frames_sent={} frames_received={} lost_whole_calls={}",
                e.calls, e.frames_sent, e.frames_received, e.lost
            ));
        }
        let opt = |v: Option<u64>| v.map_or("?".to_string(), |n| n.to_string());
        detail.push_str(&format!(
            " udp_drops_{c}={} udp_drops_asterisk={} (whole run {} and {})",
            opt(self.drops_window.0),
            opt(self.drops_window.1),
            opt(self.drops_total.0),
            opt(self.drops_total.1),
            c = self.caller
        ));
        if let Some(n) = self.originates {
            detail.push_str(&format!(" originates={n}"));
        }
        if let Some(jb) = self.echo_loss {
            detail.push_str(&format!(" jb_channels_at_echo={}", jb.channels));
        }
        println!("{detail}");
        let lost = match self.pattern {
            Some((lost, sent)) => {
                let pct = if sent > 0 { lost as f64 * 100.0 / sent as f64 } else { 0.0 };
                format!("lost={lost} lost_pct={pct:.3} ")
            }
            // C's Playtones carries no sequence to count; only A's jitterbuffer counts.
            None => "lost=none ".to_string(),
        };
        let jb = self.echo_loss.map_or("lost_at_echo=unknown".to_string(), |j| {
            format!("lost_at_echo={} lost_at_echo_pct={:.1}", j.lost, j.mean_pct)
        });
        println!(
            "load asterisk: {} calls_up={} {lost}{jb} cpu_{c}={:.1}% cpu_asterisk={:.1}% cpu_per_100_calls_{c}={:.2} \
             cpu_per_100_calls_asterisk={:.2} rss_{c}_kib={} rss_asterisk_kib={}",
            self.label,
            self.calls_up,
            self.cpu_caller,
            self.cpu_echo,
            self.cpu_per_100_caller(),
            self.cpu_per_100_echo(),
            self.rss_caller,
            self.rss_echo,
            c = self.caller,
        );
        if self.calls_up < self.calls {
            println!(
                "load asterisk: {} reached {} of {} calls up (caller {}, echo {})",
                self.label, self.calls_up, self.calls, self.caller_up_min, self.echo_up_min
            );
        }
    }
}

/// Switch CPU per call over Asterisk C's, for the same calls placed the same
/// way; and A's own per call with each caller (the echo does the same work
/// in both measures, so that ratio shows how comparable the two were).
fn ratio_line(switch: &Measure, anchor: &Measure) -> String {
    let ratio = |a: f64, b: f64| if b > 0.0 { format!("{:.2}", a / b) } else { "unknown".to_string() };
    // Per-call figures at different numbers of calls up do not compare; say so rather than hide it.
    let caveat = if switch.calls_up != anchor.calls_up {
        format!(" (not comparable: calls up were {} and {} of {})", switch.calls_up, anchor.calls_up, switch.calls)
    } else {
        String::new()
    };
    format!(
        "load asterisk: ratio cpu_per_call switch/asterisk={} (caller: switch {:.2} vs Asterisk C {:.2} % of a core \
         per 100 calls) echo_with_switch/echo_with_asterisk={}{caveat}",
        ratio(switch.cpu_per_100_caller(), anchor.cpu_per_100_caller()),
        switch.cpu_per_100_caller(),
        anchor.cpu_per_100_caller(),
        ratio(switch.cpu_per_100_echo(), anchor.cpu_per_100_echo()),
    )
}

/// One measure: registrations, calls, ramp-up, window, hang-up.
fn drive(
    label: &'static str,
    ctx: &Ctx,
    caller: &mut Caller,
    echo: &Asterisk,
    dir: &Path,
) -> Result<Measure, TaskError> {
    let progress = output::show_progress();
    let want = ctx.calls();
    let started = Instant::now();
    let caller_name = if matches!(caller, Caller::Switch(_)) { "B" } else { "C" };
    loop {
        let ours = caller.registry().map_err(TaskError::new)?;
        let theirs = echo.cli("iax2 show registry").map_err(TaskError::new)?;
        // chan_iax2 sometimes keeps showing `Request Sent` for a registration
        // it has logged as done (seen on C, for 30 s and more); A knowing the
        // caller's address and qualifying it OK is the same fact seen from A.
        let peers = echo.cli("iax2 show peers").map_err(TaskError::new)?;
        let known = peers.lines().any(|l| l.split_whitespace().next() == Some(caller_name) && l.contains("OK ("));
        if (ours.contains("Registered") || known) && theirs.contains("Registered") {
            break;
        }
        if !caller.alive() || !echo.alive() {
            return Err(TaskError::new(format!("{label}: a process exited while registering")));
        }
        if started.elapsed() > REGISTER_TIMEOUT {
            return Err(TaskError::new(format!(
                "{label}: not registered both ways within {} s\ncaller's `iax2 show registry`:\n{ours}\n\
                 A's:\n{theirs}",
                REGISTER_TIMEOUT.as_secs()
            )));
        }
        sleep(Duration::from_millis(200))?;
    }
    eprintln!("{label}: registered both ways in {:.1} s; placing {want} calls", started.elapsed().as_secs_f64());

    let tck = clock_ticks_per_second();
    let t0 = Instant::now();
    let mut pacer = match caller {
        Caller::Switch(s) => {
            let command = format!("originate IAX2/A/9196 app=pattern count={want} hold={}", ctx.hold_secs());
            let answer = s.ctl(&command).map_err(|e| TaskError::new(format!("switch: {command}: {e}")))?;
            eprintln!("switch: {command}: {}", answer.trim());
            None
        }
        Caller::Asterisk(_) => Some(Pacer { placed: 0, next: t0, last_batch: t0 }),
    };

    let csv_path = dir.join("samples.csv");
    let mut csv = std::fs::File::create(&csv_path).map_err(|e| TaskError::io("cannot create", &csv_path, e))?;
    let _ = writeln!(csv, "{}", Sample::CSV_HEADER);
    let mut samples: Vec<Sample> = Vec::new();
    let mut failures = 0u32;
    let ramp_end = t0 + ctx.ramp_limit();
    let window = Duration::from_secs(ctx.args.seconds);
    let mut window_start: Option<Instant> = None;
    let mut next_sample = t0;
    loop {
        interrupted()?;
        if !caller.alive() || !echo.alive() {
            return Err(TaskError::new(format!(
                "{label}: a process died under load (caller alive: {}, A alive: {})",
                caller.alive(),
                echo.alive()
            )));
        }
        let now = Instant::now();
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            match take_sample(caller, echo, ctx.port, t0) {
                Ok(s) => {
                    if progress {
                        let lost = s.pattern.map_or(String::new(), |(l, _)| format!("  lost {l}"));
                        eprintln!(
                            "{label} t={:>5.1}s caller up {:>4} (channels {:>4})  A up {:>4}{lost}  rss caller {} KiB A {} KiB",
                            s.at.as_secs_f64(),
                            s.caller_up,
                            s.caller_all,
                            s.echo_up,
                            s.rss_caller,
                            s.rss_echo
                        );
                    }
                    let _ = writeln!(csv, "{}", s.csv_row());
                    if window_start.is_none() && (s.up() >= want || s.taken >= ramp_end) {
                        if s.up() < want {
                            eprintln!(
                                "{label}: only {} of {want} calls up after {} s of ramp-up; measuring anyway",
                                s.up(),
                                ctx.ramp_limit().as_secs()
                            );
                        }
                        window_start = Some(s.taken);
                    }
                    samples.push(s);
                }
                Err(e) => {
                    failures += 1;
                    eprintln!("{label}: sample failed: {e}");
                }
            }
            if let Some(start) = window_start {
                if Instant::now() >= start + window {
                    break;
                }
            }
            // Never run far past the ramp and window, however slow the answers are.
            if t0.elapsed() > ctx.ramp_limit() + window + CLI_TIMEOUT * 3 {
                break;
            }
        }
        if let (Some(p), Caller::Asterisk(a)) = (pacer.as_mut(), &*caller) {
            if window_start.is_none() {
                p.step(a, want, samples.last());
            }
        }
        let wake = match &pacer {
            // Top-ups are decided on a fresh sample; only the first N wake the loop between samples.
            Some(p) if window_start.is_none() && p.placed < want => next_sample.min(p.next),
            _ => next_sample,
        };
        sleep(wake.saturating_duration_since(Instant::now()))?;
    }
    // Kept beside samples.csv: what the loss figure was read from.
    let echo_loss = match echo.cli("iax2 show netstats") {
        Ok(text) => {
            let _ = std::fs::write(dir.join("netstats-A.txt"), &text);
            Some(netstats_loss(&text)).filter(|j| j.channels > 0)
        }
        Err(e) => {
            eprintln!("{label}: {e}");
            None
        }
    };

    // Hang up, and wait until A saw every call end (so its log says how they ended).
    caller.hangup();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        match echo.cli("core show channels concise") {
            Ok(t) if concise_up(&t).1 == 0 => break,
            Ok(_) => sleep(Duration::from_millis(300))?,
            Err(_) => break,
        }
    }

    let window_start = window_start.unwrap_or(t0);
    let steady: Vec<&Sample> = samples.iter().filter(|s| s.taken >= window_start).collect();
    let (Some(first), Some(last)) = (steady.first(), steady.last()) else {
        return Err(TaskError::new(format!("{label}: no sample could be taken ({failures} failed)")));
    };
    let dt = (last.at - first.at).as_secs_f64();
    let cpu = |from: u64, to: u64| {
        if dt > 0.0 {
            to.saturating_sub(from) as f64 / dt / tck * 100.0
        } else {
            0.0
        }
    };
    let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
    let pattern = match (first.pattern, last.pattern) {
        (Some((l0, t0)), Some((l1, t1))) => Some((l1.saturating_sub(l0), t1.saturating_sub(t0))),
        _ => None,
    };
    Ok(Measure {
        label,
        caller: if matches!(caller, Caller::Switch(_)) { "switch" } else { "caller" },
        calls: want,
        calls_up: steady.iter().map(|s| s.up()).min().unwrap_or(0),
        caller_up_min: steady.iter().map(|s| s.caller_up).min().unwrap_or(0),
        echo_up_min: steady.iter().map(|s| s.echo_up).min().unwrap_or(0),
        ramp_s: (first.at).as_secs_f64(),
        window_s: dt,
        cpu_caller: cpu(first.cpu_caller, last.cpu_caller),
        cpu_echo: cpu(first.cpu_echo, last.cpu_echo),
        rss_caller: steady.iter().map(|s| s.rss_caller).max().unwrap_or(0),
        rss_echo: steady.iter().map(|s| s.rss_echo).max().unwrap_or(0),
        pattern,
        ended: None,
        echo_loss,
        originates: pacer.map(|p| p.placed),
        drops_window: (delta(first.drops.0, last.drops.0), delta(first.drops.1, last.drops.1)),
        drops_total: (delta(Some(0), last.drops.0), delta(Some(0), last.drops.1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asterisk_channels_and_netstats_are_read() {
        let concise = "IAX2/A-16731!gen!100!3!Up!Wait!40!!!!3!12!(None)!1765000000.1\n\
                       IAX2/A-17159!gen!100!1!Ring!(None)!(None)!!!!3!0!(None)!1765000000.2\n";
        assert_eq!(concise_up(concise), (1, 2));
        assert_eq!(concise_up(""), (0, 0));
        let netstats = "                                -------- LOCAL ---------------------  -------- REMOTE --------------------\n\
Channel                    RTT  Jit  Del  Lost   %  Drop  OOO  Kpkts  Jit  Del  Lost   %  Drop  OOO  Kpkts FirstMsg    LastMsg\n\
IAX2/C-1217              1000  127  181    19   3     0   53      0    0    0     0   0     0    0      0 Rx:NEW      Rx:ACK\n\
IAX2/C-1322              1000  128  182    16   2     1   51      0    0    0     0   0     0    0      0 Rx:NEW      Rx:ACK\n\
IAX2/A-16731             1000   -1    0    -1  -1     0   -1      0    0    0     0   0     0    0      0 Tx:NEW      Tx:ACK\n";
        assert_eq!(netstats_loss(netstats), JbLoss { lost: 35, mean_pct: 2.5, channels: 2 });
    }

    #[test]
    fn switch_call_ended_events_are_summed() {
        let log = "{\"event\":\"call_answered\",\"call\":2}\n\
                   2026-12-06T07:55:41.565565Z  INFO switch::event: {\"event\":\"call_ended\",\"call\":2,\"frames_sent\":100,\"frames_received\":98,\"lost\":2}\n\
                   not json \"call_ended\"\n\
                   {\"event\":\"call_ended\",\"call\":3,\"frames_sent\":50,\"frames_received\":50,\"lost\":0}\n";
        assert_eq!(call_ended_totals(log), Ended { calls: 2, frames_sent: 150, frames_received: 148, lost: 2 });
    }

    #[test]
    fn configurations_follow_the_seed() {
        let a = asterisk_iax_conf("A", ECHO_ADDR, 14569, "C", CALLER_ADDR, true);
        assert!(a.find("bindport=14569") < a.find("bindaddr=127.0.2.1"), "{a}");
        assert!(a.contains("register => A:trunksecret@127.0.2.3:14569") && a.contains("jitterbuffer=yes"));
        assert!(a.contains("[C]\ntype=friend\nhost=dynamic\ntrunk=yes\nsecret=trunksecret\nauth=md5\nqualify=yes"));
        assert!(!asterisk_iax_conf("C", CALLER_ADDR, 14569, "A", ECHO_ADDR, false).contains("jitterbuffer"));
        let b = switch_iax_conf(14569, 800);
        assert!(b.contains("register => B:trunksecret@127.0.2.1:14569") && !b.contains("trunkmaxsize"));
        assert!(switch_iax_conf(14569, 1000).contains("trunkmaxsize = 160000"));
        assert!(tone_extensions(70).contains("Wait(70)"));
    }
}

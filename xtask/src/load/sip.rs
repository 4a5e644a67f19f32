//! `cargo xtask load sip`: SIPp against the switch's SIP side, and against
//! Kamailio 5.6 configured by the bench with the same users and passwords, in
//! one run: one line per measure with both rates and their ratio.
//!
//! - **register**: SIPp's UAC registers user after user (`-inf users.csv`):
//!   REGISTER, 401, REGISTER with Authorization (RFC 3261 22.4), 200.
//! - **calls**: INVITE, 407, ACK, INVITE with Proxy-Authorization, 100/180/200,
//!   ACK, 3 s held without RTP, BYE, 200. The switch answers `9196` itself
//!   (`echo`, a B2BUA leg ending inside it); Kamailio challenges the same way,
//!   then relays statefully (`record_route`, `t_relay`) to a SIPp UAS
//!   (uas.xml) whose CPU is not counted.
//! - **memory**: `--users` registrations held 3600 s; the switch's RSS per
//!   registration, then its CPU while idle with them, first with the burst's
//!   transactions still open (Timer J, 32 s), then without.
//!
//! Each rate is a ramp, one SIPp process per step: `-r RATE -m RATE*STEP`.
//! A step passes when under 1 % of its requests failed and at least 90 % of
//! the offered ones completed within the step and the hold (plus a tenth of a
//! step). The measured rate is the highest passing step; CPU per request is
//! the target's utime+stime over that step divided by the successful
//! requests (every Kamailio process summed).
//!
//! Everything stays on 127.0.0.1 and comes from one source with correct
//! passwords only: nothing the switch's brute-force guard counts as a
//! failure. Bans or drops it reports anyway are printed as notes.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod files;

use super::proc::{clock_ticks_per_second, cpu_ticks, socket_drops};
use super::{build_switch, interrupted, sleep, Switch, WorkDir};
use crate::output::shown;
use crate::{LoadArgs, TaskError};
use files::{call_xml, kamailio_cfg, kamailio_users, register_xml, switch_toml, uas_xml, users_csv};

/// How long each call is held after its ACK.
const HOLD: Duration = Duration::from_secs(3);
/// The extension the switch answers itself.
const ECHO: &str = "9196";
/// The switch's `rtp_ports`: above the bench's own ports (9060 on) and below
/// Linux's ephemeral range, so the run takes no port another program was
/// just given. 11,384 pairs, each resting at least 500 ms after its call:
/// at most about 3,250 calls/s of 3 s (FreeSWITCH's default 8,192 pairs
/// would cap the ramp at 2,340/s, below Kamailio's rate).
const RTP_PORTS: (u16, u16) = (10000, 32767);
/// REGISTER rate of the memory measure's bursts.
const MEMORY_RATE: u32 = 1000;
/// A completed non-INVITE server transaction lingers this long (RFC 3261 17.2.2, Timer J = 64*T1).
const TIMER_J: Duration = Duration::from_secs(32);
/// How long the idle CPU is sampled.
const IDLE: Duration = Duration::from_secs(10);
/// SIPp fails a call whose next response does not come within this.
const RECV_TIMEOUT_MS: u64 = 8000;
/// Longest wait for Kamailio to bind its port.
const KAMAILIO_START: Duration = Duration::from_secs(30);

pub(super) fn run(args: &LoadArgs) -> Result<bool, TaskError> {
    if args.users == 0 || args.start_rate == 0 || args.step_seconds == 0 {
        return Err(TaskError::new("--users, --start-rate and --step-seconds must be at least 1"));
    }
    if args.max_rate < args.start_rate {
        return Err(TaskError::new("--max-rate must be at least --start-rate"));
    }
    if matches!(args.calls_arg, Some(Some(_))) {
        return Err(TaskError::new("`load sip --calls` takes no number: the calls/s are ramped"));
    }
    let measures = Measures::from_args(args);
    let ports = Ports::new(args.port_base())?;
    ports.check_free()?;
    let tools = Tools::find()?;
    let binary = match &args.switch_bin {
        Some(bin) => bin.clone(),
        None => build_switch()?,
    };
    let work = WorkDir::create(args.keep)?;
    let ctx =
        Ctx { args, ports: &ports, tools: &tools, binary: &binary, dir: &work.path, tck: clock_ticks_per_second() };
    ctx.write_files()?;
    let result = measure(&ctx, measures);
    match result {
        Ok(()) => Ok(true),
        Err(e) => {
            work.keep_for_inspection();
            Err(e.hint(format!("configurations, logs and SIPp statistics kept in {}", shown(&work.path))))
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Measures {
    register: bool,
    calls: bool,
    memory: bool,
}

impl Measures {
    fn from_args(args: &LoadArgs) -> Measures {
        let calls = args.calls_arg.is_some();
        if !args.register && !calls && !args.memory {
            return Measures { register: true, calls: true, memory: true };
        }
        Measures { register: args.register, calls, memory: args.memory }
    }
}

fn measure(ctx: &Ctx, m: Measures) -> Result<(), TaskError> {
    if m.register {
        let switch = ctx.ramp_switch("register", "register.xml")?;
        let kamailio = ctx.ramp_kamailio("register", "register.xml", false)?;
        println!("{}", measure_line("register", &switch, &kamailio));
    }
    if m.calls {
        let switch = ctx.ramp_switch("calls", "call.xml")?;
        let kamailio = ctx.ramp_kamailio("calls", "call.xml", true)?;
        println!("{}", measure_line("calls", &switch, &kamailio));
    }
    if m.memory {
        let memory = ctx.memory()?;
        println!("{}", memory.memory_line());
        println!("{}", memory.idle_line());
    }
    Ok(())
}

// ---------------------------------------------------------------- ports, tools

/// The loopback ports of one run, from `--port-base`.
struct Ports {
    switch_sip: u16,
    control: u16,
    iax: u16,
    kamailio: u16,
    uas: u16,
    uac: u16,
    /// SIPp binds its media port and the next three (audio, video and their RTCP).
    uac_media: u16,
    uas_media: u16,
}

impl Ports {
    fn new(base: u16) -> Result<Ports, TaskError> {
        if !(1024..=u16::MAX - 11).contains(&base) {
            return Err(TaskError::new(format!("--port-base {base}: use 1024-{}", u16::MAX - 11)));
        }
        if base <= RTP_PORTS.1 && base + 11 >= RTP_PORTS.0 {
            return Err(TaskError::new(format!(
                "--port-base {base}: its 12 ports would fall in the switch's RTP range {}-{}; use one below {} or above {}",
                RTP_PORTS.0,
                RTP_PORTS.1,
                RTP_PORTS.0 - 11,
                RTP_PORTS.1
            )));
        }
        Ok(Ports {
            switch_sip: base,
            control: base + 1,
            iax: base + 2,
            kamailio: base + 3,
            uas: base + 4,
            uac: base + 5,
            uac_media: base + 6,
            uas_media: base + 10,
        })
    }

    fn check_free(&self) -> Result<(), TaskError> {
        let taken = |what: &str, port: u16, e: std::io::Error| {
            TaskError::new(format!("{what} port 127.0.0.1:{port} is not free: {e}"))
                .hint("another load run may be using it; pick other ports with --port-base")
        };
        let udp = [self.switch_sip, self.iax, self.kamailio, self.uas, self.uac]
            .into_iter()
            .chain(self.uac_media..self.uac_media + 4)
            .chain(self.uas_media..self.uas_media + 2);
        for port in udp {
            UdpSocket::bind(("127.0.0.1", port)).map_err(|e| taken("UDP", port, e))?;
        }
        TcpListener::bind(("127.0.0.1", self.control)).map_err(|e| taken("TCP", self.control, e))?;
        Ok(())
    }
}

struct Tools {
    sipp: PathBuf,
    kamailio: PathBuf,
}

impl Tools {
    fn find() -> Result<Tools, TaskError> {
        let missing = |program: &str, package: &str| {
            TaskError::new(format!("{program} is not installed; `load sip` needs it"))
                .hint(format!("install the Debian package: apt-get install {package}"))
        };
        let sipp = find_program("sipp").ok_or_else(|| missing("SIPp (sipp)", "sip-tester"))?;
        let kamailio = find_program("kamailio").ok_or_else(|| missing("Kamailio (kamailio)", "kamailio"))?;
        Ok(Tools { sipp, kamailio })
    }
}

/// `program` in PATH, or in /usr/sbin and /usr/bin (Kamailio is in /usr/sbin, often outside a user's PATH).
fn find_program(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

// ---------------------------------------------------------------- the run

struct Ctx<'a> {
    args: &'a LoadArgs,
    ports: &'a Ports,
    tools: &'a Tools,
    binary: &'a Path,
    dir: &'a Path,
    tck: f64,
}

impl Ctx<'_> {
    fn write_files(&self) -> Result<(), TaskError> {
        let n = self.args.users;
        let toml = switch_toml(self.ports, n);
        let iax = format!("[general]\nbindaddr = 127.0.0.1\nbindport = {}\n", self.ports.iax);
        // One configuration directory per switch start, so each log is kept.
        for measure in ["register", "calls", "memory"] {
            let dir = self.dir.join(format!("switch-{measure}"));
            write_files(&dir, &[("switch.toml", toml.as_str()), ("iax.conf", iax.as_str())])?;
        }
        write_files(&self.dir.join("db"), &[("users", &kamailio_users(n))])?;
        write_files(
            self.dir,
            &[
                ("users.csv", &users_csv(n)),
                ("kamailio.cfg", &kamailio_cfg(self.ports, &self.dir.join("db"))),
                ("register.xml", &register_xml(120)),
                ("register-hold.xml", &register_xml(3600)),
                ("register-zero.xml", &register_xml(0)),
                ("call.xml", &call_xml()),
                ("uas.xml", &uas_xml()),
            ],
        )
    }

    fn start_switch(&self, measure: &'static str) -> Result<Switch, TaskError> {
        Switch::start(measure, self.binary, &self.dir.join(format!("switch-{measure}")), self.ports.control)
    }

    fn ramp_switch(&self, measure: &'static str, scenario: &str) -> Result<Ramp, TaskError> {
        self.on_switch(measure, |switch| {
            self.ramp(&format!("{measure} switch"), scenario, self.ports.switch_sip, switch)
        })
    }

    /// Runs `work` on a fresh switch, then stops it and prints what it noted
    /// (bans, drops); an error carries the tail of its log.
    fn on_switch<T>(
        &self,
        measure: &'static str,
        work: impl FnOnce(&mut Switch) -> Result<T, TaskError>,
    ) -> Result<T, TaskError> {
        let mut switch = self.start_switch(measure)?;
        let result = work(&mut switch);
        let notes = switch_notes(&switch);
        let tail = switch.log_tail();
        switch.stop();
        for note in notes {
            eprintln!("load sip note: {measure} switch: {note}");
        }
        result.map_err(|e| with_log(e, "switch", &tail))
    }

    fn ramp_kamailio(&self, measure: &str, scenario: &str, with_uas: bool) -> Result<Ramp, TaskError> {
        let mut kamailio = Kamailio::start(self, measure)?;
        let _uas = if with_uas { Some(self.start_uas(measure)?) } else { None };
        let ramp = self.ramp(&format!("{measure} kamailio"), scenario, self.ports.kamailio, &mut kamailio);
        let tail = kamailio.log_tail();
        kamailio.stop();
        ramp.map_err(|e| with_log(e, "kamailio", &tail))
    }

    /// Starts SIPp as `command` says, in the run's directory, its stderr into `log`.
    fn spawn_sipp(&self, command: &mut Command, log: std::fs::File) -> Result<Reaped, TaskError> {
        let child = command
            .current_dir(self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| TaskError::new(format!("cannot start {}: {e}", shown(&self.tools.sipp))))?;
        Ok(Reaped(Some(child)))
    }

    /// SIPp's UAS behind Kamailio (uas.xml): 180, 200, then 200 to the BYE.
    fn start_uas(&self, measure: &str) -> Result<Reaped, TaskError> {
        let log = self.dir.join(format!("uas-{measure}.log"));
        let out = std::fs::File::create(&log).map_err(|e| TaskError::io("cannot create", &log, e))?;
        let mut uas = self.spawn_sipp(
            Command::new(&self.tools.sipp).args(["-sf", "uas.xml", "-i", "127.0.0.1", "-nostdin"]).args([
                "-p",
                &self.ports.uas.to_string(),
                "-mp",
                &self.ports.uas_media.to_string(),
            ]),
            out,
        )?;
        wait_bound(self.ports.uas, Duration::from_secs(10), || uas.alive())
            .map_err(|e| TaskError::new(format!("SIPp UAS: {e}")))?;
        Ok(uas)
    }

    /// Steps from `--start-rate` by `--step` while they pass, up to `--max-rate`.
    fn ramp(&self, label: &str, scenario: &str, port: u16, target: &mut dyn Target) -> Result<Ramp, TaskError> {
        let a = self.args;
        let step = Duration::from_secs(a.step_seconds);
        let hold = if scenario == "call.xml" { HOLD } else { Duration::ZERO };
        let mut ramp = Ramp::default();
        let mut rate = a.start_rate;
        while rate <= a.max_rate {
            let offered = u64::from(rate) * a.step_seconds;
            let window = step + hold + (step / 10).max(Duration::from_secs(1));
            let tag = format!("{}-{rate}", label.replace(' ', "-"));
            let cpu_before = target.cpu_ticks().unwrap_or(0);
            let drops_before = udp_drops(port);
            let mut rss_max = 0;
            let run = self.sipp(&tag, scenario, port, rate, offered, window, &mut || {
                rss_max = rss_max.max(target.rss_kib().unwrap_or(0));
            })?;
            let cpu = target.cpu_ticks().unwrap_or(0).saturating_sub(cpu_before);
            let sock_drops = udp_drops(port).zip(drops_before).map(|(after, before)| after.saturating_sub(before));
            if !target.alive() {
                return Err(TaskError::new(format!("{label}: the target exited during the {rate}/s step")));
            }
            let stats = run.stats.unwrap_or_default();
            let passed = step_passes(offered, &stats, run.elapsed, window);
            let result =
                StepResult { rate, offered, stats, elapsed: run.elapsed, cpu_ticks: cpu, rss_kib: rss_max, sock_drops };
            eprintln!("load sip step: {label} {}", result.describe(self.tck, passed, &run.unexpected));
            ramp.rss_kib = ramp.rss_kib.max(rss_max);
            if !passed {
                ramp.failed = Some(result);
                break;
            }
            ramp.best = Some(result);
            rate = match rate.checked_add(a.step) {
                Some(next) if a.step > 0 => next,
                _ => break,
            };
            // Let the last step's transactions and sockets settle a little.
            sleep(Duration::from_secs(1))?;
        }
        if ramp.failed.is_none() {
            eprintln!("load sip note: {label}: every step passed up to --max-rate {}; the rate is a floor", a.max_rate);
        }
        Ok(ramp)
    }

    /// One SIPp UAC run: `count` calls of `scenario` at `rate`/s to 127.0.0.1:`port`.
    /// `each_second` is called about once a second while it runs.
    #[allow(clippy::too_many_arguments)]
    fn sipp(
        &self,
        tag: &str,
        scenario: &str,
        port: u16,
        rate: u32,
        count: u64,
        window: Duration,
        each_second: &mut dyn FnMut(),
    ) -> Result<SippRun, TaskError> {
        let stats = self.dir.join(format!("sipp-{tag}.csv"));
        let errors = self.dir.join(format!("sipp-{tag}-errors.log"));
        let out = self.dir.join(format!("sipp-{tag}.log"));
        let _ = std::fs::remove_file(&stats);
        let _ = std::fs::remove_file(&errors);
        let out_file = std::fs::File::create(&out).map_err(|e| TaskError::io("cannot create", &out, e))?;
        // SIPp stops by itself well after the window; we kill it a little later still.
        let limit = window + Duration::from_millis(RECV_TIMEOUT_MS) * 2 + Duration::from_secs(5);
        let open_calls = (u64::from(rate) * (HOLD.as_secs() + RECV_TIMEOUT_MS / 1000 + 2)).max(100);
        let mut sipp = self.spawn_sipp(
            Command::new(&self.tools.sipp)
                .arg("-sf")
                .arg(scenario)
                .args(["-inf", "users.csv", "-s", ECHO, "-i", "127.0.0.1", "-nostdin"])
                .args(["-p", &self.ports.uac.to_string(), "-mp", &self.ports.uac_media.to_string()])
                .args(["-r", &rate.to_string(), "-m", &count.to_string(), "-l", &open_calls.to_string()])
                .args(["-recv_timeout", &RECV_TIMEOUT_MS.to_string()])
                .args(["-timeout", &format!("{}s", limit.as_secs()), "-timeout_error"])
                .args(["-trace_stat", "-fd", "1", "-stf"])
                .arg(&stats)
                .args(["-trace_err", "-error_file"])
                .arg(&errors)
                .arg(format!("127.0.0.1:{port}")),
            out_file,
        )?;
        let started = Instant::now();
        let mut next_sample = started;
        let code = loop {
            interrupted()?;
            let now = Instant::now();
            if now >= next_sample {
                each_second();
                next_sample += Duration::from_secs(1);
            }
            match sipp.0.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(status))) => break status.code(),
                Some(Ok(None)) if now < started + limit + Duration::from_secs(5) => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    eprintln!("load sip note: SIPp {tag} did not stop by itself; killed");
                    break None;
                }
            }
        };
        let elapsed = started.elapsed();
        drop(sipp);
        let text = std::fs::read_to_string(&stats).unwrap_or_default();
        let stats = parse_sipp_stats(&text);
        if stats.is_none() {
            let said = std::fs::read_to_string(&out).unwrap_or_default();
            return Err(TaskError::new(format!(
                "SIPp {tag} wrote no statistics (exit code {code:?}):\n{}",
                said.lines().rev().take(10).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        let unexpected = unexpected_statuses(&read_capped(&errors, 64 << 20));
        Ok(SippRun { elapsed, stats, unexpected })
    }

    /// The switch's RSS per held registration, and its idle CPU with them.
    fn memory(&self) -> Result<Memory, TaskError> {
        self.on_switch("memory", |switch| self.memory_on(switch, self.args.users))
    }

    fn memory_on(&self, switch: &mut Switch, n: u32) -> Result<Memory, TaskError> {
        let count = u64::from(n);
        let rate = MEMORY_RATE.min(n);
        let burst = Duration::from_secs(count.div_ceil(u64::from(rate)));
        let window = burst + burst / 2 + Duration::from_secs(5);
        let rss_start = switch.rss_kib().unwrap_or(0);
        // A first burst asking Expires 0 keeps no binding but opens as many
        // transactions as the real one: the allocator's high-water mark of
        // the burst is reached before the baseline is read.
        let zero =
            self.sipp("memory-zero", "register-zero.xml", self.ports.switch_sip, rate, count, window, &mut || {})?;
        eprintln!("load sip step: memory: {} REGISTERs with Expires 0 ({} failed)", count, zero.failed());
        wait_drained(switch)?;
        let rss_before = switch.rss_kib().unwrap_or(0);
        let held =
            self.sipp("memory-hold", "register-hold.xml", self.ports.switch_sip, rate, count, window, &mut || {})?;
        let open_transactions = switch_stat(switch, "transactions").unwrap_or(0);
        eprintln!(
            "load sip step: memory: {} REGISTERs with Expires 3600 ({} failed); {open_transactions} transactions open",
            count,
            held.failed()
        );
        let cpu_open = self.idle_cpu(switch)?;
        let registrations = switch.ctl("sip show registrations").map(|t| parse_registrations(&t)).unwrap_or(0);
        wait_drained(switch)?;
        let rss_after = switch.rss_kib().unwrap_or(0);
        let cpu_drained = self.idle_cpu(switch)?;
        Ok(Memory { registrations, rss_start, rss_before, rss_after, open_transactions, cpu_open, cpu_drained })
    }

    /// The switch's CPU over `IDLE` with no traffic, in percent of one core.
    fn idle_cpu(&self, switch: &Switch) -> Result<f64, TaskError> {
        let before = switch.cpu_ticks().unwrap_or(0);
        let started = Instant::now();
        sleep(IDLE)?;
        let ticks = switch.cpu_ticks().unwrap_or(0).saturating_sub(before);
        Ok(ticks as f64 / self.tck / started.elapsed().as_secs_f64() * 100.0)
    }
}

fn write_files(dir: &Path, files: &[(&str, &str)]) -> Result<(), TaskError> {
    std::fs::create_dir_all(dir).map_err(|e| TaskError::io("cannot create", dir, e))?;
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| TaskError::io("cannot write", &path, e))?;
    }
    Ok(())
}

fn read_capped(path: &Path, cap: u64) -> String {
    use std::io::Read;
    let mut text = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(cap).read_to_end(&mut text);
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn with_log(e: TaskError, name: &str, tail: &str) -> TaskError {
    if tail.trim().is_empty() {
        return e;
    }
    TaskError { message: format!("{}\n--- last lines of {name}'s log ---\n{tail}", e.message), hint: e.hint }
}

/// Waits until the switch holds no transaction (the burst's have passed Timer J).
fn wait_drained(switch: &Switch) -> Result<(), TaskError> {
    let deadline = Instant::now() + TIMER_J + Duration::from_secs(15);
    loop {
        match switch_stat(switch, "transactions") {
            Some(0) => return Ok(()),
            _ if Instant::now() > deadline => {
                eprintln!(
                    "load sip note: the switch still holds transactions {} s after Timer J",
                    TIMER_J.as_secs() + 15
                );
                return Ok(());
            }
            _ => sleep(Duration::from_secs(1))?,
        }
    }
}

/// A `key=N` of the switch's `show stats` `sip ...` line.
fn switch_stat(switch: &Switch, key: &str) -> Option<u64> {
    sip_stat(&switch.ctl("show stats").ok()?, key)
}

pub fn sip_stat(stats: &str, key: &str) -> Option<u64> {
    stats
        .lines()
        .filter(|l| l.starts_with("sip "))
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// The count line of `sip show registrations`.
pub fn parse_registrations(text: &str) -> u64 {
    text.lines().rev().find_map(|l| l.strip_suffix(" registration(s)")?.trim().parse().ok()).unwrap_or(0)
}

/// What the switch says about the run that an operator would want to know:
/// bans, and the reasons it dropped datagrams.
fn switch_notes(switch: &Switch) -> Vec<String> {
    let mut notes = Vec::new();
    if let Ok(bans) = switch.ctl("sip show bans") {
        let banned: Vec<&str> = bans.lines().filter(|l| l.contains("127.0.0.1")).collect();
        if !banned.is_empty() {
            notes.push(format!("the guard banned the load's source: {}", banned.join("; ")));
        }
    }
    if let Ok(stats) = switch.ctl("show stats") {
        for line in stats.lines().filter(|l| l.starts_with("sip dropped")) {
            notes.push(line.trim().to_string());
        }
    }
    notes
}

// ---------------------------------------------------------------- targets

/// What a ramp samples of the process under load.
trait Target {
    fn cpu_ticks(&self) -> Option<u64>;
    fn rss_kib(&self) -> Option<u64>;
    fn alive(&mut self) -> bool;
}

impl Target for Switch {
    fn cpu_ticks(&self) -> Option<u64> {
        Switch::cpu_ticks(self)
    }
    fn rss_kib(&self) -> Option<u64> {
        Switch::rss_kib(self)
    }
    fn alive(&mut self) -> bool {
        Switch::alive(self)
    }
}

/// Kamailio in the foreground (`-DD`): the main process and the children it forks.
struct Kamailio {
    child: Option<Child>,
    pid: u32,
    log: PathBuf,
}

impl Kamailio {
    fn start(ctx: &Ctx, measure: &str) -> Result<Kamailio, TaskError> {
        let log = ctx.dir.join(format!("kamailio-{measure}.log"));
        let file = std::fs::File::create(&log).map_err(|e| TaskError::io("cannot create", &log, e))?;
        let err = file.try_clone().map_err(|e| TaskError::io("cannot open", &log, e))?;
        // Shared memory for the usrloc records and transactions of the run.
        let shm_mib = (256 + u64::from(ctx.args.users) / 200).to_string();
        let child = Command::new(&ctx.tools.kamailio)
            .current_dir(ctx.dir)
            .args(["-DD", "-E", "-f", "kamailio.cfg", "-m", &shm_mib, "-M", "16", "-Y"])
            .arg(ctx.dir)
            .arg("-w")
            .arg(ctx.dir)
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| TaskError::new(format!("cannot start {}: {e}", shown(&ctx.tools.kamailio))))?;
        let pid = child.id();
        let mut kamailio = Kamailio { child: Some(child), pid, log };
        if let Err(e) = wait_bound(ctx.ports.kamailio, KAMAILIO_START, || kamailio.alive()) {
            return Err(TaskError::new(format!("Kamailio: {e}:\n{}", kamailio.log_tail())));
        }
        // Its children are forked after the socket is bound.
        sleep(Duration::from_millis(500))?;
        Ok(kamailio)
    }

    /// The main process and its children (/proc/*/stat field 4 is the parent).
    fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.pid];
        let Ok(dir) = std::fs::read_dir("/proc") else { return pids };
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            if parent_pid(&stat) == Some(self.pid) {
                pids.push(pid);
            }
        }
        pids
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM (Kamailio's main process then stops its children), SIGKILL after 5 s.
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let children = self.pids();
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child, not yet reaped.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        for pid in children.into_iter().skip(1) {
            if std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| parent_pid(&s)).is_some() {
                // SAFETY: as above; a child Kamailio forked that outlived its parent.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
    }
}

impl Target for Kamailio {
    fn cpu_ticks(&self) -> Option<u64> {
        let stat = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        Some(self.pids().into_iter().filter_map(|pid| cpu_ticks(&stat(pid)?)).sum())
    }
    /// Not summed: the processes share most of their memory.
    fn rss_kib(&self) -> Option<u64> {
        None
    }
    fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Field 4 of /proc/PID/stat.
fn parent_pid(stat: &str) -> Option<u32> {
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(1)?.parse().ok()
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Reaped(Option<Child>);

impl Reaped {
    fn alive(&mut self) -> bool {
        matches!(self.0.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The kernel's receive-buffer drops at the socket bound to 127.0.0.1:`port` so far.
fn udp_drops(port: u16) -> Option<u64> {
    socket_drops(&std::fs::read_to_string("/proc/net/udp").ok()?, port)
}

/// Waits until 127.0.0.1:`port` is bound (/proc/net/udp) while `alive`.
fn wait_bound(port: u16, limit: Duration, mut alive: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if !alive() {
            return Err("exited at start".to_string());
        }
        let udp = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
        if socket_drops(&udp, port).is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("127.0.0.1:{port} not bound after {limit:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- SIPp's figures

/// The cumulative counters of SIPp's `-trace_stat` file (its last row).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SippStats {
    pub created: u64,
    pub successful: u64,
    pub failed: u64,
    pub retransmissions: u64,
    pub unexpected: u64,
    pub timeouts: u64,
}

/// The last row of a `-trace_stat` CSV (`;`-separated, a header row first).
pub fn parse_sipp_stats(csv: &str) -> Option<SippStats> {
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split(';').collect();
    let last: Vec<&str> = lines.next_back()?.split(';').collect();
    let get = |name: &str| -> Option<u64> { last.get(header.iter().position(|h| *h == name)?)?.trim().parse().ok() };
    Some(SippStats {
        created: get("TotalCallCreated")?,
        successful: get("SuccessfulCall(C)")?,
        failed: get("FailedCall(C)")?,
        retransmissions: get("Retransmissions(C)").unwrap_or(0),
        unexpected: get("FailedUnexpectedMessage(C)").unwrap_or(0),
        timeouts: get("FailedMaxUDPRetrans(C)").unwrap_or(0) + get("FailedTimeoutOnRecv(C)").unwrap_or(0),
    })
}

/// The statuses SIPp aborted calls on (its `-trace_err` file says `Aborting
/// call on unexpected message ... received 'SIP/2.0 503 ...`), most frequent first.
pub fn unexpected_statuses(errors: &str) -> Vec<(u16, u64)> {
    let mut counts = std::collections::BTreeMap::<u16, u64>::new();
    // Only the responses that aborted a call: "Dead call ... received" lines are
    // late copies after a call ended, which SIPp discards.
    for event in errors.split("Aborting call on unexpected message").skip(1) {
        let Some(at) = event.find("received 'SIP/2.0 ") else { continue };
        let rest = &event[at + "received 'SIP/2.0 ".len()..];
        if let Some(code) = rest.get(..3).and_then(|c| c.parse().ok()) {
            *counts.entry(code).or_default() += 1;
        }
    }
    let mut v: Vec<(u16, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// The ramp's rule: under 1 % of the offered requests failed, at least 90 %
/// succeeded, and SIPp was done within `window` (the step, the hold and a
/// margin): a target that answers late has not sustained the rate.
pub fn step_passes(offered: u64, stats: &SippStats, elapsed: Duration, window: Duration) -> bool {
    offered > 0 && stats.failed * 100 < offered && stats.successful * 10 >= offered * 9 && elapsed <= window
}

struct SippRun {
    elapsed: Duration,
    stats: Option<SippStats>,
    unexpected: Vec<(u16, u64)>,
}

impl SippRun {
    fn failed(&self) -> u64 {
        self.stats.map_or(0, |s| s.failed)
    }
}

#[derive(Debug, Clone)]
struct StepResult {
    rate: u32,
    offered: u64,
    stats: SippStats,
    elapsed: Duration,
    cpu_ticks: u64,
    rss_kib: u64,
    /// Datagrams the kernel dropped at the target's socket (receive buffer full) during the step.
    sock_drops: Option<u64>,
}

impl StepResult {
    /// µs of the target's CPU per successful request.
    fn cpu_us_per_req(&self, tck: f64) -> Option<f64> {
        (self.stats.successful > 0).then(|| self.cpu_ticks as f64 / tck * 1e6 / self.stats.successful as f64)
    }

    fn describe(&self, tck: f64, passed: bool, unexpected: &[(u16, u64)]) -> String {
        let s = &self.stats;
        let cpu = self.cpu_us_per_req(tck).map_or_else(|| "-".to_string(), |c| format!("{c:.0}"));
        let mut text = format!(
            "{}/s {}: {}/{} ok, {} failed ({} unexpected, {} timeouts), {} retransmissions, {:.1} s, \
             cpu {:.0}% ({cpu} us/req)",
            self.rate,
            if passed { "pass" } else { "FAIL" },
            s.successful,
            self.offered,
            s.failed,
            s.unexpected,
            s.timeouts,
            s.retransmissions,
            self.elapsed.as_secs_f64(),
            self.cpu_ticks as f64 / tck / self.elapsed.as_secs_f64().max(0.001) * 100.0,
        );
        if self.rss_kib > 0 {
            text.push_str(&format!(", rss {} KiB", self.rss_kib));
        }
        if let Some(drops) = self.sock_drops {
            text.push_str(&format!(", socket drops {drops}"));
        }
        if !unexpected.is_empty() {
            let codes: Vec<String> = unexpected.iter().map(|(c, n)| format!("{c} x{n}")).collect();
            text.push_str(&format!(", aborted on {}", codes.join(", ")));
        }
        text
    }
}

#[derive(Debug, Default)]
struct Ramp {
    /// The highest passing step.
    best: Option<StepResult>,
    /// The step that ended the ramp (none when it reached `--max-rate`).
    failed: Option<StepResult>,
    rss_kib: u64,
}

impl Ramp {
    fn rate(&self) -> u32 {
        self.best.as_ref().map_or(0, |s| s.rate)
    }
}

fn measure_line(measure: &str, switch: &Ramp, kamailio: &Ramp) -> String {
    let tck = clock_ticks_per_second();
    let cpu = |r: &Ramp| {
        r.best.as_ref().and_then(|s| s.cpu_us_per_req(tck)).map_or_else(|| "-".to_string(), |c| format!("{c:.0}"))
    };
    let ratio = if kamailio.rate() > 0 {
        format!("{:.2}", f64::from(switch.rate()) / f64::from(kamailio.rate()))
    } else {
        "-".to_string()
    };
    format!(
        "load sip {measure}: switch={}/s kamailio={}/s ratio={ratio} cpu_us_per_req switch={} kamailio={} rss_switch_kib={}",
        switch.rate(),
        kamailio.rate(),
        cpu(switch),
        cpu(kamailio),
        switch.rss_kib
    )
}

struct Memory {
    registrations: u64,
    rss_start: u64,
    rss_before: u64,
    rss_after: u64,
    open_transactions: u64,
    cpu_open: f64,
    cpu_drained: f64,
}

impl Memory {
    fn memory_line(&self) -> String {
        let bytes = (self.rss_after.saturating_sub(self.rss_before) * 1024)
            .checked_div(self.registrations)
            .map_or_else(|| "-".to_string(), |b| b.to_string());
        format!(
            "load sip memory: bytes_per_registration={bytes} registrations={} rss_kib start={} before={} after={}",
            self.registrations, self.rss_start, self.rss_before, self.rss_after
        )
    }

    fn idle_line(&self) -> String {
        format!(
            "load sip idle: registrations={} open_transactions={} cpu={:.2}% cpu_after_drain={:.2}%",
            self.registrations, self.open_transactions, self.cpu_open, self.cpu_drained
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str =
        "StartTime;LastResetTime;CurrentTime;ElapsedTime(P);ElapsedTime(C);TotalCallCreated;CurrentCall;\
SuccessfulCall(P);SuccessfulCall(C);FailedCall(P);FailedCall(C);FailedMaxUDPRetrans(C);FailedUnexpectedMessage(C);\
FailedTimeoutOnRecv(C);Retransmissions(C)\n\
2026-12-06\t13:08:35.1;x;y;00:00:01;00:00:01;10;10;0;0;0;0;0;0;0;0\n\
2026-12-06\t13:08:45.1;x;y;00:00:01;00:00:11;1000;0;90;995;1;5;2;3;0;7\n";

    #[test]
    fn sipp_stats_are_read_from_the_last_row() {
        let s = parse_sipp_stats(STATS).expect("stats");
        assert_eq!(
            s,
            SippStats { created: 1000, successful: 995, failed: 5, retransmissions: 7, unexpected: 3, timeouts: 2 }
        );
        assert_eq!(parse_sipp_stats("only a header\n"), None);
        assert_eq!(parse_sipp_stats(""), None);
    }

    #[test]
    fn parent_of_a_process() {
        assert_eq!(parent_pid("42 (kam ailio) S 7 42 42 0"), Some(7));
    }

    #[test]
    fn ramp_step_rule() {
        let window = Duration::from_secs(14);
        let ok = SippStats { created: 1000, successful: 995, failed: 5, ..SippStats::default() };
        assert!(step_passes(1000, &ok, Duration::from_secs(13), window));
        // 1 % failed is not under 1 %.
        let failing = SippStats { successful: 990, failed: 10, ..ok };
        assert!(!step_passes(1000, &failing, Duration::from_secs(13), window));
        // Too few completed, although nothing failed (SIPp killed, or calls still open).
        let short = SippStats { successful: 899, failed: 0, ..ok };
        assert!(!step_passes(1000, &short, Duration::from_secs(13), window));
        // Everything completed, but late: the rate was not sustained.
        assert!(!step_passes(1000, &ok, Duration::from_secs(15), window));
        assert!(!step_passes(0, &SippStats::default(), Duration::ZERO, window));
    }

    #[test]
    fn switch_answers_and_sipp_errors() {
        let stats =
            "datagrams in: 3\nsip datagrams_in=10 datagrams_out=12 rtp_in=0 rtp_out=0 challenges=5 refreshes=0 \
                     transactions=4321 calls=7\nsip dropped        2 unparsable\n";
        assert_eq!(sip_stat(stats, "transactions"), Some(4321));
        assert_eq!(sip_stat(stats, "calls"), Some(7));
        assert_eq!(sip_stat(stats, "datagrams"), None);
        assert_eq!(
            parse_registrations("User Contact Source Expires\nu1 sip:u1@x 127.0.0.1:5 3599\n1 registration(s)\n"),
            1
        );
        let errors =
            "Aborting call on unexpected message for Call-Id '1-2@127.0.0.1': while expecting '200' (index 5), \
                      received 'SIP/2.0 503 Service Unavailable\r\n...' \n\
                      Dead call 1-2@127.0.0.1 (aborted at index 3), received 'SIP/2.0 200 OK ...'\n\
                      Aborting call on unexpected message ... received 'SIP/2.0 503 Service Unavailable ...'\n\
                      Aborting call on unexpected message ... received 'SIP/2.0 403 Forbidden'";
        assert_eq!(unexpected_statuses(errors), vec![(503, 2), (403, 1)]);
    }
}

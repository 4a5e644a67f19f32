//! `cargo xtask load trunk`: two live switches on loopback, A calling B's echo
//! over an IAX2 trunk, measured from the outside the way an operator would.
//!
//! It builds the release `switch`, writes two configuration directories (A
//! and B: friends with md5 secrets registering to each other, `trunk=yes`,
//! B's dialplan `600 = echo`), starts both, waits until both are registered,
//! runs `originate IAX2/B/600 app=pattern count=N hold=SECONDS` on A and then
//! samples once a second: calls up (`iax2 show channels`), CPU of each
//! process (/proc/PID/stat utime+stime over wall time), resident memory
//! (/proc/PID/status VmRSS), A's datagrams and bytes out (`show stats`).
//! Then it hangs up, stops both switches (also when it fails or panics) and
//! prints one final line:
//!
//! `load trunk: calls_up=N pps=N bytes_per_s=N cpu_a=PCT cpu_b=PCT rss_a_kib=N rss_b_kib=N`
//!
//! `calls_up` is the least number of calls up on A over the steady-state
//! samples (after the ramp-up, before the hold time ends). The exit status
//! is 1 when fewer calls than asked stayed up, 2 when the load could not run.
//! Everything sent stays on 127.0.0.1, and the run ends by itself.

use std::io::Write;
use std::net::{TcpListener, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use super::proc::{clock_ticks_per_second, socket_drops, udp_snmp};
use super::{
    build_switch, interrupted, io_err, parse_channels, parse_stats, stat, Channels, Switch, WorkDir, CONTROL_TIMEOUT,
    SAMPLE_EVERY,
};
use crate::output::{self, shown};
use crate::{LoadArgs, LoadMode, TaskError};

/// Longest wait for both switches to register to each other.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(30);

pub(super) fn run(args: &LoadArgs) -> Result<bool, TaskError> {
    let ports = Ports::new(args.port_base())?;
    ports.check_free()?;
    let binary = match &args.switch_bin {
        Some(bin) => bin.clone(),
        None => build_switch()?,
    };
    let work = WorkDir::create(args.keep)?;
    let (a_dir, b_dir) = (work.path.join("a"), work.path.join("b"));
    write_configs(args, &ports, &a_dir, &b_dir)?;

    let mut a = Switch::start("A", &binary, &a_dir, ports.a_control)?;
    let mut b = Switch::start("B", &binary, &b_dir, ports.b_control)?;
    let result = drive(args, &ports, &work.path, &mut a, &mut b);
    // Hang up (best effort) before the processes go, so both see the calls end.
    if a.alive() {
        let _ = a.ctl("hangup all");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            match a.ctl("iax2 show channels") {
                Ok(text) if parse_channels(&text).active == 0 => break,
                Ok(_) => std::thread::sleep(Duration::from_millis(200)),
                Err(_) => break,
            }
        }
    }
    let tails = [a.log_tail(), b.log_tail()];
    a.stop();
    b.stop();
    match result {
        Ok(report) => {
            let ok = report.calls_up >= u64::from(args.calls());
            if !ok {
                work.keep_for_inspection();
                eprintln!("only {} of {} calls stayed up; logs: {}", report.calls_up, args.calls(), shown(&work.path));
            }
            report.print(args.mode);
            Ok(ok)
        }
        Err(e) => {
            work.keep_for_inspection();
            for (name, tail) in ["A", "B"].iter().zip(tails) {
                if !tail.is_empty() {
                    eprintln!("--- last lines of {name}'s log ---\n{tail}");
                }
            }
            Err(e.hint(format!("configurations and logs kept in {}", shown(&work.path))))
        }
    }
}

/// The four loopback ports of one run.
struct Ports {
    a_iax: u16,
    b_iax: u16,
    a_control: u16,
    b_control: u16,
}

impl Ports {
    fn new(base: u16) -> Result<Ports, TaskError> {
        if !(1024..=u16::MAX - 3).contains(&base) {
            return Err(TaskError::new(format!("--port-base {base}: use 1024-{}", u16::MAX - 3)));
        }
        Ok(Ports { a_iax: base, b_iax: base + 1, a_control: base + 2, b_control: base + 3 })
    }

    /// Fails early, with a clear message, when a port is taken.
    fn check_free(&self) -> Result<(), TaskError> {
        let taken = |what: &str, port: u16, e: std::io::Error| {
            TaskError::new(format!("{what} port 127.0.0.1:{port} is not free: {e}"))
                .hint("another load run or switch may be using it; pick other ports with --port-base")
        };
        for port in [self.a_iax, self.b_iax] {
            UdpSocket::bind(("127.0.0.1", port)).map_err(|e| taken("UDP", port, e))?;
        }
        for port in [self.a_control, self.b_control] {
            TcpListener::bind(("127.0.0.1", port)).map_err(|e| taken("TCP", port, e))?;
        }
        Ok(())
    }
}

/// One switch of the pair, as its iax.conf sees it.
pub struct Side<'a> {
    pub me: &'a str,
    pub my_secret: &'a str,
    pub bind_port: u16,
    /// The friend that registers to us with `peer_secret` and that we register to.
    pub peer: &'a str,
    pub peer_secret: &'a str,
    pub peer_port: u16,
}

/// iax.conf of one side: the friend, and our registration to it.
pub fn iax_conf(mode: LoadMode, calls: u32, side: &Side) -> String {
    let Side { me, my_secret, bind_port, peer, peer_secret, peer_port } = *side;
    let trunk = if mode == LoadMode::Trunk { "yes" } else { "no" };
    let mut general = format!("[general]\nbindaddr = 127.0.0.1\nbindport = {bind_port}\n");
    // The switch refuses trunk calls past trunkmaxsize / 160 bytes (800 by default).
    if mode == LoadMode::Trunk && u64::from(calls) * 160 > 128_000 {
        general.push_str(&format!("trunkmaxsize = {}\n", u64::from(calls) * 160));
    }
    // Both switches share 127.0.0.1, so the per-address limit applies to all calls.
    if calls > 1900 {
        general.push_str(&format!("maxcallnumbers = {}\n", (calls + 148).min(30_000)));
    }
    format!(
        "{general}\nregister => {me}:{my_secret}@127.0.0.1:{peer_port}\n\n\
         [{peer}]\ntype = friend\nhost = dynamic\ntrunk = {trunk}\nsecret = {peer_secret}\nauth = md5\n\
         qualify = yes\ncontext = iaxinbound\nrequirecalltoken = yes\n"
    )
}

fn write_configs(args: &LoadArgs, ports: &Ports, a_dir: &Path, b_dir: &Path) -> Result<(), TaskError> {
    let a = Side {
        me: "A",
        my_secret: "trunk-secret-A",
        bind_port: ports.a_iax,
        peer: "B",
        peer_secret: "trunk-secret-B",
        peer_port: ports.b_iax,
    };
    let b = Side {
        me: "B",
        my_secret: "trunk-secret-B",
        bind_port: ports.b_iax,
        peer: "A",
        peer_secret: "trunk-secret-A",
        peer_port: ports.a_iax,
    };
    let (a_conf, b_conf) = (iax_conf(args.mode, args.calls(), &a), iax_conf(args.mode, args.calls(), &b));
    let a_toml = format!("[control]\nlisten = \"127.0.0.1:{}\"\n", ports.a_control);
    let b_toml =
        format!("[control]\nlisten = \"127.0.0.1:{}\"\n\n[dialplan.iaxinbound]\n\"600\" = \"echo\"\n", ports.b_control);
    for (dir, iax, toml) in [(a_dir, a_conf, a_toml), (b_dir, b_conf, b_toml)] {
        std::fs::create_dir_all(dir).map_err(|e| TaskError::io("cannot create", dir, e))?;
        for (name, text) in [("iax.conf", iax), ("switch.toml", toml)] {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| TaskError::io("cannot write", &path, e))?;
        }
    }
    Ok(())
}

/// One sample, `at` after the originate.
#[derive(Debug, Clone)]
struct Sample {
    at: Duration,
    a: Channels,
    b_up: u64,
    cpu_a: u64,
    cpu_b: u64,
    rss_a: u64,
    rss_b: u64,
    a_out: u64,
    a_bytes_out: Option<u64>,
    /// Kernel receive-queue drops of A's and B's sockets so far (/proc/net/udp).
    sock_drops: (Option<u64>, Option<u64>),
}

impl Sample {
    const CSV_HEADER: &'static str =
        "t_s,a_up,a_active,b_up,a_tx,a_rx,a_lost,cpu_a_ticks,cpu_b_ticks,rss_a_kib,rss_b_kib,\
a_datagrams_out,a_bytes_out,sock_drops_a,sock_drops_b";

    fn csv_row(&self) -> String {
        let opt = |v: Option<u64>| v.map_or(String::new(), |n| n.to_string());
        format!(
            "{:.3},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            self.at.as_secs_f64(),
            self.a.up,
            self.a.active,
            self.b_up,
            self.a.tx,
            self.a.rx,
            self.a.lost,
            self.cpu_a,
            self.cpu_b,
            self.rss_a,
            self.rss_b,
            self.a_out,
            opt(self.a_bytes_out),
            opt(self.sock_drops.0),
            opt(self.sock_drops.1)
        )
    }
}

/// The figures of one run.
#[derive(Debug)]
struct Report {
    calls_up: u64,
    pps: f64,
    bytes_per_s: Option<f64>,
    cpu_a: f64,
    cpu_b: f64,
    rss_a: u64,
    rss_b: u64,
    detail: String,
}

impl Report {
    fn print(&self, mode: LoadMode) {
        println!("{}", self.detail);
        let bytes = self.bytes_per_s.map_or_else(|| "unknown".to_string(), |b| format!("{b:.0}"));
        println!(
            "load {}: calls_up={} pps={:.0} bytes_per_s={bytes} cpu_a={:.1} cpu_b={:.1} rss_a_kib={} rss_b_kib={}",
            mode.name(),
            self.calls_up,
            self.pps,
            self.cpu_a,
            self.cpu_b,
            self.rss_a,
            self.rss_b
        );
    }
}

fn drive(args: &LoadArgs, ports: &Ports, work: &Path, a: &mut Switch, b: &mut Switch) -> Result<Report, TaskError> {
    let progress = output::show_progress();
    // Both registered to each other: A knows B's address and B knows A's.
    let started = Instant::now();
    loop {
        let ra = a.ctl("iax2 show registry").map_err(io_err("A: iax2 show registry"))?;
        let rb = b.ctl("iax2 show registry").map_err(io_err("B: iax2 show registry"))?;
        if ra.contains("Registered") && rb.contains("Registered") {
            break;
        }
        if !a.alive() || !b.alive() {
            return Err(TaskError::new("a switch exited while registering"));
        }
        if started.elapsed() > REGISTER_TIMEOUT {
            return Err(TaskError::new(format!(
                "A and B did not register to each other within {} s\nA: {ra}B: {rb}",
                REGISTER_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if progress {
        eprintln!("registered in {:.1} s; placing {} calls", started.elapsed().as_secs_f64(), args.calls());
    }

    let snmp_before = std::fs::read_to_string("/proc/net/snmp").map(|t| udp_snmp(&t)).unwrap_or_default();
    let tck = clock_ticks_per_second();
    let command = format!("originate IAX2/B/600 app=pattern count={} hold={}", args.calls(), args.seconds);
    let t0 = Instant::now();
    let answer = a.ctl(&command).map_err(io_err("A: originate"))?;
    eprintln!("A: {command}: {}", answer.trim());

    // Sampling runs until half a second before the hold time ends (calls are
    // answered after the originate, so none has ended by then).
    let hold = Duration::from_secs(args.seconds);
    let end = hold.saturating_sub(Duration::from_millis(500)).max(Duration::from_millis(100));
    let mut samples: Vec<Sample> = Vec::new();
    let csv_path = work.join("samples.csv");
    let mut csv = std::fs::File::create(&csv_path).map_err(|e| TaskError::io("cannot create", &csv_path, e))?;
    let _ = writeln!(csv, "{}", Sample::CSV_HEADER);
    let mut failures = 0u32;
    let mut next = t0;
    while next.duration_since(t0) <= end {
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        }
        next += SAMPLE_EVERY;
        interrupted()?;
        if !a.alive() || !b.alive() {
            return Err(TaskError::new(format!(
                "a switch died under load (A alive: {}, B alive: {})",
                a.alive(),
                b.alive()
            )));
        }
        match sample(a, b, ports, t0) {
            Ok(s) => {
                if progress {
                    eprintln!(
                        "t={:>5.1}s A up {:>5} (active {:>5}) B up {:>5}  lost {:>6}  socket drops A {} B {}  rss A {} KiB B {} KiB",
                        s.at.as_secs_f64(),
                        s.a.up,
                        s.a.active,
                        s.b_up,
                        s.a.lost,
                        s.sock_drops.0.map_or("?".into(), |n| n.to_string()),
                        s.sock_drops.1.map_or("?".into(), |n| n.to_string()),
                        s.rss_a,
                        s.rss_b
                    );
                }
                let _ = writeln!(csv, "{}", s.csv_row());
                samples.push(s);
            }
            Err(e) => {
                failures += 1;
                eprintln!("sample failed: {e}");
            }
        }
        // Never run far past the hold time, however slow the answers are.
        if t0.elapsed() > hold + CONTROL_TIMEOUT * 3 {
            break;
        }
    }
    let snmp_after = std::fs::read_to_string("/proc/net/snmp").map(|t| udp_snmp(&t)).unwrap_or_default();
    let net_udp = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let stats_a = a.ctl("show stats").map(|t| parse_stats(&t)).unwrap_or_default();
    let stats_b = b.ctl("show stats").map(|t| parse_stats(&t)).unwrap_or_default();

    let (ramp, steady) = steady_state(&samples, hold);
    let (Some(first), Some(last)) = (steady.first(), steady.last()) else {
        return Err(TaskError::new(format!("no sample could be taken ({failures} failed)")));
    };
    let calls_up = steady.iter().map(|s| s.a.up).min().unwrap_or(0);
    let dt = (last.at - first.at).as_secs_f64();
    let per_s = |from: u64, to: u64| if dt > 0.0 { to.saturating_sub(from) as f64 / dt } else { 0.0 };
    let cpu = |from: u64, to: u64| per_s(from, to) / tck * 100.0;
    let bytes_per_s = match (first.a_bytes_out, last.a_bytes_out) {
        (Some(x), Some(y)) => Some(per_s(x, y)),
        _ => None,
    };
    if bytes_per_s.is_none() {
        eprintln!("note: A's `show stats` has no `bytes out` counter, so bytes_per_s is unknown");
    }

    let delta = |name: &str| {
        let get = |v: &[(String, u64)]| stat(v, name).unwrap_or(0);
        get(&snmp_after).saturating_sub(get(&snmp_before))
    };
    let drops = |port| socket_drops(&net_udp, port).map_or("?".to_string(), |n| n.to_string());
    let dropped = |stats: &[(String, u64)]| {
        let d: Vec<String> =
            stats.iter().filter(|(k, _)| k.starts_with("dropped")).map(|(k, v)| format!("{k}={v}")).collect();
        if d.is_empty() {
            "none".to_string()
        } else {
            d.join(",")
        }
    };
    let rmem_default = std::fs::read_to_string("/proc/sys/net/core/rmem_default")
        .map_or_else(|_| "?".to_string(), |t| t.trim().to_string());
    let kernel_drops = [ports.a_iax, ports.b_iax].iter().filter_map(|p| socket_drops(&net_udp, *p)).sum::<u64>();
    if kernel_drops > 0 {
        eprintln!(
            "note: the kernel dropped {kernel_drops} datagrams because a switch's socket receive buffer was full \
             (net.core.rmem_default = {rmem_default} bytes; see docs/performance.md)"
        );
    }
    let detail = format!(
        "load detail: samples={} steady={} ramp_s={:.1} window_s={dt:.1} calls_active_min={} b_up_min={} frames_tx_a={} frames_rx_a={} \
         lost_a={} lost_pct_a={:.2} udp_rcvbuf_errors={} udp_in_errors={} sock_drops_a={} sock_drops_b={} a_datagrams_in={} \
         b_datagrams_in={} dropped_a={} dropped_b={} failed_samples={failures} rmem_default={rmem_default}",
        samples.len(),
        steady.len(),
        ramp.as_secs_f64(),
        steady.iter().map(|s| s.a.active).min().unwrap_or(0),
        steady.iter().map(|s| s.b_up).min().unwrap_or(0),
        last.a.tx,
        last.a.rx,
        last.a.lost,
        if last.a.tx > 0 { last.a.lost as f64 * 100.0 / last.a.tx as f64 } else { 0.0 },
        delta("RcvbufErrors"),
        delta("InErrors"),
        drops(ports.a_iax),
        drops(ports.b_iax),
        stat(&stats_a, "datagrams in").unwrap_or(0),
        stat(&stats_b, "datagrams in").unwrap_or(0),
        dropped(&stats_a),
        dropped(&stats_b),
    );
    Ok(Report {
        calls_up,
        pps: per_s(first.a_out, last.a_out),
        bytes_per_s,
        cpu_a: cpu(first.cpu_a, last.cpu_a),
        cpu_b: cpu(first.cpu_b, last.cpu_b),
        rss_a: steady.iter().map(|s| s.rss_a).max().unwrap_or(0),
        rss_b: steady.iter().map(|s| s.rss_b).max().unwrap_or(0),
        detail,
    })
}

/// The steady-state samples and where they start: from the first sample at
/// which A had as many calls up as it ever had (the ramp-up is over; a call
/// that drops after that counts against `calls_up`), and no earlier than a
/// tenth of the hold time. At least the last two samples.
fn steady_state(samples: &[Sample], hold: Duration) -> (Duration, Vec<&Sample>) {
    let peak = samples.iter().map(|s| s.a.up).max().unwrap_or(0);
    let reached = samples.iter().find(|s| s.a.up == peak).map_or(Duration::ZERO, |s| s.at);
    let start = reached.max(hold / 10);
    let mut steady: Vec<&Sample> = samples.iter().filter(|s| s.at >= start).collect();
    if steady.len() < 2 {
        steady = samples.iter().rev().take(2).rev().collect();
    }
    (steady.first().map_or(start, |s| s.at), steady)
}

fn sample(a: &Switch, b: &Switch, ports: &Ports, t0: Instant) -> Result<Sample, String> {
    let at = t0.elapsed();
    // CPU first and together, so both cover the same wall-clock interval.
    let (cpu_a, cpu_b) = (a.cpu_ticks().ok_or("A: /proc stat")?, b.cpu_ticks().ok_or("B: /proc stat")?);
    let (rss_a, rss_b) = (a.rss_kib().unwrap_or(0), b.rss_kib().unwrap_or(0));
    let stats = parse_stats(&a.ctl("show stats").map_err(|e| format!("A: show stats: {e}"))?);
    let channels = parse_channels(&a.ctl("iax2 show channels").map_err(|e| format!("A: iax2 show channels: {e}"))?);
    let b_channels = parse_channels(&b.ctl("iax2 show channels").map_err(|e| format!("B: iax2 show channels: {e}"))?);
    Ok(Sample {
        at,
        a: channels,
        b_up: b_channels.up,
        cpu_a,
        cpu_b,
        rss_a,
        rss_b,
        a_out: stat(&stats, "datagrams out").ok_or("A: show stats has no `datagrams out`")?,
        a_bytes_out: stat(&stats, "bytes out"),
        sock_drops: std::fs::read_to_string("/proc/net/udp")
            .map(|t| (socket_drops(&t, ports.a_iax), socket_drops(&t, ports.b_iax)))
            .unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, up: u64) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            a: Channels { up, ..Channels::default() },
            b_up: up,
            cpu_a: 0,
            cpu_b: 0,
            rss_a: 0,
            rss_b: 0,
            a_out: 0,
            a_bytes_out: None,
            sock_drops: (None, None),
        }
    }

    #[test]
    fn steady_state_starts_when_every_call_is_up() {
        let samples: Vec<Sample> = [(0, 0), (1, 500), (2, 790), (3, 800), (4, 800), (5, 780), (6, 800)]
            .into_iter()
            .map(|(t, up)| at(t, up))
            .collect();
        let (start, steady) = steady_state(&samples, Duration::from_secs(7));
        assert_eq!(start, Duration::from_secs(3));
        assert_eq!(steady.iter().map(|s| s.a.up).min(), Some(780));
        // Never before a tenth of the hold, and always at least two samples.
        let (start, _) = steady_state(&samples, Duration::from_secs(50));
        assert_eq!(start, Duration::from_secs(5));
        let (_, steady) = steady_state(&samples, Duration::from_secs(600));
        assert_eq!(steady.len(), 2);
    }

    #[test]
    fn configs_register_to_each_other() {
        let side = Side { me: "A", my_secret: "sa", bind_port: 14569, peer: "B", peer_secret: "sb", peer_port: 14570 };
        let a = iax_conf(LoadMode::Trunk, 800, &side);
        assert!(a.contains("register => A:sa@127.0.0.1:14570"));
        assert!(a.contains("[B]\ntype = friend") && a.contains("secret = sb"));
        assert!(a.contains("trunk = yes") && !a.contains("trunkmaxsize"));
        assert!(iax_conf(LoadMode::Trunk, 1000, &side).contains("trunkmaxsize = 160000"));
        assert!(iax_conf(LoadMode::Notrunk, 10, &side).contains("trunk = no"));
    }
}

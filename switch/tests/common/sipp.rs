//! Shared by the SIP interop tests (`interop_sipp.rs`): a `switch.toml` with
//! `[sip]`, runs of SIPp 3.6 and of SIPVicious's scanners with a time limit,
//! SIPp's statistics file, and a dumpcap capture of SIP and RTP on `lo`
//! dissected by tshark.
//!
//! Built on `common/iaxmodem.rs` (the live switch, processes killed on drop,
//! free ports), which the test file includes as `common`.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::common::{find_in_path, pump, reserve_ports, start_dumpcap, Proc};

/// The first of `names` found in PATH, or `None` after saying the test is skipped.
pub fn program(names: &[&str], package: &str) -> Option<PathBuf> {
    let found = names.iter().find_map(|n| find_in_path(n));
    if found.is_none() {
        eprintln!("SKIPPED: {} is not installed (apt-get install {package}); the interop test did not run", names[0]);
    }
    found
}

/// An even UDP port `p` on 127.0.0.1 such that `p .. p + count` were all free a
/// moment ago and are now reserved in this process (see `reserve_ports`): RTP
/// on the even port, RTCP on the next (RFC 3550 11).
pub fn free_udp_ports(count: u16) -> u16 {
    for _ in 0..200 {
        let Ok(probe) = UdpSocket::bind("127.0.0.1:0") else { continue };
        let Ok(addr) = probe.local_addr() else { continue };
        drop(probe);
        let base = addr.port() & !1;
        if base < 1024 || u32::from(base) + u32::from(count) > 65535 {
            continue;
        }
        let held: Vec<_> = (base..base + count).map_while(|p| UdpSocket::bind(("127.0.0.1", p)).ok()).collect();
        if held.len() == usize::from(count) && reserve_ports(base, base + count - 1) {
            return base;
        }
    }
    panic!("no {count} consecutive free UDP ports on 127.0.0.1");
}

// ---------------------------------------------------------------- the switch's configuration

/// What goes into `iax.conf` (IAX2 on a free port, nothing else) and `switch.toml`.
pub struct SipConfig<'a> {
    pub iax_port: u16,
    pub control: u16,
    pub sip_port: u16,
    /// `rtp_ports`: each call takes a pair from FIRST to LAST.
    pub rtp_ports: (u16, u16),
    /// Seconds without RTP before the switch hangs up.
    pub rtp_timeout: u32,
    /// `[sip.users.NAME] password = ...`
    pub users: &'a [(&'a str, &'a str)],
    /// `[dialplan.default]` entries: (extension, application).
    pub dialplan: &'a [(&'a str, &'a str)],
}

impl SipConfig<'_> {
    pub fn write(&self, dir: &Path) {
        std::fs::write(dir.join("iax.conf"), format!("[general]\nbindaddr=127.0.0.1\nbindport={}\n", self.iax_port))
            .expect("write iax.conf");
        let mut toml = format!(
            "[control]\nlisten = \"127.0.0.1:{}\"\n\n[sip]\nlisten = \"127.0.0.1:{}\"\nrtp = \"127.0.0.1\"\n\
             rtp_ports = \"{}-{}\"\nrealm = \"switch\"\ncontext = \"default\"\nrtp_timeout = {}\n",
            self.control, self.sip_port, self.rtp_ports.0, self.rtp_ports.1, self.rtp_timeout
        );
        for (user, password) in self.users {
            toml.push_str(&format!("\n[sip.users.{user}]\npassword = \"{password}\"\n"));
        }
        toml.push_str("\n[dialplan.default]\n");
        for (exten, app) in self.dialplan {
            toml.push_str(&format!("\"{exten}\" = \"{app}\"\n"));
        }
        std::fs::write(dir.join("switch.toml"), toml).expect("write switch.toml");
    }
}

// ---------------------------------------------------------------- running programs

/// Runs `command` to completion with its output collected, killing it after `limit`.
/// Returns its exit status (`None` when it had to be killed) and stdout + stderr.
pub fn run_bounded(mut command: Command, limit: Duration) -> (Option<ExitStatus>, String) {
    let mut child =
        command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn a tool");
    let log = Arc::new(Mutex::new(Vec::new()));
    pump(child.stdout.take().unwrap(), log.clone(), None);
    pump(child.stderr.take().unwrap(), log.clone(), None);
    let mut proc = Proc { child };
    let deadline = Instant::now() + limit;
    let status = loop {
        match proc.child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => break None,
        }
    };
    drop(proc);
    // The pumps finish once the pipes close; give them a moment to hand over the last lines.
    std::thread::sleep(Duration::from_millis(50));
    let out = log.lock().unwrap().join("\n");
    (status, out)
}

/// One finished SIPp run.
pub struct SippRun {
    /// SIPp's exit code: 0 all calls succeeded, 1 some failed, others fatal; `None`: killed.
    pub code: Option<i32>,
    pub elapsed: Duration,
    /// The last line of `-trace_stat` (cumulative counters) by column name.
    pub stats: BTreeMap<String, String>,
    /// Every message sent and received (`-trace_msg`).
    pub messages: String,
    /// Unexpected messages and warnings (`-trace_err`).
    pub errors: String,
    /// What SIPp printed (its final screen).
    pub screen: String,
}

impl SippRun {
    /// A cumulative counter such as `SuccessfulCall(C)`.
    pub fn stat(&self, name: &str) -> Option<u64> {
        self.stats.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// Everything that helps explain a failure.
    pub fn context(&self) -> String {
        format!(
            "\n--- sipp exit code {:?} after {:?} ---\n{}\n--- sipp errors ---\n{}\n--- sipp messages (last 6000 chars) ---\n{}",
            self.code,
            self.elapsed,
            self.screen,
            self.errors,
            tail(&self.messages, 6000)
        )
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `sipp -sf SCENARIO ARGS...` in `cwd` (where media files are looked up)
/// with message, error and statistics traces written there, for at most `limit`.
pub fn run_sipp(sipp: &Path, cwd: &Path, scenario: &Path, args: &[String], limit: Duration) -> SippRun {
    let tag =
        format!("sipp-{}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    let messages = cwd.join(format!("{tag}-messages.log"));
    let errors = cwd.join(format!("{tag}-errors.log"));
    let stats = cwd.join(format!("{tag}-stats.csv"));
    let mut command = Command::new(sipp);
    command
        .current_dir(cwd)
        .arg("-sf")
        .arg(scenario)
        .args(args)
        // Never wait on a keyboard; stop on its own however the peer behaves.
        .args(["-nostdin", "-timeout", &format!("{}s", limit.as_secs().saturating_sub(2).max(1)), "-timeout_error"])
        .args(["-trace_msg", "-message_file"])
        .arg(&messages)
        .args(["-trace_err", "-error_file"])
        .arg(&errors)
        .args(["-trace_stat", "-stf"])
        .arg(&stats);
    let started = Instant::now();
    let (status, screen) = run_bounded(command, limit);
    let elapsed = started.elapsed();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    let csv = read(&stats);
    let mut lines = csv.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<&str> = lines.next().map(|l| l.split(';').collect()).unwrap_or_default();
    let last: Vec<&str> = lines.next_back().map(|l| l.split(';').collect()).unwrap_or_default();
    let stats = header.iter().zip(last.iter()).map(|(k, v)| (k.to_string(), v.to_string())).collect();
    SippRun {
        code: status.and_then(|s| s.code()),
        elapsed,
        stats,
        messages: read(&messages),
        errors: read(&errors),
        screen,
    }
}

// ---------------------------------------------------------------- capture

/// A dumpcap capture of some UDP ports on `lo`, dissected with tshark afterwards.
pub struct SipCapture {
    proc: Proc,
    pcap: PathBuf,
    tshark: PathBuf,
}

/// One UDP datagram as tshark dissects it.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    pub number: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// The request method, if a SIP request.
    pub method: String,
    /// The status code, if a SIP response.
    pub status: Option<u16>,
    /// The CSeq method, if SIP.
    pub cseq_method: String,
    pub rtp_pt: Option<u8>,
    pub rtp_ssrc: String,
}

impl Frame {
    pub fn is_sip(&self) -> bool {
        !self.method.is_empty() || self.status.is_some()
    }

    pub fn describe(&self) -> String {
        let what = match (self.method.as_str(), self.status) {
            ("", Some(s)) => format!("{s} ({})", self.cseq_method),
            ("", None) => format!("RTP pt={:?} ssrc={}", self.rtp_pt, self.rtp_ssrc),
            (m, _) => m.to_string(),
        };
        format!("#{:<5} {:>5} -> {:<5} {what}", self.number, self.src_port, self.dst_port)
    }
}

/// What a capture saw.
pub struct SipDissected {
    pub frames: Vec<Frame>,
    /// Frames tshark flags as malformed or with expert errors.
    pub malformed: String,
}

impl SipDissected {
    /// The SIP ladder, one line per message.
    pub fn ladder(&self) -> String {
        self.frames.iter().filter(|f| f.is_sip()).map(Frame::describe).collect::<Vec<_>>().join("\n")
    }

    pub fn rtp_from(&self, src_port: u16) -> Vec<&Frame> {
        self.frames.iter().filter(|f| f.src_port == src_port && f.rtp_pt.is_some()).collect()
    }

    pub fn rtp_to(&self, dst_port: u16) -> Vec<&Frame> {
        self.frames.iter().filter(|f| f.dst_port == dst_port && f.rtp_pt.is_some()).collect()
    }
}

impl SipCapture {
    /// Starts capturing `udp port P or ...` on lo, or says why not and returns
    /// `None` (capturing needs root, dumpcap and tshark).
    pub fn start(dir: &Path, ports: &[u16], media: (u16, u16)) -> Option<SipCapture> {
        let pcap = dir.join("sip.pcapng");
        let mut filter = ports.iter().map(|p| format!("udp port {p}")).collect::<Vec<_>>().join(" or ");
        filter.push_str(&format!(" or udp portrange {}-{}", media.0, media.1));
        let (proc, tshark) = start_dumpcap(&pcap, &filter, 60)?;
        Some(SipCapture { proc, pcap, tshark })
    }

    /// Stops the capture and dissects it, decoding `sip_port` as SIP and the
    /// switch's `rtp_ports` as RTP (not well-known ports, so tshark would not guess).
    pub fn finish(mut self, sip_port: u16, rtp_ports: (u16, u16)) -> SipDissected {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.proc.child.id().to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !matches!(self.proc.child.try_wait(), Ok(Some(_))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let sip = format!("udp.port=={sip_port},sip");
        let rtp = format!("udp.port=={}-{},rtp", rtp_ports.0, rtp_ports.1);
        let read = |extra: &[&str]| -> String {
            let mut child = Command::new(&self.tshark)
                .args(["-n", "-r"])
                .arg(&self.pcap)
                .args(["-d", &sip, "-d", &rtp])
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("run tshark -r");
            let mut out = String::new();
            let _ = child.stdout.take().unwrap().read_to_string(&mut out);
            let status = child.wait().expect("wait for tshark");
            assert!(status.success(), "tshark -r {} {extra:?} failed", self.pcap.display());
            out
        };
        let fields = [
            "frame.number",
            "udp.srcport",
            "udp.dstport",
            "sip.Method",
            "sip.Status-Code",
            "sip.CSeq.method",
            "rtp.p_type",
            "rtp.ssrc",
        ];
        let mut args = vec!["-T", "fields", "-E", "separator=/t", "-E", "occurrence=f"];
        for f in &fields {
            args.extend(["-e", f]);
        }
        let frames = read(&args).lines().filter_map(parse_frame).collect();
        let malformed = read(&["-Y", "_ws.malformed || _ws.expert.severity >= error"]);
        SipDissected { frames, malformed }
    }
}

fn parse_frame(line: &str) -> Option<Frame> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 8 {
        return None;
    }
    Some(Frame {
        number: f[0].trim().parse().ok()?,
        src_port: f[1].trim().parse().ok()?,
        dst_port: f[2].trim().parse().ok()?,
        method: f[3].trim().to_string(),
        status: f[4].trim().parse().ok(),
        cseq_method: f[5].trim().to_string(),
        rtp_pt: f[6].trim().parse().ok(),
        rtp_ssrc: f[7].trim().to_string(),
    })
}

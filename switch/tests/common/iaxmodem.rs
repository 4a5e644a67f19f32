//! Shared by the iaxmodem interop tests (`interop_iaxmodem.rs`, `interop_iaxmodem_call.rs`):
//! the live `switch` binary with its JSON event log, a real iaxmodem 1.2.0
//! (Debian package) against a temp config, its Hayes AT interface on a pty,
//! and an optional tshark capture of the exchange on `lo`.
//!
//! Every process is killed on drop and every temp directory removed on drop.
//!
//! Facts about iaxmodem this module relies on (from its README and source):
//! * it reads `/etc/iaxmodem/NAME`; `../..` + an absolute path as NAME lets the
//!   file live in a temp directory;
//! * it logs informational lines (`Dialing`, `Remote answered.`, `Rejected call.`,
//!   `Remote hangup.`, `Incoming call connected`, `Answering`) on stdout, which
//!   is fully buffered when not a terminal, and errors (`Registration failed.`)
//!   on stderr; it is started under `stdbuf -oL` so its stdout can be followed;
//! * `device` is a symlink it creates to the slave side of a pty it opens.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

// ---------------------------------------------------------------- processes and files

/// A child process that is killed when dropped.
pub struct Proc {
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!("switch-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin"), PathBuf::from("/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Port ranges handed out in this process for something that binds them
/// later, a few at a time (a switch's `rtp_ports`, a pair per call): a port
/// picked afterwards must not fall inside one, or the switch finds it taken
/// in the middle of a test.
static RESERVED: std::sync::Mutex<Vec<std::ops::RangeInclusive<u16>>> = std::sync::Mutex::new(Vec::new());

/// Keeps `first ..= last` out of what [`free_udp_port`] and later
/// reservations hand out; false when part of it already is.
pub fn reserve_ports(first: u16, last: u16) -> bool {
    let mut reserved = RESERVED.lock().unwrap_or_else(|e| e.into_inner());
    if reserved.iter().any(|r| first <= *r.end() && *r.start() <= last) {
        return false;
    }
    reserved.push(first..=last);
    true
}

/// A UDP port on 127.0.0.1 that was free a moment ago, outside the reserved ranges.
pub fn free_udp_port() -> u16 {
    loop {
        let port = UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("bind an ephemeral port").port();
        if reserve_ports(port, port) {
            return port;
        }
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|s| s.local_addr()).expect("bind an ephemeral port").port()
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

fn id(flag: &str) -> Option<String> {
    let out = Command::new("id").arg(flag).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// Sends `signal` (e.g. "INT") to a process we started.
fn signal(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Waits up to `timeout` for `child` to exit.
fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------- the switch's event log

/// Removes ANSI colour sequences (the log writer may colour its output).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The event a `switch::event` log line carries, if it is one.
pub fn event_of(line: &str) -> Option<Value> {
    let line = strip_ansi(line);
    let start = line.find("{\"event\":")?;
    serde_json::from_str(line[start..].trim_end()).ok()
}

/// Collects a reader's lines into `log`, forwarding switch events to `events`.
pub fn pump(reader: impl Read + Send + 'static, log: Arc<Mutex<Vec<String>>>, events: Option<mpsc::Sender<Value>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if let (Some(tx), Some(ev)) = (&events, event_of(&line)) {
                let _ = tx.send(ev);
            }
            log.lock().unwrap().push(line);
        }
    });
}

// ---------------------------------------------------------------- switch

/// What goes into the switch's iax.conf and switch.toml: one `[iaxmodem]` friend.
pub struct SwitchConfig<'a> {
    pub port: u16,
    pub requirecalltoken: &'a str,
    pub secret: &'a str,
    /// The friend's `context=`.
    pub context: &'a str,
    /// The control socket's port on 127.0.0.1; `None` writes `listen = "off"`.
    pub control: Option<u16>,
    /// `[dialplan.CONTEXT]` entries for `context`: (extension, application).
    pub dialplan: &'a [(&'a str, &'a str)],
}

impl SwitchConfig<'_> {
    pub fn write(&self, dir: &Path) {
        std::fs::write(
            dir.join("iax.conf"),
            format!(
                "[general]\nbindaddr=127.0.0.1\nbindport={port}\nrequirecalltoken={token}\n\
                 minregexpire=60\nmaxregexpire=3600\n\n\
                 [iaxmodem]\ntype=friend\nhost=dynamic\nsecret={secret}\nauth=md5\ncontext={context}\n\
                 requirecalltoken={token}\n",
                port = self.port,
                token = self.requirecalltoken,
                secret = self.secret,
                context = self.context,
            ),
        )
        .expect("write iax.conf");
        let mut toml = match self.control {
            Some(port) => format!("[control]\nlisten = \"127.0.0.1:{port}\"\n"),
            None => "[control]\nlisten = \"off\"\n".to_string(),
        };
        if !self.dialplan.is_empty() {
            toml.push_str(&format!("\n[dialplan.{}]\n", self.context));
            for (exten, app) in self.dialplan {
                toml.push_str(&format!("\"{exten}\" = \"{app}\"\n"));
            }
        }
        std::fs::write(dir.join("switch.toml"), toml).expect("write switch.toml");
    }
}

/// A running `switch run --config DIR`, with its event stream.
pub struct Switch {
    proc: Proc,
    events: Receiver<Value>,
    pub seen: Vec<Value>,
    log: Arc<Mutex<Vec<String>>>,
    control: Option<SocketAddr>,
}

impl Switch {
    /// Starts the switch on `config`; `control` is the control port written there, if any.
    pub fn start(config: &Path, control: Option<u16>) -> Switch {
        let mut child = Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(["run", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the switch binary");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, events) = mpsc::channel();
        pump(child.stdout.take().unwrap(), log.clone(), Some(tx.clone()));
        pump(child.stderr.take().unwrap(), log.clone(), Some(tx));
        let mut switch = Switch {
            proc: Proc { child },
            events,
            seen: Vec::new(),
            log,
            control: control.map(|p| SocketAddr::from(([127, 0, 0, 1], p))),
        };
        if switch.wait_for(Duration::from_secs(10), |e| e["event"] == "started").is_none() {
            panic!("the switch did not start within 10 s; its output:\n{}", switch.output());
        }
        switch
    }

    /// Stops the process now (as a crash or `kill -9` would), keeping what it logged.
    pub fn kill(&mut self) {
        let _ = self.proc.child.kill();
        let _ = self.proc.child.wait();
    }

    /// Waits until an event satisfies `pred`; every event seen is kept in `seen`.
    pub fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        if let Some(e) = self.seen.iter().find(|e| pred(e)) {
            return Some(e.clone());
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.events.recv_timeout(left) {
                Ok(e) => {
                    self.seen.push(e.clone());
                    if pred(&e) {
                        return Some(e);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // The process ended: nothing more will come.
                    let _ = self.proc.child.try_wait();
                    return None;
                }
            }
        }
    }

    /// Takes in whatever events arrive within `d` (to check for what must NOT happen).
    pub fn settle(&mut self, d: Duration) {
        let _ = self.wait_for(d, |_| false);
    }

    pub fn named(&self, name: &str) -> Vec<&Value> {
        self.seen.iter().filter(|e| e["event"] == name).collect()
    }

    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Runs `switch ctl --control ADDR LINE` and returns what it printed (bounded to 5 s).
    pub fn ctl(&self, line: &str) -> String {
        let addr = self.control.expect("the switch was started without a control socket");
        let mut child = Command::new(env!("CARGO_BIN_EXE_switch"))
            .args(["ctl", "--control", &addr.to_string()])
            .args(line.split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn switch ctl");
        let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut proc = Proc { child };
        if !wait_exit(&mut proc.child, Duration::from_secs(5)) {
            drop(proc);
            panic!("`switch ctl {line}` did not finish within 5 s");
        }
        reader.join().unwrap_or_default()
    }
}

// ---------------------------------------------------------------- iaxmodem

/// The iaxmodem binary, or `None` (after saying why) when this host cannot run the test.
pub fn iaxmodem() -> Option<PathBuf> {
    let Some(binary) = find_in_path("iaxmodem") else {
        eprintln!("SKIPPED: iaxmodem is not installed (apt-get install iaxmodem); the interop test did not run");
        return None;
    };
    if !Path::new("/etc/iaxmodem").is_dir() {
        eprintln!("SKIPPED: /etc/iaxmodem does not exist (iaxmodem resolves its config file below it)");
        return None;
    }
    Some(binary)
}

/// A running iaxmodem registering as `peername`/`secret` to 127.0.0.1:`server_port`.
pub struct Modem {
    _proc: Proc,
    pub port: u16,
    /// The pty symlink (`device` in its config).
    pub device: PathBuf,
    /// Whether stdout is line-buffered (`stdbuf -oL`), so its info lines can be followed live.
    pub live_stdout: bool,
    log: Arc<Mutex<Vec<String>>>,
}

impl Modem {
    /// Starts iaxmodem with `codec` (`slinear`, `ulaw` or `alaw`: its preferred format).
    pub fn start(binary: &Path, dir: &Path, server_port: u16, peername: &str, secret: &str, codec: &str) -> Modem {
        let port = free_udp_port();
        let user = id("-un").unwrap_or_else(|| "root".into());
        let group = id("-gn").unwrap_or_else(|| "root".into());
        let config = dir.join("iaxmodem.cfg");
        let device = dir.join("ttyIAX");
        std::fs::write(
            &config,
            format!(
                "device\t{dev}\nowner\t{user}:{group}\nmode\t600\nport\t{port}\nrefresh\t60\n\
                 server\t127.0.0.1:{server_port}\npeername\t{peername}\nsecret\t{secret}\n\
                 cidname\tInterop Test\ncidnumber\t100\ncodec\t{codec}\n",
                dev = device.display()
            ),
        )
        .expect("write the iaxmodem config");
        // iaxmodem opens /etc/iaxmodem/NAME; climb out of it to our file.
        let name = format!("../..{}", config.display());
        let stdbuf = find_in_path("stdbuf");
        let mut command = match &stdbuf {
            Some(stdbuf) => {
                let mut c = Command::new(stdbuf);
                c.arg("-oL").arg(binary);
                c
            }
            None => Command::new(binary),
        };
        let mut child = command
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn iaxmodem");
        let log = Arc::new(Mutex::new(Vec::new()));
        pump(child.stdout.take().unwrap(), log.clone(), None);
        pump(child.stderr.take().unwrap(), log.clone(), None);
        Modem { _proc: Proc { child }, port, device, live_stdout: stdbuf.is_some(), log }
    }

    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until iaxmodem has logged a line containing `text`.
    pub fn wait_for_line(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Opens the modem's AT interface.
    pub fn open_pty(&self) -> std::io::Result<Pty> {
        Pty::open(&self.device)
    }
}

// ---------------------------------------------------------------- the AT interface

/// The DTE side of iaxmodem's pty: write AT commands, read result codes.
pub struct Pty {
    file: File,
    out: Vec<u8>,
    /// Where the next `expect` starts looking.
    mark: usize,
}

impl Pty {
    /// Opens `device` (the symlink iaxmodem made) non-blocking, in raw mode without echo.
    pub fn open(device: &Path) -> std::io::Result<Pty> {
        use std::os::unix::fs::OpenOptionsExt;
        // Linux O_NOCTTY | O_NONBLOCK: never become our controlling terminal, never block.
        const O_NOCTTY: i32 = 0o400;
        const O_NONBLOCK: i32 = 0o4000;
        let file =
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(O_NOCTTY | O_NONBLOCK).open(device)?;
        // A fax application sets the tty raw; with the default line discipline
        // the slave would echo the modem's own answers back into its AT parser.
        let status = Command::new("stty").arg("-F").arg(device).args(["raw", "-echo"]).status()?;
        if !status.success() {
            return Err(std::io::Error::other(format!("stty -F {} raw -echo failed", device.display())));
        }
        Ok(Pty { file, out: Vec::new(), mark: 0 })
    }

    /// Sends an AT command line (a CR is appended).
    pub fn send(&mut self, line: &str) {
        self.pump();
        self.mark = self.out.len();
        self.file.write_all(format!("{line}\r").as_bytes()).expect("write to the modem pty");
    }

    /// Reads whatever the modem wrote so far.
    fn pump(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => self.out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // WouldBlock: nothing more now; EIO: iaxmodem went away.
                Err(_) => break,
            }
        }
    }

    /// Waits until the modem's output since the last command or match contains `text`.
    pub fn expect(&mut self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump();
            let tail = String::from_utf8_lossy(&self.out[self.mark..]).into_owned();
            if let Some(at) = tail.find(text) {
                self.mark += at + text.len();
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the first of `texts`; returns it.
    pub fn expect_any<'t>(&mut self, texts: &[&'t str], timeout: Duration) -> Option<&'t str> {
        let deadline = Instant::now() + timeout;
        loop {
            self.pump();
            let tail = String::from_utf8_lossy(&self.out[self.mark..]).into_owned();
            let first = texts.iter().filter_map(|t| tail.find(t).map(|at| (at, *t))).min_by_key(|(at, _)| *at);
            if let Some((at, t)) = first {
                self.mark += at + t.len();
                return Some(t);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the modem wrote, with CR and LF made visible.
    pub fn transcript(&mut self) -> String {
        self.pump();
        String::from_utf8_lossy(&self.out).replace('\r', "\\r").replace('\n', "\\n")
    }
}

// ---------------------------------------------------------------- capture

/// A dumpcap capture of `udp port PORT` on `lo`, dissected with tshark afterwards.
pub struct Capture {
    proc: Proc,
    pcap: PathBuf,
    port: u16,
    tshark: PathBuf,
}

/// One IAX2 packet as tshark dissects it.
#[derive(Debug, Clone, Default)]
pub struct Packet {
    pub number: u32,
    pub time: f64,
    pub src_port: u16,
    pub src_ip: String,
    /// 1 full frame, 0 mini frame.
    pub full: bool,
    /// tshark's `iax2.packet_type`: 0 mini, 1 full, 2 mini video, 3 meta trunk.
    pub packet_type: Option<u32>,
    /// Frame type (2 voice, 4 control, 6 IAX).
    pub ftype: Option<u32>,
    pub iax_subclass: Option<u32>,
    pub control_subclass: Option<u32>,
    pub voice_subclass: Option<u32>,
    pub format: Option<u64>,
    pub capability: Option<u64>,
    pub username: String,
    pub called_number: String,
    pub calling_number: String,
    pub cause: String,
    pub causecode: Option<u32>,
    /// IE identifiers in frame order.
    pub ies: Vec<u32>,
    /// The R bit: a full frame sent again because no ACK came.
    pub retransmitted: bool,
}

impl Packet {
    pub fn is_iax(&self, subclass: u32) -> bool {
        self.full && self.ftype == Some(6) && self.iax_subclass == Some(subclass)
    }

    pub fn is_control(&self, subclass: u32) -> bool {
        self.full && self.ftype == Some(4) && self.control_subclass == Some(subclass)
    }

    /// A short name: NEW, ACCEPT, RINGING, VOICE, mini, ...
    pub fn name(&self) -> String {
        if !self.full {
            return "mini".into();
        }
        match (self.ftype, self.iax_subclass, self.control_subclass) {
            (Some(6), Some(s), _) => iax_name(s).map_or(format!("IAX({s})"), str::to_string),
            (Some(4), _, Some(3)) => "RINGING".into(),
            (Some(4), _, Some(4)) => "ANSWER".into(),
            (Some(4), _, Some(1)) => "HANGUP(control)".into(),
            (Some(4), _, Some(s)) => format!("CONTROL({s})"),
            (Some(2), _, _) => format!("VOICE(0x{:x})", self.voice_subclass.unwrap_or(0)),
            (t, _, _) => format!("type {t:?}"),
        }
    }

    /// One line for a report: direction, name and the IEs that matter.
    pub fn describe(&self, switch_port: u16) -> String {
        let dir = if self.src_port == switch_port { "switch -> modem " } else { "modem  -> switch" };
        let mut s = format!("#{:<4} {:>7.3}s {dir} {}", self.number, self.time, self.name());
        if self.retransmitted {
            s.push_str(" (retransmitted)");
        }
        if let Some(f) = self.format {
            s.push_str(&format!(" FORMAT=0x{f:x}"));
        }
        if let Some(c) = self.capability {
            s.push_str(&format!(" CAPABILITY=0x{c:x}"));
        }
        for (k, v) in [("USERNAME", &self.username), ("CALLED", &self.called_number), ("CALLING", &self.calling_number)]
        {
            if !v.is_empty() {
                s.push_str(&format!(" {k}={v}"));
            }
        }
        if !self.cause.is_empty() {
            s.push_str(&format!(" CAUSE={:?}", self.cause));
        }
        if let Some(c) = self.causecode {
            s.push_str(&format!(" CAUSECODE={c}"));
        }
        if !self.ies.is_empty() {
            s.push_str(&format!(" ies={:?}", self.ies));
        }
        s
    }
}

fn iax_name(subclass: u32) -> Option<&'static str> {
    Some(match subclass {
        1 => "NEW",
        2 => "PING",
        3 => "PONG",
        4 => "ACK",
        5 => "HANGUP",
        6 => "REJECT",
        7 => "ACCEPT",
        8 => "AUTHREQ",
        9 => "AUTHREP",
        10 => "INVAL",
        11 => "LAGRQ",
        12 => "LAGRP",
        13 => "REGREQ",
        14 => "REGAUTH",
        15 => "REGACK",
        16 => "REGREJ",
        17 => "REGREL",
        18 => "VNAK",
        40 => "CALLTOKEN",
        _ => return None,
    })
}

/// What a capture saw.
pub struct Dissected {
    pub packets: Vec<Packet>,
    /// Lines tshark flags as malformed or with expert errors.
    pub malformed: String,
}

impl Dissected {
    /// Full frames other than ACKs and voice: the signalling ladder.
    pub fn signalling(&self) -> impl Iterator<Item = &Packet> {
        self.packets.iter().filter(|p| p.full && !p.is_iax(4) && p.ftype != Some(2))
    }

    pub fn ladder(&self, switch_port: u16) -> String {
        self.signalling().map(|p| p.describe(switch_port)).collect::<Vec<_>>().join("\n")
    }

    /// Voice packets (full, mini and trunk) sent from `ip`.
    pub fn voice_from_ip(&self, ip: &str) -> usize {
        self.packets.iter().filter(|p| p.src_ip == ip && (!p.full || p.ftype == Some(2))).count()
    }

    /// Voice packets (full and mini) sent from `src_port`.
    pub fn voice_from(&self, src_port: u16) -> usize {
        self.packets.iter().filter(|p| p.src_port == src_port && (!p.full || p.ftype == Some(2))).count()
    }
}

/// Starts dumpcap on lo with `filter`, writing `pcap`, for at most `seconds`;
/// returns it once it captures, and where tshark is. `None`, with a NOTE on
/// stderr, when capturing is impossible here (no root, no dumpcap/tshark).
pub fn start_dumpcap(pcap: &Path, filter: &str, seconds: u32) -> Option<(Proc, PathBuf)> {
    let (Some(dumpcap), Some(tshark)) = (find_in_path("dumpcap"), find_in_path("tshark")) else {
        eprintln!("NOTE: no capture: dumpcap/tshark not installed (apt-get install tshark)");
        return None;
    };
    if !is_root() {
        eprintln!("NOTE: no capture: capturing on lo needs root");
        return None;
    }
    let mut child = Command::new(dumpcap)
        .args(["-i", "lo", "-f", filter, "-a", &format!("duration:{seconds}"), "-w"])
        .arg(pcap)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let log = Arc::new(Mutex::new(Vec::new()));
    pump(child.stderr.take().unwrap(), log.clone(), None);
    let proc = Proc { child };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !log.lock().unwrap().iter().any(|l| l.contains("Capturing on")) {
        if Instant::now() >= deadline {
            eprintln!("NOTE: no capture: dumpcap could not capture on lo:\n{}", log.lock().unwrap().join("\n"));
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // "Capturing on" comes just before the capture is live; give it a moment.
    std::thread::sleep(Duration::from_millis(300));
    Some((proc, tshark))
}

impl Capture {
    /// Starts capturing, or says why not and returns `None` (needs root, dumpcap and tshark).
    pub fn start(dir: &Path, port: u16) -> Option<Capture> {
        let pcap = dir.join("capture.pcapng");
        let (proc, tshark) = start_dumpcap(&pcap, &format!("udp port {port}"), 30)?;
        Some(Capture { proc, pcap, port, tshark })
    }

    /// Stops the capture and dissects it (the port is not 4569, so it is decoded as IAX2).
    pub fn finish(mut self) -> Dissected {
        // Let the last frames (ACKs, retransmissions) land, then stop dumpcap cleanly.
        std::thread::sleep(Duration::from_millis(300));
        signal(&self.proc.child, "INT");
        if !wait_exit(&mut self.proc.child, Duration::from_secs(5)) {
            let _ = self.proc.child.kill();
        }
        let decode_as = format!("udp.port=={},iax2", self.port);
        let read = |extra: &[&str]| -> String {
            let out = Command::new(&self.tshark)
                .args(["-n", "-r"])
                .arg(&self.pcap)
                .args(["-d", &decode_as])
                .args(extra)
                .stdin(Stdio::null())
                .output()
                .expect("run tshark -r");
            assert!(out.status.success(), "tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let fields = [
            "frame.number",
            "frame.time_relative",
            "udp.srcport",
            "iax2.packet_type",
            "iax2.type",
            "iax2.iax.subclass",
            "iax2.control.subclass",
            "iax2.voice.subclass",
            "iax2.iax.format",
            "iax2.iax.capability",
            "iax2.iax.username",
            "iax2.iax.called_number",
            "iax2.iax.calling_number",
            "iax2.iax.cause",
            "iax2.iax.causecode",
            "iax2.ie_id",
            "iax2.retransmission",
            "ip.src",
        ];
        let mut args = vec!["-T", "fields", "-E", "separator=/t", "-E", "aggregator=,"];
        for f in &fields {
            args.extend(["-e", f]);
        }
        let table = read(&args);
        let packets = table.lines().filter_map(parse_packet).collect();
        // Wireshark's dissector throws on trunk packets without per-call
        // timestamps, chan_iax2's own default ones as much as ours.
        let malformed = read(&[
            "-Y",
            "(_ws.malformed || _ws.expert.severity >= error) && !(iax2.packet_type == 3 && iax2.trunk.cmddata.ts == 0)",
        ]);
        Dissected { packets, malformed }
    }
}

fn number(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_packet(line: &str) -> Option<Packet> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() < 18 {
        return None;
    }
    let n32 = |s: &str| number(s).map(|v| v as u32);
    Some(Packet {
        number: n32(f[0])?,
        time: f[1].trim().parse().unwrap_or(0.0),
        src_port: n32(f[2])? as u16,
        full: n32(f[3]) == Some(1),
        packet_type: n32(f[3]),
        ftype: n32(f[4]),
        iax_subclass: n32(f[5]),
        control_subclass: n32(f[6]),
        voice_subclass: n32(f[7]),
        format: number(f[8]),
        capability: number(f[9]),
        username: f[10].to_string(),
        called_number: f[11].to_string(),
        calling_number: f[12].to_string(),
        cause: f[13].to_string(),
        causecode: n32(f[14]),
        ies: f[15].split(',').filter_map(n32).collect(),
        retransmitted: n32(f[16]) == Some(1),
        src_ip: f[17].trim().to_string(),
    })
}

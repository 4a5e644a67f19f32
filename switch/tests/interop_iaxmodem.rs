//! Interop with a real IAX2 client: iaxmodem 1.2.0 (Debian package `iaxmodem`,
//! built on its own copy of libiax2) registers to the `switch` binary on loopback.
//!
//! * `requirecalltoken=no`, right secret: MD5 challenge/response, REGACK
//!   (`peer_registered`).
//! * wrong secret: REGREJ (`peer_registration_refused`); iaxmodem logs
//!   "Registration failed.".
//! * `requirecalltoken=yes`: libiax2 sends no CALLTOKEN IE, so the REGREQ is
//!   refused at once with REGREJ (`call_token_required`,
//!   `peer_registration_refused`) rather than left to time out.
//!
//! Skipped (with a message, not a failure) when iaxmodem is not installed.
//! Every case is bounded to a few seconds; processes are killed on drop.
//!
//! iaxmodem reads its configuration from `/etc/iaxmodem/NAME`; the tests pass
//! `../..` + an absolute path as NAME so the file can live in a temp directory.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a case waits for the decisive event.
const DECISION: Duration = Duration::from_secs(6);

// ---------------------------------------------------------------- helpers

/// A child process that is killed when dropped.
struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
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

fn find_in_path(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// Removes ANSI colour sequences (the log writer may colour its output).
fn strip_ansi(s: &str) -> String {
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
fn event_of(line: &str) -> Option<Value> {
    let line = strip_ansi(line);
    let start = line.find("{\"event\":")?;
    serde_json::from_str(line[start..].trim_end()).ok()
}

/// Collects a reader's lines into `log`, forwarding switch events to `events`.
fn pump(
    reader: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    events: Option<mpsc::Sender<Value>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if let (Some(tx), Some(ev)) = (&events, event_of(&line)) {
                let _ = tx.send(ev);
            }
            log.lock().unwrap().push(line);
        }
    });
}

/// A running `switch run --config DIR`, with its event stream.
struct Switch {
    proc: Proc,
    events: Receiver<Value>,
    seen: Vec<Value>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Switch {
    fn start(config: &Path) -> Switch {
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
        };
        if switch
            .wait_for(Duration::from_secs(10), |e| e["event"] == "started")
            .is_none()
        {
            panic!(
                "the switch did not start within 10 s; its output:\n{}",
                switch.output()
            );
        }
        switch
    }

    /// Waits until an event satisfies `pred`; every event seen is kept in `seen`.
    fn wait_for(&mut self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
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
    fn settle(&mut self, d: Duration) {
        let _ = self.wait_for(d, |_| false);
    }

    fn named(&self, name: &str) -> Vec<&Value> {
        self.seen.iter().filter(|e| e["event"] == name).collect()
    }

    fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

/// A running iaxmodem registering as `peername`/`secret` to 127.0.0.1:`server_port`.
struct Modem {
    _proc: Proc,
    port: u16,
    log: Arc<Mutex<Vec<String>>>,
}

impl Modem {
    fn start(binary: &Path, dir: &Path, server_port: u16, peername: &str, secret: &str) -> Modem {
        let port = free_udp_port();
        let user = id("-un").unwrap_or_else(|| "root".into());
        let group = id("-gn").unwrap_or_else(|| "root".into());
        let config = dir.join("iaxmodem.cfg");
        std::fs::write(
            &config,
            format!(
                "device\t{dev}\nowner\t{user}:{group}\nmode\t600\nport\t{port}\nrefresh\t60\n\
                 server\t127.0.0.1:{server_port}\npeername\t{peername}\nsecret\t{secret}\n\
                 cidname\tInterop Test\ncidnumber\t100\ncodec\tulaw\n",
                dev = dir.join("ttyIAX").display()
            ),
        )
        .expect("write the iaxmodem config");
        // iaxmodem opens /etc/iaxmodem/NAME; climb out of it to our file.
        let name = format!("../..{}", config.display());
        let mut child = Command::new(binary)
            .arg(name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn iaxmodem");
        let log = Arc::new(Mutex::new(Vec::new()));
        pump(child.stdout.take().unwrap(), log.clone(), None);
        pump(child.stderr.take().unwrap(), log.clone(), None);
        Modem {
            _proc: Proc { child },
            port,
            log,
        }
    }

    fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Waits until iaxmodem has logged a line containing `text`.
    fn wait_for_line(&self, text: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log.lock().unwrap().iter().any(|l| l.contains(text)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

fn id(flag: &str) -> Option<String> {
    let out = Command::new("id").arg(flag).output().ok()?;
    let s = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

/// The iaxmodem binary, or `None` (after saying why) when this host cannot run the test.
fn iaxmodem() -> Option<PathBuf> {
    let Some(binary) = find_in_path("iaxmodem") else {
        eprintln!("SKIPPED: iaxmodem is not installed (apt-get install iaxmodem); the interop test did not run");
        return None;
    };
    if !Path::new("/etc/iaxmodem").is_dir() {
        eprintln!(
            "SKIPPED: /etc/iaxmodem does not exist (iaxmodem resolves its config file below it)"
        );
        return None;
    }
    Some(binary)
}

/// Writes the switch's configuration: iax.conf with one `[iaxmodem]` friend, no control socket.
fn switch_config(dir: &Path, port: u16, requirecalltoken: &str, secret: &str) {
    std::fs::write(
        dir.join("iax.conf"),
        format!(
            "[general]\nbindaddr=127.0.0.1\nbindport={port}\nrequirecalltoken={requirecalltoken}\n\
             minregexpire=60\nmaxregexpire=3600\n\n\
             [iaxmodem]\ntype=friend\nhost=dynamic\nsecret={secret}\nauth=md5\ncontext=fax\n"
        ),
    )
    .expect("write iax.conf");
    std::fs::write(dir.join("switch.toml"), "[control]\nlisten = \"off\"\n")
        .expect("write switch.toml");
}

struct Case {
    switch: Switch,
    modem: Modem,
    _dir: TempDir,
}

/// Starts a switch (secret `switch_secret`) and an iaxmodem (secret `modem_secret`)
/// and waits for the switch to accept or refuse the registration.
fn run_case(
    tag: &str,
    binary: &Path,
    requirecalltoken: &str,
    switch_secret: &str,
    modem_secret: &str,
) -> Case {
    let dir = TempDir::new(tag);
    let switch_dir = dir.0.join("switch");
    std::fs::create_dir_all(&switch_dir).unwrap();
    let port = free_udp_port();
    switch_config(&switch_dir, port, requirecalltoken, switch_secret);
    let mut switch = Switch::start(&switch_dir);
    let modem = Modem::start(binary, &dir.0, port, "iaxmodem", modem_secret);
    let decided = switch.wait_for(DECISION, |e| {
        e["event"] == "peer_registered" || e["event"] == "peer_registration_refused"
    });
    if decided.is_none() {
        panic!(
            "{tag}: no peer_registered / peer_registration_refused within {DECISION:?}\n\
             --- switch output ---\n{}\n--- iaxmodem output ---\n{}",
            switch.output(),
            modem.output()
        );
    }
    Case {
        switch,
        modem,
        _dir: dir,
    }
}

fn context(case: &Case) -> String {
    format!(
        "\n--- switch output ---\n{}\n--- iaxmodem output ---\n{}",
        case.switch.output(),
        case.modem.output()
    )
}

// ---------------------------------------------------------------- cases

#[test]
fn iaxmodem_registers_with_md5() {
    let Some(binary) = iaxmodem() else { return };
    let mut case = run_case("iaxmodem-ok", &binary, "no", "s3cret-fax", "s3cret-fax");
    let ok = case
        .switch
        .wait_for(Duration::ZERO, |e| e["event"] == "peer_registered");
    let Some(ok) = ok else {
        panic!("iaxmodem was not registered{}", context(&case))
    };
    assert_eq!(ok["peer"], "iaxmodem", "{}", context(&case));
    assert_eq!(
        ok["addr"],
        format!("127.0.0.1:{}", case.modem.port),
        "{}",
        context(&case)
    );
    let expiry = ok["expiry"].as_u64().unwrap_or(0);
    assert!(
        (60..=3600).contains(&expiry),
        "expiry {expiry} outside min/maxregexpire{}",
        context(&case)
    );
    case.switch.settle(Duration::from_millis(500));
    assert!(
        case.switch.named("peer_registration_refused").is_empty(),
        "unexpected refusal{}",
        context(&case)
    );
    assert!(
        !case.modem.output().contains("Registration failed"),
        "iaxmodem reports a failed registration{}",
        context(&case)
    );
}

#[test]
fn iaxmodem_with_wrong_secret_is_refused() {
    let Some(binary) = iaxmodem() else { return };
    let mut case = run_case(
        "iaxmodem-badsecret",
        &binary,
        "no",
        "s3cret-fax",
        "not-the-secret",
    );
    let refused = case.switch.wait_for(Duration::ZERO, |e| {
        e["event"] == "peer_registration_refused"
    });
    let Some(refused) = refused else {
        panic!("iaxmodem was not refused{}", context(&case))
    };
    assert_eq!(refused["peer"], "iaxmodem", "{}", context(&case));
    assert!(
        case.modem
            .wait_for_line("Registration failed", Duration::from_secs(3)),
        "iaxmodem did not see a REGREJ{}",
        context(&case)
    );
    case.switch.settle(Duration::from_millis(300));
    assert!(
        case.switch.named("peer_registered").is_empty(),
        "registered with a wrong secret{}",
        context(&case)
    );
}

#[test]
fn iaxmodem_without_call_token_support_is_refused_cleanly() {
    let Some(binary) = iaxmodem() else { return };
    let mut case = run_case(
        "iaxmodem-calltoken",
        &binary,
        "yes",
        "s3cret-fax",
        "s3cret-fax",
    );
    let refused = case.switch.wait_for(Duration::ZERO, |e| {
        e["event"] == "peer_registration_refused"
    });
    let Some(refused) = refused else {
        panic!("iaxmodem was not refused{}", context(&case))
    };
    let cause = refused["cause"]
        .as_str()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(
        cause.contains("token"),
        "refusal cause does not name the call token: {cause:?}{}",
        context(&case)
    );
    assert!(
        case.switch
            .wait_for(Duration::from_secs(1), |e| e["event"]
                == "call_token_required")
            .is_some(),
        "no call_token_required event{}",
        context(&case)
    );
    // Clean: a REGREJ the client understands at once, not silence until it times out.
    assert!(
        case.modem
            .wait_for_line("Registration failed", Duration::from_secs(3)),
        "iaxmodem did not receive a REGREJ{}",
        context(&case)
    );
    case.switch.settle(Duration::from_millis(300));
    assert!(
        case.switch.named("peer_registered").is_empty(),
        "registered without a call token{}",
        context(&case)
    );
}

#[test]
fn log_lines_yield_events() {
    let line = "2026-01-01T00:00:00Z  INFO switch::event: {\"event\":\"started\",\"bind\":\"127.0.0.1:4569\"}";
    assert_eq!(event_of(line).unwrap()["event"], "started");
    let coloured =
        "\u{1b}[32m INFO\u{1b}[0m \u{1b}[2mswitch::event\u{1b}[0m: {\"event\":\"peer_registered\"}";
    assert_eq!(event_of(coloured).unwrap()["event"], "peer_registered");
    assert!(event_of("INFO switch: control socket on 127.0.0.1:5039").is_none());
}

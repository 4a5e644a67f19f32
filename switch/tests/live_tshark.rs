//! The live switch answers a POKE with a PONG on a real UDP socket: what
//! `nmap -sU --script iax2-version` sends to find IAX2 servers.
//!
//! When tshark is installed and the test runs as root, the exchange is also
//! captured on `lo` and dissected: no malformed packets, and Wireshark's IAX2
//! dissector names both frames POKE and PONG.

#[path = "common/iaxmodem.rs"]
#[allow(dead_code)]
mod common;

use common::{find_in_path, free_udp_port, is_root, TempDir};
use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

/// The probe: a 12-byte IAX2 full frame (F bit + source call 1, destination
/// call 0, timestamp 0, oseqno 0, iseqno 0, type 6 IAX, subclass 0x1e POKE).
const POKE: [u8; 12] = [0x80, 0x01, 0x00, 0x00, 0, 0, 0, 0, 0x00, 0x00, 0x06, 0x1e];

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's output, sent as they come.
fn lines_of(reader: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(reader).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_line(rx: &Receiver<String>, timeout: Duration, seen: &mut Vec<String>, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = pred(&line);
                seen.push(line);
                if hit {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// Starts `switch run` bound to 127.0.0.1:`port`; returns once it logged `started`.
fn start_switch(dir: &Path, port: u16) -> (Proc, Receiver<String>, Vec<String>) {
    std::fs::write(dir.join("iax.conf"), format!("[general]\nbindaddr=127.0.0.1\nbindport={port}\n"))
        .expect("write iax.conf");
    std::fs::write(dir.join("switch.toml"), "[control]\nlisten = \"off\"\n").expect("write switch.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switch"))
        .args(["run", "--config"])
        .arg(dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the switch binary");
    let log = lines_of(child.stderr.take().unwrap());
    let proc = Proc(child);
    let mut seen = Vec::new();
    let started = wait_line(&log, Duration::from_secs(10), &mut seen, |l| l.contains("{\"event\":\"started\""));
    assert!(started, "the switch did not start within 10 s; its output:\n{}", seen.join("\n"));
    (proc, log, seen)
}

/// Sends POKE from a fresh socket and returns the first answer (within 2 s, 3 tries).
fn poke(port: u16) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind client socket");
    sock.set_read_timeout(Some(Duration::from_millis(700))).unwrap();
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&POKE, ("127.0.0.1", port)).expect("send POKE");
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

fn assert_pong(reply: &[u8]) {
    assert!(reply.len() >= 12, "reply too short for a full frame: {reply:02x?}");
    assert!(reply[0] & 0x80 != 0, "reply is not a full frame: {reply:02x?}");
    let dst_call = u16::from_be_bytes([reply[2], reply[3]]) & 0x7fff;
    assert_eq!(dst_call, 1, "PONG must go to our source call number 1: {reply:02x?}");
    assert_eq!(reply[10], 6, "frame type must be 6 (IAX): {reply:02x?}");
    assert_eq!(reply[11], 3, "subclass must be 3 (PONG): {reply:02x?}");
    assert_eq!(reply[9], 1, "iseqno must acknowledge our oseqno 0: {reply:02x?}");
}

#[test]
fn poke_gets_pong() {
    let dir = TempDir::new("poke");
    let port = free_udp_port();
    let (_switch, _log, _seen) = start_switch(&dir.0, port);
    let reply = poke(port).expect("no answer to POKE within 2 s");
    assert_pong(&reply);
}

#[test]
fn poke_and_pong_dissect_cleanly_in_tshark() {
    let Some(tshark) = find_in_path("tshark") else {
        eprintln!("SKIPPED: tshark is not installed (apt-get install tshark)");
        return;
    };
    if !is_root() {
        eprintln!("SKIPPED: capturing on lo needs root");
        return;
    }
    let dir = TempDir::new("tshark");
    let port = free_udp_port();
    let (_switch, _log, _seen) = start_switch(&dir.0, port);

    let pcap = dir.0.join("poke.pcap");
    let mut child = Command::new(&tshark)
        .args(["-i", "lo", "-f", &format!("udp port {port}"), "-a", "duration:6", "-w"])
        .arg(&pcap)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tshark");
    let err = lines_of(child.stderr.take().unwrap());
    let mut capture = Proc(child);
    let mut said = Vec::new();
    if !wait_line(&err, Duration::from_secs(10), &mut said, |l| l.contains("Capturing on")) {
        eprintln!("SKIPPED: tshark could not capture on lo:\n{}", said.join("\n"));
        return;
    }
    // "Capturing on" comes just before the capture is live; give it a moment.
    std::thread::sleep(Duration::from_millis(500));
    let reply = poke(port).expect("no answer to POKE within 2 s");
    assert_pong(&reply);
    // tshark stops by itself after -a duration; wait for it to flush the file.
    let deadline = Instant::now() + Duration::from_secs(15);
    while capture.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = capture.0.try_wait();

    // The port is not 4569, so tell the dissector the traffic is IAX2.
    let decode_as = format!("udp.port=={port},iax2");
    let read = |extra: &[&str]| -> String {
        let out = Command::new(&tshark)
            .args(["-n", "-r"])
            .arg(&pcap)
            .args(["-d", &decode_as])
            .args(extra)
            .output()
            .expect("run tshark -r");
        assert!(out.status.success(), "tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let summary = read(&[]);
    let malformed = read(&["-Y", "_ws.malformed || _ws.expert.severity >= error"]);
    assert!(malformed.trim().is_empty(), "tshark reports malformed frames:\n{malformed}\nin:\n{summary}");
    let poke_line = summary.lines().find(|l| l.contains("POKE"));
    let pong_line = summary.lines().find(|l| l.contains("PONG"));
    assert!(poke_line.is_some() && pong_line.is_some(), "tshark does not name POKE and PONG:\n{summary}");
    let fields = read(&["-T", "fields", "-e", "iax2.type", "-e", "iax2.iax.subclass"]);
    let pairs: Vec<&str> = fields.lines().map(str::trim).collect();
    assert!(pairs.contains(&"6\t30") && pairs.contains(&"6\t3"), "unexpected IAX2 type/subclass fields:\n{fields}");
}

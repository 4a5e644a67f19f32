//! The switch against a real Asterisk 20 (chan_iax2, the reference IAX2
//! implementation), with the seed's "IAX2 Trunk" configurations used as they
//! are on both sides: `captures/asterisk__double-registration-call/A` for
//! Asterisk on 127.0.2.1 and `.../B` for the switch on 127.0.2.2 (iax.conf and
//! extensions.conf unchanged; the switch only gets a `switch.toml` naming its
//! control socket). Each case changes one thing in both copies (trunk,
//! encryption, a wrong secret) and says so.
//!
//! What is checked is what Asterisk shows (`iax2 show registry|peers`, its
//! log) and what the switch reports (its JSON events), and, where root and
//! tshark allow a capture, the frames on the wire.
//!
//! Skipped, with a message, without the Asterisk peer folder or root
//! (`common/asterisk.rs`). The cases run one at a time: they share the
//! addresses 127.0.2.1-2 and port 4569.

#[path = "common/iaxmodem.rs"]
#[allow(dead_code)]
mod common;

#[path = "common/asterisk.rs"]
mod asterisk;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use asterisk::Asterisk;
use common::{free_tcp_port, Capture, Switch, TempDir};
use serde_json::Value;

const A: &str = "127.0.2.1";
const B: &str = "127.0.2.2";

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The seed's A and B configuration folders.
fn seed(side: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../captures/asterisk__double-registration-call").join(side)
}

/// A copy of a seed folder in `dir` with `edit` applied to each file's text.
fn config_copy(side: &str, dir: &Path, edit: &dyn Fn(&str, &str) -> String) -> PathBuf {
    let out = dir.join(side);
    std::fs::create_dir_all(&out).unwrap();
    for entry in std::fs::read_dir(seed(side)).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(out.join(&name), edit(&name, &text)).unwrap();
    }
    out
}

/// Asterisk A and the switch B, both up, with the given edits to their configurations.
struct Pair {
    asterisk: Asterisk,
    switch: Switch,
    /// The switch's configuration folder and control port (to restart it).
    b: PathBuf,
    control: u16,
    _dir: TempDir,
}

impl Pair {
    fn start(peer: &Path, edit: &dyn Fn(&str, &str) -> String) -> Pair {
        let dir = TempDir::new("asterisk-pair");
        let a = config_copy("A", &dir.0, edit);
        let b = config_copy("B", &dir.0, edit);
        let control = free_tcp_port();
        write_switch_toml(&b, control);
        let asterisk = Asterisk::start(peer, &a, "A");
        let switch = Switch::start(&b, Some(control));
        Pair { asterisk, switch, b, control, _dir: dir }
    }

    /// Both registrations up and both peers qualified OK, or a panic that shows both sides.
    fn wait_registered(&mut self) -> Duration {
        let start = Instant::now();
        let timeout = Duration::from_secs(15);
        let registry = self.asterisk.wait_cli("iax2 show registry", timeout, |s| s.contains("Registered"));
        let peers = self.asterisk.wait_cli("iax2 show peers", timeout, |s| s.contains("OK ("));
        let ours = self.switch.wait_for(timeout, |e| e["event"] == "registered");
        let theirs = self.switch.wait_for(timeout, |e| e["event"] == "peer_registered" && e["peer"] == "A");
        let qualified = self.switch.wait_for(timeout, |e| e["event"] == "peer_state_changed" && e["to"] == "OK");
        if registry.is_none() || peers.is_none() || ours.is_none() || theirs.is_none() || qualified.is_none() {
            panic!(
                "not registered both ways within {timeout:?}\nAsterisk registry:\n{}\nAsterisk peers:\n{}\n\
                 Asterisk log:\n{}\nswitch:\n{}",
                self.asterisk.cli("iax2 show registry"),
                self.asterisk.cli("iax2 show peers"),
                self.asterisk.log(),
                self.switch.output()
            );
        }
        start.elapsed()
    }

    fn report(&self) -> String {
        format!("Asterisk log:\n{}\nswitch:\n{}", self.asterisk.log(), self.switch.output())
    }
}

/// The switch's own file: where its control socket listens and where it
/// keeps what survives a restart. The dialplan is B's extensions.conf.
fn write_switch_toml(dir: &Path, control: u16) {
    let toml = format!("[control]\nlisten = \"127.0.0.1:{control}\"\n\n[state]\ndir = \"state\"\n");
    std::fs::write(dir.join("switch.toml"), toml).unwrap();
}

fn unchanged(_: &str, text: &str) -> String {
    text.to_string()
}

/// A capture of both machines' IAX2 traffic, when this host can take one.
fn capture(dir: &Path) -> Option<Capture> {
    Capture::start(dir, 4569)
}

#[test]
fn registers_both_ways_through_call_tokens_qualifies_and_refreshes() {
    let Some(peer) = asterisk::peer_dir() else { return };
    let _guard = serial();
    let dir = TempDir::new("asterisk-reg");
    let wire = capture(&dir.0);
    // A short registration lifetime on both sides, so refreshes happen within the test.
    let short = |name: &str, text: &str| {
        if name == "iax.conf" {
            text.replace("bindport=4569\n", "bindport=4569\nminregexpire=10\nmaxregexpire=10\n")
        } else {
            text.to_string()
        }
    };
    let mut pair = Pair::start(&peer, &short);
    let took = pair.wait_registered();
    eprintln!("registered both ways and qualified in {took:?}");
    let refreshes = |s: &mut Switch, event: &str| s.seen.iter().filter(|e| e["event"] == event).count();
    pair.switch.settle(Duration::from_secs(20));
    assert!(
        refreshes(&mut pair.switch, "registered") >= 2,
        "the switch refreshed its registration:\n{}",
        pair.report()
    );
    assert!(
        refreshes(&mut pair.switch, "peer_registered") >= 2,
        "Asterisk refreshed its registration with the switch:\n{}",
        pair.report()
    );
    assert!(pair.asterisk.cli("iax2 show registry").contains("Registered"));
    assert!(pair.asterisk.cli("iax2 show peers").contains("OK ("), "Asterisk still qualifies the switch OK");
    assert!(
        !pair.asterisk.log().contains("Silently dropping frame"),
        "Asterisk dropped a frame of ours:\n{}",
        pair.asterisk.log()
    );
    drop(pair);
    if let Some(wire) = wire {
        let seen = wire.finish();
        assert!(seen.malformed.trim().is_empty(), "tshark flags frames as malformed:\n{}", seen.malformed);
        let from_switch = |sub: u32| seen.packets.iter().filter(|p| p.src_ip == B && p.is_iax(sub)).count();
        assert!(from_switch(40) >= 1, "the switch asked Asterisk's REGREQ for a call token");
        assert!(from_switch(14) >= 2 && from_switch(15) >= 2, "REGAUTH and REGACK from the switch, refreshes included");
        // Our REGACK carries what chan_iax2's does: username, date and time, refresh, apparent address.
        let regack = seen.packets.iter().find(|p| p.src_ip == B && p.is_iax(15)).unwrap();
        assert_eq!(regack.ies, vec![6, 31, 19, 18], "REGACK IEs: {}", regack.describe(0));
    }
}

#[test]
fn wrong_secret_is_refused_both_ways() {
    let Some(peer) = asterisk::peer_dir() else { return };
    let _guard = serial();
    // Asterisk's side holds another secret: each side refuses the other.
    let wrong = |name: &str, text: &str| {
        if name == "iax.conf" && text.contains("bindaddr=127.0.2.1") {
            text.replace("trunksecret", "another-secret")
        } else {
            text.to_string()
        }
    };
    let mut pair = Pair::start(&peer, &wrong);
    let timeout = Duration::from_secs(10);
    let rejected = pair.switch.wait_for(timeout, |e| e["event"] == "registration_rejected");
    let refused = pair.switch.wait_for(timeout, |e| e["event"] == "peer_registration_refused" && e["peer"] == "A");
    let state = pair.asterisk.wait_cli("iax2 show registry", timeout, |s| s.contains("Rejected"));
    assert!(rejected.is_some(), "Asterisk refused the switch's registration (REGREJ):\n{}", pair.report());
    assert!(refused.is_some(), "the switch refused Asterisk's registration:\n{}", pair.report());
    assert!(state.is_some(), "Asterisk shows its registration Rejected:\n{}", pair.asterisk.cli("iax2 show registry"));
    assert!(pair.switch.named("registered").is_empty() && pair.switch.named("peer_registered").is_empty());
}

/// One call each way, with the given edit (trunk, encryption); audio checked both ways.
fn calls_both_ways(edit: &dyn Fn(&str, &str) -> String, trunk: bool, encrypted: bool) {
    let Some(peer) = asterisk::peer_dir() else { return };
    let _guard = serial();
    let dir = TempDir::new("asterisk-call");
    let wire = capture(&dir.0);
    let mut pair = Pair::start(&peer, edit);
    pair.wait_registered();
    let ended = |e: &Value| e["event"] == "call_ended";

    // Our numbered pattern through Asterisk's Echo: every frame comes back, in order.
    let reply = pair.switch.ctl("originate IAX2/A/9196 app=pattern hold=4");
    assert!(reply.contains("1 call(s) placed"), "{reply}");
    let answered = pair.switch.wait_for(Duration::from_secs(5), |e| e["event"] == "call_answered");
    let answered = answered.unwrap_or_else(|| panic!("Asterisk did not answer:\n{}", pair.report()));
    assert_eq!(answered["encrypted"], encrypted, "{answered}");
    let out = pair.switch.wait_for(Duration::from_secs(10), ended).unwrap_or_else(|| panic!("{}", pair.report()));
    assert_eq!(out["direction"], "outbound");
    assert_eq!(out["code"], 16, "we hung up with Normal Clearing: {out}");
    assert!(out["frames_sent"].as_u64() >= Some(190), "{out}");
    assert!(out["frames_received"].as_u64() >= Some(180), "Asterisk echoed our pattern back: {out}");
    assert_eq!((out["lost"].as_u64(), out["reordered"].as_u64()), (Some(0), Some(0)), "{out}");
    assert!(pair.asterisk.wait_log("hangup cause 16", Duration::from_secs(3)), "{}", pair.report());

    // Asterisk's Playtones through our echo; Asterisk hangs up after 4 s.
    let n = pair.switch.seen.len();
    pair.asterisk.cli("channel originate IAX2/B/9196 extension 100@gen");
    let back = pair.switch.wait_for(Duration::from_secs(10), |e| ended(e) && e["direction"] == "inbound");
    let back = back.unwrap_or_else(|| panic!("no call from Asterisk ended:\n{}", pair.report()));
    assert_eq!(back["code"], 16, "Asterisk hung up with Normal Clearing: {back}");
    assert!(back["frames_received"].as_u64() >= Some(180), "Asterisk's tone reached us: {back}");
    assert!(back["frames_sent"].as_u64() >= Some(180), "and went back: {back}");
    let started = pair.switch.seen[n..].iter().find(|e| e["event"] == "call_answered").cloned();
    assert_eq!(started.map(|e| e["encrypted"].clone()), Some(Value::Bool(encrypted)));
    drop(pair);

    if let Some(wire) = wire {
        let seen = wire.finish();
        // tshark cannot decrypt IAX2: encrypted frames are malformed to it, Asterisk's too.
        if !encrypted {
            assert!(seen.malformed.trim().is_empty(), "tshark flags frames as malformed:\n{}", seen.malformed);
        }
        // Each call sends about 200 frames each way (more when the echo doubles back).
        assert!(seen.voice_from_ip(B) >= 360, "voice from the switch on the wire: {}", seen.voice_from_ip(B));
        assert!(seen.voice_from_ip(A) >= 300, "voice from Asterisk on the wire: {}", seen.voice_from_ip(A));
        // Trunked calls send meta trunk frames; encrypted calls never do (ours;
        // chan_iax2 would send their audio in clear trunk frames).
        let trunk_frames = seen.packets.iter().filter(|p| p.src_ip == B && p.packet_type == Some(3)).count();
        if trunk && !encrypted {
            assert!(trunk_frames >= 300, "trunked media from the switch: {trunk_frames} trunk frames");
        } else {
            assert_eq!(trunk_frames, 0, "no trunk frames from the switch on an untrunked or encrypted call");
        }
    }
}

#[test]
fn calls_both_ways_trunked() {
    calls_both_ways(&unchanged, true, false);
}

#[test]
fn calls_both_ways_untrunked() {
    calls_both_ways(&|_: &str, t: &str| t.replace("trunk=yes", "trunk=no"), false, false);
}

#[test]
fn calls_both_ways_encrypted() {
    calls_both_ways(&|_: &str, t: &str| t.replace("trunk=yes", "trunk=no\nencryption=yes"), false, true);
}

#[test]
fn calls_both_ways_encrypted_and_trunked() {
    calls_both_ways(&|_: &str, t: &str| t.replace("trunk=yes", "trunk=yes\nencryption=yes"), true, true);
}

#[test]
fn unknown_extension_and_unknown_caller_are_refused_both_ways() {
    let Some(peer) = asterisk::peer_dir() else { return };
    let _guard = serial();
    let mut pair = Pair::start(&peer, &unchanged);
    pair.wait_registered();
    let timeout = Duration::from_secs(5);

    // Our call to an extension Asterisk does not have.
    pair.switch.ctl("originate IAX2/A/5555 app=pattern hold=2");
    let e = pair.switch.wait_for(timeout, |e| e["event"] == "call_ended" || e["event"] == "call_rejected");
    let e = e.unwrap_or_else(|| panic!("{}", pair.report()));
    assert_ne!(e["code"], 16, "Asterisk refused 5555: {e}");
    assert!(pair.switch.named("call_answered").is_empty(), "{}", pair.report());

    // Asterisk's call to an extension we do not have.
    pair.asterisk.cli("channel originate IAX2/B/5555 extension 100@gen");
    let e = pair.switch.wait_for(timeout, |e| e["event"] == "call_rejected" && e["exten"] == "5555");
    let e = e.unwrap_or_else(|| panic!("{}", pair.report()));
    assert!(e["cause"].as_str().unwrap_or("").contains("No such context/extension"), "{e}");

    // A caller without credentials, each way.
    pair.asterisk.cli("channel originate IAX2/nobody@127.0.2.2/9196 extension 100@gen");
    let e = pair.switch.wait_for(timeout, |e| e["event"] == "call_rejected" && e["exten"] == "9196");
    let e = e.unwrap_or_else(|| panic!("{}", pair.report()));
    assert!(e["cause"].as_str().unwrap_or("").contains("No authority found"), "{e}");
    let n = pair.switch.seen.len();
    pair.switch.ctl("originate IAX2/nobody@127.0.2.1/9196 app=pattern hold=2");
    let e = pair.switch.wait_for(timeout, |e| e["event"] == "call_ended" || e["event"] == "call_rejected");
    assert!(pair.switch.seen[n..].iter().all(|e| e["event"] != "call_answered"), "{}", pair.report());
    assert!(e.is_some(), "Asterisk refused the unknown caller:\n{}", pair.report());
}

#[test]
fn either_side_restarting_recovers_without_restarting_the_other() {
    let Some(peer) = asterisk::peer_dir() else { return };
    let _guard = serial();
    let mut pair = Pair::start(&peer, &unchanged);
    pair.wait_registered();

    // The switch restarts: it knows where A is at once (its registration
    // survived), and Asterisk sees it back without being touched.
    pair.switch.kill();
    pair.switch = Switch::start(&pair.b, Some(pair.control));
    let start = Instant::now();
    let qualified =
        pair.switch.wait_for(Duration::from_secs(5), |e| e["event"] == "peer_state_changed" && e["to"] == "OK");
    assert!(qualified.is_some(), "the restarted switch qualified A from its saved registration:\n{}", pair.report());
    let reply = pair.switch.ctl("originate IAX2/A/9196 app=pattern hold=1");
    assert!(reply.contains("1 call(s) placed"), "the restarted switch calls A before A registers again: {reply}");
    let answered = pair.switch.wait_for(Duration::from_secs(5), |e| e["event"] == "call_answered");
    assert!(answered.is_some(), "{}", pair.report());
    assert!(pair.switch.wait_for(Duration::from_secs(10), |e| e["event"] == "registered").is_some());
    eprintln!("switch restarted: A qualified and called {:?} after the restart", start.elapsed());

    // Asterisk restarts (same astdb): it registers to the switch again and
    // qualifies it, and calls both ways work, without touching the switch.
    pair.switch.seen.clear();
    pair.asterisk.restart();
    let start = Instant::now();
    let back = pair.switch.wait_for(Duration::from_secs(15), |e| e["event"] == "peer_registered" && e["peer"] == "A");
    assert!(back.is_some(), "the restarted Asterisk registered to the switch again:\n{}", pair.report());
    let ok = pair.asterisk.wait_cli("iax2 show peers", Duration::from_secs(15), |s| s.contains("OK ("));
    assert!(ok.is_some(), "the restarted Asterisk qualifies the switch OK:\n{}", pair.report());
    eprintln!("Asterisk restarted: registered to the switch and qualified it {:?} after it was up", start.elapsed());
    let reply = pair.switch.ctl("originate IAX2/A/9196 app=pattern hold=1");
    assert!(reply.contains("1 call(s) placed"), "{reply}");
    let answered = pair.switch.wait_for(Duration::from_secs(5), |e| e["event"] == "call_answered");
    assert!(answered.is_some(), "the switch calls the restarted Asterisk:\n{}", pair.report());
    pair.asterisk.cli("channel originate IAX2/B/9196 extension 100@gen");
    let inbound =
        pair.switch.wait_for(Duration::from_secs(5), |e| e["event"] == "call_started" && e["direction"] == "inbound");
    assert!(inbound.is_some(), "the restarted Asterisk calls the switch:\n{}", pair.report());
}

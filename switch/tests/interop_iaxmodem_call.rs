//! Real calls between the live `switch` binary and iaxmodem 1.2.0 (Debian
//! package; a T.31 fax modem on spandsp and its own libiax2), driven through
//! iaxmodem's Hayes AT interface on its pty, as HylaFAX would.
//!
//! The switch has `[iaxmodem] type=friend host=dynamic secret=... auth=md5
//! requirecalltoken=no context=modems` and `[dialplan.modems] "9196" = "echo"`.
//!
//! What iaxmodem does (observed here, and in its source):
//! * `ATD<number>` places `iax_call("peer:secret@server/number")`: a NEW with
//!   VERSION, CALLING_NUMBER/NAME (`cidnumber`/`cidname`), FORMAT = its `codec`
//!   setting (slinear 0x40 by default, or ulaw 0x4 / alaw 0x8), CAPABILITY =
//!   0x4c (slinear|ulaw|alaw) whatever `codec` says, USERNAME = peername,
//!   CALLED_NUMBER and DNID = the dialled digits, no CALLTOKEN IE. The switch
//!   answers AUTHREQ (MD5), then ACCEPT with FORMAT ulaw (our codecs are G.711
//!   only; CAPABILITY always includes ulaw, so even `codec slinear` negotiates),
//!   RINGING, ANSWER; iaxmodem uses the ACCEPT's format and sends 20 ms voice.
//! * In the default `+FCLASS=0`, once the call is answered the modem answers
//!   nothing more on the tty (neither `+++` with guard times nor `ATH`; the call
//!   stays up), so the DTE cannot hang up: the tests use `AT+FCLASS=1` (fax
//!   class 1, what HylaFAX uses). There, after ANSWER the modem waits for the
//!   far fax's V.21; the first character from the DTE aborts that wait (`OK`),
//!   and a following `ATH` hangs up (HANGUP with CAUSE "Normal disconnect", no
//!   cause code).
//! * REJECT to its NEW: the pty says `NO DIALTONE` (log "Rejected call.").
//! * HANGUP from the switch on a connected call: the pty says `NO CARRIER`.
//! * A NEW to it: ACCEPT (the NEW's FORMAT if it supports it), RINGING; `RING`
//!   on the pty every 5 s; `ATA` sends ANSWER. For 5 s after any on-hook (`ATH`,
//!   `ATZ`) it refuses calls with REJECT CAUSE "Busy" (no cause code). A HANGUP
//!   while it rings is logged ("Remote hangup.") but the pty says nothing more.
//!
//! When root and dumpcap/tshark are installed, each case captures `lo` and
//! checks the frames as Wireshark dissects them (printed with `--nocapture`).
//! Skipped (with a message) when iaxmodem is not installed. The cases run one
//! at a time (2-core machines, timing-sensitive modem), each well under 20 s;
//! processes are killed on drop and temp directories removed.

#[path = "common/iaxmodem.rs"]
#[allow(dead_code)]
mod common;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use common::{free_tcp_port, free_udp_port, iaxmodem, Capture, Dissected, Modem, Pty, Switch, SwitchConfig, TempDir};

const SECRET: &str = "s3cret-fax";
/// How long a step waits for the event it needs.
const STEP: Duration = Duration::from_secs(5);

/// IAX subclasses and control subclasses (RFC 5456 sections 8.3, 8.4).
const NEW: u32 = 1;
const HANGUP: u32 = 5;
const REJECT: u32 = 6;
const ACCEPT: u32 = 7;
const AUTHREQ: u32 = 8;
const AUTHREP: u32 = 9;
const RINGING: u32 = 3;
const ANSWER: u32 = 4;
/// Media formats.
const ULAW: u64 = 0x4;
const SLINEAR: u64 = 0x40;
/// The CALLTOKEN IE.
const IE_CALLTOKEN: u32 = 54;

/// One case at a time: iaxmodem paces audio by the wall clock, and captures
/// plus tshark runs are heavy on a 2-core machine.
static SERIAL: Mutex<()> = Mutex::new(());

/// A registered iaxmodem, the switch, the modem's pty and (maybe) a capture.
struct Rig {
    switch: Switch,
    modem: Modem,
    pty: Pty,
    capture: Option<Capture>,
    port: u16,
    _dir: TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Rig {
    /// Starts everything and waits for iaxmodem (preferring `codec`) to register.
    fn start(tag: &str, binary: &Path, codec: &str) -> Rig {
        let serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let dir = TempDir::new(tag);
        let switch_dir = dir.0.join("switch");
        std::fs::create_dir_all(&switch_dir).unwrap();
        let port = free_udp_port();
        let control = free_tcp_port();
        SwitchConfig {
            port,
            requirecalltoken: "no",
            secret: SECRET,
            context: "modems",
            control: Some(control),
            dialplan: &[("9196", "echo")],
        }
        .write(&switch_dir);
        let capture = Capture::start(&dir.0, port);
        let mut switch = Switch::start(&switch_dir, Some(control));
        let modem = Modem::start(binary, &dir.0, port, "iaxmodem", SECRET, codec);
        if switch.wait_for(STEP, |e| e["event"] == "peer_registered" && e["peer"] == "iaxmodem").is_none() {
            panic!(
                "{tag}: iaxmodem did not register within {STEP:?}\n--- switch ---\n{}\n--- iaxmodem ---\n{}",
                switch.output(),
                modem.output()
            );
        }
        let pty = modem.open_pty().unwrap_or_else(|e| panic!("{tag}: cannot open the modem pty: {e}"));
        Rig { switch, modem, pty, capture, port, _dir: dir, _serial: serial }
    }

    /// Everything that helps explain a failure.
    fn context(&mut self) -> String {
        format!(
            "\n--- pty ---\n{}\n--- switch ---\n{}\n--- iaxmodem ---\n{}",
            self.pty.transcript(),
            self.switch.output(),
            self.modem.output()
        )
    }

    /// Waits for an event or fails with the context.
    fn event(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        match self.switch.wait_for(STEP, pred) {
            Some(e) => e,
            None => panic!("no {what} within {STEP:?}{}", self.context()),
        }
    }

    /// A command's result code on the pty, or fail.
    fn at(&mut self, command: &str, result: &str) {
        self.pty.send(command);
        if !self.pty.expect(result, STEP) {
            panic!("`{command}` did not answer {result:?}{}", self.context());
        }
    }

    /// Asserts iaxmodem logged `text` (its stdout is only followed live under stdbuf).
    fn modem_logged(&mut self, text: &str) {
        if self.modem.live_stdout && !self.modem.wait_for_line(text, STEP) {
            panic!("iaxmodem did not log {text:?}{}", self.context());
        }
    }

    /// Stops the capture, prints the signalling it saw, checks nothing was malformed.
    fn dissect(&mut self, tag: &str) -> Option<Dissected> {
        let capture = self.capture.take()?;
        let d = capture.finish();
        eprintln!(
            "{tag}: frames on lo (switch port {}; ACKs and voice left out; voice: {} from the modem, {} from the switch):\n{}",
            self.port,
            d.voice_from(self.modem.port),
            d.voice_from(self.port),
            d.ladder(self.port)
        );
        assert!(d.malformed.trim().is_empty(), "tshark reports malformed frames:\n{}", d.malformed);
        // On loopback every full frame should be ACKed before its retransmission timer fires.
        let again: Vec<String> = d.packets.iter().filter(|p| p.retransmitted).map(|p| p.describe(self.port)).collect();
        assert!(again.is_empty(), "retransmitted frames (an ACK missing or late):\n{}", again.join("\n"));
        Some(d)
    }
}

fn is_call(e: &Value, name: &str, call: &Value) -> bool {
    e["event"] == name && &e["call"] == call
}

/// The first full IAX frame of `subclass` sent from `src_port`.
fn iax_from(d: &Dissected, src_port: u16, subclass: u32) -> Option<&common::Packet> {
    d.packets.iter().find(|p| p.src_port == src_port && p.is_iax(subclass))
}

fn control_from(d: &Dissected, src_port: u16, subclass: u32) -> Option<&common::Packet> {
    d.packets.iter().find(|p| p.src_port == src_port && p.is_control(subclass))
}

/// `AT+FCLASS=1`, `ATDT<number>`: iaxmodem sends NEW; waits for the switch's `call_started`.
fn dial(rig: &mut Rig, number: &str) -> Value {
    rig.at("AT+FCLASS=1", "OK");
    rig.pty.send(&format!("ATDT{number}"));
    let exten = number.to_string();
    let started = rig.event("call_started", move |e| e["event"] == "call_started" && e["exten"] == exten.as_str());
    assert_eq!(started["direction"], "inbound", "{}", rig.context());
    assert_eq!(started["peer"], "iaxmodem", "{}", rig.context());
    started
}

// ---------------------------------------------------------------- iaxmodem calls the switch

/// iaxmodem with its shipped default `codec slinear` dials 9196 (echo): the
/// switch authenticates it, answers in ulaw, echoes its audio; `ATH` hangs up.
#[test]
fn iaxmodem_dials_echo_and_hangs_up() {
    let Some(binary) = iaxmodem() else { return };
    let mut rig = Rig::start("iaxmodem-dial", &binary, "slinear");
    let started = dial(&mut rig, "9196");
    let call = started["call"].clone();
    let answered = rig.event("call_answered", |e| is_call(e, "call_answered", &call));
    assert_eq!(answered["format"], "ulaw", "{}", rig.context());
    assert_eq!(answered["encrypted"], false, "{}", rig.context());
    rig.modem_logged("Remote answered.");

    // Two seconds of media, then the operator's view of the call.
    rig.switch.settle(Duration::from_secs(2));
    let channels = rig.switch.ctl("iax2 show channels");
    let id = call.to_string();
    let row = channels.lines().find(|l| l.split_whitespace().next() == Some(id.as_str())).map(str::to_string);
    let Some(row) = row else { panic!("call {call} missing from `iax2 show channels`:\n{channels}{}", rig.context()) };
    for word in ["inbound", "iaxmodem", "Up", "ulaw"] {
        assert!(row.split_whitespace().any(|w| w == word), "no {word:?} in {row:?}{}", rig.context());
    }

    // The first character aborts the class 1 wait for V.21 (`OK`); then ATH goes on-hook.
    let mut attempts = 0;
    let ended = loop {
        attempts += 1;
        rig.at("ATH", "OK");
        let ended = rig.switch.wait_for(Duration::from_secs(1), |e| is_call(e, "call_ended", &call));
        match ended {
            Some(e) => break e,
            None if attempts < 3 => continue,
            None => panic!("ATH x{attempts} did not end the call{}", rig.context()),
        }
    };
    eprintln!("iaxmodem hung up after {attempts} ATH; call_ended: {ended}");
    assert_eq!(ended["cause"], "Normal disconnect", "{}", rig.context());
    assert_eq!(ended["code"], 16, "{}", rig.context());
    let received = ended["frames_received"].as_u64().unwrap_or(0);
    let sent = ended["frames_sent"].as_u64().unwrap_or(0);
    assert!(received >= 50, "only {received} voice frames from iaxmodem in 2 s{}", rig.context());
    assert!(sent > 0, "echo sent nothing back{}", rig.context());
    rig.modem_logged("Hanging Up");
    assert!(rig.switch.named("call_rejected").is_empty(), "{}", rig.context());

    let Some(d) = rig.dissect("iaxmodem_dials_echo_and_hangs_up") else { return };
    let modem = rig.modem.port;
    let new = iax_from(&d, modem, NEW).expect("NEW from iaxmodem");
    assert_eq!(new.format, Some(SLINEAR), "NEW FORMAT: {}", new.describe(rig.port));
    assert_eq!(new.capability, Some(0x4c), "NEW CAPABILITY: {}", new.describe(rig.port));
    assert_eq!(new.username, "iaxmodem");
    assert_eq!(new.called_number, "9196");
    assert_eq!(new.calling_number, "100");
    assert!(!new.ies.contains(&IE_CALLTOKEN), "libiax2 sent a CALLTOKEN IE: {}", new.describe(rig.port));
    assert!(iax_from(&d, rig.port, AUTHREQ).is_some(), "no AUTHREQ from the switch");
    assert!(iax_from(&d, modem, AUTHREP).is_some(), "no AUTHREP from iaxmodem");
    let accept = iax_from(&d, rig.port, ACCEPT).expect("ACCEPT from the switch");
    assert_eq!(accept.format, Some(ULAW), "ACCEPT FORMAT: {}", accept.describe(rig.port));
    assert!(control_from(&d, rig.port, RINGING).is_some(), "no RINGING from the switch");
    assert!(control_from(&d, rig.port, ANSWER).is_some(), "no ANSWER from the switch");
    let hangup = iax_from(&d, modem, HANGUP).expect("HANGUP from iaxmodem");
    assert_eq!(hangup.cause, "Normal disconnect");
    assert!(d.voice_from(modem) >= 50 && d.voice_from(rig.port) > 0, "voice frames missing on the wire");
    let modem_voice = d.packets.iter().find(|p| p.src_port == modem && p.full && p.ftype == Some(2));
    assert_eq!(modem_voice.and_then(|p| p.voice_subclass), Some(ULAW as u32), "iaxmodem's first full voice frame");
}

/// An extension the `modems` context lacks: REJECT cause code 3; iaxmodem says NO DIALTONE.
#[test]
fn iaxmodem_call_to_unknown_extension_is_rejected() {
    let Some(binary) = iaxmodem() else { return };
    let mut rig = Rig::start("iaxmodem-unknown", &binary, "ulaw");
    let started = dial(&mut rig, "5555");
    let call = started["call"].clone();
    let rejected = rig.event("call_rejected", |e| is_call(e, "call_rejected", &call));
    assert_eq!(rejected["code"], 3, "{}", rig.context());
    let cause = rejected["cause"].as_str().unwrap_or_default().to_string();
    assert!(cause.starts_with("No such context/extension"), "cause {cause:?}{}", rig.context());
    let said = rig.pty.expect_any(&["NO DIALTONE", "NO CARRIER", "BUSY", "ERROR", "CONNECT"], STEP);
    eprintln!("iaxmodem's answer to a REJECT: {said:?}");
    assert_eq!(said, Some("NO DIALTONE"), "{}", rig.context());
    rig.modem_logged("Rejected call.");
    rig.switch.settle(Duration::from_millis(300));
    assert!(rig.switch.named("call_answered").is_empty(), "{}", rig.context());

    let Some(d) = rig.dissect("iaxmodem_call_to_unknown_extension_is_rejected") else { return };
    let reject = iax_from(&d, rig.port, REJECT).expect("REJECT from the switch");
    assert_eq!(reject.cause, "No such context/extension");
    assert_eq!(reject.causecode, Some(3));
    assert!(iax_from(&d, rig.port, ACCEPT).is_none(), "ACCEPT before a REJECT");
}

/// The operator hangs up a connected call (`hangup all`): iaxmodem says NO CARRIER.
#[test]
fn switch_hangs_up_iaxmodem_call() {
    let Some(binary) = iaxmodem() else { return };
    let mut rig = Rig::start("iaxmodem-hangupall", &binary, "ulaw");
    let started = dial(&mut rig, "9196");
    let call = started["call"].clone();
    rig.event("call_answered", |e| is_call(e, "call_answered", &call));
    rig.switch.settle(Duration::from_millis(1500));
    let said = rig.switch.ctl("hangup all");
    assert!(said.contains("1 call(s) hung up"), "hangup all said {said:?}{}", rig.context());
    let ended = rig.event("call_ended", |e| is_call(e, "call_ended", &call));
    assert_eq!(ended["cause"], "Normal Clearing", "{}", rig.context());
    assert_eq!(ended["code"], 16, "{}", rig.context());
    let received = ended["frames_received"].as_u64().unwrap_or(0);
    assert!(received >= 25, "only {received} voice frames from iaxmodem in 1.5 s{}", rig.context());
    if !rig.pty.expect("NO CARRIER", STEP) {
        panic!("iaxmodem did not report NO CARRIER{}", rig.context());
    }
    rig.modem_logged("Remote hangup");

    let Some(d) = rig.dissect("switch_hangs_up_iaxmodem_call") else { return };
    let hangup = iax_from(&d, rig.port, HANGUP).expect("HANGUP from the switch");
    assert_eq!(hangup.causecode, Some(16));
}

// ---------------------------------------------------------------- the switch calls iaxmodem

/// `originate IAX2/iaxmodem/100 app=tone(1000) hold=3`: RING on the pty, `ATA`
/// answers, the switch plays its tone for 3 s and hangs up.
#[test]
fn switch_calls_iaxmodem_which_answers() {
    let Some(binary) = iaxmodem() else { return };
    let mut rig = Rig::start("iaxmodem-originate", &binary, "ulaw");
    // No ATZ/ATH first: iaxmodem refuses calls for 5 s after going on-hook.
    let said = rig.switch.ctl("originate IAX2/iaxmodem/100 app=tone(1000) hold=3");
    assert!(said.contains("1 call(s) placed"), "originate said {said:?}{}", rig.context());
    let started = rig.event("call_started", |e| e["event"] == "call_started");
    assert_eq!(started["direction"], "outbound", "{}", rig.context());
    assert_eq!(started["exten"], "100", "{}", rig.context());
    let call = started["call"].clone();
    if !rig.pty.expect("RING", STEP) {
        panic!("no RING on the modem pty{}", rig.context());
    }
    rig.modem_logged("Incoming call connected 100");
    rig.pty.send("ATA");
    let answered = rig.event("call_answered", |e| is_call(e, "call_answered", &call));
    assert_eq!(answered["format"], "ulaw", "{}", rig.context());
    rig.modem_logged("Answering");
    let ended = match rig.switch.wait_for(Duration::from_secs(8), |e| is_call(e, "call_ended", &call)) {
        Some(e) => e,
        None => panic!("the call did not end 3 s after the answer{}", rig.context()),
    };
    assert_eq!(ended["cause"], "Normal Clearing", "{}", rig.context());
    assert_eq!(ended["code"], 16, "{}", rig.context());
    let duration = ended["duration_ms"].as_u64().unwrap_or(0);
    assert!((2900..4500).contains(&duration), "duration {duration} ms for hold=3{}", rig.context());
    let received = ended["frames_received"].as_u64().unwrap_or(0);
    let sent = ended["frames_sent"].as_u64().unwrap_or(0);
    assert!(received >= 100 && sent >= 100, "frames sent {sent} received {received} in 3 s{}", rig.context());
    if !rig.pty.expect("NO CARRIER", STEP) {
        panic!("iaxmodem did not report NO CARRIER{}", rig.context());
    }

    let Some(d) = rig.dissect("switch_calls_iaxmodem_which_answers") else { return };
    let modem = rig.modem.port;
    let new = iax_from(&d, rig.port, NEW).expect("NEW from the switch");
    assert_eq!(new.called_number, "100");
    assert_eq!(new.format, Some(ULAW), "NEW FORMAT: {}", new.describe(rig.port));
    assert_eq!(new.capability, Some(0xc), "NEW CAPABILITY: {}", new.describe(rig.port));
    let accept = iax_from(&d, modem, ACCEPT).expect("ACCEPT from iaxmodem");
    assert_eq!(accept.format, Some(ULAW), "ACCEPT FORMAT: {}", accept.describe(rig.port));
    assert!(control_from(&d, modem, RINGING).is_some(), "no RINGING from iaxmodem");
    assert!(control_from(&d, modem, ANSWER).is_some(), "no ANSWER from iaxmodem");
    assert!(iax_from(&d, rig.port, HANGUP).is_some(), "no HANGUP from the switch");
    assert!(d.voice_from(modem) >= 100, "iaxmodem sent {} voice frames", d.voice_from(modem));
}

/// A call to iaxmodem that nobody answers, cancelled by `hangup all`.
#[test]
fn unanswered_call_to_iaxmodem_is_cancelled() {
    let Some(binary) = iaxmodem() else { return };
    let mut rig = Rig::start("iaxmodem-cancel", &binary, "ulaw");
    let said = rig.switch.ctl("originate IAX2/iaxmodem/200 app=tone(1000)");
    assert!(said.contains("1 call(s) placed"), "originate said {said:?}{}", rig.context());
    let started = rig.event("call_started", |e| e["event"] == "call_started");
    let call = started["call"].clone();
    if !rig.pty.expect("RING", STEP) {
        panic!("no RING on the modem pty{}", rig.context());
    }
    let said = rig.switch.ctl("hangup all");
    assert!(said.contains("1 call(s) hung up"), "hangup all said {said:?}{}", rig.context());
    // Unanswered outbound calls end as call_rejected, with the cause we hung up with.
    let rejected = rig.event("call_rejected", |e| is_call(e, "call_rejected", &call));
    assert_eq!(rejected["cause"], "Normal Clearing", "{}", rig.context());
    assert_eq!(rejected["code"], 16, "{}", rig.context());
    rig.modem_logged("Remote hangup");
    let after = rig.pty.expect_any(&["NO CARRIER", "RING", "OK"], Duration::from_secs(1));
    eprintln!("iaxmodem's pty after a HANGUP while ringing: {after:?} ({})", rig.pty.transcript());
    assert!(rig.switch.named("call_answered").is_empty(), "{}", rig.context());

    let Some(d) = rig.dissect("unanswered_call_to_iaxmodem_is_cancelled") else { return };
    assert!(control_from(&d, rig.modem.port, RINGING).is_some(), "no RINGING from iaxmodem");
    assert!(control_from(&d, rig.modem.port, ANSWER).is_none(), "ANSWER from iaxmodem");
    assert!(iax_from(&d, rig.port, HANGUP).is_some(), "no HANGUP from the switch");
}

/// Right after `ATH` iaxmodem is busied out for 5 s: it refuses the switch's
/// NEW with REJECT "Busy" (no cause code, so the switch reports 21).
#[test]
fn iaxmodem_busy_out_rejects_the_switch_call() {
    let Some(binary) = iaxmodem() else { return };
    let mut rig = Rig::start("iaxmodem-busy", &binary, "ulaw");
    rig.at("ATH", "OK");
    let said = rig.switch.ctl("originate IAX2/iaxmodem/100 app=tone(1000)");
    assert!(said.contains("1 call(s) placed"), "originate said {said:?}{}", rig.context());
    let started = rig.event("call_started", |e| e["event"] == "call_started");
    let call = started["call"].clone();
    let rejected = rig.event("call_rejected", |e| is_call(e, "call_rejected", &call));
    assert_eq!(rejected["cause"], "Busy", "{}", rig.context());
    assert_eq!(rejected["code"], 21, "{}", rig.context());
    assert!(!rig.pty.expect("RING", Duration::from_millis(500)), "RING while busied out{}", rig.context());

    let Some(d) = rig.dissect("iaxmodem_busy_out_rejects_the_switch_call") else { return };
    let reject = iax_from(&d, rig.modem.port, REJECT).expect("REJECT from iaxmodem");
    assert_eq!(reject.cause, "Busy");
    assert_eq!(reject.causecode, None);
}

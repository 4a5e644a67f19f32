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

#[path = "common/iaxmodem.rs"]
#[allow(dead_code)]
mod common;

use std::path::Path;
use std::time::Duration;

use common::{event_of, free_udp_port, iaxmodem, Modem, Switch, SwitchConfig, TempDir};

/// How long a case waits for the decisive event.
const DECISION: Duration = Duration::from_secs(6);

/// Writes the switch's configuration: iax.conf with one `[iaxmodem]` friend, no control socket.
fn switch_config(dir: &Path, port: u16, requirecalltoken: &str, secret: &str) {
    SwitchConfig { port, requirecalltoken, secret, context: "fax", control: None, dialplan: &[] }.write(dir);
}

struct Case {
    switch: Switch,
    modem: Modem,
    _dir: TempDir,
}

/// Starts a switch (secret `switch_secret`) and an iaxmodem (secret `modem_secret`)
/// and waits for the switch to accept or refuse the registration.
fn run_case(tag: &str, binary: &Path, requirecalltoken: &str, switch_secret: &str, modem_secret: &str) -> Case {
    let dir = TempDir::new(tag);
    let switch_dir = dir.0.join("switch");
    std::fs::create_dir_all(&switch_dir).unwrap();
    let port = free_udp_port();
    switch_config(&switch_dir, port, requirecalltoken, switch_secret);
    let mut switch = Switch::start(&switch_dir, None);
    let modem = Modem::start(binary, &dir.0, port, "iaxmodem", modem_secret, "ulaw");
    let decided =
        switch.wait_for(DECISION, |e| e["event"] == "peer_registered" || e["event"] == "peer_registration_refused");
    if decided.is_none() {
        panic!(
            "{tag}: no peer_registered / peer_registration_refused within {DECISION:?}\n\
             --- switch output ---\n{}\n--- iaxmodem output ---\n{}",
            switch.output(),
            modem.output()
        );
    }
    Case { switch, modem, _dir: dir }
}

fn context(case: &Case) -> String {
    format!("\n--- switch output ---\n{}\n--- iaxmodem output ---\n{}", case.switch.output(), case.modem.output())
}

// ---------------------------------------------------------------- cases

#[test]
fn iaxmodem_registers_with_md5() {
    let Some(binary) = iaxmodem() else { return };
    let mut case = run_case("iaxmodem-ok", &binary, "no", "s3cret-fax", "s3cret-fax");
    let ok = case.switch.wait_for(Duration::ZERO, |e| e["event"] == "peer_registered");
    let Some(ok) = ok else { panic!("iaxmodem was not registered{}", context(&case)) };
    assert_eq!(ok["peer"], "iaxmodem", "{}", context(&case));
    assert_eq!(ok["addr"], format!("127.0.0.1:{}", case.modem.port), "{}", context(&case));
    let expiry = ok["expiry"].as_u64().unwrap_or(0);
    assert!((60..=3600).contains(&expiry), "expiry {expiry} outside min/maxregexpire{}", context(&case));
    case.switch.settle(Duration::from_millis(500));
    assert!(case.switch.named("peer_registration_refused").is_empty(), "unexpected refusal{}", context(&case));
    assert!(
        !case.modem.output().contains("Registration failed"),
        "iaxmodem reports a failed registration{}",
        context(&case)
    );
}

#[test]
fn iaxmodem_with_wrong_secret_is_refused() {
    let Some(binary) = iaxmodem() else { return };
    let mut case = run_case("iaxmodem-badsecret", &binary, "no", "s3cret-fax", "not-the-secret");
    let refused = case.switch.wait_for(Duration::ZERO, |e| e["event"] == "peer_registration_refused");
    let Some(refused) = refused else { panic!("iaxmodem was not refused{}", context(&case)) };
    assert_eq!(refused["peer"], "iaxmodem", "{}", context(&case));
    assert!(
        case.modem.wait_for_line("Registration failed", Duration::from_secs(3)),
        "iaxmodem did not see a REGREJ{}",
        context(&case)
    );
    case.switch.settle(Duration::from_millis(300));
    assert!(case.switch.named("peer_registered").is_empty(), "registered with a wrong secret{}", context(&case));
}

#[test]
fn iaxmodem_without_call_token_support_is_refused_cleanly() {
    let Some(binary) = iaxmodem() else { return };
    let mut case = run_case("iaxmodem-calltoken", &binary, "yes", "s3cret-fax", "s3cret-fax");
    let refused = case.switch.wait_for(Duration::ZERO, |e| e["event"] == "peer_registration_refused");
    let Some(refused) = refused else { panic!("iaxmodem was not refused{}", context(&case)) };
    let cause = refused["cause"].as_str().unwrap_or_default().to_ascii_lowercase();
    assert!(cause.contains("token"), "refusal cause does not name the call token: {cause:?}{}", context(&case));
    assert!(
        case.switch.wait_for(Duration::from_secs(1), |e| e["event"] == "call_token_required").is_some(),
        "no call_token_required event{}",
        context(&case)
    );
    // Clean: a REGREJ the client understands at once, not silence until it times out.
    assert!(
        case.modem.wait_for_line("Registration failed", Duration::from_secs(3)),
        "iaxmodem did not receive a REGREJ{}",
        context(&case)
    );
    case.switch.settle(Duration::from_millis(300));
    assert!(case.switch.named("peer_registered").is_empty(), "registered without a call token{}", context(&case));
}

#[test]
fn log_lines_yield_events() {
    let line = "2026-01-01T00:00:00Z  INFO switch::event: {\"event\":\"started\",\"bind\":\"127.0.0.1:4569\"}";
    assert_eq!(event_of(line).unwrap()["event"], "started");
    let coloured = "\u{1b}[32m INFO\u{1b}[0m \u{1b}[2mswitch::event\u{1b}[0m: {\"event\":\"peer_registered\"}";
    assert_eq!(event_of(coloured).unwrap()["event"], "peer_registered");
    assert!(event_of("INFO switch: control socket on 127.0.0.1:5039").is_none());
}

//! The operator control socket: a line-oriented TCP service on loopback by
//! default, in the spirit of `asterisk -rx` and FreeSWITCH's `fs_cli`.
//!
//! Each line is one command; the answer ends with a line holding a single `.`.
//! It only translates text into [`Command`]s for the event loop, so the same
//! commands are what scenarios send in the simulator.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use crate::runtime::Command;

pub const HELP: &str = "commands:
  iax2 show peers      peers, their addresses and qualify state
  iax2 show registry   our registrations to other servers
  iax2 show channels   calls in progress with their media counters
  sip show registrations  SIP users' registered contacts
  sip show channels    SIP calls in progress with their RTP counters
  sip show gateways    our registrations to upstream SIP servers
  sip show bans        sources banned after failed authentication
  sip unban IP         lift a ban (or a penalty silence) on a source
  iax2 show bans       the same for IAX2 (REGREQ and NEW with a wrong secret)
  iax2 unban IP        lift an IAX2 ban or silence
  originate DIAL [app=APP] [count=N] [hold=SECONDS]
                       place calls, e.g. originate IAX2/b/9196 app=pattern count=10 hold=30,
                       originate SIP/1000 (a registered user), SIP/provider/4412345 (a gateway)
                       (APP: pattern, tone(HZ), music, echo; default pattern)
  hangup all           hang up every call (IAX2 and SIP)
  show stats           traffic and drop counters
  reload               re-read iax.conf and switch.toml (keeps running on errors)
  help                 this text
  quit                 close this connection";

/// The commands without arguments [`execute`] knows (besides `originate`,
/// `help` and `quit`), as scenario files may name them.
pub const COMMANDS: &[&str] = &[
    "iax2 show peers",
    "iax2 show registry",
    "iax2 show channels",
    "sip show registrations",
    "sip show channels",
    "sip show gateways",
    "sip show bans",
    "iax2 show bans",
    "show stats",
    "hangup all",
    "reload",
    "iax2 reload",
    "help",
];

/// Longest command line accepted; a longer one closes the connection.
const MAX_LINE: usize = 1024;

/// Serves the control socket until the event loop goes away.
pub async fn serve(listener: TcpListener, commands: mpsc::Sender<Command>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(session(stream, peer, commands.clone()));
            }
            Err(e) => tracing::warn!("control socket accept: {e}"),
        }
    }
}

async fn session(stream: TcpStream, peer: SocketAddr, commands: mpsc::Sender<Command>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(1 << 20)).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.len() > MAX_LINE {
            break;
        }
        let answer = match execute(line.trim(), &commands).await {
            Some(answer) => answer,
            None => break,
        };
        if write.write_all(format!("{}\n.\n", answer.trim_end()).as_bytes()).await.is_err() {
            break;
        }
    }
    tracing::debug!("control session from {peer} closed");
}

use tokio::io::AsyncReadExt as _;

use crate::dialplan::App;
use crate::iax2::endpoint::Originate;

/// Most calls one `originate` may place.
const MAX_ORIGINATE: u32 = 10_000;

/// `originate DIAL [app=APP] [count=N] [hold=SECONDS]`, as typed (case kept for the dial string).
pub fn parse_originate(line: &str) -> Result<(Originate, u32), String> {
    let mut words = line.split_whitespace().skip(1);
    let dial = words.next().ok_or("originate needs a dial string")?.to_string();
    let (mut app, mut count, mut hold) = (App::Pattern, 1u32, None);
    for word in words {
        let (key, value) = word.split_once('=').ok_or_else(|| format!("`{word}`: expected key=value"))?;
        match key.to_ascii_lowercase().as_str() {
            "app" => app = App::parse(value)?,
            "count" => match value.parse::<u32>() {
                Ok(n) if (1..=MAX_ORIGINATE).contains(&n) => count = n,
                _ => return Err(format!("`{word}`: count must be 1-{MAX_ORIGINATE}")),
            },
            "hold" => match value.parse::<f64>() {
                Ok(s) if s > 0.0 && s < 1e7 => hold = Some(std::time::Duration::from_secs_f64(s)),
                _ => return Err(format!("`{word}`: hold is a number of seconds, e.g. hold=30")),
            },
            _ => return Err(format!("`{word}`: unknown option (app, count, hold)")),
        }
    }
    if dial.get(..4).is_some_and(|t| t.eq_ignore_ascii_case("SIP/")) {
        crate::sip::endpoint::SipTarget::parse(&dial)?;
    } else {
        crate::iax2::call::DialString::parse(&dial)?;
    }
    Ok((Originate { dial, app, hold, calling: (None, None) }, count))
}

/// Runs one command line; `None` closes the session.
pub async fn execute(line: &str, commands: &mpsc::Sender<Command>) -> Option<String> {
    let words: Vec<String> = line.split_whitespace().map(str::to_ascii_lowercase).collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let ask = |make: fn(oneshot::Sender<String>) -> Command| async move {
        let (tx, rx) = oneshot::channel();
        if commands.send(make(tx)).await.is_err() {
            return "the switch is shutting down".to_string();
        }
        rx.await.unwrap_or_else(|_| "no answer".to_string())
    };
    Some(match words.as_slice() {
        [] => String::new(),
        ["quit"] | ["exit"] => return None,
        ["help"] => HELP.to_string(),
        ["iax2", "show", "peers"] => ask(Command::ShowPeers).await,
        ["iax2", "show", "registry"] => ask(Command::ShowRegistry).await,
        ["show", "stats"] => ask(Command::ShowStats).await,
        ["iax2", "show", "channels"] => ask(Command::ShowChannels).await,
        ["sip", "show", "registrations"] => ask(Command::ShowSipRegistrations).await,
        ["sip", "show", "channels"] => ask(Command::ShowSipChannels).await,
        ["sip", "show", "gateways"] => ask(Command::ShowSipGateways).await,
        ["sip", "show", "bans"] => ask(Command::ShowSipBans).await,
        ["iax2", "show", "bans"] => ask(Command::ShowIaxBans).await,
        [protocol @ ("sip" | "iax2"), "unban", ip] => match ip.parse() {
            Ok(source) => {
                let (reply, rx) = oneshot::channel();
                let command = if *protocol == "sip" {
                    Command::SipUnban { source, reply }
                } else {
                    Command::IaxUnban { source, reply }
                };
                if commands.send(command).await.is_err() {
                    return Some("the switch is shutting down".to_string());
                }
                rx.await.unwrap_or_else(|_| "no answer".to_string())
            }
            Err(_) => format!("`{ip}` is not an IP address\nusage: {protocol} unban 203.0.113.7"),
        },
        ["hangup", "all"] => ask(Command::HangupAll).await,
        ["originate", ..] => match parse_originate(line) {
            Ok((request, count)) => {
                let (reply, rx) = oneshot::channel();
                if commands.send(Command::Originate { request, count, reply }).await.is_err() {
                    return Some("the switch is shutting down".to_string());
                }
                rx.await.unwrap_or_else(|_| "no answer".to_string())
            }
            Err(e) => format!("{e}\nusage: originate IAX2/peer/exten|SIP/user|SIP/gateway/exten [app=pattern] [count=N] [hold=SECONDS]"),
        },
        ["reload"] | ["iax2", "reload"] => match commands.send(Command::Reload).await {
            Ok(()) => "reload requested; see the log for the outcome".to_string(),
            Err(_) => "the switch is shutting down".to_string(),
        },
        _ => format!("unknown command {line:?}\n{HELP}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command a scenario may name is one `execute` knows.
    #[test]
    fn every_listed_command_is_understood() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        for line in COMMANDS {
            let answer = runtime.block_on(execute(line, &tx)).unwrap();
            assert!(!answer.starts_with("unknown command"), "{line}: {answer}");
        }
        let answer = runtime.block_on(execute("sip show everything", &tx)).unwrap();
        assert!(answer.starts_with("unknown command"), "{answer}");
    }
}

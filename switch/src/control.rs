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
            "app" => app = App::parse(value).map_err(|e| e.to_string())?,
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
        crate::sip::endpoint::SipTarget::parse(&dial).map_err(|e| e.to_string())?;
    } else {
        crate::iax2::call::DialString::parse(&dial).map_err(|e| e.to_string())?;
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

/// The text of each view, as `asterisk -rx` prints its counterpart. Scenarios
/// and tests read these; keep them stable.
pub mod text {
    use std::fmt::Write as _;

    use crate::event::PeerState;
    use crate::iax2::endpoint::{ChannelView, IaxStatsView, PeerView, RegistryView};
    use crate::protocol::BanView;
    use crate::sip::endpoint::{GatewayView, SipChannelView, SipRegistrationView, SipStatsView};

    /// `iax2 show peers`.
    pub fn iax_peers(peers: &[PeerView]) -> String {
        let mut s = format!("{:<20} {:<40} {:<5} {:<14} {}\n", "Name", "Host", "Dyn", "Status", "Description");
        let (mut online, mut offline, mut unmonitored) = (0, 0, 0);
        for peer in peers {
            let addr = peer.addr.map_or("(Unspecified)".to_string(), |a| a.to_string());
            let dynamic = if peer.dynamic { "(D)" } else { "(S)" };
            let status = match peer.qualify {
                None => {
                    unmonitored += 1;
                    "UNMONITORED".to_string()
                }
                Some((state, latency_ms)) => {
                    match state {
                        PeerState::Ok | PeerState::Lagged => online += 1,
                        _ => offline += 1,
                    }
                    match latency_ms {
                        Some(ms) => format!("{state} ({ms} ms)"),
                        None => state.to_string(),
                    }
                }
            };
            let _ = writeln!(s, "{:<20} {:<40} {:<5} {:<14} {}", peer.name, addr, dynamic, status, peer.description);
        }
        let total = online + offline + unmonitored;
        let _ = writeln!(s, "{total} iax2 peers [{online} online, {offline} offline, {unmonitored} unmonitored]");
        s
    }

    /// `iax2 show registry`.
    pub fn iax_registry(registrations: &[RegistryView]) -> String {
        let mut s = format!("{:<40} {:<16} {:<40} {:<8} {}\n", "Host", "Username", "Perceived", "Refresh", "State");
        for reg in registrations {
            let perceived = reg.perceived.map_or("<Unregistered>".to_string(), |a| a.to_string());
            let refresh = match reg.refresh {
                Some((refresh, left)) => format!("{refresh} ({left}s left)"),
                None => "-".into(),
            };
            let _ = writeln!(s, "{:<40} {:<16} {:<40} {:<8} {}", reg.host, reg.username, perceived, refresh, reg.state);
        }
        let _ = writeln!(s, "{} IAX2 registrations.", registrations.len());
        s
    }

    /// `iax2 show channels`.
    pub fn iax_channels(calls: &[ChannelView]) -> String {
        let mut s = format!(
            "{:<8} {:<10} {:<16} {:<28} {:<10} {:<8} {:>8} {:>8} {:>6}\n",
            "Call", "Direction", "Peer", "Remote", "State", "Format", "Tx", "Rx", "Lost"
        );
        for c in calls {
            let _ = writeln!(
                s,
                "{:<8} {:<10} {:<16} {:<28} {:<10} {:<8} {:>8} {:>8} {:>6}",
                c.call,
                c.direction,
                c.peer.as_deref().unwrap_or("-"),
                c.remote,
                format!("{:?}", c.state),
                c.format.unwrap_or("-"),
                c.frames_sent,
                c.frames_received,
                c.lost
            );
        }
        let _ = writeln!(s, "{} active IAX2 call(s)", calls.len());
        s
    }

    /// IAX2's part of `show stats`.
    pub fn iax_stats(view: &IaxStatsView) -> String {
        let mut s = String::new();
        let c = &view.counters;
        let _ = writeln!(s, "datagrams in: {}", c.datagrams_in);
        let _ = writeln!(s, "datagrams out: {}", c.datagrams_out);
        let _ = writeln!(s, "bytes in: {}", c.bytes_in);
        let _ = writeln!(s, "bytes out: {}", c.bytes_out);
        let _ = writeln!(s, "call tokens issued: {}", c.call_tokens_issued);
        let _ = writeln!(s, "pongs sent: {}", c.pongs_sent);
        let _ = writeln!(s, "call numbers in use: {}", view.call_numbers_in_use);
        for (reason, n) in &c.dropped {
            let _ = writeln!(s, "dropped ({reason}): {n}");
        }
        s
    }

    /// `iax2 show bans`, `sip show bans`.
    pub fn bans(bans: &[BanView]) -> String {
        let mut out = String::new();
        for ban in bans {
            let _ = writeln!(out, "{:<40} {:>6} failures, {} s left", ban.source, ban.failures, ban.seconds_left);
        }
        if out.is_empty() {
            out.push_str("no banned sources\n");
        }
        out
    }

    /// `sip show registrations`.
    pub fn sip_registrations(registrations: &[SipRegistrationView]) -> String {
        let mut out = format!("{:<16} {:<40} {:<24} {:>7}\n", "User", "Contact", "Source", "Expires");
        for r in registrations {
            let _ = writeln!(out, "{:<16} {:<40} {:<24} {:>7}", r.user, r.contact, r.source.to_string(), r.expires_in);
        }
        let _ = writeln!(out, "{} registration(s)", registrations.len());
        out
    }

    /// `sip show channels`.
    pub fn sip_channels(calls: &[SipChannelView]) -> String {
        let mut out = format!(
            "{:>5} {:<16} {:<24} {:<6} {:>8} {:>8} {:>8}\n",
            "Call", "Call-ID", "Media", "Codec", "Sent", "Recv", "Secs"
        );
        for call in calls {
            let id: String = call.call_id.chars().take(16).collect();
            let _ = writeln!(
                out,
                "{:>5} {id:<16} {:<24} {:<6} {:>8} {:>8} {:>8}",
                call.id,
                call.media.to_string(),
                call.codec,
                call.packets_sent,
                call.packets_received,
                call.seconds
            );
        }
        let _ = writeln!(out, "{} active SIP call(s)", calls.len());
        out
    }

    /// `sip show gateways`.
    pub fn sip_gateways(gateways: &[GatewayView]) -> String {
        let mut out =
            format!("{:<16} {:<28} {:<16} {:<12} {:>8}\n", "Gateway", "Proxy", "Username", "State", "Expires");
        for g in gateways {
            let proxy = g.server.map_or_else(|| format!("{} (unresolved)", g.host), |a| a.to_string());
            let left = g.expires_in.map_or_else(|| "-".to_string(), |s| s.to_string());
            let _ = writeln!(out, "{:<16} {proxy:<28} {:<16} {:<12} {left:>8}", g.name, g.username, g.state);
        }
        let _ = writeln!(out, "{} gateway(s)", gateways.len());
        out
    }

    /// SIP's part of `show stats`.
    pub fn sip_stats(view: &SipStatsView) -> String {
        let s = &view.counters;
        let mut out = format!(
            "sip datagrams_in={} datagrams_out={} rtp_in={} rtp_out={} challenges={} refreshes={} transactions={} calls={}\n",
            s.datagrams_in,
            s.datagrams_out,
            s.rtp_in,
            s.rtp_out,
            s.challenges,
            s.refreshes,
            view.transactions,
            view.calls
        );
        let ports = &view.rtp_ports;
        let _ = writeln!(
            out,
            "sip rtp_ports pairs={} in_use={} resting={} reused_early={}",
            ports.pairs, ports.in_use, ports.resting, ports.reused_early
        );
        for (reason, n) in &s.dropped {
            let _ = writeln!(out, "sip dropped {n:>8} {reason}");
        }
        out
    }
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

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
  show stats           traffic and drop counters
  reload               re-read iax.conf and switch.toml (keeps running on errors)
  help                 this text
  quit                 close this connection";

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
        ["reload"] | ["iax2", "reload"] => match commands.send(Command::Reload).await {
            Ok(()) => "reload requested; see the log for the outcome".to_string(),
            Err(_) => "the switch is shutting down".to_string(),
        },
        _ => format!("unknown command {line:?}\n{HELP}"),
    })
}
